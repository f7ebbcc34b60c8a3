"""Batched evaluation of a MACE model on a dataset through mace's own graphs and batching.

Predictions are made in batches (``mace.data.AtomicData`` collated as mace's ``DataLoader``
does), not one ASE calculator call per structure; the device is CUDA when available, else CPU.

Evaluation streams: a file is read lazily, one configuration at a time, and graphs are built
batch by batch, so memory stays flat as the file grows. Only what metrics and parity plots
need is kept: per structure its atom count, reference and predicted energy (float64) and
stress, and per atom reference and predicted forces (float32). A file is read twice: a first
pass checks every configuration and collects the reference labels (so bad input is refused
before any model time is spent), a second pass predicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .data import (
    CANONICAL,
    NO_ENERGY_MESSAGE,
    LabelKeys,
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
from .modelwork import model_turn
from .registry import check_head, load_model

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
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Metrics:
    """Energy-per-atom and force errors (meV/atom, meV/Å)."""

    n_structures: int
    n_atoms: int
    energy_rmse_mev_per_atom: float | None
    energy_mae_mev_per_atom: float | None
    forces_rmse_mev_per_a: float | None
    forces_mae_mev_per_a: float | None
    stress_rmse_mev_per_a3: float | None = None   # periodic structures with a stress label
    stress_mae_mev_per_a3: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compute_metrics(ref_e: np.ndarray, pred_e: np.ndarray, n_atoms: np.ndarray,
                    ref_f: np.ndarray | None, pred_f: np.ndarray | None,
                    ref_s: np.ndarray | None = None, pred_s: np.ndarray | None = None
                    ) -> Metrics:
    """Errors from reference and predicted totals (eV), force components (eV/Å) and, where
    given, stress components (eV/Å³; NaN rows of ``ref_s`` are unlabelled and skipped)."""
    ok = np.isfinite(ref_e)
    de = (pred_e[ok] - ref_e[ok]) / n_atoms[ok]
    e_rmse = float(np.sqrt(np.mean(de**2)) * 1000) if de.size else None
    e_mae = float(np.mean(np.abs(de)) * 1000) if de.size else None
    f_rmse = f_mae = None
    if ref_f is not None and pred_f is not None and ref_f.size:
        df = (np.asarray(pred_f, dtype=np.float64) - ref_f).ravel()  # float32 arrays kept
        f_rmse = float(np.sqrt(np.mean(df**2)) * 1000)
        f_mae = float(np.mean(np.abs(df)) * 1000)
    s_rmse = s_mae = None
    if ref_s is not None and pred_s is not None:
        ok = np.all(np.isfinite(ref_s.reshape(len(ref_s), -1)), axis=1)
        if ok.any():
            ds = (pred_s[ok] - ref_s[ok]).ravel()
            s_rmse = float(np.sqrt(np.mean(ds**2)) * 1000)
            s_mae = float(np.mean(np.abs(ds)) * 1000)
    return Metrics(int(len(ref_e)), int(n_atoms.sum()), e_rmse, e_mae, f_rmse, f_mae,
                   s_rmse, s_mae)


@dataclass
class EvaluationResult:
    """Reference labels and predictions of one model (and head) on one dataset."""

    model: str
    head: str
    n_atoms: np.ndarray        # (n_configs,)
    ref_energy: np.ndarray     # eV, NaN where unlabelled
    pred_energy: np.ndarray    # eV
    ref_forces: np.ndarray | None   # (n_atoms_total, 3) eV/Å
    pred_forces: np.ndarray         # (n_atoms_total, 3)
    config_types: list[str]
    metrics: Metrics
    ref_stress: np.ndarray | None = None    # (n, 3, 3) eV/Å³, NaN where unlabelled
    pred_stress: np.ndarray | None = None
    #: energies relative to E0s (:class:`~mlipft_core.referencing.ReferencedEnergies`),
    #: set by a comparison
    referenced: Any = None

    @property
    def ref_energy_per_atom(self) -> np.ndarray:
        return self.ref_energy / self.n_atoms

    @property
    def pred_energy_per_atom(self) -> np.ndarray:
        return self.pred_energy / self.n_atoms

    def per_config_type(self) -> dict[str, Metrics]:
        """Metrics for each ``config_type``."""
        out = {}
        ct = np.array(self.config_types)
        atom_owner = np.repeat(np.arange(len(self.n_atoms)), self.n_atoms)
        for t in sorted(set(self.config_types)):
            sel = ct == t
            amask = sel[atom_owner]
            out[t] = compute_metrics(
                self.ref_energy[sel], self.pred_energy[sel], self.n_atoms[sel],
                None if self.ref_forces is None else self.ref_forces[amask],
                self.pred_forces[amask],
                None if self.ref_stress is None else self.ref_stress[sel],
                None if self.pred_stress is None else self.pred_stress[sel])
        return out


def reference_stress(frames: Sequence[Atoms], keys: LabelKeys) -> np.ndarray | None:
    """(n, 3, 3) stress labels of periodic structures (NaN elsewhere); None if there are none."""
    if keys.stress is None:
        return None
    out = np.full((len(frames), 3, 3), np.nan)
    for i, a in enumerate(frames):
        v = get_label(a, keys.stress, "stress")
        if v is None or not a.pbc.all():
            continue
        out[i] = stress_3x3(v)
    return out if np.isfinite(out).any() else None


def reference_labels(frames: Sequence[Atoms], keys: LabelKeys
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """Reference energies (NaN where missing) and stacked forces (None unless all present)."""
    ref_e = np.array([np.nan if (v := get_label(a, keys.energy, "energy")) is None else float(v)
                      for a in frames])
    ref_f = None
    if keys.forces is not None:
        parts = [get_label(a, keys.forces, "forces") for a in frames]
        if all(p is not None and np.shape(p) == (len(a), 3) for p, a in zip(parts, frames)):
            ref_f = np.concatenate([np.asarray(p, dtype=float) for p in parts])
    return ref_e, ref_f


def auto_batch_size(frames: Sequence[Atoms], atoms_per_batch: int = ATOMS_PER_BATCH) -> int:
    """Structures per batch for about ``atoms_per_batch`` atoms (batching helps small ones)."""
    mean = float(np.mean([len(a) for a in frames])) if len(frames) else 1.0
    return int(max(1, min(MAX_AUTO_BATCH, atoms_per_batch // max(1.0, mean))))


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
            from .data import check_file

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
    import array

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


def prediction_cache_file(model_file: str | Path, data_file: str | Path, head: str | None,
                          workspace) -> Path:
    """Where :func:`evaluate_cached` keeps the predictions of a model file (and head) on a
    data file: named by the SHA-256 of both files, so whoever asks (the E0 fit, a launch,
    the Compare page) finds what another step already predicted."""
    from .workspace import cached_sha256

    key = f"{cached_sha256(model_file)[:20]}-{head or 'first'}-{cached_sha256(data_file)[:20]}"
    return Path(workspace.cache) / "predictions" / f"{key}.npz"


def evaluate_cached(model: str | Path, data: str | Path, *, head: str | None = None,
                    workspace=None, trusted: bool = False, batch_size: int | None = None,
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
    import io
    import json

    from .registry import model_path
    from .workspace import Workspace, atomic_write_bytes

    check_batch_size(batch_size)
    ws = workspace or Workspace()
    mpath = model_path(model, trusted=trusted)
    source = _Source(data)
    cache = prediction_cache_file(mpath, source.path, head, ws)
    if cache.is_file():
        refs = scan(source, label=source.label, check_geometry=False,
                    require_labels=require_labels)
        z = np.load(cache, allow_pickle=False)
        pred_e, pred_f, used_head = z["pred_energy"], z["pred_forces"], str(z["head"])
        pred_s = z["pred_stress"] if "pred_stress" in z.files else None
    else:
        net = load_model(mpath, trusted=True)
        used_head = check_head(net, head)
        refs = scan(source, label=source.label, net=net, require_labels=require_labels)
        pred_e, pred_f, pred_s = _predict_stream(
            net, source, head=used_head, batch_size=batch_size, device=None,
            progress=progress, total=refs.n, stress=refs.ref_stress is not None, check=False)
        if len(pred_e) == refs.n:
            extra = {} if pred_s is None else {"pred_stress": pred_s}
            buf = io.BytesIO()
            np.savez(buf, pred_energy=pred_e, pred_forces=pred_f, head=np.array(used_head),
                     meta=np.array(json.dumps({"model": str(mpath), "data": str(data)})),
                     **extra)
            atomic_write_bytes(cache, buf.getvalue())
    return _result(model, used_head, refs, pred_e, pred_f, pred_s, source.label)


__all__ = ["CANONICAL", "BatchSizeError", "EvaluationResult", "Metrics", "References",
           "check_batch_size", "compute_metrics", "default_device", "evaluate_cached",
           "evaluate_model", "predict", "prediction_cache_file", "scan"]
