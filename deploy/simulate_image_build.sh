#!/bin/bash
# The Dockerfile's steps without Docker (a machine with no Docker daemon; README, "Running beyond
# one machine"): the build context .dockerignore lets through, a fresh venv, the dependencies
# installed against a stand-in package, the package installed editable, the image's checks
# (pip check, no smm_devkit, no dev extra, the code location loads), then the image's CMD as a
# non-root user, probed over gRPC. With DAGSTER_PG_HOST/PORT/USERNAME/PASSWORD/DB set, it also
# runs check_orders as that user on deploy/dagster.postgres.yaml.
#
#   deploy/simulate_image_build.sh            # from the project root; ~2 minutes, needs PyPI
#
# PYTHON: the interpreter (a 3.11 that the run-as user may execute; default /usr/bin/python3).
# ROOT: where the image's file system is laid out (default /tmp/smm-image-sim, deleted first).
# EXTRAS: as the Dockerfile's build argument.
# CONTEXT_PYTHON: a Python with the `docker` package, to read .dockerignore (default the
# project's .venv, where the dev extra installs it).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
R=${ROOT:-/tmp/smm-image-sim}
EXTRAS=${EXTRAS:-postgres,k8s,docker}
PORT=${PORT:-4000}
rm -rf "$R"
mkdir -p "$R/ctx"
chmod 755 "$R"

echo "== build context (.dockerignore)"
"${CONTEXT_PYTHON:-$SRC/.venv/bin/python}" - "$SRC" "$R/ctx" <<'PY'
import shutil, sys
from pathlib import Path
from docker.utils.build import exclude_paths  # docker-py: .dockerignore as the CLI reads it
src, ctx = Path(sys.argv[1]), Path(sys.argv[2])
patterns = [line.strip() for line in (src / ".dockerignore").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
files = sorted(f for f in exclude_paths(str(src), patterns) if (src / f).is_file())
for f in files:
    (ctx / f).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / f, ctx / f)
print(len(files), "files:", sorted({f.split("/")[0] for f in files}))
PY

echo "== install (as the Dockerfile)"
"$PYTHON" -m venv "$R/opt/venv"
export PATH="$R/opt/venv/bin:$PATH" PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
  PYTHONDONTWRITEBYTECODE=1
APP=$R/app
mkdir -p "$APP"
cd "$APP"
cp "$R/ctx/pyproject.toml" ./
mkdir smm_pipeline && touch smm_pipeline/__init__.py README.md
pip install -q --editable ".[${EXTRAS}]"
rm -rf smm_pipeline smm_pipeline.egg-info build
cp "$R/ctx/README.md" ./
cp -r "$R/ctx/smm_pipeline" ./smm_pipeline
pip install -q --no-deps --editable .
rm -rf build
python -m compileall -q "$APP/smm_pipeline"
pip check
if python -c "import smm_devkit" 2>/dev/null; then echo "smm_devkit must not be in the image" >&2; exit 1; fi
if pip show pytest >/dev/null 2>&1; then echo "the dev extra must not be in the image" >&2; exit 1; fi
mkdir -p "$R/etc/smm" "$R/var/lib/smm" "$R/opt/dagster/dagster_home/storage" "$R/tmp/smm-check"
cp "$R/ctx/deploy/panels.yaml" "$R/etc/smm/panels.yaml"
RUN_AS=()
if [ "$(id -u)" = 0 ]; then
  chown -R nobody:nogroup "$R/var/lib/smm" "$R/opt/dagster/dagster_home"
  RUN_AS=(runuser -u nobody --)
fi
DAGSTER_HOME=$R/tmp/smm-check SMM_PANELS_FILE=$R/etc/smm/panels.yaml \
  SMM_DATA_DIR=$R/tmp/smm-check/data dagster definitions validate -m smm_pipeline.definitions
pip list 2>/dev/null | grep -i -E '^(smm|dagster|psycopg|sqlalchemy|docker |kubernetes)' || true
du -sh "$R/opt/venv"

IMAGE_ENV=(env -i "PATH=$R/opt/venv/bin:/usr/bin:/bin" HOME=/tmp PYTHONDONTWRITEBYTECODE=1
  "SMM_PANELS_FILE=$R/etc/smm/panels.yaml" "SMM_DATA_DIR=$R/var/lib/smm"
  "DAGSTER_HOME=$R/opt/dagster/dagster_home")

echo "== the image's CMD, as $([ ${#RUN_AS[@]} -gt 0 ] && echo nobody || id -un)"
"${RUN_AS[@]}" "${IMAGE_ENV[@]}" dagster code-server start -h 127.0.0.1 -p "$PORT" \
  -m smm_pipeline.definitions --location-name smm_pipeline > "$R/code-server.log" 2>&1 &
CS=$!
trap 'kill $CS 2>/dev/null || true' EXIT
python - "$PORT" <<'PY'
import sys, time
from dagster._grpc.client import DagsterGrpcClient
from dagster._grpc.types import ListRepositoriesResponse
from dagster._serdes import deserialize_value
client = DagsterGrpcClient(port=int(sys.argv[1]), host="127.0.0.1")
deadline = time.monotonic() + 90
while True:
    try:
        response = deserialize_value(client.list_repositories())
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
if not isinstance(response, ListRepositoriesResponse):
    sys.exit(f"the code server could not load the code location: {response}")
print("code server answers; repositories:", [s.repository_name for s in response.repository_symbols])
PY
kill $CS
wait $CS 2>/dev/null || true
trap - EXIT

if [ -n "${DAGSTER_PG_HOST:-}" ]; then
  echo "== check_orders on deploy/dagster.postgres.yaml (Postgres at $DAGSTER_PG_HOST:$DAGSTER_PG_PORT)"
  cp "$SRC/deploy/dagster.postgres.yaml" "$R/opt/dagster/dagster_home/dagster.yaml"
  "${RUN_AS[@]}" "${IMAGE_ENV[@]}" DAGSTER_PG_HOST="$DAGSTER_PG_HOST" \
    DAGSTER_PG_PORT="$DAGSTER_PG_PORT" DAGSTER_PG_USERNAME="$DAGSTER_PG_USERNAME" \
    DAGSTER_PG_PASSWORD="$DAGSTER_PG_PASSWORD" DAGSTER_PG_DB="$DAGSTER_PG_DB" \
    sh -c "cd $APP && dagster job execute -m smm_pipeline.definitions -j check_orders"
fi
echo "== done"
