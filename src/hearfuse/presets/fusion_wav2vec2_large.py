"""HEAR module of the ``fusion_wav2vec2_large`` preset (see :mod:`hearfuse.catalogue`)."""

from ..hear import hear_functions

load_model, get_timestamp_embeddings, get_scene_embeddings = hear_functions("fusion_wav2vec2_large")
