"""Resemblyzer's GE2E speaker encoder in torch and its :class:`~hearfuse.upstream.base.Upstream` (the registry
entry is :mod:`hearfuse.upstream.resemblyzer`).

The network (``resemblyzer.VoiceEncoder``): a 40-band mel power spectrogram (25 ms windows every 10 ms, no log),
three stacked LSTM layers of 256, and a projection (linear 256 -> 256, ReLU, L2 norm) of the last layer's final
output. The package embeds an utterance by running the network on 1.6 s windows (160 mel frames) and averaging
their projections (:meth:`SpeakerEncoder.embed_utterance`).

States, one per 10 ms mel frame, all 256 wide: each LSTM layer's output, then the speaker projection of the last
layer's output at that frame, i.e. the embedding the package would give an utterance that ended there (and
began where the clip does). The LSTM outputs are what the recurrence carries; the projection is what GE2E trained
to separate speakers; so the layer mean and ``hearfuse layers`` see every representation the network has.

The LSTM runs over the whole clip (so ``context_dependent``). It is unidirectional: frame j depends on the clip up
to its own window only, so zero padding after a clip cannot reach its frames, and clips of different lengths share
a batch exactly. Frame j's window is centred on sample 160 j (librosa's centred STFT, zero-padded 200 samples
beyond each end), so the first frame is centred on the clip's first sample and half its window is padding, the
last on the last multiple of 10 ms within the clip: every clip of at least one sample gives ``1 + samples // 160``
frames, so one shorter than a hop (160 samples) gives one frame, whose window holds all of it with zeros around.

Under autocast the mel and the LSTM stay float32 (:meth:`SpeakerEncoder.layer_outputs` says why); the projection
follows autocast.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Collection, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import StateVisitor, Upstream, centered_frame_count

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms, also the FFT size
HOP = 160  # 10 ms
MELS = 40
HIDDEN = 256
LAYERS = 3
#: Mel frames of one partial utterance (1.6 s), the length the encoder was trained on.
PARTIAL_FRAMES = 160

#: The tensors of ``model_state`` that the encoder uses, and their shapes (the file also holds GE2E's
#: similarity scale and bias, which only the training loss uses).
STATE_SHAPES = {
    **{
        f"lstm.{name}_l{layer}": shape
        for layer in range(LAYERS)
        for name, shape in (
            ("weight_ih", (4 * HIDDEN, MELS if layer == 0 else HIDDEN)),
            ("weight_hh", (4 * HIDDEN, HIDDEN)),
            ("bias_ih", (4 * HIDDEN,)),
            ("bias_hh", (4 * HIDDEN,)),
        )
    },
    "linear.weight": (HIDDEN, HIDDEN),
    "linear.bias": (HIDDEN,),
}


class MelPower(nn.Module):
    """``resemblyzer.audio.wav_to_mel_spectrogram``: ``librosa.feature.melspectrogram`` (librosa 0.11) with 400
    FFT points, a hop of 160 and 40 bands, and librosa's defaults for the rest: a centred STFT zero-padded
    (``pad_mode="constant"``) by 200 samples at each end, a periodic Hann window, power 2, and Slaney-scale,
    Slaney-normalised mel filters from 0 to 8 kHz (``transformers``' ``mel_filter_bank`` gives librosa's)."""

    def __init__(self):
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        filters = mel_filter_bank(
            num_frequency_bins=WINDOW // 2 + 1,
            num_mel_filters=MELS,
            min_frequency=0.0,
            max_frequency=SAMPLE_RATE / 2,
            sampling_rate=SAMPLE_RATE,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("window", torch.hann_window(WINDOW, periodic=True), persistent=False)
        self.register_buffer("filters", torch.as_tensor(filters, dtype=torch.float32), persistent=False)

    def forward(self, audio: Tensor) -> Tensor:
        """``(n, samples)`` -> ``(n, 1 + samples // 160, 40)``, float32 also under autocast (for the LSTM)."""
        with torch.autocast(audio.device.type, enabled=False):
            spectrum = torch.stft(
                audio.float(), WINDOW, HOP, window=self.window, center=True, pad_mode="constant", return_complex=True
            )
            return spectrum.abs().square().transpose(1, 2) @ self.filters


class SpeakerEncoder(nn.Module):
    """``resemblyzer.VoiceEncoder``'s network, its three LSTM layers run one at a time so that each layer's
    output is seen (``nn.LSTM`` with three layers returns only the last's)."""

    def __init__(self):
        super().__init__()
        self.mel = MelPower()
        self.lstms = nn.ModuleList(
            nn.LSTM(MELS if layer == 0 else HIDDEN, HIDDEN, batch_first=True) for layer in range(LAYERS)
        )
        self.projection = nn.Linear(HIDDEN, HIDDEN)
        self.eval()

    @classmethod
    def from_file(cls, path: str | Path) -> "SpeakerEncoder":
        """The encoder with the weights of a Resemblyzer file; ValueError, in one line, for any other file."""
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"torch.load cannot read it ({first_line})") from None
        state = checkpoint.get("model_state") if isinstance(checkpoint, dict) else None
        if not isinstance(state, Mapping):
            raise ValueError("it holds no 'model_state' dictionary")
        for name, shape in STATE_SHAPES.items():
            found = state.get(name)
            if not isinstance(found, Tensor) or tuple(found.shape) != shape:
                got = tuple(found.shape) if isinstance(found, Tensor) else type(found).__name__
                raise ValueError(
                    f"{name} is {'missing' if found is None else got}, expected a tensor of shape {shape} "
                    "(a 40-band mel, 3 LSTM layers of 256, linear 256 -> 256)"
                )
        return cls().load_resemblyzer_state(state)

    def load_resemblyzer_state(self, state: Mapping[str, Tensor]) -> "SpeakerEncoder":
        """Copy ``VoiceEncoder``'s ``lstm.*_l{i}`` into layer i and ``linear.*`` into the projection."""
        with torch.no_grad():
            for layer, lstm in enumerate(self.lstms):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(lstm, f"{name}_l0").copy_(state[f"lstm.{name}_l{layer}"])
            self.projection.weight.copy_(state["linear.weight"])
            self.projection.bias.copy_(state["linear.bias"])
        return self

    def layer_outputs(self, mels: Tensor) -> Iterator[Tensor]:
        """Each LSTM layer's output ``(n, frames, 256)`` on mels ``(n, frames, 40)``, computed as it is asked for.

        Always in float32: autocast would run ``nn.LSTM`` in bfloat16, which oneDNN cannot on a CPU without
        AVX-512 ("could not create a primitive descriptor for the LSTM"), nor cuDNN before 9.13 (pytorch#164411);
        and a recurrence that runs one step at a time gains little from it."""
        hidden = mels.float()
        for lstm in self.lstms:
            with torch.autocast(hidden.device.type, enabled=False):
                hidden, _ = lstm(hidden)
            yield hidden

    def project(self, hidden: Tensor) -> Tensor:
        """The speaker embedding of last-layer outputs: linear, ReLU, L2 norm (as ``VoiceEncoder.forward``)."""
        return F.normalize(F.relu(self.projection(hidden)), dim=-1)

    def embed_partials(self, mels: Tensor) -> Tensor:
        """``VoiceEncoder.forward``: the embedding ``(n, 256)`` of each utterance's mels ``(n, frames, 40)``."""
        *_, last = self.layer_outputs(mels)
        return self.project(last[:, -1])

    def embed_utterance(self, wav: Tensor, *, rate: float = 1.3, min_coverage: float = 0.75) -> Tensor:
        """``VoiceEncoder.embed_utterance``: the L2-normed mean of the embeddings of the 160-frame partial
        utterances of a 16 kHz waveform ``(samples,)`` that :func:`partial_starts` places (the waveform
        zero-padded to the end of the last one), ``(256,)``."""
        starts = partial_starts(wav.shape[-1], rate=rate, min_coverage=min_coverage)
        wav = F.pad(wav, (0, max(0, (starts[-1] + PARTIAL_FRAMES) * HOP - wav.shape[-1])))
        mel = self.mel(wav[None])[0]
        partials = torch.stack([mel[start : start + PARTIAL_FRAMES] for start in starts])
        return F.normalize(self.embed_partials(partials).mean(dim=0), dim=0)


def partial_starts(num_samples: int, *, rate: float = 1.3, min_coverage: float = 0.75) -> list[int]:
    """First mel frame of each partial utterance, as ``VoiceEncoder.compute_partial_slices`` places them: one every
    ``round(16000 / rate / 160)`` frames (77 at the default 1.3 per second) until one reaches the clip's last frame;
    that last one is dropped when less than ``min_coverage`` of its samples are the clip's, unless it is the only
    one (a clip shorter than 1.6 s has one, zero-padded)."""
    step = round(SAMPLE_RATE / rate / HOP)
    if not 0 < step <= PARTIAL_FRAMES:
        raise ValueError(f"rate {rate} must give partials 1 to {PARTIAL_FRAMES} frames apart, not {step}")
    if not 0 < min_coverage <= 1:
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage}")
    frames = num_samples // HOP + 1
    starts = list(range(0, max(1, frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (num_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(starts) > 1:
        starts.pop()
    return starts


class ResemblyzerUpstream(Upstream):
    """The encoder's states on every 10 ms mel frame of the clip (module docstring)."""

    context_dependent = True
    mixed_lengths = True
    num_states = LAYERS + 1
    feature_dim = HIDDEN
    hop_samples = HOP
    #: One mel frame's window; through the recurrence a frame also depends on every earlier sample.
    receptive_field = WINDOW

    def __init__(self, encoder: SpeakerEncoder):
        super().__init__()
        self.encoder = encoder.eval()

    def frame_centers_ms(self, num_samples: int, *, scene: bool = False) -> Tensor:
        count = centered_frame_count(num_samples, HOP, 0)
        return torch.arange(count, dtype=torch.float64) * (1000 * HOP / SAMPLE_RATE)

    def embed_utterance(self, wav: Tensor, *, rate: float = 1.3, min_coverage: float = 0.75) -> Tensor:
        """The package's utterance embedding (:meth:`SpeakerEncoder.embed_utterance`)."""
        return self.encoder.embed_utterance(wav, rate=rate, min_coverage=min_coverage)

    def visit_states(
        self,
        audio: Tensor,
        visit: StateVisitor,
        *,
        scene: bool = False,
        needed: Collection[int] | None = None,
        lengths: Tensor | None = None,
    ) -> None:
        """Layers past the last needed state are not run. ``lengths`` needs no work: rows are zero-padded after
        their clips, which neither the mel frames nor the unidirectional LSTM of a clip's own frames can see."""
        wanted = set(range(self.num_states) if needed is None else needed)
        last_wanted = max(wanted)
        for index, hidden in enumerate(self.encoder.layer_outputs(self.encoder.mel(audio))):
            if index in wanted and visit(index, hidden):
                return
            if index == last_wanted:
                return
        visit(LAYERS, self.encoder.project(hidden))
