"""Zero-shot on layouts that appear in no task set: multi-task vs single-task vs random.

Usage and options: the docstring of ``mtmarl/experiments/out_of_split.py`` (or ``--help``).
"""

from mtmarl.experiments.out_of_split import run_cli

if __name__ == "__main__":
    run_cli()
