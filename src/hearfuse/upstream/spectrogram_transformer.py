"""The Audio Spectrogram Transformer (Gong et al., 2021): a ViT on fbank patches, trained on AudioSet."""

from .registry import CheckpointInfo, feature_encoder_family

AST = feature_encoder_family(
    "ast",
    {
        "MIT/ast-finetuned-audioset-10-10-0.4593": CheckpointInfo(
            768, 13, "AudioSet-trained, 10.24 s windows, 100 ms frames", hop_ms=100.0, first_center_ms=87.5
        )
    },
    "Audio Spectrogram Transformer (transformers ASTModel), a frame per time column of patches",
)
