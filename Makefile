# Falco Triage — developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.DEFAULT_GOAL := help

##@ Setup

.PHONY: install
install: ## Install the package and its development tools (editable)
	$(PIP) install --disable-pip-version-check -q -e '.[dev]'

##@ Use

.PHONY: demo
demo: ## Local control plane + operator + receiver, example events and policy; Ctrl-C stops all
	$(PYTHON) hack/demo.py $(DEMO_ARGS)

.PHONY: analyze-example
analyze-example: ## Print the report for the bundled example events (no cluster needed)
	falco-triage analyze examples/events/terminal-shell.json

##@ Develop

.PHONY: generate
generate: ## Regenerate CRDs (crds/ and the chart's copy), the chart README's values table and manifests/
	falco-triage crdgen -o crds -o charts/falco-triage/crds
	$(PYTHON) -m tests.support.tools render-chart-readme
	$(PYTHON) -m tests.support.tools render-manifests

.PHONY: lint
lint: ## ruff (lint + format check) and import-linter layering contracts
	ruff check .
	ruff format --check .
	lint-imports

.PHONY: typecheck
typecheck: ## mypy, strict on the package
	mypy

.PHONY: format
format: ## Apply ruff formatting and safe fixes
	ruff format .
	ruff check --fix .

.PHONY: controlplane
controlplane: ## Build the local test control plane (etcd, kube-apiserver, controller-manager, kubectl)
	$(PYTHON) -c 'from pathlib import Path; import sys; sys.path.insert(0, "tests"); from support.controlplane import build_controlplane; print(build_controlplane(Path(".").resolve()))'

##@ Test

.PHONY: test
test: install lint typecheck ## Everything CI runs: install, lint, types, drift check, unit + integration tests
	falco-triage crdgen --check -o crds -o charts/falco-triage/crds
	FALCO_TRIAGE_REQUIRE_INTEGRATION=1 $(PYTHON) -m pytest

.PHONY: test-unit
test-unit: ## Unit tests only (pure code, no control plane)
	$(PYTHON) -m pytest tests/unit

.PHONY: test-integration
test-integration: ## Integration tests on the real control plane (built on first use)
	FALCO_TRIAGE_REQUIRE_INTEGRATION=1 $(PYTHON) -m pytest tests/integration

##@ Benchmarks

.PHONY: bench
bench: ## Quick benchmarks on the local control plane (minutes); results in bench/results/
	$(PYTHON) bench/analyze.py
	$(PYTHON) bench/ingest.py
	$(PYTHON) bench/response.py
	$(PYTHON) bench/e2e.py
	$(PYTHON) bench/soak.py
	$(PYTHON) bench/scale.py

.PHONY: bench-full
bench-full: ## Long benchmarks, opt-in (60 s per e2e rate, 10 min soak, 10,000 alerts)
	$(PYTHON) bench/analyze.py --full
	$(PYTHON) bench/e2e.py --full
	$(PYTHON) bench/soak.py --full
	$(PYTHON) bench/scale.py --full

##@ Help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"} /^##@/ {printf "\n\033[1m%s\033[0m\n", substr($$0, 5)} /^[a-zA-Z_-]+:.*##/ {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
