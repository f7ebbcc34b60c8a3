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
from .workspace import (Workspace, absolute_paths, atomic_write_json,
                        read_json_checked, set_aside_if_damaged, strict_json)

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
    #: where the analysis stands, written as it goes (see :func:`analyse`): ``step`` (1-based)
    #: of ``steps``, ``text``, ``detail``, ``fraction`` (of the whole analysis, each step
    #: weighted by its estimated cost), ``started``; when done also ``seconds``
    analysis: dict[str, Any] = field(default_factory=dict)

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
    path = _folder(ws, study.id) / "study.json"
    set_aside_if_damaged(path)  # a damaged record is kept aside, not overwritten
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

    def known(cls, d: Any) -> dict[str, Any]:  # fields of another version are left aside
        names = {f.name for f in fields(cls)}
        return {k: v for k, v in (d or {}).items() if k in names}

    try:
        raw = known(Study, raw)
        raw["inputs"] = StudyInputs(**known(StudyInputs, raw["inputs"]))
        raw["findings"] = [Finding(**known(Finding, f)) for f in raw.get("findings", [])]
        return Study(**raw)
    except (KeyError, TypeError, AttributeError) as exc:
        raise StudyError(f"the study {study_id} cannot be read ({path} lacks or mistypes "
                         f"a field: {exc}); start it again") from exc


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


#: What one training run costs on CPU with the demo models (32 channels, 2 layers), as the
#: local executor runs them on a 2-core machine: two runs side by side, one thread each.
#: Measured from mace_run_train's own log of 1-epoch and 4-epoch runs on the demo SN2 data
#: (132 training and 33 validation structures of 6 atoms): each epoch took 3.5-5.3 s, about
#: 0.03 s per training structure with its share of the validation; everything else a run does
#: (start-up, data preparation, the foundation model's E0 head, the final evaluation and the
#: saved model) took about 40 s. Larger foundation models cost many times more per structure;
#: a GPU much less.
CPU_SECONDS_PER_STRUCTURE_EPOCH = 0.03
CPU_SECONDS_PER_RUN = 40.0
#: What the analysis costs on CPU with the demo models, one thread, on the same machine: one
#: model head on one structure of the test, pretraining or probe sets (20 and 292
#: pretraining structures took 4.8 and 21 s, so about 0.06 s a structure with its share of
#: loading the model), and one model head's dimer curve of one element pair (1.2-2.2 s).
CPU_SECONDS_PER_EVALUATION = 0.06
CPU_SECONDS_PER_DIMER_CURVE = 2.0


@dataclass
class StudyPlan:
    """What a study will run (:func:`plan`), and about how long it takes on CPU."""

    strategies: list[str]
    learning_rates: int              # per pilot
    pilot_epochs: int
    finals: list[str]                # roles, as :func:`final_roles`
    epochs: int                      # per final run
    n_train: int                     # training structures (IsolatedAtom ones aside)
    small_size: int
    n_replay: int                    # pretraining structures a replay strategy adds per epoch
    slots: int | None                # runs side by side (the local executor's CPU slots);
    #                                  None: a cluster, every run of a phase at once
    structure_epochs: int            # training structures times epochs, over every run
    cpu_seconds: float               # the sum of every run's estimated time on CPU
    seconds: float                   # wall time on CPU: pilots, then finals, ``slots`` at a time
    evaluations: int                 # model heads times structures the analysis evaluates
    dimer_curves: int                # model heads times element pairs
    analysis_seconds: float          # the analysis on CPU, after the runs

    @property
    def pilot_runs(self) -> int:
        return len(self.strategies) * self.learning_rates

    @property
    def n_runs(self) -> int:
        return self.pilot_runs + len(self.finals)

    def describe(self) -> str:
        """The plan and its estimate in one paragraph, every count with its unit."""
        from .tune import count_of

        text = (f"{count_of(self.n_runs, 'run')}: "
                f"{count_of(len(self.strategies), 'strategy', 'strategies')} × "
                f"{count_of(self.learning_rates, 'learning rate')} × "
                f"{count_of(self.pilot_epochs, 'epoch')} of pilots, then "
                f"{count_of(len(self.finals), 'final run')} of "
                f"{count_of(self.epochs, 'epoch')} each (the two small-data ones on "
                f"{self.small_size} of the {count_of(self.n_train, 'training structure')}). ")
        where = (f"on this machine, {count_of(self.slots, 'run')} at a time" if self.slots
                 else "with every run of a phase running at once (the cluster's queue adds "
                      "its own wait)")
        return text + (f"Estimated time on CPU, for a foundation model the size of the demo "
                       f"ones: {_duration(self.seconds)} for the runs ({where}), then "
                       f"{_duration(self.analysis_seconds)} for the analysis. A larger model "
                       "takes longer, a GPU much less, and other work on the machine slows "
                       "it down.")


def _duration(seconds: float) -> str:
    """``"about 4 minutes"``, ``"about 1 hour 20 minutes"``."""
    from .tune import count_of

    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return f"about {count_of(minutes, 'minute')}"
    h, m = divmod(minutes, 60)
    return f"about {count_of(h, 'hour')}" + (f" {count_of(m, 'minute')}" if m else "")


def plan(inputs: StudyInputs, workspace: Workspace | None = None) -> StudyPlan:
    """The runs a study of ``inputs`` queues (the same :func:`pilot_size` and
    :func:`final_roles` that start it) and their estimated time on CPU: for every run
    :data:`CPU_SECONDS_PER_RUN` plus :data:`CPU_SECONDS_PER_STRUCTURE_EPOCH` times its
    training structures (the replay strategies' pretraining structures too) times its
    epochs; pilots, then finals, each phase ``slots`` runs at a time. The analysis:
    :data:`CPU_SECONDS_PER_EVALUATION` per model head and structure it evaluates,
    :data:`CPU_SECONDS_PER_DIMER_CURVE` per model head and element pair."""
    from .analysis import element_pairs
    from .jobs.local import cpu_slots
    from .referencing import composition, file_version

    ws = workspace or Workspace()
    n_train = _n_structures(*file_version(inputs.train))
    n_replay = _n_structures(*file_version(inputs.replay)) if inputs.replay else 0
    slots = cpu_slots(ws.root) if inputs.executor in (None, "local") else None

    def per_epoch(strategy: str) -> int:
        return n_train + (n_replay if strategy in REPLAY else 0)

    n_lr = pilot_size(inputs)
    pilots = [(per_epoch(s), inputs.pilot_epochs) for s in inputs.strategies for _ in range(n_lr)]
    roles = final_roles(inputs)
    finals = [(inputs.small_size if role in ("naive-small", "scratch-small") else
               per_epoch(role), inputs.epochs) for role in roles]

    def cost(n: int, epochs: int) -> float:
        return CPU_SECONDS_PER_RUN + CPU_SECONDS_PER_STRUCTURE_EPOCH * n * epochs

    def wall(runs: list[tuple[int, int]]) -> float:
        """A phase's wall time: its runs shared out over the slots (all at once on a
        cluster), never shorter than its longest run."""
        costs = [cost(*r) for r in runs]
        longest = max(costs, default=0.0)
        return longest if slots is None else max(sum(costs) / slots, longest)

    # the analysis (see analyse): every final model's heads on the test sets (the weaker
    # foundation model and its fine-tune too), the probe's heads on the compressed
    # structures, the dimer curves of foundation, naive and multihead replay
    def heads(role: str) -> int:
        return 2 if role in REPLAY else 1

    def n_in(path: str | None) -> int:
        return len(composition(path)[1]) if path else 0

    elements, _ = composition(inputs.test)
    n_eval = n_in(inputs.test) + n_in(inputs.pretrain_test)
    compared = 1 + sum(heads(r) for r in roles if r != "naive-weak") + (
        2 if "naive-weak" in roles else 0)
    probed = (1 + len(inputs.strategies) + ("multihead-replay" in inputs.strategies)
              if inputs.short_range_test else 0)
    evaluations = compared * n_eval + probed * n_in(inputs.short_range_test)
    dimer_curves = len(element_pairs(elements)) * (1 + sum(
        heads(r) for r in ("naive", "multihead-replay") if r in inputs.strategies))
    return StudyPlan(list(inputs.strategies), n_lr, inputs.pilot_epochs, roles, inputs.epochs,
                     n_train, inputs.small_size, n_replay, slots,
                     sum(n * e for n, e in pilots + finals),
                     sum(cost(*r) for r in pilots + finals), wall(pilots) + wall(finals),
                     evaluations, dimer_curves,
                     CPU_SECONDS_PER_EVALUATION * evaluations
                     + CPU_SECONDS_PER_DIMER_CURVE * dimer_curves)


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


def start(inputs: StudyInputs, workspace: Workspace | None = None,
          report: Callable[[StudyProgress], None] | None = None) -> Study:
    """Create a study (E0s, then one pilot per strategy) or return the existing one with the
    same inputs, which then goes on where it stands (a failed one is tried again); ``report``
    as for :func:`advance`."""
    from .jobs import _workshop_checks

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
            _workshop_checks(ws, pilot_size(inputs))  # room for one pilot now
            study = Study(sid, inputs, "pilots", time.time(), e0=_fit_e0s(inputs))
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


def final_roles(inputs: StudyInputs) -> list[str]:
    """The final runs a study plans, by role, in order: every strategy at its tuned learning
    rate; naive fine-tuning with ``average`` E0s; naive fine-tuning of the weaker foundation
    model (when one is given); naive fine-tuning and training from scratch on the small
    training set. The plan, the progress and the queued runs all count these."""
    return [*inputs.strategies, "naive-average-e0",
            *(["naive-weak"] if inputs.weak_model else []), "naive-small", "scratch-small"]


def _final_specs(study: Study) -> dict[str, Any]:
    """The specs of the final runs (:func:`final_roles`) that can run: a strategy whose pilot
    found no learning rate is left out, and so are the naive variants when naive's did not."""
    inp = study.inputs
    anchored = study.e0["anchored"]
    naive_lr = study.tuned.get("naive")
    out = {}
    for role in final_roles(inp):
        if role in inp.strategies:
            lr = study.tuned.get(role)
            if lr is None:
                continue
            sp = _spec(inp, role, e0=anchored, lr=lr, name=f"study-{role}")
            sp.tuning = {"pilot_sweep": study.pilots[role], "best_lr": lr,
                         "epochs": inp.pilot_epochs,
                         "grid": [p["lr"] for p in study.extra.get("pilots", {}).get(role, {})
                                  .get("results", [])]}
            out[role] = sp
        elif role == "scratch-small":
            out[role] = _spec(inp, "scratch", e0=anchored, name="study-scratch-small")
        elif naive_lr is None:
            continue
        elif role == "naive-average-e0":
            out[role] = _spec(inp, "naive", e0=study.e0["average"], lr=naive_lr,
                              name="study-naive-average-e0")
        elif role == "naive-weak" and "anchored_weak" in study.e0:
            out[role] = _spec(inp, "naive", e0=study.e0["anchored_weak"], lr=naive_lr,
                              model=inp.weak_model, name="study-naive-weak-fm")
        elif role == "naive-small":
            out[role] = _spec(inp, "naive", e0=anchored, lr=naive_lr, name="study-naive-small")
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
    from . import jobs
    from .jobs.records import FINAL
    from .tune import count_of

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
    from .tune import count_of

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
                    study.analysis = {}
                    save(ws, study)
    except (RunNotFoundError, MlipftError) as exc:
        study.stage, study.message = "failed", f"{exc} (run the study again to retry)"
        save(ws, study)
        return study
    if study.stage == "analysis":
        steps = _AnalysisSteps(study, ws, report)
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


class _AnalysisSteps:
    """The analysis's steps as they go: each written to ``study.json`` (``analysis``), so a
    page or command that did not start it shows where it stands, and told to ``report``.

    An exception ``report`` raises (a page closed or rerun while the analysis runs) stops the
    reports, not the analysis: it is raised again by :meth:`finish`, once the analysis has
    been saved."""

    def __init__(self, study: Study, ws: Workspace,
                 report: Callable[[StudyProgress], None] | None) -> None:
        self.study, self.ws, self.report = study, ws, report
        self.started = time.time()
        self.names: list[str] = []
        self.weights: list[float] = []
        self.held: BaseException | None = None
        self.last_save = 0.0

    def plan(self, steps: list[tuple[str, float]]) -> None:
        """The steps the analysis takes, in order, each with its estimated cost (seconds):
        the weight of its share of the progress."""
        self.names = [name for name, _ in steps]
        self.weights = [max(float(w), 1e-3) for _, w in steps]

    def begin(self, name: str, detail: str = "", within: float = 0.0) -> None:
        """Step ``name`` (one of :meth:`plan`'s) has begun, or moved on ``within`` itself
        (the share of it done)."""
        k = self.names.index(name) + 1
        now = time.time()
        if self.study.analysis.get("step") == k and within < 1.0 and \
                now - self.last_save < 1.0:
            return  # within a step, at most one write a second
        self.last_save = now
        within = min(max(within, 0.0), 1.0)
        fraction = (sum(self.weights[:k - 1]) + within * self.weights[k - 1]) / sum(self.weights)
        self.study.analysis = {"step": k, "steps": len(self.names), "text": name,
                               "detail": detail, "fraction": round(fraction, 4),
                               "started": self.started}
        save(self.ws, self.study)
        if self.report is not None and self.held is None:
            try:
                self.report(progress(self.study, self.ws))
            except BaseException as exc:  # noqa: BLE001 - held for finish()
                self.held = exc

    def finish(self) -> None:
        if self.report is not None and self.held is None:
            self.report(progress(self.study, self.ws))
        if self.held is not None:
            raise self.held


def run(inputs: StudyInputs, workspace: Workspace | None = None, poll: float = 5.0,
        report: Callable[[StudyProgress], None] | None = None) -> Study:
    """Start (or resume) a study and wait for its findings; ``report`` is told where it
    stands after every look at its runs and at every step of its analysis."""
    ws = workspace or Workspace()
    study = start(inputs, ws, report=report)
    while study.stage not in ("done", "failed"):
        study = advance(study.id, ws, report=report)
        if report:
            report(progress(study, ws))
        if study.stage not in ("done", "failed"):
            time.sleep(poll)
    return study


# ----------------------------------------------------------------------------- analysis
def _fmt(v: float | None, unit: str = "", digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}{(' ' + unit) if unit else ''}"


def role_title(role: str, small_size: int | None = None) -> str:
    """A study's model by its role, in words: ``"naive-average-e0"`` -> ``"Naive fine-tuning
    with 'average' E0s"``."""
    small = f" on {small_size} structures" if small_size else " on the small training set"
    return {"foundation": "Foundation model", "weak foundation": "Weaker foundation model",
            "naive-average-e0": "Naive fine-tuning with 'average' E0s",
            "naive-weak": "Naive fine-tuning of the weaker foundation model",
            "naive-small": "Naive fine-tuning" + small,
            "scratch-small": "Training from scratch" + small}.get(role) or _strategy_title(role)


def analyse(study: Study, ws: Workspace, steps: _AnalysisSteps | None = None) -> None:
    """Evaluate the final runs and state the six findings (stored on ``study``); ``steps``
    is told each step as it begins (:func:`advance` records them in ``study.json``)."""
    from .analysis import element_pairs, model_heads, repulsion, short_range_probe
    from .compare import ModelRef, compare, model_heads_of
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
    elements, _ = composition(inp.test)
    pairs = element_pairs(elements)
    refs = [ModelRef("foundation", inp.model)]
    refs += [ModelRef(role, rec.model_path, inp.model, rec.strategy, rec.id)
             for role, rec in done.items() if role != "naive-weak"]
    weak_refs = ([ModelRef("weak foundation", inp.weak_model),
                  ModelRef("naive-weak", done["naive-weak"].model_path, inp.weak_model,
                           "naive", done["naive-weak"].id)]
                 if "naive-weak" in done and inp.weak_model else [])
    probe_models = model_heads({"foundation": inp.model,
                                **{r: done[r].model_path for r in ("naive", "multihead-replay")
                                   if r in done}})
    # the many-body probe: held-out compressed structures, every fine-tune's target head and
    # the replay model's pretraining head against the foundation model
    order = ["foundation", *inp.strategies]
    sr_models = sorted(  # each model's target head first
        (m for m in model_heads({"foundation": inp.model,
                                 **{r: done[r].model_path for r in inp.strategies
                                    if r in done}})
         if m.head != "pt_head" or m.name == "multihead-replay"),
        key=lambda m: (order.index(m.name), m.head == "pt_head"))

    # the steps, each weighted by its estimated cost (as in plan)
    def n_in(path: str | None) -> int:
        return len(composition(path)[1]) if path else 0

    per_head = (n_in(inp.test) + n_in(inp.pretrain_test)) * CPU_SECONDS_PER_EVALUATION
    s_compare = ("comparing the models on the target and pretraining test sets"
                 if inp.pretrain_test else "comparing the models on the target test set")
    s_weak = "comparing the weaker foundation model and its fine-tune"
    s_probe = "probing the held-out compressed structures"
    s_findings = "stating the six findings"
    steps = steps or _AnalysisSteps(study, ws, None)
    steps.plan([
        (s_compare, per_head * sum(len(model_heads_of(m.path)) for m in refs)),
        *([(s_weak, per_head * len(weak_refs))] if weak_refs else []),
        *((f"dimer curves of {pair}", CPU_SECONDS_PER_DIMER_CURVE * len(probe_models))
          for pair in pairs),
        *([(s_probe, CPU_SECONDS_PER_EVALUATION * n_in(inp.short_range_test)
            * len(sr_models))] if inp.short_range_test else []),
        (s_findings, 1.0)])

    def compare_progress(name: str):
        def told(done_: float, total: int, label: str, what: str) -> None:
            role, _, head = label.partition(" [")
            who = role_title(role, inp.small_size) + (
                ", pretraining head" if head.rstrip("]") == "pt_head" else "")
            steps.begin(name, f"{who}, {what}" if role else "", done_ / max(total, 1))
        return told

    steps.begin(s_compare)
    rows, _ = compare(refs, inp.test, inp.pretrain_test, foundation=inp.model, workspace=ws,
                      target_e0=study.e0["anchored"], progress=compare_progress(s_compare))
    weak_rows = []
    if weak_refs:
        steps.begin(s_weak)
        weak_rows, _ = compare(weak_refs, inp.test, inp.pretrain_test,
                               foundation=inp.weak_model, workspace=ws,
                               progress=compare_progress(s_weak),
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
    ref_curves = reference_dimer_curves(inp.model)
    walls: dict[str, dict[str, Any]] = {}
    dimer_series: dict[str, Any] = {}
    for pair in pairs:
        steps.begin(f"dimer curves of {pair}",
                    f"pair {pairs.index(pair) + 1} of {len(pairs)}")
        series, verdicts = repulsion(probe_models, pair, workspace=ws,
                                     reference_curve=reference_curve(ref_curves, pair))
        dimer_series[pair] = series
        walls[pair] = {v.model: v.to_dict() for v in verdicts}
    study.extra["dimers"] = dimer_series
    short_range: list[dict[str, Any]] | None = None
    probe_problem = ""
    if inp.short_range_test:
        probed = iter(range(len(sr_models)))

        def probe_progress(_text: str) -> None:  # told once per model, in order
            k = next(probed, len(sr_models) - 1)
            steps.begin(s_probe, f"{display_name(sr_models[k].label)}, model {k + 1} of "
                                 f"{len(sr_models)}", k / len(sr_models))

        steps.begin(s_probe)
        try:
            short_range = [r.to_dict() for r in short_range_probe(
                sr_models, inp.short_range_test, workspace=ws, progress=probe_progress)]
        except MlipftError as exc:  # the other findings stand; finding 6 says why
            probe_problem = f"The short-range structures could not be probed: {exc}. "
        study.extra["short_range"] = short_range
    study.extra["rows"] = [r.to_dict() for r in rows + weak_rows]
    study.extra["failed_runs"] = failed
    steps.begin(s_findings)
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


def _lost_walls(wall_table: list[dict[str, Any]]) -> tuple[list[str], list[str], list[str]]:
    """The pairs naive fine-tuning lost, those of them multihead replay kept (and the
    foundation model had), and the pairs the foundation model itself has no wall for."""
    naive_lost = [r["pair"] for r in wall_table if r.get("naive") == "lost"]
    replay_kept = {r["pair"] for r in wall_table
                   if r.get("multihead replay, target head") == "kept"}
    fm_lost = [r["pair"] for r in wall_table if r.get("foundation") != "kept"]
    both = [p for p in naive_lost if p in replay_kept and p not in fm_lost]
    return naive_lost, both, fm_lost


def _changes_in_words(changes: list[tuple[str, float]]) -> str:
    """How one model changed the walls it is compared on, from ``(pair, percent)`` pairs
    (percent: its wall relative to the foundation model's), e.g. ``"raised every wall by
    3.7–22.5% (most: C-F)"`` or ``"lowered 1 of 3 walls, by 12.0% (C-F), and raised 2 by up
    to 5.0% (H-H)"``. A change that rounds to 0.0% counts as unchanged."""
    up = sorted(((p, c) for p, c in changes if round(c, 1) > 0), key=lambda x: -x[1])
    down = sorted(((p, c) for p, c in changes if round(c, 1) < 0), key=lambda x: x[1])
    n, same = len(changes), len(changes) - len(up) - len(down)
    if n == 1:
        pair, c = changes[0]
        return (f"raised the {pair} wall by {c:.1f}%" if up else
                f"lowered the {pair} wall by {-c:.1f}%" if down else
                f"left the {pair} wall unchanged")
    if not up and not down:
        return "left every wall unchanged"
    for verb, group, other in (("raised", up, down), ("lowered", down, up)):
        if group and not other and not same:  # every wall the same way
            lo, hi = f"{abs(group[-1][1]):.1f}", f"{abs(group[0][1]):.1f}"
            return (f"{verb} every wall by {lo}%" if lo == hi else
                    f"{verb} every wall by {lo}–{hi}% (most: {group[0][0]})")
    parts = []
    for verb, group in (("lowered", down), ("raised", up)):
        if group:
            pair, c = group[0]
            size = f"by {abs(c):.1f}% ({pair})" if len(group) == 1 else \
                f"by up to {abs(c):.1f}% ({pair})"
            parts.append(f"{verb} {len(group)} of {n} walls, {size}" if not parts else
                         f"{verb} {len(group)} {size}")
    if same:
        parts.append(f"left {same} unchanged")
    return ", and ".join(parts) if len(parts) == 2 else f"{parts[0]}, {parts[1]} and {parts[2]}"


def walls_in_words(wall_table: list[dict[str, Any]]) -> str:
    """Finding 6's sentence on the dimer walls, from the wall table it describes
    (:func:`_wall_table`): the pairs naive fine-tuning lost (and which of them multihead
    replay kept), or else how each of the two changed the walls relative to the foundation
    model's (the table's change columns)."""
    naive_lost, both, _ = _lost_walls(wall_table)
    if naive_lost:
        return (f"Dimer walls: naive fine-tuning lost {', '.join(naive_lost)}"
                + (f", of which multihead replay kept {', '.join(both)}. " if both else ". "))
    said = []
    for who, col in (("naive fine-tuning", "naive change vs foundation (%)"),
                     ("multihead replay", "replay change vs foundation (%)")):
        changes = [(r["pair"], float(r[col])) for r in wall_table if r.get(col) is not None]
        if changes:
            said.append(f"{who} {_changes_in_words(changes)}")
    if not said:
        return "Dimer walls: no pair lost its wall. "
    return ("Dimer walls: no pair lost its wall; relative to the foundation model's, "
            + "; ".join(said) + ". ")


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
    _, both, fm_lost = _lost_walls(wall_table)
    runs = _run_ids(study, "naive", "multihead-replay")

    walls_text = walls_in_words(wall_table)
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
