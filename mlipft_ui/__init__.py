"""UI helpers shared by the Streamlit pages: state, plots and the 3D viewer."""
