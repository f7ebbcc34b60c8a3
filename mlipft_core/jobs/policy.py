"""The rules a workspace's runs follow: who may queue what, who owns a run, where it is served.

Every submission asks the workspace's *submission policy* (:class:`SubmissionPolicy`) once:

- whether the runs may be queued (:meth:`~SubmissionPolicy.check_submission`: a limit on runs
  going at once, a cap on epochs, ...);
- whom the runs belong to and how long each may run (:meth:`~SubmissionPolicy.owner`,
  :meth:`~SubmissionPolicy.time_limit_s`, recorded as ``participant`` and ``time_limit_s``).
  :func:`check_submission` asks both at once and gives them with its answer, an
  :class:`Admission` that every run of the submission records;
- which folder's dispatcher serves them (:meth:`~SubmissionPolicy.dispatch_root`), and which
  workspaces a dispatcher in a folder serves (:meth:`~SubmissionPolicy.served_roots`): several
  workspaces of a shared space can share one dispatcher with fair slots;
- what a finished training run does besides recording its end
  (:meth:`~SubmissionPolicy.after_run`).

A plain workspace has the :class:`OpenPolicy`: everything is allowed, runs belong to nobody
and its own dispatcher serves them. A space with rules of its own provides them by
registering a *resolver* (:func:`register`), a function that gives the policy of a workspace
of that space (``None`` for any other); callers may also hand a policy in directly.

The processes the run path starts (the dispatcher, each runner, a SLURM job) follow the same
rules: the modules that registered resolvers are named to them in ``$MLIPFT_RUN_POLICIES``
(:func:`child_env`) and imported there again (:func:`load_named`).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..strategies import RunSpec, resolved_settings
from ..workspace import Workspace

__all__ = ["ENV_VAR", "Admission", "OpenPolicy", "Resolver", "SubmissionPolicy", "check_submission",
           "child_env", "load_named", "policy_for", "register"]

#: Names the modules whose resolvers the processes of the run path register again.
ENV_VAR = "MLIPFT_RUN_POLICIES"
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class SubmissionPolicy(Protocol):
    """What the run path asks of a workspace's rules (see the module's description)."""

    def check_submission(self, n_new: int, settings: Sequence[Mapping[str, Any]]) -> None:
        """Refuse ``n_new`` runs with these resolved settings (one mapping per run, possibly
        none when only the number is known) by raising a
        :class:`~mlipft_core.errors.MlipftError`; return when they may be queued."""

    def owner(self) -> str | None:
        """Whom the workspace's runs belong to (``None``: nobody in particular)."""

    def time_limit_s(self) -> float | None:
        """The wall time each run may take, in seconds (``None``: no limit)."""

    def dispatch_root(self) -> Path:
        """The folder whose local dispatcher serves the workspace's runs."""

    def served_roots(self) -> list[Path]:
        """The workspaces whose local runs a dispatcher in this workspace's folder serves."""

    def after_run(self, folder: Path, model: Path) -> None:
        """Called in the run's own process when a training run in ``folder`` produced
        ``model``, before its end is recorded."""


class OpenPolicy:
    """The rules of a plain workspace: anything may be queued, runs belong to nobody, have no
    time limit and are served by the workspace's own dispatcher."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.workspace.root)!r})"

    def check_submission(self, n_new: int, settings: Sequence[Mapping[str, Any]]) -> None:
        return None

    def owner(self) -> str | None:
        return None

    def time_limit_s(self) -> float | None:
        return None

    def dispatch_root(self) -> Path:
        return self.workspace.root

    def served_roots(self) -> list[Path]:
        return [self.workspace.root]

    def after_run(self, folder: Path, model: Path) -> None:
        return None


#: Gives the policy of a workspace of its space, or ``None`` for any other workspace.
Resolver = Callable[[Workspace], "SubmissionPolicy | None"]

_RESOLVERS: list[Resolver] = []


def register(resolver: Resolver) -> Resolver:
    """Add a resolver (once; registering it again changes nothing); returns it, so that it
    can decorate the resolver. The latest registered resolver is asked first."""
    if resolver not in _RESOLVERS:
        _RESOLVERS.insert(0, resolver)
    return resolver


def policy_for(workspace: Workspace | None = None) -> SubmissionPolicy:
    """The policy of ``workspace`` (default: the workspace folder): the first registered
    resolver's answer, else :class:`OpenPolicy`."""
    ws = workspace or Workspace()
    load_named()
    for resolver in _RESOLVERS:
        found = resolver(ws)
        if found is not None:
            return found
    return OpenPolicy(ws)


@dataclass(frozen=True)
class Admission:
    """A submission its policy let through: what each of its runs records."""

    owner: str | None = None
    """Whom the runs belong to (``participant`` in a run's record)."""
    time_limit_s: float | None = None
    """The wall time each run may take, in seconds."""

    @classmethod
    def of(cls, policy: SubmissionPolicy) -> Admission:
        """The owner and time limit ``policy`` gives its workspace's runs."""
        return cls(owner=policy.owner(), time_limit_s=policy.time_limit_s())


def check_submission(workspace: Workspace, runs: Sequence[RunSpec] | int,
                     policy: SubmissionPolicy | None = None) -> Admission:
    """Ask the policy (default: the workspace's) whether ``runs`` (the specs of the runs, or
    only how many) may be queued in ``workspace``; raises what the policy raises, else gives
    the :class:`Admission` every run of the submission records."""
    pol = policy or policy_for(workspace)
    if isinstance(runs, int):
        pol.check_submission(runs, [])
    else:
        pol.check_submission(len(runs), [resolved_settings(s) for s in runs])
    return Admission.of(pol)


def _registered_modules() -> list[str]:
    """The modules whose resolvers are registered here, in the order they were registered."""
    names = [getattr(r, "__module__", None) for r in reversed(_RESOLVERS)]
    return list(dict.fromkeys(n for n in names if n and n != "__main__"))


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's environment) with ``$MLIPFT_RUN_POLICIES`` naming
    every module of a registered resolver, so that a process of the run path started with it
    follows the same rules."""
    out = dict(os.environ if env is None else env)
    given = [n for n in out.get(ENV_VAR, "").split(",") if n.strip()]
    names = list(dict.fromkeys([*given, *_registered_modules()]))
    if names:
        out[ENV_VAR] = ",".join(names)
    return out


def load_named() -> None:
    """Import the modules named in ``$MLIPFT_RUN_POLICIES`` (each registers its resolver when
    imported); a name that is not a module name is ignored."""
    for name in os.environ.get(ENV_VAR, "").split(","):
        name = name.strip()
        if name and _MODULE_NAME.match(name) and name not in _imported:
            _imported.add(name)
            importlib.import_module(name)


_imported: set[str] = set()
