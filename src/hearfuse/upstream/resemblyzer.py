"""The GE2E speaker encoder (Wan et al., 2018) that Resemble AI's Resemblyzer ships, as an upstream.

Weights: ``resemblyzer/pretrained.pt`` of the PyPI package ``resemblyzer`` (Apache-2.0), read as a file: the
package's own code imports librosa and webrtcvad, which hearfuse does not need to embed. A checkpoint is
``"pretrained"`` or the path of a file of the same format (``{"model_state": ...}`` with ``lstm.*`` and
``linear.*``), such as an ``encoder.pt`` trained with Real-Time-Voice-Cloning, which the Resemblyzer README calls
interchangeable with its own.

This module is the family's registry entry and needs no torch; the network is in
:mod:`hearfuse.upstream.resemblyzer_net`, imported when a checkpoint is built.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .packaged import is_installed, packaged_file
from .registry import CheckpointInfo, Family, FrameRule, Provenance, register_family
from .weights import WeightsNotFoundError

PROVENANCE = Provenance(
    package="resemblyzer",
    file="resemblyzer/pretrained.pt",
    licence="Apache-2.0",
    training_data=(
        "VoxCeleb1, VoxCeleb2 and LibriSpeech-other: about 9.6k speakers, mostly English "
        "(its author, resemble-ai/Resemblyzer issue #3)"
    ),
    reference=(
        "Wan et al. 2018, Generalized End-to-End Loss for Speaker Verification (arXiv:1710.10467); "
        "https://github.com/resemble-ai/Resemblyzer"
    ),
)

#: Mel frames every 10 ms, the first centred on the clip's first sample (librosa's centred STFT).
FRAMES = FrameRule(hop_ms=10.0, first_center_ms=0.0)

CHECKPOINTS = {
    "pretrained": CheckpointInfo(
        feature_dim=256,
        num_states=4,
        description="GE2E speaker encoder (Resemblyzer): 3 LSTM layers of 256 and the speaker projection",
        hop_ms=FRAMES.hop_ms,
        first_center_ms=FRAMES.first_center_ms,
        provenance=PROVENANCE,
    )
}


def _weights_path(checkpoint: str) -> Path:
    if checkpoint in CHECKPOINTS:
        return packaged_file(PROVENANCE)
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"resemblyzer checkpoint {checkpoint!r} is neither {', '.join(map(repr, CHECKPOINTS))} nor a file"
        )
    return path


def _build(checkpoint: str = "pretrained", **options):
    if options:
        raise ValueError(f"family 'resemblyzer' takes no options, got {sorted(options)}")
    path = _weights_path(checkpoint)
    from .resemblyzer_net import ResemblyzerUpstream, SpeakerEncoder

    try:
        encoder = SpeakerEncoder.from_file(path)
    except ValueError as error:
        raise ConfigError(f"resemblyzer checkpoint {path} is not a Resemblyzer voice encoder file: {error}") from None
    return ResemblyzerUpstream(encoder)


def _is_available(checkpoint: str) -> bool:
    return is_installed(PROVENANCE) if checkpoint in CHECKPOINTS else Path(checkpoint).expanduser().is_file()


RESEMBLYZER = register_family(
    Family(
        name="resemblyzer",
        build=_build,
        is_available=_is_available,
        checkpoints=CHECKPOINTS,
        description="GE2E speaker encoder (Resemblyzer): a 40-band mel into 3 LSTM layers (states: each layer, "
        "the speaker projection)",
        frame_rule=lambda checkpoint, options: FRAMES,  # the mel's frames, whatever the weights
    )
)
