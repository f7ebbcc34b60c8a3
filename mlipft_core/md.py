"""Molecular dynamics with any model: stability, radial distribution functions, EMD.

MD runs with ASE's integrators (Langevin or Bussi NVT, velocity Verlet NVE) and mace's
``MACECalculator``. Stability is watched as the run goes: it stops and reports when the
smallest interatomic distance falls below a threshold, the temperature runs away, or the
total energy drifts past a limit in NVE.

``python -m mlipft_core.md RUN_FOLDER`` runs the ``md.json`` of a queued MD run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from ase import Atoms, units
from ase.data import chemical_symbols

from .errors import MlipftError


class MDError(MlipftError):
    code = "md_error"


@dataclass
class MDSettings:
    """Settings of one MD run."""

    ensemble: str = "langevin"        # langevin | bussi | nve
    temperature_k: float = 300.0
    timestep_fs: float = 0.5
    steps: int = 1000
    friction_per_fs: float = 0.01     # Langevin friction; Bussi uses taut = 1 / friction
    seed: int = 0
    interval: int = 10                # steps between recorded frames
    min_distance: float = 0.5         # Å: closer atoms mean a collapse
    max_temperature_factor: float = 5.0   # runaway above factor x target (and 3000 K floor)
    max_drift_ev_per_atom: float = 0.05   # NVE: total-energy drift limit
    equilibration_fraction: float = 0.2   # frames skipped before averaging the RDF
    rdf_rmax: float = 6.0
    rdf_nbins: int = 120

    def check(self) -> None:
        if self.ensemble not in ("langevin", "bussi", "nve"):
            raise MDError(f"unknown ensemble {self.ensemble!r}: langevin, bussi or nve")
        for name in ("temperature_k", "timestep_fs", "friction_per_fs", "min_distance"):
            v = getattr(self, name)
            if not np.isfinite(v) or v <= 0:
                raise MDError(f"{name} must be a positive number, not {v!r}")
        if self.steps < 1 or self.interval < 1:
            raise MDError("steps and the recording interval must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MDResult:
    """Outcome of one MD run."""

    survived_steps: int
    steps: int
    failure: str | None
    steps_per_second: float
    time_fs: list[float] = field(default_factory=list)
    temperature_k: list[float] = field(default_factory=list)
    potential_ev: list[float] = field(default_factory=list)
    total_ev: list[float] = field(default_factory=list)
    min_distance: list[float] = field(default_factory=list)
    rdf: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # pair -> r, g
    trajectory: str | None = None
    n_atoms: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- RDF and EMD
def element_pairs(symbols: Sequence[str]) -> list[tuple[str, str]]:
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
    from scipy.stats import wasserstein_distance

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


# ----------------------------------------------------------------------------- MD
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


class _Unstable(Exception):
    """Raised inside the integrator loop when the run has failed."""


def _dynamics(atoms: Atoms, s: MDSettings):
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    rng = np.random.default_rng(s.seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=s.temperature_k, rng=rng)
    Stationary(atoms)
    dt = s.timestep_fs * units.fs
    if s.ensemble == "langevin":
        from ase.md.langevin import Langevin

        return Langevin(atoms, timestep=dt, temperature_K=s.temperature_k,
                        friction=s.friction_per_fs / units.fs, fixcm=False, rng=rng)
    if s.ensemble == "bussi":
        from ase.md.bussi import Bussi

        return Bussi(atoms, timestep=dt, temperature_K=s.temperature_k,
                     taut=(1.0 / s.friction_per_fs) * units.fs, rng=rng)
    return VelocityVerlet(atoms, timestep=dt)


def run_md(calc, structure: Atoms, settings: MDSettings, *, trajectory: str | Path | None = None,
           progress: Callable[[int, int], None] | None = None,
           should_stop: Callable[[], bool] | None = None) -> MDResult:
    """Run MD with an ASE calculator, watching stability; write frames to ``trajectory``."""
    from ase.io import write

    settings.check()
    s = settings
    atoms = structure.copy()
    atoms.calc = calc
    dyn = _dynamics(atoms, s)
    n = len(atoms)
    res = MDResult(survived_steps=0, steps=s.steps, failure=None, steps_per_second=0.0,
                   trajectory=str(trajectory) if trajectory else None, n_atoms=n)
    frames: list[Atoms] = []
    e0_total = None
    t_limit = max(s.max_temperature_factor * s.temperature_k, 3000.0)
    if trajectory:
        Path(trajectory).unlink(missing_ok=True)

    def record(step: int) -> str | None:
        epot = float(atoms.get_potential_energy())
        ekin = float(atoms.get_kinetic_energy())
        temp = float(atoms.get_temperature())
        d = atoms.get_all_distances(mic=bool(atoms.pbc.any()))
        dmin = float(d[np.triu_indices(n, 1)].min()) if n > 1 else float("inf")
        res.time_fs.append(step * s.timestep_fs)
        res.temperature_k.append(temp)
        res.potential_ev.append(epot)
        res.total_ev.append(epot + ekin)
        res.min_distance.append(dmin)
        snap = atoms.copy()
        snap.calc = None
        frames.append(snap)
        if trajectory:
            write(trajectory, snap, format="extxyz", append=True)
        if not np.isfinite(epot) or not np.isfinite(temp):
            return "energy or temperature became non-finite"
        if dmin < s.min_distance:
            return f"atoms collapsed: smallest distance {dmin:.2f} Å < {s.min_distance} Å"
        if temp > t_limit:
            return f"temperature ran away: {temp:.0f} K > {t_limit:.0f} K"
        if s.ensemble == "nve" and e0_total is not None:
            drift = abs(epot + ekin - e0_total) / n
            if drift > s.max_drift_ev_per_atom:
                return (f"total energy drifted by {drift * 1000:.0f} meV/atom > "
                        f"{s.max_drift_ev_per_atom * 1000:.0f} meV/atom (NVE)")
        return None

    res.failure = record(0)
    e0_total = res.total_ev[0]
    counter = {"step": 0}

    def guard() -> None:
        """Every step (cheap checks): stop before a blown-up structure reaches the neighbour
        list; distances are checked at every recorded frame."""
        counter["step"] += 1
        pos = atoms.positions
        if not np.all(np.isfinite(pos)):
            raise _Unstable("positions became non-finite")
        temp = float(atoms.get_temperature())
        if not np.isfinite(temp) or temp > t_limit:
            raise _Unstable(f"temperature ran away: {temp:.0f} K > {t_limit:.0f} K")

    dyn.attach(guard, interval=1)
    t0 = time.perf_counter()
    step = 0
    while res.failure is None and step < s.steps:
        chunk = min(s.interval, s.steps - step)
        try:
            dyn.run(chunk)
        except _Unstable as exc:
            res.failure = f"{exc} (step {counter['step']})"
            res.survived_steps = max(0, counter["step"] - 1)
            step = counter["step"]
            break
        step += chunk
        res.failure = record(step)
        res.survived_steps = step if res.failure is None else step - chunk
        if progress:
            progress(step, s.steps)
        if should_stop is not None and should_stop():
            res.failure = res.failure or "cancelled by the user"
            break
    elapsed = time.perf_counter() - t0
    res.steps_per_second = step / elapsed if elapsed > 0 else 0.0
    start = int(len(frames) * s.equilibration_fraction)
    used = frames[start:] if len(frames) - start >= 2 else frames
    rmax = s.rdf_rmax
    if atoms.pbc.all():
        rmax = min(rmax, half_cell_height(atoms) - 1e-6)
    for pair in element_pairs(atoms.get_chemical_symbols()):
        r, g = rdf(used, pair, rmax, s.rdf_nbins)
        res.rdf[f"{pair[0]}-{pair[1]}"] = {"r": r.tolist(), "g": g.tolist()}
    return res


def calculator(model: str | Path, head: str | None = None, trusted: bool = False):
    """mace's ASE calculator for a registry model or file (device: CUDA when present)."""
    from .probes import _calculator

    return _calculator(model, head, trusted)


def read_structure(path: str | Path, index: int = 0) -> Atoms:
    """Structure number ``index`` of a file (extxyz or any format ASE reads).

    Raises
    ------
    MDError
        The file is missing, a folder, unreadable, or has no structure ``index`` (the
        message says how many it has).
    """
    from ase.io import read

    p = Path(str(path)).expanduser()
    try:
        if p.is_dir():
            raise MDError(f"cannot read a structure from {path}: it is a folder; give a "
                          "structure file")
        if not p.is_file():
            raise MDError(f"cannot read a structure from {path}: the file does not exist")
    except (OSError, ValueError):
        raise MDError(f"{str(path)!r} is not a usable structure file path") from None
    try:
        atoms = read(p, index=index)
    except (IndexError, StopIteration):  # ASE says either when there is no such structure
        try:
            n = len(read(p, index=":"))
        except Exception:  # the file itself is unreadable: said below
            n = None
        if n is not None:
            have = "no structures" if n == 0 else (
                f"{n} structure{'s' if n != 1 else ''} (index 0 to {n - 1}, or -1 for the "
                "last)")
            raise MDError(f"{path} has no structure number {index}: it holds {have}") from None
        raise MDError(f"cannot read a structure from {path}: the file is not a structure "
                      "file ASE can read") from None
    except Exception as exc:
        if type(exc).__name__ == "UnknownFileTypeError":
            why = (f"its format ({exc}) is not one ASE reads; give an extxyz file or another "
                   "structure format ASE knows")
        else:
            why = str(exc).splitlines()[0][:200] if str(exc) else \
                "it is not a structure file ASE reads"
        raise MDError(f"cannot read a structure from {path}: {why}") from None
    if len(atoms) == 0:
        raise MDError(f"structure {index} of {path} has no atoms")
    return atoms


def check_trajectory_path(trajectory: str | Path | None) -> None:
    """:class:`MDError` unless ``trajectory`` can be written: its folder must exist (and be
    a folder), and it must not be a folder itself. Checked before any model time is spent."""
    if not trajectory:
        return
    try:
        p = Path(str(trajectory)).expanduser()
        folder = p.parent if str(p.parent) else Path(".")
        if p.is_dir():
            raise MDError(f"the trajectory path {trajectory} is a folder: give a file name, "
                          f"e.g. {p / 'trajectory.xyz'}")
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "does not exist"
            raise MDError(f"the trajectory's folder {folder} {what}: create the folder first, "
                          "or give another --trajectory path")
        writable = os.access(folder, os.W_OK)
    except (OSError, ValueError):
        raise MDError(f"{str(trajectory)!r} is not a usable trajectory path") from None
    if not writable:
        raise MDError(f"the trajectory's folder {folder} cannot be written (no permission or "
                      "a read-only file system): give another --trajectory path")


def model_elements(calc) -> list[int] | None:
    """The atomic numbers a mace calculator's model covers (``None`` when it cannot say)."""
    for net in getattr(calc, "models", None) or []:
        zs = getattr(net, "atomic_numbers", None)
        if zs is not None:
            return [int(z) for z in zs]
    table = getattr(calc, "z_table", None)
    zs = getattr(table, "zs", None)
    return [int(z) for z in zs] if zs is not None else None


def check_elements(structure: Atoms, covered: Sequence[int] | None, *,
                   source: str | Path | None = None, model: str | Path | None = None) -> None:
    """:class:`MDError` naming the elements of ``structure`` the model does not cover, the
    file that holds them and the model."""
    if covered is None:
        return
    missing = sorted({int(z) for z in structure.numbers} - {int(z) for z in covered})
    if not missing:
        return
    where = f"the structure in {source}" if source else "the structure"
    who = f"the model {model}" if model else "the model"
    names = ", ".join(chemical_symbols[z] for z in missing)
    covers = ", ".join(chemical_symbols[z] for z in sorted(covered))
    raise MDError(f"{where} holds {names}, which {who} does not cover (it covers {covers}): "
                  "choose a model that covers every element of the structure")


def run_md_for_model(model: str | Path, structure: Atoms, settings: MDSettings, *,
                     head: str | None = None, trusted: bool = False,
                     source: str | Path | None = None, **kwargs) -> MDResult:
    """:func:`run_md` with mace's calculator for ``model``; the settings, the trajectory
    path and the structure's elements (``source``: the file it came from, for messages)
    are checked before the dynamics start."""
    settings.check()
    check_trajectory_path(kwargs.get("trajectory"))
    calc = calculator(model, head, trusted)
    check_elements(structure, model_elements(calc), source=source, model=model)
    return run_md(calc, structure, settings, **kwargs)


# ----------------------------------------------------------------------------- queued runs
def main(argv: Sequence[str] | None = None) -> int:
    """Run the MD described by ``RUN_FOLDER/md.json``; write ``result.json`` there."""
    from .workspace import atomic_write_json

    folder = Path((argv or sys.argv[1:])[0])
    cfg = json.loads((folder / "md.json").read_text())
    settings = MDSettings(**cfg["settings"])
    structure = read_structure(cfg["structure"], cfg.get("index", 0))
    progress_file = folder / "progress.json"

    def progress(step: int, total: int) -> None:
        atomic_write_json(progress_file, {"step": step, "steps": total})

    res = run_md_for_model(cfg["model"], structure, settings, head=cfg.get("head"),
                           trusted=True, source=cfg["structure"],
                           trajectory=folder / "trajectory.xyz",
                           progress=progress, should_stop=lambda: (folder / "cancel").exists())
    atomic_write_json(folder / "result.json", res.to_dict())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
