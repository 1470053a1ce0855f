#!/usr/bin/env bash
# The code gates, run by CI before the tests: lint, format, import boundaries, types (mypy, strict on the pure modules).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> ruff check";        .venv/bin/ruff check .
echo "==> ruff format";       .venv/bin/ruff format --check .
echo "==> import boundaries"; .venv/bin/lint-imports
echo "==> mypy";            .venv/bin/mypy
