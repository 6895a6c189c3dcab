"""The multi-task Oryx paper's Table 1: test return of the three algorithms trained on each full task set.

    python experiment_scripts/table1.py quick                  # 3 sets x 3 algorithms, 1 seed
    python experiment_scripts/table1.py paper                  # 3 seeds, full budget
    python experiment_scripts/table1.py quick 'task_sets=[lbf_5]'

Mean ± standard error of the per-task test return for each algorithm on each
set and on all test tasks combined, with the IQM and its stratified bootstrap
95% CI beside it. These runs are the k = M runs of task_diversity.py (trained
once, shared in ``results/runs/``). Writes ``results/table1/``: ``table1.md``
(algorithms x sets), ``table1_long.{json,csv,md}``, ``fig_table1.png``
(+ .json/.csv), ``records.json``, ``runs.json``.

The code lives in ``mtmarl/experiments/table1.py``.
"""

from mtmarl.experiments.driver import main
from mtmarl.experiments.table1 import EXPERIMENT

if __name__ == "__main__":
    main(EXPERIMENT)
