// lm_head.h: the tied LM head's backward over a chunk of rows, with the loss:
//   logits = x W^T (rows, V); losses and dlogits = (softmax - onehot) * dloss_scale (the fused
//   cross-entropy, in place of the logits); dx += dlogits W; dW += dlogits^T x
// x: (rows, D), W: (V, D), targets: (rows). On the GPU with bf16 operands (--matmul bf16, both
// products large enough) the cross-entropy writes dlogits as bf16 straight into the products'
// operand buffer instead of fp32 in place: the same bits the copy of the fp32 dlogits would have,
// without a pass over the chunk (1334 x 50280 at the 130m shape: 268 MB read, 134 MB written).
#pragma once
#include "common.h"
#include "cross_entropy.h"
#include "linear.h"

static void lm_head_loss_backward(bool on_gpu, float* losses, floatX* dx, float* dW, floatX* logits, const floatX* x,
                                  const float* W, const int* targets, int rows, int D, int V, float dloss_scale) {
#ifdef __CUDACC__
    if (on_gpu && linear_use_bf16(V, rows, D)) {
        linear_forward_cuda(logits, x, W, nullptr, rows, D, V);
        bf16* dlogits16 = linear_bf16_scratch(1, (size_t)rows * V);
        cross_entropy_grad_bf16_cuda(losses, logits, targets, rows, V, dloss_scale, dlogits16);
        linear_backward_bf16_cuda(dx, dW, dlogits16, dW ? linear_round_bf16(x, (size_t)rows * D, 2) : nullptr, W, rows, D, V);
        return;
    }
#endif
    linear_forward(on_gpu, logits, x, W, (const float*)nullptr, rows, D, V);
    cross_entropy(on_gpu, losses, logits, targets, rows, V, dloss_scale, true);
    linear_backward(on_gpu, dx, dW, (float*)nullptr, logits, x, W, rows, D, V);
}
