# Underlay developer commands. `make dev` and `make test` install on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
PORT ?= 3000
STAGE ?= dev
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export JSII_RUNTIME_PACKAGE_CACHE_ROOT := $(CURDIR)/.cache/jsii
export UNDERLAY_STAGE ?= $(STAGE)

.PHONY: install dev test test-unit lint synth deploy bench token openapi clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

install: $(STAMP)

dev: $(STAMP)
	$(BIN)/underlay dev --port $(PORT)

test: $(STAMP)
	$(BIN)/pytest --cov --cov-report=term-missing:skip-covered

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy -p underlay -p functions -p infra

synth: $(STAMP) $(NODE_STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" npx cdk synth --quiet -c stage=$(STAGE)
	$(BIN)/cfn-lint cdk.out/*.template.json -i W3005

deploy: $(STAMP) $(NODE_STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" npx cdk deploy -c stage=$(STAGE)

bench: $(STAMP)
	$(BIN)/python -m tests.perf

token: $(STAMP)
	@$(BIN)/underlay token $(if $(SUB),--sub $(SUB)) $(if $(TIER),--tier $(TIER)) $(foreach s,$(SCOPES),--scope $(s))

openapi: $(STAMP)
	@$(BIN)/underlay openapi

clean:
	rm -rf cdk.out .build .bench .pytest_cache .coverage
