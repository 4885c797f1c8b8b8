"""Shared fixtures: tiny randomly initialised SSL checkpoints saved to disk and loaded back
through the real loading path (``from_pretrained(local_dir)``) with the hub offline."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

# Nothing borrowed from the machine: the tests run in an empty home of their own (no Ray token, hub
# cache, model or config an earlier run left in ~) with no hub, Ray or torch settings from the
# caller's shell; only pip's download cache (PIP_CACHE_DIR) may be shared. Set before anything reads them.
_HOME = tempfile.mkdtemp(prefix="hearfuse-tests-home-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
for _name in [name for name in os.environ if name.startswith(("HF_", "TRANSFORMERS_", "RAY_", "TORCH_", "HEARFUSE_"))]:
    del os.environ[_name]
os.environ.update(
    HOME=_HOME,
    XDG_CACHE_HOME=f"{_HOME}/.cache",
    XDG_CONFIG_HOME=f"{_HOME}/.config",
    XDG_DATA_HOME=f"{_HOME}/.local/share",
    XDG_STATE_HOME=f"{_HOME}/.local/state",
    HF_HUB_OFFLINE="1",  # no test may touch the network
)

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    Data2VecAudioConfig,
    Data2VecAudioModel,
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

TINY = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)

FAMILIES = {
    "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model, dict(feat_extract_norm="layer", do_stable_layer_norm=True)),
    "wav2vec2_group": (Wav2Vec2Config, Wav2Vec2Model, dict(feat_extract_norm="group", do_stable_layer_norm=False)),
    "hubert": (HubertConfig, HubertModel, dict(feat_extract_norm="layer", do_stable_layer_norm=True, hidden_size=40)),
    "wavlm": (WavLMConfig, WavLMModel, dict(num_buckets=8, max_bucket_distance=20)),
    "data2vec_audio": (Data2VecAudioConfig, Data2VecAudioModel, dict(num_conv_pos_embeddings=5)),
}


def _save_tiny(root: Path, key: str) -> Path:
    config_class, model_class, overrides = FAMILIES[key]
    torch.manual_seed(sum(map(ord, key)))
    model = model_class(config_class(**{**TINY, **overrides}))
    directory = root / key
    model.save_pretrained(directory)
    return directory


def save_tiny_feature_encoders(root: Path) -> dict[str, str]:
    """Tiny random Whisper encoder, w2v-BERT 2.0 and AST checkpoints with their feature extractors."""
    import transformers

    torch.manual_seed(0)
    made = {
        "whisper": (
            transformers.WhisperModel(
                transformers.WhisperConfig(
                    d_model=16,
                    encoder_layers=2,
                    encoder_attention_heads=2,
                    encoder_ffn_dim=32,
                    decoder_layers=1,
                    decoder_attention_heads=2,
                    decoder_ffn_dim=32,
                    num_mel_bins=80,
                )
            ),
            transformers.WhisperFeatureExtractor(feature_size=80),
        ),
        "wav2vec2_bert": (
            transformers.Wav2Vec2BertModel(
                transformers.Wav2Vec2BertConfig(
                    hidden_size=16,
                    num_hidden_layers=3,
                    num_attention_heads=2,
                    intermediate_size=32,
                    feature_projection_input_dim=160,
                    output_hidden_size=16,
                    conv_depthwise_kernel_size=3,
                )
            ),
            transformers.SeamlessM4TFeatureExtractor(),
        ),
        "ast": (
            transformers.ASTModel(
                transformers.ASTConfig(
                    hidden_size=16,
                    num_hidden_layers=2,
                    num_attention_heads=2,
                    intermediate_size=32,
                    num_mel_bins=32,
                    max_length=128,
                )
            ),
            transformers.ASTFeatureExtractor(num_mel_bins=32, max_length=128),
        ),
    }
    paths = {}
    for family, (model, extractor) in made.items():
        model.save_pretrained(root / family)
        extractor.save_pretrained(root / family)
        paths[family] = str(root / family)
    return paths


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Directories of tiny random checkpoints, one per family/front-end variant."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {key: _save_tiny(root, key) for key in FAMILIES}


@pytest.fixture(scope="session")
def tiny_fusion_config(tiny_checkpoints):
    """The paper's fusion_cat_xwc recipe with tiny transformers and real CREPE tiny weights."""
    from hearfuse import catalogue

    config = catalogue.get("fusion_cat_xwc")
    checkpoints = {
        "wav2vec2": str(tiny_checkpoints["wav2vec2"]),
        "hubert": str(tiny_checkpoints["hubert"]),
        "crepe": "tiny",
    }
    members = tuple(replace(m, checkpoint=checkpoints[m.family]) for m in config.members)
    return config.with_options(members=members, name="tiny_fusion_cat_xwc")


@pytest.fixture(scope="session")
def tiny_fusion_model(tiny_fusion_config):
    from hearfuse.model import FusionModel

    return FusionModel.from_config(tiny_fusion_config)


def sine_batch(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """Deterministic test audio: harmonic tones plus a little noise, in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(round(seconds * 16000)) / 16000
    f0 = 110 * 2 ** (torch.arange(n)[:, None] / 5)
    tone = sum(torch.sin(2 * torch.pi * f0 * k * t) / k for k in (1, 2, 3))
    return (0.3 * tone + 0.05 * torch.randn(n, len(t), generator=generator)).float()


def count_task_clips(task, samples: int) -> int:
    """Clips over all splits of a built suite task; every split non-empty, every file 16 kHz mono of ``samples``."""
    import soundfile

    total = 0
    for split in task.splits:
        content = task.split_labels(split)
        assert content, f"{task.name}: split {split} is empty"
        total += len(content)
        for file_name in content:
            info = soundfile.info(str(task.audio_dir(split) / file_name))
            assert (info.samplerate, info.channels, info.frames) == (16000, 1, samples), (
                f"{task.name}/{split}/{file_name}"
            )
    return total
