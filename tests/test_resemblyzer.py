"""Resemblyzer's GE2E speaker encoder against the package's own runtime (``resemblyzer`` 0.1.4 with librosa), on
espeak-ng speech: the mel, every LSTM layer, the speaker projection and ``embed_utterance``; then frames, short
clips, mixed lengths, bf16, early stop, missing or wrong weights, and the HEAR validator with CREPE tiny."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from hearfuse import hear
from hearfuse.config import FusionConfig, LayerAggregation, MemberConfig
from hearfuse.errors import ConfigError
from hearfuse.model import FusionModel
from hearfuse.upstream import WeightsNotFoundError, get_family
from hearfuse.upstream.resemblyzer import PROVENANCE
from hearfuse.upstream.resemblyzer_net import PARTIAL_FRAMES, partial_starts

from .hear_validator import validate

resemblyzer = pytest.importorskip("resemblyzer", reason="the reference is the resemblyzer package (librosa inside)")
SPEECH = "The quick brown fox jumps over the lazy dog, and then it runs away into the forest."


@pytest.fixture(scope="module")
def upstream():
    return get_family("resemblyzer").build("pretrained")


@pytest.fixture(scope="module")
def reference():
    return resemblyzer.VoiceEncoder("cpu", verbose=False)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """About 5.3 s of espeak-ng speech at 16 kHz (22,050 Hz resampled with soxr)."""
    synth = pytest.importorskip("hearfuse.suite.synth")
    return synth.speak(SPEECH)


def _report(what: str, mine, expected) -> None:
    mine, expected = np.asarray(mine, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    largest, scale = np.abs(mine - expected).max(), np.abs(expected).max()
    print(f"{what}: largest absolute difference {largest:.3g}, {largest / scale:.2g} of the largest value {scale:.3g}")


@pytest.mark.filterwarnings("ignore:n_fft=400 is too large")  # librosa on clips shorter than a window
def test_mel_equals_the_packages_librosa_mel(upstream, speech):
    """``resemblyzer.audio.wav_to_mel_spectrogram`` on speech, on a clip of one sample, and on lengths around a hop."""
    clips = [speech, speech[24000:24001], speech[24000:24100], speech[24000:24160], speech[24000:24561]]
    for clip in clips:
        expected = resemblyzer.wav_to_mel_spectrogram(clip)
        with torch.inference_mode():
            mine = upstream.encoder.mel(torch.from_numpy(clip)[None])[0].numpy()
        assert mine.shape == expected.shape == (1 + len(clip) // 160, 40)
        _report(f"mel of {len(clip)} samples", mine, expected)
        # float32 FFTs of different libraries; powers span decades, so the tolerance is relative to the largest
        np.testing.assert_allclose(mine, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def _reference_layers(reference, mels: torch.Tensor) -> list[torch.Tensor]:
    """The output of each layer of the package's own LSTM: layer k's from a copy of ``reference.lstm`` cut to its
    first k + 1 layers (the package's weights), the last from ``reference.lstm`` itself."""
    outputs = []
    for layers in range(1, reference.lstm.num_layers):
        cut = torch.nn.LSTM(reference.lstm.input_size, reference.lstm.hidden_size, layers, batch_first=True)
        cut.load_state_dict({k: v for k, v in reference.lstm.state_dict().items() if int(k[-1]) < layers})
        outputs.append(cut(mels)[0])
    outputs.append(reference.lstm(mels)[0])
    return outputs


def test_every_layer_equals_the_packages_lstm_on_the_same_mels(upstream, reference, speech):
    mels = torch.from_numpy(resemblyzer.wav_to_mel_spectrogram(speech))[None]
    with torch.inference_mode():
        mine = list(upstream.encoder.layer_outputs(mels))
        expected = _reference_layers(reference, mels)
        projections = upstream.encoder.project(mine[-1])[0]
        # the projection at frame t: VoiceEncoder.forward on the utterance that ends there
        ends = [0, 159, mels.shape[1] - 1]
        expected_projections = torch.cat([reference(mels[:, : t + 1]) for t in ends])
    for layer, (state, want) in enumerate(zip(mine, expected)):
        _report(f"LSTM layer {layer}", state, want)
        torch.testing.assert_close(state, want, rtol=0, atol=1e-5)
    _report("speaker projection", projections[ends], expected_projections)
    torch.testing.assert_close(projections[ends], expected_projections, rtol=0, atol=1e-5)


def test_states_from_the_waveform_equal_the_package(upstream, reference, speech):
    """End to end: the upstream's states from the waveform against the package's mel and LSTM."""
    mels = torch.from_numpy(resemblyzer.wav_to_mel_spectrogram(speech))[None]
    with torch.inference_mode():
        states = upstream.hidden_states(torch.from_numpy(speech)[None])
        expected = _reference_layers(reference, mels)
    assert len(states) == upstream.num_states == 4
    for layer, (state, want) in enumerate(zip(states, expected)):
        assert state.shape == (1, len(upstream.frame_centers_ms(len(speech))), 256)
        _report(f"state {layer} from the waveform", state, want)
        torch.testing.assert_close(state, want, rtol=0, atol=1e-4)  # the mels differ in float32's last bits


@pytest.mark.parametrize("seconds", [5.3, 1.8, 0.7])
def test_utterance_embedding_equals_embed_utterance(upstream, reference, speech, seconds):
    """Six partials (5.3 s), a second partial too short to keep (1.8 s: 64 % of it is audio), one padded (0.7 s)."""
    clip = speech[: round(seconds * 16000)]
    expected = reference.embed_utterance(clip)
    with torch.inference_mode():
        mine = upstream.embed_utterance(torch.from_numpy(clip)).numpy()
    _report(f"utterance embedding of {seconds} s", mine, expected)
    np.testing.assert_allclose(mine, expected, rtol=0, atol=1e-5)


def test_partials_are_placed_as_the_package_places_them():
    for rate, min_coverage in [(1.3, 0.75), (0.625, 0.5), (4.0, 1.0)]:
        for samples in [1, 159, 160, 12_000, 25_599, 25_600, 25_601, 37_920, 38_000, 84_751, 160_000]:
            _, slices = resemblyzer.VoiceEncoder.compute_partial_slices(samples, rate, min_coverage)
            starts = partial_starts(samples, rate=rate, min_coverage=min_coverage)
            assert starts == [s.start for s in slices] and all(s.stop - s.start == PARTIAL_FRAMES for s in slices)


def test_frames_and_timestamps(upstream):
    for samples in (1, 159, 160, 161, 16_000, 16_159):
        centres = upstream.frame_centers_ms(samples)
        assert centres.dtype == torch.float64
        assert centres.tolist() == [10.0 * j for j in range(1 + samples // 160)]
        with torch.inference_mode():
            assert upstream.hidden_states(torch.zeros(1, samples))[0].shape[1] == len(centres)
    rule = get_family("resemblyzer").frames("pretrained")
    assert (rule.hop_ms, rule.first_center_ms) == (10.0, 0.0)
    assert upstream.hop_samples == 160 and upstream.receptive_field == 400


def test_a_clip_shorter_than_one_frame_gives_one_frame_of_it_alone(upstream, speech):
    """90 samples: one frame, whose centred window holds the clip with zeros around, as librosa frames it."""
    clip = speech[24000:24090]
    with torch.inference_mode():
        states = upstream.hidden_states(torch.from_numpy(clip)[None])
    assert [tuple(state.shape) for state in states] == [(1, 1, 256)] * 4
    assert all(torch.isfinite(state).all() for state in states)
    model = _fusion(aggregation="mean")
    with torch.inference_mode():
        embedded = model.embed(torch.from_numpy(clip)[None]).row(0)
    assert embedded.timestamp_embeddings.shape == (1, 256) and embedded.timestamps.tolist() == [0.0]


def _fusion(*, aggregation: str = "mean") -> FusionModel:
    member = MemberConfig("resemblyzer", "resemblyzer", "pretrained", LayerAggregation(aggregation))
    return FusionModel.from_config(FusionConfig("resemblyzer", (member,))).eval()


def test_mixed_length_batches_equal_each_clip_alone(upstream, speech):
    clips = [torch.from_numpy(speech[start : start + n]) for start, n in [(0, 5000), (3000, 16001), (9000, 90)]]
    clips.append(torch.from_numpy(speech[20000:32345]))
    # the upstream itself: every state of each row's own frames
    lengths = torch.tensor([len(clip) for clip in clips])
    batch = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
    with torch.inference_mode():
        together: list[torch.Tensor] = []
        upstream.visit_states(batch, lambda _, state: together.append(state) or False, lengths=lengths)
        for row, clip in enumerate(clips):
            alone = upstream.hidden_states(clip[None])
            count = len(upstream.frame_centers_ms(len(clip)))
            for state, own in zip(together, alone):
                torch.testing.assert_close(state[row, :count], own[0], rtol=0, atol=2e-5)
    # and through the fusion's embed_each, as the HEAR runner batches them
    model = _fusion()
    assert model.mixed_batch_limit > 0
    with torch.inference_mode():
        batched = model.embed_each(clips)
        alone = [model.embed(clip[None]).row(0) for clip in clips]
    for mine, want in zip(batched, alone):
        np.testing.assert_allclose(mine.timestamp_embeddings, want.timestamp_embeddings, atol=2e-5)
        np.testing.assert_allclose(mine.timestamps, want.timestamps)
        np.testing.assert_allclose(mine.scene_embeddings, want.scene_embeddings, atol=2e-5)


def test_bf16_autocast_runs_and_stays_close(upstream, speech):
    """Under bf16 autocast the mel and the LSTM stay float32 (oneDNN has no bfloat16 LSTM without AVX-512: see
    the next test), so the LSTM states are float32's own; the projection runs in bfloat16."""
    audio = torch.from_numpy(speech)[None]
    with torch.inference_mode():
        full = upstream.hidden_states(audio)
        full_embedding = upstream.embed_utterance(audio[0])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = upstream.hidden_states(audio)
            half_embedding = upstream.embed_utterance(audio[0])
    for state, same in zip(full[:3], half[:3]):
        assert same.dtype == torch.float32 and torch.equal(state, same)
    cosine = torch.nn.functional.cosine_similarity(full[3], half[3].float(), dim=-1)
    print(f"speaker projection under bf16: lowest cosine {cosine.min():.5f}")
    assert cosine.min() > 0.995
    assert torch.dot(full_embedding, half_embedding.float()) > 0.999
    model = FusionModel.from_config(_fusion().config, dtype="bfloat16")  # linear weights cast to bf16 at load
    with torch.inference_mode():
        embedded = model.embed(audio).row(0)
    assert torch.isfinite(torch.as_tensor(embedded.timestamp_embeddings)).all()


def test_embeds_under_autocast_on_an_avx2_cpu_without_resemblyzer_or_librosa():
    """In a process whose oneDNN may use AVX2 at most (where ``nn.LSTM`` in bfloat16 fails): the states and the
    utterance embedding under bf16 autocast, and neither the package's code nor librosa imported to embed."""
    code = (
        "import sys, torch; from hearfuse.upstream import get_family; "
        "up = get_family('resemblyzer').build('pretrained'); "
        "ctx = torch.autocast('cpu', dtype=torch.bfloat16); ctx.__enter__(); "
        "up.hidden_states(torch.randn(1, 1600)); up.embed_utterance(torch.randn(1600)); "
        "print(sorted(m for m in ('resemblyzer', 'librosa', 'webrtcvad') if m in sys.modules))"
    )
    environment = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_needed_states_and_early_stop_run_no_more_layers(upstream):
    runs: list[int] = []
    lstms = upstream.encoder.lstms
    hooks = [lstm.register_forward_hook(lambda *_, i=i: runs.append(i)) for i, lstm in enumerate(lstms)]
    seen: list[int] = []
    audio = torch.randn(1, 4000)
    try:
        with torch.inference_mode():
            upstream.visit_states(audio, lambda i, _: seen.append(i) or False, needed={0})
            assert (seen, runs) == ([0], [0])
            seen.clear(), runs.clear()
            upstream.visit_states(audio, lambda i, _: seen.append(i) or i == 1)
            assert (seen, runs) == ([0, 1], [0, 1])
            seen.clear(), runs.clear()
            upstream.visit_states(audio, lambda i, _: seen.append(i) or False, needed={1, 3})
            assert (seen, runs) == ([1, 3], [0, 1, 2])
    finally:
        for hook in hooks:
            hook.remove()


def test_registry_entry_and_weights_from_a_path(upstream):
    family = get_family("resemblyzer")
    info = family.checkpoints["pretrained"]
    assert (info.feature_dim, info.num_states, info.sample_rate) == (upstream.feature_dim, upstream.num_states, 16000)
    assert info.provenance == PROVENANCE and PROVENANCE.licence == "Apache-2.0"
    assert importlib.metadata.distribution("resemblyzer").read_text("LICENSE").lstrip().startswith("Apache License")
    assert family.is_available("pretrained") and not family.is_available("/nonexistent/encoder.pt")
    path = str(importlib.metadata.distribution("resemblyzer").locate_file(PROVENANCE.file))
    from_path = family.build(path)
    audio = torch.randn(1, 3000)
    with torch.inference_mode():
        torch.testing.assert_close(from_path.hidden_states(audio)[-1], upstream.hidden_states(audio)[-1])
    assert family.frames(path) == family.frames("pretrained")


def test_wrong_files_are_one_line_errors(tmp_path):
    family = get_family("resemblyzer")
    text = tmp_path / "notes.txt"
    text.write_text("not weights\n")
    other = tmp_path / "other.pt"
    torch.save({"model_state": {"lstm.weight_ih_l0": torch.zeros(1024, 80)}}, other)
    bare = tmp_path / "bare.pt"
    torch.save({"step": 3}, bare)
    expected = {
        text: "torch.load cannot read it",
        other: "lstm.weight_ih_l0 is (1024, 80), expected a tensor of shape (1024, 40)",
        bare: "no 'model_state'",
    }
    for path, says in expected.items():
        with pytest.raises(ConfigError) as caught:
            family.build(str(path))
        message = str(caught.value)
        assert "\n" not in message and str(path) in message and says in message, message
    with pytest.raises(WeightsNotFoundError, match="neither 'pretrained' nor a file"):
        family.build(str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="takes no options"):
        family.build("pretrained", hop_ms=20.0)


def test_missing_package_is_a_one_line_error(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    family = get_family("resemblyzer")
    assert not family.is_available("pretrained")
    with pytest.raises(WeightsNotFoundError) as caught:
        family.build("pretrained")
    assert "\n" not in str(caught.value) and "pip install resemblyzer" in str(caught.value)


def test_with_crepe_through_the_hear_api_and_validator(tmp_path, speech):
    members = (
        MemberConfig("resemblyzer", "resemblyzer", "pretrained", LayerAggregation("mean")),
        MemberConfig("crepe", "crepe", "tiny", options={"hop_ms": 20.0, "scene_hop_ms": 20.0}),
    )
    config = FusionConfig("speaker_and_pitch", members, reference="resemblyzer")
    model = hear.load_model(config)
    audio = torch.from_numpy(np.stack([speech[:24000], speech[24000:48000]]))
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    scene = hear.get_scene_embeddings(audio, model)
    assert embeddings.shape == (2, 1 + 24000 // 160, model.timestamp_embedding_size)
    assert timestamps[0, :3].tolist() == [0.0, 10.0, 20.0] and scene.shape == (2, model.scene_embedding_size)
    assert torch.isfinite(embeddings).all() and torch.isfinite(scene).all()
    validate(config.save(tmp_path / "speaker_and_pitch.toml"))
