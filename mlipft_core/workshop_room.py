"""A workshop's room: its configuration (``workshop.json``), participants, tokens and limits.

:mod:`mlipft_core.workshop` says what a workshop is and holds its run rules; the instructor's
board lives in :mod:`mlipft_core.workshop_board`. Everything here is re-exported by
:mod:`mlipft_core.workshop`, the name to import.
"""

from __future__ import annotations

import hmac
import math
import re
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .demo import sample_data_dir
from .errors import MlipftError
from .jobs import save_settings
from .workspace import Workspace, atomic_write_json, read_json_checked

FILE = "workshop.json"
INSTRUCTOR = "instructor"   # the instructor's own space: participants/instructor
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class WorkshopError(MlipftError):
    code = "workshop_error"


class AccessError(MlipftError):
    """A path or run that belongs to someone else, or lies outside the allowed folders."""

    code = "access_denied"


@dataclass
class Limits:
    """What the instructor allows each participant."""

    max_active_runs: int = 4          # queued + running, per participant
    max_epochs: int | None = 50       # per run (None: no cap)
    max_run_minutes: float | None = 30.0  # wall time per run (None: no cap)
    upload_limit_mb: float = 50.0

    def check(self) -> Limits:
        if not isinstance(self.max_active_runs, int) or self.max_active_runs < 1:
            raise WorkshopError("the run limit per participant must be at least 1")
        if self.max_epochs is not None and (not isinstance(self.max_epochs, int)
                                            or self.max_epochs < 1):
            raise WorkshopError("the epoch cap must be at least 1")
        if self.max_run_minutes is not None and not (
                isinstance(self.max_run_minutes, (int, float)) and
                math.isfinite(self.max_run_minutes) and self.max_run_minutes > 0):
            raise WorkshopError("the run-time cap must be a positive number of minutes")
        if not (isinstance(self.upload_limit_mb, (int, float)) and self.upload_limit_mb > 0):
            raise WorkshopError("the upload limit must be a positive number of MB")
        return self


@dataclass
class Participant:
    name: str
    token: str


@dataclass
class Workshop:
    """A workshop's configuration (``workshop.json``)."""

    root: Path
    name: str
    instructor_token: str
    participants: list[Participant]
    limits: Limits = field(default_factory=Limits)
    executor: str = "local"
    slurm: dict[str, Any] = field(default_factory=dict)
    base_url: str = "http://localhost:8501"
    target_test: str | None = None     # for the board's comparison (default: demo SN2 test)
    pretrain_test: str | None = None   # for forgetting (default: demo pretraining test)
    created: float = field(default_factory=time.time)

    # -- places --------------------------------------------------------------------------
    @property
    def staged(self) -> Path:
        return self.root / "staged"

    def participant(self, name: str) -> Participant:
        for p in self.participants:
            if p.name == name:
                return p
        raise WorkshopError(f"no participant {name!r} in this workshop")

    def workspace_of(self, name: str) -> Workspace:
        if name != INSTRUCTOR:
            self.participant(name)
        return Workspace(self.root / "participants" / name)

    def url(self, token: str) -> str:
        return f"{self.base_url.rstrip('/')}/?token={token}"

    # -- tokens --------------------------------------------------------------------------
    def who(self, token: str | None) -> tuple[str, str | None]:
        """``("instructor", None)``, ``("participant", name)`` or ``("nobody", None)``."""
        if not token or not isinstance(token, str):
            return "nobody", None
        if hmac.compare_digest(token, self.instructor_token):
            return "instructor", None
        for p in self.participants:
            if hmac.compare_digest(token, p.token):
                return "participant", p.name
        return "nobody", None

    # -- files ---------------------------------------------------------------------------
    def staged_models(self) -> list[Path]:
        return sorted((self.staged / "models").glob("*.model"))

    def staged_data(self) -> list[Path]:
        d = self.staged / "data"
        return sorted(list(d.glob("*.xyz")) + list(d.glob("*.extxyz")))

    def stage(self, path: str | Path, kind: str) -> Path:
        """Copy a model or dataset into the shared, read-only staging folder."""
        src = _stageable(path)
        if kind not in ("models", "data"):
            raise WorkshopError("stage 'models' or 'data'")
        dest = self.staged / kind / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        dest.chmod(0o444)
        return dest

    def allowed_roots(self, participant: str) -> list[Path]:
        return [self.workspace_of(participant).root, self.staged.resolve(),
                sample_data_dir().resolve()]

    def check_path(self, participant: str, path: str | Path) -> Path:
        """``path`` resolved, if it lies where the participant may read; else AccessError."""
        try:
            p = Path(str(path)).expanduser().resolve()
        except (OSError, ValueError):  # e.g. a NUL byte, a loop of links
            p = None
        for root in self.allowed_roots(participant) if p is not None else []:
            if p == root or root in p.parents:
                return p
        shown = str(path).replace("\0", "\\0")
        raise AccessError(f"{shown} is outside your workshop space: use files you uploaded, "
                          "the workshop's pre-staged files or the bundled demo data")

    # -- storage -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["root"] = str(self.root)
        return d

    def save(self) -> None:
        atomic_write_json(self.root / FILE, self.to_dict())


def create(root: str | Path, participants: int | list[str], *, name: str = "workshop",
           base_url: str = "http://localhost:8501", limits: Limits | None = None,
           executor: str = "local", slurm: dict[str, Any] | None = None,
           stage: dict[str, Sequence[str | Path]] | None = None) -> Workshop:
    """Set up a workshop in ``root``: tokens, one workspace per participant, and the files
    to pre-stage (``stage``: ``{"models": [...], "data": [...]}``).

    Everything is checked before anything is written, and ``workshop.json`` is written last:
    a refused or failed set-up leaves no workshop behind, so trying again works.
    """
    root = Path(root).expanduser().resolve()
    if (root / FILE).exists():
        raise WorkshopError(f"{root} already holds a workshop; use another folder (or remove "
                            f"{root / FILE} to start over)")
    stage = {kind: list(paths) for kind, paths in (stage or {}).items()}
    for kind, paths in stage.items():
        if kind not in ("models", "data"):
            raise WorkshopError(f"stage 'models' or 'data', not {kind!r}")
        for path in paths:
            _stageable(path)
    names = participants if isinstance(participants, list) else \
        [f"p{i + 1:02d}" for i in range(int(participants))]
    if not names or len(names) > 500:
        raise WorkshopError("a workshop needs between 1 and 500 participants")
    for n in names:
        if n == INSTRUCTOR:
            raise WorkshopError(f"{INSTRUCTOR!r} is reserved for the instructor's own space")
        if not _NAME_RE.match(n):
            raise WorkshopError(f"participant name {n!r}: use lower-case letters, digits, '-' "
                                "and '_' (at most 32)")
    if len(set(names)) != len(names):
        raise WorkshopError("participant names must be different")
    if executor not in ("local", "slurm"):
        raise WorkshopError(f"unknown executor {executor!r}")
    ws = Workshop(root=root, name=name, instructor_token=secrets.token_urlsafe(18),
                  participants=[Participant(n, secrets.token_urlsafe(18)) for n in names],
                  limits=(limits or Limits()).check(), executor=executor, slurm=slurm or {},
                  base_url=base_url)
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("staged/models", "staged/data"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for p in ws.participants:
        pws = Workspace(root / "participants" / p.name)
        save_settings(pws, executor=executor, slurm=slurm or None)
    for kind, paths in stage.items():
        for path in paths:
            ws.stage(path, kind)
    ws.save()
    return ws


def _stageable(path: str | Path) -> Path:
    """``path`` as a file that can be pre-staged, else WorkshopError saying why."""
    try:
        src = Path(path).expanduser()
        if src.is_dir():
            raise WorkshopError(f"{path}: is a folder; stage files one by one")
        if not src.is_file():
            raise WorkshopError(f"{path}: no such file")
    except (OSError, ValueError):
        raise WorkshopError(f"{path!r}: not a usable file path") from None
    return src


def load(root: str | Path | None = None) -> Workshop | None:
    """The workshop in ``root`` (default: the workspace folder), or ``None`` when there is
    none. A broken ``workshop.json`` raises WorkshopError."""
    root = Path(root).expanduser().resolve() if root else Workspace().root
    data, problem = read_json_checked(root / FILE, dict, "a workshop configuration")
    if problem is not None:
        raise WorkshopError(f"{root / FILE}{problem.removeprefix(FILE)}: fix or remove it")
    if data is None:
        return None
    try:
        return Workshop(root=root, name=data["name"], instructor_token=data["instructor_token"],
                        participants=[Participant(**p) for p in data["participants"]],
                        limits=Limits(**data.get("limits", {})), executor=data.get(
                            "executor", "local"), slurm=data.get("slurm") or {},
                        base_url=data.get("base_url", "http://localhost:8501"),
                        target_test=data.get("target_test"),
                        pretrain_test=data.get("pretrain_test"),
                        created=data.get("created", 0.0))
    except (KeyError, TypeError) as exc:
        raise WorkshopError(f"{root / FILE} is not a workshop configuration ({exc})") from None


def of_workspace(ws: Workspace) -> tuple[Workshop, str] | None:
    """The workshop and participant name of a participant's workspace, else ``None``."""
    root = _workshop_root_of(ws)
    if root is None:
        return None
    shop = load(root)
    return (shop, ws.root.name) if shop else None


def _workshop_root_of(ws: Workspace) -> Path | None:
    """The workshop folder of a participant's workspace (by the layout alone), else ``None``."""
    parent = ws.root.parent
    if parent.name != "participants" or not (parent.parent / FILE).is_file():
        return None
    return parent.parent
