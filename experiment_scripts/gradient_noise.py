"""How one update's policy gradient changes when its batch comes from k tasks instead of all (issue 14, finding 5).

MT Oryx generalises better when each update sees one or two tasks than all fifteen of rware_15, and the
gain needs its ICQ-weighted policy loss (BC shows none). This probe asks what such a batch does to the
gradient at fixed, trained parameters: it loads a trained run (one seed of a population run with
``--seed``), draws ``--batches`` training batches from its own data with ``data.tasks_per_batch=k`` for every
``--k`` (``0`` = all tasks, the balanced batch), and reports for the policy loss (``critic_coef=0`` where the
algorithm has a critic; the whole loss otherwise):

* ``norm``: the mean global norm of one batch's gradient,
* ``mean_norm``: the norm of the mean gradient over the batches (the expected update direction's size),
* ``rel_noise``: E||g - mean g||^2 / ||mean g||^2 (unbiased over batches): how noisy one update is,
* ``cos_to_all``: cosine between this k's mean gradient and the all-task mean, the latter from batches of
  its own (a bias in direction; k = all gives the estimate's noise floor),
* ``cos_batch_all``: mean cosine between one batch's gradient and the all-task mean,
* ``ess``: for algorithms with ICQ policy weights, (sum w)^2 / (n sum w^2) over a batch's active entries,
  the share of the batch the weights effectively keep.

The checkpoint holds no target network, so the online parameters stand in for it (as in loss_gradients.py).

    python experiment_scripts/gradient_noise.py <run_dir> [<run_dir> ...] --seed 0 --batches 64 --k 0 2 1 \\
        --out results/gradient_noise/rware_15.json

The code lives in ``mtmarl/experiments/gradient_noise.py``.
"""

from mtmarl.experiments.gradient_noise import run_cli

if __name__ == "__main__":
    run_cli()
