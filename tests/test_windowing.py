"""Long audio: windowed processing stitches exactly onto the full-context frame grid."""

from __future__ import annotations

import pytest
import torch

from hearfuse.fusion.aggregation import LayerAggregation, aggregate
from hearfuse.fusion.windowing import Windowing, windowed_aggregate, windowed_pieces
from hearfuse.upstream import get_family

from .conftest import sine_batch


@pytest.fixture(scope="module")
def upstream(tiny_checkpoints):
    return get_family("wav2vec2").build(str(tiny_checkpoints["wav2vec2"]))


@pytest.mark.parametrize("seconds", [3.0, 3.37, 4.02, 5.55])
def test_local_features_are_exact_across_window_seams(upstream, seconds):
    """State 0 (conv front end + positional conv, both local) must not move at all."""
    audio = sine_batch(2, seconds)
    aggregation = LayerAggregation("layers", (0,))
    with torch.inference_mode():
        full = aggregate(upstream, audio, aggregation)
        windowed = windowed_aggregate(upstream, audio, [aggregation], Windowing(1.0, 0.3))[0]
    assert windowed.shape == full.shape
    torch.testing.assert_close(windowed, full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("samples", [16000 * 2 + 1, 16000 * 2 + 319, 16000 * 2 + 320, 16000 * 3 + 77])
def test_frame_count_matches_full_context(upstream, samples):
    audio = sine_batch(1, samples / 16000)
    with torch.inference_mode():
        windowed = windowed_aggregate(upstream, audio, [LayerAggregation("mean")], Windowing(0.8, 0.2))[0]
    assert windowed.shape[1] == (samples - 400) // 320 + 1


def test_short_clips_are_not_windowed(upstream):
    audio = sine_batch(1, 0.7)
    with torch.inference_mode():
        full = aggregate(upstream, audio, LayerAggregation("mean"))
        windowed = windowed_aggregate(upstream, audio, [LayerAggregation("mean")], Windowing(1.0, 0.2))[0]
    assert torch.equal(full, windowed)


def test_every_window_is_bounded(upstream, monkeypatch):
    import hearfuse.fusion.windowing as windowing

    lengths = []
    real = windowing.aggregate_each

    def spy(up, audio, *args, **kwargs):
        lengths.append(audio.shape[-1])
        return real(up, audio, *args, **kwargs)

    monkeypatch.setattr(windowing, "aggregate_each", spy)
    with torch.inference_mode():
        windowed_aggregate(upstream, sine_batch(1, 6.0), [LayerAggregation("last")], Windowing(1.0, 0.25))
    assert len(lengths) > 5 and max(lengths) <= 16000 + 320


@pytest.mark.parametrize("window, context", [(1.0, 0.5), (1.0, 0.6), (1.0, -0.1)])
def test_invalid_windowing(window, context):
    with pytest.raises(ValueError):
        Windowing(window, context)


@pytest.mark.parametrize("options, scene", [({"hop_ms": 50, "scene_hop_ms": 250}, False),
                                            ({"hop_ms": 50, "scene_hop_ms": 250}, True),
                                            ({"hop_ms": 20, "first_center_ms": 12.5}, False)])  # fmt: skip
def test_frame_independent_models_are_windowed_exactly(options, scene):
    """CREPE frames see only their own 1024 samples: windows with one receptive field of overlap are exact."""
    upstream = get_family("crepe").build("tiny", **options)
    audio = sine_batch(2, 3.37)
    aggregation = LayerAggregation("last")
    with torch.inference_mode():
        full = aggregate(upstream, audio, aggregation, scene=scene)
        windowed = windowed_aggregate(upstream, audio, [aggregation], Windowing(1.0, 0.3), scene=scene)[0]
        pieces = [
            piece for (piece,) in windowed_pieces(upstream, audio, [aggregation], Windowing(1.0, 0.3), scene=scene)
        ]
    assert len(pieces) > 2
    assert windowed.shape == full.shape
    torch.testing.assert_close(windowed, full, rtol=1e-5, atol=1e-5)
