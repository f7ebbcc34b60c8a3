"""Side-by-side comparison of models: target accuracy, forgetting, per head.

Forgetting is measured as a model's force RMSE on the held-out pretraining test set divided
by the foundation model's (the foundation model itself scores 1): :func:`forgetting_ratio`.
A multihead model answers with each head: its target head (``Default``, :func:`target_head`)
and its ``pt_head`` (:func:`pretraining_head`) are listed separately. The workshop's board
measures its figures with the same definitions.

Energy errors are measured relative to the E0s of each dataset's level of theory (see
:mod:`mlipft_core.referencing`): a head that carries the foundation model's E0s (the
foundation model, a ``pt_head``) is at the pretraining level, any other head at the target
level. On data of the other level its energies are compared as interaction energies; the raw
errors (mostly the E0 offset between levels) stay available as ``*_raw``.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from . import jobs
from .demo import isolated_file_for
from .errors import DataError, MlipftError, UnknownModelError
from .evaluate import EvaluationResult, evaluate_cached
from .jobs import provenance
from .jobs.records import InvalidRunNameError, RunNotFoundError, RunStore, check_name
from .referencing import composition, fitted_target_e0s, model_e0s_of, rereference
from .registry import get_spec, list_models, load_model, model_path, net_heads, resolve
from .workspace import file_version


@dataclass
class ModelRef:
    """A model to compare: a run's model or a registry/path model, with a display name."""

    name: str
    path: str
    foundation: str | None = None   # the foundation model a run started from
    strategy: str | None = None
    run_id: str | None = None


def resolve_models(items: Sequence[str], workspace=None) -> list[ModelRef]:
    """Model files (paths), registry names or run ids (finished runs) → :class:`ModelRef`.

    An existing file is a model file and a registry name a registry model, whatever runs
    exist; anything else must be the id of a run in the workspace's ``runs/`` folder (an id
    cannot reach outside it, and a run's model must lie in its own folder). A path that does
    not exist, an unknown name, an unreadable run and an unfinished run each get their own
    message.
    """
    out = []
    for item in items:
        item = str(item)
        p = Path(item).expanduser()
        if p.is_file() or get_spec(item) is not None:
            spec = resolve(item)
            out.append(ModelRef(spec.name if spec.source != "local" else p.name,
                                str(model_path(item, trusted=True))))
            continue
        store = RunStore(workspace)
        escaped: InvalidRunNameError | None = None
        try:
            rec = jobs.get_run(item, workspace)
        except RunNotFoundError:
            rec = None  # UnreadableRunError goes on: its message says what is wrong
        except InvalidRunNameError as exc:
            rec, escaped = None, exc
        if rec is None:
            if p.is_dir():
                raise UnknownModelError(f"{item}: is a folder, not a model file (nor a run id "
                                        f"in {store.root})")
            if p.suffix == ".model" or os.sep in item or "/" in item:
                raise UnknownModelError(f"model file not found: {p}")
            if escaped is not None:
                try:
                    check_name(item, "run id")
                except InvalidRunNameError:
                    pass
                else:
                    raise escaped  # a plain run id whose folder leads outside runs/
            names = ", ".join(s.name for s in list_models())
            raise UnknownModelError(f"{item!r} is neither a model file, a registry name "
                                    f"({names}) nor a run id in {store.root}")
        if rec.kind == "md":
            raise MlipftError(f"run {item} is a molecular-dynamics run: it has no model",
                              code="no_model")
        if rec.status != "done" or not rec.model_path:
            raise MlipftError(f"run {item} has no model yet (status {rec.status})",
                              code="no_model")
        folder = store.folder(rec.id).resolve()
        mpath = Path(rec.model_path)
        if not mpath.resolve().is_relative_to(folder):
            # a moved workspace keeps the model in the run folder under the same name
            mpath = folder / mpath.name
            if not mpath.resolve().is_relative_to(folder):
                raise MlipftError(f"run {item}: its model {rec.model_path} lies outside its run "
                                  f"folder {folder}", code="bad_run_model")
        if not mpath.is_file():
            raise MlipftError(f"run {item}: its model file {mpath} is missing", code="no_model")
        foundation = rec.spec.get("foundation_model") if isinstance(rec.spec, dict) else None
        # the files the run used, as it used them: a replaced file is refused, not loaded
        provenance.check(folder, "model", mpath, f"run {item}: its model")
        if isinstance(foundation, str) and foundation:
            provenance.check(folder, "foundation_model", foundation,
                             f"run {item}: its foundation model")
        out.append(ModelRef(rec.name, str(mpath), foundation if isinstance(foundation, str)
                            else None, rec.strategy, rec.id))
    return out


#: The head a fine-tune of this workbench answers the target data with.
TARGET_HEAD = "Default"
#: The head a multihead fine-tune keeps for the pretraining data.
PRETRAINING_HEAD = "pt_head"
#: The heads in words, for progress lines.
HEAD_WORDS = {TARGET_HEAD: "target head", PRETRAINING_HEAD: "pretraining head"}


def file_heads(path: str | Path) -> list[str]:
    """The heads of a (trusted) model file; the file is loaded once per content version."""
    return list(_heads(*file_version(path)))


#: Former name of :func:`file_heads`.
model_heads_of = file_heads


@functools.lru_cache(maxsize=256)
def _heads(path: str, size: int, mtime_ns: int) -> tuple[str, ...]:
    return tuple(net_heads(load_model(path, trusted=True)))


def target_head(heads: Sequence[str]) -> str:
    """The head of a model that answers the target: ``Default`` when it has one, else its
    first head that is not the pretraining head, else its only head."""
    if TARGET_HEAD in heads:
        return TARGET_HEAD
    return next((h for h in heads if h != PRETRAINING_HEAD), heads[0])


def pretraining_head(heads: Sequence[str]) -> str:
    """The head of a model that answers the pretraining data: its ``pt_head`` when it has
    one, else its target head (:func:`target_head`)."""
    return PRETRAINING_HEAD if PRETRAINING_HEAD in heads else target_head(heads)


def forgetting_ratio(pretrain_forces_rmse: float | None,
                     foundation_forces_rmse: float | None) -> float | None:
    """How much of its pretraining a model forgot: its force RMSE on the held-out pretraining
    test set over the foundation model's on the same set (1: nothing forgotten; larger: more
    forgotten). ``None`` when either is unknown, or the foundation's is zero."""
    if not foundation_forces_rmse or pretrain_forces_rmse is None:
        return None
    return pretrain_forces_rmse / foundation_forces_rmse


def model_figures(model: str | Path, foundation: str | Path | None, target: str | Path,
                  pretrain: str | Path, *, workspace=None,
                  out: dict[str, Any] | None = None) -> dict[str, Any]:
    """The figures of one fine-tuned model file, by the definitions of this module: its
    target head (:func:`target_head`) and that head's force and energy RMSE on ``target``;
    the forgetting ratio (:func:`forgetting_ratio`) of its pretraining head
    (:func:`pretraining_head`) on ``pretrain`` against the ``foundation`` model's, when
    both are known.

    The figures go into ``out`` (a new dict by default) as they are measured, which is
    returned; an evaluation that fails (e.g. a :class:`~mlipft_core.errors.DataError`)
    raises, and what was measured before it stays in ``out``."""
    out = {} if out is None else out
    model = str(model)
    heads = file_heads(model)
    head = target_head(heads)
    tgt = evaluate_cached(model, target, head=head, workspace=workspace, trusted=True)
    out.update(head=head, target_forces_rmse_mev_per_a=tgt.metrics.forces_rmse_mev_per_a,
               target_energy_rmse_mev_per_atom=tgt.metrics.energy_rmse_mev_per_atom)
    pre = evaluate_cached(model, pretrain, head=pretraining_head(heads), workspace=workspace,
                          trusted=True)
    if foundation and pre.metrics.forces_rmse_mev_per_a is not None:
        base = evaluate_cached(str(foundation), pretrain, workspace=workspace, trusted=True)
        ratio = forgetting_ratio(pre.metrics.forces_rmse_mev_per_a,
                                 base.metrics.forces_rmse_mev_per_a)
        if ratio is not None:
            out["forgetting_ratio"] = ratio
    return out


@dataclass
class ComparisonRow:
    name: str
    head: str
    strategy: str | None
    target_energy_rmse_mev_per_atom: float | None
    target_forces_rmse_mev_per_a: float | None
    pretrain_energy_rmse_mev_per_atom: float | None
    pretrain_forces_rmse_mev_per_a: float | None
    forgetting_ratio: float | None
    is_foundation: bool = False
    note: str = ""
    target_stress_rmse_mev_per_a3: float | None = None
    target_energy_rmse_mev_per_atom_raw: float | None = None
    pretrain_energy_rmse_mev_per_atom_raw: float | None = None
    #: "pretraining" (carries the foundation's E0s) or "target"
    level: str | None = None
    #: which E0s the target energies of this row are measured against
    target_energy_reference: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def least_forgetting(rows: Iterable[ComparisonRow]) -> ComparisonRow | None:
    """The row (model head) that forgot least of its pretraining: the smallest forgetting
    ratio (:func:`forgetting_ratio`) among the rows that are not the foundation model and
    have one; the first of them on a tie, ``None`` when no row has one."""
    return min((r for r in rows if r.forgetting_ratio is not None and not r.is_foundation),
               key=lambda r: r.forgetting_ratio, default=None)


def unique_names(models: Sequence[ModelRef]) -> list[ModelRef]:
    """``models`` with every name told apart (results are keyed by name and head): a name
    that comes again gets `` (2)``, `` (3)``, ... in the order given."""
    seen: dict[str, int] = {}
    out = []
    for m in models:
        n = seen[m.name] = seen.get(m.name, 0) + 1
        out.append(m if n == 1 else replace(m, name=f"{m.name} ({n})"))
    return out


def _same_file(a: str | Path, b: str | Path | None) -> bool:
    return b is not None and Path(a).resolve() == Path(b).resolve()


def _fine_tunes_e0s(models: Sequence[ModelRef], target: str | Path, foundation: str | None
                    ) -> tuple[dict[str, float] | None, str | None]:
    """The E0s most of the fine-tunes among ``models`` share (ties: the first model name, so
    that the result does not depend on the order the models were picked in), and where they
    come from in words; ``(None, None)`` without a fine-tune."""
    tables: dict[str, tuple[int, str, dict[str, float]]] = {}
    target_elements = composition(target)[0]
    for m in models:
        if _same_file(m.path, foundation):
            continue
        e0 = model_e0s_of(m.path, target_head(file_heads(m.path)))
        # the target's elements only (a multihead model also carries replay elements),
        # to 10 meV (float32 models store E0s of ~10^4 eV only to about 1 meV)
        key = repr(sorted((k, round(v, 2)) for k, v in e0.items() if k in target_elements))
        n, name, _ = tables.get(key, (0, m.name, e0))
        tables[key] = (n + 1, min(name, m.name), e0)
    if not tables:
        return None, None
    n, name, e0 = sorted(tables.values(), key=lambda t: (-t[0], t[1]))[0]
    total = sum(t[0] for t in tables.values())
    return e0, (f"the E0s of {name} (the fine-tunes' E0s)" if len(tables) == 1
                else f"the E0s shared by {n} of the {total} fine-tunes (e.g. {name})")


def _target_e0s(models: Sequence[ModelRef], target: str | Path, foundation: str | None,
                target_e0: Mapping[str, float] | None, isolated_file: str | Path | None
                ) -> tuple[Mapping[str, float] | None, str | None]:
    """The E0s of the target's level of theory and where they come from (see
    :func:`compare`)."""
    if target_e0 is not None:
        return target_e0, "the given target E0s"
    e0, source = _fine_tunes_e0s(models, target, foundation)
    if e0 is not None or not foundation:
        return e0, source
    try:
        return (fitted_target_e0s(foundation, target,
                                  isolated_file=isolated_file or isolated_file_for(target)),
                "E0s re-estimated with the foundation model on this target set (no fine-tune "
                "to take them from)")
    except MlipftError:
        return None, source


def _progress_steps(progress, i: int, total: int, label: str):
    """``step(what)``: the progress callback of one evaluation of the ``i``-th model head
    (the target set is the first half of its share, the pretraining set the second)."""
    def step(what: str):
        if progress is None:
            return None
        first = what == "target set"
        return lambda d, n: progress(i + (0.5 * d / max(n, 1) if first else
                                          0.5 + 0.5 * d / max(n, 1)),
                                     total, label, f"{what}: {d}/{n} structures")

    return step


def _compare_head(m: ModelRef, head: str, *, target: str | Path, pretrain: str | Path | None,
                  workspace, step, level: str, is_found: bool,
                  target_e0: Mapping[str, float] | None, target_source: str | None,
                  found_e0: Mapping[str, float] | None
                  ) -> tuple[ComparisonRow, EvaluationResult, EvaluationResult | None]:
    """One model head on the target and pretraining sets: its row (without the forgetting
    ratio, which needs every row), its target result (re-referenced) and its pretraining
    result (``None`` without one)."""
    tgt = evaluate_cached(m.path, target, head=head, workspace=workspace, trusted=True,
                          progress=step("target set"))
    pre, note = None, ""
    if pretrain:
        try:
            pre = evaluate_cached(m.path, pretrain, head=head, workspace=workspace,
                                  trusted=True, progress=step("pretraining set"))
        except DataError as exc:
            if exc.code != "elements_not_covered":
                raise
            note = f"no forgetting measure: {exc}"
    own_e0 = model_e0s_of(m.path, head)
    t_e0, t_source = ((own_e0, "its own E0s (the target's level)") if level == "target"
                      or target_e0 is None else (target_e0, target_source))
    tgt.referenced = rereference(tgt, target, own_e0, t_e0, t_source)
    pre_e = None if pre is None else pre.metrics.energy_rmse_mev_per_atom
    if pre is not None and found_e0 is not None and level == "target":
        pre_e = rereference(pre, pretrain, own_e0, found_e0,
                            "the foundation model's E0s").rmse_mev_per_atom
    row = ComparisonRow(
        m.name, head, m.strategy, tgt.referenced.rmse_mev_per_atom,
        tgt.metrics.forces_rmse_mev_per_a, pre_e,
        None if pre is None else pre.metrics.forces_rmse_mev_per_a, None, is_found, note,
        tgt.metrics.stress_rmse_mev_per_a3, tgt.metrics.energy_rmse_mev_per_atom,
        None if pre is None else pre.metrics.energy_rmse_mev_per_atom, level, t_source)
    return row, tgt, pre


def compare(models: Sequence[ModelRef], target: str | Path, pretrain: str | Path | None, *,
            foundation: str | None = None, workspace=None, progress=None,
            target_e0: Mapping[str, float] | None = None,
            isolated_file: str | Path | None = None,
            ) -> tuple[list[ComparisonRow], dict[tuple[str, str], EvaluationResult]]:
    """Evaluate every model (and head) on the target and pretraining test sets.

    ``foundation`` (a path) is the reference for the forgetting ratio; by default the
    foundation model of the first run among ``models``. It is added as a row if missing.
    ``progress(done, total, model_label, step)`` is told where the comparison stands (``done``
    counts model heads, fractions within one).

    Energies: ``target_e0`` are the E0s of the target's level of theory; by default those of
    the first target-level head among ``models`` (the E0s the fine-tunes used), else the
    foundation model's E0s re-estimated on ``target`` (anchored to ``isolated_file``, by
    default the demo's own isolated atoms for demo data). Each target result carries its
    re-referenced energies as ``result.referenced``.
    """
    models = unique_names(models)
    foundation = foundation or next((m.foundation for m in models if m.foundation), None)
    if foundation and not any(_same_file(m.path, foundation) for m in models):
        models.insert(0, ModelRef("foundation", foundation))
    found_e0 = model_e0s_of(foundation) if foundation else None
    target_e0, target_source = _target_e0s(models, target, foundation, target_e0,
                                           isolated_file)
    results: dict[tuple[str, str], EvaluationResult] = {}
    rows: list[ComparisonRow] = []
    base_f = None
    todo = [(m, h) for m in models for h in file_heads(m.path)]
    n_heads = Counter(m.path for m, _h in todo)
    for i, (m, head) in enumerate(todo):
        # in words, as the pages say it: a head is named only when the model has several
        label = m.name if n_heads[m.path] == 1 else f"{m.name}, {HEAD_WORDS.get(head, head)}"
        if progress:
            progress(i, len(todo), label, "target set")
        is_found = _same_file(m.path, foundation)
        # the foundation model and a pt_head answer at the pretraining level; every other
        # head was trained on the target
        level = "pretraining" if found_e0 is not None and (
            is_found or head == PRETRAINING_HEAD) else "target"
        row, results[(m.name, head)], pre = _compare_head(
            m, head, target=target, pretrain=pretrain, workspace=workspace,
            step=_progress_steps(progress, i, len(todo), label), level=level,
            is_found=is_found, target_e0=target_e0, target_source=target_source,
            found_e0=found_e0)
        if is_found and pre is not None:
            base_f = pre.metrics.forces_rmse_mev_per_a
        rows.append(row)
    if base_f is None and rows and rows[0].pretrain_forces_rmse_mev_per_a:
        base_f = rows[0].pretrain_forces_rmse_mev_per_a
    for r in rows:
        r.forgetting_ratio = forgetting_ratio(r.pretrain_forces_rmse_mev_per_a, base_f)
    if progress:
        progress(len(todo), len(todo), "", "done")
    return rows, results
