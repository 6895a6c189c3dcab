"""SMAX win rates: every algorithm x task set x data quality (the HyGen paper's expert / medium datasets).

    python experiment_scripts/smax.py                                   # default budget, 1 seed
    python experiment_scripts/smax.py 'algos=[mt_bc_sable]' 'qualities=[medium]'
    python experiment_scripts/smax.py paper                             # 3 seeds, paper budget

Each run is ``python -m mtmarl.train +algo=<a> +tasks=<set> data.quality=<quality>``. Win rates
are the evaluator's (episodes where every enemy died and an ally lived); mean ± standard
error over seeds (one seed: over tasks) and IQM with its stratified bootstrap CI, per
split. Writes ``results/smax/``: ``smax.md`` (algorithm x set/quality, train and test; then
the same table from the HyGen paper's Table 1, ``mtmarl/experiments/hygen_table1.py``),
``smax_long.{json,csv,md}``, ``smax_tasks.md`` (every task's win rate, then the paper's),
``fig_smax.png`` (+ .json/.csv), ``records.json``, ``runs.json``.

The code lives in ``mtmarl/experiments/smax.py``.
"""

from mtmarl.experiments.driver import main
from mtmarl.experiments.smax import EXPERIMENT

if __name__ == "__main__":
    main(EXPERIMENT)
