// gpu_lora.cu: LoRA (src/lora.h) on the GPU against the CPU reference.
//   - each adapter function, with and without dropout, at several shapes (odd ones
//     included); the overwritten bottleneck h is poisoned first so unwritten elements show
//   - merge and unmerge
//   - the Mamba LM with adapters: one training step (loss and every trainable
//     gradient), with dropout on, each target set; AdamW leaves the frozen base bit-identical
#include "../src/mamba_model.h"
#include "test_util.h"

typedef std::vector<float> Vec;

static void test_functions(int N, int IC, int OC, int r, float p) {
    Rng rng; rng_seed(&rng, 100 + N * 7 + IC + r);
    float s = 1.75f; uint64_t seed = 31;
    Vec x = random_vec((size_t)N * IC, &rng), A = random_vec((size_t)r * IC, &rng), B = random_vec((size_t)OC * r, &rng);
    Vec y0 = random_vec((size_t)N * OC, &rng), dy = random_vec((size_t)N * OC, &rng);
    Vec dx0 = random_vec((size_t)N * IC, &rng), dA0 = random_vec((size_t)r * IC, &rng), dB0 = random_vec((size_t)OC * r, &rng);
    // CPU
    Vec h((size_t)N * r), xd((size_t)N * IC), y = y0, dh((size_t)N * r, 0.0f), dx = dx0, dA = dA0, dB = dB0;
    lora_down_forward_cpu(h.data(), xd.data(), x.data(), A.data(), N, IC, r, p, seed);
    lora_up_forward_cpu(y.data(), h.data(), B.data(), N, r, OC, s);
    lora_up_backward_cpu(dh.data(), dB.data(), dy.data(), h.data(), B.data(), N, r, OC, s);
    lora_down_backward_cpu(dx.data(), dA.data(), dh.data(), xd.data(), x.data(), A.data(), N, IC, r, p, seed);
    // GPU
    float *gx = to_device(x), *gA = to_device(A), *gB = to_device(B), *gy = to_device(y0), *gdy = to_device(dy);
    float *gh = device_poisoned((size_t)N * r), *gxd = device_poisoned((size_t)N * IC);
    float *gdh = to_device(Vec((size_t)N * r, 0.0f)), *gdx = to_device(dx0), *gdA = to_device(dA0), *gdB = to_device(dB0);
    lora_down_forward_cuda(gh, gxd, gx, gA, N, IC, r, p, seed);
    lora_up_forward_cuda(gy, gh, gB, N, r, OC, s);
    lora_up_backward_cuda(gdh, gdB, gdy, gh, gB, N, r, OC, s);
    lora_down_backward_cuda(gdx, gdA, gdh, gxd, gx, gA, N, IC, r, p, seed);
    char name[160];
    auto cmp = [&](const char* what, float* g, const Vec& ref) {
        snprintf(name, sizeof name, "lora %s N%d IC%d OC%d r%d p%.2f", what, N, IC, OC, r, p);
        check_close(name, from_device(g, ref.size()).data(), ref.data(), ref.size(), 1e-5);
    };
    cmp("h", gh, h); cmp("y", gy, y); cmp("dh", gdh, dh); cmp("dB", gdB, dB); cmp("dA", gdA, dA); cmp("dx", gdx, dx);
    // merge: W += s B A, then back
    Vec W = random_vec((size_t)OC * IC, &rng), Wc = W;
    float* gW = to_device(W);
    lora_merge_cpu(Wc.data(), A.data(), B.data(), OC, IC, r, s, 1.0f);
    lora_merge_cuda(gW, gA, gB, OC, IC, r, s, 1.0f);
    cmp("merge", gW, Wc);
    lora_merge_cuda(gW, gA, gB, OC, IC, r, s, -1.0f);
    cmp("unmerge", gW, W);
    for (float* q : {gx, gA, gB, gy, gdy, gh, gxd, gdh, gdx, gdA, gdB, gW}) cudaCheck(cudaFree(q));
}

// bf16: the GPU under --matmul bf16 against the fp32 CPU (tolerances as mamba_test_util.h's bf16 step),
// at d_model 128 so the products take bf16 operands; a layer with an adapter keeps fp32 activations
// (the bf16-activation path is for layers without)
static void test_model_step(const char* targets, const char* train_also, float dropout, int B, int T, bool bf16 = false) {
    MambaConfig c = {50, bf16 ? 128 : 32, 2, 16, 4, 2, 0, 0};
    mamba_config_derive(&c);
    LoraConfig lc; lc.rank = 4; lc.alpha = 8; lc.targets = targets; lc.train_also = train_also; lc.dropout = dropout;
    MambaModel cpu, gpu;
    mamba_build(&cpu, c, B, T, false, true, lc);
    mamba_build(&gpu, c, B, T, true, true, lc);
    mamba_init_params(&cpu, 11);
    Rng r; rng_seed(&r, 12);
    ParamStore& pc = cpu.params;
    ParamStore& pg = gpu.params;
    for (size_t i = 0; i < pc.num_params; i++) pc.params[i] += 0.05f * rng_normal(&r);  // B != 0 too
    cudaCheck(cudaMemcpy(pg.params, pc.params, pc.num_params * sizeof(float), cudaMemcpyHostToDevice));
    std::vector<int> tok(B * T), tgt(B * T);
    for (int i = 0; i < B * T; i++) { tok[i] = rng_u32(&r) % c.vocab_size; tgt[i] = rng_u32(&r) % c.vocab_size; }
    float l[2];
    for (MambaModel* m : {&cpu, &gpu}) {
        if (bf16 && m->on_gpu) linear_set_precision(MATMUL_BF16);
        mamba_set_training(m, true, 77);
        l[m->on_gpu] = mamba_forward(m, tok.data(), tgt.data(), B, T);
        mamba_zero_grad(m); mamba_backward(m);
        linear_set_precision(MATMUL_FP32);
    }
    const char* prec = bf16 ? " bf16 matmuls" : "";
    char name[200];
    snprintf(name, sizeof name, "LoRA step [%s%s%s p%.1f] B%d T%d%s: loss", targets, *train_also ? " + " : "", train_also, dropout, B, T, prec);
    check_close(name, &l[1], &l[0], 1, bf16 ? 2e-3 : 1e-5);
    std::vector<float> g = from_device(pg.grads, pg.num_trainable);
    for (const ParamTensor& t : pc.tensors) {
        if (!t.trainable) continue;
        snprintf(name, sizeof name, "LoRA step [%s p%.1f] B%d T%d%s: grad %s", targets, dropout, B, T, prec, t.name.c_str());
        check_close(name, g.data() + t.offset, pc.grads + t.offset, t.numel, bf16 ? 3e-2 : 1e-4);
    }
    std::vector<float> before = from_device(pg.params, pg.num_params);
    params_adamw_step(&pg, AdamWConfig{0.9f, 0.95f, 1e-8f, 0.1f}, 1e-2f, 1, 1.0f);
    std::vector<float> after = from_device(pg.params, pg.num_params);
    bool same = true;
    for (const ParamTensor& t : pg.tensors)
        if (!t.trainable) same &= memcmp(before.data() + t.offset, after.data() + t.offset, t.numel * sizeof(float)) == 0;
    snprintf(name, sizeof name, "LoRA step [%s] on the GPU: frozen base bit-identical after AdamW", targets);
    report(same, name);
    mamba_free(&cpu); mamba_free(&gpu);
}

int main() {
    cublasCheck(cublasSetMathMode(cublas_handle(), CUBLAS_DEFAULT_MATH));  // exact FP32 for comparisons
    test_functions(1, 1, 1, 1, 0.0f);
    test_functions(7, 13, 5, 3, 0.0f);
    test_functions(130, 64, 97, 8, 0.0f);
    test_functions(33, 50, 20, 4, 0.3f);
    test_model_step("all", "", 0.0f, 2, 70);
    test_model_step("in_proj_x,out_proj", "A_log,D,conv1d", 0.0f, 3, 9);
    test_model_step("in_proj,dt_proj", "norm", 0.1f, 2, 33);
    test_model_step("out_proj", "", 0.0f, 1, 1);
    // --matmul bf16: an adapter on x_proj, on out_proj, on in_proj (each layer then on fp32 activations)
    test_model_step("x_proj", "", 0.0f, 2, 128, true);
    test_model_step("out_proj", "norm", 0.0f, 2, 128, true);
    test_model_step("in_proj", "", 0.1f, 2, 128, true);
    return test_summary();
}
