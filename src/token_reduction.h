// token_reduction.h: fewer visual tokens for the LM, at inference. The P patch
// features of the ViT's feature layer ([CLS] dropped), a gh x gw grid in raster
// order, become P' <= P rows BEFORE the projector, so the LM sees P' image tokens.
//
//   none     P' = P, nothing runs
//   pool     2x2 average pooling of the grid: P' = ceil(gh/2) * ceil(gw/2) (= P/4 on an
//            even grid, i.e. the ratio 0.75 and only that one: ratio 0 means none).
//            On an odd grid the last row / column of windows is partial and averages
//            the patches it holds (PyTorch's avg_pool2d with ceil_mode=True,
//            count_include_pad=False)
//   random   P' = max(1, round(P (1 - R))) patches drawn without replacement, kept in
//            raster order; the draw depends only on (seed, image key): the same image
//            keeps the same patches in every batch and run
//   uniform  P' = max(1, round(P (1 - R))) patches on a spatially uniform grid, in
//            raster order: nr = max(ceil(P'/gw), min(gh, round(sqrt(P' gh/gw)))) evenly
//            spaced rows (row r = floor((r + 1/2) gh / nr)), P' split over them as evenly
//            as possible (the extra ones spread over the rows), each row's k columns
//            evenly spaced (column j = floor((j + 1/2) gw / k)). P' = P/4 on an even grid
//            is the strided grid (rows and columns 1, 3, 5, ...); P' = P is the identity
//
// The selections (random, uniform) are host index lists; the ops:
//   token_gather:  out[b, i] = in[b, idx[b, i]]      in: (B, P, C), idx: (B, K), out: (B, K, C)
//   token_pool2x2: out[b, oy*ow + ox] = mean of in[b, y*gw + x] over y in {2oy, 2oy+1} ∩ [0, gh),
//                  x in {2ox, 2ox+1} ∩ [0, gw)       in: (B, gh*gw, C), out: (B, oh*ow, C)
// Each output element is written by one thread, summed in the same (dy, dx) order on
// both backends, so the GPU equals the CPU bit for bit. Forward only: training keeps
// every token (R = 0), so there is no backward.
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>
#include "common.h"

typedef enum { REDUCE_NONE = 0, REDUCE_POOL, REDUCE_RANDOM, REDUCE_UNIFORM } ReduceMethod;
static const char* const REDUCE_NAMES[] = {"none", "pool", "random", "uniform"};

typedef struct {
    ReduceMethod method;
    float ratio;    // R: the fraction of the P tokens dropped, in [0, 1)
    uint64_t seed;  // random: with the image key, the draw
} TokenReduction;

static TokenReduction token_reduction_none() { return TokenReduction{REDUCE_NONE, 0.0f, 0}; }

// "none|pool|random|uniform" -> method; false for anything else
static bool token_reduction_parse(const std::string& name, ReduceMethod* out) {
    for (int i = 0; i < 4; i++)
        if (name == REDUCE_NAMES[i]) { *out = (ReduceMethod)i; return true; }
    return false;
}

// the ratio's problem, or "" when (method, ratio) is valid
static std::string token_reduction_check(ReduceMethod method, float ratio) {
    char got[64];
    snprintf(got, sizeof got, "%g", ratio);
    if (!(ratio >= 0.0f && ratio < 1.0f)) return std::string("the reduction ratio must be in [0, 1), got ") + got;
    if (method == REDUCE_POOL && ratio != 0.0f && ratio != 0.75f)
        return std::string("pool is 2x2 average pooling: it drops 3 of 4 tokens, ratio 0.75 only (0: no reduction), got ") + got +
               " (random and uniform take any ratio)";
    return "";
}

// P': the image tokens left of a gh x gw grid
static int token_reduction_count(const TokenReduction& r, int gh, int gw) {
    std::string err = token_reduction_check(r.method, r.ratio);
    if (!err.empty()) FATAL("%s", err.c_str());
    int P = gh * gw;
    if (r.method == REDUCE_NONE || r.ratio == 0.0f) return P;
    if (r.method == REDUCE_POOL) return ((gh + 1) / 2) * ((gw + 1) / 2);
    long k = lround((double)P * (1.0 - (double)r.ratio));
    return (int)std::max(1L, std::min((long)P, k));
}

// uniform: k of the gh x gw grid's indices, spatially even, in raster order (see the top)
static void token_select_uniform(int* idx, int gh, int gw, int k) {
    if (k < 1 || k > gh * gw) FATAL("token_select_uniform: %d tokens of a %dx%d grid", k, gh, gw);
    int nr = (int)lround(sqrt((double)k * gh / gw));
    nr = std::max(nr, (k + gw - 1) / gw);  // no row takes more than gw
    nr = std::max(1, std::min(nr, gh));
    int base = k / nr, extra = k % nr, n = 0;
    for (int r = 0; r < nr; r++) {
        int y = (int)(((long)2 * r + 1) * gh / (2L * nr));
        // the extra tokens spread over the rows: row r takes one when floor((r+1) e / nr) steps up
        int kr = base + (int)(((long)(r + 1) * extra) / nr - ((long)r * extra) / nr);
        for (int j = 0; j < kr; j++) idx[n++] = y * gw + (int)(((long)2 * j + 1) * gw / (2L * kr));
    }
}

// random: k distinct indices of [0, P) in increasing order, a function of (seed, key) only
static void token_select_random(int* idx, int P, int k, uint64_t seed, uint64_t key) {
    if (k < 1 || k > P) FATAL("token_select_random: %d tokens of %d", k, P);
    Rng r; rng_seed(&r, seed * 0x100000001B3ull ^ (key + 0x9E3779B97F4A7C15ull) * 0xBF58476D1CE4E5B9ull);
    std::vector<int> perm(P);
    for (int i = 0; i < P; i++) perm[i] = i;
    for (int i = 0; i < k; i++) {  // partial Fisher-Yates: perm[0..k) is a uniform k-subset
        int j = i + (int)(rng_u32(&r) % (uint32_t)(P - i));
        std::swap(perm[i], perm[j]);
    }
    std::sort(perm.begin(), perm.begin() + k);
    std::copy(perm.begin(), perm.begin() + k, idx);
}

// the kept indices of B rows, (B, K) into idx; keys: (B) image keys (random), nullptr: the row number
static void token_select(int* idx, const TokenReduction& r, int gh, int gw, int K, int B, const int* keys) {
    for (int b = 0; b < B; b++) {
        int* row = idx + (size_t)b * K;
        if (r.method == REDUCE_RANDOM) token_select_random(row, gh * gw, K, r.seed, keys ? (uint64_t)keys[b] : (uint64_t)b);
        else if (r.method == REDUCE_UNIFORM) token_select_uniform(row, gh, gw, K);
        else FATAL("token_select: %s does not select tokens", REDUCE_NAMES[r.method]);
    }
}

// ---------------------------------------------------------------------------
// CPU reference

static void token_gather_cpu(floatX* out, const floatX* in, const int* idx, int B, int P, int K, int C) {
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int i = 0; i < K; i++)
            memcpy(out + ((size_t)b * K + i) * C, in + ((size_t)b * P + idx[(size_t)b * K + i]) * C, C * sizeof(floatX));
}

static void token_pool2x2_cpu(floatX* out, const floatX* in, int B, int gh, int gw, int C) {
    int oh = (gh + 1) / 2, ow = (gw + 1) / 2;
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int o = 0; o < oh * ow; o++) {
            int y0 = 2 * (o / ow), x0 = 2 * (o % ow);
            int ny = std::min(2, gh - y0), nx = std::min(2, gw - x0);
            float inv = 1.0f / (float)(ny * nx);
            floatX* dst = out + ((size_t)b * oh * ow + o) * C;
            for (int c = 0; c < C; c++) {
                float s = 0.0f;
                for (int dy = 0; dy < ny; dy++)
                    for (int dx = 0; dx < nx; dx++) s += (float)in[((size_t)b * gh * gw + (size_t)(y0 + dy) * gw + x0 + dx) * C + c];
                dst[c] = (floatX)(s * inv);
            }
        }
}

// ---------------------------------------------------------------------------
// CUDA: one thread per output element

#ifdef __CUDACC__
__global__ void token_gather_kernel(floatX* out, const floatX* in, const int* idx, int B, int P, int K, int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)B * K * C) return;
    int c = (int)(i % C);
    size_t row = i / C;  // b * K + k
    size_t b = row / K;
    out[i] = in[(b * P + idx[row]) * C + c];
}

__global__ void token_pool2x2_kernel(floatX* out, const floatX* in, int B, int gh, int gw, int C) {
    int oh = (gh + 1) / 2, ow = (gw + 1) / 2;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)B * oh * ow * C) return;
    int c = (int)(i % C);
    size_t row = i / C;
    int o = (int)(row % ((size_t)oh * ow));
    size_t b = row / ((size_t)oh * ow);
    int y0 = 2 * (o / ow), x0 = 2 * (o % ow);
    int ny = min(2, gh - y0), nx = min(2, gw - x0);
    float inv = 1.0f / (float)(ny * nx);
    float s = 0.0f;
    for (int dy = 0; dy < ny; dy++)
        for (int dx = 0; dx < nx; dx++) s += to_f32(in[(b * gh * gw + (size_t)(y0 + dy) * gw + x0 + dx) * C + c]);
    out[i] = from_f32<floatX>(__fmul_rn(s, inv));  // no FMA contraction: the CPU's rounding
}

static void token_gather_cuda(floatX* out, const floatX* in, const int* idx, int B, int P, int K, int C) {
    size_t n = (size_t)B * K * C;
    if (n == 0) return;
    token_gather_kernel<<<(unsigned)((n + 255) / 256), 256>>>(out, in, idx, B, P, K, C);
    cudaCheckLaunch();
}

static void token_pool2x2_cuda(floatX* out, const floatX* in, int B, int gh, int gw, int C) {
    size_t n = (size_t)B * ((gh + 1) / 2) * ((gw + 1) / 2) * C;
    if (n == 0) return;
    token_pool2x2_kernel<<<(unsigned)((n + 255) / 256), 256>>>(out, in, B, gh, gw, C);
    cudaCheckLaunch();
}
#endif

// ---------------------------------------------------------------------------
// backend wrappers (idx on the backend)

static void token_gather(bool on_gpu, floatX* out, const floatX* in, const int* idx, int B, int P, int K, int C) {
    if (on_gpu) GPU_CALL(token_gather_cuda(out, in, idx, B, P, K, C));
    else token_gather_cpu(out, in, idx, B, P, K, C);
}

static void token_pool2x2(bool on_gpu, floatX* out, const floatX* in, int B, int gh, int gw, int C) {
    if (on_gpu) GPU_CALL(token_pool2x2_cuda(out, in, B, gh, gw, C));
    else token_pool2x2_cpu(out, in, B, gh, gw, C);
}
