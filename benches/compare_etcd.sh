#!/usr/bin/env bash
# trexlock against etcd, same machine, same run, same load code.
#
#   bash benches/compare_etcd.sh            # every case, 3 s each
#   BENCH_SECS=5 bash benches/compare_etcd.sh
#   BENCH_CASES="watch:16 renew_session:64" bash benches/compare_etcd.sh   # some cases only
#
# Installs Debian's etcd-server (and protobuf-compiler, which the
# etcd-client crate needs to build) if they are missing, builds the
# trexlock binary, the cluster bench (benches/cluster.rs) and the etcd
# driver (benches/etcd-driver, outside the workspace), then for each case
# starts a fresh three-member etcd cluster on loopback (own ports, data in a
# temporary directory, default durability), runs the case against it, stops
# it, and runs the same case against fresh three-node trexlock clusters.
# The watch case: events per second delivered to 16 watchers of a prefix
# (etcd's watch API against trexlock's watch) while 16 writers cycle.
# Prints first the disk's flush latency after an idle gap and back to back,
# the loopback round trip and a replicated write with no logic around it
# (FLUSH, LOOPBACK and REPLICATED lines, benches/flush.rs),
# then the RESULT lines of both systems
# (trexlock on its default redb journal, and as trexlock-log on the
# append-only log journal) with trexlock's SYNC lines (its nodes' journal
# syncs per second and their mean latency in that case), then
#   FLOOR p50_single_us=F quorum_flush_us=Q loopback_rtt_us=R third_of_etcd_us=T trexlock_us=A
# (F is the REPLICATED line's p50, what no single-client acquire on this
# machine beats: a client's request made durable on a leader and one of
# two followers, over loopback, with nothing else done; Q, the quorum
# flush, and R, the loopback round trip, are its parts. T is the
# single-client target, a third of etcd's acquire p50; A is trexlock's),
# then
#   RATIO-LOG uncontended64=A contended=B p50_single=C watch16=D renew64=E   (log journal)
# and, last,
#   RATIO uncontended64=A contended=B p50_single=C watch16=D renew64=E
# (throughputs trexlock over etcd, contended against etcd's key-value
# queue; p50_single is etcd's single-client acquire p50 over trexlock's;
# watch16 is events delivered per second to 16 watchers; renew64 is
# trexlock's durable renewals of 64 leases over etcd's keep-alives).
# Every process it starts is stopped by pid, on success, failure or signal.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECS=${BENCH_SECS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

WORK=$(mktemp -d -t trexlock-compare.XXXXXX)
PIDS=()            # etcd members and benchmark drivers we started
NODE_PIDFILE=$WORK/trexlock-nodes.pids   # trexlock nodes, written by the bench

stop_pid() {
  local pid=$1
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$pid" 2>/dev/null || return 0
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [[ -f $NODE_PIDFILE ]]; then
    while read -r pid; do
      # Only our own trexlock nodes: the pid must still run our binary.
      if [[ -n $pid ]] && grep -q "trexlock" "/proc/$pid/cmdline" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done <"$NODE_PIDFILE"
  fi
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "compare: $*" >&2; }

# --- tools -----------------------------------------------------------------
if ! command -v etcd >/dev/null 2>&1 || ! command -v protoc >/dev/null 2>&1; then
  log "installing etcd-server and protobuf-compiler"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server protobuf-compiler >/dev/null
fi
log "$(etcd --version | head -1)"

log "building trexlock, the cluster bench and the etcd driver (release)"
cargo build --release --quiet -p trexlock-cli
cargo bench --quiet --bench cluster --no-run
CLUSTER_BENCH=$(cargo bench --bench cluster --no-run --message-format=json 2>/dev/null |
  grep -o '"executable":"[^"]*cluster-[^"]*"' | tail -1 | cut -d'"' -f4)
[[ -x $CLUSTER_BENCH ]] || { log "cannot find the cluster bench executable"; exit 1; }
cargo build --release --quiet --manifest-path benches/etcd-driver/Cargo.toml
DRIVER=$CARGO_TARGET_DIR/release/trexlock-etcd-driver
TREXLOCK=$CARGO_TARGET_DIR/release/trexlock

# --- etcd cluster ----------------------------------------------------------
ETCD_PIDS=()
ENDPOINTS=""

start_etcd() {
  local ports dir cluster token i
  read -r -a ports <<<"$("$DRIVER" --free-ports 6)"
  dir=$WORK/etcd-$RANDOM
  token=bench-$$-$RANDOM
  cluster=""
  for i in 0 1 2; do
    cluster+="${cluster:+,}e$i=http://127.0.0.1:${ports[$((3 + i))]}"
  done
  ETCD_PIDS=()
  ENDPOINTS=""
  for i in 0 1 2; do
    mkdir -p "$dir/e$i"
    etcd --name "e$i" --data-dir "$dir/e$i" \
      --listen-client-urls "http://127.0.0.1:${ports[$i]}" \
      --advertise-client-urls "http://127.0.0.1:${ports[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${ports[$((3 + i))]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${ports[$((3 + i))]}" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token "$token" \
      --logger zap --log-level error >"$dir/e$i.log" 2>&1 &
    ETCD_PIDS+=($!)
    PIDS+=($!)
    ENDPOINTS+="${ENDPOINTS:+,}http://127.0.0.1:${ports[$i]}"
  done
}

stop_etcd() {
  local pid
  for pid in "${ETCD_PIDS[@]}"; do stop_pid "$pid"; done
  ETCD_PIDS=()
}

# Runs a driver in the background (so a signal can stop it by pid) and
# keeps its RESULT lines.
run_driver() {
  local out=$1
  shift
  "$@" >"$out" 2>"$out.err" &
  local pid=$!
  PIDS+=("$pid")
  if ! wait "$pid"; then
    log "failed: $* ($(tail -n 3 "$out.err" | tr '\n' ' '))"
  fi
  grep -E '^(RESULT|COST|FAILOVER|SYNC)' "$out" || true
  cat "$out" >>"$WORK/all.txt"
}

: >"$WORK/all.txt"
log "the disk's flush latency (benches/flush.rs)"
cargo bench --quiet --bench flush | grep -E '^(FLUSH|LOOPBACK|REPLICATED)' | tee -a "$WORK/all.txt" ||
  log "the flush bench failed"
# shellcheck disable=SC2206 # the cases are words
CASES=(${BENCH_CASES:-uncontended:1 uncontended:16 uncontended:64 contended:16 renew:64 renew_session:64 failover:16 watch:16})
for case in "${CASES[@]}"; do
  log "case $case: etcd"
  start_etcd
  run_driver "$WORK/etcd.out" "$DRIVER" --endpoints "$ENDPOINTS" \
    --pids "$(IFS=,; echo "${ETCD_PIDS[*]}")" --case "$case" --secs "$SECS"
  stop_etcd
  for journal in redb log; do
    log "case $case: trexlock ($journal journal)"
    run_driver "$WORK/trexlock.out" "$CLUSTER_BENCH" --bin "$TREXLOCK" \
      --pidfile "$NODE_PIDFILE" --case "$case" --secs "$SECS" --journal "$journal"
  done
done

# --- ratios ----------------------------------------------------------------
field() { # system case clients key
  grep -E "^RESULT system=$1 case=$2 clients=$3 " "$WORK/all.txt" | tail -1 |
    grep -oE " $4=[0-9.]+" | cut -d= -f2
}
ratio() {
  if [[ -n $1 && -n $2 ]] && awk -v b="$2" 'BEGIN { exit !(b > 0) }'; then
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
  else
    echo "n/a"
  fi
}
ratios() { # system
  echo "uncontended64=$(ratio "$(field "$1" uncontended 64 ops_per_s)" "$(field etcd uncontended 64 ops_per_s)")" \
    "contended=$(ratio "$(field "$1" contended 16 ops_per_s)" "$(field etcd contended_kv 16 ops_per_s)")" \
    "p50_single=$(ratio "$(field etcd acquire 1 p50_us)" "$(field "$1" acquire 1 p50_us)")" \
    "watch16=$(ratio "$(field "$1" watch 16 ops_per_s)" "$(field etcd watch 16 ops_per_s)")" \
    "renew64=$(ratio "$(field "$1" renew 64 ops_per_s)" "$(field etcd renew 64 ops_per_s)")"
}
# About what no single-client acquire on this machine beats (see the top),
# beside a third of etcd's p50.
p50_of() { # line prefix
  grep -E "^$1 " "$WORK/all.txt" | tail -1 | grep -oE " p50_us=[0-9]+" | cut -d= -f2
}
floor=$(p50_of "REPLICATED round")
quorum=$(p50_of "FLUSH quorum=2of3")
rtt=$(p50_of "LOOPBACK rtt")
etcd_p50=$(field etcd acquire 1 p50_us)
if [[ -n $floor && -n $quorum && -n $rtt && -n $etcd_p50 ]]; then
  echo "FLOOR p50_single_us=$floor quorum_flush_us=$quorum loopback_rtt_us=$rtt" \
    "third_of_etcd_us=$((etcd_p50 / 3)) trexlock_us=$(field trexlock acquire 1 p50_us)"
fi
# The default (redb) journal's line is the last, as the issue specifies.
echo "RATIO-LOG $(ratios trexlock-log)"
echo "RATIO $(ratios trexlock)"
