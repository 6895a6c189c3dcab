"""Zero-shot on layouts that appear in no task set: multi-task vs single-task vs random (issue 14).

    python experiment_scripts/out_of_split.py --env lbf --run mt=<train run dir> --run st=<train run dir> \
        [--episodes 128] [--out results/out_of_split_lbf]

Every ``--run label=dir`` (a directory written by ``python -m mtmarl.train``) and the random policy are
evaluated on the layouts of :data:`LAYOUTS` for ``--env``, all in one compiled program per policy, with
the same episode keys. A run that trained seeds side by side (``training.population``) is evaluated once
per seed (labels ``<label>/s<seed>``), and a second table gives each label's mean over its seeds with the
standard error *over seeds*, the spread that decides whether one policy family beats another. The
layouts are checked against every split of every task set of the env, so none was seen in training or
used as a test task. They have no reference returns, so the tables give raw returns (per layout: mean ±
standard error over episodes) and each policy's return relative to random.
Writes ``out_of_split.md`` and ``out_of_split.json``.

The code lives in ``mtmarl/experiments/out_of_split.py``.
"""

from mtmarl.experiments.out_of_split import run_cli

if __name__ == "__main__":
    run_cli()
