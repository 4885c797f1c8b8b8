"""HEAR module of the ``crepe`` preset (see :mod:`hearfuse.catalogue`)."""

from ..hear import hear_functions

load_model, get_timestamp_embeddings, get_scene_embeddings = hear_functions("crepe")
