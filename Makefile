# Two commands on a fresh machine: `make run` starts the app, `make test` runs the tests.
# Both install through `make setup` (venv, requirements, a weights attempt), which is quick when nothing changed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run test lint weights bench clean

setup: $(STAMP) weights

$(STAMP): requirements.txt requirements-dev.txt requirements-ray.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt -r requirements-ray.txt
	@touch $(STAMP)

# A failed download is a warning, not a failure: the tests and the weight-free engine need no weights.
weights: $(STAMP)
	@$(PY) -m syncnet download \
	  || echo "WARNING: SyncNet weights are not available (see the message above); the SyncNet engine is off until they are."

run: setup
	$(PY) app.py

lint: $(STAMP)
	$(PY) -m ruff check .

test: setup lint
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/bench_syncnet.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
