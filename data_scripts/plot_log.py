#!/usr/bin/env python3
"""Plot train_mamba's JSONL log(s) as a PNG: training loss (smoothed) and
validation loss against the step.

    /usr/bin/python3 data_scripts/plot_log.py out/kjv.jsonl [more.jsonl ...] -o out/kjv_loss.png
"""
import argparse
import json
import math
import sys

try:
    import matplotlib
except ImportError:
    sys.exit("error: matplotlib is missing: apt-get install python3-matplotlib (and run /usr/bin/python3)")

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def warn(msg):
    print(f"warning: {msg}", file=sys.stderr)


def number(v):
    """A finite float, or None: the trainer writes NaN as null."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def read_log(path):
    """Returns (train, val): sorted (step, value) lists. Bad lines are skipped with
    a warning, never fatal: a log cut off mid-line by a crash still plots. A step
    logged twice (a resumed run appends to the log) keeps its last value."""
    train, val = {}, {}
    bad, missing = 0, 0
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError as e:
        sys.exit(f"error: cannot read {path}: {e.strerror}")
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if isinstance(row, dict) and "summary" in row:  # the run's last line (timings, final losses): no step
                continue
            if not isinstance(row, dict) or number(row.get("step")) is None:
                bad += 1
                if bad <= 3:
                    warn(f"{path}:{n} is not a JSON log line, skipped: {line.strip()[:60]!r}")
                continue
            step = int(row["step"])
            for key, out in (("loss", train), ("val_loss", val)):
                if key in row:
                    v = number(row[key])
                    if v is None:
                        missing += 1
                    else:
                        out[step] = v
    if bad > 3:
        warn(f"{path}: {bad} lines skipped in all")
    if missing:
        warn(f"{path}: {missing} loss values were null or not numbers (NaN?), left out")
    return sorted(train.items()), sorted(val.items())


def smooth(values, k=20):
    out, acc = [], []
    for v in values:
        acc.append(v)
        acc = acc[-k:]
        out.append(sum(acc) / len(acc))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="+", help="JSONL logs written by train_mamba --log")
    ap.add_argument("-o", "--out", default="loss.png", help="output PNG")
    args = ap.parse_args()
    fig, ax = plt.subplots(figsize=(8, 5))
    plotted = 0
    for path in args.logs:
        train, val = read_log(path)
        if train:
            ax.plot([s for s, _ in train], smooth([l for _, l in train]), label=f"{path} train (smoothed)", alpha=0.8)
        if val:
            ax.plot([s for s, _ in val], [l for _, l in val], "o-", label=f"{path} val")
        if not val:
            warn(f"{path}: no validation loss in the log")
        plotted += len(train) + len(val)
    if plotted == 0:
        warn("no loss values to plot: writing an empty figure")
        ax.text(0.5, 0.5, "no loss values in the log", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
