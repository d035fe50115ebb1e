#!/usr/bin/python3
"""PyTorch float64 oracle for ToMe (src/tome.h) on the CPU reference.

Runs build/torch_tome_dump (test/torch_tome_dump.cu: our fp32 proportional attention, bipartite matching,
size-weighted merge and a whole ViT encoder merging tokens, on random inputs; built here with the
Makefile's g++ command when it is missing or older than its sources), then recomputes each output in
float64 from the dumped inputs, written here from the paper (Bolya et al. 2023, "Token Merging: Your ViT
But Faster") and our README's statement of the rules, not from our C++:
  - proportional attention: softmax(q k^T / sqrt(hd) + log s) over the keys, s the keys' sizes
  - matching: the metric's rows L2-normalised; A = rows 0, 2, 4, ..., B = rows 1, 3, 5, ...; the
    similarity matrix A B^T with [CLS]'s row (A's first) at -inf; each A row's best B column; the r A
    rows with the highest best score (a stable sort, descending) merge into their best B rows
  - merge: x * s, the sources' rows added into their destinations (index_add), sizes likewise, the
    sources removed, the rest divided by their sizes; the kept rows stay in order
  - the encoder: pre-LN blocks (F.layer_norm eps 1e-5, GELU tanh), proportional attention with the
    current sizes, the merge between the attention and the MLP when the block's r > 0
Compares outputs by relative error ||ours - ref|| / ||ref|| (1e-4), the merge decisions, sizes and
representatives exactly. Prints "PASS name" / "FAIL name: why" and last "N passed, N failed"; exits 1
on any failure (a missing torch included).
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_check as tc  # noqa: E402  (report, compare, the tensor file reader; exits if torch is missing)
from torch_check import DT, F, compare, finish, report, run_case, torch  # noqa: E402

LN_EPS = 1e-5


def prop_attention(q, k, v, size):
    """q, k, v: (NH, T, hd); size: (T,) -> out (NH, T, hd), lse (NH, T)."""
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + torch.log(size)[None, None, :]
    lse = torch.logsumexp(s, dim=-1)
    return torch.softmax(s, dim=-1) @ v, lse


def match(metric, r):
    """dst (T,) long: -1 for a row that stays, else the B row it merges into."""
    T = metric.shape[0]
    m = F.normalize(metric, dim=-1)
    a_rows, b_rows = torch.arange(0, T, 2), torch.arange(1, T, 2)
    scores = m[a_rows] @ m[b_rows].T
    scores[0, :] = float("-inf")                     # [CLS] is the first A row: never a source
    best_val, best = scores.max(dim=-1)
    order = torch.sort(best_val, descending=True, stable=True).indices
    dst = torch.full((T,), -1, dtype=torch.long)
    src = order[:r]
    dst[a_rows[src]] = b_rows[best[src]]
    return dst


def merge(x, size, rep, dst):
    """the size-weighted merge of the rows of x (T, C) by dst -> x, size, rep of the rows left."""
    src = torch.nonzero(dst >= 0).flatten()
    acc = x * size[:, None]
    sz = size.clone()
    acc.index_add_(0, dst[src], acc[src].clone())
    sz.index_add_(0, dst[src], size[src])
    keep = dst < 0
    return acc[keep] / sz[keep][:, None], sz[keep], rep[keep]


def case_pattn(d, name):
    p = f"pattn.{name}."
    B, T, C, NH = [int(v) for v in d(p + "config").tolist()]
    hd = C // NH
    qkv, size = d(p + "qkv"), d(p + "size")
    outs, lses = [], []
    for b in range(B):
        q, k, v = [t.reshape(T, NH, hd).transpose(0, 1) for t in qkv[b].split(C, -1)]
        o, l = prop_attention(q, k, v, size[b])
        outs.append(o.transpose(0, 1).reshape(T, C))
        lses.append(l)
    compare(p + "out", d(p + "out"), torch.stack(outs))
    compare(p + "lse", d(p + "lse"), torch.stack(lses))


def case_match(d, name):
    p = f"match.{name}."
    T, hd, r = [int(v) for v in d(p + "config").tolist()]
    dst = match(d(p + "metric"), r)
    ours = d(p + "dst").long()
    report(bool((ours == dst).all()), p + "dst (the merge decisions)", f"ours {ours.tolist()} != ref {dst.tolist()}")
    report(int(ours[0]) == -1, p + "[CLS] stays")


def case_merge(d):
    x, w = d("merge.x"), d("merge.w")
    off, mem = d("merge.off").long(), d("merge.mem").long()
    rows = []
    for g in range(len(off) - 1):
        idx = mem[off[g]:off[g + 1]]
        rows.append((w[idx][:, None] * x[idx]).sum(0) / w[idx].sum())
    compare("merge.out", d("merge.out"), torch.stack(rows))


def block_params(d, p, l):
    q = f"{p}blocks.{l}."
    return {k: d(q + k) for k in ("ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
                                  "ln2.weight", "ln2.bias", "mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias")}


def case_encoder(d, name):
    p = f"enc.{name}."
    B, T0, C, NH, L = [int(v) for v in d(p + "config").tolist()]
    sched = [int(v) for v in d(p + "sched").tolist()]
    hd = C // NH
    blocks = [block_params(d, p, l) for l in range(L)]
    xs = d(p + "x")
    outs, sizes, reps, dsts = [], [], [], {l: [] for l in range(L)}
    for b in range(B):
        x, size, rep = xs[b], torch.ones(T0, dtype=DT), torch.arange(T0)
        for l, w in enumerate(blocks):
            T = x.shape[0]
            a = F.layer_norm(x, (C,), w["ln1.weight"], w["ln1.bias"], LN_EPS)
            qkv = a @ w["attn.qkv.weight"].T + w["attn.qkv.bias"]
            q, k, v = [t.reshape(T, NH, hd).transpose(0, 1) for t in qkv.split(C, -1)]
            y, _ = prop_attention(q, k, v, size)
            x = x + y.transpose(0, 1).reshape(T, C) @ w["attn.proj.weight"].T + w["attn.proj.bias"]
            if sched[l] > 0:
                dst = match(k.mean(0), sched[l])          # the keys averaged over the heads
                dsts[l].append(dst)
                x, size, rep = merge(x, size, rep, dst)
            m = F.layer_norm(x, (C,), w["ln2.weight"], w["ln2.bias"], LN_EPS)
            h = F.gelu(m @ w["mlp.fc.weight"].T + w["mlp.fc.bias"], approximate="tanh")
            x = x + h @ w["mlp.proj.weight"].T + w["mlp.proj.bias"]
        outs.append(x); sizes.append(size); reps.append(rep)
    for l in range(L):
        if sched[l] > 0:
            ours = d(f"{p}dst{l}").long()
            ref = torch.stack(dsts[l])
            report(ours.shape == ref.shape and bool((ours == ref).all()), f"{p}block {l}: the merge decisions", "differ")
    compare(p + "out", d(p + "out"), torch.stack(outs))
    size_ok = bool((d(p + "size") == torch.stack(sizes)).all())
    report(size_ok, p + "sizes (exact)", f"{d(p + 'size').tolist()} != {torch.stack(sizes).tolist()}")
    rep_ok = bool((d(p + "rep").long() == torch.stack(reps)).all())
    report(rep_ok, p + "representatives (exact)", "differ")
    report(bool((torch.stack(sizes).sum(1) == T0).all()), p + "sizes sum to P + 1 (the reference too)")


def main():
    d = tc.load_dump("torch_tome_dump")
    for name in ("T9", "T1", "T30"):
        run_case("pattn." + name, lambda name=name: case_pattn(d, name))
    for name in ("T13", "T10", "T37"):
        run_case("match." + name, lambda name=name: case_match(d, name))
    run_case("merge", lambda: case_merge(d))
    for name in ("even", "max", "mixed"):
        run_case("enc." + name, lambda name=name: case_encoder(d, name))
    finish()


if __name__ == "__main__":
    main()
