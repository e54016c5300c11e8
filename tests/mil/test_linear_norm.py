"""linear, matmul, einsum, attention and normalization ops against numpy formulas."""

from __future__ import annotations

import numpy as np
import pytest
from mil_testing import IOS17, IOS18, mb, random, run_fp16, run_ops


@pytest.mark.parametrize("shape", [(5,), (3, 5), (2, 3, 5)])
def test_linear_applies_weight_transpose_and_bias(tmp_path, shape):
    x = random(shape, seed=30)
    weight, bias = random((4, 5), seed=31), random((4,), seed=32)
    with_bias, without_bias = run_ops(
        tmp_path,
        lambda x: [mb.linear(x=x, weight=weight, bias=bias), mb.linear(x=x, weight=weight)],
        {"x": x},
    )
    np.testing.assert_allclose(with_bias, x @ weight.T + bias, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(without_bias, x @ weight.T, rtol=1e-5, atol=1e-6)


MATMUL_CASES = [
    ((4,), (2, 4, 3), False, False),
    ((10, 4, 3), (5, 10, 3, 2), False, False),
    ((3, 4), (5, 4), False, True),
    ((4, 3), (4, 5), True, False),
    ((2, 1, 4, 3), (3, 5, 4), True, True),
]


@pytest.mark.parametrize("shape_x,shape_y,transpose_x,transpose_y", MATMUL_CASES, ids=str)
def test_matmul_broadcasts_batches(tmp_path, shape_x, shape_y, transpose_x, transpose_y):
    x, y = random(shape_x, seed=33), random(shape_y, seed=34)
    (result,) = run_ops(
        tmp_path,
        lambda x, y: mb.matmul(x=x, y=y, transpose_x=transpose_x, transpose_y=transpose_y),
        {"x": x, "y": y},
    )
    a = np.swapaxes(x, -1, -2) if transpose_x and x.ndim > 1 else x
    b = np.swapaxes(y, -1, -2) if transpose_y and y.ndim > 1 else y
    expected = np.matmul(a, b)
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


def test_matmul_of_integers_stays_exact(tmp_path):
    x = np.arange(6, dtype=np.int32).reshape(2, 3)
    y = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    (result,) = run_ops(tmp_path, lambda x, y: mb.matmul(x=x, y=y), {"x": x, "y": y})
    assert result.dtype == np.int32
    np.testing.assert_array_equal(result, x @ y)


@pytest.mark.parametrize("equation,shape_x,shape_y", [
    ("nchw,nwhu->nchu", (2, 3, 4, 5), (2, 5, 4, 6)),
    ("nchw,nwhu->nchu", (1, 3, 4, 5), (2, 5, 1, 6)),
    ("chw,whr->chr", (3, 4, 5), (5, 4, 2)),
])
def test_einsum_broadcasts_size_one_batch_axes(tmp_path, equation, shape_x, shape_y):
    x, y = random(shape_x, seed=35), random(shape_y, seed=36)
    (result,) = run_ops(tmp_path, lambda x, y: mb.einsum(values=(x, y), equation=equation),
                        {"x": x, "y": y})
    letters = equation.split("->")[0].split(",")
    sizes = {}
    for word, array in zip(letters, (x, y)):
        for letter, size in zip(word, array.shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    a = np.broadcast_to(x, [sizes[letter] for letter in letters[0]])
    b = np.broadcast_to(y, [sizes[letter] for letter in letters[1]])
    np.testing.assert_allclose(result, np.einsum(equation, a, b), rtol=1e-5, atol=1e-6)


def _attention(q, k, v, mask=None):
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + mask
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (weights / weights.sum(axis=-1, keepdims=True)) @ v


@pytest.mark.parametrize("mask_kind", [None, "float", "bool"])
def test_scaled_dot_product_attention_follows_its_definition(tmp_path, mask_kind):
    q, k, v = random((1, 2, 3, 4), seed=37), random((1, 2, 5, 4), seed=38), random((1, 2, 5, 6),
                                                                                 seed=39)
    float_mask = random((3, 5), -2, 0, seed=40)
    bool_mask = np.array([[1, 0, 1, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 1, 0]], dtype=bool)
    feeds = {"q": q, "k": k, "v": v}

    def build(q, k, v):
        if mask_kind is None:
            return mb.scaled_dot_product_attention(query=q, key=k, value=v)
        mask = float_mask if mask_kind == "float" else bool_mask
        return mb.scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=mask)

    (result,) = run_ops(tmp_path, build, feeds, opset=IOS18)
    mask = {None: None, "float": float_mask, "bool": bool_mask}[mask_kind]
    np.testing.assert_allclose(result, _attention(q, k, v, mask), rtol=1e-5, atol=1e-6)


def test_batch_norm_normalizes_per_channel(tmp_path):
    x = random((2, 3, 4, 4), seed=41)
    mean, variance = random((3,), seed=42), random((3,), 0.5, 2, seed=43)
    gamma, beta = random((3,), seed=44), random((3,), seed=45)
    (result,) = run_ops(
        tmp_path,
        lambda x: mb.batch_norm(x=x, mean=mean, variance=variance, gamma=gamma, beta=beta,
                                epsilon=1e-3),
        {"x": x},
    )
    shape = (1, 3, 1, 1)
    expected = gamma.reshape(shape) * (x - mean.reshape(shape)) / np.sqrt(
        variance.reshape(shape) + 1e-3) + beta.reshape(shape)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


def test_instance_norm_normalizes_each_channel_of_each_sample(tmp_path):
    x = random((2, 3, 5, 4), seed=46)
    gamma, beta = random((3,), seed=47), random((3,), seed=48)
    (result,) = run_ops(tmp_path, lambda x: mb.instance_norm(x=x, gamma=gamma, beta=beta,
                                                             epsilon=1e-4), {"x": x})
    mean = x.mean(axis=(2, 3), keepdims=True)
    variance = x.var(axis=(2, 3), keepdims=True)
    expected = gamma.reshape(1, 3, 1, 1) * (x - mean) / np.sqrt(variance + 1e-4) + beta.reshape(
        1, 3, 1, 1)
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("axes", [[-1], [2, 3], [1, 3], [0, 1, 2, 3], [-3]])
def test_layer_norm_normalizes_over_axes(tmp_path, axes):
    x = random((2, 3, 4, 5), seed=49)
    normalized = [x.shape[a] for a in sorted(a % 4 for a in axes)]
    gamma, beta = random(normalized, seed=50), random(normalized, seed=51)
    (result,) = run_ops(
        tmp_path, lambda x: mb.layer_norm(x=x, axes=axes, gamma=gamma, beta=beta, epsilon=1e-5),
        {"x": x},
    )
    dims = tuple(sorted(a % 4 for a in axes))
    broadcast = [x.shape[a] if a in dims else 1 for a in range(4)]
    mean = x.mean(axis=dims, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=dims, keepdims=True)
    expected = (x - mean) / np.sqrt(variance + 1e-5) * gamma.reshape(broadcast) + beta.reshape(
        broadcast)
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 4, 5), (2, 2, 3, 4, 5)])
def test_l2_norm_divides_by_the_root_square_sum(tmp_path, shape):
    x = random(shape, seed=52)
    (result,) = run_ops(tmp_path, lambda x: mb.l2_norm(x=x, epsilon=1e-6), {"x": x})
    # The last three axes are normalized together; leading axes are batch.
    flat = x.reshape(int(np.prod(shape[:-3])), -1)
    expected = flat / np.sqrt((flat ** 2).sum(axis=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(result, expected.reshape(shape), rtol=1e-5)


def test_local_response_norm_sums_a_channel_window(tmp_path):
    x = random((1, 6, 3, 3), seed=53)
    (result,) = run_ops(
        tmp_path, lambda x: mb.local_response_norm(x=x, size=3, alpha=1e-2, beta=0.75, k=2.0),
        {"x": x},
    )
    squares = np.pad(x ** 2, [(0, 0), (1, 1), (0, 0), (0, 0)])
    window = sum(squares[:, c: c + 6] for c in range(3))
    expected = x / (2.0 + 1e-2 / 3 * window) ** 0.75
    np.testing.assert_allclose(result, expected, rtol=1e-5)


def test_layer_norm_in_fp16_stays_close(tmp_path):
    x = random((4, 64), -3, 3, seed=54)
    (result,) = run_fp16(
        tmp_path, lambda x: mb.layer_norm(x=x, axes=[-1], epsilon=np.float16(1e-5)), {"x": x}
    )
    x64 = x.astype(np.float16).astype(np.float64)
    expected = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(result, expected, rtol=5e-3, atol=5e-3)


def test_norms_run_in_fp16_including_upcast_ops(tmp_path):
    x = random((1, 4, 3, 3), seed=55)
    results = run_fp16(
        tmp_path,
        lambda x: [mb.local_response_norm(x=x, size=3), mb.instance_norm(x=x)],
        {"x": x}, opset=IOS17,
    )
    assert all(np.isfinite(result).all() for result in results)
    assert all(np.array_equal(r, r.astype(np.float16).astype(np.float32)) for r in results)
