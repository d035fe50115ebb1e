// gpu_model.cu: the whole model on the GPU against the CPU reference.
//   - one training step: loss and every parameter gradient (FP32 matmuls; and bf16 matmul operands)
//   - AdamW on both backends gives the same parameters
//   - a short training run: the GPU loss curve follows the CPU one
#include "../src/mamba_model.h"
#include "test_util.h"
#include "mamba_test_util.h"

// the bf16 layout's bytes: per M1 layer xin, z, delta, y, u (BT x E), dt_low (BT x R), Bm, Cm (BT x N), xn
// (BT x D) at 2 bytes instead of 4; with every layer so, the shared xdbl (BT x (R + 2N))
// and the backward scratch's dy, du, ddelta, dz, dxin (BT x E) and dxdbl too. Views are 16-byte
// aligned: up to 15 bytes of padding each either way.
static void acts16_layout_check(MambaConfig c, int B, int T, bool recompute) {
    MambaModel m32, m16;
    g_mamba_recompute = recompute;
    linear_set_precision(MATMUL_FP32);
    mamba_build(&m32, c, B, T, true);
    linear_set_precision(MATMUL_BF16);
    mamba_build(&m16, c, B, T, true);
    linear_set_precision(MATMUL_FP32);
    g_mamba_recompute = false;
    c = m16.cfg;
    size_t BT = (size_t)B * T, E = c.d_inner, R = c.dt_rank, N = c.d_state, D = c.d_model, L = c.n_layer;
    // xn (D) and u (E): each layer's own (the default), or shared by the layers (--recompute)
    double want_acts = m16.recompute ? 2.0 * BT * (L * (4 * E + R + 2 * N) + D + (R + 2 * N) + E)
                                     : 2.0 * BT * (L * (4 * E + R + 2 * N + D + E) + (R + 2 * N));
    double want_scratch = 2.0 * BT * (5 * E + R + 2 * N);
    double got_acts = (double)m32.acts_bytes - m16.acts_bytes, got_scratch = (double)m32.scratch_bytes - m16.scratch_bytes;
    report(fabs(got_acts - want_acts) <= 16.0 * (9 * L + 3), recompute ? "bf16 layout (--recompute): activations smaller by 2 bytes an element of the layers' tensors"
                                                                : "bf16 layout: activations smaller by 2 bytes an element of the layers' tensors",
           "%.0f fewer bytes, want %.0f", got_acts, want_acts);
    report(fabs(got_scratch - want_scratch) <= 16.0 * 6, "bf16 layout: backward scratch smaller by 2 bytes an element",
           "%.0f fewer bytes, want %.0f", got_scratch, want_scratch);
    report(m16.all_acts16 && !m32.all_acts16, "bf16 layout: every layer of a pure M1 model built under bf16, none under fp32");
    mamba_free(&m32); mamba_free(&m16);
}

// train_mamba's step holds one LinearWeightsFixed around forward and backward, so each weight is
// copied to bf16 once a step instead of once a pass: the same loss bits and the same gradients as
// with only the passes' own scopes (to 1e-6: the scan and the conv sum some with float atomics, whose
// order changes from run to run; the spread of two runs without the outer scope is printed), and
// every layer's four products' weights (used once a pass, twice a step) then hold copies of their own.
static void step_scope_check(const MambaConfig& c, int B, int T) {
    linear_set_precision(MATMUL_BF16);
    MambaModel m;
    mamba_build(&m, c, B, T, true);
    mamba_init_params(&m, 9);
    Rng r; rng_seed(&r, 10);
    std::vector<int> tok, tgt;
    random_tokens(&tok, (size_t)B * T, c.vocab_size, &r); random_tokens(&tgt, (size_t)B * T, c.vocab_size, &r);
    size_t n = m.params.num_trainable;
    std::vector<float> g[3];
    float loss[3];
    int copies[3];
    for (int run = 0; run < 3; run++) {  // 0, 1: the passes' scopes only; 2: one scope around both
        LinearWeightsFixed* outer = run == 2 ? new LinearWeightsFixed() : nullptr;
        mamba_forward_train(&m, tok.data(), tgt.data(), B, T);
        mamba_zero_grad(&m);
        loss[run] = mamba_backward(&m);
        delete outer;
        copies[run] = linear_weight_copies();
        g[run] = from_device(m.params.grads, n);
    }
    printf("     (gradients: run to run %.2e, one scope a step against the passes' %.2e)\n", rel_err(g[1].data(), g[0].data(), n),
           rel_err(g[2].data(), g[0].data(), n));
    report(loss[0] == loss[2] && loss[1] == loss[2], "one weight scope a step: the same loss", "%.9g vs %.9g", loss[0], loss[2]);
    check_close("one weight scope a step: the same gradients (to 1e-6: atomics)", g[2].data(), g[0].data(), n, 1e-6);
    report(copies[2] - copies[1] == 4 * c.n_layer, "one weight scope a step: each layer's 4 product weights copied once a step",
           "%d more copies, want %d", copies[2] - copies[1], 4 * c.n_layer);
    mamba_free(&m);
    linear_set_precision(MATMUL_FP32);
}

int main() {
    // a model laid out for bf16 activations refuses a forward after the precision changed (its views
    // hold 2 bytes an element); in a child process, before this process touches CUDA
    expect_fatal("a model built under --matmul bf16 refuses a forward under fp32", "built under --matmul bf16", [] {
        MambaConfig c = {300, 128, 2, 16, 4, 2, 0, 0};
        linear_set_precision(MATMUL_BF16);
        MambaModel m;
        mamba_build(&m, c, 2, 64, true);
        mamba_init_params(&m, 1);
        linear_set_precision(MATMUL_FP32);
        std::vector<int> tok(128, 1);
        mamba_forward(&m, tok.data(), tok.data(), 2, 64);
    });
    // first: the weight-copy cache is keyed by address, and later tests free and reallocate weights
    step_scope_check(MambaConfig{300, 128, 3, 16, 4, 2, 0, 0}, 4, 256);
    cublasCheck(cublasSetMathMode(cublas_handle(), CUBLAS_DEFAULT_MATH));  // exact FP32 for comparisons
    MambaConfig small = {50, 32, 2, 16, 4, 2, 0, 0};
    model_gpu_step_check(small, 2, 1, "step small");
    model_gpu_step_check(small, 2, 7, "step small");
    model_gpu_step_check(small, 3, 130, "step small");   // 3 scan chunks, the last partial
    MambaConfig odd = {257, 40, 3, 8, 3, 2, 0, 0};  // odd widths: E = 80, dt_rank 3
    model_gpu_step_check(odd, 2, 67, "step odd");
    // --matmul bf16 against the fp32 CPU (tolerances derived in mamba_test_util.h)
    model_gpu_step_check(small, 3, 130, "step small", true, 0);  // too narrow for bf16 activations
    model_gpu_step_check(odd, 2, 67, "step odd", true, 0);
    model_gpu_step_check(MambaConfig{300, 128, 2, 16, 4, 2, 0, 0}, 4, 256, "step d128", true, 2);  // bf16 activations
    model_gpu_step_check(MambaConfig{300, 132, 2, 16, 4, 3, 0, 0}, 2, 67, "step d132 E396", true, 2);  // E % 8 != 0, dt_rank 9: per-element paths
    // built under --matmul bf16 (train_mamba's order): the layers laid out in bf16 at half the bytes;
    // they take bf16 activations at a smaller step shape too (BT = 64: below the products' 128 rule)
    model_gpu_step_check(MambaConfig{300, 128, 2, 16, 4, 2, 0, 0}, 4, 256, "step d128 built bf16", true, 2, true);
    model_gpu_step_check(MambaConfig{300, 128, 2, 16, 4, 2, 0, 0}, 4, 256, "step d128 built bf16, run 1x64", true, 2, true, 1, 64);
    acts16_layout_check(MambaConfig{300, 128, 3, 16, 4, 2, 0, 0}, 4, 256, false);
    acts16_layout_check(MambaConfig{300, 128, 3, 16, 4, 2, 0, 0}, 4, 256, true);
    model_scratch_poison_check(small, 3, 130, true, false, "model (GPU, fp32)");
    model_scratch_poison_check(MambaConfig{300, 128, 2, 16, 4, 2, 0, 0}, 4, 256, true, true, "model (GPU, bf16 activations)");
    model_recompute_check(small, 3, 130, true, false, "model (GPU, fp32)");
    model_recompute_check(MambaConfig{300, 128, 2, 16, 4, 2, 0, 0}, 4, 256, true, true, "model (GPU, bf16 activations)");
    model_forward_train_check(small, 3, 130, true, "model");
    model_forward_train_check(MambaConfig{300, 128, 2, 16, 4, 2, 0, 0}, 4, 256, true, "model d128");
    model_gpu_loss_curve(MambaConfig{64, 64, 2, 16, 4, 2, 0, 0}, 4, 96, 30, "M1");
    return test_summary();
}
