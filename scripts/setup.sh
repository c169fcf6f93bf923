#!/usr/bin/env bash
# Prerequisites for the demo and the tests on a Debian/Ubuntu machine, as root:
# Python venvs, a reachable MariaDB (a local one is installed and started when
# none answers), PostgreSQL (only with --postgres), headless chromium (only with
# --browser), and the local Slurm.
# Idempotent: what is already there is left alone. Sourced or run; prints what it did.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
: "${DJ_HOST:=127.0.0.1}" "${DJ_USER:=root}" "${DJ_PASS:=}"
WANT_PG=0 WANT_LEGACY=0 WANT_BROWSER=0
for arg in "$@"; do
  case "$arg" in
    --postgres) WANT_PG=1 ;;
    --legacy) WANT_LEGACY=1 ;;   # also a venv with DataJoint 0.14
    --browser) WANT_BROWSER=1 ;; # chromium and chromedriver, for the report's tests
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  if [ $apt_updated -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# --- Python ------------------------------------------------------------------
command -v python3 >/dev/null || apt_install python3
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
make_venv() {  # make_venv DIR EXTRA-PIP-ARGS...
  local dir="$1"; shift
  if [ ! -x "$dir/bin/djhpc" ] || [ "$ROOT/pyproject.toml" -nt "$dir/.installed" ]; then
    say "virtual environment $dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --upgrade pip >/dev/null
    "$dir/bin/pip" install -q -e "$ROOT[dev,postgres]" "$@"
    touch "$dir/.installed"
  fi
}
make_venv "$ROOT/.venv"
[ $WANT_LEGACY -eq 1 ] && make_venv "$ROOT/.venv014" "datajoint>=0.14.3,<0.15"

# --- MariaDB -----------------------------------------------------------------
if ! port_open "$DJ_HOST" "${DJ_PORT:-3306}"; then
  if [ "$DJ_HOST" != "127.0.0.1" ] && [ "$DJ_HOST" != "localhost" ]; then
    echo "Error: no database answers at $DJ_HOST:${DJ_PORT:-3306}. Start it or set DJ_HOST." >&2
    exit 2
  fi
  apt_install mariadb-server
  say "starting MariaDB"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  for _ in $(seq 60); do port_open 127.0.0.1 3306 && break; sleep 0.5; done
  port_open 127.0.0.1 3306 || { echo "Error: MariaDB did not start; see /var/log/mysql" >&2; exit 2; }
  # A fresh Debian MariaDB lets root in by socket only; the demo and tests use TCP.
  mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('${DJ_PASS}') OR unix_socket" 2>/dev/null || true
fi

# --- PostgreSQL (tests of DataJoint 2.x on PostgreSQL) -------------------------
if [ $WANT_PG -eq 1 ] && ! port_open 127.0.0.1 5432; then
  apt_install postgresql
  say "starting PostgreSQL (trust on 127.0.0.1: a test machine only)"
  version="$(ls /etc/postgresql | sort -V | tail -1)"
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  grep -q '^host all all 127.0.0.1/32 trust' "$hba" || sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 60); do port_open 127.0.0.1 5432 && break; sleep 0.5; done
fi

# --- A headless browser (the tests of `djhpc report` open it in one) ----------------
if [ $WANT_BROWSER -eq 1 ]; then apt_install chromium chromium-driver; fi

# --- Slurm ---------------------------------------------------------------------
bash "$HERE/local-slurm.sh" start >/dev/null
say "local Slurm is up"
