"""The app's pages (files in ``views/``, a folder Streamlit does not scan on its own) and the
sidebar, registered with ``st.navigation``. In a workshop, a session without a valid link sees
only the join page, and the instructor also gets the board."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from mlipft_core.e0 import load_choice
from mlipft_core.errors import MlipftError
from mlipft_ui import selections
from mlipft_ui.labels import DASH, e0_choice_label, split_label

ROOT = Path(__file__).resolve().parent.parent

#: Pages in workflow order: (file, title, icon).
PAGES = [
    ("views/home.py", "Home", ":material/home:"),
    ("views/foundation_model.py", "Foundation model", ":material/hub:"),
    ("views/data.py", "Data", ":material/dataset:"),
    ("views/e0.py", "E0s", ":material/balance:"),
    ("views/runs.py", "Fine-tuning runs", ":material/model_training:"),
    ("views/compare.py", "Compare", ":material/compare:"),
    ("views/study.py", "Study", ":material/science:"),
    ("views/md.py", "Molecular dynamics", ":material/animation:"),
]
BOARD = ("views/board.py", "Instructor board", ":material/leaderboard:")
JOIN = ("views/join.py", "Join the workshop", ":material/login:")


def split_text() -> str:
    """The selected split in words (dataset and counts), a dash when none."""
    split = selections.selected_split()
    return split_label(split) if split is not None else DASH


def e0_text() -> str:
    """The selected E0 choice in words (method, data, when saved), a dash when none."""
    if not selections.get("e0_choice"):
        return DASH
    choice = load_choice(selections.workspace())
    return e0_choice_label(choice) if choice else DASH


def build_navigation():
    """Register the pages with ``st.navigation`` and draw the sidebar; returns the page to run."""
    st.set_page_config(page_title="mlipft workbench", page_icon="⚛️", layout="wide")
    try:
        role, name = selections.identity()
    except MlipftError as exc:  # a broken workshop.json
        st.error(str(exc))
        st.stop()
    if role == "nobody":
        # a deep link (``/runs?token=...``) lands on the join page too, at its own address
        # (no "page not found"), and after joining on the page it named
        deep = [st.Page(ROOT / JOIN[0], title=JOIN[1], icon=JOIN[2], url_path=Path(path).stem,
                        visibility="hidden") for path, _, _ in PAGES + [BOARD]]
        return st.navigation([st.Page(ROOT / JOIN[0], title=JOIN[1], icon=JOIN[2],
                                      default=True)] + deep, position="hidden")
    pages = list(PAGES) + ([BOARD] if role == "instructor" else [])
    nav = st.navigation([st.Page(ROOT / path, title=title, icon=icon, default=(i == 0))
                         for i, (path, title, icon) in enumerate(pages)])
    selections.show_flash()
    with st.sidebar:
        if role == "participant":
            st.markdown(f"**Workshop:** {selections.workshop().name} · you are **{name}**")
        elif role == "instructor":
            st.markdown(f"**Workshop:** {selections.workshop().name} · **instructor**")
        problem = selections.state_problem()
        if problem:
            st.warning(f"Your saved choices could not be read ({problem}); starting with fresh "
                       "choices. The old file is kept beside it when you choose again.")
        for damaged in selections.file_problems():
            st.warning(damaged)
        st.caption("Current choices")
        st.markdown(f"**Model:** {selections.get('model_label') or selections.get('model') or '—'}")
        st.markdown(f"**Dataset:** {selections.get('dataset_label') or '—'}")
        st.markdown(f"**Split:** {split_text()}")
        st.markdown(f"**E0s:** {e0_text()}")
        if role == "single":
            st.caption(f"Workspace: `{selections.workspace().root}`")
    return nav
