"""Finding: naive fine-tuning converges best for one system; multihead replay, at its own
learning rate, stays close to it on the target.

Every strategy's target errors at its tuned learning rate, and the learning-rate pilots.

Rule: reproduced when ``numbers["ratio"]`` (multihead replay's target force RMSE over naive
fine-tuning's) is at most :data:`CLOSE_FACTOR`.
"""

from __future__ import annotations

from typing import Any

from .base import Chart, Evidence, Finding, fmt, lr_text, strategy_title

KEY = "close"
TITLE = "Multihead replay stays close to naive on the target"
CLAIM = ("Naive fine-tuning converges best for one system; multihead replay, at its own "
         "learning rate, stays close to it on the target.")
TEACHING = ("Replay spends part of every step on the pretraining structures, so on the "
            "target alone it converges a little slower than naive fine-tuning. With a "
            "learning rate tuned for it (the pilot), the price is small; at a default tuned "
            "for long runs it can look as if replay cannot learn the target at all.")
#: Replay counts as "close to naive" within this factor of naive's target error.
CLOSE_FACTOR = 1.3
#: The table's columns.
STRATEGY, FORCES, ENERGY, LR = ("strategy", "target force RMSE (meV/Å)",
                                "target energy RMSE (meV/atom)", "learning rate")


def state(ev: Evidence) -> Finding:
    """The finding from every strategy's target head, naive's and multihead replay's above
    all."""
    study = ev.study
    n, m = ev.target_row("naive"), ev.target_row("multihead-replay")
    table = []
    for s in study.inputs.strategies:
        r = ev.target_row(s)
        if r is not None:
            table.append({STRATEGY: strategy_title(s), FORCES: r.target_forces_rmse_mev_per_a,
                          ENERGY: r.target_energy_rmse_mev_per_atom,
                          LR: lr_text(study.tuned.get(s))})
    runs = ev.run_ids("naive", "multihead-replay")
    if n is None or m is None or n.target_forces_rmse_mev_per_a is None or \
            m.target_forces_rmse_mev_per_a is None:
        why = ("multihead replay was not among the study's strategies: it needs a replay file "
               "(--replay, or mlipft replay fetch MODEL for an official model)"
               if "multihead-replay" not in study.inputs.strategies
               else "the naive or the multihead replay run failed")
        return layout(Finding(0, TITLE, CLAIM, None, f"Could not be measured: {why}.",
                              TEACHING, table, runs, key=KEY), study.extra)
    ratio = m.target_forces_rmse_mev_per_a / n.target_forces_rmse_mev_per_a
    ok = ratio <= CLOSE_FACTOR
    summary = (f"Target force RMSE: naive {fmt(n.target_forces_rmse_mev_per_a, 'meV/Å')} (lr "
               f"{study.tuned.get('naive'):g}), multihead replay "
               f"{fmt(m.target_forces_rmse_mev_per_a, 'meV/Å')} (lr "
               f"{study.tuned.get('multihead-replay'):g}): {ratio:.2f}× naive's. "
               + (f"Reproduced (within {CLOSE_FACTOR:g}×)." if ok else
                  f"Not reproduced here: more than {CLOSE_FACTOR:g}× naive's."))
    numbers = {"naive_forces": n.target_forces_rmse_mev_per_a,
               "replay_forces": m.target_forces_rmse_mev_per_a, "ratio": ratio}
    return layout(Finding(0, TITLE, CLAIM, ok, summary, TEACHING, table, runs, key=KEY,
                          numbers=numbers), study.extra)


def layout(f: Finding, extra: dict[str, Any]) -> Finding:
    """The learning-rate pilots (``extra["pilots"]``): each strategy's validation force
    error against the learning rate."""
    series = {}
    for s, res in extra.get("pilots", {}).items():
        pts = [(p["lr"], p["valid_forces_rmse_mev_per_a"]) for p in res["results"]
               if p["valid_forces_rmse_mev_per_a"] is not None]
        if pts:
            series[strategy_title(s)] = [[x for x, _ in pts], [y for _, y in pts]]
    f.charts = [Chart("pilots", "learning_rates", "Learning-rate pilots: validation force "
                      "error after the pilot epochs", "validation force RMSE (meV/Å)",
                      series)] if series else []
    return f
