#!/usr/bin/env python3
"""Stacked bar charts of train_vlm --stage profile's CSV(s): where the time to first token
goes (vision encoder, token reduction, projector, LM prefill, first token) and where the
FLOPs go, one bar per (file, batch), the decode step's time noted on each bar.

    /usr/bin/python3 data_scripts/vlm_profile_plot.py out/vlm_profile.csv [pool.csv ...] -o out/vlm_profile.png

Rows of a CSV are grouped by (batch, reduce, ratio); the figure has one row of two panels
(milliseconds, GFLOP) per batch size, so a batch of 1 and the eval batch are not drawn on
one scale. Several CSVs (e.g. --reduce none, pool, random) give bars side by side.
"""
import argparse
import csv
import os
import sys

try:
    import matplotlib
except ImportError:
    sys.exit("error: matplotlib is missing: apt-get install python3-matplotlib (and run /usr/bin/python3)")

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COMPONENTS = ["vision encoder", "token reduction", "projector", "LM prefill", "first token"]
COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"]
NEEDED = {"batch", "reduce", "ratio", "image_tokens", "patches", "component", "ms_median", "gflop"}


def read_profiles(path):
    """{(batch, reduce, ratio, image_tokens, patches): {component: (ms, gflop)}} in file order."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        sys.exit(f"error: cannot read {path}: {e.strerror}")
    if not rows:
        sys.exit(f"error: {path} has no rows (a CSV of train_vlm --stage profile?)")
    missing = NEEDED - set(rows[0].keys())
    if missing:
        sys.exit(f"error: {path} lacks the columns {', '.join(sorted(missing))} (a CSV of train_vlm --stage profile?)")
    out = {}
    for i, r in enumerate(rows, start=2):
        try:
            key = (int(r["batch"]), r["reduce"], float(r["ratio"]), int(r["image_tokens"]), int(r["patches"]))
            out.setdefault(key, {})[r["component"]] = (float(r["ms_median"]), float(r["gflop"]))
        except (ValueError, TypeError) as e:
            sys.exit(f"error: {path} line {i}: {e}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", nargs="+", help="CSV files written by train_vlm --stage profile")
    ap.add_argument("-o", "--output", default="out/vlm_profile.png", help="the PNG to write")
    args = ap.parse_args()

    bars = []  # (batch, label, {component: (ms, gflop)})
    for path in args.csv:
        name = os.path.splitext(os.path.basename(path))[0]
        for (batch, reduce, ratio, tokens, patches), comps in read_profiles(path).items():
            setting = reduce + (f" {ratio:g}" if reduce != "none" else "")
            label = (f"{name}\n" if len(args.csv) > 1 and name != reduce else "") + f"{setting}\n{tokens}/{patches} image tokens"
            bars.append((batch, label, comps))
    batches = sorted({b for b, _, _ in bars})
    fig, axes = plt.subplots(len(batches), 2, figsize=(max(8, 2.2 * len(bars) / len(batches) + 4), 4.2 * len(batches)), squeeze=False)
    for row, batch in enumerate(batches):
        mine = [(label, comps) for b, label, comps in bars if b == batch]
        x = list(range(len(mine)))
        for col, (which, unit) in enumerate([(0, "ms"), (1, "GFLOP")]):
            ax = axes[row][col]
            bottom = [0.0] * len(mine)
            for comp, colour in zip(COMPONENTS, COLOURS):
                vals = [comps.get(comp, (0.0, 0.0))[which] for _, comps in mine]
                ax.bar(x, vals, bottom=bottom, color=colour, label=comp, width=0.6)
                bottom = [b + v for b, v in zip(bottom, vals)]
            for i, (_, comps) in enumerate(mine):
                ttft = comps.get("time to first token")
                dec = comps.get("decode step")
                note = []
                if which == 0 and ttft:
                    note.append(f"TTFT {ttft[0]:.3g} ms")
                if dec:
                    note.append(f"decode {dec[which]:.3g} {unit}")
                if note:
                    ax.annotate("\n".join(note), (i, bottom[i]), ha="center", va="bottom", fontsize=7,
                                xytext=(0, 2), textcoords="offset points")
            ax.set_xticks(x)
            ax.set_xticklabels([label for label, _ in mine], fontsize=7)
            ax.set_ylabel(unit + (" (median)" if which == 0 else " (analytic, 1 multiply-add = 2)"))
            ax.set_title(f"batch {batch}: {'time' if which == 0 else 'FLOPs'} to the first token, by component", fontsize=9)
            ax.set_ylim(0, max(bottom + [1e-12]) * 1.25)
            ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(COMPONENTS), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (4.2 * len(batches))))
    out_dir = os.path.dirname(args.output)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
