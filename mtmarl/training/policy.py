"""An algorithm's recurrent ``act`` seen through the evaluator's :class:`Policy` interface.

The carry is the algorithm's recurrent state of one episode (``algo.init_carry``;
for the Sable algorithms the retention state, with agents decoded in a fresh
random order at every step, as in training); the first step of an episode
(``step_count == 0``) is flagged as a reset. ``greedy=True`` takes the arg-max
action instead of sampling. ``params`` are ``algo.acting_params(state)``;
``observe`` is the algorithm's (the reward received after each step).
"""

from __future__ import annotations

from mtmarl.algos.protocol import Algorithm
from mtmarl.evaluation.policies import Policy


def make_policy(algo: Algorithm, greedy: bool = False) -> Policy:
    def init_carry(params, num_agents):
        del params
        return algo.init_carry(num_agents)

    def act(params, obs, carry, key):
        reset = obs.step_count == 0
        actions, _, carry = algo.act(params, carry, obs.agents_view, obs.action_mask, obs.active,
                                     reset, key, greedy=greedy)
        return actions, carry

    return Policy(init_carry=init_carry, act=act, observe=algo.observe)
