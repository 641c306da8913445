#!/usr/bin/env bash
# Runs every test: formatting, lints, unit and integration tests, then the pika
# conformance suite against a release build of Warren started on a free port, and the
# management web UI's tests in headless Chromium.
# Installs what it needs (Python packages in a virtualenv under target/).
set -euo pipefail
cd "$(dirname "$0")"

# The management web UI's browser tests (tests/ui) drive Debian's chromium through its
# chromedriver. Installing them takes a while on a fresh machine: it runs in the
# background during the build, and the UI tests wait for it (and fail if it failed).
mkdir -p target
ui_apt_log=target/ui-apt.log
ui_apt_pid=""
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  (
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 install -y chromium chromium-driver ||
      { apt-get update && apt-get -o DPkg::Lock::Timeout=600 install -y chromium chromium-driver; }
  ) </dev/null >"$ui_apt_log" 2>&1 &
  ui_apt_pid=$!
fi

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
# TLS for conformance/test_tls.py: a throw-away CA, a server certificate for
# 127.0.0.1/localhost and a client certificate (CN=warren-tls-client), made with openssl.
pki="$data/pki"
mkdir -p "$pki"
command -v openssl >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y openssl >/dev/null 2>&1; }
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=Warren test CA" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
  printf "subjectAltName=DNS:localhost,IP:127.0.0.1\n" >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/O=Warren tests/CN=warren-tls-client" 2>/dev/null
  # X.509 v3 (an extension makes it so): rustls, like most TLS stacks now, refuses v1.
  printf "extendedKeyUsage=clientAuth\n" >client.ext
  openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.ext 2>/dev/null
)
# The repository's config.toml, with SASL EXTERNAL offered (user name = certificate CN).
conf="$data/warren.toml"
sed -e 's/^mechanisms = .*/mechanisms = ["PLAIN", "AMQPLAIN", "EXTERNAL"]/' \
    -e 's/^ssl_cert_login_from = .*/ssl_cert_login_from = "common_name"/' config.toml >"$conf"
# A node name and private control directory, for rabbitmqctl (conformance/test_rabbitmqctl.py).
RABBITMQ_NODENAME=warren-conformance WARREN_CONTROL_DIR="$data/ctl" \
./target/release/warren --config "$conf" --listen "[::]:0" --management-listen 127.0.0.1:0 --prometheus-listen 127.0.0.1:0 --stream-listen 127.0.0.1:0 --stream-tls-listen 127.0.0.1:0 --data-dir "$data/db" \
  --tls-listen 127.0.0.1:0 --tls-cert "$pki/server.pem" --tls-key "$pki/server.key" --tls-ca "$pki/ca.pem" --tls-verify peer >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data" "$log"; }
trap cleanup EXIT

# Wait (bounded) for the startup line, then read the port it reports.
addr=""
for _ in $(seq 1 200); do
  # The dual-stack listener reports [::]:PORT; clients use 127.0.0.1 (and ::1).
  port=$(sed -n 's/.*Server startup complete;.* AMQP listener on \[::\]:\([0-9]*\).*/\1/p' "$log" | head -n1)
  [ -n "$port" ] && addr="127.0.0.1:$port"
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "warren exited early"; exit 1; }
  sleep 0.05
done
[ -n "$addr" ] || { cat "$log"; echo "warren did not start"; exit 1; }
echo "warren listening on $addr"
# The other listeners start just after the startup line: wait (bounded) for them.
for _ in $(seq 1 100); do
  grep -q 'Management plugin: HTTP (non-TLS) listener started' "$log" \
    && grep -q 'Prometheus metrics: HTTP (non-TLS) listener started' "$log" \
    && grep -q 'stream protocol TLS listener started' "$log" && break
  sleep 0.05
done
mport=$(sed -n 's/.*Management plugin: HTTP (non-TLS) listener started on port \([0-9]*\).*/\1/p' "$log" | head -n1)
pport=$(sed -n 's/.*Prometheus metrics: HTTP (non-TLS) listener started on port \([0-9]*\).*/\1/p' "$log" | head -n1)
export PROMETHEUS_URL="http://127.0.0.1:$pport"
stport=$(sed -n 's/.*stream protocol TLS listener started on port \([0-9]*\).*/\1/p' "$log" | head -n1)
[ -n "$stport" ] || { cat "$log"; echo "warren did not start its stream TLS listener"; exit 1; }
export STREAMS_PORT="$stport"
sport=$(sed -n 's/.*stream protocol listener started on port \([0-9]*\).*/\1/p' "$log" | head -n1)
[ -n "$sport" ] || { cat "$log"; echo "warren did not start its stream listener"; exit 1; }
export STREAM_URL="rabbitmq-stream://guest:guest@127.0.0.1:$sport/%2f"
tport=$(sed -n 's/.*started TLS (SSL) listener on 127.0.0.1:\([0-9]*\).*/\1/p' "$log" | head -n1)
[ -n "$tport" ] || { cat "$log"; echo "warren did not start its TLS listener"; exit 1; }
export AMQPS_PORT="$tport" TLS_CA="$pki/ca.pem" TLS_CLIENT_CERT="$pki/client.pem" TLS_CLIENT_KEY="$pki/client.key" \
  TLS_CLIENT_USER="warren-tls-client"

# rabbitmqadmin (v1) is a Python script inside Debian's rabbitmq-server package: take it
# from an installed RabbitMQ, or extract it from the downloaded package (not installed).
admin_script=target/rabbitmqadmin
if [ ! -s "$admin_script" ]; then
  if command -v rabbitmqadmin >/dev/null 2>&1 && head -c 200 "$(command -v rabbitmqadmin)" | grep -q python; then
    cp "$(command -v rabbitmqadmin)" "$admin_script"
  else
    tmpdeb=$(mktemp -d)
    if (cd "$tmpdeb" && { apt-get download rabbitmq-server >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get download rabbitmq-server >/dev/null 2>&1; }; }); then
      dpkg -x "$tmpdeb"/rabbitmq-server_*.deb "$tmpdeb/x"
      found=$(find "$tmpdeb/x" -path '*priv/www/cli/rabbitmqadmin' | head -n1)
      [ -n "$found" ] && cp "$found" "$admin_script"
    fi
    rm -rf "$tmpdeb"
  fi
fi
if [ -s "$admin_script" ]; then
  export RABBITMQADMIN="$PWD/$admin_script" MANAGEMENT_URL="http://127.0.0.1:$mport"
else
  echo "WARNING: rabbitmqadmin could not be obtained; conformance/test_rabbitmqadmin.py is skipped"
fi

echo "== warren-perf smoke run (1 s) and benchmark build"
pid_of_warren=$pid
./target/release/warren-perf --uri "amqp://guest:guest@$addr/%2f" -x 1 -y 1 -s 64 -a \
  --duration 1 --quiet --broker-pid "$pid_of_warren" | grep '^JSON ' >/dev/null
cargo bench --no-run -p warren-perf >/dev/null

# Warren's own rabbitmqadmin (a link to the binary), compared with the script above.
admin_links="$data/links"
./target/release/warren install-links "$admin_links" >/dev/null
export RABBITMQADMIN_NATIVE="$admin_links/rabbitmqadmin"
export RABBITMQCTL="env WARREN_CONTROL_DIR=$data/ctl $admin_links/rabbitmqctl -n warren-conformance"

MANAGEMENT_URL="${MANAGEMENT_URL:-http://127.0.0.1:$mport}" AMQP_URL="amqp://guest:guest@$addr/%2F" "$venv/bin/python" -m pytest -q -p no:cacheprovider conformance/

echo "== management web UI in headless Chromium (tests/ui)"
if [ -n "$ui_apt_pid" ]; then
  wait "$ui_apt_pid" || true
fi
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  cat "$ui_apt_log" 2>/dev/null || true
  echo "FAILED: chromium and chromium-driver could not be installed; the web UI tests cannot run"
  exit 1
fi
uivenv=target/ui-venv
if [ ! -x "$uivenv/bin/python" ]; then
  python3 -m venv "$uivenv"
fi
"$uivenv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/ui/requirements.txt
# A Warren of their own (they import definitions and add users); screenshots go to
# target/ui-screenshots/.
WARREN_BIN="$PWD/target/release/warren" "$uivenv/bin/python" -m pytest -q -p no:cacheprovider tests/ui

echo "== pytest-rabbitmq fixtures driving Warren as rabbitmq-server / rabbitmqctl"
fxvenv=target/fixture-venv
if [ ! -x "$fxvenv/bin/python" ]; then
  python3 -m venv "$fxvenv"
fi
"$fxvenv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/pytest_rabbitmq/requirements.txt
links=$(mktemp -d)
./target/release/warren install-links "$links" >/dev/null
# The nodes' control sockets go to a private directory, so a developer's own node is
# never touched.
WARREN_CONTROL_DIR="$links/ctl" "$fxvenv/bin/python" -m pytest -q -p no:cacheprovider tests/pytest_rabbitmq \
  --rabbitmq-server="$links/rabbitmq-server" --rabbitmq-ctl="$links/rabbitmqctl"
rm -rf "$links"
