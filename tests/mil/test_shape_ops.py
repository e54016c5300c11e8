"""Shape and layout ops: reshape, transpose, squeeze, expand_dims and the space/depth family."""

from __future__ import annotations

import numpy as np
import pytest
from mil_testing import IOS15, IOS16, IOS17, mb, random, run_ops


@pytest.mark.parametrize("target,expected", [
    ([6, 4], (6, 4)),
    ([-1, 3], (8, 3)),
    ([2, 0, -1], (2, 3, 4)),
    ([0, 0, 4], (2, 3, 4)),
])
def test_reshape_resolves_zero_and_minus_one(tmp_path, target, expected):
    x = random((2, 3, 4), seed=70)
    (result,) = run_ops(tmp_path, lambda x: mb.reshape(x=x, shape=target), {"x": x})
    np.testing.assert_array_equal(result, x.reshape(expected))


def test_reshape_zero_counts_from_the_right_from_ios17(tmp_path):
    # iOS 17: each 0 copies the dimension at the same distance from the end; a 0 with no such
    # dimension becomes 1. [2, 50] -> [1, 0, -1, 0] gives [1, 1, 2, 50].
    x = random((2, 50), seed=71)
    (result,) = run_ops(tmp_path, lambda x: mb.reshape(x=x, shape=[1, 0, -1, 0]), {"x": x},
                        opset=IOS17)
    assert result.shape == (1, 1, 2, 50)
    np.testing.assert_array_equal(result.reshape(2, 50), x)


def test_reshape_to_a_shape_computed_at_run_time(tmp_path):
    x = random((4, 6), seed=72)
    y = random((3, 8), seed=73)
    (result,) = run_ops(tmp_path, lambda x, y: mb.reshape(x=x, shape=mb.shape(x=y)),
                        {"x": x, "y": y})
    np.testing.assert_array_equal(result, x.reshape(3, 8))


@pytest.mark.parametrize("perm", [[1, 0, 2], [2, 0, 1], [-1, 0, 1]])
def test_transpose_permutes_axes(tmp_path, perm):
    x = random((2, 3, 4), seed=74)
    (result,) = run_ops(tmp_path, lambda x: mb.transpose(x=x, perm=perm), {"x": x})
    np.testing.assert_array_equal(result, np.transpose(x, [p % 3 for p in perm]))


@pytest.mark.parametrize("axes,expected", [(None, (3, 4)), ([0], (3, 1, 4)), ([-2], (1, 3, 4)),
                                           ([0, 1], (3, 1, 4))])
def test_squeeze_removes_single_axes_like_pytorch(tmp_path, axes, expected):
    x = random((1, 3, 1, 4), seed=75)
    arguments = {} if axes is None else {"axes": axes}
    (result,) = run_ops(tmp_path, lambda x: mb.squeeze(x=x, **arguments), {"x": x},
                        opset=IOS15 if axes != [0, 1] else IOS17)
    assert result.shape == expected
    np.testing.assert_array_equal(result.reshape(-1), x.reshape(-1))


@pytest.mark.parametrize("axes,expected", [([0], (1, 2, 3)), ([-1], (2, 3, 1)),
                                           ([1, -1], (2, 1, 3, 1)), ([0, 3], (1, 2, 3, 1))])
def test_expand_dims_inserts_axes(tmp_path, axes, expected):
    x = random((2, 3), seed=76)
    (result,) = run_ops(tmp_path, lambda x: mb.expand_dims(x=x, axes=axes), {"x": x})
    assert result.shape == expected


@pytest.mark.parametrize("axis,expected", [(1, (2, 12)), (-1, (6, 4)), (0, (1, 24))])
def test_flatten2d_splits_at_axis(tmp_path, axis, expected):
    x = random((2, 3, 4), seed=77)
    (result,) = run_ops(tmp_path, lambda x: mb.flatten2d(x=x, axis=axis), {"x": x})
    np.testing.assert_array_equal(result, x.reshape(expected))


def test_shape_returns_int32_dimensions(tmp_path):
    x = random((2, 3, 5), seed=78)
    (result,) = run_ops(tmp_path, lambda x: mb.shape(x=x), {"x": x})
    assert result.dtype == np.int32
    np.testing.assert_array_equal(result, [2, 3, 5])


def test_depth_to_space_uses_tensorflow_layout(tmp_path):
    x = np.arange(2 * 8 * 2 * 3, dtype=np.float32).reshape(2, 8, 2, 3)
    depth_to_space, round_trip = run_ops(
        tmp_path,
        lambda x: [mb.depth_to_space(x=x, block_size=2),
                   mb.space_to_depth(x=mb.depth_to_space(x=x, block_size=2), block_size=2)],
        {"x": x},
    )
    # TensorFlow's rule in NCHW: out[n, c, h*b + i, w*b + j] = in[n, (i*b + j)*C' + c, h, w].
    expected = np.zeros((2, 2, 4, 6), dtype=np.float32)
    for i in range(2):
        for j in range(2):
            expected[:, :, i::2, j::2] = x[:, (i * 2 + j) * 2:(i * 2 + j) * 2 + 2]
    np.testing.assert_array_equal(depth_to_space, expected)
    np.testing.assert_array_equal(round_trip, x)


def test_pixel_shuffle_uses_the_pytorch_layout(tmp_path):
    x = np.arange(1 * 8 * 2 * 2, dtype=np.float32).reshape(1, 8, 2, 2)
    shuffled, unshuffled = run_ops(
        tmp_path,
        lambda x: [mb.pixel_shuffle(x=x, upscale_factor=2),
                   mb.pixel_unshuffle(x=mb.pixel_shuffle(x=x, upscale_factor=2),
                                      downscale_factor=np.uint32(2))],
        {"x": x}, opset=IOS16,
    )
    # PyTorch's rule: out[n, c, h*r + i, w*r + j] = in[n, c*r*r + i*r + j, h, w].
    expected = np.zeros((1, 2, 4, 4), dtype=np.float32)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                expected[:, c, i::2, j::2] = x[:, c * 4 + i * 2 + j]
    np.testing.assert_array_equal(shuffled, expected)
    np.testing.assert_array_equal(unshuffled, x)


def test_space_to_batch_and_back(tmp_path):
    x = np.arange(2 * 1 * 2 * 4, dtype=np.float32).reshape(2, 1, 2, 4)
    to_batch, back = run_ops(
        tmp_path,
        lambda x: [
            mb.space_to_batch(x=x, block_shape=[2, 2], paddings=[[0, 0], [2, 0]]),
            mb.batch_to_space(
                x=mb.space_to_batch(x=x, block_shape=[2, 2], paddings=[[0, 0], [2, 0]]),
                block_shape=[2, 2], crops=[[0, 0], [2, 0]]),
        ],
        {"x": x},
    )
    padded = np.pad(x, [(0, 0), (0, 0), (0, 0), (2, 0)])
    # TensorFlow's order: batch index (i * bw + j) * N + n is padded[n, :, i::bh, j::bw].
    expected = np.concatenate([padded[:, :, i::2, j::2] for i in range(2) for j in range(2)])
    np.testing.assert_array_equal(to_batch, expected)
    np.testing.assert_array_equal(back, x)


def test_sliding_windows_puts_the_window_after_the_axis(tmp_path):
    x = random((2, 7, 3), seed=79)
    (result,) = run_ops(tmp_path, lambda x: mb.sliding_windows(x=x, axis=1, size=3, stride=2),
                        {"x": x})
    expected = np.stack([x[:, s:s + 3] for s in range(0, 5, 2)], axis=1)
    np.testing.assert_array_equal(result, expected)


def test_reshape_like_takes_dimensions_from_references(tmp_path):
    x = random((2, 3, 5, 6), seed=80)
    a, b = random((2, 3, 4), seed=81), random((1, 5, 6), seed=82)
    (result,) = run_ops(
        tmp_path,
        lambda x, a, b: mb.reshape_like(x=x, ref_tensors=(a, b), begins=(0, 1), ends=(2, 0),
                                        end_masks=(False, True)),
        {"x": x, "a": a, "b": b}, opset=IOS16,
    )
    np.testing.assert_array_equal(result, x.reshape(2, 3, 5, 6))


def test_identity_passes_values_through(tmp_path):
    x = random((3,), seed=83)
    (result,) = run_ops(tmp_path, lambda x: mb.identity(x=mb.mul(x=x, y=2.0)), {"x": x})
    np.testing.assert_array_equal(result, x * 2)
