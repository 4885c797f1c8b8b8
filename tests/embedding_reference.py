"""Reference embeddings of every family and fusion step, pinned under one ``EMBEDDING_VERSION``.

Every family (the five wav2vec2-like front ends, Whisper's encoder, w2v-BERT 2.0, AST, CREPE) alone, and
three fusions of the paper's (concatenation with time and width alignment, its scene groups, averaging),
on tiny seeded checkpoints (CREPE tiny with its real weights) and fixed audio: timestamps, frame and scene
embeddings. ``tests/test_embedding_version.py`` compares them with ``tests/data/embedding_reference.npz``;
when the numbers change, bump :data:`hearfuse.identity.EMBEDDING_VERSION` and pin them again::

    .venv/bin/python -m tests.embedding_reference
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

PINNED = Path(__file__).parent / "data" / "embedding_reference.npz"
FUSIONS = ("fusion_cat_xwc", "fusion_cat_xwc_g", "avg_xw")


def reference_outputs(root: Path) -> dict[str, np.ndarray]:
    from hearfuse import catalogue
    from hearfuse.config import FusionConfig, MemberConfig
    from hearfuse.model import FusionModel

    from .conftest import FAMILIES, _save_tiny, save_tiny_feature_encoders, sine_batch

    checkpoints = {key: str(_save_tiny(root, key)) for key in FAMILIES}
    checkpoints |= save_tiny_feature_encoders(root / "feature_encoders")
    checkpoints["crepe"] = "tiny"
    family_of = {key: "wav2vec2" if key == "wav2vec2_group" else key for key in checkpoints}
    configs = [
        FusionConfig(key, (MemberConfig(key, family_of[key], checkpoint),)) for key, checkpoint in checkpoints.items()
    ]
    for name in FUSIONS:
        preset = catalogue.get(name)
        members = tuple(dataclasses.replace(m, checkpoint=checkpoints[m.family]) for m in preset.members)
        configs.append(preset.with_options(members=members))
    audio = sine_batch(2, 1.5)
    outputs = {}
    for config in configs:
        embedded = FusionModel.from_config(config).embed(audio)
        outputs[f"{config.name}/timestamp_embeddings"] = embedded.timestamp_embeddings.numpy()
        outputs[f"{config.name}/timestamps"] = embedded.timestamps.numpy()
        outputs[f"{config.name}/scene_embeddings"] = embedded.scene_embeddings.numpy()
    return outputs


def same(now: np.ndarray, pinned: np.ndarray) -> bool:
    """Equal up to what another CPU's kernels change (relative 1e-4 of the array's scale)."""
    scale = max(1.0, float(np.abs(pinned).max(initial=0.0)))
    return now.shape == pinned.shape and bool(np.allclose(now, pinned, rtol=1e-4, atol=1e-4 * scale))


def pin() -> Path:
    from hearfuse.identity import EMBEDDING_VERSION

    with tempfile.TemporaryDirectory() as root:
        outputs = reference_outputs(Path(root))
    PINNED.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(PINNED, __version__=np.array(EMBEDDING_VERSION), **outputs)
    return PINNED


if __name__ == "__main__":
    print(f"pinned {len(np.load(pin()).files) - 1} arrays in {PINNED}")
