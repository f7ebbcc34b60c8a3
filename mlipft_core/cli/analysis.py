"""``mlipft compare``, ``mlipft dimer`` and ``mlipft md``: models side by side, a dimer
curve, and molecular dynamics with a model."""

from __future__ import annotations

import argparse

from ..actions import compare_models, md_on_file
from ._options import AddFn
from ._output import emit, number, trusted

ENSEMBLES = ["langevin", "bussi", "nve"]


def add_compare(add: AddFn) -> None:
    """``mlipft compare MODEL... --target TEST``."""
    p = add("compare", "target accuracy and forgetting of runs and models side by side")
    p.add_argument("models", nargs="+",
                   help="models: .model file paths, registry names or run ids (finished runs)")
    p.add_argument("--target", required=True, help="target test extxyz")
    p.add_argument("--pretrain", help="held-out pretraining test extxyz (for forgetting)")
    p.add_argument("--foundation", help="reference model of the forgetting ratio (default: "
                                        "the foundation model of the first run)")
    p.set_defaults(func=cmd_compare)


def add_dimer(add: AddFn) -> None:
    """``mlipft dimer MODEL --pair A-B``."""
    p = add("dimer", "energy of an A-B dimer against distance")
    p.add_argument("model", help="registry name or .model path")
    p.add_argument("--pair", required=True, help="element pair, e.g. C-H")
    p.add_argument("--head", help="model head (default: the first)")
    p.set_defaults(func=cmd_dimer)


def add_md(add: AddFn) -> None:
    """``mlipft md MODEL STRUCTURE``."""
    p = add("md", "molecular dynamics with a model: stability and RDFs")
    p.add_argument("model", help="registry name or .model path")
    p.add_argument("structure", help="structure file (extxyz or any ASE format)")
    p.add_argument("--index", type=int, default=0, help="which structure of the file")
    p.add_argument("--head", help="model head (default: the first)")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--temperature", type=float, required=True, help="K")
    p.add_argument("--timestep", type=float, required=True, help="fs")
    p.add_argument("--ensemble", choices=ENSEMBLES, default="langevin")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--interval", type=int, default=10, help="steps between recorded frames")
    p.add_argument("--trajectory", help="write the recorded frames to this extxyz file")
    p.set_defaults(func=cmd_md)


def _ratio(value: float | None) -> str:
    """A forgetting ratio with two decimals, ``n/a`` when there is none."""
    return "n/a" if value is None else f"{value:.2f}"


def cmd_compare(args: argparse.Namespace) -> int:
    """A table of target and pretraining errors and the forgetting ratio per model."""
    rows = compare_models(args.models, args.target, args.pretrain, foundation=args.foundation,
                          trust=trusted)
    text = "\n".join(
        [f"{'model':30s} {'head':10s} {'target E':>9s} {'target F':>9s} {'pretrain E':>10s} "
         f"{'pretrain F':>10s} {'ratio':>6s}"]
        + [f"{r.name[:30]:30s} {r.head:10s} {number(r.target_energy_rmse_mev_per_atom):>9s} "
           f"{number(r.target_forces_rmse_mev_per_a):>9s} "
           f"{number(r.pretrain_energy_rmse_mev_per_atom):>10s} "
           f"{number(r.pretrain_forces_rmse_mev_per_a):>10s} {_ratio(r.forgetting_ratio):>6s}"
           for r in rows]
        + ["energies in meV/atom relative to the E0s of each dataset's level of theory "
           "(raw absolute errors: --json, keys ending in _raw); forces in meV/Å"])
    emit(args, [r.to_dict() for r in rows], text)
    return 0


def cmd_dimer(args: argparse.Namespace) -> int:
    """Energies of a dimer against distance."""
    # probes: runs the model (torch, ase), only for this command
    from ..probes import dimer_curve

    curve = dimer_curve(args.model, args.pair, head=args.head, trusted=trusted(args.model))
    payload = {"model": args.model, "pair": args.pair, "head": args.head, **curve}
    text = "\n".join(f"{d:6.3f} {e:12.5f}" for d, e in zip(curve["distances"], curve["energies"]))
    emit(args, payload, text)
    return 0


def cmd_md(args: argparse.Namespace) -> int:
    """Run MD and say how long the structure survived."""
    res = md_on_file(args.model, args.structure, index=args.index, head=args.head,
                     steps=args.steps, temperature_k=args.temperature,
                     timestep_fs=args.timestep, ensemble=args.ensemble, seed=args.seed,
                     interval=args.interval, trajectory=args.trajectory, trust=trusted)
    text = (f"survived {res.survived_steps}/{res.steps} steps, "
            f"{res.steps_per_second:.1f} steps/s, failure: {res.failure or 'none'}")
    emit(args, res.to_dict(), text)
    return 0
