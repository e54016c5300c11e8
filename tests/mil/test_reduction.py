"""Reductions against numpy, including negative axes, keep_dims and all-axes reductions."""

from __future__ import annotations

import numpy as np
import pytest
from mil_testing import mb, random, run_fp16, run_ops

REDUCTIONS = {
    "reduce_sum": lambda x, axes, keep: np.sum(x, axis=axes, keepdims=keep),
    "reduce_mean": lambda x, axes, keep: np.mean(x, axis=axes, keepdims=keep),
    "reduce_max": lambda x, axes, keep: np.max(x, axis=axes, keepdims=keep),
    "reduce_min": lambda x, axes, keep: np.min(x, axis=axes, keepdims=keep),
    "reduce_prod": lambda x, axes, keep: np.prod(x, axis=axes, keepdims=keep),
    "reduce_l1_norm": lambda x, axes, keep: np.sum(np.abs(x), axis=axes, keepdims=keep),
    "reduce_l2_norm": lambda x, axes, keep: np.sqrt(np.sum(x * x, axis=axes, keepdims=keep)),
    "reduce_sum_square": lambda x, axes, keep: np.sum(x * x, axis=axes, keepdims=keep),
    "reduce_log_sum": lambda x, axes, keep: np.log(np.sum(x, axis=axes, keepdims=keep)),
    "reduce_log_sum_exp": lambda x, axes, keep: np.log(
        np.sum(np.exp(x), axis=axes, keepdims=keep)),
}


@pytest.mark.parametrize("op_type", sorted(REDUCTIONS))
@pytest.mark.parametrize("axes", [[1], [-1], [0, 2], None])
@pytest.mark.parametrize("keep_dims", [False, True])
def test_reduction_matches_numpy(tmp_path, op_type, axes, keep_dims):
    x = random((2, 3, 4), 0.5, 1.5, seed=60)
    arguments = {"keep_dims": keep_dims}
    if axes is not None:
        arguments["axes"] = axes
    (result,) = run_ops(tmp_path, lambda x: getattr(mb, op_type)(x=x, **arguments), {"x": x})
    expected = REDUCTIONS[op_type](x.astype(np.float64), None if axes is None else tuple(axes),
                                   keep_dims)
    assert result.shape == np.shape(expected)
    np.testing.assert_allclose(result, expected, rtol=1e-5)


@pytest.mark.parametrize("op_type,function", [("reduce_argmax", np.argmax),
                                              ("reduce_argmin", np.argmin)])
@pytest.mark.parametrize("axis", [0, -1, 1])
@pytest.mark.parametrize("keep_dims", [False, True])
def test_arg_reductions_return_int32_indices(tmp_path, op_type, function, axis, keep_dims):
    x = random((3, 4, 5), seed=61)
    (result,) = run_ops(
        tmp_path, lambda x: getattr(mb, op_type)(x=x, axis=axis, keep_dims=keep_dims), {"x": x}
    )
    expected = function(x, axis=axis)
    if keep_dims:
        expected = np.expand_dims(expected, axis)
    assert result.dtype == np.int32
    np.testing.assert_array_equal(result, expected)


def test_integer_sum_stays_integer(tmp_path):
    x = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    (result,) = run_ops(tmp_path, lambda x: mb.reduce_sum(x=x, axes=[1]), {"x": x})
    assert result.dtype == np.int32
    np.testing.assert_array_equal(result, x.sum(axis=1))


def test_fp16_mean_of_large_values_is_finite(tmp_path):
    x = np.full((1, 1024), 60000.0, dtype=np.float32)
    (result,) = run_fp16(tmp_path, lambda x: mb.reduce_mean(x=x, axes=[-1]), {"x": x})
    np.testing.assert_allclose(result, [60000.0], rtol=1e-3)


def test_fp16_sum_overflows_to_infinity(tmp_path):
    x = np.full((1, 4), 60000.0, dtype=np.float32)
    (result,) = run_fp16(tmp_path, lambda x: mb.reduce_sum(x=x, axes=[-1]), {"x": x})
    assert np.isposinf(result).all()
