"""Turn a pod's container spec into a local process launch, as the node agent runs it.

A container becomes a process on this machine: the image is not pulled, volumes become
folders, and paths inside the container are rewritten to those folders.

- Command: `command` + `args` as given. Without `command`, the image's entry point comes from
  the image mapping (fnmatch pattern on the image reference -> command); an image that
  matches no pattern behaves like an image with no ENTRYPOINT, so `args` alone are run.
  A bare program name is looked up on the container's PATH, whose first entry is the
  folder of the agent's Python (so `python` and `modelconv` are the virtualenv's).
- Environment: a few variables passed through from the agent (PATH, HOME, locale, ...),
  HOSTNAME, KUBERNETES_SERVICE_HOST/PORT, then `envFrom`, then `env` (value with $(VAR)
  expansion, fieldRef, configMapKeyRef, secretKeyRef).
- Volumes: configMap, secret, downwardAPI, projected (those three and serviceAccountToken)
  and emptyDir become folders under the pod's state folder; hostPath is used in place.
- Paths: each volumeMount's mountPath, and the terminationMessagePath, is replaced by its
  local folder or file wherever it appears as a path in command, args, env values and
  workingDir. A program that builds such a path from pieces at run time is not rewritten.
- Fixed paths: a volume at the ServiceAccount folder
  /var/run/secrets/kubernetes.io/serviceaccount, which clients open without an argument
  naming it, is also bind-mounted there in a mount namespace of the container's own (see
  container_shim.py), when the agent may create one.
- Working directory: `workingDir` after rewriting, when it exists on this machine.
  Otherwise that path is created under the pod's `rootfs/`. Without one, `rootfs/` itself.

Anything the agent cannot provide raises ContainerConfigError, which the agent reports as
the container's waiting reason CreateContainerConfigError, as the kubelet does.
"""

from __future__ import annotations

import base64
import fnmatch
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Default image mapping: the stage image's entry point is the project's CLI.
DEFAULT_IMAGE_COMMANDS = {"*modelconv-stage*": ["modelconv"]}
# Variables a container inherits from the agent's environment when it does not set them.
PASSED_THROUGH_ENV = ("HOME", "LANG", "LC_ALL", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
# Container paths that programs open without a flag or variable naming them: Kubernetes
# clients look for in-cluster credentials here. container_shim.py bind-mounts only paths under /run.
FIXED_MOUNT_PATHS = ("/var/run/secrets/kubernetes.io/serviceaccount",)

Resolve = Callable[[str, str, str], dict[str, Any] | None]


class ContainerConfigError(Exception):
    """The container cannot be started as specified; the message gives the reason."""


@dataclass(frozen=True)
class ContainerLaunch:
    """Everything needed to start one container as a local process."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    termination_message_file: Path
    # Container path -> local folder, for the mounts at FIXED_MOUNT_PATHS.
    fixed_mounts: dict[str, Path] = field(default_factory=dict)


@dataclass
class PodContext:
    """State that the setup of every container in one pod shares."""

    pod: dict[str, Any]
    pod_dir: Path
    node_name: str
    api_host: str
    api_port: int
    image_commands: Mapping[str, list[str]]
    # resolve(kind, namespace, name) returns a ConfigMap or Secret, or None when missing.
    resolve: Resolve
    # request_token(pod, audience, expiration_seconds) returns a bound ServiceAccount token.
    request_token: Callable[[dict[str, Any], str | None, int], str]
    mounts: dict[str, Path] | None = None
    # fnmatch patterns of images that this node cannot pull (see testenv.container_limits).
    unpullable_images: tuple[str, ...] = ()


def prepare_container(context: PodContext, container: dict[str, Any],
                      attempt_dir: Path) -> ContainerLaunch:
    """Materialize the pod's volumes (once per pod) and return how to launch `container`."""
    if context.mounts is None:
        context.mounts = materialize_volumes(context)
    mounts = _container_mounts(context, container)
    termination_file = attempt_dir / "termination-log"
    termination_path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
    mounts[termination_path] = termination_file

    env = container_env(context, container)
    rewrite = path_rewriter(mounts)
    # Only values that the pod spec set are container paths. The agent's own variables (PATH
    # with the virtualenv first, HOME, ...) are host paths and stay as they are, even when a
    # mount such as /tmp is a prefix of them.
    host_env = agent_env(context)
    env = {
        name: value if host_env.get(name) == value else rewrite(value)
        for name, value in env.items()
    }
    argv = [rewrite(expand(part, env)) for part in container_command(context, container)]
    argv[0] = _locate_program(argv[0], env["PATH"], container["name"])
    cwd = _working_dir(context.pod_dir, rewrite(container.get("workingDir") or ""))
    fixed = {path: mounts[path] for path in FIXED_MOUNT_PATHS if path in mounts}
    return ContainerLaunch(argv, env, cwd, termination_file, fixed)


def container_command(context: PodContext, container: dict[str, Any]) -> list[str]:
    """Return command + args, taking the entry point from the image mapping when needed."""
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if not command:
        image = container.get("image") or ""
        for pattern, entry_point in context.image_commands.items():
            if fnmatch.fnmatchcase(image, pattern):
                command = list(entry_point)
                break
    argv = command + args
    if not argv:
        raise ContainerConfigError(
            f"container {container['name']!r}: image {container.get('image')!r} has no command "
            "mapping and the container sets neither command nor args; set command, or start "
            "the node agent with --image-command PATTERN=COMMAND"
        )
    return argv


def _locate_program(program: str, path: str, container_name: str) -> str:
    if os.sep in program:
        return program
    found = shutil.which(program, path=path)
    if found is None:
        raise ContainerConfigError(
            f"container {container_name!r}: executable {program!r} not found in PATH {path}"
        )
    return found


def _working_dir(pod_dir: Path, working_dir: str) -> Path:
    rootfs = pod_dir / "rootfs"
    if not working_dir:
        rootfs.mkdir(parents=True, exist_ok=True)
        return rootfs
    local = Path(working_dir)
    if local.is_dir():
        return local
    inside = rootfs / working_dir.lstrip("/")
    inside.mkdir(parents=True, exist_ok=True)
    return inside


# --- Environment ---------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand $(VAR) from `env` as the kubelet does: $$ is a literal $, unknown stays."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, text)


def agent_env(context: PodContext) -> dict[str, str]:
    """Return the variables every container gets from the agent, before the pod's own."""
    agent_bin = str(Path(sys.executable).parent)
    env = {"PATH": f"{agent_bin}{os.pathsep}{os.environ.get('PATH', os.defpath)}"}
    env.update({name: os.environ[name] for name in PASSED_THROUGH_ENV if name in os.environ})
    env["HOSTNAME"] = context.pod["metadata"]["name"]
    env["KUBERNETES_SERVICE_HOST"] = context.api_host
    env["KUBERNETES_SERVICE_PORT"] = str(context.api_port)
    env["KUBERNETES_SERVICE_PORT_HTTPS"] = str(context.api_port)
    return env


def container_env(context: PodContext, container: dict[str, Any]) -> dict[str, str]:
    """Return the container's full environment, resolved in the kubelet's order."""
    pod = context.pod
    env = agent_env(context)

    namespace = pod["metadata"]["namespace"]
    for source in container.get("envFrom") or []:
        env.update(_env_from(context, namespace, source))
    for variable in container.get("env") or []:
        env[variable["name"]] = _env_value(context, namespace, variable, env)
    return env


def _env_from(context: PodContext, namespace: str, source: dict[str, Any]) -> dict[str, str]:
    prefix = source.get("prefix") or ""
    if "configMapRef" in source:
        kind, reference = "configmaps", source["configMapRef"]
    elif "secretRef" in source:
        kind, reference = "secrets", source["secretRef"]
    else:
        raise ContainerConfigError(f"envFrom source {source!r} is not supported")
    values = _object_data(context, kind, namespace, reference["name"], reference.get("optional"))
    return {prefix + key: value.decode(errors="replace") for key, value in values.items()}


def _env_value(context: PodContext, namespace: str, variable: dict[str, Any],
               env: Mapping[str, str]) -> str:
    if "valueFrom" not in variable:
        return expand(variable.get("value") or "", env)
    source = variable["valueFrom"]
    if "fieldRef" in source:
        return field_value(context, source["fieldRef"]["fieldPath"])
    if "configMapKeyRef" in source or "secretKeyRef" in source:
        kind = "configmaps" if "configMapKeyRef" in source else "secrets"
        reference = source.get("configMapKeyRef") or source["secretKeyRef"]
        values = _object_data(context, kind, namespace, reference["name"],
                              reference.get("optional"))
        if reference["key"] not in values:
            if reference.get("optional"):
                return ""
            raise ContainerConfigError(
                f"env {variable['name']}: key {reference['key']!r} not found in "
                f"{kind[:-1]} {namespace}/{reference['name']}"
            )
        return values[reference["key"]].decode(errors="replace")
    raise ContainerConfigError(
        f"env {variable['name']}: valueFrom {sorted(source)} is not supported by the test "
        "node agent (supported: fieldRef, configMapKeyRef, secretKeyRef)"
    )


def field_value(context: PodContext, field_path: str) -> str:
    """Return a downward-API field of the pod, e.g. metadata.name or metadata.labels['x']."""
    pod = context.pod
    metadata = pod["metadata"]
    simple = {
        "metadata.name": metadata["name"],
        "metadata.namespace": metadata["namespace"],
        "metadata.uid": metadata["uid"],
        "spec.nodeName": context.node_name,
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName") or "default",
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }
    if field_path in simple:
        return simple[field_path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", field_path)
    if match:
        return (metadata.get(match.group(1)) or {}).get(match.group(2), "")
    if field_path in ("metadata.labels", "metadata.annotations"):
        values = metadata.get(field_path.split(".")[1]) or {}
        return "\n".join(f'{key}="{value}"' for key, value in sorted(values.items()))
    raise ContainerConfigError(f"fieldRef {field_path!r} is not supported by the test node agent")


def _object_data(context: PodContext, kind: str, namespace: str, name: str,
                 optional: bool | None) -> dict[str, bytes]:
    """Return the keys of a ConfigMap or Secret as bytes; {} for a missing optional one."""
    found = context.resolve(kind, namespace, name)
    if found is None:
        if optional:
            return {}
        raise ContainerConfigError(f"{kind[:-1]} {namespace}/{name} not found")
    if kind == "secrets":
        return {key: base64.b64decode(value) for key, value in (found.get("data") or {}).items()}
    values = {key: value.encode() for key, value in (found.get("data") or {}).items()}
    for key, value in (found.get("binaryData") or {}).items():
        values[key] = base64.b64decode(value)
    return values


# --- Volumes and paths ---------------------------------------------------------------------


def materialize_volumes(context: PodContext) -> dict[str, Path]:
    """Write each volume of the pod into a local folder; return volume name -> folder."""
    pod = context.pod
    namespace = pod["metadata"]["namespace"]
    folders: dict[str, Path] = {}
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        if "hostPath" in volume:
            folders[name] = Path(volume["hostPath"]["path"])
            continue
        folder = context.pod_dir / "volumes" / name
        folder.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in volume:
            pass
        elif "configMap" in volume or "secret" in volume:
            _write_object_volume(context, namespace, volume, folder)
        elif "downwardAPI" in volume:
            _write_downward_items(context, volume["downwardAPI"].get("items") or [], folder)
        elif "projected" in volume:
            _write_projected(context, namespace, volume["projected"], folder)
        else:
            kinds = sorted(set(volume) - {"name"})
            raise ContainerConfigError(
                f"volume {name!r}: type {kinds} is not supported by the test node agent "
                "(supported: configMap, secret, downwardAPI, projected, emptyDir, hostPath)"
            )
        folders[name] = folder
    return folders


def _write_object_volume(context: PodContext, namespace: str, volume: dict[str, Any],
                         folder: Path) -> None:
    if "configMap" in volume:
        source, kind, name = volume["configMap"], "configmaps", volume["configMap"]["name"]
    else:
        source, kind, name = volume["secret"], "secrets", volume["secret"]["secretName"]
    values = _object_data(context, kind, namespace, name, source.get("optional"))
    _write_keys(values, source.get("items"), source.get("defaultMode"), folder)


def _write_keys(values: Mapping[str, bytes], items: list[dict[str, Any]] | None,
                default_mode: int | None, folder: Path) -> None:
    selected = items or [{"key": key, "path": key} for key in values]
    for item in selected:
        if item["key"] not in values:
            raise ContainerConfigError(f"volume key {item['key']!r} not found")
        target = _inside(folder, item["path"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(values[item["key"]])
        target.chmod(item.get("mode") or default_mode or 0o644)


def _write_downward_items(context: PodContext, items: list[dict[str, Any]],
                          folder: Path) -> None:
    for item in items:
        if "fieldRef" not in item:
            raise ContainerConfigError(
                f"downwardAPI item {item['path']!r}: only fieldRef is supported"
            )
        target = _inside(folder, item["path"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(field_value(context, item["fieldRef"]["fieldPath"]))


def _write_projected(context: PodContext, namespace: str, projected: dict[str, Any],
                     folder: Path) -> None:
    mode = projected.get("defaultMode")
    for source in projected.get("sources") or []:
        if "configMap" in source or "secret" in source:
            kind = "configmaps" if "configMap" in source else "secrets"
            reference = source.get("configMap") or source["secret"]
            values = _object_data(context, kind, namespace, reference["name"],
                                  reference.get("optional"))
            _write_keys(values, reference.get("items"), mode, folder)
        elif "serviceAccountToken" in source:
            token_source = source["serviceAccountToken"]
            token = context.request_token(context.pod, token_source.get("audience"),
                                          token_source.get("expirationSeconds") or 3600)
            target = _inside(folder, token_source["path"])
            target.write_text(token)
            target.chmod(0o600)
        elif "downwardAPI" in source:
            _write_downward_items(context, source["downwardAPI"].get("items") or [], folder)
        else:
            raise ContainerConfigError(f"projected source {sorted(source)} is not supported")


def _inside(folder: Path, relative: str) -> Path:
    target = (folder / relative).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise ContainerConfigError(f"volume path {relative!r} leaves its volume")
    return target


def _container_mounts(context: PodContext, container: dict[str, Any]) -> dict[str, Path]:
    """Return mountPath -> local path for the container's volumeMounts."""
    mounts: dict[str, Path] = {}
    assert context.mounts is not None
    for mount in container.get("volumeMounts") or []:
        folder = context.mounts.get(mount["name"])
        if folder is None:
            raise ContainerConfigError(f"volumeMount {mount['name']!r} names no volume")
        sub_path = mount.get("subPath") or ""
        mounts[mount["mountPath"].rstrip("/") or "/"] = folder / sub_path if sub_path else folder
    return mounts


def path_rewriter(mounts: Mapping[str, Path]) -> Callable[[str], str]:
    """Return a function that replaces each container path in `mounts` by its local path.

    A container path is replaced only where it starts a path. It must be at the start of
    the text or follow a character that cannot be part of a path (`=`, `:`, space, quote).
    It must be followed by `/`, the end of the text, or such a character. The longest
    container path wins.
    """
    ordered = sorted((path for path in mounts if path != "/"), key=len, reverse=True)
    if not ordered:
        return lambda text: text
    pattern = re.compile(
        r"(?<![\w.\-/])(" + "|".join(re.escape(path) for path in ordered) + r")(?![\w.\-])"
    )

    def replace(match: re.Match[str]) -> str:
        # A whole path that exists on this machine is a host path that merely shares a
        # prefix with a mount (a checkout under /tmp with an emptyDir at /tmp): keep it.
        whole = _PATH_TOKEN.match(match.string, match.start()).group(0)
        if whole != match.group(1) and os.path.exists(whole):
            return match.group(0)
        return str(mounts[match.group(1)])

    def rewrite(text: str) -> str:
        return pattern.sub(replace, text)

    return rewrite


_PATH_TOKEN = re.compile(r"[^\s'\"=:,;]+")


def parse_image_command(text: str) -> tuple[str, list[str]]:
    """Parse a --image-command value, PATTERN=COMMAND, e.g. '*my-image*=python -m app'."""
    pattern, separator, command = text.partition("=")
    if not separator or not pattern or not command.strip():
        raise ValueError(f"invalid image command {text!r}: expected PATTERN=COMMAND")
    return pattern, shlex.split(command)
