"""Reports of a run (report.json, report.html, JUnit XML, terminal summary) from given results."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from modelconv.pipeline.junit import junit_document
from modelconv.pipeline.report import build_report, spec_digest, validation_rows, write_report
from modelconv.pipeline.report_html import histogram_svg, render_html
from modelconv.pipeline.run import RunOutcome
from modelconv.pipeline.stage import StageResult
from modelconv.progress import PlainProgress, plain_summary
from modelconv.spec import parse_conversion

DOCUMENT = {
    "apiVersion": "modelconv.io/v1alpha1",
    "kind": "ModelConversion",
    "metadata": {"name": "two-outputs"},
    "spec": {
        "source": {"onnx": {"uri": "model.onnx"}},
        "inputs": [{"name": "x", "shape": [1, "1..64"]}],
        "outputs": [{"name": "logits"}, {"name": "hidden"}],
        "validation": {"atol": 0.001, "rtol": 0.01, "minCosine": 0.999, "minPsnr": 40},
        "publish": {"model": "two-outputs", "version": "1.0.0"},
    },
}
COUNTS = [0, 10, 20, 30, 4, 1, 0, 0, 0]
EDGES = [0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]


def figures(name: str, **changes) -> dict:
    entry = {
        "name": name, "shape": [1, 8], "expected_shape": [1, 8], "max_abs_error": 0.0004,
        "max_rel_error": 0.002, "cosine": 0.99999, "psnr_db": 71.5,
        "histogram": {"edges": EDGES, "counts": COUNTS}, "passed": True, "violations": [],
    }
    entry.update(changes)
    return entry


FAILED_LOGITS = figures(
    "logits",
    max_abs_error=0.5,
    cosine=0.98,
    passed=False,
    violations=[
        "sample 0: 7 of 8 elements exceed atol + rtol * |expected| (worst: |error| 0.5 > limit 0.011)",
        "sample 0: cosine 0.980000 < minCosine 0.999",
    ],
)


def spec():
    return parse_conversion(DOCUMENT).spec


def results(validate_passed: bool = True) -> list[StageResult]:
    logits = figures("logits") if validate_passed else FAILED_LOGITS
    validate_metrics = {
        "samples": 3,
        "onnxruntime": [figures("logits"), figures("hidden")],
        "coreml": [logits, figures("hidden", max_abs_error=0.0009)],
        "coreml_source": "Core ML program executed by the reference executor (fp16 emulated)",
    }
    return [
        StageResult("export", True, started=100.0, finished=104.5),
        StageResult("convert", True, started=104.5, finished=110.0, metrics={"attempts": [
            {"path": "torch.export", "succeeded": False, "error": "Unsupported fx node new_ones",
             "operator": "new_ones"},
            {"path": "torch.export+decompositions", "succeeded": True, "error": ""},
        ]}),
        StageResult("validate", validate_passed, started=110.0, finished=112.0,
                    reason="" if validate_passed else "ToleranceExceeded",
                    message="" if validate_passed else "Core ML: output 'logits' exceeds atol",
                    metrics=validate_metrics),
    ]


def outcome(validate_passed: bool = True) -> RunOutcome:
    return RunOutcome(conversion=parse_conversion(DOCUMENT), store="/tmp/store",
                      workdir=Path("/tmp/work"), results=results(validate_passed))


def test_validation_rows_cover_each_runtime_and_output():
    rows = validation_rows(results()[2], spec())
    assert [(row["runtime"], row["output"]) for row in rows] == [
        ("onnxruntime", "logits"), ("onnxruntime", "hidden"),
        ("coreml", "logits"), ("coreml", "hidden"),
    ]


def test_violations_are_classified_by_check():
    rows = validation_rows(results(validate_passed=False)[2], spec())
    checks = rows[2]["checks"]
    assert checks == {"shape": True, "finite": True, "tolerance": False, "cosine": False,
                      "psnr": True}


def test_psnr_check_is_not_applicable_without_a_limit():
    document = json.loads(json.dumps(DOCUMENT))
    del document["spec"]["validation"]["minPsnr"]
    rows = validation_rows(results()[2], parse_conversion(document).spec)
    assert all(row["checks"]["psnr"] is None for row in rows)


def test_coreml_rows_carry_no_figures_when_not_executed():
    validate = results()[2]
    validate.metrics["coreml_source"] = "Core ML package not executed: the reference executor"
    rows = [row for row in validation_rows(validate, spec()) if row["runtime"] == "coreml"]
    assert all(row["max_abs_error"] is None for row in rows)
    assert all(row["checks"]["tolerance"] is None for row in rows)
    assert all(row["checks"]["shape"] is True for row in rows)


def test_junit_failure_carries_figures_and_limit():
    root = junit_document(outcome(validate_passed=False)).getroot()
    failures = {
        (case.get("classname"), case.get("name")): case.find("failure")
        for case in root.iter("testcase") if case.find("failure") is not None
    }
    assert set(failures) == {
        ("modelconv.stage", "validate"),
        ("modelconv.validate.coreml.logits", "tolerance"),
        ("modelconv.validate.coreml.logits", "cosine"),
    }
    tolerance = failures[("modelconv.validate.coreml.logits", "tolerance")].get("message")
    assert "max abs error 0.5" in tolerance
    assert "atol 0.001 + rtol 0.01" in tolerance
    assert "minCosine 0.999" in failures[("modelconv.validate.coreml.logits", "cosine")].get("message")


def test_junit_counts_match_the_cases():
    root = junit_document(outcome(validate_passed=False)).getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    # 4 stages + 2 runtimes x 2 outputs x 5 checks.
    assert len(cases) == 24
    assert suite.get("tests") == "24"
    assert suite.get("failures") == "3"
    # publish never ran because validate failed.
    publish = next(case for case in cases if case.get("name") == "publish")
    assert publish.find("skipped").get("message") == "not run: an earlier stage failed"


def test_junit_is_well_formed_xml(tmp_path):
    from modelconv.pipeline.junit import write_junit

    path = tmp_path / "junit.xml"
    write_junit(outcome(), path)
    assert ElementTree.parse(path).getroot().tag == "testsuites"


def test_report_json_holds_figures_attempts_and_tools(tmp_path):
    report = build_report(spec(), results(validate_passed=False), {}, name="two-outputs")
    json_path, _ = write_report(report, tmp_path)
    stored = json.loads(json_path.read_text())
    assert stored["succeeded"] is False
    assert stored["reason"] == "ToleranceExceeded"
    assert stored["validation"]["outputs"][2]["max_abs_error"] == 0.5
    assert stored["conversion_attempts"][0]["operator"] == "new_ones"
    assert stored["tools"]["coremltools"]
    assert stored["created"] == "1970-01-01T00:01:52Z"


def test_report_html_shows_histograms_timings_and_ladder():
    page = render_html(build_report(spec(), results(), {}, name="two-outputs"))
    assert page.count("<svg") == 4
    assert "4.5 s" in page
    assert "Unsupported fx node new_ones" in page
    assert "fp16 emulated" in page
    assert "0.0004" in page


def test_report_html_names_the_core_ml_executor():
    page = render_html(build_report(spec(), results(), {}, name="two-outputs"))
    text = re.sub(r"<[^>]+>", "", page)

    source = "Core ML program executed by the reference executor (fp16 emulated)"
    assert f"Core ML figures: {source}" in text
    assert "<td>Core ML program, reference executor (fp16 emulated)</td>" in page
    assert "<td>ONNX Runtime</td>" in page
    # A bare "coreml" runtime label reads as if Apple's Core ML runtime had run.
    assert "<td>coreml</td>" not in page
    assert "coreml ·" not in text


def test_report_html_of_an_fp32_program_says_fp32():
    stages = results()
    stages[2].metrics["coreml_source"] = "Core ML program executed by the reference executor (fp32)"
    page = render_html(build_report(spec(), stages, {}, name="two-outputs"))

    assert "<td>Core ML program, reference executor (fp32)</td>" in page
    assert "fp16 emulated" not in page


def test_report_html_escapes_messages():
    bad = results(validate_passed=False)
    bad[2].message = "<script>alert(1)</script>"
    page = render_html(build_report(spec(), bad, {}, name="x"))
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_histogram_has_one_bar_per_bin():
    svg = histogram_svg(EDGES, COUNTS)
    assert svg.count("<rect") == len(COUNTS)
    assert ">30<" in svg


def test_spec_digest_ignores_the_store_only():
    document = json.loads(json.dumps(DOCUMENT))
    base = spec_digest(parse_conversion(document).spec)
    document["spec"]["publish"]["store"] = "s3://bucket/elsewhere"
    assert spec_digest(parse_conversion(document).spec) == base
    document["spec"]["validation"]["atol"] = 0.01
    assert spec_digest(parse_conversion(document).spec) != base
    assert re.fullmatch(r"[0-9a-f]{64}", base)


def test_plain_summary_lists_outputs_and_failure():
    text = plain_summary(outcome(validate_passed=False))
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["runtime", "output"]
    assert any(line.startswith("coreml") and "logits" in line and line.endswith("FAIL") for line in lines)
    assert "Failed: ToleranceExceeded: Core ML: output 'logits' exceeds atol" in lines
    assert "Nothing was published." in lines


def test_plain_summary_states_auto_fallback():
    finished = outcome()
    convert = finished.result("convert")
    convert.metrics.update(
        precision="auto: float32 (keeping single ops in float32 did not meet the tolerances)",
        auto_precision="auto fell back to float32 because keeping single ops in float32 did"
                       " not meet the tolerances",
        fp16_op_fraction=0.0,
    )
    lines = plain_summary(finished).splitlines()
    assert ("Precision: float32 (auto fell back to float32 because keeping single ops in"
            " float32 did not meet the tolerances)") in lines


def test_plain_summary_states_float16_share():
    finished = outcome()
    finished.result("convert").metrics.update(precision="float16", fp16_op_fraction=0.99)
    lines = plain_summary(finished).splitlines()
    assert "Precision: float16 in 99% of ops" in lines


def test_plain_summary_of_failed_run_has_no_precision():
    failed = outcome(validate_passed=False)
    failed.result("convert").metrics.update(precision="float16", fp16_op_fraction=0.99)
    assert "Precision:" not in plain_summary(failed)


def test_plain_progress_writes_one_line_per_event():
    stream = io.StringIO()
    progress = PlainProgress(stream, summary=False)
    progress.run_started(["export", "device"], {"device": "skipped (cluster only)"})
    progress.stage_started("export")
    progress.stage_message("export", "exporting\nto ONNX")
    progress.stage_finished(results()[0])
    assert stream.getvalue().splitlines() == [
        "device: skipped (cluster only)",
        "export: started",
        "export: exporting to ONNX",
        "export: done in 4.5s",
    ]


def test_live_progress_draws_stages_and_summary():
    from rich.console import Console

    from modelconv.progress import LiveProgress

    stream = io.StringIO()
    progress = LiveProgress(Console(file=stream, force_terminal=True, width=120))
    progress.run_started(["export", "convert", "validate", "publish"], {})
    for result in results(validate_passed=False):
        progress.stage_started(result.stage)
        progress.stage_message(result.stage, "working")
        progress.stage_finished(result)
    progress.run_finished(outcome(validate_passed=False))
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())
    assert "publish" in text
    assert "ToleranceExceeded" in text
    assert "Validation against the PyTorch reference" in text
    assert "FAIL" in text
    assert "Nothing was published." in text


def test_junit_marks_internal_error_as_error():
    broken = outcome()
    broken.results[1] = StageResult("convert", False, reason="InternalError",
                                    message="KeyError: 'x'", started=1.0, finished=2.0)
    suite = junit_document(broken).getroot().find("testsuite")
    convert = next(case for case in suite.iter("testcase") if case.get("name") == "convert")
    assert convert.find("error").get("type") == "InternalError"
    assert suite.get("errors") == "1"
