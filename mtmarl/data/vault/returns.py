"""Team rewards, episode ends and episode returns of an experience dict (recorded in ``mtmarl.json``)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def team_rewards(experience: Mapping[str, Any]) -> np.ndarray:
    """(B, T) team reward: ``rewards[..., 0]`` when shared by all agents (mtmarl's), else the sum."""
    rew = np.asarray(experience["rewards"], np.float32)
    if rew.ndim == 2:
        return rew
    if np.all(rew == rew[..., :1]):
        return rew[..., 0]
    return rew.sum(axis=-1)


def episode_ends(experience: Mapping[str, Any]) -> np.ndarray:
    """(B, T) bool: the episode ends at this step (terminal or truncation of any agent)."""
    flags = [np.asarray(experience[k]) for k in ("terminals", "truncations")]
    done = (flags[0] != 0) | (flags[1] != 0)
    return done.any(axis=-1) if done.ndim == 3 else done


def episode_returns(experience: Mapping[str, Any]) -> np.ndarray:
    """Team return of every completed episode, in order (a trailing unfinished one is dropped).

    Episodes are split after each step flagged terminal or truncated; each batch row is its
    own stream.
    """
    rew, done = team_rewards(experience), episode_ends(experience)
    out = []
    for r, d in zip(rew.astype(np.float64), done):
        ends = np.flatnonzero(d)
        if ends.size == 0:
            continue
        csum = np.cumsum(r)[ends]
        out.append(np.diff(csum, prepend=0.0))
    return np.concatenate(out) if out else np.zeros((0,), np.float64)


def return_stats(returns: np.ndarray) -> dict[str, Any]:
    returns = np.asarray(returns, np.float64)
    if returns.size == 0:
        return {"episodes": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"episodes": int(returns.size), "mean": float(returns.mean()), "std": float(returns.std()),
            "min": float(returns.min()), "max": float(returns.max())}
