"""Molecular dynamics side by side: trajectories, stability and RDFs."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from mlipft_core import jobs
from mlipft_core.data import read_frames
from mlipft_core.demo import demo_paths
from mlipft_core.errors import MlipftError
from mlipft_core.md import MDSettings, compare_rdfs, equilibration_time_fs
from mlipft_core.workspace import read_json
from mlipft_ui import cache, plots, selections, show
from mlipft_ui.viewer import trajectory_html

st.title("Molecular dynamics")
st.caption("Low held-out errors do not guarantee usable dynamics: run the same MD with several "
           "models and compare stability and radial distribution functions (RDFs).")

ws = selections.workspace()
demo = demo_paths()
# ----------------------------------------------------------------- models and settings
choices: dict[str, tuple[str, str | None]] = {}


def add_choice(label: str, path: str) -> None:
    """One entry per head: a multihead model names the head it runs with."""
    try:
        heads = cache.inspect_selected(path)["heads"]
    except MlipftError:
        return
    for h in heads:
        choices[f"{label} [{h}]" if len(heads) > 1 else label] = (path, h)


mp = selections.selected_model_path()
if mp:
    add_choice(f"foundation {selections.get('model_label') or selections.get('model')}", mp)
for r in jobs.list_runs(ws):
    if r.kind == "train" and r.status == "done" and r.model_path:
        add_choice(f"{r.name} · {r.id[-6:]}", r.model_path)
if not choices:
    st.info("Choose a foundation model or finish a fine-tuning run first.")
    st.stop()
picked = st.multiselect("Models", list(choices), default=list(choices)[:3])
c = st.columns(2)
structure = c[0].text_input("Starting structure (extxyz)", demo["water_test"])
index = int(c[1].number_input("Structure index in the file", 0, 100000, 0))
upload = st.file_uploader("…or upload a starting structure (extxyz)", type=["xyz", "extxyz"])
if upload is not None and selections.check_upload(upload):
    structure = str(ws.save_upload(upload.name, upload.getvalue()))
reference = st.text_input("Reference for the RDFs (structures of the target data, or a "
                          "reference trajectory)", demo["water_train"])
try:
    structure, reference = selections.check_path(structure), selections.check_path(reference)
except MlipftError as exc:
    st.error(str(exc))
    st.stop()
c = st.columns(5)
ensemble = c[0].selectbox("Ensemble", ["langevin", "bussi", "nve"],
                          format_func={"langevin": "Langevin (NVT)", "bussi": "Bussi (NVT)",
                                       "nve": "velocity Verlet (NVE)"}.get)
temperature = c[1].number_input("Temperature (K)", 1.0, 5000.0, 300.0)
timestep = c[2].number_input("Time step (fs)", 0.05, 20.0, 0.5)
steps = int(c[3].number_input("Steps", 1, 1_000_000, 200))
interval = int(c[4].number_input("Record every (steps)", 1, 10000, 10))
c = st.columns(3)
friction = c[0].number_input("Friction (1/fs)", 0.0001, 1.0, 0.01, format="%.4f")
seed = int(c[1].number_input("Seed", 0, 2**31 - 1, 0))
_default_exec = jobs.load_settings(ws)["executor"]
executor = c[2].radio("Run on", ["local", "slurm"], horizontal=True,
                      index=["local", "slurm"].index(_default_exec),
                      format_func={"local": "this machine",
                                   "slurm": "SLURM (workspace settings)"}.get)
if st.button("Run MD for the chosen models", type="primary", disabled=not picked):
    try:
        settings = MDSettings(ensemble=ensemble, temperature_k=temperature,
                              timestep_fs=timestep, steps=steps, interval=interval,
                              friction_per_fs=friction, seed=seed)
        recs = jobs.submit_md({name: choices[name] for name in picked}, structure, settings,
                              index=index, workspace=ws, executor=executor)
        selections.flash(f"Queued {len(recs)} MD run(s).")
        selections.select(md_group=recs[0].sweep)
    except MlipftError as exc:
        st.error(str(exc))

group = selections.get("md_group")
if not group:
    st.stop()


# ----------------------------------------------------------------- progress
@st.fragment(run_every=3)
def md_status() -> None:
    recs = [r for r in jobs.list_runs(ws) if r.sweep == group]
    active = any(r.status in ("queued", "running") for r in recs)
    flag = f"md_active::{group}"
    was_active = st.session_state.get(flag, False)
    st.session_state[flag] = active
    st.dataframe(pd.DataFrame([{
        "model": r.name, "status": r.status,
        "progress": 1.0 if r.status == "done" else jobs.md_progress(r, ws),
        "note": r.reason or ""} for r in recs]), hide_index=True,
        column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0)})
    if active:
        st.caption("Running… the results appear below when every run has ended.")
    elif was_active:
        st.rerun()  # every run has ended: draw the results below without a reload


st.subheader("Runs")
md_status()
recs = [r for r in jobs.list_runs(ws) if r.sweep == group]
if any(r.status in ("queued", "running") for r in recs):
    st.stop()
results = {r.name: read_json(ws.runs / r.id / "result.json") for r in recs}
results = {k: v for k, v in results.items() if v}
if not results:
    st.warning("No MD run of this group produced a result.")
    st.stop()

# ----------------------------------------------------------------- stability
st.subheader("Stability")
settings_of = {r.name: MDSettings(**r.spec["settings"]) for r in recs}
label_of = {r.name: r.name for r in recs}
rows = [{"model": k, "result": v["failure"] or "stable",
         "survived (fs)": v["survived_steps"] * settings_of[k].timestep_fs,
         "of (fs)": v["steps"] * settings_of[k].timestep_fs,
         "speed (steps/s)": round(v["steps_per_second"], 1)}
        for k, v in results.items()]
st.dataframe(pd.DataFrame(rows), hide_index=True)
colors = plots.palette(list(results))

# ----------------------------------------------------------------- trajectories
st.subheader("Trajectories")
cols = st.columns(min(2, len(results)))
for i, r in enumerate([r for r in recs if r.name in results]):
    traj = ws.runs / r.id / "trajectory.xyz"
    with cols[i % len(cols)]:
        st.markdown(f"**{r.name}**")
        if traj.is_file():
            st.iframe(trajectory_html(read_frames(traj), times_fs=results[r.name]["time_fs"]),
                      height=470)

# ----------------------------------------------------------------- traces
st.subheader("Temperature and energies")
target_t = next(iter(settings_of.values())).temperature_k
equil = max(equilibration_time_fs(v, settings_of[k]) for k, v in results.items())
st.caption(f"Why the temperature starts far from {target_t:g} K: the velocities are drawn at "
           "the target temperature, but the starting structure is not in equilibrium with them. "
           "Kinetic and potential energy exchange in the first tens of fs (near an energy "
           "minimum about half of the kinetic energy moves into the potential, so the "
           "temperature falls to about half the target), and the thermostat then brings it to "
           "the dashed target line." + (f" The shaded part (the first {equil:.0f} fs) counts "
                                        "as equilibration and is left out of the RDFs."
                                        if equil > 0 else ""))
for key, label in (("temperature_k", "temperature (K)"), ("potential_ev", "potential energy (eV)"),
                   ("total_ev", "total energy (eV)")):
    fig = go.Figure()
    for name, v in results.items():
        fig.add_trace(go.Scatter(x=v["time_fs"], y=v[key], mode="lines", name=name,
                                 line={"color": plots.color_for(name, colors)}))
        if v["failure"]:
            fig.add_trace(go.Scatter(x=[v["time_fs"][-1]], y=[v[key][-1]], mode="markers",
                                     marker={"symbol": "x", "size": 12,
                                             "color": plots.color_for(name, colors)},
                                     showlegend=False, hovertext=v["failure"]))
    if key == "temperature_k":
        fig.add_hline(y=target_t, line_dash="dash", line_color="gray",
                      annotation_text=f"target {target_t:g} K")
    if equil > 0:
        fig.add_vrect(x0=0, x1=equil, fillcolor="gray", opacity=0.12, line_width=0,
                      annotation_text="equilibration", annotation_position="top left")
    fig.update_layout(title=label, xaxis_title="time (fs)", yaxis_title=label, height=320)
    show.chart(st, fig, f"md_{key}")

# ----------------------------------------------------------------- RDFs
st.subheader("Radial distribution functions")
try:
    cmp = compare_rdfs(results, read_frames(reference) if reference else None)
except MlipftError as exc:
    st.error(str(exc))
    cmp = compare_rdfs(results, None)
for pair in cmp.pairs:
    fig = go.Figure()
    if pair in cmp.reference:
        fig.add_trace(go.Scatter(x=cmp.reference[pair]["r"], y=cmp.reference[pair]["g"],
                                 name="reference", line={"color": "black", "width": 3}))
    for name, per in cmp.runs.items():
        if pair in per:
            fig.add_trace(go.Scatter(x=per[pair]["r"], y=per[pair]["g"], name=name,
                                     line={"color": plots.color_for(name, colors)}))
    fig.update_layout(title=f"g(r) {pair}", xaxis_title="r (Å)", yaxis_title="g(r)", height=320)
    show.chart(st, fig, f"rdf_{pair}")
if cmp.emd:
    table = pd.DataFrame(cmp.emd).T
    table.columns = [f"EMD {p} (Å)" for p in table.columns]
    table["mean EMD (Å)"] = pd.Series(cmp.mean_emd())
    table.index.name = "model"
    st.caption("Earth mover's distance between each model's g(r) and the reference's: how far "
               "(in Å) the distribution would have to move to match; smaller is closer.")
    st.dataframe(table.sort_values("mean EMD (Å)").round(3))
    st.success(f"Closest RDFs to the reference: **{cmp.closest()}**.")
    st.download_button("EMD table as CSV", table.to_csv(), "md_emd.csv", "text/csv")
st.info("Next: compare the same models' accuracy and forgetting on the **Compare** page, or "
        "run longer MD at a higher temperature to probe stability further.")
