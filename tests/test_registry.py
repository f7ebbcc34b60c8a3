"""Foundation-model registry: metadata, offline errors, local files, the demo models."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mlipft_core import registry
from mlipft_core.errors import (
    ModelLoadError,
    ModelNotAvailableError,
    UnknownModelError,
    UntrustedModelError,
)


def test_official_metadata_matches_mace_loaders():
    import mace.calculators.foundations_models as fm

    official = [s for s in registry.list_models() if s.source == "official"]
    keys = {(s.loader, s.loader_key) for s in official}
    assert {("mace_mp", k) for k in fm.mace_mp_urls} <= keys
    assert {("mace_off", k) for k in fm.mace_off_urls} <= keys
    for s in official:
        assert s.training_data and s.level_of_theory and s.license and s.reference, s.name
        assert s.n_elements and s.url.startswith("https://")
        if s.loader == "mace_mp":
            assert s.url == fm.mace_mp_urls[s.loader_key]
            # mace keeps only letters, digits and '_' of the file name in its cache
            base = s.url.rsplit("/", 1)[-1]
            assert s.cache_filename == "".join(c for c in base if c.isalnum() or c == "_")
        elif s.loader == "mace_off":
            assert s.url == fm.mace_off_urls[s.loader_key]
            assert s.cache_filename == s.url.rsplit("/", 1)[-1]
    names = [s.name for s in registry.list_models()]
    assert len(names) == len(set(names))
    mh1 = registry.get_spec("mace-mh-1")
    assert mh1.heads and "omat_pbe" in mh1.heads
    assert registry.get_spec("MACE-MP-0-small").name == "mace-mp-0-small"


def test_offline_download_gives_typed_error_naming_the_file(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    spec = registry.get_spec("mace-mp-0-small")
    assert not registry.is_available(spec)
    with pytest.raises(ModelNotAvailableError) as e:
        registry.load_model("mace-mp-0-small")
    expected = tmp_path / "xdg-cache" / "mace" / "20231210mace128L0_energy_epoch249model"
    assert e.value.missing_file == str(expected)
    assert str(expected) in str(e.value) and spec.url in str(e.value)
    with pytest.raises(ModelNotAvailableError):
        registry.model_path("mace-off23-small", download=False)


def test_model_file_in_mace_cache_loads_like_the_official_one(strong_model, tmp_path):
    spec = registry.get_spec("mace-mp-0-small")
    target = registry.expected_path(spec)
    target.parent.mkdir(parents=True)
    shutil.copy(strong_model, target)
    assert registry.is_available(spec)
    info = registry.inspect_model("mace-mp-0-small")
    assert info.elements == ["H", "C", "N", "O", "F", "Cl"]
    # given by its cache path it is still recognised as the official model (trusted)
    assert registry.resolve(str(target)).name == "mace-mp-0-small"


def test_local_file_needs_trust(strong_model, tmp_path):
    local = tmp_path / "my_model.model"
    shutil.copy(strong_model, local)
    with pytest.raises(UntrustedModelError) as e:
        registry.load_model(local)
    assert "pickle" in str(e.value)
    net = registry.load_model(local, trusted=True)
    assert [int(z) for z in net.atomic_numbers] == [1, 6, 7, 8, 9, 17]
    with pytest.raises(UnknownModelError):
        registry.resolve(tmp_path / "nope.model")
    with pytest.raises(UnknownModelError) as e:
        registry.resolve("not-a-model-name")
    assert "demo-gfn1-strong" in str(e.value)
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(ModelLoadError):
        registry.load_model(junk, trusted=True)


def test_inspect_demo_models(demo):
    manifest = json.loads(Path(demo["manifest"]).read_text())
    weak = registry.inspect_model("demo-gfn1-weak")
    strong = registry.inspect_model("demo-gfn1-strong")
    for info in (weak, strong):
        assert info.elements == ["H", "C", "N", "O", "F", "Cl"]
        assert info.heads == ["Default"] and info.max_L == 0
        assert set(info.e0s["Default"]) == set(info.elements)
        assert info.model_class == "ScaleShiftMACE"
    assert weak.channels == 16 and strong.channels == 32
    assert weak.parameter_count < strong.parameter_count
    assert strong.cutoff == pytest.approx(5.0)
    # E0s are the GFN1-xTB isolated-atom energies the models were trained with
    iso = {a["symbol"]: a["energy"] for a in manifest["isolated_atoms"]["gfn1"]}
    for el, e in iso.items():
        assert strong.e0s["Default"][el] == pytest.approx(e, abs=1e-3)


def test_demo_models_predict_within_their_manifest_errors(demo):
    from mlipft_core.evaluate import evaluate_model

    manifest = json.loads(Path(demo["manifest"]).read_text())
    for name in ("demo-gfn1-weak", "demo-gfn1-strong"):
        res = evaluate_model(name, demo["pretrain_test"])
        recorded = manifest["models"][name]["test_errors"]["pretrain_test"]
        m = res.metrics.as_dict()
        for key in ("energy_rmse_mev_per_atom", "forces_rmse_mev_per_a"):
            assert m[key] == pytest.approx(recorded[key], rel=0.02), (name, key)
    weak = manifest["models"]["demo-gfn1-weak"]["test_errors"]["pretrain_test"]
    strong = manifest["models"]["demo-gfn1-strong"]["test_errors"]["pretrain_test"]
    assert strong["forces_rmse_mev_per_a"] < weak["forces_rmse_mev_per_a"]
