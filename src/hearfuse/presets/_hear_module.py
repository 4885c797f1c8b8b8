"""Bind the HEAR functions to one preset, so each preset is an importable HEAR module."""

from __future__ import annotations

from .. import hear


def hear_functions(preset: str):
    """``load_model``, ``get_timestamp_embeddings``, ``get_scene_embeddings`` for ``preset``.

    ``load_model(model_file_path="")`` builds the preset; a non-empty path is taken as a
    config file instead, as HEAR runners may pass one.
    """

    def load_model(model_file_path: str = "", **options):
        return hear.load_model(model_file_path or preset, **options)

    load_model.__doc__ = f"Load the {preset!r} preset (HEAR API)."
    return load_model, hear.get_timestamp_embeddings, hear.get_scene_embeddings
