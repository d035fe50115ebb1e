// gpu_vlm_model.cu: the whole tiny VLM on the GPU against the CPU reference:
// one training step of each pass (LLaVA, text-only LM, CLIP: loss, every
// parameter gradient) and AdamW after it, with both projectors and odd shapes
// (patch grids, head counts, text lengths); KV-cache generation GPU == CPU.
#include "../src/vlm_model.h"
#include "test_util.h"

enum Pass { IMAGE, TEXT, CLIP };
static const char* PASS_NAMES[] = {"llava", "text-only lm", "clip"};

// lora: adapters on the GPT (its base frozen, dropout on), as the instruct stage with --lora-rank
static void test_one_step(VlmConfig c, int B, uint64_t seed, Pass pass = IMAGE, const LoraConfig& lora = LoraConfig()) {
    VlmModel cpu, gpu;
    std::vector<std::string> frozen;
    if (lora.rank > 0) frozen = {"vision.", "text.", "clip."};
    vlm_build(&cpu, c, B, false, true, frozen, lora);
    vlm_build(&gpu, c, B, true, true, frozen, lora);
    for (VlmModel* m : {&cpu, &gpu}) transformer_set_training(&m->lm, true, seed);
    vlm_init_params(&cpu, seed);
    ParamStore& pc = cpu.params;
    ParamStore& pg = gpu.params;
    Rng r; rng_seed(&r, seed + 1);
    for (size_t i = 0; i < pc.num_params; i++) pc.params[i] += 0.05f * rng_normal(&r);
    cudaCheck(cudaMemcpy(pg.params, pc.params, pc.num_params * sizeof(float), cudaMemcpyHostToDevice));
    int H = c.image_size, T = c.max_text;
    std::vector<float> images = random_vec((size_t)B * H * H * 3, &r, 0.0f, 1.0f);
    std::vector<int> tok((size_t)B * T, 0), tgt((size_t)B * T, -1), len(B);
    for (int b = 0; b < B; b++) {
        int n = 3 + (int)(rng_u32(&r) % (T - 2));  // 3..T
        tok[(size_t)b * T] = 1; tok[(size_t)b * T + 1] = VLM_IMAGE_TOKEN;
        for (int t = 2; t < n; t++) tok[(size_t)b * T + t] = 5 + rng_u32(&r) % (c.vocab - 5);
        for (int t = 1; t < n - 1; t++) tgt[(size_t)b * T + t] = tok[(size_t)b * T + t + 1];
        len[b] = n;
    }
    auto run = [&](VlmModel* m) {
        if (pass == IMAGE) return vlm_forward(m, images.data(), tok.data(), tgt.data(), len.data(), B);
        if (pass == TEXT) return vlm_forward_text(m, tok.data(), tgt.data(), len.data(), B);
        return vlm_clip_forward(m, images.data(), tok.data(), len.data(), B);
    };
    float lc = run(&cpu), lg = run(&gpu);
    vlm_zero_grad(&cpu); vlm_backward(&cpu);
    vlm_zero_grad(&gpu); vlm_backward(&gpu);
    char name[200];
    snprintf(name, sizeof name, "%s%s step B=%d img %d/%d proj_mlp=%d: loss", PASS_NAMES[pass], lora.rank ? " LoRA" : "", B, H, c.patch, c.proj_mlp);
    check_close(name, &lg, &lc, 1, 1e-5);
    std::vector<float> g = from_device(pg.grads, pg.num_trainable);
    int fl = vlm_feature_layer(c);
    std::string unused = "vision.blocks." + std::to_string(fl) + ".";
    for (const ParamTensor& t : pc.tensors) {
        if (!t.trainable) continue;
        if (pass == IMAGE && fl < c.v_layers && t.name.compare(0, unused.size(), unused) == 0) continue;  // above the feature layer: no gradient
        snprintf(name, sizeof name, "%s step B=%d proj_mlp=%d: grad %s", PASS_NAMES[pass], B, c.proj_mlp, t.name.c_str());
        // the GPU's attention runs on TF32 tensor cores (src/attention.h: ~1e-3 relative
        // error per kernel against the fp32 CPU reference); the matmuls here are exact fp32
        check_close(name, g.data() + t.offset, pc.grads + t.offset, t.numel, 3e-3);
    }
    AdamWConfig adamw = {0.9f, 0.95f, 1e-8f, 0.1f};
    for (VlmModel* m : {&cpu, &gpu}) params_adamw_step(&m->params, adamw, 1e-3f, 1, 0.5f);
    std::vector<float> p = from_device(pg.params, pg.num_params);
    snprintf(name, sizeof name, "%s step B=%d proj_mlp=%d: params after AdamW", PASS_NAMES[pass], B, c.proj_mlp);
    // Adam's first step moves each weight by about lr * sign(g): a gradient within
    // rounding (TF32 attention) of zero may take either sign, so allow a few such weights
    check_close(name, p.data(), pc.params, pc.num_params, 5e-4);
    vlm_free(&cpu); vlm_free(&gpu);
}

static void test_generation(VlmConfig c) {
    VlmModel cpu, gpu;
    vlm_build(&cpu, c, 2, false, false);
    vlm_build(&gpu, c, 2, true, false);
    vlm_init_params(&cpu, 9);
    Rng r; rng_seed(&r, 10);
    for (size_t i = 0; i < cpu.params.num_params; i++) cpu.params.params[i] += 0.3f * rng_normal(&r);
    cudaCheck(cudaMemcpy(gpu.params.params, cpu.params.params, cpu.params.num_params * sizeof(float), cudaMemcpyHostToDevice));
    std::vector<float> image = random_vec((size_t)c.image_size * c.image_size * 3, &r, 0, 1);
    std::vector<int> prompt = {1, VLM_IMAGE_TOKEN, 6, 7, 8};
    std::vector<float> lc, lg;
    std::vector<int> a = vlm_generate(&cpu, image.data(), prompt, 6, -1, &lc);
    std::vector<int> b = vlm_generate(&gpu, image.data(), prompt, 6, -1, &lg);
    report(a == b && a.size() == 6, "KV-cache generation: GPU tokens == CPU tokens", "%zu vs %zu tokens", a.size(), b.size());
    check_close("KV-cache generation: GPU step logits == CPU (TF32 attention in the prefill)", lg.data(), lc.data(), lc.size(), 3e-3);
    vlm_free(&cpu); vlm_free(&gpu);
}

int main() {
    cublasCheck(cublasSetMathMode(cublas_handle(), CUBLAS_DEFAULT_MATH));  // exact FP32 for comparisons
    VlmConfig a = {};
    a.image_size = 16; a.patch = 4; a.v_layers = 2; a.v_dim = 32; a.v_heads = 4; a.proj_mlp = 1;
    a.vocab = 37; a.l_layers = 2; a.l_dim = 48; a.l_heads = 3; a.max_text = 13;
    a.t_layers = 2; a.t_dim = 24; a.t_heads = 3; a.clip_dim = 16;
    test_one_step(a, 3, 1);
    VlmConfig b = a;
    b.image_size = 12; b.patch = 6; b.v_layers = 1; b.v_dim = 20; b.v_heads = 5; b.proj_mlp = 0;  // P = 4, one vision block
    b.l_layers = 3; b.l_dim = 24; b.l_heads = 1; b.max_text = 9;
    test_one_step(b, 2, 2);
    VlmConfig big = a;
    big.image_size = 64; big.patch = 8; big.v_layers = 3; big.v_dim = 64; big.l_dim = 64; big.l_heads = 4; big.max_text = 20;
    test_one_step(big, 4, 3);  // the scenes' shape: 64 patches, LM sequence 83
    test_one_step(a, 5, 4, TEXT);
    test_one_step(b, 3, 5, TEXT);
    test_one_step(a, 6, 6, CLIP);
    test_one_step(big, 7, 7, CLIP);
    LoraConfig lora; lora.rank = 3; lora.alpha = 6; lora.targets = "all"; lora.dropout = 0.1f;
    test_one_step(a, 3, 8, IMAGE, lora);
    test_one_step(big, 4, 9, IMAGE, lora);
    lora.targets = "qkv,fc_proj"; lora.dropout = 0.0f;
    test_one_step(b, 3, 10, TEXT, lora);
    test_generation(a);
    test_generation(big);
    return test_summary();
}
