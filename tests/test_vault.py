"""Vaults: write/read round trip (with storage compaction), og-marl layout, corruption,
shape validation, checksums, episode returns, ``python -m mtmarl.data stats`` and the data card.

One small Connector task (2 agents, 5x5 grid, horizon 8) is rolled out once with
random legal actions in a jitted scan; every test reuses that data.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtmarl.data import vault as V
from mtmarl.data.__main__ import main as data_main
from mtmarl.errors import UserInputError
from mtmarl.tasks import TaskSpec

TASK = "connector:grid=5,agents=2,horizon=8"
STEPS = 60


@pytest.fixture(scope="module")
def spec():
    return TaskSpec.parse(TASK)


@pytest.fixture(scope="module")
def experience(spec):
    """(1, T, ...) og-marl-layout arrays from a random-policy rollout with auto-reset."""
    env = spec.build()

    def rollout(key):
        def step(carry, k):
            st, ts = carry
            k_act, k_reset = jax.random.split(k)
            logits = jnp.where(ts.observation.action_mask, 0.0, -1e9)
            act = jax.random.categorical(k_act, logits).astype(jnp.int32)
            st2, ts2 = env.step(st, act)
            st3, ts3 = env.reset(k_reset)
            pick = lambda a, b: jnp.where(ts2.done, a, b)  # noqa: E731
            carry = (jax.tree.map(pick, st3, st2), jax.tree.map(pick, ts3, ts2))
            return carry, dict(obs=ts.observation.agents_view, act=act, legal=ts.observation.action_mask,
                               state=ts.state, rew=ts2.reward, term=ts2.terminal, trunc=ts2.truncated)

        return jax.lax.scan(step, env.reset(key), jax.random.split(key, STEPS))[1]

    out = jax.tree.map(np.asarray, jax.jit(rollout)(jax.random.PRNGKey(3)))
    n = env.num_agents
    per_agent = lambda x: np.repeat(x[None, :, None], n, axis=2).astype(np.float32)  # noqa: E731
    exp = {"observations": out["obs"][None].astype(np.float32), "actions": out["act"][None].astype(np.int32),
           "rewards": per_agent(out["rew"]), "terminals": per_agent(out["term"]),
           "truncations": per_agent(out["trunc"]),
           "infos": {"legals": out["legal"][None].astype(bool), "state": out["state"][None].astype(np.float32)}}
    assert exp["terminals"].sum() + exp["truncations"].sum() > 0, "rollout should end some episodes"
    return exp


def _returns_by_hand(exp) -> list[float]:
    """Team returns computed step by step (independent of ``episode_returns``)."""
    out, acc = [], 0.0
    for t in range(exp["rewards"].shape[1]):
        acc += float(exp["rewards"][0, t, 0])
        if exp["terminals"][0, t, 0] or exp["truncations"][0, t, 0]:
            out.append(acc)
            acc = 0.0
    return out


@pytest.fixture
def written(tmp_path, spec, experience):
    return V.write_vault(tmp_path / "vault_data", spec, experience, {"policy": "random", "seed": 3})


def _assert_equal(a, b):
    for key in ("observations", "actions", "rewards", "terminals", "truncations"):
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for key in ("legals", "state"):
        assert a["infos"][key].dtype == b["infos"][key].dtype, key
        np.testing.assert_array_equal(a["infos"][key], b["infos"][key], err_msg=key)


def test_round_trip_is_exact_and_compact(written, spec, experience):
    vlt = written.parent
    assert written == Path(vlt) / V.DEFAULT_UID
    assert vlt.name == "grid=5,agents=2,horizon=8.vlt" and vlt.parent.name == "connector"
    _assert_equal(V.read_vault(vlt, spec), experience)
    _assert_equal(V.read_vault(written), experience)  # uid directory, no spec: checked against metadata

    fbx = json.loads((written / "metadata.json").read_text())
    dtypes = fbx["structure_dtype"]
    assert dtypes["observations"] == "uint8" and dtypes["infos"]["state"] == "uint8"
    assert dtypes["actions"] == "uint8" and dtypes["terminals"] == "bool"
    assert fbx["structure_shape"]["observations"] == str((1, STEPS, 2, 128))

    meta = json.loads((vlt / V.META_FILE).read_text())
    assert meta["task"]["adhoc"] == TASK and meta["task"]["env"] == "connector"
    assert (meta["agents"], meta["obs_dim"], meta["num_actions"], meta["state_dim"]) == (2, 128, 5, 75)
    assert meta["versions"]["flashbax"] == "0.1.3" and meta["versions"]["jax"]
    entry = meta["datasets"][V.DEFAULT_UID]
    assert entry["collector"] == {"policy": "random", "seed": 3}
    assert entry["encoding"]["observations"]["kind"] == "codebook"
    hand = _returns_by_hand(experience)
    assert entry["returns"]["episodes"] == len(hand)
    assert entry["returns"]["mean"] == pytest.approx(np.mean(hand))
    files = {p.relative_to(vlt).as_posix() for p in written.rglob("*") if p.is_file()}
    assert set(entry["sha256"]) == files


def test_encodings_are_lossless():
    rng = np.random.default_rng(0)
    cases = {"cast": rng.integers(0, 7, (1, 200, 2, 3)).astype(np.float32),
             "codebook": rng.choice(np.float32([-0.4, 0.1, 1 / 3]), (1, 200, 2, 3)),
             "float16": rng.integers(-300, 300, (1, 200, 2, 3)).astype(np.float32) / 4,
             "float32": rng.normal(size=(1, 200, 2, 3)).astype(np.float32)}
    for name, arr in cases.items():
        stored, enc = V._encode_real(arr)
        assert name in (enc["kind"], enc["stored"])
        np.testing.assert_array_equal(V._decode(stored, enc, "observations"), arr)


def test_episode_returns(experience):
    np.testing.assert_allclose(V.episode_returns(experience), _returns_by_hand(experience), rtol=1e-6)
    toy = {"rewards": np.array([[[1, 1], [2, 2], [3, 3], [4, 4], [5, 5]]], np.float32),
           "terminals": np.array([[[0, 0], [1, 1], [0, 0], [0, 0], [0, 0]]], np.float32),
           "truncations": np.array([[[0, 0], [0, 0], [0, 0], [1, 1], [0, 0]]], np.float32)}
    np.testing.assert_array_equal(V.episode_returns(toy), [3.0, 7.0])  # the last step is unfinished


def _write_ogmarl(root: Path, exp: dict, uid: str = "Good") -> Path:
    """An og-marl-style vault written directly with Flashbax: float32 data, actions (1, T, N, 1)."""
    from flashbax.buffers.trajectory_buffer import TrajectoryBufferState
    from flashbax.vault import Vault

    tree = {"observations": exp["observations"], "actions": exp["actions"][..., None].astype(np.int32),
            "rewards": exp["rewards"], "terminals": exp["terminals"], "truncations": exp["truncations"],
            "infos": {"legals": exp["infos"]["legals"].astype(np.float32), "state": exp["infos"]["state"]}}
    steps = tree["observations"].shape[1]
    state = TrajectoryBufferState(experience=tree, current_index=jnp.asarray(steps), is_full=jnp.asarray(False))
    with contextlib.redirect_stdout(io.StringIO()):
        vault = Vault("tiny.vlt", experience_structure=tree, rel_dir=str(root / "rware"), vault_uid=uid)
        assert vault.write(state) == steps
    return root / "rware" / "tiny.vlt"


def test_reads_ogmarl_vault(tmp_path, spec, experience):
    vlt = _write_ogmarl(tmp_path, experience)
    out = V.read_vault(vlt, spec)
    _assert_equal(out, experience)
    assert out["actions"].shape == (1, STEPS, 2)
    _write_ogmarl(tmp_path, experience, uid="Poor")
    with pytest.raises(UserInputError, match="several datasets.*Good, Poor"):
        V.read_vault(vlt)
    _assert_equal(V.read_vault(vlt, uid="Poor"), experience)


@pytest.mark.parametrize("how", ["garble", "truncate"])
def test_corrupt_chunk_names_the_file(written, how):
    vlt = written.parent
    chunk = max((p for p in (written / "d").iterdir()), key=lambda p: p.stat().st_size)
    data = chunk.read_bytes()
    garbled = data[:20] + bytes(b ^ 0xFF for b in data[20:40]) + data[40:]
    chunk.write_bytes(data[: len(data) // 2] if how == "truncate" else garbled)
    with pytest.raises(UserInputError, match=f"{chunk.name}.*corrupt"):
        V.read_vault(vlt)
    # Without checksums (og-marl vaults have none) tensorstore's failure still names the key.
    (vlt / V.META_FILE).unlink()
    with pytest.raises(UserInputError, match=r"cannot read key '[a-z.]+'.*corrupt or truncated"):
        V.read_vault(vlt, verify=False)


def test_missing_key_and_bad_metadata(written):
    fbx = written / "metadata.json"
    meta = json.loads(fbx.read_text())
    meta["structure_shape"]["extra"] = "(1, 3, 2)"
    meta["structure_dtype"]["extra"] = "float32"
    fbx.write_text(json.dumps(meta))
    with pytest.raises(UserInputError, match="cannot read key 'extra'"):
        V.read_vault(written, verify=False)
    fbx.write_text("{not json")
    with pytest.raises(UserInputError, match="metadata.json"):
        V.read_vault(written, verify=False)
    with pytest.raises(UserInputError, match="does not exist"):
        V.read_vault(written.parent / "nope")


def test_sha256_mismatch(written):
    vlt = written.parent
    meta = json.loads((vlt / V.META_FILE).read_text())
    rel = sorted(meta["datasets"][V.DEFAULT_UID]["sha256"])[0]
    meta["datasets"][V.DEFAULT_UID]["sha256"][rel] = "0" * 64
    (vlt / V.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(UserInputError, match=f"{Path(rel).name} is corrupt"):
        V.read_vault(vlt)
    V.read_vault(vlt, verify=False)  # the data itself is fine


def test_wrong_shapes_name_key_and_shapes(tmp_path, spec, experience):
    three_agents = TaskSpec.parse("connector:grid=5,agents=3,horizon=8")
    vlt = V.write_vault(tmp_path, spec, experience).parent
    with pytest.raises(UserInputError, match=r"key 'observations' has shape \(1, 60, 2, 128\), "
                                             r"expected \(1, 60, 3, 128\)"):
        V.read_vault(vlt, three_agents)

    bad = dict(experience, observations=experience["observations"][..., :100])
    with pytest.raises(UserInputError, match=r"key 'observations'.*\(1, 60, 2, 100\).*expected \(1, 60, 2, 128\)"):
        V.write_vault(tmp_path / "w", spec, bad)
    bad = dict(experience, infos={"legals": experience["infos"]["legals"][..., :4],
                                  "state": experience["infos"]["state"]})
    with pytest.raises(UserInputError, match=r"key 'infos.legals'.*expected \(1, 60, 2, 5\)"):
        V.write_vault(tmp_path / "w", spec, bad)
    with pytest.raises(UserInputError, match="key 'infos.state' is missing"):
        V.write_vault(tmp_path / "w", spec, dict(experience, infos={"legals": experience["infos"]["legals"]}))
    with pytest.raises(UserInputError, match="already exists"):
        V.write_vault(tmp_path, spec, experience)

    # An og-marl vault with the wrong obs size, read against the task.
    small = dict(experience, observations=experience["observations"][..., :10])
    og = _write_ogmarl(tmp_path / "og", small)
    with pytest.raises(UserInputError, match=r"tiny.vlt/Good: key 'observations' has shape \(1, 60, 2, 10\), "
                                             r"expected \(1, 60, 2, 128\)"):
        V.read_vault(og, spec)


def test_stats_cli(tmp_path, written, experience, spec, capsys):
    hand = np.asarray(_returns_by_hand(experience))
    assert data_main(["stats", str(written.parent), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)["vaults"][0]
    assert card["transitions"] == STEPS and card["episodes"] == len(hand)
    assert card["mean"] == pytest.approx(hand.mean()) and card["std"] == pytest.approx(hand.std())
    assert (card["min"], card["max"]) == (pytest.approx(hand.min()), pytest.approx(hand.max()))
    assert card["q50"] == pytest.approx(np.median(hand))

    hist = tmp_path / "hist.png"
    assert data_main(["stats", str(written.parent), "--hist", str(hist)]) == 0
    out = capsys.readouterr().out
    assert hist.stat().st_size > 1000
    row = next(line for line in out.splitlines() if TASK in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[2:4] == [str(STEPS), str(len(hand))]
    assert float(cells[4]) == pytest.approx(hand.mean(), rel=1e-3, abs=1e-3)

    # A one-task "set" by its ad-hoc name is looked up under --root; a named set reports missing vaults.
    root = written.parents[2]
    assert data_main(["stats", TASK, "--root", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["vaults"][0]["episodes"] == len(hand)
    assert data_main(["stats", "connector_10", "--root", str(root)]) == 1
    captured = capsys.readouterr()
    assert "missing vaults (10)" in captured.out and "6x6-3a" in captured.out
    assert "no vault found" in captured.err
    assert data_main(["stats", str(tmp_path / "nothing.vlt")]) == 2


def test_card_joins_references_and_vault_metadata(tmp_path, written, experience, capsys):
    hand = _returns_by_hand(experience)
    root = written.parents[2]
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({TASK: {"return": 2.0, "initial_return": 0.5, "env_steps": 1000,
                                       "train_seconds": 4.0}}))
    assert data_main(["card", TASK, "--root", str(root), "--references", str(refs), "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [c.strip() for c in lines[0].strip("| ").split("|")]
    row = dict(zip(header, (c.strip() for c in lines[2].strip("| ").split("|"))))
    assert row["split"] == "train" and row["initial return"] == "0.500" and row["final return"] == "2.000"
    assert row["steps/s"] == "250" and row["transitions"] == str(STEPS) and row["episodes"] == str(len(hand))
    assert float(row["data mean return"]) == pytest.approx(np.mean(hand), abs=1e-3)
    # on the untrained (0.5) .. final (2.0) scale of the references
    assert float(row["data mean normalised"]) == pytest.approx((np.mean(hand) - 0.5) / 1.5, abs=0.006)
    on_disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(written.parent) for f in fs)
    assert float(row["vault MiB"]) == pytest.approx(on_disk / 2**20, abs=0.051)
    assert lines[-1].startswith("1 tasks:") and "no reference" not in lines[-1]

    # A set with neither references nor vaults under the root: listed as missing, exit 1.
    assert data_main(["card", "connector_10", "--root", str(root), "--references", str(refs)]) == 1
    captured = capsys.readouterr()
    assert "no vault: 6x6-3a" in captured.out.replace("\n", " ") and "no reference or vault" in captured.err


def test_data_card_writes_table_and_figures(tmp_path, written):
    root = written.parents[2]
    spec = TaskSpec.parse(TASK)
    (root / "references.json").write_text(json.dumps({TASK: {"return": 1.5, "initial_return": -0.5}}))
    log = root / "logs" / spec.env / f"{V.task_dirname(spec)}.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(json.dumps({"env_steps": 64 * i, "return": 0.5 * i}) + "\n" for i in range(1, 4)))
    out = tmp_path / "card"
    assert data_main(["card", TASK, "--root", str(root), "--out", str(out)]) == 0
    table = (out / f"{TASK}.md").read_text().splitlines()
    # one dataset per vault: the task table and its totals only
    assert len(table) == 5 and f"| {STEPS} |" in table[2] and "| 1.500 |" in table[2]
    assert table[4].startswith("1 tasks:")
    for fig in ("returns", "curves"):
        assert (out / f"{TASK}_{fig}.png").stat().st_size > 5000


def test_a_full_disk_while_writing_is_one_line_leaves_no_temporary_and_keeps_the_old_vault(tmp_path, spec,
                                                                                          experience, monkeypatch):
    from mtmarl.data.vault import write as W

    root = tmp_path / "vault_data"
    old = V.write_vault(root, spec, experience, {"policy": "random"})
    before = {p: p.read_bytes() for p in sorted(old.parent.rglob("*")) if p.is_file()}
    real = W._fbx_write

    def filling(vlt, uid, exp, meta):  # half the data lands, then the device is full (tensorstore: ValueError)
        real(vlt, uid, jax.tree.map(lambda x: x[:, : x.shape[1] // 2], exp), meta)
        raise ValueError("Error writing local file: No space left on device [tensorstore]")

    monkeypatch.setattr(W, "_fbx_write", filling)
    with pytest.raises(UserInputError, match="No space left on device.*the vault there is unchanged") as err:
        V.write_vault(root, spec, experience, {"policy": "random"}, overwrite=True)
    assert "\n" not in str(err.value)
    assert {p: p.read_bytes() for p in sorted(old.parent.rglob("*")) if p.is_file()} == before
    assert not list(old.parent.glob(".*.tmp-*"))


def test_a_cut_keeps_each_datasets_first_episodes_and_says_so(tmp_path, spec, experience):
    """write_cut: the first n completed episodes of every uid, arrays identical to the original's prefix, the
    collector metadata kept with ``cut``; Connector has no win rule, so a win count is dropped."""
    ends = np.flatnonzero((experience["terminals"][0, :, 0] + experience["truncations"][0, :, 0]) > 0)
    assert len(ends) >= 3
    src = V.write_vault(tmp_path / "full", spec, experience, {"collector": "test", "data_wins": {"a": {}}}, uid="a")
    V.write_vault(tmp_path / "full", spec, experience, {"collector": "test"}, uid="b")
    out = V.write_cut(src.parent, tmp_path / "cut", 2)
    assert out == V.vault_path(tmp_path / "cut", spec) and sorted(V.list_uids(out)) == ["a", "b"]
    for uid in ("a", "b"):
        cut = V.read_vault(out, spec, uid=uid)
        stop = ends[1] + 1
        for key in ("observations", "actions", "rewards", "terminals", "truncations"):
            np.testing.assert_array_equal(cut[key], experience[key][:, :stop])
        np.testing.assert_array_equal(cut["infos"]["legals"], experience["infos"]["legals"][:, :stop])
        assert V.episode_returns(cut).tolist() == pytest.approx(_returns_by_hand(experience)[:2])
        collector = V.read_metadata(out)["datasets"][uid]["collector"]
        assert collector["cut"] == {"episodes": 2, "of_episodes": len(ends), "of_transitions": STEPS}
        assert collector["collector"] == "test" and "data_wins" not in collector
    whole = V.write_cut(src.parent, tmp_path / "whole", len(ends) + 5)  # fewer episodes than asked: all of them
    np.testing.assert_array_equal(V.read_vault(whole, spec, uid="a")["actions"], experience["actions"])
    with pytest.raises(UserInputError, match="max_episodes=0"):
        V.write_cut(src.parent, tmp_path / "none", 0)


def test_a_cut_of_smax_data_recounts_its_wins(tmp_path):
    """SMAX declares that a won episode returns 2 (any other at most 1): a cut's win count is recounted from the
    returns it keeps, and agrees with the wins counted when the bundled 3m data were recorded (all episodes)."""
    from mtmarl.envs.smax import SmaxEnv

    vlt = Path(__file__).resolve().parents[1] / "vault_data" / "smax" / "3m.vlt"
    meta = V.read_metadata(vlt)
    out = V.write_cut(vlt, tmp_path, 40)
    cut_meta = V.read_metadata(out)
    for uid in ("expert", "medium"):
        full = V.episode_returns(V.read_vault(vlt, uid=uid))
        recorded = meta["datasets"][uid]["collector"]["data_wins"][uid]
        assert recorded["wins"] == int((full > SmaxEnv.WIN_RETURN).sum())  # the rule agrees with the recorder
        wins = cut_meta["datasets"][uid]["collector"]["data_wins"]
        assert wins[uid] == {"episodes": 40, "wins": int((full[:40] > SmaxEnv.WIN_RETURN).sum()),
                             "win_rate": pytest.approx(int((full[:40] > SmaxEnv.WIN_RETURN).sum()) / 40)}
        assert set(wins) == {"expert", "medium"}
        assert len(V.episode_returns(V.read_vault(out, uid=uid))) == 40
