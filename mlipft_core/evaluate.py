"""Batched evaluation of a MACE model on a dataset through mace's own graphs and batching.

Predictions are made in batches (``mace.data.AtomicData`` collated as mace's ``DataLoader``
does), not one ASE calculator call per structure; the device is CUDA when available, else CPU.

Evaluation streams: a file is read lazily, one configuration at a time, and graphs are built
batch by batch, so memory stays flat as the file grows. Only what metrics and parity plots
need is kept: per structure its atom count, reference and predicted energy (float64) and
stress, and per atom reference and predicted forces (float32). A file is read twice: a first
pass checks every configuration and collects the reference labels (so bad input is refused
before any model time is spent), a second pass predicts.

Metrics live in :mod:`mlipft_core.metrics`, the workspace's prediction cache in
:mod:`mlipft_core.prediction_cache`; both are also reachable from here.
"""

from __future__ import annotations

import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path

import numpy as np
from ase import Atoms

from .data import (
    CANONICAL,
    NO_ENERGY_MESSAGE,
    LabelKeys,
    check_file,
    check_named_keys,
    configuration_errors,
    configuration_text,
    detect_keys,
    get_label,
    iter_frames,
    stress_3x3,
    structure_problem,
)
from .errors import DataError, MlipftError
from .metrics import EvaluationResult, Metrics, compute_metrics
from .modelwork import model_turn
from .prediction_cache import (
    CachedPredictions,
    prediction_cache_file,
    read_predictions,
    write_predictions,
)
from .registry import check_head, load_model, model_path
from .workspace import Workspace

ProgressFn = Callable[[int, int], None]
#: Automatic batches hold about this many atoms (and at most :data:`MAX_AUTO_BATCH` structures).
ATOMS_PER_BATCH = 384
MAX_AUTO_BATCH = 64


class BatchSizeError(MlipftError):
    """A batch size that is not a positive number of structures."""

    code = "bad_batch_size"


def check_batch_size(batch_size: int | None) -> None:
    """:class:`BatchSizeError` unless ``batch_size`` is ``None`` (automatic) or at least 1."""
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise BatchSizeError(f"batch size must be a whole number of structures of at least 1, "
                             f"not {batch_size!r}")


def default_device() -> str:
    """``cuda`` when a GPU is visible to torch, else ``cpu``."""
    import torch  # heavy: only when a model is used

    return "cuda" if torch.cuda.is_available() else "cpu"


# ----------------------------------------------------------------------------- streaming
class _Rows:
    """Rows appended piece by piece, kept as a few large arrays (not one object per piece)."""

    def __init__(self, dtype, width: int) -> None:
        self.dtype, self.width = dtype, width
        self.parts: list[np.ndarray] = []
        self.pending: list[np.ndarray] = []

    def add(self, rows) -> None:
        self.pending.append(np.asarray(rows, dtype=self.dtype).reshape(-1, self.width))
        if len(self.pending) >= 2048:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.parts.append(np.concatenate(self.pending))
            self.pending = []

    def array(self) -> np.ndarray:
        self._flush()
        if not self.parts:
            return np.zeros((0, self.width), dtype=self.dtype)
        out = np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]
        self.parts = [out]
        return out


class _Source:
    """Configurations that can be gone through more than once without holding them all: a
    file is re-read lazily on every pass, a list is used as it is."""

    def __init__(self, data: str | Path | Iterable[Atoms]) -> None:
        if isinstance(data, (str, Path)):
            self.path: Path | None = Path(data).expanduser()
            self.label = check_file(self.path)
            self.frames: Sequence[Atoms] | None = None
        else:
            self.path = None
            self.label = ""
            self.frames = data if isinstance(data, Sequence) else list(data)

    def __iter__(self) -> Iterator[Atoms]:
        return iter_frames(self.path) if self.path is not None else iter(self.frames)


@dataclass
class References:
    """What a dataset holds besides its structures: label keys, atom counts, reference labels
    (energies float64, NaN where unlabelled; forces float32, None unless every structure has
    them; stresses of labelled periodic structures, NaN elsewhere) and config types."""

    keys: LabelKeys
    n_atoms: np.ndarray
    ref_energy: np.ndarray
    ref_forces: np.ndarray | None
    ref_stress: np.ndarray | None
    config_types: list[str]

    @property
    def n(self) -> int:
        return len(self.n_atoms)


def scan(frames: Iterable[Atoms], keys: LabelKeys | None = None, *, label: str = "",
         net=None, check_geometry: bool = True, energy_key: str | None = None,
         forces_key: str | None = None, stress_key: str | None = None,
         require_labels: bool = True) -> References:
    """One pass over ``frames``: check every configuration and collect its reference labels.

    Refuses (:class:`DataError`, with the configuration's index) what validation calls an
    error, through the same check (:func:`mlipft_core.data.configuration_errors`): a
    configuration without atoms, NaN or infinite positions, cells or labels, forces or
    stresses of the wrong shape, a degenerate or huge cell, overlapping atoms, (with ``net``)
    elements the model does not cover and, with ``require_labels``, a file without energy
    labels or configurations without one. Keys named by the user must exist; the others are
    detected from the first 200 configurations.

    Parameters
    ----------
    require_labels
        Whether every configuration must carry an energy label (scoring a model); ``False``
        when only the predictions are wanted (then a missing energy is NaN).
    """
    prefix = f"{label}: " if label else ""
    cutoff = float(net.r_max) if net is not None else None
    known = [int(z) for z in net.atomic_numbers] if net is not None else None
    it = iter(frames)
    head = list(islice(it, 200))
    if not head:
        raise DataError(f"{prefix}no configurations to evaluate", code="empty")
    check_named_keys(head, label or "data", energy=energy_key, forces=forces_key,
                     stress=stress_key)
    if keys is None:
        keys = detect_keys(head, energy_key, forces_key, stress_key)
    if require_labels and keys.energy is None:
        raise DataError(f"{prefix}{NO_ENERGY_MESSAGE}; without reference energies there is "
                        "nothing to score the model against", code="missing_energy")
    ignored = set() if require_labels else {"missing_energy"}
    n_atoms = array.array("q")
    ref_e = array.array("d")
    forces: _Rows | None = _Rows(np.float32, 3) if keys.forces is not None else None
    stress: _Rows | None = _Rows(np.float64, 9) if keys.stress is not None else None
    any_stress = False
    types: dict[str, str] = {}
    config_types: list[str] = []
    nan9 = np.full(9, np.nan)
    for i, a in enumerate(chain(head, it)):
        for code, what in configuration_errors(a, keys, cutoff=cutoff, centered=True,
                                               known_numbers=known, geometry=check_geometry):
            if code not in ignored:
                raise DataError(f"{prefix}{configuration_text(i, what)}; fix or remove it "
                                "(validation lists every such configuration)", code=code)
        n = len(a)
        n_atoms.append(n)
        e = get_label(a, keys.energy, "energy")
        ref_e.append(np.nan if e is None else float(e))
        if keys.forces is not None:
            f = get_label(a, keys.forces, "forces")
            if f is None and n == 1:
                f = np.zeros((1, 3))  # an isolated atom feels no force
            if f is None:
                forces = None  # not every structure has forces: no force metrics
            elif forces is not None:
                forces.add(np.asarray(f, dtype=float))
        if stress is not None:
            v = get_label(a, keys.stress, "stress")
            if v is not None and a.pbc.all():
                stress.add(stress_3x3(v).reshape(9))
                any_stress = True
            else:
                stress.add(nan9)
        ct = str(a.info.get("config_type", "Default"))
        config_types.append(types.setdefault(ct, ct))
    ref_s = stress.array().reshape(-1, 3, 3) if stress is not None and any_stress else None
    return References(keys, np.frombuffer(n_atoms, dtype=np.int64).astype(int),
                      np.frombuffer(ref_e, dtype=np.float64).copy(),
                      None if forces is None else forces.array(), ref_s, config_types)


def _batches(frames: Iterable[Atoms], batch_size: int | None) -> Iterator[list[Atoms]]:
    """Consecutive batches: ``batch_size`` structures, or about :data:`ATOMS_PER_BATCH` atoms
    (at most :data:`MAX_AUTO_BATCH` structures) when ``None``."""
    cap = batch_size or MAX_AUTO_BATCH
    batch: list[Atoms] = []
    atoms_in = 0
    for a in frames:
        if batch and (len(batch) >= cap or (batch_size is None
                                             and atoms_in + len(a) > ATOMS_PER_BATCH)):
            yield batch
            batch, atoms_in = [], 0
        batch.append(a)
        atoms_in += len(a)
    if batch:
        yield batch


def _predict_stream(net, frames: Iterable[Atoms], **kwargs
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`_predict_batches` in this process's model turn: torch's default dtype, which it
    sets, and torch.fx's patches while another thread loads a model are process-wide."""
    with model_turn():
        return _predict_batches(net, frames, **kwargs)


def _predict_batches(net, frames: Iterable[Atoms], *, head: str | None, batch_size: int | None,
                     device: str | None, progress: ProgressFn | None, total: int | None,
                     stress: bool, check: bool) -> tuple[np.ndarray, np.ndarray,
                                                         np.ndarray | None]:
    """Energies (float64, eV), stacked forces (float32, eV/Å) and, with ``stress``, stresses
    (n, 3, 3) of ``frames``; graphs are built one batch at a time.

    Non-periodic structures are centred on the origin first: mace's neighbour list sizes its
    bins by the largest coordinate, so a molecule far from the origin would otherwise cost
    gigabytes. With ``check``, each structure is checked as in :func:`scan` first.
    """
    # torch and mace: heavy, only when a model is used
    import torch
    from mace import data as mace_data
    from mace.tools import torch_geometric, utils

    device = device or default_device()
    head = check_head(net, head)
    dtype = next(net.parameters()).dtype
    energies = _Rows(np.float64, 1)
    forces = _Rows(np.float32, 3)
    stresses = _Rows(np.float64, 9) if stress else None
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        net = net.to(device)
        z_table = utils.AtomicNumberTable([int(z) for z in net.atomic_numbers])
        cutoff = float(net.r_max)
        heads = list(getattr(net, "heads", None) or ["Default"])
        collate = torch_geometric.dataloader.Collater(follow_batch=[None], exclude_keys=[None])
        done = 0
        for batch_frames in _batches(frames, batch_size):
            graphs = []
            for k, atoms in enumerate(batch_frames):
                if check:
                    # not overlaps: relaxations (the collapse probe) pass through them
                    problem = structure_problem(atoms, cutoff=cutoff, centered=True,
                                                known_numbers=z_table.zs, overlap=False)
                    if problem:
                        raise DataError(f"configuration #{done + k} {problem[1]}",
                                        code=problem[0])
                cfg = mace_data.config_from_atoms(atoms, head_name=head)
                if not any(cfg.pbc) and len(cfg.positions):
                    pos = cfg.positions
                    cfg.positions = pos - (pos.min(axis=0) + pos.max(axis=0)) / 2
                graphs.append(mace_data.AtomicData.from_config(
                    cfg, z_table=z_table, cutoff=cutoff, heads=heads))
            batch = collate(graphs).to(device)
            del graphs
            out = net(batch.to_dict(), training=False, compute_force=True,
                      compute_stress=stress)
            energies.add(out["energy"].detach().cpu().numpy())
            forces.add(out["forces"].detach().cpu().numpy())
            if stresses is not None:
                stresses.add(out["stress"].detach().cpu().numpy().reshape(-1, 9))
            done += int(batch.num_graphs)
            del batch, out
            if progress is not None:
                progress(done, total if total is not None else done)
    finally:
        torch.set_default_dtype(previous)
    return (energies.array().reshape(-1), forces.array(),
            None if stresses is None else stresses.array().reshape(-1, 3, 3))


def predict(net, frames: Iterable[Atoms], *, head: str | None = None,
            batch_size: int | None = None, device: str | None = None,
            progress: ProgressFn | None = None, stress_out: list | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Energies (eV, float64) and forces (eV/Å, stacked, float32) of ``frames`` with a loaded
    model, in batches built one at a time.

    ``batch_size`` defaults to about :data:`ATOMS_PER_BATCH` atoms per batch. When
    ``stress_out`` is a list, the predicted stresses (eV/Å³, one 3x3 per structure;
    meaningless for non-periodic ones) are appended to it. Structures that no model can be
    evaluated on (see :func:`mlipft_core.data.structure_problem`) raise :class:`DataError`.
    """
    check_batch_size(batch_size)
    total = len(frames) if hasattr(frames, "__len__") else None
    e, f, s = _predict_stream(net, frames, head=head, batch_size=batch_size, device=device,
                              progress=progress, total=total, stress=stress_out is not None,
                              check=True)
    if stress_out is not None and s is not None:
        stress_out.extend(s)
    return e, f


def evaluate_model(model: str | Path, data: str | Path | Sequence[Atoms], *,
                   head: str | None = None, keys: LabelKeys | None = None,
                   batch_size: int | None = None, device: str | None = None, trusted: bool = False,
                   progress: ProgressFn | None = None, energy_key: str | None = None,
                   forces_key: str | None = None, stress_key: str | None = None,
                   require_labels: bool = True) -> EvaluationResult:
    """Evaluate a model (registry name or path) on a dataset and compute its errors.

    Parameters
    ----------
    model
        Registry name or file path (``trusted`` must be set for local files).
    data
        extxyz path (read lazily, twice: checks and labels, then predictions) or a list of
        configurations with labels.
    head
        Model head (default: the first).
    keys
        Label keys; detected when ``None`` (``energy_key``/``forces_key``/``stress_key``
        override the guess and must exist in the data).
    progress
        Called as ``progress(done, total)`` (structures) after every batch.
    require_labels
        Refuse data without energy labels (or with configurations lacking one), as
        validation does; ``False`` predicts them (NaN reference energies).

    Raises
    ------
    DataError
        Before any model time is spent, for what validation calls an error (see
        :func:`scan`).
    """
    check_batch_size(batch_size)
    source = _Source(data)
    net = load_model(model, device=device or default_device(), trusted=trusted)
    head = check_head(net, head)
    refs = scan(source, keys, label=source.label, net=net, energy_key=energy_key,
                forces_key=forces_key, stress_key=stress_key, require_labels=require_labels)
    pred_e, pred_f, pred_s = _predict_stream(
        net, source, head=head, batch_size=batch_size, device=device, progress=progress,
        total=refs.n, stress=refs.ref_stress is not None, check=False)
    return _result(model, head, refs, pred_e, pred_f, pred_s, source.label)


def _result(model, head: str, refs: References, pred_e: np.ndarray, pred_f: np.ndarray,
            pred_s: np.ndarray | None, label: str = "") -> EvaluationResult:
    """Predictions next to the reference labels, with their metrics."""
    if len(pred_e) != refs.n or len(pred_f) != int(refs.n_atoms.sum()):
        raise DataError(f"{label or 'the data'} changed while it was evaluated "
                        f"({refs.n} configurations checked, {len(pred_e)} predicted); "
                        "evaluate it again", code="changed")
    return EvaluationResult(
        model=str(model), head=head, n_atoms=refs.n_atoms, ref_energy=refs.ref_energy,
        pred_energy=pred_e, ref_forces=refs.ref_forces, pred_forces=pred_f,
        config_types=refs.config_types,
        metrics=compute_metrics(refs.ref_energy, pred_e, refs.n_atoms, refs.ref_forces,
                                pred_f, refs.ref_stress, pred_s),
        ref_stress=refs.ref_stress, pred_stress=pred_s)


def evaluate_cached(model: str | Path, data: str | Path, *, head: str | None = None,
                    workspace: Workspace | None = None, trusted: bool = False,
                    batch_size: int | None = None,
                    progress: ProgressFn | None = None, require_labels: bool = False
                    ) -> EvaluationResult:
    """:func:`evaluate_model` with predictions cached in the workspace.

    The cache key is the SHA-256 of the model file, the head and the SHA-256 of the data file,
    so a second look costs nothing and a changed file is never served stale.

    Unlike :func:`evaluate_model`, a configuration without an energy label is predicted
    (its reference energy is NaN) unless ``require_labels`` is set: callers use the cache for
    predictions alone too (E0 fits, reaction scans). Everything else validation calls an
    error is refused.
    """
    check_batch_size(batch_size)
    ws = workspace or Workspace()
    mpath = model_path(model, trusted=trusted)
    source = _Source(data)
    cache = prediction_cache_file(mpath, source.path, head, ws)
    if cache.is_file():
        refs = scan(source, label=source.label, check_geometry=False,
                    require_labels=require_labels)
        kept = read_predictions(cache)
        pred_e, pred_f, used_head, pred_s = kept.energy, kept.forces, kept.head, kept.stress
    else:
        net = load_model(mpath, trusted=True)
        used_head = check_head(net, head)
        refs = scan(source, label=source.label, net=net, require_labels=require_labels)
        pred_e, pred_f, pred_s = _predict_stream(
            net, source, head=used_head, batch_size=batch_size, device=None,
            progress=progress, total=refs.n, stress=refs.ref_stress is not None, check=False)
        if len(pred_e) == refs.n:
            write_predictions(cache, CachedPredictions(pred_e, pred_f, used_head, pred_s),
                              model=mpath, data=data)
    return _result(model, used_head, refs, pred_e, pred_f, pred_s, source.label)


__all__ = ["CANONICAL", "BatchSizeError", "EvaluationResult", "Metrics", "References",
           "check_batch_size", "compute_metrics", "default_device", "evaluate_cached",
           "evaluate_model", "predict", "prediction_cache_file", "scan"]

