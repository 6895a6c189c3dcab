"""The multi-task Oryx paper's Fig. 4 and Fig. 1: return vs the number of training tasks; single-task vs multi-task.

    python experiment_scripts/task_diversity.py quick          # k in {1, M} per set, 3 algorithms, 1 seed
    python experiment_scripts/task_diversity.py paper          # every k = 1..M, 3 seeds
    python experiment_scripts/task_diversity.py quick 'task_sets=[lbf_5]' 'k.lbf_5=[1,2,3,4,5]' 'algos=[mt_oryx]'

For every task set in ``k`` (rware_15, lbf_5, connector_10) trains each
algorithm on the first k training tasks (``tasks.num_train=k``; nested subsets)
and evaluates on the set's fixed test tasks. Fig. 4: train and test return vs k.
Fig. 1: test return of single-task (k=1) vs multi-task (k=M) training averaged
over the algorithms, with the % gain. Writes ``results/task_diversity/``:
``fig4_task_diversity.png``, ``fig1_st_vs_mt.png`` (each + .json/.csv),
``task_diversity.{json,csv,md}``, ``fig1_gain.md``, ``records.json``, ``runs.json``.
The k = M runs are exactly Table 1's runs (shared in ``results/runs/``).

The code lives in ``mtmarl/experiments/task_diversity.py``.
"""

from mtmarl.experiments.driver import main
from mtmarl.experiments.task_diversity import EXPERIMENT

if __name__ == "__main__":
    main(EXPERIMENT)
