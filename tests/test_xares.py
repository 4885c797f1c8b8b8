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


@pytest.fixture(scope="module")
def crepe_encoder(tmp_path_factory):
    return encoder(crepe_tiny(tmp_path_factory.mktemp("xares")))


@pytest.mark.parametrize("sample_rate", [None, 16000, 44100])
def test_integer_pcm_is_refused_as_the_hear_api_refuses_it(crepe_encoder, sample_rate):
    """X-ARES hands over float audio (torchaudio.load); integer PCM's full scale is not in the tensor, so it is
    refused, resampled or not, with the HEAR API's message, rather than embedded at 32768 times its level."""
    pcm = torch.from_numpy(np.random.default_rng(2).integers(-3000, 3000, (2, 44100), dtype=np.int16))
    message = r"must be floating point in \[-1, 1\], got torch.int16; convert integer PCM first"
    with pytest.raises(ValueError, match=message):
        crepe_encoder(pcm, sample_rate)
    with pytest.raises(ValueError, match=message):
        hearfuse.get_timestamp_embeddings(pcm, crepe_encoder.model)
    scaled = pcm.float() / 32768  # what the caller converts it to: then it embeds
    assert crepe_encoder(scaled, sample_rate).shape[0] == 2


@pytest.mark.parametrize("sample_rate", [None, 44100])
@pytest.mark.parametrize(
    "audio, message",
    [
        (torch.zeros(0), "audio clips have zero samples"),
        (torch.zeros(2, 0), "audio clips have zero samples"),
        (torch.zeros(0, 4000), r"audio batch is empty \(n_sounds == 0\)"),
        (torch.full((1, 4000), float("nan")), "audio contains NaN or Inf values"),
    ],
)
def test_empty_or_broken_input_is_one_clear_error(crepe_encoder, sample_rate, audio, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        crepe_encoder(audio, sample_rate)


def test_a_clip_shorter_than_one_sample_after_resampling_is_named(crepe_encoder):
    with pytest.raises(ValueError, match="^audio of 1 samples at 44100 Hz is shorter than one sample at 16000 Hz$"):
        crepe_encoder(torch.full((1, 1), 0.1), 44100)
    assert crepe_encoder(torch.full((1, 3), 0.1), 44100).shape == (1, 1, crepe_encoder.output_dim)
