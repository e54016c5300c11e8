"""Building small MIL programs for the executor's tests: build, convert, save, load, run.

`run_ops` builds a program from a function of MIL builder calls, converts it with
coremltools (no optimization passes, so every op stays as written), saves it under a
temporary folder, loads it back with `modelconv.mil.load_program` and executes it.
"""

from __future__ import annotations

import gc
import itertools
import logging
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore", module="coremltools")
logging.getLogger("coremltools").setLevel(logging.ERROR)

import coremltools as ct  # noqa: E402
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import Function, Program, types  # noqa: E402

from modelconv.mil import execute, load_program  # noqa: E402

# ct.convert calls gc.collect(), which scans every object torch and coremltools created and
# took about half a second per conversion here. The collector skips frozen objects.
gc.freeze()

IOS15, IOS16, IOS17, IOS18 = ct.target.iOS15, ct.target.iOS16, ct.target.iOS17, ct.target.iOS18

_MIL_TYPES = {np.dtype(np.float32): types.fp32, np.dtype(np.float16): types.fp16,
              np.dtype(np.int32): types.int32}
_counter = itertools.count()


def build_program(build, specs: dict, opset=IOS15) -> Program:
    """Build a program whose main function has `specs` ({name: (shape, mil_type)}) as inputs."""
    placeholders = {name: mb.placeholder(shape=shape, dtype=dtype) for name, (shape, dtype) in
                    specs.items()}
    program = Program()
    with Function(placeholders, opset_version=opset) as function:
        outputs = build(**function.inputs)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        function.set_outputs(list(outputs))
        program.add_function("main", function)
    return program


def save_program(tmp_path: Path, program: Program, opset=IOS15, inputs=None,
                 compute_precision=ct.precision.FLOAT32) -> Path:
    """Convert `program` with no optimization passes and save it; return the package path."""
    model = ct.convert(
        program,
        convert_to="mlprogram",
        minimum_deployment_target=opset,
        compute_precision=compute_precision,
        pass_pipeline=ct.PassPipeline.EMPTY,
        inputs=inputs,
    )
    path = Path(tmp_path) / f"program_{next(_counter)}.mlpackage"
    model.save(str(path))
    return path


def input_specs(feeds: dict) -> dict:
    return {name: (value.shape, _MIL_TYPES[np.asarray(value).dtype]) for name, value in
            feeds.items()}


def run_ops(tmp_path, build, feeds: dict, opset=IOS15, precision="program", specs=None):
    """Build, convert, save, load and execute; return the outputs in build order."""
    program = build_program(build, specs or input_specs(feeds), opset)
    loaded = load_program(save_program(tmp_path, program, opset))
    results = execute(loaded, feeds, precision=precision)
    return [results[name] for name in loaded.output_names]


def run_fp16(tmp_path, build, feeds: dict, opset=IOS15, precision="program"):
    """Like `run_ops`, with every fp32 input cast to fp16 before `build` receives it and
    every output cast back to fp32, the way the converter wraps an fp16 program."""

    def wrapped(**inputs):
        cast = {
            name: mb.cast(x=value, dtype="fp16") if value.dtype == types.fp32 else value
            for name, value in inputs.items()
        }
        outputs = build(**cast)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return [mb.cast(x=value, dtype="fp32") if value.dtype == types.fp16 else value
                for value in outputs]

    return run_ops(tmp_path, wrapped, feeds, opset, precision)


def random(shape, low=-1.0, high=1.0, seed=0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype(dtype)


__all__ = ["mb", "types", "ct", "IOS15", "IOS16", "IOS17", "IOS18",
           "build_program", "save_program", "run_ops", "run_fp16", "random", "input_specs"]
