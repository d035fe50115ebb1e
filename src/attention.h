// attention.h: multi-head scaled dot-product attention, the plain (materialized) version,
// and the one-token decode step over a KV cache.
//
//   qkv: (B, T, 3C), each row [q (C) | k (C) | v (C)]; head h uses columns [h*hd, (h+1)*hd) of
//        each part, hd = C / NH
//   out: (B, T, C), heads concatenated;  att: (B, NH, T, T) the softmax probabilities (saved for
//        the backward)
//   s_ij = scale * q_i . k_j,  scale = 1/sqrt(hd)
//   att_ij = exp(s_ij - max_j s) / sum_j exp(s_ij - max_j s) over the visible keys j, 0 elsewhere
//   out_i = sum_j att_ij v_j
// Visible keys: causal: j <= i; lengths (B) or nullptr: keys j >= lengths[b] are padding and masked
// out. Both masks keep a prefix, so the keys query i sees are j < lim(b, i) = min(lengths[b], i + 1
// if causal). A row with lim = 0 outputs 0 and its att row is 0.
// Backward, with dS the gradient of the scores s (zero where att is zero):
//   dv_j += sum_i att_ij dout_i
//   dS_ij = att_ij (dout_i . v_j - sum_k att_ik dout_i . v_k)
//   dq_i += scale * sum_j dS_ij k_j,   dk_j += scale * sum_i dS_ij q_i
// The backward keeps dS (B, NH, T, T) in scratch: malloc'd per call on the CPU, a device buffer
// cached for the process (grown on demand) on the GPU. Both backends are deterministic: every
// output element is summed by one thread in a fixed order.
#pragma once
#include "common.h"

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
// lim on), out = sum_j p_j v_j.  q, out: (hd); key/value j at k, v + j*kv_stride
static void attention_row_cpu(floatX* out, float* p, const floatX* q, const floatX* k, const floatX* v,
                              size_t kv_stride, int lim, int len, int hd, float scale) {
    float mx = -INFINITY;
    for (int j = 0; j < lim; j++) {
        p[j] = scale * attention_dot_cpu(q, k + (size_t)j * kv_stride, hd);
        mx = p[j] > mx ? p[j] : mx;
    }
    float sum = 0.0f;
    for (int j = 0; j < lim; j++) { p[j] = expf(p[j] - mx); sum += p[j]; }
    float inv = lim > 0 ? 1.0f / sum : 0.0f;
    for (int j = 0; j < len; j++) p[j] = j < lim ? p[j] * inv : 0.0f;
    attention_accum_rows_cpu(out, p, 1, v, kv_stride, lim, hd, 1.0f, false);
}

static void attention_forward_cpu(floatX* out, float* att, const floatX* qkv, const int* lengths, int B, int T,
                                  int C, int NH, bool causal) {
    int hd = C / NH;
    float scale = 1.0f / sqrtf((float)hd);
    size_t C3 = (size_t)3 * C;
#pragma omp parallel for collapse(3)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                const floatX* base = qkv + (size_t)b * T * C3 + (size_t)h * hd;
                attention_row_cpu(out + ((size_t)b * T + i) * C + (size_t)h * hd,
                                  att + (((size_t)b * NH + h) * T + i) * T, base + i * C3, base + C, base + 2 * C,
                                  C3, attention_limit(lengths, b, i, T, causal), T, hd, scale);
            }
}

static void attention_backward_cpu(floatX* dqkv, const floatX* dout, const floatX* qkv, const float* att,
                                   const int* lengths, int B, int T, int C, int NH, bool causal) {
    int hd = C / NH;
    float scale = 1.0f / sqrtf((float)hd);
    size_t C3 = (size_t)3 * C;
    float* dS = (float*)malloc_check((size_t)B * NH * T * T * sizeof(float));
    // rows: dS_i (its visible prefix) and dq_i
#pragma omp parallel for collapse(3)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                int lim = attention_limit(lengths, b, i, T, causal);
                size_t row = (((size_t)b * NH + h) * T + i) * T;
                const float* a = att + row;
                float* ds = dS + row;
                const floatX* base = qkv + (size_t)b * T * C3 + (size_t)h * hd;
                const floatX* g = dout + ((size_t)b * T + i) * C + (size_t)h * hd;
                float dot = 0.0f;  // sum_k att_ik dout_i . v_k
                for (int j = 0; j < lim; j++) {
                    ds[j] = attention_dot_cpu(g, base + 2 * C + j * C3, hd);
                    dot += a[j] * ds[j];
                }
                for (int j = 0; j < lim; j++) ds[j] = a[j] * (ds[j] - dot);
                attention_accum_rows_cpu(dqkv + ((size_t)b * T + i) * C3 + (size_t)h * hd, ds, 1, base + C, C3, lim,
                                         hd, scale, true);
            }
    // columns: key j is seen by the queries i in [j if causal else 0, T), unless it is padding
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
                attention_accum_rows_cpu(drow + 2 * C, att + col, T, dout + ((size_t)b * T + i0) * C + (size_t)h * hd,
                                         C, T - i0, hd, 1.0f, true);
            }
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
__device__ __forceinline__ float attention_warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}
__device__ __forceinline__ float attention_warp_max(float v) {
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}
__device__ __forceinline__ float attention_dot_dev(const floatX* a, const floatX* b, int n) {
    float s = 0.0f;
    for (int d = 0; d < n; d++) s += to_f32(a[d]) * to_f32(b[d]);
    return s;
}

// The whole warp computes one query row (attention_row_cpu): lanes stride over the keys for the
// scores and the softmax, then over the channels for out = sum_j p_j v_j.
__device__ void attention_row_warp(floatX* out, float* p, const floatX* q, const floatX* k, const floatX* v,
                                   size_t kv_stride, int lim, int len, int hd, float scale) {
    int lane = threadIdx.x % 32;
    float mx = -INFINITY;
    for (int j = lane; j < lim; j += 32) {
        float s = scale * attention_dot_dev(q, k + (size_t)j * kv_stride, hd);
        p[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = attention_warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j < lim; j += 32) { float e = expf(p[j] - mx); p[j] = e; sum += e; }
    sum = attention_warp_sum(sum);
    float inv = lim > 0 ? 1.0f / sum : 0.0f;
    for (int j = lane; j < len; j += 32) p[j] = j < lim ? p[j] * inv : 0.0f;
    __syncwarp();  // every lane reads every p_j below
    for (int d = lane; d < hd; d += 32) {
        float acc = 0.0f;
        for (int j = 0; j < lim; j++) acc += p[j] * to_f32(v[(size_t)j * kv_stride + d]);
        out[d] = from_f32<floatX>(acc);
    }
}

// one warp per (b, h, i) row
__global__ void attention_forward_kernel(floatX* out, float* att, const floatX* qkv, const int* lengths, int B,
                                         int T, int C, int NH, bool causal, float scale) {
    size_t r = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;  // ((b*NH + h)*T + i)
    if (r >= (size_t)B * NH * T) return;
    int i = (int)(r % T), h = (int)(r / T % NH), b = (int)(r / T / NH);
    int hd = C / NH;
    size_t C3 = (size_t)3 * C;
    const floatX* base = qkv + (size_t)b * T * C3 + (size_t)h * hd;
    attention_row_warp(out + ((size_t)b * T + i) * C + (size_t)h * hd, att + r * T, base + i * C3, base + C,
                       base + 2 * C, C3, attention_limit(lengths, b, i, T, causal), T, hd, scale);
}

// one warp per (b, h, i) row: dS_i (visible prefix) into scratch, then dq_i += scale * sum_j dS_ij k_j
__global__ void attention_backward_rows_kernel(floatX* dqkv, float* dS, const floatX* dout, const floatX* qkv,
                                               const float* att, const int* lengths, int B, int T, int C, int NH,
                                               bool causal, float scale) {
    size_t r = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= (size_t)B * NH * T) return;
    int lane = threadIdx.x % 32;
    int i = (int)(r % T), h = (int)(r / T % NH), b = (int)(r / T / NH);
    int hd = C / NH;
    size_t C3 = (size_t)3 * C;
    int lim = attention_limit(lengths, b, i, T, causal);
    const float* a = att + r * T;
    float* ds = dS + r * T;
    const floatX* base = qkv + (size_t)b * T * C3 + (size_t)h * hd;
    const floatX* g = dout + ((size_t)b * T + i) * C + (size_t)h * hd;
    float dot = 0.0f;
    for (int j = lane; j < lim; j += 32) {
        float da = attention_dot_dev(g, base + 2 * C + j * C3, hd);
        ds[j] = da;
        dot += a[j] * da;
    }
    dot = attention_warp_sum(dot);
    for (int j = lane; j < lim; j += 32) ds[j] = a[j] * (ds[j] - dot);
    __syncwarp();
    floatX* dq = dqkv + ((size_t)b * T + i) * C3 + (size_t)h * hd;
    for (int d = lane; d < hd; d += 32) {
        float acc = 0.0f;
        for (int j = 0; j < lim; j++) acc += ds[j] * to_f32(base[C + j * C3 + d]);
        dq[d] = from_f32<floatX>(to_f32(dq[d]) + scale * acc);
    }
}

// one thread per (b, j, c): dk_j += scale * sum_i dS_ij q_i, dv_j += sum_i att_ij dout_i over the
// queries that see key j
__global__ void attention_backward_cols_kernel(floatX* dqkv, const float* dS, const floatX* dout, const floatX* qkv,
                                               const float* att, const int* lengths, int B, int T, int C, int NH,
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
        dv += att[col + (size_t)i * T] * to_f32(dout[((size_t)b * T + i) * C + c]);
    }
    floatX* drow = dqkv + ((size_t)b * T + j) * C3;
    drow[C + c] = from_f32<floatX>(to_f32(drow[C + c]) + scale * dk);
    drow[2 * C + c] = from_f32<floatX>(to_f32(drow[2 * C + c]) + dv);
}

// one warp (block of 32) per (b, h)
__global__ void attention_step_kernel(floatX* out, float* p, const floatX* q, const floatX* k_cache,
                                      const floatX* v_cache, int n, int T_max, int C, int NH, float scale) {
    int b = blockIdx.x / NH, h = blockIdx.x % NH;
    int hd = C / NH;
    size_t off = (size_t)b * T_max * C + (size_t)h * hd;
    attention_row_warp(out + (size_t)b * C + (size_t)h * hd, p + (size_t)blockIdx.x * n, q + (size_t)b * C + (size_t)h * hd,
                       k_cache + off, v_cache + off, C, n, n, hd, scale);
}

// a device buffer of at least `floats` floats, kept for the process and grown on demand
static float* attention_scratch(size_t floats) {
    static float* buf = nullptr;
    static size_t cap = 0;
    if (floats > cap) {
        if (buf) cudaCheck(cudaFree(buf));  // cudaFree waits for the device: no kernel still reads it
        cudaCheck(cudaMalloc(&buf, floats * sizeof(float)));
        cap = floats;
    }
    return buf;
}

static void attention_forward_cuda(floatX* out, float* att, const floatX* qkv, const int* lengths, int B, int T,
                                   int C, int NH, bool causal) {
    size_t rows = (size_t)B * NH * T;
    if (rows == 0) return;
    const int block = 256, warps = block / 32;
    float scale = 1.0f / sqrtf((float)(C / NH));
    attention_forward_kernel<<<(unsigned)((rows + warps - 1) / warps), block>>>(out, att, qkv, lengths, B, T, C, NH,
                                                                               causal, scale);
    cudaCheckLaunch();
}

static void attention_backward_cuda(floatX* dqkv, const floatX* dout, const floatX* qkv, const float* att,
                                    const int* lengths, int B, int T, int C, int NH, bool causal) {
    size_t rows = (size_t)B * NH * T;
    if (rows == 0 || C == 0) return;
    const int block = 256, warps = block / 32;
    float scale = 1.0f / sqrtf((float)(C / NH));
    float* dS = attention_scratch(rows * T);
    attention_backward_rows_kernel<<<(unsigned)((rows + warps - 1) / warps), block>>>(
        dqkv, dS, dout, qkv, att, lengths, B, T, C, NH, causal, scale);
    cudaCheckLaunch();
    size_t n = (size_t)B * T * C;
    attention_backward_cols_kernel<<<(unsigned)((n + block - 1) / block), block>>>(dqkv, dS, dout, qkv, att, lengths,
                                                                                  B, T, C, NH, causal, scale);
    cudaCheckLaunch();
}

// the probabilities go to the same cached scratch as the backward's dS
static void attention_step_cuda(floatX* out, const floatX* q, const floatX* k_cache, const floatX* v_cache, int B,
                                int n, int T_max, int C, int NH) {
    if (B == 0) return;
    float scale = 1.0f / sqrtf((float)(C / NH));
    float* p = attention_scratch((size_t)B * NH * (n > 0 ? n : 1));
    attention_step_kernel<<<B * NH, 32>>>(out, p, q, k_cache, v_cache, n, T_max, C, NH, scale);
    cudaCheckLaunch();
}
#endif

// ---------------------------------------------------------------------------
// backend wrappers (the convention of common.h): the models call these. On the GPU `lengths` is a
// device pointer.

static void attention_forward(bool on_gpu, floatX* out, float* att, const floatX* qkv, const int* lengths, int B,
                              int T, int C, int NH, bool causal) {
    if (on_gpu) GPU_CALL(attention_forward_cuda(out, att, qkv, lengths, B, T, C, NH, causal));
    else attention_forward_cpu(out, att, qkv, lengths, B, T, C, NH, causal);
}
static void attention_backward(bool on_gpu, floatX* dqkv, const floatX* dout, const floatX* qkv, const float* att,
                               const int* lengths, int B, int T, int C, int NH, bool causal) {
    if (on_gpu) GPU_CALL(attention_backward_cuda(dqkv, dout, qkv, att, lengths, B, T, C, NH, causal));
    else attention_backward_cpu(dqkv, dout, qkv, att, lengths, B, T, C, NH, causal);
}
static void attention_step(bool on_gpu, floatX* out, const floatX* q, const floatX* k_cache, const floatX* v_cache,
                           int B, int n, int T_max, int C, int NH) {
    if (on_gpu) GPU_CALL(attention_step_cuda(out, q, k_cache, v_cache, B, n, T_max, C, NH));
    else attention_step_cpu(out, q, k_cache, v_cache, B, n, T_max, C, NH);
}
