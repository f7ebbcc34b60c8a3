"""The workspace folder: location, atomic writes, selections, uploads."""

from __future__ import annotations

import os
from pathlib import Path

from mlipft_core.workspace import (
    Workspace,
    atomic_write_bytes,
    atomic_write_json,
    default_root,
    read_json,
)


def test_default_root_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLIPFT_WORKSPACE", str(tmp_path / "elsewhere"))
    assert default_root() == tmp_path / "elsewhere"
    ws = Workspace()
    for sub in ("uploads", "splits", "runs", "cache"):
        assert (tmp_path / "elsewhere" / sub).is_dir()
    monkeypatch.delenv("MLIPFT_WORKSPACE")
    assert default_root() == Path.home() / "mlipft-workspace"
    assert ws.root == tmp_path / "elsewhere"


def test_selections_persist_and_clear(tmp_path):
    ws = Workspace(tmp_path)
    ws.set(model="demo-gfn1-weak", split_id="abc")
    assert Workspace(tmp_path).get("model") == "demo-gfn1-weak"
    ws.set(split_id=None)
    assert "split_id" not in Workspace(tmp_path).selections()


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_json(target, {"a": 1})
    try:
        atomic_write_bytes(target, "text is not bytes")  # fails while writing
    except TypeError:
        pass
    assert read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_uploads_are_content_addressed(tmp_path):
    ws = Workspace(tmp_path)
    p1 = ws.save_upload("../../etc/my data.xyz", b"1\n\nH 0 0 0\n")
    p2 = ws.save_upload("my data.xyz", b"1\n\nH 0 0 0\n")
    assert p1 == p2 and p1.parent == ws.uploads and " " not in p1.name
    assert os.path.commonpath([p1, ws.root]) == str(ws.root)
