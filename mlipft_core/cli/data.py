"""``mlipft validate``, ``mlipft evaluate`` and ``mlipft e0``: a dataset's problems, a
model's zero-shot errors on it, and its atomic reference energies."""

from __future__ import annotations

import argparse

from ..actions import check_dataset, e0s_of_file
from ._options import AddFn
from ._output import emit, number, trusted

E0_METHODS = ["foundation", "average", "estimated", "isolated", "explicit"]


def add_validate(add: AddFn) -> None:
    """``mlipft validate DATA``."""
    p = add("validate", "check a dataset for problems")
    p.add_argument("data", help="extxyz file")
    p.add_argument("--model", help="check element coverage against this model")
    p.add_argument("--energy-key")
    p.add_argument("--forces-key")
    p.add_argument("--stress-key")
    p.set_defaults(func=cmd_validate)


def add_evaluate(add: AddFn) -> None:
    """``mlipft evaluate MODEL DATA``."""
    p = add("evaluate", "zero-shot errors of a model on data")
    p.add_argument("model", help="registry name or .model path")
    p.add_argument("data", help="extxyz file")
    p.add_argument("--head", help="model head (default: the first)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="structures per batch (default: about 384 atoms per batch)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="default: cuda when available")
    p.add_argument("--energy-key")
    p.add_argument("--forces-key")
    p.set_defaults(func=cmd_evaluate)


def add_e0(add: AddFn) -> None:
    """``mlipft e0 DATA --model MODEL --method METHOD``."""
    p = add("e0", "atomic reference energies (E0s) of a training set by one method")
    p.add_argument("data", help="training extxyz file")
    p.add_argument("--model", required=True, help="foundation model (registry name or path)")
    p.add_argument("--head", help="model head (default: the first)")
    p.add_argument("--method", required=True, choices=E0_METHODS)
    p.add_argument("--values", help="explicit E0s: JSON text or file (keys: symbols or Z)")
    p.add_argument("--isolated-file",
                   help="extxyz with IsolatedAtom configurations of the reference method: used by "
                        "'isolated' and as the anchor of the fitted methods (default for the demo "
                        "data: its bundled isolated atoms)")
    p.set_defaults(func=cmd_e0)


def cmd_validate(args: argparse.Namespace) -> int:
    """The findings of a dataset; exit status 1 when one is an error."""
    check = check_dataset(args.data, energy_key=args.energy_key, forces_key=args.forces_key,
                          stress_key=args.stress_key, model=args.model, trust=trusted)
    text = "\n".join(f"{f.severity:7s} {f.code}: {f.message}"
                     for f in check.findings) or "no findings"
    emit(args, check.to_dict(), text)
    return 0 if check.ok else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Energy and force errors of a model on a dataset."""
    # evaluate: runs the model (torch, ase), only for this command
    from ..evaluate import BatchSizeError, evaluate_model

    if args.batch_size is not None and args.batch_size < 1:
        raise BatchSizeError(f"--batch-size must be at least 1 structure per batch, not "
                             f"{args.batch_size}")
    res = evaluate_model(args.model, args.data, head=args.head, energy_key=args.energy_key,
                         forces_key=args.forces_key, batch_size=args.batch_size,
                         device=args.device, trusted=trusted(args.model))
    m = res.metrics.as_dict()
    payload = {"model": args.model, "head": res.head, "data": args.data, **m,
               "per_config_type": {k: v.as_dict() for k, v in res.per_config_type().items()}}
    text = (f"{m['n_structures']} structures, head {res.head}\n"
            f"energy RMSE {number(m['energy_rmse_mev_per_atom'])} meV/atom, MAE "
            f"{number(m['energy_mae_mev_per_atom'])} meV/atom\nforces RMSE "
            f"{number(m['forces_rmse_mev_per_a'])} meV/Å, "
            f"MAE {number(m['forces_mae_mev_per_a'])} meV/Å")
    emit(args, payload, text)
    return 0


def cmd_e0(args: argparse.Namespace) -> int:
    """E0s of a training set by one method, with the offsets they leave."""
    inputs, res = e0s_of_file(args.data, args.model, args.method, head=args.head,
                              values=args.values, isolated_file=args.isolated_file,
                              trust=trusted)
    d = res.to_dict()
    d.update(model=args.model, data=args.data, elements=inputs.elements,
             per_config={"offset_before_ev_per_atom": None if res.offset_before is None
                         else res.offset_before.tolist(),
                         "offset_after_ev_per_atom": None if res.offset_after is None
                         else res.offset_after.tolist()})
    lines = [f"{args.method} E0s (eV):"] + [f"  {el:2s} {v:14.6f}" for el, v in res.e0.items()]
    lines.append(f"offset RMSE before {number(res.offset_rmse_before_mev_per_atom)} meV/atom, "
                 f"after {number(res.offset_rmse_after_mev_per_atom)} meV/atom")
    if res.anchor:
        lines.append(f"undetermined directions from: {res.anchor}")
    lines += [f"warning: {w}" for w in res.warnings]
    lines.append(f"--E0s=\"{res.mace_argument()}\"")
    emit(args, d, "\n".join(lines))
    return 0
