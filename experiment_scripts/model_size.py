"""The multi-task Oryx paper's Fig. 5b (`make sweep`): train and test return vs model size on the full rware_15 set.

    python experiment_scripts/model_size.py quick    # this machine, 1 seed, embed 64-256, 1000 tiny-batch updates per run
    python experiment_scripts/model_size.py paper              # 3 algorithms x 5 sizes x 3 seeds, full budget
    python experiment_scripts/model_size.py paper launcher=slurm jobs=15 \\
        'slurm=["hydra.launcher.partition=gpu","hydra.launcher.gpus_per_node=1","hydra.launcher.timeout_min=720"]'
    python experiment_scripts/model_size.py quick embed_dims=[64,256] dry_run=true

Varies ``network.embed_dim`` of the 'base' Sable network over ``embed_dims``
(64..768) and reports each model's parameter count (computed from shapes).
Writes ``results/model_size/``: ``fig5b_model_size.png`` (+ .json/.csv with the
numbers plotted), ``model_size.{json,csv,md}`` (mean ± se and IQM [95% CI] per
algorithm, size and split), ``records.json`` (per run and task), ``runs.json``.
Runs live in ``results/runs/`` and are skipped when finished.

The code lives in ``mtmarl/experiments/model_size.py``.
"""

from mtmarl.experiments.driver import main
from mtmarl.experiments.model_size import EXPERIMENT

if __name__ == "__main__":
    main(EXPERIMENT)
