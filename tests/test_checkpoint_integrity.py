"""Checkpoints carry the sha256 of every file they hold, and reading one checks them first.

A flipped byte, a missing ``_METADATA`` or a missing data file is refused in one line naming the file
(before Orbax reads anything, so nothing restores silently as other numbers); a checkpoint saved
without ``checksums.json`` loads with a warning, and what Orbax then cannot read is one line too.
Tiny carries, no compilation: this file runs in seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mtmarl.errors import UserInputError
from mtmarl.training.checkpoint import CHECKSUMS, Checkpointer
from mtmarl.training.engine import Carry

KEY, STEP = np.array([1, 2], np.uint32), np.int32(4)


def _carry(value: float) -> Carry:
    return Carry({"w": np.full(3, value, np.float32), "b": np.arange(2, dtype=np.float32) * value}, KEY, STEP)


def _template() -> Carry:
    return _carry(0.0)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A checkpoints/ directory with latest/4 and best/4, each with its checksums.json."""
    root = tmp_path_factory.mktemp("ckpt") / "checkpoints"
    ckpt = Checkpointer(root)
    ckpt.save_latest(4, _carry(1.5), {"updates": 4})
    ckpt.save_best(4, _carry(2.5), {"updates": 4, "score": 0.5})
    ckpt.close()
    return root


def _copy(saved: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "checkpoints"))


def _data_files(step_dir: Path) -> list[Path]:
    return sorted((step_dir / "state" / "ocdbt.process_0" / "d").iterdir())


def test_a_saved_checkpoint_lists_every_file_and_restores(saved, tmp_path, capsys):
    root = _copy(saved, tmp_path)
    step_dir = root / "latest" / "4"
    listed = json.loads((step_dir / CHECKSUMS).read_text())["sha256"]
    on_disk = {p.relative_to(step_dir).as_posix() for p in step_dir.rglob("*") if p.is_file()} - {CHECKSUMS}
    assert set(listed) == on_disk and "state/_METADATA" in listed
    ckpt = Checkpointer(root)
    carry, meta = ckpt.restore(_template(), "latest")
    best, _ = ckpt.restore(_template(), "best")
    ckpt.close()
    assert meta["updates"] == 4 and carry.state["w"].tolist() == [1.5] * 3 and best.state["w"].tolist() == [2.5] * 3
    assert capsys.readouterr().err == ""  # verified: no warning


def _damage(step_dir: Path, how: str) -> Path:
    if how == "flip":
        path = max(_data_files(step_dir), key=lambda p: p.stat().st_size)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "metadata":
        path = step_dir / "state" / "_METADATA"
        path.unlink()
    else:
        path = _data_files(step_dir)[0]
        path.unlink()
    return path


@pytest.mark.parametrize("how,wants", [("flip", "is corrupt"), ("metadata", "is incomplete"),
                                       ("data", "is incomplete")])
@pytest.mark.parametrize("which", ["latest", "best"])
def test_a_damaged_checkpoint_is_refused_naming_the_file(saved, tmp_path, how, wants, which):
    root = _copy(saved, tmp_path)
    path = _damage(root / which / "4", how)
    before = _tree(root)
    ckpt = Checkpointer(root)
    for read in (lambda: ckpt.meta(which), lambda: ckpt.restore(_template(), which)):
        with pytest.raises(UserInputError) as err:
            read()
        text = str(err.value)
        assert wants in text and str(path) in text and "\n" not in text, text
    ckpt.close()
    assert _tree(root) == before  # nothing repaired, removed or rewritten


def test_resuming_saves_new_checksums_and_a_later_corruption_is_still_caught(saved, tmp_path):
    """The training loop's resume path: meta, restore, then saves of further updates."""
    root = _copy(saved, tmp_path)
    ckpt = Checkpointer(root)
    assert ckpt.meta("latest")["updates"] == 4
    carry, _ = ckpt.restore(_template(), "latest")
    ckpt.save_latest(8, carry._replace(step=np.int32(8)), {"updates": 8})
    ckpt.close()
    assert (root / "latest" / "8" / CHECKSUMS).is_file()
    _damage(root / "latest" / "8", "flip")
    ckpt = Checkpointer(root)
    with pytest.raises(UserInputError, match=r"latest/8 .* is corrupt"):
        ckpt.meta("latest")
    assert ckpt.meta("latest", 4)["updates"] == 4  # the older step is intact and still readable
    ckpt.close()


def test_a_checkpoint_without_checksums_loads_with_a_warning(saved, tmp_path, capsys):
    root = _copy(saved, tmp_path)
    (root / "latest" / "4" / CHECKSUMS).unlink()
    ckpt = Checkpointer(root)
    carry, _ = ckpt.restore(_template(), "latest")
    ckpt.close()
    assert carry.state["w"].tolist() == [1.5] * 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning:") and "unverified" in err[0]  # once, for meta + restore

    # What Orbax itself cannot read in such a checkpoint is one line, not its traceback.
    (root / "latest" / "4" / "state" / "_METADATA").unlink()
    ckpt = Checkpointer(root)
    with pytest.raises(UserInputError, match=r"latest/4 .* cannot be read \(FileNotFoundError") as err:
        ckpt.restore(_template(), "latest")
    ckpt.close()
    assert "\n" not in str(err.value)


def test_evaluate_of_a_corrupt_checkpoint_is_one_line_and_exit_2(saved, tmp_path, capsys):
    from hydra import compose, initialize_config_dir

    from mtmarl import evaluate
    from mtmarl.configs import CONFIG_DIR

    run = tmp_path / "run"
    root = Path(shutil.copytree(saved, run / "checkpoints"))
    path = _damage(root / "best" / "4", "flip")
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("evaluate", [f"checkpoint={run}"])
    with pytest.raises(SystemExit) as exit_:
        evaluate.run(cfg)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err and "is corrupt" in err and str(path) in err, err
