"""The compare page's sections: metrics, parity, forgetting, training and learning curves,
errors per configuration type, short-range repulsion and the reaction profile.

Each section draws what :func:`mlipft_core.compare.compare` and :mod:`mlipft_core.analysis`
measured; a model head is named ``model [head in words]`` where its model has several.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import streamlit as st

from mlipft_core import analysis, jobs
from mlipft_core.compare import ComparisonRow, least_forgetting
from mlipft_core.errors import MlipftError
from mlipft_core.probes import collapse_probe_cached, reference_curve, reference_dimer_curves
from mlipft_core.workspace import Workspace
from mlipft_ui import labels, plots, show


def label(name: str, head: str | None, multihead: bool) -> str:
    """A model head's name: the model's, with the head in words when it has several."""
    return f"{name} [{labels.head_label(head)}]" if multihead and head else name


def shown_head(m) -> str:
    """The label of an :class:`~mlipft_core.analysis.ModelHead` with its head in words."""
    return label(m.name, m.head, m.multihead)


def heads_per_model(rows: Sequence[ComparisonRow]) -> dict[str, int]:
    """Model name -> how many of its heads the comparison has."""
    out: dict[str, int] = {}
    for r in rows:
        out[r.name] = out.get(r.name, 0) + 1
    return out


# ----------------------------------------------------------------- metrics
def metrics_panel(rows: Sequence[ComparisonRow], heads_per: Mapping[str, int]) -> None:
    """The metrics table (raw energy errors apart), the notes, a CSV and the model that
    forgot least."""
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
    # a missing value (e.g. no forgetting measure for a model without the pretraining
    # elements) reads as a dash, not as "None": such a column is shown as text
    decimals = {c: 2 for c in table.columns if "ratio" in c}
    metrics_shown = labels.dash_missing(table, decimals)
    st.dataframe(metrics_shown, hide_index=True,
                 column_config=labels.number_formats(metrics_shown, decimals))
    st.caption("Forgetting ratio: a model's force error on held-out pretraining data over the "
               "foundation model's (1 = no forgetting; larger = more forgotten). A replay "
               "model's pretraining head answers for the pretraining data, its target head "
               "for the target. "
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
    st.download_button("Metrics as CSV", table.to_csv(index=False), "comparison.csv",
                       "text/csv")
    best = least_forgetting(rows)
    if best is not None:
        which = f", {labels.head_label(best.head)}" if heads_per[best.name] > 1 else ""
        st.info(f"Least forgetting: **{best.name}**{which}: its pretraining force error is "
                f"{best.forgetting_ratio:.2f}× the foundation model's.")


# ----------------------------------------------------------------- parity
@st.fragment
def parity_section(results, heads_per: Mapping[str, int], colors) -> None:
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


# ----------------------------------------------------------------- forgetting and curves
def forgetting_panel(rows: Sequence[ComparisonRow], heads_per: Mapping[str, int],
                     colors) -> None:
    """Target error against pretraining error, one point per model head."""
    st.subheader("Forgetting")
    ok = [r for r in rows
          if r.pretrain_forces_rmse_mev_per_a and r.target_forces_rmse_mev_per_a]
    show.chart(st, plots.labelled_scatter(
        [r.target_forces_rmse_mev_per_a for r in ok],
        [r.pretrain_forces_rmse_mev_per_a for r in ok],
        [label(r.name, r.head, heads_per[r.name] > 1) for r in ok],
        title="Target error against pretraining error (lower left is better)",
        xlabel="target force RMSE (meV/Å)", ylabel="pretraining force RMSE (meV/Å)",
        colors=colors), "forgetting")


def training_curves_panel(refs, ws: Workspace, colors) -> None:
    """The validation force error per epoch of the compared runs."""
    st.subheader("Training curves")
    curves = {}
    for ref in refs:
        if ref.run_id:
            series = jobs.progress(jobs.get_run(ref.run_id, ws), ws).series()
            for head, pts in series.items():
                curves[label(ref.name, head, len(series) > 1)] = pts
    if curves:
        show.chart(st, plots.learning_curves(curves, title="Validation force RMSE per epoch",
                                              ylabel="force RMSE (meV/Å)", colors=colors),
                   "curves")


def learning_curve_panel(done, target: str, ws: Workspace) -> None:
    """Target force error against training-set size per strategy, when runs of several
    sizes finished."""
    lc = analysis.learning_curve(done, target, workspace=ws)
    if not lc:
        return
    st.subheader("Learning curves")
    series = {labels.strategy_title(k): ([p[0] for p in v], [p[1] for p in v])
              for k, v in lc.items()}
    show.chart(st, plots.xy_lines(series, title="Target force RMSE against training-set size",
                                   xlabel="training configurations",
                                   ylabel="force RMSE (meV/Å)", log_x=True, log_y=True),
               "learning_curve")


def per_config_type_panel(results, heads_per: Mapping[str, int]) -> None:
    """The target errors of every model head per configuration type."""
    with st.expander("Target errors per configuration type (energies as predicted: for a "
                     "model of another level of theory they include the E0 offset)"):
        per = [{"model": label(n, h, heads_per[n] > 1), "configuration type": ct,
                "structures": m.n_structures,
                "energy RMSE, absolute energies (meV/atom)": m.energy_rmse_mev_per_atom,
                "force RMSE (meV/Å)": m.forces_rmse_mev_per_a}
               for (n, h), r in results.items() for ct, m in r.per_config_type().items()]
        st.dataframe(labels.dash_missing(pd.DataFrame(per).round(1)), hide_index=True)


# ----------------------------------------------------------------- repulsion
@st.fragment
def repulsion_section(mh, pairs: Sequence[str], ws: Workspace, foundation_path: str | None,
                      head_names: Mapping[str, str], colors) -> None:
    """A fragment: choosing another element pair redraws the dimer plot only."""
    pair = st.selectbox("Element pair", pairs)
    with st.spinner(f"{pair} dimer curves…"):
        series, verdicts = analysis.repulsion(
            mh, pair, workspace=ws,
            reference_curve=reference_curve(reference_dimer_curves(foundation_path), pair))
    series = {head_names.get(k, k): v for k, v in series.items()}
    show.chart(st, plots.dimer_curves(series, title=f"{pair} dimer", colors=colors), "dimer")
    table = pd.DataFrame([{
        "model": head_names.get(v.model, v.model),
        f"wall at {v.shortest_distance_a:.1f} Å (eV above minimum)": v.wall_ev,
        f"reference wall at {v.shortest_distance_a:.1f} Å (eV)": v.reference_wall_ev,
        "short-range repulsion": v.verdict} for v in verdicts])
    st.dataframe(labels.dash_missing(table.dropna(axis=1, how="all").round(2), default=2),
                 hide_index=True)
    lost = [head_names.get(v.model, v.model) for v in verdicts if v.verdict == "lost"]
    if lost:
        st.warning(f"{', '.join(lost)}: short-range repulsion of {pair} lost.")


def short_range_probe_panel(mh, probe_file: str, ws: Workspace,
                            head_names: Mapping[str, str]) -> None:
    """How much of the reference's repulsive force each model head keeps on held-out
    compressed structures."""
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
        return
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


def collapse_probe_panel(mh, elements: Sequence[str], ws: Workspace) -> None:
    """On a click, relax random compact structures with every model head: how close atoms
    come and how many structures collapse."""
    if not st.button("Run the collapse probe (relaxes 4 random compact 8-atom structures "
                     "per model)"):
        return
    probe_rows = []
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
def reaction_profile_panel(mh, scan: str, ws: Workspace, head_names: Mapping[str, str],
                           colors) -> None:
    """Energies along the SN2 reaction scan, relative to its first point."""
    st.subheader("SN2 reaction profile (F⁻ + CH3Cl)")
    with st.spinner("Energies along the scan…"):
        prof = analysis.reaction_profile(mh, scan, workspace=ws)
    prof = {head_names.get(k, k): v for k, v in prof.items()}
    show.chart(st, plots.xy_lines(prof, title="Energy along the scan", xlabel="scan point",
                                   ylabel="energy relative to the first point (eV)",
                                   colors=colors), "sn2_profile")
