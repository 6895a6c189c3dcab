"""The training run behind ``python -m mtmarl.train``: data, learner, evaluation, checkpoints, results.

With several processes (``mtmarl.distributed``) every process runs :func:`run_training`
in lockstep, the learner spanning all their devices; process 0 alone writes
(``algo.json``, checkpoints, the logger) and evaluates, the others wait for it at
each evaluation. The carry they start from is process 0's (broadcast), so a
resumed run reads its checkpoint on process 0 only.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from mtmarl.algos import registry
from mtmarl.algos.protocol import Algorithm
from mtmarl.atomic import atomic_write_text
from mtmarl.distributed import announce_start, await_start, broadcast_from_main, is_main, max_over_processes, \
    wait_for_main
from mtmarl.data.batching import return_range, shard_tasks
from mtmarl.envs.layout import EnvSpec
from mtmarl.errors import NonFiniteMetricError, UserInputError
from mtmarl.evaluation.references import reference_for
from mtmarl.evaluation.results import summarise, task_info
from mtmarl.evaluation.rollout import make_task_set_evaluator
from mtmarl.tasks import TaskSet
from mtmarl.training.checkpoint import Checkpointer, NoCheckpoints, train_score
from mtmarl.memory import release_freed_memory
from mtmarl.training.data import build_buffers, build_shards, fetch_missing, load_task_data
from mtmarl.training.engine import Carry, Learner, learner_devices, seed_slice, updates_done
from mtmarl.training.policy import make_policy
from mtmarl.training.selection import Selection
from mtmarl.training.stop import Interrupted, requested

ALGO_FILE = "algo.json"      # the exact algorithm + network configs trained (incl. the HL-Gauss support)


def build_algo(algo_cfg: Mapping[str, Any], net_cfg: Mapping[str, Any], training: Mapping[str, Any],
               data_cfg: Mapping[str, Any], agents: Mapping[str, Any], env: EnvSpec | int,
               value_range: tuple[float, float] | None = None) -> Algorithm:
    """The algorithm with the CLI's ablation switches and batch overrides mapped onto its config."""
    algo_cfg = algo_settings(algo_cfg, training, data_cfg, agents)
    name = algo_cfg.pop("name", None)
    if name is None:
        raise UserInputError(f"no algorithm given: add +algo=<{'|'.join(registry.names())}>")
    if value_range is not None:
        algo_cfg["v_min"], algo_cfg["v_max"] = value_range
    return registry.build(name, algo_cfg, net_cfg, env)


def algo_settings(algo_cfg: Mapping[str, Any], training: Mapping[str, Any], data_cfg: Mapping[str, Any],
                  agents: Mapping[str, Any]) -> dict[str, Any]:
    """``algo.*`` with the run's batching settings (``data.*``, ``agents.*``, ``training.batch_size/seq_len``)
    mapped on: what the algorithm is built with, so the checks before a run see the same config."""
    algo_cfg = dict(algo_cfg)
    algo_cfg.update(balanced=bool(data_cfg["balanced"]), tasks_per_batch=data_cfg.get("tasks_per_batch"),
                    shuffle=bool(agents["shuffle"]), mask=bool(agents["mask"]))
    for key in ("batch_size", "seq_len"):
        if training.get(key) is not None:
            algo_cfg[key] = int(training[key])
    return algo_cfg


def data_value_range(data, gamma: float) -> tuple[float, float]:
    """HL-Gauss support covering the data's discounted returns, with a margin of 10% (at least 1)."""
    lo, hi = return_range(data, gamma)
    margin = max(1.0, 0.1 * (hi - lo))
    return float(np.floor(lo - margin)), float(np.ceil(hi + margin))


def algo_for_data(cfg: Mapping[str, Any], data, env: EnvSpec | None = None,
                  across_processes: bool = False) -> Algorithm:
    """The run's algorithm for the task set's padded shape ``env``, its HL-Gauss support set to the
    data's return range unless ``training.value_range`` is 'config'. Without ``env`` the data must
    agree on one action count and the observations are taken as flat. ``across_processes``: each
    process holds only its share of the tasks, and the range is that of all of them."""
    training = cfg["training"]
    if env is None:
        n_actions = {d["legals"].shape[-1] for d in data}
        if len(n_actions) != 1:
            raise UserInputError(f"the training tasks disagree on the number of actions: {sorted(n_actions)}")
        env = n_actions.pop()
    algo = build_algo(cfg["algo"], cfg["network"], training, cfg["data"], cfg["agents"], env)
    if algo.value_range_discount is not None and training["value_range"] == "data":
        lo, hi = data_value_range(data, algo.value_range_discount)  # whole numbers (floor / ceil)
        if across_processes:
            lo, hi = -max_over_processes(int(-lo)), max_over_processes(int(hi))
        algo = build_algo(cfg["algo"], cfg["network"], training, cfg["data"], cfg["agents"], env,
                          (float(lo), float(hi)))
    return algo


def local_tasks(task_set: TaskSet, devices: int | None) -> list[int]:
    """The training tasks this process's learner devices own (``training.shard_data``), in order."""
    learners = learner_devices(devices)
    owners = shard_tasks(len(task_set.train), len(learners))
    return sorted(m for g, d in enumerate(learners) if d.process_index == jax.process_index() for m in owners[g])


def shard_buffers(task_set: TaskSet, data, ids: list[int], seq_len: int, devices: int | None,
                  agents: str = "train") -> list:
    """One task shard per local learner device, padded to shapes every process agrees on.

    The processes agree (collectives in :mod:`mtmarl.distributed`) on the longest task and on
    whether every shard's observations fit the code table; a shard that does not makes all use float32.
    """
    learners = learner_devices(devices)
    owners = shard_tasks(len(task_set.train), len(learners))
    local = [g for g, d in enumerate(learners) if d.process_index == jax.process_index()]
    length = max_over_processes(max(d["obs"].shape[0] for d in data))
    shards = build_shards(task_set, data, ids, seq_len, owners, local, length, agents=agents)
    if max_over_processes(int(any(s.obs_values is None for s in shards))):
        shards = build_shards(task_set, data, ids, seq_len, owners, local, length, compact=False, agents=agents)
    return shards


class PeriodicEvaluator:
    """The set's evaluation programs, reused at every periodic and the final evaluation.

    All tasks (both splits) are padded to the set's layout and played by one
    compiled program per agent count (``make_task_set_evaluator``: one copy of
    the policy network per group instead of one per task) that plays ``episodes``
    episodes per task at once, split over devices; the final evaluation's
    ``final_episodes`` run through the same slots in one call of the same programs
    (a slot whose episode ends starts the next), so nothing compiles twice. Asking
    for some splits only builds second programs for that subset (cached too).
    ``step=None`` uses each task's plain evaluation key (as ``mtmarl.evaluate``
    does); periodic evaluations fold the update count into it. Per task, the
    results are those of the per-task evaluator for the same key.

    Slots: on a CPU a device plays ``episodes`` of a task at once, and the final
    evaluation runs its episodes through them in turn. On an accelerator
    (``wide``, the default there) it has a slot for every episode of the final
    evaluation, which then plays in one round: a GPU's step takes about as long
    for 16 slots as for 320, so the final evaluation waits on the loop's length
    (episodes in a row per slot x their steps), not its width. Periodic
    evaluations use the same program with only ``episodes`` slots playing. The
    episodes are the same either way (each one's key depends on its index only).
    """

    def __init__(self, task_set: TaskSet, splits, policy, episodes: int, seed: int,
                 references: dict[str, float], devices: int | None, final_episodes: int | None = None,
                 wide: bool | None = None):
        from mtmarl.evaluation.rollout import task_key

        self.todo = [(split, spec) for split in splits for spec in task_set.split(split)]
        self.task_set, self.policy, self.episodes = task_set, policy, episodes
        self.seed, self.references, self.devices = seed, references, devices
        self.task_key = task_key
        local = jax.local_devices()[: devices or jax.local_device_count()]
        n_dev = len(local)
        # episodes of a task one call plays per device: the final evaluation in one call
        self.capacity = -(-max(episodes, final_episodes or episodes) // n_dev)
        wide = local[0].platform != "cpu" if wide is None else wide
        # slots: episodes of a task a device plays at once
        self.batch = self.capacity if wide else -(-episodes // n_dev)
        self._envs: dict[Any, Any] = {}
        self._fns: dict[tuple, Any] = {}

    def _env(self, spec):
        if spec not in self._envs:
            self._envs[spec] = self.task_set.evaluation_env(spec)
        return self._envs[spec]

    def _evaluator(self, specs: tuple, episodes: int | None):
        """The compiled evaluator of these tasks (built once per distinct task list)."""
        if specs not in self._fns:
            self._fns[specs] = make_task_set_evaluator([self._env(s) for s in specs], self.policy,
                                                       self.episodes, self.devices, self.batch, self.capacity)
        fn = self._fns[specs]
        return fn if episodes in (None, self.episodes) else fn.resized(episodes)

    def _chosen(self, splits, step: int | None, seed: int | None = None):
        """(split, spec) pairs of ``splits`` and their stacked keys (``step`` folded in, if given; ``seed``
        instead of the run's, for one seed of a population)."""
        chosen = [(split, spec) for split, spec in self.todo if splits is None or split in splits]
        keys = [self.task_key(self.seed if seed is None else seed, spec) for _, spec in chosen]
        if step is not None:
            keys = [jax.random.fold_in(key, step) for key in keys]
        return chosen, (jnp.stack(keys) if keys else None)

    def compile(self, params, splits=None, background: bool = False) -> None:
        """Build the programs of ``splits`` now, or with ``background`` in a worker thread while training
        goes on (see ``run_training``); the first evaluation waits for them."""
        chosen, keys = self._chosen(splits, None)
        if chosen:
            self._evaluator(tuple(spec for _, spec in chosen), None).compile(params, keys, background)

    def close(self) -> None:
        """Wait for background compiles to stop (see ``TaskSetEvaluator.close``)."""
        for fn in self._fns.values():
            fn.close()

    def __call__(self, params, step: int | None, splits=None, episodes: int | None = None,
                 seed: int | None = None) -> list[dict[str, Any]]:
        chosen, keys = self._chosen(splits, step, seed)
        if not chosen:
            return []
        fn = self._evaluator(tuple(spec for _, spec in chosen), episodes)
        stats = jax.device_get(fn(params, keys))
        rows = []
        for i, (split, spec) in enumerate(chosen):
            task_stats = jax.tree.map(lambda x: x[i], stats)
            rows.append(summarise(task_info(split, spec, self._env(spec)), task_stats,
                                  reference_for(spec, self.references)))
        return rows


def eval_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """A periodic evaluation's logged numbers per split: mean return, normalised return and win rate (where
    every task has one), each task's return, and the training-split score that picks the best checkpoint."""
    out: dict[str, float] = {}
    for split in ("train", "test"):
        sel = [r for r in rows if r["split"] == split]
        if not sel:
            continue
        out[f"{split}_return"] = float(np.mean([r["mean_return"] for r in sel]))
        norms = [r["normalised_return"] for r in sel if r["normalised_return"] is not None]
        if len(norms) == len(sel):
            out[f"{split}_normalised"] = float(np.mean(norms))
        wins = [r["win_rate"] for r in sel if r.get("win_rate") is not None]
        if wins and len(wins) == len(sel):  # envs with a success signal (SMAX wins): its mean over the split
            out[f"{split}_win_rate"] = float(np.mean(wins))
        for r in sel:
            out[f"{split}/{r['name']}"] = r["mean_return"]
    if any(r["split"] == "train" for r in rows):
        out["train_score"] = train_score(rows)
    return out


def check_finite(metrics: Mapping[str, float], carry: Carry, first: int, last: int, ckpt_dir: Path,
                 last_saved: int | None) -> None:
    """Raise :class:`NonFiniteMetricError` naming every NaN/inf training metric of updates ``first..last``.

    Metrics of one call are means over its updates, so one bad update shows. The
    train state's float arrays (parameters, optimiser state) are checked too (a
    last update with a finite loss could still leave them non-finite); nothing is
    checkpointed after a failed check.
    """
    bad = {k: v for k, v in metrics.items() if not np.all(np.isfinite(v))}  # (one value per seed in a population)
    floats = [x for x in jax.tree.leaves(carry.state) if np.issubdtype(np.asarray(x).dtype, np.inexact)]
    if not bad and all(np.isfinite(x).all() for x in floats):
        return
    what = ("non-finite training metric " + ", ".join(f"{k}={v}" for k, v in sorted(bad.items())) if bad
            else "non-finite parameters")
    where = f"update {last}" if first == last else f"updates {first}..{last}"
    kept = (f"the last good checkpoint is update {last_saved} in {ckpt_dir / 'latest'}" if last_saved is not None
            else f"no checkpoint was saved yet in {ckpt_dir}")
    raise NonFiniteMetricError(f"{what} in {where}: training stopped without saving this state; "
                               f"{kept} (try a lower algo.lr or a wider value support)")


def resume_from(ckpt, population: int) -> str | None:
    """The checkpoint kind ``resume=true`` continues from (:meth:`Checkpointer.resume_point`): ``latest``, else
    ``best`` (a whole training state of a one-seed run, said in one line); None when the run has no checkpoint.
    A population's ``best`` mixes its seeds' best updates, so without ``latest`` it is refused."""
    point = ckpt.resume_point()
    if point is None or point[0] == "latest":
        return None if point is None else "latest"
    best = point[1]
    if population > 1:
        raise UserInputError(f"resume=true but {ckpt.directory} has no readable latest checkpoint, and its best/{best} "
                             f"mixes the seeds' best updates, which is no state to train on from; start again with "
                             f"overwrite=true")
    print(f"resume=true: no readable latest checkpoint in {ckpt.directory}; resuming from best/{best}, the newest "
          f"one there")
    return "best"


def check_same_algorithm(meta: Mapping[str, Any], algo: Algorithm, where: Path) -> None:
    """Refuse to resume a checkpoint of another algorithm or configuration, naming what differs."""
    saved, now = meta.get("algorithm") or {}, json.loads(json.dumps(algo.spec))
    if saved == now:
        return
    # A key on one side only shows as None on the other.
    diff = sorted(f"{part}.{k}: checkpoint {(saved.get(part) or {}).get(k)!r} vs now {(now.get(part) or {}).get(k)!r}"
                  for part in ("algo", "network") for k in {*(saved.get(part) or {}), *(now.get(part) or {})}
                  if (saved.get(part) or {}).get(k) != (now.get(part) or {}).get(k))
    if saved.get("name") != algo.name:
        diff.insert(0, f"name: checkpoint {saved.get('name')!r} vs now {algo.name!r}")
    rest = {k for k in {*saved, *now} - {"algo", "network", "name"} if saved.get(k) != now.get(k)}
    if not diff and not rest:
        return
    raise UserInputError(f"resume=true but the checkpoint in {where} was trained with another algorithm "
                         f"configuration ({'; '.join(diff) or saved}); resume with the same settings or start "
                         f"a new run directory")


def _round_to(every: int, k: int) -> int:
    return 0 if every <= 0 else max(k, (every // k) * k)


def _load(cfg: Mapping[str, Any], task_set: TaskSet, run_dir: Path, main: bool):
    """The run's data on the learner's devices: (learner, algorithm, total updates, updates per call, population)."""
    training = cfg["training"]
    fetch_missing(task_set, cfg["data"]["root"], cfg["data"].get("hub"), cfg["data"].get("hub_manifest"))
    if main:
        announce_start()  # a refusal before this point is announced by mtmarl.train
    shard = bool(training.get("shard_data", False))
    ids = local_tasks(task_set, training.get("devices")) if shard else None
    data = load_task_data(task_set, cfg["data"]["root"], cfg["data"]["quality"], cfg["data"]["verify"],
                          float(cfg["data"]["fraction"]), tasks=ids)
    algo = algo_for_data(cfg, data, task_set.env_spec, across_processes=shard)
    if main:
        write_json(run_dir / ALGO_FILE, algo.spec)
    seq_len = max([algo.sampler.seq_len] + [s.sampler.seq_len for s in algo.stages if s.sampler is not None])
    # Padded agents cost compute only; unmasked (the masking ablation) they are part of the data, as many
    # as the set pads to.
    agents = "train" if bool(cfg["agents"]["mask"]) else "set"
    buffers = build_buffers(task_set, data, seq_len, agents) if ids is None else \
        shard_buffers(task_set, data, ids, seq_len, training.get("devices"), agents)
    del data
    release_freed_memory()  # the decoded vaults' temporaries (peak RSS, see its docstring)
    K = int(training["updates_per_call"])
    total = int(training["updates"])
    if total % K:
        raise UserInputError(f"training.updates ({total}) must be a multiple of updates_per_call ({K})")
    population = int(training.get("population", 1))
    learner = Learner(algo, buffers, K, training.get("devices"), updates=total, population=population)
    return learner, algo, total, K, population


def run_training(cfg: Mapping[str, Any], task_set: TaskSet, run_dir: Path, references: dict[str, float],
                 log=None, stop_after: int | None = None) -> dict[str, Any]:
    """Train, evaluate periodically, checkpoint; returns the final carry, algo and the best step.

    ``cfg`` is the resolved config as plain containers. ``stop_after`` ends the run
    after that many updates (tests use it to simulate a crash).
    """
    training, seed = cfg["training"], int(cfg["seed"])
    # The logger times each phase and names it on the progress bar (processes other than 0 have no logger).
    phase = log.phase if log is not None else lambda name: contextlib.nullcontext()
    main = is_main()  # process 0 (the only one in a single-process run)
    if not main:  # process 0 fetches first; on a shared file system the others then find the vaults there
        await_start()
    with phase("loading data"):
        learner, algo, total, K, population = _load(cfg, task_set, run_dir, main)
    log_every = _round_to(int(training["log_every"]), K) or K
    eval_every = _round_to(int(training["eval_every"]), K)
    ckpt_every = _round_to(int(training["checkpoint_every"]), K)

    ckpt = (Checkpointer if main else NoCheckpoints)(run_dir / "checkpoints", int(training["keep_checkpoints"]))
    with phase("compiling"):
        carry = learner.init(seed)
    template = carry
    selection, done = Selection(population), 0
    earlier_seconds = 0.0  # training time of the sessions before a resume (their checkpoint records it)
    which = resume_from(ckpt, population) if cfg.get("resume") else None
    if which is not None:
        check_same_algorithm(ckpt.meta(which), algo, ckpt.directory)
        with phase("loading data"):
            carry, meta = ckpt.restore(template, which)
            done, selection = int(meta["updates"]), Selection.from_meta(population, meta)
            if population > 1 and selection.any:  # the other seeds' slices of the composite best
                selection.carry, _ = ckpt.restore(template, "best")
        earlier_seconds = float(meta.get("train_seconds", 0.0))
        print(f"resumed from update {done} of {total}")
        if log is not None:
            log.log(done, {"resumed_from": done}, prefix="run")
    elif main and cfg.get("resume"):
        print(f"resume=true but no checkpoint in {ckpt.directory}; starting from scratch")
    carry = broadcast_from_main(carry)  # several processes: all start from process 0's carry
    if not main:
        done = updates_done(carry)

    policy = make_policy(algo, bool(cfg["eval"].get("greedy", False)))
    # All splits (the final evaluation covers train and test); periodic ones use training.eval_splits.
    # Process 0 alone evaluates, on its own devices.
    periodic = PeriodicEvaluator(task_set, [s for s in ("train", "test") if task_set.split(s)], policy,
                                 int(training["eval_episodes"]), seed, references,
                                 cfg["eval"].get("devices"), int(cfg["eval"]["episodes"])) if main else None
    eval_splits = list(training["eval_splits"])
    # The set's evaluation programs compile before the learner's (rware_15: up to 1 GB per program, most of it
    # freed afterwards but kept mapped by glibc; the evaluator trims after each, and after every evaluation), so
    # their peak does not stack on the training program's memory. With the learner on an accelerator they
    # compile in a worker thread while it trains: the host's cores are idle then. On a CPU learner they are
    # not: overlapped, the compiles and the updates compete for the same cores, so the run gets no faster
    # and its peak memory rises.
    if periodic is not None:
        on_accelerator = learner.devices[0].platform != "cpu"
        first = carry.state if population == 1 else seed_slice(carry.state, 0)  # the programs take one seed's
        with phase("compiling"):
            periodic.compile(algo.acting_params(first), eval_splits, background=on_accelerator)
            if not on_accelerator:
                release_freed_memory()

    def evaluate_and_select(step: int, carry: Carry):
        """Process 0 evaluates (each seed of a population with its own keys) and checkpoints the best; the
        others wait for it (not in a device collective)."""
        if periodic is None:  # not process 0
            wait_for_main(f"evaluated-{step}")
            return
        with phase("evaluating"):
            _evaluate_and_select(periodic, step, carry)
        wait_for_main(f"evaluated-{step}")

    def _evaluate_and_select(periodic: PeriodicEvaluator, step: int, carry: Carry):
        if population == 1:
            per = [periodic(algo.acting_params(carry.state), step, eval_splits)]
        else:
            per = [periodic(algo.acting_params(seed_slice(carry.state, i)), step, eval_splits, seed=seed + i)
                   for i in range(population)]
        release_freed_memory()
        metrics = [eval_metrics(rows) for rows in per]
        if log is not None:
            log.log(step, metrics[0] if population == 1 else
                    per_seed({k: np.array([m[k] for m in metrics]) for k in metrics[0]}, seed), prefix="eval")
        if "train_score" in metrics[0] and selection.offer(step, carry, [m["train_score"] for m in metrics]):
            scores = selection.scores[0] if population == 1 else selection.scores
            with phase("saving"):
                ckpt.save_best(step, selection.carry, {**describe(step), **selection.meta(), "score": scores,
                                                       "rows": [_strip(rows) for rows in per] if population > 1
                                                       else _strip(per[0])})

    # the run config a checkpoint carries, without secrets (a Neptune token given on the command line)
    run_config = {**cfg, "logger": {k: v for k, v in (cfg.get("logger") or {}).items() if k != "api_token"}}

    def describe(step: int) -> dict[str, Any]:
        """What a checkpoint records besides the arrays: enough to rebuild and evaluate it alone."""
        return {"updates": step, "stage": learner.stage(step).stage.name if step < total else "done",
                "algorithm": algo.spec, "config": run_config, "train_seconds": seconds_so_far()}

    def seconds_so_far() -> float:
        """Training time of every session of this run (a resumed run's earlier ones come from its checkpoint)."""
        return earlier_seconds + time.perf_counter() - t_train

    try:
        t_train = time.perf_counter()
        last_saved = done or None  # a resumed run starts from its latest checkpoint
        compiled: set[int] = set()  # stages whose program this process has compiled
        while done < total:
            stage = learner.stage(done)
            # a stage's first call compiles its program (and then runs its first updates_per_call updates)
            with phase("training" if stage.number in compiled else "compiling"):
                carry, metrics = learner.run(carry)
            compiled.add(stage.number)
            try:
                check_finite(metrics, carry, done + 1, done + K, ckpt.directory, last_saved)
            except NonFiniteMetricError:  # the same on every process: the carry and metrics are global
                if log is not None:
                    log.log(done + K, per_seed(metrics, seed))  # the offending values go into metrics.jsonl too
                ckpt.close()
                raise
            done += K
            if log is not None:
                if done % log_every == 0 or done == total:
                    log.log(done, {**per_seed(metrics, seed), "stage": float(stage.number)})
                log.advance(done)
            if eval_every and done % eval_every == 0 and done < total:
                evaluate_and_select(done, carry)
            if (ckpt_every and done % ckpt_every == 0) or done == total:
                with phase("saving"):
                    ckpt.save_latest(done, carry, {**describe(done), **selection.meta()})
                last_saved = done
            # Ctrl-C / SIGTERM (mtmarl.training.stop): checkpoint this call's result, stop. Several processes stop
            # together when any of them got a signal (each asks the others once per call).
            signum = max_over_processes(requested() or 0) or None
            if signum is not None and done < total:
                with phase("saving"):
                    if last_saved != done:
                        ckpt.save_latest(done, carry, {**describe(done), **selection.meta()})
                    ckpt.close()
                raise Interrupted(signum, done)
            if stop_after is not None and done >= stop_after:
                break
        train_seconds = seconds_so_far()
        if done >= total and (population == 1 or eval_every):  # the final parameters are a candidate too
            evaluate_and_select(done, carry)  # (a population with no periodic evaluations: final ones only)
    finally:
        if periodic is not None:  # a run that ends early leaves no compile running on
            periodic.close()
    with phase("saving"):  # waits for the checkpoints still being written
        ckpt.close()
    return {"carry": carry, "algo": algo, "learner": learner, "evaluator": periodic, "updates": done,
            "best_step": selection.steps[0], "best_score": selection.scores[0], "selection": selection,
            "train_seconds": train_seconds, "template": template, "population": population}


def per_seed(metrics: Mapping[str, Any], seed: int) -> dict[str, float]:
    """Loggable floats: a single run's metrics as they are; a population's as their mean over seeds under
    the usual names plus each seed's value as ``seed_<s>/<name>`` (Neptune keeps a name either a value or a
    folder, never both)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        v = np.asarray(v, np.float64)
        out[k] = float(v.mean())
        if v.ndim:
            out.update({f"seed_{seed + i}/{k}": float(x) for i, x in enumerate(v)})
    return out


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "returns"} for r in rows]


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
