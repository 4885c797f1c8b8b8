"""hearfuse: general-purpose audio representations by fusing pretrained models.

>>> import torch, hearfuse
>>> model = hearfuse.load_model("crepe")                      # doctest: +SKIP
>>> embeddings, timestamps = hearfuse.get_timestamp_embeddings(torch.zeros(2, 16000), model)  # doctest: +SKIP
"""

from .config import FusionConfig, MemberConfig
from .fusion.aggregation import LayerAggregation
from .hear import get_scene_embeddings, get_timestamp_embeddings, load_model
from .model import FusionModel
from .upstream import Upstream, WeightsNotFoundError, register_family

__version__ = "0.1.0"

__all__ = [
    "FusionConfig",
    "FusionModel",
    "LayerAggregation",
    "MemberConfig",
    "Upstream",
    "WeightsNotFoundError",
    "get_scene_embeddings",
    "get_timestamp_embeddings",
    "load_model",
    "register_family",
]
