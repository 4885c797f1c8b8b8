"""Silero VAD v6 (Silero Team), the voice activity detector, as an upstream: one 128-d state and one speech
probability per 32 ms chunk.

Weights: the PyPI package ``silero-vad`` (MIT) ships them; hearfuse reads its files and never imports it
(importing ``silero_vad`` sets torch to one thread). Checkpoint ``"v6.2"``: the released model, read from
the package's 16 kHz ONNX file (``silero_vad_16k_op15.onnx``, initialisers read with ``onnx`` as data), whose
values are bit for bit those of the TorchScript file the package's own ``load_silero_vad()`` runs
(``silero_vad.jit``; hearfuse does not read that one: ``torch.jit.load`` is deprecated and would load its code).

A checkpoint may also be the path of a file in either format (``.safetensors``, else ONNX). The package's
``silero_vad_16k.safetensors`` (shipped for its tinygrad port) is such a file, but not a named checkpoint: it
holds the same network with other values (correlated with v6.2's, not equal: on an espeak-ng sentence the two
speech probabilities differ by up to 0.9; github.com/snakers4/silero-vad/issues/768), and the package's
runtime never loads it.

This module is the family's registry entry and needs no torch; the network is in
:mod:`hearfuse.upstream.silero_vad_net`, imported when a checkpoint is built.
"""

from __future__ import annotations

from pathlib import Path

from .packaged import is_installed, packaged_file
from .registry import CheckpointInfo, Family, Provenance, register_family
from .weights import WeightsNotFoundError

_TRAINING_DATA = (
    "huge corpora that include over 6000 languages, audio from different domains with various background "
    "noise and quality levels (the package's README)"
)
_REFERENCE = "https://github.com/snakers4/silero-vad"

PROVENANCE = {
    "v6.2": Provenance("silero-vad", "silero_vad/data/silero_vad_16k_op15.onnx", "MIT", _TRAINING_DATA, _REFERENCE),
}

_STATES = "states: encoder blocks 1, 2, 4 and the LSTM's h"
_DESCRIPTIONS = {"v6.2": f"Silero VAD v6.2, as the package runs it ({_STATES})"}


def _build(checkpoint: str = "v6.2", **options):
    """``checkpoint``: a name in :data:`PROVENANCE` (weights from PyPI) or the path of a weights file."""
    if options:
        raise ValueError(f"family 'silero_vad' takes no options, got {sorted(options)}")
    if checkpoint in PROVENANCE:
        path = packaged_file(PROVENANCE[checkpoint])
    else:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"Silero VAD checkpoint {checkpoint!r} is neither one of {', '.join(PROVENANCE)} nor a file"
            )
    from .silero_vad_net import SileroVadNet, SileroVadUpstream

    return SileroVadUpstream(SileroVadNet.from_file(path))


def _is_available(checkpoint: str) -> bool:
    if checkpoint in PROVENANCE:
        return is_installed(PROVENANCE[checkpoint])
    return Path(checkpoint).expanduser().is_file()


SILERO_VAD = register_family(
    Family(
        name="silero_vad",
        build=_build,
        is_available=_is_available,
        checkpoints={
            name: CheckpointInfo(
                feature_dim=128,
                num_states=4,
                description=_DESCRIPTIONS[name],
                hop_ms=32.0,
                first_center_ms=16.0,
                provenance=provenance,
            )
            for name, provenance in PROVENANCE.items()
        },
        description="Silero VAD v6 voice activity detector, one frame per 32 ms chunk (" + _STATES + ")",
    )
)
