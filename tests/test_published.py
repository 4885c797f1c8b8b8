"""The published HEAR 2021 results and the paper's tables: the package data against its sources, places
and medians, the report's comparison beside the user's scores, and `hearfuse reference`."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from hearfuse import hear2021, presets
from hearfuse.evaluation import published as beside
from hearfuse.evaluation.report import write_report

from . import processes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA = Path(hear2021.__file__).parent
SHARED = Path(__file__).resolve().parents[2] / "shared" / "hear2021"


@pytest.fixture(scope="module")
def data():
    return hear2021.load()


def _page_rows() -> list[dict]:
    with (DATA / "results_by_task.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared source files are not next to this checkout")
@pytest.mark.parametrize(
    "name, source", [("results_by_task.csv", "results_by_task.csv"), ("leaderboard.csv", "leaderboard.csv")]
)
def test_package_data_is_the_source_files(name, source):
    assert (DATA / name).read_bytes() == (SHARED / source).read_bytes()


def test_row_counts(data):
    assert len(data.scores) == 699 == len(_page_rows())
    assert len({(s.submission.team, s.submission.name) for s in data.scores}) == 29 == len(data.submissions)
    assert len(data.leaderboard) == 34 and sum(r.submission is not None for r in data.leaderboard) == 29
    assert len(data.tasks) == 19 == len({s.task for s in data.scores})
    rows_per_table = {}
    for cell in data.paper:
        rows_per_table.setdefault(cell.table, set()).add(cell.row)
    assert {t: len(r) for t, r in rows_per_table.items()} == {2: 10, 3: 4, 4: 2, 5: 2, 6: 2}
    assert len(data.paper) == 20 * 18


def _page_value(data, task, team, name, metric):
    (score,) = [s for s in data.task_scores(task, metric) if (s.submission.team, s.submission.name) == (team, name)]
    return score.value


def test_values_by_hand(data):
    assert _page_value(data, "beijing_opera-v1.0-hear2021-full", "NTU-GURA", "fusion_cat_xwc", "top1_acc") == 0.966
    assert _page_value(data, "esc50-v2.0.0-full", "HEAR", "torchcrepe", "top1_acc") == 0.300
    assert _page_value(data, "dcase2016_task2-hear2021-full", "CP-JKU", "base2levelmel", "segment_1s_er") == 0.099
    fusion = {(p.table, p.task): p.printed for p in data.paper_values("fusion_cat_xwc")}
    assert fusion[2, "beijing_opera-v1.0-hear2021-full"] == "96.6"
    assert fusion[2, "tfds_crema_d-1.0.0-full"] == "74.7" and fusion[6, "tfds_crema_d-1.0.0-full"] == "74.2"
    (crepe_maestro,) = [p for p in data.paper_values("crepe") if p.task == "maestro-v3.0.0-5h"]
    assert (crepe_maestro.printed, crepe_maestro.mark, crepe_maestro.value) == ("40.1", "bold", pytest.approx(0.401))
    (passt,) = [p for p in data.paper if p.row.startswith("PaSST") and p.task == "maestro-v3.0.0-5h"]
    assert passt.printed == "-" and passt.value is None


def test_leaderboard_agrees_with_the_results_page(data):
    """Every HEAR 2021 submission's leaderboard score equals the page's at the page's precision."""
    compared = 0
    for row in data.leaderboard:
        if row.submission is None:
            continue
        for task, info in data.tasks.items():
            page = [s for s in data.task_scores(task, info["primary"]) if s.submission == row.submission]
            assert bool(page) == (task in row.scores), (row.model, task)
            if page:
                assert round(row.scores[task], page[0].decimals) == page[0].value, (row.model, task)
                compared += 1
    assert compared == 521


def test_the_paper_agrees_with_the_site_but_where_noted(data):
    """The paper's numbers against the leaderboard's full-precision scores of the submission they print:
    one disagreement, Table 6's CREMA-D."""
    disagreements = []
    for cell in data.paper:
        if cell.submission is None:
            continue
        board = next(r for r in data.leaderboard if r.submission == cell.submission)
        published = board.scores.get(cell.task)
        if cell.value is None or published is None:
            assert cell.value is None and published is None, (cell.row, cell.task)
        elif round(published * 100, 1) != float(cell.printed):
            disagreements.append((cell.table, cell.row, cell.task, cell.printed, round(published * 100, 1)))
    assert disagreements == [(6, "cat xwc", "tfds_crema_d-1.0.0-full", "74.2", 74.7)]


def test_mapping_names_real_presets_once(data):
    claimed = [s.preset for s in data.submissions if s.preset]
    assert len(claimed) == len(set(claimed)) and set(claimed) <= set(presets.names())
    assert {p.preset for p in data.paper if p.preset} <= set(presets.names())
    assert data.reproduced_by("fusion_cat_xwc").label == "NTU-GURA fusion_cat_xwc"
    assert data.reproduced_by("fusion_cat_xwc_g").label == "NTU-GURA fusion_cat_xwc_time"
    assert data.reproduced_by("crepe").label == "HEAR torchcrepe"
    assert data.reproduced_by("wav2vec2_large") is None  # the paper prints the baseline's numbers; not claimed
    assert data.paper_tables_of("fusion_cat_xwc") == [2, 6] and data.paper_tables_of("cat_xwc") == []
    assert presets.describe(presets.get("hubert_xlarge"))["tables"] == "2, 3, 5"


def test_places_and_medians_with_ties():
    scores = [0.6, 0.5, 0.5, 0.4]
    assert beside.place(0.5, scores, "top1_acc") == 2  # a tie shares the better place
    assert beside.place(0.50004, scores, "top1_acc") == 2  # compared as displayed (50.0)
    assert beside.place(0.61, scores, "top1_acc") == 1 and beside.place(0.3, scores, "top1_acc") == 5
    assert beside.place(0.5, scores, "segment_1s_er") == 2  # lower is better: only 0.4 beats it
    assert beside.place(0.45, scores, "segment_1s_er") == 2 and beside.place(0.39, scores, "segment_1s_er") == 1


def test_segment_error_rate_is_ranked_lower_is_better(data):
    task = "dcase2016_task2-hear2021-full"
    rates = [s for s in data.task_scores(task, "segment_1s_er")]
    assert [s.submission.label for s in beside.best(rates)] == ["CP-JKU base2levelmel"]
    view = beside.model_view("fusion_cat_xwc", data)
    (entry,) = [e for e in view["scores"] if (e["task"], e["metric"]) == (task, "segment_1s_er")]
    own = _page_value(data, task, "NTU-GURA", "fusion_cat_xwc", "segment_1s_er")
    assert entry["place"] == 1 + sum(s.value < own for s in rates) == 3
    assert beside.median(rates) == statistics.median(s.value for s in rates)


def test_preset_of_a_result():
    config = presets.get("crepe").to_dict()
    assert beside.preset_of({"config": config}) == "crepe"
    assert beside.preset_of({"config": {**config, "name": "my_crepe"}}) == "crepe"  # a renamed copy is the preset
    assert beside.preset_of({"config": presets.get("cat_xwc", normalize="checkpoint").to_dict()}) is None
    assert beside.preset_of({"config": {**config, "window_seconds": 10.0}}) is None
    assert beside.preset_of({}) is None


def _result(model, task, metric, mean, config=None, extra=None, probe=None):
    record = {
        "model": model,
        "task": task,
        "status": "ok",
        "metric": metric,
        "higher_is_better": metric != "segment_1s_er",
        "test": {metric: {"mean": mean, "std": 0.01, "folds": [mean - 0.01, mean + 0.01]}, **(extra or {})},
    }
    if config:
        record["config"] = config
    if probe:
        record["probe"] = probe
    return record


def _write(results_dir: Path, records: list[dict]) -> None:
    for record in records:
        suffix = f".{record['probe']}" if record.get("probe") else ""
        path = results_dir / record["model"] / f"{record['task']}{suffix}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))


def test_report_places_the_published_numbers_beside(tmp_path, data):
    fusion = presets.get("fusion_cat_xwc").to_dict()
    _write(
        tmp_path,
        [
            _result("fusion_cat_xwc", "beijing_opera-v1.0-hear2021-full", "top1_acc", 0.9612, fusion),
            _result(
                "fusion_cat_xwc",
                "dcase2016_task2-hear2021-full",
                "event_onset_200ms_fms",
                0.80,
                fusion,
                extra={"segment_1s_er": {"mean": 0.12}},
            ),
            _result("mine", "esc50-v2.0.0-full", "top1_acc", 0.95, probe="linear"),
            _result("mine", "esc50-v2.1.0-full", "top1_acc", 0.5),
            _result("mine", "gm_pitch-v1-ci", "pitch_acc", 0.9),
        ],
    )
    md_path, _ = write_report(tmp_path)
    text = md_path.read_text()
    section = text.split("## Beside the published HEAR 2021 results")[1].split("\n## ")[0]
    lines = {tuple(c.strip() for c in line.strip("|").split("|")[:4]): line for line in section.splitlines()}
    beijing = lines["beijing_opera-v1.0-hear2021-full", "top1_acc ↑", "fusion_cat_xwc", "mlp"]
    scores = [s.value for s in data.task_scores("beijing_opera-v1.0-hear2021-full", "top1_acc")]
    expected_place = 1 + sum(round(v * 100, 1) > 96.1 for v in scores)
    assert f"| 96.1 ± 1.0 | {expected_place} of 30 |" in beijing
    assert "96.6 (NTU-GURA fusion_cat_xwc)" in beijing and "96.6 (Table 2, 6)" in beijing
    assert "97.5 (MARL + Soundsensing openl3_hear)" in beijing
    assert f"| {round(statistics.median(scores) * 100, 1):.1f} |" in beijing
    rate = lines["dcase2016_task2-hear2021-full", "segment_1s_er ↓", "fusion_cat_xwc", "mlp"]
    rates = [s.value for s in data.task_scores("dcase2016_task2-hear2021-full", "segment_1s_er")]
    assert f"| 12.0 | {1 + sum(round(v * 100, 1) < 12.0 for v in rates)} of 29 |" in rate  # lower is better
    assert "9.9 (CP-JKU base2levelmel)" in rate
    esc50 = lines["esc50-v2.0.0-full", "top1_acc ↑", "mine", "linear"]
    assert "| 1 of 30 | – | – |" in esc50  # no preset: no submission or paper number claimed
    assert "esc50-v2.1.0-full compared with esc50-v2.0.0-full although it is version v2.1.0" in section
    assert "not compared): gm_pitch-v1-ci." in section
    assert "published" in section and "hearbenchmark.com" in section and "never used in any computation" in section
    # the user's own table is as before: published numbers are beside it, never in it
    primary, how_sure = text.split("## Primary metric\n")[1].split("\n## ")[0].split("### How sure")
    assert "96.6" not in primary and "97.5" not in primary
    how_sure = how_sure.replace("97.5th percentile", "")  # what its interval is, in words
    assert "96.6" not in how_sure and "97.5" not in how_sure and "No interval for" in how_sure
    chart = tmp_path / "report-published.png"
    assert chart.read_bytes().startswith(PNG_SIGNATURE) and "(report-published.png)" in text


def test_report_without_hear_tasks_has_no_comparison(tmp_path):
    _write(tmp_path, [_result("mine", "gm_pitch-v1-ci", "pitch_acc", 0.9)])
    (tmp_path / "report-published.png").write_bytes(b"old")
    md_path, _ = write_report(tmp_path)
    assert "HEAR 2021" not in md_path.read_text() and not (tmp_path / "report-published.png").exists()


def _reference(*args: str) -> subprocess.CompletedProcess:
    return processes.run([sys.executable, "-m", "hearfuse", "reference", *args], timeout=120)


def test_reference_prints_table_2_by_default():
    run = _reference()
    assert run.returncode == 0, run.stderr
    (row,) = [line for line in run.stdout.splitlines() if line.startswith("| fusion_cat_xwc |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["fusion_cat_xwc", "fusion_cat_xwc", "**96.6**", "**74.7**"] and len(cells) == 20
    assert "Table 2 of the paper, as printed" in run.stdout


def test_reference_task_model_and_json():
    run = _reference("--task", "esc50", "--json")
    assert run.returncode == 0, run.stderr
    (task,) = json.loads(run.stdout)["tasks"]
    assert task["task"] == "esc50-v2.0.0-full" and len(task["submissions"]) == 29
    assert task["submissions"][0]["place"] == 1 and task["submissions"][0]["scores"]["top1_acc"] == 0.947
    crepe = next(s for s in task["submissions"] if s["preset"] == "crepe")
    assert crepe["submission"] == "HEAR torchcrepe" and crepe["scores"]["top1_acc"] == 0.3
    run = _reference("--task", "nsynth_pitch")  # every mode of it
    assert "### nsynth_pitch-v2.2.3-50h" in run.stdout and "### nsynth_pitch-v2.2.3-5h" in run.stdout
    run = _reference("--model", "GURA Fuse Cat H+w+C (time)")  # a leaderboard name
    assert run.returncode == 0 and "preset fusion_cat_xwc_g / NTU-GURA fusion_cat_xwc_time" in run.stdout
    view = json.loads(_reference("--model", "torchcrepe", "--json").stdout)["model"]
    assert view["preset"] == "crepe" and len({e["task"] for e in view["scores"]}) == 19


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "esc51"], "--task esc51: not a HEAR 2021 task (did you mean esc50?)"),
        (["--model", "fusion_cat_xw"], "--model fusion_cat_xw: neither a preset nor a HEAR 2021 submission"),
        (["--table", "7"], "--table 7: the paper's result tables are 2, 3, 4, 5, 6"),
    ],
)
def test_reference_usage_errors_are_one_line(args, message):
    run = _reference(*args)
    assert run.returncode == 2 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and message in run.stderr
