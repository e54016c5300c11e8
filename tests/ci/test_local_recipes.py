"""The local-mode job of each CI recipe, run command by command against this repository's
modelconv: train the example model, `modelconv run`, then check that the files the CI system
keeps (the release, the report, the JUnit XML) are where the recipe expects them.
"""

from __future__ import annotations

import glob
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from recipes import (
    GITHUB_CONVERT,
    GITLAB,
    JENKINSFILE,
    base_environment,
    checkout,
    github_commands,
    github_steps,
    gitlab_commands,
    gitlab_jobs,
    jenkins_commands,
    jenkins_pipeline,
    run_commands,
)

RELEASE = Path("release") / "sensor-classifier" / "1.0.0"
STAGES = ["export", "convert", "validate", "publish"]


def check_release_and_junit(folder: Path, junit_name: str) -> None:
    """Check the published release and the JUnit XML of a successful local run."""
    for name in ("manifest.json", "model.mlpackage.zip", "model.onnx", "report.html"):
        assert (folder / RELEASE / name).is_file(), name
    root = ElementTree.parse(folder / junit_name).getroot()
    assert int(root.get("tests")) > len(STAGES)
    assert root.get("failures") == "0"
    assert root.get("errors") == "0"
    stages = [case.get("name") for case in root.iter("testcase")
              if case.get("classname") == "modelconv.stage"]
    assert stages == STAGES


def test_github_convert_workflow_runs(tmp_path, ci_tools):
    folder = checkout(tmp_path / "checkout")
    env = base_environment(tmp_path / "home", ci_tools)
    commands = github_commands(GITHUB_CONVERT, values={})
    for command in commands:
        command.env = {**env, **command.env}

    mapped = run_commands(commands, folder, tmp_path / "recipe.log", ci_tools)

    assert mapped == ['python -m pip install "modelconv[ml]==0.1.0"']
    check_release_and_junit(folder, "modelconv-junit.xml")
    (upload,) = [step for step in github_steps(GITHUB_CONVERT)
                 if (step.uses or "").startswith("actions/upload-artifact@")]
    uploaded = [path for path in upload.with_["path"].split() if (folder / path).exists()]
    assert uploaded == ["release/"]


def test_gitlab_convert_job_runs(tmp_path, ci_tools):
    folder = checkout(tmp_path / "checkout")
    env = {**base_environment(tmp_path / "home", ci_tools), "CI_PROJECT_DIR": str(folder)}
    commands = gitlab_commands(GITLAB, "convert", env)

    mapped = run_commands(commands, folder, tmp_path / "recipe.log", ci_tools)

    assert len(mapped) == 1
    job = gitlab_jobs(GITLAB)["convert"]
    check_release_and_junit(folder, job["artifacts"]["reports"]["junit"])
    assert (folder / job["artifacts"]["paths"][0]).is_dir()


def test_jenkins_convert_stages_run(tmp_path, ci_tools):
    folder = checkout(tmp_path / "workspace")
    pipeline = jenkins_pipeline(JENKINSFILE)
    env = {**base_environment(tmp_path / "home", ci_tools), **pipeline.environment,
           "WORKSPACE": str(folder), "BUILD_NUMBER": "9"}
    commands = jenkins_commands(JENKINSFILE, ["Install", "Train", "Convert"], env)

    mapped = run_commands(commands, folder, tmp_path / "recipe.log", ci_tools)

    assert len(mapped) == 1
    check_release_and_junit(folder, "modelconv-junit.xml")
    assert glob.glob(str(folder / "release/**"), recursive=True)
    published = [pattern for pattern in pipeline.junit if (folder / pattern).is_file()]
    assert published == ["modelconv-junit.xml"]
