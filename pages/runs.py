"""Fine-tuning runs: choose strategies and settings, launch, watch, keep."""

from pathlib import Path

import pandas as pd
import streamlit as st

from mlipft_core import jobs
from mlipft_core.data import load_split
from mlipft_core.demo import demo_paths
from mlipft_core.e0 import load_choice
from mlipft_core.errors import MlipftError
from mlipft_core.registry import DEMO_MODEL_NAMES
from mlipft_core.strategies import STRATEGIES, RunSpec
from mlipft_ui import plots, show, state

state.require_navigation()

st.title("Fine-tuning runs")
st.caption("Each strategy becomes a mace_run_train configuration; runs are separate processes "
           "on a queue, so they keep going when the browser is closed.")

model_path = state.selected_model_path()
split_id = state.get("split_id")
ws = state.workspace()
ready = model_path is not None and bool(split_id)
if not ready:
    st.info("Choose a foundation model and a dataset split first (Foundation model and Data "
            "pages); the E0 page sets the E0s the runs use.")

# ----------------------------------------------------------------- launch
if ready:
    try:
        split = load_split(ws, split_id)
    except MlipftError as exc:
        st.error(str(exc))
        st.stop()
    choice = load_choice(ws)
    e0_label = f"saved choice **{choice['id']}**" if choice else "**estimated** (default)"
    st.markdown(f"Model **{state.get('model_label') or state.get('model')}** · split "
                f"**{split.id}** ({', '.join(f'{k} {v}' for k, v in split.counts.items())}) · "
                f"E0s: {e0_label}")
    picked = st.multiselect("Strategies", list(STRATEGIES), default=["naive"],
                            format_func=lambda n: STRATEGIES[n].title)
    with st.form("launch"):
        per = pd.DataFrame([{"strategy": n, "lr": STRATEGIES[n].defaults["lr"],
                             "lora_rank": STRATEGIES[n].defaults.get("lora_rank"),
                             "lora_alpha": STRATEGIES[n].defaults.get("lora_alpha"),
                             "replay samples": STRATEGIES[n].defaults.get("num_samples_pt")}
                            for n in picked])
        per = st.data_editor(per, hide_index=True, disabled=["strategy"], key="per_strategy")
        c = st.columns(5)
        epochs = c[0].number_input("Epochs", 1, 10000, 20)
        batch = c[1].number_input("Batch size", 1, 1024, 5)
        seed = c[2].number_input("Seed", 0, 2**31 - 1, 0)
        device = c[3].selectbox("Device", ["auto", "cpu", "cuda"])
        dtype = c[4].selectbox("Precision", ["float32", "float64"])
        c = st.columns(3)
        e_weight = c[0].number_input("Energy weight", 0.0, 1e6, 10.0)
        f_weight = c[1].number_input("Forces weight", 0.0, 1e6, 100.0)
        ema = c[2].checkbox("EMA", value=True)
        lr_sweep = st.text_input("Learning rates to sweep (comma-separated; empty: the "
                                 "table's value for each strategy)", "")
        seeds = st.text_input("Extra seeds to sweep (comma-separated)", "")
        sizes_txt = st.text_input("Training-set sizes for a learning curve (comma-separated, "
                                  "e.g. 10,30,100; empty: the whole training set)", "")
        replay_default = demo_paths()["replay_pool"] if state.get("model") in DEMO_MODEL_NAMES else ""
        replay = st.text_input("Replay file for multihead strategies (pretraining "
                               "configurations)", replay_default)
        submitted = st.form_submit_button("Launch", type="primary")
    with st.expander("What each strategy changes, and when the study recommends it"):
        for s in STRATEGIES.values():
            st.markdown(f"**{s.title}** (`{s.name}`, default lr {s.defaults['lr']:g}): "
                        f"{s.changes} *{s.when}*")
    if submitted:
        try:
            lrs = [float(x) for x in lr_sweep.split(",") if x.strip()] or [None]
            seed_list = [int(seed)] + [int(x) for x in seeds.split(",") if x.strip()]
        except ValueError:
            st.error("Learning rates and seeds must be numbers separated by commas.")
            st.stop()
        specs = []
        try:
            rows_in = per.to_dict("records")
            for row in rows_in:
                float(row["lr"])
                if STRATEGIES[row["strategy"]].lora:
                    int(row["lora_rank"]), float(row["lora_alpha"])
                if STRATEGIES[row["strategy"]].multihead:
                    int(row["replay samples"])
        except (TypeError, ValueError):
            st.error("Every cell of the strategy table needs a number (learning rate, LoRA rank "
                     "and alpha, replay samples).")
            st.stop()
        for row in rows_in:
            name = row["strategy"]
            for lr in lrs:
                for sd in seed_list:
                    settings = {"max_num_epochs": int(epochs), "batch_size": int(batch),
                                "seed": sd, "energy_weight": e_weight, "default_dtype": dtype,
                                "forces_weight": f_weight, "ema": ema,
                                "lr": float(lr if lr is not None else row["lr"])}
                    if STRATEGIES[name].lora:
                        settings.update(lora_rank=int(row["lora_rank"]),
                                        lora_alpha=float(row["lora_alpha"]))
                    if STRATEGIES[name].multihead:
                        settings["num_samples_pt"] = int(row["replay samples"])
                    if device != "auto":
                        settings["device"] = device
                    tag = f"{name}" + (f"-lr{lr:g}" if lr else "") + (f"-s{sd}" if len(seed_list) > 1 else "")
                    specs.append(RunSpec(
                        strategy=name, foundation_model=model_path,
                        train_file=str(split.file("train")),
                        valid_file=str(split.file("valid")) if split.counts.get("valid") else None,
                        test_file=str(split.file("test")) if split.counts.get("test") else None,
                        e0s=choice["id"] if choice else "estimated",
                        replay_file=replay or None, name=tag.replace(".", "p"),
                        settings=settings))
        try:
            sizes = [int(x) for x in sizes_txt.split(",") if x.strip()]
        except ValueError:
            st.error("Training-set sizes must be whole numbers separated by commas.")
            st.stop()
        if not specs:
            st.error("Pick at least one strategy.")
        else:
            with st.spinner(f"Preparing {len(specs)} run(s): E0s, configurations…"):
                try:
                    if sizes:
                        recs = [r for sp in specs
                                for r in jobs.submit_size_sweep(sp, sizes, seed=int(seed))]
                    else:
                        recs = jobs.submit_sweep(specs)
                    st.success(f"Queued {len(recs)} run(s): " + ", ".join(r.id for r in recs))
                except MlipftError as exc:
                    st.error(str(exc))


# ----------------------------------------------------------------- watch
@st.fragment(run_every=3)
def runs_table() -> None:
    records = [r for r in jobs.list_runs(ws) if r.kind == "train"]
    if not records:
        st.info("No runs yet.")
        return
    rows = []
    for r in reversed(records):
        p = jobs.progress(r, ws)
        last = p.last_valid()
        row = {"id": r.id, "strategy": r.strategy, "status": r.status,
               "progress": p.fraction if r.status != "done" else 1.0,
               "epoch": f"{(p.epoch or 0) + 1 if p.epoch is not None else 0}/{r.max_epochs}"}
        for head, v in last.items():
            row[f"E RMSE {head} (meV/atom)"] = v.get("rmse_e_per_atom_mev")
            row[f"F RMSE {head} (meV/Å)"] = v.get("rmse_f_mev_per_a")
        row["reason"] = r.reason or ""
        rows.append(row)
    table = pd.DataFrame(rows)
    st.dataframe(table, hide_index=True, column_config={
        "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0)})
    active = [r for r in records if r.status in ("queued", "running")]
    st.caption(f"{len(active)} active, {len(records)} in all · refreshes every 3 s")
    curves = {}
    for r in records[-8:]:
        for head, pts in jobs.progress(r, ws).series().items():
            curves[f"{r.name} [{head}]"] = pts
    if curves:
        show.chart(st, plots.learning_curves(curves, title="Validation force RMSE",
                                              ylabel="meV/Å"), "learning_curves", key="live_curves")


st.subheader("Runs")
runs_table()

# ----------------------------------------------------------------- actions
records = [r for r in jobs.list_runs(ws) if r.kind == "train"]
if records:
    st.subheader("Actions")
    rid = st.selectbox("Run", [r.id for r in reversed(records)])
    try:
        rec = jobs.get_run(rid, ws)
    except MlipftError as exc:  # deleted from another tab meanwhile
        st.warning(str(exc))
        st.stop()
    folder = ws.runs / rid
    c = st.columns(4)
    try:
        if c[0].button("Cancel", disabled=rec.status not in ("queued", "running")):
            jobs.cancel(rid, ws)
            st.rerun()
        if c[1].button("Delete", disabled=rec.status not in ("done", "failed", "cancelled")):
            jobs.delete(rid, ws)
            st.rerun()
    except MlipftError as exc:
        st.error(str(exc))
    if rec.model_path and Path(rec.model_path).is_file():
        c[2].download_button("Download model", Path(rec.model_path).read_bytes(),
                             f"{rec.name}.model")
    if (folder / "config.yaml").is_file():
        c[3].download_button("Export config (YAML)", (folder / "config.yaml").read_text(),
                             f"{rec.name}.yaml")
        with st.expander("Configuration and command line"):
            st.code((folder / "config.yaml").read_text(), language="yaml")
            st.code((folder / "command.sh").read_text(), language="bash")
    if rec.status == "failed":
        st.error(f"Failed: {rec.reason}")
        st.code(rec.log_tail or "", language="text")
