# Two entry points for a fresh machine: `make demo` and `make test` (see README).
# Both create (or reuse) the virtual environment in .venv/ with the pinned toolchain.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup clean

setup: $(STAMP)

# torch/torchvision are pinned here: this pair is the one the machines' wheel cache holds.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		torch==2.14.1 torchvision==0.29.1 -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/saved demo

lint: $(STAMP)
	$(BIN)/ruff check saved pytest_decompose tests examples benchmarks
	$(BIN)/ruff format --check saved pytest_decompose tests examples benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
