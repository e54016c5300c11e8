# Entry points; each target installs what it needs first (see hack/).
SHELL := /bin/bash
VENV := .venv
EXAMPLE ?= examples/minilm.yaml
# Releases are immutable, so each `make example` publishes into a store folder of its own.
EXAMPLE_STORE ?= modelconv-releases/example-$(shell date -u +%Y%m%dT%H%M%SZ)

.PHONY: setup binaries tools example test test-fast

setup:
	hack/setup.sh

binaries:
	hack/build-k8s.sh

# actionlint, shellcheck and the AWS CLI that the CI recipe tests run (hack/build-tools.sh).
tools:
	hack/build-tools.sh

# Convert a real model end to end, locally, and print the report summary.
example: setup
	$(VENV)/bin/modelconv run $(EXAMPLE) --store $(EXAMPLE_STORE)

# The whole suite: unit, pipeline, real control plane, S3 server and helm.
test: setup binaries tools
	$(VENV)/bin/python -m pytest -ra --durations=20

# Everything that needs neither the control plane nor slow example conversions.
test-fast: setup tools
	$(VENV)/bin/python -m pytest -ra -m "not cluster and not slow"
