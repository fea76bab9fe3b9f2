#!/usr/bin/env bash
# Detection on LOBSTER files shallower than the samples in ../shared/data (`make eval-levels`):
# level-N pairs cut from the GOOG (10 levels) and AMZN (5 levels) days by scripts/lobster_levels.py,
# each run as it is (nothing injected: every alert is a false alarm) and with the first held-out
# group injected one episode every 670 s (seed 31), with the books at every level ("all"), at the
# file's depth ("auto") and with the default. Prints, per depth and setting, the decision's episodes
# and false alarms (scripts/decision_check.py margin 1) for both days together.
set -euo pipefail
BIN=${BIN:-./target/release/lobsentry}
OUT=${OUT:-target/eval-levels}
SHARED=${SHARED:-../shared/data}
LEVELS=${LEVELS:-1 2 3}
mkdir -p "$OUT" target/lobster
unzip -qo "$SHARED/lobster/LOBSTER_SampleFile_GOOG_2012-06-21_10.zip" -d target/lobster
unzip -qo "$SHARED/lobster/LOBSTER_SampleFile_AMZN_2012-06-21_5.zip" -d target/lobster
DAYS="GOOG_2012-06-21_34200000_57600000 AMZN_2012-06-21_34200000_57600000"
deep() { case $1 in GOOG*) echo 10 ;; *) echo 5 ;; esac; }
for n in $LEVELS; do
  for day in $DAYS; do
    python3 scripts/lobster_levels.py "target/lobster/${day}_message_$(deep "$day").csv" "$n" "$OUT/clean-$n" > /dev/null
    mkdir -p "$OUT/held-out-$n"
    "$BIN" generate --inject-into "$OUT/clean-$n/${day}_message_$n.csv" --inject-every 670 --seed 31 \
      --kinds held-out --out "$OUT/held-out-$n/${day}_message_$n.csv" > /dev/null
    cp "$OUT/clean-$n/${day}_orderbook_$n.csv" "$OUT/held-out-$n/"
    printf 'instrument,kind,start_ns,end_ns\n' > "$OUT/clean-$n/${day}_message_$n.labels.csv"
  done
  for input in clean held-out; do
    for setting in default all auto; do
      dir="$OUT/runs/$input-$n-$setting"
      mkdir -p "$dir"
      for day in $DAYS; do
        stem="${day}_message_$n"
        cp "$OUT/$input-$n/$stem.labels.csv" "$dir/"
        env_levels=()
        [ "$setting" != default ] && env_levels=(LOBSENTRY__BOOK__VISIBLE_LEVELS="\"$setting\"")
        env ${env_levels[@]+"${env_levels[@]}"} LOBSENTRY__DETECT__SCORES="\"$dir/$stem.scores.jsonl\"" \
          "$BIN" run --input "$OUT/$input-$n/$stem.csv" -w 2 > /dev/null 2>&1
      done
      printf '%-9s level %s %-8s %s\n' "$input" "$n" "$setting" \
        "$(python3 scripts/decision_check.py margin 1 "$dir"/*.scores.jsonl | grep total | sed 's/^total x1.0: //')"
    done
  done
done
