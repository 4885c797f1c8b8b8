"""The HEAR API on a tiny fusion_cat_xwc (tiny random transformers + real CREPE tiny weights).

Includes the checks HEAR's own validator makes (shapes, dtype, timestamps)."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

import hearfuse
from hearfuse import catalogue

from .conftest import sine_batch


@pytest.mark.parametrize("seconds", [1.07, 1.98, 4.0])
def test_timestamp_embeddings_like_hear_validator(tiny_fusion_model, seconds):
    audio = sine_batch(2, seconds)
    embeddings, timestamps = hearfuse.get_timestamp_embeddings(audio, tiny_fusion_model)
    assert embeddings.dtype == torch.float32 and timestamps.dtype == torch.float32
    assert embeddings.ndim == 3 and timestamps.ndim == 2
    assert embeddings.shape[:2] == timestamps.shape and embeddings.shape[0] == 2
    assert embeddings.shape[2] == tiny_fusion_model.timestamp_embedding_size == 3 * 32
    expected_frames = (audio.shape[1] - 400) // 320 + 1
    assert embeddings.shape[1] == expected_frames
    steps = torch.diff(timestamps, dim=1)
    assert torch.all((steps - steps.mean()).abs() < 1.0)  # evenly spaced within 1 ms
    assert timestamps[0, 0] == pytest.approx(12.5) and steps.mean() == pytest.approx(20.0)
    assert timestamps.max() <= seconds * 1000
    assert torch.equal(timestamps[0], timestamps[1])


def test_scene_embeddings_like_hear_validator(tiny_fusion_model):
    audio = sine_batch(4, 2.74)
    scene = hearfuse.get_scene_embeddings(audio, tiny_fusion_model)
    assert scene.shape == (4, tiny_fusion_model.scene_embedding_size) and scene.dtype == torch.float32
    assert torch.isfinite(scene).all()


def test_batch_of_n_equals_n_singles_and_is_deterministic(tiny_fusion_model):
    audio = sine_batch(3, 1.5)
    batch, _ = tiny_fusion_model.timestamp_embeddings(audio)
    again, _ = tiny_fusion_model.timestamp_embeddings(audio)
    assert torch.equal(batch, again)
    for i in range(3):
        single, _ = tiny_fusion_model.timestamp_embeddings(audio[i : i + 1])
        torch.testing.assert_close(single[0], batch[i], rtol=1e-4, atol=1e-5)


def test_fused_layout_is_interleaved_members(tiny_fusion_model):
    """Channel 3k+1 is wav2vec2's (the reference, so not interpolated) feature k."""
    audio = sine_batch(1, 1.2)
    embeddings, _ = tiny_fusion_model.timestamp_embeddings(audio)
    member = tiny_fusion_model.members["wav2vec2"]
    with torch.inference_mode():
        wav2vec2 = member(audio)
    torch.testing.assert_close(embeddings[..., 1::3], wav2vec2)


def test_scene_uses_coarser_crepe_hop_and_groups(tiny_fusion_config):
    from hearfuse.model import FusionModel

    model = FusionModel.from_config(tiny_fusion_config.with_options(scene_groups=5))
    assert model.scene_embedding_size == 5 * 96
    audio = sine_batch(2, 2.0)
    frames, _ = model.fused_frames(audio, scene=True)
    torch.testing.assert_close(model.scene_embeddings(audio), _group_means(frames, 5), rtol=1e-5, atol=1e-5)


def _group_means(frames: torch.Tensor, groups: int) -> torch.Tensor:
    """The paper's group pooling written with numpy: drop the tail, split, average, concatenate."""
    n, count, _ = frames.shape
    usable = count // groups * groups
    means = frames[:, :usable].numpy().reshape(n, groups, usable // groups, -1).mean(axis=2)
    return torch.from_numpy(means.reshape(n, -1))


@pytest.mark.parametrize(
    "options",
    [
        {"scene_groups": 1},
        {"scene_groups": 5},
        {"scene_groups": 5, "time_alignment": "timestamps"},
        {"combine": "avg", "interleave": False},
    ],
)
def test_windowed_scene_pooling_equals_pooling_the_full_frames(tiny_fusion_config, options, monkeypatch):
    """Scene embeddings of a long clip are pooled window by window, never from the whole sequence."""
    from hearfuse.model import FusionModel, Member

    config = tiny_fusion_config.with_options(window_seconds=1.0, window_context_seconds=0.2, **options)
    model = FusionModel.from_config(config)
    audio = sine_batch(2, 4.3)
    frames, _ = model.fused_frames(audio, scene=True)
    expected = _group_means(frames, config.scene_groups)

    def whole_sequence(*args, **kwargs):
        raise AssertionError("scene pooling materialised a member's whole frame sequence")

    monkeypatch.setattr(Member, "forward", whole_sequence)
    scene = model.scene_embeddings(audio)
    torch.testing.assert_close(scene, expected, rtol=1e-4, atol=1e-5)
    monkeypatch.undo()
    torch.testing.assert_close(model.embed(audio).scene_embeddings, scene, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("samples", [1, 100, 399, 400, 1600])
def test_short_clips_give_at_least_one_frame(tiny_fusion_model, samples):
    audio = sine_batch(2, samples / 16000)
    embeddings, timestamps = tiny_fusion_model.timestamp_embeddings(audio)
    assert embeddings.shape[1] == max(1, (samples - 400) // 320 + 1)
    assert timestamps.max() <= samples / 16
    assert torch.isfinite(embeddings).all()
    assert hearfuse.get_scene_embeddings(audio, tiny_fusion_model).shape == (2, 96)


@pytest.mark.parametrize(
    "bad, message",
    [
        ([[0.0] * 100], "torch.Tensor"),
        (torch.zeros(100), "2-D"),
        (torch.zeros(1, 1, 100), "2-D"),
        (torch.zeros(1, 100, dtype=torch.int16), "floating point"),
        (torch.zeros(0, 100), "empty"),
        (torch.zeros(2, 0), "zero samples"),
        (torch.tensor([[0.0, float("nan")] * 300]), "NaN"),
        (torch.tensor([[0.0, float("inf")] * 300]), "NaN or Inf"),
    ],
)
def test_bad_input_raises_value_error(tiny_fusion_model, bad, message):
    with pytest.raises(ValueError, match=message):
        hearfuse.get_timestamp_embeddings(bad, tiny_fusion_model)
    with pytest.raises(ValueError, match=message):
        hearfuse.get_scene_embeddings(bad, tiny_fusion_model)


def test_non_model_is_rejected():
    with pytest.raises(ValueError, match="FusionModel"):
        hearfuse.get_scene_embeddings(torch.zeros(1, 16000), torch.nn.Linear(1, 1))


def test_float64_input_is_accepted(tiny_fusion_model):
    audio = sine_batch(1, 1.0)
    expected, _ = tiny_fusion_model.timestamp_embeddings(audio)
    got, _ = tiny_fusion_model.timestamp_embeddings(audio.double())
    torch.testing.assert_close(got, expected)


def test_bf16_autocast_agrees_with_fp32(tiny_fusion_config):
    from hearfuse.model import FusionModel

    audio = sine_batch(2, 1.5)
    full, _ = FusionModel.from_config(tiny_fusion_config).timestamp_embeddings(audio)
    half, _ = FusionModel.from_config(tiny_fusion_config, dtype=torch.bfloat16).timestamp_embeddings(audio)
    assert half.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(full, half, dim=-1).mean() > 0.99


@pytest.mark.parametrize(
    "device, enabled, deterministic, inside",
    [
        ("cpu", True, False, False),
        ("cuda", True, False, True),
        ("cuda", False, False, False),
        ("cuda", True, True, False),
    ],
)
def test_cudnn_autotuning_only_on_cuda_and_only_while_running(
    tiny_fusion_model, monkeypatch, device, enabled, deterministic, inside
):
    from hearfuse.model import FusionModel

    monkeypatch.setattr(FusionModel, "device", property(lambda self: torch.device(device)))
    monkeypatch.setattr(tiny_fusion_model, "cudnn_benchmark", enabled)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", deterministic)
    with tiny_fusion_model.inference():
        assert torch.backends.cudnn.benchmark is inside
        assert torch.is_inference_mode_enabled()
    assert torch.backends.cudnn.benchmark is False


def test_model_stays_in_eval_mode(tiny_fusion_model):
    tiny_fusion_model.train()
    assert not any(module.training for module in tiny_fusion_model.modules())


@pytest.mark.parametrize("name", catalogue.names())
def test_every_preset_is_a_hear_module_that_builds_its_own_preset(name, monkeypatch, tmp_path):
    from hearfuse import hear

    module = importlib.import_module(f"hearfuse.presets.{name}")
    built = []
    monkeypatch.setattr(hear.FusionModel, "from_config", lambda config, **kwargs: built.append(config) or config)
    module.load_model()
    assert built[-1] == catalogue.get(name)  # the preset itself, not the package default
    config = tmp_path / "other.json"
    config.write_text(json.dumps(catalogue.get("crepe").to_dict()))
    module.load_model(str(config))  # HEAR runners may pass a model file: it wins
    assert built[-1].name == "crepe" and built[-1].members == catalogue.get("crepe").members
    assert module.get_timestamp_embeddings is hear.get_timestamp_embeddings
    assert module.get_scene_embeddings is hear.get_scene_embeddings


def test_crepe_preset_loads_real_weights_through_hear_module():
    module = importlib.import_module("hearfuse.presets.crepe")
    model = module.load_model()
    assert (model.sample_rate, model.timestamp_embedding_size, model.scene_embedding_size) == (16000, 2048, 2048)
    embeddings, timestamps = module.get_timestamp_embeddings(sine_batch(2, 1.07), model)
    assert embeddings.shape == (2, 22, 2048)
    assert timestamps[0, :2].tolist() == [0.0, 50.0]
    assert module.get_scene_embeddings(sine_batch(2, 1.07), model).shape == (2, 2048)


def test_embed_both_kinds_runs_transformers_once_and_matches_separate_calls(tiny_fusion_model):
    audio = sine_batch(2, 1.6)
    calls = []
    hook = tiny_fusion_model.members["hubert"].upstream.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        both = tiny_fusion_model.embed(audio)
    finally:
        hook.remove()
    assert len(calls) == 1
    timestamp, timestamps = tiny_fusion_model.timestamp_embeddings(audio)
    torch.testing.assert_close(both.timestamp_embeddings, timestamp)
    torch.testing.assert_close(both.timestamps, timestamps)
    torch.testing.assert_close(both.scene_embeddings, tiny_fusion_model.scene_embeddings(audio))
    with pytest.raises(ValueError):
        tiny_fusion_model.embed(audio, timestamp=False, scene=False)
