"""A Python port of `operators/src/calibrate.rs`'s `TailCalibrator` (peaks over threshold with the
same history, quantile, warm-up, refit interval, cap and shape rules), so that offline trials
(`scripts/feature_trial.py`) calibrate a score causally, window by window, as the ensemble does.

  .venv/bin/python scripts/tail_calibrator.py recalibrate [--equal] default,nocap target/eval/clean-days/*.scores.jsonl
      re-calibrates the raw T² and model scores of `make eval`'s scored runs with each variant of the
      options (VARIANTS below), combines them per window with the Cauchy combination (weighted as
      `detect.combine-weights` is by default, WEIGHTS below; `--equal` for runs made before
      2026-12-07, ninth session) and decides at the run's own bound with the 10 s alert hold:
      episodes found and false alarms in total per variant. `default` is the moments fit of `calibrate.rs` before 2026-12-07 (eighth session),
      and reproduces the decisions of runs made with it exactly; `mle` is the maximum-likelihood fit
      `calibrate.rs` has since (here on a grid of shapes, 0.05 apart: within an episode or two of
      the runs made with it, per group of `make eval`). Only the raw scores and the bounds are read
      from the runs, so every variant gives the same on runs made before and after."""
import numpy as np

XI_MIN, XI_MAX, MIN_PEAKS, FEW_XI, CAP_OVERRUN, OVER_W = 0.0, 0.6, 30, 0.3, 30.0, 1 / 1800


def censored_gpd(y, c, xi_max):
    """Maximum-likelihood GPD (sigma, xi) of excesses `y` with `c` censored ones (known only to be at
    least their value): xi on a grid in [0, xi_max], sigma by golden section on its log."""
    best = (-np.inf, None, None)
    scale = max(np.mean(np.concatenate([y, c])), 1e-12)
    for xi in np.linspace(0.0, xi_max, int(round(xi_max / 0.05)) + 1):
        def ll(log_sigma):
            sg = np.exp(log_sigma)
            if xi < 1e-9:
                return -len(y) * log_sigma - np.sum(y) / sg - np.sum(c) / sg
            return (-len(y) * log_sigma - (1 / xi + 1) * np.sum(np.log1p(xi * y / sg))
                    - (1 / xi) * np.sum(np.log1p(xi * c / sg)))
        lo, hi = np.log(scale) - 6, np.log(scale) + 3
        g = (np.sqrt(5) - 1) / 2
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        fa, fb = ll(a), ll(b)
        for _ in range(40):
            if fa > fb:
                hi, b, fb = b, a, fa
                a = hi - g * (hi - lo)
                fa = ll(a)
            else:
                lo, a, fa = a, b, fb
                b = lo + g * (hi - lo)
                fb = ll(b)
        x = (lo + hi) / 2
        v = ll(x)
        if v > best[0]:
            best = (v, np.exp(x), xi)
    return best[1], best[2]


class Fit:
    def __init__(self, v, q, xi_max=XI_MAX, capped=None):
        if capped is not None:
            capped = np.asarray(capped)[np.isfinite(v)]
        v = v[np.isfinite(v)]
        n = len(v)
        s = np.sort(v)
        at = min(int(np.floor(q * (n - 1))), n - 1)
        t = s[at]
        ex = s[at + 1:] - t
        ties = int(np.sum(s == t)) - 1
        ex = ex[ex > 0]
        censored = None
        if capped is not None:
            over = (v > t)
            censored = v[over & capped] - t
            ex = v[over & ~capped] - t
        knots = [s[min(int(np.floor(qq * (n - 1))), max(at - 1, 0))] if at > 0 else t for qq in (0, .25, .5, .75)]
        m = len(ex) + (len(censored) if censored is not None else 0)
        body = abs(t - knots[1])
        floor = max(1e-3 * body, 1e-6 * abs(t), 1e-12)
        if censored is not None and m >= MIN_PEAKS:
            sigma, xi = censored_gpd(ex, censored, xi_max)
            sigma = max(sigma, floor)
        elif censored is not None and m > 0:
            ex = np.sort(np.concatenate([ex, censored]))
            xi = FEW_XI
            sigma = max(ex[m // 2] * xi / (2 ** xi - 1), floor)
        elif m >= MIN_PEAKS:
            a0 = ex.mean()
            a1 = np.mean((1 - (np.arange(m) + 0.65) / m) * ex)
            den = a0 - 2 * a1
            if den > 0:
                xi = float(np.clip(-(a0 / den - 2), XI_MIN, xi_max))
                sigma = max(a0 * (1 - xi), floor)
            else:
                xi, sigma = 0.0, max(a0, floor)
        elif m > 0:
            xi = FEW_XI
            sigma = max(ex[m // 2] * xi / (2 ** xi - 1), floor)
        else:
            xi, sigma = 0.0, max(floor, body)
        self.t, self.xi, self.sigma, self.knots = t, xi, sigma, knots
        self.ef = max(m, 1) / n
        self.at = max((m + ties + 1) / n, self.ef)

    def level(self, p):
        if p >= self.ef:
            return self.t
        r = self.ef / p
        return self.t + (self.sigma * np.log(r) if self.xi < 1e-9 else self.sigma / self.xi * (r ** self.xi - 1))

    def prob(self, x):
        if x > self.t:
            y = (x - self.t) / self.sigma
            surv = np.exp(-y) if self.xi < 1e-9 else (1 + self.xi * y) ** (-1 / self.xi)
            return max(self.ef * surv, 1e-308)
        q = [0, .25, .5, .75, max(1 - self.at, .75)]
        xs = list(self.knots) + [self.t]
        if x <= xs[0]:
            return 1.0
        level = q[4]
        for i in range(4):
            if x <= xs[i + 1]:
                span = xs[i + 1] - xs[i]
                f = (x - xs[i]) / span if span > 0 else 1.0
                level = q[i] + f * (q[i + 1] - q[i])
                break
        return float(np.clip(1 - level, min(self.at, .25), 1))


class Calibrator:
    def __init__(self, history=7200, q=0.95, warmup=100, refit=64, cap=0.001, xi_max=XI_MAX, cap_ratio=0.0,
                 censored=False, skip_capped=False):
        self.ring, self.h, self.q, self.w, self.refit, self.cap = [], history, q, warmup, refit, cap
        self.xi_max = xi_max
        # cap_ratio > 0: tail probabilities above the threshold times (capped + a) / (n cap + a), the
        # history's capped scores against the fit's own 1/1000 (a = cap_ratio pseudo-counts).
        self.cap_ratio, self.capped = cap_ratio, []
        self.censored = censored  # the capped scores enter the tail fit as censored
        self.next, self.since, self.fit, self.over = 0, 0, None, 0.0
        self.skip_capped = skip_capped  # a score over the cap does not enter the history at all

    def p(self, x):
        if len(self.ring) < self.w or not np.isfinite(x):
            return None
        if self.fit is None or self.since >= self.refit:
            capped = None
            if self.censored:
                capped = np.array(self.capped) if self.censored is True else np.zeros(len(self.ring), bool)
            self.fit = Fit(np.array(self.ring), self.q, self.xi_max, capped)
            self.since = 0
        p = self.fit.prob(x)
        if self.cap_ratio > 0 and x > self.fit.t:
            a = self.cap_ratio
            p = min(p * max(1.0, (sum(self.capped) + a) / (len(self.ring) * self.cap + a)), self.fit.ef)
        return p

    def observe(self, x):
        if not np.isfinite(x):
            return
        capped = False
        if self.fit is not None and self.cap:
            lv = self.fit.level(self.cap)
            self.over += OVER_W * ((1.0 if x > lv else 0.0) - self.over)
            if self.over <= CAP_OVERRUN * self.cap:
                capped = x > lv
                if capped and self.skip_capped:
                    self.since += 1
                    return
                x = min(x, lv)
        if len(self.ring) < self.h:
            self.ring.append(x)
            self.capped.append(capped)
        else:
            self.next %= self.h
            self.ring[self.next] = x
            self.capped[self.next] = capped
            self.next += 1
        self.since += 1


def calibrate(scores, **options):
    """Causal tail probabilities of a score series (NaN where not scored)."""
    c, out = Calibrator(**options), np.full(len(scores), np.nan)
    for i, x in enumerate(scores):
        if np.isfinite(x):
            p = c.p(x)
            if p is not None:
                out[i] = p
            c.observe(x)
    return out


def recalibrate(variants, paths, weights=None):
    """Re-decides `make eval`'s scored runs with other calibration options: every detector's raw
    scores (the scores file) calibrated again per (instrument, scale, detector), combined with the
    Cauchy combination over `combined`, decided at the run's own bound with the alert hold."""
    from multiprocessing import Pool

    with Pool(2) as pool:
        results = pool.map(_recalibrated_file, [(path, variants, weights or WEIGHTS) for path in paths])
    totals = {name: [0, 0, 0, 0.0] for name, _ in variants}
    for per_variant in results:
        for name, (found, eps, false_alarms, hours) in per_variant.items():
            t = totals[name]
            t[0], t[1], t[2], t[3] = t[0] + found, t[1] + eps, t[2] + false_alarms, t[3] + hours
    for name, t in totals.items():
        print(f"{name}: {t[0]}/{t[1]}, {t[2]} FA in {t[3]:.1f} inst-h = {t[2] / t[3]:.2f}", flush=True)


COMBINED = ("multivariate", "model")
# Their weights in the combination (`detect.combine-weights`: the model at 0.25 since 2026-12-07,
# ninth session; runs made before it combined them equally: pass `--equal` to re-decide those).
WEIGHTS = {"multivariate": 1.0, "model": 0.25}


def _recalibrated_file(args):
    import collections
    import json

    import decision_check as dc

    path, variants, weights = args
    eps = dc.episodes(path)
    series = collections.defaultdict(list)  # (instrument, scale, detector) -> [(end, score)]
    decided = {}  # (instrument, end, scale) -> (start, bound)
    ensemble = []
    for line in open(path):
        r = json.loads(line)
        key = (r["instrument"], r["window_end_ns"], r["scale"])
        if r["detector"] == "ensemble":
            if r["p_value"] is not None:
                decided[key] = (r["window_start_ns"], 10 ** -r["threshold"])
                ensemble.append(r)
        elif r["detector"] in COMBINED:
            series[(r["instrument"], r["scale"], r["detector"])].append((r["window_end_ns"], r["score"]))
    hours = dc.instrument_hours(ensemble) if ensemble else 0.0
    out = {}
    for name, options in variants:
        options = dict(options)
        margin = options.pop("margin", 1.0)  # the bound times this
        ps = collections.defaultdict(list)
        for (instrument, scale, detector), rows in series.items():
            rows.sort()
            p = calibrate(np.array([s for _, s in rows], dtype=float), **options)
            for (end, _), x in zip(rows, p):
                if np.isfinite(x):
                    ps[(instrument, end, scale)].append((float(x), weights[detector]))
        flagged = []
        for key, (start, bound) in decided.items():
            if ps.get(key) and dc.cauchy([p for p, _ in ps[key]], [w for _, w in ps[key]]) <= bound * margin:
                flagged.append((key[1], start, key[0]))
        flagged.sort()
        found, false_alarms = dc.alerts(eps, flagged, 10_000_000_000)
        out[name] = (len(found), len(eps), false_alarms, hours)
    return out


VARIANTS = {
    "default": {},
    "nocap": {"cap": 0.0},
    "cap1e-4": {"cap": 1e-4},
    "q98": {"q": 0.98},
    "ximax1": {"xi_max": 1.0},
    "q98-ximax1": {"q": 0.98, "xi_max": 1.0},
    "capratio2": {"cap_ratio": 2.0},
    "capratio7": {"cap_ratio": 7.0},
    "censored": {"censored": True},
    "censored-ximax1": {"censored": True, "xi_max": 1.0},
    "mle": {"censored": "mle"},
    "mle-0.8": {"censored": "mle", "margin": 0.8},
    "mle-q90": {"censored": "mle", "q": 0.90},
    "mle-0.6": {"censored": "mle", "margin": 0.6},
    "mle-ximax0.7": {"censored": "mle", "xi_max": 0.7},
    "mle-ximax0.8": {"censored": "mle", "xi_max": 0.8},
    "mle-ximax1": {"censored": "mle", "xi_max": 1.0},
    "mle-ximax1.5": {"censored": "mle", "xi_max": 1.5},
    "mle-ximax2": {"censored": "mle", "xi_max": 2.0},
    "mle-nocap": {"censored": "mle", "cap": 0.0},
    "mle-cap1e-2": {"censored": "mle", "cap": 0.01},
    "mle-capratio3": {"censored": "mle", "cap_ratio": 3.0},
    "mle-q975": {"censored": "mle", "q": 0.975},
    "mle-skipcap": {"censored": "mle", "skip_capped": True},
    "default-0.7": {"margin": 0.7},
    "default-0.6": {"margin": 0.6},
}

if __name__ == "__main__":
    import sys

    args = sys.argv[1:]
    equal = "--equal" in args
    args = [a for a in args if a != "--equal"]
    if len(args) < 3 or args[0] != "recalibrate":
        sys.exit("usage: tail_calibrator.py recalibrate [--equal] default,nocap,... FILES (variants: " + ", ".join(VARIANTS) + ")")
    recalibrate([(v, VARIANTS[v]) for v in args[1].split(",")], args[2:], {d: 1.0 for d in COMBINED} if equal else None)
