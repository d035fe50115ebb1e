// torch_dump.cu: run the CPU reference on random inputs and write inputs, outputs and
// gradients to a tensor file (test/tensor_file.h) that test/torch_check.py recomputes
// independently in PyTorch float64.
//
//   build: g++ -O3 -fopenmp -march=native -std=c++17 -x c++ test/torch_dump.cu -o build/torch_dump
//   usage: build/torch_dump out.bin
//
// Names are "<case>.<tensor>", e.g. scan.L7.u (input), scan.L7.out (output), scan.L7.dout
// (random upstream gradient), scan.L7.du (our gradient). Backward gradients start from zero
// (the functions accumulate).
#include "../src/common.h"
#include "../src/activations.h"
#include "../src/conv1d.h"
#include "../src/cross_entropy.h"
#include "../src/embedding.h"
#include "../src/linear.h"
#include "../src/rmsnorm.h"
#include "../src/selective_scan.h"
#include "../src/mamba_model.h"
#include <string>
#include <vector>
#include "tensor_file.h"

typedef std::vector<float> Vec;

static Rng g_rng;
static Vec rnd(size_t n, float lo = -1.0f, float hi = 1.0f) {
    Vec v(n);
    for (size_t i = 0; i < n; i++) v[i] = lo + (hi - lo) * rng_uniform(&g_rng);
    return v;
}
static Vec zeros(size_t n) { return Vec(n, 0.0f); }

// ---------------------------------------------------------------------------
// selective scan: forward, backward, and the single-step recurrence

static void dump_scan(TensorFile& tf, int B, int L, int E, int N) {
    std::string p = "scan.L" + std::to_string(L) + ".";
    size_t BLE = (size_t)B * L * E, BLN = (size_t)B * L * N, EN = (size_t)E * N;
    int nc = (L + SCAN_CHUNK - 1) / SCAN_CHUNK;
    Vec u = rnd(BLE), delta = rnd(BLE, -1.5f, 1.0f), z = rnd(BLE, -2.0f, 2.0f);
    Vec Bm = rnd(BLN), Cm = rnd(BLN), D = rnd(E), delta_bias = rnd(E, -1.0f, 0.5f);
    // A = -exp(A_log) with A_log around log(1..N), like the Mamba init, plus noise
    Vec A_log(EN);
    for (int e = 0; e < E; e++)
        for (int n = 0; n < N; n++) A_log[e * N + n] = logf((float)(n + 1)) + 0.3f * (rng_uniform(&g_rng) - 0.5f);
    Vec out = zeros(BLE), hs = zeros((size_t)B * nc * EN);
    selective_scan_forward_cpu(out.data(), hs.data(), u.data(), delta.data(), A_log.data(), Bm.data(),
                               Cm.data(), D.data(), z.data(), delta_bias.data(), B, L, E, N);
    Vec dout = rnd(BLE);
    Vec du = zeros(BLE), ddelta = zeros(BLE), dA_log = zeros(EN), dBm = zeros(BLN), dCm = zeros(BLN);
    Vec dD = zeros(E), dz = zeros(BLE), ddelta_bias = zeros(E);
    selective_scan_backward_cpu(du.data(), ddelta.data(), dA_log.data(), dBm.data(), dCm.data(), dD.data(),
                                dz.data(), ddelta_bias.data(), dout.data(), u.data(), delta.data(),
                                A_log.data(), Bm.data(), Cm.data(), D.data(), z.data(), delta_bias.data(),
                                hs.data(), B, L, E, N);
    tf.add(p + "u", u, {B, L, E});
    tf.add(p + "delta", delta, {B, L, E});
    tf.add(p + "A_log", A_log, {E, N});
    tf.add(p + "Bm", Bm, {B, L, N});
    tf.add(p + "Cm", Cm, {B, L, N});
    tf.add(p + "D", D, {E});
    tf.add(p + "z", z, {B, L, E});
    tf.add(p + "delta_bias", delta_bias, {E});
    tf.add(p + "out", out, {B, L, E});
    tf.add(p + "hs", hs, {B, nc, E, N});
    tf.add(p + "dout", dout, {B, L, E});
    tf.add(p + "du", du, {B, L, E});
    tf.add(p + "ddelta", ddelta, {B, L, E});
    tf.add(p + "dA_log", dA_log, {E, N});
    tf.add(p + "dBm", dBm, {B, L, N});
    tf.add(p + "dCm", dCm, {B, L, N});
    tf.add(p + "dD", dD, {E});
    tf.add(p + "dz", dz, {B, L, E});
    tf.add(p + "ddelta_bias", ddelta_bias, {E});

    // the generation path: L single steps from a zero state must match the full forward
    std::string s = "scanstep.L" + std::to_string(L) + ".";
    Vec h = zeros((size_t)B * EN), step_out = zeros(BLE);
    Vec ut(B * E), dt(B * E), zt(B * E), bt(B * N), ct(B * N), ot(B * E);
    for (int t = 0; t < L; t++) {
        for (int b = 0; b < B; b++) {
            for (int e = 0; e < E; e++) {
                size_t i = ((size_t)b * L + t) * E + e;
                ut[b * E + e] = u[i]; dt[b * E + e] = delta[i]; zt[b * E + e] = z[i];
            }
            for (int n = 0; n < N; n++) {
                size_t i = ((size_t)b * L + t) * N + n;
                bt[b * N + n] = Bm[i]; ct[b * N + n] = Cm[i];
            }
        }
        selective_scan_step_cpu(ot.data(), h.data(), ut.data(), dt.data(), A_log.data(), bt.data(), ct.data(),
                                D.data(), zt.data(), delta_bias.data(), B, E, N);
        for (int b = 0; b < B; b++)
            for (int e = 0; e < E; e++) step_out[((size_t)b * L + t) * E + e] = ot[b * E + e];
    }
    tf.add(s + "out", step_out, {B, L, E});
    tf.add(s + "h", h, {B, E, N});
}

// ---------------------------------------------------------------------------
// rmsnorm

static void dump_rmsnorm(TensorFile& tf, const char* name, int N, int C) {
    std::string p = std::string(name) + ".";
    Vec x = rnd((size_t)N * C, -2.0f, 2.0f), w = rnd(C, 0.5f, 1.5f);
    Vec out = zeros((size_t)N * C), rstd = zeros(N);
    rmsnorm_forward_cpu(out.data(), rstd.data(), x.data(), w.data(), N, C);
    Vec dout = rnd((size_t)N * C), dx = zeros((size_t)N * C), dw = zeros(C);
    rmsnorm_backward_cpu(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N, C);
    tf.add(p + "x", x, {N, C});
    tf.add(p + "weight", w, {C});
    tf.add(p + "out", out, {N, C});
    tf.add(p + "rstd", rstd, {N});
    tf.add(p + "dout", dout, {N, C});
    tf.add(p + "dx", dx, {N, C});
    tf.add(p + "dweight", dw, {C});
}

// ---------------------------------------------------------------------------
// depthwise causal conv1d: forward, backward, and the single-step recurrence

static void dump_conv(TensorFile& tf, int B, int L, int E, int K) {
    std::string p = "conv.L" + std::to_string(L) + ".";
    size_t n = (size_t)B * L * E;
    Vec x = rnd(n), w = rnd((size_t)E * K), bias = rnd(E);
    Vec out = zeros(n);
    conv1d_forward_cpu(out.data(), x.data(), w.data(), bias.data(), B, L, E, K);
    Vec dout = rnd(n), dx = zeros(n), dw = zeros((size_t)E * K), db = zeros(E);
    conv1d_backward_cpu(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), B, L, E, K);
    tf.add(p + "x", x, {B, L, E});
    tf.add(p + "weight", w, {E, K});
    tf.add(p + "bias", bias, {E});
    tf.add(p + "out", out, {B, L, E});
    tf.add(p + "dout", dout, {B, L, E});
    tf.add(p + "dx", dx, {B, L, E});
    tf.add(p + "dweight", dw, {E, K});
    tf.add(p + "dbias", db, {E});

    std::string s = "convstep.L" + std::to_string(L) + ".";
    Vec state = zeros((size_t)B * E * (K - 1)), step_out = zeros(n), xt(B * E), ot(B * E);
    for (int t = 0; t < L; t++) {
        for (int b = 0; b < B; b++)
            for (int e = 0; e < E; e++) xt[b * E + e] = x[((size_t)b * L + t) * E + e];
        conv1d_step_cpu(ot.data(), state.data(), xt.data(), w.data(), bias.data(), B, E, K);
        for (int b = 0; b < B; b++)
            for (int e = 0; e < E; e++) step_out[((size_t)b * L + t) * E + e] = ot[b * E + e];
    }
    tf.add(s + "out", step_out, {B, L, E});
    tf.add(s + "state", state, {B, E, K - 1});
}

// ---------------------------------------------------------------------------
// linear (with and without bias)

static void dump_linear(TensorFile& tf, const char* name, int N, int IC, int OC, bool with_bias) {
    std::string p = std::string(name) + ".";
    Vec x = rnd((size_t)N * IC), w = rnd((size_t)OC * IC), b = rnd(OC);
    Vec out = zeros((size_t)N * OC);
    linear_forward_cpu(out.data(), x.data(), w.data(), with_bias ? b.data() : nullptr, N, IC, OC);
    Vec dout = rnd((size_t)N * OC), dx = zeros((size_t)N * IC), dw = zeros((size_t)OC * IC), db = zeros(OC);
    linear_backward_cpu(dx.data(), dw.data(), with_bias ? db.data() : nullptr, dout.data(), x.data(), w.data(),
                        N, IC, OC);
    tf.add(p + "x", x, {N, IC});
    tf.add(p + "weight", w, {OC, IC});
    if (with_bias) tf.add(p + "bias", b, {OC});
    tf.add(p + "out", out, {N, OC});
    tf.add(p + "dout", dout, {N, OC});
    tf.add(p + "dx", dx, {N, IC});
    tf.add(p + "dweight", dw, {OC, IC});
    if (with_bias) tf.add(p + "dbias", db, {OC});
}

// ---------------------------------------------------------------------------
// fused softmax cross-entropy (some targets -1 = ignored)

static void dump_ce(TensorFile& tf, int BT, int V, float scale) {
    Vec logits = rnd((size_t)BT * V, -3.0f, 3.0f);
    std::vector<int> targets(BT);
    for (int i = 0; i < BT; i++) targets[i] = (i % 5 == 3) ? -1 : (int)(rng_u32(&g_rng) % V);
    tf.add("ce.logits", logits, {BT, V});
    tf.add_ints("ce.targets", targets.data(), {BT});
    tf.add_scalar("ce.scale", scale);
    // without write_grad the logits must stay untouched
    Vec l0 = logits, losses0 = zeros(BT);
    cross_entropy_cpu(losses0.data(), l0.data(), targets.data(), BT, V, scale, false);
    tf.add("ce.nograd.losses", losses0, {BT});
    tf.add("ce.nograd.logits_after", l0, {BT, V});
    Vec l1 = logits, losses = zeros(BT);
    cross_entropy_cpu(losses.data(), l1.data(), targets.data(), BT, V, scale, true);
    tf.add("ce.losses", losses, {BT});
    tf.add("ce.dlogits", l1, {BT, V});
}

// ---------------------------------------------------------------------------
// embedding and the elementwise activations

static void dump_embedding(TensorFile& tf, int BT, int V, int C) {
    Vec wte = rnd((size_t)V * C);
    std::vector<int> tokens(BT);
    for (int i = 0; i < BT; i++) tokens[i] = (int)(rng_u32(&g_rng) % V);
    tokens[BT - 1] = tokens[0];  // a repeated token: its gradient rows must add up
    Vec out = zeros((size_t)BT * C), dout = rnd((size_t)BT * C), dwte = zeros((size_t)V * C);
    embedding_forward_cpu(out.data(), tokens.data(), wte.data(), BT, C);
    embedding_backward_cpu(dwte.data(), dout.data(), tokens.data(), BT, C);
    tf.add("emb.weight", wte, {V, C});
    tf.add_ints("emb.tokens", tokens.data(), {BT});
    tf.add("emb.out", out, {BT, C});
    tf.add("emb.dout", dout, {BT, C});
    tf.add("emb.dweight", dwte, {V, C});
}

static void dump_activations(TensorFile& tf, int n) {
    Vec x = rnd(n, -6.0f, 6.0f);
    x[0] = 25.0f; x[1] = -25.0f; x[2] = 19.5f; x[3] = 20.5f;  // both sides of softplus' linear cutoff
    Vec dout = rnd(n);
    Vec s = zeros(n), ds = zeros(n), sp = zeros(n), dsp = zeros(n);
    silu_forward_cpu(s.data(), x.data(), n);
    silu_backward_cpu(ds.data(), dout.data(), x.data(), n);
    softplus_forward_cpu(sp.data(), x.data(), n);
    softplus_backward_cpu(dsp.data(), dout.data(), x.data(), n);
    Vec a = rnd(n), b = rnd(n), sum = zeros(n), acc = a;
    add_forward_cpu(sum.data(), a.data(), b.data(), n);
    add_inplace_cpu(acc.data(), b.data(), n);
    tf.add("act.x", x, {n});
    tf.add("act.dout", dout, {n});
    tf.add("act.silu", s, {n});
    tf.add("act.dsilu", ds, {n});
    tf.add("act.softplus", sp, {n});
    tf.add("act.dsoftplus", dsp, {n});
    tf.add("act.a", a, {n});
    tf.add("act.b", b, {n});
    tf.add("act.add", sum, {n});
    tf.add("act.add_inplace", acc, {n});
}

// ---------------------------------------------------------------------------
// the whole Mamba LM on CPU: parameters, tokens, targets, loss, gradients

// strong: dt_proj.bias ~ U(-1.5, 0.5) (dt ~ 0.2..1 instead of the init's 0.001..0.1) and an
// O(1) embedding, so the scan path dominates the outputs and gradients instead of the D skip
static void dump_model(TensorFile& tf, const char* name, MambaConfig cfg, int B, int T, uint64_t seed,
                       bool strong = false) {
    std::string p = std::string(name) + ".";
    mamba_config_derive(&cfg);
    MambaModel model;
    MambaModel* m = &model;
    mamba_build(m, cfg, B, T, false);
    mamba_init_params(m, seed);
    // perturb the init so no tensor is constant (all-ones norms, D = 1 would hide index mix-ups)
    ParamStore* ps = &m->params;
    for (size_t i = 0; i < ps->num_params; i++) ps->params[i] += 0.05f * rng_normal(&g_rng);
    if (strong) {
        for (const ParamTensor& t : ps->tensors) {
            float* p0 = ps->params + t.offset;
            bool is_dtb = t.name.find("dt_proj.bias") != std::string::npos;
            bool is_emb = t.name == "embedding.weight";
            for (size_t j = 0; j < t.numel; j++) {
                if (is_dtb) p0[j] = -1.5f + 2.0f * rng_uniform(&g_rng);
                if (is_emb) p0[j] = rng_normal(&g_rng);
            }
        }
    }
    std::vector<int> tokens(B * T), targets(B * T);
    for (int i = 0; i < B * T; i++) {
        tokens[i] = (int)(rng_u32(&g_rng) % cfg.vocab_size);
        targets[i] = (int)(rng_u32(&g_rng) % cfg.vocab_size);
    }
    // logits: a forward without targets leaves them in m->logits (host memory on CPU)
    size_t BTV = (size_t)B * T * cfg.vocab_size;
    mamba_forward(m, tokens.data(), nullptr, B, T);
    Vec logits(m->logits, m->logits + BTV);
    // the recurrent generation path, one token at a time per sequence, must give the same logits
    Vec step_logits(BTV);
    for (int b = 0; b < B; b++) {
        MambaStepState st;
        mamba_step_init(&st, m, ps->params);
        for (int t = 0; t < T; t++)
            mamba_step(&st, tokens[b * T + t], step_logits.data() + ((size_t)b * T + t) * cfg.vocab_size);
    }
    float loss = mamba_forward(m, tokens.data(), targets.data(), B, T);
    mamba_zero_grad(m);
    mamba_backward(m);
    float c[8] = {(float)cfg.vocab_size, (float)cfg.d_model, (float)cfg.n_layer, (float)cfg.d_state,
                  (float)cfg.d_conv, (float)cfg.expand, (float)cfg.dt_rank, (float)cfg.d_inner};
    tf.add(p + "config", c, {8});
    tf.add_ints(p + "tokens", tokens.data(), {B, T});
    tf.add_ints(p + "targets", targets.data(), {B, T});
    tf.add_scalar(p + "loss", loss);
    tf.add(p + "logits", logits, {B, T, cfg.vocab_size});
    tf.add(p + "step_logits", step_logits, {B, T, cfg.vocab_size});
    for (const ParamTensor& t : ps->tensors) {
        std::vector<int> dims(t.shape, t.shape + t.ndim);
        tf.add(p + "param." + t.name, ps->params + t.offset, dims);
        tf.add(p + "grad." + t.name, ps->grads + t.offset, dims);
    }
    mamba_free(m);
}

int main(int argc, char** argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s out.bin\n", argv[0]); return 1; }
    rng_seed(&g_rng, 1234);
    TensorFile tf;
    const int lens[] = {1, 7, 70, 130};  // 70 and 130: not multiples of SCAN_CHUNK
    tf.add_scalar("scan.chunk", (float)SCAN_CHUNK);
    for (int L : lens) dump_scan(tf, 2, L, 5, 4);
    dump_rmsnorm(tf, "rmsnorm", 9, 13);
    dump_conv(tf, 2, 1, 5, 4);
    dump_conv(tf, 2, 7, 5, 4);
    dump_conv(tf, 3, 9, 6, 3);
    dump_linear(tf, "linear", 7, 13, 10, true);
    dump_linear(tf, "linear_nobias", 5, 3, 6, false);
    dump_ce(tf, 12, 11, 1.0f / 12);
    dump_embedding(tf, 9, 11, 6);
    dump_activations(tf, 37);

    MambaConfig a = {};
    a.vocab_size = 17; a.d_model = 16; a.n_layer = 2; a.d_state = 4; a.d_conv = 4; a.expand = 2;
    dump_model(tf, "model.T1", a, 2, 1, 11);
    dump_model(tf, "model.T7", a, 2, 7, 12);
    dump_model(tf, "model.T70", a, 2, 70, 13);
    dump_model(tf, "model.S.T70", a, 2, 70, 15, true);
    // d_model 20 gives dt_rank 2 (the x_proj split with R > 1); K = 3, one layer
    MambaConfig b = {};
    b.vocab_size = 13; b.d_model = 20; b.n_layer = 1; b.d_state = 3; b.d_conv = 3; b.expand = 2;
    dump_model(tf, "model.R2.T9", b, 3, 9, 14);

    if (!tf.save(argv[1])) return 1;
    printf("wrote %zu tensors to %s\n", tf.entries.size(), argv[1]);
    return 0;
}
