# facepipe: `make run` sets up and indexes the images folder; `make test` sets up and runs the tests.
SHELL := /bin/bash
IMAGES ?=
PYTHON ?= python3.11
# uv installs everything from the lock file; it comes from PyPI like any package.
UV := $(PYTHON) -m uv

.PHONY: setup run test lint ui

setup:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)

run: setup
	$(UV) run --frozen facepipe index $(IMAGES)

test: setup
	bash scripts/install-chromium.sh
	$(UV) run --frozen ruff check facepipe facepipe_tests benchmarks
	$(UV) run --frozen ruff format --check facepipe facepipe_tests benchmarks
	$(UV) run --frozen pytest

ui: setup
	$(UV) run --frozen facepipe ui

lint: setup
	$(UV) run --frozen ruff check facepipe facepipe_tests benchmarks
	$(UV) run --frozen ruff format --check facepipe facepipe_tests benchmarks
