#!/usr/bin/python3
"""PyTorch float64 oracle for the vision-language layers of the CPU reference.

Runs build/torch_vlm_dump (our fp32 CPU layernorm, GELU, attention, attention decode step and
patch embedding on random inputs; built here with the Makefile's g++ command when it is missing or
older than its sources), then recomputes every output and gradient in float64 from the dumped
inputs and compares each tensor by relative error ||ours - ref|| / ||ref||:
  - layernorm: F.layer_norm (eps 1e-5); gelu: F.gelu(approximate='tanh')
  - attention: written here from the equations (scores, explicit causal and key-padding masks,
    softmax with the max subtracted, rows without a visible key = 0; lse = log sum exp of the visible
    scores, +inf without one), and torch's scaled dot-product
    attention as a second reference on the sequences that have a visible key in every row
  - the decode step: the causal attention above, row by row
  - patch embedding: F.conv2d with kernel = stride = p on the image (the weight's (py, px, c)
    columns as a (D, 3, p, p) kernel)
Gradients come from autograd. Prints "PASS name" / "FAIL name: why" per tensor and last
"N passed, N failed"; exits 1 on any failure, including a missing torch or a failing dump binary.
The file reading and the comparison are those of test/torch_check.py.
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_check as tc  # noqa: E402  (report, compare, tensor file reader; exits if torch is missing)
from torch_check import DT, F, compare, finish, grads, leaf, report, run_case, torch  # noqa: E402

ROOT = tc.ROOT
LN_EPS = 1e-5


# ---------------------------------------------------------------------------
# reference math, written from the equations (not from our C++)

def visible_mask(B, T, lengths, causal):
    """(B, 1, T, T) bool: query i of sequence b sees key j."""
    j = torch.arange(T)
    vis = torch.ones(B, 1, T, T, dtype=torch.bool)
    if causal:
        vis = vis & (j[None, :] <= j[:, None])[None, None]
    if lengths is not None:
        vis = vis & (j[None, None, None, :] < lengths[:, None, None, None])
    return vis


def split_heads(qkv, NH):
    """(B, T, 3C) -> q, k, v each (B, NH, T, hd)."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    return [t.reshape(B, T, NH, C // NH).transpose(1, 2) for t in qkv.split(C, -1)]


def ref_attention(qkv, NH, lengths, causal):
    """softmax(q k^T / sqrt(hd)) over the visible keys, 0 elsewhere; out (B, T, C), att (B, NH, T, T),
    lse (B, NH, T) (+inf for a row without a visible key)."""
    B, T, _ = qkv.shape
    q, k, v = split_heads(qkv, NH)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    vis = visible_mask(B, T, lengths, causal)
    s = s.masked_fill(~vis, float("-inf"))
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()   # rows without a key: 0
    e = torch.exp(s - m) * vis
    z = e.sum(-1, keepdim=True)
    att = e / torch.where(z > 0, z, torch.ones_like(z))
    out = (att @ v).transpose(1, 2).reshape(B, T, -1)
    lse = torch.where(z > 0, m + torch.log(torch.where(z > 0, z, torch.ones_like(z))),
                      torch.full_like(z, float("inf"))).squeeze(-1).detach()
    return out, att, lse


def sdpa(q, k, v, mask):
    """torch's scaled dot-product attention with an additive float mask: (out, att or None)."""
    if hasattr(F, "scaled_dot_product_attention"):            # torch >= 2.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), None
    return F._scaled_dot_product_attention(q, k, v, mask, 0.0, True, False)   # torch 1.13


# ---------------------------------------------------------------------------
# cases

def case_layernorm(d, p):
    p = p + "."
    x, w, b = leaf(d(p + "x")), leaf(d(p + "weight")), leaf(d(p + "bias"))
    out = F.layer_norm(x, (x.shape[-1],), w, b, LN_EPS)
    xd = x.detach()
    compare(p + "out", d(p + "out"), out)
    compare(p + "mean", d(p + "mean"), xd.mean(-1))
    compare(p + "rstd", d(p + "rstd"), 1.0 / torch.sqrt(xd.var(-1, unbiased=False) + LN_EPS))
    dx, dw, db = grads(out, [x, w, b], d(p + "dout"))
    compare(p + "dx", d(p + "dx"), dx)
    compare(p + "dweight", d(p + "dweight"), dw)
    compare(p + "dbias", d(p + "dbias"), db)


def case_gelu(d):
    x = leaf(d("gelu.x"))
    out = F.gelu(x, approximate="tanh")
    compare("gelu.out", d("gelu.out"), out)
    compare("gelu.dx", d("gelu.dx"), grads(out, [x], d("gelu.dout"))[0])


def case_attention(d, p):
    p = p + "."
    B, T, C, NH, causal, has_len = [int(v) for v in d(p + "config").tolist()]
    lengths = d(p + "lengths").long() if has_len else None
    qkv = leaf(d(p + "qkv"))
    dout = d(p + "dout")
    out, _, lse = ref_attention(qkv, NH, lengths, bool(causal))
    compare(p + "out", d(p + "out"), out)
    ours = d(p + "lse")
    empty = torch.isinf(lse)
    report(bool((ours[empty] == lse[empty].to(ours.dtype)).all()), p + "lse (empty rows +inf)", "not +inf")
    compare(p + "lse", ours[~empty], lse[~empty])
    (dqkv,) = grads(out, [qkv], dout)
    compare(p + "dqkv", d(p + "dqkv"), dqkv)
    # the second reference: torch's attention, on the sequences whose every row sees a key
    keep = [b for b in range(B) if lengths is None or lengths[b] > 0]
    if not keep:
        return
    qkv2 = leaf(d(p + "qkv")[keep])
    q, k, v = split_heads(qkv2, NH)
    vis = visible_mask(len(keep), T, None if lengths is None else lengths[keep], bool(causal))
    mask = torch.zeros(vis.shape, dtype=DT).masked_fill(~vis, float("-inf"))
    o2, _ = sdpa(q, k, v, mask)
    o2 = o2.transpose(1, 2).reshape(len(keep), T, C)
    compare(p + "out (sdpa)", d(p + "out")[keep], o2)
    (g2,) = grads(o2, [qkv2], dout[keep])
    compare(p + "dqkv (sdpa)", d(p + "dqkv")[keep], g2)


def case_attention_step(d, p):
    p = p + "."
    B, T, C, NH = [int(v) for v in d(p + "config").tolist()]
    out = ref_attention(d(p + "qkv"), NH, None, True)[0]
    compare(p + "out", d(p + "out"), out)


def case_patch_embed(d, p):
    p = p + "."
    B, H, W, ps, D, has_bias = [int(v) for v in d(p + "config").tolist()]
    img = d(p + "images")                                     # (B, H, W, 3)
    w = leaf(d(p + "weight"))                                 # (D, p*p*3), columns (py, px, c)
    b = leaf(d(p + "bias")) if has_bias else None
    GH, GW = H // ps, W // ps
    patches = img.reshape(B, GH, ps, GW, ps, 3).permute(0, 1, 3, 2, 4, 5).reshape(B, GH * GW, ps * ps * 3)
    compare(p + "patches", d(p + "patches"), patches)
    kernel = w.reshape(D, ps, ps, 3).permute(0, 3, 1, 2)      # (D, 3, p, p)
    y = F.conv2d(img.permute(0, 3, 1, 2), kernel, b, stride=ps)   # (B, D, GH, GW)
    out = y.flatten(2).transpose(1, 2)                        # (B, P, D), patches in row-major grid order
    compare(p + "out", d(p + "out"), out)
    ins = [w] + ([b] if has_bias else [])
    g = grads(out, ins, d(p + "dout"))
    compare(p + "dweight", d(p + "dweight"), g[0])
    if has_bias:
        compare(p + "dbias", d(p + "dbias"), g[1])


# ---------------------------------------------------------------------------

def main():
    d = tc.load_dump("torch_vlm_dump")
    for name in ("ln.N9.C13", "ln.N1.C8", "ln.N6.C16.small"):
        run_case(name, lambda name=name: case_layernorm(d, name))
    run_case("gelu", lambda: case_gelu(d))
    for mode in ("bidir", "causal"):
        for name in (f"attn.T1.{mode}", f"attn.T1.{mode}.len", f"attn.T7.{mode}", f"attn.T7.{mode}.len",
                     f"attn.T13.{mode}", f"attn.T13.{mode}.len", f"attn.T40.{mode}.len"):
            run_case(name, lambda name=name: case_attention(d, name))
    for name in ("attnstep.T9", "attnstep.T1"):
        run_case(name, lambda name=name: case_attention_step(d, name))
    for name in ("patch.p4", "patch.p3", "patch.p1"):
        run_case(name, lambda name=name: case_patch_embed(d, name))
    finish()


if __name__ == "__main__":
    main()
