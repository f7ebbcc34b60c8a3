"""Whole actions on the models and files a user names: the model table, a dataset's check,
the E0s of a training file, a comparison of models, MD from a structure file.

Each is what one ``mlipft`` command does between reading its options and printing: it reads
the files, fills what the user left out (:mod:`mlipft_core.defaults`) and calls the core
function that does the work. ``trust`` is as in :mod:`mlipft_core.defaults`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .defaults import TrustFn, isolated_file_or_default, never_trusted
from .errors import DataError
from .registry import expected_path, get_spec, inspect_model, is_available, list_models, model_path

if TYPE_CHECKING:
    from .compare import ComparisonRow
    from .data import Finding, LabelKeys
    from .e0 import E0Inputs, E0Result
    from .md import MDResult


def model_table() -> list[dict[str, Any]]:
    """The foundation-model registry, one row per model.

    Returns
    -------
    list of dict
        Each model's registry entry, with ``available_offline`` (loadable without a
        download) and ``file`` (where it is read from).
    """
    rows = []
    for spec in list_models():
        row = spec.to_dict()
        row["available_offline"] = is_available(spec)
        row["file"] = str(expected_path(spec))
        rows.append(row)
    return rows


def is_local_model_file(model: str) -> bool:
    """Whether a model is named by the path of an existing file, not by a registry name.

    Parameters
    ----------
    model
        Registry name or path.

    Returns
    -------
    bool
        ``True`` for a file that is no registry entry; ``False`` for a registry name, a
        missing file, or a name no file can have (a NUL byte: loading it says what is
        wrong).
    """
    try:
        return get_spec(model) is None and Path(model).expanduser().is_file()
    except (OSError, ValueError):
        return False


@dataclass
class DatasetCheck:
    """What the check of a dataset found.

    Attributes
    ----------
    file
        The dataset.
    n_configs
        Configurations read (0 when it could not be read).
    keys
        The label keys used (``None`` when it could not be read).
    findings
        Problems, each with its code and severity.
    """

    file: str
    n_configs: int = 0
    keys: LabelKeys | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No finding is an error."""
        return not any(f.severity == "error" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON: ``file``, ``n_configs``, ``keys``, ``findings``, ``ok``."""
        return {"file": self.file, "n_configs": self.n_configs,
                "keys": None if self.keys is None else self.keys.to_dict(),
                "findings": [f.to_dict() for f in self.findings], "ok": self.ok}


def check_dataset(data: str, *, energy_key: str | None = None, forces_key: str | None = None,
                  stress_key: str | None = None, model: str | None = None,
                  trust: TrustFn = never_trusted) -> DatasetCheck:
    """Check a dataset for problems, optionally against a model's elements and cutoff.

    Parameters
    ----------
    data
        The extxyz file.
    energy_key, forces_key, stress_key
        Label keys the user named (default: detected). A named key the file lacks is an
        ``unknown_key`` error, never replaced by a guess.
    model
        Registry name or path of a model to check element coverage against.
    trust
        Whether the user vouches for the model, should it be a local file.

    Returns
    -------
    DatasetCheck
        The findings; a file that cannot be read is one finding.
    """
    # data: reading structures loads ase and numpy, only for the commands that read files
    from .data import Finding, detect_keys, read_frames, unknown_key_message, validate

    try:
        frames = read_frames(data)
    except DataError as exc:
        return DatasetCheck(data, findings=[Finding(exc.code, "error", str(exc))])
    named = {"energy": energy_key, "forces": forces_key, "stress": stress_key}
    unknown = {q: msg for q, k in named.items()
               if k and (msg := unknown_key_message(frames, q, k, data))}
    keys = detect_keys(frames, *(None if q in unknown else k for q, k in named.items()))
    for q in unknown:  # not a guess in place of the key the user named
        setattr(keys, q, None)
    elements = cutoff = None
    if model:
        info = inspect_model(model, trusted=trust(model))
        elements, cutoff = info.elements, info.cutoff
    findings = [Finding("unknown_key", "error", msg) for msg in unknown.values()]
    findings += [f for f in validate(frames, keys, elements, cutoff=cutoff)
                 if f.code not in {f"missing_{q}" for q in unknown}]
    return DatasetCheck(data, n_configs=len(frames), keys=keys, findings=findings)


def e0s_of_file(data: str, model: str, method: str, *, head: str | None = None,
                values: Mapping[str, float] | str | None = None,
                isolated_file: str | None = None,
                trust: TrustFn = never_trusted) -> tuple[E0Inputs, E0Result]:
    """The atomic reference energies of a training set by one method.

    Parameters
    ----------
    data
        The training extxyz file.
    model
        The foundation model: registry name or path.
    method
        ``foundation``, ``average``, ``estimated``, ``isolated`` or ``explicit``.
    head
        Model head (default: the first).
    values
        Explicit E0s (method ``explicit``): a mapping, JSON text or a file.
    isolated_file
        IsolatedAtom configurations of the reference method (default for demo data: its
        bundled isolated atoms).
    trust
        Whether the user vouches for the model, should it be a local file.

    Returns
    -------
    (E0Inputs, E0Result)
        The data as evaluated by the model, and the E0s with their diagnostics.
    """
    # e0: evaluates the model on the data (torch, ase), only when E0s are asked for
    from .e0 import compute, prepare

    inputs = prepare(data, model, head=head, trusted=trust(model),
                     isolated_file=isolated_file_or_default(isolated_file, data))
    return inputs, compute(inputs, method, explicit=values)


def compare_models(models: Sequence[str], target: str, pretrain: str | None = None, *,
                   foundation: str | None = None,
                   trust: TrustFn = never_trusted) -> list[ComparisonRow]:
    """Target accuracy and forgetting of runs and models side by side.

    Parameters
    ----------
    models
        ``.model`` file paths, registry names or ids of finished runs.
    target
        Target test extxyz.
    pretrain
        Held-out pretraining test set (default for an official foundation model: its
        forgetting set, drawn from its replay set when that is cached).
    foundation
        Reference model of the forgetting ratio (default: the foundation model of the
        first run).
    trust
        Whether the user vouches for ``foundation``, should it be a local file.

    Returns
    -------
    list of ComparisonRow
        One row per model and head.
    """
    # compare: evaluates models (torch, ase), only when a comparison is asked for
    from .compare import compare, resolve_models
    from .defaults import pretrain_test_for

    refs = resolve_models(models)
    reference = (str(model_path(foundation, trusted=trust(foundation))) if foundation
                 else None)
    if pretrain is None:  # the foundation model's own forgetting set, where it has one
        pretrain = pretrain_test_for(foundation or next(
            (r.foundation or r.path for r in refs), None), demo=False)
    rows, _ = compare(refs, target, pretrain, foundation=reference)
    return rows


def md_on_file(model: str, structure_file: str, *, steps: int, temperature_k: float,
               timestep_fs: float, index: int = 0, head: str | None = None,
               ensemble: str = "langevin", seed: int = 0, interval: int = 10,
               trajectory: str | None = None, trust: TrustFn = never_trusted) -> MDResult:
    """Molecular dynamics with a model from a structure of a file.

    The structure, the settings and the trajectory path are checked, in that order, before
    any model time is spent.

    Parameters
    ----------
    model
        Registry name or path.
    structure_file
        Structure file (extxyz or any format ASE reads).
    steps, temperature_k, timestep_fs
        Length, temperature (K) and time step (fs) of the run.
    index
        Which structure of the file.
    head
        Model head (default: the first).
    ensemble
        ``langevin``, ``bussi`` or ``nve``.
    seed
        Seed of the initial velocities and the thermostat.
    interval
        Steps between recorded frames.
    trajectory
        Write the recorded frames to this extxyz file.
    trust
        Whether the user vouches for the model, should it be a local file.

    Returns
    -------
    MDResult
        Stability, speed and radial distribution functions of the run.
    """
    # md: reads structures and runs a model (ase, torch), only when MD is asked for
    from .md import MDSettings, check_trajectory_path, read_structure, run_md_for_model

    structure = read_structure(structure_file, index)
    settings = MDSettings(ensemble=ensemble, temperature_k=temperature_k,
                          timestep_fs=timestep_fs, steps=steps, seed=seed, interval=interval)
    settings.check()
    check_trajectory_path(trajectory)
    return run_md_for_model(model, structure, settings, head=head, trusted=trust(model),
                            trajectory=trajectory, source=structure_file)
