#!/usr/bin/env bash
# Bounded memory for a transient backlog (issue 13), for docs/performance.md:
#   FILL_SECS=20 SIZE=1024 bench/backlog.sh
# One publisher (lean client, no confirms) fills a non-durable queue with transient
# messages for FILL_SECS seconds with no consumer; Warren's RSS is sampled every 100 ms.
# Then one consumer drains the queue (auto-ack) and checks the order; the queue is
# deleted and RSS is watched for 10 s. Prints: messages queued, peak RSS, the longest
# publish stall (whole seconds with no publish), RAM per queued message, disk bytes per
# message, drain rate and order, RSS after the delete.
# DATA_DIR (default: a directory under target/) must have room for the backlog
# (about 1.1 KiB per 1 KiB message). To measure another broker the same way (e.g. the
# Debian RabbitMQ): BROKER_URI=amqp://guest:guest@127.0.0.1:5672/%2f
# BROKER_PID=$(pgrep -f beam.smp) BROKER_DATA=/var/lib/rabbitmq bench/backlog.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FILL_SECS=${FILL_SECS:-20}
SIZE=${SIZE:-1024}
[ -n "${NO_BUILD:-}" ] || cargo build --release -p warren -p warren-perf >/dev/null 2>&1
mkdir -p target/bench
data=${DATA_DIR:-$(mktemp -d -p target/bench backlog.XXXXXX)}
log=$(mktemp)
samples=$(mktemp)
trap 'kill ${sampler:-0} 2>/dev/null || true; kill -9 ${pid:-0} 2>/dev/null || true; rm -rf "$data" "$log" "$samples"' EXIT

if [ -n "${BROKER_URI:-}" ]; then
  pid=$BROKER_PID
  uri=$BROKER_URI
  data=${BROKER_DATA:?set BROKER_DATA to the data directory of the broker}
  trap 'kill ${sampler:-0} 2>/dev/null || true; rm -f "$log" "$samples"' EXIT
else
  ./target/release/warren --listen 127.0.0.1:0 --management-listen 127.0.0.1:0 --prometheus-listen 127.0.0.1:0 --stream-listen 127.0.0.1:0 --data-dir "$data" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 6000); do
    addr=$(sed -n 's/.*AMQP listener on \([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -n1)
    [ -n "$addr" ] && break
    sleep 0.01
  done
  [ -n "$addr" ] || { cat "$log"; echo "warren did not start"; exit 1; }
  uri="amqp://guest:guest@$addr/%2f"
fi
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
idle=$(rss_kib "$pid")
( while kill -0 "$pid" 2>/dev/null; do echo "$(date +%s%N) $(rss_kib "$pid")"; sleep 0.1; done ) >"$samples" &
sampler=$!

fill=$(./target/release/warren-perf --uri "$uri" --raw -x 1 -y 0 -s "$SIZE" \
  --keep-queues --queue-prefix backlog --duration "$FILL_SECS" --quiet \
  --broker-pid "$pid" 2>/dev/null | grep '^JSON ' | cut -c6-)
disk=$(du -sk "$data" 2>/dev/null | cut -f1)
peak_fill=$(awk '{ if ($2 > m) m = $2 } END { print m }' "$samples")
filled_rss=$(rss_kib "$pid")
drain=$(./target/release/warren-perf --uri "$uri" --raw -x 0 -y 1 -a -s "$SIZE" \
  --queue-prefix backlog --duration "${DRAIN_SECS:-$((FILL_SECS * 3))}" --quiet \
  --broker-pid "$pid" 2>/dev/null | grep '^JSON ' | cut -c6-)
peak_all=$(awk '{ if ($2 > m) m = $2 } END { print m }' "$samples")
# (warren-perf deleted the queue at the end of the drain run.)
t_del=$(date +%s%N)
after=""
for _ in $(seq 1 100); do
  after=$(rss_kib "$pid")
  sleep 0.1
done
kill "$sampler" 2>/dev/null || true

python3 - "$fill" "$drain" "$idle" "$peak_fill" "$peak_all" "$filled_rss" "$after" "$disk" "$SIZE" <<'PY'
import json, sys
fill, drain = json.loads(sys.argv[1])["result"], json.loads(sys.argv[2])["result"]
idle, peak_fill, peak_all, filled, after, disk_kib, size = map(int, sys.argv[3:10])
queued = fill["totals"]["published"]
stall = 0
run = 0
for s in fill["per_second"]:
    run = run + 1 if s["publish_rate"] == 0 else 0
    stall = max(stall, run)
print(f"queued: {queued:,} messages of {size} B in {fill['duration_s']:.0f} s "
      f"({fill['publish_rate']:,.0f} msg/s); longest publish stall: {stall} whole second(s)")
print(f"RSS: idle {idle/1024:.1f} MiB, peak while filling {peak_fill/1024:.1f} MiB, "
      f"with the backlog {filled/1024:.1f} MiB, peak overall {peak_all/1024:.1f} MiB")
print(f"RAM per queued message: {(filled - idle) * 1024 / max(queued, 1):.1f} B; "
      f"disk per message: {disk_kib * 1024 / max(queued, 1):.0f} B")
got = drain["totals"]["consumed"]
print(f"drained: {got:,} of {queued:,} ({drain['consume_rate']:,.0f} msg/s), "
      f"out of order: {drain['out_of_order']}")
print(f"RSS 10 s after the queue was deleted: {after/1024:.1f} MiB "
      f"({(after - idle)/1024:+.1f} MiB from idle)")
PY
