"""CREPE against the reference implementation (torchcrepe's network and weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.original import torchcrepe_network
from hearfuse.upstream import get_family
from hearfuse.upstream.crepe import packaged_weights
from hearfuse.upstream.crepe_net import CrepeNet, CrepeUpstream, normalize_frames
from hearfuse.upstream.crepe_spec import embedding_dim

from .conftest import sine_batch


def _torchcrepe_model(capacity: str) -> torch.nn.Module:
    """torchcrepe's Conv2d network with the weights from its own wheel (the reference)."""
    try:
        return torchcrepe_network(capacity)
    except ModuleNotFoundError:
        pytest.skip("torchcrepe is not installed (make install puts it in with --no-deps)")


def _reference_frames(audio: np.ndarray, hop: int) -> torch.Tensor:
    """torchcrepe.preprocess (pad=True): zero-pad 512 each side, 1 + n // hop frames."""
    padded = np.pad(audio, 512)
    count = 1 + len(audio) // hop
    frames = np.stack([padded[j * hop : j * hop + 1024] for j in range(count)]).astype(np.float32)
    frames = torch.from_numpy(frames)
    frames -= frames.mean(dim=1, keepdim=True)
    return frames / torch.clamp(frames.std(dim=1, keepdim=True), min=1e-10)


@pytest.fixture(scope="module")
def tiny_net():
    return CrepeNet("tiny").load_keras_weights(packaged_weights("tiny"))


@pytest.mark.parametrize("capacity", ["tiny", "full"])
def test_embedding_equals_reference_on_the_same_frames(capacity):
    net = CrepeNet(capacity).load_keras_weights(packaged_weights(capacity))
    reference = _torchcrepe_model(capacity)
    frames = _reference_frames(sine_batch(1, 0.5)[0].numpy(), hop=800)
    with torch.inference_mode():
        expected = reference(frames, embed=True).reshape(len(frames), -1)  # torchcrepe.embed's layout
        got = net.embed(frames)
    assert got.shape == (len(frames), embedding_dim(capacity))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_pitch_salience_equals_reference(tiny_net):
    reference = _torchcrepe_model("tiny")
    frames = _reference_frames(sine_batch(1, 0.3, seed=3)[0].numpy(), hop=160)
    with torch.inference_mode():
        torch.testing.assert_close(tiny_net.salience(frames), reference(frames), rtol=1e-4, atol=1e-5)


def test_salience_finds_the_pitch_of_a_sine(tiny_net):
    t = np.arange(1024) / 16000
    frames = normalize_frames(torch.from_numpy(np.sin(2 * np.pi * 440 * t)).float()[None])
    with torch.inference_mode():
        cents = 1997.3794084376191 + 20 * tiny_net.salience(frames).argmax().item()
    assert abs(1200 * np.log2(440 / 10) - cents) < 40


def test_upstream_frames_match_torchcrepe_framing(tiny_net):
    upstream = CrepeUpstream(tiny_net, hop_ms=50, scene_hop_ms=250)
    audio = sine_batch(2, 1.07)
    with torch.inference_mode():
        got = upstream.embed(audio, hop=800)
        for n in range(2):
            expected = tiny_net.embed(_reference_frames(audio[n].numpy(), hop=800))
            torch.testing.assert_close(got[n], expected, rtol=1e-5, atol=1e-5)
    assert got.shape[1] == 1 + audio.shape[1] // 800
    centres = upstream.frame_centers_ms(audio.shape[1])
    assert centres[:3].tolist() == [0.0, 50.0, 100.0] and centres[-1] <= 1070
    assert len(upstream.frame_centers_ms(audio.shape[1], scene=True)) == 1 + audio.shape[1] // 4000


def test_frames_at_reference_centres(tiny_net):
    """first_center_ms=12.5, hop 20 ms: frame j is centred on wav2vec2's frame j."""
    upstream = CrepeUpstream(tiny_net, hop_ms=20, first_center_ms=12.5)
    audio = sine_batch(1, 0.4)
    with torch.inference_mode():
        got = upstream.embed(audio, hop=320)
    padded = np.pad(audio[0].numpy(), 512)
    for j in (0, 5, 17):
        centre = 200 + 320 * j
        frame = torch.from_numpy(padded[centre : centre + 1024].copy())[None]
        with torch.inference_mode():
            torch.testing.assert_close(got[0, j], tiny_net.embed(normalize_frames(frame))[0], rtol=1e-5, atol=1e-5)
    assert upstream.frame_centers_ms(audio.shape[1])[:2].tolist() == [12.5, 32.5]


def test_frame_batching_does_not_change_results(tiny_net):
    audio = sine_batch(3, 0.9)
    with torch.inference_mode():
        one_call = CrepeUpstream(tiny_net, frame_batch=10_000).embed(audio, hop=160)
        chunked = CrepeUpstream(tiny_net, frame_batch=7).embed(audio, hop=160)
    torch.testing.assert_close(one_call, chunked, rtol=1e-5, atol=1e-5)


def test_short_clip_gives_one_frame(tiny_net):
    upstream = CrepeUpstream(tiny_net)
    with torch.inference_mode():
        assert upstream.embed(torch.randn(2, 5), hop=800).shape == (2, 1, 256)


def test_bf16_autocast_agrees_with_fp32(tiny_net):
    upstream = CrepeUpstream(tiny_net)
    audio = sine_batch(2, 1.0)
    with torch.inference_mode():
        full = upstream.embed(audio, hop=800)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = upstream.embed(audio, hop=800)
    assert half.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(full, half, dim=-1)
    assert cosine.min() > 0.99


def test_module_moves_and_stays_in_eval(tiny_net):
    upstream = CrepeUpstream(tiny_net).to(torch.float64).to("cpu")
    upstream.train()
    assert not upstream.training and not upstream.net.norms[0].training
    assert next(upstream.parameters()).dtype == torch.float64


def test_family_builds_from_capacity_and_from_hdf5_path():
    family = get_family("crepe")
    assert family.build("tiny").feature_dim == 256
    from_path = family.build(str(packaged_weights("tiny")), hop_ms=10)
    assert from_path.feature_dim == 256 and from_path.hop_samples == 160
    assert family.is_available("tiny") and not family.is_available("/nonexistent.h5")


@pytest.mark.parametrize("bad", [dict(hop_ms=0), dict(hop_ms=10.01), dict(frame_batch=0), dict(first_center_ms=-1)])
def test_bad_options(tiny_net, bad):
    with pytest.raises(ValueError):
        CrepeUpstream(tiny_net, **bad)
