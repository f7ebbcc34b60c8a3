"""Benchmark: a run launched through the queue against the same configuration run directly.

Prints the wall-time ratio (queue / direct; goal at most 1.05) and the final validation errors
of both, which must agree (same seed, same data, same threads).

    python bench/queue_overhead.py [--configs 60] [--epochs 5]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def final_errors(log_text: str) -> tuple[float, float]:
    m = re.findall(r"Epoch \d+: head: Default, loss=\S+, RMSE_E_per_atom=\s*([\d.]+) meV, "
                   r"RMSE_F=\s*([\d.]+) meV", log_text)
    e, f = m[-1]
    return float(e), float(f)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlipft-bench-"))
    os.environ["MLIPFT_WORKSPACE"] = str(tmp / "workspace")
    os.environ["MLIPFT_CPU_SLOTS"] = "1"  # one run at a time: all cores for it, as direct

    from ase.io import read, write

    from mlipft_core import jobs
    from mlipft_core.demo import demo_paths
    from mlipft_core.jobs import worker
    from mlipft_core.strategies import RunSpec

    demo = demo_paths()
    write(tmp / "train.xyz", read(demo["sn2_train"], f":{args.configs}"))
    write(tmp / "valid.xyz", read(demo["sn2_valid"], ":20"))
    spec = RunSpec("naive", demo["models"]["demo-gfn1-strong"], str(tmp / "train.xyz"),
                   str(tmp / "valid.xyz"), e0s="estimated",
                   settings={"max_num_epochs": args.epochs})
    e0 = jobs.resolve_e0s(spec)
    worker.ensure_consumer(Path(os.environ["MLIPFT_WORKSPACE"]), "cpu")
    time.sleep(3)  # let the consumer start: its start-up is not the run's cost

    t0 = time.perf_counter()
    rec = jobs.submit(spec, e0_values=e0)
    rec = jobs.wait(rec.id, poll=0.2)
    t_queue = time.perf_counter() - t0
    assert rec.status == "done", rec.reason
    folder = Path(os.environ["MLIPFT_WORKSPACE"]) / "runs" / rec.id
    q_err = final_errors((folder / "train.log").read_text())

    import yaml

    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["work_dir"] = str(tmp / "direct")  # same inputs (foundation copy included), new outputs
    (tmp / "direct").mkdir()
    (tmp / "direct.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    threads = str(worker.threads_per_run("cpu"))
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mace.cli.run_train", "--config",
                           str(tmp / "direct.yaml")], cwd=tmp / "direct", env=env,
                          capture_output=True, text=True)
    t_direct = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    d_err = final_errors(proc.stdout + proc.stderr)

    pid = int(worker.consumer_pidfile(Path(os.environ["MLIPFT_WORKSPACE"]), "cpu").read_text())
    os.killpg(pid, 9)
    print(f"configurations {args.configs}, epochs {args.epochs}, threads {threads}")
    print(f"queue   {t_queue:7.1f} s   final valid RMSE E {q_err[0]:.2f} meV/atom, F {q_err[1]:.2f} meV/Å")
    print(f"direct  {t_direct:7.1f} s   final valid RMSE E {d_err[0]:.2f} meV/atom, F {d_err[1]:.2f} meV/Å")
    print(f"wall-time ratio queue/direct: {t_queue / t_direct:.3f} (goal <= 1.05)")
    same = abs(q_err[0] - d_err[0]) <= 0.01 * max(1.0, d_err[0]) and \
        abs(q_err[1] - d_err[1]) <= 0.01 * max(1.0, d_err[1])
    print(f"final errors agree: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
