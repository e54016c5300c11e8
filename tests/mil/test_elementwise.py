"""Elementwise MIL ops against numpy formulas written from the op definitions."""

from __future__ import annotations

import numpy as np
import pytest
from mil_testing import mb, random, run_fp16, run_ops

BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "pow": lambda x, y: np.power(np.abs(x) + 0.5, y),
}

COMPARISONS = {
    "equal": np.equal,
    "not_equal": np.not_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "less": np.less,
    "less_equal": np.less_equal,
}

UNARY = {
    "abs": (np.abs, (-2, 2)),
    "acos": (np.arccos, (-0.99, 0.99)),
    "asin": (np.arcsin, (-0.99, 0.99)),
    "atan": (np.arctan, (-3, 3)),
    "atanh": (np.arctanh, (-0.9, 0.9)),
    "ceil": (np.ceil, (-3, 3)),
    "cos": (np.cos, (-3, 3)),
    "cosh": (np.cosh, (-3, 3)),
    "exp": (np.exp, (-3, 3)),
    "exp2": (np.exp2, (-3, 3)),
    "floor": (np.floor, (-3, 3)),
    "sign": (np.sign, (-3, 3)),
    "sin": (np.sin, (-3, 3)),
    "sinh": (np.sinh, (-3, 3)),
    "sqrt": (np.sqrt, (0, 4)),
    "square": (np.square, (-3, 3)),
    "tan": (np.tan, (-1.2, 1.2)),
    "tanh": (np.tanh, (-3, 3)),
}

SHAPE_PAIRS = [((2, 3), (2, 3)), ((2, 1, 4), (3, 1)), ((4,), (2, 3, 4)), ((1,), (5, 1))]


def _feeds(shape_x, shape_y):
    return {"x": random(shape_x, seed=1), "y": random(shape_y, seed=2)}


@pytest.mark.parametrize("op_type", sorted(BINARY))
@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
def test_binary_op_broadcasts_like_numpy(tmp_path, op_type, shapes):
    feeds = _feeds(*shapes)
    if op_type == "pow":
        feeds["x"] = np.abs(feeds["x"]) + 0.5
    (result,) = run_ops(tmp_path, lambda x, y: getattr(mb, op_type)(x=x, y=y), feeds)
    x, y = feeds["x"], feeds["y"]
    expected = np.power(x, y) if op_type == "pow" else BINARY[op_type](x, y)
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op_type", sorted(COMPARISONS))
def test_comparison_returns_booleans(tmp_path, op_type):
    x = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    y = np.array([3, 2, 5], dtype=np.float32)
    (result,) = run_ops(
        tmp_path, lambda x, y: mb.cast(x=getattr(mb, op_type)(x=x, y=y), dtype="int32"),
        {"x": x, "y": y},
    )
    np.testing.assert_array_equal(result, COMPARISONS[op_type](x, y).astype(np.int32))


def test_floor_div_and_mod_follow_python_signs(tmp_path):
    x = np.array([7, -7, 7, -7, 5.5], dtype=np.float32)
    y = np.array([2, 2, -2, -2, -2], dtype=np.float32)
    floor_div, mod = run_ops(
        tmp_path, lambda x, y: [mb.floor_div(x=x, y=y), mb.mod(x=x, y=y)], {"x": x, "y": y}
    )
    np.testing.assert_array_equal(floor_div, np.array([3, -4, -4, 3, -3], dtype=np.float32))
    np.testing.assert_array_equal(mod, np.array([1, 1, -1, -1, -0.5], dtype=np.float32))


def test_integer_arithmetic_stays_integer(tmp_path):
    x = np.array([7, -7, 9], dtype=np.int32)
    y = np.array([2, 2, -4], dtype=np.int32)
    added, floor_div, mod = run_ops(
        tmp_path,
        lambda x, y: [mb.add(x=x, y=y), mb.floor_div(x=x, y=y), mb.mod(x=x, y=y)],
        {"x": x, "y": y},
    )
    assert added.dtype == np.int32
    np.testing.assert_array_equal(added, x + y)
    np.testing.assert_array_equal(floor_div, x // y)
    np.testing.assert_array_equal(mod, x % y)


def test_logical_ops_combine_booleans(tmp_path):
    x = np.array([0, 1, 0, 1], dtype=np.float32)
    y = np.array([0, 0, 1, 1], dtype=np.float32)

    def build(x, y):
        a, b = mb.greater(x=x, y=0.5), mb.greater(x=y, y=0.5)
        return [mb.cast(x=op(x=a, y=b), dtype="int32")
                for op in (mb.logical_and, mb.logical_or, mb.logical_xor)] + [
            mb.cast(x=mb.logical_not(x=a), dtype="int32")]

    results = run_ops(tmp_path, build, {"x": x, "y": y})
    np.testing.assert_array_equal(results[0], [0, 0, 0, 1])
    np.testing.assert_array_equal(results[1], [0, 1, 1, 1])
    np.testing.assert_array_equal(results[2], [0, 1, 1, 0])
    np.testing.assert_array_equal(results[3], [1, 0, 1, 0])


@pytest.mark.parametrize("op_type", sorted(UNARY))
def test_unary_op_matches_numpy(tmp_path, op_type):
    function, (low, high) = UNARY[op_type]
    x = random((3, 4), low, high, seed=3)
    (result,) = run_ops(tmp_path, lambda x: getattr(mb, op_type)(x=x), {"x": x})
    np.testing.assert_allclose(result, function(x), rtol=1e-5, atol=1e-6)


def test_erf_matches_the_error_function(tmp_path):
    import math

    x = random((10,), -3, 3, seed=4)
    (result,) = run_ops(tmp_path, lambda x: mb.erf(x=x), {"x": x})
    np.testing.assert_allclose(result, [math.erf(v) for v in x], rtol=1e-5, atol=1e-6)


def test_round_rounds_halves_to_even(tmp_path):
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 0.4, 0.6], dtype=np.float32)
    (result,) = run_ops(tmp_path, lambda x: mb.round(x=x), {"x": x})
    np.testing.assert_array_equal(result, [0, 2, 2, -0.0, -2, 0, 1])


def test_epsilon_ops_add_epsilon_before_the_function(tmp_path):
    x = np.array([0.0, 1.0, 4.0], dtype=np.float32)
    results = run_ops(
        tmp_path,
        lambda x: [mb.inverse(x=x, epsilon=0.5), mb.log(x=x, epsilon=0.5),
                   mb.rsqrt(x=x, epsilon=0.5), mb.inverse(x=mb.add(x=x, y=1.0))],
        {"x": x},
    )
    np.testing.assert_allclose(results[0], 1 / (x + 0.5), rtol=1e-6)
    np.testing.assert_allclose(results[1], np.log(x + 0.5), rtol=1e-6)
    np.testing.assert_allclose(results[2], 1 / np.sqrt(x + 0.5), rtol=1e-6)
    # The default epsilon of inverse is 1e-4.
    np.testing.assert_allclose(results[3], 1 / (x + 1 + 1e-4), rtol=1e-6)


def test_clip_and_threshold_bound_values(tmp_path):
    x = np.linspace(-3, 3, 13).astype(np.float32)
    clipped, thresholded = run_ops(
        tmp_path,
        lambda x: [mb.clip(x=x, alpha=-1.0, beta=2.0), mb.threshold(x=x, alpha=0.5)],
        {"x": x},
    )
    np.testing.assert_array_equal(clipped, np.minimum(np.maximum(x, -1), 2))
    np.testing.assert_array_equal(thresholded, np.maximum(x, 0.5))


@pytest.mark.parametrize("dtype", ["int32", "fp16", "bool", "fp32"])
def test_cast_converts_like_numpy(tmp_path, dtype):
    x = np.array([-2.7, -0.5, 0.0, 0.4, 3.9, 70000.0], dtype=np.float32)
    (result,) = run_ops(
        tmp_path,
        lambda x: mb.cast(x=mb.cast(x=x, dtype=dtype), dtype="fp32"),
        {"x": x},
    )
    numpy_types = {"int32": np.int32, "fp16": np.float16, "bool": np.bool_, "fp32": np.float32}
    np.testing.assert_array_equal(result, x.astype(numpy_types[dtype]).astype(np.float32))


def test_fp16_program_rounds_each_op_to_fp16(tmp_path):
    x = random((64,), 0, 10, seed=5)
    y = random((64,), 0, 10, seed=6)
    (result,) = run_fp16(tmp_path, lambda x, y: mb.mul(x=mb.add(x=x, y=y), y=y), {"x": x, "y": y})
    x16, y16 = x.astype(np.float16), y.astype(np.float16)
    expected = ((x16 + y16).astype(np.float16) * y16).astype(np.float16)
    np.testing.assert_array_equal(result, expected.astype(np.float32))


def test_fp16_overflow_gives_infinity(tmp_path):
    x = np.array([300.0, -300.0], dtype=np.float32)
    (result,) = run_fp16(tmp_path, lambda x: mb.mul(x=x, y=x), {"x": x})
    assert np.isposinf(result).all()


def test_fp32_precision_avoids_fp16_overflow(tmp_path):
    x = np.array([300.0, -300.0], dtype=np.float32)
    (result,) = run_fp16(tmp_path, lambda x: mb.mul(x=x, y=x), {"x": x}, precision="fp32")
    np.testing.assert_array_equal(result, [90000.0, 90000.0])
