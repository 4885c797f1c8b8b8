"""WavLM (Chen et al., 2022): masked prediction with denoising and gated relative position bias."""

from .registry import CheckpointInfo, transformer_family

WAVLM = transformer_family(
    "wavlm",
    "WavLMModel",
    {
        "microsoft/wavlm-base": CheckpointInfo(768, 13, "Base, LibriSpeech 960 h"),
        "microsoft/wavlm-base-plus": CheckpointInfo(768, 13, "Base+, 94k h"),
        "microsoft/wavlm-large": CheckpointInfo(1024, 25, "Large, 94k h"),
    },
    "WavLM (transformers WavLMModel)",
)
