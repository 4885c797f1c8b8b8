"""HuBERT (Hsu et al., 2021): masked prediction of offline cluster targets."""

from .registry import CheckpointInfo, transformer_family

HUBERT = transformer_family(
    "hubert",
    "HubertModel",
    {
        "facebook/hubert-base-ls960": CheckpointInfo(768, 13, "Base, LibriSpeech 960 h"),
        "facebook/hubert-large-ll60k": CheckpointInfo(1024, 25, "Large, Libri-Light 60k h"),
        "facebook/hubert-xlarge-ll60k": CheckpointInfo(1280, 49, "xLarge, Libri-Light 60k h (the paper's)"),
    },
    "HuBERT (transformers HubertModel)",
)
