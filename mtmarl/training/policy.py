"""An algorithm's recurrent ``act`` seen through the evaluator's :class:`Policy` interface.

The carry is the Sable retention state of one episode. ``algo.act`` decodes
agents in a fresh random order at every step (as in training); the first step
of an episode (``step_count == 0``) is flagged as a reset. ``greedy=True``
takes the arg-max action instead of sampling.
"""

from __future__ import annotations

from mtmarl.algos.common import Algo
from mtmarl.evaluation.policies import Policy


def make_policy(algo: Algo, greedy: bool = False) -> Policy:
    net = algo.net

    def init_carry(params, num_agents):
        del params, num_agents  # retention states do not depend on the agent count
        return net.init_carry()

    def act(params, obs, carry, key):
        reset = obs.step_count == 0
        actions, _, carry = algo.act(params, carry, obs.agents_view, obs.action_mask, obs.active,
                                     reset, key, greedy=greedy)
        return actions, carry

    return Policy(init_carry=init_carry, act=act)
