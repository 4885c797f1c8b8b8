"""HEAR module of the ``hubert_xlarge`` preset (see :mod:`hearfuse.presets`)."""

from ..hear import hear_functions

load_model, get_timestamp_embeddings, get_scene_embeddings = hear_functions("hubert_xlarge")
