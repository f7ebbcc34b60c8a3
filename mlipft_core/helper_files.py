"""Damaged workspace helper files (``state.json``, ``settings.json``, ``trusted_models.json``,
a saved E0 choice, ``queue/dispatcher.json``): ignored when read and said once, kept aside
when next written.

Reading a damaged file ignores it and says so in one line (:func:`read_helper_json`, with
:func:`~mlipft_core.file_io.read_json_checked` giving the reason and :func:`note` keeping
the line for the command line to print); the next write of that file first renames the
damaged one aside to ``<name>.unreadable-<time>`` (:func:`set_aside`), so it is kept and
never read again. Re-exported by :mod:`mlipft_core.workspace`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .file_io import read_json_checked


def set_aside(path: str | Path) -> Path | None:
    """Rename a damaged file (or folder) aside to ``<name>.unreadable-<time>``, so that it is
    kept, never read again, and a fresh one can be written; ``None`` when there is nothing to
    move or it cannot be moved (e.g. a read-only workspace)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
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
