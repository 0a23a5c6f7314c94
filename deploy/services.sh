#!/usr/bin/env bash
# Starts or stops the three services in the background (uvicorn, one process each).
#   deploy/services.sh start|stop|status
# Logs: var/log/<service>.log; pids: var/run/<service>.pid.
# GFG_REPLICA=1 (make run REPLICA=1): charities reads its public totals from the hot standby
# (deploy/postgres/pg.sh standby-start) unless GFG_CHARITIES_READ_DSN names another server.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
py="$root/.venv/bin/python"
services=(orders:8001 donations:8002 charities:8003)
mkdir -p var/log var/run

secret() {
  if [ ! -s var/jwt-secret ]; then
    # umask before the file exists: it is never readable by others, not even briefly.
    (umask 077 && rm -f var/jwt-secret.tmp &&
      "$py" -c 'import secrets; print(secrets.token_urlsafe(48))' > var/jwt-secret.tmp &&
      mv var/jwt-secret.tmp var/jwt-secret)
  fi
  cat var/jwt-secret
}

running() { [ -f "var/run/$1.pid" ] && kill -0 "$(cat "var/run/$1.pid")" 2>/dev/null; }

ready() { "$py" - "$1" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

start() {
  # With the issuer's public key configured (EdDSA) the services get no secret at all.
  if [ -z "${GFG_JWT_PUBLIC_KEY_FILE:-}" ] && [ -z "${GFG_JWT_JWKS_FILE:-}" ]; then
    GFG_JWT_SECRET=$(secret)
    export GFG_JWT_SECRET
  else
    unset GFG_JWT_SECRET
  fi
  export GFG_CHARITIES_URL=${GFG_CHARITIES_URL:-http://127.0.0.1:8003}
  if [ -n "${GFG_REPLICA:-}" ]; then
    export GFG_CHARITIES_READ_DSN=${GFG_CHARITIES_READ_DSN:-postgresql://gfg@127.0.0.1:${GFG_PG_STANDBY_PORT:-55433}/${GFG_CHARITIES_DB:-charities}}
    if running charities; then
      echo "charities: already running; make down first to move its totals reads to the standby" >&2
    fi
  fi
  # charities first: donations asks it about projects.
  for entry in charities:8003 donations:8002 orders:8001; do
    name=${entry%%:*}; port=${entry##*:}
    if running "$name"; then echo "$name: already running"; continue; fi
    workers=1
    # orders takes every storefront's traffic: two processes (their outbox relays share
    # the work by bucket). The consumers are one process each: Kafka partitions are the
    # unit of their scale-out, across machines.
    if [ "$name" = orders ]; then workers=${GFG_ORDERS_WORKERS:-2}; fi
    if [ "$name" = donations ]; then workers=${GFG_DONATIONS_WORKERS:-1}; fi
    nohup "$py" -m uvicorn "services.$name.app:create_app" --factory --workers "$workers" \
      --host 127.0.0.1 --port "$port" --no-access-log --loop uvloop --http httptools \
      >>"var/log/$name.log" 2>&1 &
    echo $! > "var/run/$name.pid"
  done
  for entry in "${services[@]}"; do
    name=${entry%%:*}; port=${entry##*:}
    for _ in $(seq 1 600); do
      if ready "$port"; then break; fi
      if ! running "$name"; then
        echo "$name: exited during start; last lines of var/log/$name.log:" >&2
        tail -n 30 "var/log/$name.log" >&2
        return 1
      fi
      sleep 0.1
    done
    if ! ready "$port"; then echo "$name: /readyz not 200 after 60 s (see var/log/$name.log)" >&2; return 1; fi
    echo "$name: ready on http://127.0.0.1:$port"
  done
}

stop() {
  for entry in "${services[@]}"; do
    name=${entry%%:*}
    if running "$name"; then
      pid=$(cat "var/run/$name.pid")
      kill -TERM "$pid"
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      echo "$name: stopped"
    fi
    rm -f "var/run/$name.pid"
  done
}

status() {
  rc=0
  for entry in "${services[@]}"; do
    name=${entry%%:*}; port=${entry##*:}
    if running "$name" && ready "$port"; then echo "$name: ready"; else echo "$name: down"; rc=1; fi
  done
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  secret) secret ;;
  *) echo "usage: $0 start|stop|status|secret" >&2; exit 2 ;;
esac
