"""Files written safely and read strictly: atomic writes, JSON without NaN, JSON read with
its damage named, and content hashes.

All writes are atomic (write to a temporary file, then rename), so a crash never leaves a
half-written file. Re-exported by :mod:`mlipft_core.workspace`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


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
        discard_temp(tmp)
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        discard_temp(tmp)
        raise
    return path


def discard_temp(tmp: str | None) -> None:
    """Remove a temporary file left by a failed write (quietly: the disk may be gone)."""
    if tmp is not None:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) replaced by ``None`` (JSON null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    # a numpy value can exist only once numpy is imported: not imported here, so that the
    # run path and ``mlipft --help`` never load it
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(value, np.generic):
            return strict_json(value.item())
        if isinstance(value, np.ndarray):
            return strict_json(value.tolist())
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
