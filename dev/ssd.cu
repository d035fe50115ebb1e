// dev/ssd.cu: Mamba-2's SSD (chunked scan), forward and forward + backward, against the CPU
// reference (src/ssd.h) and the official Triton kernels' figures (mamba_chunk_scan_combined).
//
//   ./dev_ssd          all versions;   ./dev_ssd N [M ...]   the versions named
//   v1  (measured, then replaced in src/: dev/notes_kernels.md has its figures)
//       SIMT fp32, chunks of 64, one block per (chunk, head, batch);
//       forward = chunk states (outer products) -> state passing (in place) -> outputs
//       (C B^T masked in shared memory); backward recomputes the states, then
//       d(state) per chunk -> reverse state passing -> one kernel per chunk for every gradient.
//       Prediction: well above the Triton kernels, which run the four matmuls on tensor
//       cores in bf16 with chunks of 256: SIMT fp32 is ~60 TFLOP/s at best against ~800
//       (bf16 tensor cores), and the chunk kernels hold 128-180 KB of shared memory (one block
//       per SM). The next versions: mma.sync / wgmma for C B^T, the chunk states and the
//       outputs, bf16 inputs, chunk 128-256.
//       Outcome: 25.1 / 83.2 ms at L2048 (31x / 27x the Triton times): far worse than predicted.
//       The hot loops read shared rows of N = 128 floats column-wise (B_s[n] for 32 values
//       of s; H[p][n] for 32 values of p): 32-way bank conflicts.
//   v2  rows padded to N + 1 (and P + 1) floats, so a warp's column read hits 32 banks; the
//       backward's mask exp(cs_t - cs_s) folded into the C B^T matrix once instead of once per
//       (s, p, t). Prediction: ~10x faster (the conflicts were the cost).
//       Outcome: forward 3.4x faster (7.4 ms), backward only 1.9x (49 ms fwd+bwd).
//   v3  src/ssd.h's SIMT path (the fallback for shapes the tensor-core path does not take): the
//       backward's atomics. dB and dC were added by the 24 heads of a group into the same rows
//       with global float atomics: now per-head parts (plain stores) and a sum over the heads of
//       each group; the per-element shared atomics (ddt, d(cs), dD) are warp shuffles with one
//       atomic per warp. Prediction: the backward at ~2x the forward. Outcome: 7.4 / 26.4 ms.
//   v4  tensor cores and a new decomposition (src/ssd.h's ssd_tc_*: see the comment there).
//       Every product inside a chunk on TF32 mma.sync (m16n8k8, fp32 accumulate); chunk Q = 64.
//       Forward: C Bᵀ once per (chunk, group) (the 24 heads of a group share it), then ONE
//       sequential kernel per (32-channel slice, head, batch) that walks the chunks keeping its
//       slice of the state in mma accumulators: the states never go through device memory
//       (v3 wrote, re-read in place and read again B*nc*H*P*N floats = 201 MB at L2048).
//       Backward: the states recomputed by the same kernel (written this time), the state
//       gradients by the mirror kernel walking the chunks in reverse, then one block per
//       (chunk, group) that walks the group's heads with their inputs double-buffered by
//       cp.async and keeps the group's dB and dC in accumulators (no per-head partial buffers,
//       no atomics but dA and dD). Why: v3's time is SIMT fp32 arithmetic (~26 ms for ~60
//       GFLOP of useful work) plus 5 passes over the 201 MB state tensors.
//       Prediction: fwd+bwd ~0.85 / ~2.8 ms at L2048 / L8192. Outcome (H100): 1.63 / 3.65 ms fwd /
//       fwd+bwd at L2048, 6.57 / 14.3 at L8192; errors 2e-4 - 7e-4 (TF32) on every output.
//   v5  v4 with one block per head (64 channels, 8 warps) in the sequential kernels: 1.12 / 2.92 ms.
//   v6  v4 with chunks of 32: 0.81 / 3.15 ms.
//   v7  v4 with the states and state gradients stored in bf16: 1.60 / 3.49 ms.
//       v4-v7 measured (dev/notes_kernels.md), then replaced by v8: every kernel was 3-6x
//       slower than predicted, latency-bound: the sequential kernels staged each chunk with a
//       loop of float4 load -> shared store (one load in flight per thread at a time), and the
//       per-chunk backward read-modify-wrote dx, ddt, dB, dC with the loads serialised.
//   v8  src/ssd.h now: the sequential kernels copy each chunk's inputs with cp.async into one of
//       two stages while the previous chunk computes; the forward runs chunks of 32 (two stages
//       of B, C, C Bᵀ, x fit twice per SM, Q 64 would fit once) and the backward chunks of 64
//       (half the state tensors); the per-chunk backward prefetches dx and ddt with its inputs and
//       loads dB, dC rows before adding. Q is a template parameter of every tensor-core kernel.
//       Outcome: 0.74 / 2.26 ms at L2048 (0.72x Triton fwd+bwd), 2.89 / 8.69 at L8192.
//   v9  v8 with the backward's states and state gradients stored in bf16 (v7's change on v8):
//       0.73 / 2.10 and 2.79 / 8.18 ms.
//   v10 v8 with 64 channels (8 warps) per block in the backward's two sequential kernels: half
//       the L2 reads of C (B) per output, 192 blocks of 108 KB, all resident: 0.71 / 2.08 and
//       2.79 / 8.13 ms.
//       v8-v10 measured, then replaced by v11: 2-3x over the predictions; the sequential forward
//       ran at 20 TFLOP/s and 1.4 TB/s of L2 reads, neither ceiling: every k-step of every product
//       waited for its own fragment loads (2 warps per scheduler, rolled k loops).
//   v11 src/ssd.h now: every product's K is a compile-time constant and its k loop unrolled (the
//       loads of later k-steps overlap the mma of earlier ones); the causal products run their
//       full K (the masked tiles are zeros: ~10% more mma); the mma asm is not volatile.
//       v8's configuration otherwise (fwd chunk 32, bwd chunk 64, 32 channels, fp32 states).
//       Outcome: 0.56 / 2.00 ms (0.64x) and 2.18 / 7.69 ms (1.66x): less than predicted (~1.1 ms).
//   v12 v11 with bf16 state tensors and 64 channels per block in the backward's sequential kernels
//       (v9 and v10's changes together): 0.55 / 1.72 and 2.22 / 6.61 ms.
//   v13 v12 with 64 channels (8 warps, 1 block per SM, 192 blocks) in the forward: half its L2
//       reads of B, C, C Bᵀ: 0.51 / 1.65 and 1.96 / 6.41 ms (0.52x / 1.38x Triton).
//   v14 v11 with 64 channels per block in the backward's sequential kernels (fp32 states): 0.54 /
//       1.88 and 2.12 / 7.07 ms.
//   v15 v13 with 16 warps (512 threads) in the per-chunk backward: twice the warps to hide the
//       latency of its fragment loads and barriers, smaller tiles per warp (more shared reads per
//       mma): 0.52 / 1.74 and 1.97 / 6.61 ms, slower than v13.
//       v11-v15 measured (dev/notes_kernels.md, with an Nsight Compute profile), then replaced by
//       v16: the kernels are issue-bound (0.4-0.5 instructions per scheduler per cycle, 2 warps each).
//   v16 src/ssd.h now (v13's configuration: bf16 state tensors, 64 channels when P % 64 == 0):
//       fewer instructions in the per-chunk backward: the head's masked decayed C Bᵀ computed once
//       per head into shared memory (where it fits: the bf16-state build) instead of an exp per A
//       element per slice; bf16 state elements passed to the mma as they are (exact in tf32);
//       exp(cl - cs_s) dt_s precomputed per head. Prediction: the per-chunk backward -15%.
//       Outcome: it took -8% (0.76 -> 0.70 ms at L2048; 15% fewer instructions, a lower issue
//       rate); 0.52 / 1.62 ms (0.52x Triton fwd+bwd) and 2.03 / 6.18 ms (1.33x) at L8192.
//   v17 v16 with fp32 state tensors (no room for the per-head C Bᵀ buffer): the accurate option:
//       0.51 / 1.82 (0.58x) and 1.96 / 6.93 ms (1.49x); errors <= 7e-4 instead of <= 2.6e-3.
//   v18 the sequential forward's state read C_t H_cᵀ from the state's mma accumulators
//       (src/ssd.h ssd_tc_fwd_kernel): computed transposed, Yᵀ = H Cᵀ, the state tile is the A
//       operand (an accumulator fragment is an A fragment once the k order is permuted) and C is
//       read in 64-bit pairs; the two warps sharing a row block each take half of n (state read)
//       and half of s (diagonal block) and swap halves of Yᵀ through shared memory. The shared
//       (PT x N) state copy is gone: 110 KB per block, two per SM, the 192 blocks in one wave
//       (v16: 133 KB, one per SM, 1.45 waves). Backward = v16.
//       Prediction: sequential forward -35% (1.94 -> ~1.25 ms at L8192).
//       Outcome (H100): 1.95 -> 1.30 ms (0.50 -> 0.34 at L2048); fwd 1.34 / fwd+bwd 5.45 ms at L8192.
//   v19 v18 + the per-chunk backward (ssd_tc_chunk_bwd2_kernel) runs the products whose operands
//       are k-contiguous in shared memory with k permuted inside each k-step (SsdTile::mma_kp):
//       one LDS.64 per fp32 register pair, one LDS.32 per bf16 state pair; W stored transposed and
//       pre-rounded; rows re-padded for the paired reads. Prediction: per-chunk backward -10%.
//       Outcome: 2.67 -> 2.45 ms at L8192 (-8%); fwd+bwd 5.24 ms.
//   v20 v19 + the backward's fp32 operands passed to the mma unrounded (the tensor core truncates to
//       tf32; no cvt per register) in the states, state-gradient and per-chunk kernels.
//       Prediction: -10% per-chunk, -5% states kernels; gradient errors up ~1.5x.
//       Outcome: per-chunk 2.42, states 0.67, state gradients 0.61 ms; fwd+bwd 4.99 ms at L8192
//       (1.07x Triton), 1.29 at L2048 (0.41x); errors <= 2.7e-3 (v16 <= 2.6e-3).
//   v21 v20 + the forward's operands truncated too (no cvt in ssd_tc_fwd_kernel). Prediction:
//       forward -8%, y's error ~2x. Outcome: forward 1.34 -> 1.20 ms at L8192, y's error 3.6e-4 ->
//       8.8e-4: not shipped (the forward's accuracy is what inference sees).
//   v22 v20 with 32 x 32 warp tiles in the backward's N-wide products (states, state gradients, the
//       per-chunk dC and dB). Prediction: -5% on those kernels. Outcome: states -4%, state gradients
//       +3%, per-chunk +4%: no gain. src/ssd.h = v20 (SSD_TC_FWD2, SSD_TC_BWD2, SSD_TC_TRUNC).
//   `./dev_ssd profile`: one warm-up and one timed fwd+bwd through ssd_forward_cuda /
//   ssd_backward_cuda at B8 L2048 H24 P64 N128 (for ncu).
//
// Floors at B8 H24 P64 N128 G1 (dev/notes_kernels.md has the derivation), fp32 in memory:
//   bytes (each input read once, each output written once): fwd 220 / 879 MB at L2048 / L8192
//   (0.073 / 0.293 ms at 3.0 TB/s); bwd 339 / 1355 MB (0.113 / 0.452 ms); fwd+bwd 0.186 / 0.745 ms.
//   FLOPs (chunk 64, the tensor cores' full 16x8 tiles, C Bᵀ once per group): fwd 41.6 K per
//   (token, head) = 16.4 / 65.5 GFLOP; bwd 100 K = 39.5 / 158 GFLOP; at ~300 TFLOP/s (TF32
//   mma.sync, ~60% of the dense peak) fwd+bwd 0.19 / 0.74 ms: the two floors coincide.
//   v4's own intermediates add 4 passes over the states (201 / 805 MB each) in the backward.
#include "dev_common.h"
#include "../src/ssd.h"


// ---------------------------------------------------------------------------
// the versions, behind ssd_forward_cuda / ssd_backward_cuda's arguments

typedef void (*SsdFwd)(floatX*, float*, const floatX*, const floatX*, const float*, const floatX*, const floatX*,
                       const float*, const float*, int, int, int, int, int, int, int);
typedef void (*SsdBwd)(floatX*, floatX*, float*, floatX*, floatX*, float*, float*, const floatX*, const float*,
                       const floatX*, const floatX*, const float*, const floatX*, const floatX*, const float*,
                       const float*, int, int, int, int, int, int);

template <int Q, int PT>
static void tc_fwd(floatX* y, float* fs, const floatX* x, const floatX* dt, const float* A, const floatX* Bm, const floatX* Cm,
                   const float* D, const float* h0, int B, int L, int H, int P, int G, int N, int) {
    if (B == 0 || L == 0) return;
    if (N == 128) ssd_tc_forward<Q, 128, PT>(y, fs, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G);
    else if (N == 64) ssd_tc_forward<Q, 64, PT>(y, fs, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G);
    else FATAL("tc_fwd: N %d not compiled", N);
}
template <int Q, int PT, bool TR = false>
static void tc_fwd2(floatX* y, float* fs, const floatX* x, const floatX* dt, const float* A, const floatX* Bm, const floatX* Cm,
                    const float* D, const float* h0, int B, int L, int H, int P, int G, int N, int) {
    if (B == 0 || L == 0) return;
    if (N == 128) ssd_tc_forward2<Q, 128, PT, TR>(y, fs, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G);
    else if (N == 64) ssd_tc_forward2<Q, 64, PT, TR>(y, fs, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G);
    else FATAL("tc_fwd2: N %d not compiled", N);
}
template <int Q, int PT, typename ST, int WB = 8, bool V2 = false, bool TR = false, int WMT = 0>
static void tc_bwd(floatX* dx, floatX* ddt, float* dA, floatX* dBm, floatX* dCm, float* dD, float* dh0, const floatX* dy,
                   const float* dfs, const floatX* x, const floatX* dt, const float* A, const floatX* Bm, const floatX* Cm,
                   const float* D, const float* h0, int B, int L, int H, int P, int G, int N) {
    if (B == 0 || L == 0) return;
    if (N == 128) ssd_tc_backward<Q, 128, PT, ST, WB, V2, TR, WMT>(dx, ddt, dA, dBm, dCm, dD, dh0, dy, dfs, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G);
    else if (N == 64) ssd_tc_backward<Q, 64, PT, ST, WB, V2, TR, WMT>(dx, ddt, dA, dBm, dCm, dD, dh0, dy, dfs, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G);
    else FATAL("tc_bwd: N %d not compiled", N);
}

static void v3_fwd(floatX* y, float* fs, const floatX* x, const floatX* dt, const float* A, const floatX* Bm, const floatX* Cm,
                   const float* D, const float* h0, int B, int L, int H, int P, int G, int N, int) {
    ssd_forward_simt_cuda(y, fs, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G, N);
}

struct Version {
    int id;
    const char* name;
    SsdFwd fwd;
    SsdBwd bwd;
    int pdiv;        // P must be a multiple of this
    double tol;      // relative error allowed (y, final state, every gradient)
};
static const Version g_versions[] = {
    {3, "v3 simt fp32 Q64", v3_fwd, ssd_backward_simt_cuda, 1, 1e-4},
    {16, "v16 bf16 states", tc_fwd<32, 64>, tc_bwd<64, 64, bf16>, 64, 1e-2},
    {17, "v17 v16 fp32 states", tc_fwd<32, 64>, tc_bwd<64, 64, float>, 64, 5e-3},
    {18, "v18 fwd: state from regs", tc_fwd2<32, 64>, tc_bwd<64, 64, bf16>, 64, 1e-2},
    {19, "v19 v18 + bwd paired k", tc_fwd2<32, 64>, tc_bwd<64, 64, bf16, 8, true, false>, 64, 1e-2},
    {20, "v20 src: bwd truncated", tc_fwd2<32, 64>, tc_bwd<64, 64, bf16, 8, true, true>, 64, 1e-2},
    {21, "v21 v20 + fwd truncated", tc_fwd2<32, 64, true>, tc_bwd<64, 64, bf16, 8, true, true>, 64, 1e-2},
    {22, "v22 v20 + bwd 32x32 tiles", tc_fwd2<32, 64>, tc_bwd<64, 64, bf16, 8, true, true, 2>, 64, 1e-2},
};

struct Problem {
    int B, L, H, P, G, N;
    std::vector<float> x, dt, A, Bm, Cm, D, dy, h0, dfs;
    Problem(int B_, int L_, int H_, int P_, int G_, int N_, uint64_t seed) : B(B_), L(L_), H(H_), P(P_), G(G_), N(N_) {
        Rng r; rng_seed(&r, seed);
        size_t BLHP = (size_t)B * L * H * P, BLGN = (size_t)B * L * G * N, BHPN = (size_t)B * H * P * N;
        x.resize(BLHP); dev_fill_uniform(x, -1.5f, 1.5f, &r);
        dy.resize(BLHP); dev_fill_uniform(dy, -1.0f, 1.0f, &r);
        Bm.resize(BLGN); dev_fill_uniform(Bm, -1.0f, 1.0f, &r);
        Cm.resize(BLGN); dev_fill_uniform(Cm, -1.0f, 1.0f, &r);
        D.resize(H); dev_fill_uniform(D, -1.0f, 1.0f, &r);
        dt.resize((size_t)B * L * H);
        for (auto& v : dt) v = softplus_f(-6.9f + 4.6f * rng_uniform(&r));  // ~[0.001, 0.095], Mamba-2's init
        A.resize(H);
        for (auto& v : A) v = -expf(-1.0f + 3.0f * rng_uniform(&r));
        h0.resize(BHPN); dev_fill_uniform(h0, -1.0f, 1.0f, &r);
        dfs.resize(BHPN); dev_fill_uniform(dfs, -1.0f, 1.0f, &r);
    }
};

// every output of one version against the CPU reference at one shape; prints one line
static bool validate(const Version& v, int B, int L, int H, int P, int G, int N, bool with_h0, bool with_dfs, uint64_t seed) {
    if (P % v.pdiv) return true;
    Problem p(B, L, H, P, G, N, seed);
    size_t BLHP = (size_t)B * L * H * P, BLGN = (size_t)B * L * G * N, BLH = (size_t)B * L * H, BHPN = (size_t)B * H * P * N;
    const float* h0 = with_h0 ? p.h0.data() : nullptr;
    const float* dfs = with_dfs ? p.dfs.data() : nullptr;
    std::vector<float> y(BLHP), fs(BHPN), dx(BLHP, 0), ddt(BLH, 0), dA(H, 0), dB(BLGN, 0), dC(BLGN, 0), dD(H, 0), dh0(BHPN, 0);
    ssd_forward_chunked_cpu(y.data(), fs.data(), p.x.data(), p.dt.data(), p.A.data(), p.Bm.data(), p.Cm.data(), p.D.data(), h0,
                            B, L, H, P, G, N, 64);
    ssd_backward_cpu(dx.data(), ddt.data(), dA.data(), dB.data(), dC.data(), dD.data(), dh0.data(), p.dy.data(), dfs, p.x.data(),
                     p.dt.data(), p.A.data(), p.Bm.data(), p.Cm.data(), p.D.data(), h0, B, L, H, P, G, N);
    float *gx = dev_upload<float>(p.x), *gdt = dev_upload<float>(p.dt), *gA = dev_upload<float>(p.A), *gB = dev_upload<float>(p.Bm);
    float *gC = dev_upload<float>(p.Cm), *gD = dev_upload<float>(p.D), *gdy = dev_upload<float>(p.dy);
    float *gh0 = with_h0 ? dev_upload<float>(p.h0) : nullptr, *gdfs = with_dfs ? dev_upload<float>(p.dfs) : nullptr;
    float *gy = dev_alloc<float>(BLHP), *gfs = dev_alloc<float>(BHPN), *gdx = dev_alloc<float>(BLHP), *gddt = dev_alloc<float>(BLH);
    float *gdA = dev_alloc<float>(H), *gdB = dev_alloc<float>(BLGN), *gdC = dev_alloc<float>(BLGN), *gdD = dev_alloc<float>(H);
    float* gdh0 = dev_alloc<float>(BHPN);
    dev_poison(gy, BLHP * 4);
    dev_poison(gfs, BHPN * 4);
    for (auto q : {std::make_pair(gdx, BLHP), std::make_pair(gddt, BLH), std::make_pair(gdA, (size_t)H), std::make_pair(gdB, BLGN),
                   std::make_pair(gdC, BLGN), std::make_pair(gdD, (size_t)H), std::make_pair(gdh0, BHPN)})
        cudaCheck(cudaMemset(q.first, 0, q.second * 4));
    v.fwd(gy, gfs, gx, gdt, gA, gB, gC, gD, gh0, B, L, H, P, G, N, 64);
    cudaCheck(cudaGetLastError());
    v.bwd(gdx, gddt, gdA, gdB, gdC, gdD, gdh0, gdy, gdfs, gx, gdt, gA, gB, gC, gD, gh0, B, L, H, P, G, N);
    cudaCheck(cudaDeviceSynchronize());
    struct Out { const char* name; float* d; const std::vector<float>* ref; };
    Out outs[] = {{"y", gy, &y}, {"fs", gfs, &fs}, {"dx", gdx, &dx}, {"ddt", gddt, &ddt}, {"dA", gdA, &dA},
                  {"dB", gdB, &dB}, {"dC", gdC, &dC}, {"dD", gdD, &dD}, {"dh0", gdh0, &dh0}};
    bool ok = true;
    char line[512];
    int at = snprintf(line, sizeof line, "  %-24s B%d L%-4d H%d P%d G%d N%-3d %s%s:", v.name, B, L, H, P, G, N, with_h0 ? "h0 " : "",
                      with_dfs ? "dfin " : "");
    for (auto& o : outs) {
        double e = dev_rel_err(dev_download(o.d, o.ref->size()), *o.ref);
        bool good = e <= v.tol;
        ok &= good;
        g_dev_checks++;
        if (!good) g_dev_failures++;
        at += snprintf(line + at, sizeof line - at, " %s %.1e%s", o.name, e, good ? "" : "(FAIL)");
    }
    printf("%s\n", line);
    fflush(stdout);
    for (float* q : {gx, gdt, gA, gB, gC, gD, gdy, gh0, gdfs, gy, gfs, gdx, gddt, gdA, gdB, gdC, gdD, gdh0})
        if (q) dev_free(q);
    return ok;
}

// the tensor-core kernels timed one by one: the forward's (chunk QF) and the backward's (chunk QB)
template <int QF, int QB, int N, int PTF, int PT, typename ST, bool F2 = false, bool V2 = false, bool TR = false, int WMT = 0>
static void tc_breakdown(const Problem& p, float* gx, float* gdt, float* gA, float* gB, float* gC, float* gD, float* gdy,
                         float* gy, float* gdx, float* gddt, float* gdA, float* gdB, float* gdC, float* gdD) {
    int B = p.B, L = p.L, H = p.H, P = p.P, G = p.G, ncf = ceil_div(L, QF), nc = ceil_div(L, QB);
    float* cbf = dev_alloc<float>((size_t)B * ncf * G * QF * QF);
    float* cb = dev_alloc<float>((size_t)B * nc * G * QB * QB);
    size_t n_states = (size_t)B * nc * H * P * N;
    ST *states = dev_alloc<ST>(n_states), *dstates = dev_alloc<ST>(n_states);
    size_t s0 = ssd_tc_cb_smem<QF, N>(), s1 = ssd_tc_cb_smem<QB, N>();
    size_t s2 = F2 ? SsdFwdSmem<QF, N, PTF>::floats : SsdSeqSmem<QF, N, PTF, true>::floats;
    size_t s3 = SsdSeqSmem<QB, N, PT, false>::floats, s4 = SsdDstateSmem<QB, N, PT>::floats;
    size_t s5 = V2 ? SsdChunkBwd2Smem<QB, N, WMT>::floats(P) : SsdChunkBwdSmem<QB, N, ST>::floats(P);
    ssd_set_smem((const void*)ssd_tc_cb_kernel<QF, N>, s0, "cb");
    ssd_set_smem((const void*)ssd_tc_cb_kernel<QB, N>, s1, "cb");
    if constexpr (F2) ssd_set_smem((const void*)ssd_tc_fwd_kernel<QF, N, PTF>, s2, "fwd");
    else ssd_set_smem((const void*)ssd_tc_seq_kernel<QF, N, PTF, true, float>, s2, "fwd");
    ssd_set_smem((const void*)ssd_tc_seq_kernel<QB, N, PT, false, ST, TR, WMT>, s3, "states");
    ssd_set_smem((const void*)ssd_tc_dstate_kernel<QB, N, PT, ST, TR, WMT>, s4, "dstates");
    if constexpr (V2) ssd_set_smem((const void*)ssd_tc_chunk_bwd2_kernel<QB, N, TR, WMT>, s5, "chunk bwd");
    else ssd_set_smem((const void*)ssd_tc_chunk_bwd_kernel<QB, N, ST>, s5, "chunk bwd");
    float ms[6];
    ms[0] = dev_bench_ms([&](int) { ssd_tc_cb_kernel<QF, N><<<dim3(ncf, G, B), 128, s0 * 4>>>(cbf, gB, gC, L, G); }, 2, 10);
    ms[1] = dev_bench_ms([&](int) {
        if constexpr (F2)
            ssd_tc_fwd_kernel<QF, N, PTF><<<dim3(P / PTF, H, B), PTF * 4, s2 * 4>>>(gy, nullptr, gx, gdt, gA, gB, gC, gD, nullptr, cbf,
                                                                                   L, H, P, G);
        else
            ssd_tc_seq_kernel<QF, N, PTF, true, float><<<dim3(P / PTF, H, B), PTF * 4, s2 * 4>>>(gy, nullptr, (float*)nullptr, gx, gdt, gA,
                                                                                      gB, gC, gD, nullptr, cbf, L, H, P, G);
    }, 2, 10);
    ms[2] = dev_bench_ms([&](int) { ssd_tc_cb_kernel<QB, N><<<dim3(nc, G, B), 128, s1 * 4>>>(cb, gB, gC, L, G); }, 2, 10);
    ms[3] = dev_bench_ms([&](int) {
        ssd_tc_seq_kernel<QB, N, PT, false, ST, TR, WMT><<<dim3(P / PT, H, B), PT * 4, s3 * 4>>>(nullptr, nullptr, states, gx, gdt, gA, gB, gC,
                                                                                   gD, nullptr, cb, L, H, P, G);
    }, 2, 10);
    ms[4] = dev_bench_ms([&](int) {
        ssd_tc_dstate_kernel<QB, N, PT, ST, TR, WMT><<<dim3(P / PT, H, B), PT * 4, s4 * 4>>>(dstates, nullptr, nullptr, gdy, gdt, gA, gC, L, H, P, G);
    }, 2, 10);
    ms[5] = dev_bench_ms([&](int) {
        if constexpr (V2)
            ssd_tc_chunk_bwd2_kernel<QB, N, TR, WMT><<<dim3(nc, G, B), 256, s5 * 4>>>(gdx, gddt, gdA, gdB, gdC, gdD, gdy, gx, gdt, gA, gB, gC,
                                                                                gD, cb, states, dstates, L, H, P, G);
        else
            ssd_tc_chunk_bwd_kernel<QB, N, ST><<<dim3(nc, G, B), 256, s5 * 4>>>(gdx, gddt, gdA, gdB, gdC, gdD, gdy, gx, gdt, gA, gB, gC, gD,
                                                                               cb, states, dstates, L, H, P, G);
    }, 2, 10);
    cudaCheck(cudaGetLastError());
    // bytes each kernel must move through device memory (fp32 activations; states of ST)
    double BLHP = (double)B * L * H * P, BLGN = (double)B * L * G * N, BLH = (double)B * L * H, st = (double)n_states * sizeof(ST);
    double cbf_b = (double)B * ncf * G * QF * QF * 4, cbb = (double)B * nc * G * QB * QB * 4;
    double by[6] = {8 * BLGN + cbf_b, 8 * BLHP + 8 * BLGN + 4 * BLH + cbf_b, 8 * BLGN + cbb, 4 * BLHP + 4 * BLGN + 4 * BLH + st,
                    4 * BLHP + 4 * BLGN + 4 * BLH + st, 16 * BLHP + 16 * BLGN + 12 * BLH + cbb + 2 * st};
    const char* names[6] = {"cb fwd", "seq forward", "cb bwd", "seq states", "seq dstates", "chunk bwd"};
    for (int i = 0; i < 6; i++)
        printf("     %-12s %8.4f ms  %7.1f GB/s  (%.0f MB)\n", names[i], ms[i], by[i] / (ms[i] * 1e-3) / 1e9, by[i] / 1e6);
    dev_free(cbf); dev_free(cb); dev_free(states); dev_free(dstates);
}

// one warm-up and one measured fwd+bwd of what src/ssd.h ships, for a profiler
static int profile_src() {
    Problem p(8, 2048, 24, 64, 1, 128, 5);
    size_t BLHP = (size_t)p.B * p.L * p.H * p.P, BLGN = (size_t)p.B * p.L * p.G * p.N, BLH = (size_t)p.B * p.L * p.H;
    float *gx = dev_upload<float>(p.x), *gdt = dev_upload<float>(p.dt), *gA = dev_upload<float>(p.A), *gB = dev_upload<float>(p.Bm);
    float *gC = dev_upload<float>(p.Cm), *gD = dev_upload<float>(p.D), *gdy = dev_upload<float>(p.dy);
    float *gy = dev_alloc<float>(BLHP), *gdx = dev_alloc<float>(BLHP), *gddt = dev_alloc<float>(BLH), *gdA = dev_alloc<float>(p.H);
    float *gdB = dev_alloc<float>(BLGN), *gdC = dev_alloc<float>(BLGN), *gdD = dev_alloc<float>(p.H);
    for (int rep = 0; rep < 2; rep++) {
        ssd_forward_cuda(gy, nullptr, gx, gdt, gA, gB, gC, gD, nullptr, p.B, p.L, p.H, p.P, p.G, p.N, 64);
        ssd_backward_cuda(gdx, gddt, gdA, gdB, gdC, gdD, nullptr, gdy, nullptr, gx, gdt, gA, gB, gC, gD, nullptr, p.B, p.L, p.H, p.P,
                          p.G, p.N);
    }
    cudaCheck(cudaDeviceSynchronize());
    printf("profile run done\n");
    return 0;
}

int main(int argc, char** argv) {
    cudaCheck(cudaSetDevice(0));
    if (argc > 1 && std::string(argv[1]) == "profile") return profile_src();
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s (%d SMs)\n", prop.name, prop.multiProcessorCount);
    std::vector<const Version*> run;
    for (auto& v : g_versions) {  // ./dev_ssd [N ...]: the versions named, or all
        bool want = argc < 2;
        for (int i = 1; i < argc; i++) want |= atoi(argv[i]) == v.id;
        if (want) run.push_back(&v);
    }
    // validation: fresh random inputs per shape; L = 1, 37 (one partial chunk), 130, 150, 300
    // (partial last chunks), 1 and 2 groups, with and without h0 / a final-state gradient
    printf("validation (relative errors against the CPU reference):\n");
    bool ok_all = true;
    for (const Version* v : run) {
        uint64_t seed = 100;
        ok_all &= validate(*v, 2, 1, 4, 64, 2, 64, true, true, seed++);
        ok_all &= validate(*v, 1, 37, 2, 64, 1, 128, false, false, seed++);
        ok_all &= validate(*v, 1, 300, 4, 64, 2, 128, true, true, seed++);
        ok_all &= validate(*v, 2, 130, 3, 64, 1, 64, false, true, seed++);
        ok_all &= validate(*v, 1, 150, 4, 32, 2, 128, true, false, seed++);
    }
    dev_print_header();
    struct Row { int id; int L; float f, fb; };
    std::vector<Row> rows;
    for (int L : {2048, 8192}) {
        Problem p(8, L, 24, 64, 1, 128, 11 + L);
        size_t BLHP = (size_t)p.B * p.L * p.H * p.P, BLGN = (size_t)p.B * p.L * p.G * p.N, BLH = (size_t)p.B * p.L * p.H;
        float *gx = dev_upload<float>(p.x), *gdt = dev_upload<float>(p.dt), *gA = dev_upload<float>(p.A);
        float *gB = dev_upload<float>(p.Bm), *gC = dev_upload<float>(p.Cm), *gD = dev_upload<float>(p.D), *gdy = dev_upload<float>(p.dy);
        float *gy = dev_alloc<float>(BLHP), *gdx = dev_alloc<float>(BLHP), *gddt = dev_alloc<float>(BLH), *gdA = dev_alloc<float>(p.H);
        float *gdB = dev_alloc<float>(BLGN), *gdC = dev_alloc<float>(BLGN), *gdD = dev_alloc<float>(p.H);
        for (auto q : {std::make_pair(gdx, BLHP), std::make_pair(gddt, BLH), std::make_pair(gdA, (size_t)p.H), std::make_pair(gdB, BLGN),
                       std::make_pair(gdC, BLGN), std::make_pair(gdD, (size_t)p.H)})
            cudaCheck(cudaMemset(q.first, 0, q.second * 4));
        double bytes_f = 4.0 * (2.0 * BLHP + BLH + 2.0 * BLGN);
        double bytes_fb = bytes_f + 4.0 * (3.0 * BLHP + BLH + 4.0 * BLGN);  // + dy, x again, dx, ddt, B, C, dB, dC
        char shape[64];
        snprintf(shape, sizeof shape, "B8 L%d H24 P64 N128", L);
        for (const Version* v : run) {
            auto fwd = [&](int) { v->fwd(gy, nullptr, gx, gdt, gA, gB, gC, gD, nullptr, p.B, p.L, p.H, p.P, p.G, p.N, 64); };
            auto fwd_bwd = [&](int) {
                fwd(0);
                v->bwd(gdx, gddt, gdA, gdB, gdC, gdD, nullptr, gdy, nullptr, gx, gdt, gA, gB, gC, gD, nullptr, p.B, p.L, p.H, p.P, p.G, p.N);
            };
            int reps = v->id == 3 ? 5 : 20;
            float ms_f = dev_bench_ms(fwd, 2, reps), ms_fb = dev_bench_ms(fwd_bwd, 2, reps);
            dev_print_row("ssd fwd", v->name, shape, "fp32", ms_f, bytes_f, 0, ok_all, 0);
            dev_print_row("ssd fwd+bwd", v->name, shape, "fp32", ms_fb, bytes_fb, 0, ok_all, 0);
            rows.push_back({v->id, L, ms_f, ms_fb});
            if (v->id == 16) tc_breakdown<32, 64, 128, 64, 64, bf16>(p, gx, gdt, gA, gB, gC, gD, gdy, gy, gdx, gddt, gdA, gdB, gdC, gdD);
            if (v->id == 19) tc_breakdown<32, 64, 128, 64, 64, bf16, true, true, false>(p, gx, gdt, gA, gB, gC, gD, gdy, gy, gdx, gddt, gdA, gdB, gdC, gdD);
            if (v->id == 20) tc_breakdown<32, 64, 128, 64, 64, bf16, true, true, true>(p, gx, gdt, gA, gB, gC, gD, gdy, gy, gdx, gddt, gdA, gdB, gdC, gdD);
            if (v->id == 22) tc_breakdown<32, 64, 128, 64, 64, bf16, true, true, true, 2>(p, gx, gdt, gA, gB, gC, gD, gdy, gy, gdx, gddt, gdA, gdB, gdC, gdD);
            if (v->id == 17) tc_breakdown<32, 64, 128, 64, 64, float>(p, gx, gdt, gA, gB, gC, gD, gdy, gy, gdx, gddt, gdA, gdB, gdC, gdD);
        }
        for (float* q : {gx, gdt, gA, gB, gC, gD, gdy, gy, gdx, gddt, gdA, gdB, gdC, gdD}) dev_free(q);
    }
    printf("\nsummary (%s): official Triton (H100, bf16, chunk 256) fwd 0.815 / 1.100 ms, fwd+bwd 3.135 / 4.645 ms at L2048 / L8192\n",
           prop.name);
    printf("  version                    L2048 fwd  fwd+bwd (x Triton)    L8192 fwd  fwd+bwd (x Triton)\n");
    for (const Version* v : run) {
        float f[2] = {0, 0}, fb[2] = {0, 0};
        for (auto& r : rows) if (r.id == v->id) { int k = r.L == 2048 ? 0 : 1; f[k] = r.f; fb[k] = r.fb; }
        printf("  %-24s %9.3f %8.3f (%5.2fx)    %9.3f %8.3f (%5.2fx)\n", v->name, f[0], fb[0], fb[0] / 3.135, f[1], fb[1], fb[1] / 4.645);
    }
    return dev_finish();
}
