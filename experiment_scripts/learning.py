"""Learning per update: Oryx variants and BC side by side, with the critic diagnostics of each run.

Usage and options: the docstring of ``mtmarl/experiments/driver.py`` (or ``--help``).
"""

from mtmarl.experiments.driver import main
from mtmarl.experiments.learning import EXPERIMENT

if __name__ == "__main__":
    main(EXPERIMENT)
