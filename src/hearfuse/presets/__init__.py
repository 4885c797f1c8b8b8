"""One HEAR module per preset (``import hearfuse.presets.fusion_cat_xwc as m; m.load_model()``), each built on
:mod:`hearfuse.hear`.

The presets themselves live in :mod:`hearfuse.catalogue`, below the HEAR surface; its names are re-exported
here because ``hearfuse.presets.get`` and ``hearfuse.presets.names`` were their public home before.
"""

from ..catalogue import (
    DEFAULT_PRESET,
    HUBERT_LARGE,
    HUBERT_XLARGE,
    PAPER_PRESETS,
    WAV2VEC2_LARGE,
    describe,
    get,
    names,
)

__all__ = [
    "DEFAULT_PRESET",
    "HUBERT_LARGE",
    "HUBERT_XLARGE",
    "PAPER_PRESETS",
    "WAV2VEC2_LARGE",
    "describe",
    "get",
    "names",
]
