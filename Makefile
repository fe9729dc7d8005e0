# Two entry points for a fresh machine: `make demo` and `make test` (see README).
# Both create (or reuse) the virtual environment in .venv/ with the pinned toolchain.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup clean chromium

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

# The HTML report test renders in Debian's headless Chromium; installed here where apt-get runs
# as root (CI), otherwise that one test is skipped outside CI.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "note: Debian's chromium is not installed; the HTML rendering test will skip"; fi; }

test: lint chromium
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
