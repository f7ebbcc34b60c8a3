"""Analysis of MD runs: radial distribution functions, their earth mover's distance to a
reference, and temperature and energy traces in words and numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from .md_settings import MDError, MDSettings


# ----------------------------------------------------------------------------- RDF and EMD
def element_pairs(symbols: Sequence[str]) -> list[tuple[str, str]]:
    """Every unordered pair of the elements in ``symbols`` (``("H", "O")``, ``("O", "O")``,
    ...), lighter element first."""
    els = sorted(set(symbols), key=lambda s: chemical_symbols.index(s))
    return [(a, b) for i, a in enumerate(els) for b in els[i:]]


def half_cell_height(atoms: Atoms) -> float:
    """Half the smallest distance between opposite cell faces: the minimum-image limit."""
    return float((atoms.cell.volume / atoms.cell.areas()).min() / 2)


def rdf(frames: Sequence[Atoms], pair: tuple[str, str], rmax: float = 6.0,
        nbins: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """Radial distribution function g(r) of an element pair, averaged over frames.

    Normalised so that g → 1 for an uncorrelated fluid: for a periodic box of volume V with
    N_a and N_b atoms, ``g(r) = V · n_ab(r) / (N_a · N_b' · 4π r² dr)`` with
    ``N_b' = N_b - 1`` for a = b. Distances use the minimum image; ``rmax`` is capped at half
    the shortest cell height.
    """
    a_sym, b_sym = pair
    edges = np.linspace(0.0, rmax, nbins + 1)
    counts = np.zeros(nbins)
    norm = 0.0
    for atoms in frames:
        syms = np.array(atoms.get_chemical_symbols())
        ia, ib = np.where(syms == a_sym)[0], np.where(syms == b_sym)[0]
        if not len(ia) or not len(ib):
            continue
        periodic = bool(atoms.pbc.all())
        if periodic:
            half = half_cell_height(atoms)
            if rmax > half + 1e-9:
                raise MDError(f"rdf rmax {rmax} Å exceeds half the cell height ({half:.2f} Å)")
            volume = atoms.cell.volume
        else:
            pos = atoms.positions
            volume = float(np.prod(np.ptp(pos, axis=0) + 2 * rmax))  # rough, for molecules
        d = atoms.get_all_distances(mic=periodic)[np.ix_(ia, ib)]
        if a_sym == b_sym:
            d = d[np.triu_indices(len(ia), 1)]
            n_pairs = len(ia) * (len(ia) - 1) / 2
        else:
            d = d.ravel()
            n_pairs = len(ia) * len(ib)
        counts += np.histogram(d, bins=edges)[0]
        norm += n_pairs / volume
    r = 0.5 * (edges[1:] + edges[:-1])
    shell = 4.0 * np.pi * r**2 * np.diff(edges)
    g = counts / (norm * shell) if norm > 0 else np.zeros(nbins)
    return r, g


def emd(r: Sequence[float], g1: Sequence[float], g2: Sequence[float]) -> float:
    """Earth mover's distance (Å) between two RDFs taken as distributions over r."""
    from scipy.stats import wasserstein_distance  # slow to import (about a second)

    g1, g2 = np.clip(np.asarray(g1, float), 0, None), np.clip(np.asarray(g2, float), 0, None)
    if g1.sum() == 0 or g2.sum() == 0:
        return float("nan")
    return float(wasserstein_distance(r, r, u_weights=g1, v_weights=g2))


def reference_rdf(frames: Sequence[Atoms], rmax: float = 6.0, nbins: int = 120
                  ) -> dict[str, dict[str, list[float]]]:
    """RDFs of every element pair of reference structures (e.g. the target data)."""
    out = {}
    for pair in element_pairs(frames[0].get_chemical_symbols()):
        r, g = rdf(frames, pair, rmax, nbins)
        out[f"{pair[0]}-{pair[1]}"] = {"r": r.tolist(), "g": g.tolist()}
    return out


# ------------------------------------------------------------------ runs against a reference
@dataclass
class RDFComparison:
    """RDFs of several MD runs next to a reference, per element pair, and their distances."""

    pairs: list[str]
    reference: dict[str, dict[str, list[float]]]          # pair -> {"r", "g"}
    runs: dict[str, dict[str, dict[str, list[float]]]]    # run -> pair -> {"r", "g"}
    emd: dict[str, dict[str, float]]                      # run -> pair -> EMD (Å)

    def mean_emd(self) -> dict[str, float]:
        """Mean EMD over the pairs each run shares with the reference."""
        return {k: float(np.mean(list(v.values()))) for k, v in self.emd.items() if v}

    def closest(self) -> str | None:
        m = self.mean_emd()
        return min(m, key=m.get) if m else None


def compare_rdfs(results: dict[str, dict[str, Any]],
                 reference: Sequence[Atoms] | None) -> RDFComparison:
    """The RDFs of finished MD runs (``result.json`` contents by name) against the RDF of
    ``reference`` structures on the same r grid, with the EMD per run and pair."""
    first = next((v["rdf"] for v in results.values() if v.get("rdf")), {})
    grid = next(iter(first.values()))["r"] if first else []
    ref: dict[str, dict[str, list[float]]] = {}
    if reference and grid:
        width = grid[1] - grid[0] if len(grid) > 1 else 0.05
        ref = reference_rdf(list(reference), rmax=grid[-1] + width / 2, nbins=len(grid))
    pairs = sorted({p for v in results.values() for p in v.get("rdf", {})})
    runs = {k: v.get("rdf", {}) for k, v in results.items()}
    dist: dict[str, dict[str, float]] = {}
    for name, per in runs.items():
        for pair, cur in per.items():
            if pair in ref and len(ref[pair]["r"]) == len(cur["r"]):
                dist.setdefault(name, {})[pair] = emd(ref[pair]["r"], ref[pair]["g"], cur["g"])
    return RDFComparison(pairs=pairs, reference=ref, runs=runs, emd=dist)


def equilibration_time_fs(result: dict[str, Any], settings: MDSettings) -> float:
    """The simulated time left out of the RDF averages as equilibration (fs)."""
    times = result.get("time_fs") or [0.0]
    return float(times[int(len(times) * settings.equilibration_fraction)]
                 if len(times) > 1 else 0.0)


# ----------------------------------------------------------------------------- traces in words
#: A temperature counts as settled within this fraction of the target at least ...
SETTLE_FRACTION = 0.10
#: ... or within this many standard deviations of the instantaneous temperature of a
#: canonical ensemble (``T · sqrt(2 / 3N)`` for N atoms), whichever is wider.
SETTLE_SIGMAS = 3.0
#: The end of a run is the mean over this last share of its frames.
END_SHARE = 0.25


def settle_tolerance_k(target_k: float, n_atoms: int | None = None) -> float:
    """The band (K, either side of the target) inside which a temperature counts as settled:
    ``SETTLE_FRACTION`` of the target, widened to ``SETTLE_SIGMAS`` thermal fluctuations of
    an ``n_atoms`` system (small systems fluctuate more)."""
    tol = SETTLE_FRACTION * float(target_k)
    if n_atoms:
        tol = max(tol, SETTLE_SIGMAS * float(target_k) * float(np.sqrt(2.0 / (3.0 * n_atoms))))
    return tol


def settle_rule_text(target_k: float, n_atoms: int | None = None) -> str:
    """The rule :func:`summarise_temperature` calls "settled", in words, with its band."""
    tol = settle_tolerance_k(target_k, n_atoms)
    why = (f"{SETTLE_SIGMAS:g} times the thermal fluctuation T·√(2/3N) of {n_atoms} atoms, "
           f"at least {SETTLE_FRACTION:.0%} of the target" if n_atoms
           else f"{SETTLE_FRACTION:.0%} of the target")
    return (f"Settled means every recorded frame from then on lies within ±{tol:.0f} K of the "
            f"{target_k:g} K target ({why}), for at least the last {END_SHARE:.0%} of the "
            "frames.")


def _k(x: float) -> str:
    return f"{x:.0f} K"


def _fs(x: float) -> str:
    return f"{x:.4g} fs"


@dataclass
class TemperatureSummary:
    """How a temperature trace went against its target, with the words for it (``text``)."""

    target_k: float
    tolerance_k: float        # half-width of the band counted as "at the target"
    start_k: float
    extreme_k: float          # the frame farthest from the target
    extreme_time_fs: float
    direction: str            # "rose" (extreme above the band), "fell" (below) or "steady"
    end_k: float              # mean over the last END_SHARE of the frames
    end_span_fs: float        # the simulated time end_k averages over
    duration_fs: float
    settled: bool             # every frame from settled_time_fs on lies within the band
    settled_time_fs: float | None
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise_temperature(time_fs: Sequence[float], temperature_k: Sequence[float],
                          target_k: float, *, n_atoms: int | None = None,
                          tolerance_k: float | None = None) -> TemperatureSummary:
    """Summarise a temperature trace against the target temperature, in numbers and words.

    Parameters
    ----------
    time_fs, temperature_k
        The recorded frames (fs, K), in order.
    target_k
        The thermostat's (or the initial velocities') temperature (K).
    n_atoms
        Number of atoms: widens the band for small systems (see :func:`settle_tolerance_k`).
    tolerance_k
        Half-width of the band (K) counted as "at the target"; overrides the default.

    Returns
    -------
    TemperatureSummary
        Start, the frame farthest from the target (and whether it lies above or below the
        band), the mean over the last quarter of the frames, whether and from when every
        frame stays within the band (a settled tail must hold at least a quarter of the
        frames, and two), and ``text``: one sentence saying so, e.g. "starts at 315 K,
        rises to 593 K at 55 fs, and has not settled ...".

    Raises
    ------
    MDError
        Empty or mismatched series, a non-positive target.
    """
    t = np.asarray(time_fs, float)
    temp = np.asarray(temperature_k, float)
    if not len(temp) or len(t) != len(temp):
        raise MDError("a temperature trace needs as many times as temperatures, at least one")
    if not np.isfinite(target_k) or target_k <= 0:
        raise MDError(f"the target temperature must be a positive number, not {target_k!r}")
    tol = float(tolerance_k) if tolerance_k is not None else settle_tolerance_k(target_k,
                                                                                 n_atoms)
    dev = np.where(np.isfinite(temp), temp - target_k, np.inf)
    i_ext = int(np.argmax(np.abs(dev)))
    ext = float(temp[i_ext])
    direction = ("steady" if abs(dev[i_ext]) <= tol else "rose" if dev[i_ext] > 0 else "fell")
    n = len(temp)
    n_end = max(1, int(np.ceil(END_SHARE * n)))
    end = float(np.mean(temp[-n_end:]))
    end_span = float(t[-1] - t[-n_end]) if n_end > 1 else 0.0
    inside = np.abs(dev) <= tol
    outside = np.where(~inside)[0]
    first_in = int(outside[-1]) + 1 if len(outside) else 0
    tail = n - first_in
    settled = tail >= max(2, int(np.ceil(END_SHARE * n))) or (n == 1 and bool(inside[0]))
    settled_at = float(t[first_in]) if settled else None
    duration = float(t[-1] - t[0])
    band = f"±{tol:.0f} K of the {target_k:g} K target"
    if n == 1:
        text = f"starts at {_k(temp[0])} (only one frame was recorded)"
    elif direction == "steady":
        text = f"starts at {_k(temp[0])} and stays within {band} for all {_fs(duration)}"
    else:
        verb = "rises" if direction == "rose" else "falls"
        text = (f"starts at {_k(temp[0])}, {verb} to {_k(ext)} at {_fs(t[i_ext])}"
                if np.isfinite(ext) else
                f"starts at {_k(temp[0])}, becomes non-finite at {_fs(t[i_ext])}")
        if settled:
            text += (f", and settles within {band} from {_fs(settled_at)} on (mean over the "
                     f"last {_fs(end_span)}: {_k(end)})")
        else:
            side = ("above the target" if end > target_k + tol else
                    "below the target" if end < target_k - tol else "inside the band")
            text += (f", and has not settled within {band} by the end of the run "
                     f"({_fs(duration)}): over the last {_fs(end_span)} it averages "
                     f"{_k(end)}, {side}")
    return TemperatureSummary(float(target_k), tol, float(temp[0]), ext, float(t[i_ext]),
                              direction, end, end_span, duration, settled, settled_at,
                              text + ".")


def temperature_notes(summaries: Sequence[TemperatureSummary], settings: MDSettings
                      ) -> list[str]:
    """Why traces like ``summaries`` go as they do under ``settings``: one sentence for each
    behaviour seen (a rise, a fall) and one for the thermostat (or its absence in NVE)."""
    out = []
    if any(s.direction == "rose" for s in summaries):
        out.append("A rise: the velocities are drawn at the target temperature, but the "
                   "starting structure lies higher on the model's potential energy surface "
                   "than an equilibrium structure at that temperature would, and the excess "
                   "potential energy turns into kinetic energy.")
    if any(s.direction == "fell" for s in summaries):
        out.append("A fall: the velocities are drawn at the target temperature, but the "
                   "starting structure lies near an energy minimum, so kinetic energy moves "
                   "into potential energy (up to about half of it).")
    duration = max((s.duration_fs for s in summaries), default=0.0)
    if settings.ensemble == "nve":
        out.append("NVE has no thermostat: nothing pulls the temperature back to the target; "
                   "only the total energy is conserved.")
    else:
        tau = 1.0 / settings.friction_per_fs
        name = ("Langevin thermostat (friction "
                f"{settings.friction_per_fs:g} 1/fs)" if settings.ensemble == "langevin"
                else "Bussi thermostat")
        out.append(f"The {name} pulls the temperature toward the target with a time "
                   f"constant of about {_fs(tau)}; this run lasts {_fs(duration)}"
                   + (", less than three time constants, so the temperature need not have "
                      "reached the target yet." if duration < 3 * tau else "."))
    return out


def relative_energy_mev_per_atom(energies_ev: Sequence[float], n_atoms: int) -> list[float]:
    """An energy trace relative to its own first frame, in meV per atom: the variation of
    one model, on a scale that does not depend on its E0s (models differ by many eV)."""
    e = np.asarray(energies_ev, float)
    if not len(e) or n_atoms < 1:
        return []
    return ((e - e[0]) * 1000.0 / n_atoms).tolist()
