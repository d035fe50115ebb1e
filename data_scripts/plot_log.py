#!/usr/bin/env python3
"""Plot train_mamba's JSONL log(s) as a PNG: training loss (smoothed) and
validation loss against the step.

    /usr/bin/python3 data_scripts/plot_log.py out/kjv.jsonl [more.jsonl ...] -o out/kjv_loss.png
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_log(path):
    train, val = [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                sys.exit(f"error: {path}:{n} is not a JSON line")
            if "loss" in row:
                train.append((row["step"], row["loss"]))
            if "val_loss" in row:
                val.append((row["step"], row["val_loss"]))
    return train, val


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
    for path in args.logs:
        train, val = read_log(path)
        if train:
            ax.plot([s for s, _ in train], smooth([l for _, l in train]), label=f"{path} train (smoothed)", alpha=0.8)
        if val:
            ax.plot([s for s, _ in val], [l for _, l in val], "o-", label=f"{path} val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
