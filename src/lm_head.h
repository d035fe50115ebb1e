// lm_head.h: the tied LM head over a chunk of rows, with the loss:
//   logits = x W^T (rows, V); losses = -log softmax(logits)[target]; and for the backward
//   dlogits = (softmax - onehot) * dloss_scale (the fused cross-entropy, in place of the logits);
//   dx += dlogits W; dW += dlogits^T x
// x: (rows, D), W: (V, D), targets: (rows). On the GPU with bf16 operands (--matmul bf16, both
// products large enough) the logits are the product rounded once to bf16 and the cross-entropy reads
// them and writes dlogits as bf16 in their place, the products' operand: the logits' bytes are half
// and no copy of dlogits is made (at the 130m shape the fp32 logits were 1.65 GB written and read a
// step, and the copy of dlogits another 0.8 GB). The sums of the softmax stay fp32; the loss moves by
// the logits' rounding (2^-9 relative: at most ~0.02 for a logit of 10, unbiased, ~1e-4 on a batch's
// mean loss). The official Mamba under bf16 autocast computes its logits in bf16 too. Elsewhere (the
// CPU, fp32 / TF32 matmuls): fp32 logits in `logits` (rows, V).
// lm_head_loss (a forward's losses) and lm_head_loss_backward run the same product and the same
// cross-entropy, so the loss a training step reports is the loss of the forward, bit for bit.
#pragma once
#include "common.h"
#include "cross_entropy.h"
#include "linear.h"

#ifdef __CUDACC__
static bool lm_head_bf16(bool on_gpu, int rows, int D, int V) { return on_gpu && linear_use_bf16(V, rows, D); }
// the chunk's bf16 logits, in linear.h's operand scratch 1 (rows x V bf16); *x16: x's copy (scratch 2)
static bf16* lm_head_logits_bf16(const floatX* x, const float* W, int rows, int D, int V, const bf16** x16 = nullptr) {
    bf16* logits16 = linear_bf16_scratch(1, (size_t)rows * V);
    const bf16* xb = linear_round_bf16(x, (size_t)rows * D, 2);
    linear_forward_b16_cuda(logits16, xb, W, rows, D, V);
    if (x16) *x16 = xb;
    return logits16;
}
#endif

static void lm_head_loss(bool on_gpu, float* losses, floatX* logits, const floatX* x, const float* W, const int* targets, int rows,
                         int D, int V) {
#ifdef __CUDACC__
    if (lm_head_bf16(on_gpu, rows, D, V)) {
        cross_entropy_bf16_cuda(losses, lm_head_logits_bf16(x, W, rows, D, V), targets, rows, V, 0.0f, false);
        return;
    }
#endif
    linear_forward(on_gpu, logits, x, W, (const float*)nullptr, rows, D, V);
    cross_entropy(on_gpu, losses, logits, targets, rows, V, 0.0f, false);
}

static void lm_head_loss_backward(bool on_gpu, float* losses, floatX* dx, float* dW, floatX* logits, const floatX* x,
                                  const float* W, const int* targets, int rows, int D, int V, float dloss_scale) {
#ifdef __CUDACC__
    if (lm_head_bf16(on_gpu, rows, D, V)) {
        const bf16* x16 = nullptr;
        bf16* dlogits16 = lm_head_logits_bf16(x, W, rows, D, V, &x16);
        cross_entropy_bf16_cuda(losses, dlogits16, targets, rows, V, dloss_scale, true);
        linear_backward_bf16_cuda(dx, dW, dlogits16, x16, W, rows, D, V);
        return;
    }
#endif
    linear_forward(on_gpu, logits, x, W, (const float*)nullptr, rows, D, V);
    cross_entropy(on_gpu, losses, logits, targets, rows, V, dloss_scale, true);
    linear_backward(on_gpu, dx, dW, (float*)nullptr, logits, x, W, rows, D, V);
}
