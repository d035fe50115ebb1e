// linear.h: fully connected layer, out = inp @ weight^T + bias.
// CPU: one register-tiled kernel (4x4 outputs, dot products along a contiguous
// inner dimension) serves the forward and both backward products after cheap
// transposes. GPU: cuBLAS, in the precision the caller picks (linear_set_precision):
// exact fp32, TF32 tensor cores, or bf16 operands (see below).
#pragma once
#include <algorithm>
#include <type_traits>
#include "common.h"

// dst (cols, rows) = src (rows, cols)^T, in 32x32 blocks so both sides stay in cache
template <typename TS>
static void linear_transpose_cpu(float* dst, const TS* src, int rows, int cols) {
    const int T = 32;
#pragma omp parallel for collapse(2)
    for (int r0 = 0; r0 < rows; r0 += T)
        for (int c0 = 0; c0 < cols; c0 += T) {
            int r1 = r0 + T < rows ? r0 + T : rows, c1 = c0 + T < cols ? c0 + T : cols;
            for (int c = c0; c < c1; c++)
                for (int r = r0; r < r1; r++) dst[(size_t)c * rows + r] = (float)src[(size_t)r * cols + c];
        }
}

// out[n,m] (+)= bias[m] + sum_k A[n,k] * B[m,k]     A: (N, K), B: (M, K), out: (N, M)
// accumulate=false overwrites out. Tiles of 4 rows x 4 columns keep 16 sums in
// registers; `omp simd reduction` lets the compiler vectorize the k loop (no
// -ffast-math needed). K is blocked so an A tile and a slab of B stay in cache
// when K is large (the dweight product has K = N rows). Every output is summed by
// one thread in k order, so the result is the same bits for any number of threads.
template <typename TO, typename TA>
static void linear_matmul_nt_cpu(TO* out, const TA* A, const float* B, const float* bias,
                                 int N, int K, int M, bool accumulate) {
    const int KB = 512;
    int ntiles = (N + 3) / 4;
    if (K == 0) {  // degenerate: only the bias
        for (int n = 0; n < N; n++)
            for (int m = 0; m < M; m++) {
                float v = bias ? bias[m] : 0.0f;
                out[(size_t)n * M + m] = (TO)(accumulate ? (float)out[(size_t)n * M + m] + v : v);
            }
        return;
    }
#pragma omp parallel
    for (int k0 = 0; k0 < K; k0 += KB) {
        int k1 = k0 + KB < K ? k0 + KB : K;
        bool overwrite = (k0 == 0) && !accumulate;
#pragma omp for schedule(static)
        for (int t = 0; t < ntiles; t++) {
            int n0 = t * 4;
            // rows past the end alias the last row; their results are not stored
            const TA* a0 = A + (size_t)(n0 + 0 < N ? n0 + 0 : N - 1) * K;
            const TA* a1 = A + (size_t)(n0 + 1 < N ? n0 + 1 : N - 1) * K;
            const TA* a2 = A + (size_t)(n0 + 2 < N ? n0 + 2 : N - 1) * K;
            const TA* a3 = A + (size_t)(n0 + 3 < N ? n0 + 3 : N - 1) * K;
            for (int m0 = 0; m0 < M; m0 += 4) {
                const float* b0 = B + (size_t)(m0 + 0 < M ? m0 + 0 : M - 1) * K;
                const float* b1 = B + (size_t)(m0 + 1 < M ? m0 + 1 : M - 1) * K;
                const float* b2 = B + (size_t)(m0 + 2 < M ? m0 + 2 : M - 1) * K;
                const float* b3 = B + (size_t)(m0 + 3 < M ? m0 + 3 : M - 1) * K;
                float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
                float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
#pragma omp simd reduction(+ : c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33)
                for (int k = k0; k < k1; k++) {
                    float x0 = (float)a0[k], x1 = (float)a1[k], x2 = (float)a2[k], x3 = (float)a3[k];
                    float w0 = b0[k], w1 = b1[k], w2 = b2[k], w3 = b3[k];
                    c00 += x0 * w0; c01 += x0 * w1; c02 += x0 * w2; c03 += x0 * w3;
                    c10 += x1 * w0; c11 += x1 * w1; c12 += x1 * w2; c13 += x1 * w3;
                    c20 += x2 * w0; c21 += x2 * w1; c22 += x2 * w2; c23 += x2 * w3;
                    c30 += x3 * w0; c31 += x3 * w1; c32 += x3 * w2; c33 += x3 * w3;
                }
                float c[4][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13},
                                 {c20, c21, c22, c23}, {c30, c31, c32, c33}};
                for (int i = 0; i < 4 && n0 + i < N; i++)
                    for (int j = 0; j < 4 && m0 + j < M; j++) {
                        float v = c[i][j];
                        if (k0 == 0 && bias) v += bias[m0 + j];
                        TO* o = out + (size_t)(n0 + i) * M + m0 + j;
                        *o = (TO)(overwrite ? v : (float)*o + v);
                    }
            }
        }  // implicit barrier: the next K block adds to finished sums
    }
}

// inp: (N, IC), weight: (OC, IC), bias: (OC) or NULL, out: (N, OC)
static void linear_forward_cpu(floatX* out, const floatX* inp, const float* weight, const float* bias,
                               int N, int IC, int OC) {
    linear_matmul_nt_cpu(out, inp, weight, bias, N, IC, OC, false);
}

// dinp += dout @ weight (skipped if dinp NULL; = under GRAD_SET); dweight += dout^T @ inp; dbias += sum_rows dout
// (if bias). dweight NULL: a frozen weight (no gradient buffer), only dinp is computed.
static void linear_backward_cpu(floatX* dinp, float* dweight, float* dbias, const floatX* dout,
                                const floatX* inp, const float* weight, int N, int IC, int OC, GradWrite dinp_write = GRAD_ADD) {
    if (dinp) {
        // dinp[n,i] += sum_o dout[n,o] * W^T[i,o]
        float* wT = (float*)malloc_check((size_t)IC * OC * sizeof(float));
        linear_transpose_cpu(wT, weight, OC, IC);
        linear_matmul_nt_cpu(dinp, dout, wT, (const float*)nullptr, N, OC, IC, dinp_write == GRAD_ADD);
        free(wT);
    }
    if (!dweight && !dbias) return;
    // dweight[o,i] += sum_n dout^T[o,n] * inp^T[i,n]
    float* doutT = (float*)malloc_check((size_t)OC * N * sizeof(float));
    float* inpT = (float*)malloc_check((size_t)IC * N * sizeof(float));
    linear_transpose_cpu(doutT, dout, N, OC);
    linear_transpose_cpu(inpT, inp, N, IC);
    if (dweight) linear_matmul_nt_cpu(dweight, doutT, inpT, (const float*)nullptr, OC, N, IC, true);
    if (dbias) {  // one thread per output column, summed in row order
#pragma omp parallel for
        for (int o = 0; o < OC; o++) {
            const float* row = doutT + (size_t)o * N;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int n = 0; n < N; n++) s += row[n];
            dbias[o] += s;
        }
    }
    free(doutT);
    free(inpT);
}

#ifdef __CUDACC__
// cuBLAS is column-major: a row-major (R, C) matrix is a column-major (C, R) one,
// so every product below is written for the transposes. floatX must be float here.
static_assert(sizeof(floatX) == sizeof(float), "linear_cuda uses fp32 operands in memory: floatX must be float");

// The matmul precision on the GPU. Activations, weights and results stay fp32 in memory; what
// changes is what the tensor cores see:
//   FP32  exact fp32 (no tensor cores): the reference the tests compare against
//   TF32  operands rounded to 10-bit mantissas inside cuBLAS (u = 2^-11)
//   BF16  both operands rounded to bf16 (8 significant bits, u = 2^-8) by linear_round_bf16 into
//         scratch copies, then bf16 tensor cores (twice TF32's rate) with fp32 accumulation and fp32
//         results. The copies are made per product, except a weight used twice within a
//         LinearWeightsFixed scope (below); dev/matmul.cu measured this against TF32 at the
//         mamba-130m shapes. A product with a side
//         shorter than g_matmul_bf16_min_dim stays TF32: such thin products (x_proj's 80 outputs,
//         dt_proj's 48 inputs) are memory-bound, where the copies only add bytes (the 130m step's
//         x_proj took 4.4 ms in bf16 against 3.9 in TF32).
// (cuBLAS's CUBLAS_COMPUTE_32F_FAST_16BF on fp32 operands gave TF32's errors and TF32's times
// there: it is not a bf16 path on this cuBLAS.)
typedef enum { MATMUL_FP32 = 0, MATMUL_TF32 = 1, MATMUL_BF16 = 2 } MatmulPrecision;
static MatmulPrecision g_matmul_precision = MATMUL_FP32;
static int g_matmul_bf16_min_dim = 128;
// true when the product (m x k) (k x n) runs on bf16 operands
static bool linear_use_bf16(int m, int n, int k) {
    return g_matmul_precision == MATMUL_BF16 && std::min(m, std::min(n, k)) >= g_matmul_bf16_min_dim;
}
static void linear_set_precision(MatmulPrecision p) {
    g_matmul_precision = p;
    // the math mode serves the cublasSgemm callers too (LoRA's rank-r products, the decoder's cuBLAS
    // path): they run TF32 under TF32 or BF16, exact fp32 under FP32
    cublasCheck(cublasSetMathMode(cublas_handle(), p == MATMUL_FP32 ? CUBLAS_DEFAULT_MATH : CUBLAS_TF32_TENSOR_OP_MATH));
}

// dst = bf16(src), round to nearest even; 8 elements per thread (vec: src and dst 16-byte aligned)
__global__ void linear_round_bf16_kernel(bf16* dst, const float* src, size_t n, bool vec) {
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i >= n) return;
    if (vec && i + 8 <= n) {
        float4 a = __ldcs(reinterpret_cast<const float4*>(src + i)), b = __ldcs(reinterpret_cast<const float4*>(src + i + 4));
        Packed128<bf16> o;
        o.set(0, a.x); o.set(1, a.y); o.set(2, a.z); o.set(3, a.w);
        o.set(4, b.x); o.set(5, b.y); o.set(6, b.z); o.set(7, b.w);
        store128(dst + i, o);
        return;
    }
    for (size_t j = i; j < i + 8 && j < n; j++) dst[j] = from_f32<bf16>(src[j]);
}
static void linear_round_bf16_into(bf16* dst, const float* src, size_t n, cudaStream_t stream = launch_stream()) {
    unsigned blocks = (unsigned)((n + 8 * 256 - 1) / (8 * 256));
    linear_round_bf16_kernel<<<blocks, 256, 0, stream>>>(dst, src, n, aligned16(src) && aligned16(dst));
    cudaCheckLaunch();
}
static DeviceScratch g_linear_bf16_scratch[3];
// a bf16 copy of src (n floats) in scratch `which`: 0 a weight, 1 the forward's input or a gradient,
// 2 the backward's input (so no copy overwrites another that a queued product still reads)
static const bf16* linear_round_bf16(const float* src, size_t n, int which) {
    bf16* dst = reinterpret_cast<bf16*>(g_linear_bf16_scratch[which].get(n / 2 + 8));
    linear_round_bf16_into(dst, src, n);
    return dst;
}

// dst (N, OA + OB) = bf16([a | b]): row n of a (N, OA) then row n of b (N, OB). Four columns a thread
// (vec: OA and OB multiples of 4 and 16-byte aligned sources, so a quad never straddles a and b)
__global__ void linear_round_bf16_split_kernel(bf16* dst, const float* a, const float* b, int N, int OA, int OB, bool vec) {
    const int OC = OA + OB;
    const size_t total = (size_t)N * OC, i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (i >= total) return;
    for (int k = 0; k < 4 && i + k < total; k++) {
        size_t n = (i + k) / OC;
        int c = (int)((i + k) - n * OC);
        const float* src = c < OA ? a + n * OA + c : b + n * OB + (c - OA);
        if (vec) {  // the whole quad from one source
            float4 v = __ldcs(reinterpret_cast<const float4*>(src));
            __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
            *reinterpret_cast<__nv_bfloat162*>(dst + i) = lo;
            *reinterpret_cast<__nv_bfloat162*>(dst + i + 2) = hi;
            return;
        }
        dst[i + k] = from_f32<bf16>(*src);
    }
}
// scratch `which` as room for n bf16 values (a producer that writes a product's operand in bf16 itself)
static bf16* linear_bf16_scratch(int which, size_t n) { return reinterpret_cast<bf16*>(g_linear_bf16_scratch[which].get(n / 2 + 8)); }
// the copy of [a | b] in scratch 1
static const bf16* linear_round_bf16_split(const float* a, const float* b, int N, int OA, int OB) {
    size_t n = (size_t)N * (OA + OB);
    bf16* dst = reinterpret_cast<bf16*>(g_linear_bf16_scratch[1].get(n / 2 + 8));
    bool vec = OA % 4 == 0 && OB % 4 == 0 && aligned16(a) && aligned16(b);
    unsigned blocks = (unsigned)((n + 4 * 256 - 1) / (4 * 256));
    linear_round_bf16_split_kernel<<<blocks, 256, 0, launch_stream()>>>(dst, a, b, N, OA, OB, vec);
    cudaCheckLaunch();
    return dst;
}

// Weights held fixed (LinearWeightsFixed, a scope guard): while one is alive the caller promises
// that no weight changes (a model's forward or backward pass: only the optimizer writes weights,
// between passes), so a weight used more than once in the scope gets a bf16 copy of its own, made
// on its second use and reused by every later product of the pass (the head's weight serves 7
// chunks, and 14 products in the backward). A weight used once per pass (every layer's) is copied
// into the shared scratch as outside a scope and gets no memory of its own. A copy's memory stays
// for the next scope, where it is remade on first use; leaving the outermost scope marks every copy
// stale, so a weight changed between passes is copied again.
struct LinearWeightCopy {
    const float* src;
    size_t n;
    bf16* copy;  // null until the weight was used twice in one scope
    bool used;   // used in the current scope
    bool fresh;  // copy holds this scope's values
};
static std::vector<LinearWeightCopy> g_weight_copies;
static int g_weights_fixed_depth = 0;
static const bf16* linear_weight_bf16(const float* W, size_t n) {
    if (g_weights_fixed_depth == 0) return linear_round_bf16(W, n, 0);
    LinearWeightCopy* e = nullptr;
    for (LinearWeightCopy& c : g_weight_copies)
        if (c.src == W && c.n == n) e = &c;
    if (!e) {
        g_weight_copies.push_back(LinearWeightCopy{W, n, nullptr, false, false});
        e = &g_weight_copies.back();
    }
    if (e->fresh) return e->copy;
    if (!e->copy && !e->used) {  // the first use of a weight never reused so far
        e->used = true;
        return linear_round_bf16(W, n, 0);
    }
    if (!e->copy) cudaCheck(cudaMalloc(&e->copy, (n + 8) * sizeof(bf16)));
    linear_round_bf16_into(e->copy, W, n);
    e->used = e->fresh = true;
    return e->copy;
}
// how many weights hold a copy of their own (for the tests)
static int linear_weight_copies() {
    int k = 0;
    for (const LinearWeightCopy& c : g_weight_copies) k += c.copy != nullptr;
    return k;
}
static void linear_weights_fixed_begin() { g_weights_fixed_depth++; }
static void linear_weights_fixed_end() {
    if (--g_weights_fixed_depth == 0)
        for (LinearWeightCopy& c : g_weight_copies) c.used = c.fresh = false;
}

// out (OC) = W (OC, IC) x (IC) + beta out: the product of one row (a generation step). A warp per
// output row, its lanes reading the weight row with 16-byte streaming loads, eight in flight each,
// and x through L1 (VEC: IC % 4 == 0 and both 16-byte aligned; else one float at a time). beta 0
// does not read out. cuBLAS's sgemv took 6.7 us for a 1536 x 768 weight on an H100 (0.7 TB/s) and
// an sgemm with one column far longer.
#define LINEAR_GEMV_UNROLL 8
template <bool VEC>
__global__ void linear_gemv_kernel(float* out, const float* x, const float* W, int IC, int OC, float beta) {
    const int o = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (o >= OC) return;
    const float* w = W + (size_t)o * IC;
    float acc = 0.0f;
    if (VEC) {
        const float4* w4 = reinterpret_cast<const float4*>(w);
        const float4* x4 = reinterpret_cast<const float4*>(x);
        const int n4 = IC / 4;
        for (int i0 = 0; i0 < n4; i0 += 32 * LINEAR_GEMV_UNROLL) {
            float4 a[LINEAR_GEMV_UNROLL], b[LINEAR_GEMV_UNROLL];
#pragma unroll
            for (int j = 0; j < LINEAR_GEMV_UNROLL; j++) {  // the loads first, so they overlap
                int i = i0 + j * 32 + lane;
                a[j] = i < n4 ? __ldcs(w4 + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                b[j] = i < n4 ? x4[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
#pragma unroll
            for (int j = 0; j < LINEAR_GEMV_UNROLL; j++) acc += a[j].x * b[j].x + a[j].y * b[j].y + a[j].z * b[j].z + a[j].w * b[j].w;
        }
    } else {
        for (int i = lane; i < IC; i += 32) acc += w[i] * x[i];
    }
    acc = warp_sum(acc);
    if (lane == 0) out[o] = beta != 0.0f ? acc + beta * out[o] : acc;
}
static void linear_gemv_cuda(float* out, const float* x, const float* W, int IC, int OC, float beta,
                             cudaStream_t stream = launch_stream()) {
    const int warps = 8;
    if (OC <= 0) return;
    if (IC % 4 == 0 && aligned16(x) && aligned16(W))
        linear_gemv_kernel<true><<<ceil_div(OC, warps), 32 * warps, 0, stream>>>(out, x, W, IC, OC, beta);
    else linear_gemv_kernel<false><<<ceil_div(OC, warps), 32 * warps, 0, stream>>>(out, x, W, IC, OC, beta);
    cudaCheckLaunch();
}

// C (m x n, column-major, ldc) = op(A) op(B) + beta C on fp32 operands (FP32 / TF32 by the math mode);
// one column of the forward's form (n = 1, A transposed: a generation step's single row) is
// linear_gemv_cuda's (fp32 whatever the math mode)
static void linear_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float* A, int lda,
                        const float* B, int ldb, float beta, float* C, int ldc) {
    const float one = 1.0f;
    if (n == 1 && ta == CUBLAS_OP_T && tb == CUBLAS_OP_N && lda == k) linear_gemv_cuda(C, B, A, k, m, beta);
    else cublasCheck(cublasSgemm(cublas_handle(), ta, tb, m, n, k, &one, A, lda, B, ldb, &beta, C, ldc));
}
static cudaDataType linear_cuda_type(float*) { return CUDA_R_32F; }
static cudaDataType linear_cuda_type(bf16*) { return CUDA_R_16BF; }
// ... on bf16 operands: C fp32, or bf16 (bf16 activations: beta C added in fp32, one rounding at the end)
template <typename CT>
static void linear_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const bf16* A, int lda,
                        const bf16* B, int ldb, float beta, CT* C, int ldc) {
    const float one = 1.0f;
    cublasCheck(cublasGemmEx(cublas_handle(), ta, tb, m, n, k, &one, A, CUDA_R_16BF, lda, B, CUDA_R_16BF, ldb, &beta,
                             C, linear_cuda_type(C), ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

__global__ void linear_bias_kernel(floatX* out, const float* bias, int N, int OC) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)N * OC) return;
    out[idx] = (floatX)((float)out[idx] + bias[idx % OC]);
}

// dbias[o] += sum_n dout[n,o]. Block (32, 8): x picks the column, y strides over this
// block's rows; a shared-memory reduction over y, then one atomicAdd per column per block.
__global__ void linear_dbias_kernel(float* dbias, const floatX* dout, int N, int OC, int rows_per_block) {
    __shared__ float part[8][33];
    int o = blockIdx.x * 32 + threadIdx.x;
    int n0 = blockIdx.y * rows_per_block;
    int n1 = min(N, n0 + rows_per_block);
    float s = 0.0f;
    if (o < OC)
        for (int n = n0 + threadIdx.y; n < n1; n += 8) s += (float)dout[(size_t)n * OC + o];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && o < OC) {
        for (int y = 1; y < 8; y++) s += part[y][threadIdx.x];
        atomicAdd(&dbias[o], s);
    }
}

// The products on operands already in bf16 (copies made by the callers below, or an input its
// producer wrote in bf16: the RMSNorm's, the scan's y, the cross-entropy's gradient):
//   out = in16 @ W^T;  dinp += dout16 @ W;  dW += dout16^T in16 (dinp or dW may be null; in16 with dW)
// The weight's copy comes from linear_weight_bf16. The caller checks linear_use_bf16(OC, N, IC),
// which is the same test for all three products (the smallest of N, IC, OC), or has bf16
// activations (then every product of the layer takes bf16 operands, thin ones included).
// out / dinp: fp32, or bf16 (a bf16 activation or its gradient: the product's fp32 result rounded once).
template <typename OT>
static void linear_forward_b16_cuda(OT* out, const bf16* in16, const float* weight, int N, int IC, int OC) {
    if (N == 0 || OC == 0) return;
    // out^T (OC x N) = W (OC x IC, stored as col-major IC x OC -> op T) * inp^T (IC x N)
    linear_gemm(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, linear_weight_bf16(weight, (size_t)OC * IC), IC, in16, IC, 0.0f, out, OC);
}
// (W16: the weight's bf16 copy, or null when dinp is)
template <typename TD>
static void linear_backward_bf16w_cuda(TD* dinp, float* dweight, const bf16* dout16, const bf16* in16, const bf16* W16,
                                       int N, int IC, int OC, GradWrite dinp_write = GRAD_ADD) {
    if (N == 0) return;
    // dinp^T (IC x N) += W^T (col-major IC x OC) * dout^T (OC x N)   (beta 0 under GRAD_SET: dinp not read)
    // dweight^T (IC x OC) += inp^T (IC x N) * dout (N x OC; dout stored col-major OC x N -> op T)
    if (dinp) linear_gemm(CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, W16, IC, dout16, OC, dinp_write == GRAD_SET ? 0.0f : 1.0f, dinp, IC);
    if (dweight) linear_gemm(CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, in16, IC, dout16, OC, 1.0f, dweight, IC);
}
template <typename TD>
static void linear_backward_bf16_cuda(TD* dinp, float* dweight, const bf16* dout16, const bf16* in16, const float* weight,
                                      int N, int IC, int OC, GradWrite dinp_write = GRAD_ADD) {
    linear_backward_bf16w_cuda(dinp, dweight, dout16, in16, dinp ? linear_weight_bf16(weight, (size_t)OC * IC) : nullptr, N, IC, OC,
                               dinp_write);
}
// the backward for an input in bf16 already (the scan's y for out_proj): one copy of dout
template <typename TD>
static void linear_backward_b16_cuda(TD* dinp, float* dweight, const floatX* dout, const bf16* in16, const float* weight,
                                     int N, int IC, int OC, GradWrite dinp_write = GRAD_ADD) {
    if (N == 0 || (!dinp && !dweight)) return;
    linear_backward_bf16_cuda(dinp, dweight, linear_round_bf16(dout, (size_t)N * OC, 1), in16, weight, N, IC, OC, dinp_write);
}

static void linear_forward_cuda(floatX* out, const floatX* inp, const float* weight, const float* bias,
                                int N, int IC, int OC) {
    if (N == 0 || OC == 0) return;
    // out^T (OC x N) = W (OC x IC, stored as col-major IC x OC -> op T) * inp^T (IC x N)
    if (linear_use_bf16(OC, N, IC)) linear_forward_b16_cuda(out, linear_round_bf16(inp, (size_t)N * IC, 1), weight, N, IC, OC);
    else linear_gemm(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, weight, IC, inp, IC, 0.0f, out, OC);
    if (bias) {
        size_t n = (size_t)N * OC;
        linear_bias_kernel<<<(unsigned)((n + 255) / 256), 256, 0, launch_stream()>>>(out, bias, N, OC);
    }
    cudaCheckLaunch();
}

static void linear_backward_cuda(floatX* dinp, float* dweight, float* dbias, const floatX* dout,
                                 const floatX* inp, const float* weight, int N, int IC, int OC, GradWrite dinp_write = GRAD_ADD) {
    if (N == 0) return;
    if (linear_use_bf16(OC, N, IC)) {  // one copy of dout for both products
        if (dinp || dweight)
            linear_backward_bf16_cuda(dinp, dweight, linear_round_bf16(dout, (size_t)N * OC, 1),
                                      dweight ? linear_round_bf16(inp, (size_t)N * IC, 2) : nullptr, weight, N, IC, OC, dinp_write);
    } else {
        if (dinp) linear_gemm(CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, weight, IC, dout, OC, dinp_write == GRAD_SET ? 0.0f : 1.0f, dinp, IC);
        if (dweight) linear_gemm(CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, inp, IC, dout, OC, 1.0f, dweight, IC);
    }
    if (dbias) {
        const int rows_per_block = 256;
        dim3 grid(ceil_div(OC, 32), ceil_div(N, rows_per_block));
        linear_dbias_kernel<<<grid, dim3(32, 8), 0, launch_stream()>>>(dbias, dout, N, OC, rows_per_block);
    }
    cudaCheckLaunch();
}

// A product whose output columns are stored as two blocks in separate buffers (in_proj's x | z):
// out_a (N, OA) = inp @ W[0:OA]^T, out_b (N, OB) = inp @ W[OA:OA+OB]^T, W: (OA + OB, IC). On bf16
// operands one copy of inp serves both halves, and the backward runs as ONE product of K = OA + OB
// (dinp) and one of OA + OB outputs (dW) on an interleaved copy of [dout_a | dout_b]: half the copies
// of inp and one pass over dinp instead of two. Otherwise two plain products.
// linear_split_bf16 says whether the bf16 path applies; the _b16 functions take an input its
// producer wrote in bf16 already (an RMSNorm with a bf16 output): no copy of it at all.
static bool linear_split_bf16(int N, int IC, int OA, int OB) { return linear_use_bf16(std::min(OA, OB), N, IC); }
// C_i (m x n, column-major) = op(A_i) op(B_i) + beta C_i for i = 0, 1, with A_1 = A_0 + sA and so
// on: two halves of one shape as one strided-batched launch (twice the tiles of either half, one
// launch). Returns false, launching nothing, where the halves are not a non-negative stride apart
// or the two C would overlap (the caller then runs two products).
template <typename CT>
static bool linear_gemm_pair(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const bf16* A0, const bf16* A1, int lda,
                             const bf16* B0, const bf16* B1, int ldb, float beta, CT* C0, CT* C1, int ldc) {
    long long sA = A1 - A0, sB = B1 - B0, sC = C1 - C0;
    if (sA < 0 || sB < 0 || sC < (long long)ldc * n) return false;
    const float one = 1.0f;
    cublasCheck(cublasGemmStridedBatchedEx(cublas_handle(), ta, tb, m, n, k, &one, A0, CUDA_R_16BF, lda, sA, B0, CUDA_R_16BF, ldb, sB,
                                           &beta, C0, linear_cuda_type(C0), ldc, sC, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return true;
}

template <typename OT>
static void linear_forward_split_b16_cuda(OT* out_a, OT* out_b, const bf16* in16, const float* W, int N, int IC, int OA, int OB) {
    if (N == 0) return;
    const bf16* W16 = linear_weight_bf16(W, (size_t)(OA + OB) * IC);
    const bf16* W16b = W16 + (size_t)OA * IC;
    if (OA == OB && linear_gemm_pair(CUBLAS_OP_T, CUBLAS_OP_N, OA, N, IC, W16, W16b, IC, in16, in16, IC, 0.0f, out_a, out_b, OA)) return;
    linear_gemm(CUBLAS_OP_T, CUBLAS_OP_N, OA, N, IC, W16, IC, in16, IC, 0.0f, out_a, OA);
    linear_gemm(CUBLAS_OP_T, CUBLAS_OP_N, OB, N, IC, W16b, IC, in16, IC, 0.0f, out_b, OB);
}
static void linear_forward_split_cuda(floatX* out_a, floatX* out_b, const floatX* inp, const float* W, int N, int IC, int OA,
                                      int OB) {
    if (N == 0) return;
    if (!linear_split_bf16(N, IC, OA, OB)) {
        linear_forward_cuda(out_a, inp, W, nullptr, N, IC, OA);
        linear_forward_cuda(out_b, inp, W + (size_t)OA * IC, nullptr, N, IC, OB);
        return;
    }
    linear_forward_split_b16_cuda(out_a, out_b, linear_round_bf16(inp, (size_t)N * IC, 1), W, N, IC, OA, OB);
}
// dinp += [dout_a | dout_b] @ W (skipped if null; = under GRAD_SET); dW (OA + OB, IC) += [dout_a | dout_b]^T inp (skipped if null)
static void linear_backward_split_b16_cuda(floatX* dinp, float* dW, const floatX* dout_a, const floatX* dout_b, const bf16* in16,
                                           const float* W, int N, int IC, int OA, int OB, GradWrite dinp_write = GRAD_ADD) {
    if (N == 0 || (!dinp && !dW)) return;
    linear_backward_bf16_cuda(dinp, dW, linear_round_bf16_split(dout_a, dout_b, N, OA, OB), in16, W, N, IC, OA + OB, dinp_write);
}
// the same with both gradients in bf16 already (bf16 activations): two products of K = OA and OB into
// dinp (a second pass over dinp costs less than interleaving the two halves into one operand)
static void linear_backward_split_bf16_cuda(floatX* dinp, float* dW, const bf16* dout_a, const bf16* dout_b, const bf16* in16,
                                            const float* W, int N, int IC, int OA, int OB, GradWrite dinp_write = GRAD_ADD) {
    const bf16* W16 = dinp ? linear_weight_bf16(W, (size_t)(OA + OB) * IC) : nullptr;  // the forward's copy, in one scope
    // dW's halves as one launch where dout_a, dout_b are one stride apart (the model's scratch)
    bool dw_paired = dW && OA == OB && N > 0 &&
                     linear_gemm_pair(CUBLAS_OP_N, CUBLAS_OP_T, IC, OA, N, in16, in16, IC, dout_a, dout_b, OA, 1.0f, dW,
                                      dW + (size_t)OA * IC, IC);
    float* dW_rest = dw_paired ? nullptr : dW;
    linear_backward_bf16w_cuda(dinp, dW_rest, dout_a, in16, W16, N, IC, OA, dinp_write);  // the first half sets dinp, the second adds
    linear_backward_bf16w_cuda(dinp, dW_rest ? dW_rest + (size_t)OA * IC : nullptr, dout_b, in16, W16 ? W16 + (size_t)OA * IC : nullptr,
                               N, IC, OB);
}
static void linear_backward_split_cuda(floatX* dinp, float* dW, const floatX* dout_a, const floatX* dout_b, const floatX* inp,
                                       const float* W, int N, int IC, int OA, int OB, GradWrite dinp_write = GRAD_ADD) {
    if (N == 0) return;
    if (!linear_split_bf16(N, IC, OA, OB)) {
        linear_backward_cuda(dinp, dW, nullptr, dout_a, inp, W, N, IC, OA, dinp_write);
        linear_backward_cuda(dinp, dW ? dW + (size_t)OA * IC : nullptr, nullptr, dout_b, inp, W + (size_t)OA * IC, N, IC, OB);
        return;
    }
    linear_backward_split_b16_cuda(dinp, dW, dout_a, dout_b, dW ? linear_round_bf16(inp, (size_t)N * IC, 2) : nullptr, W, N, IC, OA, OB,
                                   dinp_write);
}
#endif

// a model's forward or backward pass holds this while it runs (see linear_weight_bf16)
#ifndef __CUDACC__
static void linear_weights_fixed_begin() {}  // the CPU makes no copies
static void linear_weights_fixed_end() {}
#endif
struct LinearWeightsFixed {
    LinearWeightsFixed() { linear_weights_fixed_begin(); }
    ~LinearWeightsFixed() { linear_weights_fixed_end(); }
    LinearWeightsFixed(const LinearWeightsFixed&) = delete;
};

// ---------------------------------------------------------------------------
// backend wrappers (the convention of common.h): the models call these

static void linear_forward(bool on_gpu, floatX* out, const floatX* inp, const float* weight, const float* bias,
                           int N, int IC, int OC) {
    if (on_gpu) GPU_CALL(linear_forward_cuda(out, inp, weight, bias, N, IC, OC));
    else linear_forward_cpu(out, inp, weight, bias, N, IC, OC);
}
static void linear_backward(bool on_gpu, floatX* dinp, float* dweight, float* dbias, const floatX* dout,
                            const floatX* inp, const float* weight, int N, int IC, int OC, GradWrite dinp_write = GRAD_ADD) {
    if (on_gpu) GPU_CALL(linear_backward_cuda(dinp, dweight, dbias, dout, inp, weight, N, IC, OC, dinp_write));
    else linear_backward_cpu(dinp, dweight, dbias, dout, inp, weight, N, IC, OC, dinp_write);
}
// the split product (see linear_forward_split_cuda); the CPU runs it as its two halves
static void linear_forward_split(bool on_gpu, floatX* out_a, floatX* out_b, const floatX* inp, const float* W, int N, int IC,
                                 int OA, int OB) {
    if (on_gpu) GPU_CALL(linear_forward_split_cuda(out_a, out_b, inp, W, N, IC, OA, OB));
    else {
        linear_forward_cpu(out_a, inp, W, nullptr, N, IC, OA);
        linear_forward_cpu(out_b, inp, W + (size_t)OA * IC, nullptr, N, IC, OB);
    }
}
static void linear_backward_split(bool on_gpu, floatX* dinp, float* dW, const floatX* dout_a, const floatX* dout_b,
                                  const floatX* inp, const float* W, int N, int IC, int OA, int OB, GradWrite dinp_write = GRAD_ADD) {
    if (on_gpu) GPU_CALL(linear_backward_split_cuda(dinp, dW, dout_a, dout_b, inp, W, N, IC, OA, OB, dinp_write));
    else {
        linear_backward_cpu(dinp, dW, nullptr, dout_a, inp, W, N, IC, OA, dinp_write);
        linear_backward_cpu(dinp, dW ? dW + (size_t)OA * IC : nullptr, nullptr, dout_b, inp, W + (size_t)OA * IC, N, IC, OB);
    }
}
#ifdef __CUDACC__
// the same on bf16 activations (the GPU only): the input in bf16, the output (forward) or the input
// gradient (backward) fp32 or bf16, the output gradient fp32 (rounded once here) or bf16; no bias
template <typename OT>
static void linear_forward(bool on_gpu, OT* out, const bf16* in16, const float* weight, const float* bias, int N, int IC, int OC) {
    if (!on_gpu || bias) FATAL("bf16 activations: the GPU's products only, without a bias");
    linear_forward_b16_cuda(out, in16, weight, N, IC, OC);
}
template <typename OT>
static void linear_forward_split(bool on_gpu, OT* out_a, OT* out_b, const bf16* in16, const float* W, int N, int IC, int OA, int OB) {
    if (!on_gpu) FATAL("bf16 activations run on the GPU only");
    linear_forward_split_b16_cuda(out_a, out_b, in16, W, N, IC, OA, OB);
}
template <typename TD, typename TO>
static void linear_backward(bool on_gpu, TD* dinp, float* dweight, float* dbias, const TO* dout, const bf16* in16, const float* weight,
                            int N, int IC, int OC, GradWrite dinp_write = GRAD_ADD) {
    if (!on_gpu || dbias) FATAL("bf16 activations: the GPU's products only, without a bias");
    if constexpr (std::is_same<TO, bf16>::value) linear_backward_bf16_cuda(dinp, dweight, dout, in16, weight, N, IC, OC, dinp_write);
    else linear_backward_b16_cuda(dinp, dweight, dout, in16, weight, N, IC, OC, dinp_write);
}
static void linear_backward_split(bool on_gpu, float* dinp, float* dW, const bf16* dout_a, const bf16* dout_b, const bf16* in16,
                                  const float* W, int N, int IC, int OA, int OB, GradWrite dinp_write = GRAD_ADD) {
    if (!on_gpu) FATAL("bf16 activations run on the GPU only");
    linear_backward_split_bf16_cuda(dinp, dW, dout_a, dout_b, in16, W, N, IC, OA, OB, dinp_write);
}
#endif
