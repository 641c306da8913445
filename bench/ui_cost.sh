#!/bin/bash
# Does the management listener (API and web UI, nobody looking) cost the message path
# anything? Alternates Warren with it and without it ([management] enabled = false),
# three pairs of warren-perf runs; prints publish and consume rates. Usage:
# bash bench/ui_cost.sh   (after cargo build --release)
cd "$(dirname "$0")/.."
run() { # $1 = with|without
  d=$(mktemp -d /tmp/warren-ui-cost.XXXX)
  extra=""; [ "$1" = with ] && extra="--management-listen 127.0.0.1:0"
  # management.enabled may default to true: disable explicitly through a config copy.
  sed -e '/^\[management\]/,/^\[/ s/^enabled = .*/enabled = false/' config.toml > $d/off.toml
  if [ "$1" = with ]; then cfg=config.toml; else cfg=$d/off.toml; fi
  ./target/release/warren --config $cfg --listen 127.0.0.1:0 --prometheus-listen 127.0.0.1:0 $extra --data-dir $d/db > $d/log 2>&1 &
  pid=$!
  for i in $(seq 1 100); do grep -q 'Server startup complete' $d/log && break; sleep 0.05; done
  port=$(sed -n 's/.*AMQP listener on 127.0.0.1:\([0-9]*\).*/\1/p' $d/log | head -1)
  mg=$(grep -c 'Management plugin: HTTP' $d/log)
  ./target/release/warren-perf --uri "amqp://guest:guest@127.0.0.1:$port/%2f" -x 2 -y 2 -s 256 --duration 10 --quiet --broker-pid $pid | grep '^JSON' | python3 -c "import sys,json; r=json.loads(sys.stdin.read()[5:])['result']; print('$1', 'mgmt_listeners=$mg', 'publish', round(r['publish_rate']), 'consume', round(r['consume_rate']), 'p50_ms', r['latency'].get('p50_ms', r['latency']))"
  kill $pid; wait $pid 2>/dev/null; rm -rf $d
}
for i in 1 2 3; do run with; run without; done
