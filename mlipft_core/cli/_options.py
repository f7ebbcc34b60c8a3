"""Options several commands share: the training inputs and settings (``train``, ``tune``),
and where runs execute (``train``, ``tune``, ``study``, ``settings``, ``workshop``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from ..launch import TrainingOptions
from ..strategies import LOSSES, PRESETS

#: Adds a command (name, help) with its ``--json`` option and returns its parser.
AddFn = Callable[[str, str], argparse.ArgumentParser]

EXECUTOR_HELP = "where runs execute (default: the workspace setting, normally local)"


def add_training_options(p: argparse.ArgumentParser) -> None:
    """The training inputs and settings shared by ``train`` and ``tune``."""
    p.add_argument("--model", required=True, help="foundation model (registry name or path)")
    p.add_argument("--train", required=True, help="training extxyz")
    p.add_argument("--valid", help="validation extxyz (default: 10%% of the training set)")
    p.add_argument("--test", help="test extxyz")
    p.add_argument("--e0", default="estimated",
                   help="foundation | average | estimated | isolated | a saved E0 choice id | "
                        "JSON or mace dict of values (default: estimated)")
    p.add_argument("--isolated-file",
                   help="extxyz with IsolatedAtom configurations of the reference method: the "
                        "anchor of fitted E0s (default for the demo SN2 data: its B3LYP atoms)")
    p.add_argument("--replay", help="replay file for multihead strategies (default for demo "
                                    "models: the bundled replay pool)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--lora-rank", type=int, help="LoRA rank (LoRA strategies)")
    p.add_argument("--lora-alpha", type=float, help="LoRA alpha (LoRA strategies)")
    p.add_argument("--replay-samples", type=int,
                   help="pretraining configurations replayed (multihead strategies): a subset "
                        "of the replay file, chosen by mace_finetuning_select, when it holds "
                        "more (default 200)")
    p.add_argument("--replay-selection", choices=["random", "fps"],
                   help="how the replay subset is chosen: random, or farthest point sampling "
                        "on the foundation model's descriptors (default random)")
    p.add_argument("--energy-weight", type=float)
    p.add_argument("--forces-weight", type=float)
    p.add_argument("--ema", dest="ema", action="store_true", default=None,
                   help="exponential moving average of the weights (default: on)")
    p.add_argument("--no-ema", dest="ema", action="store_false")
    p.add_argument("--ema-decay", type=float)
    p.add_argument("--precision", choices=["float32", "float64"])
    p.add_argument("--preset", choices=list(PRESETS),
                   help="the settings a run starts from: 'short budget' (the strategy's "
                        "defaults, measured for 20 epochs on CPU) or 'study protocol' (the "
                        "study's per-method settings, for long runs on a GPU); options given "
                        "here override it (default: short budget)")
    p.add_argument("--clip-grad", type=float, help="gradient clipping (default: the preset's)")
    p.add_argument("--weight-decay", type=float, help="weight decay (default: the preset's)")
    p.add_argument("--loss", choices=list(LOSSES), help="mace's loss (default: the preset's)")
    p.add_argument("--foundation-head",
                   help="the head of a multi-head foundation model (e.g. omat_pbe of MACE-MH-1) "
                        "to fine-tune from; E0s are that head's (default: its first head)")


def training_options(args: argparse.Namespace) -> TrainingOptions:
    """The training options of a parsed ``train`` or ``tune`` command line (``tune`` has no
    ``--lr``)."""
    return TrainingOptions(**{f.name: getattr(args, f.name, None)
                              for f in fields(TrainingOptions)})


def add_executor_options(p: argparse.ArgumentParser, default_help: str = EXECUTOR_HELP) -> None:
    """``--executor`` and the SLURM options."""
    p.add_argument("--executor", choices=["local", "slurm"], help=default_help)
    g = p.add_argument_group("SLURM (with --executor slurm; defaults from mlipft settings)")
    g.add_argument("--slurm-partition", help="partition (default: the cluster's default)")
    g.add_argument("--slurm-time", type=int, help="time limit per run, minutes")
    g.add_argument("--slurm-cpus", type=int, help="CPUs per run")
    g.add_argument("--slurm-gpus", type=int, help="GPUs per run (0: CPU runs)")
    g.add_argument("--slurm-mem", type=float, help="memory per run, GB")
    g.add_argument("--slurm-extra", help="further sbatch options, e.g. '--qos=short'")


def slurm_options(args: argparse.Namespace) -> dict[str, Any]:
    """The SLURM options of a parsed command line (``None``: not given)."""
    return {"partition": args.slurm_partition, "time_min": args.slurm_time,
            "cpus": args.slurm_cpus, "gpus": args.slurm_gpus, "mem_gb": args.slurm_mem,
            "extra": args.slurm_extra}


def slurm_if_chosen(args: argparse.Namespace) -> dict[str, Any] | None:
    """The SLURM options with ``--executor slurm``, else ``None``."""
    return slurm_options(args) if args.executor == "slurm" else None
