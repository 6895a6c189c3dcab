"""How much of an MT Oryx / MT CQL-Sable update reaches the shared Sable torso from the critic vs the policy.

Sable's decoder feeds both heads (``policy_head`` and ``q_head``); everything else (embeddings, encoder,
decoder blocks) is shared. The critic's loss shapes that shared representation only as far as its gradient
there is comparable to the policy's. This probe loads a trained run (one seed of a population run with
``--seed``), draws training batches from its own data, and reports the global norms of

* ``critic``: the gradient of ``critic_coef * critic_loss`` (the total loss minus the policy-only loss),
* ``policy``: the gradient of the loss with ``critic_coef = 0``,

over the shared parameters and over each head. The checkpoint holds no target network, so the online
parameters stand in for it (they differ by Polyak lag only; the probe compares magnitudes, not values).

    python experiment_scripts/loss_gradients.py <run_dir> [<run_dir> ...] [--seed S] [--batches 5]

The code lives in ``mtmarl/experiments/loss_gradients.py``.
"""

from mtmarl.experiments.loss_gradients import run_cli

if __name__ == "__main__":
    run_cli()
