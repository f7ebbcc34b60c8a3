"""Benchmark: the Compare page's two slow steps, on the demo world.

1. The first comparison of fine-tuned runs with the foundation model (every model and head on
   the SN2 target test set and the held-out pretraining test set), with an empty prediction
   cache, and the same comparison again (cached, as after a reload).
2. The collapse probe (4 random compact 8-atom structures relaxed per model): ASE's ``FIRE``
   with one calculator call per structure and step (the former way) against the batched FIRE
   the workbench uses now, which moves all structures with one model call per step; and the
   probe again from its cache.

    python bench/compare_speed.py [--epochs 1]

The runs are trained first (not timed). Prints times and ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlipft-cmp-"))
    os.environ["MLIPFT_WORKSPACE"] = str(tmp / "workspace")

    import numpy as np
    from ase.io import read, write
    from ase.optimize import FIRE

    from mlipft_core import jobs, probes
    from mlipft_core.compare import compare, resolve_models
    from mlipft_core.demo import demo_paths
    from mlipft_core.strategies import RunSpec

    demo = demo_paths()
    fm = demo["models"]["demo-gfn1-strong"]
    write(tmp / "train.xyz", read(demo["sn2_train"], ":30"))
    strategies = ["naive", "freeze-b", "lora", "multihead-replay"]
    recs = jobs.submit_sweep([RunSpec(s, fm, str(tmp / "train.xyz"),
                                      replay_file=demo["replay_pool"],
                                      settings={"max_num_epochs": args.epochs,
                                                "num_samples_pt": 20}) for s in strategies])
    for r in recs:
        assert jobs.wait(r.id, timeout=3600).status == "done"
    refs = resolve_models([r.id for r in recs])

    t0 = time.perf_counter()
    rows, _ = compare(refs, demo["sn2_test"], demo["pretrain_test"])
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    compare(refs, demo["sn2_test"], demo["pretrain_test"])
    t_again = time.perf_counter() - t0
    print(f"comparison of {len(recs)} runs + foundation ({len(rows)} model heads)")
    print(f"  first (empty cache): {t_first:7.1f} s  ({t_first / len(rows):.1f} s per model head)")
    print(f"  again (cached):      {t_again:7.2f} s  ratio {t_again / t_first:.3f}")

    elements = ["C", "Cl", "F", "H"]
    models = [fm] + [r.path for r in refs]
    t0 = time.perf_counter()
    ase_min = []
    for m in models:
        calc = probes._calculator(m, None, True)
        rng = np.random.default_rng(0)
        for _ in range(4):
            a = probes.random_compact(elements, 8, rng)
            a.calc = calc
            FIRE(a, logfile=None, maxstep=0.2).run(fmax=0.05, steps=100)
            d = a.get_all_distances()
            ase_min.append(float(d[np.triu_indices(8, 1)].min()))
    t_ase = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched_min = []
    for m in models:
        res = probes.collapse_probe_cached(m, elements, trusted=True, n_structures=4)
        batched_min += res.min_distance_per_structure
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    for m in models:
        probes.collapse_probe_cached(m, elements, trusted=True, n_structures=4)
    t_cached = time.perf_counter() - t0
    diff = max(abs(a - b) for a, b in zip(ase_min, batched_min))
    print(f"collapse probe, {len(models)} models x 4 structures")
    print(f"  ASE FIRE per structure: {t_ase:7.1f} s")
    print(f"  batched FIRE:           {t_batched:7.1f} s  ratio {t_batched / t_ase:.2f}")
    print(f"  cached:                 {t_cached:7.2f} s")
    print(f"  largest difference in the closest approach reached: {diff:.3f} Å")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
