"""pyproject.toml's dependency ranges against constraints.txt (the verified set), and the optional extras:
asking for Neptune or the SLURM launcher without them is one error line naming the package and the install command.

The extras' absence is simulated here by a ``None`` entry in ``sys.modules`` (what Python's import raises
ImportError for); ``tests/test_install.py`` checks an installed copy where they are really missing.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from mtmarl.errors import EXTRAS, UserInputError, require_extra

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def project_requirements() -> dict[str, list[Requirement]]:
    """"" (the core) and each extra -> its requirements (the extras' reference to mtmarl itself left out)."""
    out = {"": [Requirement(r) for r in PROJECT["dependencies"]]}
    for extra, reqs in PROJECT["optional-dependencies"].items():
        out[extra] = [Requirement(r) for r in reqs if canonicalize_name(Requirement(r).name) != "mtmarl"]
    return out


def constraints() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and name.strip() and version.strip(), f"constraints.txt: not a name==version pin: {line!r}"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_every_dependency_is_a_range_that_holds_its_pinned_version():
    pins = constraints()
    assert "mtmarl" not in pins
    assert set(EXTRAS) <= set(PROJECT["optional-dependencies"])
    for extra, reqs in project_requirements().items():
        for req in reqs:
            ops = {spec.operator for spec in req.specifier}
            assert ops == {">=", "<"}, f"{req} ({extra or 'core'}): state a range: >=verified,<next breaking"
            name = canonicalize_name(req.name)
            assert name in pins, f"{req.name} is not pinned in constraints.txt (make lock)"
            assert pins[name] in req.specifier, f"constraints.txt pins {req.name}=={pins[name]}, outside {req}"
            lower = next(Version(s.version) for s in req.specifier if s.operator == ">=")
            assert lower <= pins[name]


def test_dev_installs_the_optional_extras():
    """The test suite exercises Neptune and the SLURM launcher's config too."""
    (self_ref,) = [Requirement(r) for r in PROJECT["optional-dependencies"]["dev"] if r.startswith("mtmarl")]
    assert self_ref.extras == set(EXTRAS)


def test_constraints_pin_every_installed_dependency():
    """Walk the installed metadata from mtmarl[dev]'s requirements: every distribution reached is pinned, so
    installing with ``-c constraints.txt`` leaves nothing to the resolver."""
    pins = constraints()
    todo = [(req, "") for extra, reqs in project_requirements().items() for req in reqs]
    seen: set[str] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # not installed here (e.g. an extra left out): nothing to compare
        seen.add(name)
        assert name in pins, f"{req.name} (installed, needed by mtmarl) is not pinned in constraints.txt (make lock)"
        for child in dist.requires or ():
            for wanted in req.extras or {""}:
                todo.append((Requirement(child), wanted))
    assert {"jax", "flax", "jumanji", "numpy"} <= seen


@pytest.mark.parametrize("extra, module, package", [
    ("neptune", "neptune", "neptune"),
    ("slurm", "hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    ("slurm", "submitit", "submitit"),
])
def test_a_missing_extra_is_one_line_naming_package_and_command(monkeypatch, extra, module, package):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(UserInputError) as err:
        require_extra(extra, "the feature=on", otherwise="feature=off")
    assert str(err.value) == (f"the feature=on needs the package {package}, which is not installed: "
                              f"pip install 'mtmarl[{extra}]' (or feature=off)")


def test_an_installed_extra_passes():
    pytest.importorskip("neptune")
    require_extra("neptune", "logger.neptune=true")


def test_slurm_launcher_on_the_command_line_without_the_extra(monkeypatch, capsys):
    from mtmarl.runtime import _check_launcher_argument

    monkeypatch.setitem(sys.modules, "submitit", None)
    _check_launcher_argument(["+algo=mt_oryx", "hydra/launcher=basic"])  # Hydra's own launcher needs nothing
    with pytest.raises(SystemExit) as stop:
        _check_launcher_argument(["+algo=mt_oryx", "hydra/launcher=submitit_slurm"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == ("error: hydra/launcher=submitit_slurm needs the package submitit, which is "
                                       "not installed: pip install 'mtmarl[slurm]'\n")


def test_experiment_launcher_slurm_without_the_extra(monkeypatch, capsys):
    """``launcher=slurm`` of an experiment script stops before composing or running anything."""
    from mtmarl.experiments.driver import main
    from mtmarl.experiments.model_size import EXPERIMENT

    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_submitit_launcher", None)
    with pytest.raises(SystemExit) as stop:
        main(EXPERIMENT, ["quick", "launcher=slurm", "dry_run=true"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == ("error: launcher=slurm needs the package hydra-submitit-launcher, which is "
                                       "not installed: pip install 'mtmarl[slurm]'\n")
