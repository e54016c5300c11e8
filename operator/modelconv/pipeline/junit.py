"""JUnit XML of a run, for CI systems that display test results (`modelconv run --junit`).

One test suite per run. Each stage is a test case (class `modelconv.stage`, name: the stage).
So is each validation check of each output in each runtime (class
`modelconv.validate.<runtime>.<output>`, name: the check). A failed check carries the figures
and the limit in its message; an internal error is an `<error>`, not a `<failure>`. Stages that never ran
because an earlier one failed, and stages skipped because they need a cluster, are
skipped cases.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Optional

from .report import CHECKS, validation_rows
from .run import INTERNAL_ERROR, RunOutcome, displayed_stages
from .stage import STAGES

SUITE_NAME = "modelconv"


def _check_message(check: str, row: dict, tolerances) -> str:
    figures = (
        f"max abs error {row.get('max_abs_error')}, max rel error {row.get('max_rel_error')},"
        f" cosine {row.get('cosine')}, PSNR {row.get('psnr_db')} dB"
    )
    limits = {
        "tolerance": f"atol {tolerances.atol} + rtol {tolerances.rtol} * |expected|",
        "cosine": f"minCosine {tolerances.min_cosine}",
        "psnr": f"minPsnr {tolerances.min_psnr} dB",
        "finite": "no NaN or stray infinity",
        "shape": f"reference shape {row.get('expected_shape')}, got {row.get('shape')}",
    }[check]
    return f"{figures}; limit: {limits}"


def _case(suite, classname: str, name: str, seconds: float = 0.0):
    case = ElementTree.SubElement(suite, "testcase", classname=classname, name=name,
                                  time=f"{seconds:.3f}")
    return case


def junit_document(outcome: RunOutcome) -> ElementTree.ElementTree:
    """Return the JUnit XML tree of a run."""
    spec = outcome.conversion.spec
    suite = ElementTree.Element("testsuite", name=f"{SUITE_NAME}.{spec.publish.model}")
    ran = {result.stage: result for result in outcome.results}
    # Cluster runs report train and device too; local runs only the stages they ran.
    reported = set(displayed_stages(outcome.skipped)) | set(ran)
    for stage in [name for name in STAGES if name in reported]:
        result = ran.get(stage)
        case = _case(suite, f"{SUITE_NAME}.stage", stage,
                     result.duration_seconds if result else 0.0)
        if stage in outcome.skipped:
            ElementTree.SubElement(case, "skipped", message=outcome.skipped[stage])
        elif result is None:
            ElementTree.SubElement(case, "skipped", message="not run: an earlier stage failed")
        elif not result.succeeded:
            kind = "error" if result.reason == INTERNAL_ERROR else "failure"
            element = ElementTree.SubElement(
                case, kind, message=f"{result.reason}: {result.message}", type=result.reason
            )
            element.text = result.message

    for row in validation_rows(ran.get("validate"), spec):
        for check in CHECKS:
            state: Optional[bool] = row["checks"].get(check)
            case = _case(suite, f"{SUITE_NAME}.validate.{row['runtime']}.{row['output']}", check)
            if state is None:
                why = row.get("not_run") or "check not configured"
                ElementTree.SubElement(case, "skipped", message=why)
            elif state is False:
                message = _check_message(check, row, spec.validation)
                failure = ElementTree.SubElement(case, "failure", message=message, type=check)
                failure.text = "\n".join(row.get("violations", [])) or message

    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for case in cases if case.find("failure") is not None)))
    suite.set("errors", str(sum(1 for case in cases if case.find("error") is not None)))
    suite.set("skipped", str(sum(1 for case in cases if case.find("skipped") is not None)))
    suite.set("time", f"{sum(result.duration_seconds for result in outcome.results):.3f}")
    suites = ElementTree.Element("testsuites")
    suites.append(suite)
    for name in ("tests", "failures", "errors", "skipped", "time"):
        suites.set(name, suite.get(name))
    return ElementTree.ElementTree(suites)


def write_junit(outcome: RunOutcome, path: Path) -> None:
    """Write the run's JUnit XML to `path`."""
    tree = junit_document(outcome)
    ElementTree.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)
