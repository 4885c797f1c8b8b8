"""The one small protocol every upstream model family implements.

An *upstream* is a pretrained network seen as a stack of frame-level hidden states
(s3prl's vocabulary). It does not decide how those states are combined: it streams
them, one at a time, to a visitor. That keeps "run the model" apart from "combine its
layers" and lets the layer mean be accumulated while the model runs, so memory does
not grow with depth.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import Tensor, nn

#: Called with ``(state_index, hidden_state)`` for every hidden state, in order.
#: ``hidden_state`` is ``(n_sounds, n_frames, n_features)``. Returning ``True`` tells
#: the upstream that no later state is needed, so it may stop computing.
StateVisitor = Callable[[int, Tensor], bool]


class Upstream(nn.Module, ABC):
    """A pretrained model that turns 16 kHz waveforms into frame-level hidden states."""

    #: Sample rate the model was trained on, in Hz.
    sample_rate: int = 16000
    #: Number of hidden states :meth:`visit_states` produces (L + 1 for an L-block transformer).
    num_states: int
    #: Size of each hidden state's feature axis.
    feature_dim: int
    #: True when a frame's value depends on the whole input (self-attention): long inputs are
    #: then windowed with context. False when frames are computed independently (CREPE):
    #: windows then need only one receptive field of overlap and are exact.
    context_dependent: bool
    #: Frame hop in samples (for timestamp embeddings).
    hop_samples: int
    #: Samples that one frame sees; inputs shorter than this still produce one frame.
    receptive_field: int
    #: Whether the checkpoint was trained on zero-mean, unit-variance waveforms.
    expects_normalized_waveform: bool = False

    @abstractmethod
    def frame_centers_ms(self, num_samples: int, *, scene: bool = False) -> Tensor:
        """Centres, in ms, of the frames produced for a clip of ``num_samples`` (float64)."""

    @abstractmethod
    def visit_states(self, audio: Tensor, visit: StateVisitor, *, scene: bool = False) -> None:
        """Run the model on ``audio`` ``(n, samples)`` and hand each hidden state to ``visit``.

        ``scene=True`` lets a family use a coarser frame rate for scene embeddings
        (the paper runs CREPE at a 250 ms hop there); most families ignore it.
        """

    def frame_hop_samples(self, *, scene: bool = False) -> int:
        """Samples between consecutive frames of the given kind."""
        return self.hop_samples

    @property
    def scene_frames_differ(self) -> bool:
        """Whether ``scene=True`` produces other frames (so a timestamp pass cannot be reused)."""
        return self.frame_hop_samples(scene=True) != self.frame_hop_samples()

    def hidden_states(self, audio: Tensor, *, scene: bool = False) -> list[Tensor]:
        """All hidden states as a list (convenient for analysis; uses memory per layer)."""
        states: list[Tensor] = []
        self.visit_states(audio, lambda _, h: states.append(h) or False, scene=scene)
        return states


@dataclass(frozen=True)
class CheckpointInfo:
    """What is known about a published checkpoint without loading it."""

    feature_dim: int
    num_states: int
    description: str = ""
    hop_ms: float = 20.0


@dataclass(frozen=True)
class Option:
    """One option a family's ``build`` accepts: its type and range, checked when a config is loaded."""

    kind: type  # int, float (an int is accepted), bool or str
    minimum: float | None = None
    above_minimum: bool = False  # the minimum itself is excluded
    maximum: float | None = None
    nullable: bool = False
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

    @property
    def performance_options(self) -> frozenset[str]:
        return frozenset(name for name, option in self.options.items() if option.performance_only)


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


def centered_frame_count(num_samples: int, hop: int, first_center: int) -> int:
    """Frames whose centres ``first_center + j * hop`` lie within the clip (at least one)."""
    if num_samples <= first_center:
        return 1
    return (num_samples - first_center) // hop + 1


def module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")
