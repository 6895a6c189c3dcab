"""Why does a trained ODIS (or HyGen) win little? Its two acting parts judged apart on a trained run.

ODIS acts in two steps: the Q agent picks a skill, the frozen stage-1 decoder turns (observation,
skill) into an action. A low win rate can come from either. This replays the run's checkpoint on its
task set with the acting step changed, all else equal (same keys, episodes, evaluator):

* ``odis``: as trained (Q's arg-max skill, the decoder's arg-max action);
* ``odis-sample``: Q's skill, an action sampled from the decoder's softmax (as the BC baselines act);
* ``skill-k``: skill k for every agent at every step, decoder arg-max (the Q agent unused);
* ``soft-uniform``: the decoder given the uniform mixture of skills (stage 1 fed it soft Gumbel samples).

If every decoder variant wins as little as ``odis``, the decoder (stage 1) is the cause; if a fixed
skill wins clearly more, the Q agent's skill choice is.

    python experiment_scripts/odis_probe.py results/runs/<odis run>/seed_0 --out results/odis_probe

The code lives in ``mtmarl/experiments/odis_probe.py``.
"""

from mtmarl.experiments.odis_probe import run_cli

if __name__ == "__main__":
    run_cli()
