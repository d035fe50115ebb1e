// rmsnorm.h: RMSNorm over the last dimension, eps = 1e-5.
//   out = x * rstd * weight,  rstd = 1/sqrt(mean_c x^2 + eps)
#pragma once
#include <type_traits>
#include "common.h"
#include "activations.h"

#define RMSNORM_EPS 1e-5f

// x, out: (N, C); weight: (C); rstd: (N) saved for the backward
static void rmsnorm_forward_cpu(floatX* out, float* rstd, const floatX* x, const float* weight, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const floatX* xr = x + (size_t)n * C;
        float ss = 0.0f;
        for (int c = 0; c < C; c++) { float v = (float)xr[c]; ss += v * v; }
        float r = 1.0f / sqrtf(ss / C + RMSNORM_EPS);
        rstd[n] = r;
        floatX* o = out + (size_t)n * C;
        for (int c = 0; c < C; c++) o[c] = (floatX)((float)xr[c] * r * weight[c]);
    }
}

// The residual add of the layer before, fused: x_out = x_in + branch, then out = RMSNorm(x_out), rstd.
// x_out may be branch (in place: elementwise) but not x_in. x_out gets the bits of the plain add, out
// and rstd the bits of rmsnorm_forward_cpu on x_out.
static void rmsnorm_forward_residual_cpu(floatX* out, float* rstd, floatX* x_out, const floatX* x_in, const floatX* branch,
                                         const float* weight, int N, int C) {
    add_forward_cpu(x_out, x_in, branch, (size_t)N * C);
    rmsnorm_forward_cpu(out, rstd, x_out, weight, N, C);
}

// With g = dout*weight:  dx = rstd * (g - x * rstd^2 * mean_c(g*x));  dweight += sum_n dout*x*rstd
// dweight may be nullptr (a frozen weight): then only dx is computed (the same dx bits).
static void rmsnorm_backward_cpu(floatX* dx, float* dweight, const floatX* dout, const floatX* x,
                                 const float* weight, const float* rstd, int N, int C) {
#pragma omp parallel for
    for (int n = 0; n < N; n++) {  // dx: rows are independent
        const floatX* xr = x + (size_t)n * C;
        const floatX* gr = dout + (size_t)n * C;
        floatX* dxr = dx + (size_t)n * C;
        float r = rstd[n];
        float dot = 0.0f;  // sum_c dout*weight*x
        for (int c = 0; c < C; c++) dot += (float)gr[c] * weight[c] * (float)xr[c];
        float k = r * r * dot / C;
        for (int c = 0; c < C; c++)
            dxr[c] = (floatX)((float)dxr[c] + r * ((float)gr[c] * weight[c] - (float)xr[c] * k));
    }
    if (!dweight) return;  // frozen weight: no gradient to compute
    // dweight: threads split the columns, not the rows, and each column is summed over the rows
    // in order, so the result is the same bits for any number of threads
    const int CB = 16;  // columns per task
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += CB) {
        int c1 = c0 + CB < C ? c0 + CB : C;
        float acc[CB] = {0.0f};
        for (int n = 0; n < N; n++) {
            const floatX* xr = x + (size_t)n * C;
            const floatX* gr = dout + (size_t)n * C;
            for (int c = c0; c < c1; c++) acc[c - c0] += (float)gr[c] * (float)xr[c] * rstd[n];
        }
        for (int c = c0; c < c1; c++) dweight[c] += acc[c - c0];
    }
}

#ifdef __CUDACC__

// one warp per row; lanes stride over channels
__global__ void rmsnorm_forward_kernel(floatX* out, float* rstd, const floatX* x, const float* weight, int N, int C) {
    int warps = blockDim.x / 32;
    int n = blockIdx.x * warps + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (n >= N) return;
    const floatX* xr = x + (size_t)n * C;
    float ss = 0.0f;
    for (int c = lane; c < C; c += 32) { float v = (float)xr[c]; ss += v * v; }
    ss = warp_sum(ss);
    float r = rsqrtf(ss / C + RMSNORM_EPS);
    if (lane == 0) rstd[n] = r;
    floatX* o = out + (size_t)n * C;
    for (int c = lane; c < C; c += 32) o[c] = (floatX)((float)xr[c] * r * weight[c]);
}

// Each block owns a strided set of rows (one warp per row at a time) and keeps a
// dweight partial in shared memory; at the end one global atomicAdd per channel per block.
// dweight == nullptr (uniform over the grid) skips the partials and the atomics.
__global__ void rmsnorm_backward_kernel(floatX* dx, float* dweight, const floatX* dout, const floatX* x,
                                        const float* weight, const float* rstd, int N, int C) {
    extern __shared__ float dw_s[];  // (C)
    for (int c = threadIdx.x; c < C; c += blockDim.x) dw_s[c] = 0.0f;
    __syncthreads();
    int warps = blockDim.x / 32;
    int lane = threadIdx.x % 32;
    for (int n = blockIdx.x * warps + threadIdx.x / 32; n < N; n += gridDim.x * warps) {
        const floatX* xr = x + (size_t)n * C;
        const floatX* gr = dout + (size_t)n * C;
        floatX* dxr = dx + (size_t)n * C;
        float r = rstd[n];
        float dot = 0.0f;
        for (int c = lane; c < C; c += 32) dot += (float)gr[c] * weight[c] * (float)xr[c];
        dot = warp_sum(dot);
        float k = r * r * dot / C;
        for (int c = lane; c < C; c += 32) {
            float xv = (float)xr[c], gv = (float)gr[c];
            dxr[c] = (floatX)((float)dxr[c] + r * (gv * weight[c] - xv * k));
            if (dweight) atomicAdd(&dw_s[c], gv * xv * r);  // shared-memory atomics: only warps of this block contend
        }
    }
    if (!dweight) return;  // uniform over the block: no thread waits at the barrier below
    __syncthreads();
    for (int c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(&dweight[c], dw_s[c]);
}

// ---------------------------------------------------------------------------
// fast path (dev/rmsnorm.cu version 3 without the residual fusion; see dev/notes_kernels.md):
// one 16-byte Packed128 of columns (4 fp32 / 8 bf16) per thread, blockDim = C/VEC rounded up to
// 32, the row stays in registers between the reduction and the output. Needs C % VEC == 0 and
// C/VEC <= 1024; other C use the warp-per-row kernels above.
// block-wide sum, returned to every thread; the trailing barrier lets the caller reuse sh at once
__device__ __forceinline__ float rmsnorm_block_sum(float v, float* sh) {
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nwarps = blockDim.x / 32;
    v = warp_sum(v);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nwarps ? sh[lane] : 0.0f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

// OT: the output's type; bf16 (for a product that takes bf16 operands, linear.h) rounds the fp32
// result to nearest, VEC values stored as one 2 * VEC-byte vector. RESIDUAL: x = x + branch first
// (the residual add of the layer before), stored to x_out (else x_out and branch are unused).
template <typename OT = floatX, bool RESIDUAL = false>
__global__ void rmsnorm_forward_vec_kernel(OT* out, float* rstd, const floatX* x, const float* weight, int C,
                                           floatX* x_out = nullptr, const floatX* branch = nullptr) {
    __shared__ float sh[32];
    constexpr int VEC = Packed128<floatX>::size;
    int c0 = threadIdx.x * VEC;
    bool active = c0 < C;
    size_t base = (size_t)blockIdx.x * C + c0;
    float v[VEC];
    float ss = 0.0f;
    if (active) {
        Packed128<floatX> a = load128cs(x + base);  // read once
        if constexpr (RESIDUAL) {
            Packed128<floatX> b = load128cs(branch + base);
#pragma unroll
            for (int j = 0; j < VEC; j++) a.set(j, a.f(j) + b.f(j));
            store128(x_out + base, a);  // the layer's input, kept for its backward
        }
#pragma unroll
        for (int j = 0; j < VEC; j++) { v[j] = a.f(j); ss += v[j] * v[j]; }
    }
    float r = rsqrtf(rmsnorm_block_sum(ss, sh) / C + RMSNORM_EPS);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    if (active) {
        Packed128<floatX> o;
#pragma unroll
        for (int j = 0; j < VEC; j += 4) {  // weight + c0 is 16B aligned (c0 % 4 == 0)
            float4 w4 = *reinterpret_cast<const float4*>(weight + c0 + j);
            o.set(j + 0, v[j + 0] * r * w4.x);
            o.set(j + 1, v[j + 1] * r * w4.y);
            o.set(j + 2, v[j + 2] * r * w4.z);
            o.set(j + 3, v[j + 3] * r * w4.w);
        }
        if constexpr (sizeof(OT) == sizeof(floatX)) {
            store128cs(reinterpret_cast<floatX*>(out) + base, o);
        } else {
            static_assert(VEC == 4, "the bf16 output packs 4 values");
            __nv_bfloat162 lo = __floats2bfloat162_rn(o.f(0), o.f(1)), hi = __floats2bfloat162_rn(o.f(2), o.f(3));
            uint2 q;
            q.x = *reinterpret_cast<uint32_t*>(&lo);
            q.y = *reinterpret_cast<uint32_t*>(&hi);
            __stcs(reinterpret_cast<uint2*>(out + base), q);
        }
    }
}

// A block walks rows blockIdx.x, blockIdx.x + gridDim.x, ...: per row one block reduction for
// the dot product, then the dx update. Each thread owns the same columns on every row, so its
// dweight partial is VEC registers, written at the end to row blockIdx.x of dw_part (grid, C);
// column_sums_add_cuda (common.h) adds those rows into dweight. (A float atomic per column per block
// instead took 43 of the kernel's 73 us at 8192 x 768 on an H100: 1320 blocks on the same 768
// addresses, in an order that changed from run to run.) The grid is the number of resident blocks,
// so every block does ~N/grid rows. dw_part may be nullptr (a frozen weight: no partials).
__global__ void rmsnorm_backward_vec_kernel(floatX* dx, float* dw_part, const floatX* dout, const floatX* x,
                                            const float* weight, const float* rstd, int N, int C) {
    __shared__ float sh[32];
    constexpr int VEC = Packed128<floatX>::size;
    int c0 = threadIdx.x * VEC;
    bool active = c0 < C;
    float wr[VEC], acc[VEC];
#pragma unroll
    for (int j = 0; j < VEC; j++) { wr[j] = active ? weight[c0 + j] : 0.0f; acc[j] = 0.0f; }
    for (int n = blockIdx.x; n < N; n += gridDim.x) {  // uniform over the block
        size_t base = (size_t)n * C + c0;
        float r = rstd[n];
        float g[VEC], xh[VEC], dot = 0.0f;
        if (active) {
            Packed128<floatX> gp = load128cs(dout + base), xp = load128cs(x + base);
#pragma unroll
            for (int j = 0; j < VEC; j++) {
                g[j] = gp.f(j);
                xh[j] = xp.f(j) * r;  // normalized x
                dot += wr[j] * g[j] * xh[j];
            }
        }
        float m = rmsnorm_block_sum(dot, sh) / C;  // = rstd * mean_c(g*w*x)
        if (active) {
            Packed128<floatX> d = load128(dx + base);
#pragma unroll
            for (int j = 0; j < VEC; j++) {
                d.set(j, d.f(j) + r * (wr[j] * g[j] - xh[j] * m));
                acc[j] += g[j] * xh[j];
            }
            store128(dx + base, d);
        }
    }
    if (active && dw_part) {
        float* row = dw_part + (size_t)blockIdx.x * C + c0;
#pragma unroll
        for (int j = 0; j < VEC; j++) row[j] = acc[j];
    }
}

static DeviceScratch g_rmsnorm_dw_part;

// the vector path needs whole 16-byte vectors per row, aligned pointers and C/VEC <= 1024
static inline bool rmsnorm_vec_ok(int C, const void* a, const void* b, const void* c) {
    constexpr int VEC = Packed128<floatX>::size;
    return C % VEC == 0 && C / VEC <= 1024 && aligned16(a) && aligned16(b) && aligned16(c);
}
// threads of a vector-path block: one Packed128 of columns each, rounded up to whole warps
static inline int rmsnorm_vec_threads(int C) { return ceil_div(C / Packed128<floatX>::size, 32) * 32; }

static void rmsnorm_forward_cuda(floatX* out, float* rstd, const floatX* x, const float* weight, int N, int C) {
    if (N == 0) return;
    if (rmsnorm_vec_ok(C, out, x, weight)) {
        rmsnorm_forward_vec_kernel<<<N, rmsnorm_vec_threads(C), 0, launch_stream()>>>(out, rstd, x, weight, C);
        cudaCheckLaunch();
        return;
    }
    const int block = 256;
    rmsnorm_forward_kernel<<<ceil_div(N, block / 32), block, 0, launch_stream()>>>(out, rstd, x, weight, N, C);
    cudaCheckLaunch();
}

// the forward with a bf16 output (the vector path only: the caller checks rmsnorm_vec_ok)
static void rmsnorm_forward_bf16_cuda(bf16* out, float* rstd, const floatX* x, const float* weight, int N, int C) {
    if (N == 0) return;
    if (!rmsnorm_vec_ok(C, out, x, weight)) FATAL("rmsnorm_forward_bf16_cuda: C = %d or the pointers do not suit the vector path", C);
    rmsnorm_forward_vec_kernel<bf16><<<N, rmsnorm_vec_threads(C), 0, launch_stream()>>>(out, rstd, x, weight, C);
    cudaCheckLaunch();
}

// the fused residual add (rmsnorm_forward_residual_cpu) with an output of type OT (fp32, or bf16: the
// vector path only). Off the vector path (fp32 output): the add, then the plain RMSNorm.
template <typename OT>
static void rmsnorm_forward_residual_cuda(OT* out, float* rstd, floatX* x_out, const floatX* x_in, const floatX* branch,
                                          const float* weight, int N, int C) {
    if (N == 0) return;
    if (rmsnorm_vec_ok(C, out, x_in, weight) && aligned16(x_out) && aligned16(branch)) {
        rmsnorm_forward_vec_kernel<OT, true><<<N, rmsnorm_vec_threads(C), 0, launch_stream()>>>(out, rstd, x_in, weight, C, x_out, branch);
        cudaCheckLaunch();
        return;
    }
    if constexpr (!std::is_same<OT, floatX>::value) FATAL("rmsnorm_forward_residual_cuda: a bf16 output needs the vector path (C = %d)", C);
    else {
        add_forward_cuda(x_out, x_in, branch, (size_t)N * C);
        rmsnorm_forward_cuda(out, rstd, x_out, weight, N, C);
    }
}

static void rmsnorm_backward_cuda(floatX* dx, float* dweight, const floatX* dout, const floatX* x,
                                  const float* weight, const float* rstd, int N, int C) {
    if (N == 0) return;
    if (rmsnorm_vec_ok(C, dx, dout, x) && aligned16(weight)) {
        int threads = rmsnorm_vec_threads(C);
        static int cached_threads = -1, per_sm = 0;  // the occupancy query, cached per block size
        const int sms = gpu_sm_count();
        if (threads != cached_threads) {
            cudaCheck(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, rmsnorm_backward_vec_kernel, threads, 0));
            cached_threads = threads;
        }
        int grid = (per_sm > 0 ? per_sm : 1) * sms;
        if (grid > N) grid = N;
        float* part = dweight ? g_rmsnorm_dw_part.get((size_t)grid * C) : nullptr;
        rmsnorm_backward_vec_kernel<<<grid, threads, 0, launch_stream()>>>(dx, part, dout, x, weight, rstd, N, C);
        cudaCheckLaunch();
        if (dweight) column_sums_add_cuda(dweight, part, grid, C);
        return;
    }
    const int block = 256;
    int grid = ceil_div(N, block / 32);
    if (grid > 1024) grid = 1024;  // bounds the number of dweight partials merged with atomics
    size_t smem = (size_t)C * sizeof(float);
    if (smem > 48 * 1024)
        cudaCheck(cudaFuncSetAttribute(rmsnorm_backward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    rmsnorm_backward_kernel<<<grid, block, smem, launch_stream()>>>(dx, dweight, dout, x, weight, rstd, N, C);
    cudaCheckLaunch();
}
#endif

// ---------------------------------------------------------------------------
// backend wrappers (the convention of common.h): the models call these

static void rmsnorm_forward(bool on_gpu, floatX* out, float* rstd, const floatX* x, const float* weight, int N,
                            int C) {
    if (on_gpu) GPU_CALL(rmsnorm_forward_cuda(out, rstd, x, weight, N, C));
    else rmsnorm_forward_cpu(out, rstd, x, weight, N, C);
}
static void rmsnorm_forward_residual(bool on_gpu, floatX* out, float* rstd, floatX* x_out, const floatX* x_in, const floatX* branch,
                                     const float* weight, int N, int C) {
    if (on_gpu) GPU_CALL(rmsnorm_forward_residual_cuda(out, rstd, x_out, x_in, branch, weight, N, C));
    else rmsnorm_forward_residual_cpu(out, rstd, x_out, x_in, branch, weight, N, C);
}
static void rmsnorm_backward(bool on_gpu, floatX* dx, float* dweight, const floatX* dout, const floatX* x,
                             const float* weight, const float* rstd, int N, int C) {
    if (on_gpu) GPU_CALL(rmsnorm_backward_cuda(dx, dweight, dout, x, weight, rstd, N, C));
    else rmsnorm_backward_cpu(dx, dweight, dout, x, weight, rstd, N, C);
}
