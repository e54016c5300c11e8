"""A .pt2 file must never make `modelconv run` execute pickled code.

torch.export.load (torch 2.13) reads each constant listed in the archive's constants config.
A constant whose `path_name` starts with `opaque_obj_` is read with `pickle.loads`. The
archive member that contains it is addressed by `path_name`, so a path such as
`opaque_obj_x/../tensor_x` keeps the prefix that selects `pickle.loads` while the member's
own last segment (`tensor_x`) does not carry it.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import torch

from new_user_runs import linear_document, run_modelconv, write_document

HIDDEN_PATH = "opaque_obj_x/../tensor_x"


class MarkerWriter:
    """Unpickling this object runs `touch MARKER`: proof that a loader ran pickled code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class LinearWithConstant(torch.nn.Module):
    """A linear layer plus a plain tensor attribute, which torch.export lifts to a constant."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.offset = torch.ones(2)

    def forward(self, x):
        return self.linear(x) + self.offset


def write_pt2_with_hidden_pickle(path: Path, marker: Path) -> None:
    """Save a real ExportedProgram, then point its constant at a pickle behind HIDDEN_PATH."""
    saved = path.with_name("saved.pt2")
    program = torch.export.export(LinearWithConstant(), (torch.randn(1, 4),))
    torch.export.save(program, saved)
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(path, "w") as target:
        root = source.namelist()[0].split("/")[0]
        for name in source.namelist():
            data = source.read(name)
            if name.endswith("data/constants/model_constants_config.json"):
                config = json.loads(data)
                config["config"]["offset"] = {
                    "path_name": HIDDEN_PATH, "is_param": False, "use_pickle": True,
                    "tensor_meta": None,
                }
                data = json.dumps(config).encode()
            target.writestr(name, data)
        target.writestr(f"{root}/data/constants/{HIDDEN_PATH}", pickle.dumps(MarkerWriter(marker)))


def test_pt2_hidden_opaque_pickle_never_runs(tmp_path):
    marker = tmp_path / "unpickled.marker"
    archive = tmp_path / "model.pt2"
    write_pt2_with_hidden_pickle(archive, marker)
    spec = linear_document(source={"exportedProgram": {"uri": str(archive)}})
    conversion = write_document(tmp_path / "conversion.yaml", spec)

    result = run_modelconv("run", conversion, "--store", tmp_path / "releases", cwd=tmp_path)

    assert not marker.exists(), "modelconv unpickled an opaque object from the .pt2 file"
    assert result.returncode == 2, result.stderr
    assert "InvalidModel" in result.stdout + result.stderr
