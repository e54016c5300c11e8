"""Faults of coremltools 9.0 conversions that the executor reproduces, so validation catches them.

Each test converts a small PyTorch module as a user would, executes the saved program and
checks it against PyTorch with `check_against_reference`, which must fail and name the op
where the fault starts. Observed with coremltools 9.0 and torch 2.13 on this machine:

- torch.diagonal (torch.export path, with or without the core ATen decompositions) becomes
  band_part(x, 0, 0): a 5x5 matrix with the diagonal kept, instead of the 5 diagonal values;
  jit.trace refuses the op outright.
- torch.triu(x, diagonal=1) becomes x - band_part(x, -1, 0) on the jit.trace path and on the
  torch.export path without decompositions, so -inf - (-inf) gives NaN below the diagonal
  where PyTorch gives 0. With the core ATen decompositions it converts correctly.
- An additive mask holding torch.finfo(torch.float32).min becomes -inf when the program is
  converted to float16, so softmax over a fully masked row is NaN instead of uniform.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mil_testing import ct
from torch_zoo import convert

from modelconv.mil import check_against_reference, execute, first_nan_op, load_program


class Diagonal(torch.nn.Module):
    def forward(self, x):
        return torch.diagonal(x)


class UpperTriangle(torch.nn.Module):
    def forward(self, x):
        return torch.triu(x, diagonal=1)


class MaskedScores(torch.nn.Module):
    def __init__(self):
        super().__init__()
        mask = torch.zeros(4, 4)
        mask[2, :] = torch.finfo(torch.float32).min
        self.register_buffer("mask", mask)

    def forward(self, query, key):
        return torch.softmax(query @ key.transpose(-1, -2) + self.mask, dim=-1)


def _reference(module, inputs):
    with torch.no_grad():
        return module(*inputs.values()).numpy()


@pytest.mark.parametrize("decompose", [True, False], ids=["decomposed", "undecomposed"])
def test_diagonal_becomes_band_part_matrix(tmp_path, decompose):
    x = torch.randn(5, 5, generator=torch.Generator().manual_seed(220))
    inputs = {"x": x}
    program = load_program(convert(Diagonal().eval(), inputs, tmp_path, "fp32",
                                   decompose=decompose))
    (output_name,) = program.output_names
    (result,) = execute(program, {"x": x.numpy()}).values()

    # The executor runs what the converter produced: the input with everything but its
    # diagonal zeroed, where PyTorch returns the five diagonal values.
    assert result.shape == (5, 5)
    np.testing.assert_array_equal(result, np.diag(np.diag(x.numpy())))
    check = check_against_reference(program, {"x": x.numpy()},
                                    {output_name: _reference(Diagonal(), inputs)})
    assert not check.passed
    (mismatch,) = check.mismatches
    assert mismatch.problem == "shape"
    assert mismatch.op_type == "band_part"
    assert "differs from the reference shape (5,)" in mismatch.message


def test_diagonal_is_refused_by_the_trace_path(tmp_path):
    traced = torch.jit.trace(Diagonal().eval(), (torch.randn(5, 5),))
    with pytest.raises(NotImplementedError, match="offset == 0"):
        ct.convert(traced, inputs=[ct.TensorType(name="x", shape=(5, 5))],
                   convert_to="mlprogram")


@pytest.mark.parametrize("trace", [False, True], ids=["undecomposed_export", "trace"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_triu_of_minus_infinity_gives_nan(tmp_path, trace, precision):
    x = torch.full((3, 3), float("-inf"))
    program = load_program(convert(UpperTriangle().eval(), {"x": x}, tmp_path, precision,
                                   trace=trace, decompose=False))
    (output_name,) = program.output_names
    (result,) = execute(program, {"x": x.numpy()}).values()

    reference = _reference(UpperTriangle(), {"x": x})
    lower = np.tril_indices(3)
    assert np.isnan(result[lower]).all()
    assert (reference[lower] == 0).all()
    assert np.isneginf(result[np.triu_indices(3, 1)]).all()

    check = check_against_reference(program, {"x": x.numpy()}, {output_name: reference})
    (mismatch,) = check.mismatches
    assert mismatch.problem == "nan"
    assert mismatch.op_type == "sub"
    origin = first_nan_op(program, {"x": x.numpy()})
    assert origin.op_type == "sub"
    assert origin.nan_count == 6


def test_triu_decomposed_export_passes(tmp_path):
    x = torch.full((3, 3), float("-inf"))
    program = load_program(convert(UpperTriangle().eval(), {"x": x}, tmp_path, "fp32"))
    (output_name,) = program.output_names
    reference = _reference(UpperTriangle(), {"x": x})
    check = check_against_reference(program, {"x": x.numpy()}, {output_name: reference})
    assert check.passed, check.mismatches
    assert "band_part" not in program.op_types


def _masked_inputs():
    generator = torch.Generator().manual_seed(221)
    return {"query": torch.randn(4, 8, generator=generator),
            "key": torch.randn(4, 8, generator=generator)}


def test_float32_minimum_mask_gives_nan_in_fp16(tmp_path):
    inputs = _masked_inputs()
    module = MaskedScores().eval()
    program = load_program(convert(module, inputs, tmp_path, "fp16"))
    (output_name,) = program.output_names
    feeds = {name: value.numpy() for name, value in inputs.items()}
    (result,) = execute(program, feeds).values()

    reference = _reference(module, inputs)
    np.testing.assert_allclose(reference[2], np.full(4, 0.25), rtol=1e-6)
    assert np.isnan(result[2]).all()
    np.testing.assert_allclose(np.delete(result, 2, axis=0), np.delete(reference, 2, axis=0),
                               atol=2e-3)

    check = check_against_reference(program, feeds, {output_name: reference})
    (mismatch,) = check.mismatches
    assert mismatch.problem == "nan"
    assert mismatch.op_type == "softmax"
    # The constant itself carries the fault: the fp16 program stores the mask as -inf.
    mask_constants = [value for value in program.program.consts.values()
                      if getattr(value, "shape", None) == (4, 4)]
    assert any(np.isneginf(value[2]).all() for value in mask_constants)


def test_float32_minimum_mask_passes_at_fp32(tmp_path):
    inputs = _masked_inputs()
    module = MaskedScores().eval()
    program = load_program(convert(module, inputs, tmp_path, "fp32"))
    (output_name,) = program.output_names
    feeds = {name: value.numpy() for name, value in inputs.items()}
    check = check_against_reference(program, feeds, {output_name: _reference(module, inputs)},
                                    rtol=1e-4, atol=1e-5)
    assert check.passed, check.mismatches
