"""report.html: the run report as one self-contained page (inline CSS and SVG, no scripts).

Every value from the report is escaped. The page loads nothing from a network, so it opens
the same from a release bucket, a CI artifact or a mail attachment.
"""

from __future__ import annotations

import html
import math
from typing import Any, Optional

from .report import CHECK_TITLES, CHECKS
from .runtimes import COREML_EXECUTED_FP16, COREML_EXECUTED_FP32

# Runtime column labels of Core ML rows, by validation source. Validation never runs Apple's
# Core ML runtime: the program runs in modelconv's reference executor.
COREML_LABELS = {
    COREML_EXECUTED_FP16: "Core ML program, reference executor (fp16 emulated)",
    COREML_EXECUTED_FP32: "Core ML program, reference executor (fp32)",
}

STYLE = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d2330;
       margin: 0; background: #f5f6f8; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 32px 0 10px; }
.sub { color: #5b6475; margin: 0 0 16px; }
.banner { border-radius: 8px; padding: 14px 18px; margin: 16px 0; background: #fff;
          border-left: 6px solid #2f9e44; }
.banner.failed { border-left-color: #d9480f; }
.banner strong { font-size: 16px; }
table { border-collapse: collapse; width: 100%; background: #fff; border-radius: 8px;
        overflow: hidden; box-shadow: 0 1px 2px rgba(0,0,0,.06); }
th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid #e9ecf1;
         vertical-align: top; }
th { background: #eef1f5; font-weight: 600; font-size: 13px; }
td.num { font-variant-numeric: tabular-nums; text-align: right; white-space: nowrap; }
.pass { color: #2f9e44; font-weight: 600; } .fail { color: #d9480f; font-weight: 600; }
.na { color: #8a93a3; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 12px; }
.card { background: #fff; border-radius: 8px; padding: 12px 14px;
        box-shadow: 0 1px 2px rgba(0,0,0,.06); }
.card h3 { font-size: 14px; margin: 0 0 6px; }
.note { color: #5b6475; font-size: 13px; }
code, pre { font: 12px/1.4 ui-monospace, Menlo, Consolas, monospace; }
pre { background: #fff; padding: 12px; border-radius: 8px; overflow-x: auto; }
.bar { height: 10px; background: #4c6ef5; border-radius: 3px; display: inline-block; }
.msg { color: #5b6475; font-size: 13px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _figure(value: Any, form: str = ".3g") -> str:
    """Format a figure: `.3g` for errors, `.7f` for cosines, `.1f` for PSNR in dB."""
    if value is None:
        return "—"
    if isinstance(value, (int, float)) and math.isfinite(value):
        return format(value, form)
    return _e(value)  # "inf" or "nan", stored as text in report.json


def _check_cell(state: Optional[bool]) -> str:
    if state is None:
        return '<td class="na">n/a</td>'
    return '<td class="pass">pass</td>' if state else '<td class="fail">FAIL</td>'


def render_html(report: dict) -> str:
    """Return report.html for a report built by `build_report`."""
    title = f"{report['model']} {report['version']}"
    sections = [
        _header(report),
        _validation_section(report),
        _histogram_section(report),
        _device_section(report),
        _stages_section(report),
        _attempts_section(report),
        _signature_section(report),
        _tools_section(report),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>modelconv report: {_e(title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{''.join(section for section in sections if section)}</main></body></html>\n"
    )


def publish_outcome(report: dict) -> str:
    """Return the sentence on what a failed run published: nothing, or an unindexed version."""
    for entry in report.get("stages", []):
        metrics = entry.get("metrics") or {}
        if entry.get("stage") == "publish" and metrics.get("published"):
            return f"Published {metrics.get('location')}, but not yet in its index."
    return "Nothing was published."


def _header(report: dict) -> str:
    succeeded = report["succeeded"]
    release = report.get("release") or {}
    if succeeded:
        outcome = "<strong class=\"pass\">Converted and validated</strong>"
        if release.get("location"):
            outcome += f"<div>Release: <code>{_e(release['location'])}</code></div>"
    else:
        outcome = (
            f"<strong class=\"fail\">Failed: {_e(report['reason'])}</strong>"
            f"<div>{_e(report['message'])}</div>"
            f"<div class=\"msg\">{_e(publish_outcome(report))}</div>"
        )
    skipped = "".join(
        f"<div class=\"msg\">{_e(stage)}: {_e(why)}</div>"
        for stage, why in report.get("skipped", {}).items()
    )
    return (
        f"<h1>{_e(report['model'])} <span class=\"sub\">{_e(report['version'])}</span></h1>"
        f"<p class=\"sub\">ModelConversion {_e(report['name'])} · {_e(report['created'])}"
        f" · spec sha256 <code>{_e(report['spec_sha256'][:16])}…</code></p>"
        f"<div class=\"banner{'' if succeeded else ' failed'}\">{outcome}{skipped}</div>"
    )


def _validation_section(report: dict) -> str:
    validation = report["validation"]
    rows = validation["outputs"]
    tolerances = validation["tolerances"]
    limits = (
        f"atol {tolerances.get('atol')}, rtol {tolerances.get('rtol')},"
        f" minCosine {tolerances.get('minCosine')}"
        + (f", minPsnr {tolerances['minPsnr']} dB" if tolerances.get("minPsnr") is not None else "")
    )
    source = ""
    if validation["source"]:
        source = f"<p class=\"note\">Core ML figures: {_e(validation['source'])}.</p>"
    if not rows:
        return f"<h2>Validation</h2><p class=\"note\">No validation figures: the run ended before validation.</p>"
    head = "".join(f"<th>{_e(CHECK_TITLES[name])}</th>" for name in CHECKS)
    body = []
    for row in rows:
        checks = "".join(_check_cell(row["checks"].get(name)) for name in CHECKS)
        violations = "".join(f"<div class=\"msg\">{_e(text)}</div>" for text in row.get("violations", []))
        body.append(
            f"<tr><td>{_e(runtime_label(row['runtime'], validation['source']))}</td>"
            f"<td><code>{_e(row['output'])}</code>{violations}</td>"
            f"<td class=\"num\">{_figure(row.get('max_abs_error'))}</td>"
            f"<td class=\"num\">{_figure(row.get('max_rel_error'))}</td>"
            f"<td class=\"num\">{_figure(row.get('cosine'), '.7f')}</td>"
            f"<td class=\"num\">{_figure(row.get('psnr_db'), '.1f')}</td>{checks}</tr>"
        )
    return (
        "<h2>Validation against the PyTorch reference</h2>"
        f"<p class=\"note\">Pass when every element has |error| ≤ atol + rtol·|expected|; limits: {_e(limits)}.</p>"
        f"{source}<table><tr><th>runtime</th><th>output</th><th>max abs error</th>"
        f"<th>max rel error</th><th>cosine</th><th>PSNR (dB)</th>{head}</tr>{''.join(body)}</table>"
    )


def runtime_label(runtime: str, coreml_source: str) -> str:
    """Return the runtime column text; a Core ML row names what executed the program."""
    if runtime == "onnxruntime":
        return "ONNX Runtime"
    if runtime == "coreml":
        return COREML_LABELS.get(coreml_source, "Core ML package (declared shapes only)")
    return runtime


def _histogram_section(report: dict) -> str:
    source = report["validation"]["source"]
    cards = []
    for row in report["validation"]["outputs"]:
        histogram = row.get("histogram") or {}
        counts = histogram.get("counts") or []
        edges = histogram.get("edges") or []
        if not counts:
            continue
        cards.append(
            f"<div class=\"card\"><h3>{_e(runtime_label(row['runtime'], source))} ·"
            f" <code>{_e(row['output'])}</code></h3>"
            f"{histogram_svg(edges, counts)}</div>"
        )
    if not cards:
        return ""
    return (
        "<h2>Absolute errors</h2><p class=\"note\">Elements per bin of |actual − expected|,"
        " over all validation samples (log scale of counts).</p>"
        f"<div class=\"cards\">{''.join(cards)}</div>"
    )


def _edge_label(value: float) -> str:
    if value == 0:
        return "0"
    exponent = math.log10(value)
    return f"1e{int(round(exponent))}" if abs(exponent - round(exponent)) < 1e-9 else f"{value:g}"


def histogram_svg(edges: list, counts: list, width: int = 320, height: int = 150) -> str:
    """Return an inline SVG bar chart of error counts per bin, bars on a log scale of count."""
    bins = len(counts)
    left, bottom, top = 8, 34, 14
    slot = (width - 2 * left) / max(bins, 1)
    peak = max(math.log10(count + 1) for count in counts) or 1.0
    parts = [
        f"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\""
        f" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"absolute error histogram\">",
        f"<line x1=\"{left}\" y1=\"{height - bottom}\" x2=\"{width - left}\" y2=\"{height - bottom}\""
        " stroke=\"#adb5bd\"/>",
    ]
    for index, count in enumerate(counts):
        bar = (height - bottom - top) * math.log10(count + 1) / peak
        x = left + index * slot + 2
        y = height - bottom - bar
        low = _edge_label(float(edges[index])) if index < len(edges) else ""
        # Blue below 1e-3, orange for 1e-3 to 1, red for errors of 1 or more.
        color = "#4c6ef5"
        if index >= bins - 3:
            color = "#f08c00" if index < bins - 1 else "#d9480f"
        parts.append(
            f"<rect x=\"{x:.1f}\" y=\"{y:.1f}\" width=\"{slot - 4:.1f}\" height=\"{bar:.1f}\""
            f" fill=\"{color}\"><title>≥ {_e(low)}: {count} elements</title></rect>"
        )
        if count:
            parts.append(
                f"<text x=\"{x + (slot - 4) / 2:.1f}\" y=\"{y - 3:.1f}\" font-size=\"9\""
                f" text-anchor=\"middle\" fill=\"#495057\">{count}</text>"
            )
        parts.append(
            f"<text x=\"{x + (slot - 4) / 2:.1f}\" y=\"{height - bottom + 12}\" font-size=\"9\""
            f" text-anchor=\"middle\" fill=\"#495057\">{_e(low)}</text>"
        )
    parts.append(
        f"<text x=\"{width / 2}\" y=\"{height - 6}\" font-size=\"10\" text-anchor=\"middle\""
        " fill=\"#5b6475\">|error| ≥ bin edge</text></svg>"
    )
    return "".join(parts)


def _stages_section(report: dict) -> str:
    stages = report["stages"]
    longest = max((stage["duration_seconds"] for stage in stages), default=0) or 1
    rows = []
    for stage in stages:
        state = '<span class="pass">done</span>' if stage["succeeded"] else (
            f'<span class="fail">{_e(stage["reason"])}</span>'
        )
        sizes = ", ".join(
            f"{_e(artifact['file'])} ({_size(artifact['size'])})"
            for artifact in stage["artifacts"].values()
        )
        message = f"<div class=\"msg\">{_e(stage['message'])}</div>" if stage["message"] else ""
        width = 160 * stage["duration_seconds"] / longest
        rows.append(
            f"<tr><td>{_e(stage['stage'])}</td><td>{state}{message}</td>"
            f"<td class=\"num\">{stage['duration_seconds']:.1f} s</td>"
            f"<td><span class=\"bar\" style=\"width:{width:.0f}px\"></span></td>"
            f"<td>{sizes or '—'}</td></tr>"
        )
    for stage, why in report.get("skipped", {}).items():
        rows.append(f"<tr><td>{_e(stage)}</td><td class=\"na\">{_e(why)}</td><td></td><td></td><td></td></tr>")
    return (
        "<h2>Stages</h2><table><tr><th>stage</th><th>outcome</th><th>time</th><th></th>"
        f"<th>artifacts</th></tr>{''.join(rows)}</table>"
    )


def _device_section(report: dict) -> str:
    """Return the results of the on-device check, when a runner ran it (cluster runs)."""
    device = next((stage["metrics"].get("device") for stage in report.get("stages", [])
                   if stage.get("stage") == "device"), None)
    if not device:
        return ""
    if device.get("verified"):
        verdict = '<span class="pass">verified on a device</span>'
    elif device.get("backend") == "mil-reference":
        verdict = '<span class="na">reference executor only: no device verified</span>'
    else:
        verdict = f'<span class="fail">not verified ({_e(device.get("reason", ""))})</span>'
    rows = []
    for result in device.get("results", []):
        latency = result.get("latencyMs") or {}
        rows.append(
            f"<tr><td>{_e(result.get('computeUnits', '—'))}</td>{_check_cell(result.get('passed'))}"
            f"<td class=\"num\">{_figure(result.get('maxAbsError'))}</td>"
            f"<td class=\"num\">{_figure(result.get('cosine'), '.7f')}</td>"
            f"<td class=\"num\">{_figure(latency.get('p50'), '.2f')}</td>"
            f"<td class=\"num\">{_figure(latency.get('p90'), '.2f')}</td>"
            f"<td class=\"num\">{_figure(result.get('loadMs'), '.0f')}</td></tr>"
        )
    return (
        f"<h2>On-device check</h2><p>{verdict}: backend <code>{_e(device.get('backend'))}</code>"
        f", runner <code>{_e(device.get('runner', '—'))}</code></p>"
        "<table><tr><th>compute units</th><th>result</th><th>max abs error</th>"
        "<th>cosine</th><th>p50 ms</th><th>p90 ms</th><th>load ms</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def _attempts_section(report: dict) -> str:
    attempts = report.get("conversion_attempts") or []
    if not attempts:
        return ""
    rows = []
    timed = any(attempt.get("duration_seconds") is not None for attempt in attempts)
    for attempt in attempts:
        succeeded = attempt.get("succeeded")
        state = '<span class="pass">converted</span>' if succeeded else '<span class="fail">failed</span>'
        why = attempt.get("error") or attempt.get("message") or attempt.get("reason") or ""
        seconds = attempt.get("duration_seconds")
        time_cell = f"<td class=\"num\">{'' if seconds is None else f'{float(seconds):.1f} s'}</td>"
        operator = f" (operator <code>{_e(attempt['operator'])}</code>)" if attempt.get("operator") else ""
        rows.append(
            f"<tr><td>{_e(attempt.get('path', '?'))}</td><td>{state}</td>"
            f"{time_cell if timed else ''}<td class=\"msg\">{_e(why)}{operator}</td></tr>"
        )
    time_head = "<th>time</th>" if timed else ""
    return (
        "<h2>Conversion ladder</h2><p class=\"note\">Paths tried in order; the first that"
        f" converts is kept.</p><table><tr><th>path</th><th>outcome</th>{time_head}"
        f"<th>why it failed</th></tr>{''.join(rows)}</table>"
    )


def _signature_section(report: dict) -> str:
    def rows(kind: str, items: list) -> str:
        return "".join(
            f"<tr><td>{kind}</td><td><code>{_e(item['name'])}</code>{_spec_name(item)}</td>"
            f"<td>{_e(item.get('shape') if item.get('shape') is not None else 'set at run time')}</td>"
            f"<td>{_e(item.get('dtype', ''))}</td></tr>"
            for item in items
        )

    declared = report.get("package_signature")
    if declared:
        title = "Signature of the Core ML package"
        body = rows("input", declared["inputs"]) + rows("output", declared["outputs"])
    else:
        title = "Signature in the spec"
        body = rows("input", report["signature"]["inputs"]) + "".join(
            f"<tr><td>output</td><td><code>{_e(item['name'])}</code></td><td></td><td></td></tr>"
            for item in report["signature"]["outputs"]
        )
    return (
        f"<h2>{title}</h2><table><tr><th></th><th>name</th><th>shape</th><th>dtype</th></tr>"
        f"{body}</table>"
    )


def _spec_name(feature: dict) -> str:
    if "specName" not in feature:
        return ""
    return f" <span class=\"note\">(<code>{_e(feature['specName'])}</code> in the spec)</span>"


def _tools_section(report: dict) -> str:
    tools = "".join(
        f"<tr><td>{_e(name)}</td><td><code>{_e(version)}</code></td></tr>"
        for name, version in report["tools"].items()
    )
    return (
        f"<h2>Tool versions</h2><table><tr><th>tool</th><th>version</th></tr>{tools}</table>"
        f"<h2>Spec</h2><p class=\"note\">sha256 <code>{_e(report['spec_sha256'])}</code></p>"
        f"<details><summary>Spec as run</summary><pre>{_e(_yaml(report['spec']))}</pre></details>"
    )


def _yaml(document: dict) -> str:
    import yaml

    return yaml.safe_dump(document, sort_keys=False, default_flow_style=None)
