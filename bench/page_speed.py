"""Benchmark: how long each page takes to draw, on the demo world, in Streamlit's AppTest.

For every page it times (server-side script time, which is what a user waits for):

- ``cold``: the first run in a fresh process (imports, model loading, caches empty);
- ``new tab``: a new browser session once the process is warm (cached data kept);
- ``widget``: a rerun after one widget change on cached data (goal: under 1 s).

    python bench/page_speed.py [--repeat 3]

Prints a table and, per page, the widget-change time against the 1 s goal.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _demo_setup import demo_workspace  # noqa: E402  (bench/, the script's own folder)

APP = str(ROOT / "app.py")


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    demo_workspace("mlipft-pages-")

    from streamlit.testing.v1 import AppTest

    def open_page(page: str | None) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=600)
        at.run()
        if page:
            at.switch_page(str(ROOT / "views" / page))
            at.run()
        assert not at.exception, at.exception
        return at

    def change(at: AppTest, page: str) -> None:
        """One widget change typical of the page."""
        if page == "data.py":
            box = next(s for s in at.selectbox if s.label == "Evaluate on")
            box.set_value("train" if box.value != "train" else "test").run()
        elif page == "e0.py":
            at.toggle[0].set_value(not at.toggle[0].value).run()
        elif page == "runs.py":
            at.number_input[0].set_value(at.number_input[0].value + 1).run()
        elif page == "md.py":
            at.number_input[2].set_value(at.number_input[2].value + 1).run()
        elif page == "foundation_model.py":
            at.radio(key="model_source").set_value("Registry").run()
        else:
            at.run()
        assert not at.exception, at.exception

    def prepare(at: AppTest, page: str) -> None:
        """Bring the page to its cached state (e.g. E0s computed)."""
        if page == "e0.py":
            next(b for b in at.button if b.label == "Compute E0s").click().run()

    pages = ["home.py", "foundation_model.py", "data.py", "e0.py", "runs.py", "md.py"]
    rows = []
    for page in pages:
        target = None if page == "home.py" else page
        cold = timed(lambda target=target: open_page(target))
        tabs, widgets = [], []
        for _ in range(args.repeat):
            holder = {}
            tabs.append(timed(lambda holder=holder, target=target: holder.setdefault(
                "at", open_page(target))))
            at = holder["at"]
            prepare(at, page)
            widgets.append(timed(lambda at=at, page=page: change(at, page)))
        rows.append((page, cold, statistics.median(tabs), statistics.median(widgets)))
    print(f"{'page':22s} {'cold (s)':>9s} {'new tab (s)':>12s} {'widget (s)':>11s}  goal")
    for page, cold, tab, widget in rows:
        print(f"{page:22s} {cold:9.2f} {tab:12.2f} {widget:11.2f}  "
              f"{'ok' if widget < 1.0 else 'SLOW'} ({widget / 1.0:.2f}x of 1 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
