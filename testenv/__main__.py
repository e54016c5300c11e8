"""Command line of the test environment: `python -m testenv up` from the repository root.

It starts the control plane, the node agent and the S3 server (see --help to leave the last
two out), and prints where they are. They run until SIGINT (Ctrl-C) or SIGTERM. Then every
process is stopped and every temporary folder removed.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
import time
from contextlib import ExitStack

from testenv.binaries import MissingBinaryError, binary
from testenv.cluster import Cluster
from testenv.node_agent_process import NodeAgentProcess
from testenv.s3 import S3Server


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m testenv", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the environment and keep it running")
    up.add_argument("--no-node-agent", action="store_true", help="do not start the node agent")
    up.add_argument("--no-s3", action="store_true", help="do not start the S3 server")
    return parser.parse_args(argv)


def _print_environment(cluster: Cluster, s3: S3Server | None) -> None:
    print(f"kubeconfig: {cluster.kubeconfig}")
    print(f"API server: {cluster.server}")
    print(f"logs:       {cluster.log_dir}")
    timings = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in
                        cluster.startup_seconds.items())
    print(f"started:    {timings}")
    print(f"  export KUBECONFIG={shlex.quote(str(cluster.kubeconfig))}")
    try:
        print(f"  helm: {binary('helm')}")
    except MissingBinaryError:
        print("  helm: not built (hack/build-k8s.sh helm)")
    if s3 is not None:
        print(f"S3 endpoint: {s3.endpoint_url}")
        for name, value in s3.client_env().items():
            print(f"  export {name}={shlex.quote(value)}")
    print("Press Ctrl-C to stop.", flush=True)


def up(args: argparse.Namespace) -> int:
    stop = threading.Event()
    # SIGINT gets a handler of its own too: a shell starts background jobs with SIGINT
    # ignored, and Python then raises no KeyboardInterrupt.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: stop.set())
    with ExitStack() as stack:
        try:
            cluster = stack.enter_context(Cluster())
        except MissingBinaryError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        if not args.no_node_agent:
            agent = stack.enter_context(NodeAgentProcess(cluster.kubeconfig))
            print(f"node agent: node {agent.node_name}, log {agent.log_path}")
        s3 = None if args.no_s3 else stack.enter_context(S3Server())
        _print_environment(cluster, s3)
        stop.wait()
        print("stopping", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parse_args(argv)
    began = time.monotonic()
    if args.command == "up":
        code = up(args)
        print(f"stopped after {time.monotonic() - began:.0f} s")
        return code
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
