#!/usr/bin/python3
"""PyTorch float64 oracle for Mamba-2's SSD (src/ssd.h).

Runs build/torch_ssd_dump (our fp32 CPU naive, quadratic and chunked forwards, the recurrent step
over t and the backward, on random inputs; built here with the Makefile's g++ command when it is
missing or older than its sources), then recomputes everything in float64 from the dumped inputs,
straight from the equations (Mamba-2, the SSD layer with a scalar A per head):
    a_t = exp(dt_t A_h);  h_t = a_t h_{t-1} + dt_t x_t B_t^T  (h_{-1} = h0);  y_t = h_t C_t + D_h x_t
with head h reading group h // (H / G) of B and C; an explicit loop over time, gradients by autograd
of sum(y * dy) + sum(h_L * dfinal). A second float64 reference, the masked matrix form
y = (M ∘ C B^T)(dt x) + ..., checks the first one. Each tensor is compared by relative error
||ours - ref|| / ||ref||.

Prints "PASS name" / "FAIL name: why" per tensor and last "N passed, N failed"; exits 1 on any
failure, including a missing torch or a failing dump binary. The file reading and the comparison
are those of test/torch_check.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_check as tc  # noqa: E402  (report, compare, tensor file reader; exits if torch is missing)
from torch_check import compare, finish, leaf, run_case, torch  # noqa: E402


# ---------------------------------------------------------------------------
# reference math, written from the equations (not from our C++)

def per_head(M, H):
    """(B, L, G, N) -> (B, L, H, N): head h reads group h // (H / G)."""
    return M.repeat_interleave(H // M.shape[2], dim=2)


def ref_ssd_recurrence(x, dt, A, Bm, Cm, D, h0):
    """x: (B, L, H, P); dt: (B, L, H); A, D: (H); Bm, Cm: (B, L, G, N); h0: (B, H, P, N).
    Returns y (B, L, H, P) and the final state (B, H, P, N)."""
    Bsz, L, H, P = x.shape
    Bh, Ch = per_head(Bm, H), per_head(Cm, H)
    h = h0
    ys = []
    for t in range(L):
        a = torch.exp(dt[:, t] * A)                                       # (B, H)
        h = a[:, :, None, None] * h + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append((h * Ch[:, t, :, None, :]).sum(-1) + D[:, None] * x[:, t])
    return torch.stack(ys, 1), h


def ref_ssd_matrix(x, dt, A, Bm, Cm, D, h0):
    """The same map as one masked matrix product per (b, h):
    M[t, s] = exp(sum_{k=s+1..t} dt_k A) (s <= t, else 0), y = (M ∘ C B^T)(dt x) + exp(cs_t) C_t h0 + D x."""
    Bsz, L, H, P = x.shape
    Bh, Ch = per_head(Bm, H), per_head(Cm, H)
    cs = torch.cumsum(dt * A, dim=1).permute(0, 2, 1)                     # (B, H, L)
    seg = cs[:, :, :, None] - cs[:, :, None, :]                           # (B, H, t, s)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    Mmask = torch.exp(seg.masked_fill(~causal, float("-inf")))
    CB = torch.einsum("bthn,bshn->bhts", Ch, Bh)
    dx = dt[..., None] * x                                                # (B, L, H, P)
    y = torch.einsum("bhts,bshp->bthp", Mmask * CB, dx)
    y = y + torch.exp(cs).permute(0, 2, 1)[..., None] * torch.einsum("bhpn,bthn->bthp", h0, Ch)
    y = y + D[:, None] * x
    last = cs[:, :, -1:]                                                  # (B, H, 1)
    w = torch.exp(last - cs)                                              # (B, H, L): decay from s to the end
    final = torch.einsum("bhs,bshp,bshn->bhpn", w, dx, Bh) + torch.exp(last)[..., None] * h0
    return y, final


def case_ssd(d, name):
    p = name + "."
    cfg = [int(v) for v in d(p + "config").tolist()]
    has_h0, has_dfinal = cfg[7] != 0, cfg[8] != 0
    names = ["x", "dt", "A", "Bm", "Cm", "D", "h0"]
    ins = [leaf(d(p + n)) for n in names]
    y, final = ref_ssd_recurrence(*ins)
    # the oracle against its second form
    ym, fm = ref_ssd_matrix(*[i.detach() for i in ins])
    compare(p + "oracle: recurrence == matrix form (y)", ym, y, tol=1e-10)
    compare(p + "oracle: recurrence == matrix form (final)", fm, final, tol=1e-10)
    for suffix in ("", "_naive", "_quad", "_step"):
        compare(p + "y" + suffix, d(p + "y" + suffix), y)
        compare(p + "final" + suffix, d(p + "final" + suffix), final)
    dy = d(p + "dy")
    dfinal = d(p + "dfinal")
    if not has_dfinal:
        tc.report(dfinal.abs().max().item() == 0.0, p + "dfinal is zero when not passed", "nonzero")
    loss = (y * dy).sum() + (final * dfinal).sum()
    g = torch.autograd.grad(loss, ins)
    for n, gi in zip(names, g):
        # dh0: the gradient w.r.t. the initial state, also where none was passed (a zero state)
        compare(p + "d" + n + ("" if has_h0 or n != "h0" else " (zero initial state)"), d(p + "d" + n), gi)


def main():
    d = tc.load_dump("torch_ssd_dump")
    for name in ("ssd.L37.G2", "ssd.L1.G1", "ssd.L7.G4.c7", "ssd.L64.G1.noh0", "ssd.L70.G2.c1", "ssd.L130.G1.c32",
                 "ssd.L64.strong"):
        run_case(name, lambda name=name: case_ssd(d, name))
    finish()


if __name__ == "__main__":
    main()
