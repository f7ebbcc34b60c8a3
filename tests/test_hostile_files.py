"""Damaged files and a hostile file system, through the real command line: one damaged run,
helper file or folder breaks nothing else, and every refusal is one line that names the path
and says what to do, in words (no exception class names)."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import mlipft_cmd, stop_workers
from mlipft_core import e0
from mlipft_core.errors import os_error_message
from mlipft_core.jobs.local import Dispatcher
from mlipft_core.jobs.records import RunRecord, RunStore
from mlipft_core.workspace import (
    Workspace,
    atomic_write_json,
    read_json,
    read_json_checked,
    take_notices,
)

#: lines the libraries print on their own (mace's import, its downloader) and the CLI's note
#: on loading a local model file
NOISE = ("cuequivariance", "Downloading MACE model", "note: loading local model file")
CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b|Traceback|Errno")


def _cli(*args: str, timeout: int = 300, env: dict | None = None
         ) -> subprocess.CompletedProcess:
    return subprocess.run(mlipft_cmd() + list(args), capture_output=True, text=True,
                          timeout=timeout, env=None if env is None else {**os.environ, **env})


def _lines(out: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in out.stderr.splitlines() if ln.strip() and not ln.startswith(NOISE)]


def _words(line: str) -> str:
    assert not CLASS_NAME.search(line), line
    return line


def _one_error(out: subprocess.CompletedProcess) -> str:
    """The one line a refusal prints (exit 2): ``error: ...`` in words."""
    lines = _lines(out)
    assert out.returncode == 2, out.stdout + out.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return _words(lines[0])


def _warnings(out: subprocess.CompletedProcess) -> list[str]:
    """The warning lines of a command that did its job (and nothing else on stderr)."""
    lines = _lines(out)
    assert all(ln.startswith("warning: ") for ln in lines), out.stderr
    return [_words(ln) for ln in lines]


def _ten_frames(tmp_path: Path, demo: dict) -> Path:
    from ase.io import read, write

    path = tmp_path / "TEN.xyz"
    write(path, read(demo["sn2_train"], ":10"))
    return path


def _train(train: Path, demo: dict, *extra: str, timeout: int = 300
           ) -> subprocess.CompletedProcess:
    """T: one naive epoch on ten SN2 frames with the strong demo model."""
    return _cli("train", "--strategy", "naive", "--model", "demo-gfn1-strong", "--train",
                str(train), "--isolated-file", str(Path(demo["sn2_train"]).parent /
                                                   "isolated_atoms.xyz"),
                "--epochs", "1", *extra, timeout=timeout)


# ----------------------------------------------------------------------------- run records
GOOD = "20240101-000000-naive-aaaaaa"
DEEP = "[" * 100_000 + "]" * 100_000


def _record(**spec_and_more) -> bytes:
    base = {"id": "X", "name": "x", "strategy": "naive"}
    return json.dumps({**base, **spec_and_more}).encode()


@pytest.mark.parametrize("content, why", [
    (DEEP.encode(), "too deeply"),
    (_record(spec={"a": json.loads("[" * 900 + "]" * 900)}), "too deeply"),
    (_record(spec={"settings": [1, 2]}), "'spec.settings' is a list"),
    (_record(spec={"warnings": "careful"}), "'spec.warnings' is a string"),
    (_record(spec={"warnings": [1, 2]}), "'spec.warnings' holds something other than text"),
    (_record(spec={"train_size": "ten"}), "'spec.train_size' is a string"),
    (_record(spec={"foundation_model": ["a"]}), "'spec.foundation_model' is a list"),
    (_record(spec={"e0_values": {"H": "abc"}}), "gives no number for H"),
    (_record(kind="md", spec={"settings": {"steps": 10, "bogus": 1}}), "MD settings"),
    (_record(metrics={"valid": [1]}), "'metrics.valid' is a list"),
    (_record(executor_options={"log": 5}), "'executor_options.log' is a number"),
])
def test_one_damaged_run_record_breaks_no_other_run(content, why):
    ws = Workspace()
    store = RunStore(ws)
    store.create(RunRecord(id=GOOD, name="naive", strategy="naive", created=1.0))
    broken = ws.runs / "X"
    broken.mkdir()
    (broken / "run.json").write_bytes(content)
    try:
        _damaged_run_breaks_nothing(ws, why)
    finally:  # the shared clean-up reads every run.json with the standard library alone
        shutil.rmtree(broken)


def _damaged_run_breaks_nothing(ws: Workspace, why: str) -> None:
    listed = _cli("runs", "--json")
    assert listed.returncode == 0 and _warnings(listed) == [], listed.stderr
    rows = {r["id"]: r for r in json.loads(listed.stdout)}
    assert rows[GOOD]["status"] == "queued"
    assert rows["X"]["status"] == "unreadable" and why in rows["X"]["reason"], rows["X"]
    assert _cli("runs").returncode == 0
    # the local dispatcher sees the good run and passes the damaged one by
    assert [r.id for r in Dispatcher(ws.root)._local()] == [GOOD]
    cancelled = _cli("cancel", GOOD)
    assert cancelled.returncode == 0 and f"{GOOD}: cancelled" in cancelled.stdout, \
        cancelled.stderr
    assert "run X" in _one_error(_cli("cancel", "X"))


# ----------------------------------------------------------------------------- helper files
DAMAGED = {"binary": b"\xff\xfe\x00binary", "list": b"[1, 2]", "not json": b"{settings",
           "deep": DEEP.encode(), "folder": None}


def _damage(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if DAMAGED[kind] is None:
        path.mkdir()
    else:
        path.write_bytes(DAMAGED[kind])


def test_read_json_never_raises_for_a_damaged_file(tmp_path):
    for kind in DAMAGED:
        path = tmp_path / kind / "x.json"
        _damage(path, kind)
        assert read_json(path, default="d") == ("d" if kind != "list" else [1, 2]), kind
        data, problem = read_json_checked(path)
        assert data is None and problem.startswith("x.json "), (kind, problem)
    assert read_json_checked(tmp_path / "missing.json") == (None, None)
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert read_json_checked(tmp_path / "ok.json") == ({"a": 1}, None)
    assert read_json_checked(tmp_path / "ok.json", list)[1] == "ok.json holds an object, not list"


@pytest.mark.parametrize("kind", ["binary", "list", "folder"])
def test_a_damaged_settings_file_is_said_and_the_defaults_apply(kind):
    ws = Workspace()
    _damage(ws.root / "settings.json", kind)
    shown = _cli("settings", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["executor"] == "local"
    (warning,) = _warnings(shown)
    assert str(ws.root / "settings.json") in warning and "default run settings" in warning
    saved = _cli("settings", "--cpu-slots", "1", "--json")
    assert saved.returncode == 0, saved.stderr
    assert json.loads(saved.stdout)["local"]["cpu_slots"] == 1
    assert json.loads((ws.root / "settings.json").read_text())["local"]["cpu_slots"] == 1
    assert list(ws.root.glob("settings.json.unreadable-*")), "the damaged file was lost"
    assert _warnings(_cli("settings")) == []  # said once: the new file is sound


def test_a_training_launch_survives_damaged_settings_and_dispatcher_files(tmp_path, demo):
    ws = Workspace()
    _damage(ws.root / "settings.json", "binary")
    _damage(ws.root / "queue" / "dispatcher.json", "binary")
    out = _train(_ten_frames(tmp_path, demo), demo, "--json")
    try:
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["status"] in ("queued", "running", "done"), out.stdout
        said = " ".join(_warnings(out))
        assert "settings.json is not UTF-8 text" in said
        assert "dispatcher.json is not UTF-8 text" in said
        assert list((ws.root / "queue").glob("dispatcher.json.unreadable-*"))
    finally:
        stop_workers(ws.root)


@pytest.mark.parametrize("content, why", [
    (b"\xff\xfe\x00binary", "is not UTF-8 text"),
    (b"[1, 2]", "holds a list"),
    (b'{"method": "estimated", "e0": {"H": "abc"}}', "gives 'abc' for H"),
    (b'{"method": "estimated", "e0": {"Qq": 1.0}}', "'Qq', which is not an element"),
])
def test_a_damaged_saved_e0_choice_is_named_and_never_used(tmp_path, demo, content, why):
    ws = Workspace()
    cid = "estimated-0123456789"
    path = ws.root / "e0" / f"{cid}.json"
    path.parent.mkdir()
    path.write_bytes(content)
    line = _one_error(_train(_ten_frames(tmp_path, demo), demo, "--e0", cid))
    assert f"saved E0 choice {cid}" in line and str(path) in line and why in line, line
    # as the selected choice (the pages): runs use the default E0s, and it is said
    ws.set(e0_choice=cid)
    take_notices()
    assert e0.load_choice(ws) is None
    (notice,) = take_notices()
    assert str(path) in notice and why in notice and "estimated E0s" in notice
    assert e0.choice_problem(ws) == notice


def test_a_damaged_study_record_is_said_kept_aside_and_the_study_starts_again(tmp_path, demo):
    from ase.io import read, write

    for name, key, sel in (("train", "sn2_train", ":20"), ("valid", "sn2_valid", ":5"),
                           ("test", "sn2_test", ":5"), ("pretrain", "pretrain_test", ":5"),
                           ("replay", "replay_pool", ":10")):
        write(tmp_path / f"{name}.xyz", read(demo[key], sel))
    args = ["study", "--train", str(tmp_path / "train.xyz"), "--valid",
            str(tmp_path / "valid.xyz"), "--test", str(tmp_path / "test.xyz"), "--pretrain",
            str(tmp_path / "pretrain.xyz"), "--replay", str(tmp_path / "replay.xyz"),
            "--isolated-file", demo["sn2_isolated_atoms"], "--strategies", "naive",
            "--lrs", "1e-3,1e-2", "--pilot-epochs", "1", "--epochs", "1", "--small-size", "10",
            "--no-wait", "--json"]
    ws = Workspace()
    try:
        first = _cli(*args)
        assert first.returncode == 0, first.stderr
        sid = json.loads(first.stdout)["id"]
        stop_workers(ws.root)
        record = ws.root / "studies" / sid / "study.json"
        _damage(record, "binary")
        again = _cli(*args)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["id"] == sid
        (warning,) = _warnings(again)
        (aside,) = record.parent.glob("study.json.unreadable-*")
        assert warning == (f"warning: {record} could not be read; it is kept as {aside.name} "
                           "and the study starts again from its inputs"), warning
        assert aside.read_bytes() == DAMAGED["binary"]
        assert json.loads(record.read_text())["id"] == sid
    finally:
        stop_workers(ws.root)


def test_a_damaged_workshop_configuration_is_refused_in_its_folder_only(tmp_path, demo):
    """Unlike the other helper files, a damaged ``workshop.json`` is not set aside: that would
    drop the workshop's limits and let its participants' runs go unchecked. Every command in
    its folder refuses in one line naming the file; other workspaces go on."""
    room = tmp_path / "room"
    made = _cli("workshop", "create", "--participants", "1", env={"MLIPFT_WORKSPACE": str(room)})
    assert made.returncode == 0, made.stderr
    _damage(room / "workshop.json", "binary")
    participant = room / "participants" / "p01"
    train = ("train", "--strategy", "naive", "--model", "demo-gfn1-weak", "--train",
             demo["sn2_train"], "--epochs", "1")
    for where, args in ((room, ("workshop", "board", "--json")), (participant, train)):
        line = _one_error(_cli(*args, env={"MLIPFT_WORKSPACE": str(where)}))
        assert line == f"error: {room / 'workshop.json'} is not UTF-8 text: fix or remove it", \
            (args, line)
    assert not list((participant / "runs").glob("*")), "a refused run was queued"
    assert (room / "workshop.json").read_bytes() == DAMAGED["binary"]  # kept as it is
    elsewhere = _cli("runs", "--json")
    assert elsewhere.returncode == 0 and json.loads(elsewhere.stdout) == [], elsewhere.stderr


@pytest.mark.parametrize("kind", ["binary", "list", "folder"])
def test_a_damaged_trust_record_counts_as_empty_and_is_kept_aside(kind, weak_model, tmp_path):
    model = tmp_path / "mine.model"
    shutil.copy(weak_model, model)
    ws = Workspace()
    _damage(ws.trust_file, kind)
    take_notices()
    assert not ws.is_trusted(model)
    assert any("trusted_models.json" in n and "confirm" in n for n in take_notices())
    assert ws.trust_problem() is not None
    ws.trust(model)
    assert ws.is_trusted(model) and ws.trust_problem() is None
    assert list(ws.root.glob("trusted_models.json.unreadable-*"))


# ----------------------------------------------------------------------------- file system
def _can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at ``path`` (root only), unmounted afterwards."""
    if not _can_mount():
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {got.stderr.strip()}")
    try:
        yield path
    finally:
        stop_workers(path / "ws")
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(disk: Path, leave_bytes: int = 0) -> None:
    """Fill the disk at ``disk`` until ``leave_bytes`` are free."""
    free = shutil.disk_usage(disk).free - leave_bytes
    with open(disk / "filler", "ab") as fh:
        try:
            while free > 0:
                n = min(free, 1 << 20)
                fh.write(b"\0" * n)
                fh.flush()
                free -= n
        except OSError:
            pass


def test_a_read_only_workspace_is_said_in_one_line(tmp_path, monkeypatch, demo):
    with tmpfs(tmp_path / "disk", "8m") as disk:
        root = disk / "ws"
        monkeypatch.setenv("MLIPFT_WORKSPACE", str(root))
        Workspace()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        train = _ten_frames(tmp_path, demo)
        line = _one_error(_train(train, demo))
        assert str(root) in line and "read-only" in line and "MLIPFT_WORKSPACE" in line
        line = _one_error(_cli("settings", "--cpu-slots", "2"))
        assert str(root) in line and "read-only" in line
        assert _cli("settings").returncode == 0 and _cli("runs").returncode == 0  # reading
        monkeypatch.setenv("MLIPFT_WORKSPACE", str(disk / "new"))
        line = _one_error(_cli("runs"))
        assert str(disk / "new") in line and "read-only" in line


def test_a_full_disk_is_said_in_one_line_and_a_run_still_records_its_end(tmp_path,
                                                                         monkeypatch, demo):
    with tmpfs(tmp_path / "disk", "2m") as disk:
        root = disk / "ws"
        monkeypatch.setenv("MLIPFT_WORKSPACE", str(root))
        ws = Workspace()
        store = RunStore(ws)
        # a run whose runner died with the disk full, and one still waiting
        store.create(RunRecord(id="dead", name="naive", strategy="naive", status="running",
                               pid=2 ** 22 + 17, pid_started=1.0, host=None))
        store.create(RunRecord(id=GOOD, name="naive", strategy="naive"))
        train = _ten_frames(tmp_path, demo)
        _fill(disk, leave_bytes=200_000)  # room to start, not for the run's model copy
        line = _one_error(_train(train, demo))
        assert str(root) in line and "disk is full" in line
        assert {p.name for p in (root / "runs").iterdir()} == {"dead", GOOD}
        _fill(disk)
        line = _one_error(_train(train, demo))
        assert str(root) in line and "disk is full" in line
        line = _one_error(_cli("settings", "--cpu-slots", "2"))
        assert str(root) in line and "disk is full" in line
        listed = _cli("runs", "--json")
        assert listed.returncode == 0, listed.stderr
        assert {r["id"] for r in json.loads(listed.stdout)} == {"dead", GOOD}
        # recording the end works where no new file fits
        assert _cli("cancel", GOOD).returncode == 0
        assert store.read(GOOD).status == "cancelled"
        done = _cli("cancel", "dead")
        assert done.returncode == 0, done.stderr
        rec = store.read("dead")
        assert rec.status == "failed" and "disk holding the run folder" in rec.reason
        assert str(root / "runs" / "dead") in rec.reason


@pytest.mark.slow
def test_a_disk_that_fills_during_training_ends_the_run_with_the_reason(tmp_path,
                                                                        monkeypatch, demo):
    model = Path(demo["models"]["demo-gfn1-strong"])
    with tmpfs(tmp_path / "disk", "6m") as disk:
        root = disk / "ws"
        monkeypatch.setenv("MLIPFT_WORKSPACE", str(root))
        Workspace()
        # room for the run's foundation copy, not for the checkpoints training writes
        _fill(disk, leave_bytes=model.stat().st_size + 400_000)
        out = _train(_ten_frames(tmp_path, demo), demo, "--wait", "--json", timeout=600)
        assert out.returncode == 1, out.stdout + out.stderr
        row = json.loads(out.stdout)
        assert row["status"] == "failed", row
        assert "disk holding the run folder" in row["reason"] and str(root) in row["reason"]
        assert not CLASS_NAME.search(row["reason"]), row["reason"]
        assert RunStore(Workspace()).read(row["id"]).status == "failed"


@pytest.mark.parametrize("layout", ["workspace is a file", "a file in the path",
                                    "runs is a file"])
def test_a_file_where_a_folder_belongs_is_named(tmp_path, monkeypatch, layout):
    if layout == "workspace is a file":
        root = tmp_path / "ws-file"
        root.write_text("x")
        blocker = root
    elif layout == "a file in the path":
        (tmp_path / "plain").write_text("x")
        root = tmp_path / "plain" / "ws"
        blocker = tmp_path / "plain"
    else:
        root = tmp_path / "ws"
        root.mkdir()
        blocker = root / "runs"
        blocker.write_text("x")
    monkeypatch.setenv("MLIPFT_WORKSPACE", str(root))
    for args in (["runs"], ["settings"], ["cancel", GOOD]):
        line = _one_error(_cli(*args))
        assert str(blocker) in line and "is a file" in line, line


def test_an_md_trajectory_in_a_missing_folder_is_refused_before_the_model_runs(tmp_path, demo,
                                                                              weak_model):
    out = _cli("md", weak_model, str(_ten_frames(tmp_path, demo)), "--steps", "2",
               "--temperature", "300", "--timestep", "0.5", "--trajectory",
               str(tmp_path / "no" / "such" / "t.xyz"))
    line = _one_error(out)
    assert str(tmp_path / "no" / "such") in line and "does not exist" in line


def test_a_write_that_fails_names_the_file_not_the_temporary_one(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(OSError) as info:
        atomic_write_json(tmp_path / "plain" / "settings.json", {})
    assert info.value.filename == str(tmp_path / "plain" / "settings.json")
    assert _words(os_error_message(info.value)).startswith(str(tmp_path / "plain"))


# ----------------------------------------------------------------------------- messages
def _model_files(tmp_path: Path, weak_model: str) -> dict[str, Path]:
    import torch

    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"hello, not a model\n" * 10)
    cut = tmp_path / "cut.model"
    cut.write_bytes(Path(weak_model).read_bytes()[:2000])
    weights = tmp_path / "weights.model"
    torch.save({"a": torch.zeros(2)}, weights)
    folder = tmp_path / "folder.model"
    folder.mkdir()
    return {"garbage": garbage, "cut": cut, "weights": weights, "folder": folder}


@pytest.mark.parametrize("which, words", [
    ("garbage", "is not a MACE model file (not a saved PyTorch model)"),
    ("cut", "is damaged or incomplete"),
    ("weights", "does not hold a MACE model (it holds a dictionary)"),
    ("folder", "is a folder, not a model file"),
])
def test_a_model_file_that_cannot_be_loaded_is_said_in_words(tmp_path, weak_model, which,
                                                              words):
    path = _model_files(tmp_path, weak_model)[which]
    line = _one_error(_cli("inspect", str(path)))
    assert str(path) in line and words in line, line


def test_an_official_model_offline_says_there_is_no_network():
    line = _one_error(_cli("inspect", "mace-mp-0-small"))
    assert "could not be downloaded (no network connection)" in line, line


def test_cuda_without_a_gpu_is_said_in_words(tmp_path, demo):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = _one_error(_cli("evaluate", "demo-gfn1-weak", str(_ten_frames(tmp_path, demo)),
                           "--device", "cuda"))
    assert "--device cuda was asked for, but this machine has no CUDA GPU" in line


def test_md_names_the_element_the_model_lacks_and_the_structures_a_file_has(tmp_path, demo,
                                                                            weak_model):
    from ase.io import read, write

    argon = tmp_path / "argon.xyz"
    atoms = read(demo["sn2_train"], 0)
    atoms.numbers[0] = 18
    write(argon, atoms)
    md = ["--steps", "2", "--temperature", "300", "--timestep", "0.5"]
    line = _one_error(_cli("md", weak_model, str(argon), *md))
    assert "holds Ar" in line and str(argon) in line and "does not cover" in line, line
    ten = _ten_frames(tmp_path, demo)
    line = _one_error(_cli("md", weak_model, str(ten), "--index", "999", *md))
    assert str(ten) in line and "holds 10 structures" in line, line
    line = _one_error(_cli("md", weak_model, str(tmp_path), *md))
    assert "is a folder" in line


def test_an_element_the_model_lacks_is_named_with_the_file_that_holds_it(tmp_path, demo):
    from ase.io import read, write

    frames = read(demo["sn2_train"], ":6")
    frames[3].numbers[0] = 40
    path = tmp_path / "with-zr.xyz"
    write(path, frames)
    line = _one_error(_cli("e0", str(path), "--model", "demo-gfn1-weak", "--method",
                           "average"))
    assert "with-zr.xyz holds Zr" in line and "configuration #3" in line, line


def test_a_nul_byte_in_a_typed_path_is_a_refusal():
    from mlipft_core.workshop import AccessError
    from mlipft_ui import selections

    with pytest.raises(AccessError, match="not a usable file path"):
        selections.check_path("data\0.xyz")


def test_an_unforeseen_failure_is_one_line_in_words():
    from mlipft_core.cli import unexpected_message

    assert _words(unexpected_message(OSError(errno.ENOSPC, "No space left on device",
                                             "/x/settings.json"))) == (
        "cannot write /x/settings.json: the disk is full (no space left); free some space and "
        "try again")
    assert "too deeply" in _words(unexpected_message(RecursionError("maximum recursion")))
    assert unexpected_message(ValueError("odd value")) == "an unexpected failure: odd value"
