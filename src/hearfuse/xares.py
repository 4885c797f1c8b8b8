"""hearfuse models inside X-ARES (the eXtensive Audio Representation and Evaluation Suite).

X-ARES evaluates any ``torch.nn.Module`` whose class name ends in ``Encoder`` and that has
``sampling_rate``, ``output_dim`` and ``hop_size_in_ms``, and maps a ``(batch, samples)`` waveform
at that rate to ``(batch, frames, output_dim)`` (``xares.audio_encoder_checker.check_audio_encoder``).
It moves the encoder with ``.to(device)`` and calls it inside ``torch.inference_mode``.

Audio is float in [-1, 1], as X-ARES hands it over (it decodes with ``torchaudio.load`` and resamples to
``sampling_rate`` itself) and as the HEAR API takes it. Integer PCM is refused with the HEAR API's own
message rather than scaled: its full scale depends on how it was read (16-bit samples in an int32 tensor),
which the tensor alone does not say; a guess would embed it silently at the wrong level.

>>> from hearfuse.xares import encoder                               # doctest: +SKIP
>>> TaskConfig(encoder=encoder("fusion_cat_xwc"), ...)              # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .audio import resample
from .config import FusionConfig
from .hear import load_model
from .model import FusionModel, check_audio


class HearfuseEncoder(nn.Module):
    """A :class:`FusionModel`'s timestamp embeddings behind X-ARES's encoder protocol."""

    def __init__(self, model: FusionModel):
        super().__init__()
        self.model = model
        self.sampling_rate = model.sample_rate
        self.output_dim = model.timestamp_embedding_size
        self.hop_size_in_ms = timestamp_hop_ms(model)

    def forward(self, audio: Tensor, sample_rate: int | None = None) -> Tensor:
        """``(batch, samples)`` (or ``(samples,)``) float audio in [-1, 1] at ``sample_rate`` (default:
        ``sampling_rate``; any other rate is resampled with soxr first) -> ``(batch, frames, output_dim)``
        float32. Integer PCM, an empty batch or clip, NaN or Inf is a ValueError that says so, before any
        resampling."""
        if isinstance(audio, Tensor) and audio.ndim == 1:
            audio = audio[None]
        audio = check_audio(audio)
        if sample_rate is not None and sample_rate != self.sampling_rate:
            rows = audio.detach().cpu().numpy().T  # soxr resamples (samples, channels)
            resampled = resample(np.ascontiguousarray(rows), sample_rate, self.sampling_rate)
            if len(resampled) == 0:
                raise ValueError(
                    f"audio of {rows.shape[0]} samples at {sample_rate} Hz is shorter than one sample at "
                    f"{self.sampling_rate} Hz"
                )
            audio = torch.from_numpy(np.ascontiguousarray(resampled.reshape(len(resampled), -1).T))
        embeddings, _ = self.model.timestamp_embeddings(audio)
        return embeddings


def timestamp_hop_ms(model: FusionModel) -> float:
    """Milliseconds between consecutive timestamp embeddings: the reference member's frame hop."""
    reference = model.members[model.config.reference_member.name]
    return reference.upstream.frame_hop_samples() * 1000 / model.sample_rate


def encoder(
    model_or_config: FusionModel | FusionConfig | str | Path = "",
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> HearfuseEncoder:
    """An X-ARES encoder of a built model, a config, a preset name or a ``.toml``/``.json`` config
    path (``""``: the default preset); ``device`` and ``dtype`` as for :func:`hearfuse.load_model`."""
    model = (
        model_or_config
        if isinstance(model_or_config, FusionModel)
        else load_model(model_or_config, device=device, dtype=dtype)
    )
    return HearfuseEncoder(model.to(device) if device is not None else model)
