"""Why does a trained ODIS (or HyGen) win little? Its two acting parts judged apart on a trained run.

Usage and options: the docstring of ``mtmarl/experiments/odis_probe.py`` (or ``--help``).
"""

from mtmarl.experiments.odis_probe import run_cli

if __name__ == "__main__":
    run_cli()
