#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian 12 machine, check style and types
# (ruff, mypy: a finding fails the run), start the real services (a one-node Slurm cluster and
# an HTCondor personal pool), run the tests, stop them.
#
#   bash scripts/test.sh [PYTEST ARGS...]
#
# Environment:
#   SBT_BATCH_CACHE        cache for built wheels, root filesystems and images (~/.cache/sbt-batch)
#   SBT_BATCH_IMAGE_TESTS  1 = also build the container image and run the tests inside it (slow stage)
set -euo pipefail
cd "$(dirname "$0")/.."
export SBT_BATCH_CACHE=${SBT_BATCH_CACHE:-$HOME/.cache/sbt-batch}
export PIP_DISABLE_PIP_VERSION_CHECK=1
mkdir -p "$SBT_BATCH_CACHE"
venv=${SBT_BATCH_VENV:-.venv}
step() { printf '\n==> [%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

step "system packages"
bash scripts/install-system.sh
step "python environment ($venv)"
bash scripts/install-python.sh "$venv" "all,test"
step "horovod (patched 0.28.1, cached wheel)"
bash scripts/build-horovod.sh "$venv/bin/python"

# Before the services start, so that a finding fails the run in seconds. Rules and settings are in
# pyproject.toml ([tool.ruff], [tool.mypy]: files = sbt_batch/); both tools come with the test extra.
step "lint (ruff)"
"$venv/bin/ruff" check sbt_batch tests benchmarks scripts
step "types (mypy)"
"$venv/bin/mypy"

stop_services() {
  bash scripts/condor-pool.sh stop >/dev/null 2>&1 || true
  bash scripts/slurm-cluster.sh stop >/dev/null 2>&1 || true
}
trap stop_services EXIT
step "slurm cluster"
bash scripts/slurm-cluster.sh start
eval "$(bash scripts/slurm-cluster.sh env)"
step "htcondor pool"
bash scripts/condor-pool.sh start
eval "$(bash scripts/condor-pool.sh env)"

if [ "${SBT_BATCH_IMAGE_TESTS:-0}" = 1 ]; then
  step "container image"
  SBT_BATCH_IMAGE_SKIP_TESTS=1 bash scripts/build-image.sh   # tests/test_container_image.py runs the checks
fi

step "tests"
"$venv/bin/python" -m pytest -q --timeout 900 "$@"
