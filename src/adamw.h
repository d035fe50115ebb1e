// adamw.h: AdamW optimizer step (decoupled weight decay, as torch.optim.AdamW) and
// the sum of squares used for global-norm gradient clipping.
#pragma once
#include "common.h"

// params, grads, m, v: (n); t = step number from 1; grads are scaled by grad_scale first.
// p -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p)
static void adamw_update_cpu(float* params, const float* grads, float* m, float* v, size_t n, float lr,
                             float beta1, float beta2, float eps, float weight_decay, int t, float grad_scale) {
    float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float g = grads[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi; v[i] = vi;
        float mhat = mi / bc1, vhat = vi / bc2;
        params[i] -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * params[i]);
    }
}

// sum of squares of x (n), accumulated in double. Fixed blocks of x, not a reduction clause:
// each block's sum is computed by one thread and the block sums are added in block order, so
// the result is the same bits for any number of threads.
static double sum_squares_cpu(const float* x, size_t n) {
    const size_t block = 1 << 14;
    size_t nblocks = (n + block - 1) / block;
    std::vector<double> block_sum(nblocks);
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < nblocks; b++) {
        size_t end = (b + 1) * block < n ? (b + 1) * block : n;
        double s = 0.0;
        for (size_t i = b * block; i < end; i++) s += (double)x[i] * x[i];
        block_sum[b] = s;
    }
    double s = 0.0;
    for (size_t b = 0; b < nblocks; b++) s += block_sum[b];
    return s;
}

#ifdef __CUDACC__
__global__ void adamw_kernel(float* params, const float* grads, float* m, float* v, size_t n, float lr,
                             float beta1, float beta2, float eps, float weight_decay, float bc1, float bc2,
                             float grad_scale) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = grads[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi; v[i] = vi;
        float mhat = mi / bc1, vhat = vi / bc2;
        params[i] -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * params[i]);
    }
}

// grid-stride partial sums in float per thread, a block reduction, one double atomicAdd per block
__global__ void sum_squares_kernel(double* out, const float* x, size_t n) {
    __shared__ float part[32];
    float s = 0.0f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += x[i] * x[i];
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) part[warp] = s;
    __syncthreads();
    if (warp == 0) {
        s = lane < (int)(blockDim.x / 32) ? part[lane] : 0.0f;
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        if (lane == 0) atomicAdd(out, (double)s);
    }
}

static void adamw_update_cuda(float* params, const float* grads, float* m, float* v, size_t n, float lr,
                              float beta1, float beta2, float eps, float weight_decay, int t, float grad_scale) {
    if (n == 0) return;
    float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
    size_t g = (n + 255) / 256;
    unsigned grid = (unsigned)(g < 65536 ? g : 65536);
    adamw_kernel<<<grid, 256, 0, launch_stream()>>>(params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale);
    cudaCheckLaunch();
}

// returns to the host, so it synchronizes (cudaMemcpy on the default stream)
static double sum_squares_cuda(const float* x, size_t n) {
    static double* d_acc = nullptr;  // one device scalar for the process
    if (!d_acc) cudaCheck(cudaMalloc(&d_acc, sizeof(double)));
    cudaCheck(cudaMemsetAsync(d_acc, 0, sizeof(double), launch_stream()));
    if (n > 0) {
        size_t g = (n + 255) / 256;
        unsigned grid = (unsigned)(g < 1024 ? g : 1024);  // few blocks: few atomics; threads stride
        sum_squares_kernel<<<grid, 256, 0, launch_stream()>>>(d_acc, x, n);
        cudaCheckLaunch();
    }
    double h = 0.0;
    cudaCheck(cudaMemcpy(&h, d_acc, sizeof(double), cudaMemcpyDeviceToHost));
    return h;
}
#endif

// ---------------------------------------------------------------------------
// backend wrappers (the convention of common.h): the models call these

static void adamw_update(bool on_gpu, float* params, const float* grads, float* m, float* v, size_t n, float lr,
                         float beta1, float beta2, float eps, float weight_decay, int t, float grad_scale) {
    if (on_gpu)
        GPU_CALL(adamw_update_cuda(params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, t, grad_scale));
    else adamw_update_cpu(params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, t, grad_scale);
}
// returns to the host (on the GPU this synchronizes)
static double sum_squares(bool on_gpu, const float* x, size_t n) {
    if (on_gpu) { GPU_CALL(return sum_squares_cuda(x, n)); }
    return sum_squares_cpu(x, n);
}
