"""Molecular dynamics side by side: trajectories, stability and RDFs."""

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from mlipft_core import jobs
from mlipft_core.data import read_frames
from mlipft_core.demo import demo_paths
from mlipft_core.errors import MlipftError
from mlipft_core.jobs.records import ACTIVE, is_pilot
from mlipft_core.md import (
    MDSettings,
    compare_rdfs,
    equilibration_time_fs,
    relative_energy_mev_per_atom,
    settle_rule_text,
    summarise_temperature,
    temperature_notes,
)
from mlipft_core.workspace import read_json
from mlipft_ui import cache, labels, plots, selections, show
from mlipft_ui.viewer import trajectory_html

st.title("Molecular dynamics")
st.caption("Low held-out errors do not guarantee usable dynamics: run the same MD with several "
           "models and compare stability and radial distribution functions (RDFs).")

ws = selections.workspace()
demo = demo_paths()
# ----------------------------------------------------------------- models and settings
#: what can be run, by a stable key kept in the workspace: (display name, model file, head)
choices: dict[str, tuple[str, str, str | None]] = {}


def add_choice(key: str, label: str, path: str) -> list[str]:
    """One entry per head: a multihead model names the head it runs with."""
    try:
        heads = cache.inspect_selected(path)["heads"]
    except MlipftError:
        return []
    keys = []
    for h in heads:
        k = f"{key}|{h}"
        choices[k] = (f"{label} [{labels.head_label(h)}]" if len(heads) > 1 else label, path, h)
        keys.append(k)
    return keys


mp = selections.selected_model_path()
main_keys: list[str] = []
pilot_keys: list[str] = []
if mp:
    name = selections.get("model_label") or labels.model_name(selections.get("model"))
    main_keys += add_choice(f"foundation|{mp}", f"foundation: {name}", mp)
trained = [r for r in jobs.list_runs(ws)
           if r.kind == "train" and r.status == "done" and r.model_path]
run_names = labels.run_labels(trained)
for r in reversed(trained):  # newest first
    keys = add_choice(f"run|{r.id}", run_names[r.id], r.model_path)
    (pilot_keys if is_pilot(r) else main_keys).extend(keys)
if not choices:
    st.info("Choose a foundation model or finish a fine-tuning run first.")
    st.stop()

saved = selections.get("md_models")
saved = [k for k in saved if k in choices] if isinstance(saved, list) else None


def save_picks() -> None:
    """Keep the picks in the workspace, so that a reload shows them again."""
    selections.select(rerun=False, md_models=list(st.session_state.get("md_pick_models", []))
                      + list(st.session_state.get("md_pick_pilots", [])))


picked = st.multiselect("Models", main_keys, format_func=lambda k: choices[k][0],
                        default=[k for k in saved if k in main_keys] if saved is not None
                        else main_keys[:3], key="md_pick_models", on_change=save_picks)
if pilot_keys:
    with st.expander(f"Learning-rate pilot runs ({len(pilot_keys)})",
                     expanded=any(k in pilot_keys for k in saved or [])):
        picked = picked + st.multiselect(
            "Pilot runs", pilot_keys, format_func=lambda k: choices[k][0],
            default=[k for k in saved or [] if k in pilot_keys], key="md_pick_pilots",
            on_change=save_picks,
            help="The short runs of a learning-rate pilot, one per learning rate tried (most "
                 "of them on purpose too low or too high). They chose a learning rate; run "
                 "MD with them only to see that choice.")
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
        recs = jobs.submit_md({choices[k][0]: choices[k][1:] for k in picked}, structure,
                              settings, index=index, workspace=ws, executor=executor)
        selections.flash(f"Queued {len(recs)} MD run(s).")
        selections.select(md_group=recs[0].sweep, md_models=list(picked))
    except MlipftError as exc:
        st.error(str(exc))

group = selections.get("md_group")
if not group:
    st.stop()


def _model_key(path: str | None, head: str | None) -> tuple[str, str | None]:
    return (str(Path(path).resolve()) if path else "", head)


recs = [r for r in jobs.list_runs(ws) if r.sweep == group and r.readable]
# a run's display name: what its model is called now (older groups were named by id)
name_now = {_model_key(path, head): label for label, path, head in choices.values()}
label_of = {r.id: name_now.get(_model_key(r.spec.get("model"), r.spec.get("head")), r.name)
            for r in recs}
ran = {_model_key(r.spec.get("model"), r.spec.get("head")) for r in recs}
wanted = {_model_key(choices[k][1], choices[k][2]) for k in picked}
if recs and ran != wanted:
    st.info("The results below are those of the last MD run, with "
            f"{', '.join(label_of[r.id] for r in recs)}. Run MD to see the models chosen above.")


# ----------------------------------------------------------------- progress
def md_status(live: bool) -> None:
    """The group's MD runs; refreshed every 3 s while one is active, every 30 s otherwise.
    ``live``: whether one was active when the page was drawn; once that changed, the whole
    page is drawn again (the results below appear when every run has ended)."""
    recs = [r for r in jobs.list_runs(ws) if r.sweep == group]
    active = any(r.status in ACTIVE for r in recs)
    if active != live:
        st.rerun()
    st.dataframe(pd.DataFrame([{
        "model": label_of.get(r.id, r.name), "status": r.status,
        "progress": 1.0 if r.status == "done" else jobs.md_progress(r, ws),
        "note": r.reason or ""} for r in recs]), hide_index=True,
        column_config={"progress": st.column_config.ProgressColumn(
            "progress", min_value=0.0, max_value=1.0)})
    if active:
        st.caption("Running… the results appear below when every run has ended.")


st.subheader("Runs")
recs = [r for r in jobs.list_runs(ws) if r.sweep == group and r.readable]
group_active = any(r.status in ACTIVE for r in recs)
st.fragment(md_status, run_every=3 if group_active else 30)(group_active)
if group_active:
    st.stop()
by_id = {r.id: r for r in recs}
results = {r.id: read_json(ws.runs / r.id / "result.json") for r in recs}
results = {k: v for k, v in results.items() if v}
if not results:
    st.warning("No MD run of this group produced a result.")
    st.stop()

# ----------------------------------------------------------------- stability
st.subheader("Stability")
settings_of = {k: MDSettings(**by_id[k].spec["settings"]) for k in results}
rows = [{"model": label_of[k], "result": v["failure"] or "stable",
         "survived (fs)": v["survived_steps"] * settings_of[k].timestep_fs,
         "planned (fs)": v["steps"] * settings_of[k].timestep_fs,
         "speed (steps/s)": round(v["steps_per_second"], 1)}
        for k, v in results.items()]
st.dataframe(pd.DataFrame(rows), hide_index=True)
colors = plots.palette([label_of[k] for k in results])

# ----------------------------------------------------------------- trajectories
st.subheader("Trajectories")
cols = st.columns(min(2, len(results)))
n_atoms: dict[str, int] = {}
for i, k in enumerate(results):
    traj = ws.runs / k / "trajectory.xyz"
    frames = read_frames(traj) if traj.is_file() else []
    n_atoms[k] = int(results[k].get("n_atoms") or (len(frames[0]) if frames else 0))
    with cols[i % len(cols)]:
        st.markdown(f"**{label_of[k]}**")
        if frames:
            st.iframe(trajectory_html(frames, times_fs=results[k]["time_fs"]), height=470)

# ----------------------------------------------------------------- traces
st.subheader("Temperature and energies")
first = next(iter(settings_of.values()))
target_t = first.temperature_k
equil = max(equilibration_time_fs(v, settings_of[k]) for k, v in results.items())
summaries = {k: summarise_temperature(v["time_fs"], v["temperature_k"],
                                      settings_of[k].temperature_k, n_atoms=n_atoms[k] or None)
             for k, v in results.items() if v["temperature_k"]}
st.markdown("\n".join(f"- **{label_of[k]}**: the temperature {s.text}"
                      for k, s in summaries.items()))
notes = temperature_notes(list(summaries.values()), first)
atoms_n = {n for n in n_atoms.values() if n}
st.caption(" ".join(notes) + " " + settle_rule_text(target_t, min(atoms_n) if len(atoms_n) == 1
                                                    else None)
           + (f" The shaded part (the first {equil:.0f} fs) counts as equilibration and is "
              "left out of the RDFs." if equil > 0 else ""))
failures = {label_of[k]: v["failure"] for k, v in results.items() if v["failure"]}
fig = plots.md_traces({label_of[k]: (v["time_fs"], v["temperature_k"])
                       for k, v in results.items()},
                      title="temperature", ylabel="temperature (K)", colors=colors,
                      failures=failures, target=(target_t, f"target {target_t:g} K"),
                      shade_to_fs=equil)
show.chart(st, fig, "md_temperature_k")
firsts = "; ".join(f"{label_of[k]} {v['potential_ev'][0]:.2f} eV (potential), "
                   f"{v['total_ev'][0]:.2f} eV (total)"
                   for k, v in results.items() if v["potential_ev"] and n_atoms[k])
st.caption("Each model's energies are drawn relative to its own first frame, per atom, so that "
           "the variation of every model shows: models differ by their E0s, often by many eV "
           f"in total. First frames: {firsts}.")
for key, what in (("potential_ev", "potential energy"), ("total_ev", "total energy")):
    series = {label_of[k]: (v["time_fs"], relative_energy_mev_per_atom(v[key], n_atoms[k]))
              for k, v in results.items() if n_atoms[k]}
    fig = plots.md_traces(series, title=f"{what}, relative to each model's first frame",
                          ylabel="ΔE from the first frame (meV/atom)", colors=colors,
                          failures=failures, shade_to_fs=equil)
    show.chart(st, fig, f"md_{key}")

# ----------------------------------------------------------------- RDFs
st.subheader("Radial distribution functions")
named = {label_of[k]: v for k, v in results.items()}
try:
    cmp = compare_rdfs(named, read_frames(reference) if reference else None)
except MlipftError as exc:
    st.error(str(exc))
    cmp = compare_rdfs(named, None)
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
    best = cmp.closest()
    means = cmp.mean_emd()
    tied = [k for k, v in means.items() if k != best and round(v, 3) == round(means[best], 3)]
    st.success(f"Closest RDFs to the reference: **{best}** (mean EMD {means[best]:.3f} Å"
               + (f", tied with {', '.join(f'**{k}**' for k in tied)}" if tied else "") + ").")
    st.download_button("EMD table as CSV", table.to_csv(), "md_emd.csv", "text/csv")
st.info("Next: compare the same models' accuracy and forgetting on the **Compare** page, or "
        "run longer MD at a higher temperature to probe stability further.")
