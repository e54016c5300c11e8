"""Backends: what actually runs a check's package on the runner's machine.

- `coreml` (macOS only): Core ML predictions through coremltools on each requested compute
  unit, with load and compile times and the compiled `.mlmodelc` for the release.
- `mil-reference` (any OS): the `modelconv.mil` executor. It runs the saved program op by op
  with torch, so its results catch converter faults but never stand for a device: a check
  finished by it leaves DeviceVerified False with reason ReferenceOnly.

Every result names the backend that produced it. `backend_named` is the registry the agent
uses. It returns only these two, so no other backend can be selected by configuration.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Protocol

from ..resource import BACKENDS, COREML, MIL_REFERENCE


class BackendUnavailable(Exception):
    """The backend cannot run on this host; the message gives the cause and the alternative."""


class PackageLoadFailure(Exception):
    """The package does not load at all, on any compute unit."""


class CheckCancelled(Exception):
    """The claim was lost or the agent is stopping; the work was abandoned."""


@dataclasses.dataclass
class BackendRequest:
    """The work handed to a backend for one check."""

    package: Path
    samples: list[dict]
    compute_units: list[str]
    warmup_runs: int
    measured_runs: int
    workdir: Path
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    # Output names of the expected outputs: the spec's names, which the Core ML program may
    # declare under other names (coremltools renames reserved words such as `state`).
    output_names: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class UnitRun:
    """Raw outcome on one compute unit (None for a backend without compute units)."""

    compute_unit: Optional[str]
    outputs: list[dict] = dataclasses.field(default_factory=list)
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    load_ms: Optional[float] = None
    compile_ms: Optional[float] = None
    failure_reason: Optional[str] = None
    failure_message: Optional[str] = None


@dataclasses.dataclass
class BackendRun:
    """Everything a backend produced for one check."""

    units: list[UnitRun]
    compiled_model: Optional[Path] = None
    host: dict = dataclasses.field(default_factory=dict)


class Backend(Protocol):
    """Interface of a backend, as the agent uses it."""

    name: str

    def prepare(self) -> None:
        """Check that the backend can run here; raise BackendUnavailable when it cannot."""

    def run(self, request: BackendRequest) -> BackendRun:
        """Run the package on every sample; raise PackageLoadFailure when it does not load."""


def backend_named(name: str) -> Backend:
    """Return a new backend by name (`coreml` or `mil-reference`)."""
    if name == COREML:
        from .coreml import CoreMLBackend

        return CoreMLBackend()
    if name == MIL_REFERENCE:
        from .reference import ReferenceBackend

        return ReferenceBackend()
    raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


def elapsed_ms(started: float) -> float:
    """Return milliseconds since `started` (a time.perf_counter() value)."""
    return round((time.perf_counter() - started) * 1000.0, 4)


def measure_latencies(predict: Callable[[], object], request: BackendRequest) -> list[float]:
    """Time `measured_runs` calls of `predict` after `warmup_runs` untimed ones, in ms.

    Raises CheckCancelled as soon as the request is cancelled between calls.
    """
    for _ in range(request.warmup_runs):
        _stop_if_cancelled(request)
        predict()
    latencies = []
    for _ in range(request.measured_runs):
        _stop_if_cancelled(request)
        started = time.perf_counter()
        predict()
        latencies.append(elapsed_ms(started))
    return latencies


def _stop_if_cancelled(request: BackendRequest) -> None:
    if request.cancelled.is_set():
        raise CheckCancelled("the check was cancelled")
