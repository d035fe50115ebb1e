#!/usr/bin/python3
"""Tabulates and plots the LoRA study (data_scripts/lora_study.sh) from its logs.

usage: lora_study.py OUT_DIR DEVICE_NAME
Reads OUT_DIR/<run>.jsonl (the summary line and the evaluations of each
fine-tuning run) and the checkpoint sizes; writes OUT_DIR/results.csv,
OUT_DIR/results.md and OUT_DIR/lora_study.png.
"""
import json
import os
import sys
from study_io import pyplot_or_none, write_csv, write_markdown

RUNS = [("full", "full fine-tuning", "-")] + [
    (f"{t}_r{r}", label, str(r)) for r in (4, 16) for t, label in
    (("in_proj", "LoRA in_proj"), ("in_proj_x", "LoRA in_proj x half (LoRAp(X))"),
     ("out_proj", "LoRA out_proj"), ("all", "LoRA all linear layers"))]


def read_log(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    summary = [r for r in rows if "summary" in r]
    evals = [r for r in rows if "val_loss" in r and "step" in r]
    if not summary or not evals:
        sys.exit(f"error: {path} has no summary or no evaluation: did the run finish?")
    return summary[-1], evals


def main():
    out, device = sys.argv[1], sys.argv[2]
    results = []
    base_new = base_old = None
    for name, label, rank in RUNS:
        s, evals = read_log(os.path.join(out, name + ".jsonl"))
        first = evals[0]
        if first["step"] == 0:  # the base model before fine-tuning
            base_new, base_old = first["val_loss"], first["also_val_loss"]
        results.append({
            "run": name, "method": label, "rank": rank,
            "trainable_params": s["trainable"], "params": s["params"],
            "trainable_pct": 100.0 * s["trainable"] / s["params"],
            "optimizer_state_mib": s["optimizer_bytes"] / 2**20,
            "peak_mem_mib": s["peak_mib"], "mem_above_context_mib": s["model_mib"],
            "ms_per_step": s["step_ms"],
            "fortunes_val_loss": s["final_val_loss"], "kjv_val_loss_after": s["final_also_val_loss"],
            "checkpoint_bytes": os.path.getsize(os.path.join(out, name + ".ckpt")),
        })
    base_ckpt = os.path.getsize(os.path.join(out, "base.ckpt"))
    write_csv(os.path.join(out, "results.csv"), results)
    lines = [f"Device: {device}. Base model before fine-tuning: fortunes val loss {base_new:.3f}, "
             f"KJV val loss {base_old:.3f} (nats/byte). Full checkpoint with AdamW state: {base_ckpt / 2**20:.1f} MiB.", "",
             "| method | rank | trainable params | % | optimizer state MiB | peak memory MiB (measured) | above the process before the model MiB "
             "| ms/step | fortunes val loss | KJV val loss after (forgetting) | checkpoint file |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        size = r["checkpoint_bytes"]
        size_s = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"
        lines.append(f"| {r['method']} | {r['rank']} | {r['trainable_params']:,} | {r['trainable_pct']:.2f} | "
                     f"{r['optimizer_state_mib']:.2f} | {r['peak_mem_mib']:.0f} | {r['mem_above_context_mib']:.0f} | "
                     f"{r['ms_per_step']:.1f} | {r['fortunes_val_loss']:.3f} | {r['kjv_val_loss_after']:.3f} "
                     f"(+{r['kjv_val_loss_after'] - base_old:.3f}) | {size_s} |")
    write_markdown(os.path.join(out, "results.md"), lines)
    plt = pyplot_or_none()
    if plt is None:
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5))
    # each run's path through (learning, forgetting): one point per evaluation, from the base model
    for r in results:
        _, evals = read_log(os.path.join(out, r["run"] + ".jsonl"))
        xs = [e["val_loss"] for e in evals if e.get("also_val_loss") is not None]
        ys = [e["also_val_loss"] for e in evals if e.get("also_val_loss") is not None]
        style = "-" if r["run"] == "full" else ("--" if r["rank"] == "4" else ":")
        line, = a1.plot(xs, ys, style, marker="o", ms=3, lw=1.2)
        a1.annotate(r["run"], (xs[-1], ys[-1]), fontsize=8, xytext=(4, 3), textcoords="offset points", color=line.get_color())
    a1.axhline(base_old, ls="--", c="gray", lw=1)
    a1.text(a1.get_xlim()[0], base_old, " KJV loss before fine-tuning", va="bottom", fontsize=8, color="gray")
    a1.set_xlabel("fortunes val loss after fine-tuning (learning)")
    a1.set_ylabel("KJV val loss after fine-tuning (forgetting)")
    a1.set_title("learning vs forgetting during fine-tuning (lower-left is better)")
    names = [r["run"] for r in results]
    a2.barh(names, [r["trainable_params"] for r in results], color="tab:blue")
    a2.set_xscale("log")
    a2.set_xlabel("trainable parameters (log)")
    for i, r in enumerate(results):
        a2.text(r["trainable_params"], i, f" {r['peak_mem_mib']:.0f} MiB, {r['ms_per_step']:.0f} ms", va="center", fontsize=8)
    a2.set_title(f"cost: trainable params; peak memory and step time ({device})")
    a2.invert_yaxis()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "lora_study.png"), dpi=110)
    print(f"wrote {out}/results.csv, results.md, lora_study.png")


if __name__ == "__main__":
    main()
