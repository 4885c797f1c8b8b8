"""Encoders fed by spectrogram features: Whisper's encoder, w2v-BERT 2.0 and the Audio Spectrogram Transformer.

Each is a `transformers` model behind a torch front end (:mod:`hearfuse.upstream.frontends`) that is
equal to its checkpoint's own feature extractor. The hidden states are those of ``hidden_states``
(the embedding output, then every block's), streamed through forward hooks as in
:mod:`hearfuse.upstream.transformer` so that averaging all of them costs one state of memory:

- Whisper: the input of every block, and the last one after the encoder's final layer norm, as
  `transformers` returns it. The encoder takes exactly 30 s with no mask: every input is padded to
  30 s, as Whisper was trained, and the frames past the clip's end are dropped (``ceil(n / 320)``
  of the 1,500 20 ms frames). Each row is padded on its own, so clips of any lengths share a batch.
  With ``pad_to_30s=False`` the encoder runs on the clip's own ``ceil(n / 320)`` frames instead (a
  10 s clip costs a third of 30 s, less in attention): the log-mel frames they see through the two
  convolutions, which are exactly the 30 s run's (the clip's maximum, which the log is clamped to, is
  taken over every frame that reaches into it), the positional embedding's first rows, and no
  attention to the padding: so the embedding output equals the 30 s run's on every frame and later
  states differ only by what attending to 30 s minus the clip of silence adds. In a batch, a shorter
  row's frames past its own are masked out of attention (keys), and its convolutions see only its own
  mel frames up to its last frame's, so each row equals its clip run alone: clips of any lengths share
  a batch in this mode too.
- w2v-BERT 2.0: the input of every conformer block, and the encoder's output, with the attention
  mask of the stacked fbank; padding sits after a clip, where neither the mask nor the causal
  depthwise convolutions let it reach real frames (tested), so clips of any lengths share a batch.
- AST: the embedding output and every block's output before the final layer norm (as
  ``hidden_states``; ``last_hidden_state`` is normed). A frame is one time column of the patch grid,
  the mean of that column's frequency patches; the CLS and distillation tokens are not frames. Every
  input is padded to the checkpoint's ``max_length`` fbank frames, so clips share a batch.
"""

from __future__ import annotations

import math
from typing import Collection

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.masking_utils import create_bidirectional_mask

from .base import Upstream, centre_short_rows, stream_states
from .frontends import KALDI_FRAME, KALDI_HOP, AstFbank, SeamlessFbank, WhisperLogMel, kaldi_frame_count
from .weights import load_feature_extractor, load_pretrained


def blocks_of(model: nn.Module) -> nn.ModuleList:
    """A model's stack of blocks, wherever its `transformers` version keeps it."""
    for path in ("layers", "encoder.layers", "encoder.layer"):
        module = model
        for name in path.split("."):
            module = getattr(module, name, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"{type(model).__name__}: no stack of blocks found")


class FeatureEncoderUpstream(Upstream):
    """Common ground of the three: frozen, context-dependent, features computed on the model's device."""

    context_dependent = True
    mixed_lengths = True

    def train(self, mode: bool = True) -> FeatureEncoderUpstream:
        return super().train(False)

    def _frame_count(self, num_samples: int) -> int:
        return len(self.frame_centers_ms(num_samples))


class WhisperEncoderUpstream(FeatureEncoderUpstream):
    """Whisper's encoder; ``pad_to_30s=False`` runs it on each clip's own frames (module docstring)."""

    hop_samples = 320
    #: One frame: two mel frames either side through the two k=3 convolutions, one STFT window each.
    receptive_field = 4 * 160 + 400

    def __init__(self, model: nn.Module, extractor, *, pad_to_30s: bool = True):
        super().__init__()
        self.encoder = model.get_encoder() if hasattr(model, "get_encoder") else model
        self.encoder.eval()
        self.frontend = WhisperLogMel(extractor)
        self.max_input_samples = extractor.n_samples
        self.num_states = len(blocks_of(self.encoder)) + 1
        self.feature_dim = self.encoder.config.d_model
        self.pad_to_30s = pad_to_30s
        if extractor.feature_size != self.encoder.config.num_mel_bins:
            raise ValueError(
                f"feature extractor gives {extractor.feature_size} mel bins, the encoder takes "
                f"{self.encoder.config.num_mel_bins}"
            )

    def frame_centers_ms(self, num_samples: int, *, scene: bool = False) -> Tensor:
        count = min(max(1, math.ceil(num_samples / self.hop_samples)), self.max_input_samples // self.hop_samples)
        return torch.arange(count, dtype=torch.float64) * (1000 * self.hop_samples / self.sample_rate)

    def visit_states(self, audio, visit, *, scene=False, needed: Collection[int] | None = None, lengths=None) -> None:
        if audio.shape[-1] > self.max_input_samples:
            raise ValueError(f"Whisper's encoder takes at most {self.max_input_samples} samples (30 s) at a time")
        dtype = self.encoder.conv1.weight.dtype
        if self.pad_to_30s:
            frames = self._frame_count(audio.shape[-1])
            features = self.frontend(audio).to(dtype)

            def run() -> Tensor:
                return self.encoder(features).last_hidden_state

        else:
            lengths = torch.full((audio.shape[0],), audio.shape[-1]) if lengths is None else lengths.cpu()
            counts = torch.tensor([self._frame_count(int(n)) for n in lengths])
            frames = int(counts.max())
            # frame j sees mel frames 2j - 2 .. 2j + 2 through the two convolutions; one more makes them even
            features = self.frontend(audio, min(2 * frames + 2, self.frontend.frames)).to(dtype)
            real = (torch.arange(frames)[None, :] < counts[:, None]).to(audio.device)

            def run() -> Tensor:
                return self._encode_frames(features, frames, None if real.all() else real)

        stream_states(blocks_of(self.encoder), run, visit, lambda hidden: hidden[:, :frames], last_from_block=False)

    def _encode_frames(self, features: Tensor, frames: int, real: Tensor | None) -> Tensor:
        """`transformers`' ``WhisperEncoder.forward`` on ``frames`` frames, where it insists on all 1,500: its
        modules in its order, the positional embedding cut to the frames present. ``real``: ``(n, frames)``,
        True on each row's own frames; attention to the others is masked out (the mask `transformers` makes
        for the encoder's attention implementation)."""
        encoder = self.encoder
        embedded = F.gelu(encoder.conv2(F.gelu(encoder.conv1(features))))[..., :frames].transpose(1, 2)
        hidden = embedded + encoder.embed_positions.weight[:frames]
        mask = None if real is None else create_bidirectional_mask(encoder.config, hidden, real)
        for block in blocks_of(encoder):
            hidden = block(hidden, mask)
        return encoder.layer_norm(hidden)


class Wav2Vec2BertUpstream(FeatureEncoderUpstream):
    hop_samples = 2 * KALDI_HOP
    #: Two stacked fbank frames; a shorter clip is zero-padded to it, centred.
    receptive_field = KALDI_FRAME + KALDI_HOP

    def __init__(self, model: nn.Module, extractor):
        super().__init__()
        if getattr(model.config, "add_adapter", False):
            raise ValueError("w2v-BERT checkpoints with an adapter (which changes the frame rate) are not supported")
        self.model = model.eval()
        self.frontend = SeamlessFbank(extractor)
        self.num_states = model.config.num_hidden_layers + 1
        self.feature_dim = model.config.hidden_size

    def frame_centers_ms(self, num_samples: int, *, scene: bool = False) -> Tensor:
        count = max(1, kaldi_frame_count(max(num_samples, self.receptive_field)) // 2)
        centre = (KALDI_HOP + KALDI_FRAME) / 2  # of a pair of 25 ms frames 10 ms apart
        return (torch.arange(count, dtype=torch.float64) * self.hop_samples + centre) * 1000 / self.sample_rate

    def visit_states(self, audio, visit, *, scene=False, needed: Collection[int] | None = None, lengths=None) -> None:
        audio, lengths = centre_short_rows(audio, lengths, self.receptive_field)
        features, mask = self.frontend(audio, lengths)
        features = features.to(next(self.model.parameters()).dtype)
        frames = self._frame_count(int(lengths.max()))
        stream_states(
            blocks_of(self.model),
            lambda: self.model(features, attention_mask=mask.long()).last_hidden_state,
            visit,
            lambda hidden: hidden[:, :frames],
            last_from_block=False,
        )


class AstUpstream(FeatureEncoderUpstream):
    def __init__(self, model: nn.Module, extractor):
        super().__init__()
        self.model = model.eval()
        config = model.config
        self.frontend = AstFbank(extractor)
        if extractor.max_length != config.max_length or extractor.num_mel_bins != config.num_mel_bins:
            raise ValueError("the feature extractor's max_length / num_mel_bins differ from the model's")
        self.patch, self.time_stride = config.patch_size, config.time_stride
        self.frequency_patches = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
        self.time_patches = (config.max_length - config.patch_size) // config.time_stride + 1
        self.hop_samples = config.time_stride * KALDI_HOP
        self.receptive_field = (config.patch_size - 1) * KALDI_HOP + KALDI_FRAME
        self.max_input_samples = (config.max_length - 1) * KALDI_HOP + KALDI_FRAME
        self.num_states = config.num_hidden_layers + 1
        self.feature_dim = config.hidden_size

    def frame_centers_ms(self, num_samples: int, *, scene: bool = False) -> Tensor:
        centre = self.receptive_field / 2
        count = (
            1
            if num_samples <= centre
            else min(int((num_samples - centre - 1) // self.hop_samples) + 1, self.time_patches)
        )
        return (torch.arange(count, dtype=torch.float64) * self.hop_samples + centre) * 1000 / self.sample_rate

    def _columns(self, hidden: Tensor, frames: int) -> Tensor:
        """Patch tokens ``(n, 2 + F * T, D)`` (frequency-major, as the patch embedding flattens them)
        -> the mean of each time column ``(n, frames, D)``."""
        patches = hidden[:, -self.frequency_patches * self.time_patches :]
        grid = patches.reshape(hidden.shape[0], self.frequency_patches, self.time_patches, hidden.shape[-1])
        return grid[:, :, :frames].mean(dim=1)

    def visit_states(self, audio, visit, *, scene=False, needed: Collection[int] | None = None, lengths=None) -> None:
        if audio.shape[-1] > self.max_input_samples:
            raise ValueError(f"AST takes at most {self.max_input_samples} samples (its max_length) at a time")
        audio, lengths = centre_short_rows(audio, lengths, KALDI_FRAME)
        frames = self._frame_count(int(lengths.max()))
        features = self.frontend(audio, lengths).to(next(self.model.parameters()).dtype)
        stream_states(
            blocks_of(self.model),
            lambda: self.model(features),
            visit,
            lambda hidden: self._columns(hidden, frames),
            last_from_block=True,
        )


def build(kind: str, checkpoint: str, **options) -> FeatureEncoderUpstream:
    """Load ``checkpoint`` and its feature extractor (see :mod:`hearfuse.upstream.weights`) as ``kind``,
    built with ``options`` (Whisper's ``pad_to_30s``)."""
    import transformers

    model_class, wrapper = {
        "whisper": (transformers.WhisperModel, WhisperEncoderUpstream),
        "wav2vec2_bert": (transformers.Wav2Vec2BertModel, Wav2Vec2BertUpstream),
        "ast": (transformers.ASTModel, AstUpstream),
    }[kind]
    return wrapper(load_pretrained(model_class, checkpoint), load_feature_extractor(checkpoint), **options)
