"""The one small protocol every upstream model family implements.

An *upstream* is a pretrained network seen as a stack of frame-level hidden states
(s3prl's vocabulary). It does not decide how those states are combined: it streams
them, one at a time, to a visitor. That keeps "run the model" apart from "combine its
layers" and lets the layer mean be accumulated while the model runs, so memory does
not grow with depth.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Collection

import torch
import torch.nn.functional as F
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
    #: Frame hop in samples (for timestamp embeddings); a fraction where the network runs at another
    #: rate on a hop that is no whole number of 16 kHz samples (Basic Pitch: 256 samples at 22,050 Hz).
    hop_samples: int | float
    #: Samples that one frame sees; inputs shorter than this still produce one frame.
    receptive_field: int
    #: The longest input the model takes in one call (Whisper's 30 s, AST's ``max_length`` fbank
    #: frames), or None: longer clips are windowed (:mod:`hearfuse.fusion.windowing`) at most this long.
    max_input_samples: int | None = None
    #: True when the upstream cuts any clip itself into the windows its network was trained on, in bounded
    #: memory (Basic Pitch's 2 s): the fusion's long-audio windowing, which cuts at whole 16 kHz samples
    #: on the frame grid, is not applied to it (Basic Pitch's frames lie on no such grid).
    windows_itself: bool = False
    #: Whether the checkpoint was trained on zero-mean, unit-variance waveforms.
    expects_normalized_waveform: bool = False
    #: Whether clips of different lengths may share a batch: :meth:`visit_states` then takes
    #: ``lengths`` and each clip's states on its own frames equal that clip run alone (within float
    #: tolerance). True where padding cannot leak into real frames: frames computed independently
    #: (CREPE), or per-frame (layer) norms in the front end with an attention mask. Not where a
    #: group norm spans the whole input (wav2vec2 Base) or stacked positional convolutions carry
    #: padding inwards (data2vec-audio).
    mixed_lengths: bool = False

    @abstractmethod
    def frame_centers_ms(self, num_samples: int, *, scene: bool = False) -> Tensor:
        """Centres, in ms, of the frames produced for a clip of ``num_samples`` (float64)."""

    @abstractmethod
    def visit_states(
        self,
        audio: Tensor,
        visit: StateVisitor,
        *,
        scene: bool = False,
        needed: Collection[int] | None = None,
        lengths: Tensor | None = None,
    ) -> None:
        """Run the model on ``audio`` ``(n, samples)`` and hand each hidden state to ``visit``.

        ``scene=True`` lets a family use a coarser frame rate for scene embeddings
        (the paper runs CREPE at a 250 ms hop there); most families ignore it.
        ``needed``: the state indices the visitor uses (None: all). A family whose states cost
        extra work to expose (CREPE pools each block's map) may skip the others; every needed
        state is still visited, in index order.
        ``lengths`` (only when :attr:`mixed_lengths`): the real samples of each row, which starts at
        sample 0 and is zero-padded after them; row ``i``'s first ``len(frame_centers_ms(lengths[i]))``
        frames are then its clip's states, and later frames are to be ignored.
        """

    def frame_hop_samples(self, *, scene: bool = False) -> int | float:
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


class SceneFrames(Upstream):
    """Another upstream's scene frames as its (timestamp) frames: the same network and states, on the
    grid its ``scene=True`` runs use (CREPE's coarser scene hop; the same grid for most families). A
    model built on it returns, as timestamp embeddings, the frames its scene embeddings pool."""

    _SHARED = (
        "sample_rate",
        "num_states",
        "feature_dim",
        "context_dependent",
        "receptive_field",
        "max_input_samples",
        "windows_itself",
        "expects_normalized_waveform",
        "mixed_lengths",
    )

    def __init__(self, inner: Upstream):
        super().__init__()
        self.inner = inner
        for name in self._SHARED:
            setattr(self, name, getattr(inner, name))
        self.hop_samples = inner.frame_hop_samples(scene=True)

    def frame_centers_ms(self, num_samples: int, *, scene: bool = False) -> Tensor:
        return self.inner.frame_centers_ms(num_samples, scene=True)

    def frame_hop_samples(self, *, scene: bool = False) -> int | float:
        return self.inner.frame_hop_samples(scene=True)

    def visit_states(
        self,
        audio: Tensor,
        visit: StateVisitor,
        *,
        scene: bool = False,
        needed: Collection[int] | None = None,
        lengths: Tensor | None = None,
    ) -> None:
        options = {} if lengths is None else {"lengths": lengths}
        self.inner.visit_states(audio, visit, scene=True, needed=needed, **options)


def centered_frame_count(num_samples: int, hop: int, first_center: int) -> int:
    """Frames whose centres ``first_center + j * hop`` lie within the clip (at least one)."""
    if num_samples <= first_center:
        return 1
    return (num_samples - first_center) // hop + 1


def module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


class _StopForward(Exception):
    """Raised from a hook once the visitor needs no more states."""


def stream_states(
    blocks: nn.ModuleList,
    run: Callable[[], Tensor],
    visit: StateVisitor,
    shape: Callable[[Tensor], Tensor] = lambda hidden: hidden,
    *,
    last_from_block: bool = False,
) -> None:
    """Hand ``visit`` the input of every block (forward pre-hooks, so no state is kept), then the last
    state: the last block's own output when ``last_from_block``, else what ``run`` returns (the model's
    final, possibly normed, output). ``shape`` turns a block's tensor into the state's
    ``(n, frames, features)``. A visitor that returns True stops the forward pass there."""
    count = len(blocks)

    def before(index: int, args, kwargs) -> None:
        if visit(index, shape(args[0] if args else kwargs["hidden_states"])):
            raise _StopForward

    def after(_module, _args, output) -> None:
        if visit(count, shape(output if torch.is_tensor(output) else output[0])):
            raise _StopForward

    hooks = [
        block.register_forward_pre_hook(lambda m, args, kwargs, i=i: before(i, args, kwargs), with_kwargs=True)
        for i, block in enumerate(blocks)
    ]
    if last_from_block:
        hooks.append(blocks[-1].register_forward_hook(after))
    try:
        output = run()
        if not last_from_block:
            visit(count, shape(output))
    except _StopForward:
        pass
    finally:
        for hook in hooks:
            hook.remove()


def centre_short_rows(
    audio: Tensor, lengths: Tensor | None, minimum: int, *, centre: int | None = None
) -> tuple[Tensor, Tensor]:
    """Rows shorter than ``minimum`` samples zero-padded on both sides to it, as a short clip alone is;
    returns the audio (never the caller's tensor when changed) and every row's length, on the host.
    ``centre``: the padded sample where the clip's middle sample (``length // 2``) goes, as far as the
    padding allows, for a model whose one frame is centred elsewhere than in the middle of ``minimum``
    samples; None: the padding is split evenly (the odd sample after the clip)."""
    lengths = torch.full((audio.shape[0],), audio.shape[-1]) if lengths is None else lengths.cpu()
    short = (lengths < minimum).nonzero().flatten().tolist()
    if not short:
        return audio, lengths
    extra = minimum - audio.shape[-1]
    audio = F.pad(audio, (0, extra)) if extra > 0 else audio.clone()
    lengths = lengths.clone()
    for row in short:
        length = int(lengths[row])
        clip = audio[row, :length].clone()
        audio[row] = 0
        start = (minimum - length) // 2 if centre is None else min(max(centre - length // 2, 0), minimum - length)
        audio[row, start : start + length] = clip
        lengths[row] = minimum
    return audio, lengths
