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
//   salient  (ours) P' = max(1, round(P (1 - R))) patches chosen by pixel saliency with spatial
//            coverage; see "salient" below for the pseudocode and why
//   tome     not a selection: ToMe (Bolya et al. 2023) inside the vision encoder (src/tome.h): its
//            blocks merge similar tokens (bipartite soft matching on the attention keys, size-weighted
//            means, proportional attention) so that P' = max(1, round(P (1 - R))) patch tokens leave
//            the feature layer; each keeps the position of its representative patch (the B token the
//            merges landed in). src/vlm_model.h: vlm_encode_images
//   fastv    not before the projector: FastV (Chen et al. 2024) inside the LM. Blocks 0..L'-1
//            (L' = TokenReduction::layer, --fastv-layer) run on the whole sequence; block L''s
//            attention from the query token (the last prompt token: the first <sep> after
//            <image>, else the sequence's last token) ranks the P image tokens; the top
//            P' = max(1, round(P (1 - R))) stay (in their order) and blocks L'..L-1 run on the
//            shorter sequence (src/vlm_model.h: vlm_lm_forward). fastv_image_scores below.
//
// The selections (random, uniform, salient, fastv) are host index lists; the ops:
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

typedef enum { REDUCE_NONE = 0, REDUCE_POOL, REDUCE_RANDOM, REDUCE_UNIFORM, REDUCE_FASTV, REDUCE_SALIENT, REDUCE_TOME, REDUCE_NUM_METHODS } ReduceMethod;
static const char* const REDUCE_NAMES[] = {"none", "pool", "random", "uniform", "fastv", "salient", "tome"};

typedef struct {
    ReduceMethod method;
    float ratio;    // R: the fraction of the P tokens dropped, in [0, 1)
    uint64_t seed;  // random: with the image key, the draw
    int layer;      // fastv: the LM block L' whose attention ranks the image tokens (blocks < L' see all)
} TokenReduction;

static TokenReduction token_reduction_none() { return TokenReduction{REDUCE_NONE, 0.0f, 0, 0}; }

// "none|pool|random|uniform|fastv|salient|tome" -> method; false for anything else
static bool token_reduction_parse(const std::string& name, ReduceMethod* out) {
    for (int i = 0; i < REDUCE_NUM_METHODS; i++)
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
               " (random, uniform, fastv, salient and tome take any ratio)";
    return "";
}

// P': the image tokens left of a gh x gw grid (fastv: those the LM keeps from block L' on; tome: those
// leaving the vision encoder)
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

// top k of P scores: the k largest (ties: the lower index), returned in increasing index order
static void token_select_top(int* idx, const float* score, int P, int k) {
    if (k < 1 || k > P) FATAL("token_select_top: %d tokens of %d", k, P);
    std::vector<int> order(P);
    for (int i = 0; i < P; i++) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return score[a] > score[b]; });
    std::sort(order.begin(), order.begin() + k);
    std::copy(order.begin(), order.begin() + k, idx);
}

// ---------------------------------------------------------------------------
// salient (our method, for the scenes: 1-4 items on a 2x2 grid over a plain background)
//
//   bg[c]   = mean of the image's 4 corner pixels, channel c     (the plain background's colour)
//   sal[p]  = sum over patch p's pixels and channels of (x - bg[c])^2   (0 on pure background)
//   tau     = 0.05 * max_p sal[p]
//   region(p) = (y >= gh/2) * 2 + (x >= gw/2) for the patch at (y, x)    (the scene's 2x2 cells)
//   lists   = for each region, its patches with sal > tau, by saliency (highest first; ties: lower index)
//   keep    = round robin over the regions 0..3: each takes its next salient patch, until k are
//             kept or every list is empty; then the rest of the patches by saliency (highest first)
//   return keep in raster order
//
// Why: in these scenes most patches are empty background (1-4 items of 28x28 px on 64x64, and each
// item's cell has margins), and the questions are about the items only. The raw-pixel energy finds
// the item patches exactly at no cost (no ViT work: it reads the image) and, unlike a random or
// uniform grid, never spends tokens on black. Plain top-k saliency would give a large bright item all
// the budget and drop a small dark one (fatal to "how many", "is there" and "where"); the round robin
// over the four cells gives every present item an equal share first, so each item keeps some of its
// patches (and their ViT features, which carry the learned positions: "where" survives) down to 4
// tokens. Empty cells have no salient patch and take nothing while items need tokens; leftover budget
// (large P') goes to the next-most salient patches, so at R = 0 every patch is kept.
static void token_select_salient(int* idx, const float* sal, int gh, int gw, int k) {
    int P = gh * gw;
    if (k < 1 || k > P) FATAL("token_select_salient: %d tokens of %d", k, P);
    float mx = 0.0f;
    for (int p = 0; p < P; p++) mx = std::max(mx, sal[p]);
    float tau = 0.05f * mx;
    std::vector<int> order(P);
    for (int i = 0; i < P; i++) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return sal[a] > sal[b]; });
    std::vector<std::vector<int>> lists(4);
    for (int p : order)
        if (sal[p] > tau) lists[(p / gw >= gh / 2 ? 2 : 0) + (p % gw >= gw / 2 ? 1 : 0)].push_back(p);
    std::vector<char> taken(P, 0);
    int n = 0;
    for (size_t round = 0; n < k; round++) {
        bool any = false;
        for (int q = 0; q < 4 && n < k; q++)
            if (round < lists[q].size()) { taken[lists[q][round]] = 1; n++; any = true; }
        if (!any) break;
    }
    for (int p : order) {
        if (n >= k) break;
        if (!taken[p]) { taken[p] = 1; n++; }
    }
    for (int p = 0, i = 0; p < P; p++)
        if (taken[p]) idx[i++] = p;
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

// salient: sal (B, gh*gw) of images (B, H, W, 3) in patches of ps x ps (see above). The sums run
// in (py, px, c) order, products and sums rounded separately (the CUDA kernel does the same)
static void token_saliency_cpu(float* sal, const float* images, int B, int H, int W, int ps) {
    int gh = H / ps, gw = W / ps;
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int p = 0; p < gh * gw; p++) {
            const float* im = images + (size_t)b * H * W * 3;
            float bg[3];
            for (int c = 0; c < 3; c++) {
                float a = im[c] + im[(size_t)(W - 1) * 3 + c];
                a = a + im[(size_t)(H - 1) * W * 3 + c];
                a = a + im[((size_t)(H - 1) * W + W - 1) * 3 + c];
                bg[c] = a * 0.25f;
            }
            int y0 = (p / gw) * ps, x0 = (p % gw) * ps;
            float s = 0.0f;
            for (int py = 0; py < ps; py++)
                for (int px = 0; px < ps; px++)
                    for (int c = 0; c < 3; c++) {
                        float d = im[((size_t)(y0 + py) * W + x0 + px) * 3 + c] - bg[c];
                        float d2 = d * d;
                        s = s + d2;
                    }
            sal[(size_t)b * gh * gw + p] = s;
        }
}

// fastv: score (B, P) = the attention probability that the query row qrow[b] gives the image
// tokens [img0, img0 + P), averaged over the NH heads: per head the causal softmax of
// scale q_i . k_j over the keys j <= i = qrow[b] (all the keys that row sees), scale = 1/sqrt(hd).
// qkv: (B, T, 3C) rows [q | k | v] of the ranking block (its full, unpruned sequence).
static void fastv_image_scores_cpu(float* score, const floatX* qkv, const int* qrow, int B, int T, int C, int NH, int img0, int P) {
    int hd = C / NH;
    float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++) {
        int i = qrow[b];
        if (i < 0 || i >= T) FATAL("fastv_image_scores: query row %d outside [0, %d)", i, T);
        std::vector<float> p(i + 1), acc(P, 0.0f);
        for (int h = 0; h < NH; h++) {
            const floatX* q = qkv + ((size_t)b * T + i) * 3 * C + h * hd;
            float mx = -INFINITY;
            for (int j = 0; j <= i; j++) {
                const floatX* k = qkv + ((size_t)b * T + j) * 3 * C + C + h * hd;
                float d = 0.0f;
                for (int e = 0; e < hd; e++) d += (float)q[e] * (float)k[e];
                p[j] = d * scale;
                mx = std::max(mx, p[j]);
            }
            float sum = 0.0f;
            for (int j = 0; j <= i; j++) { p[j] = expf(p[j] - mx); sum += p[j]; }
            for (int t = 0; t < P; t++) acc[t] += img0 + t <= i ? p[img0 + t] / sum : 0.0f;
        }
        for (int t = 0; t < P; t++) score[(size_t)b * P + t] = acc[t] / (float)NH;
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

__global__ void token_saliency_kernel(float* sal, const float* images, int B, int H, int W, int ps) {
    int gh = H / ps, gw = W / ps;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)B * gh * gw) return;
    int p = (int)(i % ((size_t)gh * gw));
    size_t b = i / ((size_t)gh * gw);
    const float* im = images + b * H * W * 3;
    float bg[3];
    for (int c = 0; c < 3; c++) {
        float a = __fadd_rn(im[c], im[(size_t)(W - 1) * 3 + c]);
        a = __fadd_rn(a, im[(size_t)(H - 1) * W * 3 + c]);
        a = __fadd_rn(a, im[((size_t)(H - 1) * W + W - 1) * 3 + c]);
        bg[c] = __fmul_rn(a, 0.25f);
    }
    int y0 = (p / gw) * ps, x0 = (p % gw) * ps;
    float s = 0.0f;
    for (int py = 0; py < ps; py++)
        for (int px = 0; px < ps; px++)
            for (int c = 0; c < 3; c++) {
                float d = __fsub_rn(im[((size_t)(y0 + py) * W + x0 + px) * 3 + c], bg[c]);
                s = __fadd_rn(s, __fmul_rn(d, d));
            }
    sal[i] = s;
}

// fastv: one warp per (b, head): the probabilities of the query row into prob (B, NH, T)
__global__ void fastv_probs_kernel(float* prob, const floatX* qkv, const int* qrow, int B, int T, int C, int NH) {
    int bh = blockIdx.x, lane = threadIdx.x;
    int b = bh / NH, h = bh % NH, hd = C / NH;
    int i = qrow[b];
    float scale = 1.0f / sqrtf((float)hd);
    float* p = prob + (size_t)bh * T;
    const floatX* q = qkv + ((size_t)b * T + i) * 3 * C + h * hd;
    float mx = -INFINITY;
    for (int j = lane; j <= i; j += 32) {
        const floatX* k = qkv + ((size_t)b * T + j) * 3 * C + C + h * hd;
        float d = 0.0f;
        for (int e = 0; e < hd; e++) d += to_f32(q[e]) * to_f32(k[e]);
        p[j] = d * scale;
        mx = fmaxf(mx, p[j]);
    }
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, o));
    float sum = 0.0f;
    for (int j = lane; j <= i; j += 32) { p[j] = expf(p[j] - mx); sum += p[j]; }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, o);
    for (int j = lane; j <= i; j += 32) p[j] /= sum;
}

// one thread per (b, t): the mean over the heads (in head order) of the image token's probability
__global__ void fastv_mean_kernel(float* score, const float* prob, const int* qrow, int B, int T, int NH, int img0, int P) {
    size_t x = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (x >= (size_t)B * P) return;
    int t = (int)(x % P), b = (int)(x / P);
    float acc = 0.0f;
    if (img0 + t <= qrow[b])
        for (int h = 0; h < NH; h++) acc += prob[((size_t)b * NH + h) * T + img0 + t];
    score[x] = acc / (float)NH;
}

// device buffers of at least n elements, kept for the process and grown on demand
template <typename T> static T* token_reduction_scratch(int which, size_t n) {
    static void* buf[4] = {nullptr, nullptr, nullptr, nullptr};
    static size_t cap[4] = {0, 0, 0, 0};
    if (n * sizeof(T) > cap[which]) {
        if (buf[which]) cudaCheck(cudaFree(buf[which]));
        cap[which] = std::max(n * sizeof(T), (size_t)1024);
        cudaCheck(cudaMalloc(&buf[which], cap[which]));
    }
    return (T*)buf[which];
}

// on the device: d_score (B, P), qkv and d_qrow on the device
static void fastv_image_scores_cuda(float* d_score, const floatX* qkv, const int* d_qrow, int B, int T, int C, int NH, int img0, int P) {
    float* prob = token_reduction_scratch<float>(0, (size_t)B * NH * T);
    fastv_probs_kernel<<<B * NH, 32, 0, launch_stream()>>>(prob, qkv, d_qrow, B, T, C, NH);
    cudaCheckLaunch();
    size_t n = (size_t)B * P;
    fastv_mean_kernel<<<(unsigned)((n + 255) / 256), 256, 0, launch_stream()>>>(d_score, prob, d_qrow, B, T, NH, img0, P);
    cudaCheckLaunch();
}

static void token_saliency_cuda(float* d_sal, const float* d_images, int B, int H, int W, int ps) {
    size_t n = (size_t)B * (H / ps) * (W / ps);
    if (n == 0) return;
    token_saliency_kernel<<<(unsigned)((n + 255) / 256), 256, 0, launch_stream()>>>(d_sal, d_images, B, H, W, ps);
    cudaCheckLaunch();
}

static void token_gather_cuda(floatX* out, const floatX* in, const int* idx, int B, int P, int K, int C) {
    size_t n = (size_t)B * K * C;
    if (n == 0) return;
    token_gather_kernel<<<(unsigned)((n + 255) / 256), 256, 0, launch_stream()>>>(out, in, idx, B, P, K, C);
    cudaCheckLaunch();
}

static void token_pool2x2_cuda(floatX* out, const floatX* in, int B, int gh, int gw, int C) {
    size_t n = (size_t)B * ((gh + 1) / 2) * ((gw + 1) / 2) * C;
    if (n == 0) return;
    token_pool2x2_kernel<<<(unsigned)((n + 255) / 256), 256, 0, launch_stream()>>>(out, in, B, gh, gw, C);
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

// fastv scores to the host: score (B, P) host; qkv on the backend; qrow (B) host
static void fastv_image_scores(bool on_gpu, float* score, const floatX* qkv, const int* qrow, int B, int T, int C, int NH, int img0, int P) {
    if (!on_gpu) { fastv_image_scores_cpu(score, qkv, qrow, B, T, C, NH, img0, P); return; }
#ifdef __CUDACC__
    for (int b = 0; b < B; b++)
        if (qrow[b] < 0 || qrow[b] >= T) FATAL("fastv_image_scores: query row %d outside [0, %d)", qrow[b], T);
    int* d_q = token_reduction_scratch<int>(1, B);
    float* d_s = token_reduction_scratch<float>(2, (size_t)B * P);
    cudaCheck(cudaMemcpy(d_q, qrow, B * sizeof(int), cudaMemcpyHostToDevice));
    fastv_image_scores_cuda(d_s, qkv, d_q, B, T, C, NH, img0, P);
    cudaCheck(cudaMemcpy(score, d_s, (size_t)B * P * sizeof(float), cudaMemcpyDeviceToHost));
#else
    FATAL("built without CUDA");
#endif
}

// salient: saliency (B, gh*gw) to the host; images (B, H, W, 3) float on the backend
static void token_saliency(bool on_gpu, float* sal, const float* images, int B, int H, int W, int ps) {
    if (!on_gpu) { token_saliency_cpu(sal, images, B, H, W, ps); return; }
#ifdef __CUDACC__
    size_t n = (size_t)B * (H / ps) * (W / ps);
    float* d_s = token_reduction_scratch<float>(3, n);
    token_saliency_cuda(d_s, images, B, H, W, ps);
    cudaCheck(cudaMemcpy(sal, d_s, n * sizeof(float), cudaMemcpyDeviceToHost));
#else
    FATAL("built without CUDA");
#endif
}
