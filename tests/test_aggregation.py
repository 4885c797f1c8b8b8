"""Intra-model aggregation against ``output_hidden_states`` averaged by hand."""

from __future__ import annotations

import pytest
import torch

from hearfuse.fusion.aggregation import LayerAggregation, aggregate
from hearfuse.upstream import get_family

from .conftest import FAMILIES, sine_batch


@pytest.fixture(scope="module")
def audio():
    return sine_batch(2, 1.3)


def _reference_states(upstream, audio):
    """The L + 1 states the paper averaged (transformers 4.11 ``output_hidden_states``).

    transformers 5 returns the last block's output *before* the final LayerNorm as the last
    hidden state of stable-layer-norm models (wav2vec2 Large, HuBERT Large/xLarge); 4.11,
    which the paper used, returned ``last_hidden_state`` (after it). We follow the paper.
    """
    with torch.inference_mode():
        output = upstream.model(audio, output_hidden_states=True)
    return (*output.hidden_states[:-1], output.last_hidden_state)


@pytest.mark.parametrize("key", list(FAMILIES))
def test_mean_equals_hand_average_of_all_hidden_states(tiny_checkpoints, audio, key):
    family = "wav2vec2" if key.startswith("wav2vec2") else key
    upstream = get_family(family).build(str(tiny_checkpoints[key]))
    states = _reference_states(upstream, audio)
    assert len(states) == upstream.num_states == 4  # embedding output + 3 blocks
    expected = torch.stack(states).mean(dim=0)
    with torch.inference_mode():
        got = aggregate(upstream, audio, LayerAggregation("mean"))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "aggregation, combine",
    [
        (LayerAggregation("last"), lambda s: s[-1]),
        (LayerAggregation("layers", (0, 2)), lambda s: (s[0] + s[2]) / 2),
        (LayerAggregation("layers", (-1, 1)), lambda s: (s[1] + s[3]) / 2),
        (LayerAggregation("weights", weights=(1.0, 0.0, 3.0, 0.0)), lambda s: (s[0] + 3 * s[2]) / 4),
    ],
)
def test_last_subset_and_weights(tiny_checkpoints, audio, aggregation, combine):
    upstream = get_family("wav2vec2").build(str(tiny_checkpoints["wav2vec2"]))
    states = _reference_states(upstream, audio)
    with torch.inference_mode():
        got = aggregate(upstream, audio, aggregation)
    torch.testing.assert_close(got, combine(states), rtol=1e-5, atol=1e-5)


def test_last_state_is_model_output(tiny_checkpoints, audio):
    upstream = get_family("hubert").build(str(tiny_checkpoints["hubert"]))
    with torch.inference_mode():
        expected = upstream.model(audio).last_hidden_state
        got = aggregate(upstream, audio, LayerAggregation("last"))
    torch.testing.assert_close(got, expected)


def test_stops_running_blocks_once_needed_states_are_seen(tiny_checkpoints, audio):
    upstream = get_family("wav2vec2").build(str(tiny_checkpoints["wav2vec2"]))
    ran = []
    hooks = [b.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, b in enumerate(upstream._blocks)]
    try:
        with torch.inference_mode():
            aggregate(upstream, audio, LayerAggregation("layers", (1,)))
        assert ran == [0]  # state 1 is block 0's output, seen as block 1's input
        ran.clear()
        with torch.inference_mode():
            aggregate(upstream, audio, LayerAggregation("mean"))
        assert ran == [0, 1, 2]
    finally:
        for hook in hooks:
            hook.remove()


def test_memory_does_not_keep_every_state(tiny_checkpoints, audio):
    """While the mean of all states is accumulated, earlier hidden states are freed: when state k
    is visited, at most the one before it (a local of the model's forward) is still alive."""
    import gc
    import weakref

    upstream = get_family("wav2vec2").build(str(tiny_checkpoints["wav2vec2"]))
    seen: list[weakref.ref] = []
    still_alive = []
    stream = upstream.visit_states

    def watched(audio, visit, **kwargs):
        def spy(index, hidden):
            gc.collect()
            still_alive.append(sum(ref() is not None for ref in seen[:-1]))
            seen.append(weakref.ref(hidden))
            return visit(index, hidden)

        return stream(audio, spy, **kwargs)

    upstream.visit_states = watched
    with torch.inference_mode():
        result = aggregate(upstream, audio, LayerAggregation("mean"))
    assert len(seen) == 4 and result.shape[-1] == upstream.feature_dim
    assert max(still_alive) == 0, still_alive  # no state older than the previous one survives


@pytest.mark.parametrize(
    "bad",
    [
        dict(mode="median"),
        dict(mode="layers"),
        dict(mode="weights"),
        dict(mode="mean", layers=(1,)),
        dict(mode="layers", layers=(1,), weights=(1.0,)),
    ],
)
def test_invalid_aggregations_are_rejected(bad):
    with pytest.raises(ValueError):
        LayerAggregation(**bad)


def test_out_of_range_layers_and_wrong_weight_count():
    with pytest.raises(ValueError, match="out of range"):
        LayerAggregation("layers", (7,)).state_weights(4)
    with pytest.raises(ValueError, match="4 states"):
        LayerAggregation("weights", weights=(1.0, 2.0)).state_weights(4)


def test_parse_accepts_names_lists_and_dicts():
    assert LayerAggregation.parse("last") == LayerAggregation("last")
    assert LayerAggregation.parse([0, 3]) == LayerAggregation("layers", (0, 3))
    assert LayerAggregation.parse({"mode": "weights", "weights": [1, 1]}) == LayerAggregation(
        "weights", weights=(1.0, 1.0)
    )


@pytest.mark.parametrize("key", list(FAMILIES))
def test_weight_norm_folded_at_load_changes_no_state(tiny_checkpoints, audio, key):
    """The positional convolution's weight norm is computed once at load; every state equals the
    checkpoint loaded by `transformers` as it is (weight norm recomputed on each call)."""
    from torch.nn.utils import parametrize

    family = "wav2vec2" if key.startswith("wav2vec2") else key
    upstream = get_family(family).build(str(tiny_checkpoints[key]))
    assert not any(parametrize.is_parametrized(module) for module in upstream.model.modules())
    reference = type(upstream.model).from_pretrained(str(tiny_checkpoints[key])).eval()
    # data2vec-audio's positional convolutions carry no weight norm; the others do
    assert any(parametrize.is_parametrized(module) for module in reference.modules()) == (key != "data2vec_audio")
    with torch.inference_mode():
        expected = reference(audio, output_hidden_states=True)
        got = upstream.hidden_states(audio)
    for ours, theirs in zip(got[:-1], expected.hidden_states[:-1]):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[-1], expected.last_hidden_state, rtol=1e-6, atol=1e-6)
