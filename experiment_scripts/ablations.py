"""The multi-task Oryx paper's Fig. 6: ablations of HL-Gauss, agent masking+shuffling and task-balanced batching.

    python experiment_scripts/ablations.py quick               # 2 algorithms x 4 variants, 1 seed
    python experiment_scripts/ablations.py paper               # the same with 3 seeds, full budget
    python experiment_scripts/ablations.py quick 'algos=[mt_oryx]'

On the full ``tasks`` set (rware_15) trains MT Oryx and MT CQL-Sable as they are
('full') and with one component switched off per variant (``variants`` in
mtmarl/configs/experiments/ablations.yaml: ``algo.hl_gauss=false``;
``agents.mask=false agents.shuffle=false``; ``data.balanced=false``), and
reports each variant's test return and its % change against 'full'. Writes
``results/ablations/``: ``fig6_ablations.png`` (+ .json/.csv),
``ablations.{json,csv,md}``, ``ablation_change.md``, ``records.json``, ``runs.json``.

The code lives in ``mtmarl/experiments/ablations.py``.
"""

from mtmarl.experiments.driver import main
from mtmarl.experiments.ablations import EXPERIMENT

if __name__ == "__main__":
    main(EXPERIMENT)
