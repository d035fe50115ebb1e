#!/usr/bin/env python3
"""dev/attention_torch.py: PyTorch's scaled_dot_product_attention at the benchmark shapes of
dev/attention.cu, on the GPU, for comparison with that table.

    python3 dev/attention_torch.py                   every backend that runs, fp32 and bf16
    python3 dev/attention_torch.py --backends auto   only PyTorch's own choice
    python3 dev/attention_torch.py --reps 100 --shapes vit

Layout as in src/attention.h: one packed qkv (B, T, 3C) tensor; q, k, v are strided (B, NH, T, hd)
views of it (no copies), as SDPA would get them from a fused qkv projection. Causal shapes use
is_causal=True; the key-padding shape (lengths, the VLM's LM) uses a boolean attn_mask (B, 1, T, T)
= key j < lengths[b] (and j <= i, since is_causal cannot be combined with a mask). The lengths are the
ones dev/attention.cu draws (same xorshift stream), so both tables count the same visible pairs.

Timing as dev_bench_ms: warm-up runs, then CUDA events around each run, the L2 flushed (a 192 MB
write) before every run, the median reported. Each timed call is a CUDA-graph replay (the kernels
alone, like the C++ launches of the dev table; the last column says "graph"), or an eager call where
capture fails or with --eager (then Python and dispatcher time is included: it exceeds the GPU time
of the small VLM shapes). Rows (same 8 columns as the dev table):
  sdpa fwd      forward with autograd on (saves what the backward needs, like our lse)
  sdpa bwd      torch.autograd.grad(out, (q, k, v), dout) on a saved graph (SDPA's backward alone)
  sdpa fwd+bwd  both
FLOPs: 4*hd per visible (query, key) pair and head forward, 10*hd backward (our counting); the floor
bytes: read qkv + write out (fwd), read qkv, dout, out + read and write dqkv (bwd; ours accumulates),
so the "x floor" column is computed exactly as in dev/attention.cu (fp32: 67 TFLOP/s CUDA-core peak;
bf16: 989 TFLOP/s tensor-core peak; HBM 3.0 TB/s). SDPA's output is (B, NH, T, hd): the transpose to
our (B, T, C) is not timed.

Before timing, a sanity check: SDPA (every backend, fp32 and bf16) against a plain
softmax(Q K^T / sqrt(d)) V in float64 with the same masks, outputs and gradients.
"""
import argparse
import math
import statistics
import struct
import sys
import warnings

import torch
import torch.nn.functional as F

DEV_MEM_BW = 3.0e12
FP32_FLOPS = 67e12
BF16_TC_FLOPS = 989e12

# name, B, T, C, NH, causal, lengths (as att_bench_shapes in dev/attention.cu)
SHAPES = [
    ("vlm vit B64 T65", 64, 65, 128, 4, False, False),
    ("vlm lm B64 T89 c+len", 64, 89, 128, 4, True, True),
    ("gpt B8 T1024 causal", 8, 1024, 768, 12, True, False),
    ("vit-b B64 T197", 64, 197, 768, 12, False, False),
]

M64 = (1 << 64) - 1


class Rng:
    """src/common.h's xorshift* generator (rng_seed / rng_u32 / rng_uniform), bit for bit"""

    def __init__(self, seed):
        self.state = (seed * 0x9E3779B97F4A7C15 + 1) & M64

    def u32(self):
        s = self.state
        s ^= s >> 12
        s ^= (s << 25) & M64
        s ^= s >> 27
        self.state = s
        return ((s * 0x2545F4914F6CDD1D) & M64) >> 32

    def uniform(self):
        return (self.u32() >> 8) * (1.0 / 16777216.0)


def f32(x):
    """x rounded to float32 (round to nearest even)"""
    return struct.unpack("f", struct.pack("f", x))[0]


def bench_lengths(B, T):
    """att_bench_lengths: uniform in [T/2, T]; the float product rounded to float32 as in C (exact in
    double before the rounding: 24-bit uniform times a small integer)"""
    r = Rng(1234)
    n = T - T // 2 + 1
    return [T // 2 + int(f32(r.uniform() * n)) % n for _ in range(B)]


def visible_pairs(lengths, B, T, causal):
    n = 0
    for b in range(B):
        L = T if lengths is None else max(0, min(T, lengths[b]))
        for i in range(T):
            n += min(L, i + 1) if causal else L
    return n


def key_mask(lengths, B, T, causal, device):
    """(B, 1, T, T) bool, True = attend: key j < lengths[b] (and j <= i if causal)"""
    j = torch.arange(T, device=device)
    m = j.view(1, 1, 1, T) < torch.tensor(lengths, device=device).view(B, 1, 1, 1)
    if causal:
        m = m & (j.view(1, 1, 1, T) <= j.view(1, 1, T, 1))
    return m.expand(B, 1, T, T).contiguous()


def split_qkv(qkv, NH):
    B, T, C3 = qkv.shape
    hd = C3 // 3 // NH
    return qkv.view(B, T, 3, NH, hd).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, NH, T, hd), strided


# ---------------------------------------------------------------------------
# backends: torch.nn.attention.sdpa_kernel (torch >= 2.3), else torch.backends.cuda.sdp_kernel

def backend_context(name):
    import contextlib

    if name == "auto":
        return contextlib.nullcontext()
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        b = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
             "math": SDPBackend.MATH, "cudnn": getattr(SDPBackend, "CUDNN_ATTENTION", None)}[name]
        if b is None:
            raise RuntimeError("no cudnn backend in this torch")
        return sdpa_kernel(b)
    except ImportError:
        if name == "cudnn":
            raise RuntimeError("no cudnn backend in this torch")
        return torch.backends.cuda.sdp_kernel(enable_flash=name == "flash", enable_mem_efficient=name == "efficient",
                                              enable_math=name == "math")


def auto_choice(q, k, v, mask, causal):
    """the backend SDPA picks by itself (a private helper; '?' where it is missing)"""
    try:
        idx = int(torch._fused_sdp_choice(q, k, v, mask, 0.0, causal))
        from torch.nn.attention import SDPBackend

        for name, b in SDPBackend.__members__.items():
            if int(b) == idx:
                return name.lower().replace("_attention", "")
        return str(idx)
    except Exception:
        return "?"


# ---------------------------------------------------------------------------
# timing

_flush_buf = None


def graphed(fn):
    """fn captured in a CUDA graph (replay = the kernels alone, without Python and dispatcher time,
    which exceeds the GPU time of the small shapes); None where capture fails"""
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        torch.cuda.synchronize()
        return g.replay
    except Exception:
        torch.cuda.synchronize()
        return None


def bench_ms(fn, warmup, reps):
    global _flush_buf
    if _flush_buf is None:
        _flush_buf = torch.empty(192 << 20, dtype=torch.uint8, device="cuda")
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        _flush_buf.zero_()  # evict what the previous run left in L2 (not timed)
        t0 = torch.cuda.Event(enable_timing=True)
        t1 = torch.cuda.Event(enable_timing=True)
        t0.record()
        fn()
        t1.record()
        t1.synchronize()
        times.append(t0.elapsed_time(t1))
    return statistics.median(times)


def print_header():
    print("%-22s | %-28s | %-24s | %-5s | %9s | %7s | %-34s | %s" % (
        "family", "version", "shape", "dtype", "time ms", "GB/s", "x floor (mem / flop floor ms) TF/s", "note"))


def print_row(family, version, shape, dtype, ms, nbytes, flops, peak, note):
    mem_ms = nbytes / DEV_MEM_BW * 1e3
    flop_ms = flops / peak * 1e3
    fl = "%6.2fx (%.4f / %.4f) %6.1f TF/s" % (ms / max(mem_ms, flop_ms), mem_ms, flop_ms, flops / (ms * 1e-3) / 1e12)
    print("%-22s | %-28s | %-24s | %-5s | %9.4f | %7.1f | %-34s | %s" % (
        family, version, shape, dtype, ms, nbytes / (ms * 1e-3) / 1e9, fl, note))
    sys.stdout.flush()


def run_shape(shape, dtype, backend, warmup, reps, use_graph):
    name, B, T, C, NH, causal, use_len = shape
    hd = C // NH
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(97)
    qkv = torch.randn(B, T, 3 * C, device=dev, dtype=dtype, generator=g).requires_grad_(True)
    q, k, v = split_qkv(qkv, NH)
    lengths = bench_lengths(B, T) if use_len else None
    mask = key_mask(lengths, B, T, causal, dev) if use_len else None
    is_causal = causal and not use_len
    pairs = visible_pairs(lengths, B, T, causal) * NH
    es = torch.finfo(dtype).bits // 8
    n_qkv, n_out, n_lse = B * T * 3 * C, B * T * C, B * NH * T
    peak = BF16_TC_FLOPS if dtype == torch.bfloat16 else FP32_FLOPS
    dname = "bf16" if dtype == torch.bfloat16 else "fp32"
    chosen = auto_choice(q, k, v, mask, is_causal) if backend == "auto" else backend
    version = "torch sdpa %s" % (backend if backend != "auto" else "auto:" + chosen)
    with backend_context(backend):
        def fwd():
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)

        out = fwd()
        dout = torch.randn(out.shape, device=dev, dtype=dtype, generator=g)

        def bwd():
            return torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)

        def fwd_bwd():
            return torch.autograd.grad(fwd(), (q, k, v), dout)

        bwd()  # the backend may refuse only at the backward
        b_fwd = es * (n_qkv + n_out) + 4.0 * n_lse
        b_bwd = es * (3.0 * n_qkv + 2.0 * n_out) + 4.0 * n_lse
        base_note = "mask" if use_len else ("is_causal" if causal else "")
        for family, fn, nbytes, flops in [("sdpa fwd", fwd, b_fwd, 4.0 * pairs * hd),
                                          ("sdpa bwd", bwd, b_bwd, 10.0 * pairs * hd),
                                          ("sdpa fwd+bwd", fwd_bwd, b_fwd + b_bwd, 14.0 * pairs * hd)]:
            g_fn = graphed(fn) if use_graph else None
            note = (base_note + " " + ("graph" if g_fn else "eager")).strip()
            ms = bench_ms(g_fn or fn, warmup, reps)
            print_row(family, version, name, dname, ms, nbytes, flops, peak, note)


# ---------------------------------------------------------------------------
# sanity: SDPA against a plain softmax(Q K^T / sqrt(d)) V in float64

def plain_attention(q, k, v, mask):
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def sanity(backends):
    dev = "cuda"
    ok = True
    g = torch.Generator(device=dev).manual_seed(5)
    for B, T, NH, hd, causal, use_len in [(2, 65, 4, 32, False, False), (3, 89, 4, 32, True, True),
                                          (2, 197, 3, 64, False, True), (1, 130, 2, 64, True, False)]:
        C = NH * hd
        qkv64 = torch.randn(B, T, 3 * C, device=dev, dtype=torch.float64, generator=g)
        dout64 = torch.randn(B, NH, T, hd, device=dev, dtype=torch.float64, generator=g)
        lengths = [max(1, T - 17 * b) for b in range(B)] if use_len else [T] * B  # every row sees a key
        mask = key_mask(lengths, B, T, causal, dev)
        ref_in = qkv64.clone().requires_grad_(True)
        ref = plain_attention(*split_qkv(ref_in, NH), mask)
        (ref_grad,) = torch.autograd.grad(ref, ref_in, dout64)
        # fp32: 5e-3 admits a TF32 kernel; a wrong mask, causal flag or scale is an O(1) error
        for dtype, tol in [(torch.float32, 5e-3), (torch.bfloat16, 3e-2)]:
            for backend in backends:
                x = qkv64.to(dtype).requires_grad_(True)
                q, k, v = split_qkv(x, NH)
                try:
                    with backend_context(backend):
                        if use_len:
                            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                        else:
                            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                        (grad,) = torch.autograd.grad(out, x, dout64.to(dtype))
                except RuntimeError as e:
                    print("sanity %-9s %s B=%d T=%d NH=%d hd=%d causal=%d lengths=%d: not run (%s)" % (
                        backend, str(dtype)[6:], B, T, NH, hd, causal, use_len, str(e).splitlines()[0][:60]))
                    continue
                e_out = ((out.double() - ref).norm() / ref.norm()).item()
                e_grad = ((grad.double() - ref_grad).norm() / ref_grad.norm()).item()
                good = e_out <= tol and e_grad <= tol
                ok &= good
                print("sanity %-9s %-8s B=%d T=%d NH=%d hd=%d causal=%d lengths=%d: rel err out %.2e grad %.2e %s" % (
                    backend, str(dtype)[6:], B, T, NH, hd, causal, use_len, e_out, e_grad, "ok" if good else "FAIL"))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backends", default="auto,flash,efficient,cudnn,math",
                    help="comma list of auto, flash, efficient, cudnn, math (default: all; those that refuse a "
                         "shape or dtype are reported and skipped)")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--shapes", default="", help="only shapes whose name contains one of these comma words")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--eager", action="store_true",
                    help="time eager calls (Python + dispatcher overhead included) instead of CUDA-graph replays")
    ap.add_argument("--no-sanity", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("attention_torch.py: needs a CUDA GPU (torch.cuda.is_available() is False)")
    torch.backends.cuda.matmul.allow_tf32 = False  # the math backend's fp32 matmuls stay fp32
    # a forced backend that cannot run a case warns why before raising: the "not run" line says it once
    warnings.simplefilter("ignore", UserWarning)
    backends = [b for b in args.backends.split(",") if b]
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    print("# %s, torch %s, CUDA %s" % (torch.cuda.get_device_name(), torch.__version__, torch.version.cuda))
    if not args.no_sanity:
        if not sanity(backends):
            print("sanity: FAILED")
            sys.exit(1)
        print("sanity: ok")
    print_header()
    words = [w for w in args.shapes.split(",") if w]
    for shape in SHAPES:
        if words and not any(w in shape[0] for w in words):
            continue
        for dn in args.dtypes.split(","):
            for backend in backends:
                try:
                    run_shape(shape, dtypes[dn], backend, args.warmup, args.reps, not args.eager)
                except RuntimeError as e:  # e.g. flash with a mask or fp32, cudnn with fp32, out of memory
                    print("# %s %s %s: not run (%s)" % (shape[0], dn, backend, str(e).splitlines()[0][:90]))
                    torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
