// test_lora.cu: LoRA (src/lora.h) and the Mamba LM with adapters, CPU.
//   - the adapter's forward == its definition in double, with and without dropout;
//     finite differences of dx, dA, dB (dropout on: the mask is a function of the seed)
//   - the dropout rule: keep fraction 1-p, kept values scaled by 1/(1-p), same mask
//     for the same seed, another for another seed
//   - init: B = 0 (the model starts exactly at the base), A within U(+-1/sqrt(in))
//   - merge: the merged W gives the unmerged output; unmerge restores W
//   - the model: every target, finite differences of every trainable tensor;
//     frozen tensors have no gradient or moment memory and stay bit-identical
//     through AdamW steps; generation with adapters == the parallel forward
//   - adapter files: only trainable tensors; a reload gives the same loss; a
//     wrong base or a full checkpoint in its place is refused
#include "../src/mamba_model.h"
#include "test_util.h"
#include "mamba_test_util.h"

typedef std::vector<float> Vec;

// ---------------------------------------------------------------------------
// the adapter alone

// y = x W^T + s * (drop(x) A^T) B^T in double, from the definition
static Vec adapter_ref(const Vec& x, const Vec& W, const Vec& A, const Vec& B, int N, int IC, int OC, int r, float s,
                       float p, uint64_t seed) {
    Vec y((size_t)N * OC);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double base = 0, low = 0;
            for (int i = 0; i < IC; i++) base += (double)x[n * IC + i] * W[o * IC + i];
            for (int j = 0; j < r; j++) {
                double h = 0;
                for (int i = 0; i < IC; i++) {
                    double keep = p > 0 ? lora_keep(seed, (size_t)n * IC + i, p) : 1.0;
                    h += keep * x[n * IC + i] * A[j * IC + i];
                }
                low += h * B[o * r + j];
            }
            y[n * OC + o] = (float)(base + s * low);
        }
    return y;
}

// forward through our functions: y = base linear + adapter (down, up)
static Vec adapter_ours(const Vec& x, const Vec& W, const Vec& A, const Vec& B, int N, int IC, int OC, int r, float s,
                        float p, uint64_t seed, Vec* h_out = nullptr) {
    Vec y((size_t)N * OC), h((size_t)N * r), xd((size_t)N * IC);
    linear_forward_cpu(y.data(), x.data(), W.data(), nullptr, N, IC, OC);
    lora_down_forward_cpu(h.data(), xd.data(), x.data(), A.data(), N, IC, r, p, seed);
    lora_up_forward_cpu(y.data(), h.data(), B.data(), N, r, OC, s);
    if (h_out) *h_out = h;
    return y;
}

static void test_adapter(int N, int IC, int OC, int r, float p) {
    Rng rng; rng_seed(&rng, 11 + N + IC + r);
    Vec x = random_vec((size_t)N * IC, &rng), W = random_vec((size_t)OC * IC, &rng);
    Vec A = random_vec((size_t)r * IC, &rng), B = random_vec((size_t)OC * r, &rng), w = random_vec((size_t)N * OC, &rng);
    float s = 2.0f;
    uint64_t seed = 77;
    char name[160];
    Vec h;
    Vec y = adapter_ours(x, W, A, B, N, IC, OC, r, s, p, seed, &h);
    Vec ref = adapter_ref(x, W, A, B, N, IC, OC, r, s, p, seed);
    snprintf(name, sizeof name, "adapter forward == definition (N%d IC%d OC%d r%d p%.2f)", N, IC, OC, r, p);
    check_close(name, y.data(), ref.data(), y.size(), 1e-5);
    // backward of loss = sum(w * y): dy = w; gradients accumulate onto a non-zero start
    Vec dh((size_t)N * r, 0.0f), dA((size_t)r * IC, 0.5f), dB((size_t)OC * r, 0.5f), dx((size_t)N * IC, 0.5f), xd((size_t)N * IC);
    linear_backward_cpu(dx.data(), nullptr, nullptr, w.data(), x.data(), W.data(), N, IC, OC);
    lora_up_backward_cpu(dh.data(), dB.data(), w.data(), h.data(), B.data(), N, r, OC, s);
    lora_down_backward_cpu(dx.data(), dA.data(), dh.data(), xd.data(), x.data(), A.data(), N, IC, r, p, seed);
    for (float& v : dA) v -= 0.5f;
    for (float& v : dB) v -= 0.5f;
    for (float& v : dx) v -= 0.5f;
    auto loss = [&]() {
        Vec yy = adapter_ours(x, W, A, B, N, IC, OC, r, s, p, seed);
        double l = 0;
        for (size_t i = 0; i < yy.size(); i++) l += (double)w[i] * yy[i];
        return l;
    };
    snprintf(name, sizeof name, "adapter dA (N%d r%d p%.2f)", N, r, p);
    grad_check(name, A.data(), dA.data(), A.size(), loss, 1e-2, 1e-2f);
    snprintf(name, sizeof name, "adapter dB (N%d r%d p%.2f)", N, r, p);
    grad_check(name, B.data(), dB.data(), B.size(), loss, 1e-2, 1e-2f);
    snprintf(name, sizeof name, "adapter dx (N%d r%d p%.2f)", N, r, p);
    grad_check(name, x.data(), dx.data(), x.size(), loss, 1e-2, 1e-2f);
}

static void test_dropout_rule() {
    const size_t n = 200000;
    const float p = 0.3f;
    size_t kept = 0;
    bool values_ok = true, same_seed = true;
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) {
        float k = lora_keep(5, i, p);
        if (k != 0.0f) { kept++; values_ok &= fabsf(k - 1.0f / (1.0f - p)) < 1e-6f; }
        same_seed &= k == lora_keep(5, i, p);
        differ += (k != 0.0f) != (lora_keep(6, i, p) != 0.0f);
    }
    double frac = (double)kept / n;
    report(fabs(frac - (1.0 - p)) < 0.005, "dropout keeps a fraction 1-p", "kept %.4f, want %.4f", frac, 1.0 - p);
    report(values_ok, "dropout scales kept values by 1/(1-p)");
    report(same_seed, "dropout mask: the same seed gives the same mask");
    // independent masks disagree on 2 p (1-p) = 42% of the elements
    report(fabs((double)differ / n - 2 * p * (1 - p)) < 0.01, "dropout mask: another seed gives an independent mask",
           "disagree on %.3f", (double)differ / n);
    bool p0 = true;
    for (size_t i = 0; i < 1000; i++) p0 &= lora_keep(9, i, 0.0f) == 1.0f;
    report(p0, "dropout p = 0 keeps everything, unscaled");
}

static void test_merge() {
    int N = 5, IC = 12, OC = 9, r = 3;
    Rng rng; rng_seed(&rng, 3);
    Vec x = random_vec((size_t)N * IC, &rng), W = random_vec((size_t)OC * IC, &rng);
    Vec A = random_vec((size_t)r * IC, &rng), B = random_vec((size_t)OC * r, &rng);
    float s = 1.5f;
    Vec y = adapter_ours(x, W, A, B, N, IC, OC, r, s, 0.0f, 0);
    Vec Wm = W;
    lora_merge_cpu(Wm.data(), A.data(), B.data(), OC, IC, r, s, +1.0f);
    Vec ym((size_t)N * OC);
    linear_forward_cpu(ym.data(), x.data(), Wm.data(), nullptr, N, IC, OC);
    check_close("merged W gives the adapter's output", ym.data(), y.data(), y.size(), 1e-6);
    lora_merge_cpu(Wm.data(), A.data(), B.data(), OC, IC, r, s, -1.0f);
    check_close("unmerge restores W", Wm.data(), W.data(), W.size(), 1e-6);
}

// ---------------------------------------------------------------------------
// the Mamba LM with adapters

static MambaConfig tiny_config() {
    MambaConfig c = {11, 8, 2, 4, 4, 2, 0, 0};  // vocab, D, layers, N, K, expand, dt_rank (auto)
    mamba_config_derive(&c);
    return c;
}

static LoraConfig lora_config(int rank, const char* targets, const char* train_also = "", float dropout = 0.0f) {
    LoraConfig c;
    c.rank = rank; c.alpha = 2.0f * rank; c.targets = targets; c.train_also = train_also; c.dropout = dropout;
    return c;
}

static void random_tokens(std::vector<int>* tok, std::vector<int>* tgt, int n, int V, uint64_t seed) {
    Rng r; rng_seed(&r, seed);
    tok->resize(n); tgt->resize(n);
    for (int i = 0; i < n; i++) { (*tok)[i] = rng_u32(&r) % V; (*tgt)[i] = rng_u32(&r) % V; }
}

static void test_model_gradients(const char* targets, const char* train_also, float dropout) {
    int B = 2, T = 9;
    MambaModel m;
    mamba_build(&m, tiny_config(), B, T, false, true, lora_config(3, targets, train_also, dropout));
    mamba_init_params(&m, 42);
    jitter_params(&m, 43);
    std::vector<int> tok, tgt;
    random_tokens(&tok, &tgt, B * T, 11, 5);
    mamba_set_training(&m, true, 1234);  // dropout on, one fixed mask
    double loss0 = mamba_forward(&m, tok.data(), tgt.data(), B, T);
    mamba_zero_grad(&m);
    mamba_backward(&m);
    const ParamStore& ps = m.params;
    std::vector<float> grads(ps.grads, ps.grads + ps.num_trainable);
    auto loss = [&]() -> double { return mamba_forward(&m, tok.data(), tgt.data(), B, T); };
    int checked = 0;
    for (size_t i = 0; i < ps.tensors.size(); i++) {
        const ParamTensor& t = ps.tensors[i];
        if (!t.trainable) continue;
        char name[200]; snprintf(name, sizeof name, "LoRA model [%s%s%s, p %.1f] %s", targets, *train_also ? " + " : "", train_also,
                                 dropout, t.name.c_str());
        const float eps = 3e-3f;  // jittered adapters make the loss curved: 3e-2 is too coarse for x_proj
        // the loss is a float32 mean over B*T terms through many layers: allow ~8 ulps of it per difference
        double noise = 8.0 * 1.2e-7 * fabs(loss0) / (2.0 * eps);
        grad_check(name, ps.params + t.offset, grads.data() + t.offset, t.numel, loss, 3e-2, eps, 12, 7 + i, noise);
        checked++;
    }
    report(checked > 0, "LoRA model: some tensors are trainable", "%s", targets);
    mamba_free(&m);
}

// frozen base: no gradient or moment memory; bit-identical after AdamW steps; adapters move
static void test_frozen_base() {
    int B = 2, T = 8;
    MambaConfig c = tiny_config();
    MambaModel full, lora;
    mamba_build(&full, c, B, T, false);
    mamba_build(&lora, c, B, T, false, true, lora_config(2, "in_proj_x,out_proj", "A_log"));
    size_t E = c.d_inner, D = c.d_model, N = c.d_state, r = 2;
    size_t adapters = c.n_layer * ((r * D + E * r) + (r * E + D * r)), a_log = c.n_layer * E * N;
    report(lora.params.num_trainable == adapters + a_log, "LoRA: trainable = adapters + --train-also tensors",
           "%zu != %zu", lora.params.num_trainable, adapters + a_log);
    report(lora.params.num_params == full.params.num_params + adapters, "LoRA: every base tensor is still there");
    report(params_grad_and_moment_bytes(&lora.params) == 3 * (adapters + a_log) * sizeof(float),
           "LoRA: gradient + AdamW memory only for the trainable tensors");
    bool nulls = true, live = true;
    for (size_t i = 0; i < lora.params.tensors.size(); i++) {
        const ParamTensor& t = lora.params.tensors[i];
        bool want = lora_is_adapter(t.name) || lora_name_matches(t.name, "A_log");
        if (t.trainable != want) nulls = false;
        if (want != (param_grad(&lora.params, (int)i) != nullptr)) live = false;
    }
    report(nulls, "LoRA: exactly the adapters and A_log are trainable");
    report(live, "LoRA: frozen tensors have no gradient view");
    mamba_free(&full);

    mamba_init_params(&lora, 1);
    jitter_params(&lora, 2);
    std::vector<float> before(lora.params.params, lora.params.params + lora.params.num_params);
    std::vector<int> tok, tgt;
    random_tokens(&tok, &tgt, B * T, c.vocab_size, 8);
    AdamWConfig ac = {0.9f, 0.95f, 1e-8f, 0.1f};
    for (int step = 1; step <= 3; step++) {
        mamba_set_training(&lora, true, step);
        mamba_forward(&lora, tok.data(), tgt.data(), B, T);
        mamba_zero_grad(&lora);
        mamba_backward(&lora);
        params_adamw_step(&lora.params, ac, 1e-2f, step, 1.0f);
    }
    bool base_same = true, trained_moved = true;
    for (const ParamTensor& t : lora.params.tensors) {
        bool same = memcmp(before.data() + t.offset, lora.params.params + t.offset, t.numel * sizeof(float)) == 0;
        if (!t.trainable && !same) base_same = false;
        if (t.trainable && same) trained_moved = false;
    }
    report(base_same, "LoRA: frozen base bit-identical after 3 AdamW steps");
    report(trained_moved, "LoRA: every adapter and --train-also tensor moved");
    mamba_free(&lora);
}

// right after init the adapters add exactly zero (B = 0); A is kaiming-uniform
static void test_init() {
    int B = 1, T = 6;
    MambaConfig c = tiny_config();
    MambaModel base, lora;
    mamba_build(&base, c, B, T, false);
    mamba_build(&lora, c, B, T, false, true, lora_config(4, "all"));
    mamba_init_params(&base, 9);
    mamba_init_params(&lora, 9);
    std::vector<int> tok, tgt;
    random_tokens(&tok, &tgt, B * T, c.vocab_size, 3);
    float l0 = mamba_forward(&base, tok.data(), tgt.data(), B, T);
    float l1 = mamba_forward(&lora, tok.data(), tgt.data(), B, T);
    report(l0 == l1, "LoRA at init: the same loss as the base, to the bit", "%.9g vs %.9g", l0, l1);
    bool b_zero = true, a_bound = true;
    double a_sq = 0; size_t a_n = 0; float bound_max = 0;
    for (const ParamTensor& t : lora.params.tensors) {
        const float* p = lora.params.params + t.offset;
        if (t.name.find(".lora_B") != std::string::npos)
            for (size_t j = 0; j < t.numel; j++) b_zero &= p[j] == 0.0f;
        if (t.name.find(".lora_A") != std::string::npos) {
            float bound = 1.0f / sqrtf((float)t.shape[1]);
            for (size_t j = 0; j < t.numel; j++) { a_bound &= fabsf(p[j]) <= bound; a_sq += (double)p[j] * p[j] / (bound * bound); a_n++; }
            bound_max = std::max(bound_max, bound);
        }
    }
    report(b_zero, "LoRA init: B = 0");
    report(a_bound, "LoRA init: |A| <= 1/sqrt(in_features)");
    // U(-b, b) has variance b^2 / 3
    report(fabs(a_sq / a_n - 1.0 / 3.0) < 0.03, "LoRA init: A ~ U(+-1/sqrt(in)) (variance b^2/3)", "%.4f", a_sq / a_n);
    mamba_free(&base); mamba_free(&lora);
}

// merged forward == unmerged; generation with adapters == argmax of the parallel forward
static void test_merge_and_generate() {
    int T = 12;
    MambaConfig c = {23, 16, 2, 8, 4, 2, 0, 0};
    mamba_config_derive(&c);
    MambaModel m;
    mamba_build(&m, c, 1, T, false, true, lora_config(4, "in_proj,x_proj,dt_proj,out_proj"));
    mamba_init_params(&m, 5);
    jitter_params(&m, 6);
    std::vector<int> tok, tgt;
    random_tokens(&tok, &tgt, T, c.vocab_size, 1);
    float l_unmerged = mamba_forward(&m, tok.data(), nullptr, 1, T);
    (void)l_unmerged;
    Vec logits(m.logits, m.logits + (size_t)T * c.vocab_size);
    Vec before(m.params.params, m.params.params + m.params.num_params);
    mamba_lora_merge(&m);
    mamba_forward(&m, tok.data(), nullptr, 1, T);
    check_close("LoRA: merged forward == unmerged forward", m.logits, logits.data(), logits.size(), 1e-5);
    mamba_lora_unmerge(&m);
    check_close("LoRA: unmerge restores the base weights", m.params.params, before.data(), before.size(), 1e-6);
    // greedy generation (the recurrent step on a merged host copy) follows the parallel argmax
    std::vector<int> prompt = {3, 7, 1};
    std::vector<int> gen = mamba_generate(&m, prompt, 8, 0.0f, 0, 1);
    std::vector<int> seq = prompt;
    seq.insert(seq.end(), gen.begin(), gen.end() - 1);
    mamba_forward(&m, seq.data(), nullptr, 1, (int)seq.size());
    bool same = true;
    for (size_t i = 0; i < gen.size(); i++) {
        const float* row = m.logits + (prompt.size() - 1 + i) * c.vocab_size;
        int best = (int)(std::max_element(row, row + c.vocab_size) - row);
        same &= best == gen[i];
    }
    report(same, "LoRA: greedy generation == argmax of the parallel forward");
    mamba_free(&m);
}

// adapter files: trainable tensors only; reload == same loss; wrong base / kind refused
static void test_adapter_file() {
    int B = 2, T = 8;
    MambaConfig c = tiny_config();
    const char* base_path = "/tmp/test_lora_base.ckpt";
    const char* other_path = "/tmp/test_lora_other.ckpt";
    const char* adapter_path = "/tmp/test_lora_adapter.ckpt";
    MambaModel base;
    mamba_build(&base, c, B, T, false);
    mamba_init_params(&base, 1); jitter_params(&base, 2);
    checkpoint_save(base_path, "mamba", mamba_config_kv(base.cfg), &base.params, TrainState{0, 0, 0});
    jitter_params(&base, 3);
    checkpoint_save(other_path, "mamba", mamba_config_kv(base.cfg), &base.params, TrainState{0, 0, 0});
    mamba_free(&base);

    LoraConfig lc = lora_config(2, "in_proj,out_proj", "D");
    MambaModel m;
    mamba_build(&m, c, B, T, false, true, lc);
    mamba_init_params(&m, 4);
    mamba_load_base(&m, base_path);
    jitter_params(&m, 5);  // stands for training: moves adapters and (trainable) D; the frozen base must be reloaded
    mamba_load_base(&m, base_path);
    std::vector<int> tok, tgt;
    random_tokens(&tok, &tgt, B * T, c.vocab_size, 6);
    float l_trained = mamba_forward(&m, tok.data(), tgt.data(), B, T);
    mamba_save_adapter(&m, adapter_path, TrainState{7, 0, 0});
    CheckpointInfo info = checkpoint_read_info(adapter_path);
    bool only_trainable = true; size_t params_in_file = 0;
    for (auto& e : info.tensors) {
        if (e.role != "param") continue;
        params_in_file++;
        int i = params_find(&m.params, e.name);
        only_trainable &= i >= 0 && m.params.tensors[i].trainable;
    }
    size_t trainable_tensors = 0;
    for (const ParamTensor& t : m.params.tensors) trainable_tensors += t.trainable;
    report(only_trainable && params_in_file == trainable_tensors, "adapter file: exactly the trainable tensors",
           "%zu in file, %zu trainable", params_in_file, trainable_tensors);
    mamba_free(&m);

    MambaModel m2;
    mamba_build(&m2, c, B, T, false, true, lc);
    mamba_init_params(&m2, 99);
    mamba_load_base(&m2, base_path);
    TrainState st = mamba_load_adapter(&m2, adapter_path, true);
    float l_reloaded = mamba_forward(&m2, tok.data(), tgt.data(), B, T);
    report(l_reloaded == l_trained && st.step == 7, "adapter file: base + adapter reload gives the same loss", "%.9g vs %.9g",
           l_reloaded, l_trained);
    mamba_free(&m2);

    expect_fatal("adapter on another base is refused", "trained on another base", [&]() {
        MambaModel x; mamba_build(&x, c, B, T, false, true, lc);
        mamba_load_base(&x, other_path);
        mamba_load_adapter(&x, adapter_path, false);
    });
    expect_fatal("adapter with other LoRA flags is refused", "lora_rank", [&]() {
        MambaModel x; mamba_build(&x, c, B, T, false, true, lora_config(3, "in_proj,out_proj", "D"));
        mamba_load_base(&x, base_path);
        mamba_load_adapter(&x, adapter_path, false);
    });
    expect_fatal("a full checkpoint as the adapter is refused", "not an adapter", [&]() {
        MambaModel x; mamba_build(&x, c, B, T, false, true, lc);
        mamba_load_base(&x, base_path);
        mamba_load_adapter(&x, base_path, false);
    });
    expect_fatal("an adapter file as the base is refused", "is an adapter file", [&]() {
        MambaModel x; mamba_build(&x, c, B, T, false, true, lc);
        mamba_load_base(&x, adapter_path);
    });
    expect_fatal("unknown LoRA target is refused", "has no 'q_proj'", [&]() {
        MambaModel x; mamba_build(&x, c, B, T, false, true, lora_config(2, "q_proj"));
    });
    expect_fatal("in_proj with in_proj_x is refused", "exclude each other", [&]() {
        MambaModel x; mamba_build(&x, c, B, T, false, true, lora_config(2, "in_proj,in_proj_x"));
    });
    expect_fatal("unknown --train-also name is refused", "no parameter is named 'Alog'", [&]() {
        MambaModel x; mamba_build(&x, c, B, T, false, true, lora_config(2, "out_proj", "Alog"));
    });
    remove(base_path); remove(other_path); remove(adapter_path);
}

int main() {
    test_adapter(5, 7, 6, 2, 0.0f);
    test_adapter(1, 3, 4, 1, 0.0f);
    test_adapter(9, 16, 5, 4, 0.25f);
    test_dropout_rule();
    test_merge();
    test_init();
    test_model_gradients("in_proj,x_proj,dt_proj,out_proj", "", 0.0f);
    test_model_gradients("in_proj_x", "A_log,D,conv1d", 0.0f);
    test_model_gradients("all", "", 0.2f);
    test_frozen_base();
    test_merge_and_generate();
    test_adapter_file();
    return test_summary();
}
