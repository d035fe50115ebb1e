// activations.h: elementwise SiLU, softplus and adds.
#pragma once
#include "common.h"

// out = x * sigmoid(x)
static void silu_forward_cpu(floatX* out, const floatX* x, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) out[i] = (floatX)silu_f((float)x[i]);
}

// silu'(x) = s + x*s*(1-s), s = sigmoid(x);  dx += dout * silu'(x)
static void silu_backward_cpu(floatX* dx, const floatX* dout, const floatX* x, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float xv = (float)x[i], s = sigmoid_f(xv);
        dx[i] = (floatX)((float)dx[i] + (float)dout[i] * s * (1.0f + xv * (1.0f - s)));
    }
}

// log(1 + e^x), = x above 20
static void softplus_forward_cpu(floatX* out, const floatX* x, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) out[i] = (floatX)softplus_f((float)x[i]);
}

// softplus'(x) = sigmoid(x) (exactly 1 above 20, where the forward is linear)
static void softplus_backward_cpu(floatX* dx, const floatX* dout, const floatX* x, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        float xv = (float)x[i];
        float d = xv > 20.0f ? 1.0f : sigmoid_f(xv);
        dx[i] = (floatX)((float)dx[i] + (float)dout[i] * d);
    }
}

// out = a + b
static void add_forward_cpu(floatX* out, const floatX* a, const floatX* b, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) out[i] = (floatX)((float)a[i] + (float)b[i]);
}

// acc += x
static void add_inplace_cpu(floatX* acc, const floatX* x, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) acc[i] = (floatX)((float)acc[i] + (float)x[i]);
}

#ifdef __CUDACC__
// grid-stride elementwise kernels; expf (not __expf) to match the CPU closely
__global__ void silu_forward_kernel(floatX* out, const floatX* x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float xv = (float)x[i];
        out[i] = (floatX)(xv / (1.0f + expf(-xv)));
    }
}
__global__ void silu_backward_kernel(floatX* dx, const floatX* dout, const floatX* x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float xv = (float)x[i], s = 1.0f / (1.0f + expf(-xv));
        dx[i] = (floatX)((float)dx[i] + (float)dout[i] * s * (1.0f + xv * (1.0f - s)));
    }
}
__global__ void softplus_forward_kernel(floatX* out, const floatX* x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float xv = (float)x[i];
        out[i] = (floatX)(xv > 20.0f ? xv : log1pf(expf(xv)));
    }
}
__global__ void softplus_backward_kernel(floatX* dx, const floatX* dout, const floatX* x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float xv = (float)x[i];
        float d = xv > 20.0f ? 1.0f : 1.0f / (1.0f + expf(-xv));
        dx[i] = (floatX)((float)dx[i] + (float)dout[i] * d);
    }
}
__global__ void add_forward_kernel(floatX* out, const floatX* a, const floatX* b, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = (floatX)((float)a[i] + (float)b[i]);
}
__global__ void add_inplace_kernel(floatX* acc, const floatX* x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        acc[i] = (floatX)((float)acc[i] + (float)x[i]);
}

// grid size for an elementwise launch: enough blocks to cover n, capped (the kernels stride)
static inline unsigned activations_grid(size_t n, int block) {
    size_t g = (n + block - 1) / block;
    return (unsigned)(g < 65536 ? (g > 0 ? g : 1) : 65536);
}

static void silu_forward_cuda(floatX* out, const floatX* x, size_t n) {
    if (n == 0) return;
    silu_forward_kernel<<<activations_grid(n, 256), 256>>>(out, x, n);
    cudaCheckLaunch();
}
static void silu_backward_cuda(floatX* dx, const floatX* dout, const floatX* x, size_t n) {
    if (n == 0) return;
    silu_backward_kernel<<<activations_grid(n, 256), 256>>>(dx, dout, x, n);
    cudaCheckLaunch();
}
static void softplus_forward_cuda(floatX* out, const floatX* x, size_t n) {
    if (n == 0) return;
    softplus_forward_kernel<<<activations_grid(n, 256), 256>>>(out, x, n);
    cudaCheckLaunch();
}
static void softplus_backward_cuda(floatX* dx, const floatX* dout, const floatX* x, size_t n) {
    if (n == 0) return;
    softplus_backward_kernel<<<activations_grid(n, 256), 256>>>(dx, dout, x, n);
    cudaCheckLaunch();
}
static void add_forward_cuda(floatX* out, const floatX* a, const floatX* b, size_t n) {
    if (n == 0) return;
    add_forward_kernel<<<activations_grid(n, 256), 256>>>(out, a, b, n);
    cudaCheckLaunch();
}
static void add_inplace_cuda(floatX* acc, const floatX* x, size_t n) {
    if (n == 0) return;
    add_inplace_kernel<<<activations_grid(n, 256), 256>>>(acc, x, n);
    cudaCheckLaunch();
}
#endif
