"""The cluster-mode job of each CI recipe, run command by command against the test control
plane, the S3 server and a running `modelconv operator`: train, upload with the AWS CLI,
fill the template with sed, `modelconv apply --wait` under the ServiceAccount of
examples/ci/ci-rbac.yaml. The three recipes apply generations of the same resource, as
three pushes would, so the second and third reuse the stage cache and publish only.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import operator_harness as harness
from recipes import (
    GITHUB_APPLY,
    GITLAB,
    JENKINSFILE,
    VENV_BIN,
    base_environment,
    checkout,
    github_commands,
    gitlab_commands,
    jenkins_commands,
    jenkins_pipeline,
    run_commands,
)

COMMIT = "3f1c2a9d8e7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d"
NAME = "sensor-classifier"
STAGES = ["export", "convert", "validate", "publish"]


def check_junit(path: Path, location: str) -> None:
    root = ElementTree.parse(path).getroot()
    cases = {case.get("name"): case for case in root.iter("testcase")}
    assert list(cases) == STAGES
    assert root.get("failures") == "0", ElementTree.tostring(root, encoding="unicode")
    assert root.get("errors") == "0"
    properties = {item.get("name"): item.get("value") for item in root.iter("property")}
    assert properties["release.location"] == location
    assert float(properties["metrics.worstError"]) < 1e-3


def run_github(tmp_path, tools, env, kubeconfig: Path, bucket: str, s3: dict) -> Path:
    folder = checkout(tmp_path / "github")
    values = {
        "secrets.AWS_ACCESS_KEY_ID": s3["AWS_ACCESS_KEY_ID"],
        "secrets.AWS_SECRET_ACCESS_KEY": s3["AWS_SECRET_ACCESS_KEY"],
        "vars.AWS_REGION": s3["AWS_REGION"],
        "vars.MODEL_BUCKET": bucket,
        "github.sha": COMMIT,
        "github.run_number": "7",
        "secrets.KUBECONFIG": kubeconfig.read_text(),
    }
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    commands = github_commands(GITHUB_APPLY, values)
    for command in commands:
        command.env = {**env, "RUNNER_TEMP": str(runner_temp), "GITHUB_SHA": COMMIT,
                       **command.env}
    run_commands(commands, folder, tmp_path / "github.log", tools)
    return folder / "modelconv-junit.xml"


def run_gitlab(tmp_path, tools, env, kubeconfig: Path, bucket: str) -> Path:
    folder = checkout(tmp_path / "gitlab")
    env = {**env, "CI_PROJECT_DIR": str(folder), "CI_COMMIT_SHA": COMMIT,
           "CI_PIPELINE_IID": "8", "MODEL_BUCKET": bucket, "KUBECONFIG": str(kubeconfig)}
    run_commands(gitlab_commands(GITLAB, "convert-in-cluster", env), folder,
                 tmp_path / "gitlab.log", tools)
    return folder / "modelconv-junit.xml"


def run_jenkins(tmp_path, tools, env, kubeconfig: Path, bucket: str, s3: dict) -> Path:
    folder = checkout(tmp_path / "jenkins")
    pipeline = jenkins_pipeline(JENKINSFILE)
    # The pipeline's environment block holds the user's settings; the test's replace them.
    assert sorted(pipeline.environment) == ["AWS_REGION", "MODEL_BUCKET"]
    env = {**env, "MODEL_BUCKET": bucket, "AWS_REGION": s3["AWS_REGION"],
           "WORKSPACE": str(folder), "GIT_COMMIT": COMMIT, "BUILD_NUMBER": "9",
           "KUBECONFIG": str(kubeconfig)}
    commands = jenkins_commands(JENKINSFILE, ["Install", "Train", "Convert in cluster"], env)
    run_commands(commands, folder, tmp_path / "jenkins.log", tools)
    return folder / "modelconv-cluster-junit.xml"


def test_cluster_recipes_apply_and_wait(tmp_path, ci_tools, kube_api, operators, s3_server,
                                        ci_kubeconfig):
    namespace = operators.namespace
    operator = operators.start()
    kubeconfig = ci_kubeconfig(namespace)
    # The S3 server's credentials fill the recipes' AWS settings; its endpoint variables
    # stand for AWS's default endpoint, which no recipe names.
    s3 = s3_server.client_env()
    env = {**base_environment(tmp_path / "home", ci_tools), **s3}
    s3_client = s3_server.client()

    runs = [
        ("7", lambda: run_github(tmp_path, ci_tools, env, kubeconfig, operators.bucket, s3)),
        ("8", lambda: run_gitlab(tmp_path, ci_tools, env, kubeconfig, operators.bucket)),
        ("9", lambda: run_jenkins(tmp_path, ci_tools, env, kubeconfig, operators.bucket, s3)),
    ]
    for generation, (build, run) in enumerate(runs, start=1):
        junit = run()
        assert operator.running(), operator.log_text()[-3000:]
        version = f"1.0.{build}"
        check_junit(junit, f"{operators.store}/{NAME}/{version}")
        s3_client.head_object(Bucket=operators.bucket,
                              Key=f"releases/{NAME}/{version}/manifest.json")
        done = harness.get(kube_api, namespace, NAME)
        assert done["metadata"]["generation"] == generation
        assert harness.condition(done, "Ready")["status"] == "True"
        assert harness.condition(done, "Ready")["observedGeneration"] == generation

    # The same trained bytes at the same location: later pushes reuse the cached stages.
    for type_ in ("Exported", "Converted", "Validated"):
        assert harness.condition(done, type_)["reason"] == "CacheHit", type_
    uploaded = s3_client.head_object(
        Bucket=operators.bucket, Key=f"models/{NAME}/{COMMIT}/model.pt2")
    assert uploaded["ContentLength"] > 0


def test_failed_stage_ends_apply_with_its_reason(tmp_path, kube_api, operators, ci_kubeconfig):
    namespace = operators.namespace
    operators.start()
    kubeconfig = ci_kubeconfig(namespace)
    template = (checkout(tmp_path / "repo") / "modelconv-cluster.yaml").read_text()
    missing = f"s3://{operators.bucket}/models/{NAME}/absent/model.pt2"
    conversion = tmp_path / "modelconversion.yaml"
    conversion.write_text(template.replace("@MODEL_URI@", missing)
                          .replace("@MODEL_VERSION@", "1.0.1"))
    junit = tmp_path / "junit.xml"

    applied = subprocess.run(
        [str(VENV_BIN / "modelconv"), "apply", str(conversion), "--kubeconfig", str(kubeconfig),
         "--wait", "--timeout", "10m", "--junit", str(junit)],
        capture_output=True, text=True, timeout=900)

    assert applied.returncode == 1, applied.stdout + applied.stderr
    assert "Traceback" not in applied.stdout + applied.stderr
    failed = [line for line in applied.stdout.splitlines() if line.startswith("Failed: ")]
    assert len(failed) == 1, applied.stdout
    assert failed[0].startswith("Failed: SourceNotFound: ")
    assert "absent/model.pt2" in failed[0]
    assert "export: failed after" in applied.stdout
    root = ElementTree.parse(junit).getroot()
    export = next(case for case in root.iter("testcase") if case.get("name") == "export")
    assert export.find("failure").get("type") == "SourceNotFound"
    assert root.get("skipped") == "3"
