#!/usr/bin/env bash
# Runs every test: formatting, lints, unit and integration tests, then the pika
# conformance suite against a release build of Warren started on a free port.
# Installs what it needs (Python packages in a virtualenv under target/).
set -euo pipefail
cd "$(dirname "$0")"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test (unit + integration)"
cargo test --workspace

echo "== conformance suite (pika) against a release build"
cargo build --release --workspace
venv=target/conformance-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r conformance/requirements.txt

log=$(mktemp)
data=$(mktemp -d)
./target/release/warren --listen 127.0.0.1:0 --data-dir "$data" >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data" "$log"; }
trap cleanup EXIT

# Wait (bounded) for the startup line, then read the port it reports.
addr=""
for _ in $(seq 1 200); do
  addr=$(sed -n 's/.*Server startup complete; AMQP listener on \([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -n1)
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "warren exited early"; exit 1; }
  sleep 0.05
done
[ -n "$addr" ] || { cat "$log"; echo "warren did not start"; exit 1; }
echo "warren listening on $addr"

echo "== warren-perf smoke run (1 s) and benchmark build"
pid_of_warren=$pid
./target/release/warren-perf --uri "amqp://guest:guest@$addr/%2f" -x 1 -y 1 -s 64 -a \
  --duration 1 --quiet --broker-pid "$pid_of_warren" | grep '^JSON ' >/dev/null
cargo bench --no-run -p warren-perf >/dev/null

AMQP_URL="amqp://guest:guest@$addr/%2F" "$venv/bin/python" -m pytest -q -p no:cacheprovider conformance/
