"""Collect a task set in runs that end by a deadline and pack what they finished; merge them where it accumulates.

Usage and options: the docstring of ``mtmarl/experiments/packed_collect.py`` (or ``--help``).
"""

from mtmarl.experiments.packed_collect import run_cli

if __name__ == "__main__":
    run_cli()
