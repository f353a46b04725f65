#!/usr/bin/env bash
# The test command: `scripts/test.sh [ARGS for cargo test...]`
#
# On a fresh Debian machine with Rust installed it does everything:
#   1. deps    installs what is missing (scripts/install-deps.sh): build tools, rustfmt/clippy,
#              redis-server, moto_server, DuckDB for Python, the Python StatsD clients
#              statsd and datadog, chromium, promtool and prometheus, vmalert in the
#              foreground; tansu
#              (a ~20 min cargo install) in the background, logging to target/deps/tansu-install.log
#   2. fmt     cargo fmt --all -- --check
#   3. build   cargo build --workspace --all-targets            (while tansu compiles)
#   4. clippy  cargo clippy --workspace --all-targets -- -D warnings
#   5. tansu   waits for the tansu install; fails with the tail of its log if it failed
#   6. test    cargo test --workspace [ARGS]
# and prints the time of each phase at the end.
#
# The end-to-end tests in tests/ start and stop redis-server, tansu and moto_server themselves on
# free loopback ports (found on PATH, which includes ~/.cargo/bin here), and read the cold Parquet
# objects with DuckDB through python3; tests/e2e/browser.rs loads the dashboard in headless chromium;
# tests/e2e/prom.rs queries the Prometheus API with promtool, tests/e2e/prom_differential.rs
# compares its answers with a real Prometheus server's, tests/e2e/vmalert.rs alerts through it with
# vmalert.
# So this script starts no services. `--locked` is passed to cargo when Cargo.lock exists.
#
# Environment: THERMO_SKIP_DEPS=1 skips phase 1 and 5 (the tools must already be on PATH).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

# cargo-installed tools (tansu), and where pip puts moto_server for pyenv and --user installs.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH:$HOME/.pyenv/shims:$HOME/.local/bin"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
DEPS_DIR="$TARGET_DIR/deps"
TANSU_LOG="$DEPS_DIR/tansu-install.log"
TEST_LOG="$DEPS_DIR/cargo-test.log"
rm -f "$TEST_LOG"
mkdir -p "$DEPS_DIR"

LOCKED=()
[ -f Cargo.lock ] && LOCKED=(--locked)

say() { printf '\n==> %s\n' "$*"; }

# --- phase timing ----------------------------------------------------------------------------
PHASES=()
TIMES=()
CURRENT=""
CURRENT_START=0
TOTAL_START=$SECONDS
begin() {
  CURRENT="$1"
  CURRENT_START=$SECONDS
  say "[$1] ${2:-}"
}
end() {
  PHASES+=("$CURRENT")
  TIMES+=("$((SECONDS - CURRENT_START))")
  CURRENT=""
}
TANSU_PID=""
summary() {
  local rc=$?
  set +e
  if [ -n "$CURRENT" ]; then
    PHASES+=("$CURRENT (FAILED)")
    TIMES+=("$((SECONDS - CURRENT_START))")
  fi
  printf '\n==> phase timings (seconds)\n'
  local i
  for i in "${!PHASES[@]}"; do printf '  %-22s %6s\n' "${PHASES[$i]}" "${TIMES[$i]}"; done
  printf '  %-22s %6s\n' total "$((SECONDS - TOTAL_START))"
  if [ -n "$TANSU_PID" ] && kill -0 "$TANSU_PID" 2>/dev/null; then
    printf '\nnote: the tansu install is still running in the background (pid %s, log %s);\n' \
      "$TANSU_PID" "$TANSU_LOG"
    printf '      the next scripts/test.sh run waits for it instead of starting another.\n'
  fi
  if [ "$rc" -eq 0 ]; then printf '\nscripts/test.sh: OK\n'; else printf '\nscripts/test.sh: FAILED (exit %s)\n' "$rc"; fi
  # Last line: the totals of every `test result:` line of cargo test, in the plain form
  # "N passed, N failed, N skipped" (ignored tests count as skipped).
  if [ -s "$TEST_LOG" ]; then
    awk '/^test result:/ { for (i = 1; i <= NF; i++) {
           if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
         END { printf "thermo: %d passed, %d failed, %d skipped\n", p, f, s }' "$TEST_LOG"
  fi
  exit "$rc"
}
trap summary EXIT

have_tansu() { command -v tansu >/dev/null 2>&1; }

# --- 1. dependencies -------------------------------------------------------------------------
if [ "${THERMO_SKIP_DEPS:-0}" != 1 ]; then
  begin deps "install missing tools"
  if have_tansu; then
    echo "tansu: already installed ($(command -v tansu))"
  else
    echo "tansu: installing in the background; log: $TANSU_LOG"
    scripts/install-deps.sh tansu >"$TANSU_LOG" 2>&1 </dev/null &
    TANSU_PID=$!
  fi
  scripts/install-deps.sh build rust redis moto duckdb pyclients chromium prometheus vmalert
  end
fi

# --- 2. format -------------------------------------------------------------------------------
begin fmt "cargo fmt --all -- --check"
cargo fmt --all -- --check
end

# --- 3. build --------------------------------------------------------------------------------
begin build "cargo build --workspace --all-targets ${LOCKED[*]}"
cargo build --workspace --all-targets "${LOCKED[@]}"
end

# --- 4. lint ---------------------------------------------------------------------------------
begin clippy "cargo clippy --workspace --all-targets ${LOCKED[*]} -- -D warnings"
cargo clippy --workspace --all-targets "${LOCKED[@]}" -- -D warnings
end

# --- 5. wait for tansu -----------------------------------------------------------------------
if [ -n "$TANSU_PID" ]; then
  begin tansu-wait "waiting for the tansu install (log: $TANSU_LOG)"
  if ! wait "$TANSU_PID"; then
    TANSU_PID=""
    echo "tansu install FAILED; last lines of $TANSU_LOG:" >&2
    tail -n 40 "$TANSU_LOG" >&2
    exit 1
  fi
  TANSU_PID=""
  tail -n 3 "$TANSU_LOG"
  end
fi
missing=()
for tool in redis-server tansu moto_server chromium promtool prometheus vmalert; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
python3 -c 'import duckdb' >/dev/null 2>&1 || missing+=("python3 module duckdb")
python3 -c 'import statsd, datadog' >/dev/null 2>&1 || missing+=("python3 modules statsd, datadog")
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]} (run scripts/install-deps.sh)" >&2
  exit 1
fi

# --- 6. test ---------------------------------------------------------------------------------
begin test "cargo test --workspace ${LOCKED[*]} $*"
cargo test --workspace "${LOCKED[@]}" "$@" 2>&1 | tee "$TEST_LOG"
end
