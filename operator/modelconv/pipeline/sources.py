"""Fetching a model source to a local file and loading it without unpickling untrusted data.

Four kinds of source, one loader each:

- `exportedProgram` (.pt2): `torch.export.load`, after the archive was checked to hold no
  pickled Python objects, and with `torch.load` forced to `weights_only` while it runs;
- `torchscript`: `torch.jit.load`, which reads TorchScript code and tensors, never Python
  pickles of arbitrary objects;
- `onnx`: `onnx.load` of one self-contained file under the protobuf size limit, then
  `onnx.checker`; `onnx2torch` builds a torch module only when a stage needs one;
- `factory`: an importable `module:function`, seeded, with optional weights from safetensors or
  `torch.load(weights_only=True)`, matched to the module's keys strictly.

A raw pickle is rejected whatever kind it claims to be, with what to save instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any, Optional
from urllib.parse import unquote, urlparse

from ..errors import (
    ACCESS_DENIED,
    INVALID_MODEL,
    SOURCE_NOT_FOUND,
    STORE_UNAVAILABLE,
    UNSUPPORTED_OPERATOR,
    ConversionError,
    plain_message,
)
from ..spec import ConversionSpec, FactorySource, FileSource
from .factory_import import import_factory
from .onnx_signature import check_onnx_inputs, check_onnx_outputs

# Protocol 2 and later pickles start with the PROTO opcode followed by the protocol number.
PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
ZIP_MAGIC = b"PK\x03\x04"
# The reason in a failed weights-only torch.load, e.g. "Unsupported global: GLOBAL
# torch.nn.modules.linear.Linear was not an allowed global by default" (torch 2.13).
WEIGHTS_UNPICKLER_ERROR = re.compile(r"WeightsUnpickler error: (.+?)(?:\.\s|\.?$)", re.MULTILINE)
# Protobuf messages cannot exceed 2 GiB, so neither can a self-contained ONNX file.
MAX_ONNX_BYTES = 2 * 1024**3
# Constants that a .pt2 archive stores as Python or TorchBind pickles (names from
# torch.export.pt2_archive.constants in torch 2.13).
PT2_PICKLED_OBJECT_PREFIXES = ("custom_obj_", "opaque_obj_")


@dataclasses.dataclass
class LoadedSource:
    """A loaded model: a torch module, plus the ONNX file or ExportedProgram it came from."""

    kind: str
    sha256: str
    module: Any = None
    exported_program: Any = None
    onnx_path: Optional[Path] = None
    # The spec's output names, in spec order, for an ONNX source: its torch module returns
    # the graph's outputs in this order, whatever the graph's own order is.
    onnx_outputs: tuple[str, ...] = ()
    _onnx_module: Any = None

    def torch_module(self):
        """Return a torch module; an ONNX source is converted with onnx2torch on first use."""
        if self.module is not None:
            return self.module
        if self._onnx_module is None:
            self._onnx_module = onnx_to_torch(self.onnx_path, self.onnx_outputs)
        return self._onnx_module


def load_source(spec: ConversionSpec, workdir: Path) -> LoadedSource:
    """Fetch and load `spec.source`.

    Raises `ConversionError` with reason SourceNotFound (missing file or object),
    InvalidModel (checksum mismatch, unreadable or unsafe file, weights that do not match),
    AccessDenied, or StoreUnavailable (transient: S3 unreachable); `InvalidSpec` for a
    factory that cannot be imported.
    """
    source = spec.source
    kind = source.kind
    if kind == "factory":
        return _load_factory(source.factory, workdir)

    field = f"source.{_camel(kind)}"
    path = fetch_file(getattr(source, kind), workdir / "source", field)
    digest = file_sha256(path)
    if kind == "exported_program":
        program = load_exported_program(path, field)
        return LoadedSource(kind, digest, module=program.module(), exported_program=program)
    if kind == "torchscript":
        return LoadedSource(kind, digest, module=load_torchscript(path, field))
    model = check_onnx_file(path, field)
    check_onnx_inputs(model, spec.inputs)
    output_names = [output.name for output in spec.outputs]
    check_onnx_outputs(model, output_names)
    return LoadedSource(kind, digest, onnx_path=path, onnx_outputs=tuple(output_names))


# --- fetching ---------------------------------------------------------------------------


def fetch_file(source: FileSource, directory: Path, field: str) -> Path:
    """Return a local path of `source.uri` (downloading s3:// objects) after its sha256 check."""
    uri = source.uri
    if uri.startswith("s3://"):
        path = _download_s3(uri, directory, field)
    else:
        path = Path(unquote(urlparse(uri).path)) if uri.startswith("file://") else Path(uri)
        if path.is_dir():
            raise ConversionError(
                SOURCE_NOT_FOUND,
                f"{field}.uri: {path} is a directory; give the path of {_file_kind(field)}"
                " inside it",
            )
        if not path.is_file():
            raise ConversionError(
                SOURCE_NOT_FOUND,
                f"{field}.uri: file not found: {path}; check the path"
                " (a relative path is read from the working directory)",
            )
    if source.sha256:
        actual = file_sha256(path)
        if actual != source.sha256:
            raise ConversionError(
                INVALID_MODEL,
                f"{field}.sha256: the file {uri} has sha256 {actual}, expected {source.sha256};"
                " fix the file or update the checksum",
            )
    return path


def _file_kind(field: str) -> str:
    if field.startswith("validation.samplesFile"):
        return "the samples file (.safetensors or .npz)"
    if field.endswith("weights"):
        return "the weights file"
    return "the model file (for example model.onnx)"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_s3(uri: str, directory: Path, field: str) -> Path:
    """Download one object with boto3's default credential chain.

    MODELCONV_S3_ENDPOINT (or AWS_ENDPOINT_URL), when set, points the client at another
    S3-compatible server, as it does for the release store.
    """
    import boto3
    import botocore.exceptions

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / Path(key).name
    endpoint = os.environ.get("MODELCONV_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
    client = boto3.client("s3", endpoint_url=endpoint or None)
    try:
        client.download_file(bucket, key, str(path))
    except botocore.exceptions.ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
            raise ConversionError(
                SOURCE_NOT_FOUND, f"{field}.uri: no object at {uri}; check the bucket and key"
            ) from None
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise ConversionError(
                ACCESS_DENIED,
                f"{field}.uri: access to {uri} was denied ({code}); grant s3:GetObject to the"
                " credentials the stage runs with",
            ) from None
        raise ConversionError(
            STORE_UNAVAILABLE, f"{field}.uri: reading {uri} failed: {code}", permanent=False
        ) from None
    except botocore.exceptions.NoCredentialsError:
        raise ConversionError(
            ACCESS_DENIED,
            f"{field}.uri: no AWS credentials found to read {uri}; set AWS_ACCESS_KEY_ID and"
            " AWS_SECRET_ACCESS_KEY, a profile, or a role",
        ) from None
    except (botocore.exceptions.BotoCoreError, OSError) as error:
        raise ConversionError(
            STORE_UNAVAILABLE,
            f"{field}.uri: reading {uri} failed: {type(error).__name__}",
            permanent=False,
        ) from None
    return path


# --- format checks ----------------------------------------------------------------------


def _reject_pickle(path: Path, field: str, what: str, remedy: str) -> None:
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head[:2] in PICKLE_MAGIC:
        raise ConversionError(
            INVALID_MODEL,
            f"{field}: {path.name} is a Python pickle, not {what}; modelconv never unpickles"
            f" model files because unpickling can run arbitrary code. {remedy}",
        )
    if head != ZIP_MAGIC:
        raise ConversionError(
            INVALID_MODEL, f"{field}: {path.name} is not {what} (not a zip archive). {remedy}"
        )


def _zip_names(path: Path, field: str) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except zipfile.BadZipFile as error:
        raise ConversionError(INVALID_MODEL, f"{field}: {path.name}: {error}") from None


def load_exported_program(path: Path, field: str):
    """Load a .pt2 ExportedProgram that holds only tensors and the serialized graph."""
    import torch

    remedy = "Save the program with torch.export.save(torch.export.export(model, args), path)."
    _reject_pickle(path, field, "a torch.export archive (.pt2)", remedy)
    names = _zip_names(path, field)
    # A segment anywhere in a member name counts: torch resolves "opaque_obj_x/../tensor" too.
    pickled = [
        name for name in names
        if any(part.startswith(PT2_PICKLED_OBJECT_PREFIXES) for part in Path(name).parts)
    ]
    pickled += _pickled_config_entries(path, names)
    if pickled:
        raise ConversionError(
            INVALID_MODEL,
            f"{field}: {path.name} stores Python objects as pickles ({', '.join(pickled[:3])});"
            " modelconv loads only tensor constants. Turn custom objects into tensors or"
            " buffers before exporting.",
        )
    if not any(name.endswith("/archive_format") for name in names):
        raise ConversionError(
            INVALID_MODEL,
            f"{field}: {path.name} is not in the torch.export archive format of torch 2.9 or"
            f" later. {remedy}",
        )
    try:
        with _weights_only_loads():
            return torch.export.load(str(path))
    except Exception as error:  # torch raises many types for a corrupt or foreign archive
        raise ConversionError(
            INVALID_MODEL, f"{field}: cannot load {path.name}: {_first_line(error)}. {remedy}"
        ) from None


def _pickled_config_entries(path: Path, names: list[str]) -> list[str]:
    """Return the weights and constants entries that torch.export.load would unpickle.

    torch 2.13 picks `pickle.loads` for an entry whose config says `use_pickle`, outside the
    weights-only guard, so such an entry is rejected before torch reads the archive.
    """
    found = []
    with zipfile.ZipFile(path) as archive:
        for name in names:
            if "/data/" not in name or not name.endswith("_config.json"):
                continue
            try:
                config = json.loads(archive.read(name))
            except (ValueError, UnicodeDecodeError):
                found.append(name)  # unreadable config: torch's reading of it is unknown
                continue
            entries = config.get("config", {}) if isinstance(config, dict) else {}
            for key, entry in (entries.items() if isinstance(entries, dict) else []):
                entry = entry if isinstance(entry, dict) else {}
                path_name = str(entry.get("path_name", ""))
                if entry.get("use_pickle") or ".." in path_name or any(
                    part.startswith(PT2_PICKLED_OBJECT_PREFIXES) for part in path_name.split("/")
                ):
                    found.append(f"{name}:{key}")
    return found


@contextlib.contextmanager
def _weights_only_loads():
    """Force every `torch.load` to `weights_only=True`, even where a caller asks otherwise.

    torch.export.load reads pickled tensor payloads with `weights_only=False`; torch honors
    TORCH_FORCE_WEIGHTS_ONLY_LOAD over the argument (torch/serialization.py, torch 2.13).
    """
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


def load_torchscript(path: Path, field: str):
    """Load a TorchScript archive; a `torch.save` archive of a Python module is rejected."""
    import torch

    remedy = "Save the model with torch.jit.save(torch.jit.script(model), path) or use a factory."
    _reject_pickle(path, field, "a TorchScript archive", remedy)
    names = _zip_names(path, field)
    if not any("/code/" in name for name in names):
        raise ConversionError(
            INVALID_MODEL,
            f"{field}: {path.name} is a torch.save archive of Python objects, not TorchScript;"
            f" modelconv does not unpickle it. {remedy}",
        )
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as error:
        raise ConversionError(
            INVALID_MODEL, f"{field}: cannot load {path.name}: {_first_line(error)}. {remedy}"
        ) from None
    return module.eval()


def check_onnx_file(path: Path, field: str):
    """Load and check a self-contained ONNX file; return the `onnx.ModelProto`."""
    import onnx

    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise ConversionError(
            INVALID_MODEL,
            f"{field}: {path.name} is {size} bytes; an ONNX file must be under 2 GiB"
            " (the protobuf limit)",
        )
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises DecodeError, onnx raises its own types
        raise ConversionError(
            INVALID_MODEL, f"{field}: {path.name} is not a valid ONNX file: {_first_line(error)}"
        ) from None
    if any(
        entry.key == "location"
        for tensor in model.graph.initializer
        for entry in tensor.external_data
    ):
        raise ConversionError(
            INVALID_MODEL,
            f"{field}: {path.name} keeps its weights in external files; save it as one file"
            " with onnx.save(model, path, save_as_external_data=False)",
        )
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        raise ConversionError(
            INVALID_MODEL, f"{field}: {path.name} fails onnx.checker: {_first_line(error)}"
        ) from None
    return model


def onnx_to_torch(path: Path, output_order: tuple[str, ...] = ()):
    """Convert an ONNX file to a torch.fx module with onnx2torch.

    With `output_order`, the module returns the graph's outputs in the order of those names.
    """
    import onnx
    import onnx2torch

    model = _constants_as_initializers(onnx.load(str(path)))
    if output_order:
        _reorder_graph_outputs(model, output_order)
    try:
        module = onnx2torch.convert(model)
    except NotImplementedError as error:
        raise ConversionError(
            UNSUPPORTED_OPERATOR,
            f"onnx2torch cannot convert {_unconverted_operator(error)} of this ONNX model."
            " Export the model from PyTorch instead (factory, torchscript or exportedProgram"
            " source)",
        ) from None
    return module.eval()


# onnx2torch describes the node it has no converter for as "Converter is not implemented
# (OperationDescription(domain='', operation_type='If', version=16))".
_OPERATION = re.compile(r"domain='([^']*)', operation_type='([^']*)', version=(\d+)")


def _unconverted_operator(error: NotImplementedError) -> str:
    """Return "the operator If (opset 16)" from onnx2torch's error, else its first line."""
    match = _OPERATION.search(str(error))
    if match is None:
        return f"an operator ({_first_line(error)})"
    domain, operator, version = match.groups()
    qualified = f"{domain}.{operator}" if domain else operator
    return f"the operator {qualified} (opset {version})"


def _reorder_graph_outputs(model, output_order: tuple[str, ...]) -> None:
    # onnx2torch returns the outputs in the order of graph.output.
    by_name = {output.name: output for output in model.graph.output}
    ordered = [by_name[name] for name in output_order]
    copies = [type(output)() for output in ordered]
    for copy, output in zip(copies, ordered):
        copy.CopyFrom(output)
    del model.graph.output[:]
    model.graph.output.extend(copies)


def _constants_as_initializers(model):
    """Move top-level Constant nodes that hold a tensor into initializers.

    onnx2torch 1.5.15 converts Constant only up to opset 13, and exporters emit Constant nodes
    at every opset; an initializer carries the same tensor without needing a converter.
    """
    import onnx

    remaining = []
    for node in model.graph.node:
        attributes = {attribute.name: attribute for attribute in node.attribute}
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and set(attributes) == {"value"}:
            tensor = onnx.helper.get_attribute_value(attributes["value"])
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
        else:
            remaining.append(node)
    del model.graph.node[:]
    model.graph.node.extend(remaining)
    return model


# --- factory ----------------------------------------------------------------------------


def _load_factory(factory: FactorySource, workdir: Path) -> LoadedSource:
    import torch

    function = import_factory(factory.entrypoint, "source.factory.entrypoint")

    torch.manual_seed(factory.seed)
    try:
        module = function(**factory.kwargs)
    except Exception as error:  # the user's code: any failure is a model problem
        raise ConversionError(
            INVALID_MODEL,
            f"{factory.entrypoint}(**kwargs) failed: {type(error).__name__}: {_first_line(error)}",
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise ConversionError(
            INVALID_MODEL,
            f"{factory.entrypoint} returned {type(module).__name__}, not a torch.nn.Module",
        )

    # A factory without weights has no file to digest.
    digest = ""
    if factory.weights is not None:
        field = "source.factory.weights"
        path = fetch_file(factory.weights, workdir / "source", field)
        state = read_weights(path, factory.weights.format, field)
        load_weights_strictly(module, state, field)
        digest = file_sha256(path)
    return LoadedSource("factory", digest, module=module.eval())


def read_weights(path: Path, weights_format: str, field: str) -> dict:
    """Read a state dict from safetensors or a weights-only `torch.load`."""
    import torch

    if weights_format == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise ConversionError(
                INVALID_MODEL, f"{field}: {path.name} is not a safetensors file: {error}"
            ) from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError, EOFError...
        raise ConversionError(
            INVALID_MODEL,
            f"{field}: {path.name} contains more than tensors, or is not a torch.save file"
            f" ({_first_line(error)}). modelconv never unpickles Python objects, so save"
            " model.state_dict() with safetensors.torch.save_file (format: safetensors) or"
            " torch.save (format: stateDict, read with torch.load(weights_only=True)).",
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(value, torch.Tensor) for value in state.values()
    ):
        raise ConversionError(
            INVALID_MODEL,
            f"{field}: {path.name} is not a state dict (a mapping of names to tensors);"
            " save model.state_dict() itself, not a checkpoint that wraps it",
        )
    return state


def load_weights_strictly(module, state: dict, field: str) -> None:
    """Load `state` into `module`; any missing, unexpected or reshaped key is an error."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(
        f"{name} {tuple(state[name].shape)} in the file, {tuple(expected[name].shape)} in"
        " the model"
        for name in set(expected) & set(state)
        if tuple(state[name].shape) != tuple(expected[name].shape)
    )
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("shape", reshaped)):
        if names:
            shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
            problems.append(f"{label} keys: {shown}")
    if problems:
        raise ConversionError(
            INVALID_MODEL,
            f"{field}: the weights do not match the module ({'; '.join(problems)}); check the"
            " factory kwargs and that the file belongs to this model",
        )
    module.load_state_dict(state, strict=True)


# --- small helpers ----------------------------------------------------------------------


def _first_line(error: BaseException) -> str:
    text = plain_message(str(error)).strip()
    unpickler = WEIGHTS_UNPICKLER_ERROR.search(text)
    if unpickler is not None:
        # torch's first line advises weights_only=False, which modelconv never uses.
        return unpickler.group(1)[:300]
    return text.splitlines()[0][:300] if text else type(error).__name__


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def copy_into(path: Path, directory: Path, name: str) -> Path:
    """Copy a file into a stage's work directory under a fixed artifact name."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    shutil.copyfile(path, target)
    return target
