#!/usr/bin/env bash
# Compares Warren with RabbitMQ on a fixed scenario matrix and writes the results into
# docs/performance.md, between the lines <!-- compare:begin --> and <!-- compare:end -->.
#
#   bench/compare.sh                 # 10 s per scenario (about 8 minutes in all)
#   DURATION=3 bench/compare.sh      # quick run
#   CLIENT=lapin bench/compare.sh    # message scenarios with lapin instead of --raw
#
# Environment:
#   DURATION=10           seconds per message scenario and idle-connection hold
#   CLIENT=raw            client of the message scenarios a-f: raw (warren-perf --raw,
#                         producers and consumers on warren_codec) or lapin (lapin 4,
#                         which costs more CPU than the broker on a small machine)
#   F_REPEAT=3            runs of the latency scenario f per broker, alternating
#                         brokers, each on a freshly started broker; the table shows
#                         the median of every percentile. f also runs the machine floor
#                         (warren-perf --latency-floor: the same client through a bare TCP
#                         relay, no broker) F_REPEAT times, for context
#   IDLE_CONNECTIONS=1000 connections in scenario g
#   STARTUP_RUNS=5        Warren start-ups timed in scenario h (RabbitMQ: every start)
#   DOC=docs/performance.md   where the results go
#   RESULTS_DIR=target/compare/<time>   raw output of every run (kept)
#   SKIP_BUILD=1          use the release binaries already in target/release
#   RABBITMQ_TAKEOVER=1   go ahead even if a RabbitMQ node is already running: it is
#                         stopped for the run and started again at the end, since
#                         someone else was using it (by default the script refuses)
#   ONLY="a f h"          run only these scenarios (the others show as "–"); for
#                         debugging, since the document then has an incomplete table
#
# Only one broker runs at a time: each run starts a fresh broker (Warren: release build
# on 127.0.0.1:0 with a temporary data directory; RabbitMQ: Debian's rabbitmq-server on
# 5672) and stops it afterwards, and the order alternates per scenario (and per run
# of f). RabbitMQ is stopped at the end. Needs root (rabbitmq-server, apt-get), jq and
# Linux /proc.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10}
CLIENT=${CLIENT:-raw}
F_REPEAT=${F_REPEAT:-3}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-1000}
STARTUP_RUNS=${STARTUP_RUNS:-5}
DOC=${DOC:-$ROOT/docs/performance.md}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/target/compare/$(date -u +%Y%m%dT%H%M%SZ)}
WARREN=$ROOT/target/release/warren
PERF=$ROOT/target/release/warren-perf
RABBIT_URI="amqp://guest:guest@127.0.0.1:5672/%2f"

log() { printf '[compare %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $F_REPEAT =~ ^[1-9][0-9]*$ ]] || die "F_REPEAT must be a positive integer, not '$F_REPEAT'"

case $CLIENT in
    raw) CLIENT_ARGS=(--raw) ;;
    lapin) CLIENT_ARGS=() ;;
    *) die "CLIENT must be raw or lapin, not '$CLIENT'" ;;
esac

raise_nofile() {
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

# --------------------------------------------------------------------------- setup

need_packages() {
    local missing=()
    command -v jq >/dev/null || missing+=(jq)
    command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

build() {
    if [[ ${SKIP_BUILD:-0} == 1 ]]; then
        [[ -x $WARREN && -x $PERF ]] || die "SKIP_BUILD=1 but the release binaries are missing"
        return
    fi
    log "building release binaries (warren, warren-perf)"
    (cd "$ROOT" && cargo build --release -j 2 -p warren -p warren-perf --bin warren --bin warren-perf >&2)
}

# -------------------------------------------------------------------------- Warren

WARREN_PID=
WARREN_DIR=
WARREN_PORT=
WARREN_CRASHES=()

warren_start() {
    WARREN_DIR=$(mktemp -d /tmp/warren-compare.XXXXXX)
    # Run from the temporary directory so no ./config.toml is picked up: defaults only.
    (cd "$WARREN_DIR" && NO_COLOR=1 exec "$WARREN" --listen 127.0.0.1:0 --management-listen 127.0.0.1:0 --prometheus-listen 127.0.0.1:0 --stream-listen 127.0.0.1:0 \
        --data-dir "$WARREN_DIR/data" >"$WARREN_DIR/log" 2>&1) &
    WARREN_PID=$!
    local addr=
    for _ in $(seq 1 200); do
        addr=$(grep -o 'AMQP listener on [0-9.]*:[0-9]*' \
            "$WARREN_DIR/log" 2>/dev/null | head -1 | awk '{print $NF}') || true
        [[ -n $addr ]] && break
        kill -0 "$WARREN_PID" 2>/dev/null || break
        sleep 0.05
    done
    [[ -n $addr ]] || { cat "$WARREN_DIR/log" >&2; die "Warren did not start"; }
    WARREN_PORT=${addr##*:}
}

# Stops Warren; records a crash if it was no longer running.
warren_stop() { # label
    local label=$1
    if ! kill -0 "$WARREN_PID" 2>/dev/null; then
        local status=0
        wait "$WARREN_PID" 2>/dev/null || status=$?
        log "Warren died during $label (exit status $status); log tail:"
        tail -20 "$WARREN_DIR/log" >&2 || true
        cp "$WARREN_DIR/log" "$RESULTS_DIR/warren-crash-$label.log" 2>/dev/null || true
        WARREN_CRASHES+=("$label: exit status $status")
    else
        kill -TERM "$WARREN_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$WARREN_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$WARREN_PID" 2>/dev/null; then
            log "Warren ignored SIGTERM for 10 s during $label; killing it"
            WARREN_CRASHES+=("$label: did not stop within 10 s of SIGTERM")
            kill -KILL "$WARREN_PID" 2>/dev/null || true
        fi
        wait "$WARREN_PID" 2>/dev/null || true
        cp "$WARREN_DIR/log" "$RESULTS_DIR/warren-$label.log" 2>/dev/null || true
    fi
    rm -rf "$WARREN_DIR"
    WARREN_PID=
}

# ------------------------------------------------------------------------ RabbitMQ

RABBIT_PID=
RABBIT_STARTUP_MS=()

rabbit_running() { rabbitmqctl -q status >/dev/null 2>&1; }

rabbit_stop() {
    local pid=${RABBIT_PID:-}
    rabbitmqctl -q stop >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do
        ss -Hltn 'sport = :5672' | grep -q . || break
        sleep 0.2
    done
    # The Erlang VM goes on shutting down for 2-3 s after its listener has closed: wait
    # for it to exit, so that the next run does not share the machine with it.
    if [[ -n $pid ]]; then
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    RABBIT_PID=
}

# Starts RabbitMQ while a probe times the first successful connection.open.
rabbit_start() { # label
    local label=$1 out="$RESULTS_DIR/startup-rabbitmq-$1.txt"
    ss -Hltn 'sport = :5672' | grep -q . && die "port 5672 is in use by something else"
    "$PERF" --startup-probe --uri "$RABBIT_URI" --startup-timeout 180 >"$out" 2>&1 &
    local probe=$!
    sleep 0.2
    local t0=${EPOCHREALTIME/./}
    rabbit_launch
    wait "$probe" || { cat "$out" >&2; die "RabbitMQ did not accept a connection"; }
    local ms
    ms=$(grep '^JSON ' "$out" | cut -c6- | jq --argjson t0 "$t0" \
        '((.result.connected_unix_ns / 1000) - $t0) / 1000')
    RABBIT_STARTUP_MS+=("$ms")
    for _ in $(seq 1 60); do
        rabbitmqctl -q await_startup >/dev/null 2>&1 && break
        sleep 1
    done
    RABBIT_PID=$(rabbitmqctl -q eval 'os:getpid().' | tr -d '"')
    [[ $RABBIT_PID =~ ^[0-9]+$ ]] || die "cannot find the RabbitMQ pid"
    RABBIT_NOFILE=$(awk '/^Max open files/ {print $4}' "/proc/$RABBIT_PID/limits")
}

# Debian's rabbitmq-server wrapper switches to the rabbitmq user with su, whose PAM
# session (pam_limits) resets the open-file limit to 1024: RabbitMQ then allows about
# 830 sockets and scenario g cannot open its connections. setpriv switches user without
# PAM, so the raised limit reaches the Erlang VM.
rabbit_launch() {
    if command -v setpriv >/dev/null && id rabbitmq >/dev/null 2>&1 &&
        [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]]; then
        (raise_nofile; cd /var/lib/rabbitmq &&
            setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
                env HOME=/var/lib/rabbitmq USER=rabbitmq LOGNAME=rabbitmq \
                /usr/lib/rabbitmq/bin/rabbitmq-server -detached >/dev/null 2>&1)
    else
        (raise_nofile; rabbitmq-server -detached >/dev/null 2>&1)
    fi
}

# ----------------------------------------------------------------------- scenarios

read -r -a SCENARIOS <<<"${ONLY:-a b c d e f g h}"
declare -A TITLE=(
    [a]="a. 1p1c, 16 B, auto-ack, transient"
    [b]="b. 1p1c, 1 KiB, manual ack, prefetch 100"
    [c]="c. 1p1c, 1 KiB, persistent, durable, confirms ≤1000, manual ack"
    [d]="d. 4p4c, 4 queues, 256 B, auto-ack"
    [e]="e. 1p, fanout to 10 queues, 10c, 128 B"
    [f]="f. 1p1c at 1000 msg/s, 16 B"
    [g]="g. ${IDLE_CONNECTIONS} idle connections, 1 channel each"
    [h]="h. start-up and idle memory"
)
declare -A ARGS=(
    [a]="-x 1 -y 1 -s 16 --auto-ack"
    [b]="-x 1 -y 1 -s 1024 --prefetch 100"
    [c]="-x 1 -y 1 -s 1024 --persistent --durable --confirm 1000 --prefetch 100"
    [d]="-x 4 -y 4 --queues 4 -s 256 --auto-ack"
    [e]="-x 1 -y 10 --queues 10 --fanout -s 128 --auto-ack"
    [f]="-x 1 -y 1 -s 16 --auto-ack --rate 1000"
    [g]="--idle-connections ${IDLE_CONNECTIONS}"
)
# The machine floor of f: its client, pacing and message size through a bare TCP relay.
FLOOR_ARGS="--latency-floor -s 16 --rate 1000"

# Runs warren-perf for scenario $1 against broker $2 (warren|rabbitmq). $3 names the
# run's files if it is one of several runs of the scenario (f2: the second run of f).
run_scenario() {
    local id=$1 broker=$2 tag=${3:-$1} uri pid what="scenario $1"
    local out="$RESULTS_DIR/$tag-$broker.txt"
    [[ $tag != "$id" ]] && what+=" (run ${tag#"$id"} of $F_REPEAT)"
    if [[ $broker == warren ]]; then
        warren_start
        uri="amqp://guest:guest@127.0.0.1:$WARREN_PORT/%2f"
        pid=$WARREN_PID
    else
        rabbit_start "$tag"
        uri=$RABBIT_URI
        pid=$RABBIT_PID
    fi
    # The message scenarios run with the chosen client; g (idle connections) always
    # uses warren-perf's small handshake client.
    local client=()
    [[ $id == [a-f] ]] && client=("${CLIENT_ARGS[@]}")
    log "$what on $broker: warren-perf ${client[*]:+${client[*]} }${ARGS[$id]}"
    # shellcheck disable=SC2086 # ARGS holds several options on purpose
    (raise_nofile; "$PERF" --uri "$uri" --broker-pid "$pid" --duration "$DURATION" \
        --queue-prefix "compare-$tag-$$" --quiet "${client[@]}" ${ARGS[$id]}) >"$out" 2>&1 ||
        log "warren-perf reported a failure for $tag on $broker (see $out)"
    grep '^JSON ' "$out" | tail -1 | cut -c6- >"$RESULTS_DIR/$tag-$broker.json" || true
    grep -v '^JSON ' "$out" | sed 's/^/    /' >&2 || true
    if [[ $broker == warren ]]; then warren_stop "$tag"; else rabbit_stop; fi
}

# Scenario f, F_REPEAT times per broker: before each pair of broker runs the machine
# floor (no broker running), then the two brokers, alternating throughout (warren,
# rabbitmq, warren, rabbitmq, ... starting with rabbitmq if $1 is odd). Each run has its
# own files (f1-warren.json, f1-floor.json, ...); f-<broker>.json holds the medians.
run_f() { # i
    local k=0 r first=$(($1 % 2)) brokers=(warren rabbitmq) out
    for r in $(seq 1 "$F_REPEAT"); do
        out="$RESULTS_DIR/f$r-floor.txt"
        log "scenario f (run $r of $F_REPEAT), machine floor: warren-perf $FLOOR_ARGS"
        # shellcheck disable=SC2086 # FLOOR_ARGS holds several options on purpose
        "$PERF" $FLOOR_ARGS --duration "$DURATION" --quiet >"$out" 2>&1 ||
            log "warren-perf reported a failure for the floor run $r (see $out)"
        grep '^JSON ' "$out" | tail -1 | cut -c6- >"$RESULTS_DIR/f$r-floor.json" || true
        grep -v '^JSON ' "$out" | sed 's/^/    /' >&2 || true
        run_scenario f "${brokers[$(((k + first) % 2))]}" "f$r"
        run_scenario f "${brokers[$(((k + 1 + first) % 2))]}" "f$r"
        k=$((k + 2))
    done
    local b
    for b in warren rabbitmq floor; do combine_f "$b"; done
}

# Writes $RESULTS_DIR/f-$1.json from the runs f1..fN of $1 (warren, rabbitmq or floor):
# the median of each latency percentile, of the CPU figures and of the peak RSS over
# the runs that succeeded; .error only if none did.
combine_f() { # broker
    local files=() r
    for r in $(seq 1 "$F_REPEAT"); do
        [[ -f $RESULTS_DIR/f$r-$1.json ]] && files+=("$RESULTS_DIR/f$r-$1.json")
    done
    ((${#files[@]})) || return 0
    jq -s --argjson n "$F_REPEAT" '
        def med: sort | if length == 0 then null
            elif length % 2 == 1 then .[(length - 1) / 2]
            else (.[length / 2 - 1] + .[length / 2]) / 2 end;
        def ok: .error == null and ((.result.errors // []) | length) == 0
            and (.result.latency.count // 0) > 0;
        map(select(ok)) as $ok
        | if ($ok | length) == 0 then
            {error: ((map(.error // (.result.errors // [])[0]) | map(select(. != null)) | .[0])
                // "no successful run"), result: null}
          else
            {error: null, runs: $n, successful_runs: ($ok | length), result: {
                latency: (reduce ("count", "p50_ns", "p95_ns", "p99_ns", "max_ns", "mean_ns") as $k
                    ({}; .[$k] = ([$ok[].result.latency[$k]] | med))),
                broker_cpu_cores: ([$ok[].result.broker_cpu_cores | numbers] | med),
                client_cpu_cores: ([$ok[].result.client_cpu_cores | numbers] | med),
                broker_rss: {peak_bytes: ([$ok[].result.broker_rss.peak_bytes | numbers] | med)},
                errors: []}}
          end' "${files[@]}" >"$RESULTS_DIR/f-$1.json" 2>/dev/null ||
        log "cannot combine the runs of f for $1"
}

# Scenario h for Warren: start-up time (median of STARTUP_RUNS) and idle RSS.
warren_startup() {
    local times=() rss=()
    for i in $(seq 1 "$STARTUP_RUNS"); do
        local port dir out="$RESULTS_DIR/startup-warren-$i.txt"
        while :; do
            port=$((20000 + RANDOM % 40000))
            ss -Hltn "sport = :$port" | grep -q . || break
        done
        dir=$(mktemp -d /tmp/warren-compare.XXXXXX)
        "$PERF" --startup-probe --uri "amqp://guest:guest@127.0.0.1:$port/%2f" \
            --startup-timeout 30 >"$out" 2>&1 &
        local probe=$!
        sleep 0.2
        local t0=${EPOCHREALTIME/./}
        (cd "$dir" && NO_COLOR=1 exec "$WARREN" --listen "127.0.0.1:$port" \
            --data-dir "$dir/data" >"$dir/log" 2>&1) &
        WARREN_PID=$!
        WARREN_DIR=$dir
        if wait "$probe"; then
            times+=("$(grep '^JSON ' "$out" | cut -c6- | jq --argjson t0 "$t0" \
                '((.result.connected_unix_ns / 1000) - $t0) / 1000')")
            sleep 2
            rss+=("$(awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$WARREN_PID/status" 2>/dev/null)")
        else
            log "Warren start-up probe failed (run $i)"
        fi
        warren_stop "startup-$i"
    done
    WARREN_STARTUP_TIMES=("${times[@]}")
    WARREN_STARTUP_MS=$(median "${times[@]}")
    WARREN_IDLE_RSS=$(median "${rss[@]}")
}

rabbit_startup() {
    rabbit_start h
    sleep 2
    RABBIT_IDLE_RSS=$(awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$RABBIT_PID/status")
    rabbit_stop
    RABBIT_STARTUP_MEDIAN_MS=$(median "${RABBIT_STARTUP_MS[@]}")
}

median() {
    (($#)) || { echo ""; return; }
    printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ----------------------------------------------------------------------- reporting

# The value of jq expression $2 in the JSON of scenario $1 on broker $3, or "".
val() {
    local f="$RESULTS_DIR/$1-$3.json"
    [[ -s $f ]] || { echo ""; return; }
    jq -r "($2) // empty" "$f" 2>/dev/null || echo ""
}

failed() { # id broker: prints the failure, if any
    local f="$RESULTS_DIR/$1-$2.json"
    [[ -s $f ]] || { echo "no output"; return; }
    jq -r '.error // ((.result.errors // []) | if length > 0 then .[0] else empty end)' "$f"
}

num() { # integer with thousands separators
    [[ -n $1 ]] || { echo "–"; return; }
    awk -v v="$1" 'BEGIN { s = sprintf("%.0f", v); o = "";
        while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
        print s o }'
}
fixed() { [[ -n $2 ]] && awk -v v="$2" -v p="$1" 'BEGIN { printf "%.*f", p, v }' || echo "–"; }
msf() { [[ -n $2 ]] && awk -v v="$2" -v p="$1" 'BEGIN { printf "%.*f ms", p, v }' || echo "–"; }
ms() { [[ -n $1 ]] && awk -v v="$1" 'BEGIN { printf "%.2f ms", v / 1e6 }' || echo "–"; }
kib() { [[ -n $1 ]] && awk -v v="$1" 'BEGIN { printf "%.1f KiB", v / 1024 }' || echo "–"; }
mib() { [[ -n $1 ]] && awk -v v="$1" 'BEGIN { printf "%.1f MiB", v / 1048576 }' || echo "–"; }
ratio() { # warren rabbitmq
    [[ -n $1 && -n $2 ]] && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3g×", a / b; else print "–" }' || echo "–"
}

samples() { # precision values...
    local p=$1; shift
    (($#)) || { echo "–"; return; }
    printf "%.${p}f, " "$@" | sed 's/, $//'
}

row() { printf '| %s | %s | %s | %s | %s |\n' "$@"; }

runs_label() { if (($1 == 1)); then echo "1 run"; else echo "$1 runs"; fi; }

# The p99 of every run of f on $1 (warren, rabbitmq or floor), in ms, in run order.
f_p99s() {
    local r v vals=()
    for r in $(seq 1 "$F_REPEAT"); do
        [[ -f $RESULTS_DIR/f$r-$1.json ]] || continue
        v=$(val "f$r" .result.latency.p99_ns "$1")
        if [[ -n $(failed "f$r" "$1") || -z $v ]]; then
            vals+=("failed")
        else
            vals+=("$(awk -v v="$v" 'BEGIN { printf "%.2f", v / 1e6 }')")
        fi
    done
    ((${#vals[@]})) || { echo "–"; return; }
    join_comma "${vals[@]}"
}

join_comma() { local s; s=$(printf '%s, ' "$@"); echo "${s%, }"; }

# A cell: the formatted value, or the failure.
cell() { # id broker formatted
    local why
    why=$(failed "$1" "$2")
    if [[ -n $why ]]; then echo "failed: ${why:0:60}"; else echo "$3"; fi
}

report() {
    local out=$1 cpu_model mem_gib kernel rabbit_version erlang_version lapin_version git_rev
    cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    mem_gib=$(awk '/^MemTotal:/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)
    kernel=$(uname -r)
    rabbit_version=$(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo "?")
    erlang_version=$(dpkg-query -W -f='${Version}' erlang-base 2>/dev/null || echo "?")
    lapin_version=$(awk '/^name = "lapin"/ {getline; gsub(/[^0-9.]/, ""); print; exit}' "$ROOT/Cargo.lock")
    git_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
    if [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null | head -1) ]]; then git_rev="$git_rev+changes"; fi
    {
        echo "## Results"
        echo
        echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/compare.sh\` with DURATION=${DURATION} s per scenario."
        echo
        echo "- Machine: $(nproc) CPUs ($cpu_model), ${mem_gib} GiB RAM, Linux $kernel"
        echo "- Warren: $("$WARREN" --version 2>/dev/null | awk '{print $NF}') (git $git_rev), release build, default configuration (fsync always)"
        echo "- RabbitMQ: $rabbit_version (Debian package), Erlang $erlang_version, default configuration, open-file limit ${RABBIT_NOFILE:-?}"
        local perf_version client_line
        perf_version=$("$PERF" --version | awk '{print $NF}')
        if [[ $CLIENT == raw ]]; then
            client_line="warren-perf $perf_version, raw client on warren_codec (\`--raw\`, CLIENT=raw) for (a)–(f)"
        else
            client_line="warren-perf $perf_version with lapin $lapin_version (CLIENT=lapin) for (a)–(f)"
        fi
        echo "- Client: $client_line; built with $(rustc --version | awk '{print $1, $2}')"
        echo "- Client and broker share the machine: every throughput number below is also bounded by the client's CPU (see the CPU table)."
        echo
        row "Scenario" "Metric" "Warren" "RabbitMQ" "Warren/RabbitMQ"
        row "---" "---" "---:" "---:" "---:"
        local id w r
        for id in a b c d e; do
            w=$(val "$id" .result.publish_rate warren); r=$(val "$id" .result.publish_rate rabbitmq)
            row "${TITLE[$id]}" "published msg/s" "$(cell "$id" warren "$(num "$w")")" "$(cell "$id" rabbitmq "$(num "$r")")" "$(ratio "$w" "$r")"
            if [[ $id == c ]]; then
                w=$(val c .result.confirm_rate warren); r=$(val c .result.confirm_rate rabbitmq)
                row "" "confirmed msg/s" "$(num "$w")" "$(num "$r")" "$(ratio "$w" "$r")"
            fi
            w=$(val "$id" .result.consume_rate warren); r=$(val "$id" .result.consume_rate rabbitmq)
            row "" "**consumed msg/s**" "**$(num "$w")**" "**$(num "$r")**" "**$(ratio "$w" "$r")**"
        done
        local q f_median=""
        ((F_REPEAT > 1)) && f_median=", median of $F_REPEAT runs"
        for q in p50 p95 p99 max; do
            w=$(val f ".result.latency.${q}_ns" warren); r=$(val f ".result.latency.${q}_ns" rabbitmq)
            row "$([[ $q == p50 ]] && echo "${TITLE[f]}")" "latency $q$f_median (lower is better)" \
                "$(cell f warren "$(ms "$w")")" "$(cell f rabbitmq "$(ms "$r")")" "$(ratio "$w" "$r")"
        done
        w=$(val g .result.per_connection_bytes warren); r=$(val g .result.per_connection_bytes rabbitmq)
        row "${TITLE[g]}" "broker RSS per connection (lower is better)" "$(cell g warren "$(kib "$w")")" "$(cell g rabbitmq "$(kib "$r")")" "$(ratio "$w" "$r")"
        row "${TITLE[h]}" "start to first connection.open-ok, median (lower is better)" \
            "$(msf 1 "$WARREN_STARTUP_MS")" "$(msf 0 "$RABBIT_STARTUP_MEDIAN_MS")" "$(ratio "$WARREN_STARTUP_MS" "$RABBIT_STARTUP_MEDIAN_MS")"
        row "" "idle RSS 2 s after start (lower is better)" "$(mib "$WARREN_IDLE_RSS")" "$(mib "$RABBIT_IDLE_RSS")" "$(ratio "$WARREN_IDLE_RSS" "$RABBIT_IDLE_RSS")"
        echo
        echo "Latency (f), p99 of every run in run order (ms): Warren $(f_p99s warren); RabbitMQ $(f_p99s rabbitmq). The brokers alternated, each run on a freshly started broker."
        echo
        local fl=() fcell
        for q in p50 p95 p99 max; do fl+=("$q $(ms "$(val f ".result.latency.${q}_ns" floor)")"); done
        fcell=$(cell f floor "$(join_comma "${fl[@]}")")
        echo "Machine floor for (f), no broker (\`warren-perf --latency-floor\`: same client, pacing and clock; producer → bare TCP relay process → consumer over loopback), median of $(runs_label "$F_REPEAT"): $fcell; p99 of every run (ms): $(f_p99s floor)."
        echo
        echo "Start-up samples (ms): Warren $(samples 1 "${WARREN_STARTUP_TIMES[@]}"); RabbitMQ $(samples 0 "${RABBIT_STARTUP_MS[@]}") (every start of this run)."
        echo
        echo "CPU use during the message scenarios, in cores busy (the machine has $(nproc)):"
        echo
        echo "| Scenario | Warren | warren-perf vs Warren | RabbitMQ | warren-perf vs RabbitMQ | broker peak RSS Warren / RabbitMQ |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: |"
        for id in a b c d e f; do
            printf '| %s | %s | %s | %s | %s | %s / %s |\n' "${id}" \
                "$(fixed 2 "$(val "$id" .result.broker_cpu_cores warren)")" \
                "$(fixed 2 "$(val "$id" .result.client_cpu_cores warren)")" \
                "$(fixed 2 "$(val "$id" .result.broker_cpu_cores rabbitmq)")" \
                "$(fixed 2 "$(val "$id" .result.client_cpu_cores rabbitmq)")" \
                "$(mib "$(val "$id" .result.broker_rss.peak_bytes warren)")" \
                "$(mib "$(val "$id" .result.broker_rss.peak_bytes rabbitmq)")"
        done
        echo
        if ((${#WARREN_CRASHES[@]})); then
            echo "Warren failures during this run:"
            echo
            printf -- '- %s\n' "${WARREN_CRASHES[@]}"
            echo
        fi
        targets
    } >"$out"
}

met() { if awk "BEGIN { exit !($1) }"; then echo "**met**"; else echo "**not met**"; fi; }

targets() {
    local id w r ratios="" all=1
    echo "## Targets"
    echo
    echo "Each target is judged from the measurement above."
    echo
    echo "| Target | Measured | Status |"
    echo "| --- | --- | --- |"
    for id in a b c d e; do
        w=$(val "$id" .result.consume_rate warren); r=$(val "$id" .result.consume_rate rabbitmq)
        if [[ -z $w || -z $r || -n $(failed "$id" warren) || -n $(failed "$id" rabbitmq) ]]; then
            all=0; ratios+="$id failed; "; continue
        fi
        ratios+="$id $(ratio "$w" "$r"); "
        awk -v a="$w" -v b="$r" 'BEGIN { exit !(a >= 5 * b) }' || all=0
    done
    echo "| Throughput (a)–(e): consumed msg/s at least 5× RabbitMQ's | ${ratios%; } | $(met "$all") |"
    w=$(val a .result.consume_rate warren)
    local client
    client=$(val a .result.client_cpu_cores warren)
    echo "| (a) at least 800,000 msg/s where the client is not the limit | $(num "$w") msg/s; warren-perf used $(fixed 2 "$client") of $(nproc) cores, Warren $(fixed 2 "$(val a .result.broker_cpu_cores warren)") | $(met "${w:-0} >= 800000") |"
    w=$(val f .result.latency.p99_ns warren); r=$(val f .result.latency.p99_ns rabbitmq)
    local f_of="" floor
    ((F_REPEAT > 1)) && f_of=", medians of $F_REPEAT runs each"
    floor=$(val f .result.latency.p99_ns floor)
    echo "| Latency (f): p99 at most 1/3 of RabbitMQ's | $(ms "$w") vs $(ms "$r") ($(ratio "$w" "$r"))$f_of; machine floor (bare TCP relay, no broker) $(ms "$floor") | $(met "${w:-1} * 3 <= ${r:-0}") |"
    w=$(val g .result.per_connection_bytes warren)
    echo "| Memory: under 10 KiB per idle connection | $(kib "$w") | $(met "${w:-1e12} < 10240") |"
    echo "| Memory: idle RSS under 10 MiB | $(mib "$WARREN_IDLE_RSS") | $(met "${WARREN_IDLE_RSS:-1e12} < 10485760") |"
    echo "| Start-up under 50 ms | $(msf 1 "$WARREN_STARTUP_MS") (median of ${STARTUP_RUNS}) | $(met "${WARREN_STARTUP_MS:-1e12} < 50") |"
}

# Replaces the marked section of $DOC with file $1.
write_doc() {
    local block=$1 tmp
    tmp=$(mktemp)
    if [[ ! -f $DOC ]]; then
        printf '# Performance\n\n<!-- compare:begin -->\n<!-- compare:end -->\n' >"$DOC"
    fi
    if ! grep -q '<!-- compare:begin -->' "$DOC" || ! grep -q '<!-- compare:end -->' "$DOC"; then
        printf '\n<!-- compare:begin -->\n<!-- compare:end -->\n' >>"$DOC"
    fi
    awk -v block="$block" '
        /<!-- compare:begin -->/ { print; while ((getline line < block) > 0) print line; skip = 1; next }
        /<!-- compare:end -->/ { skip = 0 }
        !skip { print }' "$DOC" >"$tmp"
    cat "$tmp" >"$DOC"
    rm -f "$tmp"
}

# ---------------------------------------------------------------------------- main

main() {
    [[ $(id -u) == 0 ]] || die "run as root (rabbitmq-server and apt-get need it)"
    raise_nofile
    need_packages
    build
    mkdir -p "$RESULTS_DIR"
    log "raw results in $RESULTS_DIR"
    if rabbit_running; then
        [[ ${RABBITMQ_TAKEOVER:-0} == 1 ]] ||
            die "a RabbitMQ node is already running (someone may be using it); stop it or set RABBITMQ_TAKEOVER=1"
        log "stopping the RabbitMQ node that was already running (restarted at the end)"
        RESTORE_RABBITMQ=1
    fi
    rabbit_stop
    trap 'log "interrupted; stopping brokers"; [[ -n $WARREN_PID ]] && kill -TERM "$WARREN_PID" 2>/dev/null; rabbit_stop
        [[ ${RESTORE_RABBITMQ:-0} == 1 ]] && rabbit_launch' EXIT

    local i=0 id
    for id in "${SCENARIOS[@]}"; do
        [[ -n ${TITLE[$id]:-} ]] || die "unknown scenario '$id' in ONLY"
        [[ $id == h ]] && continue
        if [[ $id == f ]]; then
            run_f "$i"
        elif ((i % 2 == 0)); then
            run_scenario "$id" warren
            run_scenario "$id" rabbitmq
        else
            run_scenario "$id" rabbitmq
            run_scenario "$id" warren
        fi
        i=$((i + 1))
    done
    if [[ " ${SCENARIOS[*]} " == *" h "* ]]; then
        log "scenario h: start-up and idle memory"
        warren_startup
        rabbit_startup
    else
        RABBIT_STARTUP_MEDIAN_MS=$(median "${RABBIT_STARTUP_MS[@]}")
    fi
    trap - EXIT
    rabbit_stop
    if [[ ${RESTORE_RABBITMQ:-0} == 1 ]]; then
        log "starting RabbitMQ again, as it was running before this script"
        rabbit_launch || true
    fi

    local block="$RESULTS_DIR/compare-section.md"
    report "$block"
    write_doc "$block"
    log "wrote $DOC"
    cat "$block"
}

WARREN_STARTUP_MS=
WARREN_STARTUP_TIMES=()
WARREN_IDLE_RSS=
RABBIT_IDLE_RSS=
RABBIT_STARTUP_MEDIAN_MS=
RABBIT_NOFILE=
main "$@"
