"""The multi-task Oryx paper's Table 1: test return of the three algorithms trained on each full task set.

Usage and options: the docstring of ``mtmarl/experiments/driver.py`` (or ``--help``).
"""

from mtmarl.experiments.driver import main
from mtmarl.experiments.table1 import EXPERIMENT

if __name__ == "__main__":
    main(EXPERIMENT)
