// layernorm.h: LayerNorm over the last dimension, eps = 1e-5 (as PyTorch nn.LayerNorm).
//   x, out: (N, C); weight, bias: (C); mean, rstd: (N) saved for the backward
//   mean = mean_c x,  rstd = 1/sqrt(mean_c (x - mean)^2 + eps)   (biased variance)
//   xhat = (x - mean) * rstd,  out = xhat * weight + bias
// Backward, with g = dout * weight:
//   dx      += rstd * (g - mean_c(g) - xhat * mean_c(g * xhat))
//   dweight += sum_n dout * xhat,   dbias += sum_n dout
#pragma once
#include "common.h"

#define LAYERNORM_EPS 1e-5f

static void layernorm_forward_cpu(floatX* out, float* mean, float* rstd, const floatX* x, const float* weight,
                                  const float* bias, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const floatX* xr = x + (size_t)n * C;
        float s = 0.0f;
        for (int c = 0; c < C; c++) s += (float)xr[c];
        float m = s / C;
        float v = 0.0f;  // two passes: no cancellation for rows with a large mean
        for (int c = 0; c < C; c++) { float d = (float)xr[c] - m; v += d * d; }
        float r = 1.0f / sqrtf(v / C + LAYERNORM_EPS);
        mean[n] = m;
        rstd[n] = r;
        floatX* o = out + (size_t)n * C;
        for (int c = 0; c < C; c++) o[c] = (floatX)(((float)xr[c] - m) * r * weight[c] + bias[c]);
    }
}

static void layernorm_backward_cpu(floatX* dx, float* dweight, float* dbias, const floatX* dout, const floatX* x,
                                   const float* weight, const float* mean, const float* rstd, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {  // dx: rows are independent
        const floatX* xr = x + (size_t)n * C;
        const floatX* gr = dout + (size_t)n * C;
        floatX* dxr = dx + (size_t)n * C;
        float m = mean[n], r = rstd[n];
        float sg = 0.0f, sgx = 0.0f;  // sum_c g, sum_c g*xhat
        for (int c = 0; c < C; c++) {
            float g = (float)gr[c] * weight[c];
            sg += g;
            sgx += g * ((float)xr[c] - m) * r;
        }
        float mg = sg / C, mgx = sgx / C;
        for (int c = 0; c < C; c++) {
            float xhat = ((float)xr[c] - m) * r;
            dxr[c] = (floatX)((float)dxr[c] + r * ((float)gr[c] * weight[c] - mg - xhat * mgx));
        }
    }
    if (!dweight) return;  // frozen (no gradient buffers): dx only
    // dweight, dbias: threads split the columns, each column is summed over the rows in order,
    // so the result is the same bits for any number of threads
    const int CB = 16;  // columns per task
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += CB) {
        int c1 = c0 + CB < C ? c0 + CB : C;
        float aw[CB] = {0.0f}, ab[CB] = {0.0f};
        for (int n = 0; n < N; n++) {
            const floatX* xr = x + (size_t)n * C;
            const floatX* gr = dout + (size_t)n * C;
            for (int c = c0; c < c1; c++) {
                float g = (float)gr[c];
                aw[c - c0] += g * ((float)xr[c] - mean[n]) * rstd[n];
                ab[c - c0] += g;
            }
        }
        for (int c = c0; c < c1; c++) { dweight[c] += aw[c - c0]; dbias[c] += ab[c - c0]; }
    }
}

#ifdef __CUDACC__

// one warp per row; lanes stride over channels
__global__ void layernorm_forward_kernel(floatX* out, float* mean, float* rstd, const floatX* x,
                                         const float* weight, const float* bias, int N, int C) {
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (n >= N) return;
    const floatX* xr = x + (size_t)n * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += to_f32(xr[c]);
    float m = warp_sum(s) / C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) { float d = to_f32(xr[c]) - m; v += d * d; }
    float r = rsqrtf(warp_sum(v) / C + LAYERNORM_EPS);
    if (lane == 0) { mean[n] = m; rstd[n] = r; }
    floatX* o = out + (size_t)n * C;
    for (int c = lane; c < C; c += 32) o[c] = from_f32<floatX>((to_f32(xr[c]) - m) * r * weight[c] + bias[c]);
}

// dx: one warp per row
__global__ void layernorm_backward_dx_kernel(floatX* dx, const floatX* dout, const floatX* x, const float* weight,
                                             const float* mean, const float* rstd, int N, int C) {
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (n >= N) return;
    const floatX* xr = x + (size_t)n * C;
    const floatX* gr = dout + (size_t)n * C;
    floatX* dxr = dx + (size_t)n * C;
    float m = mean[n], r = rstd[n];
    float sg = 0.0f, sgx = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float g = to_f32(gr[c]) * weight[c];
        sg += g;
        sgx += g * (to_f32(xr[c]) - m) * r;
    }
    float mg = warp_sum(sg) / C, mgx = warp_sum(sgx) / C;
    for (int c = lane; c < C; c += 32) {
        float xhat = (to_f32(xr[c]) - m) * r;
        dxr[c] = from_f32<floatX>(to_f32(dxr[c]) + r * (to_f32(gr[c]) * weight[c] - mg - xhat * mgx));
    }
}

// dweight, dbias, deterministic in two steps. Step 1: block (32, 8) owns 32 columns and a fixed
// slab of rows (blockIdx.y); y strides over the slab, then the 8 partials are added in y order and
// stored at part[blockIdx.y][c] (dweight partials) and part[gridDim.y + blockIdx.y][c] (dbias).
__global__ void layernorm_dparams_partial_kernel(float* part, const floatX* dout, const floatX* x, const float* mean,
                                                 const float* rstd, int N, int C, int rows_per_block) {
    __shared__ float sw[8][33], sb[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int n0 = blockIdx.y * rows_per_block;
    int n1 = min(N, n0 + rows_per_block);
    float aw = 0.0f, ab = 0.0f;
    if (c < C)
        for (int n = n0 + threadIdx.y; n < n1; n += 8) {
            float g = to_f32(dout[(size_t)n * C + c]);
            aw += g * (to_f32(x[(size_t)n * C + c]) - mean[n]) * rstd[n];
            ab += g;
        }
    sw[threadIdx.y][threadIdx.x] = aw;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        for (int y = 1; y < 8; y++) { aw += sw[y][threadIdx.x]; ab += sb[y][threadIdx.x]; }
        part[(size_t)blockIdx.y * C + c] = aw;
        part[(size_t)(gridDim.y + blockIdx.y) * C + c] = ab;
    }
}
// Step 2: one thread per column adds the slabs' partials in slab order
__global__ void layernorm_dparams_sum_kernel(float* dweight, float* dbias, const float* part, int C, int slabs) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float aw = 0.0f, ab = 0.0f;
    for (int s = 0; s < slabs; s++) {
        aw += part[(size_t)s * C + c];
        ab += part[(size_t)(slabs + s) * C + c];
    }
    dweight[c] += aw;
    dbias[c] += ab;
}

static void layernorm_forward_cuda(floatX* out, float* mean, float* rstd, const floatX* x, const float* weight,
                                   const float* bias, int N, int C) {
    if (N == 0) return;
    const int block = 256, rows = block / 32;
    layernorm_forward_kernel<<<ceil_div(N, rows), block, 0, launch_stream()>>>(out, mean, rstd, x, weight, bias, N, C);
    cudaCheckLaunch();
}

// scratch: a device buffer of 2 * slabs * C partials, kept for the process and grown on demand
static void layernorm_backward_cuda(floatX* dx, float* dweight, float* dbias, const floatX* dout, const floatX* x,
                                    const float* weight, const float* mean, const float* rstd, int N, int C) {
    if (N == 0 || C == 0) return;
    const int block = 256, rows = block / 32;
    layernorm_backward_dx_kernel<<<ceil_div(N, rows), block, 0, launch_stream()>>>(dx, dout, x, weight, mean, rstd, N, C);
    cudaCheckLaunch();
    if (!dweight) return;  // frozen (no gradient buffers): dx only
    const int rows_per_block = 256;
    int slabs = ceil_div(N, rows_per_block);
    static DeviceScratch scratch;
    float* part = scratch.get((size_t)2 * slabs * C);
    dim3 grid(ceil_div(C, 32), slabs);
    layernorm_dparams_partial_kernel<<<grid, dim3(32, 8), 0, launch_stream()>>>(part, dout, x, mean, rstd, N, C, rows_per_block);
    cudaCheckLaunch();
    layernorm_dparams_sum_kernel<<<ceil_div(C, 256), 256, 0, launch_stream()>>>(dweight, dbias, part, C, slabs);
    cudaCheckLaunch();
}
#endif

// ---------------------------------------------------------------------------
// backend wrappers (the convention of common.h): the models call these

static void layernorm_forward(bool on_gpu, floatX* out, float* mean, float* rstd, const floatX* x,
                              const float* weight, const float* bias, int N, int C) {
    if (on_gpu) GPU_CALL(layernorm_forward_cuda(out, mean, rstd, x, weight, bias, N, C));
    else layernorm_forward_cpu(out, mean, rstd, x, weight, bias, N, C);
}
static void layernorm_backward(bool on_gpu, floatX* dx, float* dweight, float* dbias, const floatX* dout,
                               const floatX* x, const float* weight, const float* mean, const float* rstd, int N,
                               int C) {
    if (on_gpu) GPU_CALL(layernorm_backward_cuda(dx, dweight, dbias, dout, x, weight, mean, rstd, N, C));
    else layernorm_backward_cpu(dx, dweight, dbias, dout, x, weight, mean, rstd, N, C);
}
