"""Tables and series for comparing models: learning curves, element pairs, repulsion
verdicts and reaction profiles. The Compare page draws them; scripts can use them as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .compare import file_heads
from .data import read_frames, write_extxyz
from .errors import DataError
from .evaluate import evaluate_cached
from .probes import WALL_THRESHOLD_EV, dimer_curve_cached, repulsive_wall
from .referencing import model_e0s_of
from .workspace import Workspace, cached_sha256

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class ModelHead:
    """One model file evaluated with one head, as shown in plots: ``"naive [Default]"``."""

    name: str
    path: str
    head: str | None = None
    multihead: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} [{self.head}]" if self.multihead and self.head else self.name


def heads_of_models(models: Mapping[str, str]) -> list[ModelHead]:
    """Every head of every model (name -> file) as plots show them; single-head models once,
    unlabelled. The heads of one file: :func:`mlipft_core.compare.file_heads`."""
    out = []
    for name, path in models.items():
        heads = file_heads(path)
        for h in heads:
            out.append(ModelHead(name, path, h, multihead=len(heads) > 1))
    return out


#: Former name of :func:`heads_of_models`.
model_heads = heads_of_models


def element_pairs(symbols: Iterable[str]) -> list[str]:
    """``["C-C", "C-H", "H-H"]`` for the elements present (sorted by symbol)."""
    els = sorted(set(symbols))
    return [f"{a}-{b}" for i, a in enumerate(els) for b in els[i:]]


def learning_curve(records, target: str | Path, *, workspace=None,
                   progress: ProgressFn | None = None) -> dict[str, list[tuple[int, float]]]:
    """Target force RMSE (meV/Å) against training-set size, per strategy, for finished runs
    that recorded a ``train_size`` (size sweeps). Points sorted by size."""
    out: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        size = (r.spec or {}).get("train_size")
        if not size or r.status != "done" or not r.model_path:
            continue
        if progress:
            progress(f"{r.name}: target set")
        m = evaluate_cached(r.model_path, target, workspace=workspace, trusted=True).metrics
        if m.forces_rmse_mev_per_a is not None:
            out.setdefault(r.strategy, []).append((int(size), float(m.forces_rmse_mev_per_a)))
    return {k: sorted(v) for k, v in out.items()}


@dataclass
class RepulsionVerdict:
    """Whether a model keeps the short-range wall of one element pair."""

    model: str
    pair: str
    shortest_distance_a: float
    wall_ev: float            # energy at the shortest distance above the curve's minimum
    verdict: str              # "kept" | "lost" | "no wall in reference"
    reference_wall_ev: float | None = None   # the reference curve's wall, where known

    def to_dict(self) -> dict:
        return asdict(self)


def repulsion(models: Sequence[ModelHead], pair: str, *, workspace=None,
              reference_curve: dict[str, list[float]] | None = None,
              progress: ProgressFn | None = None
              ) -> tuple[dict[str, tuple[list[float], list[float]]], list[RepulsionVerdict]]:
    """Dimer curves of ``pair`` (energy relative to 5 Å) and a verdict per model.

    A model "lost" its repulsion when its wall at the shortest probed distance is below
    :data:`~mlipft_core.probes.WALL_THRESHOLD_EV` while the reference (when one is given)
    has a wall there. A reference without a wall blames no model ("no wall in reference").
    The reference curve is part of the returned series as ``reference [<method>]``.
    """
    ref_wall = None if reference_curve is None else repulsive_wall(reference_curve)
    ref_has_wall = ref_wall is None or ref_wall >= WALL_THRESHOLD_EV
    series: dict[str, tuple[list[float], list[float]]] = {}
    if reference_curve is not None:
        name = f"reference [{reference_curve.get('method', 'reference')}]"
        series[name] = (list(reference_curve["distances"]), list(reference_curve["energies"]))
    verdicts = []
    for m in models:
        if progress:
            progress(f"{m.label}: {pair} dimer")
        curve = dimer_curve_cached(m.path, pair, head=m.head, workspace=workspace,
                                   trusted=True)
        series[m.label] = (curve["distances"], curve["energies"])
        wall = repulsive_wall(curve)
        verdict = "kept" if wall >= WALL_THRESHOLD_EV else (
            "lost" if ref_has_wall else "no wall in reference")
        verdicts.append(RepulsionVerdict(m.label, pair, float(curve["distances"][0]),
                                         round(wall, 3), verdict,
                                         None if ref_wall is None else round(ref_wall, 3)))
    return series, verdicts


#: Structures whose largest reference force is below this (eV/Å) are not compressed enough
#: to have repulsion to keep: the probe leaves them out.
MIN_PROBE_FORCE_EV_PER_A = 1.0

#: A structure is a *soft spot* of a model when the model's forces, projected on the
#: reference forces, keep less than this fraction of them: the model pushes the atoms apart
#: with less than half the reference's repulsion, the beginning of a short-range "hole".
SOFT_SPOT_FRACTION = 0.5


@dataclass
class ShortRangeResult:
    """How much of the reference's short-range repulsion one model keeps on a set of
    compressed structures (close trimers, compressed molecules, random compact ones)."""

    model: str
    n_structures: int
    forces_rmse_ev_per_a: float          # on the short-range set (forces there are large)
    median_force_kept: float             # median over structures of F_model·F_ref / |F_ref|²
    soft_spots: int                      # structures that keep < SOFT_SPOT_FRACTION of it
    soft_share_percent: float            # soft_spots as a percentage of n_structures
    n_left_out: int = 0                  # structures with elements not every model covers
    n_weak_forces: int = 0               # structures below MIN_PROBE_FORCE_EV_PER_A

    def to_dict(self) -> dict:
        return asdict(self)


def force_kept(ref_forces: np.ndarray, pred_forces: np.ndarray,
               n_atoms: np.ndarray) -> np.ndarray:
    """Per structure, the share of the reference forces that the predicted forces keep:
    ``Σ F_pred·F_ref / Σ |F_ref|²`` over its atoms (1: as repulsive as the reference, 0: no
    force along it, negative: pulling the wrong way)."""
    owner = np.repeat(np.arange(len(n_atoms)), n_atoms)
    dot = np.bincount(owner, (pred_forces * ref_forces).sum(axis=1), minlength=len(n_atoms))
    norm = np.bincount(owner, (ref_forces * ref_forces).sum(axis=1), minlength=len(n_atoms))
    return dot / np.maximum(norm, 1e-12)


def probe_result(model: str, ref_forces: np.ndarray, pred_forces: np.ndarray,
                 n_atoms: np.ndarray, n_left_out: int = 0, label: str = "the data"
                 ) -> ShortRangeResult:
    """The short-range measures of one model's forces against the reference forces of a set
    of structures (``n_atoms`` per structure): structures with a reference force below
    :data:`MIN_PROBE_FORCE_EV_PER_A` are left out. Raises
    :class:`~mlipft_core.errors.DataError` when none is left."""
    n_atoms = np.asarray(n_atoms)
    owner = np.repeat(np.arange(len(n_atoms)), n_atoms)
    f_max = np.zeros(len(n_atoms))
    np.maximum.at(f_max, owner, np.linalg.norm(ref_forces, axis=1))
    strong = f_max >= MIN_PROBE_FORCE_EV_PER_A
    if not strong.any():
        raise DataError(f"{label}: no structure has a reference force of "
                        f"{MIN_PROBE_FORCE_EV_PER_A:g} eV/Å or more: nothing compressed "
                        "to probe", code="labels")
    kept = force_kept(ref_forces, pred_forces, n_atoms)[strong]
    soft = int(np.sum(kept < SOFT_SPOT_FRACTION))
    atoms = strong[owner]
    rmse = float(np.sqrt(np.mean((pred_forces[atoms] - ref_forces[atoms]) ** 2)))
    return ShortRangeResult(model, len(kept), round(rmse, 3), round(float(np.median(kept)), 3),
                            soft, round(100.0 * soft / len(kept), 1), n_left_out,
                            int((~strong).sum()))


def short_range_probe(models: Sequence[ModelHead], data: str | Path, *, workspace=None,
                      progress: ProgressFn | None = None) -> list[ShortRangeResult]:
    """Each model's forces on a labelled set of compressed structures against the reference.

    The set should be held out from training (the demo world's
    ``pretrain/short_range_test.xyz``). A model that lost short-range repulsion keeps less
    of the reference forces there and has more soft spots (see :data:`SOFT_SPOT_FRACTION`).
    Every model is probed on the same structures: those whose elements all models cover (a
    fine-tune knows only the elements of its training and replay data).
    Raises :class:`~mlipft_core.errors.DataError` when the set has no reference forces or no
    structure every model covers.
    """
    data, n_left_out = _covered_subset(models, data, workspace)
    out = []
    for m in models:
        if progress:
            progress(f"{m.label}: short-range structures")
        r = evaluate_cached(m.path, data, head=m.head, workspace=workspace, trusted=True)
        if r.ref_forces is None or not np.all(np.isfinite(r.ref_forces)):
            raise DataError(f"{Path(data).name}: the short-range probe needs reference forces "
                            "on every structure", code="labels")
        out.append(probe_result(m.label, r.ref_forces, r.pred_forces, r.n_atoms, n_left_out,
                                Path(data).name))
    return out


def _covered_subset(models: Sequence[ModelHead], data: str | Path,
                    workspace=None) -> tuple[str, int]:
    """``data`` itself, or a cached file of its structures whose elements every model covers,
    and the number of structures left out."""
    covered = set.intersection(*(set(model_e0s_of(m.path, m.head)) for m in models)) \
        if models else set()
    frames = read_frames(data)
    keep = [a for a in frames if set(a.get_chemical_symbols()) <= covered]
    if not keep:
        raise DataError(f"{Path(data).name}: no structure has only elements that every model "
                        f"covers ({', '.join(sorted(covered)) or 'none'})", code="elements")
    if len(keep) == len(frames):
        return str(data), 0
    ws = workspace or Workspace()
    subset = (ws.cache / "short_range" /
              f"{cached_sha256(Path(data))[:20]}-{'-'.join(sorted(covered))}.xyz")
    if not subset.is_file():
        write_extxyz(subset, keep)
    return str(subset), len(frames) - len(keep)


def reaction_profile(models: Sequence[ModelHead], scan_file: str | Path, *, workspace=None,
                     energy_key: str = "REF_energy", progress: ProgressFn | None = None
                     ) -> dict[str, tuple[list[int], list[float]]]:
    """Energy along an ordered scan relative to its first point (eV), for the reference
    labels (``reference``) and every model head."""
    scan = read_frames(scan_file)
    x = list(range(len(scan)))
    out: dict[str, tuple[list[int], list[float]]] = {}
    ref = np.array([float(a.info.get(energy_key, np.nan)) for a in scan])
    if np.all(np.isfinite(ref)):
        out["reference"] = (x, (ref - ref[0]).tolist())
    for m in models:
        if progress:
            progress(f"{m.label}: reaction scan")
        e = evaluate_cached(m.path, scan_file, head=m.head, workspace=workspace,
                            trusted=True).pred_energy
        out[m.label] = (x, (np.asarray(e) - e[0]).tolist())
    return out
