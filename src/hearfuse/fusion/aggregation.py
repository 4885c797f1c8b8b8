"""Intra-model aggregation: one frame sequence from a model's hidden states (paper Eq. 1).

Every aggregation is a set of weights over hidden-state indices (0 = the embedding
output fed to the first block, L = the last block's output):

- ``last``: ``{L: 1}``, the plain last hidden state;
- ``mean``: ``1 / (L + 1)`` on every state, the paper's fusion (its code averages all
  L + 1 states returned by ``output_hidden_states``, not the L of Eq. 1);
- ``layers``: the mean of a chosen subset;
- ``weights``: a fixed weighted sum (normalised to sum to 1, so it stays on the scale of a mean).

The weighted sum is accumulated in float32 while the model runs, and the model stops
as soon as the highest needed state has been seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence

if TYPE_CHECKING:  # configs use this module without torch
    from torch import Tensor

    from ..upstream.base import Upstream

AggregationMode = Literal["last", "mean", "layers", "weights"]


@dataclass(frozen=True)
class LayerAggregation:
    mode: AggregationMode = "mean"
    layers: tuple[int, ...] | None = None
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("last", "mean", "layers", "weights"):
            raise ValueError(f"unknown aggregation {self.mode!r}; use last, mean, layers or weights")
        if self.mode == "layers" and not self.layers:
            raise ValueError("aggregation 'layers' needs a non-empty list of layer indices")
        if self.mode == "weights" and not self.weights:
            raise ValueError("aggregation 'weights' needs a list of weights, one per hidden state")
        if self.mode in ("last", "mean") and (self.layers or self.weights):
            raise ValueError(f"aggregation {self.mode!r} takes no layers or weights")
        if self.mode == "layers" and self.weights:
            raise ValueError("aggregation 'layers' takes no weights; use mode 'weights'")
        if self.mode == "weights" and self.layers:
            raise ValueError("aggregation 'weights' takes one weight per state, not layer indices")

    @classmethod
    def parse(cls, spec: "str | LayerAggregation | dict | Sequence[int]") -> "LayerAggregation":
        """Accept ``"mean"``, ``"last"``, a list of layer indices, or ``{"mode": ..., ...}``."""
        if isinstance(spec, LayerAggregation):
            return spec
        if isinstance(spec, str):
            return cls(spec)  # type: ignore[arg-type]
        if isinstance(spec, dict):
            return cls(
                spec.get("mode", "mean"),
                tuple(spec["layers"]) if spec.get("layers") is not None else None,
                tuple(float(w) for w in spec["weights"]) if spec.get("weights") is not None else None,
            )
        return cls("layers", tuple(int(i) for i in spec))

    def to_dict(self) -> dict:
        out: dict = {"mode": self.mode}
        if self.layers is not None:
            out["layers"] = list(self.layers)
        if self.weights is not None:
            out["weights"] = list(self.weights)
        return out

    def state_weights(self, num_states: int) -> dict[int, float]:
        """Weight of each hidden-state index used, for a model with ``num_states`` states."""
        if self.mode == "last":
            return {num_states - 1: 1.0}
        if self.mode == "mean":
            return {index: 1.0 / num_states for index in range(num_states)}
        if self.mode == "layers":
            indices = sorted({_check_index(i, num_states) for i in self.layers or ()})
            return {index: 1.0 / len(indices) for index in indices}
        weights = self.weights or ()
        if len(weights) != num_states:
            raise ValueError(f"aggregation weights has {len(weights)} values but the model has {num_states} states")
        total = sum(weights)
        if total == 0:
            raise ValueError("aggregation weights sum to zero")
        return {index: w / total for index, w in enumerate(weights) if w != 0}


def _check_index(index: int, num_states: int) -> int:
    if not -num_states <= index < num_states:
        raise ValueError(f"layer index {index} is out of range for a model with {num_states} hidden states")
    return index % num_states


def aggregate(upstream: Upstream, audio: Tensor, aggregation: LayerAggregation, *, scene: bool = False) -> Tensor:
    """Run ``upstream`` on ``audio`` and return the aggregated ``(n, frames, features)`` in float32."""
    return aggregate_each(upstream, audio, [aggregation], scene=scene)[0]


def aggregate_each(
    upstream: Upstream,
    audio: Tensor,
    aggregations: Sequence[LayerAggregation],
    *,
    scene: bool = False,
    lengths: Tensor | None = None,
) -> list[Tensor]:
    """Several aggregations of the same states from one run of ``upstream`` (layer-wise analysis
    asks for every state at once); each is accumulated exactly as :func:`aggregate` would.
    ``lengths``: rows of different lengths, for upstreams with ``mixed_lengths``."""
    weights = [aggregation.state_weights(upstream.num_states) for aggregation in aggregations]
    needed = frozenset(index for each in weights for index in each)
    last_needed = max(needed)
    totals: list[Tensor | None] = [None] * len(weights)

    def visit(index: int, hidden: Tensor) -> bool:
        if index in needed:
            hidden = hidden.float()
            for position, each in enumerate(weights):
                weight = each.get(index)
                if weight is not None:
                    total = totals[position]
                    totals[position] = hidden * weight if total is None else total.add_(hidden, alpha=weight)
        return index >= last_needed

    if lengths is None:  # upstreams written before mixed-length batches need not know the keyword
        upstream.visit_states(audio, visit, scene=scene, needed=needed)
    else:
        upstream.visit_states(audio, visit, scene=scene, needed=needed, lengths=lengths)
    for position, total in enumerate(totals):
        if total is None:
            raise RuntimeError(f"{type(upstream).__name__} produced no hidden state {max(weights[position])}")
    return totals  # type: ignore[return-value]
