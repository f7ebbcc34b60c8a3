"""The app's pages and sidebar, shared by ``app.py`` and the legacy-mode fallback."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from mlipft_ui import state

ROOT = Path(__file__).resolve().parent.parent

#: Pages in workflow order: (file, title, icon).
PAGES = [
    ("pages/home.py", "Home", ":material/home:"),
    ("pages/foundation_model.py", "Foundation model", ":material/hub:"),
    ("pages/data.py", "Data", ":material/dataset:"),
    ("pages/e0.py", "E0s", ":material/balance:"),
    ("pages/runs.py", "Fine-tuning runs", ":material/model_training:"),
    ("pages/compare.py", "Compare", ":material/compare:"),
    ("pages/md.py", "Molecular dynamics", ":material/animation:"),
]


def build_navigation():
    """Register the pages with ``st.navigation`` and draw the sidebar; returns the page to run."""
    st.set_page_config(page_title="mlipft workbench", page_icon="⚛️", layout="wide")
    nav = st.navigation([st.Page(ROOT / path, title=title, icon=icon, default=(i == 0))
                         for i, (path, title, icon) in enumerate(PAGES)])
    with st.sidebar:
        st.caption("Current choices")
        st.markdown(f"**Model:** {state.get('model_label') or state.get('model') or '—'}")
        st.markdown(f"**Dataset:** {state.get('dataset_label') or '—'}")
        st.markdown(f"**Split:** {state.get('split_id') or '—'}")
        st.markdown(f"**E0s:** {state.get('e0_choice') or '—'}")
        st.caption(f"Workspace: `{state.workspace().root}`")
    return nav
