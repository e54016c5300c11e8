"""diagnose_precision, first_nan_op and check_against_reference on programs with known faults."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from mil_testing import build_program, mb, save_program, types

from modelconv.mil import (
    InvalidInput,
    check_against_reference,
    diagnose_precision,
    execute,
    first_nan_op,
    load_program,
)


@pytest.fixture(scope="module")
def cancelling_program(tmp_path_factory):
    """fp16 program: y = ((x + 1000) - 1000) * 3, whose add loses x's low digits in fp16."""

    def build(x):
        half = mb.cast(x=x, dtype="fp16", name="to_fp16")
        shifted = mb.add(x=half, y=np.float16(1000.0), name="shift")
        back = mb.sub(x=shifted, y=np.float16(1000.0), name="unshift")
        scaled = mb.mul(x=back, y=np.float16(3.0), name="scale")
        return mb.cast(x=scaled, dtype="fp32", name="y")

    program = build_program(build, {"x": ((8,), types.fp32)})
    return load_program(save_program(tmp_path_factory.mktemp("cancel"), program))


X = np.linspace(0.01, 0.08, 8).astype(np.float32)


def test_first_divergent_op_is_where_precision_is_lost(cancelling_program):
    diagnosis = diagnose_precision(cancelling_program, {"x": X}, threshold=1e-2)
    assert [item.name for item in diagnosis.first_divergent_ops] == ["unshift"]
    first = diagnosis.first_divergent_ops[0]
    assert first.op_type == "sub"
    assert first.max_rel_error > 1e-2
    # Everything downstream diverges too, but only the origin counts as first.
    assert [item.name for item in diagnosis.divergent_ops] == ["unshift", "scale", "y"]
    assert diagnosis.ops_total == 5
    assert diagnosis.ops_in_fp16 == 4


def test_errors_below_the_threshold_are_not_reported(cancelling_program):
    diagnosis = diagnose_precision(cancelling_program, {"x": X * 1000}, threshold=1e-2)
    assert diagnosis.first_divergent_ops == []


def test_threshold_must_be_positive(cancelling_program):
    with pytest.raises(InvalidInput, match="threshold must be a positive number"):
        diagnose_precision(cancelling_program, {"x": X}, threshold=0)


def test_fp16_mismatch_traced_to_losing_op(cancelling_program):
    check = check_against_reference(cancelling_program, {"x": X}, {"y": X * 3}, rtol=1e-3,
                                     atol=1e-5)
    (mismatch,) = check.mismatches
    assert mismatch.problem == "values"
    assert mismatch.op_name == "unshift"
    # In fp32 the same cancellation costs about 1e-4, far below fp16's 3e-2.
    assert check_against_reference(cancelling_program, {"x": X}, {"y": X * 3},
                                   precision="fp32", rtol=1e-3, atol=1e-4).passed


def test_reference_must_name_existing_outputs(cancelling_program):
    with pytest.raises(InvalidInput, match="no program output named 'z'"):
        check_against_reference(cancelling_program, {"x": X}, {"z": X})


def test_empty_reference_is_rejected(cancelling_program):
    with pytest.raises(InvalidInput, match="no reference outputs to compare with"):
        check_against_reference(cancelling_program, {"x": X}, {})


def test_first_nan_op_skips_nan_inputs(tmp_path):
    def build(x):
        zero = mb.mul(x=x, y=0.0, name="zero")
        ratio = mb.real_div(x=zero, y=zero, name="ratio")
        return mb.add(x=ratio, y=1.0, name="shifted")

    program = load_program(save_program(tmp_path, build_program(build,
                                                                 {"x": ((3,), types.fp32)})))
    origin = first_nan_op(program, {"x": np.ones(3, np.float32)})
    assert origin.name == "ratio"
    assert origin.output == "ratio"
    assert origin.nan_count == 3
    assert first_nan_op(program, {"x": np.ones(3, np.float32)}, precision="fp32").name == "ratio"
    assert np.isnan(execute(program, {"x": np.ones(3, np.float32)})["shifted"]).all()


def test_loading_prints_nothing_in_a_new_process(cancelling_program):
    code = ("import sys; from modelconv.mil import load_program; "
            "load_program(sys.argv[1])")
    result = subprocess.run([sys.executable, "-c", code, cancelling_program.path],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr == ""
