"""Activation ops against numpy formulas from the op definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mil_testing import mb, random, run_fp16, run_ops

X = np.linspace(-4, 4, 17).astype(np.float32)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


SIMPLE = {
    "relu": (lambda x: mb.relu(x=x), lambda x: np.maximum(x, 0)),
    "relu6": (lambda x: mb.relu6(x=x), lambda x: np.minimum(np.maximum(x, 0), 6)),
    "sigmoid": (lambda x: mb.sigmoid(x=x), _sigmoid),
    "silu": (lambda x: mb.silu(x=x), lambda x: x * _sigmoid(x)),
    "softplus": (lambda x: mb.softplus(x=x), lambda x: np.log1p(np.exp(x))),
    "softsign": (lambda x: mb.softsign(x=x), lambda x: x / (1 + np.abs(x))),
    "sigmoid_hard": (
        lambda x: mb.sigmoid_hard(x=x, alpha=0.2, beta=0.5),
        lambda x: np.minimum(np.maximum(0.2 * x + 0.5, 0), 1),
    ),
    "elu": (lambda x: mb.elu(x=x, alpha=0.7), lambda x: np.where(x > 0, x, 0.7 * (np.exp(x) - 1))),
    "leaky_relu": (lambda x: mb.leaky_relu(x=x, alpha=0.1), lambda x: np.where(x >= 0, x, 0.1 * x)),
    "clamped_relu": (
        lambda x: mb.clamped_relu(x=x, alpha=0.5, beta=2.0),
        lambda x: np.minimum(np.where(x >= 0, x, 0.5 * x), 2.0),
    ),
    "linear_activation": (
        lambda x: mb.linear_activation(x=x, alpha=2.0, beta=-1.0), lambda x: 2 * x - 1
    ),
    "scaled_tanh": (
        lambda x: mb.scaled_tanh(x=x, alpha=1.5, beta=0.5), lambda x: 1.5 * np.tanh(0.5 * x)
    ),
    "thresholded_relu": (
        lambda x: mb.thresholded_relu(x=x, alpha=1.0), lambda x: np.where(x >= 1.0, x, 0)
    ),
}


@pytest.mark.parametrize("name", sorted(SIMPLE))
def test_activation_matches_its_formula(tmp_path, name):
    build, formula = SIMPLE[name]
    (result,) = run_ops(tmp_path, build, {"x": X})
    np.testing.assert_allclose(result, formula(X.astype(np.float64)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["EXACT", "TANH_APPROXIMATION", "SIGMOID_APPROXIMATION"])
def test_gelu_modes_use_their_formulas(tmp_path, mode):
    (result,) = run_ops(tmp_path, lambda x: mb.gelu(x=x, mode=mode), {"x": X})
    x = X.astype(np.float64)
    if mode == "EXACT":
        expected = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x]
    elif mode == "TANH_APPROXIMATION":
        expected = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    else:
        expected = x * _sigmoid(1.702 * x)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis", [-1, 0, 1, -3])
def test_softmax_normalizes_along_axis(tmp_path, axis):
    x = random((2, 3, 4), -5, 5, seed=7)
    (result,) = run_ops(tmp_path, lambda x: mb.softmax(x=x, axis=axis), {"x": x})
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    np.testing.assert_allclose(result, shifted / shifted.sum(axis=axis, keepdims=True), rtol=1e-5)


def test_softmax_masked_row_is_nan(tmp_path):
    x = np.array([[0.0, 1.0], [-np.inf, -np.inf]], dtype=np.float32)
    (result,) = run_ops(tmp_path, lambda x: mb.softmax(x=x, axis=-1), {"x": x})
    assert np.isnan(result[1]).all()
    np.testing.assert_allclose(result[0], np.exp([0, 1]) / np.exp([0, 1]).sum(), rtol=1e-6)


@pytest.mark.parametrize("rank", [3, 4, 5])
def test_prelu_scales_negatives_per_channel(tmp_path, rank):
    shape = (2, 3) + (4,) * (rank - 2)
    x = random(shape, seed=8)
    # The op accepts distinct per-channel values only at rank 4.
    alpha = np.array([0.1, 0.2, 0.3] if rank == 4 else [0.2] * 3, dtype=np.float32)
    (result,) = run_ops(tmp_path, lambda x: mb.prelu(x=x, alpha=alpha), {"x": x})
    broadcast = alpha.reshape((1, 3) + (1,) * (rank - 2))
    np.testing.assert_allclose(result, np.where(x > 0, x, broadcast * x), rtol=1e-6)


def test_softplus_parametric_scales_per_channel(tmp_path):
    x = random((1, 3, 2, 2), seed=9)
    alpha = np.array([1.0, 2.0, 0.5], dtype=np.float32)
    beta = np.array([0.5, 1.0, 3.0], dtype=np.float32)
    (result,) = run_ops(
        tmp_path, lambda x: mb.softplus_parametric(x=x, alpha=alpha, beta=beta), {"x": x}
    )
    a, b = alpha.reshape(1, 3, 1, 1), beta.reshape(1, 3, 1, 1)
    np.testing.assert_allclose(result, a * np.log1p(np.exp(b * x)), rtol=1e-5)


def test_activations_run_in_fp16(tmp_path):
    x = random((64,), -6, 6, seed=10)
    results = run_fp16(
        tmp_path,
        lambda x: [mb.sigmoid(x=x), mb.gelu(x=x), mb.softmax(x=x), mb.silu(x=x)],
        {"x": x},
    )
    x64 = x.astype(np.float16).astype(np.float64)
    expected = [_sigmoid(x64), [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x64],
                np.exp(x64) / np.exp(x64).sum(), x64 * _sigmoid(x64)]
    for result, reference in zip(results, expected):
        # Rounding to fp16 costs at most half a unit in the last place, 2^-11 relative.
        np.testing.assert_allclose(result, reference, rtol=2e-3, atol=1e-4)
        assert np.array_equal(result, result.astype(np.float16).astype(np.float32))
