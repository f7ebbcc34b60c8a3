"""Where the bundled demo files are."""

from __future__ import annotations

from pathlib import Path

from ..serve import APP_FOLDER

#: Demo dataset name -> (file relative to ``sample_data/``, description).
DEMO_DATASETS: dict[str, tuple[str, str]] = {
    "pretrain_train": ("pretrain/train.xyz", "pretraining corpus (GFN1-xTB), training part"),
    "pretrain_test": ("pretrain/test.xyz",
                      "pretraining corpus (GFN1-xTB), held out: the forgetting benchmark"),
    "replay_pool": ("pretrain/replay_pool.xyz", "pretraining corpus (GFN1-xTB), replay pool"),
    "short_range_test": ("pretrain/short_range_test.xyz",
                         "compressed structures (GFN1-xTB), held out: the short-range probe"),
    "pretrain_isolated_atoms": ("pretrain/isolated_atoms.xyz",
                                "GFN1-xTB isolated-atom energies"),
    "sn2_train": ("sn2/train.xyz", "SN2 X- + CH3Y target (B3LYP/def2-SVPD), train"),
    "sn2_valid": ("sn2/valid.xyz", "SN2 target, validation"),
    "sn2_test": ("sn2/test.xyz", "SN2 target, test"),
    "sn2_scan": ("sn2/scan.xyz", "SN2 target: ordered reaction-path scan of F- + CH3Cl"),
    "sn2_isolated_atoms": ("sn2/isolated_atoms.xyz",
                           "B3LYP/def2-SVPD isolated-atom energies (H, C, F, Cl)"),
    "water_train": ("water/train.xyz", "liquid water, 32-molecule boxes (GFN2-xTB), train"),
    "water_test": ("water/test.xyz", "liquid water (GFN2-xTB), test"),
}


#: The bundled demo models, weaker first (files ``sample_data/models/<name>.model``).
DEMO_MODEL_NAMES = ("demo-gfn1-weak", "demo-gfn1-strong")

#: The folder the demo world is in, in a checkout and in an installed app.
SAMPLE_DATA_FOLDER = "sample_data"


def sample_data_dir() -> Path:
    """The ``sample_data/`` folder shipped with the workbench (the demo world).

    Returns
    -------
    Path
        In a checkout, ``sample_data/`` at its top, beside ``mlipft_core/``. An installed
        wheel holds it as ``mlipft_app/sample_data/`` beside ``mlipft_core/`` (the app's
        folder, :data:`mlipft_core.serve.APP_FOLDER`; see ``pyproject.toml``): that one when
        the checkout's is not there. When neither is there, the checkout's path, so that a
        message names where the demo world belongs.
    """
    base = Path(__file__).resolve().parents[2]
    checkout = base / SAMPLE_DATA_FOLDER
    installed = base / APP_FOLDER / SAMPLE_DATA_FOLDER
    return installed if not checkout.is_dir() and installed.is_dir() else checkout


def demo_paths() -> dict[str, object]:
    """Absolute paths of the demo files and models (``models``: name -> path, weaker first)."""
    root = sample_data_dir()
    out: dict[str, object] = {k: str(root / rel) for k, (rel, _) in DEMO_DATASETS.items()}
    out["models"] = {name: str(root / "models" / f"{name}.model") for name in DEMO_MODEL_NAMES}
    out["manifest"] = str(root / "manifest.json")
    return out


def _companion(data_file: str | Path | None, folders: tuple[str, ...], name: str) -> str | None:
    """``sample_data/<folder>/<name>`` when ``data_file`` lies in one of the demo ``folders``
    and that file exists, else ``None``."""
    if not data_file:
        return None
    root = sample_data_dir()
    try:
        parent = Path(data_file).resolve().parent
    except OSError:
        return None
    for folder in folders:
        if parent == (root / folder).resolve() and (root / folder / name).is_file():
            return str(root / folder / name)
    return None


def isolated_file_for(train_file: str | Path | None) -> str | None:
    """The bundled isolated-atom energies of the reference method of a demo training file
    (the anchor of fitted E0s), or ``None`` for any other file."""
    return _companion(train_file, ("sn2", "pretrain"), "isolated_atoms.xyz")


def short_range_test_for(pretrain_file: str | Path | None) -> str | None:
    """The bundled held-out short-range structures that go with a demo pretraining file (same
    level of theory, GFN1-xTB), or ``None`` for any other file."""
    return _companion(pretrain_file, ("pretrain",), "short_range_test.xyz")


def collapse_budgets() -> dict | None:
    """What the demo world shows of finding 6 at each training budget, as
    ``bench/collapse_budget.py --write`` measured it (``sample_data/collapse_budgets.json``);
    ``None`` when the file is missing or damaged."""
    import json

    try:
        return json.loads((sample_data_dir() / "collapse_budgets.json").read_text())
    except (OSError, ValueError):
        return None
