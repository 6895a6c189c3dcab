"""The multi-task Oryx paper's Fig. 5a: train and test return vs the amount of data from a fixed set of 5 RWARE tasks.

    python experiment_scripts/dataset_size.py quick            # MT Oryx, fractions 0.1, 0.3, 1.0, 1 seed
    python experiment_scripts/dataset_size.py paper            # 3 algorithms, 6 fractions, 3 seeds
    python experiment_scripts/dataset_size.py quick 'fractions=[0.05,0.5,1.0]' num_train=3

Trains on the first ``num_train`` training tasks of ``tasks`` (``tasks.num_train``)
keeping the first ``fraction`` of every task's transitions (``data.fraction``:
cut at the end of the last whole episode) and evaluates on the set's test tasks.
Writes ``results/dataset_size/``: ``fig5a_dataset_size.png`` (+ .json/.csv),
``dataset_size.{json,csv,md}``, ``records.json``, ``runs.json``.

The code lives in ``mtmarl/experiments/dataset_size.py``.
"""

from mtmarl.experiments.driver import main
from mtmarl.experiments.dataset_size import EXPERIMENT

if __name__ == "__main__":
    main(EXPERIMENT)
