"""Spectrogram front ends in torch, batched on the model's device, equal to `transformers`' feature extractors.

`transformers` computes Whisper's log-mel, SeamlessM4T's (w2v-BERT 2.0's) and AST's Kaldi-style fbank
per clip in numpy; at GPU rates that would starve the model. These modules take the checkpoint's own
extractor (its mel filters, window, constants) and compute the same features for a whole batch; the
tests hold them to the extractor within float tolerance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Samples per Kaldi frame (25 ms) and between frames (10 ms) at 16 kHz, as both extractors use them.
KALDI_FRAME = 400
KALDI_HOP = 160


def kaldi_frame_count(num_samples: int) -> int:
    """Frames of a Kaldi fbank without edge padding (``snip_edges``): 0 below one frame."""
    return 0 if num_samples < KALDI_FRAME else 1 + (num_samples - KALDI_FRAME) // KALDI_HOP


def real_frames(features: Tensor, lengths: Tensor) -> Tensor:
    """``(n, frames)`` True where a frame lies wholly inside its row's clip of ``lengths`` samples."""
    counts = torch.tensor([kaldi_frame_count(int(n)) for n in lengths.tolist()], device=features.device)
    return torch.arange(features.shape[1], device=features.device)[None, :] < counts[:, None]


class KaldiFbank(nn.Module):
    """Kaldi's log mel filter bank as `transformers.audio_utils.spectrogram` computes it for these
    extractors: frames of 400 samples every 160 without padding, DC offset removed, pre-emphasis 0.97,
    the extractor's window, a 512-point power spectrum, its mel filters, floor, natural log."""

    def __init__(
        self, window, mel_filters, *, scale: float = 1.0, preemphasis: float = 0.97, floor: float = 1.1920929e-07
    ):
        super().__init__()
        self.register_buffer("window", torch.as_tensor(window, dtype=torch.float32), persistent=False)
        self.register_buffer("mel_filters", torch.as_tensor(mel_filters, dtype=torch.float32), persistent=False)
        self.scale, self.preemphasis, self.floor = scale, preemphasis, floor

    def forward(self, audio: Tensor) -> Tensor:
        """``(n, samples)`` -> ``(n, frames, mel bins)``, float32."""
        frames = (audio.float() * self.scale).unfold(-1, KALDI_FRAME, KALDI_HOP)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        emphasised = torch.cat(
            [frames[..., :1] * (1 - self.preemphasis), frames[..., 1:] - self.preemphasis * frames[..., :-1]], dim=-1
        )
        power = torch.fft.rfft(emphasised * self.window, n=512).abs().square()
        return torch.clamp(power @ self.mel_filters, min=self.floor).log()


class WhisperLogMel(nn.Module):
    """Whisper's log-mel (``WhisperFeatureExtractor``): each clip zero-padded to the encoder's 30 s,
    a centred STFT (Hann, reflect padding), the last frame dropped, the extractor's Slaney mel filters,
    log10 clamped to 8 below each clip's maximum, then (x + 4) / 4."""

    def __init__(self, extractor):
        super().__init__()
        if getattr(extractor, "dither", 0.0):
            raise ValueError("a Whisper feature extractor with dither is random: hearfuse needs dither = 0")
        self.n_fft, self.hop, self.samples = extractor.n_fft, extractor.hop_length, extractor.n_samples
        self.frames = self.samples // self.hop
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.register_buffer(
            "mel_filters", torch.as_tensor(extractor.mel_filters, dtype=torch.float32), persistent=False
        )

    def forward(self, audio: Tensor, frames: int | None = None) -> Tensor:
        """``(n, samples <= 30 s)`` -> ``(n, mel bins, frames)``: the first ``frames`` (default: all 3000) of
        the 30 s features. Fewer cost less: the STFT then runs only on the samples their windows reach. They
        are exactly the 30 s ones when they include every frame whose window reaches into a clip, since
        the maximum the log is clamped to is then taken over the same values (later frames hold silence,
        the least value there is)."""
        frames = self.frames if frames is None else frames
        samples = min(self.samples, self.hop * (frames - 1) + self.n_fft // 2)
        audio = audio.float()[..., :samples]
        audio = F.pad(audio, (0, samples - audio.shape[-1]))
        spectrum = torch.stft(audio, self.n_fft, self.hop, window=self.window, return_complex=True)
        power = spectrum[..., :frames].abs().square()
        log_spec = torch.clamp(self.mel_filters.T @ power, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.amax(dim=(1, 2), keepdim=True) - 8.0)
        return (log_spec + 4.0) / 4.0


class SeamlessFbank(nn.Module):
    """w2v-BERT 2.0's input (``SeamlessM4TFeatureExtractor``): the Kaldi fbank of the waveform scaled to
    16-bit range, each mel bin normalised over the clip's own frames (unbiased variance), zero frames
    after it, pairs of frames stacked (20 ms, 2 x mel bins); the mask marks the stacked frames whose
    second half is real, as the extractor's does."""

    def __init__(self, extractor):
        super().__init__()
        self.fbank = KaldiFbank(extractor.window, extractor.mel_filters, scale=2.0**15)
        self.stride = extractor.stride

    def forward(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(n, samples)`` and each row's real samples -> features ``(n, T, stride x bins)``, mask ``(n, T)``."""
        features = self.fbank(audio)
        real = real_frames(features, lengths)
        counts = real.sum(1, keepdim=True)[..., None]
        mask = real[..., None].to(features.dtype)
        mean = (features * mask).sum(1, keepdim=True) / counts
        variance = ((features - mean).square() * mask).sum(1, keepdim=True) / (counts - 1)
        features = (features - mean) / torch.sqrt(variance + 1e-7) * mask
        total = features.shape[1] + features.shape[1] % self.stride  # padded to a multiple of the stride
        features = F.pad(features, (0, 0, 0, total - features.shape[1]))
        real = F.pad(real, (0, total - real.shape[1]))
        stacked = features.reshape(features.shape[0], total // self.stride, -1)
        return stacked, real[:, self.stride - 1 :: self.stride]


class AstFbank(nn.Module):
    """AST's input (``ASTFeatureExtractor``): the Kaldi fbank of the waveform as given, cut or zero-padded
    to the checkpoint's ``max_length`` frames, then normalised as (x - mean) / (2 std)."""

    def __init__(self, extractor):
        super().__init__()
        self.fbank = KaldiFbank(extractor.window, extractor.mel_filters)
        self.max_length = extractor.max_length
        self.mean, self.std = (extractor.mean, extractor.std) if extractor.do_normalize else (0.0, 0.5)

    def forward(self, audio: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(n, samples)`` (each row's real samples in ``lengths``) -> ``(n, max_length, mel bins)``."""
        features = self.fbank(audio)[:, : self.max_length]
        if lengths is not None:  # frames past a row's own clip are the extractor's zero padding, not fbank of zeros
            features = features * real_frames(features, lengths)[..., None]
        features = F.pad(features, (0, 0, 0, self.max_length - features.shape[1]))
        return (features - self.mean) / (self.std * 2)
