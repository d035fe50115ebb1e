#!/usr/bin/python3
"""PyTorch float64 oracle for LoRA (src/lora.h) and the Mamba LM with adapters.

Runs build/torch_lora_dump (our fp32 CPU results on random inputs; built here with the Makefile's
g++ command when it is missing or older than its sources), then recomputes in float64 from the
dumped inputs, from the definition
    y = x W^T + b + s * ((keep * x) A^T) B^T          (keep: the dumped dropout factors)
and, for the model, from the identity that an adapter on W is the linear map W + s * B A (on the
rows it adapts): torch_check.ref_model on the effective weights, gradients by autograd for the
trainable tensors (adapters and --train-also ones). Compares by relative error; prints
"PASS name" / "FAIL name: why" and last "N passed, N failed"; exits 1 on any failure.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_check as tc  # noqa: E402
from torch_check import compare, finish, grads, leaf, report, run_case, torch  # noqa: E402

TARGETS = ("in_proj", "in_proj_x", "x_proj", "dt_proj", "out_proj")


def case_adapter(d):
    N, IC, OC, r, s = d("adapter.config").tolist()
    x, W, b = leaf(d("adapter.x")), leaf(d("adapter.weight")), leaf(d("adapter.bias"))
    A, B, keep = leaf(d("adapter.A")), leaf(d("adapter.B")), d("adapter.keep")
    p = 1.0 - 1.0 / keep.max().item()  # kept elements are 1/(1-p)
    frac = (keep > 0).double().mean().item()
    report(abs(frac - (1 - p)) < 0.15, "adapter.keep fraction", f"kept {frac:.2f} of the inputs with p {p:.2f}")
    out = x @ W.t() + b + s * ((keep * x) @ A.t()) @ B.t()
    compare("adapter.out", d("adapter.out"), out)
    g = grads(out, [x, A, B], d("adapter.dout"))
    compare("adapter.dx", d("adapter.dx"), g[0])
    compare("adapter.dA", d("adapter.dA"), g[1])
    compare("adapter.dB", d("adapter.dB"), g[2])


def case_model(d, name):
    p = f"lora_model.{name}."
    V, Dm, nl, N, K, expand, R, E = [int(v) for v in d(p + "config").tolist()]
    rank, alpha, in_rows = d(p + "lora").tolist()
    s = alpha / rank
    names = sorted(k[len(p + "param."):] for k in d.t if k.startswith(p + "param."))
    P = {k: leaf(d(p + "param." + k)) for k in names}
    trainable = [k for k in names if (p + "grad." + k) in d.t]
    # every adapter and only adapters plus the --train-also tensors carry gradients
    adapters = [k for k in names if ".lora_" in k]
    report(all(k in trainable for k in adapters), p + "adapters trainable")
    # effective weights: W + s * B A on the rows each adapter covers
    Peff = {k: v for k, v in P.items() if ".lora_" not in k}
    for i in range(nl):
        for t in TARGETS:
            a_name = f"layers.{i}.{t}.lora_A"
            if a_name not in P:
                continue
            w_name = f"layers.{i}.{'in_proj' if t == 'in_proj_x' else t}.weight"
            delta = s * P[f"layers.{i}.{t}.lora_B"] @ P[a_name]
            W = Peff[w_name]
            if delta.shape[0] < W.shape[0]:  # in_proj_x: the x half (rows [0, E))
                report(t == "in_proj_x" and delta.shape[0] == E and int(in_rows) == E, p + f"layers.{i}.{t} rows")
                delta = torch.cat([delta, torch.zeros(W.shape[0] - delta.shape[0], W.shape[1], dtype=W.dtype)])
            Peff[w_name] = W + delta
    tokens, targets = d(p + "tokens").long(), d(p + "targets").long()
    loss, logits = tc.ref_model(Peff, tokens, targets, V, nl, N, R, E)
    compare(p + "loss", d(p + "loss"), loss.reshape(1))
    compare(p + "logits", d(p + "logits"), logits)
    g = torch.autograd.grad(loss, [P[k] for k in trainable], allow_unused=True)
    for k, gk in zip(trainable, g):
        compare(p + "grad." + k, d(p + "grad." + k), gk if gk is not None else torch.zeros_like(P[k]))


def main():
    d = tc.load_dump("torch_lora_dump")
    run_case("adapter", lambda: case_adapter(d))
    for name in ("all", "in_proj_x"):
        run_case("lora_model." + name, lambda name=name: case_model(d, name))
    finish()


if __name__ == "__main__":
    main()
