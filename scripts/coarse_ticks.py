#!/usr/bin/env python3
"""A large-tick copy of a LOBSTER message file (standard library only).

  python3 scripts/coarse_ticks.py 4000 target/lobster/GOOG_2012-06-21_34200000_57600000_message_10.csv \
      target/large-tick/GOOGT_2012-06-21_34200000_57600000_message_10.csv

Every price moves onto a grid of TICK (LOBSTER units, 1/10,000 of a dollar). An added order goes to
the nearest grid price unless that would meet the best price of the other side's orders in the copy
(which the coarse grid makes possible where the original spread was less than a tick): then a buy
order goes down to the grid and a sell order up, so the copy's book never locks or crosses. Every
later message of an order (cancel, delete, execution) carries the price its add got; an order the
file meets before its add (resting at the open) gets the grid price below it (buy) or above it
(sell) the first time it is seen, further away if that meets the other side, and keeps it. Hidden executions and cross trades go to the nearest
grid price, halts (price -1) are left as they are. Order ids, sizes, times and sides are kept.

GOOG at about $570 on 40-cent ticks (4000) has the relative tick of a $14 stock at one cent: its
1 s windows' time-weighted spread is one tick in 60% of them and at most two in 99% (GOOG's own is
10-30 cents, 10-30 ticks; AMZN on 15 cents: 41% and 95%), with deep queues at few levels and a mid
that moves in large steps. Even where the original spread was under a tick, the copy's is often
two: an add that would lock the book is moved away, so its price is at least a tick from the other
side's, never at it. The samples in ../shared/data are both
small-tick books, so this is how the detectors meet a large-tick instrument's day (`make
eval-large-tick`, 2026-12-07, twelfth session). The output's name must be a LOBSTER name (its ticker
becomes the instrument).
"""
import collections
import csv
import sys


class Side:
    """The live orders' grid prices of one side, with their best."""

    def __init__(self, buy):
        self.buy = buy
        self.count = collections.Counter()

    def add(self, price):
        self.count[price] += 1

    def remove(self, price):
        self.count[price] -= 1
        if self.count[price] <= 0:
            del self.count[price]

    def best(self):
        if not self.count:
            return None
        return max(self.count) if self.buy else min(self.count)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    tick, src, dst = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    if tick < 1:
        sys.exit(f"tick {tick} is not positive")
    down = lambda p: (p // tick) * tick
    up = lambda p: -((-p) // tick) * tick
    nearest = lambda p: ((p + tick // 2) // tick) * tick
    sides = {1: Side(True), -1: Side(False)}
    # order id -> (side, grid price, shares left)
    orders = {}
    rows = moved = 0
    with open(src, newline="") as fin, open(dst, "w", newline="") as fout:
        out = csv.writer(fout, lineterminator="\n")
        for row in csv.reader(fin):
            kind, oid, size, price, side = row[1], int(row[2]), int(row[3]), int(row[4]), int(row[5])
            rows += 1
            if kind == "1":
                grid = nearest(price)
                other = sides[-side].best()
                if other is not None and (grid >= other if side == 1 else grid <= other):
                    grid = down(price) if side == 1 else up(price)
                    moved += 1
                if oid in orders:
                    sides[orders[oid][0]].remove(orders[oid][1])
                orders[oid] = (side, grid, size)
                sides[side].add(grid)
                row[4] = str(grid)
            elif kind in ("2", "3", "4"):
                if oid not in orders:
                    # Resting before the file began: away from the other side, kept from now on.
                    grid = down(price) if side == 1 else up(price)
                    other = sides[-side].best()
                    while other is not None and (grid >= other if side == 1 else grid <= other):
                        grid += -tick if side == 1 else tick
                    orders[oid] = (side, grid, size)
                    sides[side].add(grid)
                o_side, grid, left = orders[oid]
                row[4] = str(grid)
                left -= size
                if kind == "3" or left <= 0:
                    sides[o_side].remove(grid)
                    del orders[oid]
                else:
                    orders[oid] = (o_side, grid, left)
            elif kind != "7":
                row[4] = str(nearest(price))
            out.writerow(row)
    print(f"wrote {dst}: {rows} messages on a grid of {tick}, {moved} adds moved away from the other side")


if __name__ == "__main__":
    main()
