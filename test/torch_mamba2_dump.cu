// torch_mamba2_dump.cu: run the CPU reference of the Mamba-2 block (src/mamba2.h) on random inputs
// and write inputs, parameters, outputs and gradients to a tensor file (test/tensor_file.h) that
// test/torch_mamba2_check.py recomputes independently in PyTorch float64.
//
//   build: torch_mamba2_check.py builds build/torch_mamba2_dump with the Makefile's g++ command
//          when it is missing or older than its sources (test/torch_check.py load_dump)
//   usage: build/torch_mamba2_dump out.bin
//
// Names are "<case>.<tensor>". Per case:
//   config  [B, L, d_model, expand, headdim, d_state, ngroups, d_conv, chunk, norm_groups]
//   inputs  inp (B, L, D), dout (B, L, D) the upstream gradient
//   params  in_proj_w (Z, D), conv_w (C, K), conv_b (C), dt_bias, A_log, D (H), norm_w (E),
//           out_proj_w (D, E)
//   ours    out (the forward), conv_state (B, C, K-1), ssm_state (B, H, P, N) (the forward's final
//           states), out_step, conv_state_step, ssm_state_step (the recurrent step over t from zero
//           states), dinp and d<param> for every parameter (the backward from zero gradients)
#include "mamba2_test_util.h"
#include <string>
#include <vector>
#include "tensor_file.h"

typedef std::vector<float> Vec;

static void dump_case(TensorFile& tf, const std::string& name, int B, int L, int expand, int G, int K, int chunk,
                      int NG, bool random_params, uint64_t seed) {
    std::string pre = name + ".";
    Mamba2Config c = {};
    c.d_model = 8; c.expand = expand; c.headdim = 4; c.d_state = 4; c.ngroups = G; c.d_conv = K; c.chunk = chunk;
    c.norm_groups = NG;
    mamba2_config_derive(&c);
    int D = c.d_model, E = c.d_inner, H = c.nheads, P = c.headdim, N = c.d_state, C = c.conv_dim, Z = c.d_in_proj;
    ParamStore ps; params_init(&ps);
    Mamba2Index ix = mamba2_declare_params(&ps, "", c);
    params_allocate(&ps, false, true);
    Mamba2Params p = mamba2_views(&ps, ps.params, ix), d = mamba2_grad_views(&ps, ix);
    Rng r; rng_seed(&r, seed);
    mamba2_init_params(p, c, &r);
    if (random_params) mamba2_randomize_params(p, c, &r);  // (false: the init's own regime)
    size_t BLD = (size_t)B * L * D, CS = (size_t)B * C * (K - 1), SS = (size_t)B * H * P * N;
    Vec inp = random_vec(BLD, &r), dout = random_vec(BLD, &r);
    Vec acts_mem(mamba2_acts_bytes(c, B, L) / sizeof(float) + 4);
    Mamba2Acts a;
    Arena ar = {(char*)acts_mem.data(), 0};
    mamba2_layout_acts(&a, &ar, c, B, L);
    Vec scratch_mem(mamba2_scratch_bytes(c, B, L) / sizeof(float) + 4);
    Mamba2Scratch s;
    Arena sar = {(char*)scratch_mem.data(), 0};
    mamba2_layout_scratch(&s, &sar, c, B, L);

    Vec out(BLD), conv_state(CS), ssm_state(SS);
    mamba2_block_forward_cpu(out.data(), a, s, inp.data(), p, c, B, L, conv_state.data(), ssm_state.data());
    // the generation path: L single steps from zero states
    Vec out_step(BLD), cs(CS, 0.0f), ss(SS, 0.0f), xt((size_t)B * D), yt((size_t)B * D);
    for (int t = 0; t < L; t++) {
        for (int b = 0; b < B; b++)
            for (int j = 0; j < D; j++) xt[(size_t)b * D + j] = inp[((size_t)b * L + t) * D + j];
        mamba2_step_cpu(yt.data(), cs.data(), ss.data(), s, xt.data(), p, c, B);
        for (int b = 0; b < B; b++)
            for (int j = 0; j < D; j++) out_step[((size_t)b * L + t) * D + j] = yt[(size_t)b * D + j];
    }
    Vec dinp(BLD, 0.0f);
    params_zero_grad(&ps);
    mamba2_block_backward_cpu(dinp.data(), d, s, dout.data(), inp.data(), p, a, c, B, L);

    Vec config = {(float)B, (float)L, (float)D, (float)expand, (float)P, (float)N, (float)G, (float)K,
                  (float)chunk, (float)NG};
    tf.add(pre + "config", config, {10});
    tf.add(pre + "inp", inp, {B, L, D});
    tf.add(pre + "dout", dout, {B, L, D});
    const char* names[8] = {"in_proj_w", "conv_w", "conv_b", "dt_bias", "A_log", "D", "norm_w", "out_proj_w"};
    const float* vals[8] = {p.in_proj_w, p.conv_w, p.conv_b, p.dt_bias, p.A_log, p.D, p.norm_w, p.out_proj_w};
    const float* grads[8] = {d.in_proj_w, d.conv_w, d.conv_b, d.dt_bias, d.A_log, d.D, d.norm_w, d.out_proj_w};
    std::vector<int> shapes[8] = {{Z, D}, {C, K}, {C}, {H}, {H}, {H}, {E}, {D, E}};
    for (int i = 0; i < 8; i++) {
        size_t n = TensorFile::numel(shapes[i]);
        tf.add(pre + names[i], Vec(vals[i], vals[i] + n), shapes[i]);
        tf.add(pre + "d" + names[i], Vec(grads[i], grads[i] + n), shapes[i]);
    }
    tf.add(pre + "out", out, {B, L, D});
    tf.add(pre + "conv_state", conv_state, {B, C, K - 1});
    tf.add(pre + "ssm_state", ssm_state, {B, H, P, N});
    tf.add(pre + "out_step", out_step, {B, L, D});
    tf.add(pre + "conv_state_step", cs, {B, C, K - 1});
    tf.add(pre + "ssm_state_step", ss, {B, H, P, N});
    tf.add(pre + "dinp", dinp, {B, L, D});
    params_free(&ps);
}

int main(int argc, char** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s out.bin\n", argv[0]);
        return 2;
    }
    TensorFile tf;
    //                                      B  L   expand G  K  chunk NG random seed
    dump_case(tf, "m2.L37.G2", 2, 37, 2, 2, 4, 16, 1, true, 1);
    dump_case(tf, "m2.L1.G1", 2, 1, 2, 1, 4, 16, 1, true, 2);
    dump_case(tf, "m2.L7.G1", 2, 7, 2, 1, 4, 16, 1, true, 3);
    dump_case(tf, "m2.L70.G2.ng2.c32", 1, 70, 2, 2, 4, 32, 2, true, 4);
    dump_case(tf, "m2.L23.K2.e1.c5", 1, 23, 1, 1, 2, 5, 1, true, 5);
    dump_case(tf, "m2.L37.init", 2, 37, 2, 1, 4, 16, 1, false, 6);
    return tf.save(argv[1]) ? 0 : 1;
}
