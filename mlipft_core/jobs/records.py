"""The run registry: one folder per run in the workspace, its ``run.json`` the single truth.

States: ``queued`` → ``running`` → ``done`` | ``failed`` | ``cancelled``. Every change is a
read-modify-write under the run's exclusive file lock and an atomic rename, so concurrent
writers (the page, the command line, the runner process, a SLURM job) never leave a
half-written record, and a state changes only from the states it may change from: a run is
*claimed* (``queued`` → ``running``) by exactly one runner, before its training starts.

Reading is free of side effects. A folder whose ``run.json`` cannot be read (not JSON, not an
object, a missing or mistyped field) is listed with status ``unreadable`` and the reason; every
other run still works. Run ids and names are checked, so nothing is read or written outside
the ``runs/`` folder.
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
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import MlipftError
from ..workspace import (MAX_JSON_BYTES, Workspace, atomic_write_json, json_depth_exceeds,
                         json_kind)

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")
ACTIVE = ("queued", "running")
UNREADABLE = "unreadable"
EXECUTORS = ("local", "slurm")

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,119}$")


class RunNotFoundError(MlipftError):
    code = "unknown_run"


class InvalidRunNameError(MlipftError):
    """A run id or name that could reach outside the run's folder, or has odd characters."""

    code = "bad_run_name"


class UnreadableRunError(MlipftError):
    """A run folder whose ``run.json`` cannot be read as a run record."""

    code = "unreadable_run"


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


@dataclass
class RunRecord:
    """What the registry keeps about one run."""

    id: str
    name: str
    strategy: str
    status: str = "queued"
    device: str = "cpu"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    pid: int | None = None            # the runner process (claims, watches, records the end)
    pid_started: float | None = None  # its start time (psutil), so a reused pid never counts
    host: str | None = None           # where the runner runs
    returncode: int | None = None
    reason: str | None = None
    log_tail: str | None = None
    model_path: str | None = None
    max_epochs: int | None = None
    threads: int | None = None
    gpu: str | None = None            # CUDA_VISIBLE_DEVICES given to the run
    spec: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    sweep: str | None = None
    kind: str = "train"               # "train" (mace_run_train) or "md"
    executor: str = "local"           # "local" or "slurm"
    executor_options: dict[str, Any] = field(default_factory=dict)
    slurm_job_id: str | None = None
    time_limit_s: float | None = None  # the run is stopped (failed) after this wall time
    participant: str | None = None     # workshop participant who owns the run
    extra: dict[str, Any] = field(default_factory=dict)  # fields of a newer version, kept

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        return {**extra, **d}

    @property
    def readable(self) -> bool:
        return self.status != UNREADABLE


_FIELDS = {f.name: f for f in dataclasses.fields(RunRecord)}
_REQUIRED = [n for n, f in _FIELDS.items()
             if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,), "name": (str,), "strategy": (str,), "status": (str,), "device": (str,),
    "created": (int, float), "started": (int, float, type(None)),
    "finished": (int, float, type(None)), "pid": (int, type(None)),
    "pid_started": (int, float, type(None)), "host": (str, type(None)),
    "returncode": (int, type(None)), "reason": (str, type(None)),
    "log_tail": (str, type(None)), "model_path": (str, type(None)),
    "max_epochs": (int, type(None)), "threads": (int, type(None)), "gpu": (str, type(None)),
    "spec": (dict,), "metrics": (dict,), "sweep": (str, type(None)), "kind": (str,),
    "executor": (str,), "executor_options": (dict,), "slurm_job_id": (str, type(None)),
    "time_limit_s": (int, float, type(None)), "participant": (str, type(None)),
}


_NONE = type(None)
_NUMBER = (int, float)
_PATH = (str, _NONE)
#: the parts of ``spec`` the workbench reads, and the types it reads them as (other keys, of
#: a newer version, are kept as they are)
_SPEC_TYPES: dict[str, tuple[type, ...]] = {
    "strategy": (str,), "name": (str,), "foundation_model": _PATH, "train_file": _PATH,
    "valid_file": _PATH, "test_file": _PATH, "replay_file": _PATH, "isolated_file": _PATH,
    "mace_train_file": _PATH, "e0s": (str, dict, _NONE), "settings": (dict,),
    "tuning": (dict, _NONE), "e0_values": (dict,), "warnings": (list,),
    "train_size": (int, _NONE), "isolated_atoms_left_out": (dict,),
    # MD runs
    "model": _PATH, "structure": _PATH, "head": _PATH, "index": (int,),
}
_METRIC_TYPES: dict[str, tuple[type, ...]] = {
    "epochs_done": (int, _NONE), "valid": (dict, _NONE), "survived_steps": (int, _NONE),
    "steps": (int, _NONE), "failure": (str, _NONE), "steps_per_second": (*_NUMBER, _NONE),
}
_EXECUTOR_OPTION_TYPES: dict[str, tuple[type, ...]] = {"log": _PATH}


def _mistyped(value: Any, types: tuple[type, ...]) -> bool:
    """Whether ``value`` is not of ``types`` (``True``/``False`` are not numbers here)."""
    return not isinstance(value, types) or (isinstance(value, bool) and bool not in types)


def _check_part(data: dict[str, Any], field_name: str, types: dict[str, tuple[type, ...]]
                ) -> None:
    """:class:`UnreadableRunError` when a known key of the ``field_name`` part of a record
    has a type the workbench cannot read."""
    for key, want in types.items():
        if key in data and _mistyped(data[key], want):
            raise UnreadableRunError(f"run.json field '{field_name}.{key}' is "
                                     f"{json_kind(data[key])}")


def _check_shape(known: dict[str, Any]) -> None:
    """The parts of a record below its top level: what the listing, the pages and the
    runner read from ``spec``, ``metrics`` and ``executor_options`` must have the types
    they are read as, so that one damaged record cannot break them for every run."""
    spec = known.get("spec", {})
    _check_part(spec, "spec", _SPEC_TYPES)
    if any(not isinstance(w, str) for w in spec.get("warnings", [])):
        raise UnreadableRunError("run.json field 'spec.warnings' holds something other "
                                 "than text")
    for key in ("settings", "e0_values", "tuning", "isolated_atoms_left_out"):
        if isinstance(spec.get(key), dict) and any(not isinstance(k, str) for k in spec[key]):
            raise UnreadableRunError(f"run.json field 'spec.{key}' has a key that is not text")
    bad = [k for k, v in spec.get("e0_values", {}).items() if _mistyped(v, _NUMBER)]
    if bad:
        raise UnreadableRunError(f"run.json field 'spec.e0_values' gives no number for "
                                 f"{', '.join(map(str, bad[:5]))}")
    if known.get("kind") == "md" and "settings" in spec:
        from dataclasses import fields as dc_fields

        from ..md import MDSettings

        names = {f.name for f in dc_fields(MDSettings)}
        odd = sorted(k for k, v in spec["settings"].items()
                     if k not in names or _mistyped(v, (*_NUMBER, str)))
        if odd:
            raise UnreadableRunError(f"run.json field 'spec.settings' has MD settings the "
                                     f"workbench cannot use: {', '.join(odd[:5])}")
    _check_part(known.get("metrics", {}), "metrics", _METRIC_TYPES)
    _check_part(known.get("executor_options", {}), "executor_options",
                _EXECUTOR_OPTION_TYPES)


def record_from_dict(data: Any, folder_name: str) -> RunRecord:
    """A :class:`RunRecord` from parsed JSON, or :class:`UnreadableRunError` saying why.

    Besides the top-level fields, the parts of ``spec``, ``metrics`` and
    ``executor_options`` that the workbench reads are checked (:func:`_check_shape`), and
    nesting deeper than any record of the workbench is refused."""
    if not isinstance(data, dict):
        raise UnreadableRunError(f"run.json holds a {type(data).__name__}, not a run record")
    if json_depth_exceeds(data):
        raise UnreadableRunError("run.json nests lists or objects too deeply to be a run "
                                 "record")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise UnreadableRunError(f"run.json lacks the field(s) {', '.join(missing)}")
    known = {}
    extra = {}
    for k, v in data.items():
        if k in _FIELDS and k != "extra":
            types = _TYPES.get(k)
            if types and (not isinstance(v, types) or isinstance(v, bool) and bool not in types):
                raise UnreadableRunError(f"run.json field {k!r} is a {type(v).__name__}")
            known[k] = v
        else:
            extra[str(k)] = v
    if known["id"] != folder_name:
        raise UnreadableRunError(f"run.json names the run {known['id']!r}, but its folder is "
                                 f"{folder_name!r}")
    if known.get("status", "queued") not in STATES:
        raise UnreadableRunError(f"run.json has the unknown status {known['status']!r}")
    if known.get("executor", "local") not in EXECUTORS:
        raise UnreadableRunError(f"run.json has the unknown executor {known['executor']!r}")
    _check_shape(known)
    return RunRecord(**known, extra=extra)


def _read_file(path: Path) -> Any:
    try:
        size = Path(path).stat().st_size
        if size > MAX_JSON_BYTES:
            raise UnreadableRunError(f"run.json is too large to be a run record "
                                     f"({size / 1e6:.0f} MB)")
        text = Path(path).read_bytes().decode("utf-8")
    except IsADirectoryError:
        raise UnreadableRunError("run.json is a folder") from None
    except UnicodeDecodeError:
        raise UnreadableRunError("run.json is not UTF-8 text") from None
    except OSError as exc:
        raise UnreadableRunError(f"run.json cannot be read ({exc.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnreadableRunError(f"run.json is not valid JSON ({exc.msg}, line {exc.lineno})"
                                 ) from None
    except RecursionError:
        raise UnreadableRunError("run.json nests lists or objects too deeply to be a run "
                                 "record") from None


def unreadable_record(folder: Path, reason: str) -> RunRecord:
    """The placeholder listed for a run folder that cannot be read."""
    try:
        created = folder.stat().st_mtime
    except OSError:
        created = 0.0
    return RunRecord(id=folder.name, name=folder.name, strategy="?", status=UNREADABLE,
                     created=created, reason=reason, kind="unknown")


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
            return record_from_dict(_read_file(path), folder.name)
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
