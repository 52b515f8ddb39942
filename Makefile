# make test: installs what the tests need (a virtualenv with the package and its test extras,
# Debian's prometheus for the integration tests) and runs lint and every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test unit integration lint deps system-deps bench clean

test: deps system-deps lint
	$(BIN)/python -m pytest

unit: deps
	$(BIN)/python -m pytest tests/unit

integration: deps system-deps
	$(BIN)/python -m pytest tests/integration

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

deps: $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'

# Debian packages the integration tests run for real: prometheus (and promtool),
# victoria-metrics (a second upstream), chromium (the landing page in a browser).
SYSTEM_PACKAGES := prometheus victoria-metrics chromium
SYSTEM_COMMANDS := prometheus promtool victoria-metrics chromium

system-deps:
	@missing=""; for c in $(SYSTEM_COMMANDS); do command -v $$c >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for the integration tests: $(SYSTEM_PACKAGES)"; \
	  $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(SYSTEM_PACKAGES); \
	fi
	@command -v kubectl >/dev/null || echo "warning: kubectl (with kustomize) is missing: the manifest tests will fail"

lint: deps
	$(BIN)/ruff check exporter tests bench scripts
	$(BIN)/ruff format --check exporter tests bench scripts
	$(BIN)/mypy
	$(BIN)/python -m exporter.exposition.metrics_doc --check

# Performance against a real Prometheus holding synthetic clusters of 10 to 2,000 models
# (11-15 minutes, 1.6 GB of scratch space); prints ratios against the targets and exits 1
# if one is missed. BENCH_ARGS=--quick runs only 10 and 200 models. See docs/performance.md.
bench: deps system-deps
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
