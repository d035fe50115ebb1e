// dev/attention.cu: multi-head scaled dot-product attention, forward and backward: the plain kernels
// against fused ("flash") kernels that never write the T x T matrix to memory. Version 4 is now
// src/attention.h's CUDA attention (the plain kernels its fallback): its kernels, the shared helpers
// (element access, D kernel, AttBwdArgs / AttHead, mma PTX, the AttMmaTf32 policy and the policy-templated
// att_tc_* kernels) live there and are used here; this file keeps the other versions and the bench.
//
// Semantics (src/attention.h): qkv (B, T, 3C), rows [q | k | v]; head h uses columns [h*hd, (h+1)*hd) of
// each part, hd = C / NH; s_ij = q_i.k_j / sqrt(hd) over the visible keys j < lim(b, i) =
// min(lengths[b], causal ? i + 1 : T); out_i = sum_j softmax_j(s_ij) v_j; a row with no visible key
// outputs 0. The backward ACCUMULATES into dqkv (+=), like every backward in src/.
//
// Interface of every version (src/attention.h's):
//   forward (out, lse, qkv, lengths, B, T, C, NH, causal)
//       lse: (B, NH, T) float, lse_i = log sum_{j < lim} exp(s_ij) (natural log; +inf for a row with no
//       visible key).
//   backward(dqkv, D, dout, qkv, out, lse, lengths, B, T, C, NH, causal)
//       needs the forward's out; D: (B, NH, T) float scratch,
//       D_i = dout_i . out_i per head (= sum_j P_ij dout_i.v_j).
// The backward recomputes P_ij = exp(s_ij - lse_i) tile by tile; dP_ij = dout_i.v_j,
// dS_ij = P_ij (dP_ij - D_i); dv_j += sum_i P_ij dout_i; dq_i += scale sum_j dS_ij k_j;
// dk_j += scale sum_i dS_ij q_i. Two kernels after the D kernel, no atomics (deterministic, like src/):
// one block per key tile owns dK/dV of its keys (streaming the query tiles), one block per query tile
// owns dQ (streaming the key tiles). That recomputes S and dP twice: 7 T x T x hd matmuls instead of
// the 5 of the atomic-dQ design.
//
// Versions (each validated against the CPU reference of src/attention.h, then timed):
//   1  the plain src kernels (warp per query row, att and dS materialized in global memory). fp32 only
//      (src's floatX).
//   2  fused, CUDA cores, fp32 math; fp32 or bf16 in/out. Block per (b, h, 64 rows); a row is owned by
//      G = hd/32 threads (1 for hd <= 32), q/o (or k/v, dk/dv) in registers; the other operand streams
//      through shared memory in tiles of 64 rows (fp32), read as broadcast float4s; online softmax in
//      steps of 8 keys (one rescale of o per step). Backward: D kernel, dK/dV kernel, dQ kernel.
//   3  fused, tensor cores: mma.sync m16n8k16 bf16 x bf16 -> fp32, 4 warps x 16 rows per block, tiles of
//      64 keys staged as bf16 in shared memory (padded rows: conflict-free ldmatrix), P and dS kept in
//      registers (the accumulator layout of S is the A-operand layout of P V). fp32 in/out (converted
//      to bf16 while staging) or bf16 in/out; accumulation, softmax and lse in fp32.
//   4  version 3's kernels with tf32 operands (mma.sync m16n8k8), fp32 in/out: the precision of src/'s
//      TF32 matmuls, for fp32 activations.
//
// ./build/dev_attention            every version: validation, then the benchmark table
// ./build/dev_attention N          version N only
// ./build/dev_attention [N] check  validation only (no timing)
#include "dev_common.h"
#include "../src/attention.h"

#include <type_traits>

// FLOP floors (H100 SXM; the H200 has the same SMs): FP32 FMA on the CUDA cores (132 SMs x 128 lanes x
// 2 flops x 1.98 GHz) and dense BF16 / TF32 on the tensor cores
#define ATT_FP32_FLOPS 67e12
#define ATT_BF16_TC_FLOPS 989e12
#define ATT_TF32_TC_FLOPS 494e12

// ---------------------------------------------------------------------------
// element access: 4 elements <-> float4 (16 bytes of fp32 / 8 bytes of bf16), 2 elements stored

template <typename F> __device__ __forceinline__ void att_st4(F* p, float4 v) {
    if constexpr (sizeof(F) == 4) {
        *reinterpret_cast<float4*>(p) = v;
    } else {
        struct alignas(8) P4 { F v[4]; };
        P4 x;
        x.v[0] = from_f32<F>(v.x); x.v[1] = from_f32<F>(v.y); x.v[2] = from_f32<F>(v.z); x.v[3] = from_f32<F>(v.w);
        *reinterpret_cast<P4*>(p) = x;
    }
}
__device__ __forceinline__ uint32_t att_pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (lo) is the low half: the lower index
    return *reinterpret_cast<uint32_t*>(&v);
}
// 8 elements as 8 bf16 (16 bytes)
template <typename F> __device__ __forceinline__ uint4 att_ld8_bf16(const F* p) {
    if constexpr (sizeof(F) == 2) {
        return *reinterpret_cast<const uint4*>(p);
    } else {
        float4 a = att_ld4(p), b = att_ld4(p + 4);
        return make_uint4(att_pack_bf16(a.x, a.y), att_pack_bf16(a.z, a.w), att_pack_bf16(b.x, b.y),
                          att_pack_bf16(b.z, b.w));
    }
}

// ---------------------------------------------------------------------------
// version 1: the plain kernels of src/attention.h (its fallback for head dims without fused kernels;
// P (B, NH, T, T) written to a cached scratch buffer, the backward recomputes P from lse and keeps P
// and dS there). Only fp32 (floatX). (Measured before the move, when att was a saved activation.)
// Prediction: far from both floors. Forward: a warp per query row; lane j computes q.k_j with scalar
// loads of a whole key row (the 32 lanes read 32 rows 3C*4 bytes apart: 32 sectors per load
// instruction), p goes to global memory and is read back for out. ~pairs*hd/32 load instructions
// of 32 sectors each: L1/L2-bound, 2-5 ms at T=1024 and ViT-B, plus writing att (403 / 119 MB). Backward
// (rows kernel + a thread per (b, j, c) column walking T rows of att and dS): 3-10x the forward.

template <typename F>
static void att_fwd_v1(F* out, float* lse, const F* qkv, const int* lengths, int B, int T, int C, int NH, bool causal) {
    if constexpr (std::is_same<F, floatX>::value)
        attention_forward_plain_cuda(out, lse, qkv, lengths, B, T, C, NH, causal);
    else FATAL("attention v1 (src/attention.h) is fp32 only");
}
template <typename F>
static void att_bwd_v1(F* dqkv, float* Dbuf, const F* dout, const F* qkv, const F* out, const float* lse,
                       const int* lengths, int B, int T, int C, int NH, bool causal) {
    if constexpr (std::is_same<F, floatX>::value)
        attention_backward_plain_cuda(dqkv, Dbuf, dout, qkv, out, lse, lengths, B, T, C, NH, causal);
    else FATAL("attention v1 (src/attention.h) is fp32 only");
}

// ---------------------------------------------------------------------------
// version 2: fused on the CUDA cores (fp32 math).
//
// Forward: block per (b, h, 64 queries), G = hd/32 threads per query (1 for hd <= 32), each owning
// DPT = hd/G dims of q and o in registers; thread g of a row owns the float4 chunks g, g + G, g + 2G, ...
// (neighbouring threads read neighbouring chunks: no bank conflict). K and V stream through shared
// memory in tiles of 64 keys (fp32, converted while staging); every thread of the block reads the same
// key row (a broadcast float4: one shared load per 4 FMAs). Online softmax in steps of 8 keys: 8 scores,
// one max, one rescale of o and l, 8 exp2 (scores in log2 units: q is pre-scaled by log2(e)/sqrt(hd)).
// Prediction: compute-bound on the FP32 pipe at ~1.25 issued instructions per FMA, occupancy ~8-12
// warps/SM (130-170 registers): 30-45% of the 67 TFLOP/s fp32 peak on the large shapes (~3x the plain
// kernel at ViT-B, more at T=1024 where the plain one writes/reads a 400 MB att); the VLM shapes
// (T = 65/89) are launch/latency-bound (~10 us) either way.
// Backward: D kernel; dK/dV: block per 64 keys, k, v, dk, dv of its key in registers, the query tiles
// (q, dout, lse, D, lim) stream through shared memory (causal: only queries >= the tile's first key);
// dQ: block per 64 queries, q, dout, dq in registers, the key tiles (k, v) stream. Prediction: 2.5-3.5x
// the forward's time (7 matmul-equivalents against 2, at lower occupancy: 4 register vectors per thread).

#define ATT2_ROWS 64  // rows owned per block (queries, or keys in dK/dV)
#define ATT2_TILE 64  // rows of the streamed operand per shared-memory tile
#define ATT2_STEP 8   // streamed rows per inner step

template <int HD> struct Att2 {
    static constexpr int DPT = HD < 32 ? HD : 32;  // dims per thread
    static constexpr int G = HD / DPT;             // threads per row
    static constexpr int NV = DPT / 4;             // float4 chunks per thread: chunk c*G + g
    static constexpr int THREADS = ATT2_ROWS * G;
};

// rows [0, nvalid) of a matrix with row stride `stride` (HD columns) -> dst (ATT2_TILE, HD) fp32;
// rows from nvalid on are zeroed (their scores are masked; zeros keep NaN out of 0 * x)
template <typename F, int HD>
__device__ __forceinline__ void att2_stage(float* dst, const F* src, size_t stride, int nvalid) {
    for (int idx = threadIdx.x; idx < ATT2_TILE * (HD / 4); idx += blockDim.x) {
        int r = idx / (HD / 4), c = idx % (HD / 4);
        float4 v = r < nvalid ? att_ld4(src + (size_t)r * stride + 4 * c) : make_float4(0.f, 0.f, 0.f, 0.f);
        *reinterpret_cast<float4*>(dst + r * HD + 4 * c) = v;
    }
}
// this thread's chunks of a row in global memory (zeros when !valid), times mul
template <typename F, int HD>
__device__ __forceinline__ void att2_load_row(float (&x)[Att2<HD>::NV][4], const F* row, int g, bool valid, float mul) {
#pragma unroll
    for (int c = 0; c < Att2<HD>::NV; c++) {
        float4 v = valid ? att_ld4(row + 4 * (c * Att2<HD>::G + g)) : make_float4(0.f, 0.f, 0.f, 0.f);
        x[c][0] = v.x * mul; x[c][1] = v.y * mul; x[c][2] = v.z * mul; x[c][3] = v.w * mul;
    }
}
// row += x * mul (this thread's chunks), read-modify-write in global memory
template <typename F, int HD>
__device__ __forceinline__ void att2_add_row(F* row, const float (&x)[Att2<HD>::NV][4], int g, float mul) {
#pragma unroll
    for (int c = 0; c < Att2<HD>::NV; c++) {
        F* p = row + 4 * (c * Att2<HD>::G + g);
        float4 v = att_ld4(p);
        att_st4(p, make_float4(v.x + mul * x[c][0], v.y + mul * x[c][1], v.z + mul * x[c][2], v.w + mul * x[c][3]));
    }
}
// x . srow over the whole row (partial over this thread's chunks, summed over the G threads of the row)
template <int HD>
__device__ __forceinline__ float att2_dot(const float (&x)[Att2<HD>::NV][4], const float* srow, int g) {
    float s = 0.0f;
#pragma unroll
    for (int c = 0; c < Att2<HD>::NV; c++) {
        float4 k = *reinterpret_cast<const float4*>(srow + 4 * (c * Att2<HD>::G + g));
        s = fmaf(x[c][0], k.x, s); s = fmaf(x[c][1], k.y, s); s = fmaf(x[c][2], k.z, s); s = fmaf(x[c][3], k.w, s);
    }
#pragma unroll
    for (int o = 1; o < Att2<HD>::G; o <<= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    return s;
}
// acc += a * srow (this thread's chunks)
template <int HD>
__device__ __forceinline__ void att2_axpy(float (&acc)[Att2<HD>::NV][4], float a, const float* srow, int g) {
#pragma unroll
    for (int c = 0; c < Att2<HD>::NV; c++) {
        float4 v = *reinterpret_cast<const float4*>(srow + 4 * (c * Att2<HD>::G + g));
        acc[c][0] = fmaf(a, v.x, acc[c][0]); acc[c][1] = fmaf(a, v.y, acc[c][1]);
        acc[c][2] = fmaf(a, v.z, acc[c][2]); acc[c][3] = fmaf(a, v.w, acc[c][3]);
    }
}
template <int HD> __device__ __forceinline__ void att2_zero(float (&acc)[Att2<HD>::NV][4]) {
#pragma unroll
    for (int c = 0; c < Att2<HD>::NV; c++) acc[c][0] = acc[c][1] = acc[c][2] = acc[c][3] = 0.0f;
}
template <int HD> __device__ __forceinline__ void att2_scale(float (&acc)[Att2<HD>::NV][4], float a) {
#pragma unroll
    for (int c = 0; c < Att2<HD>::NV; c++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[c][e] *= a;
}

template <typename F, int HD>
__global__ void __launch_bounds__(Att2<HD>::THREADS)
    att2_fwd_kernel(F* out, float* lse, const F* qkv, const int* lengths, int T, int C, int NH, bool causal,
                    float scale_log2) {
    using K = Att2<HD>;
    __shared__ __align__(16) float Ks[ATT2_TILE * HD], Vs[ATT2_TILE * HD];
    const int b = blockIdx.x / NH, h = blockIdx.x % NH;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * ATT2_ROWS;  // the longest causal rows start first
    const int g = threadIdx.x % K::G, i = q0 + threadIdx.x / K::G;
    const size_t C3 = (size_t)3 * C;
    const F* base = qkv + (size_t)b * T * C3 + (size_t)h * HD;
    const int lim = i < T ? attention_limit(lengths, b, i, T, causal) : 0;
    // keys any row of the block sees (lim grows with i)
    const int kend = attention_limit(lengths, b, min(q0 + ATT2_ROWS, T) - 1, T, causal);
    float q[K::NV][4], o[K::NV][4];
    att2_load_row<F, HD>(q, base + (size_t)i * C3, g, i < T, scale_log2);
    att2_zero<HD>(o);
    float m = -INFINITY, l = 0.0f;
    for (int k0 = 0; k0 < kend; k0 += ATT2_TILE) {
        const int nk = min(ATT2_TILE, kend - k0);
        __syncthreads();  // the previous tile is consumed
        att2_stage<F, HD>(Ks, base + C + (size_t)k0 * C3, C3, nk);
        att2_stage<F, HD>(Vs, base + 2 * C + (size_t)k0 * C3, C3, nk);
        __syncthreads();
#pragma unroll 1
        for (int j0 = 0; j0 < nk; j0 += ATT2_STEP) {
            float s[ATT2_STEP], mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < ATT2_STEP; j++) {
                s[j] = att2_dot<HD>(q, Ks + (j0 + j) * HD, g);  // unconditionally: it shuffles (G > 1)
                s[j] = k0 + j0 + j < lim ? s[j] : -INFINITY;
                mx = fmaxf(mx, s[j]);
            }
            const float mn = fmaxf(m, mx), mu = mn == -INFINITY ? 0.0f : mn, corr = exp2f(m - mu);
            l *= corr;
            att2_scale<HD>(o, corr);
#pragma unroll
            for (int j = 0; j < ATT2_STEP; j++) {
                float p = exp2f(s[j] - mu);
                l += p;
                att2_axpy<HD>(o, p, Vs + (j0 + j) * HD, g);
            }
            m = mn;
        }
    }
    if (i < T) {
        F* orow = out + ((size_t)b * T + i) * C + (size_t)h * HD;
#pragma unroll
        for (int c = 0; c < K::NV; c++) {
            float inv = l > 0.0f ? 1.0f / l : 0.0f;
            att_st4(orow + 4 * (c * K::G + g), make_float4(o[c][0] * inv, o[c][1] * inv, o[c][2] * inv, o[c][3] * inv));
        }
        if (g == 0) lse[((size_t)b * NH + h) * T + i] = l > 0.0f ? (m + log2f(l)) * ATT_LN2 : INFINITY;
    }
}

template <typename F, int HD>
__global__ void __launch_bounds__(Att2<HD>::THREADS)
    att2_bwd_dq_kernel(const AttBwdArgs<F> a) {
    using K = Att2<HD>;
    __shared__ __align__(16) float Ks[ATT2_TILE * HD], Vs[ATT2_TILE * HD];
    const AttHead<F> H(a, HD);
    const int T = a.T, C = a.C, b = H.b;
    const size_t C3 = H.C3;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * ATT2_ROWS;
    const int g = threadIdx.x % K::G, i = q0 + threadIdx.x / K::G;
    const int lim = i < T ? attention_limit(a.lengths, b, i, T, a.causal) : 0;
    const int kend = attention_limit(a.lengths, b, min(q0 + ATT2_ROWS, T) - 1, T, a.causal);
    const float lse2 = i < T ? H.lse[i] * ATT_LOG2E : INFINITY, Di = i < T ? H.D[i] : 0.0f;
    float q[K::NV][4], go[K::NV][4], dq[K::NV][4];
    att2_load_row<F, HD>(q, H.base + (size_t)i * C3, g, i < T, a.scale_log2);
    att2_load_row<F, HD>(go, H.gbase + (size_t)i * C, g, i < T, 1.0f);
    att2_zero<HD>(dq);
    for (int k0 = 0; k0 < kend; k0 += ATT2_TILE) {
        const int nk = min(ATT2_TILE, kend - k0);
        __syncthreads();
        att2_stage<F, HD>(Ks, H.base + C + (size_t)k0 * C3, C3, nk);
        att2_stage<F, HD>(Vs, H.base + 2 * C + (size_t)k0 * C3, C3, nk);
        __syncthreads();
#pragma unroll 1
        for (int j0 = 0; j0 < nk; j0 += ATT2_STEP) {
            float ds[ATT2_STEP];
#pragma unroll
            for (int j = 0; j < ATT2_STEP; j++) {
                float s = att2_dot<HD>(q, Ks + (j0 + j) * HD, g), dp = att2_dot<HD>(go, Vs + (j0 + j) * HD, g);
                float p = k0 + j0 + j < lim ? exp2f(s - lse2) : 0.0f;
                ds[j] = p * (dp - Di);
            }
            __syncwarp();  // re-read the key rows instead of keeping 8 of them live from the dot products
#pragma unroll
            for (int j = 0; j < ATT2_STEP; j++) att2_axpy<HD>(dq, ds[j], Ks + (j0 + j) * HD, g);
        }
    }
    if (i < T) att2_add_row<F, HD>(H.dbase + (size_t)i * C3, dq, g, a.scale);
}

template <typename F, int HD>
__global__ void __launch_bounds__(Att2<HD>::THREADS)
    att2_bwd_dkv_kernel(const AttBwdArgs<F> a) {
    using K = Att2<HD>;
    __shared__ __align__(16) float Qs[ATT2_TILE * HD], Os[ATT2_TILE * HD];
    __shared__ float lse_s[ATT2_TILE], D_s[ATT2_TILE];
    __shared__ int lim_s[ATT2_TILE];
    const AttHead<F> H(a, HD);
    const int T = a.T, C = a.C, b = H.b;
    const size_t C3 = H.C3;
    const int k0 = blockIdx.y * ATT2_ROWS;
    const int klen = attention_limit(a.lengths, b, T - 1, T, false);  // keys from klen on are padding
    if (k0 >= klen) return;  // the whole block: no key with a gradient
    const int g = threadIdx.x % K::G, j = k0 + threadIdx.x / K::G;
    float kr[K::NV][4], vr[K::NV][4], dk[K::NV][4], dv[K::NV][4];
    att2_load_row<F, HD>(kr, H.base + C + (size_t)j * C3, g, j < klen, 1.0f);
    att2_load_row<F, HD>(vr, H.base + 2 * C + (size_t)j * C3, g, j < klen, 1.0f);
    att2_zero<HD>(dk);
    att2_zero<HD>(dv);
    for (int i0 = a.causal ? k0 : 0; i0 < T; i0 += ATT2_TILE) {  // causal: queries before k0 see none of these keys
        const int ni = min(ATT2_TILE, T - i0);
        __syncthreads();
        att2_stage<F, HD>(Qs, H.base + (size_t)i0 * C3, C3, ni);
        att2_stage<F, HD>(Os, H.gbase + (size_t)i0 * C, C, ni);
        for (int r = threadIdx.x; r < ATT2_TILE; r += blockDim.x) {
            bool ok = r < ni;
            lse_s[r] = ok ? H.lse[i0 + r] * ATT_LOG2E : INFINITY;
            D_s[r] = ok ? H.D[i0 + r] : 0.0f;
            lim_s[r] = ok ? attention_limit(a.lengths, b, i0 + r, T, a.causal) : 0;
        }
        __syncthreads();
#pragma unroll 1
        for (int r0 = 0; r0 < ni; r0 += ATT2_STEP) {
            float p[ATT2_STEP], ds[ATT2_STEP];
#pragma unroll
            for (int r = 0; r < ATT2_STEP; r++) {
                float s = att2_dot<HD>(kr, Qs + (r0 + r) * HD, g), dp = att2_dot<HD>(vr, Os + (r0 + r) * HD, g);
                p[r] = j < lim_s[r0 + r] ? exp2f(s * a.scale_log2 - lse_s[r0 + r]) : 0.0f;
                ds[r] = p[r] * (dp - D_s[r0 + r]);
            }
            __syncwarp();  // re-read the rows below instead of keeping 2 x 8 rows live from the dot products
#pragma unroll
            for (int r = 0; r < ATT2_STEP; r++) {
                att2_axpy<HD>(dv, p[r], Os + (r0 + r) * HD, g);
                att2_axpy<HD>(dk, ds[r], Qs + (r0 + r) * HD, g);
            }
        }
    }
    if (j < klen) {
        F* drow = H.dbase + (size_t)j * C3;
        att2_add_row<F, HD>(drow + C, dk, g, a.scale);
        att2_add_row<F, HD>(drow + 2 * C, dv, g, 1.0f);
    }
}

template <typename F>
static void att_fwd_v2(F* out, float* lse, const F* qkv, const int* lengths, int B, int T, int C, int NH, bool causal) {
    if (B == 0 || T == 0) return;
    const float scale_log2 = ATT_LOG2E / sqrtf((float)(C / NH));
    dim3 grid(B * NH, ceil_div(T, ATT2_ROWS));
    ATT_HD_DISPATCH(C / NH, att2_fwd_kernel<F, HD><<<grid, Att2<HD>::THREADS>>>(out, lse, qkv, lengths, T, C, NH, causal, scale_log2));
    cudaCheckLaunch();
}
template <typename F>
static void att_bwd_v2(F* dqkv, float* Dbuf, const F* dout, const F* qkv, const F* out, const float* lse,
                       const int* lengths, int B, int T, int C, int NH, bool causal) {
    if (B == 0 || T == 0) return;
    const float scale = 1.0f / sqrtf((float)(C / NH)), scale_log2 = scale * ATT_LOG2E;
    att_bwd_d(Dbuf, dout, out, B, T, C, NH);
    const AttBwdArgs<F> args{dqkv, dout, qkv, lse, Dbuf, lengths, T, C, NH, causal, scale, scale_log2};
    dim3 grid(B * NH, ceil_div(T, ATT2_ROWS));
    ATT_HD_DISPATCH(C / NH, att2_bwd_dkv_kernel<F, HD><<<grid, Att2<HD>::THREADS>>>(args));
    cudaCheckLaunch();
    ATT_HD_DISPATCH(C / NH, att2_bwd_dq_kernel<F, HD><<<grid, Att2<HD>::THREADS>>>(args));
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// tensor-core primitives (inline PTX, sm_80+; fragment layouts of the PTX ISA, "Matrix Fragments for
// mma.m16n8k16 with floating point type" and "ldmatrix"):
//   lane = 4*gid + tid4. A (16x16, row-major): a[0] = (gid, 2tid4..+1), a[1] = (gid+8, same cols),
//   a[2] = (gid, 8+2tid4..), a[3] = (gid+8, 8+2tid4..). B (16x8, k x n): b[0] = (k 2tid4..+1, n gid),
//   b[1] = (k 8+2tid4..). C/D (16x8 fp32): c[0..1] = (gid, 2tid4..+1), c[2..3] = (gid+8, ...).
//   Each .b32 holds two bf16, the lower index in the low half. ATT_MMA_ASM and the tf32 mma are in
//   src/attention.h.

// d += a * b (bf16 inputs, fp32 accumulate)
__device__ __forceinline__ void att_mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    ATT_MMA_ASM("m16n8k16.row.col.f32.bf16.bf16.f32");
}
// four 8x8 bf16 matrices from shared memory; lanes 8m..8m+7 give the row addresses of matrix m (16-byte
// aligned). Plain: r[m] of lane l = row l/4, cols 2(l%4)..+1 of matrix m; trans: rows 2(l%4)..+1, col l/4.
#define ATT_LDSM_ASM(VARIANT)                                                            \
    asm volatile("ldmatrix.sync.aligned.m8n8.x4" VARIANT ".shared.b16 {%0,%1,%2,%3}, [%4];\n" \
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])                           \
                 : "r"((uint32_t)__cvta_generic_to_shared(p)))
__device__ __forceinline__ void att_ldsm_x4(uint32_t (&r)[4], const bf16* p) { ATT_LDSM_ASM(""); }
__device__ __forceinline__ void att_ldsm_x4_t(uint32_t (&r)[4], const bf16* p) { ATT_LDSM_ASM(".trans"); }

// ---------------------------------------------------------------------------
// version 3: fused on the tensor cores (mma.sync m16n8k16, bf16 operands, fp32 accumulation).
//
// Forward: block = 4 warps = 64 queries (16 per warp), grid (B*NH, query tiles; the longest causal
// rows first). Q, then each tile of 64 keys and values, are staged in shared memory as bf16 (rows padded
// to hd+8 elements, so the 8 row addresses of every ldmatrix phase fall in different banks). A warp:
//   S (16 x 64) = Q K^T: 8 n-tiles x hd/16 k-steps, Q fragments held in registers for the whole kernel;
//   scale + mask (-inf) in fp32, row max over the quad (2 shuffles), rescale o and l, P = exp2(S - m);
//   O (16 x hd) += P V: P packed to bf16 straight from the S accumulators (C layout == A layout),
//   V fragments by ldmatrix.trans from the row-major tile.
// Per key tile and warp 2 x 64 x hd x 16 MACs on the tensor pipe against ~64 exp2 + ~200 other
// instructions per thread. Prediction: 120-250 TFLOP/s on ViT-B / T=1024 (mma.sync without a cp.async
// pipeline, 8-16 warps/SM), i.e. 5-10x version 2; with fp32 in/out the ViT-B forward (7.6 GFLOP, 155 MB)
// is then close to its memory floor (0.052 ms), bf16 in/out halves that floor.
// Backward: D kernel; dK/dV: block per 64 keys (16 per warp; K, V fragments in registers), query tiles
// of 64 staged (q, dout as bf16; lse, D, lim), processed in halves of 32 queries: S^T = K Q^T and
// dP^T = V dO^T (accumulators: rows = keys), P^T and dS^T packed to bf16 A operands in registers,
// dV += P^T dO, dK += dS^T Q (dO, Q by ldmatrix.trans). dQ: block per 64 queries (Q, dO fragments in
// registers), key tiles in halves of 32: S, dP, dS, dQ += dS K (K by ldmatrix.trans).
// Prediction: backward 2.5-3.5x the forward's time (7 matmuls against 2; the dK/dV kernel holds
// ~170 registers -> 2-3 blocks/SM).
//
// version 4: the kernels of version 3 with TF32 operands (mma.sync m16n8k8 .tf32, fp32 accumulation),
// fp32 in/out only: the precision src/ uses for its matmuls with fp32 activations (--tf32 1). Tiles are
// staged as fp32 rounded to tf32 (cvt.rna), rows padded to hd+4 floats; fragments by 32-bit shared loads
// (ldmatrix moves 16-bit elements), conflict-free with that padding. P and dS go from the accumulators
// to A operands in registers with a permutation of the k index (k position t <-> accumulator column 2t,
// t+4 <-> 2t+1) that the B operand (V, K, dO, Q rows 2t, 2t+1) follows. Prediction: rounding 2^-11
// instead of 2^-8 (errors ~8x below version 3 fp32); half the tensor rate of bf16 and ~2x the shared
// loads per MAC: 1.3-2x version 3's time where it is compute-bound (T=1024), close to it where fp32 I/O
// is memory-bound (ViT-B forward).
//
// The operand handling is a policy (AttMmaBf16 / AttMmaTf32): shared-memory element, k per mma, row
// padding, staging, A / B fragment loads, accumulator -> A operand, mma. The kernels are written once.

// rows [0, nvalid) of src (row stride `stride`, HD columns) -> dst (ATT_TC_TILE rows of HD + 8 bf16),
// rows from nvalid on zeroed. 8 elements (one 16-byte smem store) per step.
template <typename F, int HD>
__device__ __forceinline__ void att_tc_stage(bf16* dst, const F* src, size_t stride, int nvalid) {
    constexpr int LD = HD + 8, CPR = HD / 8;
    for (int idx = threadIdx.x; idx < ATT_TC_TILE * CPR; idx += blockDim.x) {
        int r = idx / CPR, c = idx % CPR;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (r < nvalid) v = att_ld8_bf16(src + (size_t)r * stride + 8 * c);
        *reinterpret_cast<uint4*>(dst + r * LD + 8 * c) = v;
    }
}
// A operand: rows row0..row0+15, cols col0..col0+15 of a row-major bf16 tile
__device__ __forceinline__ void att_tc_lda(uint32_t (&a)[4], const bf16* tile, int LD, int row0, int col0) {
    int lane = threadIdx.x & 31, m = lane >> 3;
    att_ldsm_x4(a, tile + (row0 + (m & 1) * 8 + (lane & 7)) * LD + col0 + (m >> 1) * 8);
}
// B operands of two n-tiles when the tile holds B transposed (B[k][n] = tile[n][k], e.g. K in S = Q K^T):
// n = rows row0..row0+7 -> b[0..1], row0+8..row0+15 -> b[2..3]; k = cols col0..col0+15
__device__ __forceinline__ void att_tc_ldb_nk(uint32_t (&b)[4], const bf16* tile, int LD, int row0, int col0) {
    int lane = threadIdx.x & 31, m = lane >> 3;
    att_ldsm_x4(b, tile + (row0 + (m >> 1) * 8 + (lane & 7)) * LD + col0 + (m & 1) * 8);
}
// B operands of two n-tiles when the tile holds B itself (B[k][n] = tile[k][n], e.g. V in O = P V):
// k = rows row0..row0+15; n = cols col0..col0+7 -> b[0..1], col0+8..col0+15 -> b[2..3]
__device__ __forceinline__ void att_tc_ldb_kn(uint32_t (&b)[4], const bf16* tile, int LD, int row0, int col0) {
    int lane = threadIdx.x & 31, m = lane >> 3;
    att_ldsm_x4_t(b, tile + (row0 + (m & 1) * 8 + (lane & 7)) * LD + col0 + (m >> 1) * 8);
}
// A operand (k = the 16 columns of two adjacent accumulator tiles c0 | c1), rounded to bf16
__device__ __forceinline__ void att_tc_acc_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
    a[0] = att_pack_bf16(c0[0], c0[1]);
    a[1] = att_pack_bf16(c0[2], c0[3]);
    a[2] = att_pack_bf16(c1[0], c1[1]);
    a[3] = att_pack_bf16(c1[2], c1[3]);
}
// bf16 operands: mma m16n8k16, fragments by ldmatrix
struct AttMmaBf16 {
    typedef bf16 S;                   // shared-memory element
    static constexpr int KSTEP = 16;  // k per mma
    static constexpr int PAD = 8;     // row padding (elements): row starts 16 B apart modulo 128 B
    template <typename F, int HD>
    static __device__ __forceinline__ void stage(S* dst, const F* src, size_t stride, int nvalid) {
        att_tc_stage<F, HD>(dst, src, stride, nvalid);
    }
    static __device__ __forceinline__ void lda(uint32_t (&a)[4], const S* tile, int LD, int row0, int col0) {
        att_tc_lda(a, tile, LD, row0, col0);
    }
    static __device__ __forceinline__ void ldb_nk(uint32_t (&b)[4], const S* tile, int LD, int row0, int col0) {
        att_tc_ldb_nk(b, tile, LD, row0, col0);
    }
    static __device__ __forceinline__ void ldb_kn(uint32_t (&b)[4], const S* tile, int LD, int row0, int col0) {
        att_tc_ldb_kn(b, tile, LD, row0, col0);
    }
    // A operand for k-step j: accumulator tiles 2j, 2j+1
    template <int N> static __device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&c)[N][4], int j) {
        att_tc_acc_to_a(a, c[2 * j], c[2 * j + 1]);
    }
    static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        att_mma_bf16(d, a, b0, b1);
    }
};

// ---------------------------------------------------------------------------
// dispatch. aux: lse (B, NH, T); Dbuf: (B, NH, T).

#define ATT_VERSIONS 4

template <typename F>
static void att_forward(int v, F* out, float* aux, const F* qkv, const int* lengths, int B, int T, int C, int NH,
                        bool causal) {
    if (v == 1) att_fwd_v1(out, aux, qkv, lengths, B, T, C, NH, causal);
    else if (v == 2) att_fwd_v2(out, aux, qkv, lengths, B, T, C, NH, causal);
    else if (v == 3) att_fwd_tc<AttMmaBf16>(out, aux, qkv, lengths, B, T, C, NH, causal);
    else if constexpr (std::is_same<F, float>::value) att_fwd_tc<AttMmaTf32>(out, aux, qkv, lengths, B, T, C, NH, causal);
    else FATAL("attention v4 (tf32) is fp32 only");
}
template <typename F>
static void att_backward(int v, F* dqkv, float* Dbuf, const F* dout, const F* qkv, const F* out, const float* aux,
                         const int* lengths, int B, int T, int C, int NH, bool causal) {
    if (v == 1) att_bwd_v1(dqkv, Dbuf, dout, qkv, out, aux, lengths, B, T, C, NH, causal);
    else if (v == 2) att_bwd_v2(dqkv, Dbuf, dout, qkv, out, aux, lengths, B, T, C, NH, causal);
    else if (v == 3) att_bwd_tc<AttMmaBf16>(dqkv, Dbuf, dout, qkv, out, aux, lengths, B, T, C, NH, causal);
    else if constexpr (std::is_same<F, float>::value) att_bwd_tc<AttMmaTf32>(dqkv, Dbuf, dout, qkv, out, aux, lengths, B, T, C, NH, causal);
    else FATAL("attention v4 (tf32) is fp32 only");
}
static size_t att_aux_floats(int, int B, int T, int NH) { return (size_t)B * NH * T; }
static const char* att_fwd_name(int v) {
    const char* n[] = {"", "1 plain (att TxT)", "2 fused simt fp32 math", "3 fused mma bf16 (fp32 acc)",
                       "4 fused mma tf32 (fp32 acc)"};
    return n[v];
}
static const char* att_bwd_name(int v) {
    const char* n[] = {"", "1 plain (att, dS TxT)", "2 fused simt D+dKV+dQ", "3 fused mma bf16 D+dKV+dQ",
                       "4 fused mma tf32 D+dKV+dQ"};
    return n[v];
}
// fp32 math (v1, v2) is held to 1e-5: the CPU reference sums in fp32 too, in another order (the error
// grows like sqrt(T) * 6e-8 relative); bf16 in/out or bf16 operands (v3) round every input, P and dS to
// 8 significant bits (2^-8 relative; measured up to ~8e-3 with scores of std 4), so 1e-2; tf32 operands
// (v4) round to 11 bits (2^-11), so 5e-3
static double att_tol(int v, bool bf16_io) { return bf16_io || v == 3 ? 1e-2 : v == 4 ? 5e-3 : 1e-5; }
static double att_peak(int v) { return v == 3 ? ATT_BF16_TC_FLOPS : v == 4 ? ATT_TF32_TC_FLOPS : ATT_FP32_FLOPS; }
// versions that run with bf16 in/out (v1 is src's fp32 floatX; v4 exists for fp32 activations)
static bool att_has_bf16(int v) { return v == 2 || v == 3; }

// ---------------------------------------------------------------------------
// validation against attention_forward_cpu / attention_backward_cpu

struct AttCase {
    int B, T, NH, hd;
    bool causal, lens;
    float amp;  // std of q and k (scores have std amp^2)
};

// key lengths cycling through: random in [1, T], T, 0 (a sequence of padding only), random
static std::vector<int> att_make_lengths(int B, int T, Rng* r) {
    std::vector<int> len(B);
    for (int b = 0; b < B; b++) {
        int k = b % 4;
        len[b] = k == 1 ? T : k == 2 ? 0 : 1 + (int)(rng_uniform(r) * T) % (T > 0 ? T : 1);
    }
    return len;
}

// lse reference in double: log sum_{j < lim} exp(scale q_i.k_j), +inf when lim = 0
static std::vector<float> att_lse_ref(const std::vector<float>& qkv, const int* len, int B, int T, int C, int NH,
                                      bool causal) {
    int hd = C / NH;
    double scale = 1.0 / std::sqrt((double)hd);
    std::vector<float> lse((size_t)B * NH * T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                int lim = attention_limit(len, b, i, T, causal);
                const float* q = &qkv[((size_t)b * T + i) * 3 * C + (size_t)h * hd];
                std::vector<double> s(lim);
                double mx = -INFINITY, sum = 0.0;
                for (int j = 0; j < lim; j++) {
                    const float* k = &qkv[((size_t)b * T + j) * 3 * C + C + (size_t)h * hd];
                    double d = 0.0;
                    for (int c = 0; c < hd; c++) d += (double)q[c] * k[c];
                    s[j] = d * scale;
                    mx = std::max(mx, s[j]);
                }
                for (int j = 0; j < lim; j++) sum += std::exp(s[j] - mx);
                lse[((size_t)b * NH + h) * T + i] = lim > 0 ? (float)(mx + std::log(sum)) : INFINITY;
            }
    return lse;
}

// relative error of got vs ref over the elements with a finite ref; an infinite ref must be matched
// exactly (the +inf lse of a row with no visible key)
static bool att_check_lse(const char* what, const std::vector<float>& got, const std::vector<float>& ref, double tol,
                          double* worst) {
    std::vector<float> g2, r2;
    bool inf_ok = true;
    for (size_t i = 0; i < ref.size(); i++) {
        if (std::isinf(ref[i])) { inf_ok &= got[i] == ref[i]; continue; }
        g2.push_back(got[i]);
        r2.push_back(ref[i]);
    }
    if (!inf_ok) {
        g_dev_checks++;
        g_dev_failures++;
        fprintf(stderr, "  FAIL %s: a row with no visible key does not have lse = +inf\n", what);
        return false;
    }
    return dev_check_elem_host(what, g2, r2, tol, worst);
}

static double att_norm_diff(const std::vector<float>& a, const std::vector<float>& b) {
    double s = 0.0;
    for (size_t i = 0; i < a.size(); i++) s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return std::sqrt(s);
}
static double att_norm(const std::vector<float>& a) { return att_norm_diff(a, std::vector<float>(a.size(), 0.0f)); }

// columns [off, off + C) of every row of a (rows, 3C) matrix
static std::vector<float> att_part(const std::vector<float>& x, int rows, int C, int part) {
    std::vector<float> r((size_t)rows * C);
    for (int i = 0; i < rows; i++)
        std::copy(x.begin() + (size_t)i * 3 * C + (size_t)part * C, x.begin() + (size_t)i * 3 * C + (size_t)(part + 1) * C,
                  r.begin() + (size_t)i * C);
    return r;
}

template <typename F>
static bool att_validate(int v, const AttCase& tc, uint64_t seed, double* wf, double* wb) {
    const int B = tc.B, T = tc.T, NH = tc.NH, C = tc.NH * tc.hd;
    const size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, nlse = (size_t)B * NH * T;
    Rng r;
    rng_seed(&r, seed);
    std::vector<float> qkv(nqkv), dout(nout), dqkv0(nqkv);
    for (size_t i = 0; i < nqkv; i++) {
        bool qk = (i % (3 * C)) < (size_t)2 * C;
        qkv[i] = (qk ? tc.amp : 1.0f) * rng_normal(&r);
    }
    dev_fill_normal(dout, 0.0f, 1.0f, &r);
    // the backward accumulates: a small nonzero start; the check compares got - start with the gradient
    dev_fill_normal(dqkv0, 0.0f, 0.05f, &r);
    dev_round_to<F>(qkv);
    dev_round_to<F>(dout);
    dev_round_to<F>(dqkv0);
    std::vector<int> len = att_make_lengths(B, T, &r);
    const int* hlen = tc.lens ? len.data() : nullptr;

    std::vector<float> out_ref(nout), lse_cpu(nlse), D_cpu(nlse), grad_ref(nqkv, 0.0f);
    attention_forward_cpu(out_ref.data(), lse_cpu.data(), qkv.data(), hlen, B, T, C, NH, tc.causal);
    attention_backward_cpu(grad_ref.data(), D_cpu.data(), dout.data(), qkv.data(), out_ref.data(), lse_cpu.data(), hlen,
                           B, T, C, NH, tc.causal);
    std::vector<float> lse_ref = att_lse_ref(qkv, hlen, B, T, C, NH, tc.causal);

    F* d_qkv = dev_upload<F>(qkv);
    F* d_dout = dev_upload<F>(dout);
    F* d_dqkv = dev_upload<F>(dqkv0);
    F* d_out = dev_alloc<F>(nout);
    size_t naux = att_aux_floats(v, B, T, NH);
    float* d_aux = dev_alloc<float>(naux);
    float* d_D = dev_alloc<float>(nlse);
    int* d_len = nullptr;
    if (tc.lens) {
        d_len = dev_alloc<int>(B);
        cudaCheck(cudaMemcpy(d_len, len.data(), B * sizeof(int), cudaMemcpyHostToDevice));
    }
    dev_poison(d_out, nout * sizeof(F));
    dev_poison(d_aux, naux * sizeof(float));
    dev_poison(d_D, nlse * sizeof(float));

    att_forward<F>(v, d_out, d_aux, d_qkv, d_len, B, T, C, NH, tc.causal);
    // the backward consumes the GPU forward's out and lse (att), as in training
    att_backward<F>(v, d_dqkv, d_D, d_dout, d_qkv, d_out, d_aux, d_len, B, T, C, NH, tc.causal);
    cudaCheck(cudaDeviceSynchronize());

    const bool bf = sizeof(F) == 2;
    const double tol = att_tol(v, bf);
    char what[160], shape[96];
    snprintf(shape, sizeof shape, "B=%d T=%d NH=%d hd=%d %s%s amp=%g", B, T, NH, tc.hd, tc.causal ? "causal" : "bidir",
             tc.lens ? " lengths" : "", tc.amp);
    snprintf(what, sizeof what, "attention v%d %s fwd out %s", v, DType<F>::name(), shape);
    bool ok = dev_check(what, d_out, out_ref, tol, wf);
    snprintf(what, sizeof what, "attention v%d %s fwd lse %s", v, DType<F>::name(), shape);
    // lse is O(1..10): fp32 math gives ~1e-6 relative; bf16 / tf32 operands move scores by ~2^-8 / 2^-11 |s|
    ok &= att_check_lse(what, dev_download(d_aux, nlse), lse_ref, v == 3 ? 1e-2 : v == 4 ? 5e-3 : 1e-5, wf);
    std::vector<float> got = dev_download(d_dqkv, nqkv);
    for (size_t i = 0; i < nqkv; i++) got[i] -= dqkv0[i];
    const char* part_name[3] = {"dq", "dk", "dv"};
    const double norm_all = att_norm(grad_ref);
    for (int p = 0; p < 3; p++) {
        std::vector<float> gp = att_part(got, B * T, C, p), rp = att_part(grad_ref, B * T, C, p);
        // relative to the part's norm; a part that is zero up to rounding (T = 1: dS = P (dP - D) = 0)
        // is measured on the scale of the whole gradient instead
        double norm = att_norm(rp), err = dev_rel_err(gp, rp);
        bool finite = std::all_of(gp.begin(), gp.end(), [](float x) { return std::isfinite(x); });
        if (finite && norm < 1e-6 * norm_all) err = att_norm_diff(gp, rp) / norm_all;
        bool pok = err <= tol;
        g_dev_checks++;
        if (!(err <= *wb)) *wb = err;
        if (!pok) {
            g_dev_failures++;
            fprintf(stderr, "  FAIL attention v%d %s bwd %s %s: rel err %.3e > tol %.1e\n", v, DType<F>::name(),
                    part_name[p], shape, err, tol);
        }
        ok &= pok;
    }
    dev_free(d_qkv); dev_free(d_dout); dev_free(d_dqkv); dev_free(d_out); dev_free(d_aux); dev_free(d_D);
    if (d_len) dev_free(d_len);
    return ok;
}

// ---------------------------------------------------------------------------
// benchmark

struct AttBench {
    const char* name;
    int B, T, C, NH;
    bool causal, lens;
};
static const AttBench att_bench_shapes[] = {
    {"vlm vit B64 T65", 64, 65, 128, 4, false, false},
    {"vlm lm B64 T89 c+len", 64, 89, 128, 4, true, true},
    {"gpt B8 T1024 causal", 8, 1024, 768, 12, true, false},
    {"vit-b B64 T197", 64, 197, 768, 12, false, false},
};

// key lengths of the benchmark, uniform in [T/2, T] from their own stream (dev/attention_torch.py draws
// the same ones, so both tables count the same visible pairs)
static std::vector<int> att_bench_lengths(int B, int T) {
    Rng r;
    rng_seed(&r, 1234);
    std::vector<int> len(B);
    const int n = T - T / 2 + 1;
    for (int b = 0; b < B; b++) len[b] = T / 2 + (int)(rng_uniform(&r) * n) % n;
    return len;
}

// visible (query, key) pairs summed over b (times NH for the whole tensor)
static double att_pairs(const int* len, int B, int T, bool causal) {
    double n = 0.0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++) n += attention_limit(len, b, i, T, causal);
    return n;
}

// one table line: the GB/s column counts the floor bytes; "x floor" is time / max(bytes / DEV_MEM_BW,
// flops / peak) with the peak of the units the version uses; after the two floors, achieved TFLOP/s
static void att_print_row(const char* family, const char* version, const char* shape, const char* dtype, float ms,
                          double bytes, double flops, double peak, bool ok, double err) {
    double mem_ms = bytes / DEV_MEM_BW * 1e3, flop_ms = flops / peak * 1e3;
    double floor_ms = std::max(mem_ms, flop_ms);
    char fl[96];
    snprintf(fl, sizeof fl, "%6.2fx (%.4f / %.4f) %6.1f TF/s", ms / floor_ms, mem_ms, flop_ms, flops / (ms * 1e-3) / 1e12);
    printf("%-22s | %-28s | %-24s | %-5s | %9.4f | %7.1f | %-34s | %s (%.2e)\n", family, version, shape, dtype, ms,
           bytes / (ms * 1e-3) / 1e9, fl, ok ? "ok" : "FAIL", err);
    fflush(stdout);
}

template <typename F> static void att_bench(int v, const AttBench& s, bool ok, double wf, double wb) {
    const int B = s.B, T = s.T, C = s.C, NH = s.NH, hd = C / NH;
    const size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, nlse = (size_t)B * NH * T;
    Rng r;
    rng_seed(&r, 97);
    std::vector<float> hq(nqkv), hd_out(nout);
    dev_fill_normal(hq, 0.0f, 1.0f, &r);
    dev_fill_normal(hd_out, 0.0f, 1.0f, &r);
    std::vector<int> len = att_bench_lengths(B, T);
    F* qkv = dev_upload<F>(hq);
    F* dout = dev_upload<F>(hd_out);
    F* dqkv = dev_upload<F>(std::vector<float>(nqkv, 0.0f));
    F* out = dev_alloc<F>(nout);
    float* aux = dev_alloc<float>(att_aux_floats(v, B, T, NH));
    float* Dbuf = dev_alloc<float>(nlse);
    int* d_len = nullptr;
    if (s.lens) {
        d_len = dev_alloc<int>(B);
        cudaCheck(cudaMemcpy(d_len, len.data(), B * sizeof(int), cudaMemcpyHostToDevice));
    }
    const double pairs = att_pairs(s.lens ? len.data() : nullptr, B, T, s.causal) * NH;
    const double es = sizeof(F);
    const double peak = att_peak(v);
    char shape[64];
    snprintf(shape, sizeof shape, "%s", s.name);

    float ms = dev_bench_ms([&](int) { att_forward<F>(v, out, aux, qkv, d_len, B, T, C, NH, s.causal); });
    // floor: read qkv, write out and lse; 2 matmuls of 2 flops per MAC over the visible pairs
    att_print_row("attention fwd", att_fwd_name(v), shape, DType<F>::name(), ms,
                  es * ((double)nqkv + nout) + 4.0 * nlse, 4.0 * pairs * hd, peak, ok, wf);
    ms = dev_bench_ms([&](int) { att_backward<F>(v, dqkv, Dbuf, dout, qkv, out, aux, d_len, B, T, C, NH, s.causal); });
    // floor: read qkv, dout, out, lse; read and write dqkv (+=); 5 matmuls (dS recomputation not counted)
    att_print_row("attention bwd", att_bwd_name(v), shape, DType<F>::name(), ms,
                  es * ((double)nqkv * 3 + 2.0 * nout) + 4.0 * nlse, 10.0 * pairs * hd, peak, ok, wb);
    dev_free(qkv); dev_free(dout); dev_free(dqkv); dev_free(out); dev_free(aux); dev_free(Dbuf);
    if (d_len) dev_free(d_len);
}

static const AttCase att_cases[] = {
    {2, 1, 1, 16, true, false, 1.0f},    {4, 1, 3, 32, false, true, 1.0f},    {4, 7, 3, 16, false, true, 1.0f},
    {2, 7, 4, 64, true, false, 1.0f},    {2, 65, 4, 32, false, false, 1.0f},  {4, 65, 1, 64, true, true, 1.0f},
    {4, 89, 4, 32, true, true, 1.0f},    {2, 197, 3, 64, false, false, 2.0f}, {4, 197, 4, 16, true, true, 1.0f},
    {3, 130, 2, 32, false, true, 1.5f},  {1, 1024, 12, 64, true, false, 1.0f}, {2, 197, 12, 64, false, false, 1.0f},
};

template <typename F> static void att_run_version(int v, bool check_only) {
    double wf = 0.0, wb = 0.0;
    bool ok = true;
    uint64_t seed = 7000 + 100 * v + sizeof(F);
    int worst_f = 0, worst_b = 0;  // the cases that gave the worst errors
    for (int c = 0; c < (int)(sizeof(att_cases) / sizeof(att_cases[0])); c++) {
        double f0 = wf, b0 = wb;
        ok &= att_validate<F>(v, att_cases[c], seed++, &wf, &wb);
        if (wf > f0) worst_f = c;
        if (wb > b0) worst_b = c;
    }
    auto desc = [](const AttCase& tc) {
        static char buf[2][96];
        static int k = 0;
        k ^= 1;
        snprintf(buf[k], sizeof buf[k], "B=%d T=%d NH=%d hd=%d %s%s amp=%g", tc.B, tc.T, tc.NH, tc.hd,
                 tc.causal ? "causal" : "bidir", tc.lens ? " lengths" : "", tc.amp);
        return (const char*)buf[k];
    };
    fprintf(stderr, "attention v%d %s: validation %s (worst rel err fwd %.2e at %s; bwd %.2e at %s)\n", v,
            DType<F>::name(), ok ? "ok" : "FAILED", wf, desc(att_cases[worst_f]), wb, desc(att_cases[worst_b]));
    if (check_only) return;
    for (const AttBench& s : att_bench_shapes) att_bench<F>(v, s, ok, wf, wb);
}

int main(int argc, char** argv) {
    int only = 0;  // 0: every version
    bool check_only = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "check")) check_only = true;
        else only = atoi(argv[i]);
    }
    if (!check_only) {
        dev_print_header();
        printf("(attention rows: \"x floor (mem / flop floor ms) TF/s\": floor = max(bytes / %.1f TB/s, flops / peak),"
               " peak %.0f TFLOP/s fp32 CUDA cores for v1-v2, %.0f bf16 tensor cores for v3, %.0f tf32 tensor cores for v4;"
               " flops = 4*hd (fwd), 10*hd (bwd) per visible (query, key) pair and head)\n",
               DEV_MEM_BW / 1e12, ATT_FP32_FLOPS / 1e12, ATT_BF16_TC_FLOPS / 1e12, ATT_TF32_TC_FLOPS / 1e12);
    }
    for (int v = 1; v <= ATT_VERSIONS; v++) {
        if (only && only != v) continue;
        att_run_version<float>(v, check_only);
        if (att_has_bf16(v)) att_run_version<bf16>(v, check_only);
    }
    return dev_finish();
}
