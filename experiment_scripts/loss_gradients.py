"""How much of an MT Oryx / MT CQL-Sable update reaches the shared Sable torso from the critic vs the policy.

Usage and options: the docstring of ``mtmarl/experiments/loss_gradients.py`` (or ``--help``).
"""

from mtmarl.experiments.loss_gradients import run_cli

if __name__ == "__main__":
    run_cli()
