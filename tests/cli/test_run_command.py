"""`modelconv run` and `modelconv schema` as a user calls them: exit codes, output, files."""

from __future__ import annotations

import json
import re
import tomllib
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from cli_runs import run_cli, tiny_document, write_document

STAGES = ["export", "convert", "validate", "publish"]
RELEASE_FILES = {"model.mlpackage.zip", "model.onnx", "report.json", "report.html", "manifest.json"}


@pytest.fixture(scope="module")
def json_run(tmp_path_factory):
    """One successful run of the tiny model with --output json and --junit."""
    folder = tmp_path_factory.mktemp("json-run")
    spec = write_document(folder / "tiny.yaml", tiny_document())
    store = folder / "releases"
    junit = folder / "results.xml"
    process = run_cli("run", spec, "--store", store, "--output", "json", "--junit", junit)
    return process, store, junit


def _document(process) -> dict:
    return json.loads(process.stdout)


def test_json_run_exits_0(json_run):
    process, _, _ = json_run
    assert process.returncode == 0, process.stderr[-3000:]


def test_json_output_is_one_document(json_run):
    process, _, _ = json_run
    document = _document(process)  # raises when stdout contains anything else
    assert document["outcome"] == "succeeded"
    assert document["reason"] == ""
    assert document["exit_code"] == 0


def test_json_output_lists_every_stage(json_run):
    document = _document(json_run[0])
    assert [stage["stage"] for stage in document["stages"]] == STAGES
    assert all(stage["succeeded"] for stage in document["stages"])
    assert all(stage["duration_seconds"] > 0 for stage in document["stages"])


def test_json_output_measures_artifacts(json_run):
    stages = {stage["stage"]: stage for stage in _document(json_run[0])["stages"]}
    assert stages["export"]["artifacts"]["onnx"]["file"] == "model.onnx"
    assert stages["export"]["artifacts"]["onnx"]["size"] > 0
    assert stages["convert"]["artifacts"]["mlpackage"]["size"] > 0


def test_json_output_carries_validation_metrics(json_run):
    stages = {stage["stage"]: stage for stage in _document(json_run[0])["stages"]}
    figures = stages["validate"]["metrics"]["onnxruntime"][0]
    assert figures["name"] == "y"
    assert 0 <= figures["max_abs_error"] < 1e-3
    assert figures["cosine"] > 0.999


def test_json_output_names_the_release(json_run):
    process, store, _ = json_run
    release = _document(process)["release"]
    assert release["location"] == (store / "tiny-linear" / "1.0.0").resolve().as_uri()
    assert release["report"].endswith("/report.html")


def test_progress_goes_to_stderr_in_json_mode(json_run):
    process = json_run[0]
    assert "export: started" in process.stderr
    assert "publish: done" in process.stderr


def test_release_holds_every_file(json_run):
    store = json_run[1]
    folder = store / "tiny-linear" / "1.0.0"
    assert {path.name for path in folder.iterdir()} == RELEASE_FILES


def test_manifest_records_spec_digest_and_signature(json_run):
    store = json_run[1]
    folder = store / "tiny-linear" / "1.0.0"
    manifest = json.loads((folder / "manifest.json").read_text())
    report = json.loads((folder / "report.json").read_text())
    assert manifest["specSha256"] == report["spec_sha256"]
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["specSha256"])
    assert manifest["inputs"] == [{"name": "x", "shape": [2, 8], "dtype": "float32"}]
    assert manifest["outputs"][0]["name"] == "y"
    assert manifest["source"] == {"kind": "factory", "sha256": None,
                                  "entrypoint": "torch.nn:Linear", "seed": 1}
    assert {"torch", "coremltools", "onnx"} <= set(manifest["tools"])


def test_manifest_follows_its_schema(json_run):
    import jsonschema

    store = json_run[1]
    manifest = json.loads((store / "tiny-linear" / "1.0.0" / "manifest.json").read_text())
    schema_path = Path(__file__).resolve().parents[2] / "docs" / "manifest.schema.json"
    jsonschema.validate(manifest, json.loads(schema_path.read_text()))


def test_manifest_carries_validation_figures(json_run):
    store = json_run[1]
    manifest = json.loads((store / "tiny-linear" / "1.0.0" / "manifest.json").read_text())
    runtimes = {row["runtime"] for row in manifest["validation"]["outputs"]}
    assert runtimes == {"onnxruntime", "coreml"}
    assert all(row["passed"] for row in manifest["validation"]["outputs"])


def test_report_json_has_the_figures_of_the_run(json_run):
    process, store, _ = json_run
    report = json.loads((store / "tiny-linear" / "1.0.0" / "report.json").read_text())
    stages = {stage["stage"]: stage for stage in _document(process)["stages"]}
    onnx_row = next(row for row in report["validation"]["outputs"] if row["runtime"] == "onnxruntime")
    expected = stages["validate"]["metrics"]["onnxruntime"][0]["max_abs_error"]
    assert onnx_row["max_abs_error"] == expected
    assert report["succeeded"] is True
    assert [stage["stage"] for stage in report["stages"]] == ["export", "convert", "validate"]
    assert report["conversion_attempts"][0]["succeeded"] is True


def test_report_html_is_self_contained(json_run):
    store = json_run[1]
    page = (store / "tiny-linear" / "1.0.0" / "report.html").read_text()
    without_svg_namespace = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<style>" in page
    assert "<svg" in page
    assert "http://" not in without_svg_namespace
    assert "https://" not in without_svg_namespace
    assert "<script" not in page
    assert "<link" not in page


def test_report_html_shows_figures_timings_and_tools(json_run):
    store = json_run[1]
    page = (store / "tiny-linear" / "1.0.0" / "report.html").read_text()
    report = json.loads((store / "tiny-linear" / "1.0.0" / "report.json").read_text())
    assert "Converted and validated" in page
    assert report["validation"]["source"] in page
    assert f"{report['stages'][0]['duration_seconds']:.1f} s" in page
    assert report["tools"]["coremltools"] in page
    assert "Conversion ladder" in page


def test_junit_has_a_case_per_stage_and_check(json_run):
    junit = json_run[2]
    root = ElementTree.parse(junit).getroot()
    cases = root.findall("./testsuite/testcase")
    stage_cases = [case.get("name") for case in cases if case.get("classname") == "modelconv.stage"]
    check_cases = [case for case in cases if case.get("classname").startswith("modelconv.validate.")]
    assert stage_cases == STAGES
    # Two runtimes, one output, five checks each.
    assert len(check_cases) == 10
    assert {case.get("name") for case in check_cases} == {"shape", "finite", "tolerance", "cosine", "psnr"}
    assert root.get("tests") == str(len(cases))
    assert root.get("failures") == "0"


def test_junit_skips_psnr_without_a_limit(json_run):
    root = ElementTree.parse(json_run[2]).getroot()
    psnr = [case for case in root.iter("testcase") if case.get("name") == "psnr"]
    assert psnr
    assert all(case.find("skipped") is not None for case in psnr)


def test_text_output_prints_summary_and_release(conversion_file, tmp_path):
    spec = conversion_file()
    process = run_cli("run", spec, "--store", tmp_path / "releases")
    assert process.returncode == 0, process.stderr[-3000:]
    lines = process.stdout.splitlines()
    header = next(line for line in lines if line.startswith("runtime"))
    assert header.split() == ["runtime", "output", "max", "abs", "err", "cosine", "PSNR", "dB", "result"]
    assert any(line.startswith("coreml") and line.endswith("pass") for line in lines)
    assert any(line.startswith("Published file://") for line in lines)


def test_rerun_of_a_published_version_fails_fast(conversion_file, tmp_path, json_run):
    _, store, _ = json_run
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    process = run_cli("run", conversion_file(), "--store", store, "--output", "json",
                      env={"TMPDIR": str(temporary)})
    document = json.loads(process.stdout)
    assert process.returncode == 1
    assert document["reason"] == "VersionExists"
    assert [stage["stage"] for stage in document["stages"]] == ["publish"]
    assert "publish.version" in document["message"]
    # Refused before any stage: no temporary work directory is left behind.
    assert document["workdir"] is None
    assert list(temporary.iterdir()) == []


def test_workdir_with_other_files_is_refused(conversion_file, tmp_path):
    workdir = tmp_path / "mine"
    workdir.mkdir()
    (workdir / "report.json").write_text("my own notes")
    process = run_cli("run", conversion_file(), "--store", tmp_path / "releases",
                      "--workdir", workdir)
    assert process.returncode == 2
    assert "already holds files and is not a modelconv work directory" in process.stderr
    assert (workdir / "report.json").read_text() == "my own notes"
    assert not (tmp_path / "releases").exists()


@pytest.mark.parametrize("option", ["--store", "--workdir"])
def test_path_under_a_file_is_an_invalid_argument(conversion_file, tmp_path, option):
    (tmp_path / "notes.txt").write_text("a file")
    other = "--workdir" if option == "--store" else "--store"
    process = run_cli("run", conversion_file(), option, tmp_path / "notes.txt" / "sub",
                      other, tmp_path / "other")
    assert process.returncode == 2
    assert "InvalidArgument" in process.stderr
    assert "notes.txt is a file, so no folder can be made under it" in process.stderr


@pytest.mark.parametrize("layout", ["same", "workdir inside", "store inside"])
def test_workdir_overlapping_store_is_refused(conversion_file, tmp_path, layout):
    store, workdir = {
        "same": (tmp_path / "shared", tmp_path / "shared"),
        "workdir inside": (tmp_path / "releases", tmp_path / "releases" / "work"),
        "store inside": (tmp_path / "work" / "releases", tmp_path / "work"),
    }[layout]
    process = run_cli("run", conversion_file(), "--store", store, "--workdir", workdir)
    assert process.returncode == 2
    assert "overlap: a run deletes and rewrites folders" in process.stderr
    assert not store.exists()
    assert not workdir.exists()


def test_invalid_spec_prints_one_line_with_the_field(conversion_file, tmp_path):
    spec = conversion_file(inputs=[{"name": "x", "shape": [2, "9..3"]}])
    process = run_cli("run", spec, "--store", tmp_path / "releases")
    assert process.returncode == 2
    assert process.stdout == ""
    assert process.stderr.count("\n") == 1
    assert process.stderr.startswith("modelconv: InvalidSpec: spec.inputs[0].shape:")
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "releases").exists()


def test_unknown_field_is_named(conversion_file, tmp_path):
    spec = conversion_file(validaton={"atol": 0.1})
    process = run_cli("run", spec, "--store", tmp_path / "releases")
    assert process.returncode == 2
    assert "spec.validaton: unknown field" in process.stderr


def test_duplicate_key_exits_2(conversion_file, tmp_path):
    spec = conversion_file()
    text = spec.read_text(encoding="utf-8")
    spec.write_text(text.replace("  publish:\n", "  publish:\n    model: other\n"))
    process = run_cli("run", spec, "--store", tmp_path / "releases")
    assert process.returncode == 2
    assert "duplicate key 'model'" in process.stderr
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "releases").exists()


def test_invalid_spec_in_json_mode_is_still_json(conversion_file, tmp_path):
    spec = conversion_file(outputs=[])
    process = run_cli("run", spec, "--output", "json", "--store", tmp_path / "releases")
    document = json.loads(process.stdout)
    assert process.returncode == 2
    assert document["reason"] == "InvalidSpec"
    assert document["message"].startswith("spec.outputs:")
    assert document["stages"] == []


def test_missing_file_is_bad_input(tmp_path):
    process = run_cli("run", tmp_path / "absent.yaml")
    assert process.returncode == 2
    assert "file not found" in process.stderr
    assert "Traceback" not in process.stderr


def test_missing_source_exits_2_and_keeps_the_report(conversion_file, tmp_path):
    missing = tmp_path / "absent.pt"
    spec = conversion_file(source={"torchscript": {"uri": str(missing)}})
    workdir = tmp_path / "work"
    process = run_cli("run", spec, "--store", tmp_path / "releases", "--workdir", workdir,
                      "--output", "json")
    document = json.loads(process.stdout)
    assert process.returncode == 2
    assert document["reason"] == "SourceNotFound"
    assert str(missing) in document["message"]
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "releases" / "tiny-linear").exists()
    # The store check created the store folder; the failed run removes it again.
    assert not (tmp_path / "releases").exists()
    report = json.loads((workdir / "report.json").read_text())
    assert report["reason"] == "SourceNotFound"
    assert "Failed: SourceNotFound" in (workdir / "report.html").read_text()


def test_device_check_is_reported_as_skipped(conversion_file, tmp_path):
    missing = tmp_path / "absent.pt"
    spec = conversion_file(
        source={"torchscript": {"uri": str(missing)}},
        validation={"device": {"enabled": True}},
    )
    process = run_cli("run", spec, "--store", tmp_path / "releases", "--output", "json")
    assert json.loads(process.stdout)["skipped"] == {"device": "skipped (cluster only)"}
    assert "device: skipped (cluster only)" in process.stderr


def test_schema_prints_the_json_schema():
    process = run_cli("schema")
    schema = json.loads(process.stdout)
    assert process.returncode == 0
    assert schema["properties"]["apiVersion"]["const"] == "modelconv.io/v1alpha1"
    assert "ConversionSpec" in schema["$defs"]


@pytest.mark.s3
def test_run_publishes_to_s3(conversion_file, s3_server, s3_bucket, tmp_path):
    spec = conversion_file()
    env = s3_server.client_env()
    process = run_cli("run", spec, "--store", f"s3://{s3_bucket}/models", "--output", "json", env=env)
    assert process.returncode == 0, process.stderr[-3000:]
    keys = {
        item["Key"]
        for item in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]
    }
    assert {f"models/tiny-linear/1.0.0/{name}" for name in RELEASE_FILES} <= keys
    assert json.loads(process.stdout)["release"]["location"] == f"s3://{s3_bucket}/models/tiny-linear/1.0.0"
    assert env["AWS_SECRET_ACCESS_KEY"] not in process.stdout + process.stderr


def test_junit_write_failure_prints_one_line(capsys, monkeypatch):
    from types import SimpleNamespace

    import modelconv.pipeline.junit as junit
    from modelconv.cli.run_commands import _write_junit

    # The document needs a whole run outcome; this case is about the write alone.
    empty = ElementTree.ElementTree(ElementTree.Element("testsuites"))
    monkeypatch.setattr(junit, "junit_document", lambda _: empty)

    _write_junit(SimpleNamespace(succeeded=True), Path("/proc/modelconv-junit.xml"))

    error = capsys.readouterr().err
    assert "the release was published, but the JUnit file /proc/modelconv-junit.xml" in error
    assert "Traceback" not in error


def test_run_help_lists_every_exit_code():
    result = run_cli("run", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for code in ("0 published", "1 conversion or validation failed", "2 invalid input",
                 "130 interrupted (Ctrl-C)", "143 stopped by SIGTERM"):
        assert code in text


def test_version_prints_package_version():
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"modelconv {pyproject['project']['version']}\n"


def test_failed_run_keeps_an_existing_store_folder(conversion_file, tmp_path):
    store = tmp_path / "releases"
    store.mkdir()
    spec = conversion_file(source={"torchscript": {"uri": str(tmp_path / "absent.pt")}})
    process = run_cli("run", spec, "--store", store)
    assert process.returncode == 2
    assert store.is_dir()
