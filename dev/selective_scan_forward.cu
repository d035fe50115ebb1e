// Mamba-1 selective scan (S6) forward: kernel workbench.
//
//   dt = softplus(delta + delta_bias[e])            (= x above 20)
//   dA = exp(dt * A[e,n]),  A = -exp(A_log[e,n])
//   h_t = dA * h_{t-1} + dt * Bm_t[n] * u_t         (per b, e, n)
//   y_t = sum_n Cm_t[n] * h_t[n] + D[e] * u_t;   out = y * silu(z)
// Layout is token-major: u, delta, z, out (B, L, E); Bm, Cm (B, L, N); A_log (E, N); D, delta_bias (E).
// hs (B, n_chunks, E, N) fp32: the state entering each chunk of SCAN_CHUNK steps (hs[b,0] = 0).
//
// Build: nvcc -O3 -std=c++17 -arch=sm_90 dev/selective_scan_forward.cu -o dev_selective_scan_forward -lcublas
// Run:   ./dev_selective_scan_forward [version]    (no argument: all versions)
// This file is also #included by selective_scan_backward.cu (with SCAN_FWD_NO_MAIN defined).
#include "dev_common.h"
// SCAN_CHUNK and scan_n_chunks, softplus_f (common.h), and the device helpers the src kernels
// share with these versions: scan_ex2 (2^x on the SFU), scan_softplus_fast, scan_silu_fast,
// reduce_scatter_level, cp_async and its commit / wait (src/common.h)
#include "../src/selective_scan.h"

// reduce_scatter_level<M, M> (src/common.h): one level of a warp reduce-scatter of 2M values; after the
// levels 16, 8, 4, 2, 1 lane l holds the warp sum of the original v[l]

// ---------------------------------------------------------------------------
// CPU reference (double accumulation). Inputs as float (already rounded to the GPU dtype).

static void scan_fwd_cpu(float* out, float* hs, const float* u, const float* delta, const float* A_log,
                         const float* Bm, const float* Cm, const float* D, const float* z,
                         const float* dbias, int B, int L, int E, int N) {
    int nc = scan_n_chunks(L);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int e = 0; e < E; e++) {
            std::vector<double> h(N, 0.0), A(N);
            for (int n = 0; n < N; n++) A[n] = -std::exp((double)A_log[e * N + n]);
            for (int t = 0; t < L; t++) {
                size_t row = (size_t)b * L + t;
                if (t % SCAN_CHUNK == 0)
                    for (int n = 0; n < N; n++)
                        hs[(((size_t)b * nc + t / SCAN_CHUNK) * E + e) * N + n] = (float)h[n];
                double x = (double)delta[row * E + e] + dbias[e];
                double dt = x > 20.0 ? x : std::log1p(std::exp(x));
                double uu = u[row * E + e], y = 0.0;
                for (int n = 0; n < N; n++) {
                    h[n] = std::exp(dt * A[n]) * h[n] + dt * Bm[row * N + n] * uu;
                    y += Cm[row * N + n] * h[n];
                }
                y += (double)D[e] * uu;
                double zz = z[row * E + e];
                out[row * E + e] = (float)(y * zz / (1.0 + std::exp(-zz)));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// version 1: naive port. One thread per (b, e), sequential over L, the N states in registers.
// Reads are coalesced (consecutive threads = consecutive e of one token row; Bm/Cm rows are a
// broadcast), but only B*E = 12288 threads exist: ~3 warps per SM, far too little in flight to
// hide the dependent global loads of every step. Accurate expf/log1pf; the baseline.

template <typename T, int N>
__global__ void scan_fwd_v1_kernel(T* out, float* hs, const T* u, const T* delta, const float* A_log,
                                   const T* Bm, const T* Cm, const float* D, const T* z,
                                   const float* dbias, int B, int L, int E) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * E) return;
    int b = idx / E, e = idx % E;
    int nc = scan_n_chunks(L);
    float A[N], h[N];
#pragma unroll
    for (int n = 0; n < N; n++) { A[n] = -expf(A_log[e * N + n]); h[n] = 0.0f; }
    float Dv = D[e], bias = dbias[e];
    for (int t = 0; t < L; t++) {
        size_t row = (size_t)b * L + t;
        if (t % SCAN_CHUNK == 0) {
            float* hp = hs + (((size_t)b * nc + t / SCAN_CHUNK) * E + e) * N;
#pragma unroll
            for (int n = 0; n < N; n++) hp[n] = h[n];
        }
        float x = to_f32(delta[row * E + e]) + bias;
        float dt = softplus_f(x);
        float uu = to_f32(u[row * E + e]);
        float dtu = dt * uu, y = 0.0f;
#pragma unroll
        for (int n = 0; n < N; n++) {
            h[n] = expf(dt * A[n]) * h[n] + dtu * to_f32(Bm[row * N + n]);
            y += to_f32(Cm[row * N + n]) * h[n];
        }
        float zz = to_f32(z[row * E + e]);
        out[row * E + e] = from_f32<T>((y + Dv * uu) * zz / (1.0f + expf(-zz)));
    }
}

template <typename T, int N>
static void scan_fwd_v1(T* out, float* hs, const T* u, const T* delta, const float* A_log, const T* Bm,
                        const T* Cm, const float* D, const T* z, const float* dbias, int B, int L, int E) {
    int threads = 128;
    scan_fwd_v1_kernel<T, N><<<ceil_div(B * E, threads), threads>>>(out, hs, u, delta, A_log, Bm, Cm, D, z,
                                                                dbias, B, L, E);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// version 2: one thread per (b, e, n). N lanes of a warp share a channel, y is reduced over n with
// warp shuffles. 16x the threads of v1 (enough to fill the GPU), but every lane recomputes the
// per-(t,e) softplus and silu (3 extra special-function ops next to its one exp) and each step
// still waits on global loads; 4 shuffles per step. hs writes are fully coalesced (lane = n).

template <typename T, int N>
__global__ void scan_fwd_v2_kernel(T* out, float* hs, const T* u, const T* delta, const float* A_log,
                                   const T* Bm, const T* Cm, const float* D, const T* z,
                                   const float* dbias, int B, int L, int E) {
    static_assert(32 % N == 0, "N must divide 32");
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    int ch = idx / N, n = idx % N;
    bool active = ch < B * E;  // whole N-lane groups are active or not: the shuffles stay legal
    if (!active) ch = 0;
    int b = ch / E, e = ch % E;
    int nc = scan_n_chunks(L);
    float A2 = -expf(A_log[e * N + n]) * SCAN_LOG2E;
    float Dv = D[e], bias = dbias[e], h = 0.0f;
    for (int t = 0; t < L; t++) {
        size_t row = (size_t)b * L + t;
        if (t % SCAN_CHUNK == 0 && active) hs[(((size_t)b * nc + t / SCAN_CHUNK) * E + e) * N + n] = h;
        float dt = softplus_f(to_f32(delta[row * E + e]) + bias);
        float uu = to_f32(u[row * E + e]);
        h = scan_ex2(dt * A2) * h + dt * uu * to_f32(Bm[row * N + n]);
        float y = to_f32(Cm[row * N + n]) * h;
#pragma unroll
        for (int off = N / 2; off > 0; off >>= 1) y += __shfl_xor_sync(0xffffffffu, y, off);
        if (n == 0 && active) {
            float zz = to_f32(z[row * E + e]);
            out[row * E + e] = from_f32<T>((y + Dv * uu) * scan_silu_fast(zz));
        }
    }
}

template <typename T, int N>
static void scan_fwd_v2(T* out, float* hs, const T* u, const T* delta, const float* A_log, const T* Bm,
                        const T* Cm, const float* D, const T* z, const float* dbias, int B, int L, int E) {
    int threads = 256;
    scan_fwd_v2_kernel<T, N><<<ceil_div(B * E * N, threads), threads>>>(out, hs, u, delta, A_log, Bm, Cm, D,
                                                                    z, dbias, B, L, E);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// version 3: chunked parallel scan over L. A block owns 16 channels of one batch element; warp w owns
// channel w and its 32 lanes own 4 consecutive timesteps each of a 128-step tile. Tiles of
// u/dt/z/Bm/Cm are staged (coalesced) in shared memory, transposed to [channel][t] so a lane reads
// its 4 steps as one float4. For each state n: local scan of the lane's 4 (a, b) pairs, warp
// inclusive scan with the associative operator (a1,b1)o(a2,b2) = (a2*a1, a2*b1 + b2) via shuffles,
// exclusive shift, apply the carry entering the tile, rescan to get h_t and y_t += C_t h_t. The carry
// (state after the tile) is held by every lane. dt and silu are computed once per (t, e).
// Expected limit: ~12 shuffles per lane per n per 4 steps (shuffle pipe, not the SFU), and one
// synchronous load per tile.

#define V3_CH 16
#define V3_ITEMS 4
#define V3_TT (32 * V3_ITEMS)
#define V3_PAD 4

template <typename T, int N>
__global__ void __launch_bounds__(32 * V3_CH) scan_fwd_v3_kernel(T* out, float* hs, const T* u,
        const T* delta, const float* A_log, const T* Bm, const T* Cm, const float* D, const T* z,
        const float* dbias, int B, int L, int E) {
    __shared__ __align__(16) float dt_s[V3_CH][V3_TT + V3_PAD];
    __shared__ __align__(16) float u_s[V3_CH][V3_TT + V3_PAD];
    __shared__ __align__(16) float z_s[V3_CH][V3_TT + V3_PAD];  // z, then overwritten by out
    __shared__ __align__(16) float B_s[N][V3_TT + V3_PAD];
    __shared__ __align__(16) float C_s[N][V3_TT + V3_PAD];
    int tid = threadIdx.x, lane = tid % 32, w = tid / 32;
    int b = blockIdx.y, e0 = blockIdx.x * V3_CH, e = e0 + w;
    bool ch_ok = e < E;
    int ec = ch_ok ? e : E - 1;
    int nc = scan_n_chunks(L);
    float A2[N], carry[N];
#pragma unroll
    for (int n = 0; n < N; n++) { A2[n] = -expf(A_log[ec * N + n]) * SCAN_LOG2E; carry[n] = 0.0f; }
    float Dv = D[ec];
    if (ch_ok && lane < N) hs[(((size_t)b * nc) * E + e) * N + lane] = 0.0f;  // hs[b,0] = 0

    for (int t0 = 0; t0 < L; t0 += V3_TT) {
        __syncthreads();  // previous tile's out has been stored
        // stage: element i -> (t = i / CH, c = i % CH): consecutive threads read consecutive e
        for (int i = tid; i < V3_TT * V3_CH; i += blockDim.x) {
            int r = i / V3_CH, c = i % V3_CH, t = t0 + r, ee = e0 + c;
            float uu = 0.0f, dt = 0.0f, zz = 0.0f;
            if (t < L && ee < E) {
                size_t k = ((size_t)b * L + t) * E + ee;
                uu = to_f32(u[k]);
                zz = to_f32(z[k]);
                dt = softplus_f(to_f32(delta[k]) + dbias[ee]);
            }
            u_s[c][r] = uu; dt_s[c][r] = dt; z_s[c][r] = zz;  // dt = 0 past L: identity steps
        }
        for (int i = tid; i < V3_TT * N; i += blockDim.x) {
            int r = i / N, n = i % N, t = t0 + r;
            float bv = 0.0f, cv = 0.0f;
            if (t < L) { bv = to_f32(Bm[((size_t)b * L + t) * N + n]); cv = to_f32(Cm[((size_t)b * L + t) * N + n]); }
            B_s[n][r] = bv; C_s[n][r] = cv;
        }
        __syncthreads();

        int r0 = lane * V3_ITEMS;
        float4 dt4 = *reinterpret_cast<const float4*>(&dt_s[w][r0]);
        float4 u4 = *reinterpret_cast<const float4*>(&u_s[w][r0]);
        float dt[4] = {dt4.x, dt4.y, dt4.z, dt4.w}, uu[4] = {u4.x, u4.y, u4.z, u4.w};
        float du[4], y[4];
#pragma unroll
        for (int i = 0; i < 4; i++) { du[i] = dt[i] * uu[i]; y[i] = Dv * uu[i]; }
#pragma unroll
        for (int n = 0; n < N; n++) {
            float4 b4 = *reinterpret_cast<const float4*>(&B_s[n][r0]);
            float4 c4 = *reinterpret_cast<const float4*>(&C_s[n][r0]);
            float bb[4] = {b4.x, b4.y, b4.z, b4.w}, cc[4] = {c4.x, c4.y, c4.z, c4.w};
            float a[4], bx[4];
#pragma unroll
            for (int i = 0; i < 4; i++) { a[i] = scan_ex2(dt[i] * A2[n]); bx[i] = du[i] * bb[i]; }
            // thread-local aggregate of its 4 steps
            float pa = a[0], pb = bx[0];
#pragma unroll
            for (int i = 1; i < 4; i++) { pb = a[i] * pb + bx[i]; pa = a[i] * pa; }
            // warp inclusive scan (Kogge-Stone): combine with the aggregate `off` lanes earlier
#pragma unroll
            for (int off = 1; off < 32; off <<= 1) {
                float qa = __shfl_up_sync(0xffffffffu, pa, off);
                float qb = __shfl_up_sync(0xffffffffu, pb, off);
                if (lane >= off) { pb = pa * qb + pb; pa = pa * qa; }
            }
            float ea = __shfl_up_sync(0xffffffffu, pa, 1), eb = __shfl_up_sync(0xffffffffu, pb, 1);
            float ta = __shfl_sync(0xffffffffu, pa, 31), tb = __shfl_sync(0xffffffffu, pb, 31);
            if (lane == 0) { ea = 1.0f; eb = 0.0f; }
            float hh = ea * carry[n] + eb;  // state entering this lane's first step
            carry[n] = ta * carry[n] + tb;  // state after the tile
#pragma unroll
            for (int i = 0; i < 4; i++) {
                hh = a[i] * hh + bx[i];
                y[i] += cc[i] * hh;
                int tn = t0 + r0 + i + 1;  // hh is the state entering step tn
                if (tn % SCAN_CHUNK == 0 && tn < L && ch_ok)
                    hs[(((size_t)b * nc + tn / SCAN_CHUNK) * E + e) * N + n] = hh;
            }
        }
        float4 z4 = *reinterpret_cast<const float4*>(&z_s[w][r0]);
        float zz[4] = {z4.x, z4.y, z4.z, z4.w};
        float4 o4;
        o4.x = y[0] * scan_silu_fast(zz[0]); o4.y = y[1] * scan_silu_fast(zz[1]);
        o4.z = y[2] * scan_silu_fast(zz[2]); o4.w = y[3] * scan_silu_fast(zz[3]);
        *reinterpret_cast<float4*>(&z_s[w][r0]) = o4;
        __syncthreads();
        for (int i = tid; i < V3_TT * V3_CH; i += blockDim.x) {
            int r = i / V3_CH, c = i % V3_CH, t = t0 + r, ee = e0 + c;
            if (t < L && ee < E) out[((size_t)b * L + t) * E + ee] = from_f32<T>(z_s[c][r]);
        }
    }
}

template <typename T, int N>
static void scan_fwd_v3(T* out, float* hs, const T* u, const T* delta, const float* A_log, const T* Bm,
                        const T* Cm, const float* D, const T* z, const float* dbias, int B, int L, int E) {
    dim3 grid(ceil_div(E, V3_CH), B);
    scan_fwd_v3_kernel<T, N><<<grid, 32 * V3_CH>>>(out, hs, u, delta, A_log, Bm, Cm, D, z, dbias, B, L, E);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// version 4: fused, hardware-aware. Back to sequential time per thread (no scan overhead: exactly
// one ex2 + 4 FP32 ops per (t, e, n), the minimum), with the parallelism from splitting N:
// 4 threads per channel, 4 states each in registers; a block = 32 consecutive channels (128
// threads) of one batch element, so B*E*4 = 49152 threads (~3 warps per SM sub-partition).
//  - 32-step tiles of u, delta, z, Bm, Cm are loaded with 16-byte vector loads (streaming) into
//    registers one tile AHEAD (software prefetch), then staged into shared memory; dt = softplus and
//    dt*u are computed once per (t, e) at staging; Bm/Cm rows are staged once for all 32 channels.
//  - exp(dt*A) = ex2(dt * A2) with A2 = A*log2(e) precomputed: one MUFU op per state-step.
//  - y partials of 4 steps are reduced across the channel's 4 threads with a reduce-scatter (3
//    shuffles per 4 steps instead of 8); each thread then finishes one (t, e): D skip + silu gate,
//    written to a shared tile and stored with 16-byte vector stores.
//  - hs written as float4 straight from registers at chunk starts.
// E not a multiple of the vector width falls back to scalar loads with the same mapping.

#define V4_CH 32                // channels per block
#define V4_TPC 4                // threads per channel
#define V4_TT 32                // timesteps per tile (divides SCAN_CHUNK)
#define V4_THREADS (V4_CH * V4_TPC)
#define V4_OPAD 8               // row pad so (t = quad*4+g, c) accesses hit distinct banks
static_assert(SCAN_CHUNK % V4_TT == 0, "tile must divide the chunk");

// 16 bytes worth of T at channels [e0, e0+VEC) of a row (zeros outside [0,E)); vector or scalar path
template <typename T, bool VEC_OK>
__device__ __forceinline__ Packed128<T> load_row_pack(const T* row, int e0, int E, bool valid) {
    Packed128<T> p;
    if (VEC_OK) {
        if (valid && e0 < E) return load128cs(row + e0);
#pragma unroll
        for (int k = 0; k < Packed128<T>::size; k++) p.v[k] = from_f32<T>(0.0f);
    } else {
#pragma unroll
        for (int k = 0; k < Packed128<T>::size; k++)
            p.v[k] = (valid && e0 + k < E) ? row[e0 + k] : from_f32<T>(0.0f);
    }
    return p;
}

template <typename T, int N, bool VEC_OK>
__global__ void __launch_bounds__(V4_THREADS) scan_fwd_v4_kernel(T* out, float* hs, const T* u,
        const T* delta, const float* A_log, const T* Bm, const T* Cm, const float* D, const T* z,
        const float* dbias, int B, int L, int E) {
    constexpr int VEC = Packed128<T>::size;          // elements per 16 bytes
    constexpr int S = N / V4_TPC;                    // states per thread
    constexpr int ROWV = V4_CH / VEC;                // vectors per tile row of activations
    constexpr int ACT_PER_THR = V4_TT * ROWV / V4_THREADS;
    constexpr int BC_VECS = V4_TT * N / VEC;         // vectors per Bm (or Cm) tile
    static_assert(S == 4, "this kernel is written for N = 16 (4 states per thread)");
    static_assert(V4_TT * ROWV % V4_THREADS == 0, "activation tile must split evenly");
    constexpr int BC_PER_THR = (2 * BC_VECS + V4_THREADS - 1) / V4_THREADS;
    static_assert((N * sizeof(T)) % 16 == 0, "Bm/Cm rows must be whole 16-byte vectors");

    __shared__ __align__(16) float u_s[V4_TT][V4_CH + V4_OPAD];
    __shared__ __align__(16) float z_s[V4_TT][V4_CH + V4_OPAD];
    __shared__ __align__(16) float o_s[V4_TT][V4_CH + V4_OPAD];
    __shared__ __align__(16) float2 dd_s[V4_TT][V4_CH];   // (dt, dt*u)
    __shared__ __align__(16) float B_s[V4_TT][N];
    __shared__ __align__(16) float C_s[V4_TT][N];
    __shared__ float bias_s[V4_CH];

    int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    int cl = warp * 8 + lane / V4_TPC, g = lane % V4_TPC;  // channel in block, state group
    int b = blockIdx.y, eb = blockIdx.x * V4_CH, e = eb + cl;
    bool ch_ok = e < E;
    int ec = ch_ok ? e : E - 1;
    int nc = scan_n_chunks(L);
    if (tid < V4_CH) bias_s[tid] = dbias[min(eb + tid, E - 1)];
    float A2[S], h[S];
#pragma unroll
    for (int s = 0; s < S; s++) { A2[s] = -expf(A_log[ec * N + g * S + s]) * SCAN_LOG2E; h[s] = 0.0f; }
    float Dv = D[ec];

    Packed128<T> pu[ACT_PER_THR], pd[ACT_PER_THR], pz[ACT_PER_THR], pbc[BC_PER_THR];
    // issue the global loads of tile t0 into registers
    auto prefetch = [&](int t0) {
#pragma unroll
        for (int k = 0; k < ACT_PER_THR; k++) {
            int i = tid + k * V4_THREADS, r = i / ROWV, cv = i % ROWV, t = t0 + r;
            size_t off = ((size_t)b * L + (t < L ? t : 0)) * E;
            pu[k] = load_row_pack<T, VEC_OK>(u + off, eb + cv * VEC, E, t < L);
            pd[k] = load_row_pack<T, VEC_OK>(delta + off, eb + cv * VEC, E, t < L);
            pz[k] = load_row_pack<T, VEC_OK>(z + off, eb + cv * VEC, E, t < L);
        }
#pragma unroll
        for (int k = 0; k < BC_PER_THR; k++) {  // vectors [0, BC_VECS): Bm, [BC_VECS, 2*BC_VECS): Cm
            int j = tid + k * V4_THREADS;
            if (j < 2 * BC_VECS) {
                int i = j % BC_VECS, r = i / (N / VEC), nv = i % (N / VEC), t = t0 + r;
                const T* src = j < BC_VECS ? Bm : Cm;
                if (t < L) pbc[k] = load128cs(src + ((size_t)b * L + t) * N + nv * VEC);
                else
#pragma unroll
                    for (int q = 0; q < VEC; q++) pbc[k].v[q] = from_f32<T>(0.0f);
            }
        }
    };
    // write the prefetched registers into the shared tile, computing dt and dt*u once per (t, e)
    auto stage = [&](int t0) {
#pragma unroll
        for (int k = 0; k < ACT_PER_THR; k++) {
            int i = tid + k * V4_THREADS, r = i / ROWV, cv = i % ROWV, t = t0 + r;
#pragma unroll
            for (int j = 0; j < VEC; j += 4) {
                float4 uf, zf, d0, d1;
                float* uv = &uf.x; float* zv = &zf.x;
                float dtv[4];
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    int c = cv * VEC + j + q;
                    uv[q] = pu[k].f(j + q);
                    zv[q] = pz[k].f(j + q);
                    dtv[q] = (t < L && eb + c < E) ? softplus_f(pd[k].f(j + q) + bias_s[c]) : 0.0f;
                }
                d0 = make_float4(dtv[0], dtv[0] * uv[0], dtv[1], dtv[1] * uv[1]);
                d1 = make_float4(dtv[2], dtv[2] * uv[2], dtv[3], dtv[3] * uv[3]);
                int c0 = cv * VEC + j;
                *reinterpret_cast<float4*>(&u_s[r][c0]) = uf;
                *reinterpret_cast<float4*>(&z_s[r][c0]) = zf;
                *reinterpret_cast<float4*>(&dd_s[r][c0]) = d0;
                *reinterpret_cast<float4*>(&dd_s[r][c0 + 2]) = d1;
            }
        }
#pragma unroll
        for (int k = 0; k < BC_PER_THR; k++) {
            int j = tid + k * V4_THREADS;
            if (j < 2 * BC_VECS) {
                int i = j % BC_VECS, r = i / (N / VEC), nv = i % (N / VEC);
                float* dst = j < BC_VECS ? &B_s[r][nv * VEC] : &C_s[r][nv * VEC];
#pragma unroll
                for (int q = 0; q < VEC; q++) dst[q] = pbc[k].f(q);
            }
        }
    };

    __syncthreads();  // bias_s
    prefetch(0);
    stage(0);
    __syncthreads();
    for (int t0 = 0; t0 < L; t0 += V4_TT) {
        bool more = t0 + V4_TT < L;
        if (more) prefetch(t0 + V4_TT);  // in flight during the scan below
        if (t0 % SCAN_CHUNK == 0 && ch_ok)
            *reinterpret_cast<float4*>(hs + (((size_t)b * nc + t0 / SCAN_CHUNK) * E + e) * N + g * S) =
                make_float4(h[0], h[1], h[2], h[3]);
#pragma unroll 2
        for (int q = 0; q < V4_TT / 4; q++) {
            float yq[4];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                int r = q * 4 + j;
                float2 d = dd_s[r][cl];
                float4 bv = *reinterpret_cast<const float4*>(&B_s[r][g * S]);
                float4 cv = *reinterpret_cast<const float4*>(&C_s[r][g * S]);
                h[0] = scan_ex2(d.x * A2[0]) * h[0] + d.y * bv.x;
                h[1] = scan_ex2(d.x * A2[1]) * h[1] + d.y * bv.y;
                h[2] = scan_ex2(d.x * A2[2]) * h[2] + d.y * bv.z;
                h[3] = scan_ex2(d.x * A2[3]) * h[3] + d.y * bv.w;
                yq[j] = cv.x * h[0] + cv.y * h[1] + cv.z * h[2] + cv.w * h[3];
            }
            // reduce-scatter over the 4 threads of the channel: thread g ends with step q*4+g
            bool hi2 = g & 2;
            float s0 = hi2 ? yq[0] : yq[2], s1 = hi2 ? yq[1] : yq[3];
            float k0 = hi2 ? yq[2] : yq[0], k1 = hi2 ? yq[3] : yq[1];
            k0 += __shfl_xor_sync(0xffffffffu, s0, 2);
            k1 += __shfl_xor_sync(0xffffffffu, s1, 2);
            bool hi1 = g & 1;
            float sy = hi1 ? k0 : k1, ky = hi1 ? k1 : k0;
            ky += __shfl_xor_sync(0xffffffffu, sy, 1);
            int r = q * 4 + g;
            o_s[r][cl] = (ky + Dv * u_s[r][cl]) * scan_silu_fast(z_s[r][cl]);
        }
        __syncthreads();  // o_s complete; everyone is done reading the tile
        // store the out tile with 16-byte stores
#pragma unroll
        for (int k = 0; k < ACT_PER_THR; k++) {
            int i = tid + k * V4_THREADS, r = i / ROWV, cv = i % ROWV, t = t0 + r, ee = eb + cv * VEC;
            if (t < L) {
                Packed128<T> p;
#pragma unroll
                for (int q = 0; q < VEC; q++) p.set(q, o_s[r][cv * VEC + q]);
                T* dst = out + ((size_t)b * L + t) * E;
                if (VEC_OK) {
                    if (ee < E) store128cs(dst + ee, p);
                } else {
#pragma unroll
                    for (int q = 0; q < VEC; q++)
                        if (ee + q < E) dst[ee + q] = p.v[q];
                }
            }
        }
        if (more) stage(t0 + V4_TT);
        __syncthreads();
    }
}

template <typename T, int N>
static void scan_fwd_v4(T* out, float* hs, const T* u, const T* delta, const float* A_log, const T* Bm,
                        const T* Cm, const float* D, const T* z, const float* dbias, int B, int L, int E) {
    dim3 grid(ceil_div(E, V4_CH), B);
    if (E % Packed128<T>::size == 0)
        scan_fwd_v4_kernel<T, N, true><<<grid, V4_THREADS>>>(out, hs, u, delta, A_log, Bm, Cm, D, z, dbias, B, L, E);
    else
        scan_fwd_v4_kernel<T, N, false><<<grid, V4_THREADS>>>(out, hs, u, delta, A_log, Bm, Cm, D, z, dbias, B, L, E);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// versions 5 and 6: v4 generalized over TPC, the threads per channel (S = N/TPC states each), with a
// cheaper softplus. Per (t, e) v4 spends log1pf's software path (~20 FP32 instructions) once, which
// is ~1.3 issue slots per state-step when the budget left after the unavoidable 1 ex2 + 4 FP32 ops
// is ~3 (see notes_scan.md). scan_softplus_fast (src/selective_scan_fast.h) uses ex2 + lg2 on the SFU
// instead (2 MUFU + ~5 FP ops): x above 20; __logf(1 + e) for e = e^x >= 1e-2 (the rounding of
// 1 + e costs < 6e-6 relative); the series e - e^2/2 + e^3/3 (error < e^3/4 relative) below.
//  v5: TPC = 4 (as v4, 128-thread blocks, 4 states per thread)
//  v6: TPC = 2 (64-thread blocks, 8 states per thread): half the warps (~1.5 per SM sub-partition)
//      but B/C/dt shared loads and the y reduction amortized over 8 states instead of 4, and one
//      shuffle per 2 steps. Bets on ILP (8 independent exps per step) instead of occupancy.

#define V5_CH 32   // channels per block
#define V5_TT 32   // timesteps per tile
#define V5_OPAD 8

template <typename T, int N, bool VEC_OK, int TPC, bool FAST_SP>
__global__ void __launch_bounds__(V5_CH * TPC) scan_fwd_v5_kernel(T* out, float* hs, const T* u,
        const T* delta, const float* A_log, const T* Bm, const T* Cm, const float* D, const T* z,
        const float* dbias, int B, int L, int E) {
    constexpr int THREADS = V5_CH * TPC;
    constexpr int VEC = Packed128<T>::size;
    constexpr int S = N / TPC;                       // states per thread
    constexpr int CPW = 32 / TPC;                    // channels per warp
    constexpr int ROWV = V5_CH / VEC;
    constexpr int ACT_PER_THR = V5_TT * ROWV / THREADS;
    constexpr int BC_VECS = V5_TT * N / VEC;
    constexpr int BC_PER_THR = (2 * BC_VECS + THREADS - 1) / THREADS;
    static_assert(TPC == 2 || TPC == 4, "the y reduce-scatter below handles 2 or 4 threads per channel");
    static_assert(S % 4 == 0, "states per thread must be a multiple of 4 (float4 B/C loads)");
    static_assert(V5_TT % TPC == 0 && SCAN_CHUNK % V5_TT == 0, "tile shapes");
    static_assert(V5_TT * ROWV % THREADS == 0, "activation tile must split evenly");
    static_assert((N * sizeof(T)) % 16 == 0, "Bm/Cm rows must be whole 16-byte vectors");

    __shared__ __align__(16) float u_s[V5_TT][V5_CH + V5_OPAD];
    __shared__ __align__(16) float z_s[V5_TT][V5_CH + V5_OPAD];
    __shared__ __align__(16) float o_s[V5_TT][V5_CH + V5_OPAD];
    __shared__ __align__(16) float2 dd_s[V5_TT][V5_CH];
    __shared__ __align__(16) float B_s[V5_TT][N];
    __shared__ __align__(16) float C_s[V5_TT][N];
    __shared__ float bias_s[V5_CH];

    int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    int cl = warp * CPW + lane / TPC, g = lane % TPC;
    int b = blockIdx.y, eb = blockIdx.x * V5_CH, e = eb + cl;
    bool ch_ok = e < E;
    int ec = ch_ok ? e : E - 1;
    int nc = scan_n_chunks(L);
    if (tid < V5_CH) bias_s[tid] = dbias[min(eb + tid, E - 1)];
    float A2[S], h[S];
#pragma unroll
    for (int s = 0; s < S; s++) { A2[s] = -expf(A_log[ec * N + g * S + s]) * SCAN_LOG2E; h[s] = 0.0f; }
    float Dv = D[ec];

    Packed128<T> pu[ACT_PER_THR], pd[ACT_PER_THR], pz[ACT_PER_THR], pbc[BC_PER_THR];
    auto prefetch = [&](int t0) {
#pragma unroll
        for (int k = 0; k < ACT_PER_THR; k++) {
            int i = tid + k * THREADS, r = i / ROWV, cv = i % ROWV, t = t0 + r;
            size_t off = ((size_t)b * L + (t < L ? t : 0)) * E;
            pu[k] = load_row_pack<T, VEC_OK>(u + off, eb + cv * VEC, E, t < L);
            pd[k] = load_row_pack<T, VEC_OK>(delta + off, eb + cv * VEC, E, t < L);
            pz[k] = load_row_pack<T, VEC_OK>(z + off, eb + cv * VEC, E, t < L);
        }
#pragma unroll
        for (int k = 0; k < BC_PER_THR; k++) {
            int j = tid + k * THREADS;
            if (j < 2 * BC_VECS) {
                int i = j % BC_VECS, r = i / (N / VEC), nv = i % (N / VEC), t = t0 + r;
                const T* src = j < BC_VECS ? Bm : Cm;
                if (t < L) pbc[k] = load128cs(src + ((size_t)b * L + t) * N + nv * VEC);
                else
#pragma unroll
                    for (int q = 0; q < VEC; q++) pbc[k].v[q] = from_f32<T>(0.0f);
            }
        }
    };
    auto stage = [&](int t0) {
#pragma unroll
        for (int k = 0; k < ACT_PER_THR; k++) {
            int i = tid + k * THREADS, r = i / ROWV, cv = i % ROWV, t = t0 + r;
#pragma unroll
            for (int j = 0; j < VEC; j += 4) {
                float4 uf, zf;
                float* uv = &uf.x; float* zv = &zf.x;
                float dtv[4];
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    int c = cv * VEC + j + q;
                    uv[q] = pu[k].f(j + q);
                    zv[q] = pz[k].f(j + q);
                    float x = pd[k].f(j + q) + bias_s[c];
                    float sp = FAST_SP ? scan_softplus_fast(x) : softplus_f(x);
                    dtv[q] = (t < L && eb + c < E) ? sp : 0.0f;
                }
                int c0 = cv * VEC + j;
                *reinterpret_cast<float4*>(&u_s[r][c0]) = uf;
                *reinterpret_cast<float4*>(&z_s[r][c0]) = zf;
                *reinterpret_cast<float4*>(&dd_s[r][c0]) = make_float4(dtv[0], dtv[0] * uv[0], dtv[1], dtv[1] * uv[1]);
                *reinterpret_cast<float4*>(&dd_s[r][c0 + 2]) = make_float4(dtv[2], dtv[2] * uv[2], dtv[3], dtv[3] * uv[3]);
            }
        }
#pragma unroll
        for (int k = 0; k < BC_PER_THR; k++) {
            int j = tid + k * THREADS;
            if (j < 2 * BC_VECS) {
                int i = j % BC_VECS, r = i / (N / VEC), nv = i % (N / VEC);
                float* dst = j < BC_VECS ? &B_s[r][nv * VEC] : &C_s[r][nv * VEC];
#pragma unroll
                for (int q = 0; q < VEC; q++) dst[q] = pbc[k].f(q);
            }
        }
    };

    __syncthreads();  // bias_s
    prefetch(0);
    stage(0);
    __syncthreads();
    for (int t0 = 0; t0 < L; t0 += V5_TT) {
        bool more = t0 + V5_TT < L;
        if (more) prefetch(t0 + V5_TT);
        if (t0 % SCAN_CHUNK == 0 && ch_ok) {
            float* hp = hs + (((size_t)b * nc + t0 / SCAN_CHUNK) * E + e) * N + g * S;
#pragma unroll
            for (int s = 0; s < S; s += 4)
                *reinterpret_cast<float4*>(hp + s) = make_float4(h[s], h[s + 1], h[s + 2], h[s + 3]);
        }
#pragma unroll 2
        for (int q = 0; q < V5_TT / TPC; q++) {
            float yq[TPC];
#pragma unroll
            for (int j = 0; j < TPC; j++) {
                int r = q * TPC + j;
                float2 d = dd_s[r][cl];
                float y = 0.0f;
#pragma unroll
                for (int s = 0; s < S; s += 4) {
                    float4 bv = *reinterpret_cast<const float4*>(&B_s[r][g * S + s]);
                    float4 cv = *reinterpret_cast<const float4*>(&C_s[r][g * S + s]);
                    h[s + 0] = scan_ex2(d.x * A2[s + 0]) * h[s + 0] + d.y * bv.x;
                    h[s + 1] = scan_ex2(d.x * A2[s + 1]) * h[s + 1] + d.y * bv.y;
                    h[s + 2] = scan_ex2(d.x * A2[s + 2]) * h[s + 2] + d.y * bv.z;
                    h[s + 3] = scan_ex2(d.x * A2[s + 3]) * h[s + 3] + d.y * bv.w;
                    y += cv.x * h[s + 0] + cv.y * h[s + 1] + cv.z * h[s + 2] + cv.w * h[s + 3];
                }
                yq[j] = y;
            }
            // reduce-scatter over the TPC threads of the channel: thread g ends with step q*TPC + g
            if (TPC >= 4) reduce_scatter_level<(TPC >= 4 ? TPC / 2 : 1), (TPC >= 4 ? TPC / 2 : 1)>(yq, lane);
            if (TPC >= 2) reduce_scatter_level<1, 1>(yq, lane);
            int r = q * TPC + g;
            o_s[r][cl] = (yq[0] + Dv * u_s[r][cl]) * scan_silu_fast(z_s[r][cl]);
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < ACT_PER_THR; k++) {
            int i = tid + k * THREADS, r = i / ROWV, cv = i % ROWV, t = t0 + r, ee = eb + cv * VEC;
            if (t < L) {
                Packed128<T> p;
#pragma unroll
                for (int q = 0; q < VEC; q++) p.set(q, o_s[r][cv * VEC + q]);
                T* dst = out + ((size_t)b * L + t) * E;
                if (VEC_OK) {
                    if (ee < E) store128cs(dst + ee, p);
                } else {
#pragma unroll
                    for (int q = 0; q < VEC; q++)
                        if (ee + q < E) dst[ee + q] = p.v[q];
                }
            }
        }
        if (more) stage(t0 + V5_TT);
        __syncthreads();
    }
}

template <typename T, int N, int TPC>
static void scan_fwd_v5(T* out, float* hs, const T* u, const T* delta, const float* A_log, const T* Bm,
                        const T* Cm, const float* D, const T* z, const float* dbias, int B, int L, int E) {
    dim3 grid(ceil_div(E, V5_CH), B);
    if (E % Packed128<T>::size == 0)
        scan_fwd_v5_kernel<T, N, true, TPC, true><<<grid, V5_CH * TPC>>>(out, hs, u, delta, A_log, Bm, Cm, D, z, dbias, B, L, E);
    else
        scan_fwd_v5_kernel<T, N, false, TPC, true><<<grid, V5_CH * TPC>>>(out, hs, u, delta, A_log, Bm, Cm, D, z, dbias, B, L, E);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// version 7: v5 (TPC = 4) with the global loads moved off the registers and two tiles ahead.
// v5 measured ~2x its prediction and bf16 no faster than fp32: the kernel is latency-bound at the
// tile edges, and its prefetch distance is one 32-step tile (~1.7 us of SM compute, about one
// loaded-HBM latency). Here tile t+2 is copied with 16-byte cp.async (zero-filled past L / E) into
// a 2-slot raw smem ring while tile t computes; the staging pass reads the raw tile from smem
// (same conversion/softplus code as v5). No prefetch registers are live during the scan (v5 holds
// 4 (bf16) / 8 (fp32) 16-byte packs across it). Same barriers per tile as v5 (the wait for tile t+1
// sits before the existing post-scan barrier). Extra smem: 16 KB (bf16) / 32 KB (fp32) dynamic.
// Prediction: bf16 0.125-0.140 ms at L=1024 (from 0.153), fp32 ~0.130; L=4096 0.49-0.55 / ~0.50.
// If it does not move, the edge latency is not the load but the staging/reduction work itself.

// The cp.async helpers are common.h's (cp_async<16>, cp_async_commit / cp_async_wait<1>), which
// forward v7 became.

template <typename T, int N, bool VEC_OK, int TPC, bool FAST_SP>
__global__ void __launch_bounds__(V5_CH * TPC) scan_fwd_v7_kernel(T* out, float* hs, const T* u,
        const T* delta, const float* A_log, const T* Bm, const T* Cm, const float* D, const T* z,
        const float* dbias, int B, int L, int E) {
    constexpr int THREADS = V5_CH * TPC;
    constexpr int VEC = Packed128<T>::size;
    constexpr int S = N / TPC;                       // states per thread
    constexpr int CPW = 32 / TPC;                    // channels per warp
    constexpr int ROWV = V5_CH / VEC;
    constexpr int ACT_PER_THR = V5_TT * ROWV / THREADS;
    constexpr int BC_VECS = V5_TT * N / VEC;
    constexpr int BC_PER_THR = (2 * BC_VECS + THREADS - 1) / THREADS;
    static_assert(TPC == 2 || TPC == 4, "the y reduce-scatter below handles 2 or 4 threads per channel");
    static_assert(S % 4 == 0, "states per thread must be a multiple of 4 (float4 B/C loads)");
    static_assert(V5_TT % TPC == 0 && SCAN_CHUNK % V5_TT == 0, "tile shapes");
    static_assert(V5_TT * ROWV % THREADS == 0, "activation tile must split evenly");
    static_assert((N * sizeof(T)) % 16 == 0, "Bm/Cm rows must be whole 16-byte vectors");

    __shared__ __align__(16) float u_s[V5_TT][V5_CH + V5_OPAD];
    __shared__ __align__(16) float z_s[V5_TT][V5_CH + V5_OPAD];
    __shared__ __align__(16) float o_s[V5_TT][V5_CH + V5_OPAD];
    __shared__ __align__(16) float2 dd_s[V5_TT][V5_CH];
    __shared__ __align__(16) float B_s[V5_TT][N];
    __shared__ __align__(16) float C_s[V5_TT][N];
    __shared__ float bias_s[V5_CH];

    int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    int cl = warp * CPW + lane / TPC, g = lane % TPC;
    int b = blockIdx.y, eb = blockIdx.x * V5_CH, e = eb + cl;
    bool ch_ok = e < E;
    int ec = ch_ok ? e : E - 1;
    int nc = scan_n_chunks(L);
    if (tid < V5_CH) bias_s[tid] = dbias[min(eb + tid, E - 1)];
    float A2[S], h[S];
#pragma unroll
    for (int s = 0; s < S; s++) { A2[s] = -expf(A_log[ec * N + g * S + s]) * SCAN_LOG2E; h[s] = 0.0f; }
    float Dv = D[ec];

    Packed128<T> pu[ACT_PER_THR], pd[ACT_PER_THR], pz[ACT_PER_THR], pbc[BC_PER_THR];
    // raw ring: 2 slots of [u, delta, z: TT x CH][Bm, Cm: TT x N] in T; tile t0 uses slot (t0/TT) & 1
    extern __shared__ __align__(16) unsigned char v7_raw[];
    constexpr int SLOT = 3 * V5_TT * V5_CH + 2 * V5_TT * N;
    auto slot_of = [&](int t0) { return reinterpret_cast<T*>(v7_raw) + ((t0 / V5_TT) & 1) * SLOT; };
    auto issue = [&](int t0) {  // async copies of tile t0 (zero-filled past L / E); always commits
        T* raw = slot_of(t0);
        if (t0 < L) {
#pragma unroll
            for (int k = 0; k < ACT_PER_THR; k++) {
                int i = tid + k * THREADS, r = i / ROWV, cv = i % ROWV, t = t0 + r, e0 = eb + cv * VEC;
                bool valid = t < L;
                size_t off = ((size_t)b * L + (valid ? t : 0)) * E;
#pragma unroll
                for (int w = 0; w < 3; w++) {
                    const T* src = (w == 0 ? u : w == 1 ? delta : z) + off;
                    T* dst = raw + (w * V5_TT + r) * V5_CH + cv * VEC;
                    if (VEC_OK) {
                        cp_async<16>(dst, src + (e0 < E ? e0 : 0), valid && e0 < E);
                    } else {
#pragma unroll
                        for (int q = 0; q < VEC; q++) dst[q] = (valid && e0 + q < E) ? src[e0 + q] : from_f32<T>(0.0f);
                    }
                }
            }
#pragma unroll
            for (int k = 0; k < BC_PER_THR; k++) {
                int j = tid + k * THREADS;
                if (j < 2 * BC_VECS) {
                    int i = j % BC_VECS, r = i / (N / VEC), nv = i % (N / VEC), t = t0 + r;
                    const T* src = (j < BC_VECS ? Bm : Cm) + ((size_t)b * L + (t < L ? t : 0)) * N + nv * VEC;
                    cp_async<16>(raw + 3 * V5_TT * V5_CH + (j < BC_VECS ? 0 : V5_TT * N) + r * N + nv * VEC, src, t < L);
                }
            }
        }
        cp_async_commit();
    };
    auto stage = [&](int t0) {
        const T* raw = slot_of(t0);
#pragma unroll
        for (int k = 0; k < ACT_PER_THR; k++) {
            int i = tid + k * THREADS, r = i / ROWV, cv = i % ROWV;
            pu[k] = *reinterpret_cast<const Packed128<T>*>(raw + (0 * V5_TT + r) * V5_CH + cv * VEC);
            pd[k] = *reinterpret_cast<const Packed128<T>*>(raw + (1 * V5_TT + r) * V5_CH + cv * VEC);
            pz[k] = *reinterpret_cast<const Packed128<T>*>(raw + (2 * V5_TT + r) * V5_CH + cv * VEC);
        }
#pragma unroll
        for (int k = 0; k < BC_PER_THR; k++) {
            int j = tid + k * THREADS;
            if (j < 2 * BC_VECS) {
                int i = j % BC_VECS, r = i / (N / VEC), nv = i % (N / VEC);
                pbc[k] = *reinterpret_cast<const Packed128<T>*>(raw + 3 * V5_TT * V5_CH + (j < BC_VECS ? 0 : V5_TT * N) + r * N + nv * VEC);
            }
        }
#pragma unroll
        for (int k = 0; k < ACT_PER_THR; k++) {
            int i = tid + k * THREADS, r = i / ROWV, cv = i % ROWV, t = t0 + r;
#pragma unroll
            for (int j = 0; j < VEC; j += 4) {
                float4 uf, zf;
                float* uv = &uf.x; float* zv = &zf.x;
                float dtv[4];
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    int c = cv * VEC + j + q;
                    uv[q] = pu[k].f(j + q);
                    zv[q] = pz[k].f(j + q);
                    float x = pd[k].f(j + q) + bias_s[c];
                    float sp = FAST_SP ? scan_softplus_fast(x) : softplus_f(x);
                    dtv[q] = (t < L && eb + c < E) ? sp : 0.0f;
                }
                int c0 = cv * VEC + j;
                *reinterpret_cast<float4*>(&u_s[r][c0]) = uf;
                *reinterpret_cast<float4*>(&z_s[r][c0]) = zf;
                *reinterpret_cast<float4*>(&dd_s[r][c0]) = make_float4(dtv[0], dtv[0] * uv[0], dtv[1], dtv[1] * uv[1]);
                *reinterpret_cast<float4*>(&dd_s[r][c0 + 2]) = make_float4(dtv[2], dtv[2] * uv[2], dtv[3], dtv[3] * uv[3]);
            }
        }
#pragma unroll
        for (int k = 0; k < BC_PER_THR; k++) {
            int j = tid + k * THREADS;
            if (j < 2 * BC_VECS) {
                int i = j % BC_VECS, r = i / (N / VEC), nv = i % (N / VEC);
                float* dst = j < BC_VECS ? &B_s[r][nv * VEC] : &C_s[r][nv * VEC];
#pragma unroll
                for (int q = 0; q < VEC; q++) dst[q] = pbc[k].f(q);
            }
        }
    };

    __syncthreads();  // bias_s
    issue(0);
    issue(V5_TT);
    cp_async_wait<1>();  // tile 0 landed (tile 1 may be in flight)
    __syncthreads();
    stage(0);
    __syncthreads();
    for (int t0 = 0; t0 < L; t0 += V5_TT) {
        bool more = t0 + V5_TT < L;
        issue(t0 + 2 * V5_TT);  // into tile t0's slot, staged before the last barrier
        if (t0 % SCAN_CHUNK == 0 && ch_ok) {
            float* hp = hs + (((size_t)b * nc + t0 / SCAN_CHUNK) * E + e) * N + g * S;
#pragma unroll
            for (int s = 0; s < S; s += 4)
                *reinterpret_cast<float4*>(hp + s) = make_float4(h[s], h[s + 1], h[s + 2], h[s + 3]);
        }
#pragma unroll 2
        for (int q = 0; q < V5_TT / TPC; q++) {
            float yq[TPC];
#pragma unroll
            for (int j = 0; j < TPC; j++) {
                int r = q * TPC + j;
                float2 d = dd_s[r][cl];
                float y = 0.0f;
#pragma unroll
                for (int s = 0; s < S; s += 4) {
                    float4 bv = *reinterpret_cast<const float4*>(&B_s[r][g * S + s]);
                    float4 cv = *reinterpret_cast<const float4*>(&C_s[r][g * S + s]);
                    h[s + 0] = scan_ex2(d.x * A2[s + 0]) * h[s + 0] + d.y * bv.x;
                    h[s + 1] = scan_ex2(d.x * A2[s + 1]) * h[s + 1] + d.y * bv.y;
                    h[s + 2] = scan_ex2(d.x * A2[s + 2]) * h[s + 2] + d.y * bv.z;
                    h[s + 3] = scan_ex2(d.x * A2[s + 3]) * h[s + 3] + d.y * bv.w;
                    y += cv.x * h[s + 0] + cv.y * h[s + 1] + cv.z * h[s + 2] + cv.w * h[s + 3];
                }
                yq[j] = y;
            }
            // reduce-scatter over the TPC threads of the channel: thread g ends with step q*TPC + g
            if (TPC >= 4) reduce_scatter_level<(TPC >= 4 ? TPC / 2 : 1), (TPC >= 4 ? TPC / 2 : 1)>(yq, lane);
            if (TPC >= 2) reduce_scatter_level<1, 1>(yq, lane);
            int r = q * TPC + g;
            o_s[r][cl] = (yq[0] + Dv * u_s[r][cl]) * scan_silu_fast(z_s[r][cl]);
        }
        cp_async_wait<1>();  // this thread's copies of tile t0 + TT landed; the barrier publishes them
        __syncthreads();
#pragma unroll
        for (int k = 0; k < ACT_PER_THR; k++) {
            int i = tid + k * THREADS, r = i / ROWV, cv = i % ROWV, t = t0 + r, ee = eb + cv * VEC;
            if (t < L) {
                Packed128<T> p;
#pragma unroll
                for (int q = 0; q < VEC; q++) p.set(q, o_s[r][cv * VEC + q]);
                T* dst = out + ((size_t)b * L + t) * E;
                if (VEC_OK) {
                    if (ee < E) store128cs(dst + ee, p);
                } else {
#pragma unroll
                    for (int q = 0; q < VEC; q++)
                        if (ee + q < E) dst[ee + q] = p.v[q];
                }
            }
        }
        if (more) stage(t0 + V5_TT);
        __syncthreads();
    }
}

template <typename T, int N>
static void scan_fwd_v7(T* out, float* hs, const T* u, const T* delta, const float* A_log, const T* Bm,
                        const T* Cm, const float* D, const T* z, const float* dbias, int B, int L, int E) {
    const int smem = 2 * (3 * V5_TT * V5_CH + 2 * V5_TT * N) * (int)sizeof(T);
    static bool attr_set = false;
    if (!attr_set) {
        cudaCheck(cudaFuncSetAttribute(scan_fwd_v7_kernel<T, N, true, 4, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        cudaCheck(cudaFuncSetAttribute(scan_fwd_v7_kernel<T, N, false, 4, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        attr_set = true;
    }
    dim3 grid(ceil_div(E, V5_CH), B);
    if (E % Packed128<T>::size == 0)
        scan_fwd_v7_kernel<T, N, true, 4, true><<<grid, V5_CH * 4, smem>>>(out, hs, u, delta, A_log, Bm, Cm, D, z, dbias, B, L, E);
    else
        scan_fwd_v7_kernel<T, N, false, 4, true><<<grid, V5_CH * 4, smem>>>(out, hs, u, delta, A_log, Bm, Cm, D, z, dbias, B, L, E);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// version 8: v7 with 8 threads per channel (TPC = 8, S = 2 states per thread), 256-thread blocks.
// Why: Nsight Compute has v7 latency-bound: 2.9 blocks of 4 warps per SM (17.6% achieved
// occupancy), issue slots 50% busy, 5.35 cycles between a warp's instructions. At B*E fixed the
// warp count is B*E*TPC/32, so TPC = 8 doubles the warps in flight (~11.6 -> ~23 per SM) for the
// same grid (384 blocks of 32 channels), with half the serial work per warp per tile.
// Cost per state-step (v7 issues ~9.65 instructions per state-step by the ncu counts): shared loads
// 0.75 -> 1.0 (a (dt, dt*u) float2 + one {B, B, C, C} float4 per 2 states), y reduce-scatter 0.75 ->
// 1.75 (3 levels: 4+2+1 shuffles, 14 selects, 7 adds per 8 steps per thread), loop/index ~+0.2:
// ~11.1 instructions per state-step, i.e. ~75 us of pure issue at L=1024 (v7's issued count: 65 us);
// the special-function units need ~68 us (16 ex2 + ~4 MUFU for softplus/silu per (t, e)).
// Changes besides TPC, each needed by 256 threads / 2 states per thread:
//  - staging and out-store in units of 4 channels, one unit per thread per tile for both dtypes (the
//    bf16 tile has only 128 16-byte vectors per array, fewer than the threads); the 4 bf16 are read
//    as 8 bytes and widened with shifts; the quarter-warps' float4 stores into u_s / z_s are
//    contiguous (no bank conflicts in bf16 either); out is stored with 8-byte (bf16) / 16-byte
//    (fp32) streaming stores.
//  - Bm/Cm staged interleaved by state pair, {B[2k], B[2k+1], C[2k], C[2k+1]}: one LDS.128 per thread-step.
//  - row stride of u_s / z_s / o_s = 32 + CPW (36 for TPC 8): the epilogue of a warp touches rows
//    q*TPC + g (g < TPC) of CPW channels, and g*CPW + c (mod 32) are distinct banks (v7's stride 40
//    would be 2-way at TPC 8).
//  - the generic reduce-scatter (reduce_scatter_group<TPC>: levels TPC/2 .. 1); v5/v7's two-call
//    form would skip the level 2 at TPC 8.
//  - cp.async copy j lands at raw + j*VEC (a ring slot is the 5 row-major tiles back to back).
// Pipeline and barriers are v7's (tile t+2 in flight by cp.async while tile t computes; 2 barriers per
// 32-step tile).
// Blocks per SM (B=8, E=1536: 384 blocks, 3 per SM make one wave of 396 slots): shared memory per
// block = 25.6 KB static (u_s, z_s, o_s 3 x 4.5 KB, dd_s 8 KB, bc_s 4 KB, bias) + the ring 16 KB
// (bf16) / 32 KB (fp32), + 1 KB reserved: 42.6 / 58.6 KB -> 5 (bf16) / 3 (fp32) blocks in 228 KB.
// Registers: __launch_bounds__(256, 3) caps them at 80 (3 x 256 x 80 = 61,440 of 65,536) -> 3 blocks;
// at 88 only 2 would fit (2 waves). So 3 blocks = 24 warps per SM for both dtypes (v7: 12).
// ptxas (nvcc 13.0): 80 registers in all four instantiations (108-121 without the cap: it hoists
// loads for ILP), no spills on the vector paths; the fp32 scalar path (E % 4 != 0) spills 8 bytes.
// Prediction (written before any run): issue-bound at ~75 us if the 24 warps hide the latency; at
// the 65-80% issue utilization that 6 warps per scheduler should reach: bf16 ~0.105 ms (0.095-0.120)
// at L=1024, ~0.40 ms (0.37-0.46) at L=4096; fp32 ~0.107 (0.095-0.12) / ~0.41 (0.37-0.46): fp32
// needs ~1.9 TB/s at 0.107 ms, below the ~3.0 TB/s achievable. If it does not beat v7, the larger
// barrier groups (8 warps wait for the slowest) and the 3-level shuffle chain per 8 steps ate the
// occupancy gain; the next lever would then be splitting L (two segments per channel + carry fix-up).

#define V8_TPC 8
#ifndef V8_MINB
#define V8_MINB 3   // blocks per SM the register budget must allow (80 registers at 256 threads)
#endif

// reduce-scatter over the G lanes of an aligned lane group (G a power of two <= 32): v[0, G) per
// lane; afterwards v[0] of lane l holds the group's sum of the original v[l % G]
template <int G> __device__ __forceinline__ void reduce_scatter_group(float* v, int lane) {
    if constexpr (G >= 2) {
        reduce_scatter_level<G / 2, G / 2>(v, lane);
        reduce_scatter_group<G / 2>(v, lane);
    }
}

// 4 consecutive T from shared memory into floats (8-byte aligned for bf16, 16 for fp32)
__device__ __forceinline__ void scan_lds4(const float* p, float* v) {
    float4 x = *reinterpret_cast<const float4*>(p);
    v[0] = x.x; v[1] = x.y; v[2] = x.z; v[3] = x.w;
}
__device__ __forceinline__ void scan_lds4(const bf16* p, float* v) {
    uint2 x = *reinterpret_cast<const uint2*>(p);  // element 0 in the low half; bf16 -> fp32 is a shift
    v[0] = __uint_as_float(x.x << 16); v[1] = __uint_as_float(x.x & 0xffff0000u);
    v[2] = __uint_as_float(x.y << 16); v[3] = __uint_as_float(x.y & 0xffff0000u);
}
// 4 floats stored as 4 consecutive T with one streaming store (p 8-byte aligned for bf16, 16 for fp32)
__device__ __forceinline__ void scan_stg4cs(float* p, const float* v) {
    __stcs(reinterpret_cast<float4*>(p), make_float4(v[0], v[1], v[2], v[3]));
}
__device__ __forceinline__ void scan_stg4cs(bf16* p, const float* v) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(v[0], v[1]), hi = __floats2bfloat162_rn(v[2], v[3]);
    uint2 x;
    memcpy(&x.x, &lo, 4);
    memcpy(&x.y, &hi, 4);
    __stcs(reinterpret_cast<uint2*>(p), x);
}

template <typename T, int N, bool VEC_OK, int TPC>
__global__ void __launch_bounds__(V5_CH * TPC, V8_MINB) scan_fwd_v8_kernel(T* out, float* hs, const T* u,
        const T* delta, const float* A_log, const T* Bm, const T* Cm, const float* D, const T* z,
        const float* dbias, int B, int L, int E) {
    constexpr int THREADS = V5_CH * TPC;
    constexpr int VEC = Packed128<T>::size;          // elements per 16-byte copy
    constexpr int S = N / TPC;                       // states per thread
    constexpr int CPW = 32 / TPC;                    // channels per warp
    constexpr int RS = V5_CH + CPW;                  // row stride of u_s, z_s, o_s (see above)
    constexpr int ROWV = V5_CH / VEC;                // 16-byte copies per activation tile row
    constexpr int ACT_V = V5_TT * ROWV;              // copies per activation tile (u, delta or z)
    constexpr int BC_V = V5_TT * N / VEC;            // copies per Bm (or Cm) tile
    constexpr int NCOPY = 3 * ACT_V + 2 * BC_V;      // copies per ring slot
    constexpr int CP_PER_THR = (NCOPY + THREADS - 1) / THREADS;
    constexpr int ACT_U = V5_TT * V5_CH / 4;         // 4-channel units per activation tile
    constexpr int BC_U = V5_TT * N / 4;              // 4-state units per Bm (or Cm) tile
    constexpr int SLOT = 3 * V5_TT * V5_CH + 2 * V5_TT * N;  // T elements per ring slot
    static_assert(TPC == 2 || TPC == 4 || TPC == 8, "threads per channel: 2, 4 or 8 (an aligned lane group)");
    static_assert(N % TPC == 0 && S % 2 == 0, "states per thread must be even ({B, B, C, C} pair loads)");
    static_assert(V5_TT % TPC == 0 && SCAN_CHUNK % V5_TT == 0, "tile shapes");
    static_assert(V5_CH % 32 == 0, "the bank argument for RS needs V5_CH = 0 mod 32");
    static_assert(ACT_U % THREADS == 0 && (2 * BC_U) % THREADS == 0, "staging units must split evenly");
    static_assert(V5_CH % VEC == 0 && (N * sizeof(T)) % 16 == 0 && N % 4 == 0, "whole 16-byte copies, 4-state units");
    static_assert(RS % 4 == 0, "float4 rows");

    __shared__ __align__(16) float u_s[V5_TT][RS];
    __shared__ __align__(16) float z_s[V5_TT][RS];
    __shared__ __align__(16) float o_s[V5_TT][RS];
    __shared__ __align__(16) float2 dd_s[V5_TT][V5_CH];  // (dt, dt*u)
    __shared__ __align__(16) float bc_s[V5_TT][2 * N];   // state pair k at 4k: B[2k], B[2k+1], C[2k], C[2k+1]
    __shared__ float bias_s[V5_CH];
    // raw ring: 2 slots of [u, delta, z: TT x CH][Bm, Cm: TT x N] in T; tile t0 uses slot (t0/TT) & 1
    extern __shared__ __align__(16) unsigned char v8_raw[];

    int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    int cl = warp * CPW + lane / TPC, g = lane % TPC;    // channel in block, state group
    int b = blockIdx.y, eb = blockIdx.x * V5_CH, e = eb + cl;
    bool ch_ok = e < E;
    int ec = ch_ok ? e : E - 1;
    int nc = scan_n_chunks(L);
    if (tid < V5_CH) bias_s[tid] = dbias[min(eb + tid, E - 1)];
    float A2[S], h[S];
#pragma unroll
    for (int s = 0; s < S; s++) { A2[s] = -expf(A_log[ec * N + g * S + s]) * SCAN_LOG2E; h[s] = 0.0f; }
    float Dv = D[ec];

    auto slot_of = [&](int t0) { return reinterpret_cast<T*>(v8_raw) + ((t0 / V5_TT) & 1) * SLOT; };
    auto issue = [&](int t0) {  // async copies of tile t0 (zero-filled past L / E); always commits
        T* raw = slot_of(t0);
        if (t0 < L) {
#pragma unroll
            for (int k = 0; k < CP_PER_THR; k++) {
                int j = tid + k * THREADS;
                if (NCOPY % THREADS == 0 || j < NCOPY) {
                    T* dst = raw + j * VEC;
                    if (j < 3 * ACT_V) {
                        int w = j / ACT_V, i = j % ACT_V, r = i / ROWV, t = t0 + r, e0 = eb + (i % ROWV) * VEC;
                        bool valid = t < L;
                        const T* src = (w == 0 ? u : w == 1 ? delta : z) + ((size_t)b * L + (valid ? t : 0)) * E;
                        if (VEC_OK) {
                            cp_async<16>(dst, src + (e0 < E ? e0 : 0), valid && e0 < E);
                        } else {
#pragma unroll
                            for (int q = 0; q < VEC; q++) dst[q] = (valid && e0 + q < E) ? src[e0 + q] : from_f32<T>(0.0f);
                        }
                    } else {
                        int i = j - 3 * ACT_V, isC = i >= BC_V;
                        i -= isC * BC_V;
                        int r = i / (N / VEC), t = t0 + r;
                        const T* src = (isC ? Cm : Bm) + ((size_t)b * L + (t < L ? t : 0)) * N + (i % (N / VEC)) * VEC;
                        cp_async<16>(dst, src, t < L);
                    }
                }
            }
        }
        cp_async_commit();
    };
    // raw tile t0 -> the fp32 tiles: dt = softplus once per (t, e) (0 past L / E: identity steps)
    auto stage = [&](int t0) {
        const T* raw = slot_of(t0);
#pragma unroll
        for (int k = 0; k < ACT_U / THREADS; k++) {
            int i = tid + k * THREADS, r = i / (V5_CH / 4), c0 = (i % (V5_CH / 4)) * 4, t = t0 + r;
            float uv[4], xv[4], zv[4], dt[4];
            scan_lds4(raw + (0 * V5_TT + r) * V5_CH + c0, uv);
            scan_lds4(raw + (1 * V5_TT + r) * V5_CH + c0, xv);
            scan_lds4(raw + (2 * V5_TT + r) * V5_CH + c0, zv);
#pragma unroll
            for (int q = 0; q < 4; q++)
                dt[q] = (t < L && eb + c0 + q < E) ? scan_softplus_fast(xv[q] + bias_s[c0 + q]) : 0.0f;
            *reinterpret_cast<float4*>(&u_s[r][c0]) = make_float4(uv[0], uv[1], uv[2], uv[3]);
            *reinterpret_cast<float4*>(&z_s[r][c0]) = make_float4(zv[0], zv[1], zv[2], zv[3]);
            *reinterpret_cast<float4*>(&dd_s[r][c0]) = make_float4(dt[0], dt[0] * uv[0], dt[1], dt[1] * uv[1]);
            *reinterpret_cast<float4*>(&dd_s[r][c0 + 2]) = make_float4(dt[2], dt[2] * uv[2], dt[3], dt[3] * uv[3]);
        }
#pragma unroll
        for (int k = 0; k < 2 * BC_U / THREADS; k++) {
            int i = tid + k * THREADS, isC = i >= BC_U, ii = i - isC * BC_U;
            int r = ii / (N / 4), n0 = (ii % (N / 4)) * 4;   // states n0..n0+3 = pairs n0/2, n0/2 + 1
            float v[4];
            scan_lds4(raw + 3 * V5_TT * V5_CH + isC * V5_TT * N + r * N + n0, v);
            *reinterpret_cast<float2*>(&bc_s[r][2 * n0 + 2 * isC]) = make_float2(v[0], v[1]);
            *reinterpret_cast<float2*>(&bc_s[r][2 * n0 + 4 + 2 * isC]) = make_float2(v[2], v[3]);
        }
    };

    __syncthreads();  // bias_s
    issue(0);
    issue(V5_TT);
    cp_async_wait<1>();  // tile 0 landed (tile 1 may be in flight)
    __syncthreads();
    stage(0);
    __syncthreads();
    for (int t0 = 0; t0 < L; t0 += V5_TT) {
        bool more = t0 + V5_TT < L;
        issue(t0 + 2 * V5_TT);  // into tile t0's slot, staged before the last barrier
        if (t0 % SCAN_CHUNK == 0 && ch_ok) {
            float* hp = hs + (((size_t)b * nc + t0 / SCAN_CHUNK) * E + e) * N + g * S;
#pragma unroll
            for (int s = 0; s < S; s += 2) *reinterpret_cast<float2*>(hp + s) = make_float2(h[s], h[s + 1]);
        }
#pragma unroll
        for (int q = 0; q < V5_TT / TPC; q++) {
            float yq[TPC];
#pragma unroll
            for (int j = 0; j < TPC; j++) {
                int r = q * TPC + j;
                float2 d = dd_s[r][cl];
                float y = 0.0f;
#pragma unroll
                for (int s = 0; s < S; s += 2) {
                    float4 bc = *reinterpret_cast<const float4*>(&bc_s[r][2 * (g * S + s)]);
                    h[s] = scan_ex2(d.x * A2[s]) * h[s] + d.y * bc.x;
                    h[s + 1] = scan_ex2(d.x * A2[s + 1]) * h[s + 1] + d.y * bc.y;
                    y += bc.z * h[s] + bc.w * h[s + 1];
                }
                yq[j] = y;
            }
            // thread g of the channel ends with the whole y of step q*TPC + g
            reduce_scatter_group<TPC>(yq, lane);
            int r = q * TPC + g;
            o_s[r][cl] = (yq[0] + Dv * u_s[r][cl]) * scan_silu_fast(z_s[r][cl]);
        }
        cp_async_wait<1>();  // this thread's copies of tile t0 + TT landed; the barrier publishes them
        __syncthreads();
#pragma unroll
        for (int k = 0; k < ACT_U / THREADS; k++) {
            int i = tid + k * THREADS, r = i / (V5_CH / 4), c0 = (i % (V5_CH / 4)) * 4, t = t0 + r, ee = eb + c0;
            if (t < L) {
                float4 o4 = *reinterpret_cast<const float4*>(&o_s[r][c0]);
                float ov[4] = {o4.x, o4.y, o4.z, o4.w};
                T* dst = out + ((size_t)b * L + t) * E;
                if (VEC_OK) {
                    if (ee < E) scan_stg4cs(dst + ee, ov);  // E % VEC == 0: all 4 are inside
                } else {
#pragma unroll
                    for (int q = 0; q < 4; q++)
                        if (ee + q < E) dst[ee + q] = from_f32<T>(ov[q]);
                }
            }
        }
        if (more) stage(t0 + V5_TT);
        __syncthreads();
    }
}

template <typename T, int N>
static void scan_fwd_v8(T* out, float* hs, const T* u, const T* delta, const float* A_log, const T* Bm,
                        const T* Cm, const float* D, const T* z, const float* dbias, int B, int L, int E) {
    const int smem = 2 * (3 * V5_TT * V5_CH + 2 * V5_TT * N) * (int)sizeof(T);
    static bool attr_set = false;
    if (!attr_set) {
        cudaCheck(cudaFuncSetAttribute(scan_fwd_v8_kernel<T, N, true, V8_TPC>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        cudaCheck(cudaFuncSetAttribute(scan_fwd_v8_kernel<T, N, false, V8_TPC>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        attr_set = true;
    }
    dim3 grid(ceil_div(E, V5_CH), B);
    if (E % Packed128<T>::size == 0)
        scan_fwd_v8_kernel<T, N, true, V8_TPC><<<grid, V5_CH * V8_TPC, smem>>>(out, hs, u, delta, A_log, Bm, Cm, D, z, dbias, B, L, E);
    else
        scan_fwd_v8_kernel<T, N, false, V8_TPC><<<grid, V5_CH * V8_TPC, smem>>>(out, hs, u, delta, A_log, Bm, Cm, D, z, dbias, B, L, E);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// dispatch

#define SCAN_FWD_VERSIONS 8
static const char* scan_fwd_version_name(int v) {
    switch (v) {
        case 1: return "v1 naive thread/(b,e)";
        case 2: return "v2 thread/(b,e,n) shfl";
        case 3: return "v3 chunked warp scan";
        case 4: return "v4 fused 4thr/ch prefetch";
        case 5: return "v5 v4 + fast softplus";
        case 6: return "v6 v5 with 2thr/ch x 8 st";
        case 7: return "v7 v5 + cp.async 2 tiles ahead";
        case 8: return "v8 v7 with 8thr/ch x 2 st";
    }
    return "?";
}

template <typename T>
static void scan_fwd_run(int v, T* out, float* hs, const T* u, const T* delta, const float* A_log,
                         const T* Bm, const T* Cm, const float* D, const T* z, const float* dbias,
                         int B, int L, int E, int N) {
    if (N != 16) FATAL("dev kernels are instantiated for N = 16 only (got %d)", N);
    switch (v) {
        case 1: scan_fwd_v1<T, 16>(out, hs, u, delta, A_log, Bm, Cm, D, z, dbias, B, L, E); break;
        case 2: scan_fwd_v2<T, 16>(out, hs, u, delta, A_log, Bm, Cm, D, z, dbias, B, L, E); break;
        case 3: scan_fwd_v3<T, 16>(out, hs, u, delta, A_log, Bm, Cm, D, z, dbias, B, L, E); break;
        case 4: scan_fwd_v4<T, 16>(out, hs, u, delta, A_log, Bm, Cm, D, z, dbias, B, L, E); break;
        case 5: scan_fwd_v5<T, 16, 4>(out, hs, u, delta, A_log, Bm, Cm, D, z, dbias, B, L, E); break;
        case 6: scan_fwd_v5<T, 16, 2>(out, hs, u, delta, A_log, Bm, Cm, D, z, dbias, B, L, E); break;
        case 7: scan_fwd_v7<T, 16>(out, hs, u, delta, A_log, Bm, Cm, D, z, dbias, B, L, E); break;
        case 8: scan_fwd_v8<T, 16>(out, hs, u, delta, A_log, Bm, Cm, D, z, dbias, B, L, E); break;
        default: FATAL("no forward version %d", v);
    }
}

// ---------------------------------------------------------------------------
// test data (host, fp32, already rounded to T's precision where it is an activation)

struct ScanData {
    int B, L, E, N;
    std::vector<float> u, delta, z, Bm, Cm, A_log, D, dbias;
};

template <typename T> static ScanData scan_make_data(int B, int L, int E, int N, uint64_t seed) {
    ScanData d{B, L, E, N};
    Rng r;
    rng_seed(&r, seed);
    size_t act = (size_t)B * L * E, bc = (size_t)B * L * N;
    d.u.resize(act); d.delta.resize(act); d.z.resize(act);
    d.Bm.resize(bc); d.Cm.resize(bc);
    d.A_log.resize((size_t)E * N); d.D.resize(E); d.dbias.resize(E);
    dev_fill_normal(d.u, 0.0f, 1.0f, &r);
    dev_fill_normal(d.delta, 0.0f, 0.5f, &r);
    dev_fill_normal(d.z, 0.0f, 1.0f, &r);
    dev_fill_normal(d.Bm, 0.0f, 1.0f, &r);
    dev_fill_normal(d.Cm, 0.0f, 1.0f, &r);
    dev_fill_uniform(d.D, 0.5f, 1.5f, &r);
    // dt in ~[0.02, 0.4] as after Mamba's init; channel 3 goes past the softplus threshold of 20
    dev_fill_uniform(d.dbias, -4.0f, -1.0f, &r);
    if (E > 3) d.dbias[3] = 25.0f;
    for (int e = 0; e < E; e++)
        for (int n = 0; n < N; n++) d.A_log[e * N + n] = logf((float)(n + 1)) + 0.2f * (rng_uniform(&r) - 0.5f);
    dev_round_to<T>(d.u); dev_round_to<T>(d.delta); dev_round_to<T>(d.z);
    dev_round_to<T>(d.Bm); dev_round_to<T>(d.Cm);
    return d;
}

// device copies of the inputs
template <typename T> struct ScanDev {
    T *u, *delta, *z, *Bm, *Cm;
    float *A_log, *D, *dbias;
    void upload(const ScanData& d) {
        u = dev_upload<T>(d.u); delta = dev_upload<T>(d.delta); z = dev_upload<T>(d.z);
        Bm = dev_upload<T>(d.Bm); Cm = dev_upload<T>(d.Cm);
        A_log = dev_upload<float>(d.A_log); D = dev_upload<float>(d.D); dbias = dev_upload<float>(d.dbias);
    }
    void free_all() {
        dev_free(u); dev_free(delta); dev_free(z); dev_free(Bm); dev_free(Cm);
        dev_free(A_log); dev_free(D); dev_free(dbias);
    }
};

// bytes that must move (read u, delta, z, Bm, Cm, write out) and exps (one per (b, t, e, n))
static double scan_fwd_bytes(int B, int L, int E, int N, size_t tsize) {
    return ((double)B * L * E * 4 + (double)B * L * N * 2) * tsize;
}
static double scan_fwd_sfu(int B, int L, int E, int N) { return (double)B * L * E * N; }

#ifndef SCAN_FWD_NO_MAIN
// validate version v at one shape; only the first `ref_batches` batch elements are compared
template <typename T>
static bool scan_fwd_validate(int v, const ScanData& d, const std::vector<float>& ref_out,
                              const std::vector<float>& ref_hs, int ref_batches, double* worst) {
    int B = d.B, L = d.L, E = d.E, N = d.N, nc = scan_n_chunks(L);
    ScanDev<T> g;
    g.upload(d);
    T* out = dev_alloc<T>((size_t)B * L * E);
    float* hs = dev_alloc<float>((size_t)B * nc * E * N);
    dev_poison(out, (size_t)B * L * E * sizeof(T));
    dev_poison(hs, (size_t)B * nc * E * N * sizeof(float));
    scan_fwd_run<T>(v, out, hs, g.u, g.delta, g.A_log, g.Bm, g.Cm, g.D, g.z, g.dbias, B, L, E, N);
    cudaCheck(cudaDeviceSynchronize());
    double tol_out = sizeof(T) == 4 ? 2e-4 : 1e-2, tol_hs = 2e-4;
    char what[160];
    snprintf(what, sizeof(what), "fwd %s %s B=%d L=%d E=%d out", scan_fwd_version_name(v), DType<T>::name(), B, L, E);
    bool ok = dev_check(what, out, ref_out, tol_out, worst);
    snprintf(what, sizeof(what), "fwd %s %s B=%d L=%d E=%d hs", scan_fwd_version_name(v), DType<T>::name(), B, L, E);
    ok = dev_check(what, hs, ref_hs, tol_hs, worst) && ok;
    (void)ref_batches;
    dev_free(out); dev_free(hs);
    g.free_all();
    return ok;
}

template <typename T> static void scan_fwd_all(int argc, char** argv) {
    const int N = 16;
    struct Shape { int B, L, E, ref_batches; };
    // small odd shapes, then the benchmark shapes (L=4096 checked on batch 0 only)
    std::vector<Shape> shapes = {{2, 1, 37, 2}, {2, 7, 37, 2}, {2, 130, 96, 2}, {2, 1000, 37, 2},
                                 {1, 65, 40, 1}, {8, 1024, 1536, 8}, {8, 4096, 1536, 1}};
    std::vector<double> worst(SCAN_FWD_VERSIONS + 1, 0.0);
    std::vector<bool> okv(SCAN_FWD_VERSIONS + 1, true);
    uint64_t seed = 1000;
    for (const Shape& s : shapes) {
        ScanData d = scan_make_data<T>(s.B, s.L, s.E, N, seed++);
        int rb = s.ref_batches, nc = scan_n_chunks(s.L);
        // the reference on the first rb batch elements: b is outermost in every layout
        std::vector<float> ref_out((size_t)rb * s.L * s.E), ref_hs((size_t)rb * nc * s.E * N);
        scan_fwd_cpu(ref_out.data(), ref_hs.data(), d.u.data(), d.delta.data(), d.A_log.data(), d.Bm.data(),
                     d.Cm.data(), d.D.data(), d.z.data(), d.dbias.data(), rb, s.L, s.E, N);
        for (int v = 1; v <= SCAN_FWD_VERSIONS; v++) {
            if (!dev_want_version(argc, argv, v)) continue;
            if (v <= 2 && s.L == 4096) continue;  // too slow to matter; validated at 1024
            if (!scan_fwd_validate<T>(v, d, ref_out, ref_hs, rb, &worst[v])) okv[v] = false;
        }
    }
    for (int L : {1024, 4096}) {
        int B = 8, E = 1536;
        ScanData d = scan_make_data<T>(B, L, E, N, 7);
        ScanDev<T> g;
        g.upload(d);
        int nc = scan_n_chunks(L);
        T* out = dev_alloc<T>((size_t)B * L * E);
        float* hs = dev_alloc<float>((size_t)B * nc * E * N);
        char shape[64];
        snprintf(shape, sizeof(shape), "B%d L%d E%d N%d", B, L, E, N);
        for (int v = 1; v <= SCAN_FWD_VERSIONS; v++) {
            if (!dev_want_version(argc, argv, v)) continue;
            int reps = (v <= 2) ? 5 : 20;
            float ms = dev_bench_ms([&](int) {
                scan_fwd_run<T>(v, out, hs, g.u, g.delta, g.A_log, g.Bm, g.Cm, g.D, g.z, g.dbias, B, L, E, N);
            }, 2, reps);
            dev_print_row("selective_scan_fwd", scan_fwd_version_name(v), shape, DType<T>::name(), ms,
                          scan_fwd_bytes(B, L, E, N, sizeof(T)), scan_fwd_sfu(B, L, E, N), okv[v], worst[v]);
        }
        dev_free(out); dev_free(hs);
        g.free_all();
    }
}

int main(int argc, char** argv) {
    dev_print_header();
    scan_fwd_all<float>(argc, argv);
    scan_fwd_all<bf16>(argc, argv);
    return dev_finish();
}
#endif
