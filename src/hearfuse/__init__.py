"""hearfuse: general-purpose audio representations by fusing pretrained models.

>>> import torch, hearfuse
>>> model = hearfuse.load_model("crepe")                      # doctest: +SKIP
>>> embeddings, timestamps = hearfuse.get_timestamp_embeddings(torch.zeros(2, 16000), model)  # doctest: +SKIP
"""

from importlib import import_module

__version__ = "0.1.0"

#: Public names and the modules they live in, imported on first use: ``import hearfuse`` (and so
#: ``hearfuse --help``) does not pay for torch and transformers until something needs them.
_EXPORTS = {
    "FusionConfig": "config",
    "MemberConfig": "config",
    "LayerAggregation": "fusion.aggregation",
    "open_embeddings": "collection.reader",
    "get_scene_embeddings": "hear",
    "get_timestamp_embeddings": "hear",
    "load_model": "hear",
    "FusionModel": "model",
    "Upstream": "upstream",
    "WeightsNotFoundError": "upstream",
    "register_family": "upstream",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hearfuse' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
