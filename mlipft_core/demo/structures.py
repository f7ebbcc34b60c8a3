"""Geometry builders for the demo world (no electronic-structure calls here).

Every builder takes a :class:`numpy.random.Generator` so that the whole demo world is
reproducible from one seed.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms, units

#: Neutral small molecules with H, C, N, O, F, Cl (SMILES) for the pretraining corpus.
ORGANIC_SMILES: tuple[str, ...] = (
    "C", "CC", "CCC", "CCCC", "CC(C)C", "C=C", "C#C", "C=CC", "c1ccccc1", "C1CCCCC1",
    "CO", "CCO", "CCCO", "CC(C)O", "COC", "C=O", "CC=O", "CC(C)=O", "OC=O", "CC(=O)O",
    "COC=O", "N", "CN", "CCN", "CNC", "CC#N", "NC=O", "CC(N)=O", "c1ccncc1", "c1cc[nH]c1",
    "O", "OO", "NO", "CF", "FCF", "FC(F)F", "CCF", "CCl", "ClCCl", "ClC(Cl)Cl",
    "CCCl", "FC=C", "ClC=C", "OCCF", "OCCCl", "NCCO", "Fc1ccccc1", "Clc1ccccc1",
    "FC(F)(F)C", "CC(F)Cl",
)


def rattle_per_atom(atoms: Atoms, rng: np.random.Generator, low: float, high: float) -> Atoms:
    """Return a copy with each atom moved by a random vector of length in [low, high] Å."""
    out = atoms.copy()
    n = len(out)
    directions = rng.normal(size=(n, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    lengths = rng.uniform(low, high, size=(n, 1))
    out.positions += directions * lengths
    return out


def rdkit_conformers(smiles: str, n_conf: int, seed: int) -> list[Atoms]:
    """Embed ``n_conf`` conformers of a molecule with RDKit's ETKDG and MMFF relaxation."""
    # rdkit: the demo build's own dependency (requirements-demo.txt)
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    conf_ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n_conf, params=params))
    if not conf_ids:
        raise RuntimeError(f"RDKit could not embed {smiles}")
    AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=500)
    symbols = [a.GetSymbol() for a in mol.GetAtoms()]
    out = []
    for cid in conf_ids:
        pos = mol.GetConformer(cid).GetPositions()
        out.append(Atoms(symbols=symbols, positions=pos))
    return out


def water_molecule(rng: np.random.Generator) -> np.ndarray:
    """Positions (O, H, H) of one randomly oriented rigid water at the origin."""
    r_oh, theta = 0.9572, np.deg2rad(104.52)
    local = np.array(
        [[0.0, 0.0, 0.0],
         [r_oh, 0.0, 0.0],
         [r_oh * np.cos(theta), r_oh * np.sin(theta), 0.0]]
    )
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    rot = np.array(
        [[a*a + b*b - c*c - d*d, 2*(b*c - a*d), 2*(b*d + a*c)],
         [2*(b*c + a*d), a*a - b*b + c*c - d*d, 2*(c*d - a*b)],
         [2*(b*d - a*c), 2*(c*d + a*b), a*a - b*b - c*c + d*d]]
    )
    return local @ rot.T


def water_cluster(n_water: int, rng: np.random.Generator, min_oo: float = 2.7) -> Atoms:
    """A compact non-periodic cluster of ``n_water`` randomly placed, non-overlapping waters."""
    radius = 1.6 * n_water ** (1.0 / 3.0) + 0.6
    centres: list[np.ndarray] = []
    while len(centres) < n_water:
        c = rng.uniform(-radius, radius, size=3)
        if all(np.linalg.norm(c - o) > min_oo for o in centres) and (
                not centres or min(np.linalg.norm(c - o) for o in centres) < 3.3):
            centres.append(c)
    pos = np.concatenate([water_molecule(rng) + c for c in centres])
    return Atoms("OH2" * n_water, positions=pos)


def water_box(n_water: int, rng: np.random.Generator, density: float = 0.997,
              min_oo: float = 2.6) -> Atoms:
    """A periodic cubic box of randomly inserted rigid waters at the given density (g/cm³)."""
    mass = n_water * 18.015 / units.mol  # grams
    length = (mass / density * 1e24) ** (1.0 / 3.0)
    cell = np.eye(3) * length
    centres: list[np.ndarray] = []
    tries = 0
    while len(centres) < n_water:
        tries += 1
        if tries > 200000:
            raise RuntimeError("could not pack the water box")
        c = rng.uniform(0, length, size=3)
        ok = True
        for o in centres:
            d = c - o
            d -= length * np.round(d / length)
            if np.linalg.norm(d) < min_oo:
                ok = False
                break
        if ok:
            centres.append(c)
    pos = np.concatenate([water_molecule(rng) + c for c in centres])
    atoms = Atoms("OH2" * n_water, positions=pos, cell=cell, pbc=True)
    atoms.wrap()
    return atoms


def equilibrate_water_box(atoms: Atoms, rng: np.random.Generator, temperature_k: float,
                          n_steps: int, snapshot_every: int) -> list[Atoms]:
    """Run rigid TIP3P Langevin MD to relax a packed box; return snapshots.

    TIP3P only generates geometries; every snapshot is labelled later by xTB.
    """
    # ase's constraints and MD: slow to import (they pull in scipy), only for the water boxes
    from ase.calculators.tip3p import TIP3P, angleHOH, rOH
    from ase.constraints import FixBondLengths
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    box = atoms.copy()
    n_water = len(box) // 3
    r_hh = 2 * rOH * np.sin(np.deg2rad(angleHOH) / 2)
    pairs = [(3 * i + j, 3 * i + (j + 1) % 3) for i in range(n_water) for j in range(3)]
    box.set_constraint(FixBondLengths(pairs, tolerance=1e-3))
    # Set exact TIP3P geometry before constraining.
    for i in range(n_water):
        o = box.positions[3 * i]
        for k in (1, 2):
            v = box.positions[3 * i + k] - o
            box.positions[3 * i + k] = o + v / np.linalg.norm(v) * rOH
        h1, h2 = box.positions[3 * i + 1], box.positions[3 * i + 2]
        mid = (h1 + h2) / 2
        half = (h2 - h1) / np.linalg.norm(h2 - h1) * r_hh / 2
        box.positions[3 * i + 1], box.positions[3 * i + 2] = mid - half, mid + half
        v1 = box.positions[3 * i + 1] - o
        box.positions[3 * i + 1] = o + v1 / np.linalg.norm(v1) * rOH
    box.calc = TIP3P(rc=min(4.5, box.cell.lengths().min() / 2 - 0.01))
    MaxwellBoltzmannDistribution(box, temperature_K=temperature_k, rng=rng)
    dyn = Langevin(box, timestep=2.0 * units.fs, temperature_K=temperature_k,
                   friction=0.02, rng=rng)
    snaps = []
    for step in range(n_steps):
        dyn.run(1)
        if (step + 1) % snapshot_every == 0:
            snap = Atoms(box.get_chemical_symbols(), positions=box.get_positions(),
                         cell=box.cell, pbc=True)
            snap.wrap()
            snaps.append(snap)
    return snaps


def sn2_complex(nucleophile: str, leaving: str, s: float, c: float = 0.4) -> Atoms:
    """Collinear X⁻ + CH3Y geometry at bond-order parameter ``s`` (0: reactant, 1: product).

    Distances follow Pauling's bond-order relation ``r = r_eq - c ln(n)`` with
    n(C-X) = s and n(C-Y) = 1 - s; the methyl umbrella inverts smoothly with ``s``.
    Atom order: C, X, Y, H, H, H.
    """
    r_eq = {"F": 1.39, "Cl": 1.79}
    s = float(np.clip(s, 0.01, 0.99))
    d_x = r_eq[nucleophile] - c * np.log(s)
    d_y = r_eq[leaving] - c * np.log(1.0 - s)
    # angle between C-H and +z (towards Y): 108.5 deg at reactant, 71.5 deg at product
    theta = np.deg2rad(108.5 - 37.0 * s)
    r_ch = 1.09
    hs = [
        [r_ch * np.sin(theta) * np.cos(phi), r_ch * np.sin(theta) * np.sin(phi),
         r_ch * np.cos(theta)]
        for phi in np.deg2rad([0.0, 120.0, 240.0])
    ]
    pos = [[0, 0, 0], [0, 0, -d_x], [0, 0, d_y]] + hs
    return Atoms(["C", nucleophile, leaving, "H", "H", "H"], positions=pos)
