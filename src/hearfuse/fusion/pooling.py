"""Scene pooling: from a frame sequence ``(n, T, D)`` to one vector per clip.

Every pooling here is a fixed linear map over time, given as a ``(groups, T)`` weight
matrix. Writing it that way lets :class:`hearfuse.FusionModel` pool a long clip window by
window (and pull the weights back through the linear time alignment onto each member's own
frames), so scene embeddings of an hour of audio never hold the hour's frames in memory.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pooling_weights(num_frames: int, groups: int = 1) -> Tensor:
    """``(groups, num_frames)`` float64 weights of the scene pooling over ``num_frames`` frames.

    ``groups=1`` is the mean over time (the HEAR baseline). With ``num_frames >= groups`` a
    row per group is the paper's code: the last ``num_frames mod groups`` frames are dropped
    and the rest split into equal consecutive groups. With fewer frames than groups (clips
    shorter than about 105 ms for 20 ms frames, where the original crashes) group ``g`` is
    the frame at ``floor(g * num_frames / groups)``, so short clips repeat their frames.
    """
    if groups < 1:
        raise ValueError("groups must be >= 1")
    if num_frames < 1:
        raise ValueError("pooling needs at least one frame")
    weights = torch.zeros(groups, num_frames, dtype=torch.float64)
    if num_frames >= groups:
        size = num_frames // groups
        for group in range(groups):
            weights[group, group * size : (group + 1) * size] = 1.0 / size
    else:
        weights[torch.arange(groups), torch.arange(groups) * num_frames // groups] = 1.0
    return weights


def pool(x: Tensor, weights: Tensor) -> Tensor:
    """``(n, groups, D)`` weighted sums of ``x`` ``(n, T, D)`` over time, at least float32 even under autocast."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    with torch.autocast(x.device.type, enabled=False):
        return torch.einsum("gt,ntd->ngd", weights.to(x.device, dtype), x.to(dtype))


def mean_pool(x: Tensor) -> Tensor:
    """Mean over time, ``(n, D)``."""
    return pool(x, pooling_weights(x.shape[1])).flatten(1)


def group_pool(x: Tensor, groups: int) -> Tensor:
    """The ``groups`` group means of :func:`pooling_weights`, concatenated: ``(n, groups * D)``."""
    return pool(x, pooling_weights(x.shape[1], groups)).flatten(1)
