"""The per-task collectors behind ``python -m mtmarl.collect``: online learner, scripted planner, DAgger.

Each ``collect_*_task(spec, split, cfg, root, ref_path, log_dir, bar)`` produces one
task's data and reference return and writes them with :func:`write_outputs` (the
vault first, the reference last: its presence marks the task finished). The CLI
(:mod:`mtmarl.collect`) picks a collector per env and skips finished tasks.

* :func:`collect_task`: the Anakin online learner named by ``online.system``
  (:data:`mtmarl.algos.registry.ONLINE`, built by :mod:`mtmarl.online.anakin`) trains for
  the task's budget; after every chunk it logs the training return and, for train
  tasks, records the stochastic policy (``collect.quality=mixed``), or keeps its
  parameters to record an *expert* and a *medium* dataset at the end
  (``collect.quality=expert_medium``, :func:`pick_medium`: the HyGen paper's datasets) or one
  dataset of equal parts per quality level (``collect.quality=levels``);
* :func:`collect_scripted_task`: the RWARE planner at decreasing epsilons;
* :func:`collect_dagger_task`: a local-view DAgger student of the planner.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
from omegaconf import DictConfig, OmegaConf

from mtmarl.algos.registry import make_online_system, online_config, online_final_report, online_label, online_task_env
from mtmarl.data import vault as vault_io
from mtmarl.errors import UserInputError
from mtmarl.evaluation.references import merge_entry
from mtmarl.evaluation.rollout import make_evaluator, task_key
from mtmarl.online.anakin import chunk_summary, to_experience
from mtmarl.online import partial
from mtmarl.online.plateau import plateaued, rule_for, stalled
from mtmarl.online.quality import IntervalSnapshots, record_expert_medium, record_intervals, record_levels
from mtmarl.runtime import save_figure
from mtmarl.training import stop as stop_signal


# --------------------------------------------------------------------------- helpers
def env_budget(cfg: DictConfig, env: str) -> int:
    """Training env steps per task: ``collect.env_budget.<env>`` if set, else ``collect.budget``."""
    per_env = cfg.collect.get("env_budget") or {}
    value = per_env.get(env)
    return int(cfg.collect.budget if value is None else value)


def run_updates(budget: int, per_update: int, name: str, bar=None) -> int:
    """The updates a budget of env steps buys: ``ceil(budget / per_update)``, so the steps run are the
    budget rounded up to a whole update; one line says so when that is more than the budget."""
    updates = -(-int(budget) // int(per_update))
    if updates * per_update != budget:
        text = (f"{name}: the budget of {budget:,} env steps is not a whole number of updates "
                f"({per_update:,} env steps each); running {updates:,} update{'s' * (updates > 1)} = "
                f"{updates * per_update:,} env steps")
        if bar is not None:  # above the progress bar, as one line however wide
            bar.console.print(text, soft_wrap=True, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr)
    return updates


def env_quality(cfg: DictConfig, env: str) -> str:
    """How train tasks are recorded: ``collect.env_quality.<env>`` if set, else ``collect.quality``."""
    value = (cfg.collect.get("env_quality") or {}).get(env)
    return str(cfg.collect.get("quality", "mixed") if value is None else value)


def time_limit_s(cfg: DictConfig) -> float | None:
    """``collect.time_limit_min`` in seconds (None: train for the whole budget)."""
    value = cfg.collect.get("time_limit_min")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UserInputError(f"collect.time_limit_min={value!r}; allowed: null or a number of minutes > 0 "
                             "(each task's online training stops at the first chunk past it)")
    return 60.0 * float(value)


def early_stop(started: float, limit_s: float | None) -> str | None:
    """Why the online training should stop before its budget, polled between chunks: a signal
    (Ctrl-C / SIGTERM, :mod:`mtmarl.training.stop`) or ``collect.time_limit_min`` passed."""
    signum = stop_signal.requested()
    if signum is not None:
        return f"signal {signal.Signals(signum).name}"
    if limit_s is not None and time.perf_counter() - started >= limit_s:
        return "time limit"
    return None


def env_online(cfg: DictConfig, env: str) -> dict[str, Any]:
    """The online settings for one env: ``online`` updated with ``online_env.<env>`` (if any)."""
    online = OmegaConf.to_container(cfg.online, resolve=True)
    extra = (cfg.get("online_env") or {}).get(env)
    if extra:
        online.update(OmegaConf.to_container(extra, resolve=True))
    return online


def plot_curve(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["env_steps"] for r in rows], [r["return"] for r in rows], lw=1.5)
    ax.set_xlabel("env steps")
    ax.set_ylabel("mean training return")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it (what the metadata records)."""
    path = Path(path).absolute()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def task_log(log_dir: Path, spec) -> Path:
    """``<log_dir>/<env>/<task>.jsonl`` (its folder made); the curve's PNG goes next to it."""
    path = log_dir / spec.env / f"{vault_io.task_dirname(spec)}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def jump_and_threshold(curve: list[tuple[int, float | None]], threshold: float | None) -> dict[str, Any]:
    """The M3 paper's JP and TT from an online learning curve ``[(env_steps, return), ...]`` in step order.

    ``jp`` (jump point): the return of the first entry, which must be the evaluation before any update
    (env step 0; else None). ``tt`` (time to threshold): the env steps of the first entry whose return
    reaches ``threshold`` (0 if the initial policy already does; None if never, or no threshold).
    Entries with a None return (no episode ended) are skipped.
    """
    first = curve[0] if curve else None
    jp = first[1] if first is not None and first[0] == 0 else None
    tt = None
    if threshold is not None:
        tt = next((int(steps) for steps, ret in curve if ret is not None and ret >= threshold), None)
    return {"jp": jp, "tt": tt, "tt_threshold": threshold}


def concat_experience(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *parts)


# --------------------------------------------------------------------------- one task
# What a partial run keeps (mtmarl.online.partial), in this order.
PROGRESS = ("state", "rows", "parts", "snapshots", "intervals", "steps", "chunk", "steady_s", "done", "first_steps",
            "elapsed", "initial")
_SYSTEMS: dict[tuple, Any] = {}


def get_system(spec, env, mcfg):
    """The compiled system for (task, config, devices), built once per process."""
    key = (spec.adhoc, mcfg, jax.local_device_count())
    if key not in _SYSTEMS:
        _SYSTEMS[key] = make_online_system(env, mcfg)
    return _SYSTEMS[key]


_EVALUATORS: dict[tuple, Any] = {}


def get_evaluator(spec, env, system, greedy: bool, episodes: int, devices):
    key = (spec.adhoc, system.config, greedy, episodes, devices, jax.local_device_count())
    if key not in _EVALUATORS:
        policy = system.greedy_policy if greedy else system.policy
        _EVALUATORS[key] = make_evaluator(env, policy, episodes, devices)
    return _EVALUATORS[key]


# A chunk whose episodes replayed start states more than this share (the reset pool wrapped) is warned about once.
REPLAYED_WARN = 0.01

REFERENCE_KEYS = ("return", "name", "split", "episodes", "std", "env_steps", "seed", "train_seconds",
                  "initial_return", "win_rate", "jp", "tt", "tt_threshold", "set_eval", "stopped", "ended",
                  "stop_rule", "learner", "devices")


def task_options(cfg: DictConfig, spec, split: str) -> dict[str, Any]:
    """Every option that decides one task's data and reference (not where they are written, not the progress bar).

    Kept in its reference entry as ``options``: a rerun with other options is refused rather than
    taking the task as done (:mod:`mtmarl.collect`). ``collect.quality_early_updates`` and
    ``collect.quality_medium_greedy`` are options only where they change something (a train task's snapshots, its
    medium dataset), so a collection without them keeps its options."""
    plain = OmegaConf.to_container(cfg.collect, resolve=True)
    kind = collector_kind(cfg, spec.env)
    opts: dict[str, Any] = {"collector": kind, "seed": int(cfg.seed), "budget": env_budget(cfg, spec.env),
                            "record": bool(plain.get("record", True)), "uid": str(plain.get("uid")),
                            "eval_episodes": int(cfg.eval.episodes), "eval_greedy": bool(cfg.eval.greedy),
                            "time_limit_min": plain.get("time_limit_min")}
    if kind == "online":
        rule = rule_for(cfg, spec.env)
        opts.update(online=env_online(cfg, spec.env), initial_eval=bool(plain.get("initial_eval", False)),
                    plateau=rule.to_json() if rule else None, quality=env_quality(cfg, spec.env),
                    **{k: plain.get(k) for k in ("quality_levels", "quality_records", "quality_min_episodes",
                                                 "quality_episodes")})
        early = early_updates(cfg, spec, split)
        if early:
            opts["quality_early_updates"] = early
        acting = medium_greedy(cfg, spec, split)
        if acting is not None:
            opts["quality_medium_greedy"] = acting
    else:
        opts[kind] = plain.get(kind)
    return opts


def early_updates(cfg: DictConfig, spec, split: str) -> int:
    """``collect.quality_early_updates`` where it applies (train tasks whose datasets are chosen from scored
    snapshots: expert_medium, levels), else 0."""
    n = cfg.collect.get("quality_early_updates") or 0
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise UserInputError(f"collect.quality_early_updates={n!r}; allowed: an integer >= 0 (0: every chunk "
                             "runs online.updates_per_chunk updates)")
    applies = split == "train" and bool(cfg.collect.record) and env_quality(cfg, spec.env) in ("expert_medium", "levels")
    return n if applies else 0


def medium_greedy(cfg: DictConfig, spec, split: str) -> bool | None:
    """``collect.quality_medium_greedy`` where it changes something (an expert_medium train task that records,
    its medium to act otherwise than ``eval.greedy``), else None: the medium is scored and recorded like the
    expert."""
    value = cfg.collect.get("quality_medium_greedy")
    if value is not None and not isinstance(value, bool):
        raise UserInputError(f"collect.quality_medium_greedy={value!r}; allowed: null (the medium acts as "
                             "eval.greedy says), true (greedy) or false (sampled actions)")
    applies = split == "train" and bool(cfg.collect.record) and env_quality(cfg, spec.env) == "expert_medium"
    return value if applies and value is not None and value != bool(cfg.eval.greedy) else None


def ended(budget_done: bool, stopped: str | None, gave_up: bool, steps: int) -> str | None:
    """How an online run's training ended, as its reference entry says it (None: stopped short by ``stopped``)."""
    if budget_done:
        return "budget"
    if stopped:
        return None
    return f"no learning by {steps:,} steps" if gave_up else f"plateau at {steps:,} steps"


def collector_kind(cfg: DictConfig, env: str) -> str:
    """``dagger`` (``collect.dagger.envs``), ``scripted`` (``collect.scripted.envs``) or ``online``; naming
    an env in both lists is an error."""
    dagger = env in (cfg.collect.get("dagger") or {}).get("envs", [])
    scripted = env in (cfg.collect.get("scripted") or {}).get("envs", [])
    if dagger and scripted:
        raise UserInputError(f"{env} is in both collect.dagger.envs and collect.scripted.envs; pick one")
    return "dagger" if dagger else "scripted" if scripted else "online"


def write_outputs(spec, cfg: DictConfig, root: Path, ref_path: Path, result: dict[str, Any],
                  parts: list[dict[str, Any]] | dict[str, list] | None, meta: dict[str, Any],
                  **reference_extra) -> None:
    """The task's vault (when ``parts`` were recorded), then its reference entry.

    ``parts`` is one dataset (uid ``collect.uid``) or ``{uid: parts}`` for several in one vault.
    The reference goes last: its presence (with the vault) marks the task finished.
    """
    datasets = parts if isinstance(parts, dict) else {str(cfg.collect.uid): parts}
    for uid, chunks in datasets.items():
        if chunks is None:
            continue
        exp = concat_experience(chunks)
        path = vault_io.write_vault(root, spec, exp, meta, uid=uid, overwrite=True)
        result["vault"] = str(path if len(datasets) == 1 else path.parent)
        result["transitions"] = result.get("transitions", 0) + int(exp["actions"].shape[1])
    entry = {k: result[k] for k in REFERENCE_KEYS if result.get(k) is not None}
    if result.get("tt_threshold") is not None:
        entry["tt"] = result.get("tt")  # null: the threshold was never reached
    merge_entry(ref_path, spec.adhoc, {**entry, **reference_extra, "options": task_options(cfg, spec, result["split"])})


def collect_task(spec, split: str, cfg: DictConfig, root: Path, ref_path: Path, log_dir: Path,
                 bar=None) -> dict[str, Any]:
    """The online learner ``online.system`` trains on the task; chunk by chunk it logs and records."""
    online = env_online(cfg, spec.env)
    mcfg = online_config(online)
    env = online_task_env(spec.build(), mcfg)  # fine-tuning: padded to the pretrained network's layout
    label = online_label(mcfg)
    if getattr(mcfg, "critic_input", "obs") != "obs" and env.state_dim == 0:
        raise UserInputError(f"{spec.name} has no global state; use online.critic_input=obs")
    system = get_system(spec, env, mcfg)
    budget = env_budget(cfg, spec.env)
    record = bool(cfg.collect.record) and split == "train"
    key = task_key(cfg.seed, spec)
    init_key, rec_key, eval_key = jax.random.split(key, 3)
    state = system.init(init_key)
    evaluate = get_evaluator(spec, env, system, bool(cfg.eval.greedy), int(cfg.eval.episodes),
                             cfg.eval.devices)
    quality = env_quality(cfg, spec.env)  # checked by mtmarl.collect.run
    rule = rule_for(cfg, spec.env)
    log_path = task_log(log_dir, spec)
    rows, parts, snapshots, steps, chunk, steady_s = [], [], [], 0, 0, 0.0
    intervals = IntervalSnapshots(4 * int(cfg.collect.quality_records)) if record and quality == "intervals" else None
    if intervals is not None:
        intervals.add(0, 0, state.params)
    if record and quality == "levels":
        snapshots.append(jax.device_get(state.params))  # level 0: the untrained policy
    per_update = system.env_steps_per_update
    updates = run_updates(budget, per_update, spec.name, bar)
    done, first_steps, elapsed = 0, 0, 0.0
    saved_at, every_s = partial.path(root, spec), 60.0 * float(cfg.collect.get("checkpoint_min") or 5.0)
    options = task_options(cfg, spec, split)
    # A task solved within its first chunk has no snapshot between untrained and solved, so no medium: the first
    # ``early`` updates then run one per chunk, each leaving a snapshot.
    early = early_updates(cfg, spec, split)
    resumed = partial.load(saved_at, options, state)
    initial = None
    if resumed is None and bool(cfg.collect.get("initial_eval", False)):
        # The untrained actor (orthogonal init, gain 0.01) is close to uniform over legal actions:
        # its return is the task's near-random baseline and the start of the learning curve.
        initial = float(np.mean(jax.device_get(evaluate(system.actor_params(state), eval_key)).returns))
    if resumed is not None:
        (state, rows, parts, snapshots, intervals, steps, chunk, steady_s, done, first_steps, elapsed,
         initial) = (resumed[k] for k in PROGRESS)
        (bar.console.print if bar else print)(f"{spec.name}: continuing its partial run at {steps:,} env steps")
    job = bar.add_task(f"{split}: {spec.name}", total=updates * per_update, ret=float("nan")) if bar else None
    start, limit_s, stopped, gave_up = time.perf_counter() - elapsed, time_limit_s(cfg), None, False
    warned_replay = False
    last_save = time.perf_counter()
    with open(log_path, "w") as log:  # the curve so far (a continued run's rows), then each chunk's
        log.writelines(json.dumps(row) + "\n" for row in rows)
        while done < updates and stopped is None:
            # the last chunk may be shorter (its own program), and so are the early ones
            n = min(1 if done < early else mcfg.updates_per_chunk, updates - done)
            t0 = time.perf_counter()
            state, metrics = system.train_chunk(state, n)
            summary = chunk_summary(metrics)  # blocks on the chunk
            if summary.get("replayed_starts", 0.0) > REPLAYED_WARN and not warned_replay:
                warned_replay = True
                warnings.warn(f"{spec.name}: {summary['replayed_starts']:.0%} of a chunk's episodes started from a "
                              f"replayed start state (online.resets_per_env={mcfg.resets_per_env} per env and update, "
                              f"episodes of {summary['length']:.0f} steps in {mcfg.rollout_len}-step rollouts); "
                              "raise online.resets_per_env", stacklevel=2)
            steps += n * per_update
            done += n
            dt = time.perf_counter() - t0
            if chunk:  # the first chunk includes compilation
                steady_s += dt
            else:
                first_steps = steps
            row = {"env_steps": steps, "updates": done,
                   "wall_s": round(time.perf_counter() - start, 3), "chunk_sps": round(n * per_update / dt, 1),
                   **{k: (None if v != v else round(v, 5)) for k, v in summary.items()}}
            if record and quality == "mixed":
                exp = to_experience(system.record(state, jax.random.fold_in(rec_key, chunk)))
                parts.append(exp)
                row["recorded"] = int(sum(p["actions"].shape[1] for p in parts))
            elif intervals is not None:
                intervals.add(chunk + 1, steps, state.params)
            elif record:
                snapshots.append(jax.device_get(state.params))
            rows.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
            chunk += 1
            if bar:
                bar.update(job, completed=steps, ret=summary["return"])
            if rule is not None and plateaued(rule, [r["env_steps"] for r in rows], [r["return"] for r in rows]):
                break
            if rule is not None and stalled(rule, [r["env_steps"] for r in rows], [r["return"] for r in rows]):
                gave_up = True
                break
            if done < updates:
                stopped = early_stop(start, limit_s)
            signalled = stopped is not None and stopped.startswith("signal")
            if done < updates and (signalled or (stopped is None and time.perf_counter() - last_save >= every_s)):
                elapsed = time.perf_counter() - start
                values = (state, rows, parts, snapshots, intervals, steps, chunk, steady_s, done, first_steps,
                          elapsed, initial)
                partial.save(saved_at, options, dict(zip(PROGRESS, values)))
                last_save = time.perf_counter()
    train_s = time.perf_counter() - start
    if rows and any(r["return"] is not None for r in rows):
        plot_curve([r for r in rows if r["return"] is not None], log_path.with_suffix(".png"),
                   f"{label} on {spec.name}")

    stats = jax.device_get(evaluate(system.actor_params(state), eval_key))
    final = float(np.mean(stats.returns))
    result = {"name": spec.name, "split": split, "return": final,
              "std": float(np.std(stats.returns)), "episodes": int(cfg.eval.episodes),
              "env_steps": steps, "train_seconds": round(train_s, 1),
              "env_steps_per_second": round(steps / max(train_s, 1e-9), 1),
              "train_steps_per_second": round((steps - first_steps) / steady_s, 1) if steady_s else None,
              "greedy": bool(cfg.eval.greedy), "seed": int(cfg.seed), "initial_return": initial,
              "system": mcfg.system, "learner": label, "devices": jax.local_device_count(),
              "stop_rule": rule.describe() if rule else None,
              "ended": ended(done >= updates, stopped, gave_up, steps)}
    if stopped is not None:  # the data and reference say it: this policy had less than the budget
        result["stopped"] = f"{stopped} at {steps:,} of {budget:,} steps"
    meta = {"collector": f"mtmarl.collect (Anakin {label})", "online": online,
            "budget": budget, "seed": int(cfg.seed), "final_return": final,
            "record_every_updates": mcfg.updates_per_chunk, "learning_curve": shown(log_path), "quality": quality,
            "env_steps": steps, "stop_rule": result["stop_rule"], "ended": result["ended"],
            **({"stopped": result["stopped"]} if stopped else {})}
    if env.spec.has_success:
        result["win_rate"] = float(np.mean(stats.successes))
    result.update(online_final_report(mcfg, system, state, seed=int(cfg.seed), episodes=int(cfg.eval.episodes),
                               greedy=bool(cfg.eval.greedy)))
    # JP / TT (the M3 paper): the initial evaluation, then each chunk's training return (stochastic policy)
    curve = ([(0, initial)] if initial is not None else []) + [(r["env_steps"], r["return"]) for r in rows]
    result.update(jump_and_threshold(curve, mcfg.tt_threshold))
    if record and quality == "expert_medium":
        acting = medium_greedy(cfg, spec, split)
        medium_acting = bool(cfg.eval.greedy) if acting is None else acting
        judge = get_evaluator(spec, env, system, medium_acting, int(cfg.eval.episodes), cfg.eval.devices)
        parts = record_expert_medium(system, state, snapshots, stats, cfg, judge, medium_acting, rec_key, meta,
                                     env.spec.has_success)
    elif intervals is not None:
        picked = intervals.pick(int(cfg.collect.quality_records), chunk, steps, jax.device_get(state.params))
        parts = record_intervals(system, state, picked, cfg, rec_key, meta, env.spec.has_success)
    elif record and quality == "levels":
        parts = record_levels(system, state, snapshots, cfg, evaluate, rec_key, meta, env.spec.has_success)
    write_outputs(spec, cfg, root, ref_path, result, parts if record else None, meta)
    if stopped is None or not stopped.startswith("signal"):  # a signal's run is continued by the next one
        partial.remove(saved_at)
    if bar:
        bar.update(job, completed=steps, ret=final)
    return result


def collect_scripted_task(spec, split: str, cfg: DictConfig, root: Path, ref_path: Path, log_dir: Path,
                          bar=None) -> dict[str, Any]:
    """RWARE data from the scripted planner (:mod:`mtmarl.online.scripted_rware`), level by level.

    Each level records ``record_envs`` envs for one horizon at one epsilon (the first level is
    a careless uniform-random policy); the last level's return is the task's reference.
    """
    from mtmarl.online import scripted_rware as scripted
    from mtmarl.online.rollout import PoolMaker

    scfg = cfg.collect.scripted
    levels = [float(e) for e in scfg.epsilons]
    if not levels or any(not 0.0 <= e <= 1.0 for e in levels):
        raise UserInputError(f"collect.scripted.epsilons must be a non-empty list in [0, 1], got {levels}")
    env = spec.build()
    n_envs, length = int(scfg.record_envs), env.horizon
    resets = length // 20 + 1  # careless episodes end at the first collision, after tens of steps
    pools = PoolMaker(env, n_envs * resets)
    record = jax.jit(scripted.rollout, static_argnums=(0, 3))
    returns = jax.jit(scripted.episode_returns, static_argnums=0)
    key = task_key(cfg.seed, spec)
    rec_key, eval_key = jax.random.split(key)
    eval_keys = jax.random.split(eval_key, int(cfg.eval.episodes))
    do_record = bool(cfg.collect.record) and split == "train"
    log_path = task_log(log_dir, spec)
    job = bar.add_task(f"{split}: {spec.name}", total=len(levels), ret=float("nan")) if bar else None
    start, rows, parts, steps = time.perf_counter(), [], [], 0
    with open(log_path, "w") as log:
        for i, eps in enumerate(levels):
            careless = i == 0
            k_pool, k_run = jax.random.split(jax.random.fold_in(rec_key, i))
            traj = record(env, pools(k_pool, (n_envs, resets)), k_run, length, eps, careless)
            done = np.asarray(traj.terminal | traj.truncated)
            ret = float(np.asarray(traj.episode_return)[done].mean()) if done.any() else float("nan")
            steps += n_envs * length
            row = {"env_steps": steps, "level": i, "epsilon": eps, "careless": careless,
                   "episodes": int(done.sum()), "return": round(ret, 5),
                   "collisions": int(np.asarray(traj.terminal).sum()), "wall_s": round(time.perf_counter() - start, 3)}
            if do_record:
                parts.append(to_experience(jax.tree.map(lambda x: x[None], traj)))
                row["recorded"] = int(sum(p["actions"].shape[1] for p in parts))
            rows.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
            if bar:
                bar.update(job, completed=i + 1, ret=ret)
    plot_curve(rows, log_path.with_suffix(".png"), f"scripted planner on {spec.name} (epsilon {levels[0]} -> {levels[-1]})")
    final_returns = np.asarray(returns(env, eval_keys, levels[-1], False))
    initial = float(np.mean(returns(env, eval_keys, 1.0, True)))
    final = float(final_returns.mean())
    train_s = time.perf_counter() - start
    result = {"name": spec.name, "split": split, "return": final, "std": float(final_returns.std()),
              "episodes": int(cfg.eval.episodes), "env_steps": steps, "train_seconds": round(train_s, 1),
              "env_steps_per_second": round(steps / max(train_s, 1e-9), 1), "seed": int(cfg.seed),
              "initial_return": initial}
    meta = {"collector": "mtmarl.collect (scripted RWARE planner)",
            "scripted": OmegaConf.to_container(scfg, resolve=True), "seed": int(cfg.seed),
            "final_return": final, "levels": rows, "learning_curve": shown(log_path)}
    write_outputs(spec, cfg, root, ref_path, result, parts if do_record else None, meta,
                  behaviour=f"scripted planner, epsilon {levels[-1]}")
    if bar:
        bar.update(job, completed=len(levels), ret=final)
    return result


def collect_dagger_task(spec, split: str, cfg: DictConfig, root: Path, ref_path: Path, log_dir: Path,
                        bar=None) -> dict[str, Any]:
    """RWARE data from a local-view DAgger student of the planner (:mod:`mtmarl.online.dagger`).

    The pure student (sampled actions) is recorded for one horizon of ``record_envs`` envs
    before the first iteration and after every ``record_every`` iterations, so the vault mixes
    its qualities from untrained to final in equal parts; the final student's return is the
    task's reference (test tasks train a student for the reference only).
    """
    from mtmarl.online.dagger import DaggerConfig, make_dagger

    dcfg = OmegaConf.to_container(cfg.collect.dagger, resolve=True)
    every, n_envs = int(dcfg.pop("record_every")), int(dcfg.pop("record_envs"))
    dcfg.pop("envs", None)
    if every < 1 or n_envs < 1:
        raise UserInputError(f"collect.dagger.record_every and record_envs must be >= 1, got {every}, {n_envs}")
    env = spec.build()
    dagger = make_dagger(env, DaggerConfig.from_mapping(dcfg))
    key = task_key(cfg.seed, spec)
    init_key, it_key, rec_key, eval_key = jax.random.split(key, 4)
    state = dagger.init(init_key)
    do_record = bool(cfg.collect.record) and split == "train"
    evaluate = make_evaluator(env, dagger.greedy_policy if bool(cfg.eval.greedy) else dagger.policy,
                              int(cfg.eval.episodes), cfg.eval.devices)
    # The untrained student (orthogonal init, gain 0.01) is close to uniform over legal actions.
    initial = float(np.mean(jax.device_get(evaluate(state.params, eval_key)).returns))
    log_path = task_log(log_dir, spec)
    total = dagger.config.iterations
    job = bar.add_task(f"{split}: {spec.name}", total=total, ret=float("nan")) if bar else None
    start, rows, parts, labelled = time.perf_counter(), [], [], 0
    with open(log_path, "w") as log:
        for it in range(total + 1):  # `it` iterations done so far
            row: dict[str, Any] = {"iteration": it, "env_steps": labelled}
            if it % every == 0 or it == total:
                traj = dagger.record(state.params, jax.random.fold_in(rec_key, it), n_envs, env.horizon)
                done = np.asarray(traj.terminal | traj.truncated)
                row["return"] = round(float(np.asarray(traj.episode_return)[done].mean()), 5) if done.any() else None
                row["collisions"] = int(np.asarray(traj.terminal).sum())
                if do_record:
                    parts.append(to_experience(jax.tree.map(lambda x: x[None], traj)))
                    row["recorded"] = int(sum(p["actions"].shape[1] for p in parts))
            if it < total:
                state, m = dagger.iterate(state, jax.random.fold_in(it_key, it))
                m = jax.device_get(m)
                labelled += dagger.config.num_envs * dagger.config.steps
                row.update(loss=round(float(m.loss), 5), accuracy=round(float(m.accuracy), 5),
                           beta=round(float(m.beta), 5))
            row["wall_s"] = round(time.perf_counter() - start, 3)
            rows.append(row)
            log.write(json.dumps(row) + "\n")
            log.flush()
            if bar:
                bar.update(job, completed=it, ret=row.get("return") or float("nan"))
    curve = [r for r in rows if r.get("return") is not None]
    plot_curve([{"env_steps": r["env_steps"], "return": r["return"]} for r in curve],
               log_path.with_suffix(".png"), f"DAgger student (local view) on {spec.name}")
    train_s = time.perf_counter() - start
    stats = jax.device_get(evaluate(state.params, eval_key))
    final = float(np.mean(stats.returns))
    result = {"name": spec.name, "split": split, "return": final, "std": float(np.std(stats.returns)),
              "episodes": int(cfg.eval.episodes), "env_steps": labelled, "train_seconds": round(train_s, 1),
              "env_steps_per_second": round(labelled / max(train_s, 1e-9), 1), "seed": int(cfg.seed),
              "initial_return": initial}
    meta = {"collector": "mtmarl.collect (DAgger student of the RWARE planner, local view)",
            "dagger": OmegaConf.to_container(cfg.collect.dagger, resolve=True), "seed": int(cfg.seed),
            "final_return": final, "levels": curve, "learning_curve": shown(log_path)}
    write_outputs(spec, cfg, root, ref_path, result, parts if do_record else None, meta,
                  behaviour="DAgger student of the planner (local view), sampled actions")
    if bar:
        bar.update(job, completed=total, ret=final)
    return result
