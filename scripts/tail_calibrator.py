"""A Python port of `operators/src/calibrate.rs`'s `TailCalibrator` (peaks over threshold with the
same history, quantile, warm-up, refit interval, cap and shape rules), so that offline trials
(`scripts/feature_trial.py`) calibrate a score causally, window by window, as the ensemble does."""
import numpy as np

XI_MIN, XI_MAX, MIN_PEAKS, FEW_XI, CAP_OVERRUN, OVER_W = 0.0, 0.6, 30, 0.3, 30.0, 1 / 1800


class Fit:
    def __init__(self, v, q):
        v = v[np.isfinite(v)]
        n = len(v)
        s = np.sort(v)
        at = min(int(np.floor(q * (n - 1))), n - 1)
        t = s[at]
        ex = s[at + 1:] - t
        ties = int(np.sum(s == t)) - 1
        ex = ex[ex > 0]
        knots = [s[min(int(np.floor(qq * (n - 1))), max(at - 1, 0))] if at > 0 else t for qq in (0, .25, .5, .75)]
        m = len(ex)
        body = abs(t - knots[1])
        floor = max(1e-3 * body, 1e-6 * abs(t), 1e-12)
        if m >= MIN_PEAKS:
            a0 = ex.mean()
            a1 = np.mean((1 - (np.arange(m) + 0.65) / m) * ex)
            den = a0 - 2 * a1
            if den > 0:
                xi = float(np.clip(-(a0 / den - 2), XI_MIN, XI_MAX))
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
    def __init__(self, history=7200, q=0.95, warmup=100, refit=64, cap=0.001):
        self.ring, self.h, self.q, self.w, self.refit, self.cap = [], history, q, warmup, refit, cap
        self.next, self.since, self.fit, self.over = 0, 0, None, 0.0

    def p(self, x):
        if len(self.ring) < self.w or not np.isfinite(x):
            return None
        if self.fit is None or self.since >= self.refit:
            self.fit = Fit(np.array(self.ring), self.q)
            self.since = 0
        return self.fit.prob(x)

    def observe(self, x):
        if not np.isfinite(x):
            return
        if self.fit is not None:
            lv = self.fit.level(self.cap)
            self.over += OVER_W * ((1.0 if x > lv else 0.0) - self.over)
            if self.over <= CAP_OVERRUN * self.cap:
                x = min(x, lv)
        if len(self.ring) < self.h:
            self.ring.append(x)
        else:
            self.next %= self.h
            self.ring[self.next] = x
            self.next += 1
        self.since += 1


def calibrate(scores):
    """Causal tail probabilities of a score series (NaN where not scored)."""
    c, out = Calibrator(), np.full(len(scores), np.nan)
    for i, x in enumerate(scores):
        if np.isfinite(x):
            p = c.p(x)
            if p is not None:
                out[i] = p
            c.observe(x)
    return out
