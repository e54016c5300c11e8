"""The node agent's copy of the cluster's pods, kept current by a watch.

The kubelet reads its pods from a watch-fed cache instead of listing them on every pass, and
so does the agent: one LIST fills the cache, then a watch of all pods applies each event and
wakes the agent. Listing every pass would cost the API server a full list of all pods
(finished ones included) per pod event, which slows everything else on a busy test cluster.
A watch that expires (410 Gone) or fails is replaced by a new LIST and watch.

A status the agent wrote itself goes into the cache from the PATCH response, so the next
pass does not compare against the version from before the write.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from testenv.api import ApiError, KubeAPI

log = logging.getLogger("testenv.node_agent")

PODS_PATH = "/api/v1/pods"
WATCH_SECONDS = 60
RETRY_SECONDS = 1.0


class PodCache:
    """All pods of the cluster by uid, as of the last watch event."""

    def __init__(self, api: KubeAPI, on_change: Callable[[], None]) -> None:
        # A client of its own: a requests.Session is not meant to be shared between threads.
        self.api = KubeAPI(api.credentials)
        self.on_change = on_change
        self.resource_version = ""
        self._pods: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def relist(self) -> None:
        """Replace the cache with a fresh LIST of all pods."""
        listing = self.api.get(PODS_PATH)
        pods = {pod["metadata"]["uid"]: pod for pod in listing["items"]}
        with self._lock:
            self._pods = pods
            self.resource_version = listing["metadata"]["resourceVersion"]
        self.on_change()

    def snapshot(self) -> list[dict[str, Any]]:
        """Return the cached pods (the objects themselves: callers must not change them)."""
        with self._lock:
            return list(self._pods.values())

    def store_written(self, previous_version: str, pod: dict[str, Any]) -> None:
        """Cache the pod a write returned, unless the watch brought a newer one meanwhile."""
        uid = pod["metadata"]["uid"]
        with self._lock:
            cached = self._pods.get(uid)
            if cached is not None and cached["metadata"]["resourceVersion"] == previous_version:
                self._pods[uid] = pod

    def run(self, stopping: threading.Event) -> None:
        """Apply watch events until `stopping` is set; list again whenever the watch fails."""
        while not stopping.is_set():
            try:
                if not self.resource_version:
                    self.relist()
                self._watch_once()
            except ApiError as error:
                if error.status != 410:
                    log.warning("pod watch failed, listing again: %s", error)
                    stopping.wait(RETRY_SECONDS)
                self.resource_version = ""
            except OSError as error:
                log.warning("pod watch interrupted, listing again: %s", error)
                self.resource_version = ""
                stopping.wait(RETRY_SECONDS)

    def _watch_once(self) -> None:
        for event in self.api.watch(PODS_PATH, self.resource_version, WATCH_SECONDS):
            kind, pod = event["type"], event["object"]
            if kind == "ERROR":
                # Usually 410 Gone: the version is too old to resume from.
                self.resource_version = ""
                return
            with self._lock:
                self.resource_version = pod["metadata"]["resourceVersion"]
                if kind == "DELETED":
                    self._pods.pop(pod["metadata"]["uid"], None)
                elif kind in ("ADDED", "MODIFIED"):
                    self._pods[pod["metadata"]["uid"]] = pod
            if kind != "BOOKMARK":
                self.on_change()
