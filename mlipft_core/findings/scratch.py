"""Finding: with the foundation model, E0s and learning rate right, fine-tuning beats training
from scratch on the target, above all with little data.

Naive fine-tuning and training from scratch on the same small training set.

Rule: reproduced when ``numbers["finetune_forces"]`` (the fine-tune's target force RMSE) is
below ``numbers["scratch_forces"]`` (the model from scratch's); a missing one counts as
infinite.
"""

from __future__ import annotations

import math
from typing import Any

from .base import Chart, Evidence, Finding, bar_series, fmt

KEY = "scratch"
TITLE = "Fine-tuning beats scratch at small data"
CLAIM = ("With the foundation model, E0s and learning rate right, fine-tuning beats "
         "training from scratch on the target, above all with little data.")
#: The table's columns.
MODEL, STRUCTURES, FORCES, ENERGY = ("model", "training structures",
                                     "target force RMSE (meV/Å)",
                                     "target energy RMSE (meV/atom)")
#: The table's rows, by model.
FINETUNE, SCRATCH = "naive fine-tune", "from scratch"


def teaching(n: int) -> str:
    """What the finding teaches, for ``n`` training structures."""
    return (f"Both models saw the same {n} training structures. The fine-tune starts from "
            "everything the foundation model learned; the model from scratch has only "
            "these structures. The gap shrinks as the data grows.")


def state(ev: Evidence) -> Finding:
    """The finding from the two small-data runs (``naive-small``, ``scratch-small``)."""
    n = ev.study.inputs.small_size
    f, s = ev.target_row("naive-small"), ev.target_row("scratch-small")
    runs = ev.run_ids("naive-small", "scratch-small")
    if f is None or s is None:
        return layout(Finding(0, TITLE, CLAIM, None, "Could not be measured: a small-data "
                              "run failed.", teaching(n), runs=runs, key=KEY), ev.study.extra)
    fine, scratch = f.target_forces_rmse_mev_per_a, s.target_forces_rmse_mev_per_a
    ok = (fine or math.inf) < (scratch or math.inf)
    table = [{MODEL: name, STRUCTURES: n, FORCES: r.target_forces_rmse_mev_per_a,
              ENERGY: r.target_energy_rmse_mev_per_atom}
             for name, r in ((FINETUNE, f), (SCRATCH, s))]
    summary = (f"On {n} training structures: naive fine-tuning reaches a target force RMSE of "
               f"{fmt(fine, 'meV/Å')}, training from scratch {fmt(scratch, 'meV/Å')}. "
               + ("Reproduced." if ok else "Not reproduced here."))
    return layout(Finding(0, TITLE, CLAIM, ok, summary, teaching(n), table, runs, key=KEY,
                          numbers={"finetune_forces": fine, "scratch_forces": scratch}),
                  ev.study.extra)


def layout(f: Finding, extra: dict[str, Any]) -> Finding:
    """The two models' target force errors as bars."""
    f.charts = [Chart("scratch", "bar", "Target force RMSE", "force RMSE (meV/Å)",
                      bar_series(f.table, MODEL, FORCES))] if f.table else []
    return f
