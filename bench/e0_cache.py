"""Benchmark: the E0 preparation (the foundation model's predictions on the training set)
on the demo world, before and after it was cached in the workspace.

The E0 page's "Compute E0s" and every launch without a saved E0 choice evaluate the
foundation model on the training set. The predictions now come from the workspace's
prediction cache (``evaluate.evaluate_cached``: SHA-256 of the model file, the head and
the SHA-256 of the data file), so a reload, another tab or a launch after the E0 page
costs no model time. Measured in the same run, in one process:

- ``e0.prepare`` without the cache (the former way, every time) and with it (first, then
  again);
- the E0 page in Streamlit's AppTest: pressing "Compute E0s" in a new workspace, then a new
  session (a reload) that shows the result without pressing;
- a launch (``jobs.prepare`` of one naive run, E0s ``estimated``) in a workspace where the
  E0 page has not run, and one where it has.

    python bench/e0_cache.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _demo_setup import demo_workspace  # noqa: E402  (bench/, the script's own folder)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> int:
    tmp, demo = demo_workspace("mlipft-e0-cache-")
    from streamlit.testing.v1 import AppTest

    from mlipft_core import e0, jobs
    from mlipft_core.registry import load_model
    from mlipft_core.strategies import RunSpec
    from mlipft_core.workspace import Workspace

    model, train = demo["models"]["demo-gfn1-strong"], demo["sn2_train"]
    load_model(model)  # imports and the first unpickling outside the timings
    print(f"load average: {os.getloadavg()[0]:.1f}")
    rows = []
    t_old, a = timed(lambda: e0.prepare(train, model, trusted=True))
    ws = Workspace(tmp / "prepare-space")
    t_first, _ = timed(lambda: e0.prepare(train, model, trusted=True, workspace=ws))
    t_again, b = timed(lambda: e0.prepare(train, model, trusted=True, workspace=ws))
    assert (a.model_energy == b.model_energy).all() and a.foundation_e0 == b.foundation_e0
    rows += [("e0.prepare, no cache (former way)", t_old),
             ("e0.prepare, cache empty", t_first),
             ("e0.prepare, cached", t_again)]

    app = str(ROOT / "app.py")

    def e0_page() -> AppTest:
        at = AppTest.from_file(app, default_timeout=600)
        at.run()
        at.switch_page(str(ROOT / "views" / "e0.py"))
        at.run()
        assert not at.exception, at.exception
        return at

    at = e0_page()
    t_press, _ = timed(lambda: next(b for b in at.button if b.label == "Compute E0s")
                       .click().run())
    assert any(s.value == "Verdict" for s in at.subheader)
    t_reload, at2 = timed(e0_page)
    assert any(s.value == "Verdict" for s in at2.subheader), "no result after a reload"
    rows += [("E0 page: Compute E0s, new workspace", t_press),
             ("E0 page: reload, result shown", t_reload)]

    def launch(space: Path) -> float:
        os.environ["MLIPFT_WORKSPACE"] = str(space)
        spec = RunSpec("naive", model, train, e0s="estimated",
                       settings={"max_num_epochs": 1})
        t, rec = timed(lambda: jobs.prepare(spec, workspace=Workspace(space)))
        assert rec.status == "queued"
        return t

    t_launch_cold = launch(Path(tempfile.mkdtemp(prefix="mlipft-launch-")))
    t_launch_warm = launch(tmp / "workspace")  # where the E0 page ran
    rows += [("launch, no E0 predictions yet", t_launch_cold),
             ("launch after the E0 page", t_launch_warm)]
    for label, t in rows:
        print(f"{label:40s} {t:8.2f} s")
    print(f"ratio cached / former prepare: {t_again / t_old:.3f} ({t_old / t_again:.0f}x)")
    print(f"ratio reload / Compute E0s:    {t_reload / t_press:.3f} ({t_press / t_reload:.0f}x)")
    print(f"ratio launch warm / cold:      {t_launch_warm / t_launch_cold:.3f} "
          f"({t_launch_cold / t_launch_warm:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
