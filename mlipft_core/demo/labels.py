"""Reference labels from real electronic-structure packages (tblite xTB, PySCF DFT).

Labels are written under the ``REF_`` keys that mace reads by default
(``REF_energy`` in eV, ``REF_forces`` in eV/Å, ``REF_stress`` in eV/Å³ for periodic cells)
together with ``total_charge``.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms, units

#: Spin multiplicities of the isolated atoms used for reference energies.
ATOM_MULTIPLICITY = {"H": 2, "C": 3, "N": 4, "O": 3, "F": 2, "Cl": 2}


def _store(atoms: Atoms, energy: float, forces: np.ndarray, charge: int,
           stress: np.ndarray | None = None) -> Atoms:
    out = Atoms(atoms.get_chemical_symbols(), positions=atoms.get_positions(),
                cell=atoms.cell, pbc=atoms.pbc)
    out.info.update({k: v for k, v in atoms.info.items() if not k.startswith("REF_")})
    out.info["REF_energy"] = float(energy)
    out.info["total_charge"] = int(charge)
    out.arrays["REF_forces"] = np.asarray(forces, dtype=float)
    if stress is not None:
        out.info["REF_stress"] = np.asarray(stress, dtype=float)
    return out


def xtb_calculator(method: str, charge: int = 0, multiplicity: int | None = None,
                   electronic_temperature: float = 300.0, max_iterations: int = 500):
    """A tblite ASE calculator for ``GFN1-xTB`` or ``GFN2-xTB``."""
    from tblite.ase import TBLite  # the demo build's own dependency (requirements-demo.txt)

    return TBLite(method=method, charge=charge, multiplicity=multiplicity, verbosity=0,
                  max_iterations=max_iterations, electronic_temperature=electronic_temperature)


def label_xtb(atoms: Atoms, method: str, charge: int = 0, multiplicity: int | None = None,
              electronic_temperature: float = 300.0, max_iterations: int = 500) -> Atoms:
    """Label one structure with tblite; stress (3x3, eV/Å³) is added for periodic cells."""
    calc = xtb_calculator(method, charge=charge, multiplicity=multiplicity,
                          electronic_temperature=electronic_temperature,
                          max_iterations=max_iterations)
    a = atoms.copy()
    a.calc = calc
    energy = a.get_potential_energy()
    forces = a.get_forces()
    stress = None
    if a.pbc.all():
        stress = a.get_stress(voigt=False)
    return _store(atoms, energy, forces, charge, stress)


def label_xtb_compressed(atoms: Atoms, method: str,
                         temperatures: tuple[float, ...] = (300.0, 3000.0, 10000.0)) -> Atoms:
    """Label a (possibly strongly compressed) neutral structure: odd-electron structures as
    doublets; an SCF that does not converge at 300 K is retried with Fermi smearing at
    3000 K and then 10000 K (the retry is recorded in ``xtb_electronic_temperature``)."""
    multiplicity = 2 if int(sum(atoms.numbers)) % 2 else 1
    error: Exception | None = None
    for temperature in temperatures:
        try:
            out = label_xtb(atoms, method, multiplicity=multiplicity,
                            electronic_temperature=temperature, max_iterations=150)
        except Exception as exc:  # tblite raises ase's CalculationFailed
            error = exc
            continue
        if temperature != 300.0:
            out.info["xtb_electronic_temperature"] = temperature
        return out
    raise RuntimeError(f"SCF did not converge: {error}")


def isolated_atom_xtb(symbol: str, method: str) -> float:
    """Energy (eV) of one isolated atom in its ground-state multiplicity."""
    a = Atoms(symbol)
    a.calc = xtb_calculator(method, multiplicity=ATOM_MULTIPLICITY[symbol])
    return float(a.get_potential_energy())


#: PySCF settings of the DFT target (anions need diffuse functions).
DFT_SETTINGS = {"xc": "b3lyp", "basis": "def2-svpd", "density_fit": True, "grids_level": 1}


def _pyscf_mol(atoms: Atoms, charge: int, spin: int):
    from pyscf import gto  # the demo build's own dependency, slow to import

    atom_spec = [(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)]
    return gto.M(atom=atom_spec, basis=DFT_SETTINGS["basis"], charge=charge, spin=spin,
                 unit="Angstrom", verbose=0)


def _pyscf_scf(mol, unrestricted: bool):
    from pyscf import dft  # the demo build's own dependency, slow to import

    mf = dft.UKS(mol) if unrestricted else dft.RKS(mol)
    if DFT_SETTINGS["density_fit"]:
        mf = mf.density_fit()
    mf.xc = DFT_SETTINGS["xc"]
    mf.grids.level = DFT_SETTINGS["grids_level"]
    mf.conv_tol = 1e-9
    mf.max_cycle = 200
    return mf


def label_dft(atoms: Atoms, charge: int) -> Atoms:
    """Closed-shell DFT energy and analytic forces with PySCF (see :data:`DFT_SETTINGS`)."""
    mol = _pyscf_mol(atoms, charge, 0)
    mf = _pyscf_scf(mol, unrestricted=False)
    energy = mf.kernel()
    if not mf.converged:
        raise RuntimeError("SCF did not converge")
    grad = mf.nuc_grad_method().kernel()
    forces = -np.asarray(grad) * units.Hartree / units.Bohr
    return _store(atoms, energy * units.Hartree, forces, charge)


def isolated_atom_dft(symbol: str) -> float:
    """Spin-unrestricted DFT energy (eV) of one isolated atom."""
    mol = _pyscf_mol(Atoms(symbol), 0, ATOM_MULTIPLICITY[symbol] - 1)
    mf = _pyscf_scf(mol, unrestricted=True)
    return float(mf.kernel() * units.Hartree)
