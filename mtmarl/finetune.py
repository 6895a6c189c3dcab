"""Online stage CLI: train an online stage (``online=<name>``) on each task and score it, recording no data.

    python -m mtmarl.finetune online=finetune online.init_from=outputs/m3_marine task=smax:map=3m
    python -m mtmarl.finetune online=hygen online.init_from=outputs/hygen_marine task=smax:map=3m
    python -m mtmarl.finetune online=qmix task=smax:map=3m finetune.budget=204800

The stage is looked up in :data:`mtmarl.algos.registry.ONLINE` (fine-tuning a pretrained policy, HyGen's
hybrid stage, or an online learner from scratch as the baseline); the loop, logs and scoring are the online
collector's (:func:`mtmarl.online.collectors.collect_task` with recording off): a learning curve per task
in ``<finetune.out>/logs/<env>/<task>.jsonl``, the final evaluation with JP / TT (and what the stage adds,
e.g. HyGen's ``set_eval``) in ``<finetune.out>/references.json``. A finished task (its entry written after its
whole budget, with the same options) is skipped, so a stopped sweep resumes; a task a signal stopped runs again,
and one finished with other options is refused unless ``finetune.redo=true``. ``finetune.out`` may not lie in
the bundled ``vault_data/``. Data collection is ``python -m mtmarl.collect``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtmarl.errors import UserInputError
from mtmarl.runtime import enable_compilation_cache, hydra_cli, user_errors_exit


def collector_config(cfg: DictConfig) -> DictConfig:
    """The collector's view of a fine-tuning config: its budget, evaluation and outputs, recording off."""
    ft = cfg.finetune
    return OmegaConf.create({
        "task": cfg.get("task"), "split": str(cfg.split), "seed": int(cfg.seed),
        "online": OmegaConf.to_container(cfg.online, resolve=True),
        "online_env": OmegaConf.to_container(cfg.online_env, resolve=True) if cfg.get("online_env") else {},
        "collect": {"budget": ft.budget, "env_budget": {}, "initial_eval": bool(ft.initial_eval),
                    "root": str(ft.out), "uid": "default", "record": False, "quality": "mixed",
                    "time_limit_min": ft.time_limit_min, "progress": bool(ft.progress),
                    "redo": ft.get("redo", False) is True},
        "eval": OmegaConf.to_container(cfg.eval, resolve=True)})


@user_errors_exit
def run(cfg: DictConfig) -> list[dict[str, Any]]:
    from rich.console import Console

    from mtmarl.collect import BUNDLED, resolve_task_set, skip_reason
    from mtmarl.online.collectors import task_options
    from mtmarl.config_check import check_keys
    from mtmarl.evaluation.references import read_entries
    from mtmarl.online.collectors import collect_task, time_limit_s
    from mtmarl.training.stop import catch_signals, requested

    check_keys(OmegaConf.to_container(cfg, resolve=True), "finetune")
    enable_compilation_cache()
    if int(cfg.finetune.budget) < 1:
        raise UserInputError(f"finetune.budget must be >= 1, got {cfg.finetune.budget}")
    if int(cfg.eval.episodes) < 1:
        raise UserInputError(f"eval.episodes must be >= 1, got {cfg.eval.episodes}")
    ccfg = collector_config(cfg)
    time_limit_s(ccfg)  # refused now, not after the first task
    task_set = resolve_task_set(cfg)
    split = "train" if cfg.get("task") else str(cfg.split)
    if split not in ("train", "test", "all"):
        raise UserInputError(f"split={split!r}; allowed: train, test, all")
    todo = [(s, spec) for s in (["train", "test"] if split == "all" else [split]) for spec in task_set.split(s)]
    out = Path(str(cfg.finetune.out))
    if out.resolve().is_relative_to(BUNDLED.resolve()):
        raise UserInputError(f"finetune.out={cfg.finetune.out} is inside the bundled data {BUNDLED.resolve()} (tracked "
                             "vaults and the references.json that normalises them); choose another folder, e.g. "
                             "the default outputs/finetune")
    out.mkdir(parents=True, exist_ok=True)
    ref_path, log_dir = out / "references.json", out / "logs"
    console = Console(stderr=True)
    results = []
    with catch_signals():
        for s, spec in todo:
            if requested() is not None:
                console.print(f"stopped on a signal before {s} task {spec.name}; run the same command again to go on")
                break
            where = skip_reason(spec, s, out, "default", read_entries(ref_path).get(spec.adhoc), False,
                                task_options(ccfg, spec, s), bool(ccfg.collect.redo), ref_path)
            if where is not None:
                console.print(f"skip {s} task {spec.name}: {where}")
                results.append({"name": spec.name, "split": s, "skipped": True})
                continue
            res = collect_task(spec, s, ccfg, out, ref_path, log_dir)
            console.print(f"{s} task {spec.name}: final return {res['return']:.3f} after {res['env_steps']:,} steps"
                          + (f"; training stopped early ({res['stopped']})" if res.get("stopped") else ""))
            results.append(res)
        signum = requested()
    console.print(f"references: {ref_path}")
    if signum is not None:
        raise SystemExit(128 + signum)
    return results


if __name__ == "__main__":
    hydra_cli("finetune", run)
