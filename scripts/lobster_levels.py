#!/usr/bin/env python3
"""A level-N LOBSTER pair (message and order-book files) cut from a deeper one; standard library only.

  python3 scripts/lobster_levels.py target/lobster/GOOG_2012-06-21_34200000_57600000_message_10.csv 1 OUTDIR

writes OUTDIR/GOOG_2012-06-21_34200000_57600000_message_1.csv and ..._orderbook_1.csv: the messages
a level-1 file would carry and the first N levels of the order book after each of them. A message is
kept when its price is within the first N levels of its side in LOBSTER's book before or after it
(a sell at or below the N-th ask, a buy at or above the N-th bid), and hidden executions, cross trades
and halts always: LOBSTER's own selection for a level-N file, as far as a deeper file shows it
(orders that move between levels without a message cannot be told apart). Used to measure the
detectors on files shallower than the samples in ../shared/data (README, **The file's depth**).
"""
import csv
import os
import re
import sys


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    message, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    m = re.match(r"^(.*)_message_(\d+)\.csv$", os.path.basename(message))
    if not m or n < 1 or n > int(m.group(2)):
        sys.exit(f"want a LOBSTER message file NAME_message_K.csv and 1 <= N <= K: {message}, {n}")
    stem, deep = m.group(1), int(m.group(2))
    orderbook = os.path.join(os.path.dirname(message), f"{stem}_orderbook_{deep}.csv")
    os.makedirs(out, exist_ok=True)
    kept = total = 0
    with open(message) as mf, open(orderbook) as bf, \
            open(os.path.join(out, f"{stem}_message_{n}.csv"), "w") as mo, \
            open(os.path.join(out, f"{stem}_orderbook_{n}.csv"), "w") as bo:
        before = None
        for row, book in zip(csv.reader(mf), csv.reader(bf)):
            total += 1
            kind, price, side = int(row[1]), int(row[4]), int(row[5])
            keep = kind in (5, 6, 7)
            for b in [book] + ([before] if before else []):
                ask, bid = int(b[4 * (n - 1)]), int(b[4 * (n - 1) + 2])
                # LOBSTER pads a missing level with -9999999999 (bid) and 9999999999 (ask).
                if (side == -1 and price <= ask) or (side == 1 and price >= bid):
                    keep = True
            if keep:
                mo.write(",".join(row) + "\n")
                bo.write(",".join(book[: 4 * n]) + "\n")
                kept += 1
            before = book
    print(f"kept {kept} of {total} messages for {n} level(s) in {out}")


if __name__ == "__main__":
    main()
