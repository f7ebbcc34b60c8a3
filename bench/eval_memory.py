"""Peak memory and time of ``mlipft_core.evaluate.evaluate_model`` as the data file grows.

Files of 10^3, 10^4 and 10^5 structures are made by replicating the structures of a small
demo file (default: the SN2 test set) into a temporary folder; each size is evaluated in a
fresh subprocess with the demo model, which reports

- ``baseline``: its peak RSS after the imports and loading the model (what any evaluation
  costs before it reads data),
- ``peak``: its peak RSS at the end of the evaluation,
- the time of the evaluation.

Memory stays flat when ``peak - baseline`` hardly grows with the file. The last lines print
the ratio of peak RSS at the largest size to the smallest, and the same for the growth above
the baseline.

    python bench/eval_memory.py                        # 1000,10000,100000
    python bench/eval_memory.py --sizes 1000,10000     # quicker
    python bench/eval_memory.py --against-git HEAD~1   # also the evaluate.py of a commit

``--against-git REV`` runs the same sizes with ``mlipft_core/evaluate.py`` as it was at REV
(loaded from ``git show``, next to today's ``mlipft_core.data``), for a before/after table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def frame_blocks(path: Path) -> list[str]:
    """The text of every configuration of an extxyz file (count line, comment, atoms)."""
    lines = path.read_text().splitlines(keepends=True)
    blocks, i = [], 0
    while i < len(lines) and lines[i].strip():
        n = int(lines[i])
        blocks.append("".join(lines[i:i + n + 2]))
        i += n + 2
    return blocks


def make_file(blocks: list[str], n: int, out: Path) -> Path:
    """``n`` structures: the source's structures, repeated in order."""
    with open(out, "w") as fh:
        fh.writelines(blocks[k % len(blocks)] for k in range(n))
    return out


def child(args: argparse.Namespace) -> None:
    """Runs in a fresh process: evaluate one file and print the measurements as JSON."""
    import resource

    import torch

    torch.set_num_threads(args.threads)
    if args.old_module:
        import importlib.util

        spec = importlib.util.spec_from_file_location("mlipft_core._evaluate_then",
                                                      args.old_module)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        evaluate_model = mod.evaluate_model
    else:
        from mlipft_core.evaluate import evaluate_model
    from mlipft_core.registry import load_model

    load_model(args.model, trusted=True)  # imports mace/e3nn and unpickles once: the baseline
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    calls = []
    t0 = time.perf_counter()
    res = evaluate_model(args.model, args.child, trusted=True, batch_size=args.batch_size,
                         device="cpu", progress=lambda d, n: calls.append((d, n)))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": int(res.metrics.n_structures), "baseline_mb": baseline,
                      "peak_mb": peak, "seconds": seconds, "progress_calls": len(calls),
                      "last_progress": calls[-1] if calls else None,
                      "forces_rmse": res.metrics.forces_rmse_mev_per_a}))


def measure(path: Path, args: argparse.Namespace, old_module: str | None) -> dict:
    cmd = [sys.executable, __file__, "--child", str(path), "--model", args.model,
           "--threads", str(args.threads)]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    if old_module:
        cmd += ["--old-module", old_module]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the evaluation of {path} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,10000,100000",
                   help="numbers of structures, comma-separated (default: 1000,10000,100000)")
    p.add_argument("--source", default=str(ROOT / "sample_data" / "sn2" / "test.xyz"),
                   help="extxyz whose structures are replicated (default: the SN2 test set)")
    p.add_argument("--model", default=str(ROOT / "sample_data" / "models" /
                                          "demo-gfn1-weak.model"))
    p.add_argument("--batch-size", type=int, default=None,
                   help="structures per batch (default: automatic)")
    p.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    p.add_argument("--against-git", metavar="REV",
                   help="also measure mlipft_core/evaluate.py as it was at this git revision")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--old-module", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    blocks = frame_blocks(Path(args.source))
    print(f"source: {args.source} ({len(blocks)} structures, replicated); model: {args.model}; "
          f"{args.threads} threads; batch size: {args.batch_size or 'automatic'}")
    with tempfile.TemporaryDirectory(prefix="mlipft-eval-memory-") as tmp:
        old = None
        if args.against_git:
            src = subprocess.run(["git", "show", f"{args.against_git}:mlipft_core/evaluate.py"],
                                 capture_output=True, text=True, cwd=ROOT, check=True).stdout
            old = str(Path(tmp) / "evaluate_then.py")
            Path(old).write_text(src)
        variants = [("now", None)] + ([(args.against_git, old)] if old else [])
        for name, module in variants:
            print(f"\n[{name}] {'structures':>10s} {'MB file':>8s} {'baseline MB':>12s} "
                  f"{'peak MB':>9s} {'growth MB':>10s} {'seconds':>8s} {'struct/s':>9s}")
            rows = []
            for n in sizes:
                path = make_file(blocks, n, Path(tmp) / f"data-{n}.xyz")
                r = measure(path, args, module)
                r["file_mb"] = path.stat().st_size / 1e6
                rows.append(r)
                print(f"[{name}] {n:10d} {r['file_mb']:8.1f} {r['baseline_mb']:12.0f} "
                      f"{r['peak_mb']:9.0f} {r['peak_mb'] - r['baseline_mb']:10.0f} "
                      f"{r['seconds']:8.1f} {n / r['seconds']:9.0f}", flush=True)
                path.unlink()
            if len(rows) > 1:
                a, b = rows[0], rows[-1]
                growth_a = max(a["peak_mb"] - a["baseline_mb"], 1.0)
                growth_b = b["peak_mb"] - b["baseline_mb"]
                print(f"[{name}] peak RSS at {sizes[-1]} vs {sizes[0]} structures: "
                      f"{b['peak_mb'] / a['peak_mb']:.2f}x ({a['peak_mb']:.0f} -> "
                      f"{b['peak_mb']:.0f} MB); above the baseline: {growth_a:.0f} -> "
                      f"{growth_b:.0f} MB ({growth_b / growth_a:.1f}x for "
                      f"{sizes[-1] / sizes[0]:.0f}x the structures)")


if __name__ == "__main__":
    main()
