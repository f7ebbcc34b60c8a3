"""Batched evaluation of a MACE model on a dataset through mace's own data loader.

Predictions are made in batches (``mace.data.AtomicData`` + mace's ``DataLoader``), not one
ASE calculator call per structure; the device is CUDA when available, else CPU.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from ase import Atoms

from .data import CANONICAL, LabelKeys, detect_keys, get_label, read_frames, stress_3x3
from .errors import DataError
from .registry import check_head, load_model

ProgressFn = Callable[[int, int], None]
#: torch's default dtype is process-wide: predictions of different models (e.g. from two
#: browser sessions) must not interleave while it is switched.
_DTYPE_LOCK = threading.RLock()


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
        df = (pred_f - ref_f).ravel()
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


def auto_batch_size(frames: Sequence[Atoms], atoms_per_batch: int = 384) -> int:
    """Structures per batch for about ``atoms_per_batch`` atoms (batching helps small ones)."""
    mean = float(np.mean([len(a) for a in frames])) if len(frames) else 1.0
    return int(max(1, min(64, atoms_per_batch // max(1.0, mean))))


def predict(net, frames: Sequence[Atoms], *, head: str | None = None,
            batch_size: int | None = None, device: str | None = None,
            progress: ProgressFn | None = None, stress_out: list | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Energies (eV) and forces (eV/Å, stacked) of ``frames`` with a loaded model, in batches.

    ``batch_size`` defaults to :func:`auto_batch_size`. When ``stress_out`` is a list, the
    predicted stresses (eV/Å³, one 3x3 per structure; meaningless for non-periodic ones) are
    appended to it.
    """
    import torch
    from mace import data as mace_data
    from mace.tools import torch_geometric, utils

    device = device or default_device()
    head = check_head(net, head)
    dtype = next(net.parameters()).dtype
    _DTYPE_LOCK.acquire()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        net = net.to(device)
        z_table = utils.AtomicNumberTable([int(z) for z in net.atomic_numbers])
        known = set(z_table.zs)
        heads = list(getattr(net, "heads", None) or ["Default"])
        dataset = []
        for i, atoms in enumerate(frames):
            unknown = set(int(z) for z in atoms.numbers) - known
            if unknown:
                from ase.data import chemical_symbols

                raise DataError(f"configuration #{i} has elements the model does not cover: "
                                f"{', '.join(chemical_symbols[z] for z in sorted(unknown))}",
                                code="elements_not_covered")
            cfg = mace_data.config_from_atoms(atoms, head_name=head)
            dataset.append(mace_data.AtomicData.from_config(
                cfg, z_table=z_table, cutoff=float(net.r_max), heads=heads))
        loader = torch_geometric.dataloader.DataLoader(
            dataset=dataset, batch_size=batch_size or auto_batch_size(frames), shuffle=False,
            drop_last=False)
        energies, forces = [], []
        done = 0
        for batch in loader:
            batch = batch.to(device)
            out = net(batch.to_dict(), training=False, compute_force=True,
                      compute_stress=stress_out is not None)
            if stress_out is not None:
                stress_out.extend(out["stress"].detach().cpu().numpy().astype(float))
            energies.append(out["energy"].detach().cpu().numpy())
            forces.append(out["forces"].detach().cpu().numpy())
            done += int(batch.num_graphs)
            if progress is not None:
                progress(done, len(dataset))
    finally:
        torch.set_default_dtype(previous)
        _DTYPE_LOCK.release()
    return (np.concatenate(energies).astype(float),
            np.concatenate(forces).astype(float) if forces else np.zeros((0, 3)))


def evaluate_model(model: str | Path, data: str | Path | Sequence[Atoms], *,
                   head: str | None = None, keys: LabelKeys | None = None,
                   batch_size: int | None = None, device: str | None = None, trusted: bool = False,
                   progress: ProgressFn | None = None) -> EvaluationResult:
    """Evaluate a model (registry name or path) on a dataset and compute its errors.

    Parameters
    ----------
    model
        Registry name or file path (``trusted`` must be set for local files).
    data
        extxyz path or a list of configurations with labels.
    head
        Model head (default: the first).
    keys
        Label keys; detected when ``None``.
    """
    frames = read_frames(data) if isinstance(data, (str, Path)) else list(data)
    if not frames:
        raise DataError("no configurations to evaluate", code="empty")
    keys = keys or detect_keys(frames)
    net = load_model(model, device=device or default_device(), trusted=trusted)
    head = check_head(net, head)
    ref_s = reference_stress(frames, keys)
    pred_e, pred_f, pred_s = _predict_labels(net, frames, head, ref_s is not None,
                                             batch_size=batch_size, device=device,
                                             progress=progress)
    return _result(model, head, frames, keys, ref_s, pred_e, pred_f, pred_s)


def _predict_labels(net, frames: Sequence[Atoms], head: str, with_stress: bool, **kwargs
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`predict` plus stresses when the data has stress labels to compare with."""
    stress: list | None = [] if with_stress else None
    pred_e, pred_f = predict(net, frames, head=head, stress_out=stress, **kwargs)
    return pred_e, pred_f, None if stress is None else np.array(stress)


def _result(model, head: str, frames: Sequence[Atoms], keys: LabelKeys,
            ref_s: np.ndarray | None, pred_e: np.ndarray, pred_f: np.ndarray,
            pred_s: np.ndarray | None) -> EvaluationResult:
    """Predictions next to the reference labels, with their metrics."""
    n_atoms = np.array([len(a) for a in frames])
    ref_e, ref_f = reference_labels(frames, keys)
    return EvaluationResult(
        model=str(model), head=head, n_atoms=n_atoms, ref_energy=ref_e, pred_energy=pred_e,
        ref_forces=ref_f, pred_forces=pred_f,
        config_types=[str(a.info.get("config_type", "Default")) for a in frames],
        metrics=compute_metrics(ref_e, pred_e, n_atoms, ref_f, pred_f, ref_s, pred_s),
        ref_stress=ref_s, pred_stress=pred_s)


def evaluate_cached(model: str | Path, data: str | Path, *, head: str | None = None,
                    workspace=None, trusted: bool = False, batch_size: int | None = None,
                    progress: ProgressFn | None = None) -> EvaluationResult:
    """:func:`evaluate_model` with predictions cached in the workspace.

    The cache key is the SHA-256 of the model file, the head and the SHA-256 of the data file,
    so a second look costs nothing and a changed file is never served stale.
    """
    from .registry import check_head, load_model, model_path
    from .workspace import Workspace, atomic_write_bytes, file_sha256

    import io
    import json

    ws = workspace or Workspace()
    mpath = model_path(model, trusted=trusted)
    frames = read_frames(data)
    keys = detect_keys(frames)
    key = f"{file_sha256(mpath)[:20]}-{head or 'first'}-{file_sha256(Path(data))[:20]}"
    cache = ws.cache / "predictions" / f"{key}.npz"
    ref_s = reference_stress(frames, keys)
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        pred_e, pred_f, used_head = z["pred_energy"], z["pred_forces"], str(z["head"])
        pred_s = z["pred_stress"] if "pred_stress" in z.files else None
    else:
        net = load_model(mpath, trusted=True)
        used_head = check_head(net, head)
        pred_e, pred_f, pred_s = _predict_labels(net, frames, used_head, ref_s is not None,
                                                 batch_size=batch_size, progress=progress)
        extra = {} if pred_s is None else {"pred_stress": pred_s}
        buf = io.BytesIO()
        np.savez(buf, pred_energy=pred_e, pred_forces=pred_f, head=np.array(used_head),
                 meta=np.array(json.dumps({"model": str(mpath), "data": str(data)})), **extra)
        atomic_write_bytes(cache, buf.getvalue())
    return _result(model, used_head, frames, keys, ref_s, pred_e, pred_f, pred_s)


__all__ = ["CANONICAL", "EvaluationResult", "Metrics", "compute_metrics", "default_device",
           "evaluate_cached", "evaluate_model", "predict"]
