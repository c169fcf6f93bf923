#!/usr/bin/env bash
# From nothing to a populated example table through a real Slurm, as root on
# Debian/Ubuntu: installs what is missing, makes the example's data, then runs
# `djhpc submit MyTable --wait` and `djhpc status` from examples/, and ends
# by writing the run's report (`djhpc report`) and printing where it is.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
bash "$HERE/setup.sh"
export DJ_HOST="${DJ_HOST:-127.0.0.1}" DJ_USER="${DJ_USER:-root}" DJ_PASS="${DJ_PASS:-}"
export PATH="$ROOT/.venv/bin:$PATH"
cd "$ROOT/examples"
echo "==> example data"
python make_data.py
echo "==> djhpc doctor"
djhpc doctor
echo "==> djhpc submit MyTable --wait"
djhpc submit MyTable --yes --wait || true   # a failed key is shown, not fatal for the demo
echo "==> djhpc status"
djhpc status
echo "==> djhpc report MyTable"
djhpc report MyTable -o "$ROOT/examples/djhpc-report.html" >/dev/null
echo "The run's report (open it in a browser): $ROOT/examples/djhpc-report.html"
