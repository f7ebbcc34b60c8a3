"""mace's own replay sets (the pretraining structures of the official foundation models), and
which one each official model replays.

mace-torch 0.3.16 knows four sets (``--pt_train_file mp | omat | matpes_pbe | matpes_r2scan``,
``mace.tools.multihead_tools.assemble_replay_data``): it downloads one into its cache
(``get_cache_dir()``, the folder models go to) under the URL's base name with every character
but letters, digits and ``_`` removed, and subselects it itself (``num_samples_pt``,
``subselect_pt``, ``filter_type_pt``). A run of an official model replays its set through that
path: the workbench passes the set's name, and reads the count mace used back from its log.

:func:`fetch` puts a set into mace's cache once (``mlipft replay fetch MODEL``), the same file
mace would download; offline, :class:`ReplayNotAvailableError` names the file and where a copy
goes. Nothing downloads when a run is launched: a run whose set is not cached is refused with
that message.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import MlipftError
from .registry import get_spec, mace_cache_dir


class ReplayNotAvailableError(MlipftError):
    """An official replay set that is not in mace's cache and could not be downloaded."""

    code = "replay_not_available"


@dataclass(frozen=True)
class ReplaySet:
    """One of mace's replay sets."""

    name: str            # what ``--pt_train_file`` takes
    title: str
    url: str             # mace's download address (``assemble_replay_data``)
    level_of_theory: str

    @property
    def cache_name(self) -> str:
        """The file name in mace's cache: the URL's base name, letters, digits and ``_``
        only (mace's own rule)."""
        return "".join(c for c in os.path.basename(self.url) if c.isalnum() or c in "_")

    def path(self) -> Path:
        """Where mace reads (and downloads) the set."""
        return mace_cache_dir() / self.cache_name

    def is_cached(self) -> bool:
        return self.path().is_file()


_BASE = "https://github.com/ACEsuit/mace-foundations/releases/download"
#: mace's replay sets, by the name ``--pt_train_file`` takes.
REPLAY_SETS: dict[str, ReplaySet] = {s.name: s for s in [
    ReplaySet("mp", "Materials Project replay set (MPtrj)",
              f"{_BASE}/mace_mp_0b/mp_traj_combined.xyz", "PBE/PBE+U"),
    ReplaySet("omat", "OMat24 replay set", f"{_BASE}/mace_omat_0/mp_traj_combined_omat.xyz",
              "PBE/PBE+U (OMat24 settings)"),
    ReplaySet("matpes_pbe", "MatPES PBE replay set",
              f"{_BASE}/mace_matpes_0/matpes-pbe-replay-data.xyz", "PBE (MatPES)"),
    ReplaySet("matpes_r2scan", "MatPES r2SCAN replay set",
              f"{_BASE}/mace_matpes_0/matpes-r2scan-replay-data.extxyz", "r2SCAN (MatPES)"),
]}

#: The set a multi-head model replays, by the foundation head fine-tuned from.
HEAD_SETS = {"omat_pbe": "omat", "mp_pbe_refit_add": "mp", "matpes_r2scan": "matpes_r2scan"}
#: Registry names by prefix, and the set mace offers for them (the longest prefix wins).
MODEL_SETS = {"mace-mp-0": "mp", "mace-mpa-0": "mp", "mace-omat-0": "omat",
              "mace-matpes-pbe-0": "matpes_pbe", "mace-matpes-r2scan-0": "matpes_r2scan",
              "mace-mh-": "omat"}
#: Official models with no replay set of mace's: their offered path is pseudolabelled replay
#: on structures the user gives.
NO_SET = ("mace-off", "mace-omol")


def replay_set_for(model: str | None, head: str | None = None) -> ReplaySet | None:
    """The replay set mace offers for an official model (and, for a multi-head model, the
    foundation head fine-tuned from: ``omat`` for ``omat_pbe`` or no head named, ``mp`` for
    ``mp_pbe_refit_add``; a head without a set of its own has none), else ``None`` (demo and
    local models, MACE-OFF, MACE-OMOL)."""
    if not model:
        return None
    spec = get_spec(str(model))
    if spec is None or spec.source != "official" or spec.name.startswith(NO_SET):
        return None
    name = spec.name
    if name.startswith("mace-mh-") and head:  # no head chosen: omat_pbe's set
        found = HEAD_SETS.get(head)
        return REPLAY_SETS[found] if found else None
    prefix = max((p for p in MODEL_SETS if name.startswith(p)), key=len, default=None)
    return REPLAY_SETS[MODEL_SETS[prefix]] if prefix else None


def official_set_of(path: str | Path | None) -> ReplaySet | None:
    """The replay set whose cache file ``path`` is, else ``None``."""
    if not path:
        return None
    try:
        resolved = Path(path).resolve()
    except OSError:
        return None
    return next((s for s in REPLAY_SETS.values() if s.path().resolve() == resolved), None)


def missing_message(rs: ReplaySet, model: str | None = None, why: str = "") -> str:
    """What to do when a set is not in mace's cache."""
    fetch_cmd = f"mlipft replay fetch {model}" if model else f"mlipft replay fetch {rs.name}"
    return (f"the {rs.title} is not in mace's cache{(' (' + why + ')') if why else ''}: run "
            f"`{fetch_cmd}` with internet, or put a copy of {os.path.basename(rs.url)} "
            f"({rs.url}) at {rs.path()}")


def require_cached(rs: ReplaySet, model: str | None = None) -> Path:
    """The set's cache file; :class:`ReplayNotAvailableError` when it is not there."""
    if not rs.is_cached():
        raise ReplayNotAvailableError(missing_message(rs, model))
    return rs.path()


def fetch(name_or_model: str, head: str | None = None, *, timeout: float = 60.0) -> Path:
    """Put a replay set (by its name, or the official model that replays it) into mace's
    cache, the file mace itself would download; the path. Nothing downloads when it is
    there.

    Raises
    ------
    ReplayNotAvailableError
        A model without a set, or a download that failed (offline: the message names the
        file and where a copy goes).
    """
    rs = REPLAY_SETS.get(name_or_model) or replay_set_for(name_or_model, head)
    if rs is None:
        raise ReplayNotAvailableError(
            f"{name_or_model!r} has no replay set of mace's (sets: {', '.join(REPLAY_SETS)}; "
            "MACE-OFF, MACE-OMOL, demo and local models have none): give a replay file of "
            "your own, or use pseudolabelled replay on structures of your own")
    target = rs.path()
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    model = None if name_or_model in REPLAY_SETS else name_or_model
    why = ""
    try:
        with urllib.request.urlopen(rs.url, timeout=timeout) as resp, open(part, "wb") as out:
            if "text/html" in (resp.headers.get("Content-Type") or ""):
                why = "the download address answered with a web page, not the data"
            else:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        why = f"download failed: {getattr(exc, 'reason', None) or exc}"
    if why:
        part.unlink(missing_ok=True)
        raise ReplayNotAvailableError(missing_message(rs, model, why))
    os.replace(part, target)
    return target


#: Structures of a replay set held out as its forgetting set (the pretraining test of Compare,
#: the board and the Study for an official model).
FORGETTING_SIZE = 100


def forgetting_set(rs: ReplaySet, *, n: int = FORGETTING_SIZE, seed: int = 0,
                   workspace=None) -> Path:
    """A held-out pretraining test set drawn from a cached replay set: ``n`` structures chosen
    at random (reservoir sampling, one pass over the file, ``seed``), written once into the
    workspace's cache and reused.

    mace draws a run's replay subset from the same set, so a structure can be in both; the
    study's analysis leaves such structures out (:func:`disjoint_from`) and says how many.

    Raises
    ------
    ReplayNotAvailableError
        When the set is not cached.
    """
    import numpy as np
    from ase.io import iread, write

    from .workspace import Workspace

    source = require_cached(rs)
    ws = workspace or Workspace()
    out = ws.cache / "forgetting" / f"{rs.name}-{source.stat().st_size}-{n}-{seed}.xyz"
    if out.is_file():
        return out
    rng = np.random.default_rng(seed)
    kept: list = []
    for i, atoms in enumerate(iread(str(source), index=":", format="extxyz")):
        if len(kept) < n:
            kept.append(atoms)
        else:
            j = int(rng.integers(0, i + 1))
            if j < n:
                kept[j] = atoms
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    write(str(part), kept, format="extxyz")
    os.replace(part, out)
    return out


def _key(atoms) -> tuple:
    """A structure's identity: its elements and positions to 1e-6 Å."""
    return (tuple(int(z) for z in atoms.numbers),
            tuple(round(float(x), 6) for x in atoms.positions.ravel()))


def disjoint_from(held_out: str | Path, replayed: list[Path], workspace=None
                  ) -> tuple[str, int]:
    """``held_out`` without the structures that a run replayed (``replayed``: the replay
    subsets of the runs, e.g. mace's ``mp_finetuning-*.xyz`` in their folders), and how many
    were left out; ``held_out`` itself when none was."""
    import hashlib

    from ase.io import iread, write

    from .workspace import Workspace

    seen = {_key(a) for f in replayed for a in iread(str(f), index=":", format="extxyz")}
    frames = list(iread(str(held_out), index=":", format="extxyz"))
    keep = [a for a in frames if _key(a) not in seen]
    if len(keep) == len(frames):
        return str(held_out), 0
    ws = workspace or Workspace()
    tag = hashlib.sha256("|".join([str(held_out), *sorted(map(str, replayed))]).encode()
                         ).hexdigest()[:16]
    out = ws.cache / "forgetting" / f"disjoint-{tag}.xyz"
    out.parent.mkdir(parents=True, exist_ok=True)
    write(str(out), keep, format="extxyz")
    return str(out), len(frames) - len(keep)


def perturbed_structures(train_file: str | Path, *, n: int = 200, rattle: float = 0.05,
                         seed: int = 0, workspace=None) -> Path:
    """Replay structures for a model without a replay set of mace's: ``n`` copies of the
    target's training structures (isolated atoms aside, taken in turn), every position moved
    by a normal displacement of ``rattle`` Å, without labels, for pseudolabelled replay to
    label with the foundation model itself. Written once into the workspace's cache.

    Raises
    ------
    ReplayNotAvailableError
        Bad sizes, or a training file without structures.
    """
    import hashlib

    import numpy as np
    from ase import Atoms
    from ase.io import write

    from .data import is_isolated_atom, read_frames
    from .workspace import Workspace

    if n < 1 or not 0.0 < rattle <= 0.5:
        raise ReplayNotAvailableError("perturbed replay structures need at least 1 structure "
                                      "and a displacement above 0 and at most 0.5 Å")
    frames = [a for a in read_frames(train_file) if not is_isolated_atom(a)]
    if not frames:
        raise ReplayNotAvailableError(f"{Path(train_file).name} holds no structures to perturb")
    ws = workspace or Workspace()
    digest = hashlib.sha256(Path(train_file).read_bytes()).hexdigest()[:16]
    out = ws.cache / "replay" / f"perturbed-{digest}-{n}-{rattle:g}-{seed}.xyz"
    if out.is_file():
        return out
    rng = np.random.default_rng(seed)
    copies = []
    for k in range(n):
        a = frames[k % len(frames)]
        copies.append(Atoms(a.numbers, positions=a.positions + rng.normal(0.0, rattle,
                                                                          a.positions.shape),
                            cell=a.cell, pbc=a.pbc))
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    write(str(part), copies, format="extxyz")
    os.replace(part, out)
    return out
