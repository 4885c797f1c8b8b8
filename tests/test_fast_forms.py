"""The faster forms of the same computations (chosen per device) equal their reference forms on CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hearfuse.fusion.alignment import stretch, stretch_matrix
from hearfuse.model import FusionModel
from hearfuse.upstream import get_family
from hearfuse.upstream.conv_matmul import MatmulFeatureEncoder, MatmulPositionalConv, conv1d_matmul
from hearfuse.upstream.crepe_net import CrepeNet

from .conftest import sine_batch


@pytest.mark.parametrize("method", ["windows", "taps", None])
@pytest.mark.parametrize(
    "in_channels, out_channels, kernel, stride, groups, padding",
    [
        (1, 16, 10, 5, 1, (0, 0)),  # the transformers' first front-end layer
        (16, 16, 3, 2, 1, (0, 0)),
        (16, 16, 2, 2, 1, (0, 0)),  # stride = kernel: windows are a reshape
        (32, 32, 16, 1, 4, (8, 8)),  # a grouped positional convolution, even kernel
        (64, 8, 7, 1, 1, (3, 3)),  # wide in, narrow out: taps hold less
        (8, 16, 5, 3, 2, (1, 2)),  # stride, groups and uneven padding together
    ],
)
def test_convolution_as_matrix_products_equals_f_conv1d(
    in_channels, out_channels, kernel, stride, groups, padding, method
):
    generator = torch.Generator().manual_seed(in_channels * kernel + stride)
    x = torch.randn(3, 57, in_channels, generator=generator)
    weight = (
        torch.randn(out_channels, in_channels // groups, kernel, generator=generator) / (in_channels * kernel) ** 0.5
    )
    bias = torch.randn(out_channels, generator=generator)
    expected = F.conv1d(F.pad(x.transpose(1, 2), padding), weight, bias, stride=stride, groups=groups).transpose(1, 2)
    got = conv1d_matmul(x, weight, bias, stride=stride, padding=padding, groups=groups, method=method)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key", ["wav2vec2", "hubert", "wavlm", "wav2vec2_group", "data2vec_audio"])
def test_transformer_convolutions_as_matrix_products_equal_transformers_own(key, tiny_checkpoints):
    family = "wav2vec2" if key.startswith("wav2vec2") else key
    upstream = get_family(family).build(str(tiny_checkpoints[key]))
    wrapped = {type(module) for module in upstream.modules()} & {MatmulFeatureEncoder, MatmulPositionalConv}
    # data2vec-audio's front end is always layer-norm (its config has no feat_extract_norm)
    layer_norm_front_end = getattr(upstream.model.config, "feat_extract_norm", "layer") == "layer"
    assert (MatmulFeatureEncoder in wrapped) == layer_norm_front_end
    assert (MatmulPositionalConv in wrapped) == (key != "data2vec_audio")  # data2vec's is a stack of convs
    assert upstream.conv_form == ("auto" if wrapped else "conv")
    audio = sine_batch(2, 0.7)
    with torch.inference_mode():
        upstream.conv_form = "conv"
        expected = upstream.hidden_states(audio)
        upstream.conv_form = "matmul"
        got = upstream.hidden_states(audio)
    assert any(not torch.equal(one, other) for one, other in zip(got, expected))  # another computation ran
    for state, (one, other) in enumerate(zip(got, expected)):
        torch.testing.assert_close(one, other, rtol=1e-4, atol=1e-5, msg=f"state {state} differs")
    with pytest.raises(ValueError, match="conv_form must be one of"):
        upstream.conv_form = "fft"


@pytest.mark.parametrize("source, target", [(256, 1024), (1024, 768), (37, 100), (100, 37), (5, 5), (1, 8)])
def test_width_stretch_as_a_matrix_product_equals_f_interpolate(source, target):
    x = torch.randn(3, 11, source, generator=torch.Generator().manual_seed(source))

    def interpolate(values: torch.Tensor) -> torch.Tensor:
        flat = F.interpolate(values.reshape(-1, 1, source), size=target, mode="linear", align_corners=False)
        return flat.reshape(3, 11, target)

    assert torch.equal(stretch(x, target, dim=2), interpolate(x))  # the CPU default is F.interpolate itself
    # The matrix holds float64 positions: it matches F.interpolate in float64 to float32 rounding (in
    # float32, F.interpolate's own positions are off by up to 1e-4 of a step at 1000 points).
    exact = interpolate(x.double()).float()
    torch.testing.assert_close(stretch(x, target, dim=2, method="matmul"), exact, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        stretch(x.transpose(1, 2), target, dim=1, method="matmul"), exact.transpose(1, 2), rtol=1e-6, atol=1e-6
    )
    torch.testing.assert_close(interpolate(x), exact, rtol=0, atol=1e-3)
    matrix = stretch_matrix(source, target, torch.device("cpu"), torch.float32)
    torch.testing.assert_close(matrix.sum(0), torch.ones(target))  # each output is a convex combination
    assert (matrix != 0).sum(0).max() <= 2
    with pytest.raises(ValueError, match="method"):
        stretch(x, target + 1, dim=2, method="fft")


@pytest.mark.parametrize("capacity", ["tiny"])  # the published weights CI installs
def test_crepe_as_matrix_products_equals_its_convolutions(capacity):
    reference = get_family("crepe").build(capacity, conv_form="conv").net
    products = get_family("crepe").build(capacity, conv_form="matmul").net
    frames = sine_batch(48, 1024 / 16000, seed=3)
    with torch.inference_mode():
        expected = reference.states(frames, range(5))
        got = products.states(frames, range(5))
        for index in range(5):
            scale = expected[index].abs().max()
            torch.testing.assert_close(got[index], expected[index], rtol=1e-5, atol=1e-5 * float(scale))
        torch.testing.assert_close(products.salience(frames), reference.salience(frames), rtol=1e-5, atol=1e-6)
    assert get_family("crepe").build(capacity).net.conv_form == "auto"


def test_crepe_matmul_form_uses_the_shifted_diagonal_product_where_windows_would_be_large():
    """The full model's conv2 (1024 -> 128 channels) takes the diagonal-sum branch; compare it alone
    with Conv1d on random weights of that shape (the published weights need the full package)."""
    net = CrepeNet("full", conv_form="matmul")
    torch.manual_seed(0)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Conv1d, nn.BatchNorm1d)):
                module.weight.normal_(0, 0.05)
                module.bias.normal_(0, 0.05)
    x = torch.randn(2, 1024, 256)  # block 1's input: (frames, channels, time)
    with torch.inference_mode():
        expected = net._block(x, 1)
        got = net._matmul_block(x.transpose(1, 2), 1).transpose(1, 2)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_crepe_rejects_an_unknown_conv_form():
    with pytest.raises(ValueError, match="conv_form must be one of auto, conv, matmul"):
        CrepeNet("tiny", conv_form="fft")


def test_weights_cast_once_give_bit_identical_embeddings_to_autocast(tiny_fusion_config):
    cast = FusionModel.from_config(tiny_fusion_config, dtype=torch.bfloat16)
    for module in cast.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            assert module.weight.dtype == torch.bfloat16, module
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d)):
            assert module.weight.dtype == torch.float32, module
    autocast_only = FusionModel.from_config(tiny_fusion_config)
    autocast_only.autocast_dtype = torch.bfloat16  # the previous form: float32 weights cast on every call
    audio = sine_batch(2, 0.4)
    mine, reference = cast.embed(audio), autocast_only.embed(audio)
    assert torch.equal(mine.timestamp_embeddings, reference.timestamp_embeddings)
    assert torch.equal(mine.scene_embeddings, reference.scene_embeddings)


def test_auto_takes_the_products_under_reduced_precision_on_a_cpu():
    """oneDNN's bfloat16 convolutions lost CREPE full's later blocks on a CPU (per-frame cosine to float32
    falling to ~0.01 at pool-5 on these clips, 2026-11); "auto" computes them as matrix
    products there. Checked on CREPE tiny, the same code at an eighth of the width: CREPE full's products
    took 270 s here on a CPU that emulates bfloat16, tiny's take a second."""
    from hearfuse.upstream import get_family
    from hearfuse.upstream.conv_matmul import uses_matmul

    x = torch.zeros(2, 3)
    assert not uses_matmul("auto", x) and uses_matmul("auto", x.bfloat16()) and uses_matmul("matmul", x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert uses_matmul("auto", x) and not uses_matmul("conv", x)
    crepe = get_family("crepe").build("tiny", hop_ms=50.0)
    audio = torch.sin(torch.arange(16000) / 16000 * 2 * torch.pi * torch.tensor([[220.0], [330.0]]))
    with torch.inference_mode():
        exact = crepe.hidden_states(audio)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reduced = crepe.hidden_states(audio)
    for state, (a, b) in enumerate(zip(exact, reduced)):
        cosine = torch.nn.functional.cosine_similarity(a.flatten(0, 1), b.float().flatten(0, 1), dim=-1)
        assert float(cosine.min()) > 0.999, state
