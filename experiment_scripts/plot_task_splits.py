"""Draw the train/test split of every task set, like seed paper 004 Fig. 3.

Why: zero-shot results only mean something next to *where* the test tasks lie
relative to the training tasks. Each panel plots one env's tasks by the property
the paper varies (RWARE: number of shelves; LBF: max agent level; Connector: grid
size) against the number of agents, so interpolation (inside the dashed training
range) and extrapolation (outside it) can be read off at a glance.

    python experiment_scripts/plot_task_splits.py --out docs

writes ``<out>/task_splits.png`` and the plotted data as ``<out>/task_splits.json``.

The code lives in ``mtmarl/experiments/plot_task_splits.py``.
"""

from mtmarl.experiments.plot_task_splits import run_cli

if __name__ == "__main__":
    run_cli()
