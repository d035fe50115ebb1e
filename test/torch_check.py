#!/usr/bin/python3
"""PyTorch float64 oracle for the CPU reference.

Runs build/torch_dump (our fp32 CPU functions on random inputs), then recomputes every
output and gradient here in float64 from the dumped inputs, straight from the equations
(the Mamba paper's selective scan and the block as the README describes it; the scan is an
explicit loop over time; gradients come from autograd), and compares
each tensor by relative error ||ours - ref|| / ||ref||.

Prints "PASS name" / "FAIL name: why" per tensor and last "N passed, N failed"; exits 1 on
any failure, including a missing torch or a failing dump binary.
"""
import glob
import os
import struct
import subprocess
import sys
import tempfile

TOL = 1e-4          # fp32 (ours) against float64 (reference)
SCAN_CHUNK = 64     # timesteps per saved scan state; main() takes it from the dump (scan.chunk)
RMS_EPS = 1e-5
VERBOSE = os.environ.get("TORCH_CHECK_VERBOSE", "") not in ("", "0")   # print errors of passes too

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)

passed = 0
failed = 0


def report(ok, name, why=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"PASS {name}")
    else:
        failed += 1
        print(f"FAIL {name}: {why}")
    sys.stdout.flush()


def finish():
    print(f"{passed} passed, {failed} failed")
    sys.exit(0 if failed == 0 else 1)


try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except Exception as exc:  # torch missing: a failure, not a skip
    report(False, "import torch", repr(exc))
    finish()

torch.set_grad_enabled(True)
DT = torch.float64


# ---------------------------------------------------------------------------
# reading the tensor file (test/tensor_file.h)

def read_tensor_file(path):
    with open(path, "rb") as f:
        buf = f.read()
    magic, count = struct.unpack_from("<ii", buf, 0)
    if magic != 0x54454E53:
        raise ValueError(f"bad magic {magic:#x}")
    off = 8
    out = {}
    for _ in range(count):
        (nlen,) = struct.unpack_from("<i", buf, off); off += 4
        name = buf[off:off + nlen].decode(); off += nlen
        (ndim,) = struct.unpack_from("<i", buf, off); off += 4
        dims = struct.unpack_from(f"<{ndim}i", buf, off); off += 4 * ndim
        n = 1
        for d in dims:
            n *= d
        arr = np.frombuffer(buf, dtype="<f4", count=n, offset=off).reshape(dims)
        off += 4 * n
        out[name] = torch.from_numpy(arr.astype(np.float64))
    if off != len(buf):
        raise ValueError(f"{len(buf) - off} trailing bytes")
    return out


class Missing(Exception):
    pass


class Dump:
    def __init__(self, tensors):
        self.t = tensors

    def __call__(self, name):
        if name not in self.t:
            raise Missing(name)
        return self.t[name].clone()

    def has_prefix(self, prefix):
        return any(k.startswith(prefix) for k in self.t)


def compare(name, ours, ref, tol=TOL):
    ref = ref.detach().to(DT)
    if tuple(ours.shape) != tuple(ref.shape):
        report(False, name, f"shape {tuple(ours.shape)} != reference {tuple(ref.shape)}")
        return
    if not torch.isfinite(ours).all():
        report(False, name, "non-finite values")
        return
    num = (ours - ref).norm().item()
    den = ref.norm().item()
    err = num / (den + 1e-30)
    if den == 0.0:  # an all-zero reference: demand (near) zeros
        err = num
    why = f"rel err {err:.3e} (tol {tol:.0e}, |ref| {den:.3e})"
    report(err < tol, name + (f" ({why})" if VERBOSE and err < tol else ""), why)


def run_case(label, fn):
    """Runs one case; a missing tensor or an exception is one FAIL, not a crash."""
    try:
        fn()
    except Missing as m:
        report(False, label, f"tensor {m} missing from the dump")
    except Exception as exc:
        report(False, label, f"exception {type(exc).__name__}: {exc}")


def leaf(x):
    return x.detach().clone().to(DT).requires_grad_(True)


def grads(out, inputs, dout):
    g = torch.autograd.grad(out, inputs, grad_outputs=dout, allow_unused=True)
    return [torch.zeros_like(i) if gi is None else gi for gi, i in zip(g, inputs)]


# ---------------------------------------------------------------------------
# reference math, written from the equations (not from our C++)

def ref_scan(u, delta, A_log, Bm, Cm, D, z, delta_bias, return_states=False):
    """Mamba-1 selective scan. u, delta, z: (B, L, E); A_log: (E, N); Bm, Cm: (B, L, N).
    dt = softplus(delta + delta_bias); h_t = exp(dt*A) h_{t-1} + dt*B_t*u_t; A = -exp(A_log)
    y_t = sum_n C_t[n] h_t[:, n] + D*u_t; out = y * silu(z)."""
    Bsz, L, E = u.shape
    N = A_log.shape[1]
    A = -torch.exp(A_log)
    dt = F.softplus(delta + delta_bias)          # threshold 20 as in the spec
    h = torch.zeros(Bsz, E, N, dtype=DT)
    ys, chunk_states = [], []
    for t in range(L):
        if t % SCAN_CHUNK == 0:
            chunk_states.append(h)
        dtt = dt[:, t, :, None]                   # (B, E, 1)
        h = torch.exp(dtt * A) * h + dtt * Bm[:, t, None, :] * u[:, t, :, None]
        ys.append((h * Cm[:, t, None, :]).sum(-1) + D * u[:, t])
    y = torch.stack(ys, 1)
    out = y * F.silu(z)
    if return_states:
        return out, torch.stack(chunk_states, 1), h
    return out


def ref_rmsnorm(x, w):
    rstd = 1.0 / torch.sqrt((x * x).mean(-1, keepdim=True) + RMS_EPS)
    return x * rstd * w, rstd.squeeze(-1)


def ref_conv(x, w, b):
    """depthwise causal conv: out[b,t,e] = b[e] + sum_k w[e,k] x[b, t-(K-1)+k, e]."""
    Bsz, L, E = x.shape
    K = w.shape[1]
    y = F.conv1d(x.transpose(1, 2), w.unsqueeze(1), b, padding=K - 1, groups=E)
    return y[:, :, :L].transpose(1, 2)


# ---------------------------------------------------------------------------
# component cases

def case_scan(d, L):
    p = f"scan.L{L}."
    names = ["u", "delta", "A_log", "Bm", "Cm", "D", "z", "delta_bias"]
    ins = [leaf(d(p + n)) for n in names]
    out, states, h_last = ref_scan(*ins, return_states=True)
    compare(p + "out", d(p + "out"), out)
    compare(p + "hs", d(p + "hs"), states)
    g = grads(out, ins, d(p + "dout"))
    for n, gi in zip(names, g):
        compare(p + "d" + n, d(p + "d" + n), gi)
    # the step-by-step generation path over the same inputs
    s = f"scanstep.L{L}."
    compare(s + "out", d(s + "out"), out)
    compare(s + "h", d(s + "h"), h_last)


def case_rmsnorm(d):
    p = "rmsnorm."
    x, w = leaf(d(p + "x")), leaf(d(p + "weight"))
    out, rstd = ref_rmsnorm(x, w)
    compare(p + "out", d(p + "out"), out)
    compare(p + "rstd", d(p + "rstd"), rstd)
    dx, dw = grads(out, [x, w], d(p + "dout"))
    compare(p + "dx", d(p + "dx"), dx)
    compare(p + "dweight", d(p + "dweight"), dw)


def case_conv(d, L):
    p = f"conv.L{L}."
    x, w, b = leaf(d(p + "x")), leaf(d(p + "weight")), leaf(d(p + "bias"))
    out = ref_conv(x, w, b)
    compare(p + "out", d(p + "out"), out)
    dx, dw, db = grads(out, [x, w, b], d(p + "dout"))
    compare(p + "dx", d(p + "dx"), dx)
    compare(p + "dweight", d(p + "dweight"), dw)
    compare(p + "dbias", d(p + "dbias"), db)
    s = f"convstep.L{L}."
    compare(s + "out", d(s + "out"), out)
    # state after the last step: the last K-1 inputs, oldest first, zeros before t = 0
    K = w.shape[1]
    xpad = F.pad(x.detach().transpose(1, 2), (K - 1, 0))     # (B, E, K-1+L)
    compare(s + "state", d(s + "state"), xpad[:, :, -(K - 1):] if K > 1 else xpad[:, :, :0])


def case_linear(d, p, with_bias):
    p = p + "."
    x, w = leaf(d(p + "x")), leaf(d(p + "weight"))
    ins = [x, w]
    out = x @ w.t()
    if with_bias:
        b = leaf(d(p + "bias"))
        ins.append(b)
        out = out + b
    compare(p + "out", d(p + "out"), out)
    g = grads(out, ins, d(p + "dout"))
    compare(p + "dx", d(p + "dx"), g[0])
    compare(p + "dweight", d(p + "dweight"), g[1])
    if with_bias:
        compare(p + "dbias", d(p + "dbias"), g[2])


def case_ce(d):
    logits = leaf(d("ce.logits"))
    targets = d("ce.targets").long()
    scale = d("ce.scale").item()
    valid = targets >= 0
    logp = F.log_softmax(logits, -1)
    picked = logp.gather(1, targets.clamp(min=0)[:, None]).squeeze(1)
    losses = torch.where(valid, -picked, torch.zeros_like(picked))
    (dlogits,) = torch.autograd.grad((losses * scale).sum(), [logits])
    compare("ce.losses", d("ce.losses"), losses)
    compare("ce.dlogits", d("ce.dlogits"), dlogits)
    compare("ce.nograd.losses", d("ce.nograd.losses"), losses)
    same = torch.equal(d("ce.nograd.logits_after"), d("ce.logits"))
    report(same, "ce.nograd.logits_unchanged", "write_grad=false modified the logits")


def case_embedding(d):
    w = leaf(d("emb.weight"))
    tok = d("emb.tokens").long()
    out = w[tok]
    compare("emb.out", d("emb.out"), out)
    (dw,) = grads(out, [w], d("emb.dout"))
    compare("emb.dweight", d("emb.dweight"), dw)


def case_activations(d):
    x = leaf(d("act.x"))
    dout = d("act.dout")
    s = F.silu(x)
    sp = F.softplus(x)
    compare("act.silu", d("act.silu"), s)
    compare("act.dsilu", d("act.dsilu"), grads(s, [x], dout)[0])
    compare("act.softplus", d("act.softplus"), sp)
    compare("act.dsoftplus", d("act.dsoftplus"), grads(sp, [x], dout)[0])
    a, b = d("act.a"), d("act.b")
    compare("act.add", d("act.add"), a + b)
    compare("act.add_inplace", d("act.add_inplace"), a + b)


# ---------------------------------------------------------------------------
# the whole model

def expected_params(V, Dm, nl, N, K, R, E):
    shapes = {"embedding.weight": (V, Dm)}
    for i in range(nl):
        p = f"layers.{i}."
        shapes[p + "norm.weight"] = (Dm,)
        shapes[p + "in_proj.weight"] = (2 * E, Dm)
        shapes[p + "conv1d.weight"] = (E, K)
        shapes[p + "conv1d.bias"] = (E,)
        shapes[p + "x_proj.weight"] = (R + 2 * N, E)
        shapes[p + "dt_proj.weight"] = (E, R)
        shapes[p + "dt_proj.bias"] = (E,)
        shapes[p + "A_log"] = (E, N)
        shapes[p + "D"] = (E,)
        shapes[p + "out_proj.weight"] = (Dm, E)
    shapes["norm_f.weight"] = (Dm,)
    return shapes


def ref_model(P, tokens, targets, V, nl, N, R, E):
    x = P["embedding.weight"][tokens]                       # (B, T, D)
    for i in range(nl):
        p = f"layers.{i}."
        h, _ = ref_rmsnorm(x, P[p + "norm.weight"])
        xz = h @ P[p + "in_proj.weight"].t()                 # (B, T, 2E)
        xin, z = xz[..., :E], xz[..., E:]
        xc = F.silu(ref_conv(xin, P[p + "conv1d.weight"], P[p + "conv1d.bias"]))
        xdbl = xc @ P[p + "x_proj.weight"].t()               # (B, T, R + 2N)
        dt_low, Bm, Cm = xdbl[..., :R], xdbl[..., R:R + N], xdbl[..., R + N:R + 2 * N]
        delta = dt_low @ P[p + "dt_proj.weight"].t()         # bias goes inside the softplus
        y = ref_scan(xc, delta, P[p + "A_log"], Bm, Cm, P[p + "D"], z, P[p + "dt_proj.bias"])
        x = x + y @ P[p + "out_proj.weight"].t()
    x, _ = ref_rmsnorm(x, P["norm_f.weight"])
    logits = x @ P["embedding.weight"].t()                  # tied head
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1)), logits   # mean over B*T


def case_model(d, name):
    p = name + "."
    V, Dm, nl, N, K, expand, R, E = [int(v) for v in d(p + "config").tolist()]
    shapes = expected_params(V, Dm, nl, N, K, R, E)
    ok = E == expand * Dm and R == (Dm + 15) // 16
    report(ok, p + "config", f"d_inner {E} / dt_rank {R} do not follow d_model {Dm}, expand {expand}")
    dumped = sorted(k[len(p + "param."):] for k in d.t if k.startswith(p + "param."))
    extra = [k for k in dumped if k not in shapes]
    missing = [k for k in shapes if k not in dumped]
    report(not extra and not missing, p + "param_names", f"missing {missing}, unexpected {extra}")
    bad = [k for k in shapes if k in dumped and tuple(d(p + "param." + k).shape) != shapes[k]]
    report(not bad, p + "param_shapes",
           ", ".join(f"{k} {tuple(d(p + 'param.' + k).shape)} != {shapes[k]}" for k in bad))
    if missing or bad:
        return
    P = {k: leaf(d(p + "param." + k)) for k in shapes}
    tokens = d(p + "tokens").long()
    targets = d(p + "targets").long()
    loss, logits = ref_model(P, tokens, targets, V, nl, N, R, E)
    compare(p + "loss", d(p + "loss"), loss.reshape(1))
    compare(p + "logits", d(p + "logits"), logits)
    compare(p + "step_logits", d(p + "step_logits"), logits)   # recurrent generation path
    names = list(shapes)
    g = torch.autograd.grad(loss, [P[k] for k in names], allow_unused=True)
    for k, gk in zip(names, g):
        if gk is None:
            gk = torch.zeros_like(P[k])
        compare(p + "grad." + k, d(p + "grad." + k), gk)


# ---------------------------------------------------------------------------

def load_dump(name):
    """Builds build/NAME from test/NAME.cu when it is missing or older than its sources (the
    Makefile's g++ command), runs it, and returns its tensors; a failure is one FAIL line, the
    summary and exit 1. Every torch_*_check.py reads its dump this way."""
    src = os.path.join(ROOT, "test", name + ".cu")
    exe = os.path.join(ROOT, "build", name)
    deps = [src] + glob.glob(os.path.join(ROOT, "test", "*.h")) + glob.glob(os.path.join(ROOT, "src", "*.h"))
    steps = []
    if not os.path.exists(exe) or os.path.getmtime(exe) < max(map(os.path.getmtime, deps)):
        os.makedirs(os.path.dirname(exe), exist_ok=True)
        steps.append(("build " + name, ["g++", "-O3", "-march=native", "-fopenmp", "-std=c++17", "-Wall",
                                         "-Wno-unused-function", "-Wno-unknown-pragmas", "-x", "c++", src, "-o", exe, "-lm"]))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dump.bin")
        steps.append((name, [exe, path]))
        for label, cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                report(False, label, f"exit {r.returncode}: {(r.stdout + r.stderr).strip()[-2000:]}")
                finish()
        try:
            return Dump(read_tensor_file(path))
        except Exception as exc:
            report(False, name + " read", repr(exc))
            finish()


def main():
    d = load_dump("torch_dump")

    global SCAN_CHUNK
    if "scan.chunk" in d.t:
        SCAN_CHUNK = int(d("scan.chunk").item())
    else:
        report(False, "scan.chunk", "missing from the dump; assuming 64")
    for L in (1, 7, 70, 130):
        run_case(f"scan.L{L}", lambda L=L: case_scan(d, L))
    run_case("rmsnorm", lambda: case_rmsnorm(d))
    for L in (1, 7, 9):
        run_case(f"conv.L{L}", lambda L=L: case_conv(d, L))
    run_case("linear", lambda: case_linear(d, "linear", True))
    run_case("linear_nobias", lambda: case_linear(d, "linear_nobias", False))
    run_case("ce", lambda: case_ce(d))
    run_case("emb", lambda: case_embedding(d))
    run_case("act", lambda: case_activations(d))
    for name in ("model.T1", "model.T7", "model.T70", "model.S.T70", "model.R2.T9"):
        run_case(name, lambda name=name: case_model(d, name))
    finish()


if __name__ == "__main__":
    main()
