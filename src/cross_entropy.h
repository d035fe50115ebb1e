// cross_entropy.h: fused softmax + cross-entropy; probabilities are never stored.
#pragma once
#include "common.h"
#include <cfloat>

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
// running (max m, sum s of exp(x - m)); m = -FLT_MAX with s = 0 is the empty state
struct CeMS { float m, s; };
__device__ __forceinline__ CeMS ce_merge(CeMS a, CeMS b) {
    float mn = fmaxf(a.m, b.m);
    return {mn, a.s * expf(a.m - mn) + b.s * expf(b.m - mn)};
}
// block-wide merge; every thread gets the result (the barriers also order all reads of the
// row before any thread writes the gradient)
__device__ __forceinline__ CeMS ce_block_merge(CeMS a) {
    __shared__ float sm_m[32], sm_s[32];
    for (int off = 16; off > 0; off >>= 1) {
        CeMS o = {__shfl_xor_sync(0xffffffffu, a.m, off), __shfl_xor_sync(0xffffffffu, a.s, off)};
        a = ce_merge(a, o);
    }
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
    if (lane == 0) { sm_m[warp] = a.m; sm_s[warp] = a.s; }
    __syncthreads();
    a = {-FLT_MAX, 0.0f};
    for (int w = 0; w < nwarps; w++) a = ce_merge(a, {sm_m[w], sm_s[w]});  // same order everywhere
    return a;
}

// One block per row (dev/cross_entropy.cu version 3; see dev/notes_kernels.md). One read pass
// with an online softmax over 16-byte Packed128 vectors (per vector: one max, one rescale of the
// running sum, VEC exps), a block merge, then the in-place gradient write with evict-first
// loads/stores (last touch of the row). A row is 16B-aligned only when V*sizeof(T) is, so
// the first `head` (< VEC) elements up to the next 16B boundary and the last `V - tail0` (< VEC)
// are done as scalars: any V works.
// T: the logits' type, fp32 or bf16 (the head's product rounded once: lm_head.h); the sums are fp32,
// the gradient goes in place of the logits, in their type.
template <typename T>
__global__ void __launch_bounds__(1024) cross_entropy_kernel(float* losses, T* logits, const int* targets,
                                                             int V, float dloss_scale, bool write_grad) {
    constexpr int VEC = Packed128<T>::size;
    int i = blockIdx.x;
    T* row = logits + (size_t)i * V;
    int tgt = targets[i];
    if (tgt < 0) {  // uniform across the block
        if (threadIdx.x == 0) losses[i] = 0.0f;
        if (write_grad) for (int v = threadIdx.x; v < V; v += blockDim.x) row[v] = from_f32<T>(0.0f);
        return;
    }
    float xt = threadIdx.x == 0 ? (float)row[tgt] : 0.0f;  // read before the barriers
    int head = (int)(((16 - ((uintptr_t)row & 15)) & 15) / sizeof(T));  // row is sizeof(T) aligned
    head = min(head, V);
    int nvec = (V - head) / VEC;
    int tail0 = head + nvec * VEC;
    T* rv = row + head;  // 16B aligned
    int tid = threadIdx.x;

    CeMS a = {-FLT_MAX, 0.0f};
    if (tid < head) a = ce_merge(a, {(float)row[tid], 1.0f});
    if (tail0 + tid < V) a = ce_merge(a, {(float)row[tail0 + tid], 1.0f});
    for (int k = tid; k < nvec; k += blockDim.x) {
        Packed128<T> v = load128(rv + (size_t)k * VEC);  // default policy: re-read in the write pass
        float vm = v.f(0);
#pragma unroll
        for (int j = 1; j < VEC; j++) vm = fmaxf(vm, v.f(j));
        float mn = fmaxf(a.m, vm);
        float s = a.s * expf(a.m - mn);
#pragma unroll
        for (int j = 0; j < VEC; j++) s += expf(v.f(j) - mn);
        a = {mn, s};
    }
    a = ce_block_merge(a);
    if (tid == 0) losses[i] = a.m + logf(a.s) - xt;
    if (!write_grad) return;
    float inv = dloss_scale / a.s;
    if (tid < head) {
        float p = expf((float)row[tid] - a.m) * inv;
        row[tid] = from_f32<T>(p - (tid == tgt ? dloss_scale : 0.0f));
    }
    if (tail0 + tid < V) {
        int c = tail0 + tid;
        float p = expf((float)row[c] - a.m) * inv;
        row[c] = from_f32<T>(p - (c == tgt ? dloss_scale : 0.0f));
    }
    for (int k = tid; k < nvec; k += blockDim.x) {
        Packed128<T> v = load128cs(rv + (size_t)k * VEC), o;
        int c0 = head + k * VEC;
#pragma unroll
        for (int j = 0; j < VEC; j++) o.set(j, expf(v.f(j) - a.m) * inv - (c0 + j == tgt ? dloss_scale : 0.0f));
        store128cs(row + c0, o);
    }
}

// blockDim: a multiple of 32, >= VEC (head/tail threads); big rows get the full 1024
template <typename T>
static void cross_entropy_launch(float* losses, T* logits, const int* targets, int BT, int V, float dloss_scale, bool write_grad) {
    if (BT == 0) return;
    int block = V >= 16384 ? 1024 : 256;
    cross_entropy_kernel<T><<<BT, block, 0, launch_stream()>>>(losses, logits, targets, V, dloss_scale, write_grad);
    cudaCheckLaunch();
}
static void cross_entropy_cuda(float* losses, floatX* logits, const int* targets, int BT, int V,
                               float dloss_scale, bool write_grad) {
    cross_entropy_launch(losses, logits, targets, BT, V, dloss_scale, write_grad);
}
// bf16 logits (the head's product rounded once); with write_grad the bf16 gradient in their place
static void cross_entropy_bf16_cuda(float* losses, bf16* logits, const int* targets, int BT, int V, float dloss_scale,
                                    bool write_grad) {
    cross_entropy_launch(losses, logits, targets, BT, V, dloss_scale, write_grad);
}
#endif

// ---------------------------------------------------------------------------
// backend wrapper (the convention of common.h): the models call this

static void cross_entropy(bool on_gpu, float* losses, floatX* logits, const int* targets, int BT, int V,
                          float dloss_scale, bool write_grad) {
    if (on_gpu) GPU_CALL(cross_entropy_cuda(losses, logits, targets, BT, V, dloss_scale, write_grad));
    else cross_entropy_cpu(losses, logits, targets, BT, V, dloss_scale, write_grad);
}
