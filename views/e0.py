"""E0 workbench: compare atomic reference energies by every method and choose one."""


import numpy as np
import pandas as pd
import streamlit as st

from mlipft_core import e0 as e0mod
from mlipft_core.data import load_split, read_frames
from mlipft_core.demo import demo_paths, isolated_file_for
from mlipft_core.errors import MlipftError
from mlipft_core.registry import inspect_cached
from mlipft_ui import plots, selections, show, turns

st.title("E0s: atomic reference energies")
st.caption("A wrong E0 can ruin a fine-tune while held-out errors still look fine. Compare "
           "every method mace offers on your training data and pick the one the data supports.")

model_path = selections.selected_model_path()
split_id = selections.get("split_id")
if model_path is None or not split_id:
    st.info("Choose a foundation model and a dataset split first (Foundation model and Data "
            "pages).")
    st.stop()
try:
    split = load_split(selections.workspace(), split_id)
except MlipftError as exc:
    st.error(str(exc))
    st.stop()
train_file = str(split.file("train"))
ws = selections.workspace()
try:
    info = inspect_cached(model_path, workspace=ws, trusted=True).to_dict()
except MlipftError as exc:
    st.error(str(exc))
    st.stop()
chosen = selections.get("foundation_head")
head = st.selectbox("Head", info["heads"], index=info["heads"].index(chosen)
                    if chosen in info["heads"] else 0) \
    if len(info["heads"]) > 1 else info["heads"][0]
demo = demo_paths()
default_iso = isolated_file_for(train_file) or ""
with st.expander("Isolated-atom energies (the anchor of fitted E0s) and explicit values",
                 expanded=not default_iso):
    iso_file = st.text_input("extxyz with IsolatedAtom configurations of the reference method",
                             value=default_iso,
                             help="One single-atom configuration per element, labelled with the "
                                  "same method as the training data. The fitted methods take "
                                  "whatever the data cannot determine from these energies.") or None
    explicit = st.text_area("Explicit E0s as JSON, e.g. {\"H\": -13.6, \"C\": -1029.0}",
                            value="") or None
try:
    iso_file = selections.check_path(iso_file)
except MlipftError as exc:
    st.error(str(exc))
    st.stop()
st.markdown(f"Training data: `{train_file}` ({split.counts.get('train', 0)} configurations) · "
            f"model: **{selections.get('model_label') or selections.get('model')}**, head `{head}`")

key = f"e0::{model_path}::{train_file}::{head}::{iso_file}::{explicit}"
pressed = st.button("Compute E0s", type="primary",
                    help="The foundation model's predictions on the training set are kept in "
                         "the workspace: the same model, head and data are predicted once.")
if key not in st.session_state:
    bar = st.progress(0.0, text="Evaluating the foundation model on the training set…") \
        if pressed else None
    try:  # shown without pressing again when the predictions are in the workspace already
        if pressed:
            with turns.shown_turn("E0 fit"):
                inputs = e0mod.prepare(train_file, model_path, head=head, trusted=True,
                                       isolated_file=iso_file, workspace=ws,
                                       progress=lambda d, n: bar.progress(d / n,
                                                                          text=f"{d}/{n}"))
        else:
            inputs = e0mod.cached_inputs(train_file, model_path, head=head, trusted=True,
                                         isolated_file=iso_file, workspace=ws)
        if inputs is not None:
            st.session_state[key] = (inputs, e0mod.compute_all(inputs, explicit=explicit))
    except MlipftError as exc:
        st.error(str(exc))
        st.stop()
    finally:
        if bar is not None:
            bar.empty()
if key not in st.session_state:
    st.stop()
inputs, results = st.session_state[key]

# ----------------------------------------------------------------- verdict
assessment = e0mod.assess(results)
best = assessment.best
st.subheader("Verdict")
{"success": st.success, "warning": st.warning, "info": st.info}[assessment.level](
    " ".join(assessment.notes))
if split.excluded.get("isolated_atom"):
    st.warning(f"The source file had {len(split.excluded['isolated_atom'])} IsolatedAtom "
               "configurations; they were left out of the split, because mace would take them as "
               "E0s and silently override this choice.")

# ----------------------------------------------------------------- table and bars
st.subheader("E0 per element")
table = pd.DataFrame({m: r.e0 for m, r in results.items()})
table.index.name = "element"


def _mev(v):
    return "—" if v is None else f"{v:,.1f}"


summary = pd.DataFrame({m: {"offset RMSE before (meV/atom)":
                            _mev(r.offset_rmse_before_mev_per_atom),
                            "offset RMSE after (meV/atom)": _mev(r.offset_rmse_after_mev_per_atom),
                            "fit rank": "—" if r.diagnostics is None else
                            f"{r.diagnostics.rank}/{len(r.diagnostics.elements)}",
                            "condition number": "—" if r.diagnostics is None else
                            f"{r.diagnostics.condition_number:.3g}",
                            "undetermined part from": "—" if not r.anchor or r.diagnostics is None
                            or not r.diagnostics.rank_deficient else r.anchor}
                        for m, r in results.items()})
st.caption("E0 of each element by each method, in eV per atom; below, how well each set "
           "explains the training energies.")
shown = pd.concat([table.map(lambda v: f"{v:,.4f}"), summary.astype(str)])
shown.index = [f"{i} (eV)" if i in table.index else i for i in shown.index]
shown.index.name = "element / fit"
st.dataframe(shown)
relative = st.toggle("Show as difference from the foundation E0s", value=False)
base = results["foundation"].e0 if relative and "foundation" in results else {}
bars = {m: {el: v - (base[el] if base else 0.0) for el, v in r.e0.items()}
        for m, r in results.items()}
show.chart(st, plots.grouped_bar(bars, title="E0 per element and method",
                                  ylabel="ΔE0 from foundation (eV)" if relative else "E0 (eV)"),
           "e0_methods")

# ----------------------------------------------------------------- residuals and parity
st.subheader("Offset per configuration before and after")
method = st.selectbox("Method", list(results),
                      index=list(results).index(best) if best in results else 0)
r = results[method]
if r.offset_before is not None:
    # the model's interaction energy: its prediction minus its own E0s
    model_rel = e0mod.relative_per_atom(inputs.model_energy, inputs, r.foundation_e0)
    for stage, label, offset, ref_e0, rmse in (
            ("before", "with the model's own E0s", r.offset_before, r.foundation_e0,
             r.offset_rmse_before_mev_per_atom),
            ("after", f"with {method} E0s", r.offset_after, r.e0,
             r.offset_rmse_after_mev_per_atom)):
        left, right = st.columns(2)
        rmse_text = "—" if rmse is None else e0mod.format_energy_per_atom(rmse / 1000).lstrip("+")
        show.chart(left, plots.histogram(offset * 1000, title=f"(E_ref − E_model) / N {label}",
                                          xlabel="meV/atom"), f"e0_residuals_{stage}")
        show.chart(right, plots.parity(e0mod.relative_per_atom(inputs.ref_energy, inputs, ref_e0),
                                        model_rel,
                                        title=f"Energy per atom relative to the E0s<br>"
                                              f"{label} · RMSE {rmse_text}",
                                        unit="eV/atom"), f"e0_parity_{stage}")
    st.caption("Parity of energies relative to E0s: the reference minus the sum of the chosen "
               "E0s against the model's interaction energy (its prediction minus its own E0s). "
               "With the model's own E0s across levels of theory the points sit far off the "
               "diagonal: that distance is the E0 offset.")
for w in r.warnings:
    st.warning(w)

# ----------------------------------------------------------------- interaction-energy view
st.subheader("Energy along a structure series")
series_default = demo["sn2_scan"] if default_iso else ""
series_path = st.text_input("Series of structures (extxyz, in order), e.g. a reaction-path scan",
                            value=series_default)
if series_path:
    try:
        series_path = selections.check_path(series_path)
        frames = read_frames(series_path)
        curves = e0mod.series_energies(model_path, series_path, results, head=head,
                                       trusted=True, workspace=ws)
        shift = st.toggle("Relative to the first structure", value=True,
                          help="Absolute energies of one composition differ by a constant per "
                               "E0 set; relative to the first structure the shape shows.")
        show.chart(st, plots.curves(curves, relative=shift, title="Energy along the series",
                                     ylabel="energy relative to the first structure (eV)"
                                     if shift else "total energy (eV)"), "e0_series")
        first = {name: float(np.asarray(y, float)[0]) for name, y in curves.items()}
        if "reference" in first and np.isfinite(first["reference"]):
            n0 = len(frames[0])
            st.dataframe(pd.DataFrame(
                [{"E0 method": name, "offset from the reference at the first structure "
                  "(meV/atom)": 1000 * (v - first["reference"]) / n0}
                 for name, v in first.items() if name != "reference"]).round(1),
                hide_index=True)
        st.caption("For structures of one composition every E0 choice shifts the curve rigidly: "
                   "the absolute offset is what the network would have to learn if the E0s "
                   "do not absorb it, and what distorts interaction energies after training.")
    except MlipftError as exc:
        st.error(str(exc))

# ----------------------------------------------------------------- choose and export
st.subheader("Use these E0s")
choice = st.radio("E0 method for fine-tuning", list(results),
                  index=list(results).index(best) if best in results else 0, horizontal=True)
chosen = results[choice]
st.code(f"--E0s=\"{chosen.mace_argument()}\"", language="bash")
c1, c2 = st.columns(2)
if c1.button("Save as the E0 choice for runs", type="primary"):
    saved = e0mod.save_choice(ws, chosen, model=selections.get("model"), head=head,
                              data=train_file)
    selections.flash(f"Saved the E0s as {saved['id']}; fine-tuning runs will use them.")
    st.rerun()
c2.download_button("Download E0s as JSON", pd.Series(chosen.e0).to_json(indent=2),
                   f"e0_{choice}.json", "application/json")

st.info("Next: launch fine-tuning runs with these E0s on the **Fine-tuning runs** page.")
