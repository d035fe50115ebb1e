// attention.h: multi-head scaled dot-product attention (forward, backward) and the one-token decode
// step over a KV cache.
//
//   qkv: (B, T, 3C), each row [q (C) | k (C) | v (C)]; head h uses columns [h*hd, (h+1)*hd) of
//        each part, hd = C / NH
//   out: (B, T, C), heads concatenated;  lse: (B, NH, T) float, saved for the backward
//   s_ij = scale * q_i . k_j,  scale = 1/sqrt(hd)
//   P_ij = exp(s_ij - lse_i) over the visible keys j, 0 elsewhere;  lse_i = log sum_{visible j} exp(s_ij)
//   out_i = sum_j P_ij v_j
// Visible keys: causal: j <= i; lengths (B) or nullptr: keys j >= lengths[b] are padding and masked
// out. Both masks keep a prefix, so the keys query i sees are j < lim(b, i) = min(lengths[b], i + 1
// if causal). A row with lim = 0 outputs 0 and has lse = +inf (so P = exp(s - inf) = 0 there too).
// Backward (ACCUMULATES into dqkv, like every backward in src/), with D_i = dout_i . out_i per head
// (= sum_j P_ij dout_i . v_j) in the caller's scratch D (B, NH, T) float:
//   dP_ij = dout_i . v_j,  dS_ij = P_ij (dP_ij - D_i)   (the gradient of the scores s)
//   dv_j += sum_i P_ij dout_i,  dq_i += scale * sum_j dS_ij k_j,  dk_j += scale * sum_i dS_ij q_i
// The backward recomputes P from lse: neither backend keeps the (T, T) matrix between the passes.
// attention_forward_bias (ToMe's proportional attention, forward only): s_ij + key_bias[b, j], on the
// CPU reference, the fused forward (att_fwd_tc) and the plain CUDA kernel, chosen as without a bias.
//
// CPU (the reference): softmax with the max subtracted, in float; the backward keeps P and dS
// (B, NH, T, T) in malloc'd scratch for the column pass.
// CUDA:
//   - head dim 16, 32 or 64 (16-byte aligned tensors): fused ("flash") kernels on the tensor cores,
//     version 4 of dev/attention.cu: mma.sync m16n8k8 with TF32 operands (inputs, P and dS rounded to
//     10 mantissa bits, fp32 accumulation, online softmax), never writing a T x T matrix. Expect ~1e-3
//     relative error against the CPU (the precision of src/'s TF32 matmuls). Backward: a D kernel, a
//     dK/dV kernel (a block per 64 keys) and a dQ kernel (a block per 64 queries).
//   - any other head dim: the plain kernels (a warp per query row, fp32 math), P (and dS in the
//     backward) materialized in a device scratch buffer cached for the process (grown on demand).
// Every backend is deterministic: every output element is summed by one thread in a fixed order.
#pragma once
#include "common.h"

#include <initializer_list>

// number of visible keys of query row i of sequence b: the keys [0, lim) are visible
HOST_DEVICE int attention_limit(const int* lengths, int b, int i, int T, bool causal) {
    int lim = lengths ? lengths[b] : T;
    lim = lim < 0 ? 0 : (lim > T ? T : lim);
    if (causal && i + 1 < lim) lim = i + 1;
    return lim;
}

// out[d] (+)= alpha * sum_{j<n} p[j*p_stride] * rows[j*row_stride + d],  d < hd; sums in float in
// j order (the d loop in chunks of 64 keeps the sums in registers and reads rows contiguously)
static void attention_accum_rows_cpu(floatX* out, const float* p, size_t p_stride, const floatX* rows,
                                     size_t row_stride, int n, int hd, float alpha, bool accumulate) {
    const int DB = 64;
    for (int d0 = 0; d0 < hd; d0 += DB) {
        int d1 = d0 + DB < hd ? d0 + DB : hd;
        float acc[DB] = {0.0f};
        for (int j = 0; j < n; j++) {
            float pj = p[(size_t)j * p_stride];
            const floatX* row = rows + (size_t)j * row_stride;
            for (int d = d0; d < d1; d++) acc[d - d0] += pj * (float)row[d];
        }
        for (int d = d0; d < d1; d++)
            out[d] = (floatX)((accumulate ? (float)out[d] : 0.0f) + alpha * acc[d - d0]);
    }
}

static float attention_dot_cpu(const floatX* a, const floatX* b, int n) {
    float s = 0.0f;
    for (int d = 0; d < n; d++) s += (float)a[d] * (float)b[d];
    return s;
}

// one query row of one head: p[0, len) = softmax over the keys [0, lim) of scale * q.k_j (0 from
// lim on), out = sum_j p_j v_j; returns the row's lse (+inf when lim = 0).  q, out: (hd);
// key/value j at k, v + j*kv_stride
// kbias (optional, ToMe's proportional attention): kbias[j] is added to key j's score
static float attention_row_cpu(floatX* out, float* p, const floatX* q, const floatX* k, const floatX* v,
                               size_t kv_stride, int lim, int len, int hd, float scale, const float* kbias = nullptr) {
    float mx = -INFINITY;
    for (int j = 0; j < lim; j++) {
        float s = scale * attention_dot_cpu(q, k + (size_t)j * kv_stride, hd);
        if (kbias) s = s + kbias[j];
        p[j] = s;
        mx = p[j] > mx ? p[j] : mx;
    }
    float sum = 0.0f;
    for (int j = 0; j < lim; j++) { p[j] = expf(p[j] - mx); sum += p[j]; }
    float inv = lim > 0 ? 1.0f / sum : 0.0f;
    for (int j = 0; j < len; j++) p[j] = j < lim ? p[j] * inv : 0.0f;
    attention_accum_rows_cpu(out, p, 1, v, kv_stride, lim, hd, 1.0f, false);
    return lim > 0 ? mx + logf(sum) : INFINITY;
}

// Proportional attention (ToMe, Bolya et al. 2023; src/tome.h): the forward with a bias per key,
//   s_ij = scale * q_i . k_j + key_bias[b, j],   key_bias: (B, T) float (log of the tokens' sizes)
// (nullptr: none, the plain forward below). Inference only: no backward. On the GPU: the fused
// TF32 kernel where it applies, else the plain one (attention_forward_bias_cuda).
static void attention_forward_bias_cpu(floatX* out, float* lse, const floatX* qkv, const float* key_bias, const int* lengths,
                                       int B, int T, int C, int NH, bool causal) {
    int hd = C / NH;
    float scale = 1.0f / sqrtf((float)hd);
    size_t C3 = (size_t)3 * C;
#pragma omp parallel
    {
        float* p = (float*)malloc_check((size_t)(T > 0 ? T : 1) * sizeof(float));
#pragma omp for collapse(3)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int i = 0; i < T; i++) {
                    const floatX* base = qkv + (size_t)b * T * C3 + (size_t)h * hd;
                    lse[((size_t)b * NH + h) * T + i] =
                        attention_row_cpu(out + ((size_t)b * T + i) * C + (size_t)h * hd, p, base + i * C3, base + C,
                                          base + 2 * C, C3, attention_limit(lengths, b, i, T, causal), T, hd, scale,
                                          key_bias ? key_bias + (size_t)b * T : nullptr);
                }
        free(p);
    }
}

// out: (B, T, C) heads concatenated; lse: (B, NH, T) each row's log-sum-exp (the backward recomputes P)
static void attention_forward_cpu(floatX* out, float* lse, const floatX* qkv, const int* lengths, int B, int T,
                                  int C, int NH, bool causal) {
    attention_forward_bias_cpu(out, lse, qkv, nullptr, lengths, B, T, C, NH, causal);
}

static void attention_backward_cpu(floatX* dqkv, float* D, const floatX* dout, const floatX* qkv, const floatX* out,
                                   const float* lse, const int* lengths, int B, int T, int C, int NH, bool causal) {
    int hd = C / NH;
    float scale = 1.0f / sqrtf((float)hd);
    size_t C3 = (size_t)3 * C;
    size_t n = (size_t)B * NH * T * T;
    float* P = (float*)malloc_check((n > 0 ? n : 1) * sizeof(float));   // (B, NH, T, T), visible prefixes only
    float* dS = (float*)malloc_check((n > 0 ? n : 1) * sizeof(float));  // the same
    // rows: D_i, then P_i and dS_i over the visible keys, then dq_i
#pragma omp parallel for collapse(3)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                int lim = attention_limit(lengths, b, i, T, causal);
                size_t r = ((size_t)b * NH + h) * T + i;
                float* p = P + r * T;
                float* ds = dS + r * T;
                const floatX* base = qkv + (size_t)b * T * C3 + (size_t)h * hd;
                size_t orow = ((size_t)b * T + i) * C + (size_t)h * hd;
                const floatX* g = dout + orow;
                D[r] = attention_dot_cpu(g, out + orow, hd);
                for (int j = 0; j < lim; j++) {
                    p[j] = expf(scale * attention_dot_cpu(base + i * C3, base + C + j * C3, hd) - lse[r]);
                    ds[j] = p[j] * (attention_dot_cpu(g, base + 2 * C + j * C3, hd) - D[r]);
                }
                attention_accum_rows_cpu(dqkv + ((size_t)b * T + i) * C3 + (size_t)h * hd, ds, 1, base + C, C3, lim,
                                         hd, scale, true);
            }
    // columns: key j is seen by the queries i in [j if causal else 0, T) (all of them: the masks keep a
    // prefix), unless it is padding
#pragma omp parallel for collapse(3)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int j = 0; j < T; j++) {
                if (j >= attention_limit(lengths, b, T - 1, T, false)) continue;
                int i0 = causal ? j : 0;
                size_t col = (((size_t)b * NH + h) * T + i0) * T + j;
                const floatX* base = qkv + ((size_t)b * T + i0) * C3 + (size_t)h * hd;
                floatX* drow = dqkv + ((size_t)b * T + j) * C3 + (size_t)h * hd;
                attention_accum_rows_cpu(drow + C, dS + col, T, base, C3, T - i0, hd, scale, true);
                attention_accum_rows_cpu(drow + 2 * C, P + col, T, dout + ((size_t)b * T + i0) * C + (size_t)h * hd,
                                         C, T - i0, hd, 1.0f, true);
            }
    free(P);
    free(dS);
}

// One decode step: q: (B, C) the new token's query; k_cache, v_cache: (B, T_max, C), positions
// [0, n) valid (the new token's k, v already written at n - 1); out: (B, C). Equals row n - 1 of the
// causal attention_forward over those n positions.
static void attention_step_cpu(floatX* out, const floatX* q, const floatX* k_cache, const floatX* v_cache, int B,
                               int n, int T_max, int C, int NH) {
    int hd = C / NH;
    float scale = 1.0f / sqrtf((float)hd);
    float* p = (float*)malloc_check((size_t)B * NH * (n > 0 ? n : 1) * sizeof(float));
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            size_t off = (size_t)b * T_max * C + (size_t)h * hd;
            attention_row_cpu(out + (size_t)b * C + (size_t)h * hd, p + ((size_t)b * NH + h) * n,
                              q + (size_t)b * C + (size_t)h * hd, k_cache + off, v_cache + off, C, n, n, hd, scale);
        }
    free(p);
}

#ifdef __CUDACC__
// ---------------------------------------------------------------------------
// CUDA, plain kernels: any head dim (the fallback of attention_forward_cuda / attention_backward_cuda)
// and the decode step

__device__ __forceinline__ float attention_dot_dev(const floatX* a, const floatX* b, int n) {
    float s = 0.0f;
    for (int d = 0; d < n; d++) s += to_f32(a[d]) * to_f32(b[d]);
    return s;
}

// The whole warp computes one query row (attention_row_cpu): lanes stride over the keys for the
// scores and the softmax, then over the channels for out = sum_j p_j v_j. Returns the row's lse.
// kbias (optional): added to key j's score (attention_row_cpu's)
__device__ float attention_row_warp(floatX* out, float* p, const floatX* q, const floatX* k, const floatX* v,
                                    size_t kv_stride, int lim, int len, int hd, float scale, const float* kbias = nullptr) {
    int lane = threadIdx.x % 32;
    float mx = -INFINITY;
    for (int j = lane; j < lim; j += 32) {
        float s = scale * attention_dot_dev(q, k + (size_t)j * kv_stride, hd);
        if (kbias) s = s + kbias[j];
        p[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j < lim; j += 32) { float e = expf(p[j] - mx); p[j] = e; sum += e; }
    sum = warp_sum(sum);
    float inv = lim > 0 ? 1.0f / sum : 0.0f;
    for (int j = lane; j < len; j += 32) p[j] = j < lim ? p[j] * inv : 0.0f;
    __syncwarp();  // every lane reads every p_j below
    for (int d = lane; d < hd; d += 32) {
        float acc = 0.0f;
        for (int j = 0; j < lim; j++) acc += p[j] * to_f32(v[(size_t)j * kv_stride + d]);
        out[d] = from_f32<floatX>(acc);
    }
    return lim > 0 ? mx + logf(sum) : INFINITY;
}

// one warp per (b, h, i) row; P: (B, NH, T, T) scratch; key_bias (B, T) or nullptr (proportional
// attention: attention_forward_bias_cpu)
__global__ void attention_forward_kernel(floatX* out, float* lse, float* P, const floatX* qkv, const float* key_bias,
                                         const int* lengths, int B, int T, int C, int NH, bool causal, float scale) {
    size_t r = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;  // ((b*NH + h)*T + i)
    if (r >= (size_t)B * NH * T) return;
    int i = (int)(r % T), h = (int)(r / T % NH), b = (int)(r / T / NH);
    int hd = C / NH;
    size_t C3 = (size_t)3 * C;
    const floatX* base = qkv + (size_t)b * T * C3 + (size_t)h * hd;
    float l = attention_row_warp(out + ((size_t)b * T + i) * C + (size_t)h * hd, P + r * T, base + i * C3, base + C,
                                 base + 2 * C, C3, attention_limit(lengths, b, i, T, causal), T, hd, scale,
                                 key_bias ? key_bias + (size_t)b * T : nullptr);
    if (threadIdx.x % 32 == 0) lse[r] = l;
}

// one warp per (b, h, i) row: D_i, then P_i and dS_i (visible prefix) into scratch, then
// dq_i += scale * sum_j dS_ij k_j
__global__ void attention_backward_rows_kernel(floatX* dqkv, float* D, float* P, float* dS, const floatX* dout,
                                               const floatX* qkv, const floatX* out, const float* lse,
                                               const int* lengths, int B, int T, int C, int NH, bool causal,
                                               float scale) {
    size_t r = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= (size_t)B * NH * T) return;
    int lane = threadIdx.x % 32;
    int i = (int)(r % T), h = (int)(r / T % NH), b = (int)(r / T / NH);
    int hd = C / NH;
    size_t C3 = (size_t)3 * C;
    int lim = attention_limit(lengths, b, i, T, causal);
    float* p = P + r * T;
    float* ds = dS + r * T;
    const floatX* base = qkv + (size_t)b * T * C3 + (size_t)h * hd;
    size_t orow = ((size_t)b * T + i) * C + (size_t)h * hd;
    const floatX* g = dout + orow;
    float Di = 0.0f;
    for (int d = lane; d < hd; d += 32) Di += to_f32(g[d]) * to_f32(out[orow + d]);
    Di = warp_sum(Di);
    if (lane == 0) D[r] = Di;
    const float lse_i = lse[r];
    for (int j = lane; j < lim; j += 32) {
        float pj = expf(scale * attention_dot_dev(base + i * C3, base + C + j * C3, hd) - lse_i);
        p[j] = pj;
        ds[j] = pj * (attention_dot_dev(g, base + 2 * C + j * C3, hd) - Di);
    }
    __syncwarp();
    floatX* dq = dqkv + ((size_t)b * T + i) * C3 + (size_t)h * hd;
    for (int d = lane; d < hd; d += 32) {
        float acc = 0.0f;
        for (int j = 0; j < lim; j++) acc += ds[j] * to_f32(base[C + j * C3 + d]);
        dq[d] = from_f32<floatX>(to_f32(dq[d]) + scale * acc);
    }
}

// one thread per (b, j, c): dk_j += scale * sum_i dS_ij q_i, dv_j += sum_i P_ij dout_i over the
// queries that see key j
__global__ void attention_backward_cols_kernel(floatX* dqkv, const float* P, const float* dS, const floatX* dout,
                                               const floatX* qkv, const int* lengths, int B, int T, int C, int NH,
                                               bool causal, float scale) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * C) return;
    int c = (int)(idx % C), j = (int)(idx / C % T), b = (int)(idx / C / T);
    if (j >= attention_limit(lengths, b, T - 1, T, false)) return;  // padding key: no gradient
    int h = c / (C / NH);
    size_t C3 = (size_t)3 * C;
    size_t col = ((size_t)b * NH + h) * T * T + j;
    float dk = 0.0f, dv = 0.0f;
    for (int i = causal ? j : 0; i < T; i++) {
        dk += dS[col + (size_t)i * T] * to_f32(qkv[((size_t)b * T + i) * C3 + c]);
        dv += P[col + (size_t)i * T] * to_f32(dout[((size_t)b * T + i) * C + c]);
    }
    floatX* drow = dqkv + ((size_t)b * T + j) * C3;
    drow[C + c] = from_f32<floatX>(to_f32(drow[C + c]) + scale * dk);
    drow[2 * C + c] = from_f32<floatX>(to_f32(drow[2 * C + c]) + dv);
}

// The decode step split over the keys (as flash-decoding): the keys [0, n) of a (b, h) go in spans of
// ATT_STEP_KEYS to blocks that run at once, each writing a partial softmax (its max m, sum l and
// sum_j exp(s_j - m) v_j), and a second kernel merges a row's partials. One warp a row walking all
// n keys (the first version) took ~55 us a layer at ~256 positions in a hybrid's generation step
// (H200), the rest of a layer ~12; with the positions on the device (a graph) the grid covers T_max
// and the spans past a row's n return at once. Partials: (B NH, spans, hd + 2) floats.
#define ATT_STEP_KEYS 128    // keys a block: a lane a key in the scores
#define ATT_STEP_THREADS 128
// the spans that hold `keys` keys: a row's n in the merge; T_max (at least one) for the grid and the partials
HOST_DEVICE int attention_step_spans(int keys) { return (keys + ATT_STEP_KEYS - 1) / ATT_STEP_KEYS; }
static size_t attention_step_scratch_floats(int B, int NH, int T_max, int hd) {
    return (size_t)B * NH * std::max(1, attention_step_spans(T_max)) * (hd + 2);
}

// grid (B NH, spans); q row (b, h): the scores of the span's keys (a lane a key, q in shared memory),
// their max and exp-sum, then sum_j e_j v_j with threads over (channels, key group). VEC: K and V rows
// read as float4 (C and hd multiples of 4, 16-byte aligned caches), CPT channels a thread. The loads
// of a row are unrolled so that many are in flight: the first version's scalar loops, one L2 round
// trip per channel, took ~30 us a layer at ~256 keys.
template <bool VEC>
__global__ void __launch_bounds__(ATT_STEP_THREADS) attention_step_partial_kernel(
    float* part, const floatX* q, const floatX* k_cache, const floatX* v_cache, int n, const int* positions, int T_max,
    int C, int NH, float scale) {
    constexpr int CPT = VEC ? 4 : 1;
    extern __shared__ float4 att_smem4[];
    const int bh = blockIdx.x, b = bh / NH, h = bh % NH, hd = C / NH, span = blockIdx.y;
    if (positions) n = positions[b] + 1;
    const int j0 = span * ATT_STEP_KEYS, keys = min(ATT_STEP_KEYS, n - j0);
    if (keys <= 0) return;  // past the row's keys: the merge reads only the spans below n
    float4* red4 = att_smem4;                                              // (ATT_STEP_THREADS) the key groups' sums
    float* red = reinterpret_cast<float*>(att_smem4);                      // the block reductions (the same memory)
    float* es = reinterpret_cast<float*>(att_smem4 + ATT_STEP_THREADS);    // (ATT_STEP_KEYS) scores, then exp(s - m)
    float* qs = es + ATT_STEP_KEYS;                                        // (hd)
    const size_t off = (size_t)b * T_max * C + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = to_f32(q[(size_t)b * C + (size_t)h * hd + d]);
    __syncthreads();
    float s = -INFINITY;
    if (threadIdx.x < keys) {
        const floatX* kr = k_cache + off + (size_t)(j0 + threadIdx.x) * C;
        float dot = 0.0f;
        if constexpr (VEC) {
            const float4* k4 = reinterpret_cast<const float4*>(kr);
            const float4* q4 = reinterpret_cast<const float4*>(qs);
#pragma unroll 8
            for (int d = 0; d < hd / 4; d++) {
                float4 kv = k4[d], qv = q4[d];
                dot += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
            }
        } else {
#pragma unroll 8
            for (int d = 0; d < hd; d++) dot += qs[d] * to_f32(kr[d]);
        }
        s = scale * dot;
    }
    // the span's max, then e_j = exp(s_j - m) and their sum (block reductions through `red`)
    float m = warp_max(s);
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = m;
    __syncthreads();
    m = red[0];
    for (int w = 1; w < (int)blockDim.x / 32; w++) m = fmaxf(m, red[w]);
    const float e = threadIdx.x < keys ? expf(s - m) : 0.0f;
    if (threadIdx.x < ATT_STEP_KEYS) es[threadIdx.x] = e;
    __syncthreads();  // every warp has read red[] for m
    float l = warp_sum(e);
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = l;
    __syncthreads();
    l = 0.0f;
    for (int w = 0; w < (int)blockDim.x / 32; w++) l += red[w];
    float* out = part + ((size_t)bh * gridDim.y + span) * (hd + 2);
    if (threadIdx.x == 0) { out[0] = m; out[1] = l; }
    __syncthreads();  // red is reused below
    // sum_j e_j v_j: `width` threads over the row's hd / CPT channel groups, G groups of keys j = g, g + G, ...
    const int tpr = hd / CPT, G = tpr < (int)blockDim.x ? blockDim.x / tpr : 1, width = G == 1 ? blockDim.x : tpr;
    for (int c0 = 0; c0 < tpr; c0 += width) {
        const int c = c0 + threadIdx.x % width, g = threadIdx.x / width;
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (c < tpr && g < G) {
            const floatX* vr = v_cache + off + (size_t)j0 * C + (size_t)c * CPT;
#pragma unroll 4
            for (int j = g; j < keys; j += G) {
                const float ej = es[j];
                if constexpr (VEC) {
                    float4 v4 = *reinterpret_cast<const float4*>(vr + (size_t)j * C);
                    acc.x += ej * v4.x; acc.y += ej * v4.y; acc.z += ej * v4.z; acc.w += ej * v4.w;
                } else {
                    acc.x += ej * to_f32(vr[(size_t)j * C]);
                }
            }
        }
        red4[threadIdx.x] = acc;
        __syncthreads();
        if (g == 0 && c < tpr) {
            float4 t = acc;
            for (int q2 = 1; q2 < G; q2++) {
                float4 o = red4[threadIdx.x + q2 * width];
                t.x += o.x; t.y += o.y; t.z += o.z; t.w += o.w;
            }
            out[2 + c * CPT] = t.x;
            if constexpr (VEC) { out[2 + c * CPT + 1] = t.y; out[2 + c * CPT + 2] = t.z; out[2 + c * CPT + 3] = t.w; }
        }
        __syncthreads();
    }
}

// one block per (b, h): out = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s over the row's spans
__global__ void attention_step_merge_kernel(floatX* out, const float* part, int n, const int* positions, int spans_grid,
                                            int C, int NH) {
    const int bh = blockIdx.x, b = bh / NH, h = bh % NH, hd = C / NH;
    if (positions) n = positions[b] + 1;
    const int spans = attention_step_spans(n);
    const float* p = part + (size_t)bh * spans_grid * (hd + 2);
    float M = -INFINITY;
    for (int s = 0; s < spans; s++) M = fmaxf(M, p[(size_t)s * (hd + 2)]);
    float L = 0.0f;
    for (int s = 0; s < spans; s++) L += expf(p[(size_t)s * (hd + 2)] - M) * p[(size_t)s * (hd + 2) + 1];
    const float inv = spans > 0 ? 1.0f / L : 0.0f;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < spans; s++) acc += expf(p[(size_t)s * (hd + 2)] - M) * p[(size_t)s * (hd + 2) + 2 + d];
        out[(size_t)b * C + (size_t)h * hd + d] = from_f32<floatX>(acc * inv);
    }
}

// a device buffer of at least `floats` floats, kept for the process and grown on demand
static float* attention_scratch(size_t floats) {
    static DeviceScratch scratch;
    return scratch.get(floats);
}

// the plain forward / backward (any head dim): the interface of attention_forward_cuda /
// attention_backward_cuda; P (and dS) go to attention_scratch. The forward takes an optional key
// bias (proportional attention, attention_forward_bias_cpu).
static void attention_forward_bias_plain_cuda(floatX* out, float* lse, const floatX* qkv, const float* key_bias, const int* lengths,
                                        int B, int T, int C, int NH, bool causal) {
    size_t rows = (size_t)B * NH * T;
    if (rows == 0 || C == 0) return;
    const int block = 256, warps = block / 32;
    float scale = 1.0f / sqrtf((float)(C / NH));
    float* P = attention_scratch(rows * T);
    attention_forward_kernel<<<(unsigned)((rows + warps - 1) / warps), block, 0, launch_stream()>>>(out, lse, P, qkv, key_bias, lengths, B, T, C,
                                                                               NH, causal, scale);
    cudaCheckLaunch();
}
static void attention_forward_plain_cuda(floatX* out, float* lse, const floatX* qkv, const int* lengths, int B, int T,
                                         int C, int NH, bool causal) {
    attention_forward_bias_plain_cuda(out, lse, qkv, nullptr, lengths, B, T, C, NH, causal);
}

static void attention_backward_plain_cuda(floatX* dqkv, float* D, const floatX* dout, const floatX* qkv,
                                          const floatX* out, const float* lse, const int* lengths, int B, int T, int C,
                                          int NH, bool causal) {
    size_t rows = (size_t)B * NH * T;
    if (rows == 0 || C == 0) return;
    const int block = 256, warps = block / 32;
    float scale = 1.0f / sqrtf((float)(C / NH));
    float* P = attention_scratch(2 * rows * T);
    float* dS = P + rows * T;
    attention_backward_rows_kernel<<<(unsigned)((rows + warps - 1) / warps), block, 0, launch_stream()>>>(
        dqkv, D, P, dS, dout, qkv, out, lse, lengths, B, T, C, NH, causal, scale);
    cudaCheckLaunch();
    size_t n = (size_t)B * T * C;
    attention_backward_cols_kernel<<<(unsigned)((n + block - 1) / block), block, 0, launch_stream()>>>(dqkv, P, dS, dout, qkv, lengths, B,
                                                                                  T, C, NH, causal, scale);
    cudaCheckLaunch();
}

// attention_step_cpu's step; part: attention_step_scratch_floats(B, NH, T_max, hd) floats. positions
// (device, optional): row b reads the keys [0, positions[b] + 1), the count taken when the kernels run
// (a decode step captured in a CUDA graph, whose launch arguments are fixed); n is then ignored.
static void attention_step_launch(floatX* out, float* part, const floatX* q, const floatX* k_cache, const floatX* v_cache,
                                  int B, int n, const int* positions, int T_max, int C, int NH) {
    if (B == 0) return;
    const int hd = C / NH, spans = std::max(1, attention_step_spans(T_max));
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t smem = (4 * ATT_STEP_THREADS + ATT_STEP_KEYS + hd) * sizeof(float);
    if (smem > 48 * 1024) FATAL("attention step: head dim %d is past what the decode kernel takes", hd);
    const bool vec = sizeof(floatX) == 4 && C % 4 == 0 && hd % 4 == 0 && aligned16(k_cache) && aligned16(v_cache);
    if (vec)
        attention_step_partial_kernel<true><<<dim3(B * NH, spans), ATT_STEP_THREADS, smem, launch_stream()>>>(
            part, q, k_cache, v_cache, n, positions, T_max, C, NH, scale);
    else
        attention_step_partial_kernel<false><<<dim3(B * NH, spans), ATT_STEP_THREADS, smem, launch_stream()>>>(
            part, q, k_cache, v_cache, n, positions, T_max, C, NH, scale);
    cudaCheckLaunch();
    attention_step_merge_kernel<<<B * NH, std::min(128, ((hd + 31) / 32) * 32), 0, launch_stream()>>>(out, part, n, positions,
                                                                                                    spans, C, NH);
    cudaCheckLaunch();
}
// the partials go to the same cached scratch as the plain kernels' P
static void attention_step_cuda(floatX* out, const floatX* q, const floatX* k_cache, const floatX* v_cache, int B,
                                int n, int T_max, int C, int NH) {
    if (B == 0) return;
    float* part = attention_scratch(attention_step_scratch_floats(B, NH, T_max, C / NH));
    attention_step_launch(out, part, q, k_cache, v_cache, B, n, nullptr, T_max, C, NH);
}

// ---------------------------------------------------------------------------
// CUDA, fused kernels on the tensor cores (head dims 16, 32, 64): version 4 of dev/attention.cu (which
// includes these and adds the other versions it measures: plain, SIMT fused, bf16 operands).
//
// Forward: block = 4 warps = 64 queries (16 per warp), grid (B*NH, query tiles; the longest causal rows
// first). Q, then each tile of 64 keys and values, are staged in shared memory (rounded to the operand
// type; rows padded so the fragment loads are conflict-free). A warp: S (16 x 64) = Q K^T with the Q
// fragments held in registers; scale + mask (-inf) in fp32, row max over the quad, rescale o and l,
// P = exp2(S - m) (scores in log2 units); O += P V with P taken straight from the S accumulators.
// Backward: D kernel; dK/dV: block per 64 keys (K, V fragments in registers), query tiles streamed
// (q, dout; lse, D, lim), S^T = K Q^T and dP^T = V dO^T, dV += P^T dO, dK += dS^T Q; dQ: block per
// 64 queries (Q, dO fragments in registers), key tiles streamed, dQ += dS K. No atomics.
// The operand handling is a policy (here AttMmaTf32; dev/ adds a bf16 one): shared-memory element,
// k per mma, row padding, staging, A / B fragment loads, accumulator -> A operand, mma. The kernels are
// templated on it, on the in/out element type F and on the head dim HD.

#define ATT_LOG2E 1.4426950408889634f
#define ATT_LN2 0.6931471805599453f

// the fused kernels are compiled for these head dims; `HD` is the compile-time head dim inside CALL
#define ATT_HD_DISPATCH(hd, ...)                                                     \
    do {                                                                             \
        switch (hd) {                                                                \
        case 16: { constexpr int HD = 16; __VA_ARGS__; } break;                      \
        case 32: { constexpr int HD = 32; __VA_ARGS__; } break;                      \
        case 64: { constexpr int HD = 64; __VA_ARGS__; } break;                      \
        default: FATAL("attention: head dim %d not compiled (16, 32, 64)", hd);      \
        }                                                                            \
    } while (0)

// element access: 4 elements <-> float4 (16 bytes of fp32 / 8 bytes of bf16), 2 elements stored
template <typename F> __device__ __forceinline__ float4 att_ld4(const F* p) {
    if constexpr (sizeof(F) == 4) {
        return *reinterpret_cast<const float4*>(p);
    } else {
        struct alignas(8) P4 { F v[4]; };
        P4 x = *reinterpret_cast<const P4*>(p);
        return make_float4(to_f32(x.v[0]), to_f32(x.v[1]), to_f32(x.v[2]), to_f32(x.v[3]));
    }
}
template <typename F> __device__ __forceinline__ void att_st2(F* p, float a, float b) {
    struct alignas(2 * sizeof(F)) P2 { F v[2]; };
    P2 x;
    x.v[0] = from_f32<F>(a); x.v[1] = from_f32<F>(b);
    *reinterpret_cast<P2*>(p) = x;
}
template <typename F> __device__ __forceinline__ void att_add2(F* p, float a, float b) {
    struct alignas(2 * sizeof(F)) P2 { F v[2]; };
    P2 x = *reinterpret_cast<const P2*>(p);
    att_st2(p, to_f32(x.v[0]) + a, to_f32(x.v[1]) + b);
}
__device__ __forceinline__ float att_quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float att_quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
// ---------------------------------------------------------------------------
// D_i = dout_i . out_i per (b, h, i), the first kernel of every fused backward. One thread per head row
// (hd contiguous elements of out and dout); D: (B, NH, T).

template <typename F>
__global__ void att_bwd_d_kernel(float* D, const F* dout, const F* out, int B, int T, int NH, int hd) {
    size_t r = (size_t)blockIdx.x * blockDim.x + threadIdx.x;  // (b*T + t)*NH + h
    if (r >= (size_t)B * T * NH) return;
    const F* a = dout + r * hd;
    const F* o = out + r * hd;
    float s = 0.0f;
    for (int c = 0; c < hd; c += 4) {
        float4 x = att_ld4(a + c), y = att_ld4(o + c);
        s += x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
    }
    int h = (int)(r % NH);
    size_t bt = r / NH;
    D[((bt / T) * NH + h) * T + bt % T] = s;
}
template <typename F> static void att_bwd_d(float* D, const F* dout, const F* out, int B, int T, int C, int NH) {
    size_t rows = (size_t)B * T * NH;
    att_bwd_d_kernel<F><<<(unsigned)((rows + 255) / 256), 256, 0, launch_stream()>>>(D, dout, out, B, T, NH, C / NH);
    cudaCheckLaunch();
}

// the arguments of every fused backward kernel (dK/dV and dQ; also of dev/attention.cu's versions 2-3)
template <typename F> struct AttBwdArgs {
    F* dqkv;
    const F *dout, *qkv;
    const float *lse, *D;  // (B, NH, T)
    const int* lengths;
    int T, C, NH;
    bool causal;
    float scale, scale_log2;
};
// a block's head (blockIdx.x = b*NH + h): its columns of qkv (q of row i at base[i*C3], k at
// base[C + j*C3], v at base[2C + j*C3]), of dqkv (dbase, the same layout) and of dout (row i at
// gbase[i*C]), its rows of lse and D
template <typename F> struct AttHead {
    int b, h;
    size_t C3;
    const F *base, *gbase;
    F* dbase;
    const float *lse, *D;
    __device__ AttHead(const AttBwdArgs<F>& a, int hd)
        : b(blockIdx.x / a.NH), h(blockIdx.x % a.NH), C3((size_t)3 * a.C),
          base(a.qkv + (size_t)b * a.T * C3 + (size_t)h * hd), gbase(a.dout + (size_t)b * a.T * a.C + (size_t)h * hd),
          dbase(a.dqkv + (size_t)b * a.T * C3 + (size_t)h * hd), lse(a.lse + ((size_t)b * a.NH + h) * a.T),
          D(a.D + ((size_t)b * a.NH + h) * a.T) {}
};

// tensor-core primitives (inline PTX, sm_80+; fragment layouts of the PTX ISA, "Matrix Fragments for
// mma.m16n8k8"): lane = 4*gid + tid4; C/D (16x8 fp32): c[0..1] = (gid, 2tid4..+1), c[2..3] = (gid+8, ...)
// d += a * b with fp32 accumulators d, four A and two B registers; SHAPE_TYPES e.g. "m16n8k16.row.col.f32.bf16.bf16.f32"
#define ATT_MMA_ASM(SHAPE_TYPES)                                                                   \
    asm volatile("mma.sync.aligned." SHAPE_TYPES " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n" \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                     \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))
// x rounded to tf32 (10-bit mantissa, nearest, ties away from zero), as the .b32 an mma operand takes
__device__ __forceinline__ uint32_t att_tf32(float x) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
}
// d += a * b, m16n8k8, tf32 inputs, fp32 accumulate. A (16x8): a[0] = (gid, tid4), a[1] = (gid+8, tid4),
// a[2] = (gid, tid4+4), a[3] = (gid+8, tid4+4); B (8x8): b[0] = (k tid4, n gid), b[1] = (k tid4+4, n gid)
__device__ __forceinline__ void att_mma_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    ATT_MMA_ASM("m16n8k8.row.col.f32.tf32.tf32.f32");
}

#define ATT_TC_ROWS 64  // rows owned per block: 4 warps x 16
#define ATT_TC_TILE 64  // rows of the streamed operand per shared-memory tile
#define ATT_TC_THREADS 128

template <int N> __device__ __forceinline__ void att_tc_zero(float (&c)[N][4]) {
#pragma unroll
    for (int n = 0; n < N; n++) c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.0f;
}
// rows (r0, r0 + 8) of a (16 x 8*NT) accumulator, times mul, (+)= into global rows p0, p1 (null: skip)
template <typename F, int NT>
__device__ __forceinline__ void att_tc_store_rows(F* p0, F* p1, const float (&c)[NT][4], float mul0, float mul1, bool add) {
    const int t = threadIdx.x & 3;
#pragma unroll
    for (int n = 0; n < NT; n++) {
        if (p0) { if (add) att_add2(p0 + n * 8 + 2 * t, c[n][0] * mul0, c[n][1] * mul0); else att_st2(p0 + n * 8 + 2 * t, c[n][0] * mul0, c[n][1] * mul0); }
        if (p1) { if (add) att_add2(p1 + n * 8 + 2 * t, c[n][2] * mul1, c[n][3] * mul1); else att_st2(p1 + n * 8 + 2 * t, c[n][2] * mul1, c[n][3] * mul1); }
    }
}

// tf32 operands: mma m16n8k8, fp32 tiles (tf32-rounded) with rows of HD + 4 floats, 32-bit shared loads
struct AttMmaTf32 {
    typedef float S;
    static constexpr int KSTEP = 8;
    static constexpr int PAD = 4;  // LD = 4 mod 8 (row-major fragment loads) and 4 mod 16 (rows 2t, 2t+1)
    template <typename F, int HD>
    static __device__ __forceinline__ void stage(S* dst, const F* src, size_t stride, int nvalid) {
        constexpr int LD = HD + PAD, CPR = HD / 4;
        for (int idx = threadIdx.x; idx < ATT_TC_TILE * CPR; idx += blockDim.x) {
            int r = idx / CPR, c = idx % CPR;
            float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
            if (r < nvalid) {
                float4 x = att_ld4(src + (size_t)r * stride + 4 * c);
                v = make_float4(__uint_as_float(att_tf32(x.x)), __uint_as_float(att_tf32(x.y)),
                                __uint_as_float(att_tf32(x.z)), __uint_as_float(att_tf32(x.w)));
            }
            *reinterpret_cast<float4*>(dst + r * LD + 4 * c) = v;
        }
    }
    static __device__ __forceinline__ uint32_t at(const S* tile, int LD, int r, int c) {
        return __float_as_uint(tile[r * LD + c]);
    }
    // rows row0..row0+15, cols (k) col0..col0+7
    static __device__ __forceinline__ void lda(uint32_t (&a)[4], const S* tile, int LD, int row0, int col0) {
        int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
        a[0] = at(tile, LD, row0 + g, col0 + t);
        a[1] = at(tile, LD, row0 + g + 8, col0 + t);
        a[2] = at(tile, LD, row0 + g, col0 + t + 4);
        a[3] = at(tile, LD, row0 + g + 8, col0 + t + 4);
    }
    // B[k][n] = tile[n][k]: n-tiles rows row0.. (b[0..1]) and row0+8.. (b[2..3]); k = cols col0..col0+7
    static __device__ __forceinline__ void ldb_nk(uint32_t (&b)[4], const S* tile, int LD, int row0, int col0) {
        int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
        b[0] = at(tile, LD, row0 + g, col0 + t);
        b[1] = at(tile, LD, row0 + g, col0 + t + 4);
        b[2] = at(tile, LD, row0 + 8 + g, col0 + t);
        b[3] = at(tile, LD, row0 + 8 + g, col0 + t + 4);
    }
    // B[k][n] = tile[k][n] with k = rows row0..row0+7 in the accumulator order (k position t = row 2t,
    // t+4 = row 2t+1); n-tiles cols col0.. (b[0..1]) and col0+8.. (b[2..3])
    static __device__ __forceinline__ void ldb_kn(uint32_t (&b)[4], const S* tile, int LD, int row0, int col0) {
        int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
        b[0] = at(tile, LD, row0 + 2 * t, col0 + g);
        b[1] = at(tile, LD, row0 + 2 * t + 1, col0 + g);
        b[2] = at(tile, LD, row0 + 2 * t, col0 + 8 + g);
        b[3] = at(tile, LD, row0 + 2 * t + 1, col0 + 8 + g);
    }
    // A operand for k-step j (8 columns = accumulator tile j): c0 (col 2t) -> k position t, c1 -> t+4
    template <int N> static __device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&c)[N][4], int j) {
        a[0] = att_tf32(c[j][0]);
        a[1] = att_tf32(c[j][2]);
        a[2] = att_tf32(c[j][1]);
        a[3] = att_tf32(c[j][3]);
    }
    static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        att_mma_tf32(d, a, b0, b1);
    }
};

// acc[n..n+1] (+)= A x (two n-tiles of B)
template <typename P>
__device__ __forceinline__ void att_tc_mma2(float (&c0)[4], float (&c1)[4], const uint32_t (&a)[4], const uint32_t (&b)[4]) {
    P::mma(c0, a, b[0], b[1]);
    P::mma(c1, a, b[2], b[3]);
}

// acc (16 x 8N) = A (16 x HD: KS fragments in registers) x tile^T, tile rows r0 .. r0 + 8N being the n
// index (S = Q K^T, dP = dO V^T, S^T = K Q^T, ...); 16-row groups from nvalid on are skipped (stay 0)
template <typename P, int N, int KS>
__device__ __forceinline__ void att_tc_regs_x_tile_t(float (&acc)[N][4], const uint32_t (&a)[KS][4], const typename P::S* tile,
                                                   int LD, int r0, int nvalid) {
    att_tc_zero(acc);
#pragma unroll
    for (int n = 0; n < N; n += 2) {
        if (r0 + n * 8 >= nvalid) break;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            uint32_t b[4];
            P::ldb_nk(b, tile, LD, r0 + n * 8, kk * P::KSTEP);
            att_tc_mma2<P>(acc[n], acc[n + 1], a[kk], b);
        }
    }
}
// out (16 x 8NT) += X (16 x 8N, accumulators, rounded to the operand type) x tile rows r0 .. r0 + 8N (the k
// index: O += P V, dQ += dS K, dV += P^T dO, dK += dS^T Q); k-steps from nvalid on are skipped
template <typename P, int N, int NT>
__device__ __forceinline__ void att_tc_acc_x_tile(float (&out)[NT][4], const float (&x)[N][4], const typename P::S* tile,
                                                int LD, int r0, int nvalid) {
#pragma unroll
    for (int j = 0; j < N * 8 / P::KSTEP; j++) {
        if (r0 + j * P::KSTEP >= nvalid) break;
        uint32_t a[4];
        P::acc_to_a(a, x, j);
#pragma unroll
        for (int d = 0; d < NT; d += 2) {
            uint32_t b[4];
            P::ldb_kn(b, tile, LD, r0 + j * P::KSTEP, d * 8);
            att_tc_mma2<P>(out[d], out[d + 1], a, b);
        }
    }
}

// BIAS: key_bias (B, T) is added to every score (proportional attention; false: key_bias unused, the
// code of the unbiased forward)
template <typename P, typename F, int HD, bool BIAS>
__global__ void __launch_bounds__(ATT_TC_THREADS)
    att_tc_fwd_kernel(F* out, float* lse, const F* qkv, const float* key_bias, const int* lengths, int T, int C, int NH,
                    bool causal, float scale_log2) {
    using S = typename P::S;
    constexpr int LD = HD + P::PAD, NT = HD / 8, KS = HD / P::KSTEP;
    // Q is staged in the K buffer: its fragments go to registers before the first key tile
    __shared__ __align__(16) S Ks[ATT_TC_TILE * LD], Vs[ATT_TC_TILE * LD];
    S* Qs = Ks;
    const int b = blockIdx.x / NH, h = blockIdx.x % NH;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * ATT_TC_ROWS;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const size_t C3 = (size_t)3 * C;
    const F* base = qkv + (size_t)b * T * C3 + (size_t)h * HD;
    const int nq = min(ATT_TC_ROWS, T - q0), wr = warp * 16;
    const bool active = wr < nq;  // warp-uniform: a warp past the last query only helps staging
    const int kend = attention_limit(lengths, b, q0 + nq - 1, T, causal);
    const int i0 = q0 + wr + g, i1 = i0 + 8;  // this thread's two query rows
    const int lim0 = attention_limit(lengths, b, i0, T, causal), lim1 = attention_limit(lengths, b, i1, T, causal);
    const int limb = max(lim0, lim1);  // <= T: the bias of the keys below it is read
    const float* kbias = BIAS ? key_bias + (size_t)b * T : nullptr;
    P::template stage<F, HD>(Qs, base + (size_t)q0 * C3, C3, nq);
    __syncthreads();
    uint32_t qa[KS][4];
#pragma unroll
    for (int kk = 0; kk < KS; kk++) P::lda(qa[kk], Qs, LD, wr, kk * P::KSTEP);
    float o[NT][4];
    att_tc_zero(o);
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    for (int k0 = 0; k0 < kend; k0 += ATT_TC_TILE) {
        const int nk = min(ATT_TC_TILE, kend - k0);
        __syncthreads();
        P::template stage<F, HD>(Ks, base + C + (size_t)k0 * C3, C3, nk);
        P::template stage<F, HD>(Vs, base + 2 * C + (size_t)k0 * C3, C3, nk);
        __syncthreads();
        if (!active) continue;
        float kb[8][2];  // this thread's keys' bias in log2 units (issued before the mma, used after)
        if constexpr (BIAS) {
#pragma unroll
            for (int n = 0; n < 8; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    int key = k0 + n * 8 + 2 * t + e;
                    kb[n][e] = key < limb ? kbias[key] * ATT_LOG2E : 0.0f;
                }
        }
        float s[8][4];
        att_tc_regs_x_tile_t<P>(s, qa, Ks, LD, 0, nk);  // a partial last tile: its empty 16-key groups stay 0 (masked)
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int n = 0; n < 8; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int key = k0 + n * 8 + 2 * t + e;
                if constexpr (BIAS) {
                    s[n][e] = key < lim0 ? s[n][e] * scale_log2 + kb[n][e] : -INFINITY;
                    s[n][2 + e] = key < lim1 ? s[n][2 + e] * scale_log2 + kb[n][e] : -INFINITY;
                } else {
                    s[n][e] = key < lim0 ? s[n][e] * scale_log2 : -INFINITY;
                    s[n][2 + e] = key < lim1 ? s[n][2 + e] * scale_log2 : -INFINITY;
                }
                mx0 = fmaxf(mx0, s[n][e]);
                mx1 = fmaxf(mx1, s[n][2 + e]);
            }
        const float mn0 = fmaxf(m0, att_quad_max(mx0)), mn1 = fmaxf(m1, att_quad_max(mx1));
        const float mu0 = mn0 == -INFINITY ? 0.0f : mn0, mu1 = mn1 == -INFINITY ? 0.0f : mn1;
        const float c0 = exp2f(m0 - mu0), c1 = exp2f(m1 - mu1);
        m0 = mn0; m1 = mn1;
        l0 *= c0; l1 *= c1;
#pragma unroll
        for (int d = 0; d < NT; d++) { o[d][0] *= c0; o[d][1] *= c0; o[d][2] *= c1; o[d][3] *= c1; }
#pragma unroll
        for (int n = 0; n < 8; n++) {
            s[n][0] = exp2f(s[n][0] - mu0); s[n][1] = exp2f(s[n][1] - mu0);
            s[n][2] = exp2f(s[n][2] - mu1); s[n][3] = exp2f(s[n][3] - mu1);
            l0 += s[n][0] + s[n][1];
            l1 += s[n][2] + s[n][3];
        }
        att_tc_acc_x_tile<P>(o, s, Vs, LD, 0, nk);  // O += P V
    }
    l0 = att_quad_sum(l0);
    l1 = att_quad_sum(l1);
    if (!active) return;
    F* o0 = i0 < T ? out + ((size_t)b * T + i0) * C + (size_t)h * HD : nullptr;
    F* o1 = i1 < T ? out + ((size_t)b * T + i1) * C + (size_t)h * HD : nullptr;
    att_tc_store_rows<F, NT>(o0, o1, o, l0 > 0.0f ? 1.0f / l0 : 0.0f, l1 > 0.0f ? 1.0f / l1 : 0.0f, false);
    float* lrow = lse + ((size_t)b * NH + h) * T;
    if (t == 0 && i0 < T) lrow[i0] = l0 > 0.0f ? (m0 + log2f(l0)) * ATT_LN2 : INFINITY;
    if (t == 0 && i1 < T) lrow[i1] = l1 > 0.0f ? (m1 + log2f(l1)) * ATT_LN2 : INFINITY;
}

template <typename P, typename F, int HD>
__global__ void __launch_bounds__(ATT_TC_THREADS)
    att_tc_bwd_dq_kernel(const AttBwdArgs<F> a) {
    using S = typename P::S;
    constexpr int LD = HD + P::PAD, NT = HD / 8, KS = HD / P::KSTEP;
    // Q and dO are staged in the K and V buffers: their fragments go to registers first
    __shared__ __align__(16) S Ks[ATT_TC_TILE * LD], Vs[ATT_TC_TILE * LD];
    S *Qs = Ks, *Os = Vs;
    const AttHead<F> H(a, HD);
    const int T = a.T, C = a.C, b = H.b;
    const size_t C3 = H.C3;
    const int q0 = (gridDim.y - 1 - blockIdx.y) * ATT_TC_ROWS;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int nq = min(ATT_TC_ROWS, T - q0), wr = warp * 16;
    const bool active = wr < nq;
    const int kend = attention_limit(a.lengths, b, q0 + nq - 1, T, a.causal);
    const int i0 = q0 + wr + g, i1 = i0 + 8;
    const int lim0 = attention_limit(a.lengths, b, i0, T, a.causal), lim1 = attention_limit(a.lengths, b, i1, T, a.causal);
    const float lse0 = i0 < T ? H.lse[i0] * ATT_LOG2E : INFINITY, lse1 = i1 < T ? H.lse[i1] * ATT_LOG2E : INFINITY;
    const float D0 = i0 < T ? H.D[i0] : 0.0f, D1 = i1 < T ? H.D[i1] : 0.0f;
    P::template stage<F, HD>(Qs, H.base + (size_t)q0 * C3, C3, nq);
    P::template stage<F, HD>(Os, H.gbase + (size_t)q0 * C, C, nq);
    __syncthreads();
    uint32_t qa[KS][4], oa[KS][4];
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        P::lda(qa[kk], Qs, LD, wr, kk * P::KSTEP);
        P::lda(oa[kk], Os, LD, wr, kk * P::KSTEP);
    }
    float dq[NT][4];
    att_tc_zero(dq);
    for (int k0 = 0; k0 < kend; k0 += ATT_TC_TILE) {
        const int nk = min(ATT_TC_TILE, kend - k0);
        __syncthreads();
        P::template stage<F, HD>(Ks, H.base + C + (size_t)k0 * C3, C3, nk);
        P::template stage<F, HD>(Vs, H.base + 2 * C + (size_t)k0 * C3, C3, nk);
        __syncthreads();
        if (!active) continue;
#pragma unroll 1
        for (int kc = 0; kc < nk; kc += 32) {  // halves of 32 keys (registers)
            float s[4][4], dp[4][4];
            att_tc_regs_x_tile_t<P>(s, qa, Ks, LD, kc, nk);   // S = Q K^T
            att_tc_regs_x_tile_t<P>(dp, oa, Vs, LD, kc, nk);  // dP = dO V^T
#pragma unroll
            for (int n = 0; n < 4; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int key = k0 + kc + n * 8 + 2 * t + (e & 1);
                    const bool r1 = e >= 2;
                    float p = key < (r1 ? lim1 : lim0) ? exp2f(s[n][e] * a.scale_log2 - (r1 ? lse1 : lse0)) : 0.0f;
                    s[n][e] = p * (dp[n][e] - (r1 ? D1 : D0));  // dS
                }
            att_tc_acc_x_tile<P>(dq, s, Ks, LD, kc, nk);  // dQ += dS K
        }
    }
    if (!active) return;
    F* d0 = i0 < T ? H.dbase + (size_t)i0 * C3 : nullptr;
    F* d1 = i1 < T ? H.dbase + (size_t)i1 * C3 : nullptr;
    att_tc_store_rows<F, NT>(d0, d1, dq, a.scale, a.scale, true);
}

template <typename P, typename F, int HD>
__global__ void __launch_bounds__(ATT_TC_THREADS)
    att_tc_bwd_dkv_kernel(const AttBwdArgs<F> a) {
    using S = typename P::S;
    constexpr int LD = HD + P::PAD, NT = HD / 8, KS = HD / P::KSTEP;
    // K and V are staged in the Q and dO buffers: their fragments go to registers first
    __shared__ __align__(16) S Qs[ATT_TC_TILE * LD], Os[ATT_TC_TILE * LD];
    S *Ks = Qs, *Vs = Os;
    __shared__ float lse_s[ATT_TC_TILE], D_s[ATT_TC_TILE];
    __shared__ int lim_s[ATT_TC_TILE];
    const AttHead<F> H(a, HD);
    const int T = a.T, C = a.C, b = H.b;
    const size_t C3 = H.C3;
    const int k0 = blockIdx.y * ATT_TC_ROWS;
    const int klen = attention_limit(a.lengths, b, T - 1, T, false);  // keys from klen on are padding
    if (k0 >= klen) return;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int nk = min(ATT_TC_ROWS, klen - k0), wr = warp * 16;
    const bool active = wr < nk;
    const int j0 = k0 + wr + g, j1 = j0 + 8;  // this thread's two key rows
    P::template stage<F, HD>(Ks, H.base + C + (size_t)k0 * C3, C3, nk);
    P::template stage<F, HD>(Vs, H.base + 2 * C + (size_t)k0 * C3, C3, nk);
    __syncthreads();
    uint32_t ka[KS][4], va[KS][4];
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        P::lda(ka[kk], Ks, LD, wr, kk * P::KSTEP);
        P::lda(va[kk], Vs, LD, wr, kk * P::KSTEP);
    }
    float dk[NT][4], dv[NT][4];
    att_tc_zero(dk);
    att_tc_zero(dv);
    for (int i0 = a.causal ? k0 : 0; i0 < T; i0 += ATT_TC_TILE) {
        const int ni = min(ATT_TC_TILE, T - i0);
        __syncthreads();
        P::template stage<F, HD>(Qs, H.base + (size_t)i0 * C3, C3, ni);
        P::template stage<F, HD>(Os, H.gbase + (size_t)i0 * C, C, ni);
        for (int r = threadIdx.x; r < ATT_TC_TILE; r += blockDim.x) {
            bool ok = r < ni;
            lse_s[r] = ok ? H.lse[i0 + r] * ATT_LOG2E : INFINITY;
            D_s[r] = ok ? H.D[i0 + r] : 0.0f;
            lim_s[r] = ok ? attention_limit(a.lengths, b, i0 + r, T, a.causal) : 0;
        }
        __syncthreads();
        if (!active) continue;
#pragma unroll 1
        for (int qc = 0; qc < ni; qc += 32) {  // halves of 32 queries (registers)
            float st[4][4], dpt[4][4];  // S^T, dP^T: rows = keys, cols = queries
            att_tc_regs_x_tile_t<P>(st, ka, Qs, LD, qc, ni);   // S^T = K Q^T
            att_tc_regs_x_tile_t<P>(dpt, va, Os, LD, qc, ni);  // dP^T = V dO^T
#pragma unroll
            for (int n = 0; n < 4; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int qi = qc + n * 8 + 2 * t + (e & 1);
                    const int key = e >= 2 ? j1 : j0;
                    float p = key < lim_s[qi] ? exp2f(st[n][e] * a.scale_log2 - lse_s[qi]) : 0.0f;
                    st[n][e] = p;
                    dpt[n][e] = p * (dpt[n][e] - D_s[qi]);  // dS^T
                }
            att_tc_acc_x_tile<P>(dv, st, Os, LD, qc, ni);   // dV += P^T dO
            att_tc_acc_x_tile<P>(dk, dpt, Qs, LD, qc, ni);  // dK += dS^T Q
        }
    }
    if (!active) return;
    F* r0 = j0 < klen ? H.dbase + (size_t)j0 * C3 : nullptr;
    F* r1 = j1 < klen ? H.dbase + (size_t)j1 * C3 : nullptr;
    att_tc_store_rows<F, NT>(r0 ? r0 + C : nullptr, r1 ? r1 + C : nullptr, dk, a.scale, a.scale, true);
    att_tc_store_rows<F, NT>(r0 ? r0 + 2 * C : nullptr, r1 ? r1 + 2 * C : nullptr, dv, 1.0f, 1.0f, true);
}

// P = AttMmaTf32: version 4 of dev/attention.cu (dev/: P = AttMmaBf16 is its version 3). key_bias (B, T)
// or nullptr (the unbiased kernel, BIAS = false)
template <typename P, typename F>
static void att_fwd_tc(F* out, float* lse, const F* qkv, const float* key_bias, const int* lengths, int B, int T, int C,
                       int NH, bool causal) {
    if (B == 0 || T == 0) return;
    const float scale_log2 = ATT_LOG2E / sqrtf((float)(C / NH));
    dim3 grid(B * NH, ceil_div(T, ATT_TC_ROWS));
    if (key_bias)
        ATT_HD_DISPATCH(C / NH, att_tc_fwd_kernel<P, F, HD, true><<<grid, ATT_TC_THREADS, 0, launch_stream()>>>(out, lse, qkv, key_bias, lengths, T, C, NH, causal, scale_log2));
    else
        ATT_HD_DISPATCH(C / NH, att_tc_fwd_kernel<P, F, HD, false><<<grid, ATT_TC_THREADS, 0, launch_stream()>>>(out, lse, qkv, nullptr, lengths, T, C, NH, causal, scale_log2));
    cudaCheckLaunch();
}
template <typename P, typename F>  // no bias (dev/attention.cu's versions)
static void att_fwd_tc(F* out, float* lse, const F* qkv, const int* lengths, int B, int T, int C, int NH, bool causal) {
    att_fwd_tc<P, F>(out, lse, qkv, (const float*)nullptr, lengths, B, T, C, NH, causal);
}
template <typename P, typename F>
static void att_bwd_tc(F* dqkv, float* Dbuf, const F* dout, const F* qkv, const F* out, const float* lse,
                       const int* lengths, int B, int T, int C, int NH, bool causal) {
    if (B == 0 || T == 0) return;
    const float scale = 1.0f / sqrtf((float)(C / NH)), scale_log2 = scale * ATT_LOG2E;
    att_bwd_d(Dbuf, dout, out, B, T, C, NH);
    const AttBwdArgs<F> args{dqkv, dout, qkv, lse, Dbuf, lengths, T, C, NH, causal, scale, scale_log2};
    dim3 grid(B * NH, ceil_div(T, ATT_TC_ROWS));
    ATT_HD_DISPATCH(C / NH, att_tc_bwd_dkv_kernel<P, F, HD><<<grid, ATT_TC_THREADS, 0, launch_stream()>>>(args));
    cudaCheckLaunch();
    ATT_HD_DISPATCH(C / NH, att_tc_bwd_dq_kernel<P, F, HD><<<grid, ATT_TC_THREADS, 0, launch_stream()>>>(args));
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// CUDA entry points: the fused TF32 kernels where they apply, the plain kernels otherwise

// the fused kernels need a compiled head dim and 16-byte aligned tensors (float4 / 8-byte accesses)
static bool attention_fused_ok(int C, int NH, std::initializer_list<const void*> ptrs) {
    int hd = C / NH;
    if (hd * NH != C || (hd != 16 && hd != 32 && hd != 64)) return false;
    for (const void* p : ptrs)
        if ((uintptr_t)p % 16 != 0) return false;
    return true;
}

// key_bias (B, T) float or nullptr (attention_forward_cuda): the fused tensor-core kernel where it
// applies (the bias costs it ~4%; at the ViT's shapes, B 256, C 128, 4 heads, T 50, it is ~20x the
// plain kernel), else the plain one
static void attention_forward_bias_cuda(floatX* out, float* lse, const floatX* qkv, const float* key_bias,
                                        const int* lengths, int B, int T, int C, int NH, bool causal) {
    if ((size_t)B * T * C == 0) return;
    if (attention_fused_ok(C, NH, {out, qkv}))
        att_fwd_tc<AttMmaTf32>(out, lse, qkv, key_bias, lengths, B, T, C, NH, causal);
    else attention_forward_bias_plain_cuda(out, lse, qkv, key_bias, lengths, B, T, C, NH, causal);
}

static void attention_forward_cuda(floatX* out, float* lse, const floatX* qkv, const int* lengths, int B, int T,
                                   int C, int NH, bool causal) {
    attention_forward_bias_cuda(out, lse, qkv, nullptr, lengths, B, T, C, NH, causal);
}

static void attention_backward_cuda(floatX* dqkv, float* D, const floatX* dout, const floatX* qkv, const floatX* out,
                                    const float* lse, const int* lengths, int B, int T, int C, int NH, bool causal) {
    if ((size_t)B * T * C == 0) return;
    if (attention_fused_ok(C, NH, {dqkv, dout, qkv, out}))
        att_bwd_tc<AttMmaTf32>(dqkv, D, dout, qkv, out, lse, lengths, B, T, C, NH, causal);
    else attention_backward_plain_cuda(dqkv, D, dout, qkv, out, lse, lengths, B, T, C, NH, causal);
}
#endif

// ---------------------------------------------------------------------------
// backend wrappers (the convention of common.h): the models call these. On the GPU `lengths` is a
// device pointer.

static void attention_forward(bool on_gpu, floatX* out, float* lse, const floatX* qkv, const int* lengths, int B,
                              int T, int C, int NH, bool causal) {
    if (on_gpu) GPU_CALL(attention_forward_cuda(out, lse, qkv, lengths, B, T, C, NH, causal));
    else attention_forward_cpu(out, lse, qkv, lengths, B, T, C, NH, causal);
}
static void attention_backward(bool on_gpu, floatX* dqkv, float* D, const floatX* dout, const floatX* qkv,
                               const floatX* out, const float* lse, const int* lengths, int B, int T, int C, int NH,
                               bool causal) {
    if (on_gpu) GPU_CALL(attention_backward_cuda(dqkv, D, dout, qkv, out, lse, lengths, B, T, C, NH, causal));
    else attention_backward_cpu(dqkv, D, dout, qkv, out, lse, lengths, B, T, C, NH, causal);
}
// proportional attention (ToMe): key_bias (B, T) on the backend; forward only
static void attention_forward_bias(bool on_gpu, floatX* out, float* lse, const floatX* qkv, const float* key_bias,
                                   const int* lengths, int B, int T, int C, int NH, bool causal) {
    if (on_gpu) GPU_CALL(attention_forward_bias_cuda(out, lse, qkv, key_bias, lengths, B, T, C, NH, causal));
    else attention_forward_bias_cpu(out, lse, qkv, key_bias, lengths, B, T, C, NH, causal);
}
static void attention_step(bool on_gpu, floatX* out, const floatX* q, const floatX* k_cache, const floatX* v_cache,
                           int B, int n, int T_max, int C, int NH) {
    if (on_gpu) GPU_CALL(attention_step_cuda(out, q, k_cache, v_cache, B, n, T_max, C, NH));
    else attention_step_cpu(out, q, k_cache, v_cache, B, n, T_max, C, NH);
}
