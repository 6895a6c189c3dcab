"""The M3 paper's jump point (JP) and time to threshold (TT): offline-pretrained policies fine-tuned online on

Usage and options: the docstring of ``mtmarl/experiments/finetune.py`` (or ``--help``).
"""

from mtmarl.experiments.finetune import run_cli

if __name__ == "__main__":
    run_cli()
