"""conv, conv_transpose and pooling against loop-based numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from coremltools.converters.mil.mil import get_new_symbol
from mil_reference import conv, conv_transpose, pool, same_padding
from mil_testing import (IOS15, IOS16, build_program, ct, mb, random, run_fp16, run_ops,
                         save_program, types)

from modelconv.mil import execute, load_program

CONV_CASES = [
    # rank, pad_type, strides, dilations, groups
    (1, "valid", [1], [1], 1),
    (1, "same", [2], [1], 1),
    (2, "valid", [1, 1], [1, 1], 1),
    (2, "same", [2, 2], [1, 1], 1),
    (2, "same", [2, 1], [1, 1], 1),
    (2, "same_lower", [2, 2], [1, 1], 1),
    (2, "same", [1, 1], [2, 2], 1),
    (2, "custom", [1, 2], [1, 1], 2),
    (2, "valid", [1, 1], [1, 1], 4),
    (2, "valid", [2, 1], [1, 1], 2),
    (3, "same", [1, 2, 1], [1, 1, 1], 1),
]


def _pads(pad_type, sizes, kernel, strides, dilations, custom):
    if pad_type == "valid":
        return [(0, 0)] * len(sizes)
    if pad_type == "custom":
        return [(custom[2 * a], custom[2 * a + 1]) for a in range(len(sizes))]
    return [same_padding(s, k, st, d, lower=pad_type == "same_lower")
            for s, k, st, d in zip(sizes, kernel, strides, dilations)]


@pytest.mark.parametrize("rank,pad_type,strides,dilations,groups", CONV_CASES)
def test_conv_matches_loop_reference(tmp_path, rank, pad_type, strides, dilations, groups):
    sizes = [7, 6, 5][:rank]
    x = random((2, 4, *sizes), seed=11)
    kernel = [3, 2, 3][:rank]
    weight = random((6 if groups != 4 else 4, 4 // groups, *kernel), seed=12)
    bias = random((weight.shape[0],), seed=13)
    custom = [1, 0, 2, 1, 0, 1][: 2 * rank]
    arguments = dict(weight=weight, bias=bias, strides=strides, pad_type=pad_type,
                     dilations=dilations, groups=groups)
    if pad_type == "custom":
        arguments["pad"] = custom
    # same_lower exists from iOS 16 on.
    opset = IOS16 if pad_type == "same_lower" else IOS15
    (result,) = run_ops(tmp_path, lambda x: mb.conv(x=x, **arguments), {"x": x}, opset=opset)
    pads = _pads(pad_type, sizes, kernel, strides, dilations, custom)
    expected = conv(x, weight, bias, strides, pads, dilations, groups)
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


def test_same_padding_gives_ceil_of_size_over_stride(tmp_path):
    x = random((1, 2, 9, 10), seed=14)
    weight = random((3, 2, 4, 4), seed=15)
    (result,) = run_ops(
        tmp_path, lambda x: mb.conv(x=x, weight=weight, strides=[2, 3], pad_type="same"), {"x": x}
    )
    assert result.shape == (1, 3, 5, 4)


def test_conv_with_a_weight_computed_at_run_time(tmp_path):
    x = random((1, 2, 5, 5), seed=16)
    w = random((3, 2, 3, 3), seed=17)
    (result,) = run_ops(tmp_path, lambda x, w: mb.conv(x=x, weight=w), {"x": x, "w": w})
    np.testing.assert_allclose(result, conv(x, w, None, [1, 1], [(0, 0)] * 2, [1, 1], 1),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strides,groups", [([1, 1], 1), ([2, 2], 1), ([1, 1], 2)])
def test_pointwise_conv_of_a_one_pixel_image(tmp_path, strides, groups):
    # Squeeze-and-excitation blocks apply 1x1 kernels to a 1x1 image; with one group the
    # executor computes them as a matrix product.
    x = random((3, 4, 1, 1), seed=24)
    weight = random((6, 4 // groups, 1, 1), seed=25)
    bias = random((6,), seed=26)
    (result,) = run_ops(tmp_path, lambda x: mb.conv(x=x, weight=weight, bias=bias,
                                                      strides=strides, groups=groups), {"x": x})
    expected = conv(x, weight, bias, strides, [(0, 0)] * 2, [1, 1], groups)
    assert result.shape == (3, 6, 1, 1)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_bias", [False, True])
def test_pointwise_conv_of_transposed_image(tmp_path, with_bias):
    # A 1x1 kernel with stride 1 runs as one matrix product over the pixels. The transpose
    # gives an x that is not in channels-last layout.
    x = random((2, 5, 6, 4), seed=31)
    weight = random((7, 4, 1, 1), seed=32)
    bias = random((7,), seed=33) if with_bias else None
    arguments = dict(weight=weight) if bias is None else dict(weight=weight, bias=bias)

    def build(x):
        return mb.conv(x=mb.transpose(x=x, perm=[0, 3, 1, 2]), **arguments)

    (result,) = run_ops(tmp_path, build, {"x": x})
    expected = conv(x.transpose(0, 3, 1, 2), weight, bias, [1, 1], [(0, 0)] * 2, [1, 1], 1)
    assert result.shape == (2, 7, 5, 6)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strides,dilations", [([1, 1], [1, 1]), ([2, 2], [1, 1]),
                                               ([1, 2], [2, 1])])
def test_depthwise_conv_matches_loop_reference(tmp_path, strides, dilations):
    x = random((2, 6, 9, 8), seed=34)
    weight = random((6, 1, 3, 3), seed=35)
    bias = random((6,), seed=36)
    (result,) = run_ops(tmp_path, lambda x: mb.conv(
        x=x, weight=weight, bias=bias, strides=strides, dilations=dilations, pad_type="same",
        groups=6), {"x": x})
    pads = _pads("same", [9, 8], [3, 3], strides, dilations, None)
    expected = conv(x, weight, bias, strides, pads, dilations, 6)
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


def test_ranged_conv_matches_static_conv(tmp_path):
    # With static shapes each convolution is prepared for its input shape at compile time,
    # and a ranged input shape runs the general path. Both give the loop reference's result.
    pointwise = random((5, 3, 1, 1), seed=37)
    depthwise = random((5, 1, 3, 3), seed=38)

    def build(x):
        expanded = mb.conv(x=x, weight=pointwise, name="expanded")
        return mb.conv(x=expanded, weight=depthwise, pad_type="same", groups=5, name="mixed")

    def expected(x):
        expanded = conv(x, pointwise, None, [1, 1], [(0, 0)] * 2, [1, 1], 1)
        return conv(expanded, depthwise, None, [1, 1], [(1, 1)] * 2, [1, 1], 5)

    ranged = build_program(build, {"x": ((1, 3, get_new_symbol(), 6), types.fp32)})
    inputs = [ct.TensorType(name="x", shape=(1, 3, ct.RangeDim(2, 12, 4), 6))]
    ranged = load_program(save_program(tmp_path, ranged, inputs=inputs))
    for height in (2, 4, 11):
        x = random((1, 3, height, 6), seed=height)
        (static,) = run_ops(tmp_path, build, {"x": x})
        (general,) = execute(ranged, {"x": x}).values()
        np.testing.assert_allclose(static, expected(x), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(general, expected(x), rtol=1e-5, atol=1e-5)


def test_conv_output_is_c_ordered(tmp_path):
    # 2-d convolutions compute in channels-last layout; callers still get C-ordered arrays.
    x = random((1, 3, 5, 5), seed=27)
    weight = random((4, 3, 3, 3), seed=28)
    (result,) = run_ops(tmp_path, lambda x: mb.conv(x=x, weight=weight), {"x": x})
    assert result.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(result, conv(x, weight, None, [1, 1], [(0, 0)] * 2, [1, 1], 1),
                               rtol=1e-5, atol=1e-5)


def test_conv_in_fp16_rounds_the_output(tmp_path):
    x = random((1, 3, 6, 6), seed=18)
    weight = random((4, 3, 3, 3), seed=19)
    (result,) = run_fp16(tmp_path, lambda x: mb.conv(x=x, weight=weight.astype(np.float16)),
                         {"x": x})
    expected = conv(x.astype(np.float16), weight.astype(np.float16), None, [1, 1],
                    [(0, 0)] * 2, [1, 1], 1)
    np.testing.assert_allclose(result, expected, rtol=2e-3, atol=2e-3)
    assert np.array_equal(result, result.astype(np.float16).astype(np.float32))


TRANSPOSE_CASES = [
    # rank, strides, dilations, groups, pad_type, pad, output_shape
    (1, [2], [1], 1, "valid", None, None),
    (2, [2, 2], [1, 1], 1, "valid", None, None),
    (2, [2, 1], [1, 2], 1, "custom", [1, 0, 0, 1], None),
    (2, [2, 2], [1, 1], 2, "same", None, None),
    (2, [2, 2], [1, 1], 1, "custom", [1, 1, 1, 1], [1, 3, 8, 8]),
]


@pytest.mark.parametrize("rank,strides,dilations,groups,pad_type,pad,output_shape",
                         TRANSPOSE_CASES)
def test_conv_transpose_crops_the_full_result(tmp_path, rank, strides, dilations, groups,
                                              pad_type, pad, output_shape):
    sizes = [4, 4][:rank] if rank == 2 else [5]
    x = random((1, 4, *sizes), seed=20)
    kernel = [3] * rank
    weight = random((4, 3 // groups if groups == 1 else 2, *kernel), seed=21)
    bias = random((weight.shape[1] * groups,), seed=22)
    arguments = dict(weight=weight, bias=bias, strides=strides, dilations=dilations,
                     groups=groups, pad_type=pad_type)
    if pad is not None:
        arguments["pad"] = pad
    if output_shape is not None:
        arguments["output_shape"] = output_shape
    (result,) = run_ops(tmp_path, lambda x: mb.conv_transpose(x=x, **arguments), {"x": x})
    full = conv_transpose(x, weight, bias, strides, dilations, groups)
    if pad_type == "custom":
        windows = [(pad[2 * a], full.shape[2 + a] - pad[2 * a] - pad[2 * a + 1])
                   for a in range(rank)]
    elif pad_type == "same":
        windows = [((full.shape[2 + a] - sizes[a] * strides[a]) // 2, sizes[a] * strides[a])
                   for a in range(rank)]
    else:
        windows = [(0, full.shape[2 + a]) for a in range(rank)]
    if output_shape is not None:
        windows = [(start, output_shape[2 + a]) for a, (start, _) in enumerate(windows)]
    expected = full[(slice(None), slice(None)) + tuple(slice(s, s + n) for s, n in windows)]
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


POOL_CASES = [
    # kernel, strides, pad_type, pad
    ([2, 2], [2, 2], "valid", None),
    ([3, 3], [1, 1], "same", None),
    ([3, 2], [2, 2], "same", None),
    ([3, 3], [2, 2], "custom", [1, 1, 1, 1]),
    ([3, 3], [2, 2], "custom", [0, 2, 1, 0]),
    ([2, 2], [2, 2], "same_lower", None),
]


def _pool_pads(pad_type, sizes, kernel, strides, pad):
    if pad_type == "valid":
        return [(0, 0)] * len(sizes)
    if pad_type == "custom":
        return [(pad[2 * a], pad[2 * a + 1]) for a in range(len(sizes))]
    return [same_padding(s, k, st, lower=pad_type == "same_lower")
            for s, k, st in zip(sizes, kernel, strides)]


@pytest.mark.parametrize("kernel,strides,pad_type,pad", POOL_CASES)
@pytest.mark.parametrize("exclude", [False, True])
def test_avg_pool_counts_padding_unless_excluded(tmp_path, kernel, strides, pad_type, pad,
                                                 exclude):
    x = random((1, 2, 7, 6), 0, 1, seed=23)
    extra = {"pad": pad} if pad is not None else {}
    (result,) = run_ops(
        tmp_path,
        lambda x: mb.avg_pool(x=x, kernel_sizes=kernel, strides=strides, pad_type=pad_type,
                              exclude_padding_from_average=exclude, **extra),
        {"x": x},
        opset=IOS16 if pad_type == "same_lower" else IOS15,
    )
    pads = _pool_pads(pad_type, [7, 6], kernel, strides, pad)

    def average(values, mask):
        count = mask.sum() if exclude else mask.size
        return values.sum(axis=-1) / count

    expected = pool(x, kernel, strides, pads, average)
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel,strides,pad_type,pad", POOL_CASES)
def test_max_pool_ignores_padding(tmp_path, kernel, strides, pad_type, pad):
    x = random((1, 2, 7, 6), -2, -1, seed=24)
    extra = {"pad": pad} if pad is not None else {}
    (result,) = run_ops(
        tmp_path,
        lambda x: mb.max_pool(x=x, kernel_sizes=kernel, strides=strides, pad_type=pad_type,
                              **extra),
        {"x": x},
        opset=IOS16 if pad_type == "same_lower" else IOS15,
    )
    pads = _pool_pads(pad_type, [7, 6], kernel, strides, pad)
    expected = pool(x, kernel, strides, pads, lambda v, m: v.max(axis=-1), pad_value=-np.inf)
    np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_l2_pool_matches_window_norm(tmp_path):
    x = random((1, 2, 6, 6), seed=25)
    (result,) = run_ops(
        tmp_path,
        lambda x: mb.l2_pool(x=x, kernel_sizes=[2, 3], strides=[2, 1], pad_type="valid"),
        {"x": x},
    )
    expected = pool(x, [2, 3], [2, 1], [(0, 0)] * 2,
                    lambda v, m: np.sqrt((v * v).sum(axis=-1)))
    np.testing.assert_allclose(result, expected, rtol=1e-5)


def test_ceil_mode_adds_a_partial_window(tmp_path):
    x = random((1, 1, 5, 5), seed=26)
    (result,) = run_ops(
        tmp_path,
        lambda x: mb.max_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid",
                              ceil_mode=True),
        {"x": x},
    )
    assert result.shape == (1, 1, 3, 3)
    assert result[0, 0, 2, 2] == x[0, 0, 4, 4]
    assert result[0, 0, 0, 0] == x[0, 0, :2, :2].max()


@pytest.mark.parametrize("rank", [1, 3])
def test_pooling_in_one_and_three_dimensions(tmp_path, rank):
    sizes = [8] if rank == 1 else [4, 4, 4]
    x = random((1, 2, *sizes), seed=27)
    kernel, strides = [2] * rank, [2] * rank
    results = run_ops(
        tmp_path,
        lambda x: [mb.max_pool(x=x, kernel_sizes=kernel, strides=strides, pad_type="valid"),
                   mb.avg_pool(x=x, kernel_sizes=kernel, strides=strides, pad_type="valid")],
        {"x": x},
    )
    pads = [(0, 0)] * rank
    np.testing.assert_allclose(results[0], pool(x, kernel, strides, pads,
                                                lambda v, m: v.max(axis=-1)), rtol=1e-6)
    np.testing.assert_allclose(results[1], pool(x, kernel, strides, pads,
                                                lambda v, m: v.mean(axis=-1)), rtol=1e-6)
