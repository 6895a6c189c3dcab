"""Where ``python -m mtmarl.collect`` writes: never the bundled ``vault_data/`` unless asked.

Composed in-process as Hydra would; the refusals come before any env is built or program compiled.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mtmarl import collect
from mtmarl.configs import CONFIG_DIR

TASK = "lbf:grid=6,agents=2,food=1"


def _compose(args: list[str]):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose("collect", [f"task='{TASK}'", *args])


def _fingerprint(root: Path) -> dict[str, str]:
    """Name and mtime of every file, plus the bytes' sha256 of the references (the file a collection merges into)."""
    out = {p.relative_to(root).as_posix(): str(p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}
    out["references.json"] = hashlib.sha256((root / "references.json").read_bytes()).hexdigest()
    return out


def test_the_default_root_is_outputs_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(collect.ROOT)  # the repository root, where vault_data/ is the bundled data
    root, refs, logs = collect.output_paths(_compose([]))
    assert root == collect.ROOT / "outputs" / "vault_data"
    assert (refs, logs) == (root / "references.json", root / "logs")
    monkeypatch.chdir(tmp_path)
    assert collect.output_paths(_compose([]))[0] == tmp_path / "outputs" / "vault_data"


@pytest.mark.parametrize("args,key", [
    (["collect.root=vault_data"], "collect.root"),
    (["collect.root={tmp}", "collect.references={bundled}/references.json"], "collect.references"),
    (["collect.root={tmp}", "collect.log_dir={bundled}/logs"], "collect.log_dir"),
    (["collect.root={bundled}/lbf"], "collect.root"),
])
def test_writing_into_the_bundled_data_needs_write_bundled(args, key, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(collect.ROOT)
    bundled = collect.BUNDLED
    args = [a.format(tmp=tmp_path, bundled=bundled) for a in args]
    before = _fingerprint(bundled)
    with pytest.raises(SystemExit) as exit_:
        collect.run(_compose([*args, "collect.budget=2048"]))
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err and f"error: {key}=" in err, err
    assert "collect.write_bundled=true" in err and str(bundled.resolve()) in err
    assert _fingerprint(bundled) == before and not list(tmp_path.iterdir())  # nothing written anywhere
    # Asked explicitly, the same paths are allowed (make demo-data rebuilds the bundled data this way).
    root, _, _ = collect.output_paths(_compose([*args, "collect.write_bundled=true"]))
    assert root.is_absolute()
