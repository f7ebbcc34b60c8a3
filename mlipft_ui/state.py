"""Selections shared between pages and kept across reloads (in the workspace's state.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from mlipft_core.workspace import Workspace


def workspace() -> Workspace:
    """The workspace folder (``$MLIPFT_WORKSPACE`` or ``~/mlipft-workspace``)."""
    return Workspace()


def get(key: str, default: Any = None) -> Any:
    return workspace().get(key, default)


def select(**values: Any) -> None:
    """Save selections (visible to every page, a reload and the command line)."""
    workspace().set(**values)


def _mtime(path: str | Path) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


@st.cache_data(show_spinner="Reading the model…", max_entries=16)
def _inspect(path: str, mtime: float) -> dict:
    from mlipft_core.registry import inspect_model

    return inspect_model(path, trusted=True).to_dict()


def inspect_selected(model_path: str) -> dict:
    """Inspection of an already resolved (and trusted) model file, cached by file time."""
    return _inspect(model_path, _mtime(model_path))


@st.cache_data(show_spinner="Reading the dataset…", max_entries=8)
def _frames(path: str, mtime: float):
    from mlipft_core.data import read_frames

    return read_frames(path)


def frames(path: str):
    """Configurations of a dataset file, cached by file time."""
    return _frames(path, _mtime(path))


def selected_model_path() -> str | None:
    """Resolved file of the selected model if it can be loaded without a prompt."""
    from mlipft_core.errors import MlipftError
    from mlipft_core.registry import model_path

    name = get("model")
    if not name:
        return None
    try:
        return str(model_path(name, trusted=bool(get("model_trusted")), download=False))
    except MlipftError:
        return None


def require_navigation() -> None:
    """Run a page through the app's navigation even in Streamlit's legacy ``pages/`` mode.

    Until ``st.navigation`` has been called once, Streamlit runs a requested page file of
    the ``pages/`` folder on its own (e.g. a deep link to ``/data`` on a fresh server), without
    the app's navigation and sidebar. In that case the navigation is built here, in the same
    run (so widget events are kept), it runs the page, and this outer run stops.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        from mlipft_ui.navigation import build_navigation

        build_navigation().run()
        st.stop()


def dimer(path: str, pair: str) -> dict:
    """Dimer curve of a model file (cached in the workspace by the file's hash)."""
    from mlipft_core.probes import dimer_curve_cached

    return dimer_curve_cached(path, pair, workspace=workspace(), trusted=True)


def energies(path: str, data: str) -> list[float]:
    """Predicted total energies of a model on a file (cached in the workspace)."""
    from mlipft_core.evaluate import evaluate_cached

    return evaluate_cached(path, data, workspace=workspace(), trusted=True).pred_energy.tolist()
