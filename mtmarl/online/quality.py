"""Datasets by policy quality, chosen from the snapshots of one online training run.

Why: recording after every chunk (``collect.quality=mixed``, the default) mirrors the
learning curve, so a learner that is good early fills its vault with expert data and
leaves an offline RL method nothing to improve on over BC (Connector's vaults
held 69% episodes at >= 0.8 of the reference). Two modes score every snapshot on the
same episodes and then record chosen ones:

* ``expert_medium`` (the HyGen paper's SMAC data): the final policy (expert) and the snapshot
  nearest half the expert's score (medium), as two datasets;
* ``levels``: for each target in ``collect.quality_levels`` (fractions of the way from the untrained
  policy's score to the final one) the nearest snapshot, each recorded equally often, into one dataset.

A third needs no scoring: ``intervals`` (the multi-task Oryx paper's datasets: rollouts recorded at fixed
intervals of one online run) records ``collect.quality_records`` snapshots evenly spaced in env steps from
the untrained policy to the final one, once each, into one dataset; :class:`IntervalSnapshots` keeps a
bounded, evenly strided set of them while the run's length is still unknown (a plateau rule ends it).
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import numpy as np
from omegaconf import DictConfig

from mtmarl.errors import UserInputError
from mtmarl.online.anakin import recorded_wins, to_experience

QUALITIES = ("mixed", "expert_medium", "levels", "intervals")


def quality_score(stats, has_success: bool) -> float:
    """What expert and medium are judged by: the win rate where the env reports wins, else the mean return.

    The env decides, not the episodes: a snapshot that won no episode scores 0, not its return
    (mixing the two scales picked a medium policy by comparing returns with win rates)."""
    return float(np.mean(stats.successes if has_success else stats.returns))


def pick_levels(scores: list[float], low: float, high: float, levels: list[float]) -> list[int]:
    """For each level q, the snapshot whose score is closest to ``low + q * (high - low)``; the earliest
    one on ties (so a plateau is represented by the first snapshot that reached it)."""
    return [int(np.argmin([abs(s - (low + q * (high - low))) for s in scores])) for q in levels]


def pick_medium(scores: list[float], expert: float) -> int:
    """The snapshot whose score is closest to half the expert's (the HyGen paper: a medium policy has about half
    the expert's win rate); the earliest one on ties."""
    return pick_levels(scores, 0.0, expert, [0.5])[0]


def _judge(system, state, snapshots: list, cfg: DictConfig, evaluate, rec_key, has_success: bool) -> list[float]:
    """Every snapshot's score on the same ``collect.quality_episodes`` episodes."""
    eval_key, judge = jax.random.fold_in(rec_key, 0x3E0), evaluate.resized(int(cfg.collect.quality_episodes))
    judged = (jax.device_get(judge(system.actor_params(state._replace(params=p)), eval_key)) for p in snapshots)
    return [quality_score(s, has_success) for s in judged]


def _recordings(system, state, params, greedy: bool, keys) -> list:
    """Recordings of one snapshot, acting like the evaluator that scored it (``greedy``: argmax, else sampled)."""
    st = state._replace(params=params)
    return [system.record(st, k, greedy=greedy) for k in keys]


def record_levels(system, state, snapshots: list, cfg: DictConfig, evaluate, rec_key,
                  meta: dict[str, Any], has_success: bool) -> list:
    """One dataset mixing qualities in equal parts: ``collect.quality_records`` recordings of the snapshot
    nearest each level of ``collect.quality_levels``. ``snapshots[0]`` is the untrained policy and
    ``snapshots[-1]`` the final one; their scores are levels 0 and 1. Choices and scores go to ``meta``."""
    levels = [float(q) for q in cfg.collect.quality_levels]
    scores = _judge(system, state, snapshots, cfg, evaluate, rec_key, has_success)
    picked = pick_levels(scores, scores[0], scores[-1], levels)
    meta.update(quality_levels=levels, snapshot_scores=scores, level_snapshots=picked,
                level_scores=[scores[i] for i in picked])
    n = int(cfg.collect.quality_records)
    trajs = [t for j, i in enumerate(picked)
             for t in _recordings(system, state, snapshots[i], bool(cfg.eval.greedy),
                                  [jax.random.fold_in(rec_key, 1000 * j + r) for r in range(n)])]
    return _one_dataset(trajs, cfg, meta, has_success)


def _one_dataset(trajs: list, cfg: DictConfig, meta: dict[str, Any], has_success: bool) -> list:
    """The recordings as one dataset (uid ``collect.uid``); where the env reports wins, its win count to ``meta``."""
    if has_success:
        episodes, won = np.sum([recorded_wins(t) for t in trajs], axis=0)
        meta["data_wins"] = {str(cfg.collect.uid): {"episodes": int(episodes), "wins": int(won),
                                                   "win_rate": float(won / max(episodes, 1))}}
    return [to_experience(t) for t in trajs]


def min_episodes(cfg: DictConfig) -> int | None:
    """``collect.quality_min_episodes``: None, or the episodes an expert/medium dataset holds at least."""
    value = cfg.collect.get("quality_min_episodes")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserInputError(f"collect.quality_min_episodes={value!r}; allowed: null or an integer >= 1 "
                             "(episodes per expert/medium dataset, e.g. 2000 as in the HyGen paper)")
    return value


def record_dataset(system, state, params, cfg: DictConfig, greedy: bool, key_of) -> tuple[list, int, int]:
    """(recordings, episodes, wins) of one snapshot acting ``greedy``: ``collect.quality_records`` recordings, then more
    until the completed episodes reach ``collect.quality_min_episodes`` (if set). Recording ``i`` uses
    ``key_of(i)``, so the first recordings do not depend on the target. A recording that completes no
    episode ends the loop (episodes longer than ``online.record_len`` would never reach the target)."""
    trajs = _recordings(system, state, params, greedy, [key_of(i) for i in range(int(cfg.collect.get("quality_records", 10)))])
    counts = [recorded_wins(t) for t in trajs]
    target = min_episodes(cfg)
    while target is not None and sum(e for e, _ in counts) < target:
        (traj,) = _recordings(system, state, params, greedy, [key_of(len(trajs))])
        trajs.append(traj)
        counts.append(recorded_wins(traj))
        if counts[-1][0] == 0:
            warnings.warn(f"a recording completed no episode; the dataset stops at {sum(e for e, _ in counts)} "
                          f"of collect.quality_min_episodes={target} (raise online.record_len)", stacklevel=2)
            break
    return trajs, sum(e for e, _ in counts), sum(w for _, w in counts)


def record_expert_medium(system, state, snapshots: list, stats, cfg: DictConfig, evaluate, medium_greedy: bool,
                         rec_key, meta: dict[str, Any], has_success: bool) -> dict[str, list]:
    """``{"expert": parts, "medium": parts}``: the final policy (scored by ``stats``) and the training snapshot
    :func:`pick_medium` chooses (every snapshot is scored by ``evaluate`` on ``collect.quality_episodes``
    episodes, the same ones for all), each recorded by :func:`record_dataset`; scores go to ``meta``.
    Recordings act like the evaluator that scored them: the expert as ``eval.greedy`` says, the snapshots as
    ``medium_greedy`` (``evaluate``'s acting). A greedy policy that wins all or nothing has no greedy snapshot
    near half the expert; sampled, the same snapshots pass through the levels between."""
    expert = quality_score(stats, has_success)
    scores = _judge(system, state, snapshots, cfg, evaluate, rec_key, has_success)
    medium = pick_medium(scores, expert)
    meta.update(expert_score=expert, snapshot_scores=scores, medium_snapshot=medium, medium_score=scores[medium],
                medium_greedy=medium_greedy)
    out, wins = {}, {}
    for uid, params, greedy in (("expert", state.params, bool(cfg.eval.greedy)),
                                ("medium", snapshots[medium], medium_greedy)):
        trajs, episodes, won = record_dataset(system, state, params, cfg, greedy,
                                              lambda i, uid=uid: jax.random.fold_in(rec_key, 1000 * (uid == "medium") + i))
        out[uid] = [to_experience(t) for t in trajs]
        if has_success:
            wins[uid] = {"episodes": int(episodes), "wins": int(won), "win_rate": float(won / max(episodes, 1))}
    if wins:
        meta["data_wins"] = wins  # per dataset: its recorded episodes won (the data card's win rate)
    return out


class IntervalSnapshots:
    """Host copies of the parameters after every ``stride``-th chunk (chunk 0: the untrained policy).

    When more than ``cap`` are held, every other one is dropped and the stride doubles, so the kept ones stay
    evenly spaced in chunks (hence in env steps) and memory stays bounded however long the run goes on.
    """

    def __init__(self, cap: int):
        if cap < 2:
            raise ValueError(f"cap={cap}: want >= 2")
        self.cap, self.stride, self.kept = cap, 1, []  # kept: (chunk, env_steps, params)

    def add(self, chunk: int, steps: int, params) -> None:
        if chunk % self.stride:
            return
        self.kept.append((chunk, steps, jax.device_get(params)))
        if len(self.kept) > self.cap:
            self.kept = self.kept[::2]
            self.stride *= 2

    def pick(self, n: int, chunk: int, steps: int, params) -> list[tuple[int, Any]]:
        """``n`` (env_steps, params), the kept snapshot nearest each of ``n`` evenly spaced points from 0 to the
        final ``steps`` (whose parameters ``params`` are added first if not kept)."""
        kept = self.kept if self.kept and self.kept[-1][0] == chunk else [*self.kept, (chunk, steps, params)]
        at = np.asarray([s for _, s, _ in kept], np.float64)
        picked = [int(np.argmin(np.abs(at - t))) for t in np.linspace(0.0, float(steps), n)]
        return [(kept[i][1], kept[i][2]) for i in picked]


def record_intervals(system, state, picked: list[tuple[int, Any]], cfg: DictConfig, rec_key,
                     meta: dict[str, Any], has_success: bool) -> list:
    """One dataset: one recording of each snapshot of ``picked`` (:meth:`IntervalSnapshots.pick`)."""
    meta.update(interval_steps=[int(s) for s, _ in picked])
    trajs = [t for j, (_, params) in enumerate(picked)
             for t in _recordings(system, state, params, bool(cfg.eval.greedy), [jax.random.fold_in(rec_key, j)])]
    return _one_dataset(trajs, cfg, meta, has_success)
