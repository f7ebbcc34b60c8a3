"""Benchmark: time to render the Compare page again for 8 runs once predictions are cached
(goal under 2 s), against its first, computing render.

Creates the seven strategies plus the from-scratch baseline (1 epoch on a small SN2 subset)
in a temporary workspace, then renders the page with Streamlit's AppTest.

    python bench/compare_render.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="mlipft-bench-"))
    os.environ["MLIPFT_WORKSPACE"] = str(tmp / "workspace")
    from ase.io import read, write
    from streamlit.testing.v1 import AppTest

    from mlipft_core import jobs
    from mlipft_core.demo import demo_paths
    from mlipft_core.strategies import STRATEGIES, RunSpec

    demo = demo_paths()
    write(tmp / "train.xyz", read(demo["sn2_train"], ":20"))
    specs = [RunSpec(n, demo["models"]["demo-gfn1-weak"], str(tmp / "train.xyz"),
                     replay_file=demo["replay_pool"],
                     settings={"max_num_epochs": 1, "num_samples_pt": 20}) for n in STRATEGIES]
    recs = jobs.submit_sweep(specs)
    for r in recs:
        assert jobs.wait(r.id, timeout=1800).status == "done"

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=1200)
    at.run()
    at.switch_page(str(ROOT / "pages" / "compare.py"))
    at.run()
    button = next(b for b in at.button if b.label == "Compare")
    t0 = time.perf_counter()
    button.click().run()
    first = time.perf_counter() - t0
    assert not at.exception, at.exception
    # a new session (e.g. a browser reload): predictions come from the workspace cache
    at2 = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at2.run()
    at2.switch_page(str(ROOT / "pages" / "compare.py"))
    at2.run()
    warm = next(b for b in at2.button if b.label == "Compare")
    t0 = time.perf_counter()
    warm.click().run()
    cached = time.perf_counter() - t0
    t0 = time.perf_counter()
    at2.run()
    rerun = time.perf_counter() - t0
    print(f"{len(recs)} runs (+ foundation), target {demo['sn2_test']}")
    print(f"first render (computing): {first:6.2f} s")
    print(f"new session, cached predictions: {cached:6.2f} s (goal < 2 s)")
    print(f"same session, rerun: {rerun:6.2f} s")
    print(f"ratio cached/first: {cached / first:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
