"""The seven fine-tuning strategies and the from-scratch baseline, as ``mace_run_train`` options.

Each strategy maps to a ``mace_run_train`` configuration (a YAML file of its options) and
nothing else: training is mace's. Guard rails refuse settings that would train nothing or that
mace would silently change.
"""

from __future__ import annotations

import math
import numbers
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import MlipftError
from .modelwork import model_turn
from .replay import METHODS as REPLAY_METHODS


class StrategyError(MlipftError):
    """Settings that a strategy refuses, with the reason."""

    code = "bad_settings"


@dataclass(frozen=True)
class Strategy:
    """One fine-tuning strategy: what it changes, when to use it, its defaults."""

    name: str
    title: str
    changes: str
    when: str
    defaults: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    multihead: bool = False
    lora: bool = False
    from_scratch: bool = False


#: The settings every strategy starts from (its own entries below override them): the
#: "short budget" preset, measured for 20 epochs on CPU. ``clip_grad``, ``weight_decay`` and
#: ``loss`` are mace's own defaults, written out so that a run records them.
COMMON_DEFAULTS = {"max_num_epochs": 20, "batch_size": 5, "energy_weight": 10.0,
                   "forces_weight": 100.0, "ema": True, "ema_decay": 0.99, "seed": 0,
                   "clip_grad": 10.0, "weight_decay": 5e-7, "loss": "weighted"}

#: The settings presets a run starts from, by name: the strategy's own defaults (tuned for
#: tens of epochs on CPU), or the study's protocol (mace's fine-tuning guidance, which
#: summarises the study: for budgets of hundreds of epochs, on a GPU).
SHORT_BUDGET, STUDY_PROTOCOL = "short budget", "study protocol"
PRESETS = (SHORT_BUDGET, STUDY_PROTOCOL)
#: The study protocol's settings common to every method: the ``universal`` loss with constant
#: energy and forces weights 10/10, no weight decay (it pulls weights away from the
#: pretrained solution), float64.
STUDY_COMMON = {"loss": "universal", "energy_weight": 10.0, "forces_weight": 10.0,
                "weight_decay": 0.0, "default_dtype": "float64", "ema": True}
#: The study protocol per method: learning rate, EMA decay, gradient clipping.
STUDY_PER_METHOD = {
    "scratch": {"lr": 1e-2, "ema_decay": 0.99, "clip_grad": 10.0},
    "naive": {"lr": 1e-3, "ema_decay": 0.999, "clip_grad": 1.0},
    "freeze-a": {"lr": 1e-3, "ema_decay": 0.999, "clip_grad": 1.0},
    "freeze-b": {"lr": 1e-3, "ema_decay": 0.999, "clip_grad": 1.0},
    "lora": {"lr": 1e-2, "ema_decay": 0.99, "clip_grad": 10.0},
    "multihead-replay": {"lr": 1e-4, "ema_decay": 0.9999, "clip_grad": 1.0},
    "pseudolabel-replay": {"lr": 1e-4, "ema_decay": 0.9999, "clip_grad": 1.0},
    "replay-lora": {"lr": 1e-3, "ema_decay": 0.999, "clip_grad": 10.0},
}
#: The losses a run may ask mace for.
LOSSES = ("weighted", "universal", "huber", "ef")

#: Default learning rates: measured with the learning-rate pilot (1e-4 ... 1e-1, 5 epochs) on the
#: demo world (strong demo model, SN2 target), each within 1.3x of the pilot's best validation
#: force error; the measured table is in the README (``python bench/lr_defaults.py``).
STRATEGIES: dict[str, Strategy] = {s.name: s for s in [
    Strategy("naive", "Naive fine-tuning",
             "All weights of the foundation model train on the target data.",
             "The study found it converges best for a single system; it forgets the "
             "pretraining distribution.",
             {**COMMON_DEFAULTS, "lr": 3e-3},
             {"multiheads_finetuning": False}),
    Strategy("freeze-a", "Freeze, variant A",
             "Embedding and all interaction blocks are frozen; products and readouts train.",
             "Fewer trainable weights; a compromise between adaptation and retention.",
             {**COMMON_DEFAULTS, "lr": 3e-2},
             {"multiheads_finetuning": False, "freeze": 5}),
    Strategy("freeze-b", "Freeze, variant B",
             "Everything but the readouts is frozen.",
             "The smallest change to the model; limited adaptation.",
             {**COMMON_DEFAULTS, "lr": 3e-2},
             {"multiheads_finetuning": False, "freeze": 6}),
    Strategy("lora", "LoRA",
             "Low-rank equivariant adapters on linear and radial layers train; the base is "
             "frozen. The adapters are merged into a plain model when saved.",
             "Tolerates a high learning rate; the study recommends tuning it per strategy.",
             {**COMMON_DEFAULTS, "lr": 3e-2, "lora_rank": 4, "lora_alpha": 1.0},
             {"multiheads_finetuning": False}, lora=True),
    Strategy("multihead-replay", "Multihead replay",
             "A new head learns the target while the pt_head replays pretraining data through "
             "a shared backbone.",
             "The study found replay (real or pseudolabelled) the only strategy that keeps "
             "pretraining accuracy and short-range repulsion. The study's long runs used a "
             "low learning rate (1e-4); for tens of epochs a higher one converges: tune it.",
             {**COMMON_DEFAULTS, "lr": 3e-3, "num_samples_pt": 200, "subselect_pt": "random"},
             {"multiheads_finetuning": True, "force_mh_ft_lr": True}, multihead=True),
    Strategy("pseudolabel-replay", "Pseudolabelled replay",
             "As multihead replay, but the replay structures are labelled by the foundation "
             "model itself, so no original pretraining labels are needed.",
             "Keeps robustness like replay when the pretraining labels are not at hand.",
             {**COMMON_DEFAULTS, "lr": 3e-3, "num_samples_pt": 200, "subselect_pt": "random"},
             {"multiheads_finetuning": True, "force_mh_ft_lr": True,
              "pseudolabel_replay": True}, multihead=True),
    Strategy("replay-lora", "Replay + LoRA",
             "Multihead replay with LoRA adapters instead of full weights.",
             "Combines the retention of replay with the small footprint of LoRA.",
             {**COMMON_DEFAULTS, "lr": 3e-2, "num_samples_pt": 200, "subselect_pt": "random",
              "lora_rank": 4, "lora_alpha": 1.0},
             {"multiheads_finetuning": True, "force_mh_ft_lr": True}, multihead=True, lora=True),
    Strategy("scratch", "From scratch (baseline)",
             "A new model with the foundation model's architecture, trained on the target "
             "data only.",
             "The baseline every fine-tuning strategy should beat.",
             {**COMMON_DEFAULTS, "lr": 1e-2}, from_scratch=True),
]}

#: Settings a user may edit (besides the strategy-specific ones in the defaults).
EDITABLE = ("lr", "max_num_epochs", "batch_size", "energy_weight", "forces_weight", "ema",
            "ema_decay", "seed", "device", "default_dtype", "lora_rank", "lora_alpha",
            "num_samples_pt", "subselect_pt", "clip_grad", "weight_decay", "loss", "preset",
            "foundation_head")


def preset_settings(strategy: str, preset: str = SHORT_BUDGET) -> dict[str, Any]:
    """The settings a run of ``strategy`` starts from under ``preset`` (one of
    :data:`PRESETS`): its defaults, with the study protocol's values over them.

    Raises
    ------
    StrategyError
        For an unknown strategy or preset.
    """
    strat = get_strategy(strategy)
    if preset not in PRESETS:
        raise StrategyError(f"unknown settings preset {preset!r}; choose from "
                            f"{', '.join(PRESETS)}")
    out = {**strat.defaults, "default_dtype": "float32", "preset": preset}
    if preset == STUDY_PROTOCOL:
        out.update(STUDY_COMMON)
        out.update(STUDY_PER_METHOD[strat.name])
    return out


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise StrategyError(f"unknown strategy {name!r}; choose from "
                            f"{', '.join(STRATEGIES)}") from None


@dataclass
class RunSpec:
    """Everything a run needs: strategy, data, E0s and hyperparameters."""

    strategy: str
    foundation_model: str          # file path of the foundation model
    train_file: str
    valid_file: str | None = None
    test_file: str | None = None
    e0s: str = "estimated"         # method name, a mace dict string or a JSON file
    replay_file: str | None = None
    name: str = "run"
    settings: dict[str, Any] = field(default_factory=dict)
    #: isolated-atom energies of the reference method: the anchor of fitted E0s
    isolated_file: str | None = None
    #: the learning-rate pilot behind ``settings["lr"]`` (:meth:`TuneResult.record`), if any
    tuning: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolved_settings(spec: RunSpec) -> dict[str, Any]:
    """A run's settings: its preset's (``settings["preset"]``, default the short budget),
    then the ones the run sets itself."""
    unknown = set(spec.settings) - set(EDITABLE)
    if unknown:
        raise StrategyError(f"unknown settings: {', '.join(sorted(unknown))}")
    out = preset_settings(spec.strategy, spec.settings.get("preset") or SHORT_BUDGET)
    out.setdefault("device", _default_device())
    out.update(spec.settings)
    out["preset"] = out.get("preset") or SHORT_BUDGET
    return out


def _default_device() -> str:
    try:
        import torch  # heavy: only when a run's device is chosen

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


def _scratch_architecture(model_path: str) -> dict[str, Any]:
    import mace  # noqa: F401  # heavy: only for a from-scratch run's architecture
    import torch
    from mace.tools.scripts_utils import extract_config_mace_model

    with model_turn():  # unpickling traces code with torch.fx, process-wide
        net = torch.load(model_path, map_location="cpu", weights_only=False)
        cfg = extract_config_mace_model(net)
    if "error" in cfg:
        raise StrategyError(f"cannot read the architecture of {model_path}: {cfg['error']}")
    return {
        "model": "ScaleShiftMACE" if type(net).__name__ == "ScaleShiftMACE" else "MACE",
        "r_max": float(cfg["r_max"]),
        "num_radial_basis": int(cfg["num_bessel"]),
        "num_cutoff_basis": int(cfg["num_polynomial_cutoff"]),
        "max_ell": int(cfg["max_ell"]),
        "num_interactions": int(cfg["num_interactions"]),
        "hidden_irreps": str(cfg["hidden_irreps"]),
        "MLP_irreps": str(cfg["MLP_irreps"]),
        "correlation": int(cfg["correlation"]),
    }


def build_config(spec: RunSpec, work_dir: str | Path, *, check_device: bool = True
                 ) -> dict[str, Any]:
    """The ``mace_run_train`` options of a run (keys are option names without ``--``).

    ``check_device=False`` skips checking that a CUDA run has a GPU here (for runs that
    execute elsewhere, e.g. on a SLURM cluster).

    Raises
    ------
    StrategyError
        For settings that would train nothing or that mace would silently change.
    """
    strat = get_strategy(spec.strategy)
    s = resolved_settings(spec)
    _check_files(strat, spec)
    epochs, batch, seed = _checked_settings(strat, s, check_device=check_device)
    cfg = _common_options(spec, s, work_dir, epochs=epochs, batch=batch, seed=seed)
    cfg.update(_strategy_options(strat, spec, s))
    return cfg


def _check_files(strat: Strategy, spec: RunSpec) -> None:
    """Refuse a missing training file, and a multihead run without a replay file or with
    ``average`` E0s."""
    if not Path(spec.train_file).is_file():
        raise StrategyError(f"training file not found: {spec.train_file}")
    if strat.multihead:
        if not spec.replay_file:
            raise StrategyError(f"{strat.title} needs a replay file (pretraining "
                                "configurations for the pt_head); without one mace would "
                                "silently fall back to single-head training")
        if not Path(spec.replay_file).is_file():
            from .replay_sets import missing_message, official_set_of

            official = official_set_of(spec.replay_file)
            raise StrategyError(missing_message(official) if official is not None
                                else f"replay file not found: {spec.replay_file}")
        if str(spec.e0s).lower() == "average":
            raise StrategyError("'average' E0s cannot be used with multihead fine-tuning "
                                "(mace refuses them); use 'estimated' or explicit values")


def _positive(s: dict[str, Any], key: str, allow_zero: bool = False) -> None:
    """Refuse ``s[key]`` unless it is a finite number > 0 (``>= 0`` with ``allow_zero``)."""
    bound = ">= 0" if allow_zero else "> 0"
    try:
        v = float(s[key])
    except (TypeError, ValueError):
        v = float("nan")
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise StrategyError(f"{key} must be a finite number {bound}, not {s[key]!r}")


def _checked_settings(strat: Strategy, s: dict[str, Any], *, check_device: bool
                      ) -> tuple[int, int, int]:
    """Refuse settings that would train nothing or that mace would silently change; the
    epochs, batch size and seed as whole numbers."""
    freeze = strat.options.get("freeze")
    if freeze is not None and freeze >= 7:
        raise StrategyError("freezing every block trains nothing")
    _positive(s, "lr")
    _positive(s, "energy_weight", allow_zero=True)
    _positive(s, "forces_weight", allow_zero=True)
    if strat.lora:
        _positive(s, "lora_alpha")
    if strat.multihead and int(s.get("num_samples_pt") or 0) < 1:
        raise StrategyError("the number of replay samples must be at least 1")
    if strat.multihead and s.get("subselect_pt") not in REPLAY_METHODS:
        raise StrategyError(f"the replay selection must be one of {', '.join(REPLAY_METHODS)}, "
                            f"not {s.get('subselect_pt')!r}")
    epochs, batch = _whole(s, "max_num_epochs", "epochs"), _whole(s, "batch_size", "batch size")
    if epochs < 1 or batch < 1:
        raise StrategyError("epochs and batch size must be at least 1")
    seed = _whole(s, "seed", "seed")
    if not 0 <= seed <= MAX_SEED:
        raise StrategyError(f"the seed must be a whole number from 0 to {MAX_SEED} (what numpy, "
                            f"torch and mace accept), not {s['seed']!r}")
    if (strat.lora) and int(s.get("lora_rank", 0)) < 1:
        raise StrategyError("the LoRA rank must be at least 1")
    if s["default_dtype"] not in ("float32", "float64"):
        raise StrategyError(f"precision must be float32 or float64, not {s['default_dtype']!r}")
    if s.get("ema"):
        try:
            decay = float(s["ema_decay"])
        except (TypeError, ValueError):
            decay = float("nan")
        if not 0.0 < decay < 1.0:
            raise StrategyError(f"the EMA decay must lie between 0 and 1, not {s['ema_decay']!r}")
    _positive(s, "weight_decay", allow_zero=True)
    if s.get("clip_grad") is not None:
        _positive(s, "clip_grad")
    if s.get("loss") not in LOSSES:
        raise StrategyError(f"the loss must be one of {', '.join(LOSSES)}, not {s.get('loss')!r}")
    if s["device"] not in ("cpu", "cuda"):
        raise StrategyError(f"device must be 'cpu' or 'cuda', not {s['device']!r}")
    if check_device and s["device"] == "cuda" and _default_device() != "cuda":
        raise StrategyError("device 'cuda' was asked for, but torch sees no GPU here")
    return epochs, batch, seed


def _common_options(spec: RunSpec, s: dict[str, Any], work_dir: str | Path, *, epochs: int,
                    batch: int, seed: int) -> dict[str, Any]:
    """The options every run has: its files, E0s, label keys and training settings."""
    cfg: dict[str, Any] = {
        "name": spec.name,
        "work_dir": str(work_dir),
        "train_file": spec.train_file,
        "E0s": str(spec.e0s),
        "lr": float(s["lr"]),
        "max_num_epochs": epochs,
        "batch_size": batch,
        "valid_batch_size": batch,
        "energy_weight": float(s["energy_weight"]),
        "forces_weight": float(s["forces_weight"]),
        "seed": seed,
        "device": s["device"],
        "default_dtype": s["default_dtype"],
        "loss": s["loss"],
        "weight_decay": float(s["weight_decay"]),
        **mace_keys(spec),
        "eval_interval": 1,
        "error_table": "PerAtomRMSE",
        "save_cpu": True,
        "restart_latest": True,
    }
    if s.get("clip_grad") is not None:
        cfg["clip_grad"] = float(s["clip_grad"])
    if s.get("ema"):
        cfg["ema"] = True
        cfg["ema_decay"] = float(s["ema_decay"])
    if spec.valid_file:
        cfg["valid_file"] = spec.valid_file
    else:
        cfg["valid_fraction"] = 0.1
    if spec.test_file:
        cfg["test_file"] = spec.test_file
    return cfg


def _strategy_options(strat: Strategy, spec: RunSpec, s: dict[str, Any]) -> dict[str, Any]:
    """The options of the strategy: the foundation model (or, from scratch, its
    architecture), the strategy's own options, LoRA and replay."""
    cfg: dict[str, Any] = {}
    if strat.from_scratch:
        cfg.update(_scratch_architecture(spec.foundation_model))
    else:
        cfg["foundation_model"] = spec.foundation_model
        if s.get("foundation_head"):  # a multi-head foundation model: the head to start from
            cfg["foundation_head"] = str(s["foundation_head"])
        cfg.update(strat.options)
        if not strat.multihead:
            cfg["foundation_model_elements"] = True
    if strat.lora:
        cfg.update(lora=True, lora_rank=int(s["lora_rank"]), lora_alpha=float(s["lora_alpha"]))
    if strat.multihead:
        cfg.update(pt_train_file=spec.replay_file, num_samples_pt=int(s["num_samples_pt"]),
                   subselect_pt=s["subselect_pt"])
    return cfg


#: Largest seed a run accepts: numpy's ``np.random.seed`` (which mace calls) takes
#: 0 <= seed < 2**32.
MAX_SEED = 2**32 - 1


def _whole(settings: dict[str, Any], key: str, what: str) -> int:
    """``settings[key]`` as a whole number, or :class:`StrategyError` naming ``what``."""
    v = settings[key]
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    try:
        f = float(v)
        if isinstance(v, bool) or not f.is_integer():
            raise ValueError
        return int(f)
    except (TypeError, ValueError, OverflowError):
        raise StrategyError(f"the {what} must be a whole number, not {v!r}") from None


def mace_keys(spec: RunSpec) -> dict[str, str]:
    """The ``energy_key``, ``forces_key`` and ``stress_key`` options that make
    ``mace_run_train`` read the labels of a run's files, detected as validation detects them
    (a plain ``energy=``/``forces`` in the file is read by mace as ``energy``/``forces``).

    mace reads the training, validation and test files (and the replay file of a multihead
    run with real labels, unless it is one of mace's own sets) with the same keys, so files
    that name a label differently are refused.

    Raises
    ------
    StrategyError
        When two files hold the same quantity under different keys.
    DataError
        When a file cannot be read.
    """
    # late: the data module brings numpy and ase, which the command line's start does without
    from .data import CANONICAL, file_label_keys, mace_key_options

    strat = get_strategy(spec.strategy)
    files = [("training", spec.train_file), ("validation", spec.valid_file),
             ("test", spec.test_file)]
    from .replay_sets import official_set_of

    # mace reads its own replay sets with their own keys (energy, forces, stress)
    if strat.multihead and not strat.options.get("pseudolabel_replay") and \
            official_set_of(spec.replay_file) is None:
        files.append(("replay", spec.replay_file))
    chosen: dict[str, tuple[str, str, str]] = {}
    for role, path in files:
        if not path:
            continue
        keys = file_label_keys(path)
        options = mace_key_options(keys)
        for q in ("energy", "forces", "stress"):
            if getattr(keys, q) is None:
                continue
            key = options[f"{q}_key"]
            if q not in chosen:
                chosen[q] = (key, role, path)
            elif chosen[q][0] != key:
                key0, role0, path0 = chosen[q]
                raise StrategyError(
                    f"the {role} file {Path(path).name} holds its {q} labels under '{key}', the "
                    f"{role0} file {Path(path0).name} under '{key0}'; mace reads every file of "
                    f"a run with the same keys: name the {q} labels the same way in both "
                    f"(e.g. {CANONICAL[q]})")
    return {f"{q}_key": chosen[q][0] if q in chosen else CANONICAL[q]
            for q in ("energy", "forces", "stress")}


def config_yaml(cfg: dict[str, Any]) -> str:
    """The configuration as the YAML file ``mace_run_train --config`` reads."""
    import yaml  # tens of ms to import: only when a configuration is written, not at start-up

    return yaml.safe_dump(cfg, sort_keys=False)


def command_line(cfg: dict[str, Any], python: str | None = None) -> list[str]:
    """The equivalent ``mace_run_train`` command line (one ``--key=value`` per option)."""
    args = [python or sys.executable, "-m", "mace.cli.run_train"]
    for k, v in cfg.items():
        if v is True and k in ("ema", "save_cpu", "restart_latest"):
            args.append(f"--{k}")
        else:
            args.append(f"--{k}={v}")
    return args


def shell_command(cfg: dict[str, Any]) -> str:
    """A command line a user can paste into a shell."""
    return shlex.join(["mace_run_train"] + command_line(cfg)[3:])
