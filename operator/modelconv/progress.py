"""Progress display of `modelconv run`: live on a terminal, plain lines elsewhere.

`modelconv.pipeline.run` reports to a `RunObserver`. `LiveProgress` draws one row per stage
with rich (a spinner, the stage name, elapsed seconds and the stage's latest status line), then
a summary table. `PlainProgress` writes the same events as plain lines, for logs and CI. With
`--output json` it writes to stderr, so stdout carries the JSON document alone.
"""

from __future__ import annotations

import time
from typing import IO, TYPE_CHECKING, Optional, Protocol

if TYPE_CHECKING:
    from rich.console import Console

    from .pipeline.run import RunOutcome
    from .pipeline.stage import StageResult


class RunObserver(Protocol):
    """Receiver of the events that `run_pipeline` sends while it runs."""

    def run_started(self, stages: list[str], skipped: dict[str, str]) -> None: ...

    def stage_started(self, stage: str) -> None: ...

    def stage_message(self, stage: str, message: str) -> None: ...

    def stage_finished(self, result: "StageResult") -> None: ...

    def run_finished(self, outcome: "RunOutcome") -> None: ...


class SilentProgress:
    """An observer that shows nothing (library use, tests)."""

    def run_started(self, stages, skipped):
        pass

    def stage_started(self, stage):
        pass

    def stage_message(self, stage, message):
        pass

    def stage_finished(self, result):
        pass

    def run_finished(self, outcome):
        pass


def _one_line(message: str, width: int = 160) -> str:
    line = " ".join(message.split())
    return line if len(line) <= width else line[: width - 1] + "…"


class PlainProgress:
    """Plain lines, one per event, for a stream that is not a terminal."""

    def __init__(self, stream: IO[str], *, summary: bool = True):
        self.stream = stream
        self.summary = summary

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def run_started(self, stages, skipped):
        for stage, why in skipped.items():
            self._write(f"{stage}: {why}")

    def stage_started(self, stage):
        self._write(f"{stage}: started")

    def stage_message(self, stage, message):
        self._write(f"{stage}: {_one_line(message)}")

    def stage_finished(self, result):
        if result.succeeded:
            self._write(f"{result.stage}: done in {result.duration_seconds:.1f}s")
        else:
            self._write(
                f"{result.stage}: failed after {result.duration_seconds:.1f}s: {result.reason}"
            )

    def run_finished(self, outcome):
        if not self.summary:
            return
        self._write(plain_summary(outcome))


class _StageRow:
    def __init__(self, stage: str):
        self.stage = stage
        self.state = "pending"  # pending, running, done, failed, skipped
        self.started: Optional[float] = None
        self.elapsed: Optional[float] = None
        self.status = ""
        # One spinner per row: a spinner's frame depends on when it was first drawn.
        self.spinner = None


class LiveProgress:
    """A live table of stages on a terminal, redrawn by rich while the run goes on."""

    def __init__(self, console: Optional["Console"] = None):
        from rich.console import Console

        self.console = console or Console()
        self.rows: dict[str, _StageRow] = {}
        self.live = None

    def __rich__(self):
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 2))
        for _ in range(4):
            table.add_column()
        marks = {
            "pending": Text("·", style="dim"),
            "done": Text("✓", style="green"),
            "failed": Text("✗", style="bold red"),
            "skipped": Text("–", style="dim"),
        }
        for row in self.rows.values():
            if row.state == "running":
                row.spinner = row.spinner or Spinner("dots", style="cyan")
                mark = row.spinner
            else:
                mark = marks[row.state]
            elapsed = row.elapsed
            if row.state == "running" and row.started is not None:
                elapsed = time.monotonic() - row.started
            seconds = f"{elapsed:6.1f}s" if elapsed is not None else ""
            style = "dim" if row.state in ("pending", "skipped") else ""
            table.add_row(mark, Text(row.stage, style=style or "bold"), seconds,
                          Text(row.status, style="dim", overflow="ellipsis", no_wrap=True))
        return table

    def run_started(self, stages, skipped):
        from rich.live import Live

        for stage in stages:
            self.rows[stage] = _StageRow(stage)
            if stage in skipped:
                self.rows[stage].state = "skipped"
                self.rows[stage].status = skipped[stage]
        self.live = Live(self, console=self.console, refresh_per_second=8, transient=False)
        self.live.start()

    def stage_started(self, stage):
        row = self.rows.setdefault(stage, _StageRow(stage))
        row.state = "running"
        row.started = time.monotonic()

    def stage_message(self, stage, message):
        if stage in self.rows:
            self.rows[stage].status = _one_line(message, width=100)

    def stage_finished(self, result):
        row = self.rows.setdefault(result.stage, _StageRow(result.stage))
        row.state = "done" if result.succeeded else "failed"
        row.elapsed = result.duration_seconds
        row.status = _one_line(result.message if result.succeeded else result.reason, width=100)

    def close(self) -> None:
        """Stop redrawing; safe to call more than once (the CLI calls it on Ctrl-C)."""
        if self.live is not None:
            self.live.stop()
            self.live = None

    def run_finished(self, outcome):
        self.close()
        self.console.print()
        for renderable in rich_summary(outcome):
            self.console.print(renderable)


# --- the summary after a run --------------------------------------------------------------


def _figure(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _result_word(row: dict) -> str:
    if not row.get("passed", not row.get("violations")):
        return "FAIL"
    # A Core ML program that was not executed passed its declared-shape check only.
    return "shape ok" if row.get("not_run") else "pass"


def summary_rows(outcome: "RunOutcome") -> list[list[str]]:
    """Return one row per validated output: runtime, output, max abs error, cosine, PSNR, result."""
    from .pipeline.report import validation_rows

    rows = []
    for row in validation_rows(outcome.result("validate"), outcome.conversion.spec):
        cosine = row.get("cosine")
        rows.append([
            row["runtime"],
            row["output"],
            _figure(row.get("max_abs_error")),
            f"{cosine:.6f}" if isinstance(cosine, float) else _figure(cosine),
            _figure(row.get("psnr_db")),
            _result_word(row),
        ])
    return rows


SUMMARY_HEADER = ["runtime", "output", "max abs err", "cosine", "PSNR dB", "result"]


def outcome_lines(outcome: "RunOutcome") -> list[str]:
    """Return the closing lines: where the release went, or why the run failed."""
    lines = []
    if outcome.succeeded:
        release = outcome.release or {}
        lines.append(f"Published {release.get('location', outcome.store)}")
        if release.get("report"):
            lines.append(f"Report: {release['report']}")
    else:
        if outcome.internal_error is None:
            lines.append(f"Failed: {outcome.reason}: {outcome.message}")
        else:
            lines.append(f"Failed: {outcome.reason} in stage {outcome.failed_stage.stage}")
        failed = outcome.failed_stage
        if failed is not None and failed.metrics.get("published"):
            # The publish stopped after its manifest, and the message lists what is left to finish.
            lines.append(f"Published {failed.metrics['location']}, but not yet in its index.")
        else:
            lines.append("Nothing was published.")
    if outcome.workdir_kept and outcome.report_dir is not None and not outcome.succeeded:
        lines.append(f"Report: {outcome.report_dir / 'report.html'}")
    if outcome.workdir_kept:
        lines.append(f"Work directory: {outcome.workdir}")
    return lines


def precision_line(outcome: "RunOutcome") -> str:
    """Return the precision of the published Core ML program, with what `auto` chose, or ""
    when nothing was published."""
    convert = outcome.result("convert")
    if not outcome.succeeded or convert is None or "fp16_op_fraction" not in convert.metrics:
        return ""
    fraction = convert.metrics["fp16_op_fraction"]
    published = "float32" if fraction == 0 else f"float16 in {fraction:.0%} of ops"
    auto_outcome = convert.metrics.get("auto_precision")
    if auto_outcome:
        return f"Precision: {published} ({auto_outcome})"
    return f"Precision: {published}"


def plain_summary(outcome: "RunOutcome") -> str:
    """Return the summary as plain text: a fixed-width table, then the closing lines."""
    rows = summary_rows(outcome)
    text = []
    if rows:
        widths = [max(len(row[index]) for row in [SUMMARY_HEADER, *rows]) for index in range(6)]
        for row in [SUMMARY_HEADER, *rows]:
            text.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        source = _coreml_source(outcome)
        if source:
            text.append(source)
    precision = precision_line(outcome)
    if precision:
        text.append(precision)
    text.extend(outcome_lines(outcome))
    return "\n".join(text)


def _coreml_source(outcome: "RunOutcome") -> str:
    validate = outcome.result("validate")
    return validate.metrics.get("coreml_source", "") if validate else ""


def rich_summary(outcome: "RunOutcome") -> list:
    """Return the summary as rich renderables: a table of outputs, then the closing lines."""
    from rich.table import Table
    from rich.text import Text

    renderables = []
    rows = summary_rows(outcome)
    if rows:
        table = Table(title="Validation against the PyTorch reference", title_justify="left")
        for index, title in enumerate(SUMMARY_HEADER):
            table.add_column(title, justify="right" if 2 <= index <= 4 else "left")
        for row in rows:
            style = "bold red" if row[-1] == "FAIL" else "green"
            table.add_row(*row[:-1], Text(row[-1], style=style))
        renderables.append(table)
        source = _coreml_source(outcome)
        if source:
            renderables.append(Text(source, style="dim"))
    precision = precision_line(outcome)
    if precision:
        renderables.append(Text(precision))
    headline_style = "bold green" if outcome.succeeded else "bold red"
    for index, line in enumerate(outcome_lines(outcome)):
        renderables.append(Text(line, style=headline_style if index == 0 else ""))
    return renderables
