"""Silero VAD v6 against the package's own TorchScript model (its speech probability and every state, chunk by
chunk as its runtime streams them), frames and timestamps, short clips, mixed lengths, bf16, early stop, the
weights' errors, and a fusion with CREPE tiny through the HEAR API and HEAR 2021's validator."""

from __future__ import annotations

import importlib.metadata
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hearfuse import hear
from hearfuse.config import FusionConfig, LayerAggregation, MemberConfig
from hearfuse.errors import ConfigError
from hearfuse.model import FusionModel
from hearfuse.upstream import WeightsNotFoundError, get_family
from hearfuse.upstream.crepe import packaged_weights
from hearfuse.upstream.packaged import packaged_file
from hearfuse.upstream.silero_vad import PROVENANCE

from .hear_validator import validate

RATE = 16000
#: Our float32 port against the TorchScript model: the encoder's convolutions run batched here, one chunk at
#: a time there, so their sums are ordered differently (about 1e-5 of their size); observed up to 4e-5.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def upstream():
    return get_family("silero_vad").build("v6.2")


def _torchscript_file() -> str:
    return str(importlib.metadata.distribution("silero-vad").locate_file("silero_vad/data/silero_vad.jit"))


@pytest.fixture(scope="module")
def package_model():
    """The package's own runtime model (``load_silero_vad()`` loads this file), without importing the package
    (which would set torch to one thread)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load, deprecated in torch 2.13
        return torch.jit.load(_torchscript_file(), map_location="cpu").eval()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """espeak-ng speech (resampled to 16 kHz) between silence and noise: probabilities from 0 to 1."""
    from hearfuse.suite.synth import speak

    noise = 0.05 * np.random.default_rng(0).standard_normal(12000).astype(np.float32)
    spoken = speak("The quick brown fox jumps over the lazy dog near the river bank.")
    return np.concatenate([np.zeros(4000, np.float32), spoken, noise])


def _noise(samples: int, seed: int = 1) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(samples)).astype(np.float32)


def _streamed(package_model, clip: np.ndarray) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The package's probabilities, one call per 512-sample chunk after ``reset_states()`` as its
    ``get_speech_timestamps`` makes them (the last chunk zero-padded), and its LSTM ``h`` after each."""
    package_model.reset_states()
    audio = torch.from_numpy(clip)
    probabilities, hidden = [], []
    with torch.no_grad():
        for start in range(0, max(len(audio), 1), 512):
            chunk = F.pad(audio[start : start + 512], (0, max(0, start + 512 - len(audio))))
            probabilities.append(package_model(chunk, RATE).item())
            hidden.append(package_model._state[0, 0].clone())
    return torch.tensor(probabilities), hidden


@pytest.mark.parametrize("source", ["speech", "noise"])
def test_speech_probabilities_equal_the_package_model(upstream, package_model, speech, source):
    clip = speech if source == "speech" else _noise(3 * RATE + 123)
    expected, _ = _streamed(package_model, clip)
    with torch.no_grad():
        whole = package_model.audio_forward(torch.from_numpy(clip)[None], RATE)[0]
        got = upstream.speech_probabilities(torch.from_numpy(clip)[None])[0]
    assert len(got) == len(expected) == len(upstream.frame_centers_ms(len(clip))) == -(-len(clip) // 512)
    difference = (got - expected).abs()
    relative = (difference / expected.clamp_min(1e-6)).max()
    print(f"{source}: largest |difference| {difference.max():.2e}, relative {relative:.2e}")
    assert difference.max() < TOLERANCE
    torch.testing.assert_close(whole, expected, rtol=0, atol=1e-6)  # its audio_forward streams the same way
    if source == "speech":  # the comparison spans the whole range
        assert expected.max() > 0.99 and expected[:3].max() < 0.05
    else:
        assert expected.max() < 0.5


def test_every_state_equals_the_package_models_own_tensors(upstream, package_model, speech):
    """States 0-2 against the TorchScript encoder's blocks on each chunk's 576 samples (pooled as documented),
    state 3 against the LSTM ``h`` the package carries from chunk to chunk."""
    clip = speech[: 40 * 512 + 100]
    _, hidden = _streamed(package_model, clip)
    padded = F.pad(torch.from_numpy(clip), (64, 41 * 512 - len(clip)))
    windows = padded.unfold(0, 576, 512)
    with torch.no_grad():
        states = upstream.hidden_states(torch.from_numpy(clip)[None])
        x = package_model._model.stft(windows)
        blocks = []
        for index in range(4):
            x = getattr(package_model._model.encoder, str(index))(x)
            blocks.append(x)
    expected = [blocks[0].mean(-1), blocks[1].flatten(1), blocks[3][..., 0], torch.stack(hidden)]
    assert len(states) == upstream.num_states == 4
    for index, (state, reference) in enumerate(zip(states, expected)):
        assert state.shape == (1, 41, 128)
        scale = float(reference.abs().max())
        torch.testing.assert_close(state[0], reference, rtol=0, atol=TOLERANCE * max(scale, 1.0), msg=str(index))


def test_the_tinygrad_weights_are_another_network(upstream, speech):
    """The safetensors file runs in the same network but holds other values (snakers4/silero-vad#768)."""
    tinygrad = importlib.metadata.distribution("silero-vad").locate_file("silero_vad/data/silero_vad_16k.safetensors")
    other = get_family("silero_vad").build(str(tinygrad))
    audio = torch.from_numpy(speech)[None]
    with torch.no_grad():
        mine, theirs = other.speech_probabilities(audio)[0], upstream.speech_probabilities(audio)[0]
    assert mine.max() > 0.99 and mine[:3].max() < 0.05  # still a voice detector
    assert (mine - theirs).abs().max() > 0.1


def test_frames_and_timestamps(upstream):
    """Frame j is chunk j, centred at 16 ms + 32 ms j; a partial last chunk is a frame (zero-padded)."""
    assert [len(upstream.frame_centers_ms(n)) for n in (0, 1, 511, 512, 513, 16000, 16384)] == [1, 1, 1, 1, 2, 32, 32]
    assert upstream.frame_centers_ms(16000)[:3].tolist() == [16.0, 48.0, 80.0]
    assert (upstream.hop_samples, upstream.receptive_field) == (512, 576)
    family = get_family("silero_vad")
    for checkpoint in family.checkpoints:
        rule = family.frames(checkpoint)
        assert upstream.frame_centers_ms(5 * RATE)[:3].tolist() == [
            rule.first_center_ms + j * rule.hop_ms for j in (0, 1, 2)
        ]
        info = family.checkpoints[checkpoint]
        assert (info.feature_dim, info.num_states, info.sample_rate) == (upstream.feature_dim, 4, 16000)
        assert info.provenance.licence == "MIT" and family.is_available(checkpoint)
    with torch.no_grad():
        for samples in (1, 513, 5000):
            states = upstream.hidden_states(torch.from_numpy(_noise(samples))[None])
            assert {s.shape for s in states} == {(1, len(upstream.frame_centers_ms(samples)), 128)}


def test_a_clip_shorter_than_one_chunk_is_padded_as_the_package_pads_it(upstream, package_model):
    clip = _noise(300)
    expected, _ = _streamed(package_model, clip)  # the package's one zero-padded chunk
    with torch.no_grad():
        got = upstream.speech_probabilities(torch.from_numpy(clip)[None])[0]
    assert got.shape == (1,) and abs(float(got[0] - expected[0])) < TOLERANCE


def _fusion(*members: MemberConfig, **settings) -> FusionConfig:
    return FusionConfig("silero_test", members, **settings)


SILERO = MemberConfig("vad", "silero_vad", "v6.2", LayerAggregation("mean"))
CREPE = MemberConfig("crepe", "crepe", "tiny", options={"hop_ms": 32.0, "first_center_ms": 16.0})


def test_mixed_length_batches_equal_each_clip_alone(speech):
    model = FusionModel.from_config(_fusion(SILERO))
    assert model.mixed_batch_limit > 0
    clips = [torch.from_numpy(c) for c in (speech[:5000], _noise(100), speech, _noise(12345, 2))]
    with torch.no_grad():
        batched = model.embed_each(clips)
        alone = [model.embed(clip[None]).row(0) for clip in clips]
    for mine, reference in zip(batched, alone):
        np.testing.assert_allclose(mine.timestamp_embeddings, reference.timestamp_embeddings, atol=1e-5)
        np.testing.assert_allclose(mine.timestamps, reference.timestamps)
        np.testing.assert_allclose(mine.scene_embeddings, reference.scene_embeddings, atol=1e-5)


def test_bf16_runs_and_stays_close(upstream, speech):
    """bf16 rounds the encoder's weights and inputs to 3 significant digits; where a probability is mid-way
    (a steep part of the sigmoid) that moves it by up to about 0.13 on this clip, 0.01 on average."""
    audio = torch.from_numpy(speech)[None]
    with torch.no_grad():
        full, states = upstream.speech_probabilities(audio), upstream.hidden_states(audio)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half, half_states = upstream.speech_probabilities(audio), upstream.hidden_states(audio)
    assert half.dtype == torch.float32
    difference = (half - full).abs()
    print(f"bf16: probabilities differ by {difference.max():.3f} at most, {difference.mean():.4f} on average")
    assert difference.mean() < 0.02 and difference.max() < 0.25
    for state, half_state in zip(states, half_states):
        cosine = F.cosine_similarity(state, half_state.float(), dim=-1)
        assert cosine.min() > 0.97 and cosine.mean() > 0.995
    model = hear.load_model(_fusion(SILERO), dtype=torch.bfloat16)  # its convolutions' weights cast once
    embeddings, _ = hear.get_timestamp_embeddings(audio, model)
    reference, _ = hear.get_timestamp_embeddings(audio, hear.load_model(_fusion(SILERO)))
    assert F.cosine_similarity(embeddings, reference, dim=-1).min() > 0.97


def test_needed_states_and_early_stop(upstream):
    audio = torch.from_numpy(_noise(4000))[None]
    runs = []
    hook = upstream.net.lstm.register_forward_hook(lambda *_: runs.append(1))
    try:
        for needed, stop_at, expected in (({0, 2}, None, [0, 2]), (None, 1, [0, 1]), ({3}, None, [3])):
            seen = []
            upstream.visit_states(
                audio, lambda i, _, seen=seen, stop=stop_at: seen.append(i) or i == stop, needed=needed
            )
            assert seen == expected
    finally:
        hook.remove()
    assert len(runs) == 1  # only the run that needed the LSTM's state ran it


def test_a_missing_package_is_named_in_one_line(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    family = get_family("silero_vad")
    with pytest.raises(WeightsNotFoundError, match="pip install silero-vad") as error:
        family.build("v6.2")
    assert "\n" not in str(error.value) and not family.is_available("v6.2")


def test_the_onnx_reader_is_named_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx fails
    with pytest.raises(WeightsNotFoundError, match="needs the onnx package: pip install onnx"):
        get_family("silero_vad").build("v6.2")


def test_checkpoint_paths_and_wrong_files(tmp_path):
    family = get_family("silero_vad")
    assert family.build(str(packaged_file(PROVENANCE["v6.2"]))).feature_dim == 128  # the packaged file as a path
    with pytest.raises(WeightsNotFoundError, match="neither one of v6.2 nor a file"):
        family.build(str(tmp_path / "absent.jit"))
    crepe_weights = packaged_weights("tiny")  # another model's weights file
    text = tmp_path / "notes.safetensors"
    text.write_text("not weights")
    for wrong in (text, crepe_weights, _torchscript_file()):
        with pytest.raises(ConfigError, match="does not hold the 16 kHz Silero VAD v6 network") as error:
            family.build(str(wrong))
        assert str(wrong) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ValueError, match="takes no options"):
        family.build("v6.2", hop_ms=10.0)


def test_with_crepe_through_the_hear_api_and_validator(tmp_path, speech):
    config = _fusion(SILERO, CREPE, reference="vad")
    model = hear.load_model(config)
    audio = torch.from_numpy(np.stack([speech[:24000], _noise(24000)]))
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    scene = hear.get_scene_embeddings(audio, model)
    assert embeddings.shape == (2, -(-24000 // 512), model.timestamp_embedding_size)
    assert scene.shape == (2, model.scene_embedding_size)
    assert timestamps[0, 0] == 16.0 and torch.allclose(torch.diff(timestamps[0]), torch.tensor(32.0))
    path = config.save(tmp_path / "silero_crepe.toml")
    print(validate(path))
