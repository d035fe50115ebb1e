// gpu_token_reduction.cu: visual-token reduction on the GPU against the CPU reference.
//   - token_gather and token_pool2x2 at odd shapes (grids 5x7, 7x3, 3x3, 1x1, 4x4, 1x6;
//     channels 1, 13, 130; batches 1 and 3), outputs poisoned (NaN) first: the GPU equals
//     the CPU bit for bit (one thread per element, the same summation order)
//   - the VLM with each reduction: the forward's logits and loss GPU == CPU; KV-cache
//     generation GPU == CPU; the batched decode step GPU == CPU
//   - vlm_profile runs on the GPU (CUDA events): finite times, the CPU's tokens
//   - fastv: the ranking GPU == CPU; the model's selection (but near ties), then with the CPU's
//     selection: logits, loss, generation, the batched decode step; salient: the saliency bit for
//     bit, and the model as the other reductions; the profile with fastv
#include "../src/vlm_profile.h"
#include "test_util.h"

static void test_ops() {
    const int shapes[][2] = {{5, 7}, {7, 3}, {3, 3}, {1, 1}, {4, 4}, {1, 6}};
    const int channels[] = {1, 13, 130};
    Rng r; rng_seed(&r, 1);
    for (auto& g : shapes)
        for (int C : channels)
            for (int B : {1, 3}) {
                int gh = g[0], gw = g[1], P = gh * gw;
                std::vector<float> in = random_vec((size_t)B * P * C, &r);
                float* d_in = to_device(in);
                char name[160];
                // pool
                int oh = (gh + 1) / 2, ow = (gw + 1) / 2, O = oh * ow;
                std::vector<float> ref((size_t)B * O * C);
                token_pool2x2_cpu(ref.data(), in.data(), B, gh, gw, C);
                float* d_out = device_poisoned((size_t)B * O * C);
                token_pool2x2(true, d_out, d_in, B, gh, gw, C);
                std::vector<float> got = from_device(d_out, ref.size());
                snprintf(name, sizeof name, "pool 2x2 GPU == CPU bit for bit: B %d, grid %dx%d, C %d", B, gh, gw, C);
                report(memcmp(got.data(), ref.data(), ref.size() * sizeof(float)) == 0, name, "rel err %.2e", rel_err(got.data(), ref.data(), ref.size()));
                cudaCheck(cudaFree(d_out));
                // gather: random and uniform selections of a few sizes
                for (int K : {1, (P + 1) / 2, P}) {
                    for (ReduceMethod m : {REDUCE_RANDOM, REDUCE_UNIFORM}) {
                        std::vector<int> idx((size_t)B * K), keys = {3, 5, 8};
                        token_select(idx.data(), TokenReduction{m, 0.5f, 42}, gh, gw, K, B, keys.data());
                        int* d_idx; cudaCheck(cudaMalloc(&d_idx, idx.size() * sizeof(int)));
                        cudaCheck(cudaMemcpy(d_idx, idx.data(), idx.size() * sizeof(int), cudaMemcpyHostToDevice));
                        std::vector<float> gref((size_t)B * K * C);
                        token_gather_cpu(gref.data(), in.data(), idx.data(), B, P, K, C);
                        float* d_g = device_poisoned(gref.size());
                        token_gather(true, d_g, d_in, d_idx, B, P, K, C);
                        std::vector<float> gg = from_device(d_g, gref.size());
                        snprintf(name, sizeof name, "gather (%s) GPU == CPU bit for bit: B %d, %d of %dx%d, C %d", REDUCE_NAMES[m], B, K, gh, gw, C);
                        report(memcmp(gg.data(), gref.data(), gref.size() * sizeof(float)) == 0, name);
                        cudaCheck(cudaFree(d_g)); cudaCheck(cudaFree(d_idx));
                    }
                }
                cudaCheck(cudaFree(d_in));
            }
}

static VlmConfig config(int image, int patch, int proj_mlp) {
    VlmConfig c = {};
    c.image_size = image; c.patch = patch;
    c.v_layers = 2; c.v_dim = 24; c.v_heads = 3;
    c.proj_mlp = proj_mlp;
    c.vocab = 17; c.l_layers = 2; c.l_dim = 32; c.l_heads = 2;  // head dim 16: the fused attention kernels
    c.max_text = 9;
    c.t_layers = 1; c.t_dim = 8; c.t_heads = 2; c.clip_dim = 6;
    return c;
}

static void copy_params(VlmModel* gpu, const VlmModel* cpu) {
    cudaCheck(cudaMemcpy(gpu->params.params, cpu->params.params, cpu->params.num_params * sizeof(float), cudaMemcpyHostToDevice));
}

static void test_model(VlmConfig c, const TokenReduction& red) {
    int B = 3, V = c.vocab, T = c.max_text, H = c.image_size;
    VlmModel cpu, gpu;
    vlm_build(&cpu, c, B, false, false);
    vlm_build(&gpu, c, B, true, false);
    vlm_init_params(&cpu, 5);
    Rng r; rng_seed(&r, 6);
    for (size_t i = 0; i < cpu.params.num_params; i++) cpu.params.params[i] += 0.1f * rng_normal(&r);
    copy_params(&gpu, &cpu);
    vlm_set_reduction(&cpu, red); vlm_set_reduction(&gpu, red);
    std::vector<float> images = random_vec((size_t)B * H * H * 3, &r, 0, 1);
    std::vector<int> tok((size_t)B * T, 0), tgt((size_t)B * T, -1), len(B), keys = {11, 12, 13};
    for (int b = 0; b < B; b++) {
        int n = 3 + (int)(rng_u32(&r) % (T - 2));
        tok[(size_t)b * T] = 1; tok[(size_t)b * T + 1] = VLM_IMAGE_TOKEN;
        for (int t = 2; t < n; t++) tok[(size_t)b * T + t] = 5 + rng_u32(&r) % (V - 5);
        for (int t = 1; t < n - 1; t++) tgt[(size_t)b * T + t] = tok[(size_t)b * T + t + 1];
        len[b] = n;
    }
    float lc = vlm_forward(&cpu, images.data(), tok.data(), tgt.data(), len.data(), B, keys.data());
    float lg = vlm_forward(&gpu, images.data(), tok.data(), tgt.data(), len.data(), B, keys.data());
    int Tl = vlm_lm_len(c, cpu.Pi);
    std::vector<float> logits = from_device(gpu.logits, (size_t)B * Tl * V);  // dloss/dlogits after a forward with targets
    char name[200];
    snprintf(name, sizeof name, "%s R=%g, image %d/%d (%d of %d tokens), proj_mlp %d: loss GPU == CPU", REDUCE_NAMES[red.method], red.ratio, H,
             c.patch, cpu.Pi, cpu.P, c.proj_mlp);
    // the GPU's attention is TF32 (~1e-3 per kernel, see gpu_vlm_model.cu): the mean loss agrees
    // to ~1e-5 relative, 1.2e-5 seen once on an H100
    check_close(name, &lg, &lc, 1, 1e-4);
    vlm_forward(&cpu, images.data(), tok.data(), nullptr, len.data(), B, keys.data());
    vlm_forward(&gpu, images.data(), tok.data(), nullptr, len.data(), B, keys.data());
    logits = from_device(gpu.logits, (size_t)B * Tl * V);
    snprintf(name, sizeof name, "%s R=%g, image %d/%d, proj_mlp %d: logits GPU == CPU", REDUCE_NAMES[red.method], red.ratio, H, c.patch, c.proj_mlp);
    check_close(name, logits.data(), cpu.logits, logits.size(), 3e-3);  // TF32 attention (src/attention.h: ~1e-3 per kernel)
    // generation, one sequence, and the batched decode step
    std::vector<int> prompt = {1, VLM_IMAGE_TOKEN, 6, 7};
    std::vector<float> sc, sg;
    std::vector<int> a = vlm_generate(&cpu, images.data(), prompt, 4, -1, &sc, 7);
    std::vector<int> g = vlm_generate(&gpu, images.data(), prompt, 4, -1, &sg, 7);
    snprintf(name, sizeof name, "%s R=%g, image %d/%d: KV-cache generation GPU == CPU", REDUCE_NAMES[red.method], red.ratio, H, c.patch);
    report(a == g && rel_err(sg.data(), sc.data(), sc.size()) < 3e-3, name, "tokens %s, rel err %.2e", a == g ? "equal" : "differ",
           rel_err(sg.data(), sc.data(), std::min(sc.size(), sg.size())));
    std::vector<int> ptok((size_t)B * T, 0), plen(B, (int)prompt.size()), first(B);
    for (int b = 0; b < B; b++) std::copy(prompt.begin(), prompt.end(), ptok.begin() + (size_t)b * T);
    int n = (int)prompt.size() + cpu.Pi - 1;
    for (VlmModel* m : {&cpu, &gpu}) vlm_forward(m, images.data(), ptok.data(), nullptr, plen.data(), B, keys.data());
    for (int b = 0; b < B; b++) {
        const float* row = cpu.logits + ((size_t)b * Tl + n - 1) * V;
        first[b] = (int)(std::max_element(row, row + V) - row);
    }
    VlmKVCache kc, kg;
    vlm_kv_from_prefill(&cpu, &kc, B, n); vlm_kv_from_prefill(&gpu, &kg, B, n);
    vlm_decode_step(&cpu, &kc, first.data()); vlm_decode_step(&gpu, &kg, first.data());
    std::vector<float> dg = from_device(gpu.logits, (size_t)B * V);
    snprintf(name, sizeof name, "%s R=%g, image %d/%d: decode step of %d sequences GPU == CPU", REDUCE_NAMES[red.method], red.ratio, H, c.patch, B);
    check_close(name, dg.data(), cpu.logits, dg.size(), 3e-3);
    vlm_kv_free(&cpu, &kc); vlm_kv_free(&gpu, &kg);
    vlm_free(&cpu); vlm_free(&gpu);
}

// fastv's ranking and salient's saliency on the GPU == the CPU's
static void test_new_ops() {
    Rng r; rng_seed(&r, 3);
    for (int NH : {1, 2, 4}) {
        int B = 3, T = 45, C = 32, P = 25;
        std::vector<float> qkv = random_vec((size_t)B * T * 3 * C, &r, -2, 2);
        int q[3] = {44, 30, 26};
        std::vector<float> ref((size_t)B * P), got((size_t)B * P);
        fastv_image_scores_cpu(ref.data(), qkv.data(), q, B, T, C, NH, 1, P);
        float* d_qkv = to_device(qkv);
        fastv_image_scores(true, got.data(), d_qkv, q, B, T, C, NH, 1, P);
        char name[120];
        snprintf(name, sizeof name, "fastv ranking GPU == CPU: B 3, T 45, C 32, %d heads", NH);
        check_close(name, got.data(), ref.data(), ref.size(), 1e-5);
        cudaCheck(cudaFree(d_qkv));
    }
    for (int ps : {4, 8, 16}) {
        int B = 2, H = 64;
        std::vector<float> img = random_vec((size_t)B * H * H * 3, &r, 0, 1);
        int P = (H / ps) * (H / ps);
        std::vector<float> ref((size_t)B * P), got((size_t)B * P);
        token_saliency_cpu(ref.data(), img.data(), B, H, H, ps);
        float* d_img = to_device(img);
        token_saliency(true, got.data(), d_img, B, H, H, ps);
        char name[120];
        snprintf(name, sizeof name, "salient saliency GPU == CPU bit for bit: 64x64 images, patch %d", ps);
        report(memcmp(got.data(), ref.data(), ref.size() * sizeof(float)) == 0, name, "rel err %.2e", rel_err(got.data(), ref.data(), ref.size()));
        cudaCheck(cudaFree(d_img));
    }
}

// the GPU's selection == the CPU's, but for near ties (the TF32 attention of the blocks before
// the ranking moves the scores by ~1e-3): every swapped pair's CPU scores within 1e-3 relative
static bool same_or_near_tie(const std::vector<int>& a, const std::vector<int>& b, const std::vector<float>& score, int B, int P, int Pf) {
    if (a.size() != b.size()) return false;
    for (int r = 0; r < B; r++) {
        std::vector<int> x(Pf), y(Pf);
        for (int i = 0; i < Pf; i++) x[i] = a[(size_t)r * Pf + i], y[i] = b[(size_t)r * Pf + i];
        if (x == y) continue;
        float lo_kept = INFINITY, hi_other = -INFINITY;  // the CPU's weakest kept one and strongest the GPU kept instead
        for (int i : x) lo_kept = fminf(lo_kept, score[(size_t)r * P + i]);
        for (int i : y)
            if (std::find(x.begin(), x.end(), i) == x.end()) hi_other = fmaxf(hi_other, score[(size_t)r * P + i]);
        if (lo_kept - hi_other > 1e-3f * fabsf(lo_kept)) return false;
    }
    return true;
}

// fastv on the GPU == the CPU: the selection (but near ties), then with the CPU's selection forced:
// logits, loss, generation and the batched decode step
static void test_fastv_model(VlmConfig c, int K, float R) {
    int B = 3, V = c.vocab, T = c.max_text, H = c.image_size;
    VlmModel cpu, gpu;
    vlm_build(&cpu, c, B, false, false);
    vlm_build(&gpu, c, B, true, false);
    vlm_init_params(&cpu, 5);
    Rng r; rng_seed(&r, 16 + K);
    for (size_t i = 0; i < cpu.params.num_params; i++) cpu.params.params[i] += 0.1f * rng_normal(&r);
    copy_params(&gpu, &cpu);
    TokenReduction red = {REDUCE_FASTV, R, 0, K};
    vlm_set_reduction(&cpu, red); vlm_set_reduction(&gpu, red);
    std::vector<float> images = random_vec((size_t)B * H * H * 3, &r, 0, 1);
    std::vector<int> tok((size_t)B * T, 0), tgt((size_t)B * T, -1), len(B);
    for (int b = 0; b < B; b++) {
        int n = 4 + (int)(rng_u32(&r) % (T - 3));
        tok[(size_t)b * T] = 1; tok[(size_t)b * T + 1] = VLM_IMAGE_TOKEN;
        for (int t = 2; t < n; t++) tok[(size_t)b * T + t] = 6 + rng_u32(&r) % (V - 6);
        tok[(size_t)b * T + n - 2] = VLM_SEP_TOKEN;  // the query
        for (int t = 1; t < n - 1; t++) tgt[(size_t)b * T + t] = tok[(size_t)b * T + t + 1];
        len[b] = n;
    }
    int Pf = cpu.Pf, P = cpu.P, T2 = vlm_lm_len(c, Pf);
    char name[200];
    vlm_forward(&cpu, images.data(), tok.data(), nullptr, len.data(), B);
    vlm_forward(&gpu, images.data(), tok.data(), nullptr, len.data(), B);
    snprintf(name, sizeof name, "fastv layer %d R=%g (%d of %d): the GPU's selection == the CPU's (but near ties)", K, R, Pf, P);
    report(same_or_near_tie(cpu.fastv_keep, gpu.fastv_keep, cpu.fastv_score, B, P, Pf), name);
    gpu.fastv_force = cpu.fastv_keep;
    vlm_forward(&gpu, images.data(), tok.data(), nullptr, len.data(), B);
    std::vector<float> logits = from_device(gpu.logits, (size_t)B * T2 * V);
    snprintf(name, sizeof name, "fastv layer %d R=%g: logits GPU == CPU (the same selection)", K, R);
    check_close(name, logits.data(), cpu.logits, logits.size(), 3e-3);
    cpu.fastv_force = cpu.fastv_keep;
    float lc = vlm_forward(&cpu, images.data(), tok.data(), tgt.data(), len.data(), B);
    float lg = vlm_forward(&gpu, images.data(), tok.data(), tgt.data(), len.data(), B);
    snprintf(name, sizeof name, "fastv layer %d R=%g: loss GPU == CPU", K, R);
    check_close(name, &lg, &lc, 1, 1e-4);
    // generation (one sequence) and the batched decode step, the CPU's selection on both
    cpu.fastv_force.clear(); gpu.fastv_force.clear();
    std::vector<int> prompt = {1, VLM_IMAGE_TOKEN, 6, 7, VLM_SEP_TOKEN};
    std::vector<float> sc, sg;
    std::vector<int> a = vlm_generate(&cpu, images.data(), prompt, 4, -1, &sc);
    gpu.fastv_force = cpu.fastv_keep;
    std::vector<int> g = vlm_generate(&gpu, images.data(), prompt, 4, -1, &sg);
    snprintf(name, sizeof name, "fastv layer %d R=%g: KV-cache generation GPU == CPU", K, R);
    report(a == g && rel_err(sg.data(), sc.data(), sc.size()) < 3e-3, name, "tokens %s, rel err %.2e", a == g ? "equal" : "differ",
           rel_err(sg.data(), sc.data(), std::min(sc.size(), sg.size())));
    cpu.fastv_force.clear(); gpu.fastv_force.clear();
    std::vector<int> ptok((size_t)B * T, 0), plen(B, (int)prompt.size()), first(B);
    for (int b = 0; b < B; b++) std::copy(prompt.begin(), prompt.end(), ptok.begin() + (size_t)b * T);
    int n = (int)prompt.size() + P - 1, no = n - (P - Pf);
    vlm_forward(&cpu, images.data(), ptok.data(), nullptr, plen.data(), B);
    gpu.fastv_force = cpu.fastv_keep;
    vlm_forward(&gpu, images.data(), ptok.data(), nullptr, plen.data(), B);
    for (int b = 0; b < B; b++) {
        const float* row = cpu.logits + ((size_t)b * T2 + no - 1) * V;
        first[b] = (int)(std::max_element(row, row + V) - row);
    }
    VlmKVCache kc, kg;
    vlm_kv_from_prefill(&cpu, &kc, B, n); vlm_kv_from_prefill(&gpu, &kg, B, n);
    vlm_decode_step(&cpu, &kc, first.data()); vlm_decode_step(&gpu, &kg, first.data());
    std::vector<float> dg = from_device(gpu.logits, (size_t)B * V);
    snprintf(name, sizeof name, "fastv layer %d R=%g: decode step of %d sequences GPU == CPU", K, R, B);
    check_close(name, dg.data(), cpu.logits, dg.size(), 3e-3);
    vlm_kv_free(&cpu, &kc); vlm_kv_free(&gpu, &kg);
    vlm_free(&cpu); vlm_free(&gpu);
}

static void test_profile() {
    VlmConfig c = config(40, 8, 1);  // a 5x5 grid
    int B = 4;
    VlmModel cpu, gpu;
    vlm_build(&cpu, c, B, false, false);
    vlm_build(&gpu, c, B, true, false);
    vlm_init_params(&cpu, 8);
    copy_params(&gpu, &cpu);
    TokenReduction red = {REDUCE_POOL, 0.75f, 0};
    vlm_set_reduction(&cpu, red); vlm_set_reduction(&gpu, red);
    Rng r; rng_seed(&r, 9);
    std::vector<float> images = random_vec((size_t)B * c.image_size * c.image_size * 3, &r, 0, 1);
    std::vector<int> prompt = {1, VLM_IMAGE_TOKEN, 6, 7, 5};
    VlmProfile pc = vlm_profile(&cpu, images.data(), prompt, nullptr, B, 1, 3);
    VlmProfile pg = vlm_profile(&gpu, images.data(), prompt, nullptr, B, 2, 10);
    bool finite = pg.rows.size() == 7;
    for (const VlmProfileRow& row : pg.rows) finite &= std::isfinite(row.t.median) && row.t.median > 0 && row.t.runs == 10;
    report(finite, "profile on the GPU: 7 components, 10 runs each, positive CUDA-event times");
    report(pg.first_tokens == pc.first_tokens && pg.second_tokens == pc.second_tokens, "profile on the GPU: the CPU's first and second tokens");
    vlm_profile_print(pg);
    vlm_free(&cpu); vlm_free(&gpu);
}

int main() {
    cublasCheck(cublasSetMathMode(cublas_handle(), CUBLAS_DEFAULT_MATH));  // exact FP32 matmuls for comparisons
    test_ops();
    const TokenReduction cases[] = {{REDUCE_NONE, 0, 0}, {REDUCE_POOL, 0.75f, 0}, {REDUCE_RANDOM, 0.6f, 3}, {REDUCE_UNIFORM, 0.75f, 0}, {REDUCE_UNIFORM, 0.3f, 0}};
    for (const TokenReduction& red : cases) {
        test_model(config(40, 8, 1), red);   // a 5x5 grid: odd, partial pooling windows
        test_model(config(48, 12, 0), red);  // 4x4
    }
    test_model(config(24, 8, 1), TokenReduction{REDUCE_RANDOM, 0.95f, 1});  // 3x3 -> 1 token
    test_new_ops();
    for (const TokenReduction& red : {TokenReduction{REDUCE_SALIENT, 0.75f, 0, 0}, TokenReduction{REDUCE_SALIENT, 0.3f, 0, 0}}) {
        test_model(config(40, 8, 1), red);
        test_model(config(48, 12, 0), red);
    }
    for (int K : {0, 1}) {
        test_fastv_model(config(40, 8, 1), K, 0.75f);
        test_fastv_model(config(48, 12, 0), K, 0.5f);
    }
    test_fastv_model(config(40, 8, 1), 1, 0.99f);  // one image token left
    test_profile();
    return test_summary();
}
