"""Fusion configs: everything that defines a representation, as plain data.

A config names its members (family + checkpoint + aggregation), how they are aligned
and combined, and how scene embeddings are pooled. It round-trips through
``to_dict``/``from_dict`` and loads from TOML or JSON, so presets, config files and the
command line all build models the same way. ``fingerprint()`` identifies the
representation for caches (it ignores nothing that changes the numbers).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Mapping, get_args

from .errors import ConfigError
from .files import write_text_atomic
from .fusion.aggregation import LayerAggregation
from .fusion.windowing import Windowing
from .upstream.registry import Option

# The values each string setting accepts, stated once: the type hints below, and through
# _FUSION_FIELDS / _MEMBER_FIELDS (``get_args``) the checks and their messages.
Normalize = Literal["none", "checkpoint", "always"]
CombineMode = Literal["cat", "avg"]
TimeAlignment = Literal["stretch", "timestamps"]
FeatureAlignment = Literal["interpolate", "none"]
MemberWeighting = Literal["none", "equal"]

#: Longest window a config may ask for (a day): far above any use, and finite arithmetic.
MAX_WINDOW_SECONDS = 86400.0

#: Default long-audio window, chosen from the deviation measurement in docs/guide/long-audio.md; see
#: ``benchmarks/window_deviation.py``.
DEFAULT_WINDOW = Windowing(window_seconds=30.0, context_seconds=5.0)


@dataclass(frozen=True)
class MemberConfig:
    """One upstream model inside a fusion."""

    name: str
    family: str
    checkpoint: str
    aggregation: LayerAggregation = LayerAggregation("last")
    #: Waveform normalisation before the model: never (the paper), as the checkpoint's
    #: feature extractor says, or always (zero mean, unit variance per clip).
    normalize: Normalize = "none"
    #: Family-specific options (CREPE: hop_ms, scene_hop_ms, first_center_ms, frame_batch).
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_fields(_settings(self), _MEMBER_FIELDS, f"member {self.name!r}")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "checkpoint": self.checkpoint,
            "aggregation": self.aggregation.to_dict(),
            "normalize": self.normalize,
            "options": dict(self.options),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "member") -> "MemberConfig":
        """Build from plain data, checking every key's type and each option against its family."""
        from .upstream import families

        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: must be a table of member settings, got {data!r}")
        _reject_unknown(cls, data, where)
        for key in ("name", "family", "checkpoint"):
            if key not in data:
                raise ConfigError(f"{where}: needs {key!r}")
        _check_fields(data, _MEMBER_FIELDS, where)  # named by where, and before the family is looked up
        family = families().get(data["family"])
        if family is None:
            known = ", ".join(sorted(families()))
            raise ConfigError(f"{where}.family: unknown family {data['family']!r}; known: {known}")
        options = data.get("options", {})
        if not isinstance(options, Mapping):
            raise ConfigError(f"{where}.options: must be a table, got {options!r}")
        unknown = sorted(set(options) - set(family.options))
        if unknown:
            accepted = ", ".join(family.options) or "none"
            raise ConfigError(
                f"{where}.options: unknown option(s) {unknown} for family {family.name!r}; accepted: {accepted}"
            )
        _check_fields(options, family.options, f"{where}.options")
        try:
            aggregation = LayerAggregation.parse(data.get("aggregation", "last"))
        except (ValueError, TypeError, KeyError) as error:
            raise ConfigError(f"{where}.aggregation: {error}") from None
        try:
            return cls(
                name=data["name"],
                family=data["family"],
                checkpoint=data["checkpoint"],
                aggregation=aggregation,
                normalize=data.get("normalize", "none"),
                options=dict(options),
            )
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None


@dataclass(frozen=True)
class FusionConfig:
    """A fused representation: members, alignment, combination and scene pooling."""

    name: str
    members: tuple[MemberConfig, ...]
    #: Member whose frames (timestamps) and width the others are aligned to; default: the first.
    reference: str | None = None
    combine: CombineMode = "cat"
    #: Interleave concatenated features ``[a0, b0, c0, a1, …]`` as the paper's released code.
    interleave: bool = False
    #: Interpolate every member's feature axis to ``feature_dim`` (the paper), or keep native widths.
    feature_alignment: FeatureAlignment = "interpolate"
    #: Width members are interpolated to; default: the reference member's.
    feature_dim: int | None = None
    #: "stretch": resample each member's frame index onto the reference's (the paper);
    #: "timestamps": interpolate at the reference frame centres using each member's own.
    time_alignment: TimeAlignment = "timestamps"
    #: Scene embedding = concatenated means of this many consecutive time groups (1 = plain mean).
    scene_groups: int = 1
    #: "none": members as aligned (the paper); "equal": each member's block, after width alignment,
    #: centred and scaled to unit norm in every frame (each scene group), so that no member outweighs
    #: another by its width or the scale of its activations (:func:`~.fusion.combination.equal_blocks`).
    member_weighting: MemberWeighting = "none"
    #: Long clips are embedded in windows of this length (None = always full context).
    window_seconds: float | None = DEFAULT_WINDOW.window_seconds
    window_context_seconds: float = DEFAULT_WINDOW.context_seconds

    def __post_init__(self) -> None:
        _check_fields(_settings(self), _FUSION_FIELDS, f"fusion {self.name!r}")
        if not self.members:
            raise ConfigError(f"fusion {self.name!r} has no members")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ConfigError(f"fusion {self.name!r}: member names must be unique, got {names}")
        if self.reference is not None and self.reference not in names:
            raise ConfigError(f"fusion {self.name!r}: reference {self.reference!r} is not a member ({names})")
        if self.interleave and self.combine != "cat":
            raise ConfigError(f"fusion {self.name!r}: interleave only applies to combine='cat'")
        if self.window_seconds is not None:
            try:
                Windowing(self.window_seconds, self.window_context_seconds)
            except ValueError as error:
                raise ConfigError(f"window_seconds / window_context_seconds: {error}") from None

    @property
    def reference_member(self) -> MemberConfig:
        return next(m for m in self.members if m.name == (self.reference or self.members[0].name))

    @property
    def windowing(self) -> Windowing | None:
        return None if self.window_seconds is None else Windowing(self.window_seconds, self.window_context_seconds)

    def aligned_widths(self, native: Mapping[str, int]) -> list[int]:
        """Each member's width after feature alignment, in member order."""
        if self.feature_alignment == "none":
            return [native[m.name] for m in self.members]
        target = self.feature_dim or native[self.reference_member.name]
        return [target] * len(self.members)

    def embedding_sizes(self, native: Mapping[str, int]) -> tuple[int, int]:
        """(timestamp, scene) embedding sizes given each member's native width."""
        widths = self.aligned_widths(native)
        if self.combine == "avg" and len(set(widths)) != 1:
            raise ValueError(
                f"fusion {self.name!r}: averaging members of widths {widths} needs feature_alignment='interpolate'"
            )
        if self.interleave and len(set(widths)) != 1:
            raise ValueError(f"fusion {self.name!r}: interleaving members of widths {widths} needs equal widths")
        timestamp = sum(widths) if self.combine == "cat" else widths[0]
        return timestamp, timestamp * self.scene_groups

    def with_options(self, **changes: Any) -> "FusionConfig":
        """A copy with some top-level fields changed (e.g. ``time_alignment="timestamps"``)."""
        return replace(self, **changes)

    def with_aggregations(self, aggregations: Mapping[str, LayerAggregation]) -> "FusionConfig":
        """A copy in which the named members aggregate their states as given."""
        unknown = sorted(set(aggregations) - {m.name for m in self.members})
        if unknown:
            raise ConfigError(f"fusion {self.name!r} has no member(s) {unknown}")
        members = tuple(
            replace(m, aggregation=LayerAggregation.parse(aggregations[m.name])) if m.name in aggregations else m
            for m in self.members
        )
        return replace(self, members=members)

    def solo(self, member: str) -> "FusionConfig":
        """One member alone, on its own frames and width, with this fusion's windowing and scene
        pooling: what layer-wise analysis probes, member by member. Named ``<fusion>.<member>``."""
        chosen = [m for m in self.members if m.name == member]
        if not chosen:
            raise ConfigError(
                f"fusion {self.name!r} has no member {member!r}; members: {[m.name for m in self.members]}"
            )
        return replace(
            self,
            name=f"{self.name}.{member}",
            members=(chosen[0],),
            reference=None,
            combine="cat",
            interleave=False,
            feature_dim=None,
            member_weighting="none",
        )

    def save(self, path: str | Path) -> Path:
        """Write as ``.toml`` or ``.json`` (what :meth:`load` reads back to an equal config). TOML has
        no null: a field that is None where its default is not (no windowing) needs ``.json``."""
        path = Path(path)
        data = self.to_dict()
        if path.suffix == ".json":
            text = json.dumps(data, indent=2) + "\n"
        elif path.suffix == ".toml":
            import tomli_w

            defaults = {f.name: f.default for f in fields(self)}
            for key in [k for k, v in data.items() if v is None]:
                if defaults.get(key) is not None:
                    raise ConfigError(f"{path}: {key} = None cannot be written in TOML; save the config as .json")
                del data[key]
            for member in data["members"]:
                member["options"] = {k: v for k, v in member["options"].items() if v is not None}
            text = tomli_w.dumps(data)
        else:
            raise ConfigError(f"fusion config {path} must be a .toml or .json file")
        write_text_atomic(path, text)
        return path

    def to_dict(self) -> dict:
        data = _settings(self)
        if data["member_weighting"] == "none":  # at its default, left out: configs and fingerprints written
            del data["member_weighting"]  # before the setting existed stay what they were
        data["members"] = [m.to_dict() for m in self.members]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "fusion config") -> "FusionConfig":
        """Build from plain data. Every key is checked here, in one place, before anything is built:
        types (a bool is a bool, an integer an integer), ranges, and each member's options against
        those its family declares; a :class:`ConfigError` names ``where`` and the key."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: must be a table of settings")
        _reject_unknown(cls, data, where)
        members = data.get("members")
        if not isinstance(members, (list, tuple)) or not members:
            raise ConfigError(f"{where}: members: must be a non-empty list of member tables ([[members]] in TOML)")
        _check_fields(data, _FUSION_FIELDS, where)  # named by where, not by the fusion's name
        values = {k: v for k, v in data.items() if k != "members"}
        values.setdefault("name", "custom")
        built = tuple(MemberConfig.from_dict(m, f"{where}: members[{i}]") for i, m in enumerate(members))
        try:
            return cls(members=built, **values)
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None

    @classmethod
    def load(cls, path: str | Path) -> "FusionConfig":
        """Read a ``.toml`` or ``.json`` fusion config; relative checkpoint paths resolve from the file."""
        path = Path(path)
        if path.suffix not in (".toml", ".json"):
            raise ConfigError(f"fusion config {path} must be a .toml or .json file")
        try:
            text = path.read_text()
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except FileNotFoundError:
            raise ConfigError(f"fusion config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"fusion config {path}: cannot be read: {error}") from None
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"fusion config {path}: not valid {path.suffix[1:].upper()}: {error}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"fusion config {path}: must hold a table of settings")
        data.setdefault("name", path.stem)
        for member in data.get("members", []) if isinstance(data.get("members"), list) else []:
            checkpoint = member.get("checkpoint") if isinstance(member, dict) else None
            if isinstance(checkpoint, str) and checkpoint.startswith("."):
                member["checkpoint"] = str((path.parent / checkpoint).resolve())
        return cls.from_dict(data, where=str(path))

    def fingerprint(self) -> str:
        """Short hash of everything that changes the embeddings: not the name, and not the options a
        member's family declares performance-only (CREPE's ``frame_batch``). A checkpoint that a package ships
        counts with the installed release of that package (its weights may change between releases)."""
        from .upstream import families
        from .upstream.packaged import installed_version

        registered = families()
        data = self.to_dict()
        data.pop("name")
        for member in data["members"]:
            family = registered.get(member["family"])
            skip = family.performance_options if family else frozenset()
            member["options"] = {k: v for k, v in member["options"].items() if k not in skip}
            info = family.checkpoints.get(member["checkpoint"]) if family else None
            if info is not None and info.provenance is not None:
                member["weights"] = installed_version(info.provenance)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _settings(config: MemberConfig | FusionConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(config)}


def _reject_unknown(cls: type, data: Mapping[str, Any], where: str) -> None:
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; expected some of {[f.name for f in fields(cls)]}"
        )


#: The type, range or choices of every setting, checked whenever a config is built (from a file or in Python).
_FUSION_FIELDS = {
    "name": Option(str),
    "reference": Option(str, nullable=True),
    "combine": Option(str, choices=get_args(CombineMode)),
    "interleave": Option(bool),
    "feature_alignment": Option(str, choices=get_args(FeatureAlignment)),
    "feature_dim": Option(int, minimum=1, nullable=True),
    "time_alignment": Option(str, choices=get_args(TimeAlignment)),
    "scene_groups": Option(int, minimum=1),
    "member_weighting": Option(str, choices=get_args(MemberWeighting)),
    "window_seconds": Option(float, minimum=0, above_minimum=True, maximum=MAX_WINDOW_SECONDS, nullable=True),
    "window_context_seconds": Option(float, minimum=0, maximum=MAX_WINDOW_SECONDS),
}
_MEMBER_FIELDS = {
    "name": Option(str),
    "family": Option(str),
    "checkpoint": Option(str),
    "normalize": Option(str, choices=get_args(Normalize)),
}


def _check_fields(data: Mapping[str, Any], spec: Mapping[str, Option], where: str) -> None:
    for key, option in spec.items():
        if key in data:
            problem = option.problem(data[key])
            if problem:
                raise ConfigError(f"{where}: {key} {problem}")
