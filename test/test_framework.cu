// test_framework.cu: the shared plumbing every trainer builds on, and the
// rules it encodes. Each test fails when its rule is broken:
//   - parameter store: layout groups, frozen tensors without grads/moments,
//     an inference-only store, AdamW touching only what it should
//   - weight-decay groups of the Mamba LM (names and the update itself)
//   - the Mamba LM's initialisation, tensor by tensor
//   - LR schedule: warmup, cosine, floor
//   - sampler: greedy, temperature -> 0, top-k, the sampled distribution
//   - checkpoints: bit-exact round trip, and every mismatch named
//   - JSONL log: NaN as null, exact floats, resume drops what came after
#include "../src/checkpoint.h"
#include "../src/logger.h"
#include "../src/mamba_model.h"
#include "../src/sampler.h"
#include "../src/schedule.h"
#include "test_util.h"

static std::string tmp_dir() {
    static std::string dir;
    if (dir.empty()) {
        char tmpl[] = "/tmp/test_framework_XXXXXX";
        if (!mkdtemp(tmpl)) FATAL("mkdtemp failed");
        dir = tmpl;
    }
    return dir;
}

// ---------------------------------------------------------------------------
// parameter store

static void test_store_layout_and_frozen() {
    ParamStore ps; params_init(&ps);
    params_set_prefix(&ps, "vision.");
    int a = params_add(&ps, "w", {3, 4}, true);
    int b = params_add(&ps, "bias", {5}, false);
    params_set_prefix(&ps, "lm.");
    int c = params_add(&ps, "w", {2, 2}, true);
    int d = params_add(&ps, "norm", {7}, false);
    report(ps.tensors[a].name == "vision.w" && ps.tensors[c].name == "lm.w", "store: names carry the prefix");
    int frozen = params_set_trainable(&ps, "vision.", false);
    report(frozen == 2, "store: freezing by prefix matches 2 tensors", "matched %d", frozen);
    params_allocate(&ps, false, true);
    report(ps.num_params == 12 + 5 + 4 + 7, "store: every tensor has parameters", "%zu", ps.num_params);
    report(ps.num_trainable == 4 + 7, "store: grads and moments only for trainable tensors", "%zu", ps.num_trainable);
    report(ps.num_decay == 4, "store: decayed trainable tensors come first", "%zu", ps.num_decay);
    report(param_grad(&ps, a) == nullptr && param_grad(&ps, b) == nullptr, "store: a frozen tensor has no gradient view");
    report(param_grad(&ps, c) == ps.grads + ps.tensors[c].offset && param_grad(&ps, d) != nullptr, "store: trainable tensors do");
    // AdamW with nonzero gradients: the frozen tensors stay bit-identical
    Rng r; rng_seed(&r, 1);
    fill_uniform(ps.params, ps.num_params, &r, -1, 1);
    fill_uniform(ps.grads, ps.num_trainable, &r, -1, 1);
    std::vector<float> before(ps.params, ps.params + ps.num_params);
    params_adamw_step(&ps, AdamWConfig{0.9f, 0.95f, 1e-8f, 0.1f}, 0.01f, 1, 1.0f);
    bool frozen_same = true, trained_moved = true;
    for (int i : {a, b}) frozen_same &= memcmp(param_data(&ps, i), before.data() + ps.tensors[i].offset, ps.tensors[i].numel * 4) == 0;
    for (int i : {c, d}) trained_moved &= memcmp(param_data(&ps, i), before.data() + ps.tensors[i].offset, ps.tensors[i].numel * 4) != 0;
    report(frozen_same, "store: AdamW leaves frozen tensors bit-identical");
    report(trained_moved, "store: AdamW updates the trainable tensors");
    params_free(&ps);

    params_init(&ps);
    params_add(&ps, "w", {3, 3}, true);
    params_allocate(&ps, false, false);
    report(ps.grads == nullptr && ps.adam_m == nullptr && ps.adam_v == nullptr && params_grad_and_moment_bytes(&ps) == 0,
           "store: an inference-only store allocates no grads or moments");
    params_free(&ps);
}

static MambaConfig mid_config() {
    MambaConfig c = {300, 64, 4, 16, 4, 2, 0, 0};  // E = 128, R = 4
    mamba_config_derive(&c);
    return c;
}

// Mamba's decay groups: matrices decay; norms, biases, A_log and D do not
static void test_decay_groups() {
    MambaModel m; mamba_build(&m, mid_config(), 1, 4, false);
    mamba_init_params(&m, 5);
    ParamStore& ps = m.params;
    auto ends_with = [](const std::string& s, const char* suf) { size_t n = strlen(suf); return s.size() >= n && s.compare(s.size() - n, n, suf) == 0; };
    int wrong = 0;
    for (const ParamTensor& t : ps.tensors) {
        bool should = ends_with(t.name, "embedding.weight") || ends_with(t.name, "in_proj.weight") || ends_with(t.name, "conv1d.weight") ||
                      ends_with(t.name, "x_proj.weight") || ends_with(t.name, "dt_proj.weight") || ends_with(t.name, "out_proj.weight");
        if (t.decay != should) { wrong++; printf("  %s: decay %d, expected %d\n", t.name.c_str(), t.decay, should); }
    }
    report(wrong == 0, "decay groups: matrices decay; norms, biases, A_log, D do not", "%d tensors wrong", wrong);
    // the update itself: zero gradients, so only the decay moves a parameter
    std::vector<float> before(ps.params, ps.params + ps.num_params);
    params_zero_grad(&ps);
    float lr = 0.1f, wd = 0.5f;
    params_adamw_step(&ps, AdamWConfig{0.9f, 0.95f, 1e-8f, wd}, lr, 1, 1.0f);
    double worst_decayed = 0; bool others_same = true;
    for (const ParamTensor& t : ps.tensors)
        for (size_t j = 0; j < t.numel; j++) {
            float b = before[t.offset + j], a = ps.params[t.offset + j];
            if (t.decay) worst_decayed = fmax(worst_decayed, fabs(a - b * (1 - lr * wd)));
            else others_same &= a == b;
        }
    report(worst_decayed < 1e-6, "decay groups: AdamW shrinks decayed tensors by lr*wd", "worst %.2e", worst_decayed);
    report(others_same, "decay groups: AdamW leaves non-decayed tensors alone (zero gradient)");
    mamba_free(&m);
}

// ---------------------------------------------------------------------------
// initialisation of the Mamba LM, as the reference Mamba

typedef struct { double min, max, mean, std, maxabs; } Stats;
static Stats stats(const float* x, size_t n) {
    Stats s = {INFINITY, -INFINITY, 0, 0, 0};
    for (size_t i = 0; i < n; i++) { s.min = fmin(s.min, x[i]); s.max = fmax(s.max, x[i]); s.mean += x[i]; s.maxabs = fmax(s.maxabs, fabs(x[i])); }
    s.mean /= n;
    for (size_t i = 0; i < n; i++) s.std += (x[i] - s.mean) * (x[i] - s.mean);
    s.std = sqrt(s.std / n);
    return s;
}

// U(-bound, bound): inside the bound, reaching near it, mean 0, std bound/sqrt(3)
static void check_uniform(const char* what, const float* x, size_t n, double bound) {
    Stats s = stats(x, n);
    bool ok = s.maxabs <= bound * (1 + 1e-6) && s.maxabs > 0.9 * bound && fabs(s.mean) < 0.1 * bound &&
              fabs(s.std - bound / sqrt(3.0)) < 0.1 * bound / sqrt(3.0);
    char name[128]; snprintf(name, sizeof name, "init: %s ~ U(+-%.4g)", what, bound);
    report(ok, name, "max|x| %.4g mean %.3g std %.4g (want %.4g)", s.maxabs, s.mean, s.std, bound / sqrt(3.0));
}

static void test_init_rules() {
    MambaConfig c = mid_config();
    MambaModel m; mamba_build(&m, c, 1, 4, false);
    mamba_init_params(&m, 7);
    int D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank, L = c.n_layer;
    const ParamStore& ps = m.params;
    auto T = [&](const std::string& name) { int i = params_find(&ps, name); if (i < 0) FATAL("no %s", name.c_str()); return param_data(&ps, i); };
    Stats emb = stats(T("embedding.weight"), (size_t)c.vocab_size * D);
    report(fabs(emb.std - 0.02) < 0.001 && fabs(emb.mean) < 0.001, "init: embedding ~ N(0, 0.02)", "mean %.4g std %.4g", emb.mean, emb.std);
    bool A_ok = true, D_ok = true, norm_ok = true;
    std::vector<float> dts, all_conv_b;
    for (int l = 0; l < L; l++) {
        std::string p = "layers." + std::to_string(l) + ".";
        const float* A_log = T(p + "A_log");
        for (int e = 0; e < E; e++) for (int n = 0; n < N; n++) A_ok &= A_log[e * N + n] == logf((float)(n + 1));
        for (int e = 0; e < E; e++) D_ok &= T(p + "D")[e] == 1.0f;
        for (int i = 0; i < D; i++) norm_ok &= T(p + "norm.weight")[i] == 1.0f;
        const float* dtb = T(p + "dt_proj.bias");
        for (int e = 0; e < E; e++) dts.push_back(softplus_f(dtb[e]));
        const float* cb = T(p + "conv1d.bias");
        all_conv_b.insert(all_conv_b.end(), cb, cb + E);
        if (l == 0) {
            check_uniform("in_proj.weight", T(p + "in_proj.weight"), (size_t)2 * E * D, 1 / sqrt((double)D));
            check_uniform("conv1d.weight", T(p + "conv1d.weight"), (size_t)E * K, 1 / sqrt((double)K));
            check_uniform("x_proj.weight", T(p + "x_proj.weight"), (size_t)(R + 2 * N) * E, 1 / sqrt((double)E));
            check_uniform("dt_proj.weight", T(p + "dt_proj.weight"), (size_t)E * R, 1 / sqrt((double)R));
            check_uniform("out_proj.weight (1/sqrt(E n_layer))", T(p + "out_proj.weight"), (size_t)D * E, 1 / sqrt((double)E * L));
        }
    }
    for (int i = 0; i < D; i++) norm_ok &= T("norm_f.weight")[i] == 1.0f;
    report(A_ok, "init: A_log[e, n] = log(n + 1) (S4D-real)");
    report(D_ok, "init: D = 1");
    report(norm_ok, "init: RMSNorm weights = 1");
    check_uniform("conv1d.bias (PyTorch's default, not zero)", all_conv_b.data(), all_conv_b.size(), 1 / sqrt((double)K));
    // dt = softplus(dt bias) is log-uniform in [1e-3, 0.1]
    Stats s = stats(dts.data(), dts.size());
    double mean_log = 0;
    for (float d : dts) mean_log += log(d);
    mean_log /= dts.size();
    report(s.min >= 1e-3 * 0.999 && s.max <= 0.1 * 1.001 && s.min < 1.2e-3 && s.max > 0.09, "init: softplus(dt bias) in [1e-3, 0.1]",
           "min %.4g max %.4g", s.min, s.max);
    double want = 0.5 * (log(1e-3) + log(0.1));
    report(fabs(mean_log - want) < 0.15, "init: softplus(dt bias) log-uniform (mean log dt)", "%.3f, want %.3f", mean_log, want);
    mamba_free(&m);
}

// ---------------------------------------------------------------------------
// learning-rate schedule

static void test_schedule() {
    LrSchedule s = {1.0f, 0.1f, 10, 110};
    auto near = [](float a, double b) { return fabs(a - b) < 1e-6; };
    report(near(lr_at(s, 0), 0.1) && near(lr_at(s, 4), 0.5) && near(lr_at(s, 9), 1.0), "schedule: linear warmup (step+1)/warmup",
           "%g %g %g", lr_at(s, 0), lr_at(s, 4), lr_at(s, 9));
    report(near(lr_at(s, 10), 1.0), "schedule: the peak right after warmup", "%g", lr_at(s, 10));
    report(near(lr_at(s, 60), 0.55), "schedule: cosine halfway = (peak + floor) / 2", "%g", lr_at(s, 60));
    report(near(lr_at(s, 35), 0.1 + 0.45 * (1 + cos(M_PI * 0.25))), "schedule: cosine a quarter of the way", "%g", lr_at(s, 35));
    report(near(lr_at(s, 110), 0.1) && near(lr_at(s, 500), 0.1), "schedule: the floor at and after the last step", "%g %g", lr_at(s, 110), lr_at(s, 500));
    bool monotone = true;
    for (int i = 10; i < 110; i++) monotone &= lr_at(s, i + 1) <= lr_at(s, i);
    report(monotone, "schedule: non-increasing after warmup");
    LrSchedule nowarm = {2.0f, 0.0f, 0, 10};
    report(near(lr_at(nowarm, 0), 2.0) && near(lr_at(nowarm, 10), 0.0), "schedule: no warmup, floor 0", "%g %g", lr_at(nowarm, 0), lr_at(nowarm, 10));
}

// ---------------------------------------------------------------------------
// sampler

static void test_sampler() {
    Rng r; rng_seed(&r, 3);
    std::vector<float> logits = random_vec(50, &r, -3, 3);
    int best = argmax_token(logits.data(), 50);
    report(sample_token(logits.data(), 50, 0.0f, 0, 0.7f) == best, "sampler: temperature 0 is greedy");
    // logits of LM size (|logit| ~ 20): logit / 1e-38 overflows a float
    std::vector<float> big(logits);
    for (float& x : big) x *= 7.0f;
    bool tiny = true, k1 = true;
    for (float u : {0.0f, 0.3f, 0.999f}) {
        tiny &= sample_token(big.data(), 50, 1e-38f, 0, u) == best;
        tiny &= sample_token(big.data(), 50, 1e-30f, 40, u) == best;
        k1 &= sample_token(logits.data(), 50, 1.5f, 1, u) == best;
    }
    report(tiny, "sampler: temperature -> 0 (1e-38) picks the argmax");
    report(k1, "sampler: top-k 1 picks the argmax");
    float ties[] = {1.0f, 3.0f, 3.0f, 0.5f};
    report(sample_token(ties, 4, 0.0f, 0, 0.5f) == 1, "sampler: greedy ties go to the lowest index");
    // top-k 5: only the 5 largest, each of them drawn
    std::vector<int> order(50);
    for (int i = 0; i < 50; i++) order[i] = i;
    std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
    std::vector<int> count(50, 0);
    for (int i = 0; i < 5000; i++) count[sample_token(logits.data(), 50, 2.0f, 5, (i + 0.5f) / 5000)]++;
    int outside = 0, missing = 0;
    for (int i = 0; i < 50; i++) {
        bool top = std::find(order.begin(), order.begin() + 5, i) != order.begin() + 5;
        if (!top) outside += count[i]; else missing += count[i] == 0;
    }
    report(outside == 0 && missing == 0, "sampler: top-k 5 draws only and all of the 5 largest", "outside %d, missing %d", outside, missing);
    // the distribution: p ∝ exp(logit / temperature), stratified u
    for (float temp : {1.0f, 0.5f}) {
        float l4[] = {0.0f, 1.0f, 2.0f, 3.0f};
        double z = 0, p[4];
        for (int i = 0; i < 4; i++) z += exp(l4[i] / temp);
        for (int i = 0; i < 4; i++) p[i] = exp(l4[i] / temp) / z;
        int n = 20000, c4[4] = {0, 0, 0, 0};
        for (int i = 0; i < n; i++) c4[sample_token(l4, 4, temp, 0, (i + 0.5f) / n)]++;
        double worst = 0;
        for (int i = 0; i < 4; i++) worst = fmax(worst, fabs(c4[i] / (double)n - p[i]));
        char name[96]; snprintf(name, sizeof name, "sampler: frequencies = softmax(logits / %.1f)", temp);
        report(worst < 1e-3, name, "worst gap %.2e", worst);
    }
}

// ---------------------------------------------------------------------------
// checkpoints

static void fill_store(ParamStore* ps, uint64_t seed) {
    Rng r; rng_seed(&r, seed);
    fill_uniform(ps->params, ps->num_params, &r, -1, 1);
    if (ps->with_grads) { fill_uniform(ps->adam_m, ps->num_trainable, &r, -1, 1); fill_uniform(ps->adam_v, ps->num_trainable, &r, 0, 1); }
}

// declares a tensor shaped like t (1-D or 2-D, as the Mamba LM's)
static void add_like(ParamStore* ps, const ParamTensor& t) {
    if (t.ndim == 1) params_add(ps, t.name, {t.shape[0]}, t.decay);
    else params_add(ps, t.name, {t.shape[0], t.shape[1]}, t.decay);
}

static void test_checkpoint() {
    std::string path = tmp_dir() + "/m.ckpt";
    MambaConfig c = {20, 8, 2, 4, 4, 2, 0, 0}; mamba_config_derive(&c);
    MambaModel a; mamba_build(&a, c, 1, 3, false);
    fill_store(&a.params, 11);
    TrainState st = {123, 456789, 0xDEADBEEFCAFEull};
    checkpoint_save(path.c_str(), "mamba", mamba_config_kv(c), &a.params, st);
    report(access((path + ".tmp").c_str(), F_OK) != 0, "checkpoint: no .tmp left after a save");
    MambaModel b; mamba_build(&b, c, 1, 3, false);
    TrainState got = checkpoint_load(path.c_str(), "mamba", mamba_config_kv(c), &b.params);
    const ParamStore &pa = a.params, &pb = b.params;
    bool same = memcmp(pa.params, pb.params, pa.num_params * 4) == 0 && memcmp(pa.adam_m, pb.adam_m, pa.num_trainable * 4) == 0 &&
                memcmp(pa.adam_v, pb.adam_v, pa.num_trainable * 4) == 0;
    report(same, "checkpoint: params and AdamW moments round-trip bit-exactly");
    report(got.step == st.step && got.data_pos == st.data_pos && got.rng == st.rng, "checkpoint: train state round-trips");
    CheckpointInfo info = checkpoint_read_info(path.c_str());
    report(info.kind == "mamba" && config_get(info.config, "d_model") && *config_get(info.config, "d_model") == "8",
           "checkpoint: the header names the kind and the config");
    // an inference-only load (no moments) into a store without grads
    MambaModel inf; mamba_build(&inf, c, 1, 1, false, false);
    checkpoint_load(path.c_str(), "mamba", mamba_config_kv(c), &inf.params, false);
    report(memcmp(inf.params.params, pa.params, pa.num_params * 4) == 0, "checkpoint: loads into an inference-only model");
    mamba_free(&inf);

    // every mismatch is an error that names it
    MambaConfig wide = c; wide.d_model = 12; mamba_config_derive(&wide);
    expect_fatal("checkpoint: config mismatch names the key", "d_model=8 but this run has d_model=12", [&] {
        MambaModel w; mamba_build(&w, wide, 1, 1, false);
        checkpoint_load(path.c_str(), "mamba", mamba_config_kv(w.cfg), &w.params);
    });
    expect_fatal("checkpoint: another model kind", "holds a mamba model", [&] {
        checkpoint_load(path.c_str(), "vlm", mamba_config_kv(c), &b.params);
    });
    expect_fatal("checkpoint: a missing tensor is named", "has no tensor extra.weight", [&] {
        ParamStore ps; params_init(&ps);
        for (const ParamTensor& t : pa.tensors) add_like(&ps, t);
        params_add(&ps, "extra.weight", {3}, true);
        params_allocate(&ps, false, true);
        checkpoint_load(path.c_str(), "mamba", mamba_config_kv(c), &ps);
    });
    expect_fatal("checkpoint: a mis-shaped tensor is named", "has shape 20x8, the model's is 160", [&] {
        ParamStore ps; params_init(&ps);
        for (const ParamTensor& t : pa.tensors) params_add(&ps, t.name, {(int)t.numel}, t.decay);
        params_allocate(&ps, false, true);
        checkpoint_load(path.c_str(), "mamba", mamba_config_kv(c), &ps);
    });
    expect_fatal("checkpoint: a tensor the model lacks is named", "has a tensor norm_f.weight that the model does not have", [&] {
        ParamStore ps; params_init(&ps);
        for (const ParamTensor& t : pa.tensors)
            if (t.name != "norm_f.weight") add_like(&ps, t);
        params_allocate(&ps, false, true);
        checkpoint_load(path.c_str(), "mamba", mamba_config_kv(c), &ps);
    });
    // damaged files
    std::vector<char> bytes;
    { FILE* f = fopen(path.c_str(), "rb"); int ch; while ((ch = fgetc(f)) != EOF) bytes.push_back((char)ch); fclose(f); }
    auto write = [&](const std::string& p, size_t n) { FILE* f = fopen(p.c_str(), "wb"); fwrite(bytes.data(), 1, n, f); fclose(f); };
    std::string trunc = tmp_dir() + "/trunc.ckpt";
    write(trunc, bytes.size() - 7);
    expect_fatal("checkpoint: truncated data", "truncated", [&] { checkpoint_load(trunc.c_str(), "mamba", mamba_config_kv(c), &b.params); });
    write(trunc, 40);
    expect_fatal("checkpoint: truncated header", "truncated", [&] { checkpoint_read_info(trunc.c_str()); });
    std::string v1 = tmp_dir() + "/v1.ckpt";
    { int32_t h[64] = {CKPT_MAGIC, 1}; FILE* f = fopen(v1.c_str(), "wb"); fwrite(h, 4, 64, f); fclose(f); }
    expect_fatal("checkpoint: version 1 asks for a retrain", "retrain", [&] { checkpoint_read_info(v1.c_str()); });
    expect_fatal("checkpoint: missing file", "cannot open checkpoint", [&] { checkpoint_read_info((tmp_dir() + "/none").c_str()); });
    mamba_free(&a); mamba_free(&b);
}

// ---------------------------------------------------------------------------
// JSONL log

static std::vector<std::string> read_lines(const std::string& path) {
    std::vector<std::string> lines; std::string l; int ch;
    FILE* f = fopen(path.c_str(), "r");
    while (f && (ch = fgetc(f)) != EOF) { if (ch == '\n') { lines.push_back(l); l.clear(); } else l += (char)ch; }
    if (f) fclose(f);
    if (!l.empty()) lines.push_back(l);
    return lines;
}

static void test_logger() {
    std::string line = JsonLine().integer("step", 3).num("loss", NAN).num("g", INFINITY).num("x", 0.1f).text("s", "a\"b\n").str();
    report(line == "{\"step\": 3, \"loss\": null, \"g\": null, \"x\": 0.100000001, \"s\": \"a\\\"b\\n\"}", "log: NaN and inf as null, strings escaped",
           "%s", line.c_str());
    float f = 0.123456789f;
    std::string num = JsonLine().num("v", f).str();
    float back = (float)strtod(num.c_str() + 6, nullptr);
    report(back == f, "log: a float survives the round trip exactly", "%s", num.c_str());
    // resume at step 4: keep training lines <= 4 and evaluations < 4; drop a torn last line
    std::string path = tmp_dir() + "/log.jsonl";
    FILE* fp = fopen(path.c_str(), "w");
    fprintf(fp, "{\"step\": 0, \"val_loss\": 5}\n");
    for (int s = 1; s <= 6; s++) {
        fprintf(fp, "{\"step\": %d, \"loss\": %d}\n", s, 10 - s);
        if (s % 2 == 0) fprintf(fp, "{\"step\": %d, \"val_loss\": %d}\n", s, 5 - s / 2);
    }
    fprintf(fp, "{\"step\": 7, \"lo");
    fclose(fp);
    Logger lg; logger_open(&lg, path, 4);
    logger_write(&lg, JsonLine().integer("step", 4).num("val_loss", 3));
    logger_close(&lg);
    std::vector<std::string> lines = read_lines(path);
    std::vector<std::string> want = {"{\"step\": 0, \"val_loss\": 5}", "{\"step\": 1, \"loss\": 9}", "{\"step\": 2, \"loss\": 8}",
                                     "{\"step\": 2, \"val_loss\": 4}", "{\"step\": 3, \"loss\": 7}", "{\"step\": 4, \"loss\": 6}",
                                     "{\"step\": 4, \"val_loss\": 3}"};
    report(lines == want, "log: resume keeps the lines up to the checkpoint, once", "%zu lines", lines.size());
    Logger fresh; logger_open(&fresh, path, -1); logger_close(&fresh);
    report(read_lines(path).empty(), "log: a fresh run starts an empty log");
}

int main() {
    test_store_layout_and_frozen();
    test_decay_groups();
    test_init_rules();
    test_schedule();
    test_sampler();
    test_checkpoint();
    test_logger();
    return test_summary();
}
