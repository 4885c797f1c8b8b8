"""The fused representation model: members -> aggregation -> alignment -> combination -> pooling."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from .config import FusionConfig, MemberConfig
from .fusion.aggregation import LayerAggregation
from .fusion.alignment import resample_at, stretch
from .fusion.combination import average, concatenate
from .fusion.pooling import group_pool, mean_pool
from .fusion.windowing import Windowing, windowed_aggregate
from .upstream import Upstream, get_family
from .upstream.base import module_device


@dataclass
class Embeddings:
    """What :meth:`FusionModel.embed` returns; fields not asked for stay ``None``."""

    timestamp_embeddings: Tensor | None = None
    timestamps: Tensor | None = None
    scene_embeddings: Tensor | None = None


def check_audio(audio: object) -> Tensor:
    """Validate a HEAR audio batch ``(n_sounds, n_samples)`` and return it as float32."""
    if not isinstance(audio, torch.Tensor):
        raise ValueError(f"audio must be a torch.Tensor of shape (n_sounds, n_samples), got {type(audio).__name__}")
    if audio.ndim != 2:
        raise ValueError(f"audio must be 2-D (n_sounds, n_samples), got shape {tuple(audio.shape)}")
    if not audio.is_floating_point():
        raise ValueError(f"audio must be floating point in [-1, 1], got {audio.dtype}; convert integer PCM first")
    if audio.shape[0] == 0:
        raise ValueError("audio batch is empty (n_sounds == 0)")
    if audio.shape[1] == 0:
        raise ValueError("audio clips have zero samples")
    if not torch.isfinite(audio).all():
        raise ValueError("audio contains NaN or Inf values")
    return audio.float()


def zero_mean_unit_variance(audio: Tensor) -> Tensor:
    """Per-clip waveform normalisation, as the `transformers` feature extractors do it."""
    mean = audio.mean(dim=-1, keepdim=True)
    variance = audio.var(dim=-1, keepdim=True, unbiased=False)
    return (audio - mean) / torch.sqrt(variance + 1e-7)


class Member(nn.Module):
    """An upstream with its aggregation, waveform normalisation and long-audio windowing."""

    def __init__(self, config: MemberConfig, upstream: Upstream, windowing: Windowing | None):
        super().__init__()
        self.config = config
        self.upstream = upstream
        self.aggregation: LayerAggregation = config.aggregation
        self.aggregation.state_weights(upstream.num_states)  # fail at load time on bad layer indices
        self.windowing = windowing
        self.normalize = {
            "none": False,
            "always": True,
            "checkpoint": upstream.expects_normalized_waveform,
        }[config.normalize]

    def forward(self, audio: Tensor, *, scene: bool = False) -> tuple[Tensor, Tensor]:
        """Aggregated features ``(n, T, C)`` (float32) and frame centres in ms ``(T,)``."""
        if self.normalize:
            audio = zero_mean_unit_variance(audio)
        features = windowed_aggregate(self.upstream, audio, self.aggregation, self.windowing, scene=scene)
        return features, self.upstream.frame_centers_ms(audio.shape[-1], scene=scene)


class FusionModel(nn.Module):
    """A fused audio representation with the HEAR model attributes.

    ``sample_rate``, ``timestamp_embedding_size`` and ``scene_embedding_size`` are what
    HEAR runners read. Build one with :meth:`from_config` or :func:`hearfuse.load_model`.
    """

    sample_rate = 16000

    def __init__(self, config: FusionConfig, upstreams: Mapping[str, Upstream], *, dtype: torch.dtype | None = None):
        super().__init__()
        self.config = config
        self.members = nn.ModuleDict(
            {m.name: Member(m, upstreams[m.name], config.windowing) for m in config.members}
        )
        for name, upstream in upstreams.items():
            if upstream.sample_rate != self.sample_rate:
                raise ValueError(f"member {name!r} runs at {upstream.sample_rate} Hz; fusion needs 16 kHz members")
        native = {name: up.feature_dim for name, up in upstreams.items()}
        self.timestamp_embedding_size, self.scene_embedding_size = config.embedding_sizes(native)
        if dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        self.autocast_dtype = None if dtype in (None, torch.float32) else dtype
        self.eval()

    @classmethod
    def from_config(
        cls, config: FusionConfig, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> "FusionModel":
        """Load every member's weights (see :mod:`hearfuse.upstream.weights`) and build the model."""
        upstreams = {m.name: get_family(m.family).build(m.checkpoint, **m.options) for m in config.members}
        model = cls(config, upstreams, dtype=dtype)
        return model.to(device) if device is not None else model

    def train(self, mode: bool = True) -> "FusionModel":
        return super().train(False)  # a frozen feature extractor: never dropout or layerdrop

    @property
    def device(self) -> torch.device:
        return module_device(self)

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def fused_frames(self, audio: Tensor, *, scene: bool = False) -> tuple[Tensor, Tensor]:
        """Combined frame embeddings ``(n, T, D)`` and the reference frame centres ``(T,)`` in ms."""
        return self._fused(check_audio(audio), (scene,))[scene]

    def embed(self, audio: Tensor, *, timestamp: bool = True, scene: bool = True) -> Embeddings:
        """Timestamp and/or scene embeddings from one pass of each member where they share frames.

        Transformer members run once for both kinds; only members whose scene frames differ
        (CREPE at its coarser scene hop) run a second time.
        """
        if not (timestamp or scene):
            raise ValueError("ask for timestamp and/or scene embeddings")
        kinds = tuple(kind for kind, wanted in ((False, timestamp), (True, scene)) if wanted)
        fused = self._fused(check_audio(audio), kinds)
        result = Embeddings()
        if timestamp:
            frames, centres_ms = fused[False]
            result.timestamp_embeddings = frames
            result.timestamps = centres_ms.to(torch.float32).to(frames.device).expand(frames.shape[0], -1)
        if scene:
            frames, _ = fused[True]
            groups = self.config.scene_groups
            result.scene_embeddings = mean_pool(frames) if groups == 1 else group_pool(frames, groups)
        return result

    def timestamp_embeddings(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """HEAR timestamp embeddings ``(n, T, D)`` and timestamps in ms ``(n, T)``, float32."""
        result = self.embed(audio, scene=False)
        return result.timestamp_embeddings, result.timestamps

    def scene_embeddings(self, audio: Tensor) -> Tensor:
        """HEAR scene embeddings ``(n, scene_embedding_size)``, float32."""
        return self.embed(audio, timestamp=False).scene_embeddings

    def _fused(self, audio: Tensor, kinds: tuple[bool, ...]) -> dict[bool, tuple[Tensor, Tensor]]:
        audio = audio.to(self.device)
        with torch.inference_mode():
            outputs: dict[bool, dict[str, tuple[Tensor, Tensor]]] = {kind: {} for kind in kinds}
            with self._autocast():
                for name, member in self.members.items():
                    for kind in kinds:
                        if kind and False in outputs and not member.upstream.scene_frames_differ:
                            outputs[kind][name] = outputs[False][name]
                        else:
                            outputs[kind][name] = member(audio, scene=kind)
            return {kind: self._combine(outputs[kind]) for kind in kinds}

    def _combine(self, outputs: Mapping[str, tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        config = self.config
        reference_features, reference_ms = outputs[config.reference_member.name]
        native = {name: features.shape[-1] for name, (features, _) in outputs.items()}
        aligned = []
        for member, width in zip(config.members, config.aligned_widths(native)):
            features, centres_ms = outputs[member.name]
            features = stretch(features, width, dim=2)
            if config.time_alignment == "stretch":
                features = stretch(features, reference_features.shape[1], dim=1)
            else:
                features = resample_at(features, centres_ms, reference_ms)
            aligned.append(features)
        if config.combine == "avg":
            combined = average(aligned)
        else:
            combined = concatenate(aligned, interleave=config.interleave)
        return combined.float(), reference_ms
