#!/usr/bin/env bash
# Starts and stops the real services the tests use: a private PostgreSQL cluster (Debian's package,
# installed when absent) and the local Kafka broker. Sourced by scripts/test.
set -euo pipefail

EP_STATE=${EP_STATE:-$PWD/.eventpipe/test-services}
PG_PORT=${PG_PORT:-55432}
PG_DATA=$EP_STATE/postgres
PG_SOCK=$EP_STATE/pgsock

pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$d" ] && command -v pg_ctl >/dev/null 2>&1; then d=$(dirname "$(command -v pg_ctl)"); fi
  echo "$d"
}

pg_install() {
  if [ -n "$(pg_bindir)" ]; then return 0; fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "PostgreSQL is not installed and this is not root: install Debian's postgresql package" >&2
    return 1
  fi
  echo "== installing PostgreSQL (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
}

as_pg_owner() {
  # initdb and postgres refuse to run as root
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
  pg_install
  local bin; bin=$(pg_bindir)
  mkdir -p "$EP_STATE" "$PG_SOCK"
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$EP_STATE" "$PG_SOCK"; fi
  if [ ! -s "$PG_DATA/PG_VERSION" ]; then
    as_pg_owner "$bin/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 >/dev/null
  fi
  if as_pg_owner "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then return 0; fi
  as_pg_owner "$bin/pg_ctl" -D "$PG_DATA" -l "$EP_STATE/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -k $PG_SOCK -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
  echo "== PostgreSQL on 127.0.0.1:$PG_PORT"
}

pg_stop() {
  local bin; bin=$(pg_bindir)
  [ -n "$bin" ] && [ -d "$PG_DATA" ] || return 0
  as_pg_owner "$bin/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
}

# Debian tools the suite runs for real: command, then the package that provides it. promtool and
# prometheus check the configs and scrape `eventpipe dev`; the fault suite loop-mounts a small ext4
# filesystem (mount, losetup, mkfs.ext4, chattr) and runs a private PostgreSQL as its owner (runuser);
# openssl makes the native-TLS test's certificate; the browser tier runs chromium headless, and node and
# npm for the vendors' JavaScript SDKs (tests/browser).
DEBIAN_TOOLS=(
  promtool:prometheus prometheus:prometheus
  losetup:mount mkfs.ext4:e2fsprogs chattr:e2fsprogs runuser:util-linux
  openssl:openssl
  chromium:chromium node:nodejs npm:npm
)

debian_tools_install() {
  local entry missing=()
  for entry in "${DEBIAN_TOOLS[@]}"; do
    command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" -ne 0 ]; then
    echo "== not root: the tests needing ${missing[*]} will be skipped; install them with:" >&2
    echo "   sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    return 0
  fi
  echo "== installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
