"""``hearfuse plan``: candidates fused from cached member states, scored on validation, resumable."""

from __future__ import annotations

import itertools
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from hearfuse.audio import load_audio
from hearfuse.cli import main
from hearfuse.config import FusionConfig
from hearfuse.evaluation import plan as plan_module
from hearfuse.evaluation.charts import _pareto_front
from hearfuse.evaluation.evaluate import EvaluationSettings, evaluate
from hearfuse.evaluation.plan import COMBINATIONS, Plan, for_task, resolve_members
from hearfuse.evaluation.protocol import Protocol
from hearfuse.fusion.combination import equal_blocks
from hearfuse.model import FusionModel, Member
from hearfuse.upstream.crepe_net import CrepeUpstream
from hearfuse.upstream.transformer import TransformerUpstream

from . import processes, taskgen
from .conftest import sine_batch


@pytest.fixture(scope="module")
def tasks_root(tmp_path_factory) -> Path:
    """A scene task of 0.5 s clips and an event task of 3 s clips (longer than the members' 2 s windows)."""
    root = tmp_path_factory.mktemp("plan_tasks")
    taskgen.scene_task(root, clips=4)
    taskgen.event_task(root, clips=2)
    return root


@pytest.fixture(scope="module")
def pair(tiny_fusion_config, tmp_path_factory) -> Path:
    """A tiny transformer (4 states, 32 wide) and CREPE tiny (5 states, 256 wide; its scene frames every
    250 ms, its timestamp frames every 50 ms), in 2 s windows: as a config file."""
    members = tuple(m for m in tiny_fusion_config.members if m.family in ("wav2vec2", "crepe"))
    config = tiny_fusion_config.with_options(
        name="pair", members=members, reference=None, window_seconds=2.0, window_context_seconds=0.5
    )
    return config.save(tmp_path_factory.mktemp("plan_configs") / "pair.toml")


@pytest.fixture(scope="module")
def transformers(tiny_checkpoints, tmp_path_factory) -> Path:
    """Two tiny transformers (32 and 40 wide): cheap to probe."""
    folder = tmp_path_factory.mktemp("plan_transformers")
    lines = ['name = "two"']
    for family in ("wav2vec2", "hubert"):
        lines += [
            "[[members]]",
            f'name = "{family}"',
            f'family = "{family}"',
            f'checkpoint = "{tiny_checkpoints[family]}"',
        ]
    path = folder / "two.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _settings(root: Path) -> EvaluationSettings:
    return EvaluationSettings(root / "cache", root / "plan", protocol=Protocol(probe="linear"), progress=False)


def _count_passes(monkeypatch) -> list[tuple[str, int]]:
    """(member, clips) of every run of a member from now on (however many windows a clip takes)."""
    runs: list[tuple[str, int]] = []
    for method in ("features", "pieces"):
        original = getattr(Member, method)

        def counting(self, audio, *args, original=original, **kwargs):
            runs.append((self.config.name, audio.shape[0]))
            return original(self, audio, *args, **kwargs)

        monkeypatch.setattr(Member, method, counting)
    return runs


def _replay_repeated_runs(monkeypatch) -> None:
    """From now on the networks compute each distinct input once and replay its states after: the models
    built below take FusionModel's whole path (windows, batches, alignment, pooling) without running the
    same network on the same audio again."""
    memo: dict = {}
    for upstream_class in (CrepeUpstream, TransformerUpstream):
        original = upstream_class.visit_states

        def replay(self, audio, visit, *, scene=False, needed=None, lengths=None, original=original):
            key = (id(self), scene, audio.numpy().tobytes(), None if lengths is None else tuple(lengths.tolist()))
            if key not in memo:
                states: list = []
                options = {} if lengths is None else {"lengths": lengths}
                original(
                    self, audio, lambda index, hidden: states.append((index, hidden)) or False, scene=scene, **options
                )
                memo[key] = states
            for index, hidden in memo[key]:
                if (needed is None or index in needed) and visit(index, hidden):
                    return

        monkeypatch.setattr(upstream_class, "visit_states", replay)


def _clips(root: Path) -> int:
    return sum(1 for _ in root.rglob("*.wav"))


def test_every_candidate_kind_fused_from_cached_states_equals_the_model_of_its_config(
    pair, tasks_root, tmp_path, monkeypatch
):
    """State choices x cat/avg/cat with equal weights x reference x pooling, and the paper's recipe (stretched,
    interleaved): each candidate's embeddings, fused from the cache, are what FusionModel computes for its
    config; and every member ran once per clip to fill the cache, with all its states."""
    runs = _count_passes(monkeypatch)
    plan = Plan(resolve_members([str(pair)]), tasks_root, _settings(tmp_path))
    plan.embed()
    for name in ("wav2vec2", "crepe"):
        assert sum(n for member, n in runs if member == name) == _clips(tasks_root), name
    assert plan.num_states == {"wav2vec2": 4, "crepe": 5} and plan.widths == {"wav2vec2": 32, "crepe": 256}
    plan.best_states = {"wav2vec2": 1, "crepe": 2}
    configs = [
        plan.fusion({"crepe": 3}),
        plan.fusion({"wav2vec2": "mean"}),
        plan.fusion({"crepe": "best"}, scene_groups=5),
    ]
    pairs = itertools.product(COMBINATIONS, ("wav2vec2", "crepe"))
    for index, (combine, reference) in enumerate(pairs):  # every combination on each reference
        choices = {"wav2vec2": "last", "crepe": "mean"} if index % 2 else {"wav2vec2": "best", "crepe": "best"}
        for groups in (1, 5):
            configs.append(plan.fusion(choices, combine=combine, reference=reference, scene_groups=groups))
    configs.append(plan.paper_recipe())
    assert len({c.name for c in configs}) == len(configs) == 16
    assert {(c.combine, c.member_weighting) for c in configs} == {("cat", "none"), ("avg", "none"), ("cat", "equal")}
    _replay_repeated_runs(monkeypatch)
    model = FusionModel.from_config(FusionConfig.load(pair))
    upstreams = {name: member.upstream for name, member in model.members.items()}
    for task in plan.tasks:
        files = task.kit_file_order()["test"]
        clips = [torch.from_numpy(load_audio(task.audio_dir("test") / name, 16000)) for name in files]
        event = task.embedding_type == "event"
        for config in {c.name: c for c in map(lambda c: for_task(c, task), configs)}.values():
            fused = plan.data(config, task, ["test"])["test"]
            expected = FusionModel(config, upstreams).embed_each(clips, timestamp=event, scene=not event)
            assert fused.files == files
            for start, count, embeddings in zip(fused.starts, fused.counts, expected):
                rows = fused.x[start : start + count]
                if event:
                    np.testing.assert_allclose(rows, embeddings.timestamp_embeddings, rtol=1e-4, atol=2e-5)
                    np.testing.assert_array_equal(fused.timestamps[start : start + count], embeddings.timestamps)
                else:
                    np.testing.assert_allclose(rows[0], embeddings.scene_embeddings, rtol=1e-4, atol=2e-5)


def test_the_space_counts_what_the_exhaustive_search_scores(pair, tasks_root, tmp_path):
    plan = Plan(resolve_members([str(pair)]), tasks_root, _settings(tmp_path), search="exhaustive")
    plan.num_states, plan.best_states = {"wav2vec2": 4, "crepe": 5}, {"wav2vec2": 1, "crepe": 4}
    # crepe's best state is its last: two choices; wav2vec2 three. Singles: 5 x 2 poolings; the pair:
    # 6 choices x 3 combinations x 2 references x 2 poolings.
    assert plan.space_size() == 5 * 2 + 6 * 3 * 2 * 2 == len({c.name for c in plan.stage_fusions()})
    plan.search = "staged"
    assert len({c.name for c in plan.stage_fusions()}) == 3 * 3  # one rule for both members x combinations


@pytest.fixture(scope="module")
def planned(transformers, tasks_root, tmp_path_factory) -> tuple[list[str], Path, dict]:
    """A plan of the two tiny transformers on both tasks: its arguments, its folder and its table."""
    out = tmp_path_factory.mktemp("planned")
    args = ["plan", "--member", str(transformers), "--tasks", str(tasks_root), "-q"]
    args += ["--results", str(out), "--cache", str(out / "cache")]
    assert main(args) == 0
    return args, out / "plan", json.loads((out / "plan" / "plan-linear.json").read_text())


def test_a_plan_chooses_on_validation_and_tests_only_what_it_reports(planned):
    _, folder, table = planned
    tasks = [t["task"] for t in table["tasks"]]
    choices = [3 - (m["best_state"] == m["states"] - 1) for m in table["members"]]  # last, mean, best
    assert table["space"]["candidates"] == 2 * sum(choices) + choices[0] * choices[1] * 3 * 2 * 2
    assert table["scored"] == len(table["candidates"]) == sum(table["stages"].values())
    assert set(table["choice"]["per_task"]) == set(tasks) and table["choice"]["all_tasks"]
    assert (folder / "pareto-linear.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (folder / "plan-linear.md").read_text()
    assert "## Test scores of what is reported" in markdown and "| Candidate | stage |" in markdown
    reported = {(r["row"], r["task"]) for r in table["reported"]}
    for task in tasks:
        assert {("chosen for the task", task), ("chosen for all tasks", task), ("the paper's recipe", task)} <= reported
    tested = {path.parent.name for path in (folder / "reported").glob("*/*.json")}
    assert tested == {r["candidate"] for r in table["reported"]} and len(tested) < table["scored"]
    assert all(r["status"] == "ok" and r["test"] for r in table["reported"])


def test_evaluating_an_emitted_config_gives_the_plans_validation_score(planned, tasks_root, tmp_path):
    """Each config the plan wrote, and the paper's recipe (a fusion of both members), evaluated the ordinary
    way (its own cache, embedded by FusionModel) reach the score the plan found on validation."""
    _, folder, table = planned
    tasks = [t["task"] for t in table["tasks"]]
    rows = {row["candidate"]: row for row in table["candidates"]}
    recipe = next(name for name in rows if name.endswith("-stretch-interleaved"))
    FusionConfig.from_dict(rows[recipe]["config"]).save(tmp_path / "recipe.toml")
    chosen = [
        (folder / "configs" / "all_tasks.toml", table["choice"]["all_tasks"], tasks),
        (tmp_path / "recipe.toml", recipe, tasks),
    ]
    chosen += [(folder / "configs" / f"{task}.toml", table["choice"]["per_task"][task], [task]) for task in tasks]
    for path, candidate, on in chosen:
        settings = EvaluationSettings(
            tmp_path / "cache", tmp_path / path.stem, protocol=Protocol(probe="linear"), progress=False
        )
        for result in evaluate([str(path)], tasks_root, settings, only=on):
            assert result["validation_score"] == rows[candidate]["validation"]["linear"][result["task"]]["value"], path


def test_a_rerun_runs_no_model_and_fits_no_probe(planned, monkeypatch):
    args, folder, table = planned
    runs = _count_passes(monkeypatch)
    searches = []
    original = plan_module.select_on_validation
    monkeypatch.setattr(plan_module, "select_on_validation", lambda *a: searches.append(1) or original(*a))
    assert main(args) == 0
    assert runs == [] and searches == []
    assert _without_timings(json.loads((folder / "plan-linear.json").read_text())) == _without_timings(table)


def _without_timings(table: dict) -> dict:
    return {key: value for key, value in table.items() if key not in ("timings", "members")}


def test_a_plan_killed_midway_goes_on_where_it_stopped(planned, tmp_path, monkeypatch):
    """A plan SIGKILLed while it computes its sixth validation score (its embeddings cached already); the
    rerun scores only what was left and writes what the uninterrupted run wrote."""
    args, _, whole = planned
    killed = tmp_path / "killed"
    args = [*args[: args.index("--results")], "--results", str(killed), *args[args.index("--cache") :]]
    script = textwrap.dedent(f"""
        import os, signal, sys
        from hearfuse import cli
        from hearfuse.evaluation import plan
        original, done = plan.select_on_validation, []
        def dying(*args):
            if len(done) == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            done.append(1)
            return original(*args)
        plan.select_on_validation = dying
        sys.exit(cli.main({args!r}))
    """)
    run = processes.run([sys.executable, "-c", script], timeout=600)
    assert run.returncode == -9, run.stderr
    assert len(list((killed / "plan" / "candidates").glob("*/*.json"))) == 5

    searches = []
    original = plan_module.select_on_validation
    monkeypatch.setattr(plan_module, "select_on_validation", lambda *a: searches.append(1) or original(*a))
    assert main(args) == 0
    validated = sum(len(row["validation"]["linear"]) for row in whole["candidates"])
    assert len(searches) == validated - 5 - _shared_event_scores(whole)
    assert _without_timings(json.loads((killed / "plan" / "plan-linear.json").read_text())) == _without_timings(whole)


def _shared_event_scores(table: dict) -> int:
    """Validation scores of candidates pooled in 5 groups on event tasks: their one-group twin's, not computed again."""
    events = [t["task"] for t in table["tasks"] if t["kind"] == "event"]
    twins = {row["candidate"] for row in table["candidates"]}
    return sum(
        1
        for row in table["candidates"]
        if row["candidate"].endswith("-g5") and row["candidate"][: -len("-g5")] in twins
        for task in events
    )


def test_the_papers_tables_on_the_members_given(transformers, tasks_root, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["plan", "--member", str(transformers), "--tasks", str(tasks_root), "--task", "tones_multiclass"]
    assert main([*args, "--results", str(out), "--paper", "-q"]) == 0
    printed = capsys.readouterr().out
    for number in (3, 4, 5, 6):
        assert f"Table {number}: " in printed
    assert (
        "| Fusion wav2vec2 |" in printed
        and "| avg wav2vec2+hubert |" in printed
        and "| cat wav2vec2+hubert |" in printed
    )
    table = json.loads((out / "plan" / "plan-linear.json").read_text())
    rows = {(r["table"], r["row"]): r["candidate"] for r in table["paper_tables"]}
    assert rows[3, "wav2vec2"] == rows[5, "wav2vec2"] == "wav2vec2.last"
    assert rows[4, "cat wav2vec2+hubert"] == "cat-wav2vec2.last+hubert.last-stretch"
    assert rows[6, "cat wav2vec2+hubert"] == "cat-wav2vec2.last+hubert.last-stretch-interleaved"
    assert table["scored"] == len(set(rows.values())) == 8
    assert {r["candidate"] for r in table["reported"]} == set(rows.values())  # every row tested


def test_members_are_named_once_and_known(pair, transformers, tasks_root, tmp_path, capsys):
    common = ["--tasks", str(tasks_root), "--results", str(tmp_path), "-q"]
    cases = [
        (["--member", "no_such_model"], "--member no_such_model: 'no_such_model' is neither a preset"),
        (["--member", str(pair), "--member", f"{transformers}:wav2vec2"], "a member named 'wav2vec2' also comes from"),
        (["--member", f"{pair}:hubert"], "has no member 'hubert'; its members: ['wav2vec2', 'crepe']"),
        (["--member", str(pair), "--probe", "knn"], "--probe knn: a plan scores with linear or mlp"),
        (["--member", f"{pair}:crepe", "--member", f"{transformers}:hubert"], "window long audio differently"),
    ]
    for member_args, message in cases:
        assert main(["plan", *member_args, *common]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_task_without_a_validation_split_is_refused_in_one_line(transformers, tasks_root, tmp_path, capsys):
    import shutil

    task = tmp_path / "tasks" / "tones_multiclass-v1-full"
    shutil.copytree(tasks_root / "tones_multiclass-v1-full", task)
    metadata = json.loads((task / "task_metadata.json").read_text())
    (task / "task_metadata.json").write_text(json.dumps({**metadata, "splits": ["train", "test"]}))
    assert main(["plan", "--member", str(transformers), "--tasks", str(task.parent), "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hearfuse plan: error: malformed task {task}:")  # the task's problems, one per line
    assert "split_mode trainvaltest needs splits train, valid, test" in err and "Traceback" not in err


def test_equal_member_weighting_gives_every_block_unit_norm_and_is_its_own_config(pair):
    blocks = [torch.randn(2, 7, 5) * 30 + 4, torch.randn(2, 7, 3)]
    for block, weighted in zip(blocks, equal_blocks(blocks)):
        reference = block.numpy() - block.numpy().mean(-1, keepdims=True)
        reference /= np.linalg.norm(reference, axis=-1, keepdims=True)
        np.testing.assert_allclose(weighted.numpy(), reference, rtol=1e-5, atol=1e-6)
    config = FusionConfig.load(pair)
    equal = config.with_options(member_weighting="equal")
    assert "member_weighting" not in config.to_dict() and equal.to_dict()["member_weighting"] == "equal"
    assert equal.fingerprint() != config.fingerprint()
    assert FusionConfig.load(equal.save(pair.parent / "equal.toml")) == equal
    frames = FusionModel.from_config(equal).timestamp_embeddings(sine_batch(1, 1.0))[0]
    widths = [32, 32]  # crepe interpolated to the reference's (wav2vec2's) width
    norms = torch.stack([block.norm(dim=-1) for block in frames.split(widths, dim=-1)])
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_the_pareto_front_is_what_nothing_beats():
    rng = np.random.default_rng(0)
    points = [tuple(p) for p in rng.integers(1, 8, size=(30, 2)).astype(float)]
    front = set(_pareto_front(points))
    for i, (cost, rank) in enumerate(points):
        beaten = any(c <= cost and r <= rank and (c, r) != (cost, rank) for c, r in points)
        first_of_equals = points.index((cost, rank)) == i
        assert (i in front) == (not beaten and first_of_equals), points[i]
