// patch_embed.h: ViT patch embedding as a matmul (the same as a Conv2d with kernel = stride = p).
//   images: (B, H, W, 3) float in [0, 1]; p: patch size (H, W multiples of p)
//   P = (H/p) * (W/p) patches in row-major grid order: patch (gy, gx) is number gy * (W/p) + gx
//   patch vector order (py, px, c), K = p*p*3:
//     patches[b, gy*(W/p) + gx, (py*p + px)*3 + c] = images[b, gy*p + py, gx*p + px, c]
//   out: (B, P, D) = patches @ weight^T + bias;  weight: (D, K), bias: (D) or nullptr
// Backward: dweight += dout^T @ patches, dbias += sum over patches of dout (the images need no
// gradient). The patches (B, P, K) are floatX scratch the caller keeps from forward to backward.
#pragma once
#include "common.h"
#include "linear.h"

static void patchify_cpu(floatX* patches, const float* images, int B, int H, int W, int p) {
    int GW = W / p, P = (H / p) * GW, K = p * p * 3;
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int g = 0; g < P; g++) {
            int gy = g / GW, gx = g % GW;
            floatX* dst = patches + ((size_t)b * P + g) * K;
            for (int py = 0; py < p; py++) {
                // one image row of the patch: p pixels of 3 channels, contiguous on both sides
                const float* src = images + (((size_t)b * H + gy * p + py) * W + (size_t)gx * p) * 3;
                for (int e = 0; e < p * 3; e++) dst[py * p * 3 + e] = (floatX)src[e];
            }
        }
}

#ifdef __CUDACC__
// one thread per element of patches
__global__ void patchify_kernel(floatX* patches, const float* images, int B, int H, int W, int p) {
    int GW = W / p, P = (H / p) * GW, K = p * p * 3;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * P * K) return;
    int k = (int)(idx % K), g = (int)(idx / K % P), b = (int)(idx / K / P);
    int py = k / (p * 3), e = k % (p * 3);  // e = px*3 + c
    int gy = g / GW, gx = g % GW;
    patches[idx] = from_f32<floatX>(images[(((size_t)b * H + gy * p + py) * W + (size_t)gx * p) * 3 + e]);
}

static void patchify_cuda(floatX* patches, const float* images, int B, int H, int W, int p) {
    size_t n = (size_t)B * (H / p) * (W / p) * p * p * 3;
    if (n == 0) return;
    patchify_kernel<<<(unsigned)((n + 255) / 256), 256, 0, launch_stream()>>>(patches, images, B, H, W, p);
    cudaCheckLaunch();
}
#endif

// ---------------------------------------------------------------------------
// backend wrappers (the convention of common.h): the models call these

static void patchify(bool on_gpu, floatX* patches, const float* images, int B, int H, int W, int p) {
    if (on_gpu) GPU_CALL(patchify_cuda(patches, images, B, H, W, p));
    else patchify_cpu(patches, images, B, H, W, p);
}

// patches: (B, P, K) written here and kept for the backward; out: (B, P, D)
static void patch_embed_forward(bool on_gpu, floatX* out, floatX* patches, const float* images, const float* weight,
                                const float* bias, int B, int H, int W, int p, int D) {
    if (p <= 0 || H % p != 0 || W % p != 0) FATAL("patch_embed: image %dx%d is not a multiple of patch %d", H, W, p);
    int P = (H / p) * (W / p), K = p * p * 3;
    patchify(on_gpu, patches, images, B, H, W, p);
    linear_forward(on_gpu, out, patches, weight, bias, B * P, K, D);
}

// dweight: (D, K) +=; dbias: (D) += (nullptr: no bias). linear_backward reads the weight only for
// the input gradient, which is skipped here (dinp = nullptr), so it gets no weight either.
static void patch_embed_backward(bool on_gpu, float* dweight, float* dbias, const floatX* dout, const floatX* patches,
                                 int B, int P, int K, int D) {
    linear_backward(on_gpu, nullptr, dweight, dbias, dout, patches, nullptr, B * P, K, D);
}
