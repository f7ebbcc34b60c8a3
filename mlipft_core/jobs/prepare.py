"""A run spec made into a run folder: checked, with its E0s, its configuration and its record.

:func:`prepare` refuses inputs that would train garbage (:func:`preflight`), resolves and
checks the E0s, writes the foundation copy that carries them, the training file mace is given
(:func:`train_file_for_mace`), ``config.yaml``, ``command.sh`` and ``run.json`` in state
``queued``. Nothing executes yet: :mod:`.queue` hands prepared runs to their executor.

Reading structures and fitting E0s need numpy, ase and the model machinery; they are
imported when a run is prepared, so that the processes that only dispatch or run prepared
runs (which import this package) start quickly.
"""

from __future__ import annotations

import mmap
import shlex
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..replay import ReplaySubset, plan_official, plan_subset
from ..strategies import (
    RunSpec,
    Strategy,
    StrategyError,
    build_config,
    config_yaml,
    get_strategy,
    resolved_settings,
    shell_command,
)
from ..workspace import Workspace, absolute_paths, atomic_write_text, cached_sha256
from . import provenance
from .policy import Admission, policy_for
from .records import RunRecord, RunStore
from .settings import executor_choice
from .slurm import SlurmOptions

__all__ = ["TrainingDataError", "absolute_spec", "check_batch_fits", "isolated_atoms_warning",
           "mace_train_count", "preflight", "prepare", "train_file_for_mace"]

#: The file paths of a run spec (mace runs inside the run folder).
SPEC_PATHS = ("foundation_model", "train_file", "valid_file", "test_file", "replay_file",
              "isolated_file")


class TrainingDataError(StrategyError):
    """Training inputs that would train garbage (non-finite values, too few structures)."""

    code = "bad_training_data"


def absolute_spec(spec: RunSpec) -> RunSpec:
    """The spec with absolute file paths: mace runs inside the run folder, not where the user
    typed them."""
    return absolute_paths(spec, SPEC_PATHS)


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
    from ..data import (  # ase: see above
        detect_keys,
        first_error,
        is_isolated_atom,
        read_frames,
        validate,
    )

    strat = get_strategy(spec.strategy)
    n_train = 0
    from ..replay_sets import official_set_of

    for role, path in (("training", spec.train_file), ("validation", spec.valid_file),
                       ("test", spec.test_file), ("replay", spec.replay_file)):
        if not path or (role == "replay" and official_set_of(path) is not None):
            continue  # mace's own replay sets are mace's to read
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
            n_train = sum(1 for a in frames if not is_isolated_atom(a))
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


def _may_hold_isolated_atoms(path: str) -> bool:
    """False when an uncompressed extxyz file cannot hold an IsolatedAtom configuration (the
    word is nowhere in it): found without parsing the file."""
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
    if not _may_hold_isolated_atoms(train_file):
        return train_file, {}
    from ..data import (  # ase: see above
        detect_keys,
        get_label,
        is_isolated_atom,
        read_frames,
        write_extxyz,
    )

    frames = read_frames(train_file)
    mask = [is_isolated_atom(a) for a in frames]
    isolated = [a for a, iso in zip(frames, mask) if iso]
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
        write_extxyz(out, [a for a, iso in zip(frames, mask) if not iso])
    return str(out), left_out


def isolated_atoms_warning(train_file: str, left_out: dict[str, float | None],
                           e0: dict[str, float]) -> str:
    """What a user is told when a training file's isolated atoms are left out of a run."""
    from ..e0_fit import format_energy_per_atom

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


def _run_spec(spec: RunSpec, exec_name: str, exec_opts: dict[str, Any]) -> RunSpec:
    """The spec as a run uses it: absolute paths, a name (the strategy's by default), and on
    SLURM the device its options ask for."""
    spec = absolute_spec(spec)
    spec = replace(spec, name=spec.name if spec.name not in ("", "run") else spec.strategy)
    if exec_name == "slurm" and "device" not in spec.settings:
        spec = replace(spec, settings={**spec.settings,
                                       "device": "cuda" if exec_opts.get("gpus") else "cpu"})
    return spec


def _write_folder(spec: RunSpec, strat: Strategy, e0: dict[str, float], folder: Path,
                  ws: Workspace, *, on_here: bool) -> tuple[RunSpec, dict[str, Any]]:
    """Write the run's foundation copy, ``config.yaml`` and ``command.sh``; returns the spec
    mace is given and what the record adds about the training file."""
    from ..e0_fit import mace_e0s_argument
    from ..modelfile import foundation_with_e0s  # torch: only when a copy is made

    mace_train, left_out = train_file_for_mace(spec.train_file, ws)
    if not strat.multihead and not strat.from_scratch:
        patched = foundation_with_e0s(spec.foundation_model, e0,
                                      folder / "foundation_e0s.model",
                                      head=spec.settings.get("foundation_head") or None)
        run_spec = replace(spec, foundation_model=str(patched), e0s="foundation")
    else:
        run_spec = replace(spec, e0s=mace_e0s_argument(e0))
    run_spec = replace(run_spec, train_file=mace_train)
    cfg = build_config(run_spec, folder, check_device=on_here)
    extra: dict[str, Any] = {}
    steps = []
    if strat.multihead:
        subset = _replay_subset(spec, folder)
        # mace's own sets by name: mace selects from them (num_samples_pt, subselect_pt)
        cfg["pt_train_file"] = subset.official or subset.file
        if subset.official:
            cfg["filter_type_pt"] = "none"
        extra["replay"] = subset.to_dict()
        if subset.subsets:
            steps.append(subset.shell_line())
    steps.append(shell_command(cfg))
    atomic_write_text(folder / "config.yaml", config_yaml(cfg))
    atomic_write_text(folder / "command.sh", "#!/usr/bin/env bash\n# the same run by hand\n"
                      f"set -e\ncd {shlex.quote(str(folder))}\n" + "\n".join(steps) + "\n")
    if left_out:
        extra.update({"mace_train_file": mace_train, "isolated_atoms_left_out": left_out,
                      "warnings": [isolated_atoms_warning(spec.train_file, left_out, e0)]})
    return run_spec, extra


def _replay_subset(spec: RunSpec, folder: Path) -> ReplaySubset:
    """What a multihead run replays (:mod:`mlipft_core.replay`): its replay file is counted
    once per file version."""
    from ..referencing import composition  # numpy, ase: see above
    from ..replay_sets import official_set_of

    official = official_set_of(spec.replay_file)
    if official is not None:
        return plan_official(official.name, official.title, spec.replay_file,
                             resolved_settings(spec), spec.foundation_model)
    available = len(composition(spec.replay_file)[1])
    return plan_subset(spec.replay_file, available, resolved_settings(spec), folder,
                       spec.foundation_model)


def prepare(spec: RunSpec, *, workspace: Workspace | None = None, sweep: str | None = None,
            trusted: bool = True, e0_values: dict[str, float] | None = None,
            executor: str | None = None, slurm: SlurmOptions | dict[str, Any] | None = None,
            checked: bool = False, admission: Admission | None = None,
            store: RunStore | None = None) -> RunRecord:
    """Check a run and write its folder (E0s resolved, foundation copy with the E0s,
    ``config.yaml``, ``command.sh``, ``run.json`` in state ``queued``). Nothing executes yet.

    Raises
    ------
    StrategyError
        For bad settings or training data; no folder is left behind.

    ``checked=True`` tells that the caller (a sweep) has already checked the data files and
    the ``e0_values`` it passes. The run's owner and time limit come from ``admission`` (what
    :func:`~mlipft_core.jobs.policy.check_submission` gave the submission; default: those the
    workspace's policy gives); ``store`` is the workspace's run store when the caller has it
    already.
    """
    from ..e0_for_runs import check_e0s, checked_e0s  # numpy, ase: see above

    ws = workspace or Workspace()
    store = store or RunStore(ws)
    admitted = admission or Admission.of(policy_for(ws))
    exec_name, exec_opts = executor_choice(ws, executor, slurm)
    strat = get_strategy(spec.strategy)
    spec = _run_spec(spec, exec_name, exec_opts)
    on_here = exec_name == "local"
    settings = resolved_settings(spec)
    rid, folder = store.reserve(spec.strategy, {"run name": spec.name, "sweep name": sweep})
    build_config(spec, folder, check_device=on_here)  # validate before anything is written
    if not checked:
        preflight(spec)
    if e0_values is None:
        e0 = checked_e0s(spec, trusted=trusted, workspace=ws)
    else:
        e0 = e0_values
        if not checked:  # a sweep checks its E0s once, not once per run
            check_e0s(spec.train_file, e0)
    folder.mkdir(parents=True, exist_ok=False)
    try:
        run_spec, extra = _write_folder(spec, strat, e0, folder, ws, on_here=on_here)
        rec = RunRecord(id=rid, name=run_spec.name, strategy=spec.strategy,
                        device=settings["device"], max_epochs=int(settings["max_num_epochs"]),
                        spec={**spec.to_dict(), "e0_values": e0, "settings": settings,
                              **extra},
                        sweep=sweep, executor=exec_name, executor_options=exec_opts,
                        participant=admitted.owner, time_limit_s=admitted.time_limit_s)
        provenance.record(folder, "foundation_model", spec.foundation_model)
        return store.create(rec)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
