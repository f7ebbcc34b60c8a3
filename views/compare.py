"""Compare runs: target accuracy, forgetting, training curves and short-range repulsion."""

from dataclasses import replace
from pathlib import Path

import streamlit as st

from mlipft_core import analysis, jobs
from mlipft_core.compare import ModelRef, compare, resolve_models
from mlipft_core.defaults import pretrain_test_for
from mlipft_core.demo import demo_paths, short_range_test_for
from mlipft_core.errors import MlipftError
from mlipft_core.jobs.records import is_pilot
from mlipft_core.probes import WALL_THRESHOLD_EV
from mlipft_ui import cache, labels, plots, selections, turns
from mlipft_ui import compare_panels as panels

st.title("Compare runs")
st.caption("Target accuracy, forgetting of the pretraining distribution and short-range "
           "repulsion, next to the zero-shot foundation model and the from-scratch baseline.")

ws = selections.workspace()
demo = demo_paths()
done = [r for r in jobs.list_runs(ws) if r.status == "done" and r.kind == "train"]
if not done:
    st.info("No finished runs yet: launch some on the **Fine-tuning runs** page.")
    st.stop()
shown = labels.run_labels(done)
finals = [r.id for r in done if not is_pilot(r)]
pilots = [r.id for r in done if is_pilot(r)]
saved = selections.get("compare") or {}
saved = saved if isinstance(saved, dict) else {}
saved_runs = [i for i in saved.get("runs", []) if i in shown]
# learning-rate pilots are offered in a group of their own, never chosen by default
picked = st.multiselect("Runs", finals, format_func=shown.get,
                        default=[i for i in saved_runs if i in finals] if saved_runs
                        else finals[-8:])
if pilots:
    picked += st.multiselect(
        "Learning-rate pilot runs", pilots, format_func=shown.get,
        default=[i for i in saved_runs if i in pilots],
        help="The short runs of a learning-rate pilot, one per learning rate tried (most "
             "of them on purpose too low or too high). They chose a learning rate; compare "
             "them only to see that choice.")
split = selections.selected_split()
c = st.columns(2)
default_target = (str(split.file("test")) if split and split.counts.get("test")
                  else demo["sn2_test"])
target = c[0].text_input("Target test set", saved.get("target") or default_target)
pretrain = c[1].text_input("Held-out pretraining test set (forgetting)",
                           saved.get("pretrain")
                           or pretrain_test_for(selections.get("model"),
                                                selections.get("foundation_head"))
                           or demo["pretrain_test"])
if not picked:
    st.info("Pick at least one run.")
    st.stop()
try:
    target, pretrain = selections.check_path(target), selections.check_path(pretrain)
except MlipftError as exc:
    st.error(str(exc))
    st.stop()
choice = {"runs": sorted(picked), "target": target, "pretrain": pretrain}
# the last comparison comes back after a reload (its predictions are cached on disk)
go = st.button("Compare", type="primary") or (saved and
                                               {**saved, "runs": sorted(saved.get("runs", []))}
                                               == choice)
if not go:
    st.stop()
key = f"cmp::{choice}"
if key not in st.session_state:
    with st.status("Comparing…", expanded=True) as status:
        bar = st.progress(0.0)
        line = st.empty()

        def report(i, n, name, step=""):
            bar.progress(min(1.0, i / max(n, 1)))
            line.markdown(f"Model {min(int(i) + 1, n)} of {n}: **{name}** · {step}")

        try:
            refs = [replace(ref, name=shown[ref.run_id]) for ref in resolve_models(picked, ws)]
            base = next((ref.foundation for ref in refs if ref.foundation), None)
            if base:  # the zero-shot baseline, by name
                refs.insert(0, ModelRef(f"{labels.model_name(base)}, the foundation model",
                                        base))
            with turns.shown_turn("comparison"):
                rows, results = compare(refs, target, pretrain or None, workspace=ws,
                                        progress=report)
        except MlipftError as exc:
            status.update(label="Comparison failed", state="error")
            st.error(str(exc))
            st.stop()
        status.update(label=f"Compared {len(rows)} model heads", state="complete",
                      expanded=False)
    st.session_state[key] = (refs, rows, results)
    if saved != choice:
        selections.select(compare=choice, rerun=False)
refs, rows, results = st.session_state[key]
colors = plots.palette([r.name for r in rows])
heads_per = panels.heads_per_model(rows)

panels.metrics_panel(rows, heads_per)
panels.parity_section(results, heads_per, colors)
panels.forgetting_panel(rows, heads_per, colors)
panels.training_curves_panel(refs, ws, colors)
panels.learning_curve_panel(done, target, ws)
panels.per_config_type_panel(results, heads_per)

# ----------------------------------------------------------------- repulsion
st.subheader("Short-range repulsion")
st.caption("Energy of two atoms brought together. A physical model rises steeply at short "
           f"distance; a model whose energy at the shortest distance is less than "
           f"{WALL_THRESHOLD_EV:g} eV above its minimum has lost the repulsive wall, and MD or "
           "relaxations can collapse.")
foundation_path = next((r.foundation for r in refs if r.foundation), None)
try:
    mh = analysis.model_heads({r.name: r.path for r in refs})
    # plots and tables name a head in words (analysis labels it by its code)
    head_names = {m.label: panels.shown_head(m) for m in mh}
    target_frames = cache.frames(target)
except MlipftError as exc:
    st.error(str(exc))
    st.stop()
elements = sorted({s for a in target_frames for s in a.get_chemical_symbols()})
panels.repulsion_section(mh, analysis.element_pairs(elements), ws, foundation_path, head_names,
                         colors)
probe_file = short_range_test_for(pretrain)
if probe_file:
    panels.short_range_probe_panel(mh, probe_file, ws, head_names)
panels.collapse_probe_panel(mh, elements, ws)
if Path(target).resolve().parent == Path(demo["sn2_test"]).resolve().parent:
    panels.reaction_profile_panel(mh, demo["sn2_scan"], ws, head_names, colors)

st.info("Next: run the same MD with the best models on the **Molecular dynamics** page to see "
        "whether low errors also mean stable dynamics.")
