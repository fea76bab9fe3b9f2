#!/usr/bin/env python3
"""A large-tick copy of a LOBSTER message file (standard library only).

  python3 scripts/coarse_ticks.py 4000 target/lobster/GOOG_2012-06-21_34200000_57600000_message_10.csv \
      target/large-tick/GOOGT_2012-06-21_34200000_57600000_message_10.csv
  python3 scripts/coarse_ticks.py --away 2000 IN OUT

Every price moves onto a grid of TICK (LOBSTER units, 1/10,000 of a dollar). An added order goes to
the nearest grid price unless that would meet the best price of the other side's live orders in the
copy (which the coarse grid makes possible where the original spread was less than a tick): then a
buy order goes down to the grid and a sell order up, so the copy's book never locks or crosses.
Every later message of an order (cancel, delete, execution) carries the price its add got; an order
the file meets before its add (resting at the open, or added beyond the file's N levels) gets the
grid price below it (buy) or above it (sell) the first time it is seen, further away if that meets
the other side, and keeps it. An order the file never deletes because it drifted beyond its N
levels is dropped from the live orders once the original book shows it cannot be there (see
`Book`). Hidden executions and cross trades go to the nearest grid price, halts (price -1) are
left as they are. Order ids, sizes, times and sides are kept. With `--away` every add goes away
from the other side instead (a buy order down to the grid, a sell order up): simpler, never locked
either, and a spread of two ticks in the median even on a grid as coarse as the original spread.

GOOG at about $570 on 40-cent ticks (4000) has the relative tick of a $14 stock at one cent: its
1 s windows' time-weighted spread is one tick in 89% of them and at most two in all but a few (GOOG's
own is 10-30 cents, 10-30 ticks; AMZN on 15 cents: 83% and 99%), with deep queues at few levels and
a mid that moves in large steps. The samples in ../shared/data are both small-tick books, so this
is how the detectors meet a large-tick instrument's day (`make eval-large-tick`, 2026-12-07, twelfth
session). The output's name must be a LOBSTER name (its ticker becomes the instrument).
"""
import collections
import csv
import sys


class Book:
    """The copy's live orders: per side their original prices (to drop ghosts) and grid prices (for
    the best). A level-N message file carries no delete for an order that drifted beyond its N
    levels; when the original book shows such an order cannot still be there (an order of the other
    side added or executed at or through its price), it is dropped."""

    def __init__(self):
        self.orders = {}  # order id -> [side, original price, grid price, shares left]
        self.at = {1: {}, -1: {}}  # side -> original price -> order ids
        self.grid = {1: collections.Counter(), -1: collections.Counter()}

    def add(self, oid, side, price, grid, size):
        if oid in self.orders:
            self.drop(oid)
        self.orders[oid] = [side, price, grid, size]
        self.at[side].setdefault(price, set()).add(oid)
        self.grid[side][grid] += 1

    def drop(self, oid):
        side, price, grid, _ = self.orders.pop(oid)
        ids = self.at[side][price]
        ids.discard(oid)
        if not ids:
            del self.at[side][price]
        self.grid[side][grid] -= 1
        if self.grid[side][grid] <= 0:
            del self.grid[side][grid]

    def clear(self, side, price, strict=False):
        """Drops the orders of `side` at or beyond `price` towards the other side (beyond only when
        `strict`): a bid at or above an ask's price, an ask at or below a bid's."""
        def beyond(p):
            return (p > price if strict else p >= price) if side == 1 else (p < price if strict else p <= price)
        for p in [p for p in self.at[side] if beyond(p)]:
            for oid in list(self.at[side][p]):
                self.drop(oid)

    def best(self, side):
        g = self.grid[side]
        if not g:
            return None
        return max(g) if side == 1 else min(g)


def main():
    args = sys.argv[1:]
    away = "--away" in args
    args = [a for a in args if a != "--away"]
    if len(args) != 3:
        sys.exit(__doc__)
    tick, src, dst = int(args[0]), args[1], args[2]
    if tick < 1:
        sys.exit(f"tick {tick} is not positive")
    down = lambda p: (p // tick) * tick
    up = lambda p: -((-p) // tick) * tick
    nearest = lambda p: ((p + tick // 2) // tick) * tick
    meets = lambda grid, side, other: other is not None and (grid >= other if side == 1 else grid <= other)
    book = Book()
    rows = moved = 0
    with open(src, newline="") as fin, open(dst, "w", newline="") as fout:
        out = csv.writer(fout, lineterminator="\n")
        for row in csv.reader(fin):
            kind, oid, size, price, side = row[1], int(row[2]), int(row[3]), int(row[4]), int(row[5])
            rows += 1
            if kind == "1":
                book.clear(-side, price)
                grid = nearest(price)
                if away or meets(grid, side, book.best(-side)):
                    grid = down(price) if side == 1 else up(price)
                    moved += not away
                book.add(oid, side, price, grid, size)
                row[4] = str(grid)
            elif kind in ("2", "3", "4"):
                if oid not in book.orders:
                    # Added before the file began or beyond its levels: away from the other side.
                    book.clear(-side, price)
                    grid = down(price) if side == 1 else up(price)
                    while meets(grid, side, book.best(-side)):
                        grid += -tick if side == 1 else tick
                    book.add(oid, side, price, grid, size)
                if kind == "4":
                    # An execution is at its side's best: nothing of that side is beyond it.
                    book.clear(side, price, strict=True)
                o = book.orders[oid]
                row[4] = str(o[2])
                o[3] -= size
                if kind == "3" or o[3] <= 0:
                    book.drop(oid)
            elif kind != "7":
                row[4] = str(nearest(price))
            out.writerow(row)
    print(f"wrote {dst}: {rows} messages on a grid of {tick}, {moved} adds moved away from the other side")


if __name__ == "__main__":
    main()
