"""engine/funasr_import.py without importing FunASR: which modules a model's config asks for,
and when it falls back to the whole package. (Against FunASR itself: test_funasr_engine.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from asr_service.engine import funasr_import


@pytest.fixture
def partial_package(monkeypatch: pytest.MonkeyPatch):
    """A `funasr` package made as a worker makes it, whatever this process imported before."""
    monkeypatch.delitem(sys.modules, "funasr", raising=False)
    completed = []
    monkeypatch.setattr(funasr_import, "_complete", lambda package: completed.append(package))
    package = funasr_import._package()
    yield package, completed
    sys.modules.pop("funasr", None)  # monkeypatch puts back the one there was


def model_dir(tmp_path: Path, config: str) -> str:
    tmp_path.joinpath("config.yaml").write_text(config)
    return str(tmp_path)


def test_the_modules_are_those_registering_the_classes_the_config_names(partial_package,
                                                                         tmp_path):
    config = ("model: Paraformer\nmodel_conf: {lsm_weight: 0.1}\nencoder: SANMEncoder\n"
              "decoder: ParaformerSANMDecoder\nfrontend: WavFrontend\ncmvn_file: am.mvn\n")

    needed = funasr_import._classes_for([model_dir(tmp_path, config)])

    assert needed == [
        ("model_classes", "Paraformer", "funasr.models.paraformer.model"),
        ("encoder_classes", "SANMEncoder", "funasr.models.sanm.encoder"),
        # registered twice; a full import leaves e_paraformer's (the last import wins)
        ("decoder_classes", "ParaformerSANMDecoder", "funasr.models.e_paraformer.decoder"),
        ("frontend_classes", "WavFrontend", "funasr.frontends.wav_frontend")]
    assert partial_package[0].__version__  # read from FunASR's version.txt, not its __init__


@pytest.mark.parametrize("model", ["paraformer-zh", "unknown-class"])
def test_a_hub_alias_or_an_unknown_class_imports_the_whole_package(partial_package, tmp_path,
                                                                   model):
    if model == "unknown-class":
        model = model_dir(tmp_path, "model: NoSuchModel\n")

    assert funasr_import._classes_for([model]) is None


def test_another_funasr_version_imports_the_whole_package(partial_package, tmp_path):
    partial_package[0].__version__ = "0.0.1"

    assert funasr_import._classes_for([model_dir(tmp_path, "model: Paraformer\n")]) is None


def test_anyone_elses_from_funasr_import_gets_the_whole_package(partial_package):
    package, completed = partial_package

    with pytest.raises(AttributeError):  # the fake _complete defines nothing
        package.AutoModel  # noqa: B018

    assert completed == [package]
