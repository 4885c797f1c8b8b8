"""Google's speech_embedding in torch, read from openWakeWord's two TFLite files, and its
:class:`~hearfuse.upstream.base.Upstream` (the registry entry is :mod:`hearfuse.upstream.speech_embedding`).

What pyopen-wakeword does with the two models (``OpenWakeWordFeatures.process_streaming``), and so hearfuse:

- Input: 16-bit PCM sample values as floats (a hearfuse waveform in [-1, 1] times 32768).
- Log-mel (``melspectrogram.tflite``), run on 1,760-sample chunks every 1,280 samples (80 ms): each chunk
  gives 8 frames, every 160 samples, of a 512-point power spectrum through a 400-sample periodic Hann
  window zero-padded to 512 (frame i's window covers samples 160 i + 56 .. 160 i + 455), 32 Slaney mel bands
  (60-3800 Hz), 10 log10 floored at 1e-10 and then at 80 dB below the chunk's own maximum. The package
  maps the result to x / 10 + 2. The 80 dB floor is per chunk, so hearfuse floors the same chunks (all
  of a clip's at once), not the clip as a whole.
- Embedding (``embedding_model.tflite``): 76 mel frames (775 ms) every 8 (80 ms) through 19 convolutions
  (1x3 and 3x1 after a first 3x3; each followed by a leaky ReLU of slope 0.2 floored at -0.4) in five
  blocks that each end in a max-pool, then a 3x1 convolution to 96 values. The stack is convolutional in
  time with no padding in time and a stride of 8 mel frames, so hearfuse runs it once over a clip's whole
  mel sequence: output row j is the embedding of window j, as the package computes it window by window.

Frames: frame j sees mel frames 8 j .. 8 j + 75, whose windows span samples 1280 j + 56 .. 1280 j + 12455
(12,400 samples: the 775 ms of the model card); its centre is their middle, sample 1280 j + 6256
(391 ms + 80 ms j). The 80 dB floor of the tenth chunk reads up to sample 1280 j + 13279, so a frame
depends on 13,280 samples (830 ms), and the package emits frame j once those are in: a clip of
n >= 13,280 samples has 1 + (n - 13,280) // 1,280 frames, each a function of its own samples only
(``context_dependent = False``; clips of any lengths share a batch). A shorter clip is zero-padded to
13,280 samples with its middle sample on the frame's centre as far as the padding allows: one frame,
centred at sample min(n // 2, 6256).

States (6 x 96): the five blocks' max-pooled maps, then the 96-d embedding (aggregation "last" is the
published embedding). A block's map for one window is (channels, time, mel) = (24, 36, 16), (48, 32, 8),
(72, 14, 4), (96, 10, 2), (96, 3, 1); each is averaged over the window's time rows, and its
channel-major (channel, mel band) rows are averaged in 96 consecutive groups of 4, 4, 3, 2 and 1. As
CREPE's states (:meth:`~hearfuse.upstream.crepe_net.CrepeNet.states`), this is parameter-free and gives
every state the embedding's width so that the layer mean can average them. Time is averaged rather than
frequency because frames 80 ms apart already resolve time, while the mel bands are what each frame alone
holds; blocks 1 and 2 keep 4 and 2 bands per channel, blocks 4 and 5 one value per channel. Block 3's
72 channels x 4 bands go in groups of 3 bands that straddle channels: no pooling that keeps channels
apart turns 72 channels into 96 values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .base import StateVisitor, Upstream, centre_short_rows

SAMPLE_RATE = 16000
#: openWakeWord takes 16-bit PCM values as floats.
PCM_SCALE = 32768.0
#: The package's driving of the mel model: chunks of 1,760 samples (1,280 new ones and three mel hops
#: before them) every 1,280 (``MEL_SAMPLES``, ``SAMPLES_PER_CHUNK``), and the transform of its output
#: "to fit embedding": x / 10 + 2.
CHUNK_SAMPLES = 1760
CHUNK_HOP = 1280
MEL_DIVISOR, MEL_OFFSET = 10.0, 2.0

_DTYPES = {"FLOAT32": np.float32, "INT32": np.int32}
_OPTIONS = {"CONV_2D": "Conv2DOptions", "MAX_POOL_2D": "Pool2DOptions", "LEAKY_RELU": "LeakyReluOptions"}


@dataclass(frozen=True)
class TfliteOp:
    """One operator of a TFLite graph: its builtin name, each input's constant data (None where the input
    is computed) and its builtin options table (``tflite.Conv2DOptions`` ...; None for the others)."""

    kind: str
    constants: tuple[np.ndarray | None, ...]
    options: Any = None

    def constant(self) -> np.ndarray:
        """The one constant input (a MAXIMUM's bound, a BATCH_MATMUL's matrix)."""
        (value,) = (c for c in self.constants if c is not None)
        return value


def read_tflite(path: Path) -> tuple[list[TfliteOp], tuple[int, ...]]:
    """The operators of a TFLite file's graph in execution order, and the shape of the graph's input."""
    import tflite

    data = Path(path).read_bytes()
    if data[4:8] != b"TFL3":
        raise ConfigError(f"{path} is not a TensorFlow Lite model (no TFL3 file identifier)")
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise ConfigError(f"{path} has {model.SubgraphsLength()} graphs; openWakeWord's models have one")
    graph = model.Subgraphs(0)
    op_names = {code: name for name, code in vars(tflite.BuiltinOperator).items() if not name.startswith("_")}
    type_names = {code: name for name, code in vars(tflite.TensorType).items() if not name.startswith("_")}

    def constant(index: int) -> np.ndarray | None:
        tensor = graph.Tensors(index)
        buffer = model.Buffers(tensor.Buffer())
        if buffer is None or buffer.DataLength() == 0:
            return None
        kind = type_names.get(tensor.Type())
        if kind not in _DTYPES:
            raise ConfigError(f"{path} holds {kind} weights; hearfuse reads float32 TFLite models (not quantised)")
        shape = tuple(tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        return np.frombuffer(buffer.DataAsNumpy().tobytes(), dtype=_DTYPES[kind]).reshape(shape).copy()

    ops = []
    for index in range(graph.OperatorsLength()):
        op = graph.Operators(index)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        options = None
        if kind in _OPTIONS:
            table = op.BuiltinOptions()
            options = getattr(tflite, _OPTIONS[kind])()
            options.Init(table.Bytes, table.Pos)
        inputs = (op.Inputs(i) for i in range(op.InputsLength()))
        ops.append(TfliteOp(kind, tuple(None if i < 0 else constant(i) for i in inputs), options))
    input_shape = tuple(int(d) for d in graph.Tensors(graph.Inputs(0)).ShapeAsNumpy())
    return ops, input_shape


def _expect(condition: bool, path: Path, what: str) -> None:
    if not condition:
        raise ConfigError(f"{path} is not openWakeWord's {what}")


class OpenWakeWordLogMel(nn.Module):
    """``melspectrogram.tflite`` on every 1,760-sample chunk of a clip every 1,280 samples, then x / 10 + 2:
    ``(n, samples)`` -> ``(n, 8 x chunks, 32)``, float32 whatever the autocast precision (the 80 dB floor
    and the logarithm need it; the front end is a small share of the work)."""

    def __init__(self, path: Path):
        super().__init__()
        ops, _ = read_tflite(path)
        what = "log-mel model (melspectrogram.tflite)"
        allowed = {"EXPAND_DIMS", "TRANSPOSE", "SQUEEZE", "CONV_2D", "MUL", "ADD", "BATCH_MATMUL"}
        allowed |= {"MINIMUM", "MAXIMUM", "LOG", "REDUCE_MAX", "SUB"}
        _expect({op.kind for op in ops} <= allowed, path, what)
        convs = [op for op in ops if op.kind == "CONV_2D"]
        _expect(len(convs) == 2 and all(op.constants[1].ndim == 4 for op in convs), path, what)
        # The real and imaginary parts of a DFT through the window, (bins, 1, n_fft, 1) each; the two are
        # squared and summed, so their order does not matter.
        kernels = [op.constants[1][:, 0, :, 0] for op in convs]
        self.n_fft = kernels[0].shape[1]
        self.hop = convs[0].options.StrideW()
        self.register_buffer("dft", torch.from_numpy(np.concatenate(kernels))[:, None, :], persistent=False)
        (matmul,) = (op for op in ops if op.kind == "BATCH_MATMUL")
        self.register_buffer("mel_filters", torch.from_numpy(matmul.constant()), persistent=False)
        bounds = [op.constant() for op in ops if op.kind in ("MINIMUM", "MAXIMUM") and op.constants[1] is not None]
        finite = [float(b) for b in bounds if np.isfinite(b)]
        _expect(len(finite) == 1, path, what)  # the power floor; the MINIMUMs clip at +inf
        self.power_floor = finite[0]
        self.log_scales = [float(op.constant()) for op in ops if op.kind == "MUL" and op.constants[1] is not None]
        (self.top_db,) = (float(op.constant()) for op in ops if op.kind == "SUB")
        self.frames_per_chunk = (CHUNK_SAMPLES - self.n_fft) // self.hop + 1
        _expect(self.frames_per_chunk * self.hop == CHUNK_HOP, path, f"{what}: one chunk must give 80 ms of frames")

    @property
    def num_mels(self) -> int:
        return self.mel_filters.shape[1]

    @staticmethod
    def chunk_count(num_samples: int) -> int:
        return max(0, (num_samples - CHUNK_SAMPLES) // CHUNK_HOP + 1)

    def forward(self, audio: Tensor) -> Tensor:
        chunks = self.chunk_count(audio.shape[-1])
        with torch.autocast(audio.device.type, enabled=False):
            spectrum = F.conv1d(audio.float()[:, None] * PCM_SCALE, self.dft, stride=self.hop)
            bins = self.dft.shape[0] // 2
            power = (spectrum[:, :bins].square() + spectrum[:, bins:].square()).transpose(1, 2)
            decibels = torch.clamp(power[:, : chunks * self.frames_per_chunk] @ self.mel_filters, min=self.power_floor)
            decibels = decibels.log()
            for scale in self.log_scales:  # 10, then 1 / ln 10, as the graph multiplies them
                decibels = decibels * scale
            decibels = decibels.unflatten(1, (chunks, self.frames_per_chunk))
            decibels = torch.maximum(decibels, decibels.amax(dim=(2, 3), keepdim=True) - self.top_db)
            return decibels.flatten(1, 2) / MEL_DIVISOR + MEL_OFFSET


class Floor(nn.Module):
    """``max(x, floor)``: the graph's MAXIMUM with a constant after each leaky ReLU."""

    def __init__(self, floor: float):
        super().__init__()
        self.floor = floor

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp_min(self.floor)


@dataclass(frozen=True)
class Span:
    """What one window (frame) of a block's output holds: time rows ``stride j .. stride j + rows - 1`` for
    frame j when the stack runs over a whole mel sequence, of ``channels x bands`` values each."""

    rows: int
    stride: int
    channels: int
    bands: int


class SpeechEmbeddingNet(nn.Module):
    """The front end (:class:`OpenWakeWordLogMel`) and the convolutional stack of ``embedding_model.tflite``:
    five blocks, each ending in a max-pool, and the ``head`` convolution that makes the embedding."""

    def __init__(self, mel_path: Path, embedding_path: Path):
        super().__init__()
        self.log_mel = OpenWakeWordLogMel(mel_path)
        ops, input_shape = read_tflite(embedding_path)
        what = "speech embedding model (embedding_model.tflite)"
        _expect(len(input_shape) == 4 and input_shape[3] == 1, embedding_path, what)
        self.window_frames, mels = input_shape[1], input_shape[2]
        _expect(mels == self.log_mel.num_mels, embedding_path, f"{what} for {self.log_mel.num_mels} mel bands")
        blocks: list[nn.Sequential] = []
        layers: list[nn.Module] = []
        pending_padding = (0, 0)
        for op in ops:
            if op.kind == "PAD":
                pads = op.constants[1]  # (batch, time, mel, channel) x (before, after)
                _expect(not pads[[0, 3]].any() and (pads[:, 0] == pads[:, 1]).all(), embedding_path, what)
                pending_padding = (int(pads[1, 0]), int(pads[2, 0]))
            elif op.kind == "CONV_2D":
                layers.append(self._conv(op, pending_padding, embedding_path))
                pending_padding = (0, 0)
            elif op.kind == "LEAKY_RELU":
                layers.append(nn.LeakyReLU(op.options.Alpha()))
            elif op.kind == "MAXIMUM":
                layers.append(Floor(float(op.constant())))
            elif op.kind == "MAX_POOL_2D":
                layers.append(self._pool(op))
                blocks.append(nn.Sequential(*layers))
                layers = []
            else:
                raise ConfigError(f"{embedding_path} is not openWakeWord's {what}: it has a {op.kind} operator")
        _expect(len(layers) == 1 and isinstance(layers[0], nn.Conv2d), embedding_path, what)
        self.blocks = nn.ModuleList(blocks)
        self.head = layers[0]
        self.spans = self._spans(embedding_path, what)
        self.embedding_dim = self.head.out_channels
        self.eval()

    @staticmethod
    def _conv(op: TfliteOp, padding: tuple[int, int], path: Path) -> nn.Conv2d:
        """A CONV_2D (weights out x height x width x in, TFLite's SAME or VALID padding) as ``nn.Conv2d``."""
        weight, bias = op.constants[1], op.constants[2]
        options = op.options
        steps = (options.StrideH(), options.StrideW(), options.DilationHFactor(), options.DilationWFactor())
        _expect(steps == (1, 1, 1, 1) and options.FusedActivationFunction() == 0, path, "speech embedding model")
        out_channels, height, width, in_channels = weight.shape
        if options.Padding() == 0:  # SAME, stride 1: (k - 1) / 2 zeros each side for odd k
            _expect(height % 2 == 1 and width % 2 == 1, path, "speech embedding model")
            padding = (padding[0] + height // 2, padding[1] + width // 2)
        conv = nn.Conv2d(in_channels, out_channels, (height, width), padding=padding)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(weight).permute(0, 3, 1, 2))
            conv.bias.copy_(torch.from_numpy(bias))
        return conv

    @staticmethod
    def _pool(op: TfliteOp) -> nn.MaxPool2d:
        """A MAX_POOL_2D; TFLite's SAME pads the end, which is ``ceil_mode`` for stride = filter."""
        options = op.options
        size, stride = (options.FilterHeight(), options.FilterWidth()), (options.StrideH(), options.StrideW())
        return nn.MaxPool2d(size, stride, ceil_mode=options.Padding() == 0)

    def _spans(self, path: Path, what: str) -> list[Span]:
        """Each block's :class:`Span`, from one window of ``window_frames`` mel frames through the stack. Run
        over a whole mel sequence, the stack gives each window's rows only if nothing pads time and every
        pool tiles the window's rows; its stride in time must then be the 80 ms hop, and each block's
        ``channels x bands`` must pool evenly to the embedding's width."""
        rows, time_pool, bands, shapes = self.window_frames, 1, self.log_mel.num_mels, []
        for block in self.blocks:
            for layer in block:
                if isinstance(layer, nn.Conv2d):
                    _expect(layer.padding[0] == 0, path, f"{what}: it pads time")
                    rows -= layer.kernel_size[0] - 1
                    bands += 2 * layer.padding[1] - (layer.kernel_size[1] - 1)
                    channels = layer.out_channels
                elif isinstance(layer, nn.MaxPool2d):
                    size, step = layer.kernel_size[0], layer.stride[0]
                    _expect(size == step and rows % step == 0, path, f"{what}: a pool does not tile its window")
                    rows, time_pool = rows // step, time_pool * step
                    bands = -(-bands // layer.stride[1]) if layer.ceil_mode else bands // layer.stride[1]
            groups, rest = divmod(channels * bands, self.head.out_channels)
            _expect(groups > 0 and not rest, path, f"{what}: a block's width")
            shapes.append((rows, time_pool, channels, bands))
        rows -= self.head.kernel_size[0] - 1
        _expect(
            rows == 1 and time_pool * self.log_mel.hop == CHUNK_HOP, path, f"{what}: one frame per {CHUNK_HOP} samples"
        )
        return [Span(rows, time_pool // factor, channels, bands) for rows, factor, channels, bands in shapes]

    def maps(self, mel: Tensor, count: int):
        """The outputs ``(n, channels, time, mel)`` of the first ``count`` blocks over a mel sequence
        ``(n, time, mel)``, in order."""
        x = mel[:, None]
        for block in self.blocks[:count]:
            x = block(x)
            yield x

    def pooled(self, block_map: Tensor, index: int, frames: int) -> Tensor:
        """Block ``index``'s state ``(n, frames, embedding_dim)``: each frame's rows averaged over time, then
        the channel-major (channel, mel band) rows averaged in ``embedding_dim`` consecutive groups."""
        span = self.spans[index]
        means = F.avg_pool2d(block_map, (span.rows, 1), (span.stride, 1))[:, :, :frames]
        rows = means.permute(0, 2, 1, 3).flatten(2)
        return rows.unflatten(2, (self.embedding_dim, -1)).mean(-1)

    def embed(self, last_map: Tensor, frames: int) -> Tensor:
        """The 96-d embedding of each frame ``(n, frames, 96)`` from the last block's output."""
        return self.head(last_map)[:, :, :frames, 0].transpose(1, 2)


class SpeechEmbeddingUpstream(Upstream):
    """speech_embedding frames (see the module docstring): 80 ms apart, each from 76 mel frames."""

    context_dependent = False
    mixed_lengths = True

    def __init__(self, net: SpeechEmbeddingNet):
        super().__init__()
        self.net = net.eval()
        mel = net.log_mel
        self.hop_samples = CHUNK_HOP
        chunks = -(-net.window_frames // mel.frames_per_chunk)
        self.receptive_field = (chunks - 1) * CHUNK_HOP + CHUNK_SAMPLES
        #: Middle of the window's mel frames, each centred n_fft / 2 into its samples.
        self.first_center = (net.window_frames - 1) * mel.hop // 2 + mel.n_fft // 2
        self.num_states = len(net.blocks) + 1
        self.feature_dim = net.embedding_dim

    def train(self, mode: bool = True) -> SpeechEmbeddingUpstream:
        return super().train(False)

    def frame_count(self, num_samples: int) -> int:
        return 1 if num_samples < self.receptive_field else (num_samples - self.receptive_field) // CHUNK_HOP + 1

    def frame_centers_ms(self, num_samples: int, *, scene: bool = False) -> Tensor:
        if num_samples < self.receptive_field:  # padded so that its middle sample is the frame's centre
            return torch.tensor([min(num_samples // 2, self.first_center) * 1000 / SAMPLE_RATE], dtype=torch.float64)
        starts = torch.arange(self.frame_count(num_samples), dtype=torch.float64) * CHUNK_HOP
        return (starts + self.first_center) * 1000 / SAMPLE_RATE

    def visit_states(
        self,
        audio: Tensor,
        visit: StateVisitor,
        *,
        scene: bool = False,
        needed: Collection[int] | None = None,
        lengths: Tensor | None = None,
    ) -> None:
        """Every needed state in order, each computed only when the visitor still wants states: block i's
        state needs blocks 0..i; the embedding needs them all. ``lengths``: rows are zero-padded after their
        clip, which reaches only frames past the clip's own."""
        wanted = set(range(self.num_states) if needed is None else needed)
        if not wanted:
            return
        audio, lengths = centre_short_rows(audio, lengths, self.receptive_field, centre=self.first_center)
        frames = self.frame_count(int(lengths.max()))
        mel = self.net.log_mel(audio)
        last = max(wanted)
        for index, block_map in enumerate(self.net.maps(mel, min(last + 1, len(self.net.blocks)))):
            if index in wanted and visit(index, self.net.pooled(block_map, index, frames).float()):
                return
        if last == self.num_states - 1:
            visit(last, self.net.embed(block_map, frames).float())


def build_upstream(mel_path: Path, embedding_path: Path) -> SpeechEmbeddingUpstream:
    """The upstream of the two files; a graph that is not laid out as openWakeWord's (an operator short, an
    input that should be a constant) is a :class:`~hearfuse.errors.ConfigError` naming both files."""
    try:
        return SpeechEmbeddingUpstream(SpeechEmbeddingNet(mel_path, embedding_path))
    except ConfigError:
        raise
    except (ValueError, IndexError, AttributeError, TypeError) as error:
        raise ConfigError(
            f"{mel_path} and {embedding_path} are not openWakeWord's log-mel and speech embedding models ({error})"
        ) from None
