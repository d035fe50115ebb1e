// dev/rmsnorm.cu: RMSNorm with a fused residual add, forward and backward (eps = 1e-5).
//
// Forward (pre-norm residual stream, as in Mamba's fused add+norm):
//   res_out = x + res_in                         (stored in T; the norm uses the stored value)
//   rstd[i] = 1 / sqrt(mean_c res_out[i,c]^2 + eps)
//   out     = res_out * rstd * weight
// Backward: the gradient reaching res_out is the skip-path gradient already in dres plus the
// norm's gradient, so it ACCUMULATES into dres (one buffer carries the residual gradient):
//   xhat = res*rstd;  m = mean_c(weight*dout*xhat)
//   dres += rstd * (weight*dout - xhat*m);   dweight += sum_rows dout*xhat
// Rows (N, C), activations T (fp32 or bf16), math and parameters fp32.
//
// ./dev_rmsnorm      all versions;   ./dev_rmsnorm N   version N
//   forward:  1 add kernel + one thread per row; 2 warp per row, add fused, shuffles;
//             3 block per row, 16-byte vectors, the row kept in registers (one read)
//   backward: 1 thread per row + thread per column for dweight; 2 warp per row, dweight via
//             per-block partials; 3 block owns whole rows with 16-byte vectors, dweight
//             partials in registers
#include "dev_common.h"

#define RMS_EPS 1e-5f

// ---------------------------------------------------------------------------
// CPU reference. round_res: what storing res_out in T does to it (identity for fp32).

template <typename T>
static void rms_fwd_cpu(float* out, float* res_out, float* rstd, const float* x, const float* res_in,
                        const float* w, int N, int C) {
    for (int i = 0; i < N; i++) {
        double ss = 0.0;
        for (int c = 0; c < C; c++) {
            float r = to_f32(from_f32<T>(x[(size_t)i * C + c] + res_in[(size_t)i * C + c]));
            res_out[(size_t)i * C + c] = r;
            ss += (double)r * r;
        }
        float rs = (float)(1.0 / std::sqrt(ss / C + RMS_EPS));
        rstd[i] = rs;
        for (int c = 0; c < C; c++) out[(size_t)i * C + c] = res_out[(size_t)i * C + c] * rs * w[c];
    }
}

static void rms_bwd_cpu(float* dres, float* dw, const float* dout, const float* res, const float* w,
                        const float* rstd, int N, int C) {
    std::vector<double> dwacc(C, 0.0);
    for (int i = 0; i < N; i++) {
        const float* g = dout + (size_t)i * C;
        const float* r = res + (size_t)i * C;
        double dot = 0.0;
        for (int c = 0; c < C; c++) dot += (double)w[c] * g[c] * r[c] * rstd[i];
        double m = dot / C;
        for (int c = 0; c < C; c++) {
            double xhat = (double)r[c] * rstd[i];
            dres[(size_t)i * C + c] += (float)(rstd[i] * (w[c] * g[c] - xhat * m));
            dwacc[c] += g[c] * xhat;
        }
    }
    for (int c = 0; c < C; c++) dw[c] += (float)dwacc[c];
}

// ---------------------------------------------------------------------------
// device helpers

// warp_sum: src/common.h
// sum over the block (blockDim.x a multiple of 32); every thread gets the total. sh: 32 floats.
// The leading barrier lets callers reuse sh in a loop.
__device__ __forceinline__ float block_sum(float v, float* sh) {
    v = warp_sum(v);
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    return warp_sum(lane < nw ? sh[lane] : 0.0f);
}

static int sm_count() {
    static int n = 0;
    if (!n) {
        int dev;
        cudaCheck(cudaGetDevice(&dev));
        cudaCheck(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    }
    return n;
}

// dweight[c] += sum_r part[r, c]; block (32 columns, 16 row-strided threads), fixed order
__global__ void rms_reduce_partials_kernel(float* dw, const float* part, int rows, int C) {
    __shared__ float sm[16][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (c < C)
        for (int r = threadIdx.y; r < rows; r += 16) s += part[(size_t)r * C + c];
    sm[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float tot = 0.0f;
        for (int y = 0; y < 16; y++) tot += sm[y][threadIdx.x];
        dw[c] += tot;
    }
}
static void rms_reduce_partials(float* dw, const float* part, int rows, int C) {
    rms_reduce_partials_kernel<<<ceil_div(C, 32), dim3(32, 16)>>>(dw, part, rows, C);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// version 1 forward: a separate elementwise add kernel (res_out written, then read back), then
// one thread per row looping over C twice. Adjacent threads touch addresses C*sizeof(T) apart:
// every load is its own 32-byte sector, so bandwidth is poor (the baseline).

template <typename T>
__global__ void add_kernel(T* out, const T* a, const T* b, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = from_f32<T>(to_f32(a[i]) + to_f32(b[i]));
}

template <typename T>
__global__ void rms_fwd_v1_kernel(T* out, float* rstd, const T* res, const float* w, int N, int C) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    const T* r = res + (size_t)i * C;
    float ss = 0.0f;
    for (int c = 0; c < C; c++) { float v = to_f32(r[c]); ss += v * v; }
    float rs = rsqrtf(ss / C + RMS_EPS);
    rstd[i] = rs;
    for (int c = 0; c < C; c++) out[(size_t)i * C + c] = from_f32<T>(to_f32(r[c]) * rs * w[c]);
}

template <typename T>
static void rms_fwd_v1(T* out, T* res_out, float* rstd, const T* x, const T* res_in, const float* w,
                       int N, int C) {
    size_t n = (size_t)N * C;
    add_kernel<<<(unsigned)((n + 255) / 256), 256>>>(res_out, x, res_in, n);
    cudaCheckLaunch();
    rms_fwd_v1_kernel<<<ceil_div(N, 128), 128>>>(out, rstd, res_out, w, N, C);
    cudaCheckLaunch();
}

// version 1 backward: one thread per row for dres (two loops), one thread per column looping
// over all N rows for dweight (coalesced across columns, but only C threads).

template <typename T>
__global__ void rms_bwd_v1_dx_kernel(T* dres, const T* dout, const T* res, const float* w,
                                     const float* rstd, int N, int C) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    const T* g = dout + (size_t)i * C;
    const T* r = res + (size_t)i * C;
    float rs = rstd[i], dot = 0.0f;
    for (int c = 0; c < C; c++) dot += w[c] * to_f32(g[c]) * to_f32(r[c]);
    float m = dot * rs / C;
    for (int c = 0; c < C; c++) {
        size_t o = (size_t)i * C + c;
        float d = rs * (w[c] * to_f32(g[c]) - to_f32(r[c]) * rs * m);
        dres[o] = from_f32<T>(to_f32(dres[o]) + d);
    }
}
template <typename T>
__global__ void rms_bwd_v1_dw_kernel(float* dw, const T* dout, const T* res, const float* rstd, int N,
                                     int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int i = 0; i < N; i++) s += to_f32(dout[(size_t)i * C + c]) * to_f32(res[(size_t)i * C + c]) * rstd[i];
    dw[c] += s;
}
template <typename T>
static void rms_bwd_v1(T* dres, float* dw, const T* dout, const T* res, const float* w,
                       const float* rstd, float* scratch, int N, int C) {
    (void)scratch;
    rms_bwd_v1_dx_kernel<<<ceil_div(N, 128), 128>>>(dres, dout, res, w, rstd, N, C);
    cudaCheckLaunch();
    rms_bwd_v1_dw_kernel<<<ceil_div(C, 128), 128>>>(dw, dout, res, rstd, N, C);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// version 2 forward: one warp per row, lanes stride the row (coalesced), residual add fused
// (no separate kernel, res_out written once), sum of squares by shuffles. The second pass
// re-reads this thread's own res_out writes (L1/L2 hits, no extra DRAM traffic if it stays hot).

template <typename T>
__global__ void rms_fwd_v2_kernel(T* out, T* res_out, float* rstd, const T* x, const T* res_in,
                                  const float* w, int N, int C) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= N) return;  // whole warp leaves together: shuffles stay full-mask
    size_t base = (size_t)row * C;
    float ss = 0.0f;
    for (int c = lane; c < C; c += 32) {
        T r = from_f32<T>(to_f32(x[base + c]) + to_f32(res_in[base + c]));
        res_out[base + c] = r;
        float v = to_f32(r);
        ss += v * v;
    }
    ss = warp_sum(ss);
    float rs = rsqrtf(ss / C + RMS_EPS);
    if (lane == 0) rstd[row] = rs;
    for (int c = lane; c < C; c += 32) out[base + c] = from_f32<T>(to_f32(res_out[base + c]) * rs * w[c]);
}
template <typename T>
static void rms_fwd_v2(T* out, T* res_out, float* rstd, const T* x, const T* res_in, const float* w,
                       int N, int C) {
    rms_fwd_v2_kernel<<<ceil_div(N, 8), 256>>>(out, res_out, rstd, x, res_in, w, N, C);
    cudaCheckLaunch();
}

// version 2 backward: one warp per row (two coalesced passes over dout/res: dot product by
// shuffles, then dres). dweight: lane l always owns columns l, l+32, ...; it adds into its own
// slots of a per-warp shared row (no conflicts, no atomics); the block sums its warps' rows into
// one partial row per block; rms_reduce_partials sums the grid's rows. Grid: 8 blocks per SM
// (rows are strided over all warps), so partials are (grid, C) floats, ~3% of the traffic.

#define RMS_B2_WARPS 8
static int rms_bwd_v2_blocks(int N) { return std::max(1, std::min(ceil_div(N, RMS_B2_WARPS), 8 * sm_count())); }

template <typename T>
__global__ void __launch_bounds__(RMS_B2_WARPS * 32)
    rms_bwd_v2_kernel(T* dres, float* part, const T* dout, const T* res, const float* w,
                      const float* rstd, int N, int C) {
    extern __shared__ float sdw[];  // (RMS_B2_WARPS, C)
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float* my = sdw + (size_t)warp * C;
    for (int c = lane; c < C; c += 32) my[c] = 0.0f;
    for (int row = blockIdx.x * RMS_B2_WARPS + warp; row < N; row += gridDim.x * RMS_B2_WARPS) {
        size_t base = (size_t)row * C;
        float rs = rstd[row], dot = 0.0f;
        for (int c = lane; c < C; c += 32) dot += w[c] * to_f32(dout[base + c]) * to_f32(res[base + c]);
        float m = warp_sum(dot) * rs / C;
        for (int c = lane; c < C; c += 32) {
            float g = to_f32(dout[base + c]), xh = to_f32(res[base + c]) * rs;
            dres[base + c] = from_f32<T>(to_f32(dres[base + c]) + rs * (w[c] * g - xh * m));
            my[c] += g * xh;
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float s = 0.0f;
        for (int k = 0; k < RMS_B2_WARPS; k++) s += sdw[(size_t)k * C + c];
        part[(size_t)blockIdx.x * C + c] = s;
    }
}
template <typename T>
static void rms_bwd_v2(T* dres, float* dw, const T* dout, const T* res, const float* w,
                       const float* rstd, float* scratch, int N, int C) {
    int grid = rms_bwd_v2_blocks(N);
    size_t smem = (size_t)RMS_B2_WARPS * C * sizeof(float);
    if (smem > 48 * 1024)
        cudaCheck(cudaFuncSetAttribute(rms_bwd_v2_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)smem));
    rms_bwd_v2_kernel<<<grid, RMS_B2_WARPS * 32, smem>>>(dres, scratch, dout, res, w, rstd, N, C);
    cudaCheckLaunch();
    rms_reduce_partials(dw, scratch, grid, C);
}

// ---------------------------------------------------------------------------
// version 3 forward: one block per row, one 16-byte vector (4 fp32 / 8 bf16) per thread, the
// summed row stays in registers between the reduction and the output (x and res_in read once,
// res_out and out written once: the 4-tensor floor). blockDim = C/VEC rounded up to 32.
// Needs C % VEC == 0 and C/VEC <= 1024, otherwise falls back to version 2.

template <typename T>
__global__ void rms_fwd_v3_kernel(T* out, T* res_out, float* rstd, const T* x, const T* res_in,
                                  const float* w, int C) {
    __shared__ float sh[32];
    constexpr int V = Packed128<T>::size;
    int c0 = threadIdx.x * V;
    bool active = c0 < C;
    size_t base = (size_t)blockIdx.x * C + c0;
    float v[V];
    float ss = 0.0f;
    if (active) {
        Packed128<T> a = load128cs(x + base), b = load128cs(res_in + base), r;
#pragma unroll
        for (int j = 0; j < V; j++) {
            r.set(j, a.f(j) + b.f(j));
            v[j] = r.f(j);  // the stored (rounded) value, as the backward will see it
            ss += v[j] * v[j];
        }
        store128(res_out + base, r);
    }
    float rs = rsqrtf(block_sum(ss, sh) / C + RMS_EPS);
    if (threadIdx.x == 0) rstd[blockIdx.x] = rs;
    if (active) {
        Packed128<T> o;
#pragma unroll
        for (int j = 0; j < V; j += 4) {  // weight + c0 is 16B aligned (c0 % 4 == 0)
            float4 w4 = *reinterpret_cast<const float4*>(w + c0 + j);
            o.set(j + 0, v[j + 0] * rs * w4.x);
            o.set(j + 1, v[j + 1] * rs * w4.y);
            o.set(j + 2, v[j + 2] * rs * w4.z);
            o.set(j + 3, v[j + 3] * rs * w4.w);
        }
        store128cs(out + base, o);
    }
}
template <typename T> static bool rms_v3_ok(int C) {
    constexpr int V = Packed128<T>::size;
    return C % V == 0 && C / V <= 1024;
}
template <typename T>
static void rms_fwd_v3(T* out, T* res_out, float* rstd, const T* x, const T* res_in, const float* w,
                       int N, int C) {
    if (!rms_v3_ok<T>(C)) { rms_fwd_v2(out, res_out, rstd, x, res_in, w, N, C); return; }
    int threads = ceil_div(C / Packed128<T>::size, 32) * 32;
    rms_fwd_v3_kernel<<<N, threads>>>(out, res_out, rstd, x, res_in, w, C);
    cudaCheckLaunch();
}

// version 3 backward: a block of C/VEC threads (one 16-byte vector of columns each) walks rows
// blockIdx.x, blockIdx.x + grid, ...: per row one block reduction for the dot product, then the
// dres update. Each thread owns the same V columns on every row, so its dweight partial is V
// registers; one partial row per block at the end. Grid = resident blocks (occupancy API), so
// every block does ~N/grid rows. Fallback to version 2 as in the forward.

template <typename T>
__global__ void rms_bwd_v3_kernel(T* dres, float* part, const T* dout, const T* res, const float* w,
                                  const float* rstd, int N, int C) {
    __shared__ float sh[32];
    constexpr int V = Packed128<T>::size;
    int c0 = threadIdx.x * V;
    bool active = c0 < C;
    float wr[V], acc[V];
#pragma unroll
    for (int j = 0; j < V; j++) { wr[j] = active ? w[c0 + j] : 0.0f; acc[j] = 0.0f; }
    for (int row = blockIdx.x; row < N; row += gridDim.x) {  // uniform over the block
        size_t base = (size_t)row * C + c0;
        float rs = rstd[row];
        float g[V], xh[V], dot = 0.0f;
        if (active) {
            Packed128<T> gp = load128cs(dout + base), rp = load128cs(res + base);
#pragma unroll
            for (int j = 0; j < V; j++) {
                g[j] = gp.f(j);
                xh[j] = rp.f(j) * rs;
                dot += wr[j] * g[j] * xh[j];
            }
        }
        float m = block_sum(dot, sh) / C;
        if (active) {
            Packed128<T> d = load128cs(dres + base);
#pragma unroll
            for (int j = 0; j < V; j++) {
                d.set(j, d.f(j) + rs * (wr[j] * g[j] - xh[j] * m));
                acc[j] += g[j] * xh[j];
            }
            store128cs(dres + base, d);
        }
    }
    if (active) {
#pragma unroll
        for (int j = 0; j < V; j++) part[(size_t)blockIdx.x * C + c0 + j] = acc[j];
    }
}
template <typename T> static int rms_bwd_v3_blocks(int N, int C) {
    int threads = ceil_div(C / Packed128<T>::size, 32) * 32, per_sm = 0;
    cudaCheck(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, rms_bwd_v3_kernel<T>, threads, 0));
    return std::max(1, std::min(N, std::max(1, per_sm) * sm_count()));
}
template <typename T>
static void rms_bwd_v3(T* dres, float* dw, const T* dout, const T* res, const float* w,
                       const float* rstd, float* scratch, int N, int C) {
    if (!rms_v3_ok<T>(C)) { rms_bwd_v2(dres, dw, dout, res, w, rstd, scratch, N, C); return; }
    int threads = ceil_div(C / Packed128<T>::size, 32) * 32;
    int grid = rms_bwd_v3_blocks<T>(N, C);
    rms_bwd_v3_kernel<<<grid, threads>>>(dres, scratch, dout, res, w, rstd, N, C);
    cudaCheckLaunch();
    rms_reduce_partials(dw, scratch, grid, C);
}

// ---------------------------------------------------------------------------
// dispatch, validation, benchmark

template <typename T>
static void rms_fwd(int v, T* out, T* res_out, float* rstd, const T* x, const T* res_in,
                    const float* w, int N, int C) {
    if (v == 1) rms_fwd_v1(out, res_out, rstd, x, res_in, w, N, C);
    else if (v == 2) rms_fwd_v2(out, res_out, rstd, x, res_in, w, N, C);
    else rms_fwd_v3(out, res_out, rstd, x, res_in, w, N, C);
}
template <typename T>
static void rms_bwd(int v, T* dres, float* dw, const T* dout, const T* res, const float* w,
                    const float* rstd, float* scratch, int N, int C) {
    if (v == 1) rms_bwd_v1(dres, dw, dout, res, w, rstd, scratch, N, C);
    else if (v == 2) rms_bwd_v2(dres, dw, dout, res, w, rstd, scratch, N, C);
    else rms_bwd_v3(dres, dw, dout, res, w, rstd, scratch, N, C);
}
template <typename T> static size_t rms_scratch_floats(int N, int C) {
    size_t rows = rms_bwd_v2_blocks(N);
    if (rms_v3_ok<T>(C)) rows = std::max(rows, (size_t)rms_bwd_v3_blocks<T>(N, C));
    return rows * C;
}

template <typename T>
static bool rms_validate(int v, int N, int C, uint64_t seed, double* wf, double* wb) {
    size_t n = (size_t)N * C;
    Rng r; rng_seed(&r, seed);
    std::vector<float> x(n), res_in(n), w(C), dout(n), dres0(n), dw0(C);
    dev_fill_normal(x, 0.0f, 1.0f, &r);
    dev_fill_normal(res_in, 0.0f, 1.0f, &r);
    dev_fill_uniform(w, 0.5f, 1.5f, &r);
    dev_fill_normal(dout, 0.0f, 1.0f, &r);
    dev_fill_uniform(dres0, -1.0f, 1.0f, &r);  // backward accumulates: nonzero start
    dev_fill_uniform(dw0, -1.0f, 1.0f, &r);
    dev_round_to<T>(x); dev_round_to<T>(res_in); dev_round_to<T>(dout); dev_round_to<T>(dres0);
    std::vector<float> out_ref(n), res_ref(n), rstd_ref(N), dres_ref = dres0, dw_ref = dw0;
    rms_fwd_cpu<T>(out_ref.data(), res_ref.data(), rstd_ref.data(), x.data(), res_in.data(), w.data(), N, C);
    rms_bwd_cpu(dres_ref.data(), dw_ref.data(), dout.data(), res_ref.data(), w.data(), rstd_ref.data(), N, C);

    T* d_x = dev_upload<T>(x);
    T* d_res_in = dev_upload<T>(res_in);
    T* d_dout = dev_upload<T>(dout);
    T* d_dres = dev_upload<T>(dres0);
    float* d_w = dev_upload<float>(w);
    float* d_dw = dev_upload<float>(dw0);
    T* d_out = dev_alloc<T>(n);
    T* d_res = dev_alloc<T>(n);
    float* d_rstd = dev_alloc<float>(N);
    size_t ns = rms_scratch_floats<T>(N, C);
    float* d_scratch = dev_alloc<float>(ns);
    dev_poison(d_out, n * sizeof(T));
    dev_poison(d_res, n * sizeof(T));
    dev_poison(d_rstd, N * sizeof(float));
    dev_poison(d_scratch, ns * sizeof(float));

    rms_fwd(v, d_out, d_res, d_rstd, d_x, d_res_in, d_w, N, C);
    // the backward consumes the GPU forward's res_out and rstd (as in training)
    rms_bwd(v, d_dres, d_dw, d_dout, d_res, d_w, d_rstd, d_scratch, N, C);
    cudaCheck(cudaDeviceSynchronize());

    bool bf = sizeof(T) == 2;
    char what[128];
    snprintf(what, sizeof what, "rmsnorm v%d %s fwd out N=%d C=%d", v, DType<T>::name(), N, C);
    bool ok = dev_check_elem(what, d_out, out_ref, bf ? 1e-2 : 1e-5, wf);
    snprintf(what, sizeof what, "rmsnorm v%d %s fwd res_out N=%d C=%d", v, DType<T>::name(), N, C);
    ok &= dev_check_elem(what, d_res, res_ref, 1e-6, wf);  // exact up to rounding ties
    snprintf(what, sizeof what, "rmsnorm v%d %s fwd rstd N=%d C=%d", v, DType<T>::name(), N, C);
    ok &= dev_check_elem(what, d_rstd, rstd_ref, 1e-5, wf);
    snprintf(what, sizeof what, "rmsnorm v%d %s bwd dres N=%d C=%d", v, DType<T>::name(), N, C);
    ok &= dev_check_elem(what, d_dres, dres_ref, bf ? 1e-2 : 1e-5, wb);
    snprintf(what, sizeof what, "rmsnorm v%d %s bwd dweight N=%d C=%d", v, DType<T>::name(), N, C);
    ok &= dev_check_elem(what, d_dw, dw_ref, 1e-4, wb);

    dev_free(d_x); dev_free(d_res_in); dev_free(d_dout); dev_free(d_dres); dev_free(d_w);
    dev_free(d_dw); dev_free(d_out); dev_free(d_res); dev_free(d_rstd); dev_free(d_scratch);
    return ok;
}

static const char* rms_fwd_name(int v) {
    return v == 1 ? "1 add + thread/row" : v == 2 ? "2 warp/row fused add" : "3 block/row vec16 in regs";
}
static const char* rms_bwd_name(int v) {
    return v == 1 ? "1 thread/row + col dw" : v == 2 ? "2 warp/row + blk partials" : "3 blk rows vec16 dw regs";
}

template <typename T> static void rms_run_version(int v) {
    const int shapes[][2] = {{1, 37}, {7, 37}, {3, 768}, {65, 100}, {33, 8}, {17, 4104}, {1000, 1536},
                             {8192, 768}};
    double wf = 0.0, wb = 0.0;
    bool ok = true;
    uint64_t seed = 2000 + v;
    for (auto& s : shapes) ok &= rms_validate<T>(v, s[0], s[1], seed++, &wf, &wb);

    // benchmark: mamba-130m d_model 768, B*L = 8192 rows
    const int N = 8192, C = 768;
    size_t n = (size_t)N * C;
    Rng r; rng_seed(&r, 78);
    std::vector<float> hx(n), hw(C), hr(N);
    dev_fill_normal(hx, 0.0f, 1.0f, &r);
    dev_fill_uniform(hw, 0.5f, 1.5f, &r);
    dev_fill_uniform(hr, 0.5f, 1.5f, &r);
    T* x = dev_upload<T>(hx);
    T* res_in = dev_upload<T>(hx);
    T* dout = dev_upload<T>(hx);
    T* dres = dev_upload<T>(hx);
    T* out = dev_alloc<T>(n);
    T* res = dev_upload<T>(hx);
    float* w = dev_upload<float>(hw);
    float* dw = dev_upload<float>(hw);
    float* rstd = dev_upload<float>(hr);
    float* scratch = dev_alloc<float>(rms_scratch_floats<T>(N, C));
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d C=%d", N, C);
    float ms = dev_bench_ms([&](int) { rms_fwd(v, out, res, rstd, x, res_in, w, N, C); });
    // floor bytes: read x, res_in; write res_out, out (+ rstd); sfu: one rsqrt per row
    dev_print_row("rmsnorm+res fwd", rms_fwd_name(v), shape, DType<T>::name(), ms,
                  4.0 * n * sizeof(T) + 4.0 * N, (double)N, ok, wf);
    ms = dev_bench_ms([&](int) { rms_bwd(v, dres, dw, dout, res, w, rstd, scratch, N, C); });
    // floor bytes: read dout, res, dres; write dres (+ rstd)
    dev_print_row("rmsnorm+res bwd", rms_bwd_name(v), shape, DType<T>::name(), ms,
                  4.0 * n * sizeof(T) + 4.0 * N, 0.0, ok, wb);
    dev_free(x); dev_free(res_in); dev_free(dout); dev_free(dres); dev_free(out); dev_free(res);
    dev_free(w); dev_free(dw); dev_free(rstd); dev_free(scratch);
}

int main(int argc, char** argv) {
    dev_print_header();
    for (int v = 1; v <= 3; v++) {
        if (!dev_want_version(argc, argv, v)) continue;
        rms_run_version<float>(v);
        rms_run_version<bf16>(v);
    }
    return dev_finish();
}
