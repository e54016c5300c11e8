"""A ModelConversion's status, read as a run: what `modelconv apply --wait` shows and reports.

The operator writes one condition per planned stage and `Ready`, with the per-stage records in
`status.stages` (see `modelconv.controller.status`). `StatusRun` turns successive statuses
into the events of the `modelconv run` progress display (`modelconv.progress`). It decides
when the applied generation has succeeded or failed, and builds a `RunOutcome`. So the
summary and the JUnit XML (`modelconv.pipeline.junit`) have the same shape in both modes.

The status carries no per-output validation figures, only the headline metrics (worst
absolute error, lowest cosine). They go into the JUnit properties and the validate case's
output.

Pure: no Kubernetes calls, and no torch, onnx or coremltools.
"""

from __future__ import annotations

import datetime
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Optional

from .controller import status as st
from .plan import planned_stage_names
from .progress import RunObserver
from .spec import ModelConversion

# Outcomes of the applied generation, as `StatusRun.verdict` returns them.
READY = "Ready"
FAILED = "Failed"

# status.metrics fields, as the progress display and the JUnit output name and format them
# (cosine with six decimals, as the `modelconv run` summary shows it).
METRIC_LABELS = {"worstError": ("max abs error", "{:.3g}"), "cosine": ("min cosine", "{:.6f}")}


def _epoch(timestamp: Optional[str]) -> Optional[float]:
    if not timestamp:
        return None
    try:
        return datetime.datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return None


def condition_of(body: dict, type_: str) -> dict:
    """Return condition `type_` of the object's status, or {} when it has none."""
    conditions = (body.get("status") or {}).get("conditions") or []
    return st.find_condition(conditions, type_) or {}


class StatusRun:
    """Successive statuses of one applied generation, reported to a `RunObserver`."""

    def __init__(self, conversion: ModelConversion, generation: int, observer: RunObserver):
        self.conversion = conversion
        self.generation = generation
        self.observer = observer
        self.stages = list(planned_stage_names(conversion.spec))
        self.body: dict = {}
        self.seen: dict[str, tuple] = {}
        self.started_stages: set[str] = set()
        self.started = False

    # --- following the status ---------------------------------------------------------------

    def current(self, body: dict) -> bool:
        """Return whether the operator has computed this status from the applied generation."""
        observed = (body.get("status") or {}).get("observedGeneration") or 0
        return observed >= self.generation

    def update(self, body: dict) -> Optional[str]:
        """Take a new version of the object; return READY or FAILED once the run has ended."""
        self.body = body
        if not self.current(body):
            return None
        self.start()
        self._report_stages()
        return self.verdict()

    def start(self) -> None:
        """Show the stage rows (once)."""
        if not self.started:
            self.started = True
            self.observer.run_started(self.stages, {})

    def verdict(self) -> Optional[str]:
        """Return READY or FAILED when Ready is decided for the applied generation, else None."""
        ready = condition_of(self.body, st.READY)
        if not self.current(self.body) or (ready.get("observedGeneration") or 0) < self.generation:
            return None
        return {"True": READY, "False": FAILED}.get(ready.get("status"))

    def _records(self) -> dict:
        return (self.body.get("status") or {}).get("stages") or {}

    def _report_stages(self) -> None:
        records = self._records()
        for stage in self.stages:
            record = records.get(stage) or {}
            state = record.get("state", st.PENDING)
            key = (state, record.get("attempts"))
            if self.seen.get(stage) == key:
                continue
            self.seen[stage] = key
            self._report_stage(stage, state, record)

    def _report_stage(self, stage: str, state: str, record: dict) -> None:
        message = condition_of(self.body, st.STAGE_CONDITIONS[stage]).get("message", "")
        if state == st.SKIPPED:
            self.observer.stage_message(stage, f"skipped: {record.get('message') or message}")
            return
        if state not in (st.RUNNING, st.SUCCEEDED, st.FAILED):
            return
        if stage not in self.started_stages:
            self.started_stages.add(stage)
            self.observer.stage_started(stage)
        if state == st.RUNNING or record.get("cacheHit"):
            self.observer.stage_message(stage, message)
        if stage == "validate" and state != st.RUNNING and self.metrics_line():
            self.observer.stage_message(stage, self.metrics_line())
        if state in (st.SUCCEEDED, st.FAILED):
            self.observer.stage_finished(self.stage_result(stage, record))

    def stage_result(self, stage: str, record: dict, reason: str = "", message: str = ""):
        """Return the StageResult of a stage record; `reason` and `message` override it."""
        from .pipeline.stage import StageResult

        finished = _epoch(record.get("finished"))
        started = _epoch(record.get("started")) or finished or time.time()
        succeeded = record.get("state") == st.SUCCEEDED and not reason
        condition = condition_of(self.body, st.STAGE_CONDITIONS[stage])
        return StageResult(
            stage=stage,
            succeeded=succeeded,
            reason=reason or ("" if succeeded else record.get("reason") or st.REASON_STAGE_FAILED),
            message=message or record.get("message") or condition.get("message", ""),
            started=started,
            finished=finished if finished is not None and not reason else time.time(),
        )

    # --- the outcome ------------------------------------------------------------------------

    def ending_stage(self) -> str:
        """Return the stage that a failure, a timeout or a deletion belongs to.

        That is the first planned stage that has not succeeded or been skipped. It is the
        first stage when the operator stopped before any (an invalid spec, no store), and the
        last one when all of them are done.
        """
        records = self._records() if self.current(self.body) else {}
        for stage in self.stages:
            if (records.get(stage) or {}).get("state") not in (st.SUCCEEDED, st.SKIPPED):
                return stage
        return self.stages[-1]

    def outcome(self, ending: Optional[tuple[str, str]] = None):
        """Return the RunOutcome of the applied generation.

        `ending` is (reason, message) of a failure that the status does not record: Ready
        False without a failed stage, a timeout or a deletion. It is reported as a failure of
        `ending_stage()`.
        """
        from .pipeline.run import RunOutcome

        spec = self.conversion.spec
        records = self._records() if self.current(self.body) else {}
        results, skipped = [], {}
        for stage in self.stages:
            record = records.get(stage) or {}
            if record.get("state") == st.SKIPPED:
                skipped[stage] = record.get("message") or "skipped"
            elif record.get("state") in (st.SUCCEEDED, st.FAILED):
                results.append(self.stage_result(stage, record))
        if ending is not None and not any(not result.succeeded for result in results):
            stage = self.ending_stage()
            record = records.get(stage) or {}
            results = [result for result in results if result.stage != stage]
            results.append(self.stage_result(stage, record, *ending))
        release = self.release() if ending is None and self.verdict() == READY else None
        return RunOutcome(conversion=self.conversion, store=spec.publish.store or "",
                          workdir=Path.cwd(), results=results, skipped=skipped,
                          release=release)

    def release(self) -> Optional[dict]:
        """Return the published release from status.release, as the run summary shows it."""
        release = (self.body.get("status") or {}).get("release") or {}
        if not release.get("location"):
            return None
        location = release["location"]
        summary = {"location": location, "report": f"{location.rstrip('/')}/report.html"}
        if release.get("manifestDigest"):
            summary["manifest_sha256"] = release["manifestDigest"].removeprefix("sha256:")
        return summary

    def headline_metrics(self) -> dict:
        """Return status.metrics (worstError, cosine) of the applied generation, or {}."""
        if not self.current(self.body):
            return {}
        return dict((self.body.get("status") or {}).get("metrics") or {})

    def metrics_line(self) -> str:
        """Return the headline metrics as one line, or "" when the status has none."""
        metrics = self.headline_metrics()
        figures = [f"{label} {form.format(metrics[key])}"
                   for key, (label, form) in METRIC_LABELS.items()
                   if isinstance(metrics.get(key), (int, float))]
        return f"validation: {', '.join(figures)}" if figures else ""

    def failure(self) -> tuple[str, str]:
        """Return (reason, message) of Ready, for a run that ended with Ready False."""
        ready = condition_of(self.body, st.READY)
        return ready.get("reason") or st.REASON_STAGE_FAILED, ready.get("message") or ""

    # --- JUnit ------------------------------------------------------------------------------

    def junit_document(self, outcome) -> ElementTree.ElementTree:
        """Return the JUnit XML of the outcome, as `modelconv run --junit` writes it, plus:
        each stage's status message as its output, the headline metrics and the release as
        suite properties."""
        from .pipeline import junit

        tree = junit.junit_document(outcome)
        suite = tree.getroot().find("testsuite")
        for case in suite.findall("testcase"):
            if case.get("classname") == f"{junit.SUITE_NAME}.stage":
                self._add_stage_output(case)
        suite.insert(0, self._properties(outcome))
        _count(tree)
        return tree

    def write_junit(self, outcome, path: Path) -> None:
        tree = self.junit_document(outcome)
        ElementTree.indent(tree)
        path.parent.mkdir(parents=True, exist_ok=True)
        tree.write(path, encoding="utf-8", xml_declaration=True)

    def _add_stage_output(self, case) -> None:
        stage = case.get("name")
        records = self._records() if self.current(self.body) else {}
        lines = []
        # A failed stage's message is in its <failure> already, and a pending one has none.
        if (records.get(stage) or {}).get("state") in (st.SUCCEEDED, st.SKIPPED, st.RUNNING):
            lines.append(condition_of(self.body, st.STAGE_CONDITIONS[stage]).get("message", ""))
        if stage == "validate" and self.metrics_line():
            lines.append(self.metrics_line())
        if any(lines):
            ElementTree.SubElement(case, "system-out").text = "\n".join(filter(None, lines))

    def _properties(self, outcome) -> ElementTree.Element:
        metadata = self.body.get("metadata") or {}
        values = {
            "namespace": metadata.get("namespace", ""),
            "name": metadata.get("name", self.conversion.metadata.name),
            "generation": str(self.generation),
        }
        for key, value in sorted(self.headline_metrics().items()):
            values[f"metrics.{key}"] = str(value)
        for key, value in sorted((outcome.release or {}).items()):
            values[f"release.{key}"] = str(value)
        properties = ElementTree.Element("properties")
        for name, value in values.items():
            ElementTree.SubElement(properties, "property", name=name, value=value)
        return properties


def _count(tree: ElementTree.ElementTree) -> None:
    """Set the tests, failures, errors and skipped counts of the suite and of the document."""
    root = tree.getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    counts = {
        "tests": len(cases),
        "failures": sum(1 for case in cases if case.find("failure") is not None),
        "errors": sum(1 for case in cases if case.find("error") is not None),
        "skipped": sum(1 for case in cases if case.find("skipped") is not None),
    }
    for name, value in counts.items():
        suite.set(name, str(value))
        root.set(name, str(value))
