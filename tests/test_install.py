"""A plain (non-editable) install of the package runs the Hydra CLIs from its own copy of the configs.

The repository's sources (``pyproject.toml``, ``README.md``, ``mtmarl/``) are copied to a
temporary directory and built there into a wheel the way ``pip install .`` builds one
(build isolation: pip provides ``[build-system].requires``), so a stale ``build/`` of the
checkout cannot supply files the sources would not. The wheel is installed with
``pip install --target`` and the CLIs run from a directory outside the repository with only
that install on ``PYTHONPATH``. PYTHONPATH entries come before site-packages, and
setuptools' editable finder (the ``.venv`` holds an editable install) is appended to
``sys.meta_path`` after the path finder, so the installed copy is the one imported; the
test checks that rather than assuming it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "mtmarl" / "configs"


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel path, install dir): the package built from a copy of the sources and installed there."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "mtmarl", src / "mtmarl", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", "--quiet", "-w", str(tmp / "dist"), str(src)], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("mtmarl-*.whl")
    site = tmp / "site"
    _run([*pip, "install", "--no-deps", "--no-index", "--quiet", "--target", str(site), str(wheel)], cwd=tmp)
    return wheel, site


@pytest.fixture(scope="module")
def cli(installed, tmp_path_factory):
    """Run ``python <args>`` from outside the repository with only the installed copy importable."""
    _, site = installed
    cwd = tmp_path_factory.mktemp("elsewhere")
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONSAFEPATH", None)
    return lambda *args: _run([sys.executable, *args], cwd=cwd, env=env).stdout


def test_wheel_ships_every_config(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n for n in zf.namelist() if n.endswith(".yaml")}
    in_repo = {p.relative_to(ROOT).as_posix() for p in CONFIGS.rglob("*.yaml")}
    assert {"mtmarl/configs/train.yaml", "mtmarl/configs/evaluate.yaml", "mtmarl/configs/collect.yaml",
            "mtmarl/configs/algo/mt_oryx.yaml", "mtmarl/configs/tasks/rware_15.yaml"} <= in_repo
    assert in_repo - shipped == set(), "configs missing from the wheel"


def test_installed_copy_is_the_one_imported(installed, cli):
    _, site = installed
    out = cli("-c", "import mtmarl, mtmarl.configs; print(mtmarl.__file__); print(mtmarl.configs.CONFIG_DIR)")
    package, config_dir = (Path(line).resolve() for line in out.split())
    for path in (package, config_dir):
        assert path.is_relative_to(site.resolve()) and not path.is_relative_to(ROOT), path
    assert (config_dir / "train.yaml").is_file()


def test_installed_train_cli_composes_from_its_own_configs(installed, cli):
    _, site = installed
    cfg = yaml.safe_load(cli("-m", "mtmarl.train", "+algo=mt_oryx", "+tasks=rware_15", "--cfg", "job"))
    assert cfg["algo"]["name"] == "mt_oryx"
    assert cfg["tasks"]["name"] == "rware_15" and cfg["tasks"]["env"] == "rware"
    assert len(cfg["tasks"]["train"]) == 15
    assert {"network", "training", "logger", "data"} <= set(cfg)
    searchpath = cli("-m", "mtmarl.train", "+algo=mt_oryx", "+tasks=rware_15", "--info", "searchpath")
    assert f"file://{(site / 'mtmarl' / 'configs').resolve()}" in searchpath
    assert str(ROOT) not in searchpath


def test_installed_evaluate_cli_takes_a_user_search_path(cli, tmp_path):
    """``hydra.searchpath=[file://...]`` still adds the user's own task sets to the packaged ones."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "my_set.yaml").write_text(
        "name: my_set\nenv: connector\nnum_train: null\nsingle: null\n"
        "train:\n  - {name: g5-2a, grid: 5, agents: 2}\ntest:\n  - {name: g5-3a, grid: 5, agents: 3}\n")
    cfg = yaml.safe_load(cli("-m", "mtmarl.evaluate", "policy=random", "+tasks=my_set",
                             f"hydra.searchpath=[file://{tmp_path}]", "--cfg", "job"))
    assert cfg["policy"] == "random" and cfg["split"] == "test"
    assert cfg["tasks"]["name"] == "my_set" and cfg["tasks"]["train"][0]["grid"] == 5
    # the packaged groups are listed, and the package's own __init__.py / __pycache__ are not taken for configs
    help_text = cli("-m", "mtmarl.evaluate", "--help")
    assert "tasks: connector_10, lbf_5, rware_15" in help_text
    assert "__pycache__" not in help_text and "__init__" not in help_text


def test_installed_hub_cli_runs(cli):
    """Subpackages (``mtmarl.hub`` with its ``__main__``) are in the wheel too."""
    out = cli("-m", "mtmarl.hub", "--help")
    assert "python -m mtmarl.hub" in out and "{download,pack}" in out
