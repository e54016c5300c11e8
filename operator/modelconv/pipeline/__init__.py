"""The conversion pipeline: stages that run in one process or as Kubernetes Jobs.

Nothing here talks to Kubernetes. Each stage reads the spec and the artifacts of earlier
stages from a work directory and returns a `StageResult`.
"""
