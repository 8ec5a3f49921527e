# Quick start: `make demo` (the offline end-to-end job) and `make test` (the suite; `make test-all`
# adds the slow multi-process runs, as CI does). Each one creates
# or refreshes .venv from requirements.lock first.
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test test-all bench lock clean

$(STAMP): requirements.lock pyproject.toml
	@command -v espeak-ng >/dev/null || { echo "installing espeak-ng (Debian)"; apt-get update -qq && apt-get install -y -qq espeak-ng sox >/dev/null; }
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), "lpo-speech needs Python 3.11"'
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/lpo-speech demo --out runs/demo

# The suite without the tests marked slow (multi-process runs under torchrun, end-to-end benchmark
# smoke runs); `make test-all` runs every test, as CI does.
test: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(PY) -m pip install -q trl==1.16.0
	$(PY) benchmarks/run_all.py

# Re-resolve the pinned set from requirements.in (needs network access to the package index).
lock:
	rm -rf .lockenv && python3 -m venv .lockenv && .lockenv/bin/pip install -q -r requirements.in
	.lockenv/bin/pip freeze --all | grep -vE '^(pip|wheel)==|^-e ' | sed 's/+cpu//' > requirements.lock
	rm -rf .lockenv

clean:
	rm -rf $(VENV) runs
