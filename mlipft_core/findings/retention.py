"""Finding: multihead replay is the only strategy that keeps the pretraining accuracy.

Every strategy's forgetting ratio: its force error on held-out pretraining structures over
the foundation model's.

Rule: reproduced when the strategy with the lowest forgetting ratio
(``numbers["forgetting"]``, by strategy, lowest first) is a replay strategy.
"""

from __future__ import annotations

from typing import Any

from ..study_plan import REPLAY
from .base import Chart, Evidence, Finding, bar_series, head_name, lr_text, strategy_title

KEY = "retention"
TITLE = "Multihead replay keeps pretraining accuracy best"
CLAIM = "Multihead replay is the only strategy that keeps the pretraining accuracy."
TEACHING = ("Forgetting ratio: force error on held-out pretraining structures over the "
            "foundation model's (1 = nothing forgotten). A replay model keeps training its "
            "pretraining head on pretraining structures while the target head learns, so the "
            "shared weights cannot drift far from what the foundation model knew.")
#: The table's columns.
STRATEGY, HEAD, RATIO, PT_FORCES, LR = ("strategy", "head", "forgetting ratio",
                                        "pretraining force RMSE (meV/Å)", "learning rate")


def state(ev: Evidence) -> Finding:
    """The finding from every strategy's pretraining head (or only head)."""
    study = ev.study
    measured = []
    for s in study.inputs.strategies:
        r = ev.pt_row(s)
        if r is not None and r.forgetting_ratio is not None:
            measured.append((s, {STRATEGY: strategy_title(s),
                                 HEAD: head_name(r.head, multihead=s in REPLAY),
                                 RATIO: r.forgetting_ratio,
                                 PT_FORCES: r.pretrain_forces_rmse_mev_per_a,
                                 LR: lr_text(study.tuned.get(s))}))
    runs = list(study.finals.values())
    if not measured:
        why = ("no pretraining test set was given; give held-out structures at the "
               "foundation model's level of theory to measure it (--pretrain; an official "
               "model with a replay set of mace's in the cache takes a forgetting set drawn "
               "from it)" if not study.inputs.pretrain_test else "the runs failed")
        if not any(s in REPLAY for s in study.inputs.strategies):
            why += ("; and no replay strategy ran (they need a replay file: --replay, or "
                    "mlipft replay fetch MODEL for an official model)")
        return layout(Finding(0, TITLE, CLAIM, None, f"Could not be measured: {why}.",
                              TEACHING, runs=runs, key=KEY), study.extra)
    measured.sort(key=lambda m: m[1][RATIO])
    table = [row for _, row in measured]
    best = table[0]
    ok = measured[0][0] in REPLAY
    summary = (f"Lowest forgetting ratio: {best[STRATEGY]} ({best[RATIO]:.2f}); "
               + ", ".join(f"{d[STRATEGY]} {d[RATIO]:.2f}" for d in table[1:])
               + ". " + ("Reproduced: a replay strategy forgets least." if ok else
                         "Not reproduced here: a strategy without replay forgot less."))
    left_out = int(study.extra.get("pretrain_left_out") or 0)
    if left_out:
        summary += (f" {left_out} structure{'s' if left_out != 1 else ''} of the pretraining "
                    "test set were also among those a run replayed and were left out of it.")
    return layout(Finding(0, TITLE, CLAIM, ok, summary, TEACHING, table, runs, key=KEY,
                          numbers={"forgetting": {s: row[RATIO] for s, row in measured}}),
                  study.extra)


def layout(f: Finding, extra: dict[str, Any]) -> Finding:
    """The forgetting ratios as bars; ratios with two decimals."""
    f.digits = {RATIO: 2}
    f.charts = [Chart("forgetting", "bar", "Forgetting ratio (1 = nothing forgotten)",
                      "pretraining F RMSE / foundation's",
                      bar_series(f.table, STRATEGY, RATIO))] if f.table else []
    return f
