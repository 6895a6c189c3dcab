"""Draw the train/test split of every task set, like seed paper 004 Fig. 3.

Usage and options: the docstring of ``mtmarl/experiments/plot_task_splits.py`` (or ``--help``).
"""

from mtmarl.experiments.plot_task_splits import run_cli

if __name__ == "__main__":
    run_cli()
