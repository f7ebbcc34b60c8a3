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
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from .errors import WorkspaceError

_D = TypeVar("_D")

ENV_VAR = "MLIPFT_WORKSPACE"
#: what happens when ``trusted_models.json`` cannot be used
TRUST_IGNORED = "no local model file counts as confirmed until you confirm it again"
SUBDIRS = ("uploads", "splits", "runs", "cache", "models")


def _reason(exc: BaseException) -> str:
    """An error's reason in words, without its class name."""
    if isinstance(exc, OSError):
        from .errors import os_error_words

        words = os_error_words(exc)
        return words[0] if words else str(exc.strerror or exc)
    if isinstance(exc, ValueError) and "null" in str(exc):
        return "the path holds a NUL byte"
    return str(exc) or "not a usable path"


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
    """Write ``data`` to ``path`` atomically (temporary file in the same folder + rename).

    Raises
    ------
    OSError
        When the file cannot be written (read-only or full file system, no permission, a
        file where a folder belongs); its ``filename`` is ``path`` itself, not the temporary
        file, so a message can name what could not be written.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600; keep the mode of the file replaced, else what the umask gives
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        _discard(tmp)
        raise
    return path


def _discard(tmp: str | None) -> None:
    """Remove a temporary file left by a failed write (quietly: the disk may be gone)."""
    if tmp is not None:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass


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
    """Read JSON; ``default`` when the file is missing or cannot be read as JSON (not UTF-8,
    not valid JSON, nested too deeply, a folder, an operating-system error). For files whose
    damage the user should hear of, use :func:`read_json_checked`."""
    data, problem = read_json_checked(path, expected=object)
    return default if data is None or problem is not None else data


#: a workspace helper file larger than this is not read (they hold a few kilobytes)
MAX_JSON_BYTES = 64 * 1024 * 1024
#: deeper nesting than this is not a record of the workbench
MAX_JSON_DEPTH = 100

_JSON_KINDS = {dict: "an object", list: "a list", str: "a string", int: "a number",
               float: "a number", bool: "true or false", type(None): "null"}


def json_kind(value: Any) -> str:
    """What a parsed JSON value is, in words (``"a list"``, ``"a string"``, ...)."""
    return _JSON_KINDS.get(type(value), f"a {type(value).__name__}")


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether parsed JSON nests lists and objects more than ``limit`` levels deep (checked
    without recursion, so any depth is safe)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def read_json_checked(path: str | Path, expected: type | tuple[type, ...] = dict,
                      what: str | None = None) -> tuple[Any, str | None]:
    """Read a JSON file and check the type of what it holds.

    Parameters
    ----------
    path
        The file.
    expected
        The type(s) the top level must have (``object`` for any).
    what
        What the file should hold, in words, for the message (default: "an object" for a
        dict, else the type's name).

    Returns
    -------
    tuple
        ``(data, None)`` when the file holds JSON of the expected type; ``(None, None)`` when
        there is no file; ``(None, problem)`` when it cannot be used, ``problem`` saying why in
        a few words that name the file (``"settings.json is not UTF-8 text"``). Never raises
        for the file's content or the file system.
    """
    path = Path(path)
    name = path.name
    try:
        if not path.exists() and not path.is_symlink():
            return None, None
        if path.is_dir():
            return None, f"{name} is a folder"
        if not path.exists():
            return None, f"{name} is a broken symbolic link"
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            return None, f"{name} is too large ({size / 1e6:.0f} MB)"
        raw = path.read_bytes()
    except OSError as exc:
        return None, f"{name} cannot be read ({exc.strerror or exc})"
    except ValueError:  # a NUL byte in the path
        return None, f"{name} is not a usable path"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, f"{name} is not UTF-8 text"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"{name} is not valid JSON ({exc.msg}, line {exc.lineno})"
    except RecursionError:
        return None, f"{name} nests lists or objects too deeply"
    if json_depth_exceeds(data):
        return None, f"{name} nests lists or objects too deeply"
    if expected is not object and (not isinstance(data, expected) or (
            isinstance(data, bool) and bool not in (
                expected if isinstance(expected, tuple) else (expected,)))):
        want = what or ("an object" if expected is dict else
                        getattr(expected, "__name__", str(expected)))
        return None, f"{name} holds {json_kind(data)}, not {want}"
    return data, None


def set_aside(path: str | Path) -> Path | None:
    """Rename a damaged file (or folder) aside to ``<name>.unreadable-<time>``, so that it is
    kept, never read again, and a fresh one can be written; ``None`` when there is nothing to
    move or it cannot be moved (e.g. a read-only workspace)."""
    import time as _time

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    stamp = _time.strftime("%Y%m%d-%H%M%S")
    for i in range(100):
        aside = path.with_name(f"{path.name}.unreadable-{stamp}" + (f"-{i + 1}" if i else ""))
        if not aside.exists() and not aside.is_symlink():
            break
    try:
        os.replace(path, aside)
    except OSError:
        return None
    return aside


# ----------------------------------------------------------------------------- notices
_NOTICES: dict[str, None] = {}
#: notices kept at most (a long-running server that never takes them keeps the newest)
MAX_NOTICES = 100


def note(message: str) -> None:
    """Remember a one-line notice for the user (a damaged helper file that was ignored, ...):
    the command line prints the notices on stderr, once each."""
    _NOTICES.setdefault(" ".join(str(message).split()), None)
    while len(_NOTICES) > MAX_NOTICES:
        del _NOTICES[next(iter(_NOTICES))]


def take_notices() -> list[str]:
    """The notices noted so far (each once), and forget them."""
    out = list(_NOTICES)
    _NOTICES.clear()
    return out


def damaged_notice(path: str | Path, problem: str, consequence: str, *,
                   rewritten: bool = True) -> str:
    """The one-line notice for a damaged helper file: which file, what is wrong with it, what
    the workbench does instead, and (``rewritten``: a file the workbench writes again) that
    it is kept aside when next written.

    ``problem`` is what :func:`read_json_checked` says (``"settings.json is not UTF-8
    text"``); ``consequence`` completes "it is ignored and ..." (``"the default run settings
    apply"``)."""
    path = Path(path)
    rest = problem.removeprefix(path.name + " ") if problem.startswith(path.name + " ") \
        else f"cannot be used: {problem}"
    kept = (f" (when the workbench next writes it, the damaged file is kept beside it as "
            f"{path.name}.unreadable- followed by the date and time)") if rewritten else ""
    return f"{path} {rest}; it is ignored and {consequence}{kept}"


def read_helper_json(path: str | Path, consequence: str, *, expected: type = dict,
                     what: str | None = None) -> Any:
    """A workspace helper file's content, or ``None`` when it is missing or damaged; a
    damaged one is ignored and said (:func:`note`) with ``consequence`` (what the workbench
    does instead, e.g. "the default run settings apply").

    Parameters
    ----------
    path
        The file (``settings.json``, ``trusted_models.json``, ...).
    consequence
        What happens instead, in words, completing "it is ignored and ...".
    expected, what
        See :func:`read_json_checked`.
    """
    data, problem = read_json_checked(path, expected, what)
    if problem is not None:
        note(damaged_notice(path, problem, consequence))
    return data


def set_aside_if_damaged(path: str | Path, expected: type = dict) -> Path | None:
    """Before a helper file is written anew: move a damaged one aside (:func:`set_aside`) so
    it is kept, not overwritten; returns where it went, ``None`` when it was sound or
    missing."""
    _data, problem = read_json_checked(path, expected)
    return set_aside(path) if problem is not None else None


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
        import errno as errno_mod

        from .errors import os_error_words

        where = Path(exc.filename) if exc.filename else (path or self.root)
        if exc.errno == errno_mod.ENOTDIR or exc.errno == errno_mod.EEXIST:
            blocker = next((p for p in [where, *where.parents]
                            if p.exists() and not p.is_dir()), where)
            return (f"the workspace cannot be made at {self.root}: {blocker} is a file, not a "
                    f"folder; move it away or set {ENV_VAR} to another folder")
        words = os_error_words(exc)
        what, todo = words if words else (_reason(exc), f"set {ENV_VAR} to a writable folder")
        if exc.errno in (errno_mod.EROFS, errno_mod.EACCES, errno_mod.EPERM):
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
            _discard(tmp)

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
        import fcntl

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
        import fcntl
        import time as _time

        digest = cached_sha256(path)
        with open(self.root / ".trust.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.trusted_hashes()
            set_aside_if_damaged(self.trust_file)
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
