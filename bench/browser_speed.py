"""Benchmark: what a user waits for in a real browser (headless Debian Chromium).

Serves the app on the demo world (strong demo model, bundled SN2 split, one finished 1-epoch
naive run), then times in Chromium:

- ``new tab``: opening a page in a fresh browser context until its content is drawn;
- ``widget``: one widget change until the changed content is drawn: the epochs field on the
  Fine-tuning runs page, the "Evaluate on" choice on the Data page, the overlay toggle on
  the Compare page, and stepping to the next structure in the Data page's 3D viewer (in the
  browser, no server round trip).

    python bench/browser_speed.py [--repeat 3]

Needs /usr/bin/chromium and the playwright package (the test tools). Headless Chromium draws
WebGL (plotly's scattergl, 3Dmol) in software, so chart-heavy pages are slower here than in a
desktop browser with a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _demo_setup import demo_workspace  # noqa: E402  (bench/, the script's own folder)

IDLE = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tmp, demo = demo_workspace("mlipft-browser-")

    from ase.io import read, write
    from playwright.sync_api import sync_playwright

    from mlipft_core import jobs
    from mlipft_core.strategies import RunSpec
    from mlipft_core.workspace import Workspace

    ws = Workspace()
    write(tmp / "train.xyz", read(demo["sn2_train"], ":20"))
    rec = jobs.submit(RunSpec("naive", demo["models"]["demo-gfn1-strong"],
                              str(tmp / "train.xyz"), settings={"max_num_epochs": 1}))
    assert jobs.wait(rec.id, timeout=900).status == "done"
    ws.set(compare={"runs": [rec.id], "target": demo["sn2_test"],
                    "pretrain": demo["pretrain_test"]})

    port = 8611
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
                               "--server.headless", "true", "--server.port", str(port)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    results: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        results.setdefault(name, []).append(seconds)

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            warm = browser.new_context().new_page()  # first load: imports, model reading
            for path, marker in (("runs", "will be queued"), ("data", "Zero-shot evaluation"),
                                 ("compare", "Least forgetting")):
                warm.goto(f"{url}/{path}")
                warm.wait_for_selector(f"text={marker}", timeout=600_000)
            for _ in range(args.repeat):
                for path, marker in (("runs", "will be queued"), ("data", "Zero-shot evaluation"),
                                     ("compare", "Least forgetting")):
                    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                    t0 = time.perf_counter()
                    page.goto(f"{url}/{path}")
                    page.wait_for_selector(f"text={marker}", timeout=120_000)
                    page.wait_for_function(IDLE, timeout=120_000)
                    record(f"new tab: {path}", time.perf_counter() - t0)
                    if path == "runs":
                        for n in ("3", "4"):
                            box = page.get_by_label("Epochs")
                            t0 = time.perf_counter()
                            box.fill(n)
                            box.press("Tab")
                            page.wait_for_function(IDLE, timeout=60_000)
                            record("widget: epochs (runs page)", time.perf_counter() - t0)
                    elif path == "data":
                        frame = page.frame_locator('[data-testid="stIFrame"]').first
                        frame.locator("canvas").first.wait_for(timeout=60_000)
                        t0 = time.perf_counter()
                        frame.locator("#next").click()
                        frame.locator("#label", has_text="#1:").wait_for(timeout=30_000)
                        record("widget: next structure (data page viewer)",
                               time.perf_counter() - t0)
                        box = page.get_by_role("combobox", name="Evaluate on", exact=True)
                        t0 = time.perf_counter()
                        box.click()
                        page.keyboard.type("train")
                        page.keyboard.press("Enter")
                        page.wait_for_function(IDLE, timeout=60_000)
                        record("widget: evaluate on (data page)", time.perf_counter() - t0)
                    else:
                        t0 = time.perf_counter()
                        page.get_by_text("Overlay models in one plot").click()
                        page.wait_for_function(
                            "() => document.body.innerText.includes('(RMSE')", timeout=60_000)
                        record("widget: overlay toggle (compare page)", time.perf_counter() - t0)
                    page.context.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"{'what':45s} {'median (s)':>10s}  goal 1 s")
    for name, vals in results.items():
        med = statistics.median(vals)
        print(f"{name:45s} {med:10.2f}  {med / 1.0:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
