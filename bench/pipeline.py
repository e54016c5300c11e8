"""Benchmark: `modelconv run` against the bare library calls that do the same work.

For each model, every round runs two fresh processes, in alternating order:

- `cli`: the installed `modelconv run FILE --output json` into a new local store, so Python
  start-up, imports, the conversion ladder, both validations, the report and the release all
  count;
- `library`: this script with `--library`, one Python process that does the same work with
  direct calls. It builds the module and computes reference outputs on the same seeded
  samples. It runs `torch.onnx.export` and ONNX Runtime on the samples, then `torch.export`
  and `ct.convert` on the path the pipeline ended up using (no ladder). It executes the Core ML
  program with `modelconv.mil`, computes the same figures (`compare_outputs`), zips the
  package and copies the files to a folder. It uses the project's spec-to-tool translations
  (example tensors, dynamic shapes, Core ML input types, `convert_program`), so both sides
  convert the same program.

It prints, per side, the median wall time and CPU time (user + system, from wait4), the ratios
(target: at most 1.15) and the peak resident memory of each process. On a machine shared with
other work, wall times swing with the load. The CPU times, and the ratio of the two runs of
one round, are the steadier figures. Usage:

    python bench/pipeline.py [--rounds 3] [--models mobilenet-v3-small,minilm]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
MODELCONV = str(Path(sys.executable).parent / "modelconv")
MODELS = {
    "mobilenet-v3-small": REPO / "examples" / "mobilenet-v3-small.yaml",
    "minilm": REPO / "examples" / "minilm.yaml",
}
TARGET_RATIO = 1.15
FIGURES_FILE = "figures.json"


def run_measured(command: list[str], env: dict | None = None):
    """Run a command; return (wall seconds, CPU seconds, peak RSS in MiB, stdout, stderr).

    CPU seconds are user plus system time of the process and its children (from wait4).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {process.returncode}:\n{stderr[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return seconds, cpu, usage.ru_maxrss // 1024, stdout, stderr  # ru_maxrss is KiB on Linux


def cli_round(model: str, round_index: int, scratch: Path):
    document = yaml.safe_load(MODELS[model].read_text())
    document["spec"]["publish"]["version"] = f"bench-{round_index}"
    spec_path = scratch / f"{model}-{round_index}.yaml"
    spec_path.write_text(yaml.safe_dump(document))
    store = scratch / f"store-{model}-{round_index}"
    seconds, cpu, rss, stdout, _ = run_measured(
        [MODELCONV, "run", str(spec_path), "--store", str(store), "--output", "json"]
    )
    return seconds, cpu, rss, json.loads(stdout)


def library_round(model: str, rung: str, scratch: Path):
    out = scratch / f"library-{model}"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, __file__, "--library", str(MODELS[model]), "--rung", rung,
               "--out", str(out)]
    seconds, cpu, rss, _, _ = run_measured(command)
    return seconds, cpu, rss, json.loads((out / FIGURES_FILE).read_text())


# --- the library side -----------------------------------------------------------------------


def library_work(spec_path: Path, rung: str, out: Path) -> dict:
    """Do the pipeline's work with direct library calls; return the figures as a dict."""
    import importlib

    import torch

    import coremltools as ct
    import numpy as np
    import onnxruntime

    from modelconv import mil
    from modelconv.pipeline.comparison import compare_outputs
    from modelconv.pipeline.ladder import convert_program
    from modelconv.pipeline.samples import random_samples
    from modelconv.pipeline.signature import example_arguments, export_dynamic_shapes
    from modelconv.release import zip_package
    from modelconv.spec import load_conversion

    spec = load_conversion(str(spec_path)).spec
    out.mkdir(parents=True)
    names = [item.name for item in spec.inputs]
    outputs = [item.name for item in spec.outputs]

    # The module and its reference outputs on the seeded samples.
    factory = spec.source.factory
    module_name, _, function_name = factory.entrypoint.partition(":")
    torch.manual_seed(factory.seed)
    module = getattr(importlib.import_module(module_name), function_name)(**factory.kwargs).eval()
    samples = random_samples(spec)
    with torch.no_grad():
        for sample in samples:
            result = module(*(torch.from_numpy(sample.inputs[name]) for name in names))
            result = result if isinstance(result, (tuple, list)) else (result,)
            sample.outputs = {name: tensor.numpy() for name, tensor in zip(outputs, result)}
    expected = [sample.outputs for sample in samples]

    # ONNX export and ONNX Runtime.
    arguments = example_arguments(spec)
    onnx_path = out / "model.onnx"
    torch.onnx.export(module, arguments, str(onnx_path), dynamo=True,
                      dynamic_shapes=export_dynamic_shapes(spec), input_names=names,
                      output_names=outputs, opset_version=spec.export.opset, external_data=False)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_actual = [dict(zip(outputs, session.run(None, sample.inputs))) for sample in samples]

    # Core ML on the path that works for this model, then the executor on the samples.
    exported = torch.export.export(module, arguments, dynamic_shapes=export_dynamic_shapes(spec))
    program = exported.run_decompositions() if "decompositions" in rung else exported.run_decompositions({})
    precision = {"float16": ct.precision.FLOAT16, "float32": ct.precision.FLOAT32}[spec.coreml.precision]
    dtypes = {name: np.float32 for name in outputs}
    mlmodel = convert_program(spec, program, precision, dtypes)
    package = out / "model.mlpackage"
    mlmodel.save(str(package))
    loaded = mil.load_program(package)
    coreml_actual = [mil.execute(loaded, sample.coreml_inputs()) for sample in samples]

    figures = {}
    for runtime, actual in (("onnxruntime", onnx_actual), ("coreml", coreml_actual)):
        figures[runtime] = [item.as_dict() for item in compare_outputs(actual, expected, outputs, spec.validation)]

    # The release files.
    release = out / "release"
    release.mkdir()
    zip_package(package, release / "model.mlpackage.zip")
    shutil.copyfile(onnx_path, release / "model.onnx")
    return figures


# --- reporting ------------------------------------------------------------------------------


def worst(figures: dict, runtime: str, key: str):
    values = [row[key] for row in figures.get(runtime) or [] if row.get(key) is not None]
    if not values:
        return None
    return min(values) if key == "cosine" else max(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--library", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rung", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.library:
        import logging
        import warnings

        logging.disable(logging.WARNING)
        warnings.filterwarnings("ignore")
        os.environ.setdefault("TQDM_DISABLE", "1")
        figures = library_work(args.library, args.rung, args.out)
        # A file, not stdout: the exporters print to stdout.
        (args.out / FIGURES_FILE).write_text(json.dumps(figures))
        return 0

    models = args.models.split(",")
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; {args.rounds} rounds;"
          f" load average at start {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="modelconv-bench-") as scratch:
        rows = [measure(model, args.rounds, Path(scratch)) for model in models]
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    print()
    print("| model | wall: run / library (median) | wall ratio (median of rounds) |"
          " CPU: run / library (median) | CPU ratio | peak RSS: run / library |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['model']} | {row['wall'][0]:.1f} s / {row['wall'][1]:.1f} s |"
            f" {row['wall_ratio']:.2f} | {row['cpu'][0]:.1f} s / {row['cpu'][1]:.1f} s |"
            f" {row['cpu_ratio']:.2f} | {row['rss'][0]} MiB / {row['rss'][1]} MiB |"
        )
    print(f"target: ratio <= {TARGET_RATIO}")
    return 0


def measure(model: str, rounds: int, scratch: Path) -> dict:
    """Run interleaved rounds of both sides; return medians, ratios and peak memory."""
    samples = {"cli": [], "library": []}  # (wall, cpu, rss) per round
    rung = None
    for index in range(rounds):
        # Alternate which side goes first, so neither always runs on a warmer file cache.
        # Round 0 starts with the CLI, whose result names the conversion path the library takes.
        order = ("cli", "library") if index % 2 == 0 else ("library", "cli")
        for side in order:
            if side == "cli":
                seconds, cpu, rss, document = cli_round(model, index, scratch)
                rung = rung or _rung(document)
                stages = {stage["stage"]: stage for stage in document["stages"]}
                detail = ", ".join(
                    f"{name} {stage['duration_seconds']:.1f}s" for name, stage in stages.items()
                )
            else:
                seconds, cpu, rss, figures = library_round(model, rung, scratch)
                detail = f"Core ML max abs error {worst(figures, 'coreml', 'max_abs_error'):.3g}"
            samples[side].append((seconds, cpu, rss))
            print(f"{model} round {index} {side}: {seconds:.1f}s wall, {cpu:.1f}s CPU, {rss} MiB"
                  f" ({detail}); load {os.getloadavg()[0]:.1f}", flush=True)

    def median(side: str, field: int) -> float:
        return statistics.median(sample[field] for sample in samples[side])

    paired = [cli[0] / library[0] for cli, library in zip(samples["cli"], samples["library"])]
    return {
        "model": model,
        "wall": (median("cli", 0), median("library", 0)),
        # Both sides of a round ran minutes apart at most, under similar load.
        "wall_ratio": statistics.median(paired),
        "cpu": (median("cli", 1), median("library", 1)),
        "cpu_ratio": median("cli", 1) / median("library", 1),
        "rss": (max(sample[2] for sample in samples["cli"]),
                max(sample[2] for sample in samples["library"])),
    }


def _rung(document: dict) -> str:
    stages = {stage["stage"]: stage for stage in document["stages"]}
    return stages["convert"]["metrics"]["path"]


if __name__ == "__main__":
    sys.exit(main())
