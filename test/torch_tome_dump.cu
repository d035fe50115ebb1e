// torch_tome_dump.cu: run the CPU reference of ToMe (src/tome.h: proportional attention, the bipartite
// matching, the size-weighted merge, and a whole ViT encoder merging tokens block after block) on random
// inputs and write inputs and outputs to a tensor file (test/tensor_file.h) that test/torch_tome_check.py
// recomputes independently in PyTorch float64.
//
//   build: g++ -O3 -march=native -fopenmp -std=c++17 -x c++ test/torch_tome_dump.cu -o build/torch_tome_dump -lm
//          (torch_tome_check.py builds it when it is missing or older than its sources)
//   usage: build/torch_tome_dump out.bin
//
// Cases ("<case>.<tensor>"; integers are stored as floats):
//   pattn.<name>   qkv (B, T, 3C), size (B, T) -> out (B, T, C), lse (B, NH, T); config [B, T, C, NH]
//   match.<name>   metric (T, hd), r -> dst (T); config [T, hd, r]
//   merge          x (rows, C), w (rows), off (G + 1), mem (rows) -> out (G, C)
//   enc.<name>     a ViT of L blocks (width C, NH heads; blocks.<l>.<tensor> as src/transformer.h names
//                  them), x (B, T0, C), sched (L) -> out (B, T, C), size (B, T), rep (B, T), dst<l> (B, T_l);
//                  config [B, T0, C, NH, L]
#include "test_util.h"
#include "../src/vlm_model.h"
#include <string>
#include <vector>
#include "tensor_file.h"

typedef std::vector<float> Vec;

static Rng g_rng;
static Vec rnd(size_t n, float lo = -1.0f, float hi = 1.0f) { return random_vec(n, &g_rng, lo, hi); }
static Vec as_floats(const std::vector<int>& v) { return Vec(v.begin(), v.end()); }

static void dump_pattn(TensorFile& tf, const std::string& name, int B, int T, int C, int NH) {
    std::string p = "pattn." + name + ".";
    Vec qkv = rnd((size_t)B * T * 3 * C, -1.5f, 1.5f), size((size_t)B * T), bias((size_t)B * T);
    for (size_t i = 0; i < size.size(); i++) {
        size[i] = (float)(1 + rng_u32(&g_rng) % 5);
        bias[i] = logf(size[i]);
    }
    Vec out((size_t)B * T * C), lse((size_t)B * NH * T);
    attention_forward_bias_cpu(out.data(), lse.data(), qkv.data(), bias.data(), nullptr, B, T, C, NH, false);
    float cfg[4] = {(float)B, (float)T, (float)C, (float)NH};
    tf.add(p + "config", cfg, {4});
    tf.add(p + "qkv", qkv, {B, T, 3 * C});
    tf.add(p + "size", size, {B, T});
    tf.add(p + "out", out, {B, T, C});
    tf.add(p + "lse", lse, {B, NH, T});
}

static void dump_match(TensorFile& tf, const std::string& name, int T, int hd, int r) {
    std::string p = "match." + name + ".";
    Vec metric = rnd((size_t)T * hd);
    std::vector<int> dst(T);
    tome_match(dst.data(), metric.data(), T, hd, r);
    float cfg[3] = {(float)T, (float)hd, (float)r};
    tf.add(p + "config", cfg, {3});
    tf.add(p + "metric", metric, {T, hd});
    tf.add(p + "dst", as_floats(dst), {T});
}

static void dump_merge(TensorFile& tf) {
    int rows = 9, C = 5;
    Vec x = rnd((size_t)rows * C), w(rows);
    for (int i = 0; i < rows; i++) w[i] = (float)(1 + rng_u32(&g_rng) % 6);
    std::vector<int> off = {0, 1, 4, 5, 7, 9}, mem = {2, 0, 3, 8, 1, 4, 6, 5, 7};  // groups {2} {0 3 8} {1} {4 6} {5 7}
    int G = (int)off.size() - 1;
    Vec out((size_t)G * C);
    token_merge_cpu(out.data(), x.data(), w.data(), off.data(), mem.data(), G, C);
    tf.add("merge.x", x, {rows, C});
    tf.add("merge.w", w, {rows});
    tf.add("merge.off", as_floats(off), {G + 1});
    tf.add("merge.mem", as_floats(mem), {rows});
    tf.add("merge.out", out, {G, C});
}

// a ViT (the VLM's vision encoder, random weights) merging tokens with the schedule
static void dump_encoder(TensorFile& tf, const std::string& name, int B, int P, int C, int NH, std::vector<int> sched) {
    std::string p = "enc." + name + ".";
    int L = (int)sched.size(), g = (int)lround(sqrt((double)P));
    VlmConfig c = {};
    c.image_size = 2 * g; c.patch = 2;
    c.v_layers = L; c.v_dim = C; c.v_heads = NH; c.proj_mlp = 0;
    c.vocab = 8; c.l_layers = 1; c.l_dim = 4; c.l_heads = 1; c.max_text = 4;
    c.t_layers = 1; c.t_dim = 4; c.t_heads = 1; c.clip_dim = 4;
    VlmModel m;
    vlm_build(&m, c, B, false, false);
    for (size_t i = 0; i < m.params.num_params; i++) m.params.params[i] = 0.3f * (2.0f * rng_uniform(&g_rng) - 1.0f);
    for (int l = 0; l < L; l++) {  // LayerNorm weights near 1
        BlockParams& bp = m.vit.p[l];
        for (int i = 0; i < C; i++) { bp.ln1_w[i] += 1.0f; bp.ln2_w[i] += 1.0f; }
    }
    int T0 = P + 1;
    Vec x = rnd((size_t)B * T0 * C);
    memcpy(m.vit.acts[0].resid, x.data(), x.size() * sizeof(float));
    int T = tome_forward(&m.vit, &m.tome, sched, m.tome_scratch, B, T0, L);
    float cfg[5] = {(float)B, (float)T0, (float)C, (float)NH, (float)L};
    tf.add(p + "config", cfg, {5});
    tf.add(p + "sched", as_floats(sched), {L});
    tf.add(p + "x", x, {B, T0, C});
    for (int l = 0; l < L; l++) {
        std::string q = p + "blocks." + std::to_string(l) + ".";
        const BlockParams& bp = m.vit.p[l];
        tf.add(q + "ln1.weight", bp.ln1_w, {C});
        tf.add(q + "ln1.bias", bp.ln1_b, {C});
        tf.add(q + "attn.qkv.weight", bp.qkv_w, {3 * C, C});
        tf.add(q + "attn.qkv.bias", bp.qkv_b, {3 * C});
        tf.add(q + "attn.proj.weight", bp.attn_proj_w, {C, C});
        tf.add(q + "attn.proj.bias", bp.attn_proj_b, {C});
        tf.add(q + "ln2.weight", bp.ln2_w, {C});
        tf.add(q + "ln2.bias", bp.ln2_b, {C});
        tf.add(q + "mlp.fc.weight", bp.fc_w, {4 * C, C});
        tf.add(q + "mlp.fc.bias", bp.fc_b, {4 * C});
        tf.add(q + "mlp.proj.weight", bp.fc_proj_w, {C, 4 * C});
        tf.add(q + "mlp.proj.bias", bp.fc_proj_b, {C});
    }
    for (size_t k = 0, Tl = T0, l = 0; l < (size_t)L; l++) {
        if (sched[l] > 0) tf.add(p + "dst" + std::to_string(l), as_floats(m.tome.dst_log[k++]), {B, (int)Tl});
        Tl -= sched[l];
    }
    tf.add(p + "out", m.vit.out, {B, T, C});
    tf.add(p + "size", m.tome.size, {B, T});
    tf.add(p + "rep", as_floats(m.tome.rep), {B, T});
    vlm_free(&m);
}

int main(int argc, char** argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s out.bin\n", argv[0]); return 1; }
    rng_seed(&g_rng, 20261127);
    TensorFile tf;
    dump_pattn(tf, "T9", 2, 9, 12, 3);
    dump_pattn(tf, "T1", 1, 1, 8, 2);
    dump_pattn(tf, "T30", 2, 30, 16, 2);
    dump_match(tf, "T13", 13, 4, 4);
    dump_match(tf, "T10", 10, 3, 4);   // every A token but [CLS] merges
    dump_match(tf, "T37", 37, 8, 11);
    dump_merge(tf);
    dump_encoder(tf, "even", 2, 36, 12, 3, {7, 7, 6});       // 36 -> 16 patch tokens
    dump_encoder(tf, "max", 2, 36, 12, 3, {18, 9, 4});       // 36 -> 5: every block at its cap
    dump_encoder(tf, "mixed", 3, 16, 8, 2, {0, 5, 3, 0});    // a block without merges between merging ones
    tf.save(argv[1]);
    return 0;
}
