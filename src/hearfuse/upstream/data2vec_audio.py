"""data2vec-audio (Baevski et al., 2022): regression onto the teacher's averaged top layers."""

from .registry import CheckpointInfo, transformer_family

DATA2VEC_AUDIO = transformer_family(
    "data2vec_audio",
    "Data2VecAudioModel",
    {
        "facebook/data2vec-audio-base": CheckpointInfo(768, 13, "Base, LibriSpeech 960 h"),
        "facebook/data2vec-audio-large": CheckpointInfo(1024, 25, "Large, Libri-Light 60k h"),
    },
    "data2vec-audio (transformers Data2VecAudioModel)",
)
