"""Workshop mode: many participants on one server, each in a space of their own.

A workshop lives in a workspace folder (``$MLIPFT_WORKSPACE``)::

    <root>/workshop.json            name, tokens, limits, executor, pre-staged files
    <root>/participants/<name>/     one ordinary workspace per participant (selections,
                                    uploads, splits, E0 choices, runs, caches)
    <root>/staged/models/, data/    files the instructor pre-staged (shared, read-only)
    <root>/queue/                   the one dispatcher that serves every participant's runs

Each participant opens the app through a link carrying a random token; the instructor's link
opens the board. Tokens are compared in constant time; a browser without a valid token sees
only the join page. Participants are isolated: their workspace is the only writable place, a
typed path must lie in their workspace, the pre-staged folder or the bundled demo world, and
run ids never leave their ``runs/`` folder.
"""

from __future__ import annotations

import functools
import hmac
import math
import re
import secrets
import shutil
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import MlipftError
from .jobs import list_runs, save_settings
from .jobs.policy import OpenPolicy, SubmissionPolicy, register
from .jobs.records import ACTIVE, RunStore, e0_method, run_facts
from .workspace import Workspace, atomic_write_json, read_json, read_json_checked, strict_json

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
        from .demo import sample_data_dir

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


# ----------------------------------------------------------------------------- run rules
class ParticipantRules(OpenPolicy):
    """The submission policy of a participant's workspace (and of the instructor's own
    space): at most ``max_active_runs`` runs queued or running, the epoch cap, the run-time
    cap; the runs belong to the participant, one dispatcher in the workshop folder serves
    every participant's runs, and a finished run measures the board's figures.

    The workshop's configuration is read when a limit is first asked for, so that finding
    the dispatcher never depends on it.
    """

    def __init__(self, workspace: Workspace, root: Path) -> None:
        super().__init__(workspace)
        self.root = root
        self.name = workspace.root.name

    @functools.cached_property
    def shop(self) -> Workshop | None:
        return load(self.root)

    def check_submission(self, n_new: int, settings: Sequence[Mapping[str, Any]]) -> None:
        """Refuse runs over the participant's limit of active runs or over the epoch cap."""
        if self.shop is None:
            return
        active = sum(1 for r in RunStore(self.workspace).list() if r.status in ACTIVE)
        lim = self.shop.limits
        if active + n_new > lim.max_active_runs:
            raise WorkshopError(f"the workshop allows {lim.max_active_runs} queued or running "
                                f"runs per participant; you have {active}, and this would add "
                                f"{n_new}. Wait for some to finish or cancel one.",
                                code="run_limit")
        if lim.max_epochs is not None:
            over = [s.get("max_num_epochs") for s in settings
                    if int(s.get("max_num_epochs") or 0) > lim.max_epochs]
            if over:
                raise WorkshopError(f"the workshop caps runs at {lim.max_epochs} epochs "
                                    f"(asked: {max(over)})", code="epoch_cap")

    def owner(self) -> str | None:
        return self.name if self.shop is not None else None

    def time_limit_s(self) -> float | None:
        if self.shop is None or self.shop.limits.max_run_minutes is None:
            return None
        return float(self.shop.limits.max_run_minutes) * 60.0

    def dispatch_root(self) -> Path:
        return self.root

    def after_run(self, folder: Path, model: Path) -> None:
        """Measure the figures the instructor's board shows (:func:`record_figures`)."""
        try:
            record_figures(self.workspace, Path(folder).name, model)
        except Exception as exc:  # noqa: BLE001 - the run is done whatever the board gets
            print(f"the board's figures could not be measured: {exc}", file=sys.stderr)


class WorkshopRules(OpenPolicy):
    """The submission policy of the workshop folder itself: its dispatcher serves every
    participant's runs (fairly, see :class:`~mlipft_core.jobs.local.Dispatcher`)."""

    def served_roots(self) -> list[Path]:
        parts = self.workspace.root / "participants"
        try:
            return [d for d in sorted(parts.iterdir()) if d.is_dir()]
        except OSError:
            return []


@register
def policy_for(ws: Workspace) -> SubmissionPolicy | None:
    """The workshop's submission policy for ``ws`` (registered with the run path when this
    module is imported): :class:`ParticipantRules` in a participant's space,
    :class:`WorkshopRules` in the workshop folder, ``None`` elsewhere (the run path's open
    policy applies)."""
    root = _workshop_root_of(ws)
    if root is not None:
        return ParticipantRules(ws, root)
    if (ws.root / FILE).is_file() and (ws.root / "participants").is_dir():
        return WorkshopRules(ws)
    return None


# ----------------------------------------------------------------------------- board
@dataclass
class BoardRun:
    participant: str
    run_id: str
    name: str
    strategy: str
    status: str
    executor: str
    foundation: str | None
    e0: str | None
    lr: float | None
    target_forces_rmse_mev_per_a: float | None = None
    target_energy_rmse_mev_per_atom: float | None = None
    forgetting_ratio: float | None = None
    head: str | None = None
    pilot: bool = False                # a learning-rate pilot's run (not in the comparison)
    facts: Any = field(default=None, repr=False, compare=False)  # jobs.records.RunFacts

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("facts", None)
        return d


def _foundation_name(path: str | None) -> str | None:
    if not path:
        return None
    from .registry import list_models

    p = Path(path)
    for spec in list_models():
        if spec.path and Path(spec.path).resolve() == p.resolve():
            return spec.name
    return "foundation with chosen E0s" if p.name == "foundation_e0s.model" else p.name


#: figures of a participant's finished run, measured by the run itself (see record_figures)
FIGURES = "figures.json"


def record_figures(ws: Workspace, run_id: str, model: str | Path) -> dict[str, Any] | None:
    """Measure, in the run's own process, what the instructor's board shows of a finished
    training run of a participant (``model``, the file it trained): its target error and
    forgetting ratio (:func:`mlipft_core.compare.model_figures`), kept in the run folder
    (``figures.json``).

    The run loads the models it trained from and produced, which its participant chose; the
    board only reads these numbers and never loads a participant's model. Outside a workshop
    nothing is measured (``None``). A measurement that fails is recorded with its reason.
    """
    from .compare import model_figures  # the model machinery: only in the run's process
    from .demo import demo_paths

    found = of_workspace(ws)
    if found is None:
        return None
    shop = found[0]
    store = RunStore(ws)
    rec = store.read(run_id)
    if rec.kind != "train":
        return None
    demo = demo_paths()
    target = shop.target_test or demo["sn2_test"]
    pretrain = shop.pretrain_test or demo["pretrain_test"]
    out: dict[str, Any] = {"target_test": str(target), "pretrain_test": str(pretrain)}
    try:
        model_figures(model, (rec.spec or {}).get("foundation_model"), target, pretrain,
                      workspace=ws, out=out)
    except MlipftError as exc:
        out["problem"] = str(exc)
    atomic_write_json(store.folder(run_id) / FIGURES, strict_json(out))
    return out


def _finite_or_none(value: Any) -> float | None:
    """A recorded figure as a finite float, else ``None`` (recorded files are checked, not
    trusted: a string, a bool or a non-finite number is no figure)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _recorded_figures(folder: Path) -> dict[str, Any]:
    """A run's ``figures.json``, each figure a finite number or ``None``."""
    raw = read_json(folder / FIGURES, {})
    if not isinstance(raw, dict):
        return {}
    head = raw.get("head")
    return {"head": head if isinstance(head, str) else None,
            **{k: _finite_or_none(raw.get(k)) for k in (
                "target_forces_rmse_mev_per_a", "target_energy_rmse_mev_per_atom",
                "forgetting_ratio")}}


def board_runs(shop: Workshop, *, evaluate: bool = True) -> list[BoardRun]:
    """Every participant's runs; finished ones with the target error and forgetting ratio
    their run measured (:func:`record_figures`). No model is loaded here: a participant's
    model may be their own upload, which only they confirmed.

    ``evaluate=False`` leaves the figures out.
    """
    out: list[BoardRun] = []
    for p in shop.participants:
        ws = shop.workspace_of(p.name)
        for r in list_runs(ws):
            if r.kind != "train" or not r.readable:
                continue
            spec = r.spec or {}
            facts = run_facts(r)
            row = BoardRun(p.name, r.id, r.name, r.strategy, r.status, r.executor,
                           _foundation_name(spec.get("foundation_model")),
                           e0_method(spec.get("e0s")), (spec.get("settings") or {}).get("lr"),
                           pilot=facts.pilot, facts=facts)
            if evaluate and r.status == "done":
                fig = _recorded_figures(RunStore(ws).folder(r.id))
                row.head = fig.get("head")
                row.target_forces_rmse_mev_per_a = fig.get("target_forces_rmse_mev_per_a")
                row.target_energy_rmse_mev_per_atom = fig.get("target_energy_rmse_mev_per_atom")
                row.forgetting_ratio = fig.get("forgetting_ratio")
            out.append(row)
    return out


@dataclass
class BoardEntry:
    """One line of the study's comparison table, gathered over participants."""

    strategy: str
    foundation: str | None
    e0: str | None
    n_runs: int
    n_participants: int
    target_median: float | None
    target_q1: float | None
    target_q3: float | None
    forgetting_median: float | None
    forgetting_q1: float | None
    forgetting_q3: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quartiles(values: list[float]) -> tuple[float | None, float | None, float | None]:
    v = sorted(x for x in values if x is not None and math.isfinite(x))
    if not v:
        return None, None, None
    if len(v) == 1:
        return v[0], v[0], v[0]
    q = statistics.quantiles(v, n=4, method="inclusive")
    return statistics.median(v), q[0], q[2]


def board_table(runs: list[BoardRun]) -> list[BoardEntry]:
    """Median and interquartile range of target error and forgetting ratio per strategy,
    foundation model and E0 method, over every participant's finished runs (learning-rate
    pilots left out: they are short runs at learning rates chosen to be too low or high)."""
    groups: dict[tuple, list[BoardRun]] = {}
    for r in runs:
        if r.status == "done" and not r.pilot:
            groups.setdefault((r.strategy, r.foundation, r.e0), []).append(r)
    out = []
    for (strategy, fm, e0), rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        t = _quartiles([r.target_forces_rmse_mev_per_a for r in rs])
        f = _quartiles([r.forgetting_ratio for r in rs])
        out.append(BoardEntry(strategy, fm, e0, len(rs), len({r.participant for r in rs}),
                              t[0], t[1], t[2], f[0], f[1], f[2]))
    return out


def _wins(by_participant: dict[str, list[BoardRun]], key: str) -> tuple[dict[str, int], int]:
    """Per strategy, for how many participants (who ran two or more strategies) it had the
    lowest ``key``; and how many participants compared."""
    wins: dict[str, int] = {}
    compared = 0
    for rs in by_participant.values():
        cand = [r for r in rs if getattr(r, key) is not None]
        if len({r.strategy for r in cand}) < 2:
            continue
        compared += 1
        best = min(cand, key=lambda r: getattr(r, key))
        wins[best.strategy] = wins.get(best.strategy, 0) + 1
    return wins, compared


def findings(runs: list[BoardRun]) -> list[str]:
    """The study's findings as read off the participants' runs, in plain words."""
    by_p: dict[str, list[BoardRun]] = {}
    for r in runs:
        if r.status == "done" and not r.pilot:
            by_p.setdefault(r.participant, []).append(r)
    out = []
    for key, what in (("forgetting_ratio", "kept pretraining accuracy best (lowest forgetting "
                                           "ratio)"),
                      ("target_forces_rmse_mev_per_a", "reached the lowest target force error")):
        wins, compared = _wins(by_p, key)
        if compared:
            from .strategies import STRATEGIES

            top = max(wins, key=wins.get)
            title = STRATEGIES[top].title if top in STRATEGIES else top
            out.append(f"{title} {what} for {wins[top]} of {compared} participants who "
                       "compared strategies.")
    return out
