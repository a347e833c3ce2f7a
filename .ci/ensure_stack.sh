#!/usr/bin/env bash
# What `make stack` / `make test-stack` need beyond the venv: PostgreSQL server programs
# (Debian `postgresql`) and the `stack` extra (psycopg2-binary, moto[server], boto3).
# Exits non-zero when PostgreSQL cannot be installed; tests/integration then skips, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import psycopg2, moto.server, boto3" 2>/dev/null \
  || "$PY" -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,stack]'
if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
  echo "ensure_stack: PostgreSQL is not installed and this user cannot apt-get install it" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_stack: PostgreSQL is not installed and there is no apt-get here" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
