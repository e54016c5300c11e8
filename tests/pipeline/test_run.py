"""The in-process pipeline (`run_pipeline`): stage order, failures, work directory, release."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from modelconv.errors import INVALID_ARGUMENT, ConversionError
from modelconv.pipeline import run as pipeline_run
from modelconv.pipeline.run import RunOutcome, run_pipeline
from modelconv.release import publish_release
from modelconv.spec import parse_conversion
from modelconv.store import open_store

TINY = {
    "apiVersion": "modelconv.io/v1alpha1",
    "kind": "ModelConversion",
    "metadata": {"name": "tiny-linear"},
    "spec": {
        "source": {
            "factory": {
                "entrypoint": "torch.nn:Linear",
                "kwargs": {"in_features": 6, "out_features": 3},
            }
        },
        "inputs": [{"name": "x", "shape": [1, 6]}],
        "outputs": [{"name": "y"}],
        "validation": {"samples": {"count": 2}},
        "publish": {"model": "tiny-linear", "version": "2.0.0"},
    },
}


def conversion(**spec_changes):
    document = json.loads(json.dumps(TINY))
    document["spec"].update(spec_changes)
    return parse_conversion(document)


class RecordedEvents:
    """An observer that keeps every event, in order."""

    def __init__(self):
        self.events: list[tuple] = []

    def run_started(self, stages, skipped):
        self.events.append(("run_started", tuple(stages), dict(skipped)))

    def stage_started(self, stage):
        self.events.append(("stage_started", stage))

    def stage_message(self, stage, message):
        self.events.append(("stage_message", stage))

    def stage_finished(self, result):
        self.events.append(("stage_finished", result.stage, result.succeeded))

    def run_finished(self, outcome):
        self.events.append(("run_finished", outcome.succeeded))

    def of(self, kind: str) -> list[tuple]:
        return [event for event in self.events if event[0] == kind]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """One successful run of the tiny model into a local store, with its events."""
    store = tmp_path_factory.mktemp("store")
    events = RecordedEvents()
    outcome = run_pipeline(conversion(), store=str(store), observer=events)
    return outcome, store, events


def test_successful_run_exits_0(published):
    outcome, _, _ = published
    assert outcome.succeeded, f"{outcome.reason}: {outcome.message}"
    assert outcome.exit_code == 0


def test_stages_run_in_order(published):
    _, _, events = published
    assert [event[1] for event in events.of("stage_started")] == [
        "export", "convert", "validate", "publish"
    ]
    assert events.events[0] == ("run_started", ("export", "convert", "validate", "publish"), {})
    assert events.events[-1] == ("run_finished", True)


def test_stages_report_progress_messages(published):
    _, _, events = published
    stages_with_messages = {event[1] for event in events.of("stage_message")}
    assert {"export", "convert", "publish"} <= stages_with_messages


def test_temporary_workdir_is_removed_after_success(published):
    outcome, _, _ = published
    assert not outcome.workdir_kept
    assert not outcome.workdir.exists()


def test_release_location_is_recorded(published):
    outcome, store, _ = published
    folder = store / "tiny-linear" / "2.0.0"
    assert outcome.release["location"] == folder.resolve().as_uri()
    assert (folder / "manifest.json").is_file()


def test_stage_timings_are_measured(published):
    outcome, _, _ = published
    for result in outcome.results:
        assert result.finished >= result.started
    assert outcome.result("export").duration_seconds > 0.1


def test_report_in_release_covers_stages_before_publish(published):
    _, store, _ = published
    report = json.loads((store / "tiny-linear" / "2.0.0" / "report.json").read_text())
    assert [stage["stage"] for stage in report["stages"]] == ["export", "convert", "validate"]
    assert report["package_signature"]["inputs"][0] == {"name": "x", "shape": [1, 6], "dtype": "float32"}
    assert report["release"]["location"].endswith("/tiny-linear/2.0.0")


def test_existing_version_is_refused_before_any_stage(published, tmp_path):
    _, store, _ = published
    events = RecordedEvents()
    outcome = run_pipeline(conversion(), store=str(store), workdir=tmp_path / "work",
                           observer=events)
    assert outcome.exit_code == 1
    assert outcome.reason == "VersionExists"
    assert [result.stage for result in outcome.results] == ["publish"]
    assert events.of("stage_started") == []
    assert (tmp_path / "work" / "report.json").is_file()


def test_version_published_by_another_tool_is_refused(tmp_path):
    store_dir = tmp_path / "store"
    payload = tmp_path / "model.onnx"
    payload.write_bytes(b"not the same bytes")
    publish_release(open_store(str(store_dir)), model="tiny-linear", version="2.0.0",
                    files={"model.onnx": payload}, manifest={})
    outcome = run_pipeline(conversion(), store=str(store_dir))
    assert outcome.reason == "VersionExists"
    assert "set publish.version to a new version" in outcome.message


def test_unsupported_store_fails_before_any_stage(tmp_path):
    outcome = run_pipeline(conversion(), store="ftp://example.invalid/models",
                           workdir=tmp_path / "work")
    assert outcome.reason == "InvalidArgument"
    assert outcome.exit_code == 2
    assert "s3://bucket/prefix" in outcome.message


def test_unwritable_store_fails_before_any_stage(tmp_path):
    store = tmp_path / "read-only"
    store.mkdir()
    if subprocess.run(["chattr", "+i", str(store)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this file system")
    events = RecordedEvents()
    try:
        outcome = run_pipeline(conversion(), store=str(store), workdir=tmp_path / "work",
                               observer=events)
    finally:
        subprocess.run(["chattr", "-i", str(store)], check=True)

    assert outcome.reason == "AccessDenied"
    assert outcome.exit_code == 1
    assert "cannot write to the store folder" in outcome.message
    assert events.of("stage_started") == []


def test_store_defaults_to_spec_then_local_folder():
    with_spec_store = conversion(publish={"model": "m", "version": "1", "store": "s3://bucket/x"})
    assert pipeline_run.resolve_store(with_spec_store, None) == "s3://bucket/x"
    assert pipeline_run.resolve_store(with_spec_store, "/tmp/other") == "/tmp/other"
    assert pipeline_run.resolve_store(conversion(), None) == "./modelconv-releases"


def test_missing_source_stops_the_run_and_keeps_workdir(tmp_path):
    missing = tmp_path / "absent.pt2"
    store = tmp_path / "store"
    outcome = run_pipeline(conversion(source={"exportedProgram": {"uri": str(missing)}}),
                           store=str(store))
    assert outcome.reason == "SourceNotFound"
    assert outcome.exit_code == 2
    assert [result.stage for result in outcome.results] == ["export"]
    assert outcome.workdir_kept
    assert json.loads((outcome.workdir / "report.json").read_text())["reason"] == "SourceNotFound"
    assert not (store / "tiny-linear").exists()


def test_cluster_only_stages_are_listed_as_skipped(tmp_path):
    spec = conversion(
        validation={"device": {"enabled": True}},
        source={"exportedProgram": {"uri": str(tmp_path / "absent.pt2")}},
    )
    events = RecordedEvents()
    outcome = run_pipeline(spec, store=str(tmp_path / "store"), observer=events)
    assert outcome.skipped == {"device": "skipped (cluster only)"}
    stages = events.events[0][1]
    assert stages == ("export", "convert", "validate", "device", "publish")


def raise_a_bug(context):
    """A stage with a programming error, to check how the runner reports one."""
    raise KeyError("no such artifact")


def test_unclassified_exception_becomes_internal_error(tmp_path, monkeypatch):
    monkeypatch.setitem(pipeline_run.LOCAL_STAGES, "export", (__name__, "raise_a_bug"))
    outcome = run_pipeline(conversion(), store=str(tmp_path / "store"))
    assert outcome.reason == "InternalError"
    assert outcome.exit_code == 1
    assert isinstance(outcome.internal_error, KeyError)
    assert "KeyError" in outcome.message
    assert not (tmp_path / "store" / "tiny-linear").exists()


def test_outcome_of_no_stage_is_not_success():
    outcome = RunOutcome(conversion=conversion(), store="s", workdir=Path("/nonexistent"))
    assert not outcome.succeeded



@pytest.fixture
def immutable_model_folder(tmp_path):
    """A store whose root is writable but whose model folder is not, even for root."""
    folder = tmp_path / "store" / "tiny-linear"
    folder.mkdir(parents=True)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this file system")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_unwritable_model_folder_fails_before_any_stage(immutable_model_folder):
    outcome = run_pipeline(conversion(), store=str(immutable_model_folder.parent))

    assert [result.stage for result in outcome.results] == ["publish"]
    assert outcome.reason == "AccessDenied"
    assert str(immutable_model_folder) in outcome.message


def test_workdir_inside_folder_store_is_rejected(tmp_path):
    store = tmp_path / "releases"
    with pytest.raises(ConversionError) as failure:
        run_pipeline(conversion(), store=str(store), workdir=store / "work")
    assert failure.value.reason == INVALID_ARGUMENT
    assert "overlap" in failure.value.message
    assert not store.exists()
