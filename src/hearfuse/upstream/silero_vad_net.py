"""Silero VAD v6's 16 kHz network and its :class:`~hearfuse.upstream.base.Upstream` (the registry entry is
:mod:`hearfuse.upstream.silero_vad`).

The package runs the network one chunk at a time: 512 new samples (32 ms) after the previous chunk's last
64 (zeros before the first chunk), 576 in all, reflection-padded by 64 on the right; a fixed DFT as a
strided convolution (256-sample windows every 128: 4 frames) and its magnitude (129 bins); four Conv1d +
ReLU blocks that reduce the 4 frames to one 128-d vector; an ``LSTMCell(128)`` whose ``(h, c)`` carries from
chunk to chunk; ReLU, a 1x1 convolution and a sigmoid: the chunk's speech probability. A clip's last
partial chunk is zero-padded to 512 samples, as the package's ``audio_forward`` and ``get_speech_timestamps``
pad it, so a clip of ``s`` samples has ``max(1, ceil(s / 512))`` frames; a clip shorter than one chunk has one.

Here a whole clip runs at once: every chunk's DFT and encoder in one batch, then the recurrence over the
chunks as an ``nn.LSTM`` holding the cell's weights (the same equations, one fused kernel instead of a
Python loop). The recurrence runs in float32 even under autocast, so that it runs alike on every device
(whether a backend's LSTM takes bf16 varies); it is a small part of the work, and in bf16 it would move the
outputs no more than the encoder's own rounding does (measured on speech).

Frames: chunk ``j`` covers samples ``[512 j, 512 j + 512)``, the span its probability is about (the
package's timestamps say so); its DFT spans ``[512 j - 64, 512 j + 576)`` (the last 64 reflected), centred
on the same point. Frame ``j`` is centred at ``512 j + 256`` samples: 16 ms + 32 ms ``j``.

States (4 x 128), in order: encoder block 1's output (128 channels x 4 DFT frames, the frames averaged),
block 2's (64 channels x 2 steps, flattened channel-major), block 4's (128 x 1: the LSTM's input) and the
LSTM's ``h`` (what the head reads). This is CREPE's rule (:meth:`~hearfuse.upstream.crepe_net.CrepeNet.states`):
each block's map average-pooled along time to the width of the model's last state, flattened channel-major.
Block 3 (64 channels x 1 step) has fewer values than that width, so no parameter-free pooling reaches it;
it is left out (block 4 sees all of it). The LSTM's cell state ``c`` is its memory, not an output; left out too.

Mixed lengths are exact: each chunk sees only its own 576 samples and the recurrence only earlier chunks,
so the zeros after a clip in a batch reach none of its frames (its partial last chunk is padded with zeros
either way).
"""

from __future__ import annotations

from pathlib import Path
from typing import Collection, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .base import StateVisitor, Upstream
from .weights import WeightsNotFoundError

SAMPLE_RATE = 16000
#: New samples per chunk (32 ms): the frame hop.
CHUNK = 512
#: Samples of the previous chunk each chunk sees again.
CONTEXT = 64
#: Samples reflected onto the right of each chunk's window before its DFT.
REFLECTED = 64
WIDTH = 128
NUM_STATES = 4
#: The encoder block whose output each of the first three states is.
STATE_BLOCKS = (0, 1, 3)

#: Each tensor's name in the package's safetensors file -> in :class:`SileroVadNet`.
_PACKAGE_NAMES = {
    "stft_conv.weight": "stft.weight",
    **{f"conv{b + 1}.{p}": f"encoder.{b}.{p}" for b in range(4) for p in ("weight", "bias")},
    **{f"lstm_cell.{p}": f"lstm.{p}_l0" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
    "final_conv.weight": "head.weight",
    "final_conv.bias": "head.bias",
}
#: The tensors of the package's 16 kHz ONNX file -> the package's names.
_ONNX_NAMES = {
    "model.stft.forward_basis_buffer": "stft_conv.weight",
    **{f"model.encoder.{b}.reparam_conv.{p}": f"conv{b + 1}.{p}" for b in range(4) for p in ("weight", "bias")},
    **{f"model.decoder.rnn.{p}": f"lstm_cell.{p}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
    "model.decoder.decoder.2.weight": "final_conv.weight",
    "model.decoder.decoder.2.bias": "final_conv.bias",
}


class SileroVadNet(nn.Module):
    """The 16 kHz network, run on whole clips ``(n, samples)``."""

    def __init__(self):
        super().__init__()
        self.stft = nn.Conv1d(1, 258, 256, stride=128, bias=False)  # real and imaginary DFT rows, 129 each
        self.encoder = nn.ModuleList(
            nn.Conv1d(i, o, 3, stride=s, padding=1)
            for i, o, s in ((129, 128, 1), (128, 64, 2), (64, 64, 2), (64, 128, 1))
        )
        self.lstm = nn.LSTM(WIDTH, WIDTH, batch_first=True)
        self.head = nn.Conv1d(WIDTH, 1, 1)
        self.eval()

    @classmethod
    def from_file(cls, path: Path) -> "SileroVadNet":
        """The network with the weights of the package's safetensors file (``.safetensors``) or 16 kHz ONNX
        file (any other name); :class:`ConfigError` in one line for a file that holds no such network."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path)) if path.suffix == ".safetensors" else _onnx_tensors(path)
            return cls().load_package_tensors(tensors)
        except WeightsNotFoundError:
            raise
        except (OSError, RuntimeError, ValueError, SafetensorError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__  # on one line
            raise ConfigError(
                f"Silero VAD checkpoint {path} does not hold the 16 kHz Silero VAD v6 network whole (expected the "
                f"silero-vad package's silero_vad_16k_op15.onnx or silero_vad_16k.safetensors): {reason}"
            ) from None

    def load_package_tensors(self, tensors: Mapping[str, Tensor]) -> "SileroVadNet":
        """Copy the weights, named as in the package's safetensors file (every one, shapes checked)."""
        missing, unexpected = set(_PACKAGE_NAMES) - set(tensors), set(tensors) - set(_PACKAGE_NAMES)
        if missing or unexpected:
            total = len(_PACKAGE_NAMES)
            raise ValueError(
                f"it lacks {len(missing)} of the network's {total} tensors and has {len(unexpected)} others"
            )
        self.load_state_dict({_PACKAGE_NAMES[name]: tensor for name, tensor in tensors.items()}, strict=True)
        return self

    @staticmethod
    def windows(audio: Tensor) -> Tensor:
        """Each chunk's 576 samples ``(n, chunks, 576)``: the audio zero-padded to whole chunks (at least one),
        with 64 zeros before the first."""
        chunks = max(1, -(-audio.shape[-1] // CHUNK))
        padded = F.pad(audio, (CONTEXT, chunks * CHUNK - audio.shape[-1]))
        return padded.unfold(-1, CONTEXT + CHUNK, CHUNK)

    def magnitude(self, windows: Tensor) -> Tensor:
        """DFT magnitudes ``(m, 129, 4)`` of windows ``(m, 576)``, squared and summed in float32 as the package."""
        spectrum = self.stft(F.pad(windows, (0, REFLECTED), mode="reflect")[:, None]).float()
        real, imaginary = spectrum.chunk(2, dim=1)
        return (real.square() + imaginary.square()).sqrt()

    def states(self, audio: Tensor, needed: Collection[int]) -> Iterator[tuple[int, Tensor]]:
        """The needed states ``(n, chunks, 128)`` in index order, each computed only when the one before
        has been taken (a consumer that stops early skips the rest of the network)."""
        windows = self.windows(audio)
        n, chunks, _ = windows.shape
        x = self.magnitude(windows.reshape(n * chunks, -1))
        last_block = STATE_BLOCKS[min(max(needed), len(STATE_BLOCKS) - 1)]  # the LSTM reads the last block
        for block, conv in enumerate(self.encoder[: last_block + 1]):
            x = F.relu(conv(x))
            if block in STATE_BLOCKS and STATE_BLOCKS.index(block) in needed:
                steps = WIDTH // x.shape[1]
                yield STATE_BLOCKS.index(block), F.adaptive_avg_pool1d(x, steps).flatten(1).view(n, chunks, WIDTH)
        if NUM_STATES - 1 in needed:
            yield NUM_STATES - 1, self.recur(x.view(n, chunks, WIDTH))

    def recur(self, inputs: Tensor) -> Tensor:
        """The LSTM's ``h`` after each chunk ``(n, chunks, 128)``, from zero state, in the LSTM's precision."""
        with torch.autocast(inputs.device.type, enabled=False):
            hidden, _ = self.lstm(inputs.to(self.lstm.weight_ih_l0.dtype))
        return hidden

    def speech_probabilities(self, audio: Tensor) -> Tensor:
        """Each chunk's speech probability ``(n, chunks)`` (float32), as the package's model gives it."""
        ((_, hidden),) = self.states(audio, (NUM_STATES - 1,))
        return torch.sigmoid(self.head(F.relu(hidden).transpose(1, 2))).float()[:, 0]


def _onnx_tensors(path: Path) -> dict[str, Tensor]:
    """The network's initialisers in an ONNX file, by the package's names (read as data: nothing runs)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ModuleNotFoundError:
        raise WeightsNotFoundError(
            f"reading {path} needs the onnx package: pip install onnx (or pip install 'hearfuse[real-models]')"
        ) from None
    from google.protobuf.message import DecodeError  # onnx's own dependency

    try:
        model = onnx.load(str(path), load_external_data=False)
    except DecodeError as error:
        raise ValueError(f"not an ONNX file ({error})") from None
    initialisers = {tensor.name: tensor for tensor in model.graph.initializer}
    missing = sorted(set(_ONNX_NAMES) - set(initialisers))
    if missing:
        raise ValueError(f"it lacks {len(missing)} of the network's {len(_ONNX_NAMES)} initialisers, e.g. {missing[0]}")
    return {
        name: torch.from_numpy(numpy_helper.to_array(initialisers[key]).copy()) for key, name in _ONNX_NAMES.items()
    }


class SileroVadUpstream(Upstream):
    """Silero VAD frames: one per 512-sample chunk, centred at 16 ms + 32 ms ``j`` (module docstring)."""

    context_dependent = True  # the LSTM carries everything before a frame
    mixed_lengths = True
    num_states = NUM_STATES
    feature_dim = WIDTH
    hop_samples = CHUNK
    receptive_field = CONTEXT + CHUNK

    def __init__(self, net: SileroVadNet):
        super().__init__()
        self.net = net.eval()

    def frame_centers_ms(self, num_samples: int, *, scene: bool = False) -> Tensor:
        count = max(1, -(-num_samples // CHUNK))
        return (CHUNK // 2 + CHUNK * torch.arange(count, dtype=torch.float64)) * 1000 / SAMPLE_RATE

    def visit_states(
        self,
        audio: Tensor,
        visit: StateVisitor,
        *,
        scene: bool = False,
        needed: Collection[int] | None = None,
        lengths: Tensor | None = None,
    ) -> None:
        """``lengths`` needs no handling: the zeros after a shorter clip reach none of its frames."""
        for index, state in self.net.states(audio, range(self.num_states) if needed is None else needed):
            if visit(index, state):
                return

    def speech_probabilities(self, audio: Tensor) -> Tensor:
        """Speech probability of each frame ``(n, frames)``, as the package's ``audio_forward`` gives it."""
        return self.net.speech_probabilities(audio)
