"""Transformer SSL speech models (wav2vec 2.0, HuBERT, WavLM, data2vec-audio …) via `transformers`.

All of these share one shape: a strided convolutional front end (25 ms receptive field,
20 ms hop for the published checkpoints) followed by a stack of transformer blocks. The
hidden states are the input of every block plus the final output, which is exactly what
``output_hidden_states=True`` returns (L + 1 states), but they are streamed through forward
pre-hooks instead of being kept, so averaging 49 layers of HuBERT xLarge costs one layer
of memory. A family module only has to name its model class and checkpoints
(:func:`hearfuse.upstream.registry.transformer_family`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Collection

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from transformers import PreTrainedModel

from .base import StateVisitor, Upstream, centre_short_rows, stream_states
from .conv_forms import check_conv_form
from .conv_matmul import MatmulFeatureEncoder, MatmulPositionalConv
from .weights import load_pretrained


def conv_geometry(kernels: list[int], strides: list[int]) -> tuple[int, int]:
    """(receptive field, hop) in samples of a stack of 1-D convolutions without padding."""
    receptive_field, jump = 1, 1
    for kernel, stride in zip(kernels, strides):
        receptive_field += (kernel - 1) * jump
        jump *= stride
    return receptive_field, jump


def _checkpoint_normalizes(model: PreTrainedModel, ref: str) -> bool:
    """Read ``do_normalize`` from the checkpoint's feature-extractor config, if it ships one."""
    config_path = Path(ref).expanduser() / "preprocessor_config.json"
    if not config_path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(ref, "preprocessor_config.json")
            config_path = Path(cached) if isinstance(cached, str) else None
        except Exception:
            config_path = None
    if config_path is not None and config_path.is_file():
        return bool(json.loads(config_path.read_text()).get("do_normalize", False))
    # No feature extractor shipped: the wav2vec2 convention is that layer-norm front ends
    # (the "large, stable layer norm" recipe) were trained on normalised input.
    return getattr(model.config, "feat_extract_norm", "group") == "layer"


class TransformerUpstream(Upstream):
    """Any `transformers` model with a conv front end and ``encoder.layers``."""

    context_dependent = True

    def __init__(self, model: PreTrainedModel, *, expects_normalized_waveform: bool = False):
        super().__init__()
        self.model = model.eval()
        config = model.config
        self.receptive_field, self.hop_samples = conv_geometry(list(config.conv_kernel), list(config.conv_stride))
        self.num_states = config.num_hidden_layers + 1
        self.feature_dim = config.hidden_size
        self.expects_normalized_waveform = expects_normalized_waveform
        self._blocks = self.model.encoder.layers
        fold_parametrizations(self.model)
        # Layer-norm front ends normalise each frame; one positional convolution reads zeros beyond a
        # clip either way (`transformers` zeroes padded frames before it); attention is masked.
        self.mixed_lengths = getattr(config, "feat_extract_norm", None) == "layer" and hasattr(
            self.model.encoder.pos_conv_embed, "conv"
        )
        # The front end and the positional convolution as matrix products where conv_form selects them.
        self._conv_wrappers: list[MatmulFeatureEncoder | MatmulPositionalConv] = []
        if MatmulFeatureEncoder.supports(self.model.feature_extractor):
            self.model.feature_extractor = MatmulFeatureEncoder(self.model.feature_extractor)
            self._conv_wrappers.append(self.model.feature_extractor)
        if MatmulPositionalConv.supports(self.model.encoder.pos_conv_embed):
            self.model.encoder.pos_conv_embed = MatmulPositionalConv(self.model.encoder.pos_conv_embed)
            self._conv_wrappers.append(self.model.encoder.pos_conv_embed)

    @property
    def conv_form(self) -> str:
        """How the convolutions run: "auto" (matrix products on CUDA), "conv" or "matmul"
        (:mod:`hearfuse.upstream.conv_matmul`); the outputs are the same."""
        return self._conv_wrappers[0].conv_form if self._conv_wrappers else "conv"

    @conv_form.setter
    def conv_form(self, form: str) -> None:
        check_conv_form(form)
        for wrapper in self._conv_wrappers:
            wrapper.conv_form = form

    def train(self, mode: bool = True) -> "TransformerUpstream":
        # Frozen feature extractor: layerdrop and dropout must never be active.
        return super().train(False)

    def num_frames(self, num_samples: int) -> int:
        if num_samples < self.receptive_field:
            return 1
        return (num_samples - self.receptive_field) // self.hop_samples + 1

    def frame_centers_ms(self, num_samples: int, *, scene: bool = False) -> Tensor:
        if num_samples < self.receptive_field:
            # A short clip is zero-padded on both sides; its one frame is centred on the clip.
            return torch.tensor([num_samples / 2 * 1000 / self.sample_rate], dtype=torch.float64)
        starts = torch.arange(self.num_frames(num_samples), dtype=torch.float64) * self.hop_samples
        return (starts + self.receptive_field / 2) * 1000 / self.sample_rate

    def visit_states(
        self,
        audio: Tensor,
        visit: StateVisitor,
        *,
        scene: bool = False,
        needed: Collection[int] | None = None,
        lengths: Tensor | None = None,
    ) -> None:
        if lengths is not None and not self.mixed_lengths:
            raise ValueError(f"{type(self.model).__name__} with this front end cannot batch clips of different lengths")
        attention_mask = None
        if lengths is None:
            missing = self.receptive_field - audio.shape[-1]
            if missing > 0:
                audio = F.pad(audio, (missing // 2, missing - missing // 2))
        else:
            audio, lengths = centre_short_rows(audio, lengths, self.receptive_field)
            lengths = lengths.to(audio.device)
            attention_mask = (torch.arange(audio.shape[-1], device=audio.device) < lengths[:, None]).long()

        stream_states(self._blocks, lambda: self.model(audio, attention_mask=attention_mask).last_hidden_state, visit)


def fold_parametrizations(model: nn.Module) -> None:
    """Replace parametrized weights (the weight norm of the positional convolution) by their value.

    The weights are frozen, so ``g * v / ||v||`` is the same on every call; computing it once at load
    takes a norm and a division over the largest convolution's weight off every forward pass, and
    the outputs are unchanged (the same arithmetic, done once).
    """
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)


def build_transformer(model_class: type[PreTrainedModel], checkpoint: str) -> TransformerUpstream:
    """Load ``checkpoint`` as ``model_class`` (see :mod:`hearfuse.upstream.weights`) and wrap it."""
    model = load_pretrained(model_class, checkpoint)
    return TransformerUpstream(model, expects_normalized_waveform=_checkpoint_normalizes(model, checkpoint))
