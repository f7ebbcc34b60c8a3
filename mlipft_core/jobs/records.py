"""The run registry: one folder per run in the workspace, one atomic ``run.json`` each.

States: ``queued`` → ``running`` → ``done`` | ``failed`` | ``cancelled``. Every update is a
read-modify-write under an exclusive file lock and an atomic rename, so concurrent writers
(the page, the command line, the queue's workers) never leave a half-written record.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import MlipftError
from ..workspace import Workspace, atomic_write_json, read_json

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")


class RunNotFoundError(MlipftError):
    code = "unknown_run"


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
    pid: int | None = None
    returncode: int | None = None
    reason: str | None = None
    log_tail: str | None = None
    model_path: str | None = None
    max_epochs: int | None = None
    threads: int | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    sweep: str | None = None
    worker_pid: int | None = None   # the queue consumer that watches the run
    kind: str = "train"             # "train" (mace_run_train) or "md"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunStore:
    """The ``runs/`` folder of a workspace."""

    def __init__(self, workspace: Workspace | None = None) -> None:
        self.workspace = workspace or Workspace()
        self.root = self.workspace.runs

    def folder(self, run_id: str) -> Path:
        return self.root / run_id

    def new_id(self, strategy: str) -> str:
        return f"{time.strftime('%Y%m%d-%H%M%S')}-{strategy}-{uuid.uuid4().hex[:6]}"

    @contextmanager
    def _locked(self, run_id: str) -> Iterator[None]:
        folder = self.folder(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def create(self, record: RunRecord) -> RunRecord:
        with self._locked(record.id):
            atomic_write_json(self.folder(record.id) / "run.json", record.to_dict())
        return record

    def get(self, run_id: str) -> RunRecord:
        data = read_json(self.folder(run_id) / "run.json")
        if data is None:
            raise RunNotFoundError(f"no run {run_id!r} in {self.root}")
        return RunRecord(**data)

    def update(self, run_id: str, **changes: Any) -> RunRecord:
        with self._locked(run_id):
            rec = self.get(run_id)
            for k, v in changes.items():
                setattr(rec, k, v)
            atomic_write_json(self.folder(run_id) / "run.json", rec.to_dict())
        return rec

    def transition(self, run_id: str, allowed_from: tuple[str, ...], **changes: Any
                   ) -> RunRecord | None:
        """Update only when the current status is in ``allowed_from``; else ``None``."""
        with self._locked(run_id):
            rec = self.get(run_id)
            if rec.status not in allowed_from:
                return None
            for k, v in changes.items():
                setattr(rec, k, v)
            atomic_write_json(self.folder(run_id) / "run.json", rec.to_dict())
        return rec

    def list(self) -> list[RunRecord]:
        out = []
        for p in sorted(self.root.glob("*/run.json")):
            data = read_json(p)
            if data:
                out.append(RunRecord(**data))
        return sorted(out, key=lambda r: r.created)

    def delete(self, run_id: str) -> None:
        rec = self.get(run_id)
        if rec.status not in FINAL:
            raise MlipftError(f"run {run_id} is {rec.status}: cancel it before deleting")
        shutil.rmtree(self.folder(run_id))


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    keep = [ln for ln in text if "Warning" not in ln and "warn(" not in ln]
    return "\n".join(keep[-lines:])
