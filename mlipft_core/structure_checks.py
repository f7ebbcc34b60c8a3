"""Geometry checks of a configuration: what makes a structure unusable for any model.

Overlapping atoms, a degenerate periodic cell, NaN or infinite positions, elements a model
does not cover, and cells (or molecules far from the origin) so large that mace's neighbour
list would need more memory than a machine has.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from matscipy.neighbours import neighbour_list

#: Atoms closer than this (Å) overlap: no potential is meaningful there (MACE returns NaN for
#: coincident atoms).
OVERLAP_DISTANCE = 0.1
#: A periodic cell vector shorter than this (Å) is degenerate: every atom overlaps its image.
MIN_CELL_LENGTH = OVERLAP_DISTANCE
#: A periodic cell whose volume is below this fraction of the product of its vector lengths
#: (i.e. nearly coplanar vectors) is degenerate.
MIN_CELL_FLATNESS = 1e-4
#: Most neighbour-list bins accepted for one structure. mace's neighbour list (matscipy) holds
#: about 4 bytes per bin (``cell size / cutoff`` bins along each periodic direction), so 10^8
#: bins are about 0.4 GB and a few seconds per structure: a 2,300 Å periodic cube at a 5 Å
#: cutoff. Real structures stay far below (a 200 Å box: 64,000 bins); a 10^4 Å cell would need
#: about 10^10 bins and tens of GB.
MAX_NEIGHBOUR_BINS = 10**8
#: Cutoff (Å) assumed for the bin estimate when no model is known; MACE models use 4.5 to 6 Å
#: (a smaller cutoff means more bins, so this errs on the safe side).
NOMINAL_CUTOFF = 5.0


#: What is wrong with a configuration of no atoms (an atom count of 0).
NO_ATOMS = "has no atoms (its atom count is 0)"


def cell_problem(atoms: Atoms) -> str | None:
    """What is wrong with the cell of a (partly) periodic structure, or ``None``.

    The periodic cell vectors must be longer than :data:`MIN_CELL_LENGTH` and span a
    non-degenerate lattice (volume, or area for two periodic directions).
    """
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if not pbc.any():
        return None
    cell = np.asarray(atoms.cell.array, dtype=float)
    if not np.all(np.isfinite(cell)):
        return "the cell holds NaN or infinite values"
    lengths = np.linalg.norm(cell, axis=1)
    short = [("abc"[d], lengths[d]) for d in range(3) if pbc[d] and lengths[d] < MIN_CELL_LENGTH]
    if short:
        return ", ".join(f"periodic cell vector {n} has length {v:.3g} Å" for n, v in short)
    vecs = cell[pbc]
    gram = float(np.linalg.det(vecs @ vecs.T))
    measure = float(np.sqrt(max(gram, 0.0)))     # volume, area or length of the lattice
    flat = measure / float(np.prod(lengths[pbc]))
    if flat < MIN_CELL_FLATNESS:
        what = {3: "volume", 2: "area", 1: "length"}[int(pbc.sum())]
        return (f"the periodic cell is singular ({what} {measure:.3g} for vectors of length "
                f"{', '.join(f'{v:.3g}' for v in lengths[pbc])} Å)")
    return None


def _effective_cell(atoms: Atoms, cutoff: float, centered: bool) -> np.ndarray:
    """The cell mace's neighbour list works in (non-periodic directions extended as
    ``mace.data.neighborhood.get_neighborhood`` does)."""
    pos = np.asarray(atoms.positions, dtype=float)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if centered and not pbc.any() and len(pos):
        pos = pos - (pos.min(axis=0) + pos.max(axis=0)) / 2
    cell = np.array(atoms.cell.array, dtype=float)
    if not cell.any():
        cell = np.identity(3)
    reach = (float(np.max(np.abs(pos))) if len(pos) else 0.0) + 1.0
    for d in range(3):
        if not pbc[d]:
            cell[d] = 0.0
            cell[d, d] = reach * 5 * cutoff
    return cell


def neighbour_bins(atoms: Atoms, cutoff: float, *, centered: bool = False) -> float:
    """Estimated number of bins of mace's neighbour list for ``atoms`` at ``cutoff``.

    ``centered``: whether non-periodic structures are centred on the origin first (as
    :mod:`mlipft_core.evaluate` does; ``mace_run_train`` does not).
    """
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if not pbc.any():  # mace's box: 5 * (largest |coordinate| + 1) cutoffs along each axis
        pos = np.asarray(atoms.positions, dtype=float)
        if centered and len(pos):
            pos = pos - (pos.min(axis=0) + pos.max(axis=0)) / 2
        reach = (float(np.max(np.abs(pos))) if len(pos) else 0.0) + 1.0
        return max(1.0, float(np.floor(reach * 5))) ** 3
    cell = _effective_cell(atoms, cutoff, centered)
    vol = abs(float(np.linalg.det(cell)))
    if vol == 0.0:
        return 1.0
    bins = 1.0
    for d in range(3):
        face = np.linalg.norm(np.cross(cell[(d + 1) % 3], cell[(d + 2) % 3]))
        bins *= max(1.0, np.floor(vol / face / cutoff))
    return bins


def huge_cell_problem(atoms: Atoms, cutoff: float | None = None, *, centered: bool = False
                      ) -> str | None:
    """A message when mace's neighbour list for ``atoms`` would exceed
    :data:`MAX_NEIGHBOUR_BINS` bins (memory), else ``None``."""
    cutoff = float(cutoff or NOMINAL_CUTOFF)
    bins = neighbour_bins(atoms, cutoff, centered=centered)
    if bins <= MAX_NEIGHBOUR_BINS:
        return None
    if np.asarray(atoms.pbc).any():
        lengths = " × ".join(f"{v:.6g}" for v in atoms.cell.lengths())
        what = f"its periodic cell ({lengths} Å)"
        hint = "is the cell in Å, and meant to be periodic?"
    else:
        reach = float(np.max(np.abs(atoms.positions)))
        what = f"its coordinates (up to {reach:.6g} Å from the origin)"
        hint = "centre the structure on the origin"
    return (f"{what} would need about {bins:.1e} neighbour-list bins at a {cutoff:g} Å cutoff "
            f"(limit {MAX_NEIGHBOUR_BINS:.0e}, about {bins * 4 / 1e9:.3g} GB); {hint}")


def closest_overlap(atoms: Atoms, distance: float = OVERLAP_DISTANCE
                    ) -> tuple[int, int, float] | None:
    """The closest pair of atoms nearer than ``distance`` (periodic images included), as
    ``(i, j, d)``, or ``None``. Cheap: a k-d tree for molecules, matscipy's neighbour list
    with a bounded number of bins for periodic cells."""
    n = len(atoms)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    pos = np.asarray(atoms.positions, dtype=float)
    if n == 0 or (n == 1 and not pbc.any()):
        return None
    if not pbc.any():
        if n <= 64:
            diff = pos[:, None, :] - pos[None, :, :]
            d2 = np.einsum("ijk,ijk->ij", diff, diff)
            iu = np.triu_indices(n, 1)
            vals = d2[iu]
            k = int(np.argmin(vals))
            dmin = float(np.sqrt(vals[k]))
            return (int(iu[0][k]), int(iu[1][k]), dmin) if dmin < distance else None
        from scipy.spatial import cKDTree  # slow to import, only for larger molecules

        pairs = cKDTree(pos).query_pairs(distance, output_type="ndarray")
        if not len(pairs):
            return None
        d = np.linalg.norm(pos[pairs[:, 0]] - pos[pairs[:, 1]], axis=1)
        k = int(np.argmin(d))
        return int(pairs[k, 0]), int(pairs[k, 1]), float(d[k])
    if pbc.all():
        cell = np.asarray(atoms.cell.array, dtype=float)
        vol = abs(float(np.linalg.det(cell)))
        faces = [vol / np.linalg.norm(np.cross(cell[(d + 1) % 3], cell[(d + 2) % 3]))
                 for d in range(3)]
        # a search radius that keeps the bins at most about 20^3 (then keep the close pairs)
        search = max(distance, float(np.prod(faces) / 8000) ** (1 / 3))
        i, j, d = neighbour_list("ijd", positions=pos, cell=cell, pbc=pbc, cutoff=search)
    else:
        from ase.neighborlist import neighbor_list  # slow to import (it pulls in scipy)

        i, j, d = neighbor_list("ijd", atoms, distance, max_nbins=1e5)
    close = d < distance
    if not close.any():
        return None
    k = int(np.argmin(np.where(close, d, np.inf)))
    a, b = sorted((int(i[k]), int(j[k])))
    return a, b, float(d[k])


def structure_problem(atoms: Atoms, *, cutoff: float | None = None, centered: bool = False,
                      known_numbers: Iterable[int] | None = None,
                      overlap: bool = True) -> tuple[str, str] | None:
    """``(code, message)`` of the first thing that makes ``atoms`` unusable for a model, or
    ``None``: no atoms at all, non-finite positions or cell, a degenerate or huge cell,
    elements outside ``known_numbers``, overlapping atoms."""
    if len(atoms) == 0:
        return "no_atoms", NO_ATOMS
    if not np.all(np.isfinite(atoms.positions)):
        return "non_finite", "has NaN or infinite positions"
    if np.asarray(atoms.pbc).any() and not np.all(np.isfinite(atoms.cell.array)):
        return "non_finite", "has a NaN or infinite cell"
    bad = cell_problem(atoms)
    if bad:
        return "bad_cell", f"has a degenerate periodic cell: {bad}"
    if known_numbers is not None:
        unknown = {int(z) for z in atoms.numbers} - {int(z) for z in known_numbers}
        if unknown:
            names = ", ".join(chemical_symbols[z] for z in sorted(unknown))
            return "elements_not_covered", f"has elements the model does not cover: {names}"
    huge = huge_cell_problem(atoms, cutoff, centered=centered)
    if huge:
        return "huge_cell", f"is too large for mace's neighbour list: {huge}"
    if overlap:
        pair = closest_overlap(atoms)
        if pair:
            i, j, d = pair
            msg = (f"has overlapping atoms: atoms {i} and {j} are {d:.3f} Å apart (closer than "
                   f"{OVERLAP_DISTANCE} Å)")
            return "overlapping_atoms", msg
    return None

