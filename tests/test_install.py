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

The core install (no optional extras) is checked in a fresh virtual environment that sees the wheel's
install and the test environment's packages except those of the extras (``neptune``, ``slurm``): a
directory of links to every other entry of this environment's site-packages, nothing downloaded. There
the package imports, a feature that needs a missing extra is one error line, and (``slow``) the README's
quick run trains and evaluates.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
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


# The optional extras' top-level modules and distributions (pyproject.toml's neptune and slurm; mtmarl.errors.EXTRAS).
EXTRA_NAMES = {"neptune", "submitit", "hydra_submitit_launcher"}


def _link_all_but_the_extras(src: Path, dst: Path) -> None:
    """``dst``: links to the entries of site-packages ``src``, less the extras, the editable mtmarl and .pth files
    (``hydra_plugins`` is a namespace every plugin adds to: its other members stay)."""
    dst.mkdir()
    for entry in src.iterdir():
        if (entry.name.split("-")[0].lower() in EXTRA_NAMES or entry.name.startswith(("mtmarl", "__editable__"))
                or entry.suffix == ".pth"):
            continue
        if entry.name == "hydra_plugins":
            _link_all_but_the_extras(entry, dst / entry.name)
        else:
            (dst / entry.name).symlink_to(entry)


@pytest.fixture(scope="module")
def core(installed, tmp_path_factory):
    """Run ``<core venv python> <args>`` (from a directory outside the repository whose ``vault_data`` is the
    repository's) -> the completed process, whatever its exit code."""
    _, site = installed
    tmp = tmp_path_factory.mktemp("core")
    _link_all_but_the_extras(Path(sysconfig.get_paths()["purelib"]), tmp / "deps")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True)
    python = tmp / "venv" / "bin" / "python"
    venv_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip()
    (Path(venv_site) / "mtmarl_core.pth").write_text(f"{site}\n{tmp / 'deps'}\n")
    cwd = tmp / "clone"
    cwd.mkdir()
    (cwd / "vault_data").symlink_to(ROOT / "vault_data")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    env["PYTHONWARNINGS"] = "ignore"
    return lambda *args: subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True,
                                        timeout=900)


def test_core_install_imports_without_the_extras(installed, core):
    _, site = installed
    proc = core("-c", "import importlib.util, sys, mtmarl, mtmarl.train, mtmarl.evaluate, mtmarl.collect, "
                      "mtmarl.experiments.driver, mtmarl.training.logging\n"
                      "print(mtmarl.__file__)\n"
                      "print(sorted(m for m in ('neptune', 'submitit', 'hydra_plugins.hydra_submitit_launcher') "
                      "if importlib.util.find_spec(m) is not None))")
    assert proc.returncode == 0, proc.stderr[-3000:]
    package, found = proc.stdout.splitlines()
    assert Path(package).resolve().is_relative_to(site.resolve())
    assert found == "[]"  # the extras really are absent there


def test_core_install_names_the_missing_extra(core, tmp_path):
    proc = core("-m", "mtmarl.train", "+algo=mt_oryx", "+tasks=lbf_5", "--multirun", "hydra/launcher=submitit_slurm")
    assert proc.returncode == 2 and proc.stderr == (
        "error: hydra/launcher=submitit_slurm needs the package hydra-submitit-launcher, which is not installed: "
        "pip install 'mtmarl[slurm]'\n"), proc.stderr[-3000:]
    run_dir = tmp_path / "run"
    proc = core("-m", "mtmarl.train", "+algo=mt_oryx", "+tasks=lbf_5", "training=quick", "logger.neptune=true",
                f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines()[-1] == (
        "error: logger.neptune=true needs the package neptune, which is not installed: "
        "pip install 'mtmarl[neptune]' (or logger.neptune=false)"), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and not run_dir.exists()


@pytest.mark.slow
def test_core_install_runs_the_readme_quick_run(core, tmp_path):
    """README, Quick start: train MT Oryx on lbf_5 at the quick budget, then evaluate its checkpoint."""
    run = tmp_path / "quick"
    proc = core("-m", "mtmarl.train", "+algo=mt_oryx", "+tasks=lbf_5", "training=quick", f"hydra.run.dir={run}",
                "logger.progress=false")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (run / "results.json").is_file() and (run / "checkpoints" / "best").is_dir()
    proc = core("-m", "mtmarl.evaluate", f"checkpoint={run}", "eval.episodes=8", f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "eval" / "results.json").is_file()
