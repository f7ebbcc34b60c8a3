"""Benchmark: every strategy's default learning rate against the learning-rate pilot.

For each fine-tuning strategy, the pilot (``mlipft_core.tune``) runs the demo SN2 target from
the strong demo model at its default grid (five learning rates around the strategy's default:
three below, one above) for a quarter of the default epochs.
The script prints, per strategy, the pilot's validation force RMSE at every learning rate, the
best learning rate, and the ratio of the error at the current default to the best error (goal:
at most 1.3). With ``--study ID`` it reads the pilots of a finished study instead of running
new ones (the Study page and ``mlipft study`` run exactly these pilots).

    python bench/lr_defaults.py [--workspace DIR] [--study ID [--also SWEEP ...]] [--epochs 5]

``--also`` adds further pilot sweeps of the same settings (e.g. ``mlipft tune --lrs 3e-2`` for
strategies whose best value lay at the edge of the grid) to the table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", help="workspace folder (default: a new temporary one)")
    parser.add_argument("--study", help="read the pilots of this study instead of running")
    parser.add_argument("--epochs", type=int, default=5, help="pilot epochs (default 5)")
    parser.add_argument("--also", nargs="*", default=[], help="extra pilot sweeps to merge")
    args = parser.parse_args()
    os.environ["MLIPFT_WORKSPACE"] = args.workspace or tempfile.mkdtemp(prefix="mlipft-lr-")

    from mlipft_core import study as studymod
    from mlipft_core import tune
    from mlipft_core.strategies import STRATEGIES
    from mlipft_core.workspace import Workspace

    ws = Workspace()
    if args.study:
        st = studymod.load(args.study, ws)
        results = {s: tune.read_pilot(sweep, ws) for s, sweep in st.pilots.items()}
        for sweep in args.also:
            extra = tune.read_pilot(sweep, ws)
            base = results[extra.strategy]
            known = {p.lr for p in base.results}
            base.results += [p for p in extra.results if p.lr not in known]
            base.results.sort(key=lambda p: p.lr)
            scored = [p for p in base.results if p.valid_forces_rmse_mev_per_a is not None]
            base.best_lr = min(scored, key=lambda p: p.valid_forces_rmse_mev_per_a).lr
    else:
        inputs = studymod.demo_inputs()
        e0 = studymod._fit_e0s(inputs)["anchored"]
        results = {}
        for s in studymod.FINE_TUNING:
            spec = studymod._spec(inputs, s, e0=e0)
            results[s] = tune.tune(spec, None, args.epochs, workspace=ws)
            print(f"{s}: done", file=sys.stderr, flush=True)
    grid = sorted({p.lr for r in results.values() for p in r.results})
    print(f"pilot: {next(iter(results.values())).epochs} epochs, validation force RMSE "
          "(meV/Å) per learning rate")
    print(f"{'strategy':20s} " + " ".join(f"{x:>8g}" for x in grid)
          + f" {'best':>8s} {'default':>8s} {'default/best':>12s}")
    worst = 1.0
    for s, r in results.items():
        err = {p.lr: p.valid_forces_rmse_mev_per_a for p in r.results}
        default = STRATEGIES[s].defaults["lr"]
        best = err.get(r.best_lr)
        d_err = err.get(default)
        ratio = None if best is None or d_err is None else d_err / best
        worst = max(worst, ratio or 1.0)
        print(f"{s:20s} " + " ".join(f"{err[x]:8.1f}" if err.get(x) is not None else
                                     f"{'-':>8s}" for x in grid)
              + f" {r.best_lr or float('nan'):8g} {default:8g} "
              + (f"{ratio:12.2f}" if ratio is not None else f"{'not in grid':>12s}"))
    print(f"largest default/best ratio: {worst:.2f} (goal: at most 1.3)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
