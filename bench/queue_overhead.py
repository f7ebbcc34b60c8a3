"""Benchmark: a run through each executor against the same configuration run directly.

Prints the wall-time ratios (local executor / direct ``mace_run_train``, goal at most 1.05;
SLURM executor / direct, on the cluster ``sbatch`` reaches, when there is one) and the final
validation errors, which must agree (same seed, same data, same threads). Each executor's time
runs from the call that submits the run to the moment its end is recorded: preparation
(foundation copy with the E0s), starting the dispatcher or the SLURM job, and the runner.

    python bench/queue_overhead.py [--configs 60] [--epochs 5] [--no-slurm]
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
    parser.add_argument("--no-slurm", action="store_true", help="skip the SLURM executor")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlipft-bench-"))
    os.environ["MLIPFT_WORKSPACE"] = str(tmp / "workspace")
    os.environ["MLIPFT_CPU_SLOTS"] = "1"  # one run at a time: all cores for it, as direct

    from ase.io import read, write

    from mlipft_core import jobs
    from mlipft_core.demo import demo_paths
    from mlipft_core.jobs import slurm
    from mlipft_core.jobs.local import threads_per_run
    from mlipft_core.strategies import RunSpec

    demo = demo_paths()
    write(tmp / "train.xyz", read(demo["sn2_train"], f":{args.configs}"))
    write(tmp / "valid.xyz", read(demo["sn2_valid"], ":20"))
    spec = RunSpec("naive", demo["models"]["demo-gfn1-strong"], str(tmp / "train.xyz"),
                   str(tmp / "valid.xyz"), e0s="estimated",
                   settings={"max_num_epochs": args.epochs})
    e0 = jobs.resolve_e0s(spec)
    threads = threads_per_run("cpu")

    def through(executor: str) -> tuple[float, tuple[float, float], Path]:
        t0 = time.perf_counter()
        rec = jobs.submit(spec, e0_values=e0, executor=executor,
                          slurm={"cpus": threads, "time_min": 60})
        rec = jobs.wait(rec.id, poll=0.1)
        t = time.perf_counter() - t0
        assert rec.status == "done", rec.reason
        folder = Path(os.environ["MLIPFT_WORKSPACE"]) / "runs" / rec.id
        return t, final_errors((folder / "train.log").read_text()), folder

    t_queue, q_err, folder = through("local")
    use_slurm = not args.no_slurm and slurm.available()[0]
    if use_slurm:
        t_slurm, s_err, _ = through("slurm")

    import yaml

    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["work_dir"] = str(tmp / "direct")  # same inputs (foundation copy included), new outputs
    (tmp / "direct").mkdir()
    (tmp / "direct.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mace.cli.run_train", "--config",
                           str(tmp / "direct.yaml")], cwd=tmp / "direct", env=env,
                          capture_output=True, text=True)
    t_direct = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    d_err = final_errors(proc.stdout + proc.stderr)

    def agree(a: tuple[float, float]) -> bool:
        return abs(a[0] - d_err[0]) <= 0.01 * max(1.0, d_err[0]) and \
            abs(a[1] - d_err[1]) <= 0.01 * max(1.0, d_err[1])

    print(f"configurations {args.configs}, epochs {args.epochs}, threads {threads}")
    print(f"local   {t_queue:7.1f} s   final valid RMSE "
          f"E {q_err[0]:.2f} meV/atom, F {q_err[1]:.2f} meV/Å")
    if use_slurm:
        print(f"slurm   {t_slurm:7.1f} s   final valid RMSE "
              f"E {s_err[0]:.2f} meV/atom, F {s_err[1]:.2f} meV/Å")
    print(f"direct  {t_direct:7.1f} s   final valid RMSE "
          f"E {d_err[0]:.2f} meV/atom, F {d_err[1]:.2f} meV/Å")
    print(f"wall-time ratio local/direct: {t_queue / t_direct:.3f} (goal <= 1.05); "
          f"final errors agree: {agree(q_err)}")
    if use_slurm:
        print(f"wall-time ratio slurm/direct: {t_slurm / t_direct:.3f}; "
              f"final errors agree: {agree(s_err)}")
    else:
        print("SLURM executor not measured: " + ("--no-slurm" if args.no_slurm
                                                 else slurm.available()[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
