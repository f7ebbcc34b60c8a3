"""The content hashes of the model files a run used, kept in its folder (``models.json``).

A run records the SHA-256 of its foundation model when it is queued and of the model it
trained when it ends. Whoever later loads one of those files through the run (the Compare
page, ``mlipft compare RUN_ID``) checks the hash first: a file that was replaced after the run
used it (for instance by another pickle under the same name) is refused with that reason and
never loaded, since loading a model file runs the code it carries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MlipftError
from ..workspace import atomic_write_json, cached_sha256, read_json

FILE = "models.json"


class ModelChangedError(MlipftError):
    """A model file a run used has another content than the run recorded."""

    code = "model_changed"


def _entries(folder: Path) -> dict[str, dict[str, Any]]:
    raw = read_json(Path(folder) / FILE, {})
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, dict)
            and isinstance(v.get("path"), str) and isinstance(v.get("sha256"), str)}


def record(folder: str | Path, role: str, path: str | Path | None) -> None:
    """Record the content hash of the model file ``path`` the run in ``folder`` used as
    ``role`` ("foundation_model", "model"); a registry name or a missing file is skipped."""
    if not path:
        return
    p = Path(path)
    if not p.is_file():
        return
    entries = _entries(Path(folder))
    entries[role] = {"path": str(p.resolve()), "sha256": cached_sha256(p)}
    atomic_write_json(Path(folder) / FILE, entries)


def recorded(folder: str | Path) -> dict[str, dict[str, Any]]:
    """What ``models.json`` holds: ``{role: {"path", "sha256"}}`` (empty for older runs)."""
    return _entries(Path(folder))


def check(folder: str | Path, role: str, path: str | Path, what: str) -> None:
    """Refuse ``path`` as the run's ``role`` ("foundation_model", "model") unless its content
    is the one the run in ``folder`` recorded for that role.

    The check goes by role, not by path: a file reached through a symbolic link, a path
    edited in ``run.json`` or a moved workspace is checked all the same. A missing file
    passes (the caller says it is missing).

    Raises
    ------
    ModelChangedError
        The file's SHA-256 differs from the recorded one, or the run recorded none for that
        role (``models.json`` missing or damaged); the message names the file and the run.
    """
    p = Path(path).resolve()
    if not p.is_file():
        return
    entry = _entries(Path(folder)).get(role)
    run = Path(folder).name
    if entry is None:
        raise ModelChangedError(
            f"{what} {p} is not loaded: the run {run} holds no record of its content "
            f"({FILE} is missing or damaged), so it cannot be told apart from a replaced "
            "file; compare the file by its path instead")
    if cached_sha256(p) != entry["sha256"]:
        raise ModelChangedError(
            f"{what} {p} was changed after the run in {run} used it (its content no longer "
            "matches the hash the run recorded), so it is not loaded; restore the original "
            "file or compare the new file by its path")
