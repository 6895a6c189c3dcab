"""SMAX win rates: every algorithm x task set x data quality (the HyGen paper's expert / medium datasets).

Usage and options: the docstring of ``mtmarl/experiments/driver.py`` (or ``--help``).
"""

from mtmarl.experiments.driver import main
from mtmarl.experiments.smax import EXPERIMENT

if __name__ == "__main__":
    main(EXPERIMENT)
