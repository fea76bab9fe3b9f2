#!/usr/bin/env python3
"""Offline trials of window features and of T² variants on `make eval`'s real days (numpy).

Measures what a feature or a transform could add before anything is built: each variant is a
Hotelling's T² over 1 s windows computed as `operators/src/multivariate.rs` does (asinh of each
feature over its exponentially weighted mean |x|, mean and covariance with a span of 1,800 windows,
ridge 0.01, inverse refreshed every 20 windows, 100 windows of warm-up), and per file the episodes
found at an oracle threshold: the score that gives 1 false alarm per instrument-hour on that file
(known only with its labels; an upper bound for any calibration). Totals per group of kinds:
std (the standard kinds: days, fresh-, later-, untouched-days), g1 (held-out, sparse-3x), g2
(held-out-2, sparse-2), g3 (group3-), g4 (group4-).

  .venv/bin/python scripts/feature_trial.py cache target/eval
      reads every real day of `make eval` (features, events, labels) into target/feature-trial/
      with the extra per-window features below (minutes; once per `make eval`).
  .venv/bin/python scripts/feature_trial.py t2 base= signed=signed_exec all=signed_exec+max_delete
      one variant per argument: the 18 scored features plus the extras named after `=`.
  .venv/bin/python scripts/feature_trial.py log 0.2 1
      T² with log(x / s + c) instead of asinh(x / s) for the non-negative features.
  .venv/bin/python scripts/feature_trial.py blocks
      T² per block of features (activity, trades, book; or per side), combined with the Cauchy
      combination of their ranks (empirical p-values over the file).

Extras (1 s windows, from the event file): max_add (largest add), signed_exec (buyer- minus
seller-initiated shares), hidden_exec (hidden executed shares), max_delete (largest deleted
order), max_gap (longest time without a message), fleeting_volume (shares deleted within 100 ms of
their add), trade_jump (largest price change between consecutive executions, in cents),
improving_adds / improving_volume (adds priced inside the spread of a book rebuilt from the file),
and bid_depth1 / ask_depth1 / adds from the features file.
"""
import glob
import heapq
import os
import pickle
import re
import sys
from multiprocessing import Pool

import numpy as np

SCORED = ["events", "cancels", "execs", "exec_volume", "log_return", "realized_vol", "spread_twa",
          "bid_depth5", "ask_depth5", "queue_imbalance", "ofi", "cancel_add_ratio", "add_volume",
          "cancel_volume", "bid_depth5_max", "ask_depth5_max", "bid_depth5_min", "ask_depth5_min"]
SIGNED = ["log_return", "ofi", "queue_imbalance"]
GROUPS = [("std", r"^(days|fresh-days|later-days|untouched-days)_"), ("g1", r"^(held-out-3\d|sparse-3\d)-days"),
          ("g2", r"^(held-out-2-|sparse-2-)"), ("g3", r"^group3-"), ("g4", r"^group4-")]
CACHE = "target/feature-trial"
SECOND = 10**9


def extras(events, starts, features, cols):
    t, typ, oid, size, price, d = events.T
    day = (starts[0] // SECOND) - (starts[0] // SECOND) % 86400
    second = np.floor(t).astype(np.int64)
    index = {int(s): i for i, s in enumerate(starts // SECOND - day)}
    n = len(starts)
    row = np.array([index.get(int(x), -1) for x in second])
    ok = row >= 0

    def agg(mask, values, how):
        out = np.zeros(n)
        m = ok & mask
        (np.add if how == "sum" else np.maximum).at(out, row[m], values[m])
        return out

    ex = (typ == 4) | (typ == 5)
    prev = np.concatenate([[t[0]], t[:-1]])
    gap = np.where(second == np.floor(prev).astype(np.int64), t - prev, t - second)
    added, life = {}, np.full(len(t), np.inf)
    for i in range(len(t)):
        if typ[i] == 1:
            added[oid[i]] = t[i]
        elif typ[i] == 3 and oid[i] in added:
            life[i] = t[i] - added.pop(oid[i])
    jump = np.zeros(len(t))
    e = np.where(ex)[0]
    if len(e) > 1:
        jump[e[1:]] = np.abs(np.diff(price[e])) / 100.0
    out = {
        "max_add": agg(typ == 1, size, "max"),
        "signed_exec": agg(ex, -d * size, "sum"),
        "hidden_exec": agg(typ == 5, size, "sum"),
        "max_delete": agg(typ == 3, size, "max"),
        "max_gap": agg(np.ones(len(t), bool), gap, "max"),
        "fleeting_volume": agg((typ == 3) & (life < 0.1), size, "sum"),
        "trade_jump": agg(ex, jump, "max"),
    }
    out["improving_adds"], out["improving_volume"] = improving(events, row, n)
    for c in ["bid_depth1", "ask_depth1", "adds"]:
        out[c] = features[:, cols[c]]
    return out


def improving(events, row, n):
    """Adds priced inside the spread of the book rebuilt from the file (count and shares)."""
    orders, volume, heaps = {}, [{}, {}], [[], []]
    count, shares = np.zeros(n), np.zeros(n)

    def best(side):
        h = heaps[side]
        while h:
            p = -h[0] if side == 0 else h[0]
            if volume[side].get(p, 0) > 0:
                return p
            heapq.heappop(h)
        return None

    for i, (_, ty, oid, sz, px, d) in enumerate(events):
        side, ty, px = (0 if d == 1 else 1), int(ty), int(px)
        if ty == 1:
            bid, ask = best(0), best(1)
            if row[i] >= 0 and bid is not None and ask is not None and (px > bid if side == 0 else px < ask):
                count[row[i]] += 1
                shares[row[i]] += sz
            orders[oid] = [side, px, sz]
            volume[side][px] = volume[side].get(px, 0) + sz
            heapq.heappush(heaps[side], -px if side == 0 else px)
        elif ty in (2, 3, 4) and oid in orders:
            o = orders[oid]
            q = o[2] if ty == 3 else min(sz, o[2])
            volume[o[0]][o[1]] -= q
            o[2] -= q
            if o[2] <= 0:
                del orders[oid]
    return count, shares


def cache_one(stem):
    name = stem.split("/")[-2] + "_" + stem.split("/")[-1]
    target = f"{CACHE}/{name}.pkl"
    if os.path.exists(target):
        return
    header = open(stem + ".features.csv").readline().strip().split(",")
    raw = np.genfromtxt(stem + ".features.csv", delimiter=",", skip_header=1, usecols=range(1, len(header)))
    cols = {h: i for i, h in enumerate(header[1:])}
    one = raw[:, cols["window_end_ns"]] - raw[:, cols["window_start_ns"]] == SECOND
    raw = raw[one]
    starts = raw[:, cols["window_start_ns"]].astype(np.int64)
    ends = raw[:, cols["window_end_ns"]].astype(np.int64)
    labels = [(a[1], int(a[2]), int(a[3])) for a in (line.split(",") for line in open(stem + ".labels.csv").read().splitlines()[1:])]
    data = dict(X=np.column_stack([raw[:, cols[c]] for c in SCORED]), starts=starts, ends=ends, labels=labels,
                E=extras(np.loadtxt(stem + ".csv", delimiter=","), starts, raw, cols))
    pickle.dump(data, open(target, "wb"))
    print("cached", target, flush=True)


def t2(X, transform=None, span=1800, warmup=100, ridge=0.01, refresh=20):
    n, d = X.shape
    scale, mean, cov, inverse = np.zeros(d), np.zeros(d), np.zeros((d, d)), None
    out, seen, since = np.full(n, np.nan), 0, 0
    for k in range(n):
        finite = np.isfinite(X[k])
        x = np.nan_to_num(X[k])
        alpha = max(2 / (span + 1), 1 / (seen + 1))
        s = np.where(scale > 0, scale, np.maximum(np.abs(x), 1e-12))
        y = transform(x, s) if transform else np.arcsinh(x / s)
        r = np.where(finite, y - mean if seen else 0.0, 0.0)
        if seen == 0:
            mean = np.where(finite, y, 0.0)
        scale = np.where(finite, scale + alpha * (np.abs(x) - scale), scale)
        if seen >= warmup and inverse is not None:
            out[k] = max(r @ inverse @ r, 0.0)
        if seen > 0:
            mean = mean + alpha * r
            cov = (1 - alpha) * (cov + alpha * np.outer(r, r))
        seen, since = seen + 1, since + 1
        if (inverse is None or since >= refresh) and np.trace(cov) > 0:
            inverse = np.linalg.inv(cov + ridge * np.trace(cov) / d * np.eye(d))
            since = 0
    return out


def found(scores, data, per_hour=1.0):
    """Episodes (per kind) with a window above the oracle threshold for `per_hour` false alarms."""
    starts, ends = data["starts"], data["ends"]
    inside, masks = np.zeros(len(starts), bool), []
    for kind, s, e in data["labels"]:
        m = (starts < e) & (ends > s)
        inside |= m
        masks.append((kind, m))
    valid = np.isfinite(scores)
    allowed = int(np.floor((ends[-1] - starts[0]) / 3.6e12 * per_hour))
    outside = np.sort(scores[valid & ~inside])[::-1]
    threshold = outside[allowed] if allowed < len(outside) else -np.inf
    out = {}
    for kind, m in masks:
        a, b = out.get(kind, (0, 0))
        out[kind] = (a + int(np.any(scores[m & valid] > threshold)), b + 1)
    return out


def ranks(s):
    v = np.where(np.isfinite(s), s, -np.inf)
    r = np.empty(len(v))
    r[np.argsort(-v, kind="stable")] = np.arange(1, len(v) + 1)
    return r / len(v)


def cauchy(ps):
    ps = np.clip(np.array(ps), 1e-300, 0.99)
    return 0.5 - np.arctan(np.mean(np.tan((0.5 - ps) * np.pi), axis=0)) / np.pi


BLOCKS = {
    "activity": ["events", "cancels", "execs", "cancel_add_ratio", "add_volume", "cancel_volume"],
    "trades": ["execs", "exec_volume", "log_return", "realized_vol", "ofi"],
    "book": ["spread_twa", "bid_depth5", "ask_depth5", "queue_imbalance", "bid_depth5_max", "ask_depth5_max",
             "bid_depth5_min", "ask_depth5_min"],
    "bid": ["bid_depth5", "bid_depth5_max", "bid_depth5_min", "queue_imbalance"],
    "ask": ["ask_depth5", "ask_depth5_max", "ask_depth5_min", "queue_imbalance"],
}
BLOCK_VARIANTS = {
    "full": [SCORED], "blocks": [BLOCKS["activity"], BLOCKS["trades"], BLOCKS["book"]],
    "full+blocks": [SCORED, BLOCKS["activity"], BLOCKS["trades"], BLOCKS["book"]],
    "sides": [BLOCKS["activity"], BLOCKS["trades"], BLOCKS["bid"], BLOCKS["ask"], ["spread_twa"]],
}


def job(args):
    path, mode, variants = args
    data = pickle.load(open(path, "rb"))
    X, out = data["X"], {}
    if mode == "t2":
        for name, extra in variants.items():
            Y = np.column_stack([X] + [data["E"][e] for e in extra]) if extra else X
            out[name] = found(t2(Y), data)
    elif mode == "log":
        positive = np.array([c not in SIGNED for c in SCORED])
        for c in variants:
            transform = lambda x, s, c=c: np.where(positive, np.log(np.maximum(x, 0) / s + c), np.arcsinh(x / s))
            out[f"c={c}"] = found(t2(X, transform), data)
    else:
        cache = {}
        for name, blocks in BLOCK_VARIANTS.items():
            ps = []
            for b in blocks:
                if tuple(b) not in cache:
                    cache[tuple(b)] = ranks(t2(X[:, [SCORED.index(c) for c in b]]))
                ps.append(cache[tuple(b)])
            out[name] = found(-np.log(cauchy(ps)), data)
    return os.path.basename(path), out


def report(results):
    table, names = {}, list(results[0][1]) if results else []
    for name, out in results:
        group = next((g for g, rx in GROUPS if re.search(rx, name)), None)
        if group is None:
            continue
        for variant, kinds in out.items():
            for kind, (a, b) in kinds.items():
                t = table.setdefault((variant, group), {}).setdefault(kind, [0, 0])
                t[0] += a
                t[1] += b
    for variant in names:
        cells = []
        for g, _ in GROUPS:
            d = table.get((variant, g), {})
            cells.append(f"{g} {sum(v[0] for v in d.values())}/{sum(v[1] for v in d.values())}")
        print(f"{variant:14s}", "  ".join(cells))
        for g, _ in GROUPS:
            d = table.get((variant, g), {})
            print("   ", g, " ".join(f"{k}:{v[0]}/{v[1]}" for k, v in sorted(d.items())))


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "cache":
        os.makedirs(CACHE, exist_ok=True)
        eval_dir = sys.argv[2] if len(sys.argv) > 2 else "target/eval"
        stems = sorted(p[: -len(".features.csv")] for p in glob.glob(f"{eval_dir}/*days/*.features.csv")
                       if "/clean-days/" not in p)
        with Pool(2) as pool:
            pool.map(cache_one, stems)
        return
    if mode == "t2":
        variants = {a.split("=")[0]: [e for e in a.split("=", 1)[1].split("+") if e] if "=" in a else [] for a in sys.argv[2:]}
    elif mode == "log":
        variants = [float(c) for c in sys.argv[2:]]
    elif mode == "blocks":
        variants = None
    else:
        sys.exit(__doc__)
    files = sorted(glob.glob(f"{CACHE}/*.pkl"))
    if not files:
        sys.exit(f"no {CACHE}/*.pkl: run `scripts/feature_trial.py cache target/eval` first")
    with Pool(2) as pool:
        report(pool.map(job, [(f, mode, variants) for f in files]))


if __name__ == "__main__":
    main()
