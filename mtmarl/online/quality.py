"""Datasets by policy quality (seed 002): an *expert* and a *medium* dataset from one online training run.

Why: seed 002 and the skill methods it compares are measured on SMAC data of two
qualities, the final online policy's (expert) and a policy at about half its win
rate (medium), rather than on recordings spread over the whole learning curve
(``collect.quality=mixed``, the default). The online collector keeps the learner's
parameters after every chunk; at the end every snapshot is scored on the same
episodes and the one nearest half the expert's score records the medium dataset.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from omegaconf import DictConfig

from mtmarl.online.anakin import recorded_wins, to_experience

QUALITIES = ("mixed", "expert_medium")


def quality_score(stats, has_success: bool) -> float:
    """What expert and medium are judged by: the win rate where the env reports wins, else the mean return.

    The env decides, not the episodes: a snapshot that won no episode scores 0, not its return
    (mixing the two scales picked a medium policy by comparing returns with win rates)."""
    return float(np.mean(stats.successes if has_success else stats.returns))


def pick_medium(scores: list[float], expert: float) -> int:
    """The snapshot whose score is closest to half the expert's (seed 002: a medium policy has about half
    the expert's win rate); the earliest one on ties."""
    return int(np.argmin([abs(s - 0.5 * expert) for s in scores]))


def record_expert_medium(system, state, snapshots: list, stats, cfg: DictConfig, evaluate, rec_key,
                         meta: dict[str, Any], has_success: bool) -> dict[str, list]:
    """``{"expert": parts, "medium": parts}``: ``collect.quality_records`` recordings each of the final
    policy and of the training snapshot :func:`pick_medium` chooses (every snapshot is evaluated on
    ``collect.quality_episodes`` episodes, the same ones for all); scores go to ``meta``. Recordings act
    like the evaluator that scored them (``eval.greedy``: argmax, else sampled)."""
    expert = quality_score(stats, has_success)
    greedy = bool(cfg.eval.greedy)  # record with the policy that was scored (seed 002's expert: greedy)
    eval_key, judge = jax.random.fold_in(rec_key, 0x3E0), evaluate.resized(int(cfg.collect.quality_episodes))
    judged = (jax.device_get(judge(system.actor_params(state._replace(params=p)), eval_key)) for p in snapshots)
    scores = [quality_score(s, has_success) for s in judged]
    medium = pick_medium(scores, expert)
    meta.update(expert_score=expert, snapshot_scores=scores, medium_snapshot=medium, medium_score=scores[medium])
    out, wins = {}, {}
    for uid, params in (("expert", state.params), ("medium", snapshots[medium])):
        st = state._replace(params=params)
        trajs = [system.record(st, jax.random.fold_in(rec_key, 1000 * (uid == "medium") + i), greedy=greedy)
                 for i in range(int(cfg.collect.get("quality_records", 10)))]
        out[uid] = [to_experience(t) for t in trajs]
        if has_success:
            episodes, won = np.sum([recorded_wins(t) for t in trajs], axis=0)
            wins[uid] = {"episodes": int(episodes), "wins": int(won), "win_rate": float(won / max(episodes, 1))}
    if wins:
        meta["data_wins"] = wins  # per dataset: its recorded episodes won (the data card's win rate)
    return out
