// clip_loss.h: CLIP's symmetric contrastive loss over N matched (image, text) pairs, and the scaled
// cosine logits of N images against M texts (zero-shot classification, recall@1).
//
//   img, txt: (N, E) embeddings, not normalised; row i of img goes with row i of txt
//   log_scale: (1) parameter; the logit scale s = min(exp(log_scale), 100)   (clip_scale)
//   u_i = img_i / max(||img_i||, 1e-12),  v_j = txt_j / max(||txt_j||, 1e-12)   (as F.normalize)
//   c_ij = u_i . v_j (cosines),  L_ij = s c_ij   (N, N)
//   lse_row_i = log sum_j exp L_ij,  lse_col_j = log sum_i exp L_ij
//   P_ij = exp(L_ij - lse_row_i) (softmax of row i),  Q_ij = exp(L_ij - lse_col_j) (of column j)
//   loss = (CE_rows + CE_cols) / 2 = 1/(2N) sum_i [(lse_row_i - L_ii) + (lse_col_i - L_ii)]
// Backward:
//   G_ij = dloss/dL_ij = (P_ij + Q_ij - 2 [i == j]) / (2N)
//   du_i = s sum_j G_ij v_j,   dv_j = s sum_i G_ij u_i
//   through the normalisation: dimg_i += (du_i - u_i (u_i . du_i)) / ||img_i||, dtxt_j likewise
//   (where the norm is clamped to 1e-12, u = img / 1e-12 is linear: dimg_i += du_i / 1e-12)
//   dlog_scale += sum_ij G_ij L_ij  (dL_ij/dlog_scale = s c_ij = L_ij) while exp(log_scale) <= 100;
//   += 0 when the clamp is active (s = 100 is a constant there)
// N = 1: the one logit is the whole softmax of its row and of its column (P = Q = 1), so the loss is
// 0 and every gradient 0, whatever the embeddings.
//
// The forward has P and Q at hand and keeps their combination G, not P and Q, in the cache, the
// caller's buffer of clip_loss_cache_floats(N, E) floats (layout: ClipCache below). The logits are
// rounded to float once and every later step reads those values (a logit and its row's max then
// cancel exactly: N = 1 gives 0, not the rounding of s * c). The backward is two products with G
// and a per-row projection. Both backends are deterministic: every value is summed by one thread
// (a warp or block in a fixed tree on the GPU) in a fixed order; the CPU gives the same bits for
// any number of OpenMP threads. On the GPU, log_scale and dlog_scale are device pointers (the
// scale is read on the device) and the forward copies the loss to the host (it synchronizes). The
// GPU products are this file's fp32 kernels, so cuBLAS's TF32 mode does not touch them; the CPU
// ones are linear.h's.
#pragma once
#include "common.h"
#include "linear.h"  // the CPU products: linear_matmul_nt_cpu, linear_transpose_cpu

#define CLIP_MAX_SCALE 100.0f
#define CLIP_NORM_EPS 1e-12f

// the clamped logit scale (NaN stays NaN)
HOST_DEVICE float clip_scale(float log_scale) {
    float e = expf(log_scale);
    return e > CLIP_MAX_SCALE ? CLIP_MAX_SCALE : e;
}
HOST_DEVICE bool clip_scale_clamped(float log_scale) { return expf(log_scale) > CLIP_MAX_SCALE; }
// 1 / max(||x||, eps) from the norm
HOST_DEVICE float clip_rnorm(float norm) { return 1.0f / fmaxf(norm, CLIP_NORM_EPS); }
HOST_DEVICE bool clip_norm_clamped(float rn) { return rn >= 1.0f / CLIP_NORM_EPS; }
// G_ij from the logit L_ij and the log-sum-exps of its row and column; inv2n = 1/(2N)
HOST_DEVICE float clip_dlogit(float L, float lse_row, float lse_col, bool diag, float inv2n) {
    return (expf(L - lse_row) + expf(L - lse_col) - (diag ? 2.0f : 0.0f)) * inv2n;
}

// offsets (in floats) of the parts of the cache
struct ClipCache {
    size_t G;                 // (N, N) the logits L during the forward, then G
    size_t rn_img, rn_txt;    // (N) 1 / max(||row||, eps)
    size_t lse_row, lse_col;  // (N)
    size_t term;              // (N) (lse_row_i - L_ii) + (lse_col_i - L_ii)
    size_t gl_row;            // (N) sum_j G_ij L_ij
    size_t loss, gl;          // (1) the loss, sum_ij G_ij L_ij
    size_t total;
};
static ClipCache clip_cache_layout(int N) {
    ClipCache o;
    size_t n = (size_t)N;
    o.G = 0;
    o.rn_img = n * n;
    o.rn_txt = o.rn_img + n;
    o.lse_row = o.rn_txt + n;
    o.lse_col = o.lse_row + n;
    o.term = o.lse_col + n;
    o.gl_row = o.term + n;
    o.loss = o.gl_row + n;
    o.gl = o.loss + 1;
    o.total = o.gl + 1;
    return o;
}
static size_t clip_loss_cache_floats(int N, int E) {
    (void)E;
    return clip_cache_layout(N).total;
}

// ---------------------------------------------------------------------------
// CPU reference

// rn[r] = 1 / max(||x_r||, eps), u (rows, E) = the normalised rows
static void clip_normalize_cpu(float* u, float* rn, const floatX* x, int rows, int E) {
#pragma omp parallel for
    for (int r = 0; r < rows; r++) {
        const floatX* xr = x + (size_t)r * E;
        double ss = 0.0;
        for (int e = 0; e < E; e++) ss += (double)xr[e] * (double)xr[e];
        float inv = clip_rnorm((float)sqrt(ss));
        rn[r] = inv;
        for (int e = 0; e < E; e++) u[(size_t)r * E + e] = (float)xr[e] * inv;
    }
}

// out (N, M) = alpha * u_i . v_j for the normalised rows of a (N, E) and b (M, E); rn_a (N) and
// rn_b (M) get the inverse norms
static void clip_cosines_cpu(float* out, float* rn_a, float* rn_b, const floatX* a, const floatX* b, int N, int M,
                             int E, float alpha) {
    float* u = (float*)malloc_check((size_t)N * E * sizeof(float));
    float* v = (float*)malloc_check((size_t)M * E * sizeof(float));
    clip_normalize_cpu(u, rn_a, a, N, E);
    clip_normalize_cpu(v, rn_b, b, M, E);
    linear_matmul_nt_cpu(out, u, v, (const float*)nullptr, N, E, M, false);
    if (alpha != 1.0f) {
#pragma omp parallel for
        for (int i = 0; i < N; i++)
            for (int j = 0; j < M; j++) out[(size_t)i * M + j] *= alpha;
    }
    free(u);
    free(v);
}

// log sum_k exp(x[k*stride]) over k < n, the max subtracted, the sum in double
static float clip_lse_cpu(const float* x, size_t stride, int n) {
    float mx = -INFINITY;
    for (int k = 0; k < n; k++) mx = fmaxf(mx, x[k * stride]);
    double sum = 0.0;
    for (int k = 0; k < n; k++) sum += expf(x[k * stride] - mx);
    return mx + (float)log(sum);
}

// logits: (N, M) = s * u_i . v_j of img (N, E) against txt (M, E)
static void clip_logits_cpu(float* logits, const floatX* img, const floatX* txt, const float* log_scale, int N, int M,
                            int E) {
    if (N <= 0 || M <= 0) return;
    float* rn = (float*)malloc_check((size_t)(N + M) * sizeof(float));
    clip_cosines_cpu(logits, rn, rn + N, img, txt, N, M, E, clip_scale(*log_scale));
    free(rn);
}

// returns the loss (0 for N = 0, which writes nothing)
static float clip_loss_forward_cpu(float* cache, const floatX* img, const floatX* txt, const float* log_scale, int N,
                                   int E) {
    if (N <= 0) return 0.0f;
    ClipCache o = clip_cache_layout(N);
    float inv2n = 0.5f / (float)N;
    float* L = cache + o.G;
    float *lr = cache + o.lse_row, *lc = cache + o.lse_col, *term = cache + o.term, *gl_row = cache + o.gl_row;
    clip_cosines_cpu(L, cache + o.rn_img, cache + o.rn_txt, img, txt, N, N, E, clip_scale(*log_scale));
#pragma omp parallel for
    for (int i = 0; i < N; i++) lr[i] = clip_lse_cpu(L + (size_t)i * N, 1, N);
#pragma omp parallel for
    for (int j = 0; j < N; j++) lc[j] = clip_lse_cpu(L + j, (size_t)N, N);
    // row i: its loss terms (row i and column i share the diagonal logit), then G over the logits
#pragma omp parallel for
    for (int i = 0; i < N; i++) {
        float* row = L + (size_t)i * N;
        term[i] = (lr[i] - row[i]) + (lc[i] - row[i]);
        double acc = 0.0;
        for (int j = 0; j < N; j++) {
            float l = row[j];
            float g = clip_dlogit(l, lr[i], lc[j], i == j, inv2n);
            row[j] = g;
            acc += (double)g * l;
        }
        gl_row[i] = (float)acc;
    }
    double loss = 0.0, gl = 0.0;
    for (int i = 0; i < N; i++) { loss += term[i]; gl += gl_row[i]; }
    cache[o.loss] = (float)(loss * inv2n);
    cache[o.gl] = (float)gl;
    return cache[o.loss];
}

// dx_r += s * rn_r * (d_r - u_r (u_r . d_r)), u_r = x_r * rn_r; d: (rows, E) = du / s
static void clip_dnormalize_cpu(floatX* dx, const float* d, const floatX* x, const float* rn, int rows, int E,
                                float s) {
#pragma omp parallel for
    for (int r = 0; r < rows; r++) {
        const floatX* xr = x + (size_t)r * E;
        const float* dr = d + (size_t)r * E;
        floatX* dxr = dx + (size_t)r * E;
        float inv = rn[r];
        double dot = 0.0;
        for (int e = 0; e < E; e++) dot += (double)((float)xr[e] * inv) * dr[e];
        float proj = clip_norm_clamped(inv) ? 0.0f : (float)dot;
        for (int e = 0; e < E; e++) dxr[e] = (floatX)((float)dxr[e] + s * inv * (dr[e] - (float)xr[e] * inv * proj));
    }
}

// (cols, rows) = (rows, cols)^T of x, each column r scaled by rn[r]
static void clip_transpose_scaled_cpu(float* dst, const floatX* x, const float* rn, int rows, int cols) {
    linear_transpose_cpu(dst, x, rows, cols);
#pragma omp parallel for
    for (int c = 0; c < cols; c++)
        for (int r = 0; r < rows; r++) dst[(size_t)c * rows + r] *= rn[r];
}

// += into dimg, dtxt, dlog_scale
static void clip_loss_backward_cpu(floatX* dimg, floatX* dtxt, float* dlog_scale, const float* cache,
                                   const floatX* img, const floatX* txt, const float* log_scale, int N, int E) {
    if (N <= 0) return;
    ClipCache o = clip_cache_layout(N);
    float s = clip_scale(*log_scale);
    const float* G = cache + o.G;
    // the products with a contiguous inner dimension (linear.h): du/s = G v, dv/s = G^T u
    float* uT = (float*)malloc_check((size_t)E * N * sizeof(float));
    float* vT = (float*)malloc_check((size_t)E * N * sizeof(float));
    float* GT = (float*)malloc_check((size_t)N * N * sizeof(float));
    float* du = (float*)malloc_check((size_t)N * E * sizeof(float));
    float* dv = (float*)malloc_check((size_t)N * E * sizeof(float));
    clip_transpose_scaled_cpu(uT, img, cache + o.rn_img, N, E);
    clip_transpose_scaled_cpu(vT, txt, cache + o.rn_txt, N, E);
    linear_transpose_cpu(GT, G, N, N);
    linear_matmul_nt_cpu(du, G, vT, (const float*)nullptr, N, N, E, false);
    linear_matmul_nt_cpu(dv, GT, uT, (const float*)nullptr, N, N, E, false);
    clip_dnormalize_cpu(dimg, du, img, cache + o.rn_img, N, E, s);
    clip_dnormalize_cpu(dtxt, dv, txt, cache + o.rn_txt, N, E, s);
    if (!clip_scale_clamped(*log_scale)) *dlog_scale += cache[o.gl];
    free(uT);
    free(vT);
    free(GT);
    free(du);
    free(dv);
}

// ---------------------------------------------------------------------------
// CUDA

#ifdef __CUDACC__

// rn[r] = 1 / max(||x_r||, eps): one warp per row
__global__ void clip_rnorm_kernel(float* rn, const floatX* x, int rows, int E) {
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    const floatX* xr = x + (size_t)r * E;
    float ss = 0.0f;
    for (int e = lane; e < E; e += 32) { float v = to_f32(xr[e]); ss += v * v; }
    ss = warp_sum(ss);
    if (lane == 0) rn[r] = clip_rnorm(sqrtf(ss));
}

// out (N, M) = alpha * ra[i] * rb[j] * sum_k A(i,k) kscale[k] B(k,j), with A(i,k) = A[i*as_i + k*as_k],
// B(k,j) = B[k*bs_k + j*bs_j]; ra, rb, kscale nullptr = 1; alpha = clip_scale(*log_scale), 1 for
// nullptr. Block (32, 8) computes a 32x32 tile, each thread a
// column of 4 rows, summed in k order. The 32x32 slabs of A and B are staged in shared memory,
// loaded with the threads' fast index along whichever of their indices is contiguous in memory.
template <typename TA, typename TB>
__global__ void clip_matmul_kernel(float* out, const TA* A, size_t as_i, size_t as_k, const TB* B, size_t bs_k,
                                   size_t bs_j, const float* ra, const float* rb, const float* kscale,
                                   const float* log_scale, int N, int M, int K) {
    __shared__ float As[32][33], Bs[32][33];  // As[row][k], Bs[k][col]
    int tx = threadIdx.x, ty = threadIdx.y;
    int i0 = blockIdx.y * 32, j0 = blockIdx.x * 32;
    bool a_kfast = as_k == 1, b_jfast = bs_j == 1;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int k0 = 0; k0 < K; k0 += 32) {
        for (int q = 0; q < 4; q++) {
            int slow = ty + 8 * q, fast = tx;
            int r = a_kfast ? slow : fast, ka = a_kfast ? fast : slow;
            int i = i0 + r, k = k0 + ka;
            As[r][ka] = (i < N && k < K) ? to_f32(A[i * as_i + k * as_k]) * (kscale ? kscale[k] : 1.0f) : 0.0f;
            int c = b_jfast ? fast : slow, kb = b_jfast ? slow : fast;
            int j = j0 + c;
            k = k0 + kb;
            Bs[kb][c] = (j < M && k < K) ? to_f32(B[k * bs_k + j * bs_j]) : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < 32; kk++) {
            float b = Bs[kk][tx];
            for (int q = 0; q < 4; q++) acc[q] += As[ty + 8 * q][kk] * b;
        }
        __syncthreads();
    }
    int j = j0 + tx;
    if (j >= M) return;
    float alpha = (log_scale ? clip_scale(*log_scale) : 1.0f) * (rb ? rb[j] : 1.0f);
    for (int q = 0; q < 4; q++) {
        int i = i0 + ty + 8 * q;
        if (i >= N) break;
        out[(size_t)i * M + j] = alpha * (ra ? ra[i] : 1.0f) * acc[q];
    }
}
template <typename TA, typename TB>
static void clip_matmul_cuda(float* out, const TA* A, size_t as_i, size_t as_k, const TB* B, size_t bs_k, size_t bs_j,
                             const float* ra, const float* rb, const float* kscale, const float* log_scale, int N,
                             int M, int K) {
    dim3 grid(ceil_div(M, 32), ceil_div(N, 32));
    clip_matmul_kernel<<<grid, dim3(32, 8), 0, launch_stream()>>>(out, A, as_i, as_k, B, bs_k, bs_j, ra, rb, kscale, log_scale, N, M, K);
    cudaCheckLaunch();
}

// out (N, M) = alpha * u_i . v_j for a (N, E), b (M, E); rn_a (N), rn_b (M) get the inverse norms
static void clip_cosines_cuda(float* out, float* rn_a, float* rn_b, const floatX* a, const floatX* b, int N, int M,
                              int E, const float* log_scale) {
    const int block = 256, rows = block / 32;
    clip_rnorm_kernel<<<ceil_div(N, rows), block, 0, launch_stream()>>>(rn_a, a, N, E);
    clip_rnorm_kernel<<<ceil_div(M, rows), block, 0, launch_stream()>>>(rn_b, b, M, E);
    cudaCheckLaunch();
    clip_matmul_cuda(out, a, (size_t)E, (size_t)1, b, (size_t)1, (size_t)E, rn_a, rn_b, (const float*)nullptr,
                     log_scale, N, M, E);
}

// lse of each row of L: one warp per row
__global__ void clip_lse_rows_kernel(float* lse, const float* L, int N) {
    int i = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (i >= N) return;
    const float* row = L + (size_t)i * N;
    float mx = -INFINITY;
    for (int j = lane; j < N; j += 32) mx = fmaxf(mx, row[j]);
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j < N; j += 32) sum += expf(row[j] - mx);
    sum = warp_sum(sum);
    if (lane == 0) lse[i] = mx + logf(sum);
}

// lse of each column of L: block (32, 8) owns 32 columns, y strides over the rows, the 8 partials
// are merged in y order
__global__ void clip_lse_cols_kernel(float* lse, const float* L, int N) {
    __shared__ float part[8][33];
    int tx = threadIdx.x, ty = threadIdx.y;
    int j = blockIdx.x * 32 + tx;
    float mx = -INFINITY;
    if (j < N)
        for (int i = ty; i < N; i += 8) mx = fmaxf(mx, L[(size_t)i * N + j]);
    part[ty][tx] = mx;
    __syncthreads();
    mx = part[0][tx];
    for (int y = 1; y < 8; y++) mx = fmaxf(mx, part[y][tx]);
    __syncthreads();
    float sum = 0.0f;
    if (j < N)
        for (int i = ty; i < N; i += 8) sum += expf(L[(size_t)i * N + j] - mx);
    part[ty][tx] = sum;
    __syncthreads();
    if (ty == 0 && j < N) {
        for (int y = 1; y < 8; y++) sum += part[y][tx];
        lse[j] = mx + logf(sum);
    }
}

// one warp per row i: the loss terms of row and column i, G over the logits, sum_j G_ij L_ij
__global__ void clip_dlogits_kernel(float* L, float* term, float* gl_row, const float* lse_row, const float* lse_col,
                                    int N) {
    int i = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (i >= N) return;
    float inv2n = 0.5f / (float)N, lr = lse_row[i];
    float* row = L + (size_t)i * N;
    float Lii = row[i];
    __syncwarp();  // every lane has read the diagonal before one of them overwrites it
    float acc = 0.0f;
    for (int j = lane; j < N; j += 32) {
        float l = row[j];
        float g = clip_dlogit(l, lr, lse_col[j], i == j, inv2n);
        row[j] = g;
        acc += g * l;
    }
    acc = warp_sum(acc);
    if (lane == 0) {
        term[i] = (lr - Lii) + (lse_col[i] - Lii);
        gl_row[i] = acc;
    }
}

// one warp: loss = sum_i term_i / (2N), gl = sum_i gl_row_i
__global__ void clip_loss_sum_kernel(float* loss, float* gl, const float* term, const float* gl_row, int N) {
    int lane = threadIdx.x;
    float a = 0.0f, b = 0.0f;
    for (int i = lane; i < N; i += 32) { a += term[i]; b += gl_row[i]; }
    a = warp_sum(a);
    b = warp_sum(b);
    if (lane == 0) { *loss = a * (0.5f / (float)N); *gl = b; }
}

// dx_r += rn_r * (d_r - u_r (u_r . d_r)), u_r = x_r * rn_r; d = du (s included): one warp per row
__global__ void clip_dnormalize_kernel(floatX* dx, const float* d, const floatX* x, const float* rn, int rows, int E) {
    int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    const floatX* xr = x + (size_t)r * E;
    const float* dr = d + (size_t)r * E;
    floatX* dxr = dx + (size_t)r * E;
    float inv = rn[r];
    float dot = 0.0f;
    for (int e = lane; e < E; e += 32) dot += to_f32(xr[e]) * inv * dr[e];
    dot = clip_norm_clamped(inv) ? 0.0f : warp_sum(dot);
    for (int e = lane; e < E; e += 32)
        dxr[e] = from_f32<floatX>(to_f32(dxr[e]) + inv * (dr[e] - to_f32(xr[e]) * inv * dot));
}

__global__ void clip_dscale_kernel(float* dlog_scale, const float* gl, const float* log_scale) {
    if (!clip_scale_clamped(*log_scale)) *dlog_scale += *gl;
}

// the process's cached device buffer for this file's temporaries (norms, du)
static float* clip_scratch(size_t floats) {
    static DeviceScratch scratch;
    return scratch.get(floats);
}

static void clip_logits_cuda(float* logits, const floatX* img, const floatX* txt, const float* log_scale, int N, int M,
                             int E) {
    if (N <= 0 || M <= 0) return;
    float* rn = clip_scratch((size_t)N + M);
    clip_cosines_cuda(logits, rn, rn + N, img, txt, N, M, E, log_scale);
}

static float clip_loss_forward_cuda(float* cache, const floatX* img, const floatX* txt, const float* log_scale, int N,
                                    int E) {
    if (N <= 0) return 0.0f;
    ClipCache o = clip_cache_layout(N);
    const int block = 256, rows = block / 32;
    float* L = cache + o.G;
    clip_cosines_cuda(L, cache + o.rn_img, cache + o.rn_txt, img, txt, N, N, E, log_scale);
    clip_lse_rows_kernel<<<ceil_div(N, rows), block, 0, launch_stream()>>>(cache + o.lse_row, L, N);
    clip_lse_cols_kernel<<<ceil_div(N, 32), dim3(32, 8), 0, launch_stream()>>>(cache + o.lse_col, L, N);
    clip_dlogits_kernel<<<ceil_div(N, rows), block, 0, launch_stream()>>>(L, cache + o.term, cache + o.gl_row, cache + o.lse_row,
                                                      cache + o.lse_col, N);
    clip_loss_sum_kernel<<<1, 32, 0, launch_stream()>>>(cache + o.loss, cache + o.gl, cache + o.term, cache + o.gl_row, N);
    cudaCheckLaunch();
    float loss;
    cudaCheck(cudaMemcpy(&loss, cache + o.loss, sizeof(float), cudaMemcpyDeviceToHost));
    return loss;
}

static void clip_loss_backward_cuda(floatX* dimg, floatX* dtxt, float* dlog_scale, const float* cache,
                                    const floatX* img, const floatX* txt, const float* log_scale, int N, int E) {
    if (N <= 0) return;
    ClipCache o = clip_cache_layout(N);
    const int block = 256, rows = block / 32;
    const float *G = cache + o.G, *rn_img = cache + o.rn_img, *rn_txt = cache + o.rn_txt;
    float* du = clip_scratch((size_t)2 * N * E);
    float* dv = du + (size_t)N * E;
    // du_i = s sum_j G_ij rn_j txt_j;  dv_j = s sum_i G_ij rn_i img_i  (A(j, i) = G[i*N + j])
    clip_matmul_cuda(du, G, (size_t)N, (size_t)1, txt, (size_t)E, (size_t)1, (const float*)nullptr,
                     (const float*)nullptr, rn_txt, log_scale, N, E, N);
    clip_matmul_cuda(dv, G, (size_t)1, (size_t)N, img, (size_t)E, (size_t)1, (const float*)nullptr,
                     (const float*)nullptr, rn_img, log_scale, N, E, N);
    clip_dnormalize_kernel<<<ceil_div(N, rows), block, 0, launch_stream()>>>(dimg, du, img, rn_img, N, E);
    clip_dnormalize_kernel<<<ceil_div(N, rows), block, 0, launch_stream()>>>(dtxt, dv, txt, rn_txt, N, E);
    clip_dscale_kernel<<<1, 1, 0, launch_stream()>>>(dlog_scale, cache + o.gl, log_scale);
    cudaCheckLaunch();
}
#endif

// ---------------------------------------------------------------------------
// backend wrappers (the convention of common.h): the models call these

static float clip_loss_forward(bool on_gpu, float* cache, const floatX* img, const floatX* txt,
                               const float* log_scale, int N, int E) {
    if (on_gpu) GPU_CALL(return clip_loss_forward_cuda(cache, img, txt, log_scale, N, E));
    return clip_loss_forward_cpu(cache, img, txt, log_scale, N, E);
}
static void clip_loss_backward(bool on_gpu, floatX* dimg, floatX* dtxt, float* dlog_scale, const float* cache,
                               const floatX* img, const floatX* txt, const float* log_scale, int N, int E) {
    if (on_gpu) GPU_CALL(clip_loss_backward_cuda(dimg, dtxt, dlog_scale, cache, img, txt, log_scale, N, E));
    else clip_loss_backward_cpu(dimg, dtxt, dlog_scale, cache, img, txt, log_scale, N, E);
}
static void clip_logits(bool on_gpu, float* logits, const floatX* img, const floatX* txt, const float* log_scale,
                        int N, int M, int E) {
    if (on_gpu) GPU_CALL(clip_logits_cuda(logits, img, txt, log_scale, N, M, E));
    else clip_logits_cpu(logits, img, txt, log_scale, N, M, E);
}
