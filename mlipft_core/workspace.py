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

import dataclasses
import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, TypeVar

_D = TypeVar("_D")

ENV_VAR = "MLIPFT_WORKSPACE"
SUBDIRS = ("uploads", "splits", "runs", "cache", "models")


def default_root() -> Path:
    """The workspace root: ``$MLIPFT_WORKSPACE`` or ``~/mlipft-workspace``."""
    env = os.environ.get(ENV_VAR)
    return (Path(env).expanduser() if env else Path.home() / "mlipft-workspace").resolve()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: the process umask, read once at import (reading it means setting it, briefly)
_UMASK = _current_umask()


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
        # mkstemp creates 0600; keep the mode of the file replaced, else what the umask gives
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def absolute_paths(obj: _D, names: Iterable[str]) -> _D:
    """A copy of the dataclass ``obj`` whose named path fields are absolute (``~`` expanded);
    empty ones become ``None``. Runs and studies work in their own folders, not where the
    user typed the paths."""
    def fix(p: str | None) -> str | None:
        return None if not p else str(Path(p).expanduser().resolve())

    return dataclasses.replace(obj, **{n: fix(getattr(obj, n)) for n in names})


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) replaced by ``None`` (JSON null)."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return strict_json(value.item())
        if isinstance(value, np.ndarray):
            return strict_json(value.tolist())
    except ImportError:  # pragma: no cover
        pass
    return value


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


def file_version(path: str | Path) -> tuple[str, int, int]:
    """(resolved path, size, modification time): the key of caches kept per file version.
    Raises ``OSError`` for a missing file."""
    st_ = os.stat(path)
    return str(Path(path).resolve()), st_.st_size, st_.st_mtime_ns


def cached_sha256(path: str | Path) -> str:
    """SHA-256 of a file, remembered per (path, size, modification time) in this process."""
    return _sha256_of_version(*file_version(path))


@functools.lru_cache(maxsize=1024)
def _sha256_of_version(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


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
    def dispatch_root(self) -> Path:
        """Where the local dispatcher of this workspace's runs lives: the workshop folder for a
        workshop participant's workspace (one dispatcher serves every participant), else the
        workspace itself."""
        parent = self.root.parent
        if parent.name == "participants" and (parent.parent / "workshop.json").is_file():
            return parent.parent
        return self.root

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    # -- selections ----------------------------------------------------------------------
    def _read_state(self) -> tuple[dict[str, Any], str | None]:
        """The saved selections and, when ``state.json`` cannot be used, why."""
        path = self.state_file
        if not path.exists() and not path.is_symlink():
            return {}, None
        if path.is_dir():
            return {}, "state.json is a folder"
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            return {}, "state.json is not UTF-8 text"
        except json.JSONDecodeError as exc:
            return {}, f"state.json is not valid JSON ({exc.msg})"
        except OSError as exc:
            return {}, f"state.json cannot be read ({exc.strerror})"
        if not isinstance(data, dict):
            return {}, f"state.json holds a {type(data).__name__}, not saved choices"
        return data, None

    def selections(self) -> dict[str, Any]:
        """All saved selections (model, dataset, keys, split, ...); empty when the file is
        unreadable (see :meth:`state_problem`)."""
        return self._read_state()[0]

    def state_problem(self) -> str | None:
        """Why the saved selections could not be read, or ``None``."""
        return self._read_state()[1]

    def get(self, key: str, default: Any = None) -> Any:
        return self.selections().get(key, default)

    def set(self, **values: Any) -> dict[str, Any]:
        """Update selections (locked read-modify-write, atomic file replace).

        A value of ``None`` removes the key.
        """
        import fcntl

        with open(self.root / ".state.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state, problem = self._read_state()
            if problem is not None:  # keep the unreadable file aside, never lose it
                import time as _time

                aside = self.root / f"state.json.unreadable-{_time.strftime('%Y%m%d-%H%M%S')}"
                os.replace(self.state_file, aside)
                state = {}
            for k, v in values.items():
                if v is None:
                    state.pop(k, None)
                else:
                    state[k] = v
            atomic_write_json(self.state_file, state)
        return state

    # -- trust ---------------------------------------------------------------------------
    @property
    def trust_file(self) -> Path:
        return self.root / "trusted_models.json"

    def trusted_hashes(self) -> dict[str, dict[str, Any]]:
        """SHA-256 of every model file confirmed as trusted here -> when and under what name."""
        data = read_json(self.trust_file, default={})
        return data if isinstance(data, dict) else {}

    def trust(self, path: str | Path) -> str:
        """Record that the user trusts the model file at ``path`` (by its content hash)."""
        import fcntl
        import time as _time

        digest = cached_sha256(path)
        with open(self.root / ".trust.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.trusted_hashes()
            data[digest] = {"name": Path(path).name, "at": _time.time()}
            atomic_write_json(self.trust_file, data)
        return digest

    def is_trusted(self, path: str | Path) -> bool:
        """Whether this exact file content was confirmed as trusted here."""
        try:
            return cached_sha256(path) in self.trusted_hashes()
        except OSError:
            return False

    # -- uploads -------------------------------------------------------------------------
    def save_upload(self, name: str, data: bytes) -> Path:
        """Store uploaded bytes under a content-addressed name and return the path."""
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name)
        digest = bytes_sha256(data)[:12]
        path = self.uploads / f"{digest}_{safe}"
        if not path.exists():
            atomic_write_bytes(path, data)
        return path
