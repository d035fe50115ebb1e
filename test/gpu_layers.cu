// gpu_layers.cu: every CUDA layer function vs its CPU reference on random inputs,
// including odd shapes. Outputs are NaN-poisoned so unwritten elements fail;
// gradient buffers start from the same random values on both sides (tests +=).
// The GPU side is called through the backend wrappers name(on_gpu = true, ...) that
// the models use, so their argument forwarding is tested too.
#include "test_util.h"
#include "../src/embedding.h"
#include "../src/rmsnorm.h"
#include "../src/linear.h"
#include "../src/conv1d.h"
#include "../src/activations.h"
#include "../src/cross_entropy.h"
#include "../src/lm_head.h"
#include "../src/adamw.h"

typedef std::vector<float> Vec;

static int* to_device_int(const std::vector<int>& h) {
    int* d; cudaCheck(cudaMalloc(&d, h.size() * sizeof(int) + 4));
    cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(int), cudaMemcpyHostToDevice)); return d;
}
static void check_dev(const char* what, const char* shape, const float* d, const Vec& ref, double tol) {
    char name[192]; snprintf(name, sizeof name, "%s %s", what, shape);
    Vec h = from_device(d, ref.size());
    check_close(name, h.data(), ref.data(), ref.size(), tol);
}

// the same bits in two device buffers (a frozen-parameter call vs the normal one)
static void check_same_dev(const char* what, const char* shape, const float* a, const float* b, size_t n) {
    char name[192]; snprintf(name, sizeof name, "%s %s", what, shape);
    Vec ha = from_device(a, n), hb = from_device(b, n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += memcmp(&ha[i], &hb[i], sizeof(float)) != 0;
    report(bad == 0, name, "%zu of %zu differ", bad, n);
}

// column_sums_add (common.h): out[c] += sum_r part[r][c] on both backends against a double sum,
// out starting from random values (the +=); the kernel twice on the same input gives the same bits
static void test_column_sums(Rng* r, int R, int C) {
    char shape[64]; snprintf(shape, sizeof shape, "R=%d C=%d", R, C);
    Vec part = random_vec((size_t)R * C, r), out0 = random_vec(C, r), want(C), cpu = out0;
    for (int c = 0; c < C; c++) {
        double s = out0[c];
        for (int i = 0; i < R; i++) s += part[(size_t)i * C + c];
        want[c] = (float)s;
    }
    column_sums_add_cpu(cpu.data(), part.data(), R, C);
    check_close((std::string("column_sums_add_cpu ") + shape).c_str(), cpu.data(), want.data(), C, 1e-5 * (1 + R / 64));
    float *d_part = to_device(part), *d_a = to_device(out0), *d_b = to_device(out0);
    column_sums_add_cuda(d_a, d_part, R, C);
    column_sums_add_cuda(d_b, d_part, R, C);
    check_dev("column_sums_add_cuda", shape, d_a, want, 1e-5 * (1 + R / 64));
    check_same_dev("column_sums_add_cuda twice, the same bits", shape, d_a, d_b, C);
    cudaFree(d_part); cudaFree(d_a); cudaFree(d_b);
}

// warp_reduce_scatter<V> (common.h): lane l returns the warp's sum of v[l >> (5 - log2 V)], against a
// double sum over the 32 lanes' values (one warp; values[lane][j] random)
template <int V>
__global__ void reduce_scatter_test_kernel(float* out, const float* values) {
    float v[V];
    for (int j = 0; j < V; j++) v[j] = values[threadIdx.x * V + j];
    out[threadIdx.x] = warp_reduce_scatter<V>(v, threadIdx.x);
}
template <int V>
static void test_warp_reduce_scatter(Rng* r) {
    Vec values = random_vec(32 * V, r), want(32);
    int shift = 0;
    while ((32 >> shift) > V) shift++;
    for (int l = 0; l < 32; l++) {
        double s = 0;
        for (int q = 0; q < 32; q++) s += values[q * V + (l >> shift)];
        want[l] = (float)s;
    }
    float *d_values = to_device(values), *d_out = device_poisoned(32);
    reduce_scatter_test_kernel<V><<<1, 32>>>(d_out, d_values);
    cudaCheck(cudaGetLastError());
    char shape[32]; snprintf(shape, sizeof shape, "V=%d", V);
    check_dev("warp_reduce_scatter: lane l holds the sum of value l >> (5 - log2 V)", shape, d_out, want, 1e-5);
    cudaFree(d_values); cudaFree(d_out);
}

static void test_embedding(Rng* r, int BT, int C, int V) {
    char shape[64]; snprintf(shape, sizeof shape, "BT=%d C=%d V=%d", BT, C, V);
    std::vector<int> tok(BT);
    for (int i = 0; i < BT; i++) tok[i] = rng_u32(r) % V;
    Vec wte = random_vec((size_t)V * C, r), out((size_t)BT * C), dout = random_vec((size_t)BT * C, r);
    Vec dwte = random_vec(wte.size(), r);
    int* d_tok = to_device_int(tok);
    float *d_wte = to_device(wte), *d_out = device_poisoned(out.size()), *d_dout = to_device(dout), *d_dwte = to_device(dwte);
    embedding_forward_cpu(out.data(), tok.data(), wte.data(), BT, C);
    embedding_forward(true, d_out, d_tok, d_wte, BT, C);
    check_dev("embedding_forward", shape, d_out, out, 1e-6);
    embedding_backward_cpu(dwte.data(), dout.data(), tok.data(), BT, C);
    embedding_backward(true, d_dwte, d_dout, d_tok, BT, C);
    check_dev("embedding_backward", shape, d_dwte, dwte, 1e-5);
    cudaFree(d_tok); cudaFree(d_wte); cudaFree(d_out); cudaFree(d_dout); cudaFree(d_dwte);
}

static void test_rmsnorm(Rng* r, int N, int C) {
    char shape[64]; snprintf(shape, sizeof shape, "N=%d C=%d", N, C);
    Vec x = random_vec((size_t)N * C, r, -2, 2), w = random_vec(C, r, 0.5f, 1.5f), out(x.size()), rstd(N);
    Vec dout = random_vec(x.size(), r), dx = random_vec(x.size(), r), dw = random_vec(C, r), dx_init = dx, dw_init = dw;
    float *d_x = to_device(x), *d_w = to_device(w), *d_out = device_poisoned(x.size()), *d_rstd = device_poisoned(N);
    float *d_dout = to_device(dout), *d_dx = to_device(dx), *d_dw = to_device(dw);
    rmsnorm_forward_cpu(out.data(), rstd.data(), x.data(), w.data(), N, C);
    rmsnorm_forward(true, d_out, d_rstd, d_x, d_w, N, C);
    check_dev("rmsnorm_forward out", shape, d_out, out, 1e-5);
    check_dev("rmsnorm_forward rstd", shape, d_rstd, rstd, 1e-5);
    // the backward uses the CPU rstd on both sides so it is tested on its own
    cudaCheck(cudaMemcpy(d_rstd, rstd.data(), N * sizeof(float), cudaMemcpyHostToDevice));
    rmsnorm_backward_cpu(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N, C);
    rmsnorm_backward(true, d_dx, d_dw, d_dout, d_x, d_w, d_rstd, N, C);
    check_dev("rmsnorm_backward dx", shape, d_dx, dx, 1e-5);
    check_dev("rmsnorm_backward dweight", shape, d_dw, dw, 1e-4);
    {  // frozen weight (dweight = nullptr): the same dx bits as the normal call
        float* d_dx2 = to_device(dx_init);
        rmsnorm_backward(true, d_dx2, nullptr, d_dout, d_x, d_w, d_rstd, N, C);
        check_same_dev("rmsnorm_backward dweight=nullptr dx", shape, d_dx2, d_dx, x.size());
        cudaFree(d_dx2);
    }
    if (rmsnorm_vec_ok(C, d_dx, d_dout, d_x)) {  // the vector path's dweight: per-block partial sums added
        // in a fixed order (no atomics): the same bits again (the fallback kernels still use atomics)
        float *d_dx3 = to_device(dx_init), *d_dw3 = to_device(dw_init);
        rmsnorm_backward(true, d_dx3, d_dw3, d_dout, d_x, d_w, d_rstd, N, C);
        check_same_dev("rmsnorm_backward dweight: the same bits on a second call", shape, d_dw3, d_dw, C);
        cudaFree(d_dx3); cudaFree(d_dw3);
    }
    cudaFree(d_x); cudaFree(d_w); cudaFree(d_out); cudaFree(d_rstd); cudaFree(d_dout); cudaFree(d_dx); cudaFree(d_dw);
}

// the RMSNorm with a bf16 output (for in_proj under --matmul bf16): every element is the CPU's fp32
// result rounded to bf16, or its neighbour where the two fp32 results straddle a rounding boundary
// (the GPU's rsqrtf and sum order move the fp32 value by a few ulps): within one bf16 step, 2^-7
// relative; rstd as the fp32 path's; the output poisoned first
static void test_rmsnorm_bf16(Rng* r, int N, int C) {
    char shape[64]; snprintf(shape, sizeof shape, "bf16 out N=%d C=%d", N, C);
    Vec x = random_vec((size_t)N * C, r, -2, 2), w = random_vec(C, r, 0.5f, 1.5f), out(x.size()), rstd(N);
    float *d_x = to_device(x), *d_w = to_device(w), *d_rstd = device_poisoned(N);
    bf16* d_out; cudaCheck(cudaMalloc(&d_out, x.size() * sizeof(bf16)));
    cudaCheck(cudaMemset(d_out, 0xFF, x.size() * sizeof(bf16)));  // NaN
    rmsnorm_forward_cpu(out.data(), rstd.data(), x.data(), w.data(), N, C);
    rmsnorm_forward_bf16_cuda(d_out, d_rstd, d_x, d_w, N, C);
    std::vector<bf16> h(x.size());
    cudaCheck(cudaMemcpy(h.data(), d_out, h.size() * sizeof(bf16), cudaMemcpyDeviceToHost));
    size_t exact = 0, bad = 0;
    for (size_t i = 0; i < h.size(); i++) {
        float got = to_f32(h[i]), want = to_f32(from_f32<bf16>(out[i]));
        exact += got == want;
        bad += !(fabsf(got - out[i]) <= fabsf(out[i]) / 128.0f);
    }
    char name[128];
    snprintf(name, sizeof name, "rmsnorm_forward_bf16 %s: the fp32 result rounded (%zu of %zu exactly)", shape, exact, h.size());
    report(bad == 0 && exact >= h.size() * 99 / 100, name, "%zu outside one bf16 step", bad);
    check_dev("rmsnorm_forward_bf16 rstd", shape, d_rstd, rstd, 1e-5);
    cudaFree(d_x); cudaFree(d_w); cudaFree(d_rstd); cudaFree(d_out);
}

static void test_linear(Rng* r, int N, int IC, int OC, bool use_bias, bool with_dinp) {
    char shape[96];
    snprintf(shape, sizeof shape, "N=%d IC=%d OC=%d bias=%d dinp=%d", N, IC, OC, (int)use_bias, (int)with_dinp);
    Vec inp = random_vec((size_t)N * IC, r), W = random_vec((size_t)OC * IC, r), b = random_vec(OC, r);
    Vec out((size_t)N * OC), dout = random_vec(out.size(), r);
    Vec dinp = random_vec(inp.size(), r), dW = random_vec(W.size(), r), db = random_vec(OC, r);
    float *d_inp = to_device(inp), *d_W = to_device(W), *d_b = to_device(b), *d_out = device_poisoned(out.size());
    float *d_dout = to_device(dout), *d_dinp = to_device(dinp), *d_dW = to_device(dW), *d_db = to_device(db);
    linear_forward_cpu(out.data(), inp.data(), W.data(), use_bias ? b.data() : nullptr, N, IC, OC);
    linear_forward(true, d_out, d_inp, d_W, use_bias ? d_b : nullptr, N, IC, OC);
    check_dev("linear_forward", shape, d_out, out, 1e-4);
    linear_backward_cpu(with_dinp ? dinp.data() : nullptr, dW.data(), use_bias ? db.data() : nullptr,
                        dout.data(), inp.data(), W.data(), N, IC, OC);
    linear_backward(true, with_dinp ? d_dinp : nullptr, d_dW, use_bias ? d_db : nullptr, d_dout, d_inp, d_W, N, IC, OC);
    check_dev("linear_backward dinp", shape, d_dinp, dinp, 1e-4);  // untouched when NULL: still equal
    check_dev("linear_backward dweight", shape, d_dW, dW, 1e-4);
    check_dev("linear_backward dbias", shape, d_db, db, 1e-4);
    cudaFree(d_inp); cudaFree(d_W); cudaFree(d_b); cudaFree(d_out); cudaFree(d_dout); cudaFree(d_dinp);
    cudaFree(d_dW); cudaFree(d_db);
}

// --matmul bf16 (linear.h): both operands of a product rounded to bf16, fp32 accumulation and
// results. Per product, on the increment of the accumulated outputs (a random start would dilute
// the error), with g_matmul_bf16_min_dim = 1 so every shape takes the bf16 path:
//   the exact rule: the CPU reference on bf16-rounded copies of the operands, within fp32
//     summation-order error (1e-5 norm-wise): fails if an operand is not rounded, or rounded
//     another way (TF32, truncation)
//   the distance to fp32, elementwise: rounding a and b to bf16 moves a*b by at most (2u + u^2)|a*b|,
//     u = 2^-8 (bf16's unit roundoff: 8 significant bits), so every output is within
//     (2u + u^2 + 1e-5) * sum|a||b| of the fp32 CPU result: a bound for the rounding, with 1e-5 for
//     both sides' fp32 sums (typically ~sqrt(K) 2^-24); sum|a||b| is the CPU reference on |a|, |b|
static Vec round_bf16_vec(const Vec& v) {
    Vec o(v.size());
    for (size_t i = 0; i < v.size(); i++) o[i] = to_f32(from_f32<bf16>(v[i]));
    return o;
}
static Vec abs_vec(const Vec& v) {
    Vec o(v.size());
    for (size_t i = 0; i < v.size(); i++) o[i] = fabsf(v[i]);
    return o;
}
static Vec minus(const Vec& a, const Vec& b) {
    Vec o(a.size());
    for (size_t i = 0; i < a.size(); i++) o[i] = a[i] - b[i];
    return o;
}
static void check_within_bound(const std::string& name, const Vec& got, const Vec& ref, const Vec& abs_sum) {
    const double u = 1.0 / 256, k = 2 * u + u * u + 1e-5;
    size_t bad = 0, first = 0;
    double worst = 0;  // the largest |got - ref| / bound
    for (size_t i = 0; i < got.size(); i++) {
        double err = fabs((double)got[i] - ref[i]), bound = k * abs_sum[i] + 1e-30;
        if (!(err <= bound)) { if (!bad) first = i; bad++; }
        worst = std::max(worst, err / bound);
    }
    report(bad == 0, name.c_str(), "%zu of %zu outside (2u+u^2)sum|a||b|, first at %zu: got %g ref %g bound %g", bad,
           got.size(), first, got[first], ref[first], k * abs_sum[first]);
    printf("     (largest error / bound: %.3f)\n", worst);
}
static void test_linear_bf16(Rng* r, int N, int IC, int OC) {
    char shape[96];
    snprintf(shape, sizeof shape, "bf16 N=%d IC=%d OC=%d", N, IC, OC);
    Vec inp = random_vec((size_t)N * IC, r), W = random_vec((size_t)OC * IC, r), b = random_vec(OC, r);
    Vec dout = random_vec((size_t)N * OC, r), dinp0 = random_vec(inp.size(), r), dW0 = random_vec(W.size(), r);
    float *d_inp = to_device(inp), *d_W = to_device(W), *d_b = to_device(b), *d_out = device_poisoned((size_t)N * OC);
    float *d_dout = to_device(dout), *d_dinp = to_device(dinp0), *d_dW = to_device(dW0);
    linear_set_precision(MATMUL_BF16);
    int min_dim = g_matmul_bf16_min_dim;
    g_matmul_bf16_min_dim = 1;  // every product on bf16 operands
    linear_forward(true, d_out, d_inp, d_W, d_b, N, IC, OC);
    linear_backward(true, d_dinp, d_dW, nullptr, d_dout, d_inp, d_W, N, IC, OC);
    g_matmul_bf16_min_dim = min_dim;
    linear_set_precision(MATMUL_FP32);
    Vec out = from_device(d_out, (size_t)N * OC);
    Vec dinp = minus(from_device(d_dinp, inp.size()), dinp0), dW = minus(from_device(d_dW, W.size()), dW0);
    // reference[0]: fp32 operands, [1]: bf16-rounded operands, [2]: absolute values (the bound)
    Vec ref_out[3], ref_dinp[3], ref_dW[3];
    Vec x_in[3] = {inp, round_bf16_vec(inp), abs_vec(inp)}, w_in[3] = {W, round_bf16_vec(W), abs_vec(W)};
    Vec g_in[3] = {dout, round_bf16_vec(dout), abs_vec(dout)}, zero_bias(OC, 0.0f);
    for (int k = 0; k < 3; k++) {
        ref_out[k].assign((size_t)N * OC, 0.0f); ref_dinp[k].assign(inp.size(), 0.0f); ref_dW[k].assign(W.size(), 0.0f);
        linear_forward_cpu(ref_out[k].data(), x_in[k].data(), w_in[k].data(), k == 2 ? zero_bias.data() : b.data(), N, IC, OC);
        linear_backward_cpu(ref_dinp[k].data(), ref_dW[k].data(), nullptr, g_in[k].data(), x_in[k].data(), w_in[k].data(), N, IC, OC);
    }
    std::string s = std::string(" ") + shape;
    check_close(("linear_forward == CPU on bf16-rounded operands" + s).c_str(), out.data(), ref_out[1].data(), out.size(), 1e-5);
    check_close(("linear_backward dinp == CPU on bf16-rounded operands" + s).c_str(), dinp.data(), ref_dinp[1].data(), dinp.size(), 1e-5);
    check_close(("linear_backward dweight == CPU on bf16-rounded operands" + s).c_str(), dW.data(), ref_dW[1].data(), dW.size(), 1e-5);
    check_within_bound("linear_forward within the bf16 bound of fp32" + s, out, ref_out[0], ref_out[2]);
    check_within_bound("linear_backward dinp within the bf16 bound of fp32" + s, dinp, ref_dinp[0], ref_dinp[2]);
    check_within_bound("linear_backward dweight within the bf16 bound of fp32" + s, dW, ref_dW[0], ref_dW[2]);
    cudaFree(d_inp); cudaFree(d_W); cudaFree(d_b); cudaFree(d_out); cudaFree(d_dout); cudaFree(d_dinp); cudaFree(d_dW);
}

// the split product (in_proj's [x | z] in two buffers) on bf16 operands: forward, dinp and dW
// against the CPU's two halves on bf16-rounded operands (the rule) and within the bf16 bound of the
// fp32 result; with_dinp / with_dw: the frozen and input-free variants
static void test_linear_split_bf16(Rng* r, int N, int IC, int OA, int OB, bool with_dinp, bool with_dw) {
    char shape[112];
    snprintf(shape, sizeof shape, "split bf16 N=%d IC=%d OA=%d OB=%d dinp=%d dW=%d", N, IC, OA, OB, (int)with_dinp, (int)with_dw);
    const int OC = OA + OB;
    Vec inp = random_vec((size_t)N * IC, r), W = random_vec((size_t)OC * IC, r);
    Vec da = random_vec((size_t)N * OA, r), db = random_vec((size_t)N * OB, r), dinp0 = random_vec(inp.size(), r), dW0 = random_vec(W.size(), r);
    float *d_inp = to_device(inp), *d_W = to_device(W), *d_a = device_poisoned((size_t)N * OA), *d_b = device_poisoned((size_t)N * OB);
    float *d_da = to_device(da), *d_db = to_device(db), *d_dinp = to_device(dinp0), *d_dW = to_device(dW0);
    linear_set_precision(MATMUL_BF16);
    int min_dim = g_matmul_bf16_min_dim;
    g_matmul_bf16_min_dim = 1;
    linear_forward_split(true, d_a, d_b, d_inp, d_W, N, IC, OA, OB);
    linear_backward_split(true, with_dinp ? d_dinp : nullptr, with_dw ? d_dW : nullptr, d_da, d_db, d_inp, d_W, N, IC, OA, OB);
    g_matmul_bf16_min_dim = min_dim;
    linear_set_precision(MATMUL_FP32);
    Vec out_a = from_device(d_a, da.size()), out_b = from_device(d_b, db.size());
    Vec dinp = minus(from_device(d_dinp, inp.size()), dinp0), dW = minus(from_device(d_dW, W.size()), dW0);
    Vec x[3] = {inp, round_bf16_vec(inp), abs_vec(inp)}, w[3] = {W, round_bf16_vec(W), abs_vec(W)};
    Vec ga[3] = {da, round_bf16_vec(da), abs_vec(da)}, gb[3] = {db, round_bf16_vec(db), abs_vec(db)};
    Vec ra[3], rb[3], rdinp[3], rdW[3];
    for (int k = 0; k < 3; k++) {  // the CPU's two halves
        ra[k].assign(da.size(), 0.0f); rb[k].assign(db.size(), 0.0f); rdinp[k].assign(inp.size(), 0.0f); rdW[k].assign(W.size(), 0.0f);
        linear_forward_split(false, ra[k].data(), rb[k].data(), x[k].data(), w[k].data(), N, IC, OA, OB);
        linear_backward_split(false, rdinp[k].data(), rdW[k].data(), ga[k].data(), gb[k].data(), x[k].data(), w[k].data(), N, IC, OA, OB);
    }
    std::string sh = std::string(" ") + shape;
    check_close(("split forward a == CPU on bf16-rounded operands" + sh).c_str(), out_a.data(), ra[1].data(), out_a.size(), 1e-5);
    check_close(("split forward b == CPU on bf16-rounded operands" + sh).c_str(), out_b.data(), rb[1].data(), out_b.size(), 1e-5);
    check_within_bound("split forward b within the bf16 bound of fp32" + sh, out_b, rb[0], rb[2]);
    // each gradient: the rule and the bound when asked for, else untouched (its increment all zeros)
    auto check_grad = [&](const char* what, bool asked, const Vec& got, const Vec* ref) {
        if (asked) {
            check_close((std::string("split backward ") + what + " == CPU on bf16-rounded operands" + sh).c_str(), got.data(),
                        ref[1].data(), got.size(), 1e-5);
            check_within_bound(std::string("split backward ") + what + " within the bf16 bound of fp32" + sh, got, ref[0], ref[2]);
        } else {
            bool zero = std::all_of(got.begin(), got.end(), [](float v) { return v == 0.0f; });
            report(zero, (std::string("split backward without ") + what + " leaves it untouched" + sh).c_str());
        }
    };
    check_grad("dinp", with_dinp, dinp, rdinp);
    check_grad("dW", with_dw, dW, rdW);
    for (float* p : {d_inp, d_W, d_a, d_b, d_da, d_db, d_dinp, d_dW}) cudaFree(p);
}

// a product with a side below g_matmul_bf16_min_dim stays TF32 under --matmul bf16: the same bits
// as a TF32 run; one with every side above it does not
static void test_linear_bf16_thin(Rng* r) {
    const int N = 256, IC = 1536;
    for (int OC : {80, 256}) {
        Vec inp = random_vec((size_t)N * IC, r), W = random_vec((size_t)OC * IC, r);
        float *d_inp = to_device(inp), *d_W = to_device(W), *d_a = device_poisoned((size_t)N * OC), *d_b = device_poisoned((size_t)N * OC);
        linear_set_precision(MATMUL_TF32);
        linear_forward(true, d_a, d_inp, d_W, nullptr, N, IC, OC);
        linear_set_precision(MATMUL_BF16);
        linear_forward(true, d_b, d_inp, d_W, nullptr, N, IC, OC);
        linear_set_precision(MATMUL_FP32);
        Vec a = from_device(d_a, (size_t)N * OC), b = from_device(d_b, (size_t)N * OC);
        bool same = memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
        char name[160];
        snprintf(name, sizeof name, "--matmul bf16 N=%d IC=%d OC=%d (min side %s %d): %s", N, IC, OC,
                 OC < g_matmul_bf16_min_dim ? "<" : ">=", g_matmul_bf16_min_dim, OC < g_matmul_bf16_min_dim ? "TF32 bits" : "not TF32 bits");
        report(same == (OC < g_matmul_bf16_min_dim), name, "bits %s", same ? "equal" : "differ");
        cudaFree(d_inp); cudaFree(d_W); cudaFree(d_a); cudaFree(d_b);
    }
}

// LinearWeightsFixed (--matmul bf16): within a scope a weight used twice gets a bf16 copy of its own,
// reused after; one used once gets none; leaving the outermost scope makes every copy stale, so a
// weight changed between passes is copied again; an inner scope's end does not (the weights are
// fixed until the outermost ends)
static void test_linear_weights_fixed(Rng* r) {
    const int N = 256, IC = 768, OC = 512;
    Vec inp = random_vec((size_t)N * IC, r), W1 = random_vec((size_t)OC * IC, r), W2 = random_vec((size_t)OC * IC, r);
    float *d_inp = to_device(inp), *d_W = to_device(W1), *d_out = device_poisoned((size_t)N * OC);
    float* d_once = to_device(W2);
    linear_set_precision(MATMUL_BF16);
    auto run = [&]() { linear_forward(true, d_out, d_inp, d_W, nullptr, N, IC, OC); return from_device(d_out, (size_t)N * OC); };
    auto same = [](const Vec& a, const Vec& b) { return memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0; };
    const int copies0 = linear_weight_copies();
    Vec plain1 = run(), in_scope, again, third, nested_stale;
    {
        LinearWeightsFixed fixed;
        linear_forward(true, d_out, d_inp, d_once, nullptr, N, IC, OC);  // used once: no copy of its own
        in_scope = run();
        again = run();  // its own copy, made now
        third = run();  // and reused
        { LinearWeightsFixed inner; run(); }
        cudaCheck(cudaMemcpy(d_W, W2.data(), W2.size() * sizeof(float), cudaMemcpyHostToDevice));  // breaks the promise on purpose
        nested_stale = run();  // the outer scope still holds W1's copy
    }
    Vec plain2 = run(), scoped2;
    { LinearWeightsFixed fixed; scoped2 = run(); }
    linear_set_precision(MATMUL_FP32);
    report(same(plain1, in_scope) && same(in_scope, again) && same(again, third),
           "LinearWeightsFixed: the cached bf16 weight gives the bits of a fresh copy");
    report(linear_weight_copies() == copies0 + 1, "LinearWeightsFixed: only the weight used twice has a copy of its own", "%d copies, %d before",
           linear_weight_copies(), copies0);
    report(same(nested_stale, plain1), "LinearWeightsFixed: an inner scope's end keeps the outer scope's copies");
    report(same(scoped2, plain2) && !same(plain2, plain1), "LinearWeightsFixed: a weight changed between scopes is copied again");
    cudaFree(d_inp); cudaFree(d_W); cudaFree(d_out); cudaFree(d_once);
}

static void test_conv1d(Rng* r, int B, int L, int E, int K) {
    char shape[64]; snprintf(shape, sizeof shape, "B=%d L=%d E=%d K=%d", B, L, E, K);
    size_t n = (size_t)B * L * E;
    Vec x = random_vec(n, r), w = random_vec((size_t)E * K, r), b = random_vec(E, r), out(n);
    Vec dout = random_vec(n, r), dx = random_vec(n, r), dw = random_vec(w.size(), r), db = random_vec(E, r);
    Vec dx_init = dx, dw_init = dw, db_init = db;
    float *d_x = to_device(x), *d_w = to_device(w), *d_b = to_device(b), *d_out = device_poisoned(n);
    float *d_dout = to_device(dout), *d_dx = to_device(dx), *d_dw = to_device(dw), *d_db = to_device(db);
    conv1d_forward_cpu(out.data(), x.data(), w.data(), b.data(), B, L, E, K);
    conv1d_forward(true, d_out, d_x, d_w, d_b, B, L, E, K);
    check_dev("conv1d_forward", shape, d_out, out, 1e-5);
    conv1d_backward_cpu(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), B, L, E, K);
    conv1d_backward(true, d_dx, d_dw, d_db, d_dout, d_x, d_w, B, L, E, K);
    check_dev("conv1d_backward dx", shape, d_dx, dx, 1e-5);
    check_dev("conv1d_backward dweight", shape, d_dw, dw, 1e-4);
    check_dev("conv1d_backward dbias", shape, d_db, db, 1e-4);
    for (int mode = 0; mode < 3; mode++) {  // frozen weight and/or bias (nullptr): the same dx bits
        float *d_dx2 = to_device(dx_init), *d_dw2 = to_device(dw_init), *d_db2 = to_device(db_init);
        conv1d_backward(true, d_dx2, mode == 1 ? d_dw2 : nullptr, mode == 2 ? d_db2 : nullptr, d_dout, d_x, d_w, B, L, E, K);
        const char* what[3] = {"conv1d_backward dweight=dbias=nullptr dx", "conv1d_backward dbias=nullptr dx",
                               "conv1d_backward dweight=nullptr dx"};
        check_same_dev(what[mode], shape, d_dx2, d_dx, n);
        if (mode == 1) check_dev("conv1d_backward dbias=nullptr dweight", shape, d_dw2, dw, 1e-4);
        if (mode == 2) check_dev("conv1d_backward dweight=nullptr dbias", shape, d_db2, db, 1e-4);
        cudaFree(d_dx2); cudaFree(d_dw2); cudaFree(d_db2);
    }
    cudaFree(d_x); cudaFree(d_w); cudaFree(d_b); cudaFree(d_out); cudaFree(d_dout); cudaFree(d_dx);
    cudaFree(d_dw); cudaFree(d_db);
}

// bf16 device copies and back (bf16 activations)
static bf16* to_device_bf16(const Vec& h) {
    std::vector<bf16> b(h.size());
    for (size_t i = 0; i < h.size(); i++) b[i] = from_f32<bf16>(h[i]);
    bf16* d;
    cudaCheck(cudaMalloc(&d, (b.size() + 8) * sizeof(bf16)));
    cudaCheck(cudaMemcpy(d, b.data(), b.size() * sizeof(bf16), cudaMemcpyHostToDevice));
    return d;
}
static Vec from_device_bf16(const bf16* d, size_t n) {
    std::vector<bf16> b(n);
    cudaCheck(cudaMemcpy(b.data(), d, n * sizeof(bf16), cudaMemcpyDeviceToHost));
    Vec f(n);
    for (size_t i = 0; i < n; i++) f[i] = to_f32(b[i]);
    return f;
}
static const double BF16_U = 1.0 / 256;  // bf16's unit roundoff: one rounding moves a value by <= u relative

// conv1d + SiLU with bf16 activations (x, out, dout, dx): the CPU on the same bf16 inputs; out and
// dx are the fp32 results rounded once (+ u); dweight, dbias fp32. dx starts at zero (the model's
// scratch) and a second call must add as much again (2x, two roundings)
static void test_conv1d_silu_bf16(Rng* r, int B, int L, int E, int K) {
    char shape[64]; snprintf(shape, sizeof shape, "bf16 B=%d L=%d E=%d K=%d", B, L, E, K);
    size_t n = (size_t)B * L * E;
    Vec x = round_bf16_vec(random_vec(n, r, -2, 2)), w = random_vec((size_t)E * K, r), b = random_vec(E, r), out(n);
    Vec dout = round_bf16_vec(random_vec(n, r)), dx(n, 0.0f), dw(w.size(), 0.0f), db(E, 0.0f);
    bf16 *d_x = to_device_bf16(x), *d_dout = to_device_bf16(dout), *d_out = to_device_bf16(Vec(n, NAN)), *d_dx = to_device_bf16(dx);
    float *d_w = to_device(w), *d_b = to_device(b), *d_dw = to_device(dw), *d_db = to_device(db);
    conv1d_silu_forward_cpu(out.data(), x.data(), w.data(), b.data(), B, L, E, K);
    conv1d_silu_forward_b16_cuda(d_out, d_x, d_w, d_b, B, L, E, K);
    check_close((std::string("conv1d_silu_forward ") + shape).c_str(), from_device_bf16(d_out, n).data(), out.data(), n, 1e-5 + BF16_U);
    conv1d_silu_backward_cpu(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), b.data(), B, L, E, K);
    for (int pass = 1; pass <= 2; pass++) {
        conv1d_silu_backward_b16_cuda(d_dx, d_dw, d_db, d_dout, d_x, d_w, d_b, B, L, E, K);
        Vec want_dx = dx, want_dw = dw, want_db = db;
        for (float& v : want_dx) v *= pass;
        for (float& v : want_dw) v *= pass;
        for (float& v : want_db) v *= pass;
        std::string tag = std::string(pass == 2 ? " (added twice) " : " ") + shape;
        check_close(("conv1d_silu_backward dx" + tag).c_str(), from_device_bf16(d_dx, n).data(), want_dx.data(), n, 1e-5 + pass * BF16_U);
        check_dev(("conv1d_silu_backward dweight" + tag).c_str(), "", d_dw, want_dw, 1e-4);
        check_dev(("conv1d_silu_backward dbias" + tag).c_str(), "", d_db, want_db, 1e-4);
    }
    cudaFree(d_x); cudaFree(d_dout); cudaFree(d_out); cudaFree(d_dx); cudaFree(d_w); cudaFree(d_b); cudaFree(d_dw); cudaFree(d_db);
}

// the products of bf16 activations (linear.h): a bf16 output (out = in16 W^T rounded once) and a
// bf16 input gradient (dinp16 += dout16 W, rounded once per call), against the CPU on the same
// bf16 operands (the weight rounded as linear_weight_bf16 does); dW fp32. Thin shapes included:
// with bf16 activations every product of the layer takes this path (dt_proj: IC = 48)
static void test_linear_bf16_activations(Rng* r, int N, int IC, int OC) {
    char shape[96]; snprintf(shape, sizeof shape, "bf16 activations N=%d IC=%d OC=%d", N, IC, OC);
    Vec inp = round_bf16_vec(random_vec((size_t)N * IC, r)), W = random_vec((size_t)OC * IC, r);
    Vec dout = round_bf16_vec(random_vec((size_t)N * OC, r)), Wr = round_bf16_vec(W);
    bf16 *d_in = to_device_bf16(inp), *d_dout = to_device_bf16(dout), *d_out = to_device_bf16(Vec((size_t)N * OC, NAN));
    bf16* d_dinp = to_device_bf16(Vec(inp.size(), 0.0f));
    float *d_W = to_device(W), *d_dW = to_device(Vec(W.size(), 0.0f));
    Vec out((size_t)N * OC, 0.0f), dinp(inp.size(), 0.0f), dW(W.size(), 0.0f);
    linear_forward_cpu(out.data(), inp.data(), Wr.data(), nullptr, N, IC, OC);
    linear_backward_cpu(dinp.data(), dW.data(), nullptr, dout.data(), inp.data(), Wr.data(), N, IC, OC);
    linear_forward_b16_cuda(d_out, d_in, d_W, N, IC, OC);
    check_close((std::string("linear_forward bf16 out ") + shape).c_str(), from_device_bf16(d_out, out.size()).data(), out.data(),
                out.size(), 1e-5 + BF16_U);
    for (int pass = 1; pass <= 2; pass++) {
        linear_backward_bf16_cuda(d_dinp, d_dW, d_dout, d_in, d_W, N, IC, OC);
        Vec want_dinp = dinp, want_dW = dW;
        for (float& v : want_dinp) v *= pass;
        for (float& v : want_dW) v *= pass;
        std::string tag = std::string(pass == 2 ? " (added twice) " : " ") + shape;
        check_close(("linear_backward bf16 dinp" + tag).c_str(), from_device_bf16(d_dinp, dinp.size()).data(), want_dinp.data(),
                    dinp.size(), 1e-5 + pass * BF16_U);
        check_dev(("linear_backward bf16 dweight" + tag).c_str(), "", d_dW, want_dW, 1e-5);
    }
    cudaFree(d_in); cudaFree(d_dout); cudaFree(d_out); cudaFree(d_dinp); cudaFree(d_W); cudaFree(d_dW);
}

// in_proj's split product on bf16 activations: the forward writing bf16 x | z, the backward from bf16
// dx | dz (linear_backward_split_bf16_cuda), the halves one stride apart (as the model's views: one
// strided-batched launch each for the forward and dW) or in the other order (two products each),
// against the CPU's two halves on the same bf16 operands (the weight rounded as the copies are)
static void test_split_bf16_activations(Rng* r, int N, int IC, int O, bool paired) {
    char shape[96]; snprintf(shape, sizeof shape, "split, bf16 activations N=%d IC=%d O=%d %s", N, IC, O, paired ? "(one launch)" : "(two)");
    Vec inp = round_bf16_vec(random_vec((size_t)N * IC, r)), W = random_vec((size_t)2 * O * IC, r), Wr = round_bf16_vec(W);
    Vec da = round_bf16_vec(random_vec((size_t)N * O, r)), db = round_bf16_vec(random_vec((size_t)N * O, r));
    Vec both((size_t)2 * N * O, NAN);
    bf16* out = to_device_bf16(both);  // [a | b] consecutive (paired) or [b | a]
    Vec g2((size_t)2 * N * O);
    for (size_t i = 0; i < (size_t)N * O; i++) { g2[i] = paired ? da[i] : db[i]; g2[(size_t)N * O + i] = paired ? db[i] : da[i]; }
    bf16* grads = to_device_bf16(g2);
    bf16 *out_a = paired ? out : out + (size_t)N * O, *out_b = paired ? out + (size_t)N * O : out;
    bf16 *g_a = paired ? grads : grads + (size_t)N * O, *g_b = paired ? grads + (size_t)N * O : grads;
    bf16* d_in = to_device_bf16(inp);
    float *d_W = to_device(W), *d_dinp = to_device(Vec(inp.size(), 0.0f)), *d_dW = to_device(Vec(W.size(), 0.0f));
    linear_forward_split_b16_cuda(out_a, out_b, d_in, d_W, N, IC, O, O);
    linear_backward_split_bf16_cuda(d_dinp, d_dW, g_a, g_b, d_in, d_W, N, IC, O, O);
    Vec ra((size_t)N * O, 0.0f), rb((size_t)N * O, 0.0f), rdinp(inp.size(), 0.0f), rdW(W.size(), 0.0f);
    linear_forward_split(false, ra.data(), rb.data(), inp.data(), Wr.data(), N, IC, O, O);
    linear_backward_split(false, rdinp.data(), rdW.data(), da.data(), db.data(), inp.data(), Wr.data(), N, IC, O, O);
    std::string sh = std::string(" ") + shape;
    check_close(("forward x half (bf16)" + sh).c_str(), from_device_bf16(out_a, ra.size()).data(), ra.data(), ra.size(), 1e-5 + BF16_U);
    check_close(("forward z half (bf16)" + sh).c_str(), from_device_bf16(out_b, rb.size()).data(), rb.data(), rb.size(), 1e-5 + BF16_U);
    check_dev(("backward dinp" + sh).c_str(), "", d_dinp, rdinp, 1e-5);
    check_dev(("backward dW" + sh).c_str(), "", d_dW, rdW, 1e-5);
    cudaFree(out); cudaFree(grads); cudaFree(d_in); cudaFree(d_W); cudaFree(d_dinp); cudaFree(d_dW);
}

static void test_conv1d_silu(Rng* r, int B, int L, int E, int K) {
    char shape[64]; snprintf(shape, sizeof shape, "B=%d L=%d E=%d K=%d", B, L, E, K);
    size_t n = (size_t)B * L * E;
    Vec x = random_vec(n, r, -2, 2), w = random_vec((size_t)E * K, r), b = random_vec(E, r), out(n);
    Vec dout = random_vec(n, r), dx = random_vec(n, r), dw = random_vec(w.size(), r), db = random_vec(E, r);
    Vec dx_init = dx, dw_init = dw, db_init = db;
    float *d_x = to_device(x), *d_w = to_device(w), *d_b = to_device(b), *d_out = device_poisoned(n);
    float *d_dout = to_device(dout), *d_dx = to_device(dx), *d_dw = to_device(dw), *d_db = to_device(db);
    conv1d_silu_forward_cpu(out.data(), x.data(), w.data(), b.data(), B, L, E, K);
    conv1d_silu_forward(true, d_out, d_x, d_w, d_b, B, L, E, K);
    check_dev("conv1d_silu_forward", shape, d_out, out, 1e-5);
    conv1d_silu_backward_cpu(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), b.data(), B, L, E, K);
    conv1d_silu_backward(true, d_dx, d_dw, d_db, d_dout, d_x, d_w, d_b, B, L, E, K);
    check_dev("conv1d_silu_backward dx", shape, d_dx, dx, 1e-5);
    check_dev("conv1d_silu_backward dweight", shape, d_dw, dw, 1e-4);
    check_dev("conv1d_silu_backward dbias", shape, d_db, db, 1e-4);
    for (int mode = 0; mode < 3; mode++) {  // frozen weight and/or bias (nullptr): the same dx bits
        float *d_dx2 = to_device(dx_init), *d_dw2 = to_device(dw_init), *d_db2 = to_device(db_init);
        conv1d_silu_backward(true, d_dx2, mode == 1 ? d_dw2 : nullptr, mode == 2 ? d_db2 : nullptr, d_dout, d_x, d_w,
                             d_b, B, L, E, K);
        const char* what[3] = {"conv1d_silu_backward dweight=dbias=nullptr dx", "conv1d_silu_backward dbias=nullptr dx",
                               "conv1d_silu_backward dweight=nullptr dx"};
        check_same_dev(what[mode], shape, d_dx2, d_dx, n);
        if (mode == 1) check_dev("conv1d_silu_backward dbias=nullptr dweight", shape, d_dw2, dw, 1e-4);
        if (mode == 2) check_dev("conv1d_silu_backward dweight=nullptr dbias", shape, d_db2, db, 1e-4);
        cudaFree(d_dx2); cudaFree(d_dw2); cudaFree(d_db2);
    }
    cudaFree(d_x); cudaFree(d_w); cudaFree(d_b); cudaFree(d_out); cudaFree(d_dout); cudaFree(d_dx);
    cudaFree(d_dw); cudaFree(d_db);
}

// the split forms (Mamba-2's conv: output columns [0, wa) / [wa, wa + wb) / the rest in three tensors,
// the backward's output gradient read from three): the one-tensor CPU reference split / concatenated
static void test_conv1d_silu_split(Rng* r, int B, int L, int E, int K, int wa, int wb) {
    char shape[96]; snprintf(shape, sizeof shape, "split B=%d L=%d E=%d K=%d parts %d/%d/%d", B, L, E, K, wa, wb, E - wa - wb);
    const int wc = E - wa - wb;
    size_t n = (size_t)B * L * E, rows = (size_t)B * L;
    Vec x = random_vec(n, r, -2, 2), w = random_vec((size_t)E * K, r), b = random_vec(E, r), out(n);
    Vec dout = random_vec(n, r), dx = random_vec(n, r), dw = random_vec(w.size(), r), db = random_vec(E, r);
    Vec oa(rows * wa), ob(rows * wb), oc(rows * wc), ga(rows * wa), gb(rows * wb), gc(rows * wc);
    conv1d_silu_forward_cpu(out.data(), x.data(), w.data(), b.data(), B, L, E, K);
    split_columns_cpu(oa.data(), ob.data(), oc.data(), out.data(), (int)rows, wa, wb, wc);
    split_columns_cpu(ga.data(), gb.data(), gc.data(), dout.data(), (int)rows, wa, wb, wc);  // the gradient's parts
    float *d_x = to_device(x), *d_w = to_device(w), *d_b = to_device(b), *d_scr = device_poisoned(n);
    float *d_oa = device_poisoned(oa.size()), *d_ob = device_poisoned(ob.size()), *d_oc = device_poisoned(oc.size());
    float *d_ga = to_device(ga), *d_gb = to_device(gb), *d_gc = to_device(gc);
    float *d_dx = to_device(dx), *d_dw = to_device(dw), *d_db = to_device(db);
    conv1d_silu_forward_split(true, d_oa, d_ob, d_oc, d_scr, d_x, d_w, d_b, B, L, E, K, wa, wb);
    check_dev("conv1d_silu_forward_split part a", shape, d_oa, oa, 1e-5);
    check_dev("conv1d_silu_forward_split part b", shape, d_ob, ob, 1e-5);
    check_dev("conv1d_silu_forward_split part c", shape, d_oc, oc, 1e-5);
    conv1d_silu_backward_cpu(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), b.data(), B, L, E, K);
    conv1d_silu_backward_split(true, d_dx, d_dw, d_db, d_ga, d_gb, d_gc, d_scr, d_x, d_w, d_b, B, L, E, K, wa, wb);
    check_dev("conv1d_silu_backward_split dx", shape, d_dx, dx, 1e-5);
    check_dev("conv1d_silu_backward_split dweight", shape, d_dw, dw, 1e-4);
    check_dev("conv1d_silu_backward_split dbias", shape, d_db, db, 1e-4);
    for (float* q : {d_x, d_w, d_b, d_scr, d_oa, d_ob, d_oc, d_ga, d_gb, d_gc, d_dx, d_dw, d_db}) cudaFree(q);
}

// GRAD_SET (common.h): every backward that takes it, from a NaN-filled input gradient, gives the bits
// of the same call adding onto zeros (cuBLAS at beta 0 against beta 1, the conv kernels' stores against
// their read-modify-writes): an element left unwritten stays NaN and differs. T: float or bf16.
template <typename T>
static void check_grad_set_dev(const std::string& what, size_t n, const std::function<void(T* dx, GradWrite)>& run) {
    T *d_add, *d_set;
    cudaCheck(cudaMalloc(&d_add, n * sizeof(T) + 16)); cudaCheck(cudaMalloc(&d_set, n * sizeof(T) + 16));
    cudaCheck(cudaMemset(d_add, 0, n * sizeof(T))); cudaCheck(cudaMemset(d_set, 0xFF, n * sizeof(T)));
    run(d_add, GRAD_ADD);
    run(d_set, GRAD_SET);
    std::vector<T> a(n), b(n);
    cudaCheck(cudaDeviceSynchronize());
    cudaCheck(cudaMemcpy(a.data(), d_add, n * sizeof(T), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(b.data(), d_set, n * sizeof(T), cudaMemcpyDeviceToHost));
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += memcmp(&a[i], &b[i], sizeof(T)) != 0;
    report(bad == 0, ("GRAD_SET into NaN == GRAD_ADD into zeros: " + what).c_str(), "%zu of %zu differ", bad, n);
    cudaFree(d_add); cudaFree(d_set);
}
static void test_grad_set(Rng* r) {
    const int N = 333, IC = 129, OA = 64, OB = 68, OC = OA + OB;
    Vec inp = round_bf16_vec(random_vec((size_t)N * IC, r)), W = random_vec((size_t)OC * IC, r);
    Vec dout = round_bf16_vec(random_vec((size_t)N * OC, r));
    float *d_in = to_device(inp), *d_W = to_device(W), *d_dout = to_device(dout);
    bf16 *d_in16 = to_device_bf16(inp), *d_dout16 = to_device_bf16(dout);
    int min_dim = g_matmul_bf16_min_dim;
    for (MatmulPrecision prec : {MATMUL_FP32, MATMUL_BF16}) {
        linear_set_precision(prec);
        g_matmul_bf16_min_dim = 1;  // under bf16 every product on bf16 operands
        std::string p = prec == MATMUL_FP32 ? " (fp32)" : " (bf16 operands)";
        for (int rows : {1, N})  // one row: the fp32 GEMV's beta
            check_grad_set_dev<float>("linear_backward dinp rows=" + std::to_string(rows) + p, (size_t)rows * IC, [&](float* dx, GradWrite g) {
                linear_backward(true, dx, nullptr, nullptr, d_dout, d_in, d_W, rows, IC, OC, g);
            });
        check_grad_set_dev<float>("linear_backward_split dinp" + p, (size_t)N * IC, [&](float* dx, GradWrite g) {
            linear_backward_split(true, dx, nullptr, d_dout, d_dout + (size_t)N * OA, d_in, d_W, N, IC, OA, OB, g);
        });
    }
    linear_set_precision(MATMUL_BF16);
    check_grad_set_dev<bf16>("linear_backward bf16 dinp from bf16 dout (bf16 activations)", (size_t)N * IC, [&](bf16* dx, GradWrite g) {
        linear_backward(true, dx, nullptr, nullptr, d_dout16, d_in16, d_W, N, IC, OC, g);
    });
    check_grad_set_dev<float>("linear_backward fp32 dinp from bf16 dout (dt_proj's ddt_low)", (size_t)N * IC, [&](float* dx, GradWrite g) {
        linear_backward(true, dx, nullptr, nullptr, d_dout16, d_in16, d_W, N, IC, OC, g);
    });
    check_grad_set_dev<float>("linear_backward_split fp32 dinp from bf16 halves (in_proj's dxn)", (size_t)N * IC, [&](float* dx, GradWrite g) {
        linear_backward_split(true, dx, nullptr, d_dout16, d_dout16 + (size_t)N * OA, d_in16, d_W, N, IC, OA, OB, g);
    });
    g_matmul_bf16_min_dim = min_dim;
    linear_set_precision(MATMUL_FP32);
    for (int K : {4, 5, 3}) for (int E : {64, 37}) {  // K 5: the generic kernel; E 37: the scalar path
        const int B = 2, L = 70;
        size_t n = (size_t)B * L * E;
        Vec x = round_bf16_vec(random_vec(n, r, -2, 2)), g = round_bf16_vec(random_vec(n, r)), w = random_vec((size_t)E * K, r), b = random_vec(E, r);
        float *d_x = to_device(x), *d_g = to_device(g), *d_w = to_device(w), *d_b = to_device(b);
        std::string shape = " E=" + std::to_string(E) + " K=" + std::to_string(K);
        check_grad_set_dev<float>("conv1d_silu_backward dx" + shape, n, [&](float* dx, GradWrite gw) {
            conv1d_silu_backward(true, dx, nullptr, nullptr, d_g, d_x, d_w, d_b, B, L, E, K, gw);
        });
        if (K <= 4) {
            bf16 *d_x16 = to_device_bf16(x), *d_g16 = to_device_bf16(g);
            check_grad_set_dev<bf16>("conv1d_silu_backward bf16 dx" + shape, n, [&](bf16* dx, GradWrite gw) {
                conv1d_silu_backward(true, dx, nullptr, nullptr, d_g16, d_x16, d_w, d_b, B, L, E, K, gw);
            });
            cudaFree(d_x16); cudaFree(d_g16);
        }
        cudaFree(d_x); cudaFree(d_g); cudaFree(d_w); cudaFree(d_b);
    }
    cudaFree(d_in); cudaFree(d_W); cudaFree(d_dout); cudaFree(d_in16); cudaFree(d_dout16);
}

// rmsnorm_forward_residual (the layer before's residual add fused into this norm), in place on the branch
// as the model runs it: x_out == the CPU's add bit for bit, out and rstd as the CPU's (fp32 output: 1e-5;
// bf16 output: the fp32 result rounded, within one bf16 step); the vector path and the fallback (C % 4)
static void test_rmsnorm_residual(Rng* r, int N, int C, bool bf16_out) {
    char shape[64]; snprintf(shape, sizeof shape, "N=%d C=%d%s", N, C, bf16_out ? " bf16 out" : "");
    Vec a = random_vec((size_t)N * C, r, -1, 1), b = random_vec(a.size(), r, -1, 1), w = random_vec(C, r, 0.5f, 1.5f);
    Vec sum(a.size()), out(a.size()), rstd(N);
    rmsnorm_forward_residual_cpu(out.data(), rstd.data(), sum.data(), a.data(), b.data(), w.data(), N, C);
    float *d_a = to_device(a), *d_b = to_device(b), *d_w = to_device(w), *d_rstd = device_poisoned(N);
    Vec got_out;
    if (bf16_out) {
        bf16* d_out = to_device_bf16(Vec(a.size(), NAN));
        rmsnorm_forward_residual_cuda(d_out, d_rstd, d_b, d_a, d_b, d_w, N, C);
        got_out = from_device_bf16(d_out, a.size());
        cudaFree(d_out);
        size_t bad = 0;
        for (size_t i = 0; i < a.size(); i++) bad += !(fabsf(got_out[i] - out[i]) <= fabsf(out[i]) / 128.0f);
        report(bad == 0, (std::string("rmsnorm_forward_residual out within one bf16 step ") + shape).c_str(), "%zu outside", bad);
    } else {
        float* d_out = device_poisoned(a.size());
        rmsnorm_forward_residual(true, d_out, d_rstd, d_b, d_a, d_b, d_w, N, C);
        check_dev("rmsnorm_forward_residual out", shape, d_out, out, 1e-5);
        cudaFree(d_out);
    }
    Vec x_out = from_device(d_b, a.size());
    report(memcmp(x_out.data(), sum.data(), sum.size() * sizeof(float)) == 0,
           (std::string("rmsnorm_forward_residual x_out (in place) == the CPU's add, bit for bit ") + shape).c_str(), "differs");
    check_dev("rmsnorm_forward_residual rstd", shape, d_rstd, rstd, 1e-5);
    cudaFree(d_a); cudaFree(d_b); cudaFree(d_w); cudaFree(d_rstd);
}

static void test_activations(Rng* r, size_t n) {
    char shape[64]; snprintf(shape, sizeof shape, "n=%zu", n);
    Vec x = random_vec(n, r, -8, 8), y = random_vec(n, r), dout = random_vec(n, r), dx0 = random_vec(n, r);
    for (size_t i = 0; i < n; i += 7) x[i] = 15.0f + 15.0f * rng_uniform(r);  // softplus linear branch
    float *d_x = to_device(x), *d_y = to_device(y), *d_dout = to_device(dout);
    Vec out(n), dx;
    float* d_out = device_poisoned(n);
    silu_forward_cpu(out.data(), x.data(), n);
    silu_forward(true, d_out, d_x, n);
    check_dev("silu_forward", shape, d_out, out, 1e-5);
    dx = dx0; float* d_dx = to_device(dx0);
    silu_backward_cpu(dx.data(), dout.data(), x.data(), n);
    silu_backward(true, d_dx, d_dout, d_x, n);
    check_dev("silu_backward", shape, d_dx, dx, 1e-5);
    cudaFree(d_out); d_out = device_poisoned(n);
    softplus_forward_cpu(out.data(), x.data(), n);
    softplus_forward(true, d_out, d_x, n);
    check_dev("softplus_forward", shape, d_out, out, 1e-5);
    cudaFree(d_dx); dx = dx0; d_dx = to_device(dx0);
    softplus_backward_cpu(dx.data(), dout.data(), x.data(), n);
    softplus_backward(true, d_dx, d_dout, d_x, n);
    check_dev("softplus_backward", shape, d_dx, dx, 1e-5);
    cudaFree(d_out); d_out = device_poisoned(n);
    add_forward_cpu(out.data(), x.data(), y.data(), n);
    add_forward(true, d_out, d_x, d_y, n);
    check_dev("add_forward", shape, d_out, out, 1e-6);
    Vec acc = dx0; float* d_acc = to_device(dx0);
    add_inplace_cpu(acc.data(), y.data(), n);
    add_inplace(true, d_acc, d_y, n);
    check_dev("add_inplace", shape, d_acc, acc, 1e-6);
    cudaFree(d_x); cudaFree(d_y); cudaFree(d_dout); cudaFree(d_out); cudaFree(d_dx); cudaFree(d_acc);
}

static void test_cross_entropy(Rng* r, int BT, int V) {
    char shape[64]; snprintf(shape, sizeof shape, "BT=%d V=%d", BT, V);
    Vec logits = random_vec((size_t)BT * V, r, -4, 4);
    std::vector<int> tgt(BT);
    for (int i = 0; i < BT; i++) tgt[i] = rng_u32(r) % V;
    if (BT > 1) tgt[BT / 2] = -1;  // ignored row
    if (BT > 4) tgt[BT - 1] = -1;  // a second one (last row)
    if (BT > 2) tgt[0] = V - 1;    // target in the scalar tail
    int* d_tgt = to_device_int(tgt);
    float scale = 1.0f / BT;
    for (int wg = 0; wg < 2; wg++) {
        Vec lg = logits, losses(BT);
        float *d_lg = to_device(logits), *d_losses = device_poisoned(BT);
        cross_entropy_cpu(losses.data(), lg.data(), tgt.data(), BT, V, scale, wg == 1);
        cross_entropy(true, d_losses, d_lg, d_tgt, BT, V, scale, wg == 1);
        char s2[96]; snprintf(s2, sizeof s2, "%s write_grad=%d", shape, wg);
        check_dev("cross_entropy losses", s2, d_losses, losses, 1e-5);
        check_dev("cross_entropy logits/grad", s2, d_lg, lg, 1e-5);
        cudaFree(d_lg); cudaFree(d_losses);
    }
    cudaFree(d_tgt);
}

// lm_head_loss_backward: with bf16 operands the cross-entropy writes the gradient as bf16 for the
// products: the same losses, dx and dW bits as the three unfused calls (whose copy rounds the fp32
// gradient the same way); in fp32 (FP32 / TF32) the unfused calls themselves. Ignored rows (target
// -1), a target in the scalar tail, V not a multiple of 4 (the gradient's scalar stores).
// lm_head.h. fp32: lm_head_loss_backward == linear + cross_entropy + linear_backward, bit for bit.
// bf16 (the logits rounded once to bf16, dlogits in their place): within bf16's rounding of the fp32
// CPU's losses, dx and dW (the logits move by <= 2^-9 of |logit| (~0.01 here), dlogits by 2^-9: 3e-3 on
// the losses, 2e-2 on the gradients, norm-wise; a wrong softmax or a missing rounding is far outside).
// Both: lm_head_loss's losses == lm_head_loss_backward's, bit for bit (one product, one kernel).
static void test_lm_head(Rng* r, int rows, int D, int V, MatmulPrecision prec) {
    char shape[96];
    snprintf(shape, sizeof shape, "rows=%d D=%d V=%d %s", rows, D, V, prec == MATMUL_BF16 ? "bf16" : "fp32");
    Vec x = random_vec((size_t)rows * D, r), W = random_vec((size_t)V * D, r, -0.1f, 0.1f);
    Vec dx0 = random_vec(x.size(), r), dW0 = random_vec(W.size(), r);
    std::vector<int> tgt(rows);
    for (int i = 0; i < rows; i++) tgt[i] = rng_u32(r) % V;
    if (rows > 2) { tgt[1] = -1; tgt[0] = V - 1; }
    int* d_tgt = to_device_int(tgt);
    float *d_x = to_device(x), *d_W = to_device(W);
    Vec got[2][3];  // [fused, reference][losses, dx, dW] (the reference: unfused on the GPU (fp32), the CPU (bf16))
    Vec loss_only;
    linear_set_precision(prec);
    for (int fused = 0; fused < 2; fused++) {
        float *d_logits = device_poisoned((size_t)rows * V), *d_losses = device_poisoned(rows);
        float *d_dx = to_device(dx0), *d_dW = to_device(dW0);
        if (fused == 0) {
            lm_head_loss_backward(true, d_losses, d_dx, d_dW, d_logits, d_x, d_W, d_tgt, rows, D, V, 0.5f);
            float* d_losses2 = device_poisoned(rows);
            lm_head_loss(true, d_losses2, d_logits, d_x, d_W, d_tgt, rows, D, V);
            loss_only = from_device(d_losses2, rows);
            cudaFree(d_losses2);
        } else if (prec != MATMUL_BF16) {
            linear_forward(true, d_logits, d_x, d_W, nullptr, rows, D, V);
            cross_entropy(true, d_losses, d_logits, d_tgt, rows, V, 0.5f, true);
            linear_backward(true, d_dx, d_dW, nullptr, d_logits, d_x, d_W, rows, D, V);
        }
        if (fused == 0 || prec != MATMUL_BF16) {
            got[fused][0] = from_device(d_losses, rows); got[fused][1] = from_device(d_dx, x.size()); got[fused][2] = from_device(d_dW, W.size());
        }
        for (float* p : {d_logits, d_losses, d_dx, d_dW}) cudaFree(p);
    }
    linear_set_precision(MATMUL_FP32);
    const char* what[3] = {"losses", "dx", "dW"};
    if (prec == MATMUL_BF16) {  // the fp32 CPU reference; the gradients as increments over their random start
        Vec logits((size_t)rows * V), losses(rows), dx(x.size(), 0.0f), dW(W.size(), 0.0f);
        linear_forward_cpu(logits.data(), x.data(), W.data(), nullptr, rows, D, V);
        cross_entropy_cpu(losses.data(), logits.data(), tgt.data(), rows, V, 0.5f, true);
        linear_backward_cpu(dx.data(), dW.data(), nullptr, logits.data(), x.data(), W.data(), rows, D, V);
        got[1][0] = losses; got[1][1] = dx; got[1][2] = dW;
        got[0][1] = minus(got[0][1], dx0); got[0][2] = minus(got[0][2], dW0);
        const double tol[3] = {3e-3, 2e-2, 2e-2};
        for (int k = 0; k < 3; k++) {
            char name[160];
            snprintf(name, sizeof name, "lm_head_loss_backward %s (bf16 logits) within bf16's rounding of the fp32 CPU: %s", shape, what[k]);
            check_close(name, got[0][k].data(), got[1][k].data(), got[1][k].size(), tol[k]);
        }
    } else {
        for (int k = 0; k < 3; k++) {
            char name[160];
            snprintf(name, sizeof name, "lm_head_loss_backward %s == linear + cross_entropy + linear_backward, bit for bit: %s", shape, what[k]);
            bool same = got[0][k].size() == got[1][k].size() && memcmp(got[0][k].data(), got[1][k].data(), got[0][k].size() * 4) == 0;
            bool finite = true;
            for (float v : got[0][k]) finite &= std::isfinite(v);
            report(same && finite, name, "%s", finite ? "they differ" : "non-finite values");
        }
    }
    char name[160];
    snprintf(name, sizeof name, "lm_head_loss %s: the losses of lm_head_loss_backward, bit for bit", shape);
    report(memcmp(loss_only.data(), got[0][0].data(), rows * sizeof(float)) == 0, name, "they differ");
    cudaFree(d_x); cudaFree(d_W); cudaFree(d_tgt);
}

static void test_adamw(Rng* r, size_t n) {
    char shape[64]; snprintf(shape, sizeof shape, "n=%zu", n);
    Vec p = random_vec(n, r), m = random_vec(n, r, -0.1f, 0.1f), v = random_vec(n, r, 0, 0.1f);
    float *d_p = to_device(p), *d_m = to_device(m), *d_v = to_device(v);
    for (int t = 1; t <= 3; t++) {
        Vec g = random_vec(n, r);
        float* d_g = to_device(g);
        adamw_update_cpu(p.data(), g.data(), m.data(), v.data(), n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, t, 0.8f);
        adamw_update(true, d_p, d_g, d_m, d_v, n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, t, 0.8f);
        cudaFree(d_g);
    }
    check_dev("adamw params", shape, d_p, p, 1e-5);
    check_dev("adamw m", shape, d_m, m, 1e-5);
    check_dev("adamw v", shape, d_v, v, 1e-5);
    cudaFree(d_p); cudaFree(d_m); cudaFree(d_v);
    Vec x = random_vec(n, r);
    float* d_x = to_device(x);
    double ref = sum_squares_cpu(x.data(), n), got = sum_squares(true, d_x, n);
    char name[96]; snprintf(name, sizeof name, "sum_squares %s", shape);
    report(fabs(got - ref) <= 1e-5 * ref, name, "got %.9g ref %.9g", got, ref);
    cudaFree(d_x);
}

// split/concat columns on the GPU equal the CPU (exact: pure data movement)
static void test_columns(Rng* r, int N, int ca, int cb, int cc) {
    int C = ca + cb + cc;
    std::vector<float> wide = random_vec((size_t)N * C, r), a((size_t)N * ca), b((size_t)N * cb), c((size_t)N * cc);
    split_columns_cpu(a.data(), b.data(), c.data(), wide.data(), N, ca, cb, cc);
    float* d_wide = to_device(wide);
    float *d_a = device_poisoned(a.size()), *d_b = device_poisoned(b.size()), *d_c = device_poisoned(c.size());
    split_columns(true, d_a, d_b, d_c, d_wide, N, ca, cb, cc);
    char name[96];
    snprintf(name, sizeof name, "split_columns N=%d [%d|%d|%d]", N, ca, cb, cc);
    bool ok = from_device(d_a, a.size()) == a && from_device(d_b, b.size()) == b && from_device(d_c, c.size()) == c;
    report(ok, name, "differs from the CPU");
    float* d_back = device_poisoned(wide.size());
    concat_columns(true, d_back, d_a, d_b, d_c, N, ca, cb, cc);
    snprintf(name, sizeof name, "concat_columns N=%d [%d|%d|%d]", N, ca, cb, cc);
    report(from_device(d_back, wide.size()) == wide, name, "differs from the input");
    cudaFree(d_wide); cudaFree(d_a); cudaFree(d_b); cudaFree(d_c); cudaFree(d_back);
}

int main() {
    Rng r;
    rng_seed(&r, 4321);
    {
        Rng rc; rng_seed(&rc, 77);
        test_columns(&rc, 1, 1, 1, 1);
        test_columns(&rc, 8192, 48, 16, 16);
        test_columns(&rc, 37, 3, 5, 7);
    }
    test_warp_reduce_scatter<1>(&r); test_warp_reduce_scatter<2>(&r); test_warp_reduce_scatter<4>(&r);
    test_warp_reduce_scatter<8>(&r); test_warp_reduce_scatter<16>(&r); test_warp_reduce_scatter<32>(&r);
    test_column_sums(&r, 1, 1);
    test_column_sums(&r, 129, 7);      // rows past one pass of the block's 128, columns in a partial block
    test_column_sums(&r, 64, 24);      // the SSD's dA / dD parts (B * nc, H)
    test_column_sums(&r, 1320, 768);   // the RMSNorm backward's partials
    test_column_sums(&r, 256, 1537);   // the gated norm's, odd width
    test_embedding(&r, 1, 37, 7);
    test_embedding(&r, 13, 33, 50);
    test_embedding(&r, 4096, 256, 256);
    test_rmsnorm(&r, 1, 37);
    test_rmsnorm(&r, 7, 37);
    test_rmsnorm(&r, 1000, 256);
    test_rmsnorm(&r, 10000, 129);   // more rows than the backward grid: rows strided per block
    test_rmsnorm(&r, 37, 20000);    // dweight partial needs > 48 KB shared memory
    test_rmsnorm(&r, 1000, 768);    // vector path
    test_rmsnorm(&r, 3000, 2048);   // vector path, rows strided over the resident blocks
    test_rmsnorm(&r, 5, 4096);      // largest vector-path C (1024 threads)
    test_rmsnorm(&r, 7, 8192);      // C/4 > 1024: warp-per-row fallback
    test_rmsnorm(&r, 9, 38);        // C % 4 != 0 -> fallback
    test_rmsnorm_bf16(&r, 1, 768);
    test_rmsnorm_bf16(&r, 1000, 768);
    test_rmsnorm_bf16(&r, 37, 4096);
    {
        Rng rr; rng_seed(&rr, 41);  // own stream: the tests after this one keep their inputs
        test_rmsnorm_residual(&rr, 1000, 768, false);  // the vector path
        test_rmsnorm_residual(&rr, 7, 38, false);      // C % 4 != 0: the add, then the plain kernel
        test_rmsnorm_residual(&rr, 1000, 768, true);   // bf16 output (the M1 layers' xn)
        test_rmsnorm_residual(&rr, 3, 4096, true);
    }
    test_linear(&r, 1, 5, 3, true, true);        // one row: the GEMV (one float at a time)
    test_linear(&r, 1, 768, 1536, false, true);  // the GEMV with 16-byte loads, a partial last unrolled round
    test_linear(&r, 1, 1536, 24, true, false);   // 24 outputs: a partial block of warps
    test_linear(&r, 7, 37, 19, true, true);
    test_linear(&r, 7, 37, 19, false, false);
    test_linear(&r, 333, 129, 67, true, true);
    test_linear(&r, 4096, 256, 512, false, true);
    test_linear(&r, 1000, 512, 256, true, false);
    test_linear_bf16(&r, 1, 5, 3);        // one row, tiny: the conversion's scalar tail only
    test_linear_bf16(&r, 7, 37, 19);      // odd sizes: unaligned rows, tails
    test_linear_bf16(&r, 333, 129, 67);
    test_linear_bf16(&r, 2048, 768, 1536);  // the 130m in_proj's widths
    test_linear_bf16_thin(&r);
    test_linear_split_bf16(&r, 7, 37, 19, 23, true, true);     // odd widths: the scalar interleave
    test_linear_split_bf16(&r, 1, 8, 4, 4, true, true);        // one row
    test_linear_split_bf16(&r, 333, 129, 64, 68, true, false); // frozen weight
    test_linear_split_bf16(&r, 333, 129, 64, 68, false, true); // no input gradient
    test_linear_split_bf16(&r, 2048, 768, 1536, 1536, true, true);  // the 130m in_proj
    test_linear_weights_fixed(&r);
    test_lm_head(&r, 150, 256, 50280, MATMUL_BF16);  // the vector stores (every side >= 128: the bf16 path)
    test_lm_head(&r, 130, 128, 1001, MATMUL_BF16);  // V % 4 != 0: unaligned rows, scalar stores
    test_lm_head(&r, 37, 256, 5000, MATMUL_FP32);   // the fp32 path: the unfused calls
    test_conv1d(&r, 1, 1, 37, 4);
    test_conv1d(&r, 2, 7, 37, 4);
    test_conv1d(&r, 2, 3, 5, 4);
    test_conv1d(&r, 3, 300, 130, 4);
    test_conv1d(&r, 2, 1000, 64, 4);
    test_conv1d(&r, 1, 5, 5, 1);
    test_conv1d_silu(&r, 1, 1, 5, 4);
    test_conv1d_silu(&r, 2, 7, 37, 4);      // E odd: scalar (NC = 1) path
    test_conv1d_silu(&r, 2, 130, 64, 4);    // L not a multiple of the time chunks
    test_conv1d_silu(&r, 8, 1024, 1536, 4); // mamba-130m shape
    test_conv1d_silu(&r, 2, 70, 38, 3);     // other templated K
    test_conv1d_silu(&r, 2, 70, 37, 5);     // generic-K fallback
    test_conv1d_silu(&r, 1, 9, 6, 1);       // K = 1 (generic)
    test_conv1d_silu_split(&r, 2, 130, 96, 4, 64, 16);  // Mamba-2's layout (x | B | C), 8-byte accesses
    {
        Rng rg; rng_seed(&rg, 31);  // own stream: the tests after this one keep their inputs
        test_grad_set(&rg);
    }
    test_conv1d_silu_split(&r, 2, 37, 37, 4, 21, 8);    // an odd part width: one channel a thread
    test_conv1d_silu_split(&r, 1, 70, 40, 3, 24, 8);    // K = 3
    test_conv1d_silu_split(&r, 2, 9, 40, 5, 24, 8);     // K = 5: through the scratch, split / concatenated
    test_conv1d_silu_bf16(&r, 8, 1024, 1536, 4);  // bf16 activations: 4 channels a thread
    test_conv1d_silu_bf16(&r, 2, 130, 36, 4);     // E % 8 != 0 (still 4 channels a thread)
    test_conv1d_silu_bf16(&r, 2, 7, 37, 4);       // E odd: one channel a thread
    test_conv1d_silu_bf16(&r, 1, 1, 40, 3);
    test_conv1d_silu_bf16(&r, 2, 70, 38, 2);
    test_linear_bf16_activations(&r, 2048, 768, 1536);  // in_proj's half
    test_linear_bf16_activations(&r, 1000, 48, 1536);   // dt_proj (thin input)
    test_linear_bf16_activations(&r, 1000, 1536, 80);   // x_proj (thin output)
    test_linear_bf16_activations(&r, 7, 40, 24);
    test_split_bf16_activations(&r, 1000, 768, 1536, true);
    test_split_bf16_activations(&r, 1000, 768, 1536, false);
    test_split_bf16_activations(&r, 7, 40, 24, true);
    test_activations(&r, 1);
    test_activations(&r, 37);
    test_activations(&r, 100003);
    test_cross_entropy(&r, 1, 256);
    test_cross_entropy(&r, 7, 37);
    test_cross_entropy(&r, 1000, 256);
    test_cross_entropy(&r, 3, 50280);
    test_cross_entropy(&r, 5, 11);       // V < one block, odd: scalar head/tail only
    test_cross_entropy(&r, 1, 3);        // V < vector width
    test_cross_entropy(&r, 6, 50257);    // odd V: rows start misaligned (head + tail)
    test_cross_entropy(&r, 6, 50280);
    test_adamw(&r, 1);
    test_adamw(&r, 37);
    test_adamw(&r, 1000003);
    return test_summary();
}
