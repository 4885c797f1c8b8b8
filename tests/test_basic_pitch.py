"""Basic Pitch against the package's own runtime: its ``nmp.onnx`` run by onnxruntime on the same windows, for
rendered music (FluidR3) and noise; then the upstream's windows, frames, short clips, mixed lengths, bf16,
``needed``, its errors and the HEAR API with CREPE tiny."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
import torch

from hearfuse import hear
from hearfuse.audio import resample
from hearfuse.config import FusionConfig, LayerAggregation, MemberConfig
from hearfuse.errors import ConfigError
from hearfuse.model import FusionModel
from hearfuse.upstream import WeightsNotFoundError, get_family
from hearfuse.upstream.basic_pitch import PROVENANCE
from hearfuse.upstream.basic_pitch_net import (
    CONTOUR,
    CORE_FRAMES,
    LEAD,
    MARGIN_FRAMES,
    NOTE,
    ONSET,
    ONSET_HIDDEN,
    STACK,
    WINDOW,
    WINDOW_STEP,
)
from hearfuse.upstream.packaged import packaged_file

from .hear_validator import validate

RATE, NET_RATE = 16000, 22050
#: The ONNX graph's output names, as basic_pitch.inference.Model.predict maps them.
ONNX_OUTPUTS = {
    "note": "StatefulPartitionedCall:1",
    "onset": "StatefulPartitionedCall:2",
    "contour": "StatefulPartitionedCall:0",
}
#: The package's own window step (inference.run_inference: AUDIO_N_SAMPLES less 30 frames of overlap).
PACKAGE_STEP = WINDOW - 30 * 256
#: Largest |torch - onnxruntime| allowed on the outputs (all in [0, 1]); 3.4e-6 was seen (onset, music) on 2 CPU cores.
TOLERANCE = 2e-5


@pytest.fixture(scope="module")
def upstream():
    return get_family("basic_pitch").build("icassp_2022")


@pytest.fixture(scope="module")
def session():
    onnxruntime = pytest.importorskip("onnxruntime")
    return onnxruntime.InferenceSession(str(packaged_file(PROVENANCE)), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    """3.2 s at 16 kHz: a piano triad, a violin melody note from 1 s, an acoustic bass from 1.6 s."""
    suite_music = pytest.importorskip("hearfuse.suite.music")
    notes = [(0, 60, 0, 900), (0, 64, 0, 900), (0, 67, 0, 900), (40, 69, 1000, 2200), (32, 36, 1600, 3000)]
    clip = suite_music.Clip(tuple(suite_music.Note(p, key, on, off, 100) for p, key, on, off in notes), 3200)
    try:
        (audio,) = suite_music.render_clips([clip])
    except FileNotFoundError as error:  # fluidsynth or the soundfont is missing
        pytest.skip(str(error))
    return audio


def _onnxruntime(session, windows: np.ndarray) -> dict[str, np.ndarray]:
    names = list(ONNX_OUTPUTS)
    values = session.run([ONNX_OUTPUTS[n] for n in names], {"serving_default_input_2:0": windows[..., None]})
    return dict(zip(names, values))


def _windowed_reference(session, audio_22050: np.ndarray, step: int) -> dict[str, np.ndarray]:
    """basic_pitch.inference's windowing restated (it cannot be imported without pretty_midi): 3,840 zeros
    before the clip, windows of 43,844 every ``step`` samples, zero-padded at the end, each window's first
    and last 15 frames dropped, the rest laid end to end."""
    padded = np.concatenate([np.zeros(LEAD, np.float32), audio_22050])
    windows = [padded[start : start + WINDOW] for start in range(0, len(padded), step)]
    windows = np.stack([np.pad(w, (0, WINDOW - len(w))) for w in windows]).astype(np.float32)
    outputs = _onnxruntime(session, windows)
    return {k: v[:, MARGIN_FRAMES : MARGIN_FRAMES + CORE_FRAMES].reshape(-1, v.shape[-1]) for k, v in outputs.items()}


@pytest.mark.parametrize("source", ["music", "noise"])
def test_outputs_equal_onnxruntime_on_one_window(source, upstream, session, music):
    if source == "music":
        window = resample(music, RATE, NET_RATE)[:WINDOW]
    else:
        window = 0.1 * np.random.default_rng(0).standard_normal(WINDOW)
    window = window.astype(np.float32)[None]
    expected = _onnxruntime(session, window)
    with torch.inference_mode():
        got = upstream.net.outputs(torch.from_numpy(window))
    for name, reference in expected.items():
        assert got[name].shape == reference.shape == (1, 172, 264 if name == "contour" else 88)
        difference = np.abs(got[name].numpy() - reference)
        print(f"{source} {name}: max |torch - onnxruntime| {difference.max():.2e}, largest value {reference.max():.3f}")
        assert difference.max() < TOLERANCE, name


def test_states_are_the_outputs_on_the_packages_windows(upstream, session, music):
    """The upstream resamples a 16 kHz clip (soxr HQ, as librosa.load in the package) and runs the package's
    windows, stepped by 142 whole hops: its note and onset states are the note and onset outputs, its contour
    state the contour averaged over each key's three bins. The first window is the package's own; from the
    second on the package steps 188 samples less (not a whole number of hops)."""
    audio = resample(music, RATE, NET_RATE)
    with torch.inference_mode():
        states = upstream.states(torch.from_numpy(music)[None], [CONTOUR, NOTE, ONSET])
    count = len(upstream.frame_centers_ms(len(music)))
    assert states[NOTE].shape == (1, count, 88) and count > CORE_FRAMES  # two windows
    ours = _windowed_reference(session, audio, WINDOW_STEP)
    package = _windowed_reference(session, audio, PACKAGE_STEP)
    expected = {NOTE: ours["note"], ONSET: ours["onset"], CONTOUR: ours["contour"].reshape(-1, 88, 3).mean(-1)}
    for index, reference in expected.items():
        np.testing.assert_allclose(states[index][0].numpy(), reference[:count], atol=TOLERANCE)
    np.testing.assert_allclose(states[NOTE][0, :CORE_FRAMES].numpy(), package["note"][:CORE_FRAMES], atol=TOLERANCE)


def test_frames_are_where_the_registry_says_and_where_sound_is(upstream):
    info = get_family("basic_pitch").checkpoints["icassp_2022"]
    hop = 1000 * 256 / NET_RATE
    assert (info.hop_ms, info.first_center_ms, info.sample_rate) == (hop, 0.0, NET_RATE)
    assert upstream.frame_centers_ms(5 * RATE)[:3].tolist() == [0.0, hop, 2 * hop]
    assert upstream.hop_samples * 1000 / RATE == pytest.approx(hop, abs=1e-12)
    # frames centred within the clip: 256 samples at 22,050 Hz are 185.76 at 16 kHz
    assert [len(upstream.frame_centers_ms(n)) for n in (0, 1, 185, 186, 16000, 31815)] == [1, 1, 1, 2, 87, 172]
    # an impulse lands on the frame whose centre is nearest, in the first window and in the second
    for at_ms in (1000.0, 2500.0):
        audio = torch.zeros(1, 48000)
        audio[0, int(at_ms * RATE / 1000)] = 1.0
        with torch.inference_mode():
            stack = upstream.states(audio, [STACK])[STACK][0]
        loudest = int(stack[:, 60:].mean(dim=1).argmax())  # the upper keys: short CQT kernels
        assert abs(upstream.frame_centers_ms(48000)[loudest].item() - at_ms) <= hop / 2


def test_short_clips_and_silence_give_one_finite_frame(upstream):
    """A clip shorter than one hop, or than the 2 s window, is zero-padded to one window (as the package
    pads its last window); its one frame is centred at its start. Silence normalises to zeros (TF's
    divide_no_nan), so it is finite too."""
    with torch.inference_mode():
        for audio in (torch.randn(2, 100), torch.zeros(1, 150), torch.zeros(1, 3000)):
            states = upstream.hidden_states(audio)
            shape = (len(audio), len(upstream.frame_centers_ms(audio.shape[-1])), 88)
            assert len(states) == upstream.num_states and shape[1] == (17 if audio.shape[-1] == 3000 else 1)
            assert all(s.shape == shape and torch.isfinite(s).all() for s in states)


def test_mixed_lengths_equal_each_clip_alone():
    """Each clip is resampled and windowed on its own length, so zero padding in the batch never reaches it;
    the fusion's 30 s windowing is not applied to Basic Pitch (its frames lie on no 16 kHz sample grid)."""
    member = MemberConfig("basic_pitch", "basic_pitch", "icassp_2022", LayerAggregation("mean"))
    model = FusionModel.from_config(FusionConfig("bp", (member,))).eval()
    assert model.members["basic_pitch"].windowing is None and model.mixed_batch_limit > 0
    rng = np.random.default_rng(1)
    clips = [torch.from_numpy((0.1 * rng.standard_normal(n)).astype(np.float32)) for n in (100, 40000, 7777, 16001)]
    with torch.no_grad():
        batched = model.embed_each(clips)
        alone = [model.embed(clip[None]).row(0) for clip in clips]
    for mine, reference in zip(batched, alone):
        np.testing.assert_allclose(mine.timestamp_embeddings, reference.timestamp_embeddings, atol=2e-5)
        np.testing.assert_allclose(mine.timestamps, reference.timestamps)
        np.testing.assert_allclose(mine.scene_embeddings, reference.scene_embeddings, atol=2e-5)


def test_bf16_autocast_runs_and_stays_close(upstream, music):
    audio = torch.from_numpy(music)[None]
    with torch.inference_mode():
        full = upstream.hidden_states(audio)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = upstream.hidden_states(audio)
            assert upstream.net.log_cqt(audio[:, :WINDOW]).dtype == torch.float32  # the front end stays float32
    for index, (a, b) in enumerate(zip(full, half)):
        assert b.dtype == torch.float32
        assert (a - b).abs().max() < 0.05 * max(1.0, a.abs().max().item()), index  # 0.015 seen (onset hidden)
        assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.999, index


def test_needed_states_compute_only_their_branch_and_a_visitor_stops_early(upstream):
    audio = 0.1 * torch.randn(1, 8000)
    ran = []
    hook = upstream.net.contour_conv.register_forward_hook(lambda *_: ran.append("contour"))
    seen = []
    try:
        with torch.inference_mode():
            upstream.visit_states(audio, lambda i, h: seen.append(i) or False, needed=[ONSET_HIDDEN])
            assert seen == [ONSET_HIDDEN] and not ran  # the onset branch's hidden map needs no contour
            seen.clear()
            upstream.visit_states(audio, lambda i, h: seen.append(i) or i == 1)
    finally:
        hook.remove()
    assert seen == [0, 1]


def test_missing_package_and_wrong_files(monkeypatch, tmp_path):
    family = get_family("basic_pitch")
    not_onnx = tmp_path / "weights.onnx"
    not_onnx.write_text("not a model")
    with pytest.raises(ConfigError, match="not an ONNX export of Basic Pitch") as error:
        family.build(str(not_onnx))
    assert "\n" not in str(error.value)
    with pytest.raises(WeightsNotFoundError, match="nor an ONNX file"):
        family.build(str(tmp_path / "absent.onnx"))

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    assert not family.is_available("icassp_2022")
    with pytest.raises(WeightsNotFoundError, match="pip install basic-pitch") as error:
        family.build("icassp_2022")
    assert "\n" not in str(error.value)


def test_hear_api_and_validator_with_crepe_tiny(tmp_path):
    config = tmp_path / "basic_pitch_crepe.toml"
    config.write_text(
        """name = "basic_pitch_crepe"
[[members]]
name = "basic_pitch"
family = "basic_pitch"
checkpoint = "icassp_2022"
aggregation = "mean"

[[members]]
name = "crepe"
family = "crepe"
checkpoint = "tiny"
options = { hop_ms = 20.0 }
"""
    )
    model = hear.load_model(str(config))
    audio = 0.1 * torch.randn(2, 20000)
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    assert embeddings.shape == (2, 108, model.timestamp_embedding_size) and torch.isfinite(embeddings).all()
    torch.testing.assert_close(timestamps[0], model.members["basic_pitch"].frame_centers_ms(20000).float())
    assert hear.get_scene_embeddings(audio, model).shape == (2, model.scene_embedding_size)
    validate(config)
