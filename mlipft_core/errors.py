"""Typed exceptions of the workbench.

Every error a user can cause derives from :class:`MlipftError` and carries a one-line,
specific message that the pages show as a message and the command line prints before
exiting non-zero.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class MlipftError(Exception):
    """Base class of all errors caused by user input or the environment."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class UnknownModelError(MlipftError):
    """A model name is neither in the registry nor an existing file."""

    code = "unknown_model"


class ModelNotAvailableError(MlipftError):
    """An official model is not cached and could not be downloaded (e.g. offline)."""

    code = "model_not_available"

    def __init__(self, message: str, *, missing_file: str, url: str | None = None) -> None:
        super().__init__(message)
        self.missing_file = missing_file
        self.url = url


class UntrustedModelError(MlipftError):
    """A local model file (a pickle) was not confirmed as trusted."""

    code = "untrusted_model"


class ModelLoadError(MlipftError):
    """A file exists but is not a loadable MACE model."""

    code = "model_load_failed"


class DataError(MlipftError):
    """A dataset cannot be read or used (unreadable, empty, unknown keys, ...)."""

    code = "data_error"


class HeadError(MlipftError):
    """A requested model head does not exist."""

    code = "unknown_head"


class WorkspaceError(MlipftError):
    """The workspace (or a file the workbench must write) cannot be used: a read-only or full
    file system, a file where a folder belongs, a folder that does not exist."""

    code = "workspace_error"


class DeviceError(MlipftError):
    """A compute device was asked for that this machine does not have (``cuda`` without a
    GPU)."""

    code = "no_such_device"


#: what an operating-system error means, in words, and what to do about it
_OS_ERRORS: dict[str, tuple[str, str]] = {
    "EROFS": ("the file system is read-only",
              "use a writable folder (set MLIPFT_WORKSPACE to one for the workspace)"),
    "ENOSPC": ("the disk is full (no space left)", "free some space and try again"),
    "EDQUOT": ("the disk quota is used up", "free some space and try again"),
    "EACCES": ("permission denied", "use a folder you may write to, or change its permissions"),
    "EPERM": ("the operation is not permitted",
              "use a folder you may write to, or change its permissions"),
    "ENOTDIR": ("a part of the path is a file, not a folder",
                "move that file away or use another path"),
    "EEXIST": ("a file is in the way where a folder belongs",
               "move that file away or use another path"),
    "ENOENT": ("the file or folder does not exist", "check the path (create the folder first)"),
    "EISDIR": ("it is a folder, not a file", "give the path of a file"),
    "ENAMETOOLONG": ("the name is too long", "use a shorter path"),
    "EMFILE": ("too many files are open", "close other programs and try again"),
    "ENFILE": ("too many files are open", "close other programs and try again"),
    "EIO": ("the disk reported an input/output error", "check the disk"),
    "ELOOP": ("the path loops through symbolic links", "fix the links"),
}


def os_error_words(exc: OSError) -> tuple[str, str] | None:
    """What an operating-system error means and what to do, in words; ``None`` for an
    error number without words here.

    Parameters
    ----------
    exc
        The error (its ``errno`` decides).

    Returns
    -------
    tuple of str or None
        ``(what is wrong, what to do)``.
    """
    name = errno.errorcode.get(exc.errno or -1)
    return _OS_ERRORS.get(name) if name else None


def os_error_message(exc: OSError, doing: str | None = None) -> str:
    """A one-line message for an operating-system error: the path it concerns, what is wrong
    and what to do, without the exception's class name.

    Parameters
    ----------
    exc
        The error; ``exc.filename`` (and ``exc.filename2``) name the path when known.
    doing
        What was being done, e.g. ``"write the run settings"``; default from the path.

    Returns
    -------
    str
        E.g. ``"cannot write /ws/settings.json: the file system is read-only; use a writable
        folder (set MLIPFT_WORKSPACE to one for the workspace)"``.
    """
    path = exc.filename
    words = os_error_words(exc)
    what, todo = words if words else (str(exc.strerror or exc).strip() or "it failed", "")
    tail = f": {what}" + (f"; {todo}" if todo else "")
    if doing is not None:
        return f"cannot {doing}" + (f" ({path})" if path is not None else "") + tail
    if exc.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT):
        return f"cannot write {path if path is not None else 'a file'}" + tail
    return (f"{path}" if path is not None else "a file operation failed") + tail


def model_write_message(root: Path) -> str:
    """What to say when torch could not write a model file in the workspace ``root``."""
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        free = None
    if free is not None and free < 64 * 1024 * 1024:
        return (f"cannot write a model file in {root}: the disk is full "
                f"({free / 1e6:.1f} MB free); free some space and try again")
    return (f"cannot write a model file in {root}: the file system refused "
            "the write (full, read-only or no permission); free some space or set "
            "MLIPFT_WORKSPACE to a writable folder")
