# The README's two commands are `make demo` and `make test`; the rest serve them.
SHELL := /bin/bash
MINT_CACHE ?= $(HOME)/.cache/mint
VENV := $(MINT_CACHE)/venv
PY := $(VENV)/bin/python
export MINT_CACHE
export PYTHONPATH := $(CURDIR)

.PHONY: help venv tools demo test faults up down status proto lint bench
help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

venv:  ## create the cached virtualenv and install what pyproject.toml lists
	@python3 deploy/local/bootstrap.py --venv $(VENV)

tools:  ## build the pinned kustomize (Go module proxy) into $(MINT_CACHE)/bin
	@python3 deploy/k8s/kustomize.py >/dev/null

demo: venv  ## run the end-to-end demo (embedded back end, no servers needed)
	$(PY) -m mint.demo

test: venv tools  ## start Kafka and S3, run the whole test suite, stop them (pass or fail)
	$(PY) -m deploy.local test -- $(PYTEST_ARGS)

faults: venv  ## the fault tests: a 3-broker cluster, brokers and S3 killed under load
	$(PY) -m deploy.local test -- -m faults tests/faults $(PYTEST_ARGS)

up: venv  ## start a local Kafka + S3 for development (state in .mint/stack)
	$(PY) -m deploy.local up

down:  ## stop what `make up` started
	$(PY) -m deploy.local down

status:  ## show the local servers and their endpoints
	$(PY) -m deploy.local status

proto: venv  ## regenerate mint/v1 from proto/ (never edit generated code by hand)
	$(PY) proto/generate.py

lint: venv  ## ruff and mypy
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy

bench: venv  ## run the benchmarks (against MINT_* servers, or a temporary local stack)
	$(PY) -m bench.registry_append
	$(PY) -m bench.replay
	$(PY) -m bench.serving_scale
	$(PY) -m bench.serving_throughput
	$(PY) -m bench.residency_load
