#!/usr/bin/env bash
# Start the whole distributed thermo stack on loopback with the default ports:
#
#   redis-server   127.0.0.1:6379   hot storage (append-only file, no RDB snapshots)
#   tansu broker   127.0.0.1:9092   Kafka-compatible log, topic thermo-minutes (4 partitions)
#   moto_server    127.0.0.1:9000   S3-compatible cold storage, bucket thermo (see "S3" below)
#   partitioner    127.0.0.1:8127   HTTP ingest from agents
#   aggregator     127.0.0.1:8128   HTTP (health, metrics); consumes thermo-minutes; rolls
#                                   closed hours up into Parquet objects in S3 (cold_enabled)
#   read-service   127.0.0.1:8129   HTTP query API
#   agent          127.0.0.1:8125/udp StatsD, 127.0.0.1:8126 HTTP
#
# Everything lives under one folder, ${THERMO_HOME:-<repo>/.thermo}:
#   config/<role>.toml   generated on every run (edits are overwritten)
#   logs/<name>.log      stdout and stderr of each process
#   run/<name>.pid       process ids, used by deploy/local/down.sh
#   data/                redis/ (append-only file), tansu.db (broker storage), s3/ (see below)
#
# S3: moto keeps buckets and objects in memory only. To keep the cold objects across
# down.sh/up.sh, moto runs with its request recorder on (MOTO_ENABLE_RECORDING): every request is
# appended to data/s3/recording.jsonl, and when up.sh starts moto it first compacts that file
# (drops reads, keeps the last write of each object) and then replays it into the new server.
# The cold-storage catalog lives in Redis, so delete data/s3 only together with data/redis (or
# use down.sh --purge); otherwise Redis lists roll-ups whose objects are gone.
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
S3_PORT=9000
S3_BUCKET=thermo
S3_REGION=us-east-1
S3_ACCESS_KEY=thermo
S3_SECRET_KEY=thermo
COLD_PREFIX=cold/v1
TOPIC=thermo-minutes
PARTITIONS=4
PARTITIONER_PORT=8127
AGGREGATOR_PORT=8128
READ_PORT=8129
AGENT_UDP_PORT=8125
AGENT_HTTP_PORT=8126
AGENT_OTLP_PORT=4318
FLUSH_DELAY_SECS=5 # the agent sends a minute this long after it closes

# cargo-installed tools (tansu), and where pip puts moto_server for pyenv and --user installs.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH:$HOME/.pyenv/shims:$HOME/.local/bin"

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
S3_URL="http://$HOST:$S3_PORT"
S3_REC="$DATA/s3/recording.jsonl"

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
for tool in redis-server redis-cli tansu moto_server python3 curl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]} — run scripts/install-deps.sh"
command -v cargo >/dev/null 2>&1 || [ "$build" -eq 0 ] || die "cargo not found (install Rust: https://rustup.rs)"

mkdir -p "$CONF" "$LOGS" "$RUN" "$DATA/redis" "$DATA/s3"
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
for npp in "redis:redis-server:$REDIS_PORT" "tansu:tansu:$KAFKA_PORT" "moto:moto_server:$S3_PORT" \
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

# --- moto (S3-compatible server: cold storage) -----------------------------------------------
# s3_code ARGS...: the HTTP status of a curl request to moto (000: no answer).
s3_code() { curl -sS -o /dev/null --max-time 5 -w '%{http_code}' "$@" 2>/dev/null || true; }

# compact_recording: rewrite data/s3/recording.jsonl (moto must not be running) to the requests
# that still matter: reads (GET, HEAD) go, and so does every object write but the last one of its
# key (a key whose last request is a DELETE goes entirely); a bucket is created once. If the file
# holds any other kind of write (multi-object delete, copy, multipart, bucket deletion), only the
# reads are dropped. Truncated lines (a crash mid-write) are dropped.
compact_recording() {
  python3 - "$S3_REC" <<'PY'
import json, os, sys
from urllib.parse import parse_qs, unquote, urlsplit

path = sys.argv[1]
entries, bad = [], 0
with open(path, "rb") as f:
    for raw in f:
        try:
            e = json.loads(raw)
            e["method"], e["url"]
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        entries.append((raw if raw.endswith(b"\n") else raw + b"\n", e))

writes = [(raw, e) for raw, e in entries if str(e["method"]).upper() not in ("GET", "HEAD", "OPTIONS")]

def kind(e):
    u = urlsplit(e["url"])
    if set(parse_qs(u.query, keep_blank_values=True)) - {"x-id"}:
        return ("other",)
    parts = unquote(u.path).lstrip("/").split("/", 1)
    headers = {k.lower() for k in (e.get("headers") or {})}
    method = str(e["method"]).upper()
    if not parts[0] or parts[0] == "moto-api":
        return ("other",)
    if len(parts) == 1 or not parts[1]:
        return ("bucket", parts[0]) if method == "PUT" else ("other",)
    if method == "PUT" and "x-amz-copy-source" not in headers:
        return ("put", parts[0], parts[1])
    if method == "DELETE":
        return ("delete", parts[0], parts[1])
    return ("other",)

kinds = [kind(e) for _, e in writes]
if any(k[0] == "other" for k in kinds):
    keep = writes
else:
    last = {}
    for i, k in enumerate(kinds):
        if k[0] != "bucket":
            last[k[1:]] = i
    buckets, keep = set(), []
    for i, (k, w) in enumerate(zip(kinds, writes)):
        if k[0] == "bucket" and k[1] not in buckets:
            buckets.add(k[1])
            keep.append(w)
        elif k[0] == "put" and last[k[1:]] == i:
            keep.append(w)

tmp = path + ".tmp"
with open(tmp, "wb") as f:
    for raw, _ in keep:
        f.write(raw)
os.replace(tmp, path)
print(f"{len(entries) + bad} recorded requests, {len(keep)} kept"
      + (f" ({bad} unreadable lines dropped)" if bad else ""))
PY
}

if pid=$(pid_of moto moto_server); then
  say "moto: already running (pid $pid)"
else
  ensure_free moto "$S3_PORT"
  rm -f "$RUN/moto.replayed"
  if [ -s "$S3_REC" ]; then
    summary=$(compact_recording) ||
      die "moto: cannot compact $S3_REC (move it away to start with an empty bucket)"
    say "moto: compacted $S3_REC: $summary"
  fi
  start moto "$DATA/s3" env MOTO_ENABLE_RECORDING=True MOTO_RECORDER_FILEPATH="$S3_REC" \
    moto_server -H "$HOST" -p "$S3_PORT"
fi
# (a TCP check: an HTTP request would land in the recording)
wait_until moto "the S3 port $S3_PORT" tcp_open "$S3_PORT"
say "moto: listening on $S3_URL"

# Replay the recording once into each moto process (run/moto.replayed holds the pid it went into).
moto_pid="$(cat "$RUN/moto.pid")"
if [ "$(cat "$RUN/moto.replayed" 2>/dev/null || true)" != "$moto_pid" ]; then
  if [ -s "$S3_REC" ]; then
    n=$(wc -l <"$S3_REC")
    code=$(s3_code --max-time 600 -X POST "$S3_URL/moto-api/recorder/replay-recording")
    if [ "$code" != 200 ]; then
      log_tail moto
      die "moto: replaying $S3_REC failed (HTTP $code); to start with an empty bucket instead, stop the stack and move that file away"
    fi
    say "moto: replayed $n recorded requests (the cold objects of earlier runs)"
  fi
  echo "$moto_pid" >"$RUN/moto.replayed"
fi

# The aggregator creates the bucket too (s3_create_bucket); creating it here lets the read service
# and a person list it before the first roll-up. moto needs no signature.
code=$(s3_code -X PUT "$S3_URL/$S3_BUCKET")
case "$code" in
  200 | 409) ;; # created, or already there
  *) log_tail moto; die "moto: cannot create bucket $S3_BUCKET (HTTP $code)" ;;
esac
if [ "$(s3_code -I "$S3_URL/$S3_BUCKET")" != 200 ]; then
  log_tail moto
  die "moto: bucket $S3_BUCKET missing after creating it"
fi
say "moto: bucket $S3_BUCKET ready"

# --- role configs ----------------------------------------------------------------------------
hostname="$(hostname 2>/dev/null || echo localhost)"
header="# generated by deploy/local/up.sh; rewritten on every run"

cat >"$CONF/partitioner.toml" <<EOF
$header
http_addr = "$HOST:$PARTITIONER_PORT"
kafka_brokers = "$HOST:$KAFKA_PORT"
topic = "$TOPIC"
# Where the series limits (max_active_series, ...; none set here) are counted.
redis_url = "redis://$HOST:$REDIS_PORT"
EOF

# Cold storage in moto; cold_lag_secs, retention_* and the other cold keys keep their defaults.
cold_keys=(
  "cold_enabled = true"
  "s3_endpoint = \"$S3_URL\""
  "s3_bucket = \"$S3_BUCKET\""
  "s3_region = \"$S3_REGION\""
  "s3_access_key = \"$S3_ACCESS_KEY\""
  "s3_secret_key = \"$S3_SECRET_KEY\""
  "cold_prefix = \"$COLD_PREFIX\""
)

cat >"$CONF/aggregator.toml" <<EOF
$header
http_addr = "$HOST:$AGGREGATOR_PORT"
kafka_brokers = "$HOST:$KAFKA_PORT"
topic = "$TOPIC"
group_id = "thermo-aggregators"
instance_id = "aggregator-$(hostname)"
redis_url = "redis://$HOST:$REDIS_PORT"
$(printf '%s\n' "${cold_keys[@]}")
s3_create_bucket = true
EOF

# The read service reads the cold objects too if this build of it has those keys. Ask the binary:
# load a config with them (its http_addr is the busy Redis port, so a config that loads makes it
# exit at the bind) and drop each key it reports as unknown.
read_keys=("${cold_keys[@]}")
probe="$CONF/.read-service-probe.toml"
# shellcheck disable=SC2016 # backquotes: literal, as serde prints them
unknown_re='unknown field `([A-Za-z0-9_]+)`'
for _ in "${cold_keys[@]}"; do
  { echo "$header"; echo "redis_url = \"redis://$HOST:$REDIS_PORT\""; printf '%s\n' "${read_keys[@]}"; } >"$probe"
  out=$(RUST_BACKTRACE=0 NO_COLOR=1 timeout 10 "$BIN" read-service --config "$probe" \
    --set "http_addr=$HOST:$REDIS_PORT" 2>&1 </dev/null) || true
  [[ "$out" =~ $unknown_re ]] || break
  bad="${BASH_REMATCH[1]}" kept=()
  for kv in "${read_keys[@]}"; do [ "${kv%% *}" = "$bad" ] || kept+=("$kv"); done
  [ ${#kept[@]} -lt ${#read_keys[@]} ] || break # not one of ours: the real start reports it
  read_keys=("${kept[@]+"${kept[@]}"}")
done
rm -f "$probe"
if [ ${#read_keys[@]} -gt 0 ] && [ "${read_keys[0]}" = "cold_enabled = true" ]; then
  read_cold="yes"
  lacks=()
  for kv in "${cold_keys[@]}"; do [[ " ${read_keys[*]} " == *" $kv "* ]] || lacks+=("${kv%% *}"); done
  [ ${#lacks[@]} -eq 0 ] || read_cold="yes (this build has no ${lacks[*]}: left at its defaults)"
else
  read_keys=()
  read_cold="no (this build has no cold storage keys)"
  say "read-service: this build has no cold storage keys; it reads Redis only"
fi

cat >"$CONF/read-service.toml" <<EOF
$header
http_addr = "$HOST:$READ_PORT"
redis_url = "redis://$HOST:$REDIS_PORT"
$(printf '%s\n' "${read_keys[@]+"${read_keys[@]}"}")
EOF

cat >"$CONF/agent.toml" <<EOF
$header
udp_addr = "$HOST:$AGENT_UDP_PORT"
http_addr = "$HOST:$AGENT_HTTP_PORT"
otlp_addr = "$HOST:$AGENT_OTLP_PORT"
partitioner_url = "http://$HOST:$PARTITIONER_PORT"
agent_id = "local-$hostname"
api_key = ""
flush_delay_secs = $FLUSH_DELAY_SECS
# Closed minutes wait here until acknowledged, open ones are checkpointed every 5 s: a killed
# agent restarts with them.
spool_dir = "$DATA/agent-spool"
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
  moto (S3)      $S3_URL   bucket $S3_BUCKET, prefix $COLD_PREFIX/, keys $S3_ACCESS_KEY/$S3_SECRET_KEY
  partitioner    http://$HOST:$PARTITIONER_PORT
  aggregator     http://$HOST:$AGGREGATOR_PORT   cold storage in S3: an hour is rolled up ~2 min after it ends
  read-service   http://$HOST:$READ_PORT   reads cold objects: $read_cold
  agent          udp $HOST:$AGENT_UDP_PORT (StatsD), http://$HOST:$AGENT_HTTP_PORT

  logs    $LOGS/<name>.log
  configs $CONF/<role>.toml
  pids    $RUN/<name>.pid

  S3 persistence: moto holds the objects in memory only. Every request to it is recorded in
  $S3_REC, which up.sh replays into each new moto, so the cold
  objects come back after down.sh/up.sh (Redis keeps the hot data and the cold catalog). Delete
  that file only together with $DATA/redis.

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

  # cold objects (Parquet): list them (moto lists without a signature), fetch one with boto3
  # (installed with moto), read it with DuckDB (scripts/install-deps.sh duckdb)
  curl -s '$S3_URL/$S3_BUCKET?list-type=2&prefix=$COLD_PREFIX/'
  python3 -c 'import boto3, sys; boto3.client("s3", endpoint_url="$S3_URL", region_name="$S3_REGION", aws_access_key_id="$S3_ACCESS_KEY", aws_secret_access_key="$S3_SECRET_KEY").download_file("$S3_BUCKET", sys.argv[1], "/tmp/chunk.parquet")' '<Key>'
  python3 -c 'import duckdb; duckdb.sql("select * from \x27/tmp/chunk.parquet\x27").show()'

Stop: deploy/local/down.sh   (keeps data; --purge deletes $THERMO_HOME)
EOF
