"""The contract between a stage and its runner (`modelconv run` or a stage Job).

A stage is a function `run_<name>(context: StageContext) -> StageResult`. It reads
`context.spec` and the files named in `context.inputs` (artifacts of earlier stages), writes
its own artifacts under `context.workdir`, and returns them by name in the result.

Failure classes, as every stage's docstring names them:
- permanent (bad spec, invalid model, unsupported operator, tolerance exceeded): the stage
  raises `modelconv.errors.ConversionError` with `permanent=True`; nothing retries it;
- transient (store or network trouble): `ConversionError(..., permanent=False)`; the runner
  may retry;
- anything else is a bug or an infrastructure fault and propagates.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ..spec import ConversionSpec

STAGES = ("train", "export", "convert", "validate", "device", "publish")


@dataclasses.dataclass
class StageContext:
    """Input of a stage: the spec, a private work directory and earlier artifacts."""

    spec: ConversionSpec
    workdir: Path
    # metadata.name of the ModelConversion, for reports.
    name: str = ""
    inputs: dict[str, Path] = dataclasses.field(default_factory=dict)
    # Results of earlier stages in this run, by stage name (metrics, ladder attempts...).
    previous: dict[str, "StageResult"] = dataclasses.field(default_factory=dict)
    # Progress lines for the terminal display or the Job log; never credentials.
    log: Callable[[str], None] = lambda message: None


@dataclasses.dataclass
class StageResult:
    """The outcome of one stage; `artifacts` maps names to files or folders it wrote."""

    stage: str
    succeeded: bool
    reason: str = ""
    message: str = ""
    artifacts: dict[str, Path] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    started: float = dataclasses.field(default_factory=time.time)
    finished: Optional[float] = None

    @property
    def duration_seconds(self) -> float:
        return (self.finished or time.time()) - self.started
