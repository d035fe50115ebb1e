// gpu_vlm_layers.cu: the CUDA vision-language layers (layernorm, GELU, attention and its decode
// step, patch embedding) vs their CPU references on random inputs, odd shapes included. Outputs
// are NaN-poisoned so unwritten elements fail; gradient buffers start from the same random values
// on both sides (tests +=). The GPU side is called through the backend wrappers name(true, ...).
#include "test_util.h"
#include "../src/layernorm.h"
#include "../src/activations.h"
#include "../src/attention.h"
#include "../src/patch_embed.h"

typedef std::vector<float> Vec;

static int* ints_to_device(const std::vector<int>& h) {
    int* d;
    cudaCheck(cudaMalloc(&d, h.size() * sizeof(int) + 4));
    cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(int), cudaMemcpyHostToDevice));
    return d;
}
// device array d (as many values as ref) against the CPU result
static void expect_close(const char* what, const std::string& shape, const float* d, const Vec& ref, double tol) {
    std::string name = std::string(what) + " " + shape;
    Vec got = from_device(d, ref.size());
    check_close(name.c_str(), got.data(), ref.data(), ref.size(), tol);
}

static void test_layernorm(Rng* r, int N, int C) {
    std::string shape = "N=" + std::to_string(N) + " C=" + std::to_string(C);
    Vec x = random_vec((size_t)N * C, r, -2, 2), w = random_vec(C, r, 0.5f, 1.5f), b = random_vec(C, r);
    Vec out(x.size()), mean(N), rstd(N);
    Vec dout = random_vec(x.size(), r), dx = random_vec(x.size(), r), dw = random_vec(C, r), db = random_vec(C, r);
    float *d_x = to_device(x), *d_w = to_device(w), *d_b = to_device(b);
    float *d_out = device_poisoned(x.size()), *d_mean = device_poisoned(N), *d_rstd = device_poisoned(N);
    float *d_dout = to_device(dout), *d_dx = to_device(dx), *d_dw = to_device(dw), *d_db = to_device(db);
    layernorm_forward_cpu(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    layernorm_forward(true, d_out, d_mean, d_rstd, d_x, d_w, d_b, N, C);
    expect_close("layernorm_forward out", shape, d_out, out, 1e-5);
    expect_close("layernorm_forward mean", shape, d_mean, mean, 1e-5);
    expect_close("layernorm_forward rstd", shape, d_rstd, rstd, 1e-5);
    // the backward gets the CPU statistics on both sides, so it is tested on its own
    cudaCheck(cudaMemcpy(d_mean, mean.data(), N * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d_rstd, rstd.data(), N * sizeof(float), cudaMemcpyHostToDevice));
    layernorm_backward_cpu(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(),
                           N, C);
    layernorm_backward(true, d_dx, d_dw, d_db, d_dout, d_x, d_w, d_mean, d_rstd, N, C);
    expect_close("layernorm_backward dx", shape, d_dx, dx, 1e-5);
    expect_close("layernorm_backward dweight", shape, d_dw, dw, 1e-4);
    expect_close("layernorm_backward dbias", shape, d_db, db, 1e-4);
    for (float* p : {d_x, d_w, d_b, d_out, d_mean, d_rstd, d_dout, d_dx, d_dw, d_db}) cudaFree(p);
}

static void test_gelu(Rng* r, size_t n) {
    std::string shape = "n=" + std::to_string(n);
    Vec x = random_vec(n, r, -8, 8), dout = random_vec(n, r), dx = random_vec(n, r), out(n);
    float *d_x = to_device(x), *d_out = device_poisoned(n), *d_dout = to_device(dout), *d_dx = to_device(dx);
    gelu_forward_cpu(out.data(), x.data(), n);
    gelu_forward(true, d_out, d_x, n);
    expect_close("gelu_forward", shape, d_out, out, 1e-5);
    gelu_backward_cpu(dx.data(), dout.data(), x.data(), n);
    gelu_backward(true, d_dx, d_dout, d_x, n);
    expect_close("gelu_backward", shape, d_dx, dx, 1e-5);
    for (float* p : {d_x, d_out, d_dout, d_dx}) cudaFree(p);
}

// lse (B, NH, T): a row without visible keys must be +inf on both sides, the rest within tol
static void expect_lse(const std::string& shape, const float* d, const Vec& ref, double tol) {
    Vec got = from_device(d, ref.size()), g, rf;
    bool inf_ok = true;
    for (size_t i = 0; i < ref.size(); i++) {
        if (std::isinf(ref[i])) { inf_ok &= got[i] == ref[i]; continue; }
        g.push_back(got[i]);
        rf.push_back(ref[i]);
    }
    std::string name = "attention_forward lse " + shape;
    report(inf_ok, (name + " (empty rows +inf)").c_str(), "an empty row's lse is not +inf");
    check_close(name.c_str(), g.data(), rf.data(), g.size(), tol);
}

// lengths empty: no key-padding mask
static void test_attention(Rng* r, int B, int T, int C, int NH, bool causal, std::vector<int> lengths) {
    int hd = C / NH;
    // head dims 16, 32, 64 run the fused kernels: TF32 operands (10 mantissa bits, 2^-11 relative rounding
    // of q, k, v, P, dS) against the fp32 CPU reference; dev/attention.cu measured ~1e-3 relative error
    // (fwd 6.9e-4, bwd 1.0e-3) and holds them to 5e-3. Other head dims run the plain fp32 kernels: 1e-5.
    const bool fused = hd == 16 || hd == 32 || hd == 64;
    const double tol = fused ? 5e-3 : 1e-5;
    std::string shape = "B=" + std::to_string(B) + " T=" + std::to_string(T) + " C=" + std::to_string(C) +
                        " NH=" + std::to_string(NH) + (causal ? " causal" : " bidir") + (fused ? " (fused tf32)" : " (plain)");
    if (!lengths.empty()) {
        shape += " lengths=";
        for (int v : lengths) shape += std::to_string(v) + ",";
    }
    const int* len = lengths.empty() ? nullptr : lengths.data();
    int* d_len = lengths.empty() ? nullptr : ints_to_device(lengths);
    size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, nlse = (size_t)B * NH * T;
    Vec qkv = random_vec(nqkv, r, -1.5f, 1.5f), out(nout), lse(nlse), D(nlse);
    Vec dout = random_vec(nout, r), dqkv0 = random_vec(nqkv, r), dqkv = dqkv0;
    float *d_qkv = to_device(qkv), *d_out = device_poisoned(nout), *d_lse = device_poisoned(nlse);
    float *d_D = device_poisoned(nlse), *d_dout = to_device(dout), *d_dqkv = to_device(dqkv0);
    attention_forward_cpu(out.data(), lse.data(), qkv.data(), len, B, T, C, NH, causal);
    attention_forward(true, d_out, d_lse, d_qkv, d_len, B, T, C, NH, causal);
    expect_close("attention_forward out", shape, d_out, out, tol);
    expect_lse(shape, d_lse, lse, tol);
    // the backward gets the CPU out and lse on both sides
    cudaCheck(cudaMemcpy(d_out, out.data(), nout * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d_lse, lse.data(), nlse * sizeof(float), cudaMemcpyHostToDevice));
    attention_backward_cpu(dqkv.data(), D.data(), dout.data(), qkv.data(), out.data(), lse.data(), len, B, T, C, NH,
                           causal);
    attention_backward(true, d_dqkv, d_D, d_dout, d_qkv, d_out, d_lse, d_len, B, T, C, NH, causal);
    expect_close("attention_backward D", shape, d_D, D, 1e-5);  // fp32 dot products on both sides
    // the increments (the buffers start from the same random values), relative to the gradient's size
    Vec got = from_device(d_dqkv, nqkv);
    for (size_t i = 0; i < nqkv; i++) { got[i] -= dqkv0[i]; dqkv[i] -= dqkv0[i]; }
    check_close(("attention_backward dqkv " + shape).c_str(), got.data(), dqkv.data(), nqkv, tol);
    for (float* p : {d_qkv, d_out, d_lse, d_D, d_dout, d_dqkv}) cudaFree(p);
    if (d_len) cudaFree(d_len);
}

// proportional attention (ToMe): the forward with key_bias (B, T) against attention_forward_bias_cpu,
// through the wrapper and, at head dims 16, 32, 64, the fused TF32 kernel itself (att_fwd_tc). bias_lo:
// the biases are drawn from log(1..8) (token sizes) and, for one key in four, from [bias_lo, 0)
// (large negative ones such as -30: keys the softmax all but drops)
static void test_attention_bias(Rng* r, int B, int T, int C, int NH, bool causal, std::vector<int> lengths,
                                float bias_lo) {
    int hd = C / NH;
    const bool fused = hd == 16 || hd == 32 || hd == 64;
    const double tol = fused ? 5e-3 : 1e-5;  // as test_attention (the wrapper: either kernel, by routing)
    std::string shape = "B=" + std::to_string(B) + " T=" + std::to_string(T) + " C=" + std::to_string(C) +
                        " NH=" + std::to_string(NH) + (causal ? " causal" : " bidir") + " bias_lo=" +
                        std::to_string((int)bias_lo) + (fused ? " (fused tf32)" : " (plain)");
    if (!lengths.empty()) {
        shape += " lengths=";
        for (int v : lengths) shape += std::to_string(v) + ",";
    }
    const int* len = lengths.empty() ? nullptr : lengths.data();
    int* d_len = lengths.empty() ? nullptr : ints_to_device(lengths);
    size_t nqkv = (size_t)B * T * 3 * C, nout = (size_t)B * T * C, nlse = (size_t)B * NH * T;
    Vec qkv = random_vec(nqkv, r, -1.5f, 1.5f), bias((size_t)B * T), out(nout), lse(nlse);
    for (float& x : bias)
        x = rng_u32(r) % 4 == 0 ? bias_lo * rng_uniform(r) : logf((float)(1 + rng_u32(r) % 8));
    float *d_qkv = to_device(qkv), *d_bias = to_device(bias), *d_out = device_poisoned(nout), *d_lse = device_poisoned(nlse);
    attention_forward_bias_cpu(out.data(), lse.data(), qkv.data(), bias.data(), len, B, T, C, NH, causal);
    attention_forward_bias(true, d_out, d_lse, d_qkv, d_bias, d_len, B, T, C, NH, causal);
    expect_close("attention_forward_bias out", shape, d_out, out, tol);
    expect_lse("bias " + shape, d_lse, lse, tol);
    if (fused) {  // the fused kernel itself, whichever path the wrapper takes
        float *d_out2 = device_poisoned(nout), *d_lse2 = device_poisoned(nlse);
        att_fwd_tc<AttMmaTf32>(d_out2, d_lse2, d_qkv, d_bias, d_len, B, T, C, NH, causal);
        expect_close("att_fwd_tc (bias) out", shape, d_out2, out, tol);
        expect_lse("att_fwd_tc bias " + shape, d_lse2, lse, tol);
        cudaFree(d_out2); cudaFree(d_lse2);
    }
    for (float* p : {d_qkv, d_bias, d_out, d_lse}) cudaFree(p);
    if (d_len) cudaFree(d_len);
}

// --bench: attention_forward_bias at the ViT's shapes, the fused kernel vs the plain one (and the
// unbiased fused forward for reference); ms per call, cudaEvent over 200 calls after 20 warm-up
static void bench_attention_bias() {
    Rng r;
    rng_seed(&r, 1);
    const int B = 256, C = 128, NH = 4;
    for (int T : {50, 26}) {
        Vec qkv = random_vec((size_t)B * T * 3 * C, &r, -1.5f, 1.5f), bias((size_t)B * T);
        for (float& x : bias) x = logf((float)(1 + rng_u32(&r) % 8));
        float *d_qkv = to_device(qkv), *d_bias = to_device(bias);
        float *d_out = device_poisoned((size_t)B * T * C), *d_lse = device_poisoned((size_t)B * NH * T);
        auto time = [&](const char* what, const std::function<void()>& f) {
            for (int i = 0; i < 20; i++) f();
            cudaEvent_t e0, e1;
            cudaCheck(cudaEventCreate(&e0)); cudaCheck(cudaEventCreate(&e1));
            cudaCheck(cudaEventRecord(e0));
            for (int i = 0; i < 200; i++) f();
            cudaCheck(cudaEventRecord(e1));
            cudaCheck(cudaEventSynchronize(e1));
            float ms = 0.0f;
            cudaCheck(cudaEventElapsedTime(&ms, e0, e1));
            printf("bench B %d T %d C %d NH %d: %-34s %.4f ms\n", B, T, C, NH, what, ms / 200);
            cudaCheck(cudaEventDestroy(e0)); cudaCheck(cudaEventDestroy(e1));
        };
        time("attention_forward_bias fused", [&] { att_fwd_tc<AttMmaTf32>(d_out, d_lse, d_qkv, d_bias, nullptr, B, T, C, NH, false); });
        time("attention_forward_bias plain", [&] { attention_forward_bias_plain_cuda(d_out, d_lse, d_qkv, d_bias, nullptr, B, T, C, NH, false); });
        time("attention_forward (no bias) fused", [&] { attention_forward_cuda(d_out, d_lse, d_qkv, nullptr, B, T, C, NH, false); });
        for (float* p : {d_qkv, d_bias, d_out, d_lse}) cudaFree(p);
    }
}

// the cache holds NaN from position n on: the step must not read it
static void test_attention_step(Rng* r, int B, int n, int T_max, int C, int NH) {
    std::string shape = "B=" + std::to_string(B) + " n=" + std::to_string(n) + " T_max=" + std::to_string(T_max) +
                        " C=" + std::to_string(C) + " NH=" + std::to_string(NH);
    size_t ncache = (size_t)B * T_max * C;
    Vec q = random_vec((size_t)B * C, r), kc(ncache, NAN), vc(ncache, NAN), out((size_t)B * C);
    for (int b = 0; b < B; b++)
        for (size_t i = (size_t)b * T_max * C; i < ((size_t)b * T_max + n) * C; i++) {
            kc[i] = rng_uniform(r) * 3.0f - 1.5f;
            vc[i] = rng_uniform(r) * 2.0f - 1.0f;
        }
    float *d_q = to_device(q), *d_kc = to_device(kc), *d_vc = to_device(vc), *d_out = device_poisoned(out.size());
    attention_step_cpu(out.data(), q.data(), kc.data(), vc.data(), B, n, T_max, C, NH);
    attention_step(true, d_out, d_q, d_kc, d_vc, B, n, T_max, C, NH);
    expect_close("attention_step", shape, d_out, out, 1e-5);
    // with the positions on the device (a decode step in a CUDA graph): row b at position n - 1 - b % 2,
    // so it reads one position less for odd rows; each row against the CPU over its own count
    std::vector<int> positions(B);
    for (int b = 0; b < B; b++) positions[b] = std::max(0, n - 1 - b % 2);
    Vec out_rows((size_t)B * C);
    for (int b = 0; b < B; b++)
        attention_step_cpu(out_rows.data() + (size_t)b * C, q.data() + (size_t)b * C, kc.data() + (size_t)b * T_max * C,
                           vc.data() + (size_t)b * T_max * C, 1, positions[b] + 1, T_max, C, NH);
    int* d_positions = nullptr;
    cudaCheck(cudaMalloc(&d_positions, B * sizeof(int)));
    cudaCheck(cudaMemcpy(d_positions, positions.data(), B * sizeof(int), cudaMemcpyHostToDevice));
    float* d_p = device_poisoned(attention_step_scratch_floats(B, NH, T_max, C / NH));
    cudaCheck(cudaMemset(d_out, 0xFF, out.size() * sizeof(float)));  // NaN again
    attention_step_launch(d_out, d_p, d_q, d_kc, d_vc, B, 1000000, d_positions, T_max, C, NH);  // n is ignored
    expect_close("attention_step with device positions", shape, d_out, out_rows, 1e-5);
    cudaFree(d_positions);
    for (float* p : {d_q, d_kc, d_vc, d_out, d_p}) cudaFree(p);
}

static void test_patch_embed(Rng* r, int B, int H, int W, int p, int D, bool with_bias) {
    std::string shape = "B=" + std::to_string(B) + " H=" + std::to_string(H) + " W=" + std::to_string(W) +
                        " p=" + std::to_string(p) + " D=" + std::to_string(D) + " bias=" + std::to_string(with_bias);
    int P = (H / p) * (W / p), K = p * p * 3;
    Vec img = random_vec((size_t)B * H * W * 3, r, 0, 1), w = random_vec((size_t)D * K, r), b = random_vec(D, r);
    Vec patches((size_t)B * P * K), out((size_t)B * P * D), dout = random_vec(out.size(), r);
    Vec dw = random_vec(w.size(), r), db = random_vec(D, r);
    float *d_img = to_device(img), *d_w = to_device(w), *d_b = to_device(b), *d_patches = device_poisoned(patches.size());
    float *d_out = device_poisoned(out.size()), *d_dout = to_device(dout), *d_dw = to_device(dw), *d_db = to_device(db);
    patch_embed_forward(false, out.data(), patches.data(), img.data(), w.data(), with_bias ? b.data() : nullptr, B, H,
                        W, p, D);
    patch_embed_forward(true, d_out, d_patches, d_img, d_w, with_bias ? d_b : nullptr, B, H, W, p, D);
    expect_close("patchify", shape, d_patches, patches, 1e-7);
    expect_close("patch_embed_forward", shape, d_out, out, 1e-4);  // TF32 math mode, if the caller set it
    patch_embed_backward(false, dw.data(), with_bias ? db.data() : nullptr, dout.data(), patches.data(), B, P, K, D);
    patch_embed_backward(true, d_dw, with_bias ? d_db : nullptr, d_dout, d_patches, B, P, K, D);
    expect_close("patch_embed_backward dweight", shape, d_dw, dw, 1e-4);
    expect_close("patch_embed_backward dbias", shape, d_db, db, 1e-4);  // unchanged without bias: still equal
    for (float* q : {d_img, d_w, d_b, d_patches, d_out, d_dout, d_dw, d_db}) cudaFree(q);
}

int main(int argc, char** argv) {
    if (argc > 1 && std::string(argv[1]) == "--bench") {
        bench_attention_bias();
        return 0;
    }
    Rng r;
    rng_seed(&r, 8642);
    test_layernorm(&r, 1, 37);
    test_layernorm(&r, 7, 12);
    test_layernorm(&r, 513, 768);     // 3 slabs of rows in the dweight/dbias reduction, the last partial
    test_layernorm(&r, 10000, 129);   // many slabs, C not a multiple of 32
    test_layernorm(&r, 3, 20000);     // wide rows
    test_gelu(&r, 1);
    test_gelu(&r, 37);
    test_gelu(&r, 100003);
    for (int causal = 0; causal < 2; causal++) {
        bool c = causal == 1;
        test_attention(&r, 2, 1, 4, 1, c, {});
        test_attention(&r, 2, 1, 12, 3, c, {1, 0});
        test_attention(&r, 3, 7, 12, 3, c, {7, 4, 1});
        test_attention(&r, 1, 13, 8, 1, c, {});
        test_attention(&r, 3, 13, 12, 3, c, {13, 9, 0});
        test_attention(&r, 2, 37, 96, 3, c, {});        // hd = 32 (fused)
        test_attention(&r, 2, 50, 200, 2, c, {33, 50});  // hd = 100 (plain): lanes stride over channels
        test_attention(&r, 2, 197, 768, 12, c, {197, 131});  // ViT-B/16 at 224: 196 patches + CLS, hd = 64
        test_attention(&r, 1, 300, 64, 4, c, {});                  // hd = 16
        test_attention(&r, 4, 65, 128, 4, c, {});                  // the VLM's vision shape, hd = 32
        test_attention(&r, 4, 89, 128, 4, c, {89, 40, 0, 1});      // the VLM's text shape, an empty sequence
        test_attention(&r, 2, 130, 128, 2, c, {130, 65});          // hd = 64, three query/key tiles
        test_attention(&r, 2, 45, 36, 3, c, {45, 20});             // hd = 12: the plain fallback
        test_attention(&r, 3, 70, 40, 2, c, {70, 0, 33});          // hd = 20: the plain fallback
    }
    for (int causal = 0; causal < 2; causal++) {
        bool c = causal == 1;
        for (float lo : {-8.0f, -30.0f}) {
            test_attention_bias(&r, 2, 1, 64, 4, c, {}, lo);                      // hd 16, one token
            test_attention_bias(&r, 3, 1, 96, 3, c, {1, 0, 1}, lo);               // an empty sequence
            test_attention_bias(&r, 3, 7, 96, 3, c, {7, 4, 1}, lo);               // hd 32
            test_attention_bias(&r, 2, 37, 128, 2, c, {}, lo);                    // hd 64
            test_attention_bias(&r, 4, 50, 128, 4, c, {50, 26, 0, 1}, lo);        // the ViT's shape under ToMe
            test_attention_bias(&r, 4, 26, 128, 4, c, {}, lo);
            test_attention_bias(&r, 2, 130, 128, 2, c, {130, 65}, lo);            // three query/key tiles
            test_attention_bias(&r, 2, 130, 64, 4, c, {129, 64}, lo);             // hd 16
            test_attention_bias(&r, 2, 37, 36, 3, c, {37, 20}, lo);               // hd 12: the plain kernel
        }
    }
    test_attention_step(&r, 1, 1, 1, 4, 1);
    test_attention_step(&r, 2, 7, 13, 12, 3);
    test_attention_step(&r, 3, 45, 64, 96, 3);
    test_attention_step(&r, 2, 300, 301, 768, 12);   // three spans of keys (ATT_STEP_KEYS 128), the last partial
    test_attention_step(&r, 3, 256, 300, 256, 2);    // head dim 128, two whole spans, a third one empty
    test_attention_step(&r, 1, 129, 131, 200, 1);    // head dim 200, one key past a span
    test_attention_step(&r, 1, 130, 131, 600, 1);    // head dim 600: its float4 channel groups in two passes
    test_attention_step(&r, 2, 150, 160, 30, 3);     // head dim 10, C 30: the scalar path (not multiples of 4)
    test_attention_step(&r, 1, 40, 41, 258, 2);      // head dim 129, scalar, channels in two passes
    test_patch_embed(&r, 1, 4, 4, 1, 3, true);
    test_patch_embed(&r, 3, 10, 15, 5, 7, false);
    test_patch_embed(&r, 2, 32, 48, 16, 64, true);
    test_patch_embed(&r, 2, 224, 224, 16, 192, true);
    return test_summary();
}
