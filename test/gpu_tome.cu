// gpu_tome.cu: ToMe (src/tome.h), proportional attention (src/attention.h) and the ViT classifier
// (src/vlm_model.h) on the GPU against the CPU reference; outputs poisoned (NaN) first.
//   - attention_forward_bias at head dims 4, 8, 16, 32, 64 and odd lengths (the fused TF32 kernel at
//     16, 32, 64: to 5e-3 as test/gpu_vlm_layers.cu holds it; the plain fp32 kernel to 1e-5)
//   - tome_key_mean, tome_best_match and token_merge: bit for bit (one thread per element, the CPU's order)
//   - the selection and groups on the device (tome_select_batch, tome_merge_groups, tome_size_bias,
//     tome_init): bit for bit at odd lengths (not multiples of the thread block), many tied scores
//     (+0 and -0 among them), r = 0 and r = the most a block can merge
//   - the encoder (tome_forward): the GPU's merge decisions == the CPU's (fp32 attention), outputs,
//     sizes and representatives; with TF32 attention (head dim 16) the CPU's decisions forced
//   - the VLM with tome: logits, loss, KV-cache generation and the batched decode step GPU == CPU
//   - the classifier: logits with none / tome / pool / random, and one training step (loss and every
//     gradient) GPU == CPU
#include "../src/vlm_profile.h"
#include "test_util.h"

static void test_ops() {
    Rng r; rng_seed(&r, 1);
    char name[200];
    const int shapes[][4] = {{2, 9, 12, 3}, {3, 37, 24, 3}, {2, 65, 64, 4}, {2, 17, 128, 4}, {1, 1, 8, 2}, {2, 33, 128, 2}, {1, 70, 40, 5}};
    for (auto& s : shapes) {
        int B = s[0], T = s[1], C = s[2], NH = s[3];
        std::vector<float> qkv = random_vec((size_t)B * T * 3 * C, &r, -1.5f, 1.5f), bias((size_t)B * T);
        for (float& x : bias) x = logf((float)(1 + rng_u32(&r) % 6));
        std::vector<float> out((size_t)B * T * C), lse((size_t)B * NH * T);
        attention_forward_bias_cpu(out.data(), lse.data(), qkv.data(), bias.data(), nullptr, B, T, C, NH, false);
        float *d_qkv = to_device(qkv), *d_bias = to_device(bias), *d_out = device_poisoned(out.size()), *d_lse = device_poisoned(lse.size());
        attention_forward_bias(true, d_out, d_lse, d_qkv, d_bias, nullptr, B, T, C, NH, false);
        std::vector<float> go = from_device(d_out, out.size()), gl = from_device(d_lse, lse.size());
        double tol = attention_fused_ok(C, NH, {d_out, d_qkv}) ? 5e-3 : 1e-5;  // TF32 tensor cores : fp32
        snprintf(name, sizeof name, "proportional attention GPU == CPU: B %d, T %d, C %d, %d heads (head dim %d): out", B, T, C, NH, C / NH);
        check_close(name, go.data(), out.data(), out.size(), tol);
        snprintf(name, sizeof name, "proportional attention GPU == CPU: B %d, T %d, C %d, %d heads: lse", B, T, C, NH);
        check_close(name, gl.data(), lse.data(), lse.size(), tol);
        // the key mean, bit for bit
        int hd = C / NH;
        std::vector<float> km((size_t)B * T * hd);
        tome_key_mean_cpu(km.data(), qkv.data(), B, T, C, NH);
        float* d_km = device_poisoned(km.size());
        tome_key_mean(true, d_km, d_qkv, B, T, C, NH);
        std::vector<float> gk = from_device(d_km, km.size());
        snprintf(name, sizeof name, "tome key mean GPU == CPU bit for bit: B %d, T %d, C %d, %d heads", B, T, C, NH);
        report(memcmp(gk.data(), km.data(), km.size() * sizeof(float)) == 0, name, "rel err %.2e", rel_err(gk.data(), km.data(), km.size()));
        // each A row's best B match on that metric, bit for bit
        int nA = (T + 1) / 2 - 1;
        if (nA > 0) {
            std::vector<float> sc((size_t)B * nA);
            std::vector<int> bc((size_t)B * nA);
            tome_best_match_cpu(sc.data(), bc.data(), km.data(), B, T, hd);
            float* d_sc = device_poisoned(sc.size());
            int* d_bc;
            cudaCheck(cudaMalloc(&d_bc, bc.size() * sizeof(int)));
            cudaCheck(cudaMemset(d_bc, 0xFF, bc.size() * sizeof(int)));
            tome_best_match(true, d_sc, d_bc, d_km, B, T, hd);
            std::vector<float> gs = from_device(d_sc, sc.size());
            std::vector<int> gb(bc.size());
            cudaCheck(cudaMemcpy(gb.data(), d_bc, gb.size() * sizeof(int), cudaMemcpyDeviceToHost));
            snprintf(name, sizeof name, "tome best match GPU == CPU bit for bit (scores and B rows): B %d, T %d, head dim %d", B, T, hd);
            report(memcmp(gs.data(), sc.data(), sc.size() * sizeof(float)) == 0 && gb == bc, name, "rel err %.2e",
                   rel_err(gs.data(), sc.data(), sc.size()));
            cudaCheck(cudaFree(d_sc)); cudaCheck(cudaFree(d_bc));
        }
        // a merge of these rows (the matching of the CPU's key mean), random sizes, bit for bit
        if (T >= 3) {
            int rr = std::min((T + 1) / 2 - 1, 1 + T / 4);
            std::vector<int> dst((size_t)B * T), off, mem, rep((size_t)B * T, 0);
            for (int b = 0; b < B; b++) tome_match(dst.data() + (size_t)b * T, km.data() + (size_t)b * T * hd, T, hd, rr);
            std::vector<float> size((size_t)B * T), w;
            for (float& x : size) x = (float)(1 + rng_u32(&r) % 7);
            w = size;
            int T2 = tome_groups(&off, &mem, &size, &rep, dst.data(), B, T);
            std::vector<float> x = random_vec((size_t)B * T * C, &r), ref((size_t)B * T2 * C);
            token_merge_cpu(ref.data(), x.data(), w.data(), off.data(), mem.data(), B * T2, C);
            float *d_x = to_device(x), *d_w = to_device(w), *d_m = device_poisoned(ref.size());
            int *d_off, *d_mem;
            cudaCheck(cudaMalloc(&d_off, off.size() * sizeof(int))); cudaCheck(cudaMalloc(&d_mem, mem.size() * sizeof(int)));
            cudaCheck(cudaMemcpy(d_off, off.data(), off.size() * sizeof(int), cudaMemcpyHostToDevice));
            cudaCheck(cudaMemcpy(d_mem, mem.data(), mem.size() * sizeof(int), cudaMemcpyHostToDevice));
            token_merge(true, d_m, d_x, d_w, d_off, d_mem, B * T2, C);
            std::vector<float> gm = from_device(d_m, ref.size());
            snprintf(name, sizeof name, "token merge GPU == CPU bit for bit: B %d, %d -> %d rows, C %d, sizes 1-7", B, T, T2, C);
            report(memcmp(gm.data(), ref.data(), ref.size() * sizeof(float)) == 0, name, "rel err %.2e", rel_err(gm.data(), ref.data(), ref.size()));
            for (void* p : {(void*)d_x, (void*)d_w, (void*)d_m, (void*)d_off, (void*)d_mem}) cudaCheck(cudaFree(p));
        }
        for (void* p : {(void*)d_qkv, (void*)d_bias, (void*)d_out, (void*)d_lse, (void*)d_km}) cudaCheck(cudaFree(p));
    }
}

static int* to_device_int(const std::vector<int>& h) {
    int* d; cudaCheck(cudaMalloc(&d, h.size() * sizeof(int) + 4));
    cudaCheck(cudaMemcpy(d, h.data(), h.size() * sizeof(int), cudaMemcpyHostToDevice)); return d;
}
static int* device_poisoned_int(size_t n) {
    int* d; cudaCheck(cudaMalloc(&d, n * sizeof(int) + 4));
    cudaCheck(cudaMemset(d, 0x7F, n * sizeof(int) + 4)); return d;  // 0x7F7F7F7F: no row, no offset
}
static std::vector<int> from_device_int(const int* d, size_t n) {
    std::vector<int> h(n);
    cudaCheck(cudaDeviceSynchronize());
    cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost)); return h;
}

// the device's selection (top r per image), groups, size bias and initial state == the CPU's, bit for bit
static void test_select_groups() {
    Rng rg; rng_seed(&rg, 5);
    char name[240];
    // {B, T, tied}: T odd and even, not multiples of the 128-thread block, one A row, many
    const int shapes[][3] = {{1, 3, 0}, {2, 4, 1}, {3, 9, 1}, {5, 65, 0}, {4, 65, 1}, {3, 130, 1}, {2, 257, 0}, {3, 301, 1}, {2, 1001, 1}};
    const float tie_vals[] = {0.5f, -0.25f, 0.0f, -0.0f, 1.0f, 0.5f};
    for (auto& sh : shapes) {
        int B = sh[0], T = sh[1], nA = (T + 1) / 2 - 1;
        bool tied = sh[2];
        std::vector<float> score((size_t)B * nA);
        std::vector<int> best((size_t)B * nA);
        for (size_t i = 0; i < score.size(); i++) {
            score[i] = tied ? tie_vals[rng_u32(&rg) % 6] : 2.0f * rng_uniform(&rg) - 1.0f;
            best[i] = 1 + 2 * (int)(rng_u32(&rg) % (T / 2));  // a B row (odd, < T)
        }
        float* d_score = to_device(score);
        int* d_best = to_device_int(best);
        int rs[] = {0, 1, nA / 2, nA - 1, nA};
        for (int r : rs) {
            if (r < 0 || r > nA) continue;
            std::vector<int> dst((size_t)B * T);
            tome_select_batch_cpu(dst.data(), score.data(), best.data(), B, T, r);
            int* d_dst = device_poisoned_int(dst.size());
            tome_select_batch(true, d_dst, d_score, d_best, B, T, r);
            std::vector<int> gd = from_device_int(d_dst, dst.size());
            snprintf(name, sizeof name, "tome select GPU == CPU: B %d, T %d (%d A rows), r %d%s", B, T, nA, r, tied ? ", tied scores" : "");
            report(gd == dst, name);
            // the groups of that merge, random sizes (whole and fractional) and representatives
            int T2 = T - r;
            std::vector<float> size((size_t)B * T), s2((size_t)B * T2);
            std::vector<int> rep((size_t)B * T), off((size_t)B * T2 + 1), mem((size_t)B * T), rep2((size_t)B * T2);
            for (size_t i = 0; i < size.size(); i++) {
                size[i] = (i % 3) ? (float)(1 + rng_u32(&rg) % 9) : 0.1f + rng_uniform(&rg);
                rep[i] = (int)(rng_u32(&rg) % 1000);
            }
            tome_merge_groups_cpu(off.data(), mem.data(), s2.data(), rep2.data(), dst.data(), size.data(), rep.data(), B, T, T2);
            float *d_size = to_device(size), *d_s2 = device_poisoned(s2.size());
            int *d_rep = to_device_int(rep), *d_off = device_poisoned_int(off.size()), *d_mem = device_poisoned_int(mem.size()),
                *d_rep2 = device_poisoned_int(rep2.size());
            tome_merge_groups(true, d_off, d_mem, d_s2, d_rep2, d_dst, d_size, d_rep, B, T, T2);
            std::vector<float> gs = from_device(d_s2, s2.size());
            bool ok = from_device_int(d_off, off.size()) == off && from_device_int(d_mem, mem.size()) == mem &&
                      from_device_int(d_rep2, rep2.size()) == rep2 && memcmp(gs.data(), s2.data(), s2.size() * sizeof(float)) == 0;
            snprintf(name, sizeof name, "tome groups GPU == CPU bit for bit (offsets, members, sizes, representatives): B %d, T %d -> %d", B, T, T2);
            report(ok, name);
            for (void* p : {(void*)d_dst, (void*)d_size, (void*)d_s2, (void*)d_rep, (void*)d_off, (void*)d_mem, (void*)d_rep2}) cudaCheck(cudaFree(p));
        }
        cudaCheck(cudaFree(d_score)); cudaCheck(cudaFree(d_best));
        // the initial state and the size bias (whole sizes up to T, as merges make them)
        std::vector<float> s0((size_t)B * T), lt(T + 1), bias((size_t)B * T);
        std::vector<int> r0((size_t)B * T);
        tome_init_cpu(s0.data(), r0.data(), B, T);
        float* d_s0 = device_poisoned(s0.size());
        int* d_r0 = device_poisoned_int(r0.size());
        tome_init(true, d_s0, d_r0, B, T);
        std::vector<float> g0 = from_device(d_s0, s0.size());
        report(memcmp(g0.data(), s0.data(), s0.size() * sizeof(float)) == 0 && from_device_int(d_r0, r0.size()) == r0,
               (std::string("tome init GPU == CPU: B ") + std::to_string(B) + ", T " + std::to_string(T)).c_str());
        for (int k = 0; k <= T; k++) lt[k] = logf((float)k);
        for (float& x : s0) x = (float)(1 + rng_u32(&rg) % T);
        tome_size_bias_cpu(bias.data(), s0.data(), lt.data(), B * T);
        float *d_sz = to_device(s0), *d_lt = to_device(lt), *d_bias = device_poisoned(bias.size());
        tome_size_bias(true, d_bias, d_sz, d_lt, B * T);
        std::vector<float> gb = from_device(d_bias, bias.size());
        bool exact = true;
        for (size_t i = 0; i < bias.size(); i++) exact &= bias[i] == logf(s0[i]);
        report(memcmp(gb.data(), bias.data(), bias.size() * sizeof(float)) == 0 && exact,
               (std::string("tome size bias GPU == CPU == logf(size) bit for bit: ") + std::to_string(B * T) + " sizes in [1, T]").c_str());
        for (void* p : {(void*)d_s0, (void*)d_r0, (void*)d_sz, (void*)d_lt, (void*)d_bias}) cudaCheck(cudaFree(p));
    }
}

static VlmConfig config(int image, int patch, int v_layers, int v_dim, int v_heads) {
    VlmConfig c = {};
    c.image_size = image; c.patch = patch;
    c.v_layers = v_layers; c.v_dim = v_dim; c.v_heads = v_heads;
    c.proj_mlp = 1;
    c.vocab = 17; c.l_layers = 2; c.l_dim = 32; c.l_heads = 2;
    c.max_text = 9;
    c.t_layers = 1; c.t_dim = 8; c.t_heads = 2; c.clip_dim = 6;
    return c;
}

static void copy_params(VlmModel* gpu, const VlmModel* cpu) {
    cudaCheck(cudaMemcpy(gpu->params.params, cpu->params.params, cpu->params.num_params * sizeof(float), cudaMemcpyHostToDevice));
}

static void make_pair(VlmModel* cpu, VlmModel* gpu, const VlmConfig& c, int B, uint64_t seed, int n_classes = 0, bool grads = false) {
    std::vector<std::string> frozen;
    if (grads && n_classes > 0) frozen = {"proj.", "lm.", "text.", "clip.", "vision.proj"};
    vlm_build(cpu, c, B, false, grads, frozen, LoraConfig(), n_classes);
    vlm_build(gpu, c, B, true, grads, frozen, LoraConfig(), n_classes);
    vlm_init_params(cpu, seed);
    Rng r; rng_seed(&r, seed + 1);
    for (size_t i = 0; i < cpu->params.num_params; i++) cpu->params.params[i] += 0.1f * rng_normal(&r);
    copy_params(gpu, cpu);
}

// the encoder alone: the same embedded rows through tome_forward on both backends
static void test_encoder(const VlmConfig& c, const std::vector<int>& sched, bool tf32) {
    int B = 3, P = vlm_num_patches(c), T0 = P + 1, C = c.v_dim, L = (int)sched.size();
    VlmModel cpu, gpu;
    make_pair(&cpu, &gpu, c, B, 21);
    Rng r; rng_seed(&r, 22);
    std::vector<float> images = random_vec((size_t)B * c.image_size * c.image_size * 3, &r, 0, 1);
    vlm_vision_forward(&cpu, images.data(), B, 0);
    std::vector<float> x0(cpu.vit.acts[0].resid, cpu.vit.acts[0].resid + (size_t)B * T0 * C);
    cudaCheck(cudaMemcpy(gpu.vit.acts[0].resid, x0.data(), x0.size() * sizeof(float), cudaMemcpyHostToDevice));
    int Tc = tome_forward(&cpu.vit, &cpu.tome, sched, cpu.tome_scratch, B, T0, L);
    int Tg = tome_forward(&gpu.vit, &gpu.tome, sched, gpu.tome_scratch, B, T0, L);
    tome_fetch(&gpu.tome);
    char name[200];
    if (!tf32) {
        snprintf(name, sizeof name, "encoder %d blocks, head dim %d, %d -> %d rows: the GPU's merge decisions == the CPU's", L, C / c.v_heads, T0, Tc);
        report(Tc == Tg && gpu.tome.dst_log == cpu.tome.dst_log, name);
    }
    gpu.tome.force_dst = cpu.tome.dst_log;
    cudaCheck(cudaMemcpy(gpu.vit.acts[0].resid, x0.data(), x0.size() * sizeof(float), cudaMemcpyHostToDevice));
    Tg = tome_forward(&gpu.vit, &gpu.tome, sched, gpu.tome_scratch, B, T0, L);
    tome_fetch(&gpu.tome);
    floatX* out_c = L < c.v_layers ? cpu.vit.acts[L].resid : cpu.vit.out;
    floatX* out_g = L < c.v_layers ? gpu.vit.acts[L].resid : gpu.vit.out;
    std::vector<float> got = from_device(out_g, (size_t)B * Tg * C);
    snprintf(name, sizeof name, "encoder %d blocks, head dim %d%s: output rows GPU == CPU (the same decisions)", L, C / c.v_heads,
             tf32 ? " (TF32 attention in block 0)" : "");
    report(Tg == Tc, "encoder: the same number of rows left");
    check_close(name, got.data(), out_c, got.size(), tf32 ? 3e-3 : 1e-4);
    snprintf(name, sizeof name, "encoder %d blocks, head dim %d: sizes and representatives GPU == CPU", L, C / c.v_heads);
    report(gpu.tome.size == cpu.tome.size && gpu.tome.rep == cpu.tome.rep, name);
    vlm_free(&cpu); vlm_free(&gpu);
}

// the VLM with tome: logits, loss, generation and the batched decode step GPU == CPU (the CPU's merges
// given to the GPU: forced per forward, as the batch's images and sizes differ between calls)
static void test_vlm(const VlmConfig& c, float R) {
    int B = 3, V = c.vocab, T = c.max_text, H = c.image_size;
    VlmModel cpu, gpu;
    make_pair(&cpu, &gpu, c, B, 31);
    TokenReduction red = {REDUCE_TOME, R, 0, 0};
    vlm_set_reduction(&cpu, red); vlm_set_reduction(&gpu, red);
    Rng r; rng_seed(&r, 32);
    std::vector<float> images = random_vec((size_t)B * H * H * 3, &r, 0, 1);
    std::vector<int> tok((size_t)B * T, 0), tgt((size_t)B * T, -1), len(B);
    for (int b = 0; b < B; b++) {
        int n = 3 + (int)(rng_u32(&r) % (T - 2));
        tok[(size_t)b * T] = 1; tok[(size_t)b * T + 1] = VLM_IMAGE_TOKEN;
        for (int t = 2; t < n; t++) tok[(size_t)b * T + t] = 5 + rng_u32(&r) % (V - 5);
        for (int t = 1; t < n - 1; t++) tgt[(size_t)b * T + t] = tok[(size_t)b * T + t + 1];
        len[b] = n;
    }
    char name[200];
    float lc = vlm_forward(&cpu, images.data(), tok.data(), tgt.data(), len.data(), B);
    gpu.tome.force_dst = cpu.tome.dst_log;
    float lg = vlm_forward(&gpu, images.data(), tok.data(), tgt.data(), len.data(), B);
    snprintf(name, sizeof name, "vlm tome R=%g (%d of %d tokens, merges", R, cpu.Pi, cpu.P);
    std::string nm = name;
    for (int x : cpu.tome_sched) nm += " " + std::to_string(x);
    check_close((nm + "): loss GPU == CPU").c_str(), &lg, &lc, 1, 1e-4);
    vlm_forward(&cpu, images.data(), tok.data(), nullptr, len.data(), B);
    vlm_forward(&gpu, images.data(), tok.data(), nullptr, len.data(), B);
    int Tl = vlm_lm_len(c, cpu.Pi);
    std::vector<float> logits = from_device(gpu.logits, (size_t)B * Tl * V);
    check_close((nm + "): logits GPU == CPU").c_str(), logits.data(), cpu.logits, logits.size(), 3e-3);
    report(gpu.keep == cpu.keep && gpu.pos_index == cpu.pos_index, (nm + "): the representatives' positions GPU == CPU").c_str());
    // generation of one sequence: the prefill's merges forced
    std::vector<int> prompt = {1, VLM_IMAGE_TOKEN, 6, 7};
    std::vector<float> sc, sg;
    std::vector<int> a = vlm_generate(&cpu, images.data(), prompt, 4, -1, &sc);
    gpu.tome.force_dst = cpu.tome.dst_log;
    std::vector<int> g = vlm_generate(&gpu, images.data(), prompt, 4, -1, &sg);
    report(a == g && rel_err(sg.data(), sc.data(), sc.size()) < 3e-3, (nm + "): KV-cache generation GPU == CPU").c_str(), "tokens %s, rel err %.2e",
           a == g ? "equal" : "differ", rel_err(sg.data(), sc.data(), std::min(sc.size(), sg.size())));
    // the batched decode step
    std::vector<int> ptok((size_t)B * T, 0), plen(B, (int)prompt.size()), first(B);
    for (int b = 0; b < B; b++) std::copy(prompt.begin(), prompt.end(), ptok.begin() + (size_t)b * T);
    int n = (int)prompt.size() + cpu.Pi - 1;
    vlm_forward(&cpu, images.data(), ptok.data(), nullptr, plen.data(), B);
    gpu.tome.force_dst = cpu.tome.dst_log;
    vlm_forward(&gpu, images.data(), ptok.data(), nullptr, plen.data(), B);
    gpu.tome.force_dst.clear();
    for (int b = 0; b < B; b++) {
        const float* row = cpu.logits + ((size_t)b * Tl + n - 1) * V;
        first[b] = (int)(std::max_element(row, row + V) - row);
    }
    VlmKVCache kc, kg;
    vlm_kv_from_prefill(&cpu, &kc, B, n); vlm_kv_from_prefill(&gpu, &kg, B, n);
    vlm_decode_step(&cpu, &kc, first.data()); vlm_decode_step(&gpu, &kg, first.data());
    std::vector<float> dg = from_device(gpu.logits, (size_t)B * V);
    check_close((nm + "): decode step GPU == CPU").c_str(), dg.data(), cpu.logits, dg.size(), 3e-3);
    vlm_kv_free(&cpu, &kc); vlm_kv_free(&gpu, &kg);
    vlm_free(&cpu); vlm_free(&gpu);
}

// the classifier: logits for each reduction, then one training step
static void test_classifier(const VlmConfig& c, double tol) {
    int B = 4, K = 7, H = c.image_size;
    Rng r; rng_seed(&r, 41);
    std::vector<float> images = random_vec((size_t)B * H * H * 3, &r, 0, 1);
    std::vector<int> keys = {3, 8, 13, 21}, labels = {0, 6, 2, 2};
    char name[200];
    const TokenReduction cases[] = {{REDUCE_NONE, 0, 0, 0}, {REDUCE_TOME, 0.5f, 0, 0}, {REDUCE_TOME, 0.75f, 0, 0}, {REDUCE_POOL, 0.75f, 0, 0},
                                    {REDUCE_RANDOM, 0.5f, 9, 0}, {REDUCE_UNIFORM, 0.25f, 0, 0}};
    {
        VlmModel cpu, gpu;
        make_pair(&cpu, &gpu, c, B, 42, K);
        for (const TokenReduction& red : cases) {
            vlm_set_reduction(&cpu, red); vlm_set_reduction(&gpu, red);
            vlm_classify_forward(&cpu, images.data(), nullptr, B, keys.data());
            gpu.tome.force_dst = cpu.tome.dst_log;
            if (red.method != REDUCE_TOME) gpu.tome.force_dst.clear();
            vlm_classify_forward(&gpu, images.data(), nullptr, B, keys.data());
            std::vector<float> lg = from_device(gpu.cls_logits, (size_t)B * K);
            snprintf(name, sizeof name, "classifier %s R=%g (%d rows per image), head dim %d: logits GPU == CPU", REDUCE_NAMES[red.method], red.ratio,
                     cpu.vis_T, c.v_dim / c.v_heads);
            report(gpu.vis_T == cpu.vis_T, (std::string(name) + " (rows)").c_str());
            check_close(name, lg.data(), cpu.cls_logits, lg.size(), tol);
        }
        gpu.tome.force_dst.clear();
        vlm_free(&cpu); vlm_free(&gpu);
    }
    VlmModel cpu, gpu;
    make_pair(&cpu, &gpu, c, B, 43, K, true);
    float lc = vlm_classify_forward(&cpu, images.data(), labels.data(), B);
    float lg = vlm_classify_forward(&gpu, images.data(), labels.data(), B);
    vlm_zero_grad(&cpu); vlm_backward(&cpu);
    vlm_zero_grad(&gpu); vlm_backward(&gpu);
    snprintf(name, sizeof name, "classifier step, head dim %d: loss GPU == CPU", c.v_dim / c.v_heads);
    check_close(name, &lg, &lc, 1, 1e-4);
    std::vector<float> g = from_device(gpu.params.grads, gpu.params.num_trainable);
    for (const ParamTensor& t : cpu.params.tensors) {
        if (!t.trainable) continue;
        snprintf(name, sizeof name, "classifier step, head dim %d: grad %s GPU == CPU", c.v_dim / c.v_heads, t.name.c_str());
        check_close(name, g.data() + t.offset, cpu.params.grads + t.offset, t.numel, 3e-3);
    }
    vlm_free(&cpu); vlm_free(&gpu);
}

int main() {
    cublasCheck(cublasSetMathMode(cublas_handle(), CUBLAS_DEFAULT_MATH));  // exact FP32 matmuls for comparisons
    test_ops();
    test_select_groups();
    VlmConfig plain = config(48, 6, 4, 24, 3);    // 8x8 = 64 patches, head dim 8: plain fp32 attention
    VlmConfig fused = config(40, 8, 3, 64, 4);    // 5x5 = 25 patches, head dim 16: TF32 attention in block 0
    test_encoder(plain, tome_schedule(64, 16, 3), false);
    test_encoder(plain, tome_schedule(64, 4, 4), false);
    test_encoder(fused, tome_schedule(25, 7, 3), true);
    test_vlm(plain, 0.5f);
    test_vlm(plain, 0.875f);
    test_vlm(fused, 0.6f);
    test_classifier(plain, 1e-4);
    test_classifier(fused, 3e-3);
    return test_summary();
}
