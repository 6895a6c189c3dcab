"""``mtmarl.hub``: pack a vault, then download it from an HTTP server on 127.0.0.1.

The server (a ``ThreadingHTTPServer`` in a thread) serves byte strings by path,
honours ``Range``/``If-Range``, records each request's headers, and can drop the
connection half-way through a file or ignore Range requests (answering 200).
The vault is synthetic (right shapes for a Connector task, no env rollout) and
written without building the env, so this file needs no compilation.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import shutil
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mtmarl import hub
from mtmarl.data import vault as V
from mtmarl.errors import UserInputError


class Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    log: list[dict] = []
    drop_next: set[str] = set()  # paths whose next response is cut half-way
    ignore_range: bool = False
    pause: float = 0.0  # seconds to wait half-way through each body (overlapping downloads)

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        type(self).log.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and not self.ignore_range and self.headers.get("If-Range", etag) == etag:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        payload = body[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("ETag", etag)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if self.path in self.drop_next:
            self.drop_next.discard(self.path)
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if self.pause:
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            time.sleep(self.pause)
            payload = payload[len(payload) // 2:]
        self.wfile.write(payload)


@pytest.fixture
def server():
    Handler.files, Handler.log, Handler.drop_next, Handler.ignore_range, Handler.pause = {}, [], set(), False, 0.0
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def _make_vault(root: Path, env: str = "connector", task: str = "toy", steps: int = 300, seed: int = 0) -> Path:
    """A ``<root>/<env>/<task>.vlt`` with mtmarl.json (sha256s), written with Flashbax directly."""
    rng = np.random.default_rng(seed)
    tree = {"observations": rng.normal(size=(1, steps, 2, 16)).astype(np.float32),  # incompressible-ish
            "actions": rng.integers(0, 5, (1, steps, 2)).astype(np.uint8),
            "rewards": np.zeros((1, steps, 2), np.float32),
            "terminals": np.zeros((1, steps, 2), bool), "truncations": np.zeros((1, steps, 2), bool),
            "infos": {"legals": np.ones((1, steps, 2, 5), bool)}}
    tree["truncations"][:, 9::10] = True
    vlt = root / env / f"{task}.vlt"
    vlt.mkdir(parents=True)
    V._fbx_write(vlt, "default", tree, {})
    meta = {"format": 1, "task": {"adhoc": f"{env}:grid=5,agents=2", "name": task, "env": env},
            "agents": 2, "obs_dim": 16, "num_actions": 5, "state_dim": 0,
            "datasets": {"default": {"sha256": V._file_hashes(vlt, "default")}}}
    (vlt / V.META_FILE).write_text(json.dumps(meta))
    return vlt


@pytest.fixture
def packed(tmp_path):
    """(zip bytes, its sha256, the source vault)."""
    vlt = _make_vault(tmp_path / "src")
    zip_path = tmp_path / "toy.zip"
    sha = hub.pack(vlt, zip_path)
    assert sha == hashlib.sha256(zip_path.read_bytes()).hexdigest()
    return zip_path.read_bytes(), sha, vlt


def _tree_bytes(vlt: Path) -> dict[str, bytes]:
    return {p.relative_to(vlt).as_posix(): p.read_bytes() for p in sorted(vlt.rglob("*")) if p.is_file()}


def test_pack_is_reproducible_and_cli_prints_sha(tmp_path, packed, capsys):
    data, sha, vlt = packed
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "toy.vlt/mtmarl.json" in names and "toy.vlt/default/metadata.json" in names
    assert hub.main(["pack", str(vlt), str(tmp_path / "again.zip")]) == 0
    assert capsys.readouterr().out.split()[0] == sha
    assert hub.main(["pack", str(vlt / "default"), str(tmp_path / "x.zip")]) == 2


def test_download_extracts_and_skips_present(tmp_path, server, packed):
    data, sha, src = packed
    Handler.files["/data/toy.zip"] = data
    root = tmp_path / "vault_data"
    result = hub.download(f"{server}/data/toy.zip", root, sha256=sha, progress=False)
    assert result == [(root / "connector" / "toy.vlt", "installed")]
    assert _tree_bytes(root / "connector" / "toy.vlt") == _tree_bytes(src)
    out = V.read_vault(root / "connector" / "toy.vlt")  # checksums and shapes pass
    assert out["observations"].shape == (1, 300, 2, 16)
    assert not list((root / ".downloads").iterdir()) and not list(root.glob(".extract-*"))

    requests = len(Handler.log)
    assert hub.download(f"{server}/data/toy.zip", root, progress=False)[0][1].startswith("skipped")
    assert len(Handler.log) == requests  # nothing fetched
    assert hub.main(["download", f"{server}/data/toy.zip", "--to", str(root), "--quiet"]) == 0


def test_checksum_mismatch_keeps_existing_data(tmp_path, server, packed):
    data, sha, _ = packed
    root = tmp_path / "vault_data"
    good = _make_vault(root, seed=1)  # an existing, valid vault at the same place
    before = _tree_bytes(good)
    Handler.files["/toy.zip"] = data
    with pytest.raises(hub.DownloadError, match="checksum mismatch"):
        hub.download(f"{server}/toy.zip", root, sha256="0" * 64, force=True, progress=False)
    assert _tree_bytes(good) == before
    assert not list((root / ".downloads").iterdir())  # the bad download is discarded

    # A manifest names the expected sha256 too; a corrupt zip never replaces good data either.
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"toy.zip": "f" * 64}))
    assert hub.main(["download", f"{server}/toy.zip", "--to", str(root), "--force", "--quiet",
                     "--manifest", str(manifest)]) == 2
    Handler.files["/bad.zip"] = data[:-200]
    with pytest.raises(hub.DownloadError, match="not a valid zip"):
        hub.download(f"{server}/bad.zip", root, force=True, progress=False)
    assert _tree_bytes(good) == before


def test_interrupted_download_resumes(tmp_path, server, packed):
    data, sha, src = packed
    Handler.files["/toy.zip"] = data
    Handler.drop_next.add("/toy.zip")
    root = tmp_path / "vault_data"
    with pytest.raises(hub.DownloadError, match="interrupted.*resume"):
        hub.download(f"{server}/toy.zip", root, sha256=sha, progress=False)
    parts = list((root / ".downloads").glob("*.part"))
    assert len(parts) == 1
    have = parts[0].stat().st_size
    assert 0 < have < len(data)
    assert not (root / "connector").exists()

    result = hub.download(f"{server}/toy.zip", root, sha256=sha, progress=False)
    assert result[0][1] == "installed"
    assert "range" not in Handler.log[0]
    assert Handler.log[1]["range"] == f"bytes={have}-" and "if-range" in Handler.log[1]
    assert not parts[0].exists()
    assert _tree_bytes(root / "connector" / "toy.vlt") == _tree_bytes(src)


def test_resume_within_one_call_and_server_ignoring_range(tmp_path, server, packed):
    data, sha, _ = packed
    Handler.files["/toy.zip"] = data
    Handler.drop_next.add("/toy.zip")
    root = tmp_path / "a"
    assert hub.download(f"{server}/toy.zip", root, sha256=sha, retries=1, progress=False)[0][1] == "installed"
    assert [("range" in r) for r in Handler.log] == [False, True]

    # A server that answers 200 to a Range request: the partial file is restarted, not appended to.
    Handler.log.clear()
    Handler.drop_next.add("/toy.zip")
    Handler.ignore_range = True
    root = tmp_path / "b"
    with pytest.raises(hub.DownloadError):
        hub.download(f"{server}/toy.zip", root, sha256=sha, progress=False)
    assert hub.download(f"{server}/toy.zip", root, sha256=sha, progress=False)[0][1] == "installed"
    assert "range" in Handler.log[1]


def test_sources_and_bad_input(tmp_path, server, packed, monkeypatch):
    data, sha, _ = packed
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    src = hub.resolve_source("ogmarl:alberdice/rware/tiny-2ag")
    assert src.url == ("https://huggingface.co/datasets/InstaDeepAI/og-marl/resolve/main/"
                       "prior_work/alberdice/rware/tiny-2ag.zip")
    assert (src.env, src.scenario) == ("rware", "tiny-2ag")
    assert hub.resolve_source("ogmarl:core/smac_v1/3m").url.endswith("/resolve/main/core/smac_v1/3m.zip")

    # hf:// and ogmarl: honour HF_ENDPOINT: serve the zip where the Hub URL scheme puts it.
    monkeypatch.setenv("HF_ENDPOINT", server)
    Handler.files["/datasets/someone/vaults/resolve/main/sets/toy.zip"] = data
    root = tmp_path / "vault_data"
    res = hub.download("hf://someone/vaults/sets/toy.zip", root, sha256=sha, progress=False)
    assert res == [(root / "connector" / "toy.vlt", "installed")]
    Handler.files["/datasets/InstaDeepAI/og-marl/resolve/main/prior_work/alberdice/rware/toy.zip"] = data
    res = hub.download("ogmarl:alberdice/rware/toy", root, progress=False)
    assert res == [(root / "rware" / "toy.vlt", "installed")]  # the og-marl name sets the env

    # file:// URLs work too.
    zip_path = tmp_path / "toy.zip"
    zip_path.write_bytes(data)
    res = hub.download(zip_path.as_uri(), tmp_path / "c", sha256=sha, progress=False)
    assert res[0][1] == "installed"

    for bad in ("ftp://example.com/x.zip", "just-a-name", "ogmarl:rware/tiny", "hf://only/two"):
        with pytest.raises(UserInputError):
            hub.download(bad, root, progress=False)
    with pytest.raises(UserInputError, match="HTTP 404"):
        hub.download(f"{server}/missing.zip", root, progress=False)
    with pytest.raises(UserInputError, match="cannot read"):
        hub.download((tmp_path / "nope.zip").as_uri(), root, progress=False)
    with pytest.raises(UserInputError, match="64 hex"):
        hub.download(f"{server}/toy.zip", root, sha256="abc", progress=False)
    assert hub.main(["download", "gopher://x", "--to", str(root)]) == 2


def test_training_fetches_only_missing_vaults_from_data_hub(tmp_path, server):
    from mtmarl.tasks import TaskSet, TaskSpec
    from mtmarl.training.data import check_vaults, fetch_missing

    names = ("toy", "toy2")
    for i, name in enumerate(names):
        vlt = _make_vault(tmp_path / "src", task=name, seed=i)
        hub.pack(vlt, tmp_path / f"{name}.zip")
        Handler.files[f"/vaults/connector/{name}.zip"] = (tmp_path / f"{name}.zip").read_bytes()
    specs = tuple(TaskSpec.create("connector", {"grid": 5, "agents": 2}, name) for name in names)
    task_set = TaskSet("hubset", "connector", specs, ())
    root, template = tmp_path / "vault_data", f"{server}/vaults/{{env}}/{{task}}.zip"

    installed = fetch_missing(task_set, root, template)
    assert sorted(p.name for p, status in installed if status == "installed") == ["toy.vlt", "toy2.vlt"]
    check_vaults(task_set, root)  # nothing missing now
    assert _tree_bytes(root / "connector" / "toy2.vlt") == _tree_bytes(tmp_path / "src" / "connector" / "toy2.vlt")
    requests = len(Handler.log)
    assert fetch_missing(task_set, root, template) == [] and len(Handler.log) == requests  # all present

    shutil.rmtree(root / "connector" / "toy2.vlt")
    fetch_missing(task_set, root, template)
    assert [r["path"] for r in Handler.log[requests:]] == ["/vaults/connector/toy2.zip"]  # only the missing one

    # One archive for the whole set (no placeholders), a bad placeholder, and a source that lacks a task.
    one = TaskSet("one", "connector", specs[:1], ())
    Handler.files["/all.zip"] = (tmp_path / "toy.zip").read_bytes()
    assert fetch_missing(one, tmp_path / "other", f"{server}/all.zip")[0][1] == "installed"
    with pytest.raises(UserInputError, match="only {env} and {task}"):
        fetch_missing(task_set, tmp_path / "empty", f"{server}/{{scenario}}.zip")
    with pytest.raises(UserInputError):
        fetch_missing(task_set, tmp_path / "empty", f"{server}/nowhere/{{task}}.zip")
    assert not (tmp_path / "empty" / "connector").exists()
    with pytest.raises(UserInputError, match=r"(?s)1 of 2 .*toy2.vlt\ndata.hub=\S*/all.zip did not provide them"):
        fetch_missing(task_set, tmp_path / "partial", f"{server}/all.zip")  # the archive holds toy only


def test_a_bundled_smax_vault_with_two_datasets_round_trips_through_the_hub(tmp_path, server):
    """The HyGen paper's expert + medium datasets live in one <task>.vlt: packed, served and installed, both
    uids read back with the same arrays."""
    from mtmarl import tasks
    from mtmarl.collect import ROOT

    spec = tasks.load("smax_marine_hard").train[0]  # 3m
    src = V.vault_path(ROOT / "vault_data", spec)
    sha = hub.pack(src, tmp_path / "3m.zip")
    Handler.files["/smax/3m.zip"] = (tmp_path / "3m.zip").read_bytes()
    root = tmp_path / "vault_data"
    assert hub.download(f"{server}/smax/3m.zip", root, sha256=sha, progress=False)[0][1] == "installed"
    got = V.vault_path(root, spec)
    assert sorted(V.list_uids(got)) == ["expert", "medium"] and _tree_bytes(got) == _tree_bytes(src)
    for uid in ("expert", "medium"):
        a, b = V.read_vault(src, spec, uid=uid), V.read_vault(got, spec, uid=uid)
        np.testing.assert_array_equal(a["actions"], b["actions"])
        np.testing.assert_array_equal(a["rewards"], b["rewards"])


# ---------------------------------------------------------------- confinement, pack refusals, races, full disk

def _zip_of(tmp_path: Path, name: str, members: dict[str, bytes]) -> bytes:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return path.read_bytes()


def _one_line_refusal(capsys, argv: list[str], wants: str) -> str:
    assert hub.main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and "\n" not in err and err.startswith("error: ") and wants in err, err
    return err


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.mark.parametrize("env", ["../../escaped", "..", "a/b", "/abs", ".hidden"])
def test_an_archives_env_name_never_installs_outside_to(tmp_path, server, capsys, env):
    """mtmarl.json's task.env is the archive's say; a name that is not one plain component is refused."""
    vlt = _make_vault(tmp_path / "src")
    meta = json.loads((vlt / V.META_FILE).read_text())
    meta["task"]["env"] = env
    (vlt / V.META_FILE).write_text(json.dumps(meta))
    hub.pack(vlt, tmp_path / "evil.zip")
    Handler.files["/evil.zip"] = (tmp_path / "evil.zip").read_bytes()
    box = tmp_path / "box"
    to = box / "a" / "b" / "vault_data"
    outside = lambda: {f for f in _files(tmp_path) if not f.startswith("box")}  # noqa: E731
    outside_before = outside()
    _one_line_refusal(capsys, ["download", f"{server}/evil.zip", "--to", str(to), "--quiet"],
                      "not a plain directory")
    assert outside() == outside_before  # nothing escaped --to
    assert _files(to) == {".downloads"} and not list((to / ".downloads").iterdir())  # nor installed, nor left
    # --env, when given, is the env directory (checked itself), and the archive's name is not consulted.
    assert hub.download(f"{server}/evil.zip", to, env="connector", progress=False)[0] == (
        to / "connector" / "toy.vlt", "installed")


@pytest.mark.parametrize("member", ["../escaped.vlt/x", "toy.vlt/../../escaped", "/abs/toy.vlt/x", "C:/toy.vlt/x",
                                    "toy.vlt\\..\\..\\x"])
def test_zip_member_names_outside_the_staging_dir_are_refused(tmp_path, server, capsys, member):
    Handler.files["/m.zip"] = _zip_of(tmp_path, "m.zip", {member: b"x"})
    to = tmp_path / "box" / "vault_data"
    _one_line_refusal(capsys, ["download", f"{server}/m.zip", "--to", str(to), "--quiet"], "unsafe path")
    assert _files(tmp_path / "box") == {"vault_data", "vault_data/.downloads"}
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "escaped.vlt").exists()


@pytest.mark.parametrize("bad", ["..", ".", ".hidden", "a/b", "x\n"])
def test_env_and_source_names_must_be_plain_components(tmp_path, bad):
    with pytest.raises(UserInputError, match="plain directory name"):
        hub.download("http://127.0.0.1:9/toy.zip", tmp_path / "v", env=bad, progress=False)
    with pytest.raises(UserInputError, match="must look like ogmarl"):
        hub.resolve_source(f"ogmarl:core/{bad}/3m")
    assert not (tmp_path / "v").exists()


def test_pack_refuses_an_output_inside_its_vault_or_onto_a_directory(tmp_path, capsys):
    vlt = _make_vault(tmp_path / "src")
    before = _tree_bytes(vlt)
    for out in (vlt / V.META_FILE, vlt / "default" / "x.zip", vlt):
        _one_line_refusal(capsys, ["pack", str(vlt), str(out)], "inside the vault")
    (tmp_path / "outdir").mkdir()
    _one_line_refusal(capsys, ["pack", str(vlt), str(tmp_path / "outdir")], "existing directory")
    assert _tree_bytes(vlt) == before
    assert not [p for p in tmp_path.rglob("*") if ".part" in p.name]
    assert not list((tmp_path / "outdir").iterdir())


def test_two_downloads_of_one_archive_at_once_both_succeed(tmp_path, server, packed):
    """Each download writes a file of its own; the slower install finds the vault in place and keeps it."""
    data, sha, src = packed
    Handler.files["/toy.zip"] = data
    Handler.pause = 0.3  # both transfers are half-way at the same time
    root = tmp_path / "vault_data"
    results, errors = [], []

    def fetch():
        try:
            results.append(hub.download(f"{server}/toy.zip", root, sha256=sha, progress=False))
        except Exception as err:  # noqa: BLE001  (reported by the assertion below)
            errors.append(err)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(results) == 2
    assert len([r for r in Handler.log if r["path"] == "/toy.zip"]) == 2  # they did overlap: two transfers
    assert all(r[0][0] == root / "connector" / "toy.vlt" for r in results)
    assert _tree_bytes(root / "connector" / "toy.vlt") == _tree_bytes(src)
    assert not list((root / ".downloads").iterdir()) and not list(root.glob(".extract-*"))


def test_a_full_disk_is_one_line_and_leaves_nothing_that_blocks_a_retry(tmp_path, server, packed, monkeypatch,
                                                                        capsys):
    import errno

    from mtmarl.hub import transfer

    data, sha, src = packed
    Handler.files["/toy.zip"] = data
    root = tmp_path / "vault_data"

    class Full(io.FileIO):
        def write(self, block):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transfer, "open", lambda path, mode: Full(path, mode.replace("b", "")), raising=False)
    _one_line_refusal(capsys, ["download", f"{server}/toy.zip", "--to", str(root), "--quiet", "--retries", "2"],
                      "no space left")
    assert not list((root / ".downloads").iterdir())  # the partial download is removed, not kept to block
    monkeypatch.undo()

    # Full while extracting: the staging directory and the zip are removed, nothing installed.
    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", no_space)
    _one_line_refusal(capsys, ["download", f"{server}/toy.zip", "--to", str(root), "--quiet"], "cannot extract")
    assert _files(root) == {".downloads"} and not list((root / ".downloads").iterdir())
    monkeypatch.undo()

    assert hub.download(f"{server}/toy.zip", root, sha256=sha, progress=False)[0][1] == "installed"  # the retry
    assert _tree_bytes(root / "connector" / "toy.vlt") == _tree_bytes(src)


def test_the_cli_never_writes_into_the_bundled_data_unless_asked(tmp_path, server, packed, capsys, monkeypatch):
    """The default --to is outputs/vault_data under the working directory; --to inside the bundled vault_data/
    is refused before anything is fetched (with --force it replaced tracked vaults) unless --write-bundled."""
    from mtmarl.hub.fetch import DEFAULT_ROOT

    Handler.files["/toy.zip"] = packed[0]
    before = _tree_bytes(DEFAULT_ROOT / "lbf")
    for to in ([], ["--to", str(DEFAULT_ROOT)], ["--to", str(DEFAULT_ROOT / "lbf")]):
        monkeypatch.chdir(tmp_path)
        argv = ["download", f"{server}/toy.zip", *to, "--force", "--quiet"]
        if to:
            _one_line_refusal(capsys, argv, "inside the bundled data")
        else:
            assert hub.main(argv) == 0
            assert any((tmp_path / "outputs" / "vault_data").rglob("*.vlt"))
            capsys.readouterr()
    assert _tree_bytes(DEFAULT_ROOT / "lbf") == before


def test_an_adhoc_tasks_vault_round_trips_through_pack_and_download(tmp_path, server):
    """mtmarl names an ad-hoc task's vault by its parameters (``grid=6,agents=2,food=1.vlt``): packed, served
    and installed under the same name."""
    from helpers import synthetic_vault

    spec = synthetic_vault(tmp_path / "src", "lbf:grid=6,agents=2,food=1", episodes=3)
    src = V.vault_path(tmp_path / "src", spec)
    sha = hub.pack(src, tmp_path / "adhoc.zip")
    Handler.files["/adhoc.zip"] = (tmp_path / "adhoc.zip").read_bytes()
    (path, status), = hub.download(f"{server}/adhoc.zip", tmp_path / "to", sha256=sha, progress=False)
    assert status == "installed" and path == V.vault_path(tmp_path / "to", spec)
    assert _tree_bytes(path) == _tree_bytes(src)
