"""The fused representation model: members -> aggregation -> alignment -> combination -> pooling."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, fields
from typing import Iterable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from .config import FusionConfig, MemberConfig
from .dtypes import DTYPE_NAMES, dtype_name, resolve_dtype, torch_dtype, warn_if_emulated
from .errors import ConfigError
from .fusion.aggregation import LayerAggregation
from .fusion.alignment import LinearMap, stretch, stretch_map, timestamp_map
from .fusion.combination import average, concatenate, equal_blocks
from .fusion.pooling import pool, pooling_weights
from .fusion.windowing import (
    Windowing,
    effective_windowing,
    window_plan,
    window_samples,
    windowed_aggregate,
    windowed_pieces,
)
from .upstream import WeightsNotFoundError, get_family
from .upstream.base import SceneFrames, Upstream, module_device

#: Mixed-length batches are padded to a multiple of this many samples (1 s): padding is masked, so
#: it costs a little compute and changes nothing, and cuDNN, which tunes its kernels per input shape
#: (:attr:`FusionModel.cudnn_benchmark`), then sees a few dozen shapes instead of one per batch.
MIXED_PAD_GRID = 16000


@dataclass
class Embeddings:
    """What :meth:`FusionModel.embed` returns; fields not asked for stay ``None``."""

    timestamp_embeddings: Tensor | None = None
    timestamps: Tensor | None = None
    scene_embeddings: Tensor | None = None

    def row(self, index: int) -> "Embeddings":
        """One clip's embeddings, without the batch axis."""
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        return Embeddings(**{name: None if value is None else value[index] for name, value in values.items()})


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


def zero_mean_unit_variance(audio: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Per-clip waveform normalisation, as the `transformers` feature extractors do it; with
    ``lengths``, each row's statistics are those of its first ``lengths[i]`` samples and its padding
    stays zero."""
    if lengths is None:
        mean = audio.mean(dim=-1, keepdim=True)
        variance = audio.var(dim=-1, keepdim=True, unbiased=False)
        return (audio - mean) / torch.sqrt(variance + 1e-7)
    real = (torch.arange(audio.shape[-1], device=audio.device) < lengths[:, None].to(audio.device)).to(audio.dtype)
    count = real.sum(dim=-1, keepdim=True)
    mean = (audio * real).sum(dim=-1, keepdim=True) / count
    variance = (((audio - mean) * real) ** 2).sum(dim=-1, keepdim=True) / count
    return (audio - mean) / torch.sqrt(variance + 1e-7) * real


class Member(nn.Module):
    """An upstream with its aggregation, waveform normalisation and long-audio windowing."""

    def __init__(self, config: MemberConfig, upstream: Upstream, windowing: Windowing | None):
        super().__init__()
        self.config = config
        self.upstream = upstream
        self.aggregation: LayerAggregation = config.aggregation
        self.aggregation.state_weights(upstream.num_states)  # fail at load time on bad layer indices
        self.windowing = effective_windowing(upstream, windowing)
        if self.windowing is not None:  # fail at load time, not on every long file, when a window is too short
            for scene in (False, True):
                try:
                    window_plan(upstream, self.windowing, scene=scene)
                except ValueError as error:
                    raise ConfigError(f"member {config.name!r}: {error}") from None
        self.normalize = {
            "none": False,
            "always": True,
            "checkpoint": upstream.expects_normalized_waveform,
        }[config.normalize]

    def forward(self, audio: Tensor, *, scene: bool = False) -> Tensor:
        """Aggregated features ``(n, T, C)`` (float32) on :meth:`frame_centers_ms`."""
        return self.features(audio, [self.aggregation], scene=scene)[0]

    def features(
        self,
        audio: Tensor,
        aggregations: Sequence[LayerAggregation],
        *,
        scene: bool = False,
        lengths: Tensor | None = None,
    ) -> list[Tensor]:
        """The features of each aggregation, from one run of the upstream (rows of different
        ``lengths``: see :attr:`mixed_batch_limit`)."""
        audio = self._input(audio, lengths)
        return windowed_aggregate(self.upstream, audio, aggregations, self.windowing, scene=scene, lengths=lengths)

    def pieces(
        self, audio: Tensor, aggregations: Sequence[LayerAggregation], *, scene: bool = False
    ) -> Iterator[list[Tensor]]:
        """The same features as consecutive frame pieces, one long-audio window at a time."""
        return windowed_pieces(self.upstream, self._input(audio), aggregations, self.windowing, scene=scene)

    def _input(self, audio: Tensor, lengths: Tensor | None = None) -> Tensor:
        return zero_mean_unit_variance(audio, lengths) if self.normalize else audio

    @property
    def mixed_batch_limit(self) -> int:
        """The longest clip, in samples, that may share a batch with clips of other lengths: one
        window (both frame kinds), or 0 when the upstream cannot batch different lengths."""
        if not self.upstream.mixed_lengths:
            return 0
        if self.windowing is None:
            return sys.maxsize
        return min(window_samples(self.upstream, self.windowing, scene=scene) for scene in (False, True))

    def frame_centers_ms(self, num_samples: int, *, scene: bool = False) -> Tensor:
        return self.upstream.frame_centers_ms(num_samples, scene=scene)


class FusionModel(nn.Module):
    """A fused audio representation with the HEAR model attributes.

    ``sample_rate``, ``timestamp_embedding_size`` and ``scene_embedding_size`` are what
    HEAR runners read. Build one with :meth:`from_config` or :func:`hearfuse.load_model`.
    """

    sample_rate = 16000

    def __init__(self, config: FusionConfig, upstreams: Mapping[str, Upstream], *, dtype: torch.dtype | None = None):
        super().__init__()
        self.config = config
        self.members = nn.ModuleDict({m.name: Member(m, upstreams[m.name], config.windowing) for m in config.members})
        for name, upstream in upstreams.items():
            if upstream.sample_rate != self.sample_rate:
                raise ValueError(f"member {name!r} runs at {upstream.sample_rate} Hz; fusion needs 16 kHz members")
        native = {name: up.feature_dim for name, up in upstreams.items()}
        self.timestamp_embedding_size, self.scene_embedding_size = config.embedding_sizes(native)
        if dtype is not None and dtype not in [torch_dtype(name) for name in DTYPE_NAMES]:
            raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {dtype}")
        self.autocast_dtype = None if dtype in (None, torch.float32) else dtype
        #: What was asked for: the precision's name, or "auto" when :meth:`from_config` picked it.
        self.dtype_requested = dtype_name(dtype)
        if self.autocast_dtype is not None:
            cast_matmul_weights(self, self.autocast_dtype)
        self.eval()

    @classmethod
    def from_config(
        cls,
        config: FusionConfig,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> "FusionModel":
        """Load every member's weights (see :mod:`hearfuse.upstream.weights`) and build the model.

        ``dtype``: a torch dtype, its name, or ``"auto"`` (bfloat16 where ``device`` runs it natively,
        else float32; ``autocast_dtype`` tells what was picked). A reduced precision on a CPU that emulates
        it is logged once, in one line, and used as asked.
        """
        requested = dtype
        dtype = resolve_dtype(dtype, device)
        warn_if_emulated(dtype, device)
        upstreams = {}
        for member in config.members:
            try:
                upstreams[member.name] = get_family(member.family).build(member.checkpoint, **member.options)
            except WeightsNotFoundError:
                raise  # names the checkpoint and how to provide it
            except ValueError as error:  # a checkpoint this family cannot load (another model, a file cut short),
                # or an option the registry's checks cannot see (e.g. a hop of 1/32 ms)
                raise ConfigError(
                    f"{config.name}: member {member.name!r} (family {member.family!r}): {error}"
                ) from None
        model = cls(config, upstreams, dtype=dtype)
        if requested == "auto":
            model.dtype_requested = "auto"
        return model.to(device) if device is not None else model

    def train(self, mode: bool = True) -> "FusionModel":
        return super().train(False)  # a frozen feature extractor: never dropout or layerdrop

    @property
    def device(self) -> torch.device:
        return module_device(self)

    #: On CUDA, let cuDNN time its convolution algorithms per input shape and keep the fastest
    #: (``torch.backends.cudnn.benchmark``, only while this model runs), for the convolutions still
    #: left to cuDNN (group-norm front ends; the others run as matrix products, upstream.conv_matmul;
    #: docs/results/performance.md). Each new clip length is timed once: set this to False when
    #: embedding many clips of all different lengths.
    cudnn_benchmark: bool = True

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """The context every forward pass runs in: no autograd, the model's autocast precision, cuDNN autotuning."""
        device_type = self.device.type
        autocast = (
            contextlib.nullcontext()
            if self.autocast_dtype is None
            else torch.autocast(device_type, dtype=self.autocast_dtype)
        )
        saved = torch.backends.cudnn.benchmark
        if device_type == "cuda" and self.cudnn_benchmark and not torch.backends.cudnn.deterministic:
            torch.backends.cudnn.benchmark = True
        try:
            with torch.inference_mode(), autocast:
                yield
        finally:
            torch.backends.cudnn.benchmark = saved

    def fused_frames(self, audio: Tensor, *, scene: bool = False) -> tuple[Tensor, Tensor]:
        """Combined frame embeddings ``(n, T, D)`` and the reference frame centres ``(T,)`` in ms."""
        audio = check_audio(audio).to(self.device)
        with self.inference():
            frames = {name: member(audio, scene=scene) for name, member in self.members.items()}
        return self._align_and_join(frames, audio.shape[-1], scene=scene)

    def embed(self, audio: Tensor, *, timestamp: bool = True, scene: bool = True) -> Embeddings:
        """Timestamp and/or scene embeddings from one pass of each member where they share frames.

        Transformer members run once for both kinds; only members whose scene frames differ
        (CREPE at its coarser scene hop) run a second time. Scene embeddings are pooled window
        by window on each member's own frames (the pooling weights pulled back through the
        time alignment), so their memory does not grow with clip length.
        """
        return self.embed_variants(audio, {}, timestamp=timestamp, scene=scene)[0]

    def embed_variants(
        self,
        audio: Tensor,
        variants: Mapping[str, Sequence[LayerAggregation]],
        *,
        timestamp: bool = True,
        scene: bool = True,
    ) -> list[Embeddings]:
        """:meth:`embed` of K variants of this model from the same member runs: variant k aggregates
        member m's states as ``variants[m][k]`` and the other members as configured. Each is what a
        model with that aggregation in its config returns (layer-wise analysis gets every state of a
        member from one pass per clip this way)."""
        count = self._variant_count(variants, timestamp, scene)
        audio = check_audio(audio).to(self.device)
        num_samples = audio.shape[-1]
        frames: dict[str, list[Tensor]] = {}
        pooled: dict[str, list[Tensor]] = {}
        weights = self._scene_weights(num_samples) if scene else {}
        with self.inference():
            for name, member in self.members.items():
                aggregations = variants.get(name, [member.aggregation])
                if timestamp:
                    frames[name] = member.features(audio, aggregations)
                if scene:
                    shared = timestamp and not member.upstream.scene_frames_differ
                    pieces = [frames[name]] if shared else member.pieces(audio, aggregations, scene=True)
                    pooled[name] = _pool_pieces(pieces, weights[name])
        return self._finish(frames, pooled, num_samples, count)

    @property
    def mixed_batch_limit(self) -> int:
        """The longest clip, in samples, that :meth:`embed_each` batches with clips of other lengths
        (padded, each clip's output unchanged); 0 when some member cannot (a group-norm front end)."""
        return min(member.mixed_batch_limit for member in self.members.values())

    def embed_each(self, clips: Sequence[Tensor], *, timestamp: bool = True, scene: bool = True) -> list[Embeddings]:
        """:meth:`embed` of clips of any lengths, 1-D tensors ``(n_samples,)``, in one batch where the
        members allow it; each clip's result is what :meth:`embed` returns for it alone (within float
        tolerance), without the batch axis: ``(T, D)``, ``(T,)`` and ``(D,)``.

        Clips up to :attr:`mixed_batch_limit` samples are zero-padded into one batch (an attention
        mask hides the padding; CREPE computes only each clip's own frames); longer clips, and all
        clips of a model that cannot mix lengths, run in batches of equal length.
        """
        return self.embed_each_variants(clips, {}, timestamp=timestamp, scene=scene)[0]

    def embed_each_variants(
        self,
        clips: Sequence[Tensor],
        variants: Mapping[str, Sequence[LayerAggregation]],
        *,
        timestamp: bool = True,
        scene: bool = True,
    ) -> list[list[Embeddings]]:
        """:meth:`embed_each` of each variant (see :meth:`embed_variants`): ``result[k][i]`` is variant
        k of clip i."""
        count = self._variant_count(variants, timestamp, scene)
        clips = [self._check_clip(clip, index) for index, clip in enumerate(clips)]
        by_length: dict[int, list[int]] = {}
        for index, clip in enumerate(clips):
            by_length.setdefault(clip.shape[-1], []).append(index)
        results: list[list[Embeddings]] = [[Embeddings()] * len(clips) for _ in range(count)]

        def place(indices: list[int], batches: list[Embeddings]) -> None:
            for k, batch in enumerate(batches):
                for row, index in enumerate(indices):
                    results[k][index] = batch.row(row)

        mixable = {length: indices for length, indices in by_length.items() if length <= self.mixed_batch_limit}
        if len(mixable) > 1:
            for length, batches in self._embed_mixed(clips, mixable, variants, count, timestamp, scene):
                place(mixable[length], batches)
            by_length = {length: indices for length, indices in by_length.items() if length not in mixable}
        for indices in by_length.values():
            batch = torch.stack([clips[index] for index in indices])
            place(indices, self.embed_variants(batch, variants, timestamp=timestamp, scene=scene))
        return results

    def _embed_mixed(
        self,
        clips: list[Tensor],
        groups: dict[int, list[int]],
        variants: Mapping[str, Sequence[LayerAggregation]],
        count: int,
        timestamp: bool,
        scene: bool,
    ) -> Iterator[tuple[int, list[Embeddings]]]:
        """One padded run of every member over clips of several lengths, then the usual alignment,
        combination and pooling for each group of equal length (a batch of it, on its own frames)."""
        order = [index for indices in groups.values() for index in indices]
        lengths = torch.tensor([clips[index].shape[-1] for index in order])
        # Every clip here fits the limit, so the grid, capped there, still holds the longest.
        padded = min(-(-int(lengths.max()) // MIXED_PAD_GRID) * MIXED_PAD_GRID, self.mixed_batch_limit)
        audio = torch.zeros(len(order), padded, device=self.device)
        for row, index in enumerate(order):
            audio[row, : lengths[row]] = clips[index]
        frames: dict[str, list[Tensor]] = {}
        scene_frames: dict[str, list[Tensor]] = {}
        with self.inference():
            for name, member in self.members.items():
                aggregations = variants.get(name, [member.aggregation])
                if timestamp:
                    frames[name] = member.features(audio, aggregations, lengths=lengths)
                if scene:
                    shared = timestamp and not member.upstream.scene_frames_differ
                    scene_frames[name] = (
                        frames[name] if shared else member.features(audio, aggregations, scene=True, lengths=lengths)
                    )
        first = 0
        for length, indices in groups.items():
            rows = slice(first, first + len(indices))
            first += len(indices)
            pooled = {}
            if scene:
                weights = self._scene_weights(length)
                own = self._own_frames(scene_frames, rows, length, scene=True)
                pooled = {name: _pool_pieces([each], weights[name]) for name, each in own.items()}
            yield length, self._finish(self._own_frames(frames, rows, length, scene=False), pooled, length, count)

    def _own_frames(
        self, per_member: dict[str, list[Tensor]], rows: slice, num_samples: int, *, scene: bool
    ) -> dict[str, list[Tensor]]:
        """Rows of a padded batch, cut to each member's own frame count for clips of ``num_samples``."""
        sizes = {name: len(self.members[name].frame_centers_ms(num_samples, scene=scene)) for name in per_member}
        return {name: [x[rows, : sizes[name]] for x in each] for name, each in per_member.items()}

    def _check_clip(self, clip: object, index: int) -> Tensor:
        if not isinstance(clip, torch.Tensor) or clip.ndim != 1:
            shape = tuple(clip.shape) if isinstance(clip, torch.Tensor) else type(clip).__name__
            raise ValueError(f"clip {index} must be a 1-D torch.Tensor (n_samples,), got {shape}")
        return check_audio(clip[None])[0].to(self.device)

    def _variant_count(self, variants: Mapping[str, Sequence[LayerAggregation]], timestamp: bool, scene: bool) -> int:
        if not (timestamp or scene):
            raise ValueError("ask for timestamp and/or scene embeddings")
        unknown = sorted(set(variants) - set(self.members))
        if unknown:
            raise ValueError(f"variants name unknown member(s) {unknown}; members: {list(self.members)}")
        counts = {len(each) for each in variants.values()}
        if len(counts) > 1 or 0 in counts:
            raise ValueError("every varied member needs the same number (at least one) of aggregations")
        return counts.pop() if counts else 1

    def _scene_weights(self, num_samples: int) -> dict[str, Tensor]:
        """Scene pooling weights over each member's own scene frames (pulled back through the alignment)."""
        return scene_pooling_weights(self.config, self._centres(num_samples, scene=True))

    def _finish(
        self, frames: dict[str, list[Tensor]], pooled: dict[str, list[Tensor]], num_samples: int, count: int
    ) -> list[Embeddings]:
        """Each variant's embeddings from the members' frames and/or pooled scene features."""

        def variant(per_member: dict[str, list[Tensor]], k: int) -> dict[str, Tensor]:
            return {name: each[k if len(each) > 1 else 0] for name, each in per_member.items()}

        results = []
        for k in range(count):
            result = Embeddings()
            if frames:
                combined, centres_ms = self._align_and_join(variant(frames, k), num_samples, scene=False)
                result.timestamp_embeddings = combined
                result.timestamps = centres_ms.to(torch.float32).to(combined.device).expand(combined.shape[0], -1)
            if pooled:
                result.scene_embeddings = self._join(variant(pooled, k)).flatten(1)
            results.append(result)
        return results

    def timestamp_embeddings(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """HEAR timestamp embeddings ``(n, T, D)`` and timestamps in ms ``(n, T)``, float32."""
        result = self.embed(audio, scene=False)
        return result.timestamp_embeddings, result.timestamps

    def scene_embeddings(self, audio: Tensor) -> Tensor:
        """HEAR scene embeddings ``(n, scene_embedding_size)``, float32."""
        return self.embed(audio, timestamp=False).scene_embeddings

    def _centres(self, num_samples: int, *, scene: bool) -> dict[str, Tensor]:
        """Each member's frame centres (ms) for a clip of ``num_samples``."""
        return {name: member.frame_centers_ms(num_samples, scene=scene) for name, member in self.members.items()}

    def _align_and_join(self, frames: Mapping[str, Tensor], num_samples: int, *, scene: bool) -> tuple[Tensor, Tensor]:
        """Members' own frames -> combined frames ``(n, T, D)`` on the reference frame centres (ms)."""
        centres = self._centres(num_samples, scene=scene)
        return align_and_join(self.config, frames, centres), centres[self.config.reference_member.name]

    def _join(self, aligned: Mapping[str, Tensor]) -> Tensor:
        return join_members(self.config, aligned)

    def on_scene_frames(self) -> "FusionModel":
        """This model with every member's scene frames as its timestamp frames (the same modules, shared):
        its timestamp embeddings are the fused frames that scene pooling pools."""
        upstreams = {name: SceneFrames(member.upstream) for name, member in self.members.items()}
        return FusionModel(self.config, upstreams, dtype=self.autocast_dtype)


# ------------------------------------------------------------------------------------------------
# The fusion step, from the members' frames and their centres alone: FusionModel runs it on what its
# upstreams produce, ``hearfuse plan`` on member states it cached (so both give the same embeddings).


def time_maps(config: FusionConfig, centres_ms: Mapping[str, Tensor]) -> dict[str, LinearMap]:
    """How each member's frames, centred at ``centres_ms[name]``, map onto the reference member's frames."""
    target_ms = centres_ms[config.reference_member.name]
    if config.time_alignment == "stretch":
        return {name: stretch_map(len(source_ms), len(target_ms)) for name, source_ms in centres_ms.items()}
    return {name: timestamp_map(source_ms, target_ms) for name, source_ms in centres_ms.items()}


def scene_pooling_weights(config: FusionConfig, centres_ms: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The scene pooling weights ``(G, T_ref)`` over the reference's scene frames, pulled back onto each
    member's own scene frames ``(G, T_m)``."""
    target = pooling_weights(len(centres_ms[config.reference_member.name]), config.scene_groups)
    return {name: linear.pull_back(target) for name, linear in time_maps(config, centres_ms).items()}


def align_and_join(config: FusionConfig, frames: Mapping[str, Tensor], centres_ms: Mapping[str, Tensor]) -> Tensor:
    """Members' own frames ``(n, T_m, C_m)`` -> combined frames ``(n, T, D)`` on the reference's frames."""
    maps = time_maps(config, centres_ms)
    return join_members(config, {name: maps[name].apply(x) for name, x in frames.items()})


def join_members(config: FusionConfig, aligned: Mapping[str, Tensor]) -> Tensor:
    """Members already on the reference frames ``(n, T, C_m)`` -> ``(n, T, D)``: widths aligned, members
    weighted, combined."""
    native = {name: x.shape[-1] for name, x in aligned.items()}
    members = [
        stretch(aligned[m.name], width, dim=2) for m, width in zip(config.members, config.aligned_widths(native))
    ]
    if config.member_weighting == "equal":
        members = equal_blocks(members)
    combined = average(members) if config.combine == "avg" else concatenate(members, interleave=config.interleave)
    return combined.float()


#: The modules whose weights autocast would cast to the run precision on every call.
_MATMUL_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def cast_matmul_weights(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast the weights and biases of linear and convolution layers to ``dtype`` once, at load.

    Autocast casts exactly these to ``dtype`` when each runs, and frozen weights are not in its cast
    cache, so every call copied every weight; cast once, the same products run on the same values
    (outputs are bit-identical) with no copies and half the weight memory. Everything else (norms,
    embeddings, BatchNorm statistics) stays float32, where autocast keeps it too.
    """
    for layer in module.modules():
        if isinstance(layer, _MATMUL_MODULES):
            layer.to(dtype)


def _pool_pieces(pieces: Iterable[list[Tensor]], weights: Tensor) -> list[Tensor]:
    """Scene pooling ``(n, G, C)`` of each aggregation, accumulated over consecutive frame pieces."""
    totals: list[Tensor] | None = None
    first = 0
    for piece in pieces:
        parts = [pool(features, weights[:, first : first + piece[0].shape[1]]) for features in piece]
        totals = parts if totals is None else [total + part for total, part in zip(totals, parts)]
        first += piece[0].shape[1]
    if totals is None or first != weights.shape[1]:
        raise RuntimeError(f"member produced {first} frames where {weights.shape[1]} were expected")
    return totals
