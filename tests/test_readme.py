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
