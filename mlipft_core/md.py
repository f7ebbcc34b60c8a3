"""Molecular dynamics with any model: stability, radial distribution functions, EMD.

MD runs with ASE's integrators (Langevin or Bussi NVT, velocity Verlet NVE) and mace's
``MACECalculator``. Stability is watched as the run goes: it stops and reports when the
smallest interatomic distance falls below a threshold, the temperature runs away, or the
total energy drifts past a limit in NVE.

``python -m mlipft_core.md RUN_FOLDER`` runs the ``md.json`` of a queued MD run.

The settings and results live in :mod:`mlipft_core.md_settings`, the RDFs, EMDs and traces
in words in :mod:`mlipft_core.md_analysis`; both are also reachable from here.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.data import chemical_symbols

from .md_analysis import (
    END_SHARE,
    SETTLE_FRACTION,
    SETTLE_SIGMAS,
    RDFComparison,
    TemperatureSummary,
    compare_rdfs,
    element_pairs,
    emd,
    equilibration_time_fs,
    half_cell_height,
    rdf,
    reference_rdf,
    relative_energy_mev_per_atom,
    settle_rule_text,
    settle_tolerance_k,
    summarise_temperature,
    temperature_notes,
)
from .md_settings import MDError, MDResult, MDSettings
from .probes import _calculator
from .workspace import atomic_write_json


# ----------------------------------------------------------------------------- running
class _Unstable(Exception):
    """Raised inside the integrator loop when the run has failed."""


def _dynamics(atoms: Atoms, s: MDSettings):
    """The integrator for ``s.ensemble``, with velocities drawn at ``s.temperature_k``
    (seeded) and no centre-of-mass motion."""
    # ase.md and ase.io: slow to import (they pull in scipy), only when MD runs
    from ase.md.bussi import Bussi
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    rng = np.random.default_rng(s.seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=s.temperature_k, rng=rng)
    Stationary(atoms)
    dt = s.timestep_fs * units.fs
    if s.ensemble == "langevin":
        return Langevin(atoms, timestep=dt, temperature_K=s.temperature_k,
                        friction=s.friction_per_fs / units.fs, fixcm=False, rng=rng)
    if s.ensemble == "bussi":
        return Bussi(atoms, timestep=dt, temperature_K=s.temperature_k,
                     taut=(1.0 / s.friction_per_fs) * units.fs, rng=rng)
    return VelocityVerlet(atoms, timestep=dt)


class _Watch:
    """The stability watch of one run: records a frame (and says whether the run has failed
    there) and checks every step cheaply."""

    def __init__(self, atoms: Atoms, s: MDSettings, res: MDResult,
                 trajectory: str | Path | None) -> None:
        self.atoms, self.s, self.res, self.trajectory = atoms, s, res, trajectory
        self.n = len(atoms)
        self.frames: list[Atoms] = []
        self.e0_total: float | None = None
        self.t_limit = max(s.max_temperature_factor * s.temperature_k, 3000.0)
        self.steps = 0  # steps taken, counted by :meth:`guard`

    def record(self, step: int) -> str | None:
        """Record the frame at ``step``; why the run has failed there, or ``None``."""
        atoms, s, res, n = self.atoms, self.s, self.res, self.n
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
        self.frames.append(snap)
        if self.trajectory:
            from ase.io import write  # slow to import, only with a trajectory file

            write(self.trajectory, snap, format="extxyz", append=True)
        if not np.isfinite(epot) or not np.isfinite(temp):
            return "energy or temperature became non-finite"
        if dmin < s.min_distance:
            return f"atoms collapsed: smallest distance {dmin:.2f} Å < {s.min_distance} Å"
        if temp > self.t_limit:
            return f"temperature ran away: {temp:.0f} K > {self.t_limit:.0f} K"
        if s.ensemble == "nve" and self.e0_total is not None:
            drift = abs(epot + ekin - self.e0_total) / n
            if drift > s.max_drift_ev_per_atom:
                return (f"total energy drifted by {drift * 1000:.0f} meV/atom > "
                        f"{s.max_drift_ev_per_atom * 1000:.0f} meV/atom (NVE)")
        return None

    def guard(self) -> None:
        """Every step (cheap checks): stop before a blown-up structure reaches the neighbour
        list; distances are checked at every recorded frame."""
        self.steps += 1
        pos = self.atoms.positions
        if not np.all(np.isfinite(pos)):
            raise _Unstable("positions became non-finite")
        temp = float(self.atoms.get_temperature())
        if not np.isfinite(temp) or temp > self.t_limit:
            raise _Unstable(f"temperature ran away: {temp:.0f} K > {self.t_limit:.0f} K")


def run_md(calc, structure: Atoms, settings: MDSettings, *, trajectory: str | Path | None = None,
           progress: Callable[[int, int], None] | None = None,
           should_stop: Callable[[], bool] | None = None) -> MDResult:
    """Run MD with an ASE calculator, watching stability; write frames to ``trajectory``."""
    settings.check()
    s = settings
    atoms = structure.copy()
    atoms.calc = calc
    dyn = _dynamics(atoms, s)
    res = MDResult(survived_steps=0, steps=s.steps, failure=None, steps_per_second=0.0,
                   trajectory=str(trajectory) if trajectory else None, n_atoms=len(atoms))
    watch = _Watch(atoms, s, res, trajectory)
    if trajectory:
        Path(trajectory).unlink(missing_ok=True)
    res.failure = watch.record(0)
    watch.e0_total = res.total_ev[0]
    dyn.attach(watch.guard, interval=1)
    t0 = time.perf_counter()
    step = _integrate(dyn, watch, progress, should_stop)
    elapsed = time.perf_counter() - t0
    res.steps_per_second = step / elapsed if elapsed > 0 else 0.0
    start = int(len(watch.frames) * s.equilibration_fraction)
    used = watch.frames[start:] if len(watch.frames) - start >= 2 else watch.frames
    rmax = s.rdf_rmax
    if atoms.pbc.all():
        rmax = min(rmax, half_cell_height(atoms) - 1e-6)
    for pair in element_pairs(atoms.get_chemical_symbols()):
        r, g = rdf(used, pair, rmax, s.rdf_nbins)
        res.rdf[f"{pair[0]}-{pair[1]}"] = {"r": r.tolist(), "g": g.tolist()}
    return res


def _integrate(dyn, watch: _Watch, progress: Callable[[int, int], None] | None,
               should_stop: Callable[[], bool] | None) -> int:
    """Run ``dyn`` a recording interval at a time until the run fails, is stopped or has
    taken its steps; the steps taken."""
    s, res = watch.s, watch.res
    step = 0
    while res.failure is None and step < s.steps:
        chunk = min(s.interval, s.steps - step)
        try:
            dyn.run(chunk)
        except _Unstable as exc:
            res.failure = f"{exc} (step {watch.steps})"
            res.survived_steps = max(0, watch.steps - 1)
            return watch.steps
        step += chunk
        res.failure = watch.record(step)
        res.survived_steps = step if res.failure is None else step - chunk
        if progress:
            progress(step, s.steps)
        if should_stop is not None and should_stop():
            res.failure = res.failure or "cancelled by the user"
            break
    return step


def calculator(model: str | Path, head: str | None = None, trusted: bool = False):
    """mace's ASE calculator for a registry model or file (device: CUDA when present)."""
    return _calculator(model, head, trusted)


def read_structure(path: str | Path, index: int = 0) -> Atoms:
    """Structure number ``index`` of a file (extxyz or any format ASE reads).

    Raises
    ------
    MDError
        The file is missing, a folder, unreadable, or has no structure ``index`` (the
        message says how many it has).
    """
    from ase.io import read  # slow to import (it pulls in scipy)

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
def _cancel_requested(folder: Path) -> Callable[[], bool]:
    """Whether the queued run in ``folder`` has been cancelled, for :func:`run_md`'s
    ``should_stop``.

    A cancelled run gets a ``cancel`` marker in its folder and then a SIGTERM (from its
    runner, or from ``scancel``). With the marker there, the SIGTERM only asks the run to
    stop: it ends at its next recorded frame and writes its result, so what it simulated is
    kept. Any other SIGTERM (a run-time cap, a time limit) ends the process at once.
    """
    asked: list[int] = []

    def on_sigterm(signum: int, _frame: Any) -> None:
        if (folder / "cancel").exists():
            asked.append(signum)
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: bool(asked) or (folder / "cancel").exists()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the MD described by ``RUN_FOLDER/md.json``; write ``result.json`` there."""
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
                           progress=progress, should_stop=_cancel_requested(folder))
    atomic_write_json(folder / "result.json", res.to_dict())
    return 0


__all__ = ["END_SHARE", "SETTLE_FRACTION", "SETTLE_SIGMAS", "MDError", "MDResult",
           "MDSettings", "RDFComparison", "TemperatureSummary", "calculator",
           "check_elements", "check_trajectory_path", "compare_rdfs", "element_pairs", "emd",
           "equilibration_time_fs", "half_cell_height", "main", "model_elements", "rdf",
           "read_structure", "reference_rdf", "relative_energy_mev_per_atom", "run_md",
           "run_md_for_model", "settle_rule_text", "settle_tolerance_k",
           "summarise_temperature", "temperature_notes"]


if __name__ == "__main__":
    raise SystemExit(main())
