#!/usr/bin/env bash
# Stop the local stack started by deploy/local/up.sh.
#
# Usage: deploy/local/down.sh [--purge]
#   Stops agent, partitioner, aggregator, read-service, then moto (S3), tansu and redis (in that
#   order, so the agent can flush and the aggregator can commit and finish a roll-up): SIGTERM,
#   then SIGKILL after 15 s.
#   Data, logs and configs in ${THERMO_HOME:-<repo>/.thermo} are kept unless --purge is given,
#   which deletes that folder. moto holds S3 in memory; up.sh replays its request log
#   (data/s3/recording.jsonl) into the next moto, so the cold objects come back.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
THERMO_HOME="${THERMO_HOME:-$REPO/.thermo}"
RUN="$THERMO_HOME/run"
GRACE_STEPS=30 # x 0.5 s

purge=0
while [ $# -gt 0 ]; do
  case "$1" in
    --purge) purge=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "down.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf '[down] %s\n' "$*"; }

# running PID: the process exists and is not a zombie (an exited child that its parent, often a
# subreaper, has not collected yet still answers kill -0).
running() {
  kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0 # no procfs: trust kill -0
  stat="${stat##*) }"
  [ "${stat%% *}" != Z ]
}

# stop NAME PATTERN: stop the process in run/NAME.pid if it is alive and its command line contains
# PATTERN (so a pid reused by an unrelated process is never signalled).
stop() {
  local name="$1" pattern="$2" f="$RUN/$1.pid" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f" 2>/dev/null || true)"
  if [ -z "$pid" ] || ! running "$pid"; then
    say "$name: not running"
    rm -f "$f"
    return 0
  fi
  local cmdline
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  if [[ "$cmdline" != *"$pattern"* ]]; then
    say "$name: pid $pid is not $pattern any more; leaving it alone"
    rm -f "$f"
    return 0
  fi
  say "$name: stopping pid $pid (SIGTERM)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 "$GRACE_STEPS"); do
    running "$pid" || break
    sleep 0.5
  done
  if running "$pid"; then
    say "$name: still running after $((GRACE_STEPS / 2)) s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 10); do
      running "$pid" || break
      sleep 0.2
    done
  fi
  if running "$pid"; then
    say "$name: pid $pid did not exit" >&2
    return 1
  fi
  say "$name: stopped"
  rm -f "$f"
}

rc=0
if [ -d "$RUN" ]; then
  for role in agent partitioner aggregator read-service; do
    stop "$role" "thermo $role" || rc=1
  done
  if stop moto moto_server; then rm -f "$RUN/moto.replayed"; else rc=1; fi
  stop tansu tansu || rc=1
  stop redis redis-server || rc=1
else
  say "nothing to stop ($RUN does not exist)"
fi

if [ "$purge" -eq 1 ]; then
  if [ "$rc" -ne 0 ]; then
    say "not purging: some processes did not stop" >&2
  elif [ ! -e "$THERMO_HOME" ]; then
    say "nothing to purge ($THERMO_HOME does not exist)"
  elif [ -f "$THERMO_HOME/.thermo-home" ]; then
    rm -rf -- "$THERMO_HOME"
    say "purged $THERMO_HOME"
  else
    say "not purging $THERMO_HOME: it has no .thermo-home marker (not created by up.sh)" >&2
    rc=1
  fi
fi
exit "$rc"
