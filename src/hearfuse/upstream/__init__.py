"""Upstream models: one module per family, all behind :class:`~hearfuse.upstream.base.Upstream`.

Importing this package registers the built-in families (wav2vec2, hubert, wavlm,
data2vec_audio, crepe). A new family registers itself with
:func:`~hearfuse.upstream.base.register_family` (or ``transformer_family`` for a
`transformers` SSL model) and is then usable by name in any fusion config.
"""

from . import crepe, data2vec_audio, hubert, wav2vec2, wavlm  # noqa: F401  (registration)
from .base import CheckpointInfo, Family, Option, StateVisitor, Upstream, families, get_family, register_family
from .transformer import TransformerUpstream, transformer_family
from .weights import WeightsNotFoundError, download, is_cached, is_offline, load_pretrained

__all__ = [
    "CheckpointInfo",
    "Family",
    "Option",
    "StateVisitor",
    "TransformerUpstream",
    "Upstream",
    "WeightsNotFoundError",
    "download",
    "families",
    "get_family",
    "is_cached",
    "is_offline",
    "load_pretrained",
    "register_family",
    "transformer_family",
]
