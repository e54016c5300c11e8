"""The macOS runner pool: on-device Core ML checks pulled through the Kubernetes API.

- `resource`: the CoreMLCheck models (and `crd`, the CRD generated from them);
- `agent`, `lease`, `claims`, `execution`, `backends`, `artifacts`: the runner process;
- `checks`: what the operator's controller calls to create and follow checks;
- `pool`: runner Leases, labels, liveness and requirement matching.

Nothing here imports torch or coremltools at module level; the backends load them.
"""
