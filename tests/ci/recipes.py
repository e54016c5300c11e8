"""The CI recipes in examples/ci/, read as their CI systems read them, and run for real.

Each recipe is parsed into the shell commands its CI system would run, in order:
- GitHub Actions: each `run:` step of a job, with `${{ ... }}` expressions replaced from a
  table of the values the test provides (an expression that is not in the table fails);
- GitLab CI: each job's `script:` lines, with the job's `variables:` expanded as GitLab does;
- Jenkins: each `sh` step of each stage of the declarative Jenkinsfile, found by a small
  structural parse (stage names, `sh` steps, `withCredentials` bindings, `junit` and
  `archiveArtifacts` steps), not by a Groovy interpreter.

`run_commands` executes them in a folder laid out like the user's repository checkout, with
this repository's modelconv, as the CI system's shell would. The only commands that do not run
as written are the install lines of `INSTALL_COMMANDS`, because this test environment has
modelconv installed already.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Optional

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples" / "ci"
GITHUB_CONVERT = EXAMPLES / "github" / "convert.yml"
GITHUB_APPLY = EXAMPLES / "github" / "apply.yml"
GITLAB = EXAMPLES / "gitlab" / ".gitlab-ci.yml"
JENKINSFILE = EXAMPLES / "jenkins" / "Jenkinsfile"
# Files of examples/ci/ that a user copies to the repository root next to the recipe.
CHECKOUT_FILES = ("train.py", "modelconv.yaml", "modelconv-cluster.yaml")
VENV_BIN = Path(sys.executable).parent
PRODUCT_VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
# No shell command of a recipe may run longer: training, a local conversion, or
# `modelconv apply --wait` with its own --timeout of 45 minutes (the test's operator finishes
# long before that on a loaded two-core machine).
COMMAND_TIMEOUT = 1800

# The recipes' install lines, and what the test does instead. The test environment is this
# repository's virtualenv, which has modelconv (editable) and the `ml` extra; the AWS CLI comes
# from hack/build-tools.sh. Any other install line fails the test until it is listed here.
NO_OP = "nothing: the test environment has these packages"
JENKINS_VENV = "create .venv/bin with python, modelconv and aws of the test environment"
INSTALL_COMMANDS = {
    f'python -m pip install "modelconv[ml]=={PRODUCT_VERSION}"': NO_OP,
    f'pip install "modelconv[ml]=={PRODUCT_VERSION}"': NO_OP,
    f'pip install "modelconv[ml]=={PRODUCT_VERSION}" awscli': NO_OP,
    (f'python3 -m venv .venv && .venv/bin/python -m pip install '
     f'"modelconv[ml]=={PRODUCT_VERSION}" awscli'): JENKINS_VENV,
}


class RecipeError(AssertionError):
    """A recipe that its CI system would reject or that this parser cannot read."""


# --- GitHub Actions -------------------------------------------------------------------------


@dataclasses.dataclass
class GitHubStep:
    job: str
    name: str
    run: Optional[str]
    uses: Optional[str]
    env: dict[str, str]
    with_: dict
    condition: Optional[str]


def load_yaml(path: Path) -> dict:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise RecipeError(f"{path} is not a YAML mapping")
    return document


def github_steps(path: Path) -> list[GitHubStep]:
    """Return the steps of every job of a workflow, with workflow, job and step env merged."""
    workflow = load_yaml(path)
    steps = []
    for job_name, job in workflow["jobs"].items():
        base_env = {**(workflow.get("env") or {}), **(job.get("env") or {})}
        for index, step in enumerate(job["steps"]):
            steps.append(GitHubStep(
                job=job_name,
                name=step.get("name") or step.get("uses") or f"step {index + 1}",
                run=step.get("run"),
                uses=step.get("uses"),
                env={**base_env, **(step.get("env") or {})},
                with_=step.get("with") or {},
                condition=step.get("if"),
            ))
    return steps


EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def substitute_expressions(text: str, values: dict[str, str]) -> str:
    """Replace each `${{ expr }}` with values[expr]; fail on an expression not in `values`."""
    def replace(match: re.Match) -> str:
        expression = match.group(1)
        if expression not in values:
            raise RecipeError(f"the test has no value for the expression ${{{{ {expression} }}}}"
                              f" in {text!r}")
        return values[expression]

    return EXPRESSION.sub(replace, str(text))


def github_commands(path: Path, values: dict[str, str]) -> list["Command"]:
    """Return the `run:` steps of a workflow as commands, expressions substituted."""
    commands = []
    for step in github_steps(path):
        if step.run is None:
            continue
        if step.condition is not None:
            raise RecipeError(f"{path.name}: step {step.name!r} has `if:`, which this test "
                              "does not evaluate")
        env = {key: substitute_expressions(value, values) for key, value in step.env.items()}
        script = substitute_expressions(step.run, values)
        commands.append(Command(f"{path.name}: {step.name}", script, GITHUB_SHELL, env))
    return commands


# GitHub's default shell for `run:` on Linux runners.
GITHUB_SHELL = ("bash", "--noprofile", "--norc", "-eo", "pipefail", "-c")
# GitLab's shell for a job's script (bash when the image has it, as python:3.11 does).
GITLAB_SHELL = ("bash", "-eo", "pipefail", "-c")
# Jenkins `sh` runs its script with `sh -xe`.
JENKINS_SHELL = ("sh", "-xe", "-c")


# --- GitLab CI ------------------------------------------------------------------------------


VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def expand_variables(text: str, env: dict[str, str]) -> str:
    """Expand $NAME and ${NAME} as GitLab expands variables; fail on an undefined one."""
    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in env:
            raise RecipeError(f"variable {name} in {text!r} is not defined for the test")
        return env[name]

    return VARIABLE.sub(replace, str(text))


def gitlab_jobs(path: Path) -> dict[str, dict]:
    """Return the jobs of a .gitlab-ci.yml: every top-level key that has a `script`."""
    document = load_yaml(path)
    return {name: job for name, job in document.items()
            if isinstance(job, dict) and "script" in job}


def gitlab_commands(path: Path, job_name: str, env: dict[str, str]) -> list["Command"]:
    """Return a job's before_script and script as one command, as the runner runs them."""
    document = load_yaml(path)
    job = gitlab_jobs(path)[job_name]
    variables = {**(document.get("variables") or {}), **(job.get("variables") or {})}
    expanded = dict(env)
    for name, value in variables.items():
        expanded[name] = expand_variables(value, expanded)
    lines = list(job.get("before_script") or []) + list(job["script"])
    return [Command(f"{path.name}: {job_name}: {line}", line, GITLAB_SHELL, expanded)
            for line in lines]


# --- Jenkins --------------------------------------------------------------------------------


@dataclasses.dataclass
class JenkinsStage:
    name: str
    sh: list[str]
    credentials: list[str]  # variables bound by withCredentials
    branch: Optional[str]  # `when { branch '...' }`


@dataclasses.dataclass
class JenkinsPipeline:
    stages: list[JenkinsStage]
    environment: dict[str, str]
    junit: list[str]  # testResults patterns
    archive: list[str]  # archiveArtifacts patterns


SH_STEP = re.compile(r"\bsh\s+(?:'''(.*?)'''|'((?:[^'\\\n]|\\[\s\S])*)'|\"(.*?)\")", re.S)
SH_KEYWORD = re.compile(r"\bsh\s+['\"]")
STAGE = re.compile(r"\bstage\s*\(\s*'([^']+)'\s*\)")
CREDENTIAL_VARIABLE = re.compile(r"\b(?:variable|usernameVariable|passwordVariable)\s*:\s*'(\w+)'")
WHEN_BRANCH = re.compile(r"\bwhen\s*\{\s*branch\s+'([^']+)'\s*\}")
ENVIRONMENT_BLOCK = re.compile(r"\benvironment\s*\{(.*?)\}", re.S)
ASSIGNMENT = re.compile(r"^\s*(\w+)\s*=\s*'([^']*)'\s*$", re.M)
JUNIT_STEP = re.compile(r"\bjunit\s+testResults\s*:\s*'([^']+)'")
ARCHIVE_STEP = re.compile(r"\barchiveArtifacts\s+artifacts\s*:\s*'([^']+)'")


def _without_comments(text: str) -> str:
    # Line comments outside strings only; the recipes put no '//' inside a string.
    return re.sub(r"^\s*//.*$", "", text, flags=re.M)


def _sh_script(match: re.Match) -> str:
    triple, single, double = match.groups()
    if double is not None:
        raise RecipeError("a double-quoted sh string is a Groovy GString: Groovy, not the "
                          f"shell, would expand its variables: sh \"{double}\"")
    script = triple if triple is not None else single
    if "\\" in script:
        raise RecipeError(f"backslashes in sh strings are Groovy escapes, which this parser "
                          f"does not read: {script!r}")
    return script


def check_balanced(text: str) -> None:
    """Fail when braces, brackets or parentheses outside strings do not pair up."""
    code = re.sub(r"'''.*?'''|'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"", "''",
                  _without_comments(text), flags=re.S)
    pairs, stack = {")": "(", "]": "[", "}": "{"}, []
    for line_number, line in enumerate(code.splitlines(), start=1):
        for char in line:
            if char in "([{":
                stack.append((char, line_number))
            elif char in pairs:
                if not stack or stack[-1][0] != pairs[char]:
                    raise RecipeError(f"Jenkinsfile line {line_number}: unmatched {char!r}")
                stack.pop()
    if stack:
        raise RecipeError(f"Jenkinsfile line {stack[-1][1]}: {stack[-1][0]!r} is never closed")


def jenkins_pipeline(path: Path) -> JenkinsPipeline:
    """Parse the declarative pipeline's structure from the Jenkinsfile text."""
    text = _without_comments(path.read_text(encoding="utf-8"))
    check_balanced(text)
    if not re.match(r"\s*pipeline\s*\{", text):
        raise RecipeError("a declarative Jenkinsfile starts with `pipeline {`")

    # Each stage's text runs to the next stage, the last one's to the `post` section.
    stage_matches = list(STAGE.finditer(text))
    post = text.find("post {")
    stages = []
    for index, match in enumerate(stage_matches):
        end = stage_matches[index + 1].start() if index + 1 < len(stage_matches) else post
        body = text[match.end():end]
        branch = WHEN_BRANCH.search(body)
        steps = list(SH_STEP.finditer(body))
        if len(steps) != len(SH_KEYWORD.findall(body)):
            raise RecipeError(f"stage {match.group(1)!r}: an sh step is not a plain string")
        stages.append(JenkinsStage(
            name=match.group(1),
            sh=[_sh_script(step) for step in steps],
            credentials=CREDENTIAL_VARIABLE.findall(body),
            branch=branch.group(1) if branch else None,
        ))

    environment_block = ENVIRONMENT_BLOCK.search(text[:stage_matches[0].start()])
    environment = dict(ASSIGNMENT.findall(environment_block.group(1))) if environment_block else {}
    tail = text[post:]
    return JenkinsPipeline(
        stages=stages,
        environment=environment,
        junit=[item.strip() for found in JUNIT_STEP.findall(tail) for item in found.split(",")],
        archive=[item.strip() for found in ARCHIVE_STEP.findall(tail)
                 for item in found.split(",")],
    )


def jenkins_commands(path: Path, stage_names: list[str], env: dict[str, str]) -> list["Command"]:
    """Return the sh steps of the named stages, in pipeline order."""
    pipeline = jenkins_pipeline(path)
    commands = []
    for stage in pipeline.stages:
        if stage.name in stage_names:
            commands += [Command(f"Jenkinsfile: {stage.name}", script, JENKINS_SHELL, env)
                         for script in stage.sh]
    return commands


# --- running --------------------------------------------------------------------------------


@dataclasses.dataclass
class Command:
    """One shell command of a recipe: where it comes from, its script, shell and environment."""

    origin: str
    script: str
    shell: tuple[str, ...]
    env: dict[str, str]


def checkout(folder: Path) -> Path:
    """Lay out `folder` as the user's repository: the files the recipes expect at its root."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in CHECKOUT_FILES:
        shutil.copy2(EXAMPLES / name, folder / name)
    return folder


def base_environment(home: Path, tools: dict[str, Path]) -> dict[str, str]:
    """Return a clean environment: PATH with this virtualenv and the tools, a private HOME.

    Nothing of the caller's kube or AWS settings leaks in; each test adds its own.
    """
    path = [str(VENV_BIN)] + [str(tool.parent) for tool in tools.values()]
    path += ["/usr/local/bin", "/usr/bin", "/bin"]
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.pathsep.join(path),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONUNBUFFERED": "1",
    }


def _install(script: str, folder: Path, tools: dict[str, Path]) -> None:
    """Replace an install line by what INSTALL_COMMANDS lists for it."""
    if INSTALL_COMMANDS[script] == JENKINS_VENV:
        bin_dir = folder / ".venv" / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        targets = {"python": VENV_BIN / "python", "modelconv": VENV_BIN / "modelconv",
                   "aws": tools["aws"]}
        for name, target in targets.items():
            wrapper = bin_dir / name
            wrapper.write_text(f'#!/bin/sh\nexec "{target}" "$@"\n')
            wrapper.chmod(0o755)


def run_commands(commands: list[Command], folder: Path, log: Path,
                 tools: dict[str, Path]) -> list[str]:
    """Run the commands in `folder` in order; fail with the output's end when one fails.

    Return the install lines that were mapped instead of run. The whole output goes to `log`.
    """
    mapped = []
    for command in commands:
        script = command.script.strip()
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"\n### {command.origin}\n$ {script}\n")
        if script in INSTALL_COMMANDS:
            _install(script, folder, tools)
            mapped.append(script)
            continue
        if re.search(r"\bpip install\b|-m venv\b", script):
            raise RecipeError(f"{command.origin}: install line not in INSTALL_COMMANDS: "
                              f"{script!r}")
        with open(log, "a", encoding="utf-8") as out:
            completed = subprocess.run([*command.shell, script], cwd=folder, env=command.env,
                                       stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT)
        if completed.returncode != 0:
            tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
            raise AssertionError(f"{command.origin} exited with {completed.returncode}:\n"
                                 f"$ {script}\n{tail}")
    return mapped


def modelconv_invocations(script: str) -> list[list[str]]:
    """Return the argument lists of the `modelconv` commands in a shell script."""
    joined = script.replace("\\\n", " ")
    invocations = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        for index, word in enumerate(words):
            if Path(word).name == "modelconv":
                invocations.append(words[index + 1:])
                break
    return invocations
