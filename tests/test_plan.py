"""``hearfuse plan``: candidates fused from cached member states, scored on validation, resumable."""

from __future__ import annotations

import itertools
import json
import shutil
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
from hearfuse.evaluation import predictions
from hearfuse.evaluation.charts import _pareto_front
from hearfuse.evaluation.evaluate import EvaluationSettings, evaluate
from hearfuse.evaluation.formatting import format_difference, format_interval, format_score
from hearfuse.evaluation.plan import COMBINATIONS, Plan, Space, for_task, resolve_members
from hearfuse.evaluation.protocol import Protocol
from hearfuse.evaluation.results import result_path
from hearfuse.evaluation.uncertainty import RESAMPLES, compare
from hearfuse.fusion.combination import equal_blocks
from hearfuse.model import FusionModel, Member
from hearfuse.upstream.crepe_net import CrepeUpstream
from hearfuse.upstream.transformer import TransformerUpstream

from . import processes, taskgen
from .conftest import FAMILIES, TINY, sine_batch


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
def transformers(tmp_path_factory) -> Path:
    """Two one-block transformers (2 states each; 32 and 40 wide): a plan of them is cheap to score."""
    folder = tmp_path_factory.mktemp("plan_transformers")
    lines = ['name = "two"']
    for family in ("wav2vec2", "hubert"):
        config_class, model_class, overrides = FAMILIES[family]
        torch.manual_seed(len(family))
        model_class(config_class(**{**TINY, **overrides, "num_hidden_layers": 1})).save_pretrained(folder / family)
        lines += ["[[members]]", f'name = "{family}"', f'family = "{family}"', f'checkpoint = "{folder / family}"']
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


def _count_searches(monkeypatch) -> list[str]:
    """The probe of every search on validation from now on."""
    searches: list[str] = []
    original = plan_module.select_on_validation

    def counting(task, data, settings):
        searches.append(settings.protocol.probe)
        return original(task, data, settings)

    monkeypatch.setattr(plan_module, "select_on_validation", counting)
    return searches


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
    """State choices (learned weights too) x cat/avg/cat with equal weights x reference x pooling, and the
    paper's recipe (stretched, interleaved): each candidate's embeddings, fused from the cache, are what
    FusionModel computes for its config; and every member ran once per clip to fill the cache, with all its
    states."""
    runs = _count_passes(monkeypatch)
    plan = Plan(resolve_members([str(pair)]), tasks_root, _settings(tmp_path))
    plan.embed()
    for name in ("wav2vec2", "crepe"):
        assert sum(n for member, n in runs if member == name) == _clips(tasks_root), name
    assert plan.num_states == {"wav2vec2": 4, "crepe": 5} and plan.widths == {"wav2vec2": 32, "crepe": 256}
    plan.best_states = {"wav2vec2": 1, "crepe": 2}
    plan.learned = {"wav2vec2": (0.1, 0.2, 0.3, 0.4), "crepe": (0.5, 0.0, 0.25, 0.125, 0.125)}
    configs = [
        plan.fusion({"crepe": 3}),
        plan.fusion({"wav2vec2": "mean"}),
        plan.fusion({"crepe": "best"}, scene_groups=5),
        plan.fusion({"wav2vec2": "learned"}),
        plan.fusion({"wav2vec2": "learned", "crepe": "learned"}, combine="avg", reference="crepe"),
    ]
    pairs = itertools.product(COMBINATIONS, ("wav2vec2", "crepe"))
    for index, (combine, reference) in enumerate(pairs):  # every combination on each reference
        choices = {"wav2vec2": "last", "crepe": "mean"} if index % 2 else {"wav2vec2": "best", "crepe": "best"}
        for groups in (1, 5):
            configs.append(plan.fusion(choices, combine=combine, reference=reference, scene_groups=groups))
    configs.append(plan.paper_recipe())
    assert len({c.name for c in configs}) == len(configs) == 18
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
    assert len(plan.stage_states()) == 4 + 1 + 5 + 1  # every single state and the mean: the best is among them

    plan.space = Space(states=("mean",), combinations=("avg", "cat_eq"), min_members=2)
    assert [c.name for c in plan.stage_states()] == ["wav2vec2.mean", "crepe.mean"]  # to compare with
    assert [c.name for c in plan.stage_fusions()] == ["avg-wav2vec2.mean+crepe.mean", "cat_eq-wav2vec2.mean+crepe.mean"]
    plan.search = "exhaustive"
    assert plan.space_size() == 1 * 2 * 2 * 2 == len(plan.stage_fusions())


@pytest.fixture(scope="module")
def planned(transformers, tasks_root, tmp_path_factory) -> tuple[list[str], Path, dict, int]:
    """A plan of the two tiny transformers on both tasks, SIGKILLed (a real process) while it computes its
    sixth validation score, its embeddings cached already, then run again here to the end: its arguments,
    its folder, its table and the validation scores the second run computed."""
    out = tmp_path_factory.mktemp("planned")
    args = ["plan", "--member", str(transformers), "--tasks", str(tasks_root), "-q"]
    args += ["--results", str(out), "--cache", str(out / "cache"), "--combine", "cat,avg"]
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
    killed = processes.run([sys.executable, "-c", script], timeout=3600)
    assert killed.returncode == -9, killed.stderr
    assert len(list((out / "plan" / "candidates").glob("*/*.json"))) == 5
    with pytest.MonkeyPatch.context() as monkeypatch:
        searches = _count_searches(monkeypatch)
        assert main(args) == 0
    return args, out / "plan", json.loads((out / "plan" / "plan-linear.json").read_text()), len(searches)


def test_a_plan_killed_midway_goes_on_where_it_stopped(planned):
    """The second run computed every validation score but the five the killed one stored (a candidate pooled
    in 5 groups takes its one-group twin's score on an event task, which has no scene pooling)."""
    _, _, table, searched = planned
    events = [t["task"] for t in table["tasks"] if t["kind"] == "event"]
    names = {row["candidate"] for row in table["candidates"]}
    shared = sum(1 for name in names for _ in events if name.endswith("-g5") and name.removesuffix("-g5") in names)
    validated = sum(len(row["validation"]["linear"]) for row in table["candidates"])
    assert searched == validated - shared - 5


def test_a_plan_chooses_on_validation_and_tests_only_what_it_reports(planned):
    _, folder, table, _ = planned
    tasks = [t["task"] for t in table["tasks"]]
    # one block: the best state is the embedding output (a third choice) or the last (no third choice)
    choices = [3 - (m["best_state"] == m["states"] - 1) for m in table["members"]]
    assert table["space"]["candidates"] == 2 * sum(choices) + choices[0] * choices[1] * 2 * 2 * 2
    assert table["scored"] == len(table["candidates"]) == sum(table["stages"].values())
    assert set(table["choice"]["per_task"]) == set(tasks) and table["choice"]["all_tasks"]
    assert (folder / "pareto-linear.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (folder / "plan-linear.md").read_text()
    assert "## Test scores of what is reported" in markdown and "| Candidate | stage |" in markdown
    reported = {(r["row"], r["task"]) for r in table["reported"]}
    rows = ("chosen for the task", "chosen for all tasks", "best single member", "the paper's recipe")
    rows += tuple(f"{m['member']} alone (mean of its states)" for m in table["members"])
    assert reported == {(row, task) for row in rows for task in tasks}
    tested = {path.parent.name for path in (folder / "reported").glob("*/*.json")}
    assert tested == {r["candidate"] for r in table["reported"]} and len(tested) < table["scored"]
    assert all(r["status"] == "ok" and r["test"] for r in table["reported"])
    assert {c["against"] for c in table["comparisons"]} == {"best single member", "the paper's recipe"}


def test_the_plans_intervals_are_the_paired_bootstrap_of_its_stored_test_predictions(planned):
    """Every reported score has its 95 % interval; every difference (a choice minus the best single member or
    the paper's recipe) is what the paired bootstrap of the two stored test predictions gives alone (the
    resamples depend only on the seed and the test items, so pairing two models or four draws the same)."""
    _, folder, table, _ = planned
    assert table["bootstrap"] == {"resamples": RESAMPLES, "seed": 0, "confidence": 0.95}
    for reported in table["reported"]:
        low, high = reported["interval"]
        assert low <= reported["test"][next(iter(reported["test"]))]["mean"] <= high
    assert len(table["comparisons"]) == 2 * 2 * len(table["tasks"])
    for entry in table["comparisons"]:
        stored = {
            name: predictions.load(result_path(folder / "reported", name, entry["task"], "linear"))
            for name in {entry["candidate"], entry["baseline"]}
        }
        expected = compare(stored, entry["metric"], reference=entry["baseline"]).differences[entry["candidate"]]
        assert (entry["difference"], entry["low"], entry["high"]) == (
            expected.value,
            expected.interval.low,
            expected.interval.high,
        )
        assert entry["significant"] == expected.significant == (entry["low"] > 0 or entry["high"] < 0)
        if entry["candidate"] == entry["baseline"]:
            assert entry["difference"] == entry["low"] == entry["high"] == 0
    markdown = (folder / "plan-linear.md").read_text()
    assert "chosen for the task − the paper's recipe" in markdown and "paired bootstrap" in markdown


def test_evaluating_an_emitted_config_gives_the_plans_validation_score(planned, tasks_root, tmp_path):
    """Each config the plan wrote, and the paper's recipe (a fusion of both members), evaluated the ordinary
    way (its own cache, embedded by FusionModel) reach the score the plan found on validation."""
    _, folder, table, _ = planned
    tasks = [t["task"] for t in table["tasks"]]
    rows = {row["candidate"]: row for row in table["candidates"]}
    recipe = next(name for name in rows if name.endswith("-stretch-interleaved"))
    FusionConfig.from_dict(rows[recipe]["config"]).save(tmp_path / "recipe.toml")
    chosen = [
        (folder / "configs-linear" / "all_tasks.toml", table["choice"]["all_tasks"], tasks),
        (tmp_path / "recipe.toml", recipe, tasks),
    ]
    chosen += [
        (folder / "configs-linear" / f"{task}.toml", table["choice"]["per_task"][task], [task]) for task in tasks
    ]
    settings = EvaluationSettings(tmp_path / "cache", tmp_path / "results", protocol=Protocol(probe="linear"))
    for path, candidate, on in chosen:
        for result in evaluate([str(path)], tasks_root, settings, only=on):
            assert result["validation_score"] == rows[candidate]["validation"]["linear"][result["task"]]["value"], path


def test_a_rerun_runs_no_model_and_fits_no_probe(planned, monkeypatch):
    args, folder, table, _ = planned
    runs, searches = _count_passes(monkeypatch), _count_searches(monkeypatch)
    assert main(args) == 0
    assert runs == [] and searches == []
    assert _without_timings(json.loads((folder / "plan-linear.json").read_text())) == _without_timings(table)


def test_learned_state_weights_are_fitted_once_from_the_cached_states(planned, tasks_root, monkeypatch):
    """``learned`` weights come from the states the plan cached (no model runs), are stored and reused."""
    args, folder, _, _ = planned
    settings = EvaluationSettings(Path(args[args.index("--cache") + 1]), folder, protocol=Protocol(probe="linear"))
    plan = Plan(resolve_members([args[args.index("--member") + 1]]), tasks_root, settings, space=Space(("learned",)))
    runs, fits = _count_passes(monkeypatch), []
    original = plan_module.learn_layer_weights
    monkeypatch.setattr(plan_module, "learn_layer_weights", lambda *a, **k: fits.append(1) or original(*a, **k))
    plan.embed()
    plan.learn_weights()
    first = dict(plan.learned)
    plan.learn_weights()
    assert runs == [] and len(fits) == 2 and plan.learned == first
    for name, weights in first.items():
        assert len(weights) == plan.num_states[name] and min(weights) > 0 and sum(weights) == pytest.approx(1)
        assert plan.fusion({name: "learned"}).members[0].aggregation.weights == weights
    rows = plan._state_rows("hubert", plan.tasks[0])
    assert len(rows.train) == 2 and rows.train[0].shape == (len(rows.y_train), 40)


def _without_timings(table: dict) -> dict:
    return {key: value for key, value in table.items() if key not in ("timings", "members")}


def test_the_mlp_rescores_the_best_on_validation_and_chooses(planned, monkeypatch):
    """--probe mlp: the linear scores are reused; the MLP scores the few best per task and overall, and its
    choice is tested with the MLP."""
    args, folder, _, _ = planned
    searches = _count_searches(monkeypatch)
    mlp = ["--probe", "mlp", "--grid-points", "1", "--max-epochs", "3", "--task", "tones_multiclass"]
    assert main([*args, *mlp]) == 0
    table = json.loads((folder / "plan-mlp.json").read_text())
    rescored = [row for row in table["candidates"] if "mlp" in row["validation"]]
    assert 1 <= len(rescored) <= 2 * plan_module.RESCORED and searches.count("mlp") == len(rescored)
    assert table["probe"] == "mlp" and table["choice"]["all_tasks"] in {row["candidate"] for row in rescored}
    assert all(r["status"] == "ok" for r in table["reported"])


def test_the_papers_tables_on_the_members_given(transformers, tasks_root, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["plan", "--member", str(transformers), "--tasks", str(tasks_root), "--task", "tones_multiclass"]
    assert main([*args, "--out", str(out), "--cache", str(tmp_path / "cache"), "--paper", "-q"]) == 0
    printed = capsys.readouterr().out
    for number in (3, 4, 5, 6):
        assert f"Table {number}: " in printed
    assert (
        "| Fusion wav2vec2 |" in printed
        and "| avg wav2vec2+hubert |" in printed
        and "| cat wav2vec2+hubert |" in printed
    )
    table = json.loads((out / "plan-linear.json").read_text())
    rows = {(r["table"], r["row"]): r["candidate"] for r in table["paper_tables"]}
    assert rows[3, "wav2vec2"] == rows[5, "wav2vec2"] == "wav2vec2.last"
    assert rows[4, "cat wav2vec2+hubert"] == "cat-wav2vec2.last+hubert.last-stretch"
    assert rows[6, "cat wav2vec2+hubert"] == "cat-wav2vec2.last+hubert.last-stretch-interleaved"
    assert table["scored"] == len(set(rows.values())) == 8
    assert {r["candidate"] for r in table["reported"]} == set(rows.values())  # every row tested


def test_bad_members_and_an_empty_space_are_refused_in_one_line(pair, transformers, tasks_root, tmp_path, capsys):
    common = ["--tasks", str(tasks_root), "--results", str(tmp_path), "-q"]
    cases = [
        (["--member", "no_such_model"], "--member no_such_model: 'no_such_model' is neither a preset"),
        (["--member", str(pair), "--member", f"{transformers}:wav2vec2"], "a member named 'wav2vec2' also comes from"),
        (["--member", f"{pair}:hubert"], "has no member 'hubert'; its members: ['wav2vec2', 'crepe']"),
        (["--member", str(pair), "--probe", "knn"], "--probe knn: a plan scores with linear or mlp"),
        (["--member", f"{pair}:crepe", "--member", f"{transformers}:hubert"], "window long audio differently"),
        (["--member", str(pair), "--min-members", "3"], "--min-members 3: no candidate is left, only 2 member(s)"),
        (["--member", str(pair), "--states", "last,first"], "--states last,first: expected some of last, mean, best"),
        (["--member", str(pair), "--combine", ","], "--combine : expected some of cat, avg, cat_eq"),
        (["--member", str(pair), "--paper", "--states", "mean"], "--paper scores the rows of the paper's tables"),
        (["--member", str(pair), "--resamples", "-1"], "--resamples must be 0 (no intervals) or more, got -1"),
        (["--member", str(pair), "--seeds", "3"], "--seeds applies to the mlp probe; the linear probe does not"),
    ]
    for member_args, message in cases:
        assert main(["plan", *member_args, *common]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_second_size_of_a_real_model_is_named_after_the_model():
    members = resolve_members(["crepe_tiny", "crepe_small"])
    assert [m.name for m in members] == ["crepe", "crepe_small"]
    assert [(m.config.family, m.config.checkpoint) for m in members] == [("crepe", "tiny"), ("crepe", "small")]
    assert members[1].solo.members[0].name == "crepe_small"


def test_a_task_without_a_validation_split_is_refused_in_one_line(transformers, tasks_root, tmp_path, capsys):
    task = tmp_path / "tasks" / "tones_multiclass-v1-full"
    shutil.copytree(tasks_root / "tones_multiclass-v1-full", task)
    metadata = json.loads((task / "task_metadata.json").read_text())
    (task / "task_metadata.json").write_text(json.dumps({**metadata, "splits": ["train", "test"]}))
    assert main(["plan", "--member", str(transformers), "--tasks", str(task.parent), "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hearfuse plan: error: malformed task {task}:") and len(err.strip().splitlines()) == 1
    assert "split_mode trainvaltest needs splits train, valid, test" in err


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
    # the pair is interleaved (fusion_cat_xwc's recipe): wav2vec2's features at even positions, CREPE's
    # (interpolated to wav2vec2's 32) at odd ones
    assert equal.interleave and frames.shape[-1] == 64
    norms = torch.stack([frames[..., 0::2].norm(dim=-1), frames[..., 1::2].norm(dim=-1)])
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_the_pareto_front_is_what_nothing_beats():
    rng = np.random.default_rng(0)
    points = [tuple(p) for p in rng.integers(1, 8, size=(30, 2)).astype(float)]
    front = set(_pareto_front(points))
    for i, (cost, rank) in enumerate(points):
        beaten = any(c <= cost and r <= rank and (c, r) != (cost, rank) for c, r in points)
        first_of_equals = points.index((cost, rank)) == i
        assert (i in front) == (not beaten and first_of_equals), points[i]


def test_the_benchmarks_plan_table_shows_every_tasks_reported_scores_and_differences(planned):
    from benchmarks.plan_table import table

    _, _, plan_json, _ = planned
    text = table([plan_json])
    lines = text.splitlines()
    assert len(lines) == 2 + len(plan_json["tasks"])
    for task in plan_json["tasks"]:
        (line,) = [line for line in lines if line.startswith(f"| {task['task']} (")]
        for reported in plan_json["reported"]:
            if reported["task"] == task["task"] and reported["row"] != "chosen for all tasks":
                low, high = reported["interval"]
                shown = f"{format_score(reported['test'][task['metric']]['mean'], None, task['metric'])} "
                assert shown + format_interval(low, high, task["metric"]) in line
        for entry in plan_json["comparisons"]:
            if entry["task"] == task["task"] and entry["row"] == "chosen for the task":
                assert format_difference(entry["difference"], entry["metric"]) in line
