"""The M3 paper's jump point (JP) and time to threshold (TT): offline-pretrained policies fine-tuned online on
SMAX maps against online learners from scratch, over seeds.

Usage and options: the docstring of ``mtmarl/experiments/finetune_sweep.py`` (or ``--help``).
"""

from mtmarl.experiments.finetune_sweep import run_cli

if __name__ == "__main__":
    run_cli()
