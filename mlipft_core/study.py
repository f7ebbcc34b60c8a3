"""The study's comparison, on the user's model and data, in one action.

One study runs, through the ordinary executor:

1. a learning-rate pilot for every fine-tuning strategy (:mod:`mlipft_core.tune`);
2. the final runs: every strategy at its tuned learning rate with anchored E0s; naive
   fine-tuning with ``average`` E0s; naive fine-tuning and the from-scratch baseline on a small
   subset of the training data; naive fine-tuning of the weaker foundation model (what runs,
   and how long: :mod:`mlipft_core.study_plan`);
3. the analysis (:mod:`mlipft_core.study_analysis`): a comparison on the target and
   pretraining test sets (energies relative to each level's E0s), and dimer curves of every
   element pair of the target against the reference curves of the pretraining level where
   the workbench has them.

It then states each of the study's findings (:mod:`mlipft_core.findings`) with its numbers
and whether this data reproduces it. The whole state lives in ``studies/<id>/study.json`` in
the workspace; :func:`advance` moves a study on from whatever it finds there, so a study
survives a restart of the app or the command line and is never submitted twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import jobs, study_analysis
from .demo import demo_paths
from .e0_inputs import model_head
from .errors import MlipftError

# the names of the study's plan and findings, where pages, scripts and tests use them
from .findings import WALL_COLUMNS, Finding, display_name, role_title, walls_in_words  # noqa: F401
from .findings import read as read_finding
from .findings.base import known
from .findings.close import CLOSE_FACTOR  # noqa: F401
from .findings.e0 import E0_FACTOR  # noqa: F401
from .findings.repulsion import SOFT_SPOT_MARGIN_PERCENT  # noqa: F401
from .findings.repulsion import from_measurements as _finding_repulsion  # noqa: F401
from .findings.walls import wall_table as _wall_table  # noqa: F401
from .jobs.records import FINAL, RunNotFoundError, RunStore, check_name
from .referencing import file_version
from .strategies import get_strategy
from .study_analysis import AnalysisSteps as _AnalysisSteps
from .study_plan import (  # noqa: F401
    CPU_SECONDS_PER_DIMER_CURVE,
    CPU_SECONDS_PER_EVALUATION,
    CPU_SECONDS_PER_RUN,
    CPU_SECONDS_PER_STRUCTURE_EPOCH,
    FINE_TUNING,
    REPLAY,
    SMALL_ROLES,
    StudyPlan,
    final_roles,
    fit_e0s,
    n_structures,
    pilot_size,
    plan,
)
from .study_plan import final_specs as _final_specs
from .study_plan import fit_e0s as _fit_e0s  # noqa: F401
from .study_plan import run_spec as _spec
from .tune import count_of, read_pilot, submit_pilot
from .workspace import (
    Workspace,
    absolute_paths,
    atomic_write_json,
    note,
    read_json_checked,
    set_aside_if_damaged,
    strict_json,
)


class StudyError(MlipftError):
    """A study that cannot start or go on (missing inputs, unknown study)."""

    code = "study_error"


@dataclass
class StudyInputs:
    """What a study runs on. Paths are absolute once a study is created."""

    model: str                       # the foundation model (file)
    train: str
    valid: str | None
    test: str
    pretrain_test: str | None
    replay: str | None
    weak_model: str | None = None
    isolated_file: str | None = None
    foundation_head: str | None = None  # of a multi-head foundation model; None: the first
    epochs: int = 20
    #: pilot learning rates; empty: five around each strategy's default (tune.default_grid)
    pilot_lrs: list[float] = field(default_factory=list)
    pilot_epochs: int = 5
    small_size: int = 25
    strategies: list[str] = field(default_factory=lambda: list(FINE_TUNING))
    executor: str | None = None
    slurm: dict[str, Any] | None = None
    #: labelled compressed structures held out from pretraining (the short-range finding's
    #: many-body probe); used by the analysis only, so not part of the study's identity
    short_range_test: str | None = None
    #: random compact structures of the random structure search (the short-range finding's
    #: collapse test), searched with every model; analysis only, as above
    search_structures: int = 40

    def study_id(self) -> str:
        d = {k: v for k, v in asdict(self).items() if k not in NOT_IN_ID}
        return "study-" + hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


#: The inputs that are files.
PATH_FIELDS = ("model", "train", "valid", "test", "pretrain_test", "replay", "weak_model",
               "isolated_file", "short_range_test")
#: Inputs that change where a study runs or how it is analysed, not what it runs: left out
#: of its identity.
NOT_IN_ID = ("executor", "slurm", "short_range_test", "search_structures")


@dataclass
class Study:
    """A study's state as stored in ``study.json``."""

    id: str
    inputs: StudyInputs
    stage: str                        # "pilots" | "finals" | "analysis" | "done" | "failed"
    created: float
    e0: dict[str, dict[str, float]] = field(default_factory=dict)
    pilots: dict[str, str] = field(default_factory=dict)      # strategy -> pilot sweep
    tuned: dict[str, float | None] = field(default_factory=dict)
    finals: dict[str, str] = field(default_factory=dict)      # role -> run id
    findings: list[Finding] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)      # series for plots
    message: str = ""
    #: where the analysis stands, written as it goes (see :func:`analyse`): ``step`` (1-based)
    #: of ``steps``, ``text``, ``detail``, ``fraction`` (of the whole analysis, each step
    #: weighted by its estimated cost), ``started``; when done also ``seconds``
    analysis: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return strict_json(asdict(self))


#: The stages a study ends in: it moves on no further.
ENDED_STAGES = ("done", "failed")


def _folder(ws: Workspace, study_id: str) -> Path:
    check_name(study_id, "study id")
    return ws.root / "studies" / study_id


@contextlib.contextmanager
def _advance_lock(ws: Workspace, study_id: str, *, wait: bool) -> Iterator[bool]:
    """The study's file lock, under which it is moved on: ``True`` when held (``wait``:
    blocks until it is; otherwise ``False`` while another caller holds it)."""
    with open(_folder(ws, study_id) / "advance.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def save(ws: Workspace, study: Study) -> None:
    path = _folder(ws, study.id) / "study.json"
    aside = set_aside_if_damaged(path)  # a damaged record is kept aside, not overwritten
    if aside is not None:
        note(f"{path} could not be read; it is kept as {aside.name} and the study starts "
             "again from its inputs")
    atomic_write_json(path, study.to_dict())


def load(study_id: str, workspace: Workspace | None = None) -> Study:
    """The study ``study_id`` as stored; StudyError when there is none or its record is
    damaged (the message says which file and why; starting the study again sets it aside)."""
    ws = workspace or Workspace()
    path = _folder(ws, study_id) / "study.json"
    raw, problem = read_json_checked(path, dict, "a study")
    if problem is not None:
        raise StudyError(f"the study {study_id} cannot be read: {path}"
                         f"{problem.removeprefix(path.name)}; start it again")
    if raw is None:
        raise StudyError(f"no study {study_id!r} in this workspace")

    try:  # fields of another version are left aside
        raw = known(Study, raw)
        raw["inputs"] = StudyInputs(**known(StudyInputs, raw["inputs"]))
        raw["findings"] = [read_finding(f, raw.get("extra") or {})
                           for f in raw.get("findings", [])]
        return Study(**raw)
    except (KeyError, TypeError, AttributeError) as exc:
        raise StudyError(f"the study {study_id} cannot be read ({path} lacks or mistypes "
                         f"a field: {exc}); start it again") from exc


def demo_inputs(**overrides: Any) -> StudyInputs:
    """The study on the bundled demo world: strong and weak demo models, SN2 target."""
    d = demo_paths()
    base = dict(model=d["models"]["demo-gfn1-strong"], weak_model=d["models"]["demo-gfn1-weak"],
                train=d["sn2_train"], valid=d["sn2_valid"], test=d["sn2_test"],
                pretrain_test=d["pretrain_test"], replay=d["replay_pool"],
                isolated_file=d["sn2_isolated_atoms"], short_range_test=d["short_range_test"])
    base.update({k: v for k, v in overrides.items() if v is not None})
    return StudyInputs(**base)


def _absolute(inputs: StudyInputs) -> StudyInputs:
    return absolute_paths(inputs, PATH_FIELDS)


def check(inputs: StudyInputs) -> None:
    """Refuse inputs a study cannot run on, with the reason (:class:`StudyError`)."""
    for k in ("model", "train", "test"):
        if not getattr(inputs, k):
            raise StudyError(f"a study needs {k!r}")
    for k in PATH_FIELDS:
        p = getattr(inputs, k)
        if p and not Path(p).is_file():
            raise StudyError(f"{k.replace('_', ' ')}: file not found: {p}")
    for s in inputs.strategies:
        get_strategy(s)
    if any(s in REPLAY for s in inputs.strategies) and not inputs.replay:
        raise StudyError("the replay strategies need a replay file (--replay), or for an "
                         "official model mace's replay set of it (mlipft replay fetch MODEL)")
    if "naive" not in inputs.strategies:
        raise StudyError("a study needs naive fine-tuning among its strategies: the E0, "
                         "small-data, foundation-model and replay findings compare with it")
    if inputs.epochs < 1 or inputs.pilot_epochs < 1 or inputs.small_size < 2 or \
            not 1 <= int(inputs.search_structures) <= 1000:
        raise StudyError("epochs and pilot epochs must be at least 1, the small training size "
                         "at least 2, the random structure search's structures 1 to 1000")
    lrs = {float(x) for x in inputs.pilot_lrs}
    if inputs.pilot_lrs and (len(lrs) < 2 or not all(math.isfinite(x) and x > 0 for x in lrs)):
        raise StudyError("the learning-rate pilot needs at least two different, positive "
                         "learning rates")
    if inputs.foundation_head:  # a head the model has (HeadError names its heads)
        model_head(inputs.model, inputs.foundation_head, trusted=True, workspace=Workspace())
    n_train = n_structures(*file_version(inputs.train))  # the page checks on every rerun
    if inputs.small_size >= n_train:
        raise StudyError(f"the small training set ({inputs.small_size} structures) must be "
                         f"smaller than the training set ({n_train})")


# ----------------------------------------------------------------------------- running
def _check_room(ws: Workspace, n_runs: int) -> None:
    """Refuse, with the reason, ``n_runs`` more runs that the workspace has no room for now
    (in a workshop: the participant's run limit)."""
    jobs.check_submission(ws, n_runs)


def start(inputs: StudyInputs, workspace: Workspace | None = None,
          report: Callable[[StudyProgress], None] | None = None) -> Study:
    """Create a study (E0s, then one pilot per strategy) or return the existing one with the
    same inputs, which then goes on where it stands (a failed one is tried again); ``report``
    as for :func:`advance`."""
    ws = workspace or Workspace()
    inputs = _absolute(inputs)
    check(inputs)
    sid = inputs.study_id()
    try:
        found = load(sid, ws)
    except StudyError:
        found = None
    if found is not None and found.stage != "failed" and not (
            inputs.short_range_test and
            inputs.short_range_test != found.inputs.short_range_test):
        ws.set(study=sid)  # nothing to change: no need to wait for an advance under way
        return advance(sid, ws, report=report)
    _folder(ws, sid).mkdir(parents=True, exist_ok=True)
    # under the study's lock: of two starts at once one creates the study, the other finds
    # it; and reopening one never overwrites what an advance under way writes
    with _advance_lock(ws, sid, wait=True):
        try:
            study = load(sid, ws)
        except StudyError:
            _check_room(ws, pilot_size(inputs))  # room for one pilot now
            study = Study(sid, inputs, "pilots", time.time(), e0=fit_e0s(inputs))
            save(ws, study)  # written before anything is queued: a crash below resumes
        else:
            if study.stage == "failed":
                study.stage = "analysis" if study.finals else (
                    "finals" if study.tuned else "pilots")
                study.message, study.analysis = "", {}
            if inputs.short_range_test and \
                    inputs.short_range_test != study.inputs.short_range_test:
                # another probe set changes the findings, not the runs: analyse again (an
                # empty one keeps the study's own)
                study.inputs.short_range_test = inputs.short_range_test
                if study.stage == "done":
                    study.stage, study.analysis = "analysis", {}
            save(ws, study)
    ws.set(study=sid)
    return advance(sid, ws, report=report)


def _submit_missing_pilots(ws: Workspace, study: Study) -> None:
    """Queue the pilots not queued yet; a refusal (e.g. a workshop's run limit while earlier
    pilots still run) waits for the next call, with the reason in ``message``."""
    study.message = ""
    for strategy in study.inputs.strategies:
        if strategy in study.pilots:
            continue
        spec = _spec(study.inputs, strategy, e0=study.e0["anchored"])
        try:
            study.pilots[strategy] = submit_pilot(
                spec, study.inputs.pilot_lrs or None, study.inputs.pilot_epochs, workspace=ws,
                executor=study.inputs.executor, slurm=study.inputs.slurm)
        except MlipftError as exc:
            study.message = f"waiting to queue the pilot of {strategy}: {exc}"
            break
        finally:
            save(ws, study)


def _submit_missing_finals(ws: Workspace, study: Study) -> None:
    """Queue the final runs not queued yet (one sweep, ``<id>-finals``); a refusal waits for
    the next call, with the reason in ``message``."""
    sweep = f"{study.id}-finals"
    study.message = ""
    for role, spec in _final_specs(study).items():
        if role in study.finals:
            continue
        try:
            if role in SMALL_ROLES:
                rec = jobs.submit_size_sweep(spec, [study.inputs.small_size], seed=0,
                                             workspace=ws, executor=study.inputs.executor,
                                             slurm=study.inputs.slurm, sweep=sweep)[0]
            else:
                rec = jobs.submit_sweep([spec], workspace=ws, executor=study.inputs.executor,
                                        slurm=study.inputs.slurm, sweep=sweep)[0]
        except MlipftError as exc:
            study.message = f"waiting to queue {role}: {exc}"
            break
        study.finals[role] = rec.id
        save(ws, study)


@dataclass
class StudyProgress:
    """Where a study stands, in words and numbers: its runs, then its analysis (a step of
    its own, with ``step`` of ``steps`` while it goes)."""

    stage: str
    runs_ended: int
    runs_total: int
    text: str
    step: int | None = None           # the analysis step under way (1-based) or done
    steps: int | None = None
    analysed: float = 0.0             # the analysis's share done (by estimated cost)

    @property
    def fraction(self) -> float:
        """The runs' share ended; during the analysis, the analysis's share done."""
        if self.stage == "analysis" and self.steps:
            return min(1.0, max(0.0, self.analysed))
        if self.stage == "done":
            return 1.0
        return self.runs_ended / self.runs_total if self.runs_total else 0.0


def progress(study: Study, workspace: Workspace | None = None) -> StudyProgress:
    """Where ``study`` stands, from its runs and what its ``study.json`` records (the
    analysis's step, written as it goes by whichever page or command runs it)."""
    ws = workspace or Workspace()
    runs = {r.id: r for r in jobs.list_runs(ws) if r.readable}
    pilots = set(study.pilots.values())
    pilot_ended = sum(r.status in FINAL for r in runs.values() if r.sweep in pilots)
    final_ended = sum(runs[i].status in FINAL for i in study.finals.values() if i in runs)
    n_pilot = len(study.inputs.strategies) * pilot_size(study.inputs)
    n_final = len(_final_specs(study)) if study.tuned else len(final_roles(study.inputs))
    ended, total = pilot_ended + final_ended, n_pilot + n_final
    a = study.analysis
    step, steps = a.get("step"), a.get("steps")
    if study.stage == "analysis" and step and steps:
        text = (f"All {count_of(total, 'run')} ended. Analysis, step {step} of {steps}: "
                f"{a.get('text', '')}" + (f" ({a['detail']})" if a.get("detail") else ""))
    elif study.stage == "analysis":
        text = f"All {count_of(total, 'run')} ended. Analysis: starting"
    elif study.stage == "pilots":
        text = (f"Learning-rate pilots: {pilot_ended} of {count_of(n_pilot, 'run')} ended "
                f"({ended} of the study's {total})")
    elif study.stage == "finals":
        text = (f"Final runs at the tuned learning rates: {final_ended} of "
                f"{count_of(n_final, 'run')} ended ({ended} of the study's {total}); the "
                "analysis follows")
    elif study.stage == "done":
        took = a.get("seconds")
        text = (f"Done: {count_of(total, 'run')}, then the analysis"
                + (f" ({count_of(steps, 'step')}, {_took(took)})" if steps and took is not None
                   else ""))
    else:
        text = f"Stopped: {study.message}"
    if study.message and study.stage in ("pilots", "finals"):
        text += f" ({study.message})"
    analysed = float(a.get("fraction") or 0.0) if study.stage == "analysis" else 0.0
    return StudyProgress(study.stage, ended, total, text,
                         step if study.stage in ("analysis", "done") else None,
                         steps if study.stage in ("analysis", "done") else None, analysed)


def _took(seconds: float) -> str:
    return (count_of(round(seconds), "second") if seconds < 90 else
            count_of(round(seconds / 60), "minute"))


def advance(study_id: str, workspace: Workspace | None = None,
            report: Callable[[StudyProgress], None] | None = None) -> Study:
    """Move a study on as far as its runs allow. Idempotent, and safe from several callers:
    one caller at a time advances a study (a file lock); the others return its stored state.

    ``report`` is told where the study stands at every step of an analysis this call runs
    (the same :class:`StudyProgress` that :func:`progress` reads back from ``study.json``)."""
    ws = workspace or Workspace()
    load(study_id, ws)  # a clear error for an unknown study
    with _advance_lock(ws, study_id, wait=False) as held:
        if not held:  # another page or command is moving it on right now
            return load(study_id, ws)
        return _advance_locked(load(study_id, ws), ws, report)


def _advance_locked(study: Study, ws: Workspace, report) -> Study:
    store = RunStore(ws)
    jobs.keep_sweeps_going([*study.pilots.values(), f"{study.id}-finals"], ws)
    try:
        if study.stage == "pilots":
            _submit_missing_pilots(ws, study)
            if len(study.pilots) == len(study.inputs.strategies):
                records = jobs.list_runs(ws)
                results = {s: read_pilot(sw, ws, records) for s, sw in study.pilots.items()}
                if all(r.finished for r in results.values()):
                    study.tuned = {s: r.best_lr for s, r in results.items()}
                    study.extra["pilots"] = {s: r.to_dict() for s, r in results.items()}
                    study.stage = "finals"
                    save(ws, study)
        if study.stage == "finals":
            _submit_missing_finals(ws, study)
            wanted = _final_specs(study)
            if set(wanted) <= set(study.finals):
                recs = [store.read(rid) for rid in study.finals.values()]
                if all(r.status in FINAL for r in recs):
                    study.stage = "analysis"
                    study.analysis = {}
                    save(ws, study)
    except (RunNotFoundError, MlipftError) as exc:
        study.stage, study.message = "failed", f"{exc} (run the study again to retry)"
        save(ws, study)
        return study
    if study.stage == "analysis":
        steps = _steps(study, ws, report)
        try:
            analyse(study, ws, steps=steps)
            study.stage, study.message = "done", ""
            study.analysis.update(fraction=1.0, seconds=round(time.time() - steps.started, 1))
        except Exception as exc:  # noqa: BLE001 - recorded, so the page never loops on it
            study.stage = "failed"
            where = (f" at step {study.analysis['step']} of {study.analysis['steps']} "
                     f"({study.analysis.get('text', '')})" if study.analysis.get("step") else "")
            study.message = f"the analysis failed{where}: {type(exc).__name__}: {exc}"
        save(ws, study)
        steps.finish()
    return study


def run(inputs: StudyInputs, workspace: Workspace | None = None, poll: float = 5.0,
        report: Callable[[StudyProgress], None] | None = None) -> Study:
    """Start (or resume) a study and wait for its findings; ``report`` is told where it
    stands after every look at its runs and at every step of its analysis."""
    ws = workspace or Workspace()
    study = start(inputs, ws, report=report)
    while study.stage not in ENDED_STAGES:
        study = advance(study.id, ws, report=report)
        if report:
            report(progress(study, ws))
        if study.stage not in ENDED_STAGES:
            time.sleep(poll)
    return study


def analyse(study: Study, ws: Workspace, steps: _AnalysisSteps | None = None) -> None:
    """Evaluate the final runs and state the findings (stored on ``study``); ``steps`` is
    told each step as it begins (by default recorded in ``study.json``, as :func:`advance`
    does)."""
    study_analysis.analyse(study, ws, steps or _steps(study, ws, None))


def _steps(study: Study, ws: Workspace,
           report: Callable[[StudyProgress], None] | None) -> _AnalysisSteps:
    """The analysis's steps of ``study``, each saved in its ``study.json``."""
    return _AnalysisSteps(study, lambda: save(ws, study), lambda: progress(study, ws), report)
