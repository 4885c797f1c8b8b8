"""Mixed-length batching: a padded batch of clips of different lengths gives each clip exactly what it
gets alone (per family, tiny checkpoints), and the batching rule mixes only what the model allows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import WavLMConfig, WavLMModel

from hearfuse.audio import AudioInfo
from hearfuse.batching import MIN_FILL, consecutive_batches, plan_batches
from hearfuse.collection.writer import embed_files
from hearfuse.config import FusionConfig, MemberConfig
from hearfuse.fusion.aggregation import LayerAggregation
from hearfuse.model import FusionModel, zero_mean_unit_variance
from hearfuse.upstream import get_family

from .conftest import TINY, sine_batch

#: Lengths around the interesting edges: under one receptive field (400 samples), one frame, odd.
LENGTHS = (16000, 250, 401, 7000, 12345)


@pytest.fixture(scope="module")
def wavlm_layer_norm(tmp_path_factory) -> Path:
    """WavLM with the layer-norm front end of WavLM Large (the shared fixture's WavLM is group norm)."""
    torch.manual_seed(7)
    overrides = dict(num_buckets=8, max_bucket_distance=20, feat_extract_norm="layer", do_stable_layer_norm=True)
    directory = tmp_path_factory.mktemp("wavlm_layer")
    WavLMModel(WavLMConfig(**{**TINY, **overrides})).save_pretrained(directory)
    return directory


def _upstream(key: str, tiny_checkpoints, wavlm_layer_norm):
    if key == "crepe":
        return get_family("crepe").build("tiny", hop_ms=10)
    if key == "wavlm_layer":
        return get_family("wavlm").build(str(wavlm_layer_norm))
    family = "wav2vec2" if key.startswith("wav2vec2") else key
    return get_family(family).build(str(tiny_checkpoints[key]))


def _padded(clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(clip) for clip in clips])
    audio = torch.zeros(len(clips), int(lengths.max()))
    for row, clip in enumerate(clips):
        audio[row, : len(clip)] = clip
    return audio, lengths


@pytest.mark.parametrize(
    "key, mixes",
    [
        ("wav2vec2", True),  # wav2vec2 Large lv60's layer-norm front end
        ("hubert", True),  # HuBERT Large / xLarge
        ("wavlm_layer", True),  # WavLM Large
        ("crepe", True),  # frames are independent
        ("wav2vec2_group", False),  # wav2vec2 Base: group norm over the whole input
        ("wavlm", False),  # WavLM Base: group norm
        ("data2vec_audio", False),  # stacked positional convolutions carry padding inwards
    ],
)
def test_every_state_of_a_mixed_batch_equals_each_clip_alone(key, mixes, tiny_checkpoints, wavlm_layer_norm):
    upstream = _upstream(key, tiny_checkpoints, wavlm_layer_norm)
    assert upstream.mixed_lengths is mixes
    clips = [sine_batch(1, length / 16000, seed=index)[0] for index, length in enumerate(LENGTHS)]
    audio, lengths = _padded(clips)
    if not mixes:
        with pytest.raises(ValueError, match="different lengths"):
            upstream.visit_states(audio, lambda index, hidden: False, lengths=lengths)
        return
    with torch.inference_mode():
        batched = _states(upstream, audio, lengths)
        for row, clip in enumerate(clips):
            alone = _states(upstream, clip[None], None)
            frames = len(upstream.frame_centers_ms(len(clip)))
            assert len(alone) == len(batched) == upstream.num_states
            for state, (one, many) in enumerate(zip(alone, batched)):
                assert one.shape[1] == frames, (state, one.shape)
                torch.testing.assert_close(many[row, :frames], one[0], rtol=1e-4, atol=2e-5)


def _states(upstream, audio: torch.Tensor, lengths: torch.Tensor | None) -> list[torch.Tensor]:
    states: list[torch.Tensor] = []
    keyword = {} if lengths is None else {"lengths": lengths}
    upstream.visit_states(audio, lambda index, hidden: states.append(hidden.float().clone()) and False, **keyword)
    return states


def test_masked_normalisation_equals_each_clip_normalised_alone():
    clips = [torch.randn(length) * (1 + index) + index for index, length in enumerate((50, 300, 7))]
    audio, lengths = _padded(clips)
    normalised = zero_mean_unit_variance(audio, lengths)
    for row, clip in enumerate(clips):
        torch.testing.assert_close(normalised[row, : len(clip)], zero_mean_unit_variance(clip[None])[0])
        assert not normalised[row, len(clip) :].any()


def _assert_same(each, alone, row: int = 0) -> None:
    for field in ("timestamp_embeddings", "timestamps", "scene_embeddings"):
        mine, reference = getattr(each, field), getattr(alone, field)
        assert (mine is None) == (reference is None), field
        if mine is not None:
            torch.testing.assert_close(mine, reference[row], rtol=1e-4, atol=1e-5)


def test_embed_each_equals_embed_of_each_clip_alone_and_runs_each_member_once(tiny_fusion_model, monkeypatch):
    model = tiny_fusion_model
    assert model.mixed_batch_limit == round(model.config.window_seconds * 16000)
    clips = [sine_batch(1, length / 16000, seed=index)[0] for index, length in enumerate((*LENGTHS, 16000))]
    runs = {name: 0 for name in model.members}
    for name, member in model.members.items():
        original = member.upstream.visit_states

        def counted(*args, name=name, original=original, **kwargs):
            runs[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(member.upstream, "visit_states", counted)
    results = model.embed_each(clips)
    # one padded run of each member; CREPE runs again for its coarser scene frames
    assert runs == {name: 2 if m.upstream.scene_frames_differ else 1 for name, m in model.members.items()}
    monkeypatch.undo()
    assert len(results) == len(clips)
    for clip, each in zip(clips, results):
        _assert_same(each, model.embed(clip[None]))
    scene_only = model.embed_each(clips[:3], timestamp=False)
    assert all(each.timestamp_embeddings is None for each in scene_only)
    for clip, each in zip(clips, scene_only):
        _assert_same(each, model.embed(clip[None], timestamp=False))


def test_embed_each_of_variants_equals_embed_variants_alone(tiny_fusion_model):
    model = tiny_fusion_model
    variants = {"wav2vec2": [LayerAggregation("last"), LayerAggregation("layers", (0, 2))]}
    clips = [sine_batch(1, length / 16000, seed=index)[0] for index, length in enumerate(LENGTHS[:3])]
    results = model.embed_each_variants(clips, variants)
    assert len(results) == 2 and all(len(per_clip) == len(clips) for per_clip in results)
    for index, clip in enumerate(clips):
        for k, alone in enumerate(model.embed_variants(clip[None], variants)):
            _assert_same(results[k][index], alone)


def test_clips_past_the_window_or_of_a_group_norm_model_run_in_equal_length_batches(
    tiny_checkpoints, tiny_fusion_config
):
    windowed = FusionModel.from_config(tiny_fusion_config.with_options(window_seconds=1.0, window_context_seconds=0.25))
    clips = [sine_batch(1, seconds, seed=index)[0] for index, seconds in enumerate((0.5, 2.3, 0.7, 2.3, 1.7))]
    for clip, each in zip(clips, windowed.embed_each(clips)):
        _assert_same(each, windowed.embed(clip[None]))
    group = FusionConfig(
        name="group_norm",
        members=(MemberConfig("w2v", "wav2vec2", str(tiny_checkpoints["wav2vec2_group"])),),
    )
    model = FusionModel.from_config(group)
    assert model.mixed_batch_limit == 0
    for clip, each in zip(clips[:3], model.embed_each(clips[:3])):
        _assert_same(each, model.embed(clip[None]))


def test_embed_each_refuses_what_is_not_a_clip(tiny_fusion_model):
    with pytest.raises(ValueError, match="clip 1 must be a 1-D torch.Tensor"):
        tiny_fusion_model.embed_each([torch.zeros(100), torch.zeros(2, 100)])
    with pytest.raises(ValueError, match="NaN"):
        tiny_fusion_model.embed_each([torch.full((100,), float("nan"))])


def _info(seconds: float, rate: int = 16000) -> AudioInfo:
    return AudioInfo(frames=round(seconds * rate), sample_rate=rate, channels=1)


@pytest.mark.parametrize("mix_up_to", [0.0, 5.0, 100.0])
def test_batches_mix_only_clips_the_model_allows_within_the_padded_budget(mix_up_to):
    rng = np.random.default_rng(0)
    durations = np.round(rng.uniform(0.5, 12, size=300), 3).tolist() + [3.0] * 20
    items = [(f"clip{index:03d}", _info(seconds)) for index, seconds in enumerate(durations)]
    batches = plan_batches(items, 30.0, mix_up_to_seconds=mix_up_to)
    assert sorted(name for batch in batches for name, _ in batch) == sorted(name for name, _ in items)
    for batch in batches:
        seconds = [info.duration for _, info in batch]
        if len({(info.frames, info.sample_rate) for _, info in batch}) > 1:
            assert max(seconds) <= mix_up_to
            assert sum(seconds) >= MIN_FILL * len(seconds) * max(seconds)
        assert len(batch) == 1 or len(batch) * max(seconds) <= 30.0
    sizes = [len(batch) for batch in batches]
    if mix_up_to == 0:  # equal lengths only: most of these clips ride alone
        assert max(sizes) == 10 and np.mean(sizes) < 1.5
    else:  # mixing fills the batches of clips it may mix
        assert np.mean([len(batch) for batch in batches if batch[-1][1].duration <= mix_up_to]) > 3
    shuffled = [items[index] for index in rng.permutation(len(items))]
    assert plan_batches(shuffled, 30.0, mix_up_to_seconds=mix_up_to) == batches


def test_consecutive_batches_keep_order_and_never_pad_a_short_clip_with_a_long_one():
    durations = [1.0, 1.1, 30.0, 1.0, 0.9, 0.95, 2.0]
    items = [(index, _info(seconds)) for index, seconds in enumerate(durations)]
    batches = list(consecutive_batches(items, 60.0, mix_up_to_seconds=30.0))
    assert [index for batch in batches for index, _ in batch] == list(range(len(items)))
    assert [[index for index, _ in batch] for batch in batches] == [[0, 1], [2], [3, 4, 5], [6]]


def test_hearfuse_embed_batches_mixed_lengths_and_writes_what_each_clip_gets_alone(tmp_path, monkeypatch):
    config = FusionConfig(name="crepe_tiny", members=(MemberConfig("crepe", "crepe", "tiny"),))
    model = FusionModel.from_config(config)
    folder = tmp_path / "in"
    folder.mkdir()
    clips = {}
    for index, seconds in enumerate((0.5, 0.55, 0.6, 0.62, 0.7, 0.71)):
        clips[f"c{index}.wav"] = sine_batch(1, seconds, seed=index)[0].numpy()
        sf.write(folder / f"c{index}.wav", clips[f"c{index}.wav"], 16000, subtype="FLOAT")
    sizes: list[int] = []
    original = FusionModel.embed_each

    def counted(self, batch, **kwargs):
        sizes.append(len(batch))
        return original(self, batch, **kwargs)

    monkeypatch.setattr(FusionModel, "embed_each", counted)
    summary = embed_files(model, [folder], tmp_path / "out", batch_seconds=10.0, progress=False)
    assert not summary.failures and summary.embedded == len(clips)
    assert sum(sizes) == len(clips) and max(sizes) > 1
    for name, clip in clips.items():
        stored = np.load(tmp_path / "out" / f"{name}.npz")
        alone = model.embed(torch.from_numpy(clip)[None])
        np.testing.assert_allclose(stored["scene_embedding"], alone.scene_embeddings[0].numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            stored["timestamp_embeddings"], alone.timestamp_embeddings[0].numpy(), rtol=1e-4, atol=1e-5
        )


def test_evaluation_cache_batches_mixed_lengths_in_storage_order_as_each_clip_alone(tmp_path, monkeypatch):
    from hearfuse.evaluation.cache import embed_split
    from hearfuse.evaluation.tasks import load_task

    from .taskgen import event_task

    task_dir = event_task(tmp_path, clips=8)
    for index, path in enumerate(sorted((task_dir / "16000" / "train").glob("*.wav"))):
        audio, rate = sf.read(path, dtype="float32")
        sf.write(path, audio[: 48000 - 1500 * index], rate, subtype="FLOAT")  # every clip a different length
    task = load_task(task_dir)
    model = FusionModel.from_config(
        FusionConfig(name="crepe_tiny", members=(MemberConfig("crepe", "crepe", "tiny", options={"hop_ms": 10}),))
    )
    sizes: list[int] = []
    original = FusionModel.embed_each_variants

    def counted(self, clips, *args, **kwargs):
        sizes.append(len(clips))
        return original(self, clips, *args, **kwargs)

    monkeypatch.setattr(FusionModel, "embed_each_variants", counted)
    cached = embed_split(model, task, "train", tmp_path / "cache", batch_seconds=30.0)
    assert max(sizes) > 1 and sum(sizes) == len(cached.files)
    lengths = set()
    for file, start, count in zip(cached.files, cached.starts, cached.counts):
        audio, _ = sf.read(task_dir / "16000" / "train" / file, dtype="float32")
        lengths.add(len(audio))
        alone = model.embed(torch.from_numpy(audio)[None], scene=False)
        np.testing.assert_allclose(
            np.asarray(cached.rows[start : start + count]), alone.timestamp_embeddings[0].numpy(), rtol=1e-4, atol=1e-5
        )
        np.testing.assert_array_equal(cached.timestamps[start : start + count], alone.timestamps[0].numpy())
    assert len(lengths) > 1
