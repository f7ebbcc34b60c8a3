"""Serve the app for real and open it in headless Chromium (Debian's, no downloaded browser).

Every request that does not go to localhost is aborted and recorded, which proves that the
pages (3D viewer included) work offline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from ase.io import read, write

from bench._workshop_session import CHROMIUM, Server
from mlipft_core import jobs, workshop
from mlipft_core.demo import demo_paths
from mlipft_core.jobs.slurm import available as slurm_available
from mlipft_core.strategies import RunSpec
from mlipft_core.workspace import Workspace
from mlipft_ui.labels import run_labels

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.browser


@pytest.fixture
def server():
    """The app served for real on a free port, over the test's workspace."""
    served = Server(Workspace().root)
    yield served.url
    served.stop()


def finished_run(tmp_path):
    """One short real fine-tuning run (naive, 1 epoch) for the Compare page."""
    demo = demo_paths()
    write(tmp_path / "train.xyz", read(demo["sn2_train"], ":12"))
    rec = jobs.submit(RunSpec("naive", demo["models"]["demo-gfn1-strong"],
                              str(tmp_path / "train.xyz"), settings={"max_num_epochs": 1}))
    rec = jobs.wait(rec.id, timeout=600)
    assert rec.status == "done", rec.reason
    return rec


#: the text of every data-grid cell on the page (the grid draws on a canvas; its cells are
#: also in the DOM for accessibility)
GRID_TEXT = ("(() => Array.from(document.querySelectorAll('[data-testid=\"stDataFrame\"] "
             "[role=\"gridcell\"]')).map(e => e.innerText).join('|'))()")


#: how long one action (a click, a fill) may wait for the page: on a loaded machine (two test
#: workers, several browser contexts, a server doing model work) a renderer can be starved for
#: well over Playwright's default 30 s
ACTION_TIMEOUT_MS = 120_000


def open_page(browser, **context):
    """A new page in a context of its own (its own cookies: another person), with the
    action timeout above."""
    ctx = browser.new_context(**context)
    ctx.set_default_timeout(ACTION_TIMEOUT_MS)
    return ctx.new_page()


def wait_rendered(page, timeout: float = 90_000) -> None:
    page.wait_for_selector('[data-testid="stMainBlockContainer"] h1', timeout=timeout)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
@pytest.mark.slow
def test_app_in_headless_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright  # optional: only where a browser test runs

    Workspace().set(model="demo-gfn1-strong", model_label="Demo strong (GFN1-xTB)")
    run = finished_run(tmp_path)
    outside: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        ctx.set_default_timeout(ACTION_TIMEOUT_MS)

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
        # browsing structures happens inside the viewer, without a rerun of the page
        label = frame.locator("#label")
        first = label.inner_text()
        frame.locator("#next").click()
        assert label.inner_text() != first and label.inner_text().startswith("#1:")
        page.get_by_role("button", name="Evaluate").click()
        page.wait_for_selector("text=Force components", timeout=120_000)
        wait_rendered(page)
        # plotly draws its charts a moment after the script ended: wait for the fourth
        page.locator(".js-plotly-plot").nth(3).wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "data.png"), full_page=True)

        page.get_by_role("link", name="Compare").first.click()
        page.wait_for_selector("text=Held-out pretraining test set", timeout=90_000)
        wait_rendered(page)
        main = page.locator('[data-testid="stMainBlockContainer"]').inner_text()
        shown_as = run_labels(jobs.list_runs())[run.id]  # the run in words, not its id
        assert shown_as in main and run.id not in main, main[:1500]
        page.get_by_role("button", name="Compare", exact=True).click()
        page.wait_for_selector("text=Least forgetting", timeout=180_000)
        wait_rendered(page)
        # plotly draws its charts a moment after the script ended: wait for the fourth
        page.locator(".js-plotly-plot").nth(3).wait_for(timeout=60_000)
        page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
        # the selection and the results survive a reload, without pressing Compare again
        page.reload()
        page.wait_for_selector("text=Least forgetting", timeout=120_000)
        wait_rendered(page)
        assert shown_as in page.locator('[data-testid="stMultiSelect"]').first.inner_text()

        # MD: the results appear when the runs end, without a reload
        page.get_by_role("link", name="Molecular dynamics").first.click()
        page.wait_for_selector("text=Run MD for the chosen models", timeout=90_000)
        wait_rendered(page)
        steps = page.get_by_label("Steps", exact=True)
        steps.fill("30")
        steps.press("Tab")
        wait_rendered(page)
        page.get_by_role("button", name="Run MD for the chosen models").click()
        page.wait_for_selector("text=Running…", timeout=60_000)
        page.wait_for_selector("h3:has-text('Stability')", timeout=300_000)
        page.wait_for_selector("h3:has-text('Radial distribution functions')", timeout=60_000)
        wait_rendered(page)
        # trajectories drawn: the viewers' frames come with the results (a moment after the
        # headers when the page draws itself again once the runs ended)
        page.locator('[data-testid="stIFrame"]').first.wait_for(timeout=60_000)
        assert page.locator('[data-testid="stIFrame"]').count() >= 1
        page.screenshot(path=str(tmp_path / "md.png"), full_page=True)
        browser.close()
    assert outside == [], f"requests left the machine: {outside[:5]}"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
@pytest.mark.slow
def test_runs_page_local_and_slurm_sweeps_in_one_table(server, tmp_path, tiny_split):
    """A sweep launched on this machine and on SLURM from the page: one table with where each
    run goes and live progress; Enter in a field launches nothing; one run is cancelled."""
    from playwright.sync_api import sync_playwright  # optional: only where a browser test runs

    slurm_ok, why = slurm_available()
    ws = Workspace()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        page = open_page(browser, viewport={"width": 1500, "height": 1100})
        page.goto(server + "/runs")
        wait_rendered(page)
        main = page.locator('[data-testid="stMainBlockContainer"]')
        epochs = page.get_by_role("spinbutton", name="Epochs")
        epochs.fill("5000")
        epochs.press("Enter")
        wait_rendered(page)
        lrs = page.get_by_label("Learning rates to sweep (comma-separated; empty: the "
                                "table's value for each strategy)")
        lrs.fill("1e-3,2e-3")
        lrs.press("Enter")  # Enter applies the value; it must not launch
        wait_rendered(page)
        page.wait_for_selector("text=2 run(s)", timeout=30_000)
        time.sleep(1)
        assert jobs.list_runs(ws) == []
        page.get_by_role("button", name="Launch").click()
        page.wait_for_selector("text=Queued 2 runs", timeout=120_000)
        if slurm_ok:
            page.get_by_test_id("stRadioGroup").get_by_text("a SLURM cluster", exact=True).click()
            wait_rendered(page)
            page.get_by_label("CPUs per run").fill("1")
            page.get_by_label("CPUs per run").press("Tab")
            wait_rendered(page)
            page.wait_for_selector("text=will be queued on SLURM", timeout=30_000)
            page.get_by_role("button", name="Launch").click()
            page.wait_for_selector("text=as SLURM job(s)", timeout=120_000)
        recs = jobs.list_runs(ws)
        assert len(recs) == (4 if slurm_ok else 2)
        # live progress: the table shows every run, where it runs, and moves on its own
        deadline = time.time() + 300
        while time.time() < deadline:
            if sum(1 for r in jobs.list_runs(ws) if r.status == "running" and
                   jobs.progress(r, ws).epoch is not None) >= (2 if slurm_ok else 1):
                break
            time.sleep(1)
        page.wait_for_function(GRID_TEXT + ".includes('this machine')", timeout=30_000)
        if slurm_ok:
            job = next(r.slurm_job_id for r in recs if r.executor == "slurm")
            page.wait_for_function(GRID_TEXT + f".includes('SLURM job {job}')",
                                   timeout=30_000)
        # the table moves on by itself: the epoch column changes without a reload
        before = page.evaluate(GRID_TEXT)
        page.wait_for_function(GRID_TEXT + " !== " + repr(before), timeout=60_000)
        page.locator('[data-testid="stDataFrame"]').last.scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "runs.png"))
        # cancel the newest run (selected by default) through the page, the others from the
        # command line
        newest = max(recs, key=lambda r: (r.created, r.id))
        box = page.get_by_role("combobox", name="Run", exact=True)
        box.scroll_into_view_if_needed()
        shown = box.evaluate("e => (e.value || '') + ' ' + "
                             "e.closest('[data-testid=\"stSelectbox\"]').textContent")
        assert run_labels(jobs.list_runs(ws))[newest.id] in shown, shown
        page.get_by_role("button", name="Cancel").click()
        wait_rendered(page)
        assert jobs.wait(newest.id, timeout=120).status == "cancelled"
        for rec in recs:
            if rec.id != newest.id:
                out = subprocess.run([sys.executable, "-m", "mlipft_core", "cancel", rec.id],
                                     capture_output=True, text=True, timeout=120)
                assert out.returncode == 0, out.stderr
        for rec in recs:
            assert jobs.wait(rec.id, timeout=120).status == "cancelled"
        page.wait_for_function(GRID_TEXT + ".includes('cancelled')", timeout=30_000)
        page.locator('[data-testid="stDataFrame"]').last.scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "runs_cancelled.png"))
        assert "Traceback" not in main.inner_text()
        browser.close()
    if not slurm_ok:
        pytest.skip(f"local part passed; SLURM part skipped: {why}")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
@pytest.mark.slow
def test_workshop_two_participants_at_once(server, tmp_path):
    """Two participants in two browser contexts at the same time: each chooses a model and a
    dataset and launches a run, sees only their own; the board shows both; no token, no app."""
    from playwright.sync_api import sync_playwright  # optional: only where a browser test runs

    out = subprocess.run([sys.executable, "-m", "mlipft_core", "workshop", "create",
                          "--participants", "2", "--max-epochs", "5", "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    d = json.loads(out.stdout)
    shop = workshop.load(Workspace().root)

    def link(url: str) -> str:
        return server + "/?" + url.split("?", 1)[1]

    def token_of_url(url: str) -> str:
        return url.split("token=", 1)[1]

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        pages = []
        for p in d["participants"]:
            page = open_page(browser, viewport={"width": 1400, "height": 1000})
            page.goto(link(p["url"]))
            wait_rendered(page)
            assert "you are" in page.locator('[data-testid="stSidebar"]').inner_text()
            pages.append(page)
        p1, p2 = pages

        def choose(page, label: str, text: str) -> None:
            box = page.get_by_role("combobox", name=label, exact=True)
            box.click()
            page.keyboard.type(text)
            page.keyboard.press("Enter")
            wait_rendered(page)

        # p01: the weak demo model and the bundled SN2 target; p02: the strong model and the
        # SN2 test file, split on the page -- both at the same time
        for page, model in ((p1, "demo-gfn1-weak"), (p2, "demo-gfn1-strong")):
            page.get_by_role("link", name="Foundation model").first.click()
            page.wait_for_selector("text=Use this model", timeout=60_000)
            wait_rendered(page)
            choose(page, "Model", model)
            page.get_by_role("button", name="Use this model").click()
            wait_rendered(page)
        for page in (p1, p2):
            page.get_by_role("link", name="Data").first.click()
            page.wait_for_selector("text=Label keys", timeout=90_000)
            wait_rendered(page)
        choose(p2, "Demo dataset", "SN2 target, test")
        p2.get_by_role("button", name="Save split").click()
        p2.wait_for_selector("text=Split ", timeout=60_000)
        wait_rendered(p2)
        for page in (p1, p2):
            page.get_by_role("link", name="Fine-tuning runs").first.click()
            page.wait_for_selector("text=will be queued", timeout=90_000)
            wait_rendered(page)
            epochs = page.get_by_role("spinbutton", name="Epochs")
            epochs.fill("1")
            epochs.press("Tab")
            wait_rendered(page)
            page.get_by_role("button", name="Launch").click()
            try:
                page.wait_for_selector("text=Queued 1 run.", timeout=120_000)
            finally:
                page.screenshot(path=str(tmp_path / "launch.png"), full_page=True)
        side1 = p1.locator('[data-testid="stSidebar"]').inner_text()
        side2 = p2.locator('[data-testid="stSidebar"]').inner_text()
        assert "weak" in side1.lower() and "strong" in side2.lower()
        assert "p01" in side1 and "p02" in side2
        ws1, ws2 = shop.workspace_of("p01"), shop.workspace_of("p02")
        r1, r2 = jobs.list_runs(ws1), jobs.list_runs(ws2)
        assert len(r1) == 1 and len(r2) == 1
        assert r1[0].participant == "p01" and r2[0].participant == "p02"
        # each sees only their own run (queued, running or done: its row is there)
        for page in (p1, p2):
            page.wait_for_function(GRID_TEXT + ".includes('this machine')", timeout=60_000)
            cells = page.evaluate(GRID_TEXT)
            assert cells.count("this machine") == 1, cells  # one run row: their own
        p1.screenshot(path=str(tmp_path / "workshop_p01.png"), full_page=True)

        # the instructor's board shows both runs under the participants' names
        board = open_page(browser, viewport={"width": 1400, "height": 1000})
        board.goto(link(d["instructor_url"]))
        wait_rendered(board)
        board.get_by_role("link", name="Instructor board").first.click()
        board.wait_for_selector("text=Runs by participant", timeout=300_000)
        wait_rendered(board)
        board.wait_for_function("() => { const t = " + GRID_TEXT + "; "
                                "return t.includes('p01') && t.includes('p02'); }",
                                timeout=120_000)
        board.screenshot(path=str(tmp_path / "workshop_board.png"), full_page=True)
        for ws, r in ((ws1, r1[0]), (ws2, r2[0])):
            jobs.cancel(r.id, workspace=ws)  # training them to the end shows nothing more here

        # no address serves another participant's files (only the app's static folder is
        # served, and it holds no workspace)

        secret = ws2.runs / r2[0].id / "run.json"
        for crafted in (f"/app/static/../../participants/p02/runs/{r2[0].id}/run.json",
                        f"/app/static/%2e%2e/%2e%2e/participants/p02/runs/{r2[0].id}/run.json",
                        f"/{secret}", f"/?token={token_of_url(d['participants'][0]['url'])}"
                        f"&path={secret}"):
            try:
                body = urllib.request.urlopen(server + crafted, timeout=10).read()
            except urllib.error.HTTPError:
                continue
            assert secret.read_bytes() not in body
        # a browser without a token sees the join page and nothing else, on any address
        stranger = open_page(browser)
        for path in ("/", "/data", "/runs", "/board"):
            stranger.goto(server + path)
            wait_rendered(stranger)
            assert stranger.inner_text("h1") == "Join the workshop"
            assert stranger.locator('[data-testid="stSidebarNav"]').count() == 0
        browser.close()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_deep_link_with_a_wrong_token_shows_only_the_join_page(server, tmp_path):
    """A link to a page with a token that is not valid (or none) shows the join page with
    its message, and no "page not found" dialog over it; the right code then opens the page
    the link named."""
    from playwright.sync_api import sync_playwright  # optional: only where a browser test runs

    shop = workshop.create(Workspace().root, 1)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        page = open_page(browser, viewport={"width": 1200, "height": 900})
        for path in ("/runs?token=WRONG", "/compare", "/board?token=WRONG"):
            page.goto(server + path)
            wait_rendered(page)
            time.sleep(1.0)  # a dialog arrives with the page's first messages
            assert page.inner_text("h1") == "Join the workshop"
            body = page.locator("body").inner_text()
            assert "Page not found" not in body, body[:500]
            assert page.get_by_role("dialog").count() == 0
            assert ("not valid" in body) == ("token=" in path), body[:500]
        page.screenshot(path=str(tmp_path / "join_wrong_token.png"))
        # the right code on that page opens the page the link named
        page.goto(server + "/runs?token=WRONG")
        wait_rendered(page)
        page.get_by_label("Your code (the part after token= in your link)").fill(
            shop.participants[0].token)
        page.get_by_label("Your code (the part after token= in your link)").press("Enter")
        page.wait_for_selector("button:has-text('Join'):not([disabled])", timeout=30_000)
        page.get_by_role("button", name="Join").click()
        page.wait_for_selector("h1:has-text('Fine-tuning runs')", timeout=90_000)
        browser.close()
