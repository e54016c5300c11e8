"""A run stopped after the release manifest was written, before the index and channels.

The version is then published (`verify` accepts it), so the run must report that and not claim
that nothing was published. Running the same file again finishes the index entry and the
channels without converting again, in a folder store and in S3 alike.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from modelconv.store import open_store
from new_user_runs import MODELCONV, linear_document, run_modelconv, write_document

# Bound on the wait for the run to reach the manifest (the linear model converts in seconds).
MANIFEST_WAIT_POLLS = 1200
POLL_SECONDS = 0.25


def channel_document() -> dict:
    document = linear_document()
    document["spec"]["publish"]["channels"] = ["stable"]
    return document


def releases_of(store_url: str, cwd: Path) -> dict:
    listed = run_modelconv("releases", f"{store_url}/linear", "--output", "json", cwd=cwd)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    return json.loads(listed.stdout)


def assert_rerun_finishes_release(conversion: Path, store_url: str, cwd: Path) -> None:
    rerun = run_modelconv("run", conversion, "--store", store_url, "--output", "json", cwd=cwd)

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "VersionExists" not in rerun.stdout + rerun.stderr
    document = json.loads(rerun.stdout)
    # Nothing converted again: the only stage is the publish that finished the index.
    assert [stage["stage"] for stage in document["stages"]] == ["publish"]
    assert document["release"]["channels"] == ["stable"]
    catalog = releases_of(store_url, cwd)
    assert [entry["version"] for entry in catalog["versions"]] == ["1.0.0"]
    assert catalog["channels"]["stable"]["version"] == "1.0.0"
    assert catalog["unindexed"] == []


@pytest.mark.slow
def test_interrupt_after_manifest_then_rerun(tmp_path):
    conversion = write_document(tmp_path / "conversion.yaml", channel_document())
    store = tmp_path / "releases"
    model_folder = store / "linear"
    model_folder.mkdir(parents=True)
    environment = dict(os.environ, AWS_EC2_METADATA_DISABLED="true")

    # The folder store updates index.json under an flock on the model folder: holding it
    # stops the run between the manifest and the index, where a user's Ctrl-C lands.
    lock = os.open(model_folder, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        process = subprocess.Popen(
            [MODELCONV, "run", str(conversion), "--store", str(store), "--output", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
            cwd=tmp_path,
        )
        manifest = model_folder / "1.0.0" / "manifest.json"
        for _ in range(MANIFEST_WAIT_POLLS):
            if manifest.exists() or process.poll() is not None:
                break
            time.sleep(POLL_SECONDS)
        assert manifest.exists(), "the run never wrote its manifest"
        time.sleep(1)  # The run is now waiting for the index lock.
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        os.close(lock)

    assert process.returncode == 130, stdout + stderr
    assert "nothing was published" not in stderr.lower()
    assert "is published" in stderr
    assert "index.json" in stderr
    assert "channel stable" in stderr
    document = json.loads(stdout)
    assert document["outcome"] == "interrupted"
    assert document["exit_code"] == 130
    assert document["model"] == "linear"
    assert document["version"] == "1.0.0"
    assert "is published" in document["message"]
    # The stages that finished before the stop, and where their files and the report are.
    assert [entry["stage"] for entry in document["stages"]] == ["export", "convert", "validate"]
    kept_workdir = Path(document["workdir"])
    report = json.loads((kept_workdir / "report.json").read_text())
    assert report["succeeded"] is False
    assert report["reason"] == "Interrupted"
    assert f"the report and the files made so far are in {kept_workdir}" in stderr
    verified = run_modelconv("verify", model_folder / "1.0.0", cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    assert_rerun_finishes_release(conversion, str(store), tmp_path)


@pytest.mark.slow
def test_failed_index_write_then_rerun(tmp_path):
    conversion = write_document(tmp_path / "conversion.yaml", channel_document())
    store = tmp_path / "releases"
    # A folder where index.json belongs makes the index write fail after the manifest.
    blocker = store / "linear" / "index.json"
    blocker.mkdir(parents=True)

    failed = run_modelconv("run", conversion, "--store", store, "--workdir", tmp_path / "w",
                           cwd=tmp_path)

    output = failed.stdout + failed.stderr
    assert failed.returncode == 1, output
    assert "Nothing was published" not in output
    assert "is published (its manifest.json is written)" in output
    assert "Run the same `modelconv run` command again" in output
    # The store's temporary file names are internal: the message gives the cause only.
    assert ".tmp" not in output
    report = (tmp_path / "w" / "report.html").read_text(encoding="utf-8")
    assert "Nothing was published" not in report
    assert "but not yet in its index" in report

    blocker.rmdir()
    listed = run_modelconv("releases", store / "linear", cwd=tmp_path)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "1.0.0: published (manifest.json exists) but not in index.json" in listed.stdout
    assert_rerun_finishes_release(conversion, str(store), tmp_path)


@pytest.mark.slow
def test_s3_rerun_finishes_index(tmp_path, s3_server, s3_bucket, monkeypatch):
    for name, value in s3_server.client_env().items():
        monkeypatch.setenv(name, value)
    conversion = write_document(tmp_path / "conversion.yaml", channel_document())
    store_url = f"s3://{s3_bucket}/releases"
    first = run_modelconv("run", conversion, "--store", store_url, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    # Leave the state of a publish stopped right after its manifest.
    client = s3_server.client()
    for key in ("releases/linear/index.json", "releases/linear/channels/stable.json"):
        client.delete_object(Bucket=s3_bucket, Key=key)
    assert open_store(store_url).head("linear/1.0.0/manifest.json") is not None
    assert releases_of(store_url, tmp_path)["unindexed"] == ["1.0.0"]

    assert_rerun_finishes_release(conversion, store_url, tmp_path)


@pytest.mark.slow
def test_rerun_of_complete_release_fails(tmp_path):
    conversion = write_document(tmp_path / "conversion.yaml", channel_document())
    store = tmp_path / "releases"
    first = run_modelconv("run", conversion, "--store", store, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr

    again = run_modelconv("run", conversion, "--store", store, cwd=tmp_path)

    assert again.returncode == 1
    assert "VersionExists" in again.stdout + again.stderr
