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
from typing import Any, Literal, Mapping

from .fusion.aggregation import LayerAggregation
from .fusion.combination import CombineMode
from .fusion.windowing import Windowing

Normalize = Literal["none", "checkpoint", "always"]
TimeAlignment = Literal["stretch", "timestamps"]
FeatureAlignment = Literal["interpolate", "none"]

#: Default long-audio window, chosen from the deviation measurement in the README
#: ("Long audio"); see ``benchmarks/window_deviation.py``.
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
        if self.normalize not in ("none", "checkpoint", "always"):
            raise ValueError(f"member {self.name!r}: normalize must be none, checkpoint or always")

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
    def from_dict(cls, data: Mapping[str, Any]) -> "MemberConfig":
        _reject_unknown(cls, data, "member")
        for key in ("name", "family", "checkpoint"):
            if key not in data:
                raise ValueError(f"a member needs {key!r}: {dict(data)}")
        return cls(
            name=str(data["name"]),
            family=str(data["family"]),
            checkpoint=str(data["checkpoint"]),
            aggregation=LayerAggregation.parse(data.get("aggregation", "last")),
            normalize=data.get("normalize", "none"),
            options=dict(data.get("options", {})),
        )


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
    #: Long clips are embedded in windows of this length (None = always full context).
    window_seconds: float | None = DEFAULT_WINDOW.window_seconds
    window_context_seconds: float = DEFAULT_WINDOW.context_seconds

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError(f"fusion {self.name!r} has no members")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"fusion {self.name!r}: member names must be unique, got {names}")
        if self.reference is not None and self.reference not in names:
            raise ValueError(f"fusion {self.name!r}: reference {self.reference!r} is not a member ({names})")
        if self.combine not in ("cat", "avg"):
            raise ValueError(f"fusion {self.name!r}: combine must be 'cat' or 'avg'")
        if self.time_alignment not in ("stretch", "timestamps"):
            raise ValueError(f"fusion {self.name!r}: time_alignment must be 'stretch' or 'timestamps'")
        if self.feature_alignment not in ("interpolate", "none"):
            raise ValueError(f"fusion {self.name!r}: feature_alignment must be 'interpolate' or 'none'")
        if self.interleave and self.combine != "cat":
            raise ValueError(f"fusion {self.name!r}: interleave only applies to combine='cat'")
        if self.scene_groups < 1:
            raise ValueError(f"fusion {self.name!r}: scene_groups must be >= 1")
        if self.feature_dim is not None and self.feature_dim < 1:
            raise ValueError(f"fusion {self.name!r}: feature_dim must be >= 1")
        if self.window_seconds is not None:
            Windowing(self.window_seconds, self.window_context_seconds)

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

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["members"] = [m.to_dict() for m in self.members]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FusionConfig":
        _reject_unknown(cls, data, "fusion config")
        if "members" not in data or not isinstance(data["members"], (list, tuple)):
            raise ValueError("a fusion config needs a list of 'members'")
        values = {k: v for k, v in data.items() if k != "members"}
        values.setdefault("name", "custom")
        return cls(members=tuple(MemberConfig.from_dict(m) for m in data["members"]), **values)

    @classmethod
    def load(cls, path: str | Path) -> "FusionConfig":
        """Read a ``.toml`` or ``.json`` fusion config; relative checkpoint paths resolve from the file."""
        path = Path(path)
        text = path.read_text()
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ValueError(f"fusion config {path} must be a .toml or .json file")
        data.setdefault("name", path.stem)
        for member in data.get("members", []):
            checkpoint = str(member.get("checkpoint", ""))
            if checkpoint.startswith("."):
                member["checkpoint"] = str((path.parent / checkpoint).resolve())
        return cls.from_dict(data)

    def fingerprint(self) -> str:
        """Short hash of everything that changes the embeddings: not the name, and not the options a
        member's family declares performance-only (CREPE's ``frame_batch``)."""
        from .upstream import families

        registered = families()
        data = self.to_dict()
        data.pop("name")
        for member in data["members"]:
            family = registered.get(member["family"])
            skip = family.performance_options if family else frozenset()
            member["options"] = {k: v for k, v in member["options"].items() if k not in skip}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _reject_unknown(cls: type, data: Mapping[str, Any], what: str) -> None:
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} keys {sorted(unknown)}; expected some of {[f.name for f in fields(cls)]}")
