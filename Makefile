# make run   - create .venv, install, start the API on 127.0.0.1:8000 and a job worker
#              (store: ./data/store; jobs database and broker: ./data)
# make test  - install with dev extras and run the whole suite (then its store tests on S3)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint openapi bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	# torch==2.13.0 resolves to the local CPU wheel here (see README: GPU machines).
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	# A real job worker beside the API (embedded broker + SQLite under ./data); Ctrl-C stops both.
	$(PY) -m worker & worker=$$!; trap 'kill $$worker 2>/dev/null' EXIT INT TERM; $(PY) -m service

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) scripts/export_openapi.py --check
	$(PY) -m pytest -q -ra
	# The store-touching tests again on the S3 store: moto's S3 server on loopback, each API
	# and worker process with its own store_dir (tests/support/stores.py; ~4 min on 2 cores).
	TOONFORGE_TEST_STORE=s3 $(PY) -m pytest -q -ra -m "store and not local_store_only"

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

openapi: $(STAMP)
	$(PY) scripts/export_openapi.py

bench: $(STAMP)
	$(PY) bench/serving.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
