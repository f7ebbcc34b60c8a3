"""Settings and outcome of one MD run, and the error MD raises.

Kept apart from the running (:mod:`mlipft_core.md`) and the analysis
(:mod:`mlipft_core.md_analysis`) so that both, and the run records, share them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import MlipftError


class MDError(MlipftError):
    """MD settings, structures or traces that cannot be used."""

    code = "md_error"


@dataclass
class MDSettings:
    """Settings of one MD run."""

    ensemble: str = "langevin"        # langevin | bussi | nve
    temperature_k: float = 300.0
    timestep_fs: float = 0.5
    steps: int = 1000
    friction_per_fs: float = 0.01     # Langevin friction; Bussi uses taut = 1 / friction
    seed: int = 0
    interval: int = 10                # steps between recorded frames
    min_distance: float = 0.5         # Å: closer atoms mean a collapse
    max_temperature_factor: float = 5.0   # runaway above factor x target (and 3000 K floor)
    max_drift_ev_per_atom: float = 0.05   # NVE: total-energy drift limit
    equilibration_fraction: float = 0.2   # frames skipped before averaging the RDF
    rdf_rmax: float = 6.0
    rdf_nbins: int = 120

    def check(self) -> None:
        if self.ensemble not in ("langevin", "bussi", "nve"):
            raise MDError(f"unknown ensemble {self.ensemble!r}: langevin, bussi or nve")
        for name in ("temperature_k", "timestep_fs", "friction_per_fs", "min_distance"):
            v = getattr(self, name)
            if not np.isfinite(v) or v <= 0:
                raise MDError(f"{name} must be a positive number, not {v!r}")
        if self.steps < 1 or self.interval < 1:
            raise MDError("steps and the recording interval must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MDResult:
    """Outcome of one MD run."""

    survived_steps: int
    steps: int
    failure: str | None
    steps_per_second: float
    time_fs: list[float] = field(default_factory=list)
    temperature_k: list[float] = field(default_factory=list)
    potential_ev: list[float] = field(default_factory=list)
    total_ev: list[float] = field(default_factory=list)
    min_distance: list[float] = field(default_factory=list)
    rdf: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # pair -> r, g
    trajectory: str | None = None
    n_atoms: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
