"""Weights resolution (local directory, cache, offline errors) and fusion config files."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import typing
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import hearfuse
from hearfuse import catalogue
from hearfuse.config import FusionConfig, MemberConfig
from hearfuse.errors import ConfigError
from hearfuse.upstream import WeightsNotFoundError, get_family, is_cached, is_offline

from . import processes, taskgen
from .conftest import sine_batch


def test_loads_local_directory_offline(tiny_checkpoints):
    assert is_offline()
    upstream = get_family("hubert").build(str(tiny_checkpoints["hubert"]))
    assert upstream.num_states == 4 and upstream.feature_dim == 40
    assert (upstream.hop_samples, upstream.receptive_field) == (320, 400)
    assert is_cached(str(tiny_checkpoints["hubert"]))


def test_missing_hub_checkpoint_offline_names_it_and_says_how_to_provide_it():
    with pytest.raises(WeightsNotFoundError) as error:
        get_family("wav2vec2").build("facebook/wav2vec2-large-960h-lv60-self")
    message = str(error.value)
    assert "facebook/wav2vec2-large-960h-lv60-self" in message
    assert "offline" in message and "save_pretrained" in message and "hearfuse download" in message


def _refusing_address() -> str:
    """An address on this machine where nothing listens: a connection there is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


HEAR_API = """
import hearfuse
try:
    hearfuse.load_model("cat_wc")
except hearfuse.upstream.WeightsNotFoundError as error:
    raise SystemExit(f"{type(error).__name__}: {error}")
"""


@pytest.mark.parametrize(
    "command, status",
    [
        (["embed", "clip.wav", "--model", "cat_wc", "--out", "out"], 2),
        (["evaluate", "--model", "cat_wc", "--tasks", "tasks", "--results", "results"], 2),
        (["layers", "--model", "cat_wc", "--tasks", "tasks", "--results", "results"], 2),
        (["download", "cat_wc"], 1),
        (["-c", HEAR_API], 1),
    ],
    ids=["embed", "evaluate", "layers", "download", "hear-api"],
)
def test_missing_weights_and_no_network_is_one_line_at_once(tmp_path, command, status):
    """The hub refuses at once (not HF_HUB_OFFLINE): which checkpoint, the cache folder looked in and the
    command that fetches it, without the hub client's retry lines or its exception chain."""
    sf.write(tmp_path / "clip.wav", (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16000)
    taskgen.scene_task(tmp_path / "tasks", clips=6)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "XDG_"))}
    env |= {"HOME": str(tmp_path / "home"), "HF_ENDPOINT": _refusing_address()}
    program = [sys.executable] if command[0] == "-c" else [sys.executable, "-m", "hearfuse"]
    started = time.monotonic()
    result = processes.run([*program, *command], cwd=tmp_path, env=env, timeout=120)
    elapsed = time.monotonic() - started
    lines = result.stderr.strip().splitlines()
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr and "Retrying" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr  # download: one line per missing checkpoint, and cat_wc has one
    message = lines[0]
    assert "facebook/wav2vec2" in message and "cannot be reached" in message, message
    assert str(tmp_path / "home" / ".cache" / "huggingface" / "hub") in message  # where it looked
    assert "`hf download facebook/wav2vec2" in message, message
    assert elapsed < 30, elapsed  # python, torch and transformers start; no 25 s of retries


def test_missing_directory_and_non_checkpoint_directory(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        get_family("hubert").build(str(tmp_path / "nowhere"))
    with pytest.raises(WeightsNotFoundError, match="not a checkpoint directory"):
        get_family("hubert").build(str(tmp_path))


def test_unknown_family_and_preset():
    with pytest.raises(ValueError, match="known families"):
        get_family("whisperx")
    with pytest.raises(ValueError, match="neither a preset"):
        hearfuse.load_model("wav2vec3")


def test_checkpoint_normalisation_flag_is_read_from_feature_extractor(tiny_checkpoints, tmp_path):
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    directory = tmp_path / "normalising"
    Wav2Vec2Model.from_pretrained(tiny_checkpoints["wav2vec2_group"]).save_pretrained(directory)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(directory)
    assert get_family("wav2vec2").build(str(directory)).expects_normalized_waveform
    Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(directory)
    assert not get_family("wav2vec2").build(str(directory)).expects_normalized_waveform


TOML_EXAMPLE = """
name = "wavlm_plus_crepe"
reference = "wavlm"
combine = "cat"
time_alignment = "timestamps"
feature_alignment = "none"
scene_groups = 2

[[members]]
name = "wavlm"
family = "wavlm"
checkpoint = "./wavlm"
aggregation = {{ mode = "layers", layers = [0, 2, 3] }}
normalize = "always"

[[members]]
name = "crepe"
family = "crepe"
checkpoint = "tiny"
options = {{ hop_ms = 10 }}
"""


def test_toml_config_with_relative_checkpoint_and_new_family(tiny_checkpoints, tmp_path):
    import shutil

    shutil.copytree(tiny_checkpoints["wavlm"], tmp_path / "wavlm")
    path = tmp_path / "fusion.toml"
    path.write_text(TOML_EXAMPLE.format())
    model = hearfuse.load_model(str(path))
    assert model.timestamp_embedding_size == 32 + 256 and model.scene_embedding_size == 2 * 288
    embeddings, timestamps = hearfuse.get_timestamp_embeddings(sine_batch(2, 1.0), model)
    assert embeddings.shape == (2, 49, 288) and timestamps[0, 0] == pytest.approx(12.5)
    assert model.members["wavlm"].normalize


def test_config_round_trips_through_dict_and_json(tmp_path):
    config = catalogue.get("fusion_cat_xwc_g")
    assert FusionConfig.from_dict(config.to_dict()) == config
    path = tmp_path / "g.json"
    path.write_text(json.dumps(config.to_dict()))
    assert FusionConfig.load(path) == config


def test_fingerprint_changes_with_anything_that_changes_numbers():
    config = catalogue.get("fusion_cat_xwc")
    assert config.fingerprint() == catalogue.get("fusion_cat_xwc").fingerprint()
    assert config.fingerprint() == replace(config, name="renamed").fingerprint()
    assert config.fingerprint() != catalogue.get("fusion_cat_xwc", crepe_frames="reference").fingerprint()
    assert config.fingerprint() != catalogue.get("cat_xwc").fingerprint()
    assert config.fingerprint() != replace(config, interleave=False).fingerprint()


CREPE_MEMBER = {"name": "a", "family": "crepe", "checkpoint": "tiny"}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"members": []}, "members: must be a non-empty list"),
        ({"members": "crepe"}, "members: must be a non-empty list"),
        ({"members": [{"name": "a", "family": "crepe"}]}, r"members\[0\]: needs 'checkpoint'"),
        ({"members": [{**CREPE_MEMBER, "hop": 1}]}, r"members\[0\]: unknown key\(s\) \['hop'\]"),
        ({"members": [CREPE_MEMBER], "pooling": "max"}, r"unknown key\(s\) \['pooling'\]"),
        ({"members": [CREPE_MEMBER], "reference": "b"}, "not a member"),
        ({"members": [CREPE_MEMBER], "combine": "sum"}, "combine"),
        ({"members": [CREPE_MEMBER], "combine": "avg", "interleave": True}, "interleave"),
        # types: a bool is a bool, an integer an integer, a number a number
        ({"members": [CREPE_MEMBER], "interleave": "false"}, "interleave must be true or false, got 'false'"),
        ({"members": [CREPE_MEMBER], "scene_groups": "2"}, "scene_groups must be an integer, got '2'"),
        ({"members": [CREPE_MEMBER], "scene_groups": 2.5}, "scene_groups must be an integer, got 2.5"),
        ({"members": [CREPE_MEMBER], "scene_groups": True}, "scene_groups must be an integer, got True"),
        ({"members": [CREPE_MEMBER], "feature_dim": "128"}, "feature_dim must be an integer, got '128'"),
        ({"members": [CREPE_MEMBER], "window_seconds": 1e308}, "window_seconds must be <= 86400"),
        ({"members": [CREPE_MEMBER], "window_seconds": float("nan")}, "window_seconds must be a finite number"),
        ({"members": [CREPE_MEMBER], "window_seconds": 8.0}, "window_seconds"),  # not above twice its context
        ({"members": [{**CREPE_MEMBER, "options": {"hop_ms": "50"}}]}, "options: hop_ms must be a number"),
        ({"members": [{**CREPE_MEMBER, "options": {"hop_ms": 0}}]}, "options: hop_ms must be > 0"),
        ({"members": [{**CREPE_MEMBER, "options": {"frame_batch": 2.5}}]}, "frame_batch must be an integer"),
        ({"members": [{**CREPE_MEMBER, "options": {"hopms": 50}}]}, r"unknown option\(s\) \['hopms'\] for family"),
        ({"members": [{**CREPE_MEMBER, "family": "crepes"}]}, "unknown family 'crepes'"),
        ({"members": [{**CREPE_MEMBER, "checkpoint": 7}]}, "checkpoint must be a string"),
        ({"members": [{**CREPE_MEMBER, "aggregation": "median"}]}, "aggregation: unknown aggregation 'median'"),
    ],
)
def test_malformed_configs_say_what_is_wrong(data, message):
    with pytest.raises(ConfigError, match=message):
        FusionConfig.from_dict(data)


def test_each_settings_choices_are_stated_once_and_checked_however_a_config_is_built():
    """The Literal hint of a setting is where its values are stated: the checks take their choices from it."""
    from hearfuse import config as config_module

    for cls, table in ((FusionConfig, config_module._FUSION_FIELDS), (MemberConfig, config_module._MEMBER_FIELDS)):
        hints = typing.get_type_hints(cls)
        for name, option in table.items():
            literal = typing.get_args(hints[name]) if typing.get_origin(hints[name]) is typing.Literal else None
            assert option.choices == literal, f"{cls.__name__}.{name}"
    crepe = MemberConfig("c", "crepe", "tiny")
    with pytest.raises(ConfigError, match="combine must be one of cat, avg, got 'sum'"):
        FusionConfig("x", (crepe,), combine="sum")
    with pytest.raises(ConfigError, match="time_alignment must be one of stretch, timestamps, got 'nearest'"):
        FusionConfig("x", (crepe,), time_alignment="nearest")
    with pytest.raises(ConfigError, match="scene_groups must be >= 1, got 0"):
        FusionConfig("x", (crepe,)).with_options(scene_groups=0)
    with pytest.raises(ConfigError, match="member 'c': normalize must be one of none, checkpoint, always"):
        MemberConfig("c", "crepe", "tiny", normalize="sometimes")
    with pytest.raises(ConfigError, match="feature_alignment must be one of interpolate, none"):
        FusionConfig.from_dict({"members": [CREPE_MEMBER], "feature_alignment": "pad"})
    with pytest.raises(ValueError, match="preset 'crepe': crepe_frames must be one of paper, reference, got 'x'"):
        catalogue.get("crepe", crepe_frames="x")


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[members]]\nname = "a"\nfamily = "crepe"\ncheckpoint = "tiny"\ninterleave = "false"\n', "unknown key"),
        (
            'interleave = "false"\n[[members]]\nname = "a"\nfamily = "crepe"\ncheckpoint = "tiny"\n',
            "interleave must be true or false",
        ),
        ("members = [", "not valid TOML"),
    ],
)
def test_config_files_are_named_in_their_errors(tmp_path, text, message):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as error:
        FusionConfig.load(path)
    assert str(error.value).startswith(f"{path}: ") or str(error.value).startswith(f"fusion config {path}: ")
    with pytest.raises(ConfigError, match="does not exist"):
        FusionConfig.load(tmp_path / "absent.toml")


def test_averaging_native_widths_is_rejected_at_load(tiny_checkpoints):
    config = FusionConfig(
        "bad",
        (
            MemberConfig("w", "wav2vec2", str(tiny_checkpoints["wav2vec2"])),
            MemberConfig("c", "crepe", "tiny"),
        ),
        combine="avg",
        feature_alignment="none",
    )
    with pytest.raises(ValueError, match="feature_alignment"):
        hearfuse.load_model(config)


def test_unknown_crepe_option_and_transformer_option(tiny_checkpoints):
    with pytest.raises(TypeError):
        get_family("crepe").build("tiny", hop=10)
    with pytest.raises(ValueError, match="takes no options"):
        get_family("hubert").build(str(tiny_checkpoints["hubert"]), hop_ms=10)


EXPECTED_SIZES = {
    "wav2vec2_large": (1024, 1024),
    "hubert_xlarge": (1280, 1280),
    "crepe": (2048, 2048),
    "fusion_wav2vec2_large": (1024, 1024),
    "fusion_hubert_xlarge": (1280, 1280),
    "avg_xw": (1024, 1024),
    "cat_xw": (2048, 2048),
    "avg_xc": (1024, 1024),
    "cat_wc": (2048, 2048),
    "cat_xwc": (3072, 3072),
    "fusion_cat_xwc": (3072, 3072),
    "fusion_cat_xwc_g": (3072, 15360),
}


@pytest.mark.parametrize("name", list(EXPECTED_SIZES))
def test_preset_sizes_match_the_paper_code(name):
    info = catalogue.describe(catalogue.get(name))
    assert (info["timestamp_embedding_size"], info["scene_embedding_size"]) == EXPECTED_SIZES[name]


def test_described_hops_come_from_the_registry():
    hops = {name: catalogue.describe(catalogue.get(name))["hop_ms"] for name in catalogue.names()}
    assert hops == {name: 50.0 if name == "crepe" else 20.0 for name in catalogue.names()}
    assert catalogue.describe(catalogue.get("crepe", crepe_frames="reference"))["hop_ms"] == 20.0
    unlisted = FusionConfig("local", (MemberConfig("w", "wav2vec2", "/a/local/dir"),))
    assert catalogue.describe(unlisted)["hop_ms"] is None  # only the loaded model knows


def test_preset_members_and_layers():
    fusion = catalogue.get("fusion_cat_xwc")
    assert [(m.checkpoint, m.aggregation.mode) for m in fusion.members] == [
        ("facebook/hubert-xlarge-ll60k", "mean"),
        ("facebook/wav2vec2-large-960h-lv60-self", "mean"),
        ("full", "last"),
    ]
    assert fusion.reference == "wav2vec2" and fusion.interleave and fusion.time_alignment == "stretch"
    assert catalogue.get("avg_xw").members[0].checkpoint == "facebook/hubert-large-ll60k"
    assert catalogue.get("avg_xc").members[0].checkpoint == "facebook/hubert-xlarge-ll60k"
    assert all(m.aggregation.mode == "last" for m in catalogue.get("cat_xwc").members)
    assert catalogue.get("fusion_cat_xwc_g").scene_groups == 5


def test_preset_alternatives():
    refined = catalogue.get("fusion_cat_xwc", normalize="checkpoint", crepe_frames="reference")
    crepe = next(m for m in refined.members if m.family == "crepe")
    assert crepe.options == {"hop_ms": 20.0, "scene_hop_ms": 20.0, "first_center_ms": 12.5}
    assert refined.time_alignment == "timestamps"
    assert all(m.normalize == "checkpoint" for m in refined.members if m.family != "crepe")
    with pytest.raises(ValueError):
        catalogue.get("fusion_cat_xwc", crepe_frames="nearest")


def test_crepe_reference_frames_align_exactly_with_the_reference(tiny_checkpoints):
    """With CREPE computed at the reference centres, timestamp alignment selects frames, no blending."""
    config = catalogue.get("cat_wc", crepe_frames="reference")
    members = (
        replace(config.members[0], checkpoint=str(tiny_checkpoints["wav2vec2"])),
        replace(config.members[1], checkpoint="tiny"),
    )
    model = hearfuse.load_model(replace(config, members=members, interleave=False, feature_alignment="none"))
    audio = sine_batch(1, 1.3)
    embeddings, _ = model.timestamp_embeddings(audio)
    with torch.inference_mode():
        crepe = model.members["crepe"](audio)
    torch.testing.assert_close(embeddings[..., 32:], crepe[:, : embeddings.shape[1]])


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.toml")), ids=str)
def test_example_configs_load_and_embed(path):
    config = FusionConfig.load(path)  # every example is a valid config
    if not all(get_family(m.family).is_available(m.checkpoint) for m in config.members):
        # hub weights cannot be here; test_feature_encoders embeds those examples on tiny stand-ins
        assert path.name in ("hubert_whisper_crepe.toml", "w2vbert_ast_crepe.toml")
        return
    model = hearfuse.load_model(str(path))
    scene = model.scene_embeddings(sine_batch(1, 0.6))
    assert scene.shape == (1, model.scene_embedding_size)
