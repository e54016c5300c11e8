"""The condition helper and the status summary (modelconv.controller.status, .summary)."""

from __future__ import annotations

from modelconv.controller import status as st
from modelconv.controller import summary
from modelconv.controller.status import ConversionStatus, set_condition

NAMES = ("export", "convert", "validate", "publish")


def condition(conditions, type_):
    found = st.find_condition(conditions, type_)
    assert found is not None, f"no {type_} condition in {conditions}"
    return found


def test_new_condition_gets_the_transition_time_and_generation():
    conditions = set_condition([], "Converted", "Unknown", "Running", "busy",
                               generation=3, now="2026-01-01T00:00:00Z")
    converted = condition(conditions, "Converted")
    assert converted["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert converted["observedGeneration"] == 3
    assert converted["reason"] == "Running"


def test_transition_time_stays_when_only_the_reason_changes():
    first = set_condition([], "Ready", "Unknown", "Pending", "a", generation=1,
                          now="2026-01-01T00:00:00Z")
    second = set_condition(first, "Ready", "Unknown", "InProgress", "b", generation=2,
                           now="2026-01-01T00:05:00Z")
    ready = condition(second, "Ready")
    assert ready["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert ready["reason"] == "InProgress"
    assert ready["observedGeneration"] == 2


def test_transition_time_moves_when_the_status_changes():
    first = set_condition([], "Ready", "Unknown", "InProgress", "a", generation=1,
                          now="2026-01-01T00:00:00Z")
    second = set_condition(first, "Ready", "True", "Published", "b", generation=1,
                           now="2026-01-01T00:05:00Z")
    assert condition(second, "Ready")["lastTransitionTime"] == "2026-01-01T00:05:00Z"


def test_set_condition_leaves_its_input_unchanged():
    first = set_condition([], "Ready", "Unknown", "InProgress", "a", generation=1, now="t1")
    set_condition(first, "Ready", "True", "Published", "b", generation=1, now="t2")
    assert condition(first, "Ready")["status"] == "Unknown"


def test_conditions_keep_pipeline_order_with_ready_last():
    conditions = []
    for type_ in ("Ready", "Published", "Exported", "Converted"):
        conditions = set_condition(conditions, type_, "Unknown", "Pending", "",
                                   generation=1, now="t")
    assert [item["type"] for item in conditions] == ["Exported", "Converted", "Published", "Ready"]


def test_running_stage_and_pending_later_stages():
    records = {"export": {"state": "Succeeded", "job": "j-export", "message": "exported"},
               "convert": {"state": "Running", "job": "j-convert", "attempts": 2}}
    conditions = summary.build_conditions([], NAMES, records, None, generation=1, now="t")
    assert condition(conditions, "Exported")["status"] == "True"
    assert condition(conditions, "Exported")["reason"] == "Succeeded"
    converted = condition(conditions, "Converted")
    assert converted["status"] == "Unknown"
    assert "attempt 2" in converted["message"]
    validated = condition(conditions, "Validated")
    assert validated["reason"] == "Pending"
    assert validated["message"] == "waiting for stage convert"
    assert condition(conditions, "Ready")["status"] == "Unknown"
    assert summary.current_stage(NAMES, records) == "convert"


def test_failed_stage_sets_ready_false_with_its_reason():
    records = {"export": {"state": "Failed", "reason": "InvalidModel",
                          "message": "the factory returned no module"}}
    conditions = summary.build_conditions([], NAMES, records, None, generation=1, now="t")
    assert condition(conditions, "Exported")["status"] == "False"
    ready = condition(conditions, "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "InvalidModel"
    assert "the factory returned no module" in ready["message"]
    assert summary.current_stage(NAMES, records) == "export"


def test_all_stages_done_makes_ready_true_with_the_release():
    records = {name: {"state": "Succeeded", "cacheHit": True, "key": "k" * 64} for name in NAMES}
    release = {"location": "s3://bucket/mlp/1.0.0"}
    conditions = summary.build_conditions([], NAMES, records, release, generation=1, now="t")
    ready = condition(conditions, "Ready")
    assert ready["status"] == "True"
    assert ready["reason"] == "Published"
    assert "s3://bucket/mlp/1.0.0" in ready["message"]
    assert condition(conditions, "Converted")["reason"] == "CacheHit"
    assert summary.current_stage(NAMES, records) == "Done"


def test_skipped_device_check_is_false_with_reason_skipped_and_does_not_block():
    names = ("export", "convert", "validate", "device", "publish")
    records = {name: {"state": "Succeeded", "job": name} for name in names}
    records["device"] = {"state": "Skipped", "reason": "Skipped", "message": "no runner"}
    conditions = summary.build_conditions([], names, records, {"location": "x"},
                                          generation=1, now="t")
    device = condition(conditions, "DeviceVerified")
    assert device["status"] == "False"
    assert device["reason"] == "Skipped"
    assert condition(conditions, "Ready")["status"] == "True"


def test_conditions_of_stages_no_longer_planned_are_dropped():
    previous = set_condition([], "Trained", "True", "Succeeded", "", generation=1, now="t")
    conditions = summary.build_conditions(previous, NAMES, {}, None, generation=2, now="t")
    assert st.find_condition(conditions, "Trained") is None


def test_events_for_started_finished_and_failed_stages():
    before = summary.build_conditions([], NAMES, {}, None, generation=1, now="t")
    running = summary.build_conditions(
        before, NAMES, {"export": {"state": "Running", "job": "j"}}, None, generation=1, now="t")
    events = summary.transition_events(before, running)
    assert [(event.type, event.reason) for event in events] == [("Normal", "Running")]

    failed = summary.build_conditions(
        running, NAMES, {"export": {"state": "Failed", "reason": "InvalidModel", "message": "m"}},
        None, generation=1, now="t")
    events = summary.transition_events(running, failed)
    assert [(event.type, event.reason) for event in events] == [("Warning", "InvalidModel")]


def test_ready_only_failure_posts_event():
    # An invalid spec fails Ready alone: no stage condition announces it.
    invalid = set_condition([], "Ready", "False", "InvalidSpec", "spec.source: m",
                            generation=1, now="t")
    events = summary.transition_events([], invalid)
    assert [(event.type, event.reason) for event in events] == [("Warning", "InvalidSpec")]
    assert events[0].message == "Ready: spec.source: m"


def test_no_events_when_nothing_changed():
    records = {"export": {"state": "Running", "job": "j"}}
    first = summary.build_conditions([], NAMES, records, None, generation=1, now="t")
    second = summary.build_conditions(first, NAMES, records, None, generation=1, now="t2")
    assert summary.transition_events(first, second) == []


def test_ready_event_when_published():
    records = {name: {"state": "Succeeded", "job": name} for name in NAMES}
    before = summary.build_conditions([], NAMES, {"publish": {"state": "Running"}}, None,
                                      generation=1, now="t")
    after = summary.build_conditions(before, NAMES, records, {"location": "s3://b/m/1"},
                                     generation=1, now="t")
    reasons = [event.reason for event in summary.transition_events(before, after)]
    assert "Published" in reasons


def test_headline_metrics_prefer_the_executed_core_ml_figures():
    result = {"metrics": {"max_abs_error": 0.002, "min_cosine": 0.9991,
                          "onnxruntime": [{"max_abs_error": 1e-7, "cosine": 1.0}]}}
    assert summary.headline_metrics(result) == {"worstError": 0.002, "cosine": 0.9991}


def test_headline_metrics_fall_back_to_the_worst_output():
    result = {"metrics": {"onnxruntime": [{"max_abs_error": 1e-6, "cosine": 0.99999},
                                          {"max_abs_error": 3e-5, "cosine": 0.9998}]}}
    assert summary.headline_metrics(result) == {"worstError": 3e-5, "cosine": 0.9998}


def test_headline_metrics_leave_out_infinite_errors():
    result = {"metrics": {"max_abs_error": float("inf"), "min_cosine": 0.5}}
    assert summary.headline_metrics(result) == {"cosine": 0.5}


def test_release_status_from_the_publish_result():
    result = {"metrics": {"location": "s3://b/p/mlp/1.0.0", "manifest_sha256": "ab" * 32}}
    assert summary.release_status(result) == {
        "location": "s3://b/p/mlp/1.0.0", "manifestDigest": "sha256:" + "ab" * 32}
    assert summary.release_status({"metrics": {}}) is None


def test_a_built_status_matches_the_status_schema_models():
    records = {"export": {"state": "Succeeded", "job": "j", "key": "k" * 64, "attempts": 1,
                          "started": "t1", "finished": "t2", "message": "ok"},
               "convert": {"state": "Running", "job": "j2", "attempts": 1}}
    conditions = summary.build_conditions([], NAMES, records, None, generation=4, now="t")
    status = {"observedGeneration": 4, "runHash": "h" * 64, "stage": "convert",
              "conditions": conditions, "stages": records,
              "metrics": {"worstError": 0.1, "cosine": 0.99}}
    parsed = ConversionStatus.model_validate(status)
    assert parsed.stages.export.state == "Succeeded"
    assert len(parsed.conditions) == 5
