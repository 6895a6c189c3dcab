"""Named task sets with train/test splits, and ad-hoc tasks from the command line.

A *task* is one level configuration of an env (``rware:rows=2,cols=5,height=8,
agents=6``). A *task set* (``mtmarl/configs/tasks/<name>.yaml``) lists training tasks,
whose order defines nested subsets (``num_train=k`` keeps the first k), and
held-out test tasks. Every task of a set is padded to the set's largest agent
count and observation size, so one compiled network reads them all.

``python -m mtmarl.tasks [SET] [--json]`` lists the sets or describes one.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from typing import Any, Mapping

import yaml

from mtmarl import envs
from mtmarl.configs import CONFIG_DIR
from mtmarl.errors import UserInputError
from mtmarl.task_params import check_task

TASKS_DIR = CONFIG_DIR / "tasks"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task: an env name and the constructor parameters of its level."""

    env: str
    params: tuple[tuple[str, Any], ...]
    label: str | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def create(cls, env: str, params: Mapping[str, Any], label: str | None = None) -> "TaskSpec":
        allowed = envs.env_params(env)  # raises on an unknown env
        for key in params:
            if key not in allowed:
                raise UserInputError(f"task {label or env}: unknown key {key!r} for {env}; "
                                     f"valid keys: {', '.join(allowed)}")
        # Typed values (ad-hoc strings included) and a layout that can exist, before any env is built.
        return cls(env, tuple(check_task(envs.env_class(env), params, label or env).items()), label)

    @classmethod
    def parse(cls, text: str) -> "TaskSpec":
        """``env:key=value,key=value`` -> TaskSpec (the inverse of :attr:`adhoc`)."""
        env, sep, body = text.partition(":")
        if not sep or not body:
            raise UserInputError(f"ad-hoc task {text!r} must look like env:key=value,... "
                                 f"(e.g. rware:rows=2,cols=5,height=8,agents=6)")
        params: dict[str, Any] = {}
        for item in body.split(","):
            key, eq, value = item.partition("=")
            if not eq or not key.strip() or not value.strip():
                raise UserInputError(f"ad-hoc task {text!r}: malformed item {item!r} (want key=value)")
            if key.strip() in params:
                raise UserInputError(f"ad-hoc task {text!r}: key {key.strip()!r} given twice")
            params[key.strip()] = value.strip()  # typed by TaskSpec.create (mtmarl.task_params)
        spec = cls.create(env.strip(), params)
        spec.build()  # surface invalid values now, naming the task
        return spec

    @property
    def adhoc(self) -> str:
        return f"{self.env}:" + ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                                         for k, v in self.params)

    @property
    def name(self) -> str:
        return self.label or self.adhoc

    def build(self) -> envs.MultiAgentEnv:
        return _build(self.env, self.params)

    def describe(self) -> dict[str, Any]:
        """Fields shown by ``python -m mtmarl.tasks`` and stored with results."""
        env = self.build()
        return {"name": self.name, "task": self.adhoc, "env": self.env, "agents": env.num_agents,
                "layout": env.describe_layout(), "obs_dim": env.obs_dim,
                "state_dim": env.state_dim, "actions": env.num_actions, "horizon": env.horizon,
                "property": env.size_property(), "success": env.spec.has_success, "params": dict(self.params)}


@functools.lru_cache(maxsize=None)
def _build(env: str, params: tuple) -> envs.MultiAgentEnv:
    return envs.make(env, **dict(params))


@dataclasses.dataclass(frozen=True)
class TaskSet:
    name: str
    env: str
    train: tuple[TaskSpec, ...]
    test: tuple[TaskSpec, ...]

    def __post_init__(self):
        if not self.train:
            raise UserInputError(f"task set {self.name!r} has no training tasks")
        for spec in self.train + self.test:
            if spec.env != self.env:
                raise UserInputError(f"task set {self.name!r} is for {self.env}, not {spec.name}")
        overlap = {t.name for t in self.train} & {t.name for t in self.test}
        overlap |= {t.adhoc for t in self.train} & {t.adhoc for t in self.test}
        if overlap:
            raise UserInputError(f"task set {self.name!r}: train and test share {sorted(overlap)}")

    def split(self, which: str) -> tuple[TaskSpec, ...]:
        if which == "train":
            return self.train
        if which == "test":
            return self.test
        if which == "all":
            return self.train + self.test
        raise UserInputError(f"unknown split {which!r}; valid: train, test, all")

    def subset(self, num_train: int | None = None, single: str | None = None) -> "TaskSet":
        """Nested subset (first ``num_train`` train tasks) or one named train task."""
        train = self.train
        if single is not None:
            train = tuple(t for t in self.train if single in (t.name, t.adhoc))
            if not train:
                raise UserInputError(f"{self.name}: no training task {single!r}; "
                                     f"valid: {', '.join(t.name for t in self.train)}")
        if num_train is not None:
            if not 1 <= num_train <= len(train):
                raise UserInputError(f"{self.name}: num_train={num_train} is outside 1..{len(train)}")
            train = train[:num_train]
        name = self.name if len(train) == len(self.train) else f"{self.name}[{len(train)}]"
        return dataclasses.replace(self, name=name, train=train)

    @property
    def env_spec(self) -> envs.EnvSpec:
        """The shape every task (train and test) is padded to: most agents, entities per group, state."""
        return envs.EnvSpec.join(t.build().spec for t in self.train + self.test)

    @property
    def train_spec(self) -> envs.EnvSpec:
        """What training batches are padded to: ``env_spec``'s observation, action and state layout (what
        the network reads everywhere) with only as many agent slots as the largest *training* task.

        Why: padded agents are masked, so they change no loss, but every one costs compute in every
        update (Sable attends over agents x time); a set whose test tasks have more agents than its
        training tasks (rware_15: 8 vs 12, connector_10: 5 vs 10) would pay for slots no data fills.
        """
        return dataclasses.replace(self.env_spec, num_agents=max(t.build().spec.num_agents for t in self.train))

    @property
    def padding(self) -> dict[str, int]:
        """Sizes of ``env_spec`` (agents, observation row, state), as stored with runs."""
        spec = self.env_spec
        return {"num_agents": spec.num_agents, "obs_dim": spec.obs_dim, "state_dim": spec.state_dim}

    def padded(self, spec: TaskSpec) -> envs.PaddedEnv:
        return envs.PaddedEnv(spec.build(), self.env_spec)

    def evaluation_env(self, spec: TaskSpec, layout: envs.EnvSpec | None = None) -> envs.PaddedEnv:
        """``spec`` as evaluation plays it: the set's observation, action and state layout (what the
        network reads; or ``layout``'s observations and actions, the padded layout a trained network
        read: ``mtmarl.evaluation.trained``) with agent slots for the task's agents rounded up to a power
        of two (at most the set's count).

        Why: a padded agent changes nothing a real agent sees or gets, yet the policy decodes it at every
        step. The set evaluator groups tasks by agent count (``mtmarl.evaluation.rollout.run_task_episodes``),
        one traced policy per group; powers of two keep the groups few, which keeps the program's compile
        time and memory nearer one group's (``benchmarks/eval_layouts.py``), while a 2-agent task is not
        played as 12 agents.
        """
        inner = spec.build()
        own = self.env_spec
        slots = min(1 << max(inner.num_agents - 1, 0).bit_length(), own.num_agents)
        if layout is not None:
            own = dataclasses.replace(own, obs=layout.obs, actions=layout.actions)
        return envs.PaddedEnv(inner, own, num_agents=slots)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "env": self.env, "padding": self.padding,
                "train": [t.describe() | {"split": "train"} for t in self.train],
                "test": [t.describe() | {"split": "test"} for t in self.test]}


def available_sets() -> list[str]:
    return sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))


def from_config(cfg: Mapping[str, Any]) -> TaskSet:
    """TaskSet from a ``mtmarl/configs/tasks`` mapping (a Hydra node or loaded YAML)."""
    cfg = dict(cfg)
    name, env = cfg.get("name", "tasks"), cfg.get("env")
    envs.env_params(env)

    def specs(items) -> tuple[TaskSpec, ...]:
        out = []
        for item in items or ():
            item = dict(item)
            label = item.pop("name", None)
            out.append(TaskSpec.create(env, item, label))
        return tuple(out)

    full = TaskSet(name, env, specs(cfg.get("train")), specs(cfg.get("test")))
    return full.subset(cfg.get("num_train"), cfg.get("single"))


def load(name: str, num_train: int | None = None) -> TaskSet:
    """Task set ``name`` from ``mtmarl/configs/tasks``, or a one-task set from an ad-hoc task."""
    if ":" in name:
        spec = TaskSpec.parse(name)
        return TaskSet(spec.name, spec.env, (spec,), ())
    path = TASKS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise UserInputError(f"unknown task set {name!r}; valid sets: {', '.join(available_sets())}")
    cfg = yaml.safe_load(path.read_text())
    cfg.setdefault("name", name)
    if num_train is not None:
        cfg["num_train"] = num_train
    return from_config(cfg)


def _print_table(desc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    pad = desc["padding"]
    table = Table(title=f"{desc['name']} ({desc['env']}): {len(desc['train'])} train / "
                        f"{len(desc['test'])} test, padded to {pad['num_agents']} agents x "
                        f"{pad['obs_dim']} obs")
    for col in ("name", "split", "agents", "layout", "obs", "actions", "horizon"):
        table.add_column(col, justify="right" if col in ("agents", "obs", "actions", "horizon") else "left")
    for task in desc["train"] + desc["test"]:
        table.add_row(task["name"], task["split"], str(task["agents"]), task["layout"],
                      str(task["obs_dim"]), str(task["actions"]), str(task["horizon"]))
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtmarl.tasks", description=__doc__.split("\n")[0])
    parser.add_argument("set", nargs="?", help="task set name or ad-hoc task env:key=value,...")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--num-train", type=int, default=None, help="keep the first k train tasks")
    args = parser.parse_args(argv)
    try:
        if args.set is None:
            names = available_sets()
            if args.json:
                print(json.dumps(names))
            else:
                width = max(map(len, names))
                for name in names:
                    ts = load(name)
                    print(f"{name:{width}s} {ts.env:10s} {len(ts.train):3d} train {len(ts.test):3d} test")
            return 0
        desc = load(args.set, args.num_train).describe()
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(desc, indent=2))
    else:
        _print_table(desc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
