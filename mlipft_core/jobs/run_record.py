"""A run's record as its ``run.json`` holds it: the fields, the states, and the tolerant reading.

A record is read field by field against the types the workbench reads it as (the top level,
and the parts of ``spec``, ``metrics`` and ``executor_options`` the pages and the runner use):
a file that is not a run record, or one damaged field, gives :class:`UnreadableRunError`
saying why, and the folder is listed as ``unreadable`` (:func:`unreadable_record`) while
every other run still works. Fields of a newer version are kept as they are (``extra``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MlipftError
from ..workspace import MAX_JSON_BYTES, json_depth_exceeds, json_kind

#: Every state of a run, in the order a run goes through them.
STATES = ("queued", "running", "done", "failed", "cancelled")
#: The states a run ends in.
FINAL = ("done", "failed", "cancelled")
#: The states of a run that is going (waiting for a slot, or running).
ACTIVE = ("queued", "running")
#: The status listed for a folder whose ``run.json`` cannot be read.
UNREADABLE = "unreadable"
EXECUTORS = ("local", "slurm")


class UnreadableRunError(MlipftError):
    """A run folder whose ``run.json`` cannot be read as a run record."""

    code = "unreadable_run"


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
    participant: str | None = None     # who owns the run (its submission policy's owner)
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


def read_run_json(path: Path) -> Any:
    """The parsed content of a ``run.json``, or :class:`UnreadableRunError` saying why it
    cannot be read (too large, a folder, not UTF-8, not JSON)."""
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
