"""Benchmark: opening the Data page on the demo world, in Streamlit's AppTest.

The first open of the Data page in a server process used to import torch and mace and
unpickle the chosen model, only to read its elements and heads (element coverage, the head
choice), and resolving a model name imported mace just for the name of its cache folder.
The inspection is now kept in the workspace by the model file's SHA-256, and the cache folder
is worked out without importing mace, so a fresh process (a restarted server, another
worker) opens the page without torch once the workspace has inspected the model.

Each open runs in a fresh Python process (nothing in memory), as after a server restart:

- ``cold``: a workspace that has never inspected the model (what the first open always was);
- ``warm``: the same workspace again (the inspection read from the workspace);
- ``same process``: a second session in the warm process (Streamlit's caches in memory).

    python bench/data_page_open.py

Prints each time, whether torch was imported, and the ratios.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _demo_setup import demo_workspace  # noqa: E402  (bench/, the script's own folder)

CHILD = r"""
import json, sys, time
from streamlit.testing.v1 import AppTest
app = sys.argv[1]
def open_page():
    at = AppTest.from_file(app, default_timeout=600)
    at.run()
    at.switch_page(str(__import__("pathlib").Path(app).parent / "views" / "data.py"))
    t0 = time.perf_counter()
    at.run()
    assert not at.exception, at.exception
    assert any("Zero-shot evaluation" in s.value for s in at.subheader)
    return time.perf_counter() - t0
first = open_page()
torch = "torch" in sys.modules
second = open_page()
print(json.dumps({"first": first, "torch": torch, "second": second}))
"""


def fresh_process() -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "app.py")], cwd=ROOT,
                         capture_output=True, text=True, env=os.environ.copy(), timeout=900)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    demo_workspace("mlipft-data-open-")
    cold = fresh_process()
    warm = fresh_process()
    print(f"{'Data page open':34s} {'time (s)':>9s}  torch imported")
    print(f"{'cold (fresh process, new space)':34s} {cold['first']:9.2f}  {cold['torch']}")
    print(f"{'warm (fresh process, same space)':34s} {warm['first']:9.2f}  {warm['torch']}")
    print(f"{'same process, second session':34s} {warm['second']:9.2f}")
    print(f"ratio warm / cold: {warm['first'] / cold['first']:.2f} "
          f"({cold['first'] / warm['first']:.1f}x faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
