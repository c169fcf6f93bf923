#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint and types, the unit tests, then the
# real tier (real databases, real Slurm) on every supported combination:
#   DataJoint 2.x + MariaDB, DataJoint 2.x + PostgreSQL, DataJoint 0.14 + MariaDB.
# Extra arguments go to pytest (e.g. -k retry -x).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
bash "$HERE/setup.sh" --postgres --legacy --browser
cd "$ROOT"
export DJ_HOST="${DJ_HOST:-127.0.0.1}"

echo "==> ruff and mypy"
.venv/bin/ruff check djhpc tests benchmarks
.venv/bin/mypy djhpc

run() {  # run LABEL VENV BACKEND-ENV... -- PYTEST-ARGS...
  local label="$1" venv="$2"; shift 2
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  echo "==> $label"
  # Three workers: the real tier mostly waits on Slurm, sleeps and the database.
  env "${envs[@]}" "$venv/bin/python" -m pytest -q -n 3 "$@"
}

run "unit tests + real tier: DataJoint 2.x, MariaDB" .venv \
  DJ_BACKEND=mysql DJ_USER="${DJ_USER:-root}" DJ_PASS="${DJ_PASS:-}" DJ_PORT=3306 -- tests "$@"
run "real tier: DataJoint 2.x, PostgreSQL" .venv \
  DJ_BACKEND=postgresql DJ_USER=postgres DJ_PASS= DJ_PORT=5432 -- tests/real -m "not once" "$@"
run "real tier: DataJoint 0.14, MariaDB" .venv014 \
  DJ_BACKEND=mysql DJ_USER="${DJ_USER:-root}" DJ_PASS="${DJ_PASS:-}" DJ_PORT=3306 -- tests/real -m "not once" "$@"
