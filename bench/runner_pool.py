"""Benchmark of the runner pool's coordination: claim latency, throughput, utilisation.

    python bench/runner_pool.py [--agents 4] [--checks 200] [--trickle 50]
                                [--backend mil-reference|noop]

It starts the test environment's control plane and S3 server (hack/build-k8s.sh must have
run), installs the CoreMLCheck CRD, binds the agent Role of examples/macos/agent-rbac.yaml
to a ServiceAccount and starts `--agents` agent processes (concurrency 1) with its
kubeconfig. Then two phases:

- trickle: `--trickle` checks created one at a time, each after the previous one finished,
  so every check finds idle runners. The time from the create request to the claim is the
  claim latency;
- burst: `--checks` checks created at once. Figures: checks per second from the first
  create to the last completion, agent utilisation (time runners spent holding claims /
  (agents x that wall time)), and the time from create to claim, which here is mostly
  queueing behind other checks.

Checks are trivial. With `mil-reference` (the default), the executor runs a real converted
package of a 16-unit MLP on 3 samples, with 1 warm-up and 5 timed runs. With `noop`, a
backend defined only in this file returns each sample's inputs as its outputs, against
samples whose expected outputs equal their inputs. That backend is not part of the product
and `modelconv agent` cannot select it. All times come from the same machine's clock.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from modelconv.runner.backends import BackendRun, UnitRun  # noqa: E402

AGENT_RBAC = REPO_ROOT / "examples" / "macos" / "agent-rbac.yaml"
POLL_SECONDS = 0.02


class NoopBackend:
    """Benchmark-only backend: returns each sample's inputs as its outputs at once."""

    name = "bench-noop"

    def prepare(self) -> None:
        pass

    def run(self, request) -> BackendRun:
        unit = UnitRun(compute_unit=None, outputs=[dict(sample) for sample in request.samples],
                       latencies_ms=[0.0], load_ms=0.0)
        return BackendRun(units=[unit])


def agent_process(argv: list[str]) -> int:
    """Entry point of a benchmark agent process with the noop backend."""
    import logging

    from modelconv.runner.agent import Agent, AgentSettings
    from modelconv.runner.kube import api_client, quiet_client_loggers

    parser = argparse.ArgumentParser()
    for option in ("--kubeconfig", "--namespace", "--name", "--workdir"):
        parser.add_argument(option, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    quiet_client_loggers()
    settings = AgentSettings(name=args.name, namespace=args.namespace, labels={},
                             workdir=Path(args.workdir), lease_seconds=6)
    agent = Agent(settings, api_client(args.kubeconfig), NoopBackend())
    import signal

    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    return agent.run()


# --- environment ------------------------------------------------------------------------


def install_crd(client) -> None:
    from kubernetes import client as kube

    from modelconv.runner.crd import CRD_NAME, crd_manifest

    api = kube.ApiextensionsV1Api(client)
    api.create_custom_resource_definition(crd_manifest())
    for _ in range(300):
        conditions = api.read_custom_resource_definition(CRD_NAME).status.conditions or []
        if any(item.type == "Established" and item.status == "True" for item in conditions):
            return
        time.sleep(0.1)
    raise TimeoutError("the CoreMLCheck CRD did not become Established")


def create_pool(cluster, client, namespace: str, workdir: Path) -> Path:
    """Create the pool namespace and the agent's RBAC; return the agent's kubeconfig."""
    import yaml
    from kubernetes import client as kube
    from kubernetes import utils

    from testenv.service_accounts import issue_service_account_kubeconfig

    kube.CoreV1Api(client).create_namespace({"metadata": {"name": namespace}})
    for document in yaml.safe_load_all(AGENT_RBAC.read_text()):
        utils.create_from_dict(client, document, namespace=namespace)
    api = cluster.api()
    try:
        return issue_service_account_kubeconfig(api, namespace, "modelconv-agent",
                                                workdir / "agent.kubeconfig")
    finally:
        api.close()


def tiny_package(workdir: Path) -> tuple[bytes, bytes]:
    """Return (package zip, samples.safetensors) of a 16-unit MLP and PyTorch outputs."""
    import coremltools as ct
    import torch
    from safetensors.numpy import save

    from modelconv.runner.artifacts import zip_folder

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 4)).eval()
    converted = ct.convert(
        torch.jit.trace(model, torch.zeros(1, 8)), inputs=[ct.TensorType(name="x", shape=(1, 8))],
        outputs=[ct.TensorType(name="y")], convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.iOS16,
    )
    converted.save(str(workdir / "model.mlpackage"))
    tensors = {}
    for index in range(3):
        x = np.random.default_rng(index).standard_normal((1, 8)).astype(np.float32)
        tensors[f"sample{index}/input/x"] = x
        with torch.no_grad():
            tensors[f"sample{index}/output/y"] = model(torch.from_numpy(x)).numpy()
    return zip_folder(workdir / "model.mlpackage"), save(tensors)


def identity_samples() -> tuple[bytes, bytes]:
    """Return (a placeholder package zip, samples whose outputs equal their inputs)."""
    import zipfile

    from safetensors.numpy import save

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("model.mlpackage/Manifest.json", "{}")
    x = np.arange(8, dtype=np.float32).reshape(1, 8)
    tensors = {}
    for index in range(3):
        tensors[f"sample{index}/input/x"] = x
        tensors[f"sample{index}/output/x"] = x
    return buffer.getvalue(), save(tensors)


# --- agents and checks ------------------------------------------------------------------


def start_agents(args, namespace: str, kubeconfig: Path, workdir: Path) -> list:
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "OMP_NUM_THREADS": "1",
           "NO_PROXY": "127.0.0.1,localhost"}
    agents = []
    for index in range(args.agents):
        name = f"bench-{index}"
        common = ["--kubeconfig", str(kubeconfig), "--namespace", namespace, "--name", name,
                  "--workdir", str(workdir / name)]
        if args.backend == "noop":
            argv = [sys.executable, __file__, "_agent", *common]
        else:
            argv = [sys.executable, "-c", "import sys; from modelconv.cli import main; "
                    "sys.exit(main())", "agent", *common, "--backend", "mil-reference",
                    "--lease-seconds", "6"]
        log = open(workdir / f"{name}.log", "wb")
        agents.append((subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env),
                       log, workdir / f"{name}.log"))
    return agents


def wait_registered(client, namespace: str, count: int) -> None:
    from modelconv.runner.checks import live_runners

    for _ in range(1200):
        if len(live_runners(client, namespace)) >= count:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{count} agents did not register within 120 s")


def create_checks(client, store, namespace: str, prefix: str, count: int,
                  one_at_a_time: bool) -> dict[str, float]:
    """Create `count` checks; return the wall-clock time before each create request.

    With `one_at_a_time`, each check is created after the previous one finished.
    """
    from modelconv.runner.kube import CheckApi
    from modelconv.runner.resource import status_of

    from modelconv.runner.checks import CheckObjects, S3Presigner, check_manifest, create_check
    from modelconv.spec import ConversionSpec

    spec = ConversionSpec.model_validate({
        "source": {"onnx": {"uri": "model.onnx"}}, "inputs": [{"name": "x", "shape": [1, 8]}],
        "outputs": [{"name": "y"}], "publish": {"model": "bench", "version": "1"},
        "validation": {"device": {"enabled": True, "required": False,
                                  "computeUnits": ["cpuOnly"]}},
    })
    presigner = S3Presigner(store)
    created = {}
    for index in range(count):
        run = f"{prefix}{index:04d}".ljust(12, "0")
        objects = CheckObjects(package="bench/model.mlpackage.zip",
                               inputs="bench/samples.safetensors",
                               expected_outputs="bench/samples.safetensors",
                               report=f"bench/reports/{run}.json")
        manifest = check_manifest({"metadata": {"name": prefix}}, spec, run, objects, presigner,
                                  namespace=namespace, warmup_runs=1, measured_runs=5)
        created[manifest["metadata"]["name"]] = time.time()
        create_check(client, manifest)
        while one_at_a_time and status_of(
                CheckApi(client, namespace).get(manifest["metadata"]["name"])).state not in (
                "Succeeded", "Failed"):
            time.sleep(POLL_SECONDS)
    return created


def wait_finished(client, namespace: str, names, timeout: float) -> dict:
    from modelconv.runner.kube import CheckApi
    from modelconv.runner.resource import status_of

    api = CheckApi(client, namespace)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items, _ = api.list()
        statuses = {item["metadata"]["name"]: status_of(item) for item in items}
        if all(statuses.get(name) and statuses[name].state in ("Succeeded", "Failed")
               for name in names):
            return {name: statuses[name] for name in names}
        time.sleep(0.25)
    raise TimeoutError(f"checks did not finish within {timeout:.0f} s")


# --- figures ----------------------------------------------------------------------------


def seconds(moment: datetime.datetime) -> float:
    return moment.timestamp()


def claim_latencies_ms(created: dict[str, float], statuses: dict) -> list[float]:
    return [(seconds(statuses[name].claim_time) - created[name]) * 1000 for name in created]


def phase_figures(created: dict[str, float], statuses: dict, slots: int) -> dict:
    failed = [name for name, status in statuses.items() if status.state != "Succeeded"]
    first = min(created.values())
    last = max(seconds(status.completion_time) for status in statuses.values())
    busy = sum(seconds(status.completion_time) - seconds(status.claim_time)
               for status in statuses.values())
    latencies = claim_latencies_ms(created, statuses)
    return {
        "checks": len(created),
        "failed": len(failed),
        "wall_s": round(last - first, 2),
        "checks_per_s": round(len(created) / (last - first), 2),
        "utilisation": round(busy / (slots * (last - first)), 3),
        "claim_ms_p50": round(float(np.percentile(latencies, 50)), 1),
        "claim_ms_p99": round(float(np.percentile(latencies, 99)), 1),
        "attempts_max": max(status.attempts for status in statuses.values()),
        "runners_used": len({status.runner for status in statuses.values()}),
    }


def agent_stats(log_path: Path) -> dict:
    match = re.search(r"stopped: (\{.*\})", log_path.read_text(errors="replace"))
    if not match:
        return {}
    return json.loads(match.group(1).replace("'", '"'))


def run(args) -> dict:
    import kubernetes

    from testenv import Cluster, S3Server
    from testenv.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

    from modelconv.store.s3 import S3Settings, S3Store

    os.environ.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
                       "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"})
    workdir = Path(tempfile.mkdtemp(prefix="bench-runner-pool-"))
    with Cluster() as cluster, S3Server() as s3:
        client = kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))
        s3.client().create_bucket(Bucket="bench-runner-pool")
        store = S3Store("bench-runner-pool", "", S3Settings(endpoint_url=s3.endpoint_url))
        package, samples = (identity_samples() if args.backend == "noop"
                            else tiny_package(workdir))
        store.put_bytes("bench/model.mlpackage.zip", package)
        store.put_bytes("bench/samples.safetensors", samples)
        install_crd(client)
        namespace = "runner-pool"
        kubeconfig = create_pool(cluster, client, namespace, workdir)
        agents = start_agents(args, namespace, kubeconfig, workdir)
        try:
            wait_registered(client, namespace, args.agents)
            trickle = create_checks(client, store, namespace, "trickle", args.trickle, True)
            trickle_status = wait_finished(client, namespace, trickle, 600)
            burst = create_checks(client, store, namespace, "burst", args.checks, False)
            burst_status = wait_finished(client, namespace, burst, 1200)
        finally:
            for process, log, _ in agents:
                process.terminate()
            for process, log, _ in agents:
                process.wait(120)
                log.close()
        stats = [agent_stats(path) for _, _, path in agents]
    return {
        "backend": args.backend,
        "agents": args.agents,
        "trickle": phase_figures(trickle, trickle_status, args.agents),
        "burst": phase_figures(burst, burst_status, args.agents),
        "claim_conflicts": sum(item.get("conflicts", 0) for item in stats),
        "load_average": [round(value, 1) for value in os.getloadavg()],
    }


def main(argv: list[str]) -> int:
    if argv[:1] == ["_agent"]:
        return agent_process(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=4, help="agent processes (default 4)")
    parser.add_argument("--checks", type=int, default=200, help="checks in the burst phase")
    parser.add_argument("--trickle", type=int, default=50, help="checks in the trickle phase")
    parser.add_argument("--backend", choices=("mil-reference", "noop"), default="mil-reference")
    args = parser.parse_args(argv)
    figures = run(args)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
