"""Pool the per-task records of several experiment outputs (e.g. seeds run in different sessions) into one table.

Each experiment driver writes ``results/<output>/records.csv`` (one row per run, task and split). Run
directories do not outlive a machine, so more seeds of a configuration measured later land in another
output; this reads the records of all the given outputs, refuses a (config, seed) that two of them hold
(the same run counted twice), and aggregates them as the drivers do (mean ± standard error over seeds,
IQM with a stratified bootstrap interval over seeds x tasks). Writes ``<out>/pooled.{json,csv,md}`` and
``<out>/records.csv``.

    python experiment_scripts/pool_seeds.py results/dataset_size_k15_matched results/dataset_size_k15_matched_s345 \\
        --by algo fraction --out results/dataset_size_k15_matched_pooled

``--experiment NAME`` also renders the pooled records as that experiment's driver renders its own
(``experiment_scripts/NAME.py``'s ``analyse``, with ``--set`` overrides of its config naming what the
tables list), e.g. one SMAX table from panels run as separate outputs, the HyGen paper's columns beside::

    python experiment_scripts/pool_seeds.py results/smax_mh_medium_3seeds results/smax_sz_medium_3seeds \\
        --by task_set quality algo --experiment smax --set 'task_sets=[smax_marine_hard,smax_stalker_zealot]' \\
        'qualities=[medium]' 'algos=[bc_t,odis,hissd]' --out results/smax_pooled

The code lives in ``mtmarl/experiments/pool_seeds.py``.
"""

from mtmarl.experiments.pool_seeds import run_cli

if __name__ == "__main__":
    run_cli()
