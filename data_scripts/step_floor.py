#!/usr/bin/env python3
"""Where a Mamba-1 training step's time goes against its floor.

  python3 data_scripts/step_floor.py PROFILE_LOG [--batch 8 --seq-len 1024 --d-model 768 --n-layer 24
                                                  --d-state 16 --vocab 50280 --matmul bf16 --activations fp32]

PROFILE_LOG is the output of `train_mamba ... --profile K` (the "per-component time" lines). For each
component the floor is the larger of
  bytes it must move at least once / 3.0 TB/s (what a streaming copy reaches on an H100), and
  its matmul FLOPs / 800 TFLOP/s (bf16 dense; 400 for TF32) or its exponentials / 3.7e12 per s,
counted for the layer's activations in fp32 (4 bytes an element) or bf16 (--activations bf16: 2 bytes;
the residual stream, its gradient and the head stay fp32) and this project's step: forward, backward,
the backward's recomputation of the RMSNorm and conv outputs, the head's logits computed once (in
the backward; a profile without a cross_entropy row timed it inside lm_head: then lm_head's floor is
the two added), AdamW over every parameter. The table says how far each component is from its floor
and what bounds it; the last line sums them.
"""
import argparse
import re
import sys

MEM_BW = 3.0e12          # bytes/s
MATMUL = {"bf16": 800e12, "tf32": 400e12, "fp32": 60e12}  # FLOP/s, dense
SFU = 3.7e12             # exponentials/s (132 SMs x 16 per clock x ~1.75 GHz)
F32 = 4


def floors(B, L, D, E, N, R, V, layers, matmul, act_bytes=F32):
    """component -> (floor in ms, what bounds it), for one whole step (every layer)"""
    BT = B * L
    XD = R + 2 * N
    mm = MATMUL[matmul]
    out = {}

    def put(name, bytes_per_layer=0.0, flops_per_layer=0.0, exps_per_layer=0.0, per_step=False):
        n = 1 if per_step else layers
        t_mem = bytes_per_layer * n / MEM_BW
        t_mm = flops_per_layer * n / mm
        t_exp = exps_per_layer * n / SFU
        t = max(t_mem, t_mm, t_exp)
        why = "memory" if t == t_mem else ("matmul" if t == t_mm else "exponentials")
        out[name] = (t * 1e3, why)

    act = BT * act_bytes  # a layer's activation, per column (x_proj, dt_proj, conv, scan; RMSNorm's xn)
    res = BT * F32        # the residual stream and its gradient, per column
    # products: forward, dinp, dweight = 3 x 2 * rows * in * out FLOPs
    put("in_proj", flops_per_layer=3 * 2.0 * BT * D * 2 * E)
    put("out_proj", flops_per_layer=3 * 2.0 * BT * E * D)
    put("lm_head", flops_per_layer=3 * 2.0 * BT * D * V, per_step=True)
    # thin products: the wide side is read (and the += output read and written) once per product
    put("x_proj", bytes_per_layer=act * (E + XD) + act * (XD + 2 * E) + act * (E + XD))
    put("dt_proj", bytes_per_layer=act * (R + E) + act * (E + 2 * R) + act * (E + R))
    # conv1d+SiLU: forward reads x, writes u; backward reads du and x, writes dx
    put("conv1d+silu", bytes_per_layer=act * E * 2 + act * E * 3)
    # RMSNorm: forward reads the layer before's input and branch (the residual add is fused in), writes
    # the input and xn; backward reads dxn and x, reads and writes dresid
    put("rmsnorm", bytes_per_layer=res * D * 3 + act * D + res * D * 4)
    # the backward's recomputation (--recompute): RMSNorm and conv forward again
    put("recompute", bytes_per_layer=res * D + act * D + act * E * 2)
    # the backward's zeroing: dB, dC (fp32, the scan's atomics add into them; every other gradient is set)
    put("zero_scratch", bytes_per_layer=res * 2 * N)
    # scan: forward reads u, delta, z, B, C and writes y; backward reads them and dy, writes du,
    # ddelta, dz, dB, dC; exp(delta A) for every (t, e, n), in the forward and again in the backward
    put("scan", bytes_per_layer=act * (3 * E + 2 * N + E) + act * (4 * E + 2 * N) + act * (3 * E + 2 * N),
        exps_per_layer=2.0 * BT * E * N)
    # cross-entropy over the logits, in place: read and write each once (one pass, in the backward);
    # with bf16 activations the logits are bf16 too (lm_head.h)
    put("cross_entropy", bytes_per_layer=2.0 * BT * V * act_bytes, per_step=True)
    # AdamW: read params, grads, m, v; write params, m, v
    params = layers * (2 * E * D + E * 4 + E + XD * E + E * R + E + E * N + E + D * E + D) + V * D + D
    put("adamw", bytes_per_layer=7.0 * params * F32, per_step=True)
    put("embedding", bytes_per_layer=res * D * 2, per_step=True)
    return out


def parse_profile(text):
    i = text.find("per-component")
    if i < 0:
        return {}
    rows = {}
    for m in re.finditer(r"^\s+(\S+)\s+([0-9.]+) ms/step", text[i:], re.M):
        rows[m.group(1)] = float(m.group(2))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--n-layer", type=int, default=24)
    ap.add_argument("--d-state", type=int, default=16)
    ap.add_argument("--expand", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=50280)
    ap.add_argument("--matmul", choices=sorted(MATMUL), default="bf16")
    ap.add_argument("--activations", choices=["fp32", "bf16"], default="fp32",
                    help="the layers' activations (train_mamba --matmul bf16 keeps them in bf16)")
    a = ap.parse_args()
    try:
        measured = parse_profile(open(a.profile).read())
    except OSError as e:
        sys.exit(f"error: {e}")
    if not measured:
        sys.exit(f"error: {a.profile} has no 'per-component time' table (run train_mamba with --profile K)")
    D = a.d_model
    R = -(-D // 16)
    fl = floors(a.batch, a.seq_len, D, a.expand * D, a.d_state, R, a.vocab, a.n_layer, a.matmul,
                2 if a.activations == "bf16" else F32)
    print(f"| component | ms/step | floor ms | x floor | bound by |\n|---|---|---|---|---|")
    tot_ms = tot_floor = 0.0
    if "cross_entropy" not in measured and "lm_head" in measured:  # the head's backward runs them as one (lm_head.h)
        (f_head, _), (f_ce, _) = fl["lm_head"], fl["cross_entropy"]
        fl["lm_head"] = (f_head + f_ce, "matmul + memory (with the cross-entropy)")
    for name, ms in sorted(measured.items(), key=lambda kv: -kv[1]):
        if name not in fl:
            print(f"| {name} | {ms:.2f} | | | (no floor model) |")
            tot_ms += ms
            continue
        f, why = fl[name]
        tot_ms += ms
        tot_floor += f
        print(f"| {name} | {ms:.2f} | {f:.2f} | {ms / f:.1f}x | {why} |")
    print(f"| all | {tot_ms:.2f} | {tot_floor:.2f} | {tot_ms / tot_floor:.1f}x | |")
    print(f"(floors: {MEM_BW / 1e12:.1f} TB/s, {MATMUL[a.matmul] / 1e12:.0f} TFLOP/s for {a.matmul} products, "
          f"{SFU / 1e12:.1f}e12 exponentials/s; {a.activations} activations)")


if __name__ == "__main__":
    main()
