"""hearfuse models inside X-ARES: its own encoder check, and outputs equal to the HEAR API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hearfuse
from hearfuse.audio import resample
from hearfuse.xares import HearfuseEncoder, encoder

from .test_embeddings import crepe_tiny


def test_passes_x_ares_own_encoder_check(tmp_path):
    # `make install` installs xares with --no-deps: its metadata requires torchaudio, which the check does not use
    checker = pytest.importorskip(
        "xares.audio_encoder_checker", reason="xares is not installed here; `make install` installs it"
    )
    assert checker.check_audio_encoder(encoder(crepe_tiny(tmp_path)))


def test_follows_x_ares_conventions_and_equals_the_hear_api(tmp_path, tiny_fusion_model):
    for model in (hearfuse.load_model(crepe_tiny(tmp_path, 25)), tiny_fusion_model):
        wrapped = encoder(model)
        assert isinstance(wrapped, HearfuseEncoder) and type(wrapped).__name__.endswith("Encoder")
        assert wrapped.sampling_rate == 16000 and wrapped.output_dim == model.timestamp_embedding_size
        audio = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 24000)).astype(np.float32) * 0.1)
        with torch.inference_mode():
            encoded = wrapped.to("cpu")(audio)
        expected, timestamps = hearfuse.get_timestamp_embeddings(audio, model)
        torch.testing.assert_close(encoded, expected, rtol=0, atol=0)
        assert encoded.shape == (2, timestamps.shape[1], wrapped.output_dim)
        hops = np.diff(timestamps[0].numpy())
        np.testing.assert_allclose(hops, wrapped.hop_size_in_ms, rtol=1e-6)


def test_other_sample_rates_are_resampled_first(tmp_path):
    wrapped = encoder(crepe_tiny(tmp_path))
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal((2, 44100)) * 0.1).astype(np.float32)
    expected = wrapped(torch.from_numpy(np.stack([resample(row, 44100, 16000) for row in audio])))
    torch.testing.assert_close(wrapped(torch.from_numpy(audio), 44100), expected, rtol=1e-5, atol=1e-5)
