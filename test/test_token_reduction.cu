// test_token_reduction.cu: visual-token reduction (src/token_reduction.h), the VLM with
// fewer image tokens (src/vlm_model.h) and the profiler's FLOP formulas and timing
// (src/vlm_profile.h), on the CPU reference.
//   - pool against a hand computation on known grids (even, odd, one cell)
//   - the counts P'; random / uniform selections: the right count, unique, increasing,
//     in range, deterministic for a (seed, key), the strided grid, the identity at P' = P
//   - gather = a plain copy of the selected rows; bad ratios are refused
//   - a VLM forward with each reduction == the forward whose features were reduced by
//     hand; the LM sequence with P' image rows; R = 0 (and P' = P) == the unreduced model
//     bit for bit; KV-cache generation == the recomputed forward with a reduction; the
//     batched decode step == one sequence at a time; the backward refuses a reduction
//   - the FLOP formulas == a brute-force count of every multiply-add for tiny configs
//   - vlm_profile on the CPU: every component timed, the tokens it produces == generation's;
//     the CSV and JSON it writes
//   - fastv: the ranking == the head mean of the attention forward's probabilities; the pruned
//     forward == the unreduced model's block-L' input with the rows picked by hand (a direct
//     softmax), through the rest of the GPT; R = 0 == unreduced; KV-cache generation == the
//     recomputed pruned forward (layers 0, 1, 2); its FLOPs == brute force; bad layer, backward
//   - salient: the saliency by hand, the round robin over the cells, the forward == the
//     hand-selected features' forward, R = 0 == unreduced, generation == recomputed
#include "../src/vlm_profile.h"
#include "../src/json.h"
#include "test_util.h"
#include "vlm_test_util.h"

// ---------------------------------------------------------------------------
// the ops

static void test_pool_by_hand() {
    // 4x4 grid, C = 2: in[p][c] = p + 100 c; windows {0,1,4,5} {2,3,6,7} {8,9,12,13} {10,11,14,15}
    int gh = 4, gw = 4, C = 2, B = 2;
    std::vector<float> in((size_t)B * gh * gw * C), out((size_t)B * 4 * C, -1.0f);
    for (int b = 0; b < B; b++)
        for (int p = 0; p < gh * gw; p++)
            for (int c = 0; c < C; c++) in[((size_t)b * gh * gw + p) * C + c] = p + 100.0f * c + 1000.0f * b;
    token_pool2x2_cpu(out.data(), in.data(), B, gh, gw, C);
    const float means[4] = {2.5f, 4.5f, 10.5f, 12.5f};  // (0+1+4+5)/4, (2+3+6+7)/4, ...
    bool ok = true;
    for (int b = 0; b < B; b++)
        for (int o = 0; o < 4; o++)
            for (int c = 0; c < C; c++) ok &= out[((size_t)b * 4 + o) * C + c] == means[o] + 100.0f * c + 1000.0f * b;
    report(ok, "pool 2x2: a 4x4 grid == the hand computation (two images, two channels)");
    // odd 3x3 grid: partial windows average what they hold: {0,1,3,4} {2,5} {6,7} {8}
    std::vector<float> in3(9), out3(4, -1.0f);
    for (int p = 0; p < 9; p++) in3[p] = (float)p * p;  // 0 1 4 9 16 25 36 49 64
    token_pool2x2_cpu(out3.data(), in3.data(), 1, 3, 3, 1);
    const float want3[4] = {(0 + 1 + 9 + 16) / 4.0f, (4 + 25) / 2.0f, (36 + 49) / 2.0f, 64.0f};
    report(memcmp(out3.data(), want3, sizeof want3) == 0, "pool 2x2: an odd 3x3 grid (partial windows average their cells)",
           "%g %g %g %g", out3[0], out3[1], out3[2], out3[3]);
    // 2x3 grid (non-square): {0,1,3,4} {2,5}
    std::vector<float> in23 = {1, 2, 3, 4, 5, 6}, out23(2, -1.0f);
    token_pool2x2_cpu(out23.data(), in23.data(), 1, 2, 3, 1);
    report(out23[0] == 3.0f && out23[1] == 4.5f, "pool 2x2: a 2x3 grid", "%g %g", out23[0], out23[1]);
    float one = 7.0f, o1 = 0;
    token_pool2x2_cpu(&o1, &one, 1, 1, 1, 1);
    report(o1 == 7.0f, "pool 2x2: a 1x1 grid is the identity");
}

static void test_counts() {
    auto count = [](ReduceMethod m, float r, int gh, int gw) { return token_reduction_count(TokenReduction{m, r, 0}, gh, gw); };
    bool ok = count(REDUCE_NONE, 0, 8, 8) == 64 && count(REDUCE_RANDOM, 0, 8, 8) == 64 && count(REDUCE_UNIFORM, 0.75f, 8, 8) == 16 &&
              count(REDUCE_RANDOM, 0.5f, 8, 8) == 32 && count(REDUCE_UNIFORM, 0.9f, 8, 8) == 6 &&  // round(6.4)
              count(REDUCE_RANDOM, 0.99f, 8, 8) == 1 && count(REDUCE_RANDOM, 0.9f, 2, 2) == 1 &&  // round(0.4) = 0 -> at least 1
              count(REDUCE_UNIFORM, 0.01f, 4, 4) == 16 &&                                          // round(15.84)
              count(REDUCE_POOL, 0.75f, 8, 8) == 16 && count(REDUCE_POOL, 0.75f, 3, 3) == 4 && count(REDUCE_POOL, 0.75f, 1, 1) == 1 &&
              count(REDUCE_POOL, 0.0f, 8, 8) == 64;
    report(ok, "counts: P' = max(1, round(P (1 - R))); pool ceil(gh/2) ceil(gw/2); R = 0 keeps all");
    ReduceMethod m;
    report(token_reduction_parse("uniform", &m) && m == REDUCE_UNIFORM && !token_reduction_parse("Pool", &m), "parse the method names");
    expect_fatal("pool refuses a ratio other than 0.75", "ratio 0.75 only", [] { token_reduction_count(TokenReduction{REDUCE_POOL, 0.5f, 0}, 8, 8); });
    expect_fatal("a ratio of 1 is refused", "in [0, 1)", [] { token_reduction_count(TokenReduction{REDUCE_RANDOM, 1.0f, 0}, 8, 8); });
    expect_fatal("a negative ratio is refused", "in [0, 1)", [] { token_reduction_count(TokenReduction{REDUCE_UNIFORM, -0.25f, 0}, 8, 8); });
}

// count, distinct, strictly increasing, in range
static bool valid_selection(const std::vector<int>& idx, int k, int P) {
    if ((int)idx.size() != k) return false;
    for (int i = 0; i < k; i++) {
        if (idx[i] < 0 || idx[i] >= P) return false;
        if (i && idx[i] <= idx[i - 1]) return false;
    }
    return true;
}

static void test_selections() {
    bool ok_u = true, ok_r = true;
    int cases = 0;
    const int grids[][2] = {{8, 8}, {4, 4}, {5, 7}, {7, 3}, {1, 6}, {6, 1}, {1, 1}, {3, 3}};
    for (auto& g : grids) {
        int P = g[0] * g[1];
        for (int k = 1; k <= P; k++) {
            std::vector<int> u(k), r(k);
            token_select_uniform(u.data(), g[0], g[1], k);
            token_select_random(r.data(), P, k, 1337, 5 + k);
            ok_u &= valid_selection(u, k, P);
            ok_r &= valid_selection(r, k, P);
            cases++;
        }
    }
    report(ok_u, "uniform: every count of 8 grids: k indices, distinct, in raster order, in range", "%d cases", cases);
    report(ok_r, "random: every count of 8 grids: k indices, distinct, in raster order, in range", "%d cases", cases);
    std::vector<int> id(64), all(64);
    for (int i = 0; i < 64; i++) id[i] = i;
    token_select_uniform(all.data(), 8, 8, 64);
    std::vector<int> rall(64);
    token_select_random(rall.data(), 64, 64, 3, 4);
    report(all == id && rall == id, "uniform and random keep everything, in order, at P' = P");
    // P/4 of an even grid: the stride-2 grid (rows and columns 1, 3, 5, 7)
    std::vector<int> s(16), want;
    token_select_uniform(s.data(), 8, 8, 16);
    for (int y = 1; y < 8; y += 2)
        for (int x = 1; x < 8; x += 2) want.push_back(y * 8 + x);
    report(s == want, "uniform: P/4 of an 8x8 grid is the stride-2 grid");
    // every row gets its share: 32 of 8x8 spread over 6 rows, no row empty or overfull
    std::vector<int> h(32), per_row(8, 0);
    token_select_uniform(h.data(), 8, 8, 32);
    for (int i : h) per_row[i / 8]++;
    int rows = 0, most = 0;
    for (int n : per_row) { rows += n > 0; most = std::max(most, n); }
    report(rows >= 6 && most <= 6, "uniform: 32 of 8x8 spread over the rows", "%d rows, at most %d in one", rows, most);
    // random: deterministic in (seed, key), different for another key or seed
    std::vector<int> a(16), b(16), c(16), d(16);
    token_select_random(a.data(), 64, 16, 1337, 9);
    token_select_random(b.data(), 64, 16, 1337, 9);
    token_select_random(c.data(), 64, 16, 1337, 10);
    token_select_random(d.data(), 64, 16, 1338, 9);
    report(a == b, "random: the same (seed, image key) gives the same subset");
    report(a != c && a != d, "random: another image key or seed gives another subset");
    // and it is uniform: over many keys, every patch is kept about k/P of the time
    std::vector<int> hits(64, 0);
    int draws = 4000;
    for (int key = 0; key < draws; key++) {
        token_select_random(a.data(), 64, 16, 7, key);
        for (int i : a) hits[i]++;
    }
    int lo = *std::min_element(hits.begin(), hits.end()), hi = *std::max_element(hits.begin(), hits.end());
    report(lo > 850 && hi < 1150, "random: every patch kept about a quarter of the time over 4000 images", "hits in [%d, %d], expect 1000", lo, hi);
    // token_select: one row per image key (random), the same row for all (uniform)
    std::vector<int> rows2(2 * 8), keys = {9, 9};
    token_select(rows2.data(), TokenReduction{REDUCE_RANDOM, 0.5f, 1337}, 4, 4, 8, 2, keys.data());
    report(std::equal(rows2.begin(), rows2.begin() + 8, rows2.begin() + 8), "token_select: rows of the same image key keep the same patches");
}

static void test_gather() {
    Rng r; rng_seed(&r, 1);
    int B = 3, P = 10, K = 4, C = 5;
    std::vector<float> in = random_vec((size_t)B * P * C, &r), out((size_t)B * K * C, NAN);
    std::vector<int> idx((size_t)B * K);
    for (int b = 0; b < B; b++) token_select_random(idx.data() + b * K, P, K, 3, b);
    token_gather_cpu(out.data(), in.data(), idx.data(), B, P, K, C);
    bool ok = true;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < K; i++)
            for (int c = 0; c < C; c++) ok &= out[((size_t)b * K + i) * C + c] == in[((size_t)b * P + idx[b * K + i]) * C + c];
    report(ok, "gather: out[b, i] = in[b, idx[b, i]]");
}

// ---------------------------------------------------------------------------
// the model with fewer image tokens

static VlmConfig small_config(int proj_mlp) {
    VlmConfig c = {};
    c.image_size = 16; c.patch = 4;           // a 4x4 grid: P = 16, K = 48
    c.v_layers = 2; c.v_dim = 12; c.v_heads = 3;
    c.proj_mlp = proj_mlp;
    c.vocab = 13; c.l_layers = 2; c.l_dim = 8; c.l_heads = 2;
    c.max_text = 8;
    c.t_layers = 1; c.t_dim = 8; c.t_heads = 2; c.clip_dim = 6;
    return c;
}


static void build(VlmModel* m, const VlmConfig& c, int B, uint64_t seed) {
    vlm_build(m, c, B, false, false);
    vlm_init_params(m, seed);
    Rng r; rng_seed(&r, seed + 1);
    for (size_t i = 0; i < m->params.num_params; i++) m->params.params[i] += 0.3f * (2.0f * rng_uniform(&r) - 1.0f);
}

// the reduction of the features by hand (host loops over the definitions at the top of token_reduction.h)
static std::vector<float> reduce_by_hand(const std::vector<float>& feats, const TokenReduction& red, int B, int g, int C, const int* keys,
                                         int* Pk, std::vector<int>* kept = nullptr) {
    int P = g * g;
    std::vector<float> out;
    if (red.method == REDUCE_POOL) {
        int o = (g + 1) / 2;
        *Pk = o * o;
        for (int b = 0; b < B; b++)
            for (int oy = 0; oy < o; oy++)
                for (int ox = 0; ox < o; ox++)
                    for (int c = 0; c < C; c++) {
                        float s = 0; int n = 0;
                        for (int y = 2 * oy; y < std::min(g, 2 * oy + 2); y++)
                            for (int x = 2 * ox; x < std::min(g, 2 * ox + 2); x++) { s += feats[((size_t)b * P + y * g + x) * C + c]; n++; }
                        out.push_back(s * (1.0f / n));
                    }
        return out;
    }
    *Pk = std::max(1, (int)lround(P * (1.0 - red.ratio)));
    for (int b = 0; b < B; b++) {
        std::vector<int> idx(*Pk);
        if (red.method == REDUCE_RANDOM) token_select_random(idx.data(), P, *Pk, red.seed, keys[b]);
        else token_select_uniform(idx.data(), g, g, *Pk);
        if (kept) kept->insert(kept->end(), idx.begin(), idx.end());
        for (int i : idx)
            for (int c = 0; c < C; c++) out.push_back(feats[((size_t)b * P + i) * C + c]);
    }
    return out;
}

// a reduction before the projector keeps the original positions: <bos> 0, the kept patch k at
// 1 + k (a pooled window at its top-left patch's), the text after all P image slots
static void test_reduced_positions() {
    VlmConfig c = small_config(1);  // a 4x4 grid: P = 16
    int B = 2;
    Rng r; rng_seed(&r, 31);
    Batch bt = make_batch(c, B, &r, 1);
    const TokenReduction cases[] = {{REDUCE_POOL, 0.75f, 0}, {REDUCE_RANDOM, 0.5f, 3}, {REDUCE_UNIFORM, 0.75f, 0}};
    for (const TokenReduction& red : cases) {
        VlmModel m; build(&m, c, B, 5);
        vlm_set_reduction(&m, red);
        vlm_forward(&m, bt.images.data(), bt.tokens.data(), bt.targets.data(), bt.lengths.data(), B, bt.keys.data());
        int Pi = m.Pi, P = m.P, Tl = vlm_lm_len(c, Pi);
        bool ok = (int)m.pos_index.size() == B * Tl;
        for (int b = 0; ok && b < B; b++)
            for (int t = 0; t < Tl; t++) {
                int want;
                if (t == 0) want = 0;
                else if (t <= Pi) {
                    int j = t - 1;
                    want = 1 + (red.method == REDUCE_POOL ? (j / 2) * 8 + (j % 2) * 2 : m.keep[(size_t)b * Pi + j]);
                } else want = P + (t - Pi);
                ok &= m.pos_index[(size_t)b * Tl + t] == want;
            }
        char name[120];
        snprintf(name, sizeof name, "%s R=%g: kept tokens and the text keep their original positions", REDUCE_NAMES[red.method], red.ratio);
        report(ok, name);
        vlm_free(&m);
    }
}

static void test_forward_matches_hand_reduction(int proj_mlp) {
    VlmConfig c = small_config(proj_mlp);
    int B = 3, V = c.vocab;
    Rng r; rng_seed(&r, 11);
    Batch bt = make_batch(c, B, &r, 1);
    const TokenReduction cases[] = {{REDUCE_POOL, 0.75f, 0}, {REDUCE_RANDOM, 0.5f, 77}, {REDUCE_UNIFORM, 0.75f, 0}, {REDUCE_UNIFORM, 0.3f, 0},
                                    {REDUCE_RANDOM, 0.9f, 5}};
    for (const TokenReduction& red : cases) {
        VlmModel m, ref;
        build(&m, c, B, 21); build(&ref, c, B, 21);
        vlm_set_reduction(&m, red);
        float loss = vlm_forward(&m, bt.images.data(), bt.tokens.data(), bt.targets.data(), bt.lengths.data(), B, bt.keys.data());
        int Tl = vlm_lm_len(c, m.Pi);
        std::vector<float> got(m.logits, m.logits + (size_t)B * Tl * V);
        // by hand: the unreduced model's features, reduced on the host, given to the LM as its image tokens
        vlm_encode_images(&ref, bt.images.data(), B);
        std::vector<float> feats(ref.feats, ref.feats + (size_t)B * ref.P * c.v_dim);
        int Pk = 0;
        std::vector<int> kept;
        std::vector<float> red_feats = reduce_by_hand(feats, red, B, c.image_size / c.patch, c.v_dim, bt.keys.data(), &Pk, &kept);
        ref.Pi = Pk;  // the LM's image rows (what vlm_set_reduction sets), the features put in place by hand
        ref.reduce.method = red.method; ref.keep = kept;  // the kept patches' positions (test_reduced_positions checks the rule)
        memcpy(ref.feats_red, red_feats.data(), red_feats.size() * sizeof(float));
        ref.img_feats = ref.feats_red;
        vlm_project(&ref, B);
        int Tr = vlm_prepare_sequences(&ref, bt.tokens.data(), bt.targets.data(), bt.lengths.data(), B);
        float ref_loss = vlm_lm_forward(&ref, B, Tr, true);
        char name[160];
        snprintf(name, sizeof name, "forward with %s R=%g (proj_mlp=%d): %d of 16 tokens, logits == the hand-reduced features' forward",
                 REDUCE_NAMES[red.method], red.ratio, proj_mlp, m.Pi);
        bool same = Pk == m.Pi && Tr == Tl && memcmp(got.data(), ref.logits, got.size() * sizeof(float)) == 0 && loss == ref_loss;
        report(same, name, "P' %d vs %d, loss %g vs %g", m.Pi, Pk, loss, ref_loss);
        vlm_free(&m); vlm_free(&ref);
    }
}

// the LM sequence with P' image rows: <bos>, P' image rows, then the text right after
static void test_sequences_with_fewer_tokens() {
    VlmConfig c = small_config(1);
    int B = 2, T = c.max_text;
    VlmModel m; build(&m, c, B, 31);
    vlm_set_reduction(&m, TokenReduction{REDUCE_UNIFORM, 0.75f, 0});
    int Pk = m.Pi;
    Rng r; rng_seed(&r, 32);
    Batch b = make_batch(c, B, &r, 1);
    int Tl = vlm_build_sequences(&m, b.tokens.data(), b.targets.data(), b.lengths.data(), B);
    bool ok = Pk == 4 && Tl == T - 1 + Pk && Tl == vlm_lm_len(c, Pk);
    for (int i = 0; i < B; i++) {
        const int* tok = &b.tokens[(size_t)i * T];
        const int* tgt = &b.targets[(size_t)i * T];
        const int* lt = &m.lm_tokens[(size_t)i * Tl];
        const int* lg = &m.lm_targets[(size_t)i * Tl];
        ok &= lt[0] == tok[0];
        for (int p = 1; p < Pk; p++) ok &= lg[p] == -1 && lt[p] == 0;
        ok &= lg[Pk] == tgt[1];  // the last kept image row predicts what follows <image>
        for (int t = 2; t < b.lengths[i]; t++) ok &= lt[t + Pk - 1] == tok[t] && lg[t + Pk - 1] == tgt[t];
        ok &= m.lm_lengths[i] == b.lengths[i] + Pk - 1;
    }
    report(ok, "sequence with P' = 4 image rows: text at t + P' - 1, lengths len + P' - 1, LM length max_text - 1 + P'");
    // the loss is finite and the image still matters
    float l0 = vlm_forward(&m, b.images.data(), b.tokens.data(), b.targets.data(), b.lengths.data(), B);
    Batch b2 = b;
    for (float& x : b2.images) x = 1.0f - x;
    float l1 = vlm_forward(&m, b2.images.data(), b2.tokens.data(), b2.targets.data(), b2.lengths.data(), B);
    report(std::isfinite(l0) && l0 != l1, "reduced forward: a finite loss that depends on the image", "%g, %g", l0, l1);
    vlm_free(&m);
    // the forward here, the backward in expect_fatal's child (forked: it must not start OpenMP work)
    VlmModel x; vlm_build(&x, c, B, false, true);
    vlm_init_params(&x, 1);
    vlm_set_reduction(&x, TokenReduction{REDUCE_POOL, 0.75f, 0});
    vlm_forward(&x, b.images.data(), b.tokens.data(), b.targets.data(), b.lengths.data(), B);
    expect_fatal("the backward refuses a reduced forward", "reduction is for inference", [&] { vlm_backward(&x); });
    vlm_free(&x);
}

// R = 0 (or a ratio that keeps all P) runs nothing: the model is exactly the unreduced one
static void test_ratio_zero_is_exact() {
    VlmConfig c = small_config(1);
    int B = 2;
    Rng r; rng_seed(&r, 41);
    Batch b = make_batch(c, B, &r, 1);
    VlmModel base; build(&base, c, B, 42);
    float l_base = vlm_forward(&base, b.images.data(), b.tokens.data(), b.targets.data(), b.lengths.data(), B, b.keys.data());
    size_t n = (size_t)B * base.Tl * c.vocab;
    const TokenReduction cases[] = {{REDUCE_POOL, 0.0f, 0}, {REDUCE_RANDOM, 0.0f, 9}, {REDUCE_UNIFORM, 0.0f, 0}, {REDUCE_RANDOM, 0.01f, 9}};
    for (const TokenReduction& red : cases) {
        VlmModel m; build(&m, c, B, 42);
        vlm_set_reduction(&m, red);
        float l = vlm_forward(&m, b.images.data(), b.tokens.data(), b.targets.data(), b.lengths.data(), B, b.keys.data());
        char name[128];
        snprintf(name, sizeof name, "%s R=%g keeps all 16 tokens: logits and loss == the unreduced model, bit for bit", REDUCE_NAMES[red.method], red.ratio);
        report(m.Pi == m.P && l == l_base && memcmp(m.logits, base.logits, n * sizeof(float)) == 0, name);
        vlm_free(&m);
    }
    // and the gather with the identity selection is the identity
    std::vector<int> idx(16);
    token_select_uniform(idx.data(), 4, 4, 16);
    std::vector<float> feats(base.feats, base.feats + (size_t)16 * c.v_dim), out(feats.size());
    token_gather_cpu(out.data(), feats.data(), idx.data(), 1, 16, 16, c.v_dim);
    report(out == feats, "gather with every index in order is the identity");
    vlm_free(&base);
}

// KV-cache generation with a reduction == the forward recomputed over the growing sequence
static void test_generation_with_reduction() {
    VlmConfig c = small_config(1);
    c.max_text = 9;
    const TokenReduction cases[] = {{REDUCE_POOL, 0.75f, 0}, {REDUCE_RANDOM, 0.6f, 3}};
    for (const TokenReduction& red : cases) {
        VlmModel m; build(&m, c, 2, 51);
        vlm_set_reduction(&m, red);
        Rng r; rng_seed(&r, 53);
        std::vector<float> image = random_vec((size_t)c.image_size * c.image_size * 3, &r, 0, 1);
        std::vector<int> prompt = {1, VLM_IMAGE_TOKEN, 7, 9};
        int key = 12;
        std::vector<float> step_logits;
        std::vector<int> gen = vlm_generate(&m, image.data(), prompt, 5, -1, &step_logits, key);
        std::vector<int> seq = prompt;
        double worst = 0; bool same = true;
        int V = c.vocab;
        for (size_t i = 0; i < gen.size(); i++) {
            std::vector<int> padded(seq); padded.resize(c.max_text, 0);
            int len = (int)seq.size();
            vlm_forward(&m, image.data(), padded.data(), nullptr, &len, 1, &key);
            const floatX* row = m.logits + (size_t)(len + m.Pi - 2) * V;
            same &= (int)(std::max_element(row, row + V) - row) == gen[i];
            worst = fmax(worst, rel_err(step_logits.data() + i * V, row, V));
            seq.push_back(gen[i]);
        }
        char name[128];
        snprintf(name, sizeof name, "generation with %s (%d of 16 tokens): KV-cache tokens and logits == the recomputed forward's",
                 REDUCE_NAMES[red.method], m.Pi);
        report(gen.size() == 5 && same && worst < 1e-5, name, "%zu tokens, rel err %.2e", gen.size(), worst);
        vlm_free(&m);
    }
}

// the batched decode step (the profiler's) == each sequence alone (vlm_generate's)
static void test_batched_decode() {
    VlmConfig c = small_config(0);
    int B = 3, V = c.vocab;
    VlmModel m; build(&m, c, B, 61);
    vlm_set_reduction(&m, TokenReduction{REDUCE_UNIFORM, 0.5f, 0});
    Rng r; rng_seed(&r, 62);
    std::vector<float> images = random_vec((size_t)B * c.image_size * c.image_size * 3, &r, 0, 1);
    std::vector<int> prompt = {1, VLM_IMAGE_TOKEN, 6, 8, 5};
    int len = (int)prompt.size(), n = len + m.Pi - 1;
    std::vector<int> tokens((size_t)B * c.max_text, 0), lengths(B, len), first(B);
    for (int b = 0; b < B; b++) std::copy(prompt.begin(), prompt.end(), tokens.begin() + (size_t)b * c.max_text);
    vlm_forward(&m, images.data(), tokens.data(), nullptr, lengths.data(), B);
    int Tl = m.cur_T;
    for (int b = 0; b < B; b++) {
        const float* row = m.logits + ((size_t)b * Tl + n - 1) * V;
        first[b] = (int)(std::max_element(row, row + V) - row);
    }
    VlmKVCache kv;
    vlm_kv_from_prefill(&m, &kv, B, n);
    vlm_decode_step(&m, &kv, first.data());
    std::vector<float> batched(m.logits, m.logits + (size_t)B * V);
    vlm_kv_free(&m, &kv);
    double worst = 0;
    bool tokens_ok = true;
    for (int b = 0; b < B; b++) {
        std::vector<float> steps;
        std::vector<int> g = vlm_generate(&m, images.data() + (size_t)b * c.image_size * c.image_size * 3, prompt, 2, -1, &steps, b);
        tokens_ok &= g.size() == 2 && g[0] == first[b];
        worst = fmax(worst, rel_err(batched.data() + (size_t)b * V, steps.data() + V, V));
    }
    report(tokens_ok && worst < 1e-6, "decode step of 3 sequences at once == each generated alone", "rel err %.2e", worst);
    vlm_free(&m);
}

// ---------------------------------------------------------------------------
// FLOPs: the formulas against a brute-force count of the multiply-adds (2 FLOPs each)

static double bf_linear(int rows, int in, int out) {
    double n = 0;
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++)
            for (int i = 0; i < in; i++) n += 2;
    return n;
}
// scores and values of every (query, key) pair the kernels compute (attention.h's attention_limit)
static double bf_attention(int T, int C, int NH, const int* lengths, bool causal) {
    int hd = C / NH;
    double n = 0;
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < T; i++)
            for (int j = 0; j < attention_limit(lengths, 0, i, T, causal); j++)
                for (int d = 0; d < hd; d++) n += 2 + 2;  // q.k and p v
    return n;
}
static double bf_block(int T, int C, int NH, const int* lengths, bool causal) {
    return bf_linear(T, C, 3 * C) + bf_attention(T, C, NH, lengths, causal) + bf_linear(T, C, C) + bf_linear(T, C, 4 * C) + bf_linear(T, 4 * C, C);
}
// the decode step: one query row against `keys` cached keys
static double bf_decode_block(int C, int NH, int keys) {
    double att = 0;
    for (int h = 0; h < NH; h++)
        for (int j = 0; j < keys; j++)
            for (int d = 0; d < C / NH; d++) att += 4;
    return bf_linear(1, C, 3 * C) + att + bf_linear(1, C, C) + bf_linear(1, C, 4 * C) + bf_linear(1, 4 * C, C);
}

static void test_flops(VlmConfig c, int Pi, int prompt_len) {
    VlmFlops f = vlm_flops(c, Pi, prompt_len);
    int P = vlm_num_patches(c), K = c.patch * c.patch * 3, fl = vlm_feature_layer(c);
    double vision = bf_linear(P, K, c.v_dim);
    for (int l = 0; l < fl; l++) vision += bf_block(P + 1, c.v_dim, c.v_heads, nullptr, false);
    double proj = bf_linear(Pi, c.v_dim, c.l_dim) + (c.proj_mlp ? bf_linear(Pi, c.l_dim, c.l_dim) : 0);
    int T = c.max_text - 1 + Pi, n = prompt_len + Pi - 1;
    double prefill = bf_linear(T, c.l_dim, c.vocab);
    for (int l = 0; l < c.l_layers; l++) prefill += bf_block(T, c.l_dim, c.l_heads, &n, true);
    double decode = bf_linear(1, c.l_dim, c.vocab);
    for (int l = 0; l < c.l_layers; l++) decode += bf_decode_block(c.l_dim, c.l_heads, n + 1);
    char name[200];
    snprintf(name, sizeof name, "FLOPs == brute force (image %d/%d, %d of %d tokens, proj_mlp %d, prompt %d): vision %.0f, projector %.0f, "
             "prefill %.0f, decode %.0f", c.image_size, c.patch, Pi, P, c.proj_mlp, prompt_len, vision, proj, prefill, decode);
    bool ok = f.vision == vision && f.projector == proj && f.prefill == prefill && f.decode == decode && f.reduce == 0 &&
              f.first_token == 0 && f.ttft == vision + proj + prefill;
    report(ok, name, "formulas: vision %.0f, projector %.0f, prefill %.0f, decode %.0f", f.vision, f.projector, f.prefill, f.decode);
}

static void test_flop_closed_forms() {
    // attention pairs: bidirectional T^2; causal n(n+1)/2 + (T - n) n
    report(attention_pairs(5, 5, false) == 25 && attention_pairs(5, 5, true) == 15 && attention_pairs(7, 4, true) == 10 + 3 * 4,
           "attention pairs: T^2 bidirectional, n(n+1)/2 + (T-n) n causal over n valid of T");
    // one block by the brief's formula: QKV 2TC3C, scores 2T^2C, values 2T^2C, proj 2TCC, MLP 2TC4C*2
    double T = 9, C = 16;
    report(flops_block(T, C, T * T) == 2 * T * C * 3 * C + 2 * T * T * C + 2 * T * T * C + 2 * T * C * C + 2 * T * C * 4 * C * 2,
           "a block (bidirectional) = 2TC3C + 2T^2C + 2T^2C + 2TCC + 2TC4C*2");
}

// ---------------------------------------------------------------------------
// the profiler on the CPU

static void test_profile() {
    VlmConfig c = small_config(1);
    c.max_text = 9;
    int B = 3;
    VlmModel m; build(&m, c, B, 71);
    vlm_set_reduction(&m, TokenReduction{REDUCE_RANDOM, 0.5f, 1});
    Rng r; rng_seed(&r, 72);
    std::vector<float> images = random_vec((size_t)B * c.image_size * c.image_size * 3, &r, 0, 1);
    std::vector<int> prompt = {1, VLM_IMAGE_TOKEN, 6, 7, 5}, keys = {4, 8, 15};
    VlmProfile p = vlm_profile(&m, images.data(), prompt, keys.data(), B, 1, 5);
    const char* names[] = {"vision encoder", "token reduction", "projector", "LM prefill", "first token", "time to first token", "decode step"};
    bool ok = p.rows.size() == 7;
    for (size_t i = 0; ok && i < 7; i++)
        ok &= p.rows[i].name == names[i] && p.rows[i].t.runs == 5 && p.rows[i].t.median >= 0 && p.rows[i].t.p10 <= p.rows[i].t.median &&
              p.rows[i].t.median <= p.rows[i].t.p90 && p.rows[i].in_ttft == (i < 5);
    report(ok, "profile: 7 components, 5 runs each, p10 <= median <= p90");
    VlmFlops f = vlm_flops(c, m.Pi, (int)prompt.size());
    report(p.Pi == 8 && p.lm_rows == c.max_text - 1 + 8 && p.decode_keys == (int)prompt.size() + 8 && p.rows[5].gflop == f.ttft * B / 1e9 &&
           p.rows[6].gflop == f.decode * B / 1e9, "profile: shapes and the batch's GFLOP");
    // the tokens the timed runs produce == generation's first two (the same key per image)
    bool same = true;
    for (int b = 0; b < B; b++) {
        std::vector<int> g = vlm_generate(&m, images.data() + (size_t)b * c.image_size * c.image_size * 3, prompt, 2, -1, nullptr, keys[b]);
        same &= g.size() == 2 && g[0] == p.first_tokens[b] && g[1] == p.second_tokens[b];
    }
    report(same, "profile: its first token and decode step give generation's tokens");
    VlmProfile p1 = vlm_profile(&m, images.data(), prompt, keys.data(), 1, 0, 3);
    char dir[] = "/tmp/test_token_reduction_XXXXXX";
    if (!mkdtemp(dir)) { report(false, "mkdtemp"); vlm_free(&m); return; }
    std::string csv = std::string(dir) + "/sub/prof.csv", json = std::string(dir) + "/sub/prof.json";
    vlm_profile_write({p1, p}, csv, json, "CPU test", c);
    std::string text;
    bool read = read_text_file(csv.c_str(), &text);
    int lines = (int)std::count(text.begin(), text.end(), '\n');
    report(read && lines == 1 + 14 && text.compare(0, 13, "device,batch,") == 0 && text.find("CPU test,3,random,0.5,16,8,5,16,13,decode step,0,") != std::string::npos,
           "profile CSV: a header and 7 rows per batch", "%d lines", lines);
    JsonValue v; std::string err;
    bool parsed = read_text_file(json.c_str(), &text) && json_parse(text, &v, &err);
    report(parsed && text.find("\"profiles\": [") != std::string::npos && text.find("\"time to first token\"") != std::string::npos,
           "profile JSON parses", "%s", err.c_str());
    remove(csv.c_str()); remove(json.c_str());
    rmdir((std::string(dir) + "/sub").c_str()); rmdir(dir);
    vlm_free(&m);
}

// ---------------------------------------------------------------------------
// fastv (pruning inside the LM) and salient (ours)

// the fastv ranking == the head-mean of the probabilities P = exp(s - lse) of the attention forward
static void test_fastv_scores() {
    Rng r; rng_seed(&r, 81);
    int B = 3, T = 11, C = 12, NH = 3, img0 = 1, P = 6;
    std::vector<float> qkv = random_vec((size_t)B * T * 3 * C, &r, -2, 2), out((size_t)B * T * C), lse((size_t)B * NH * T);
    attention_forward_cpu(out.data(), lse.data(), qkv.data(), nullptr, B, T, C, NH, true);
    int qrow[3] = {10, 7, 6};  // the last, a middle row, the first row after the images
    std::vector<float> got((size_t)B * P);
    fastv_image_scores_cpu(got.data(), qkv.data(), qrow, B, T, C, NH, img0, P);
    double worst = 0;
    int hd = C / NH;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < P; t++) {
            double mean = 0;
            int i = qrow[b], j = img0 + t;
            for (int h = 0; h < NH; h++) {
                double s = 0;
                for (int e = 0; e < hd; e++) s += (double)qkv[((size_t)b * T + i) * 3 * C + h * hd + e] * qkv[((size_t)b * T + j) * 3 * C + C + h * hd + e];
                mean += exp(s / sqrt((double)hd) - lse[((size_t)b * NH + h) * T + i]) / NH;
            }
            worst = fmax(worst, fabs(mean - got[(size_t)b * P + t]));
        }
    report(worst < 1e-6, "fastv ranking == the head mean of the attention forward's probabilities exp(s - lse) at the query row", "max abs err %.2e", worst);
    // top k: the largest, ties to the lower index, in index order
    float sc[6] = {0.1f, 0.5f, 0.2f, 0.5f, 0.05f, 0.3f};
    int idx[3];
    token_select_top(idx, sc, 6, 3);
    report(idx[0] == 1 && idx[1] == 3 && idx[2] == 5, "top-k selection: the k largest scores in index order");
    token_select_top(idx, sc, 6, 1);
    report(idx[0] == 1, "top-1: ties go to the lower index");
}

// the query row of a sequence by hand: the first <sep> after the image rows, else the last row
static int query_by_hand(const std::vector<int>& lm_tok, int b, int Tl, int P, int len) {
    for (int j = P + 1; j < len; j++)
        if (lm_tok[(size_t)b * Tl + j] == VLM_SEP_TOKEN) return j;
    return len - 1;
}

// the pruned forward == the unreduced model's block-K input with the rows picked by hand,
// through blocks K.. , the final LN and the head
static void test_fastv_forward_by_hand(int K, float ratio) {
    VlmConfig c = small_config(1);
    c.l_layers = 3; c.max_text = 9;
    int B = 3, V = c.vocab, C = c.l_dim, NH = c.l_heads, hd = C / NH;
    Rng r; rng_seed(&r, 90 + K);
    Batch bt = make_batch(c, B, &r, 1);
    bt.tokens[(size_t)0 * c.max_text + 3] = VLM_SEP_TOKEN;  // row 0: a <sep> inside; the others as drawn
    VlmModel m, ref;
    build(&m, c, B, 91); build(&ref, c, B, 91);
    TokenReduction red = {REDUCE_FASTV, ratio, 0, K};
    vlm_set_reduction(&m, red);
    float loss = vlm_forward(&m, bt.images.data(), bt.tokens.data(), bt.targets.data(), bt.lengths.data(), B, bt.keys.data());
    std::vector<int> m_targets = m.lm_targets;
    vlm_forward(&m, bt.images.data(), bt.tokens.data(), nullptr, bt.lengths.data(), B, bt.keys.data());  // the logits (a forward
    int P = m.P, Pf = m.Pf, Tl = vlm_lm_len(c, P), T2 = vlm_lm_len(c, Pf);                              // with targets leaves dloss/dlogits)
    std::vector<float> got(m.logits, m.logits + (size_t)B * T2 * V);
    // by hand: the unreduced forward; block K's qkv on the whole sequence is what fastv ranks with
    vlm_forward(&ref, bt.images.data(), bt.tokens.data(), nullptr, bt.lengths.data(), B, bt.keys.data());
    std::vector<int> lm_tok = ref.lm_tokens, lens = ref.lm_lengths;
    const float* qkv = ref.lm.acts[K].qkv;
    std::vector<float> rows_in((size_t)B * T2 * C);
    std::vector<int> new_len(B), hand_keep;
    for (int b = 0; b < B; b++) {
        int q = query_by_hand(lm_tok, b, Tl, P, lens[b]);
        std::vector<std::pair<double, int>> sc;
        for (int t = 0; t < P; t++) {  // the probability, averaged over heads, by a direct softmax in double
            double mean = 0;
            for (int h = 0; h < NH; h++) {
                std::vector<double> s(q + 1);
                double mx = -1e300, z = 0;
                for (int j = 0; j <= q; j++) {
                    double d = 0;
                    for (int e = 0; e < hd; e++) d += (double)qkv[((size_t)b * Tl + q) * 3 * C + h * hd + e] * qkv[((size_t)b * Tl + j) * 3 * C + C + h * hd + e];
                    s[j] = d / sqrt((double)hd); mx = fmax(mx, s[j]);
                }
                for (int j = 0; j <= q; j++) z += exp(s[j] - mx);
                mean += exp(s[1 + t] - mx) / z / NH;
            }
            sc.push_back({-mean, t});
        }
        std::sort(sc.begin(), sc.end());
        std::vector<int> keep;
        for (int i = 0; i < Pf; i++) keep.push_back(sc[i].second);
        std::sort(keep.begin(), keep.end());
        hand_keep.insert(hand_keep.end(), keep.begin(), keep.end());
        std::vector<int> rows = {0};
        for (int k : keep) rows.push_back(1 + k);
        for (int j = P + 1; j < Tl; j++) rows.push_back(j);
        for (int i = 0; i < T2; i++)
            memcpy(&rows_in[((size_t)b * T2 + i) * C], ref.lm.acts[K].resid + ((size_t)b * Tl + rows[i]) * C, C * sizeof(float));
        new_len[b] = lens[b] - (P - Pf);
    }
    memcpy(ref.lm.acts[K].resid, rows_in.data(), rows_in.size() * sizeof(float));
    memcpy(ref.d_lengths, new_len.data(), B * sizeof(int));
    vlm_lm_blocks_from(&ref, K, B, T2);
    layernorm_forward(false, ref.lnf, ref.lnf_mean, ref.lnf_rstd, ref.lm.out, vlm_param(&ref, ref.lnf_w), vlm_param(&ref, ref.lnf_b), B * T2, C);
    linear_forward(false, ref.logits, ref.lnf, vlm_param(&ref, ref.wte), (const float*)nullptr, B * T2, C, V);
    // the targets: the layout of P' image rows
    vlm_build_sequences(&ref, bt.tokens.data(), bt.targets.data(), bt.lengths.data(), B, true, Pf);
    bool targets_ok = std::equal(ref.lm_targets.begin(), ref.lm_targets.begin() + (size_t)B * T2, m_targets.begin());
    double hand_loss = 0; int nt = 0;
    for (int i = 0; i < B * T2; i++) {
        int tgt = ref.lm_targets[i];
        if (tgt < 0) continue;
        const float* row = ref.logits + (size_t)i * V;
        double mx = *std::max_element(row, row + V), z = 0;
        for (int v = 0; v < V; v++) z += exp((double)row[v] - mx);
        hand_loss += mx + log(z) - row[tgt]; nt++;
    }
    hand_loss /= nt;
    char name[200];
    snprintf(name, sizeof name, "fastv layer %d R=%g (%d of %d kept): logits == the hand-picked rows through blocks %d..%d, same selection, targets, loss",
             K, ratio, Pf, P, K, c.l_layers - 1);
    bool same = hand_keep == m.fastv_keep && memcmp(got.data(), ref.logits, got.size() * sizeof(float)) == 0 && targets_ok &&
                fabs(loss - hand_loss) < 1e-5 * fmax(1.0, fabs(hand_loss)) && m.cur_T == T2;
    report(same, name, "logits rel err %.2e, selection %s, targets %s, loss %g vs %g", rel_err(got.data(), ref.logits, got.size()), hand_keep == m.fastv_keep ? "same" : "differs", targets_ok ? "same" : "differ",
           loss, hand_loss);
    vlm_free(&m); vlm_free(&ref);
}

static void test_fastv_ratio_zero_and_errors() {
    VlmConfig c = small_config(1);
    c.l_layers = 3;
    int B = 2;
    Rng r; rng_seed(&r, 95);
    Batch b = make_batch(c, B, &r, 1);
    VlmModel base; build(&base, c, B, 96);
    float l0 = vlm_forward(&base, b.images.data(), b.tokens.data(), b.targets.data(), b.lengths.data(), B, b.keys.data());
    size_t n = (size_t)B * base.Tl * c.vocab;
    for (int K = 0; K < 3; K++) {
        VlmModel m; build(&m, c, B, 96);
        vlm_set_reduction(&m, TokenReduction{REDUCE_FASTV, 0.0f, 0, K});
        float l = vlm_forward(&m, b.images.data(), b.tokens.data(), b.targets.data(), b.lengths.data(), B, b.keys.data());
        char name[120];
        snprintf(name, sizeof name, "fastv R=0 (layer %d) == the unreduced model bit for bit", K);
        report(m.Pf == m.P && l == l0 && memcmp(m.logits, base.logits, n * sizeof(float)) == 0, name);
        vlm_free(&m);
    }
    expect_fatal("fastv: a ranking layer past the last block is refused", "ranking layer must be in [0, 2]",
                 [&] { VlmModel m; vlm_build(&m, c, 1, false, false); vlm_set_reduction(&m, TokenReduction{REDUCE_FASTV, 0.5f, 0, 3}); });
    VlmModel t; vlm_build(&t, c, 2, false, true);
    vlm_init_params(&t, 3);
    vlm_set_reduction(&t, TokenReduction{REDUCE_FASTV, 0.5f, 0, 1});
    vlm_forward(&t, b.images.data(), b.tokens.data(), b.targets.data(), b.lengths.data(), B, b.keys.data());
    expect_fatal("the backward refuses a fastv forward", "reduction is for inference", [&] { vlm_backward(&t); });
    vlm_free(&t);
    vlm_free(&base);
}

// generation with fastv (per-layer cache lengths) == the forward recomputed over the growing sequence
static void test_fastv_generation() {
    for (int K : {0, 1, 2}) {
        VlmConfig c = small_config(1);
        c.l_layers = 3; c.max_text = 10;
        VlmModel m; build(&m, c, 2, 101);
        vlm_set_reduction(&m, TokenReduction{REDUCE_FASTV, 0.7f, 0, K});
        Rng r; rng_seed(&r, 102);
        std::vector<float> image = random_vec((size_t)c.image_size * c.image_size * 3, &r, 0, 1);
        std::vector<int> prompt = {1, VLM_IMAGE_TOKEN, 7, 9, VLM_SEP_TOKEN};
        std::vector<float> step_logits;
        std::vector<int> gen = vlm_generate(&m, image.data(), prompt, 5, -1, &step_logits, 0);
        std::vector<int> keep = m.fastv_keep;  // the prefill's selection
        std::vector<int> seq = prompt;
        double worst = 0; bool same = true, same_keep = true;
        int V = c.vocab;
        for (size_t i = 0; i < gen.size(); i++) {
            std::vector<int> padded(seq); padded.resize(c.max_text, 0);
            int len = (int)seq.size();
            vlm_forward(&m, image.data(), padded.data(), nullptr, &len, 1);
            same_keep &= m.fastv_keep == keep;  // the query is the prompt's <sep>: the same ranking
            const floatX* row = m.logits + (size_t)(len + m.Pf - 2) * V;
            same &= (int)(std::max_element(row, row + V) - row) == gen[i];
            worst = fmax(worst, rel_err(step_logits.data() + i * V, row, V));
            seq.push_back(gen[i]);
        }
        char name[160];
        snprintf(name, sizeof name, "fastv generation (layer %d, %d of 16 kept): KV-cache tokens and logits == the recomputed pruned forward's", K, m.Pf);
        report(gen.size() == 5 && same && same_keep && worst < 1e-5, name, "%zu tokens, keep %s, rel err %.2e", gen.size(),
               same_keep ? "same" : "differs", worst);
        vlm_free(&m);
    }
}

static void test_fastv_flops() {
    VlmConfig c = small_config(1);
    c.l_layers = 3;
    int P = 16, Pf = 5, len = 5, K = 1, C = c.l_dim;
    VlmFlops f = vlm_flops(c, P, len, Pf, K);
    int T = c.max_text - 1 + P, n = len + P - 1, T2 = T - (P - Pf), n2 = n - (P - Pf);
    double prefill = bf_linear(T2, C, c.vocab) + bf_linear(T, C, 3 * C) + 2.0 * n * C, decode = bf_linear(1, C, c.vocab);
    for (int l = 0; l < c.l_layers; l++) {
        prefill += l < K ? bf_block(T, C, c.l_heads, &n, true) : bf_block(T2, C, c.l_heads, &n2, true);
        decode += bf_decode_block(C, c.l_heads, l < K ? n + 1 : n2 + 1);
    }
    report(f.prefill == prefill && f.decode == decode && f.ttft == f.vision + f.projector + f.prefill,
           "fastv FLOPs == brute force (1 full block, 2 pruned, the ranking's QKV and scores)", "%.0f vs %.0f, %.0f vs %.0f", f.prefill, prefill,
           f.decode, decode);
}

// salient: the saliency by hand; the round robin over the cells; the forward == hand-selected features
static void test_salient() {
    int H = 16, ps = 4, g = 4, P = 16;
    std::vector<float> img((size_t)H * H * 3, 0.0f);
    auto px = [&](int y, int x, int c) -> float& { return img[((size_t)y * H + x) * 3 + c]; };
    for (int y = 1; y < 8; y++)  // a big bright item over the top-left cell's 4 patches (the corner pixel stays background)
        for (int x = 1; x < 8; x++) px(y, x, 0) = 0.9f, px(y, x, 1) = 0.5f;
    for (int y = 12; y < 15; y++)  // a small dim one in the bottom-right cell (patch 15; above 5% of the brightest patch)
        for (int x = 12; x < 15; x++) px(y, x, 2) = 0.5f;
    std::vector<float> sal(P);
    token_saliency_cpu(sal.data(), img.data(), 1, H, H, ps);
    bool ok = true;
    for (int p = 0; p < P; p++) {
        double s = 0;
        for (int y = 0; y < ps; y++)
            for (int x = 0; x < ps; x++)
                for (int c = 0; c < 3; c++) { double d = px((p / g) * ps + y, (p % g) * ps + x, c); s += d * d; }  // background black
        ok &= fabs(s - sal[p]) < 1e-4;
    }
    report(ok, "salient: the saliency == the sum of squared differences to the corners' colour, by hand");
    std::vector<int> idx(2), top(2);
    token_select_salient(idx.data(), sal.data(), g, g, 2);
    token_select_top(top.data(), sal.data(), P, 2);
    report(idx[0] <= 5 && idx[1] == 15 && top[1] != 15, "salient: 2 tokens go to the two items (round robin over the cells), not both to the bright one");
    std::vector<int> all(P);
    token_select_salient(all.data(), sal.data(), g, g, P);
    bool ident = true;
    for (int p = 0; p < P; p++) ident &= all[p] == p;
    idx.resize(6);
    token_select_salient(idx.data(), sal.data(), g, g, 6);
    report(ident && valid_selection(idx, 6, P) && idx[0] <= 5 && idx[5] == 15, "salient: P' = P is the identity; 6 tokens: valid, both items kept");
    // the model: the features of the selected patches reach the projector
    VlmConfig c = small_config(1);
    int B = 2;
    Rng r; rng_seed(&r, 111);
    Batch bt = make_batch(c, B, &r, 1);
    VlmModel m, ref;
    build(&m, c, B, 112); build(&ref, c, B, 112);
    vlm_set_reduction(&m, TokenReduction{REDUCE_SALIENT, 0.5f, 0, 0});
    vlm_forward(&m, bt.images.data(), bt.tokens.data(), bt.targets.data(), bt.lengths.data(), B);
    int Pi = m.Pi, Tl = vlm_lm_len(c, Pi);
    vlm_encode_images(&ref, bt.images.data(), B);
    std::vector<float> s2((size_t)B * P);
    token_saliency_cpu(s2.data(), bt.images.data(), B, c.image_size, c.image_size, c.patch);
    std::vector<int> keep((size_t)B * Pi);
    for (int b = 0; b < B; b++) token_select_salient(keep.data() + (size_t)b * Pi, s2.data() + (size_t)b * P, 4, 4, Pi);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < Pi; i++)
            memcpy(ref.feats_red + ((size_t)b * Pi + i) * c.v_dim, ref.feats + ((size_t)b * P + keep[(size_t)b * Pi + i]) * c.v_dim, c.v_dim * sizeof(float));
    ref.Pi = Pi; ref.img_feats = ref.feats_red;
    ref.reduce.method = REDUCE_SALIENT; ref.keep = keep;
    vlm_project(&ref, B);
    int Tr = vlm_prepare_sequences(&ref, bt.tokens.data(), bt.targets.data(), bt.lengths.data(), B);
    vlm_lm_forward(&ref, B, Tr, true);
    report(Pi == 8 && Tr == Tl && memcmp(m.logits, ref.logits, (size_t)B * Tl * c.vocab * sizeof(float)) == 0,
           "salient R=0.5: 8 of 16 tokens, logits == the hand-selected features' forward");
    vlm_set_reduction(&m, TokenReduction{REDUCE_SALIENT, 0.0f, 0, 0});
    vlm_set_reduction(&ref, token_reduction_none());
    vlm_forward(&m, bt.images.data(), bt.tokens.data(), nullptr, bt.lengths.data(), B);
    vlm_forward(&ref, bt.images.data(), bt.tokens.data(), nullptr, bt.lengths.data(), B);
    report(memcmp(m.logits, ref.logits, (size_t)B * ref.Tl * c.vocab * sizeof(float)) == 0, "salient R=0 == the unreduced model bit for bit");
    // generation with salient == the recomputed forward
    vlm_set_reduction(&m, TokenReduction{REDUCE_SALIENT, 0.75f, 0, 0});
    std::vector<int> prompt = {1, VLM_IMAGE_TOKEN, 7, 5};
    std::vector<float> steps;
    std::vector<int> gen = vlm_generate(&m, bt.images.data(), prompt, 3, -1, &steps, 0);
    std::vector<int> seq = prompt;
    bool same = true;
    double worst = 0;
    for (size_t i = 0; i < gen.size(); i++) {
        std::vector<int> padded(seq); padded.resize(c.max_text, 0);
        int len = (int)seq.size();
        vlm_forward(&m, bt.images.data(), padded.data(), nullptr, &len, 1);
        const float* row = m.logits + (size_t)(len + m.Pi - 2) * c.vocab;
        same &= (int)(std::max_element(row, row + c.vocab) - row) == gen[i];
        worst = fmax(worst, rel_err(steps.data() + i * c.vocab, row, c.vocab));
        seq.push_back(gen[i]);
    }
    report(gen.size() == 3 && same && worst < 1e-5, "generation with salient (4 of 16): KV-cache == the recomputed forward", "rel err %.2e", worst);
    ReduceMethod meth;
    report(token_reduction_parse("salient", &meth) && meth == REDUCE_SALIENT && token_reduction_parse("fastv", &meth) && meth == REDUCE_FASTV &&
           token_reduction_count(TokenReduction{REDUCE_FASTV, 0.75f, 0, 1}, 8, 8) == 16 && token_reduction_count(TokenReduction{REDUCE_SALIENT, 0.875f, 0, 0}, 8, 8) == 8,
           "parse and count fastv and salient");
    vlm_free(&m); vlm_free(&ref);
}

int main() {
    test_pool_by_hand();
    test_reduced_positions();
    test_counts();
    test_selections();
    test_gather();
    test_forward_matches_hand_reduction(1);
    test_forward_matches_hand_reduction(0);
    test_sequences_with_fewer_tokens();
    test_ratio_zero_is_exact();
    test_generation_with_reduction();
    test_batched_decode();
    test_flop_closed_forms();
    VlmConfig a = small_config(1), b = small_config(0);
    b.image_size = 12; b.patch = 4; b.v_layers = 1; b.l_layers = 3;  // a 3x3 grid, the ViT's only block is the feature layer
    test_flops(a, 16, 5);
    test_flops(a, 4, 5);
    test_flops(b, 9, 8);
    test_flops(b, 4, 3);
    test_profile();
    test_fastv_scores();
    for (int K : {0, 1, 2}) test_fastv_forward_by_hand(K, 0.75f);
    test_fastv_forward_by_hand(1, 0.4f);
    test_fastv_forward_by_hand(2, 0.99f);  // one image token left
    test_fastv_ratio_zero_and_errors();
    test_fastv_generation();
    test_fastv_flops();
    test_salient();
    return test_summary();
}
