#!/usr/bin/env bash
# Durability figures for docs/performance.md: persistent publish rate with confirms into
# a durable queue, memory per queued message after recovery, and recovery time.
#   FILL_SECS=25 SIZE=1024 CLIENT=raw bench/durability.sh
# Fills one durable queue with persistent messages for FILL_SECS seconds (publisher
# confirms, at most 1000 outstanding; about a million messages on a 2-core machine),
# kills Warren with SIGKILL, restarts it on the same data directory and reads the
# recovery time from its log and its RSS from /proc.
set -euo pipefail
cd "$(dirname "$0")/.."
FILL_SECS=${FILL_SECS:-25}
SIZE=${SIZE:-1024}
cargo build --release --workspace >/dev/null 2>&1
data=$(mktemp -d)
log=$(mktemp)
trap 'kill -9 ${pid:-0} 2>/dev/null || true; rm -rf "$data" "$log"' EXIT

start() {
  ./target/release/warren --listen 127.0.0.1:0 --management-listen 127.0.0.1:0 --prometheus-listen 127.0.0.1:0 --stream-listen 127.0.0.1:0 --data-dir "$data" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 6000); do
    addr=$(sed -n 's/.*AMQP listener on \([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -n1)
    [ -n "$addr" ] && return 0
    sleep 0.01
  done
  echo "warren did not start"; cat "$log"; exit 1
}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

start
idle=$(rss_kib "$pid")
uri="amqp://guest:guest@$addr/%2f"
# CLIENT=raw (default) uses warren-perf's lean client, CLIENT=lapin the lapin one.
client_args=()
[[ ${CLIENT:-raw} == raw ]] && client_args=(--raw)
out=$(./target/release/warren-perf --uri "$uri" "${client_args[@]}" -x 1 -y 0 -s "$SIZE" --persistent --durable \
  --confirm 1000 --keep-queues --queue-prefix dur --duration "$FILL_SECS" --quiet \
  --broker-pid "$pid" 2>/dev/null | grep '^JSON ' | cut -c6-) || true
echo "$out" | python3 -c '
import json,sys
d=json.load(sys.stdin)["result"]
print("persistent publish with confirms: %.0f msg/s (%d confirmed)" % (d["confirm_rate"], d["totals"]["confirmed"]))'
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
disk=$(du -sk "$data" | cut -f1)
t0=$(date +%s%N)
start
t1=$(date +%s%N)
rec=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | sed -n 's/.*recovered durable state.*messages=\([0-9]*\).*elapsed_ms=\([0-9]*\).*/\1 \2/p' | head -n1)
after=$(rss_kib "$pid")
echo "recovered (messages, ms): $rec; process start to listening: $(( (t1 - t0) / 1000000 )) ms"
echo "data directory: $((disk / 1024)) MiB; idle RSS ${idle} KiB; RSS after recovery ${after} KiB"
python3 - "$rec" "$idle" "$after" <<'PY'
import sys
msgs = int(sys.argv[1].split()[0])
idle, after = int(sys.argv[2]), int(sys.argv[3])
print("memory per queued message (index + cache, after recovery): %.1f bytes" % ((after - idle) * 1024 / max(msgs, 1)))
PY
