"""Tiny HEAR-layout tasks generated on the fly for the evaluation tests (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000
PITCHES = {"low": 220.0, "mid": 440.0, "high": 880.0}


def _tone(frequency: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * frequency * t * rng.uniform(0.98, 1.02) + rng.uniform(0, 6.28))


def _write_task(root: Path, name: str, metadata: dict, splits: dict[str, dict[str, object]], audio: dict) -> Path:
    task = root / name
    for split, labels in splits.items():
        (task / str(RATE) / split).mkdir(parents=True, exist_ok=True)
        (task / f"{split}.json").write_text(json.dumps(labels))
        for file in labels:
            sf.write(task / str(RATE) / split / file, audio[file], RATE, subtype="FLOAT")
    (task / "labelvocabulary.csv").write_text(
        "idx,label\n" + "".join(f"{i},{label}\n" for i, label in enumerate(PITCHES))
    )
    (task / "task_metadata.json").write_text(json.dumps({"task_name": name.split("-")[0], "version": "v1", **metadata}))
    return task


def scene_task(root: Path, *, multilabel: bool = False, kfold: bool = False, clips: int = 24, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    names = ["fold00", "fold01", "fold02"] if kfold else ["train", "valid", "test"]
    splits: dict[str, dict] = {name: {} for name in names}
    audio = {}
    for index in range(clips * len(names)):
        split = names[index % len(names)] if kfold else ("train" if index % 4 < 2 else names[1 + index % 2])
        if multilabel:
            labels = [label for label in PITCHES if rng.random() < 0.5] or [str(rng.choice(list(PITCHES)))]
        else:
            labels = [list(PITCHES)[(index // 3) % 3]]
        noise = 0.02 * rng.normal(size=int(RATE * 0.5))
        audio[f"clip{index:03d}.wav"] = sum(_tone(PITCHES[label], 0.5, rng) for label in labels) / len(labels) + noise
        splits[split][f"clip{index:03d}.wav"] = labels
    metadata = {
        "embedding_type": "scene",
        "prediction_type": "multilabel" if multilabel else "multiclass",
        "split_mode": "new_split_kfold" if kfold else "trainvaltest",
        "splits": names,
        "sample_duration": 0.5,
        "evaluation": ["mAP", "d_prime"] if multilabel else ["top1_acc", "pitch_acc"],
    }
    kind = "multilabel" if multilabel else "multiclass"
    return _write_task(root, f"tones_{kind}{'_kfold' if kfold else ''}-v1-full", metadata, splits, audio)


def event_task(root: Path, *, clips: int = 12, seconds: float = 3.0, seed: int = 0) -> Path:
    """Tone events (label = pitch) at known times in quiet noise."""
    rng = np.random.default_rng(seed)
    splits: dict[str, dict] = {"train": {}, "valid": {}, "test": {}}
    audio = {}
    for index in range(clips * 3):
        split = ["train", "train", "valid", "test"][index % 4] if index % 4 else "train"
        signal = 0.01 * rng.normal(size=int(RATE * seconds))
        events = []
        for slot in range(3):
            start = slot * 1.0 + rng.uniform(0.05, 0.3)
            length = rng.uniform(0.3, 0.55)
            label = str(rng.choice(list(PITCHES)))
            first = int(start * RATE)
            signal[first : first + int(length * RATE)] += _tone(PITCHES[label], length, rng)[: len(signal) - first]
            events.append({"label": label, "start": round(start * 1000, 3), "end": round((start + length) * 1000, 3)})
        audio[f"scene{index:03d}.wav"] = signal
        splits[split][f"scene{index:03d}.wav"] = events
    metadata = {
        "embedding_type": "event",
        "prediction_type": "multilabel",
        "split_mode": "trainvaltest",
        "splits": ["train", "valid", "test"],
        "sample_duration": seconds,
        "evaluation": ["event_onset_200ms_fms", "segment_1s_er"],
    }
    return _write_task(root, "tone_events-v1-full", metadata, splits, audio)
