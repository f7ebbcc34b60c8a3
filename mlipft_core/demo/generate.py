"""Generate the offline demo world shipped in ``sample_data/``.

The demo world is a miniature of the fine-tuning setting of the study behind the workbench:

* a *pretraining corpus* labelled with GFN1-xTB (level A): organic molecules with H, C, N, O, F,
  Cl, water clusters, periodic 32-water boxes and X⁻···CH3Y complexes;
* *target 1*: the SN2 reactions X⁻ + CH3Y (X, Y in F, Cl) labelled with hybrid DFT
  (PySCF B3LYP/def2-SVPD, level B), with an ordered reaction-path scan;
* *target 2*: periodic 32-water boxes labelled with GFN2-xTB (level B');
* two *demo foundation models* trained with ``mace_run_train`` on the corpus, one weaker
  (16 channels, a fifth of the data, few epochs) than the other.

Run step by step (each step is resumable and skipped when its outputs exist)::

    pip install -r requirements-demo.txt
    python -m mlipft_core.demo.generate --steps all            # everything, in order
    python -m mlipft_core.demo.generate --steps sn2 --threads 1 # one step

Steps: ``corpus``, ``sn2``, ``water``, ``train-weak``, ``train-strong``, ``manifest``.
Intermediate files live in ``--work-dir`` (default ``~/.cache/mlipft/demo-build``); only the
final files go to ``--out`` (default ``sample_data/``). Each step's wall time is recorded and
copied into ``sample_data/manifest.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write

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
        "max_num_epochs": 45, "batch_size": 10, "lr": 0.01,
    },
}


# ----------------------------------------------------------------------------- helpers
def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_xyz(path: Path, frames: list[Atoms]) -> None:
    """Write atomically: a crash never leaves a half-written file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    write(tmp, frames, format="extxyz")
    os.replace(tmp, path)


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _record_step(work: Path, step: str, seconds: float, extra: dict | None = None) -> None:
    _write_json(work / "steps" / f"{step}.json", {"seconds": round(seconds, 1), **(extra or {})})


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


def _split(frames: list[Atoms], fractions: dict[str, float], rng: np.random.Generator
           ) -> dict[str, list[Atoms]]:
    idx = rng.permutation(len(frames))
    out, start = {}, 0
    names = list(fractions)
    for k, name in enumerate(names):
        n = len(frames) - start if k == len(names) - 1 else int(round(fractions[name] * len(frames)))
        out[name] = [frames[i] for i in idx[start:start + n]]
        start += n
    return out


# ----------------------------------------------------------------------------- geometries
def corpus_geometries(rng: np.random.Generator) -> list[Atoms]:
    """All unlabelled pretraining geometries, each tagged with ``config_type``."""
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase import units

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


# ----------------------------------------------------------------------------- steps
def step_corpus(out: Path, work: Path) -> None:
    from .labels import isolated_atom_xtb, label_xtb

    if (out / "pretrain" / "train.xyz").exists():
        _log("corpus: done already")
        return
    t0 = time.time()
    rng = np.random.default_rng(SEED)
    geo_path = work / "corpus_geometries.xyz"
    if geo_path.exists():
        geoms = read(geo_path, ":")
    else:
        geoms = corpus_geometries(rng)
        _write_xyz(geo_path, geoms)
    labelled = _label_resumable(
        geoms, work / "corpus_labelled.partial.xyz",
        lambda a: label_xtb(a, "GFN1-xTB", charge=int(a.info.get("charge", 0))),
        "corpus GFN1-xTB")
    kept, dropped = _filter_forces(labelled)
    for a in kept:
        a.info.pop("charge", None)
    split = _split(kept, {"train": 0.80, "test": 0.10, "replay_pool": 0.10},
                   np.random.default_rng(SEED + 1))
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


def step_sn2(out: Path, work: Path) -> None:
    from .labels import isolated_atom_dft, label_dft

    if (out / "sn2" / "train.xyz").exists():
        _log("sn2: done already")
        return
    t0 = time.time()
    rng = np.random.default_rng(SEED + 2)
    geo_path = work / "sn2_geometries.xyz"
    if geo_path.exists():
        geoms = read(geo_path, ":")
    else:
        scan, others = sn2_geometries(rng)
        geoms = scan + others
        _write_xyz(geo_path, geoms)
    labelled = _label_resumable(geoms, work / "sn2_labelled.partial.xyz",
                                lambda a: label_dft(a, charge=-1), "SN2 DFT")
    scan = [a for a in labelled if a.info.get("config_type") == "scan"]
    others, dropped = _filter_forces([a for a in labelled if a.info.get("config_type") != "scan"])
    split = _split(others, {"train": 0.6, "valid": 0.15, "test": 0.25},
                   np.random.default_rng(SEED + 3))
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
    geo_path = work / "water_geometries.xyz"
    if geo_path.exists():
        geoms = read(geo_path, ":")
    else:
        geoms = water_target_geometries(rng)
        _write_xyz(geo_path, geoms)
    labelled = _label_resumable(geoms, work / "water_labelled.partial.xyz",
                                lambda a: label_xtb(a, "GFN2-xTB"), "water GFN2-xTB")
    kept, dropped = _filter_forces(labelled)
    split = _split(kept, {"train": 0.7, "test": 0.3}, np.random.default_rng(SEED + 5))
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
    cmd = [
        sys.executable, "-m", "mace.cli.run_train",
        f"--name={name}", f"--work_dir={run_dir}", f"--train_file={train_file}",
        "--valid_fraction=0.05", f"--test_file={out / 'pretrain' / 'test.xyz'}",
        f"--E0s={_e0_dict(out)!r}", "--model=ScaleShiftMACE",
        f"--hidden_irreps={cfg['hidden_irreps']}", f"--r_max={cfg['r_max']}",
        f"--num_interactions={cfg['num_interactions']}", "--correlation=3", "--max_L=0",
        f"--batch_size={cfg['batch_size']}", f"--max_num_epochs={cfg['max_num_epochs']}",
        f"--lr={cfg['lr']}", "--energy_weight=10.0", "--forces_weight=100.0",
        "--ema", "--ema_decay=0.99", "--default_dtype=float32", "--device=cpu",
        f"--seed={SEED}", "--energy_key=REF_energy", "--forces_key=REF_forces",
        "--stress_key=REF_stress", "--save_cpu", "--restart_latest", "--eval_interval=1",
        "--error_table=PerAtomRMSE",
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    _log(f"{name}: training ({' '.join(cmd[3:])})")
    with open(run_dir / "train.log", "a") as log:
        subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT,
                       cwd=run_dir)
    produced = run_dir / f"{name}.model"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".model.part")
    tmp.write_bytes(produced.read_bytes())
    os.replace(tmp, target)
    _record_step(work, f"train-{name}", time.time() - t0, {"command": cmd[3:]})


def step_manifest(out: Path, work: Path) -> None:
    """Evaluate the demo models and write ``manifest.json`` with checksums and versions."""
    import importlib.metadata as md

    from mlipft_core.evaluate import evaluate_model

    steps = {p.stem: json.loads(p.read_text()) for p in sorted((work / "steps").glob("*.json"))}
    files = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.name != "manifest.json" and p.suffix in {".xyz", ".model"}:
            rel = p.relative_to(out).as_posix()
            entry = {"sha256": _sha256(p), "bytes": p.stat().st_size}
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
        for label, data in (("pretrain_test", out / "pretrain" / "test.xyz"),
                            ("sn2_test", out / "sn2" / "test.xyz"),
                            ("water_test", out / "water" / "test.xyz")):
            if data.exists():
                res = evaluate_model(path, data)
                errors[label] = {**res.metrics.as_dict(), "per_config_type": {
                    k: v.as_dict() for k, v in res.per_config_type().items()}}
        from mlipft_core.registry import inspect_model

        info = inspect_model(path)
        models[name] = {"file": f"models/{name}.model", "settings": MODEL_SETTINGS[name],
                        "parameter_count": info.parameter_count,
                        "hidden_irreps": info.hidden_irreps, "cutoff": info.cutoff,
                        "test_errors": errors,
                        "training": steps.get(f"train-{name}", {})}
    versions = {}
    for pkg in ("mace-torch", "torch", "ase", "tblite", "pyscf", "rdkit", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    isolated = {}
    for label, rel in (("gfn1", "pretrain/isolated_atoms.xyz"), ("dft", "sn2/isolated_atoms.xyz")):
        if (out / rel).exists():
            isolated[label] = [{"symbol": a.get_chemical_symbols()[0],
                                "energy": float(a.info["REF_energy"])} for a in read(out / rel, ":")]
    manifest = {
        "isolated_atoms": isolated,
        "description": "Offline demo world of the mlipft workbench: a GFN1-xTB pretraining "
                       "corpus, an SN2 DFT target, a GFN2-xTB liquid-water target and two demo "
                       "foundation models trained with mace_run_train.",
        "seed": SEED,
        "methods": {
            "pretrain": "GFN1-xTB (tblite); anionic SN2 complexes carry config_energy_weight=0",
            "sn2": "PySCF " + json.dumps(__import__("mlipft_core.demo.labels", fromlist=["x"]).DFT_SETTINGS),
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


STEPS = ["corpus", "sn2", "water", "train-weak", "train-strong", "manifest"]


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
