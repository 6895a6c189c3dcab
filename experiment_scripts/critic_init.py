"""Where does a value learner's critic start? Its last stage's loss metrics at initialisation, per seed.

Usage and options: the docstring of ``mtmarl/experiments/critic_init.py`` (or ``--help``).
"""

from mtmarl.experiments.critic_init import run_cli

if __name__ == "__main__":
    run_cli()
