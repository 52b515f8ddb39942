# make test: installs what the tests need (a virtualenv with the package and its test extras,
# Debian's prometheus for the integration tests) and runs lint and every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test unit integration lint deps system-deps docs-check clean

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

system-deps:
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
	  echo "installing Debian's prometheus (real upstream for the integration tests)"; \
	  $(SUDO) apt-get update -q; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; \
	fi

lint: deps
	$(BIN)/ruff check exporter tests
	$(BIN)/ruff format --check exporter tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
