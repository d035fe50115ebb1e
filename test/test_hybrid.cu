// test_hybrid.cu: the language model as a layer pattern (Mamba-1, Mamba-2, attention, MLP),
// CPU reference.
//   - the pattern parser and the config: "KIND*N", errors, a pure Mamba-1 model's checkpoint
//     config unchanged, a pattern's config back from its key=value lines
//   - finite differences of every parameter tensor of a hybrid (M1, M2, A, F) and of a pure
//     transformer (learned positions); backward accumulates
//   - the recurrent step (generation: conv/SSM states, KV cache) == the parallel forward
//   - init rules: the attention/MLP weights' std, the residual projections scaled by
//     1/sqrt(n_layer) in every kind, the positions' std, norms 1; names and parameter count
#include "../src/mamba_model.h"
#include "test_util.h"
#include "mamba_test_util.h"

// the GPU tests' pattern config made smaller: M1 state 4, M2 blocks of 4 heads of 4 with state 4, two
// groups, chunks of 3 (no length here is a multiple of 3), MLP width 2 D
static MambaConfig pattern_config(const char* layers, int vocab = 13, int d_model = 8) {
    MambaConfig c = hybrid_test_config(layers, vocab, d_model);
    c.d_state = 4; c.m2_d_state = 4; c.m2_headdim = 4; c.m2_ngroups = 2; c.m2_chunk = 3; c.mlp_mult = 2;
    mamba_config_derive(&c);
    return c;
}

static void test_parse() {
    std::vector<LayerKind> k;
    std::string err;
    bool ok = mamba_parse_layers("M1,M2,A,F", &k, &err);
    report(ok && k.size() == 4 && k[0] == LAYER_M1 && k[1] == LAYER_M2 && k[2] == LAYER_ATTN && k[3] == LAYER_MLP,
           "pattern M1,M2,A,F parses in order");
    ok = mamba_parse_layers("M2*3,A", &k, &err);
    report(ok && k.size() == 4 && k[2] == LAYER_M2 && k[3] == LAYER_ATTN, "pattern M2*3,A repeats");
    for (const char* bad : {"", "X", "M3", "M2*0", "M2*", "M1,,A", "m2", "A*x"}) {
        char name[64]; snprintf(name, sizeof name, "pattern '%s' is refused", bad);
        report(!mamba_parse_layers(bad, &k, &err) && !err.empty(), name);
    }
    MambaConfig c = pattern_config("M2*2,A");
    report(c.layers == "M2,M2,A" && c.n_layer == 3, "derive writes the pattern out and sets n_layer", "%s %d", c.layers.c_str(), c.n_layer);
    report(!c.pos_embed && pattern_config("A,F").pos_embed, "learned positions only without M1/M2 layers");
    MambaConfig plain = {11, 8, 3, 4, 4, 2, 0, 0};  // not derived: an empty pattern is n_layer M1 blocks
    report(mamba_layer_kinds(plain).size() == 3 && mamba_is_pure_m1(plain) && !mamba_has_kind(plain, LAYER_ATTN),
           "an underived config without a pattern reads as Mamba-1 blocks");
}

static void test_config_kv() {
    // a pure Mamba-1 model stores exactly the keys it always did (old checkpoints load)
    MambaConfig c = {11, 8, 2, 4, 4, 2, 0, 0};
    mamba_config_derive(&c);
    ConfigKV kv = mamba_config_kv(c);
    const char* old_keys[] = {"vocab_size", "d_model", "n_layer", "d_state", "d_conv", "expand", "dt_rank"};
    bool same = kv.size() == 7;
    for (int i = 0; same && i < 7; i++) same = kv[i].first == old_keys[i];
    report(same && c.layers == "M1,M1", "pure Mamba-1: the checkpoint config keys are the old seven");
    // a pattern: its keys, and back
    MambaConfig h = pattern_config("M1,M2,A,F");
    h.max_seq = 0;
    ConfigKV hk = mamba_config_kv(h);
    MambaConfig back = mamba_config_from_kv(hk, "test");
    report(mamba_config_kv(back) == hk && back.layers == h.layers && back.m2_headdim == 4 && back.m2_ngroups == 2 &&
           back.attn_heads == 2 && back.mlp_mult == 2, "a pattern's config reads back equal");
    report(config_get(hk, "layers") && *config_get(hk, "layers") == "M1,M2,A,F" && config_get(hk, "m2_d_state") &&
           !config_get(hk, "max_seq"), "a pattern's config holds the pattern and its kinds' keys");
    MambaConfig t = pattern_config("A,F");
    t.max_seq = 16;
    report(config_get(mamba_config_kv(t), "max_seq") && !config_get(mamba_config_kv(t), "m2_d_state"),
           "a pure transformer's config holds max_seq, no M2 keys");
}

static void test_recurrent_matches_parallel(const char* layers, int T) {
    MambaModel m;
    mamba_build(&m, pattern_config(layers, 23, 16), 1, T, false);
    mamba_init_params(&m, 5);
    jitter_params(&m, 6);
    Rng r; rng_seed(&r, 9);
    std::vector<int> tok;
    random_tokens(&tok, T, m.cfg.vocab_size, &r);
    mamba_forward(&m, tok.data(), nullptr, 1, T);
    std::vector<float> parallel(m.logits, m.logits + (size_t)T * m.cfg.vocab_size);
    MambaStepState s;
    mamba_step_init(&s, &m, m.params.params);
    std::vector<float> recurrent(parallel.size());
    for (int t = 0; t < T; t++) mamba_step(&s, tok[t], recurrent.data() + (size_t)t * m.cfg.vocab_size);
    char name[96]; snprintf(name, sizeof name, "%s: recurrent step == parallel forward, T=%d", layers, T);
    check_close(name, recurrent.data(), parallel.data(), parallel.size(), 1e-5);
    // greedy generation continues the parallel argmax
    std::vector<int> prompt(tok.begin(), tok.begin() + T / 2);
    std::vector<int> gen = mamba_generate(&m, prompt, 1, 0.0f, 0, 1);
    const float* row = parallel.data() + (size_t)(T / 2 - 1) * m.cfg.vocab_size;
    int argmax = (int)(std::max_element(row, row + m.cfg.vocab_size) - row);
    snprintf(name, sizeof name, "%s: greedy generation == the parallel argmax", layers);
    report(gen.size() == 1 && gen[0] == argmax, name, "%d vs %d", gen.empty() ? -1 : gen[0], argmax);
    mamba_free(&m);
}

static double tensor_std(const MambaModel& m, const std::string& name) {
    int i = params_find(&m.params, name);
    if (i < 0) return -1;
    const ParamTensor& t = m.params.tensors[i];
    double s = 0, s2 = 0;
    for (size_t j = 0; j < t.numel; j++) { double x = m.params.params[t.offset + j]; s += x; s2 += x * x; }
    double mean = s / t.numel;
    return sqrt(s2 / t.numel - mean * mean);
}

static double tensor_max_abs(const MambaModel& m, const std::string& name) {
    int i = params_find(&m.params, name);
    if (i < 0) return -1;
    const ParamTensor& t = m.params.tensors[i];
    double mx = 0;
    for (size_t j = 0; j < t.numel; j++) mx = std::max(mx, (double)fabsf(m.params.params[t.offset + j]));
    return mx;
}

static void test_init_and_names() {
    // wide enough for the std to be measured to a few percent
    MambaConfig c = pattern_config("M2,A,F,M1", 64, 128);
    MambaModel m;
    mamba_build(&m, c, 1, 4, false);
    mamba_init_params(&m, 3);
    double branch = 1.0 / sqrt(4.0);
    auto near = [](double got, double want) { return fabs(got - want) < 0.05 * want; };
    double s;
    s = tensor_std(m, "layers.1.attn.qkv.weight");     report(near(s, 0.02), "init: attention qkv std 0.02", "%g", s);
    s = tensor_std(m, "layers.1.attn.out_proj.weight"); report(near(s, 0.02 * branch), "init: attention out_proj std 0.02/sqrt(n_layer)", "%g", s);
    s = tensor_std(m, "layers.2.mlp.fc.weight");       report(near(s, 0.02), "init: MLP fc std 0.02", "%g", s);
    s = tensor_std(m, "layers.2.mlp.fc_proj.weight");  report(near(s, 0.02 * branch), "init: MLP fc_proj std 0.02/sqrt(n_layer)", "%g", s);
    // M2's out_proj: U(+-1/sqrt(E)) times the branch scale (its max is just below the bound)
    double bound = 1.0 / sqrt((double)c.expand * c.d_model) * branch;
    s = tensor_max_abs(m, "layers.0.mixer.out_proj.weight");
    report(s <= bound && s > 0.98 * bound, "init: M2 out_proj U(+-1/sqrt(E)/sqrt(n_layer))", "max %g bound %g", s, bound);
    bool ones = true;
    for (int l = 0; l < 4; l++) {
        int i = params_find(&m.params, "layers." + std::to_string(l) + ".norm.weight");
        for (size_t j = 0; i >= 0 && j < m.params.tensors[i].numel; j++) ones &= m.params.params[m.params.tensors[i].offset + j] == 1.0f;
        ones &= i >= 0;
    }
    report(ones, "init: every layer's pre-norm weight is 1");
    report(params_find(&m.params, "position.weight") < 0, "no position table when the pattern has Mamba layers");
    mamba_free(&m);

    MambaConfig t = pattern_config("A,F", 64, 128);
    mamba_build(&m, t, 2, 40, false);
    mamba_init_params(&m, 4);
    s = tensor_std(m, "position.weight");
    report(near(s, 0.02) && m.cfg.max_seq == 40, "init: a pure transformer's positions N(0, 0.02), max_seq = the built T", "%g %d", s, m.cfg.max_seq);
    // parameter count: V*D + max_seq*D + 2 norms + attention 4D^2 + MLP 2*mult*D^2 + final norm
    size_t D = 128, want = 64 * D + 40 * D + 2 * D + 4 * D * D + 2 * 2 * D * D + D;
    report(m.params.num_params == want, "parameter count of A,F", "%zu vs %zu", m.params.num_params, want);
    mamba_free(&m);
}

// the model's loss is unchanged by a save and load (names and shapes line up)
static void test_checkpoint_roundtrip() {
    MambaConfig c = pattern_config("M1,M2,A,F");
    MambaModel a, b;
    mamba_build(&a, c, 2, 6, false);
    mamba_init_params(&a, 11);
    jitter_params(&a, 12);
    const char* path = "/tmp/test_hybrid.ckpt";
    TrainState st = {3, 0, 0};
    checkpoint_save(path, "mamba", mamba_config_kv(a.cfg), &a.params, st);
    MambaConfig back = mamba_config_from_kv(checkpoint_read_info(path).config, path);
    mamba_build(&b, back, 2, 6, false);
    checkpoint_load(path, "mamba", mamba_config_kv(b.cfg), &b.params);
    Rng r; rng_seed(&r, 5);
    std::vector<int> tok, tgt;
    random_tokens(&tok, 12, c.vocab_size, &r); random_tokens(&tgt, 12, c.vocab_size, &r);
    float la = mamba_forward(&a, tok.data(), tgt.data(), 2, 6), lb = mamba_forward(&b, tok.data(), tgt.data(), 2, 6);
    report(la == lb, "hybrid checkpoint: save, config from the file, load: the same loss", "%g vs %g", la, lb);
    remove(path);
    mamba_free(&a); mamba_free(&b);
}

int main() {
    test_parse();
    test_config_kv();
    model_gradient_check(pattern_config("M1,M2,A,F"), 2, 7, "M1,M2,A,F");
    model_gradient_check(pattern_config("F,A,M2"), 1, 10, "F,A,M2");
    model_gradient_check(pattern_config("A,F,A"), 2, 5, "A,F,A");  // learned positions
    test_recurrent_matches_parallel("M2,A,F,M1", 9);
    test_recurrent_matches_parallel("A,F,A", 11);
    test_init_and_names();
    test_checkpoint_roundtrip();
    model_forward_train_check(pattern_config("M1,M2,A,F"), 2, 7, false, "M1,M2,A,F");
    model_scratch_poison_check(pattern_config("M1,M2,A,F,M1"), 2, 9, false, false, "M1,M2,A,F,M1");
    model_recompute_check(pattern_config("M1,M2,A,F,M1"), 2, 9, false, false, "M1,M2,A,F,M1");
    return test_summary();
}
