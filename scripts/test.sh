#!/usr/bin/env bash
# Runs the whole test suite (the same command CI runs): creates .venv if missing,
# installs ptjax with its test extra, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PTJAX_EXTRAS="[test]"
source scripts/venv.sh
exec .venv/bin/python -m pytest -x -q "$@"
