"""The local executor: runs on this machine, dispatched from the run folders themselves.

There is no queue besides the ``runs/`` folder: a run whose ``run.json`` says ``queued`` and
``executor: local`` waits for a slot. One dispatcher per workspace (a detached process holding
a file lock; ``python -m mlipft_core.jobs.local --root WORKSPACE`` by hand, with
``$MLIPFT_RUN_POLICIES`` naming the modules of the submission policies it follows) starts a
runner (:mod:`.runner`) for each queued run as slots free up, oldest first. The workspace's
submission policy (:mod:`.policy`) may have a shared folder's dispatcher serve its runs
instead, with the runs of other workspaces, fairly:

- CPU runs: ``cpu_slots`` at a time (``MLIPFT_CPU_SLOTS``, or ``local.cpu_slots`` in the
  workspace settings; default 2 on 2+ cores), each with ``cores / slots`` threads
  (oversubscribed threads slow torch down many times over);
- GPU runs: one per visible GPU, each with its own ``CUDA_VISIBLE_DEVICES``.

Runners are detached: runs survive a closed browser, a restart of the app and the end of the
dispatcher. The dispatcher exits when no local run is queued or running and is started again
on demand (by :func:`ensure_dispatcher`, which submitting, cancelling and waiting call), so
an upgrade takes effect at the next run.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..workspace import (
    Workspace,
    atomic_write_json,
    read_helper_json,
    read_json_checked,
    set_aside_if_damaged,
)
from . import policy
from .liveness import settle
from .records import (
    RunRecord,
    RunStore,
    current_process_identity,
    log_tail,
    runner_alive,
    same_process_alive,
)

POLL_S = 0.2
DISPATCHER_START_S = 30.0  # longest wait for a new dispatcher to come up
# how the dispatcher is started (not ``-m``: the package imports this module first)
_MAIN = "import sys; from mlipft_core.jobs.local import main; sys.exit(main())"


def queue_dir(root: Path) -> Path:
    d = Path(root) / "queue"
    d.mkdir(parents=True, exist_ok=True)
    return d


#: what happens when the workspace's ``settings.json`` cannot be used
SETTINGS_IGNORED = "the default run settings apply until the settings are saved again"


def settings_file(root: str | Path) -> Path:
    """The workspace's run settings file."""
    return Path(root) / "settings.json"


def read_settings(root: str | Path) -> dict[str, Any]:
    """The raw content of the workspace's ``settings.json``: ``{}`` when there is none or it
    cannot be used (not UTF-8, not JSON, not an object, a folder, unreadable), which is then
    said once as a notice (:func:`~mlipft_core.workspace.note`) and never fatal."""
    data = read_helper_json(settings_file(root), SETTINGS_IGNORED, what="run settings")
    return data if isinstance(data, dict) else {}


def settings_problem(root: str | Path) -> str | None:
    """Why the workspace's ``settings.json`` cannot be used, or ``None``."""
    return read_json_checked(settings_file(root), dict, "run settings")[1]


def local_settings(root: Path) -> dict:
    """The ``local`` part of the workspace's run settings (``{}`` when unset or damaged)."""
    local = read_settings(root).get("local")
    return local if isinstance(local, dict) else {}


def cpu_slots(root: Path | None = None) -> int:
    """How many CPU runs go at once."""
    env = os.environ.get("MLIPFT_CPU_SLOTS")
    if env and env.strip().isdigit():
        return max(1, int(env))
    if root is not None:
        v = local_settings(root).get("cpu_slots")
        if isinstance(v, int) and v >= 1:
            return v
    return min(2, os.cpu_count() or 1)


def threads_per_run(device: str, root: Path | None = None, n_gpus: int = 1) -> int:
    cores = os.cpu_count() or 1
    if device == "cuda":
        return max(1, min(4, cores // max(1, n_gpus)))
    return max(1, cores // cpu_slots(root))


def visible_gpus() -> list[str]:
    """The GPUs runs may use, as values for ``CUDA_VISIBLE_DEVICES``."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [x.strip() for x in env.split(",") if x.strip()]
        return [] if ids in ([], ["-1"]) else ids
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                 timeout=20).stdout
            return [str(i) for i, ln in enumerate(out.splitlines()) if ln.startswith("GPU ")]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover
        return []


# ----------------------------------------------------------------------------- liveness
def _lock_path(root: Path) -> Path:
    return queue_dir(root) / "dispatcher.lock"


def _gate_path(root: Path) -> Path:
    return queue_dir(root) / "dispatch-gate.lock"


def dispatch_root(root: str | Path) -> Path:
    """The folder whose dispatcher serves the local runs of the workspace at ``root``: the
    workspace itself, or the shared folder its submission policy names."""
    return Path(policy.policy_for(Workspace(root)).dispatch_root()).resolve()


def dispatcher_alive(root: str | Path) -> bool:
    """Whether a dispatcher serves the runs of the workspace at ``root`` (holds the lock of
    its :func:`dispatch_root`)."""
    with open(_lock_path(dispatch_root(root)), "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def dispatcher_pid(root: str | Path) -> int | None:
    """The pid of the dispatcher serving the workspace at ``root`` (checked against its start
    time), else ``None``."""
    info = read_helper_json(queue_dir(dispatch_root(root)) / "dispatcher.json",
                            "the workspace's dispatcher is started afresh",
                            what="the dispatcher's process") or {}
    pid, started = info.get("pid"), info.get("started")
    if isinstance(pid, bool) or not isinstance(pid, int) or \
            isinstance(started, bool) or not isinstance(started, (int, float)):
        return None
    return pid if same_process_alive(pid, started) else None


def ensure_dispatcher(root: str | Path) -> bool:
    """Start the dispatcher serving the workspace at ``root`` (in its :func:`dispatch_root`)
    unless one runs; ``True`` when one was started. It follows the submission policies of
    this process (:func:`~mlipft_core.jobs.policy.child_env`).

    The decision is made under a gate lock that the dispatcher also takes before it exits,
    so a run queued while the dispatcher is leaving is never stranded.
    """
    root = dispatch_root(root)
    with open(_gate_path(root), "a") as gate:
        fcntl.flock(gate, fcntl.LOCK_EX)
        if dispatcher_alive(root):
            return False
        with open(queue_dir(root) / "dispatcher.log", "ab") as log:  # the child keeps it
            proc = subprocess.Popen([sys.executable, "-c", _MAIN, "--root", str(root)],
                                    stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env=policy.child_env(),
                                    cwd=str(Path(__file__).resolve().parents[2]))
        # until it holds its lock and has said who it is (an idle one that is leaving may
        # still be named there), or has exited; on a busy machine starting Python takes seconds
        deadline = time.monotonic() + DISPATCHER_START_S
        while time.monotonic() < deadline and proc.poll() is None:
            if dispatcher_pid(root) == proc.pid:
                break
            time.sleep(0.05)
        return True


# ----------------------------------------------------------------------------- executor
class LocalExecutor:
    """Runs on this machine through the workspace's dispatcher."""

    name = "local"

    def submit(self, store: RunStore, records: list[RunRecord]) -> None:
        ensure_dispatcher(store.workspace.root)

    def cancel(self, store: RunStore, rec: RunRecord) -> None:
        """Ask the run's runner to stop (it records the end itself)."""
        if rec.status == "running" and runner_alive(rec):
            try:
                os.kill(int(rec.pid), signal.SIGTERM)
            except ProcessLookupError:
                pass


# ----------------------------------------------------------------------------- dispatcher
class Dispatcher:
    """Starts runners for queued local runs as slots free up.

    It serves the runs of the workspaces its folder's submission policy names
    (:meth:`~mlipft_core.jobs.policy.SubmissionPolicy.served_roots`: the workspace itself, or
    every workspace of a shared space) and shares the slots fairly between the owners of the
    runs: a free slot goes to the owner with the fewest runs going, oldest run first, so one
    owner's sweep cannot starve the others.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.store = RunStore(Workspace(self.root))
        self.launched: dict[str, tuple[subprocess.Popen, str, str | None]] = {}
        self._gpus: list[str] | None = None
        self._stores: dict[Path, RunStore] = {self.root: self.store}
        self._owner: dict[str, RunStore] = {}
        self.served: Counter = Counter()  # runs started per owner (round-robin)

    def stores(self) -> list[RunStore]:
        """The run stores served, as the folder's submission policy names them now."""
        out = []
        for root in policy.policy_for(self.store.workspace).served_roots():
            root = Path(root).resolve()
            if root not in self._stores:
                self._stores[root] = RunStore(Workspace(root))
            out.append(self._stores[root])
        return out

    def _store_of(self, rec: RunRecord) -> RunStore:
        return self._owner.get(rec.id, self.store)

    @property
    def gpus(self) -> list[str]:
        if self._gpus is None:
            self._gpus = visible_gpus()
        return self._gpus

    def _local(self) -> list[RunRecord]:
        self._owner = {}
        out = []
        for store in self.stores():
            for r in store.list():
                if r.readable and r.executor == "local":
                    self._owner[r.id] = store
                    out.append(r)
        return out

    def _launch(self, rec: RunRecord, gpu: str | None) -> None:
        threads = threads_per_run(rec.device, self.root, len(self.gpus) if gpu else 1)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        if rec.device == "cuda":
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""
        folder = self._store_of(rec).folder(rec.id)
        with open(folder / "runner.log", "ab") as log:  # the runner keeps its own copy
            proc = subprocess.Popen(
                [sys.executable, "-m", "mlipft_core.jobs.runner", str(folder)], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=policy.child_env(env),
                start_new_session=True, cwd=str(Path(__file__).resolve().parents[2]))
        self.launched[rec.id] = (proc, rec.device, gpu)

    def _reap(self) -> None:
        for rid, (proc, _dev, _gpu) in list(self.launched.items()):
            if proc.poll() is None:
                continue
            del self.launched[rid]
            store = self._owner.get(rid, self.store)
            try:
                rec = store.read(rid)
            except Exception:
                continue
            if rec.status == "queued":  # the runner ended without claiming: record why
                tail = log_tail(store.folder(rid) / "runner.log", 5)
                store.transition(rid, ("queued",), status="failed", finished=time.time(),
                                 reason="the runner could not start: "
                                        + (tail.splitlines()[-1] if tail else
                                           f"exit code {proc.returncode}"))

    def step(self) -> tuple[int, int]:
        """One dispatch round; returns (queued, running) local runs."""
        self._reap()
        recs = self._local()
        running = []
        for r in recs:
            if r.status == "running":
                alive = runner_alive(r)  # None: it runs on another host
                if alive:
                    running.append(r)
                elif alive is False:
                    settle(self._store_of(r), r)
        # what holds a slot: running runs, and runners started but not yet claiming
        running_ids = {r.id for r in running}
        owner = {r.id: r.participant for r in recs}
        busy = [(r.device, r.gpu, r.participant) for r in running] + \
            [(dev, gpu, owner.get(rid)) for rid, (_p, dev, gpu) in self.launched.items()
             if rid not in running_ids]
        cpu_busy = sum(1 for dev, _g, _who in busy if dev != "cuda")
        gpu_busy = {g for dev, g, _who in busy if dev == "cuda"}
        going = Counter(who for _d, _g, who in busy)
        slots = cpu_slots(self.root)
        waiting = [r for r in recs if r.status == "queued" and r.id not in self.launched]
        while waiting:
            # fair share: the owner with the fewest runs going (then the one served least
            # so far: round-robin), their oldest run first
            rec = min(waiting, key=lambda r: (going[r.participant], self.served[r.participant],
                                              r.created, r.id))
            waiting.remove(rec)
            if rec.device == "cuda":
                if not self.gpus:
                    self._store_of(rec).transition(rec.id, ("queued",), status="failed",
                                                   finished=time.time(),
                                                   reason="the run asks for a GPU, but this "
                                                          "machine has none visible")
                    continue
                free = [g for g in self.gpus if g not in gpu_busy]
                if not free:
                    continue
                gpu = free[0]
                gpu_busy.add(gpu)
            elif cpu_busy < slots:
                gpu = None
                cpu_busy += 1
            else:
                continue
            self._launch(rec, gpu)
            going[rec.participant] += 1
            self.served[rec.participant] += 1
        queued = sum(1 for r in recs if r.status == "queued")
        return queued, len(running) + len(self.launched)

    def serve(self, lock_fh) -> int:
        while True:
            queued, running = self.step()
            if not queued and not running:
                with open(_gate_path(self.root), "a") as gate:
                    fcntl.flock(gate, fcntl.LOCK_EX)
                    queued, running = self.step()
                    if not queued and not running:
                        lock_fh.close()  # releases the dispatcher lock under the gate
                        return 0
            time.sleep(POLL_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Dispatch the workspace's local runs.")
    parser.add_argument("--root", default=None, help="workspace folder")
    args = parser.parse_args(argv)
    ws = Workspace(args.root)
    lock = open(_lock_path(ws.root), "a")  # noqa: SIM115 - held for the dispatcher's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held for the dispatcher's life
    except BlockingIOError:
        return 0  # another dispatcher serves this workspace
    policy.load_named()  # the submission policies of the process that started it
    pid, started, _host = current_process_identity()
    info = queue_dir(ws.root) / "dispatcher.json"
    set_aside_if_damaged(info)
    atomic_write_json(info, {"pid": pid, "started": started})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return Dispatcher(ws.root).serve(lock)


if __name__ == "__main__":
    raise SystemExit(main())
