"""Reading and writing extended XYZ files, one configuration at a time.

Every configuration is parsed by ASE's extxyz reader (what ``mace_run_train`` reads with),
and everything that keeps a file from being read becomes a :class:`DataError` with code
``unreadable`` whose message names the file and, where it helps, the line.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import IO

from ase import Atoms

from .errors import DataError
from .workspace import atomic_write_text

#: What each compressed format is called in messages, by suffix.
_COMPRESSED = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".lzma": "lzma"}


def _open_text(path: Path) -> IO[str]:
    """A text handle on ``path`` (gzip, bz2 and xz files by their suffix)."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    if suffix == ".bz2":
        return bz2.open(path, "rt", encoding="utf-8")
    if suffix in (".xz", ".lzma"):
        return lzma.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _parse_frame(lines: list[str]) -> Atoms:
    """One configuration (its count line, comment line, atom lines, VEC lines) as ASE reads it."""
    from ase.io.extxyz import read_xyz  # ase.io: slow to import (it pulls in scipy)

    return next(read_xyz(io.StringIO("".join(lines)), 0))


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


def iter_frames(source: str | Path | bytes, name: str = "upload") -> Iterator[Atoms]:
    """Every configuration of an extxyz file, read lazily (see :func:`iter_numbered_frames`)."""
    for _, atoms in iter_numbered_frames(source, name):
        yield atoms


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


def write_extxyz(path: Path, frames: Sequence[Atoms]) -> None:
    """Write ``frames`` to ``path`` as extended XYZ, atomically."""
    from ase.io import write  # slow to import (it pulls in scipy)

    buf = io.StringIO()
    write(buf, list(frames), format="extxyz")
    atomic_write_text(path, buf.getvalue())


# ----------------------------------------------------------------------------- lines
def _text_lines(fh: IO[str], label: str) -> Iterator[str]:
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


def _read_problem(label: str, exc: BaseException) -> str | None:
    """The message for an error raised while the lines of ``label`` were read (a corrupt
    or truncated compressed stream, a failing disk), or ``None`` for one of another kind."""
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


class _Lines:
    """Lines with their numbers (1-based, of the last line taken) and one line of look-ahead
    that can be put back."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._it = lines
        self._ahead: str | None = None
        self.number = 0

    def next(self) -> str | None:
        """The next line, or ``None`` at the end."""
        if self._ahead is not None:
            line, self._ahead = self._ahead, None
        else:
            line = next(self._it, None)
        if line is not None:
            self.number += 1
        return line

    def take(self, n: int) -> list[str]:
        """The next ``n`` lines (fewer at the end)."""
        out: list[str] = []
        if self._ahead is not None and n > 0:
            out.append(self._ahead)
            self._ahead = None
        out.extend(islice(self._it, n - len(out)))
        self.number += len(out)
        return out

    def put_back(self, line: str) -> None:
        """Give ``line`` (the last one taken) back, to be taken again."""
        self._ahead = line
        self.number -= 1


# ----------------------------------------------------------------------------- configurations
def _numbered_frames(fh: IO[str], label: str) -> Iterator[tuple[int, Atoms]]:
    """``(first line, configuration)`` of every configuration on the text handle ``fh``."""
    lines = _Lines(_text_lines(fh, label))
    index = 0
    while True:
        line = lines.next()
        if line is None:
            return
        start = lines.number
        if not line.strip():
            _check_nothing_follows(lines, label, start, index)
            return
        natoms = _atom_count(line, label, start, index)
        comment, atom_lines = _header_and_atoms(lines, label, start, index, natoms)
        vec = _vec_lines(lines)
        yield start, _parse_numbered([line, comment, *atom_lines, *vec], atom_lines, label,
                                     start, lines.number, index)
        index += 1


def _check_nothing_follows(lines: _Lines, label: str, start: int, index: int) -> None:
    """:class:`DataError` unless only blank lines follow the blank line ``start``."""
    # ASE (and so mace) stops reading at a blank line where a configuration should start:
    # anything after it would be silently ignored
    while (rest := lines.next()) is not None:
        if rest.strip():
            raise DataError(
                f"{label}, line {start}: a blank line where configuration #{index} "
                f"should start, with more text after it (line {lines.number}); ASE and mace "
                "stop reading at such a line and would ignore the rest",
                code="unreadable")


def _atom_count(line: str, label: str, start: int, index: int) -> int:
    """The atom count on the first line of configuration ``index``."""
    try:
        natoms = int(line)
    except ValueError:
        raise DataError(f"{label}, line {start}: expected the number of atoms of "
                        f"configuration #{index}, found {line.strip()[:40]!r}; "
                        "not extended XYZ", code="unreadable") from None
    if natoms < 0:
        raise DataError(f"{label}, line {start}: configuration #{index} declares "
                        f"{natoms} atoms", code="unreadable")
    return natoms


def _header_and_atoms(lines: _Lines, label: str, start: int, index: int, natoms: int
                      ) -> tuple[str, list[str]]:
    """The comment line and the ``natoms`` atom lines of configuration ``index``."""
    comment = lines.next()
    if comment is None:
        raise DataError(f"{label}: configuration #{index} (line {start}) ends after its "
                        f"atom count: it declares {natoms} atoms but has no comment line "
                        "and no atom lines", code="unreadable")
    atom_lines = lines.take(natoms)
    if len(atom_lines) < natoms:
        if not atom_lines:
            raise DataError(f"{label}: configuration #{index} (lines {start}-{start + 1}) "
                            f"is only a header: it declares {natoms} atoms but no atom "
                            "lines follow", code="unreadable")
        raise DataError(f"{label}: configuration #{index} (line {start}) declares "
                        f"{natoms} atoms but the file ends after {len(atom_lines)} atom "
                        "lines", code="unreadable")
    return comment, atom_lines


def _vec_lines(lines: _Lines) -> list[str]:
    """The ``VEC`` (cell vector) lines that follow a configuration's atoms."""
    vec: list[str] = []
    while (nxt := lines.next()) is not None:
        if not nxt.lstrip().startswith("VEC"):
            lines.put_back(nxt)
            break
        vec.append(nxt)
    return vec


def _parse_numbered(block: list[str], atom_lines: list[str], label: str, start: int,
                    end: int, index: int) -> Atoms:
    """Configuration ``index`` (lines ``start`` to ``end``) as ASE reads it, or a
    :class:`DataError` naming the line of an unknown element or what ASE could not read."""
    try:
        return _parse_frame(block)
    except KeyError as exc:
        sym = str(exc.args[0]) if exc.args else "?"
        where = next((start + 2 + k for k, al in enumerate(atom_lines)
                      if sym in (t.capitalize() for t in al.split())), None)
        at = f"line {where}" if where is not None else f"lines {start}-{end}"
        raise DataError(f"{label}, {at} (configuration #{index}): unknown element "
                        f"symbol {sym!r}", code="unreadable") from None
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else \
            "malformed values"
        raise DataError(f"{label}, configuration #{index} (lines {start}-{end}): "
                        f"cannot be read as extended XYZ ({detail})",
                        code="unreadable") from exc
