"""The Kubernetes side of modelconv: the Kopf operator behind `modelconv operator`.

Layers, lowest first:
- `status`, `jobs`, `rbac`, `config`: pure functions and data (conditions, Job and
  ConfigMap manifests, the operator's RBAC rules, its settings);
- `kube`: the only module that talks to the Kubernetes API (an aiohttp client);
- `observe`, `device`, `reconcile`: read the state of a run from Jobs, Pods and the
  store, and take the next step;
- `handlers`, `leader`, `metrics`, `runtime`: Kopf handlers, Lease-based leader election,
  Prometheus metrics and the process that ties them together.

Importing this package imports none of those modules, and none of them imports torch,
onnx or coremltools, so the operator process stays small.
"""
