# Two entry points for a fresh machine: `make demo` and `make test` (see README).
# Both create (or reuse) the virtual environment in .venv/ with the pinned toolchain.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup clean system-packages user-install

setup: $(STAMP)

# torch/torchvision are pinned here: this pair is the one the machines' wheel cache holds.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		torch==2.14.1 torchvision==0.29.1 -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/saved demo

LINTED := saved pytest_decompose tests examples benchmarks .ci/user_project
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

# Debian packages some tests need: chromium (the HTML report is rendered in headless Chromium)
# and dataset-fashion-mnist (the vision benchmark's data). Installed here where apt-get runs as
# root (CI); elsewhere the tests that need them skip with a note.
DEBIAN_PACKAGES := chromium:/usr/bin/chromium dataset-fashion-mnist:/usr/share/datasets/fashion-mnist
system-packages:
	@missing=""; for pair in $(DEBIAN_PACKAGES); do \
		test -e "$${pair#*:}" || missing="$$missing $${pair%%:*}"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else echo "note: not installed:$$missing; the tests that need them will skip"; fi; fi

# The package as a user installs it: its wheel, no extras, a fresh venv outside the checkout,
# pytest with and without xdist and with the plugin disabled (.ci/user-install, ~2 min).
user-install: $(STAMP)
	bash .ci/user-install

# Lint and the wheel install check run side by side (each keeps about one core busy: mypy, and
# unpacking torch); then the suite on both cores: two xdist workers with one torch thread each
# (tests/conftest.py), tests dealt out by work stealing, in a random order, each test under the
# time limit of pyproject.toml. Timings: docs/BENCHMARKS.md ("The test suite's time").
PYTEST_WORKERS ?= 2
test: $(STAMP) system-packages
	$(MAKE) --no-print-directory -j 2 lint user-install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
