"""HEAR module of the ``fusion_hubert_xlarge`` preset (see :mod:`hearfuse.catalogue`)."""

from ..hear import hear_functions

load_model, get_timestamp_embeddings, get_scene_embeddings = hear_functions("fusion_hubert_xlarge")
