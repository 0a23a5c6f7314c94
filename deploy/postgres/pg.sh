#!/usr/bin/env bash
# Private PostgreSQL cluster from Debian's server packages, for local runs and tests.
#   deploy/postgres/pg.sh install|start|stop|status
# Data: var/pg (ignored), port 55432 on 127.0.0.1, superuser "gfg" (trust on loopback).
# The server never runs as root: when invoked as root it runs as the OS user "gfg".
# A second cluster beside it (the chaos test's) sets GFG_PG_VAR (its own data folder),
# GFG_PG_PORT, and GFG_PG_DATABASES (the databases start creates, space-separated).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
var=${GFG_PG_VAR:-$root/var/pg}
case $var in /*) ;; *) var="$PWD/$var" ;; esac
link=$var
# The server runs as a non-root user; if the checkout sits below a folder that user may
# not enter (say /root), the cluster lives in /var/tmp instead, named after the checkout.
if [ -L "$var" ]; then var=$(readlink -f "$var"); fi
port=${GFG_PG_PORT:-55432}
databases=${GFG_PG_DATABASES:-orders donations charities orders_test donations_test charities_test}
os_user=gfg

find_bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

install() {
  if [ -z "$(find_bin)" ]; then
    echo "postgres: installing Debian's PostgreSQL server packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
  fi
  if [ "$(id -u)" = 0 ] && ! id "$os_user" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$os_user"
  fi
}

as_server_user() {
  # From / so that a checkout the server user may not enter causes no warning.
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u "$os_user" -- "$@"); else "$@"; fi
}

running() { [ -f "$var/data/postmaster.pid" ] && as_server_user "$(find_bin)/pg_ctl" -D "$var/data" status >/dev/null 2>&1; }

start() {
  install
  bin=$(find_bin)
  mkdir -p "$var"
  if [ "$(id -u)" = 0 ]; then chown "$os_user" "$var"; fi
  if ! as_server_user test -w "$var"; then
    # Named after the checkout for the default folder, after the folder for any other.
    key=$root
    if [ -n "${GFG_PG_VAR:-}" ]; then key=$link; fi
    outside="/var/tmp/gfg-pg-$(printf '%s' "$key" | md5sum | cut -c1-12)"
    echo "postgres: $os_user cannot enter $var; keeping the cluster in $outside" >&2
    mkdir -p "$outside"
    chown "$os_user" "$outside"
    rmdir "$var" 2>/dev/null || true
    ln -sfn "$outside" "$link"
    var=$outside
  fi
  if [ ! -f "$var/data/PG_VERSION" ]; then
    as_server_user "$bin/initdb" -D "$var/data" -U gfg --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$var/initdb.log"
    cat >>"$var/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$var'
max_connections = 200
shared_buffers = 512MB
work_mem = 16MB
maintenance_work_mem = 128MB
synchronous_commit = on
wal_compression = on
max_wal_size = 2GB
checkpoint_timeout = 15min
logging_collector = off
log_min_messages = warning
CONF
  fi
  if running; then echo "postgres: already running on 127.0.0.1:$port"; return 0; fi
  as_server_user "$bin/pg_ctl" -D "$var/data" -l "$var/postgres.log" -w -t 60 start >/dev/null
  for db in $databases; do
    if ! as_server_user "$bin/psql" -h 127.0.0.1 -p "$port" -U gfg -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1; then
      as_server_user "$bin/createdb" -h 127.0.0.1 -p "$port" -U gfg "$db"
    fi
  done
  echo "postgres: up on 127.0.0.1:$port"
}

stop() {
  bin=$(find_bin) || { echo "postgres: not installed"; return 0; }
  if running; then
    as_server_user "$bin/pg_ctl" -D "$var/data" -m fast -w stop >/dev/null
    echo "postgres: stopped"
  else
    echo "postgres: not running"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) if running; then echo "postgres: up"; else echo "postgres: down"; exit 1; fi ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
