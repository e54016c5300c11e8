"""Helpers of the store and release tests: test files, request counting, a moto server of
a test's own."""

from __future__ import annotations

import collections
import json
import os
import random
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Optional

from testenv.processes import ManagedProcess, free_port, wait_until
from testenv.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

SERVER_START_TIMEOUT = 60.0


def write_random_file(path: Path, size: int, seed: int) -> Path:
    """Write `size` pseudo-random bytes derived from `seed` (reproducible, incompressible)."""
    generator = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(generator.randbytes(size))
    return path


def release_files(folder: Path, seed: int, package_size: int = 4096) -> dict[str, Path]:
    """Return a small set of release files whose bytes depend on `seed`."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "model.mlpackage.zip": write_random_file(
            folder / "model.mlpackage.zip", package_size, seed
        ),
        "model.onnx": write_random_file(folder / "model.onnx", 2048, seed + 1),
    }
    report = folder / "report.json"
    report.write_text(json.dumps({"seed": seed}))
    files["report.json"] = report
    return files


class RequestCounter:
    """Counts the HTTP requests an S3 client sends, by operation name, retries included."""

    def __init__(self, client) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        client.meta.events.register("before-send.s3.*", self._count)

    def _count(self, request, event_name: str, **_) -> None:
        operation = event_name.rpartition(".")[2]
        with self._lock:
            self.counts[operation] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class MotoProcess:
    """A moto server of a test's own, on a fixed loopback port so it can be restarted.

    moto keeps its state in memory and loses it when it stops. With `record=True`, moto's
    request recorder appends every request to a file in `workdir`, and `replay()` sends
    them to the restarted server again to rebuild that state.
    """

    def __init__(self, workdir: Path, *, record: bool = False) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.recording = workdir / "moto-recording.jsonl"
        self.record = record
        self.process: Optional[ManagedProcess] = None

    def start(self) -> "MotoProcess":
        env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        if self.record:
            env.update(MOTO_ENABLE_RECORDING="True", MOTO_RECORDER_FILEPATH=str(self.recording))
        argv = [sys.executable, "-m", "moto.server",
                "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = ManagedProcess("moto-server", argv, self.workdir / "moto.log",
                                      env=env, cwd=self.workdir)
        wait_until(self._responds, SERVER_START_TIMEOUT, f"moto at {self.endpoint_url}",
                   process=self.process)
        return self

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def replay(self) -> int:
        """Send the recorded requests to this (restarted) server again.

        A server killed while recording leaves a torn last line, and parallel requests can
        interleave their lines. Lines that are not valid JSON are dropped first, and their
        number is returned; they belong to requests that were cut off by the kill.
        """
        kept, dropped = [], 0
        for line in self.recording.read_text().splitlines():
            try:
                json.loads(line)
            except ValueError:
                dropped += 1
                continue
            kept.append(line)
        self.recording.write_text("".join(line + "\n" for line in kept))
        self.post("/moto-api/recorder/replay-recording", b"")
        return dropped

    def require_auth(self) -> None:
        """Make the server check signatures and IAM policies of every later request."""
        self.post("/moto-api/reset-auth", b"0")

    def post(self, path: str, data: bytes) -> bytes:
        # A form content type would make moto's Flask app parse the body away.
        request = urllib.request.Request(self.endpoint_url + path, data=data, method="POST",
                                         headers={"Content-Type": "text/plain"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=120) as response:
            return response.read()

    def client(self, service: str = "s3", **credentials):
        import boto3

        session = boto3.session.Session(
            aws_access_key_id=credentials.get("access_key_id", ACCESS_KEY_ID),
            aws_secret_access_key=credentials.get("secret_access_key", SECRET_ACCESS_KEY),
            region_name=REGION,
        )
        return session.client(service, endpoint_url=self.endpoint_url)

    def _responds(self) -> bool:
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(self.endpoint_url + "/", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False
