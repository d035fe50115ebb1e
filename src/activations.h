// activations.h: elementwise SiLU, GELU (tanh approximation), softplus and adds.
#pragma once
#include "common.h"

// d silu / dx = s * (1 + x * (1 - s)), s = sigmoid(x). Host and device, beside
// sigmoid_f / silu_f of common.h, so every SiLU backward (here, the fused
// conv1d+SiLU, dev/conv1d.cu) uses the same formula.
HOST_DEVICE float silu_grad_f(float x) {
    float s = sigmoid_f(x);
    return s * (1.0f + x * (1.0f - s));
}

// out = x * sigmoid(x)
static void silu_forward_cpu(floatX* out, const floatX* x, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) out[i] = (floatX)silu_f((float)x[i]);
}

// dx += dout * silu'(x)
static void silu_backward_cpu(floatX* dx, const floatX* dout, const floatX* x, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) dx[i] = (floatX)((float)dx[i] + (float)dout[i] * silu_grad_f((float)x[i]));
}

// GELU, tanh approximation (GPT-2; PyTorch nn.GELU(approximate='tanh')):
//   gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
#define GELU_SCALE 0.7978845608028654f  // sqrt(2/pi)
#define GELU_CUBE 0.044715f
HOST_DEVICE float gelu_f(float x) {
    float u = GELU_SCALE * (x + GELU_CUBE * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
}
HOST_DEVICE float gelu_grad_f(float x) {
    float t = tanhf(GELU_SCALE * (x + GELU_CUBE * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_SCALE * (1.0f + 3.0f * GELU_CUBE * x * x);
}

// out = gelu(x)
static void gelu_forward_cpu(floatX* out, const floatX* x, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) out[i] = (floatX)gelu_f((float)x[i]);
}

// dx += dout * gelu'(x)
static void gelu_backward_cpu(floatX* dx, const floatX* dout, const floatX* x, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) dx[i] = (floatX)((float)dx[i] + (float)dout[i] * gelu_grad_f((float)x[i]));
}

// log(1 + e^x), = x above 20
static void softplus_forward_cpu(floatX* out, const floatX* x, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) out[i] = (floatX)softplus_f((float)x[i]);
}

// dx += dout * softplus'(x); softplus'(x) = sigmoid(x) (exactly 1 above 20, where the forward is linear)
static void softplus_backward_cpu(floatX* dx, const floatX* dout, const floatX* x, size_t n) {
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) dx[i] = (floatX)((float)dx[i] + (float)dout[i] * softplus_grad_f((float)x[i]));
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

// Column blocks of a row-major matrix. x_proj is one GEMM producing
// (N, ca + cb + cc) = [dt_low | Bm | Cm]; the layers after it want each block
// contiguous, and the backward wants their gradients side by side again.
// in: (N, ca+cb+cc); a: (N, ca), b: (N, cb), c: (N, cc)   (overwrites a, b, c)
static void split_columns_cpu(floatX* a, floatX* b, floatX* c, const floatX* in, int N, int ca, int cb, int cc) {
    int C = ca + cb + cc;
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const floatX* row = in + (size_t)i * C;
        for (int j = 0; j < ca; j++) a[(size_t)i * ca + j] = row[j];
        for (int j = 0; j < cb; j++) b[(size_t)i * cb + j] = row[ca + j];
        for (int j = 0; j < cc; j++) c[(size_t)i * cc + j] = row[ca + cb + j];
    }
}

// out: (N, ca+cb+cc) = [a | b | c]   (overwrites out)
static void concat_columns_cpu(floatX* out, const floatX* a, const floatX* b, const floatX* c, int N, int ca, int cb, int cc) {
    int C = ca + cb + cc;
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        floatX* row = out + (size_t)i * C;
        for (int j = 0; j < ca; j++) row[j] = a[(size_t)i * ca + j];
        for (int j = 0; j < cb; j++) row[ca + j] = b[(size_t)i * cb + j];
        for (int j = 0; j < cc; j++) row[ca + cb + j] = c[(size_t)i * cc + j];
    }
}

#ifdef __CUDACC__
// grid-stride elementwise kernels, with the same scalar functions as the CPU
__global__ void silu_forward_kernel(floatX* out, const floatX* x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = (floatX)silu_f((float)x[i]);
}
__global__ void silu_backward_kernel(floatX* dx, const floatX* dout, const floatX* x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dx[i] = (floatX)((float)dx[i] + (float)dout[i] * silu_grad_f((float)x[i]));
}
__global__ void gelu_forward_kernel(floatX* out, const floatX* x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = (floatX)gelu_f((float)x[i]);
}
__global__ void gelu_backward_kernel(floatX* dx, const floatX* dout, const floatX* x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dx[i] = (floatX)((float)dx[i] + (float)dout[i] * gelu_grad_f((float)x[i]));
}
__global__ void softplus_forward_kernel(floatX* out, const floatX* x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = (floatX)softplus_f((float)x[i]);
}
__global__ void softplus_backward_kernel(floatX* dx, const floatX* dout, const floatX* x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dx[i] = (floatX)((float)dx[i] + (float)dout[i] * softplus_grad_f((float)x[i]));
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
    silu_forward_kernel<<<activations_grid(n, 256), 256, 0, launch_stream()>>>(out, x, n);
    cudaCheckLaunch();
}
static void silu_backward_cuda(floatX* dx, const floatX* dout, const floatX* x, size_t n) {
    if (n == 0) return;
    silu_backward_kernel<<<activations_grid(n, 256), 256, 0, launch_stream()>>>(dx, dout, x, n);
    cudaCheckLaunch();
}
static void gelu_forward_cuda(floatX* out, const floatX* x, size_t n) {
    if (n == 0) return;
    gelu_forward_kernel<<<activations_grid(n, 256), 256, 0, launch_stream()>>>(out, x, n);
    cudaCheckLaunch();
}
static void gelu_backward_cuda(floatX* dx, const floatX* dout, const floatX* x, size_t n) {
    if (n == 0) return;
    gelu_backward_kernel<<<activations_grid(n, 256), 256, 0, launch_stream()>>>(dx, dout, x, n);
    cudaCheckLaunch();
}
static void softplus_forward_cuda(floatX* out, const floatX* x, size_t n) {
    if (n == 0) return;
    softplus_forward_kernel<<<activations_grid(n, 256), 256, 0, launch_stream()>>>(out, x, n);
    cudaCheckLaunch();
}
static void softplus_backward_cuda(floatX* dx, const floatX* dout, const floatX* x, size_t n) {
    if (n == 0) return;
    softplus_backward_kernel<<<activations_grid(n, 256), 256, 0, launch_stream()>>>(dx, dout, x, n);
    cudaCheckLaunch();
}
static void add_forward_cuda(floatX* out, const floatX* a, const floatX* b, size_t n) {
    if (n == 0) return;
    add_forward_kernel<<<activations_grid(n, 256), 256, 0, launch_stream()>>>(out, a, b, n);
    cudaCheckLaunch();
}
static void add_inplace_cuda(floatX* acc, const floatX* x, size_t n) {
    if (n == 0) return;
    add_inplace_kernel<<<activations_grid(n, 256), 256, 0, launch_stream()>>>(acc, x, n);
    cudaCheckLaunch();
}
// one thread per element of the wide matrix; rows are short (~80), so the
// division is cheap next to the memory traffic. TW, TP: the wide matrix's and the parts' types
// (fp32, or bf16 for bf16 activations; a change of type rounds to nearest)
template <typename TW, typename TP>
__global__ void columns_kernel(TW* wide, TP* a, TP* b, TP* c, int N, int ca, int cb, int cc, bool split) {
    int C = ca + cb + cc;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)N * C) return;
    int i = (int)(idx / C), j = (int)(idx % C);
    TP* part = j < ca ? a + (size_t)i * ca + j
             : j < ca + cb ? b + (size_t)i * cb + (j - ca)
             : c + (size_t)i * cc + (j - ca - cb);
    if (split) *part = from_f32<TP>((float)wide[idx]);
    else wide[idx] = from_f32<TW>((float)*part);
}

template <typename TW, typename TP>
static void split_columns_cuda(TP* a, TP* b, TP* c, const TW* in, int N, int ca, int cb, int cc) {
    size_t n = (size_t)N * (ca + cb + cc);
    columns_kernel<<<activations_grid(n, 256), 256, 0, launch_stream()>>>((TW*)in, a, b, c, N, ca, cb, cc, true);
    cudaCheckLaunch();
}

template <typename TW, typename TP>
static void concat_columns_cuda(TW* out, const TP* a, const TP* b, const TP* c, int N, int ca, int cb, int cc) {
    size_t n = (size_t)N * (ca + cb + cc);
    columns_kernel<<<activations_grid(n, 256), 256, 0, launch_stream()>>>(out, (TP*)a, (TP*)b, (TP*)c, N, ca, cb, cc, false);
    cudaCheckLaunch();
}
#endif

// ---------------------------------------------------------------------------
// backend wrappers (the convention of common.h): the models call these

static void silu_forward(bool on_gpu, floatX* out, const floatX* x, size_t n) {
    if (on_gpu) GPU_CALL(silu_forward_cuda(out, x, n));
    else silu_forward_cpu(out, x, n);
}
static void silu_backward(bool on_gpu, floatX* dx, const floatX* dout, const floatX* x, size_t n) {
    if (on_gpu) GPU_CALL(silu_backward_cuda(dx, dout, x, n));
    else silu_backward_cpu(dx, dout, x, n);
}
static void gelu_forward(bool on_gpu, floatX* out, const floatX* x, size_t n) {
    if (on_gpu) GPU_CALL(gelu_forward_cuda(out, x, n));
    else gelu_forward_cpu(out, x, n);
}
static void gelu_backward(bool on_gpu, floatX* dx, const floatX* dout, const floatX* x, size_t n) {
    if (on_gpu) GPU_CALL(gelu_backward_cuda(dx, dout, x, n));
    else gelu_backward_cpu(dx, dout, x, n);
}
static void softplus_forward(bool on_gpu, floatX* out, const floatX* x, size_t n) {
    if (on_gpu) GPU_CALL(softplus_forward_cuda(out, x, n));
    else softplus_forward_cpu(out, x, n);
}
static void softplus_backward(bool on_gpu, floatX* dx, const floatX* dout, const floatX* x, size_t n) {
    if (on_gpu) GPU_CALL(softplus_backward_cuda(dx, dout, x, n));
    else softplus_backward_cpu(dx, dout, x, n);
}
static void add_forward(bool on_gpu, floatX* out, const floatX* a, const floatX* b, size_t n) {
    if (on_gpu) GPU_CALL(add_forward_cuda(out, a, b, n));
    else add_forward_cpu(out, a, b, n);
}
static void add_inplace(bool on_gpu, floatX* acc, const floatX* x, size_t n) {
    if (on_gpu) GPU_CALL(add_inplace_cuda(acc, x, n));
    else add_inplace_cpu(acc, x, n);
}
static void split_columns(bool on_gpu, floatX* a, floatX* b, floatX* c, const floatX* in, int N, int ca, int cb,
                          int cc) {
    if (on_gpu) GPU_CALL(split_columns_cuda(a, b, c, in, N, ca, cb, cc));
    else split_columns_cpu(a, b, c, in, N, ca, cb, cc);
}
static void concat_columns(bool on_gpu, floatX* out, const floatX* a, const floatX* b, const floatX* c, int N,
                           int ca, int cb, int cc) {
    if (on_gpu) GPU_CALL(concat_columns_cuda(out, a, b, c, N, ca, cb, cc));
    else concat_columns_cpu(out, a, b, c, N, ca, cb, cc);
}
#ifdef __CUDACC__
// bf16 activations (the GPU only): x_proj's bf16 output split into dt_low | Bm | Cm, and the fp32
// gradients ddt_low | dBm | dCm joined into x_proj's bf16 operand
static void split_columns(bool on_gpu, bf16* a, bf16* b, bf16* c, const bf16* in, int N, int ca, int cb, int cc) {
    if (!on_gpu) FATAL("bf16 activations run on the GPU only");
    split_columns_cuda(a, b, c, in, N, ca, cb, cc);
}
static void concat_columns(bool on_gpu, bf16* out, const float* a, const float* b, const float* c, int N, int ca, int cb, int cc) {
    if (!on_gpu) FATAL("bf16 activations run on the GPU only");
    concat_columns_cuda(out, a, b, c, N, ca, cb, cc);
}
#endif
