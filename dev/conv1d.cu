// dev/conv1d.cu: causal depthwise conv1d (K = 4) fused with SiLU, forward and backward.
//
//   x, out: (B, L, E) token-major; weight: (E, 4); bias: (E)
//   pre[b,t,e] = bias[e] + sum_k weight[e,k] * x[b, t-3+k, e]   (x = 0 at negative t)
//   out = silu(pre)
// Backward (ACCUMULATES like every backward here): given dout, recompute pre,
//   dpre = dout * silu'(pre);  dx[b,t-3+k,e] += w[e,k]*dpre[b,t,e];
//   dweight[e,k] += sum_{b,t} dpre*x[b,t-3+k,e];  dbias[e] += sum_{b,t} dpre
// dweight/dbias are reduced through per-thread/per-block partials plus a second reduction
// kernel (deterministic, no atomics).
//
// ./dev_conv1d      all versions;   ./dev_conv1d N   version N (forward N and backward N)
//   1: naive, one thread per output element (backward: dx per element + a thread per channel
//      looping over all (b,t) for dweight/dbias)
//   2: one thread per (b, channel, chunk of 16 timesteps) with a sliding window in registers
//   3: 16-byte vectors over channels, weights in registers, loads issued before the math
//   4: version 3 with 8-byte vectors (half the channels per thread, fewer registers)
#include "dev_common.h"
#include "../src/activations.h"  // silu_grad_f

#define KW 4  // kernel width; the kernels are written for 4 (Mamba's d_conv)

// ---------------------------------------------------------------------------
// CPU reference

static void conv_fwd_cpu(float* out, const float* x, const float* w, const float* bias, int B, int L,
                         int E) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < L; t++)
            for (int e = 0; e < E; e++) {
                float acc = bias[e];
                for (int k = 0; k < KW; k++) {
                    int tt = t - (KW - 1) + k;
                    if (tt >= 0) acc += w[e * KW + k] * x[((size_t)b * L + tt) * E + e];
                }
                out[((size_t)b * L + t) * E + e] = silu_f(acc);
            }
}

static void conv_bwd_cpu(float* dx, float* dw, float* db, const float* dout, const float* x,
                         const float* w, const float* bias, int B, int L, int E) {
    std::vector<double> dwacc((size_t)E * KW, 0.0), dbacc(E, 0.0);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < L; t++)
            for (int e = 0; e < E; e++) {
                float pre = bias[e];
                for (int k = 0; k < KW; k++) {
                    int tt = t - (KW - 1) + k;
                    if (tt >= 0) pre += w[e * KW + k] * x[((size_t)b * L + tt) * E + e];
                }
                float dp = dout[((size_t)b * L + t) * E + e] * silu_grad_f(pre);
                for (int k = 0; k < KW; k++) {
                    int tt = t - (KW - 1) + k;
                    if (tt < 0) continue;
                    dx[((size_t)b * L + tt) * E + e] += w[e * KW + k] * dp;
                    dwacc[(size_t)e * KW + k] += (double)dp * x[((size_t)b * L + tt) * E + e];
                }
                dbacc[e] += dp;
            }
    for (size_t i = 0; i < dwacc.size(); i++) dw[i] += (float)dwacc[i];
    for (int e = 0; e < E; e++) db[e] += (float)dbacc[e];
}

// ---------------------------------------------------------------------------
// device helpers (silu_f from src/common.h and silu_grad_f from src/activations.h serve the
// CPU reference and the kernels alike)

// N elements of T moved as one N * sizeof(T)-byte access (p aligned to that). Not Packed128:
// versions 3 and 4 are one kernel template over the width, 16 bytes (= Packed128's) and 8 bytes.
template <typename T, int N> struct alignas(N * sizeof(T)) VecT { T v[N]; };
template <typename T, int N> __device__ __forceinline__ VecT<T, N> ldvec(const T* p) {
    return *reinterpret_cast<const VecT<T, N>*>(p);
}
template <typename T, int N> __device__ __forceinline__ void stvec(T* p, const VecT<T, N>& v) {
    *reinterpret_cast<VecT<T, N>*>(p) = v;
}

// Sum per-row partials (rows, 5, E) into dweight (E, 4) / dbias (E): plane k<4 is dweight[:,k],
// plane 4 is dbias. Block (32, 16): 32 consecutive (k,e) entries, 16 threads striding the rows,
// then a shared-memory sum over the 16. Fixed order -> deterministic.
__global__ void conv_reduce_partials_kernel(float* dw, float* db, const float* part, int rows, int E) {
    __shared__ float sm[16][33];
    int idx = blockIdx.x * 32 + threadIdx.x;  // k*E + e
    float s = 0.0f;
    if (idx < 5 * E)
        for (int r = threadIdx.y; r < rows; r += 16) s += part[(size_t)r * 5 * E + idx];
    sm[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && idx < 5 * E) {
        float tot = 0.0f;
        for (int y = 0; y < 16; y++) tot += sm[y][threadIdx.x];
        int k = idx / E, e = idx % E;
        if (k < KW) dw[e * KW + k] += tot;
        else db[e] += tot;
    }
}
static void conv_reduce_partials(float* dw, float* db, const float* part, int rows, int E) {
    conv_reduce_partials_kernel<<<ceil_div(5 * E, 32), dim3(32, 16)>>>(dw, db, part, rows, E);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// version 1: naive. Forward: one thread per output element, 4 loads each (3 of them are
// re-read by the neighbours in time, so L1/L2 absorb most of the redundancy).
// Backward: one thread per dx element recomputing the 4 dpre it needs (16 x loads + 4 dout);
// dweight/dbias: one thread per channel looping over all B*L positions (only E threads:
// deliberately the simple-but-slow baseline for the reduction).

template <typename T>
__global__ void conv_fwd_v1_kernel(T* out, const T* x, const float* w, const float* bias, int B,
                                   int L, int E) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * L * E) return;
    int e = (int)(idx % E);
    int t = (int)((idx / E) % L);
    float acc = bias[e];
    for (int k = 0; k < KW; k++) {
        int back = KW - 1 - k;
        if (t - back >= 0) acc += w[e * KW + k] * to_f32(x[idx - (size_t)back * E]);
    }
    out[idx] = from_f32<T>(silu_f(acc));
}

// dpre at (b, t, e), element offset base = (b*L)*E + e; 0 outside [0, L)
template <typename T>
__device__ __forceinline__ float conv_dpre_at(const T* dout, const T* x, const float* w, float bias,
                                              size_t base, int t, int L, int E, int e) {
    if (t < 0 || t >= L) return 0.0f;
    float pre = bias;
    for (int k = 0; k < KW; k++) {
        int tt = t - (KW - 1) + k;
        if (tt >= 0) pre += w[e * KW + k] * to_f32(x[base + (size_t)tt * E]);
    }
    return to_f32(dout[base + (size_t)t * E]) * silu_grad_f(pre);
}

template <typename T>
__global__ void conv_bwd_v1_dx_kernel(T* dx, const T* dout, const T* x, const float* w,
                                      const float* bias, int B, int L, int E) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * L * E) return;
    int e = (int)(idx % E);
    size_t bt = idx / E;
    int t = (int)(bt % L);
    size_t base = (bt - t) * E + e;
    float acc = 0.0f;
    for (int k = 0; k < KW; k++)  // dx[t] = sum_k w[k] * dpre[t + 3 - k]
        acc += w[e * KW + k] * conv_dpre_at(dout, x, w, bias[e], base, t + (KW - 1) - k, L, E, e);
    dx[idx] = from_f32<T>(to_f32(dx[idx]) + acc);
}

template <typename T>
__global__ void conv_bwd_v1_dw_kernel(float* dw, float* db, const T* dout, const T* x,
                                      const float* w, const float* bias, int B, int L, int E) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= E) return;
    float acc[KW] = {0.0f, 0.0f, 0.0f, 0.0f}, accb = 0.0f;
    for (int b = 0; b < B; b++) {
        size_t base = (size_t)b * L * E + e;
        for (int t = 0; t < L; t++) {
            float dp = conv_dpre_at(dout, x, w, bias[e], base, t, L, E, e);
            for (int k = 0; k < KW; k++) {
                int tt = t - (KW - 1) + k;
                if (tt >= 0) acc[k] += dp * to_f32(x[base + (size_t)tt * E]);
            }
            accb += dp;
        }
    }
    for (int k = 0; k < KW; k++) dw[e * KW + k] += acc[k];
    db[e] += accb;
}

template <typename T>
static void conv_fwd_v1(T* out, const T* x, const float* w, const float* bias, int B, int L, int E) {
    size_t n = (size_t)B * L * E;
    conv_fwd_v1_kernel<<<(unsigned)((n + 255) / 256), 256>>>(out, x, w, bias, B, L, E);
    cudaCheckLaunch();
}
template <typename T>
static void conv_bwd_v1(T* dx, float* dw, float* db, const T* dout, const T* x, const float* w,
                        const float* bias, float* scratch, int B, int L, int E) {
    (void)scratch;
    size_t n = (size_t)B * L * E;
    conv_bwd_v1_dx_kernel<<<(unsigned)((n + 255) / 256), 256>>>(dx, dout, x, w, bias, B, L, E);
    cudaCheckLaunch();
    conv_bwd_v1_dw_kernel<<<ceil_div(E, 64), 64>>>(dw, db, dout, x, w, bias, B, L, E);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// version 2: one thread per (b, channel e, chunk of TT2 timesteps); consecutive threads take
// consecutive channels (coalesced). The last 3 inputs stay in registers, so each x is loaded
// ~once (+3 halo loads per 16 steps) instead of 4 times, and weights are loaded once per chunk.
// Backward: the same sliding window over s in [t0, t0+TT2+3): dpre[s] needs x[s-3..s];
// dx[s-3] = w3*dpre[s-3] + w2*dpre[s-2] + w1*dpre[s-1] + w0*dpre[s] is complete once dpre[s]
// is known. The thread owns dweight/dbias terms of s in [t0, t0+TT2) only (the 3 halo steps
// are recomputed for dx and not counted twice); it writes its partial sums to a (rows, 5, E)
// buffer (one row per (b, chunk)) which conv_reduce_partials sums.

#define TT2 16

template <typename T>
__global__ void conv_fwd_v2_kernel(T* out, const T* x, const float* w, const float* bias, int L,
                                   int E) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= E) return;
    int b = blockIdx.z, t0 = blockIdx.y * TT2;
    size_t base = (size_t)b * L * E + e;
    float w0 = w[e * KW + 0], w1 = w[e * KW + 1], w2 = w[e * KW + 2], w3 = w[e * KW + 3];
    float bi = bias[e];
    float x0 = 0.0f, x1 = 0.0f, x2 = 0.0f;  // x[t-3], x[t-2], x[t-1]
    if (t0 - 3 >= 0) x0 = to_f32(x[base + (size_t)(t0 - 3) * E]);
    if (t0 - 2 >= 0) x1 = to_f32(x[base + (size_t)(t0 - 2) * E]);
    if (t0 - 1 >= 0) x2 = to_f32(x[base + (size_t)(t0 - 1) * E]);
#pragma unroll
    for (int i = 0; i < TT2; i++) {
        int t = t0 + i;
        if (t >= L) break;
        float x3 = to_f32(x[base + (size_t)t * E]);
        float pre = bi + w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3;
        out[base + (size_t)t * E] = from_f32<T>(silu_f(pre));
        x0 = x1; x1 = x2; x2 = x3;
    }
}

template <typename T>
__global__ void conv_bwd_v2_kernel(T* dx, float* part, const T* dout, const T* x, const float* w,
                                   const float* bias, int L, int E) {
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= E) return;
    int b = blockIdx.z, t0 = blockIdx.y * TT2;
    size_t base = (size_t)b * L * E + e;
    float w0 = w[e * KW + 0], w1 = w[e * KW + 1], w2 = w[e * KW + 2], w3 = w[e * KW + 3];
    float bi = bias[e];
    float x0 = 0.0f, x1 = 0.0f, x2 = 0.0f;  // x[s-3], x[s-2], x[s-1]
    if (t0 - 3 >= 0) x0 = to_f32(x[base + (size_t)(t0 - 3) * E]);
    if (t0 - 2 >= 0) x1 = to_f32(x[base + (size_t)(t0 - 2) * E]);
    if (t0 - 1 >= 0) x2 = to_f32(x[base + (size_t)(t0 - 1) * E]);
    float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f;  // dpre[s-3], dpre[s-2], dpre[s-1]
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, ab = 0.0f;  // dweight / dbias partials
#pragma unroll
    for (int i = 0; i < TT2 + KW - 1; i++) {
        int s = t0 + i;
        float x3 = 0.0f, dp = 0.0f;  // zero past the end: contributes nothing
        if (s < L) {
            x3 = to_f32(x[base + (size_t)s * E]);
            float pre = bi + w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3;
            dp = to_f32(dout[base + (size_t)s * E]) * silu_grad_f(pre);
            if (i < TT2) { a0 += dp * x0; a1 += dp * x1; a2 += dp * x2; a3 += dp * x3; ab += dp; }
        }
        int t = s - (KW - 1);
        if (i >= KW - 1 && t < L) {  // t in [t0, t0+TT2)
            size_t o = base + (size_t)t * E;
            dx[o] = from_f32<T>(to_f32(dx[o]) + w3 * d0 + w2 * d1 + w1 * d2 + w0 * dp);
        }
        x0 = x1; x1 = x2; x2 = x3;
        d0 = d1; d1 = d2; d2 = dp;
    }
    size_t row = (size_t)b * gridDim.y + blockIdx.y;
    float* p = part + row * 5 * E + e;
    p[0] = a0; p[E] = a1; p[2 * E] = a2; p[3 * E] = a3; p[4 * E] = ab;
}

template <typename T>
static void conv_fwd_v2(T* out, const T* x, const float* w, const float* bias, int B, int L, int E) {
    dim3 grid(ceil_div(E, 128), ceil_div(L, TT2), B);
    conv_fwd_v2_kernel<<<grid, 128>>>(out, x, w, bias, L, E);
    cudaCheckLaunch();
}
static size_t conv_bwd_v2_rows(int B, int L) { return (size_t)B * ceil_div(L, TT2); }
template <typename T>
static void conv_bwd_v2(T* dx, float* dw, float* db, const T* dout, const T* x, const float* w,
                        const float* bias, float* scratch, int B, int L, int E) {
    dim3 grid(ceil_div(E, 128), ceil_div(L, TT2), B);
    conv_bwd_v2_kernel<<<grid, 128>>>(dx, scratch, dout, x, w, bias, L, E);
    cudaCheckLaunch();
    conv_reduce_partials(dw, db, scratch, (int)conv_bwd_v2_rows(B, L), E);
}

// ---------------------------------------------------------------------------
// version 3: each thread owns NC consecutive channels (one 16-byte access: 4 fp32 / 8 bf16)
// and TT3 timesteps; weights and bias of its channels live in registers. The chunk's loads are
// issued up front (predicated only on the ragged last chunk) so each thread has TT3 16-byte
// loads in flight instead of one. Needs E % NC == 0 (row starts stay 16B aligned); otherwise
// the launcher falls back to version 2.
// Backward: same as v2 per channel, vectorized; block = (32 channel-vectors, TY3 time chunks);
// the TY3 partials are summed in shared memory, so there is one partial row per
// (b, TTB3*TY3 = 64 timesteps) instead of per 16 (partials at the bench shape: v2 15.7 MB,
// here 3.9 MB, written once and read once by the reduce kernel).

#define TT3 8
#define TTB3 16
#define TY3 4

template <typename T, int NC>
__global__ void __launch_bounds__(64) conv_fwd_v3_kernel(T* out, const T* x, const float* w,
                                                         const float* bias, int L, int E) {
    int e0 = (blockIdx.x * blockDim.x + threadIdx.x) * NC;
    if (e0 >= E) return;
    int b = blockIdx.z, t0 = blockIdx.y * TT3;
    size_t base = (size_t)b * L * E + e0;
    float wr[NC][KW], br[NC];
#pragma unroll
    for (int j = 0; j < NC; j++) {  // w + (e0+j)*4 is 16B aligned: one float4 per channel
        float4 w4 = reinterpret_cast<const float4*>(w)[e0 + j];
        wr[j][0] = w4.x; wr[j][1] = w4.y; wr[j][2] = w4.z; wr[j][3] = w4.w;
        br[j] = bias[e0 + j];
    }
    VecT<T, NC> in[TT3 + KW - 1];  // x[t0-3 .. t0+TT3)
#pragma unroll
    for (int i = 0; i < TT3 + KW - 1; i++) {
        int t = t0 - (KW - 1) + i;
        if (t >= 0 && t < L) in[i] = ldvec<T, NC>(x + base + (size_t)t * E);
        else {
#pragma unroll
            for (int j = 0; j < NC; j++) in[i].v[j] = from_f32<T>(0.0f);
        }
    }
#pragma unroll
    for (int i = 0; i < TT3; i++) {
        int t = t0 + i;
        if (t < L) {
            VecT<T, NC> o;
#pragma unroll
            for (int j = 0; j < NC; j++) {
                float pre = br[j];
#pragma unroll
                for (int k = 0; k < KW; k++) pre += wr[j][k] * to_f32(in[i + k].v[j]);
                o.v[j] = from_f32<T>(silu_f(pre));
            }
            stvec<T, NC>(out + base + (size_t)t * E, o);
        }
    }
}

template <typename T, int NC>
__global__ void __launch_bounds__(32 * TY3) conv_bwd_v3_kernel(T* dx, float* part, const T* dout,
                                                               const T* x, const float* w,
                                                               const float* bias, int L, int E) {
    __shared__ float sm[TY3][5][32 * NC];
    int e0 = (blockIdx.x * 32 + threadIdx.x) * NC;
    int b = blockIdx.z, t0 = (blockIdx.y * TY3 + threadIdx.y) * TTB3;
    float acc[5][NC];
#pragma unroll
    for (int k = 0; k < 5; k++)
#pragma unroll
        for (int j = 0; j < NC; j++) acc[k][j] = 0.0f;
    if (e0 < E && t0 < L) {  // no early return: the block meets at __syncthreads below
        size_t base = (size_t)b * L * E + e0;
        float wr[NC][KW], br[NC];
#pragma unroll
        for (int j = 0; j < NC; j++) {
            float4 w4 = reinterpret_cast<const float4*>(w)[e0 + j];
            wr[j][0] = w4.x; wr[j][1] = w4.y; wr[j][2] = w4.z; wr[j][3] = w4.w;
            br[j] = bias[e0 + j];
        }
        float xw[KW - 1][NC], dw[KW - 1][NC];  // x[s-3..s-1], dpre[s-3..s-1]
#pragma unroll
        for (int i = 0; i < KW - 1; i++) {
            int t = t0 - (KW - 1) + i;
            VecT<T, NC> v;
            if (t >= 0) v = ldvec<T, NC>(x + base + (size_t)t * E);
#pragma unroll
            for (int j = 0; j < NC; j++) { xw[i][j] = t >= 0 ? to_f32(v.v[j]) : 0.0f; dw[i][j] = 0.0f; }
        }
#pragma unroll
        for (int i = 0; i < TTB3 + KW - 1; i++) {
            int s = t0 + i;
            float x3[NC], dp[NC];
            if (s < L) {
                VecT<T, NC> xv = ldvec<T, NC>(x + base + (size_t)s * E);
                VecT<T, NC> gv = ldvec<T, NC>(dout + base + (size_t)s * E);
#pragma unroll
                for (int j = 0; j < NC; j++) {
                    x3[j] = to_f32(xv.v[j]);
                    float pre = br[j] + wr[j][0] * xw[0][j] + wr[j][1] * xw[1][j] +
                                wr[j][2] * xw[2][j] + wr[j][3] * x3[j];
                    dp[j] = to_f32(gv.v[j]) * silu_grad_f(pre);
                    if (i < TTB3) {
                        acc[0][j] += dp[j] * xw[0][j];
                        acc[1][j] += dp[j] * xw[1][j];
                        acc[2][j] += dp[j] * xw[2][j];
                        acc[3][j] += dp[j] * x3[j];
                        acc[4][j] += dp[j];
                    }
                }
            } else {
#pragma unroll
                for (int j = 0; j < NC; j++) { x3[j] = 0.0f; dp[j] = 0.0f; }
            }
            int t = s - (KW - 1);
            if (i >= KW - 1 && t < L) {
                size_t o = base + (size_t)t * E;
                VecT<T, NC> dv = ldvec<T, NC>(dx + o);
#pragma unroll
                for (int j = 0; j < NC; j++)
                    dv.v[j] = from_f32<T>(to_f32(dv.v[j]) + wr[j][3] * dw[0][j] + wr[j][2] * dw[1][j] +
                                          wr[j][1] * dw[2][j] + wr[j][0] * dp[j]);
                stvec<T, NC>(dx + o, dv);
            }
#pragma unroll
            for (int j = 0; j < NC; j++) {
                xw[0][j] = xw[1][j]; xw[1][j] = xw[2][j]; xw[2][j] = x3[j];
                dw[0][j] = dw[1][j]; dw[1][j] = dw[2][j]; dw[2][j] = dp[j];
            }
        }
    }
#pragma unroll
    for (int k = 0; k < 5; k++)
#pragma unroll
        for (int j = 0; j < NC; j++) sm[threadIdx.y][k][threadIdx.x * NC + j] = acc[k][j];
    __syncthreads();
    size_t row = (size_t)b * gridDim.y + blockIdx.y;
    int ebase = blockIdx.x * 32 * NC;
    for (int i = threadIdx.y * 32 + threadIdx.x; i < 5 * 32 * NC; i += 32 * TY3) {
        int k = i / (32 * NC), c = i % (32 * NC);
        float s = 0.0f;
#pragma unroll
        for (int y = 0; y < TY3; y++) s += sm[y][k][c];
        if (ebase + c < E) part[(row * 5 + k) * E + ebase + c] = s;
    }
}

// NC = channels per thread: 16/sizeof(T) for version 3 (16-byte accesses); version 4 uses half
// (8-byte accesses) to trade access width for registers: the bf16 backward at NC=8 needs ~180
// registers (18 live floats per channel) -> 8 warps/SM; NC=4 roughly halves that.
template <typename T> static constexpr int conv_nc(int v) { return v == 4 ? 8 / (int)sizeof(T) : 16 / (int)sizeof(T); }

template <typename T, int NC>
static void conv_fwd_vec(T* out, const T* x, const float* w, const float* bias, int B, int L, int E) {
    if (E % NC != 0) { conv_fwd_v2(out, x, w, bias, B, L, E); return; }
    dim3 grid(ceil_div(E / NC, 64), ceil_div(L, TT3), B);
    conv_fwd_v3_kernel<T, NC><<<grid, 64>>>(out, x, w, bias, L, E);
    cudaCheckLaunch();
}
template <typename T, int NC> static size_t conv_bwd_vec_rows(int B, int L, int E) {
    if (E % NC != 0) return conv_bwd_v2_rows(B, L);
    return (size_t)B * ceil_div(L, TTB3 * TY3);
}
template <typename T, int NC>
static void conv_bwd_vec(T* dx, float* dw, float* db, const T* dout, const T* x, const float* w,
                         const float* bias, float* scratch, int B, int L, int E) {
    if (E % NC != 0) { conv_bwd_v2(dx, dw, db, dout, x, w, bias, scratch, B, L, E); return; }
    dim3 grid(ceil_div(E / NC, 32), ceil_div(L, TTB3 * TY3), B);
    conv_bwd_v3_kernel<T, NC><<<grid, dim3(32, TY3)>>>(dx, scratch, dout, x, w, bias, L, E);
    cudaCheckLaunch();
    conv_reduce_partials(dw, db, scratch, (int)conv_bwd_vec_rows<T, NC>(B, L, E), E);
}

// version 4 = version 3's kernels with 8-byte accesses (2 fp32 / 4 bf16 channels per thread),
// selected by conv_nc<T>(4) in the dispatch below.

// ---------------------------------------------------------------------------
// dispatch, validation, benchmark

template <typename T>
static void conv_fwd(int v, T* out, const T* x, const float* w, const float* bias, int B, int L, int E) {
    if (v == 1) conv_fwd_v1(out, x, w, bias, B, L, E);
    else if (v == 2) conv_fwd_v2(out, x, w, bias, B, L, E);
    else if (v == 3) conv_fwd_vec<T, conv_nc<T>(3)>(out, x, w, bias, B, L, E);
    else conv_fwd_vec<T, conv_nc<T>(4)>(out, x, w, bias, B, L, E);
}
template <typename T>
static void conv_bwd(int v, T* dx, float* dw, float* db, const T* dout, const T* x, const float* w,
                     const float* bias, float* scratch, int B, int L, int E) {
    if (v == 1) conv_bwd_v1(dx, dw, db, dout, x, w, bias, scratch, B, L, E);
    else if (v == 2) conv_bwd_v2(dx, dw, db, dout, x, w, bias, scratch, B, L, E);
    else if (v == 3) conv_bwd_vec<T, conv_nc<T>(3)>(dx, dw, db, dout, x, w, bias, scratch, B, L, E);
    else conv_bwd_vec<T, conv_nc<T>(4)>(dx, dw, db, dout, x, w, bias, scratch, B, L, E);
}
template <typename T> static size_t conv_scratch_floats(int B, int L, int E) {
    size_t rows = std::max(conv_bwd_vec_rows<T, conv_nc<T>(3)>(B, L, E), conv_bwd_vec_rows<T, conv_nc<T>(4)>(B, L, E));
    return std::max(conv_bwd_v2_rows(B, L), rows) * 5 * E;
}

struct ConvShape { int B, L, E; };

// validate version v on one shape; fresh random inputs; returns ok, updates worst errors
template <typename T>
static bool conv_validate(int v, ConvShape sh, uint64_t seed, double* wf, double* wb) {
    int B = sh.B, L = sh.L, E = sh.E;
    size_t n = (size_t)B * L * E;
    Rng r; rng_seed(&r, seed);
    std::vector<float> x(n), w((size_t)E * KW), bias(E), dout(n), dx0(n), dw0((size_t)E * KW), db0(E);
    dev_fill_normal(x, 0.0f, 1.0f, &r);
    dev_fill_uniform(w, -0.5f, 0.5f, &r);
    dev_fill_uniform(bias, -0.5f, 0.5f, &r);
    dev_fill_normal(dout, 0.0f, 1.0f, &r);
    dev_fill_uniform(dx0, -1.0f, 1.0f, &r);  // backward accumulates: start from nonzero values
    dev_fill_uniform(dw0, -1.0f, 1.0f, &r);
    dev_fill_uniform(db0, -1.0f, 1.0f, &r);
    dev_round_to<T>(x); dev_round_to<T>(dout); dev_round_to<T>(dx0);
    std::vector<float> out_ref(n), dx_ref = dx0, dw_ref = dw0, db_ref = db0;
    conv_fwd_cpu(out_ref.data(), x.data(), w.data(), bias.data(), B, L, E);
    conv_bwd_cpu(dx_ref.data(), dw_ref.data(), db_ref.data(), dout.data(), x.data(), w.data(),
                 bias.data(), B, L, E);

    T* d_x = dev_upload<T>(x);
    T* d_dout = dev_upload<T>(dout);
    T* d_dx = dev_upload<T>(dx0);
    float* d_w = dev_upload<float>(w);
    float* d_b = dev_upload<float>(bias);
    float* d_dw = dev_upload<float>(dw0);
    float* d_db = dev_upload<float>(db0);
    T* d_out = dev_alloc<T>(n);
    size_t ns = conv_scratch_floats<T>(B, L, E);
    float* d_scratch = dev_alloc<float>(ns);
    dev_poison(d_out, n * sizeof(T));
    dev_poison(d_scratch, ns * sizeof(float));  // every partial that is read must be written

    conv_fwd(v, d_out, d_x, d_w, d_b, B, L, E);
    conv_bwd(v, d_dx, d_dw, d_db, d_dout, d_x, d_w, d_b, d_scratch, B, L, E);
    cudaCheck(cudaDeviceSynchronize());

    bool bf = sizeof(T) == 2;
    char what[128];
    snprintf(what, sizeof what, "conv1d v%d %s fwd out B=%d L=%d E=%d", v, DType<T>::name(), B, L, E);
    bool ok = dev_check_elem(what, d_out, out_ref, bf ? 1e-2 : 1e-5, wf);
    snprintf(what, sizeof what, "conv1d v%d %s bwd dx B=%d L=%d E=%d", v, DType<T>::name(), B, L, E);
    ok &= dev_check_elem(what, d_dx, dx_ref, bf ? 1e-2 : 1e-5, wb);
    snprintf(what, sizeof what, "conv1d v%d %s bwd dweight B=%d L=%d E=%d", v, DType<T>::name(), B, L, E);
    ok &= dev_check_elem(what, d_dw, dw_ref, 1e-4, wb);
    snprintf(what, sizeof what, "conv1d v%d %s bwd dbias B=%d L=%d E=%d", v, DType<T>::name(), B, L, E);
    ok &= dev_check_elem(what, d_db, db_ref, 1e-4, wb);

    dev_free(d_x); dev_free(d_dout); dev_free(d_dx); dev_free(d_w); dev_free(d_b);
    dev_free(d_dw); dev_free(d_db); dev_free(d_out); dev_free(d_scratch);
    return ok;
}

static const char* conv_version_name(int v) {
    return v == 1 ? "1 naive" : v == 2 ? "2 sliding window" : v == 3 ? "3 vec16 + w in regs" : "4 = 3 with vec8";
}

template <typename T> static void conv_run_version(int v) {
    const ConvShape shapes[] = {{1, 1, 37}, {2, 1, 40}, {3, 7, 37}, {2, 7, 72}, {2, 37, 100},
                                {1, 300, 72}, {2, 1000, 1536}, {8, 1024, 1536}};
    double wf = 0.0, wb = 0.0;
    bool ok = true;
    uint64_t seed = 1000 + v;
    for (const ConvShape& s : shapes) ok &= conv_validate<T>(v, s, seed++, &wf, &wb);

    // benchmark: mamba-130m, d_inner 1536, B=8, L=1024
    const int B = 8, L = 1024, E = 1536;
    size_t n = (size_t)B * L * E;
    Rng r; rng_seed(&r, 77);
    std::vector<float> hx(n), hw((size_t)E * KW), hb(E);
    dev_fill_normal(hx, 0.0f, 1.0f, &r);
    dev_fill_uniform(hw, -0.5f, 0.5f, &r);
    dev_fill_uniform(hb, -0.5f, 0.5f, &r);
    T* x = dev_upload<T>(hx);
    T* dout = dev_upload<T>(hx);
    T* dx = dev_upload<T>(hx);
    T* out = dev_alloc<T>(n);
    float* w = dev_upload<float>(hw);
    float* bias = dev_upload<float>(hb);
    float* dw = dev_upload<float>(hw);
    float* db = dev_upload<float>(hb);
    float* scratch = dev_alloc<float>(conv_scratch_floats<T>(B, L, E));

    char shape[64];
    snprintf(shape, sizeof shape, "B=%d L=%d E=%d", B, L, E);
    char ver[64];
    snprintf(ver, sizeof ver, "%s", conv_version_name(v));
    float ms = dev_bench_ms([&](int) { conv_fwd(v, out, x, w, bias, B, L, E); });
    // floor bytes: read x + write out (params negligible); sfu: exp + rcp per element
    dev_print_row("conv1d_silu fwd", ver, shape, DType<T>::name(), ms, 2.0 * n * sizeof(T),
                  2.0 * n, ok, wf);
    ms = dev_bench_ms([&](int) { conv_bwd(v, dx, dw, db, dout, x, w, bias, scratch, B, L, E); });
    // floor bytes: read x, dout; read + write dx (it accumulates); sfu: exp + rcp per element
    dev_print_row("conv1d_silu bwd", ver, shape, DType<T>::name(), ms, 4.0 * n * sizeof(T),
                  2.0 * n, ok, wb);
    dev_free(x); dev_free(dout); dev_free(dx); dev_free(out); dev_free(w); dev_free(bias);
    dev_free(dw); dev_free(db); dev_free(scratch);
}

int main(int argc, char** argv) {
    dev_print_header();
    for (int v = 1; v <= 4; v++) {
        if (!dev_want_version(argc, argv, v)) continue;
        conv_run_version<float>(v);
        conv_run_version<bf16>(v);
    }
    return dev_finish();
}
