"""Compare runs: target accuracy, forgetting, training curves and short-range repulsion."""

from dataclasses import replace
from pathlib import Path

import pandas as pd
import streamlit as st

from mlipft_core import analysis, jobs
from mlipft_core.compare import ModelRef, compare, resolve_models
from mlipft_core.demo import demo_paths, short_range_test_for
from mlipft_core.errors import MlipftError
from mlipft_core.jobs.records import is_pilot
from mlipft_core.probes import (
    WALL_THRESHOLD_EV,
    collapse_probe_cached,
    reference_curve,
    reference_dimer_curves,
)
from mlipft_ui import cache, labels, plots, selections, show, turns

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
default_target = str(split.file("test")) if split and split.counts.get("test") else demo["sn2_test"]
target = c[0].text_input("Target test set", saved.get("target") or default_target)
pretrain = c[1].text_input("Held-out pretraining test set (forgetting)",
                           saved.get("pretrain") or demo["pretrain_test"])
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


def label(name: str, head: str | None, multihead: bool) -> str:
    return f"{name} [{labels.head_label(head)}]" if multihead and head else name


def shown_head(m) -> str:
    """The label of an :class:`~mlipft_core.analysis.ModelHead` with its head in words."""
    return label(m.name, m.head, m.multihead)


heads_per = {}
for r in rows:
    heads_per[r.name] = heads_per.get(r.name, 0) + 1

# ----------------------------------------------------------------- metrics
st.subheader("Metrics")
table = pd.DataFrame([{
    "model": r.name + (" (zero-shot)" if r.is_foundation else ""),
    "head": labels.head_label(r.head),
    "strategy": labels.strategy_title(r.strategy),
    "forgetting ratio (pretraining F RMSE / foundation's)": r.forgetting_ratio,
    "target force RMSE (meV/Å)": r.target_forces_rmse_mev_per_a,
    "target energy RMSE (meV/atom)": r.target_energy_rmse_mev_per_atom,
    "pretraining force RMSE (meV/Å)": r.pretrain_forces_rmse_mev_per_a,
    "pretraining energy RMSE (meV/atom)": r.pretrain_energy_rmse_mev_per_atom,
    "target stress RMSE (meV/Å³)": r.target_stress_rmse_mev_per_a3} for r in rows])
raw = pd.DataFrame([{
    "model": label(r.name, r.head, heads_per[r.name] > 1),
    "target energy RMSE, raw (meV/atom)": r.target_energy_rmse_mev_per_atom_raw,
    "pretraining energy RMSE, raw (meV/atom)": r.pretrain_energy_rmse_mev_per_atom_raw,
    "target energies measured against": r.target_energy_reference} for r in rows])
table = table.dropna(axis=1, how="all")  # e.g. stress when nothing carries a stress label
if all(v == 1 for v in heads_per.values()):
    table = table.drop(columns=["head"])
# a missing value (e.g. no forgetting measure for a model without the pretraining elements)
# reads as a dash, not as "None": such a column is shown as text
decimals = {c: 2 for c in table.columns if "ratio" in c}
metrics_shown = labels.dash_missing(table, decimals)
st.dataframe(metrics_shown, hide_index=True,
             column_config=labels.number_formats(metrics_shown, decimals))
st.caption("Forgetting ratio: a model's force error on held-out pretraining data over the "
           "foundation model's (1 = no forgetting; larger = more forgotten). A replay model's "
           "pretraining head answers for the pretraining data, its target head for the "
           "target. "
           "Energy errors compare energies relative to the E0s of each dataset's level of "
           "theory: the foundation model (and a pretraining head) on the target with the "
           "target's E0s, "
           "a fine-tune on the pretraining data with the foundation's E0s. Raw absolute "
           "energies across levels differ by the E0 offset, which is not an error.")
with st.expander("Raw energy errors (absolute energies, E0 offset included)"):
    raw = labels.dash_missing(raw)
    st.dataframe(raw, hide_index=True, column_config=labels.number_formats(raw))
for r in rows:
    if r.note:
        st.caption(f"{label(r.name, r.head, True)}: {r.note}")
st.download_button("Metrics as CSV", table.to_csv(index=False), "comparison.csv", "text/csv")
best = min((r for r in rows if r.forgetting_ratio is not None and not r.is_foundation),
           key=lambda r: r.forgetting_ratio, default=None)
if best is not None:
    which = f", {labels.head_label(best.head)}" if heads_per[best.name] > 1 else ""
    st.info(f"Least forgetting: **{best.name}**{which}: its pretraining force error is "
            f"{best.forgetting_ratio:.2f}× the foundation model's.")

# ----------------------------------------------------------------- parity
@st.fragment
def parity_section() -> None:
    """A fragment: the overlay toggle redraws these two plots only, not the page."""
    st.subheader("Parity on the target test set")
    overlay = st.toggle("Overlay models in one plot", value=False)
    e_panels = {label(n, h, heads_per[n] > 1): (r.referenced.ref_per_atom,
                                                r.referenced.pred_per_atom,
                                                r.referenced.rmse_mev_per_atom)
                for (n, h), r in results.items()}
    f_panels = {label(n, h, heads_per[n] > 1): (r.ref_forces.ravel(), r.pred_forces.ravel(),
                                                r.metrics.forces_rmse_mev_per_a)
                for (n, h), r in results.items() if r.ref_forces is not None}
    show.chart(st, plots.parity_grid(e_panels, unit="eV/atom",
                                      quantity="Energy per atom relative to the E0s",
                                      overlay=overlay, colors=colors, rmse_unit="meV/atom"),
               "parity_energy")
    show.chart(st, plots.parity_grid(f_panels, unit="eV/Å", quantity="Force components",
                                      overlay=overlay, colors=colors, rmse_unit="meV/Å"),
               "parity_forces")


parity_section()

# ----------------------------------------------------------------- forgetting and curves
st.subheader("Forgetting")
ok = [r for r in rows if r.pretrain_forces_rmse_mev_per_a and r.target_forces_rmse_mev_per_a]
show.chart(st, plots.labelled_scatter(
    [r.target_forces_rmse_mev_per_a for r in ok], [r.pretrain_forces_rmse_mev_per_a for r in ok],
    [label(r.name, r.head, heads_per[r.name] > 1) for r in ok],
    title="Target error against pretraining error (lower left is better)",
    xlabel="target force RMSE (meV/Å)", ylabel="pretraining force RMSE (meV/Å)",
    colors=colors), "forgetting")
st.subheader("Training curves")
curves = {}
for ref in refs:
    if ref.run_id:
        series = jobs.progress(jobs.get_run(ref.run_id, ws), ws).series()
        for head, pts in series.items():
            curves[label(ref.name, head, len(series) > 1)] = pts
if curves:
    show.chart(st, plots.learning_curves(curves, title="Validation force RMSE per epoch",
                                          ylabel="force RMSE (meV/Å)", colors=colors), "curves")

# ----------------------------------------------------------------- learning curves
lc = analysis.learning_curve(done, target, workspace=ws)
if lc:
    st.subheader("Learning curves")
    series = {labels.strategy_title(k): ([p[0] for p in v], [p[1] for p in v])
              for k, v in lc.items()}
    show.chart(st, plots.xy_lines(series, title="Target force RMSE against training-set size",
                                   xlabel="training configurations",
                                   ylabel="force RMSE (meV/Å)", log_x=True, log_y=True),
               "learning_curve")

# ----------------------------------------------------------------- per config type
with st.expander("Target errors per configuration type (energies as predicted: for a model "
                 "of another level of theory they include the E0 offset)"):
    per = [{"model": label(n, h, heads_per[n] > 1), "configuration type": ct,
            "structures": m.n_structures,
            "energy RMSE, absolute energies (meV/atom)": m.energy_rmse_mev_per_atom,
            "force RMSE (meV/Å)": m.forces_rmse_mev_per_a}
           for (n, h), r in results.items() for ct, m in r.per_config_type().items()]
    st.dataframe(labels.dash_missing(pd.DataFrame(per).round(1)), hide_index=True)

# ----------------------------------------------------------------- repulsion
st.subheader("Short-range repulsion")
st.caption("Energy of two atoms brought together. A physical model rises steeply at short "
           f"distance; a model whose energy at the shortest distance is less than "
           f"{WALL_THRESHOLD_EV:g} eV above its minimum has lost the repulsive wall, and MD or "
           "relaxations can collapse.")
foundation_path = next((r.foundation for r in refs if r.foundation), None)
members = {r.name: r.path for r in refs}
try:
    mh = analysis.model_heads(members)
    # plots and tables name a head in words (analysis labels it by its code)
    head_names = {m.label: shown_head(m) for m in mh}
    target_frames = cache.frames(target)
except MlipftError as exc:
    st.error(str(exc))
    st.stop()
pairs = analysis.element_pairs(s for a in target_frames for s in a.get_chemical_symbols())
@st.fragment
def repulsion_section() -> None:
    """A fragment: choosing another element pair redraws the dimer plot only."""
    pair = st.selectbox("Element pair", pairs)
    with st.spinner(f"{pair} dimer curves…"):
        series, verdicts = analysis.repulsion(
            mh, pair, workspace=ws,
            reference_curve=reference_curve(reference_dimer_curves(foundation_path), pair))
    series = {head_names.get(k, k): v for k, v in series.items()}
    show.chart(st, plots.dimer_curves(series, title=f"{pair} dimer", colors=colors), "dimer")
    st.dataframe(labels.dash_missing(pd.DataFrame([{"model": head_names.get(v.model, v.model),
                                f"wall at {v.shortest_distance_a:.1f} Å (eV above minimum)": v.wall_ev,
                                f"reference wall at {v.shortest_distance_a:.1f} Å (eV)":
                                    v.reference_wall_ev,
                                "short-range repulsion": v.verdict} for v in verdicts]
                               ).dropna(axis=1, how="all").round(2), default=2),
                 hide_index=True)
    lost = [head_names.get(v.model, v.model) for v in verdicts if v.verdict == "lost"]
    if lost:
        st.warning(f"{', '.join(lost)}: short-range repulsion of {pair} lost.")


repulsion_section()
probe_file = short_range_test_for(pretrain)
if probe_file:
    st.markdown("**Held-out compressed structures.** How much of the reference's repulsive "
                "force each model keeps on compressed structures it never saw (close trimers, "
                "squeezed molecules and clusters, random compact structures). A *soft spot* "
                "is a structure where a model keeps less than half of it: atoms there are "
                "pushed apart too weakly and can collapse.")
    try:
        with st.spinner("Forces on the held-out compressed structures…"):
            probe = analysis.short_range_probe(mh, probe_file, workspace=ws)
    except MlipftError as exc:
        st.error(str(exc))
    else:
        if probe and (probe[0].n_left_out or probe[0].n_weak_forces):
            st.caption(f"Probed on {probe[0].n_structures} structures: "
                       + "; ".join(x for x in (
                           f"{probe[0].n_left_out} others contain elements some model here was "
                           "never trained on" if probe[0].n_left_out else "",
                           f"{probe[0].n_weak_forces} have reference forces too small to probe"
                           if probe[0].n_weak_forces else "") if x) + ".")
        probe_table = labels.dash_missing(pd.DataFrame([{
            "model": head_names.get(r.model, r.model),
            "reference force kept, median (%)": 100 * r.median_force_kept,
            "soft spots": f"{r.soft_spots} of {r.n_structures}",
            "soft spots (% of structures)": r.soft_share_percent,
            "force RMSE (eV/Å)": r.forces_rmse_ev_per_a} for r in probe]))
        st.dataframe(probe_table, hide_index=True,
                     column_config=labels.number_formats(probe_table))
if st.button("Run the collapse probe (relaxes 4 random compact 8-atom structures per model)"):
    probe_rows = []
    elements = sorted({s for a in target_frames for s in a.get_chemical_symbols()})
    with st.status("Relaxing random compact structures…", expanded=True) as status:
        bar = st.progress(0.0)
        for i, m in enumerate(mh):
            text = st.empty()
            text.markdown(f"Model {i + 1} of {len(mh)}: **{shown_head(m)}**")
            res = collapse_probe_cached(
                m.path, elements, head=m.head, workspace=ws, trusted=True, n_structures=4,
                progress=lambda s, n, i=i: bar.progress((i + s / n) / len(mh)))
            probe_rows.append({"model": shown_head(m), "smallest distance reached (Å)":
                               round(res.min_distance, 2),
                               "collapsed structures": f"{res.collapsed} of {res.n_structures}"})
        status.update(label="Collapse probe done", state="complete", expanded=False)
    st.dataframe(pd.DataFrame(probe_rows), hide_index=True)

# ----------------------------------------------------------------- reaction profile
if Path(target).resolve().parent == Path(demo["sn2_test"]).resolve().parent:
    st.subheader("SN2 reaction profile (F⁻ + CH3Cl)")
    with st.spinner("Energies along the scan…"):
        prof = analysis.reaction_profile(mh, demo["sn2_scan"], workspace=ws)
    prof = {head_names.get(k, k): v for k, v in prof.items()}
    show.chart(st, plots.xy_lines(prof, title="Energy along the scan", xlabel="scan point",
                                   ylabel="energy relative to the first point (eV)",
                                   colors=colors), "sn2_profile")

st.info("Next: run the same MD with the best models on the **Molecular dynamics** page to see "
        "whether low errors also mean stable dynamics.")
