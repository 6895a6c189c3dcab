"""The multi-task Oryx paper's Fig. 5a: train and test return vs the amount of data from a fixed set of 5 RWARE tasks.

Usage and options: the docstring of ``mtmarl/experiments/driver.py`` (or ``--help``).
"""

from mtmarl.experiments.driver import main
from mtmarl.experiments.dataset_size import EXPERIMENT

if __name__ == "__main__":
    main(EXPERIMENT)
