// dev/matmul.cu: which cuBLAS precision for the Mamba-1 step's matmuls (fp32 activations, fp32 master
// weights). Every version computes the three products of one linear layer, out = inp @ W^T,
// dinp += dout @ W, dW += dout^T @ inp, with fp32 operands in memory and fp32 results:
//
//   v1  cublasSgemm, exact fp32 (CUBLAS_DEFAULT_MATH): the accuracy baseline
//   v2  cublasSgemm, TF32 tensor cores (what src/linear.h ran until now): 10-bit mantissas,
//       half the bf16 tensor-core rate
//   v3  cublasGemmEx, fp32 in and out, CUBLAS_COMPUTE_32F_FAST_16BF: cuBLAS rounds the operands to
//       bf16 itself and runs bf16 tensor cores (2x TF32's peak); no extra pass over memory in our code
//   v4  bf16 copies of both operands made by our own conversion kernel, then cublasGemmEx with bf16
//       A/B, fp32 C (the conversion is timed with the product): the matmul reads half the bytes
//   v5  v4 without the copies in the timing (the operands are bf16 already, as in the step with bf16
//       activations: src/linear.h's cublasGemmEx, CUBLAS_GEMM_DEFAULT)
//   v6  the same product through cuBLASLt, the best of the heuristic's first 16 algorithms for the
//       shape (each timed once, median of 5, when the shape is first seen), 32 MiB of workspace
//
// Prediction for v6 (eighth session): the step's products run at 290-480 TFLOP/s in bf16 (in_proj
// 5.8 ms, out_proj 4.8, lm_head 5.3 of the H100's 38.8 ms step); if cuBLAS's default choice is not the
// fastest for these shapes (K = 768 or 1536 is short for a 989 TFLOP/s part), a timed choice among
// its own candidates gains 5-15% on the big products, ~1-2 ms a step.
//
// Prediction: at K = 768-1536 these products are compute-bound in TF32 (in_proj forward: 38.7 GFLOP
// in ~0.2 ms = ~190 TFLOP/s); bf16 tensor cores should take the big ones to ~1.6-1.9x, with v4's
// conversion pass (~6 bytes per element of each operand) eating part of the gain on the thin ones.
//
// Validation: every version against the CPU reference of src/linear.h (fp32 in, fp32 sums) on fresh
// random inputs at odd shapes and on rows of the benchmark shapes. Tolerance: bf16 keeps 8 significant
// bits, so rounding an operand has relative error <= u = 2^-8; a product of two rounded operands
// <= ~2u, and over a sum of K random-sign terms the errors average out to a norm-relative error
// of at most about sqrt(2/3) u ~ 3.2e-3: we accept 2u = 7.8e-3 (TF32: u = 2^-11, accepted 4u = 2e-3).
#include "dev_common.h"
#include "../src/linear.h"

#include <cublas_v2.h>
#include <cublasLt.h>
#include <map>
#include <tuple>

// v6: cuBLASLt with the fastest of the heuristic's candidates, chosen once per (operation, shape)
struct LtChoice { cublasLtMatmulAlgo_t algo; float ms_best, ms_first; int tried; };
static cublasLtHandle_t lt_handle() {
    static cublasLtHandle_t h = nullptr;
    if (!h) cublasCheck(cublasLtCreate(&h));
    return h;
}
static void* lt_workspace(size_t* bytes) {
    static void* w = nullptr;
    *bytes = 32u << 20;
    if (!w) cudaCheck(cudaMalloc(&w, *bytes));
    return w;
}
// C (m x n, fp32, ldc) = op(A) op(B) + beta C, A and B bf16 (column-major, as cublasGemmEx)
static void lt_matmul(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const bf16* A, int lda,
                      const bf16* B, int ldb, const float* beta, float* C, int ldc, LtChoice* report = nullptr) {
    static std::map<std::tuple<int, int, int, int, int, int, int, int>, LtChoice> cache;
    cublasLtMatmulDesc_t op;
    cublasCheck(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasCheck(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    cublasCheck(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    cublasLtMatrixLayout_t la, lb, lc;
    cublasCheck(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m, lda));
    cublasCheck(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k, ldb));
    cublasCheck(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, ldc));
    size_t ws_bytes;
    void* ws = lt_workspace(&ws_bytes);
    const float one = 1.0f;
    auto key = std::make_tuple((int)ta, (int)tb, m, n, k, lda, ldb, *beta != 0.0f ? 1 : 0);
    auto it = cache.find(key);
    if (it == cache.end()) {
        cublasLtMatmulPreference_t pref;
        cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes));
        cublasLtMatmulHeuristicResult_t res[16];
        int got = 0;
        cublasCheck(cublasLtMatmulAlgoGetHeuristic(lt_handle(), op, la, lb, lc, lc, pref, 16, res, &got));
        if (got == 0) { fprintf(stderr, "cuBLASLt: no algorithm for this product\n"); exit(1); }
        // time each on a scratch copy of C (the product accumulates into C)
        float* scratch = dev_alloc<float>((size_t)ldc * n);
        cudaCheck(cudaMemcpy(scratch, C, (size_t)ldc * n * 4, cudaMemcpyDeviceToDevice));
        LtChoice best = {res[0].algo, 1e30f, 0.0f, got};
        for (int i = 0; i < got; i++) {
            if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
            float ms = dev_bench_ms([&](int) {
                cublasCheck(cublasLtMatmul(lt_handle(), op, &one, A, la, B, lb, beta, scratch, lc, scratch, lc, &res[i].algo, ws,
                                           ws_bytes, 0));
            }, 1, 5);
            if (i == 0) best.ms_first = ms;
            if (ms < best.ms_best) { best.ms_best = ms; best.algo = res[i].algo; }
        }
        dev_free(scratch);
        cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
        it = cache.emplace(key, best).first;
    }
    if (report) *report = it->second;
    cublasCheck(cublasLtMatmul(lt_handle(), op, &one, A, la, B, lb, beta, C, lc, C, lc, &it->second.algo, ws, ws_bytes, 0));
    cublasCheck(cublasLtMatrixLayoutDestroy(la)); cublasCheck(cublasLtMatrixLayoutDestroy(lb));
    cublasCheck(cublasLtMatrixLayoutDestroy(lc)); cublasCheck(cublasLtMatmulDescDestroy(op));
}

// fp32 -> bf16, 8 elements per thread (16-byte aligned pointers; a tail of n % 8 one by one)
__global__ void to_bf16_kernel(bf16* dst, const float* src, size_t n) {
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i >= n) return;
    if (i + 8 > n) {
        for (; i < n; i++) dst[i] = from_f32<bf16>(src[i]);
        return;
    }
    float4 a = *reinterpret_cast<const float4*>(src + i), b = *reinterpret_cast<const float4*>(src + i + 4);
    Packed128<bf16> o;
    o.set(0, a.x); o.set(1, a.y); o.set(2, a.z); o.set(3, a.w);
    o.set(4, b.x); o.set(5, b.y); o.set(6, b.z); o.set(7, b.w);
    store128(dst + i, o);
}
static void to_bf16(bf16* dst, const float* src, size_t n) {
    to_bf16_kernel<<<(unsigned)ceil_div((int)((n + 7) / 8), 256), 256>>>(dst, src, n);
}

enum Product { FWD, DINP, DW };
static const char* product_name[] = {"fwd", "dinp", "dW"};

// one product of the layer (N rows, IC -> OC) in version v; scratch holds bf16 copies for v4 (and
// for v5, v6 the bf16 operands themselves: prepare() wrote them)
static void run(int v, Product p, float* out, float* dinp, float* dW, const float* inp, const float* W,
                const float* dout, int N, int IC, int OC, bf16* s0, bf16* s1, LtChoice* lt_report = nullptr) {
    cublasHandle_t h = cublas_handle();
    const float one = 1.0f, zero = 0.0f;
    // the operands and leading dimensions of each product, as in src/linear.h (column-major view)
    cublasOperation_t ta, tb;
    int m, n, k, lda, ldb, ldc;
    const float *A, *B;
    float* C;
    const float* beta;
    if (p == FWD) { ta = CUBLAS_OP_T; tb = CUBLAS_OP_N; m = OC; n = N; k = IC; A = W; lda = IC; B = inp; ldb = IC; C = out; ldc = OC; beta = &zero; }
    else if (p == DINP) { ta = CUBLAS_OP_N; tb = CUBLAS_OP_N; m = IC; n = N; k = OC; A = W; lda = IC; B = dout; ldb = OC; C = dinp; ldc = IC; beta = &one; }
    else { ta = CUBLAS_OP_N; tb = CUBLAS_OP_T; m = IC; n = OC; k = N; A = inp; lda = IC; B = dout; ldb = OC; C = dW; ldc = IC; beta = &one; }
    size_t a_elems = (p == DW) ? (size_t)N * IC : (size_t)OC * IC;
    size_t b_elems = (p == FWD) ? (size_t)N * IC : (size_t)N * OC;
    if (v == 1 || v == 2) {
        cublasCheck(cublasSetMathMode(h, v == 2 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
        cublasCheck(cublasSgemm(h, ta, tb, m, n, k, &one, A, lda, B, ldb, beta, C, ldc));
    } else if (v == 3) {
        cublasCheck(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
        cublasCheck(cublasGemmEx(h, ta, tb, m, n, k, &one, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, beta, C,
                                 CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT));
    } else if (v == 6) {
        lt_matmul(ta, tb, m, n, k, s0, lda, s1, ldb, beta, C, ldc, lt_report);
    } else {
        cublasCheck(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
        if (v == 4) {
            to_bf16(s0, A, a_elems);
            to_bf16(s1, B, b_elems);
        }
        cublasCheck(cublasGemmEx(h, ta, tb, m, n, k, &one, s0, CUDA_R_16BF, lda, s1, CUDA_R_16BF, ldb, beta, C,
                                 CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    cudaCheckLaunch();
}
// v5, v6: the bf16 operands of product p into s0 (A) and s1 (B), outside the timing
static void prepare(Product p, const float* inp, const float* W, const float* dout, int N, int IC, int OC, bf16* s0, bf16* s1) {
    if (p == FWD) { to_bf16(s0, W, (size_t)OC * IC); to_bf16(s1, inp, (size_t)N * IC); }
    else if (p == DINP) { to_bf16(s0, W, (size_t)OC * IC); to_bf16(s1, dout, (size_t)N * OC); }
    else { to_bf16(s0, inp, (size_t)N * IC); to_bf16(s1, dout, (size_t)N * OC); }
    cudaCheck(cudaDeviceSynchronize());
}

// the increment of an accumulated output against the reference's: norm-wise within tol, and every
// element within 4 tol of (|ref| + rms(ref)) so a skipped element fails too
static void check_host(const char* what, const std::vector<float>& got, const std::vector<float>& ref, double tol,
                       double* worst) {
    double err = dev_rel_err(got, ref);
    if (!(err <= tol)) {
        g_dev_failures++;
        fprintf(stderr, "  FAIL %s: rel err %.3e > tol %.1e\n", what, err, tol);
    }
    g_dev_checks++;
    dev_check_elem_host(what, got, ref, 4 * tol, worst);
}

#define N_VERSIONS 6
static const char* version_name[] = {"", "v1 sgemm fp32", "v2 sgemm tf32", "v3 gemmex fast_16bf", "v4 bf16 copies + gemmex",
                                     "v5 bf16 gemmex", "v6 bf16 cublasLt timed"};

// check every product of every version at one shape against the CPU (rows: how many output rows
// of the forward/dinp products to compare; dW is compared whole)
static void validate(int N, int IC, int OC, Rng* rng, double* worst) {
    std::vector<float> inp((size_t)N * IC), W((size_t)OC * IC), dout((size_t)N * OC), dinp0((size_t)N * IC), dW0((size_t)OC * IC);
    dev_fill_normal(inp, 0.0f, 1.0f, rng);
    dev_fill_normal(W, 0.0f, 0.05f, rng);
    dev_fill_normal(dout, 0.0f, 1.0f, rng);
    dev_fill_normal(dinp0, 0.0f, 1.0f, rng);  // accumulated into: never zeros
    dev_fill_normal(dW0, 0.0f, 1.0f, rng);
    std::vector<float> ref_out((size_t)N * OC), ref_dinp = dinp0, ref_dW = dW0;
    linear_forward_cpu(ref_out.data(), inp.data(), W.data(), nullptr, N, IC, OC);
    linear_backward_cpu(ref_dinp.data(), ref_dW.data(), nullptr, dout.data(), inp.data(), W.data(), N, IC, OC);
    float *d_inp = dev_upload<float>(inp), *d_W = dev_upload<float>(W), *d_dout = dev_upload<float>(dout);
    float *d_out = dev_alloc<float>((size_t)N * OC), *d_dinp = dev_alloc<float>((size_t)N * IC), *d_dW = dev_alloc<float>((size_t)OC * IC);
    size_t big = std::max({(size_t)N * IC, (size_t)OC * IC, (size_t)N * OC}) + 8;
    bf16 *s0 = dev_alloc<bf16>(big), *s1 = dev_alloc<bf16>(big);
    for (int v = 1; v <= N_VERSIONS; v++) {
        double tol = v == 1 ? 1e-5 : v == 2 ? 2e-3 : 7.8e-3;
        char what[128];
        dev_poison(d_out, (size_t)N * OC * 4);
        if (v >= 5) prepare(FWD, d_inp, d_W, d_dout, N, IC, OC, s0, s1);
        run(v, FWD, d_out, nullptr, nullptr, d_inp, d_W, d_dout, N, IC, OC, s0, s1);
        snprintf(what, sizeof what, "%s fwd N%d IC%d OC%d", version_name[v], N, IC, OC);
        dev_check(what, d_out, ref_out, tol, &worst[v]);
        std::vector<float> cur = dinp0;
        cudaCheck(cudaMemcpy(d_dinp, cur.data(), cur.size() * 4, cudaMemcpyHostToDevice));
        if (v >= 5) prepare(DINP, d_inp, d_W, d_dout, N, IC, OC, s0, s1);
        run(v, DINP, nullptr, d_dinp, nullptr, d_inp, d_W, d_dout, N, IC, OC, s0, s1);
        // compare the increment, not the sum (the accumulated start would hide errors)
        std::vector<float> got = dev_download(d_dinp, cur.size()), ref_inc(cur.size());
        for (size_t i = 0; i < cur.size(); i++) { got[i] -= dinp0[i]; ref_inc[i] = ref_dinp[i] - dinp0[i]; }
        snprintf(what, sizeof what, "%s dinp N%d IC%d OC%d", version_name[v], N, IC, OC);
        check_host(what, got, ref_inc, tol, &worst[v]);
        cudaCheck(cudaMemcpy(d_dW, dW0.data(), dW0.size() * 4, cudaMemcpyHostToDevice));
        if (v >= 5) prepare(DW, d_inp, d_W, d_dout, N, IC, OC, s0, s1);
        run(v, DW, nullptr, nullptr, d_dW, d_inp, d_W, d_dout, N, IC, OC, s0, s1);
        got = dev_download(d_dW, dW0.size());
        std::vector<float> ref_w(dW0.size());
        for (size_t i = 0; i < dW0.size(); i++) { got[i] -= dW0[i]; ref_w[i] = ref_dW[i] - dW0[i]; }
        snprintf(what, sizeof what, "%s dW N%d IC%d OC%d", version_name[v], N, IC, OC);
        check_host(what, got, ref_w, tol, &worst[v]);
    }
    for (void* p : {(void*)d_inp, (void*)d_W, (void*)d_dout, (void*)d_out, (void*)d_dinp, (void*)d_dW, (void*)s0, (void*)s1}) dev_free(p);
}

int main(int argc, char** argv) {
    Rng rng;
    rng_seed(&rng, 1234);
    double worst[N_VERSIONS + 1] = {};
    // odd shapes (not multiples of 8 need no vector path here except v4's conversion: padded sizes)
    const int vshapes[][3] = {{1, 8, 8}, {37, 80, 48}, {200, 768, 3072}, {1040, 48, 1536}, {64, 1536, 80}};
    for (auto& s : vshapes) validate(s[0], s[1], s[2], &rng, worst);

    dev_print_header();
    // the mamba-130m step's layers: 8192 rows (batch 8 x 1024); the head runs 1334 rows at a time
    struct Layer { const char* name; int N, IC, OC, count; };
    const Layer layers[] = {{"in_proj", 8192, 768, 3072, 24}, {"x_proj", 8192, 1536, 80, 24}, {"dt_proj", 8192, 48, 1536, 24},
                            {"out_proj", 8192, 1536, 768, 24}, {"lm_head chunk", 1334, 768, 50280, 7}};
    double total[N_VERSIONS + 1] = {};
    for (const Layer& L : layers) {
        int N = L.N, IC = L.IC, OC = L.OC;
        std::vector<float> inp((size_t)N * IC), W((size_t)OC * IC), dout((size_t)N * OC);
        dev_fill_normal(inp, 0.0f, 1.0f, &rng);
        dev_fill_normal(W, 0.0f, 0.05f, &rng);
        dev_fill_normal(dout, 0.0f, 1.0f, &rng);
        float *d_inp = dev_upload<float>(inp), *d_W = dev_upload<float>(W), *d_dout = dev_upload<float>(dout);
        float *d_out = dev_alloc<float>((size_t)N * OC), *d_dinp = dev_alloc<float>((size_t)N * IC), *d_dW = dev_alloc<float>((size_t)OC * IC);
        cudaCheck(cudaMemset(d_dinp, 0, (size_t)N * IC * 4));
        cudaCheck(cudaMemset(d_dW, 0, (size_t)OC * IC * 4));
        size_t big = std::max({(size_t)N * IC, (size_t)OC * IC, (size_t)N * OC}) + 8;
        bf16 *s0 = dev_alloc<bf16>(big), *s1 = dev_alloc<bf16>(big);
        for (int v = 1; v <= N_VERSIONS; v++) {
            if (!dev_want_version(argc, argv, v)) continue;
            double layer_ms = 0;
            for (int p = FWD; p <= DW; p++) {
                if (v >= 5) prepare((Product)p, d_inp, d_W, d_dout, N, IC, OC, s0, s1);
                LtChoice lt = {};
                run(v, (Product)p, d_out, d_dinp, d_dW, d_inp, d_W, d_dout, N, IC, OC, s0, s1, &lt);  // v6: chooses here
                float ms = dev_bench_ms([&](int) { run(v, (Product)p, d_out, d_dinp, d_dW, d_inp, d_W, d_dout, N, IC, OC, s0, s1); });
                if (v == 6)
                    printf("  (cuBLASLt %s %s: %d candidates, the heuristic's first %.4f ms, the fastest %.4f ms)\n", L.name,
                           product_name[p], lt.tried, lt.ms_first, lt.ms_best);
                double flops = 2.0 * N * IC * OC;
                // fp32 operands and result (the result read too where it accumulates)
                double bytes = 4.0 * ((p == FWD ? (double)N * IC + (double)OC * IC + (double)N * OC
                                      : p == DINP ? (double)N * OC + (double)OC * IC + 2.0 * N * IC
                                                  : (double)N * OC + (double)N * IC + 2.0 * OC * IC));
                char shape[64], ver[64];
                snprintf(shape, sizeof shape, "%s %s %dx%d->%d", L.name, product_name[p], N, IC, OC);
                snprintf(ver, sizeof ver, "%s (%.0f TF/s)", version_name[v], flops / (ms * 1e-3) / 1e12);
                dev_print_row("matmul", ver, shape, "fp32", ms, bytes, 0.0, true, worst[v]);
                layer_ms += ms;
            }
            total[v] += layer_ms * L.count;
        }
        for (void* p : {(void*)d_inp, (void*)d_W, (void*)d_dout, (void*)d_out, (void*)d_dinp, (void*)d_dW, (void*)s0, (void*)s1}) dev_free(p);
    }
    printf("\nthe mamba-130m step's matmuls (24 layers x 4 linears + 7 head chunks, forward + both backward products):\n");
    for (int v = 1; v <= N_VERSIONS; v++)
        if (total[v] > 0) printf("  %-26s %8.2f ms   worst validation rel err %.2e\n", version_name[v], total[v], worst[v]);
    return dev_finish();
}
