// conv1d.h: depthwise causal conv along time with bias (Mamba's short conv).
//   out[b,t,e] = bias[e] + sum_{k<K} weight[e,k] * x[b, t-(K-1)+k, e]   (x = 0 at negative times)
#pragma once
#include "common.h"

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

// dx[b,s,e] += sum_k weight[e,k] * dout[b, s+(K-1)-k, e]  (terms with time < L)
// dweight[e,k] += sum_{b,t} dout[b,t,e] * x[b,t-(K-1)+k,e];  dbias[e] += sum_{b,t} dout[b,t,e]
static void conv1d_backward_cpu(floatX* dx, float* dweight, float* dbias, const floatX* dout,
                                const floatX* x, const float* weight, int B, int L, int E, int K) {
#pragma omp parallel
    {
        // per-thread partials for the parameter grads, merged once at the end
        std::vector<float> dw((size_t)E * K, 0.0f), db(E, 0.0f);
#pragma omp for collapse(2)
        for (int b = 0; b < B; b++)
            for (int t = 0; t < L; t++) {
                const floatX* g = dout + ((size_t)b * L + t) * E;
                floatX* d = dx + ((size_t)b * L + t) * E;
                for (int e = 0; e < E; e++) {
                    float gv = (float)g[e];
                    db[e] += gv;
                    float s = 0.0f;
                    for (int k = 0; k < K; k++) {
                        int ts = t - (K - 1) + k;  // input time feeding output t through tap k
                        if (ts >= 0) dw[(size_t)e * K + k] += gv * (float)x[((size_t)b * L + ts) * E + e];
                        int to = t + (K - 1) - k;  // output time that input t feeds through tap k
                        if (to < L) s += weight[e * K + k] * (float)dout[((size_t)b * L + to) * E + e];
                    }
                    d[e] = (floatX)((float)d[e] + s);
                }
            }
#pragma omp critical
        {
            for (size_t i = 0; i < (size_t)E * K; i++) dweight[i] += dw[i];
            for (int e = 0; e < E; e++) dbias[e] += db[e];
        }
    }
}

// one recurrent step for generation: x: (B, E) new input; state: (B, E, K-1) the
// last K-1 inputs (oldest first), updated in place; out: (B, E)
static void conv1d_step_cpu(float* out, float* state, const float* x, const float* weight, const float* bias,
                            int B, int E, int K) {
    for (int b = 0; b < B; b++)
        for (int e = 0; e < E; e++) {
            float* st = state + ((size_t)b * E + e) * (K - 1);
            float xv = x[(size_t)b * E + e];
            float s = bias[e] + weight[e * K + K - 1] * xv;
            for (int k = 0; k < K - 1; k++) s += weight[e * K + k] * st[k];
            out[(size_t)b * E + e] = s;
            for (int k = 0; k + 1 < K - 1; k++) st[k] = st[k + 1];  // shift out the oldest
            if (K > 1) st[K - 2] = xv;
        }
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

// dweight/dbias: block (32, 8) covers 32 channels (x) and a chunk of rows (b,t) strided
// by y. Each thread sums in registers, the block reduces over y in shared memory, and
// one atomicAdd per (channel, tap) per block goes to global memory.
__global__ void conv1d_backward_dw_kernel(float* dweight, float* dbias, const floatX* dout, const floatX* x,
                                          int B, int L, int E, int K, int rows_per_block) {
    __shared__ float part[8][CONV1D_MAX_K + 1][32];
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
#pragma unroll
    for (int k = 0; k <= CONV1D_MAX_K; k++) part[threadIdx.y][k][threadIdx.x] = acc[k];
    __syncthreads();
    if (threadIdx.y == 0 && e < E) {
        for (int k = 0; k < K; k++) {
            float s = 0.0f;
            for (int y = 0; y < 8; y++) s += part[y][k][threadIdx.x];
            atomicAdd(&dweight[e * K + k], s);
        }
        float s = 0.0f;
        for (int y = 0; y < 8; y++) s += part[y][CONV1D_MAX_K][threadIdx.x];
        atomicAdd(&dbias[e], s);
    }
}

static void conv1d_forward_cuda(floatX* out, const floatX* x, const float* weight, const float* bias,
                                int B, int L, int E, int K) {
    size_t n = (size_t)B * L * E;
    if (n == 0) return;
    conv1d_forward_kernel<<<(unsigned)((n + 255) / 256), 256>>>(out, x, weight, bias, B, L, E, K);
    cudaCheckLaunch();
}

static void conv1d_backward_cuda(floatX* dx, float* dweight, float* dbias, const floatX* dout,
                                 const floatX* x, const float* weight, int B, int L, int E, int K) {
    size_t n = (size_t)B * L * E;
    if (n == 0) return;
    if (K > CONV1D_MAX_K) FATAL("conv1d_backward_cuda: K=%d > %d", K, CONV1D_MAX_K);
    conv1d_backward_dx_kernel<<<(unsigned)((n + 255) / 256), 256>>>(dx, dout, weight, B, L, E, K);
    cudaCheckLaunch();
    const int rows_per_block = 256;
    dim3 grid(ceil_div(E, 32), ceil_div(B * L, rows_per_block));
    conv1d_backward_dw_kernel<<<grid, dim3(32, 8)>>>(dweight, dbias, dout, x, B, L, E, K, rows_per_block);
    cudaCheckLaunch();
}
#endif
