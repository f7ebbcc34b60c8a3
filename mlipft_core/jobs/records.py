"""The run registry: one folder per run in the workspace, its ``run.json`` the single truth.

States: ``queued`` → ``running`` → ``done`` | ``failed`` | ``cancelled``. Every change is a
read-modify-write under the run's exclusive file lock and an atomic rename, so concurrent
writers (the page, the command line, the runner process, a SLURM job) never leave a
half-written record, and a state changes only from the states it may change from: a run is
*claimed* (``queued`` → ``running``) by exactly one runner, before its training starts.

Reading is free of side effects. A folder whose ``run.json`` cannot be read (not JSON, not an
object, a missing or mistyped field: :mod:`.run_record`) is listed with status ``unreadable``
and the reason; every other run still works. Run ids and names are checked, so nothing is read
or written outside the ``runs/`` folder.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MlipftError
from ..workspace import Workspace, atomic_write_json
from .run_record import (
    ACTIVE,
    EXECUTORS,
    FINAL,
    STATES,
    UNREADABLE,
    RunRecord,
    UnreadableRunError,
    read_run_json,
    record_from_dict,
    unreadable_record,
)

__all__ = ["ACTIVE", "E0_METHODS", "EXECUTORS", "FINAL", "PILOT_SWEEP_PREFIX", "STATES",
           "UNREADABLE", "InvalidRunNameError", "RunFacts", "RunNotFoundError", "RunRecord",
           "RunStore", "UnreadableRunError", "check_name", "current_process_identity",
           "e0_choice_id", "e0_method", "is_pilot", "log_tail", "process_start_time",
           "record_from_dict", "run_facts", "runner_alive", "same_process_alive",
           "this_host", "unreadable_record"]

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,119}$")


class RunNotFoundError(MlipftError):
    code = "unknown_run"


class InvalidRunNameError(MlipftError):
    """A run id or name that could reach outside the run's folder, or has odd characters."""

    code = "bad_run_name"


def check_name(value: str, what: str = "run name") -> str:
    """``value`` if it is a safe file-name component, else :class:`InvalidRunNameError`.

    Allowed: letters, digits, ``.``, ``_``, ``+`` and ``-``, starting with a letter or digit,
    at most 120 characters, and no ``..``.
    """
    if not isinstance(value, str) or not _ID_RE.match(value) or ".." in value:
        raise InvalidRunNameError(
            f"{what} {value!r} is not allowed: use letters, digits, '.', '_', '+' and '-' "
            "(starting with a letter or digit, no '..', at most 120 characters)")
    return value


#: what a program's last words look like when the disk was full (Python, torch's writer)
_DISK_FULL_WORDS = ("No space left", "Disk quota exceeded", "PytorchStreamWriter failed",
                    "enforce fail at inline_cont", "file write failed")
#: a disk with less room than this counts as full when a run has failed on it
_FULL_BELOW_BYTES = 1 << 20


def _disk_is_full(folder: Path, reason: str | None) -> bool:
    """Whether a run that failed did so (most likely) because the disk of its folder is full:
    its reason quotes a full disk, or the disk has (almost) no room left."""
    if reason and any(w in reason for w in _DISK_FULL_WORDS):
        return True
    try:
        return shutil.disk_usage(folder).free < _FULL_BELOW_BYTES
    except OSError:
        return False


def _disk_full_record(rec: RunRecord, folder: Path) -> RunRecord:
    """``rec`` as recorded when its disk is full: a failure says so first. A reason that only
    quotes the full disk (a program's error line) is replaced; any other is kept after it."""
    if rec.status != "failed" or "disk holding the run folder" in (rec.reason or ""):
        return rec
    why = (f"the disk holding the run folder {folder} is full (no space left): free some "
           "space and start the run again")
    before = (rec.reason or "").strip()
    if before and not any(w in before for w in _DISK_FULL_WORDS):
        why += f"; before that: {before}"
    return dataclasses.replace(rec, reason=why)


def _write_in_place(path: Path, rec: RunRecord, exc: OSError) -> None:
    """Overwrite ``path`` with the record where no new file fits (a full disk): compact JSON
    in the space the old file already holds; the log tail, then the metrics, are left out
    when the record would not fit. Not atomic, so only the last resort."""
    try:
        st = path.stat()
    except OSError:
        raise exc from None
    room = max(st.st_size, st.st_blocks * 512)
    d = rec.to_dict()
    for drop in ((), ("log_tail",), ("log_tail", "metrics")):
        small = {k: (None if k == "log_tail" else {}) if k in drop else v for k, v in d.items()}
        data = json.dumps(small, sort_keys=True, separators=(",", ":"), default=str).encode()
        if len(data) <= room:
            break
    else:
        raise exc
    with open(path, "r+b") as fh:
        fh.seek(0)
        fh.write(data)
        fh.truncate(len(data))
        fh.flush()
        os.fsync(fh.fileno())


class RunStore:
    """The ``runs/`` folder of a workspace."""

    def __init__(self, workspace: Workspace | None = None) -> None:
        self.workspace = workspace or Workspace()
        self.root = self.workspace.runs

    def folder(self, run_id: str) -> Path:
        """The folder of a run; the id is checked so that it stays inside ``runs/``."""
        check_name(run_id, "run id")
        folder = self.root / run_id
        if folder.resolve().parent != self.root.resolve():
            raise InvalidRunNameError(f"run id {run_id!r} does not name a folder in "
                                      f"{self.root}")
        return folder

    def new_id(self, strategy: str) -> str:
        check_name(strategy, "strategy")
        return f"{time.strftime('%Y%m%d-%H%M%S')}-{strategy}-{uuid.uuid4().hex[:6]}"

    def reserve(self, kind: str, names: dict[str, str | None] | None = None
                ) -> tuple[str, Path]:
        """A new run's id and folder (not created yet), after checking the names it will
        carry (``{"run name": ..., "sweep name": ...}``; ``None`` values are skipped).

        Raises
        ------
        InvalidRunNameError
            A name that could not name a folder or a SLURM job.
        """
        for what, value in (names or {}).items():
            if value is not None:
                check_name(value, what)
        run_id = self.new_id(kind)
        return run_id, self.folder(run_id)

    @contextmanager
    def locked(self, run_id: str) -> Iterator[None]:
        """Hold the run's exclusive lock (the folder must exist)."""
        folder = self.folder(run_id)
        if not folder.is_dir():
            raise RunNotFoundError(f"no run {run_id!r} in {self.root}")
        with open(folder / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def create(self, record: RunRecord) -> RunRecord:
        folder = self.folder(record.id)
        folder.mkdir(parents=True, exist_ok=True)
        with self.locked(record.id):
            atomic_write_json(folder / "run.json", record.to_dict())
        return record

    def read(self, run_id: str) -> RunRecord:
        """The run's record; :class:`RunNotFoundError` or :class:`UnreadableRunError`."""
        folder = self.folder(run_id)
        path = folder / "run.json"
        if not folder.is_dir() or not (path.exists() or path.is_symlink()):
            raise RunNotFoundError(f"no run {run_id!r} in {self.root}")
        try:
            return record_from_dict(read_run_json(path), folder.name)
        except UnreadableRunError as exc:
            raise UnreadableRunError(f"run {run_id}: {exc}") from None

    get = read

    def _write(self, rec: RunRecord) -> None:
        """Write the record (atomically). A failure caused by a full disk says so in words
        (:func:`_disk_full_record`); where no new file fits, the record is written over the
        old one in place, as much of it as fits in the space the old one holds: the end of a
        run is recorded even when the disk it filled has no room left."""
        path = self.folder(rec.id) / "run.json"
        if rec.status == "failed" and _disk_is_full(path.parent, rec.reason):
            rec = _disk_full_record(rec, path.parent)
        try:
            atomic_write_json(path, rec.to_dict())
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            _write_in_place(path, _disk_full_record(rec, path.parent), exc)

    def update(self, run_id: str, **changes: Any) -> RunRecord:
        with self.locked(run_id):
            rec = self.read(run_id)
            for k, v in changes.items():
                setattr(rec, k, v)
            self._write(rec)
        return rec

    def transition(self, run_id: str, allowed_from: tuple[str, ...], **changes: Any
                   ) -> RunRecord | None:
        """Update only when the current status is in ``allowed_from``; else ``None``."""
        with self.locked(run_id):
            rec = self.read(run_id)
            if rec.status not in allowed_from:
                return None
            for k, v in changes.items():
                setattr(rec, k, v)
            self._write(rec)
        return rec

    def list(self) -> list[RunRecord]:
        """Every run folder's record, oldest first; unreadable ones as placeholders."""
        out = []
        try:
            folders = list(self.root.iterdir()) if self.root.is_dir() else []
        except OSError:
            return out
        for folder in folders:
            try:
                if not folder.is_dir() or folder.name.startswith("."):
                    continue
                if not _ID_RE.match(folder.name) or ".." in folder.name:
                    continue
                run_json = folder / "run.json"
                if not run_json.exists() and not run_json.is_symlink():
                    continue  # a run being created (its folder comes first), or not a run
                out.append(self.read(folder.name))
            except UnreadableRunError as exc:
                out.append(unreadable_record(folder, str(exc).split(": ", 1)[-1]))
            except RunNotFoundError:
                continue
            except OSError as exc:
                out.append(unreadable_record(folder, f"the run folder cannot be read "
                                                     f"({exc.strerror or exc})"))
        return sorted(out, key=lambda r: (r.created, r.id))

    def delete(self, run_id: str) -> None:
        folder = self.folder(run_id)
        try:
            rec = self.read(run_id)
        except UnreadableRunError:
            shutil.rmtree(folder)  # an unreadable folder can always be removed
            return
        if rec.status not in FINAL:
            raise MlipftError(f"run {run_id} is {rec.status}: cancel it before deleting")
        shutil.rmtree(folder)


# ----------------------------------------------------------------------------- facts
#: A learning-rate pilot's sweep is named ``tune-<strategy>-<time>-<hex>``
#: (:func:`mlipft_core.tune.submit_pilot`, also for the study's pilots).
PILOT_SWEEP_PREFIX = "tune-"
#: E0 methods a run's ``e0s`` can name (a saved choice's id is ``<method>-<hash>``).
E0_METHODS = ("foundation", "average", "estimated", "isolated", "explicit")


def is_pilot(rec: RunRecord) -> bool:
    """Whether ``rec`` is one learning rate of a learning-rate pilot: a short run at one
    point of a grid, there to choose the learning rate, not a result to compare."""
    return bool(rec.sweep) and str(rec.sweep).startswith(f"{PILOT_SWEEP_PREFIX}{rec.strategy}-")


def e0_method(value: Any) -> str | None:
    """The E0 method a run's ``e0s`` names.

    Parameters
    ----------
    value
        ``spec["e0s"]`` of a run: a method name, a saved choice id (``estimated-1464c5511a``),
        explicit values (a dict or its text) or a file of them.

    Returns
    -------
    str or None
        One of :data:`E0_METHODS` (``explicit`` for values or a file), ``None`` when unset.
    """
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return "explicit"
    text = str(value).strip()
    if text in E0_METHODS:
        return text
    method, _, rest = text.partition("-")
    if method in E0_METHODS and re.fullmatch(r"[0-9a-f]{6,64}", rest):
        return method
    return "explicit"


def e0_choice_id(value: Any) -> str | None:
    """The saved E0 choice a run's ``e0s`` names (``estimated-1464c5511a``), else ``None``."""
    text = str(value).strip() if isinstance(value, str) else ""
    method, _, rest = text.partition("-")
    return text if method in E0_METHODS and re.fullmatch(r"[0-9a-f]{6,64}", rest) else None


@dataclass(frozen=True)
class RunFacts:
    """What tells a run apart from its siblings, read from its record.

    ``lr`` and ``seed`` are the settings it trained with; ``train_size`` is set for runs of a
    training-set-size sweep (``None``: the whole training set); ``foundation`` is the path of
    the foundation model it started from; ``pilot``: see :func:`is_pilot`.
    """

    id: str
    strategy: str
    status: str
    created: float
    lr: float | None = None
    seed: int | None = None
    train_size: int | None = None
    epochs: int | None = None
    e0_method: str | None = None
    e0_choice: str | None = None
    foundation: str | None = None
    pilot: bool = False
    participant: str | None = None


def run_facts(rec: RunRecord) -> RunFacts:
    """The :class:`RunFacts` of a run (tolerant of records of older versions)."""
    spec = rec.spec if isinstance(rec.spec, dict) else {}
    settings = spec.get("settings") if isinstance(spec.get("settings"), dict) else {}

    def number(v: Any, kind: type) -> Any:
        try:
            return None if v is None or isinstance(v, bool) else kind(v)
        except (TypeError, ValueError):
            return None

    return RunFacts(id=rec.id, strategy=rec.strategy, status=rec.status,
                    created=float(rec.created or 0.0), lr=number(settings.get("lr"), float),
                    seed=number(settings.get("seed"), int),
                    train_size=number(spec.get("train_size"), int),
                    epochs=rec.max_epochs if rec.max_epochs is not None
                    else number(settings.get("max_num_epochs"), int),
                    e0_method=e0_method(spec.get("e0s")), e0_choice=e0_choice_id(spec.get("e0s")),
                    foundation=spec.get("foundation_model") if isinstance(
                        spec.get("foundation_model"), str) else None,
                    pilot=is_pilot(rec), participant=rec.participant)


# ----------------------------------------------------------------------------- processes
def this_host() -> str:
    return socket.gethostname()


def process_start_time(pid: int) -> float | None:
    """The start time of a process (seconds since the epoch), or ``None`` when it is gone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, ValueError):
        return None


def same_process_alive(pid: int | None, started: float | None) -> bool:
    """Whether ``pid`` still is the process that started at ``started``.

    A pid alone is not enough: after a process ends, the system may give its number to an
    unrelated program. Without a recorded start time the process is not taken for alive.
    """
    if not pid or started is None:
        return False
    now = process_start_time(int(pid))
    return now is not None and abs(now - float(started)) < 1.0


def runner_alive(rec: RunRecord) -> bool | None:
    """Whether the run's runner process lives: ``None`` when it runs on another host."""
    if rec.host and rec.host != this_host():
        return None
    return same_process_alive(rec.pid, rec.pid_started)


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    keep = [ln for ln in text if "Warning" not in ln and "warn(" not in ln]
    return "\n".join(keep[-lines:])


def current_process_identity() -> tuple[int, float, str]:
    """(pid, start time, host) of the calling process."""
    pid = os.getpid()
    return pid, process_start_time(pid) or time.time(), this_host()
