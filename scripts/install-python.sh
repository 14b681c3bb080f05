#!/usr/bin/env bash
# Create (or update) a virtual environment and install sbt-batch with the given extras.
# Usage: scripts/install-python.sh VENV_DIR [EXTRAS]   (EXTRAS defaults to "train")
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
extras=${2:-train}
python=${PYTHON:-$(command -v python3.11 || command -v python3)}

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
"$venv/bin/python" -m pip install -q -e ".[$extras]"
echo "install-python: sbt-batch installed in $venv with extras [$extras]"
