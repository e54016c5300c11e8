"""The CI recipes in examples/ci/ as their CI systems read them: workflows that actionlint
accepts, a GitLab file and a Jenkinsfile with the expected jobs, stages and report steps,
scripts that shellcheck accepts, and modelconv commands that the CLI accepts.

Running the recipes' commands is the job of test_local_recipes.py and
test_cluster_recipes.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest
import yaml

from modelconv.cli import build_parser
from modelconv.cluster_client import REQUIRED_VERBS
from modelconv.spec import parse_conversion
from recipes import (
    EXAMPLES,
    GITHUB_APPLY,
    GITHUB_CONVERT,
    GITLAB,
    INSTALL_COMMANDS,
    JENKINSFILE,
    REPO_ROOT,
    PRODUCT_VERSION,
    RecipeError,
    github_steps,
    gitlab_jobs,
    jenkins_pipeline,
    load_yaml,
    modelconv_invocations,
)

# Inputs that mikepenz/action-junit-report v6.4.2 declares in its action.yml (the subset the
# recipes may use); actionlint has no metadata of this action to check them with.
JUNIT_REPORT_ACTION = "mikepenz/action-junit-report@v6.4.2"
JUNIT_REPORT_INPUTS = {"report_paths", "check_name", "require_tests", "include_passed",
                       "detailed_summary", "fail_on_failure", "job_summary", "token"}
PINNED_ACTION = re.compile(r"^[\w.-]+/[\w.-]+@v\d+(\.\d+){0,2}$")


def actionlint(tools, *paths):
    env = {"PATH": f"{tools['shellcheck'].parent}:/usr/bin:/bin"}
    return subprocess.run([str(tools["actionlint"]), "-no-color", *map(str, paths)],
                          capture_output=True, text=True, env=env, timeout=120)


def all_scripts() -> dict[str, str]:
    """Return every shell script of the recipes by origin."""
    scripts = {f"{path.name}: {step.name}": step.run
               for path in (GITHUB_CONVERT, GITHUB_APPLY)
               for step in github_steps(path) if step.run}
    for name, job in gitlab_jobs(GITLAB).items():
        scripts.update({f".gitlab-ci.yml: {name}: {index}": line
                        for index, line in enumerate(job["script"])})
    for stage in jenkins_pipeline(JENKINSFILE).stages:
        scripts.update({f"Jenkinsfile: {stage.name}: {index}": script
                        for index, script in enumerate(stage.sh)})
    return scripts


def test_github_workflows_pass_actionlint(ci_tools):
    linted = actionlint(ci_tools, GITHUB_CONVERT, GITHUB_APPLY)

    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert linted.stdout == ""


def test_actionlint_reports_a_broken_workflow(ci_tools, tmp_path):
    broken = tmp_path / "broken.yml"
    text = GITHUB_APPLY.read_text().replace("${{ github.run_number }}", "${{ github.run_nummer }}")
    broken.write_text(text.replace("if-no-files-found", "if-no-file-found"))
    linted = actionlint(ci_tools, broken)

    assert linted.returncode == 1
    assert "run_nummer" in linted.stdout


def test_github_actions_are_pinned_to_versions():
    uses = [(path.name, step) for path in (GITHUB_CONVERT, GITHUB_APPLY)
            for step in github_steps(path) if step.uses]
    for name, step in uses:
        assert PINNED_ACTION.match(step.uses), f"{name}: {step.uses} is not pinned to a version"
    reports = [step for _, step in uses if step.uses.startswith("mikepenz/")]
    assert len(reports) == 2
    for step in reports:
        assert step.uses == JUNIT_REPORT_ACTION
        assert set(step.with_) <= JUNIT_REPORT_INPUTS, sorted(set(step.with_) - JUNIT_REPORT_INPUTS)


def test_github_workflows_publish_the_files_they_write():
    for path in (GITHUB_CONVERT, GITHUB_APPLY):
        steps = github_steps(path)
        scripts = "\n".join(step.run for step in steps if step.run)
        (report,) = [step for step in steps if step.uses == JUNIT_REPORT_ACTION]
        assert f"--junit {report.with_['report_paths']}" in scripts, path.name
        assert report.condition == "${{ !cancelled() }}", path.name
    (upload,) = [step for step in github_steps(GITHUB_CONVERT)
                 if (step.uses or "").startswith("actions/upload-artifact@")]
    assert "release/" in upload.with_["path"].split()
    assert upload.condition == "${{ !cancelled() }}"


def test_gitlab_jobs_report_junit():
    jobs = gitlab_jobs(GITLAB)

    assert sorted(jobs) == ["convert", "convert-in-cluster"]
    for name, job in jobs.items():
        script = "\n".join(job["script"])
        junit = job["artifacts"]["reports"]["junit"]
        assert f"--junit {junit}" in script, name
        assert job["artifacts"]["when"] == "always", name
    assert "release/" in jobs["convert"]["artifacts"]["paths"]
    assert "modelconv run " in "\n".join(jobs["convert"]["script"])
    assert "modelconv apply " in "\n".join(jobs["convert-in-cluster"]["script"])
    assert jobs["convert-in-cluster"]["rules"] == [
        {"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"}]


def test_jenkinsfile_has_the_stages_and_report_steps():
    pipeline = jenkins_pipeline(JENKINSFILE)
    stages = {stage.name: stage for stage in pipeline.stages}

    assert list(stages) == ["Install", "Train", "Convert", "Convert in cluster"]
    assert "modelconv run modelconv.yaml" in stages["Convert"].sh[0]
    assert "modelconv apply modelconversion.yaml --wait" in stages["Convert in cluster"].sh[0]
    assert stages["Convert in cluster"].branch == "main"
    assert stages["Convert"].branch is None
    assert sorted(stages["Convert in cluster"].credentials) == [
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "KUBECONFIG"]
    written = re.findall(r"--junit (\S+)", "\n".join(all_scripts().values()))
    for name in ("modelconv-junit.xml", "modelconv-cluster-junit.xml"):
        assert name in written
        assert name in pipeline.junit
    assert "release/**" in pipeline.archive


@pytest.mark.parametrize("text, problem", [
    ("pipeline {\n  stages {\n    stage('A') { steps { sh 'true' } }\n  }\n", "never closed"),
    ("pipeline {\n  stages { stage('A') { steps { sh \"echo ${env.X}\" } } }\n}\n", "GString"),
    ("pipeline {\n  stages { stage('A') { steps { sh 'a \\\n b' } } }\n}\n", "backslashes"),
    ("pipeline {\n  stages { stage('A') { steps { sh 'a\n b' } } }\n}\n", "not a plain string"),
])
def test_jenkinsfile_parser_rejects(tmp_path, text, problem):
    path = tmp_path / "Jenkinsfile"
    path.write_text(text)
    with pytest.raises(RecipeError, match=problem):
        jenkins_pipeline(path)


def test_recipe_scripts_pass_shellcheck(ci_tools, tmp_path):
    # GitHub's run: scripts are checked by actionlint; these are the GitLab and Jenkins ones.
    shells = {".gitlab-ci.yml": "bash", "Jenkinsfile": "sh"}
    for origin, script in all_scripts().items():
        shell = shells.get(origin.split(":")[0])
        if shell is None:
            continue
        path = tmp_path / "script.sh"
        path.write_text(f"#!/bin/{shell}\n{script}\n")
        checked = subprocess.run([str(ci_tools["shellcheck"]), "--severity=style", str(path)],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, f"{origin}:\n{checked.stdout}"


def test_modelconv_commands_are_valid():
    parser = build_parser()
    commands = {}
    for origin, script in all_scripts().items():
        for argv in modelconv_invocations(script):
            args = parser.parse_args(argv)
            commands.setdefault(args.command, []).append(origin)
            if args.command == "apply":
                assert args.wait, origin
                assert args.junit, origin
                assert args.timeout, origin
            else:
                assert args.command == "run", origin
                assert args.junit, origin
                assert args.store, origin
    assert len(commands["run"]) == 3
    assert len(commands["apply"]) == 3


def test_install_lines_pin_this_version():
    installs = [(origin, script.strip()) for origin, script in all_scripts().items()
                if "pip install" in script]

    assert len(installs) == 5
    for origin, script in installs:
        assert script in INSTALL_COMMANDS, f"{origin}: {script}"
        assert f"modelconv[ml]=={PRODUCT_VERSION}" in script


def test_example_conversions_are_valid():
    local = load_yaml(EXAMPLES / "modelconv.yaml")
    assert parse_conversion(local).spec.source.exported_program.uri == "model.pt2"

    template = (EXAMPLES / "modelconv-cluster.yaml").read_text()
    assert sorted(set(re.findall(r"@\w+@", template))) == ["@MODEL_URI@", "@MODEL_VERSION@"]
    filled = template.replace("@MODEL_URI@", "s3://models/sensor-classifier/abc/model.pt2")
    cluster = parse_conversion(yaml.safe_load(filled.replace("@MODEL_VERSION@", "1.0.7")))
    assert cluster.spec.publish.version == "1.0.7"
    # The two files describe the same model; only the source and the version differ.
    assert cluster.spec.model_dump(exclude={"source", "publish"}) == parse_conversion(
        local).spec.model_dump(exclude={"source", "publish"})

    for origin, script in all_scripts().items():
        if "modelconv-cluster.yaml" in script:
            for placeholder in ("@MODEL_URI@", "@MODEL_VERSION@"):
                assert f"s|{placeholder}|" in script, origin


def test_ci_role_grants_only_the_apply_verbs():
    documents = list(yaml.safe_load_all((EXAMPLES / "ci-rbac.yaml").read_text()))
    (role,) = [document for document in documents if document["kind"] == "Role"]
    (rule,) = role["rules"]

    assert rule["apiGroups"] == ["modelconv.io"]
    assert rule["resources"] == ["modelconversions"]
    assert sorted(rule["verbs"]) == ["create", "get", "patch", "watch"]
    assert REQUIRED_VERBS == "get, create, patch and watch"
    assert shutil.which("sed"), "the cluster recipes fill the template with sed"


# An install from a checkout, as the README and docs/examples.md write it.
CHECKOUT_INSTALL = re.compile(r"pip install -c (\S+) '([^'\[]+)\[([\w,-]+)\]'")


@pytest.mark.parametrize("document", ["README.md", "docs/examples.md"])
def test_checkout_install_fits_repository_layout(document):
    text = (REPO_ROOT / document).read_text()
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    lines = CHECKOUT_INSTALL.findall(text)
    assert lines, f"{document} has no pip install -c ... line"
    for constraints, target, requested in lines:
        # Both paths are relative to the one folder the command runs in.
        assert (REPO_ROOT / constraints).is_file()
        assert (REPO_ROOT / target / "pyproject.toml").is_file()
        for extra in requested.split(","):
            assert extra in extras
