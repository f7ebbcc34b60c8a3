"""Data: load, check, summarise, split, view, and evaluate the foundation model zero-shot."""

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from mlipft_core.data import (
    Dataset,
    detect_keys,
    make_split,
    register_files_as_split,
    summarize,
    validate,
)
from mlipft_core.demo import DEMO_DATASETS, isolated_file_for, sample_data_dir
from mlipft_core.e0 import format_energy_per_atom, level_offset_ev_per_atom, levels_differ
from mlipft_core.errors import MlipftError
from mlipft_core.referencing import zero_shot
from mlipft_core.registry import inspect_cached
from mlipft_ui import cache, plots, selections, show, turns
from mlipft_ui.labels import finding_title, split_label
from mlipft_ui.viewer import gallery_html, local_js_available

st.title("Data")
st.caption("Read an extended-XYZ dataset, check it, split it, and see how the chosen "
           "foundation model does on it before any fine-tuning.")

# ----------------------------------------------------------------- 1. choose the data
BUNDLED_TARGETS = {
    "SN2 target: X⁻ + CH3Y, B3LYP/def2-SVPD (bundled split)":
        {"train": "sn2/train.xyz", "valid": "sn2/valid.xyz", "test": "sn2/test.xyz"},
    "Liquid water: 32-molecule boxes, GFN2-xTB (bundled split)":
        {"train": "water/train.xyz", "test": "water/test.xyz"},
}
demo_choices = list(BUNDLED_TARGETS) + [f"{k}: {d}" for k, (_, d) in DEMO_DATASETS.items()]
shop = selections.workshop()
staged_data = shop.staged_data() if shop else []
kind = st.radio("Source", (["Workshop datasets"] if staged_data else []) +
                ["Bundled demo", "File path", "Upload"], horizontal=True,
                key="data_source")
path: str | None = None
label = ""
bundled_split: dict[str, str] | None = None
if kind == "Workshop datasets":
    names = [p.name for p in staged_data]
    kept = Path(selections.get("dataset") or "").name  # the one chosen before, after a reload
    pick = st.selectbox("Dataset the instructor provided", names,
                        index=names.index(kept) if kept in names else 0)
    path = str(next(p for p in staged_data if p.name == pick))
    label = f"workshop: {pick}"
elif kind == "Bundled demo":
    saved = selections.get("dataset_label")
    choice = st.selectbox("Demo dataset", demo_choices,
                          index=demo_choices.index(saved) if saved in demo_choices else 0)
    label = choice
    if choice in BUNDLED_TARGETS:
        bundled_split = {p: str(sample_data_dir() / f) for p, f in BUNDLED_TARGETS[choice].items()}
        path = bundled_split["train"]
    else:
        path = str(sample_data_dir() / DEMO_DATASETS[choice.split(":")[0]][0])
elif kind == "File path":
    typed = st.text_input("Path of an extxyz file", value=selections.get("dataset") or "").strip()
    try:
        path = selections.check_path(typed) if typed else None
    except MlipftError as exc:
        st.error(str(exc))
        st.stop()
    label = Path(path).name if path else ""
else:
    up = st.file_uploader("Upload an extxyz file", type=["xyz", "extxyz"])
    if up is not None and selections.check_upload(up):
        path = str(selections.workspace().save_upload(up.name, up.getvalue()))
        label = up.name

if not path:
    st.info("Choose a dataset to begin.")
    st.stop()
try:
    frames = cache.frames(path)
except MlipftError as exc:
    st.error(f"**{finding_title(exc.code)}**: {exc}")
    st.stop()
if path != selections.get("dataset"):
    selections.select(dataset=path, dataset_label=label, split_id=None, keys=None, e0_choice=None)

# ----------------------------------------------------------------- 2. label keys
st.subheader("Label keys")
auto = detect_keys(frames)
saved_keys = selections.get("keys") or {}
cols = st.columns(3)
chosen = {}
for col, q in zip(cols, ("energy", "forces", "stress")):
    options = auto.candidates.get(q, []) + ["(none)"]
    default = saved_keys.get(q) if saved_keys.get(q) in options else getattr(auto, q)
    pick = col.selectbox(f"{q} key", options,
                         index=options.index(default) if default in options else len(options) - 1,
                         key=f"key_{q}", help="Detected automatically; override if wrong.")
    chosen[q] = None if pick == "(none)" else pick
if chosen != saved_keys:
    selections.select(keys=chosen, split_id=None, e0_choice=None)
keys = detect_keys(frames, **{k: v for k, v in chosen.items() if v})
keys.energy, keys.forces, keys.stress = chosen["energy"], chosen["forces"], chosen["stress"]
dataset = Dataset(Path(path), frames, keys)

# ----------------------------------------------------------------- 3. validation
st.subheader("Checks")
model_path = selections.selected_model_path()
model_elements = None
if model_path:
    try:
        model_elements = inspect_cached(model_path, workspace=selections.workspace(),
                                        trusted=True).elements
    except MlipftError as exc:
        st.error(f"The chosen model cannot be read: {exc}")
        model_path = None
findings = validate(frames, keys, model_elements)
if model_elements is None:
    st.caption("Choose a foundation model to check element coverage too.")
parts_to_check = {"whole file": (frames, findings)}
if bundled_split is not None:  # a bundled target comes split: every part is checked
    parts_to_check = {}
    for part, part_path in bundled_split.items():
        part_frames = frames if part_path == path else cache.frames(part_path)
        parts_to_check[part] = (part_frames, validate(part_frames, keys, model_elements))
    findings = parts_to_check.get("train", (frames, findings))[1]
for part, (part_frames, part_findings) in parts_to_check.items():
    where = "" if part == "whole file" else f"{part} set: "
    if not part_findings:
        st.success(f"{where}{len(part_frames)} configurations, no problems found.")
    for f in part_findings:
        notify = {"error": st.error, "warning": st.warning}.get(f.severity, st.info)
        notify(f"{where}**{finding_title(f.code)}**: {f.message}")
if bundled_split is None:
    st.caption("These checks cover the whole file; the split below is taken from it, leaving "
               "out configurations with errors.")

# ----------------------------------------------------------------- 4. summary
st.subheader("Summary")
summ = summarize(frames, keys)
c = st.columns(4)
c[0].metric("Configurations", summ.n_configs)
c[1].metric("Atoms", f"{summ.n_atoms_total:,}")
c[2].metric("Atoms per config", f"{summ.n_atoms_min}–{summ.n_atoms_max}")
c[3].metric("Periodic", summ.n_periodic)
comp = pd.DataFrame({"atoms": summ.element_atoms,
                     "configurations containing it": summ.element_configs})
comp.index.name = "element"
left, right = st.columns(2)
left.dataframe(comp)
right.dataframe(pd.Series(summ.config_types, name="configurations")
                .rename_axis("configuration type"))
left, right = st.columns(2)
if summ.energy_per_atom:
    show.chart(left, plots.histogram(summ.energy_per_atom, title="Energy per atom",
                                      xlabel="eV/atom"), "energy_hist")
if summ.force_magnitudes:
    show.chart(right, plots.histogram(summ.force_magnitudes, title="Force magnitude",
                                       xlabel="eV/Å", log_y=True), "force_hist")

# ----------------------------------------------------------------- 5. split
st.subheader("Train / valid / test split")
ws = selections.workspace()
split = None
if bundled_split is not None:
    split = register_files_as_split(ws, bundled_split,
                                    "demo-" + label.split(":")[0].split()[0].lower())
    st.caption("The bundled target comes with its own split.")
else:
    c = st.columns(4)
    f_train = c[0].number_input("train", 0.0, 1.0, 0.8, 0.05)
    f_valid = c[1].number_input("valid", 0.0, 1.0, 0.1, 0.05)
    f_test = c[2].number_input("test", 0.0, 1.0, 0.1, 0.05)
    seed = int(c[3].number_input("seed", 0, 2**31 - 1, 0))
    dropped = {i for f in findings if f.indices and f.severity == "error" for i in f.indices}
    if dropped:
        st.caption(f"{len(dropped)} configuration(s) with errors will be left out of the "
                   "split.")
    if st.button("Save split", disabled=keys.energy is None or len(frames) - len(dropped) < 2):
        try:
            split = make_split(dataset, ws, {"train": f_train, "valid": f_valid,
                                             "test": f_test}, seed)
        except MlipftError as exc:
            st.error(str(exc))
    else:
        split = selections.selected_split()
if split is not None:
    if selections.get("split_id") != split.id:
        selections.select(split_id=split.id, e0_choice=None)
    left_out = sum(len(v) for v in split.excluded.values()) if split.excluded else 0
    st.success(f"Split: {split_label(split)}"
               + (f" ({left_out} configurations left out)" if left_out else ""))

# ----------------------------------------------------------------- 6. viewer
st.subheader("Structures")
PAGE = 200  # structures per viewer page (browsing within a page needs no server round trip)
first = 0
if len(frames) > PAGE:
    first = int(st.number_input(f"First structure shown (the viewer holds {PAGE} at a time)",
                                0, len(frames) - 1, 0, step=PAGE))
shown = frames[first:first + PAGE]
captions = [f"#{first + k}: {a.get_chemical_formula()}, {len(a)} atom{'s' if len(a) != 1 else ''}, "
            f"{a.info.get('config_type', 'Default')}" for k, a in enumerate(shown)]
st.caption(f"Structures {first}–{first + len(shown) - 1} of {len(frames)}: use the slider or "
           "the arrows under the view.")
st.iframe(gallery_html(shown, captions), height=500)
if not local_js_available():
    st.caption("3D viewer script loads from the internet (run the setup script for an "
               "offline copy).")

# ----------------------------------------------------------------- 7. zero-shot evaluation
st.subheader("Zero-shot evaluation")
if model_path is None:
    st.info("Choose a foundation model (Foundation model page) to evaluate it on this data.")
    st.stop()
parts = {"whole file": path}
if split is not None:
    parts = {p: str(split.file(p)) for p in split.counts if split.counts[p]} | parts
target = st.selectbox("Evaluate on", list(parts),
                      index=list(parts).index("test") if "test" in parts else 0)
try:
    heads = inspect_cached(model_path, workspace=selections.workspace(), trusted=True).heads
except MlipftError as exc:
    st.error(str(exc))
    st.stop()
chosen = selections.get("foundation_head")
head = st.selectbox("Head", heads, index=heads.index(chosen) if chosen in heads else 0,
                    help="The head chosen on the Foundation model page is the one fine-tuned "
                         "from.") if len(heads) > 1 else heads[0]
run_key = f"zeroshot::{model_path}::{parts[target]}::{head}::{keys.energy}::{keys.forces}"
if st.button("Evaluate", type="primary"):
    bar = st.progress(0.0, text="Evaluating…")
    fit_on = parts.get("train") if target not in ("train", "whole file") else None
    try:
        with turns.shown_turn("evaluation"):
            st.session_state[run_key] = zero_shot(
                model_path, parts[target] if target != "whole file" else frames, head=head,
                keys=None if target != "whole file" else keys, fit_on=fit_on,
                isolated_file=isolated_file_for(parts.get("train") or path),
                progress=lambda d, n: bar.progress(d / n, text=f"{d}/{n} structures"))
    except MlipftError as exc:
        st.error(str(exc))
    bar.empty()
zs = st.session_state.get(run_key)
if zs is not None:
    res, rr = zs.result, zs.referenced
    m = res.metrics
    def fmt(v):
        return "n/a" if v is None else f"{v:,.1f}"

    if rr is None:
        st.info(f"Energies are shown as they are: {zs.note}.")
    c = st.columns(4)
    fitted_on = "on the training part" if zs.fitted_on != "this data" else "on this data"
    c[0].metric("Energy RMSE (meV/atom)",
                fmt(None if rr is None else rr.rmse_mev_per_atom),
                help="Energies relative to E0s: the model's own on its side, E0s re-estimated "
                     f"for this data ({fitted_on}) "
                     "on the reference side. The fair zero-shot error across levels of theory.")
    c[1].metric("Raw energy RMSE (meV/atom)", fmt(m.energy_rmse_mev_per_atom),
                help="Absolute energies: across levels of theory this is mostly the E0 "
                     "offset, not an error of the model.")
    c[2].metric("Force RMSE (meV/Å)", fmt(m.forces_rmse_mev_per_a))
    c[3].metric("Force MAE (meV/Å)", fmt(m.forces_mae_mev_per_a))
    left, right = st.columns(2)
    if rr is not None and rr.rmse_mev_per_atom is not None:
        ok = np.isfinite(rr.ref_per_atom)
        show.chart(left, plots.parity(rr.ref_per_atom[ok], rr.pred_per_atom[ok],
                                       title=f"Energy per atom relative to the E0s · RMSE "
                                             f"{fmt(rr.rmse_mev_per_atom)} meV/atom",
                                       unit="eV/atom",
                                       labels=[t for t, k in zip(res.config_types, ok) if k]),
                   "parity_energy")
    if res.ref_forces is not None:
        show.chart(right, plots.parity(res.ref_forces.ravel(), res.pred_forces.ravel(),
                                        title="Force components · RMSE "
                                              f"{fmt(m.forces_rmse_mev_per_a)} meV/Å",
                                        unit="eV/Å"), "parity_forces")
    offset = (level_offset_ev_per_atom(res.ref_energy_per_atom - res.pred_energy_per_atom)
              if m.energy_rmse_mev_per_atom is not None else None)
    if levels_differ(offset):
        st.warning(f"The reference and the model differ by {format_energy_per_atom(offset)} "
                   "on average in "
                   "absolute energy: different levels of theory. That offset is what the "
                   "re-estimated E0s absorb; the error that remains is the model's.")
    table = pd.DataFrame({"configuration type": res.config_types, "atoms": res.n_atoms,
                          "reference energy (eV)": res.ref_energy,
                          "predicted energy (eV)": res.pred_energy,
                          **({} if rr is None else {
                              "reference energy relative to the re-estimated E0s (eV/atom)":
                                  rr.ref_per_atom,
                              "predicted energy relative to the model's E0s (eV/atom)":
                                  rr.pred_per_atom})})
    st.download_button("Predictions as CSV", table.to_csv(index=False), "zero_shot.csv", "text/csv")

st.info("Next: fit the atomic reference energies on the **E0s** page; the zero-shot offset "
        "above is what they absorb.")
