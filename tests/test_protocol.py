"""The HEAR kit's protocol rules, each against the kit's behaviour stated here (heareval 2021.1.3)."""

from __future__ import annotations

import json
import random
import shutil
import statistics

import numpy as np
import pytest
from sklearn.model_selection import ParameterGrid

from hearfuse.evaluation.events import Postprocessing, choose_postprocessing, postprocessing_options
from hearfuse.evaluation.protocol import GRID_SIZE, KIT_GRID, Protocol, aggregate, draw_grid, task_grid
from hearfuse.evaluation.tasks import load_task

from . import taskgen

# heareval/predictions/task_predictions.py PARAM_GRID, with torch objects written as names.
KIT_PARAM_GRID = {
    "hidden_layers": [1, 2],
    "hidden_dim": [1024],
    "dropout": [0.1],
    "lr": [3.2e-3, 1e-3, 3.2e-4, 1e-4],
    "patience": [20],
    "max_epochs": [500],
    "check_val_every_n_epoch": [3],
    "batch_size": [1024],
    "hidden_norm": ["BatchNorm1d"],
    "norm_after_activation": [False],
    "embedding_norm": ["Identity"],
    "initialization": ["xavier_uniform", "xavier_normal"],
    "optim": ["Adam"],
}


def kit_draw(grid: dict, points: int, seed: int = 42) -> list[dict]:
    """What task_predictions does: seed_everything(42); confs = list(ParameterGrid(grid)); random.shuffle(confs)."""
    random.seed(seed)
    confs = list(ParameterGrid(grid))
    random.shuffle(confs)
    return confs[:points]


def test_the_default_draw_is_the_kits_eight_points_in_the_kits_order():
    assert KIT_GRID == KIT_PARAM_GRID and GRID_SIZE == 16
    ours = [p.to_dict() for p in draw_grid(KIT_GRID, 8)]
    assert ours == kit_draw(KIT_PARAM_GRID, 8)
    assert [p.to_dict() for p in Protocol().grid({"task_name": "anything"})] == kit_draw(KIT_PARAM_GRID, 8)
    # spelled out, so a change in either implementation shows: (hidden_layers, lr, initialization)
    assert [(c["hidden_layers"], c["lr"], c["initialization"]) for c in ours][:3] == [
        (c["hidden_layers"], c["lr"], c["initialization"]) for c in kit_draw(KIT_PARAM_GRID, 3)
    ]


@pytest.mark.parametrize(
    "metadata, expected_override",
    [
        ({"task_name": "dcase2016_task2"}, {"check_val_every_n_epoch": [10]}),  # the kit's TASK_SPECIFIC_PARAM_GRID
        (  # MAESTRO's task_specific_param_grid in task_metadata.json
            {
                "task_name": "maestro",
                "evaluation_params": {"task_specific_param_grid": {"max_epochs": [50], "check_val_every_n_epoch": [1]}},
            },
            {"max_epochs": [50], "check_val_every_n_epoch": [1]},
        ),
        (  # both: the metadata's grid is applied after the kit's own
            {
                "task_name": "dcase2016_task2",
                "evaluation_params": {"task_specific_param_grid": {"check_val_every_n_epoch": [5], "lr": [1e-3, 1e-4]}},
            },
            {"check_val_every_n_epoch": [5], "lr": [1e-3, 1e-4]},
        ),
    ],
)
def test_task_overrides_are_applied_in_the_kits_order_and_drawn_like_the_kit(metadata, expected_override):
    grid = {**KIT_PARAM_GRID, **expected_override}
    assert task_grid(metadata) == grid
    assert [p.to_dict() for p in Protocol().grid(metadata)] == kit_draw(grid, 8)


def test_unknown_override_keys_and_a_cap_are_handled():
    with pytest.raises(ValueError, match="unknown key 'learning_rate'"):
        task_grid({"evaluation_params": {"task_specific_param_grid": {"learning_rate": [1e-3]}}})
    capped = Protocol(max_epochs=30).grid({"task_name": "x"})
    assert [p.max_epochs for p in capped] == [30] * 8
    assert [p.lr for p in capped] == [c["lr"] for c in kit_draw(KIT_PARAM_GRID, 8)]  # the cap does not change the draw


def test_folds_are_sorted_then_rotated(tmp_path):
    """data_splits_from_folds: sorted folds; fold i tests, fold i+1 validates, the rest (sorted) train."""
    task_dir = taskgen.scene_task(tmp_path, kfold=True)
    metadata = json.loads((task_dir / "task_metadata.json").read_text())
    metadata["splits"] = ["fold02", "fold00", "fold01"]
    (task_dir / "task_metadata.json").write_text(json.dumps(metadata))
    folds = load_task(task_dir).folds()
    assert [(f.test, f.valid, f.train) for f in folds] == [
        ("fold00", "fold01", ("fold02",)),
        ("fold01", "fold02", ("fold00",)),
        ("fold02", "fold00", ("fold01",)),
    ]
    (single,) = load_task(taskgen.scene_task(tmp_path)).folds()
    assert (single.train, single.valid, single.test) == (("train",), "valid", "test")


def test_the_kit_memmap_order_is_one_prng_through_the_splits(tmp_path):
    """task_embeddings: prng = random.Random(); prng.seed(0); then per split in metadata order,
    memmap_embeddings shuffles the split file's keys with that same prng."""
    task = load_task(taskgen.scene_task(tmp_path, kfold=True))
    prng = random.Random()
    prng.seed(0)
    expected = {}
    for split in ["fold00", "fold01", "fold02"]:
        files = list(json.loads((task.path / f"{split}.json").read_text()).keys())
        prng.shuffle(files)
        expected[split] = files
    assert task.kit_file_order() == expected


def test_fold_aggregation_is_pandas_mean_and_sample_std_skipping_nan():
    values = [0.61, 0.72, 0.55, 0.68, 0.70]
    result = aggregate(values)
    assert result["mean"] == pytest.approx(statistics.fmean(values))
    assert result["std"] == pytest.approx(statistics.stdev(values))  # ddof = 1
    assert result["std"] == pytest.approx(np.std(values) * np.sqrt(5 / 4))  # about 11 % above ddof 0
    with_nan = aggregate([0.5, float("nan"), 0.7])
    assert with_nan["mean"] == pytest.approx(0.6) and with_nan["std"] == pytest.approx(statistics.stdev([0.5, 0.7]))
    assert with_nan["folds"] == [0.5, None, 0.7]
    assert aggregate([0.4]) == {"mean": 0.4, "std": None, "folds": [0.4]}
    assert aggregate([float("nan")])["mean"] is None


def test_event_postprocessing_choice_follows_the_kits_sort():
    """_score_epoch_end: NaN -> 0.0, then sort((score, postprocessing), reverse=True)[0]."""
    grid = {"min_duration": [125, 250, 60], "median_filter_ms": [250, 100]}
    options = postprocessing_options(grid)
    assert [(o.median_filter_ms, o.min_duration) for o in options] == [
        (p["median_filter_ms"], p["min_duration"]) for p in ParameterGrid(grid)
    ]
    rng = np.random.default_rng(0)
    for _ in range(50):
        scores = {o: float(v) for o, v in zip(options, rng.choice([0.2, 0.5, float("nan")], len(options)))}
        kit = sorted(
            (
                (
                    0.0 if np.isnan(s) else s,
                    tuple(sorted({"median_filter_ms": o.median_filter_ms, "min_duration": o.min_duration}.items())),
                )
                for o, s in scores.items()
            ),
            reverse=True,
        )[0]
        chosen, value = choose_postprocessing(options, scores.__getitem__, "event_onset_200ms_fms")
        assert (chosen.median_filter_ms, chosen.min_duration) == (kit[1][0][1], kit[1][1][1])
        assert value == scores[chosen] or (np.isnan(value) and np.isnan(scores[chosen]))


def test_a_lower_is_better_decoding_choice_takes_the_lowest_and_never_a_nan():
    options = [Postprocessing(250, 125), Postprocessing(250, 250), Postprocessing(250, 500)]
    scores = {options[0]: 0.4, options[1]: float("nan"), options[2]: 0.3}
    chosen, value = choose_postprocessing(options, scores.__getitem__, "segment_1s_er")
    assert chosen == options[2] and value == 0.3


@pytest.fixture(scope="module")
def maestro_like(tmp_path_factory):
    """An event task with MAESTRO's settings: loss-based early stopping, 50 epochs checked every epoch,
    one decoding setting."""
    root = tmp_path_factory.mktemp("maestro")
    task_dir = taskgen.event_task(root, clips=8)
    metadata = json.loads((task_dir / "task_metadata.json").read_text())
    metadata["use_scoring_for_early_stopping"] = False
    metadata["evaluation_params"] = {
        "event_postprocessing_grid": {"median_filter_ms": [150], "min_duration": [50]},
        "task_specific_param_grid": {"max_epochs": [50], "check_val_every_n_epoch": [1]},
    }
    (task_dir / "task_metadata.json").write_text(json.dumps(metadata))
    return task_dir


def test_a_task_without_scoring_for_early_stopping_selects_on_validation_loss(maestro_like, tmp_path):
    from hearfuse.evaluation.evaluate import EvaluationSettings, evaluate

    from .test_evaluation import CREPE_TINY

    settings = EvaluationSettings(
        tmp_path / "cache", tmp_path / "results", protocol=Protocol(grid_points=3), progress=False
    )
    (result,) = evaluate([CREPE_TINY], maestro_like.parent, settings)
    assert result["status"] == "ok", result.get("error")
    assert result["monitor"] == "loss"
    losses = [point["validation_score"] for point in result["grid"]]
    assert result["validation_score"] == min(losses)  # the lowest validation loss is selected
    assert all(
        point["params"]["max_epochs"] == 50 and point["params"]["check_val_every_n_epoch"] == 1
        for point in result["grid"]
    )
    assert result["selected_event_postprocessing"]["median_filter_ms"] == 150.0
    assert result["selected_event_postprocessing"]["min_duration"] == 50.0

    broken = tmp_path / "tasks" / maestro_like.name
    shutil.copytree(maestro_like, broken)
    metadata = json.loads((broken / "task_metadata.json").read_text())
    metadata["evaluation_params"]["event_postprocessing_grid"]["min_duration"] = [50, 100]
    (broken / "task_metadata.json").write_text(json.dumps(metadata))
    (failed,) = evaluate([CREPE_TINY], broken.parent, settings)
    assert failed["status"] == "failed" and "exactly one setting" in failed["error"]
