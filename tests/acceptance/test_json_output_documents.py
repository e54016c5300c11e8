"""`modelconv run --output json` prints one document with every documented key, in every case."""

from __future__ import annotations

import json

from new_user_runs import run_modelconv

# The keys docs/run.md lists for the `--output json` document.
DOCUMENTED_KEYS = {
    "succeeded", "outcome", "exit_code", "reason", "message", "file", "name", "model", "version",
    "store", "stages", "skipped", "release", "report", "workdir",
}


def test_invalid_file_json_has_all_keys(tmp_path):
    conversion = tmp_path / "conversion.yaml"
    conversion.write_text("apiVersion: modelconv.io/v1alpha1\nkind: ModelConversion\n")

    result = run_modelconv("run", conversion, "--output", "json", "--store", tmp_path / "s",
                           cwd=tmp_path)

    assert result.returncode == 2, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert DOCUMENTED_KEYS <= set(document), DOCUMENTED_KEYS - set(document)
    assert document["exit_code"] == 2
    assert document["outcome"] == "failed"
    assert document["reason"] == "InvalidSpec"
    assert document["store"] == str(tmp_path / "s")
    assert document["name"] is None
    assert document["release"] is None
