"""CREPE's network and its :class:`~hearfuse.upstream.base.Upstream` (the registry entry is
:mod:`hearfuse.upstream.crepe`).

The network has two forms of the same maths, chosen by ``conv_form``:

- ``"conv"``: ``Conv1d`` on ``(frames, channels, time)`` tensors. The Keras model (and
  torchcrepe) write ``(k, 1)`` ``Conv2d``, about 3x slower on CPU. On an H200 under bf16 this
  form ran at 110 TFLOP/s (``benchmarks.member_profile``), in cuDNN kernels that mostly miss the
  tensor cores; a height-1 ``Conv2d`` in channels-last memory measured 4 % slower.
- ``"matmul"``: every convolution as matrix products on ``(frames, time, channels)`` tensors
  (:mod:`hearfuse.upstream.conv_matmul`): unfolded windows times the kernel for the strided
  first layer and the narrow late ones; for the widest (conv2 of the full model, 1024 -> 128
  channels, 75 % of its FLOPs) one product with all 64 taps side by side whose shifted diagonals
  are summed, which reads the input once instead of copying it 64 times.
- ``"auto"`` (default): ``matmul`` on CUDA, ``conv`` elsewhere: on 2 CPU cores oneDNN's
  convolutions are 1.8x faster than the products (CREPE full, 256 frames, float32).

It is an ``nn.Module`` like any other: ``.to(device)`` moves it, many clips' frames run in one
batch, and it runs under bf16 autocast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Collection, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import StateVisitor, Upstream, centered_frame_count
from .conv_forms import check_conv_form
from .conv_matmul import conv1d_matmul, uses_matmul
from .crepe_spec import (
    BASE_FILTERS,
    CAPACITIES,
    DEFAULT_FIRST_CENTER_MS,
    DEFAULT_HOP_MS,
    NUM_STATES,
    embedding_dim,
)

FRAME_SAMPLES = 1024
SAMPLE_RATE = 16000
PITCH_BINS = 360
_BN_EPS = 0.001  # Keras' BatchNormalization default, as the weights were trained with


class CrepeNet(nn.Module):
    """CREPE's convolutional network on 1024-sample frames."""

    def __init__(self, capacity: str = "full", conv_form: str = "auto"):
        super().__init__()
        if capacity not in CAPACITIES:
            raise ValueError(f"unknown CREPE capacity {capacity!r}; choose one of {list(CAPACITIES)}")
        self.capacity = capacity
        self.conv_form = check_conv_form(conv_form)
        filters = [CAPACITIES[capacity] * base for base in BASE_FILTERS]
        in_channels = [1] + filters[:-1]
        kernels = [512] + [64] * 5
        strides = [4] + [1] * 5
        self.convs = nn.ModuleList(
            nn.Conv1d(i, o, k, stride=s) for i, o, k, s in zip(in_channels, filters, kernels, strides)
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(o, eps=_BN_EPS) for o in filters)
        self.classifier = nn.Linear(filters[-1] * 4, PITCH_BINS)
        self.eval()

    @staticmethod
    def _same_padding(length: int, kernel: int, stride: int) -> tuple[int, int]:
        """Keras 'same' padding: the odd sample goes to the right."""
        total = max((-(-length // stride) - 1) * stride + kernel - length, 0)
        return total // 2, total - total // 2

    def _block(self, x: Tensor, index: int) -> Tensor:
        """Block ``index`` (conv, ReLU, batch norm, max-pool) on ``(frames, channels, time)``."""
        conv = self.convs[index]
        x = F.pad(x, self._same_padding(x.shape[-1], conv.kernel_size[0], conv.stride[0]))
        x = self.norms[index](F.relu(conv(x)))
        return F.max_pool1d(x, 2, 2)

    def _matmul_block(self, x: Tensor, index: int) -> Tensor:
        """:meth:`_block` as matrix products, on ``(frames, time, channels)``."""
        conv, norm = self.convs[index], self.norms[index]
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        padding = self._same_padding(x.shape[1], kernel, stride)
        y = F.relu(conv1d_matmul(x, conv.weight, conv.bias, stride=stride, padding=padding))
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        y = y * scale + (norm.bias - norm.running_mean * scale)
        return y.view(y.shape[0], y.shape[1] // 2, 2, y.shape[2]).amax(2)

    def _maps(self, frames: Tensor, count: int) -> Iterator[Tensor]:
        """The ``(frames, channels, time)`` output of each of the first ``count`` blocks, in the
        form :attr:`conv_form` selects (matmul maps are transposed views)."""
        if uses_matmul(self.conv_form, frames):
            x = frames[:, :, None]
            for index in range(count):
                x = self._matmul_block(x, index)
                yield x.transpose(1, 2)
        else:
            x = frames[:, None, :]
            for index in range(count):
                x = self._block(x, index)
                yield x

    def embed(self, frames: Tensor) -> Tensor:
        """Pool-5 output flattened channel-major, ``(batch, channels * 8)``, as torchcrepe.embed."""
        return self.states(frames, (NUM_STATES - 1,))[NUM_STATES - 1]

    def states(self, frames: Tensor, needed: Collection[int]) -> dict[int, Tensor]:
        """The needed hidden states ``(batch, embedding_dim)``: block i's ``(channels, time)`` map
        average-pooled along time to the embedding's width, flattened channel-major.

        Pooling gives every state one width (pool-1 would otherwise be 128 steps x 32c channels),
        so states can be compared, probed and averaged like a transformer's; pool-5 is untouched
        (it already has that width), pool-4 too (16 steps x 4c channels); pool-1..3 average
        64, 4 and 2 adjacent steps.
        """
        width = embedding_dim(self.capacity)
        out = {}
        for index, x in enumerate(self._maps(frames, max(needed) + 1)):
            if index in needed:
                steps = width // x.shape[1]
                out[index] = (x if x.shape[-1] == steps else F.avg_pool1d(x, x.shape[-1] // steps)).flatten(1)
        return out

    def salience(self, frames: Tensor) -> Tensor:
        """Pitch-bin activations ``(batch, 360)`` (sigmoid), 20-cent bins from 1997.38 cents."""
        *_, x = self._maps(frames, 6)
        return torch.sigmoid(self.classifier(x.transpose(1, 2).flatten(1)))

    def load_keras_weights(self, path: str | Path) -> "CrepeNet":
        """Copy weights from the original Keras HDF5 file."""
        import h5py

        with h5py.File(path, "r") as weights:

            def tensor(layer: str, name: str) -> Tensor:
                group = weights[layer]
                (inner,) = group.keys()
                return torch.from_numpy(group[inner][f"{name}:0"][()])

            with torch.no_grad():
                for index, (conv, norm) in enumerate(zip(self.convs, self.norms), start=1):
                    conv.weight.copy_(tensor(f"conv{index}", "kernel").permute(2, 1, 0))
                    conv.bias.copy_(tensor(f"conv{index}", "bias"))
                    norm.weight.copy_(tensor(f"conv{index}-BN", "gamma"))
                    norm.bias.copy_(tensor(f"conv{index}-BN", "beta"))
                    norm.running_mean.copy_(tensor(f"conv{index}-BN", "moving_mean"))
                    norm.running_var.copy_(tensor(f"conv{index}-BN", "moving_variance"))
                self.classifier.weight.copy_(tensor("classifier", "kernel").T)
                self.classifier.bias.copy_(tensor("classifier", "bias"))
        return self


def normalize_frames(frames: Tensor) -> Tensor:
    """Per-frame zero mean and unit (unbiased) standard deviation, as torchcrepe and the paper's code."""
    frames = frames - frames.mean(dim=-1, keepdim=True)
    return frames / frames.std(dim=-1, keepdim=True).clamp_min(1e-10)


class CrepeUpstream(Upstream):
    """CREPE frames of 1024 samples centred at ``first_center + j * hop`` (zero-padded at the edges).

    With ``first_center_ms=0`` this is torchcrepe's ``pad=True`` framing: ``1 + n // hop`` frames.
    ``scene_hop_ms`` lets scene embeddings use a coarser hop, as the paper's code does (250 ms).
    """

    context_dependent = False
    mixed_lengths = True
    num_states = NUM_STATES
    receptive_field = FRAME_SAMPLES

    def __init__(
        self,
        net: CrepeNet,
        *,
        hop_ms: float = DEFAULT_HOP_MS,
        scene_hop_ms: float | None = None,
        first_center_ms: float = DEFAULT_FIRST_CENTER_MS,
        frame_batch: int = 512,
    ):
        super().__init__()
        self.net = net.eval()
        self.feature_dim = embedding_dim(net.capacity)
        self.hop_samples = self._samples(hop_ms, "hop_ms")
        self.scene_hop_samples = self._samples(scene_hop_ms if scene_hop_ms is not None else hop_ms, "scene_hop_ms")
        self.first_center = round(first_center_ms * SAMPLE_RATE / 1000)
        if self.first_center < 0:
            raise ValueError("first_center_ms must be >= 0")
        if frame_batch < 1:
            raise ValueError("frame_batch must be >= 1")
        self.frame_batch = frame_batch

    @staticmethod
    def _samples(ms: float, name: str) -> int:
        samples = round(ms * SAMPLE_RATE / 1000)
        if samples < 1 or abs(samples - ms * SAMPLE_RATE / 1000) > 1e-6:
            raise ValueError(f"{name}={ms} must be a positive whole number of samples at 16 kHz (1/16 ms)")
        return samples

    @property
    def conv_form(self) -> str:
        """How the network's convolutions run (:class:`CrepeNet`); the outputs are the same."""
        return self.net.conv_form

    @conv_form.setter
    def conv_form(self, form: str) -> None:
        self.net.conv_form = check_conv_form(form)

    def train(self, mode: bool = True) -> "CrepeUpstream":
        return super().train(False)  # BatchNorm must keep its running statistics

    def frame_hop_samples(self, *, scene: bool = False) -> int:
        return self.scene_hop_samples if scene else self.hop_samples

    def frame_centers_ms(self, num_samples: int, *, scene: bool = False) -> Tensor:
        hop = self.frame_hop_samples(scene=scene)
        count = centered_frame_count(num_samples, hop, self.first_center)
        return (self.first_center + torch.arange(count, dtype=torch.float64) * hop) * 1000 / SAMPLE_RATE

    def visit_states(
        self,
        audio: Tensor,
        visit: StateVisitor,
        *,
        scene: bool = False,
        needed: Collection[int] | None = None,
        lengths: Tensor | None = None,
    ) -> None:
        wanted = sorted(range(self.num_states) if needed is None else needed)
        states = self.states(audio, hop=self.frame_hop_samples(scene=scene), needed=wanted, lengths=lengths)
        for index in wanted:
            if visit(index, states.pop(index)):
                return

    def embed(self, audio: Tensor, *, hop: int) -> Tensor:
        """Pool-5 embeddings ``(n, frames, dim)`` of every frame."""
        return self.states(audio, hop=hop, needed=(self.num_states - 1,))[self.num_states - 1]

    def states(
        self, audio: Tensor, *, hop: int, needed: Collection[int], lengths: Tensor | None = None
    ) -> dict[int, Tensor]:
        """The needed states ``(n, frames, dim)`` of every frame, computed ``frame_batch`` frames at a time.

        Frames are independent, so the frames of all clips, whatever their lengths (``lengths``), are
        pooled into network calls of ``frame_batch`` frames; a shorter clip's frames past its own end
        are left zero and never computed.
        """
        n_sounds, num_samples = audio.shape
        sizes = [num_samples] * n_sounds if lengths is None else [int(length) for length in lengths]
        counts = torch.tensor([centered_frame_count(size, hop, self.first_center) for size in sizes])
        half = FRAME_SAMPLES // 2
        # Pad so that every frame centre up to the clip end has a full window; frames are views.
        padded = F.pad(audio.float(), (half, half + max(0, self.first_center - num_samples)))
        frames = padded[:, self.first_center :].unfold(-1, FRAME_SAMPLES, hop)
        rows = torch.repeat_interleave(torch.arange(n_sounds), counts).to(audio.device)
        columns = torch.cat([torch.arange(count) for count in counts.tolist()]).to(audio.device)
        outputs: dict[int, Tensor] = {}
        for start in range(0, len(rows), self.frame_batch):
            where = rows[start : start + self.frame_batch], columns[start : start + self.frame_batch]
            for index, state in self.net.states(normalize_frames(frames[where]), needed).items():
                if index not in outputs:
                    outputs[index] = state.new_zeros(
                        (n_sounds, int(counts.max()), state.shape[-1]), dtype=torch.float32
                    )
                outputs[index][where] = state.float()
        return outputs
