# The two commands: `make demo` and `make test`. Each sets up .venv on a fresh machine first, from
# requirements.lock: exact versions and hashes of every package, so a fresh machine gets the set that
# was tested. A changed lock (or pyproject.toml) rebuilds .venv from scratch.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
STAMP := $(VENV)/.installed
LATEST := .venv-latest

.PHONY: demo test test-latest lint bench lock clean

# torch comes from the lock as the CPU wheel torch==2.13.0+cpu (pip finds it on disk); --no-deps and
# --require-hashes mean nothing outside the lock is ever installed, so no range can pull a CUDA build.
$(STAMP): pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python tools/check_lock.py $(LOCK)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/initlab demo

test: $(STAMP)
	$(BIN)/python tools/check_lock.py $(LOCK)
	KERAS_BACKEND=torch $(BIN)/python -m pytest -q -n 2 tests

# The suite against the newest releases the ranges in pyproject.toml admit (torch stays 2.13.0): drift
# shows up here before users see it. Always a fresh venv; prints the versions it tested.
test-latest:
	rm -rf $(LATEST)
	$(PY) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q -c tools/torch-pin.txt torch
	$(LATEST)/bin/python -m pip install -q -c tools/torch-pin.txt -e ".[dev]"
	# timm and mup ask for torchvision, whose PyPI wheel links CUDA torch (see tools/lock-overrides.txt).
	$(LATEST)/bin/python -m pip uninstall -q -y torchvision
	$(LATEST)/bin/python -m pip list --format=freeze --exclude-editable
	KERAS_BACKEND=torch $(LATEST)/bin/python -m pytest -q -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples tools

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Re-resolve requirements.lock from the ranges in pyproject.toml (needs the package index).
lock:
	PY=$(PY) bash tools/lock.sh

clean:
	rm -rf $(VENV) $(LATEST) .venv-lock build *.egg-info src/*.egg-info
