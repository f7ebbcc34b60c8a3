"""The workspace folder: uploads, splits, runs, caches and saved selections.

Everything the workbench writes at run time goes here, never into the source tree.
The folder is ``$MLIPFT_WORKSPACE`` when set, else ``~/mlipft-workspace``.

Layout::

    <root>/uploads/   files uploaded through the browser (named by content hash)
    <root>/splits/    saved train / valid / test splits (one folder each)
    <root>/runs/      fine-tuning runs
    <root>/cache/     prediction caches
    <root>/state.json the user's current selections (model, dataset, split, ...)

All writes are atomic (write to a temporary file, then rename), so a crash never leaves a
half-written record.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

ENV_VAR = "MLIPFT_WORKSPACE"
SUBDIRS = ("uploads", "splits", "runs", "cache", "models")


def default_root() -> Path:
    """The workspace root: ``$MLIPFT_WORKSPACE`` or ``~/mlipft-workspace``."""
    env = os.environ.get(ENV_VAR)
    return (Path(env).expanduser() if env else Path.home() / "mlipft-workspace").resolve()


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def read_json(path: Path, default: Any = None) -> Any:
    """Read JSON; ``default`` when the file is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Workspace:
    """A workspace folder with its sub-folders and the saved selections.

    Parameters
    ----------
    root
        Folder to use; defaults to :func:`default_root`.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser().resolve() if root is not None else default_root()
        for sub in SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def splits(self) -> Path:
        return self.root / "splits"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    # -- selections ----------------------------------------------------------------------
    def selections(self) -> dict[str, Any]:
        """All saved selections (model, dataset, keys, split, ...)."""
        return read_json(self.state_file, default={}) or {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.selections().get(key, default)

    def set(self, **values: Any) -> dict[str, Any]:
        """Update selections (locked read-modify-write, atomic file replace).

        A value of ``None`` removes the key.
        """
        import fcntl

        with open(self.root / ".state.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.selections()
            for k, v in values.items():
                if v is None:
                    state.pop(k, None)
                else:
                    state[k] = v
            atomic_write_json(self.state_file, state)
        return state

    # -- uploads -------------------------------------------------------------------------
    def save_upload(self, name: str, data: bytes) -> Path:
        """Store uploaded bytes under a content-addressed name and return the path."""
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name)
        digest = bytes_sha256(data)[:12]
        path = self.uploads / f"{digest}_{safe}"
        if not path.exists():
            atomic_write_bytes(path, data)
        return path
