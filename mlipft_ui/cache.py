"""Cached reads for the pages: model inspections, datasets, dimer curves, predictions.

Streamlit's caches are keyed by file path and modification time (in-process), the workspace's
prediction caches by content hash (on disk); neither holds anyone's selections.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from mlipft_core.data import read_frames
from mlipft_core.evaluate import evaluate_cached
from mlipft_core.probes import dimer_curve_cached
from mlipft_core.registry import inspect_model
from mlipft_ui import selections


def _mtime(path: str | Path) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


@st.cache_data(show_spinner="Reading the model…", max_entries=16)
def _inspect(path: str, mtime: float) -> dict:
    return inspect_model(path, trusted=True).to_dict()


def inspect_selected(model_path: str) -> dict:
    """Inspection of an already resolved (and trusted) model file, cached by file time."""
    return _inspect(model_path, _mtime(model_path))


@st.cache_data(show_spinner="Reading the dataset…", max_entries=8)
def _frames(path: str, mtime: float):
    return read_frames(path)


def frames(path: str):
    """Configurations of a dataset file, cached by file time."""
    return _frames(path, _mtime(path))


def dimer(path: str, pair: str) -> dict:
    """Dimer curve of a model file (cached in the workspace by the file's hash)."""
    return dimer_curve_cached(path, pair, workspace=selections.workspace(), trusted=True)


def energies(path: str, data: str) -> list[float]:
    """Predicted total energies of a model on a file (cached in the workspace)."""
    return evaluate_cached(path, data, workspace=selections.workspace(),
                           trusted=True).pred_energy.tolist()
