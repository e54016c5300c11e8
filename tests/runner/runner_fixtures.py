"""Helpers of the runner pool tests: models, the CRD, the agent Role, check manifests."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
AGENT_RBAC = REPO_ROOT / "examples" / "macos" / "agent-rbac.yaml"


@dataclasses.dataclass
class TinyModel:
    """A converted package (zipped) and samples for it."""

    package_zip: bytes
    samples_safetensors: bytes
    inputs: list[dict]
    outputs: list[dict]


def _convert_tiny_model(workdir: Path, width: int, depth: int) -> Path:
    import coremltools as ct
    import torch

    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    model = torch.nn.Sequential(torch.nn.Linear(8, width), *layers,
                                torch.nn.Linear(width, 4)).eval()
    example = torch.randn(1, 8)
    traced = torch.jit.trace(model, example)
    converted = ct.convert(
        traced, inputs=[ct.TensorType(name="x", shape=(1, 8))],
        outputs=[ct.TensorType(name="y")], convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.iOS16,
    )
    package = workdir / "model.mlpackage"
    converted.save(str(package))
    return package, model


def build_tiny_model(workdir: Path, width: int = 16, depth: int = 1) -> TinyModel:
    """Convert a small MLP and compute reference outputs for three samples."""
    import torch
    from safetensors.numpy import save

    from modelconv.runner.artifacts import zip_folder

    package, model = _convert_tiny_model(workdir, width, depth)
    generator = np.random.default_rng(0)
    inputs = [{"x": generator.standard_normal((1, 8)).astype(np.float32)} for _ in range(3)]
    with torch.no_grad():
        outputs = [{"y": model(torch.from_numpy(sample["x"])).numpy()} for sample in inputs]
    tensors = {}
    for index, (sample_in, sample_out) in enumerate(zip(inputs, outputs)):
        tensors[f"sample{index}/input/x"] = sample_in["x"]
        tensors[f"sample{index}/output/y"] = sample_out["y"]
    return TinyModel(zip_folder(package), save(tensors), inputs, outputs)




def broken_package_zip() -> bytes:
    """A zip shaped like a package whose manifest and model are garbage."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("model.mlpackage/Manifest.json", "{not json")
        bundle.writestr("model.mlpackage/Data/com.apple.CoreML/model.mlmodel", b"\x00garbage")
    return buffer.getvalue()




@dataclasses.dataclass
class Pool:
    """A pool namespace with the CRD installed and an agent ServiceAccount bound to its Role."""

    namespace: str
    agent_kubeconfig: Path
    admin_kubeconfig: Path
    client: object


def install_coremlcheck_crd(client) -> None:
    """Create (or update) the CoreMLCheck CRD and wait until the API server serves it."""
    import time

    from kubernetes import client as kube
    from kubernetes.client.exceptions import ApiException

    from modelconv.runner.crd import CRD_NAME, crd_manifest

    api = kube.ApiextensionsV1Api(client)
    manifest = crd_manifest()
    try:
        api.create_custom_resource_definition(manifest)
    except ApiException as error:
        if error.status != 409:
            raise
        current = api.read_custom_resource_definition(CRD_NAME)
        manifest["metadata"]["resourceVersion"] = current.metadata.resource_version
        api.replace_custom_resource_definition(CRD_NAME, manifest)
    for _ in range(300):
        crd = api.read_custom_resource_definition(CRD_NAME)
        conditions = {item.type: item.status for item in (crd.status.conditions or [])}
        if conditions.get("Established") == "True":
            return
        time.sleep(0.1)
    raise TimeoutError(f"CRD {CRD_NAME} did not become Established within 30 s")


def apply_agent_rbac(client, namespace: str) -> None:
    """Create the ServiceAccount, Role and RoleBinding of examples/macos/agent-rbac.yaml."""
    from kubernetes import utils

    for document in yaml.safe_load_all(AGENT_RBAC.read_text()):
        document["metadata"]["namespace"] = namespace
        utils.create_from_dict(client, document, namespace=namespace)




def device_spec(compute_units=("cpuOnly",), required: bool = False, **device):
    """A ConversionSpec whose device check is enabled, for check manifests."""
    from modelconv.spec import ConversionSpec

    return ConversionSpec.model_validate({
        "source": {"onnx": {"uri": "model.onnx"}},
        "inputs": [{"name": "x", "shape": [1, 8]}],
        "outputs": [{"name": "y"}],
        "validation": {"atol": 1e-3, "rtol": 1e-3, "minCosine": 0.999, "device": {
            "enabled": True, "required": required, "computeUnits": list(compute_units),
            **device}},
        "publish": {"model": "tiny", "version": "1"},
    })


def upload_check_objects(store, run: str, package_zip: bytes, samples: bytes,
                         expected: bytes | None = None):
    """Put a check's files into the store under `runs/<run>/` and return their keys."""
    from modelconv.runner.checks import CheckObjects

    prefix = f"runs/{run}"
    store.put_bytes(f"{prefix}/model.mlpackage.zip", package_zip)
    store.put_bytes(f"{prefix}/samples.safetensors", samples)
    expected_key = f"{prefix}/samples.safetensors"
    if expected is not None:
        expected_key = f"{prefix}/expected.npz"
        store.put_bytes(expected_key, expected)
    return CheckObjects(
        package=f"{prefix}/model.mlpackage.zip", inputs=f"{prefix}/samples.safetensors",
        expected_outputs=expected_key, report=f"{prefix}/report.json",
        compiled_model=f"{prefix}/model.mlmodelc.zip",
    )


def manifest_for(store, objects, namespace: str, run: str, *, spec=None, **settings) -> dict:
    """A CoreMLCheck manifest for `objects`, with real presigned URLs of `store`."""
    from modelconv.runner.checks import S3Presigner, check_manifest

    conversion = {"metadata": {"name": f"conv-{run}", "namespace": "elsewhere"}}
    settings.setdefault("heartbeat_seconds", 1)
    settings.setdefault("warmup_runs", 1)
    settings.setdefault("measured_runs", 5)
    return check_manifest(conversion, spec or device_spec(), run.ljust(12, "0"), objects,
                          S3Presigner(store), namespace=namespace, **settings)


# --- agents in subprocesses -------------------------------------------------------------

AGENT_ENTRY = "import sys; from modelconv.cli import main; sys.exit(main())"
# Strings that appear in presigned URLs and must never reach a log, a status or a report.
URL_SECRETS = ("X-Amz-Signature", "X-Amz-Credential", "Signature=", "AWSAccessKeyId")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll `predicate` until it returns a truthy value; fail naming `what` after `timeout`."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class AgentProcess:
    """`modelconv --debug agent` in a child process, logging to a file."""

    def __init__(self, pool: Pool, name: str, workdir: Path, *, concurrency: int = 1,
                 backend: str = "mil-reference", extra: tuple[str, ...] = ()):
        import os
        import subprocess
        import sys

        self.name = name
        self.log_path = workdir / f"agent-{name}.log"
        argv = [
            sys.executable, "-c", AGENT_ENTRY, "--debug", "agent",
            "--kubeconfig", str(pool.agent_kubeconfig), "--namespace", pool.namespace,
            "--name", name, "--labels", "chip=cpu,macos=15", "--backend", backend,
            "--concurrency", str(concurrency), "--lease-seconds", "6",
            "--workdir", str(workdir / f"work-{name}"), *extra,
        ]
        # One torch thread per agent: several agents share the test machine's cores, and
        # oversubscribed threads slow every one of them down.
        env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "OMP_NUM_THREADS": "1",
               "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> int:
        code = self.process.wait(timeout)
        self._log.close()
        return code

    def stop(self) -> int:
        """SIGTERM, then wait for the drain; SIGKILL only if it does not exit."""
        import signal
        import subprocess

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.wait(90)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.wait(10)


class CheckEventRecorder:
    """Records every change of every CoreMLCheck in a namespace, from a watch."""

    def __init__(self, client, namespace: str):
        import threading

        from modelconv.runner.kube import CheckApi

        self.api = CheckApi(client, namespace)
        self.events: list[tuple[str, str, str | None]] = []
        self._stopped = threading.Event()
        _, self._version = self.api.list()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from modelconv.runner.resource import status_of

        while not self._stopped.is_set():
            watch = self.api.watch(self._version, 5)
            for _, obj in watch:
                status = status_of(obj)
                self.events.append((obj["metadata"]["name"], status.state, status.runner))
            self._version = watch.resource_version

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(10)

    def writes_in_state(self, name: str, state: str) -> int:
        """Count the recorded versions of check `name` that were in `state`."""
        return sum(1 for check, seen, _ in self.events if check == name and seen == state)

    def max_claimed(self, runner: str) -> int:
        """Return the largest number of checks claimed by `runner` at one moment."""
        current: dict[str, tuple[str, str | None]] = {}
        highest = 0
        for name, state, holder in self.events:
            current[name] = (state, holder)
            held = sum(1 for seen, by in current.values() if seen == "Claimed" and by == runner)
            highest = max(highest, held)
        return highest
