"""Whisper's encoder from a CTranslate2 model folder (what faster-whisper converts Whisper to), as `transformers`'
``WhisperEncoder``: from then on an ordinary :class:`~hearfuse.upstream.feature_encoders.WhisperEncoderUpstream`.

The folder's ``model.bin`` is read with :mod:`hearfuse.upstream.ctranslate2_format` (numpy, no CTranslate2),
the encoder's variables only. Their names are those CTranslate2's ``WhisperSpec`` declares and its
``WhisperLoader`` fills from a `transformers` Whisper (``python/ctranslate2/converters/transformers.py``):

- ``encoder/conv{1,2}/{weight,bias}``: the two convolutions, as `transformers` stores them;
- ``encoder/position_encodings/encodings``: the positional embedding (one row per 20 ms frame);
- ``encoder/layer_<i>/self_attention/linear_0``: q, k and v projections stacked on the output axis, with a
  zero bias for k (Whisper's k projection has none; a bias on the keys would shift every score of a query
  by the same amount, which the softmax ignores, so dropping it changes nothing);
  ``linear_1``: the output projection; ``layer_norm``: the norm before attention (``gamma``, ``beta``);
- ``encoder/layer_<i>/ffn/{layer_norm,linear_0,linear_1}``: the norm before the MLP and its two layers;
- ``encoder/layer_norm``: the final norm; ``encoder/num_heads``: the attention heads.

The architecture (layers, width, heads, MLP width, mel bins, positions) follows from these shapes; the
feature extractor is the folder's ``preprocessor_config.json`` when it has one (faster-whisper copies it
there for large-v3's 128 mel bins), else Whisper's with the mel bins of the first convolution.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from ..errors import ConfigError
from .ctranslate2_format import CTranslate2File
from .feature_encoders import WhisperEncoderUpstream
from .weights import read_checkpoint_json

#: Samples per 20 ms encoder frame at 16 kHz: two 10 ms mel frames.
_SAMPLES_PER_POSITION = 320


def _encoder_weights(model: CTranslate2File, layers: int) -> dict[str, np.ndarray]:
    """The encoder's float32 ``state_dict`` of `transformers`' ``WhisperEncoder``, by its names."""
    read = model.float32
    state = {
        "embed_positions.weight": read("encoder/position_encodings/encodings"),
        "layer_norm.weight": read("encoder/layer_norm/gamma"),
        "layer_norm.bias": read("encoder/layer_norm/beta"),
    }
    for conv in ("conv1", "conv2"):
        state[f"{conv}.weight"] = read(f"encoder/{conv}/weight")
        state[f"{conv}.bias"] = read(f"encoder/{conv}/bias")
    pairs = {
        "self_attn_layer_norm": "self_attention/layer_norm",
        "final_layer_norm": "ffn/layer_norm",
        "self_attn.out_proj": "self_attention/linear_1",
        "fc1": "ffn/linear_0",
        "fc2": "ffn/linear_1",
    }
    for i in range(layers):
        ours, theirs = f"layers.{i}", f"encoder/layer_{i}"
        for hf, ct2 in pairs.items():
            weight, bias = ("gamma", "beta") if ct2.endswith("layer_norm") else ("weight", "bias")
            state[f"{ours}.{hf}.weight"] = read(f"{theirs}/{ct2}/{weight}")
            state[f"{ours}.{hf}.bias"] = read(f"{theirs}/{ct2}/{bias}")
        qkv = read(f"{theirs}/self_attention/linear_0/weight")
        qkv_bias = read(f"{theirs}/self_attention/linear_0/bias")
        if qkv.shape[0] % 3 or qkv_bias.shape != qkv.shape[:1]:
            raise ConfigError(
                f"{model.path}: {theirs}/self_attention/linear_0 is {list(qkv.shape)} with bias "
                f"{list(qkv_bias.shape)}, not q, k and v stacked"
            )
        for name, weight, bias in zip("qkv", np.split(qkv, 3), np.split(qkv_bias, 3)):
            state[f"{ours}.self_attn.{name}_proj.weight"] = weight
            if name != "k":
                state[f"{ours}.self_attn.{name}_proj.bias"] = bias
    return state


def _layer_count(model: CTranslate2File) -> int:
    indices = {int(m.group(1)) for name in model.names if (m := re.match(r"encoder/layer_(\d+)/", name))}
    if not indices or indices != set(range(len(indices))):
        raise ConfigError(f"{model.path}: its encoder layers are numbered {sorted(indices)}, not 0, 1, 2, ...")
    return len(indices)


def load_encoder(folder: Path) -> tuple[WhisperEncoder, transformers.WhisperFeatureExtractor]:
    """The Whisper encoder held in CTranslate2 model folder ``folder``, and its feature extractor."""
    model = CTranslate2File(folder / "model.bin")
    if model.spec != "WhisperSpec":
        raise ConfigError(f"{folder} holds a CTranslate2 {model.spec}, not a Whisper model (WhisperSpec)")
    layers = _layer_count(model)
    width, mel_bins, _ = model.shape("encoder/conv1/weight")
    config = transformers.WhisperConfig(
        d_model=width,
        encoder_layers=layers,
        encoder_attention_heads=int(model.scalar("encoder/num_heads")),
        encoder_ffn_dim=model.shape("encoder/layer_0/ffn/linear_0/weight")[0],
        num_mel_bins=mel_bins,
        max_source_positions=model.shape("encoder/position_encodings/encodings")[0],
    )
    if width % config.encoder_attention_heads:
        raise ConfigError(f"{folder}: width {width} does not split into {config.encoder_attention_heads} heads")
    with torch.device("meta"):
        encoder = WhisperEncoder(config)
    state = _encoder_weights(model, layers)
    expected = encoder.state_dict()
    for name, value in state.items():
        if tuple(value.shape) != tuple(expected[name].shape):
            raise ConfigError(
                f"{folder}: the weight for {name} is {list(value.shape)}; a Whisper encoder of width {width}, "
                f"{mel_bins} mel bins and {config.encoder_ffn_dim} MLP units takes {list(expected[name].shape)}"
            )
    encoder.load_state_dict({name: torch.from_numpy(value) for name, value in state.items()}, assign=True)
    extractor = _feature_extractor(folder, mel_bins)
    if config.max_source_positions * _SAMPLES_PER_POSITION != extractor.n_samples:
        raise ConfigError(
            f"{folder}: {config.max_source_positions} positions of 20 ms do not cover the feature extractor's "
            f"{extractor.n_samples / extractor.sampling_rate:g} s"
        )
    return encoder.eval(), extractor


def _feature_extractor(folder: Path, mel_bins: int) -> transformers.WhisperFeatureExtractor:
    if (folder / "preprocessor_config.json").is_file():
        read_checkpoint_json(folder / "preprocessor_config.json", str(folder))
        return transformers.WhisperFeatureExtractor.from_pretrained(folder)
    return transformers.WhisperFeatureExtractor(feature_size=mel_bins)


def build_from_ctranslate2(folder: Path, *, pad_to_30s: bool = True) -> WhisperEncoderUpstream:
    encoder, extractor = load_encoder(folder)
    return WhisperEncoderUpstream(encoder, extractor, pad_to_30s=pad_to_30s)
