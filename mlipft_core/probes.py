"""Physical probes of a model: dimer curves and a random-structure collapse probe.

A model that lost its short-range repulsion lets atoms approach far closer than any
reference structure: its dimer curves turn down at short distance and relaxations of random
compact structures collapse.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii

from .demo import DEMO_MODEL_NAMES, sample_data_dir
from .errors import MlipftError
from .evaluate import default_device, predict
from .modelwork import model_turn
from .registry import check_head, load_model, model_path
from .workspace import Workspace, atomic_write_json, cached_sha256


class ProbeError(MlipftError):
    code = "probe_error"


def parse_pair(pair: str) -> tuple[str, str]:
    """``"C-H"`` → ``("C", "H")``; raises ProbeError for anything else."""
    parts = pair.replace(" ", "").split("-")
    if len(parts) != 2 or not all(p in atomic_numbers for p in parts):
        raise ProbeError(f"pair {pair!r} is not of the form A-B with element symbols (e.g. C-H)")
    return parts[0], parts[1]


def _calculator(model: str | Path, head: str | None, trusted: bool):
    """An ASE calculator for a registry model or file (mace's own MACECalculator)."""
    from mace.calculators import MACECalculator  # heavy: only when a calculator is made

    class TurnTakingCalculator(MACECalculator):
        """mace's calculator, each calculation in this process's model turn."""

        def calculate(self, *args, **kwargs):
            with model_turn():
                return super().calculate(*args, **kwargs)

    path = model_path(model, trusted=trusted)
    with model_turn():  # mace's calculator loads the model and sets the default dtype
        net = load_model(path, trusted=True)
        head = check_head(net, head)
        dtype = str(next(net.parameters()).dtype).replace("torch.", "")
        kwargs = {"head": head} if len(getattr(net, "heads", []) or []) > 1 else {}
        return TurnTakingCalculator(model_paths=str(path), device=default_device(),
                                    default_dtype=dtype, **kwargs)


def dimer_distances(start: float = 0.5, stop: float = 5.0, n: int = 46) -> np.ndarray:
    return np.linspace(start, stop, n)


def dimer_curve(model: str | Path, pair: str, *, head: str | None = None,
                distances: Sequence[float] | None = None, trusted: bool = False
                ) -> dict[str, list[float]]:
    """Energy of an isolated A-B dimer against distance (eV, Å), in one batched call.

    Energies are relative to the last (largest) distance.
    """
    a, b = parse_pair(pair)
    d = np.asarray(distances if distances is not None else dimer_distances(), float)
    frames = [Atoms([a, b], positions=[[0, 0, 0], [0, 0, float(x)]]) for x in d]
    net = load_model(model, trusted=trusted)
    energies, _ = predict(net, frames, head=head)
    return {"distances": d.tolist(), "energies": (energies - energies[-1]).tolist()}


def reference_dimer_curves(model: str | Path | None) -> dict | None:
    """Reference dimer curves of a model's pretraining level of theory, where the workbench
    has them: the GFN1-xTB curves shipped with the demo world, for the demo foundation models.
    ``None`` for any other model."""
    if model is None:
        return None
    root = sample_data_dir()
    ref = root / "pretrain" / "dimer_reference.json"
    try:
        resolved = Path(model).resolve()
    except OSError:
        return None
    demo_files = {(root / "models" / f"{n}.model").resolve() for n in DEMO_MODEL_NAMES}
    if resolved not in demo_files or not ref.is_file():
        return None
    return json.loads(ref.read_text())


def reference_curve(curves: dict | None, pair: str) -> dict[str, list[float]] | None:
    """One pair's curve (either element order) from :func:`reference_dimer_curves`, with the
    points that never converged left out; ``None`` when there is none."""
    if not curves:
        return None
    a, b = parse_pair(pair)
    energies = curves["curves"].get(f"{a}-{b}") or curves["curves"].get(f"{b}-{a}")
    if energies is None:
        return None
    pts = [(d, e) for d, e in zip(curves["distances"], energies) if e is not None]
    return {"distances": [d for d, _ in pts], "energies": [e for _, e in pts],
            "method": curves.get("method", "reference")}


def repulsive_wall(curve: dict[str, list[float]]) -> float:
    """Height (eV) of the curve at its shortest distance above its minimum.

    A physical dimer rises by many eV at 0.5 Å; a model that lost its short-range repulsion
    shows a low wall, or none (the minimum sits at the shortest distance).
    """
    e = np.asarray(curve["energies"], float)
    return float(e[0] - e.min())


#: Below this wall height (eV) at the shortest probed distance a model is flagged.
WALL_THRESHOLD_EV = 2.0


@dataclass
class CollapseResult:
    """Outcome of relaxing random compact structures."""

    n_structures: int
    min_distance: float             # smallest interatomic distance reached (Å)
    min_distance_per_structure: list[float]
    collapsed: int                  # structures with a distance below the threshold
    threshold: float

    def to_dict(self) -> dict:
        return asdict(self)


def random_compact(elements: Sequence[str], n_atoms: int, rng: np.random.Generator,
                   min_sep: float = 0.8) -> Atoms:
    """Atoms placed at random in a sphere of roughly condensed-matter density."""
    radius = (n_atoms * 10.0 * 3 / (4 * np.pi)) ** (1 / 3)  # ~10 Å^3 per atom
    pos: list[np.ndarray] = []
    while len(pos) < n_atoms:
        p = rng.uniform(-radius, radius, 3)
        if np.linalg.norm(p) <= radius and all(np.linalg.norm(p - q) >= min_sep for q in pos):
            pos.append(p)
    syms = [elements[i % len(elements)] for i in rng.permutation(n_atoms)]
    return Atoms(syms, positions=np.array(pos))


@contextmanager
def _torch_threads(n: int):
    """torch's intra-op threads set to ``n`` inside the block (callers hold the model turn,
    so no other model work of this process runs meanwhile).

    A relaxation step is one model call on a few dozen atoms: hundreds of tiny operations,
    each of which makes torch's threads meet. When the cores are busy (training runs, other
    sessions) every meeting waits for a descheduled thread, and a step that takes 50 ms on
    one thread took 1.5–2 s on two (``bench/collapse_speed.py``).
    """
    import torch  # heavy: only while a model relaxes structures

    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _batched_fire(net, structures: list[Atoms], *, head: str | None, steps: int,
                  fmax: float = 0.05, progress=None, observe=None) -> list[Atoms]:
    """FIRE relaxation (ASE's FIRE parameters) of several structures at once.

    Every step is one batched model call for all structures still moving, instead of one
    calculator call per structure and step: the same trajectories as ASE's ``FIRE`` with
    ``maxstep=0.2``, at a fraction of the per-call overhead. ``observe(i, atoms)`` is called
    with every structure's start and with each of its positions after a step.
    """
    dt0, dtmax, nmin, finc, fdec, astart, fa, maxstep = 0.1, 1.0, 5, 1.1, 0.5, 0.1, 0.99, 0.2
    n = len(structures)
    atoms = [a.copy() for a in structures]
    v = [np.zeros((len(a), 3)) for a in atoms]
    dt, alpha, since = [dt0] * n, [astart] * n, [0] * n
    active = list(range(n))
    if observe:
        for i in active:
            observe(i, atoms[i])
    for step in range(steps):
        if not active:
            break
        with model_turn(), _torch_threads(1):
            _, forces = predict(net, [atoms[i] for i in active], head=head)
        split = np.cumsum([len(atoms[i]) for i in active])[:-1]
        still = []
        for i, f in zip(active, np.split(forces, split)):
            if np.sqrt((f ** 2).sum(axis=1)).max() < fmax:
                continue
            vf = float(np.vdot(f, v[i]))
            if vf > 0.0:
                v[i] = (1.0 - alpha[i]) * v[i] + alpha[i] * f / np.sqrt(np.vdot(f, f)) * \
                    np.sqrt(np.vdot(v[i], v[i]))
                if since[i] > nmin:
                    dt[i] = min(dt[i] * finc, dtmax)
                    alpha[i] *= fa
                since[i] += 1
            else:
                v[i][:] = 0.0
                alpha[i] = astart
                dt[i] *= fdec
                since[i] = 0
            v[i] += dt[i] * f
            dr = dt[i] * v[i]
            norm = np.sqrt(np.vdot(dr, dr))
            if norm > maxstep:
                dr = maxstep * dr / norm
            atoms[i].positions += dr
            if observe:
                observe(i, atoms[i])
            still.append(i)
        active = still
        if progress:
            progress(step + 1, steps)
    return atoms


def collapse_probe(model: str | Path, elements: Sequence[str], *, head: str | None = None,
                   n_structures: int = 5, n_atoms: int = 8, steps: int = 100, seed: int = 0,
                   threshold_factor: float = 0.5, trusted: bool = False,
                   progress=None) -> CollapseResult:
    """Relax random compact structures (FIRE, all structures in one batch per step) and
    report the closest approach reached.

    A structure counts as collapsed when two atoms end closer than ``threshold_factor`` times
    the sum of their covalent radii (0.5 × (0.31 + 0.31) = 0.31 Å for H-H).
    """
    net = load_model(model, trusted=trusted)
    rng = np.random.default_rng(seed)
    start = [random_compact(list(elements), n_atoms, rng) for _ in range(n_structures)]
    relaxed = _batched_fire(net, start, head=head, steps=steps, progress=progress)
    mins, collapsed, thresholds = [], 0, []
    for atoms in relaxed:
        d = atoms.get_all_distances()
        iu = np.triu_indices(len(atoms), 1)
        radii = covalent_radii[atoms.numbers]
        limit = threshold_factor * (radii[:, None] + radii[None, :])
        mins.append(float(d[iu].min()))
        if np.any(d[iu] < limit[iu]):
            collapsed += 1
        thresholds.append(float(limit[iu].min()))
    return CollapseResult(n_structures, float(min(mins)), mins, collapsed, float(min(thresholds)))


def collapse_probe_cached(model: str | Path, elements: Sequence[str], *,
                          head: str | None = None, workspace=None, trusted: bool = False,
                          progress=None, **kwargs) -> CollapseResult:
    """:func:`collapse_probe`, cached in the workspace by model hash, head and settings."""
    ws = workspace or Workspace()
    path = model_path(model, trusted=trusted)
    key = hashlib.sha256(json.dumps([sorted(elements), head, kwargs], sort_keys=True,
                                    default=str).encode()).hexdigest()[:12]
    cache = ws.cache / "collapse" / f"{cached_sha256(path)[:20]}-{key}.json"
    if cache.is_file():
        try:
            return CollapseResult(**json.loads(cache.read_text()))
        except (ValueError, TypeError):
            pass
    res = collapse_probe(path, elements, head=head, trusted=True, progress=progress, **kwargs)
    atomic_write_json(cache, res.to_dict())
    return res


def dimer_curve_cached(model: str | Path, pair: str, *, head: str | None = None,
                       workspace=None, trusted: bool = False) -> dict[str, list[float]]:
    """:func:`dimer_curve` on the default distances, cached in the workspace by model hash."""
    ws = workspace or Workspace()
    path = model_path(model, trusted=trusted)
    a, b = parse_pair(pair)
    cache = ws.cache / "dimers" / f"{cached_sha256(path)[:20]}-{head or 'first'}-{a}-{b}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    curve = dimer_curve(path, pair, head=head, trusted=True)
    atomic_write_json(cache, curve)
    return curve


# ------------------------------------------------------------- random structure search
#: The random structure search's settings, fixed before any model was searched with them:
#: every pair of a start at least :data:`SEARCH_START_FACTOR` of its covalent-radii sum
#: apart, FIRE to :data:`SEARCH_FMAX` eV/Å in at most :data:`SEARCH_STEPS` steps, and a
#: collapse when a pair comes closer than :data:`SEARCH_COLLAPSE_FACTOR` of its covalent-radii
#: sum at any step (0.55 × (0.76 + 0.31) = 0.59 Å for C-H, where a C-H bond is 1.09 Å).
SEARCH_STRUCTURES = 40
SEARCH_STEPS = 300
SEARCH_FMAX = 0.05
SEARCH_START_FACTOR = 0.85
SEARCH_COLLAPSE_FACTOR = 0.55
#: Heavy (not hydrogen) atoms and hydrogens of one random cluster, inclusive ranges; a target
#: without hydrogen (or with hydrogen only) gets clusters of 3 to 8 atoms.
SEARCH_HEAVY, SEARCH_HYDROGENS, SEARCH_ATOMS = (2, 4), (1, 6), (3, 8)


@dataclass
class SearchResult:
    """One model's random structure search: how many of the same random compact structures
    collapsed while it relaxed them.

    ``closest`` per structure: the smallest ratio of a pair's distance to its covalent-radii
    sum at any step; ``final``: the same ratio in the relaxed structure.
    """

    structures: int
    collapsed: int
    closest: list[float]
    final: list[float]
    steps: int
    fmax: float
    start_factor: float
    collapse_factor: float
    seed: int

    @property
    def collapsed_percent(self) -> float:
        return round(100.0 * self.collapsed / max(self.structures, 1), 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["collapsed_percent"] = self.collapsed_percent
        d["median_closest"] = round(float(np.median(self.closest)), 3) if self.closest else None
        d["median_final"] = round(float(np.median(self.final)), 3) if self.final else None
        return d


def _closest_ratio(atoms: Atoms) -> float:
    """The smallest ratio of a pair's distance to the sum of its covalent radii."""
    if len(atoms) < 2:
        return float("inf")
    d = atoms.get_all_distances()
    radii = covalent_radii[atoms.numbers]
    iu = np.triu_indices(len(atoms), 1)
    return float((d[iu] / (radii[:, None] + radii[None, :])[iu]).min())


def random_cluster(elements: Sequence[str], rng: np.random.Generator, *,
                   start_factor: float = SEARCH_START_FACTOR) -> Atoms:
    """A random compact cluster of ``elements``: each atom placed next to one already placed,
    at 0.85 to 1.3 of their covalent-radii sum in a random direction, and no pair closer than
    ``start_factor`` of its covalent-radii sum.

    With hydrogen and another element among ``elements``: 2 to 4 heavy atoms and 1 to 6
    hydrogens; otherwise 3 to 8 atoms.
    """
    heavy = sorted({e for e in elements if e != "H"})
    if heavy and "H" in elements:
        syms = [heavy[k] for k in rng.integers(0, len(heavy), rng.integers(SEARCH_HEAVY[0],
                                                                         SEARCH_HEAVY[1] + 1))]
        syms += ["H"] * int(rng.integers(SEARCH_HYDROGENS[0], SEARCH_HYDROGENS[1] + 1))
    else:
        pool = heavy or ["H"]
        syms = [pool[k] for k in rng.integers(0, len(pool), rng.integers(SEARCH_ATOMS[0],
                                                                       SEARCH_ATOMS[1] + 1))]
    radius = {e: covalent_radii[atomic_numbers[e]] for e in set(syms)}
    pos = [np.zeros(3)]
    for sym in syms[1:]:
        for _ in range(1000):
            k = int(rng.integers(0, len(pos)))
            u = rng.normal(size=3)
            p = pos[k] + u / np.linalg.norm(u) * rng.uniform(0.85, 1.3) * (
                radius[sym] + radius[syms[k]])
            if all(np.linalg.norm(p - q) >= start_factor * (radius[sym] + radius[s2])
                   for q, s2 in zip(pos, syms)):
                pos.append(p)
                break
        else:  # pragma: no cover - a few atoms always fit
            raise ProbeError("could not place a random structure's atoms")
    return Atoms(syms, positions=np.array(pos))


def search_structures(elements: Sequence[str], *, n_structures: int = SEARCH_STRUCTURES,
                      seed: int = 0) -> list[Atoms]:
    """The random structure search's starts: the same for every model of the same elements
    and seed."""
    if not elements:
        raise ProbeError("a random structure search needs at least one element")
    rng = np.random.default_rng(seed)
    return [random_cluster(sorted(set(elements)), rng) for _ in range(n_structures)]


def random_structure_search(model: str | Path, elements: Sequence[str], *,
                            head: str | None = None, n_structures: int = SEARCH_STRUCTURES,
                            steps: int = SEARCH_STEPS, fmax: float = SEARCH_FMAX, seed: int = 0,
                            trusted: bool = False, progress=None) -> SearchResult:
    """The study's random structure search: relax random compact clusters of ``elements``
    with the model (batched FIRE) and count those in which two atoms came closer than
    :data:`SEARCH_COLLAPSE_FACTOR` of their covalent-radii sum at any step.

    A model that keeps its short-range repulsion pushes such atoms apart again; one that lost
    it lets them fall into a "hole" at unphysically short distance.
    """
    net = load_model(model, trusted=trusted)
    start = search_structures(elements, n_structures=n_structures, seed=seed)
    closest = [float("inf")] * len(start)

    def observe(i: int, atoms: Atoms) -> None:
        closest[i] = min(closest[i], _closest_ratio(atoms))

    relaxed = _batched_fire(net, start, head=head, steps=steps, fmax=fmax, progress=progress,
                            observe=observe)
    collapsed = sum(c < SEARCH_COLLAPSE_FACTOR for c in closest)
    return SearchResult(len(start), int(collapsed), [round(c, 4) for c in closest],
                        [round(_closest_ratio(a), 4) for a in relaxed], steps, fmax,
                        SEARCH_START_FACTOR, SEARCH_COLLAPSE_FACTOR, seed)


def random_structure_search_cached(model: str | Path, elements: Sequence[str], *,
                                   head: str | None = None, workspace=None,
                                   trusted: bool = False, progress=None,
                                   **kwargs) -> SearchResult:
    """:func:`random_structure_search`, cached in the workspace by model hash, head and
    settings."""
    ws = workspace or Workspace()
    path = model_path(model, trusted=trusted)
    settings = [sorted(set(elements)), head, SEARCH_START_FACTOR, SEARCH_COLLAPSE_FACTOR,
                sorted(kwargs.items())]
    key = hashlib.sha256(json.dumps(settings, default=str).encode()).hexdigest()[:12]
    cache = ws.cache / "search" / f"{cached_sha256(path)[:20]}-{key}.json"
    if cache.is_file():
        try:
            return SearchResult(**{k: v for k, v in json.loads(cache.read_text()).items()
                                   if k in SearchResult.__dataclass_fields__})
        except (ValueError, TypeError):
            pass
    res = random_structure_search(path, elements, head=head, trusted=True, progress=progress,
                                  **kwargs)
    atomic_write_json(cache, res.to_dict())
    return res
