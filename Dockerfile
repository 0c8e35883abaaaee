# toonforge images, one Dockerfile, two targets (docs/DEPLOY.md):
#
#   docker build --target api    -t toonforge-api    .   # FastAPI, onnxruntime-gpu, boto3 (no torch)
#   docker build --target worker -t toonforge-worker .   # Celery worker, CUDA PyTorch, boto3, mlflow
#
# Stages:  base ──> wheel            (builds the toonforge wheel; installs nothing)
#          base ──> api              (+ base deps with onnxruntime-gpu, the s3 extra, + the wheel)
#          base ──> worker           (+ CUDA torch, + base deps and the worker, s3 and tracking
#                                       extras, + the wheel)
# `api` never inherits from `worker` (or from any stage that installs torch), so building
# `--target api` never downloads torch; nor does it install the `tracking` extra (mlflow,
# tensorboard: large, and only the worker logs runs). Only classic Dockerfile syntax is used
# (no heredocs, no RUN --mount), so the legacy builder (docker-compose v1) builds it as well
# as BuildKit.
#
# Dependencies are read from pyproject.toml at build time (Python 3.11 has tomllib), so the
# version ranges live in one place, and installed at the versions requirements/lock.txt
# pins. Nothing is fetched at run time: no weights are baked in or downloaded; models are
# imported into the store volume (`toonforge import`, docs/DEPLOY.md).

ARG PYTHON_VERSION=3.11

# --------------------------------------------------------------------------------------- base
FROM python:${PYTHON_VERSION}-slim AS base

# TOONFORGE_*: absolute paths, since the settings' defaults are relative to the working
# directory; host 0.0.0.0 so the published port reaches the API. docker-compose.yml sets the
# rest (broker, database, providers); every variable is listed in docs/DEPLOY.md.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOONFORGE_STORE_DIR=/data/store \
    TOONFORGE_DATA_DIR=/data \
    TOONFORGE_HOST=0.0.0.0 \
    TOONFORGE_PORT=8000

# Non-root user 10001 owns /data. /data/store (the store, or with an S3 store this container's
# cache) and /data/tensorboard (the worker's TensorBoard logs) exist in the image and are
# owned by that user, so a fresh volume mounted there is initialised with the same owner
# (Docker copies the mount point's ownership into an empty volume).
RUN groupadd --system --gid 10001 toonforge \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/toonforge \
       --shell /usr/sbin/nologin toonforge \
    && mkdir -p /data/store /data/tensorboard \
    && chown -R 10001:10001 /data

# Only the dependency list and the lock: the dependency layers below are rebuilt when they
# change, not on every code change. Every install below is constrained by the lock
# (requirements/lock.txt, `make lock`), so an image built next month has the same versions.
COPY pyproject.toml /tmp/pyproject.toml
COPY requirements/lock.txt /tmp/lock.txt

# -------------------------------------------------------------------------------------- wheel
# A regular (non-editable) wheel of the app code; api and worker install it with --no-deps.
FROM base AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core/ core/
COPY tasks/ tasks/
COPY service/ service/
COPY model_store/ model_store/
COPY jobs/ jobs/
COPY faces/ faces/
COPY families/ families/
COPY worker/ worker/
COPY sdk/ sdk/
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------- api
FROM base AS api

# onnxruntime vs onnxruntime-gpu: both distributions install the same `onnxruntime` Python
# package directory. Installing the base deps (which name CPU `onnxruntime`) and then
# onnxruntime-gpu leaves the two overwriting each other's files, and a later
# `pip uninstall onnxruntime` deletes files that onnxruntime-gpu needs. So the CPU wheel is
# never installed: the requirement list is the base dependencies from pyproject.toml with
# `onnxruntime` removed, plus the `gpu` extra (onnxruntime-gpu) and the `s3` extra (boto3,
# for TOONFORGE_STORE_URL=s3://...), and the app wheel goes in with --no-deps. (`pip check`
# will therefore report toonforge's `onnxruntime` requirement as missing; that is expected:
# onnxruntime-gpu provides the same module.)
# onnxruntime-gpu's [cuda,cudnn] extras pull the CUDA 12 runtime and cuDNN 9 as nvidia-* pip
# wheels (the slim image has no CUDA toolkit); their lib directories are registered with the
# dynamic loader so the CUDAExecutionProvider finds them. The host's driver (libcuda) comes
# from the NVIDIA container toolkit at run time. Without a GPU the CPU provider serves.
RUN python -c "import re,tomllib; p=tomllib.load(open('/tmp/pyproject.toml','rb'))['project']; name=lambda r: re.split(r'[^A-Za-z0-9._-]', r, maxsplit=1)[0].lower(); extras=p['optional-dependencies']; gpu=[r.replace('onnxruntime-gpu', 'onnxruntime-gpu[cuda,cudnn]', 1) for r in extras['gpu']]; print('\n'.join([r for r in p['dependencies'] if name(r) != 'onnxruntime'] + gpu + extras['s3']))" > /tmp/requirements-api.txt \
    && cat /tmp/requirements-api.txt \
    && pip install -c /tmp/lock.txt -r /tmp/requirements-api.txt \
    && python -c "import glob,site; print('\n'.join(sorted(glob.glob(site.getsitepackages()[0] + '/nvidia/**/lib', recursive=True))))" > /etc/ld.so.conf.d/nvidia-pip.conf \
    && ldconfig \
    && pip list --format=freeze | grep -i onnxruntime \
    && ! pip show onnxruntime > /dev/null 2>&1

COPY --from=wheel /wheels/ /wheels/
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels

USER 10001:10001
# Not the source tree: imports come from site-packages, and no stray .env is read.
WORKDIR /data
EXPOSE 8000
# /healthz: the process is alive (no curl in slim; python's urllib is).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TOONFORGE_PORT', '8000'), timeout=4); sys.exit(0 if r.status == 200 else 1)"]
CMD ["python", "-m", "service"]

# ------------------------------------------------------------------------------------- worker
FROM base AS worker

# The CUDA flavour of the PyTorch wheel (cu126, cu128, ...) and its version; TORCH_VERSION
# must equal the `torch==` pin of the `worker` extra in pyproject.toml (a test checks it).
ARG TORCH_CUDA=cu126
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_CUDA}

# 1) torch from the PyTorch CUDA index (it brings the CUDA runtime as nvidia-* wheels).
# 2) the base dependencies + the `worker`, `s3` (boto3) and `tracking` (mlflow, tensorboard)
#    extras from PyPI; their `torch==X` is already met by the installed `X+cuNNN` (a local
#    version label satisfies `==X`), so pip keeps the CUDA build. The worker keeps CPU
#    `onnxruntime`: it only runs parity checks on exports.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && python -c "import tomllib; p=tomllib.load(open('/tmp/pyproject.toml','rb'))['project']; extras=p['optional-dependencies']; print('\n'.join(p['dependencies'] + extras['worker'] + extras['s3'] + extras['tracking']))" > /tmp/requirements-worker.txt \
    && cat /tmp/requirements-worker.txt \
    && pip install -c /tmp/lock.txt -r /tmp/requirements-worker.txt \
    && python -c "import torch; assert torch.version.cuda, 'not a CUDA build of torch: ' + torch.__version__; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"

COPY --from=wheel /wheels/ /wheels/
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels

USER 10001:10001
WORKDIR /data
# Liveness of this worker. Nothing in the worker writes a liveness file, and a Celery
# `inspect ping` alone is wrong here: the worker runs the `solo` pool, so while it trains
# (hours) it cannot answer remote-control pings. So the check is, in order:
#   1. busy: a job in the database is running/exporting on this host (worker_id is
#      "<hostname>:<pid>") with a heartbeat younger than job_lease_s -- the heartbeat thread
#      lives in the training process, so a fresh beat proves the worker is alive;
#   2. idle: the worker answers a Celery ping (app.control.ping to its own node name, from
#      TOONFORGE_WORKER_NAME (Settings.worker_name), default toonforge@%h, as worker/__main__.py uses; 5 s timeout).
# Unhealthy if neither holds (or the database cannot be reached). Costs a Python start, one
# indexed SELECT and, when idle, one ping round trip: cheap at a 60 s interval.
HEALTHCHECK --interval=60s --timeout=30s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import datetime as dt, os, socket, sys, sqlalchemy as sa; from celery.utils.nodenames import default_nodename, host_format; from jobs.db import Database; from jobs.records import JobRecord as J, utcnow; from core.settings import get_settings; s = get_settings(); h = socket.gethostname(); busy = Database.from_settings(s).sessions().scalar(sa.select(sa.func.count()).select_from(J).where(J.worker_id.like(h + ':%'), J.status.in_(['running', 'exporting']), J.heartbeat_at >= utcnow() - dt.timedelta(seconds=s.job_lease_s))); from worker.celery_app import app; me = default_nodename(host_format(s.worker_name or 'toonforge@%h')); sys.exit(0 if busy or any(me in r for r in (app.control.ping(destination=[me], timeout=5) or [])) else 1)"]
# Warm shutdown on SIGTERM: the running job checkpoints and goes back to the queue
# (docs/JOBS.md), so give the container a stop grace period (docker-compose.yml does).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "worker"]
