"""Issue 14: learning per update. Oryx variants and BC side by side, with the critic diagnostics of each run.

    python experiment_scripts/learning.py                         # default budget, 1 seed, lbf_5 + rware_15
    python experiment_scripts/learning.py 'task_sets=[rware_15]' 'only=[oryx,bc]'

Trains every ``variants`` entry (mtmarl/configs/experiments/learning.yaml) on every task
set, then runs ``mtmarl.diagnose`` on each finished run (``diagnose_batches``;
cached in the run directory). Writes ``results/learning/``: ``learning.{json,csv,md}``
(normalised train/test return per set and variant) and ``diagnostics.md``
(Spearman of Q vs the data's return, Q spread over actions, policy-weight spread).

The code lives in ``mtmarl/experiments/learning.py``.
"""

from mtmarl.experiments.driver import main
from mtmarl.experiments.learning import EXPERIMENT

if __name__ == "__main__":
    main(EXPERIMENT)
