"""The `mil-reference` backend: the Linux Core ML program executor (`modelconv.mil`).

It needs torch and coremltools (the `ml` extra) but no Apple hardware. The program runs in
its own precision (float16 ops computed as float16). Its latency figures time the executor
on this host, not a device, and its single result has no compute unit.
"""

from __future__ import annotations

import logging
import platform
import threading
import time

from ...errors import ConversionError
from ..resource import MIL_REFERENCE, PREDICTION_FAILED
from . import (
    BackendRequest,
    BackendRun,
    BackendUnavailable,
    PackageLoadFailure,
    UnitRun,
    elapsed_ms,
    measure_latencies,
)


# The executor's program loader goes through coremltools' MIL builder, which keeps global
# state: two threads loading at once produced programs without outputs. So an agent runs one
# reference check at a time, whatever its concurrency.
_EXECUTOR_LOCK = threading.Lock()


class ReferenceBackend:
    """Runs checks with the `modelconv.mil` executor."""

    name = MIL_REFERENCE

    def prepare(self) -> None:
        # Import both now, so the first check's load time measures loading the program only.
        # coremltools warns at import that its native Core ML bindings are missing, which is
        # expected off macOS and irrelevant to this backend.
        logging.getLogger("coremltools").setLevel(logging.ERROR)
        try:
            import coremltools  # noqa: F401
            import modelconv.mil  # noqa: F401
        except ImportError as error:
            raise BackendUnavailable(
                f"the mil-reference backend needs torch and coremltools ({error.name} is "
                "missing): install them with pip install 'modelconv[ml]'"
            ) from None

    def run(self, request: BackendRequest) -> BackendRun:
        with _EXECUTOR_LOCK:
            return self._run(request)

    def _run(self, request: BackendRequest) -> BackendRun:
        from modelconv import mil
        from modelconv.pipeline.feature_names import match_feature_names

        started = time.perf_counter()
        try:
            program = mil.load_program(request.package)
        except mil.MilError as error:
            raise PackageLoadFailure(str(error)) from None
        unit = UnitRun(compute_unit=None, load_ms=elapsed_ms(started))
        try:
            names = match_feature_names(
                list(request.samples[0]), program.input_names,
                request.output_names, program.output_names,
            )
            unit.outputs = [
                names.by_spec_name(mil.execute(program, names.feed(sample)))
                for sample in request.samples
            ]
            first = names.feed(request.samples[0])
            unit.latencies_ms = measure_latencies(lambda: mil.execute(program, first), request)
        except ConversionError as error:
            unit.failure_reason = PREDICTION_FAILED
            unit.failure_message = f"the package's features do not match the samples: {error}"
        except mil.MilError as error:
            unit.failure_reason = PREDICTION_FAILED
            unit.failure_message = f"the reference executor failed: {error}"
        return BackendRun(units=[unit], host=_host())


def _host() -> dict:
    return {"os": f"{platform.system()} {platform.release()}", "machine": platform.machine()}
