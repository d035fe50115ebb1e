#!/usr/bin/python3
"""PyTorch float64 oracle for the Mamba-2 block (src/mamba2.h).

Runs build/torch_mamba2_dump (our fp32 CPU forward, the recurrent step over t and the backward, on
random inputs; built here with the Makefile's g++ command when it is missing or older than its
sources), then recomputes the block in float64 from the dumped inputs and parameters, straight from
the equations (Mamba-2, mamba_ssm/modules/mamba2.py without the fused kernels):

    [z | xBC | dt_raw] = inp @ in_proj_w^T                    (E | E + 2GN | H columns)
    xBC = silu(depthwise causal conv1d(xBC) + bias);  [x | B | C] = xBC   (E | GN | GN)
    dt = softplus(dt_raw + dt_bias);  A = -exp(A_log)
    h_t = exp(dt_t A_h) h_{t-1} + dt_t x_t B_t^T;  y_t = h_t C_t + D_h x_t   (head h reads group h // (H/G))
    g = y * silu(z);  yn = g / sqrt(mean(g^2) + 1e-5) * norm_w      (mean over groups of E/NG channels)
    out = yn @ out_proj_w^T

with an explicit loop over time (the recurrence) and gradients by autograd of sum(out * dout).
The final states are the last K-1 conv inputs (zero-padded, oldest first) and h_{L-1}. Each tensor
is compared by relative error ||ours - ref|| / ||ref||.

Prints "PASS name" / "FAIL name: why" per tensor and last "N passed, N failed"; exits 1 on any
failure, including a missing torch or a failing dump binary. The file reading and the comparison
are those of test/torch_check.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_check as tc  # noqa: E402  (report, compare, tensor file reader; exits if torch is missing)
from torch_check import compare, finish, leaf, run_case, torch  # noqa: E402

F = torch.nn.functional
EPS = 1e-5
PARAMS = ["in_proj_w", "conv_w", "conv_b", "dt_bias", "A_log", "D", "norm_w", "out_proj_w"]


# ---------------------------------------------------------------------------
# reference math, written from the equations (not from our C++)

def ref_block(cfg, inp, in_proj_w, conv_w, conv_b, dt_bias, A_log, D, norm_w, out_proj_w):
    """inp: (B, L, d_model). Returns out (B, L, d_model), conv_state (B, C, K-1), ssm_state (B, H, P, N)."""
    Bsz, L, Dm = inp.shape
    expand, P, N, G, K, NG = cfg["expand"], cfg["headdim"], cfg["d_state"], cfg["ngroups"], cfg["d_conv"], cfg["norm_groups"]
    E = expand * Dm
    H = E // P
    C = E + 2 * G * N
    zxbcdt = inp @ in_proj_w.T
    z, xBC, dt_raw = torch.split(zxbcdt, [E, C, H], dim=-1)
    # depthwise causal conv: pad K-1 zeros in front, keep the first L outputs
    conv = F.conv1d(xBC.transpose(1, 2), conv_w.unsqueeze(1), conv_b, padding=K - 1, groups=C)[:, :, :L]
    xBCc = F.silu(conv).transpose(1, 2)
    x, Bm, Cm = torch.split(xBCc, [E, G * N, G * N], dim=-1)
    x = x.reshape(Bsz, L, H, P)
    Bh = Bm.reshape(Bsz, L, G, N).repeat_interleave(H // G, dim=2)   # (B, L, H, N)
    Ch = Cm.reshape(Bsz, L, G, N).repeat_interleave(H // G, dim=2)
    dt = F.softplus(dt_raw + dt_bias)                                 # (B, L, H)
    A = -torch.exp(A_log)
    h = torch.zeros(Bsz, H, P, N, dtype=inp.dtype)
    ys = []
    for t in range(L):
        a = torch.exp(dt[:, t] * A)[:, :, None, None]                 # (B, H, 1, 1)
        h = a * h + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", h, Ch[:, t]) + D[:, None] * x[:, t])
    y = torch.stack(ys, 1).reshape(Bsz, L, E)
    g = (y * F.silu(z)).reshape(Bsz, L, NG, E // NG)
    yn = (g / torch.sqrt((g * g).mean(-1, keepdim=True) + EPS)).reshape(Bsz, L, E) * norm_w
    out = yn @ out_proj_w.T
    # the conv's last K-1 inputs, oldest first, zeros before t = 0
    padded = torch.cat([torch.zeros(Bsz, K - 1, C, dtype=inp.dtype), xBC], dim=1)
    conv_state = padded[:, padded.shape[1] - (K - 1):, :].transpose(1, 2)
    return out, conv_state, h


def case_block(d, name):
    p = name + "."
    vals = [int(v) for v in d(p + "config").tolist()]
    keys = ["B", "L", "d_model", "expand", "headdim", "d_state", "ngroups", "d_conv", "chunk", "norm_groups"]
    cfg = dict(zip(keys, vals))
    inp = leaf(d(p + "inp"))
    params = [leaf(d(p + n)) for n in PARAMS]
    out, conv_state, ssm_state = ref_block(cfg, inp, *params)
    compare(p + "out", d(p + "out"), out)
    compare(p + "out_step (recurrent step over t)", d(p + "out_step"), out)
    compare(p + "conv_state (forward)", d(p + "conv_state"), conv_state)
    compare(p + "conv_state_step", d(p + "conv_state_step"), conv_state)
    compare(p + "ssm_state (forward)", d(p + "ssm_state"), ssm_state)
    compare(p + "ssm_state_step", d(p + "ssm_state_step"), ssm_state)
    loss = (out * d(p + "dout")).sum()
    g = torch.autograd.grad(loss, [inp] + params)
    compare(p + "dinp", d(p + "dinp"), g[0])
    for n, gi in zip(PARAMS, g[1:]):
        compare(p + "d" + n, d(p + "d" + n), gi)


def main():
    d = tc.load_dump("torch_mamba2_dump")
    for name in ("m2.L37.G2", "m2.L1.G1", "m2.L7.G1", "m2.L70.G2.ng2.c32", "m2.L23.K2.e1.c5", "m2.L37.init"):
        run_case(name, lambda name=name: case_block(d, name))
    finish()


if __name__ == "__main__":
    main()
