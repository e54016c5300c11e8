"""Job, ConfigMap and run file manifests (modelconv.controller.jobs): pure functions."""

from __future__ import annotations

import dataclasses
import json

import pytest

from modelconv.controller import jobs
from modelconv.controller.config import OperatorConfig
from modelconv.plan import plan_run
from modelconv.spec import ConversionSpec

CONVERSION = jobs.ConversionRef("mlp", "team-a", "0d9f2c1e-1111-2222-3333-444455556666")
CONFIG = OperatorConfig(stage_image="registry.example/modelconv-stage:1", store_secret="s3-creds",
                        s3_endpoint="http://127.0.0.1:9000", stage_env=(("PYTHONPATH", "/src"),))


def make_spec(**extra) -> ConversionSpec:
    document = {
        "source": {"factory": {"entrypoint": "tests.operator.factories:mlp"}},
        "inputs": [{"name": "x", "shape": [1, 4]}],
        "outputs": [{"name": "logits"}],
        "publish": {"model": "mlp", "version": "1.0.0"},
        **extra,
    }
    return ConversionSpec.model_validate(document)


def body_of(spec: ConversionSpec) -> dict:
    return {"apiVersion": "modelconv.io/v1alpha1", "kind": "ModelConversion",
            "metadata": {"name": CONVERSION.name, "namespace": CONVERSION.namespace,
                         "uid": CONVERSION.uid, "generation": 1, "labels": {"a": "b"}},
            "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
            "status": {"stage": "convert"}}


def build(stage_name: str = "convert", **extra):
    spec = make_spec(**extra)
    plan = plan_run(spec)
    return jobs.stage_job(CONVERSION, plan, plan.stage(stage_name), spec, CONFIG), plan, spec


def test_job_runs_stage_command():
    job, _, _ = build()
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/modelconv-stage:1"
    assert container["command"] == ["modelconv"]
    assert container["args"] == ["stage", "convert", "--run", "/etc/modelconv/run.json"]
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert mounts["/etc/modelconv"]["readOnly"] is True
    assert "/tmp" in mounts


def test_job_name_is_deterministic_and_a_dns_label():
    first, plan, _ = build()
    second, _, _ = build()
    name = first["metadata"]["name"]
    assert name == second["metadata"]["name"]
    assert name.startswith("mlp-convert-")
    assert len(name) <= 63
    assert name == jobs.job_name(CONVERSION, plan.run_hash, "convert")


def test_long_names_cut_without_collisions():
    long_a = jobs.ConversionRef("a" * 60 + "-one", "ns", "uid-1")
    long_b = jobs.ConversionRef("a" * 60 + "-two", "ns", "uid-2")
    name_a = jobs.job_name(long_a, "f" * 64, "validate")
    name_b = jobs.job_name(long_b, "f" * 64, "validate")
    assert len(name_a) <= 63
    assert len(name_b) <= 63
    assert name_a != name_b
    assert not name_a.split("-validate-")[0].endswith("-")


def test_names_differ_per_run_and_uid():
    other_uid = jobs.ConversionRef("mlp", "team-a", "another-uid")
    assert jobs.job_name(CONVERSION, "a" * 64, "export") != jobs.job_name(CONVERSION, "b" * 64,
                                                                          "export")
    assert jobs.job_name(CONVERSION, "a" * 64, "export") != jobs.job_name(other_uid, "a" * 64,
                                                                          "export")


def test_job_is_owned_by_the_conversion():
    job, _, _ = build()
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner["uid"] == CONVERSION.uid
    assert owner["kind"] == "ModelConversion"
    assert owner["controller"] is True
    assert owner["blockOwnerDeletion"] is True


def test_pod_security_is_restricted():
    job, _, _ = build()
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]["securityContext"]
    assert container["allowPrivilegeEscalation"] is False
    assert container["readOnlyRootFilesystem"] is True
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]


def test_default_service_account_unless_set():
    job, _, _ = build()
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]


def test_stage_service_account_on_all_jobs():
    config = dataclasses.replace(CONFIG, stage_service_account="modelconv-stage")
    spec = make_spec(train={"image": "team/trainer:3",
                            "output": {"uri": "s3://bucket/trained/model.pt"},
                            "outputKind": "torchscript"})
    plan = plan_run(spec)
    stage = jobs.stage_job(CONVERSION, plan, plan.stage("export"), spec, config)
    train = jobs.train_job(CONVERSION, plan, plan.stage("train"), spec, config)
    for job in (stage, train):
        pod = job["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "modelconv-stage"
        assert pod["automountServiceAccountToken"] is False


def test_stage_service_account_in_run_hash():
    spec = make_spec()
    config = dataclasses.replace(CONFIG, stage_service_account="modelconv-stage")
    plain = plan_run(spec, job_settings=CONFIG.job_settings())
    with_account = plan_run(spec, job_settings=config.job_settings())
    assert "stageServiceAccount" not in CONFIG.job_settings()
    assert plain.run_hash != with_account.run_hash


def test_pod_failure_policy_rules():
    job, _, _ = build()
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {
        "containerName": "stage", "operator": "In", "values": [2]}}
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_job_limits_come_from_operator_defaults():
    job, _, _ = build()
    assert job["spec"]["backoffLimit"] == CONFIG.backoff_limit
    assert job["spec"]["activeDeadlineSeconds"] == CONFIG.active_deadline_seconds
    assert job["spec"]["ttlSecondsAfterFinished"] == CONFIG.ttl_seconds_after_finished


def test_stage_overrides_win_over_spec_resources_and_defaults():
    job, _, _ = build(
        resources={"requests": {"cpu": "1", "memory": "2Gi"}},
        stages={"convert": {"resources": {"limits": {"memory": "8Gi"}}, "backoffLimit": 0,
                            "activeDeadlineSeconds": 600, "image": "custom/stage:2"}},
    )
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"limits": {"memory": "8Gi"}}
    assert container["image"] == "custom/stage:2"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 600


def test_spec_resources_apply_to_stages_without_overrides():
    job, _, _ = build("export", resources={"requests": {"cpu": 2, "memory": "2Gi"}})
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "2Gi"}}


def test_store_credentials_from_secret_only():
    job, _, _ = build()
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env == {"PYTHONPATH": "/src", "MODELCONV_S3_ENDPOINT": "http://127.0.0.1:9000",
                   "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",
                   "MODELCONV_TERMINATION_LOG": "/dev/termination-log"}
    assert container["terminationMessagePath"] == "/dev/termination-log"


def test_labels_select_the_conversion_stage_and_run():
    job, plan, _ = build()
    labels = job["metadata"]["labels"]
    assert labels[jobs.LABEL_CONVERSION_UID] == CONVERSION.uid
    assert labels[jobs.LABEL_STAGE] == "convert"
    assert labels[jobs.LABEL_RUN] == plan.run_hash[:16]
    assert labels[jobs.LABEL_MANAGED_BY] == jobs.MANAGED_BY
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    assert job["metadata"]["annotations"][jobs.ANNOTATION_STAGE_KEY] == plan.stage("convert").key


def test_run_file_follows_the_stage_contract():
    spec = make_spec()
    plan = plan_run(spec)
    document = jobs.run_document(body_of(spec), plan, "s3://bucket/prefix")
    assert document["apiVersion"] == "modelconv.io/run/v1"
    assert document["store"] == "s3://bucket/prefix"
    assert document["stages"] == {name: {"key": plan.stage(name).key}
                                  for name in ("export", "convert", "validate", "publish")}
    conversion = document["conversion"]
    assert conversion["metadata"] == {"name": "mlp", "namespace": "team-a"}
    assert conversion["spec"]["publish"]["model"] == "mlp"
    assert "status" not in conversion
    assert "source" not in document


def test_run_file_is_readable_by_the_stage_runner(tmp_path):
    from modelconv.pipeline.stage_job import read_run_file

    spec = make_spec()
    plan = plan_run(spec)
    path = tmp_path / "run.json"
    config_map = jobs.run_config_map(CONVERSION, plan, jobs.run_document(
        body_of(spec), plan, "s3://bucket/prefix"))
    path.write_text(config_map["data"]["run.json"])
    conversion, store, keys = read_run_file(path)
    assert store == "s3://bucket/prefix"
    assert keys == plan.cache_keys()
    assert conversion.spec.publish.version == "1.0.0"


def test_run_config_map_is_immutable_and_owned():
    spec = make_spec()
    plan = plan_run(spec)
    config_map = jobs.run_config_map(CONVERSION, plan, {"a": 1})
    assert config_map["immutable"] is True
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == CONVERSION.uid
    assert json.loads(config_map["data"]["run.json"]) == {"a": 1}
    job = jobs.stage_job(CONVERSION, plan, plan.stage("export"), spec, CONFIG)
    volume = job["spec"]["template"]["spec"]["volumes"][0]
    assert volume == {"name": "run", "configMap": {"name": config_map["metadata"]["name"]}}


def test_train_job_runs_user_image():
    spec = make_spec(train={"image": "team/trainer:3", "command": ["python", "train.py"],
                            "args": ["--epochs", "1"],
                            "output": {"uri": "s3://bucket/trained/model.pt"},
                            "outputKind": "torchscript", "activeDeadlineSeconds": 7200})
    plan = plan_run(spec)
    job = jobs.train_job(CONVERSION, plan, plan.stage("train"), spec, CONFIG)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "team/trainer:3"
    assert container["command"] == ["python", "train.py"]
    assert container["args"] == ["--epochs", "1"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["MODELCONV_TRAIN_OUTPUT"] == "s3://bucket/trained/model.pt"
    assert env["MODELCONV_TRAIN_OUTPUT_KIND"] == "torchscript"
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert job["spec"]["activeDeadlineSeconds"] == 7200
    assert jobs.trained_source(spec) == {"uri": "s3://bucket/trained/model.pt",
                                         "kind": "torchscript"}


@pytest.mark.parametrize("stage_name", ["export", "convert", "validate", "publish"])
def test_stage_jobs_mount_their_run_file(stage_name):
    job, plan, _ = build(stage_name)
    volume = job["spec"]["template"]["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == jobs.run_config_map_name(CONVERSION, plan.run_hash)
