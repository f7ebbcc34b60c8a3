"""Compare runs: target accuracy, forgetting, training curves and short-range repulsion."""

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from mlipft_core import jobs
from mlipft_core.compare import compare, resolve_models
from mlipft_core.data import load_split, read_frames
from mlipft_core.demo import demo_paths
from mlipft_core.errors import MlipftError
from mlipft_core.evaluate import evaluate_cached
from mlipft_core.probes import WALL_THRESHOLD_EV, collapse_probe, repulsive_wall
from mlipft_ui import plots, show, state

state.require_navigation()

st.title("Compare runs")
st.caption("Target accuracy, forgetting of the pretraining distribution and short-range "
           "repulsion, next to the zero-shot foundation model and the from-scratch baseline.")

ws = state.workspace()
demo = demo_paths()
done = [r for r in jobs.list_runs(ws) if r.status == "done" and r.kind == "train"]
if not done:
    st.info("No finished runs yet: launch some on the Fine-tuning runs page.")
    st.stop()
labels = {r.id: f"{r.name} · {r.strategy} · {r.id[-6:]}" for r in done}
picked = st.multiselect("Runs", list(labels), default=list(labels)[-8:],
                        format_func=labels.get)
split = None
if state.get("split_id"):
    try:
        split = load_split(ws, state.get("split_id"))
    except MlipftError:
        split = None
c = st.columns(2)
target = c[0].text_input("Target test set", str(split.file("test")) if split and
                         split.counts.get("test") else demo["sn2_test"])
pretrain = c[1].text_input("Held-out pretraining test set (forgetting)", demo["pretrain_test"])
if not picked:
    st.stop()
key = f"cmp::{sorted(picked)}::{target}::{pretrain}"
if st.button("Compare", type="primary") or key in st.session_state:
    if key not in st.session_state:
        bar = st.progress(0.0, text="Evaluating…")
        try:
            refs = resolve_models(picked, ws)
            rows, results = compare(refs, target, pretrain or None, workspace=ws,
                                    progress=lambda i, n, name: bar.progress(
                                        i / max(n, 1), text=f"{name} ({i}/{n})"))
            st.session_state[key] = (refs, rows, results)
        except MlipftError as exc:
            st.error(str(exc))
            st.stop()
        finally:
            bar.empty()
    refs, rows, results = st.session_state[key]
else:
    st.stop()

# ----------------------------------------------------------------- metrics
st.subheader("Metrics")
table = pd.DataFrame([r.to_dict() for r in rows]).rename(columns={
    "target_energy_rmse_mev_per_atom": "target E RMSE (meV/atom)",
    "target_forces_rmse_mev_per_a": "target F RMSE (meV/Å)",
    "pretrain_energy_rmse_mev_per_atom": "pretrain E RMSE (meV/atom)",
    "pretrain_forces_rmse_mev_per_a": "pretrain F RMSE (meV/Å)",
    "forgetting_ratio": "forgetting ratio (pretrain F / foundation's)"})
st.dataframe(table, hide_index=True)
st.download_button("Metrics as CSV", table.to_csv(index=False), "comparison.csv", "text/csv")
best = min((r for r in rows if r.forgetting_ratio is not None and not r.is_foundation),
           key=lambda r: r.forgetting_ratio, default=None)
if best is not None:
    st.info(f"Least forgetting: **{best.name}** (head {best.head}), pretraining force error "
            f"{best.forgetting_ratio:.2f}× the foundation model's. A replay model's pt_head "
            "answers for the pretraining distribution, its Default head for the target.")

# ----------------------------------------------------------------- parity
st.subheader("Parity on the target test set")
overlay = st.toggle("Overlay models in one plot", value=False)
e_panels = {f"{n} [{h}]": (r.ref_energy_per_atom, r.pred_energy_per_atom,
                           r.metrics.energy_rmse_mev_per_atom) for (n, h), r in results.items()}
f_panels = {f"{n} [{h}]": (r.ref_forces.ravel(), r.pred_forces.ravel(),
                           r.metrics.forces_rmse_mev_per_a)
            for (n, h), r in results.items() if r.ref_forces is not None}
show.chart(st, plots.parity_grid(e_panels, unit="eV/atom", quantity="Energy per atom",
                                  overlay=overlay), "parity_energy")
show.chart(st, plots.parity_grid(f_panels, unit="eV/Å", quantity="Force components",
                                  overlay=overlay), "parity_forces")

# ----------------------------------------------------------------- forgetting and curves
st.subheader("Forgetting")
ok = [r for r in rows if r.pretrain_forces_rmse_mev_per_a and r.target_forces_rmse_mev_per_a]
show.chart(st, plots.labelled_scatter(
    [r.target_forces_rmse_mev_per_a for r in ok], [r.pretrain_forces_rmse_mev_per_a for r in ok],
    [f"{r.name} [{r.head}]" for r in ok], title="Target error against pretraining error",
    xlabel="target force RMSE (meV/Å)", ylabel="pretraining force RMSE (meV/Å)"), "forgetting")
st.subheader("Training curves")
curves = {}
for ref in refs:
    if ref.run_id:
        for head, pts in jobs.progress(jobs.get_run(ref.run_id, ws), ws).series().items():
            curves[f"{ref.name} [{head}]"] = pts
if curves:
    show.chart(st, plots.learning_curves(curves, title="Validation force RMSE per epoch",
                                          ylabel="meV/Å"), "curves")
# ----------------------------------------------------------------- learning curves
sized = [r for r in done if r.spec.get("train_size")]
if sized:
    st.subheader("Learning curves")
    lc: dict[str, list[tuple[int, float]]] = {}
    for r in sized:
        m = evaluate_cached(r.model_path, target, workspace=ws, trusted=True).metrics
        lc.setdefault(r.strategy, []).append((int(r.spec["train_size"]),
                                              m.forces_rmse_mev_per_a))
    series = {k: ([p[0] for p in sorted(v)], [p[1] for p in sorted(v)]) for k, v in lc.items()}
    fig = plots.xy_lines(series, title="Target force RMSE against training-set size",
                         xlabel="training configurations", ylabel="force RMSE (meV/Å)")
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    show.chart(st, fig, "learning_curve")

# ----------------------------------------------------------------- per config type
with st.expander("Target errors per config type"):
    per = [{"model": n, "head": h, "config_type": ct, **m.as_dict()}
           for (n, h), r in results.items() for ct, m in r.per_config_type().items()]
    st.dataframe(pd.DataFrame(per), hide_index=True)

# ----------------------------------------------------------------- repulsion
st.subheader("Short-range repulsion")
elements = sorted({s for a in read_frames(target) for s in a.get_chemical_symbols()})
pairs = [f"{a}-{b}" for i, a in enumerate(elements) for b in elements[i:]]
pair = st.selectbox("Dimer", pairs)
all_refs = {"foundation": refs[0].foundation} if refs[0].foundation else {}
all_refs.update({r.name: r.path for r in refs})
series, walls = {}, []
for name, path in all_refs.items():
    curve = state.dimer(path, pair)
    series[name] = (curve["distances"], curve["energies"])
    wall = repulsive_wall(curve)
    walls.append({"model": name, f"wall at {curve['distances'][0]:.1f} Å (eV)": round(wall, 2),
                  "short-range repulsion": "kept" if wall >= WALL_THRESHOLD_EV else "LOST"})
show.chart(st, plots.xy_lines(series, title=f"{pair} dimer", xlabel="distance (Å)",
                               ylabel="energy relative to 5 Å (eV)", y_range=(-10, 30)), "dimer")
walls_df = pd.DataFrame(walls)
st.dataframe(walls_df, hide_index=True)
lost = [w["model"] for w in walls if w["short-range repulsion"] == "LOST"]
if lost:
    st.warning(f"{', '.join(lost)}: the {pair} energy at the shortest distance is less than "
               f"{WALL_THRESHOLD_EV:g} eV above the curve's minimum: short-range repulsion lost.")
if st.button("Run the collapse probe (relaxes random compact structures)"):
    probe_rows = []
    with st.spinner("Relaxing…"):
        for name, path in all_refs.items():
            res = collapse_probe(path, elements, n_structures=4, trusted=True)
            probe_rows.append({"model": name, "smallest distance (Å)": res.min_distance,
                               "collapsed": f"{res.collapsed}/{res.n_structures}"})
    st.dataframe(pd.DataFrame(probe_rows), hide_index=True)

# ----------------------------------------------------------------- reaction profile
if Path(target).resolve().parent == Path(demo["sn2_test"]).resolve().parent:
    st.subheader("SN2 reaction profile (F⁻ + CH3Cl)")
    scan = read_frames(demo["sn2_scan"])
    ref = np.array([a.info["REF_energy"] for a in scan])
    prof = {"reference": (list(range(len(scan))), (ref - ref[0]).tolist())}
    for name, path in all_refs.items():
        e = np.array(state.energies(path, demo["sn2_scan"]))
        prof[name] = (list(range(len(scan))), (e - e[0]).tolist())
    show.chart(st, plots.xy_lines(prof, title="Energy along the scan", xlabel="scan point",
                                   ylabel="energy relative to the first point (eV)"), "sn2_profile")
