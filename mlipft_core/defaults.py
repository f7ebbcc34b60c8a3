"""What the workbench uses where the user names nothing: the bundled demo world's companions
of its own models and data, and the study's inputs with their defaults.

A demo registry model replays the bundled pretraining pool, demo training data is anchored
by the bundled isolated atoms of its reference method, a demo pretraining test set comes with
its held-out short-range structures, and a study without a model runs on the demo world.
Files of any other origin get no companion: the user names them.

Every function that resolves a model takes ``trust``, called with each model the user named
just before it is resolved: ``True`` where the user vouches for a local model file (a pickle
that can run code when loaded). The command line trusts the paths typed on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .demo import demo_paths, isolated_file_for, short_range_test_for
from .jobs import parse_list
from .registry import DEMO_MODEL_NAMES, get_spec, model_path
from .strategies import (
    COMMON_DEFAULTS,
    PRESETS,
    SHORT_BUDGET,
    STUDY_COMMON,
    STUDY_PROTOCOL,
    StrategyError,
)

if TYPE_CHECKING:
    from .study import StudyInputs

#: Called with a model (registry name or path) before it is resolved: whether the user
#: vouches for it, should it be a local model file.
TrustFn = Callable[[str], bool]


def never_trusted(model: str) -> bool:
    """The default trust: no local model file is trusted unless the user says so.

    Parameters
    ----------
    model
        Registry name or path of a model.

    Returns
    -------
    bool
        Always ``False``.
    """
    return False


def common_settings(preset: str = SHORT_BUDGET) -> dict[str, Any]:
    """The settings every strategy starts from under ``preset``, whatever its own: epochs,
    batch size, loss and its weights, weight decay, precision, EMA and seed
    (:data:`~mlipft_core.strategies.COMMON_DEFAULTS`, with the study protocol's
    :data:`~mlipft_core.strategies.STUDY_COMMON` over them under ``"study protocol"``).

    Returns
    -------
    dict
        Setting name -> the default value all strategies share (a new dict).

    Raises
    ------
    StrategyError
        For an unknown preset.
    """
    if preset not in PRESETS:
        raise StrategyError(f"unknown settings preset {preset!r}; choose from "
                            f"{', '.join(PRESETS)}")
    out = {**COMMON_DEFAULTS, "default_dtype": "float32"}
    if preset == STUDY_PROTOCOL:
        out.update(STUDY_COMMON)
    return out


def replay_file_for(model: str | None, head: str | None = None) -> str | None:
    """The replay file a model's multihead runs use when the user names none.

    Parameters
    ----------
    model
        Registry name or path of the foundation model.
    head
        The foundation head a multi-head model is fine-tuned from (its replay set follows it).

    Returns
    -------
    str or None
        The bundled replay pool (``sample_data/pretrain/replay_pool.xyz``) for a demo
        registry model, whose pretraining corpus it comes from; for an official model, the
        cache file of the replay set mace offers for it
        (:func:`~mlipft_core.replay_sets.replay_set_for`, cached or not); ``None`` for any
        other model.
    """
    from .replay_sets import replay_set_for

    spec = get_spec(model) if model else None
    if spec is not None and spec.name in DEMO_MODEL_NAMES:
        return str(demo_paths()["replay_pool"])
    rs = replay_set_for(model, head)
    return str(rs.path()) if rs is not None else None


def pretrain_test_for(model: str | None, head: str | None = None, *, demo: bool = True
                      ) -> str | None:
    """The held-out pretraining test set (forgetting) of a foundation model when the user
    names none: the demo world's for a demo model; for an official model (by name, or its
    file in mace's cache) whose replay set is cached, a forgetting set drawn from that set
    (:func:`~mlipft_core.replay_sets.forgetting_set`); else ``None`` (``demo=False``: for a
    demo model too)."""
    from .registry import expected_path, list_models
    from .replay_sets import forgetting_set, replay_set_for

    if not model:
        return None
    spec = get_spec(str(model))
    if spec is None:  # a path: an official model's cache file, a demo file, or the user's
        try:
            resolved = Path(str(model)).resolve()
        except OSError:
            return None
        spec = next((m for m in list_models() if m.source in ("official", "demo")
                     and expected_path(m).resolve() == resolved), None)
    if spec is None:
        return None
    if spec.name in DEMO_MODEL_NAMES:
        return str(demo_paths()["pretrain_test"]) if demo else None
    rs = replay_set_for(spec.name, head)
    return str(forgetting_set(rs)) if rs is not None and rs.is_cached() else None


def replay_or_default(replay: str | None, model: str | None, head: str | None = None
                      ) -> str | None:
    """``replay`` when given, else :func:`replay_file_for` the model.

    Parameters
    ----------
    replay
        The replay file the user named, or ``None``.
    model
        Registry name or path of the foundation model.

    Returns
    -------
    str or None
        The replay file of the runs.
    """
    return replay if replay is not None else replay_file_for(model, head)


def isolated_file_or_default(isolated_file: str | None, train_file: str | None) -> str | None:
    """The isolated-atom energies that anchor fitted E0s of a training file.

    Parameters
    ----------
    isolated_file
        The extxyz file of ``IsolatedAtom`` configurations the user named; empty or
        ``None`` for none.
    train_file
        The training data.

    Returns
    -------
    str or None
        ``isolated_file`` when given, else the bundled isolated atoms of a demo training
        file's reference method, else ``None``.
    """
    return isolated_file or isolated_file_for(train_file)


def _resolved(model: str | None, trust: TrustFn) -> str | None:
    """The loadable file of a model the user named (``None`` for none)."""
    return None if model is None else str(model_path(model, trusted=trust(model)))


def study_inputs(*, model: str | None = None, weak_model: str | None = None,
                 train: str | None = None, valid: str | None = None, test: str | None = None,
                 pretrain_test: str | None = None, replay: str | None = None,
                 isolated_file: str | None = None, short_range_test: str | None = None,
                 epochs: int | None = None, pilot_epochs: int | None = None,
                 small_size: int | None = None,
                 pilot_lrs: str | Sequence[float] | None = None,
                 strategies: Sequence[str] | None = None, executor: str | None = None,
                 slurm: dict[str, Any] | None = None, search_structures: int | None = None,
                 foundation_head: str | None = None,
                 trust: TrustFn = never_trusted) -> StudyInputs:
    """The inputs of a study, with the defaults filled in.

    Without ``model`` the study runs on the bundled demo world (strong and weak demo
    models, the SN2 target, the demo pretraining test and replay pool), with any given value
    in place of the demo's. With ``model``, ``train`` and ``test`` are needed; the isolated
    atoms and the short-range structures default to the bundled ones of demo files, and the
    rest to :class:`~mlipft_core.study.StudyInputs`' own defaults (20 epochs, 5-epoch
    pilots, 25 structures for the scratch-vs-fine-tune pair, every strategy; no validation,
    pretraining test or replay file).

    Parameters
    ----------
    model, weak_model
        Registry names or paths of the foundation model and of a weaker one (the
        FM-quality finding).
    train, valid, test
        Target training, validation and test extxyz files.
    pretrain_test
        Held-out pretraining test set (forgetting).
    replay, isolated_file
        Replay file of the multihead strategies; isolated-atom energies of the target's
        reference method (the E0 anchor).
    short_range_test
        Labelled compressed structures held out from pretraining (the short-range probe).
    epochs, pilot_epochs, small_size
        Epochs of the final runs and of each pilot run; training structures of the
        scratch-vs-fine-tune pair.
    pilot_lrs
        Pilot learning rates: a list, or text separated by commas (``"1e-3,3e-3"``);
        empty or ``None`` for five around each strategy's default.
    strategies
        The strategies to compare (``None``: all).
    executor, slurm
        Where the study's runs execute, and SLURM options.
    search_structures
        Random compact structures of the short-range finding's random structure search
        (default 40).
    foundation_head
        The head of a multi-head foundation model to fine-tune from (default: its first).
    trust
        Whether the user vouches for the models (see the module's description).

    Returns
    -------
    StudyInputs
        What the study runs on.

    Raises
    ------
    StudyError
        A model without the target's training or test file.
    StrategyError
        ``pilot_lrs`` that are not numbers.
    """
    # study: its analysis modules load only when a study is asked for
    from . import study

    given: dict[str, Any] = {
        "model": _resolved(model, trust), "weak_model": _resolved(weak_model, trust),
        "train": train, "valid": valid, "test": test, "pretrain_test": pretrain_test,
        "replay": replay, "isolated_file": isolated_file, "short_range_test": short_range_test,
        "epochs": epochs, "pilot_epochs": pilot_epochs, "small_size": small_size,
        "pilot_lrs": parse_list(pilot_lrs, float, "--lrs") or None,
        "strategies": None if strategies is None else list(strategies),
        "executor": executor, "slurm": slurm, "search_structures": search_structures,
        "foundation_head": foundation_head}
    if model is None:  # the bundled demo world
        return study.demo_inputs(**given)
    return _own_study(model, given, trust)


def _own_study(model: str, given: dict[str, Any], trust: TrustFn) -> StudyInputs:
    """:func:`study_inputs` of the user's own model: train and test given, the rest
    defaulted (the demo companions of demo files, an official model's own data)."""
    from . import study

    if not (given["train"] and given["test"]):
        raise study.StudyError("with --model, give --train and --test too (and --pretrain, "
                               "--replay for forgetting and replay)")
    given["isolated_file"] = isolated_file_or_default(given["isolated_file"], given["train"])
    given["short_range_test"] = (given["short_range_test"]
                                 or short_range_test_for(given["pretrain_test"]))
    given.update(official_study_defaults(model, given, trust))
    if not given.get("replay") and given["strategies"] is None:  # nothing to replay
        given["strategies"] = [s for s in study.FINE_TUNING if s not in study.REPLAY]
    files_left_out = {"valid": None, "pretrain_test": None, "replay": None}
    return study.StudyInputs(**{**files_left_out,
                                **{k: v for k, v in given.items() if v is not None}})


#: The weaker member of an official model's family, the default second model of the
#: foundation-quality finding (OMat-trained models beat the MPtrj-trained MACE-MP-0 family).
WEAKER_OF = {"mace-omat-0-small": "mace-mp-0-small", "mace-omat-0-medium": "mace-mp-0-medium",
             "mace-mpa-0-medium": "mace-mp-0-medium", "mace-mp-0-medium": "mace-mp-0-small",
             "mace-mp-0-large": "mace-mp-0-medium", "mace-mp-0b3-medium": "mace-mp-0-medium",
             "mace-matpes-pbe-0": "mace-mp-0-medium", "mace-mh-1": "mace-mh-0",
             "mace-off23-medium": "mace-off23-small", "mace-off23-large": "mace-off23-medium"}


def official_study_defaults(model: str, given: dict[str, Any], trust: TrustFn
                            ) -> dict[str, Any]:
    """What a study of an official model takes when the user names none: the replay set mace
    offers for it (when cached), a forgetting set drawn from that set, and the weaker member
    of its family (when cached). Each default left out for a reason (not cached) leaves its
    input empty; the study's findings then say which input would measure them."""
    from .registry import is_available
    from .replay_sets import forgetting_set, replay_set_for

    out: dict[str, Any] = {}
    rs = replay_set_for(model, given.get("foundation_head"))
    if rs is not None and rs.is_cached():
        if not given.get("replay"):
            out["replay"] = str(rs.path())
        if not given.get("pretrain_test"):
            out["pretrain_test"] = str(forgetting_set(rs))
    weaker = WEAKER_OF.get(str(model))
    if not given.get("weak_model") and weaker:
        spec = get_spec(weaker)
        if spec is not None and is_available(spec):
            out["weak_model"] = _resolved(weaker, trust)
    return out
