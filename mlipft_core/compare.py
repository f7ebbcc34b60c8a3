"""Side-by-side comparison of models: target accuracy, forgetting, per head.

Forgetting is measured as a model's force RMSE on the held-out pretraining test set divided
by the foundation model's (the foundation model itself scores 1). A multihead model answers
with each head: its target head (``Default``) and its ``pt_head`` are listed separately.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

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
    """Run ids (finished runs) or model names/paths → :class:`ModelRef`."""
    from . import jobs
    from .jobs.records import InvalidRunNameError, RunNotFoundError
    from .registry import model_path, resolve

    out = []
    for item in items:
        try:
            rec = jobs.get_run(item, workspace)
        except (RunNotFoundError, InvalidRunNameError):
            rec = None  # not a run id: a model name or a path
        if rec is not None:
            if rec.status != "done" or not rec.model_path:
                raise MlipftError(f"run {item} has no model yet (status {rec.status})")
            out.append(ModelRef(rec.name, rec.model_path, rec.spec.get("foundation_model"),
                                rec.strategy, rec.id))
        else:
            spec = resolve(item)
            trusted = spec.source != "local" or Path(item).exists()
            out.append(ModelRef(spec.name if spec.source != "local" else Path(item).name,
                                str(model_path(item, trusted=trusted))))
    return out


def model_heads_of(path: str) -> list[str]:
    from .registry import load_model, model_heads

    return model_heads(load_model(path, trusted=True))


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(models: Sequence[ModelRef], target: str | Path, pretrain: str | Path | None, *,
            foundation: str | None = None, workspace=None, progress=None
            ) -> tuple[list[ComparisonRow], dict[tuple[str, str], EvaluationResult]]:
    """Evaluate every model (and head) on the target and pretraining test sets.

    ``foundation`` (a path) is the reference for the forgetting ratio; by default the
    foundation model of the first run among ``models``. It is added as a row if missing.
    """
    models = list(models)
    foundation = foundation or next((m.foundation for m in models if m.foundation), None)
    if foundation and not any(Path(m.path).resolve() == Path(foundation).resolve()
                              for m in models):
        models.insert(0, ModelRef("foundation", foundation))
    results: dict[tuple[str, str], EvaluationResult] = {}
    rows: list[ComparisonRow] = []
    base_f = None
    todo = [(m, h) for m in models for h in model_heads_of(m.path)]
    for i, (m, head) in enumerate(todo):
        if progress:
            progress(i, len(todo), m.name)
        tgt = evaluate_cached(m.path, target, head=head, workspace=workspace, trusted=True)
        results[(m.name, head)] = tgt
        pre, note = None, ""
        if pretrain:
            try:
                pre = evaluate_cached(m.path, pretrain, head=head, workspace=workspace,
                                      trusted=True)
            except DataError as exc:
                if exc.code != "elements_not_covered":
                    raise
                note = f"no forgetting measure: {exc}"
        is_found = foundation is not None and Path(m.path).resolve() == Path(foundation).resolve()
        if is_found and pre is not None:
            base_f = pre.metrics.forces_rmse_mev_per_a
        rows.append(ComparisonRow(
            m.name, head, m.strategy, tgt.metrics.energy_rmse_mev_per_atom,
            tgt.metrics.forces_rmse_mev_per_a,
            None if pre is None else pre.metrics.energy_rmse_mev_per_atom,
            None if pre is None else pre.metrics.forces_rmse_mev_per_a, None, is_found, note,
            tgt.metrics.stress_rmse_mev_per_a3))
    if base_f is None and rows and rows[0].pretrain_forces_rmse_mev_per_a:
        base_f = rows[0].pretrain_forces_rmse_mev_per_a
    for r in rows:
        if base_f and r.pretrain_forces_rmse_mev_per_a is not None:
            r.forgetting_ratio = r.pretrain_forces_rmse_mev_per_a / base_f
    if progress:
        progress(len(todo), len(todo), "")
    return rows, results
