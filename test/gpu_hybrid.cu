// gpu_hybrid.cu: layer-pattern models (Mamba-1, Mamba-2, attention, MLP) on the GPU against
// the CPU reference.
//   - one training step of a hybrid and of a pure transformer: loss and every gradient, then
//     the parameters after one AdamW update (FP32 matmuls)
//   - a 20-step run of a hybrid: the GPU loss curve follows the CPU one
//   - --sample on the GPU: the CPU step on the GPU model's weights == the parallel argmax
#include "../src/mamba_model.h"
#include "test_util.h"
#include "mamba_test_util.h"

static void step_check(const char* layers, int B, int T, int D, int ngroups = 1) {
    MambaConfig c = hybrid_test_config(layers, 50, D);
    c.m2_ngroups = ngroups;
    char label[96]; snprintf(label, sizeof label, "%s D=%d G=%d", layers, D, ngroups);
    model_gpu_step_check(c, B, T, label);
}

// a GPU model generates with the CPU step on a host copy of its weights
static void test_generate_from_gpu_model(const char* layers) {
    MambaConfig c = hybrid_test_config(layers, 40, 32);
    int T = 12;
    MambaModel gpu;
    mamba_build(&gpu, c, 1, T, true);
    mamba_init_params(&gpu, 21);
    Rng r; rng_seed(&r, 22);
    std::vector<int> tok(T);
    for (int& t : tok) t = rng_u32(&r) % c.vocab_size;
    mamba_forward(&gpu, tok.data(), nullptr, 1, T);
    std::vector<float> logits = from_device(gpu.logits, (size_t)T * c.vocab_size);
    std::vector<int> prompt(tok.begin(), tok.begin() + 7);
    std::vector<int> gen = mamba_generate(&gpu, prompt, 1, 0.0f, 0, 1);
    const float* row = logits.data() + (size_t)6 * c.vocab_size;
    int argmax = (int)(std::max_element(row, row + c.vocab_size) - row);
    char name[160];
    snprintf(name, sizeof name, "%s: greedy generation from the GPU model == the GPU forward's argmax", layers);
    report(gen.size() == 1 && gen[0] == argmax, name, "%d vs %d", gen.empty() ? -1 : gen[0], argmax);
    mamba_free(&gpu);
}

int main() {
    cublasCheck(cublasSetMathMode(cublas_handle(), CUBLAS_DEFAULT_MATH));  // exact FP32 for comparisons
    step_check("M1,M2,A,F", 2, 64, 32);
    step_check("M2,A,F,M2", 3, 37, 64, 2);   // a length no chunk or block divides, two groups
    step_check("M2", 1, 1, 32);              // one token
    step_check("A,F,A,F", 2, 100, 64);       // a pure transformer: learned positions
    step_check("M2,M2,A,F", 2, 300, 64);     // several SSD chunks
    MambaConfig tc = hybrid_test_config("M2,F,M2", 50, 64);  // heads of 32, state 64: the SSD's tensor-core path
    tc.m2_headdim = 32; tc.m2_d_state = 64;
    model_gpu_step_check(tc, 2, 130, "M2,F,M2 P32 N64 (tensor-core SSD)");
    model_scratch_poison_check(hybrid_test_config("M1,M2,A,F,M1", 50, 64), 2, 130, true, false, "M1,M2,A,F,M1 (GPU)");
    model_recompute_check(hybrid_test_config("M1,M2,A,F,M1", 50, 64), 2, 130, true, false, "M1,M2,A,F,M1 (GPU)");
    model_gpu_loss_curve(hybrid_test_config("M2,A,F,M1", 64, 64), 4, 96, 20, "M2,A,F,M1");
    test_generate_from_gpu_model("M2,A,F,M1");
    test_generate_from_gpu_model("A,F");
    return test_summary();
}
