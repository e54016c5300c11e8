"""The rungs of the Core ML conversion ladder and one `ct.convert` call.

Rungs, in the order `coreml.path: auto` tries them:

1. `torch.export`: `torch.export.export`, lowered to the ATen dialect with
   `run_decompositions({})` (coremltools 9.0 rejects the training dialect);
2. `torch.export+decompositions`: the same program decomposed with the default core ATen
   table (`run_decompositions()`). Ops that coremltools lacks are often present decomposed:
   all-MiniLM-L6-v2's `new_ones` and bicubic `upsample_bicubic2d` convert this way only;
3. `jit.trace`: `torch.jit.trace` (a TorchScript source is used as it is). onnx2torch modules
   often convert only this way, since torch.export fails inside onnx2torch's Resize.

`coreml.path: export` runs rungs 1 and 2; `trace` runs rung 3.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np

from ..spec import ConversionSpec
from . import coreml_fixes
from .signature import (
    COREML_COMPUTE_UNITS,
    coreml_inputs,
    example_arguments,
    export_dynamic_shapes,
)
from .sources import LoadedSource

EXPORT = "torch.export"
EXPORT_DECOMPOSED = "torch.export+decompositions"
TRACE = "jit.trace"
LADDERS = {
    "auto": (EXPORT, EXPORT_DECOMPOSED, TRACE),
    "export": (EXPORT, EXPORT_DECOMPOSED),
    "trace": (TRACE,),
}


class ProgramCache:
    """Builds each rung's torch program once; the export rungs share one torch.export run."""

    def __init__(self, spec: ConversionSpec, source: LoadedSource):
        self.spec = spec
        self.source = source
        self._exported = None
        self._export_error = None

    def program(self, rung: str):
        """Return what `ct.convert` takes for `rung`: an ExportedProgram or a TorchScript module."""
        if rung == TRACE:
            return self._traced()
        exported = self._export()
        if rung == EXPORT:
            return exported.run_decompositions({})
        return exported.run_decompositions()

    def _export(self):
        import torch

        # A failed torch.export fails both export rungs; it runs once and its error is kept.
        if self._export_error is not None:
            raise self._export_error
        if self._exported is None:
            if self.source.exported_program is not None:
                self._exported = self.source.exported_program
                return self._exported
            try:
                self._exported = torch.export.export(
                    self.source.torch_module(),
                    example_arguments(self.spec),
                    dynamic_shapes=export_dynamic_shapes(self.spec),
                )
            except Exception as error:  # torch.export raises many types; the rung records it
                self._export_error = error
                raise
        return self._exported

    def _traced(self):
        import torch

        module = self.source.torch_module()
        if isinstance(module, torch.jit.ScriptModule):
            return module
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings repeat what validation checks
            return torch.jit.trace(module, example_arguments(self.spec), check_trace=False)


def convert_program(spec: ConversionSpec, program, precision, output_dtypes: dict):
    """Convert a torch program to an ML Program; `precision` is a ct precision or transform.

    `output_dtypes` maps output names to numpy dtypes; float outputs are declared float32 so
    the package's interface matches the reference whatever precision it computes in.
    """
    import coremltools as ct

    coreml_fixes.install()
    settings = spec.coreml
    options = {}
    if precision is not ct.precision.FLOAT32:
        options["pass_pipeline"] = coreml_fixes.fp16_pass_pipeline()
    outputs = [
        ct.TensorType(name=output.name, dtype=np.float32)
        if np.dtype(output_dtypes.get(output.name, np.float32)).kind == "f"
        else ct.TensorType(name=output.name)
        for output in spec.outputs
    ]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return ct.convert(
            program,
            inputs=coreml_inputs(spec),
            outputs=outputs,
            convert_to="mlprogram",
            minimum_deployment_target=getattr(ct.target, settings.minimum_deployment_target),
            compute_precision=precision,
            compute_units=ct.ComputeUnit[COREML_COMPUTE_UNITS[settings.compute_units]],
            skip_model_load=True,
            **options,
        )


def op_type_counts(mlmodel) -> dict[str, int]:
    """Count the MIL op types of a converted model's main function (nested blocks included)."""
    counts: dict[str, int] = {}

    def visit(operations):
        for operation in operations:
            counts[operation.op_type] = counts.get(operation.op_type, 0) + 1
            for block in operation.blocks:
                visit(block.operations)

    visit(mlmodel._mil_program.functions["main"].operations)
    return dict(sorted(counts.items()))


def fp16_op_fraction(mlmodel) -> float:
    """Return the fraction of non-const ops whose outputs are float16."""
    from coremltools.converters.mil.mil import types

    computing = [
        operation
        for operation in mlmodel._mil_program.functions["main"].operations
        if operation.op_type != "const"
    ]
    if not computing:
        return 0.0
    in_fp16 = [
        operation
        for operation in computing
        if any(output.dtype == types.fp16 for output in operation.outputs)
    ]
    return len(in_fp16) / len(computing)


def declared_output_shapes(mlmodel) -> dict[str, tuple]:
    """Return the output shapes the package declares (empty for outputs of dynamic shape)."""
    shapes = {}
    for output in mlmodel.get_spec().description.output:
        array = output.type.multiArrayType
        shapes[output.name] = tuple(int(size) for size in array.shape)
    return shapes


def package_size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
