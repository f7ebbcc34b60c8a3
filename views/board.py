"""Instructor board: every participant's runs gathered into the study's comparison table."""

import pandas as pd
import streamlit as st

from mlipft_core import jobs
from mlipft_core.errors import MlipftError
from mlipft_core.jobs.records import ACTIVE
from mlipft_core.workshop import Limits, board_runs, board_table, findings
from mlipft_ui import labels, plots, selections, show

role, _ = selections.identity()
if role != "instructor":
    st.error("The board is for the instructor's link only.")
    st.stop()
shop = selections.workshop()
st.title("Instructor board")
st.caption(f"Workshop **{shop.name}** · {len(shop.participants)} participants · every finished "
           "run measures itself on the target test set and the held-out pretraining set when "
           "it ends, and this board shows those figures (refreshes every 15 s).")


title = labels.strategy_title


def run_names(runs) -> dict[tuple[str, str], str]:
    """(participant, run id) -> the run's display name among that participant's runs."""
    out = {}
    for who in {r.participant for r in runs}:
        mine = [r for r in runs if r.participant == who and r.facts is not None]
        names = labels.run_labels(r.facts for r in mine)
        out.update({(who, r.run_id): names[r.run_id] for r in mine})
    return out


def where(executor: str) -> str:
    return {"local": "this machine", "slurm": "SLURM cluster"}.get(executor, executor)


@st.fragment(run_every=15)
def board() -> None:
    with st.spinner("Gathering the participants' runs…"):
        runs = board_runs(shop)
    done = [r for r in runs if r.status == "done"]
    active = [r for r in runs if r.status in ACTIVE]
    names = run_names(runs)

    def name(r) -> str:
        return names.get((r.participant, r.run_id), r.name)

    c = st.columns(4)
    c[0].metric("Participants with runs", len({r.participant for r in runs}))
    c[1].metric("Runs finished", len(done))
    c[2].metric("Runs queued or running", len(active))
    c[3].metric("Runs failed", sum(1 for r in runs if r.status == "failed"))

    st.subheader("The study's comparison, from everyone's runs")
    entries = board_table(runs)
    if not entries:
        st.info("No finished runs yet.")
    else:
        table = pd.DataFrame([{
            "strategy": title(e.strategy), "foundation model": labels.model_name(e.foundation),
            "E0s": labels.e0_words(e.e0), "runs": e.n_runs, "participants": e.n_participants,
            "target force RMSE, median (meV/Å)": e.target_median,
            "target force RMSE, middle half (meV/Å)":
                "—" if e.target_q1 is None else f"{e.target_q1:.1f}–{e.target_q3:.1f}",
            "forgetting ratio, median": e.forgetting_median,
            "forgetting ratio, middle half":
                "—" if e.forgetting_q1 is None else f"{e.forgetting_q1:.2f}–{e.forgetting_q3:.2f}",
        } for e in entries])
        decimals = {"forgetting ratio, median": 2}
        table = labels.dash_missing(table, decimals)
        st.dataframe(table, hide_index=True,
                     column_config=labels.number_formats(table, decimals))
        n_pilots = sum(1 for r in done if r.pilot)
        st.caption("Forgetting ratio: force error on held-out pretraining data over the "
                   "foundation model's (1 = nothing forgotten). For replay strategies it is "
                   "the pretraining head's; the target error is always the target head's. "
                   "The middle half spans the 25th to the 75th percentile of the runs."
                   + (f" Left out: {n_pilots} finished run(s) of learning-rate pilots (short "
                      "runs at learning rates chosen to bracket the best)." if n_pilots
                      else ""))
        for line in findings(runs):
            st.success(line)
        finals = [r for r in done if not r.pilot]
        colors = plots.palette([title(r.strategy) for r in finals])
        for key, label in (("target_forces_rmse_mev_per_a", "target force RMSE (meV/Å)"),
                           ("forgetting_ratio", "forgetting ratio")):
            fig = plots.spread({title(strat): [getattr(r, key) for r in finals
                                               if r.strategy == strat]
                                for strat in sorted({r.strategy for r in finals})},
                               title=f"Spread over participants: {label}", ylabel=label,
                               colors=colors)
            show.chart(st, fig, f"board_{key}", key=f"board_{key}")

    st.subheader("Runs by participant")
    if runs:
        by_run = pd.DataFrame([{
            "participant": r.participant, "run": name(r),
            "foundation model": labels.model_name(r.foundation), "status": r.status,
            "target force RMSE (meV/Å)": r.target_forces_rmse_mev_per_a,
            "forgetting ratio": r.forgetting_ratio} for r in runs])
        decimals = {"forgetting ratio": 2}
        by_run = labels.dash_missing(by_run, decimals)
        st.dataframe(by_run, hide_index=True,
                     column_config=labels.number_formats(by_run, decimals))
    else:
        st.caption("No runs yet.")

    st.subheader("Queue")
    if not active:
        st.caption("Nothing queued or running.")
    else:
        st.dataframe(pd.DataFrame([{"participant": r.participant, "run": name(r),
                                    "status": r.status, "where": where(r.executor)}
                                   for r in active]), hide_index=True)
        ids = {f"{r.participant} · {name(r)} · {r.status}": r for r in active}
        pick = st.selectbox("Run to cancel", list(ids))
        if st.button("Cancel this run"):
            r = ids[pick]
            try:
                jobs.cancel(r.run_id, shop.workspace_of(r.participant))
                st.toast(f"Cancelled {name(r)} of {r.participant}.")
            except MlipftError as exc:
                st.error(str(exc))
    st.download_button("Board as JSON", pd.DataFrame([r.to_dict() for r in runs]).to_json(
        orient="records"), "workshop_board.json", "application/json")


board()

with st.expander("Limits for every participant (change them at any time)"):
    lim = shop.limits
    c = st.columns(4)
    max_runs = c[0].number_input("Runs queued or running per participant", 1, 100,
                                 int(lim.max_active_runs))
    max_epochs = c[1].number_input("Epoch cap per run (0: none)", 0, 100_000,
                                   int(lim.max_epochs or 0))
    max_minutes = c[2].number_input("Run-time cap per run (min, 0: none)", 0.0, 10_000.0,
                                    float(lim.max_run_minutes or 0.0))
    upload = c[3].number_input("Upload limit (MB)", 1.0, 10_000.0, float(lim.upload_limit_mb))
    if st.button("Save the limits"):
        try:
            shop.limits = Limits(max_active_runs=int(max_runs),
                                 max_epochs=int(max_epochs) or None,
                                 max_run_minutes=float(max_minutes) or None,
                                 upload_limit_mb=float(upload)).check()
            shop.save()
            st.toast("Limits saved; they apply to runs launched from now on.")
        except MlipftError as exc:
            st.error(str(exc))
    st.caption("The upload limit of the server itself is set when it starts (workshop serve); "
               "a lower limit here is enforced by the pages.")

with st.expander("Participants' links"):
    st.dataframe(pd.DataFrame([{"participant": p.name, "link": shop.url(p.token)}
                               for p in shop.participants]), hide_index=True)
