"""Finding: the quality of the foundation model carries through fine-tuning.

The same naive fine-tuning from the foundation model and from a weaker one.

Rule: reproduced when ``numbers["strong_forces"]`` (target force RMSE after fine-tuning the
foundation model) is below ``numbers["weak_forces"]`` (after fine-tuning the weaker one); a
missing one counts as infinite.
"""

from __future__ import annotations

import math
from typing import Any

from .base import Chart, Evidence, Finding, bar_series, fmt

KEY = "foundation"
TITLE = "FM quality carries through"
CLAIM = "The quality of the foundation model carries through fine-tuning."
TEACHING = ("The same fine-tuning, data, E0 method and learning rate from two foundation "
            "models: the weaker one (smaller, trained on less data) starts further from the "
            "target and ends further from it.")
#: The table's columns.
MODEL, ZERO_SHOT, AFTER, AFTER_ENERGY = (
    "foundation model", "zero-shot target force RMSE (meV/Å)",
    "after naive fine-tuning (meV/Å)", "after naive fine-tuning, energy (meV/atom)")
#: The table's rows, by foundation model.
STRONG, WEAK = "strong", "weak"


def state(ev: Evidence) -> Finding:
    """The finding from naive fine-tuning of both foundation models (``naive``,
    ``naive-weak``) and the foundation models themselves."""
    s, w = ev.target_row("naive"), ev.target_row("naive-weak")
    fs, fw = ev.target_row("foundation"), ev.target_row("weak foundation")
    runs = ev.run_ids("naive", "naive-weak")
    if s is None or w is None:
        why = ("no weaker foundation model was given; give one to measure it (--weak-model, "
               "or the Study page's 'Weaker foundation model'), e.g. the weaker member of the "
               "model's family (MACE-MP-0 small against OMAT-0 small)"
               if not ev.study.inputs.weak_model else "a run failed")
        return layout(Finding(0, TITLE, CLAIM, None, f"Could not be measured: {why}.",
                              TEACHING, runs=runs, key=KEY), ev.study.extra)
    strong, weak = s.target_forces_rmse_mev_per_a, w.target_forces_rmse_mev_per_a
    ok = (strong or math.inf) < (weak or math.inf)
    table = [{MODEL: name, ZERO_SHOT: None if z is None else z.target_forces_rmse_mev_per_a,
              AFTER: r.target_forces_rmse_mev_per_a,
              AFTER_ENERGY: r.target_energy_rmse_mev_per_atom}
             for name, z, r in ((STRONG, fs, s), (WEAK, fw, w))]
    summary = (f"Naive fine-tuning from the strong foundation model: target force RMSE "
               f"{fmt(strong, 'meV/Å')}; from the weak one {fmt(weak, 'meV/Å')}. "
               + ("Reproduced." if ok else "Not reproduced here."))
    numbers = {"strong_forces": strong, "weak_forces": weak,
               "strong_zero_shot_forces": table[0][ZERO_SHOT],
               "weak_zero_shot_forces": table[1][ZERO_SHOT]}
    return layout(Finding(0, TITLE, CLAIM, ok, summary, TEACHING, table, runs, key=KEY,
                          numbers=numbers), ev.study.extra)


def layout(f: Finding, extra: dict[str, Any]) -> Finding:
    """Both fine-tunes' target force errors as bars."""
    f.charts = [Chart("foundation", "bar", "Target force RMSE", "force RMSE (meV/Å)",
                      bar_series(f.table, MODEL, AFTER))] if f.table else []
    return f
