"""Serve the app for real and open it in headless Chromium (Debian's, no downloaded browser).

Every request that does not go to localhost is aborted and recorded, which proves that the
pages (3D viewer included) work offline.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mlipft_core.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless",
         "true", "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the app did not start: " + proc.stdout.read().decode()[-2000:])
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def finished_run(tmp_path):
    """One short real fine-tuning run (naive, 1 epoch) for the Compare page."""
    from ase.io import read, write

    from mlipft_core import jobs
    from mlipft_core.demo import demo_paths
    from mlipft_core.strategies import RunSpec

    demo = demo_paths()
    write(tmp_path / "train.xyz", read(demo["sn2_train"], ":12"))
    rec = jobs.submit(RunSpec("naive", demo["models"]["demo-gfn1-strong"],
                              str(tmp_path / "train.xyz"), settings={"max_num_epochs": 1}))
    rec = jobs.wait(rec.id, timeout=600)
    assert rec.status == "done", rec.reason
    return rec


def wait_rendered(page, timeout: float = 90_000) -> None:
    page.wait_for_selector('[data-testid="stMainBlockContainer"] h1', timeout=timeout)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_app_in_headless_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    Workspace().set(model="demo-gfn1-strong", model_label="Demo strong (GFN1-xTB)")
    run = finished_run(tmp_path)
    outside: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})

        def route(r):
            host = r.request.url.split("/")[2].split(":")[0]
            if host in ("127.0.0.1", "localhost"):
                r.continue_()
            else:
                outside.append(r.request.url)
                r.abort()

        ctx.route("**/*", route)
        page = ctx.new_page()
        # a deep link into the fresh server goes through the app's navigation
        page.goto(server + "/data")
        wait_rendered(page)
        assert page.inner_text("h1") == "Data"
        assert "Current choices" in page.locator('[data-testid="stSidebar"]').inner_text()
        page.goto(server)
        wait_rendered(page)
        assert "MLIP fine-tuning workbench" in page.inner_text("h1")
        nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
        assert "Foundation model" in nav and "Data" in nav
        page.screenshot(path=str(tmp_path / "home.png"))

        page.get_by_role("link", name="Foundation model").first.click()
        page.wait_for_selector("text=E0 per element", timeout=90_000)
        wait_rendered(page)
        assert "Demo strong" in page.locator('[data-testid="stSidebar"]').inner_text()

        page.get_by_role("link", name="Data").first.click()
        page.wait_for_selector("text=Zero-shot evaluation", timeout=90_000)
        wait_rendered(page)
        # the 3D viewer drew into a canvas with the locally served 3Dmol.js
        frame = page.frame_locator('[data-testid="stIFrame"]').first
        frame.locator("canvas").first.wait_for(timeout=30_000)
        page.get_by_role("button", name="Evaluate").click()
        page.wait_for_selector("text=Force components", timeout=120_000)
        wait_rendered(page)
        assert page.locator(".js-plotly-plot").count() >= 4
        page.screenshot(path=str(tmp_path / "data.png"), full_page=True)

        page.get_by_role("link", name="Compare").first.click()
        page.wait_for_selector("text=Held-out pretraining test set", timeout=90_000)
        wait_rendered(page)
        main = page.locator('[data-testid="stMainBlockContainer"]').inner_text()
        assert run.id[-6:] in main, main[:1500]
        page.get_by_role("button", name="Compare", exact=True).click()
        page.wait_for_selector("text=Least forgetting", timeout=180_000)
        wait_rendered(page)
        assert page.locator(".js-plotly-plot").count() >= 4
        page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
        browser.close()
    assert outside == [], f"requests left the machine: {outside[:5]}"
