"""Messages quoted from other libraries' exceptions are stored as plain text with their reason."""

from __future__ import annotations

from modelconv.errors import ConversionError, strip_ansi
from modelconv.pipeline.attempts import summarize_error
from modelconv.pipeline.run import RunOutcome, _guarded

# The opening of torch.onnx's message for a failed torch.export (torch 2.13), colors included.
TORCH_ONNX_STEP_ONE = (
    "Failed to export the model with torch.export. \x1b[96mThis is step 1/3\x1b[0m of exporting"
    " the model to ONNX. Next steps:\n"
    "- Modify the model code for `torch.export.export` to succeed.\n"
    "- Create an issue in the PyTorch GitHub repository against the \x1b[96m*torch.export*\x1b[0m"
    " component.\n\n## Exception summary\n\n"
    "<class 'torch.fx.experimental.symbolic_shapes.GuardOnDataDependentSymNode'>: Could not"
    " guard on data-dependent expression Eq(u0, 1)\n\n"
    "The following call raised this error:\n"
    '  File "/home/user/model.py", line 12, in forward\n'
    "    if x.sum() > 0:\n"
)


class TorchExportError(Exception):
    pass


class GuardOnDataDependentSymNode(Exception):
    pass


def test_strip_ansi_removes_colors_and_bold():
    text = "\x1b[1mdo those steps only if you trust the source\x1b[0m and \x1b[96mstep\x1b[0m"
    assert strip_ansi(text) == "do those steps only if you trust the source and step"


def test_conversion_error_message_has_no_escapes():
    error = ConversionError("ExportFailed", "dynamo: \x1b[96mThis is step 1/3\x1b[0m")
    assert error.message == "dynamo: This is step 1/3"
    assert "\x1b" not in str(error)


def test_torch_onnx_failure_summary_names_the_cause():
    try:
        try:
            raise GuardOnDataDependentSymNode(
                "Could not guard on data-dependent expression Eq(u0, 1)"
            )
        except GuardOnDataDependentSymNode as cause:
            raise TorchExportError(TORCH_ONNX_STEP_ONE) from cause
    except TorchExportError as error:
        summary = summarize_error(error)
    assert summary.startswith("TorchExportError: Failed to export the model with torch.export:")
    assert "GuardOnDataDependentSymNode: Could not guard on data-dependent expression" in summary
    assert "(at model.py:12: if x.sum() > 0:)" in summary
    assert "This is step" not in summary
    assert "\x1b" not in summary


def test_torch_onnx_failure_without_cause_uses_summary():
    summary = summarize_error(TorchExportError(TORCH_ONNX_STEP_ONE))
    assert "GuardOnDataDependentSymNode: Could not guard on data-dependent expression" in summary
    assert "Next steps" not in summary


def test_internal_error_message_has_no_escapes(tmp_path):
    outcome = RunOutcome(conversion=None, store="", workdir=tmp_path)

    def fail():
        raise RuntimeError("\x1b[1mboom\x1b[0m")

    result = _guarded(outcome, "convert", fail)
    assert result.reason == "InternalError"
    assert result.message == "RuntimeError: boom"
