#!/usr/bin/env bash
# Soak (issue 13): 10,000 concurrent connections each with a channel, an exclusive queue
# and a manual-ack consumer, plus publishers, held for 10 minutes:
#   bench/soak.sh                                   # CONNECTIONS=10000 DURATION=600
#   CONNECTIONS=500 DURATION=30 bench/soak.sh       # smoke run
# PUBLISHERS (4) connections publish SIZE-byte (1024) messages round robin to the
# consumers' queues at RATE msg/s in total (5000), with publisher confirms (at most
# CONFIRM, 1000, unconfirmed per publisher); consumers use basic.qos PREFETCH (10) and
# ack every delivery. warren-perf reads the broker's RSS every second and prints a line
# every INTERVAL (10) s with RSS, open fds, CPU, counts and latency, then the summary:
# RSS before / after the open / min / max / at end, memory per connection, messages
# published / delivered, and every error. Exits non-zero on any error or any message
# not delivered. The full output is kept in REPORT (default target/bench/soak-*.out).
#
# Starts a release Warren on free ports with its own data directory and configuration
# (max_connections 65536) unless BROKER_URI and BROKER_PID name another broker, e.g.
# RabbitMQ (started with `ulimit -n 65536` beforehand):
#   BROKER_URI=amqp://guest:guest@127.0.0.1:5672/%2f BROKER_PID=$(pgrep -f beam.smp) bench/soak.sh
# Builds first unless NO_BUILD=1. Raises `ulimit -n` for itself and Warren (root may
# raise the hard limit; otherwise up to it).
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-10000}
DURATION=${DURATION:-600}
PUBLISHERS=${PUBLISHERS:-4}
RATE=${RATE:-5000}
SIZE=${SIZE:-1024}
PREFETCH=${PREFETCH:-10}
CONFIRM=${CONFIRM:-1000}
INTERVAL=${INTERVAL:-10}
mkdir -p target/bench
REPORT=${REPORT:-target/bench/soak-$(date -u +%Y%m%d-%H%M%S).out}

want=$((CONNECTIONS + PUBLISHERS + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
  ulimit -n "$want" 2>/dev/null || ulimit -Sn "$(ulimit -Hn)"
fi

[ -n "${NO_BUILD:-}" ] || cargo build --release -p warren -p warren-perf >/dev/null 2>&1

log=$(mktemp)
if [ -n "${BROKER_URI:-}" ]; then
  pid=${BROKER_PID:?set BROKER_PID to the broker process, for its RSS and fds}
  uri=$BROKER_URI
  trap 'rm -f "$log"' EXIT
  broker="external (pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-80))"
else
  dir=$(mktemp -d -p target/bench soak.XXXXXX)
  cat >"$dir/soak.toml" <<EOF
# bench/soak.sh: the defaults, with room for the soak's connections said explicitly.
log_level = "info"
[limits]
max_connections = 65536
EOF
  # Its own node name: rabbitmqctl -n warren-soak-PID reaches it, beside any other node.
  RABBITMQ_NODENAME=warren-soak-$$ ./target/release/warren --config "$dir/soak.toml" --listen 127.0.0.1:0 \
    --management-listen 127.0.0.1:0 --prometheus-listen 127.0.0.1:0 \
    --data-dir "$dir/data" >"$log" 2>&1 &
  pid=$!
  trap 'kill ${pid:-0} 2>/dev/null || true; rm -rf "$dir" "$log"' EXIT
  addr=""
  for _ in $(seq 1 6000); do
    addr=$(sed -n 's/.*AMQP listener on \([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -n1)
    [ -n "$addr" ] && break
    sleep 0.01
  done
  [ -n "$addr" ] || { cat "$log"; echo "warren did not start"; exit 1; }
  uri="amqp://guest:guest@$addr/%2f"
  broker="warren $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src crates 2>/dev/null || echo '+local changes') (pid $pid)"
fi

{
  echo "soak: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
  echo "broker: $broker; $uri"
  echo "open files: client $(ulimit -n), broker $(awk '/Max open files/ {print $4}' "/proc/$pid/limits")"
  echo "connections $CONNECTIONS, publishers $PUBLISHERS, $RATE msg/s of $SIZE B, prefetch $PREFETCH, confirm window $CONFIRM, $DURATION s"
} | tee "$REPORT"

set +e
./target/release/warren-perf --uri "$uri" --soak-connections "$CONNECTIONS" \
  --duration "$DURATION" --producers "$PUBLISHERS" --soak-rate "$RATE" --size "$SIZE" \
  --prefetch "$PREFETCH" --confirm "$CONFIRM" --soak-interval "$INTERVAL" \
  --broker-pid "$pid" 2>&1 | tee -a "$REPORT"
status=${PIPESTATUS[0]}
set -e

if [ -z "${BROKER_URI:-}" ]; then
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  warnings=$(grep -c -E ' (WARN|ERROR) ' "$log" || true)
  echo "broker log: $warnings WARN/ERROR lines" | tee -a "$REPORT"
  grep -E ' (WARN|ERROR) ' "$log" | head -n 20 | tee -a "$REPORT" || true
fi
echo "full output: $REPORT"
exit "$status"
