"""Running the same file again after a publish was interrupted.

Ctrl-C during the publish stage can leave the first release files in the version folder
without a manifest. The report files of a rerun always differ (they record times), so the
rerun must take the unfinished version over rather than expect the same bytes.
"""

from __future__ import annotations

import json
import shutil

import pytest

from modelconv.store import open_store
from new_user_runs import linear_document, run_modelconv, write_document


@pytest.mark.slow
def test_rerun_after_interrupted_publish_publishes(tmp_path):
    conversion = write_document(tmp_path / "conversion.yaml", linear_document())

    # An earlier run of this file stands in for the run that was interrupted: its package is
    # what the interrupted publish had uploaded before the stop.
    earlier = run_modelconv("run", conversion, "--store", tmp_path / "earlier", cwd=tmp_path)
    assert earlier.returncode == 0, earlier.stdout + earlier.stderr
    leftover = tmp_path / "releases" / "linear" / "1.0.0"
    leftover.mkdir(parents=True)
    shutil.copyfile(
        tmp_path / "earlier" / "linear" / "1.0.0" / "model.mlpackage.zip",
        leftover / "model.mlpackage.zip",
    )

    rerun = run_modelconv("run", conversion, "--store", tmp_path / "releases", cwd=tmp_path)

    assert "VersionExists" not in rerun.stdout + rerun.stderr, rerun.stdout
    assert rerun.returncode == 0
    assert (leftover / "manifest.json").is_file()
    verified = run_modelconv("verify", leftover, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.mark.slow
def test_rerun_after_interrupted_publish_to_s3_publishes(tmp_path, s3_server, s3_bucket,
                                                         monkeypatch):
    for name, value in s3_server.client_env().items():
        monkeypatch.setenv(name, value)
    conversion = write_document(tmp_path / "conversion.yaml", linear_document())
    earlier = run_modelconv("run", conversion, "--store", tmp_path / "earlier", cwd=tmp_path)
    assert earlier.returncode == 0, earlier.stdout + earlier.stderr
    # The leftover of the interrupted publish: the first files, with other bytes than a rerun's.
    store_url = f"s3://{s3_bucket}/releases"
    store = open_store(store_url)
    for name in ("model.mlpackage.zip", "model.onnx", "report.html"):
        store.put_file(f"linear/1.0.0/{name}", tmp_path / "earlier" / "linear" / "1.0.0" / name)

    rerun = run_modelconv("run", conversion, "--store", store_url, cwd=tmp_path)

    assert "VersionExists" not in rerun.stdout + rerun.stderr, rerun.stdout
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    verified = run_modelconv("verify", f"{store_url}/linear/1.0.0", cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    manifest = json.loads(store.get_bytes("linear/1.0.0/manifest.json"))
    # The report always differs between runs, so it went to a content-addressed key.
    assert manifest["files"]["report.html"]["key"].startswith("objects/sha256-")
    assert store.get_bytes("linear/1.0.0/report.html") == store.get_bytes(
        f"linear/1.0.0/{manifest['files']['report.html']['key']}"
    )
