// conv1d.h: depthwise causal conv along time with bias (Mamba's short conv).
//   out[b,t,e] = bias[e] + sum_{k<K} weight[e,k] * x[b, t-(K-1)+k, e]   (x = 0 at negative times)
#pragma once
#include "common.h"
#include "activations.h"  // the fused conv1d + SiLU

// x, out: (B, L, E); weight: (E, K); bias: (E)
static void conv1d_forward_cpu(floatX* out, const floatX* x, const float* weight, const float* bias,
                               int B, int L, int E, int K) {
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < L; t++) {
            floatX* o = out + ((size_t)b * L + t) * E;
            for (int e = 0; e < E; e++) {
                float s = bias[e];
                for (int k = 0; k < K; k++) {
                    int ts = t - (K - 1) + k;
                    if (ts >= 0) s += weight[e * K + k] * (float)x[((size_t)b * L + ts) * E + e];
                }
                o[e] = (floatX)s;
            }
        }
}

// dx[b,s,e] += sum_k weight[e,k] * dout[b, s+(K-1)-k, e]  (terms with time < L; = under GRAD_SET)
// dweight[e,k] += sum_{b,t} dout[b,t,e] * x[b,t-(K-1)+k,e];  dbias[e] += sum_{b,t} dout[b,t,e]
// Threads split the channels, not the rows: a channel's dweight/dbias are summed by one thread
// in (b, t) order, so the result is the same bits for any number of threads.
// dweight and/or dbias may be nullptr (frozen): that gradient is neither computed nor written.
static void conv1d_backward_cpu(floatX* dx, float* dweight, float* dbias, const floatX* dout,
                                const floatX* x, const float* weight, int B, int L, int E, int K,
                                GradWrite dx_write = GRAD_ADD) {
    const int EB = 16;  // channels per task: a 64-byte line of each fp32 row, no false sharing on dx
    const bool want_w = dweight != nullptr, want_b = dbias != nullptr;
#pragma omp parallel for schedule(static)
    for (int e0 = 0; e0 < E; e0 += EB) {
        int e1 = e0 + EB < E ? e0 + EB : E;
        // sums over (b, t) from zero, added to the gradients once at the end
        std::vector<float> dw((size_t)(e1 - e0) * K, 0.0f), db(e1 - e0, 0.0f);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < L; t++) {
                size_t row = ((size_t)b * L + t) * E;
                for (int e = e0; e < e1; e++) {
                    float g = (float)dout[row + e];
                    if (want_b) db[e - e0] += g;
                    float s = 0.0f;
                    for (int k = 0; k < K; k++) {
                        int ts = t - (K - 1) + k;  // input time feeding output t through tap k
                        if (want_w && ts >= 0) dw[(size_t)(e - e0) * K + k] += g * (float)x[((size_t)b * L + ts) * E + e];
                        int to = t + (K - 1) - k;  // output time that input t feeds through tap k
                        if (to < L) s += weight[e * K + k] * (float)dout[((size_t)b * L + to) * E + e];
                    }
                    dx[row + e] = (floatX)(dx_write == GRAD_SET ? s : (float)dx[row + e] + s);
                }
            }
        for (int e = e0; e < e1; e++) {
            if (want_w)
                for (int k = 0; k < K; k++) dweight[e * K + k] += dw[(size_t)(e - e0) * K + k];
            if (want_b) dbias[e] += db[e - e0];
        }
    }
}

// One channel of the causal conv's recurrent step (generation), written once for every step in the
// framework (this CPU step, Mamba-2's step prologue, the decoder's conv kernel and its GEMV epilogue):
//   out = bias + sum_{k < K} w[k] window[k],  window = [state[0], ..., state[K-2], x]
// summed in conv1d_forward_cpu's order (oldest input first), so the step gives the forward's bits;
// and the state, the last K-1 inputs oldest first, shifted by one into new_state (new_state[K-2] = x;
// new_state may be state: in place). KMAX > 0 unrolls the loops to KMAX taps (K <= KMAX), so that
// arrays the caller holds in registers are only indexed by constants. (Picking w[K-1] out by a loop of
// `if (k == K - 1)` was folded back into a run-time index, which put the decode GEMV's registers in a
// 40-byte stack frame and its step 3% slower.)
template <int KMAX = 0>
HOST_DEVICE float conv1d_step_channel(float* new_state, const float* state, const float* w, float bias, float x, int K) {
    float sum = bias;
#pragma unroll
    for (int k = 0; k < (KMAX > 0 ? KMAX : K); k++)
        if (k < K) sum += w[k] * (k < K - 1 ? state[k] : x);
#pragma unroll
    for (int k = 0; k < (KMAX > 0 ? KMAX - 1 : K - 1); k++)  // shift out the oldest (in place: state[k + 1] is read first)
        if (k < K - 1) new_state[k] = k + 1 < K - 1 ? state[k + 1] : x;
    return sum;
}

// one recurrent step for generation: x: (B, E) new input; state: (B, E, K-1) the
// last K-1 inputs (oldest first), updated in place; out: (B, E)
static void conv1d_step_cpu(float* out, float* state, const float* x, const float* weight, const float* bias,
                            int B, int E, int K) {
    for (int b = 0; b < B; b++)
        for (int e = 0; e < E; e++) {
            float* st = state + ((size_t)b * E + e) * (K - 1);
            out[(size_t)b * E + e] = conv1d_step_channel(st, st, weight + (size_t)e * K, bias[e], x[(size_t)b * E + e], K);
        }
}

// Fused conv1d + SiLU (Mamba's x = silu(conv1d(x))). The CUDA version never stores the
// pre-activation; this reference is simply the two plain CPU functions in a row.
// x, out: (B, L, E); weight (E, K); bias (E)
static void conv1d_silu_forward_cpu(floatX* out, const floatX* x, const float* weight, const float* bias,
                                    int B, int L, int E, int K) {
    conv1d_forward_cpu(out, x, weight, bias, B, L, E, K);
    silu_forward_cpu(out, out, (size_t)B * L * E);  // in place: elementwise
}

// Recomputes the pre-activation pre = conv1d(x) (the forward does not keep it), then
// dpre = dout * silu'(pre) and the plain conv1d backward with dpre as the upstream gradient.
// dweight and/or dbias may be nullptr (frozen), as in conv1d_backward_cpu.
static void conv1d_silu_backward_cpu(floatX* dx, float* dweight, float* dbias, const floatX* dout,
                                     const floatX* x, const float* weight, const float* bias,
                                     int B, int L, int E, int K, GradWrite dx_write = GRAD_ADD) {
    size_t n = (size_t)B * L * E;
    std::vector<floatX> dpre(n);  // (B, L, E): first the pre-activation, then its gradient in place
    conv1d_forward_cpu(dpre.data(), x, weight, bias, B, L, E, K);
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) dpre[i] = (floatX)((float)dout[i] * silu_grad_f((float)dpre[i]));
    conv1d_backward_cpu(dx, dweight, dbias, dpre.data(), x, weight, B, L, E, K, dx_write);
}

#ifdef __CUDACC__
#define CONV1D_MAX_K 16
// one thread per (b,t,e); consecutive threads take consecutive channels (coalesced)
__global__ void conv1d_forward_kernel(floatX* out, const floatX* x, const float* weight, const float* bias,
                                      int B, int L, int E, int K) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * L * E) return;
    int e = (int)(idx % E);
    size_t bt = idx / E;
    int t = (int)(bt % L);
    float s = bias[e];
    for (int k = 0; k < K; k++) {
        int ts = t - (K - 1) + k;
        if (ts >= 0) s += weight[e * K + k] * (float)x[idx - (size_t)(t - ts) * E];
    }
    out[idx] = (floatX)s;
}

// dx: one thread per (b,t,e)
__global__ void conv1d_backward_dx_kernel(floatX* dx, const floatX* dout, const float* weight,
                                          int B, int L, int E, int K) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * L * E) return;
    int e = (int)(idx % E);
    int t = (int)((idx / E) % L);
    float s = 0.0f;
    for (int k = 0; k < K; k++) {
        int to = t + (K - 1) - k;
        if (to < L) s += weight[e * K + k] * (float)dout[idx + (size_t)(to - t) * E];
    }
    dx[idx] = (floatX)((float)dx[idx] + s);
}

// The end of both dweight/dbias kernels, blocks of (32 channels, 8 row groups):
// each thread's sums acc[0..K) (taps) and acc[CONV1D_MAX_K] (bias) are added over
// the 8 row groups in shared memory, then one atomicAdd per (channel, tap) per block;
// a nullptr dweight or dbias is skipped (the launchers skip the kernel when both are)
__device__ __forceinline__ void conv1d_reduce_dw(float* dweight, float* dbias, const float* acc, int e, int E, int K) {
    __shared__ float part[8][CONV1D_MAX_K + 1][32];
#pragma unroll
    for (int k = 0; k <= CONV1D_MAX_K; k++) part[threadIdx.y][k][threadIdx.x] = acc[k];
    __syncthreads();
    if (threadIdx.y == 0 && e < E) {
        for (int k = 0; k < K; k++) {
            float s = 0.0f;
            for (int y = 0; y < 8; y++) s += part[y][k][threadIdx.x];
            if (dweight) atomicAdd(&dweight[e * K + k], s);
        }
        float s = 0.0f;
        for (int y = 0; y < 8; y++) s += part[y][CONV1D_MAX_K][threadIdx.x];
        if (dbias) atomicAdd(&dbias[e], s);
    }
}

// dweight/dbias: block (32, 8) covers 32 channels (x) and a chunk of rows (b,t) strided
// by y; each thread sums in registers, then conv1d_reduce_dw.
__global__ void conv1d_backward_dw_kernel(float* dweight, float* dbias, const floatX* dout, const floatX* x,
                                          int B, int L, int E, int K, int rows_per_block) {
    int e = blockIdx.x * 32 + threadIdx.x;
    int r0 = blockIdx.y * rows_per_block;
    int r1 = min(B * L, r0 + rows_per_block);
    float acc[CONV1D_MAX_K + 1];
#pragma unroll
    for (int k = 0; k <= CONV1D_MAX_K; k++) acc[k] = 0.0f;
    if (e < E) {
        for (int r = r0 + threadIdx.y; r < r1; r += 8) {
            int t = r % L;
            float g = (float)dout[(size_t)r * E + e];
            acc[CONV1D_MAX_K] += g;  // bias slot
#pragma unroll
            for (int k = 0; k < CONV1D_MAX_K; k++) {
                if (k >= K) break;
                int ts = t - (K - 1) + k;
                if (ts >= 0) acc[k] += g * (float)x[((size_t)r - (t - ts)) * E + e];
            }
        }
    }
    conv1d_reduce_dw(dweight, dbias, acc, e, E, K);
}

static void conv1d_forward_cuda(floatX* out, const floatX* x, const float* weight, const float* bias,
                                int B, int L, int E, int K) {
    size_t n = (size_t)B * L * E;
    if (n == 0) return;
    conv1d_forward_kernel<<<(unsigned)((n + 255) / 256), 256, 0, launch_stream()>>>(out, x, weight, bias, B, L, E, K);
    cudaCheckLaunch();
}

static void conv1d_backward_cuda(floatX* dx, float* dweight, float* dbias, const floatX* dout,
                                 const floatX* x, const float* weight, int B, int L, int E, int K) {
    size_t n = (size_t)B * L * E;
    if (n == 0) return;
    if (K > CONV1D_MAX_K) FATAL("conv1d_backward_cuda: K=%d > %d", K, CONV1D_MAX_K);
    conv1d_backward_dx_kernel<<<(unsigned)((n + 255) / 256), 256, 0, launch_stream()>>>(dx, dout, weight, B, L, E, K);
    cudaCheckLaunch();
    if (!dweight && !dbias) return;  // both frozen
    const int rows_per_block = 256;
    dim3 grid(ceil_div(E, 32), ceil_div(B * L, rows_per_block));
    conv1d_backward_dw_kernel<<<grid, dim3(32, 8), 0, launch_stream()>>>(dweight, dbias, dout, x, B, L, E, K, rows_per_block);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// fused conv1d + SiLU (dev/conv1d.cu version 4; its design and measurements are in
// dev/notes_kernels.md). Each thread owns NC consecutive channels (one 8-byte access: 2 fp32 /
// 4 bf16) and a chunk of timesteps; the weights and bias of its channels live in registers and
// the last K-1 inputs slide through registers, so every x is loaded about once. K is a template
// parameter (Mamba uses 4); other K, and E or pointers that do not allow the vector width, use
// NC = 1 or the generic per-element kernels below.
#define CSILU_TT 8    // forward: timesteps per thread (their loads are issued up front)
#define CSILU_TTB 16  // backward: timesteps per thread
#define CSILU_TY 4    // backward: threads per block along time (block = 32 x CSILU_TY)

// NC consecutive channels of one timestep, moved as one access of NC * sizeof(T) bytes.
// Not Packed128 (16 bytes): 8-byte accesses give each thread half the channels, so the bf16
// backward needs about half the registers and runs more warps per SM (dev/conv1d.cu version 4
// vs 3, measured in dev/notes_kernels.md); NC = 1 is the fallback for any E and alignment.
// T: the activations' type (fp32, or bf16 under --matmul bf16); weights and sums are fp32.
template <typename T, int NC> struct alignas(NC * sizeof(T)) ConvChannels { T v[NC]; };
template <int NC, typename T> __device__ __forceinline__ ConvChannels<T, NC> load_channels(const T* p) {
    return *reinterpret_cast<const ConvChannels<T, NC>*>(p);
}
template <int NC, typename T> __device__ __forceinline__ void store_channels(T* p, const ConvChannels<T, NC>& v) {
    *reinterpret_cast<ConvChannels<T, NC>*>(p) = v;
}

// The fused kernels' output (forward) or output gradient (backward) as a (B, L, E) tensor whose
// columns may live in three tensors: [0, w0) in a (rows of w0), [w0, w0 + w1) in b (rows of w1),
// [w0 + w1, E) in c (rows of E - w0 - w1). Mamba-2's conv writes the SSD's x, B and C (and reads their
// gradients) this way instead of through a (B, L, C) copy split or concatenated by another pass. One
// tensor: {p, nullptr, nullptr, E, 0}. A thread's NC channels lie in one part (w0, w1 multiples of NC).
template <typename T> struct ConvCols {
    T* a; T* b; T* c; int w0, w1;
    // the part holding channel e: its element (row 0, e) and its row length
    __host__ __device__ __forceinline__ T* col(int e, int E, size_t* row_len) const {
        if (e < w0) { *row_len = w0; return a + e; }
        if (e < w0 + w1) { *row_len = w1; return b + (e - w0); }
        *row_len = E - w0 - w1;
        return c + (e - w0 - w1);
    }
};
template <typename T> static ConvCols<T> conv_cols(T* p, int E) { return ConvCols<T>{p, nullptr, nullptr, E, 0}; }

// SiLU and its derivative in the fused kernels: for bf16 activations with the SFU's exponential and
// a fast division (~1e-6 relative, far below the result's bf16 rounding: the kernels spent about
// half their issue slots in the accurate expf and IEEE division); fp32 keeps the CPU's silu_f /
// silu_grad_f
template <typename T> __device__ __forceinline__ float conv_silu(float x) {
    if constexpr (sizeof(T) == 2) return __fdividef(x, 1.0f + __expf(-x));
    else return silu_f(x);
}
template <typename T> __device__ __forceinline__ float conv_silu_grad(float x) {
    if constexpr (sizeof(T) == 2) {
        float s = __fdividef(1.0f, 1.0f + __expf(-x));
        return s * (1.0f + x * (1.0f - s));
    } else {
        return silu_grad_f(x);
    }
}

template <int K, int NC, typename T>
__global__ void __launch_bounds__(64) conv1d_silu_forward_kernel(ConvCols<T> out, const T* x, const float* weight,
                                                                 const float* bias, int L, int E) {
    int e0 = (blockIdx.x * blockDim.x + threadIdx.x) * NC;
    if (e0 >= E) return;
    int b = blockIdx.z, t0 = blockIdx.y * CSILU_TT;
    size_t base = (size_t)b * L * E + e0, out_len;
    T* out_col = out.col(e0, E, &out_len);
    out_col += (size_t)b * L * out_len;  // row t of batch element b: + t * out_len
    float wr[NC][K], br[NC];
#pragma unroll
    for (int j = 0; j < NC; j++) {
#pragma unroll
        for (int k = 0; k < K; k++) wr[j][k] = weight[(e0 + j) * K + k];
        br[j] = bias[e0 + j];
    }
    ConvChannels<T, NC> in[CSILU_TT + K - 1];  // x[t0-(K-1) .. t0+CSILU_TT)
#pragma unroll
    for (int i = 0; i < CSILU_TT + K - 1; i++) {
        int t = t0 - (K - 1) + i;
        if (t >= 0 && t < L) in[i] = load_channels<NC>(x + base + (size_t)t * E);
        else {
#pragma unroll
            for (int j = 0; j < NC; j++) in[i].v[j] = (T)0.0f;
        }
    }
#pragma unroll
    for (int i = 0; i < CSILU_TT; i++) {
        int t = t0 + i;
        if (t < L) {
            ConvChannels<T, NC> o;
#pragma unroll
            for (int j = 0; j < NC; j++) {
                float p = br[j];
#pragma unroll
                for (int k = 0; k < K; k++) p += wr[j][k] * (float)in[i + k].v[j];
                o.v[j] = (T)conv_silu<T>(p);
            }
            store_channels<NC>(out_col + (size_t)t * out_len, o);
        }
    }
}

// Backward: thread (x, y) of block (bx, by, b) owns channels e0..e0+NC and timesteps
// [t0, t0+CSILU_TTB). It walks s over [t0, t0+CSILU_TTB+K-1), recomputing dpre[s] from a sliding
// window of x, and writes dx[s-(K-1)] (which needs dpre[s-(K-1) .. s]) once the window is full;
// the K-1 dpre past the chunk are recomputed (not shared with the neighbour). dweight/dbias:
// register partials over the own chunk, summed over the block's y in shared memory, then one
// atomicAdd per (channel, tap) per block. A nullptr dweight and/or dbias (frozen, uniform over
// the grid) skips its atomics; both nullptr skips the block reduction.
template <int K, int NC, typename T>
__global__ void __launch_bounds__(32 * CSILU_TY)
    conv1d_silu_backward_kernel(T* dx, float* dweight, float* dbias, ConvCols<const T> dout, const T* x,
                                const float* weight, const float* bias, int L, int E, bool dx_add) {
    __shared__ float sm[CSILU_TY][K + 1][32 * NC];
    int e0 = (blockIdx.x * 32 + threadIdx.x) * NC;
    int b = blockIdx.z, t0 = (blockIdx.y * CSILU_TY + threadIdx.y) * CSILU_TTB;
    float acc[K + 1][NC];  // taps 0..K-1, then the bias
#pragma unroll
    for (int k = 0; k <= K; k++)
#pragma unroll
        for (int j = 0; j < NC; j++) acc[k][j] = 0.0f;
    if (e0 < E && t0 < L) {  // no early return: the block meets at __syncthreads below
        size_t base = (size_t)b * L * E + e0, dout_len;
        const T* dout_col = dout.col(e0, E, &dout_len);
        dout_col += (size_t)b * L * dout_len;  // row s of batch element b: + s * dout_len
        float wr[NC][K], br[NC];
#pragma unroll
        for (int j = 0; j < NC; j++) {
#pragma unroll
            for (int k = 0; k < K; k++) wr[j][k] = weight[(e0 + j) * K + k];
            br[j] = bias[e0 + j];
        }
        float xw[K - 1][NC], gw[K - 1][NC];  // x[s-(K-1) .. s-1], dpre[s-(K-1) .. s-1]
#pragma unroll
        for (int i = 0; i < K - 1; i++) {
            int t = t0 - (K - 1) + i;
            ConvChannels<T, NC> v;
            if (t >= 0) v = load_channels<NC>(x + base + (size_t)t * E);
#pragma unroll
            for (int j = 0; j < NC; j++) { xw[i][j] = t >= 0 ? (float)v.v[j] : 0.0f; gw[i][j] = 0.0f; }
        }
#pragma unroll
        for (int i = 0; i < CSILU_TTB + K - 1; i++) {
            int s = t0 + i;
            float xs[NC], dp[NC];
            if (s < L) {
                ConvChannels<T, NC> xv = load_channels<NC>(x + base + (size_t)s * E);
                ConvChannels<T, NC> gv = load_channels<NC>(dout_col + (size_t)s * dout_len);
#pragma unroll
                for (int j = 0; j < NC; j++) {
                    xs[j] = (float)xv.v[j];
                    float p = br[j] + wr[j][K - 1] * xs[j];
#pragma unroll
                    for (int k = 0; k < K - 1; k++) p += wr[j][k] * xw[k][j];
                    dp[j] = (float)gv.v[j] * conv_silu_grad<T>(p);
                    if (i < CSILU_TTB) {
#pragma unroll
                        for (int k = 0; k < K - 1; k++) acc[k][j] += dp[j] * xw[k][j];
                        acc[K - 1][j] += dp[j] * xs[j];
                        acc[K][j] += dp[j];
                    }
                }
            } else {
#pragma unroll
                for (int j = 0; j < NC; j++) { xs[j] = 0.0f; dp[j] = 0.0f; }
            }
            int t = s - (K - 1);  // dx[t] = sum_k w[k] * dpre[t + K-1-k]
            if (i >= K - 1 && t < L) {
                T* dx_t = dx + base + (size_t)t * E;
                ConvChannels<T, NC> dv;
                if (dx_add) dv = load_channels<NC>(dx_t);  // GRAD_SET: dx is not read
#pragma unroll
                for (int j = 0; j < NC; j++) {
                    float a = wr[j][0] * dp[j];
#pragma unroll
                    for (int k = 0; k < K - 1; k++) a += wr[j][K - 1 - k] * gw[k][j];
                    dv.v[j] = (T)(dx_add ? (float)dv.v[j] + a : a);
                }
                store_channels<NC>(dx_t, dv);
            }
#pragma unroll
            for (int j = 0; j < NC; j++) {
#pragma unroll
                for (int k = 0; k + 1 < K - 1; k++) { xw[k][j] = xw[k + 1][j]; gw[k][j] = gw[k + 1][j]; }
                xw[K - 2][j] = xs[j];
                gw[K - 2][j] = dp[j];
            }
        }
    }
    if (!dweight && !dbias) return;  // uniform over the block: no thread waits at the barrier below
#pragma unroll
    for (int k = 0; k <= K; k++)
#pragma unroll
        for (int j = 0; j < NC; j++) sm[threadIdx.y][k][threadIdx.x * NC + j] = acc[k][j];
    __syncthreads();
    int ebase = blockIdx.x * 32 * NC;
    for (int i = threadIdx.y * 32 + threadIdx.x; i < (K + 1) * 32 * NC; i += 32 * CSILU_TY) {
        int k = i / (32 * NC), c = i % (32 * NC), e = ebase + c;
        if (e >= E) continue;
        float s = 0.0f;
#pragma unroll
        for (int y = 0; y < CSILU_TY; y++) s += sm[y][k][c];
        if (k < K) { if (dweight) atomicAdd(&dweight[e * K + k], s); }
        else if (dbias) atomicAdd(&dbias[e], s);
    }
}

// generic fallback (any K): one thread per element; the backward recomputes dpre where needed
__device__ __forceinline__ float conv1d_silu_dpre(const floatX* dout, const floatX* x, const float* weight,
                                                  const float* bias, size_t row0, int t, int L, int E, int e,
                                                  int K) {
    // row0 = (b*L)*E + e; dpre at time t (0 outside [0, L))
    if (t < 0 || t >= L) return 0.0f;
    float p = bias[e];
    for (int k = 0; k < K; k++) {
        int ts = t - (K - 1) + k;
        if (ts >= 0) p += weight[e * K + k] * (float)x[row0 + (size_t)ts * E];
    }
    return (float)dout[row0 + (size_t)t * E] * silu_grad_f(p);
}
__global__ void conv1d_silu_forward_generic_kernel(floatX* out, const floatX* x, const float* weight,
                                                   const float* bias, int B, int L, int E, int K) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * L * E) return;
    int e = (int)(idx % E);
    int t = (int)((idx / E) % L);
    float p = bias[e];
    for (int k = 0; k < K; k++) {
        int ts = t - (K - 1) + k;
        if (ts >= 0) p += weight[e * K + k] * (float)x[idx - (size_t)(t - ts) * E];
    }
    out[idx] = (floatX)silu_f(p);
}
__global__ void conv1d_silu_backward_dx_generic_kernel(floatX* dx, const floatX* dout, const floatX* x,
                                                       const float* weight, const float* bias, int B, int L,
                                                       int E, int K, bool dx_add) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * L * E) return;
    int e = (int)(idx % E);
    int t = (int)((idx / E) % L);
    size_t row0 = idx - (size_t)t * E;
    float a = 0.0f;
    for (int k = 0; k < K; k++)
        a += weight[e * K + k] * conv1d_silu_dpre(dout, x, weight, bias, row0, t + (K - 1) - k, L, E, e, K);
    dx[idx] = (floatX)(dx_add ? (float)dx[idx] + a : a);
}
// block (32, 8): 32 channels x a chunk of rows strided by y; shared-memory sum, then atomics
__global__ void conv1d_silu_backward_dw_generic_kernel(float* dweight, float* dbias, const floatX* dout,
                                                       const floatX* x, const float* weight, const float* bias,
                                                       int B, int L, int E, int K, int rows_per_block) {
    int e = blockIdx.x * 32 + threadIdx.x;
    int r0 = blockIdx.y * rows_per_block;
    int r1 = min(B * L, r0 + rows_per_block);
    float acc[CONV1D_MAX_K + 1];
#pragma unroll
    for (int k = 0; k <= CONV1D_MAX_K; k++) acc[k] = 0.0f;
    if (e < E) {
        for (int r = r0 + threadIdx.y; r < r1; r += 8) {
            int t = r % L;
            size_t row0 = (size_t)(r - t) * E + e;
            float g = conv1d_silu_dpre(dout, x, weight, bias, row0, t, L, E, e, K);
            acc[CONV1D_MAX_K] += g;
#pragma unroll
            for (int k = 0; k < CONV1D_MAX_K; k++) {
                if (k >= K) break;
                int ts = t - (K - 1) + k;
                if (ts >= 0) acc[k] += g * (float)x[row0 + (size_t)ts * E];
            }
        }
    }
    conv1d_reduce_dw(dweight, dbias, acc, e, E, K);
}

// vector width usable for these pointers and E (8-byte accesses need 8-byte aligned rows); a split
// tensor's parts each need it too, and widths that keep a thread's channels in one part
static inline bool conv1d_silu_vec_ok(int E, int nc, size_t elem_bytes, const void* a, const void* b, const void* c) {
    size_t bytes = (size_t)nc * elem_bytes;
    return E % nc == 0 && ((uintptr_t)a % bytes) == 0 && ((uintptr_t)b % bytes) == 0 &&
           ((uintptr_t)c % bytes) == 0;
}
template <typename T>
static bool conv_cols_vec_ok(const ConvCols<T>& t, int E, int nc) {
    if (!t.b) return conv1d_silu_vec_ok(E, nc, sizeof(T), t.a, t.a, t.a);
    return t.w0 % nc == 0 && t.w1 % nc == 0 && conv1d_silu_vec_ok(E, nc, sizeof(T), t.a, t.b, t.c);
}

template <int K, typename T>
static void conv1d_silu_forward_launch(ConvCols<T> out, const T* x, const float* weight, const float* bias, int B, int L, int E) {
    constexpr int NC = 8 / sizeof(T);
    if (conv_cols_vec_ok(out, E, NC) && conv1d_silu_vec_ok(E, NC, sizeof(T), x, x, x)) {
        dim3 grid(ceil_div(E / NC, 64), ceil_div(L, CSILU_TT), B);
        conv1d_silu_forward_kernel<K, NC, T><<<grid, 64, 0, launch_stream()>>>(out, x, weight, bias, L, E);
    } else {
        dim3 grid(ceil_div(E, 64), ceil_div(L, CSILU_TT), B);
        conv1d_silu_forward_kernel<K, 1, T><<<grid, 64, 0, launch_stream()>>>(out, x, weight, bias, L, E);
    }
    cudaCheckLaunch();
}
template <int K, typename T>
static void conv1d_silu_backward_launch(T* dx, float* dweight, float* dbias, ConvCols<const T> dout, const T* x,
                                        const float* weight, const float* bias, int B, int L, int E, GradWrite dx_write) {
    bool dx_add = dx_write == GRAD_ADD;
    constexpr int NC = 8 / sizeof(T);
    dim3 block(32, CSILU_TY);
    if (conv_cols_vec_ok(dout, E, NC) && conv1d_silu_vec_ok(E, NC, sizeof(T), dx, x, x)) {
        dim3 grid(ceil_div(E / NC, 32), ceil_div(L, CSILU_TTB * CSILU_TY), B);
        conv1d_silu_backward_kernel<K, NC, T><<<grid, block, 0, launch_stream()>>>(dx, dweight, dbias, dout, x, weight, bias, L, E, dx_add);
    } else {
        dim3 grid(ceil_div(E, 32), ceil_div(L, CSILU_TTB * CSILU_TY), B);
        conv1d_silu_backward_kernel<K, 1, T><<<grid, block, 0, launch_stream()>>>(dx, dweight, dbias, dout, x, weight, bias, L, E, dx_add);
    }
    cudaCheckLaunch();
}

static void conv1d_silu_forward_cuda(floatX* out, const floatX* x, const float* weight, const float* bias,
                                     int B, int L, int E, int K) {
    size_t n = (size_t)B * L * E;
    if (n == 0) return;
    if (K == 4) conv1d_silu_forward_launch<4>(conv_cols(out, E), x, weight, bias, B, L, E);
    else if (K == 3) conv1d_silu_forward_launch<3>(conv_cols(out, E), x, weight, bias, B, L, E);
    else if (K == 2) conv1d_silu_forward_launch<2>(conv_cols(out, E), x, weight, bias, B, L, E);
    else {
        conv1d_silu_forward_generic_kernel<<<(unsigned)((n + 255) / 256), 256, 0, launch_stream()>>>(out, x, weight, bias, B, L, E, K);
        cudaCheckLaunch();
    }
}

static void conv1d_silu_backward_cuda(floatX* dx, float* dweight, float* dbias, const floatX* dout,
                                      const floatX* x, const float* weight, const float* bias,
                                      int B, int L, int E, int K, GradWrite dx_write = GRAD_ADD) {
    size_t n = (size_t)B * L * E;
    if (n == 0) return;
    if (K == 4) conv1d_silu_backward_launch<4>(dx, dweight, dbias, conv_cols(dout, E), x, weight, bias, B, L, E, dx_write);
    else if (K == 3) conv1d_silu_backward_launch<3>(dx, dweight, dbias, conv_cols(dout, E), x, weight, bias, B, L, E, dx_write);
    else if (K == 2) conv1d_silu_backward_launch<2>(dx, dweight, dbias, conv_cols(dout, E), x, weight, bias, B, L, E, dx_write);
    else {
        if (K > CONV1D_MAX_K) FATAL("conv1d_silu_backward_cuda: K=%d > %d", K, CONV1D_MAX_K);
        conv1d_silu_backward_dx_generic_kernel<<<(unsigned)((n + 255) / 256), 256, 0, launch_stream()>>>(dx, dout, x, weight, bias,
                                                                                   B, L, E, K, dx_write == GRAD_ADD);
        cudaCheckLaunch();
        if (!dweight && !dbias) return;  // both frozen
        const int rows_per_block = 256;
        dim3 grid(ceil_div(E, 32), ceil_div(B * L, rows_per_block));
        conv1d_silu_backward_dw_generic_kernel<<<grid, dim3(32, 8), 0, launch_stream()>>>(dweight, dbias, dout, x, weight, bias, B, L,
                                                                      E, K, rows_per_block);
        cudaCheckLaunch();
    }
}
// bf16 activations (x, out, dout, dx; the fused kernels for K = 2, 3, 4 only: the caller checks
// conv1d_silu_b16_ok); the same arithmetic in fp32 registers, one rounding per value written
static bool conv1d_silu_b16_ok(int K) { return K >= 2 && K <= 4; }
static void conv1d_silu_forward_b16_cuda(bf16* out, const bf16* x, const float* weight, const float* bias, int B, int L, int E,
                                         int K) {
    if ((size_t)B * L * E == 0) return;
    if (K == 4) conv1d_silu_forward_launch<4>(conv_cols(out, E), x, weight, bias, B, L, E);
    else if (K == 3) conv1d_silu_forward_launch<3>(conv_cols(out, E), x, weight, bias, B, L, E);
    else if (K == 2) conv1d_silu_forward_launch<2>(conv_cols(out, E), x, weight, bias, B, L, E);
    else FATAL("conv1d_silu_forward_b16_cuda: K=%d (the bf16 kernels take 2..4)", K);
}
static void conv1d_silu_backward_b16_cuda(bf16* dx, float* dweight, float* dbias, const bf16* dout, const bf16* x,
                                          const float* weight, const float* bias, int B, int L, int E, int K,
                                          GradWrite dx_write = GRAD_ADD) {
    if ((size_t)B * L * E == 0) return;
    if (K == 4) conv1d_silu_backward_launch<4>(dx, dweight, dbias, conv_cols(dout, E), x, weight, bias, B, L, E, dx_write);
    else if (K == 3) conv1d_silu_backward_launch<3>(dx, dweight, dbias, conv_cols(dout, E), x, weight, bias, B, L, E, dx_write);
    else if (K == 2) conv1d_silu_backward_launch<2>(dx, dweight, dbias, conv_cols(dout, E), x, weight, bias, B, L, E, dx_write);
    else FATAL("conv1d_silu_backward_b16_cuda: K=%d (the bf16 kernels take 2..4)", K);
}
#endif

// ---------------------------------------------------------------------------
// backend wrappers (the convention of common.h): the models call these

static void conv1d_forward(bool on_gpu, floatX* out, const floatX* x, const float* weight, const float* bias,
                           int B, int L, int E, int K) {
    if (on_gpu) GPU_CALL(conv1d_forward_cuda(out, x, weight, bias, B, L, E, K));
    else conv1d_forward_cpu(out, x, weight, bias, B, L, E, K);
}
static void conv1d_backward(bool on_gpu, floatX* dx, float* dweight, float* dbias, const floatX* dout,
                            const floatX* x, const float* weight, int B, int L, int E, int K) {
    if (on_gpu) GPU_CALL(conv1d_backward_cuda(dx, dweight, dbias, dout, x, weight, B, L, E, K));
    else conv1d_backward_cpu(dx, dweight, dbias, dout, x, weight, B, L, E, K);
}
static void conv1d_silu_forward(bool on_gpu, floatX* out, const floatX* x, const float* weight,
                                const float* bias, int B, int L, int E, int K) {
    if (on_gpu) GPU_CALL(conv1d_silu_forward_cuda(out, x, weight, bias, B, L, E, K));
    else conv1d_silu_forward_cpu(out, x, weight, bias, B, L, E, K);
}
static void conv1d_silu_backward(bool on_gpu, floatX* dx, float* dweight, float* dbias, const floatX* dout,
                                 const floatX* x, const float* weight, const float* bias,
                                 int B, int L, int E, int K, GradWrite dx_write = GRAD_ADD) {
    if (on_gpu) GPU_CALL(conv1d_silu_backward_cuda(dx, dweight, dbias, dout, x, weight, bias, B, L, E, K, dx_write));
    else conv1d_silu_backward_cpu(dx, dweight, dbias, dout, x, weight, bias, B, L, E, K, dx_write);
}

// conv1d + SiLU whose output columns go to three tensors (ConvCols): out_a (B, L, wa), out_b (B, L, wb),
// out_c (B, L, E - wa - wb), e.g. Mamba-2's x, B and C; and its backward reading the output gradient from
// three such tensors. The GPU's fused kernels (K 2..4) address the parts directly; the CPU and any other
// K run the one-tensor functions through `scratch` (B, L, E) and split_columns / concat_columns.
static void conv1d_silu_forward_split(bool on_gpu, floatX* out_a, floatX* out_b, floatX* out_c, floatX* scratch,
                                      const floatX* x, const float* weight, const float* bias, int B, int L, int E, int K,
                                      int wa, int wb) {
#ifdef __CUDACC__
    if (on_gpu && K >= 2 && K <= 4) {
        if ((size_t)B * L * E == 0) return;
        ConvCols<floatX> out = {out_a, out_b, out_c, wa, wb};
        if (K == 4) conv1d_silu_forward_launch<4>(out, x, weight, bias, B, L, E);
        else if (K == 3) conv1d_silu_forward_launch<3>(out, x, weight, bias, B, L, E);
        else conv1d_silu_forward_launch<2>(out, x, weight, bias, B, L, E);
        return;
    }
#endif
    conv1d_silu_forward(on_gpu, scratch, x, weight, bias, B, L, E, K);
    split_columns(on_gpu, out_a, out_b, out_c, scratch, B * L, wa, wb, E - wa - wb);
}
static void conv1d_silu_backward_split(bool on_gpu, floatX* dx, float* dweight, float* dbias, const floatX* dout_a,
                                       const floatX* dout_b, const floatX* dout_c, floatX* scratch, const floatX* x,
                                       const float* weight, const float* bias, int B, int L, int E, int K, int wa, int wb,
                                       GradWrite dx_write = GRAD_ADD) {
#ifdef __CUDACC__
    if (on_gpu && K >= 2 && K <= 4) {
        if ((size_t)B * L * E == 0) return;
        ConvCols<const floatX> dout = {dout_a, dout_b, dout_c, wa, wb};
        if (K == 4) conv1d_silu_backward_launch<4>(dx, dweight, dbias, dout, x, weight, bias, B, L, E, dx_write);
        else if (K == 3) conv1d_silu_backward_launch<3>(dx, dweight, dbias, dout, x, weight, bias, B, L, E, dx_write);
        else conv1d_silu_backward_launch<2>(dx, dweight, dbias, dout, x, weight, bias, B, L, E, dx_write);
        return;
    }
#endif
    concat_columns(on_gpu, scratch, dout_a, dout_b, dout_c, B * L, wa, wb, E - wa - wb);
    conv1d_silu_backward(on_gpu, dx, dweight, dbias, scratch, x, weight, bias, B, L, E, K, dx_write);
}

#ifdef __CUDACC__
// the same for bf16 activations (x, out, dout, dx in bf16; the GPU only): mamba_model.h's layer is
// one template over the activation type and calls these where its activations are bf16
static void conv1d_silu_forward(bool on_gpu, bf16* out, const bf16* x, const float* weight, const float* bias, int B, int L,
                                int E, int K) {
    if (!on_gpu) FATAL("bf16 activations run on the GPU only");
    conv1d_silu_forward_b16_cuda(out, x, weight, bias, B, L, E, K);
}
static void conv1d_silu_backward(bool on_gpu, bf16* dx, float* dweight, float* dbias, const bf16* dout, const bf16* x,
                                 const float* weight, const float* bias, int B, int L, int E, int K, GradWrite dx_write = GRAD_ADD) {
    if (!on_gpu) FATAL("bf16 activations run on the GPU only");
    conv1d_silu_backward_b16_cuda(dx, dweight, dbias, dout, x, weight, bias, B, L, E, K, dx_write);
}
#endif
