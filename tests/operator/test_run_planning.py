"""Run planning and cache keys (modelconv.plan): pure functions, no cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelconv.plan import (
    CACHED_STAGES,
    STAGE_TOOLS,
    TOOL_VERSIONS,
    plan_run,
    read_tool_versions,
    stage_key,
)
from modelconv.spec import ConversionSpec

REPO_ROOT = Path(__file__).resolve().parents[2]


def make_spec(**changes) -> ConversionSpec:
    document = {
        "source": {"factory": {"entrypoint": "tests.operator.factories:mlp"}},
        "inputs": [{"name": "x", "shape": [1, 4]}],
        "outputs": [{"name": "logits"}],
        "publish": {"model": "mlp", "version": "1.0.0"},
    }
    for path, value in changes.items():
        target = document
        parts = path.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return ConversionSpec.model_validate(document)


def keys(plan) -> dict:
    return {stage.name: stage.key for stage in plan.stages}


def test_default_plan_has_four_stages_in_order():
    plan = plan_run(make_spec())
    assert plan.names == ("export", "convert", "validate", "publish")
    assert all(len(stage.key) == 64 for stage in plan.stages)


def test_train_and_device_are_planned_only_when_asked():
    spec = make_spec(**{
        "train": {"image": "trainer:1", "output": {"uri": "s3://bucket/model.pt2"}},
        "validation.device.enabled": True,
    })
    plan = plan_run(spec)
    assert plan.names == ("train", "export", "convert", "validate", "device", "publish")


def test_same_spec_gives_same_keys_and_run_hash():
    first, second = plan_run(make_spec()), plan_run(make_spec())
    assert keys(first) == keys(second)
    assert first.run_hash == second.run_hash


def test_publish_change_changes_only_the_publish_key():
    before = keys(plan_run(make_spec()))
    after = keys(plan_run(make_spec(**{"publish.version": "1.0.1"})))
    assert after["publish"] != before["publish"]
    for stage in ("export", "convert", "validate"):
        assert after[stage] == before[stage], stage


def test_publish_store_is_not_part_of_any_key():
    before = keys(plan_run(make_spec()))
    after = keys(plan_run(make_spec(**{"publish.store": "s3://other-bucket/x"})))
    assert after == before


def test_device_timeout_is_not_part_of_any_key():
    before = keys(plan_run(make_spec(**{"validation.device.enabled": True})))
    after = keys(plan_run(make_spec(**{"validation.device.enabled": True,
                                       "validation.device.timeoutSeconds": 7200})))
    assert after == before


def test_device_compute_units_change_the_device_key():
    before = keys(plan_run(make_spec(**{"validation.device.enabled": True})))
    after = keys(plan_run(make_spec(**{"validation.device.enabled": True,
                                       "validation.device.computeUnits": ["all"]})))
    assert after["device"] != before["device"]
    assert after["validate"] == before["validate"]


def test_coreml_change_reruns_convert_and_later_stages():
    before = keys(plan_run(make_spec()))
    after = keys(plan_run(make_spec(**{"coreml.precision": "float32"})))
    assert after["export"] == before["export"]
    for stage in ("convert", "validate", "publish"):
        assert after[stage] != before[stage], stage


def test_source_change_changes_every_key():
    before = keys(plan_run(make_spec()))
    after = keys(plan_run(make_spec(**{"source.factory.kwargs": {"width": 16}})))
    for stage in CACHED_STAGES:
        assert after[stage] != before[stage], stage


def test_source_version_changes_every_key():
    spec = make_spec(source={"onnx": {"uri": "s3://bucket/model.onnx"}})
    first = keys(plan_run(spec, source_version='"etag-1"'))
    second = keys(plan_run(spec, source_version='"etag-2"'))
    for stage in CACHED_STAGES:
        assert first[stage] != second[stage], stage


def test_job_settings_change_the_run_hash_but_not_the_keys():
    first = plan_run(make_spec(), job_settings={"stageImage": "a"})
    second = plan_run(make_spec(), job_settings={"stageImage": "b"})
    assert first.run_hash != second.run_hash
    assert keys(first) == keys(second)


def test_resources_change_the_run_hash_but_not_the_keys():
    first = plan_run(make_spec())
    second = plan_run(make_spec(resources={"limits": {"memory": "4Gi"}}))
    assert first.run_hash != second.run_hash
    assert keys(first) == keys(second)


def test_stage_image_override_changes_that_stage_and_later_ones():
    before = keys(plan_run(make_spec()))
    after = keys(plan_run(make_spec(stages={"convert": {"image": "custom/stage:2"}})))
    assert after["export"] == before["export"]
    assert after["convert"] != before["convert"]
    assert after["publish"] != before["publish"]


def test_stages_after_training_wait_for_the_training_run():
    spec = make_spec(train={"image": "trainer:1", "output": {"uri": "s3://bucket/m.pt2"}})
    waiting = plan_run(spec)
    assert waiting.stage("train").key is not None
    assert [waiting.stage(name).key for name in CACHED_STAGES] == [None] * 4
    assert waiting.cache_keys() == {}

    trained = plan_run(spec, trained_run="uid-1")
    retrained = plan_run(spec, trained_run="uid-2")
    assert trained.run_hash == waiting.run_hash
    assert set(trained.cache_keys()) == set(CACHED_STAGES)
    assert trained.cache_keys()["export"] != retrained.cache_keys()["export"]


def test_training_run_replaces_the_source_in_the_export_key():
    train = {"image": "trainer:1", "output": {"uri": "s3://bucket/m.pt2"}}
    first = plan_run(make_spec(train=train), trained_run="uid-1")
    second = plan_run(make_spec(train=train, **{"source.factory.seed": 7}), trained_run="uid-1")
    assert first.stage("export").key == second.stage("export").key


def test_stage_key_covers_the_tool_versions(monkeypatch):
    before = stage_key("convert", {"a": 1}, None)
    monkeypatch.setitem(TOOL_VERSIONS, "coremltools", "99.0")
    assert stage_key("convert", {"a": 1}, None) != before
    assert stage_key("publish", {"a": 1}, None) == stage_key("publish", {"a": 1}, None)


def test_stage_key_chains_the_previous_key():
    assert stage_key("convert", {}, "a" * 64) != stage_key("convert", {}, "b" * 64)


def test_tool_versions_match_requirements_lock():
    lock = (REPO_ROOT / "requirements.lock").read_text()
    pinned = read_tool_versions(lock)
    assert pinned == TOOL_VERSIONS, (
        "modelconv.plan.TOOL_VERSIONS differs from requirements.lock; set it to "
        f"{dict(sorted(pinned.items()))!r}")


def test_every_stage_tool_has_a_pinned_version():
    for stage, tools in STAGE_TOOLS.items():
        for tool in tools:
            assert tool in TOOL_VERSIONS, f"{stage} uses {tool}, which has no pinned version"


@pytest.mark.parametrize("line, expected", [
    ("torch==2.13.0", {"torch": "2.13.0"}),
    ("torch==2.13.0 ; python_version >= '3.11'", {"torch": "2.13.0"}),
    ("# torch==1.0", {}),
])
def test_tool_versions_are_read_from_lock_lines(line, expected):
    assert read_tool_versions(line) == expected
