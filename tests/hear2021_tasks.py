"""Miniatures of the 19 HEAR 2021 tasks, as a user who downloads the 48 kHz release finds them
(``python -m tests.hear2021_tasks DIR`` writes them).

Each task directory has that task's exact ``task_metadata.json`` as hear-preprocess writes it
(``data/hear2021_task_metadata.json``: key order, ints, nulls, extra keys and all), its split or fold
names, a label vocabulary of the real size where that is small (a stand-in of 12 labels for fsd50k's
200 and vocal_imitation's 302), labels as hear-preprocess's CSV round trip leaves them (numeric ones
as JSON ints), and audio under ``48000/`` only. What is miniature: a few short synthetic clips per
split (tones, one frequency per label), so every split holds every label once where it can.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 48000
METADATA = json.loads((Path(__file__).parent / "data" / "hear2021_task_metadata.json").read_text())["tasks"]
STAND_IN = 12  # labels for the two tasks whose vocabulary is large

VOCABULARIES: dict[str, list] = {
    "beehive_states_fold0": ["NOQUEEN", "QUEEN"],
    "beijing_opera": ["Bangu", "Daluo", "Naobo", "Xiaoluo"],
    "dcase2016_task2": [
        "clearthroat",
        "cough",
        "doorslam",
        "drawer",
        "keyboard",
        "keys",
        "knock",
        "laughter",
        "pageturn",
        "phone",
        "speech",
    ],  # fmt: skip
    "esc50": [f"esc50_class_{i:02d}" for i in range(50)],
    "fsd50k": [f"/m/stand_in_{i:02d}" for i in range(STAND_IN)],
    "gunshot_triangulation": ["mic1", "mic2", "mic3", "mic4"],
    "libricount": list(range(11)),
    "maestro": list(range(21, 109)),
    "mridangam_stroke": ["bheem", "cha", "dheem", "dhin", "num", "ta", "tha", "tham", "thi", "thom"],
    "mridangam_tonic": ["b", "c", "csh", "d", "dsh", "e"],
    "nsynth_pitch": list(range(21, 109)),
    "speech_commands": [
        "_silence_",
        "_unknown_",
        "down",
        "go",
        "left",
        "no",
        "off",
        "on",
        "right",
        "stop",
        "up",
        "yes",
    ],
    "tfds_crema_d": ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"],
    "tfds_gtzan": ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"],
    "tfds_gtzan_music_speech": ["music", "speech"],
    "vocal_imitation": [f"reference_{i:03d}.wav" for i in range(STAND_IN)],
    "vox_lingua_top10": ["de", "en", "es", "fr", "it", "ja", "pt", "ru", "sv", "zh"],
}
SCENE_SECONDS = 0.3
EVENT_SECONDS = 2.5
#: fsd50k's clips have no fixed length (``sample_duration: null``): 0.3 s to 2 s here
VARIABLE_SECONDS = (0.3, 2.0)
NOISE = 0.15  # against tones of amplitude 0.3: enough that not every task is solved


def _tone(index: int, count: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    frequency = 110.0 * 2 ** (4.5 * index / max(count - 1, 1))  # 110 Hz to 2.5 kHz, log-spaced by label
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.3 * np.sin(2 * np.pi * frequency * t + rng.uniform(0, 6.28))).astype(np.float32)


def _scene_split(
    task: str, labels: list, multilabel: bool, seconds, rng: np.random.Generator
) -> tuple[dict, dict[str, np.ndarray]]:
    listing, audio = {}, {}
    clips = max(3, len(labels))
    for i in range(clips):
        chosen = [labels[i % len(labels)]] + ([labels[(i + 3) % len(labels)]] if multilabel and i % 2 else [])
        length = rng.uniform(*seconds) if isinstance(seconds, tuple) else seconds
        signal = sum(_tone(labels.index(label), len(labels), length, rng) for label in chosen) / len(chosen)
        name = f"{task}_{rng.integers(1 << 40):011x}.wav"
        listing[name] = chosen
        audio[name] = signal + NOISE * rng.standard_normal(len(signal)).astype(np.float32)
    return listing, audio


def _event_split(task: str, labels: list, rng: np.random.Generator) -> tuple[dict, dict[str, np.ndarray]]:
    listing, audio = {}, {}
    used = labels[:: max(1, len(labels) // 6)][:6]  # a few labels sound; the vocabulary keeps its real size
    for i in range(3):
        signal = NOISE * rng.standard_normal(int(RATE * EVENT_SECONDS)).astype(np.float32)
        events = []
        for slot in range(2):
            label = used[(2 * i + slot) % len(used)]
            start, length = slot * 1.2 + rng.uniform(0.1, 0.3), rng.uniform(0.4, 0.7)
            first = int(start * RATE)
            signal[first : first + int(length * RATE)] += _tone(labels.index(label), len(labels), length, rng)
            events.append({"label": label, "start": round(start * 1000, 3), "end": round((start + length) * 1000, 3)})
        name = f"{task}_{i:03d}.wav"
        listing[name] = events
        audio[name] = signal
    return listing, audio


def write_tasks(root: Path, seed: int = 0) -> list[Path]:
    """Write the 19 miniature task directories under ``root``; returns their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for directory, metadata in METADATA.items():
        task = root / directory
        labels = VOCABULARIES[metadata["task_name"]]
        for split in metadata["splits"]:
            if metadata["embedding_type"] == "event":
                listing, audio = _event_split(metadata["task_name"], labels, rng)
            else:
                seconds = VARIABLE_SECONDS if metadata["sample_duration"] is None else SCENE_SECONDS
                multilabel = metadata["prediction_type"] == "multilabel"
                listing, audio = _scene_split(metadata["task_name"], labels, multilabel, seconds, rng)
            folder = task / str(RATE) / split
            folder.mkdir(parents=True, exist_ok=True)
            for name, signal in audio.items():
                sf.write(folder / name, signal, RATE, subtype="PCM_16")
            (task / f"{split}.json").write_text(json.dumps(listing, indent=True))
        vocabulary = sorted(labels)
        (task / "labelvocabulary.csv").write_text(
            "idx,label\n" + "".join(f"{i},{label}\n" for i, label in enumerate(vocabulary))
        )
        (task / "task_metadata.json").write_text(json.dumps(metadata, indent=True))
        paths.append(task)
    return paths


if __name__ == "__main__":
    import sys

    for path in write_tasks(Path(sys.argv[1])):
        print(path)
