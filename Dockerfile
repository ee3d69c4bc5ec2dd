# syntax=docker/dockerfile:1
# The smm_pipeline code location (README, "Running beyond one machine"): a Dagster code server on
# port 4000 serving `-m smm_pipeline.definitions`, and the image of every run it launches
# (K8sRunLauncher under the Helm chart, DockerRunLauncher with deploy/dagster.docker.yaml).
#
#   docker build -t smm-pipeline:$(git rev-parse --short HEAD) .
#
# In the image: the smm_pipeline package and its dependencies, the `postgres`, `k8s` and
# `docker` extras (dagster-postgres for the instance, the two run launchers' libraries) and a
# default panels.yaml. Not in it: devkit/ (the panel simulator and the demo, a separate package),
# the dev extra (pytest, ruff, jupyter, ...), the tests, notebooks, benchmarks, data/ and .env
# (.dockerignore lets in only the files copied below). No key and no password is in the image:
# they come from the environment when a container starts.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

# The extras to install (`--build-arg EXTRAS=postgres` for an image without the launchers').
ARG EXTRAS=postgres,k8s,docker

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv \
 && useradd --system --uid 10001 --user-group --home-dir /home/smm --create-home smm

WORKDIR /app

# The dependencies first, in a layer that changes only with pyproject.toml: installed against an
# empty stand-in package (and README, which pyproject.toml names), replaced below.
COPY pyproject.toml ./
RUN mkdir smm_pipeline && touch smm_pipeline/__init__.py README.md \
 && pip install --editable ".[${EXTRAS}]" \
 && rm -rf smm_pipeline smm_pipeline.egg-info build

# The package, installed editable on purpose: definitions.py loads `dg.load_from_defs_folder`
# from PROJECT_ROOT, the parent of the package directory, which must hold pyproject.toml with
# [tool.dg]. A regular install would put the package in site-packages, where no pyproject.toml
# is; editable, it stays in /app beside its pyproject.toml, for the code server and every run.
# /app stays owned by root (the code is read-only to the user that runs it), so the bytecode is
# compiled now.
COPY README.md ./
COPY smm_pipeline ./smm_pipeline
RUN pip install --no-deps --editable . \
 && rm -rf build \
 && python -m compileall -q /app/smm_pipeline \
 && pip check \
 && if python -c "import smm_devkit" 2>/dev/null; then echo "smm_devkit must not be in the image" >&2; exit 1; fi \
 && if pip show pytest >/dev/null 2>&1; then echo "the dev extra must not be in the image" >&2; exit 1; fi

# The default panels.yaml; mount your own over it (a ConfigMap, a bind mount).
COPY deploy/panels.yaml /etc/smm/panels.yaml

# SMM_DATA_DIR (inbox, processed, rejected; without SMM_WAREHOUSE_URL the DuckDB warehouse and
# the panel budgets too) and
# $DAGSTER_HOME/storage (step outputs, step logs) must be volumes shared by the code server and
# every run (README). No VOLUME line: Docker would give each run container an anonymous volume
# of its own, silently splitting the data. The directories exist, owned by the user, so that a
# new named volume mounted on them is created writable for it. Last, the code location is loaded
# once with the default panels.yaml (a throwaway instance and data folder): a broken image
# fails here, not in the cluster.
ENV SMM_PANELS_FILE=/etc/smm/panels.yaml \
    SMM_DATA_DIR=/var/lib/smm \
    DAGSTER_HOME=/opt/dagster/dagster_home
RUN mkdir -p /var/lib/smm /opt/dagster/dagster_home/storage /tmp/smm-check \
 && chown -R smm:smm /var/lib/smm /opt/dagster/dagster_home \
 && DAGSTER_HOME=/tmp/smm-check SMM_DATA_DIR=/tmp/smm-check/data \
    dagster definitions validate -m smm_pipeline.definitions \
 && rm -rf /tmp/smm-check

USER 10001:10001
EXPOSE 4000
# Under the Helm chart, dagsterApiGrpcArgs (-m smm_pipeline.definitions) replaces this with
# `dagster api grpc`; a run container is started with its own command by its launcher.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", \
     "-m", "smm_pipeline.definitions", "--location-name", "smm_pipeline"]
