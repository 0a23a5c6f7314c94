#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft) from the official jars, for local runs and tests.
#   deploy/kafka/kafka.sh fetch|start|stop|status
# Jars: deploy/kafka/libs (Maven, pom.xml here). Data and logs: var/kafka (ignored).
# A second broker beside it (the chaos test's) sets GFG_KAFKA_VAR (its own data folder),
# GFG_KAFKA_PORT and GFG_KAFKA_CONTROLLER_PORT; start, stop and status then act on that one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
var=${GFG_KAFKA_VAR:-$root/var/kafka}
case $var in /*) ;; *) var="$PWD/$var" ;; esac
port=${GFG_KAFKA_PORT:-9092}
controller_port=${GFG_KAFKA_CONTROLLER_PORT:-9093}
pidfile="$var/kafka.pid"

fetch() {
  if [ ! -f "$here/libs/.complete" ]; then
    echo "kafka: fetching broker jars with Maven (once)"
    rm -rf "$here/libs"
    mvn -q -B -f "$here/pom.xml" package
    touch "$here/libs/.complete"
  fi
}

java_opts=(-Xms512m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$here/log4j2.yaml" -cp "$here/libs/*")
java_cmd() { java "${java_opts[@]}" "$@"; }

# The broker JVM of this checkout, whatever the pidfile says.
broker_pid() { pgrep -f "kafka.Kafka $var/server.properties" | head -n 1; }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null || [ -n "$(broker_pid)" ]; }

ready() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

start() {
  fetch
  if running; then echo "kafka: already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; return 0; fi
  mkdir -p "$var/data"
  cat > "$var/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$var/data
num.partitions=12
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=134217728
PROPS
  if [ ! -f "$var/data/meta.properties" ]; then
    cluster_id=$(java_cmd kafka.tools.StorageTool random-uuid)
    java_cmd kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$var/server.properties" >/dev/null
  fi
  # Started directly (not through a function) so that $! is the JVM itself.
  nohup java "${java_opts[@]}" kafka.Kafka "$var/server.properties" >"$var/kafka.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 300); do
    if grep -q "Kafka Server started" "$var/kafka.log" 2>/dev/null && ready; then echo "kafka: up on 127.0.0.1:$port (pid $(cat "$pidfile"))"; return 0; fi
    if ! running; then echo "kafka: exited during start; see $var/kafka.log" >&2; tail -20 "$var/kafka.log" >&2; return 1; fi
    sleep 0.1
  done
  echo "kafka: not listening after 30 s; see $var/kafka.log" >&2
  return 1
}

stop() {
  pid=$(broker_pid || true)
  if [ -z "$pid" ] && running; then pid=$(cat "$pidfile"); fi
  if [ -z "$pid" ]; then rm -f "$pidfile"; echo "kafka: not running"; return 0; fi
  kill -TERM "$pid"
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; echo "kafka: stopped"; return 0; }
    sleep 0.1
  done
  echo "kafka: still running after 30 s, killing" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) if running && ready; then echo "kafka: up"; else echo "kafka: down"; exit 1; fi ;;
  *) echo "usage: $0 fetch|start|stop|status" >&2; exit 2 ;;
esac
