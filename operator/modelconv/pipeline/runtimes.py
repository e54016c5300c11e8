"""Running a model on sample inputs in each runtime: PyTorch, ONNX Runtime, the Core ML program.

Inputs and outputs are numpy arrays keyed by the names in the spec. The Core ML program runs
through `modelconv.mil`, which executes a saved ML Program op by op on Linux; when that module
is not installed, `coreml_executor_available()` is false and callers say so in their results.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import INVALID_MODEL, INVALID_SPEC, ConversionError
from .feature_names import FeatureNames, match_feature_names

# Where validation figures for the Core ML package come from, as stage results state it.
COREML_EXECUTED_FP16 = "Core ML program executed by the reference executor (fp16 emulated)"
COREML_EXECUTED_FP32 = "Core ML program executed by the reference executor (fp32)"
COREML_NOT_EXECUTED = (
    "Core ML package not executed: the reference executor (modelconv.mil) is not installed,"
    " so only ONNX Runtime was compared with the reference"
)


def flatten_outputs(value: Any) -> list:
    """Flatten a model's return value (tensor, tuple, list, dict) into a list of tensors."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [tensor for item in value for tensor in flatten_outputs(item)]
    raise ConversionError(
        INVALID_MODEL,
        f"the model returned a {type(value).__name__}; outputs must be tensors, or tuples,"
        " lists or dicts of tensors",
    )


def run_torch(module, inputs: list[dict[str, np.ndarray]], input_names, output_names) -> list:
    """Run a torch module on each sample; return outputs by name, as numpy arrays."""
    import torch

    results = []
    with torch.no_grad():
        for sample in inputs:
            arguments = [torch.from_numpy(np.ascontiguousarray(sample[name])) for name in input_names]
            try:
                outputs = flatten_outputs(module(*arguments))
            except ConversionError:
                raise
            except Exception as error:  # the model's own code rejected the inputs
                raise rejected_inputs_error(sample, input_names, error) from None
            results.append(_name_outputs(outputs, output_names))
    return results


def rejected_inputs_error(sample: dict[str, np.ndarray], input_names, error) -> ConversionError:
    """Return the InvalidSpec error for a source model that failed on a validation sample."""
    shapes = {name: tuple(sample[name].shape) for name in input_names}
    return ConversionError(
        INVALID_SPEC,
        f"the source model failed on validation inputs {shapes}:"
        f" {type(error).__name__}: {str(error).strip()[:300]}; check inputs[].shape,"
        " dtype and values in the spec",
    )


def _tensors(count: int) -> str:
    return "1 tensor" if count == 1 else f"{count} tensors"


def _name_outputs(outputs: list, output_names: list[str]) -> dict[str, np.ndarray]:
    if len(outputs) != len(output_names):
        raise ConversionError(
            INVALID_SPEC,
            f"outputs: the model returns {_tensors(len(outputs))} but the spec names"
            f" {len(output_names)} ({', '.join(output_names)}); list one name per returned tensor",
        )
    return {
        name: np.asarray(tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else tensor)
        for name, tensor in zip(output_names, outputs)
    }


def onnx_session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = min(2, os.cpu_count() or 1)
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def run_onnx(
    path: Path, inputs: list[dict[str, np.ndarray]], input_names, output_names, *,
    source_model: bool = False,
) -> list:
    """Run an ONNX file with ONNX Runtime; outputs are taken by name, in spec order.

    With `source_model` (the file is the spec's ONNX source), a sample that ONNX Runtime
    rejects is an InvalidSpec, as it is for a PyTorch source in `run_torch`.
    """
    session = onnx_session(path)
    graph_inputs = [item.name for item in session.get_inputs()]
    spec_inputs = list(input_names)
    # Converted ONNX models take their inputs positionally, in graph order, so the spec
    # must list them in that order too.
    if graph_inputs != spec_inputs:
        raise ConversionError(
            INVALID_SPEC,
            f"inputs: the ONNX graph takes {graph_inputs} but the spec lists {spec_inputs};"
            " name the inputs as the graph does, in its order",
        )
    graph_outputs = [item.name for item in session.get_outputs()]
    spec_outputs = list(output_names)
    if sorted(graph_outputs) != sorted(spec_outputs):
        raise ConversionError(
            INVALID_SPEC,
            f"outputs: the ONNX graph's outputs are {graph_outputs} but the spec lists"
            f" {spec_outputs}; list each graph output once, by its name (any order)",
        )
    results = []
    for sample in inputs:
        try:
            outputs = session.run(spec_outputs, {name: sample[name] for name in graph_inputs})
        except Exception as error:  # onnxruntime's errors derive from Exception only
            if not source_model:
                raise
            raise rejected_inputs_error(sample, graph_inputs, error) from None
        results.append(_name_outputs(list(outputs), spec_outputs))
    return results


# --- the Core ML program ----------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def coreml_executor() -> Optional[Any]:
    """Return the `modelconv.mil` module, or None when it is not installed (checked once)."""
    try:
        from .. import mil
    except ImportError:
        return None
    return mil


def coreml_executor_available() -> bool:
    return coreml_executor() is not None


def run_coreml(
    package: Path,
    inputs: list[dict[str, np.ndarray]],
    precision: str = "program",
    output_names: Sequence[str] = (),
) -> list[dict[str, np.ndarray]]:
    """Execute a saved Core ML package on each sample with the reference executor.

    Samples are keyed by spec input name and results by spec output name (`output_names`),
    whatever names coremltools gave the program's features. `precision="program"` keeps the
    program's own precision (fp16 emulated where it is fp16); "fp32" runs every op in
    float32. Raises `modelconv.mil.UnsupportedOp` for an op the executor does not implement.
    """
    mil = coreml_executor()
    program = mil.load_program(package)
    names = program_feature_names(program, list(inputs[0]) if inputs else [], output_names)
    return [
        names.by_spec_name(mil.execute(program, names.feed(sample), precision=precision))
        for sample in inputs
    ]


def program_feature_names(
    program, spec_inputs: Sequence[str], spec_outputs: Sequence[str] = ()
) -> FeatureNames:
    """Return the Core ML names of the spec's features in a loaded program."""
    return match_feature_names(
        spec_inputs, program.input_names, spec_outputs, program.output_names
    )


def diagnose_fp16(package: Path, sample: dict[str, np.ndarray], threshold: float):
    """Return the executor's `PrecisionDiagnosis` of an fp16 program on one sample."""
    mil = coreml_executor()
    program = mil.load_program(package)
    names = program_feature_names(program, list(sample))
    return mil.diagnose_precision(program, names.feed(sample), threshold)


def op_consumers(package: Path) -> dict[str, set[str]]:
    """Map each op name of a saved program to the names of the ops that read its outputs."""
    mil = coreml_executor()
    operations = list(mil.executor.iterate_ops(mil.load_program(package).program.block.ops))
    producers = {output: node.name for node in operations for output, _ in node.outputs}
    consumers: dict[str, set[str]] = {}
    for node in operations:
        for argument in node.inputs.values():
            for reference in argument if isinstance(argument, list) else [argument]:
                producer = producers.get(getattr(reference, "name", None))
                if producer is not None:
                    consumers.setdefault(producer, set()).add(node.name)
    return consumers
