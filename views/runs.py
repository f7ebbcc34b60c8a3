"""Fine-tuning runs: choose strategies and settings, launch, watch, keep."""

from pathlib import Path

import pandas as pd
import streamlit as st

from mlipft_core import jobs
from mlipft_core.data import load_split
from mlipft_core.demo import demo_paths, isolated_file_for
from mlipft_core.e0 import load_choice
from mlipft_core.errors import MlipftError
from mlipft_core.jobs.local import dispatcher_alive, ensure_dispatcher
from mlipft_core.jobs.records import ACTIVE, UnreadableRunError
from mlipft_core.jobs.slurm import available as _slurm_available
from mlipft_core.jobs.slurm import partitions as _slurm_partitions
from mlipft_core.registry import DEMO_MODEL_NAMES
from mlipft_core.strategies import STRATEGIES
from mlipft_core.tune import count_of
from mlipft_ui import labels, plots, selections, show, tuning, turns


@st.cache_data(ttl=30, show_spinner=False)
def slurm_status() -> tuple[bool, str]:
    return _slurm_available()


@st.cache_data(ttl=30, show_spinner=False)
def slurm_partitions() -> list[str]:
    return _slurm_partitions()


st.title("Fine-tuning runs")
st.caption("Each strategy becomes a mace_run_train configuration; runs are separate processes "
           "on this machine or jobs on a SLURM cluster, so they keep going when the browser is "
           "closed.")

model_path = selections.selected_model_path()
split_id = selections.get("split_id")
ws = selections.workspace()
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
    st.markdown(f"Model **{selections.get('model_label') or selections.get('model')}** · split "
                f"**{labels.split_label(split)}** · E0s: **{labels.e0_choice_label(choice)}**")
    # the choices below are kept in the workspace: a reload shows them again

    def known_strategies(v) -> list[str] | None:
        return [n for n in v if n in STRATEGIES] or None if isinstance(v, list) else None

    picked = st.multiselect(
        "Strategies", list(STRATEGIES), format_func=labels.strategy_title,
        key=selections.kept_widget("run_strategies", ["naive"], fix=known_strategies))
    selections.keep("run_strategies", list(picked))
    model_key = selections.get("model") or model_path
    applied = tuning.tuned(model_key, split.id)
    st.caption("Per-strategy settings (edit a cell to change it):")
    # settings a strategy does not have read as a dash; the columns only when one applies
    optional = {"LoRA rank": "lora_rank", "LoRA alpha": "lora_alpha",
                "replay samples (structures)": "num_samples_pt"}
    shown_optional = [c for c, k in optional.items()
                      if any(k in STRATEGIES[n].defaults for n in picked)]
    per = pd.DataFrame([{"strategy": STRATEGIES[n].title, "key": n,
                         "learning rate": applied[n]["best_lr"] if n in applied
                         else STRATEGIES[n].defaults["lr"],
                         "learning rate from": "pilot" if n in applied else "default",
                         **{c: f"{STRATEGIES[n].defaults[optional[c]]:g}"
                            if optional[c] in STRATEGIES[n].defaults else labels.DASH
                            for c in shown_optional}}
                        for n in picked], columns=["strategy", "key", "learning rate",
                                                   "learning rate from", *shown_optional])
    applied_tag = "-".join(f"{k}{v['best_lr']:g}" for k, v in sorted(applied.items()))
    per = st.data_editor(per, hide_index=True, disabled=["strategy", "learning rate from"],
                         column_config={"key": None, **{
                             c: st.column_config.TextColumn(
                                 c, help=f"{labels.DASH}: the strategy has no such setting")
                             for c in shown_optional}},
                         key=f"per_strategy_{'-'.join(picked)}_{applied_tag}")
    c = st.columns(5)
    # in a workshop the instructor's epoch cap is the widget's maximum (and caps the default)
    shop = selections.workshop()
    epoch_cap = shop.limits.max_epochs if shop is not None else None
    max_epochs = int(epoch_cap or 10000)

    def fit_epochs(v) -> int | None:
        try:
            return min(max(int(v), 1), max_epochs)
        except (TypeError, ValueError):
            return None

    epochs = c[0].number_input(
        "Epochs", 1, max_epochs, step=1,
        key=selections.kept_widget("run_epochs",
                                   min(int(STRATEGIES["naive"].defaults["max_num_epochs"]),
                                       max_epochs), fix=fit_epochs, scope=str(max_epochs)),
        help=f"The workshop caps runs at {epoch_cap} epochs." if epoch_cap else None)
    selections.keep("run_epochs", int(epochs))
    batch = c[1].number_input("Batch size (structures)", 1, 1024, 5)
    seed = c[2].number_input("Seed", 0, 2**31 - 1, 0)
    device = c[3].selectbox("Device", ["auto", "cpu", "cuda"],
                            help="auto: a GPU when one is visible to the executor")
    dtype = c[4].selectbox("Precision", ["float32", "float64"])
    c = st.columns(3)
    e_weight = c[0].number_input("Energy weight", 0.0, 1e6, 10.0)
    f_weight = c[1].number_input("Forces weight", 0.0, 1e6, 100.0)
    ema = c[2].checkbox("EMA (moving average of the weights)", value=True)
    lr_sweep = st.text_input("Learning rates to sweep (comma-separated; empty: the "
                             "table's value for each strategy)", "")
    seeds = st.text_input("Extra seeds to sweep (comma-separated)", "")
    sizes_txt = st.text_input("Training-set sizes for a learning curve (comma-separated, "
                              "e.g. 10,30,100; empty: the whole training set)", "")
    replay_default = demo_paths()["replay_pool"] if selections.get("model") in DEMO_MODEL_NAMES else ""
    replay = st.text_input("Replay file for multihead strategies (pretraining "
                           "configurations)", replay_default)
    try:
        replay = selections.check_path(replay.strip()) if replay.strip() else ""
    except MlipftError as exc:
        st.error(str(exc))
        st.stop()

    # where the runs execute
    run_settings = jobs.load_settings(ws)
    executors = ["local", "slurm"]
    role, _who = selections.identity()
    slurm_opts = None
    if role == "participant":  # the instructor chose where a workshop's runs go
        executor, slurm_opts = shop.executor, shop.slurm or None
        lim = shop.limits
        st.caption(f"Workshop limits: {lim.max_active_runs} queued or running runs at a time"
                   + (f", at most {count_of(lim.max_epochs, 'epoch')}" if lim.max_epochs else "")
                   + (f", {lim.max_run_minutes:g} min per run" if lim.max_run_minutes else "")
                   + ".")
    else:
        executor = st.radio("Run on", executors, horizontal=True,
                            index=executors.index(run_settings["executor"]),
                            format_func={"local": "this machine",
                                         "slurm": "a SLURM cluster"}.get)
    if executor == "slurm" and role != "participant":
        ok, why = slurm_status()
        if not ok:
            st.warning(f"SLURM is not reachable from this machine: {why}.")
        so = run_settings["slurm"]
        parts = slurm_partitions() if ok else []
        c = st.columns(6)
        part_choices = ["(cluster default)"] + parts
        partition = c[0].selectbox("Partition", part_choices,
                                   index=part_choices.index(so["partition"])
                                   if so["partition"] in part_choices else 0)
        time_min = c[1].number_input("Time limit (min)", 1, 100_000, int(so["time_min"]))
        cpus = c[2].number_input("CPUs per run", 1, 512, int(so["cpus"]))
        gpus = c[3].number_input("GPUs per run", 0, 16, int(so["gpus"]))
        mem = c[4].number_input("Memory per run (GB, 0: default)", 0.0, 4096.0,
                                float(so["mem_gb"] or 0.0))
        extra = c[5].text_input("Extra sbatch options", so["extra"],
                                placeholder="--qos=short --account=proj")
        slurm_opts = {"partition": None if partition.startswith("(") else partition,
                      "time_min": int(time_min), "cpus": int(cpus), "gpus": int(gpus),
                      "mem_gb": float(mem) or None, "extra": extra}
        st.caption("Each run becomes one SLURM job; a sweep goes in as one job array. The "
                   "workspace folder must be visible to the compute nodes.")
    if role != "participant" and st.button("Make this the default for new runs", help="Saved in the workspace "
                 "settings; the command line uses it too (mlipft settings)."):
        try:
            jobs.save_settings(ws, executor=executor, slurm=slurm_opts)
            st.toast("Saved as the default.")
        except MlipftError as exc:
            st.error(str(exc))

    def cell(value, kind):
        """A setting typed into the strategy table: a number, or none (a dash, empty)."""
        text = "" if value is None or (isinstance(value, float) and pd.isna(value)) \
            else str(value).strip()
        if text in ("", labels.DASH, "-"):
            return None
        number = float(text)
        if kind is int and number != int(number):
            raise ValueError(text)
        return kind(number)

    plan, problem = None, None
    try:
        lrs = jobs.parse_list(lr_sweep, float, "Learning rates to sweep")
        seed_list = [int(seed)] + [x for x in jobs.parse_list(seeds, int, "Extra seeds")
                                   if x != int(seed)]
        sizes = jobs.parse_list(sizes_txt, int, "Training-set sizes")
        own = {}
        for row in per.to_dict("records"):
            own[row["key"]] = {"lr": float(row["learning rate"]),
                               **{k: cell(row.get(c), float if k == "lora_alpha" else int)
                                  for c, k in optional.items()}}
        common = {"max_num_epochs": int(epochs), "batch_size": int(batch), "seed": int(seed),
                  "energy_weight": e_weight, "forces_weight": f_weight, "ema": ema,
                  "default_dtype": dtype}
        if device != "auto":
            common["device"] = device
        plan = jobs.expand_sweep(
            own, foundation_model=model_path, train_file=str(split.file("train")),
            valid_file=str(split.file("valid")) if split.counts.get("valid") else None,
            test_file=str(split.file("test")) if split.counts.get("test") else None,
            e0s=choice["id"] if choice else "estimated", replay_file=replay or None,
            isolated_file=isolated_file_for(split.file("train")), tuning=applied,
            common=common, lrs=lrs, seeds=seed_list if len(seed_list) > 1 else [],
            sizes=sizes)
    except (TypeError, ValueError):
        problem = ("Every cell of the strategy table needs a number (learning rate, LoRA rank "
                   "and alpha, replay samples; LoRA rank and replay samples whole numbers), "
                   f"or {labels.DASH} where the strategy has no such setting.")
    except MlipftError as exc:
        problem = str(exc)
    if problem:
        st.error(problem)
    elif not plan.specs:
        st.info("Pick at least one strategy.")
    else:
        where = "on this machine" if executor == "local" else "on SLURM"
        st.markdown(f"**{plan.n_runs} run(s)** will be queued {where}: {plan.describe()}.")
    launch = st.button("Launch", type="primary", disabled=bool(problem) or not plan or
                       not plan.specs)
    if plan and plan.specs and not problem:
        with st.expander("Tune the learning rate first (a short pilot per strategy)"):
            first = {}
            for sp in plan.specs:
                first.setdefault(sp.strategy, sp)
            tuning.pilot_panel(first, model_key, split.id, executor=executor,
                               slurm=slurm_opts)
    with st.expander("What each strategy changes, and when the study recommends it"):
        for s in STRATEGIES.values():
            st.markdown(f"**{s.title}** (default learning rate {s.defaults['lr']:g}): "
                        f"{s.changes} *{s.when}*")
    if launch and plan and plan.specs:
        with st.spinner(f"Preparing {plan.n_runs} run(s): data checks, E0s, configurations…"):
            try:
                with turns.shown_turn("launch"):
                    recs = jobs.submit_plan(plan, workspace=ws, executor=executor,
                                            slurm=slurm_opts)
                jobs_txt = ", ".join(r.slurm_job_id for r in recs if r.slurm_job_id)
                st.success(f"Queued {count_of(len(recs), 'run')}"
                           + (f" as SLURM job(s) {jobs_txt}" if jobs_txt else "") + ".")
                warned = (w for r in recs for w in (r.spec.get("warnings") or []))
                for warning in dict.fromkeys(warned):
                    st.warning(warning)
            except MlipftError as exc:
                st.error(str(exc))


# ----------------------------------------------------------------- watch
def where(r) -> str:
    if r.executor == "slurm":
        return f"SLURM job {r.slurm_job_id}" if r.slurm_job_id else "SLURM (submitting)"
    return "this machine" + (f", GPU {r.gpu}" if r.gpu and r.device == "cuda" else "")


#: seconds between refreshes of the runs table while a run is queued or running, and while
#: none is (a room of participants idle on this page must not keep the server busy)
LIVE_S, IDLE_S = 3, 30


def _training_runs() -> list:
    return [r for r in jobs.list_runs(ws) if r.kind in ("train", "unknown")]


def _any_active(records) -> bool:
    return any(r.status in ACTIVE for r in records)


def runs_table(live: bool) -> None:
    """The table and the learning curves; when whether a run is active changed since the
    page drew the table, the whole page once (so that the refresh rate follows)."""
    records = _training_runs()
    if _any_active(records) != live:
        st.rerun()
    if not records:
        st.info("No runs yet.")
        return
    shown = labels.run_labels(r for r in records if r.readable)
    rows, progress_of = [], {}
    for r in reversed(records):
        if not r.readable:
            rows.append({"run": f"unreadable run folder {r.id}", "status": "unreadable",
                         "where": labels.DASH, "progress": 0.0, "epochs done": labels.DASH,
                         "note": r.reason})
            continue
        p = progress_of[r.id] = jobs.progress(r, ws)
        last = p.last_valid()
        done_epochs = (p.epoch or 0) + 1 if p.epoch is not None else 0
        row = {"run": shown[r.id], "status": r.status, "where": where(r),
               "progress": p.fraction if r.status != "done" else 1.0,
               "epochs done": f"{done_epochs} of {r.max_epochs}" if r.max_epochs
               else str(done_epochs)}
        for head, v in last.items():
            h = labels.head_label(head)
            row[f"validation energy RMSE (meV/atom), {h}"] = v.get("rmse_e_per_atom_mev")
            row[f"validation force RMSE (meV/Å), {h}"] = v.get("rmse_f_mev_per_a")
        row["note"] = r.reason or ""
        rows.append(row)
    table = pd.DataFrame(rows)
    table = labels.dash_missing(table[[c for c in table.columns if c != "note"] + ["note"]])
    config = labels.number_formats(table)
    config["progress"] = st.column_config.ProgressColumn("progress", min_value=0.0,
                                                         max_value=1.0)
    st.dataframe(table, hide_index=True, column_config=config)
    active = [r for r in records if r.status in ACTIVE]
    st.caption(f"{len(active)} active, {len(records)} in all · refreshes every "
               f"{LIVE_S if live else IDLE_S} s")
    waiting = [r for r in active if r.executor == "local" and r.status == "queued"]
    if waiting and not dispatcher_alive(ws.dispatch_root):
        st.warning(f"{len(waiting)} local run(s) wait, but the local dispatcher is not "
                   "running (the machine may have restarted).")
        if st.button("Start the local dispatcher"):
            ensure_dispatcher(ws.dispatch_root)
    curves = {}
    for r in [r for r in records if r.readable][-8:]:
        series = progress_of[r.id].series()
        for head, pts in series.items():
            curves[shown[r.id] + (f" [{labels.head_label(head)}]" if len(series) > 1
                                  else "")] = pts
    if curves:
        show.chart(st, plots.learning_curves(curves, title="Validation force RMSE",
                                              ylabel="force RMSE (meV/Å)"),
                   "learning_curves", key="live_curves")


st.subheader("Runs")
records = _training_runs()
_live = _any_active(records)
st.fragment(runs_table, run_every=LIVE_S if _live else IDLE_S)(_live)

# ----------------------------------------------------------------- actions
if records:
    st.subheader("Actions")
    shown = labels.run_labels(r for r in records if r.readable)
    names = {r.id: (f"{shown[r.id]} · {r.status}" if r.readable
                    else f"unreadable run folder {r.id}") for r in records}
    rid = st.selectbox("Run", [r.id for r in reversed(records)], format_func=names.get)
    try:
        rec = jobs.get_run(rid, ws)
    except UnreadableRunError as exc:
        st.error(f"This run folder cannot be read: {exc}. It can only be deleted.")
        if st.button("Delete this folder"):
            jobs.delete(rid, ws)
            st.rerun()
        st.stop()
    except MlipftError as exc:  # deleted from another tab meanwhile
        st.warning(str(exc))
        st.stop()
    if rec.executor == "slurm":
        st.caption(f"SLURM job **{rec.slurm_job_id or 'being submitted'}**"
                   + (f" · log: `{rec.executor_options.get('log')}`"
                      if rec.executor_options.get("log") else ""))
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

st.info("Next: when runs are done, put them side by side on the **Compare** page.")
