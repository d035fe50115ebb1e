// torch_lora_dump.cu: run the CPU reference of LoRA (src/lora.h) and of the Mamba LM with
// adapters on random inputs and write inputs, outputs and gradients to a tensor file
// (test/tensor_file.h) that test/torch_lora_check.py recomputes independently in PyTorch float64.
//
//   usage: build/torch_lora_dump out.bin   (torch_lora_check.py builds and runs it)
//
// adapter.*: x (N, IC), weight (OC, IC), bias (OC), A (r, IC), B (OC, r), keep (N, IC) the
//   dropout factors (0 or 1/(1-p)), config [N, IC, OC, r, scale], dout; ours: out, dx, dA, dB
//   (the base linear with bias plus the adapter, gradients from zero).
// lora_model.<name>.*: config (as torch_dump's model cases), lora [rank, alpha, in_proj_rows],
//   param.<tensor> for every tensor, tokens, targets, loss, logits, grad.<tensor> for the
//   trainable tensors only.
#include "test_util.h"
#include "../src/mamba_model.h"
#include <string>
#include <vector>
#include "tensor_file.h"

typedef std::vector<float> Vec;
static Rng g_rng;
static Vec rnd(size_t n, float lo = -1.0f, float hi = 1.0f) { return random_vec(n, &g_rng, lo, hi); }

static void dump_adapter(TensorFile& tf, int N, int IC, int OC, int r, float scale, float p, uint64_t seed) {
    Vec x = rnd((size_t)N * IC), W = rnd((size_t)OC * IC), b = rnd(OC), A = rnd((size_t)r * IC), B = rnd((size_t)OC * r);
    Vec out((size_t)N * OC), h((size_t)N * r), xd((size_t)N * IC), keep((size_t)N * IC);
    for (size_t i = 0; i < keep.size(); i++) keep[i] = lora_keep(seed, i, p);
    linear_forward_cpu(out.data(), x.data(), W.data(), b.data(), N, IC, OC);
    lora_down_forward_cpu(h.data(), xd.data(), x.data(), A.data(), N, IC, r, p, seed);
    lora_up_forward_cpu(out.data(), h.data(), B.data(), N, r, OC, scale);
    Vec dout = rnd((size_t)N * OC), dx((size_t)N * IC, 0.0f), dA((size_t)r * IC, 0.0f), dB((size_t)OC * r, 0.0f), dh((size_t)N * r, 0.0f);
    linear_backward_cpu(dx.data(), nullptr, nullptr, dout.data(), x.data(), W.data(), N, IC, OC);
    lora_up_backward_cpu(dh.data(), dB.data(), dout.data(), h.data(), B.data(), N, r, OC, scale);
    lora_down_backward_cpu(dx.data(), dA.data(), dh.data(), xd.data(), x.data(), A.data(), N, IC, r, p, seed);
    float cfg[5] = {(float)N, (float)IC, (float)OC, (float)r, scale};
    tf.add("adapter.config", cfg, {5});
    tf.add("adapter.x", x, {N, IC}); tf.add("adapter.weight", W, {OC, IC}); tf.add("adapter.bias", b, {OC});
    tf.add("adapter.A", A, {r, IC}); tf.add("adapter.B", B, {OC, r}); tf.add("adapter.keep", keep, {N, IC});
    tf.add("adapter.dout", dout, {N, OC}); tf.add("adapter.out", out, {N, OC});
    tf.add("adapter.dx", dx, {N, IC}); tf.add("adapter.dA", dA, {r, IC}); tf.add("adapter.dB", dB, {OC, r});
}

static void dump_model(TensorFile& tf, const char* name, MambaConfig cfg, LoraConfig lc, int B, int T, uint64_t seed) {
    std::string p = std::string("lora_model.") + name + ".";
    mamba_config_derive(&cfg);
    MambaModel m;
    mamba_build(&m, cfg, B, T, false, true, lc);
    mamba_init_params(&m, seed);
    ParamStore* ps = &m.params;
    // no tensor at a special value; B != 0 so the adapters contribute
    for (size_t i = 0; i < ps->num_params; i++) ps->params[i] += 0.1f * rng_normal(&g_rng);
    std::vector<int> tokens(B * T), targets(B * T);
    for (int i = 0; i < B * T; i++) {
        tokens[i] = (int)(rng_u32(&g_rng) % cfg.vocab_size);
        targets[i] = (int)(rng_u32(&g_rng) % cfg.vocab_size);
    }
    size_t BTV = (size_t)B * T * cfg.vocab_size;
    mamba_forward(&m, tokens.data(), nullptr, B, T);
    Vec logits(m.logits, m.logits + BTV);
    float loss = mamba_forward(&m, tokens.data(), targets.data(), B, T);
    mamba_zero_grad(&m);
    mamba_backward(&m);
    float c[8] = {(float)cfg.vocab_size, (float)cfg.d_model, (float)cfg.n_layer, (float)cfg.d_state,
                  (float)cfg.d_conv, (float)cfg.expand, (float)cfg.dt_rank, (float)cfg.d_inner};
    tf.add(p + "config", c, {8});
    int in_rows = lora_active(m.lora_layers[0].in_proj) ? m.lora_layers[0].in_proj.out_features : 0;
    float l[3] = {(float)lc.rank, lc.alpha, (float)in_rows};
    tf.add(p + "lora", l, {3});
    tf.add_ints(p + "tokens", tokens.data(), {B, T});
    tf.add_ints(p + "targets", targets.data(), {B, T});
    tf.add_scalar(p + "loss", loss);
    tf.add(p + "logits", logits, {B, T, cfg.vocab_size});
    for (const ParamTensor& t : ps->tensors) {
        std::vector<int> shape(t.shape, t.shape + t.ndim);
        tf.add(p + "param." + t.name, Vec(ps->params + t.offset, ps->params + t.offset + t.numel), shape);
        if (t.trainable) tf.add(p + "grad." + t.name, Vec(ps->grads + t.offset, ps->grads + t.offset + t.numel), shape);
    }
    mamba_free(&m);
}

int main(int argc, char** argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s out.bin\n", argv[0]); return 1; }
    rng_seed(&g_rng, 4321);
    TensorFile tf;
    dump_adapter(tf, 6, 10, 7, 3, 2.5f, 0.25f, 99);
    MambaConfig a = {};
    a.vocab_size = 17; a.d_model = 16; a.n_layer = 2; a.d_state = 4; a.d_conv = 4; a.expand = 2;
    LoraConfig all; all.rank = 3; all.alpha = 6; all.targets = "in_proj,x_proj,dt_proj,out_proj"; all.train_also = "D";
    dump_model(tf, "all", a, all, 2, 9, 21);
    LoraConfig xo; xo.rank = 2; xo.alpha = 8; xo.targets = "in_proj_x,out_proj"; xo.train_also = "A_log,conv1d";
    dump_model(tf, "in_proj_x", a, xo, 2, 70, 22);
    if (!tf.save(argv[1])) return 1;
    printf("wrote %zu tensors to %s\n", tf.entries.size(), argv[1]);
    return 0;
}
