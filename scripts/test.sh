#!/usr/bin/env bash
# Runs the whole test suite (the same command CI runs): creates .venv if missing,
# installs ptjax with its test extra, then runs pytest. Extra arguments go to pytest.
# Two pytest-xdist workers, each test file whole on one worker (--dist loadfile: module
# fixtures run once): most tests are single-core bound (subprocess start-up, XLA compiles),
# so two workers on CI's 2 cores take the suite from ~25 to ~18 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PTJAX_EXTRAS="[test]"
source scripts/venv.sh
exec .venv/bin/python -m pytest -x -q -n 2 --dist loadfile "$@"
