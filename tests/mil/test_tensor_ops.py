"""Joining, slicing, padding, construction and ordering ops against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from mil_testing import IOS16, IOS17, IOS18, mb, random, run_ops


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("interleave", [False, True])
def test_concat_joins_or_interleaves(tmp_path, axis, interleave):
    x, y = random((2, 3), seed=90), random((2, 3), seed=91)
    (result,) = run_ops(
        tmp_path, lambda x, y: mb.concat(values=(x, y), axis=axis, interleave=interleave),
        {"x": x, "y": y},
    )
    if interleave:
        expected = np.stack([x, y], axis=(axis % 2) + 1).reshape(
            [d * 2 if i == axis % 2 else d for i, d in enumerate(x.shape)])
    else:
        expected = np.concatenate([x, y], axis=axis)
    np.testing.assert_array_equal(result, expected)


def test_concat_with_an_empty_tensor(tmp_path):
    x = random((2, 3), seed=92)
    (result,) = run_ops(
        tmp_path,
        lambda x: mb.concat(values=(x, mb.slice_by_size(x=x, begin=[0, 0], size=[2, 0])), axis=1),
        {"x": x}, opset=IOS17,
    )
    np.testing.assert_array_equal(result, x)


def test_split_evenly_and_by_sizes(tmp_path):
    x = random((6, 4), seed=93)
    results = run_ops(
        tmp_path,
        lambda x: list(mb.split(x=x, num_splits=3, axis=0))
        + list(mb.split(x=x, split_sizes=[1, 3], axis=-1)),
        {"x": x},
    )
    expected = np.split(x, 3, axis=0) + [x[:, :1], x[:, 1:]]
    for result, reference in zip(results, expected):
        np.testing.assert_array_equal(result, reference)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_stack_adds_an_axis(tmp_path, axis):
    x, y = random((2, 3), seed=94), random((2, 3), seed=95)
    (result,) = run_ops(tmp_path, lambda x, y: mb.stack(values=(x, y), axis=axis),
                        {"x": x, "y": y})
    np.testing.assert_array_equal(result, np.stack([x, y], axis=axis))


def test_tile_repeats_each_axis(tmp_path):
    x = random((2, 3), seed=96)
    (result,) = run_ops(tmp_path, lambda x: mb.tile(x=x, reps=[2, 3]), {"x": x})
    np.testing.assert_array_equal(result, np.tile(x, [2, 3]))


@pytest.mark.parametrize("mode,pad", [
    ("constant", [1, 2]),
    ("constant", [0, 1, 2, 0, 1, 1]),
    ("reflect", [1, 2, 2, 1]),
    ("replicate", [2, 3, 1, 0]),
    ("reflect", [2, 1]),
])
def test_pad_pads_the_trailing_axes(tmp_path, mode, pad):
    x = random((2, 4, 5), seed=97)
    (result,) = run_ops(tmp_path, lambda x: mb.pad(x=x, pad=pad, mode=mode, constant_val=0.5),
                        {"x": x})
    pairs = [(0, 0)] * (3 - len(pad) // 2) + [(pad[2 * i], pad[2 * i + 1])
                                              for i in range(len(pad) // 2)]
    numpy_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}[mode]
    extra = {"constant_values": 0.5} if mode == "constant" else {}
    np.testing.assert_array_equal(result, np.pad(x, pairs, mode=numpy_mode, **extra))


SLICES = [
    # begin, end, stride, begin_mask, end_mask, squeeze_mask
    ([0, 1, 0], [2, 3, 5], None, None, None, None),
    ([1, -2, 0], [2, -1, 5], [1, 1, 2], None, None, None),
    ([0, 0, 4], [0, 0, 0], [1, 1, -1], [True, True, False], [True, True, True], None),
    ([0, 2, -1], [0, 0, -4], [1, -1, -2], [True, False, False], [True, True, False], None),
    ([1, 0, 2], [0, 3, 0], [1, 1, 1], None, [True, False, True], [True, False, False]),
    ([0, -1, 0], [2, 0, 5], None, None, None, [False, True, False]),
    ([0, 10, 0], [2, 20, 5], None, None, None, None),
]


@pytest.mark.parametrize("begin,end,stride,begin_mask,end_mask,squeeze_mask", SLICES)
def test_slice_by_index_follows_numpy_slicing(tmp_path, begin, end, stride, begin_mask, end_mask,
                                              squeeze_mask):
    x = random((2, 3, 5), seed=98)
    arguments = {"begin": begin, "end": end}
    for name, value in (("stride", stride), ("begin_mask", begin_mask), ("end_mask", end_mask),
                        ("squeeze_mask", squeeze_mask)):
        if value is not None:
            arguments[name] = value
    (result,) = run_ops(tmp_path, lambda x: mb.slice_by_index(x=x, **arguments), {"x": x})
    index = []
    for axis in range(3):
        if squeeze_mask and squeeze_mask[axis]:
            index.append(begin[axis])
            continue
        start = None if begin_mask and begin_mask[axis] else begin[axis]
        stop = None if end_mask and end_mask[axis] else end[axis]
        index.append(slice(start, stop, stride[axis] if stride else 1))
    expected = x[tuple(index)]
    assert result.shape == expected.shape
    np.testing.assert_array_equal(result, expected)


def test_slice_end_clamped_by_coremltools(tmp_path):
    # x[..., -1:-6:-2] on an axis of size 5 selects elements 4, 2 and 0 in numpy. coremltools
    # 9.0 stores the end -6 as 0 when it saves the program (and declares 2 elements), so the
    # saved program selects only 4 and 2; the executor runs what the program holds.
    x = random((2, 5), seed=98)
    (result,) = run_ops(
        tmp_path, lambda x: mb.slice_by_index(x=x, begin=[0, -1], end=[0, -6], stride=[1, -2],
                                              begin_mask=[True, False], end_mask=[True, False]),
        {"x": x},
    )
    assert x[:, -1:-6:-2].shape == (2, 3)
    np.testing.assert_array_equal(result, x[:, 4:0:-2])


def test_slice_by_index_runtime_bounds(tmp_path):
    x = random((4, 6), seed=99)
    (result,) = run_ops(
        tmp_path,
        lambda x: mb.slice_by_index(x=x, begin=mb.mul(x=mb.shape(x=x), y=0),
                                    end=mb.sub(x=mb.shape(x=x), y=1)),
        {"x": x},
    )
    np.testing.assert_array_equal(result, x[:3, :5])


@pytest.mark.parametrize("begin,size", [([0, 1], [2, 2]), ([-2, 0], [-1, 3]), ([1, 2], [0, -1])])
def test_slice_by_size_takes_a_block(tmp_path, begin, size):
    x = random((4, 5), seed=100)
    (result,) = run_ops(tmp_path, lambda x: mb.slice_by_size(x=x, begin=begin, size=size), {"x": x},
                        opset=IOS17)
    index = []
    for axis, (start, length) in enumerate(zip(begin, size)):
        start = start + x.shape[axis] if start < 0 else start
        index.append(slice(start, None if length == -1 else start + length))
    np.testing.assert_array_equal(result, x[tuple(index)])


def test_slice_update_writes_a_strided_slice(tmp_path):
    x = random((4, 6), seed=101)
    update = random((2, 3), seed=102)
    (result,) = run_ops(
        tmp_path,
        lambda x, u: mb.slice_update(x=x, update=u, begin=[3, 0], end=[0, 6], stride=[-2, 2]),
        {"x": x, "u": update}, opset=IOS18,
    )
    expected = x.copy()
    expected[3:0:-2, 0:6:2] = update
    np.testing.assert_array_equal(result, expected)


def test_reverse_flips_axes(tmp_path):
    x = random((2, 3, 4), seed=103)
    some, every = run_ops(tmp_path, lambda x: [mb.reverse(x=x, axes=[0, -1]), mb.reverse(x=x)],
                          {"x": x})
    np.testing.assert_array_equal(some, x[::-1, :, ::-1])
    np.testing.assert_array_equal(every, x[::-1, ::-1, ::-1])


def test_reverse_sequence_reverses_each_prefix(tmp_path):
    x = random((3, 5, 2), seed=104)
    lengths = np.array([2, 5, 0], dtype=np.int32)
    (result,) = run_ops(
        tmp_path,
        lambda x, lengths: mb.reverse_sequence(x=x, lengths=lengths, seq_axis=1, batch_axis=0),
        {"x": x, "lengths": lengths},
    )
    expected = x.copy()
    for b, length in enumerate(lengths):
        expected[b, :length] = x[b, :length][::-1]
    np.testing.assert_array_equal(result, expected)


def test_fill_and_fill_like_build_constant_tensors(tmp_path):
    x = random((2, 3), seed=105)
    filled, filled_like = run_ops(
        tmp_path,
        lambda x: [mb.fill(shape=mb.shape(x=x), value=2.5), mb.fill_like(ref_tensor=x, value=-1.0)],
        {"x": x}, opset=IOS16,
    )
    np.testing.assert_array_equal(filled, np.full((2, 3), 2.5))
    np.testing.assert_array_equal(filled_like, np.full((2, 3), -1.0))


@pytest.mark.parametrize("start,end,step", [(0, 5, 1), (2, -3, -2), (0.5, 2.0, 0.25)])
def test_range_1d_matches_arange(tmp_path, start, end, step):
    x = np.array([end], dtype=np.float32)
    (result,) = run_ops(
        tmp_path,
        lambda x: mb.range_1d(start=float(start), end=mb.squeeze(x=x), step=float(step)),
        {"x": x},
    )
    np.testing.assert_allclose(result, np.arange(start, end, step))


@pytest.mark.parametrize("lower,upper", [(0, -1), (-1, 0), (0, 0), (1, 2)])
def test_band_part_keeps_the_band(tmp_path, lower, upper):
    x = random((2, 4, 5), seed=106)
    (result,) = run_ops(tmp_path, lambda x: mb.band_part(x=x, lower=lower, upper=upper), {"x": x})
    m, n = np.meshgrid(np.arange(4), np.arange(5), indexing="ij")
    band = ((lower < 0) | (m - n <= lower)) & ((upper < 0) | (n - m <= upper))
    np.testing.assert_array_equal(result, np.where(band, x, 0))


@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_cumsum_modes(tmp_path, exclusive, reverse):
    x = random((3, 4), seed=107)
    (result,) = run_ops(
        tmp_path, lambda x: mb.cumsum(x=x, axis=1, exclusive=exclusive, reverse=reverse), {"x": x}
    )
    data = x[:, ::-1] if reverse else x
    summed = np.cumsum(data, axis=1)
    if exclusive:
        summed = np.concatenate([np.zeros((3, 1)), summed[:, :-1]], axis=1)
    expected = summed[:, ::-1] if reverse else summed
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("axis", [-1, 0])
def test_one_hot_places_on_values(tmp_path, axis):
    indices = np.array([0, 2, 3, 5], dtype=np.int32)
    (result,) = run_ops(
        tmp_path,
        lambda i: mb.one_hot(indices=i, one_hot_vector_size=4, axis=axis, on_value=2.0,
                             off_value=-1.0),
        {"i": indices},
    )
    expected = np.where(indices[:, None] == np.arange(4)[None, :], 2.0, -1.0)
    np.testing.assert_array_equal(result, expected if axis == -1 else expected.T)


def test_non_zero_lists_coordinates(tmp_path):
    x = np.array([[0, 1, 0], [2, 0, 3]], dtype=np.float32)
    (result,) = run_ops(tmp_path, lambda x: mb.non_zero(x=x), {"x": x})
    np.testing.assert_array_equal(result, np.transpose(np.nonzero(x)))


@pytest.mark.parametrize("ascending", [False, True])
def test_argsort_and_topk_order_values(tmp_path, ascending):
    x = np.random.default_rng(108).permutation(20).astype(np.float32).reshape(4, 5)
    order, values, indices = run_ops(
        tmp_path,
        lambda x: [mb.argsort(x=x, axis=-1, ascending=ascending)]
        + list(mb.topk(x=x, k=3, axis=1, ascending=ascending)),
        {"x": x},
    )
    expected = np.argsort(x if ascending else -x, axis=-1)
    np.testing.assert_array_equal(order, expected)
    np.testing.assert_array_equal(indices, expected[:, :3])
    np.testing.assert_array_equal(values, np.take_along_axis(x, expected[:, :3], axis=1))
