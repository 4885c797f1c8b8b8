"""Scene pooling: from a frame sequence ``(n, T, D)`` to one vector per clip."""

from __future__ import annotations

import torch
from torch import Tensor


def mean_pool(x: Tensor) -> Tensor:
    """Mean over time, ``(n, D)``: the HEAR baseline scene embedding."""
    return x.mean(dim=1)


def group_pool(x: Tensor, groups: int) -> Tensor:
    """Split time into ``groups`` consecutive groups and concatenate their means, ``(n, groups * D)``.

    With ``T >= groups`` this is the paper's code: the last ``T mod groups`` frames are
    dropped and the rest split into equal groups. With fewer frames than groups (clips
    shorter than about 105 ms for 20 ms frames, where the original crashes) group ``g``
    is the frame at ``floor(g * T / groups)``, so short clips repeat their frames.
    """
    if groups < 1:
        raise ValueError("groups must be >= 1")
    n, frames, width = x.shape
    if frames >= groups:
        usable = frames // groups * groups
        return x[:, :usable].reshape(n, groups, usable // groups, width).mean(dim=2).flatten(1)
    index = torch.div(torch.arange(groups) * frames, groups, rounding_mode="floor").to(x.device)
    return x[:, index].flatten(1)
