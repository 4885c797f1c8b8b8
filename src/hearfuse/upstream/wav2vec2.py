"""wav2vec 2.0 (Baevski et al., 2020): contrastive masked prediction over quantised latents."""

from .registry import CheckpointInfo, transformer_family

WAV2VEC2 = transformer_family(
    "wav2vec2",
    "Wav2Vec2Model",
    {
        "facebook/wav2vec2-base": CheckpointInfo(768, 13, "Base, LibriSpeech 960 h, self-supervised only"),
        "facebook/wav2vec2-large-lv60": CheckpointInfo(1024, 25, "Large, Libri-Light 60k h, self-supervised only"),
        "facebook/wav2vec2-large-960h-lv60-self": CheckpointInfo(
            1024, 25, "Large, Libri-Light 60k h + self-training, fine-tuned on LibriSpeech 960 h (the paper's)"
        ),
    },
    "wav2vec 2.0 (transformers Wav2Vec2Model)",
)
