# make run   - create .venv, install, start the API on 127.0.0.1:8000 and a job worker
#              (store: ./data/store; jobs database and broker: ./data)
# make test  - install with dev extras and run the whole suite (then its store tests on S3)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
# pip-tools' resolver is pip's own, so it sees the same indexes (and local wheels) as pip.
PIP_TOOLS := pip-tools==7.7.0
PIP_VERSION := pip==26.3

.PHONY: run test lint openapi docs bench install lock clean

# Every install takes the versions the lock pins (a constraints file made by pip-compile
# from pyproject.toml's ranges: `make lock` refreshes it, docs/DEPLOY.md "Upgrading").
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet '$(PIP_VERSION)'
	# torch==2.13.0 resolves to the local CPU wheel here (see README: GPU machines).
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Logs a person can read in the terminal; the processes' default (docker compose,
# production) stays one JSON object per line. An exported TOONFORGE_LOG_FORMAT wins.
run: export TOONFORGE_LOG_FORMAT ?= text
run: $(STAMP)
	# A real job worker beside the API (embedded broker + SQLite under ./data); Ctrl-C stops both.
	# On the same cores: the worker renices itself and takes the cores the API's graph runs
	# leave (TOONFORGE_TRAIN_* and TOONFORGE_ORT_INTRA_OP_THREADS, docs/DEPLOY.md "CPU budgets").
	$(PY) -m worker & worker=$$!; trap 'kill $$worker 2>/dev/null' EXIT INT TERM; $(PY) -m service

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) scripts/export_openapi.py --check
	$(PY) scripts/export_datasets_doc.py --check
	$(PY) -m pytest -q -ra
	# The store-touching tests again on the S3 store: moto's S3 server on loopback, each API
	# and worker process with its own store_dir (tests/support/stores.py; ~4 min on 2 cores).
	TOONFORGE_TEST_STORE=s3 $(PY) -m pytest -q -ra -m "store and not local_store_only"

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

openapi: $(STAMP)
	$(PY) scripts/export_openapi.py

# docs/DATASETS.md from the task specs (layouts, splits, hyper-parameters)
docs: $(STAMP)
	$(PY) scripts/export_datasets_doc.py

bench: $(STAMP)
	$(PY) bench/serving.py

# Pin pyproject.toml's ranges (all extras the images and the tests install, plus the GPU
# image's CUDA wheels). `make lock` keeps every pin that still satisfies the ranges and adds
# what is new; `make lock UPGRADE=1` re-resolves everything to today's releases. The torch
# pin drops its local build label (+cpu here, +cu126 in the worker image) so that one lock
# serves both builds.
lock:
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet '$(PIP_TOOLS)'
	.lock-venv/bin/pip-compile --quiet $(if $(UPGRADE),--upgrade) --strip-extras --allow-unsafe \
	    --no-emit-index-url --no-emit-find-links --extra dev --extra gpu \
	    -o $(LOCK) pyproject.toml requirements/docker-gpu.in
	sed -i 's/^torch==\([0-9.]*\)+[a-z0-9]*$$/torch==\1/' $(LOCK)
	# dev names toonforge[worker,...]: pip-compile pins that self-reference as `toonforge @ file://<this
	# checkout>`, which no other checkout can satisfy. The project is never its own dependency.
	sed -i '/^toonforge @ /,/^[^ ]/{/^toonforge @ /d;/^    #/d}' $(LOCK)
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
