"""Operator scale benchmark: many ModelConversions at once on the local control plane.

    python bench/operator_scale.py [--count 500] [--json FILE]

It starts the test environment (testenv: kube-apiserver, etcd, kube-controller-manager and
the node agent), installs the CRD, and runs `modelconv operator` under its RBAC
ServiceAccount with a stage command that finishes at once (bench/noop_stage.py writes a
successful result.json and exits), so the figures are the operator's own. Each conversion
has its own model settings, so none is a cache hit and every one runs four stage Jobs.

Measured:
- create -> first Job: from just before the ModelConversion POST to the Job's ADDED event
  on a watch (p50, p99, nearest rank); create -> Kopf's finalizer on the resource, for
  comparison with the API round trips of the environment;
- create -> Ready: to the watch event that shows Ready=True (p50, p99);
- the operator's peak resident memory (VmHWM of its process);
- API requests of the operator, counted by a plain-HTTP proxy on loopback that it talks
  to, by verb and resource: writes per conversion and per stage, Events and Kopf's
  finalizer patches included, Lease renewals shown apart.

Targets: p99 create -> first Job < 2 s, peak memory < 250 MB, <= 6 API writes per stage.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
from aiohttp import web

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests" / "operator"))

import operator_harness as harness  # noqa: E402
from testenv import Cluster, NodeAgentProcess  # noqa: E402
from testenv.api import KubeAPI, write_kubeconfig, Credentials  # noqa: E402
from testenv.processes import wait_until  # noqa: E402
from testenv.service_accounts import ensure_service_account, request_token  # noqa: E402

NAMESPACE = "bench"
LEASE = "modelconv-operator"
STAGES_PER_CONVERSION = 4
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


# --- the counting proxy -------------------------------------------------------------------


class CountingProxy:
    """Forwards plain HTTP on loopback to the API server with a bearer token; counts requests."""

    def __init__(self, upstream: str, ca_file: Path, token: str):
        self.upstream = upstream
        self.ca_file = ca_file
        self.token = token
        self.counts: collections.Counter = collections.Counter()
        self.url = ""
        self._ready = threading.Event()

    def start(self) -> str:
        threading.Thread(target=self._serve, daemon=True, name="proxy").start()
        self._ready.wait(30)
        return self.url

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import ssl

        context = ssl.create_default_context(cafile=str(self.ca_file))
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=0),
                                        timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", lambda request: self._forward(session, request))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        await asyncio.Event().wait()

    async def _forward(self, session: aiohttp.ClientSession, request: web.Request):
        verb = "WATCH" if request.query.get("watch") in ("true", "1") else request.method
        self.counts[(verb, resource_of(request.path))] += 1
        headers = {key: value for key, value in request.headers.items()
                   if key.lower() in ("content-type", "accept")}
        headers["Authorization"] = f"Bearer {self.token}"
        body = await request.read()
        async with session.request(request.method, self.upstream + request.path_qs,
                                   data=body or None, headers=headers) as upstream:
            response = web.StreamResponse(status=upstream.status)
            response.content_type = upstream.content_type
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


def resource_of(path: str) -> str:
    """Return `resource[/subresource]` of an API path, e.g. modelconversions/status."""
    parts = [part for part in path.split("/") if part]
    if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
        rest = parts[parts.index("namespaces") + 2:]
    else:
        rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    return "/".join(rest[:1] + rest[2:3]) or path


# --- timing --------------------------------------------------------------------------------


class Timings:
    """First Job and Ready times per conversion, from watches of the admin client."""

    def __init__(self, api: KubeAPI):
        self.api = api
        self.created: dict[str, float] = {}
        self.first_job: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        # When Kopf's finalizer first showed on each conversion.
        self.finalized: dict[str, float] = {}
        self.stop = threading.Event()

    def start(self) -> None:
        for path, handle in ((f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", self._job),
                             (harness.conversions_path(NAMESPACE), self._conversion)):
            threading.Thread(target=self._watch, args=(path, handle), daemon=True).start()

    def _watch(self, path: str, handle) -> None:
        version = self.api.get(path)["metadata"]["resourceVersion"]
        while not self.stop.is_set():
            try:
                for event in self.api.watch(path, version, timeout_seconds=60):
                    version = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        handle(event, time.monotonic())
            except Exception:  # noqa: BLE001 - the cluster stops at the end of the run
                if self.stop.is_set():
                    return
                raise

    def _job(self, event: dict, now: float) -> None:
        name = event["object"]["metadata"]["labels"].get("modelconv.io/conversion")
        if event["type"] == "ADDED" and name:
            self.first_job.setdefault(name, now)

    def _conversion(self, event: dict, now: float) -> None:
        body = event["object"]
        if body["metadata"].get("finalizers"):
            self.finalized.setdefault(body["metadata"]["name"], now)
        if harness.condition(body, "Ready").get("status") == "True":
            self.ready.setdefault(body["metadata"]["name"], now)


def percentile(values: list[float], fraction: float):
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def _rounded(value):
    return None if value is None else round(value, 3)


def cpu_seconds(pid: int) -> float:
    """Return the user and system CPU time of a running process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


# --- the run -------------------------------------------------------------------------------


def prepare(api: KubeAPI, cluster: Cluster, workdir: Path) -> tuple[Path, CountingProxy]:
    """Install the CRD and RBAC; return a proxied kubeconfig for the operator's account."""
    harness.install_crd(api)
    api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": NAMESPACE}})
    wait_until(lambda: _has_default_account(api), 60, "the bench namespace to be ready")
    harness.grant_operator_rbac(api, NAMESPACE, LEASE)
    ensure_service_account(api, NAMESPACE, harness.OPERATOR_ACCOUNT)
    token = request_token(api, NAMESPACE, harness.OPERATOR_ACCOUNT)
    proxy = CountingProxy(cluster.credentials.server, cluster.ca_file, token)
    url = proxy.start()
    # The proxy adds the token; the kubeconfig names the proxy and nothing secret.
    kubeconfig = workdir / "operator.kubeconfig"
    write_kubeconfig(kubeconfig, Credentials(url, cluster.ca_file), "operator",
                     namespace=NAMESPACE)
    return kubeconfig, proxy


def _has_default_account(api: KubeAPI) -> bool:
    try:
        api.get(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default")
        return True
    except Exception:  # noqa: BLE001 - not there yet
        return False


def start_operator(kubeconfig: Path, store: Path, log_path: Path) -> subprocess.Popen:
    argv = [harness.MODELCONV, "operator", "--kubeconfig", str(kubeconfig),
            "--namespace", NAMESPACE, "--lease-namespace", NAMESPACE, "--lease-name", LEASE,
            "--store", str(store),
            "--stage-command", f"python {REPO_ROOT / 'bench' / 'noop_stage.py'}",
            "--metrics-port", "0", "--health-port", "0", "--log-format", "text",
            "--log-level", "warning"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBE")}
    log = open(log_path, "ab")
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def apply_conversions(api: KubeAPI, timings: Timings, count: int) -> None:
    for index in range(count):
        name = f"bench-{index:04d}"
        document = harness.conversion(name, width=index + 1)
        timings.created[name] = time.monotonic()
        harness.apply(api, NAMESPACE, document)


def report(count: int, timings: Timings, proxy: CountingProxy, rss: float, seconds: float,
           created_seconds: float) -> dict:
    names = [name for name in timings.created if name in timings.ready]
    to_job = [timings.first_job[name] - timings.created[name] for name in names
              if name in timings.first_job]
    to_ready = [timings.ready[name] - timings.created[name] for name in names]
    to_finalizer = [timings.finalized[name] - timings.created[name] for name in names
                    if name in timings.finalized]
    writes = {f"{verb} {resource}": number for (verb, resource), number in
              sorted(proxy.counts.items()) if verb in WRITE_VERBS}
    lease_writes = sum(number for (verb, resource), number in proxy.counts.items()
                       if verb in WRITE_VERBS and resource == "leases")
    total = sum(writes.values())
    return {
        "conversions": count,
        "ready": len(names),
        "create_seconds": round(created_seconds, 1),
        "wall_seconds": round(seconds, 1),
        "create_to_first_job_p50": _rounded(percentile(to_job, 0.5)),
        "create_to_first_job_p99": _rounded(percentile(to_job, 0.99)),
        "create_to_finalizer_p50": _rounded(percentile(to_finalizer, 0.5)),
        "create_to_finalizer_p99": _rounded(percentile(to_finalizer, 0.99)),
        "create_to_ready_p50": _rounded(percentile(to_ready, 0.5)),
        "create_to_ready_p99": _rounded(percentile(to_ready, 0.99)),
        "operator_peak_rss_mib": round(rss, 1),
        "writes_total": total,
        "writes_leases": lease_writes,
        "writes_per_conversion": round((total - lease_writes) / count, 2),
        "writes_per_stage": round((total - lease_writes) / (count * STAGES_PER_CONVERSION), 2),
        "writes_by_request": writes,
        "reads_by_request": {f"{verb} {resource}": number for (verb, resource), number in
                             sorted(proxy.counts.items()) if verb not in WRITE_VERBS},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=500, help="conversions (default 500)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds to wait for all conversions to be Ready")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="modelconv-bench-"))
    with Cluster() as cluster, NodeAgentProcess(cluster.kubeconfig):
        api = cluster.api()
        kubeconfig, proxy = prepare(api, cluster, workdir)
        operator = start_operator(kubeconfig, workdir / "store", workdir / "operator.log")
        try:
            wait_until(lambda: _holds_lease(api), 120, "the operator to take its Lease")
            timings = Timings(api)
            timings.start()
            began = time.monotonic()
            apply_conversions(api, timings, args.count)
            created = time.monotonic() - began
            try:
                wait_until(lambda: len(timings.ready) >= args.count, args.timeout,
                           f"{args.count} conversions to be Ready", interval=1.0)
            except TimeoutError as error:
                # Report what finished; `ready` in the figures says how many.
                print(f"warning: {error}", file=sys.stderr)
            elapsed = time.monotonic() - began
            figures = report(args.count, timings, proxy, peak_rss_mib(operator.pid),
                             elapsed, created)
            figures["operator_cpu_seconds"] = round(cpu_seconds(operator.pid), 1)
            timings.stop.set()
            print(json.dumps(figures, indent=2), flush=True)
            if args.json:
                args.json.write_text(json.dumps(figures, indent=2) + "\n")
        finally:
            operator.terminate()
            operator.wait(60)
            # The store holds one small result.json per stage; only the log is kept.
            shutil.rmtree(workdir / "store", ignore_errors=True)
            print(f"operator log: {workdir / 'operator.log'}", file=sys.stderr)
    return 0


def _holds_lease(api: KubeAPI) -> bool:
    try:
        lease = api.get(f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{LEASE}")
    except Exception:  # noqa: BLE001 - not created yet
        return False
    return bool(lease["spec"].get("holderIdentity"))


if __name__ == "__main__":
    sys.exit(main())
