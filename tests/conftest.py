"""Shared fixtures: an isolated workspace and mace cache, and the bundled demo world."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlipft_core.demo import demo_paths  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Long tests (marked ``slow``) first, so that with two workers (``scripts/test.sh``) they
    run side by side from the start and the short ones fill in around them."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Every test gets its own workspace, an empty mace cache and no route to the internet."""
    monkeypatch.setenv("MLIPFT_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    # no model downloads from tests, with or without internet: an unreachable proxy
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    yield
    stop_workers(tmp_path / "workspace")


def _run_files(root: Path) -> list[Path]:
    """Every run.json of a workspace, and of each participant's space in a workshop."""
    root = Path(root)
    return list(root.glob("runs/*/run.json")) + list(root.glob("participants/*/runs/*/run.json"))


def stop_workers(root: Path) -> None:
    """Stop the dispatcher and the runners a test started in its workspace (detached)."""
    from mlipft_core.jobs.records import same_process_alive

    pids = []
    try:
        info = json.loads((Path(root) / "queue" / "dispatcher.json").read_text())
        pids.append((info["pid"], info["started"]))
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        pass
    for rec in _run_files(root):
        try:
            d = json.loads(rec.read_text())
            if d.get("status") == "running" and d.get("executor", "local") == "local":
                pids.append((d["pid"], d["pid_started"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            pass
    slurm_jobs = []
    for rec in _run_files(root):
        try:
            d = json.loads(rec.read_text())
            if d.get("executor") == "slurm" and d.get("status") in ("queued", "running") \
                    and d.get("slurm_job_id"):
                slurm_jobs.append(d["slurm_job_id"])
        except (OSError, ValueError, AttributeError, RecursionError):
            pass
    if slurm_jobs:
        subprocess.run(["scancel", *slurm_jobs], capture_output=True, timeout=60)
    for pid, started in pids:
        if same_process_alive(pid, started):
            try:
                os.kill(pid, signal.SIGKILL)  # a runner's training dies with it
            except OSError:
                pass


@pytest.fixture(scope="session")
def demo() -> dict:
    return demo_paths()


@pytest.fixture
def tiny(tmp_path, demo):
    """A tiny SN2 training and validation set and a small replay file (real demo data)."""
    from ase.io import read, write

    d = tmp_path / "tiny"
    d.mkdir()
    write(d / "train.xyz", read(demo["sn2_train"], ":20"))
    write(d / "valid.xyz", read(demo["sn2_valid"], ":5"))
    write(d / "replay.xyz", read(demo["replay_pool"], ":30"))
    return d


@pytest.fixture
def tiny_split(tiny):
    """The tiny set saved as a split and chosen, with the weak demo model, as a user would
    on the Foundation model and Data pages."""
    from mlipft_core.data import register_files_as_split
    from mlipft_core.workspace import Workspace

    ws = Workspace()
    split = register_files_as_split(ws, {"train": tiny / "train.xyz",
                                         "valid": tiny / "valid.xyz"}, "tiny")
    ws.set(model="demo-gfn1-weak", model_label="Demo weak (GFN1-xTB)", split_id=split.id)
    return split


@pytest.fixture
def strong_model(demo) -> str:
    path = demo["models"]["demo-gfn1-strong"]
    assert Path(path).is_file(), f"demo model missing: {path}"
    return path


@pytest.fixture
def weak_model(demo) -> str:
    path = demo["models"]["demo-gfn1-weak"]
    assert Path(path).is_file(), f"demo model missing: {path}"
    return path


def mlipft_cmd() -> list[str]:
    """The installed console script, or the module when run from a plain checkout."""
    exe = shutil.which("mlipft", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "mlipft_core"]


def assert_done(rec):
    """``rec`` (a finished run) ended ``done``; if not, the failure says why, with its log."""
    assert rec.status == "done", (f"run {rec.id} ended {rec.status}: {rec.reason}\n"
                                  f"{rec.log_tail}")
    return rec
