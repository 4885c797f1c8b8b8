"""Writing one task of the suite in exactly the HEAR layout, deterministically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from .synth import SAMPLE_RATE


class TaskWriter:
    """Collects clips and labels, then writes ``<name>-v1-<size>/`` atomically.

    Audio is peak-limited and written as 16-bit PCM at 16 kHz (same bytes for the same input);
    JSON files have sorted keys. Nothing appears under ``root`` until :meth:`finish`.
    """

    def __init__(
        self,
        root: Path,
        name: str,
        size: str,
        *,
        embedding_type: str,
        prediction_type: str,
        split_mode: str,
        splits: list[str],
        evaluation: list[str],
        sample_duration: float,
        labels: list[str],
        evaluation_params: dict | None = None,
        description: str = "",
    ):
        self.directory = Path(root) / f"{name}-v1-{size}"
        self.partial = Path(root) / f".{name}-v1-{size}.partial"
        shutil.rmtree(self.partial, ignore_errors=True)
        self.labels = list(labels)
        self.splits: dict[str, dict[str, Any]] = {split: {} for split in splits}
        self.metadata = {
            "task_name": name,
            "version": "v1",
            "mode": size,
            "embedding_type": embedding_type,
            "prediction_type": prediction_type,
            "split_mode": split_mode,
            "splits": splits,
            "evaluation": evaluation,
            "sample_duration": sample_duration,
            "sample_rate": SAMPLE_RATE,
            "description": description,
        }
        if evaluation_params:
            self.metadata["evaluation_params"] = evaluation_params

    def add(self, split: str, file_name: str, audio: np.ndarray, labels: Any) -> None:
        """Add a clip: ``labels`` is a list of labels (scene) or of {label, start, end} in ms (event)."""
        if file_name in self.splits[split]:
            raise ValueError(f"{file_name} added twice to {split}")
        unknown = {str(x["label"] if isinstance(x, dict) else x) for x in labels} - set(self.labels)
        if unknown:
            raise ValueError(f"{file_name}: labels {sorted(unknown)} are not in the vocabulary")
        path = self.partial / str(SAMPLE_RATE) / split / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
        scaled = audio * (0.9 / peak) if peak > 0.9 else audio
        soundfile.write(str(path), np.asarray(scaled, dtype=np.float32), SAMPLE_RATE, subtype="PCM_16")
        self.splits[split][file_name] = labels

    def finish(self, stamp: dict) -> Path:
        """Write labels and metadata, then move the task into place; ``stamp`` marks it complete."""
        for split, content in self.splits.items():
            (self.partial / f"{split}.json").write_text(json.dumps(content, sort_keys=True, indent=1))
        (self.partial / "labelvocabulary.csv").write_text(
            "idx,label\n" + "".join(f"{index},{label}\n" for index, label in enumerate(self.labels))
        )
        (self.partial / "task_metadata.json").write_text(json.dumps(self.metadata, sort_keys=True, indent=1))
        (self.partial / ".complete").write_text(json.dumps(stamp, sort_keys=True))
        shutil.rmtree(self.directory, ignore_errors=True)
        self.partial.rename(self.directory)
        return self.directory
