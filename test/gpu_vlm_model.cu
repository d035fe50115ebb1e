// gpu_vlm_model.cu: the whole tiny LLaVA on the GPU against the CPU reference:
// one training step (loss, every parameter gradient) and AdamW after it, with
// both projectors and odd shapes (patch grids, head counts, text lengths).
#include "../src/vlm_model.h"
#include "test_util.h"

static void test_one_step(VlmConfig c, int B, uint64_t seed) {
    VlmModel cpu, gpu;
    vlm_build(&cpu, c, B, false);
    vlm_build(&gpu, c, B, true);
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
    float lc = vlm_forward(&cpu, images.data(), tok.data(), tgt.data(), len.data(), B);
    float lg = vlm_forward(&gpu, images.data(), tok.data(), tgt.data(), len.data(), B);
    vlm_zero_grad(&cpu); vlm_backward(&cpu);
    vlm_zero_grad(&gpu); vlm_backward(&gpu);
    char name[200];
    snprintf(name, sizeof name, "vlm step B=%d img %d/%d proj_mlp=%d: loss", B, H, c.patch, c.proj_mlp);
    check_close(name, &lg, &lc, 1, 1e-5);
    std::vector<float> g = from_device(pg.grads, pg.num_trainable);
    int fl = vlm_feature_layer(c);
    std::string unused = "vision.blocks." + std::to_string(fl) + ".";
    for (const ParamTensor& t : pc.tensors) {
        if (fl < c.v_layers && t.name.compare(0, unused.size(), unused) == 0) continue;  // above the feature layer: no gradient
        snprintf(name, sizeof name, "vlm step B=%d proj_mlp=%d: grad %s", B, c.proj_mlp, t.name.c_str());
        check_close(name, g.data() + t.offset, pc.grads + t.offset, t.numel, 2e-4);
    }
    AdamWConfig adamw = {0.9f, 0.95f, 1e-8f, 0.1f};
    for (VlmModel* m : {&cpu, &gpu}) params_adamw_step(&m->params, adamw, 1e-3f, 1, 0.5f);
    std::vector<float> p = from_device(pg.params, pg.num_params);
    snprintf(name, sizeof name, "vlm step B=%d proj_mlp=%d: params after AdamW", B, c.proj_mlp);
    // Adam's first step moves each weight by about lr * sign(g): a gradient within
    // rounding of zero may take either sign, so allow a few such weights
    check_close(name, p.data(), pc.params, pc.num_params, 2e-5);
    vlm_free(&cpu); vlm_free(&gpu);
}

int main() {
    cublasCheck(cublasSetMathMode(cublas_handle(), CUBLAS_DEFAULT_MATH));  // exact FP32 for comparisons
    VlmConfig a = {};
    a.image_size = 16; a.patch = 4; a.v_layers = 2; a.v_dim = 32; a.v_heads = 4; a.proj_mlp = 1;
    a.vocab = 37; a.l_layers = 2; a.l_dim = 48; a.l_heads = 3; a.max_text = 13;
    test_one_step(a, 3, 1);
    VlmConfig b = a;
    b.image_size = 12; b.patch = 6; b.v_layers = 1; b.v_dim = 20; b.v_heads = 5; b.proj_mlp = 0;  // P = 4, one vision block
    b.l_layers = 3; b.l_dim = 24; b.l_heads = 1; b.max_text = 9;
    test_one_step(b, 2, 2);
    VlmConfig big = a;
    big.image_size = 64; big.patch = 8; big.v_layers = 3; big.v_dim = 64; big.l_dim = 64; big.l_heads = 4; big.max_text = 20;
    test_one_step(big, 4, 3);  // the scenes' shape: 64 patches, LM sequence 83
    return test_summary();
}
