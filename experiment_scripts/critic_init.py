"""Where does a value learner's critic start? Its last stage's loss metrics at initialisation, per seed.

Why: a critic bootstrapped from a target copy keeps feeding any offset it starts with back into its own
targets, and with a hard copy every few dozen updates a short offline budget has only a handful of copies
to wash it out (HyGen: 7 in 350 skill-Q updates). Comparing where Q_tot and its TD target start with the
returns the data can hold tells whether the init alone puts the critic out of range. Nothing trains: each
seed's state is built as ``mtmarl.train`` builds it (the same keys), and the value stage's update is
evaluated on ``--batches`` sampled batches; only the metrics it reports are kept (they are computed from
the parameters before the update is applied).

    python experiment_scripts/critic_init.py +algo=hygen +tasks=smax_marine_hard data.quality=medium \\
        --variant scale0.1:algo.mixer_init_scale=0.1 --variant scale0.01:algo.mixer_init_scale=0.01 \\
        --seeds 0 1 2 --out results/critic_init_hygen

Writes ``<out>/critic_init.{json,md}``: one row per variant and seed, each metric's mean (and range) over
the batches, beside the largest discounted return-to-go in the data.

The code lives in ``mtmarl/experiments/critic_init.py``.
"""

from mtmarl.experiments.critic_init import run_cli

if __name__ == "__main__":
    run_cli()
