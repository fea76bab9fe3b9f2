#!/usr/bin/env bash
# Detection on large-tick instruments (`make eval-large-tick`, 2026-12-07, twelfth session): the GOOG
# and AMZN days of ../shared/data with every price moved onto a coarse grid by scripts/coarse_ticks.py
# (GOOG, about $570, on 40 cents; AMZN, about $220, on 15 cents: the relative tick of a $14 stock at
# one cent, so a spread of one or two ticks, where the samples' is 10-30, and deep queues at few
# levels). No setting was chosen on such a book. Each day runs as it is (nothing injected: every
# alert is a false alarm), with the standard kinds (seed 11, an episode every 300 s) and with each
# held-out group one episode every 670 s (seeds 31, 41, 51, 61, 71: the density of the days issue 15
# was scored on). Prints the book's consistency for the days as they are, then per row the
# decision's episodes and false alarms (scripts/decision_check.py margin 1) for both days together,
# and recall per kind (`lobsentry eval`). GOOG_TICK and AMZN_TICK set other grids, ROUNDING=--away
# the rounding of every add away from the other side (scripts/coarse_ticks.py).
set -euo pipefail
BIN=${BIN:-./target/release/lobsentry}
OUT=${OUT:-target/eval-large-tick}
SHARED=${SHARED:-../shared/data}
mkdir -p "$OUT/clean" target/lobster
unzip -qo "$SHARED/lobster/LOBSTER_SampleFile_GOOG_2012-06-21_10.zip" -d target/lobster
unzip -qo "$SHARED/lobster/LOBSTER_SampleFile_AMZN_2012-06-21_5.zip" -d target/lobster
# source day, its large-tick copy's ticker, the grid (LOBSTER price units: 1/10,000 of a dollar)
DAYS="GOOG_2012-06-21_34200000_57600000_message_10:GOOGT:${GOOG_TICK:-4000} AMZN_2012-06-21_34200000_57600000_message_5:AMZNT:${AMZN_TICK:-1500}"
STEMS=()
for spec in $DAYS; do
  IFS=: read -r day ticker tick <<< "$spec"
  stem="${ticker}_${day#*_}"
  STEMS+=("$stem")
  # The message file alone, as `make eval` runs its days: the book starts empty.
  python3 scripts/coarse_ticks.py ${ROUNDING:-} "$tick" "target/lobster/$day.csv" "$OUT/clean/$stem.csv" > /dev/null
  printf 'instrument,kind,start_ns,end_ns\n' > "$OUT/clean/$stem.labels.csv"
done
# row name, kinds, injection seed, mean seconds between episodes
ROWS="standard:standard:11:300 held-out:held-out:31:670 held-out-2:held-out-2:41:670 held-out-3:held-out-3:51:670 held-out-4:held-out-4:61:670 held-out-5:held-out-5:71:670"
for row in clean $ROWS; do
  IFS=: read -r name kinds seed every <<< "$row"
  dir="$OUT/$name"
  mkdir -p "$dir"
  for stem in "${STEMS[@]}"; do
    if [ "$name" != clean ]; then
      "$BIN" generate --inject-into "$OUT/clean/$stem.csv" --inject-every "$every" --seed "$seed" \
        --kinds "$kinds" --out "$dir/$stem.csv" > /dev/null
    fi
    LOBSENTRY__METRICS__ENABLED=false LOBSENTRY__DETECT__SCORES="\"$dir/$stem.scores.jsonl\"" \
      "$BIN" run --input "$dir/$stem.csv" > "$dir/$stem.run.txt" 2>&1
    if [ "$name" = clean ]; then
      echo "$stem: $(grep '^books:' "$dir/$stem.run.txt")"
    fi
  done
  printf '%-10s %s\n' "$name" \
    "$(python3 scripts/decision_check.py margin 1 "$dir"/*.scores.jsonl | grep total | sed 's/^total x1.0: //')"
  if [ "$name" != clean ]; then
    for stem in "${STEMS[@]}"; do
      "$BIN" eval --scores "$dir/$stem.scores.jsonl" --labels "$dir/$stem.labels.csv" |
        sed -n '/^decision/,$p' | grep -v '^decision' | grep -v '^  all' | sed "s/^ /  ${stem%%_*}/" || true
    done
  fi
done
