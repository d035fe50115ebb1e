// test_model.cu: whole-model CPU tests.
//   - finite-difference gradient check of every parameter tensor of the LM
//     (so every Mamba block component, end to end) at T = 7 and 70
//   - the recurrent step (generation) reproduces the parallel forward's logits
//   - mamba_backward accumulates: two backward passes give twice the gradient
#include "../src/mamba_model.h"
#include "test_util.h"
#include "mamba_test_util.h"

static MambaConfig tiny_config() {
    MambaConfig c = {11, 8, 2, 4, 4, 2, 0, 0};  // vocab, D, layers, N, K, expand, dt_rank (auto)
    mamba_config_derive(&c);
    return c;
}

static void test_recurrent_matches_parallel(int T) {
    MambaConfig c = {23, 16, 3, 8, 4, 2, 0, 0};
    mamba_config_derive(&c);
    MambaModel m;
    mamba_build(&m, c, 1, T, false);
    mamba_init_params(&m, 5);
    jitter_params(&m, 6);
    Rng r; rng_seed(&r, 9);
    std::vector<int> tok(T);
    for (int i = 0; i < T; i++) tok[i] = rng_u32(&r) % c.vocab_size;
    mamba_forward(&m, tok.data(), nullptr, 1, T);  // no targets: logits stay logits
    std::vector<float> parallel(m.logits, m.logits + (size_t)T * c.vocab_size);
    MambaStepState s;
    mamba_step_init(&s, &m, m.params.params);
    std::vector<float> recurrent((size_t)T * c.vocab_size);
    for (int t = 0; t < T; t++) mamba_step(&s, tok[t], recurrent.data() + (size_t)t * c.vocab_size);
    char name[64]; snprintf(name, sizeof name, "recurrent step == parallel forward, T=%d", T);
    check_close(name, recurrent.data(), parallel.data(), parallel.size(), 1e-5);
    mamba_free(&m);
}

static void test_parameter_count() {
    // mamba-130m shape: 129.1M parameters with vocab 50280 (tied head)
    MambaConfig c = {50280, 768, 24, 16, 4, 2, 0, 0};
    mamba_config_derive(&c);
    MambaModel m; m.cfg = c;
    params_init(&m.params);
    mamba_declare_params(&m);  // declared, not allocated: only the count
    size_t D = 768, E = 1536, N = 16, K = 4, R = 48, V = 50280;
    size_t per_layer = 2 * E * D + E * K + E + (R + 2 * N) * E + E * R + E + E * N + E + D * E + D;
    size_t expect = V * D + 24 * per_layer + D;
    size_t count = 0;
    for (const ParamTensor& t : m.params.tensors) count += t.numel;
    report(count == expect, "parameter count of the mamba-130m shape", "%zu != %zu", count, expect);
    report(c.dt_rank == 48, "dt_rank = ceil(768/16) = 48", "got %d", c.dt_rank);
}

// the head in chunks of 3 rows (forward losses, backward recomputation) gives the
// loss and gradients of the head in one piece
static void test_logits_chunks() {
    MambaConfig c = tiny_config();
    int B = 2, T = 7;
    std::vector<int> tok(B * T), tgt(B * T);
    Rng r; rng_seed(&r, 17);
    for (int i = 0; i < B * T; i++) { tok[i] = rng_u32(&r) % 11; tgt[i] = rng_u32(&r) % 11; }
    MambaModel whole, chunked;
    mamba_build(&whole, c, B, T, false);
    size_t saved = g_logits_chunk_floats;
    g_logits_chunk_floats = 3 * c.vocab_size;
    mamba_build(&chunked, c, B, T, false);
    g_logits_chunk_floats = saved;
    report(chunked.chunk_rows == 3 && whole.chunk_rows == B * T, "head chunks: 3 rows vs all rows", "%d, %d", chunked.chunk_rows, whole.chunk_rows);
    float l[2];
    for (MambaModel* m : {&whole, &chunked}) {
        mamba_init_params(m, 3); jitter_params(m, 4);
        l[m == &chunked] = mamba_forward(m, tok.data(), tgt.data(), B, T);
        mamba_zero_grad(m); mamba_backward(m);
    }
    report(l[0] == l[1], "head chunks: the same loss", "%.9g vs %.9g", l[0], l[1]);
    check_close("head chunks: the same gradients", chunked.params.grads, whole.params.grads, whole.params.num_trainable, 1e-6);
    mamba_free(&whole); mamba_free(&chunked);
}

int main() {
    test_logits_chunks();
    test_parameter_count();
    // T = 1 is left to the float64 PyTorch oracle (torch_check.py): with one
    // token per row the gradients through dt are below float32 finite differences
    model_gradient_check(tiny_config(), 2, 7, "model");
    model_gradient_check(tiny_config(), 1, 70, "model");
    test_recurrent_matches_parallel(1);
    test_recurrent_matches_parallel(77);
    model_forward_train_check(tiny_config(), 2, 7, false, "model");
    model_scratch_poison_check(tiny_config(), 2, 70, false, false, "model");
    model_recompute_check(tiny_config(), 2, 70, false, false, "model");
    return test_summary();
}
