"""`modelconv apply --wait` reading a ModelConversion's status: progress events, the verdict
for the applied generation, the run summary and the JUnit XML.

The statuses are built by the controller's own functions (modelconv.controller.summary), so
they have the shape the operator writes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import pytest

from modelconv.cli.apply_command import applied_document, choose_namespace, parse_duration
from modelconv.cluster_report import FAILED, READY, StatusRun
from modelconv.controller import summary
from modelconv.spec import parse_conversion

STAGES = ("export", "convert", "validate", "publish")
NOW = "2026-12-04T10:00:00Z"
DOCUMENT = {
    "apiVersion": "modelconv.io/v1alpha1",
    "kind": "ModelConversion",
    "metadata": {"name": "mlp", "namespace": "team"},
    "spec": {
        "source": {"exportedProgram": {"uri": "s3://models/mlp/model.pt2"}},
        "inputs": [{"name": "x", "shape": [1, 4]}],
        "outputs": [{"name": "y"}],
        "publish": {"model": "mlp", "version": "1.0.3"},
    },
}


class RecordingObserver:
    """Records the progress events, as a list of tuples."""

    def __init__(self):
        self.events = []

    def run_started(self, stages, skipped):
        self.events.append(("run_started", tuple(stages)))

    def stage_started(self, stage):
        self.events.append(("started", stage))

    def stage_message(self, stage, message):
        self.events.append(("message", stage, message))

    def stage_finished(self, result):
        self.events.append(("finished", result.stage, result.succeeded, result.reason))

    def run_finished(self, outcome):
        self.events.append(("run_finished", outcome.succeeded))


def body(records: dict, *, generation: int = 1, observed: int = 1, names=STAGES,
         release=None, metrics=None, previous=None) -> dict:
    conditions = summary.build_conditions(previous or [], names, records, release,
                                          generation=observed, now=NOW)
    status = {"observedGeneration": observed, "stage": summary.current_stage(names, records),
              "conditions": conditions, "stages": records}
    if release:
        status["release"] = release
    if metrics:
        status["metrics"] = metrics
    return {"metadata": {"name": "mlp", "namespace": "team", "generation": generation},
            "status": status}


def running(job: str, attempts: int = 1) -> dict:
    return {"state": "Running", "job": job, "attempts": attempts, "started": NOW}


def succeeded(job: str, seconds: int, message: str = "done") -> dict:
    return {"state": "Succeeded", "job": job, "attempts": 1, "started": NOW,
            "finished": f"2026-12-04T10:00:{seconds:02d}Z", "message": message}


RELEASE = {"location": "s3://bucket/releases/mlp/1.0.3", "manifestDigest": "sha256:" + "ab" * 32}
METRICS = {"worstError": 2.5e-7, "cosine": 0.999999}


def status_run(document=None, generation: int = 1) -> StatusRun:
    conversion = parse_conversion(document or DOCUMENT)
    return StatusRun(conversion, generation, RecordingObserver())


def finished_records() -> dict:
    return {
        "export": succeeded("mlp-export", 12),
        "convert": {"state": "Succeeded", "cacheHit": True, "key": "c" * 64, "message": "cached"},
        "validate": succeeded("mlp-validate", 30, "all outputs within tolerance"),
        "publish": succeeded("mlp-publish", 35, "published"),
    }


def test_status_run_reports_each_stage_once():
    run = status_run()
    assert run.update(body({"export": running("mlp-export")})) is None
    assert run.update(body({"export": running("mlp-export")})) is None
    assert run.update(body({"export": running("mlp-export", attempts=2)})) is None
    verdict = run.update(body(finished_records(), release=RELEASE, metrics=METRICS))

    assert verdict == READY
    events = run.observer.events
    assert events[0] == ("run_started", STAGES)
    assert events.count(("started", "export")) == 1
    assert [event[2] for event in events if event[:2] == ("message", "export")] == [
        "Job mlp-export is running (attempt 1)", "Job mlp-export is running (attempt 2)"]
    assert ("finished", "export", True, "") in events
    cache_messages = [event[2] for event in events if event[:2] == ("message", "convert")]
    assert len(cache_messages) == 1
    assert "reused from the store cache" in cache_messages[0]
    assert ("message", "validate", "validation: max abs error 2.5e-07, min cosine 0.999999") in events
    assert [event[1] for event in events if event[0] == "finished"] == list(STAGES)


def test_status_of_an_older_generation_is_ignored():
    run = status_run(generation=2)
    stale = body(finished_records(), generation=2, observed=1, release=RELEASE)

    assert run.update(stale) is None
    assert run.observer.events == []
    assert run.verdict() is None


def test_successful_outcome_carries_the_release():
    run = status_run()
    run.update(body(finished_records(), release=RELEASE, metrics=METRICS))
    outcome = run.outcome()

    assert outcome.succeeded
    assert [result.stage for result in outcome.results] == list(STAGES)
    assert outcome.result("export").duration_seconds == pytest.approx(12.0)
    assert outcome.release["location"] == RELEASE["location"]
    assert outcome.release["report"] == RELEASE["location"] + "/report.html"
    assert outcome.release["manifest_sha256"] == "ab" * 32


def test_failed_stage_is_the_outcome_reason():
    run = status_run()
    records = {"export": succeeded("mlp-export", 12),
               "convert": {"state": "Failed", "job": "mlp-convert", "attempts": 1,
                           "started": NOW, "finished": "2026-12-04T10:00:40Z",
                           "reason": "UnsupportedOperator", "message": "op foo has no converter"}}
    verdict = run.update(body(records))
    outcome = run.outcome(run.failure())

    assert verdict == FAILED
    assert run.failure()[0] == "UnsupportedOperator"
    assert not outcome.succeeded
    assert outcome.reason == "UnsupportedOperator"
    assert outcome.message == "op foo has no converter"
    assert outcome.release is None


def test_ready_false_fails_first_stage():
    run = status_run()
    conditions = summary.st.set_condition([], "Ready", "False", "StoreNotConfigured",
                                          "no store", generation=1, now=NOW)
    stopped = {"metadata": {"name": "mlp", "namespace": "team", "generation": 1},
               "status": {"observedGeneration": 1, "stage": "Invalid",
                          "conditions": conditions}}
    verdict = run.update(stopped)
    outcome = run.outcome(run.failure())

    assert verdict == FAILED
    assert [(result.stage, result.reason) for result in outcome.results] == [
        ("export", "StoreNotConfigured")]


def junit_of(run: StatusRun, outcome) -> ElementTree.Element:
    return ElementTree.fromstring(ElementTree.tostring(run.junit_document(outcome).getroot()))


def stage_cases(root: ElementTree.Element) -> dict[str, ElementTree.Element]:
    return {case.get("name"): case for case in root.iter("testcase")
            if case.get("classname") == "modelconv.stage"}


def test_junit_lists_stages_and_figures():
    run = status_run()
    run.update(body(finished_records(), release=RELEASE, metrics=METRICS))
    root = junit_of(run, run.outcome())

    cases = stage_cases(root)
    assert list(cases) == list(STAGES)
    assert root.get("tests") == "4"
    assert root.get("failures") == "0"
    assert cases["export"].get("time") == "12.000"
    assert "reused from the store cache" in cases["convert"].find("system-out").text
    assert "max abs error 2.5e-07" in cases["validate"].find("system-out").text
    properties = {item.get("name"): item.get("value") for item in root.iter("property")}
    assert properties["metrics.worstError"] == "2.5e-07"
    assert properties["release.location"] == RELEASE["location"]
    assert properties["namespace"] == "team"


def test_junit_skips_stages_after_failure():
    run = status_run()
    records = {"export": {"state": "Failed", "job": "mlp-export", "attempts": 1,
                          "started": NOW, "finished": NOW, "reason": "SourceNotFound",
                          "message": "s3://models/mlp/model.pt2 not found"}}
    run.update(body(records))
    root = junit_of(run, run.outcome(run.failure()))

    cases = stage_cases(root)
    failure = cases["export"].find("failure")
    assert failure.get("type") == "SourceNotFound"
    assert "not found" in failure.get("message")
    for stage in ("convert", "validate", "publish"):
        assert cases[stage].find("skipped") is not None, stage
    assert root.get("failures") == "1"
    assert root.get("skipped") == "3"


def test_junit_lists_a_failed_device_stage():
    document = {**DOCUMENT, "spec": {**DOCUMENT["spec"],
                                     "validation": {"device": {"enabled": True, "required": True}}}}
    names = ("export", "convert", "validate", "device", "publish")
    records = {**{key: value for key, value in finished_records().items() if key != "publish"},
               "device": {"state": "Failed", "finished": NOW, "reason": "NoRunnerAvailable",
                          "message": "no macOS runner can take the on-device check"}}
    run = status_run(document)
    assert run.update(body(records, names=names)) == FAILED
    root = junit_of(run, run.outcome(run.failure()))

    cases = stage_cases(root)
    assert cases["device"].find("failure").get("type") == "NoRunnerAvailable"
    assert root.get("failures") == "1"
    assert root.find("testsuite").get("failures") == "1"


def test_early_timeout_fails_first_stage():
    run = status_run(generation=3)
    run.update(body({}, generation=3, observed=2))
    outcome = run.outcome(("Timeout", "not Ready within 30s"))
    root = junit_of(run, outcome)

    assert [(result.stage, result.reason) for result in outcome.results] == [("export", "Timeout")]
    assert stage_cases(root)["export"].find("failure").get("type") == "Timeout"


def test_timeout_names_the_running_stage():
    run = status_run()
    run.update(body({"export": succeeded("mlp-export", 12), "convert": running("mlp-convert")}))
    outcome = run.outcome(("Timeout", "not Ready within 30s"))

    failed = outcome.failed_stage
    assert (failed.stage, failed.reason) == ("convert", "Timeout")
    assert outcome.result("export").succeeded


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("30m", 1800), ("1h30m", 5400), ("2h", 7200), ("45", 45), ("1.5s", 1.5),
])
def test_duration_parses(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "10x", "m", "1d", "-5s"])
def test_duration_rejects(text):
    with pytest.raises(ValueError, match="--timeout"):
        parse_duration(text)


def test_namespace_comes_from_flag_file_then_context():
    named = {"metadata": {"name": "mlp", "namespace": "from-file"}}
    unnamed = {"metadata": {"name": "mlp"}}
    assert choose_namespace(None, named, "ctx") == "from-file"
    assert choose_namespace("from-file", named, "ctx") == "from-file"
    assert choose_namespace("flag", unnamed, "ctx") == "flag"
    assert choose_namespace(None, unnamed, "ctx") == "ctx"
    with pytest.raises(ValueError, match="metadata.namespace"):
        choose_namespace("other", named, "ctx")


def test_applied_document_drops_status_and_server_fields():
    exported = {**DOCUMENT, "status": {"observedGeneration": 4},
                "metadata": {"name": "mlp", "uid": "u", "resourceVersion": "7",
                             "generation": 4, "labels": {"team": "vision"}}}
    applied = applied_document(exported, "team")

    assert "status" not in applied
    assert applied["metadata"] == {"name": "mlp", "labels": {"team": "vision"},
                                   "namespace": "team"}
    assert applied["spec"] == DOCUMENT["spec"]
