"""Benchmark: batched evaluation through mace's data loader against one ASE calculator call
per structure (MACECalculator), same model and data. Prints the speed-up (goal >= 3x on CPU).

    python bench/eval_speed.py [--model demo-gfn1-strong] [--data sn2_test]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo-gfn1-strong")
    parser.add_argument("--data", default="sn2_test", help="demo dataset key or extxyz path")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import torch
    from ase.io import read
    from mace.calculators import MACECalculator

    from mlipft_core.demo import demo_paths
    from mlipft_core.evaluate import predict
    from mlipft_core.registry import load_model, model_path

    paths = demo_paths()
    data = paths.get(args.data, args.data)
    frames = read(data, ":")
    path = str(model_path(args.model))
    net = load_model(path)
    dtype = str(next(net.parameters()).dtype).replace("torch.", "")
    calc = MACECalculator(model_paths=path, device="cpu", default_dtype=dtype)
    predict(net, frames[:4])  # warm-up both paths
    a = frames[0].copy()
    a.calc = calc
    a.get_forces()

    def batched():
        return predict(net, frames)[0]  # automatic batch size

    def per_structure():
        out = []
        for f in frames:
            b = f.copy()
            b.calc = calc
            out.append(b.get_potential_energy())
            b.get_forces()
        return np.array(out)

    tb, tp = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        eb = batched()
        tb.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ep = per_structure()
        tp.append(time.perf_counter() - t0)
    assert np.allclose(eb, ep, atol=5e-3), "the two paths disagree"
    print(f"{len(frames)} structures of {data}, model {args.model}, torch threads "
          f"{torch.get_num_threads()}")
    print(f"batched (mace data loader) {min(tb):7.3f} s   per-structure MACECalculator "
          f"{min(tp):7.3f} s   (best of {args.repeats})")
    print(f"speed-up: {min(tp) / min(tb):.2f}x (goal >= 3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
