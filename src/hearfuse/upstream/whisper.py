"""Whisper's encoder (Radford et al., 2022): multilingual speech recognition on 680k (large-v3: 5M) hours."""

from .registry import CheckpointInfo, feature_encoder_family

WHISPER = feature_encoder_family(
    "whisper",
    {
        "openai/whisper-base": CheckpointInfo(512, 7, "base encoder, 80 mel bins, 680k h", first_center_ms=0.0),
        "openai/whisper-large-v3": CheckpointInfo(
            1280, 33, "large-v3 encoder, 128 mel bins, 5M h", first_center_ms=0.0
        ),
    },
    "Whisper encoder (transformers WhisperModel), log-mel input, 30 s windows",
)
