"""Writing one task of the suite in exactly the HEAR layout, deterministically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile

from .synth import SAMPLE_RATE


class TaskWriter:
    """Collects clips and labels, then writes ``<name>-v1-<size>/`` atomically.

    Audio is peak-limited and written as 16-bit PCM at 16 kHz (same bytes for the same input);
    JSON files have sorted keys. Nothing appears under ``root`` until :meth:`finish`.

    A clip added with the ids of the sources it was made from (a speaker, a drum kit) puts them in
    task_metadata.json: ``source_of_split`` (each split's sorted source ids) and ``source_of_clip``
    (each split's clips' ids), so that a test can check from the metadata that no source is in two splits.
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
        self.sources: dict[str, dict[str, list[str]]] = {split: {} for split in splits}
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

    def add_metadata(self, **fields: Any) -> None:
        """Further keys of task_metadata.json (e.g. ``suite``, ``sources``); none may replace one already set."""
        taken = sorted(set(fields) & set(self.metadata))
        if taken:
            raise ValueError(f"task_metadata.json already has {taken}")
        self.metadata.update(fields)

    def add(self, split: str, file_name: str, audio: np.ndarray, labels: Any, sources: Sequence[str] = ()) -> None:
        """Add a clip: ``labels`` is a list of labels (scene) or of {label, start, end} in ms (event);
        ``sources``: the ids of the sources it was made from."""
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
        if sources:
            self.sources[split][file_name] = sorted(sources)

    def finish(self, stamp: dict) -> Path:
        """Write labels and metadata, then move the task into place; ``stamp`` marks it complete."""
        for split, content in self.splits.items():
            (self.partial / f"{split}.json").write_text(json.dumps(content, sort_keys=True, indent=1))
        (self.partial / "labelvocabulary.csv").write_text(
            "idx,label\n" + "".join(f"{index},{label}\n" for index, label in enumerate(self.labels))
        )
        metadata = dict(self.metadata)
        if any(self.sources.values()):
            metadata["source_of_clip"] = self.sources
            metadata["source_of_split"] = {
                split: sorted({source for ids in clips.values() for source in ids})
                for split, clips in self.sources.items()
            }
        (self.partial / "task_metadata.json").write_text(json.dumps(metadata, sort_keys=True, indent=1))
        (self.partial / ".complete").write_text(json.dumps(stamp, sort_keys=True))
        shutil.rmtree(self.directory, ignore_errors=True)
        self.partial.rename(self.directory)
        return self.directory
