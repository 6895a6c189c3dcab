"""Collect a task set in short GPU windows that resume one another, task by task.

Usage and options: the docstring of ``mtmarl/experiments/gpu_collect.py`` (or ``--help``).
"""

from mtmarl.experiments.gpu_collect import run_cli

if __name__ == "__main__":
    run_cli()
