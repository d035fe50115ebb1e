// gpu_model.cu: the whole model on the GPU against the CPU reference.
//   - one training step: loss and every parameter gradient (FP32 matmuls)
//   - AdamW on both backends gives the same parameters
//   - a short training run: the GPU loss curve follows the CPU one
#include "../src/mamba_model.h"
#include "test_util.h"

static void random_batch(Rng* r, std::vector<int>& tok, std::vector<int>& tgt, int V) {
    for (size_t i = 0; i < tok.size(); i++) { tok[i] = rng_u32(r) % V; tgt[i] = rng_u32(r) % V; }
}

static void test_one_step(MambaConfig c, int B, int T) {
    MambaModel cpu, gpu;
    mamba_build(&cpu, c, B, T, false);
    mamba_build(&gpu, c, B, T, true);
    mamba_init_params(&cpu, 11);
    // move every parameter off its special init value (D = 1, zero biases...)
    Rng r; rng_seed(&r, 12);
    ParamStore& pc = cpu.params;
    ParamStore& pg = gpu.params;
    for (size_t i = 0; i < pc.num_params; i++) pc.params[i] += 0.05f * rng_normal(&r);
    cudaCheck(cudaMemcpy(pg.params, pc.params, pc.num_params * sizeof(float), cudaMemcpyHostToDevice));
    std::vector<int> tok(B * T), tgt(B * T);
    random_batch(&r, tok, tgt, c.vocab_size);
    float lc = mamba_forward(&cpu, tok.data(), tgt.data(), B, T);
    float lg = mamba_forward(&gpu, tok.data(), tgt.data(), B, T);
    mamba_zero_grad(&cpu); mamba_backward(&cpu);
    mamba_zero_grad(&gpu); mamba_backward(&gpu);
    char name[160];
    snprintf(name, sizeof name, "step B=%d T=%d D=%d V=%d: loss", B, T, c.d_model, c.vocab_size);
    check_close(name, &lg, &lc, 1, 1e-5);
    std::vector<float> g = from_device(pg.grads, pg.num_trainable);
    for (const ParamTensor& t : pc.tensors) {
        snprintf(name, sizeof name, "step B=%d T=%d D=%d: grad %s", B, T, c.d_model, t.name.c_str());
        check_close(name, g.data() + t.offset, pc.grads + t.offset, t.numel, 1e-4);
    }
    // one AdamW update on both (decay groups included)
    AdamWConfig adamw = {0.9f, 0.95f, 1e-8f, 0.1f};
    for (MambaModel* m : {&cpu, &gpu}) params_adamw_step(&m->params, adamw, 1e-3f, 1, 0.5f);
    std::vector<float> p = from_device(pg.params, pg.num_params);
    snprintf(name, sizeof name, "step B=%d T=%d: params after AdamW", B, T);
    check_close(name, p.data(), pc.params, pc.num_params, 1e-6);
    mamba_free(&cpu); mamba_free(&gpu);
}

// train both backends side by side on the same (learnable) data
static void test_loss_curve() {
    MambaConfig c = {64, 64, 2, 16, 4, 2, 0, 0};
    int B = 4, T = 96, steps = 30;
    MambaModel cpu, gpu;
    mamba_build(&cpu, c, B, T, false);
    mamba_build(&gpu, c, B, T, true);
    mamba_init_params(&cpu, 3); mamba_init_params(&gpu, 3);
    Rng r; rng_seed(&r, 4);
    std::vector<int> tok(B * T), tgt(B * T);
    double max_diff = 0; float first = 0, last = 0;
    for (int s = 0; s < steps; s++) {
        // a learnable sequence: each token is the previous plus a small random step
        int x = rng_u32(&r) % c.vocab_size;
        for (int i = 0; i < B * T; i++) { tok[i] = x; x = (x + 1 + rng_u32(&r) % 3) % c.vocab_size; tgt[i] = x; }
        float l[2];
        for (MambaModel* m : {&cpu, &gpu}) {
            float loss = mamba_forward(m, tok.data(), tgt.data(), B, T);
            mamba_zero_grad(m); mamba_backward(m);
            params_adamw_step(&m->params, AdamWConfig{0.9f, 0.95f, 1e-8f, 0.1f}, 3e-3f, s + 1, 1.0f);
            l[m->on_gpu] = loss;
        }
        max_diff = fmax(max_diff, fabs(l[0] - l[1]) / l[0]);
        if (s == 0) first = l[0];
        last = l[0];
        printf("  step %2d  cpu %.5f  gpu %.5f\n", s, l[0], l[1]);
    }
    report(last < first - 0.5f, "30-step run: the loss falls", "first %.3f last %.3f", first, last);
    report(max_diff < 1e-3, "30-step run: GPU loss curve follows the CPU one", "max relative gap %.2e", max_diff);
    mamba_free(&cpu); mamba_free(&gpu);
}

int main() {
    cublasCheck(cublasSetMathMode(cublas_handle(), CUBLAS_DEFAULT_MATH));  // exact FP32 for comparisons
    MambaConfig small = {50, 32, 2, 16, 4, 2, 0, 0};
    test_one_step(small, 2, 1);
    test_one_step(small, 2, 7);
    test_one_step(small, 3, 130);   // 3 scan chunks, the last partial
    MambaConfig odd = {257, 40, 3, 8, 3, 2, 0, 0};  // odd widths: E = 80, dt_rank 3
    test_one_step(odd, 2, 67);
    test_loss_curve();
    return test_summary();
}
