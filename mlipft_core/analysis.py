"""Tables and series for comparing models: learning curves, element pairs, repulsion
verdicts and reaction profiles. The Compare page draws them; scripts can use them as well.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .probes import WALL_THRESHOLD_EV, dimer_curve_cached, repulsive_wall

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


def model_heads(models: dict[str, str]) -> list[ModelHead]:
    """Every head of every model (name -> file); single-head models once, unlabelled."""
    from .compare import model_heads_of

    out = []
    for name, path in models.items():
        heads = model_heads_of(path)
        for h in heads:
            out.append(ModelHead(name, path, h, multihead=len(heads) > 1))
    return out


def element_pairs(symbols: Iterable[str]) -> list[str]:
    """``["C-C", "C-H", "H-H"]`` for the elements present (sorted by symbol)."""
    els = sorted(set(symbols))
    return [f"{a}-{b}" for i, a in enumerate(els) for b in els[i:]]


def learning_curve(records, target: str | Path, *, workspace=None,
                   progress: ProgressFn | None = None) -> dict[str, list[tuple[int, float]]]:
    """Target force RMSE (meV/Å) against training-set size, per strategy, for finished runs
    that recorded a ``train_size`` (size sweeps). Points sorted by size."""
    from .evaluate import evaluate_cached

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


def reaction_profile(models: Sequence[ModelHead], scan_file: str | Path, *, workspace=None,
                     energy_key: str = "REF_energy", progress: ProgressFn | None = None
                     ) -> dict[str, tuple[list[int], list[float]]]:
    """Energy along an ordered scan relative to its first point (eV), for the reference
    labels (``reference``) and every model head."""
    from .data import read_frames
    from .evaluate import evaluate_cached

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
