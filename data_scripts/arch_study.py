"""Tabulates and plots make arch-study's runs: python3 arch_study.py OUT_DIR CARD.

Reads OUT_DIR/{mamba1,mamba2,transformer,hybrid}.jsonl and .log (train_mamba's JSONL log and
stdout), writes OUT_DIR/results.csv, results.md and arch_study.png (validation loss against
tokens seen, one line per model).
"""
import json, os, re, sys
from study_io import pyplot_or_none, write_csv, write_markdown

RUNS = [("mamba1", "Mamba-1", "M1 x 8"), ("mamba2", "Mamba-2", "M2 x 8"),
        ("transformer", "Transformer", "(A,F) x 4"), ("hybrid", "Hybrid", "M2,M2,A,F,M2,M2,A,F")]


def read_run(out, name):
    rows = [json.loads(l) for l in open(os.path.join(out, name + ".jsonl"))]
    log = open(os.path.join(out, name + ".log")).read()
    summary = [r for r in rows if "summary" in r][-1]
    vals = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    m = re.search(r"batch (\d+) x (\d+) tokens", log)
    tokens_per_step = int(m.group(1)) * int(m.group(2)) if m else 0
    return summary, vals, tokens_per_step


def main():
    out, card = sys.argv[1], sys.argv[2]
    table = []
    curves = {}
    for name, label, pattern in RUNS:
        summary, vals, tps = read_run(out, name)
        assert vals, f"{name}: no validation loss in its log"
        curves[label] = [(s * tps, v) for s, v in vals]
        steps = vals[-1][0]
        table.append({"model": label, "layers": pattern, "params_M": summary["params"] / 1e6, "steps": steps,
                      "tokens_M": steps * tps / 1e6, "val_loss": vals[-1][1], "best_val_loss": min(v for _, v in vals),
                      "tok_per_s": summary["tok_per_s"], "step_ms": summary["step_ms"], "peak_mib": summary["peak_mib"]})
    write_csv(os.path.join(out, "results.csv"), table)
    lines = [f"KJV bytes, same recipe and tokens for every model ({card})", "",
             "| model | layers | params | tokens | val loss (nats/byte) | best | tokens/s | ms/step | peak memory |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['model']} | {r['layers']} | {r['params_M']:.2f}M | {r['tokens_M']:.2f}M | {r['val_loss']:.4f} | "
                     f"{r['best_val_loss']:.4f} | {r['tok_per_s'] / 1000:.1f}k | {r['step_ms']:.1f} | {r['peak_mib']:.0f} MiB |")
    write_markdown(os.path.join(out, "results.md"), lines)
    plt = pyplot_or_none()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in curves.items():  # from the first evaluation after step 0 (the initial ~5.6 flattens the rest)
        pts = [(t, v) for t, v in pts if t > 0]
        ax.plot([t / 1e6 for t, _ in pts], [v for _, v in pts], marker="o", ms=3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("tokens seen (M)")
    ax.set_ylabel("validation loss (nats/byte, log scale)")
    ax.set_title(f"KJV, about {table[0]['params_M']:.0f}M parameters each ({card})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "arch_study.png"), dpi=120)
    print("wrote", os.path.join(out, "arch_study.png"))


if __name__ == "__main__":
    main()
