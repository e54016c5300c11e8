"""Compressed-weight ops: built directly (iOS 16) and produced by coremltools.optimize (iOS 18).

Expected weights are decoded here in numpy from the op documentation (bit packing least
significant bit first, per-axis scales, block-wise lookup tables) and compared with what the
executor computes through the program.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from mil_testing import IOS16, IOS17, IOS18, build_program, ct, mb, random, run_ops, types

import coremltools.optimize.coreml as cto
from modelconv.mil import execute, load_program


def _pack_lsb_first(values: np.ndarray, bits: int) -> np.ndarray:
    stream = [(int(value) >> bit) & 1 for value in values for bit in range(bits)]
    stream += [0] * (-len(stream) % 8)
    return np.array([sum(stream[i + b] << b for b in range(8)) for i in range(0, len(stream), 8)],
                    dtype=np.uint8)


def _identity_feed(shape):
    return {"x": np.zeros(shape, dtype=np.float32)}


def test_affine_dequantize_scales_per_channel(tmp_path):
    quantized = np.random.default_rng(190).integers(-128, 127, (4, 3)).astype(np.int8)
    zero_point = np.array([0, 3, -5, 1], dtype=np.int8)
    scale = np.array([0.5, 0.1, 2.0, 0.25], dtype=np.float32)
    (result,) = run_ops(
        tmp_path,
        lambda x: mb.add(x=x, y=mb.constexpr_affine_dequantize(
            quantized_data=quantized, zero_point=zero_point, scale=scale, axis=0)),
        _identity_feed((4, 3)), opset=IOS16,
    )
    expected = scale[:, None] * (quantized.astype(np.float32) - zero_point[:, None])
    np.testing.assert_allclose(result, expected, rtol=1e-6)


@pytest.mark.parametrize("bits", [1, 2, 4, 6, 8])
def test_lut_to_dense_unpacks_indices_lsb_first(tmp_path, bits):
    shape = (3, 5)
    indices = np.random.default_rng(191 + bits).integers(0, 2 ** bits, math.prod(shape))
    lut = random((2 ** bits,), seed=192)
    packed = _pack_lsb_first(indices, bits)
    (result,) = run_ops(
        tmp_path,
        lambda x: mb.add(x=x, y=mb.constexpr_lut_to_dense(
            indices=packed, lut=lut, shape=np.array(shape, dtype=np.uint32))),
        _identity_feed(shape), opset=IOS16,
    )
    np.testing.assert_array_equal(result, lut[indices].reshape(shape))


def test_sparse_to_dense_places_values_at_set_bits(tmp_path):
    shape = (4, 5)
    present = np.random.default_rng(193).random(20) < 0.4
    values = random((int(present.sum()),), seed=194)
    (result,) = run_ops(
        tmp_path,
        lambda x: mb.add(x=x, y=mb.constexpr_sparse_to_dense(
            nonzero_data=values, mask=_pack_lsb_first(present.astype(int), 1),
            shape=np.array(shape, dtype=np.uint32))),
        _identity_feed(shape), opset=IOS16,
    )
    expected = np.zeros(20, dtype=np.float32)
    expected[present] = values
    np.testing.assert_array_equal(result, expected.reshape(shape))


def test_constexpr_cast_widens_fp16(tmp_path):
    source = random((2, 3), seed=195).astype(np.float16)
    (result,) = run_ops(
        tmp_path,
        lambda x: mb.add(x=x, y=mb.constexpr_cast(source_val=source, output_dtype="fp32")),
        _identity_feed((2, 3)), opset=IOS16,
    )
    np.testing.assert_array_equal(result, source.astype(np.float32))


def test_quantize_and_dequantize_round_trip(tmp_path):
    x = random((2, 4), -1, 1, seed=196)
    scale = np.array([0.01, 0.02], dtype=np.float32)
    zero_point = np.array([3, -2], dtype=np.int8)

    def build(x):
        quantized = mb.quantize(input=x, scale=scale, zero_point=zero_point, axis=0,
                                output_dtype="int8")
        restored = mb.dequantize(input=quantized, scale=scale, zero_point=zero_point, axis=0)
        return [quantized, restored]

    quantized, restored = run_ops(tmp_path, build, {"x": x}, opset=IOS17)
    expected = np.clip(np.round(x / scale[:, None]) + zero_point[:, None], -128, 127)
    np.testing.assert_array_equal(quantized, expected.astype(np.int8))
    np.testing.assert_allclose(restored, scale[:, None] * (expected - zero_point[:, None]),
                               rtol=1e-6)


# --- programs compressed by coremltools.optimize (iOS 18 ops) ------------------------------

WEIGHT = random((16, 8), seed=197)


def _linear_model():
    program = build_program(lambda x: mb.linear(x=x, weight=WEIGHT), {"x": ((2, 8), types.fp32)},
                            IOS18)
    return ct.convert(program, convert_to="mlprogram", minimum_deployment_target=IOS18,
                      compute_precision=ct.precision.FLOAT32)


def _palettize(model, **config):
    return cto.palettize_weights(model, cto.OptimizationConfig(
        global_config=cto.OpPalettizerConfig(mode="kmeans", weight_threshold=0, **config)))


def _prune(model):
    return cto.prune_weights(model, cto.OptimizationConfig(
        global_config=cto.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=0)))


def _quantize(model, **config):
    return cto.linear_quantize_weights(model, cto.OptimizationConfig(
        global_config=cto.OpLinearQuantizerConfig(weight_threshold=0, **config)))


def _decode_lut(indices, lut, vector_axis):
    """Documented iOS 18 lookup: block-wise tables, vectors laid along vector_axis."""
    rank = indices.ndim
    out_shape = list(indices.shape)
    vector = lut.shape[-1]
    if vector > 1:
        out_shape[vector_axis] *= vector
    result = np.zeros(out_shape, dtype=np.float64)
    for position in np.ndindex(*indices.shape):
        table = tuple(p // (indices.shape[a] // lut.shape[a]) for a, p in enumerate(position))
        values = lut[table + (indices[position],)]
        for v in range(vector):
            target = list(position)
            if vector > 1:
                target[vector_axis] = position[vector_axis] * vector + v
            result[tuple(target)] = values[v]
    return result


def _decode_blockwise(data, scale, offset):
    blocks = [d // s for d, s in zip(data.shape, scale.shape)]
    expand = lambda a: np.kron(a.astype(np.float64), np.ones(blocks))  # noqa: E731
    shift = 0 if offset is None else expand(offset)
    return expand(scale) * (data - shift)


def _scatter(mask, values):
    dense = np.zeros(mask.shape, dtype=np.float64)
    dense[mask.astype(bool)] = values
    return dense


def _decoded_weight(program):
    consts = program.program.consts
    nodes = {node.op_type: node for node in program.program.block.ops}

    def value(node, name):
        ref = node.inputs.get(name)
        return None if ref is None else consts[ref.name]

    if "constexpr_lut_to_sparse" in nodes:
        node = nodes["constexpr_lut_to_sparse"]
        mask = value(node, "indices_mask")
        indices = _scatter(mask, value(node, "indices_nonzero_data")).astype(int)
        return _decode_lut(indices, value(node, "lut"), None) * mask
    if "constexpr_sparse_blockwise_shift_scale" in nodes:
        node = nodes["constexpr_sparse_blockwise_shift_scale"]
        mask = value(node, "data_mask")
        dense = _scatter(mask, value(node, "nonzero_data"))
        return _decode_blockwise(dense, value(node, "scale"), value(node, "offset")) * mask
    if "constexpr_lut_to_dense" in nodes:
        node = nodes["constexpr_lut_to_dense"]
        axis = value(node, "vector_axis")
        return _decode_lut(value(node, "indices"), value(node, "lut"),
                           None if axis is None else int(axis))
    if "constexpr_blockwise_shift_scale" in nodes:
        node = nodes["constexpr_blockwise_shift_scale"]
        return _decode_blockwise(value(node, "data"), value(node, "scale"), value(node, "offset"))
    node = nodes["constexpr_sparse_to_dense"]
    return _scatter(value(node, "mask"), value(node, "nonzero_data"))


COMPRESSIONS = {
    "palettize_4bit": lambda model: _palettize(model, nbits=4),
    "palettize_grouped": lambda model: _palettize(model, nbits=3,
                                                  granularity="per_grouped_channel", group_size=4),
    "palettize_vector": lambda model: _palettize(model, nbits=2, cluster_dim=2),
    "quantize_int8": lambda model: _quantize(model, mode="linear_symmetric"),
    "quantize_int4_blocks": lambda model: _quantize(model, mode="linear", dtype="int4",
                                                    granularity="per_block", block_size=4),
    "prune": _prune,
    "prune_then_palettize": lambda model: cto.palettize_weights(
        _prune(model), cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(
            nbits=2, mode="kmeans", weight_threshold=0)), joint_compression=True),
    "prune_then_quantize": lambda model: cto.linear_quantize_weights(
        _prune(model), cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear", weight_threshold=0)), joint_compression=True),
}


@pytest.fixture(scope="module")
def linear_model():
    return _linear_model()


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_compressed_weights_decode_as_documented(tmp_path, linear_model, compression):
    compressed = COMPRESSIONS[compression](linear_model)
    path = tmp_path / "compressed.mlpackage"
    compressed.save(str(path))
    program = load_program(path)
    assert any(op_type.startswith("constexpr_") for op_type in program.op_types)
    x = random((2, 8), seed=198)
    (result,) = execute(program, {"x": x}).values()
    weight = _decoded_weight(program)
    np.testing.assert_allclose(result, x @ weight.T, rtol=1e-5, atol=1e-5)
    # The decoded weight approximates the original one.
    assert np.abs(weight - WEIGHT).max() < 1.5
