// tome.h: Token Merging (ToMe; Bolya et al. 2023, "Token Merging: Your ViT But Faster") inside a ViT,
// at inference: fewer tokens block after block, by merging similar ones instead of dropping them.
//
// Tokens of one image: T rows, [CLS] first (row 0), then the patch tokens. Each token carries a size
// s (how many of the original P + 1 rows it stands for; 1 at the start) and a representative rep (the
// original row it stands for: 0 for [CLS], 1 + p for patch p). Block l of a ToMe encoder, with r_l
// merges (transformer.h's two block halves):
//
//   x'   = x + attn(LN1(x))           proportional attention: softmax(q k^T / sqrt(hd) + log s_key),
//                                     the log of each KEY's size added to its score (a token that
//                                     stands for s patches weighs as s copies of itself; while every
//                                     size is 1 the plain attention runs, bit for bit)
//   if r_l > 0, bipartite soft matching on x' (tome_match):
//     m_i  = mean over the heads of token i's attention key k_i        (hd values; tome_key_mean)
//     A    = the tokens at even rows 0, 2, 4, ..., B = the odd rows 1, 3, 5, ...   (alternating)
//     for each A token a except [CLS] (row 0, in A: never merged, never a destination):
//       best(a) = argmax over b in B of cos(m_a, m_b)    (ties: the lowest row; a zero key: cosine 0)
//     the r_l A tokens with the highest cos(a, best(a)) (ties: the lower row) merge, each into its
//     best(a); every other token (A or B) stays.
//     merge: the destination becomes the size-weighted mean of itself and the tokens merged into it,
//       x_dst = sum_i s_i x_i / sum_i s_i,   s_dst = sum_i s_i,   rep_dst unchanged;
//     a token nobody merged into is copied unchanged. Rows keep their order (the merged sources
//     leave), so rows stay in increasing rep order: [CLS] first, then the patches in raster order of
//     their representatives.
//   x''  = x'_merged + MLP(LN2(x'_merged))             (T - r_l rows)
//
// Schedule (tome_schedule): P patch tokens, P' = max(1, round(P (1 - R))) wanted after L blocks.
// A block can merge at most floor(N/2) of its N patch tokens (the A tokens but [CLS]), so
// P' >= ceil(P / 2^L) (else FATAL: the ratio is too high for L blocks). With N_l patch tokens at
// block l's input (N_0 = P):
//   r_l = min(floor(N_l / 2), max(ceil((N_l - P') / (L - l)), N_l - P' 2^(L-l-1)))
// i.e. what is left split evenly over the blocks left (the larger parts first), raised where the
// blocks after could not finish otherwise (each can at most halve). The last block ends at P'.
// Examples, P = 64, L = 3: R 0.25 -> r = 6 5 5; R 0.5 -> 11 11 10; R 0.75 -> 16 16 16;
// R 0.875 -> 32 16 8.
//
// Ops (CPU reference + CUDA, one thread per output element, the same summation order: the GPU
// equals the CPU bit for bit where the CPU is compiled without FMA contraction):
//   tome_key_mean: metric[b, t, d] = (sum_h k[b, t, h hd + d]) / NH     qkv: (B, T, 3C) -> (B, T, hd) float
//   tome_best_match: for the i-th A row a = 2 + 2i of image b (i < nA = ceil(T/2) - 1, [CLS] left out):
//                  score[b, i] = max over the B rows j of cos(m_a, m_j), best[b, i] = the first such j;
//                  cos = (m_a . m_j) inv_a inv_j, inv = 1 / sqrt(m . m) (0 for a zero key), sums in d
//                  order, float                                      metric (B, T, hd) -> (B, nA) twice
//   tome_select_batch: dst[b] = tome_select(score[b], best[b], T, r) for each image: the A row of rank
//                  k (stable sort by score, descending) merges iff k < r    score, best (B, nA) -> dst (B, T)
//                  (GPU: one thread block per image, each A row counts the rows ranked above it)
//   tome_merge_groups: tome_groups on the backend: dst, size, rep (B, T) -> off (B T2 + 1), mem (B T),
//                  size2, rep2 (B, T2)     (GPU: one thread per row left, reading its image's dst)
//   tome_size_bias: bias[i] = log_table[size[i]] (sizes are whole numbers; log_table[k] = logf(k), made
//                  on the host, so both backends add the same bias)           size (n) -> bias (n)
//   tome_init:     size = 1, rep[b, t] = t                                    (B, T)
//   token_merge:   out[g] = x[mem[off[g]]] for a group of one row, else
//                  (sum_k w[mem[k]] x[mem[k]]) / (sum_k w[mem[k]]), k in [off[g], off[g+1]) in order
//                  x: (rows, C), w: (rows) float, off: (G + 1), mem: rows of x; out: (G, C)
// The whole matching and merge run on the backend: a ToMe forward waits for the host nowhere (the
// number of rows after each block is the schedule's). The sizes, representatives and the merge
// decisions stay there until tome_fetch copies them to the host (TomeRun's size, rep, dst_log).
// Forward only.
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>
#include "common.h"
#include "transformer.h"

// the fewest patch tokens L blocks can leave of P: ceil(P / 2^L)
static int tome_min_tokens(int P, int L) {
    long n = P;
    for (int l = 0; l < L && n > 1; l++) n = (n + 1) / 2;
    return (int)n;
}

// merges per block (see the top); FATAL when L blocks cannot reach P_out
static std::vector<int> tome_schedule(int P, int P_out, int L) {
    if (L < 1) FATAL("tome: no block to merge in");
    if (P_out < 1 || P_out > P) FATAL("tome: %d tokens wanted of %d", P_out, P);
    int lo = tome_min_tokens(P, L);
    if (P_out < lo)
        FATAL("tome: %d blocks can merge %d patch tokens down to %d at the fewest (each block merges at most half of its "
              "tokens), not %d: use a lower ratio", L, P, lo, P_out);
    std::vector<int> r(L, 0);
    long N = P;
    for (int l = 0; l < L; l++) {
        long rem = N - P_out, left = L - l;
        long even = (rem + left - 1) / left;
        long need = left - 1 >= 40 ? 0 : N - (long)P_out * (1L << (left - 1));  // the blocks after can at most halve
        long rl = std::min(N / 2, std::max(even, need));
        r[l] = (int)std::max(0L, rl);
        N -= r[l];
    }
    if (N != P_out) FATAL("tome_schedule: internal error (%ld tokens left, %d wanted)", N, P_out);
    return r;
}

// The second half of the matching for one image: score, best (nA = ceil(T/2) - 1, tome_best_match's)
// -> dst (T): -1 for a token that stays, else the row (odd) of the B token it merges into; the r A
// rows with the highest score merge (ties: the lower row first).
static void tome_select(int* dst, const float* score, const int* best, int T, int r) {
    int nA = (T + 1) / 2 - 1;
    if (r < 0 || r > nA) FATAL("tome_select: %d merges of %d tokens (at most %d)", r, T, nA);
    for (int i = 0; i < T; i++) dst[i] = -1;
    std::vector<int> order(nA);
    for (int i = 0; i < nA; i++) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return score[x] > score[y]; });
    for (int k = 0; k < r; k++) dst[2 + 2 * order[k]] = best[order[k]];
}

static void tome_best_match_cpu(float* score, int* best, const float* metric, int B, int T, int hd);

// Bipartite soft matching of one image on the host (see the top): metric (T, hd), [CLS] at row 0;
// r merges -> dst (T) as tome_select's
static void tome_match(int* dst, const float* metric, int T, int hd, int r) {
    int nA = (T + 1) / 2 - 1;
    if (r < 0 || r > nA) FATAL("tome_match: %d merges of %d tokens (at most %d)", r, T, nA);
    std::vector<float> score(std::max(nA, 1));
    std::vector<int> best(std::max(nA, 1));
    tome_best_match_cpu(score.data(), best.data(), metric, 1, T, hd);
    tome_select(dst, score.data(), best.data(), T, r);
}

// The groups of one merge, for B images of T rows with dst (B, T) (tome_match's): the T2 = T - r rows
// left per image, in order; group g = b T2 + o holds its row and the rows merged into it, in
// increasing order, as rows of the (B, T) input: off (B T2 + 1), mem (B T). size, rep (B, T) become
// (B, T2): sizes summed, representatives of the rows left. Returns T2.
static int tome_groups(std::vector<int>* off, std::vector<int>* mem, std::vector<float>* size, std::vector<int>* rep,
                       const int* dst, int B, int T) {
    int r = 0;
    for (int i = 0; i < T; i++) r += dst[i] >= 0;
    int T2 = T - r;
    off->assign((size_t)B * T2 + 1, 0);
    mem->assign((size_t)B * T, 0);
    std::vector<float> s2((size_t)B * T2, 0.0f);
    std::vector<int> rep2((size_t)B * T2), out_of(T), fill(T2);
    for (int b = 0; b < B; b++) {
        const int* d = dst + (size_t)b * T;
        int o = 0;
        for (int i = 0; i < T; i++) {  // the rows left, in order: their output index
            out_of[i] = -1;
            if (d[i] >= 0) continue;
            if (o >= T2) FATAL("tome_groups: image %d merges fewer tokens than image 0 (a batch merges the same number)", b);
            rep2[(size_t)b * T2 + o] = (*rep)[(size_t)b * T + i];
            out_of[i] = o++;
        }
        if (o != T2) FATAL("tome_groups: image %d merges %d tokens, image 0 %d (a batch merges the same number)", b, T - o, r);
        size_t g0 = (size_t)b * T2;
        for (int j = 0; j < T; j++) {  // group sizes (members), then the offsets
            int i = d[j] >= 0 ? d[j] : j;
            if (d[j] >= 0 && (i >= T || i % 2 != 1 || d[i] >= 0)) FATAL("tome_groups: row %d merges into row %d (not a B row that stays)", j, i);
            (*off)[g0 + out_of[i] + 1]++;
        }
        for (int o2 = 0; o2 < T2; o2++) (*off)[g0 + o2 + 1] += (*off)[g0 + o2];
        for (int o2 = 0; o2 < T2; o2++) fill[o2] = (*off)[g0 + o2];
        for (int j = 0; j < T; j++) {  // members in increasing row order; sizes summed in that order
            int g = out_of[d[j] >= 0 ? d[j] : j];
            (*mem)[fill[g]++] = b * T + j;
            s2[g0 + g] += (*size)[(size_t)b * T + j];
        }
    }
    *size = s2;
    *rep = rep2;
    return T2;
}

// ---------------------------------------------------------------------------
// CPU reference

static void tome_key_mean_cpu(float* metric, const floatX* qkv, int B, int T, int C, int NH) {
    int hd = C / NH;
#pragma omp parallel for collapse(2)
    for (int bt = 0; bt < B * T; bt++)
        for (int d = 0; d < hd; d++) {
            const floatX* k = qkv + (size_t)bt * 3 * C + C;
            float s = 0.0f;
            for (int h = 0; h < NH; h++) s = s + (float)k[h * hd + d];
            metric[(size_t)bt * hd + d] = s / (float)NH;
        }
}

static float tome_inv_norm_cpu(const float* m, int hd) {
    float n = 0.0f;
    for (int d = 0; d < hd; d++) { float p = m[d] * m[d]; n = n + p; }
    return n > 0.0f ? 1.0f / sqrtf(n) : 0.0f;
}

static void tome_best_match_cpu(float* score, int* best, const float* metric, int B, int T, int hd) {
    int nA = (T + 1) / 2 - 1;
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int i = 0; i < nA; i++) {
            const float* ma = metric + ((size_t)b * T + 2 + 2 * i) * hd;
            float ia = tome_inv_norm_cpu(ma, hd), top = -INFINITY;
            int arg = -1;
            for (int j = 1; j < T; j += 2) {
                const float* mb = metric + ((size_t)b * T + j) * hd;
                float dot = 0.0f;
                for (int d = 0; d < hd; d++) { float p = ma[d] * mb[d]; dot = dot + p; }
                float c = dot * ia;
                c = c * tome_inv_norm_cpu(mb, hd);
                if (c > top) { top = c; arg = j; }
            }
            score[(size_t)b * nA + i] = top;
            best[(size_t)b * nA + i] = arg;
        }
}

static void token_merge_cpu(floatX* out, const floatX* x, const float* w, const int* off, const int* mem, int G, int C) {
#pragma omp parallel for collapse(2)
    for (int g = 0; g < G; g++)
        for (int c = 0; c < C; c++) {
            int k0 = off[g], k1 = off[g + 1];
            if (k1 - k0 == 1) { out[(size_t)g * C + c] = x[(size_t)mem[k0] * C + c]; continue; }
            float s = 0.0f, ws = 0.0f;
            for (int k = k0; k < k1; k++) {
                float wk = w[mem[k]];
                float p = wk * (float)x[(size_t)mem[k] * C + c];
                s = s + p;
                ws = ws + wk;
            }
            out[(size_t)g * C + c] = (floatX)(s / ws);
        }
}

static void tome_select_batch_cpu(int* dst, const float* score, const int* best, int B, int T, int r) {
    int nA = (T + 1) / 2 - 1;
    for (int b = 0; b < B; b++) tome_select(dst + (size_t)b * T, score + (size_t)b * nA, best + (size_t)b * nA, T, r);
}

static void tome_merge_groups_cpu(int* off, int* mem, float* size2, int* rep2, const int* dst, const float* size, const int* rep,
                                  int B, int T, int T2) {
    std::vector<int> o, m, rp(rep, rep + (size_t)B * T);
    std::vector<float> sz(size, size + (size_t)B * T);
    int got = tome_groups(&o, &m, &sz, &rp, dst, B, T);
    if (got != T2) FATAL("tome_merge_groups: %d rows left per image, %d expected", got, T2);
    std::copy(o.begin(), o.end(), off);
    std::copy(m.begin(), m.end(), mem);
    std::copy(sz.begin(), sz.end(), size2);
    std::copy(rp.begin(), rp.end(), rep2);
}

static void tome_size_bias_cpu(float* bias, const float* size, const float* log_table, int n) {
    for (int i = 0; i < n; i++) bias[i] = log_table[(int)size[i]];
}

static void tome_init_cpu(float* size, int* rep, int B, int T) {
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) { size[(size_t)b * T + t] = 1.0f; rep[(size_t)b * T + t] = t; }
}

// ---------------------------------------------------------------------------
// CUDA: one thread per output element, the CPU's order and rounding (no FMA contraction)

#ifdef __CUDACC__
__global__ void tome_key_mean_kernel(float* metric, const floatX* qkv, int B, int T, int C, int NH) {
    int hd = C / NH;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)B * T * hd) return;
    int d = (int)(i % hd);
    size_t bt = i / hd;
    const floatX* k = qkv + bt * 3 * C + C;
    float s = 0.0f;
    for (int h = 0; h < NH; h++) s = __fadd_rn(s, to_f32(k[h * hd + d]));
    metric[i] = __fdiv_rn(s, (float)NH);
}

__device__ float tome_inv_norm_dev(const float* m, int hd) {
    float n = 0.0f;
    for (int d = 0; d < hd; d++) n = __fadd_rn(n, __fmul_rn(m[d], m[d]));
    return n > 0.0f ? __fdiv_rn(1.0f, __fsqrt_rn(n)) : 0.0f;
}

// one thread per (b, A row)
__global__ void tome_best_match_kernel(float* score, int* best, const float* metric, int B, int T, int hd) {
    int nA = (T + 1) / 2 - 1;
    size_t x = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (x >= (size_t)B * nA) return;
    int i = (int)(x % nA);
    size_t b = x / nA;
    const float* ma = metric + (b * T + 2 + 2 * i) * hd;
    float ia = tome_inv_norm_dev(ma, hd), top = -INFINITY;
    int arg = -1;
    for (int j = 1; j < T; j += 2) {
        const float* mb = metric + (b * T + j) * hd;
        float dot = 0.0f;
        for (int d = 0; d < hd; d++) dot = __fadd_rn(dot, __fmul_rn(ma[d], mb[d]));
        float c = __fmul_rn(__fmul_rn(dot, ia), tome_inv_norm_dev(mb, hd));
        if (c > top) { top = c; arg = j; }
    }
    score[x] = top;
    best[x] = arg;
}

__global__ void token_merge_kernel(floatX* out, const floatX* x, const float* w, const int* off, const int* mem, int G, int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)G * C) return;
    int c = (int)(i % C);
    size_t g = i / C;
    int k0 = off[g], k1 = off[g + 1];
    if (k1 - k0 == 1) { out[i] = x[(size_t)mem[k0] * C + c]; return; }
    float s = 0.0f, ws = 0.0f;
    for (int k = k0; k < k1; k++) {
        float wk = w[mem[k]];
        s = __fadd_rn(s, __fmul_rn(wk, to_f32(x[(size_t)mem[k] * C + c])));
        ws = __fadd_rn(ws, wk);
    }
    out[i] = from_f32<floatX>(__fdiv_rn(s, ws));
}

// one block per image; A row i's rank in the CPU's stable sort (descending score, ties: the lower
// row first) is the number of A rows with a higher score plus the lower rows with an equal one
__global__ void tome_select_batch_kernel(int* dst, const float* score, const int* best, int B, int T, int r) {
    extern __shared__ float sc[];  // (nA) this image's scores
    int nA = (T + 1) / 2 - 1;
    size_t b = blockIdx.x;
    for (int i = threadIdx.x; i < nA; i += blockDim.x) sc[i] = score[b * nA + i];
    __syncthreads();
    for (int t = threadIdx.x; t < T; t += blockDim.x) {
        int d = -1;
        if (t >= 2 && t % 2 == 0) {
            int i = t / 2 - 1, rank = 0;
            float x = sc[i];
            for (int j = 0; j < nA && rank < r; j++) rank += (sc[j] > x) || (j < i && !(x > sc[j]));
            if (rank < r) d = best[b * nA + i];
        }
        dst[b * T + t] = d;
    }
}

// one thread per (image, row); the rows that stay write their group: out index o = the rows left
// before it, offset = the rows whose destination (or themselves) lies before it, members in order
__global__ void tome_merge_groups_kernel(int* off, int* mem, float* size2, int* rep2, const int* dst, const float* size, const int* rep,
                                         int B, int T, int T2) {
    size_t x = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (x == 0) off[(size_t)B * T2] = B * T;
    if (x >= (size_t)B * T) return;
    int i = (int)(x % T);
    size_t b = x / T;
    const int* d = dst + b * T;
    if (d[i] >= 0) return;
    int o = 0, before = 0;
    for (int j = 0; j < T; j++) {
        int root = d[j] >= 0 ? d[j] : j;
        o += j < i && d[j] < 0;
        before += root < i;
    }
    size_t g = b * T2 + o;
    int k = (int)(b * T) + before;
    off[g] = k;
    float s = 0.0f;
    for (int j = 0; j < T; j++) {
        int root = d[j] >= 0 ? d[j] : j;
        if (root != i) continue;
        mem[k++] = (int)(b * T) + j;
        s = __fadd_rn(s, size[b * T + j]);
    }
    size2[g] = s;
    rep2[g] = rep[b * T + i];
}

__global__ void tome_size_bias_kernel(float* bias, const float* size, const float* log_table, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) bias[i] = log_table[(int)size[i]];
}

__global__ void tome_init_kernel(float* size, int* rep, int B, int T) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)B * T) return;
    size[i] = 1.0f;
    rep[i] = (int)(i % T);
}

static void tome_key_mean_cuda(float* metric, const floatX* qkv, int B, int T, int C, int NH) {
    size_t n = (size_t)B * T * (C / NH);
    if (n == 0) return;
    tome_key_mean_kernel<<<(unsigned)((n + 255) / 256), 256, 0, launch_stream()>>>(metric, qkv, B, T, C, NH);
    cudaCheckLaunch();
}

static void tome_best_match_cuda(float* score, int* best, const float* metric, int B, int T, int hd) {
    size_t n = (size_t)B * ((T + 1) / 2 - 1);
    if (n == 0) return;
    tome_best_match_kernel<<<(unsigned)((n + 127) / 128), 128, 0, launch_stream()>>>(score, best, metric, B, T, hd);
    cudaCheckLaunch();
}

static void token_merge_cuda(floatX* out, const floatX* x, const float* w, const int* off, const int* mem, int G, int C) {
    size_t n = (size_t)G * C;
    if (n == 0) return;
    token_merge_kernel<<<(unsigned)((n + 255) / 256), 256, 0, launch_stream()>>>(out, x, w, off, mem, G, C);
    cudaCheckLaunch();
}

static void tome_select_batch_cuda(int* dst, const float* score, const int* best, int B, int T, int r) {
    int nA = (T + 1) / 2 - 1;
    if (r < 0 || r > std::max(nA, 0)) FATAL("tome_select: %d merges of %d tokens (at most %d)", r, T, nA);
    size_t shm = (size_t)std::max(nA, 1) * sizeof(float);
    if (shm > 48 * 1024) FATAL("tome_select_batch_cuda: %d tokens exceed the kernel's shared memory", T);
    if (B == 0 || T == 0) return;
    tome_select_batch_kernel<<<B, 128, shm, launch_stream()>>>(dst, score, best, B, T, r);
    cudaCheckLaunch();
}

static void tome_merge_groups_cuda(int* off, int* mem, float* size2, int* rep2, const int* dst, const float* size, const int* rep,
                                   int B, int T, int T2) {
    size_t n = std::max((size_t)B * T, (size_t)1);
    tome_merge_groups_kernel<<<(unsigned)((n + 127) / 128), 128, 0, launch_stream()>>>(off, mem, size2, rep2, dst, size, rep, B, T, T2);
    cudaCheckLaunch();
}

static void tome_size_bias_cuda(float* bias, const float* size, const float* log_table, int n) {
    if (n == 0) return;
    tome_size_bias_kernel<<<(n + 255) / 256, 256, 0, launch_stream()>>>(bias, size, log_table, n);
    cudaCheckLaunch();
}

static void tome_init_cuda(float* size, int* rep, int B, int T) {
    size_t n = (size_t)B * T;
    if (n == 0) return;
    tome_init_kernel<<<(unsigned)((n + 255) / 256), 256, 0, launch_stream()>>>(size, rep, B, T);
    cudaCheckLaunch();
}
#endif

// backend wrappers (pointers on the backend)
static void tome_key_mean(bool on_gpu, float* metric, const floatX* qkv, int B, int T, int C, int NH) {
    if (on_gpu) GPU_CALL(tome_key_mean_cuda(metric, qkv, B, T, C, NH));
    else tome_key_mean_cpu(metric, qkv, B, T, C, NH);
}
static void tome_best_match(bool on_gpu, float* score, int* best, const float* metric, int B, int T, int hd) {
    if (on_gpu) GPU_CALL(tome_best_match_cuda(score, best, metric, B, T, hd));
    else tome_best_match_cpu(score, best, metric, B, T, hd);
}
static void token_merge(bool on_gpu, floatX* out, const floatX* x, const float* w, const int* off, const int* mem, int G, int C) {
    if (on_gpu) GPU_CALL(token_merge_cuda(out, x, w, off, mem, G, C));
    else token_merge_cpu(out, x, w, off, mem, G, C);
}
static void tome_select_batch(bool on_gpu, int* dst, const float* score, const int* best, int B, int T, int r) {
    if (on_gpu) GPU_CALL(tome_select_batch_cuda(dst, score, best, B, T, r));
    else tome_select_batch_cpu(dst, score, best, B, T, r);
}
static void tome_merge_groups(bool on_gpu, int* off, int* mem, float* size2, int* rep2, const int* dst, const float* size, const int* rep,
                              int B, int T, int T2) {
    if (on_gpu) GPU_CALL(tome_merge_groups_cuda(off, mem, size2, rep2, dst, size, rep, B, T, T2));
    else tome_merge_groups_cpu(off, mem, size2, rep2, dst, size, rep, B, T, T2);
}
static void tome_size_bias(bool on_gpu, float* bias, const float* size, const float* log_table, int n) {
    if (on_gpu) GPU_CALL(tome_size_bias_cuda(bias, size, log_table, n));
    else tome_size_bias_cpu(bias, size, log_table, n);
}
static void tome_init(bool on_gpu, float* size, int* rep, int B, int T) {
    if (on_gpu) GPU_CALL(tome_init_cuda(size, rep, B, T));
    else tome_init_cpu(size, rep, B, T);
}

// ---------------------------------------------------------------------------
// a ToMe encoder run: the state of the tokens, and its buffers

typedef struct {
    bool on_gpu;
    int B, T;                  // images and tokens per image now ([CLS] first)
    int Bmax, Tmax, C, NH, Lmax;  // the buffers' sizes (Lmax: the most blocks a forward runs)
    // on the host: filled by tome_forward on the CPU, by tome_fetch on the GPU (empty until then)
    std::vector<float> size;   // (B, T) the rows each token stands for
    std::vector<int> rep;      // (B, T) the original row each token stands for
    std::vector<std::vector<int>> dst_log;    // dst (B, T_l) of every merging block of the last run (tests)
    std::vector<std::vector<int>> force_dst;  // tests: use these dst instead of the matching (same order)
    std::vector<size_t> log_at, log_n;        // where each merging block's dst sits in d_dst (elements)
    // on the backend
    float *metric, *bias;            // (Bmax, Tmax, hd), (Bmax, Tmax)
    float* score; int* best;         // (Bmax, Tmax / 2) each A row's best similarity and B row
    int *d_off, *d_mem;              // (Bmax Tmax + 1), (Bmax Tmax) the last merge's groups
    float* d_size[2]; int* d_rep[2]; // (Bmax, Tmax) each: the sizes and representatives, before and after a merge
    int cur;                         // which of the two holds the current ones
    int* d_dst;                      // (Lmax, Bmax, Tmax) every merging block's dst, one after the other
    float* log_table;                // (Tmax + 1) logf(k)
} TomeRun;

static void tome_alloc(TomeRun* s, bool on_gpu, int Bmax, int Tmax, int C, int NH, int Lmax) {
    *s = TomeRun();
    s->on_gpu = on_gpu; s->Bmax = Bmax; s->Tmax = Tmax; s->C = C; s->NH = NH; s->Lmax = Lmax;
    size_t n = (size_t)Bmax * Tmax;
    s->metric = (float*)backend_malloc(on_gpu, n * (C / NH) * sizeof(float));
    s->bias = (float*)backend_malloc(on_gpu, n * sizeof(float));
    s->score = (float*)backend_malloc(on_gpu, n * sizeof(float));
    s->best = (int*)backend_malloc(on_gpu, n * sizeof(int));
    s->d_off = (int*)backend_malloc(on_gpu, (n + 1) * sizeof(int));
    s->d_mem = (int*)backend_malloc(on_gpu, n * sizeof(int));
    for (int k = 0; k < 2; k++) {
        s->d_size[k] = (float*)backend_malloc(on_gpu, n * sizeof(float));
        s->d_rep[k] = (int*)backend_malloc(on_gpu, n * sizeof(int));
    }
    s->d_dst = (int*)backend_malloc(on_gpu, (size_t)std::max(Lmax, 1) * n * sizeof(int));
    std::vector<float> lt(Tmax + 1);
    for (int k = 0; k <= Tmax; k++) lt[k] = logf((float)k);
    s->log_table = (float*)backend_malloc(on_gpu, lt.size() * sizeof(float));
    backend_copy(on_gpu, s->log_table, lt.data(), lt.size() * sizeof(float), true);
}

static void tome_free(TomeRun* s) {
    if (!s->metric) return;
    for (void* p : {(void*)s->metric, (void*)s->bias, (void*)s->score, (void*)s->best, (void*)s->d_off, (void*)s->d_mem,
                    (void*)s->d_size[0], (void*)s->d_size[1], (void*)s->d_rep[0], (void*)s->d_rep[1], (void*)s->d_dst, (void*)s->log_table})
        backend_free(s->on_gpu, p);
    s->metric = nullptr;
}

// the last tome_forward's sizes and representatives (B, T) and merge decisions, backend -> s->size,
// s->rep, s->dst_log (on the GPU: waits for the forward)
static void tome_fetch(TomeRun* s) {
    size_t n = (size_t)s->B * s->T;
    s->size.resize(n);
    s->rep.resize(n);
    backend_copy(s->on_gpu, s->size.data(), s->d_size[s->cur], n * sizeof(float), false);
    backend_copy(s->on_gpu, s->rep.data(), s->d_rep[s->cur], n * sizeof(int), false);
    s->dst_log.assign(s->log_at.size(), std::vector<int>());
    for (size_t k = 0; k < s->log_at.size(); k++) {
        s->dst_log[k].resize(s->log_n[k]);
        backend_copy(s->on_gpu, s->dst_log[k].data(), s->d_dst + s->log_at[k], s->log_n[k] * sizeof(int), false);
    }
}

// Runs blocks 0 .. n_blocks - 1 of t on the B images of T0 rows in t->acts[0].resid ([CLS] first),
// merging sched[l] tokens in block l (see the top); the output, B images of T rows, is where
// transformer_forward puts it (acts[n_blocks].resid, or t->out after the last block). Returns T. The
// sizes and representatives of the output rows (B, T) and the merge decisions stay on the backend:
// s->size, s->rep, s->dst_log hold them on the CPU at once, on the GPU after tome_fetch. scratch: a backend buffer of (B, T0, C) for the merged rows. With every
// sched[l] = 0 the calls are transformer_forward's.
static int tome_forward(Transformer* t, TomeRun* s, const std::vector<int>& sched, floatX* scratch, int B, int T0, int n_blocks) {
    bool on_gpu = s->on_gpu;
    int C = t->cfg.d_model, NH = t->cfg.n_head, hd = C / NH;
    if ((int)sched.size() < n_blocks) FATAL("tome_forward: %zu scheduled blocks, %d run", sched.size(), n_blocks);
    if (B > s->Bmax || T0 > s->Tmax || C != s->C || NH != s->NH) FATAL("tome_forward: (%d, %d) rows exceed the buffers", B, T0);
    if (n_blocks > s->Lmax) FATAL("tome_forward: %d blocks, the buffers hold %d", n_blocks, s->Lmax);
    s->B = B; s->T = T0; s->cur = 0;
    s->size.clear(); s->rep.clear(); s->dst_log.clear();
    s->log_at.clear(); s->log_n.clear();
    tome_init(on_gpu, s->d_size[0], s->d_rep[0], B, T0);
    bool merged = false;  // a token of size > 1 exists: proportional attention from here on
    int T = T0;
    size_t log_used = 0;
    for (int l = 0; l < n_blocks; l++) {
        transformer_block_attention(t, on_gpu, l, merged ? s->bias : nullptr, B, T);
        int r = sched[l];
        if (r > 0) {
            BlockActs& a = t->acts[l];
            int* dst = s->d_dst + log_used;  // (B, T) on the backend
            size_t k = s->log_at.size();
            if (k < s->force_dst.size()) {  // tests: checked on the host (tome_groups), then used
                const std::vector<int>& fd = s->force_dst[k];
                if (fd.size() != (size_t)B * T) FATAL("tome_forward: forced dst %zu of %zu rows, %d wanted", k, fd.size(), B * T);
                std::vector<int> o, m, rp((size_t)B * T, 0);
                std::vector<float> sz((size_t)B * T, 1.0f);
                r = T - tome_groups(&o, &m, &sz, &rp, fd.data(), B, T);
                backend_copy(on_gpu, dst, fd.data(), fd.size() * sizeof(int), true);
            } else {
                PROF(on_gpu, "tome_match", tome_key_mean(on_gpu, s->metric, a.qkv, B, T, C, NH);
                                           tome_best_match(on_gpu, s->score, s->best, s->metric, B, T, hd);
                                           tome_select_batch(on_gpu, dst, s->score, s->best, B, T, r));
            }
            s->log_at.push_back(log_used);
            s->log_n.push_back((size_t)B * T);
            log_used += (size_t)B * T;
            // the old sizes weigh the merge; the groups sum them into the other buffer
            int T2 = T - r, c0 = s->cur, c1 = 1 - s->cur;
            PROF(on_gpu, "tome_merge", tome_merge_groups(on_gpu, s->d_off, s->d_mem, s->d_size[c1], s->d_rep[c1], dst, s->d_size[c0], s->d_rep[c0], B, T, T2);
                                       token_merge(on_gpu, scratch, a.resid2, s->d_size[c0], s->d_off, s->d_mem, B * T2, C);
                                       backend_copy_device(on_gpu, a.resid2, scratch, (size_t)B * T2 * C * sizeof(floatX));
                                       tome_size_bias(on_gpu, s->bias, s->d_size[c1], s->log_table, B * T2));
            s->cur = c1;
            T = T2;
            s->T = T;
            merged = true;
        }
        transformer_block_mlp(t, on_gpu, l, B, T);
    }
    s->T = T;
    if (!on_gpu) tome_fetch(s);  // a copy on the CPU; the GPU's callers fetch when they need them
    return T;
}
