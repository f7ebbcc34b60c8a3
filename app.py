"""mlipft: the Streamlit workbench (``streamlit run app.py``)."""

from mlipft_ui.navigation import build_navigation

build_navigation().run()
