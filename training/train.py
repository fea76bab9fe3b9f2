#!/usr/bin/env python3
"""Train lobsentry's window-sequence anomaly model and export it as an ONNX model package.

    python training/train.py --features A.features.csv B.features.csv ... --out models/lobsentry-ae

Reads window-feature CSVs written by `lobsentry features` (one row per (instrument, window)),
builds per-instrument sequences of `--seq-len` consecutive windows, fits the normalisation, trains

  * a transformer autoencoder (default): input projection, learned positional encoding, transformer
    encoder layers, a pooled bottleneck, a transformer decoder layer and a reconstruction head; or
  * with --forecast, an LSTM forecaster that predicts the next window's features,

exports ONNX (opset 17, dynamic batch), checks that ONNX Runtime reproduces PyTorch's outputs on held-out
data, calibrates the threshold on held-out normal windows to at most `--alerts-per-instrument-hour`
false alarms, and writes model.onnx + model.json. Training is a separate step, never part of the tests.
"""
import argparse
import csv
import datetime
import json
import math
import os
import random
import sys

import numpy as np
import torch
from torch import nn

FEATURE_SCHEMA_VERSION = 2
# (name, transform) in network order; transforms are mirrored in operators/src/model.rs.
INPUTS = [
    ("events", "log1p"),
    ("adds", "log1p"),
    ("cancels", "log1p"),
    ("execs", "log1p"),
    ("exec_volume", "log1p"),
    ("log_return", "identity"),
    ("realized_vol", "identity"),
    ("spread_twa", "bps_of_mid"),
    ("bid_depth1", "log1p"),
    ("ask_depth1", "log1p"),
    ("bid_depth5", "log1p"),
    ("ask_depth5", "log1p"),
    ("queue_imbalance", "identity"),
    ("ofi", "signed_log1p"),
    ("cancel_add_ratio", "log1p"),
    ("add_volume", "log1p"),
    ("cancel_volume", "log1p"),
    ("bid_depth5_max", "log1p"),
    ("ask_depth5_max", "log1p"),
    ("bid_depth5_min", "log1p"),
    ("ask_depth5_min", "log1p"),
]


def transform(kind, x, mid):
    with np.errstate(all="ignore"):
        if kind == "identity":
            return x
        if kind == "log1p":
            return np.log1p(np.maximum(x, 0.0))
        if kind == "signed_log1p":
            return np.sign(x) * np.log1p(np.abs(x))
        if kind == "bps_of_mid":
            return x / mid * 10_000.0
    raise ValueError(kind)


def read_features(path):
    """Returns {instrument: (window_ends [n], raw [n, F])} sorted by window end."""
    cols = None
    rows = {}
    with open(path) as f:
        reader = csv.reader(f)
        header = next(reader)
        idx = {name: i for i, name in enumerate(header)}
        need = [n for n, _ in INPUTS] + ["mid_close"]
        missing = [n for n in need if n not in idx]
        if missing:
            sys.exit(f"{path}: missing columns {missing}; write it with `lobsentry features`")
        cols = [idx[n] for n in need]
        for r in reader:
            vals = [float(r[c]) if r[c] != "" else math.nan for c in cols]
            rows.setdefault(r[0], []).append((int(r[idx["window_end_ns"]]), vals))
    out = {}
    for inst, items in rows.items():
        items.sort()
        ends = np.array([e for e, _ in items], dtype=np.int64)
        raw = np.array([v for _, v in items], dtype=np.float64)
        out[inst] = (ends, raw)
    return out


def transformed(raw):
    mid = raw[:, -1]
    return np.stack([transform(kind, raw[:, j], mid) for j, (_, kind) in enumerate(INPUTS)], axis=1)


def sequences(x, seq_len):
    """All windows of `seq_len` consecutive rows: [n - seq_len + 1, seq_len, F]."""
    if len(x) < seq_len:
        return np.zeros((0, seq_len, x.shape[1]), dtype=np.float32)
    idx = np.arange(seq_len)[None, :] + np.arange(len(x) - seq_len + 1)[:, None]
    return x[idx].astype(np.float32)


def standardise(seqs, floor):
    """Per-sequence context standardisation, mirrored in ModelMeta::standardise_sequence (Rust)."""
    if floor is None or len(seqs) == 0:
        return seqs
    ctx = seqs[:, :-1, :].astype(np.float64)
    mu = ctx.mean(axis=1, keepdims=True)
    sd = np.maximum(ctx.std(axis=1, keepdims=True), floor)
    return ((seqs - mu) / sd).astype(np.float32)


def running(z, missing, span, floor, slow_span=0.0, slow_share=0.0):
    """Per-instrument running standardisation, mirrored in RunningState::apply (Rust). With
    slow_span > 0 the deviation is floored at slow_share times the root mean squared deviation from
    the running mean over the last slow_span windows (RunningNorm::slow)."""
    alpha = 2.0 / (span + 1.0)
    out = np.zeros_like(z)
    f = z.shape[1]
    m = np.zeros(f)
    v = np.zeros(f)
    slow = np.zeros(f)
    count = np.zeros(f)
    seen = np.zeros(f, dtype=bool)
    for t in range(len(z)):
        ok = ~missing[t]
        first = ok & ~seen
        upd = ok & seen
        x = z[t]
        d = x - m
        fl = floor
        if slow_span > 0:
            fl = np.maximum(floor, slow_share * np.sqrt(slow))
            beta = np.maximum(2.0 / (slow_span + 1.0), 1.0 / np.maximum(count, 1.0))
            slow = np.where(upd, slow + beta * (d * d - slow), slow)
        out[t] = np.where(upd, d / np.maximum(np.sqrt(v), fl), 0.0)
        m = np.where(first, x, np.where(upd, m + alpha * d, m))
        v = np.where(upd, (1.0 - alpha) * (v + alpha * d * d), v)
        count += ok
        seen |= ok
    return out.astype(np.float32)


def encode(t, mean, std):
    z = (t - mean) / std
    z[~np.isfinite(z)] = 0.0  # missing -> the training mean, as the Rust encoder does
    return z


class Autoencoder(nn.Module):
    """A masked transformer autoencoder over a window sequence.

    Its input is standardised per sequence by the context (every step but the last), so it models
    deviations from the instrument's own recent behaviour; the last step is replaced by a learned mask
    token, so it must be reconstructed from the context alone (copying it is impossible). The last
    step's reconstruction error is the anomaly score.
    """

    def __init__(self, features, seq_len, d_model=48, heads=4, layers=2):
        super().__init__()
        self.seq_len = seq_len
        self.proj = nn.Linear(features, d_model)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.pos = nn.Parameter(torch.randn(1, seq_len, d_model) * 0.02)
        enc = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(enc, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, features)

    def forward(self, x):
        h = self.proj(x)
        keep = torch.ones(1, self.seq_len, 1, dtype=x.dtype)
        keep[:, -1, :] = 0.0
        h = h * keep + self.mask_token * (1.0 - keep)
        return self.head(self.encoder(h + self.pos))


class Forecaster(nn.Module):
    def __init__(self, features, hidden=48):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, features)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1, :])


class MeanOf(nn.Module):
    """The mean of several networks' outputs (an ensemble exported as one graph)."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x):
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


def last_step_errors(model, x, forecast):
    """Squared error per held-out sequence and feature, `[n, features]`."""
    with torch.no_grad():
        if forecast:
            pred = model(torch.from_numpy(x[:-1])).numpy()
            err = (x[1:, -1, :] - pred) ** 2
        else:
            rec = model(torch.from_numpy(x)).numpy()
            err = (x[:, -1, :] - rec[:, -1, :]) ** 2
    return err


def reduce_errors(err, reduction, scales):
    """Per-sequence scores, as lobsentry computes them (`ModelMeta::score`)."""
    if reduction == "max_scaled":
        return (err / scales).max(axis=1)
    return err.mean(axis=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", nargs="+", required=True, help="feature CSVs of normal data")
    ap.add_argument("--out", required=True, help="package directory to write")
    ap.add_argument("--name", default="lobsentry-ae")
    ap.add_argument("--seq-len", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--members", type=int, default=1,
                    help="networks trained from seeds SEED, SEED+1, ...; the package averages their outputs")
    ap.add_argument("--holdout", type=float, default=0.2, help="share of each instrument's windows held out (the last ones)")
    ap.add_argument("--window-seconds", type=float, default=1.0)
    ap.add_argument("--alerts-per-instrument-hour", type=float, default=1.0)
    ap.add_argument("--reduction", choices=["max_scaled", "mean"], default="max_scaled",
                    help="score = max over features of squared error / its held-out mean (default), or the mean squared error")
    ap.add_argument("--scale-power", type=float, default=0.7,
                    help="max_scaled divides each feature's squared error by (its held-out mean) ** this: 1 weighs "
                         "every feature by its own typical error, 0 not at all (the noisiest features then dominate)")
    ap.add_argument("--forecast", action="store_true", help="train the LSTM forecaster instead")
    ap.add_argument("--max-relative-error", type=float, default=0.95,
                    help="refuse to write a model whose held-out squared error is above this share of the running-mean predictor's")
    ap.add_argument("--context-floor", type=float, default=0.1, help="floor of the per-sequence context std")
    ap.add_argument("--no-context", action="store_true", help="global normalisation only")
    # Adds and top-of-book depth are left out by default: they are the noisiest inputs (their
    # reconstruction errors are the widest on held-out normal data) and add false alarms through the
    # max over features. Returns and realized volatility stay in (price moves carry flash crashes and
    # liquidity withdrawals); the running floor keeps their mostly-zero history from making every
    # tick move look extreme.
    ap.add_argument("--drop", nargs="*", default=["adds", "bid_depth1", "ask_depth1"], help="input features to leave out")
    ap.add_argument("--running-span", type=float, default=60.0, help="per-instrument running standardisation span (0 = off)")
    ap.add_argument("--running-floor", type=float, default=0.05)
    ap.add_argument("--running-floor-for", nargs="*", default=[], metavar="NAME=FLOOR",
                    help="per-feature running floors overriding --running-floor (e.g. log_return=0.25)")
    ap.add_argument("--running-slow-span", type=float, default=1800.0,
                    help="span of the instrument-relative floor of the running deviation, in windows (0 = off; RunningNorm::slow)")
    ap.add_argument("--running-slow-share", type=float, default=0.15,
                    help="the running deviation is at least this share of the slow one")
    ap.add_argument("--log-counts", action="store_true", help="log-transform counts, volumes and depths (default: raw, the running standardisation scales them)")
    args = ap.parse_args()
    global INPUTS
    INPUTS = [i for i in INPUTS if i[0] not in args.drop]
    if not args.log_counts:
        INPUTS = [(n, "identity" if k == "log1p" else k) for n, k in INPUTS]

    np.random.seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    series = []  # (transformed features, cut) per instrument and file
    for path in args.features:
        for inst, (_, raw) in read_features(path).items():
            t = transformed(raw)
            series.append((t, int(len(t) * (1 - args.holdout))))
    all_train = np.concatenate([t[:cut] for t, cut in series])
    mean = np.nanmean(np.where(np.isfinite(all_train), all_train, np.nan), axis=0)
    std = np.nanstd(np.where(np.isfinite(all_train), all_train, np.nan), axis=0)
    std = np.where(std > 1e-9, std, 1.0)
    mean = np.where(np.isfinite(mean), mean, 0.0)

    floor = None if args.no_context or args.running_span > 0 else args.context_floor
    overrides = dict(kv.split("=", 1) for kv in args.running_floor_for)
    unknown = set(overrides) - {n for n, _ in INPUTS}
    if unknown:
        sys.exit(f"--running-floor-for: {sorted(unknown)} are not input features")
    floors = np.array([float(overrides.get(n, args.running_floor)) for n, _ in INPUTS])

    def prep(p):
        """Encoded windows of one instrument's whole series (running statistics carry across the cut)."""
        z = encode(p, mean, std)
        if args.running_span > 0:
            missing = ~np.isfinite((p - mean) / std)
            z = running(z.astype(np.float64), missing, args.running_span, floors,
                        args.running_slow_span, args.running_slow_share)
        return z

    encoded = [(prep(t), cut) for t, cut in series]

    def seqs(parts):
        s = [standardise(sequences(z, args.seq_len), floor) for z in parts]
        s = [x for x in s if len(x)]
        return np.concatenate(s) if s else np.zeros((0, args.seq_len, len(INPUTS)), np.float32)

    train = seqs([z[:cut] for z, cut in encoded])
    hold_parts = [standardise(sequences(z[cut:], args.seq_len), floor) for z, cut in encoded]
    hold = np.concatenate([h for h in hold_parts if len(h)])
    print(f"train sequences {len(train)}, held-out {len(hold)}, features {len(INPUTS)}", file=sys.stderr)

    f = len(INPUTS)
    x_train = torch.from_numpy(train)

    def fit(seed):
        """One network trained from `seed`; its per-epoch losses."""
        torch.manual_seed(seed)
        model = Forecaster(f) if args.forecast else Autoencoder(f, args.seq_len)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
        history = []
        for epoch in range(args.epochs):
            model.train()
            perm = torch.randperm(len(x_train))
            total = 0.0
            for i in range(0, len(perm), args.batch):
                xb = x_train[perm[i : i + args.batch]]
                if args.forecast:
                    if len(xb) < 2:
                        continue
                    loss = ((model(xb[:, :-1, :]) - xb[:, -1, :]) ** 2).mean()
                else:
                    # The masked last step carries the signal; the visible steps keep the head calibrated.
                    err = nn.functional.huber_loss(model(xb), xb, reduction="none", delta=2.0)
                    loss = err[:, -1, :].mean() + 0.1 * err[:, :-1, :].mean()
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                total += loss.item() * len(xb)
            sched.step()
            model.eval()
            with torch.no_grad():
                if args.forecast:
                    hold_loss = float(((model(torch.from_numpy(hold[:, :-1, :])) - torch.from_numpy(hold[:, -1, :])) ** 2).mean())
                else:
                    rec = model(torch.from_numpy(hold))
                    hold_loss = float(((rec[:, -1, :] - torch.from_numpy(hold[:, -1, :])) ** 2).mean())
            history.append({"epoch": epoch + 1, "train_mse": total / len(x_train), "holdout_mse": hold_loss})
            print(f"seed {seed} epoch {epoch + 1}: train {total / len(x_train):.4f} held-out {hold_loss:.4f}", file=sys.stderr)
        return model, history

    fitted = [fit(args.seed + k) for k in range(args.members)]
    # Several networks from different seeds: their outputs averaged in one graph (one ONNX Runtime
    # call per batch), which lowers the variance a single network's initialisation adds to its errors.
    model = fitted[0][0] if args.members == 1 else MeanOf([m for m, _ in fitted])
    history = fitted[0][1] if args.members == 1 else [h for _, h in fitted]

    # Held-out normal scores -> threshold for at most N false alarms per instrument-hour.
    model.eval()
    if args.forecast:
        # The forecaster sees L-1 windows in training; at run time it reads the full sequence of L and
        # predicts the next window, so it is exported over sequences of L.
        errors = np.concatenate([last_step_errors(model, h, True) for h in hold_parts if len(h) > 1])
    else:
        errors = last_step_errors(model, hold, False)
    # Against the running-mean predictor: on running-standardised inputs it predicts 0 for the last
    # window, so its squared error is the last window's value squared.
    if args.forecast:
        targets = np.concatenate([h[1:, -1, :] for h in hold_parts if len(h) > 1])
    else:
        targets = hold[:, -1, :]
    base = (targets.astype(np.float64) ** 2).mean(axis=0)
    ratio = errors.mean(axis=0) / np.maximum(base, 1e-12)
    overall = float(errors.mean() / max(float((targets.astype(np.float64) ** 2).mean()), 1e-12))
    print("held-out squared error relative to the running-mean predictor (1 = no better):", file=sys.stderr)
    for (name, _), r in zip(INPUTS, ratio):
        print(f"  {name:<18} {r:.3f}", file=sys.stderr)
    print(f"  {'all':<18} {overall:.3f}", file=sys.stderr)
    if overall > args.max_relative_error:
        sys.exit(f"the model does not clearly beat the running mean: {overall:.3f} > --max-relative-error {args.max_relative_error}")
    vs_running_mean = {"overall": overall, "per_feature": {n: float(r) for (n, _), r in zip(INPUTS, ratio)}}
    # Typical squared error per feature on held-out normal data (floored so a feature the network
    # reconstructs perfectly cannot make every tiny error infinite), raised to --scale-power: a partial
    # correction, so that features whose held-out errors are wide (heavy-tailed real days) still count.
    scales = (np.maximum(errors.mean(axis=0), 1e-3) ** args.scale_power).astype(np.float64)
    scores = reduce_errors(errors, args.reduction, scales)
    windows_per_hour = 3600.0 / args.window_seconds
    q = 1.0 - args.alerts_per_instrument_hour / windows_per_hour
    threshold = float(np.quantile(scores, q))
    print(f"threshold {threshold:.4f} = held-out quantile {q:.6f} of {len(scores)} normal windows", file=sys.stderr)

    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "model.onnx")
    dummy = torch.from_numpy(hold[:4])
    output_name = "forecast" if args.forecast else "reconstruction"
    torch.onnx.export(
        model,
        (dummy,),
        onnx_path,
        input_names=["features"],
        output_names=[output_name],
        dynamic_axes={"features": {0: "batch"}, output_name: {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    # ONNX Runtime must reproduce PyTorch on held-out data.
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    sample = hold[: min(len(hold), 2048)]
    ort_out = sess.run(None, {"features": sample})[0]
    with torch.no_grad():
        torch_out = model(torch.from_numpy(sample)).numpy()
    max_diff = float(np.abs(ort_out - torch_out).max())
    print(f"ONNX Runtime vs PyTorch on {len(sample)} held-out sequences: max |diff| {max_diff:.2e}", file=sys.stderr)
    if max_diff > 1e-3:
        sys.exit(f"ONNX Runtime does not reproduce PyTorch (max |diff| {max_diff})")

    meta = {
        "name": args.name,
        "version": datetime.date.today().isoformat(),
        "feature_schema_version": FEATURE_SCHEMA_VERSION,
        "features": [
            {"name": n, "transform": k, "mean": float(m), "std": float(s)} for (n, k), m, s in zip(INPUTS, mean, std)
        ],
        "sequence_length": args.seq_len,
        "window_ns": int(round(args.window_seconds * 1e9)),
        "input_name": "features",
        "output_name": output_name,
        "mode": "forecast" if args.forecast else "reconstruction",
        "score_on": "last_step",
        "threshold": threshold,
        "reduction": args.reduction,
        "error_scales": [float(v) for v in scales] if args.reduction == "max_scaled" else None,
        "context_std_floor": floor,
        "running": (
            {"span": args.running_span, "floor": args.running_floor}
            | ({"floors": [float(v) for v in floors]} if overrides else {})
            | ({"slow": {"span": args.running_slow_span, "share": args.running_slow_share}}
               if args.running_slow_span > 0 else {})
        ) if args.running_span > 0 else None,
        "calibration": {
            "method": "quantile of held-out normal last-step scores",
            "quantile": q,
            "target_false_alarms_per_instrument_hour": args.alerts_per_instrument_hour,
            "window_seconds": args.window_seconds,
            "normal_windows": int(len(scores)),
        },
        "training": {
            "features_files": [os.path.basename(p) for p in args.features],
            "train_sequences": int(len(train)),
            "holdout_sequences": int(len(hold)),
            "holdout_share": args.holdout,
            "epochs": args.epochs,
            "seed": args.seed,
            "members": args.members,
            "torch": torch.__version__,
            "architecture": ("LSTM forecaster (48)" if args.forecast else "masked transformer autoencoder: context-centred input, last step masked, d_model 48, 4 heads, 2 encoder layers")
            + (f"; the mean of {args.members} such networks' outputs (seeds {args.seed}-{args.seed + args.members - 1})" if args.members > 1 else ""),
        },
        "metrics": {"history": history, "onnx_vs_torch_max_abs_diff": max_diff, "vs_running_mean": vs_running_mean},
    }
    with open(os.path.join(args.out, "model.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(f"wrote {onnx_path} ({os.path.getsize(onnx_path)} bytes) and model.json", file=sys.stderr)


if __name__ == "__main__":
    main()
