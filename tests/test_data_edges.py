"""Data-side input checks: vaults without mtmarl.json warn, hub checks --to before downloading,
numpy export round-trips, and bad hub / data command lines are one error line (entry points in-process)."""

import contextlib
import io
import json
import re
import shutil
import zipfile

import numpy as np
import pytest
from helpers import synthetic_vault

from mtmarl import hub
from mtmarl.hub import fetch as hub_fetch  # download() looks download_file up here
from mtmarl.data import __main__ as data_cli
from mtmarl.data.vault import META_FILE, NoMetadataWarning, flat_arrays, read_vault, vault_path

TASK = "connector:grid=5,agents=2,horizon=8"


@pytest.fixture(scope="module")
def vault(tmp_path_factory):
    root = tmp_path_factory.mktemp("edges") / "vault_data"
    return vault_path(root, synthetic_vault(root, TASK))


def _main(fn, argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = fn(argv)
    return rc, err.getvalue()


def test_export_round_trips_through_the_vault_reader(vault, tmp_path):
    out = tmp_path / "sub" / "data.npz"
    rc, err = _main(data_cli.main, ["export", str(vault), str(out)])
    assert rc == 0, err
    want = flat_arrays(read_vault(vault))
    with np.load(out) as got:
        assert sorted(got.files) == sorted(want) and "infos/legals" in got.files
        for key, arr in want.items():
            assert got[key].dtype == arr.dtype, key
            np.testing.assert_array_equal(got[key], arr, err_msg=key)
    assert [p.name for p in out.parent.iterdir()] == ["data.npz"]  # no temp file left behind


def test_export_refuses_to_overwrite_without_force_and_to_write_inside_the_vault(vault, tmp_path):
    def tree():
        return {p.relative_to(vault).as_posix(): p.read_bytes() for p in sorted(vault.rglob("*")) if p.is_file()}

    out = tmp_path / "data.npz"
    out.write_bytes(b"mine")
    rc, err = _main(data_cli.main, ["export", str(vault), str(out)])
    assert rc == 2 and err.strip() == f"error: export target {out} exists; pass --force to replace it"
    assert out.read_bytes() == b"mine"
    assert _main(data_cli.main, ["export", str(vault), str(out), "--force"])[0] == 0
    with np.load(out) as got:
        assert "observations" in got.files

    before = tree()
    (uid,) = [p.name for p in vault.iterdir() if p.is_dir()]
    for target_vault, target in ((vault, vault / "x.npz"), (vault / uid, vault / uid / "x.npz"),
                                 (vault / uid, vault / "x.npz"), (vault, vault / uid / "d" / "x.npz")):
        rc, err = _main(data_cli.main, ["export", str(target_vault), str(target), "--force"])
        assert rc == 2 and "\n" not in err.strip() and "is inside the vault" in err, err
    assert tree() == before  # nothing written into the vault


def test_vault_without_metadata_is_read_with_a_warning(vault, tmp_path):
    copy = tmp_path / vault.name
    shutil.copytree(vault, copy)
    (copy / META_FILE).unlink()
    with pytest.warns(NoMetadataWarning, match=f"has no {META_FILE}"):
        exp = read_vault(copy)
    np.testing.assert_array_equal(exp["actions"], read_vault(vault)["actions"])


def test_hub_download_checks_destination_before_downloading(tmp_path, monkeypatch):
    """An unwritable --to fails before any byte is fetched (the old code downloaded, then tracebacked)."""
    fetched = []
    monkeypatch.setattr(hub_fetch, "download_file", lambda *a, **k: fetched.append(a))
    (tmp_path / "afile").write_text("x")
    zip_path = tmp_path / "v.zip"
    zipfile.ZipFile(zip_path, "w").close()
    rc, err = _main(hub.main, ["download", zip_path.as_uri(), "--to", str(tmp_path / "afile" / "sub")])
    assert rc == 2 and "--to" in err and "afile" in err and "Traceback" not in err
    assert fetched == []


BAD = [
    ("hub", ["download", "nosuch://x.zip"], "nosuch://x.zip"),
    ("hub", ["download", "file:///nonexistent.zip", "--to", "{tmp}/afile/sub"], "--to"),
    ("hub", ["download", "file:///nonexistent.zip", "--to", "/proc/mtmarl-nope"], "--to /proc/mtmarl-nope"),
    ("hub", ["download", "ogmarl:core/x"], "ogmarl:core/x"),
    ("hub", ["download", "file:///x.zip", "--env", "../x"], "'../x'"),
    ("hub", ["download", "file:///x.zip", "--manifest", "/nonexistent.json"], "manifest /nonexistent.json"),
    ("hub", ["download", "file:///x.zip", "--sha256", "xyz", "--to", "{tmp}"], "sha256 'xyz'"),
    ("hub", ["download", "file:///nonexistent.zip", "--to", "{tmp}"], "/nonexistent.zip"),
    ("hub", ["pack", "/nonexistent.vlt", "{tmp}/o.zip"], "/nonexistent.vlt"),
    ("data", ["stats", "/nonexistent.vlt"], "/nonexistent.vlt"),
    ("data", ["stats", "nosuchset"], "nosuchset"),
    ("data", ["stats", "connector:grid=2,agents=10"], "grid=2"),
    ("data", ["stats", "lbf:grid=8,agents=2,food=2,coop=maybe"], "coop='maybe'"),
    ("data", ["stats", "{vault}", "--hist", "/proc/mtmarl-nope/x.png"], "--hist"),
    ("data", ["card", "nosuchset"], "nosuchset"),
    ("data", ["card", TASK, "--root", "{tmp}", "--out", "/proc/mtmarl-nope/card"], "--out /proc/mtmarl-nope/card"),
    ("data", ["export", "/nonexistent.vlt", "{tmp}/o.npz"], "/nonexistent.vlt"),
    ("data", ["export", "{vault}", "{tmp}/o.txt"], ".npz"),
    ("data", ["export", "{vault}", "{tmp}/o.npz", "--uid", "nope"], "'nope'"),
    ("data", ["export", "{vault}", "/proc/mtmarl-nope/o.npz"], "/proc/mtmarl-nope/o.npz"),
]


@pytest.mark.parametrize("cli,argv,want", BAD, ids=[" ".join(a) for _, a, _ in BAD])
def test_bad_hub_and_data_commands_are_one_error(cli, argv, want, vault, tmp_path):
    (tmp_path / "afile").write_text("x")
    argv = [a.format(tmp=tmp_path, vault=vault) for a in argv]
    rc, err = _main(hub.main if cli == "hub" else data_cli.main, argv)
    assert rc != 0 and err.startswith("error: ") and "Traceback" not in err, err
    assert want.format(tmp=tmp_path) in err, err


@pytest.mark.parametrize("damage", ["obs_dim", "no_task"])
def test_stats_validate_and_export_apply_one_rule_to_the_metadata(vault, tmp_path, damage):
    """Every reader checks the arrays (against the task's env with ``stats --validate``, else against the sizes
    ``mtmarl.json`` records) and then ``mtmarl.json``'s sizes against them, so a vault whose metadata disagrees
    with its arrays and task is refused by ``stats --validate`` as by ``export``; ``--validate`` on a vault whose
    metadata names no task is one error line."""
    copy = tmp_path / vault.name
    shutil.copytree(vault, copy)
    meta = json.loads((copy / META_FILE).read_text())
    if damage == "obs_dim":
        meta["obs_dim"] += 1
    else:
        del meta["task"]
    (copy / META_FILE).write_text(json.dumps(meta))
    rc, err = _main(data_cli.main, ["stats", str(copy), "--validate", "--json"])
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err, err
    assert (f"records obs_dim={meta['obs_dim']}" if damage == "obs_dim" else "records no task (key task.adhoc)") in err
    rc, err = _main(data_cli.main, ["export", str(copy), str(tmp_path / "o.npz")])
    if damage == "obs_dim":  # the arrays against the recorded sizes
        want = rf"key 'observations' has shape .*, expected \(1, \d+, 2, {meta['obs_dim']}\)"
        assert rc == 2 and re.search(want, err), err
    else:  # export needs no task: the arrays match the recorded sizes
        assert rc == 0, err
