"""The example ModelConversion files in examples/, run as a user runs them, on real weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modelconv import zoo
from modelconv.spec import load_conversion, parse_conversion

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
MODELCONV = str(Path(sys.executable).parent / "modelconv")
CONVERTING_EXAMPLES = ("minilm", "mobilenet-v3-small", "silero-vad")


def run_example(name: str, folder: Path, cwd: Path | None = None) -> tuple[int, dict, str]:
    process = subprocess.run(
        [MODELCONV, "run", str(EXAMPLES / f"{name}.yaml"), "--store", str(folder / "releases"),
         "--output", "json"],
        capture_output=True, text=True, cwd=cwd or folder, timeout=1800,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    return process.returncode, json.loads(process.stdout), process.stderr


def stage(document: dict, name: str) -> dict:
    return next(entry for entry in document["stages"] if entry["stage"] == name)


@pytest.mark.parametrize("name", [*CONVERTING_EXAMPLES, "silero-vad-onnx"])
def test_example_file_is_valid(name):
    conversion = load_conversion(str(EXAMPLES / f"{name}.yaml"))
    assert conversion.spec.publish.version == "0.1.0"


def test_silero_factory_matches_the_packaged_torchscript_model():
    import torch

    packaged = torch.jit.load(str(zoo.package_dir("silero_vad") / "data" / "silero_vad.jit"))
    rebuilt = zoo.silero_vad()
    generator = torch.Generator().manual_seed(3)
    audio = torch.rand(2, 576, generator=generator) * 2 - 1
    state = torch.rand(2, 2, 128, generator=generator) - 0.5
    with torch.no_grad():
        expected = packaged._model(audio, state)
        actual = rebuilt(audio, state)
    assert torch.equal(actual[0], expected[0])
    assert torch.equal(actual[1], expected[1])


def test_mobilenet_factory_gives_float16_sized_logits():
    import torch

    torch.manual_seed(0)
    model = zoo.mobilenet_v3_small(calibration_batches=1)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 224, 224))
    assert logits.shape == (1, 1000)
    # Far above float16's smallest normal value (6e-5), so float16 validation is meaningful.
    assert logits.abs().max() > 1e-3


def readme_conversion() -> dict:
    """Parse the YAML block under the README's "## A ModelConversion" heading."""
    text = (REPO / "README.md").read_text()
    section = text.split("## A ModelConversion", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    return yaml.safe_load(block)


def test_readme_conversion_uses_zoo_factory():
    # torchvision's own factory gives logits near 1e-9, which float16 flushes to zero, so the
    # README must use the factory that the mobilenet-v3-small example converts.
    readme = parse_conversion(readme_conversion())
    example = load_conversion(str(EXAMPLES / "mobilenet-v3-small.yaml"))
    assert readme.spec.source.factory.entrypoint == example.spec.source.factory.entrypoint
    assert readme.spec.coreml.precision == example.spec.coreml.precision
    assert readme.spec.validation.atol == example.spec.validation.atol


def check_published_and_validated(exit_code: int, document: dict, stderr: str) -> None:
    assert exit_code == 0, f"{document['reason']}: {document['message']}\n{stderr[-2000:]}"
    validate = stage(document, "validate")["metrics"]
    assert validate["coreml_source"].startswith("Core ML program executed by the reference executor")
    for runtime in ("onnxruntime", "coreml"):
        for row in validate[runtime]:
            assert row["passed"], f"{runtime} {row['name']}: {row['violations']}"
    release = Path(document["release"]["location"].removeprefix("file://"))
    assert (release / "manifest.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet-v3-small", "silero-vad"])
def test_example_converts_validates_and_publishes(name, tmp_path):
    check_published_and_validated(*run_example(name, tmp_path))


@pytest.mark.slow
def test_minilm_converts_with_decompositions_at_any_length(tmp_path):
    exit_code, document, stderr = run_example("minilm", tmp_path)
    check_published_and_validated(exit_code, document, stderr)
    convert = stage(document, "convert")["metrics"]
    assert convert["path"] == "torch.export+decompositions"
    assert convert["attempts"][0]["succeeded"] is False
    manifest = json.loads((Path(document["release"]["location"].removeprefix("file://"))
                           / "manifest.json").read_text())
    assert manifest["inputs"][0]["shape"] == [1, "1..128"]
    coreml = stage(document, "validate")["metrics"]["coreml"][0]
    assert coreml["cosine"] >= 0.9999


@pytest.mark.slow
def test_silero_onnx_example_names_the_unsupported_operator(tmp_path):
    shutil.copyfile(zoo.silero_vad_onnx_path(), tmp_path / "silero_vad.onnx")
    exit_code, document, stderr = run_example("silero-vad-onnx", tmp_path, cwd=tmp_path)
    assert exit_code == 1
    assert document["reason"] == "UnsupportedOperator"
    assert "cannot convert the operator If (opset 16)" in document["message"]
    assert "Traceback" not in stderr
    assert not (tmp_path / "releases" / "silero-vad-onnx").exists()
