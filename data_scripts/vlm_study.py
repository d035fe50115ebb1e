#!/usr/bin/env python3
"""The visual-token reduction study's tables and plots (data_scripts/vlm_study.sh runs it).

Reads OUT/runs/{method}_{ratio}.eval.jsonl (exact match per question type), .logits.bin (the
logits of every answer position, teacher-forced: int32 V, then float32 rows of V) and
.profile.csv (train_vlm --stage profile), and writes
  OUT/study.csv           one row per (method, ratio)
  OUT/study.md            the same as a markdown table
  OUT/acc_vs_flops.png    accuracy (all, and where) against the LM prefill's analytic GFLOP
  OUT/acc_vs_latency.png  accuracy (all, and where) against the measured time to first token
KL(p_full || p_reduced) and top-1 agreement compare each run's answer-token distributions with
the none run's (the same questions in the same order): KL is the mean over answer positions of
sum_v p_full(v) (log p_full(v) - log p_red(v)); agreement the fraction of positions whose argmax
is the same.
Usage: vlm_study.py OUT
"""
import csv, glob, json, os, sys
from study_io import pyplot_or_none, write_csv, write_markdown

import numpy as np


def load_logits(path):
    v = int(np.fromfile(path, dtype=np.int32, count=1)[0])
    x = np.fromfile(path, dtype=np.float32, offset=4)
    if v <= 0 or x.size % v:
        sys.exit(f"error: {path}: {x.size} floats are not rows of {v}")
    return x.reshape(-1, v).astype(np.float64)


def log_softmax(x):
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def profile_row(path, batch, component):
    for r in csv.DictReader(open(path)):
        if r["batch"] == str(batch) and r["component"] == component:
            return r
    sys.exit(f"error: {path} has no row for batch {batch}, {component}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    runs = []
    for ev in sorted(glob.glob(os.path.join(out, "runs", "*.eval.jsonl"))):
        name = os.path.basename(ev)[: -len(".eval.jsonl")]
        method, ratio = name.rsplit("_", 1)
        lines = [json.loads(l) for l in open(ev) if l.strip()]
        if not lines:
            sys.exit(f"error: {ev} is empty")
        runs.append({"method": method, "ratio": float(ratio), "name": name, "eval": lines[-1]})
    if not runs:
        sys.exit(f"error: no runs in {out}/runs")
    base = [r for r in runs if r["method"] == "none"]
    if not base:
        sys.exit("error: the study needs the none run (the reference of KL and agreement)")
    ref = log_softmax(load_logits(os.path.join(out, "runs", base[0]["name"] + ".logits.bin")))
    order = {m: i for i, m in enumerate(["none", "pool", "random", "uniform", "fastv", "salient", "tome"])}
    runs.sort(key=lambda r: (order.get(r["method"], 99), r["ratio"]))
    rows = []
    for r in runs:
        e = r["eval"]
        lp = log_softmax(load_logits(os.path.join(out, "runs", r["name"] + ".logits.bin")))
        if lp.shape != ref.shape:
            sys.exit(f"error: {r['name']}: {lp.shape} answer logits, none has {ref.shape}")
        kl = float(np.mean(np.sum(np.exp(ref) * (ref - lp), axis=1)))
        agree = float(np.mean(ref.argmax(1) == lp.argmax(1)))
        prof = os.path.join(out, "runs", r["name"] + ".profile.csv")
        pre1 = profile_row(prof, 1, "LM prefill")
        batches = sorted({int(x["batch"]) for x in csv.DictReader(open(prof))})
        bmax = batches[-1]
        row = {
            "method": r["method"], "ratio": r["ratio"], "image_tokens": int(e.get("image_tokens", pre1["image_tokens"])),
            "accuracy": e["accuracy"], "val_loss": e["val_loss"],
        }
        for t in ("what", "where", "colour", "count", "exists"):
            row["acc_" + t] = e.get("acc_" + t, float("nan"))
        row.update({
            "kl_full_reduced": kl, "top1_agreement": agree,
            "lm_prefill_gflop": float(pre1["gflop"]),
            "vision_gflop": float(profile_row(prof, 1, "vision encoder")["gflop"]),
            "ttft_gflop": float(profile_row(prof, 1, "time to first token")["gflop"]),
            "decode_gflop": float(profile_row(prof, 1, "decode step")["gflop"]),
            "prefill_ms": float(pre1["ms_median"]),
            "ttft_ms": float(profile_row(prof, 1, "time to first token")["ms_median"]),
            "decode_ms": float(profile_row(prof, 1, "decode step")["ms_median"]),
            "batch": bmax,
            "ttft_ms_batch": float(profile_row(prof, bmax, "time to first token")["ms_median"]),
            "decode_ms_batch": float(profile_row(prof, bmax, "decode step")["ms_median"]),
            "device": pre1["device"],
        })
        rows.append(row)
    write_csv(os.path.join(out, "study.csv"), rows)
    b = rows[0]["batch"]
    md = [f"Device: {rows[0]['device']}. Accuracy: exact match on the test questions (teacher-forced greedy); "
          f"KL and top-1: the answer tokens against none; LM GFLOP: the prefill's, ViT GFLOP: the vision encoder's (analytic, batch 1; "
          f"tome merges inside the encoder); times: medians, batch 1 "
          f"(TTFT also at batch {b}).", "",
          "| method | R | image tokens | all | what | where | colour | count | exists | KL(full‖red) | top-1 agree | LM GFLOP | prefill ms | TTFT ms | decode ms | TTFT ms (batch %d) | ViT GFLOP |" % b,
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    pc = lambda x: "–" if x != x else f"{100 * x:.1f}%"
    for r in rows:
        md.append(f"| {r['method']} | {r['ratio']:g} | {r['image_tokens']} | {pc(r['accuracy'])} | {pc(r['acc_what'])} | "
                  f"{pc(r['acc_where'])} | {pc(r['acc_colour'])} | {pc(r['acc_count'])} | {pc(r['acc_exists'])} | "
                  f"{r['kl_full_reduced']:.4f} | {100 * r['top1_agreement']:.1f}% | {r['lm_prefill_gflop']:.5f} | "
                  f"{r['prefill_ms']:.3f} | {r['ttft_ms']:.3f} | {r['decode_ms']:.3f} | {r['ttft_ms_batch']:.3f} | {r['vision_gflop']:.5f} |")
    write_markdown(os.path.join(out, "study.md"), md)
    plt = pyplot_or_none()
    if plt is None:
        return
    for xkey, xlabel, fname in (("lm_prefill_gflop", "LM prefill GFLOP (analytic, batch 1)", "acc_vs_flops.png"),
                                ("ttft_ms", "time to first token, ms (batch 1, median)", "acc_vs_latency.png")):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, ykey, title in ((axes[0], "accuracy", "exact match, all questions"), (axes[1], "acc_where", "exact match, where")):
            for m in sorted({r["method"] for r in rows}, key=lambda m: order.get(m, 99)):
                pts = sorted([(r[xkey], r[ykey], r["ratio"]) for r in rows if r["method"] == m])
                xs, ys = [p[0] for p in pts], [100 * p[1] for p in pts]
                ax.plot(xs, ys, "o-" if len(pts) > 1 else "s", label=m)
                for x, y, rr in pts:
                    ax.annotate(f"{rr:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("%")
            ax.set_title(title)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, fname), dpi=120)
        plt.close(fig)
    print(f"wrote {out}/study.csv, study.md, acc_vs_flops.png, acc_vs_latency.png")


if __name__ == "__main__":
    main()
