"""Molecular dynamics side by side: trajectories, stability and RDFs."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from mlipft_core import jobs
from mlipft_core.data import read_frames
from mlipft_core.demo import demo_paths
from mlipft_core.errors import MlipftError
from mlipft_core.md import MDSettings, emd, reference_rdf
from mlipft_core.workspace import read_json
from mlipft_ui import show, state
from mlipft_ui.viewer import trajectory_html

state.require_navigation()

st.title("Molecular dynamics")
st.caption("Low held-out errors do not guarantee usable dynamics: run the same MD with several "
           "models and compare stability and radial distribution functions (RDFs).")

ws = state.workspace()
demo = demo_paths()
# ----------------------------------------------------------------- models and settings
choices: dict[str, str] = {}
mp = state.selected_model_path()
if mp:
    choices[f"foundation: {state.get('model_label') or state.get('model')}"] = mp
for r in jobs.list_runs(ws):
    if r.kind == "train" and r.status == "done" and r.model_path:
        choices[f"{r.name} ({r.strategy}, {r.id[-6:]})"] = r.model_path
if not choices:
    st.info("Choose a foundation model or finish a fine-tuning run first.")
    st.stop()
picked = st.multiselect("Models", list(choices), default=list(choices)[:3])
c = st.columns(2)
structure = c[0].text_input("Starting structure (extxyz)", demo["water_test"])
index = int(c[1].number_input("Structure index in the file", 0, 100000, 0))
upload = st.file_uploader("…or upload a starting structure (extxyz)", type=["xyz", "extxyz"])
if upload is not None:
    structure = str(ws.save_upload(upload.name, upload.getvalue()))
reference = st.text_input("Reference for the RDFs (structures of the target data, or a "
                          "reference trajectory)", demo["water_train"])
c = st.columns(5)
ensemble = c[0].selectbox("Ensemble", ["langevin", "bussi", "nve"])
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
        state.select(md_group=recs[0].sweep)
        st.success(f"Queued {len(recs)} MD run(s).")
    except MlipftError as exc:
        st.error(str(exc))

group = state.get("md_group")
if not group:
    st.stop()


# ----------------------------------------------------------------- progress
@st.fragment(run_every=3)
def md_status() -> None:
    recs = [r for r in jobs.list_runs(ws) if r.sweep == group]
    st.dataframe(pd.DataFrame([{
        "model": r.name, "status": r.status,
        "progress": 1.0 if r.status == "done" else jobs.md_progress(r, ws),
        "reason": r.reason or ""} for r in recs]), hide_index=True,
        column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0)})
    if any(r.status in ("queued", "running") for r in recs):
        st.caption("Running… the results appear below when every run has ended.")


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
timestep_of = {r.name: r.spec["settings"]["timestep_fs"] for r in recs}
rows = [{"model": k, "survived (fs)": v["survived_steps"] * timestep_of[k],
         "survived steps": f"{v['survived_steps']}/{v['steps']}",
         "failure": v["failure"] or "stable", "steps/s": round(v["steps_per_second"], 1)}
        for k, v in results.items()]
st.dataframe(pd.DataFrame(rows), hide_index=True)

# ----------------------------------------------------------------- trajectories
st.subheader("Trajectories")
cols = st.columns(min(3, len(results)))
for i, r in enumerate([r for r in recs if r.name in results]):
    traj = ws.runs / r.id / "trajectory.xyz"
    with cols[i % len(cols)]:
        st.markdown(f"**{r.name}**")
        if traj.is_file():
            st.iframe(trajectory_html(read_frames(traj)), height=360)

# ----------------------------------------------------------------- traces
st.subheader("Temperature and energies")
for key, label in (("temperature_k", "temperature (K)"), ("potential_ev", "potential energy (eV)"),
                   ("total_ev", "total energy (eV)")):
    fig = go.Figure()
    for name, v in results.items():
        fig.add_trace(go.Scatter(x=v["time_fs"], y=v[key], mode="lines", name=name))
        if v["failure"]:
            fig.add_trace(go.Scatter(x=[v["time_fs"][-1]], y=[v[key][-1]], mode="markers",
                                     marker={"symbol": "x", "size": 12}, showlegend=False,
                                     hovertext=v["failure"]))
    fig.update_layout(title=label, xaxis_title="time (fs)", yaxis_title=label, height=320)
    show.chart(st, fig, f"md_{key}")

# ----------------------------------------------------------------- RDFs
st.subheader("Radial distribution functions")
first = next(iter(results.values()))["rdf"]
grid = next(iter(first.values()))["r"] if first else []
try:  # the reference on the same r grid as the runs
    width = grid[1] - grid[0] if len(grid) > 1 else 0.05
    ref = reference_rdf(read_frames(reference), rmax=grid[-1] + width / 2,
                        nbins=len(grid)) if reference and grid else {}
except MlipftError as exc:
    st.error(str(exc))
    ref = {}
pairs = sorted({p for v in results.values() for p in v["rdf"]})
emd_rows = []
for pair in pairs:
    fig = go.Figure()
    if pair in ref:
        fig.add_trace(go.Scatter(x=ref[pair]["r"], y=ref[pair]["g"], name="reference",
                                 line={"color": "black", "width": 3}))
    for name, v in results.items():
        if pair in v["rdf"]:
            fig.add_trace(go.Scatter(x=v["rdf"][pair]["r"], y=v["rdf"][pair]["g"], name=name))
            if pair in ref and len(ref[pair]["r"]) == len(v["rdf"][pair]["r"]):
                emd_rows.append({"pair": pair, "model": name,
                                 "EMD to reference (Å)": emd(ref[pair]["r"], ref[pair]["g"],
                                                             v["rdf"][pair]["g"])})
    fig.update_layout(title=f"g(r) {pair}", xaxis_title="r (Å)", yaxis_title="g(r)", height=320)
    show.chart(st, fig, f"rdf_{pair}")
if emd_rows:
    table = pd.DataFrame(emd_rows).pivot(index="model", columns="pair",
                                         values="EMD to reference (Å)")
    table["mean"] = table.mean(axis=1)
    st.dataframe(table.sort_values("mean"))
    st.success(f"Closest RDFs to the reference: **{table['mean'].idxmin()}**.")
    st.download_button("EMD table as CSV", table.to_csv(), "md_emd.csv", "text/csv")
