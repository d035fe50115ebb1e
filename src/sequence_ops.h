// sequence_ops.h: moving token rows around, the glue of the vision-language
// model. All shapes are (batch, sequence, channels), row-major.
//
//   position_add:  x[b, t] += pos[t]                     x: (B, T, C), pos: (T, C)
//   cls_prepend:   out[b, 0] = cls, out[b, 1 + p] = in[b, p]   in: (B, P, C), out: (B, P+1, C)
//   cls_drop:      out[b, p] = in[b, 1 + p]              the inverse: the [CLS] row leaves
//   image_splice:  x[b, 1 + p] = img[b, p] for p < P, x[b, t] = tok[b, t] elsewhere
//                  x, tok: (B, T, C), img: (B, P, C) — the LLaVA sequence: <bos>, then the
//                  P projected patch features where the <image> placeholder was, then the text
//   row_gather:    out[i] = in[idx[i]]                   in: (rows, C), out: (N, C), idx: (N) distinct rows
//                  (CLIP's [CLS] and end-of-text features)
//
// Backwards accumulate (+=). Sums over the batch (dpos, dcls) run in batch
// order, so results do not depend on the number of threads. A null parameter
// gradient (dpos, dcls) is a frozen parameter: skipped.
#pragma once
#include <algorithm>
#include "common.h"

static void position_add_forward_cpu(floatX* x, const float* pos, int B, int T, int C) {
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++) x[((size_t)b * T + t) * C + c] += pos[(size_t)t * C + c];
}
// x[b, t, :] += pos[index[b, t], :]: each row its own position (forward only; a token
// reduction keeps the kept tokens' original positions).  index: (B, T)
static void position_add_indexed_cpu(floatX* x, const float* pos, const int* index, int B, int T, int C) {
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float* p = pos + (size_t)index[(size_t)b * T + t] * C;
            for (int c = 0; c < C; c++) x[((size_t)b * T + t) * C + c] += p[c];
        }
}
static void position_add_backward_cpu(float* dpos, const floatX* dx, int B, int T, int C) {
#pragma omp parallel for
    for (int t = 0; t < T; t++)
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++) dpos[(size_t)t * C + c] += (float)dx[((size_t)b * T + t) * C + c];
}

static void cls_prepend_forward_cpu(floatX* out, const floatX* in, const float* cls, int B, int P, int C) {
#pragma omp parallel for
    for (int b = 0; b < B; b++) {
        for (int c = 0; c < C; c++) out[(size_t)b * (P + 1) * C + c] = (floatX)cls[c];
        memcpy(out + ((size_t)b * (P + 1) + 1) * C, in + (size_t)b * P * C, (size_t)P * C * sizeof(floatX));
    }
}
static void cls_prepend_backward_cpu(floatX* din, float* dcls, const floatX* dout, int B, int P, int C) {
    for (int b = 0; b < B && dcls; b++)
        for (int c = 0; c < C; c++) dcls[c] += (float)dout[(size_t)b * (P + 1) * C + c];
#pragma omp parallel for
    for (int b = 0; b < B; b++)
        for (size_t i = 0; i < (size_t)P * C; i++) din[(size_t)b * P * C + i] += dout[((size_t)b * (P + 1) + 1) * C + i];
}

static void cls_drop_forward_cpu(floatX* out, const floatX* in, int B, int P, int C) {
#pragma omp parallel for
    for (int b = 0; b < B; b++)
        memcpy(out + (size_t)b * P * C, in + ((size_t)b * (P + 1) + 1) * C, (size_t)P * C * sizeof(floatX));
}
static void cls_drop_backward_cpu(floatX* din, const floatX* dout, int B, int P, int C) {
#pragma omp parallel for
    for (int b = 0; b < B; b++)
        for (size_t i = 0; i < (size_t)P * C; i++) din[((size_t)b * (P + 1) + 1) * C + i] += dout[(size_t)b * P * C + i];
}

static void image_splice_forward_cpu(floatX* x, const floatX* tok, const floatX* img, int B, int T, int P, int C) {
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const floatX* src = (t >= 1 && t <= P) ? img + ((size_t)b * P + t - 1) * C : tok + ((size_t)b * T + t) * C;
            memcpy(x + ((size_t)b * T + t) * C, src, C * sizeof(floatX));
        }
}
// dtok gets the text rows (zero at the image rows, so the placeholder's embedding learns nothing)
static void image_splice_backward_cpu(floatX* dtok, floatX* dimg, const floatX* dx, int B, int T, int P, int C) {
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const floatX* g = dx + ((size_t)b * T + t) * C;
            if (t >= 1 && t <= P) {
                floatX* d = dimg + ((size_t)b * P + t - 1) * C;
                for (int c = 0; c < C; c++) d[c] += g[c];
            } else {
                floatX* d = dtok + ((size_t)b * T + t) * C;
                for (int c = 0; c < C; c++) d[c] += g[c];
            }
        }
}

static void row_gather_forward_cpu(floatX* out, const floatX* in, const int* idx, int N, int C) {
    for (int i = 0; i < N; i++) memcpy(out + (size_t)i * C, in + (size_t)idx[i] * C, C * sizeof(floatX));
}
static void row_gather_backward_cpu(floatX* din, const floatX* dout, const int* idx, int N, int C) {
    for (int i = 0; i < N; i++)
        for (int c = 0; c < C; c++) din[(size_t)idx[i] * C + c] += dout[(size_t)i * C + c];
}

#ifdef __CUDACC__
// rows are distinct, so the backward's += has no race
__global__ void row_gather_kernel(floatX* a, floatX* b, const int* idx, int N, int C, bool backward) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N * C) return;
    size_t row = i / C, c = i % C, j = (size_t)idx[row] * C + c;
    if (backward) a[j] += b[i];  // a: din, b: dout
    else a[i] = b[j];            // a: out, b: in
}
static void row_gather_forward_cuda(floatX* out, const floatX* in, const int* idx, int N, int C) {
    row_gather_kernel<<<(unsigned)(((size_t)N * C + 255) / 256), 256, 0, launch_stream()>>>(out, (floatX*)in, idx, N, C, false);
    cudaCheckLaunch();
}
static void row_gather_backward_cuda(floatX* din, const floatX* dout, const int* idx, int N, int C) {
    row_gather_kernel<<<(unsigned)(((size_t)N * C + 255) / 256), 256, 0, launch_stream()>>>(din, (floatX*)dout, idx, N, C, true);
    cudaCheckLaunch();
}

// one thread per element; the batch sums (dpos, dcls) loop over b in order
__global__ void position_add_forward_kernel(floatX* x, const float* pos, size_t n, size_t TC) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = (floatX)((float)x[i] + pos[i % TC]);
}
__global__ void position_add_backward_kernel(float* dpos, const floatX* dx, int B, size_t TC) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= TC) return;
    float s = 0.0f;
    for (int b = 0; b < B; b++) s += (float)dx[(size_t)b * TC + i];
    dpos[i] += s;
}
__global__ void cls_prepend_forward_kernel(floatX* out, const floatX* in, const float* cls, int B, int P, int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x, n = (size_t)B * (P + 1) * C;
    if (i >= n) return;
    int c = i % C; size_t row = i / C; int t = row % (P + 1); size_t b = row / (P + 1);
    out[i] = t == 0 ? (floatX)cls[c] : in[(b * P + t - 1) * C + c];
}
__global__ void cls_prepend_backward_kernel(floatX* din, float* dcls, const floatX* dout, int B, int P, int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x, n = (size_t)B * P * C;
    if (i < n) {
        int c = i % C; size_t row = i / C; int p = row % P; size_t b = row / P;
        din[i] += dout[(b * (P + 1) + 1 + p) * C + c];
    }
    if (i < (size_t)C && dcls) {
        float s = 0.0f;
        for (int b = 0; b < B; b++) s += (float)dout[(size_t)b * (P + 1) * C + i];
        dcls[i] += s;
    }
}
__global__ void cls_drop_kernel(floatX* out, const floatX* in, int B, int P, int C, bool backward) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x, n = (size_t)B * P * C;
    if (i >= n) return;
    int c = i % C; size_t row = i / C; int p = row % P; size_t b = row / P;
    size_t j = (b * (P + 1) + 1 + p) * C + c;
    if (backward) out[j] += in[i];  // out is din (B, P+1, C), in is dout (B, P, C)
    else out[i] = in[j];
}
__global__ void image_splice_kernel(floatX* x, floatX* tok, floatX* img, int B, int T, int P, int C, bool backward) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x, n = (size_t)B * T * C;
    if (i >= n) return;
    int c = i % C; size_t row = i / C; int t = row % T; size_t b = row / T;
    bool is_img = t >= 1 && t <= P;
    floatX* other = is_img ? img + (b * P + t - 1) * C + c : tok + i;
    if (backward) *other += x[i];  // x is dx
    else x[i] = *other;
}

static unsigned grid_for(size_t n) { return (unsigned)((n + 255) / 256); }

__global__ void position_add_indexed_kernel(floatX* x, const float* pos, const int* index, size_t n, int C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    size_t row = i / C;
    x[i] = (floatX)((float)x[i] + pos[(size_t)index[row] * C + i % C]);
}
static void position_add_indexed_cuda(floatX* x, const float* pos, const int* index, int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    if (n == 0) return;
    position_add_indexed_kernel<<<grid_for(n), 256, 0, launch_stream()>>>(x, pos, index, n, C);
    cudaCheckLaunch();
}
static void position_add_forward_cuda(floatX* x, const float* pos, int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    position_add_forward_kernel<<<grid_for(n), 256, 0, launch_stream()>>>(x, pos, n, (size_t)T * C);
    cudaCheckLaunch();
}
static void position_add_backward_cuda(float* dpos, const floatX* dx, int B, int T, int C) {
    position_add_backward_kernel<<<grid_for((size_t)T * C), 256, 0, launch_stream()>>>(dpos, dx, B, (size_t)T * C);
    cudaCheckLaunch();
}
static void cls_prepend_forward_cuda(floatX* out, const floatX* in, const float* cls, int B, int P, int C) {
    cls_prepend_forward_kernel<<<grid_for((size_t)B * (P + 1) * C), 256, 0, launch_stream()>>>(out, in, cls, B, P, C);
    cudaCheckLaunch();
}
static void cls_prepend_backward_cuda(floatX* din, float* dcls, const floatX* dout, int B, int P, int C) {
    size_t n = std::max((size_t)B * P * C, (size_t)C);
    cls_prepend_backward_kernel<<<grid_for(n), 256, 0, launch_stream()>>>(din, dcls, dout, B, P, C);
    cudaCheckLaunch();
}
static void cls_drop_forward_cuda(floatX* out, const floatX* in, int B, int P, int C) {
    cls_drop_kernel<<<grid_for((size_t)B * P * C), 256, 0, launch_stream()>>>(out, (floatX*)in, B, P, C, false);
    cudaCheckLaunch();
}
static void cls_drop_backward_cuda(floatX* din, const floatX* dout, int B, int P, int C) {
    cls_drop_kernel<<<grid_for((size_t)B * P * C), 256, 0, launch_stream()>>>(din, (floatX*)dout, B, P, C, true);
    cudaCheckLaunch();
}
static void image_splice_forward_cuda(floatX* x, const floatX* tok, const floatX* img, int B, int T, int P, int C) {
    image_splice_kernel<<<grid_for((size_t)B * T * C), 256, 0, launch_stream()>>>(x, (floatX*)tok, (floatX*)img, B, T, P, C, false);
    cudaCheckLaunch();
}
static void image_splice_backward_cuda(floatX* dtok, floatX* dimg, const floatX* dx, int B, int T, int P, int C) {
    image_splice_kernel<<<grid_for((size_t)B * T * C), 256, 0, launch_stream()>>>((floatX*)dx, dtok, dimg, B, T, P, C, true);
    cudaCheckLaunch();
}
#endif

// ---------------------------------------------------------------------------
// backend wrappers

static void position_add_indexed(bool on_gpu, floatX* x, const float* pos, const int* index, int B, int T, int C) {
    if (on_gpu) GPU_CALL(position_add_indexed_cuda(x, pos, index, B, T, C));
    else position_add_indexed_cpu(x, pos, index, B, T, C);
}
static void position_add_forward(bool on_gpu, floatX* x, const float* pos, int B, int T, int C) {
    if (on_gpu) GPU_CALL(position_add_forward_cuda(x, pos, B, T, C));
    else position_add_forward_cpu(x, pos, B, T, C);
}
static void position_add_backward(bool on_gpu, float* dpos, const floatX* dx, int B, int T, int C) {
    if (!dpos) return;
    if (on_gpu) GPU_CALL(position_add_backward_cuda(dpos, dx, B, T, C));
    else position_add_backward_cpu(dpos, dx, B, T, C);
}
static void cls_prepend_forward(bool on_gpu, floatX* out, const floatX* in, const float* cls, int B, int P, int C) {
    if (on_gpu) GPU_CALL(cls_prepend_forward_cuda(out, in, cls, B, P, C));
    else cls_prepend_forward_cpu(out, in, cls, B, P, C);
}
static void cls_prepend_backward(bool on_gpu, floatX* din, float* dcls, const floatX* dout, int B, int P, int C) {
    if (on_gpu) GPU_CALL(cls_prepend_backward_cuda(din, dcls, dout, B, P, C));
    else cls_prepend_backward_cpu(din, dcls, dout, B, P, C);
}
static void cls_drop_forward(bool on_gpu, floatX* out, const floatX* in, int B, int P, int C) {
    if (on_gpu) GPU_CALL(cls_drop_forward_cuda(out, in, B, P, C));
    else cls_drop_forward_cpu(out, in, B, P, C);
}
static void cls_drop_backward(bool on_gpu, floatX* din, const floatX* dout, int B, int P, int C) {
    if (on_gpu) GPU_CALL(cls_drop_backward_cuda(din, dout, B, P, C));
    else cls_drop_backward_cpu(din, dout, B, P, C);
}
static void image_splice_forward(bool on_gpu, floatX* x, const floatX* tok, const floatX* img, int B, int T, int P, int C) {
    if (on_gpu) GPU_CALL(image_splice_forward_cuda(x, tok, img, B, T, P, C));
    else image_splice_forward_cpu(x, tok, img, B, T, P, C);
}
static void image_splice_backward(bool on_gpu, floatX* dtok, floatX* dimg, const floatX* dx, int B, int T, int P, int C) {
    if (on_gpu) GPU_CALL(image_splice_backward_cuda(dtok, dimg, dx, B, T, P, C));
    else image_splice_backward_cpu(dtok, dimg, dx, B, T, P, C);
}
static void row_gather_forward(bool on_gpu, floatX* out, const floatX* in, const int* idx, int N, int C) {
    if (on_gpu) GPU_CALL(row_gather_forward_cuda(out, in, idx, N, C));
    else row_gather_forward_cpu(out, in, idx, N, C);
}
static void row_gather_backward(bool on_gpu, floatX* din, const floatX* dout, const int* idx, int N, int C) {
    if (on_gpu) GPU_CALL(row_gather_backward_cuda(din, dout, idx, N, C));
    else row_gather_backward_cpu(din, dout, idx, N, C);
}
