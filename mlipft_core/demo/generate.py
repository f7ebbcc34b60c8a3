"""Generate the offline demo world shipped in ``sample_data/``.

The demo world is a miniature of the fine-tuning setting of the study behind the workbench:

* a *pretraining corpus* labelled with GFN1-xTB (level A): organic molecules with H, C, N, O, F,
  Cl, water clusters, periodic 32-water boxes and X⁻···CH3Y complexes, plus a short-range set
  (dimers of every element pair from 0.5 Å, close trimers, compressed molecules and clusters,
  random compact structures) that teaches the repulsive wall, and the GFN1-xTB reference dimer
  curves;
* *target 1*: the SN2 reactions X⁻ + CH3Y (X, Y in F, Cl) labelled with hybrid DFT
  (PySCF B3LYP/def2-SVPD, level B), with an ordered reaction-path scan;
* *target 2*: periodic 32-water boxes labelled with GFN2-xTB (level B');
* two *demo foundation models* trained with ``mace_run_train`` on the corpus, one weaker
  (16 channels, a fifth of the data, few epochs) than the other.

Run step by step (each step is resumable and skipped when its outputs exist)::

    pip install -r requirements-demo.txt
    python -m mlipft_core.demo.generate --steps all            # everything, in order
    python -m mlipft_core.demo.generate --steps sn2 --threads 1 # one step

Steps: ``corpus``, ``short-range``, ``short-range-test``, ``sn2``, ``water``, ``train-weak``,
``train-strong``, ``manifest``.
Intermediate files live in ``--work-dir`` (default ``~/.cache/mlipft/demo-build``); only the
final files go to ``--out`` (default ``sample_data/``). Each step's wall time is recorded and
copied into ``sample_data/manifest.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write

from ..data import split_indices, write_extxyz
from ..strategies import command_line
from ..workspace import atomic_write_bytes, atomic_write_json, file_sha256
from . import structures as st

SEED = 20261124
PRETRAIN_ELEMENTS = ["H", "C", "N", "O", "F", "Cl"]
MAX_FORCE = 20.0  # eV/Å: configurations above are dropped (and counted)
SN2_REACTIONS = [("F", "Cl"), ("Cl", "F"), ("F", "F"), ("Cl", "Cl")]
SCAN_REACTION = ("F", "Cl")  # the ordered scan for energy-profile plots: F⁻ + CH3Cl
WEAK_MODEL = "demo-gfn1-weak"
STRONG_MODEL = "demo-gfn1-strong"

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "sample_data"
DEFAULT_WORK = Path.home() / ".cache" / "mlipft" / "demo-build"

#: Training settings of the two demo foundation models (``mace_run_train`` options).
MODEL_SETTINGS = {
    WEAK_MODEL: {
        "n_train": 500, "hidden_irreps": "16x0e", "r_max": 4.5, "num_interactions": 2,
        "max_num_epochs": 12, "batch_size": 10, "lr": 0.01,
    },
    STRONG_MODEL: {
        "n_train": None, "hidden_irreps": "32x0e", "r_max": 5.0, "num_interactions": 2,
        "max_num_epochs": 36, "batch_size": 10, "lr": 0.01,
    },
}


# ----------------------------------------------------------------------------- helpers
def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _write_xyz(path: Path, frames: list[Atoms]) -> None:
    """Write atomically (the core's writer): a crash never leaves a half-written file."""
    write_extxyz(Path(path), frames)


def _write_json(path: Path, data: dict) -> None:
    atomic_write_json(Path(path), data)


def _record_step(work: Path, step: str, seconds: float, extra: dict | None = None) -> None:
    _write_json(work / "steps" / f"{step}.json", {"seconds": round(seconds, 1), **(extra or {})})


def _geometries(path: Path, build) -> list[Atoms]:
    """The unlabelled geometries of a step: built once (``build()``), then read back from
    ``path``, so that a resumed step labels exactly the same structures."""
    if path.exists():
        return read(path, ":")
    geoms = build()
    _write_xyz(path, geoms)
    return geoms


def _label_resumable(frames: list[Atoms], partial: Path, label_fn, what: str) -> list[Atoms]:
    """Label ``frames`` one by one, appending to ``partial`` so that a restart resumes."""
    done: list[Atoms] = read(partial, ":", format="extxyz") if partial.exists() else []
    if done:  # re-write the readable part: drops a record truncated by a kill mid-write
        _write_xyz(partial, done)
    t0, start = time.time(), len(done)
    for i in range(start, len(frames)):
        labelled = label_fn(frames[i])
        with open(partial, "a") as fh:
            write(fh, labelled, format="extxyz")
        done.append(labelled)
        if (i + 1) % 10 == 0 or i + 1 == len(frames):
            rate = (time.time() - t0) / (i + 1 - start)
            _log(f"{what}: {i + 1}/{len(frames)} labelled ({rate:.2f} s/frame)")
    return done


def _filter_forces(frames: list[Atoms]) -> tuple[list[Atoms], int]:
    kept = [f for f in frames if np.abs(f.arrays["REF_forces"]).max() <= MAX_FORCE]
    return kept, len(frames) - len(kept)


def _split(frames: list[Atoms], fractions: dict[str, float], seed: int) -> dict[str, list[Atoms]]:
    """A seeded split with the core's :func:`~mlipft_core.data.split_indices`."""
    return {name: [frames[i] for i in idx]
            for name, idx in split_indices(len(frames), fractions, seed).items()}


# ----------------------------------------------------------------------------- geometries
def corpus_geometries(rng: np.random.Generator) -> list[Atoms]:
    """All unlabelled pretraining geometries, each tagged with ``config_type``."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from .labels import xtb_calculator

    frames: list[Atoms] = []

    def md_snapshots(atoms: Atoms, n_steps: int, every: int, temp: float, charge: int = 0):
        a = atoms.copy()
        a.calc = xtb_calculator("GFN1-xTB", charge=charge)
        MaxwellBoltzmannDistribution(a, temperature_K=temp, rng=rng)
        dyn = Langevin(a, timestep=0.5 * units.fs, temperature_K=temp, friction=0.02, rng=rng)
        snaps = []
        for step in range(n_steps):
            dyn.run(1)
            if (step + 1) % every == 0:
                snaps.append(Atoms(a.get_chemical_symbols(), positions=a.get_positions()))
        return snaps

    # organic molecules: conformers, rattled copies, short GFN1 MD at 600 K
    for k, smi in enumerate(st.ORGANIC_SMILES):
        for conf in st.rdkit_conformers(smi, 3, seed=SEED + k):
            group = [conf]
            group += [st.rattle_per_atom(conf, rng, 0.02, 0.10) for _ in range(3)]
            group += md_snapshots(conf, 160, 20, 600.0)
            for g in group:
                g.info.update(config_type="organic", smiles=smi)
            frames += group
    _log(f"organic geometries: {len(frames)}")
    # water clusters of 2-6 molecules
    n0 = len(frames)
    for _ in range(100):
        cl = st.water_cluster(int(rng.integers(2, 7)), rng)
        group = [st.rattle_per_atom(cl, rng, 0.02, 0.08)] + md_snapshots(cl, 100, 20, 300.0)
        for g in group:
            g.info.update(config_type="water_cluster")
        frames += group
    _log(f"water-cluster geometries: {len(frames) - n0}")
    # periodic 32-water boxes (TIP3P-equilibrated geometries)
    n0 = len(frames)
    for temp in (300.0, 350.0, 400.0):
        box = st.water_box(32, rng)
        snaps = st.equilibrate_water_box(box, rng, temp, n_steps=150, snapshot_every=3)[-40:]
        for s in snaps:
            g = st.rattle_per_atom(s, rng, 0.01, 0.06)
            g.info.update(config_type="water_box")
            frames.append(g)
    _log(f"water-box geometries: {len(frames) - n0}")
    # X-...CH3Y complexes along the SN2 coordinate (anions; forces only in training)
    n0 = len(frames)
    for nu, lg in SN2_REACTIONS:
        for s in rng.uniform(0.02, 0.98, size=100):
            g = st.rattle_per_atom(st.sn2_complex(nu, lg, s), rng, 0.02, 0.10)
            g.info.update(config_type="sn2_complex", reaction=f"{nu}-+CH3{lg}",
                          charge=-1, config_energy_weight=0.0)
            frames.append(g)
    _log(f"SN2-complex geometries: {len(frames) - n0}")
    return frames


def sn2_path_point(nu: str, lg: str, s: float) -> Atoms:
    """A reaction-path point: heavy-atom distances fixed, methyl hydrogens relaxed with GFN1."""
    from ase.constraints import FixBondLengths
    from ase.optimize import BFGS

    from .labels import xtb_calculator

    a = st.sn2_complex(nu, lg, s)
    a.set_constraint(FixBondLengths([(0, 1), (0, 2)]))
    a.calc = xtb_calculator("GFN1-xTB", charge=-1)
    BFGS(a, logfile=None).run(fmax=0.05, steps=150)
    out = Atoms(a.get_chemical_symbols(), positions=a.get_positions())
    out.info.update(reaction=f"{nu}-+CH3{lg}", bond_order_s=round(float(s), 4),
                    d_CX=float(a.get_distance(0, 1)), d_CY=float(a.get_distance(0, 2)))
    return out


def sn2_geometries(rng: np.random.Generator) -> tuple[list[Atoms], list[Atoms]]:
    """(ordered scan of F⁻ + CH3Cl, other configurations) for the DFT target."""
    scan = []
    for i, s in enumerate(np.linspace(0.03, 0.97, 31)):
        p = sn2_path_point(*SCAN_REACTION, s)
        p.info.update(config_type="scan", scan_index=i)
        scan.append(p)
    others = []
    for nu, lg in SN2_REACTIONS:
        path = [sn2_path_point(nu, lg, s) for s in np.linspace(0.05, 0.95, 12)]
        for p in path:
            p.info["config_type"] = "path"
            others.append(p)
        for _ in range(43):
            base = path[int(rng.integers(len(path)))]
            g = st.rattle_per_atom(base, rng, 0.02, 0.12)
            g.info.update(reaction=base.info["reaction"], config_type="rattled")
            others.append(g)
    return scan, others


def water_target_geometries(rng: np.random.Generator, n_boxes: int = 300) -> list[Atoms]:
    frames = []
    temps = [300.0, 310.0, 320.0, 330.0, 340.0, 350.0, 360.0, 370.0, 380.0, 390.0]
    per = int(np.ceil(n_boxes / len(temps)))
    for temp in temps:
        box = st.water_box(32, rng)
        snaps = st.equilibrate_water_box(box, rng, temp, n_steps=150 + 4 * per,
                                         snapshot_every=4)[-per:]
        for s in snaps:
            g = st.rattle_per_atom(s, rng, 0.01, 0.05)
            g.info.update(config_type="liquid_water", tip3p_temperature_K=temp)
            frames.append(g)
    return frames[:n_boxes]


SHORT_RANGE_TYPES = ("short_range_dimer", "short_range_trimer", "compressed", "random_compact")
SHORT_RANGE_MAX_FORCE = 20000.0  # eV/Å: short-range configurations above are dropped
#: Typical magnitudes (interaction energy per atom, largest force component) below which a
#: short-range configuration keeps full weight. Above them its weight falls as 1/magnitude²,
#: so that its loss is a relative error and a 0.5 Å dimer cannot swamp the corpus.
SHORT_RANGE_SCALE = {"energy_ev_per_atom": 5.0, "force_ev_per_a": 10.0}


def short_range_geometries(rng: np.random.Generator, corpus: list[Atoms], *,
                           dimers: bool = True, trimers_per_pair: int = 5,
                           n_compressed: int = 120, n_random: int = 80) -> list[Atoms]:
    """Geometries that teach (or probe) the short-range wall: dimers and trimers of every
    element pair from 0.5 Å upwards, compressed molecules and clusters from ``corpus``, and
    random compact structures."""
    from ase.data import covalent_radii

    from ..probes import random_compact

    frames: list[Atoms] = []
    for a, b in itertools.combinations_with_replacement(PRETRAIN_ELEMENTS, 2):
        bond = covalent_radii[Atoms(a).numbers[0]] + covalent_radii[Atoms(b).numbers[0]]
        for d in np.linspace(0.5, 1.15 * bond, 9) if dimers else ():
            d = float(d + rng.uniform(-0.02, 0.02)) if d > 0.5 else 0.5
            g = Atoms([a, b], positions=[[0, 0, 0], [0, 0, d]])
            g.info.update(config_type="short_range_dimer", pair=f"{a}-{b}")
            frames.append(g)
        for _ in range(trimers_per_pair):  # a close pair and a third atom nearby
            c = PRETRAIN_ELEMENTS[int(rng.integers(len(PRETRAIN_ELEMENTS)))]
            d = float(rng.uniform(0.5, 1.0 * bond))
            u = rng.normal(size=3)
            u /= np.linalg.norm(u)
            third = rng.uniform(0.9, 1.8) * u + [0, 0, d * float(rng.integers(2))]
            g = Atoms([a, b, c], positions=[[0, 0, 0], [0, 0, d], third])
            g.info.update(config_type="short_range_trimer", pair=f"{a}-{b}")
            frames.append(g)
    pool = [f for f in corpus if f.info.get("config_type") in ("organic", "water_cluster")]
    for i in rng.choice(len(pool), size=min(n_compressed, len(pool)), replace=False):
        g = pool[int(i)].copy()
        centre = g.positions.mean(axis=0)
        g.positions = centre + float(rng.uniform(0.55, 0.85)) * (g.positions - centre)
        g = Atoms(g.get_chemical_symbols(), positions=g.positions)
        g.info.update(config_type="compressed")
        frames.append(g)
    weights = np.array([4, 3, 1, 2, 1, 1], float)  # H, C, N, O, F, Cl
    for _ in range(n_random):
        n = int(rng.integers(4, 11))
        els = list(rng.choice(PRETRAIN_ELEMENTS, size=3, replace=False, p=weights / weights.sum()))
        g = random_compact(els, n, rng, min_sep=float(rng.uniform(0.6, 0.9)))
        g.info.update(config_type="random_compact")
        frames.append(g)
    return frames


def _weight_short_range(frames: list[Atoms], e0: dict[int, float]) -> list[Atoms]:
    """Relative-error weights (see :data:`SHORT_RANGE_SCALE`) on labelled short-range frames."""
    for a in frames:
        e_int = (a.info["REF_energy"] - sum(e0[z] for z in a.numbers)) / len(a)
        f_max = float(np.abs(a.arrays["REF_forces"]).max())
        a.info["config_energy_weight"] = round(min(
            1.0, (SHORT_RANGE_SCALE["energy_ev_per_atom"] / max(abs(e_int), 1e-9)) ** 2), 6)
        a.info["config_forces_weight"] = round(min(
            1.0, (SHORT_RANGE_SCALE["force_ev_per_a"] / max(f_max, 1e-9)) ** 2), 6)
    return frames


def dimer_reference_curves(method: str = "GFN1-xTB") -> dict:
    """Reference dimer curves of every element pair on the probes' distance grid (eV, relative
    to the largest distance), with the multiplicity of odd-electron dimers set to 2."""
    from ..probes import dimer_distances
    from .labels import label_xtb_compressed

    d = dimer_distances()
    curves, smearing = {}, {}
    for a, b in itertools.combinations_with_replacement(PRETRAIN_ELEMENTS, 2):
        frames = [Atoms([a, b], positions=[[0, 0, 0], [0, 0, float(x)]]) for x in d]
        for temperature in (300.0, 3000.0, 10000.0):  # one electronic temperature per curve
            try:
                e = [label_xtb_compressed(g, method, (temperature,)).info["REF_energy"]
                     for g in frames]
                break
            except RuntimeError:
                continue
        else:  # the hottest smearing, point by point; a point that never converges is null
            e = []
            for g in frames:
                try:
                    e.append(label_xtb_compressed(g, method, (temperature,)).info["REF_energy"])
                except RuntimeError:
                    e.append(None)
        last = e[-1] if e[-1] is not None else next(v for v in reversed(e) if v is not None)
        curves[f"{a}-{b}"] = [None if v is None else round(float(v - last), 5) for v in e]
        smearing[f"{a}-{b}"] = temperature
    return {"method": method, "distances": [round(float(x), 5) for x in d],
            "energy": "eV, relative to the largest distance", "curves": curves,
            "electronic_temperature_K": smearing}


def _scale_shift(train_file: Path, e0: dict[int, float]) -> tuple[float, float]:
    """mace's ``rms_forces_scaling`` statistics (mean interaction energy per atom, RMS force
    component) over the ordinary configurations of a training file."""
    frames = [a for a in read(train_file, ":")
              if a.info.get("config_type") not in SHORT_RANGE_TYPES]
    mean = np.mean([(a.info["REF_energy"] - sum(e0[z] for z in a.numbers)) / len(a)
                    for a in frames])
    forces = np.concatenate([a.arrays["REF_forces"].ravel() for a in frames])
    return float(mean), float(np.sqrt(np.mean(forces ** 2)))


# ----------------------------------------------------------------------------- steps
def step_corpus(out: Path, work: Path) -> None:
    from .labels import isolated_atom_xtb, label_xtb

    if (out / "pretrain" / "train.xyz").exists():
        _log("corpus: done already")
        return
    t0 = time.time()
    rng = np.random.default_rng(SEED)
    geoms = _geometries(work / "corpus_geometries.xyz", lambda: corpus_geometries(rng))
    labelled = _label_resumable(
        geoms, work / "corpus_labelled.partial.xyz",
        lambda a: label_xtb(a, "GFN1-xTB", charge=int(a.info.get("charge", 0))),
        "corpus GFN1-xTB")
    kept, dropped = _filter_forces(labelled)
    for a in kept:
        a.info.pop("charge", None)
    split = _split(kept, {"train": 0.80, "test": 0.10, "replay_pool": 0.10},
                   SEED + 1)
    for name, frames in split.items():
        _write_xyz(out / "pretrain" / f"{name}.xyz", frames)
    iso = []
    for el in PRETRAIN_ELEMENTS:
        a = Atoms(el)
        a.info.update(config_type="IsolatedAtom", REF_energy=isolated_atom_xtb(el, "GFN1-xTB"))
        iso.append(a)
    _write_xyz(out / "pretrain" / "isolated_atoms.xyz", iso)
    _record_step(work, "corpus", time.time() - t0,
                 {"n_labelled": len(labelled), "n_dropped_large_force": dropped})


def _label_short_range(geoms: list[Atoms], partial: Path, what: str
                       ) -> tuple[list[Atoms], int, int]:
    """Label short-range geometries with GFN1-xTB (resumable through ``partial``): the kept
    frames (SCF converged, forces up to :data:`SHORT_RANGE_MAX_FORCE`), the number labelled
    and the number whose SCF never converged (skipped)."""
    from .labels import label_xtb_compressed

    def label(a: Atoms) -> Atoms:
        try:
            return label_xtb_compressed(a, "GFN1-xTB")
        except RuntimeError as exc:  # an SCF that does not converge: the geometry is skipped
            _log(f"{what}: skipped one {a.info.get('config_type')} ({exc})")
            return Atoms("X", info={"failed": True})

    labelled = _label_resumable(geoms, partial, label, f"{what} GFN1-xTB")
    converged = [a for a in labelled if not a.info.get("failed")]
    kept = [a for a in converged if np.abs(a.arrays["REF_forces"]).max() <= SHORT_RANGE_MAX_FORCE]
    for a in kept:
        a.info.pop("total_charge", None)
    return kept, len(converged), len(labelled) - len(converged)


def _type_counts(frames: list[Atoms]) -> dict[str, int]:
    return {t: sum(1 for a in frames if a.info["config_type"] == t) for t in SHORT_RANGE_TYPES}


def step_short_range(out: Path, work: Path) -> None:
    """Label the short-range set with GFN1-xTB and add it to the corpus (train and replay
    pool; the held-out test set stays ordinary so that forgetting is measured as before),
    and write the reference dimer curves."""
    train = read(out / "pretrain" / "train.xyz", ":")
    if any(a.info.get("config_type") in SHORT_RANGE_TYPES for a in train):
        _log("short-range: done already")
        return
    t0 = time.time()
    rng = np.random.default_rng(SEED + 7)
    geoms = _geometries(work / "short_range_geometries.xyz",
                        lambda: short_range_geometries(rng, train))
    kept, n_converged, failed = _label_short_range(
        geoms, work / "short_range_labelled.partial.xyz", "short-range")
    kept = _weight_short_range(kept, _e0_dict(out))
    split = _split(kept, {"train": 0.9, "replay_pool": 0.1}, SEED + 8)
    for name, frames in split.items():
        existing = read(out / "pretrain" / f"{name}.xyz", ":")
        _write_xyz(out / "pretrain" / f"{name}.xyz", existing + frames)
    _write_json(out / "pretrain" / "dimer_reference.json", dimer_reference_curves())
    _record_step(work, "short-range", time.time() - t0,
                 {"n_labelled": n_converged, "n_failed_scf": failed,
                  "n_dropped_large_force": n_converged - len(kept), "n_kept": _type_counts(kept),
                  "max_force_ev_per_a": SHORT_RANGE_MAX_FORCE, "weights": SHORT_RANGE_SCALE})


SHORT_RANGE_TEST = "short_range_test.xyz"


def step_short_range_test(out: Path, work: Path) -> None:
    """A held-out short-range probe set, never trained on: close trimers, compressed
    molecules and clusters of the pretraining *test* structures, and random compact
    structures, labelled with GFN1-xTB. It measures how much of the foundation model's
    short-range many-body repulsion a fine-tuned model keeps."""
    target = out / "pretrain" / SHORT_RANGE_TEST
    if target.exists():
        _log("short-range-test: done already")
        return
    t0 = time.time()
    rng = np.random.default_rng(SEED + 9)
    test = read(out / "pretrain" / "test.xyz", ":")
    geoms = _geometries(work / "short_range_test_geometries.xyz",
                        lambda: short_range_geometries(rng, test, dimers=False,
                                                       trimers_per_pair=3, n_compressed=60,
                                                       n_random=40))
    kept, n_converged, failed = _label_short_range(
        geoms, work / "short_range_test_labelled.partial.xyz", "short-range-test")
    _write_xyz(target, kept)
    _record_step(work, "short-range-test", time.time() - t0,
                 {"n_labelled": n_converged + failed, "n_failed_scf": failed,
                  "n_dropped_large_force": n_converged - len(kept),
                  "n_kept": _type_counts(kept)})


def step_sn2(out: Path, work: Path) -> None:
    from .labels import isolated_atom_dft, label_dft

    if (out / "sn2" / "train.xyz").exists():
        _log("sn2: done already")
        return
    t0 = time.time()
    rng = np.random.default_rng(SEED + 2)
    geoms = _geometries(work / "sn2_geometries.xyz",
                        lambda: list(itertools.chain(*sn2_geometries(rng))))  # scan, others
    labelled = _label_resumable(geoms, work / "sn2_labelled.partial.xyz",
                                lambda a: label_dft(a, charge=-1), "SN2 DFT")
    scan = [a for a in labelled if a.info.get("config_type") == "scan"]
    others, dropped = _filter_forces([a for a in labelled if a.info.get("config_type") != "scan"])
    split = _split(others, {"train": 0.6, "valid": 0.15, "test": 0.25},
                   SEED + 3)
    for name, frames in split.items():
        _write_xyz(out / "sn2" / f"{name}.xyz", frames)
    _write_xyz(out / "sn2" / "scan.xyz", scan)
    iso = []
    for el in ["H", "C", "F", "Cl"]:
        a = Atoms(el)
        a.info.update(config_type="IsolatedAtom", REF_energy=isolated_atom_dft(el))
        iso.append(a)
    _write_xyz(out / "sn2" / "isolated_atoms.xyz", iso)
    _record_step(work, "sn2", time.time() - t0,
                 {"n_labelled": len(labelled), "n_dropped_large_force": dropped})


def step_water(out: Path, work: Path) -> None:
    from .labels import label_xtb

    if (out / "water" / "train.xyz").exists():
        _log("water: done already")
        return
    t0 = time.time()
    rng = np.random.default_rng(SEED + 4)
    geoms = _geometries(work / "water_geometries.xyz", lambda: water_target_geometries(rng))
    labelled = _label_resumable(geoms, work / "water_labelled.partial.xyz",
                                lambda a: label_xtb(a, "GFN2-xTB"), "water GFN2-xTB")
    kept, dropped = _filter_forces(labelled)
    split = _split(kept, {"train": 0.7, "test": 0.3}, SEED + 5)
    for name, frames in split.items():
        _write_xyz(out / "water" / f"{name}.xyz", frames)
    _record_step(work, "water", time.time() - t0,
                 {"n_labelled": len(labelled), "n_dropped_large_force": dropped})


def _e0_dict(out: Path) -> dict[int, float]:
    from ase.data import atomic_numbers

    iso = read(out / "pretrain" / "isolated_atoms.xyz", ":")
    return {atomic_numbers[a.get_chemical_symbols()[0]]: float(a.info["REF_energy"]) for a in iso}


def train_demo_model(name: str, out: Path, work: Path, threads: int) -> None:
    """Train one demo foundation model with ``mace_run_train``."""
    target = out / "models" / f"{name}.model"
    if target.exists():
        _log(f"{name}: done already")
        return
    t0 = time.time()
    cfg = MODEL_SETTINGS[name]
    run_dir = work / name
    run_dir.mkdir(parents=True, exist_ok=True)
    train_file = out / "pretrain" / "train.xyz"
    if cfg["n_train"]:
        frames = read(train_file, ":")
        sub = np.random.default_rng(SEED + 6).permutation(len(frames))[: cfg["n_train"]]
        train_file = run_dir / "train_subset.xyz"
        _write_xyz(train_file, [frames[i] for i in sorted(sub)])
    mean, std = _scale_shift(train_file, _e0_dict(out))
    options = {
        "name": name, "work_dir": str(run_dir), "train_file": str(train_file),
        "valid_fraction": 0.05, "test_file": str(out / "pretrain" / "test.xyz"),
        "E0s": repr(_e0_dict(out)), "model": "ScaleShiftMACE",
        "hidden_irreps": cfg["hidden_irreps"], "r_max": cfg["r_max"],
        "num_interactions": cfg["num_interactions"], "correlation": 3, "max_L": 0,
        "batch_size": cfg["batch_size"], "max_num_epochs": cfg["max_num_epochs"],
        "lr": cfg["lr"], "energy_weight": 10.0, "forces_weight": 100.0,
        "ema": True, "ema_decay": 0.99, "default_dtype": "float32", "device": "cpu",
        "seed": SEED, "energy_key": "REF_energy", "forces_key": "REF_forces",
        "stress_key": "REF_stress", "save_cpu": True, "restart_latest": True,
        "eval_interval": 1, "error_table": "PerAtomRMSE",
        # scale and shift from the ordinary configurations only: the few short-range ones
        # carry forces of hundreds of eV/Å that would otherwise set the output scale
        "mean": round(mean, 6), "std": round(std, 6),
    }
    cmd = command_line(options)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    _log(f"{name}: training ({' '.join(cmd[3:])})")
    with open(run_dir / "train.log", "a") as log:
        subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT,
                       cwd=run_dir)
    produced = run_dir / f"{name}.model"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, produced.read_bytes())
    _record_step(work, f"train-{name}", time.time() - t0, {"command": cmd[3:]})


def step_manifest(out: Path, work: Path) -> None:
    """Evaluate the demo models and write ``manifest.json`` with checksums and versions."""
    import importlib.metadata as md

    from mlipft_core.evaluate import evaluate_model

    # steps measured in an earlier generation stay recorded unless re-run in this one
    old = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").exists() \
        else {}
    steps = {**old.get("steps", {}),
             **{p.stem: json.loads(p.read_text()) for p in sorted((work / "steps").glob("*.json"))}}
    files = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.name != "manifest.json" and p.suffix in {".xyz", ".model"}:
            rel = p.relative_to(out).as_posix()
            entry = {"sha256": file_sha256(p), "bytes": p.stat().st_size}
            if p.suffix == ".xyz":
                frames = read(p, ":")
                entry["n_configs"] = len(frames)
                entry["elements"] = sorted({s for f in frames for s in f.get_chemical_symbols()})
            files[rel] = entry
    models = {}
    for name in (WEAK_MODEL, STRONG_MODEL):
        path = out / "models" / f"{name}.model"
        if not path.exists():
            continue
        errors = {}
        probe = {}
        for label, data in (("pretrain_test", out / "pretrain" / "test.xyz"),
                            ("short_range_test", out / "pretrain" / SHORT_RANGE_TEST),
                            ("sn2_test", out / "sn2" / "test.xyz"),
                            ("water_test", out / "water" / "test.xyz")):
            if data.exists():
                res = evaluate_model(path, data)
                errors[label] = {**res.metrics.as_dict(), "per_config_type": {
                    k: v.as_dict() for k, v in res.per_config_type().items()}}
                if label == "short_range_test":
                    from mlipft_core.analysis import probe_result

                    p = probe_result(name, res.ref_forces, res.pred_forces, res.n_atoms)
                    probe = {"median_force_kept": p.median_force_kept,
                             "soft_spots": p.soft_spots, "n_structures": p.n_structures}
        from mlipft_core.probes import (
            dimer_curve,
            reference_curve,
            reference_dimer_curves,
            repulsive_wall,
        )
        from mlipft_core.registry import inspect_model

        info = inspect_model(path)
        ref = reference_dimer_curves(path)
        walls = {}
        for pair in ("C-C", "C-H", "O-H", "C-Cl", "H-H", "F-F", "Cl-Cl"):
            r = reference_curve(ref, pair)
            walls[pair] = {"model_ev": round(repulsive_wall(dimer_curve(path, pair,
                                                                        trusted=True)), 3),
                           "reference_ev": None if r is None else round(repulsive_wall(r), 3)}
        models[name] = {"file": f"models/{name}.model", "settings": MODEL_SETTINGS[name],
                        "parameter_count": info.parameter_count,
                        "hidden_irreps": info.hidden_irreps, "cutoff": info.cutoff,
                        "test_errors": errors,
                        "dimer_walls_at_0p5_A": walls,
                        "short_range_probe": probe,
                        "training": steps.get(f"train-{name}", {})}
    versions = {}
    for pkg in ("mace-torch", "torch", "ase", "tblite", "pyscf", "rdkit", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    isolated = {}
    for label, rel in (("gfn1", "pretrain/isolated_atoms.xyz"),
                       ("dft", "sn2/isolated_atoms.xyz")):
        if (out / rel).exists():
            isolated[label] = [{"symbol": a.get_chemical_symbols()[0],
                                "energy": float(a.info["REF_energy"])}
                               for a in read(out / rel, ":")]
    manifest = {
        "isolated_atoms": isolated,
        "description": "Offline demo world of the mlipft workbench: a GFN1-xTB pretraining "
                       "corpus, an SN2 DFT target, a GFN2-xTB liquid-water target and two demo "
                       "foundation models trained with mace_run_train.",
        "seed": SEED,
        "methods": {
            "pretrain": "GFN1-xTB (tblite); anionic SN2 complexes carry config_energy_weight=0; "
                        "short-range set (dimers of every element pair from 0.5 A, close "
                        "trimers, compressed molecules and clusters, random compact structures; "
                        "odd-electron structures as doublets, Fermi smearing where the SCF "
                        "needs it) with relative-error weights, in train and replay pool only",
            "short_range_test": "GFN1-xTB, held out from training: close trimers of every "
                                "element pair, compressed molecules and clusters of the "
                                "pretraining test structures, random compact structures (the "
                                "short-range repulsion probe)",
            "dimer_reference": "GFN1-xTB dimer curves on the probes' grid (0.5-5 A), one "
                               "electronic temperature per curve",
            "sn2": "PySCF " + json.dumps(
                __import__("mlipft_core.demo.labels", fromlist=["x"]).DFT_SETTINGS),
            "water": "GFN2-xTB (tblite); 32-water periodic boxes (0.997 g/cm^3): random packing, "
                     "0.3-0.6 ps of rigid TIP3P Langevin MD at 300-390 K (geometries only), "
                     "per-atom displacements of 0.01-0.05 A",
            "geometry_sources": "organics: RDKit ETKDG+MMFF conformers, rattled copies and "
                                "GFN1-xTB Langevin MD at 600 K; SN2 paths: Pauling bond-order "
                                "interpolation with methyl H relaxed by GFN1-xTB at fixed C-X/C-Y",
        },
        "keys": {"energy": "REF_energy", "forces": "REF_forces", "stress": "REF_stress",
                 "charge": "total_charge"},
        "units": {"energy": "eV", "forces": "eV/Å", "stress": "eV/Å^3"},
        "max_force_filter_ev_per_a": MAX_FORCE,
        "versions": versions,
        "files": files,
        "models": models,
        "steps": steps,
    }
    _write_json(out / "manifest.json", manifest)
    _log(f"manifest written: {len(files)} files, {len(models)} models")


STEPS = ["corpus", "short-range", "short-range-test", "sn2", "water", "train-weak", "train-strong",
         "manifest"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="all", help="comma-separated steps or 'all': "
                        + ", ".join(STEPS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    steps = STEPS if args.steps == "all" else args.steps.split(",")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    args.work_dir.mkdir(parents=True, exist_ok=True)
    for step in steps:
        _log(f"step {step}")
        if step == "corpus":
            step_corpus(args.out, args.work_dir)
        elif step == "short-range":
            step_short_range(args.out, args.work_dir)
        elif step == "short-range-test":
            step_short_range_test(args.out, args.work_dir)
        elif step == "sn2":
            step_sn2(args.out, args.work_dir)
        elif step == "water":
            step_water(args.out, args.work_dir)
        elif step == "train-weak":
            train_demo_model(WEAK_MODEL, args.out, args.work_dir, args.threads)
        elif step == "train-strong":
            train_demo_model(STRONG_MODEL, args.out, args.work_dir, args.threads)
        elif step == "manifest":
            step_manifest(args.out, args.work_dir)
        else:
            parser.error(f"unknown step {step!r}; choose from {', '.join(STEPS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
