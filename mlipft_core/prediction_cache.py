"""Predictions of a model on a data file, kept in the workspace.

An entry is named by the SHA-256 of the model file, the head and the SHA-256 of the data
file, so whoever asks (the E0 fit, a launch, the Compare page) finds what another step
already predicted, a second look costs nothing, and a changed file is never served stale.
Entries are ``.npz`` files under ``WORKSPACE/cache/predictions``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .workspace import Workspace, atomic_write_bytes, cached_sha256


@dataclass
class CachedPredictions:
    """What a cache entry holds: energies (eV, float64), stacked forces (eV/Å, float32),
    the head that made them and, where predicted, stresses (n, 3, 3) in eV/Å³."""

    energy: np.ndarray
    forces: np.ndarray
    head: str
    stress: np.ndarray | None = None


def prediction_cache_file(model_file: str | Path, data_file: str | Path, head: str | None,
                          workspace: Workspace) -> Path:
    """Where :func:`~mlipft_core.evaluate.evaluate_cached` keeps the predictions of a model
    file (and head) on a data file: named by the SHA-256 of both files, so whoever asks (the
    E0 fit, a launch, the Compare page) finds what another step already predicted."""
    key = f"{cached_sha256(model_file)[:20]}-{head or 'first'}-{cached_sha256(data_file)[:20]}"
    return Path(workspace.cache) / "predictions" / f"{key}.npz"


def read_predictions(cache: Path) -> CachedPredictions:
    """The predictions kept in the cache entry ``cache`` (an existing file)."""
    z = np.load(cache, allow_pickle=False)
    return CachedPredictions(z["pred_energy"], z["pred_forces"], str(z["head"]),
                             z["pred_stress"] if "pred_stress" in z.files else None)


def write_predictions(cache: Path, predictions: CachedPredictions, *, model: str | Path,
                      data: str | Path) -> None:
    """Keep ``predictions`` (of ``model`` on ``data``, recorded with them) in the cache
    entry ``cache``, atomically."""
    extra = {} if predictions.stress is None else {"pred_stress": predictions.stress}
    buf = io.BytesIO()
    np.savez(buf, pred_energy=predictions.energy, pred_forces=predictions.forces,
             head=np.array(predictions.head),
             meta=np.array(json.dumps({"model": str(model), "data": str(data)})), **extra)
    atomic_write_bytes(cache, buf.getvalue())
