#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite. Extra arguments go to pytest.
#
# Two pytest-xdist workers (PYTEST_WORKERS overrides; 0 runs serially), whole test files per worker
# (--dist loadfile: a module's fixtures, such as the playground of test_readme_commands, start once). Most of
# the suite waits on real processes (Envoy, Prometheus, Dagster, releases ticking every second) with a core
# mostly idle, so two workers take the suite on 2 cores from about 24 to about 15 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
