#!/usr/bin/env bash
# The false-alarm budget on slow instruments (`make eval-slow`, 2026-12-08, thirteenth session): the
# sample days and the synthetic markets of `make eval` have every instrument at one message a second
# or more; these synthetic markets have four instruments at 0.5, 2 and 10 messages a second each
# (market-wide rates 2, 8 and 40), 26 hours of market apiece, once with nothing injected (seed 91:
# every alert is a false alarm) and once with four episodes of the standard kinds an
# instrument-hour (seed 92). Prints per rate the decision's false alarms with nothing injected and
# its episodes and false alarms with them (scripts/decision_check.py margin 1). RATES sets others.
set -euo pipefail
BIN=${BIN:-./target/release/lobsentry}
OUT=${OUT:-target/eval-slow}
mkdir -p "$OUT"
for rate in ${RATES:-2 8 40}; do
  events=$((rate * 93600))
  line="rate $rate ($(awk "BEGIN { print $rate / 4 }") a second per instrument):"
  for run in clean:0:91 episodes:4:92; do
    IFS=: read -r name per_hour seed <<< "$run"
    f="$OUT/$name-$rate"
    "$BIN" generate --instruments 4 --rate "$rate" --events "$events" --anomalies-per-hour "$per_hour" \
      --seed "$seed" --out "$f.csv" > /dev/null 2>&1
    LOBSENTRY__METRICS__ENABLED=false LOBSENTRY__DETECT__SCORES="\"$f.scores.jsonl\"" \
      "$BIN" run --input "$f.csv" > "$f.run.txt" 2>&1
    line="$line $name $(python3 scripts/decision_check.py margin 1 "$f.scores.jsonl" | grep total | sed 's/^total x1.0: //');"
  done
  echo "$line"
done
