#!/usr/bin/env python3
"""The ViT classifier study (issue 11, item 4; data_scripts/vit_study.sh runs it): two commands.

  vit_study.py prepare --mnist DIR --out DIR [--size 32] [--n-train N] [--n-test N]
      Single Fashion-MNIST items as a VLM data folder for `train_vlm --stage classify`: OUT/train.vlm
      (the train split) and OUT/test.vlm (t10k), in the shard format of src/vlm_data.h (README, "File
      formats"). Each 28x28 item is centred on a black SIZE x SIZE canvas (offset (SIZE-28)/2, as the
      scenes' 32 px cells hold their items), grey copied into R, G and B. Each record is one image with a
      one-word caption, its class; the vocabulary is the 6 special tokens, then the class names in
      Fashion-MNIST's label order (t-shirt trouser pullover dress coat sandal shirt sneaker bag boot),
      so class k is word 6 + k. --n-train / --n-test take the first N items of a split (0: all).

  vit_study.py report WORK [--out OUT]
      Reads WORK/runs/{method}_{ratio}.jsonl (the last line of each: `train_vlm --stage eval` of the
      classifier, with its accuracy, patch_tokens, gflop_per_image, images_per_s, ...) and writes (OUT:
      WORK when not given)
        OUT/study.csv   one row per (method, ratio)
        OUT/study.md    the same as a markdown table
        OUT/study.png   accuracy against GFLOP per image, and against images/s
"""
import argparse, glob, gzip, json, os, struct, sys
from study_io import pyplot_or_none, write_csv, write_markdown

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
SPECIAL = ["<pad>", "<bos>", "<eos>", "<image>", "<unk>", "<sep>"]
SHARD_MAGIC, SHARD_VERSION, HEADER_INTS = 20261127, 1, 256


def read_idx(path, dims):
    """An IDX file of unsigned bytes (gzipped or not) as (shape, bytes)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    if magic != 0x800 + dims:
        sys.exit(f"error: {path}: magic {magic:#x}, expected {0x800 + dims:#x} (IDX unsigned bytes, {dims} dimensions)")
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    body = data[4 + 4 * dims:]
    n = 1
    for d in shape:
        n *= d
    if len(body) != n:
        sys.exit(f"error: {path}: {len(body)} bytes of data, the header says {n}")
    return shape, body


def find(mnist, name):
    for p in (os.path.join(mnist, name + ".gz"), os.path.join(mnist, name)):
        if os.path.exists(p):
            return p
    sys.exit(f"error: no {name}[.gz] in {mnist} (Debian: apt-get install dataset-fashion-mnist)")


def write_shard(path, images, labels, size):
    """images: uint8 array (n, size, size, 3); labels: ints in [0, 10)."""
    import numpy as np
    n = len(labels)
    vocab = "".join(w + "\n" for w in SPECIAL + CLASSES).encode()
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:10] = [SHARD_MAGIC, SHARD_VERSION, n, size, size, 3, n, len(SPECIAL) + len(CLASSES), len(vocab), n]
    recs = np.zeros((n, 8), dtype="<i4")
    recs[:, 0] = np.arange(n)          # image
    recs[:, 1] = -1                     # no question
    recs[:, 2] = np.arange(n)          # caption_begin: token i of the pool
    recs[:, 3] = 1                      # caption_len
    tokens = (np.asarray(labels, dtype="<i4") + len(SPECIAL)).astype("<i4")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(vocab)
        f.write(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
        f.write(recs.tobytes())
        f.write(tokens.tobytes())
    os.replace(tmp, path)


def prepare(args):
    import numpy as np
    if args.size < 28:
        sys.exit(f"error: --size {args.size}: the items are 28x28")
    os.makedirs(args.out, exist_ok=True)
    off = (args.size - 28) // 2
    for split, out, limit in (("train", "train.vlm", args.n_train), ("t10k", "test.vlm", args.n_test)):
        (n, rows, cols), pix = read_idx(find(args.mnist, f"{split}-images-idx3-ubyte"), 3)
        (nl,), lab = read_idx(find(args.mnist, f"{split}-labels-idx1-ubyte"), 1)
        if nl != n or rows != 28 or cols != 28:
            sys.exit(f"error: {split}: {n} images of {rows}x{cols} and {nl} labels")
        k = n if limit <= 0 else min(limit, n)
        items = np.frombuffer(pix, dtype=np.uint8).reshape(n, 28, 28)[:k]
        canvas = np.zeros((k, args.size, args.size, 3), dtype=np.uint8)
        canvas[:, off:off + 28, off:off + 28, :] = items[:, :, :, None]
        labels = list(np.frombuffer(lab, dtype=np.uint8)[:k])
        write_shard(os.path.join(args.out, out), canvas, labels, args.size)
        print(f"{split}: {k} items of 28x28 on {args.size}x{args.size} -> {os.path.join(args.out, out)}")


def report(args):
    work, out = args.work, args.out or args.work
    os.makedirs(out, exist_ok=True)
    order = {m: i for i, m in enumerate(["none", "tome", "pool", "random", "uniform"])}
    rows = []
    for path in sorted(glob.glob(os.path.join(work, "runs", "*.jsonl"))):
        name = os.path.basename(path)[: -len(".jsonl")]
        method, ratio = name.rsplit("_", 1)
        lines = [json.loads(l) for l in open(path) if l.strip()]
        if not lines:
            sys.exit(f"error: {path} is empty")
        e = lines[-1]
        for k in ("accuracy", "gflop_per_image", "images_per_s", "patch_tokens"):
            if k not in e:
                sys.exit(f"error: {path}: no {k} (not a classifier's --stage eval log?)")
        rows.append({"method": method, "ratio": float(ratio), "patch_tokens": int(e["patch_tokens"]), "patches": int(e["patches"]),
                     "accuracy": e["accuracy"], "val_loss": e["val_loss"], "test_images": int(e["test_images"]),
                     "gflop_per_image": e["gflop_per_image"], "images_per_s": e["images_per_s"], "ms_per_batch": e["ms_per_batch"],
                     "ms_p10": e["ms_p10"], "ms_p90": e["ms_p90"], "batch": int(e["batch"]), "tome_schedule": e.get("tome_schedule", ""),
                     "device": e["device"]})
    if not rows:
        sys.exit(f"error: no runs in {work}/runs")
    rows.sort(key=lambda r: (order.get(r["method"], 99), r["ratio"]))
    base = [r for r in rows if r["method"] == "none"]
    ref = base[0] if base else None
    for r in rows:
        r["flops_vs_none"] = r["gflop_per_image"] / ref["gflop_per_image"] if ref else float("nan")
        r["speedup_vs_none"] = r["images_per_s"] / ref["images_per_s"] if ref else float("nan")
        r["acc_delta_points"] = 100 * (r["accuracy"] - ref["accuracy"]) if ref else float("nan")
    write_csv(os.path.join(out, "study.csv"), rows)
    b = rows[0]["batch"]
    md = [f"Device: {rows[0]['device']}. Accuracy: the test split ({rows[0]['test_images']} images); GFLOP: analytic per image "
          f"(one multiply-add = 2 FLOPs); images/s: one batch of {b} through the classifier (upload, forward, logits back), "
          f"median of the timed runs. pool, random: at the encoder's input; tome: merges per block as listed.", "",
          "| method | R | patch tokens | accuracy | Δ points | GFLOP/image | FLOPs vs none | images/s | speed-up | ms/batch (p10-p90) | ToMe r per block |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['method']} | {r['ratio']:g} | {r['patch_tokens']} | {100 * r['accuracy']:.2f}% | {r['acc_delta_points']:+.2f} | "
                  f"{r['gflop_per_image']:.5f} | {100 * r['flops_vs_none']:.0f}% | {r['images_per_s']:.0f} | {r['speedup_vs_none']:.2f}x | "
                  f"{r['ms_per_batch']:.3f} ({r['ms_p10']:.3f}-{r['ms_p90']:.3f}) | {r['tome_schedule'] or '-'} |")
    write_markdown(os.path.join(out, "study.md"), md)
    plt = pyplot_or_none()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, xkey, xlabel in ((axes[0], "gflop_per_image", "GFLOP per image (analytic)"),
                             (axes[1], "images_per_s", f"images/s (batch {b}, median)")):
        for m in sorted({r["method"] for r in rows}, key=lambda m: order.get(m, 99)):
            pts = [r for r in rows if r["method"] == m or (r["method"] == "none" and m != "none")]
            pts = sorted(pts, key=lambda r: r[xkey])
            ax.plot([r[xkey] for r in pts], [100 * r["accuracy"] for r in pts], "o-" if len(pts) > 1 else "s", label=m)
            for r in pts:
                if r["method"] == m:
                    ax.annotate(f"{r['ratio']:g}", (r[xkey], 100 * r["accuracy"]), textcoords="offset points", xytext=(3, 3), fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy, %")
        ax.grid(alpha=0.3)
    axes[0].set_title("accuracy vs FLOPs")
    axes[1].set_title("accuracy vs throughput")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"ViT classifier on Fashion-MNIST items ({rows[0]['device']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "study.png"), dpi=120)
    plt.close(fig)
    print(f"wrote {out}/study.csv, study.md, study.png")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--mnist", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--n-train", type=int, default=0)
    p.add_argument("--n-test", type=int, default=0)
    r = sub.add_parser("report")
    r.add_argument("work")
    r.add_argument("--out", default=None)
    args = ap.parse_args()
    prepare(args) if args.cmd == "prepare" else report(args)


if __name__ == "__main__":
    main()
