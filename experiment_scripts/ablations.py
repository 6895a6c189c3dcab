"""The multi-task Oryx paper's Fig. 6: ablations of HL-Gauss, agent masking+shuffling and task-balanced batching.

Usage and options: the docstring of ``mtmarl/experiments/driver.py`` (or ``--help``).
"""

from mtmarl.experiments.driver import main
from mtmarl.experiments.ablations import EXPERIMENT

if __name__ == "__main__":
    main(EXPERIMENT)
