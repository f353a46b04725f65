#!/usr/bin/env bash
# Install the external programs that thermo's end-to-end tests and local stack need.
#
# Idempotent: every step checks first and only installs what is missing. Meant for a Debian
# machine (apt-get) as root (or with sudo); the Rust toolchain (cargo) must already be installed.
#
#   scripts/install-deps.sh                        # everything, in the foreground
#   scripts/install-deps.sh redis moto duckdb      # only some components
#   scripts/install-deps.sh --tansu-log FILE       # everything else now; tansu in the background,
#                                                  # output to FILE, exit status to FILE.status
#
# Components:
#   build  C toolchain and headers the Rust build needs (build-essential, pkg-config, zlib, openssl),
#          curl and netcat (used by deploy/local), the openssl CLI (the TLS e2e test makes a pair), via apt-get
#   rust   rustfmt and clippy components (rustup component add), needed by scripts/test.sh
#   redis  redis-server and redis-cli (Debian package redis-server)
#   tansu  Kafka-compatible broker: cargo install tansu --locked --features libsql (~20 min on 2 cores;
#          the default build has no storage engine). Set TANSU_VERSION to pin a version.
#   moto   S3-compatible server: pip install 'moto[server]' (provides moto_server; deploy/local
#          and the end-to-end tests use it as the cold store)
#   duckdb DuckDB for Python: pip install duckdb (the tests read the cold Parquet objects with it)
#   pyclients  the StatsD clients PyPI `statsd` and `datadog` (pip install statsd datadog):
#          tests/e2e/intake.rs sends with them over TCP and a Unix datagram socket; the
#          OpenTelemetry SDK and its OTLP/HTTP exporter (pip install opentelemetry-sdk
#          opentelemetry-exporter-otlp-proto-http): tests/e2e/otlp.rs sends metrics with them
#   chromium  headless browser (Debian package chromium); tests/e2e/browser.rs loads the dashboard in it
#   prometheus  promtool and prometheus (Debian package prometheus); tests/e2e/prom.rs queries
#          thermo's Prometheus API with promtool, tests/e2e/prom_differential.rs compares its
#          answers with a real Prometheus server's
#   vmalert  vmalert (Debian package victoria-metrics); tests/e2e/vmalert.rs evaluates alert rules
#          through thermo's Prometheus API with it
set -euo pipefail

log() { printf '[install-deps] %s\n' "$*"; }
die() { printf '[install-deps] ERROR: %s\n' "$*" >&2; exit 1; }

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
# cargo-installed tools, and where pip puts scripts for pyenv and --user installs.
export PATH="$CARGO_BIN:$PATH:$HOME/.pyenv/shims:$HOME/.local/bin"

components=()
tansu_log=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --tansu-log) [ $# -ge 2 ] || die "--tansu-log needs a file"; tansu_log="$2"; shift 2 ;;
    --tansu-log=*) tansu_log="${1#*=}"; shift ;;
    build|rust|redis|tansu|moto|duckdb|pyclients|chromium|prometheus|vmalert) components+=("$1"); shift ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[ ${#components[@]} -gt 0 ] || components=(build rust redis moto duckdb pyclients chromium prometheus vmalert tansu)

want() { local c; for c in "${components[@]}"; do [ "$c" = "$1" ] && return 0; done; return 1; }

# ---------------------------------------------------------------------------------------------
# apt helpers

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"
  fi
}

apt_updated=0
apt_update() {
  [ "$apt_updated" -eq 1 ] && return 0
  log "apt-get update"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || die "apt-get update failed"
  apt_updated=1
}

# apt_install PKG...: install the packages; run `apt-get update` first only if the package lists
# have no candidate for one of them, and retry once after an update if the install fails.
apt_install() {
  command -v apt-get >/dev/null 2>&1 ||
    die "apt-get not found; install these packages with your system's package manager: $*"
  local p need_update=0
  for p in "$@"; do
    # (capture first: `cmd | grep -q` fails under pipefail when grep exits early)
    case "$(apt-cache policy "$p" 2>/dev/null)" in
      *"Candidate: (none)"* | "") need_update=1 ;;
      *Candidate:*) ;;
      *) need_update=1 ;;
    esac
  done
  [ "$need_update" -eq 1 ] && apt_update
  log "apt-get install -y $*"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; then
    [ "$apt_updated" -eq 1 ] && die "apt-get install $* failed"
    apt_update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" ||
      die "apt-get install $* failed"
  fi
}

dpkg_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

# ---------------------------------------------------------------------------------------------
# components

install_build() {
  local missing=()
  if command -v dpkg-query >/dev/null 2>&1; then
    local p
    for p in build-essential pkg-config zlib1g-dev libssl-dev openssl curl netcat-openbsd ca-certificates; do
      dpkg_installed "$p" || missing+=("$p")
    done
  else
    local c
    for c in cc make pkg-config openssl curl nc; do
      command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    [ ${#missing[@]} -eq 0 ] || die "not a Debian system and missing: ${missing[*]}; install them by hand"
  fi
  if [ ${#missing[@]} -eq 0 ]; then
    log "build tools: already installed"
  else
    apt_install "${missing[@]}"
  fi
}

install_rust() {
  command -v cargo >/dev/null 2>&1 ||
    die "cargo not found; install Rust first: https://rustup.rs (curl https://sh.rustup.rs -sSf | sh)"
  local missing=()
  cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
  cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
  if [ ${#missing[@]} -eq 0 ]; then
    log "rust: cargo, rustfmt and clippy already installed"
    return 0
  fi
  command -v rustup >/dev/null 2>&1 ||
    die "cargo ${missing[*]} missing and rustup not found; install the components for your toolchain"
  log "rustup component add ${missing[*]}"
  rustup component add "${missing[@]}" || die "rustup component add ${missing[*]} failed"
}

install_redis() {
  if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    log "redis: already installed ($(command -v redis-server))"
    return 0
  fi
  apt_install redis-server
  command -v redis-server >/dev/null 2>&1 || die "redis-server still not on PATH after apt-get install"
  log "redis: installed $(redis-server --version | head -n1)"
}

find_tansu() {
  if command -v tansu >/dev/null 2>&1; then command -v tansu
  elif [ -x "$CARGO_BIN/tansu" ]; then echo "$CARGO_BIN/tansu"
  else return 1
  fi
}

# Another `cargo install tansu` on this machine (started by hand or by an earlier run)?
other_tansu_install() { pgrep -f '(^|/)cargo install (.* )?tansu( |$)' 2>/dev/null | grep -vx "$$" | head -n1; }

# `tansu --help` ends with "Storage engines: libsql" when built with the sqlite engine.
check_tansu_engine() {
  local help
  help="$("$1" --help 2>&1 || true)"
  if [[ "$help" != *"Storage engines:"*libsql* ]]; then
    log "WARNING: $1 was built without the libsql (sqlite) storage engine; reinstall it with:"
    log "  cargo install tansu --locked --features libsql --force"
  fi
}

install_tansu() {
  local t
  if t=$(find_tansu); then
    log "tansu: already installed ($t)"
    check_tansu_engine "$t"
    return 0
  fi
  command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust first: https://rustup.rs"
  mkdir -p "$CARGO_BIN"
  # Serialise concurrent runs of this script, and wait for an install started some other way,
  # rather than compiling tansu twice at once.
  exec 9>"${CARGO_HOME:-$HOME/.cargo}/.thermo-tansu-install.lock"
  if ! flock -n 9; then
    log "tansu: another install-deps run is installing tansu; waiting for it"
    flock 9
  fi
  local pid
  while pid=$(other_tansu_install) && [ -n "$pid" ]; do
    log "tansu: waiting for a running 'cargo install tansu' (pid $pid) to finish"
    while kill -0 "$pid" 2>/dev/null; do sleep 10; done
  done
  if t=$(find_tansu); then
    log "tansu: installed by the other run ($t)"
    return 0
  fi
  local args=(install tansu --locked --features libsql)
  [ -n "${TANSU_VERSION:-}" ] && args+=(--version "$TANSU_VERSION")
  log "tansu: cargo ${args[*]} (about 20 minutes on 2 cores)"
  local start=$SECONDS
  cargo "${args[@]}" || die "cargo install tansu failed (see the output above)"
  t=$(find_tansu) || die "cargo install tansu succeeded but no tansu binary in $CARGO_BIN"
  log "tansu: installed $t in $((SECONDS - start))s"
}

# python3 with pip (Debian's python3-pip if there is no pip yet); prints the interpreter.
python_with_pip() {
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
    apt_install python3 python3-pip >&2
  fi
  command -v python3 >/dev/null 2>&1 || die "python3 still not on PATH after apt-get install"
  echo python3
}

# pip_install WHAT PKG...: pip install PKG... into python3 (WHAT names it in messages).
pip_install() {
  local what="$1" py out
  shift
  py=$(python_with_pip)
  log "$what: $py -m pip install $*"
  if ! out=$("$py" -m pip install "$@" 2>&1); then
    if [[ "$out" == *externally-managed-environment* ]]; then
      # Debian 12's system Python refuses pip installs (PEP 668); this is a test machine.
      log "$what: system Python is externally managed; retrying with --break-system-packages"
      "$py" -m pip install --break-system-packages "$@" || die "pip install $* failed"
    else
      printf '%s\n' "$out" >&2
      die "pip install $* failed"
    fi
  else
    printf '%s\n' "$out" | tail -n 3
  fi
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash 2>/dev/null || true; fi
  hash -r
}

install_moto() {
  if command -v moto_server >/dev/null 2>&1; then
    log "moto: already installed ($(command -v moto_server))"
    return 0
  fi
  pip_install moto 'moto[server]'
  command -v moto_server >/dev/null 2>&1 ||
    die "moto installed but moto_server is not on PATH (is pip's script directory, e.g. ~/.local/bin, on PATH?)"
  log "moto: installed $(command -v moto_server)"
}

duckdb_version() { python3 -c 'import duckdb; print(duckdb.__version__)' 2>/dev/null; }

install_duckdb() {
  local v
  if v=$(duckdb_version); then
    log "duckdb: already installed (python3 module, version $v)"
    return 0
  fi
  pip_install duckdb duckdb
  v=$(duckdb_version) || die "pip install duckdb succeeded but python3 cannot import duckdb"
  log "duckdb: installed (python3 module, version $v)"
}

install_pyclients() {
  local check='import statsd, datadog, opentelemetry.sdk.metrics, opentelemetry.exporter.otlp.proto.http.metric_exporter'
  if python3 -c "$check" 2>/dev/null; then
    log "pyclients: already installed (python3 modules statsd, datadog, opentelemetry sdk and OTLP/HTTP exporter)"
    return 0
  fi
  pip_install pyclients statsd datadog opentelemetry-sdk opentelemetry-exporter-otlp-proto-http
  python3 -c "$check" ||
    die "pip install statsd datadog opentelemetry-sdk opentelemetry-exporter-otlp-proto-http succeeded but python3 cannot import them"
  log "pyclients: installed (python3 modules statsd, datadog, opentelemetry sdk and OTLP/HTTP exporter)"
}

install_chromium() {
  if command -v chromium >/dev/null 2>&1; then
    log "chromium: already installed ($(command -v chromium))"
    return 0
  fi
  apt_install chromium
  command -v chromium >/dev/null 2>&1 || die "chromium still not on PATH after apt-get install"
  log "chromium: installed $(chromium --version 2>/dev/null | head -n1)"
}

install_prometheus() {
  if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    log "prometheus: already installed ($(command -v promtool), $(command -v prometheus))"
    return 0
  fi
  apt_install prometheus
  command -v promtool >/dev/null 2>&1 || die "promtool still not on PATH after apt-get install prometheus"
  command -v prometheus >/dev/null 2>&1 || die "prometheus still not on PATH after apt-get install prometheus"
  log "prometheus: installed $(promtool --version 2>&1 | head -n1)"
}

install_vmalert() {
  if command -v vmalert >/dev/null 2>&1; then
    log "vmalert: already installed ($(command -v vmalert))"
    return 0
  fi
  apt_install victoria-metrics
  command -v vmalert >/dev/null 2>&1 || die "vmalert still not on PATH after apt-get install victoria-metrics"
  log "vmalert: installed $(vmalert -version 2>&1 | head -n1)"
}

# ---------------------------------------------------------------------------------------------

# tansu in the background (the slow one), so the caller can go on.
if [ -n "$tansu_log" ] && want tansu; then
  if t=$(find_tansu); then
    log "tansu: already installed ($t)"
    echo 0 >"$tansu_log.status"
  else
    mkdir -p "$(dirname "$tansu_log")"
    rm -f "$tansu_log.status"
    # shellcheck disable=SC2016,SC2094 # $0/$1 expand in the child; the log is only written
    nohup bash -c '"$0" tansu; rc=$?; echo "$rc" >"$1.status"; exit "$rc"' "$0" "$tansu_log" \
      >"$tansu_log" 2>&1 </dev/null &
    log "tansu: installing in the background (pid $!); log: $tansu_log; exit status: $tansu_log.status"
  fi
  new=()
  for c in "${components[@]}"; do [ "$c" = tansu ] || new+=("$c"); done
  components=("${new[@]+"${new[@]}"}")
fi

for c in build rust redis moto duckdb pyclients chromium prometheus vmalert tansu; do
  if [ ${#components[@]} -gt 0 ] && want "$c"; then "install_$c"; fi
done
log "done"
