#!/usr/bin/env bash
# `make test`: brings up PostgreSQL and Kafka if they are down, runs the whole suite
# against them, and stops again whatever it started. Extra arguments go to pytest.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"

started=()
if ! deploy/postgres/pg.sh status >/dev/null 2>&1; then
  deploy/postgres/pg.sh start || exit 1
  started+=(postgres)
fi
if ! deploy/kafka/kafka.sh status >/dev/null 2>&1; then
  deploy/kafka/kafka.sh start || { [ ${#started[@]} -gt 0 ] && deploy/postgres/pg.sh stop; exit 1; }
  started+=(kafka)
fi
cleanup() {
  for s in "${started[@]}"; do
    case $s in
      postgres) deploy/postgres/pg.sh stop ;;
      kafka) deploy/kafka/kafka.sh stop ;;
    esac
  done
}
trap cleanup EXIT

mkdir -p test-artifacts
.venv/bin/python -m pytest "$@"
rc=$?
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
fi
exit $rc
