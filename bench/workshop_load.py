"""N simultaneous participants of one workshop server press the model-heavy buttons.

The app is served for real and every participant is a headless Chromium context of their
own: they open the Data, E0, Fine-tuning runs and Compare pages and press Evaluate
(zero-shot), Compute E0s, Launch and Compare, all participants at the same moment, one
button after another. The run a Launch queues is cancelled as soon as that participant's
page settled, so that training does not take the server's cores from the other pages.

Prints, per action and overall, the time from pressing to a settled page, against the same
presses of one participant alone in the same run (the baseline), and the server's peak memory.

    python bench/workshop_load.py --participants 10 [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def main(argv=None) -> int:
    """Parse the options, measure, print (libraries' own prints go to stderr)."""
    import contextlib

    real_stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        return _main(argv, real_stdout)


def _main(argv, out_stream) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--participants", type=int, default=10)
    ap.add_argument("--model", default="demo-gfn1-strong")
    ap.add_argument("--train", type=int, default=32, help="training structures (SN2 demo)")
    ap.add_argument("--test", type=int, default=16, help="test structures")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="mlipft-load-"))
    os.environ["MLIPFT_WORKSPACE"] = str(tmp / "server")
    os.environ.setdefault("XDG_CACHE_HOME", str(tmp / "xdg"))

    from bench._workshop_session import (
        ACTIONS,
        Server,
        cancel_own_runs,
        demo_files,
        make_room,
        rounds,
        stage_finished_run,
    )
    from mlipft_core import jobs
    from mlipft_core.registry import model_path
    from mlipft_core.strategies import RunSpec
    from mlipft_core.workspace import Workspace

    files = demo_files(tmp / "data", train=args.train, valid=max(4, args.test // 2),
                       test=args.test, pretrain=args.test)
    trainer = Workspace(tmp / "trainer")
    run = jobs.submit(RunSpec("naive", str(model_path(args.model)), files["train"],
                              valid_file=files["valid"], name="naive",
                              settings={"max_num_epochs": 1}), workspace=trainer)
    if jobs.wait(run.id, workspace=trainer, timeout=1800).status != "done":
        print("the run every participant compares did not finish", file=sys.stderr)
        return 1

    def cancel_launched(room):
        """As soon as a participant's Launch settled, their queued run is cancelled: the
        others' pages keep the cores (the bench measures pages, not training)."""
        def after(press):
            print(f"{press.participant} {press.action}: {press.seconds:.1f} s"
                  + (f", error: {press.error}" if press.error else ""), file=sys.stderr)
            if press.action == "launch":
                cancel_own_runs(room, press.participant)
        return after

    def measured(n: int, sub: str):
        root = tmp / sub
        root.mkdir(parents=True)
        server = Server(root)
        try:
            room = make_room(root, n, files, model=args.model)
            stage_finished_run(trainer.runs / run.id, room)
            t0 = time.perf_counter()
            c0 = psutil.cpu_times()
            presses = rounds(room, server, ACTIONS, after_press=cancel_launched(room))
            c1 = psutil.cpu_times()
            own, tree = server.cpu_s()
            machine = (c1.user + c1.system + c1.nice) - (c0.user + c0.system + c0.nice)
            cpu = {"server_cpu_s": round(own, 1), "server_tree_cpu_s": round(tree, 1),
                   "machine_cpu_s": round(machine, 1)}
            return presses, time.perf_counter() - t0, server.peak_rss_mb(), cpu
        finally:
            server.stop()

    alone, _, alone_rss, alone_cpu = measured(1, "alone")
    presses, wall, peak_rss, cpu = measured(args.participants, "room")
    times = [p.seconds for p in presses]
    alone_s = {p.action: p.seconds for p in alone}
    per_action = {}
    for action in ACTIONS:
        ts = [p.seconds for p in presses if p.action == action]
        per_action[action] = {"p50_s": round(_quantile(ts, 0.5), 2),
                              "p95_s": round(_quantile(ts, 0.95), 2),
                              "alone_s": round(alone_s[action], 2),
                              "p95_over_alone": round(_quantile(ts, 0.95) / alone_s[action], 2)}
    errors = [f"{p.participant} {p.action}: {p.error}" for p in presses if p.error]
    alone_total = sum(alone_s.values())
    out = {
        "participants": args.participants,
        "presses": len(presses),
        "errors": len(errors),
        "error_messages": errors[:10],
        "p50_s": round(_quantile(times, 0.5), 2),
        "p95_s": round(_quantile(times, 0.95), 2),
        "peak_rss_mb": round(peak_rss, 1),
        "alone_peak_rss_mb": round(alone_rss, 1),
        "alone_total_s": round(alone_total, 2),
        "wall_s": round(wall, 2),
        # 1.0: N participants cost exactly N times one participant's model time (no overhead)
        "wall_over_n_times_alone": round(wall / (args.participants * alone_total), 2),
        "per_action": per_action,
        # CPU seconds over the presses: the server process, it with the runs it started, and
        # the whole machine (the rest is mostly the participants' own headless browsers)
        "cpu": cpu,
        "alone_cpu": alone_cpu,
        "model": args.model,
        "train_structures": args.train,
        "test_structures": args.test,
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(out, allow_nan=False), file=out_stream)
    else:
        sys.stdout = out_stream
        print(f"{args.participants} participants, {len(presses)} presses, {len(errors)} errors; "
              f"settled page p50 {out['p50_s']} s, p95 {out['p95_s']} s; one participant "
              f"alone {alone_total:.1f} s for all four; wall {wall:.1f} s = "
              f"{out['wall_over_n_times_alone']} × (N × alone); peak RSS "
              f"{out['peak_rss_mb']} MB")
        for action, row in per_action.items():
            print(f"  {action:9s} p50 {row['p50_s']:7.2f} s  p95 {row['p95_s']:7.2f} s  "
                  f"alone {row['alone_s']:6.2f} s")
        for e in errors:
            print("  error:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
