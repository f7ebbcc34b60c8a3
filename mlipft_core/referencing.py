"""Energies measured against the right E0s: errors that mean something across levels of theory.

A MACE model predicts ``E = sum_i E0[Z_i] + E_interaction``. Reference data of another level of
theory (DFT against the xTB of a foundation model, say) differ in absolute energy by keV per
atom, almost all of it in the E0s. An energy error taken on absolute energies across levels
measures that E0 offset, not accuracy and not forgetting.

Here every energy is compared *relative to the E0s of its own level*::

    error_i = [(E_pred,i - sum E0_model) - (E_ref,i - sum E0_data)] / N_i

``E0_model`` are the E0s the model (head) carries, ``E0_data`` the E0s of the data's level of
theory: the foundation model's for its pretraining data, the fine-tunes' (target) E0s for the
target data. Where the two sets coincide (a fine-tune on its own target, a ``pt_head`` on the
pretraining data) the error equals the raw one; elsewhere it is the error of the interaction
energy, the physically meaningful part.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from .data import iter_frames
from .e0_fit import composition_matrix, compute
from .e0_inputs import prepare
from .errors import MlipftError, UnknownModelError
from .evaluate import evaluate_model
from .registry import load_model, model_e0s
from .workspace import file_version as _workspace_file_version


class ReferencingError(MlipftError):
    """E0s that cannot re-reference a dataset (an element without an E0, a count mismatch)."""

    code = "e0_reference"


def file_version(path: str | Path) -> tuple[str, int, int]:
    """:func:`~mlipft_core.workspace.file_version`, with a typed error for a missing file."""
    try:
        return _workspace_file_version(path)
    except OSError as exc:
        raise UnknownModelError(f"{Path(path).resolve()}: {exc.strerror or exc}") from exc


def composition(data) -> tuple[list[str], np.ndarray]:
    """(elements, counts per structure) of a data file (read once per file version) or of a
    sequence of structures."""
    if not isinstance(data, (str, Path)):
        return _counts(list(data))
    return _composition(*file_version(data))


def _counts(frames) -> tuple[list[str], np.ndarray]:
    frames = list(frames)
    elements = [chemical_symbols[z] for z in sorted({int(z) for a in frames for z in a.numbers})]
    return elements, composition_matrix(frames, elements)


@functools.lru_cache(maxsize=64)
def _composition(path: str, size: int, mtime_ns: int) -> tuple[list[str], np.ndarray]:
    return _counts(iter_frames(path))


def model_e0s_of(model: str | Path, head: str | None = None) -> dict[str, float]:
    """E0s (element -> eV) of one head of a trusted model file (first head by default),
    loaded once per file version."""
    table = _model_e0s(*file_version(model))
    return dict(table[head] if head in table else next(iter(table.values())))


@functools.lru_cache(maxsize=128)
def _model_e0s(path: str, size: int, mtime_ns: int) -> dict[str, dict[str, float]]:
    return model_e0s(load_model(path, trusted=True))


def e0_sums(elements: list[str], counts: np.ndarray, e0: Mapping[str, float],
            what: str = "E0s") -> np.ndarray:
    """Sum of E0s per structure (eV); raises :class:`ReferencingError` for a missing element."""
    missing = [e for e in elements if e not in e0]
    if missing:
        raise ReferencingError(f"the {what} have no value for {', '.join(missing)}")
    return counts @ np.array([float(e0[e]) for e in elements])


@dataclass
class ReferencedEnergies:
    """Per-structure energies relative to E0s (eV/atom) and their error."""

    ref_per_atom: np.ndarray      # (E_ref - sum E0_data) / N
    pred_per_atom: np.ndarray     # (E_pred - sum E0_model) / N
    rmse_mev_per_atom: float | None
    mae_mev_per_atom: float | None
    raw_rmse_mev_per_atom: float | None
    data_e0_source: str


def rereference(result, data: str | Path, model_e0: Mapping[str, float],
                data_e0: Mapping[str, float], data_e0_source: str = "") -> ReferencedEnergies:
    """Energies of an :class:`~mlipft_core.evaluate.EvaluationResult` relative to E0s."""
    elements, counts = composition(data)
    if len(counts) != len(result.n_atoms):
        raise ReferencingError(f"{data} has {len(counts)} structures but the evaluation "
                               f"{len(result.n_atoms)}")
    n = np.asarray(result.n_atoms, float)
    ref = (np.asarray(result.ref_energy, float) - e0_sums(elements, counts, data_e0,
                                                           "E0s of the data")) / n
    pred = (np.asarray(result.pred_energy, float) - e0_sums(elements, counts, model_e0,
                                                             "model's E0s")) / n
    ok = np.isfinite(ref)
    d = pred[ok] - ref[ok]
    rmse = float(np.sqrt(np.mean(d ** 2)) * 1000) if d.size else None
    mae = float(np.mean(np.abs(d)) * 1000) if d.size else None
    return ReferencedEnergies(ref, pred, rmse, mae, result.metrics.energy_rmse_mev_per_atom,
                              data_e0_source)


def fitted_target_e0s(foundation: str | Path, data, *, head: str | None = None,
                      isolated_file: str | Path | None = None, keys=None) -> dict[str, float]:
    """E0s of a target dataset re-estimated with the foundation model (``estimated``,
    anchored to isolated-atom energies where they are given): the fair zero-shot baseline."""
    inputs = prepare(data, foundation, head=head, trusted=True, isolated_file=isolated_file,
                     keys=keys)
    return compute(inputs, "estimated").e0


@dataclass
class ZeroShot:
    """A foundation model on new data: raw, and with E0s re-estimated for that data."""

    result: object                 # EvaluationResult (raw, absolute energies)
    referenced: ReferencedEnergies | None  # relative to the model's and the fitted E0s
    e0: dict[str, float]           # the re-estimated E0s
    fitted_on: str
    note: str = ""                 # why there is no re-referenced view, if there is none


def zero_shot(model: str | Path, data, *, fit_on=None, head: str | None = None,
              isolated_file: str | Path | None = None, keys=None, progress=None) -> ZeroShot:
    """Evaluate ``model`` on ``data`` and measure its energies with E0s re-estimated on
    ``fit_on`` (default: ``data`` itself), the fair zero-shot baseline across levels of
    theory."""
    res = evaluate_model(model, data, head=head, keys=keys, trusted=True, progress=progress)
    fit = data if fit_on is None else fit_on
    where = "this data" if fit_on is None else str(fit_on)
    try:
        e0 = fitted_target_e0s(model, fit, head=head, isolated_file=isolated_file,
                               keys=keys if fit_on is None else None)
        rr = rereference(res, data, model_e0s_of(model, res.head), e0,
                         f"E0s re-estimated on {where}")
    except MlipftError as exc:  # e.g. no energy labels: the raw result still stands
        return ZeroShot(res, None, {}, where, note=f"no re-estimated E0s: {exc}")
    return ZeroShot(res, rr, e0, where)
