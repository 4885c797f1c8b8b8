"""Alignment, combination and pooling against independent references (numpy, hand-computed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hearfuse.fusion.alignment import resample_at, stretch, stretch_map, timestamp_map
from hearfuse.fusion.combination import average, concatenate
from hearfuse.fusion.pooling import group_pool, mean_pool, pooling_weights


def _half_pixel_reference(values: np.ndarray, size: int) -> np.ndarray:
    """F.interpolate(linear, align_corners=False) written with numpy.interp."""
    n = len(values)
    positions = (np.arange(size) + 0.5) * n / size - 0.5
    return np.interp(positions, np.arange(n), values)


def test_stretch_hand_computed():
    x = torch.tensor([[[0.0], [10.0]]])  # (1, T=2, C=1)
    # Output i reads input at (i + 0.5) * 2 / 4 - 0.5 = -0.25, 0.25, 0.75, 1.25 (clamped).
    assert stretch(x, 4, dim=1).flatten().tolist() == [0.0, 2.5, 7.5, 10.0]


@pytest.mark.parametrize("source, size", [(5, 13), (13, 5), (49, 49), (21, 50), (2048, 1024), (1280, 1024), (1, 7)])
def test_stretch_matches_numpy_interp_on_every_axis(source, size):
    rng = np.random.default_rng(source * 1000 + size)
    values = rng.normal(size=(2, source, 3))
    time = stretch(torch.from_numpy(values), size, dim=1).numpy()
    features = stretch(torch.from_numpy(values.transpose(0, 2, 1)), size, dim=2).numpy()
    for n in range(2):
        for c in range(3):
            expected = _half_pixel_reference(values[n, :, c], size)
            np.testing.assert_allclose(time[n, :, c], expected, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(features[n, c, :], expected, rtol=1e-10, atol=1e-10)


def test_stretch_matches_paper_code_feature_interpolation():
    """The paper ran F.interpolate on (B, T, C), which interpolates the feature axis."""
    x = torch.randn(2, 9, 1280)
    expected = torch.nn.functional.interpolate(x, size=1024, mode="linear")
    torch.testing.assert_close(stretch(x, 1024, dim=2), expected)


def test_resample_at_matches_numpy_interp():
    rng = np.random.default_rng(0)
    source_ms = np.arange(0, 1001, 50.0)  # CREPE at a 50 ms hop
    target_ms = 12.5 + 20 * np.arange(50)  # wav2vec2 frame centres
    values = rng.normal(size=(1, len(source_ms), 4))
    got = resample_at(torch.from_numpy(values), torch.from_numpy(source_ms), torch.from_numpy(target_ms)).numpy()
    for c in range(4):
        np.testing.assert_allclose(got[0, :, c], np.interp(target_ms, source_ms, values[0, :, c]), rtol=1e-12)


def test_resample_at_is_identity_on_shared_centres_and_clamps_outside():
    x = torch.randn(1, 5, 3, dtype=torch.float64)
    centres = torch.tensor([12.5, 32.5, 52.5, 72.5, 92.5], dtype=torch.float64)
    torch.testing.assert_close(resample_at(x, centres, centres[:4]), x[:, :4])
    outside = resample_at(x, centres, torch.tensor([0.0, 500.0], dtype=torch.float64))
    torch.testing.assert_close(outside, x[:, [0, 4]])


def test_concatenate_block_order_and_interleave():
    a = torch.full((1, 2, 2), 1.0)
    b = torch.full((1, 2, 2), 2.0)
    c = torch.full((1, 2, 2), 3.0)
    assert concatenate([a, b, c])[0, 0].tolist() == [1, 1, 2, 2, 3, 3]
    assert concatenate([a, b, c], interleave=True)[0, 0].tolist() == [1, 2, 3, 1, 2, 3]


def test_interleave_is_a_fixed_permutation_of_block_order():
    members = [torch.randn(2, 4, 5) for _ in range(3)]
    block = concatenate(members)
    interleaved = concatenate(members, interleave=True)
    permutation = torch.tensor([m * 5 + c for c in range(5) for m in range(3)])
    torch.testing.assert_close(interleaved, block[..., permutation])


def test_interleave_and_average_need_equal_widths():
    with pytest.raises(ValueError, match="equal feature sizes"):
        concatenate([torch.zeros(1, 2, 3), torch.zeros(1, 2, 4)], interleave=True)
    with pytest.raises(ValueError, match="equal shape"):
        average([torch.zeros(1, 2, 3), torch.zeros(1, 2, 4)])
    assert concatenate([torch.zeros(1, 2, 3), torch.zeros(1, 2, 4)]).shape == (1, 2, 7)


def test_average_is_elementwise_mean():
    a, b = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    torch.testing.assert_close(average([a, b]), (a + b) / 2)


def test_mean_pool_matches_numpy():
    x = np.random.default_rng(1).normal(size=(3, 7, 5))
    np.testing.assert_allclose(mean_pool(torch.from_numpy(x)).numpy(), x.mean(axis=1))


@pytest.mark.parametrize("frames", [5, 12, 49, 53])
def test_group_pool_matches_hand_split(frames):
    x = np.random.default_rng(frames).normal(size=(2, frames, 3))
    usable = frames // 5 * 5
    size = usable // 5
    expected = np.concatenate([x[:, g * size : (g + 1) * size].mean(axis=1) for g in range(5)], axis=1)
    np.testing.assert_allclose(group_pool(torch.from_numpy(x), 5).numpy(), expected)


@pytest.mark.parametrize("frames", [1, 2, 3, 4])
def test_group_pool_with_fewer_frames_than_groups(frames):
    x = torch.arange(frames, dtype=torch.float64).reshape(1, frames, 1)
    pooled = group_pool(x, 5)
    assert pooled.shape == (1, 5)
    assert pooled[0].tolist() == [float(g * frames // 5) for g in range(5)]


@pytest.mark.parametrize("source, target", [(5, 13), (13, 5), (49, 49), (201, 500), (1, 7)])
def test_stretch_pull_back_moves_pooling_onto_source_frames(source, target):
    """weights @ stretch(x) == pull_back(weights) @ x, with stretch done by numpy.interp."""
    rng = np.random.default_rng(source + target)
    values = rng.normal(size=(source, 3))
    weights = rng.normal(size=(4, target))
    stretched = np.stack([_half_pixel_reference(values[:, c], target) for c in range(3)], axis=1)
    pulled = stretch_map(source, target).pull_back(torch.from_numpy(weights)).numpy()
    np.testing.assert_allclose(pulled @ values, weights @ stretched, rtol=1e-10, atol=1e-10)


def test_timestamp_pull_back_moves_pooling_onto_source_frames():
    rng = np.random.default_rng(1)
    source_ms = np.arange(0, 3001, 250.0)  # CREPE at its 250 ms scene hop
    target_ms = 12.5 + 20 * np.arange(150)
    values = rng.normal(size=(len(source_ms), 2))
    weights = rng.normal(size=(5, len(target_ms)))
    interpolated = np.stack([np.interp(target_ms, source_ms, values[:, c]) for c in range(2)], axis=1)
    pulled = timestamp_map(torch.from_numpy(source_ms), torch.from_numpy(target_ms)).pull_back(
        torch.from_numpy(weights)
    )
    np.testing.assert_allclose(pulled.numpy() @ values, weights @ interpolated, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("frames, groups", [(10, 1), (12, 5), (3, 5)])
def test_pooling_weights_rows_sum_to_one(frames, groups):
    weights = pooling_weights(frames, groups)
    assert weights.shape == (groups, frames)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(groups, dtype=torch.float64))
