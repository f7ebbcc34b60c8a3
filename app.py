"""mlipft: the Streamlit workbench (``streamlit run app.py``)."""

from __future__ import annotations

import streamlit as st

from mlipft_ui import state

st.set_page_config(page_title="mlipft workbench", page_icon="⚛️", layout="wide")

#: Pages in workflow order: (file, title, icon).
PAGES = [
    ("pages/home.py", "Home", ":material/home:"),
    ("pages/foundation_model.py", "Foundation model", ":material/hub:"),
    ("pages/data.py", "Data", ":material/dataset:"),
]

nav = st.navigation([st.Page(path, title=title, icon=icon, default=(i == 0))
                     for i, (path, title, icon) in enumerate(PAGES)])

with st.sidebar:
    st.caption("Current choices")
    st.markdown(f"**Model:** {state.get('model_label') or state.get('model') or '—'}")
    st.markdown(f"**Dataset:** {state.get('dataset_label') or '—'}")
    st.markdown(f"**Split:** {state.get('split_id') or '—'}")
    st.caption(f"Workspace: `{state.workspace().root}`")

nav.run()
