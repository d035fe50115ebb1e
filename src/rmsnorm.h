// rmsnorm.h: RMSNorm over the last dimension, eps = 1e-5.
//   out = x * rstd * weight,  rstd = 1/sqrt(mean_c x^2 + eps)
#pragma once
#include "common.h"

#define RMSNORM_EPS 1e-5f

// x, out: (N, C); weight: (C); rstd: (N) saved for the backward
static void rmsnorm_forward_cpu(floatX* out, float* rstd, const floatX* x, const float* weight, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const floatX* xr = x + (size_t)n * C;
        float ss = 0.0f;
        for (int c = 0; c < C; c++) { float v = (float)xr[c]; ss += v * v; }
        float r = 1.0f / sqrtf(ss / C + RMSNORM_EPS);
        rstd[n] = r;
        floatX* o = out + (size_t)n * C;
        for (int c = 0; c < C; c++) o[c] = (floatX)((float)xr[c] * r * weight[c]);
    }
}

// With g = dout*weight:  dx = rstd * (g - x * rstd^2 * mean_c(g*x));  dweight += sum_n dout*x*rstd
static void rmsnorm_backward_cpu(floatX* dx, float* dweight, const floatX* dout, const floatX* x,
                                 const float* weight, const float* rstd, int N, int C) {
#pragma omp parallel
    {
        // per-thread dweight partial, merged once at the end (rows are split across threads)
        std::vector<float> dw(C, 0.0f);
#pragma omp for
        for (int n = 0; n < N; n++) {
            const floatX* xr = x + (size_t)n * C;
            const floatX* gr = dout + (size_t)n * C;
            floatX* dxr = dx + (size_t)n * C;
            float r = rstd[n];
            float dot = 0.0f;  // sum_c dout*weight*x
            for (int c = 0; c < C; c++) dot += (float)gr[c] * weight[c] * (float)xr[c];
            float k = r * r * dot / C;
            for (int c = 0; c < C; c++) {
                float xv = (float)xr[c], gv = (float)gr[c];
                dxr[c] = (floatX)((float)dxr[c] + r * (gv * weight[c] - xv * k));
                dw[c] += gv * xv * r;
            }
        }
#pragma omp critical
        for (int c = 0; c < C; c++) dweight[c] += dw[c];
    }
}

#ifdef __CUDACC__
__device__ __forceinline__ float rmsnorm_warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

// one warp per row; lanes stride over channels
__global__ void rmsnorm_forward_kernel(floatX* out, float* rstd, const floatX* x, const float* weight, int N, int C) {
    int warps = blockDim.x / 32;
    int n = blockIdx.x * warps + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (n >= N) return;
    const floatX* xr = x + (size_t)n * C;
    float ss = 0.0f;
    for (int c = lane; c < C; c += 32) { float v = (float)xr[c]; ss += v * v; }
    ss = rmsnorm_warp_sum(ss);
    float r = rsqrtf(ss / C + RMSNORM_EPS);
    if (lane == 0) rstd[n] = r;
    floatX* o = out + (size_t)n * C;
    for (int c = lane; c < C; c += 32) o[c] = (floatX)((float)xr[c] * r * weight[c]);
}

// Each block owns a strided set of rows (one warp per row at a time) and keeps a
// dweight partial in shared memory; at the end one global atomicAdd per channel per block.
__global__ void rmsnorm_backward_kernel(floatX* dx, float* dweight, const floatX* dout, const floatX* x,
                                        const float* weight, const float* rstd, int N, int C) {
    extern __shared__ float dw_s[];  // (C)
    for (int c = threadIdx.x; c < C; c += blockDim.x) dw_s[c] = 0.0f;
    __syncthreads();
    int warps = blockDim.x / 32;
    int lane = threadIdx.x % 32;
    for (int n = blockIdx.x * warps + threadIdx.x / 32; n < N; n += gridDim.x * warps) {
        const floatX* xr = x + (size_t)n * C;
        const floatX* gr = dout + (size_t)n * C;
        floatX* dxr = dx + (size_t)n * C;
        float r = rstd[n];
        float dot = 0.0f;
        for (int c = lane; c < C; c += 32) dot += (float)gr[c] * weight[c] * (float)xr[c];
        dot = rmsnorm_warp_sum(dot);
        float k = r * r * dot / C;
        for (int c = lane; c < C; c += 32) {
            float xv = (float)xr[c], gv = (float)gr[c];
            dxr[c] = (floatX)((float)dxr[c] + r * (gv * weight[c] - xv * k));
            atomicAdd(&dw_s[c], gv * xv * r);  // shared-memory atomics: only warps of this block contend
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(&dweight[c], dw_s[c]);
}

static void rmsnorm_forward_cuda(floatX* out, float* rstd, const floatX* x, const float* weight, int N, int C) {
    if (N == 0) return;
    const int block = 256;
    rmsnorm_forward_kernel<<<ceil_div(N, block / 32), block>>>(out, rstd, x, weight, N, C);
    cudaCheckLaunch();
}

static void rmsnorm_backward_cuda(floatX* dx, float* dweight, const floatX* dout, const floatX* x,
                                  const float* weight, const float* rstd, int N, int C) {
    if (N == 0) return;
    const int block = 256;
    int grid = ceil_div(N, block / 32);
    if (grid > 1024) grid = 1024;  // bounds the number of dweight partials merged with atomics
    size_t smem = (size_t)C * sizeof(float);
    if (smem > 48 * 1024)
        cudaCheck(cudaFuncSetAttribute(rmsnorm_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    rmsnorm_backward_kernel<<<grid, block, smem>>>(dx, dweight, dout, x, weight, rstd, N, C);
    cudaCheckLaunch();
}
#endif
