"""Experiment configs (``mtmarl/configs/experiments/``) and the train configs they produce, via Hydra's compose API."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from mtmarl.errors import UserInputError

from mtmarl.runtime import CONFIG_DIR, quote_task_overrides

EXPERIMENT_DIR = CONFIG_DIR / "experiments"
EXPERIMENTS = ("task_diversity", "dataset_size", "model_size", "ablations", "table1", "learning", "smax", "tuning")
PRESETS = ("quick", "default", "cpu", "paper", "gpu")


def _compose(config_dir: Path, name: str, overrides: Sequence[str], hydra_config: bool = False) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    if GlobalHydra.instance().is_initialized():  # e.g. called from inside a Hydra app
        GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir), version_base=None):
        try:
            return compose(name, list(overrides), return_hydra_config=hydra_config)
        except HydraException as err:  # bad override syntax, unknown key or group option
            msg = " ".join(str(err).split())
            raise UserInputError(f"{name}: {msg}") from None


def compose_experiment(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """``mtmarl/configs/experiments/<name>.yaml`` with its budget preset and overrides.

    The preset is ``budget=quick|default|cpu|paper|gpu``, or just its name as the first override.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {EXPERIMENTS}")
    overrides = list(overrides)
    if overrides and overrides[0] in PRESETS:
        overrides[0] = f"budget={overrides[0]}"
    cfg = _compose(EXPERIMENT_DIR, name, overrides)
    if cfg.budget.name not in PRESETS:
        raise UserInputError(f"budget must be one of {PRESETS}, got {cfg.budget.name!r}")
    return cfg


def compose_train(overrides: Sequence[str], hydra_config: bool = False) -> DictConfig:
    """The ``mtmarl.train`` config a run's overrides give (what the subprocess will compose)."""
    return _compose(CONFIG_DIR, "train", quote_task_overrides(list(overrides)), hydra_config)


def run_overrides(cfg: DictConfig, specific: Sequence[str]) -> list[str]:
    """Budget overrides, then the run's own, then ``extra`` (data.root, search paths...): later ones win."""
    return [*cfg.budget.train, *specific, *cfg.extra]


def plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)
