"""The study's comparison, on the user's model and data, in one action.

One study runs, through the ordinary executor:

1. a learning-rate pilot for every fine-tuning strategy (:mod:`mlipft_core.tune`);
2. the final runs: every strategy at its tuned learning rate with anchored E0s; naive
   fine-tuning with ``average`` E0s; naive fine-tuning and the from-scratch baseline on a small
   subset of the training data; naive fine-tuning of the weaker foundation model;
3. the analysis: a comparison on the target and pretraining test sets (energies relative to
   each level's E0s), and dimer curves of every element pair of the target against the
   reference curves of the pretraining level where the workbench has them.

It then states each of the study's six findings with its numbers and whether this data
reproduces it. The whole state lives in ``studies/<id>/study.json`` in the workspace;
:func:`advance` moves a study on from whatever it finds there, so a study survives a restart of
the app or the command line and is never submitted twice.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import MlipftError
from .workspace import Workspace, absolute_paths, atomic_write_json, read_json, strict_json

#: The strategies a study tunes and compares (the baseline runs separately, small).
FINE_TUNING = ("naive", "freeze-a", "freeze-b", "lora", "multihead-replay",
               "pseudolabel-replay", "replay-lora")
REPLAY = ("multihead-replay", "pseudolabel-replay", "replay-lora")
#: Below this wall (eV above the minimum at 0.5 Å) a pair has no repulsion to lose.
WALL_THRESHOLD = 2.0
#: Finding 4: replay counts as "close to naive" within this factor of naive's target error.
CLOSE_FACTOR = 1.3
#: Finding 1: E0s "matter" when the worse choice's error outside the training family is at
#: least this factor above the anchored one's.
E0_FACTOR = 2.0


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
    epochs: int = 20
    #: pilot learning rates; empty: five around each strategy's default (tune.default_grid)
    pilot_lrs: list[float] = field(default_factory=list)
    pilot_epochs: int = 5
    small_size: int = 25
    strategies: list[str] = field(default_factory=lambda: list(FINE_TUNING))
    executor: str | None = None
    slurm: dict[str, Any] | None = None
    #: labelled compressed structures held out from pretraining (finding 6's many-body probe);
    #: used by the analysis only, so it is not part of the study's identity
    short_range_test: str | None = None

    def study_id(self) -> str:
        d = {k: v for k, v in asdict(self).items() if k not in NOT_IN_ID}
        return "study-" + hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


#: The inputs that are files.
PATH_FIELDS = ("model", "train", "valid", "test", "pretrain_test", "replay", "weak_model",
               "isolated_file", "short_range_test")
#: Inputs that change where a study runs or how it is analysed, not what it runs: left out
#: of its identity.
NOT_IN_ID = ("executor", "slurm", "short_range_test")


@dataclass
class Finding:
    """One of the study's findings as this data shows it."""

    number: int
    title: str
    claim: str
    reproduced: bool | None           # None: could not be measured
    summary: str
    teaching: str
    table: list[dict[str, Any]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    #: the table's columns in reading order (a JSON object does not keep it)
    columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.columns and self.table:
            self.columns = list(self.table[0])


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

    def to_dict(self) -> dict[str, Any]:
        return strict_json(asdict(self))


def _folder(ws: Workspace, study_id: str) -> Path:
    from .jobs.records import check_name

    check_name(study_id, "study id")
    return ws.root / "studies" / study_id


@contextlib.contextmanager
def _advance_lock(ws: Workspace, study_id: str, *, wait: bool) -> Iterator[bool]:
    """The study's file lock, under which it is moved on: ``True`` when held (``wait``:
    blocks until it is; otherwise ``False`` while another caller holds it)."""
    import fcntl

    with open(_folder(ws, study_id) / "advance.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def save(ws: Workspace, study: Study) -> None:
    atomic_write_json(_folder(ws, study.id) / "study.json", study.to_dict())


def load(study_id: str, workspace: Workspace | None = None) -> Study:
    ws = workspace or Workspace()
    raw = read_json(_folder(ws, study_id) / "study.json")
    if not isinstance(raw, dict):
        raise StudyError(f"no study {study_id!r} in this workspace")

    def known(cls, d: Any) -> dict[str, Any]:  # fields of another version are left aside
        names = {f.name for f in fields(cls)}
        return {k: v for k, v in (d or {}).items() if k in names}

    try:
        raw = known(Study, raw)
        raw["inputs"] = StudyInputs(**known(StudyInputs, raw["inputs"]))
        raw["findings"] = [Finding(**known(Finding, f)) for f in raw.get("findings", [])]
        return Study(**raw)
    except (KeyError, TypeError, AttributeError) as exc:
        raise StudyError(f"the study {study_id} cannot be read ({type(exc).__name__}: {exc}); "
                         "start it again") from exc


def demo_inputs(**overrides: Any) -> StudyInputs:
    """The study on the bundled demo world: strong and weak demo models, SN2 target."""
    from .demo import demo_paths

    d = demo_paths()
    base = dict(model=d["models"]["demo-gfn1-strong"], weak_model=d["models"]["demo-gfn1-weak"],
                train=d["sn2_train"], valid=d["sn2_valid"], test=d["sn2_test"],
                pretrain_test=d["pretrain_test"], replay=d["replay_pool"],
                isolated_file=d["sn2_isolated_atoms"], short_range_test=d["short_range_test"])
    base.update({k: v for k, v in overrides.items() if v is not None})
    return StudyInputs(**base)


def _absolute(inputs: StudyInputs) -> StudyInputs:
    return absolute_paths(inputs, PATH_FIELDS)


def pilot_size(inputs: StudyInputs) -> int:
    """Runs per pilot."""
    from .tune import default_grid

    return len(set(inputs.pilot_lrs)) if inputs.pilot_lrs else len(default_grid(1e-3))


def check(inputs: StudyInputs) -> None:
    """Refuse inputs a study cannot run on, with the reason (:class:`StudyError`)."""
    from .strategies import get_strategy

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
        raise StudyError("the replay strategies need a replay file (pretraining configurations)")
    if "naive" not in inputs.strategies:
        raise StudyError("a study needs naive fine-tuning among its strategies: the E0, "
                         "small-data, foundation-model and replay findings compare with it")
    if inputs.epochs < 1 or inputs.pilot_epochs < 1 or inputs.small_size < 2:
        raise StudyError("epochs and pilot epochs must be at least 1, the small training size "
                         "at least 2")
    lrs = {float(x) for x in inputs.pilot_lrs}
    if inputs.pilot_lrs and (len(lrs) < 2 or not all(math.isfinite(x) and x > 0 for x in lrs)):
        raise StudyError("the learning-rate pilot needs at least two different, positive "
                         "learning rates")
    from .referencing import file_version

    n_train = _n_structures(*file_version(inputs.train))  # the page checks on every rerun
    if inputs.small_size >= n_train:
        raise StudyError(f"the small training set ({inputs.small_size} structures) must be "
                         f"smaller than the training set ({n_train})")


@functools.lru_cache(maxsize=32)
def _n_structures(path: str, size: int, mtime_ns: int) -> int:
    """Structures of a training file, IsolatedAtom ones aside (read once per file version)."""
    from .data import iter_frames

    return sum(1 for a in iter_frames(path) if a.info.get("config_type") != "IsolatedAtom")


# ----------------------------------------------------------------------------- running
def _spec(inputs: StudyInputs, strategy: str, *, e0: dict[str, float], lr: float | None = None,
          epochs: int | None = None, model: str | None = None, name: str | None = None):
    from .strategies import RunSpec

    settings: dict[str, Any] = {"max_num_epochs": epochs or inputs.epochs}
    if lr is not None:
        settings["lr"] = float(lr)
    return RunSpec(strategy=strategy, foundation_model=model or inputs.model,
                   train_file=inputs.train, valid_file=inputs.valid, test_file=None,
                   e0s=json.dumps(e0), replay_file=inputs.replay, name=name or strategy,
                   settings=settings, isolated_file=inputs.isolated_file)


def _fit_e0s(inputs: StudyInputs) -> dict[str, dict[str, float]]:
    from . import e0 as e0mod

    out = {}
    fm = e0mod.prepare(inputs.train, inputs.model, trusted=True,
                       isolated_file=inputs.isolated_file)
    out["anchored"] = e0mod.compute(fm, "estimated").e0
    plain = e0mod.prepare(inputs.train, None, trusted=True)
    out["average"] = e0mod.compute(plain, "average").e0
    if fm.isolated:
        out["isolated"] = {e: fm.isolated[e] for e in fm.elements if e in fm.isolated}
    if inputs.weak_model:
        weak = e0mod.prepare(inputs.train, inputs.weak_model, trusted=True,
                             isolated_file=inputs.isolated_file)
        out["anchored_weak"] = e0mod.compute(weak, "estimated").e0
    return out


def start(inputs: StudyInputs, workspace: Workspace | None = None) -> Study:
    """Create a study (E0s, then one pilot per strategy) or return the existing one with the
    same inputs, which then goes on where it stands (a failed one is tried again)."""
    from .jobs import _workshop_checks

    ws = workspace or Workspace()
    inputs = _absolute(inputs)
    check(inputs)
    sid = inputs.study_id()
    try:
        study = load(sid, ws)
    except StudyError:
        _workshop_checks(ws, pilot_size(inputs))  # room for one pilot now
        study = Study(sid, inputs, "pilots", time.time(), e0=_fit_e0s(inputs))
        save(ws, study)  # written before anything is queued: a crash below resumes
    else:
        if study.stage == "failed":
            study.stage = "analysis" if study.finals else (
                "finals" if study.tuned else "pilots")
            study.message = ""
            save(ws, study)
        if inputs.short_range_test and inputs.short_range_test != study.inputs.short_range_test:
            # another probe set changes the findings, not the runs: analyse again (an empty
            # one keeps the study's own); waits for an analysis under way
            with _advance_lock(ws, sid, wait=True):
                study = load(sid, ws)
                study.inputs.short_range_test = inputs.short_range_test
                if study.stage == "done":
                    study.stage = "analysis"
                save(ws, study)
    ws.set(study=sid)
    return advance(sid, ws)


def _submit_missing_pilots(ws: Workspace, study: Study) -> None:
    """Queue the pilots not queued yet; a refusal (e.g. a workshop's run limit while earlier
    pilots still run) waits for the next call, with the reason in ``message``."""
    from .tune import submit_pilot

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


def _final_specs(study: Study) -> dict[str, Any]:
    inp = study.inputs
    anchored = study.e0["anchored"]
    out = {}
    for s in inp.strategies:
        lr = study.tuned.get(s)
        if lr is None:
            continue
        sp = _spec(inp, s, e0=anchored, lr=lr, name=f"study-{s}")
        sp.tuning = {"pilot_sweep": study.pilots[s], "best_lr": lr, "epochs": inp.pilot_epochs,
                     "grid": [p["lr"] for p in study.extra.get("pilots", {}).get(s, {})
                              .get("results", [])]}
        out[s] = sp
    naive_lr = study.tuned.get("naive")
    if naive_lr is not None:
        out["naive-average-e0"] = _spec(inp, "naive", e0=study.e0["average"], lr=naive_lr,
                                        name="study-naive-average-e0")
        if inp.weak_model and "anchored_weak" in study.e0:
            out["naive-weak"] = _spec(inp, "naive", e0=study.e0["anchored_weak"], lr=naive_lr,
                                      model=inp.weak_model, name="study-naive-weak-fm")
        out["naive-small"] = _spec(inp, "naive", e0=anchored, lr=naive_lr,
                                   name="study-naive-small")
    out["scratch-small"] = _spec(inp, "scratch", e0=anchored, name="study-scratch-small")
    return out


def _submit_missing_finals(ws: Workspace, study: Study) -> None:
    """Queue the final runs not queued yet (one sweep, ``<id>-finals``); a refusal waits for
    the next call, with the reason in ``message``."""
    from . import jobs

    sweep = f"{study.id}-finals"
    study.message = ""
    for role, spec in _final_specs(study).items():
        if role in study.finals:
            continue
        try:
            if role in ("naive-small", "scratch-small"):
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
    """Where a study stands, in words and numbers."""

    stage: str
    runs_ended: int
    runs_total: int
    text: str

    @property
    def fraction(self) -> float:
        return self.runs_ended / self.runs_total if self.runs_total else 0.0


def progress(study: Study, workspace: Workspace | None = None) -> StudyProgress:
    from . import jobs
    from .jobs.records import FINAL

    ws = workspace or Workspace()
    runs = {r.id: r for r in jobs.list_runs(ws) if r.readable}
    pilots = set(study.pilots.values())
    pilot_ended = sum(r.status in FINAL for r in runs.values() if r.sweep in pilots)
    final_ended = sum(runs[i].status in FINAL for i in study.finals.values() if i in runs)
    n_pilot = len(study.inputs.strategies) * pilot_size(study.inputs)
    n_final = (len(_final_specs(study)) if study.tuned else
               len(study.inputs.strategies) + 3 + bool(study.inputs.weak_model))
    texts = {"pilots": f"Learning-rate pilots: {pilot_ended}/{n_pilot} runs ended",
             "finals": f"Final runs at the tuned learning rates: "
                       f"{final_ended}/{len(study.finals)} ended",
             "analysis": "Comparing the models: test sets and dimer curves",
             "done": "Done", "failed": f"Stopped: {study.message}"}
    if study.message and study.stage in ("pilots", "finals"):
        texts[study.stage] += f" ({study.message})"
    return StudyProgress(study.stage, pilot_ended + final_ended, n_pilot + n_final,
                         texts.get(study.stage, study.stage))


def advance(study_id: str, workspace: Workspace | None = None,
            report: Callable[[str], None] | None = None) -> Study:
    """Move a study on as far as its runs allow. Idempotent, and safe from several callers:
    one caller at a time advances a study (a file lock); the others return its stored state."""
    ws = workspace or Workspace()
    load(study_id, ws)  # a clear error for an unknown study
    with _advance_lock(ws, study_id, wait=False) as held:
        if not held:  # another page or command is moving it on right now
            return load(study_id, ws)
        return _advance_locked(load(study_id, ws), ws, report)


def _advance_locked(study: Study, ws: Workspace, report) -> Study:
    from . import jobs
    from .jobs.records import FINAL, RunNotFoundError, RunStore
    from .tune import read_pilot

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
                    save(ws, study)
    except (RunNotFoundError, MlipftError) as exc:
        study.stage, study.message = "failed", f"{exc} (run the study again to retry)"
        save(ws, study)
        return study
    if study.stage == "analysis":
        try:
            analyse(study, ws, report=report)
            study.stage, study.message = "done", ""
        except Exception as exc:  # noqa: BLE001 - recorded, so the page never loops on it
            study.stage = "failed"
            study.message = f"the analysis failed: {type(exc).__name__}: {exc}"
        save(ws, study)
    return study


def run(inputs: StudyInputs, workspace: Workspace | None = None, poll: float = 5.0,
        report: Callable[[StudyProgress], None] | None = None) -> Study:
    """Start (or resume) a study and wait for its findings."""
    ws = workspace or Workspace()
    study = start(inputs, ws)
    while study.stage not in ("done", "failed"):
        study = advance(study.id, ws)
        if report:
            report(progress(study, ws))
        if study.stage not in ("done", "failed"):
            time.sleep(poll)
    return study


# ----------------------------------------------------------------------------- analysis
def _fmt(v: float | None, unit: str = "", digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}{(' ' + unit) if unit else ''}"


def analyse(study: Study, ws: Workspace, report: Callable[[str], None] | None = None) -> None:
    """Evaluate the final runs and state the six findings (stored on ``study``)."""
    from .analysis import element_pairs, model_heads, repulsion, short_range_probe
    from .compare import ModelRef, compare
    from .jobs.records import RunStore
    from .probes import reference_curve, reference_dimer_curves
    from .referencing import composition

    inp = study.inputs
    store = RunStore(ws)
    done = {}
    failed = {}
    for role, rid in study.finals.items():
        rec = store.read(rid)
        if rec.status == "done" and rec.model_path:
            done[role] = rec
        else:
            failed[role] = rec.reason or rec.status
    refs = [ModelRef("foundation", inp.model)]
    refs += [ModelRef(role, rec.model_path, inp.model, rec.strategy, rec.id)
             for role, rec in done.items() if role != "naive-weak"]
    if report:
        report("comparing on the target and pretraining test sets")
    rows, _ = compare(refs, inp.test, inp.pretrain_test, foundation=inp.model, workspace=ws,
                      target_e0=study.e0["anchored"])
    weak_rows = []
    if "naive-weak" in done and inp.weak_model:
        weak_rows, _ = compare([ModelRef("weak foundation", inp.weak_model),
                                ModelRef("naive-weak", done["naive-weak"].model_path,
                                         inp.weak_model, "naive", done["naive-weak"].id)],
                               inp.test, inp.pretrain_test, foundation=inp.weak_model,
                               workspace=ws,
                               target_e0=study.e0.get("anchored_weak", study.e0["anchored"]))
    by = {}
    for r in rows + weak_rows:
        by.setdefault(r.name, {})[r.head] = r

    def target_row(name: str):
        heads = by.get(name, {})
        return next((r for h, r in heads.items() if h != "pt_head"), None)

    def pt_row(name: str):
        heads = by.get(name, {})
        return heads.get("pt_head") or next(iter(heads.values()), None)

    # dimer curves of the target's element pairs
    elements, counts = composition(inp.test)
    pairs = element_pairs(elements)
    ref_curves = reference_dimer_curves(inp.model)
    probe_models = model_heads({"foundation": inp.model,
                                **{r: done[r].model_path for r in ("naive", "multihead-replay")
                                   if r in done}})
    walls: dict[str, dict[str, Any]] = {}
    dimer_series: dict[str, Any] = {}
    for pair in pairs:
        if report:
            report(f"{pair} dimer curves")
        series, verdicts = repulsion(probe_models, pair, workspace=ws,
                                     reference_curve=reference_curve(ref_curves, pair))
        dimer_series[pair] = series
        walls[pair] = {v.model: v.to_dict() for v in verdicts}
    study.extra["dimers"] = dimer_series
    # the many-body probe: held-out compressed structures, every fine-tune's target head and
    # the replay model's pretraining head against the foundation model
    short_range: list[dict[str, Any]] | None = None
    probe_problem = ""
    if inp.short_range_test:
        order = ["foundation", *inp.strategies]
        sr_models = sorted(  # each model's target head first
            (m for m in model_heads({"foundation": inp.model,
                                     **{r: done[r].model_path for r in inp.strategies
                                        if r in done}})
             if m.head != "pt_head" or m.name == "multihead-replay"),
            key=lambda m: (order.index(m.name), m.head == "pt_head"))
        try:
            short_range = [r.to_dict() for r in short_range_probe(
                sr_models, inp.short_range_test, workspace=ws, progress=report)]
        except MlipftError as exc:  # the other findings stand; finding 6 says why
            probe_problem = f"The short-range structures could not be probed: {exc}. "
        study.extra["short_range"] = short_range
    study.extra["rows"] = [r.to_dict() for r in rows + weak_rows]
    study.extra["failed_runs"] = failed
    study.findings = [
        _finding_e0(study, target_row, pt_row),
        _finding_scratch(study, target_row),
        _finding_retention(study, pt_row),
        _finding_close(study, target_row),
        _finding_fm(study, target_row),
        _finding_repulsion(study, walls, pairs, ref_curves is not None, short_range,
                           probe_problem),
    ]


def _lr(v: float | None) -> str:
    return "—" if v is None else f"{v:g}"


def _run_ids(study: Study, *roles: str) -> list[str]:
    return [study.finals[r] for r in roles if r in study.finals]


def _finding_e0(study: Study, target_row, pt_row) -> Finding:
    a, v = target_row("naive"), target_row("naive-average-e0")
    anchored, average = study.e0.get("anchored", {}), study.e0.get("average", {})
    iso = study.e0.get("isolated", {})
    table = [{"element": e, "anchored E0 (eV)": anchored.get(e), "average E0 (eV)": average.get(e),
              "isolated atom (eV)": iso.get(e)} for e in anchored]
    claim = ("Correct E0s matter more than the strategy: poor E0s can look fine on held-out "
             "errors but distort energies outside the training data's composition family.")
    teaching = ("'average' E0s fit the total energies of the training compositions and nothing "
                "else: where the compositions are linearly dependent, the split between "
                "elements is arbitrary. The target test set shares those compositions, so its "
                "errors barely notice. The pretraining structures do not: their interaction "
                "energies, the part the network learns, come out shifted by the wrong E0s. "
                "Anchored E0s take what the data cannot determine from the isolated atoms.")
    if a is None or v is None or a.pretrain_energy_rmse_mev_per_atom is None or \
            v.pretrain_energy_rmse_mev_per_atom is None:
        return Finding(1, "E0 choice matters", claim, None,
                       "Could not be measured: the naive runs with both E0 choices and a "
                       "pretraining test set are needed.", teaching, table,
                       _run_ids(study, "naive", "naive-average-e0"))
    ratio = v.pretrain_energy_rmse_mev_per_atom / max(a.pretrain_energy_rmse_mev_per_atom, 1e-9)
    t_ratio = (v.target_energy_rmse_mev_per_atom or 0.0) / max(
        a.target_energy_rmse_mev_per_atom or 0.0, 1e-9)
    ok = ratio >= E0_FACTOR
    summary = (f"Naive fine-tuning with anchored E0s: target energy RMSE "
               f"{_fmt(a.target_energy_rmse_mev_per_atom, 'meV/atom')}, pretraining interaction-"
               f"energy RMSE {_fmt(a.pretrain_energy_rmse_mev_per_atom, 'meV/atom')}. With "
               f"'average' E0s: {_fmt(v.target_energy_rmse_mev_per_atom, 'meV/atom')} on the "
               f"target, {_fmt(v.pretrain_energy_rmse_mev_per_atom, 'meV/atom')} on the "
               f"pretraining structures ({ratio:.1f}× the anchored run's). "
               + (("Reproduced: the target errors look alike, the energies outside the "
                   "family do not." if t_ratio < 1.5 else
                   f"Reproduced: the wrong E0s cost {t_ratio:.1f}× on the target and more "
                   "outside the family.") if ok else
                  f"Not reproduced here: the difference outside the family is below "
                  f"{E0_FACTOR:g}×."))
    study.extra["e0_runs"] = {
        "anchored": {"target_e": a.target_energy_rmse_mev_per_atom,
                     "target_f": a.target_forces_rmse_mev_per_a,
                     "pretrain_e": a.pretrain_energy_rmse_mev_per_atom},
        "average": {"target_e": v.target_energy_rmse_mev_per_atom,
                    "target_f": v.target_forces_rmse_mev_per_a,
                    "pretrain_e": v.pretrain_energy_rmse_mev_per_atom}}
    return Finding(1, "E0 choice matters", claim, ok, summary, teaching, table,
                   _run_ids(study, "naive", "naive-average-e0"))


def _finding_scratch(study: Study, target_row) -> Finding:
    n = study.inputs.small_size
    f, s = target_row("naive-small"), target_row("scratch-small")
    claim = "With the foundation model, E0s and learning rate right, fine-tuning beats " \
            "training from scratch on the target, above all with little data."
    teaching = (f"Both models saw the same {n} training structures. The fine-tune starts from "
                "everything the foundation model learned; the model from scratch has only "
                "these structures. The gap shrinks as the data grows.")
    if f is None or s is None:
        return Finding(2, "Fine-tuning beats scratch at small data", claim, None,
                       "Could not be measured: a small-data run failed.", teaching,
                       runs=_run_ids(study, "naive-small", "scratch-small"))
    ok = (f.target_forces_rmse_mev_per_a or math.inf) < (s.target_forces_rmse_mev_per_a or
                                                         math.inf)
    table = [{"model": name, "training structures": n,
              "target force RMSE (meV/Å)": r.target_forces_rmse_mev_per_a,
              "target energy RMSE (meV/atom)": r.target_energy_rmse_mev_per_atom}
             for name, r in (("naive fine-tune", f), ("from scratch", s))]
    summary = (f"On {n} training structures: naive fine-tuning reaches a target force RMSE of "
               f"{_fmt(f.target_forces_rmse_mev_per_a, 'meV/Å')}, training from scratch "
               f"{_fmt(s.target_forces_rmse_mev_per_a, 'meV/Å')}. "
               + ("Reproduced." if ok else "Not reproduced here."))
    return Finding(2, "Fine-tuning beats scratch at small data", claim, ok, summary, teaching,
                   table, _run_ids(study, "naive-small", "scratch-small"))


def _strategy_title(s: str) -> str:
    from .strategies import STRATEGIES

    return STRATEGIES[s].title if s in STRATEGIES else s


def _finding_retention(study: Study, pt_row) -> Finding:
    claim = "Multihead replay is the only strategy that keeps the pretraining accuracy."
    teaching = ("Forgetting ratio: force error on held-out pretraining structures over the "
                "foundation model's (1 = nothing forgotten). A replay model keeps training its "
                "pretraining head on pretraining structures while the target head learns, so the shared "
                "weights cannot drift far from what the foundation model knew.")
    table = []
    for s in study.inputs.strategies:
        r = pt_row(s)
        if r is not None and r.forgetting_ratio is not None:
            table.append({"strategy": _strategy_title(s), "key": s,
                          "head": _head_name(r.head, multihead=s in REPLAY),
                          "forgetting ratio": r.forgetting_ratio,
                          "pretraining force RMSE (meV/Å)": r.pretrain_forces_rmse_mev_per_a,
                          "learning rate": _lr(study.tuned.get(s))})
    if not table:
        return Finding(3, "Multihead replay keeps pretraining accuracy best", claim, None,
                       "Could not be measured: no forgetting ratio (pretraining test set "
                       "missing or runs failed).", teaching, runs=list(study.finals.values()))
    table.sort(key=lambda d: d["forgetting ratio"])
    best = table[0]
    ok = best["key"] in REPLAY
    summary = (f"Lowest forgetting ratio: {best['strategy']} ({best['forgetting ratio']:.2f}); "
               + ", ".join(f"{d['strategy']} {d['forgetting ratio']:.2f}" for d in table[1:])
               + ". " + ("Reproduced: a replay strategy forgets least." if ok else
                         "Not reproduced here: a strategy without replay forgot less."))
    for d in table:
        d.pop("key")
    return Finding(3, "Multihead replay keeps pretraining accuracy best", claim, ok, summary,
                   teaching, table, list(study.finals.values()))


def _finding_close(study: Study, target_row) -> Finding:
    claim = ("Naive fine-tuning converges best for one system; multihead replay, at its own "
             "learning rate, stays close to it on the target.")
    teaching = ("Replay spends part of every step on the pretraining structures, so on the "
                "target alone it converges a little slower than naive fine-tuning. With a "
                "learning rate tuned for it (the pilot), the price is small; at a default tuned "
                "for long runs it can look as if replay cannot learn the target at all.")
    n, m = target_row("naive"), target_row("multihead-replay")
    table = []
    for s in study.inputs.strategies:
        r = target_row(s)
        if r is not None:
            table.append({"strategy": _strategy_title(s),
                          "target force RMSE (meV/Å)": r.target_forces_rmse_mev_per_a,
                          "target energy RMSE (meV/atom)": r.target_energy_rmse_mev_per_atom,
                          "learning rate": _lr(study.tuned.get(s))})
    if n is None or m is None or n.target_forces_rmse_mev_per_a is None or \
            m.target_forces_rmse_mev_per_a is None:
        return Finding(4, "Multihead replay stays close to naive on the target", claim, None,
                       "Could not be measured: the naive or the multihead replay run failed.",
                       teaching, table, _run_ids(study, "naive", "multihead-replay"))
    ratio = m.target_forces_rmse_mev_per_a / n.target_forces_rmse_mev_per_a
    ok = ratio <= CLOSE_FACTOR
    summary = (f"Target force RMSE: naive {_fmt(n.target_forces_rmse_mev_per_a, 'meV/Å')} (lr "
               f"{study.tuned.get('naive'):g}), multihead replay "
               f"{_fmt(m.target_forces_rmse_mev_per_a, 'meV/Å')} (lr "
               f"{study.tuned.get('multihead-replay'):g}): {ratio:.2f}× naive's. "
               + (f"Reproduced (within {CLOSE_FACTOR:g}×)." if ok else
                  f"Not reproduced here: more than {CLOSE_FACTOR:g}× naive's."))
    return Finding(4, "Multihead replay stays close to naive on the target", claim, ok, summary,
                   teaching, table, _run_ids(study, "naive", "multihead-replay"))


def _finding_fm(study: Study, target_row) -> Finding:
    claim = "The quality of the foundation model carries through fine-tuning."
    teaching = ("The same fine-tuning, data, E0 method and learning rate from two foundation "
                "models: the weaker one (smaller, trained on less data) starts further from the "
                "target and ends further from it.")
    s, w = target_row("naive"), target_row("naive-weak")
    fs, fw = target_row("foundation"), target_row("weak foundation")
    if s is None or w is None:
        why = ("no weaker foundation model was given" if not study.inputs.weak_model else
               "a run failed")
        return Finding(5, "FM quality carries through", claim, None,
                       f"Could not be measured: {why}.", teaching,
                       runs=_run_ids(study, "naive", "naive-weak"))
    ok = (s.target_forces_rmse_mev_per_a or math.inf) < (w.target_forces_rmse_mev_per_a or
                                                         math.inf)
    table = [{"foundation model": name, "zero-shot target force RMSE (meV/Å)":
              None if z is None else z.target_forces_rmse_mev_per_a,
              "after naive fine-tuning (meV/Å)": r.target_forces_rmse_mev_per_a,
              "after naive fine-tuning, energy (meV/atom)": r.target_energy_rmse_mev_per_atom}
             for name, z, r in (("strong", fs, s), ("weak", fw, w))]
    summary = (f"Naive fine-tuning from the strong foundation model: target force RMSE "
               f"{_fmt(s.target_forces_rmse_mev_per_a, 'meV/Å')}; from the weak one "
               f"{_fmt(w.target_forces_rmse_mev_per_a, 'meV/Å')}. "
               + ("Reproduced." if ok else "Not reproduced here."))
    return Finding(5, "FM quality carries through", claim, ok, summary, teaching, table,
                   _run_ids(study, "naive", "naive-weak"))


#: Soft spots (structures keeping < half the reference's short-range force) that a model may
#: add to the foundation model's, in percent of the probe set, and still keep its repulsion.
SOFT_SPOT_MARGIN_PERCENT = 5.0


def _head_name(head: str | None, multihead: bool = True) -> str:
    """How a head reads in a table: a replay model's heads by their role (mace names the
    fine-tuning head ``Default`` and the replayed one ``pt_head``); any other by its name."""
    if not multihead:
        return "the only head"
    return {"pt_head": "pretraining head", "Default": "target head"}.get(head or "",
                                                                       f"head {head}")


def display_name(label: str, *, plot: bool = False) -> str:
    """A model-head label in words: ``"multihead-replay [pt_head]"`` ->
    ``"Multihead replay, pretraining head"`` (``plot``: ``"Multihead replay [pretraining
    head]"``, the form plots group colours by). Reference curves keep their label."""
    role, _, head = label.partition(" [")
    head = head.rstrip("]")
    if role == "reference":
        return label
    name = "Foundation model" if role == "foundation" else _strategy_title(role)
    if not head:
        return name
    return f"{name} [{_head_name(head)}]" if plot else f"{name}, {_head_name(head)}"


#: The columns of the dimer-wall table, in reading order.
WALL_COLUMNS = ["pair", "reference wall (eV)", "foundation wall (eV)", "naive wall (eV)",
                "naive change vs foundation (%)", "multihead replay, target head wall (eV)",
                "replay change vs foundation (%)", "foundation", "naive",
                "multihead replay, target head"]


def _wall_table(walls: dict[str, dict[str, Any]], pairs: list[str]) -> list[dict[str, Any]]:
    """One row per element pair: the reference, foundation, naive and replay walls."""
    table = []
    replay = "multihead-replay [Default]"
    for pair in pairs:
        w = walls.get(pair, {})
        row: dict[str, Any] = {"pair": pair,
                               "reference wall (eV)": next((v.get("reference_wall_ev")
                                                            for v in w.values()), None)}
        for name, shown in (("foundation", "foundation"), ("naive", "naive"),
                            (replay, "multihead replay, target head")):
            if name in w:
                row[f"{shown} wall (eV)"] = w[name]["wall_ev"]
                row[shown] = w[name]["verdict"]
        table.append(row)

    def change(row: dict, who: str) -> float | None:
        base, w = row.get("foundation wall (eV)"), row.get(f"{who} wall (eV)")
        if base is None or w is None or base < WALL_THRESHOLD:
            return None
        return round(100.0 * (w - base) / base, 1)

    for row in table:
        row["naive change vs foundation (%)"] = change(row, "naive")
        row["replay change vs foundation (%)"] = change(row, "multihead replay, target head")
    return [{k: r.get(k) for k in WALL_COLUMNS if any(k in x for x in table)} for r in table]


def _finding_repulsion(study: Study, walls: dict[str, dict[str, Any]], pairs: list[str],
                       has_reference: bool,
                       short_range: list[dict[str, Any]] | None = None,
                       probe_problem: str = "") -> Finding:
    """Finding 6 from the held-out short-range structures (many-body: soft spots) and the
    dimer walls (pairs). Reproduced when naive fine-tuning adds at least
    :data:`SOFT_SPOT_MARGIN_PERCENT` points of soft spots to the foundation model's while
    multihead replay adds fewer, or when naive loses a dimer wall that replay keeps."""
    title = "Naive loses short-range repulsion that replay keeps"
    claim = ("Naive fine-tuning loses the short-range repulsion that multihead replay keeps "
             "(the study's random structure search: atoms collapse into 'holes').")
    teaching = ("The target data never puts atoms much closer than a bond length, so nothing in "
                "it holds up the foundation model's short-range repulsion. Naive fine-tuning "
                "is free to soften it; replay keeps showing the network compressed "
                "pretraining structures. The probe takes compressed structures the foundation "
                "model never saw and asks how much of the reference's repulsive force each "
                "model keeps. A soft spot is a structure where a model keeps less than half "
                "of it: there, atoms are pushed apart too weakly and can collapse in MD or "
                "structure search. The dimer curves show the same on single pairs.")
    wall_table = _wall_table(walls, pairs)
    study.extra["dimer_walls"] = wall_table
    naive_lost = [r["pair"] for r in wall_table if r.get("naive") == "lost"]
    replay_kept = [r["pair"] for r in wall_table
                   if r.get("multihead replay, target head") == "kept"]
    fm_lost = [r["pair"] for r in wall_table if r.get("foundation") != "kept"]
    both = [p for p in naive_lost if p in replay_kept and p not in fm_lost]
    runs = _run_ids(study, "naive", "multihead-replay")

    # the dimer walls, in words
    worst = min((r for r in wall_table if r.get("naive change vs foundation (%)") is not None),
                key=lambda r: r["naive change vs foundation (%)"], default=None)
    r_worst = min((r for r in wall_table
                   if r.get("replay change vs foundation (%)") is not None),
                  key=lambda r: r["replay change vs foundation (%)"], default=None)
    if naive_lost:
        walls_text = (f"Dimer walls: naive fine-tuning lost {', '.join(naive_lost)}"
                      + (f", of which multihead replay kept {', '.join(both)}. " if both
                         else ". "))
    elif worst is not None and r_worst is not None:
        drop = -worst["naive change vs foundation (%)"]
        r_drop = -r_worst["replay change vs foundation (%)"]
        walls_text = ("Dimer walls: no pair lost its wall; naive fine-tuning lowered them by "
                      f"up to {max(drop, 0):.0f}% ({worst['pair']}), multihead replay "
                      + (f"by at most {r_drop:.0f}% ({r_worst['pair']}). " if r_drop > 0.5
                         else "by none. "))
    else:
        walls_text = "Dimer walls: no pair lost its wall. "
    if fm_lost:
        walls_text += (f"The foundation model itself has no wall for {', '.join(fm_lost)}: "
                       "nothing to lose there. ")
    if not has_reference:
        walls_text += ("No reference dimer curves for this foundation model: walls are judged "
                       "against the threshold alone. ")

    by = {r["model"]: r for r in short_range or []}
    fm, naive = by.get("foundation"), by.get("naive")
    replay = by.get("multihead-replay [Default]") or next(
        (r for k, r in by.items() if k.startswith("multihead-replay") and "pt_head" not in k),
        None)
    measured_walls = any("naive" in r for r in wall_table) and \
        any("multihead replay, target head" in r for r in wall_table)
    if not (fm and naive and replay) and not measured_walls:
        return Finding(6, title, claim, None, probe_problem + "Could not be measured: naive "
                       "fine-tuning and multihead replay must both be among the study's "
                       "strategies and finish.", teaching, wall_table, runs)
    if not (fm and naive and replay):
        ok = bool(both)
        summary = (probe_problem + walls_text
                   + ("" if probe_problem else "No held-out short-range structures were "
                      "given, so only the dimer walls were probed. ")
                   + ("Reproduced." if ok else "Not reproduced here: no wall was lost."))
        return Finding(6, title, claim, ok, summary, teaching, wall_table, runs)

    def share(r: dict) -> str:
        return (f"keeps a median {100 * r['median_force_kept']:.0f}% of the reference's "
                f"short-range force, with {r['soft_spots']} soft spots "
                f"({r['soft_share_percent']:.0f}%)")

    naive_up = naive["soft_share_percent"] - fm["soft_share_percent"]
    replay_up = replay["soft_share_percent"] - fm["soft_share_percent"]
    naive_loses = naive_up >= SOFT_SPOT_MARGIN_PERCENT
    replay_keeps = replay_up < SOFT_SPOT_MARGIN_PERCENT
    ok = (naive_loses and replay_keeps) or bool(both)
    table = [{"model": display_name(r["model"]),
              "reference force kept, median (%)": round(100 * r["median_force_kept"], 1),
              "soft spots (structures)": r["soft_spots"],
              "soft spots (% of structures)": r["soft_share_percent"],
              "soft spots added vs foundation (points)":
                  round(r["soft_share_percent"] - fm["soft_share_percent"], 1),
              "force RMSE (eV/Å)": r["forces_rmse_ev_per_a"]} for r in short_range]
    verdict = ("Reproduced: naive fine-tuning softened the short-range repulsion, replay kept "
               "it." if ok else
               "Not reproduced here: " + ("naive fine-tuning kept the short-range repulsion "
                                           "as well." if not naive_loses else
                                           "multihead replay softened it too."))
    left_out = [f"{n} with elements not every model covers" if k == "n_left_out" else
                f"{n} with reference forces too small to probe"
                for k in ("n_left_out", "n_weak_forces") if (n := fm.get(k) or 0)]
    summary = (f"On {fm['n_structures']} compressed structures held out from pretraining"
               + (f" (leaving out {' and '.join(left_out)})" if left_out else "")
               + f", the foundation model {share(fm)}. After naive fine-tuning the model {share(naive)}; "
               f"multihead replay (target head) {share(replay)}. " + walls_text + verdict)
    return Finding(6, title, claim, ok, summary, teaching, table, runs + [
        rid for role, rid in study.finals.items()
        if role in study.inputs.strategies and role not in ("naive", "multihead-replay")])
