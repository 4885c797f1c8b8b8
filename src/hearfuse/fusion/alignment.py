"""Inter-model alignment: bring every member onto the reference member's frames and width.

The paper (and its code) uses ``F.interpolate(..., mode="linear")`` with PyTorch's
default half-pixel convention (``align_corners=False``): output index ``i`` reads the
input at ``(i + 0.5) * n_in / n_out - 0.5``, clamped to the ends. :func:`stretch` is that,
along any axis; it is applied to time ("stretch" alignment) and, as the paper does, to
the feature axis. :func:`resample_at` is the time-aware alternative: linear interpolation
at the reference frames' centres, using each member's own frame centres.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def stretch(x: Tensor, size: int, dim: int, *, method: str | None = None) -> Tensor:
    """Linearly resample axis ``dim`` of ``x`` to ``size`` points (half-pixel, as F.interpolate).

    ``method``: ``"interpolate"`` (F.interpolate) or ``"matmul"`` (one product with the
    precomputed ``(n_in, size)`` interpolation matrix, :func:`stretch_matrix`). The default picks
    the product on CUDA, where one GEMM replaces F.interpolate's copies into and out of its
    ``(N, 1, n_in)`` layout, and F.interpolate elsewhere: on a CPU the dense product does
    ``n_in / 2`` times the arithmetic of the two-tap sum and is slower.
    """
    if x.shape[dim] == size:
        return x
    if method is None:
        method = "matmul" if x.is_cuda else "interpolate"
    moved = x.movedim(dim, -1)
    if method == "matmul":
        out = moved @ stretch_matrix(moved.shape[-1], size, x.device, x.dtype)
    elif method == "interpolate":
        flat = moved.reshape(-1, 1, moved.shape[-1])
        out = F.interpolate(flat, size=size, mode="linear", align_corners=False).reshape(*moved.shape[:-1], size)
    else:
        raise ValueError(f"method must be 'interpolate' or 'matmul', got {method!r}")
    return out.movedim(-1, dim)


@functools.lru_cache(maxsize=32)
def stretch_matrix(num_source: int, num_target: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """:func:`stretch` from ``num_source`` to ``num_target`` points as a ``(num_source, num_target)``
    matrix (two non-zeros per column), built once per shape, device and precision."""
    linear = stretch_map(num_source, num_target)
    matrix = torch.zeros(num_source, num_target, dtype=torch.float64)
    columns = torch.arange(num_target)
    matrix.index_put_((linear.left, columns), 1 - linear.fraction, accumulate=True)
    matrix.index_put_((linear.right, columns), linear.fraction, accumulate=True)
    return matrix.to(device=device, dtype=dtype)


@dataclass(frozen=True)
class LinearMap:
    """Linear interpolation from ``num_source`` frames: target ``i`` is
    ``(1 - fraction[i]) * x[left[i]] + fraction[i] * x[right[i]]``.

    Keeping the map explicit lets scene pooling pull its weights back onto a member's own
    frames (:meth:`pull_back`) instead of materialising the aligned sequence.
    """

    left: Tensor
    right: Tensor
    fraction: Tensor
    num_source: int

    def apply(self, x: Tensor) -> Tensor:
        """Interpolate ``x`` ``(n, num_source, C)`` to ``(n, num_target, C)``."""
        if self.is_identity:
            return x
        fraction = self.fraction.to(x.device, x.dtype)[None, :, None]
        return torch.lerp(x[:, self.left.to(x.device)], x[:, self.right.to(x.device)], fraction)

    @property
    def is_identity(self) -> bool:
        return (
            len(self.left) == self.num_source
            and torch.equal(self.left, torch.arange(self.num_source))
            and not bool(self.fraction.any())
        )

    def pull_back(self, weights: Tensor) -> Tensor:
        """Weights ``(G, num_target)`` over target frames as weights ``(G, num_source)`` over source frames.

        ``weights @ map(x) == map.pull_back(weights) @ x`` for every ``x``.
        """
        weights = weights.to(torch.float64)
        source = torch.zeros(weights.shape[0], self.num_source, dtype=torch.float64)
        source.index_add_(1, self.left, weights * (1 - self.fraction))
        source.index_add_(1, self.right, weights * self.fraction)
        return source


def stretch_map(num_source: int, num_target: int) -> LinearMap:
    """:func:`stretch` along time as a :class:`LinearMap` (PyTorch's half-pixel rule, clamped)."""
    position = ((torch.arange(num_target, dtype=torch.float64) + 0.5) * num_source / num_target - 0.5).clamp_min(0)
    left = position.floor().long().clamp_max(num_source - 1)
    right = (left + 1).clamp_max(num_source - 1)
    return LinearMap(left, right, position - left, num_source)


def timestamp_map(source_ms: Tensor, target_ms: Tensor) -> LinearMap:
    """Interpolation from frames centred at ``source_ms`` to ``target_ms``; outside the source
    range the nearest end frame (like ``numpy.interp``)."""
    source = source_ms.to(torch.float64).cpu()
    target = target_ms.to(torch.float64).cpu().clamp(source[0], source[-1])
    if len(source) == 1:
        zeros = torch.zeros(len(target), dtype=torch.long)
        return LinearMap(zeros, zeros, torch.zeros(len(target), dtype=torch.float64), 1)
    right = torch.searchsorted(source, target, right=True).clamp(1, len(source) - 1)
    left = right - 1
    fraction = (target - source[left]) / (source[right] - source[left])
    return LinearMap(left, right, fraction, len(source))


def resample_at(x: Tensor, source_ms: Tensor, target_ms: Tensor) -> Tensor:
    """Linear interpolation of ``x`` ``(n, T, C)`` from frames at ``source_ms`` to ``target_ms``."""
    return timestamp_map(source_ms, target_ms).apply(x)
