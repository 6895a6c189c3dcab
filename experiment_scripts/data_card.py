"""Data card of a collected task set: per-task table, return histograms, learning curves.

Why: the collector's claim is *mixed-quality* data with a trustworthy reference per
task; a reader should see that at a glance, for the bundled or the full-size data.

    python experiment_scripts/data_card.py rware_15 --root vault_data_full --out results/datasets_full

writes ``<out>/<set>.md`` (the ``python -m mtmarl.data report`` table),
``<out>/<set>_returns.png`` (episode-return histogram of every training vault, with
the task's untrained and final online returns marked) and ``<out>/<set>_curves.png``
(training return vs env steps from ``<root>/logs``; the scripted RWARE planner logs
one point per epsilon level).

The code lives in ``mtmarl/experiments/data_card.py``.
"""

from mtmarl.experiments.data_card import run_cli

if __name__ == "__main__":
    run_cli()
