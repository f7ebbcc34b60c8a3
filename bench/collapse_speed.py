"""Benchmark: the collapse probe of the Compare page (4 random compact 8-atom structures of
the target's elements relaxed with batched FIRE, 100 steps), on the demo models.

A step is one model call on 32 atoms: hundreds of tiny torch operations. With torch's
default intra-op threads (one per core) every operation makes the threads meet, and on a
machine whose cores are busy (training runs, other sessions) each meeting waits for a
descheduled thread. The probe now runs its steps on one thread. Measured in the same run:

- ``default threads``: the former way (torch's default number of threads);
- ``one thread``: the probe as it runs now;
- ``cached``: the probe again, from the workspace (keyed by model hash, head and settings).

The probe's parameters (structures, atoms, steps, threshold) are unchanged, and so is its
verdict: the script checks that both ways give the same collapsed count and closest
approaches (to 0.01 Å; one thread only changes the order of floating-point sums).

    python bench/collapse_speed.py [--models demo-gfn1-strong,demo-gfn1-weak] [--steps 100]

Prints the load average too: the gain grows with it (on an idle machine it is small).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@contextmanager
def _default_threads(n: int):
    yield


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo-gfn1-strong")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    os.environ["MLIPFT_WORKSPACE"] = tempfile.mkdtemp(prefix="mlipft-collapse-")

    import torch

    from mlipft_core import probes
    from mlipft_core.registry import load_model

    elements = ["C", "Cl", "F", "H"]  # the SN2 target's
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    settings = {"n_structures": 4, "steps": args.steps}
    for m in models:
        load_model(m)  # imports and first load outside the timings
    print(f"torch threads by default: {torch.get_num_threads()}, load average before: "
          f"{os.getloadavg()[0]:.1f}")
    new_way = probes._torch_threads
    times: dict[str, float] = {}
    results: dict[str, list] = {}
    for label, threads in (("default threads", _default_threads), ("one thread", new_way)):
        probes._torch_threads = threads
        t0 = time.perf_counter()
        results[label] = [probes.collapse_probe(m, elements, **settings) for m in models]
        times[label] = time.perf_counter() - t0
    probes._torch_threads = new_way
    for m in models:
        probes.collapse_probe_cached(m, elements, **settings)
    t0 = time.perf_counter()
    cached = [probes.collapse_probe_cached(m, elements, **settings) for m in models]
    times["cached"] = time.perf_counter() - t0
    old, new = results["default threads"], results["one thread"]
    same = all(a.collapsed == b.collapsed and max(
        abs(x - y) for x, y in zip(a.min_distance_per_structure, b.min_distance_per_structure))
        < 0.01 for a, b in zip(old, new))
    same_cached = all(a.to_dict() == b.to_dict() for a, b in zip(new, cached))
    print(f"collapse probe, {len(models)} model(s) x 4 structures x {args.steps} steps "
          f"(load average after: {os.getloadavg()[0]:.1f})")
    print(f"  default threads: {times['default threads']:8.1f} s")
    print(f"  one thread:      {times['one thread']:8.1f} s  ratio "
          f"{times['one thread'] / times['default threads']:.2f} "
          f"({times['default threads'] / times['one thread']:.1f}x faster)")
    print(f"  cached:          {times['cached']:8.3f} s")
    for m, a, b in zip(models, old, new):
        print(f"  {m}: collapsed {a.collapsed} / {b.collapsed} of {a.n_structures}, closest "
              f"approach {a.min_distance:.3f} / {b.min_distance:.3f} Å (default / one thread)")
    print(f"  same verdict: {same}; cached equals computed: {same_cached}")
    return 0 if same and same_cached else 1


if __name__ == "__main__":
    raise SystemExit(main())
