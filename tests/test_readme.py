"""The README's examples run as written (with tiny local checkpoints in place of hub ids)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

import hearfuse
from hearfuse.upstream import families

from .conftest import sine_batch

README = (Path(__file__).parents[1] / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_toml_config_example_loads_and_embeds(tiny_checkpoints, tmp_path):
    (toml,) = _blocks("toml")
    path = tmp_path / "my_fusion.toml"
    path.write_text(
        toml.replace("microsoft/wavlm-base-plus", str(tiny_checkpoints["wavlm"])).replace('"full"', '"tiny"')
    )
    model = hearfuse.load_model(str(path))
    assert model.config.name == "wavlm_crepe"
    embeddings, timestamps = hearfuse.get_timestamp_embeddings(sine_batch(1, 1.0), model)
    assert embeddings.shape == (1, 49, 2 * 32)
    assert hearfuse.get_scene_embeddings(sine_batch(1, 1.0), model).shape == (1, 64)


def test_new_family_example_registers():
    snippet = next(block for block in _blocks("python") if "transformer_family(" in block)
    exec(snippet, {})
    assert "unispeech_sat" in families()


def test_quickstart_crepe_shapes():
    snippet = _blocks("python")[0].split('\n\nmodel = hearfuse.load_model("fusion_cat_xwc"')[0]
    namespace: dict = {}
    exec(snippet, namespace)
    assert tuple(namespace["embeddings"].shape) == (2, 61, 2048)
    assert tuple(namespace["scene"].shape) == (2, 2048)
    assert namespace["timestamps"].dtype == torch.float32


def test_using_the_embeddings_example_runs_on_a_real_embed_folder(tmp_path, monkeypatch):
    import numpy as np
    import pytest
    import soundfile as sf

    from hearfuse.collection.writer import embed_files

    for index, label in enumerate(["cat", "dog"] * 3):
        t = np.arange(8000 + 1600 * index) / 16000
        (tmp_path / "in" / label).mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "in" / label / f"{index}.wav", 0.3 * np.sin(2 * np.pi * (200 + 300 * index) * t), 16000)
    repository = Path(__file__).parents[1]
    model = hearfuse.load_model(str(repository / "examples" / "crepe_tiny.toml"))
    embed_files(model, [tmp_path / "in"], tmp_path / "emb", store_dtype="float16", progress=False)
    monkeypatch.chdir(tmp_path)
    snippet = next(block for block in _blocks("python") if "open_embeddings(" in block)
    namespace: dict = {}
    exec(snippet, namespace)
    assert namespace["X"].shape == (6, 256) and namespace["X"].dtype.name == "float16"
    assert sorted(namespace["classifier"].classes_) == ["cat", "dog"]
    assert namespace["embeddings"].shape[1] == 256 and namespace["loss"].item() > 0

    pytest.importorskip("xares.audio_encoder_checker", reason="xares is not installed here; `make install` installs it")
    monkeypatch.chdir(repository)
    exec(next(block for block in _blocks("python") if "hearfuse.xares" in block), {})


def test_the_real_models_table_is_the_registrys(capsys):
    """The README's table of real models is what `hearfuse models --markdown` prints from the registry entries."""
    from hearfuse.cli import main

    assert main(["models", "--markdown"]) == 0
    printed = capsys.readouterr().out.strip()
    (in_readme,) = re.findall(r"<!-- real-models-table -->\n(.*?)\n<!-- /real-models-table -->", README, flags=re.S)
    assert in_readme == printed
    assert printed.count("\n| `") >= 7 and "`whisper_tiny_en`" in printed
