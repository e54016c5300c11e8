"""Value sets of the chart tests: rendered, linted and validated by the API server."""

# Each set is named for what it covers.
VALUE_SETS = {
    "default": {},
    "namespaced": {"watch": {"namespaces": ["team-a", "team-b"]}},
    "two-replicas": {"replicaCount": 2},
    "monitoring": {
        "metrics": {"service": {"enabled": True},
                    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "networkPolicy": {"enabled": True,
                          "metricsFrom": [{"namespaceSelector": {"matchLabels": {
                              "kubernetes.io/metadata.name": "monitoring"}}}]},
    },
    "without-crds": {"crds": {"enabled": False}},
    "store-and-runners": {
        "store": {"uri": "s3://models/releases", "endpoint": "https://s3.example.test",
                  "region": "eu-west-1", "credentialsSecret": "modelconv-s3"},
        "runners": {"namespace": "modelconv-runners", "tokenSecret": True},
        "image": {"digest": "sha256:" + "ab" * 32},
    },
}
