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

A damaged helper file (``state.json``, ``settings.json``, ``trusted_models.json``, a saved E0
choice, ``queue/dispatcher.json``: not UTF-8, not JSON, the wrong type, a folder) is never
fatal: reading ignores it and says so in one line (:func:`read_json_checked` gives the reason,
:func:`note` keeps the line for the command line to print), and the next write of that file
first renames the damaged one aside to ``<name>.unreadable-<time>`` (:func:`set_aside`), so
it is kept and never read again. A workspace that cannot be used (a file where a folder
belongs, a read-only or full file system) raises :class:`~mlipft_core.errors.WorkspaceError`.

The workspace is three modules: :mod:`~mlipft_core.file_io` (atomic writes, strict and
checked JSON, content hashes), :mod:`~mlipft_core.helper_files` (damaged helper files and the
notices) and this one, the folder itself. Every name of the other two is re-exported here.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from .errors import WorkspaceError, os_error_words
from .file_io import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    bytes_sha256,
    cached_sha256,
    discard_temp,
    file_sha256,
    file_version,
    json_depth_exceeds,
    json_kind,
    read_json,
    read_json_checked,
    strict_json,
)
from .helper_files import (
    MAX_NOTICES,
    damaged_notice,
    note,
    read_helper_json,
    set_aside,
    set_aside_if_damaged,
    take_notices,
)

__all__ = ["ENV_VAR", "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "MAX_NOTICES", "SUBDIRS",
           "TRUST_IGNORED", "Workspace", "absolute_paths", "atomic_write_bytes",
           "atomic_write_json", "atomic_write_text", "bytes_sha256", "cached_sha256",
           "damaged_notice", "default_root", "file_sha256", "file_version",
           "json_depth_exceeds", "json_kind", "note", "read_helper_json", "read_json",
           "read_json_checked", "set_aside", "set_aside_if_damaged", "strict_json",
           "take_notices"]

_D = TypeVar("_D")

ENV_VAR = "MLIPFT_WORKSPACE"
#: what happens when ``trusted_models.json`` cannot be used
TRUST_IGNORED = "no local model file counts as confirmed until you confirm it again"
SUBDIRS = ("uploads", "splits", "runs", "cache", "models")


def _reason(exc: BaseException) -> str:
    """An error's reason in words, without its class name."""
    if isinstance(exc, OSError):
        words = os_error_words(exc)
        return words[0] if words else str(exc.strerror or exc)
    if isinstance(exc, ValueError) and "null" in str(exc):
        return "the path holds a NUL byte"
    return str(exc) or "not a usable path"


def default_root() -> Path:
    """The workspace root: ``$MLIPFT_WORKSPACE`` or ``~/mlipft-workspace``."""
    env = os.environ.get(ENV_VAR)
    return (Path(env).expanduser() if env else Path.home() / "mlipft-workspace").resolve()

def absolute_paths(obj: _D, names: Iterable[str]) -> _D:
    """A copy of the dataclass ``obj`` whose named path fields are absolute (``~`` expanded);
    empty ones become ``None``. Runs and studies work in their own folders, not where the
    user typed the paths."""
    def fix(p: str | None) -> str | None:
        return None if not p else str(Path(p).expanduser().resolve())

    return dataclasses.replace(obj, **{n: fix(getattr(obj, n)) for n in names})



class Workspace:
    """A workspace folder with its sub-folders and the saved selections.

    Parameters
    ----------
    root
        Folder to use; defaults to :func:`default_root`.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        try:
            self.root = (Path(root).expanduser().resolve() if root is not None
                         else default_root())
        except (OSError, ValueError) as exc:
            raise WorkspaceError(f"the workspace path {str(root or os.environ.get(ENV_VAR))!r} "
                                 f"cannot be used ({_reason(exc)}): set {ENV_VAR} to a "
                                 "folder") from None
        self._open()

    def _open(self) -> None:
        """Make the workspace's folders, or :class:`WorkspaceError` saying what is in the
        way (a file where a folder belongs, a read-only or full file system, ...)."""
        for folder in [self.root] + [self.root / sub for sub in SUBDIRS]:
            if folder.is_dir():
                continue
            if folder.exists() or folder.is_symlink():
                if folder == self.root:
                    raise WorkspaceError(
                        f"the workspace {folder} is a file, not a folder: set {ENV_VAR} to a "
                        "folder, or move the file away")
                raise WorkspaceError(
                    f"{folder} is a file, but the workspace keeps its {folder.name} there "
                    f"in a folder: move the file away (or set {ENV_VAR} to another folder)")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise WorkspaceError(self._write_problem(exc, folder)) from None

    def _write_problem(self, exc: OSError, path: Path | None = None) -> str:
        """The one-line message when the workspace cannot be written."""
        where = Path(exc.filename) if exc.filename else (path or self.root)
        if exc.errno == errno.ENOTDIR or exc.errno == errno.EEXIST:
            blocker = next((p for p in [where, *where.parents]
                            if p.exists() and not p.is_dir()), where)
            return (f"the workspace cannot be made at {self.root}: {blocker} is a file, not a "
                    f"folder; move it away or set {ENV_VAR} to another folder")
        words = os_error_words(exc)
        what, todo = words if words else (_reason(exc), f"set {ENV_VAR} to a writable folder")
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            todo = f"set {ENV_VAR} to a folder you may write to"
        if where == self.root:
            return f"cannot write in the workspace {self.root}: {what}; {todo}"
        return f"cannot write {where} in the workspace {self.root}: {what}; {todo}"

    def check_writable(self) -> None:
        """:class:`WorkspaceError` unless files can be written in the workspace (a read-only
        or full file system, no permission): checked by writing and removing a small file,
        before work that would fail half-way."""
        def problem(exc: OSError) -> str:  # said of the workspace, not of the probe file
            return self._write_problem(OSError(exc.errno, exc.strerror), self.root)

        try:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".write-check.", suffix=".part")
        except OSError as exc:
            raise WorkspaceError(problem(exc)) from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(b"x" * 4096)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise WorkspaceError(problem(exc)) from None
        finally:
            discard_temp(tmp)

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
        """The folder to name when asking for the local dispatcher of this workspace's runs:
        the workspace itself. Whether a shared folder's dispatcher serves them is for the
        workspace's submission policy to say, which
        :func:`~mlipft_core.jobs.local.ensure_dispatcher` and
        :func:`~mlipft_core.jobs.local.dispatcher_alive` ask."""
        return self.root

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    # -- selections ----------------------------------------------------------------------
    def _read_state(self) -> tuple[dict[str, Any], str | None]:
        """The saved selections and, when ``state.json`` cannot be used, why."""
        data, problem = read_json_checked(self.state_file, dict, "saved choices")
        return (data or {}), problem

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
        with open(self.root / ".state.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state, problem = self._read_state()
            if problem is not None:  # keep the unreadable file aside, never lose it
                if set_aside(self.state_file) is None and self.state_file.is_dir():
                    raise WorkspaceError(f"{self.state_file} is a folder and cannot be moved "
                                         "aside: move it away to save choices again")
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
        """SHA-256 of every model file confirmed as trusted here -> when and under what name.

        A damaged ``trusted_models.json`` counts as empty (nothing is confirmed) and is said
        (:func:`note`; :meth:`trust_problem` for a page)."""
        data = read_helper_json(self.trust_file, TRUST_IGNORED, what="confirmed model files")
        return {k: v for k, v in (data or {}).items() if isinstance(v, dict)}

    def trust_problem(self) -> str | None:
        """Why ``trusted_models.json`` cannot be used, or ``None``."""
        return read_json_checked(self.trust_file, dict, "confirmed model files")[1]

    def trust(self, path: str | Path) -> str:
        """Record that the user trusts the model file at ``path`` (by its content hash); a
        damaged record of confirmations is kept aside and started afresh."""
        digest = cached_sha256(path)
        with open(self.root / ".trust.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.trusted_hashes()
            set_aside_if_damaged(self.trust_file)
            data[digest] = {"name": Path(path).name, "at": time.time()}
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
