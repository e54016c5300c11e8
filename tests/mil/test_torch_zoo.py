"""Whole models: PyTorch converted by coremltools and executed here, against PyTorch itself.

fp32 programs must agree to about 1e-4; fp16 programs to what float16 allows (a few 1e-3
relative to the output's scale), and executing an fp16 program at fp32 precision must land
between the two.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_zoo import ZOO, converted_program, numpy_inputs, reference_outputs

from modelconv.mil import execute


@pytest.fixture(scope="module")
def zoo_programs(tmp_path_factory):
    """Convert each zoo model at most once per precision for this module."""
    cache = {}

    def get(name, precision):
        if (name, precision) not in cache:
            folder = tmp_path_factory.mktemp(f"{name}_{precision}")
            cache[name, precision] = converted_program(ZOO[name], folder, precision)
        return cache[name, precision]

    return get


def _scale(reference):
    return max(float(np.abs(reference).max()), 1e-6)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_fp32_program_agrees_with_pytorch(zoo_programs, name):
    model, program = zoo_programs(name, "fp32")
    case = ZOO[name]
    outputs = execute(program, numpy_inputs(case.inputs))
    references = reference_outputs(model, case.inputs)
    assert len(outputs) == len(references)
    for output, reference in zip(outputs.values(), references):
        assert output.shape == reference.shape
        np.testing.assert_allclose(output, reference, rtol=1e-4, atol=1e-4 * _scale(reference))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_fp16_program_agrees_with_pytorch_loosely(zoo_programs, name):
    model, program = zoo_programs(name, "fp16")
    case = ZOO[name]
    assert program.is_fp16
    inputs = numpy_inputs(case.inputs)
    emulated = execute(program, inputs)
    widened = execute(program, inputs, precision="fp32")
    for (output, wide), reference in zip(zip(emulated.values(), widened.values()),
                                         reference_outputs(model, case.inputs)):
        scale = _scale(reference)
        error = np.abs(output - reference).max() / scale
        wide_error = np.abs(wide - reference).max() / scale
        assert error < 3e-2, f"fp16 error {error:.3g} of the output scale"
        # The fp32 run keeps only the fp16 rounding of the weights.
        assert wide_error < 3e-3, f"fp32-precision error {wide_error:.3g} of the output scale"
        assert wide_error <= error + 1e-6


@pytest.mark.parametrize("length", [2, 5, 33, 64])
def test_ranged_sequence_runs_at_every_length(zoo_programs, length):
    model, program = zoo_programs("ranged_sequence", "fp32")
    ids = torch.randint(0, 50, (1, length), generator=torch.Generator().manual_seed(length))
    outputs = execute(program, {"ids": ids.numpy()})
    for output, reference in zip(outputs.values(), reference_outputs(model, {"ids": ids})):
        assert output.shape == reference.shape
        np.testing.assert_allclose(output, reference, rtol=1e-4, atol=1e-5)
