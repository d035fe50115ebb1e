// gpu_model.cu: the whole model on the GPU against the CPU reference.
//   - one training step: loss and every parameter gradient (FP32 matmuls; and bf16 matmul operands)
//   - AdamW on both backends gives the same parameters
//   - a short training run: the GPU loss curve follows the CPU one
#include "../src/mamba_model.h"
#include "test_util.h"
#include "mamba_test_util.h"

int main() {
    cublasCheck(cublasSetMathMode(cublas_handle(), CUBLAS_DEFAULT_MATH));  // exact FP32 for comparisons
    MambaConfig small = {50, 32, 2, 16, 4, 2, 0, 0};
    model_gpu_step_check(small, 2, 1, "step small");
    model_gpu_step_check(small, 2, 7, "step small");
    model_gpu_step_check(small, 3, 130, "step small");   // 3 scan chunks, the last partial
    MambaConfig odd = {257, 40, 3, 8, 3, 2, 0, 0};  // odd widths: E = 80, dt_rank 3
    model_gpu_step_check(odd, 2, 67, "step odd");
    // --matmul bf16 against the fp32 CPU (tolerances derived in mamba_test_util.h)
    model_gpu_step_check(small, 3, 130, "step small", true);
    model_gpu_step_check(odd, 2, 67, "step odd", true);
    model_gpu_step_check(MambaConfig{300, 128, 2, 16, 4, 2, 0, 0}, 4, 256, "step d128", true);
    model_forward_train_check(small, 3, 130, true, "model");
    model_forward_train_check(MambaConfig{300, 128, 2, 16, 4, 2, 0, 0}, 4, 256, true, "model d128");
    model_gpu_loss_curve(MambaConfig{64, 64, 2, 16, 4, 2, 0, 0}, 4, 96, 30, "M1");
    return test_summary();
}
