"""Fused plans: in-place chains of elementwise ops and early release give the unfused results.

`execute` runs the fused plan, `execute(..., intermediates=True)` the unfused one, which runs
every op on its own. Each test compares the two bit for bit and with a numpy formula, whose
float32 and float16 arithmetic rounds as torch's CPU kernels do.
"""

from __future__ import annotations

import numpy as np
import pytest
from mil_testing import build_program, mb, random, save_program, types

from modelconv.mil import execute, load_program

FP32_MAX = float(np.finfo(np.float32).max)


def _load(tmp_path, build, specs):
    return load_program(save_program(tmp_path, build_program(build, specs)))


def _both_plans(program, feeds, precision="program"):
    """Return (fused outputs, unfused outputs with every intermediate)."""
    fused = execute(program, feeds, precision=precision)
    unfused = execute(program, feeds, precision=precision, intermediates=True)
    return fused, unfused


def _steps(program, precision="program", fused=True) -> int:
    return len(program.plan(precision, fused=fused).main.schedule)


def _with_special_values(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(-1).copy()
    flat[:6] = [np.nan, np.inf, -np.inf, -3.0, 3.0, 1e30]
    return flat.reshape(x.shape)


def _hard_swish_program(tmp_path, dtype):
    """conv, then hard-swish as the converter decomposes it: add, clip, clip, mul, mul."""
    np_dtype = np.float16 if dtype == "fp16" else np.float32
    high = np.inf if dtype == "fp16" else FP32_MAX
    weight = random((4, 3, 3, 3), seed=300).astype(np_dtype)
    bias = random((4,), seed=301).astype(np_dtype)

    def build(x):
        value = mb.cast(x=x, dtype="fp16") if dtype == "fp16" else x
        conv = mb.conv(x=value, weight=weight, bias=bias, pad_type="same", name="conv")
        shifted = mb.add(x=conv, y=np_dtype(3.0), name="shifted")
        low_clipped = mb.clip(x=shifted, alpha=np_dtype(0.0), beta=np_dtype(high), name="low")
        clipped = mb.clip(x=low_clipped, alpha=np_dtype(-high), beta=np_dtype(6.0), name="high")
        product = mb.mul(x=conv, y=clipped, name="product")
        scaled = mb.mul(x=product, y=np_dtype(1 / 6), name="scaled")
        return mb.cast(x=scaled, dtype="fp32") if dtype == "fp16" else scaled

    return _load(tmp_path, build, {"x": ((1, 3, 8, 8), types.fp32)}), np_dtype


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_hard_swish_chain_matches_unfused_ops(tmp_path, dtype):
    program, np_dtype = _hard_swish_program(tmp_path, dtype)
    feeds = {"x": random((1, 3, 8, 8), low=-6, high=6, seed=302)}
    fused, unfused = _both_plans(program, feeds)

    conv = unfused["conv"]
    shifted = (conv + np_dtype(3.0)).astype(np_dtype)
    clipped = np.minimum(np.maximum(shifted, np_dtype(0)), np_dtype(6))
    product = (conv * clipped).astype(np_dtype)
    expected = (product * np_dtype(1 / 6)).astype(np_dtype).astype(np.float32)
    (name,) = program.output_names
    np.testing.assert_array_equal(unfused[name], expected)
    np.testing.assert_array_equal(fused[name], unfused[name])
    # conv and the five elementwise ops run as two steps: the conv, and the chain from `add`.
    assert _steps(program, fused=False) == _steps(program) + 4


def test_fp16_program_chain_at_fp32(tmp_path):
    program, _ = _hard_swish_program(tmp_path, "fp16")
    feeds = {"x": random((1, 3, 8, 8), low=-6, high=6, seed=303)}
    fused, unfused = _both_plans(program, feeds, precision="fp32")
    (name,) = program.output_names
    np.testing.assert_array_equal(fused[name], unfused[name])


def test_chain_stops_at_a_value_used_elsewhere(tmp_path):
    # `clipped` feeds both the next mul and a sub, and `shifted` is also a program output, so
    # neither may be overwritten in place.
    def build(x):
        shifted = mb.add(x=x, y=1.0, name="shifted")
        clipped = mb.clip(x=mb.relu(x=shifted, name="positive"), alpha=0.0, beta=2.0,
                          name="clipped")
        scaled = mb.mul(x=mb.mul(x=clipped, y=3.0, name="tripled"), y=0.5, name="scaled")
        other = mb.sub(x=clipped, y=x, name="other")
        return [scaled, other, shifted]

    program = _load(tmp_path, build, {"x": ((2, 5), types.fp32)})
    x = random((2, 5), low=-3, high=3, seed=304)
    fused, unfused = _both_plans(program, {"x": x})

    shifted = x + np.float32(1)
    clipped = np.clip(np.maximum(shifted, 0), 0, 2)
    np.testing.assert_array_equal(fused["shifted"], shifted)
    np.testing.assert_array_equal(fused["scaled"], clipped * np.float32(3) * np.float32(0.5))
    np.testing.assert_array_equal(fused["other"], clipped - x)
    for name in program.output_names:
        np.testing.assert_array_equal(fused[name], unfused[name])
    # Fused: relu and clip after `shifted` (which has two uses), then the two muls.
    assert _steps(program, fused=False) == _steps(program) + 2


def test_clips_merge_with_nan_and_infinities(tmp_path):
    def build(x):
        overlapping = mb.clip(x=mb.clip(x=mb.add(x=x, y=0.0), alpha=-1.0, beta=5.0),
                              alpha=0.0, beta=2.0, name="overlapping")
        disjoint = mb.clip(x=mb.clip(x=mb.add(x=x, y=0.0), alpha=0.0, beta=1.0),
                           alpha=2.0, beta=3.0, name="disjoint")
        return [overlapping, disjoint]

    program = _load(tmp_path, build, {"x": ((4, 4), types.fp32)})
    x = _with_special_values(random((4, 4), low=-4, high=4, seed=305))
    fused, unfused = _both_plans(program, {"x": x})

    np.testing.assert_array_equal(fused["overlapping"], np.clip(x, 0, 2))
    assert np.isnan(fused["overlapping"][0, 0])
    np.testing.assert_array_equal(fused["disjoint"].reshape(-1)[1:], np.full(15, 2.0, np.float32))
    for name in program.output_names:
        np.testing.assert_array_equal(fused[name], unfused[name])


def test_operand_larger_than_the_chain_ends_it(tmp_path):
    # A squeeze-and-excitation gate: the (1, 4, 1, 1) chain is multiplied by a (1, 4, 5, 5)
    # tensor, whose result cannot be written into the chain's smaller tensor.
    def build(x):
        gate = mb.reduce_mean(x=x, axes=[2, 3], keep_dims=True)
        gate = mb.mul(x=mb.clip(x=mb.add(x=gate, y=3.0), alpha=0.0, beta=6.0), y=1 / 6)
        return mb.mul(x=gate, y=x, name="gated")

    program = _load(tmp_path, build, {"x": ((1, 4, 5, 5), types.fp32)})
    x = random((1, 4, 5, 5), seed=306)
    fused, unfused = _both_plans(program, {"x": x})
    assert fused["gated"].shape == (1, 4, 5, 5)
    np.testing.assert_array_equal(fused["gated"], unfused["gated"])
    gate = np.clip(x.mean(axis=(2, 3), keepdims=True) + np.float32(3), 0, 6) * np.float32(1 / 6)
    np.testing.assert_allclose(fused["gated"], gate * x, rtol=1e-6)


def test_wrong_declared_shape_runs_the_unfused_ops(tmp_path):
    # coremltools 9.0 declares (1, 3) for matmul of a (4,) vector and a (2, 4, 3) stack, whose
    # result is (2, 3). Adding it in place to a (1, 3) tensor would fail, so the fused step
    # compares the actual shapes first and runs the ops one by one.
    def build(x, y, z):
        product = mb.matmul(x=x, y=y, name="product")
        return mb.mul(x=mb.add(x=mb.relu(x=z), y=product), y=2.0, name="result")

    specs = {"x": ((4,), types.fp32), "y": ((2, 4, 3), types.fp32), "z": ((1, 3), types.fp32)}
    program = _load(tmp_path, build, specs)
    feeds = {"x": random((4,), seed=307), "y": random((2, 4, 3), seed=308),
             "z": random((1, 3), seed=309)}
    assert _steps(program) < _steps(program, fused=False)
    fused, unfused = _both_plans(program, feeds)
    assert fused["result"].shape == (2, 3)
    np.testing.assert_array_equal(fused["result"], unfused["result"])
    expected = (np.maximum(feeds["z"], 0) + feeds["x"] @ feeds["y"]) * np.float32(2)
    np.testing.assert_allclose(fused["result"], expected, rtol=1e-6)


def test_nested_block_reads_keep_values(tmp_path):
    def build(x, flag):
        early = mb.add(x=x, y=1.0, name="early")
        later = mb.mul(x=x, y=3.0, name="later")
        chosen = mb.cond(pred=mb.greater(x=flag, y=0),
                         _true_fn=lambda: mb.add(x=early, y=later),
                         _false_fn=lambda: mb.sub(x=early, y=later))
        return [chosen, mb.mul(x=early, y=2.0, name="reused")]

    specs = {"x": ((3,), types.fp32), "flag": ((1,), types.int32)}
    program = _load(tmp_path, build, specs)
    x = random((3,), seed=310)
    for flag, combine in ((1, np.add), (0, np.subtract)):
        feeds = {"x": x, "flag": np.array([flag], np.int32)}
        fused, unfused = _both_plans(program, feeds)
        first, second = program.output_names
        np.testing.assert_array_equal(fused[first], combine(x + np.float32(1), x * np.float32(3)))
        np.testing.assert_array_equal(fused[second], (x + np.float32(1)) * np.float32(2))
        for name in program.output_names:
            np.testing.assert_array_equal(fused[name], unfused[name])
