"""The executor's API: loading, input checks, ranged shapes, precisions, intermediates, errors."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from coremltools.converters.mil.mil import get_new_symbol
from mil_testing import IOS16, build_program, ct, mb, random, save_program, types

from modelconv.mil import (
    InvalidInput,
    ProgramLoadError,
    UnsupportedOp,
    execute,
    load_program,
    registered_op_types,
)
from modelconv.mil.registry import op, register


@pytest.fixture(scope="module")
def scaled_program(tmp_path_factory):
    """x [2, 3] fp32 and ids [2] int32 -> (x * 2 cast through fp16, ids + 1)."""

    def build(x, ids):
        half = mb.cast(x=x, dtype="fp16")
        doubled = mb.mul(x=half, y=np.float16(2.0), name="doubled")
        return [mb.cast(x=doubled, dtype="fp32", name="scaled"), mb.add(x=ids, y=1, name="next")]

    program = build_program(build, {"x": ((2, 3), types.fp32), "ids": ((2,), types.int32)})
    return load_program(save_program(tmp_path_factory.mktemp("scaled"), program))


def test_loaded_program_describes_itself(scaled_program):
    assert scaled_program.input_names == ["x", "ids"]
    assert scaled_program.output_names == ["scaled", "next"]
    assert {"cast", "mul", "add", "const"} <= scaled_program.op_types
    assert scaled_program.unsupported_op_types == set()
    assert scaled_program.ops == 4
    assert scaled_program.is_fp16


def test_execute_returns_outputs_by_name(scaled_program):
    x = random((2, 3), seed=210)
    outputs = execute(scaled_program, {"x": x, "ids": np.array([1, 5], dtype=np.int32)})
    assert set(outputs) == {"scaled", "next"}
    np.testing.assert_array_equal(outputs["scaled"], (x.astype(np.float16) * 2).astype(np.float32))
    np.testing.assert_array_equal(outputs["next"], [2, 6])


def test_fp32_precision_skips_the_fp16_rounding(scaled_program):
    x = np.array([[1.0001, 2, 3], [4, 5, 6]], dtype=np.float32)
    outputs = execute(scaled_program, {"x": x, "ids": np.zeros(2, np.int32)}, precision="fp32")
    np.testing.assert_array_equal(outputs["scaled"], x * 2)


def test_intermediates_hold_every_op_output(scaled_program):
    x = random((2, 3), seed=211)
    outputs = execute(scaled_program, {"x": x, "ids": np.zeros(2, np.int32)}, intermediates=True)
    assert outputs["doubled"].dtype == np.float16
    assert {"scaled", "next", "doubled"} <= set(outputs)


def test_integer_arrays_of_another_width_are_accepted(scaled_program):
    outputs = execute(scaled_program, {"x": np.zeros((2, 3)), "ids": np.array([7, 8])})
    np.testing.assert_array_equal(outputs["next"], [8, 9])


@pytest.mark.parametrize("inputs,message", [
    ({"x": np.zeros((2, 3), np.float32)}, "missing input 'ids'"),
    ({"x": np.zeros((2, 3)), "ids": np.zeros(2), "extra": np.zeros(1)}, "unknown input 'extra'"),
    ({"x": np.zeros((3, 3)), "ids": np.zeros(2, np.int32)}, "size 3 in dimension 0"),
    ({"x": np.zeros((2, 3, 1)), "ids": np.zeros(2, np.int32)}, "expected rank 2"),
    ({"x": np.zeros((2, 3)), "ids": np.array([0.5, 1.0])}, "pass integer values"),
    ({"x": np.zeros((2, 3)), "ids": np.array([2**40, 1])}, "do not fit in int32"),
])
def test_bad_inputs_get_clear_errors(scaled_program, inputs, message):
    with pytest.raises(InvalidInput, match=message):
        execute(scaled_program, inputs)


def test_unknown_precision_is_rejected(scaled_program):
    with pytest.raises(InvalidInput, match="precision must be one of 'program', 'fp32'"):
        execute(scaled_program, {"x": np.zeros((2, 3)), "ids": np.zeros(2, np.int32)},
                precision="fp64")


def test_missing_package_is_a_load_error(tmp_path):
    with pytest.raises(ProgramLoadError, match="does not exist"):
        load_program(tmp_path / "absent.mlpackage")


def test_plain_folder_is_load_error(tmp_path):
    with pytest.raises(ProgramLoadError, match="not an .mlpackage"):
        load_program(tmp_path)


def test_zipped_package_is_load_error(tmp_path):
    archive = tmp_path / "model.mlpackage.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("model.mlpackage/Manifest.json", "{}")
    with pytest.raises(ProgramLoadError, match="is a zip archive; unzip it"):
        load_program(archive)


def test_onnx_file_is_load_error(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07")
    with pytest.raises(ProgramLoadError, match="neither an .mlpackage folder nor an .mlmodel"):
        load_program(model)


def test_neural_network_model_is_rejected(tmp_path):
    program = build_program(lambda x: mb.relu(x=x), {"x": ((2,), types.fp32)})
    model = ct.convert(program, convert_to="neuralnetwork")
    path = tmp_path / "network.mlmodel"
    model.save(str(path))
    with pytest.raises(ProgramLoadError, match="not an ML program"):
        load_program(path)


def test_unsupported_op_names_the_op_type_and_name(tmp_path):
    program = build_program(
        lambda x: mb.add(x=x, y=mb.random_uniform(shape=[2], low=0.0, high=1.0, name="noise")),
        {"x": ((2,), types.fp32)},
    )
    loaded = load_program(save_program(tmp_path, program))
    assert "random_uniform" in loaded.op_types
    assert loaded.unsupported_op_types == {"random_uniform"}
    with pytest.raises(UnsupportedOp) as raised:
        execute(loaded, {"x": np.zeros(2, np.float32)})
    assert raised.value.op_type == "random_uniform"
    assert raised.value.op_name == "noise"
    assert "'random_uniform' (op 'noise')" in str(raised.value)


def test_registering_an_op_type_twice_raises():
    assert "conv" in registered_op_types()
    with pytest.raises(ValueError, match="'conv' is already registered"):
        register("conv", lambda ctx, x: x)
    with pytest.raises(ValueError, match="'relu' is already registered"):
        op("relu")(lambda ctx, x: x)


def test_at_least_ninety_op_types_are_registered():
    assert len(registered_op_types()) >= 90


def _ranged_program(tmp_path):
    length = get_new_symbol()

    def build(x):
        # A reshape through a shape computed at run time, and a reduction over the ranged axis.
        doubled = mb.reshape(x=mb.concat(values=(x, x), axis=1), shape=[1, -1, 4])
        return [mb.reduce_sum(x=doubled, axes=[1], name="total"), mb.shape(x=doubled, name="size")]

    program = build_program(build, {"x": ((1, length, 4), types.fp32)})
    inputs = [ct.TensorType(name="x", shape=(1, ct.RangeDim(2, 16, 4), 4))]
    return load_program(save_program(tmp_path, program, inputs=inputs))


def test_ranged_input_takes_array_size(tmp_path):
    program = _ranged_program(tmp_path)
    assert program.inputs["x"].ranges[1] == (2, 16)
    for length in (2, 7, 16):
        x = random((1, length, 4), seed=length)
        outputs = execute(program, {"x": x})
        np.testing.assert_allclose(outputs["total"], 2 * x.sum(axis=1), rtol=1e-5)
        np.testing.assert_array_equal(outputs["size"], [1, 2 * length, 4])


@pytest.mark.parametrize("length", [1, 17])
def test_ranged_input_outside_its_range_is_rejected(tmp_path, length):
    program = _ranged_program(tmp_path)
    with pytest.raises(InvalidInput, match=r"outside the allowed range \[2, 16\]"):
        execute(program, {"x": np.zeros((1, length, 4), np.float32)})


def test_enumerated_shapes_accept_only_their_shapes(tmp_path):
    program = build_program(lambda x: mb.relu(x=x), {"x": ((get_new_symbol(), 3), types.fp32)})
    shapes = ct.EnumeratedShapes(shapes=[[1, 3], [4, 3]], default=[1, 3])
    loaded = load_program(save_program(tmp_path, program,
                                       inputs=[ct.TensorType(name="x", shape=shapes)]))
    (result,) = execute(loaded, {"x": -np.ones((4, 3), np.float32)}).values()
    np.testing.assert_array_equal(result, np.zeros((4, 3)))
    with pytest.raises(InvalidInput, match="accepts only the shapes"):
        execute(loaded, {"x": np.zeros((2, 3), np.float32)})


def test_empty_dimension_flows_through_ops(tmp_path):
    program = build_program(
        lambda x: mb.reduce_sum(x=mb.mul(x=x, y=2.0), axes=[0], keep_dims=True),
        {"x": ((get_new_symbol(), 3), types.fp32)},
    )
    inputs = [ct.TensorType(name="x", shape=(ct.RangeDim(0, 4, 1), 3))]
    loaded = load_program(save_program(tmp_path, program, inputs=inputs))
    (result,) = execute(loaded, {"x": np.zeros((0, 3), np.float32)}).values()
    np.testing.assert_array_equal(result, np.zeros((1, 3)))


def test_declared_shape_that_contradicts_the_op_is_recorded(tmp_path):
    # coremltools 9.0 declares (1, 3) for matmul of a (4,) vector and a (2, 4, 3) stack. By
    # the op definition the result is (2, 3), which the executor computes and reports.
    y = random((2, 4, 3), seed=212)
    program = build_program(lambda x, y: mb.matmul(x=x, y=y, name="product"),
                            {"x": ((4,), types.fp32), "y": ((2, 4, 3), types.fp32)})
    loaded = load_program(save_program(tmp_path, program))
    x = random((4,), seed=213)
    (result,) = execute(loaded, {"x": x, "y": y}).values()
    np.testing.assert_allclose(result, x @ y, rtol=1e-6)
    assert "declares (1, 3)" in loaded.shape_mismatches["product"]


def test_fp16_inputs_of_ios16_programs(tmp_path):
    program = build_program(lambda x: mb.add(x=x, y=np.float16(1.0)), {"x": ((3,), types.fp16)},
                            IOS16)
    loaded = load_program(save_program(tmp_path, program, opset=IOS16))
    x = np.array([1.0, 2048.0, 0.1], dtype=np.float16)
    (result,) = execute(loaded, {"x": x}).values()
    assert result.dtype == np.float16
    np.testing.assert_array_equal(result, x + np.float16(1.0))
    (result32,) = execute(loaded, {"x": x}, precision="fp32").values()
    assert result32.dtype == np.float32
    assert result32[1] == 2049.0


def test_documented_op_list_matches_the_registry():
    from pathlib import Path

    from modelconv.mil.oplist import op_table, replace_table

    document = (Path(__file__).resolve().parents[2] / "docs" / "mil-executor.md").read_text()
    assert replace_table(document, op_table()) == document, (
        "docs/mil-executor.md is out of date; run python -m modelconv.mil.oplist --write "
        "docs/mil-executor.md"
    )
