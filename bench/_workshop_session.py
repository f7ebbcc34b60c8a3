"""Workshop participants pressing the model-heavy buttons at the same moment.

The app is served for real (``streamlit run app.py`` on a free port, the workshop folder as
its workspace) and every participant is a headless Chromium context of their own (their own
link, cookies and session), all in one browser. Each press opens a page, clicks its button
and waits for the settled page, and reads back what the page shows, so that participants'
results can be compared. Used by the load test (``tests/test_workshop_load.py``) and
``bench/workshop_load.py``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"

#: The buttons a participant presses, in the order of the workbench's steps.
ACTIONS = ("evaluate", "e0", "launch", "compare")


@dataclass
class Press:
    """One button press of one participant: how long until the page settled, and what it
    showed (``value``) or why it failed (``error``)."""

    participant: str
    action: str
    seconds: float
    error: str | None = None
    value: Any = None


@dataclass
class Room:
    """A workshop with its participants' tokens and spaces, set up for the demo world."""

    root: Path
    tokens: dict[str, str]
    workspaces: dict[str, Any]
    staged_run: dict[str, str] = field(default_factory=dict)


def demo_files(folder: Path, *, train: int, valid: int, test: int, pretrain: int
               ) -> dict[str, str]:
    """The first structures of the bundled SN2 split and of the pretraining test set, written
    to ``folder`` (sizes in structures)."""
    from ase.io import read, write

    from mlipft_core.demo import demo_paths

    demo = demo_paths()
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n, src in (("train", train, "sn2_train"), ("valid", valid, "sn2_valid"),
                         ("test", test, "sn2_test"), ("pretrain", pretrain, "pretrain_test")):
        out[part] = str(folder / f"sn2_{part}.xyz" if part != "pretrain" else
                        folder / "pretrain_test.xyz")
        write(out[part], read(demo[src], f":{n}"))
    return out


def make_room(root: Path, n: int, files: dict[str, str], *, model: str = "demo-gfn1-weak",
              max_epochs: int = 1) -> Room:
    """A workshop of ``n`` participants in ``root`` (the served workspace folder). The
    instructor staged the training file; every participant has chosen ``model`` and that
    file with its split (train/valid/test of ``files``), as on the first two pages, and the
    forgetting set ``files["pretrain"]`` for Compare."""
    from mlipft_core import workshop
    from mlipft_core.data import detect_keys, read_frames, register_files_as_split

    shop = workshop.create(root, n, name="load test",
                           limits=workshop.Limits(max_epochs=max_epochs))
    staged = str(shop.stage(files["train"], "data"))
    # the test sets Compare reads must lie where a participant may read: staged by the instructor
    target, pretrain = (str(shop.stage(files[k], "data")) for k in ("test", "pretrain"))
    found = detect_keys(read_frames(staged))
    keys = {"energy": found.energy, "forces": found.forces, "stress": found.stress}
    tokens, spaces = {}, {}
    for p in shop.participants:
        ws = shop.workspace_of(p.name)
        split = register_files_as_split(ws, {k: files[k] for k in ("train", "valid", "test")},
                                        "sn2-small")
        ws.set(model=model, model_label=model, split_id=split.id, dataset=staged,
               dataset_label=f"workshop: {Path(staged).name}", keys=keys,
               compare={"runs": [], "target": target, "pretrain": pretrain})
        tokens[p.name], spaces[p.name] = p.token, ws
    return Room(Path(root), tokens, spaces)


def stage_finished_run(src_folder: Path, room: Room) -> None:
    """Give every participant a copy of one finished run folder (so that Compare has a run
    to compare without training one per participant); paths in ``run.json`` are moved."""
    rec = json.loads((Path(src_folder) / "run.json").read_text())
    for name, ws in room.workspaces.items():
        dst = ws.runs / Path(src_folder).name
        shutil.copytree(src_folder, dst)
        text = (dst / "run.json").read_text().replace(str(Path(src_folder)), str(dst))
        moved = json.loads(text)
        moved["participant"] = name
        (dst / "run.json").write_text(json.dumps(moved))
        room.staged_run[name] = rec["id"]


def cancel_own_runs(room: Room, participant: str) -> list:
    """Cancel what ``participant``'s presses queued: each run of theirs, other than the one
    :func:`stage_finished_run` gave them, that is still queued or running.

    Returns their runs other than the staged one, as listed before cancelling (a run that
    had already ended is among them, and left as it is)."""
    from mlipft_core import jobs

    ws = room.workspaces[participant]
    mine = [r for r in jobs.list_runs(ws) if r.id != room.staged_run.get(participant)]
    for r in mine:
        if r.status in jobs.ACTIVE:
            jobs.cancel(r.id, workspace=ws)
    return mine


@dataclass(frozen=True)
class Action:
    """A button on a page, the element that shows its result, and how to read that result."""

    page: str     # url path of the page
    button: str   # the button's label
    done: str     # a selector present once the result is on the page
    value: str    # JavaScript giving the result's text


_GRID = ("Array.from(document.querySelectorAll('[data-testid=\"stDataFrame\"]')[0]"
         ".querySelectorAll('[role=\"gridcell\"]')).map(e => e.innerText).join('|')")
_METRICS = ("Array.from(document.querySelectorAll('[data-testid=\"stMetric\"]'))"
            ".map(e => e.innerText.replace(/\\s+/g, ' ')).join('|')")
ACTION = {
    "evaluate": Action("data", "Evaluate", '[data-testid="stMetric"]:has-text("Force RMSE")',
                         _METRICS),
    "e0": Action("e0", "Compute E0s", 'h3:has-text("Verdict")', _GRID),
    "launch": Action("runs", "Launch", '[data-testid="stAlert"]:has-text("Queued")',
                     "''"),
    "compare": Action("compare", "Compare", '[data-testid="stDataFrame"]', _GRID),
}
_PROBLEM = ('[data-testid="stException"], [data-testid="stAlertContentError"]')


class Server:
    """``streamlit run app.py`` on a free port, serving the folder ``workspace``."""

    def __init__(self, workspace: Path) -> None:
        import os
        import socket
        import subprocess
        import sys
        import urllib.request

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = dict(os.environ, MLIPFT_WORKSPACE=str(workspace))
        # The log stays open for the server subprocess's lifetime; close() closes it.
        self.log = open(Path(workspace) / "server.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
             "--server.headless", "true", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2).status == 200:
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("the app did not start: " + (Path(workspace) / "server.log")
                           .read_text(errors="replace")[-2000:])

    def peak_rss_mb(self) -> float:
        """The server process's peak resident memory so far (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> tuple[float, float]:
        """CPU seconds so far of the server process itself, and of it with every process it
        started (the local dispatcher, runners and their training, alive or ended)."""
        import psutil

        proc = psutil.Process(self.proc.pid)
        t = proc.cpu_times()
        own = t.user + t.system
        tree = own + t.children_user + t.children_system
        for child in proc.children(recursive=True):
            try:
                c = child.cpu_times()
                tree += c.user + c.system
            except psutil.Error:
                pass
        return own, tree

    def stop(self) -> None:
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def _press(page, url: str, token: str, name: str, action: str, timeout_s: float) -> Press:
    """Open the action's page, click its button, wait until the page settled."""
    spec = ACTION[action]
    ms = timeout_s * 1000
    t0 = time.perf_counter()
    try:
        await page.goto(f"{url}/{spec.page}?token={token}", timeout=ms)
        await page.wait_for_selector('[data-testid="stMainBlockContainer"] h1', timeout=ms)
        await _settled(page, ms)
        await page.get_by_role("button", name=spec.button, exact=True).click(timeout=ms)
        await page.wait_for_timeout(500)
        await page.wait_for_selector(f"{spec.done}, {_PROBLEM}", timeout=ms)
        await _settled(page, ms)
        problem = page.locator(_PROBLEM)
        if await problem.count():
            error = " | ".join(t.strip()[:300] for t in await problem.all_inner_texts())
            return Press(name, action, time.perf_counter() - t0, error=error)
        if spec.value == _GRID:  # the grid's cells come a moment after the script ended
            await page.locator('[data-testid="stDataFrame"] [role="gridcell"]').first.wait_for(
                state="attached", timeout=ms)
        value = await page.evaluate(f"() => {spec.value}")
        return Press(name, action, time.perf_counter() - t0, value=value)
    except Exception as exc:  # noqa: BLE001 - a press that breaks is a result here
        return Press(name, action, time.perf_counter() - t0,
                     error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")


async def _settled(page, ms: float) -> None:
    # polled on a timer: animation frames of pages in the background may never come
    await page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=ms,
        polling=250)


def rounds(room: Room, server: Server, actions=ACTIONS, *,
           after_each: Callable[[str, list[Press]], None] | None = None,
           after_press: Callable[[Press], None] | None = None,
           timeout_s: float = 1800, screenshots: Path | None = None) -> list[Press]:
    """Every participant presses each action at the same moment, one action after another.

    ``after_press(press)`` is called as soon as one participant's page settled (while the
    others still wait), ``after_each(action, presses)`` after every action; with
    ``screenshots`` each participant's settled page is saved there as
    ``<action>-<participant>.png``.
    """
    import asyncio

    from playwright.async_api import async_playwright

    async def run() -> list[Press]:
        out: list[Press] = []
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"])
            pages = {}
            for name in room.tokens:
                ctx = await browser.new_context(viewport={"width": 1300, "height": 900})
                pages[name] = await ctx.new_page()
            async def press(name: str, action: str) -> Press:
                done = await _press(pages[name], server.url, room.tokens[name], name, action,
                                    timeout_s)
                if after_press:
                    after_press(done)
                return done

            for action in actions:
                got = await asyncio.gather(*[press(n, action) for n in room.tokens])
                if screenshots is not None:
                    screenshots.mkdir(parents=True, exist_ok=True)
                    for n, page in pages.items():
                        await page.screenshot(path=str(screenshots / f"{action}-{n}.png"),
                                              full_page=False)
                out += got
                if after_each:
                    after_each(action, list(got))
            await browser.close()
        return out

    return asyncio.run(run())
