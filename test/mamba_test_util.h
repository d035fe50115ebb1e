// mamba_test_util.h: helpers the Mamba model tests share.
#pragma once
#include "../src/mamba_model.h"

// perturb the freshly initialised parameters so no tensor sits at a special
// value (D = 1, norms = 1, zero biases) that could hide a wrong gradient. The
// standard init makes dt ~ 1e-3..0.1 (Mamba-1's dt_proj.bias, Mamba-2's mixer.dt_bias) and embeddings ~0.02, which leaves the
// scan's gradients too small for float32 finite differences: raise both.
static void jitter_params(MambaModel* m, uint64_t seed) {
    Rng r; rng_seed(&r, seed);
    ParamStore* ps = &m->params;
    for (size_t i = 0; i < ps->num_params; i++) ps->params[i] += 0.5f * (2.0f * rng_uniform(&r) - 1.0f);
    for (const ParamTensor& t : ps->tensors) {
        float* p = ps->params + t.offset;
        if (strstr(t.name.c_str(), "dt_proj.bias") || strstr(t.name.c_str(), "mixer.dt_bias"))
            for (size_t j = 0; j < t.numel; j++) p[j] = -1.5f + 2.0f * rng_uniform(&r);  // dt ~ 0.2..1
        if (t.name == "embedding.weight")
            for (size_t j = 0; j < t.numel; j++) p[j] = rng_normal(&r);
    }
}

// a layer-pattern model of the GPU tests' size: M1 state 8, M2 heads of 16 with state 16 and
// chunks of 32, attention heads 2, MLP width 4 D
static MambaConfig hybrid_test_config(const char* layers, int V, int D) {
    MambaConfig c = {};
    c.vocab_size = V; c.d_model = D; c.d_state = 8; c.d_conv = 4; c.expand = 2;
    c.layers = layers;
    c.m2_d_state = 16; c.m2_headdim = 16; c.m2_ngroups = 1; c.m2_chunk = 32;
    c.attn_heads = 2; c.mlp_mult = 4;
    mamba_config_derive(&c);
    return c;
}

static void random_tokens(std::vector<int>* v, size_t n, int V, Rng* r) {
    v->resize(n);
    for (auto& t : *v) t = rng_u32(r) % V;
}

// finite differences of every parameter tensor of the model (CPU), then: a second backward
// without zeroing doubles every gradient
static void model_gradient_check(const MambaConfig& c, int B, int T, const char* label) {
    MambaModel m;
    mamba_build(&m, c, B, T, false);
    mamba_init_params(&m, 42);
    jitter_params(&m, 43);
    Rng r; rng_seed(&r, 100 + T);
    std::vector<int> tok, tgt;
    random_tokens(&tok, (size_t)B * T, c.vocab_size, &r); random_tokens(&tgt, (size_t)B * T, c.vocab_size, &r);
    double loss0 = mamba_forward(&m, tok.data(), tgt.data(), B, T);
    mamba_zero_grad(&m);
    mamba_backward(&m);
    const ParamStore& ps = m.params;
    std::vector<float> grads(ps.grads, ps.grads + ps.num_trainable);
    auto loss = [&]() -> double { return mamba_forward(&m, tok.data(), tgt.data(), B, T); };
    for (size_t i = 0; i < ps.tensors.size(); i++) {
        const ParamTensor& t = ps.tensors[i];
        char name[192]; snprintf(name, sizeof name, "%s T=%d %s", label, T, t.name.c_str());
        // a float32 loss is good to a few ulps; divided by 2*eps that is the
        // smallest gradient a central difference can see
        const float eps = 3e-2f;
        double noise = 2.0 * 1.2e-7 * fabs(loss0) / (2.0 * eps);
        grad_check(name, ps.params + t.offset, grads.data() + t.offset, t.numel, loss, 3e-2, eps, 12, 7 + i, noise);
    }
    mamba_forward(&m, tok.data(), tgt.data(), B, T);
    mamba_backward(&m);
    std::vector<float> twice(grads.size());
    for (size_t i = 0; i < grads.size(); i++) twice[i] = 2.0f * grads[i];
    char name[128]; snprintf(name, sizeof name, "%s T=%d backward accumulates", label, T);
    check_close(name, ps.grads, twice.data(), grads.size(), 1e-5);
    mamba_free(&m);
}

// mamba_backward's loss, and the parameter gradients copied to the host
static float model_backward_grads(MambaModel* m, std::vector<float>* g) {
    float loss = mamba_backward(m);
    g->resize(m->params.num_trainable);
    backend_copy(m->on_gpu, g->data(), m->params.grads, g->size() * sizeof(float), false);
    return loss;
}
// two backwards gave the same loss and the same gradients: bit for bit on the CPU, to 1e-6 on the GPU
// (the scan and the conv sum some terms with float atomics, whose order varies)
static void check_same_backward(const std::string& what, bool on_gpu, const float loss[2], const std::vector<float> g[2]) {
    report(loss[0] == loss[1], (what + ": the loss").c_str(), "%.9g vs %.9g", loss[1], loss[0]);
    std::string name = what + ": every gradient";
    if (on_gpu) check_close(name.c_str(), g[1].data(), g[0].data(), g[0].size(), 1e-6);
    else {
        size_t bad = g[0].size() == g[1].size() ? 0 : 1;
        for (size_t i = 0; !bad && i < g[0].size(); i++) bad += memcmp(&g[0][i], &g[1][i], sizeof(float)) != 0;
        report(bad == 0, name.c_str(), "%zu of %zu differ", bad, g[0].size());
    }
}

// --recompute (g_mamba_recompute): the norms' and convs' outputs shared by the layers and recomputed in
// the backward, against kept per layer (the default): the same loss and the same gradients, bit for bit
// on the CPU (on the GPU to 1e-6: float atomics), the recomputing model in fewer bytes when it has more
// than one layer
static void model_recompute_check(const MambaConfig& c, int B, int T, bool on_gpu, bool build_bf16, const char* label) {
    MambaModel m[2];
    float loss[2];
    std::vector<float> g[2];
#ifdef __CUDACC__
    MatmulPrecision before = g_matmul_precision;
    if (build_bf16) linear_set_precision(MATMUL_BF16);
#endif
    Rng r; rng_seed(&r, 31);
    std::vector<int> tok, tgt;
    random_tokens(&tok, (size_t)B * T, c.vocab_size, &r); random_tokens(&tgt, (size_t)B * T, c.vocab_size, &r);
    for (int k = 0; k < 2; k++) {  // 0: kept, 1: recomputed
        g_mamba_recompute = k == 1;
        mamba_build(&m[k], c, B, T, on_gpu);
        g_mamba_recompute = false;
        mamba_init_params(&m[k], 32);
        mamba_forward_train(&m[k], tok.data(), tgt.data(), B, T);
        mamba_zero_grad(&m[k]);
        loss[k] = model_backward_grads(&m[k], &g[k]);
    }
    char name[192];
    snprintf(name, sizeof name, "%s B=%d T=%d: --recompute == kept per layer", label, B, T);
    check_same_backward(name, on_gpu, loss, g);
    snprintf(name, sizeof name, "%s B=%d T=%d: --recompute takes fewer activation bytes", label, B, T);
    report(m[1].acts_bytes < m[0].acts_bytes, name, "%zu vs %zu", m[1].acts_bytes, m[0].acts_bytes);
    mamba_free(&m[0]); mamba_free(&m[1]);
#ifdef __CUDACC__
    linear_set_precision(before);
#endif
}

// The backward's first writers set the layer scratch (GRAD_SET) instead of adding into a zeroed one.
// With the whole backward scratch filled with NaN before mamba_backward, the loss and every gradient
// are what they are with it zeroed (bit for bit on the CPU; on the GPU to 1e-6: float atomics): no
// scratch element is read before it is written. build_bf16: the model built under --matmul bf16
// (train_mamba's order: the layers' bf16 activations).
static void model_scratch_poison_check(const MambaConfig& c, int B, int T, bool on_gpu, bool build_bf16, const char* label) {
    MambaModel m;
#ifdef __CUDACC__
    MatmulPrecision before = g_matmul_precision;
    if (build_bf16) linear_set_precision(MATMUL_BF16);
#endif
    mamba_build(&m, c, B, T, on_gpu);
    mamba_init_params(&m, 21);  // (a NaN read anywhere reaches the loss or a gradient whatever the values)
    Rng r; rng_seed(&r, 23);
    std::vector<int> tok, tgt;
    random_tokens(&tok, (size_t)B * T, c.vocab_size, &r); random_tokens(&tgt, (size_t)B * T, c.vocab_size, &r);
    std::vector<float> g[2];
    float loss[2];
    for (int run = 0; run < 2; run++) {  // 0: scratch zeroed, 1: scratch NaN
        mamba_forward_train(&m, tok.data(), tgt.data(), B, T);
        mamba_zero_grad(&m);
#ifdef __CUDACC__
        if (on_gpu) cudaCheck(cudaMemset(m.scratch_memory, run ? 0xFF : 0, m.scratch_bytes));
        else
#endif
            memset(m.scratch_memory, run ? 0xFF : 0, m.scratch_bytes);
        loss[run] = model_backward_grads(&m, &g[run]);
    }
    char name[192];
    snprintf(name, sizeof name, "%s B=%d T=%d: backward from a NaN scratch == from a zeroed one", label, B, T);
    check_same_backward(name, on_gpu, loss, g);
    mamba_free(&m);
#ifdef __CUDACC__
    linear_set_precision(before);
#endif
}

// the training step's forward (mamba_forward_train: no head) then mamba_backward against
// mamba_forward + mamba_backward on one backend: the loss mamba_backward returns equals
// mamba_forward's and every gradient is the same, bit for bit (head chunks of 3 rows and all
// rows: the loss is summed over the chunks the backward walks)
static void model_forward_train_check(const MambaConfig& c, int B, int T, bool on_gpu, const char* label) {
    for (bool chunked : {false, true}) {
        size_t saved = g_logits_chunk_floats;
        if (chunked) g_logits_chunk_floats = 3 * (size_t)c.vocab_size;
        MambaModel a, b;
        mamba_build(&a, c, B, T, on_gpu);
        mamba_build(&b, c, B, T, on_gpu);
        g_logits_chunk_floats = saved;
        for (MambaModel* m : {&a, &b}) {  // the same parameters (jitter_params writes host memory: CPU only)
            mamba_init_params(m, 5);
            if (!on_gpu) jitter_params(m, 6);
        }
        Rng r; rng_seed(&r, 7 + T);
        std::vector<int> tok, tgt;
        random_tokens(&tok, (size_t)B * T, c.vocab_size, &r); random_tokens(&tgt, (size_t)B * T, c.vocab_size, &r);
        float la = mamba_forward(&a, tok.data(), tgt.data(), B, T);
        mamba_zero_grad(&a);
        float la_bwd = mamba_backward(&a);
        mamba_forward_train(&b, tok.data(), tgt.data(), B, T);
        mamba_zero_grad(&b);
        float lb = mamba_backward(&b);
        size_t n = a.params.num_trainable;
        std::vector<float> ga(n), gb(n);
        backend_copy(on_gpu, ga.data(), a.params.grads, n * sizeof(float), false);
        backend_copy(on_gpu, gb.data(), b.params.grads, n * sizeof(float), false);
        char name[200];
        snprintf(name, sizeof name, "%s %s B=%d T=%d%s: mamba_backward's loss == mamba_forward's, after either forward", label,
                 on_gpu ? "GPU" : "CPU", B, T, chunked ? " (head chunks of 3 rows)" : "");
        report(la == lb && la == la_bwd, name, "%.9g, %.9g, %.9g", la, la_bwd, lb);
        // the CPU's gradients are the same bits; the GPU's backward sums some gradients with float
        // atomics (the conv's weights, the scan's A, D, dB, dC), whose order changes from run to run
        snprintf(name, sizeof name, "%s %s B=%d T=%d%s: mamba_forward_train + backward: the same gradients%s", label,
                 on_gpu ? "GPU" : "CPU", B, T, chunked ? " (head chunks of 3 rows)" : "", on_gpu ? " (to 1e-6: atomics)" : ", bit for bit");
        if (on_gpu) check_close(name, gb.data(), ga.data(), n, 1e-6);
        else report(memcmp(ga.data(), gb.data(), n * sizeof(float)) == 0, name, "they differ");
        mamba_free(&a); mamba_free(&b);
    }
}

#ifdef __CUDACC__
// one training step on both backends from the same parameters: the loss, every gradient
// (the GPU's poisoned first: zero_grad must clear them all), the parameters after AdamW.
// With attention layers the GPU's attention runs on TF32 tensor cores (src/attention.h: ~1e-3
// relative error per kernel against the fp32 CPU reference), and so does the SSD of M2 layers
// whose heads its tensor-core path takes (src/ssd.h: TF32 mma, the backward's states in bf16,
// gradients within ~3e-3); the matmuls are exact fp32. Then the gradients within 1e-2; Adam's
// first step moves each weight by about lr * sign(g), and a gradient within that rounding of
// zero may take either sign, so the parameters within 5e-4.
// bf16 = true: the GPU's matmuls take bf16-rounded operands (--matmul bf16) against the fp32 CPU.
// Each product is then off by at most ~sqrt(2/3) u ~ 3.2e-3 norm-wise (u = 2^-8; test_linear_bf16 in
// gpu_layers.cu checks the rule itself); a gradient passes through up to ~8 of them (head, out_proj,
// dt_proj, x_proj, in_proj, each layer's), so we allow 3e-2 on gradients and 2e-3 on the loss.
// Layers whose products are all wide enough (every side >= 128) also take bf16 activations
// (mamba_acts_bf16): each of a layer's activations and gradients is rounded once more (<= u), about
// a dozen per layer on a gradient's path, under the same bound. acts16: how many M1 layers must have
// run with bf16 activations (-1: not checked), so a test cannot pass on the other path.
// build_bf16: the GPU model is built under --matmul bf16 (as train_mamba does), so those layers are
// laid out in bf16 (mamba_plan_acts16); else the precision is set after the build (fp32-sized views).
// run_B, run_T (0: B, T): the step's shape, at most the built one.
static void model_gpu_step_check(const MambaConfig& c, int B, int T, const char* label, bool bf16 = false, int acts16 = -1,
                                 bool build_bf16 = false, int run_B = 0, int run_T = 0) {
    bool tensor_cores = mamba_has_kind(c, LAYER_ATTN) ||
                        (mamba_has_kind(c, LAYER_M2) && ssd_tc_ok(c.m2_headdim, c.m2_d_state, {}));
    double grad_tol = bf16 ? 3e-2 : tensor_cores ? 1e-2 : 1e-4, param_tol = bf16 || tensor_cores ? 5e-4 : 1e-6;
    double loss_tol = bf16 ? 2e-3 : 1e-5;
    MambaModel cpu, gpu;
    MatmulPrecision before = g_matmul_precision;
    mamba_build(&cpu, c, B, T, false);
    if (build_bf16) linear_set_precision(MATMUL_BF16);
    mamba_build(&gpu, c, B, T, true);
    linear_set_precision(before);
    if (run_B) B = run_B;
    if (run_T) T = run_T;
    mamba_init_params(&cpu, 11);
    Rng r; rng_seed(&r, 12);
    ParamStore& pc = cpu.params;
    ParamStore& pg = gpu.params;
    for (size_t i = 0; i < pc.num_params; i++) pc.params[i] += 0.05f * rng_normal(&r);  // off the special init values
    cudaCheck(cudaMemcpy(pg.params, pc.params, pc.num_params * sizeof(float), cudaMemcpyHostToDevice));
    std::vector<int> tok, tgt;
    random_tokens(&tok, (size_t)B * T, c.vocab_size, &r); random_tokens(&tgt, (size_t)B * T, c.vocab_size, &r);
    float lc = mamba_forward(&cpu, tok.data(), tgt.data(), B, T);
    if (bf16) linear_set_precision(MATMUL_BF16);
    float lg = mamba_forward(&gpu, tok.data(), tgt.data(), B, T);
    char name[224];
    if (acts16 >= 0) {
        int n16 = 0;
        for (int l = 0; l < c.n_layer; l++) n16 += gpu.layer_index[l].kind == LAYER_M1 && gpu.acts[l].bf16;
        snprintf(name, sizeof name, "%s B=%d T=%d: %d layers with bf16 activations", label, B, T, acts16);
        report(n16 == acts16, name, "%d", n16);
    }
    mamba_zero_grad(&cpu); mamba_backward(&cpu);
    cudaCheck(cudaMemset(pg.grads, 0xFF, pg.num_trainable * sizeof(float)));
    mamba_zero_grad(&gpu); mamba_backward(&gpu);
    if (bf16) linear_set_precision(before);
    snprintf(name, sizeof name, "%s B=%d T=%d%s: loss", label, B, T, bf16 ? " bf16 matmuls" : "");
    check_close(name, &lg, &lc, 1, loss_tol);
    std::vector<float> g = from_device(pg.grads, pg.num_trainable);
    double worst = 0;
    std::string worst_name;
    for (const ParamTensor& t : pc.tensors) {
        snprintf(name, sizeof name, "%s B=%d T=%d%s: grad %s", label, B, T, bf16 ? " bf16 matmuls" : "", t.name.c_str());
        check_close(name, g.data() + t.offset, pc.grads + t.offset, t.numel, grad_tol);
        double e = rel_err(g.data() + t.offset, pc.grads + t.offset, t.numel);
        if (e > worst) { worst = e; worst_name = t.name; }
    }
    printf("     (largest gradient error %.2e: %s; loss %.2e)\n", worst, worst_name.c_str(), fabs((double)lg - lc) / fabs(lc));
    AdamWConfig adamw = {0.9f, 0.95f, 1e-8f, 0.1f};  // decay groups included
    for (MambaModel* m : {&cpu, &gpu}) params_adamw_step(&m->params, adamw, 1e-3f, 1, 0.5f);
    std::vector<float> p = from_device(pg.params, pg.num_params);
    snprintf(name, sizeof name, "%s B=%d T=%d%s: params after AdamW", label, B, T, bf16 ? " bf16 matmuls" : "");
    check_close(name, p.data(), pc.params, pc.num_params, param_tol);
    mamba_free(&cpu); mamba_free(&gpu);
}

// both backends trained side by side on the same learnable data: the loss falls and the GPU
// curve follows the CPU one
static void model_gpu_loss_curve(const MambaConfig& c, int B, int T, int steps, const char* label) {
    MambaModel cpu, gpu;
    mamba_build(&cpu, c, B, T, false);
    mamba_build(&gpu, c, B, T, true);
    mamba_init_params(&cpu, 3); mamba_init_params(&gpu, 3);
    Rng r; rng_seed(&r, 4);
    std::vector<int> tok(B * T), tgt(B * T);
    double max_diff = 0; float first = 0, last = 0;
    for (int s = 0; s < steps; s++) {
        int x = rng_u32(&r) % c.vocab_size;  // each token the previous plus a small random step
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
        printf("  %s step %2d  cpu %.5f  gpu %.5f\n", label, s, l[0], l[1]);
    }
    char name[160];
    snprintf(name, sizeof name, "%s %d-step run: the loss falls", label, steps);
    report(last < first - 0.5f, name, "first %.3f last %.3f", first, last);
    snprintf(name, sizeof name, "%s %d-step run: GPU loss curve follows the CPU one", label, steps);
    report(max_diff < 1e-3, name, "max relative gap %.2e", max_diff);
    mamba_free(&cpu); mamba_free(&gpu);
}
#endif
