"""Side-by-side comparison of models: target accuracy, forgetting, per head.

Forgetting is measured as a model's force RMSE on the held-out pretraining test set divided
by the foundation model's (the foundation model itself scores 1). A multihead model answers
with each head: its target head (``Default``) and its ``pt_head`` are listed separately.

Energy errors are measured relative to the E0s of each dataset's level of theory (see
:mod:`mlipft_core.referencing`): a head that carries the foundation model's E0s (the
foundation model, a ``pt_head``) is at the pretraining level, any other head at the target
level. On data of the other level its energies are compared as interaction energies; the raw
errors (mostly the E0 offset between levels) stay available as ``*_raw``.
"""

from __future__ import annotations

import functools

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import DataError, MlipftError
from .evaluate import EvaluationResult, evaluate_cached


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
    import os

    from . import jobs
    from .errors import UnknownModelError
    from .jobs import provenance
    from .jobs.records import InvalidRunNameError, RunNotFoundError, RunStore, check_name
    from .registry import get_spec, list_models, model_path, resolve

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
        provenance.check(folder, mpath, f"run {item}: its model")
        if isinstance(foundation, str) and foundation:
            provenance.check(folder, foundation, f"run {item}: its foundation model")
        out.append(ModelRef(rec.name, str(mpath), foundation if isinstance(foundation, str)
                            else None, rec.strategy, rec.id))
    return out


def model_heads_of(path: str) -> list[str]:
    """The heads of a (trusted) model file; the file is loaded once per content version."""
    from .workspace import file_version

    return list(_heads(*file_version(path)))


@functools.lru_cache(maxsize=256)
def _heads(path: str, size: int, mtime_ns: int) -> tuple[str, ...]:
    from .registry import load_model, model_heads

    return tuple(model_heads(load_model(path, trusted=True)))


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


def _target_head(path: str) -> str:
    heads = model_heads_of(path)
    return next((h for h in heads if h != "pt_head"), heads[0])


def unique_names(models: Sequence[ModelRef]) -> list[ModelRef]:
    """``models`` with every name told apart (results are keyed by name and head): a name
    that comes again gets `` (2)``, `` (3)``, ... in the order given."""
    from dataclasses import replace

    seen: dict[str, int] = {}
    out = []
    for m in models:
        n = seen[m.name] = seen.get(m.name, 0) + 1
        out.append(m if n == 1 else replace(m, name=f"{m.name} ({n})"))
    return out


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
    from .demo import isolated_file_for
    from .referencing import composition, fitted_target_e0s, model_e0s_of, rereference

    models = unique_names(models)
    foundation = foundation or next((m.foundation for m in models if m.foundation), None)
    if foundation and not any(Path(m.path).resolve() == Path(foundation).resolve()
                              for m in models):
        models.insert(0, ModelRef("foundation", foundation))
    found_e0 = model_e0s_of(foundation) if foundation else None

    def is_foundation(path: str) -> bool:
        return foundation is not None and Path(path).resolve() == Path(foundation).resolve()

    def level_of(path: str, head: str) -> str:
        """The foundation model and a pt_head answer at the pretraining level; every other
        head was trained on the target."""
        if found_e0 is None:
            return "target"
        return "pretraining" if is_foundation(path) or head == "pt_head" else "target"

    target_source = "the given target E0s" if target_e0 is not None else None
    if target_e0 is None:
        # the fine-tunes' E0s: the set most of them share (ties: the first model name), so
        # the result does not depend on the order the models were picked in
        tables: dict[str, tuple[int, str, dict[str, float]]] = {}
        target_elements = composition(target)[0]
        for m in models:
            if is_foundation(m.path):
                continue
            e0 = model_e0s_of(m.path, _target_head(m.path))
            # the target's elements only (a multihead model also carries replay elements),
            # to 10 meV (float32 models store E0s of ~10^4 eV only to about 1 meV)
            key = repr(sorted((k, round(v, 2)) for k, v in e0.items()
                              if k in target_elements))
            n, name, _ = tables.get(key, (0, m.name, e0))
            tables[key] = (n + 1, min(name, m.name), e0)
        if tables:
            n, name, target_e0 = sorted(tables.values(), key=lambda t: (-t[0], t[1]))[0]
            total = sum(t[0] for t in tables.values())
            target_source = (f"the E0s of {name} (the fine-tunes' E0s)" if len(tables) == 1
                             else f"the E0s shared by {n} of the {total} fine-tunes "
                                  f"(e.g. {name})")
    if target_e0 is None and foundation:
        try:
            target_e0 = fitted_target_e0s(
                foundation, target, isolated_file=isolated_file or isolated_file_for(target))
            target_source = ("E0s re-estimated with the foundation model on this target set "
                             "(no fine-tune to take them from)")
        except MlipftError:
            target_e0 = None
    results: dict[tuple[str, str], EvaluationResult] = {}
    rows: list[ComparisonRow] = []
    base_f = None
    todo = [(m, h) for m in models for h in model_heads_of(m.path)]
    for i, (m, head) in enumerate(todo):
        label = f"{m.name} [{head}]"

        def step(what: str, i: int = i, label: str = label):
            if progress is None:
                return None
            return lambda d, n: progress(i + 0.5 * d / max(n, 1) * (what == "target set")
                                         + (0.5 + 0.5 * d / max(n, 1)) * (what != "target set"),
                                         len(todo), label, f"{what}: {d}/{n} structures")

        if progress:
            progress(i, len(todo), label, "target set")
        tgt = evaluate_cached(m.path, target, head=head, workspace=workspace, trusted=True,
                              progress=step("target set"))
        results[(m.name, head)] = tgt
        pre, note = None, ""
        if pretrain:
            try:
                pre = evaluate_cached(m.path, pretrain, head=head, workspace=workspace,
                                      trusted=True, progress=step("pretraining set"))
            except DataError as exc:
                if exc.code != "elements_not_covered":
                    raise
                note = f"no forgetting measure: {exc}"
        is_found = is_foundation(m.path)
        if is_found and pre is not None:
            base_f = pre.metrics.forces_rmse_mev_per_a
        level = level_of(m.path, head)
        own_e0 = model_e0s_of(m.path, head)
        t_e0, t_source = ((own_e0, "its own E0s (the target's level)") if level == "target"
                          or target_e0 is None else (target_e0, target_source))
        tgt.referenced = rereference(tgt, target, own_e0, t_e0, t_source)
        pre_e = None if pre is None else pre.metrics.energy_rmse_mev_per_atom
        if pre is not None and found_e0 is not None and level == "target":
            pre_e = rereference(pre, pretrain, own_e0, found_e0,
                                "the foundation model's E0s").rmse_mev_per_atom
        rows.append(ComparisonRow(
            m.name, head, m.strategy, tgt.referenced.rmse_mev_per_atom,
            tgt.metrics.forces_rmse_mev_per_a, pre_e,
            None if pre is None else pre.metrics.forces_rmse_mev_per_a, None, is_found, note,
            tgt.metrics.stress_rmse_mev_per_a3, tgt.metrics.energy_rmse_mev_per_atom,
            None if pre is None else pre.metrics.energy_rmse_mev_per_atom, level, t_source))
    if base_f is None and rows and rows[0].pretrain_forces_rmse_mev_per_a:
        base_f = rows[0].pretrain_forces_rmse_mev_per_a
    for r in rows:
        if base_f and r.pretrain_forces_rmse_mev_per_a is not None:
            r.forgetting_ratio = r.pretrain_forces_rmse_mev_per_a / base_f
    if progress:
        progress(len(todo), len(todo), "", "done")
    return rows, results
