"""The runs page's panels: where the runs execute, the runs table with its learning curves,
and the actions on one run.

The runs table refreshes itself as a fragment: every :data:`LIVE_S` seconds while a run is
queued or running, every :data:`IDLE_S` seconds otherwise; the page passes whether a run was
active when it drew the table, and the table draws the whole page again once that changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from mlipft_core import jobs
from mlipft_core.errors import MlipftError
from mlipft_core.jobs.local import dispatcher_alive, ensure_dispatcher
from mlipft_core.jobs.records import ACTIVE, EXECUTORS, FINAL, UnreadableRunError
from mlipft_core.jobs.slurm import available as _slurm_available
from mlipft_core.jobs.slurm import partitions as _slurm_partitions
from mlipft_core.replay import replay_of, replay_sentence
from mlipft_core.tune import count_of
from mlipft_core.workspace import Workspace
from mlipft_ui import labels, plots, show

#: seconds between refreshes of the runs table while a run is queued or running, and while
#: none is (a room of participants idle on this page must not keep the server busy)
LIVE_S, IDLE_S = 3, 30

#: the executors in words
EXECUTOR_WORDS = {"local": "this machine", "slurm": "a SLURM cluster"}


@st.cache_data(ttl=30, show_spinner=False)
def slurm_status() -> tuple[bool, str]:
    return _slurm_available()


@st.cache_data(ttl=30, show_spinner=False)
def slurm_partitions() -> list[str]:
    return _slurm_partitions()


# ----------------------------------------------------------------- where the runs execute
def executor_panel(ws: Workspace, shop, role: str) -> tuple[str, dict[str, Any] | None]:
    """The executor and the SLURM options of the runs to launch: the instructor's in a
    workshop (a participant sees the workshop's limits), else chosen here, with the
    workspace's run settings as the default and a button that saves the choice as it."""
    run_settings = jobs.load_settings(ws)
    executors = list(EXECUTORS)
    slurm_opts = None
    if role == "participant":  # the instructor chose where a workshop's runs go
        executor, slurm_opts = shop.executor, shop.slurm or None
        lim = shop.limits
        st.caption(f"Workshop limits: {lim.max_active_runs} queued or running runs at a time"
                   + (f", at most {count_of(lim.max_epochs, 'epoch')}" if lim.max_epochs else "")
                   + (f", {lim.max_run_minutes:g} min per run" if lim.max_run_minutes else "")
                   + ".")
        return executor, slurm_opts
    executor = st.radio("Run on", executors, horizontal=True,
                        index=executors.index(run_settings["executor"]),
                        format_func=EXECUTOR_WORDS.get)
    if executor == "slurm":
        slurm_opts = _slurm_form(run_settings["slurm"])
    if st.button("Make this the default for new runs", help="Saved in the workspace "
                 "settings; the command line uses it too (mlipft settings)."):
        try:
            jobs.save_settings(ws, executor=executor, slurm=slurm_opts)
            st.toast("Saved as the default.")
        except MlipftError as exc:
            st.error(str(exc))
    return executor, slurm_opts


def _slurm_form(so: dict[str, Any]) -> dict[str, Any]:
    """The SLURM options of the runs, starting from the saved ones ``so``."""
    ok, why = slurm_status()
    if not ok:
        st.warning(f"SLURM is not reachable from this machine: {why}.")
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
    st.caption("Each run becomes one SLURM job; a sweep goes in as one job array. The "
               "workspace folder must be visible to the compute nodes.")
    return {"partition": None if partition.startswith("(") else partition,
            "time_min": int(time_min), "cpus": int(cpus), "gpus": int(gpus),
            "mem_gb": float(mem) or None, "extra": extra}


# ----------------------------------------------------------------- watch
def where(r) -> str:
    """Where a run executes, in words."""
    if r.executor == "slurm":
        return f"SLURM job {r.slurm_job_id}" if r.slurm_job_id else "SLURM (submitting)"
    return "this machine" + (f", GPU {r.gpu}" if r.gpu and r.device == "cuda" else "")


def training_runs(ws: Workspace) -> list:
    """The workspace's training runs (and run folders that cannot be read), oldest first."""
    return [r for r in jobs.list_runs(ws) if r.kind in ("train", "unknown")]


def any_active(records) -> bool:
    return any(r.status in ACTIVE for r in records)


def runs_section(ws: Workspace) -> list:
    """The runs table as a fragment that refreshes itself at the rate that fits; the
    training runs as the page drew them."""
    records = training_runs(ws)
    live = any_active(records)
    st.fragment(runs_table, run_every=LIVE_S if live else IDLE_S)(ws, live)
    return records


def runs_table(ws: Workspace, live: bool) -> None:
    """The table and the learning curves; when whether a run is active changed since the
    page drew the table, the whole page once (so that the refresh rate follows)."""
    records = training_runs(ws)
    if any_active(records) != live:
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
        rows.append(_row(r, p, shown[r.id]))
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
    # the core knows which dispatcher serves this workspace (its own, or a workshop's)
    if waiting and not dispatcher_alive(ws.root):
        st.warning(f"{len(waiting)} local run(s) wait, but the local dispatcher is not "
                   "running (the machine may have restarted).")
        if st.button("Start the local dispatcher"):
            ensure_dispatcher(ws.root)
    _learning_curves([r for r in records if r.readable][-8:], progress_of, shown)


def _row(r, p, name: str) -> dict[str, Any]:
    """One readable run's row of the table, from its progress ``p``."""
    done_epochs = (p.epoch or 0) + 1 if p.epoch is not None else 0
    row = {"run": name, "status": r.status, "where": where(r),
           "progress": p.fraction if r.status != "done" else 1.0,
           "epochs done": f"{done_epochs} of {r.max_epochs}" if r.max_epochs
           else str(done_epochs)}
    for head, v in p.last_valid().items():
        h = labels.head_label(head)
        row[f"validation energy RMSE (meV/atom), {h}"] = v.get("rmse_e_per_atom_mev")
        row[f"validation force RMSE (meV/Å), {h}"] = v.get("rmse_f_mev_per_a")
    row["note"] = r.reason or ""
    return row


def _learning_curves(records, progress_of, shown) -> None:
    """The validation force error per epoch of ``records``, one line per run and head."""
    curves = {}
    for r in records:
        series = progress_of[r.id].series()
        for head, pts in series.items():
            curves[shown[r.id] + (f" [{labels.head_label(head)}]" if len(series) > 1
                                  else "")] = pts
    if curves:
        show.chart(st, plots.learning_curves(curves, title="Validation force RMSE",
                                              ylabel="force RMSE (meV/Å)"),
                   "learning_curves", key="live_curves")


# ----------------------------------------------------------------- actions
def actions_panel(ws: Workspace, records) -> None:
    """One run chosen among ``records``: cancel, delete, download its model and
    configuration, and why it failed."""
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
        if c[0].button("Cancel", disabled=rec.status not in ACTIVE):
            jobs.cancel(rid, ws)
            st.rerun()
        if c[1].button("Delete", disabled=rec.status not in FINAL):
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
    replay = replay_of(rec.spec, folder)
    if replay is not None:
        st.caption(replay_sentence(replay))
    if rec.status == "failed":
        st.error(f"Failed: {rec.reason}")
        st.code(rec.log_tail or "", language="text")
