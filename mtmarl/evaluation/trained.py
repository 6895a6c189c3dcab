"""Which tasks a trained network can play: a task's own layout against the padded layout its run trained on.

A network reads observations and writes actions in its training set's padded layout (``TaskSet.env_spec``):
every entity group at the set's largest count and features, every targeted action at the set's largest
count. Evaluation pads a task into that layout (``TaskSet.evaluation_env``), so entity k and "attack k"
keep their indices and actions on missing entities are illegal; a task fits if each of its groups and
targeted actions fits inside the trained one. Flat observations append zero features. The agent count
is free.
"""

from __future__ import annotations

from mtmarl.envs import EnvSpec
from mtmarl.errors import UserInputError


def _actions(spec: EnvSpec) -> str:
    targets = "".join(f", {count} on {group}" for group, count in spec.actions.targets)
    return f"{spec.num_actions} actions" + (f" ({spec.actions.basic} basic{targets})" if targets else "")


def misfit(have: EnvSpec, trained: EnvSpec) -> tuple[str, str] | None:
    """(what the task has, what the trained network takes) where a task of shape ``have`` does not fit a network
    trained on the padded layout ``trained``; None if it fits."""
    if have.obs.is_flat and trained.obs.is_flat:
        if have.obs_dim > trained.obs_dim:
            return (f"{have.obs_dim} observation features", f"takes {trained.obs_dim} (its training set's padded "
                                                             f"size); only tasks with <= {trained.obs_dim} features fit")
    else:
        names = [g.name for g in have.obs.groups]
        if names != [g.name for g in trained.obs.groups]:
            return f"observation groups {names}", f"reads {[g.name for g in trained.obs.groups]}"
        for g, t in zip(have.obs.groups, trained.obs.groups):
            if g.count > t.count or g.features > t.features:
                return (f"{g.count} {g.name} x {g.features} features",
                        f"reads at most {t.count} x {t.features} (its training set's padded layout)")
    a, b = have.actions, trained.actions
    if (a.basic, a.noop, [n for n, _ in a.targets]) != (b.basic, b.noop, [n for n, _ in b.targets]):
        return _actions(have), f"outputs {_actions(trained)}"
    for (group, count), (_, cap) in zip(a.targets, b.targets):
        if count > cap:
            return f"{count} actions on {group}", f"outputs {cap} (its training set's padded layout)"
    return None


def check_trained_fits(specs, trained: EnvSpec, source: str) -> None:
    """One clear error naming both sizes if a task of ``specs`` cannot be played by a network trained on the
    padded layout ``trained`` (``source``: the run, for the message)."""
    for spec in specs:
        problem = misfit(spec.build().spec, trained)
        if problem is not None:
            raise UserInputError(f"task {spec.name} has {problem[0]} but the trained model ({source}) {problem[1]}")
