"""The embedding collection: what ``hearfuse embed`` writes, reads back and exports, in one package.

- :mod:`.layout`: the output folder, the manifest record, the array rules (no torch);
- :mod:`.discovery`: finding the inputs, ``--shard``;
- :mod:`.run`: one run's bookkeeping, what is done and why the rest is embedded again;
- :mod:`.writer` and :mod:`.ray_writer`: embedding in one process, or on a Ray cluster;
- :mod:`.reader`: :func:`open_embeddings` (no torch until a frame dataset hands out tensors);
- :mod:`.export`: Parquet and WebDataset shards.

The names below are imported on first use, so importing the package costs nothing.
"""

from importlib import import_module

_EXPORTS = {
    "embed_files": "writer",
    "embed_files_on_ray": "ray_writer",
    "open_embeddings": "reader",
    "collate_frames": "reader",
    "export": "export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hearfuse.collection' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
