"""An S3 server on loopback for tests: moto's standalone server in a child process.

Clients reach it over HTTP at `endpoint_url` with fixed test credentials. moto checks no
signatures, but it does implement the S3 semantics the product relies on, conditional
writes included (If-None-Match: * and If-Match with an ETag).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import requests

from testenv.processes import ManagedProcess, free_port, remove_dir_at_exit, wait_until

REGION = "us-east-1"
ACCESS_KEY_ID = "testenv-access-key"
SECRET_ACCESS_KEY = "testenv-secret-key"
START_TIMEOUT = 60.0


class S3Server:
    """A running moto server; use `start()` and `stop()`, or `with S3Server() as s3`."""

    def __init__(self) -> None:
        self.process: ManagedProcess | None = None
        self.endpoint_url = ""
        self._workdir: Path | None = None
        self._remove_workdir = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> S3Server:
        self._workdir = Path(tempfile.mkdtemp(prefix="modelconv-s3-"))
        self._remove_workdir = remove_dir_at_exit(self._workdir)
        port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{port}"
        moto_server = shutil.which("moto_server", path=str(Path(sys.executable).parent))
        argv = [moto_server] if moto_server else [sys.executable, "-m", "moto.server"]
        self.process = ManagedProcess(
            "moto-server", [*argv, "--host", "127.0.0.1", "--port", str(port)],
            self._workdir / "moto-server.log", cwd=self._workdir,
        )
        try:
            wait_until(self._responds, START_TIMEOUT, f"the S3 server at {self.endpoint_url}",
                       process=self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self._remove_workdir is not None:
            self._remove_workdir()
            self._remove_workdir = None

    def _responds(self) -> bool:
        try:
            with requests.Session() as session:
                session.trust_env = False
                return session.get(self.endpoint_url + "/", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def client_env(self) -> dict[str, str]:
        """Environment variables that point AWS SDKs (boto3, the AWS CLI) at this server.

        They also turn off the EC2 instance-metadata lookup, so no client ever tries the
        link-local metadata address for credentials or a region.
        """
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self):
        """Return a boto3 S3 client for this server, with explicit endpoint and credentials."""
        import boto3  # Imported here: only S3 tests pay for loading boto3.

        session = boto3.session.Session(
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name=REGION,
        )
        return session.client("s3", endpoint_url=self.endpoint_url)
