"""Paper-style evaluation report: table formatting and ranking, loading, chart, round trip."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from hearfuse.errors import UsageError
from hearfuse.evaluation import predictions
from hearfuse.evaluation.charts import bar_chart
from hearfuse.evaluation.formatting import format_score
from hearfuse.evaluation.predictions import FoldPredictions, Predictions
from hearfuse.evaluation.report import (
    _describe_protocol,
    failures,
    markdown_table,
    secondary_table,
    tasks_table,
    write_report,
)
from hearfuse.evaluation.results import load_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def ok(model, task, mean, *, metric="acc", folds=None, std=0.0, higher=True, extra=None):
    folds = [mean] if folds is None else folds
    test = {metric: {"mean": mean, "std": std, "folds": folds}}
    test.update(extra or {})
    return {"model": model, "task": task, "status": "ok", "metric": metric, "higher_is_better": higher, "test": test}


def failed(model, task, error="CUDA out of memory", metric="acc"):
    return {
        "model": model,
        "task": task,
        "status": "failed",
        "error": error,
        "metric": metric,
        "higher_is_better": True,
    }


def parse(table: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header cells and {model: cells} of a markdown table."""
    lines = [line for line in table.strip().splitlines()]

    def split(line):
        return [c.strip() for c in line.strip().strip("|").split(" | ")]

    header = split(lines[0])
    rows = {cells[0]: cells[1:] for cells in map(split, lines[2:])}
    return header[1:], rows


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def write_results(root: Path, records) -> None:
    for record in records:
        path = root / record["model"] / f"{record['task']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))


# ---------------------------------------------------------------- formatting


def test_scores_are_x100_with_std_only_for_several_folds():
    assert format_score(0.871, 0.012, "pitch_acc") == "87.1 ± 1.2"
    assert format_score(0.871, None, "pitch_acc") == "87.1"
    assert format_score(0.1234, 0.0, "error_rate") == "12.3 ± 0.0"  # error rates are x100 too
    assert format_score(2.3456, 0.0123, "d_prime") == "2.35 ± 0.01"  # d_prime as is, 2 decimals
    assert format_score(-0.0001, None, "d_prime") == "0.00"  # no "-0.00"

    table = markdown_table(
        [
            ok("a", "t", 0.871, std=0.012, folds=[0.86, 0.88]),
            ok("b", "t", 0.5, std=0.3, folds=[0.5]),  # one fold: no std even if one is recorded
            ok("c", "u", 2.3456, metric="d_prime", std=0.05, folds=[2.3, 2.4]),
        ]
    )
    header, rows = parse(table)
    assert header == ["t (acc ↑)", "u (d_prime ↑)"]
    assert rows["a"][0] == "**87.1 ± 1.2**"
    assert rows["b"][0] == "<u>50.0</u>"
    assert rows["c"][1] == "2.35 ± 0.05"  # alone in its column: not ranked
    assert rows["a"][1] == rows["b"][1] == rows["c"][0] == "–"


def test_bold_and_underline_higher_is_better_with_ties():
    results = [
        ok("m1", "t", 0.90),
        ok("m2", "t", 0.95),
        ok("m3", "t", 0.95),  # tie for best: both bold
        ok("m4", "t", 0.80),  # next distinct value: underlined (dense ranks, as in the paper)
        ok("m5", "t", 0.10),
    ]
    _, rows = parse(markdown_table(results))
    assert rows["m2"][0] == rows["m3"][0] == "**95.0**"
    assert rows["m1"][0] == "<u>90.0</u>"
    assert rows["m4"][0] == "80.0"
    assert rows["m5"][0] == "10.0"


def test_bold_and_underline_lower_is_better_with_tie_for_second():
    results = [
        ok("m1", "t", 0.30, metric="error_rate", higher=False),
        ok("m2", "t", 0.10, metric="error_rate", higher=False),
        ok("m3", "t", 0.20, metric="error_rate", higher=False),
        ok("m4", "t", 0.2001, metric="error_rate", higher=False),  # same displayed value as m3: tie
    ]
    header, rows = parse(markdown_table(results))
    assert header == ["t (error_rate ↓)"]
    assert rows["m2"][0] == "**10.0**"
    assert rows["m3"][0] == rows["m4"][0] == "<u>20.0</u>"
    assert rows["m1"][0] == "30.0"


def test_direction_inferred_from_metric_name_when_not_recorded():
    a, b = ok("a", "t", 0.1, metric="error_rate"), ok("b", "t", 0.2, metric="error_rate")
    del a["higher_is_better"], b["higher_is_better"]
    header, rows = parse(markdown_table([a, b]))
    assert header == ["t (error_rate ↓)"] and rows["a"][0] == "**10.0**" and rows["b"][0] == "<u>20.0</u>"


def test_failed_and_missing_cells_and_orders():
    results = [
        ok("zeta", "task_b", 0.7),
        failed("zeta", "task_a", error="boom\nTraceback: line 3"),
        ok("alpha", "task_a", 0.6),
        ok("alpha", "task_b", 0.8),
        ok("mid", "task_b", 0.75),
    ]
    results.append(failed("mid", "task_c", metric="f1"))  # a column only failed runs: their metric names it
    header, rows = parse(markdown_table(results))
    assert header == ["task_a (acc ↑)", "task_b (acc ↑)", "task_c (f1 ↑)"]  # tasks sorted by name
    assert list(rows) == ["zeta", "alpha", "mid"]  # models in first-seen order
    assert rows["zeta"] == ["failed", "70.0", "–"]
    assert rows["mid"] == ["–", "<u>75.0</u>", "failed"]
    assert rows["alpha"] == ["60.0", "**80.0**", "–"]  # alone among scores in task_a: no mark
    assert failures(results) == [("zeta", "task_a", "boom\nTraceback: line 3"), ("mid", "task_c", "CUDA out of memory")]


def test_runs_under_another_downstream_protocol_are_marked_and_listed(tmp_path):
    from hearfuse.evaluation.protocol import Protocol

    full = Protocol().to_dict()
    short = Protocol(grid_points=1, max_epochs=60, shuffle_batches=True).to_dict()
    results = [
        dict(ok("a", "t1", 0.9), protocol=full),
        dict(ok("b", "t1", 0.8), protocol=full),
        dict(ok("a", "t2", 0.7), protocol=short),
        dict(ok("b", "t2", 0.6), protocol=full),
        ok("c", "t2", 0.5),  # records no protocol: not marked, counted
    ]
    _, rows = parse(markdown_table(results))
    assert rows["a"] == ["**90.0**", "**70.0** †"] and rows["b"] == ["<u>80.0</u>", "<u>60.0</u>"]
    assert rows["c"] == ["–", "50.0"]
    write_results(tmp_path, results)
    text = write_report(tmp_path)[0].read_text(encoding="utf-8")
    section = text.split("## Downstream protocol\n", 1)[1]
    assert section.startswith(
        "\nDownstream models trained with the heareval-2021.1.3 protocol (8 grid configurations, seed 42)."
    )
    assert (
        "- **a** on `t2`: the heareval-2021.1.3 protocol (1 grid configuration, at most 60 epochs, seed 42, "
        "training batches shuffled), which departs from the kit"
    ) in section
    assert "1 run(s) do not record their protocol." in section
    # one protocol everywhere: nothing marked, one sentence
    same = [dict(r, protocol=full) for r in results[:2]]
    assert "†" not in markdown_table(same)
    legacy = _describe_protocol({"grid_points": 8, "max_epochs": 500, "seed": 0})
    assert legacy.startswith("8 grid configurations, at most 500 epochs, seed 0 (recorded before")


def test_missing_metric_in_ok_result_and_pipes_are_escaped():
    results = [ok("a|b", "t", 0.5), ok("c", "t", 0.9, metric="other")]  # c lacks column metric acc
    with pytest.warns(UserWarning, match="disagree"):
        _, rows = parse(markdown_table(results))
    assert rows["a\\|b"][0] == "50.0"
    assert rows["c"][0] == "n/a"


def test_secondary_table():
    results = [
        ok("a", "t", 0.5, extra={"chroma_acc": {"mean": 0.61, "std": 0.02, "folds": [0.6, 0.62]}}),
        ok("b", "t", 0.6),
        failed("c", "t"),
    ]
    lines = secondary_table(results).strip().splitlines()
    assert lines[0] == "| Task | Metric | a | b | c |"
    assert lines[2] == "| t | chroma_acc | 61.0 ± 2.0 | n/a | failed |"
    assert secondary_table([ok("a", "t", 0.5)]) == ""


# ---------------------------------------------------------------- loading


def test_load_results_skips_non_json_and_sorts(tmp_path):
    write_results(tmp_path, [ok("m2", "t1", 0.5), ok("m1", "t2", 0.5), ok("m1", "t1", 0.5)])
    (tmp_path / "m1" / "notes.txt").write_text("not json")
    (tmp_path / "m1" / ".t3.json.tmp").write_text("{")
    (tmp_path / "m1" / ".partial.json").write_text("{")  # hidden temporary of a writer
    (tmp_path / "README.md").write_text("hi")
    (tmp_path / "layers").mkdir()  # `hearfuse layers --results` beside evaluate's: its table is no record
    (tmp_path / "layers" / "crepe-layers-linear.json").write_text('{"model": "crepe", "members": []}')
    records = load_results(tmp_path)
    assert [(r["model"], r["task"]) for r in records] == [("m1", "t1"), ("m1", "t2"), ("m2", "t1")]


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"model": "m", "task": "t", "status": "ok",', "malformed"),
        ('["a list"]', "JSON object"),
        ('{"model": "m", "status": "ok"}', "task"),
        ('{"model": "m", "task": "t"}', "status"),
        ('{"model": "m", "task": "t", "status": "weird"}', "status"),
        ('{"model": "m", "task": "t", "status": "ok", "metric": "acc"}', "test"),
    ],
)
def test_load_results_rejects_bad_files_naming_them(tmp_path, content, match):
    write_results(tmp_path, [ok("m", "good", 0.5)])
    bad = tmp_path / "m" / "bad_task.json"
    bad.write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        load_results(tmp_path)
    assert str(bad) in str(info.value)


def test_load_results_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "nope")


# ---------------------------------------------------------------- chart and report


def test_bar_chart_single_bar_is_a_valid_png(tmp_path):
    path = bar_chart([ok("m", "t", 0.87, std=0.01, folds=[0.86, 0.88])], tmp_path / "sub" / "one.png")
    width, height = png_size(path)
    assert 300 <= width <= 4000 and 300 <= height <= 2000


def test_bar_chart_many_models_and_tasks(tmp_path):
    results = []
    for i in range(12):
        for j in range(10):
            if (i, j) == (3, 4):
                continue  # missing
            if (i, j) == (5, 2):
                results.append(failed(f"model_{i:02d}", f"task_{j:02d}-with-a-long-name-full"))
                continue
            metric = "d_prime" if j == 9 else "acc"
            results.append(
                ok(
                    f"model_{i:02d}",
                    f"task_{j:02d}-with-a-long-name-full",
                    0.3 + 0.05 * i + 0.01 * j,
                    metric=metric,
                    std=0.02,
                    folds=[0.1, 0.2],
                )
            )
    path = bar_chart(results, tmp_path / "many.png")
    width, height = png_size(path)
    assert width > height and 1000 <= width <= 4000 and 300 <= height <= 2000

    from matplotlib.image import imread

    image = imread(path)
    assert image.shape[:2] == (height, width)
    assert image.std() > 0.05  # not a blank canvas


def test_write_report_round_trip(tmp_path):
    results_dir = tmp_path / "results"
    write_results(
        results_dir,
        [
            ok(
                "fusion_cat_xwc",
                "gm_pitch-v1-full",
                0.871,
                metric="pitch_acc",
                std=0.012,
                folds=[0.86, 0.88],
                extra={"chroma_acc": {"mean": 0.9, "std": 0.0, "folds": [0.9, 0.9]}},
            ),
            ok(
                "hubert_xlarge",
                "gm_pitch-v1-full",
                0.429,
                metric="pitch_acc",
                std=0.02,
                folds=[0.41, 0.45],
                extra={"chroma_acc": {"mean": 0.5, "std": 0.0, "folds": [0.5, 0.5]}},
            ),
            ok("crepe_full", "gm_pitch-v1-full", 0.900, metric="pitch_acc", std=0.01, folds=[0.89, 0.91]),
            ok(
                "fusion_cat_xwc",
                "libricount-v1-full",
                0.303,
                metric="error_rate",
                higher=False,
                folds=[0.3, 0.306],
                std=0.004,
            ),
            failed("hubert_xlarge", "libricount-v1-full", error="RuntimeError: out of memory | killed"),
        ],
    )
    md_path, png_path = write_report(results_dir)
    assert md_path == results_dir / "report.md" and png_path == results_dir / "report.png"
    text = md_path.read_text(encoding="utf-8")
    assert text.startswith("# Evaluation report")
    assert "Generated 20" in text
    assert "| Model | gm_pitch-v1-full (pitch_acc ↑) | libricount-v1-full (error_rate ↓) |" in text
    assert "| crepe_full | **90.0 ± 1.0** | – |" in text
    assert "| fusion_cat_xwc | <u>87.1 ± 1.2</u> | 30.3 ± 0.4 |" in text
    assert "| hubert_xlarge | 42.9 ± 2.0 | failed |" in text
    assert "**hubert_xlarge** on `libricount-v1-full`: RuntimeError: out of memory \\| killed" in text
    assert "| gm_pitch-v1-full | chroma_acc | n/a | 90.0 ± 0.0 | 50.0 ± 0.0 |" in text  # crepe lacks it
    assert "![Primary metric per task](report.png)" in text
    assert "## Tasks" in text and "| gm_pitch-v1-full | elsewhere | – |" in text
    assert png_size(png_path)[0] > 300

    # the report files do not disturb a second run, and out_dir is honoured
    md2, png2 = write_report(results_dir, tmp_path / "out" / "nested")
    assert md2.parent == tmp_path / "out" / "nested" and md2.exists() and png2.exists()
    assert md2.read_text(encoding="utf-8").split("\n", 3)[3] == text.split("\n", 3)[3]  # same but the date


def test_the_tasks_section_says_each_tasks_suite_and_sources():
    def source(package, version, licence):
        return {"id": f"{package}/x", "package": package, "version": version, "licence": licence, "path": "/usr"}

    recorded = {
        "task_suite": "recorded",
        "task_sources": [
            source("ktuberling-data", "4:22.12.3-1", "GPL-2+"),
            source("tuxpaint-stamps-default", "2022.06.04-1", "GPL-2"),
            source("ktuberling-data", "4:22.12.3-1", "GPL-2+"),
        ],
    }
    results = [
        {**ok("crepe", "spoken_language_recorded-v1-ci", 0.2), **recorded},
        {**ok("crepe", "gm_pitch-v1-ci", 0.9), "task_suite": "synthetic", "task_sources": []},
        ok("crepe", "vox_lingua_top10-hear2021-full", 0.3),  # no suite recorded
        {**ok("whisper", "spoken_language_recorded-v1-ci", 0.5), **recorded},
    ]
    header, rows = parse(tasks_table(results))
    assert header == ["Suite", "Sources"]
    assert rows["gm_pitch-v1-ci"] == ["synthetic", "–"]
    assert rows["vox_lingua_top10-hear2021-full"] == ["elsewhere", "–"]
    assert rows["spoken_language_recorded-v1-ci"] == [
        "recorded",
        "ktuberling-data 4:22.12.3-1 (GPL-2+; 2 sources); tuxpaint-stamps-default 2022.06.04-1 (GPL-2; 1 source)",
    ]


def test_write_report_on_empty_dir(tmp_path):
    with pytest.raises(ValueError, match="no result files"):
        write_report(tmp_path)


# ---------------------------------------------------------------- how sure


def stored_run(root: Path, model: str, task: str, right: list[np.ndarray], metric: str = "top1_acc") -> None:
    """A result and its test predictions: fold i's clips right where ``right[i]`` says, of 3 classes."""
    folds = []
    for index, correct in enumerate(right):
        targets = np.eye(3)[np.arange(len(correct)) % 3]
        probabilities = np.where(correct[:, None], targets, np.roll(targets, 1, axis=1)).astype(np.float32)
        files = tuple(f"clip{i:03d}.wav" for i in range(len(correct)))
        folds.append(FoldPredictions(f"fold{index:02d}", files, probabilities, targets))
    tested = Predictions("scene", ("a", "b", "c"), tuple(folds))
    scores = tested.score(metric)
    record = ok(model, task, float(np.mean(scores)), metric=metric, folds=scores)
    path = root / model / f"{task}.json"
    record[predictions.KEY] = predictions.write(path, tested)
    path.write_text(json.dumps(record))


def test_the_report_gives_intervals_and_marks_significant_differences(tmp_path):
    rng = np.random.default_rng(0)
    good = [rng.random(60) < 0.9]
    stored_run(tmp_path, "good", "words-v1", good)
    stored_run(tmp_path, "twin", "words-v1", good)  # the same predictions: differs by exactly 0
    stored_run(tmp_path, "poor", "words-v1", [rng.random(60) < 0.4])
    kfold = [rng.random(30) < 0.8, rng.random(30) < 0.7, rng.random(30) < 0.9]
    stored_run(tmp_path, "good", "instruments-v1", kfold)
    poor_kfold = [right & (rng.random(30) < 0.5) for right in kfold]
    stored_run(tmp_path, "poor", "instruments-v1", poor_kfold)
    write_results(tmp_path, [ok("old", "words-v1", 0.5, metric="top1_acc")])  # before predictions were kept

    text = write_report(tmp_path)[0].read_text(encoding="utf-8")
    section = text[text.index("### How sure") : text.index("## Failed runs")]
    assert "1000 resamples (seed 0)" in section and "2.5th to the 97.5th percentile" in section
    scores, differences = (parse(table) for table in _tables(section)[:2])
    assert scores[0] == ["instruments-v1 (top1_acc ↑)", "words-v1 (top1_acc ↑)"]
    good_words = scores[1]["good"][1]
    assert good_words.startswith(f"{np.mean(good[0]) * 100:.1f} [") and scores[1]["twin"][1] == good_words
    assert scores[1]["old"] == ["–", "n/a"]
    assert differences[1]["good"][1] == "best" and differences[1]["twin"][1] == "+0.0 [+0.0, +0.0]"
    assert differences[1]["poor"][0].startswith("**-") and differences[1]["poor"][1].startswith("**-")
    assert differences[1]["old"][1] == "n/a"
    per_fold = parse(_tables(section)[2])
    assert per_fold[0] == ["fold 1", "fold 2", "fold 3"] and len(per_fold[1]["poor"]) == 3
    assert "`instruments-v1`, per fold: difference to good" in section
    fold_one = per_fold[1]["poor"][0]  # fold 1's own difference, then its interval
    assert fold_one.startswith(f"**{(np.mean(poor_kfold[0]) - np.mean(kfold[0])) * 100:+.1f} [")
    assert section.count("Run `hearfuse evaluate` again") == 1
    assert "No interval for 1 run(s) (`n/a`): its test predictions are not stored" in section

    assert "### How sure" not in write_report(tmp_path, resamples=0)[0].read_text(encoding="utf-8")

    text = write_report(tmp_path, baseline="poor")[0].read_text(encoding="utf-8")
    section = text[text.index("### How sure") : text.index("## Tasks")]
    assert "Difference to the baseline poor (model − baseline" in section
    tables = _tables(section)  # scores, to best, best per fold, to the baseline, baseline per fold
    to_baseline = parse(tables[3])[1]
    assert to_baseline["poor"] == ["baseline", "baseline"] and to_baseline["twin"] == ["–", to_baseline["good"][1]]
    assert to_baseline["good"][1].startswith("**+") and "`instruments-v1`, per fold: difference to poor" in section
    with pytest.raises(UsageError, match="baseline 'nobody' is not a model of"):
        write_report(tmp_path, baseline="nobody")


def test_the_spread_across_training_seeds_is_shown_where_runs_recorded_it(tmp_path):
    seeded = ok("m", "words-v1", 0.80, metric="top1_acc")
    seeded["training_seeds"] = {"seeds": [42, 43, 44], "test": {"top1_acc": [0.80, 0.70, 0.75]}}
    write_results(tmp_path, [seeded, ok("m", "tones-v1", 0.5, metric="top1_acc")])
    section = write_report(tmp_path, resamples=0)[0].read_text(encoding="utf-8").split("### How sure")[1]
    header, rows = parse(_tables(section)[0])
    assert header == ["tones-v1 (top1_acc ↑)", "words-v1 (top1_acc ↑)"]
    assert rows["m"] == ["–", "75.0 ± 5.0 [70.0, 80.0] (n=3)"]


def _tables(markdown: str) -> list[str]:
    """The markdown tables of a text, in order."""
    blocks, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append("\n".join(current))
            current = []
    return blocks
