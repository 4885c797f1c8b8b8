"""Inter-model alignment: bring every member onto the reference member's frames and width.

The paper (and its code) uses ``F.interpolate(..., mode="linear")`` with PyTorch's
default half-pixel convention (``align_corners=False``): output index ``i`` reads the
input at ``(i + 0.5) * n_in / n_out - 0.5``, clamped to the ends. :func:`stretch` is that,
along any axis; it is applied to time ("stretch" alignment) and, as the paper does, to
the feature axis. :func:`resample_at` is the time-aware alternative: linear interpolation
at the reference frames' centres, using each member's own frame centres.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def stretch(x: Tensor, size: int, dim: int) -> Tensor:
    """Linearly resample axis ``dim`` of ``x`` to ``size`` points (half-pixel, as F.interpolate)."""
    if x.shape[dim] == size:
        return x
    moved = x.movedim(dim, -1)
    flat = moved.reshape(-1, 1, moved.shape[-1])
    out = F.interpolate(flat, size=size, mode="linear", align_corners=False)
    return out.reshape(*moved.shape[:-1], size).movedim(-1, dim)


def resample_at(x: Tensor, source_ms: Tensor, target_ms: Tensor) -> Tensor:
    """Linear interpolation of ``x`` ``(n, T, C)`` from frames at ``source_ms`` to ``target_ms``.

    Values outside the source range take the nearest end frame (like ``numpy.interp``).
    """
    source = source_ms.to(torch.float64)
    target = target_ms.to(torch.float64).clamp(source[0], source[-1])
    if len(source) == 1:
        return x[:, :1].expand(-1, len(target), -1)
    right = torch.searchsorted(source, target, right=True).clamp(1, len(source) - 1)
    left = right - 1
    fraction = ((target - source[left]) / (source[right] - source[left])).to(x.dtype).to(x.device)
    left, right = left.to(x.device), right.to(x.device)
    return torch.lerp(x[:, left], x[:, right], fraction[None, :, None])
