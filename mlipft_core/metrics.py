"""Errors of a model's predictions against reference labels: energies per atom, forces and
stresses, overall and per ``config_type``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


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
