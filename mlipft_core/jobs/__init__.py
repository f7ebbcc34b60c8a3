"""Fine-tuning runs on a durable queue: submit, watch, cancel, delete.

A run is a folder ``runs/<id>/`` in the workspace with ``run.json`` (the record),
``config.yaml`` (the exact ``mace_run_train`` configuration), ``command.sh`` (the same run as a
command line), ``train.log`` and mace's own ``results/``, ``logs/``, ``checkpoints/`` and model
files. Execution goes through a backend (:mod:`.worker`: a local huey queue); a cluster
backend can take its place.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from ..errors import MlipftError
from ..strategies import (RunSpec, StrategyError, build_config, config_yaml, get_strategy,
                          resolved_settings, shell_command)
from ..workspace import Workspace, atomic_write_text
from . import worker
from .progress import Progress, read_progress
from .records import FINAL, RunNotFoundError, RunRecord, RunStore

__all__ = ["Backend", "LocalBackend", "RunRecord", "RunNotFoundError", "cancel", "delete",
           "get_run", "list_runs", "progress", "resolve_e0s", "submit", "wait"]


class Backend(Protocol):
    """Where runs execute. The local backend uses huey; a cluster one would submit jobs."""

    def submit(self, root: Path, record: RunRecord) -> None: ...

    def cancel(self, root: Path, record: RunRecord) -> None: ...

    def reconcile(self, store: RunStore) -> None: ...


class LocalBackend:
    """Runs on this machine through the workspace's huey queue and detached consumers."""

    def submit(self, root: Path, record: RunRecord) -> None:
        worker.enqueue(root, record.device, record.id)
        worker.ensure_consumer(root, record.device)

    def cancel(self, root: Path, record: RunRecord) -> None:
        (Path(root) / "runs" / record.id / "cancel").touch()

    def reconcile(self, store: RunStore) -> None:
        worker.reconcile(store)
        worker.ensure_consumers_for(store)


DEFAULT_BACKEND: Backend = LocalBackend()


# ----------------------------------------------------------------------------- E0s
def resolve_e0s(spec: RunSpec, *, trusted: bool = True,
                workspace: Workspace | None = None) -> dict[str, float]:
    """Explicit E0 values (element -> eV) for a run's training data.

    ``spec.e0s`` may be a method name (``foundation``, ``average``, ``estimated``), a saved E0
    choice id, a mace dict string, a JSON file or JSON text.
    """
    from .. import e0 as e0mod

    value = str(spec.e0s).strip()
    ws = workspace or Workspace()
    saved = e0mod.load_choice(ws, value) if value and not value.startswith("{") else None
    if saved is not None:
        data = saved.get("data")
        if data and Path(data).resolve() != Path(spec.train_file).resolve():
            raise StrategyError(f"the saved E0 choice {value} was fitted on {data}, not on "
                                f"{spec.train_file}: fit E0s for this training set first")
        return {k: float(v) for k, v in saved["e0"].items()}
    if value == "isolated":
        raise StrategyError("isolated-atom E0s: fit them on the E0 page (with an isolated-atom "
                            "file) and use the saved choice, or give the values explicitly")
    if value in ("foundation", "average", "estimated"):
        model = None if value == "average" else spec.foundation_model
        inputs = e0mod.prepare(spec.train_file, model, trusted=trusted)
        return e0mod.compute(inputs, value).e0
    if value.startswith("{") and ":" in value and '"' not in value:
        import ast

        try:
            raw = ast.literal_eval(value)
        except (ValueError, SyntaxError) as exc:
            raise StrategyError(f"E0s {value!r} are not a valid dict") from exc
        return e0mod.load_explicit(raw)
    return e0mod.load_explicit(value)


def _absolute(spec: RunSpec) -> RunSpec:
    """Absolute file paths: mace runs inside the run folder, not where the user typed them."""
    def fix(p: str | None) -> str | None:
        return None if not p else str(Path(p).expanduser().resolve())

    return replace(spec, foundation_model=fix(spec.foundation_model), train_file=fix(spec.train_file),
                   valid_file=fix(spec.valid_file), test_file=fix(spec.test_file),
                   replay_file=fix(spec.replay_file))


def _check_e0_coverage(train_file: str, e0: dict[str, float]) -> None:
    from ..data import read_frames

    present = {s for a in read_frames(train_file) for s in a.get_chemical_symbols()}
    missing = sorted(present - set(e0))
    if missing:
        raise StrategyError(f"the E0s give no value for {', '.join(missing)}, which the "
                            "training data contains")


def _foundation_with_e0s(model_path: str, e0: dict[str, float], out: Path) -> Path:
    """Copy of the foundation model whose first head carries the chosen E0s.

    mace_run_train 0.3.16 copies every foundation buffer of matching shape into the new
    model; with all foundation elements kept, that includes the E0 table, so E0s given with
    ``--E0s`` would be silently replaced by the foundation's. Writing the chosen E0s into the
    foundation copy (and passing ``--E0s foundation``) makes them stick.
    """
    import mace  # noqa: F401
    import torch
    from ase.data import atomic_numbers

    net = torch.load(model_path, map_location="cpu", weights_only=False)
    table = net.atomic_energies_fn.atomic_energies
    zs = [int(z) for z in net.atomic_numbers]
    with torch.no_grad():
        for sym, value in e0.items():
            z = atomic_numbers[sym]
            if z in zs:
                if table.ndim == 1:
                    table[zs.index(z)] = value
                else:
                    table[0, zs.index(z)] = value
    torch.save(net, out)
    return out


# ----------------------------------------------------------------------------- API
def submit(spec: RunSpec, *, workspace: Workspace | None = None, sweep: str | None = None,
           backend: Backend | None = None, trusted: bool = True,
           e0_values: dict[str, float] | None = None) -> RunRecord:
    """Validate a run, write its folder and queue it. Raises StrategyError for bad settings.

    ``e0_values`` (element -> eV) skips resolving ``spec.e0s`` again (used by sweeps).
    """
    ws = workspace or Workspace()
    store = RunStore(ws)
    strat = get_strategy(spec.strategy)
    spec = _absolute(spec)
    settings = resolved_settings(spec)
    rid = store.new_id(spec.strategy)
    folder = store.folder(rid)
    spec = replace(spec, name=spec.name if spec.name not in ("", "run") else spec.strategy)
    build_config(spec, folder)  # validate before anything is written
    e0 = e0_values if e0_values is not None else resolve_e0s(spec, trusted=trusted, workspace=ws)
    _check_e0_coverage(spec.train_file, e0)
    folder.mkdir(parents=True, exist_ok=True)
    run_spec = spec
    if not strat.multihead and not strat.from_scratch:
        patched = _foundation_with_e0s(spec.foundation_model, e0, folder / "foundation_e0s.model")
        run_spec = replace(spec, foundation_model=str(patched), e0s="foundation")
    else:
        from ..e0 import mace_e0s_argument

        run_spec = replace(spec, e0s=mace_e0s_argument(e0))
    cfg = build_config(run_spec, folder)
    atomic_write_text(folder / "config.yaml", config_yaml(cfg))
    atomic_write_text(folder / "command.sh", "#!/usr/bin/env bash\n# the same run by hand\n"
                      f"cd {shlex.quote(str(folder))}\n{shell_command(cfg)}\n")
    rec = RunRecord(id=rid, name=run_spec.name, strategy=spec.strategy,
                    device=settings["device"], max_epochs=int(settings["max_num_epochs"]),
                    spec={**spec.to_dict(), "e0_values": e0, "settings": settings},
                    sweep=sweep)
    store.create(rec)
    try:
        (backend or DEFAULT_BACKEND).submit(ws.root, rec)
    except Exception as exc:
        store.update(rec.id, status="failed", finished=time.time(),
                     reason=f"could not be queued: {type(exc).__name__}: {exc}")
        raise MlipftError(f"run {rec.id} could not be queued: {exc}") from exc
    return rec


def submit_sweep(specs: list[RunSpec], **kwargs: Any) -> list[RunRecord]:
    """Queue several runs (strategies, learning rates or seeds) as one sweep."""
    sweep = time.strftime("sweep-%Y%m%d-%H%M%S")
    for s in specs:  # refuse the whole sweep before queuing any of it
        build_config(s, Path("/tmp"))
    e0_cache: dict[tuple[str, str, str], dict[str, float]] = {}
    for s in specs:  # every E0 resolved (and checked) before the first run is queued
        key = (s.foundation_model, s.train_file, str(s.e0s))
        if key not in e0_cache:
            e0_cache[key] = resolve_e0s(_absolute(s), trusted=kwargs.get("trusted", True),
                                        workspace=kwargs.get("workspace"))
            _check_e0_coverage(s.train_file, e0_cache[key])
    return [submit(s, sweep=sweep, e0_values=e0_cache[(s.foundation_model, s.train_file,
                                                      str(s.e0s))], **kwargs) for s in specs]


def submit_size_sweep(spec: RunSpec, sizes: list[int], *, seed: int = 0,
                      **kwargs: Any) -> list[RunRecord]:
    """One strategy over training-set sizes (nested random subsets), for learning curves.

    Subsets are written to the workspace (``subsets/``); each run records its
    ``train_size``. The E0s are resolved once, on the full training set.
    """
    import hashlib

    import numpy as np

    from ..data import read_frames, write_extxyz

    ws = kwargs.get("workspace") or Workspace()
    spec = _absolute(spec)
    frames = read_frames(spec.train_file)
    sizes = sorted({int(n) for n in sizes})
    if not sizes or sizes[0] < 2 or sizes[-1] > len(frames):
        raise StrategyError(f"training-set sizes must lie between 2 and {len(frames)} "
                            f"(the training set), got {sizes}")
    order = np.random.default_rng(seed).permutation(len(frames))
    tag = hashlib.sha256(f"{spec.train_file}:{seed}".encode()).hexdigest()[:10]
    e0 = resolve_e0s(spec, trusted=kwargs.get("trusted", True), workspace=ws)
    specs = []
    for n in sizes:
        path = ws.root / "subsets" / f"{tag}-{n}.xyz"
        if not path.is_file():
            write_extxyz(path, [frames[i] for i in sorted(order[:n])])
        specs.append(replace(spec, train_file=str(path), name=f"{spec.name}-n{n}"))
    sweep = time.strftime("sizes-%Y%m%d-%H%M%S")
    out = []
    for n, s in zip(sizes, specs):
        rec = submit(s, sweep=sweep, e0_values=e0, **kwargs)
        out.append(RunStore(ws).update(rec.id, spec={**rec.spec, "train_size": n}))
    return out


def submit_md(models: dict[str, str], structure: str | Path, settings, *, index: int = 0,
              head: str | None = None, workspace: Workspace | None = None,
              backend: Backend | None = None) -> list[RunRecord]:
    """Queue the same MD (an :class:`~mlipft_core.md.MDSettings`) for several models.

    ``models`` maps a display name to a model file; one MD run per model, one group.
    """
    from ..md import MDError

    settings.check()
    ws = workspace or Workspace()
    store = RunStore(ws)
    structure = str(Path(structure).expanduser().resolve())
    if not Path(structure).is_file():
        raise MDError(f"structure file not found: {structure}")
    group = time.strftime("md-%Y%m%d-%H%M%S")
    out = []
    for name, path in models.items():
        rid = store.new_id("md")
        folder = store.folder(rid)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "md.json", __import__("json").dumps(
            {"model": str(Path(path).resolve()), "structure": structure, "index": index,
             "head": head, "settings": settings.to_dict()}, indent=2))
        rec = RunRecord(id=rid, name=name, strategy="md", kind="md", device=_device(),
                        spec={"model": str(path), "structure": structure, "index": index,
                              "head": head, "settings": settings.to_dict()}, sweep=group)
        store.create(rec)
        (backend or DEFAULT_BACKEND).submit(ws.root, rec)
        out.append(rec)
    return out


def _device() -> str:
    from ..evaluate import default_device

    return default_device()


def md_progress(record: RunRecord, workspace: Workspace | None = None) -> float:
    """Fraction of an MD run's steps done."""
    from ..workspace import read_json

    p = read_json(RunStore(workspace).folder(record.id) / "progress.json") or {}
    return (p.get("step", 0) / p["steps"]) if p.get("steps") else 0.0


def list_runs(workspace: Workspace | None = None, backend: Backend | None = None
              ) -> list[RunRecord]:
    store = RunStore(workspace)
    (backend or DEFAULT_BACKEND).reconcile(store)
    return store.list()


def get_run(run_id: str, workspace: Workspace | None = None) -> RunRecord:
    return RunStore(workspace).get(run_id)


def progress(record: RunRecord, workspace: Workspace | None = None) -> Progress:
    return read_progress(RunStore(workspace).folder(record.id), record.max_epochs)


def cancel(run_id: str, workspace: Workspace | None = None,
           backend: Backend | None = None) -> RunRecord:
    """Cancel a queued or running run (a finished one is left as it is)."""
    ws = workspace or Workspace()
    store = RunStore(ws)
    rec = store.get(run_id)
    if rec.status in FINAL:
        return rec
    if store.transition(run_id, ("queued",), status="cancelled", finished=time.time(),
                        reason="cancelled before it started") is not None:
        return store.get(run_id)
    (backend or DEFAULT_BACKEND).cancel(ws.root, rec)
    return store.get(run_id)


def delete(run_id: str, workspace: Workspace | None = None) -> None:
    RunStore(workspace).delete(run_id)


def wait(run_id: str, workspace: Workspace | None = None, timeout: float | None = None,
         poll: float = 1.0) -> RunRecord:
    """Block until the run is done, failed or cancelled."""
    store = RunStore(workspace)
    deadline = None if timeout is None else time.time() + timeout
    while True:
        DEFAULT_BACKEND.reconcile(store)
        rec = store.get(run_id)
        if rec.status in FINAL:
            return rec
        if deadline is not None and time.time() > deadline:
            raise MlipftError(f"run {run_id} still {rec.status} after {timeout:.0f} s")
        time.sleep(poll)
