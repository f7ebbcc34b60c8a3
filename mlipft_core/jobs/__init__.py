"""Fine-tuning and MD runs: prepare, execute on an executor, watch, cancel, delete.

A run is a folder ``runs/<id>/`` in the workspace, and that folder is the single truth:
``run.json`` (the record and its state), ``config.yaml`` (the exact ``mace_run_train``
configuration), ``command.sh`` (the same run as a command line), the foundation copy carrying
the chosen E0s, ``train.log`` and mace's own ``results/``, ``logs/``, ``checkpoints/`` and
model files. A run is *prepared* once (:func:`prepare`) and then handed to an *executor*:

- ``local`` (:mod:`.local`): runs on this machine, CPU slots and one slot per visible GPU;
- ``slurm`` (:mod:`.slurm`): one SLURM job per run (a job array per sweep), via submitit.

Both start the same :mod:`.runner` on the folder, which claims the run before its process
starts and records its end. Reading runs (:func:`list_runs`, :func:`get_run`) has no side
effects: a run whose runner or job is gone is *shown* as failed; :func:`settle` records it.
"""

from __future__ import annotations

import math
import shlex
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Protocol

from ..errors import MlipftError
from ..modelwork import model_turn
from ..strategies import (RunSpec, StrategyError, build_config, config_yaml,
                          get_strategy, resolved_settings, shell_command)
from ..workspace import (Workspace, atomic_write_json, atomic_write_text, read_json,
                         set_aside_if_damaged)
from . import provenance
from .local import LocalExecutor, ensure_dispatcher
from .progress import Progress, read_progress
from .records import (ACTIVE, EXECUTORS, FINAL, InvalidRunNameError,
                      RunNotFoundError, RunRecord, RunStore, UnreadableRunError, check_name,
                      runner_alive)
from .slurm import SlurmError, SlurmExecutor, SlurmOptions

__all__ = ["Executor", "InvalidRunNameError", "MlipftError", "RunRecord", "RunNotFoundError",
           "SlurmError", "SlurmOptions", "UnreadableRunError", "cancel", "delete",
           "expand_sweep", "get_executor", "get_run", "list_runs", "load_settings",
           "preflight", "prepare", "progress", "resolve_e0s", "save_settings", "settle",
           "submit", "submit_sweep", "submit_size_sweep", "submit_md", "wait"]


class Executor(Protocol):
    """Where prepared runs execute."""

    name: str

    def submit(self, store: RunStore, records: list[RunRecord]) -> None: ...

    def cancel(self, store: RunStore, rec: RunRecord) -> None: ...


_EXECUTORS: dict[str, Executor] = {"local": LocalExecutor(), "slurm": SlurmExecutor()}


def get_executor(name: str) -> Executor:
    try:
        return _EXECUTORS[name]
    except KeyError:
        raise MlipftError(f"unknown executor {name!r}; choose from "
                          f"{', '.join(EXECUTORS)}", code="unknown_executor") from None


# ----------------------------------------------------------------------------- settings
DEFAULT_SETTINGS: dict[str, Any] = {"executor": "local", "local": {"cpu_slots": None},
                                    "slurm": SlurmOptions().to_dict()}


def load_settings(workspace: Workspace | None = None) -> dict[str, Any]:
    """The workspace's run settings (``settings.json``): default executor, local slots,
    SLURM options. Unreadable or unknown values fall back to the defaults."""
    import copy

    ws = workspace or Workspace()
    from .local import read_settings

    raw = read_settings(ws.root)  # a damaged file is said and left aside
    out = copy.deepcopy(DEFAULT_SETTINGS)
    if raw.get("executor") in EXECUTORS:
        out["executor"] = raw["executor"]
    local = raw.get("local") if isinstance(raw.get("local"), dict) else {}
    if isinstance(local.get("cpu_slots"), int) and local["cpu_slots"] >= 1:
        out["local"]["cpu_slots"] = local["cpu_slots"]
    slurm = raw.get("slurm") if isinstance(raw.get("slurm"), dict) else {}
    try:
        out["slurm"] = SlurmOptions.from_dict({**out["slurm"], **slurm}).check().to_dict()
    except (SlurmError, TypeError):
        pass
    return out


def save_settings(workspace: Workspace | None = None, *, executor: str | None = None,
                  cpu_slots: int | None = None, slurm: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Change the workspace's run settings (checked) and return them."""
    ws = workspace or Workspace()
    cur = load_settings(ws)
    if executor is not None:
        get_executor(executor)
        cur["executor"] = executor
    if cpu_slots is not None:
        if not isinstance(cpu_slots, int) or cpu_slots < 1:
            raise MlipftError(f"CPU slots must be at least 1, not {cpu_slots!r}")
        cur["local"]["cpu_slots"] = cpu_slots
    if slurm is not None:
        cur["slurm"] = SlurmOptions.from_dict({**cur["slurm"], **slurm}).check().to_dict()
    set_aside_if_damaged(ws.root / "settings.json")
    atomic_write_json(ws.root / "settings.json", cur)
    return cur


def _executor_choice(ws: Workspace, executor: str | None,
                     slurm: SlurmOptions | dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    settings = load_settings(ws)
    name = executor or settings["executor"]
    get_executor(name)
    if name != "slurm":
        return name, {}
    base = settings["slurm"]
    given = slurm.to_dict() if isinstance(slurm, SlurmOptions) else dict(slurm or {})
    opts = SlurmOptions.from_dict({**base, **{k: v for k, v in given.items() if v is not None}})
    return name, opts.check().to_dict()


# ----------------------------------------------------------------------------- E0s
def resolve_e0s(spec: RunSpec, *, trusted: bool = True,
                workspace: Workspace | None = None) -> dict[str, float]:
    """Explicit E0 values (element -> eV) for a run's training data.

    ``spec.e0s`` may be a method name (``foundation``, ``average``, ``estimated``,
    ``isolated``: the IsolatedAtom configurations of the training file and of
    ``spec.isolated_file``), a saved E0 choice id, a mace dict string, a JSON file or JSON
    text. The foundation model's predictions on the training data come from the workspace's
    prediction cache.
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
        inputs = e0mod.prepare(spec.train_file, None, isolated_file=spec.isolated_file)
        if not inputs.isolated:
            raise StrategyError("isolated-atom E0s: the training file has no IsolatedAtom "
                                "configurations and no isolated-atom file was given; fit them "
                                "on the E0 page (with an isolated-atom file) and use the saved "
                                "choice, or give the values explicitly")
        return e0mod.compute(inputs, value).e0
    if value in ("foundation", "average", "estimated"):
        model = None if value == "average" else spec.foundation_model
        # the foundation model's predictions come from the workspace's cache: a launch after
        # the E0 page (or a second launch) spends no model time on them
        inputs = e0mod.prepare(spec.train_file, model, trusted=trusted,
                               isolated_file=spec.isolated_file, workspace=ws)
        return e0mod.compute(inputs, value).e0
    if value.startswith("{") and ":" in value and '"' not in value:
        import ast

        try:
            raw = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            raise StrategyError(f"E0s {value[:80]!r} are not a valid dict") from exc
        return e0mod.load_explicit(raw)
    return e0mod.load_explicit(value)


def _check_e0_coverage(train_file: str, e0: dict[str, float]) -> None:
    from ..referencing import composition

    present = set(composition(train_file)[0])  # read once per file version
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

    with model_turn():  # unpickling traces code with torch.fx, process-wide
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
        try:
            torch.save(net, out)
        except (OSError, RuntimeError) as exc:  # torch reports a full disk as RuntimeError
            from ..errors import WorkspaceError, model_write_message

            raise WorkspaceError(model_write_message(out.parent)) from exc
    return out



def _is_isolated_atom(atoms) -> bool:
    """What ``mace_run_train`` takes for an isolated atom in a training file (mace 0.3.16,
    ``mace.data.load_from_xyz``): one atom with ``config_type=IsolatedAtom``."""
    return len(atoms) == 1 and atoms.info.get("config_type") == "IsolatedAtom"


def _may_hold_isolated_atoms(path: str) -> bool:
    """False when an uncompressed extxyz file cannot hold an IsolatedAtom configuration (the
    word is nowhere in it): found without parsing the file."""
    import mmap

    p = Path(path)
    if p.suffix.lower() not in (".xyz", ".extxyz"):
        return True  # compressed: parse it
    try:
        with open(p, "rb") as fh:
            if p.stat().st_size == 0:
                return False
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return mm.find(b"IsolatedAtom") >= 0
    except (OSError, ValueError):
        return True


def train_file_for_mace(train_file: str, workspace: Workspace | None = None
                        ) -> tuple[str, dict[str, float | None]]:
    """The training file a run hands to ``mace_run_train``, and the isolated atoms left out.

    mace takes the energies of ``IsolatedAtom`` configurations in a training file as the E0s
    of the new model ("Using isolated atom energies from training file"), in place of the E0s
    given with ``--E0s``, and trains without them. So a training file holding some is handed
    over as a copy without them (kept once per file content in ``subsets/``): the model then
    carries the E0s the run records, and trains on the same configurations. Returns the file
    unchanged and ``{}`` when it has none; otherwise the copy and, per element, the energy
    (eV, ``None`` when unlabelled) mace would have taken.
    """
    from ..data import detect_keys, get_label, read_frames, write_extxyz
    from ..workspace import cached_sha256

    if not _may_hold_isolated_atoms(train_file):
        return train_file, {}
    frames = read_frames(train_file)
    isolated = [a for a in frames if _is_isolated_atom(a)]
    if not isolated:
        return train_file, {}
    keys = detect_keys(frames)
    left_out: dict[str, float | None] = {}
    for a in isolated:
        e = get_label(a, keys.energy, "energy") if keys.energy else None
        left_out[a.get_chemical_symbols()[0]] = None if e is None else float(e)
    ws = workspace or Workspace()
    out = ws.root / "subsets" / f"{cached_sha256(train_file)[:20]}-without-isolated-atoms.xyz"
    if not out.is_file():
        write_extxyz(out, [a for a in frames if not _is_isolated_atom(a)])
    return str(out), left_out


def isolated_atoms_warning(train_file: str, left_out: dict[str, float | None],
                           e0: dict[str, float]) -> str:
    """What a user is told when a training file's isolated atoms are left out of a run."""
    from ..e0 import format_energy_per_atom

    diffs = {el: abs(v - e0[el]) for el, v in left_out.items()
             if v is not None and el in e0}
    worst = max(diffs, key=diffs.get) if diffs else None
    differ = (f"; they differ from the run's E0s by up to "
              f"{format_energy_per_atom(diffs[worst]).lstrip('+')} ({worst})"
              if worst is not None and diffs[worst] > 0 else "")
    n = len(left_out)
    return (f"The training file {Path(train_file).name} holds IsolatedAtom configurations "
            f"of {n} element{'s' if n != 1 else ''} ({', '.join(left_out)}){differ}. "
            "mace_run_train would take their energies as the model's E0s in place of the "
            "chosen ones, so the run trains on a copy without them and the model carries the "
            "E0s recorded with the run. To train with the isolated-atom energies, choose them "
            "as the E0s (method 'isolated').")


def _e0_key(spec: RunSpec) -> tuple:
    """What a run's E0 values depend on: runs of a sweep that share it share one fit."""
    return spec.foundation_model, spec.train_file, str(spec.e0s), spec.isolated_file


def _absolute(spec: RunSpec) -> RunSpec:
    """Absolute file paths: mace runs inside the run folder, not where the user typed them."""
    from ..workspace import absolute_paths

    return absolute_paths(spec, ("foundation_model", "train_file", "valid_file", "test_file",
                                 "replay_file", "isolated_file"))


# ----------------------------------------------------------------------------- checks
class TrainingDataError(StrategyError):
    """Training inputs that would train garbage (non-finite values, too few structures)."""

    code = "bad_training_data"


def preflight(spec: RunSpec) -> int:
    """Refuse inputs that would train garbage; return the number of training structures.

    Checks the training, validation, test and replay files with validation's own checks
    (:func:`mlipft_core.data.validate`): whatever it calls an error (configurations without
    atoms or without energies, NaN or infinite values, forces or stresses of the wrong shape,
    degenerate, huge or overlapping structures) is refused. The training set must hold at
    least two structures, and at least one batch of the run's batch size.

    Raises
    ------
    TrainingDataError
        With the finding's code and a message naming the file.
    """
    from ..data import detect_keys, first_error, read_frames, validate

    strat = get_strategy(spec.strategy)
    n_train = 0
    for role, path in (("training", spec.train_file), ("validation", spec.valid_file),
                       ("test", spec.test_file), ("replay", spec.replay_file)):
        if not path:
            continue
        frames = read_frames(path)
        keys = detect_keys(frames)
        # the foundation model labels a pseudolabelled replay file: it needs no energies
        allow = ("missing_energy",) if role == "replay" and \
            strat.options.get("pseudolabel_replay") else ()
        bad = first_error(validate(frames, keys), allow)
        if bad is not None:
            name = Path(path).name
            if bad.code == "missing_energy" and not bad.indices:  # no energy key at all
                raise TrainingDataError(
                    f"the {role} file {name} cannot be trained on: no configuration has an "
                    "energy label; store the total energies under REF_energy (or energy, "
                    "DFT_energy)", code=bad.code)
            advice = "" if "remove" in bad.message else \
                "; remove or fix those configurations first (validation lists every one)"
            raise TrainingDataError(f"the {role} file {name} cannot be trained on: "
                                    f"{bad.message}{advice}", code=bad.code)
        if role == "training":
            n_train = sum(1 for a in frames if a.info.get("config_type") != "IsolatedAtom")
    if n_train < 2:
        raise TrainingDataError(f"the training file {Path(spec.train_file).name} holds "
                                f"{n_train} usable configuration(s); training needs at least 2",
                                code="too_few_configurations")
    check_batch_fits(spec, n_train)
    return n_train


def mace_train_count(n: int, has_valid_file: bool) -> int:
    """How many of ``n`` training configurations ``mace_run_train`` trains on: all of them
    with a validation file, else all but its random 10% validation part
    (``mace.data.random_train_valid_split``)."""
    return n if has_valid_file else min(n - int(0.1 * n), n - 1)


def check_batch_fits(spec: RunSpec, n_train: int, what: str | None = None) -> None:
    """Refuse a batch size larger than the set mace trains on: mace drops the last partial
    batch, so it would have no batch at all (and fail).

    Parameters
    ----------
    spec
        The run (its ``batch_size`` setting and whether it has a validation file).
    n_train
        Training configurations (isolated atoms left out).
    what
        How the training set is named in the message (default: its file).
    """
    try:
        batch = int(resolved_settings(spec)["batch_size"])
    except (TypeError, ValueError, OverflowError):
        return  # build_config refuses it with its own message
    fit = mace_train_count(n_train, bool(spec.valid_file))
    if batch > fit:
        where = what or f"the training file {Path(spec.train_file).name}"
        split = "" if spec.valid_file else \
            f" (without a validation file, mace keeps {n_train - fit} of them to validate)"
        raise TrainingDataError(
            f"the batch size {batch} is larger than the training set: mace trains on {fit} of "
            f"the {n_train} configurations of {where}{split}; choose a batch size of at most "
            f"{fit}", code="batch_too_large")


def _check_e0s(train_file: str, e0: dict[str, float]) -> None:
    bad = sorted(k for k, v in e0.items() if not math.isfinite(float(v)))
    if bad:
        raise StrategyError(f"the E0s of {', '.join(bad)} are not finite numbers; fix the "
                            "training labels or give the E0s explicitly")
    _check_e0_coverage(train_file, e0)


# ----------------------------------------------------------------------------- prepare
def prepare(spec: RunSpec, *, workspace: Workspace | None = None, sweep: str | None = None,
            trusted: bool = True, e0_values: dict[str, float] | None = None,
            executor: str | None = None, slurm: SlurmOptions | dict[str, Any] | None = None,
            checked: bool = False) -> RunRecord:
    """Check a run and write its folder (E0s resolved, foundation copy with the E0s,
    ``config.yaml``, ``command.sh``, ``run.json`` in state ``queued``). Nothing executes yet.

    Raises
    ------
    StrategyError
        For bad settings or training data; no folder is left behind.

    ``checked=True`` tells that the caller (a sweep) has already checked the data files and
    the ``e0_values`` it passes.
    """
    ws = workspace or Workspace()
    store = RunStore(ws)
    exec_name, exec_opts = _executor_choice(ws, executor, slurm)
    strat = get_strategy(spec.strategy)
    spec = _absolute(spec)
    spec = replace(spec, name=spec.name if spec.name not in ("", "run") else spec.strategy)
    check_name(spec.name)
    if sweep is not None:
        check_name(sweep, "sweep name")
    if exec_name == "slurm" and "device" not in spec.settings:
        spec = replace(spec, settings={**spec.settings,
                                       "device": "cuda" if exec_opts.get("gpus") else "cpu"})
    on_here = exec_name == "local"
    settings = resolved_settings(spec)
    rid = store.new_id(spec.strategy)
    folder = store.folder(rid)
    build_config(spec, folder, check_device=on_here)  # validate before anything is written
    if not checked:
        preflight(spec)
    e0 = e0_values if e0_values is not None else resolve_e0s(spec, trusted=trusted, workspace=ws)
    if not checked or e0_values is None:  # a sweep checks its E0s once, not once per run
        _check_e0s(spec.train_file, e0)
    folder.mkdir(parents=True, exist_ok=False)
    try:
        mace_train, left_out = train_file_for_mace(spec.train_file, ws)
        if not strat.multihead and not strat.from_scratch:
            patched = _foundation_with_e0s(spec.foundation_model, e0,
                                           folder / "foundation_e0s.model")
            run_spec = replace(spec, foundation_model=str(patched), e0s="foundation")
        else:
            from ..e0 import mace_e0s_argument

            run_spec = replace(spec, e0s=mace_e0s_argument(e0))
        run_spec = replace(run_spec, train_file=mace_train)
        cfg = build_config(run_spec, folder, check_device=on_here)
        atomic_write_text(folder / "config.yaml", config_yaml(cfg))
        atomic_write_text(folder / "command.sh", "#!/usr/bin/env bash\n# the same run by hand\n"
                          f"cd {shlex.quote(str(folder))}\n{shell_command(cfg)}\n")
        extra: dict[str, Any] = {}
        if left_out:
            extra = {"mace_train_file": mace_train, "isolated_atoms_left_out": left_out,
                     "warnings": [isolated_atoms_warning(spec.train_file, left_out, e0)]}
        rec = RunRecord(id=rid, name=run_spec.name, strategy=spec.strategy,
                        device=settings["device"], max_epochs=int(settings["max_num_epochs"]),
                        spec={**spec.to_dict(), "e0_values": e0, "settings": settings,
                              **extra},
                        sweep=sweep, executor=exec_name, executor_options=exec_opts,
                        **_ownership(ws))
        provenance.record(folder, "foundation_model", spec.foundation_model)
        return store.create(rec)
    except BaseException:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        raise


def _workshop_checks(ws: Workspace, specs: list[RunSpec] | int) -> None:
    """In a workshop: the participant's run limit and the epoch cap (nothing elsewhere)."""
    from ..workshop import check_submission

    if isinstance(specs, int):
        check_submission(ws, specs, [])
    else:
        check_submission(ws, len(specs), [resolved_settings(s) for s in specs])


def _ownership(ws: Workspace) -> dict[str, Any]:
    from ..workshop import participant_of, run_time_limit_s

    return {"participant": participant_of(ws), "time_limit_s": run_time_limit_s(ws)}


def _launch(ws: Workspace, records: list[RunRecord]) -> list[RunRecord]:
    """Hand prepared runs to their executors (grouped, so a SLURM sweep is one array)."""
    store = RunStore(ws)
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        key = (r.executor, repr(sorted(r.executor_options.items())))
        groups.setdefault(key, []).append(r)
    for (name, _), recs in groups.items():
        try:
            get_executor(name).submit(store, recs)
        except Exception as exc:
            for r in recs:
                store.transition(r.id, ("queued",), status="failed", finished=time.time(),
                                 reason=f"could not be submitted: {exc}")
            if isinstance(exc, MlipftError):
                raise
            raise MlipftError(f"{len(recs)} run(s) could not be submitted to the {name} "
                              f"executor: {exc}") from exc
    return [store.read(r.id) for r in records]


def submit(spec: RunSpec, *, workspace: Workspace | None = None, sweep: str | None = None,
           trusted: bool = True, e0_values: dict[str, float] | None = None,
           executor: str | None = None, slurm: SlurmOptions | dict[str, Any] | None = None
           ) -> RunRecord:
    """Prepare one run and hand it to its executor. Raises StrategyError for bad input."""
    ws = workspace or Workspace()
    _workshop_checks(ws, [spec])
    rec = prepare(spec, workspace=ws, sweep=sweep, trusted=trusted, e0_values=e0_values,
                  executor=executor, slurm=slurm)
    return _launch(ws, [rec])[0]


def _check_launch(ws: Workspace, specs: list[RunSpec], *, exec_name: str, trusted: bool,
                  sizes: list[int] | None = None) -> dict[tuple, dict[str, float]]:
    """Check every run of a launch before any of it is written or queued.

    Names, settings and ``mace_run_train`` configurations of every run first (cheap, so a bad
    strategy setting is reported before any data is read), then the data files of every run
    (:func:`preflight`), the training-set sizes of a size sweep, and every E0 choice.

    Parameters
    ----------
    ws
        The workspace.
    specs
        The runs (for a size sweep: one per strategy x learning rate x seed, each trained at
        every size).
    exec_name
        The executor (a local run needs its device here).
    trusted
        Whether the foundation models are trusted files.
    sizes
        Training-set sizes of a size sweep (sorted), or ``None``.

    Returns
    -------
    dict
        The E0 values of each distinct E0 choice (keyed by :func:`_e0_key`).

    Raises
    ------
    MlipftError
        The first problem found; nothing is written.
    """
    from ..data import read_frames

    for s in specs:
        check_name(s.name if s.name not in ("", "run") else s.strategy)
        if sizes:
            check_name(f"{s.name}-n{sizes[-1]}")  # the name of its largest run
        build_config(s, Path("/tmp"), check_device=exec_name == "local")
    checked: set[tuple[str | None, ...]] = set()
    n_frames: dict[str, int] = {}
    e0_cache: dict[tuple, dict[str, float]] = {}
    for s in specs:  # data checked and every E0 resolved before the first run is written
        a = _absolute(s)
        files = (a.train_file, a.valid_file, a.test_file, a.replay_file)
        if files not in checked:
            preflight(a)
            checked.add(files)
        if sizes is not None:
            if a.train_file not in n_frames:
                n_frames[a.train_file] = len(read_frames(a.train_file))
            n = n_frames[a.train_file]
            if not sizes or sizes[0] < 2 or sizes[-1] > n:
                raise StrategyError(f"training-set sizes must lie between 2 and {n} (the "
                                    f"training set), got {sizes}")
            check_batch_fits(a, sizes[0], "the smallest training-set size")
        key = _e0_key(a)
        if key not in e0_cache:
            e0_cache[key] = resolve_e0s(a, trusted=trusted, workspace=ws)
            _check_e0s(a.train_file, e0_cache[key])
    return e0_cache


def _withdraw(ws: Workspace, records: list[RunRecord]) -> None:
    """Take back runs prepared for a launch that failed before it was handed over: a queued
    one is removed, one a dispatcher already claimed is cancelled."""
    import shutil

    store = RunStore(ws)
    for r in records:
        if store.transition(r.id, ("queued",), status="cancelled", finished=time.time(),
                            reason="the launch it belonged to failed") is not None:
            shutil.rmtree(store.folder(r.id), ignore_errors=True)
        else:
            try:
                cancel(r.id, ws)
            except MlipftError:
                pass


def _prepare_all(ws: Workspace, jobs_: list[tuple[RunSpec, dict[str, Any]]]
                 ) -> list[RunRecord]:
    """:func:`prepare` every ``(spec, options)``; when one fails, the runs already prepared
    are withdrawn, so a launch queues all of its runs or none."""
    recs: list[RunRecord] = []
    try:
        for spec, options in jobs_:
            train_size = options.pop("train_size", None)
            rec = prepare(spec, workspace=ws, **options)
            if train_size is not None:
                rec = RunStore(ws).update(rec.id, spec={**rec.spec, "train_size": train_size})
            recs.append(rec)
    except BaseException:
        _withdraw(ws, recs)
        raise
    return recs


def submit_sweep(specs: list[RunSpec], *, workspace: Workspace | None = None,
                 trusted: bool = True, executor: str | None = None,
                 slurm: SlurmOptions | dict[str, Any] | None = None,
                 sweep: str | None = None) -> list[RunRecord]:
    """Prepare several runs (strategies, learning rates, seeds) as one sweep and submit them
    together: on SLURM, one job array. The whole sweep is refused before any run is written
    when one of them is bad."""
    ws = workspace or Workspace()
    sweep = sweep or time.strftime("sweep-%Y%m%d-%H%M%S")
    _workshop_checks(ws, specs)
    exec_name, exec_opts = _executor_choice(ws, executor, slurm)
    e0_cache = _check_launch(ws, specs, exec_name=exec_name, trusted=trusted)
    recs = _prepare_all(ws, [(s, {"sweep": sweep, "trusted": trusted, "checked": True,
                                  "e0_values": e0_cache[_e0_key(_absolute(s))],
                                  "executor": exec_name, "slurm": exec_opts or None})
                             for s in specs])
    return _launch(ws, recs)


@dataclass
class SweepPlan:
    """What a launch will queue: one :class:`RunSpec` per strategy x learning rate x seed."""

    specs: list[RunSpec]
    sizes: list[int]
    n_strategies: int = 0
    n_lrs: int = 1
    n_seeds: int = 1

    def describe(self) -> str:
        """E.g. ``2 strategies × 3 learning rates × 1 seed``."""
        def n(k: int, one: str, many: str) -> str:
            return f"{k} {one if k == 1 else many}"

        parts = [n(self.n_strategies, "strategy", "strategies"),
                 n(self.n_lrs, "learning rate", "learning rates") if self.n_lrs > 1 else
                 "its own learning rate" if self.n_strategies == 1 else
                 "their own learning rates",
                 n(self.n_seeds, "seed", "seeds")]
        if self.sizes:
            parts.append(n(len(self.sizes), "training-set size", "training-set sizes"))
        return " × ".join(parts)

    @property
    def n_runs(self) -> int:
        return len(self.specs) * max(1, len(self.sizes))


def parse_list(text: str | Iterable[Any] | None, kind: type, what: str) -> list[Any]:
    """Comma-separated numbers (``"1e-3, 3e-3"``) as a list of ``kind``; a clear error."""
    if text is None:
        return []
    items = [x for x in (text.split(",") if isinstance(text, str) else text)
             if str(x).strip()]
    out = []
    for x in items:
        t = str(x).strip()
        shown = t if len(t) <= 40 else t[:37] + "..."
        try:
            v = int(t) if kind is int else kind(t)
        except ValueError:
            try:
                f = float(t)
            except ValueError:
                raise StrategyError(f"{what}: {shown!r} is not a number") from None
            if not math.isfinite(f):
                raise StrategyError(f"{what}: {shown!r} is not a finite number") from None
            if kind is int and not f.is_integer():
                raise StrategyError(f"{what}: {shown!r} is not a whole number") from None
            v = kind(f)
        if kind is float and not math.isfinite(v):
            raise StrategyError(f"{what}: {shown!r} is not a finite number")
        out.append(v)
    return out


def expand_sweep(strategies: dict[str, dict[str, Any]], *, foundation_model: str,
                 train_file: str, valid_file: str | None = None, test_file: str | None = None,
                 e0s: str = "estimated", replay_file: str | None = None,
                 isolated_file: str | None = None, tuning: dict[str, dict] | None = None,
                 common: dict[str, Any] | None = None, lrs: Iterable[float] = (),
                 seeds: Iterable[int] = (), sizes: Iterable[int] = (),
                 name_prefix: str = "") -> SweepPlan:
    """The runs of a launch: every strategy (with its own settings, e.g. ``lr``,
    ``lora_rank``) x every learning rate in ``lrs`` (empty: the strategy's own) x every seed
    in ``seeds`` (empty: the common seed). Names say what varies: ``naive-lr0p003-s1``."""
    common = dict(common or {})
    lr_list = list(lrs) or [None]
    seed_list = list(seeds) or [common.get("seed", 0)]
    specs = []
    for name, own in strategies.items():
        strat = get_strategy(name)
        for lr in lr_list:
            for sd in seed_list:
                settings = {**common, **{k: v for k, v in own.items() if v is not None}}
                settings["seed"] = int(sd)
                if lr is not None:
                    settings["lr"] = float(lr)
                if not strat.lora:
                    settings.pop("lora_rank", None), settings.pop("lora_alpha", None)
                if not strat.multihead:
                    settings.pop("num_samples_pt", None), settings.pop("subselect_pt", None)
                tag = name_prefix + name + (f"-lr{lr:g}" if lr is not None and len(lr_list) > 1
                                            else "") + (f"-s{sd}" if len(seed_list) > 1 else "")
                specs.append(RunSpec(strategy=name, foundation_model=foundation_model,
                                     train_file=train_file, valid_file=valid_file,
                                     test_file=test_file, e0s=e0s, replay_file=replay_file,
                                     name=tag.replace(".", "p"), settings=settings,
                                     isolated_file=isolated_file,
                                     tuning=_tuning_for(tuning, name, settings)))
    return SweepPlan(specs=specs, sizes=sorted({int(n) for n in sizes}),
                     n_strategies=len(strategies), n_lrs=len(lr_list), n_seeds=len(seed_list))


def _tuning_for(tuning: dict[str, dict] | None, strategy: str, settings: dict[str, Any]
                ) -> dict | None:
    """The pilot record of a strategy when the run uses the pilot's best learning rate."""
    t = (tuning or {}).get(strategy)
    if not t or t.get("best_lr") is None or settings.get("lr") is None:
        return None
    return t if math.isclose(float(settings["lr"]), float(t["best_lr"]), rel_tol=1e-9) else None


def submit_plan(plan: SweepPlan, **kwargs: Any) -> list[RunRecord]:
    """Submit a :class:`SweepPlan`: a sweep, or a size sweep of every run when sizes are set.

    The whole plan is checked (every run's settings, data, sizes and E0s) before any run is
    written, and its runs are queued together: a bad run refuses the launch, none is queued.
    """
    if plan.sizes:
        return _submit_sizes([(sp, int(sp.settings.get("seed", 0))) for sp in plan.specs],
                             plan.sizes, **kwargs)
    return submit_sweep(plan.specs, **kwargs)


def submit_size_sweep(spec: RunSpec, sizes: list[int], *, seed: int = 0,
                      **kwargs: Any) -> list[RunRecord]:
    """One strategy over training-set sizes (nested random subsets), for learning curves.

    Subsets are written to the workspace (``subsets/``); each run records its
    ``train_size``. The E0s are resolved once, on the full training set.
    """
    return _submit_sizes([(spec, seed)], sizes, **kwargs)


def _submit_sizes(specs: list[tuple[RunSpec, int]], sizes: Iterable[int], *,
                  workspace: Workspace | None = None, trusted: bool = True,
                  executor: str | None = None,
                  slurm: SlurmOptions | dict[str, Any] | None = None,
                  sweep: str | None = None) -> list[RunRecord]:
    """Size sweeps of several runs, ``(spec, subset seed)`` each, checked whole and queued
    together (see :func:`submit_size_sweep`)."""
    import hashlib

    import numpy as np

    from ..data import read_frames, write_extxyz

    ws = workspace or Workspace()
    sizes = sorted({int(n) for n in sizes})
    absolute = [(_absolute(s), seed) for s, seed in specs]
    _workshop_checks(ws, [s for s, _ in absolute for _n in sizes])
    exec_name, exec_opts = _executor_choice(ws, executor, slurm)
    e0_cache = _check_launch(ws, [s for s, _ in absolute], exec_name=exec_name,
                             trusted=trusted, sizes=sizes)
    sweep = sweep or time.strftime("sizes-%Y%m%d-%H%M%S")
    todo: list[tuple[RunSpec, dict[str, Any]]] = []
    frames_of: dict[str, list] = {}
    for spec, seed in absolute:
        if spec.train_file not in frames_of:
            frames_of[spec.train_file] = read_frames(spec.train_file)
        frames = frames_of[spec.train_file]
        order = np.random.default_rng(seed).permutation(len(frames))
        tag = hashlib.sha256(f"{spec.train_file}:{seed}".encode()).hexdigest()[:10]
        for n in sizes:
            path = ws.root / "subsets" / f"{tag}-{n}.xyz"
            if not path.is_file():
                write_extxyz(path, [frames[i] for i in sorted(order[:n])])
            todo.append((replace(spec, train_file=str(path), name=f"{spec.name}-n{n}"),
                         {"sweep": sweep, "e0_values": e0_cache[_e0_key(spec)],
                          "checked": True, "executor": exec_name,
                          "slurm": exec_opts or None, "trusted": trusted, "train_size": n}))
    return _launch(ws, _prepare_all(ws, todo))


def submit_md(models: dict[str, str], structure: str | Path, settings, *, index: int = 0,
              head: str | None = None, workspace: Workspace | None = None,
              executor: str | None = None,
              slurm: SlurmOptions | dict[str, Any] | None = None) -> list[RunRecord]:
    """Queue the same MD (an :class:`~mlipft_core.md.MDSettings`) for several models.

    ``models`` maps a display name to a model file, or to ``(file, head)`` for a given head of
    a multihead model (default: ``head``); one MD run per entry, one group.
    """
    from ..md import MDError

    settings.check()
    ws = workspace or Workspace()
    store = RunStore(ws)
    _workshop_checks(ws, len(models))
    exec_name, exec_opts = _executor_choice(ws, executor, slurm)
    structure = str(Path(structure).expanduser().resolve())
    if not Path(structure).is_file():
        raise MDError(f"structure file not found: {structure}")
    group = time.strftime("md-%Y%m%d-%H%M%S")
    device = ("cuda" if exec_opts.get("gpus") else "cpu") if exec_name == "slurm" else _device()
    out = []
    for name, entry in models.items():
        path, run_head = (entry if isinstance(entry, (tuple, list)) else (entry, head))
        rid = store.new_id("md")
        folder = store.folder(rid)
        folder.mkdir(parents=True, exist_ok=False)
        atomic_write_text(folder / "md.json", __import__("json").dumps(
            {"model": str(Path(path).resolve()), "structure": structure, "index": index,
             "head": run_head, "settings": settings.to_dict()}, indent=2))
        rec = RunRecord(id=rid, name=str(name), strategy="md", kind="md", device=device,
                        spec={"model": str(path), "structure": structure, "index": index,
                              "head": run_head, "settings": settings.to_dict()}, sweep=group,
                        executor=exec_name, executor_options=exec_opts, **_ownership(ws))
        out.append(store.create(rec))
    return _launch(ws, out)


def _device() -> str:
    from ..evaluate import default_device

    return default_device()


def md_progress(record: RunRecord, workspace: Workspace | None = None) -> float:
    """Fraction of an MD run's steps done."""
    p = read_json(RunStore(workspace).folder(record.id) / "progress.json") or {}
    if not isinstance(p, dict) or not p.get("steps"):
        return 0.0
    try:
        return min(1.0, float(p.get("step", 0)) / float(p["steps"]))
    except (TypeError, ValueError):
        return 0.0


# ----------------------------------------------------------------------------- reading
def _gone_reason(rec: RunRecord, slurm_jobs: dict[str, str] | None) -> str | None:
    """Why an active run is in truth over (its runner or job is gone), or ``None``."""
    if rec.status not in ACTIVE:
        return None
    if rec.executor == "local":
        if rec.status == "running" and runner_alive(rec) is False:
            return ("the run's process ended without recording a result (killed, or the "
                    "machine restarted)")
        return None
    # slurm
    if slurm_jobs is None or not rec.slurm_job_id:
        return None  # SLURM cannot be asked, or the job is being submitted
    if rec.slurm_job_id in slurm_jobs:
        return None
    if rec.status == "running" and runner_alive(rec):
        return None
    from .slurm import job_log_tail

    tail = job_log_tail(rec, 3)
    last = tail.splitlines()[-1].strip() if tail else ""
    return (f"SLURM job {rec.slurm_job_id} ended without recording a result"
            + (f": {last[:300]}" if last else ""))


def _slurm_jobs_for(records: Iterable[RunRecord]) -> dict[str, str] | None:
    if any(r.executor == "slurm" and r.status in ACTIVE for r in records):
        from .slurm import active_jobs

        return active_jobs()
    return {}


def view(rec: RunRecord, store: RunStore, slurm_jobs: dict[str, str] | None = None
         ) -> RunRecord:
    """The record as it truly stands: an active run whose runner or job is gone is shown
    as failed with the reason (nothing is written; :func:`settle` records it)."""
    reason = _gone_reason(rec, slurm_jobs)
    if reason is None:
        return rec
    try:  # it may have recorded its end meanwhile
        fresh = store.read(rec.id)
    except MlipftError:
        return rec
    if fresh.status in FINAL:
        return fresh
    return replace(fresh, status="failed", reason=reason)


def settle(store: RunStore, rec: RunRecord, slurm_jobs: dict[str, str] | None = None
           ) -> RunRecord:
    """Record the end of an active run whose runner or job is gone; return the record."""
    if slurm_jobs is None and rec.executor == "slurm":
        slurm_jobs = _slurm_jobs_for([rec])
    seen = view(rec, store, slurm_jobs)
    if seen.status == "failed" and rec.status in ACTIVE:
        from .records import log_tail

        done = store.transition(rec.id, (rec.status,), status="failed", finished=time.time(),
                                reason=seen.reason,
                                log_tail=log_tail(store.folder(rec.id) / "train.log"))
        return done or store.read(rec.id)
    return seen


def keep_sweeps_going(sweeps: Iterable[str], workspace: Workspace | None = None) -> None:
    """For the active runs of these sweeps: record the end of those whose runner or job is
    gone, and start the local dispatcher when one of them waits for it (after a restart)."""
    ws = workspace or Workspace()
    store = RunStore(ws)
    wanted = set(sweeps)
    for rec in store.list():
        if rec.readable and rec.sweep in wanted and rec.status not in FINAL:
            if settle(store, rec).status == "queued" and rec.executor == "local":
                ensure_dispatcher(ws.dispatch_root)


def list_runs(workspace: Workspace | None = None) -> list[RunRecord]:
    """Every run, oldest first, as it truly stands; unreadable folders with status
    ``unreadable`` and the reason. Starts nothing and writes nothing."""
    store = RunStore(workspace)
    records = store.list()
    jobs = _slurm_jobs_for(records)
    return [view(r, store, jobs) if r.readable else r for r in records]


def get_run(run_id: str, workspace: Workspace | None = None) -> RunRecord:
    store = RunStore(workspace)
    rec = store.read(run_id)
    return view(rec, store, _slurm_jobs_for([rec]))


def progress(record: RunRecord, workspace: Workspace | None = None) -> Progress:
    if not record.readable:
        return Progress(max_epochs=None)
    return read_progress(RunStore(workspace).folder(record.id), record.max_epochs)


# ----------------------------------------------------------------------------- actions
def cancel(run_id: str, workspace: Workspace | None = None) -> RunRecord:
    """Cancel a queued or running run (a finished one is left as it is)."""
    ws = workspace or Workspace()
    store = RunStore(ws)
    rec = store.read(run_id)
    if rec.status in FINAL:
        return rec
    ex = get_executor(rec.executor)
    if store.transition(run_id, ("queued",), status="cancelled", finished=time.time(),
                        reason="cancelled before it started") is not None:
        if rec.executor == "slurm":
            ex.cancel(store, rec)  # the job must not start (if it does, its claim fails)
        return store.read(run_id)
    live = view(rec, store, _slurm_jobs_for([rec]))
    if live.status == "failed":  # its runner is gone: record that, nothing to signal
        return settle(store, rec)
    atomic_write_text(store.folder(run_id) / "cancel", time.strftime("%Y-%m-%d %H:%M:%S\n"))
    ex.cancel(store, rec)
    return store.read(run_id)


def delete(run_id: str, workspace: Workspace | None = None) -> None:
    """Remove a finished (or unreadable) run's folder."""
    RunStore(workspace).delete(run_id)


def wait(run_id: str, workspace: Workspace | None = None, timeout: float | None = None,
         poll: float = 0.5) -> RunRecord:
    """Block until the run is done, failed or cancelled (starting the local dispatcher if a
    local run waits for one, and recording the end of a run whose runner is gone)."""
    ws = workspace or Workspace()
    store = RunStore(ws)
    deadline = None if timeout is None else time.time() + timeout
    started = False
    while True:
        rec = settle(store, store.read(run_id))
        if rec.status in FINAL:
            return rec
        if rec.executor == "local" and rec.status == "queued" and not started:
            ensure_dispatcher(ws.dispatch_root)
            started = True
        if deadline is not None and time.time() > deadline:
            raise MlipftError(f"run {run_id} still {rec.status} after {timeout:.0f} s")
        time.sleep(poll)
