"""The multi-task Oryx paper's Fig. 4 and Fig. 1: return vs the number of training tasks; single-task vs multi-task.

Usage and options: the docstring of ``mtmarl/experiments/driver.py`` (or ``--help``).
"""

from mtmarl.experiments.driver import main
from mtmarl.experiments.task_diversity import EXPERIMENT

if __name__ == "__main__":
    main(EXPERIMENT)
