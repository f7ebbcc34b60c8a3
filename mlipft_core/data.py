"""Datasets: reading extxyz, detecting label keys, validation findings, summaries and splits.

Split files are written with the canonical keys that mace reads by default
(``REF_energy``, ``REF_forces``, ``REF_stress``), whatever keys the source file used, so
later steps (E0 fits, training, evaluation) need no key options.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from .errors import DataError
from .workspace import (
    Workspace,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
    read_json,
)

CANONICAL = {"energy": "REF_energy", "forces": "REF_forces", "stress": "REF_stress"}
#: ``key`` value meaning "the calculator results that ASE's reader attached".
CALC = "calc:"
_NOT_LABELS = {"positions", "numbers", "momenta", "velocities", "masses", "initial_charges",
               "initial_magmoms", "tags", "charges", "magmoms"}


# ----------------------------------------------------------------------------- reading
def _open_text(path: Path):
    """A text handle on ``path`` (gzip, bz2 and xz files by their suffix)."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        import gzip

        return gzip.open(path, "rt", encoding="utf-8")
    if suffix == ".bz2":
        import bz2

        return bz2.open(path, "rt", encoding="utf-8")
    if suffix in (".xz", ".lzma"):
        import lzma

        return lzma.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def _parse_frame(lines: list[str]) -> Atoms:
    """One configuration (its count line, comment line, atom lines, VEC lines) as ASE reads it."""
    from ase.io.extxyz import read_xyz

    return next(read_xyz(io.StringIO("".join(lines)), 0))


def iter_numbered_frames(source: str | Path | bytes, name: str = "upload"
                         ) -> Iterator[tuple[int, Atoms]]:
    """``(first line, configuration)`` of every configuration of an extxyz file, one at a time.

    Memory stays flat however large the file is: only one configuration's lines are held.
    Each configuration is parsed by ASE's extxyz reader (what ``mace_run_train`` reads with),
    so the result equals ``ase.io.read(path, ":", format="extxyz")``.

    Raises
    ------
    DataError
        With code ``unreadable`` and a message naming the file and the line: missing file, a
        folder, not text, a header without atoms, a truncated configuration, an unknown
        element symbol, a malformed line.
    """
    if isinstance(source, (bytes, bytearray)):
        label = name
        try:
            text = bytes(source).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{label}: not a text file, so not extended XYZ "
                            f"({exc.reason} at byte {exc.start})", code="unreadable") from exc
        yield from _numbered_frames(io.StringIO(text), label)
        return
    path = Path(source).expanduser()
    label = check_file(path)
    try:
        fh = _open_text(path)
    except OSError as exc:
        raise DataError(f"{label}: cannot be opened ({exc.strerror or exc})",
                        code="unreadable") from exc
    with fh:
        yield from _numbered_frames(fh, label)


def check_file(path: str | Path) -> str:
    """The path as shown in messages, or :class:`DataError` (code ``unreadable``) when it is
    missing or a folder."""
    path = Path(path).expanduser()
    label = str(path)
    if path.is_dir():
        raise DataError(f"{label}: is a folder, not a file", code="unreadable")
    if not path.is_file():
        raise DataError(f"{label}: no such file", code="unreadable")
    return label


def iter_frames(source: str | Path | bytes, name: str = "upload") -> Iterator[Atoms]:
    """Every configuration of an extxyz file, read lazily (see :func:`iter_numbered_frames`)."""
    for _, atoms in iter_numbered_frames(source, name):
        yield atoms


def _text_lines(fh, label: str) -> Iterator[str]:
    """Lines of ``fh``; undecodable bytes become a :class:`DataError` naming the file."""
    n = 0
    try:
        for line in fh:
            n += 1
            yield line
    except UnicodeDecodeError as exc:
        raise DataError(f"{label}: not a text file, so not extended XYZ ({exc.reason} "
                        f"on line {n + 1})", code="unreadable") from exc
    except Exception as exc:
        if isinstance(exc, DataError):
            raise
        problem = _read_problem(label, exc)
        if problem is None:
            raise
        raise DataError(problem, code="unreadable") from exc


#: What each compressed format is called in messages, by suffix.
_COMPRESSED = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".lzma": "lzma"}


def _read_problem(label: str, exc: BaseException) -> str | None:
    """The message for an error raised while the lines of ``label`` were read (a corrupt
    or truncated compressed stream, a failing disk), or ``None`` for one of another kind."""
    import gzip
    import lzma
    import zlib

    fmt = _COMPRESSED.get(Path(label).suffix.lower())
    if fmt is not None:
        if isinstance(exc, EOFError):
            why = "it is truncated: it ends before its compressed data does"
        elif isinstance(exc, gzip.BadGzipFile) or (fmt != "gzip" and "format" in str(exc)):
            why = f"its content is not {fmt}-compressed"
        elif isinstance(exc, (zlib.error, lzma.LZMAError)) or (
                isinstance(exc, OSError) and not exc.errno):
            why = "its compressed data is corrupt"
        elif isinstance(exc, OSError):
            why = exc.strerror or "the disk reported an error"
        else:
            return None
        return (f"{label}: not a readable {fmt} file ({why}); compress it again from the "
                "original, or give the uncompressed file")
    if isinstance(exc, OSError):
        return f"{label}: cannot be read ({exc.strerror or 'the disk reported an error'})"
    return None


def _numbered_frames(fh, label: str) -> Iterator[tuple[int, Atoms]]:
    from itertools import islice

    it = _text_lines(fh, label)
    lineno = 0
    index = 0
    pending: str | None = None
    while True:
        if pending is not None:
            line, pending = pending, None
        else:
            line = next(it, None)
        if line is None:
            return
        lineno += 1
        start = lineno
        if not line.strip():
            # ASE (and so mace) stops reading at a blank line where a configuration should
            # start: anything after it would be silently ignored
            for rest in it:
                lineno += 1
                if rest.strip():
                    raise DataError(
                        f"{label}, line {start}: a blank line where configuration #{index} "
                        f"should start, with more text after it (line {lineno}); ASE and mace "
                        "stop reading at such a line and would ignore the rest",
                        code="unreadable")
            return
        try:
            natoms = int(line)
        except ValueError:
            raise DataError(f"{label}, line {start}: expected the number of atoms of "
                            f"configuration #{index}, found {line.strip()[:40]!r}; "
                            "not extended XYZ", code="unreadable") from None
        if natoms < 0:
            raise DataError(f"{label}, line {start}: configuration #{index} declares "
                            f"{natoms} atoms", code="unreadable")
        comment = next(it, None)
        if comment is None:
            raise DataError(f"{label}: configuration #{index} (line {start}) ends after its "
                            f"atom count: it declares {natoms} atoms but has no comment line "
                            "and no atom lines", code="unreadable")
        lineno += 1
        atom_lines = list(islice(it, natoms))
        lineno += len(atom_lines)
        if len(atom_lines) < natoms:
            if not atom_lines:
                raise DataError(f"{label}: configuration #{index} (lines {start}-{start + 1}) "
                                f"is only a header: it declares {natoms} atoms but no atom "
                                "lines follow", code="unreadable")
            raise DataError(f"{label}: configuration #{index} (line {start}) declares "
                            f"{natoms} atoms but the file ends after {len(atom_lines)} atom "
                            "lines", code="unreadable")
        vec: list[str] = []
        while True:
            nxt = next(it, None)
            if nxt is None:
                break
            if nxt.lstrip().startswith("VEC"):
                vec.append(nxt)
                lineno += 1
                continue
            pending = nxt
            break
        try:
            atoms = _parse_frame([line, comment, *atom_lines, *vec])
        except KeyError as exc:
            sym = str(exc.args[0]) if exc.args else "?"
            where = next((start + 2 + k for k, al in enumerate(atom_lines)
                          if sym in (t.capitalize() for t in al.split())), None)
            at = f"line {where}" if where is not None else f"lines {start}-{lineno}"
            raise DataError(f"{label}, {at} (configuration #{index}): unknown element "
                            f"symbol {sym!r}", code="unreadable") from None
        except Exception as exc:
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else \
                "malformed values"
            raise DataError(f"{label}, configuration #{index} (lines {start}-{lineno}): "
                            f"cannot be read as extended XYZ ({detail})",
                            code="unreadable") from exc
        yield start, atoms
        index += 1


def read_frames(source: str | Path | bytes, name: str = "upload") -> list[Atoms]:
    """Read every configuration of an extxyz file (path or raw bytes).

    Raises
    ------
    DataError
        With code ``unreadable`` (missing, a folder, not extxyz, corrupt; the message names
        the file and, where it helps, the line) or ``empty``.
    """
    frames = list(iter_frames(source, name))
    if not frames:
        label = name if isinstance(source, (bytes, bytearray)) else str(
            Path(source).expanduser())
        raise DataError(f"{label}: the file holds no configurations", code="empty")
    return frames


# ----------------------------------------------------------------------------- keys
@dataclass
class LabelKeys:
    """Which info/array keys hold the labels (``calc:energy`` = ASE calculator results)."""

    energy: str | None = None
    forces: str | None = None
    stress: str | None = None
    candidates: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Sizes of a stress label that mace reads: Voigt 6, 9 values or a 3x3 matrix
#: (``mace.tools.torch_tools.voigt_to_matrix``).
STRESS_SIZES = (6, 9)
def _numeric(value: Any) -> bool:
    """Whether a label value is a number or an array of numbers."""
    try:
        return bool(np.issubdtype(np.asarray(value).dtype, np.number))
    except (TypeError, ValueError):
        return False


def _rank(name: str, quantity: str) -> tuple[int, str]:
    """Lower is preferred: exact REF_/DFT_ names, then plain, then others; predictions last."""
    n = name.lower().removeprefix(CALC)
    q = quantity
    if name.startswith(CALC):
        return (2, name)
    order = [f"ref_{q}", f"dft_{q}", q]
    if n in order:
        return (order.index(n), name)
    if n.startswith(("ref_", "dft_")) or n.endswith(("_ref", "_dft")):
        return (3, name)
    if re.search(r"(xtb|gfn|pbe|b3lyp|wb97|ccsd|dft|scan)", n):
        return (4, name)
    if n.startswith(("mace_", "pred", "model_")):
        return (9, name)
    return (5, name)


def key_candidates(frames: Sequence[Atoms]) -> dict[str, list[str]]:
    """All keys that could hold energy, forces or stress, best guess first."""
    found: dict[str, set[str]] = {"energy": set(), "forces": set(), "stress": set()}
    misshapen: set[str] = set()
    for atoms in frames[:200]:
        n = len(atoms)
        for k, v in atoms.info.items():
            kl = k.lower()
            if "energy" in kl and "weight" not in kl and np.ndim(v) == 0:
                try:
                    float(v)
                    found["energy"].add(k)
                except (TypeError, ValueError):
                    pass
            if "stress" in kl and "virial" not in kl and "weight" not in kl and _numeric(v):
                if np.size(v) in STRESS_SIZES:
                    found["stress"].add(k)
                elif k == CANONICAL["stress"]:
                    # a REF_stress of the wrong size (e.g. 4 values) is still the stress
                    # label: mace reads that key by default and would fail on it, so
                    # validation reports its shape (another name is not read, so ignored)
                    found["stress"].add(k)
                    misshapen.add(k)
        for k, v in atoms.arrays.items():
            if k in _NOT_LABELS:
                continue
            if "force" in k.lower() and np.issubdtype(np.asarray(v).dtype, np.number):
                # a per-atom array of the wrong width (e.g. REF_forces:R:2) is still the
                # forces label: validation reports its shape instead of "no forces"
                found["forces"].add(k)
                if np.shape(v) != (n, 3):
                    misshapen.add(k)
        if atoms.calc is not None:
            res = getattr(atoms.calc, "results", {})
            for q in ("energy", "forces", "stress"):
                if q in res:
                    found[q].add(CALC + q)
    return {q: sorted(v, key=lambda name: (name in misshapen, _rank(name, q)))
            for q, v in found.items()}


def present_keys(frames: Sequence[Atoms]) -> list[str]:
    """Every info and per-atom array key of the first configurations (labels or not)."""
    keys: dict[str, None] = {}
    for atoms in frames[:200]:
        for k in atoms.info:
            keys.setdefault(k, None)
        for k in atoms.arrays:
            if k not in ("numbers", "positions"):
                keys.setdefault(k, None)
        if atoms.calc is not None:
            for k in getattr(atoms.calc, "results", {}):
                keys.setdefault(CALC + k, None)
    return list(keys)


def unknown_key_message(frames: Sequence[Atoms], quantity: str, key: str, label: str = "data"
                        ) -> str | None:
    """A message when the named ``key`` for ``quantity`` is in none of ``frames`` (the first
    200 are looked at), else ``None``."""
    head = frames[:200]
    if any(get_label(a, key, quantity) is not None or key in a.info or key in a.arrays
           for a in head):
        return None
    cands = key_candidates(head).get(quantity, [])
    others = [k for k in present_keys(head) if k not in cands]
    where = "no configuration" if len(frames) <= 200 else "none of the first 200 configurations"
    return (f"{label}: {where} has the {quantity} key {key!r}; {quantity} keys in the file: "
            f"{', '.join(cands) or 'none'}; other keys: {', '.join(others) or 'none'}")


def check_named_keys(frames: Sequence[Atoms], label: str = "data", *, energy: str | None = None,
                     forces: str | None = None, stress: str | None = None) -> None:
    """:class:`DataError` (code ``unknown_key``) when a key the user named is not in the file."""
    for q, k in (("energy", energy), ("forces", forces), ("stress", stress)):
        if k is not None:
            msg = unknown_key_message(frames, q, k, label)
            if msg:
                raise DataError(msg, code="unknown_key")


def detect_keys(frames: Sequence[Atoms], energy: str | None = None, forces: str | None = None,
                stress: str | None = None) -> LabelKeys:
    """Best guess of the label keys; explicit arguments override the guess."""
    cands = key_candidates(frames)
    return LabelKeys(
        energy=energy or (cands["energy"][0] if cands["energy"] else None),
        forces=forces or (cands["forces"][0] if cands["forces"] else None),
        stress=stress or (cands["stress"][0] if cands["stress"] else None),
        candidates=cands,
    )


def mace_key_options(keys: LabelKeys) -> dict[str, str]:
    """The ``mace_run_train`` options (``energy_key``, ``forces_key``, ``stress_key``) that
    make mace read the labels ``keys`` names.

    A label ASE's reader attached as a calculator result (``calc:energy``, from a plain
    ``energy=`` in the file) is read by mace under the plain name (``energy``, ``forces``,
    ``stress``: mace asks ASE's calculator for them). A quantity without a label keeps
    mace's default (``REF_energy``, ...), which the file then does not hold either.
    """
    out = {}
    for q in ("energy", "forces", "stress"):
        k = getattr(keys, q)
        out[f"{q}_key"] = (CANONICAL[q] if k is None else
                           k[len(CALC):] if k.startswith(CALC) else k)
    return out


def file_label_keys(path: str | Path) -> LabelKeys:
    """The label keys detected in an extxyz file (:func:`detect_keys` on its first 200
    configurations), remembered per file version in this process.

    Raises
    ------
    DataError
        When the file cannot be read.
    """
    from .workspace import file_version

    try:
        version = file_version(path)
    except OSError:
        check_file(path)  # the typed error for a missing file or a folder
        raise DataError(f"{path}: cannot be read", code="unreadable") from None
    keys = _file_label_keys(*version)
    return LabelKeys(keys.energy, keys.forces, keys.stress,
                     {q: list(v) for q, v in keys.candidates.items()})


@functools.lru_cache(maxsize=64)
def _file_label_keys(path: str, size: int, mtime_ns: int) -> LabelKeys:
    """:func:`file_label_keys` of one file version (cached)."""
    from itertools import islice

    return detect_keys(list(islice(iter_frames(path), 200)))


def get_label(atoms: Atoms, key: str | None, quantity: str) -> Any:
    """Value of a label for one configuration, or ``None`` when absent."""
    if key is None:
        return None
    if key.startswith(CALC):
        res = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
        return res.get(key[len(CALC):])
    if quantity == "forces":
        return atoms.arrays.get(key)
    return atoms.info.get(key)


def stress_3x3(value: Any) -> np.ndarray:
    """A stress label (3x3, 9 values or Voigt 6) as a 3x3 array."""
    from ase.stress import voigt_6_to_full_3x3_stress

    v = np.asarray(value, dtype=float)
    return voigt_6_to_full_3x3_stress(v) if v.size == 6 else v.reshape(3, 3)


def canonical_frames(frames: Sequence[Atoms], keys: LabelKeys) -> list[Atoms]:
    """Copies of ``frames`` with labels under ``REF_energy``/``REF_forces``/``REF_stress``."""
    out = []
    for atoms in frames:
        a = Atoms(atoms.get_chemical_symbols(), positions=atoms.get_positions(),
                  cell=atoms.cell, pbc=atoms.pbc)
        for k, v in atoms.info.items():
            if k not in (keys.energy, keys.stress) and not k.startswith("REF_"):
                a.info[k] = v
        for k, v in atoms.arrays.items():
            if k not in _NOT_LABELS and k != keys.forces and not k.startswith("REF_"):
                a.arrays[k] = v
        for q in ("energy", "forces", "stress"):
            v = get_label(atoms, getattr(keys, q), q)
            if v is None:
                continue
            if q == "energy":
                a.info[CANONICAL[q]] = float(v)
            elif q == "forces":
                a.arrays[CANONICAL[q]] = np.asarray(v, dtype=float)
            else:
                a.info[CANONICAL[q]] = stress_3x3(v)
        out.append(a)
    return out


# ----------------------------------------------------------------------------- geometry
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
        from scipy.spatial import cKDTree

        pairs = cKDTree(pos).query_pairs(distance, output_type="ndarray")
        if not len(pairs):
            return None
        d = np.linalg.norm(pos[pairs[:, 0]] - pos[pairs[:, 1]], axis=1)
        k = int(np.argmin(d))
        return int(pairs[k, 0]), int(pairs[k, 1]), float(d[k])
    if pbc.all():
        from matscipy.neighbours import neighbour_list

        cell = np.asarray(atoms.cell.array, dtype=float)
        vol = abs(float(np.linalg.det(cell)))
        faces = [vol / np.linalg.norm(np.cross(cell[(d + 1) % 3], cell[(d + 2) % 3]))
                 for d in range(3)]
        # a search radius that keeps the bins at most about 20^3 (then keep the close pairs)
        search = max(distance, float(np.prod(faces) / 8000) ** (1 / 3))
        i, j, d = neighbour_list("ijd", positions=pos, cell=cell, pbc=pbc, cutoff=search)
    else:
        from ase.neighborlist import neighbor_list

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
        from ase.data import chemical_symbols

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


# ----------------------------------------------------------------------------- validation
@dataclass
class Finding:
    """One validation finding with a stable ``code``."""

    code: str
    severity: str  # "error" | "warning" | "info"
    message: str
    indices: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Stable finding codes and what they mean.
FINDING_CODES = {
    "unreadable": "the file cannot be read as extended XYZ",
    "empty": "the file holds no configurations",
    "no_atoms": "a configuration with no atoms (an atom count of 0)",
    "missing_energy": "no energy label, or configurations without one",
    "missing_forces": "no forces label, or configurations without one (those train on "
                      "energies only)",
    "forces_shape": "forces whose shape is not (number of atoms, 3)",
    "stress_shape": "a stress label that is not 6 (Voigt), 9 or 3x3 values",
    "non_finite": "NaN or infinite positions, cells, energies, forces or stresses",
    "unknown_key": "a label key named by the user (--energy-key, --forces-key, --stress-key) "
                   "that no configuration has",
    "overlapping_atoms": f"atoms closer than {OVERLAP_DISTANCE} Å (periodic images included)",
    "bad_cell": "a periodic structure with a singular or degenerate cell (zero volume, or a "
                f"cell vector shorter than {MIN_CELL_LENGTH} Å)",
    "huge_cell": f"a cell so large that mace's neighbour list would need more than "
                 f"{MAX_NEIGHBOUR_BINS:.0e} bins (memory) at the model's cutoff",
    "elements_not_covered": "elements the chosen foundation model does not know",
    "isolated_atom": "IsolatedAtom configurations, which override the E0 choice in mace",
    "stress_non_periodic": "a stress label on a structure that is not periodic",
    "duplicates": "structures that appear more than once",
}

#: What validation says when no key holds energies (the data is then unusable).
NO_ENERGY_MESSAGE = ("no energy label found: name the key that holds total energies "
                     "(e.g. REF_energy, energy, DFT_energy)")


def _structure_key(atoms: Atoms) -> bytes:
    return (atoms.numbers.tobytes() + np.round(atoms.positions, 5).tobytes()
            + np.round(np.asarray(atoms.cell), 5).tobytes())


def _finite_array(value: Any) -> bool | None:
    """Whether every entry of a label is finite; ``None`` when it is not numeric."""
    try:
        return bool(np.all(np.isfinite(np.asarray(value, dtype=float))))
    except (TypeError, ValueError):
        return None


def configuration_errors(atoms: Atoms, keys: LabelKeys, *, cutoff: float | None = None,
                         centered: bool = False, known_numbers: Iterable[int] | None = None,
                         geometry: bool = True) -> list[tuple[str, str]]:
    """Everything that makes one configuration unusable for training or scoring.

    The one check behind :func:`validate` (its errors, which training refuses through
    :func:`first_error`) and :func:`mlipft_core.evaluate.scan` (evaluation), so that what
    validation calls an error is refused everywhere.

    Parameters
    ----------
    atoms
        The configuration.
    keys
        Its label keys; a label whose key is ``None`` is not checked.
    cutoff
        The model's cutoff (Å) for the neighbour-list estimate (:data:`NOMINAL_CUTOFF`
        when ``None``).
    centered
        Whether a non-periodic structure is centred on the origin before its neighbour
        list is built (evaluation does that, ``mace_run_train`` does not).
    known_numbers
        Atomic numbers the model covers (``None``: not checked).
    geometry
        Check positions and cell too (``False``: the labels only).

    Returns
    -------
    list of (str, str)
        ``(finding code, what is wrong)``, the second phrased to follow "configuration #i"
        (see :func:`configuration_text`), e.g. ``("overlapping_atoms", "has overlapping
        atoms: ...")`` or ``("forces_shape", ": its forces 'F' have shape (2, 2) for 2 atoms;
        expected (2, 3)")``. Empty when the configuration is usable.
    """
    n = len(atoms)
    if n == 0:
        return [("no_atoms", NO_ATOMS)]
    out: list[tuple[str, str]] = []
    if keys.energy is not None:
        e = get_label(atoms, keys.energy, "energy")
        if e is None:
            out.append(("missing_energy", f"has no '{keys.energy}' value"))
        else:
            try:
                ev = float(e)
            except (TypeError, ValueError):
                out.append(("non_finite", f": its energy label '{keys.energy}' is not a "
                                          f"number ({str(e)[:40]!r})"))
            else:
                if not np.isfinite(ev):
                    out.append(("non_finite", f": its energy label '{keys.energy}' is {ev}"))
    if keys.forces is not None:
        f = _forces_value(atoms, keys.forces)
        if f is not None:
            shape = np.shape(f)
            if shape != (n, 3):
                out.append(("forces_shape", f": its forces '{keys.forces}' have shape {shape} "
                                            f"for {n} atoms; expected ({n}, 3)"))
            elif not _finite_array(f):
                out.append(("non_finite", f": its forces '{keys.forces}' hold NaN, infinite "
                                          "or non-numeric values"))
    if keys.stress is not None:
        s = get_label(atoms, keys.stress, "stress")
        if s is not None:
            if np.size(s) not in STRESS_SIZES:
                out.append(("stress_shape", f": its stress '{keys.stress}' has {np.size(s)} "
                                            "values; mace reads 6 (Voigt), 9 or 3x3 values"))
            elif not _finite_array(s):
                out.append(("non_finite", f": its stress '{keys.stress}' holds NaN, infinite "
                                          "or non-numeric values"))
    if geometry:
        if not np.all(np.isfinite(atoms.positions)):
            out.append(("non_finite", "has NaN or infinite positions"))
        elif not np.all(np.isfinite(atoms.cell.array)):
            out.append(("non_finite", "has a NaN or infinite cell"))
        else:
            problem = structure_problem(atoms, cutoff=cutoff, centered=centered,
                                        known_numbers=known_numbers)
            if problem:
                out.append(problem)
    return out


#: How :func:`validate` words each error found configuration by configuration:
#: ``(what the configurations have, a hint)``.
_ERROR_WORDING = {
    "no_atoms": ("have no atoms", "mace can neither train nor evaluate on an empty structure: "
                                  "remove them"),
    "forces_shape": ("have forces of the wrong shape", ""),
    "stress_shape": ("have a stress of the wrong shape", ""),
    "non_finite": ("contain NaN or infinite values", ""),
    "bad_cell": ("have a singular or degenerate periodic cell", ""),
    "huge_cell": ("are too large for mace's neighbour list", ""),
    "overlapping_atoms": (f"have atoms closer than {OVERLAP_DISTANCE} Å", ""),
}


def configuration_text(index: int, what: str, word: str = "configuration #") -> str:
    """``"configuration #3 has ..."`` or ``"configuration #3: its ..."`` for a problem
    ``what`` of :func:`configuration_errors`."""
    return f"{word}{index}{'' if what.startswith(':') else ' '}{what}"


def _configurations(count: int, wording: str) -> str:
    """``"1 configuration has ..."`` / ``"3 configurations have ..."``."""
    if count != 1:
        return f"{count} configurations {wording}"
    verb, _, rest = wording.partition(" ")
    return f"1 configuration {({'have': 'has', 'are': 'is'}).get(verb, verb + 's')} {rest}"


def validate(frames: Sequence[Atoms], keys: LabelKeys,
             model_elements: Iterable[str] | None = None, *,
             cutoff: float | None = None) -> list[Finding]:
    """All findings for a dataset (an empty list means it is fine to use).

    Errors found configuration by configuration come from :func:`configuration_errors`.
    ``cutoff`` (Å, the model's) sizes the neighbour-list estimate of ``huge_cell``;
    :data:`NOMINAL_CUTOFF` when not given.
    """
    findings: list[Finding] = []
    n = len(frames)
    bad: dict[str, list[int]] = {}
    first: dict[str, str] = {}
    for i, a in enumerate(frames):
        seen: set[str] = set()
        for code, what in configuration_errors(a, keys, cutoff=cutoff):
            if code not in seen:
                seen.add(code)
                bad.setdefault(code, []).append(i)
                first.setdefault(code, what)
    if "no_atoms" in bad:
        idx = bad["no_atoms"]
        wording, hint = _ERROR_WORDING["no_atoms"]
        findings.append(Finding("no_atoms", "error", f"{_configurations(len(idx), wording)} "
                                f"(first: #{idx[0]}); {hint}", idx))
    if keys.energy is None:
        findings.append(Finding("missing_energy", "error", NO_ENERGY_MESSAGE))
    elif "missing_energy" in bad:
        missing = bad["missing_energy"]
        findings.append(Finding("missing_energy", "error",
                                f"{len(missing)} of {n} configurations have no "
                                f"'{keys.energy}' value (first: #{missing[0]})", missing))
    if keys.forces is None and not all(_isolated(a) for a in frames if len(a)):
        findings.append(Finding("missing_forces", "warning",
                                "no forces label found: fitting and evaluation will use "
                                "energies only"))
    elif keys.forces is not None:
        absent = [i for i, a in enumerate(frames)
                  if len(a) and not _isolated(a) and _forces_value(a, keys.forces) is None]
        if absent:
            findings.append(Finding("missing_forces", "warning",
                                    f"{len(absent)} of {n} configurations have no "
                                    f"'{keys.forces}' value (first: #{absent[0]}); they train "
                                    "on energies only", absent))
    for code in ("forces_shape", "stress_shape", "non_finite", "bad_cell", "huge_cell",
                 "overlapping_atoms"):
        if code in bad:
            idx = bad[code]
            wording, _ = _ERROR_WORDING[code]
            findings.append(Finding(code, "error", f"{_configurations(len(idx), wording)} "
                                    f"(first: {configuration_text(idx[0], first[code], '#')})",
                                    idx))
    if model_elements is not None:
        known = set(model_elements)
        present = sorted({s for a in frames for s in a.get_chemical_symbols()})
        missing_el = [e for e in present if e not in known]
        if missing_el:
            idx = [i for i, a in enumerate(frames) if set(a.get_chemical_symbols()) - known]
            findings.append(Finding("elements_not_covered", "error",
                                    f"the foundation model does not cover {', '.join(missing_el)}"
                                    f" ({len(idx)} configurations)", idx))
    iso = [i for i, a in enumerate(frames) if a.info.get("config_type") == "IsolatedAtom"]
    if iso:
        findings.append(Finding("isolated_atom", "warning",
                                f"{len(iso)} IsolatedAtom configurations: mace would take their "
                                "energies as E0s and silently override the E0 choice; they are "
                                "left out of splits", iso))
    if keys.stress is not None:
        np_idx = [i for i, a in enumerate(frames)
                  if get_label(a, keys.stress, "stress") is not None and not a.pbc.all()]
        if np_idx:
            findings.append(Finding("stress_non_periodic", "warning",
                                    f"{len(np_idx)} non-periodic structures carry a stress "
                                    f"label (first: #{np_idx[0]}); stress is meaningless "
                                    "without a periodic cell", np_idx))
    seen_structures: dict[bytes, int] = {}
    dups = []
    for i, a in enumerate(frames):
        k = _structure_key(a)
        if k in seen_structures:
            dups.append(i)
        else:
            seen_structures[k] = i
    if dups:
        findings.append(Finding("duplicates", "warning",
                                f"{len(dups)} structures duplicate an earlier one (first: "
                                f"#{dups[0]} = #{seen_structures[_structure_key(frames[dups[0]])]}"
                                "); duplicates can leak between train and test", dups))
    return findings


def first_error(findings: Sequence[Finding], allow: Iterable[str] = ()) -> Finding | None:
    """The first error among ``findings`` (of :func:`validate`), or ``None``.

    Parameters
    ----------
    findings
        Validation findings of one file.
    allow
        Error codes that do not count (e.g. ``missing_energy`` for a replay file that is
        labelled by the foundation model).

    Returns
    -------
    Finding or None
        What makes the file unusable: training and evaluation refuse it with its message.
    """
    allowed = set(allow)
    return next((f for f in findings if f.severity == "error" and f.code not in allowed), None)


def _isolated(atoms: Atoms) -> bool:
    return len(atoms) == 1 or atoms.info.get("config_type") == "IsolatedAtom"


def _forces_value(atoms: Atoms, key: str) -> Any:
    """The forces label, also when it sits where a per-atom array cannot (``atoms.info``)."""
    f = get_label(atoms, key, "forces")
    if f is None and not key.startswith(CALC):
        f = atoms.info.get(key)
    return f


def has_errors(findings: Sequence[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


# ----------------------------------------------------------------------------- summary
@dataclass
class DatasetSummary:
    """Counts, composition, config types and label distributions of a dataset."""

    n_configs: int
    n_atoms_total: int
    n_atoms_min: int
    n_atoms_max: int
    n_periodic: int
    elements: list[str]
    element_atoms: dict[str, int]
    element_configs: dict[str, int]
    config_types: dict[str, int]
    energy_per_atom: list[float]
    force_magnitudes: list[float]

    def to_dict(self, with_arrays: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_arrays:
            d.pop("energy_per_atom")
            d.pop("force_magnitudes")
        return d


def summarize(frames: Sequence[Atoms], keys: LabelKeys) -> DatasetSummary:
    from collections import Counter

    atoms_count: Counter = Counter()
    config_count: Counter = Counter()
    ctypes: Counter = Counter()
    epa, fmag = [], []
    for a in frames:
        syms = a.get_chemical_symbols()
        atoms_count.update(syms)
        config_count.update(set(syms))
        ctypes[str(a.info.get("config_type", "Default"))] += 1
        e = get_label(a, keys.energy, "energy")
        if e is not None and len(a):
            try:
                epa.append(float(e) / len(a))
            except (TypeError, ValueError):
                pass  # validation reports it
        f = get_label(a, keys.forces, "forces")
        if f is not None and np.shape(f) == (len(a), 3):
            fmag.extend(np.linalg.norm(np.asarray(f, dtype=float), axis=1).tolist())
    sizes = [len(a) for a in frames] or [0]
    elements = sorted(atoms_count, key=lambda s: atomic_numbers[s])
    return DatasetSummary(
        n_configs=len(frames), n_atoms_total=int(sum(sizes)), n_atoms_min=int(min(sizes)),
        n_atoms_max=int(max(sizes)), n_periodic=int(sum(bool(a.pbc.all()) for a in frames)),
        elements=elements, element_atoms={e: atoms_count[e] for e in elements},
        element_configs={e: config_count[e] for e in elements}, config_types=dict(ctypes),
        energy_per_atom=epa, force_magnitudes=fmag,
    )


# ----------------------------------------------------------------------------- datasets
@dataclass
class Dataset:
    """A dataset read from a file, with its label keys."""

    path: Path
    frames: list[Atoms]
    keys: LabelKeys

    @property
    def n(self) -> int:
        return len(self.frames)


def load_dataset(path: str | Path, energy_key: str | None = None,
                 forces_key: str | None = None, stress_key: str | None = None) -> Dataset:
    """Read a file and detect (or take) its label keys."""
    frames = read_frames(path)
    check_named_keys(frames, str(path), energy=energy_key, forces=forces_key, stress=stress_key)
    keys = detect_keys(frames, energy_key, forces_key, stress_key)
    return Dataset(Path(path), frames, keys)


# ----------------------------------------------------------------------------- splits
@dataclass
class Split:
    """A saved train / valid / test split in the workspace (canonical REF_* keys)."""

    id: str
    folder: Path
    source: str
    seed: int
    fractions: dict[str, float]
    counts: dict[str, int]
    keys: dict[str, str | None]
    excluded: dict[str, list[int]] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)  # files kept outside the folder

    def file(self, part: str) -> Path:
        if part in self.paths:
            return Path(self.paths[part])
        return self.folder / f"{part}.xyz"

    @property
    def files(self) -> dict[str, str]:
        return {p: str(self.file(p)) for p in self.counts if self.counts[p] > 0}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["folder"] = str(self.folder)
        d["files"] = self.files
        return d


def write_extxyz(path: Path, frames: Sequence[Atoms]) -> None:
    from ase.io import write

    buf = io.StringIO()
    write(buf, list(frames), format="extxyz")
    atomic_write_text(path, buf.getvalue())


def split_indices(n: int, fractions: dict[str, float], seed: int) -> dict[str, list[int]]:
    """Seeded random partition of ``range(n)`` (same seed, same split)."""
    total = sum(fractions.values())
    if total <= 0 or any(v < 0 for v in fractions.values()):
        raise DataError("split fractions must be non-negative and sum to more than 0",
                        code="bad_split")
    perm = np.random.default_rng(seed).permutation(n)
    out, start, names = {}, 0, list(fractions)
    for i, name in enumerate(names):
        size = n - start if i == len(names) - 1 else int(round(fractions[name] / total * n))
        out[name] = sorted(int(j) for j in perm[start:start + size])
        start += size
    return out


def make_split(dataset: Dataset, workspace: Workspace, fractions: dict[str, float] | None = None,
               seed: int = 0) -> Split:
    """Split a dataset (seeded) and save it in the workspace; an identical request reuses it.

    Configurations that fail validation (errors) and IsolatedAtom configurations are left out
    and listed in ``excluded``. Raises :class:`DataError` when nothing usable remains.
    """
    fractions = fractions or {"train": 0.8, "valid": 0.1, "test": 0.1}
    if fractions.get("train", 0) <= 0:
        raise DataError("the training fraction must be above 0", code="bad_split")
    findings = validate(dataset.frames, dataset.keys)
    if dataset.keys.energy is None:
        raise DataError("cannot split: no energy label (see validation)", code="missing_energy")
    excluded = {f.code: f.indices for f in findings
                if f.indices and (f.severity == "error" or f.code in ("isolated_atom", "duplicates"))}
    drop = {i for idx in excluded.values() for i in idx}
    keep = [i for i in range(dataset.n) if i not in drop]
    if len(keep) < 2:
        raise DataError(f"cannot split: only {len(keep)} usable configurations", code="empty")
    src_hash = file_sha256(dataset.path)
    keys = {q: getattr(dataset.keys, q) for q in ("energy", "forces", "stress")}
    import hashlib
    import json

    sid = hashlib.sha256(json.dumps([src_hash, keys, fractions, seed], sort_keys=True)
                         .encode()).hexdigest()[:12]
    folder = workspace.splits / sid
    meta_path = folder / "split.json"
    meta = read_json(meta_path)
    if meta is not None:
        return _split_from_meta(meta, folder)
    parts = split_indices(len(keep), fractions, seed)
    canon = canonical_frames([dataset.frames[i] for i in keep], dataset.keys)
    counts = {}
    for name, idx in parts.items():
        if idx:
            write_extxyz(folder / f"{name}.xyz", [canon[i] for i in idx])
        counts[name] = len(idx)
    meta = {"id": sid, "source": str(dataset.path), "source_sha256": src_hash, "seed": seed,
            "fractions": fractions, "counts": counts, "keys": keys, "excluded": excluded,
            "indices": {name: [keep[i] for i in idx] for name, idx in parts.items()}}
    atomic_write_json(meta_path, meta)  # written last: a split without it does not exist
    return _split_from_meta(meta, folder)


def _split_from_meta(meta: dict[str, Any], folder: Path) -> Split:
    return Split(id=meta["id"], folder=folder, source=meta["source"], seed=meta["seed"],
                 fractions=meta["fractions"], counts=meta["counts"], keys=meta["keys"],
                 excluded=meta.get("excluded", {}), paths=meta.get("files", {}))


def load_split(workspace: Workspace, split_id: str) -> Split:
    meta = read_json(workspace.splits / split_id / "split.json")
    if meta is None:
        raise DataError(f"no saved split {split_id!r} in {workspace.splits}", code="no_split")
    return _split_from_meta(meta, workspace.splits / split_id)


def list_splits(workspace: Workspace) -> list[Split]:
    out = []
    for meta_path in sorted(workspace.splits.glob("*/split.json")):
        meta = read_json(meta_path)
        if meta:
            out.append(_split_from_meta(meta, meta_path.parent))
    return out


def register_files_as_split(workspace: Workspace, files: dict[str, str | Path],
                            name: str) -> Split:
    """Record already split files (e.g. the bundled SN2 target) as a split, without copying."""
    import hashlib
    import json

    hashes = {p: file_sha256(Path(f)) for p, f in files.items()}
    sid = name + "-" + hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:8]
    folder = workspace.splits / sid
    meta = read_json(folder / "split.json")
    if meta is None:
        counts = {p: len(read_frames(f)) for p, f in files.items()}
        meta = {"id": sid, "source": name, "seed": 0, "fractions": {}, "counts": counts,
                "keys": dict(CANONICAL), "excluded": {},
                "files": {p: str(Path(f).resolve()) for p, f in files.items()}}
        atomic_write_json(folder / "split.json", meta)
    return _split_from_meta(meta, folder)
