"""Basic Pitch (Bittner et al., ICASSP 2022), Spotify's instrument-agnostic note transcriber, as an upstream.

Weights: the ONNX export ``basic_pitch/saved_models/icassp_2022/nmp.onnx`` that the ``basic-pitch`` wheel
ships (Apache-2.0). Its tensors, the CQT kernels included, are read with the ``onnx`` package when a
checkpoint is built; hearfuse never imports basic_pitch (its metadata pulls TensorFlow) and never runs
onnxruntime to embed: the network is hearfuse's own torch code (:mod:`hearfuse.upstream.basic_pitch_net`,
imported when a checkpoint is built). onnxruntime is the reference in the tests.

This module is the family's registry entry and needs no torch.
"""

from __future__ import annotations

from pathlib import Path

from .packaged import is_installed, packaged_file
from .registry import CheckpointInfo, Family, Provenance, register_family
from .weights import WeightsNotFoundError

PROVENANCE = Provenance(
    package="basic-pitch",
    file="basic_pitch/saved_models/icassp_2022/nmp.onnx",
    licence="Apache-2.0",
    training_data="GuitarSet, iKala, MAESTRO, MedleyDB-Pitch and Slakh (guitar, vocals, piano, multi-instrument "
    "stems and synthesized MIDI)",
    reference="Bittner, Bosch, Rubinstein, Meseguer-Brocal, Ewert: A Lightweight Instrument-Agnostic Model for "
    "Polyphonic Note Transcription and Multipitch Estimation, ICASSP 2022 (arXiv:2203.09893)",
)

CHECKPOINTS = {
    "icassp_2022": CheckpointInfo(
        feature_dim=88,
        num_states=7,
        description="Basic Pitch (ICASSP 2022): harmonic CQT, contour, note and onset maps per piano key",
        # 256 samples at 22,050 Hz, from the clip's start (basic_pitch_net; the tests hold the two equal)
        hop_ms=1000 * 256 / 22050,
        first_center_ms=0.0,
        sample_rate=22050,
        provenance=PROVENANCE,
    )
}


def _weights_file(checkpoint: str) -> Path:
    if checkpoint in CHECKPOINTS:
        return packaged_file(PROVENANCE)
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"Basic Pitch checkpoint {checkpoint!r} is neither {', '.join(CHECKPOINTS)} (from the basic-pitch "
            "package) nor an ONNX file of its network"
        )
    return path


def _build(checkpoint: str = "icassp_2022", **options):
    """``checkpoint``: ``icassp_2022`` (the packaged ONNX file) or the path of an ONNX file of the same network."""
    if options:
        raise ValueError(f"family 'basic_pitch' takes no options, got {sorted(options)}")
    path = _weights_file(checkpoint)
    from .basic_pitch_net import BasicPitchNet, BasicPitchUpstream

    return BasicPitchUpstream(BasicPitchNet.from_onnx(path))


def _is_available(checkpoint: str) -> bool:
    return is_installed(PROVENANCE) if checkpoint in CHECKPOINTS else Path(checkpoint).expanduser().is_file()


BASIC_PITCH = register_family(
    Family(
        name="basic_pitch",
        build=_build,
        is_available=_is_available,
        checkpoints=CHECKPOINTS,
        description="Basic Pitch note transcriber (states: harmonic CQT, contour, note and onset maps, per piano key)",
    )
)
