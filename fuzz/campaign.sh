#!/usr/bin/env bash
# A fuzzing campaign: every target (or the ones named) in turn, each until it has run
# RUNS executions (default 10 million) or MAX_SECS seconds (default 1800), whichever comes
# first, under a 2 GiB RSS limit and a 10 s per-input timeout (a hang is a failure).
# libFuzzer's final statistics go to fuzz/logs/TARGET.log; the summary line of each target
# is printed at the end. Run from anywhere:  fuzz/campaign.sh [TARGET ...]
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-10000000}
MAX_SECS=${MAX_SECS:-1800}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
# Built once, then each target's binary runs directly: edits to the crates while a long
# campaign runs do not rebuild (or break) it.
cargo fuzz build -s none >/dev/null
bin=target/x86_64-unknown-linux-gnu/release
mkdir -p logs
for t in "${targets[@]}"; do
  case "$t" in
    config_toml|definitions) max_len=16384 ;;
    connection) max_len=8192 ;;
    *) max_len=4096 ;;
  esac
  echo "== $t: up to $RUNS runs or $MAX_SECS s"
  start=$(date +%s)
  # New inputs go to campaign-corpus/ (ignored by git); corpus/ (what cargo test replays)
  # is only read. Merge the new ones in with `cargo fuzz cmin` when they are worth keeping.
  mkdir -p "corpus/$t" "campaign-corpus/$t" "artifacts/$t"
  "$bin/$t" -artifact_prefix="artifacts/$t/" -runs="$RUNS" -max_total_time="$MAX_SECS" \
    -rss_limit_mb=2048 -timeout=10 -max_len="$max_len" -print_final_stats=1 \
    "campaign-corpus/$t" "corpus/$t" >"logs/$t.log" 2>&1 || { echo "!! $t failed, see fuzz/logs/$t.log"; tail -30 "logs/$t.log"; exit 1; }
  secs=$(( $(date +%s) - start ))
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo '?')
  peak=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo '?')
  echo "$t: $runs executions in $secs s, peak RSS $peak MiB, no failure" | tee -a logs/summary.txt
done
