"""Benchmark: publishing a large release with modelconv against a plain boto3 upload.

Both transfer the same file of random bytes (500 MB by default) to the same moto server on
loopback, in alternating order over several rounds. Each transfer runs in a fresh child
process, which reports the wall time of the transfer alone and its peak resident memory.

- modelconv: `publish_release` with one file: checking for an existing release, the
  multipart upload with SHA-256 part checksums, the whole-file SHA-256 computed on the way,
  and If-None-Match on completion, then manifest.json and index.json;
- boto3: `client.upload_file` with boto3's default TransferConfig (8 MiB parts, 10
  threads, its default CRC32 checksums).

moto keeps objects in memory, so every round deletes what it uploaded.

    python bench/publish.py [--size-mb 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BUCKET = "bench-releases"
ACCESS_KEY_ID = "bench-access-key"
SECRET_ACCESS_KEY = "bench-secret-key"
TARGET_RATIO = 1.2

CHILD = r"""
import json, resource, sys, time
from pathlib import Path

method, path, endpoint, round_id = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
if method == "modelconv":
    from modelconv.release import publish_release
    from modelconv.store import open_store

    store = open_store(f"s3://{BUCKET}/bench")
    store.client  # create the client before timing, as boto3 does below
    transfer = lambda: publish_release(
        store, model="large", version=f"r{round_id}",
        files={"model.mlpackage.zip": path}, manifest={},
    )
else:
    import boto3

    client = boto3.session.Session().client("s3", endpoint_url=endpoint)
    transfer = lambda: client.upload_file(str(path), BUCKET, f"plain/r{round_id}/model.zip")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
transfer()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "rss_before_mb": before / 1024, "rss_peak_mb": peak / 1024}))
""".replace("BUCKET", repr(BUCKET))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client_env(endpoint: str) -> dict[str, str]:
    """Fake static credentials and an explicit loopback endpoint; no metadata lookups."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
        AWS_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        MODELCONV_S3_ENDPOINT=endpoint,
    )
    return env


def start_moto(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(workdir / "moto.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for _ in range(600):
        try:
            with opener.open(endpoint + "/", timeout=2):
                return server, endpoint
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit(f"moto did not start; see {workdir / 'moto.log'}")


def write_random_file(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 16 * 1024 * 1024))
            out.write(chunk)
            remaining -= len(chunk)


def run_child(method: str, path: Path, endpoint: str, round_id: int, env: dict) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, method, str(path), endpoint, str(round_id)],
        capture_output=True, text=True, env=env, timeout=1800,
    )
    if result.returncode != 0:
        raise SystemExit(f"{method} transfer failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def delete_everything(client) -> None:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    for page in pages:
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500, help="file size in MB (10^6 bytes)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs both methods")
    args = parser.parse_args()

    import boto3

    with tempfile.TemporaryDirectory(prefix="modelconv-bench-") as scratch:
        workdir = Path(scratch)
        server, endpoint = start_moto(workdir)
        env = client_env(endpoint)
        os.environ.update(env)
        try:
            client = boto3.session.Session().client("s3", endpoint_url=endpoint)
            client.create_bucket(Bucket=BUCKET)
            path = workdir / "model.mlpackage.zip"
            write_random_file(path, args.size_mb * 1_000_000)
            results = {"modelconv": [], "boto3": []}
            for round_id in range(args.rounds):
                # Alternate which method goes first, so drift affects both alike.
                order = ("modelconv", "boto3") if round_id % 2 == 0 else ("boto3", "modelconv")
                for method in order:
                    figures = run_child(method, path, endpoint, round_id, env)
                    results[method].append(figures)
                    delete_everything(client)
                    print(f"round {round_id + 1} {method:9s} {figures['seconds']:7.2f} s  "
                          f"peak RSS {figures['rss_peak_mb']:6.0f} MB", flush=True)
        finally:
            server.terminate()
            server.wait(30)
    report(results, args.size_mb)


def report(results: dict, size_mb: int) -> None:
    medians = {method: statistics.median(r["seconds"] for r in runs)
               for method, runs in results.items()}
    ratio = medians["modelconv"] / medians["boto3"]
    print(f"\n{size_mb} MB, {len(results['boto3'])} rounds, median seconds:")
    for method, runs in results.items():
        peak = max(r["rss_peak_mb"] for r in runs)
        before = max(r["rss_before_mb"] for r in runs)
        print(f"  {method:9s} {medians[method]:7.2f} s  {size_mb / medians[method]:6.1f} MB/s  "
              f"peak RSS {peak:.0f} MB (process before transfer: {before:.0f} MB)")
    verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
    print(f"ratio modelconv / boto3: {ratio:.2f}x ({verdict} the {TARGET_RATIO}x target)")


if __name__ == "__main__":
    main()
