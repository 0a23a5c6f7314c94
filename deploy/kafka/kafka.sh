#!/usr/bin/env bash
# Apache Kafka (KRaft) from the official jars, for local runs and tests.
#   deploy/kafka/kafka.sh fetch|start|stop|status|bootstrap|env [NODE]
# Jars: deploy/kafka/libs (Maven, pom.xml here).
#
# One node by default: data and logs in var/kafka (ignored), 127.0.0.1:9092, controller 9093.
# A second broker beside it (a test's) sets GFG_KAFKA_VAR (its own data folder),
# GFG_KAFKA_PORT and GFG_KAFKA_CONTROLLER_PORT; every action then acts on that one.
#
# GFG_KAFKA_NODES=3 (`make run KAFKA_NODES=3`) runs a cluster instead: three combined
# broker+controller nodes, a three-voter controller quorum, data in var/kafka-cluster/nodeN,
# brokers on 9092 9094 9096 and controllers on 9093 9095 9097 (GFG_KAFKA_PORTS and
# GFG_KAFKA_CONTROLLER_PORTS, space-separated, choose others). Every topic, internal ones
# included, gets replication factor 3 and min.insync.replicas=2, and no out-of-sync replica
# is ever elected leader, so an acks=all write survives the loss of any one node.
# With a NODE number (1..N) start, stop and status act on that node only.
# `bootstrap` prints the brokers' addresses; `env` the settings the services need for them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
nodes=${GFG_KAFKA_NODES:-1}
case $nodes in '' | *[!0-9]* | 0) echo "kafka: GFG_KAFKA_NODES must be a positive number" >&2; exit 2 ;; esac
if [ "$nodes" = 1 ]; then default_var=$root/var/kafka; else default_var=$root/var/kafka-cluster; fi
var=${GFG_KAFKA_VAR:-$default_var}
case $var in /*) ;; *) var="$PWD/$var" ;; esac
port=${GFG_KAFKA_PORT:-9092}
controller_port=${GFG_KAFKA_CONTROLLER_PORT:-9093}

# Per node (index 1..N): broker port, controller port, folder (server.properties, data, log).
declare -a ports cports dirs
if [ "$nodes" = 1 ]; then
  ports[1]=$port; cports[1]=$controller_port; dirs[1]=$var
else
  read -r -a given_ports <<<"${GFG_KAFKA_PORTS:-}"
  read -r -a given_cports <<<"${GFG_KAFKA_CONTROLLER_PORTS:-}"
  for i in $(seq 1 "$nodes"); do
    ports[i]=${given_ports[i - 1]:-$((port + 2 * (i - 1)))}
    cports[i]=${given_cports[i - 1]:-$((controller_port + 2 * (i - 1)))}
    dirs[i]=$var/node$i
  done
fi
replication=$((nodes < 3 ? nodes : 3))
min_insync=$((replication > 1 ? replication - 1 : 1))

fetch() {
  if [ ! -f "$here/libs/.complete" ]; then
    echo "kafka: fetching broker jars with Maven (once)"
    rm -rf "$here/libs"
    mvn -q -B -f "$here/pom.xml" package
    touch "$here/libs/.complete"
  fi
}

# Several JVMs share the machine in a cluster: smaller heaps each.
if [ "$nodes" = 1 ]; then heap=(-Xms512m -Xmx1g); else heap=(-Xms256m -Xmx512m); fi
java_opts=("${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$here/log4j2.yaml" -cp "$here/libs/*")
java_cmd() { java "${java_opts[@]}" "$@"; }

# The broker JVM of node $1 of this checkout, whatever its pidfile says.
broker_pid() { pgrep -f "kafka.Kafka ${dirs[$1]}/server.properties" | head -n 1; }

# Whether process $1 runs: one that has exited but is not yet reaped (a zombie, as a
# broker killed with SIGKILL is until init collects it) does not.
alive() {
  kill -0 "$1" 2>/dev/null && ! grep -qE '^[0-9]+ \(.*\) Z' "/proc/$1/stat" 2>/dev/null
}

running() {
  local pidfile="${dirs[$1]}/kafka.pid"
  { [ -f "$pidfile" ] && alive "$(cat "$pidfile")"; } || [ -n "$(broker_pid "$1")" ]
}

ready() { (exec 3<>"/dev/tcp/127.0.0.1/${ports[$1]}") 2>/dev/null; }

bootstrap() {
  local i out=""
  for i in $(seq 1 "$nodes"); do out+="${out:+,}127.0.0.1:${ports[i]}"; done
  echo "$out"
}

properties() {
  local i=$1 dir=${dirs[$1]} quorum j
  if [ "$nodes" = 1 ]; then
    quorum="controller.quorum.bootstrap.servers=127.0.0.1:${cports[1]}"
  else
    quorum="controller.quorum.voters="
    for j in $(seq 1 "$nodes"); do quorum+="$([ "$j" = 1 ] || echo ,)$j@127.0.0.1:${cports[j]}"; done
  fi
  cat <<PROPS
process.roles=broker,controller
node.id=$i
$quorum
listeners=PLAINTEXT://127.0.0.1:${ports[i]},CONTROLLER://127.0.0.1:${cports[i]}
advertised.listeners=PLAINTEXT://127.0.0.1:${ports[i]}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=12
auto.create.topics.enable=false
offsets.topic.replication.factor=$replication
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=$replication
transaction.state.log.min.isr=$min_insync
share.coordinator.state.topic.replication.factor=$replication
share.coordinator.state.topic.min.isr=$min_insync
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=134217728
PROPS
  if [ "$nodes" != 1 ]; then
    cat <<PROPS
default.replication.factor=$replication
min.insync.replicas=$min_insync
unclean.leader.election.enable=false
PROPS
  fi
}

# Writes node $1's configuration and formats its storage once (a cluster shares one id).
prepare() {
  local i=$1 dir=${dirs[$1]} cluster_id
  mkdir -p "$dir/data"
  properties "$i" >"$dir/server.properties"
  [ -f "$dir/data/meta.properties" ] && return 0
  if [ "$nodes" = 1 ]; then
    cluster_id=$(java_cmd kafka.tools.StorageTool random-uuid)
    java_cmd kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$dir/server.properties" >/dev/null
  else
    [ -s "$var/cluster-id" ] || java_cmd kafka.tools.StorageTool random-uuid >"$var/cluster-id"
    java_cmd kafka.tools.StorageTool format -t "$(cat "$var/cluster-id")" -c "$dir/server.properties" >/dev/null
  fi
}

launch() {
  local i=$1 dir=${dirs[$1]}
  if running "$i"; then return 0; fi
  if ready "$i"; then echo "kafka: 127.0.0.1:${ports[i]} is taken by another process" >&2; return 1; fi
  prepare "$i"
  # Started directly (not through a function) so that $! is the JVM itself.
  nohup java "${java_opts[@]}" kafka.Kafka "$dir/server.properties" >"$dir/kafka.log" 2>&1 &
  echo $! >"$dir/kafka.pid"
}

# Waits for node $1: a cluster node starts only once a majority of the quorum runs. A
# broker with many partitions on disk (every test namespace leaves its topics) loads
# them all before it listens, about 90 s for 4,800 of them here: it is given 300 s, and
# says every 15 s that it is still starting.
await_node() {
  local i=$1 dir=${dirs[$1]} tick
  for tick in $(seq 1 3000); do
    if grep -q "Kafka Server started" "$dir/kafka.log" 2>/dev/null && ready "$i"; then
      echo "kafka: up on 127.0.0.1:${ports[i]} (pid $(cat "$dir/kafka.pid"))"; return 0
    fi
    if ! running "$i"; then echo "kafka: exited during start; see $dir/kafka.log" >&2; tail -20 "$dir/kafka.log" >&2; return 1; fi
    if ((tick % 150 == 0)); then
      echo "kafka: still starting on 127.0.0.1:${ports[i]} after $((tick / 10)) s ($(find "$dir/data" -mindepth 1 -maxdepth 1 -type d | wc -l) partition folders to load)"
    fi
    sleep 0.1
  done
  echo "kafka: not listening after 300 s; see $dir/kafka.log" >&2
  return 1
}

start() {
  fetch
  local i todo=() rc=0
  mkdir -p "$var"
  # Every node's storage is formatted (a JVM run each) before the first node starts: a
  # started node waits only so long for a quorum of the others (60 s), and on a loaded
  # machine formatting them one after the other after it can take longer.
  for i in "$@"; do running "$i" || prepare "$i"; done
  for i in "$@"; do
    if running "$i"; then
      echo "kafka: already running (pid $(cat "${dirs[i]}/kafka.pid" 2>/dev/null || broker_pid "$i")) on 127.0.0.1:${ports[i]}"
    else
      launch "$i" || return 1
      todo+=("$i")
    fi
  done
  for i in "${todo[@]}"; do await_node "$i" || rc=1; done
  return $rc
}

# Sends TERM to node $1 and prints its pid (nothing when it is not running).
signal_node() {
  local i=$1 pid
  pid=$(broker_pid "$i" || true)
  if [ -z "$pid" ] && running "$i"; then pid=$(cat "${dirs[$i]}/kafka.pid"); fi
  if [ -n "$pid" ]; then kill -TERM "$pid"; echo "$pid"; fi
}

await_exit() {
  local i=$1 pid=$2 label=${cluster:+ (node $1)}
  if [ -z "$pid" ]; then rm -f "${dirs[i]}/kafka.pid"; echo "kafka: not running$label"; return 0; fi
  for _ in $(seq 1 300); do
    alive "$pid" || { rm -f "${dirs[i]}/kafka.pid"; echo "kafka: stopped$label"; return 0; }
    sleep 0.1
  done
  echo "kafka: still running after 30 s, killing$label" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "${dirs[i]}/kafka.pid"
}

# All at once: a cluster node stopped last would wait in vain for a quorum to leave it.
stop() {
  local i
  local -A pids=()
  for i in "$@"; do pids[$i]=$(signal_node "$i"); done
  for i in "$@"; do await_exit "$i" "${pids[$i]}"; done
}

status() {
  local i rc=0
  for i in "$@"; do
    if running "$i" && ready "$i"; then echo "kafka: up${cluster:+ (node $i, 127.0.0.1:${ports[i]})}"
    else echo "kafka: down${cluster:+ (node $i, 127.0.0.1:${ports[i]})}"; rc=1; fi
  done
  return $rc
}

cluster=""
if [ "$nodes" != 1 ]; then cluster=1; fi
action=${1:-}
if [ -n "${2:-}" ]; then
  case $2 in *[!0-9]* | 0) echo "kafka: no node $2" >&2; exit 2 ;; esac
  [ "$2" -le "$nodes" ] || { echo "kafka: no node $2 (GFG_KAFKA_NODES=$nodes)" >&2; exit 2; }
  targets=("$2")
else
  mapfile -t targets < <(seq 1 "$nodes")
fi
case "$action" in
  fetch) fetch ;;
  start) start "${targets[@]}" ;;
  stop) stop "${targets[@]}" ;;
  status) status "${targets[@]}" ;;
  bootstrap) bootstrap ;;
  env)
    echo "GFG_KAFKA_BOOTSTRAP=$(bootstrap)"
    echo "GFG_KAFKA_REPLICATION_FACTOR=$replication"
    echo "GFG_KAFKA_MIN_INSYNC=$min_insync"
    ;;
  *) echo "usage: $0 fetch|start|stop|status|bootstrap|env [NODE]" >&2; exit 2 ;;
esac
