"""How one update's policy gradient changes when its batch comes from k tasks instead of all.

Usage and options: the docstring of ``mtmarl/experiments/gradient_noise.py`` (or ``--help``).
"""

from mtmarl.experiments.gradient_noise import run_cli

if __name__ == "__main__":
    run_cli()
