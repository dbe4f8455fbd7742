# Everything a fresh machine needs is installed by these targets: the venv (from the lock
# file), Debian packages and the locally built control plane (cached under ~/.cache).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP  := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE :=

.PHONY: manifests apprise-schemes help venv control-plane lint typecheck unit e2e test demo chaos bench bench-full lock clean test-deps lab lab-test

help:
	@echo "make demo   - local control plane + simulated nodes, kured rolling through them"
	@echo "make test   - lint, type check and the whole test suite (installs everything)"
	@echo "make chaos  - long fault-injection run;  make bench - benchmarks"
	@echo "make bench-full - the same with 10-minute idle windows and 100-1000 node scale runs"
	@echo "make lab    - 3 QEMU guests as real nodes, kured rolling them (make lab-test: tests/lab)"

$(STAMP): requirements.lock pyproject.toml testbed/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync -q --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e . -e testbed
	touch $@

venv: $(STAMP)

# Rebuilds the lock file from pyproject.toml (run after changing dependencies).
lock: $(STAMP)
	$(BIN)/uv pip compile -q --extra dev --universal --python-version 3.11 pyproject.toml -o requirements.lock

control-plane:
	@bash testbed/kured_testbed/build-control-plane.sh >/dev/null

lint: $(STAMP)
	$(BIN)/ruff check src testbed tests bench scripts
	$(BIN)/ruff format --check src testbed tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

e2e: $(STAMP) control-plane
	$(BIN)/pytest -q tests/e2e

# The whole suite, the real-node lab's rolls on QEMU guests included (tests/lab: 22.5 min on
# a quiet 2-core machine, docs/lab.md).
test: $(STAMP) control-plane lint typecheck test-deps
	$(BIN)/pytest -q -p no:cacheprovider tests

demo: $(STAMP) control-plane
	$(BIN)/python -m kured_testbed.demo

# The real-node lab (docs/lab.md): Debian packages, guest disk and images are installed and
# built on first use (cached under ~/.cache/kured-lab).
lab: $(STAMP) control-plane
	$(BIN)/python -m kured_testbed.lab.demo

lab-test: $(STAMP) control-plane
	$(BIN)/pytest -q -p no:cacheprovider tests/lab

chaos: $(STAMP) control-plane
	$(BIN)/python -m kured_testbed.chaos

bench: $(STAMP) control-plane
	$(BIN)/python -m kured_testbed.bench

# The long runs: idle windows of 10 minutes (no extrapolation), four fleet sizes.
bench-full: $(STAMP) control-plane
	$(BIN)/python -m kured_testbed.bench --idle-seconds 600 --serial-rolls --scale-nodes 100 200 500 1000 \
		--scale-idle-seconds 300 --scale-poll-seconds 300

# Debian packages that tests run for real (prometheus); a no-op once installed.
test-deps:
	@bash scripts/install-test-deps.sh

# Regenerates deploy/manifests from the Helm chart (a test fails when they drift).
manifests: $(STAMP)
	$(BIN)/python scripts/render-manifests.py

# Regenerates src/kured/apprise_schemes.py from the installed apprise (a test fails on drift).
apprise-schemes: $(STAMP)
	$(BIN)/python scripts/render-apprise-schemes.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
