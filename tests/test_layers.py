"""Layer-wise analysis: hidden states of every member, probed from one model pass per clip."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hearfuse.cli import main
from hearfuse.config import FusionConfig, MemberConfig
from hearfuse.errors import ConfigError
from hearfuse.evaluation.charts import layer_heatmap
from hearfuse.evaluation.evaluate import EvaluationSettings, evaluate
from hearfuse.evaluation.layers import StateRows, analyse_layers, best_state, learn_layer_weights, state_view
from hearfuse.evaluation.protocol import Protocol
from hearfuse.fusion.aggregation import LayerAggregation
from hearfuse.model import FusionModel
from hearfuse.upstream.crepe import packaged_weights
from hearfuse.upstream.crepe_net import CrepeNet, CrepeUpstream
from hearfuse.upstream.transformer import TransformerUpstream

from . import taskgen
from .conftest import sine_batch
from .test_crepe import _reference_frames, _torchcrepe_model

PROTOCOL = Protocol(probe="linear", max_epochs=20)


@pytest.fixture(scope="module")
def tasks_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layer_tasks")
    taskgen.scene_task(root, clips=12)
    taskgen.event_task(root, clips=4)
    return root


@pytest.fixture(scope="module")
def two_members(tiny_fusion_config) -> FusionConfig:
    """A tiny transformer (4 states) and CREPE tiny (5 states), with short windows so the long-audio
    path is used too."""
    members = tuple(m for m in tiny_fusion_config.members if m.family in ("wav2vec2", "crepe"))
    return tiny_fusion_config.with_options(name="pair", members=members, reference=members[0].name)


def _settings(root: Path, probe: str = "linear") -> EvaluationSettings:
    return EvaluationSettings(root / "cache", root / "results", protocol=replace(PROTOCOL, probe=probe), progress=False)


def test_crepe_states_are_the_reference_blocks_pooled_to_the_embedding_width():
    """State i = torchcrepe's block i output, averaged over adjacent time steps to 64 x capacity values."""
    net = CrepeNet("tiny").load_keras_weights(packaged_weights("tiny"))
    reference = _torchcrepe_model("tiny")
    frames = _reference_frames(sine_batch(1, 0.3)[0].numpy(), hop=800)
    with torch.inference_mode():
        states = net.states(frames, range(5))
        x = frames[:, None, :, None]
        paddings = [(0, 0, 254, 254)] + [(0, 0, 31, 32)] * 4
        for index, padding in enumerate(paddings):
            conv, norm = getattr(reference, f"conv{index + 1}"), getattr(reference, f"conv{index + 1}_BN")
            x = reference.layer(x, conv, norm, padding)
            maps = x[..., 0].numpy()  # (frames, channels, time)
            steps = 256 // maps.shape[1]
            expected = maps.reshape(len(maps), maps.shape[1], steps, -1).mean(-1).reshape(len(maps), -1)
            np.testing.assert_allclose(states[index].numpy(), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(states[4], net.embed(frames))  # the last state is the published embedding


def test_crepe_computes_only_the_states_asked_for():
    upstream = CrepeUpstream(CrepeNet("tiny"))
    seen = []
    upstream.visit_states(sine_batch(1, 0.5), lambda i, h: seen.append(i) or False, needed=[1, 3])
    assert seen == [1, 3]
    assert upstream.hidden_states(sine_batch(1, 0.5))[-1].shape[-1] == 256 and upstream.num_states == 5


@pytest.mark.parametrize("seconds", [1.5, 4.0])  # 4 s is windowed (window 2 s)
def test_embed_variants_equal_models_built_with_each_aggregation(two_members, seconds):
    config = two_members.with_options(window_seconds=2.0, window_context_seconds=0.5)
    model = FusionModel.from_config(config)
    upstreams = {name: member.upstream for name, member in model.members.items()}
    aggregations = [LayerAggregation("layers", (0,)), LayerAggregation("mean"), LayerAggregation("layers", (3, 1))]
    audio = sine_batch(2, seconds)
    variants = model.embed_variants(audio, {"wav2vec2": aggregations})
    for aggregation, got in zip(aggregations, variants):
        single = FusionModel(config.with_aggregations({"wav2vec2": aggregation}), upstreams).embed(audio)
        assert torch.equal(got.timestamp_embeddings, single.timestamp_embeddings)
        assert torch.equal(got.scene_embeddings, single.scene_embeddings)
        assert torch.equal(got.timestamps, single.timestamps)


def test_per_state_results_equal_evaluating_each_view_config(two_members, tasks_root, tmp_path, monkeypatch):
    """Every layer's scores equal an ordinary `evaluate` of the config with aggregation [i] (its own cache,
    embedded the ordinary way), and each member ran once per clip."""
    clips = []
    for upstream_class in (CrepeUpstream, TransformerUpstream):
        original = upstream_class.visit_states

        def counting(self, audio, *args, original=original, **kwargs):
            clips.append((type(self).__name__, audio.shape[0]))
            return original(self, audio, *args, **kwargs)

        monkeypatch.setattr(upstream_class, "visit_states", counting)
    only = ["tones_multiclass"]
    config, analysed = analyse_layers(two_members, tasks_root, _settings(tmp_path / "layers"), only=only)
    task_clips = sum(1 for _ in (tasks_root / "tones_multiclass-v1-full" / "16000").rglob("*.wav"))
    for name in ("CrepeUpstream", "TransformerUpstream"):
        assert sum(n for kind, n in clips if kind == name) == task_clips  # one pass per clip, all states
    assert [len(layers.views) for layers in analysed] == [4, 5]

    clips.clear()
    again = analyse_layers(two_members, tasks_root, _settings(tmp_path / "layers"), only=only)[1]
    assert clips == []  # everything reused
    assert [[r["test"] for r in per_task] for per_task in again[0].results] == [
        [r["test"] for r in per_task] for per_task in analysed[0].results
    ]

    for layers in analysed:
        for index, view in enumerate(layers.views):
            path = view.save(tmp_path / f"{view.name}.toml")
            (separate,) = evaluate([str(path)], tasks_root, _settings(tmp_path / f"plain{view.name}"), only=only)
            (from_layers,) = layers.results[index]
            assert from_layers["status"] == separate["status"] == "ok"
            assert from_layers["test"] == separate["test"], (layers.member, index)
            assert from_layers["embedding_key"] == separate["embedding_key"]


def test_state_view_is_the_member_alone_with_one_state(two_members):
    view = state_view(two_members.solo("crepe"), "crepe", 3)
    assert view.name == "pair.crepe.3"
    assert [m.name for m in view.members] == ["crepe"] and view.members[0].aggregation.layers == (3,)
    assert view.window_seconds == two_members.window_seconds and view.scene_groups == two_members.scene_groups
    assert view.feature_dim is None and view.reference is None


def _informative_states(seed: int, rows: int, loud: float = 1.0) -> tuple[list[np.ndarray], np.ndarray]:
    """Four states of 16 values; only state 2 depends on the (3-class) label, state 0 is loud noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, rows)
    centres = np.random.default_rng(99).normal(size=(3, 16)) * 1.5
    states = [rng.normal(size=(rows, 16)).astype(np.float32) for _ in range(4)]
    states[0] *= 50.0
    states[2] = ((centres[labels] + rng.normal(size=(rows, 16))) * loud).astype(np.float32)
    return states, np.eye(3, dtype=np.float32)[labels]


@pytest.mark.parametrize("loud", [1.0, 100.0])
def test_learned_weights_find_the_informative_state_whatever_its_scale(loud):
    train, y_train = _informative_states(0, 600, loud)
    valid, y_valid = _informative_states(1, 200, loud)
    weights = learn_layer_weights([StateRows(train, y_train, valid, y_valid, "multiclass")])
    assert learn_layer_weights([StateRows(train, y_train, valid, y_valid, "multiclass")]) == weights  # deterministic
    assert len(weights) == 4 and abs(sum(weights) - 1) < 1e-6
    # on unit-RMS states the informative one dominates; the raw weights undo each state's scale
    rms = np.array([np.sqrt((s.std(axis=0) ** 2).mean()) for s in train])
    unit = np.array(weights) * rms
    assert int(np.argmax(unit)) == 2 and unit[2] / unit.sum() > 0.5


def test_best_state_uses_validation_scores_in_the_monitored_direction():
    def result(value, monitor="score", higher=True):
        return {"status": "ok", "validation_score": value, "monitor": monitor, "higher_is_better": higher}

    scores = [
        [result(0.5), result(0.9, "loss")],
        [result(0.8), result(0.2, "loss")],
        [result(0.7), result(0.5, "loss")],
    ]
    assert best_state(scores) == 1  # best on both tasks (a loss is better when lower)
    assert best_state([[{"status": "failed"}], [{"status": "failed"}]]) is None


def test_config_save_round_trips_and_refuses_a_null_toml_cannot_hold(tmp_path):
    config = FusionConfig(
        "mine",
        (MemberConfig("c", "crepe", "tiny", LayerAggregation("weights", weights=(0.1, 0.2, 0.3, 0.2, 0.2))),),
    )
    for suffix in (".toml", ".json"):
        assert FusionConfig.load(config.save(tmp_path / f"mine{suffix}")) == config
    unwindowed = config.with_options(window_seconds=None)
    assert FusionConfig.load(unwindowed.save(tmp_path / "plain.json")) == unwindowed
    with pytest.raises(ConfigError, match="json"):
        unwindowed.save(tmp_path / "plain.toml")


def test_heatmap_renders_failed_and_missing_cells(tmp_path):
    ok = {"status": "ok", "metric": "top1_acc", "higher_is_better": True}
    results = [
        {**ok, "model": "state 0", "task": "a", "test": {"top1_acc": {"mean": 0.5}}},
        {**ok, "model": "state 1", "task": "a", "test": {"top1_acc": {"mean": 0.7}}},
        {"model": "state 1", "task": "b", "status": "failed", "error": "x"},
    ]
    path = layer_heatmap(results, tmp_path / "map.png", "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_layers_command_writes_table_heatmap_and_a_config_that_embeds(tasks_root, tmp_path, capsys):
    config = tmp_path / "crepe_tiny.toml"
    config.write_text('name = "crepe_tiny"\n[[members]]\nname = "crepe"\nfamily = "crepe"\ncheckpoint = "tiny"\n')
    results = tmp_path / "results"
    for choose, out in (("learned", "learned.toml"), ("best", "best.json")):
        code = main(
            ["layers", "-m", str(config), "--tasks", str(tasks_root), "--results", str(results), "--max-epochs", "20"]
            + ["--write-config", str(tmp_path / out), "--choose", choose, "-q"]
        )
        assert code == 0
    table = json.loads((results / "layers" / "crepe_tiny-layers-linear.json").read_text())
    (member,) = table["members"]
    assert member["states"] == 5 and set(member["tasks"]) == {"tones_multiclass-v1-full", "tone_events-v1-full"}
    assert all(len(task["test"]) == 5 and None not in task["test"] for task in member["tasks"].values())
    assert (results / "layers" / "crepe_tiny-crepe-layers-linear.png").is_file()
    assert "| State |" in (results / "layers" / "crepe_tiny-layers-linear.md").read_text()

    learned = FusionConfig.load(tmp_path / "learned.toml")
    aggregation = learned.members[0].aggregation
    assert aggregation.mode == "weights" and len(aggregation.weights) == 5 and abs(sum(aggregation.weights) - 1) < 1e-6
    best = FusionConfig.load(tmp_path / "best.json").members[0].aggregation
    assert best.mode == "layers" and best.layers == (member["best_state"],)
    embedded = FusionModel.from_config(learned).scene_embeddings(sine_batch(2, 1.0))
    assert embedded.shape == (2, 256) and torch.isfinite(embedded).all()
    capsys.readouterr()

    common = ["layers", "-m", str(config), "--tasks", str(tasks_root), "--results", str(results), "-q"]
    assert main([*common, "--members", "nope"]) == 2
    assert "not a member" in capsys.readouterr().err
    assert main([*common, "--write-config", str(tmp_path / "x.txt")]) == 2
    assert "expected a .toml or .json" in capsys.readouterr().err


def test_only_the_chosen_members_are_loaded(two_members, tasks_root, tmp_path):
    """--members crepe needs CREPE's weights only: the other member's checkpoint is never read."""
    missing = replace(two_members.members[0], checkpoint=str(tmp_path / "not-there"))
    config = two_members.with_options(members=(missing, two_members.members[1]))
    _, analysed = analyse_layers(
        config, tasks_root, _settings(tmp_path, probe="knn"), members=["crepe"], only=["tones_multiclass"]
    )
    assert [layers.member for layers in analysed] == ["crepe"]
    assert all(r["status"] == "ok" for per_task in analysed[0].results for r in per_task)
