"""Measure what the demo world needs to show the study's short-range effect: collapses in the
random structure search and soft spots of naive fine-tuning against its training budget.

Trains (or finds, by name, in the workspace) naive fine-tunes of the strong demo model on the
demo SN2 target for several epoch budgets, under the short-budget defaults and under the
study's protocol (lr 1e-3, EMA 0.999, gradient clipping 1, float64, universal loss), and
multihead replay for comparison. Then, for the foundation model and every fine-tune, in the
same run and on the same structures:

- the random structure search (:func:`mlipft_core.probes.random_structure_search`): 40 random
  compact clusters of C, F, Cl and H relaxed with FIRE, collapsed when a pair comes closer
  than 0.55 of its covalent-radii sum at any step;
- the short-range probe on the 163 held-out compressed structures (soft spots: structures
  keeping less than half the reference's force; the median share kept);
- the validation force RMSE of the run (meV/Å), so a longer budget's gain on the target shows.

    python bench/collapse_budget.py [--workspace W] [--epochs 20,80,200]
        [--study-epochs 20,200] [--replay-epochs 20,200] [--structures 40] [--json]
        [--write sample_data/collapse_budgets.json]

``--write`` stores the table where the Study page reads it for its note on finding 6 (what
the demo world shows at each budget).

Each model's search time is printed as well (the cost the study's plan estimates).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default=str(Path.home() / "mlipft-budget"))
    parser.add_argument("--epochs", default="20,80,200", help="naive, short-budget defaults")
    parser.add_argument("--study-epochs", default="20,200", help="naive, study protocol")
    parser.add_argument("--replay-epochs", default="20,200", help="multihead replay, defaults")
    parser.add_argument("--structures", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write", help="store the table as JSON here")
    args = parser.parse_args()
    os.environ["MLIPFT_WORKSPACE"] = args.workspace
    out = sys.stdout
    sys.stdout = sys.stderr  # what mace and its imports print stays off the table

    from mlipft_core import jobs
    from mlipft_core.analysis import ModelHead, short_range_probe
    from mlipft_core.demo import demo_paths
    from mlipft_core.launch import TrainingOptions, submit_training
    from mlipft_core.probes import SEARCH_COLLAPSE_FACTOR, random_structure_search
    from mlipft_core.strategies import STUDY_PROTOCOL
    from mlipft_core.workspace import Workspace

    d = demo_paths()
    fm = d["models"]["demo-gfn1-strong"]
    plan = ([("naive", e, None) for e in _ints(args.epochs)]
            + [("naive", e, STUDY_PROTOCOL) for e in _ints(args.study_epochs)]
            + [("multihead-replay", e, None) for e in _ints(args.replay_epochs)])
    names = {(s, e, p): f"{'naive' if s == 'naive' else 'replay'}"
                        f"{'-study' if p else ''}-{e}" for s, e, p in plan}
    ws = Workspace()
    done = {r.name: r for r in jobs.list_runs(ws) if r.readable and r.status == "done"}
    under_way = {r.name for r in jobs.list_runs(ws)
                 if r.readable and r.status in ("queued", "running")}
    for key in plan:
        name = names[key]
        if name in done or name in under_way:
            continue
        strategy, epochs, preset = key
        opts = TrainingOptions(model="demo-gfn1-strong", train=d["sn2_train"],
                               valid=d["sn2_valid"], test=d["sn2_test"], epochs=epochs,
                               preset=preset)
        rec = submit_training(opts, strategy, name=name)[0]
        print(f"queued {name}: {rec.id}", file=sys.stderr, flush=True)
    for name in names.values():
        while name not in done:
            runs = [r for r in jobs.list_runs(ws) if r.readable and r.name == name]
            finished = [r for r in runs if r.status == "done"]
            if finished:
                done[name] = finished[-1]
            elif runs and all(r.status in ("failed", "cancelled") for r in runs):
                print(f"{name}: {runs[-1].status}: {runs[-1].reason}", file=sys.stderr)
                return 1
            else:
                time.sleep(20)

    heads = [ModelHead("foundation", fm)] + [
        ModelHead(names[k], done[names[k]].model_path,
                  "Default" if k[0] == "multihead-replay" else None,
                  k[0] == "multihead-replay") for k in plan]
    probe = {r.model: r for r in short_range_probe(heads, d["short_range_test"])}
    rows = []
    for h in heads:
        t0 = time.perf_counter()
        res = random_structure_search(h.path, ["C", "Cl", "F", "H"], head=h.head,
                                      n_structures=args.structures, trusted=True)
        seconds = time.perf_counter() - t0
        p = probe[h.label]
        key = next((k for k in plan if names[k] == h.name), None)
        rec = done.get(h.name)
        valid = ((rec.metrics.get("valid") or {}).get("Default") or {}) if rec else {}
        rows.append({
            "model": h.name, "strategy": key[0] if key else "foundation",
            "epochs": key[1] if key else None,
            "preset": (key[2] or "short budget") if key else None,
            "structures": res.structures, "collapsed": res.collapsed,
            "median_closest": res.to_dict()["median_closest"],
            "min_closest": round(min(res.closest), 3),
            "soft_spots": p.soft_spots, "soft_share_percent": p.soft_share_percent,
            "median_force_kept_percent": round(100 * p.median_force_kept, 1),
            "valid_forces_rmse_mev_per_a": valid.get("rmse_f_mev_per_a"),
            "search_seconds": round(seconds, 1)})
        print(f"{h.name}: {res.collapsed} of {res.structures} collapsed, "
              f"{seconds:.0f} s", file=sys.stderr, flush=True)
    table = {"rows": rows, "collapse_factor": SEARCH_COLLAPSE_FACTOR,
             "target": "demo SN2 (B3LYP), strong demo model", "measured": time.strftime(
                 "%Y-%m-%d"), "load_average": round(os.getloadavg()[0], 2)}
    if args.write:
        Path(args.write).write_text(json.dumps(table, indent=1) + "\n")
    if args.json:
        print(json.dumps(table, indent=2), file=out)
        return 0
    cols = ["model", "epochs", "preset", "collapsed", "structures", "median_closest",
            "min_closest", "soft_spots", "soft_share_percent", "median_force_kept_percent",
            "valid_forces_rmse_mev_per_a", "search_seconds"]
    print("| " + " | ".join(cols) + " |", file=out)
    print("|" + "---|" * len(cols), file=out)
    for r in rows:
        print("| " + " | ".join("" if r[c] is None else (
            f"{r[c]:.2f}" if c.endswith("closest") else f"{r[c]:.1f}"
            if isinstance(r[c], float) else str(r[c])) for c in cols) + " |", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
