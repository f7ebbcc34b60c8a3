"""The learning-rate pilot on the runs page: launch, watch, apply the best value.

Pilots and applied values are kept in the workspace (``pilots`` and ``tuned_lrs``, keyed by
model, split and strategy), so they survive a reload and belong to this user only.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from mlipft_core import tune
from mlipft_core.errors import MlipftError
from mlipft_core.jobs.records import FINAL
from mlipft_core.strategies import STRATEGIES, RunSpec
from mlipft_ui import plots, selections, show


def context_key(model: str, split_id: str, strategy: str) -> str:
    return f"{model}|{split_id}|{strategy}"


def tuned(model: str, split_id: str) -> dict[str, dict[str, Any]]:
    """Strategy -> pilot record of the values applied for this model and split."""
    saved = selections.get("tuned_lrs") or {}
    out = {}
    for s in STRATEGIES:
        rec = saved.get(context_key(model, split_id, s))
        if isinstance(rec, dict) and rec.get("best_lr") is not None:
            out[s] = rec
    return out


def _save(name: str, key: str, value: Any) -> None:
    current = dict(selections.get(name) or {})
    current[key] = value
    selections.select(rerun=False, **{name: current})


def pilot_panel(specs: dict[str, RunSpec], model: str, split_id: str, *, executor: str,
                slurm: dict[str, Any] | None) -> None:
    """One pilot per strategy of the launch table: a button, live results, "Apply"."""
    ws = selections.workspace()
    lengths = {tune.pilot_length(spec) for spec in specs.values()}
    st.caption("A pilot runs one strategy on your data at several learning rates around its "
               "value in the table ("
               + (lengths.pop() if len(lengths) == 1 else "as long as shown with each strategy")
               + ") and picks the lowest validation force error. The study behind this "
               "workbench found the learning rate to matter more than the strategy.")
    pilots = selections.get("pilots") or {}
    for strategy, spec in specs.items():
        key = context_key(model, split_id, strategy)
        title = STRATEGIES[strategy].title
        sweep = pilots.get(key)
        cols = st.columns([3, 1])
        what = tune.describe_pilot(spec)
        cols[0].markdown(f"**{title}**")
        cols[0].caption(f"Pilot: {what}.")
        if cols[1].button("Tune learning rate", key=f"tune_{strategy}",
                          help=f"Queue {what}."):
            try:
                with st.spinner(f"Queueing the pilot of {title}…"):
                    sweep = tune.submit_pilot(spec, workspace=ws, executor=executor,
                                              slurm=slurm)
                _save("pilots", key, sweep)
            except MlipftError as exc:
                st.error(str(exc))
                continue
        if sweep:
            try:
                res = tune.read_pilot(sweep, ws)
            except MlipftError as exc:
                st.warning(f"Pilot {sweep}: {exc}")
                continue
            if res.finished:
                _pilot_view(res, key, title, strategy)
            else:
                _pilot_live(sweep, key, title, strategy)


@st.fragment(run_every=4)
def _pilot_live(sweep: str, key: str, title: str, strategy: str) -> None:
    """Refreshes itself while the pilot runs, then the whole page once."""
    res = tune.read_pilot(sweep, selections.workspace())
    _pilot_view(res, key, title, strategy)
    if res.finished:
        st.rerun()


def _pilot_view(res: tune.TuneResult, key: str, title: str, strategy: str) -> None:
    ended = sum(p.status in FINAL for p in res.results)
    table = pd.DataFrame([{
        "learning rate": p.lr, "status": p.status,
        "validation force RMSE (meV/Å)": p.valid_forces_rmse_mev_per_a,
        "validation energy RMSE (meV/atom)": p.valid_energy_rmse_mev_per_atom,
        "epoch kept": None if p.epoch is None else int(p.epoch) + 1} for p in res.results])
    left, right = st.columns([2, 3])
    left.dataframe(table, hide_index=True, column_config={
        "learning rate": st.column_config.NumberColumn(format="%.0e"),
        "validation force RMSE (meV/Å)": st.column_config.NumberColumn(format="%.1f"),
        "validation energy RMSE (meV/atom)": st.column_config.NumberColumn(format="%.1f")})
    pts = [p for p in res.results if p.valid_forces_rmse_mev_per_a is not None]
    if pts:
        show.chart(right, plots.lr_curve([p.lr for p in pts],
                                         [p.valid_forces_rmse_mev_per_a for p in pts],
                                         best=res.best_lr if res.finished else None,
                                         title=f"{title}: validation error against "
                                               "learning rate"), f"pilot_{strategy}")
    if not res.finished:
        left.caption(f"{ended} of {tune.count_of(len(res.results), 'pilot run')} ended · "
                     f"{tune.count_of(res.epochs, 'epoch')} each")
        return
    if res.best_lr is None:
        left.error("No pilot run finished with a validation error; see the runs below.")
        return
    applied = (selections.get("tuned_lrs") or {}).get(key, {})
    if applied.get("pilot_sweep") == res.sweep:
        left.success(f"Applied: learning rate {res.best_lr:g} in the table above.")
    elif left.button(f"Apply {res.best_lr:g} to the launch table", key=f"apply_{strategy}",
                     type="primary"):
        _save("tuned_lrs", key, res.record())
        st.rerun()
