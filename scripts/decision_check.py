#!/usr/bin/env python3
"""Offline checks of the ensemble's decision on scored, labelled runs (`lobsentry run` with
`detect.scores`, labels from `lobsentry generate`); standard library only.

  python3 scripts/decision_check.py margin 1,0.5 target/eval/sparse-3*-days/*.scores.jsonl
      re-decides every ensemble window with its bound times each factor (the alert hold of 10 s per
      instrument across scales, as `detect.alert-hold`) and prints episodes found and false alarms
      per instrument-hour, per file and in total. Factor 1 reproduces `lobsentry eval`'s decision.

  python3 scripts/decision_check.py scales "1s=1 10s=1;1s=0.8 10s=2" target/eval/group5-*/*.scores.jsonl
      re-decides every ensemble window with each scale's bound times its factor (separated by ';',
      `scale=factor`, a scale not named keeps its bound; the alert hold of 10 s per instrument across
      scales) and prints episodes found and false alarms in total per set of factors: how the
      budget's shares between the scales (`detect.scale-shares`) move the decision.

  python3 scripts/decision_check.py calibration target/eval/sparse-3*-days/*.scores.jsonl
      for the windows more than 20 s from every episode, per scale and detector, the share whose
      p-value is at most 1e-2, 1e-3 and 1e-4 as a multiple of that level (1.00 = exact), and the
      smallest p-value (the decision's bound is 1.11e-4 for 1 s windows, 2.78e-3 for 10 s ones with
      the default `detect.scale-shares`; 1.39e-4 and 1.39e-3 with equal halves, before 2026-12-07).

  python3 scripts/decision_check.py oracle 10s target/eval/sparse-3*-days/*.scores.jsonl
      an upper bound on what a better calibration of one scale could add: per file, the threshold
      on that scale's ensemble p-values that gives half a false alarm per instrument-hour on that
      file (known only with its labels), and the episodes it finds that the decision did not.

  python3 scripts/decision_check.py combine "baseline multivariate model;multivariate model" FILES
      re-combines each window's calibrated detector p-values (every detector's p-value is in the
      scores file, whether or not the run combined it) with the Cauchy combination over the
      detectors of each combination (separated by ';'; `name=weight` weighs one), at the run's
      bound and alert hold (times F with `margin=F` among the names, one scale's bound times F
      with `10s=F`, and an alert hold of S seconds with `hold=S`; `name@10s=W` combines a detector
      on that scale's windows only; `stouffer=1` the weighted Stouffer combination instead, since
      2026-12-07, eleventh session; a model package by its name, `lobsentry-ae` or `lobsentry-lstm`,
      where `model` takes every package's p-value), and prints episodes found and false alarms in
      total per combination.
      The run's own combination reproduces `lobsentry eval`'s decision.

  python3 scripts/decision_check.py missed target/eval/{held-out,sparse}-3*-days/*.scores.jsonl
      per kind, the episodes the decision missed and the smallest ensemble p-value among each one's
      windows (any scale): its minimum, quartile and median over the missed episodes.

  python3 scripts/decision_check.py crossscale "0=1;0.5=1;1=0.7" target/eval/*days/*.scores.jsonl
      (2026-12-07, eleventh session) each 1 s window's ensemble p-value combined (Cauchy) with that
      of the 10 s window holding it at weight W (`W=F`; W 0 leaves it alone), decided at the 1 s
      bound times F once the 10 s window has ended; 10 s windows at their bound times F as before.

  python3 scripts/decision_check.py warmshare 1,2,4.25 FILES
      (eleventh session) the 1 s bound times each factor until the instrument's first decided 10 s
      window (the budget's 10 s share spent by the 1 s scale while the 10 s scale warms up; 4.25 is
      (0.4 + 1.3) / 0.4 with the default `detect.scale-shares`).
"""
import collections
import csv
import json
import math
import re
import statistics
import sys


def labelled(scores_path):
    """The episodes of a scores file's labels (the file beside it): (instrument, start, end, kind)."""
    labels = scores_path.replace("scores.jsonl", "labels.csv")
    rows = csv.DictReader(open(labels))
    return [(r["instrument"], int(r["start_ns"]), int(r["end_ns"]), r["kind"]) for r in rows]


def episodes(scores_path, pad_ns=0):
    return [(instrument, start - pad_ns, end + pad_ns) for instrument, start, end, _ in labelled(scores_path)]


def instrument_hours(windows):
    """Hours from the first window's start to the last one's end, times the instruments."""
    hours = (max(w["window_end_ns"] for w in windows) - min(w["window_start_ns"] for w in windows)) / 3600e9
    return hours * len({w["instrument"] for w in windows})


def overlapping(eps, instrument, start, end):
    """The episodes of `instrument` that a window [start, end) overlaps (their indices)."""
    return [i for i, (who, a, b) in enumerate(eps) if who == instrument and start < b and end > a]


def ensemble_windows(path):
    """The ensemble's decided windows of a scores file (those with a p-value)."""
    for line in open(path):
        if '"detector":"ensemble"' not in line:
            continue
        r = json.loads(line)
        if r["p_value"] is not None:
            yield r


def alerts(eps, flagged, hold_ns):
    """Episodes found and false alarms of the flagged windows `(end, start, instrument)`, taken in
    that order, with the alert hold of `detect.alert-hold` per instrument."""
    until, found, false_alarms = {}, set(), 0
    for end, start, instrument in flagged:
        if start < until.get(instrument, 0):
            continue
        until[instrument] = end + hold_ns
        hit = overlapping(eps, instrument, start, end)
        found.update(hit)
        false_alarms += not hit
    return found, false_alarms


def add(total, found, eps, false_alarms, hours):
    total[0] += len(found)
    total[1] += len(eps)
    total[2] += false_alarms
    total[3] += hours


def total_line(name, t):
    return f"{name}: {t[0]}/{t[1]}, {t[2]} FA in {t[3]:.1f} inst-h = {t[2] / t[3]:.2f}"


def redecided(paths, factor_sets, hold_ns=10_000_000_000):
    """Per file: episodes, hours, and per set of factors (a function of the scale) the episodes found
    and false alarms when every ensemble window is decided against its bound times its factor."""
    for path in paths:
        eps = episodes(path)
        decided = list(ensemble_windows(path))
        windows = sorted(
            (r["window_end_ns"], r["window_start_ns"], r["p_value"], 10 ** -r["threshold"], r["instrument"], r["scale"])
            for r in decided
        )
        results = []
        for factor in factor_sets:
            flagged = ((end, start, who) for end, start, p, bound, who, scale in windows if p <= bound * factor(scale))
            results.append(alerts(eps, flagged, hold_ns))
        yield path, eps, instrument_hours(decided), results


def margin(factors, paths):
    totals = {f: [0, 0, 0, 0.0] for f in factors}
    for path, eps, hours, results in redecided(paths, [lambda _, f=f: f for f in factors]):
        row = []
        for f, (found, false_alarms) in zip(factors, results):
            row.append(f"x{f}: {len(found)}/{len(eps)}, {false_alarms / hours:.2f} FA/inst-h")
            add(totals[f], found, eps, false_alarms, hours)
        print(path, " | ".join(row))
    print("total", " | ".join(total_line(f"x{f}", t) for f, t in totals.items()))


def scales(sets, paths):
    factors = [(text.strip(), dict((m.split("=") + ["1"])[:2] for m in text.split())) for text in sets.split(";")]
    factors = [(name, {scale: float(f) for scale, f in fs.items()}) for name, fs in factors]
    totals = {name: [0, 0, 0, 0.0] for name, _ in factors}
    functions = [lambda scale, fs=fs: fs.get(scale, 1.0) for _, fs in factors]
    for _, eps, hours, results in redecided(paths, functions):
        for (name, _), (found, false_alarms) in zip(factors, results):
            add(totals[name], found, eps, false_alarms, hours)
    for name, t in totals.items():
        print(total_line(name, t))


def cauchy(ps, weights):
    """The weighted Cauchy combination of p-values, as `ensemble::cauchy_combination` computes it."""
    total = 0.0
    for p, w in zip(ps, weights):
        p = min(max(p, 1e-300), 0.99)
        total += w * (1.0 / (p * math.pi) if p < 1e-12 else 1.0 / math.tan(p * math.pi))
    t = total / sum(weights)
    p = 1.0 / (t * math.pi) if t > 1e12 else 0.5 - math.atan(t) / math.pi
    return min(max(p, sys.float_info.min), 1.0)


def stouffer(ps, weights):
    """The weighted Stouffer combination: the p-value of sum(w z) / sqrt(sum(w^2)), z = Phi^-1(1 - p)."""
    normal = statistics.NormalDist()
    z = sum(w * -normal.inv_cdf(min(max(p, 1e-300), 1 - 1e-16)) for p, w in zip(ps, weights))
    z /= math.sqrt(sum(w * w for w in weights))
    return normal.cdf(-z) if z < 8 else math.exp(-z * z / 2) / (z * math.sqrt(2 * math.pi))


def combine(combinations, paths, hold_ns=10_000_000_000):
    combos = []
    for text in combinations.split(";"):
        members = {name: float(w) for name, w in ((m.split("=") + ["1"])[:2] for m in text.split())}
        # `1s=F`, `10s=F`: that scale's bound times F (as `scales`), so a change of weights can be
        # measured together with the shares that keep its false alarms.
        per_scale = {name: members.pop(name) for name in list(members) if re.fullmatch(r"\d+(ms|s|m)", name)}
        # `hold=S`: the alert hold in seconds instead of the run's 10 s.
        hold = int(members.pop("hold") * 1e9) if "hold" in members else hold_ns
        # `stouffer=1`: the weighted Stouffer combination (evidence that adds up across detectors)
        # instead of the Cauchy combination (the strongest detector leads).
        method = stouffer if members.pop("stouffer", 0) else cauchy
        combos.append((text.strip(), members.pop("margin", 1.0), members, per_scale, hold, method))
    totals = {name: [0, 0, 0, 0.0] for name, *_ in combos}
    for path in paths:
        eps = episodes(path)
        # Per (instrument, window end, scale): the ensemble's record and each detector's p-values.
        windows = collections.defaultdict(dict)
        for line in open(path):
            r = json.loads(line)
            if r["p_value"] is None:
                continue
            w = windows[(r["instrument"], r["window_end_ns"], r["scale"])]
            if r["detector"] == "ensemble":
                w["_ensemble"] = r
            else:
                w.setdefault(r["detector"], []).append(r["p_value"])
                if r["detector"] == "model":
                    # Each model package by its name too (`lobsentry-lstm=0.1`), beside `model` (all).
                    w.setdefault(r["model"].split("@")[0], []).append(r["p_value"])
        decided = sorted(
            (end, instrument, scale, w) for (instrument, end, scale), w in windows.items() if "_ensemble" in w
        )
        hours = instrument_hours([w["_ensemble"] for *_, w in decided])
        for name, factor, members, per_scale, hold, method in combos:
            flagged = []
            for end, instrument, scale, w in decided:
                # `detector@scale=W`: that detector only on windows of that scale.
                ps = [(p, weight) for d, weight in members.items() if "@" not in d or d.split("@")[1] == scale
                      for p in w.get(d.split("@")[0], [])]
                bound = factor * per_scale.get(scale, 1.0) * 10 ** -w["_ensemble"]["threshold"]
                if ps and method([p for p, _ in ps], [x for _, x in ps]) <= bound:
                    flagged.append((end, w["_ensemble"]["window_start_ns"], instrument))
            found, false_alarms = alerts(eps, flagged, hold)
            add(totals[name], found, eps, false_alarms, hours)
    for name, t in totals.items():
        print(total_line(name, t))


def calibration(paths, levels=(1e-2, 1e-3, 1e-4)):
    n, below, least = collections.Counter(), collections.Counter(), {}
    for path in paths:
        eps = episodes(path, pad_ns=20_000_000_000)
        for line in open(path):
            r = json.loads(line)
            if r["p_value"] is None:
                continue
            if overlapping(eps, r["instrument"], r["window_start_ns"], r["window_end_ns"]):
                continue
            key = (r["scale"], r["detector"])
            n[key] += 1
            least[key] = min(least.get(key, 1.0), r["p_value"])
            for level in levels:
                below[(key, level)] += r["p_value"] <= level
    for key in sorted(n):
        shares = "  ".join(f"p <= {l:g}: {below[(key, l)]} ({below[(key, l)] / n[key] / l:.2f}x)" for l in levels)
        print(*key, n[key], "windows;", shares, f" smallest p {least[key]:.1e}")


def oracle(scale, paths):
    total_found = total_new = total = 0
    for path in paths:
        eps = episodes(path)
        windows = list(ensemble_windows(path))
        found = set()
        for w in windows:
            if w["is_anomaly"]:
                found.update(overlapping(eps, w["instrument"], w["window_start_ns"], w["window_end_ns"]))
        at_scale = [w for w in windows if w["scale"] == scale]
        normal = sorted(
            w["p_value"] for w in at_scale if not overlapping(eps, w["instrument"], w["window_start_ns"], w["window_end_ns"])
        )
        allowed = max(1, int(0.5 * instrument_hours(windows)))
        threshold = normal[allowed - 1]
        caught = set()
        for w in at_scale:
            if w["p_value"] <= threshold:
                caught.update(overlapping(eps, w["instrument"], w["window_start_ns"], w["window_end_ns"]))
        new = caught - found
        print(path, f"decision {len(found)}/{len(eps)}; {scale} at p <= {threshold:.1e} ({allowed} false alarms): {len(caught)} episodes, {len(new)} new")
        total_found += len(found)
        total_new += len(new)
        total += len(eps)
    print(f"total: decision {total_found}/{total}, {total_new} more")


def missed(paths):
    best_by_kind = collections.defaultdict(list)
    for path in paths:
        eps = labelled(path)
        best, found = [1.0] * len(eps), [False] * len(eps)
        for r in ensemble_windows(path):
            for i in overlapping([e[:3] for e in eps], r["instrument"], r["window_start_ns"], r["window_end_ns"]):
                best[i] = min(best[i], r["p_value"])
                found[i] |= r["is_anomaly"]
        for i, (_, _, _, kind) in enumerate(eps):
            if not found[i]:
                best_by_kind[kind].append(best[i])
    for kind, ps in sorted(best_by_kind.items()):
        ps.sort()
        q = lambda f: ps[int(f * (len(ps) - 1))]
        print(f"{kind:20s} missed {len(ps):4d}  best ensemble p: min {q(0):.1e}  q25 {q(0.25):.1e}  median {q(0.5):.1e}")


def decided_by_instrument(path):
    """The ensemble's decided windows of a file: (end, start, p, bound, instrument, scale), sorted."""
    return sorted(
        (r["window_end_ns"], r["window_start_ns"], r["p_value"], 10 ** -r["threshold"], r["instrument"], r["scale"])
        for r in ensemble_windows(path)
    )


def redecide(variants, paths, flag):
    """Totals per variant of `flag(variant, windows)`, the flagged `(end, start, instrument)` of a file."""
    totals = {v: [0, 0, 0, 0.0] for v in variants}
    for path in paths:
        eps = episodes(path)
        windows = decided_by_instrument(path)
        hours = instrument_hours([{"window_start_ns": s, "window_end_ns": e, "instrument": i} for e, s, _, _, i, _ in windows])
        for v in variants:
            found, false_alarms = alerts(eps, sorted(flag(v, windows)), 10_000_000_000)
            add(totals[v], found, eps, false_alarms, hours)
    for v, t in totals.items():
        print(total_line(v, t))


def crossscale(variants, paths):
    def flag(v, windows):
        weight, factor = (float(x) for x in v.split("="))
        ten = {(i, s): (e, p) for e, s, p, _, i, scale in windows if scale == "10s"}
        for end, start, p, bound, instrument, scale in windows:
            if scale == "1s" and weight > 0 and (instrument, start - start % 10_000_000_000) in ten:
                end10, p10 = ten[(instrument, start - start % 10_000_000_000)]
                end, p = max(end, end10), cauchy([p, p10], [1.0, weight])
            if p <= bound * factor:
                yield end, start, instrument
    redecide([v.strip() for v in variants.split(";")], paths, flag)


def warmshare(factors, paths):
    def flag(factor, windows):
        first = {}
        for _, start, _, _, instrument, scale in windows:
            if scale == "10s":
                first[instrument] = min(first.get(instrument, start), start)
        for end, start, p, bound, instrument, scale in windows:
            early = scale == "1s" and start < first.get(instrument, 1 << 63)
            if p <= bound * (factor if early else 1.0):
                yield end, start, instrument
    redecide(factors, paths, flag)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "margin":
        margin([float(x) for x in sys.argv[2].split(",")], sys.argv[3:])
    elif len(sys.argv) >= 4 and sys.argv[1] == "combine":
        combine(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "missed":
        missed(sys.argv[2:])
    elif len(sys.argv) >= 4 and sys.argv[1] == "oracle":
        oracle(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) >= 4 and sys.argv[1] == "scales":
        scales(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) >= 4 and sys.argv[1] == "crossscale":
        crossscale(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) >= 4 and sys.argv[1] == "warmshare":
        warmshare([float(x) for x in sys.argv[2].split(",")], sys.argv[3:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "calibration":
        calibration(sys.argv[2:])
    else:
        sys.exit(__doc__)
