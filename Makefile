# Two commands set everything up: `make run` (the whole pipeline locally) and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# sam build needs the Lambda runtime's Python (3.13) on PATH; pyenv provides it here.
SAM_PYENV := $(shell command -v pyenv >/dev/null 2>&1 && pyenv versions --bare | grep -E '^3\.13' | head -1)
SAM_ENV := SAM_CLI_TELEMETRY=0 $(if $(SAM_PYENV),PYENV_VERSION=$(shell python3 -c 'import platform;print(platform.python_version())'):$(SAM_PYENV))

CHECKOV_VENV := .venv-checkov

.PHONY: dev lock run test lint typecheck validate check-template build pytest unit integration e2e bench bench-lambda bench-compare chaos format clean

# The virtual environment is made anew from the lock whenever the lock or a pyproject changes, so
# it holds exactly what requirements/dev.lock pins (hash-checked), plus this repo's two packages.
$(VENV)/.installed: requirements/dev.lock pyproject.toml local/pyproject.toml
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . -e ./local
	$(BIN)/pip check
	touch $@

dev: $(VENV)/.installed

# checkov's dependencies clash with dev.lock's, so it has a venv of its own, made from its own lock.
$(CHECKOV_VENV)/.installed: requirements/checkov.lock
	rm -rf $(CHECKOV_VENV)
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --require-hashes --no-deps -r requirements/checkov.lock
	$(CHECKOV_VENV)/bin/pip check
	touch $@

# Resolves requirements/dev.in and both pyprojects into the lock, for Python 3.11 and later on any
# platform, with the hashes of every file. Pins that still fit are kept (add a dependency, run
# `make lock`, and nothing else moves); `make lock UPGRADE=1` moves every pin to the newest allowed.
# requirements/lambda.txt is the product's share of dev.lock for the functions' runtime (python3.13
# on arm64): `sam build` installs from it, so Lambda runs the versions the tests ran with. It pins
# versions, not hashes: pip's hash mode refuses the `.` (the library itself) each function installs.
lock: dev
	$(BIN)/uv pip compile requirements/dev.in --universal --python-version 3.11 --generate-hashes \
	    $(if $(UPGRADE),--upgrade) --no-emit-package orderpipe --no-emit-package orderpipe-local \
	    --quiet -o requirements/dev.lock
	$(BIN)/uv pip compile requirements/checkov.in --universal --python-version 3.11 --generate-hashes \
	    $(if $(UPGRADE),--upgrade) --quiet -o requirements/checkov.lock
	$(BIN)/uv pip compile pyproject.toml -c requirements/dev.lock --python-version 3.13 \
	    --python-platform aarch64-manylinux2014 --no-header --quiet -o requirements/lambda.txt

run: dev
	$(BIN)/orderpipe local

test: lint typecheck validate check-template build pytest

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

# cfn-lint (with the serverless rules) and checkov, on template.yaml and on the SAM-transformed
# template; any finding not fixed or skipped in the template (with its reason) fails.
check-template: dev $(CHECKOV_VENV)/.installed
	$(PY) -m orderpipe_local.stack.transformed -o .aws-sam/transformed.json
	$(BIN)/cfn-lint --append-rules cfn_lint_serverless.rules -- template.yaml
	$(BIN)/cfn-lint --append-rules cfn_lint_serverless.rules -- .aws-sam/transformed.json
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation -f template.yaml
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation -f .aws-sam/transformed.json

# After sam build, each built function loses what the Lambda runtime provides (boto3, and the
# botocore that the X-Ray SDK pulls in, which would override the runtime's under the runtime's
# boto3) and gets its bytecode, compiled by the runtime's Python: a function folder is read-only
# in Lambda, so without .pyc files every cold start compiles every module it imports. The .pyc
# are not checked against the sources' mtimes (zip keeps them to 2 s). `sam deploy` ships
# .aws-sam/build as it is, so deploy after `make build`, not after a bare `sam build`.
RUNTIME_PROVIDED := boto3 botocore s3transfer jmespath dateutil six.py urllib3 \
	boto3-*.dist-info botocore-*.dist-info s3transfer-*.dist-info jmespath-*.dist-info jmespath-*.data \
	python_dateutil-*.dist-info six-*.dist-info urllib3-*.dist-info
build: dev
	$(SAM_ENV) $(BIN)/sam build --parallel
	for function in .aws-sam/build/*/; do (cd $$function && rm -rf $(RUNTIME_PROVIDED)); done
	$(SAM_ENV) python3.13 -m compileall -q -j 0 --invalidation-mode unchecked-hash .aws-sam/build/*/

# What the functions cost in Lambda against the floor (bare boto3), and per million orders: bench/lambda_bench.py.
bench-lambda: build
	$(SAM_ENV) $(PY) bench/lambda_bench.py

# Two suites, each with its own rootdir: the product's (tests/) and the runner's (local/tests/).
pytest: dev
	$(BIN)/pytest tests
	$(BIN)/pytest local/tests

unit: dev
	$(BIN)/pytest tests/unit
	$(BIN)/pytest local/tests/unit

integration: dev
	$(BIN)/pytest tests/integration
	$(BIN)/pytest local/tests/integration

e2e: dev
	$(BIN)/pytest local/tests/e2e

bench: dev
	$(PY) bench/load.py

# The chaos run (not part of make test): 5,000 orders at 100/s through `orderpipe local` with DynamoDB
# throttles, SNS failures and stalls, duplicate deliveries, poison messages and a writer killed;
# it prints what became of each order and exits 1 unless each was stored and mailed exactly once.
chaos: dev
	$(PY) -m orderpipe_local.chaos --orders $(or $(ORDERS),5000) --rate $(or $(RATE),100) --seed $(or $(SEED),1)

# The load benchmark on BASE and on this checkout, one after the other: make bench-compare BASE=main~1
bench-compare: dev
	@test -n "$(BASE)" || { echo "usage: make bench-compare BASE=<commit>"; exit 2; }
	$(PY) bench/compare.py --base $(BASE)

clean:
	rm -rf .aws-sam .orderpipe .pytest_cache .mypy_cache .ruff_cache
