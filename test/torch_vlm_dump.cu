// torch_vlm_dump.cu: run the CPU reference of the vision-language layers (layernorm, GELU,
// attention and its decode step, patch embedding) on random inputs and write inputs, outputs and
// gradients to a tensor file (test/tensor_file.h) that test/torch_vlm_check.py recomputes
// independently in PyTorch float64.
//
//   build: g++ -O3 -march=native -fopenmp -std=c++17 -x c++ test/torch_vlm_dump.cu -o build/torch_vlm_dump -lm
//          (torch_vlm_check.py builds it when it is missing or older than its sources)
//   usage: build/torch_vlm_dump out.bin
//
// Names are "<case>.<tensor>", e.g. attn.T7.causal.len.qkv (input), ....out (output), ....dout
// (random upstream gradient), ....dqkv (our gradient). Gradients start from zero (the backward
// functions accumulate). "<case>.config" holds a case's shape (the layout is given at each dump_).
#include "test_util.h"
#include "../src/layernorm.h"
#include "../src/activations.h"
#include "../src/attention.h"
#include "../src/patch_embed.h"
#include <string>
#include <vector>
#include "tensor_file.h"

typedef std::vector<float> Vec;

static Rng g_rng;
static Vec rnd(size_t n, float lo = -1.0f, float hi = 1.0f) { return random_vec(n, &g_rng, lo, hi); }

// x in [-range, range]: at 0.005 the variance (8e-6) is of the order of eps
static void dump_layernorm(TensorFile& tf, const std::string& name, int N, int C, float range) {
    std::string p = name + ".";
    Vec x = rnd((size_t)N * C, -range, range), w = rnd(C, 0.5f, 1.5f), b = rnd(C);
    for (int c = 0; c < C; c++) x[c] += 5.0f * range;  // one row with a large mean
    Vec out((size_t)N * C), mean(N), rstd(N);
    layernorm_forward_cpu(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    Vec dout = rnd((size_t)N * C), dx((size_t)N * C, 0.0f), dw(C, 0.0f), db(C, 0.0f);
    layernorm_backward_cpu(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(),
                           N, C);
    tf.add(p + "x", x, {N, C});
    tf.add(p + "weight", w, {C});
    tf.add(p + "bias", b, {C});
    tf.add(p + "out", out, {N, C});
    tf.add(p + "mean", mean, {N});
    tf.add(p + "rstd", rstd, {N});
    tf.add(p + "dout", dout, {N, C});
    tf.add(p + "dx", dx, {N, C});
    tf.add(p + "dweight", dw, {C});
    tf.add(p + "dbias", db, {C});
}

static void dump_gelu(TensorFile& tf, int n) {
    Vec x = rnd(n, -6.0f, 6.0f), dout = rnd(n), out(n), dx(n, 0.0f);
    x[0] = 9.0f; x[1] = -9.0f; x[2] = 0.0f; x[3] = 1e-3f;  // tails and the origin
    gelu_forward_cpu(out.data(), x.data(), n);
    gelu_backward_cpu(dx.data(), dout.data(), x.data(), n);
    tf.add("gelu.x", x, {n});
    tf.add("gelu.dout", dout, {n});
    tf.add("gelu.out", out, {n});
    tf.add("gelu.dx", dx, {n});
}

// lengths empty: no key-padding mask. config = [B, T, C, NH, causal, has_lengths]
static void dump_attention(TensorFile& tf, const std::string& name, int B, int T, int C, int NH, bool causal,
                           std::vector<int> lengths) {
    std::string p = name + ".";
    const int* len = lengths.empty() ? nullptr : lengths.data();
    Vec qkv = rnd((size_t)B * T * 3 * C, -1.5f, 1.5f), out((size_t)B * T * C), lse((size_t)B * NH * T);
    attention_forward_cpu(out.data(), lse.data(), qkv.data(), len, B, T, C, NH, causal);
    Vec dout = rnd(out.size()), dqkv(qkv.size(), 0.0f), D(lse.size());
    attention_backward_cpu(dqkv.data(), D.data(), dout.data(), qkv.data(), out.data(), lse.data(), len, B, T, C, NH,
                           causal);
    float cfg[6] = {(float)B, (float)T, (float)C, (float)NH, (float)causal, (float)(len != nullptr)};
    tf.add(p + "config", cfg, {6});
    if (len) tf.add_ints(p + "lengths", len, {B});
    tf.add(p + "qkv", qkv, {B, T, 3 * C});
    tf.add(p + "out", out, {B, T, C});
    tf.add(p + "lse", lse, {B, NH, T});
    tf.add(p + "dout", dout, {B, T, C});
    tf.add(p + "dqkv", dqkv, {B, T, 3 * C});
}

// the decode step over a growing KV cache (T_max = T + 2): out[:, n-1] after the step with n valid
// positions. config = [B, T, C, NH]
static void dump_attention_step(TensorFile& tf, const std::string& name, int B, int T, int C, int NH) {
    std::string p = name + ".";
    int T_max = T + 2;
    Vec qkv = rnd((size_t)B * T * 3 * C, -1.5f, 1.5f), out((size_t)B * T * C);
    Vec kc((size_t)B * T_max * C, 0.0f), vc(kc.size(), 0.0f), q((size_t)B * C), o((size_t)B * C);
    for (int n = 1; n <= T; n++) {
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++) {
                const float* row = qkv.data() + ((size_t)b * T + n - 1) * 3 * C;
                q[(size_t)b * C + c] = row[c];
                kc[((size_t)b * T_max + n - 1) * C + c] = row[C + c];
                vc[((size_t)b * T_max + n - 1) * C + c] = row[2 * C + c];
            }
        attention_step_cpu(o.data(), q.data(), kc.data(), vc.data(), B, n, T_max, C, NH);
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++) out[((size_t)b * T + n - 1) * C + c] = o[(size_t)b * C + c];
    }
    float cfg[4] = {(float)B, (float)T, (float)C, (float)NH};
    tf.add(p + "config", cfg, {4});
    tf.add(p + "qkv", qkv, {B, T, 3 * C});
    tf.add(p + "out", out, {B, T, C});
}

// config = [B, H, W, p, D, has_bias]
static void dump_patch_embed(TensorFile& tf, const std::string& name, int B, int H, int W, int p, int D, bool with_bias) {
    std::string s = name + ".";
    int P = (H / p) * (W / p), K = p * p * 3;
    Vec img = rnd((size_t)B * H * W * 3, 0.0f, 1.0f), w = rnd((size_t)D * K), b = rnd(D);
    Vec patches((size_t)B * P * K), out((size_t)B * P * D), dout = rnd(out.size()), dw(w.size(), 0.0f), db(D, 0.0f);
    patch_embed_forward(false, out.data(), patches.data(), img.data(), w.data(), with_bias ? b.data() : nullptr, B, H,
                        W, p, D);
    patch_embed_backward(false, dw.data(), with_bias ? db.data() : nullptr, dout.data(), patches.data(), B, P, K, D);
    float cfg[6] = {(float)B, (float)H, (float)W, (float)p, (float)D, (float)with_bias};
    tf.add(s + "config", cfg, {6});
    tf.add(s + "images", img, {B, H, W, 3});
    tf.add(s + "weight", w, {D, K});
    if (with_bias) tf.add(s + "bias", b, {D});
    tf.add(s + "patches", patches, {B, P, K});
    tf.add(s + "out", out, {B, P, D});
    tf.add(s + "dout", dout, {B, P, D});
    tf.add(s + "dweight", dw, {D, K});
    if (with_bias) tf.add(s + "dbias", db, {D});
}

int main(int argc, char** argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s out.bin\n", argv[0]); return 1; }
    rng_seed(&g_rng, 4321);
    TensorFile tf;
    dump_layernorm(tf, "ln.N9.C13", 9, 13, 2.0f);
    dump_layernorm(tf, "ln.N1.C8", 1, 8, 2.0f);
    dump_layernorm(tf, "ln.N6.C16.small", 6, 16, 0.005f);
    dump_gelu(tf, 41);
    for (int causal = 0; causal < 2; causal++) {
        std::string m = causal ? ".causal" : ".bidir";
        dump_attention(tf, "attn.T1" + m, 2, 1, 4, 1, causal, {});
        dump_attention(tf, "attn.T1" + m + ".len", 2, 1, 12, 3, causal, {1, 0});
        dump_attention(tf, "attn.T7" + m, 2, 7, 12, 3, causal, {});
        dump_attention(tf, "attn.T7" + m + ".len", 3, 7, 12, 3, causal, {7, 3, 1});
        dump_attention(tf, "attn.T13" + m, 1, 13, 8, 1, causal, {});
        dump_attention(tf, "attn.T13" + m + ".len", 3, 13, 12, 3, causal, {13, 6, 0});
        dump_attention(tf, "attn.T40" + m + ".len", 2, 40, 20, 2, causal, {40, 23});
    }
    dump_attention_step(tf, "attnstep.T9", 2, 9, 12, 3);
    dump_attention_step(tf, "attnstep.T1", 1, 1, 8, 1);
    dump_patch_embed(tf, "patch.p4", 2, 8, 12, 4, 5, true);
    dump_patch_embed(tf, "patch.p3", 1, 9, 6, 3, 7, false);
    dump_patch_embed(tf, "patch.p1", 2, 3, 5, 1, 4, true);
    if (!tf.save(argv[1])) return 1;
    printf("wrote %zu tensors to %s\n", tf.entries.size(), argv[1]);
    return 0;
}
