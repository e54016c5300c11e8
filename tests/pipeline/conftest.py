"""Fixtures of the pipeline tests: specs for the synthetic models and cached stage runs.

Stage runs are cached per session (`pipeline_runs`), so tests that look at different aspects
of one conversion share it; each run still goes through the real exporters, coremltools and
ONNX Runtime.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # factories are named `conversion_zoo:<name>`

from modelconv.errors import ConversionError  # noqa: E402
from modelconv.pipeline.convert import run_convert  # noqa: E402
from modelconv.pipeline.export import run_export  # noqa: E402
from modelconv.pipeline.runtimes import coreml_executor_available  # noqa: E402
from modelconv.pipeline.stage import StageContext  # noqa: E402
from modelconv.pipeline.validate import run_validate  # noqa: E402
from modelconv.spec import ConversionSpec  # noqa: E402


def make_spec(source=None, inputs=None, outputs=("y",), **sections) -> ConversionSpec:
    """Build a ConversionSpec from a factory name (or a source mapping) and camelCase sections."""
    if isinstance(source, str):
        source = {"factory": {"entrypoint": f"conversion_zoo:{source}"}}
    document = {
        "source": source,
        "inputs": inputs or [{"name": "x", "shape": [2, 8]}],
        "outputs": [{"name": name} for name in outputs],
        "publish": {"model": "test-model", "version": "1"},
        **sections,
    }
    return ConversionSpec.model_validate(document)


class PipelineRun:
    """The results of export, convert and validate for one spec; a stage error stops the run."""

    def __init__(self, spec: ConversionSpec, workdir: Path):
        self.spec = spec
        self.export = self.convert = self.validate = None
        self.error: ConversionError | None = None
        self.failed_stage = ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._run(workdir)

    def _run(self, workdir: Path) -> None:
        try:
            self.failed_stage = "export"
            self.export = run_export(StageContext(self.spec, workdir / "export"))
            samples, onnx = self.export.artifacts["samples"], self.export.artifacts["onnx"]
            self.failed_stage = "convert"
            self.convert = run_convert(
                StageContext(self.spec, workdir / "convert", inputs={"samples": samples})
            )
            self.failed_stage = "validate"
            inputs = {"samples": samples, "onnx": onnx, "mlpackage": self.convert.artifacts["mlpackage"]}
            self.validate = run_validate(StageContext(self.spec, workdir / "validate", inputs=inputs))
            self.failed_stage = ""
        except ConversionError as error:
            self.error = error

    def describe(self) -> str:
        if self.error is None:
            return "succeeded"
        return f"{self.failed_stage} failed: {self.error}"


@pytest.fixture(scope="session")
def pipeline_runs(tmp_path_factory):
    """Return `run(key, spec)`: the cached PipelineRun of `spec` under `key`."""
    cache: dict[str, PipelineRun] = {}

    def run(key: str, spec: ConversionSpec) -> PipelineRun:
        if key not in cache:
            cache[key] = PipelineRun(spec, tmp_path_factory.mktemp(key))
        return cache[key]

    return run


@pytest.fixture(scope="session")
def executor_available() -> bool:
    return coreml_executor_available()
