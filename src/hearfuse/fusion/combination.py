"""Combining aligned members into one embedding."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def concatenate(features: Sequence[Tensor], *, interleave: bool = False) -> Tensor:
    """Concatenate ``(n, T, C_i)`` along features.

    Block order gives ``[a_0..a_C, b_0..b_C, …]``. ``interleave=True`` gives
    ``[a_0, b_0, c_0, a_1, …]`` as the paper's released code did (``stack`` + ``flatten``);
    the two differ only by a fixed permutation, and interleaving needs equal widths.
    """
    if not interleave:
        return torch.cat(list(features), dim=-1)
    widths = {f.shape[-1] for f in features}
    if len(widths) != 1:
        raise ValueError(f"interleaved concatenation needs equal feature sizes, got {sorted(widths)}")
    return torch.stack(list(features), dim=-1).flatten(-2)


def average(features: Sequence[Tensor]) -> Tensor:
    """Element-wise mean of equally shaped ``(n, T, C)`` members."""
    shapes = {tuple(f.shape) for f in features}
    if len(shapes) != 1:
        raise ValueError(f"averaging needs members of equal shape, got {sorted(shapes)}; align features first")
    return torch.stack(list(features)).mean(dim=0)


#: Frames whose block has (almost) no spread keep it at zero instead of blowing rounding noise up.
_TINY_NORM = 1e-12


def equal_blocks(features: Sequence[Tensor]) -> list[Tensor]:
    """Each member's block ``(…, C_i)`` centred over its features and scaled to unit norm, row by row (a
    frame, or a scene group): standardised per row, then divided by ``sqrt(C_i)``. Every member then weighs
    the same in a concatenation or an average, whatever its width or the scale of its activations. A probe
    that standardises every input column (the linear probe) undoes per-column scales but not this per-row
    one; one that does not (the kit's MLP, kNN) sees the blocks at equal norm."""
    blocks = []
    for block in features:
        centred = block - block.mean(dim=-1, keepdim=True)
        blocks.append(centred / centred.norm(dim=-1, keepdim=True).clamp_min(_TINY_NORM))
    return blocks
