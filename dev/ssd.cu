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
//   v4  tensor cores and a new decomposition (the ssd_tc_* kernels: src/ssd.h's comment describes them).
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
//       +3%, per-chunk +4%: no gain. src/ssd.h = v20 alone (no version macros).
//   v23 the forward in chunk-parallel form (ssd_lb_fwd_kernel): one block per (chunk of 64, 64-channel slice,
//       head, batch) taking a ticket (chunk-major order); its chunk state S_c and diagonal block first, then
//       a look-back hand-over of the state H_c (fp32, a two-slot ring per chain in L2, flags with release /
//       acquire), H_{c+1} published at once, then the state read and y. All 132 SMs instead of v20's 96.
//       Prediction: sequential forward 1.30 -> ~0.9 ms at L8192.
//   v24 v23 + the backward's states and state gradients in the same form (ssd_lb_state_kernel, REV for the
//       gradients; 60 KB, three blocks per SM). Prediction: 0.66 + 0.60 -> ~0.4 + 0.4 ms at L8192.
//       Outcome (H100, call 9): both correct (v20's errors), both slower: look-back forward 0.46 / 1.89 ms at
//       L2048 / L8192 (v20's 0.34 / 1.31), states and state gradients 0.30 / 1.19 ms each (v20 0.18 / 0.67 and
//       0.16 / 0.60); fwd+bwd v23 1.45 / 5.61, v24 1.72 / 6.72 ms (v20 1.33 / 5.09). Only 1.4-2 chunks of the 192
//       chains are resident at a time, so each chain step carries a block's whole life (unhidden loads, mma,
//       hand-over) divided by that depth: ~15 / ~9 us per chunk. Not shipped (dev/notes_kernels.md).
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
// The tensor-core kernels of v4-v22 in their general form, with the switches that pick a version: the
// sequential kernel (v16's forward with OUT, the states without), the state-gradient kernel (state type ST,
// TR truncation, WMS warp rows), v16's per-chunk backward ssd_tc_chunk_bwd_kernel (fp32 or bf16 states),
// the forward's second form (TR: v21), the per-chunk backward's second form (TR, WMN: v19, v20, v22), and
// their launchers (ssd_tc_forward: v16's forward; ssd_tc_forward2; ssd_tc_backward). They stood in
// src/ssd.h until it kept v20 alone; src/ssd.h's kernels of the same names are v20's settings of these
// (ssd_tc_seq_kernel<!OUT, bf16, TR> there is ssd_tc_states_kernel). Moved as they were: the helpers
// they call (SsdTile, ssd_op, ssd_kp, ssd_tc_cumsum, the cp.async copies, ssd_tc_cb_kernel) are src's.
namespace ssd_dev {

// a state tensor's element as an mma operand: fp32 is rounded at the load, bf16 needs no rounding
__device__ __forceinline__ float ssd_state_op(float v) { return v; }
__device__ __forceinline__ SsdTf32Exact ssd_state_op(bf16 v) { return {__bfloat162float(v)}; }

// The sequential forward (OUT: y and the final state) or the states entering every chunk (!OUT:
// states (B, nc, H, P, N) of type ST). grid (P / PT, H, B), PT / 8 warps. Each chunk's inputs (x slice,
// B, dt; C and C Bᵀ for OUT) are copied by cp.async into one of two stages while the previous chunk computes.
template <int Q, int N, int PT, bool OUT> struct SsdSeqSmem {
    static constexpr int LDB = N + 8, LDX = PT + 8, LDC = N + 4, LDCB = Q + 4, LDH = N + 4;
    static constexpr int STAGE = Q * LDB + Q * LDX + (OUT ? Q * LDC + Q * LDCB : 0) + Q;  // B, x, [C, C Bᵀ], dt
    static constexpr size_t floats = 2 * (size_t)STAGE + 3 * Q * (PT / 8) + (OUT ? PT * LDH : 0);  // + cs, dts, ws per warp
};
template <int Q, int N, int PT, bool OUT, typename ST, bool TR = false, int WMS = 0>
__global__ void __launch_bounds__(PT * 4) ssd_tc_seq_kernel(floatX* y, float* fstate, ST* states, const floatX* x, const floatX* dt,
                                                        const float* A, const floatX* Bm, const floatX* Cm, const float* D,
                                                        const float* h0, const float* cb, int L, int H, int P, int G) {
    typedef SsdSeqSmem<Q, N, PT, OUT> S_;
    constexpr int W = PT / 8, LDB = S_::LDB, LDX = S_::LDX, LDC = S_::LDC, LDCB = S_::LDCB, LDH = S_::LDH, STAGE = S_::STAGE;
    extern __shared__ float sm[];
    // each warp scans the chunk's decays itself (no barrier): its own cs, dts, ws
    float *cs = sm + 2 * STAGE + 3 * Q * (threadIdx.x >> 5), *dts = cs + Q, *ws = dts + Q;
    float* Hs = sm + 2 * STAGE + 3 * Q * W;  // OUT only
    const int pt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, g = h / (H / G), p0 = pt * PT, nc = (L + Q - 1) / Q;
    const float Ah = A[h];
    const size_t PN = (size_t)P * N, bh = (size_t)b * H + h;
    auto stage = [&](int c, float*& Bs, float*& Xs, float*& Cs, float*& CBs, float*& dtb) {
        Bs = sm + (c & 1) * STAGE; Xs = Bs + Q * LDB; Cs = Xs + Q * LDX; CBs = Cs + Q * LDC;
        dtb = OUT ? CBs + Q * LDCB : Cs;
    };
    auto issue = [&](int c) {
        float *Bs, *Xs, *Cs, *CBs, *dtb;
        stage(c, Bs, Xs, Cs, CBs, dtb);
        const int t0 = c * Q, Qc = min(Q, L - t0);
        const size_t row = ((size_t)b * L + t0) * G + g;
        ssd_cp_rows<Q, PT>(Xs, LDX, x + (((size_t)b * L + t0) * H + h) * P + p0, (size_t)H * P, Qc);
        ssd_cp_rows<Q, N>(Bs, LDB, Bm + row * N, (size_t)G * N, Qc);
        if constexpr (OUT) {
            ssd_cp_rows<Q, N>(Cs, LDC, Cm + row * N, (size_t)G * N, Qc);
            ssd_cp_rows<Q, Q>(CBs, LDCB, cb + (((size_t)b * nc + c) * G + g) * Q * Q, Q, Q);
        }
        ssd_cp_dt<Q>(dtb, dt + ((size_t)b * L + t0) * H + h, H, Qc);
    };
    issue(0);
    cp_async_commit();
    SsdTile<PT, N, W, WMS> S;  // the state slice [p][n] entering the current chunk
    if (h0)
        S.pairs([&](int p, int n, float& v0, float& v1) {
            float2 u = *reinterpret_cast<const float2*>(h0 + bh * PN + (size_t)(p0 + p) * N + n);
            v0 = u.x; v1 = u.y;
        });
    for (int c = 0; c < nc; c++) {
        const int t0 = c * Q, Qc = min(Q, L - t0);
        if (c + 1 < nc) issue(c + 1);
        cp_async_commit();
        if constexpr (OUT) S.pairs([&](int p, int n, float& v0, float& v1) { ssd_st2(Hs + p * LDH + n, v0, v1); });
        else S.pairs([&](int p, int n, float& v0, float& v1) {
            ssd_st2(states + (((size_t)b * nc + c) * H + h) * PN + (size_t)(p0 + p) * N + n, v0, v1);
        });
        float *Bs, *Xs, *Cs, *CBs, *dtb;
        stage(c, Bs, Xs, Cs, CBs, dtb);
        cp_async_wait<1>();
        __syncthreads();
        {
            float cl = ssd_tc_cumsum<Q>(cs, dts, dtb, 1, Qc, Ah);
            for (int i = threadIdx.x & 31; i < Q; i += 32) ws[i] = __expf(cl - cs[i]) * dts[i];
            __syncwarp();
        }
        if constexpr (OUT) {
            // y = exp(cs_t) C_t H_cᵀ (the state read) + W (dt x) (the diagonal block) + D x
            SsdTile<Q, PT, W> Y;
            Y.mma<N>([&](int t, int n) { return Cs[t * LDC + n]; }, [&](int n, int p) { return Hs[p * LDH + n]; });
            Y.pairs([&](int t, int, float& v0, float& v1) { float e = __expf(cs[t]); v0 *= e; v1 *= e; });
            Y.mma<Q>([&](int t, int s) { return ssd_tc_decay(CBs[t * LDCB + s], cs, t, s) * dts[s]; },
                  [&](int s, int p) { return Xs[s * LDX + p]; });
            const float Dh = D[h];
            Y.pairs([&](int t, int p, float& v0, float& v1) {
                if (t < Qc)
                    ssd_st2(y + (((size_t)b * L + t0 + t) * H + h) * P + p0 + p, v0 + Dh * Xs[t * LDX + p], v1 + Dh * Xs[t * LDX + p + 1]);
            });
        }
        // H_{c+1} = exp(cl) H_c + (w x)ᵀ B, w_s = exp(cl - cs_s) dt_s
        const float el = __expf(cs[Q - 1]);
        S.pairs([&](int, int, float& v0, float& v1) { v0 *= el; v1 *= el; });
        S.mma<Q>([&](int p, int s) { return ssd_op<TR>(Xs[s * LDX + p] * ws[s]); }, [&](int s, int n) { return ssd_op<TR>(Bs[s * LDB + n]); });
        __syncthreads();
    }
    if constexpr (OUT)
        if (fstate) S.pairs([&](int p, int n, float& v0, float& v1) { ssd_st2(fstate + bh * PN + (size_t)(p0 + p) * N + n, v0, v1); });
}

// The state gradients, chunks in reverse: dstates[c] = G_{c+1} (B, nc, H, P, N) of type ST; dh0 += G_0.
// grid (P / PT, H, B), PT / 8 warps; C, the dy slice and dt double-buffered like the forward's inputs
template <int Q, int N, int PT> struct SsdDstateSmem {
    static constexpr int LDC = N + 8, LDY = PT + 8, STAGE = Q * LDC + Q * LDY + Q;
    static constexpr size_t floats = 2 * (size_t)STAGE + 3 * Q * (PT / 8);  // + cs, dts, ecs per warp
};
template <int Q, int N, int PT, typename ST, bool TR = false, int WMS = 0>
__global__ void __launch_bounds__(PT * 4) ssd_tc_dstate_kernel(ST* dstates, float* dh0, const float* dfinal, const floatX* dy,
                                                           const floatX* dt, const float* A, const floatX* Cm, int L, int H, int P, int G) {
    typedef SsdDstateSmem<Q, N, PT> S_;
    constexpr int W = PT / 8, LDC = S_::LDC, LDY = S_::LDY, STAGE = S_::STAGE;
    extern __shared__ float sm[];
    float *cs = sm + 2 * STAGE + 3 * Q * (threadIdx.x >> 5), *dts = cs + Q, *ecs = dts + Q;  // this warp's
    const int pt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, g = h / (H / G), p0 = pt * PT, nc = (L + Q - 1) / Q;
    const float Ah = A[h];
    const size_t PN = (size_t)P * N, bh = (size_t)b * H + h;
    auto issue = [&](int c) {
        float *Cs = sm + (c & 1) * STAGE, *DYs = Cs + Q * LDC, *dtb = DYs + Q * LDY;
        const int t0 = c * Q, Qc = min(Q, L - t0);
        ssd_cp_rows<Q, N>(Cs, LDC, Cm + (((size_t)b * L + t0) * G + g) * N, (size_t)G * N, Qc);
        ssd_cp_rows<Q, PT>(DYs, LDY, dy + (((size_t)b * L + t0) * H + h) * P + p0, (size_t)H * P, Qc);
        ssd_cp_dt<Q>(dtb, dt + ((size_t)b * L + t0) * H + h, H, Qc);
    };
    issue(nc - 1);
    cp_async_commit();
    SsdTile<PT, N, W, WMS> Gt;  // G_{c+1}, [p][n]
    if (dfinal)
        Gt.pairs([&](int p, int n, float& v0, float& v1) {
            float2 u = *reinterpret_cast<const float2*>(dfinal + bh * PN + (size_t)(p0 + p) * N + n);
            v0 = u.x; v1 = u.y;
        });
    for (int c = nc - 1; c >= 0; c--) {
        const int Qc = min(Q, L - c * Q);
        if (c > 0) issue(c - 1);
        cp_async_commit();
        Gt.pairs([&](int p, int n, float& v0, float& v1) {
            ssd_st2(dstates + (((size_t)b * nc + c) * H + h) * PN + (size_t)(p0 + p) * N + n, v0, v1);
        });
        float *Cs = sm + (c & 1) * STAGE, *DYs = Cs + Q * LDC, *dtb = DYs + Q * LDY;
        cp_async_wait<1>();
        __syncthreads();
        ssd_tc_cumsum<Q>(cs, dts, dtb, 1, Qc, Ah);
        for (int i = threadIdx.x & 31; i < Q; i += 32) ecs[i] = __expf(cs[i]);
        __syncwarp();
        const float el = __expf(cs[Q - 1]);
        Gt.pairs([&](int, int, float& v0, float& v1) { v0 *= el; v1 *= el; });
        Gt.mma<Q>([&](int p, int t) { return ssd_op<TR>(DYs[t * LDY + p] * ecs[t]); }, [&](int t, int n) { return ssd_op<TR>(Cs[t * LDC + n]); });
        __syncthreads();
    }
    if (dh0)
        Gt.pairs([&](int p, int n, float& v0, float& v1) {
            float2* o = reinterpret_cast<float2*>(dh0 + bh * PN + (size_t)(p0 + p) * N + n);
            float2 u = *o; u.x += v0; u.y += v1; *o = u;
        });
}

// Every other gradient, per (chunk, group, batch): the group's heads one after another, each in
// slices of PS = 32 channels (x, dy and dx (accumulated into): (Q x PS); H_c, G_{c+1}: (PS x N); dt, ddt)
// double-buffered.
// W warps (8 or 16); the whole block's shared memory is ~200 KB (Q 64, N 128): one block per SM.
template <int Q, int N, typename ST, int W_ = 8> struct SsdChunkBwdSmem {
    static constexpr int W = W_, PS = 32;
    typedef SsdTile<Q, Q, W> TQ;   // dW, dCB: [t][s]
    typedef SsdTile<Q, N, W> TN;   // dC, dB: [t][n]
    typedef SsdTile<Q, PS, W> TX;  // dX slice: [s][p]
    static constexpr int LDB = N + 4, LDC = N + 8, LDCB = Q + 8, LDX = PS + 4;
    static constexpr int LDS = sizeof(ST) == 4 ? N + 8 : N + 16;  // state rows, in ST elements
    static constexpr int STAGE = 3 * Q * LDX + (int)(2 * PS * LDS * sizeof(ST) / 4) + 2 * Q;  // floats
    // per-row / per-column partial sums: one slot per warp column (rows) or warp row (columns)
    static constexpr int ROWP = TQ::WN * Q, COLP = TQ::WM * Q, R12P = TN::WN * Q, DDP = TX::WN * Q;
    // the head's masked decayed C·Bᵀ, computed once per head: only where it fits (bf16 state tiles)
    static constexpr bool PREW = sizeof(ST) == 2;
    static size_t floats(int P) {
        return (size_t)Q * LDB + Q * LDC + Q * LDCB + 2 * STAGE + 5 * Q + ROWP + COLP + 2 * R12P + 2 * W + (size_t)(P / PS) * DDP +
               (PREW ? (size_t)Q * LDCB : 0);
    }
};
template <int Q, int N, typename ST, int W_ = 8>
__global__ void __launch_bounds__(W_ * 32, 1) ssd_tc_chunk_bwd_kernel(floatX* dx, floatX* ddt, float* dA, floatX* dBm, floatX* dCm,
        float* dD, const floatX* dy, const floatX* x, const floatX* dt, const float* A, const floatX* Bm, const floatX* Cm,
        const float* D, const float* cb, const ST* states, const ST* dstates, int L, int H, int P, int G) {
    typedef SsdChunkBwdSmem<Q, N, ST, W_> S_;
    constexpr int W = S_::W, PS = S_::PS, LDB = S_::LDB, LDC = S_::LDC, LDCB = S_::LDCB, LDX = S_::LDX, LDS = S_::LDS;
    constexpr int STAGE = S_::STAGE;
    typedef typename S_::TQ TQ;
    typedef typename S_::TN TN;
    typedef typename S_::TX TX;
    extern __shared__ float sm[];
    float *Bs = sm, *Cs = Bs + Q * LDB, *CBs = Cs + Q * LDC, *stage0 = CBs + Q * LDCB;
    float *cs = stage0 + 2 * STAGE, *dts = cs + Q, *ecs = dts + Q, *est = ecs + Q, *wst = est + Q;  // the head's decays
    float *rowp = wst + Q, *colp = rowp + S_::ROWP, *r1p = colp + S_::COLP, *r2p = r1p + S_::R12P, *red = r2p + S_::R12P;
    float* ddp = red + 2 * W;
    float* Wm = ddp + (size_t)(P / PS) * S_::DDP;  // PREW: W[t][s] = ssd_tc_decay(CB[t][s]) of the head
    const int c = blockIdx.x, g = blockIdx.y, b = blockIdx.z, nc = gridDim.x, t0 = c * Q, Qc = min(Q, L - t0);
    const int hpg = H / G, nps = P / PS, nst = hpg * nps, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const size_t PN = (size_t)P * N;
    constexpr int SV = (int)(16 / sizeof(ST));  // state elements per 16-byte copy

    // the chunk's B and C rows and its C·Bᵀ (with the first slice)
    for (int i = threadIdx.x; i < Q * (N / 4); i += blockDim.x) {
        int r = i / (N / 4), c4 = (i % (N / 4)) * 4;
        bool ok = r < Qc;
        size_t at = (((size_t)b * L + t0 + (ok ? r : 0)) * G + g) * N + c4;
        cp_async<16>(Bs + r * LDB + c4, Bm + at, ok);
        cp_async<16>(Cs + r * LDC + c4, Cm + at, ok);
    }
    const float* cbc = cb + (((size_t)b * nc + c) * G + g) * Q * Q;
    for (int i = threadIdx.x; i < Q * (Q / 4); i += blockDim.x) {
        int r = i / (Q / 4), c4 = (i % (Q / 4)) * 4;
        cp_async<16>(CBs + r * LDCB + c4, cbc + r * Q + c4, true);
    }
    auto slice = [&](int st, float*& Xs, float*& DYs, float*& DXs, ST*& Hs, ST*& Gs, float*& dtb) {
        float* sb = stage0 + (st & 1) * STAGE;
        Xs = sb; DYs = Xs + Q * LDX; DXs = DYs + Q * LDX;
        Hs = reinterpret_cast<ST*>(DXs + Q * LDX); Gs = Hs + PS * LDS;
        dtb = reinterpret_cast<float*>(Gs + PS * LDS);  // dt, then ddt
    };
    auto issue = [&](int st) {
        const int hh = st / nps, ps = st % nps, h = g * hpg + hh;
        float *Xs, *DYs, *DXs, *dtb; ST *Hs, *Gs;
        slice(st, Xs, DYs, DXs, Hs, Gs, dtb);
        for (int i = threadIdx.x; i < Q * (PS / 4); i += blockDim.x) {
            int r = i / (PS / 4), c4 = (i % (PS / 4)) * 4;
            bool ok = r < Qc;
            size_t at = (((size_t)b * L + t0 + (ok ? r : 0)) * H + h) * P + ps * PS + c4;
            cp_async<16>(Xs + r * LDX + c4, x + at, ok);
            cp_async<16>(DYs + r * LDX + c4, dy + at, ok);
            cp_async<16>(DXs + r * LDX + c4, dx + at, ok);
        }
        const size_t so = (((size_t)b * nc + c) * H + h) * PN + (size_t)ps * PS * N;
        for (int i = threadIdx.x; i < PS * (N / SV); i += blockDim.x) {
            int r = i / (N / SV), c8 = (i % (N / SV)) * SV;
            cp_async<16>(Hs + r * LDS + c8, states + so + (size_t)r * N + c8, true);
            cp_async<16>(Gs + r * LDS + c8, dstates + so + (size_t)r * N + c8, true);
        }
        ssd_cp_dt<Q>(dtb, dt + ((size_t)b * L + t0) * H + h, H, Qc);
        if (ps == nps - 1) ssd_cp_dt<Q>(dtb + Q, ddt + ((size_t)b * L + t0) * H + h, H, Qc);
    };
    issue(0);
    cp_async_commit();

    TQ dW, dCB;               // this head's dY Xᵀ; the group's sum of dCB
    TN dCt, dBt;              // the group's dC, dB (the state terms of every head so far)
    float r1prev[TN::MT][2] = {}, r2prev[TN::MT][2] = {};  // C·dC, B·dB row parts before this head
    float dD_acc = 0.0f, dcl_acc = 0.0f;
    for (int st = 0; st < nst; st++) {
        const int hh = st / nps, ps = st % nps, h = g * hpg + hh;
        float *Xs, *DYs, *DXs, *dtb; ST *Hs, *Gs;
        slice(st, Xs, DYs, DXs, Hs, Gs, dtb);
        if (st + 1 < nst) issue(st + 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const float Ah = A[h], Dh = D[h];
        if (ps == 0) {  // a new head: its cumulative decays (and W)
            if (warp == 0) {
                float cl = ssd_tc_cumsum<Q>(cs, dts, dtb, 1, Qc, Ah);
                for (int i = lane; i < Q; i += 32) {
                    ecs[i] = __expf(cs[i]); est[i] = __expf(cl - cs[i]); wst[i] = est[i] * dts[i];
                }
            }
            dW.zero(); dD_acc = 0.0f; dcl_acc = 0.0f;
            __syncthreads();
            if constexpr (S_::PREW) {
                for (int i = threadIdx.x; i < Q * Q; i += blockDim.x) {
                    int t = i / Q, s2 = i % Q;
                    Wm[t * LDCB + s2] = ssd_tc_decay(CBs[t * LDCB + s2], cs, t, s2);
                }
                __syncthreads();
            }
        }
        {   // dX (this slice) = exp(cl - cs_s) B_s G_{c+1}ᵀ + Wᵀ dY  -> dx, and x . dX (ddt's direct part)
            TX X;
            X.mma<N>([&](int s, int n) { return Bs[s * LDB + n]; }, [&](int n, int p) { return ssd_state_op(Gs[p * LDS + n]); });
            X.pairs([&](int s, int, float& v0, float& v1) { v0 *= est[s]; v1 *= est[s]; });
            X.mma<Q>([&](int s, int t) {
                         if constexpr (S_::PREW) return Wm[t * LDCB + s];
                         else return ssd_tc_decay(CBs[t * LDCB + s], cs, t, s);
                     },
                  [&](int t, int p) { return DYs[t * LDX + p]; });
            X.pairs([&](int s, int p, float& v0, float& v1) {
                float x0 = Xs[s * LDX + p], x1 = Xs[s * LDX + p + 1], y0 = DYs[s * LDX + p], y1 = DYs[s * LDX + p + 1];
                dD_acc += y0 * x0 + y1 * x1;
                if (s < Qc)
                    ssd_st2(dx + (((size_t)b * L + t0 + s) * H + h) * P + ps * PS + p, DXs[s * LDX + p] + dts[s] * v0 + Dh * y0,
                            DXs[s * LDX + p + 1] + dts[s] * v1 + Dh * y1);
            });
            float rs[TX::MT][2];
            X.row_part(rs, [&](int s, int p, float v) { return Xs[s * LDX + p] * v; });
            X.row_store(ddp + ps * S_::DDP, rs);
        }
        // dW += dY Xᵀ (raw x); dC += exp(cs_t) dY H_c; dB += exp(cl - cs_s) dt_s X G_{c+1}
        dW.mma<PS>([&](int t, int p) { return DYs[t * LDX + p]; }, [&](int p, int s) { return Xs[s * LDX + p]; });
        dCt.mma<PS>([&](int t, int p) { return DYs[t * LDX + p] * ecs[t]; }, [&](int p, int n) { return ssd_state_op(Hs[p * LDS + n]); });
        dBt.mma<PS>([&](int s, int p) { return Xs[s * LDX + p] * wst[s]; }, [&](int p, int n) { return ssd_state_op(Gs[p * LDS + n]); });
        for (int i = threadIdx.x; i < PS * N; i += blockDim.x) {  // <H_c, G_{c+1}> (the chunk decay's gradient)
            int r = i / N, n = i % N;
            dcl_acc += to_f32(Hs[r * LDS + n]) * to_f32(Gs[r * LDS + n]);
        }
        if (ps == nps - 1) {  // the head is complete
            // dCB_h = mask∘decay(dW) dt_s; m = dCB_h ∘ CB below the diagonal: d(cs_t) += row sums, d(cs_s) -= column sums
            dW.pairs([&](int t, int s, float& v0, float& v1) {
                v0 = ssd_tc_decay(v0, cs, t, s) * dts[s];
                v1 = ssd_tc_decay(v1, cs, t, s + 1) * dts[s + 1];
            });
            auto m = [&](int t, int s, float v) { return s < t ? v * CBs[t * LDCB + s] : 0.0f; };
            float rs[TQ::MT][2];
            dW.row_part(rs, m);
            dW.row_store(rowp, rs);
            dW.col_store(colp, m);
#pragma unroll
            for (int i = 0; i < TQ::MT; i++)
#pragma unroll
                for (int j = 0; j < TQ::NT; j++)
#pragma unroll
                    for (int r = 0; r < 4; r++) dCB.acc[i][j][r] += dW.acc[i][j][r];
            // r1_t = C_t . (this head's dC_t), r2_s = B_s . (this head's dB_s): differences of the running row parts
            float n1[TN::MT][2], n2[TN::MT][2];
            dCt.row_part(n1, [&](int t, int n, float v) { return Cs[t * LDC + n] * v; });
            dBt.row_part(n2, [&](int s, int n, float v) { return Bs[s * LDB + n] * v; });
#pragma unroll
            for (int i = 0; i < TN::MT; i++)
#pragma unroll
                for (int hh2 = 0; hh2 < 2; hh2++) {
                    float a1 = n1[i][hh2], a2 = n2[i][hh2];
                    n1[i][hh2] = a1 - r1prev[i][hh2]; r1prev[i][hh2] = a1;
                    n2[i][hh2] = a2 - r2prev[i][hh2]; r2prev[i][hh2] = a2;
                }
            dCt.row_store(r1p, n1);
            dBt.row_store(r2p, n2);
            float wsum = warp_sum(dcl_acc), wd = warp_sum(dD_acc);
            if (lane == 0) { red[warp] = wsum; red[W + warp] = wd; }
            __syncthreads();
            if (warp == 0) {
                // d(cs_t) = mask rows - mask columns + r1_t - r2_t; the last step also gets sum_s r2_s
                // (the chunk state's exp(cl)) and exp(cl) <H_c, G_{c+1}> (the chunk decay)
                constexpr int E = Q / 32;
                float dcs[E], dd[E], r2s = 0.0f;
#pragma unroll
                for (int e = 0; e < E; e++) {
                    const int t = lane * E + e;
                    float v = 0.0f, r2 = 0.0f, d = 0.0f;
                    for (int w = 0; w < TQ::WN; w++) v += rowp[w * Q + t];
                    for (int w = 0; w < TQ::WM; w++) v -= colp[w * Q + t];
                    for (int w = 0; w < TN::WN; w++) { v += r1p[w * Q + t]; r2 += r2p[w * Q + t]; }
                    for (int q = 0; q < nps; q++)
                        for (int w = 0; w < TX::WN; w++) d += ddp[q * S_::DDP + w * Q + t];
                    dcs[e] = v - r2; r2s += r2; dd[e] = d;
                }
                r2s = warp_sum(r2s);
                float dcl = 0.0f, dDh = 0.0f;
                for (int w = 0; w < W; w++) { dcl += red[w]; dDh += red[W + w]; }
                if (lane == 31) dcs[E - 1] += r2s + __expf(cs[Q - 1]) * dcl;
                // cs_t = sum_{k<=t} dt_k A: ddt_k += A sum_{t>=k} d(cs_t), dA += sum_k dt_k sum_{t>=k} d(cs_t)
                float loc[E], run = 0.0f;
#pragma unroll
                for (int e = E - 1; e >= 0; e--) { run += dcs[e]; loc[e] = run; }
                float incl = run;
#pragma unroll
                for (int o = 1; o < 32; o <<= 1) {
                    float u = __shfl_down_sync(0xffffffffu, incl, o);
                    if (lane + o < 32) incl += u;
                }
                const float above = incl - run;  // the lanes after this one
                float dAp = 0.0f;
#pragma unroll
                for (int e = 0; e < E; e++) {
                    const int t = lane * E + e;
                    const float cum = loc[e] + above;
                    dAp += dts[t] * cum;
                    if (t < Qc) ddt[((size_t)b * L + t0 + t) * H + h] = (floatX)(dtb[Q + t] + Ah * cum + dd[e]);
                }
                dAp = warp_sum(dAp);
                if (lane == 0) { atomicAdd(&dA[h], dAp); atomicAdd(&dD[h], dDh); }
            }
        }
        __syncthreads();
    }
    // dC += dCB B, dB += dCBᵀ C, with the group's summed dCB (lower triangular)
    dCB.pairs([&](int t, int s, float& v0, float& v1) { ssd_st2(CBs + t * LDCB + s, v0, v1); });
    __syncthreads();
    dCt.mma<Q>([&](int t, int s) { return CBs[t * LDCB + s]; }, [&](int s, int n) { return Bs[s * LDB + n]; });
    dBt.mma<Q>([&](int s, int t) { return CBs[t * LDCB + s]; }, [&](int t, int n) { return Cs[t * LDC + n]; });
    auto add_rows = [&](floatX* out, TN& T) {  // every load first, then the adds and stores
        float2 old[TN::MT][TN::NT][2];
#pragma unroll
        for (int i = 0; i < TN::MT; i++)
#pragma unroll
            for (int j = 0; j < TN::NT; j++)
#pragma unroll
                for (int hh2 = 0; hh2 < 2; hh2++) {
                    int t = T.row(i, hh2);
                    old[i][j][hh2] = t < Qc ? *reinterpret_cast<const float2*>(out + (((size_t)b * L + t0 + t) * G + g) * N + T.col(j))
                                            : make_float2(0.0f, 0.0f);
                }
#pragma unroll
        for (int i = 0; i < TN::MT; i++)
#pragma unroll
            for (int j = 0; j < TN::NT; j++)
#pragma unroll
                for (int hh2 = 0; hh2 < 2; hh2++) {
                    int t = T.row(i, hh2);
                    if (t < Qc)
                        ssd_st2(out + (((size_t)b * L + t0 + t) * G + g) * N + T.col(j), old[i][j][hh2].x + T.acc[i][j][2 * hh2],
                                old[i][j][hh2].y + T.acc[i][j][2 * hh2 + 1]);
                }
    };
    add_rows(dCm, dCt);
    add_rows(dBm, dBt);
}

// The forward, second form (v18): as ssd_tc_seq_kernel<OUT> but the state read C_t H_cᵀ takes H_c straight
// from the accumulators of the state tile instead of a shared copy. Transposed, Yᵀ[p][t] = sum_n H[p][n] C[t][n]
// has the state as its A operand, and an accumulator fragment is an A fragment once the k order is permuted
// (columns 2t, 2t + 1 of an n-tile are k = t, t + 4), so each warp multiplies its own (16 x N/2) state tile by
// C (paired 64-bit loads) into a (16 x Q) partial of Yᵀ; the diagonal block adds (dt x)ᵀ Wᵀ over half the s
// range per warp, and the two warps that share rows exchange halves through shared memory (a named barrier
// for the pair). No (PT x N) state copy in shared memory: 110 KB at Q 32, N 128, PT 64, two blocks per SM,
// all 192 blocks of B8 H24 P64 in one wave. grid (P / PT, H, B), PT / 8 warps. TR: fp32 operands truncated to
// tf32 by the tensor cores (no cvt; v21).
template <int Q, int N, int PT> struct SsdFwdSmem {
    static constexpr int W = PT / 8, LDB = N + 8, LDX = PT + 8, LDC = N + 8, LDCB = Q + 4;
    static constexpr int STAGE = Q * LDB + Q * LDX + Q * LDC + Q * LDCB + Q;  // B, x, C, C Bᵀ, dt
    static constexpr int XCH = (Q / 16) * 4 * 32;                              // per warp: the tiles its partner finishes
    static constexpr size_t floats = 2 * (size_t)STAGE + 4 * Q * W + (size_t)W * XCH;  // + cs, dts, ws, ecs per warp
};
template <int Q, int N, int PT, bool TR = false>
__global__ void __launch_bounds__(PT * 4, 2) ssd_tc_fwd_kernel(floatX* y, float* fstate, const floatX* x, const floatX* dt,
                                                              const float* A, const floatX* Bm, const floatX* Cm, const float* D,
                                                              const float* h0, const float* cb, int L, int H, int P, int G) {
    typedef SsdFwdSmem<Q, N, PT> S_;
    constexpr int W = S_::W, LDB = S_::LDB, LDX = S_::LDX, LDC = S_::LDC, LDCB = S_::LDCB, STAGE = S_::STAGE;
    constexpr int TT = Q / 8, HT = TT / 2;  // Yᵀ's t-tiles; each warp of a pair finishes HT of them
    static_assert(Q % 16 == 0, "ssd_tc_fwd_kernel: Q must be a multiple of 16");
    typedef SsdTile<PT, N, W> TS;
    static_assert(TS::MT == 1 && TS::WN == 2, "ssd_tc_fwd_kernel: the state tile must be 16 rows x N/2 per warp");
    extern __shared__ float sm[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    float *cs = sm + 2 * STAGE + 4 * Q * warp, *dts = cs + Q, *ws = dts + Q, *ecs = ws + Q;
    float* xch = sm + 2 * STAGE + 4 * Q * W;
    const int pt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, gr = h / (H / G), p0 = pt * PT, nc = (L + Q - 1) / Q;
    const float Ah = A[h], Dh = D[h];
    const size_t PN = (size_t)P * N, bh = (size_t)b * H + h;
    auto issue = [&](int c) {
        float *Bs = sm + (c & 1) * STAGE, *Xs = Bs + Q * LDB, *Cs = Xs + Q * LDX, *CBs = Cs + Q * LDC, *dtb = CBs + Q * LDCB;
        const int t0 = c * Q, Qc = min(Q, L - t0);
        const size_t row = ((size_t)b * L + t0) * G + gr;
        ssd_cp_rows<Q, PT>(Xs, LDX, x + (((size_t)b * L + t0) * H + h) * P + p0, (size_t)H * P, Qc);
        ssd_cp_rows<Q, N>(Bs, LDB, Bm + row * N, (size_t)G * N, Qc);
        ssd_cp_rows<Q, N>(Cs, LDC, Cm + row * N, (size_t)G * N, Qc);
        ssd_cp_rows<Q, Q>(CBs, LDCB, cb + (((size_t)b * nc + c) * G + gr) * Q * Q, Q, Q);
        ssd_cp_dt<Q>(dtb, dt + ((size_t)b * L + t0) * H + h, H, Qc);
    };
    issue(0);
    cp_async_commit();
    TS S;  // the state slice [p][n] entering the current chunk: this warp's rows m0..m0+15, columns n0..n0+N/2-1
    const int wn = S.wn, m0 = S.m0, n0 = S.n0, partner = warp ^ (W / 2);  // WM = W / 2: the pair differs in wn
    if (h0)
        S.pairs([&](int p, int n, float& v0, float& v1) {
            float2 u = *reinterpret_cast<const float2*>(h0 + bh * PN + (size_t)(p0 + p) * N + n);
            v0 = u.x; v1 = u.y;
        });
    for (int c = 0; c < nc; c++) {
        const int t0 = c * Q, Qc = min(Q, L - t0);
        if (c + 1 < nc) issue(c + 1);
        cp_async_commit();
        float *Bs = sm + (c & 1) * STAGE, *Xs = Bs + Q * LDB, *Cs = Xs + Q * LDX, *CBs = Cs + Q * LDC, *dtb = CBs + Q * LDCB;
        cp_async_wait<1>();
        __syncthreads();
        {
            float cl = ssd_tc_cumsum<Q>(cs, dts, dtb, 1, Qc, Ah);
            for (int i = lane; i < Q; i += 32) { ws[i] = __expf(cl - cs[i]) * dts[i]; ecs[i] = __expf(cs[i]); }
            __syncwarp();
        }
        // Yᵀ[p][t] (partial over this warp's n) = H[p][n] C[t][n]; k-steps are the state's n-tiles
        float yt[TT][4];
#pragma unroll
        for (int j = 0; j < TT; j++) yt[j][0] = yt[j][1] = yt[j][2] = yt[j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < TS::NT; kk++) {
            uint32_t a[4] = {ssd_opb<TR>(S.acc[0][kk][0]), ssd_opb<TR>(S.acc[0][kk][2]), ssd_opb<TR>(S.acc[0][kk][1]),
                             ssd_opb<TR>(S.acc[0][kk][3])};
#pragma unroll
            for (int j = 0; j < TT; j++) {
                uint2 bv = ssd_kp<TR>(Cs + (8 * j + g) * LDC + n0 + 8 * kk + 2 * t4);
                ssd_mma_tf32(yt[j], a, bv.x, bv.y);
            }
        }
#pragma unroll
        for (int j = 0; j < TT; j++) {
            const int t = 8 * j + 2 * t4;
            yt[j][0] *= ecs[t]; yt[j][1] *= ecs[t + 1]; yt[j][2] *= ecs[t]; yt[j][3] *= ecs[t + 1];
        }
        // + the diagonal block over this warp's half of s: Yᵀ[p][t] += sum_s x[s][p] exp(cs_t - cs_s) CB[t][s] dt_s
#pragma unroll
        for (int ks = 0; ks < Q / 2; ks += 8) {
            const int s = wn * (Q / 2) + ks + t4;
            const int p = m0 + g;
            uint32_t a[4] = {ssd_opb<TR>(Xs[s * LDX + p]), ssd_opb<TR>(Xs[s * LDX + p + 8]), ssd_opb<TR>(Xs[(s + 4) * LDX + p]),
                             ssd_opb<TR>(Xs[(s + 4) * LDX + p + 8])};
#pragma unroll
            for (int j = 0; j < TT; j++) {
                const int t = 8 * j + g;
                ssd_mma_tf32(yt[j], a, ssd_opb<TR>(ssd_tc_decay(CBs[t * LDCB + s], cs, t, s) * dts[s]),
                             ssd_opb<TR>(ssd_tc_decay(CBs[t * LDCB + s + 4], cs, t, s + 4) * dts[s + 4]));
            }
        }
        // the pair's halves: this warp finishes t-tiles [wn HT, wn HT + HT) and hands the others to its partner
        float* mine = xch + warp * S_::XCH;
#pragma unroll
        for (int j = 0; j < HT; j++) {
#pragma unroll
            for (int r = 0; r < 4; r++) mine[(j * 4 + r) * 32 + lane] = wn ? yt[j][r] : yt[HT + j][r];  // (no run-time index)
        }
        asm volatile("bar.sync %0, 64;\n" ::"r"(1 + S.wm) : "memory");
        const float* theirs = xch + partner * S_::XCH;
#pragma unroll
        for (int j = 0; j < HT; j++) {
            const int jm = wn * HT + j, t = 8 * jm + 2 * t4;
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                const int p = m0 + g + 8 * hh;
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float v = (wn ? yt[HT + j][2 * hh + e] : yt[j][2 * hh + e]) + theirs[(j * 4 + 2 * hh + e) * 32 + lane];
                    if (t + e < Qc) y[(((size_t)b * L + t0 + t + e) * H + h) * P + p0 + p] = v + Dh * Xs[(t + e) * LDX + p];
                }
            }
        }
        // H_{c+1} = exp(cl) H_c + (w x)ᵀ B, w_s = exp(cl - cs_s) dt_s
        const float el = __expf(cs[Q - 1]);
        S.pairs([&](int, int, float& v0, float& v1) { v0 *= el; v1 *= el; });
        S.mma<Q>([&](int p, int s) { return ssd_op<TR>(Xs[s * LDX + p] * ws[s]); }, [&](int s, int n) { return ssd_op<TR>(Bs[s * LDB + n]); });
        __syncthreads();
    }
    if (fstate) S.pairs([&](int p, int n, float& v0, float& v1) { ssd_st2(fstate + bh * PN + (size_t)(p0 + p) * N + n, v0, v1); });
}

// The per-chunk backward, second form (v19, v20): ssd_tc_chunk_bwd_kernel with bf16 state tensors and fewer
// instructions per mma. Every product whose two operands are k-contiguous in shared memory runs with the k
// order permuted (SsdTile::mma_kp): one 64-bit load per fp32 register pair, one 32-bit load per bf16 pair
// (dX's state part, dW, and the A operands of dC's and dB's state parts); the head's W is stored transposed
// (W[s][t]) and already rounded to tf32; row lengths are 8 mod 32 words where a half-warp reads 4 rows x 8
// words, 4 mod 32 for the state tiles (8 rows x 4 words). TR: fp32 operands go to the tensor cores
// unrounded (truncated there: no cvt per register). grid (nc, G, B), 8 warps.
template <int Q, int N, int WMN = 0> struct SsdChunkBwd2Smem {
    typedef bf16 ST;
    static constexpr int W = 8, PS = 32;
    typedef SsdTile<Q, Q, W> TQ;   // dW, dCB: [t][s]
    typedef SsdTile<Q, N, W, WMN> TN;   // dC, dB: [t][n]
    typedef SsdTile<Q, PS, W> TX;  // dX slice: [s][p]
    static constexpr int LDB = N + 8, LDC = N + 8, LDCB = Q + 8, LDX = PS + 8;
    static constexpr int LDS = N + 8;  // state rows, in bf16 elements (4 mod 32 words)
    static constexpr int STAGE = 3 * Q * LDX + (int)(2 * PS * LDS * sizeof(ST) / 4) + 2 * Q;  // floats
    // per-row / per-column partial sums: one slot per warp column (rows) or warp row (columns)
    static constexpr int ROWP = TQ::WN * Q, COLP = TQ::WM * Q, R12P = TN::WN * Q, DDP = TX::WN * Q;
    static constexpr bool PREW = true;  // the head's W[s][t], tf32, once per head
    static size_t floats(int P) {
        return (size_t)Q * LDB + Q * LDC + Q * LDCB + 2 * STAGE + 5 * Q + ROWP + COLP + 2 * R12P + 2 * W + (size_t)(P / PS) * DDP +
               (PREW ? (size_t)Q * LDCB : 0);
    }
};
template <int Q, int N, bool TR, int WMN = 0>
__global__ void __launch_bounds__(256, 1) ssd_tc_chunk_bwd2_kernel(floatX* dx, floatX* ddt, float* dA, floatX* dBm, floatX* dCm,
        float* dD, const floatX* dy, const floatX* x, const floatX* dt, const float* A, const floatX* Bm, const floatX* Cm,
        const float* D, const float* cb, const bf16* states, const bf16* dstates, int L, int H, int P, int G) {
    typedef SsdChunkBwd2Smem<Q, N, WMN> S_;
    typedef bf16 ST;
    constexpr int W = S_::W, PS = S_::PS, LDB = S_::LDB, LDC = S_::LDC, LDCB = S_::LDCB, LDX = S_::LDX, LDS = S_::LDS;
    constexpr int STAGE = S_::STAGE;
    typedef typename S_::TQ TQ;
    typedef typename S_::TN TN;
    typedef typename S_::TX TX;
    extern __shared__ float sm[];
    float *Bs = sm, *Cs = Bs + Q * LDB, *CBs = Cs + Q * LDC, *stage0 = CBs + Q * LDCB;
    float *cs = stage0 + 2 * STAGE, *dts = cs + Q, *ecs = dts + Q, *est = ecs + Q, *wst = est + Q;  // the head's decays
    float *rowp = wst + Q, *colp = rowp + S_::ROWP, *r1p = colp + S_::COLP, *r2p = r1p + S_::R12P, *red = r2p + S_::R12P;
    float* ddp = red + 2 * W;
    float* Wm = ddp + (size_t)(P / PS) * S_::DDP;  // Wm[s * LDCB + t] = tf32(ssd_tc_decay(CB[t][s])) of the head
    const int c = blockIdx.x, g = blockIdx.y, b = blockIdx.z, nc = gridDim.x, t0 = c * Q, Qc = min(Q, L - t0);
    const int hpg = H / G, nps = P / PS, nst = hpg * nps, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const size_t PN = (size_t)P * N;
    constexpr int SV = (int)(16 / sizeof(ST));  // state elements per 16-byte copy

    // the chunk's B and C rows and its C·Bᵀ (with the first slice)
    for (int i = threadIdx.x; i < Q * (N / 4); i += blockDim.x) {
        int r = i / (N / 4), c4 = (i % (N / 4)) * 4;
        bool ok = r < Qc;
        size_t at = (((size_t)b * L + t0 + (ok ? r : 0)) * G + g) * N + c4;
        cp_async<16>(Bs + r * LDB + c4, Bm + at, ok);
        cp_async<16>(Cs + r * LDC + c4, Cm + at, ok);
    }
    const float* cbc = cb + (((size_t)b * nc + c) * G + g) * Q * Q;
    for (int i = threadIdx.x; i < Q * (Q / 4); i += blockDim.x) {
        int r = i / (Q / 4), c4 = (i % (Q / 4)) * 4;
        cp_async<16>(CBs + r * LDCB + c4, cbc + r * Q + c4, true);
    }
    auto slice = [&](int st, float*& Xs, float*& DYs, float*& DXs, ST*& Hs, ST*& Gs, float*& dtb) {
        float* sb = stage0 + (st & 1) * STAGE;
        Xs = sb; DYs = Xs + Q * LDX; DXs = DYs + Q * LDX;
        Hs = reinterpret_cast<ST*>(DXs + Q * LDX); Gs = Hs + PS * LDS;
        dtb = reinterpret_cast<float*>(Gs + PS * LDS);  // dt, then ddt
    };
    auto issue = [&](int st) {
        const int hh = st / nps, ps = st % nps, h = g * hpg + hh;
        float *Xs, *DYs, *DXs, *dtb; ST *Hs, *Gs;
        slice(st, Xs, DYs, DXs, Hs, Gs, dtb);
        for (int i = threadIdx.x; i < Q * (PS / 4); i += blockDim.x) {
            int r = i / (PS / 4), c4 = (i % (PS / 4)) * 4;
            bool ok = r < Qc;
            size_t at = (((size_t)b * L + t0 + (ok ? r : 0)) * H + h) * P + ps * PS + c4;
            cp_async<16>(Xs + r * LDX + c4, x + at, ok);
            cp_async<16>(DYs + r * LDX + c4, dy + at, ok);
            cp_async<16>(DXs + r * LDX + c4, dx + at, ok);
        }
        const size_t so = (((size_t)b * nc + c) * H + h) * PN + (size_t)ps * PS * N;
        for (int i = threadIdx.x; i < PS * (N / SV); i += blockDim.x) {
            int r = i / (N / SV), c8 = (i % (N / SV)) * SV;
            cp_async<16>(Hs + r * LDS + c8, states + so + (size_t)r * N + c8, true);
            cp_async<16>(Gs + r * LDS + c8, dstates + so + (size_t)r * N + c8, true);
        }
        ssd_cp_dt<Q>(dtb, dt + ((size_t)b * L + t0) * H + h, H, Qc);
        if (ps == nps - 1) ssd_cp_dt<Q>(dtb + Q, ddt + ((size_t)b * L + t0) * H + h, H, Qc);
    };
    issue(0);
    cp_async_commit();

    TQ dW, dCB;               // this head's dY Xᵀ; the group's sum of dCB
    TN dCt, dBt;              // the group's dC, dB (the state terms of every head so far)
    float r1prev[TN::MT][2] = {}, r2prev[TN::MT][2] = {};  // C·dC, B·dB row parts before this head
    float dD_acc = 0.0f, dcl_acc = 0.0f;
    for (int st = 0; st < nst; st++) {
        const int hh = st / nps, ps = st % nps, h = g * hpg + hh;
        float *Xs, *DYs, *DXs, *dtb; ST *Hs, *Gs;
        slice(st, Xs, DYs, DXs, Hs, Gs, dtb);
        if (st + 1 < nst) issue(st + 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const float Ah = A[h], Dh = D[h];
        if (ps == 0) {  // a new head: its cumulative decays (and W)
            if (warp == 0) {
                float cl = ssd_tc_cumsum<Q>(cs, dts, dtb, 1, Qc, Ah);
                for (int i = lane; i < Q; i += 32) {
                    ecs[i] = __expf(cs[i]); est[i] = __expf(cl - cs[i]); wst[i] = est[i] * dts[i];
                }
            }
            dW.zero(); dD_acc = 0.0f; dcl_acc = 0.0f;
            __syncthreads();
            if constexpr (S_::PREW) {
                for (int i = threadIdx.x; i < Q * Q; i += blockDim.x) {
                    int t = i / Q, s2 = i % Q;
                    Wm[s2 * LDCB + t] = __uint_as_float(ssd_tf32(ssd_tc_decay(CBs[t * LDCB + s2], cs, t, s2)));
                }
                __syncthreads();
            }
        }
        {   // dX (this slice) = exp(cl - cs_s) B_s G_{c+1}ᵀ + Wᵀ dY  -> dx, and x . dX (ddt's direct part)
            TX X;
            X.mma_kp<N>([&](int s, int n) { return ssd_kp<TR>(Bs + s * LDB + n); }, [&](int n, int p) { return ssd_kp<TR>(Gs + p * LDS + n); });
            X.pairs([&](int s, int, float& v0, float& v1) { v0 *= est[s]; v1 *= est[s]; });
            X.mma_kp<Q>([&](int s, int t) { return ssd_kp<true>(Wm + s * LDCB + t); },
                        [&](int t, int p) { return ssd_kp2<TR>(DYs[t * LDX + p], DYs[(t + 1) * LDX + p]); });
            X.pairs([&](int s, int p, float& v0, float& v1) {
                float x0 = Xs[s * LDX + p], x1 = Xs[s * LDX + p + 1], y0 = DYs[s * LDX + p], y1 = DYs[s * LDX + p + 1];
                dD_acc += y0 * x0 + y1 * x1;
                if (s < Qc)
                    ssd_st2(dx + (((size_t)b * L + t0 + s) * H + h) * P + ps * PS + p, DXs[s * LDX + p] + dts[s] * v0 + Dh * y0,
                            DXs[s * LDX + p + 1] + dts[s] * v1 + Dh * y1);
            });
            float rs[TX::MT][2];
            X.row_part(rs, [&](int s, int p, float v) { return Xs[s * LDX + p] * v; });
            X.row_store(ddp + ps * S_::DDP, rs);
        }
        // dW += dY Xᵀ (raw x); dC += exp(cs_t) dY H_c; dB += exp(cl - cs_s) dt_s X G_{c+1}
        dW.mma_kp<PS>([&](int t, int p) { return ssd_kp<TR>(DYs + t * LDX + p); }, [&](int p, int s) { return ssd_kp<TR>(Xs + s * LDX + p); });
        dCt.mma_kp<PS>([&](int t, int p) { return ssd_kp<TR>(DYs + t * LDX + p, ecs[t]); },
                       [&](int p, int n) { return ssd_kp2(Hs[p * LDS + n], Hs[(p + 1) * LDS + n]); });
        dBt.mma_kp<PS>([&](int s, int p) { return ssd_kp<TR>(Xs + s * LDX + p, wst[s]); },
                       [&](int p, int n) { return ssd_kp2(Gs[p * LDS + n], Gs[(p + 1) * LDS + n]); });
        for (int i = threadIdx.x; i < PS * N / 2; i += blockDim.x) {  // <H_c, G_{c+1}> (the chunk decay's gradient), bf16 pairs
            int r = i / (N / 2), n = 2 * (i % (N / 2));
            float2 hv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(Hs + r * LDS + n));
            float2 gv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(Gs + r * LDS + n));
            dcl_acc += hv.x * gv.x + hv.y * gv.y;
        }
        if (ps == nps - 1) {  // the head is complete
            // dCB_h = mask∘decay(dW) dt_s; m = dCB_h ∘ CB below the diagonal: d(cs_t) += row sums, d(cs_s) -= column sums
            dW.pairs([&](int t, int s, float& v0, float& v1) {
                v0 = ssd_tc_decay(v0, cs, t, s) * dts[s];
                v1 = ssd_tc_decay(v1, cs, t, s + 1) * dts[s + 1];
            });
            auto m = [&](int t, int s, float v) { return s < t ? v * CBs[t * LDCB + s] : 0.0f; };
            float rs[TQ::MT][2];
            dW.row_part(rs, m);
            dW.row_store(rowp, rs);
            dW.col_store(colp, m);
#pragma unroll
            for (int i = 0; i < TQ::MT; i++)
#pragma unroll
                for (int j = 0; j < TQ::NT; j++)
#pragma unroll
                    for (int r = 0; r < 4; r++) dCB.acc[i][j][r] += dW.acc[i][j][r];
            // r1_t = C_t . (this head's dC_t), r2_s = B_s . (this head's dB_s): differences of the running row parts
            float n1[TN::MT][2], n2[TN::MT][2];
            dCt.row_part(n1, [&](int t, int n, float v) { return Cs[t * LDC + n] * v; });
            dBt.row_part(n2, [&](int s, int n, float v) { return Bs[s * LDB + n] * v; });
#pragma unroll
            for (int i = 0; i < TN::MT; i++)
#pragma unroll
                for (int hh2 = 0; hh2 < 2; hh2++) {
                    float a1 = n1[i][hh2], a2 = n2[i][hh2];
                    n1[i][hh2] = a1 - r1prev[i][hh2]; r1prev[i][hh2] = a1;
                    n2[i][hh2] = a2 - r2prev[i][hh2]; r2prev[i][hh2] = a2;
                }
            dCt.row_store(r1p, n1);
            dBt.row_store(r2p, n2);
            float wsum = warp_sum(dcl_acc), wd = warp_sum(dD_acc);
            if (lane == 0) { red[warp] = wsum; red[W + warp] = wd; }
            __syncthreads();
            if (warp == 0) {
                // d(cs_t) = mask rows - mask columns + r1_t - r2_t; the last step also gets sum_s r2_s
                // (the chunk state's exp(cl)) and exp(cl) <H_c, G_{c+1}> (the chunk decay)
                constexpr int E = Q / 32;
                float dcs[E], dd[E], r2s = 0.0f;
#pragma unroll
                for (int e = 0; e < E; e++) {
                    const int t = lane * E + e;
                    float v = 0.0f, r2 = 0.0f, d = 0.0f;
                    for (int w = 0; w < TQ::WN; w++) v += rowp[w * Q + t];
                    for (int w = 0; w < TQ::WM; w++) v -= colp[w * Q + t];
                    for (int w = 0; w < TN::WN; w++) { v += r1p[w * Q + t]; r2 += r2p[w * Q + t]; }
                    for (int q = 0; q < nps; q++)
                        for (int w = 0; w < TX::WN; w++) d += ddp[q * S_::DDP + w * Q + t];
                    dcs[e] = v - r2; r2s += r2; dd[e] = d;
                }
                r2s = warp_sum(r2s);
                float dcl = 0.0f, dDh = 0.0f;
                for (int w = 0; w < W; w++) { dcl += red[w]; dDh += red[W + w]; }
                if (lane == 31) dcs[E - 1] += r2s + __expf(cs[Q - 1]) * dcl;
                // cs_t = sum_{k<=t} dt_k A: ddt_k += A sum_{t>=k} d(cs_t), dA += sum_k dt_k sum_{t>=k} d(cs_t)
                float loc[E], run = 0.0f;
#pragma unroll
                for (int e = E - 1; e >= 0; e--) { run += dcs[e]; loc[e] = run; }
                float incl = run;
#pragma unroll
                for (int o = 1; o < 32; o <<= 1) {
                    float u = __shfl_down_sync(0xffffffffu, incl, o);
                    if (lane + o < 32) incl += u;
                }
                const float above = incl - run;  // the lanes after this one
                float dAp = 0.0f;
#pragma unroll
                for (int e = 0; e < E; e++) {
                    const int t = lane * E + e;
                    const float cum = loc[e] + above;
                    dAp += dts[t] * cum;
                    if (t < Qc) ddt[((size_t)b * L + t0 + t) * H + h] = (floatX)(dtb[Q + t] + Ah * cum + dd[e]);
                }
                dAp = warp_sum(dAp);
                if (lane == 0) { atomicAdd(&dA[h], dAp); atomicAdd(&dD[h], dDh); }
            }
        }
        __syncthreads();
    }
    // dC += dCB B, dB += dCBᵀ C, with the group's summed dCB (lower triangular)
    dCB.pairs([&](int t, int s, float& v0, float& v1) { ssd_st2(CBs + t * LDCB + s, v0, v1); });
    __syncthreads();
    dCt.mma<Q>([&](int t, int s) { return CBs[t * LDCB + s]; }, [&](int s, int n) { return Bs[s * LDB + n]; });
    dBt.mma<Q>([&](int s, int t) { return CBs[t * LDCB + s]; }, [&](int t, int n) { return Cs[t * LDC + n]; });
    auto add_rows = [&](floatX* out, TN& T) {  // every load first, then the adds and stores
        float2 old[TN::MT][TN::NT][2];
#pragma unroll
        for (int i = 0; i < TN::MT; i++)
#pragma unroll
            for (int j = 0; j < TN::NT; j++)
#pragma unroll
                for (int hh2 = 0; hh2 < 2; hh2++) {
                    int t = T.row(i, hh2);
                    old[i][j][hh2] = t < Qc ? *reinterpret_cast<const float2*>(out + (((size_t)b * L + t0 + t) * G + g) * N + T.col(j))
                                            : make_float2(0.0f, 0.0f);
                }
#pragma unroll
        for (int i = 0; i < TN::MT; i++)
#pragma unroll
            for (int j = 0; j < TN::NT; j++)
#pragma unroll
                for (int hh2 = 0; hh2 < 2; hh2++) {
                    int t = T.row(i, hh2);
                    if (t < Qc)
                        ssd_st2(out + (((size_t)b * L + t0 + t) * G + g) * N + T.col(j), old[i][j][hh2].x + T.acc[i][j][2 * hh2],
                                old[i][j][hh2].y + T.acc[i][j][2 * hh2 + 1]);
                }
    };
    add_rows(dCm, dCt);
    add_rows(dBm, dBt);
}

// the forward on the tensor cores: CB per chunk and group, then the sequential kernel
template <int Q, int N, int PT>
static void ssd_tc_forward(floatX* y, float* final_state, const floatX* x, const floatX* dt, const float* A, const floatX* Bm,
                           const floatX* Cm, const float* D, const float* h0, int B, int L, int H, int P, int G) {
    const int nc = ceil_div(L, Q);
    static DeviceScratch cb_buf;
    float* cb = cb_buf.get((size_t)B * nc * G * Q * Q);
    size_t sm1 = ssd_tc_cb_smem<Q, N>();
    ssd_set_smem((const void*)ssd_tc_cb_kernel<Q, N>, sm1, "ssd (C Bᵀ)");
    ssd_tc_cb_kernel<Q, N><<<dim3(nc, G, B), 128, sm1 * sizeof(float)>>>(cb, Bm, Cm, L, G);
    cudaCheckLaunch();
    size_t sm2 = SsdSeqSmem<Q, N, PT, true>::floats;
    ssd_set_smem((const void*)ssd_tc_seq_kernel<Q, N, PT, true, float>, sm2, "ssd_forward");
    ssd_tc_seq_kernel<Q, N, PT, true, float><<<dim3(P / PT, H, B), PT * 4, sm2 * sizeof(float)>>>(
        y, final_state, (float*)nullptr, x, dt, A, Bm, Cm, D, h0, cb, L, H, P, G);
    cudaCheckLaunch();
}
// the same with the second form of the sequential kernel (the state read from the accumulators)
template <int Q, int N, int PT, bool TR = false>
static void ssd_tc_forward2(floatX* y, float* final_state, const floatX* x, const floatX* dt, const float* A, const floatX* Bm,
                            const floatX* Cm, const float* D, const float* h0, int B, int L, int H, int P, int G) {
    const int nc = ceil_div(L, Q);
    static DeviceScratch cb_buf;
    float* cb = cb_buf.get((size_t)B * nc * G * Q * Q);
    size_t sm1 = ssd_tc_cb_smem<Q, N>();
    ssd_set_smem((const void*)ssd_tc_cb_kernel<Q, N>, sm1, "ssd (C Bᵀ)");
    ssd_tc_cb_kernel<Q, N><<<dim3(nc, G, B), 128, sm1 * sizeof(float)>>>(cb, Bm, Cm, L, G);
    cudaCheckLaunch();
    size_t sm2 = SsdFwdSmem<Q, N, PT>::floats;
    ssd_set_smem((const void*)ssd_tc_fwd_kernel<Q, N, PT, TR>, sm2, "ssd_forward");
    ssd_tc_fwd_kernel<Q, N, PT, TR><<<dim3(P / PT, H, B), PT * 4, sm2 * sizeof(float)>>>(y, final_state, x, dt, A, Bm, Cm, D, h0, cb,
                                                                                    L, H, P, G);
    cudaCheckLaunch();
}

// the backward on the tensor cores: CB, the states (recomputed), the state gradients, then the
// per-chunk kernel for everything else. States of type ST (fp32; bf16 halves their traffic). V2: the
// per-chunk kernel's second form (bf16 states only); TR: fp32 operands truncated to tf32 by the tensor cores
template <int Q, int N, int PT, typename ST, int WB = 8, bool V2 = false, bool TR = false, int WMT = 0>
static void ssd_tc_backward(floatX* dx, floatX* ddt, float* dA, floatX* dBm, floatX* dCm, float* dD, float* dh0,
                            const floatX* dy, const float* dfinal_state, const floatX* x, const floatX* dt, const float* A,
                            const floatX* Bm, const floatX* Cm, const float* D, const float* h0, int B, int L, int H, int P, int G) {
    const int nc = ceil_div(L, Q);
    static DeviceScratch cb_buf, states_buf, dstates_buf;
    const size_t n_states = (size_t)B * nc * H * P * N * sizeof(ST) / sizeof(float);
    float* cb = cb_buf.get((size_t)B * nc * G * Q * Q);
    ST* states = reinterpret_cast<ST*>(states_buf.get(n_states));
    ST* dstates = reinterpret_cast<ST*>(dstates_buf.get(n_states));
    size_t sm1 = ssd_tc_cb_smem<Q, N>();
    ssd_set_smem((const void*)ssd_tc_cb_kernel<Q, N>, sm1, "ssd (C Bᵀ)");
    ssd_tc_cb_kernel<Q, N><<<dim3(nc, G, B), 128, sm1 * sizeof(float)>>>(cb, Bm, Cm, L, G);
    cudaCheckLaunch();
    size_t sm2 = SsdSeqSmem<Q, N, PT, false>::floats;
    ssd_set_smem((const void*)ssd_tc_seq_kernel<Q, N, PT, false, ST, TR, WMT>, sm2, "ssd (states)");
    ssd_tc_seq_kernel<Q, N, PT, false, ST, TR, WMT><<<dim3(P / PT, H, B), PT * 4, sm2 * sizeof(float)>>>(
        nullptr, nullptr, states, x, dt, A, Bm, Cm, D, h0, cb, L, H, P, G);
    cudaCheckLaunch();
    size_t sm3 = SsdDstateSmem<Q, N, PT>::floats;
    ssd_set_smem((const void*)ssd_tc_dstate_kernel<Q, N, PT, ST, TR, WMT>, sm3, "ssd (state gradients)");
    ssd_tc_dstate_kernel<Q, N, PT, ST, TR, WMT><<<dim3(P / PT, H, B), PT * 4, sm3 * sizeof(float)>>>(dstates, dh0, dfinal_state, dy, dt, A,
                                                                                          Cm, L, H, P, G);
    cudaCheckLaunch();
    if constexpr (V2) {
        static_assert(sizeof(ST) == 2, "ssd_tc_backward: the second per-chunk kernel takes bf16 states");
        size_t sm4 = SsdChunkBwd2Smem<Q, N, WMT>::floats(P);
        ssd_set_smem((const void*)ssd_tc_chunk_bwd2_kernel<Q, N, TR, WMT>, sm4, "ssd_backward");
        ssd_tc_chunk_bwd2_kernel<Q, N, TR, WMT><<<dim3(nc, G, B), 256, sm4 * sizeof(float)>>>(dx, ddt, dA, dBm, dCm, dD, dy, x, dt, A, Bm,
                                                                                       Cm, D, cb, states, dstates, L, H, P, G);
        cudaCheckLaunch();
        return;
    }
    size_t sm4 = SsdChunkBwdSmem<Q, N, ST, WB>::floats(P);
    ssd_set_smem((const void*)ssd_tc_chunk_bwd_kernel<Q, N, ST, WB>, sm4, "ssd_backward");
    ssd_tc_chunk_bwd_kernel<Q, N, ST, WB><<<dim3(nc, G, B), WB * 32, sm4 * sizeof(float)>>>(dx, ddt, dA, dBm, dCm, dD, dy, x, dt, A, Bm, Cm,
                                                                                    D, cb, states, dstates, L, H, P, G);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// v23-v24: the chunk-parallel form with a look-back state pass. One block per (chunk, p-slice, head, batch),
// chunks of 64; a block takes a ticket (atomicAdd) that names its (chain, chunk) chunk-major, so every block
// it waits for has an earlier ticket and is running or done (no deadlock, whatever the residency).
// Each block first does its chunk's own work in parallel with every other chunk (the chunk state
// S_c = sum_s exp(cl - cs_s) dt_s x_s B_sᵀ and, in the forward, the diagonal block), then waits for the state
// entering its chunk H_c from its predecessor (fp32, through a two-slot ring per chain in L2 and a flag with
// release / acquire), publishes H_{c+1} = exp(cl) H_c + S_c at once (the only sequential step: a flag,
// 32 KB read from L2, one FMA per element, 32 KB written) and only then reads the state for its outputs.
// The sequential work per chunk is thus the hand-over, not the mma: the 192 chains no longer leave 36 SMs
// idle and the blocks of one SM are in different phases (loads, mma, hand-over).
__device__ __forceinline__ int ssd_ld_acquire(const int* p) {
    int v;
    asm volatile("ld.acquire.gpu.global.s32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void ssd_st_release(int* p, int v) {
    asm volatile("st.release.gpu.global.s32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}
// thread 0 waits until *flag >= v, then the block goes on (the state behind the flag is read with ld.cg)
__device__ __forceinline__ void ssd_lb_wait(const int* flag, int v) {
    if (threadIdx.x == 0)
        while (ssd_ld_acquire(flag) < v) __nanosleep(20);
    __syncthreads();
}
// every thread's stores of the state are made visible, then thread 0 raises the flag to v
__device__ __forceinline__ void ssd_lb_publish(int* flag, int v) {
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) ssd_st_release(flag, v);
}
// a block's ticket -> (chain, chunk index in walking order)
__device__ __forceinline__ int ssd_lb_ticket(int* ticket) {
    __shared__ int s_t;
    if (threadIdx.x == 0) s_t = atomicAdd(ticket, 1);
    __syncthreads();
    return s_t;
}

// v23 forward: the chunk's inputs (x slice, B, C, C Bᵀ, dt; one stage, no double buffer: the other resident
// block computes while this one loads), S_c by mma, the diagonal block of Yᵀ (as v18: each warp of a pair half
// of s), wait for H_c, publish H_{c+1}, then the state read Yᵀ += H_c (C ∘ exp(cs))ᵀ from H_c's registers (the
// accumulator fragment as the A operand, v18's trick), the pair exchange (in B's tile, free by then) and y.
// 111 KB at Q 64, N 128, PT 64: two blocks per SM. Operands rounded to tf32 as in v20's forward.
template <int Q, int N, int PT> struct SsdLbFwdSmem {
    static constexpr int W = PT / 8, LDB = N + 8, LDX = PT + 8, LDC = N + 8, LDCB = Q + 4, XCH = (Q / 16) * 4 * 32;
    static_assert(W * XCH <= Q * LDB, "SsdLbFwdSmem: the exchange must fit in B's tile");
    static constexpr size_t floats = (size_t)Q * LDB + Q * LDX + Q * LDC + Q * LDCB + Q + 4 * Q * W;
};
template <int Q, int N, int PT>
__global__ void __launch_bounds__(PT * 4, 2) ssd_lb_fwd_kernel(floatX* y, float* fstate, float* ring, int* flags, int* ticket,
                                                              const floatX* x, const floatX* dt, const float* A, const floatX* Bm,
                                                              const floatX* Cm, const float* D, const float* h0, const float* cb,
                                                              int B, int L, int H, int P, int G) {
    typedef SsdLbFwdSmem<Q, N, PT> S_;
    constexpr int W = S_::W, LDB = S_::LDB, LDX = S_::LDX, LDC = S_::LDC, LDCB = S_::LDCB;
    constexpr int TT = Q / 8, HT = TT / 2;
    typedef SsdTile<PT, N, W> TS;
    static_assert(TS::MT == 1 && TS::WN == 2, "ssd_lb_fwd_kernel: the state tile must be 16 rows x N/2 per warp");
    extern __shared__ float sm[];
    float *Bs = sm, *Xs = Bs + Q * LDB, *Cs = Xs + Q * LDX, *CBs = Cs + Q * LDC, *dtb = CBs + Q * LDCB;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    float *cs = dtb + Q + 4 * Q * warp, *dts = cs + Q, *ws = dts + Q, *ecs = ws + Q;
    float* xch = Bs;  // the pair exchange, once the chunk state no longer reads B
    const int nps = P / PT, nch = B * H * nps, nc = (L + Q - 1) / Q;
    const int tk = ssd_lb_ticket(ticket), chain = tk % nch, c = tk / nch;
    const int pt = chain % nps, h = (chain / nps) % H, b = chain / (nps * H);
    const int gr = h / (H / G), p0 = pt * PT, t0 = c * Q, Qc = min(Q, L - t0);
    const float Ah = A[h], Dh = D[h];
    const size_t PN = (size_t)P * N, bh = (size_t)b * H + h;
    {
        const size_t row = ((size_t)b * L + t0) * G + gr;
        ssd_cp_rows<Q, PT>(Xs, LDX, x + (((size_t)b * L + t0) * H + h) * P + p0, (size_t)H * P, Qc);
        ssd_cp_rows<Q, N>(Bs, LDB, Bm + row * N, (size_t)G * N, Qc);
        ssd_cp_rows<Q, N>(Cs, LDC, Cm + row * N, (size_t)G * N, Qc);
        ssd_cp_rows<Q, Q>(CBs, LDCB, cb + (((size_t)b * nc + c) * G + gr) * Q * Q, Q, Q);
        ssd_cp_dt<Q>(dtb, dt + ((size_t)b * L + t0) * H + h, H, Qc);
        cp_async_commit();
        cp_async_wait<0>();
    }
    __syncthreads();
    const float cl = ssd_tc_cumsum<Q>(cs, dts, dtb, 1, Qc, Ah);
    for (int i = lane; i < Q; i += 32) { ws[i] = __expf(cl - cs[i]) * dts[i]; ecs[i] = __expf(cs[i]); }
    __syncwarp();
    // 2. the chunk's own state S_c = (w x)ᵀ B
    TS S;
    S.mma<Q>([&](int p, int s) { return Xs[s * LDX + p] * ws[s]; }, [&](int s, int n) { return Bs[s * LDB + n]; });
    // 1. the diagonal block over this warp's half of s: Yᵀ[p][t] = sum_s x[s][p] exp(cs_t - cs_s) CB[t][s] dt_s
    const int wn = S.wn, m0 = S.m0, partner = warp ^ (W / 2);
    float yt[TT][4];
#pragma unroll
    for (int j = 0; j < TT; j++) yt[j][0] = yt[j][1] = yt[j][2] = yt[j][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < Q / 2; ks += 8) {
        const int s = wn * (Q / 2) + ks + t4;
        const int p = m0 + g;
        uint32_t a[4] = {ssd_tf32(Xs[s * LDX + p]), ssd_tf32(Xs[s * LDX + p + 8]), ssd_tf32(Xs[(s + 4) * LDX + p]),
                         ssd_tf32(Xs[(s + 4) * LDX + p + 8])};
#pragma unroll
        for (int j = 0; j < TT; j++) {
            const int t = 8 * j + g;
            ssd_mma_tf32(yt[j], a, ssd_tf32(ssd_tc_decay(CBs[t * LDCB + s], cs, t, s) * dts[s]),
                         ssd_tf32(ssd_tc_decay(CBs[t * LDCB + s + 4], cs, t, s + 4) * dts[s + 4]));
        }
    }
    // 3. state passing: H_c from the predecessor (h0 or zeros for the first chunk), H_{c+1} to the successor
    TS Hc;
    if (c == 0) {
        if (h0)
            Hc.pairs([&](int p, int n, float& v0, float& v1) {
                float2 u = *reinterpret_cast<const float2*>(h0 + bh * PN + (size_t)(p0 + p) * N + n);
                v0 = u.x; v1 = u.y;
            });
    } else {
        ssd_lb_wait(flags + 2 * chain + (c & 1), c);
        const float* hin = ring + ((size_t)chain * 2 + (c & 1)) * PT * N;
        Hc.pairs([&](int p, int n, float& v0, float& v1) {
            float2 u = __ldcg(reinterpret_cast<const float2*>(hin + p * N + n));
            v0 = u.x; v1 = u.y;
        });
    }
    {
        const float el = __expf(cl);
#pragma unroll
        for (int j = 0; j < TS::NT; j++)
#pragma unroll
            for (int r = 0; r < 4; r++) S.acc[0][j][r] = el * Hc.acc[0][j][r] + S.acc[0][j][r];
    }
    if (c + 1 < nc) {
        float* hout = ring + ((size_t)chain * 2 + ((c + 1) & 1)) * PT * N;
        S.pairs([&](int p, int n, float& v0, float& v1) { __stcg(reinterpret_cast<float2*>(hout + p * N + n), make_float2(v0, v1)); });
        ssd_lb_publish(flags + 2 * chain + ((c + 1) & 1), c + 1);
    } else if (fstate) {
        S.pairs([&](int p, int n, float& v0, float& v1) { ssd_st2(fstate + bh * PN + (size_t)(p0 + p) * N + n, v0, v1); });
    }
    // 4. the state read: Yᵀ[p][t] += sum_n H_c[p][n] C[t][n] exp(cs_t), this warp's half of n
#pragma unroll
    for (int kk = 0; kk < TS::NT; kk++) {
        uint32_t a[4] = {ssd_tf32(Hc.acc[0][kk][0]), ssd_tf32(Hc.acc[0][kk][2]), ssd_tf32(Hc.acc[0][kk][1]),
                         ssd_tf32(Hc.acc[0][kk][3])};
#pragma unroll
        for (int j = 0; j < TT; j++) {
            uint2 bv = ssd_kp<false>(Cs + (8 * j + g) * LDC + Hc.n0 + 8 * kk + 2 * t4, ecs[8 * j + g]);
            ssd_mma_tf32(yt[j], a, bv.x, bv.y);
        }
    }
    // the pair's halves (as v18), through B's tile
    __syncthreads();
    float* mine = xch + warp * S_::XCH;
#pragma unroll
    for (int j = 0; j < HT; j++) {
#pragma unroll
        for (int r = 0; r < 4; r++) mine[(j * 4 + r) * 32 + lane] = wn ? yt[j][r] : yt[HT + j][r];
    }
    asm volatile("bar.sync %0, 64;\n" ::"r"(1 + S.wm) : "memory");
    const float* theirs = xch + partner * S_::XCH;
#pragma unroll
    for (int j = 0; j < HT; j++) {
        const int jm = wn * HT + j, t = 8 * jm + 2 * t4;
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const int p = m0 + g + 8 * hh;
#pragma unroll
            for (int e = 0; e < 2; e++) {
                float v = (wn ? yt[HT + j][2 * hh + e] : yt[j][2 * hh + e]) + theirs[(j * 4 + 2 * hh + e) * 32 + lane];
                if (t + e < Qc) y[(((size_t)b * L + t0 + t + e) * H + h) * P + p0 + p] = v + Dh * Xs[(t + e) * LDX + p];
            }
        }
    }
}

// v24: the backward's two state passes in the same form (one kernel, REV picks the pass), chunks of 64, bf16 out.
//   !REV (states):          local = sum_s exp(cl - cs_s) dt_s u_s V_sᵀ (u = x, V = B); in = H_c (h0 at c 0);
//                           states[c] = in; out = H_{c+1} = exp(cl) in + local
//   REV (state gradients):  chunks walked from the last; local = sum_t exp(cs_t) u_t V_tᵀ (u = dy, V = C);
//                           in = G_{c+1} (dfinal at the last chunk); states[c] = in; out = G_c = exp(cl) in + local;
//                           dh0 += G_0
// 60 KB of shared memory: three blocks per SM. Operands truncated to tf32 (v20's backward).
template <int Q, int N, int PT> struct SsdLbStateSmem {
    static constexpr int W = PT / 8, LDV = N + 8, LDU = PT + 8;
    static constexpr size_t floats = (size_t)Q * LDV + Q * LDU + Q + 3 * Q * W;
};
template <int Q, int N, int PT, bool REV>
__global__ void __launch_bounds__(PT * 4, 3) ssd_lb_state_kernel(bf16* states, float* hend, const float* hbeg, float* ring, int* flags,
                                                                int* ticket, const floatX* u, const floatX* dt, const float* A,
                                                                const floatX* V, int B, int L, int H, int P, int G) {
    typedef SsdLbStateSmem<Q, N, PT> S_;
    constexpr int W = S_::W, LDV = S_::LDV, LDU = S_::LDU;
    typedef SsdTile<PT, N, W> TS;
    extern __shared__ float sm[];
    float *Vs = sm, *Us = Vs + Q * LDV, *dtb = Us + Q * LDU;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *cs = dtb + Q + 3 * Q * warp, *dts = cs + Q, *ws = dts + Q;
    const int nps = P / PT, nch = B * H * nps, nc = (L + Q - 1) / Q;
    const int tk = ssd_lb_ticket(ticket), chain = tk % nch, k = tk / nch, c = REV ? nc - 1 - k : k;
    const int pt = chain % nps, h = (chain / nps) % H, b = chain / (nps * H);
    const int gr = h / (H / G), p0 = pt * PT, t0 = c * Q, Qc = min(Q, L - t0);
    const float Ah = A[h];
    const size_t PN = (size_t)P * N, bh = (size_t)b * H + h;
    ssd_cp_rows<Q, PT>(Us, LDU, u + (((size_t)b * L + t0) * H + h) * P + p0, (size_t)H * P, Qc);
    ssd_cp_rows<Q, N>(Vs, LDV, V + (((size_t)b * L + t0) * G + gr) * N, (size_t)G * N, Qc);
    ssd_cp_dt<Q>(dtb, dt + ((size_t)b * L + t0) * H + h, H, Qc);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    const float cl = ssd_tc_cumsum<Q>(cs, dts, dtb, 1, Qc, Ah);
    for (int i = lane; i < Q; i += 32) ws[i] = REV ? __expf(cs[i]) : __expf(cl - cs[i]) * dts[i];
    __syncwarp();
    TS S;
    S.mma<Q>([&](int p, int s) { return ssd_op<true>(Us[s * LDU + p] * ws[s]); }, [&](int s, int n) { return ssd_op<true>(Vs[s * LDV + n]); });
    TS Hc;
    if (k == 0) {
        if (hbeg)
            Hc.pairs([&](int p, int n, float& v0, float& v1) {
                float2 w2 = *reinterpret_cast<const float2*>(hbeg + bh * PN + (size_t)(p0 + p) * N + n);
                v0 = w2.x; v1 = w2.y;
            });
    } else {
        ssd_lb_wait(flags + 2 * chain + (k & 1), k);
        const float* hin = ring + ((size_t)chain * 2 + (k & 1)) * PT * N;
        Hc.pairs([&](int p, int n, float& v0, float& v1) {
            float2 w2 = __ldcg(reinterpret_cast<const float2*>(hin + p * N + n));
            v0 = w2.x; v1 = w2.y;
        });
    }
    const float el = __expf(cl);
#pragma unroll
    for (int i = 0; i < TS::MT; i++)
#pragma unroll
        for (int j = 0; j < TS::NT; j++)
#pragma unroll
            for (int r = 0; r < 4; r++) S.acc[i][j][r] = el * Hc.acc[i][j][r] + S.acc[i][j][r];
    if (k + 1 < nc) {
        float* hout = ring + ((size_t)chain * 2 + ((k + 1) & 1)) * PT * N;
        S.pairs([&](int p, int n, float& v0, float& v1) { __stcg(reinterpret_cast<float2*>(hout + p * N + n), make_float2(v0, v1)); });
        ssd_lb_publish(flags + 2 * chain + ((k + 1) & 1), k + 1);
    } else if (REV && hend) {
        S.pairs([&](int p, int n, float& v0, float& v1) {
            float2* o = reinterpret_cast<float2*>(hend + bh * PN + (size_t)(p0 + p) * N + n);
            float2 w2 = *o; w2.x += v0; w2.y += v1; *o = w2;
        });
    }
    Hc.pairs([&](int p, int n, float& v0, float& v1) {
        ssd_st2(states + (((size_t)b * nc + c) * H + h) * PN + (size_t)(p0 + p) * N + n, v0, v1);
    });
}

// the launchers: the flags and the ticket are zeroed before each launch (one small memset)
struct SsdLbScratch {
    DeviceScratch ring, flags;
    float* ring_for(int nch, int PT, int N) { return ring.get((size_t)nch * 2 * PT * N); }
    int* flags_for(int nch) {
        int* f = reinterpret_cast<int*>(flags.get((size_t)2 * nch + 1));
        cudaCheck(cudaMemsetAsync(f, 0, ((size_t)2 * nch + 1) * sizeof(int)));
        return f;
    }
};
template <int Q, int N, int PT>
static void ssd_lb_forward(floatX* y, float* final_state, const floatX* x, const floatX* dt, const float* A, const floatX* Bm,
                           const floatX* Cm, const float* D, const float* h0, int B, int L, int H, int P, int G) {
    const int nc = ceil_div(L, Q), nch = B * H * (P / PT);
    static DeviceScratch cb_buf;
    static SsdLbScratch lb;
    float* cb = cb_buf.get((size_t)B * nc * G * Q * Q);
    size_t sm1 = ssd_tc_cb_smem<Q, N>();
    ssd_set_smem((const void*)::ssd_tc_cb_kernel<Q, N>, sm1, "ssd (C Bᵀ)");
    ::ssd_tc_cb_kernel<Q, N><<<dim3(nc, G, B), 128, sm1 * sizeof(float)>>>(cb, Bm, Cm, L, G);
    cudaCheckLaunch();
    float* ring = lb.ring_for(nch, PT, N);
    int* flags = lb.flags_for(nch);
    size_t sm2 = SsdLbFwdSmem<Q, N, PT>::floats;
    ssd_set_smem((const void*)ssd_lb_fwd_kernel<Q, N, PT>, sm2, "ssd_forward (look-back)");
    ssd_lb_fwd_kernel<Q, N, PT><<<nc * nch, PT * 4, sm2 * sizeof(float)>>>(y, final_state, ring, flags, flags + 2 * nch, x, dt, A, Bm,
                                                                         Cm, D, h0, cb, B, L, H, P, G);
    cudaCheckLaunch();
}
// v24's backward: C Bᵀ, the two look-back state passes, then src's (v20's) per-chunk backward
template <int Q, int N, int PT>
static void ssd_lb_backward(floatX* dx, floatX* ddt, float* dA, floatX* dBm, floatX* dCm, float* dD, float* dh0,
                            const floatX* dy, const float* dfinal_state, const floatX* x, const floatX* dt, const float* A,
                            const floatX* Bm, const floatX* Cm, const float* D, const float* h0, int B, int L, int H, int P, int G) {
    const int nc = ceil_div(L, Q), nch = B * H * (P / PT);
    static DeviceScratch cb_buf, states_buf, dstates_buf;
    static SsdLbScratch lb1, lb2;
    const size_t n_states = (size_t)B * nc * H * P * N * sizeof(bf16) / sizeof(float);
    float* cb = cb_buf.get((size_t)B * nc * G * Q * Q);
    bf16* states = reinterpret_cast<bf16*>(states_buf.get(n_states));
    bf16* dstates = reinterpret_cast<bf16*>(dstates_buf.get(n_states));
    size_t sm1 = ssd_tc_cb_smem<Q, N>();
    ssd_set_smem((const void*)::ssd_tc_cb_kernel<Q, N>, sm1, "ssd (C Bᵀ)");
    ::ssd_tc_cb_kernel<Q, N><<<dim3(nc, G, B), 128, sm1 * sizeof(float)>>>(cb, Bm, Cm, L, G);
    cudaCheckLaunch();
    size_t sm2 = SsdLbStateSmem<Q, N, PT>::floats;
    float* ring1 = lb1.ring_for(nch, PT, N);
    int* f1 = lb1.flags_for(nch);
    ssd_set_smem((const void*)ssd_lb_state_kernel<Q, N, PT, false>, sm2, "ssd (states, look-back)");
    ssd_lb_state_kernel<Q, N, PT, false><<<nc * nch, PT * 4, sm2 * sizeof(float)>>>(states, nullptr, h0, ring1, f1, f1 + 2 * nch, x, dt,
                                                                                   A, Bm, B, L, H, P, G);
    cudaCheckLaunch();
    float* ring2 = lb2.ring_for(nch, PT, N);
    int* f2 = lb2.flags_for(nch);
    ssd_set_smem((const void*)ssd_lb_state_kernel<Q, N, PT, true>, sm2, "ssd (state gradients, look-back)");
    ssd_lb_state_kernel<Q, N, PT, true><<<nc * nch, PT * 4, sm2 * sizeof(float)>>>(dstates, dh0, dfinal_state, ring2, f2, f2 + 2 * nch, dy,
                                                                                  dt, A, Cm, B, L, H, P, G);
    cudaCheckLaunch();
    ::ssd_tc_chunk_backward<Q, N>(dx, ddt, dA, dBm, dCm, dD, dy, x, dt, A, Bm, Cm, D, cb, states, dstates, B, L, H, P, G, GRAD_ADD);
}
template <int Q, int PT>
static void lb_fwd(floatX* y, float* fs, const floatX* x, const floatX* dt, const float* A, const floatX* Bm, const floatX* Cm,
                   const float* D, const float* h0, int B, int L, int H, int P, int G, int N, int) {
    if (B == 0 || L == 0) return;
    if (N == 128) ssd_lb_forward<Q, 128, PT>(y, fs, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G);
    else if (N == 64) ssd_lb_forward<Q, 64, PT>(y, fs, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G);
    else FATAL("lb_fwd: N %d not compiled", N);
}
template <int Q, int PT>
static void lb_bwd(floatX* dx, floatX* ddt, float* dA, floatX* dBm, floatX* dCm, float* dD, float* dh0, const floatX* dy,
                   const float* dfs, const floatX* x, const floatX* dt, const float* A, const floatX* Bm, const floatX* Cm,
                   const float* D, const float* h0, int B, int L, int H, int P, int G, int N) {
    if (B == 0 || L == 0) return;
    if (N == 128) ssd_lb_backward<Q, 128, PT>(dx, ddt, dA, dBm, dCm, dD, dh0, dy, dfs, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G);
    else if (N == 64) ssd_lb_backward<Q, 64, PT>(dx, ddt, dA, dBm, dCm, dD, dh0, dy, dfs, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G);
    else FATAL("lb_bwd: N %d not compiled", N);
}

}  // namespace ssd_dev


// ---------------------------------------------------------------------------
// the versions, behind ssd_forward_cuda / ssd_backward_cuda's arguments

typedef void (*SsdFwd)(floatX*, float*, const floatX*, const floatX*, const float*, const floatX*, const floatX*,
                       const float*, const float*, int, int, int, int, int, int, int);
typedef void (*SsdBwd)(floatX*, floatX*, float*, floatX*, floatX*, float*, float*, const floatX*, const float*,
                       const floatX*, const floatX*, const float*, const floatX*, const floatX*, const float*,
                       const float*, int, int, int, int, int, int);

namespace ssd_dev {
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
}  // namespace ssd_dev
using ssd_dev::tc_fwd;
using ssd_dev::tc_fwd2;
using ssd_dev::tc_bwd;
using ssd_dev::lb_fwd;
using ssd_dev::lb_bwd;

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
// src/ssd.h's backward as the benchmark calls every version: adding into its gradients (GRAD_ADD)
static void src_bwd(floatX* dx, floatX* ddt, float* dA, floatX* dBm, floatX* dCm, float* dD, float* dh0, const floatX* dy,
                    const float* dfinal, const floatX* x, const floatX* dt, const float* A, const floatX* Bm, const floatX* Cm,
                    const float* D, const float* h0, int B, int L, int H, int P, int G, int N) {
    ssd_backward_cuda(dx, ddt, dA, dBm, dCm, dD, dh0, dy, dfinal, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G, N, GRAD_ADD);
}
static const Version g_versions[] = {
    {3, "v3 simt fp32 Q64", v3_fwd, ssd_backward_simt_cuda, 1, 1e-4},
    {16, "v16 bf16 states", tc_fwd<32, 64>, tc_bwd<64, 64, bf16>, 64, 1e-2},
    {17, "v17 v16 fp32 states", tc_fwd<32, 64>, tc_bwd<64, 64, float>, 64, 5e-3},
    {18, "v18 fwd: state from regs", tc_fwd2<32, 64>, tc_bwd<64, 64, bf16>, 64, 1e-2},
    {19, "v19 v18 + bwd paired k", tc_fwd2<32, 64>, tc_bwd<64, 64, bf16, 8, true, false>, 64, 1e-2},
    {20, "v20 src: bwd truncated", ssd_forward_cuda, src_bwd, 64, 1e-2},  // what src/ssd.h runs
    {21, "v21 v20 + fwd truncated", tc_fwd2<32, 64, true>, tc_bwd<64, 64, bf16, 8, true, true>, 64, 1e-2},
    {22, "v22 v20 + bwd 32x32 tiles", tc_fwd2<32, 64>, tc_bwd<64, 64, bf16, 8, true, true, 2>, 64, 1e-2},
    {23, "v23 fwd look-back Q64", lb_fwd<64, 64>, src_bwd, 64, 1e-2},
    {24, "v24 v23 + bwd states l-b", lb_fwd<64, 64>, lb_bwd<64, 64>, 64, 1e-2},
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

// the tensor-core kernels timed one by one: the forward's (chunk QF) and the backward's (chunk QB); v20's
// row times the general kernels above at v20's settings (the code of src/ssd.h's v20 kernels)
namespace ssd_dev {
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
}  // namespace ssd_dev
using ssd_dev::tc_breakdown;

// v23 / v24's look-back kernels timed one by one at Q 64 (each launch after its flags' memset)
namespace ssd_dev {
static void lb_breakdown(const Problem& p, float* gx, float* gdt, float* gA, float* gB, float* gC, float* gD, float* gdy, float* gy) {
    constexpr int Q = 64, N = 128, PT = 64;
    int B = p.B, L = p.L, H = p.H, P = p.P, G = p.G, nc = ceil_div(L, Q), nch = B * H * (P / PT);
    float* cb = dev_alloc<float>((size_t)B * nc * G * Q * Q);
    size_t n_states = (size_t)B * nc * H * P * N;
    bf16* states = dev_alloc<bf16>(n_states);
    SsdLbScratch lb;
    float* ring = lb.ring_for(nch, PT, N);
    size_t s1 = ssd_tc_cb_smem<Q, N>(), s2 = SsdLbFwdSmem<Q, N, PT>::floats, s3 = SsdLbStateSmem<Q, N, PT>::floats;
    ssd_set_smem((const void*)::ssd_tc_cb_kernel<Q, N>, s1, "cb");
    ssd_set_smem((const void*)ssd_lb_fwd_kernel<Q, N, PT>, s2, "lb fwd");
    ssd_set_smem((const void*)ssd_lb_state_kernel<Q, N, PT, false>, s3, "lb states");
    ssd_set_smem((const void*)ssd_lb_state_kernel<Q, N, PT, true>, s3, "lb dstates");
    ::ssd_tc_cb_kernel<Q, N><<<dim3(nc, G, B), 128, s1 * 4>>>(cb, gB, gC, L, G);
    float ms[3];
    ms[0] = dev_bench_ms([&](int) {
        int* f = lb.flags_for(nch);
        ssd_lb_fwd_kernel<Q, N, PT><<<nc * nch, PT * 4, s2 * 4>>>(gy, nullptr, ring, f, f + 2 * nch, gx, gdt, gA, gB, gC, gD, nullptr, cb,
                                                                 B, L, H, P, G);
    }, 2, 10);
    ms[1] = dev_bench_ms([&](int) {
        int* f = lb.flags_for(nch);
        ssd_lb_state_kernel<Q, N, PT, false><<<nc * nch, PT * 4, s3 * 4>>>(states, nullptr, nullptr, ring, f, f + 2 * nch, gx, gdt, gA, gB,
                                                                          B, L, H, P, G);
    }, 2, 10);
    ms[2] = dev_bench_ms([&](int) {
        int* f = lb.flags_for(nch);
        ssd_lb_state_kernel<Q, N, PT, true><<<nc * nch, PT * 4, s3 * 4>>>(states, nullptr, nullptr, ring, f, f + 2 * nch, gdy, gdt, gA, gC,
                                                                         B, L, H, P, G);
    }, 2, 10);
    cudaCheck(cudaGetLastError());
    const char* names[3] = {"lb forward", "lb states", "lb dstates"};
    for (int i = 0; i < 3; i++) printf("     %-12s %8.4f ms\n", names[i], ms[i]);
    dev_free(cb); dev_free(states);
}
}  // namespace ssd_dev
using ssd_dev::lb_breakdown;

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
            if (v->id == 24) lb_breakdown(p, gx, gdt, gA, gB, gC, gD, gdy, gy);
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
