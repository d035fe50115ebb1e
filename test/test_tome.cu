// test_tome.cu: ToMe (src/tome.h) and the ViT classifier (src/vlm_model.h: vlm_classify_forward) on
// the CPU reference.
//   - the schedule: the documented examples, every (P, P', L) sums to P - P' within each block's cap,
//     an unreachable ratio refused
//   - the matching by hand: the best B match per A token, the r most similar merged, [CLS] never merged
//     (not even when its key is the closest), ties (lowest row), a zero key, cosine's scale invariance
//   - the merge op by hand: the size-weighted mean, single rows copied bit for bit; the groups, sizes
//     and representatives of a merge by hand
//   - proportional attention: a zero bias == plain attention bit for bit; a key of size s with bias
//     log s == s copies of that key
//   - the encoder's rules: [CLS] never a source or a destination, sizes sum to P + 1, representatives
//     increasing, r_l merges per block; a zero schedule == transformer_forward bit for bit; the merged
//     rows of a block (earlier merges' sizes included) == the size-weighted means of its rows by hand
//   - the VLM with tome: the LM positions are the representatives', R = 0 == unreduced bit for bit,
//     KV-cache generation == the recomputed forward, too high a ratio and the backward refused
//   - FLOPs (vit_blocks_flops, vlm_flops with tome, vit_classifier_flops) == brute-force counts
//   - the classifier: finite differences of its tensors; the input reductions by hand (pool, random,
//     uniform); R = 0 == none bit for bit; fastv / salient and a reduced backward refused
#include "../src/vlm_profile.h"
#include "test_util.h"
#include "vlm_test_util.h"

// ---------------------------------------------------------------------------
// schedule

static void test_schedule() {
    auto eq = [](const std::vector<int>& a, std::initializer_list<int> b) { return a == std::vector<int>(b); };
    report(eq(tome_schedule(64, 48, 3), {6, 5, 5}) && eq(tome_schedule(64, 32, 3), {11, 11, 10}) && eq(tome_schedule(64, 16, 3), {16, 16, 16}) &&
               eq(tome_schedule(64, 8, 3), {32, 16, 8}) && eq(tome_schedule(64, 64, 3), {0, 0, 0}),
           "schedule: P = 64, 3 blocks: R 0.25 -> 6 5 5, 0.5 -> 11 11 10, 0.75 -> 16 16 16, 0.875 -> 32 16 8, 0 -> none");
    report(tome_min_tokens(64, 3) == 8 && tome_min_tokens(65, 3) == 9 && tome_min_tokens(16, 1) == 8 && tome_min_tokens(5, 10) == 1,
           "the fewest tokens: ceil(P / 2^L)");
    bool ok = true;
    int cases = 0;
    for (int P = 1; P <= 70; P++)
        for (int L = 1; L <= 6; L++)
            for (int Po = tome_min_tokens(P, L); Po <= P; Po++) {
                std::vector<int> r = tome_schedule(P, Po, L);
                int N = P;
                for (int l = 0; l < L; l++) {
                    ok &= r[l] >= 0 && r[l] <= N / 2;
                    N -= r[l];
                }
                ok &= N == Po && (int)r.size() == L;
                cases++;
            }
    report(ok, "schedule: every (P <= 70, L <= 6, reachable P'): r_l in [0, N_l / 2], ending at P'", "%d cases", cases);
    expect_fatal("schedule: a ratio 3 blocks cannot reach is refused", "at the fewest", [] { tome_schedule(64, 7, 3); });
}

// ---------------------------------------------------------------------------
// matching and merging by hand

static void test_match_by_hand() {
    // T = 7: [CLS] 0; A = rows 2, 4, 6; B = rows 1, 3, 5; hd = 2
    std::vector<float> m = {1, 0,       // 0 [CLS]: the same key as row 1 (cosine 1, the highest), never merged
                            1, 0,       // 1 B
                            1, 0.1f,    // 2 A: best 1 (cos 0.995)
                            0, 1,       // 3 B
                            0.2f, 1,    // 4 A: best 3 (cos 0.981)
                            -1, 0,      // 5 B
                            -1, -0.5f}; // 6 A: best 5 (cos 0.894)
    std::vector<int> d(7);
    tome_match(d.data(), m.data(), 7, 2, 1);
    bool r1 = d == std::vector<int>{-1, -1, 1, -1, -1, -1, -1};
    tome_match(d.data(), m.data(), 7, 2, 2);
    bool r2 = d == std::vector<int>{-1, -1, 1, -1, 3, -1, -1};
    tome_match(d.data(), m.data(), 7, 2, 3);
    bool r3 = d == std::vector<int>{-1, -1, 1, -1, 3, -1, 5};
    report(r1 && r2 && r3, "match: each A token's best B, the r most similar merge (r = 1, 2, 3), [CLS] never (its key the closest)");
    tome_match(d.data(), m.data(), 7, 2, 0);
    report(d == std::vector<int>(7, -1), "match: r = 0 merges nothing");
    // scale invariance (cosine) and a zero key (cosine 0, no NaN)
    std::vector<float> s = m;
    for (int i = 0; i < 7; i++) { s[2 * i] *= 1 + i; s[2 * i + 1] *= 1 + i; }
    tome_match(d.data(), s.data(), 7, 2, 3);
    bool scaled = d == std::vector<int>{-1, -1, 1, -1, 3, -1, 5};
    std::vector<float> z = m;
    z[2 * 4] = z[2 * 4 + 1] = 0;  // row 4's key is zero: its best score is 0, below rows 2 and 6
    tome_match(d.data(), z.data(), 7, 2, 2);
    report(scaled && d == std::vector<int>{-1, -1, 1, -1, -1, -1, 5}, "match: positive scales change nothing; a zero key scores 0");
    // ties: row 2 equally close to rows 1 and 3 -> row 1; rows 2 and 4 equally scored -> row 2 first
    std::vector<float> t = {0, 1, 1, 1, 0, 1, -1, 1, 0, 1};  // rows 0..4: [CLS], B1 (1,1), A2 (0,1), B3 (-1,1), A4 (0,1)
    d.assign(5, 0);
    tome_match(d.data(), t.data(), 5, 2, 1);
    report(d == std::vector<int>{-1, -1, 1, -1, -1}, "match: ties go to the lowest B row, then the lower A row");
    expect_fatal("match: more merges than A tokens is refused", "merges", [] {
        std::vector<float> x(10, 1.0f); std::vector<int> dd(5); tome_match(dd.data(), x.data(), 5, 2, 3);
    });
}

static void test_merge_by_hand() {
    // rows 0..4 of C = 3; sizes 1 2 3 1 4; groups {0}, {1, 2, 4}, {3}
    int C = 3;
    std::vector<float> x = {0.1f, -2.f, 3.3f, 1.f, 2.f, 3.f, -4.f, 5.f, 0.7f, 9.f, 8.f, 7.f, 0.25f, -0.5f, 6.f};
    std::vector<float> w = {1, 2, 3, 1, 4};
    std::vector<int> off = {0, 1, 4, 5}, mem = {0, 1, 2, 4, 3};
    std::vector<float> out(9, -1);
    token_merge_cpu(out.data(), x.data(), w.data(), off.data(), mem.data(), 3, C);
    bool single = memcmp(&out[0], &x[0], 3 * sizeof(float)) == 0 && memcmp(&out[6], &x[9], 3 * sizeof(float)) == 0;
    double worst = 0;
    for (int c = 0; c < C; c++) {
        double want = (2.0 * x[3 + c] + 3.0 * x[6 + c] + 4.0 * x[12 + c]) / 9.0;
        worst = std::max(worst, fabs(out[3 + c] - want) / (fabs(want) + 1e-30));
    }
    report(single && worst < 1e-6, "merge: the size-weighted mean sum s_i x_i / sum s_i; a row alone copied bit for bit", "rel err %.2e", worst);
    // the groups of a merge: 2 images of T = 5 ([CLS], B1, A2, B3, A4); image 0: 2 -> 1, image 1: 4 -> 3
    std::vector<int> dst = {-1, -1, 1, -1, -1, -1, -1, -1, -1, 3};
    std::vector<float> size = {1, 2, 3, 1, 1, 1, 1, 2, 5, 7};
    std::vector<int> rep = {0, 1, 2, 3, 5, 0, 2, 3, 4, 6}, o2, m2;
    int T2 = tome_groups(&o2, &m2, &size, &rep, dst.data(), 2, 5);
    bool ok = T2 == 4 && o2 == std::vector<int>{0, 1, 3, 4, 5, 6, 7, 8, 10} && m2 == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9} &&
              size == std::vector<float>{1, 5, 1, 1, 1, 1, 2, 12} && rep == std::vector<int>{0, 1, 3, 5, 0, 2, 3, 4};
    report(ok, "groups: the rows left in order, each with the rows merged into it; sizes add, representatives stay");
    expect_fatal("groups: images merging different counts are refused", "the same number", [] {
        std::vector<int> dd = {-1, -1, 1, -1, -1, -1, -1, -1, -1, -1}, o, mm, rp(10, 0);
        std::vector<float> sz(10, 1.0f);
        tome_groups(&o, &mm, &sz, &rp, dd.data(), 2, 5);
    });
}

// ---------------------------------------------------------------------------
// proportional attention

static void test_proportional_attention() {
    Rng r; rng_seed(&r, 3);
    int B = 2, T = 9, C = 12, NH = 3;
    std::vector<float> qkv = random_vec((size_t)B * T * 3 * C, &r, -1.5f, 1.5f), zero((size_t)B * T, 0.0f);
    std::vector<float> o1((size_t)B * T * C), o2(o1.size()), l1((size_t)B * NH * T), l2(l1.size());
    attention_forward_cpu(o1.data(), l1.data(), qkv.data(), nullptr, B, T, C, NH, false);
    attention_forward_bias_cpu(o2.data(), l2.data(), qkv.data(), zero.data(), nullptr, B, T, C, NH, false);
    report(o1 == o2 && l1 == l2, "proportional attention with every size 1 (bias 0) == plain attention, bit for bit (out and lse)");
    // a key of size s (bias log s) weighs as s copies of itself: keys 0..4 with sizes 1 3 1 2 1 against
    // 8 rows holding those keys repeated, queries the same
    int Ts = 5, Tc = 8;
    const int sizes[5] = {1, 3, 1, 2, 1};
    std::vector<float> small = random_vec((size_t)Ts * 3 * C, &r, -1.5f, 1.5f), big((size_t)Tc * 3 * C);
    std::vector<float> bias(Ts);
    for (int j = 0, row = 0; j < Ts; j++) {
        bias[j] = logf((float)sizes[j]);
        for (int k = 0; k < sizes[j]; k++, row++)
            for (int c = C; c < 3 * C; c++) big[(size_t)row * 3 * C + c] = small[(size_t)j * 3 * C + c];  // k and v repeated
    }
    for (int i = 0; i < std::min(Ts, Tc); i++)
        for (int c = 0; c < C; c++) big[(size_t)i * 3 * C + c] = small[(size_t)i * 3 * C + c];  // the first 5 queries the same
    std::vector<float> os((size_t)Ts * C), ob((size_t)Tc * C), ls(NH * Ts), lb(NH * Tc);
    attention_forward_bias_cpu(os.data(), ls.data(), small.data(), bias.data(), nullptr, 1, Ts, C, NH, false);
    attention_forward_cpu(ob.data(), lb.data(), big.data(), nullptr, 1, Tc, C, NH, false);
    double e = rel_err(os.data(), ob.data(), (size_t)Ts * C);
    report(e < 1e-6, "proportional attention: a key of size s (bias log s) == s copies of it", "rel err %.2e", e);
}

// ---------------------------------------------------------------------------
// the encoder

static VlmConfig tome_config(int v_layers) {
    VlmConfig c = {};
    c.image_size = 24; c.patch = 4;  // a 6x6 grid: P = 36
    c.v_layers = v_layers; c.v_dim = 12; c.v_heads = 3;
    c.proj_mlp = 1;
    c.vocab = 13; c.l_layers = 2; c.l_dim = 8; c.l_heads = 2;
    c.max_text = 8;
    c.t_layers = 1; c.t_dim = 8; c.t_heads = 2; c.clip_dim = 6;
    return c;
}

static void build(VlmModel* m, const VlmConfig& c, int B, uint64_t seed, int n_classes = 0, bool grads = false) {
    vlm_build(m, c, B, false, grads, {}, LoraConfig(), n_classes);
    vlm_init_params(m, seed);
    Rng r; rng_seed(&r, seed + 1);
    for (size_t i = 0; i < m->params.num_params; i++) m->params.params[i] += 0.3f * (2.0f * rng_uniform(&r) - 1.0f);
}

// the embedded rows of B random images in vit.acts[0].resid (no block run)
static std::vector<float> embed(VlmModel* m, int B, uint64_t seed) {
    Rng r; rng_seed(&r, seed);
    int H = m->cfg.image_size;
    std::vector<float> img = random_vec((size_t)B * H * H * 3, &r, 0, 1);
    vlm_vision_forward(m, img.data(), B, 0);
    return img;
}

static void test_encoder_rules() {
    VlmConfig c = tome_config(4);
    int B = 3, P = 36, T0 = P + 1, C = c.v_dim;
    VlmModel m; build(&m, c, B, 7);
    embed(&m, B, 8);
    std::vector<float> x0(m.vit.acts[0].resid, m.vit.acts[0].resid + (size_t)B * T0 * C);
    // a zero schedule == transformer_forward, bit for bit
    std::vector<int> zero = {0, 0, 0, 0};
    tome_forward(&m.vit, &m.tome, zero, m.tome_scratch, B, T0, 4);
    std::vector<float> a(m.vit.out, m.vit.out + (size_t)B * T0 * C);
    memcpy(m.vit.acts[0].resid, x0.data(), x0.size() * sizeof(float));
    transformer_forward(&m.vit, false, nullptr, B, T0, 4);
    report(memcmp(a.data(), m.vit.out, a.size() * sizeof(float)) == 0, "encoder: r = 0 in every block == the unreduced encoder, bit for bit");
    // merging: 36 -> 9 patch tokens over 4 blocks
    std::vector<int> sched = tome_schedule(P, 9, 4);
    memcpy(m.vit.acts[0].resid, x0.data(), x0.size() * sizeof(float));
    int T = tome_forward(&m.vit, &m.tome, sched, m.tome_scratch, B, T0, 4);
    bool cls = true, counts = m.tome.dst_log.size() == 4, dests = true;
    int Tl = T0;
    for (size_t l = 0; l < m.tome.dst_log.size(); l++) {
        const std::vector<int>& d = m.tome.dst_log[l];
        counts &= (int)d.size() == B * Tl;
        for (int b = 0; b < B; b++) {
            int merged = 0;
            for (int i = 0; i < Tl; i++) {
                int dd = d[(size_t)b * Tl + i];
                if (dd < 0) continue;
                merged++;
                cls &= i != 0 && dd != 0;
                dests &= i % 2 == 0 && dd % 2 == 1 && d[(size_t)b * Tl + dd] < 0;
            }
            counts &= merged == sched[l];
        }
        Tl -= sched[l];
    }
    bool sums = T == 10 && m.tome.T == 10, reps = true;
    for (int b = 0; b < B; b++) {
        float s = 0;
        for (int i = 0; i < T; i++) {
            s += m.tome.size[(size_t)b * T + i];
            if (i) reps &= m.tome.rep[(size_t)b * T + i] > m.tome.rep[(size_t)b * T + i - 1];
        }
        sums &= s == (float)T0;
        cls &= m.tome.rep[(size_t)b * T] == 0 && m.tome.size[(size_t)b * T] == 1.0f;
    }
    report(counts, "encoder: r_l merges per image in block l (the schedule 36 -> 9 patch tokens in 4 blocks)");
    report(cls, "encoder: [CLS] is never merged (never a source, never a destination; row 0, size 1)");
    report(dests, "encoder: sources are A rows (even), destinations B rows (odd) that stay");
    report(sums, "encoder: the sizes of each image's tokens sum to P + 1 = 37 (10 rows left)");
    report(reps, "encoder: rows stay in increasing representative order");
}

// the merged rows of block 1 (sizes from block 0's merge) == the size-weighted means by hand of that
// block's rows before the merge (recomputed with its attention half and the sizes' log as the bias)
static void test_merged_feature_is_weighted_mean() {
    VlmConfig c = tome_config(2);
    int B = 2, P = 36, T0 = P + 1, C = c.v_dim;
    VlmModel m; build(&m, c, B, 17);
    embed(&m, B, 18);
    std::vector<float> x0(m.vit.acts[0].resid, m.vit.acts[0].resid + (size_t)B * T0 * C);
    std::vector<int> sched = {10, 8};
    tome_forward(&m.vit, &m.tome, sched, m.tome_scratch, B, T0, 2);
    int T1 = T0 - 10, T2 = T1 - 8;
    std::vector<float> merged(m.vit.acts[1].resid2, m.vit.acts[1].resid2 + (size_t)B * T2 * C);
    // sizes after block 0: 1 + the sources merged into each row
    const std::vector<int>& d0 = m.tome.dst_log[0];
    const std::vector<int>& d1 = m.tome.dst_log[1];
    std::vector<float> s1;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T0; i++) {
            if (d0[(size_t)b * T0 + i] >= 0) continue;
            float s = 1;
            for (int j = 0; j < T0; j++) s += d0[(size_t)b * T0 + j] == i;
            s1.push_back(s);
        }
    // block 1's rows before its merge: its input is acts[1].resid (block 0's output)
    std::vector<float> bias(s1.size());
    for (size_t i = 0; i < s1.size(); i++) bias[i] = logf(s1[i]);
    transformer_block_attention(&m.vit, false, 1, bias.data(), B, T1);
    std::vector<float> pre(m.vit.acts[1].resid2, m.vit.acts[1].resid2 + (size_t)B * T1 * C);
    double worst = 0;
    bool bigger = false;
    for (int b = 0; b < B; b++) {
        int o = 0;
        for (int i = 0; i < T1; i++) {
            if (d1[(size_t)b * T1 + i] >= 0) continue;
            double ws = 0;
            std::vector<double> acc(C, 0.0);
            for (int j = 0; j < T1; j++)
                if (j == i || d1[(size_t)b * T1 + j] == i) {
                    double w = s1[(size_t)b * T1 + j];
                    bigger |= j != i && w > 1;
                    ws += w;
                    for (int cc = 0; cc < C; cc++) acc[cc] += w * pre[((size_t)b * T1 + j) * C + cc];
                }
            for (int cc = 0; cc < C; cc++) {
                double want = acc[cc] / ws, got = merged[((size_t)b * T2 + o) * C + cc];
                worst = std::max(worst, fabs(got - want) / (fabs(want) + 1e-3));
            }
            o++;
        }
    }
    report(worst < 1e-5 && bigger, "encoder: block 1's merged rows == size-weighted means (earlier merges' sizes) of its rows by hand",
           "err %.2e, a merged source of size > 1: %d", worst, (int)bigger);
    (void)x0;
}

// ---------------------------------------------------------------------------
// the VLM with tome

static void test_vlm_tome() {
    VlmConfig c = tome_config(4);  // the feature layer: blocks 0..2 merge
    int B = 2, V = c.vocab;
    Rng r; rng_seed(&r, 61);
    Batch bt = make_batch(c, B, &r, 1);
    VlmModel base; build(&base, c, B, 62);
    float l0 = vlm_forward(&base, bt.images.data(), bt.tokens.data(), bt.targets.data(), bt.lengths.data(), B, bt.keys.data());
    VlmModel m; build(&m, c, B, 62);
    vlm_set_reduction(&m, TokenReduction{REDUCE_TOME, 0.0f, 0, 0});
    float l1 = vlm_forward(&m, bt.images.data(), bt.tokens.data(), bt.targets.data(), bt.lengths.data(), B, bt.keys.data());
    report(l1 == l0 && memcmp(m.logits, base.logits, (size_t)B * base.Tl * V * sizeof(float)) == 0 && m.tome.dst_log.empty(),
           "vlm tome R = 0: nothing runs, logits and loss == unreduced bit for bit");
    vlm_set_reduction(&m, TokenReduction{REDUCE_TOME, 0.5f, 0, 0});
    report(m.Pi == 18 && m.tome_sched == std::vector<int>{6, 6, 6}, "vlm tome R = 0.5: 18 of 36 tokens, merged 6 6 6 in the 3 feature blocks");
    vlm_forward(&m, bt.images.data(), bt.tokens.data(), nullptr, bt.lengths.data(), B, bt.keys.data());
    int Pi = m.Pi, Tl = vlm_lm_len(c, Pi), Tv = Pi + 1;
    bool pos = (int)m.pos_index.size() == B * Tl, feats = true;
    for (int b = 0; b < B; b++) {
        for (int j = 0; j < Pi; j++) pos &= m.pos_index[(size_t)b * Tl + 1 + j] == m.tome.rep[(size_t)b * Tv + 1 + j];
        pos &= m.pos_index[(size_t)b * Tl] == 0 && m.pos_index[(size_t)b * Tl + Pi + 1] == m.P + 1;
        // the projector's rows == the feature layer's output rows, [CLS] dropped
        feats &= memcmp(m.feats + (size_t)b * Pi * c.v_dim, m.vit.acts[3].resid + ((size_t)b * Tv + 1) * c.v_dim, Pi * c.v_dim * sizeof(float)) == 0;
    }
    report(pos, "vlm tome: each merged token takes its representative patch's LM position; <bos> 0, the text after all P slots");
    report(feats, "vlm tome: the projector reads the feature layer's P' merged rows, [CLS] dropped");
    // generation == the recomputed forward
    c.max_text = 9;
    VlmModel g; build(&g, c, 1, 63);
    vlm_set_reduction(&g, TokenReduction{REDUCE_TOME, 0.75f, 0, 0});
    std::vector<float> image = random_vec((size_t)c.image_size * c.image_size * 3, &r, 0, 1);
    std::vector<int> prompt = {1, VLM_IMAGE_TOKEN, 7, 9}, seq = prompt;
    std::vector<float> step_logits;
    std::vector<int> gen = vlm_generate(&g, image.data(), prompt, 5, -1, &step_logits, 0);
    double worst = 0; bool same = true;
    for (size_t i = 0; i < gen.size(); i++) {
        std::vector<int> padded(seq); padded.resize(c.max_text, 0);
        int len = (int)seq.size();
        vlm_forward(&g, image.data(), padded.data(), nullptr, &len, 1);
        const floatX* row = g.logits + (size_t)(len + g.Pi - 2) * V;
        same &= (int)(std::max_element(row, row + V) - row) == gen[i];
        worst = fmax(worst, rel_err(step_logits.data() + i * V, row, V));
        seq.push_back(gen[i]);
    }
    report(gen.size() == 5 && same && worst < 1e-5, "vlm tome R = 0.75 (9 of 36): KV-cache generation == the recomputed forward",
           "rel err %.2e", worst);
    expect_fatal("vlm tome: a ratio the feature blocks cannot reach is refused", "at the fewest", [&] {
        vlm_set_reduction(&m, TokenReduction{REDUCE_TOME, 0.95f, 0, 0});
    });
    vlm_free(&base); vlm_free(&m); vlm_free(&g);
    VlmModel t; vlm_build(&t, tome_config(4), B, false, true);
    vlm_init_params(&t, 5);
    vlm_set_reduction(&t, TokenReduction{REDUCE_TOME, 0.5f, 0, 0});
    vlm_forward(&t, bt.images.data(), bt.tokens.data(), bt.targets.data(), bt.lengths.data(), B, bt.keys.data());
    expect_fatal("vlm tome: the backward refuses a merged forward", "inference", [&] { vlm_backward(&t); });  // (no OpenMP after fork)
    vlm_free(&t);
}

// ---------------------------------------------------------------------------
// FLOPs against counting every multiply-add

static double bf_blocks(int T0, int C, int NH, const std::vector<int>& sched, int L) {
    double macs = 0;
    int T = T0, hd = C / NH;
    for (int l = 0; l < L; l++) {
        int r = l < (int)sched.size() ? sched[l] : 0;
        for (int i = 0; i < T; i++) macs += (double)C * 3 * C;                       // qkv
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++)
                for (int j = 0; j < T; j++) macs += 2.0 * hd;                          // q.k and p v
        for (int i = 0; i < T; i++) macs += (double)C * C;                             // out proj
        if (r > 0)
            for (int a = 2; a < T; a += 2)
                for (int b = 1; b < T; b += 2) macs += hd;                             // cosine of every (A, B) pair
        T -= r;
        for (int i = 0; i < T; i++) macs += 2.0 * C * 4 * C;                           // fc, proj
    }
    return 2 * macs;
}

static void test_flops() {
    VlmConfig c = tome_config(4);
    std::vector<int> s = tome_schedule(36, 9, 3);
    double bf = bf_blocks(37, c.v_dim, c.v_heads, s, 3);
    report(vit_blocks_flops(37, c.v_dim, c.v_heads, 3, s) == bf, "flops: ToMe blocks == a brute-force count (with the matching)");
    report(vit_blocks_flops(37, c.v_dim, c.v_heads, 3) == 3 * flops_block(37, c.v_dim, 37.0 * 37), "flops: no merges == 3 plain blocks");
    VlmFlops f = vlm_flops(c, 9, 5, -1, 0, s), g = vlm_flops(c, 9, 5);
    report(f.vit_blocks == bf && f.vision == f.patch_embed + bf && f.prefill == g.prefill && f.projector == g.projector,
           "flops: vlm_flops with tome: the merged vision encoder, the LM over P' image tokens");
    double head = 2.0 * c.v_dim * 10, pe = 2.0 * 36 * 48 * c.v_dim;
    std::vector<int> s4 = tome_schedule(36, 9, 4);
    report(vit_classifier_flops(c, 10, 37) == pe + bf_blocks(37, c.v_dim, c.v_heads, {}, 4) + head &&
               vit_classifier_flops(c, 10, 10) == pe + bf_blocks(10, c.v_dim, c.v_heads, {}, 4) + head &&
               vit_classifier_flops(c, 10, 37, s4) == pe + bf_blocks(37, c.v_dim, c.v_heads, s4, 4) + head,
           "flops: the classifier (none, 9 tokens at the input, tome 36 -> 9) == brute force");
}

// ---------------------------------------------------------------------------
// the classifier

static void test_classifier_grads() {
    VlmConfig c = tome_config(2);
    int B = 3, K = 5;
    VlmModel m;
    vlm_build(&m, c, B, false, true, {"proj.", "lm.", "text.", "clip.", "vision.proj"}, LoraConfig(), K);
    vlm_init_params(&m, 71);
    Rng r; rng_seed(&r, 72);
    for (size_t i = 0; i < m.params.num_params; i++) m.params.params[i] += 0.2f * (2.0f * rng_uniform(&r) - 1.0f);
    std::vector<float> img = random_vec((size_t)B * c.image_size * c.image_size * 3, &r, 0, 1);
    std::vector<int> labels = {0, 3, 4};
    vlm_zero_grad(&m);
    vlm_classify_forward(&m, img.data(), labels.data(), B);
    vlm_backward(&m);
    auto loss = [&]() { return (double)vlm_classify_forward(&m, img.data(), labels.data(), B); };
    const char* names[] = {"vision.head.weight", "vision.head.bias", "vision.ln_f.weight", "vision.blocks.1.attn.qkv.weight",
                           "vision.blocks.0.mlp.fc.weight", "vision.patch.weight", "vision.cls", "vision.pos"};
    for (const char* nm : names) {
        int k = -1;
        for (size_t i = 0; i < m.params.tensors.size(); i++) if (m.params.tensors[i].name == nm) k = (int)i;
        if (k < 0) { report(false, nm, "no such tensor"); continue; }
        char label[96];
        snprintf(label, sizeof label, "classifier %s", nm);
        grad_check(label, param_data(&m.params, k), param_grad(&m.params, k), m.params.tensors[k].numel, loss, 2e-2, 1e-2f, 16, 7, 1e-4);
    }
    report(param_grad(&m.params, m.p1_w) == nullptr && param_grad(&m.params, m.wte) == nullptr, "classifier: the projector and the GPT are frozen");
    vlm_free(&m);
}

static void test_classifier_reductions() {
    VlmConfig c = tome_config(3);
    int B = 2, K = 4, P = 36, C = c.v_dim;
    std::vector<int> keys = {5, 9};
    VlmModel base; build(&base, c, B, 81, K);
    Rng r; rng_seed(&r, 82);
    std::vector<float> img = random_vec((size_t)B * c.image_size * c.image_size * 3, &r, 0, 1);
    vlm_classify_forward(&base, img.data(), nullptr, B, keys.data());
    std::vector<float> ref(base.cls_logits, base.cls_logits + B * K);
    vlm_vision_forward(&base, img.data(), B, 0);  // the embedded rows, unreduced
    std::vector<float> x0(base.vit.acts[0].resid, base.vit.acts[0].resid + (size_t)B * (P + 1) * C);
    const ReduceMethod methods[] = {REDUCE_POOL, REDUCE_RANDOM, REDUCE_UNIFORM, REDUCE_TOME};
    for (ReduceMethod meth : methods) {
        VlmModel m; build(&m, c, B, 81, K);
        vlm_set_reduction(&m, TokenReduction{meth, 0.0f, 3, 0});
        vlm_classify_forward(&m, img.data(), nullptr, B, keys.data());
        char name[128];
        snprintf(name, sizeof name, "classifier %s R = 0 == none, bit for bit", REDUCE_NAMES[meth]);
        report(memcmp(m.cls_logits, ref.data(), B * K * sizeof(float)) == 0 && m.vis_T == P + 1, name);
        if (meth == REDUCE_TOME) { vlm_free(&m); continue; }
        // the input reduction by hand: [CLS] row, then window means (pool) or kept rows (random, uniform)
        float R = meth == REDUCE_POOL ? 0.75f : 0.6f;
        vlm_set_reduction(&m, TokenReduction{meth, R, 3, 0});
        vlm_vision_forward(&m, img.data(), B, 0, true, keys.data());
        int Pi = m.Pi, T2 = Pi + 1;
        double worst = 0;
        bool exact = m.vis_T == T2;
        for (int b = 0; b < B; b++) {
            const float* in = x0.data() + (size_t)b * (P + 1) * C;
            const float* got = m.vit.acts[0].resid + (size_t)b * T2 * C;
            exact &= memcmp(got, in, C * sizeof(float)) == 0;  // [CLS]
            std::vector<int> kept(Pi);
            if (meth == REDUCE_RANDOM) token_select_random(kept.data(), P, Pi, 3, keys[b]);
            if (meth == REDUCE_UNIFORM) token_select_uniform(kept.data(), 6, 6, Pi);
            for (int o = 0; o < Pi; o++)
                if (meth == REDUCE_POOL) {
                    int y = 2 * (o / 3), x = 2 * (o % 3);
                    for (int cc = 0; cc < C; cc++) {
                        double s = 0;
                        for (int dy = 0; dy < 2; dy++)
                            for (int dx = 0; dx < 2; dx++) s += in[(size_t)(1 + (y + dy) * 6 + x + dx) * C + cc];
                        worst = std::max(worst, fabs(got[(size_t)(1 + o) * C + cc] - s / 4) / (fabs(s / 4) + 1e-3));
                    }
                } else {
                    exact &= memcmp(got + (size_t)(1 + o) * C, in + (size_t)(1 + kept[o]) * C, C * sizeof(float)) == 0;
                }
        }
        snprintf(name, sizeof name, "classifier %s R=%g at the encoder's input: [CLS] kept, %s (%d of 36)", REDUCE_NAMES[meth], R,
                 meth == REDUCE_POOL ? "2x2 means by hand" : "the selected rows, bit for bit", Pi);
        report(exact && worst < 1e-6, name, "err %.2e", worst);
        vlm_classify_forward(&m, img.data(), nullptr, B, keys.data());
        bool finite = true;
        for (int i = 0; i < B * K; i++) finite &= std::isfinite(m.cls_logits[i]);
        snprintf(name, sizeof name, "classifier %s R=%g: the forward runs the blocks on %d rows", REDUCE_NAMES[meth], R, m.vis_T);
        report(finite && m.vis_T == T2, name);
        vlm_free(&m);
    }
    VlmModel t; build(&t, c, B, 81, K);
    vlm_set_reduction(&t, TokenReduction{REDUCE_TOME, 0.75f, 0, 0});
    vlm_classify_forward(&t, img.data(), nullptr, B, keys.data());
    report(t.tome_sched.size() == 3 && t.vis_T == 10 && t.tome.dst_log.size() == 3, "classifier tome R = 0.75: merges in all 3 blocks, 9 patch tokens leave");
    expect_fatal("classifier: fastv is refused", "classifier takes", [&] { vlm_set_reduction(&t, TokenReduction{REDUCE_FASTV, 0.5f, 0, 1}); });
    expect_fatal("classifier: salient is refused", "classifier takes", [&] { vlm_set_reduction(&t, TokenReduction{REDUCE_SALIENT, 0.5f, 0, 0}); });
    vlm_free(&t); vlm_free(&base);
    VlmModel g; vlm_build(&g, c, B, false, true, {}, LoraConfig(), K);
    vlm_init_params(&g, 3);
    vlm_set_reduction(&g, TokenReduction{REDUCE_RANDOM, 0.5f, 0, 0});
    std::vector<int> labels = {1, 2};
    vlm_classify_forward(&g, img.data(), labels.data(), B);
    expect_fatal("classifier: the backward refuses a reduced forward", "inference", [&] { vlm_backward(&g); });
    vlm_free(&g);
}

int main() {
    test_schedule();
    test_match_by_hand();
    test_merge_by_hand();
    test_proportional_attention();
    test_encoder_rules();
    test_merged_feature_is_weighted_mean();
    test_vlm_tome();
    test_flops();
    test_classifier_grads();
    test_classifier_reductions();
    return test_summary();
}
