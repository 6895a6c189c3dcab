"""The multi-task Oryx paper's Fig. 5b (`make sweep`): train and test return vs model size on the full rware_15 set.

Usage and options: the docstring of ``mtmarl/experiments/driver.py`` (or ``--help``).
"""

from mtmarl.experiments.driver import main
from mtmarl.experiments.model_size import EXPERIMENT

if __name__ == "__main__":
    main(EXPERIMENT)
