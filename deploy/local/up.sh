#!/usr/bin/env bash
# Start the whole distributed thermo stack on loopback with the default ports:
#
#   redis-server   127.0.0.1:6379   hot storage (append-only file, no RDB snapshots)
#   tansu broker   127.0.0.1:9092   Kafka-compatible log, topic thermo-minutes (4 partitions)
#   partitioner    127.0.0.1:8127   HTTP ingest from agents
#   aggregator     127.0.0.1:8128   HTTP (health, metrics); consumes thermo-minutes
#   read-service   127.0.0.1:8129   HTTP query API
#   agent          127.0.0.1:8125/udp StatsD, 127.0.0.1:8126 HTTP
#
# Everything lives under one folder, ${THERMO_HOME:-<repo>/.thermo}:
#   config/<role>.toml   generated on every run (edits are overwritten)
#   logs/<name>.log      stdout and stderr of each process
#   run/<name>.pid       process ids, used by deploy/local/down.sh
#   data/                redis/ (append-only file) and tansu.db (broker storage)
#
# Usage: deploy/local/up.sh [--no-build]
#   --no-build   skip `cargo build --release --bin thermo` (use the existing target/release/thermo)
# Already-running processes of this stack are left alone, so running it twice is harmless.
# Stop with deploy/local/down.sh (add --purge to delete the folder too). RUST_LOG is passed through.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

HOST=127.0.0.1
REDIS_PORT=6379
KAFKA_PORT=9092
TOPIC=thermo-minutes
PARTITIONS=4
PARTITIONER_PORT=8127
AGGREGATOR_PORT=8128
READ_PORT=8129
AGENT_UDP_PORT=8125
AGENT_HTTP_PORT=8126
FLUSH_DELAY_SECS=5 # the agent sends a minute this long after it closes

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "up.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done

THERMO_HOME="${THERMO_HOME:-$REPO/.thermo}"
mkdir -p "$THERMO_HOME"
THERMO_HOME="$(cd "$THERMO_HOME" && pwd)"
CONF="$THERMO_HOME/config"
LOGS="$THERMO_HOME/logs"
RUN="$THERMO_HOME/run"
DATA="$THERMO_HOME/data"

say() { printf '[up] %s\n' "$*"; }
die() {
  printf '[up] ERROR: %s\n' "$*" >&2
  if ls "$RUN"/*.pid >/dev/null 2>&1; then
    printf '[up] processes started so far keep running; stop them with deploy/local/down.sh\n' >&2
  fi
  exit 1
}

# --- prerequisites ---------------------------------------------------------------------------
missing=()
for tool in redis-server redis-cli tansu curl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]} — run scripts/install-deps.sh"
command -v cargo >/dev/null 2>&1 || [ "$build" -eq 0 ] || die "cargo not found (install Rust: https://rustup.rs)"

mkdir -p "$CONF" "$LOGS" "$RUN" "$DATA/redis"
touch "$THERMO_HOME/.thermo-home" # marks the folder as ours (down.sh --purge checks it)

BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/thermo"
case "$BIN" in /*) ;; *) BIN="$REPO/$BIN" ;; esac
if [ "$build" -eq 1 ]; then
  locked=()
  [ -f "$REPO/Cargo.lock" ] && locked=(--locked)
  say "cargo build --release --bin thermo ${locked[*]}"
  (cd "$REPO" && cargo build --release --bin thermo "${locked[@]}") || die "cargo build failed"
fi
[ -x "$BIN" ] || die "$BIN not found; build it with: cargo build --release --bin thermo"

# --- helpers ---------------------------------------------------------------------------------

# pid_of NAME PATTERN: the live pid recorded in run/NAME.pid whose command line contains PATTERN.
pid_of() {
  local f="$RUN/$1.pid" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f" 2>/dev/null)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  local cmdline
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmdline" == *"$2"* ]] || return 1
  echo "$pid"
}

# alive NAME: the process recorded in run/NAME.pid still runs (right after start it may still be
# the nohup wrapper, so no command-line check here).
# A zombie (exited, not yet collected by its parent or a subreaper) counts as dead.
alive() {
  local pid stat
  pid="$(cat "$RUN/$1.pid" 2>/dev/null)" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 0 # no procfs: trust kill -0
  stat="${stat##*) }"
  [ "${stat%% *}" != Z ]
}

tcp_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; }

# ensure_free NAME PORT: fail if something other than our NAME already listens on PORT.
ensure_free() {
  if tcp_open "$2"; then
    local hint="find it with: ss -ltnp 'sport = :$2'"
    [ "$1" = redis ] && hint="a system Redis? 'systemctl stop redis-server'; or $hint"
    die "port $2 (for $1) is already in use by a process this stack did not start; stop it first ($hint)"
  fi
}

log_tail() { echo "---- last lines of $LOGS/$1.log ----" >&2; tail -n 30 "$LOGS/$1.log" >&2 || true; }

# wait_until NAME WHAT CMD...: poll CMD (60 x 0.5 s) while NAME's process stays alive.
wait_until() {
  local name="$1" what="$2"
  shift 2
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! alive "$name"; then
      log_tail "$name"
      die "$name exited while waiting for $what"
    fi
    sleep 0.5
  done
  log_tail "$name"
  die "$name: timed out after 30 s waiting for $what"
}

# start NAME WORKDIR CMD...: start CMD in the background under nohup, pid to run/NAME.pid.
start() {
  local name="$1" dir="$2"
  shift 2
  printf '==== %s deploy/local/up.sh: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$LOGS/$name.log"
  (cd "$dir" && exec nohup "$@" >>"$LOGS/$name.log" 2>&1 </dev/null) &
  echo $! >"$RUN/$name.pid"
  say "$name: started (pid $!), log $LOGS/$name.log"
}

redis_ping() { [ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }
healthz() { curl -fsS --max-time 1 "http://$HOST:$1/healthz"; }

# --- preflight: every port we are about to listen on must be free ----------------------------
# (the agent's UDP port is not checked here: if it is taken, the agent exits and is reported below)
for npp in "redis:redis-server:$REDIS_PORT" "tansu:tansu:$KAFKA_PORT" \
  "partitioner:$BIN partitioner:$PARTITIONER_PORT" "aggregator:$BIN aggregator:$AGGREGATOR_PORT" \
  "read-service:$BIN read-service:$READ_PORT" "agent:$BIN agent:$AGENT_HTTP_PORT"; do
  name="${npp%%:*}" rest="${npp#*:}"
  pid_of "$name" "${rest%:*}" >/dev/null || ensure_free "$name" "${rest##*:}"
done

# --- redis -----------------------------------------------------------------------------------
if pid=$(pid_of redis redis-server); then
  say "redis: already running (pid $pid)"
else
  ensure_free redis "$REDIS_PORT"
  start redis "$DATA/redis" redis-server --port "$REDIS_PORT" --bind "$HOST" \
    --save "" --appendonly yes --dir "$DATA/redis" --daemonize no
fi
wait_until redis "redis-cli ping" redis_ping
say "redis: ready on $HOST:$REDIS_PORT"

# --- tansu (Kafka-compatible broker) ---------------------------------------------------------
if pid=$(pid_of tansu tansu); then
  say "tansu: already running (pid $pid)"
else
  ensure_free tansu "$KAFKA_PORT"
  # The sqlite path in the URL is relative to the working directory: $THERMO_HOME/data/tansu.db.
  start tansu "$THERMO_HOME" tansu broker \
    --listener-url "tcp://$HOST:$KAFKA_PORT" \
    --advertised-listener-url "tcp://$HOST:$KAFKA_PORT" \
    --storage-engine "sqlite://data/tansu.db"
fi
wait_until tansu "the broker port $KAFKA_PORT" tcp_open "$KAFKA_PORT"
say "tansu: listening on $HOST:$KAFKA_PORT"

created=0
for _ in $(seq 1 20); do
  if out=$(tansu topic create --broker "tcp://$HOST:$KAFKA_PORT" --partitions "$PARTITIONS" "$TOPIC" 2>&1); then
    say "tansu: created topic $TOPIC ($PARTITIONS partitions)"
    created=1
    break
  fi
  if [[ "${out,,}" == *exist* ]]; then
    say "tansu: topic $TOPIC already exists"
    created=1
    break
  fi
  sleep 0.5
done
[ "$created" -eq 1 ] || { printf '%s\n' "$out" >&2; log_tail tansu; die "could not create topic $TOPIC"; }

# --- role configs ----------------------------------------------------------------------------
hostname="$(hostname 2>/dev/null || echo localhost)"
header="# generated by deploy/local/up.sh; rewritten on every run"

cat >"$CONF/partitioner.toml" <<EOF
$header
http_addr = "$HOST:$PARTITIONER_PORT"
kafka_brokers = "$HOST:$KAFKA_PORT"
topic = "$TOPIC"
EOF

cat >"$CONF/aggregator.toml" <<EOF
$header
http_addr = "$HOST:$AGGREGATOR_PORT"
kafka_brokers = "$HOST:$KAFKA_PORT"
topic = "$TOPIC"
group_id = "thermo-aggregators"
redis_url = "redis://$HOST:$REDIS_PORT"
EOF

cat >"$CONF/read-service.toml" <<EOF
$header
http_addr = "$HOST:$READ_PORT"
redis_url = "redis://$HOST:$REDIS_PORT"
EOF

cat >"$CONF/agent.toml" <<EOF
$header
udp_addr = "$HOST:$AGENT_UDP_PORT"
http_addr = "$HOST:$AGENT_HTTP_PORT"
partitioner_url = "http://$HOST:$PARTITIONER_PORT"
agent_id = "local-$hostname"
api_key = ""
flush_delay_secs = $FLUSH_DELAY_SECS
global_tags = { host = "$hostname" }
EOF

# --- roles -----------------------------------------------------------------------------------
start_role() {
  local role="$1" port="$2" pid
  if pid=$(pid_of "$role" "$BIN $role"); then
    say "$role: already running (pid $pid)"
  else
    ensure_free "$role" "$port"
    # NO_COLOR: plain log files (no ANSI escapes from the tracing formatter)
    start "$role" "$THERMO_HOME" env NO_COLOR=1 "$BIN" "$role" --config "$CONF/$role.toml"
  fi
  wait_until "$role" "http://$HOST:$port/healthz" healthz "$port"
  say "$role: healthy on $HOST:$port"
}

start_role partitioner "$PARTITIONER_PORT"
start_role aggregator "$AGGREGATOR_PORT"
start_role read-service "$READ_PORT"
start_role agent "$AGENT_HTTP_PORT"

# Readiness (dependencies reachable) is informational: wait a little, then report.
not_ready=()
for rp in partitioner:$PARTITIONER_PORT aggregator:$AGGREGATOR_PORT read-service:$READ_PORT agent:$AGENT_HTTP_PORT; do
  ok=0
  for _ in $(seq 1 20); do
    if curl -fsS --max-time 1 "http://$HOST:${rp#*:}/readyz" >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.5
  done
  [ "$ok" -eq 1 ] || not_ready+=("${rp%%:*}")
done
if [ ${#not_ready[@]} -gt 0 ]; then
  say "warning: not ready yet (GET /readyz fails): ${not_ready[*]}; see their logs"
fi

cat <<EOF

thermo local stack is up (folder: $THERMO_HOME)

  redis          $HOST:$REDIS_PORT            data   $DATA/redis
  tansu (kafka)  $HOST:$KAFKA_PORT            topic  $TOPIC ($PARTITIONS partitions), data $DATA/tansu.db
  partitioner    http://$HOST:$PARTITIONER_PORT
  aggregator     http://$HOST:$AGGREGATOR_PORT
  read-service   http://$HOST:$READ_PORT
  agent          udp $HOST:$AGENT_UDP_PORT (StatsD), http://$HOST:$AGENT_HTTP_PORT

  logs    $LOGS/<name>.log
  configs $CONF/<role>.toml
  pids    $RUN/<name>.pid

Try it:
  # StatsD over UDP (nc -w1: with -w0, nc may quit before echo has written the line, losing it)
  echo "hits:1|c|#route:/home" | nc -u -w1 $HOST $AGENT_UDP_PORT
  echo "latency:42|ms|#route:/home" | nc -u -w1 $HOST $AGENT_UDP_PORT
  # or over HTTP, one line per line of the body (answers how many lines were accepted)
  curl -s --data-binary \$'hits:1|c|#route:/about\nlatency:7|ms|#route:/about' http://$HOST:$AGENT_HTTP_PORT/api/v1/statsd

  # The agent sends a minute $FLUSH_DELAY_SECS s after it closes; to send the open minutes now:
  curl -s -X POST http://$HOST:$AGENT_HTTP_PORT/flush
  # then (the aggregator applies it within a second or so):
  curl -s 'http://$HOST:$READ_PORT/api/v1/query?metric=hits&stat=sum&group_by=route'
  curl -s 'http://$HOST:$READ_PORT/api/v1/query?metric=latency&stat=p99'
  curl -s http://$HOST:$READ_PORT/api/v1/metrics
  (queries cover the last hour by default; add &from=<unix seconds>&to=... for another range)

Stop: deploy/local/down.sh   (keeps data; --purge deletes $THERMO_HOME)
EOF
