"""Whisper's encoder, w2v-BERT 2.0 and AST as upstream families, on tiny random checkpoints saved with their
feature extractors: the torch front ends against the `transformers` extractors, every hidden state against
`transformers`' own ``hidden_states``, frames and timestamps, windows, mixed-length batches, and a fusion of
all three with CREPE tiny through the HEAR API and `hearfuse layers`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import transformers

from hearfuse import hear
from hearfuse.config import FusionConfig, LayerAggregation, MemberConfig
from hearfuse.fusion.windowing import window_plan, window_samples
from hearfuse.model import FusionModel
from hearfuse.upstream import get_family
from hearfuse.upstream.frontends import KALDI_FRAME

from . import taskgen
from .conftest import save_tiny_feature_encoders

RATE = 16000


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    return save_tiny_feature_encoders(tmp_path_factory.mktemp("feature_encoders"))


@pytest.fixture(scope="module")
def upstreams(checkpoints):
    return {family: get_family(family).build(path) for family, path in checkpoints.items()}


def _clip(samples: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(samples)).astype(np.float32)


def _reference(family: str, upstream, extractor, clip: np.ndarray):
    """The extractor's features for ``clip`` and `transformers`' hidden states of the model on them."""
    inputs = extractor(clip, sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        if family == "whisper":
            return inputs["input_features"], upstream.encoder(inputs["input_features"], output_hidden_states=True)
        if family == "wav2vec2_bert":
            output = upstream.model(
                inputs["input_features"], attention_mask=inputs["attention_mask"], output_hidden_states=True
            )
            return inputs["input_features"], output
        return inputs["input_values"], upstream.model(inputs["input_values"], output_hidden_states=True)


def _frames(family: str, upstream, hidden: torch.Tensor, count: int) -> torch.Tensor:
    return upstream._columns(hidden, count) if family == "ast" else hidden[:, :count]


#: Per family: a clip shorter than one frame, odd lengths, and (Whisper, AST) one window exactly.
LENGTHS = {
    "whisper": [100, 7777, 16001, 480000],
    "wav2vec2_bert": [300, 561, 7777, 16001],
    "ast": [300, 7777, 16001, 20720],
}


@pytest.mark.parametrize("family", list(LENGTHS))
def test_front_end_equals_the_feature_extractor(family, checkpoints, upstreams):
    upstream = upstreams[family]
    extractor = transformers.AutoFeatureExtractor.from_pretrained(checkpoints[family])
    for samples in [n for n in LENGTHS[family] if n >= KALDI_FRAME or family == "whisper"]:
        clip = _clip(samples, seed=samples)
        expected, _ = _reference(family, upstream, extractor, clip)
        audio = torch.from_numpy(clip)[None]
        mine = (
            upstream.frontend(audio, torch.tensor([samples])) if family == "wav2vec2_bert" else upstream.frontend(audio)
        )
        mine = mine[0] if isinstance(mine, tuple) else mine
        scale = float(expected.abs().max())
        np.testing.assert_allclose(mine.numpy(), expected.numpy(), atol=1e-4 * max(scale, 1.0), err_msg=f"{samples}")


@pytest.mark.parametrize("family", list(LENGTHS))
def test_every_hidden_state_is_transformers_own(family, checkpoints, upstreams):
    upstream = upstreams[family]
    extractor = transformers.AutoFeatureExtractor.from_pretrained(checkpoints[family])
    for samples in LENGTHS[family]:
        clip = _clip(samples, seed=samples)
        # a clip shorter than the front end's first frame is zero-padded on both sides to it, as run alone
        minimum = {"whisper": 0, "wav2vec2_bert": upstream.receptive_field, "ast": KALDI_FRAME}[family]
        padded = (
            np.pad(clip, ((minimum - samples) // 2, minimum - samples - (minimum - samples) // 2))
            if samples < minimum
            else clip
        )
        _, reference = _reference(family, upstream, extractor, padded)
        with torch.no_grad():
            states = upstream.hidden_states(torch.from_numpy(clip)[None])
        count = len(upstream.frame_centers_ms(samples))
        assert len(states) == upstream.num_states == len(reference.hidden_states)
        for index, (state, expected) in enumerate(zip(states, reference.hidden_states)):
            assert state.shape == (1, count, upstream.feature_dim), (samples, index)
            np.testing.assert_allclose(
                state.numpy(),
                _frames(family, upstream, expected, count).numpy(),
                atol=1e-4,  # the front end in float32 against the extractor's float64
                err_msg=f"{samples} {index}",
            )


def test_frames_and_timestamps(upstreams):
    whisper, bert, ast = upstreams["whisper"], upstreams["wav2vec2_bert"], upstreams["ast"]
    assert [len(whisper.frame_centers_ms(n)) for n in (1, 320, 321, 16000, 480000)] == [1, 1, 2, 50, 1500]
    assert whisper.frame_centers_ms(16000)[:3].tolist() == [0.0, 20.0, 40.0]  # a frame centred on 2 mel frames
    # w2v-BERT: pairs of 25 ms fbank frames 10 ms apart, 20 ms hop: centres 17.5 ms + 20 ms j
    assert bert.frame_centers_ms(16000)[:2].tolist() == [17.5, 37.5]
    assert len(bert.frame_centers_ms(16000)) == (1 + (16000 - 400) // 160) // 2 and len(bert.frame_centers_ms(10)) == 1
    # AST: a time column of 16 fbank frames every 10: 100 ms hop, centred 87.5 ms into its span
    assert ast.frame_centers_ms(16000)[:2].tolist() == [87.5, 187.5] and len(ast.frame_centers_ms(16000)) == 10
    assert len(ast.frame_centers_ms(10**6)) == ast.time_patches
    assert (whisper.max_input_samples, ast.max_input_samples) == (480000, 127 * 160 + 400)


def test_the_registry_states_each_familys_frames_as_its_models_make_them(upstreams, tiny_checkpoints):
    """Each family's frame rule (hop, first centre), known without loading a checkpoint, against the frames of
    a model built from it: the tiny checkpoints share the published ones' front ends (strides, windows)."""
    built = dict(upstreams)
    for family in ("wav2vec2", "hubert", "wavlm", "data2vec_audio"):
        built[family] = get_family(family).build(str(tiny_checkpoints[family]))
    for family, upstream in built.items():
        registered = get_family(family)
        assert registered.frames("/a/local/dir") is None  # not in its table: only the loaded model knows
        for checkpoint in registered.checkpoints:
            rule = registered.frames(checkpoint)
            centres = upstream.frame_centers_ms(5 * RATE)[:3].tolist()
            assert centres == [rule.first_center_ms + j * rule.hop_ms for j in range(3)], (family, checkpoint)
    crepe = get_family("crepe")
    for options in ({}, {"hop_ms": 20.0, "first_center_ms": 12.5}, {"hop_ms": 10.0, "scene_hop_ms": 250.0}):
        for checkpoint in ("tiny", "/any/weights.h5"):  # CREPE's frames are its options', whatever the weights
            rule = crepe.frames(checkpoint, options)
            centres = crepe.build("tiny", **options).frame_centers_ms(5 * RATE)[:3].tolist()
            assert centres == [rule.first_center_ms + j * rule.hop_ms for j in range(3)], options


def _model(checkpoints, *families, window_seconds=30.0, context_seconds=5.0, aggregation="mean") -> FusionModel:
    members = tuple(MemberConfig(f, f, checkpoints[f], LayerAggregation(aggregation)) for f in families)
    config = FusionConfig("test", members, window_seconds=window_seconds, window_context_seconds=context_seconds)
    return FusionModel.from_config(config).eval()


@pytest.mark.parametrize("family", ["whisper", "ast"])
def test_longer_than_one_window(family, checkpoints, upstreams):
    """A clip longer than what the model takes in one call goes through the windowing: every frame of the
    clip, each window's core frames as the model gives them on that window alone."""
    model = _model(checkpoints, family, aggregation="last")
    member = model.members[family]
    window = member.windowing
    assert window is not None and window.window_seconds <= upstreams[family].max_input_samples / RATE
    samples = int(upstreams[family].max_input_samples * 2.3) + 123
    audio = torch.from_numpy(_clip(samples))[None]
    with torch.no_grad():
        frames = member(audio)
        first = upstreams[family].hidden_states(audio[:, : window_samples(upstreams[family], window)])[-1]
    assert frames.shape == (1, len(upstreams[family].frame_centers_ms(samples)), upstreams[family].feature_dim)
    assert torch.isfinite(frames).all()
    _, core = window_plan(upstreams[family], window)  # the first window gives the clip's first core frames
    np.testing.assert_allclose(frames[:, :core].numpy(), first[:, :core].numpy(), atol=2e-5)


@pytest.mark.parametrize("family", list(LENGTHS))
def test_mixed_length_batches_equal_each_clip_alone(family, checkpoints):
    model = _model(checkpoints, family)
    assert model.mixed_batch_limit > 0
    clips = [torch.from_numpy(_clip(n, seed=n)) for n in (5000, 16001, 900, 12345)]
    with torch.no_grad():
        batched = model.embed_each(clips)
        alone = [model.embed(clip[None]).row(0) for clip in clips]
    for mine, reference in zip(batched, alone):
        np.testing.assert_allclose(mine.timestamp_embeddings, reference.timestamp_embeddings, atol=2e-5)
        np.testing.assert_allclose(mine.timestamps, reference.timestamps)
        np.testing.assert_allclose(mine.scene_embeddings, reference.scene_embeddings, atol=2e-5)


def test_all_three_with_crepe_through_the_hear_api(checkpoints):
    members = tuple(
        MemberConfig(f, f, checkpoints[f], LayerAggregation("mean")) for f in ("whisper", "wav2vec2_bert", "ast")
    )
    crepe = MemberConfig(
        "crepe", "crepe", "tiny", options={"hop_ms": 20.0, "scene_hop_ms": 20.0, "first_center_ms": 12.5}
    )
    config = FusionConfig("today", (*members, crepe), reference="whisper")
    model = hear.load_model(config)
    audio = torch.from_numpy(np.stack([_clip(24000, 1), _clip(24000, 2)]))
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    scene = hear.get_scene_embeddings(audio, model)
    assert embeddings.dtype == scene.dtype == torch.float32
    assert embeddings.shape == (2, math.ceil(24000 / 320), model.timestamp_embedding_size)
    assert scene.shape == (2, model.scene_embedding_size)
    assert torch.allclose(torch.diff(timestamps[0]), torch.tensor(20.0, dtype=timestamps.dtype))
    assert torch.isfinite(embeddings).all() and torch.isfinite(scene).all()


def test_layers_scores_every_state_of_every_member(checkpoints, tmp_path):
    from hearfuse.evaluation.evaluate import EvaluationSettings
    from hearfuse.evaluation.layers import analyse_layers
    from hearfuse.evaluation.protocol import Protocol

    taskgen.scene_task(tmp_path / "tasks", clips=8)
    members = tuple(
        MemberConfig(f, f, checkpoints[f], LayerAggregation("mean")) for f in ("whisper", "wav2vec2_bert", "ast")
    )
    config = FusionConfig("today", (*members, MemberConfig("crepe", "crepe", "tiny")), reference="whisper")
    settings = EvaluationSettings(
        tmp_path / "cache", tmp_path / "results", protocol=Protocol(probe="knn"), progress=False
    )
    _, analysed = analyse_layers(config, tmp_path / "tasks", settings)
    expected = {"whisper": 3, "wav2vec2_bert": 4, "ast": 3, "crepe": 5}
    assert {layers.member: len(layers.results) for layers in analysed} == expected
    for layers in analysed:
        assert all(len(per_task) == 1 and per_task[0]["status"] == "ok" for per_task in layers.results), layers.member


@pytest.mark.parametrize("example", ["hubert_whisper_crepe.toml", "w2vbert_ast_crepe.toml"])
def test_the_examples_embed(example, checkpoints, tiny_checkpoints):
    """The example configs (docs/guide/families.md), with tiny checkpoints standing in for the hub ones."""
    from dataclasses import replace
    from pathlib import Path

    config = FusionConfig.load(Path(__file__).parents[1] / "examples" / example)
    local = {**checkpoints, "hubert": str(tiny_checkpoints["hubert"]), "crepe": "tiny"}
    members = tuple(replace(m, checkpoint=local[m.family]) for m in config.members)
    model = hear.load_model(config.with_options(members=members))
    audio = torch.from_numpy(np.stack([_clip(20000, 3)]))
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    assert embeddings.shape[-1] == model.timestamp_embedding_size and torch.isfinite(embeddings).all()
    assert torch.allclose(torch.diff(timestamps[0]), torch.tensor(20.0, dtype=timestamps.dtype))
