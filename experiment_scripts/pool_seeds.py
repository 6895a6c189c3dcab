"""Pool the per-task records of several experiment outputs (e.g. seeds run in different sessions) into one table.

Usage and options: the docstring of ``mtmarl/experiments/pool_seeds.py`` (or ``--help``).
"""

from mtmarl.experiments.pool_seeds import run_cli

if __name__ == "__main__":
    run_cli()
