"""The study's analysis: its final models on the test sets, dimer curves and the short-range
probe, one step after another, then its findings (:mod:`mlipft_core.findings`).

Each step is told to an :class:`AnalysisSteps` as it begins, with its share of the whole
(steps are weighted by their estimated cost, as :func:`mlipft_core.study_plan.plan`
estimates them), so that every page and command shows where the analysis stands.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import findings
from .analysis import ModelHead, element_pairs, model_heads, repulsion, short_range_probe
from .compare import ComparisonRow, ModelRef, compare, model_heads_of
from .errors import MlipftError
from .findings import Evidence, display_name, role_title
from .jobs.records import RunStore
from .probes import random_structure_search_cached, reference_curve, reference_dimer_curves
from .referencing import composition, model_e0s_of
from .study_plan import (
    CPU_SECONDS_PER_DIMER_CURVE,
    CPU_SECONDS_PER_EVALUATION,
    CPU_SECONDS_PER_SEARCH_STRUCTURE,
)
from .workspace import Workspace

if TYPE_CHECKING:  # types only: the study runs this analysis
    from .study import Study, StudyProgress

_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight",
                 "nine", "ten", "eleven", "twelve")


class AnalysisSteps:
    """The analysis's steps as they go: each written to the study's record (``save``), so a
    page or command that did not start it shows where it stands, and told to ``report``
    (what ``look`` reads back).

    An exception ``report`` raises (a page closed or rerun while the analysis runs) stops the
    reports, not the analysis: it is raised again by :meth:`finish`, once the analysis has
    been saved."""

    def __init__(self, study: Study, save: Callable[[], None],
                 look: Callable[[], StudyProgress],
                 report: Callable[[StudyProgress], None] | None) -> None:
        self.study, self.save, self.look, self.report = study, save, look, report
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
        self.save()
        if self.report is not None and self.held is None:
            try:
                self.report(self.look())
            except BaseException as exc:  # noqa: BLE001 - held for finish()
                self.held = exc

    def finish(self) -> None:
        if self.report is not None and self.held is None:
            self.report(self.look())
        if self.held is not None:
            raise self.held


@dataclass
class _Models:
    """The models the analysis looks at, from the study's final runs."""

    done: dict[str, Any]                         # role -> run record of a finished run
    failed: dict[str, str] = field(default_factory=dict)   # role -> why it did not finish
    compared: list[ModelRef] = field(default_factory=list)  # on the test sets
    weak: list[ModelRef] = field(default_factory=list)      # the weaker FM and its fine-tune
    dimers: list[ModelHead] = field(default_factory=list)   # dimer curves
    probed: list[ModelHead] = field(default_factory=list)   # the short-range probe
    searched: list[ModelHead] = field(default_factory=list)  # the random structure search


@dataclass
class _Steps:
    """The names of the analysis's steps."""

    compare: str
    weak: str = "comparing the weaker foundation model and its fine-tune"
    probe: str = "probing the held-out compressed structures"
    search: str = "the random structure search: relaxing random compact structures"
    findings: str = (f"stating the {_NUMBER_WORDS[len(findings.FINDINGS)]} findings"
                     if len(findings.FINDINGS) < len(_NUMBER_WORDS) else "stating the findings")

    @staticmethod
    def dimers(pair: str) -> str:
        return f"dimer curves of {pair}"


def _models(study: Study, ws: Workspace) -> _Models:
    inp = study.inputs
    store = RunStore(ws)
    m = _Models({})
    for role, rid in study.finals.items():
        rec = store.read(rid)
        if rec.status == "done" and rec.model_path:
            m.done[role] = rec
        else:
            m.failed[role] = rec.reason or rec.status
    done = m.done
    m.compared = [ModelRef("foundation", inp.model)] + [
        ModelRef(role, rec.model_path, inp.model, rec.strategy, rec.id)
        for role, rec in done.items() if role != "naive-weak"]
    m.weak = ([ModelRef("weak foundation", inp.weak_model),
               ModelRef("naive-weak", done["naive-weak"].model_path, inp.weak_model,
                        "naive", done["naive-weak"].id)]
              if "naive-weak" in done and inp.weak_model else [])
    m.dimers = model_heads({"foundation": inp.model,
                            **{r: done[r].model_path for r in ("naive", "multihead-replay")
                               if r in done}})
    # the many-body probe: held-out compressed structures, every fine-tune's target head and
    # the replay model's pretraining head against the foundation model
    order = ["foundation", *inp.strategies]
    m.probed = sorted(  # each model's target head first
        (h for h in model_heads({"foundation": inp.model,
                                 **{r: done[r].model_path for r in inp.strategies
                                    if r in done}})
         if h.head != "pt_head" or h.name == "multihead-replay"),
        key=lambda h: (order.index(h.name), h.head == "pt_head"))
    m.searched = [h for h in m.probed if h.head != "pt_head"]
    if inp.foundation_head:  # a multi-head foundation model: only the head fine-tuned from
        def chosen(h: ModelHead) -> bool:
            return h.name != "foundation" or h.head in (None, inp.foundation_head)

        m.dimers = [h for h in m.dimers if chosen(h)]
        m.probed = [h for h in m.probed if chosen(h)]
        m.searched = [h for h in m.searched if chosen(h)]
    return m


def _n_in(path: str | None) -> int:
    return len(composition(path)[1]) if path else 0


def _plan(study: Study, m: _Models, pairs: list[str], steps: AnalysisSteps) -> _Steps:
    """The steps, each weighted by its estimated cost (as in the study's plan)."""
    inp = study.inputs
    names = _Steps("comparing the models on the target and pretraining test sets"
                   if inp.pretrain_test else "comparing the models on the target test set")
    per_head = (_n_in(inp.test) + _n_in(inp.pretrain_test)) * CPU_SECONDS_PER_EVALUATION
    steps.plan([
        (names.compare, per_head * sum(len(model_heads_of(r.path)) for r in m.compared)),
        *([(names.weak, per_head * len(m.weak))] if m.weak else []),
        *((names.dimers(pair), CPU_SECONDS_PER_DIMER_CURVE * len(m.dimers)) for pair in pairs),
        *([(names.probe, CPU_SECONDS_PER_EVALUATION * _n_in(inp.short_range_test)
            * len(m.probed))] if inp.short_range_test else []),
        (names.search, CPU_SECONDS_PER_SEARCH_STRUCTURE * inp.search_structures
         * len(m.searched)),
        (names.findings, 1.0)])
    return names


def _compare(study: Study, ws: Workspace, m: _Models, steps: AnalysisSteps, names: _Steps
             ) -> list[ComparisonRow]:
    """Every final model on the test sets, energies relative to each level's E0s; the weaker
    foundation model and its fine-tune against their own."""
    inp = study.inputs

    def told(name: str):
        def progress(done_: float, total: int, label: str, what: str) -> None:
            role, _, head = label.partition(" [")
            who = role_title(role, inp.small_size) + (
                ", pretraining head" if head.rstrip("]") == "pt_head" else "")
            steps.begin(name, f"{who}, {what}" if role else "", done_ / max(total, 1))
        return progress

    steps.begin(names.compare)
    pretrain = _disjoint_pretrain(study, m, ws)
    rows, _ = compare(m.compared, inp.test, pretrain, foundation=inp.model,
                      workspace=ws, target_e0=study.e0["anchored"],
                      progress=told(names.compare))
    if inp.foundation_head:  # the foundation model's other heads answer other questions
        rows = [r for r in rows if r.name != "foundation" or r.head == inp.foundation_head]
    if not m.weak:
        return rows
    steps.begin(names.weak)
    weak_rows, _ = compare(m.weak, inp.test, pretrain, foundation=inp.weak_model,
                           workspace=ws, progress=told(names.weak),
                           target_e0=study.e0.get("anchored_weak", study.e0["anchored"]))
    return rows + weak_rows


#: The replay subsets a run folder holds: the workbench's of a local file, mace's of its own
#: sets (written where mace runs).
REPLAY_SUBSETS = ("replay_subset.xyz", "mp_finetuning-*.xyz")


def _disjoint_pretrain(study: Study, m: _Models, ws: Workspace) -> str | None:
    """The pretraining test set without any structure a final run replayed (recorded in
    ``extra["pretrain_left_out"]``): forgetting is measured on structures no model trained
    on."""
    from .replay_sets import disjoint_from

    inp = study.inputs
    study.extra["pretrain_left_out"] = 0
    if not inp.pretrain_test:
        return None
    subsets = [f for rec in m.done.values() if rec.model_path
               for pattern in REPLAY_SUBSETS for f in Path(rec.model_path).parent.glob(pattern)]
    if not subsets:
        return inp.pretrain_test
    path, left_out = disjoint_from(inp.pretrain_test, subsets, ws)
    study.extra["pretrain_left_out"] = left_out
    return path


def _dimers(study: Study, ws: Workspace, m: _Models, pairs: list[str], steps: AnalysisSteps,
            names: _Steps) -> tuple[dict[str, dict[str, Any]], bool]:
    """Dimer curves of the target's element pairs (``extra["dimers"]``) and each model
    head's wall verdict per pair; whether reference curves judged them."""
    ref_curves = reference_dimer_curves(study.inputs.model)
    walls: dict[str, dict[str, Any]] = {}
    series_of: dict[str, Any] = {}
    for k, pair in enumerate(pairs, 1):
        steps.begin(names.dimers(pair), f"pair {k} of {len(pairs)}")
        series, verdicts = repulsion(m.dimers, pair, workspace=ws,
                                     reference_curve=reference_curve(ref_curves, pair))
        series_of[pair] = series
        walls[pair] = {v.model: v.to_dict() for v in verdicts}
    study.extra["dimers"] = series_of
    return walls, ref_curves is not None


def _probe(study: Study, ws: Workspace, m: _Models, steps: AnalysisSteps, names: _Steps
           ) -> tuple[list[dict[str, Any]] | None, str]:
    """The short-range probe of every model head (``extra["short_range"]``), or why it could
    not run (the other findings stand)."""
    inp = study.inputs
    if not inp.short_range_test:
        return None, ""
    probed = iter(range(len(m.probed)))

    def progress(_text: str) -> None:  # told once per model, in order
        k = next(probed, len(m.probed) - 1)
        steps.begin(names.probe, f"{display_name(m.probed[k].label)}, model {k + 1} of "
                                 f"{len(m.probed)}", k / len(m.probed))

    steps.begin(names.probe)
    short_range, problem = None, ""
    try:
        short_range = [r.to_dict() for r in short_range_probe(
            m.probed, inp.short_range_test, workspace=ws, progress=progress)]
    except MlipftError as exc:  # the short-range finding says why
        problem = f"The short-range structures could not be probed: {exc}. "
    study.extra["short_range"] = short_range
    return short_range, problem


def search_elements(study: Study) -> list[str]:
    """The elements of the random structure search: the target's that the foundation model
    covers."""
    elements, _ = composition(study.inputs.test)
    try:
        covered = set(model_e0s_of(study.inputs.model))
    except MlipftError:
        covered = set(elements)
    return sorted(e for e in elements if e in covered)


def _search(study: Study, ws: Workspace, m: _Models, steps: AnalysisSteps, names: _Steps
            ) -> tuple[list[dict[str, Any]] | None, str, list[str]]:
    """The random structure search with every model's target head
    (``extra["search_results"]``), or why it could not run (the other findings stand)."""
    elements = search_elements(study)
    n = int(study.inputs.search_structures)
    steps.begin(names.search)
    out: list[dict[str, Any]] = []
    try:
        for k, h in enumerate(m.searched):
            who = f"{display_name(h.label)}, model {k + 1} of {len(m.searched)}"

            def progress(step: int, total: int, k: int = k, who: str = who) -> None:
                steps.begin(names.search, f"{who}, step {step} of at most {total}",
                            (k + step / total) / len(m.searched))

            steps.begin(names.search, who, k / len(m.searched))
            res = random_structure_search_cached(h.path, elements, head=h.head, workspace=ws,
                                                 trusted=True, progress=progress,
                                                 n_structures=n)
            out.append({"model": h.label, **res.to_dict()})
    except MlipftError as exc:  # the short-range finding says why
        study.extra["search_results"] = None
        return None, f"The random structure search could not run: {exc}. ", elements
    study.extra["search_results"] = out
    return out, "", elements


def analyse(study: Study, ws: Workspace, steps: AnalysisSteps) -> None:
    """Evaluate the final runs and state the findings (stored on ``study``); ``steps`` is
    told each step as it begins."""
    m = _models(study, ws)
    elements, _ = composition(study.inputs.test)
    pairs = element_pairs(elements)
    names = _plan(study, m, pairs, steps)
    rows = _compare(study, ws, m, steps, names)
    walls, has_reference = _dimers(study, ws, m, pairs, steps, names)
    short_range, problem = _probe(study, ws, m, steps, names)
    search, search_problem, elements = _search(study, ws, m, steps, names)
    study.extra["rows"] = [r.to_dict() for r in rows]
    study.extra["failed_runs"] = m.failed
    steps.begin(names.findings)
    study.findings = findings.state_all(Evidence(study, rows, walls, pairs, has_reference,
                                                 short_range, problem, search=search,
                                                 search_problem=search_problem,
                                                 search_elements=elements))
