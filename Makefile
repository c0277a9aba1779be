# Two commands set everything up: `make run` (the whole pipeline locally) and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# sam build needs the Lambda runtime's Python (3.13) on PATH; pyenv provides it here.
SAM_PYENV := $(shell command -v pyenv >/dev/null 2>&1 && pyenv versions --bare | grep -E '^3\.13' | head -1)
SAM_ENV := SAM_CLI_TELEMETRY=0 $(if $(SAM_PYENV),PYENV_VERSION=$(shell python3 -c 'import platform;print(platform.python_version())'):$(SAM_PYENV))

.PHONY: dev run test lint typecheck validate build pytest unit integration e2e bench format clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

dev: $(VENV)/.installed

run: dev
	$(BIN)/orderpipe local

test: lint typecheck validate build pytest

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: dev
	$(BIN)/mypy

validate: dev
	$(SAM_ENV) $(BIN)/sam validate --lint

build: dev
	$(SAM_ENV) $(BIN)/sam build --parallel

pytest: dev
	$(BIN)/pytest

unit: dev
	$(BIN)/pytest tests/unit

integration: dev
	$(BIN)/pytest tests/integration

e2e: dev
	$(BIN)/pytest tests/e2e

bench: dev
	$(PY) bench/load.py

clean:
	rm -rf .aws-sam .orderpipe .pytest_cache .mypy_cache .ruff_cache
