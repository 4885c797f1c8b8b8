"""Basic Pitch's network in torch and its :class:`~hearfuse.upstream.base.Upstream` (the registry entry is
:mod:`hearfuse.upstream.basic_pitch`).

The network (``basic_pitch.models.model``, as exported to ``nmp.onnx``) on one window of 43,844 samples at
22,050 Hz: nnAudio's CQT2010v2 (9 octaves of 36 bins from 27.5 Hz, each octave a strided convolution of the
reflect-padded signal with the same 36 complex kernels, the signal low-passed and halved between octaves; the
top 309 bins kept), power in dB min-max normalised over the whole window, a batch norm, harmonic stacking
(the CQT shifted by 0.5, 1, ..., 7 harmonics: 8 channels of 264 bins), then small convolutions: a contour
branch (264 bins, a third of a semitone each) feeding a note branch (88 keys), and an onset branch that also
reads the notes. Batch norms are folded into the convolutions in the ONNX graph; the tensors are read from it.

Windows. The min-max normalisation spans a whole window, and the lowest octave's kernels are nearly as long as
one, so a frame depends on the window it is computed in: the network runs on the 2 s windows it was trained on,
as the package's ``inference.run_inference`` does (3,840 zeros before the clip, each window's first and last 15
frames dropped, the 142 frames between kept). The package steps windows by 36,164 samples, which is not a
whole number of hops, so its frames drift by 188 samples per window; here windows step by 142 hops (36,352
samples), so frame ``j`` of a clip is centred exactly at ``j * 256`` samples (22,050 Hz) and every frame keeps
the 15-frame margins the package gives it. A clip shorter than a window is zero-padded to one, as the package
does: every clip gives at least one frame, centred at its start.

States: seven maps, in the order the model computes them: the harmonic stack, the contour branch's hidden
map and its output, the note branch's hidden map and its output, the onset branch's hidden map and its output.
Their widths differ (8 x 264, 32 x 88, 1 x 264, 1 x 88), and no channel-keeping pooling gives 32-channel and
1-channel maps one width, so each frame's map is averaged over its channels and its 264-bin ones over the
three bins of each key (the note branch's own stride-3 grouping): every state is 88 values, one per piano key,
A0 to C8, parameter-free. On the stack the channel mean is a harmonic sum; the outputs (note, onset) are
untouched and the contour is averaged per key; :meth:`BasicPitchNet.outputs` gives all three at full width.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Callable, Collection

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..audio import resample
from ..errors import ConfigError
from .base import StateVisitor, Upstream, module_device

INPUT_RATE = 16000
#: The rate Basic Pitch runs at, and its frame hop there (about 86 frames a second).
NET_RATE = 22050
HOP = 256
#: Samples in one window the network runs on (``constants.AUDIO_N_SAMPLES``: 2 s less one hop).
WINDOW = 43844
WINDOW_FRAMES = WINDOW // HOP + 1
#: Frames dropped at each end of a window (half of ``run_inference``'s 30 overlapping frames).
MARGIN_FRAMES = 15
CORE_FRAMES = WINDOW_FRAMES - 2 * MARGIN_FRAMES
WINDOW_STEP = CORE_FRAMES * HOP
#: Zeros before a clip, so that its first frame is a window's first kept frame.
LEAD = MARGIN_FRAMES * HOP
#: Windows per network call: bounds the memory of a long clip (about 7 MB of maps per window).
WINDOW_BATCH = 32

BINS_PER_OCTAVE = 36
OCTAVES = 9
CQT_BINS = 309
STACK_BINS = 264
KEYS = 88
HARMONICS = (0.5, 1, 2, 3, 4, 5, 6, 7)
#: Each harmonic's shift in CQT bins (``nn.HarmonicStacking``).
SHIFTS = tuple(round(BINS_PER_OCTAVE * math.log2(h)) for h in HARMONICS)

STACK, CONTOUR_HIDDEN, CONTOUR, NOTE_HIDDEN, NOTE, ONSET_HIDDEN, ONSET = range(7)
NUM_STATES = 7

#: The 2-D convolutions after the harmonic stack, by the shape of their ONNX kernel (out, in, time, frequency):
#: name, stride and padding ("same" in Keras; the ONNX graph states the pads).
_CONVOLUTIONS = {
    (8, 8, 3, 39): ("contour_conv", 1, (1, 19)),
    (1, 8, 5, 5): ("contour_out", 1, (2, 2)),
    (32, 1, 7, 7): ("note_conv", (1, 3), (3, 2)),
    (1, 32, 7, 3): ("note_out", 1, (3, 1)),
    (32, 8, 5, 5): ("onset_conv", (1, 3), (2, 1)),
    (1, 33, 3, 3): ("onset_out", 1, (1, 1)),
}


_HOP_AT_INPUT = Fraction(HOP * INPUT_RATE, NET_RATE)  # 81920/441 samples at 16 kHz


def frame_count(num_samples: int) -> int:
    """Frames of a clip of ``num_samples`` at 16 kHz: those centred within it (at least one)."""
    return max(1, math.ceil(num_samples / _HOP_AT_INPUT))


class BasicPitchNet(nn.Module):
    """Basic Pitch on windows ``(n, 43844)`` at 22,050 Hz; ``n`` windows run as one batch."""

    def __init__(self):
        super().__init__()
        for name, size in [
            ("cqt_real_kernels", (36, 1, 256)),
            ("cqt_imag_kernels", (36, 1, 256)),
            ("cqt_real_bias", (36,)),
            ("cqt_imag_bias", (36,)),
            ("lowpass_kernel", (1, 1, 256)),
            ("lowpass_bias", (1,)),
            ("cqt_scale", (CQT_BINS,)),  # sqrt of each bin's kernel length: librosa's normalisation
            ("log_norm_scale", (1,)),  # the batch norm after the normalised log power
            ("log_norm_shift", (1,)),
        ]:
            self.register_buffer(name, torch.zeros(size))
        for (out_channels, in_channels, *kernel), (name, stride, padding) in _CONVOLUTIONS.items():
            self.add_module(name, nn.Conv2d(in_channels, out_channels, tuple(kernel), stride, padding))
        self.eval()

    @classmethod
    def from_onnx(cls, path: str | Path) -> "BasicPitchNet":
        """The network with every tensor read from Basic Pitch's ONNX export; :class:`ConfigError` when ``path``
        holds anything else."""
        net = cls()
        try:
            tensors = read_onnx_tensors(path)
            with torch.no_grad():
                for name, tensor in net.state_dict(keep_vars=True).items():
                    tensor.copy_(torch.from_numpy(tensors[name].copy()).reshape(tensor.shape))
        except Exception as error:  # onnx raises protobuf's DecodeError on a file that is not ONNX
            raise ConfigError(
                f"Basic Pitch checkpoint {path} is not an ONNX export of Basic Pitch's network "
                f"(nmp.onnx) ({type(error).__name__}: {error})"
            ) from None
        return net

    def train(self, mode: bool = True) -> "BasicPitchNet":
        return super().train(False)

    def log_cqt(self, windows: Tensor) -> Tensor:
        """The normalised, batch-normed log-power CQT ``(n, frames, 309)``, in the buffers' precision (float32)
        whatever autocast asks: the min-max normalisation over a window would move with a bf16 CQT."""
        with torch.autocast(windows.device.type, enabled=False):
            x = windows.to(self.cqt_real_kernels.dtype)[:, None, :]
            kernels = torch.cat([self.cqt_real_kernels, self.cqt_imag_kernels])
            bias = torch.cat([self.cqt_real_bias, self.cqt_imag_bias])
            half, taps = kernels.shape[-1] // 2, self.lowpass_kernel.shape[-1]
            octaves = []
            for octave in range(OCTAVES):
                if octave:  # the next octave down: low-passed, every second sample
                    x = F.pad(x, ((taps - 1) // 2, (taps - 1) // 2))
                    x = F.conv1d(x, self.lowpass_kernel, self.lowpass_bias, stride=2)
                spectrum = F.conv1d(F.pad(x, (half, half), mode="reflect"), kernels, bias, stride=HOP >> octave)
                real, imaginary = spectrum.chunk(2, dim=1)
                octaves.append(real.square() + imaginary.square())
            power = torch.cat(octaves[::-1], dim=1)[:, -CQT_BINS:] * self.cqt_scale[:, None].square()
            decibels = 10 * torch.log10(power.transpose(1, 2) + 1e-10)
            offset = decibels - decibels.amin(dim=(1, 2), keepdim=True)
            peak = offset.amax(dim=(1, 2), keepdim=True)
            normalised = torch.where(peak > 0, offset / peak, torch.zeros_like(offset))  # TF's divide_no_nan
            return normalised * self.log_norm_scale + self.log_norm_shift

    def harmonic_stack(self, windows: Tensor) -> Tensor:
        """``(n, 8, frames, 264)``: the log CQT shifted down by each harmonic's bins, zero-filled."""
        cqt = self.log_cqt(windows)
        below, above = -min(SHIFTS), max(SHIFTS) + STACK_BINS - CQT_BINS
        padded = F.pad(cqt, (below, above))
        return torch.stack([padded[..., below + shift : below + shift + STACK_BINS] for shift in SHIFTS], dim=1)

    def maps(self, windows: Tensor, wanted: Collection[int]) -> dict[int, Tensor]:
        """The ``(n, channels, frames, bins)`` maps of the wanted states, computing only what they need."""
        computed: dict[int, Tensor] = {}

        def get(index: int) -> Tensor:
            if index not in computed:
                computed[index] = self._layer(index, windows, get)
            return computed[index]

        return {index: get(index) for index in wanted}

    def _layer(self, index: int, windows: Tensor, get: Callable[[int], Tensor]) -> Tensor:
        if index == STACK:
            return self.harmonic_stack(windows)
        if index == CONTOUR_HIDDEN:
            return F.relu(self.contour_conv(get(STACK)))
        if index == CONTOUR:
            return torch.sigmoid(self.contour_out(get(CONTOUR_HIDDEN)))
        if index == NOTE_HIDDEN:
            return F.relu(self.note_conv(get(CONTOUR)))
        if index == NOTE:
            return torch.sigmoid(self.note_out(get(NOTE_HIDDEN)))
        if index == ONSET_HIDDEN:
            return F.relu(self.onset_conv(get(STACK)))
        if index == ONSET:
            return torch.sigmoid(self.onset_out(torch.cat([get(NOTE), get(ONSET_HIDDEN)], dim=1)))
        raise IndexError(f"Basic Pitch has states 0..{NUM_STATES - 1}, not {index}")

    def outputs(self, windows: Tensor) -> dict[str, Tensor]:
        """The model's outputs, as the ONNX model gives them: note and onset ``(n, frames, 88)``, contour
        ``(n, frames, 264)``."""
        maps = self.maps(windows, (CONTOUR, NOTE, ONSET))
        return {"note": maps[NOTE][:, 0], "onset": maps[ONSET][:, 0], "contour": maps[CONTOUR][:, 0]}

    def states(self, windows: Tensor, wanted: Collection[int]) -> dict[int, Tensor]:
        """The wanted states ``(n, frames, 88)``: each map averaged over its channels, a 264-bin one over the
        three bins of each key."""
        states = {}
        for index, hidden in self.maps(windows, wanted).items():
            per_bin = hidden.mean(dim=1)
            states[index] = F.avg_pool1d(per_bin, 3) if per_bin.shape[-1] == STACK_BINS else per_bin
        return states


def read_onnx_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of Basic Pitch's ONNX graph under :class:`BasicPitchNet`'s names, found by the operations that
    use them (the graph's own names are TensorFlow's): the CQT's two kernel banks (the imaginary one is the
    convolution whose output is negated), the low-pass filter, the per-bin scale, the batch norm after the log
    (a Mul and an Add of one value) and the six 2-D convolutions by their kernel shapes."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    negated = {node.input[0] for node in graph.node if node.op_type == "Neg"}
    found: dict[str, np.ndarray] = {}
    for node in graph.node:
        operands = [constants.get(name) for name in node.input]
        if node.op_type == "Conv":
            kernel, bias = operands[1], operands[2]
            shape = tuple(kernel.shape)
            if shape == (36, 1, 1, 256):
                name = "cqt_imag" if node.output[0] in negated else "cqt_real"
                found[f"{name}_kernels"], found[f"{name}_bias"] = kernel, bias
            elif shape == (1, 1, 1, 256):
                found["lowpass_kernel"], found["lowpass_bias"] = kernel, bias
            elif shape in _CONVOLUTIONS:
                name = _CONVOLUTIONS[shape][0]
                found[f"{name}.weight"], found[f"{name}.bias"] = kernel, bias
        elif node.op_type in ("Mul", "Add") and operands[-1] is not None:
            shape = operands[-1].shape
            if node.op_type == "Mul" and shape == (CQT_BINS, 1, 1):
                found["cqt_scale"] = operands[-1]
            elif shape == (1,):
                found["log_norm_scale" if node.op_type == "Mul" else "log_norm_shift"] = operands[-1]
    return found


class BasicPitchUpstream(Upstream):
    """Basic Pitch on 16 kHz clips: each resampled to 22,050 Hz with soxr HQ (what ``librosa.load`` in the
    package's inference uses), on the CPU, then run in 2 s windows (module docstring) on the network's device.

    Frame ``j`` is centred at ``j * 256 / 22050`` s: ``hop_samples`` is 81920/441 (not a whole number) of
    16 kHz samples. The fusion's long-audio windowing cuts clips at whole 16 kHz samples, which would put
    pieces off this grid, so it is not applied (:attr:`windows_itself`): a clip of any length runs in
    bounded memory, :data:`WINDOW_BATCH` windows at a time, and its frames are exact.
    """

    num_states = NUM_STATES
    feature_dim = KEYS
    context_dependent = True  # a frame depends on the 2 s window it is computed in
    mixed_lengths = True  # each clip is resampled and windowed alone: padding never reaches its windows
    windows_itself = True
    hop_samples = float(_HOP_AT_INPUT)
    receptive_field = math.ceil(Fraction(WINDOW * INPUT_RATE, NET_RATE))

    def __init__(self, net: BasicPitchNet):
        super().__init__()
        self.net = net.eval()

    def train(self, mode: bool = True) -> "BasicPitchUpstream":
        return super().train(False)

    def frame_centers_ms(self, num_samples: int, *, scene: bool = False) -> Tensor:
        return torch.arange(frame_count(num_samples), dtype=torch.float64) * (1000 * HOP / NET_RATE)

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
        states = self.states(audio, wanted, lengths)
        for index in wanted:
            if visit(index, states.pop(index)):
                return

    def states(self, audio: Tensor, wanted: Collection[int], lengths: Tensor | None = None) -> dict[int, Tensor]:
        """The wanted states ``(n, frames, 88)`` (float32) of each clip of ``audio`` ``(n, samples)`` at 16 kHz,
        its real samples ``lengths`` (default: all); a shorter clip's frames past its own are zero."""
        sizes = [audio.shape[-1]] * audio.shape[0] if lengths is None else [int(n) for n in lengths.tolist()]
        counts = [frame_count(size) for size in sizes]
        clips = audio.detach().float().cpu().numpy()
        windows = torch.cat([self._windows(clip[:size], count) for clip, size, count in zip(clips, sizes, counts)])
        device = module_device(self)
        kept: dict[int, list[Tensor]] = {index: [] for index in wanted}
        for start in range(0, len(windows), WINDOW_BATCH):
            chunk = windows[start : start + WINDOW_BATCH].to(device)
            for index, state in self.net.states(chunk, wanted).items():
                kept[index].append(state[:, MARGIN_FRAMES : MARGIN_FRAMES + CORE_FRAMES].float())
        outputs = {}
        for index, pieces in kept.items():
            frames = torch.cat(pieces)
            state = frames.new_zeros((len(sizes), max(counts), KEYS))
            first = 0
            for row, count in enumerate(counts):
                used = -(-count // CORE_FRAMES)
                state[row, :count] = frames[first : first + used].reshape(-1, KEYS)[:count]
                first += used
            outputs[index] = state
        return outputs

    @staticmethod
    def _windows(clip: np.ndarray, count: int) -> Tensor:
        """The ``(windows, 43844)`` windows at 22,050 Hz whose kept frames are the clip's first ``count``."""
        audio = torch.from_numpy(resample(clip, INPUT_RATE, NET_RATE))
        used = -(-count // CORE_FRAMES)
        padded = torch.zeros((used - 1) * WINDOW_STEP + WINDOW)
        padded[LEAD : LEAD + len(audio)] = audio
        return padded.unfold(0, WINDOW, WINDOW_STEP)
