"""Benchmark: steps per second of the workbench's MD (with its stability watch and frame
recording) against bare ASE Langevin with mace's MACECalculator, same structure, model,
time step and thread count. Prints the ratio (goal at least 0.9).

    python bench/md_speed.py [--steps 200] [--model demo-gfn1-strong]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--model", default="demo-gfn1-strong")
    parser.add_argument("--data", default="water_test")
    args = parser.parse_args()

    import numpy as np
    import torch
    from ase import units
    from ase.io import read
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from mlipft_core.demo import demo_paths
    from mlipft_core.md import MDSettings, calculator, run_md

    structure = read(demo_paths()[args.data], 0)
    calc = calculator(args.model)
    a = structure.copy()
    a.calc = calc
    a.get_forces()  # warm-up

    bare = structure.copy()
    bare.calc = calc
    MaxwellBoltzmannDistribution(bare, temperature_K=300, rng=np.random.default_rng(0))
    dyn = Langevin(bare, timestep=0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs,
                   fixcm=False, rng=np.random.default_rng(0))
    t0 = time.perf_counter()
    dyn.run(args.steps)
    bare_sps = args.steps / (time.perf_counter() - t0)

    res = run_md(calc, structure, MDSettings(steps=args.steps, timestep_fs=0.5, interval=10))
    print(f"{len(structure)} atoms ({args.data}), {args.steps} steps, model {args.model}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"bare ASE + MACECalculator: {bare_sps:6.2f} steps/s")
    print(f"workbench MD (watch + frames every 10 steps): {res.steps_per_second:6.2f} steps/s "
          f"({res.failure or 'stable'})")
    print(f"ratio: {res.steps_per_second / bare_sps:.3f} (goal >= 0.9)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
