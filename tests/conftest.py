"""Shared fixtures: an isolated workspace and mace cache, and the bundled demo world."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlipft_core.demo import demo_paths  # noqa: E402


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
    stop_consumers(tmp_path / "workspace")


def stop_consumers(root: Path) -> None:
    """Stop the queue consumers a test started in its workspace (they are detached)."""
    import signal

    for pidfile in (Path(root) / "queue").glob("consumer-*.pid"):
        try:
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


@pytest.fixture(scope="session")
def demo() -> dict:
    return demo_paths()


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
