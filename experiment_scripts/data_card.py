"""Data card of a collected task set: per-task table, return histograms, learning curves.

Usage and options: the docstring of ``mtmarl/experiments/data_card.py`` (or ``--help``).
"""

from mtmarl.experiments.data_card import run_cli

if __name__ == "__main__":
    run_cli()
