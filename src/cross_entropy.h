// cross_entropy.h: fused softmax + cross-entropy; probabilities are never stored.
#pragma once
#include "common.h"

// logits: (BT, V), targets: (BT), losses: (BT) = -log softmax(logits)[target].
// If write_grad, logits is overwritten in place by (softmax - onehot) * dloss_scale.
// Targets < 0 are ignored: loss 0 and (if write_grad) grad 0.
static void cross_entropy_cpu(float* losses, floatX* logits, const int* targets, int BT, int V,
                              float dloss_scale, bool write_grad) {
#pragma omp parallel for
    for (int i = 0; i < BT; i++) {
        floatX* row = logits + (size_t)i * V;
        int tgt = targets[i];
        if (tgt < 0) {
            losses[i] = 0.0f;
            if (write_grad) for (int v = 0; v < V; v++) row[v] = (floatX)0.0f;
            continue;
        }
        float mx = -INFINITY;
        for (int v = 0; v < V; v++) mx = fmaxf(mx, (float)row[v]);  // subtract the max: no overflow
        double sum = 0.0;
        for (int v = 0; v < V; v++) sum += expf((float)row[v] - mx);
        float lse = mx + (float)log(sum);
        losses[i] = lse - (float)row[tgt];
        if (write_grad) {
            float inv = (float)(1.0 / sum);
            for (int v = 0; v < V; v++) {
                float p = expf((float)row[v] - mx) * inv;
                row[v] = (floatX)((p - (v == tgt ? 1.0f : 0.0f)) * dloss_scale);
            }
        }
    }
}

#ifdef __CUDACC__
// merge two (max, sum of exp(x - max)) pairs
__device__ __forceinline__ void ce_merge(float& m, float& s, float m2, float s2) {
    float mn = fmaxf(m, m2);
    if (mn == -INFINITY) return;  // both empty
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}

// one block per row. Pass 1: each thread keeps an online (max, sum); the pairs are
// merged across the warp with shuffles, then across warps in shared memory.
// Pass 2: write the gradient in place. The target logit is read before any write.
__global__ void cross_entropy_kernel(float* losses, floatX* logits, const int* targets, int BT, int V,
                                     float dloss_scale, bool write_grad) {
    __shared__ float sm_m[32], sm_s[32];
    int i = blockIdx.x;
    floatX* row = logits + (size_t)i * V;
    int tgt = targets[i];
    if (tgt < 0) {  // uniform across the block: no divergence at the barriers below
        if (threadIdx.x == 0) losses[i] = 0.0f;
        if (write_grad) for (int v = threadIdx.x; v < V; v += blockDim.x) row[v] = (floatX)0.0f;
        return;
    }
    float xt = (float)row[tgt];  // every thread reads it before the barrier; only thread 0 uses it
    float m = -INFINITY, s = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        float x = (float)row[v];
        if (x > m) { s = s * expf(m - x) + 1.0f; m = x; }
        else s += expf(x - m);
    }
    for (int off = 16; off > 0; off >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, off), s2 = __shfl_xor_sync(0xffffffffu, s, off);
        ce_merge(m, s, m2, s2);
    }
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
    if (lane == 0) { sm_m[warp] = m; sm_s[warp] = s; }
    __syncthreads();
    m = -INFINITY; s = 0.0f;
    for (int w = 0; w < nwarps; w++) ce_merge(m, s, sm_m[w], sm_s[w]);  // every thread, same order
    if (threadIdx.x == 0) losses[i] = m + logf(s) - xt;
    if (write_grad) {
        float inv = 1.0f / s;
        for (int v = threadIdx.x; v < V; v += blockDim.x) {
            float p = expf((float)row[v] - m) * inv;
            row[v] = (floatX)((p - (v == tgt ? 1.0f : 0.0f)) * dloss_scale);
        }
    }
}

static void cross_entropy_cuda(float* losses, floatX* logits, const int* targets, int BT, int V,
                               float dloss_scale, bool write_grad) {
    if (BT == 0) return;
    int block = V >= 4096 ? 1024 : 256;  // blockDim must be a multiple of 32 (<= 1024)
    cross_entropy_kernel<<<BT, block>>>(losses, logits, targets, BT, V, dloss_scale, write_grad);
    cudaCheckLaunch();
}
#endif
