#!/usr/bin/env bash
# One-time set-up of a machine for dine360.saas: Python virtualenv with the pinned
# dependencies, a Docker engine (installed and started only when none answers) and the
# locally built systemd base image (no container registry is needed).
#
#   scripts/setup.sh            # idempotent; safe to run again
#
# Environment: VENV (default .venv), SKIP_IMAGE=1 to skip the base image.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  command -v apt-get >/dev/null || { echo "apt-get not found: install $* by hand" >&2; return 1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 || {
    as_root apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  }
}

# --- 1. Python virtualenv -------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV"
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
fi
stamp="$VENV/.requirements.sha"
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python dependencies (requirements.txt)"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -r requirements.txt
  echo "$want" > "$stamp"
fi

# Host tools used by tests: a PostgreSQL client (psql) for checks and pgbench.
if ! command -v psql >/dev/null 2>&1; then
  log "installing postgresql-client"
  apt_install postgresql-client-15 || apt_install postgresql-client
fi

# PostgreSQL 15 server binaries for the module unit tests and benchmarks, which start
# their own throw-away server on loopback (no packaged cluster is created or started).
if [ ! -x /usr/lib/postgresql/15/bin/postgres ]; then
  log "installing postgresql-15 (server binaries for the unit tests)"
  as_root mkdir -p /etc/postgresql-common
  [ -f /etc/postgresql-common/createcluster.conf ] || \
    echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
  apt_install postgresql-15
fi

# promtool (Debian's prometheus package) for the alert rule unit tests, and PgBouncer for
# the PgBouncer exporter's unit tests (they start their own instance on a free port).
# Services the packages start with Debian's defaults are stopped: the tests need none.
if ! command -v promtool >/dev/null 2>&1; then
  log "installing prometheus (promtool, for the alert rule tests)"
  apt_install --no-install-recommends prometheus
  as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
if [ ! -x /usr/sbin/pgbouncer ]; then
  log "installing pgbouncer (for the PgBouncer exporter's unit tests)"
  apt_install --no-install-recommends pgbouncer
  as_root systemctl disable --now pgbouncer >/dev/null 2>&1 || true
fi

# The backup command's unit tests run it as the postgres user with the system Python and
# Debian's libraries, as on a node; the pgBackRest benchmark needs Debian's pgbackrest.
if ! /usr/bin/python3 -c 'import zstandard, lz4.frame, boto3, psycopg2' >/dev/null 2>&1; then
  log "installing python3-zstandard, python3-lz4, python3-boto3, python3-psycopg2 (backup command tests)"
  apt_install --no-install-recommends python3-zstandard python3-lz4 python3-boto3 python3-psycopg2
fi
if ! command -v pgbackrest >/dev/null 2>&1; then
  log "installing pgbackrest (the backup benchmark's peer)"
  apt_install --no-install-recommends pgbackrest
fi

# Headless Chromium for the browser test (tests/ha/test_browser.py, driven by Playwright with
# Debian's browser: Playwright's own browser download cannot work here).
if [ ! -x /usr/bin/chromium ]; then
  log "installing chromium (the browser test)"
  apt_install --no-install-recommends chromium fonts-dejavu-core
fi

# --- 2. Docker engine -----------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null 2>&1; then
    log "no Docker engine answers: installing docker.io"
    apt_install docker.io
  fi
  if ! docker info >/dev/null 2>&1; then
    log "starting dockerd in the background (log: /var/log/dockerd.log)"
    as_root sh -c 'nohup dockerd > /var/log/dockerd.log 2>&1 &'
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/dockerd.log" >&2; exit 1; }
  fi
else
  log "Docker engine answers; leaving it alone"
fi

# --- 3. systemd base image ------------------------------------------------------
if [ "${SKIP_IMAGE:-0}" != 1 ]; then
  "$ROOT/scripts/base-image.sh"
fi
log "done. Activate with: source $VENV/bin/activate"
