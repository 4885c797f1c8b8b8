"""1-D convolutions as matrix products on channels-last tensors: the form tensor cores are built for.

cuDNN runs many of the audio models' convolutions (CREPE's, the transformers' strided front ends,
their 128-tap grouped positional convolution) in kernels that miss the tensor cores, and each
`transformers` front-end layer transposes its activations twice around a layer norm. Written as
matrix products on ``(batch, time, channels)`` tensors, the same convolutions are GEMMs and need no
transposes. Two formulations, whichever holds less memory:

- *windows* (im2col): every output step's window, unfolded, times the kernel; a plain reshape
  when the stride equals the kernel;
- *taps*: every tap's kernel applied at every input step in one product (the input read once);
  output step ``t`` sums tap ``j``'s result at input step ``t * stride + j``, a diagonal of the
  ``(step, tap)`` grid read as a strided view. It does ``(T_in / T_out)`` times the arithmetic but
  never copies the input ``k`` times, which is what a 64- or 128-tap kernel on a wide input needs.

Every replacement is selected per call by its module's ``conv_form`` ("auto": matrix products on
CUDA and under reduced precision on a CPU, the reference in float32 on a CPU, where oneDNN's
convolutions are faster) and is tested equal to the reference on CPU in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Reduced precisions under which "auto" takes the matrix products on a CPU too: oneDNN's bfloat16
#: convolutions lose CREPE full's later blocks (64-tap kernels over 256-1024 channels; per-frame cosine
#: to float32 0.88 at pool-2 falling to 0.58 at pool-5, 2026-12-02), where the products keep 1.0000.
_REDUCED = (torch.bfloat16, torch.float16)


def uses_matmul(form: str, x: Tensor) -> bool:
    """Whether ``form`` means matrix products for an input on ``x``'s device: "auto" takes them on CUDA,
    and on a CPU when the convolution would run in reduced precision (autocast or reduced weights)."""
    if form != "auto":
        return form == "matmul"
    if x.is_cuda:
        return True
    autocast = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in _REDUCED
    return autocast or x.dtype in _REDUCED


def conv1d_matmul(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    *,
    stride: int = 1,
    padding: tuple[int, int] = (0, 0),
    groups: int = 1,
    method: str | None = None,
) -> Tensor:
    """``F.conv1d`` of channels-last ``x`` ``(batch, time, in_channels)``: ``(batch, steps, out_channels)``.

    ``method``: "windows" or "taps" (module docstring); default: the one that holds less memory.
    """
    out_channels, group_in, kernel = weight.shape
    if padding != (0, 0):
        x = F.pad(x, (0, 0, *padding))
    batch, length, _ = x.shape
    steps = (length - kernel) // stride + 1
    group_out = out_channels // groups
    # (group, tap, in, out): each group's kernel with taps outermost, matching a window's (tap, channel) order.
    kernels = weight.view(groups, group_out, group_in, kernel).permute(0, 3, 2, 1)
    if method is None:
        method = "windows" if steps * group_in <= length * group_out else "taps"  # which holds less
    if method == "windows":
        windows = x.unfold(1, kernel, stride)[:, :steps]  # (batch, steps, channels, tap)
        windows = windows.view(batch, steps, groups, group_in, kernel).permute(2, 0, 1, 4, 3)
        windows = windows.reshape(groups, batch * steps, kernel * group_in)
        y = windows @ kernels.reshape(groups, kernel * group_in, group_out)  # (group, batch * steps, out)
        y = y.view(groups, batch, steps, group_out)
    elif method == "taps":
        inputs = x.view(batch, length, groups, group_in).permute(2, 0, 1, 3).reshape(groups, batch * length, group_in)
        taps = inputs @ kernels.permute(0, 2, 1, 3).reshape(groups, group_in, kernel * group_out)
        row = kernel * group_out  # one input step's results for all taps
        taps = taps.view(groups, batch, length, kernel, group_out)
        diagonals = taps.as_strided(
            (groups, batch, steps, kernel, group_out),
            (taps.stride(0), taps.stride(1), stride * row, row + group_out, 1),
        )
        y = diagonals.sum(3)
    else:
        raise ValueError(f"method must be 'windows' or 'taps', got {method!r}")
    y = y.permute(1, 2, 0, 3).reshape(batch, steps, out_channels)
    return y if bias is None else y + bias.to(y.dtype)  # as F.conv1d adds it, also under autocast


class _MatmulForm(nn.Module):
    """A `transformers` module computed as matrix products (:meth:`products`) where
    :attr:`conv_form` selects them, else by the original module itself."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.original = original
        self.conv_form = "auto"

    def forward(self, x: Tensor) -> Tensor:
        return self.products(x) if uses_matmul(self.conv_form, x) else self.original(x)

    def products(self, x: Tensor) -> Tensor:
        raise NotImplementedError


class MatmulFeatureEncoder(_MatmulForm):
    """A `transformers` layer-norm convolutional front end, channels-last as matrix products (each
    layer: conv, layer norm over channels, activation; no transposes). Returns ``(batch, channels,
    frames)`` like the original (a transposed view, which the model's own transpose makes
    contiguous again for free)."""

    @staticmethod
    def supports(module: nn.Module) -> bool:
        """Layer-norm front ends only (group-norm ones normalise over time, a different computation)."""
        layers = getattr(module, "conv_layers", None)
        return bool(layers) and all(hasattr(layer, "layer_norm") and hasattr(layer, "conv") for layer in layers)

    def products(self, input_values: Tensor) -> Tensor:
        x = input_values[:, :, None]
        for layer in self.original.conv_layers:
            conv = layer.conv
            x = conv1d_matmul(x, conv.weight, conv.bias, stride=conv.stride[0])
            x = layer.activation(layer.layer_norm(x))
        return x.transpose(1, 2)


class MatmulPositionalConv(_MatmulForm):
    """A `transformers` positional convolution (one grouped convolution, same padding, GELU) on the
    ``(batch, frames, channels)`` hidden states as matrix products, without the original's
    transposes around its convolution."""

    @staticmethod
    def supports(module: nn.Module) -> bool:
        conv = getattr(module, "conv", None)
        return isinstance(conv, nn.Conv1d) and hasattr(module, "padding") and hasattr(module, "activation")

    def products(self, hidden_states: Tensor) -> Tensor:
        conv = self.original.conv
        y = conv1d_matmul(
            hidden_states, conv.weight, conv.bias, padding=(conv.padding[0], conv.padding[0]), groups=conv.groups
        )
        if self.original.padding.num_pad_remove > 0:  # an even kernel yields one step too many
            y = y[:, : -self.original.padding.num_pad_remove]
        return self.original.activation(y)
