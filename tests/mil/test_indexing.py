"""gather, scatter and select families against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from mil_testing import IOS16, IOS17, mb, random, run_ops


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("indices", [np.array([2, 0, -1]), np.array([[1, 0], [0, 1]]),
                                     np.array(1)], ids=["vector", "matrix", "scalar"])
def test_gather_takes_along_axis(tmp_path, axis, indices):
    x = random((3, 4, 3), seed=110)
    indices = indices.astype(np.int32)
    (result,) = run_ops(tmp_path, lambda x: mb.gather(x=x, indices=indices, axis=axis), {"x": x})
    np.testing.assert_array_equal(result, np.take(x, indices, axis=axis))


def test_gather_with_batch_dims(tmp_path):
    x = random((2, 3, 4), seed=111)
    indices = np.array([[0, 2], [1, 1]], dtype=np.int32)
    (result,) = run_ops(tmp_path, lambda x: mb.gather(x=x, indices=indices, axis=1, batch_dims=1),
                        {"x": x}, opset=IOS16)
    expected = np.stack([np.take(x[b], indices[b], axis=0) for b in range(2)])
    np.testing.assert_array_equal(result, expected)


def test_gather_with_indices_computed_at_run_time(tmp_path):
    x = random((5, 2), seed=112)
    i = np.array([4, 0, 4], dtype=np.int32)
    (result,) = run_ops(tmp_path, lambda x, i: mb.gather(x=x, indices=i, axis=0),
                        {"x": x, "i": i})
    np.testing.assert_array_equal(result, x[i])


def test_gather_along_axis_matches_take_along_axis(tmp_path):
    x = random((3, 4), seed=113)
    indices = np.array([[0, 3], [1, -1], [2, 2]], dtype=np.int32)
    (result,) = run_ops(tmp_path, lambda x: mb.gather_along_axis(x=x, indices=indices, axis=1),
                        {"x": x})
    np.testing.assert_array_equal(result, np.take_along_axis(x, indices % 4, axis=1))


@pytest.mark.parametrize("batch_dims", [0, 1])
def test_gather_nd_reads_index_tuples(tmp_path, batch_dims):
    x = random((2, 3, 4), seed=114)
    indices = np.array([[[0, 1], [2, 3]], [[1, 0], [2, 2]]], dtype=np.int32)
    if batch_dims == 0:
        indices = indices[..., :1] % 2
    (result,) = run_ops(tmp_path, lambda x: mb.gather_nd(x=x, indices=indices,
                                                         batch_dims=batch_dims),
                        {"x": x}, opset=IOS16)
    if batch_dims == 0:
        expected = x[indices[..., 0]]
    else:
        expected = np.stack([x[b][tuple(indices[b].T)] for b in range(2)])
    np.testing.assert_array_equal(result, expected)


def _combine(mode, current, update):
    return {"update": update, "add": current + update, "sub": current - update,
            "mul": current * update, "div": current / update, "max": max(current, update),
            "min": min(current, update)}[mode]


MODES = ["update", "add", "sub", "mul", "div", "max", "min"]


@pytest.mark.parametrize("mode", MODES)
def test_scatter_combines_rows(tmp_path, mode):
    data = random((4, 3), 1, 2, seed=115)
    indices = np.array([2, 0], dtype=np.int32)
    updates = random((2, 3), 1, 2, seed=116)
    (result,) = run_ops(
        tmp_path, lambda d, u: mb.scatter(data=d, indices=indices, updates=u, axis=0, mode=mode),
        {"d": data, "u": updates},
    )
    expected = data.astype(np.float64).copy()
    for row, index in enumerate(indices):
        for column in range(3):
            expected[index, column] = _combine(mode, expected[index, column],
                                               updates[row, column])
    np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_scatter_defaults_to_add_and_accumulates_duplicates(tmp_path):
    data = np.zeros((3, 2), dtype=np.float32)
    indices = np.array([1, 1, 0], dtype=np.int32)
    updates = np.ones((3, 2), dtype=np.float32)
    (result,) = run_ops(tmp_path, lambda d, u: mb.scatter(data=d, indices=indices, updates=u),
                        {"d": data, "u": updates})
    np.testing.assert_array_equal(result, [[1, 1], [2, 2], [0, 0]])


@pytest.mark.parametrize("mode", MODES)
def test_scatter_along_axis_combines_elements(tmp_path, mode):
    data = random((3, 4), 1, 2, seed=117)
    indices = np.array([[0, 3], [1, 2], [3, 0]], dtype=np.int32)
    updates = random((3, 2), 1, 2, seed=118)
    (result,) = run_ops(
        tmp_path,
        lambda d, u: mb.scatter_along_axis(data=d, indices=indices, updates=u, axis=1, mode=mode),
        {"d": data, "u": updates},
    )
    expected = data.astype(np.float64).copy()
    for row in range(3):
        for k in range(2):
            column = indices[row, k]
            expected[row, column] = _combine(mode, expected[row, column], updates[row, k])
    np.testing.assert_allclose(result, expected, rtol=1e-6)


@pytest.mark.parametrize("mode", ["update", "add", "max"])
def test_scatter_nd_writes_slices(tmp_path, mode):
    data = random((3, 4, 2), 1, 2, seed=119)
    indices = np.array([[0, 1], [2, 3], [0, 0]], dtype=np.int32)
    updates = random((3, 2), 1, 2, seed=120)
    (result,) = run_ops(
        tmp_path, lambda d, u: mb.scatter_nd(data=d, indices=indices, updates=u, mode=mode),
        {"d": data, "u": updates},
    )
    expected = data.astype(np.float64).copy()
    for k, (i, j) in enumerate(indices):
        for c in range(2):
            expected[i, j, c] = _combine(mode, expected[i, j, c], updates[k, c])
    np.testing.assert_allclose(result, expected, rtol=1e-6)


def test_select_broadcasts_condition_and_values(tmp_path):
    x = random((2, 3), seed=121)
    y = random((3,), seed=122)
    (result,) = run_ops(tmp_path, lambda x, y: mb.select(cond=mb.greater(x=x, y=0.0), a=x, b=y),
                        {"x": x, "y": y})
    np.testing.assert_array_equal(result, np.where(x > 0, x, y))


def test_gather_out_of_range_index_is_an_error(tmp_path):
    from modelconv.mil import ExecutionError

    x = random((3, 2), seed=123)
    i = np.array([3], dtype=np.int32)
    with pytest.raises(ExecutionError, match="index out of range"):
        run_ops(tmp_path, lambda x, i: mb.gather(x=x, indices=i, axis=0), {"x": x, "i": i},
                opset=IOS17)
