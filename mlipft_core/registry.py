"""Foundation-model registry: official MACE models, the bundled demo models and local files.

Official models are fetched through mace-torch's own loaders (``mace_mp``, ``mace_off``,
``mace_omol``) into mace's cache (``$XDG_CACHE_HOME/mace`` or ``~/.cache/mace``). Where the
download is impossible (no internet), :class:`~mlipft_core.errors.ModelNotAvailableError`
names the file that is missing and where a copy can be put by hand.

Model files are Python pickles: loading one runs code from the file. Official models (from
mace's download addresses) and the bundled demo models are trusted; any other file is loaded
only when the caller passes ``trusted=True`` after the user confirmed it.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import urllib.error
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .demo import DEMO_MODEL_NAMES, sample_data_dir
from .errors import (
    DeviceError,
    HeadError,
    ModelLoadError,
    ModelNotAvailableError,
    UnknownModelError,
    UntrustedModelError,
    os_error_words,
)
from .modelwork import model_turn
from .official_models import OFFICIAL_MODELS
from .workspace import Workspace, atomic_write_json, cached_sha256, read_json

if TYPE_CHECKING:
    import torch

SAMPLE_DATA = sample_data_dir()
DEMO_MANIFEST = SAMPLE_DATA / "manifest.json"

Source = Literal["official", "demo", "local"]


@dataclass(frozen=True)
class ModelSpec:
    """What a user chooses a foundation model by.

    Attributes
    ----------
    name
        Registry name (``mace-mp-0-medium``, ``demo-gfn1-strong``, ...) or the file path of a
        local model.
    source
        ``official`` (mace's loaders), ``demo`` (bundled) or ``local`` (a file of the user's).
    loader, loader_key
        The mace-torch loader function and the key it takes (official models only).
    """

    name: str
    display_name: str
    source: Source
    training_data: str = ""
    level_of_theory: str = ""
    n_elements: int | None = None
    elements_note: str = ""
    parameter_count: int | None = None
    file_size_mb: float | None = None
    heads: tuple[str, ...] | None = None
    license: str = ""
    reference: str = ""
    loader: str | None = None
    loader_key: str | None = None
    url: str | None = None
    cache_filename: str | None = None
    path: str | None = None
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["heads"] = list(self.heads) if self.heads else None
        return d


def mace_cache_dir() -> Path:
    """mace's own model cache folder (``$XDG_CACHE_HOME/mace`` or ``~/.cache/mace``).

    The rule of mace's ``mace.tools.utils.get_cache_dir``, without importing mace (and with
    it torch, seconds): resolving a model name or path needs no torch.
    """
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mace"


def expected_path(spec: ModelSpec) -> Path:
    """The file the model is read from: the cache file for official models."""
    if spec.source == "official":
        return mace_cache_dir() / str(spec.cache_filename)
    return Path(str(spec.path))


def is_available(spec: ModelSpec) -> bool:
    """Whether the model can be loaded without a download."""
    return expected_path(spec).is_file()


def _demo_specs() -> list[ModelSpec]:
    manifest: dict[str, Any] = {}
    if DEMO_MANIFEST.exists():
        manifest = json.loads(DEMO_MANIFEST.read_text())
    specs = []
    descr = {
        "demo-gfn1-weak": "weak demo model: 16 channels, 500 corpus configurations, few epochs",
        "demo-gfn1-strong": "strong demo model: 32 channels, the whole corpus",
    }
    for name in DEMO_MODEL_NAMES:
        path = SAMPLE_DATA / "models" / f"{name}.model"
        info = manifest.get("models", {}).get(name, {})
        size = path.stat().st_size / 1e6 if path.exists() else None
        specs.append(ModelSpec(
            name=name, display_name=f"Demo {name.rsplit('-', 1)[-1]} (GFN1-xTB)", source="demo",
            training_data="bundled GFN1-xTB corpus: organic molecules, water clusters and "
                          "boxes, X-...CH3Y complexes",
            level_of_theory="GFN1-xTB (tblite)", n_elements=6,
            elements_note="H, C, N, O, F, Cl", parameter_count=info.get("parameter_count"),
            file_size_mb=round(size, 2) if size else None, heads=("Default",),
            license="same as this workbench", reference="sample_data/manifest.json",
            path=str(path), notes=descr[name],
        ))
    return specs


def list_models() -> list[ModelSpec]:
    """All registry entries: official models, then the demo models."""
    return [ModelSpec(source="official", **m) for m in OFFICIAL_MODELS] + _demo_specs()


def get_spec(name: str) -> ModelSpec | None:
    """The registry entry called ``name`` (case-insensitive), or ``None``."""
    for spec in list_models():
        if spec.name.lower() == name.lower():
            return spec
    return None


def local_spec(path: str | Path) -> ModelSpec:
    p = Path(path).expanduser().resolve()
    return ModelSpec(name=str(p), display_name=p.name, source="local", path=str(p),
                     file_size_mb=round(p.stat().st_size / 1e6, 2) if p.exists() else None,
                     notes="local model file (a pickle: load only files you trust)")


def resolve(model: str | Path) -> ModelSpec:
    """Registry entry for a name, or a local spec for an existing file path."""
    spec = get_spec(str(model))
    if spec is not None:
        return spec
    try:
        p = Path(str(model)).expanduser()
        is_file, is_dir = p.is_file(), p.is_dir()
    except (OSError, ValueError):  # a NUL byte, a path too long
        raise UnknownModelError(f"{str(model)!r} is not a usable model name or path") from None
    if is_dir:
        raise UnknownModelError(f"{p} is a folder, not a model file: give the path of a "
                                ".model file (or a registry name, see 'mlipft models')")
    if is_file:
        # a file in mace's cache with an official name is that official model, and the
        # bundled demo files are the demo models
        for known in list_models():
            if is_available(known) and expected_path(known).resolve() == p.resolve():
                return known
        return local_spec(p)
    if p.suffix == ".model" or os.sep in str(model):
        raise UnknownModelError(f"model file not found: {p}")
    names = ", ".join(s.name for s in list_models())
    raise UnknownModelError(f"unknown model {str(model)!r}: use a registry name ({names}) "
                            "or the path of a .model file")


def fetch(spec: ModelSpec) -> Path:
    """Return the local file of a model, downloading official models through mace.

    Raises
    ------
    ModelNotAvailableError
        The official model is not cached and mace's download failed.
    UnknownModelError
        A demo or local file is missing.
    """
    path = expected_path(spec)
    if path.is_file():
        return path
    if spec.source != "official":
        if path.is_dir():
            raise UnknownModelError(f"{path} is a folder, not a model file: give the path of "
                                    "a .model file")
        raise UnknownModelError(f"model file not found: {path}")
    try:
        if spec.loader == "mace_mp":  # mace: heavy, only for a download
            from mace.calculators.foundations_models import download_mace_mp_checkpoint

            got = Path(download_mace_mp_checkpoint(spec.loader_key))
        else:
            import mace.calculators.foundations_models as fm

            getattr(fm, str(spec.loader))(model=spec.loader_key, device="cpu",
                                          return_raw_model=True)
            got = path
    except Exception as exc:  # network errors come in many types
        raise ModelNotAvailableError(
            f"{spec.display_name} is not in mace's cache and could not be downloaded "
            f"({download_failure_words(exc)}). Missing file: {path}. Without internet, "
            f"download {spec.url} on another machine and copy it to {path}.",
            missing_file=str(path), url=spec.url,
        ) from exc
    if not got.is_file():
        raise ModelNotAvailableError(
            f"{spec.display_name}: mace's loader returned no file; expected {path}.",
            missing_file=str(path), url=spec.url)
    return got


def model_path(model: str | Path, *, trusted: bool = False, download: bool = True) -> Path:
    """Resolve a registry name or path to a loadable file, enforcing the trust rule.

    Parameters
    ----------
    model
        Registry name or file path.
    trusted
        Must be ``True`` for local files that are not official or demo models.
    download
        Whether an official model that is not cached may be downloaded.
    """
    spec = resolve(model)
    if spec.source == "local" and not trusted:
        raise UntrustedModelError(
            f"{spec.path} is a local model file. Model files are Python pickles that can run "
            "code when loaded: confirm that you trust it (the 'I trust this file' box in the "
            "app; on the command line, naming the path is that confirmation).")
    if not download and spec.source == "official" and not is_available(spec):
        raise ModelNotAvailableError(
            f"{spec.display_name} is not in mace's cache: missing file {expected_path(spec)}.",
            missing_file=str(expected_path(spec)), url=spec.url)
    return fetch(spec)


def load_model(model: str | Path, *, device: str = "cpu", trusted: bool = False):
    """Load a MACE model (``torch.nn.Module``) in evaluation mode.

    Raises
    ------
    UntrustedModelError, ModelNotAvailableError, UnknownModelError, ModelLoadError
    """
    import torch  # heavy: only when a model is loaded

    path = model_path(model, trusted=trusted)
    check_device(device)
    try:
        with model_turn():  # unpickling traces code with torch.fx, process-wide
            net = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:
        raise ModelLoadError(f"{path} {load_failure_words(exc)}") from exc
    if not isinstance(net, torch.nn.Module) or not hasattr(net, "atomic_numbers"):
        found = "a dictionary" if isinstance(net, dict) else \
            "a PyTorch module of another kind" if isinstance(net, torch.nn.Module) else \
            f"a saved {type(net).__name__} object"
        raise ModelLoadError(f"{path} does not hold a MACE model (it holds {found}): give a "
                             "MACE .model file, not a checkpoint or weights file")
    net.eval()
    return net


def check_device(device: str | None) -> None:
    """:class:`~mlipft_core.errors.DeviceError` when ``device`` asks for a CUDA GPU and this
    machine has none."""
    if device is None or not str(device).startswith("cuda"):
        return
    import torch  # heavy: only when a GPU is asked for

    if not torch.cuda.is_available():
        raise DeviceError(f"--device {device} was asked for, but this machine has no CUDA GPU "
                          "(torch sees none): use --device cpu, or leave --device out")


def load_failure_words(exc: BaseException) -> str:
    """Why a model file could not be loaded, in words (completing "<file> ...")."""
    text = str(exc)
    if isinstance(exc, (pickle.UnpicklingError, EOFError, UnicodeDecodeError)) or \
            "invalid load key" in text:
        return ("is not a MACE model file (not a saved PyTorch model): give a .model file "
                "written by mace")
    if "PytorchStreamReader" in text or "central directory" in text or \
            isinstance(exc, zipfile.BadZipFile):
        return ("is damaged or incomplete (not a whole PyTorch file; was the copy cut "
                "short?): copy or download the file again")
    if isinstance(exc, (ModuleNotFoundError, ImportError)):
        name = getattr(exc, "name", None) or text
        return (f"needs the Python module {name}, which is not installed here: it was saved "
                "by other software than this workbench's mace-torch")
    if isinstance(exc, AttributeError):
        return ("was saved by a version of mace (or torch) whose classes differ from the "
                "installed one: re-save it with this version, or use another model file")
    if "CUDA" in text and "is_available() is False" in text:
        return "was saved on a GPU and this machine has no CUDA GPU: load it with --device cpu"
    if isinstance(exc, MemoryError):
        return "is too large to load in the memory of this machine"
    if isinstance(exc, OSError):
        words = os_error_words(exc)
        return f"cannot be read ({words[0] if words else exc.strerror or text})"
    first = text.splitlines()[0][:200] if text else "no reason given"
    return f"could not be loaded as a MACE model ({first})"


def download_failure_words(exc: BaseException) -> str:
    """Why a model download failed, in words."""
    reason = getattr(exc, "reason", None)
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered {exc.code} {exc.reason}"
    if isinstance(exc, (TimeoutError, socket.timeout)) or isinstance(reason, socket.timeout):
        return "the download timed out"
    if isinstance(exc, (urllib.error.URLError, ConnectionError, socket.gaierror)) or \
            isinstance(reason, (OSError, ConnectionError)):
        return "no network connection"
    if isinstance(exc, OSError):
        words = os_error_words(exc)
        return f"it could not be saved: {words[0] if words else exc.strerror or exc}"
    first = str(exc).splitlines()[0][:200] if str(exc) else "no reason given"
    return f"the download failed: {first}"


@dataclass
class ModelInfo:
    """What inspecting a model shows."""

    path: str
    model_class: str
    elements: list[str]
    heads: list[str]
    e0s: dict[str, dict[str, float]]  # head -> element -> eV
    cutoff: float
    num_interactions: int
    channels: int
    max_L: int
    hidden_irreps: str
    correlation: int | None
    max_ell: int | None
    parameter_count: int
    dtype: str
    file_size_mb: float
    architecture: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def net_heads(net: torch.nn.Module) -> list[str]:
    """Head names of a loaded MACE model (``["Default"]`` for single-head models). For a
    model file, :func:`mlipft_core.compare.file_heads`; for every head of several models,
    :func:`mlipft_core.analysis.heads_of_models`."""
    heads = getattr(net, "heads", None)
    return list(heads) if heads else ["Default"]


def model_e0s(net) -> dict[str, dict[str, float]]:
    """E0s of a loaded model: head -> element -> eV (heads sharing one table repeat it)."""
    # numpy and ase only with a loaded model: the command line starts without them
    import numpy as np
    from ase.data import chemical_symbols

    table = np.atleast_2d(net.atomic_energies_fn.atomic_energies.detach().cpu().numpy())
    elements = [chemical_symbols[int(z)] for z in net.atomic_numbers]
    return {h: {el: float(table[min(i, len(table) - 1)][j]) for j, el in enumerate(elements)}
            for i, h in enumerate(net_heads(net))}


def check_head(net, head: str | None) -> str:
    """Return a valid head name (the first head when ``None``)."""
    heads = net_heads(net)
    if head is None:
        return heads[0]
    if head not in heads:
        raise HeadError(f"model has no head {head!r}; its heads are: {', '.join(heads)}")
    return head


def inspect_model(model: str | Path, *, trusted: bool = False) -> ModelInfo:
    """Elements, heads, E0s per head, cutoff, channels, L, interactions, parameter count."""
    import mace  # noqa: F401  (sets torch's pickle settings before e3nn loads its constants)

    path = model_path(model, trusted=trusted)
    with model_turn():
        net = load_model(path, trusted=True)
        return _model_info(path, net)


def _model_info(path: Path, net) -> ModelInfo:
    """:class:`ModelInfo` of a loaded model (heavy imports wait until a model is inspected)."""
    # ase and e3nn only with a loaded model: the command line starts without them
    from ase.data import chemical_symbols
    from e3nn import o3

    zs = [int(z) for z in net.atomic_numbers]
    elements = [chemical_symbols[z] for z in zs]
    heads = net_heads(net)
    e0s = model_e0s(net)
    hidden = o3.Irreps(str(net.products[0].linear.irreps_out))
    arch: dict[str, Any] = {}
    try:
        from mace.tools.scripts_utils import extract_config_mace_model  # heavy: mace

        cfg = extract_config_mace_model(net)
        arch = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                for k, v in cfg.items() if k not in ("atomic_energies", "atomic_numbers")}
    except Exception:  # not a ScaleShiftMACE: the basic facts below still hold
        arch = {}
    return ModelInfo(
        path=str(path),
        model_class=type(net).__name__,
        elements=elements,
        heads=heads,
        e0s=e0s,
        cutoff=float(net.r_max),
        num_interactions=int(net.num_interactions),
        channels=int(hidden.count("0e")),
        max_L=int(hidden.lmax),
        hidden_irreps=str(hidden),
        correlation=arch.get("correlation"),
        max_ell=arch.get("max_ell"),
        parameter_count=int(sum(p.numel() for p in net.parameters())),
        dtype=str(next(net.parameters()).dtype).replace("torch.", ""),
        file_size_mb=round(Path(path).stat().st_size / 1e6, 3),
        architecture=arch,
    )


def inspect_cached(model: str | Path, *, workspace=None, trusted: bool = False) -> ModelInfo:
    """:func:`inspect_model`, kept in the workspace by the SHA-256 of the model file.

    A second look (another page, a restarted server) reads a small JSON file instead of
    importing torch and unpickling the model; a changed file is inspected afresh.
    """
    path = model_path(model, trusted=trusted)
    ws = workspace or Workspace()
    cache = ws.cache / "inspect" / f"{cached_sha256(path)[:20]}.json"
    saved = read_json(cache)
    if isinstance(saved, dict):
        try:
            return ModelInfo(**{**saved, "path": str(path)})
        except TypeError:  # written by another version: inspect afresh
            pass
    info = inspect_model(path, trusted=True)
    atomic_write_json(cache, info.to_dict())
    return info
