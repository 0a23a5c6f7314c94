#!/usr/bin/env bash
# Private PostgreSQL cluster from Debian's server packages, for local runs and tests.
#   deploy/postgres/pg.sh install|start|stop|status
#   deploy/postgres/pg.sh standby-start|standby-stop|standby-status|standby-remove
# Data: var/pg (ignored), port 55432 on 127.0.0.1, superuser "gfg" (trust on loopback).
# The server never runs as root: when invoked as root it runs as the OS user "gfg".
# A second cluster beside it (the chaos test's) sets GFG_PG_VAR (its own data folder),
# GFG_PG_PORT, and GFG_PG_DATABASES (the databases start creates, space-separated).
# The hot standby (docs/OPERATIONS.md, "A read replica"): a streaming replica of the whole
# cluster, copied by pg_basebackup over loopback into GFG_PG_STANDBY_VAR (default: the data
# folder's name + "-standby"), serving read-only queries on GFG_PG_STANDBY_PORT (55433),
# fed through the physical replication slot GFG_PG_SLOT (gfg_standby) on the primary.
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
standby_link=${GFG_PG_STANDBY_VAR:-$link-standby}
case $standby_link in /*) ;; *) standby_link="$PWD/$standby_link" ;; esac
standby_port=${GFG_PG_STANDBY_PORT:-55433}
slot=${GFG_PG_SLOT:-gfg_standby}
databases=${GFG_PG_DATABASES:-orders donations charities orders_test donations_test charities_test}
os_user=gfg
# When checkpoints come: after this much time, or after about max_wal_size / 1.9 of WAL.
max_wal_size=8GB
checkpoint_timeout=30min

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

# lz4 if this server was built with it (Debian's is), else pglz ("on").
wal_compression_method() {
  if as_server_user "$1/postgres" -D "$2" -C wal_compression -c wal_compression=lz4 >/dev/null 2>&1; then
    echo lz4
  else
    echo on
  fi
}

# A cluster created with older settings gets the WAL settings written above by ALTER SYSTEM
# (postgresql.auto.conf), applied by a reload: none of them needs a restart.
wal_settings() {
  local setting name value changed=""
  for setting in "wal_compression $(wal_compression_method "$1" "$var/data")" \
    "max_wal_size $max_wal_size" "checkpoint_timeout $checkpoint_timeout"; do
    read -r name value <<<"$setting"
    # "on" is what an older cluster's file says; SHOW names it pglz.
    if [ "$value" != on ] && [ "$(primary_sql "SHOW $name")" != "$value" ]; then
      primary_sql "ALTER SYSTEM SET $name = '$value'" >/dev/null
      changed=1
    fi
  done
  if [ -n "$changed" ]; then primary_sql "SELECT pg_reload_conf()" >/dev/null; fi
}

running_in() { [ -f "$1/data/postmaster.pid" ] && as_server_user "$(find_bin)/pg_ctl" -D "$1/data" status >/dev/null 2>&1; }
running() { running_in "$var"; }

# Prints the folder a cluster lives in: $1 (where $2 links to, the folder as named), or,
# when the server user may not enter it, a folder in /var/tmp named after $3 that $2
# becomes a link to.
server_folder() {
  local folder=$1 named=$2 key=$3 outside
  if [ -L "$named" ]; then folder=$(readlink -f "$named"); fi
  mkdir -p "$folder"
  if [ "$(id -u)" = 0 ]; then chown "$os_user" "$folder"; fi
  if ! as_server_user test -w "$folder"; then
    outside="/var/tmp/gfg-pg-$(printf '%s' "$key" | md5sum | cut -c1-12)"
    echo "postgres: $os_user cannot enter $folder; keeping the cluster in $outside" >&2
    mkdir -p "$outside"
    chown "$os_user" "$outside"
    rmdir "$folder" 2>/dev/null || true
    ln -sfn "$outside" "$named"
    folder=$outside
  fi
  echo "$folder"
}

start() {
  install
  bin=$(find_bin)
  # Named after the checkout for the default folder, after the folder for any other.
  key=$root
  if [ -n "${GFG_PG_VAR:-}" ]; then key=$link; fi
  var=$(server_folder "$var" "$link" "$key")
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
# The write-ahead log (docs/OPERATIONS.md, "PostgreSQL settings"; measured in BENCHMARKS.md,
# "PostgreSQL settings and indexes"). Every page changed after a checkpoint is written whole
# once more (full_page_writes stays on): lz4 compresses those images for a fifth of pglz's
# CPU (pglz, "on", where the server lacks lz4), and checkpoints come after 30 minutes or
# about 4 GB of WAL (max_wal_size / 1.9), not every 1 GB. Older clusters get the same at
# start (wal_settings below).
wal_compression = $(wal_compression_method "$bin" "$var/data")
max_wal_size = $max_wal_size
checkpoint_timeout = $checkpoint_timeout
logging_collector = off
log_min_messages = warning
# A hot standby may stream from this cluster (pg.sh standby-start); a slot it left behind
# holds at most this much WAL before the slot is given up (the standby is then copied anew).
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
max_slot_wal_keep_size = 8GB
CONF
  fi
  if running; then
    echo "postgres: already running on 127.0.0.1:$port"
  else
    as_server_user "$bin/pg_ctl" -D "$var/data" -l "$var/postgres.log" -w -t 60 start >/dev/null
    wal_settings "$bin"
    echo "postgres: up on 127.0.0.1:$port"
  fi
  # Also on a running server: a service database dropped by hand is made again (empty;
  # the service's migrations fill it).
  for db in $databases; do
    if ! as_server_user "$bin/psql" -h 127.0.0.1 -p "$port" -U gfg -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1; then
      as_server_user "$bin/createdb" -h 127.0.0.1 -p "$port" -U gfg "$db"
      echo "postgres: created database $db"
    fi
  done
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

primary_sql() { as_server_user "$(find_bin)/psql" -h 127.0.0.1 -p "$port" -U gfg -d postgres -v ON_ERROR_STOP=1 -tAc "$1"; }

standby_start() {
  install
  bin=$(find_bin)
  if ! running; then
    echo "postgres: the primary on 127.0.0.1:$port is not running (pg.sh start first)" >&2
    return 1
  fi
  svar=$(server_folder "$standby_link" "$standby_link" "$standby_link")
  if [ ! -f "$svar/data/PG_VERSION" ]; then
    level=$(primary_sql "SHOW wal_level")
    if [ "$level" = minimal ]; then
      echo "postgres: the primary has wal_level=minimal; set wal_level = replica and restart it" >&2
      return 1
    fi
    if [ -z "$(primary_sql "SELECT 1 FROM pg_hba_file_rules WHERE 'replication' = ANY(database) AND type = 'host' AND address = '127.0.0.1'")" ]; then
      echo "host replication gfg 127.0.0.1/32 trust" >>"$var/data/pg_hba.conf"
      primary_sql "SELECT pg_reload_conf()" >/dev/null
    fi
    primary_sql "SELECT pg_create_physical_replication_slot('$slot') WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '$slot')" >/dev/null
    as_server_user rm -rf "$svar/data"
    # -R writes primary_conninfo and primary_slot_name and creates standby.signal.
    as_server_user "$bin/pg_basebackup" -h 127.0.0.1 -p "$port" -U gfg -D "$svar/data" \
      -R -S "$slot" -X stream -c fast
    cat >>"$svar/data/postgresql.conf" <<CONF
# The standby (pg.sh standby-start): its own port and sockets, read-only queries while it
# replays; feedback keeps the primary's vacuum from removing rows its queries still read
# (rather than cancelling those queries).
port = $standby_port
unix_socket_directories = '$svar'
hot_standby = on
hot_standby_feedback = on
max_standby_streaming_delay = 30s
CONF
  fi
  if running_in "$svar"; then echo "postgres: standby already running on 127.0.0.1:$standby_port"; return 0; fi
  as_server_user "$bin/pg_ctl" -D "$svar/data" -l "$svar/postgres.log" -w -t 60 start >/dev/null
  echo "postgres: standby up on 127.0.0.1:$standby_port, streaming from 127.0.0.1:$port (slot $slot)"
}

standby_folder() { if [ -L "$standby_link" ]; then readlink -f "$standby_link"; else echo "$standby_link"; fi; }

standby_stop() {
  local svar
  svar=$(standby_folder)
  [ -f "$svar/data/PG_VERSION" ] || return 0  # no standby here: nothing to say
  bin=$(find_bin) || { echo "postgres: not installed"; return 0; }
  if running_in "$svar"; then
    as_server_user "$bin/pg_ctl" -D "$svar/data" -m fast -w stop >/dev/null
    echo "postgres: standby stopped${1- (its slot $slot keeps WAL on the primary until it returns)}"
  else
    echo "postgres: standby not running"
  fi
}

# Stops the standby, deletes its copy and drops its slot, so the primary keeps no WAL for it.
standby_remove() {
  local svar
  svar=$(standby_folder)
  standby_stop ""
  if running; then
    # The primary's walsender may hold the slot for a moment after the standby stopped.
    for _ in $(seq 1 100); do
      [ -z "$(primary_sql "SELECT 1 FROM pg_replication_slots WHERE slot_name = '$slot'")" ] && break
      primary_sql "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots WHERE slot_name = '$slot' AND NOT active" >/dev/null
      sleep 0.1
    done
  fi
  rm -rf "$svar/data"
  echo "postgres: standby removed"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) if running; then echo "postgres: up"; else echo "postgres: down"; exit 1; fi ;;
  standby-start) standby_start ;;
  standby-stop) standby_stop ;;
  standby-status)
    if running_in "$(standby_folder)"; then echo "postgres: standby up"; else echo "postgres: standby down"; exit 1; fi ;;
  standby-remove) standby_remove ;;
  *) echo "usage: $0 install|start|stop|status|standby-start|standby-stop|standby-status|standby-remove" >&2; exit 2 ;;
esac
