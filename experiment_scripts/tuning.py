"""Hyperparameters chosen on training tasks only, the same number of configurations per algorithm.

Usage and options: the docstring of ``mtmarl/experiments/driver.py`` (or ``--help``).
"""

from mtmarl.experiments.driver import main
from mtmarl.experiments.tuning import EXPERIMENT

if __name__ == "__main__":
    main(EXPERIMENT)
