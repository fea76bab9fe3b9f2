#!/usr/bin/env bash
# PostgreSQL history throughput: `make bench-store` (or scripts/bench-store.sh [EVENTS] [REPEAT]).
#
# Starts a PostgreSQL server of its own (initdb + pg_ctl, default settings, on a free loopback port
# in a temporary directory; as user postgres when run as root) and runs the full pipeline of
# `lobsentry bench` (books, windows, every feature to CSV, the detectors) with 2 workers on the
# benchmark file (EVENTS events, default 5,000,000 over 100 instruments) three ways: no store, the
# store keeping alerts only, and the store keeping alerts plus every window's features. Each run
# writes into a fresh database. Prints events/s (best of REPEAT, default 3) and the rows written.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-5000000}
REPEAT=${2:-3}
B=./target/release/lobsentry
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ] || { echo "PostgreSQL is missing: apt-get install postgresql" >&2; exit 1; }
mkdir -p target/bench
FILE=target/bench/events-$EVENTS-100.csv
[ -f "$FILE" ] || $B generate --events "$EVENTS" --instruments 100 --rate 100000 --disorder 1s --out "$FILE"
DIR=$(mktemp -d /tmp/lobsentry-bench-store.XXXXXX)
chmod 755 "$DIR"
AS=()
if [ "$(id -u)" = 0 ]; then chown postgres "$DIR"; AS=(runuser -u postgres --); fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${AS[@]}" "$PGBIN/initdb" -D "$DIR/data" -U lobsentry --auth=trust -E UTF8 --no-sync >/dev/null
"${AS[@]}" "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/data/log" \
  -o "-p $PORT -c listen_addresses=127.0.0.1 -k $DIR/data" -w start >/dev/null
trap '"${AS[@]}" "$PGBIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
PSQL=("$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U lobsentry -qtA)
export LOBSENTRY__METRICS__ENABLED=false
# The benchmark file is 50 s of event time: too short for the calibrated detectors' warm-up, so every
# mode runs the detectors uncalibrated and the model at a low raw threshold (THRESHOLD, default 20),
# which alerts on about 6% of the windows: the rows the alerts mode writes.
export LOBSENTRY__DETECT__ALARMS_PER_HOUR=0 LOBSENTRY__MODEL__THRESHOLD=${THRESHOLD:-20}
printf '[pipeline]\nprogress = false\n[source]\nkind = "files"\n' > "$DIR/full.toml"
printf '%-16s %12s %14s %10s %10s\n' store events best-events/s alerts windows
n=0
for mode in none alerts features; do
  best=0; rows_a=0; rows_w=0
  for _ in $(seq "$REPEAT"); do
    n=$((n + 1))
    envs=()
    if [ $mode != none ]; then
      "${PSQL[@]}" -d postgres -c "CREATE DATABASE bench$n"
      # The schema is created (migrated) by a short run first, as a deployment has it from its
      # first start: the timed run measures writing, not CREATE TABLE.
      head -2001 "$FILE" > "$DIR/head.csv"
      LOBSENTRY__STORE__URL="postgresql://lobsentry@127.0.0.1:$PORT/bench$n" $B run --config "$DIR/full.toml" \
        --input "$DIR/head.csv" >/dev/null 2>&1
      "${PSQL[@]}" -d bench$n -c "TRUNCATE alerts, scores, window_features"
      envs=(LOBSENTRY__STORE__URL="postgresql://lobsentry@127.0.0.1:$PORT/bench$n")
      [ $mode = features ] && envs+=(LOBSENTRY__STORE__FEATURES=true)
    fi
    line=$(env "${envs[@]}" $B bench --pipelines full --workers 2 --repeat 1 --file "$FILE" | awk '$1 == "full"')
    eps=$(echo "$line" | awk '{print $8}')
    [ "${eps%.*}" -gt "$best" ] && best=${eps%.*}
    if [ $mode != none ]; then
      rows_a=$("${PSQL[@]}" -d bench$n -c "SELECT count(*) FROM alerts")
      rows_w=$("${PSQL[@]}" -d bench$n -c "SELECT count(*) FROM window_features")
    fi
  done
  printf '%-16s %12s %14s %10s %10s\n' "$mode" "$EVENTS" "$best" "$rows_a" "$rows_w"
done
