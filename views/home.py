"""Home: what the workbench is for, the workflow, where to start."""

import streamlit as st

from mlipft_ui import selections

st.title("MLIP fine-tuning workbench")
st.markdown(
    """
Adapt a **MACE foundation model** to your own system and see what each choice does.
A 2026 study of fine-tuning strategies (Tompa, Varga-Umbrich, Batatia, Elena, Bernstein,
Csányi, *Fine-tuning MLIP foundation models: strategies for accuracy and transferability*,
[arXiv 2606.12704](https://arxiv.org/abs/2606.12704)) compared naive fine-tuning, layer
freezing, LoRA, multihead replay, pseudolabelled replay and replay + LoRA against training from
scratch. It found that
**foundation-model quality, correct atomic reference energies (E0s) and per-strategy
hyperparameters matter more than the strategy**, that naive fine-tuning converges best for one
system, and that only multihead replay keeps pretraining accuracy and short-range repulsion.
This workbench lets you check those findings on your data.
"""
)

st.subheader("The workflow")
cols = st.columns(4)
steps = [
    ("1. Choose a foundation model", "Official MACE models (downloaded through mace and cached), "
     "the two bundled demo models, or a local `.model` file. Inspect elements, heads, E0s "
     "and architecture.", "views/foundation_model.py"),
    ("2. Load your data", "extxyz from the bundled demo, a path or an upload. Label keys are "
     "detected, problems are flagged, a seeded train/valid/test split is saved, and the "
     "zero-shot errors of the model show where you start from.", "views/data.py"),
    ("3. E0s, runs, comparison", "Fit atomic reference energies by every method, launch "
     "the seven strategies and the from-scratch baseline on this machine or a SLURM cluster, "
     "then compare target accuracy, forgetting and short-range repulsion side by side.",
     "views/e0.py"),
    ("4. Molecular dynamics", "Run the same MD with several models: does a low test error "
     "also mean stable dynamics and the right structure (radial distribution functions)?",
     "views/md.py"),
]
for col, (head, text, page) in zip(cols, steps):
    with col, st.container(border=True):
        st.markdown(f"**{head}**")
        st.markdown(text)
        if page:
            st.page_link(page, label="Open", icon=":material/arrow_forward:")

st.subheader("Where to start")
st.markdown(
    """
No internet needed: the **bundled demo world** has a GFN1-xTB pretraining corpus, two demo
foundation models trained on it (one weak, one strong), an SN2 reaction target labelled with
hybrid DFT (B3LYP) and a liquid-water target labelled with GFN2-xTB. Pick *demo-gfn1-strong*
on the Foundation model page, then the *SN2 target* on the Data page, and look at the zero-shot
parity plots: the model was trained on another level of theory, so its energies are offset
by a large constant per element — what E0 re-estimation is for.
"""
)
st.info(f"Your work (uploads, splits, runs, caches) is kept in `{selections.workspace().root}`. "
        "Set `MLIPFT_WORKSPACE` before starting the app to use another folder.")
