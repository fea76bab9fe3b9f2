#!/usr/bin/env python3
"""Offline trials of window features and of T² variants on `make eval`'s real days (numpy).

Measures what a feature or a transform could add before anything is built: each variant is a
Hotelling's T² over 1 s windows computed as `operators/src/multivariate.rs` does (asinh of each
feature over its exponentially weighted mean |x|, mean and covariance with a span of 1,800 windows,
ridge 0.01, inverse refreshed every 20 windows, 100 windows of warm-up), and per file the episodes
found at an oracle threshold: the score that gives 1 false alarm per instrument-hour on that file
(known only with its labels; an upper bound for any calibration). Totals per group of kinds:
std (the standard kinds: days, fresh-, later-, untouched-days), g1 (held-out, sparse-3x), g2
(held-out-2, sparse-2), g3 (group3-), g4 (group4-), g5 (group5-).

Where detectors are combined (Cauchy combination), each enters as a p-value: either empirical
against the file's windows outside every episode (oracle-like, but the many injected windows of a
file do not dilute each other's p-values), or causal, from `scripts/tail_calibrator.py` (a port of
`operators/src/calibrate.rs`: each window against the scores before it, as the ensemble does; its
default options, the moments fit the calibration had until 2026-12-07, eighth session).

  .venv/bin/python scripts/feature_trial.py cache target/eval
      reads every real day of `make eval` (features, events, labels) into target/feature-trial/
      with the extra per-window features below (minutes; once per `make eval`).
  .venv/bin/python scripts/feature_trial.py t2 base= signed=signed_exec all=signed_exec+max_delete
      one variant per argument: the 18 scored features plus the extras named after `=`.
  .venv/bin/python scripts/feature_trial.py log 0.2 1
      T² with log(x / s + c) instead of asinh(x / s) for the non-negative features.
  .venv/bin/python scripts/feature_trial.py blocks
      T² per block of features (activity, trades, book; or per side), combined with the Cauchy
      combination of their p-values.
  .venv/bin/python scripts/feature_trial.py mix
      the message-mix detector (2026-12-07, eighth session): per window, messages counted by kind (add,
      partial cancel, delete within 100 ms of its add, other delete, execution) x ticks behind the
      same side's best before the message (<= 0, 1-2, 3-10, > 10) x size (< 100, 100-499, >= 500
      shares), per side or pooled; against the instrument's decayed counts (span 1,800 windows, 0.5
      pseudo-messages per cell): the multinomial deviance G, the Hellinger statistic and the largest
      one-cell Poisson deviance, alone and combined with T² (p-values against the outside windows).
  .venv/bin/python scripts/feature_trial.py mixcausal
      the same pooled, calibrated causally, combined with T² at weights 0.5, 0.25 and 0.1.
  .venv/bin/python scripts/feature_trial.py perfeature
      each feature's |z| (T²'s deviation over its own standard deviation) as a p-value against the
      file's outside windows, combined across features (Cauchy, minimum) and with T².
  .venv/bin/python scripts/feature_trial.py causal
      the same with every p-value calibrated causally (what a detector could do online).
  .venv/bin/python scripts/feature_trial.py cusum 4 8
      a CUSUM over T²'s -log p (drift k per argument), alone and combined with T².
  .venv/bin/python scripts/feature_trial.py huber 36 72 144
      T² whose mean and covariance take a window with T² above c at weight c / T² (robust).
  .venv/bin/python scripts/feature_trial.py sliding 10/10 10/1 5/5 5/1 30/30 30/3
      T² over windows of S seconds every D seconds (argument S/D), rolled up from the 1 s windows as
      `operators/src/rollup.rs` does, calibrated causally; episodes at the oracle threshold with the
      false alarms counted as alerts (a flagged window within 10 s of the last alert belongs to it).

  .venv/bin/python scripts/feature_trial.py knn 5/1800/30 1/1800/30 20/3600/60
      (2026-12-07, ninth session) a nearest-neighbour detector: per window the mean distance to its k
      nearest among the `size` windows that ended at least `gap` windows before it (k/size/gap), each
      feature on T²'s asinh scale over its exponentially weighted deviation; alone and with T².
  .venv/bin/python scripts/feature_trial.py mewma 0.1 0.2 0.3 0.5
      a multivariate EWMA chart (Lowry et al. 1992) over T²'s whitened 1 s deviations (smoothing
      lambda per argument), raw and calibrated causally, alone and with T², against T² at 1 s and
      10 s; episodes at the oracle threshold with false alarms counted as alerts (10 s hold).
  .venv/bin/python scripts/feature_trial.py diff
      T² of the change of every feature from the window before (alone, and next to the features).
  .venv/bin/python scripts/feature_trial.py ar ar1 local=10 local=60
      (2026-12-07, tenth session) T² of each window's deviation from a prediction made from the
      windows before it, on T²'s asinh scale: `ar1` each feature's mean plus its exponentially
      weighted lag-1 autocorrelation times the last window's deviation, `local=S` the recent level
      (an exponentially weighted mean of span S); alone and with T².
  .venv/bin/python scripts/feature_trial.py copula 600 1800
      (tenth session) T² of a Gaussian copula: each feature as the normal score of its rank among
      the instrument's last N windows (N per argument); alone and with T².
  .venv/bin/python scripts/feature_trial.py cache-concentration
      (tenth session) adds to every cached file, from its event file, the extras top_level (the most
      messages at one (side, price) in the window), top_share (that count's share of the window's
      messages) and level_hhi (their Herfindahl index over (side, price)); hidden executions left out.
  EVAL=target/eval .venv/bin/python scripts/feature_trial.py span 1800/180/1 300/180/1 1800/180/0.25
      the ensemble's decision re-made with T² at other spans (1 s span / 10 s span / the model's
      weight, T²'s being 1): T² calibrated causally per span, the model's p-values and the bounds
      from the run's scores files in EVAL, the 10 s alert hold; episodes (false alarms) per group,
      and the alerts on the days with nothing injected (`cache` reads them too since this mode).
      A fourth field names extras for T² at both scales (`1800/180/0.25/top_level`, joined by '+';
      the 10 s windows take the largest of their seconds' values).

  EVAL=target/eval .venv/bin/python scripts/feature_trial.py pca 6/q 6/minor 9/q 6/major
      (2026-12-07, eleventh session) T² split along its principal components (multivariate process
      control's T² and Q pair): per window, the covariance's eigenvectors (refreshed with the
      inverse) give T² over the k largest components and, of the rest, either Q (`q`: the squared
      residual, unweighted) or T² over them (`minor`); both calibrated causally and combined
      (Cauchy), or the major part alone (`major`); then decided as `span` does (the model's
      p-values at weight 0.25, the run's bounds, the 10 s alert hold), at both scales, against
      `base` (T² whole, as `span 1800/180/0.25`).

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
          ("g2", r"^(held-out-2-|sparse-2-)"), ("g3", r"^group3-"), ("g4", r"^group4-"), ("g5", r"^group5-")]
CACHE = "target/feature-trial"
SECOND = 10**9
EVAL = os.environ.get("EVAL", "target/eval")


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


MIX_KINDS = ["add", "partial_cancel", "delete_fleeting", "delete", "execute"]
MIX_DISTANCE = [0, 2, 10]  # ticks behind the same side's best: <=0 (at or inside), 1-2, 3-10, >10
MIX_SIZE = [100, 500]  # shares: odd lot, 100-499, >=500
MIX_CELLS = len(MIX_KINDS) * (len(MIX_DISTANCE) + 1) * (len(MIX_SIZE) + 1)


def mix_counts(events, row, n, sides=False):
    """Per window, messages counted by kind x distance from the same side's best x size (x side).

    The book is rebuilt from the file; LOBSTER files only carry the messages within their top levels,
    so an order that leaves them is never removed: an execution at a price, or an add that would
    cross, removes the known orders priced through it (as a repaired book would)."""
    orders, levels, heaps = {}, [{}, {}], [[], []]
    cells = MIX_CELLS * (2 if sides else 1)
    out = np.zeros((n, cells))

    def best(side):
        h = heaps[side]
        while h:
            p = -h[0] if side == 0 else h[0]
            if levels[side].get(p):
                return p
            heapq.heappop(h)
        return None

    def purge(side, limit):
        """Removes the side's orders priced strictly better than `limit`."""
        while True:
            p = best(side)
            if p is None or (p <= limit if side == 0 else p >= limit):
                return
            for o in levels[side].pop(p):
                orders.pop(o, None)

    for i, (t, ty, oid, sz, px, d) in enumerate(events):
        side, ty, px = (0 if d == 1 else 1), int(ty), int(px)
        if ty not in (1, 2, 3, 4, 5):
            continue
        if ty == 4:
            purge(side, px)
        elif ty == 1:
            purge(1 - side, px - 1 if side == 1 else px + 1)
        b = best(side)
        ticks = 0 if b is None else ((b - px) if side == 0 else (px - b)) / 100.0
        kind = {1: 0, 2: 1, 4: 4, 5: 4}.get(ty)
        if ty == 3:
            o = orders.get(oid)
            kind = 2 if o is not None and t - o[3] < 0.1 else 3
        if row[i] >= 0:
            dist = sum(ticks > x for x in MIX_DISTANCE)
            size = sum(sz >= x for x in MIX_SIZE)
            cell = (kind * (len(MIX_DISTANCE) + 1) + dist) * (len(MIX_SIZE) + 1) + size
            out[row[i], cell + (MIX_CELLS if sides and side == 1 else 0)] += 1
        if ty == 1:
            orders[oid] = [side, px, sz, t]
            levels[side].setdefault(px, set()).add(oid)
            heapq.heappush(heaps[side], -px if side == 0 else px)
        elif ty in (2, 3, 4) and oid in orders:
            o = orders[oid]
            o[2] -= o[2] if ty == 3 else sz
            if o[2] <= 0:
                del orders[oid]
                levels[o[0]][o[1]].discard(oid)
    return out


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
    events = np.loadtxt(stem + ".csv", delimiter=",")
    data = dict(X=np.column_stack([raw[:, cols[c]] for c in SCORED]), starts=starts, ends=ends, labels=labels,
                E=extras(events, starts, raw, cols))
    day = (starts[0] // SECOND) - (starts[0] // SECOND) % 86400
    index = {int(s): i for i, s in enumerate(starts // SECOND - day)}
    row = np.array([index.get(int(x), -1) for x in np.floor(events[:, 0]).astype(np.int64)])
    data["M"] = mix_counts(events, row, len(starts), sides=True)
    pickle.dump(data, open(target, "wb"))
    print("cached", target, flush=True)


def concentration(events, starts):
    """Per 1 s window: the messages at the window's busiest (side, price) (`top_level`), that count's
    share of the window's messages (`top_share`) and the Herfindahl index of messages over
    (side, price) (`level_hhi`); hidden executions (type 5) left out, they rest at no level."""
    t, typ, _, _, price, d = events.T
    day = (starts[0] // SECOND) - (starts[0] // SECOND) % 86400
    index = {int(s): i for i, s in enumerate(starts // SECOND - day)}
    n = len(starts)
    row = np.array([index.get(int(x), -1) for x in np.floor(t).astype(np.int64)])
    m = (row >= 0) & (typ != 5)
    key = row[m].astype(np.int64) * (1 << 40) + (d[m] > 0).astype(np.int64) * (1 << 39) + price[m].astype(np.int64)
    keys, counts = np.unique(key, return_counts=True)
    r = keys >> 40
    top, sq, total = np.zeros(n), np.zeros(n), np.zeros(n)
    np.maximum.at(top, r, counts)
    np.add.at(sq, r, counts.astype(float) ** 2)
    np.add.at(total, r, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, top / total, 0.0)
        hhi = np.where(total > 0, sq / total**2, 0.0)
    return {"top_level": top, "top_share": share, "level_hhi": hhi}


def add_concentration(path):
    data = pickle.load(open(path, "rb"))
    if "top_level" in data["E"]:
        return
    name = os.path.basename(path)[: -len(".pkl")]
    folder, stem = name.split("_", 1)
    events = np.loadtxt(f"{EVAL}/{folder}/{stem}.csv", delimiter=",")
    data["E"].update(concentration(events, data["starts"]))
    pickle.dump(data, open(path, "wb"))
    print("added", path, flush=True)


def t2(X, transform=None, span=1800, warmup=100, ridge=0.01, refresh=20, marginal=False, huber=None, white=False):
    n, d = X.shape
    z = np.full((n, d), np.nan)
    W, chol = np.full((n, d), np.nan), None
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
            z[k] = r / np.sqrt(np.maximum(np.diag(cov), 1e-12))
            if white:
                W[k] = chol.T @ r
        if seen > 0:
            if huber is not None and np.isfinite(out[k]) and out[k] > huber:
                alpha = alpha * huber / out[k]
            mean = mean + alpha * r
            cov = (1 - alpha) * (cov + alpha * np.outer(r, r))
        seen, since = seen + 1, since + 1
        if (inverse is None or since >= refresh) and np.trace(cov) > 0:
            inverse = np.linalg.inv(cov + ridge * np.trace(cov) / d * np.eye(d))
            if white:
                chol = np.linalg.cholesky((inverse + inverse.T) / 2)
            since = 0
    if white:
        return out, W
    return (out, z) if marginal else out


def transformed(X, span=1800):
    """T²'s scale for every feature: asinh(x / s), s the exponentially weighted mean |x| before it."""
    n, d = X.shape
    Y, scale, seen = np.zeros((n, d)), np.zeros(d), 0
    for k in range(n):
        finite = np.isfinite(X[k])
        x = np.nan_to_num(X[k])
        alpha = max(2 / (span + 1), 1 / (seen + 1))
        s = np.where(scale > 0, scale, np.maximum(np.abs(x), 1e-12))
        Y[k] = np.where(finite, np.arcsinh(x / s), np.nan)
        scale = np.where(finite, scale + alpha * (np.abs(x) - scale), scale)
        seen += 1
    return Y


def residuals(Y, sec, how, span=1800):
    """Each window's deviation from a prediction made from the windows before it: `ar1` the
    instrument's mean plus each feature's exponentially weighted lag-1 autocorrelation times the
    last window's deviation; `local=S` an exponentially weighted mean of span S (the recent level)."""
    n, d = Y.shape
    R = np.zeros((n, d))
    mean, var, lag, prev, local, seen = np.zeros(d), np.zeros(d), np.zeros(d), None, None, 0
    S = float(how.split("=")[1]) if how.startswith("local") else None
    for k in range(n):
        y = np.where(np.isfinite(Y[k]), Y[k], mean if seen else 0.0)
        contiguous = prev is not None and sec[k] - sec[k - 1] == 1
        alpha = max(2 / (span + 1), 1 / (seen + 1))
        if how == "ar1":
            phi = np.clip(np.where(var > 0, lag / np.maximum(var, 1e-12), 0.0), 0.0, 0.95)
            pred = mean + (phi * (prev - mean) if contiguous else 0.0)
            R[k] = y - pred
            if contiguous:
                lag = (1 - alpha) * lag + alpha * (y - mean) * (prev - mean)
            d0 = y - mean
            mean = mean + alpha * d0
            var = (1 - alpha) * (var + alpha * d0 * d0)
        else:
            R[k] = y - (local if local is not None else y)
            a = max(2 / (S + 1), 1 / (seen + 1))
            local = y if local is None else local + a * (y - local)
        prev, seen = y, seen + 1
    return R


def copula(X, size=1800):
    """Each feature as a normal score of its rank among the instrument's `size` windows before it
    (mid-ranks for ties; a value beyond every one of them at the rank just past the last)."""
    from statistics import NormalDist
    n, d = X.shape
    Z = np.zeros((n, d))
    inv = np.vectorize(NormalDist().inv_cdf)
    for j in range(d):
        x = np.nan_to_num(X[:, j], nan=np.nanmedian(X[:, j]) if np.isfinite(X[:, j]).any() else 0.0)
        for a in range(1, n, 2000):
            b = min(n, a + 2000)
            idx = np.arange(a, b)
            lo = np.maximum(idx - size, 0)
            cols = idx[:, None] - 1 - np.arange(size)[None, :]
            valid = cols >= lo[:, None]
            past = x[np.maximum(cols, 0)]
            below = ((past < x[idx, None]) & valid).sum(1) + 0.5 * ((past == x[idx, None]) & valid).sum(1)
            m = valid.sum(1)
            Z[idx, j] = inv((below + 0.5) / (m + 1))
    return Z


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


def found_hold(scores, starts, ends, labels, hours, hold=10 * SECOND, per_hour=1.0):
    """Like `found` for windows of any length, counting the false alarms as alerts do: a flagged
    window that starts within `hold` of the end of the last alert's window belongs to that alert."""
    inside, masks = np.zeros(len(starts), bool), []
    for kind, s, e in labels:
        m = (starts < e) & (ends > s)
        inside |= m
        masks.append((kind, m))
    valid = np.isfinite(scores)
    allowed = int(np.floor(hours * per_hour))
    out_idx = np.where(valid & ~inside)[0]

    def alarms(th):
        n, until = 0, -1
        for i in out_idx[scores[out_idx] > th]:
            if starts[i] >= until:
                n += 1
                until = ends[i] + hold
        return n

    cand = np.unique(scores[out_idx])
    lo, hi = 0, len(cand) - 1  # smallest threshold with alarms <= allowed
    if alarms(cand[lo]) <= allowed:
        hi = lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if alarms(cand[mid]) <= allowed:
            hi = mid
        else:
            lo = mid
    threshold = cand[hi] if len(cand) else -np.inf
    out = {}
    for kind, m in masks:
        a, b = out.get(kind, (0, 0))
        out[kind] = (a + int(np.any(scores[m & valid] > threshold)), b + 1)
    return out


SUMS = ["events", "cancels", "execs", "exec_volume", "log_return", "ofi", "add_volume", "cancel_volume"]
LASTS = ["bid_depth5", "ask_depth5", "queue_imbalance"]


def roll_max(data, values, size=10, slide=10):
    """One per-1 s-window value rolled up as its largest over each window of `roll` (same windows)."""
    sec = data["starts"] // SECOND
    t0, n = sec[0], sec[-1] - sec[0] + 1
    dense, have = np.full(n, np.nan), np.zeros(n, bool)
    dense[sec - t0], have[sec - t0] = values, np.isfinite(data["X"][:, 0])
    first = np.arange(0, n - size + 1, slide)
    out = np.array([np.nanmax(dense[a:a + size]) if have[a:a + size].any() else np.nan for a in first])
    return out[np.isfinite(out)]


def roll(data, size=10, slide=10):
    """Windows of `size` seconds every `slide` seconds rolled up from the 1 s windows (as rollup.rs)."""
    X, sec = data["X"], data["starts"] // SECOND
    t0, n = sec[0], sec[-1] - sec[0] + 1
    dense = np.full((n, X.shape[1]), np.nan)
    dense[sec - t0] = X
    adds = np.zeros(n)
    adds[sec - t0] = data["E"]["adds"]
    col = {c: i for i, c in enumerate(SCORED)}
    first = np.arange(0, n - size + 1, slide)
    Y = np.full((len(first), X.shape[1]), np.nan)
    for k, a in enumerate(first):
        blk = dense[a:a + size]
        have = np.isfinite(blk[:, 0])
        if not have.any():
            continue
        for c in SUMS:
            Y[k, col[c]] = np.nansum(blk[:, col[c]])
        Y[k, col["realized_vol"]] = np.sqrt(np.nansum(blk[:, col["realized_vol"]] ** 2))
        Y[k, col["spread_twa"]] = np.nanmean(blk[:, col["spread_twa"]]) if np.isfinite(blk[:, col["spread_twa"]]).any() else np.nan
        last = blk[have][-1]
        for c in LASTS:
            Y[k, col[c]] = last[col[c]]
        for c in ["bid_depth5_max", "ask_depth5_max"]:
            Y[k, col[c]] = np.nanmax(blk[:, col[c]])
        for c in ["bid_depth5_min", "ask_depth5_min"]:
            Y[k, col[c]] = np.nanmin(blk[:, col[c]])
        Y[k, col["cancel_add_ratio"]] = Y[k, col["cancels"]] / max(adds[a:a + size].sum(), 1)
    keep = np.isfinite(Y[:, 0])
    starts = (t0 + first) * SECOND
    return Y[keep], starts[keep], starts[keep] + size * SECOND


def ranks(s, reference=None):
    """Empirical upper-tail p-values of `s`: against the windows in `reference` (a mask) when given,
    so that a file's many injected windows do not dilute the p-values of each other."""
    v = np.where(np.isfinite(s), s, -np.inf)
    ref = np.sort(v if reference is None else v[reference])
    return (len(ref) - np.searchsorted(ref, v, side="left") + 1) / (len(ref) + 1)


def outside(data):
    starts, ends, m = data["starts"], data["ends"], np.ones(len(data["starts"]), bool)
    for _, s, e in data["labels"]:
        m &= ~((starts < e) & (ends > s))
    return m


def cauchy(ps, weights=None):
    ps = np.clip(np.array(ps), 1e-300, 0.99)
    w = np.full(len(ps), 1 / len(ps)) if weights is None else np.array(weights) / np.sum(weights)
    return 0.5 - np.arctan(np.tensordot(w, np.tan((0.5 - ps) * np.pi), axes=1)) / np.pi


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


def mix_scores(M, span=1800, warmup=100, prior=0.5):
    """Per window, how far its message mix is from the instrument's recent mix (scored before update).

    Returns the multinomial deviance G, the Hellinger statistic and the largest one-cell Poisson
    excess deviance; the reference is an exponentially decayed sum of counts (span `span` windows)
    smoothed with `prior` pseudo-messages per cell."""
    n, k = M.shape
    ref, seen = np.zeros(k), 0
    out = np.full((3, n), np.nan)
    decay = 1 - 2 / (span + 1)
    for i in range(n):
        c = M[i]
        total = c.sum()
        if seen >= warmup and total > 0:
            p = (ref + prior) / (ref.sum() + prior * k)
            e = total * p
            pos = c > 0
            g = 2 * np.sum(c[pos] * np.log(c[pos] / e[pos]))
            h = 4 * np.sum((np.sqrt(c) - np.sqrt(e)) ** 2)
            cell = np.where(pos, c * np.log(np.where(pos, c, 1) / e) - (c - e), 0.0)
            out[:, i] = [g, h, 2 * np.max(np.where(c > e, cell, 0.0))]
        elif seen >= warmup:
            out[:, i] = 0.0
        ref = ref * decay + c
        seen += 1
    return out


def knn(X, k=5, size=1800, gap=30, span=1800, warmup=100):
    """Per window, the mean distance to its `k` nearest neighbours among the `size` windows that
    ended at least `gap` windows before it (so an episode's own windows are not its neighbours),
    each feature on T²'s asinh scale and divided by its exponentially weighted deviation."""
    n, d = X.shape
    Y = np.zeros((n, d))
    scale, mean, var = np.zeros(d), np.zeros(d), np.zeros(d)
    sd = np.zeros((n, d))
    for i in range(n):
        x = np.nan_to_num(X[i])
        alpha = max(2 / (span + 1), 1 / (i + 1))
        s = np.where(scale > 0, scale, np.maximum(np.abs(x), 1e-12))
        y = np.arcsinh(x / s)
        Y[i] = y
        r = y - mean
        sd[i] = np.sqrt(np.maximum(var, 1e-12))
        mean = mean + alpha * r
        var = (1 - alpha) * (var + alpha * r * r)
        scale = scale + alpha * (np.abs(x) - scale)
    out = np.full(n, np.nan)
    for i in range(warmup + gap, n):
        lo, hi = max(0, i - gap - size), i - gap
        ref = (Y[lo:hi] - Y[i]) / sd[i]
        dist = np.sqrt(np.einsum("ij,ij->i", ref, ref))
        out[i] = np.mean(np.partition(dist, k)[:k]) if len(dist) > k else np.nan
    return out


def run_decision(path):
    """A cached file's name and, from its run's scores file in EVAL, per (scale, window start) the
    model's p-value, the ensemble's bound and the window's end."""
    import json
    name = os.path.basename(path)[: -len(".pkl")]
    directory, stem = re.match(r"^(.*?days)_(.*)$", name).groups()
    model, bound, end = {}, {}, {}
    for line in open(f"{EVAL}/{directory}/{stem}.scores.jsonl"):
        r = json.loads(line)
        key = (r["scale"], r["window_start_ns"])
        if r["detector"] == "model" and r["p_value"] is not None:
            model[key] = r["p_value"]
        elif r["detector"] == "ensemble" and r["p_value"] is not None:
            bound[key], end[key] = 10 ** -r["threshold"], r["window_end_ns"]
    return name, model, bound, end


def span_job(path, data, variants):
    """The ensemble's decision re-made with T² at other spans: per file, T² calibrated causally at
    each span of the 1 s and 10 s windows, combined at 1 s with the model's p-value from the run's
    scores file (weight `w` of T²'s 1), at the run's bounds and the 10 s alert hold."""
    from tail_calibrator import calibrate
    name, model, bound, end = run_decision(path)
    one = lambda p: np.nan_to_num(p, nan=1.0)  # noqa: E731
    Y, s10, _ = roll(data, 10, 10)

    def with_extras(X, extra, rolled):
        if not extra:
            return X
        cols = [roll_max(data, data["E"][e], 10, 10) if rolled else data["E"][e] for e in extra.split("+")]
        return np.column_stack([X] + cols)

    p1 = {(v[0], v[3]): dict(zip(data["starts"].tolist(), one(calibrate(t2(with_extras(data["X"], v[3], False), span=v[0])))))
          for v in variants}
    p10 = {(v[1], v[3]): dict(zip(s10.tolist(), one(calibrate(t2(with_extras(Y, v[3], True), span=v[1])))))
           for v in variants}
    from decision_check import alerts
    episodes = [("", a, b) for _, a, b in data["labels"]]  # one instrument per file
    hours = (data["ends"][-1] - data["starts"][0]) / 3.6e12
    out = {}
    for span1, span10, weight, extra in variants:
        flagged = []
        q1, q10 = p1[(span1, extra)], p10[(span10, extra)]
        for (scale, start), b in bound.items():
            if scale == "1s" and start in q1:
                ps, ws = [q1[start]], [1.0]
                if (scale, start) in model:
                    ps, ws = ps + [model[(scale, start)]], ws + [weight]
                p = cauchy(np.array(ps), ws)
            elif scale == "10s" and start in q10:
                p = q10[start]
            else:
                continue
            if p <= b:
                flagged.append((end[(scale, start)], start, ""))
        found, false_alarms = alerts(episodes, sorted(flagged), 10 * SECOND)
        out[f"1s {span1} 10s {span10} w {weight}" + (f" +{extra}" if extra else "")] = (len(found), len(episodes), false_alarms, hours)
    return name, out


def t2_split(X, k, span=1800, warmup=100, ridge=0.01, refresh=20):
    """T² as `t2` computes it, split along the covariance's eigenvectors: (T² over the k largest
    components, T² over the others, Q = the squared residual off the k largest)."""
    n, d = X.shape
    scale, mean, cov = np.zeros(d), np.zeros(d), np.zeros((d, d))
    vals = vecs = None
    major, minor, q = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    seen, since = 0, 0
    for i in range(n):
        finite = np.isfinite(X[i])
        x = np.nan_to_num(X[i])
        alpha = max(2 / (span + 1), 1 / (seen + 1))
        sc = np.where(scale > 0, scale, np.maximum(np.abs(x), 1e-12))
        y = np.arcsinh(x / sc)
        r = np.where(finite, y - mean if seen else 0.0, 0.0)
        if seen == 0:
            mean = np.where(finite, y, 0.0)
        scale = np.where(finite, scale + alpha * (np.abs(x) - scale), scale)
        if seen >= warmup and vals is not None:
            c = vecs.T @ r
            major[i] = np.sum(c[:k] ** 2 / vals[:k])
            minor[i] = np.sum(c[k:] ** 2 / vals[k:])
            q[i] = np.sum(c[k:] ** 2)
        if seen > 0:
            mean = mean + alpha * r
            cov = (1 - alpha) * (cov + alpha * np.outer(r, r))
        seen, since = seen + 1, since + 1
        if (vals is None or since >= refresh) and np.trace(cov) > 0:
            w, v = np.linalg.eigh(cov + ridge * np.trace(cov) / d * np.eye(d))
            vals, vecs, since = w[::-1], v[:, ::-1], 0
    return major, minor, q


MARGINS = [float(m) for m in os.environ.get("MARGINS", "").split(",") if m]


def pca_job(path, data, variants):
    """The decision of `span_job` with T² (both scales) replaced by its split along the principal
    components (`k/q`, `k/minor`, `k/major`; `base` the whole T²)."""
    from tail_calibrator import calibrate
    from decision_check import alerts
    name, model, bound, end = run_decision(path)
    one = lambda p: np.nan_to_num(p, nan=1.0)  # noqa: E731
    Y, s10, _ = roll(data, 10, 10)
    inputs = {"1s": (data["X"], data["starts"], 1800), "10s": (Y, s10, 180)}
    p = {}
    for scale, (X, starts, span) in inputs.items():
        splits = {}
        for v in variants:
            if v == "base":
                p[(scale, v)] = dict(zip(starts.tolist(), one(calibrate(t2(X, span=span)))))
                continue
            k, how = int(v.split("/")[0]), v.split("/")[1]
            if k not in splits:
                splits[k] = [one(calibrate(s)) for s in t2_split(X, k, span=span)]
            pm, pn, pq = splits[k]
            combined = pm if how == "major" else cauchy(np.vstack([pm, pq if how == "q" else pn]))
            p[(scale, v)] = dict(zip(starts.tolist(), combined))
    episodes = [("", a, b) for _, a, b in data["labels"]]
    hours = (data["ends"][-1] - data["starts"][0]) / 3.6e12
    out = {}
    for variant in variants + [f"{v}@{m}" for v in variants for m in MARGINS]:
        v, margin = (variant.split("@")[0], float(variant.split("@")[1])) if "@" in variant else (variant, 1.0)
        flagged = []
        for (scale, start), b in bound.items():
            b = b * margin
            q = p[(scale, v)].get(start)
            if q is None:
                continue
            if scale == "1s" and (scale, start) in model:
                q = cauchy(np.array([q, model[(scale, start)]]), [1.0, 0.25])
            if q <= b:
                flagged.append((end[(scale, start)], start, ""))
        found, false_alarms = alerts(episodes, sorted(flagged), 10 * SECOND)
        out[variant] = (len(found), len(episodes), false_alarms, hours)
    return name, out


def span_report(results):
    groups = GROUPS + [("clean", r"^clean-days")]
    table = {}
    for name, out in results:
        group = next((g for g, rx in groups if re.search(rx, name)), None)
        for variant, (a, b, fa, _) in out.items():
            t = table.setdefault(variant, {}).setdefault(group, [0, 0, 0])
            t[0], t[1], t[2] = t[0] + a, t[1] + b, t[2] + fa
    for variant, cells in table.items():
        print(f"{variant:22s}", "  ".join(f"{g} {c[0]}/{c[1]} ({c[2]})" if g != "clean" else f"clean ({c[2]})"
                                          for g, c in ((g, cells.get(g, [0, 0, 0])) for g, _ in groups)))


def job(args):
    path, mode, variants = args
    data = pickle.load(open(path, "rb"))
    if mode in ("mix", "mixcausal") and "M" not in data:
        sys.exit(f"{path} has no message-mix counts: remove {CACHE} and run `cache` again")
    X, out = data["X"], {}
    ref = outside(data)
    R = lambda s: ranks(s, ref)  # noqa: E731
    if mode == "t2":
        for name, extra in variants.items():
            Y = np.column_stack([X] + [data["E"][e] for e in extra]) if extra else X
            out[name] = found(t2(Y), data)
    elif mode == "log":
        positive = np.array([c not in SIGNED for c in SCORED])
        for c in variants:
            transform = lambda x, s, c=c: np.where(positive, np.log(np.maximum(x, 0) / s + c), np.arcsinh(x / s))
            out[f"c={c}"] = found(t2(X, transform), data)
    elif mode == "perfeature":
        score, z = t2(X, marginal=True)
        base = R(score)
        out["t2"] = found(score, data)
        pz = np.column_stack([R(np.abs(z[:, j])) for j in range(z.shape[1])])
        p = cauchy(pz.T)
        out["feat-cauchy"] = found(-np.log(p), data)
        out["feat-min"] = found(-np.min(pz, axis=1), data)
        out["t2+feat-cauchy"] = found(-np.log(cauchy([base, R(-p)])), data)
        out["t2+feat-min"] = found(-np.log(cauchy([base, R(-np.min(pz, axis=1))])), data)
        out["maxabsz"] = found(np.nanmax(np.abs(z), axis=1), data)
    elif mode == "cusum":
        score = t2(X)
        base = R(score)
        out["t2"] = found(score, data)
        e = -np.log(base)
        for k in variants:
            c, acc = np.zeros(len(e)), 0.0
            for i, v in enumerate(e):
                acc = max(0.0, acc + v - k) if np.isfinite(score[i]) else 0.0
                c[i] = acc
            c = np.where(np.isfinite(score), c, np.nan)
            out[f"cusum{k}"] = found(c, data)
            out[f"t2+cusum{k}"] = found(-np.log(cauchy([base, R(c)])), data)
    elif mode == "causal":
        from tail_calibrator import calibrate
        score, z = t2(X, marginal=True)
        out["t2"] = found(score, data)
        p_t2 = calibrate(score)
        out["t2-cal"] = found(-np.log(p_t2), data)
        pf = np.column_stack([calibrate(np.abs(z[:, j])) for j in range(z.shape[1])])
        minp = np.nanmin(np.where(np.isfinite(pf), pf, 1.0), axis=1)
        minp = np.where(np.isfinite(score), minp, np.nan)
        p_m = calibrate(-np.log10(minp))
        one = lambda p: np.nan_to_num(p, nan=1.0)  # noqa: E731
        out["feat"] = found(-np.log(p_m), data)
        out["t2+feat"] = found(-np.log(cauchy([one(p_t2), one(p_m)])), data)
        out["t2+featB"] = found(-np.log(cauchy([one(p_t2), np.minimum(1, one(minp) * z.shape[1])])), data)
        out["t2+featC"] = found(-np.log(cauchy([one(p_t2), one(cauchy(one(pf).T))])), data)
    elif mode == "mixcausal":
        from tail_calibrator import calibrate
        score = t2(X)
        one = lambda p: np.nan_to_num(p, nan=1.0)  # noqa: E731
        p_t2 = one(calibrate(score))
        out["t2-cal"] = found(-np.log(p_t2), data)
        M = data["M"]
        M = M[:, :MIX_CELLS] + M[:, MIX_CELLS:]
        g, _, c = mix_scores(M)
        for name, sc in (("G", g), ("cell", c)):
            p = one(calibrate(sc))
            out[name] = found(-np.log(p), data)
            for w in (0.5, 0.25, 0.1):
                out[f"t2+{name}w{w}"] = found(-np.log(cauchy([p_t2, p], [1 - w, w])), data)
    elif mode == "huber":
        from tail_calibrator import calibrate
        out["t2"] = found(t2(X), data)
        for c in variants:
            sc = t2(X, huber=c)
            out[f"huber{c}"] = found(sc, data)
            out[f"huber{c}-cal"] = found(-np.log(np.nan_to_num(calibrate(sc), nan=1.0)), data)
    elif mode == "sliding":
        from tail_calibrator import calibrate
        hours = (data["ends"][-1] - data["starts"][0]) / 3.6e12
        sc = t2(X)
        p1 = np.nan_to_num(calibrate(sc), nan=1.0)
        out["1s"] = found_hold(-np.log(p1), data["starts"], data["ends"], data["labels"], hours)
        for size, slide in variants:
            Y, st, en = roll(data, size, slide)
            p = np.nan_to_num(calibrate(t2(Y, span=max(1800 * slide / size, 30) if slide == size else 1800 / slide)), nan=1.0)
            out[f"{size}s/{slide}s"] = found_hold(-np.log(p), st, en, data["labels"], hours)
    elif mode == "span":
        return span_job(path, data, variants)
    elif mode == "pca":
        return pca_job(path, data, variants)
    elif mode == "copula":
        ident = lambda x, s: x  # noqa: E731
        base = t2(X)
        out["t2"] = found(base, data)
        for size in variants:
            c = t2(copula(X, int(size)), ident)
            out[f"copula{size}"] = found(c, data)
            out[f"copula{size}+t2"] = found(-cauchy([R(base), R(c)]), data)
    elif mode == "ar":
        sec = data["starts"] // SECOND
        Y = transformed(X)
        ident = lambda x, s: x  # noqa: E731
        base = t2(X)
        out["t2"] = found(base, data)
        for how in variants:
            r = t2(residuals(Y, sec, how), ident)
            out[how] = found(r, data)
            out[how + "+t2"] = found(-cauchy([R(base), R(r)]), data)
    elif mode == "diff":
        sec = data["starts"] // SECOND
        D = np.vstack([np.zeros((1, X.shape[1])), np.diff(X, axis=0)])
        D[1:][np.diff(sec) != 1] = 0.0
        out["t2"] = found(t2(X), data)
        out["diff"] = found(t2(np.nan_to_num(D)), data)
        out["both"] = found(t2(np.column_stack([X, np.nan_to_num(D)])), data)
    elif mode == "mewma":
        from tail_calibrator import calibrate
        hours = (data["ends"][-1] - data["starts"][0]) / 3.6e12
        st, en, lab = data["starts"], data["ends"], data["labels"]
        score, W = t2(X, white=True)
        one = lambda p: np.nan_to_num(p, nan=1.0)  # noqa: E731
        p1 = one(calibrate(score))
        out["t2-1s"] = found_hold(score, st, en, lab, hours)
        Y, s10, e10 = roll(data, 10, 10)
        p10 = one(calibrate(t2(Y, span=180)))
        out["t2-10s"] = found_hold(-np.log(p10), s10, e10, lab, hours)
        # both scales, one pooled decision on the min p (times the per-window rate of each scale)
        sec = st // SECOND
        for lam in variants:
            m, sc = np.zeros(W.shape[1]), np.full(len(score), np.nan)
            prev = None
            for i in range(len(score)):
                w = W[i]
                if not np.all(np.isfinite(w)):
                    continue
                if prev is not None and sec[i] - prev > 1:
                    m = m * (1 - lam) ** (sec[i] - prev - 1)
                prev = sec[i]
                m = (1 - lam) * m + lam * w
                sc[i] = m @ m
            out[f"mewma{lam}"] = found_hold(sc, st, en, lab, hours)
            out[f"mewma{lam}-cal"] = found_hold(-np.log(one(calibrate(sc))), st, en, lab, hours)
            out[f"t2+mewma{lam}"] = found_hold(-np.log(cauchy([p1, one(calibrate(sc))])), st, en, lab, hours)
    elif mode == "knn":
        score = t2(X)
        base = R(score)
        out["t2"] = found(score, data)
        for k, size, gap in variants:
            sc = knn(X, k=k, size=size, gap=gap)
            out[f"knn{k}/{size}/{gap}"] = found(sc, data)
            out[f"t2+knn{k}/{size}/{gap}"] = found(-np.log(cauchy([base, R(sc)])), data)
    elif mode == "mix":
        base = R(t2(X))
        out["t2"] = found(-np.log(base), data)
        M = data["M"]
        for sided, m in (("sides", M), ("pooled", M[:, :MIX_CELLS] + M[:, MIX_CELLS:])):
            for name, score in zip(("G", "hell", "cell"), mix_scores(m)):
                r = R(score)
                out[f"{sided}-{name}"] = found(score, data)
                out[f"t2+{sided}-{name}"] = found(-np.log(cauchy([base, r])), data)
    else:
        cache = {}
        for name, blocks in BLOCK_VARIANTS.items():
            ps = []
            for b in blocks:
                if tuple(b) not in cache:
                    cache[tuple(b)] = R(t2(X[:, [SCORED.index(c) for c in b]]))
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
        stems = sorted(p[: -len(".features.csv")] for p in glob.glob(f"{eval_dir}/*days/*.features.csv"))
        with Pool(2) as pool:
            pool.map(cache_one, stems)
        return
    if mode == "cache-concentration":
        with Pool(2) as pool:
            pool.map(add_concentration, sorted(glob.glob(f"{CACHE}/*.pkl")))
        return
    if mode == "t2":
        variants = {a.split("=")[0]: [e for e in a.split("=", 1)[1].split("+") if e] if "=" in a else [] for a in sys.argv[2:]}
    elif mode == "sliding":
        variants = [tuple(int(x) for x in a.split("/")) for a in sys.argv[2:]]
    elif mode == "knn":
        variants = [tuple(int(x) for x in a.split("/")) for a in sys.argv[2:]]
    elif mode == "span":
        variants = [(int(a.split("/")[0]), int(a.split("/")[1]), float(a.split("/")[2]),
                     a.split("/")[3] if a.count("/") > 2 else "") for a in sys.argv[2:]]
    elif mode in ("ar", "copula", "pca"):
        variants = sys.argv[2:]
    elif mode in ("log", "cusum", "huber", "mewma"):
        variants = [float(c) for c in sys.argv[2:]]
    elif mode in ("blocks", "mix", "perfeature", "causal", "mixcausal", "diff"):
        variants = None
    else:
        sys.exit(__doc__)
    files = sorted(glob.glob(f"{CACHE}/*.pkl"))
    if not files:
        sys.exit(f"no {CACHE}/*.pkl: run `scripts/feature_trial.py cache target/eval` first")
    with Pool(2) as pool:
        results = pool.map(job, [(f, mode, variants) for f in files])
    (span_report if mode in ("span", "pca") else report)(results)


if __name__ == "__main__":
    main()
