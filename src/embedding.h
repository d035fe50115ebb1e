// embedding.h: token embedding lookup (the table is also the tied output head).
#pragma once
#include "common.h"

// tokens: (BT) ints in [0,V), wte: (V, C), out: (BT, C)
static void embedding_forward_cpu(floatX* out, const int* tokens, const float* wte, int BT, int C) {
#pragma omp parallel for
    for (int i = 0; i < BT; i++) {
        const float* row = wte + (size_t)tokens[i] * C;
        floatX* o = out + (size_t)i * C;
        for (int c = 0; c < C; c++) o[c] = (floatX)row[c];
    }
}

// dwte[tokens[i]] += dout[i]. Several rows may share a token, so threads split the channels, not
// the rows: each dwte element is summed by one thread in row order (the same bits for any number
// of threads, and no two threads write the same element).
static void embedding_backward_cpu(float* dwte, const floatX* dout, const int* tokens, int BT, int C) {
    const int CB = 16;  // channels per task: a 64-byte line of a dwte row, no false sharing
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += CB) {
        int c1 = c0 + CB < C ? c0 + CB : C;
        for (int i = 0; i < BT; i++) {
            float* d = dwte + (size_t)tokens[i] * C;
            const floatX* g = dout + (size_t)i * C;
            for (int c = c0; c < c1; c++) d[c] += (float)g[c];
        }
    }
}

#ifdef __CUDACC__
// one thread per (row, channel); consecutive threads read consecutive channels
__global__ void embedding_forward_kernel(floatX* out, const int* tokens, const float* wte, int BT, int C) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)BT * C) return;
    int i = (int)(idx / C), c = (int)(idx % C);
    out[idx] = (floatX)wte[(size_t)tokens[i] * C + c];
}

// atomics: rows with the same token collide; with vocab 256 that is common but cheap enough
__global__ void embedding_backward_kernel(float* dwte, const floatX* dout, const int* tokens, int BT, int C) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)BT * C) return;
    int i = (int)(idx / C), c = (int)(idx % C);
    atomicAdd(&dwte[(size_t)tokens[i] * C + c], (float)dout[idx]);
}

static void embedding_forward_cuda(floatX* out, const int* tokens, const float* wte, int BT, int C) {
    size_t n = (size_t)BT * C;
    if (n == 0) return;
    const int block = 256;
    embedding_forward_kernel<<<(unsigned)((n + block - 1) / block), block, 0, launch_stream()>>>(out, tokens, wte, BT, C);
    cudaCheckLaunch();
}

static void embedding_backward_cuda(float* dwte, const floatX* dout, const int* tokens, int BT, int C) {
    size_t n = (size_t)BT * C;
    if (n == 0) return;
    const int block = 256;
    embedding_backward_kernel<<<(unsigned)((n + block - 1) / block), block, 0, launch_stream()>>>(dwte, dout, tokens, BT, C);
    cudaCheckLaunch();
}
#endif

// ---------------------------------------------------------------------------
// backend wrappers (the convention of common.h): the models call these

static void embedding_forward(bool on_gpu, floatX* out, const int* tokens, const float* wte, int BT, int C) {
    if (on_gpu) GPU_CALL(embedding_forward_cuda(out, tokens, wte, BT, C));
    else embedding_forward_cpu(out, tokens, wte, BT, C);
}
// dwte NULL: a frozen table, nothing to do
static void embedding_backward(bool on_gpu, float* dwte, const floatX* dout, const int* tokens, int BT, int C) {
    if (!dwte) return;
    if (on_gpu) GPU_CALL(embedding_backward_cuda(dwte, dout, tokens, BT, C));
    else embedding_backward_cpu(dwte, dout, tokens, BT, C);
}
