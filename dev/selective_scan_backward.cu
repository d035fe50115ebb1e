// Mamba-1 selective scan (S6) backward: kernel workbench.
//
// Forward (see selective_scan_forward.cu): dt = softplus(delta + bias), dA = exp(dt*A),
// h_t = dA h_{t-1} + dt B_t u_t, y_t = sum_n C_t h_t + D u_t, out = y silu(z).
// Backward, with g_t[n] = dL/dh_t[n] (total, through later steps):
//   dz = dout * y * silu'(z),  dy = dout * silu(z)
//   g_t = dy_t C_t + dA_{t+1} g_{t+1}                      (reverse recurrence)
//   dC_t[n] += dy_t h_t[n]          dB_t[n] += g_t dt u_t        (both summed over e)
//   du_t = dy_t D + sum_n g_t dt B_t          dD += dy_t u_t
//   ddt_t = sum_n g_t (h_{t-1} dA_t A + B_t u_t)
//   ddelta = ddt * softplus'(delta + bias) (= 1 above 20),  ddelta_bias += ddelta
//   dA[n] = sum_t g_t h_{t-1} dA_t dt_t,  dA_log = dA * A
// Every gradient is ACCUMULATED (+=). Activation grads in T, parameter grads fp32.
// hs (B, n_chunks, E, N): the state entering each SCAN_CHUNK-step chunk, written by the forward.
//
// Build: nvcc -O3 -std=c++17 -arch=sm_90 dev/selective_scan_backward.cu -o dev_selective_scan_backward -lcublas
// Run:   ./dev_selective_scan_backward [version]
#define SCAN_FWD_NO_MAIN
#include "selective_scan_forward.cu"
#include <type_traits>

// ---------------------------------------------------------------------------
// CPU reference (double). Parallel over b; per-b partial sums of the parameter grads.

static void scan_bwd_cpu(float* du, float* ddelta, float* dA_log, float* dBm, float* dCm, float* dD,
                         float* dz, float* ddbias, const float* dout, const float* u, const float* delta,
                         const float* A_log, const float* Bm, const float* Cm, const float* D,
                         const float* z, const float* dbias, int B, int L, int E, int N) {
    std::vector<double> pA((size_t)B * E * N, 0.0), pD((size_t)B * E, 0.0), pbias((size_t)B * E, 0.0);
#pragma omp parallel for schedule(dynamic)
    for (int b = 0; b < B; b++) {
        std::vector<double> hall((size_t)(L + 1) * N), A(N), g(N), dBacc((size_t)L * N, 0.0),
            dCacc((size_t)L * N, 0.0);
        for (int e = 0; e < E; e++) {
            for (int n = 0; n < N; n++) { A[n] = -std::exp((double)A_log[e * N + n]); hall[n] = 0.0; }
            // forward: hall[(t+1)*N + n] = h_t
            for (int t = 0; t < L; t++) {
                size_t row = (size_t)b * L + t;
                double x = (double)delta[row * E + e] + dbias[e];
                double dt = x > 20.0 ? x : std::log1p(std::exp(x));
                for (int n = 0; n < N; n++)
                    hall[(size_t)(t + 1) * N + n] = std::exp(dt * A[n]) * hall[(size_t)t * N + n] +
                                                    dt * Bm[row * N + n] * u[row * E + e];
            }
            for (int n = 0; n < N; n++) g[n] = 0.0;
            for (int t = L - 1; t >= 0; t--) {
                size_t row = (size_t)b * L + t, k = row * E + e;
                double x = (double)delta[k] + dbias[e];
                double dt = x > 20.0 ? x : std::log1p(std::exp(x));
                double sp = x > 20.0 ? 1.0 : 1.0 / (1.0 + std::exp(-x));
                double uu = u[k], zz = z[k], go = dout[k];
                double y = (double)D[e] * uu;
                for (int n = 0; n < N; n++) y += Cm[row * N + n] * hall[(size_t)(t + 1) * N + n];
                double s = 1.0 / (1.0 + std::exp(-zz));
                dz[k] += (float)(go * y * s * (1.0 + zz * (1.0 - s)));
                double dy = go * zz * s;
                pD[(size_t)b * E + e] += dy * uu;
                double dui = dy * D[e], ddt = 0.0;
                for (int n = 0; n < N; n++) {
                    double ht = hall[(size_t)(t + 1) * N + n], hp = hall[(size_t)t * N + n];
                    double dA = std::exp(dt * A[n]);
                    g[n] += dy * Cm[row * N + n];
                    dCacc[(size_t)t * N + n] += dy * ht;
                    dBacc[(size_t)t * N + n] += g[n] * dt * uu;
                    dui += g[n] * dt * Bm[row * N + n];
                    ddt += g[n] * (hp * dA * A[n] + Bm[row * N + n] * uu);
                    pA[((size_t)b * E + e) * N + n] += g[n] * hp * dA * dt;
                    g[n] *= dA;
                }
                du[k] += (float)dui;
                ddelta[k] += (float)(ddt * sp);
                pbias[(size_t)b * E + e] += ddt * sp;
            }
        }
        for (size_t i = 0; i < (size_t)L * N; i++) {
            dBm[(size_t)b * L * N + i] += (float)dBacc[i];
            dCm[(size_t)b * L * N + i] += (float)dCacc[i];
        }
    }
    for (int e = 0; e < E; e++) {
        double sD = 0.0, sb = 0.0;
        for (int b = 0; b < B; b++) { sD += pD[(size_t)b * E + e]; sb += pbias[(size_t)b * E + e]; }
        dD[e] += (float)sD;
        ddbias[e] += (float)sb;
        for (int n = 0; n < N; n++) {
            double s = 0.0;
            for (int b = 0; b < B; b++) s += pA[((size_t)b * E + e) * N + n];
            dA_log[e * N + n] += (float)(s * -std::exp((double)A_log[e * N + n]));  // dA * A
        }
    }
}

// ---------------------------------------------------------------------------
// shared pieces

// fp32 accumulators for dBm and dCm (B, L, N) each, summed over e with atomics, then added into the
// T outputs by scan_bwd_finalize. Grown on demand, kept for the process.
static float* bc_scratch(size_t n) {
    static float* p = nullptr;
    static size_t cap = 0;
    if (n > cap) {
        if (p) cudaCheck(cudaFree(p));
        cudaCheck(cudaMalloc(&p, n * sizeof(float)));
        cap = n;
    }
    return p;
}

// dBm += acc[0, n), dCm += acc[n, 2n)
template <typename T>
__global__ void scan_bwd_finalize_kernel(T* dBm, T* dCm, const float* acc, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        dBm[i] = from_f32<T>(to_f32(dBm[i]) + acc[i]);
        dCm[i] = from_f32<T>(to_f32(dCm[i]) + acc[n + i]);
    }
}
template <typename T> static void scan_bwd_finalize(T* dBm, T* dCm, const float* acc, size_t n) {
    scan_bwd_finalize_kernel<T><<<(unsigned)((n + 255) / 256), 256>>>(dBm, dCm, acc, n);
    cudaCheckLaunch();
}

__device__ __forceinline__ void add_to(float* p, float v) { *p += v; }
template <typename T> __device__ __forceinline__ void acc_store(T* p, float v) { *p = from_f32<T>(to_f32(*p) + v); }

// ---------------------------------------------------------------------------
// version 1: reference-style, all states stored. A forward kernel (one thread per (b, e), N states
// in registers) writes every h_t to hall (B, L, E, N) fp32 (805 MB at L=1024); the backward kernel
// (one thread per (b, e)) runs t backwards reading h_t and h_{t-1}. dBm/dCm: the warp's 32 channels
// are reduced with a 32-value reduce-scatter (31 shuffles: lane l ends with dB[l] / dC[l-16]) and
// one atomic per lane. Memory-bound on hall (read 2x, written 1x): slow by design.

template <typename T, int N>
__global__ void scan_bwd_v1_store_kernel(float* hall, const T* u, const T* delta, const float* A_log,
                                         const T* Bm, const float* dbias, int B, int L, int E) {
    int e = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (e >= E) return;
    float A2[N], h[N];
#pragma unroll
    for (int n = 0; n < N; n++) { A2[n] = -expf(A_log[e * N + n]) * SCAN_LOG2E; h[n] = 0.0f; }
    for (int t = 0; t < L; t++) {
        size_t row = (size_t)b * L + t;
        float dt = softplus_f(to_f32(delta[row * E + e]) + dbias[e]);
        float dtu = dt * to_f32(u[row * E + e]);
        float4* hp = reinterpret_cast<float4*>(hall + (row * E + e) * N);
#pragma unroll
        for (int n = 0; n < N; n++) h[n] = scan_ex2(dt * A2[n]) * h[n] + dtu * to_f32(Bm[row * N + n]);
#pragma unroll
        for (int n = 0; n < N; n += 4) hp[n / 4] = make_float4(h[n], h[n + 1], h[n + 2], h[n + 3]);
    }
}

template <typename T, int N>
__global__ void scan_bwd_v1_kernel(T* du, T* ddelta, float* dA_log, float* dBC, float* dD, T* dz,
                                   float* ddbias, const T* dout, const T* u, const T* delta,
                                   const float* A_log, const T* Bm, const T* Cm, const float* D,
                                   const T* z, const float* dbias, const float* hall, int B, int L, int E) {
    static_assert(2 * N == 32, "the dB/dC reduce-scatter maps 2N values onto 32 lanes");
    int e = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y, lane = threadIdx.x % 32;
    bool ok = e < E;  // no early exit: the whole warp takes part in the shuffles
    int ec = ok ? e : E - 1;
    float A[N], A2[N], g[N], dAacc[N];
#pragma unroll
    for (int n = 0; n < N; n++) {
        A[n] = -expf(A_log[ec * N + n]); A2[n] = A[n] * SCAN_LOG2E; g[n] = 0.0f; dAacc[n] = 0.0f;
    }
    float Dv = D[ec], bias = dbias[ec], dDacc = 0.0f, dbacc = 0.0f;
    size_t nBC = (size_t)B * L * N;
    for (int t = L - 1; t >= 0; t--) {
        size_t row = (size_t)b * L + t, k = row * E + ec;
        float x = to_f32(delta[k]) + bias;
        float dt = softplus_f(x), sp = softplus_grad_f(x);
        float uu = to_f32(u[k]), zz = to_f32(z[k]), go = ok ? to_f32(dout[k]) : 0.0f;
        const float* ht = hall + k * N;
        const float* hp = t > 0 ? ht - (size_t)E * N : ht;  // h_{t-1} (zero state at t = 0)
        float hcur[N], hprev[N], v[2 * N];
#pragma unroll
        for (int n = 0; n < N; n++) { hcur[n] = ht[n]; hprev[n] = t > 0 ? hp[n] : 0.0f; }
        float y = Dv * uu;
#pragma unroll
        for (int n = 0; n < N; n++) y += to_f32(Cm[row * N + n]) * hcur[n];
        float s = 1.0f / (1.0f + __expf(-zz));
        float dy = go * zz * s;
        float dzv = go * y * s * (1.0f + zz * (1.0f - s));
        dDacc += dy * uu;
        float dui = dy * Dv, ddt = 0.0f;
#pragma unroll
        for (int n = 0; n < N; n++) {
            float bn = to_f32(Bm[row * N + n]), cn = to_f32(Cm[row * N + n]);
            float dA = scan_ex2(dt * A2[n]);
            g[n] += dy * cn;
            v[N + n] = dy * hcur[n];   // dC contribution
            v[n] = g[n] * dt * uu;     // dB contribution
            dui += g[n] * dt * bn;
            ddt += g[n] * (hprev[n] * dA * A[n] + bn * uu);
            dAacc[n] += g[n] * hprev[n] * dA * dt;
            g[n] *= dA;
        }
        // reduce-scatter the 32 values over the 32 lanes: lane l ends with the warp sum of v[l]
        reduce_scatter_level<16, 16>(v, lane);
        reduce_scatter_level<8, 8>(v, lane);
        reduce_scatter_level<4, 4>(v, lane);
        reduce_scatter_level<2, 2>(v, lane);
        reduce_scatter_level<1, 1>(v, lane);
        // the warp is one batch element (blockDim is a multiple of 32 and b = blockIdx.y)
        atomicAdd(dBC + (lane < N ? row * N + lane : nBC + row * N + lane - N), v[0]);
        if (ok) {
            acc_store(du + k, dui);
            acc_store(ddelta + k, ddt * sp);
            acc_store(dz + k, dzv);
            dbacc += ddt * sp;
        }
    }
    if (ok) {
#pragma unroll
        for (int n = 0; n < N; n++) atomicAdd(dA_log + e * N + n, dAacc[n] * A[n]);
        atomicAdd(dD + e, dDacc);
        atomicAdd(ddbias + e, dbacc);
    }
}

template <typename T, int N>
static void scan_bwd_v1(T* du, T* ddelta, float* dA_log, T* dBm, T* dCm, float* dD, T* dz, float* ddbias,
                        const T* dout, const T* u, const T* delta, const float* A_log, const T* Bm,
                        const T* Cm, const float* D, const T* z, const float* dbias, const float* hs,
                        int B, int L, int E) {
    (void)hs;
    static float* hall = nullptr;  // the big buffer of every state
    static size_t cap = 0;
    size_t need = (size_t)B * L * E * N;
    if (need > cap) {
        if (hall) cudaCheck(cudaFree(hall));
        cudaCheck(cudaMalloc(&hall, need * sizeof(float)));
        cap = need;
    }
    size_t nBC = (size_t)B * L * N;
    float* acc = bc_scratch(2 * nBC);
    cudaCheck(cudaMemsetAsync(acc, 0, 2 * nBC * sizeof(float)));
    dim3 grid(ceil_div(E, 128), B);
    scan_bwd_v1_store_kernel<T, N><<<grid, 128>>>(hall, u, delta, A_log, Bm, dbias, B, L, E);
    cudaCheckLaunch();
    scan_bwd_v1_kernel<T, N><<<grid, 128>>>(du, ddelta, dA_log, acc, dD, dz, ddbias, dout, u, delta, A_log,
                                            Bm, Cm, D, z, dbias, hall, B, L, E);
    cudaCheckLaunch();
    scan_bwd_finalize<T>(dBm, dCm, acc, nBC);
}

// ---------------------------------------------------------------------------
// version 2: recompute from hs (the framework's interface). One thread per (b, e, n); a block = 16
// channels x 16 states of one batch element. Chunks are walked last to first; per chunk:
//  a. stage the chunk's u, dt, z, dout (64 x 16 channels) and Bm, Cm (64 x N) in shared memory
//  b. recompute forward from hs[b, c]: the 64 states h_t of the thread stay in REGISTERS (the loops
//     are fully unrolled), y_t = sum_n C h (+ D u) is reduced over the 16 lanes with shuffles
//  c. per (t, e), one thread each: dz, dy, dD, the D part of du
//  d. reverse over the chunk carrying g: dB/dC summed over the warp's 2 channels (1 shuffle) then
//     over the block's 8 warps with shared-memory atomics; du/ddt summed over n with shuffles
//  e. per (t, e): write du, ddelta; flush the chunk's dB/dC (64 x N) with float4 global atomics into
//     fp32 accumulators (one per block per element: 1/16 of v1's... and 1/96 of the naive count).
// Two ex2 per (t, e, n) (recompute + reverse); ~12 shuffles per step per thread.

#define V2B_CH 16
#define V2B_THREADS (V2B_CH * 16)

// version 3 = the same kernel with RS = true: the per-step reductions over the 16 states (y in the
// recompute, du and ddt in the reverse pass: 12 shuffles per step in v2) are batched over 16 steps
// and done as 16-lane reduce-scatters (15 shuffles per 16 steps per quantity; lane n ends with step
// r0 + n, which it writes to shared memory). ~5 shuffles per step instead of ~14; 32 more registers.
template <typename T, int N, bool RS>
__global__ void __launch_bounds__(V2B_THREADS, RS ? 1 : 2) scan_bwd_v2_kernel(T* du, T* ddelta, float* dA_log,
        float* dBC, float* dD, T* dz, float* ddbias, const T* dout, const T* u, const T* delta,
        const float* A_log, const T* Bm, const T* Cm, const float* D, const T* z, const float* dbias,
        const float* hs, int B, int L, int E) {
    static_assert(N == 16, "one warp = 2 channels x 16 states");
    constexpr int CK = SCAN_CHUNK;
    __shared__ __align__(16) float dt_s[CK][V2B_CH];
    __shared__ __align__(16) float u_s[CK][V2B_CH];
    __shared__ __align__(16) float dy_s[CK][V2B_CH];   // z, then dy
    __shared__ __align__(16) float go_s[CK][V2B_CH];   // dout
    __shared__ __align__(16) float y_s[CK][V2B_CH];    // sum_n C h, then du (the scan part)
    __shared__ __align__(16) float dt2_s[CK][V2B_CH];  // ddt (the scan part)
    __shared__ __align__(16) float B_s[CK][N];
    __shared__ __align__(16) float C_s[CK][N];
    __shared__ __align__(16) float dB_s[CK][N];
    __shared__ __align__(16) float dC_s[CK][N];
    __shared__ float dD_s[V2B_CH], dbias_s[V2B_CH];

    int tid = threadIdx.x, lane = tid % 32, n = tid % N, cl = tid / N;
    int b = blockIdx.y, eb = blockIdx.x * V2B_CH, e = eb + cl;
    bool ok = e < E;
    int ec = ok ? e : E - 1;
    int nc = scan_n_chunks(L);
    size_t nBC = (size_t)B * L * N;
    float A = -expf(A_log[ec * N + n]), A2 = A * SCAN_LOG2E;
    float g = 0.0f, dAacc = 0.0f;
    if (tid < V2B_CH) { dD_s[tid] = 0.0f; dbias_s[tid] = 0.0f; }
    for (int i = tid; i < CK * N; i += V2B_THREADS) { (&dB_s[0][0])[i] = 0.0f; (&dC_s[0][0])[i] = 0.0f; }

    for (int c = nc - 1; c >= 0; c--) {
        int t0 = c * CK, len = min(CK, L - t0);
        __syncthreads();  // previous chunk's phase e is done with the shared tiles
        // a. stage (element i -> r = i / CH, cc = i % CH: consecutive threads, consecutive e)
        for (int i = tid; i < CK * V2B_CH; i += V2B_THREADS) {
            int r = i / V2B_CH, cc = i % V2B_CH, ee = eb + cc;
            float uu = 0.0f, dt = 0.0f, zz = 0.0f, go = 0.0f;
            if (r < len && ee < E) {
                size_t k = ((size_t)b * L + t0 + r) * E + ee;
                uu = to_f32(u[k]); zz = to_f32(z[k]); go = to_f32(dout[k]);
                dt = softplus_f(to_f32(delta[k]) + dbias[ee]);
            }
            u_s[r][cc] = uu; dt_s[r][cc] = dt; dy_s[r][cc] = zz; go_s[r][cc] = go;
        }
        for (int i = tid; i < CK * N; i += V2B_THREADS) {
            int r = i / N, nn = i % N;
            float bv = 0.0f, cv = 0.0f;
            if (r < len) {
                size_t k = ((size_t)b * L + t0 + r) * N + nn;
                bv = to_f32(Bm[k]); cv = to_f32(Cm[k]);
            }
            B_s[r][nn] = bv; C_s[r][nn] = cv;
        }
        __syncthreads();
        // b. recompute the chunk's states (registers) and y
        float h0 = hs[(((size_t)b * nc + c) * E + ec) * N + n];
        float hreg[CK];
        float h = h0;
        float ybuf[16];
#pragma unroll
        for (int r = 0; r < CK; r++) {
            float dt = dt_s[r][cl];  // dt = 0, B = 0 past L: h unchanged
            h = scan_ex2(dt * A2) * h + dt * u_s[r][cl] * B_s[r][n];
            hreg[r] = h;
            float yp = C_s[r][n] * h;
            if (RS) {
                ybuf[r % 16] = yp;
                if (r % 16 == 15) {  // lane n gets the sum over the 16 states of step r - 15 + n
                    reduce_scatter_level<8, 8>(ybuf, lane);
                    reduce_scatter_level<4, 4>(ybuf, lane);
                    reduce_scatter_level<2, 2>(ybuf, lane);
                    reduce_scatter_level<1, 1>(ybuf, lane);
                    y_s[r - 15 + n][cl] = ybuf[0];
                }
            } else {
                yp += __shfl_xor_sync(0xffffffffu, yp, 8);
                yp += __shfl_xor_sync(0xffffffffu, yp, 4);
                yp += __shfl_xor_sync(0xffffffffu, yp, 2);
                yp += __shfl_xor_sync(0xffffffffu, yp, 1);
                if (n == 0) y_s[r][cl] = yp;
            }
        }
        __syncthreads();
        // c. elementwise: dz, dy (replaces z in dy_s), dD
        for (int i = tid; i < CK * V2B_CH; i += V2B_THREADS) {
            int r = i / V2B_CH, cc = i % V2B_CH, ee = eb + cc;
            if (r < len && ee < E) {
                size_t k = ((size_t)b * L + t0 + r) * E + ee;
                float zz = dy_s[r][cc], go = go_s[r][cc], uu = u_s[r][cc];
                float y = y_s[r][cc] + D[ee] * uu;
                float s = 1.0f / (1.0f + __expf(-zz));
                acc_store(dz + k, go * y * s * (1.0f + zz * (1.0f - s)));
                float dy = go * zz * s;
                dy_s[r][cc] = dy;
                atomicAdd(&dD_s[cc], dy * uu);
            } else {
                dy_s[r][cc] = 0.0f;
            }
        }
        __syncthreads();
        // d. reverse over the chunk
        float dubuf[16], dtbuf[16];
#pragma unroll
        for (int r = CK - 1; r >= 0; r--) {
            if (RS) { dubuf[r % 16] = 0.0f; dtbuf[r % 16] = 0.0f; }  // steps past L stay 0
            if (r < len) {
                float dt = dt_s[r][cl], uu = u_s[r][cl], dy = dy_s[r][cl];
                float bn = B_s[r][n], cn = C_s[r][n];
                float hp = r > 0 ? hreg[r - 1] : h0;
                float dA = scan_ex2(dt * A2);
                g += dy * cn;
                float dBv = g * dt * uu, dCv = dy * hreg[r];
                float dui = g * dt * bn;
                float ddt = g * (hp * dA * A + bn * uu);
                dAacc += g * hp * dA * dt;
                g *= dA;
                // over the warp's 2 channels (lanes n and n + 16)
                dBv += __shfl_xor_sync(0xffffffffu, dBv, 16);
                dCv += __shfl_xor_sync(0xffffffffu, dCv, 16);
                if (lane < 16) {  // channels past E staged zeros: they add 0
                    atomicAdd(&dB_s[r][n], dBv);
                    atomicAdd(&dC_s[r][n], dCv);
                }
                if (RS) {
                    dubuf[r % 16] = dui;
                    dtbuf[r % 16] = ddt;
                } else {  // over the 16 states
#pragma unroll
                    for (int off = 8; off > 0; off >>= 1) {
                        dui += __shfl_xor_sync(0xffffffffu, dui, off);
                        ddt += __shfl_xor_sync(0xffffffffu, ddt, off);
                    }
                    if (n == 0) { y_s[r][cl] = dui; dt2_s[r][cl] = ddt; }
                }
            }
            if (RS && r % 16 == 0) {  // steps r .. r+15 complete: lane n gets step r + n
                reduce_scatter_level<8, 8>(dubuf, lane); reduce_scatter_level<8, 8>(dtbuf, lane);
                reduce_scatter_level<4, 4>(dubuf, lane); reduce_scatter_level<4, 4>(dtbuf, lane);
                reduce_scatter_level<2, 2>(dubuf, lane); reduce_scatter_level<2, 2>(dtbuf, lane);
                reduce_scatter_level<1, 1>(dubuf, lane); reduce_scatter_level<1, 1>(dtbuf, lane);
                y_s[r + n][cl] = dubuf[0];
                dt2_s[r + n][cl] = dtbuf[0];
            }
        }
        __syncthreads();
        // e. elementwise du, ddelta; flush dB/dC of the chunk
        for (int i = tid; i < CK * V2B_CH; i += V2B_THREADS) {
            int r = i / V2B_CH, cc = i % V2B_CH, ee = eb + cc;
            if (r < len && ee < E) {
                size_t k = ((size_t)b * L + t0 + r) * E + ee;
                float x = to_f32(delta[k]) + dbias[ee];
                float sp = softplus_grad_f(x);
                float dd = dt2_s[r][cc] * sp;
                acc_store(du + k, y_s[r][cc] + dy_s[r][cc] * D[ee]);
                acc_store(ddelta + k, dd);
                atomicAdd(&dbias_s[cc], dd);
            }
        }
        for (int i = tid; i < len * N / 4; i += V2B_THREADS) {  // float4 atomics (sm_90)
            int r = (i * 4) / N, nn = (i * 4) % N;
            size_t k = ((size_t)b * L + t0 + r) * N + nn;
            float4* dBv = reinterpret_cast<float4*>(&dB_s[r][nn]);
            float4* dCv = reinterpret_cast<float4*>(&dC_s[r][nn]);
            atomic_add_float4(dBC + k, *dBv);
            atomic_add_float4(dBC + nBC + k, *dCv);
            *dBv = make_float4(0.f, 0.f, 0.f, 0.f);
            *dCv = make_float4(0.f, 0.f, 0.f, 0.f);
        }
    }
    if (ok) atomicAdd(dA_log + e * N + n, dAacc * A);
    __syncthreads();
    if (tid < V2B_CH && eb + tid < E) {
        atomicAdd(dD + eb + tid, dD_s[tid]);
        atomicAdd(ddbias + eb + tid, dbias_s[tid]);
    }
}

template <typename T, int N, bool RS>
static void scan_bwd_v2(T* du, T* ddelta, float* dA_log, T* dBm, T* dCm, float* dD, T* dz, float* ddbias,
                        const T* dout, const T* u, const T* delta, const float* A_log, const T* Bm,
                        const T* Cm, const float* D, const T* z, const float* dbias, const float* hs,
                        int B, int L, int E) {
    size_t nBC = (size_t)B * L * N;
    float* acc = bc_scratch(2 * nBC);
    cudaCheck(cudaMemsetAsync(acc, 0, 2 * nBC * sizeof(float)));
    dim3 grid(ceil_div(E, V2B_CH), B);
    scan_bwd_v2_kernel<T, N, RS><<<grid, V2B_THREADS>>>(du, ddelta, dA_log, acc, dD, dz, ddbias, dout, u, delta,
                                                    A_log, Bm, Cm, D, z, dbias, hs, B, L, E);
    cudaCheckLaunch();
    scan_bwd_finalize<T>(dBm, dCm, acc, nBC);
}

// ---------------------------------------------------------------------------
// version 4: the forward-v4 layout for the backward. 4 threads per channel x 4 states each, a block =
// 32 channels (128 threads) of one batch element, chunks walked last to first. Per chunk:
//  a. stage u, dt, z, dout (64 x 32 channels) and Bm, Cm (64 x N) in shared memory (dynamic, 68 KB)
//  b. checkpoint pass: recompute the chunk forward from hs, keeping only the state entering each
//     8-step sub-chunk (8 x 4 registers); y via the 4-lane reduce-scatter of forward v4
//  c. per (t, e): dz, dy, dD (each thread always owns the same channel here: register sums)
//  d. sub-chunks last to first: recompute 8 steps keeping h and dA (2 x 32 registers), then the
//     reverse steps read dA from registers (so 2 ex2 per state-step in total, like v2/v3).
//     dB/dC: a reduce-scatter of the 8 values (4 dB + 4 dC) over the warp's 8 channels (7 shuffles
//     per step, lane ends with one (t, n) value) then one shared atomic per lane; du/ddt: 4-lane
//     reduce-scatter per 4 steps (like the forward's y)
//  e. per (t, e): du, ddelta (softplus' = 1 - exp(-dt), series for small dt), flush dB/dC with float4
//     global atomics.
// ~2 shuffles per state-step (v3: ~5), loads amortized over 4 states.

// reduce_scatter_level<H, OFF> (src/common.h): the lane bit (OFF) may differ from the value half size (H)

#define V4B_CH 32
#define V4B_THREADS 128
#define V4B_W 40   // row stride of the [t][channel] tiles: (t = quad*4 + g, c) hits distinct banks
#define V4B_SC 8   // sub-chunk length

// softplus'(x) = sigmoid(x) = 1 - exp(-softplus(x)), from dt without re-reading delta:
// scan_dsoftplus_from_dt (src/selective_scan_fast.h)

template <typename T, int N>
__global__ void __launch_bounds__(V4B_THREADS) scan_bwd_v4_kernel(T* du, T* ddelta, float* dA_log,
        float* dBC, float* dD, T* dz, float* ddbias, const T* dout, const T* u, const T* delta,
        const float* A_log, const T* Bm, const T* Cm, const float* D, const T* z, const float* dbias,
        const float* hs, int B, int L, int E) {
    static_assert(N == 16, "4 threads x 4 states per channel");
    constexpr int CK = SCAN_CHUNK, S = 4, NSC = CK / V4B_SC;
    static_assert(CK % V4B_SC == 0 && V4B_SC % 4 == 0, "sub-chunks of whole quads");
    extern __shared__ __align__(16) float smem[];
    float(*u_s)[V4B_W] = reinterpret_cast<float(*)[V4B_W]>(smem);
    float(*dt_s)[V4B_W] = u_s + CK;
    float(*dy_s)[V4B_W] = dt_s + CK;   // z, then dy
    float(*du_s)[V4B_W] = dy_s + CK;   // dout, then the scan part of du
    float(*y_s)[V4B_W] = du_s + CK;    // y (without D u), then the scan part of ddt
    float(*B_s)[N] = reinterpret_cast<float(*)[N]>(y_s + CK);
    float(*C_s)[N] = B_s + CK;
    float(*dB_s)[N] = C_s + CK;
    float(*dC_s)[N] = dB_s + CK;

    int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    int cl = warp * 8 + lane / 4, g = lane % 4;
    int b = blockIdx.y, eb = blockIdx.x * V4B_CH, e = eb + cl;
    bool ok = e < E;
    int ec = ok ? e : E - 1;
    int nc = scan_n_chunks(L);
    size_t nBC = (size_t)B * L * N;
    // elementwise phases: thread tid always handles channel column tid % 32
    int my_c = tid % V4B_CH, my_e = eb + my_c;
    float my_D = D[min(my_e, E - 1)], my_bias = dbias[min(my_e, E - 1)];
    float dD_acc = 0.0f, dbias_acc = 0.0f;

    float A[S], A2[S], gr[S], dAacc[S];
#pragma unroll
    for (int s = 0; s < S; s++) {
        A[s] = -expf(A_log[ec * N + g * S + s]); A2[s] = A[s] * SCAN_LOG2E; gr[s] = 0.0f; dAacc[s] = 0.0f;
    }
    for (int i = tid; i < CK * N; i += V4B_THREADS) { (&dB_s[0][0])[i] = 0.0f; (&dC_s[0][0])[i] = 0.0f; }

    for (int c = nc - 1; c >= 0; c--) {
        int t0 = c * CK, len = min(CK, L - t0);
        __syncthreads();  // the previous chunk is done with every tile
        // a. stage
        for (int i = tid; i < CK * V4B_CH; i += V4B_THREADS) {
            int r = i / V4B_CH, cc = i % V4B_CH;  // cc == my_c
            float uu = 0.0f, dt = 0.0f, zz = 0.0f, go = 0.0f;
            if (r < len && my_e < E) {
                size_t k = ((size_t)b * L + t0 + r) * E + my_e;
                uu = to_f32(u[k]); zz = to_f32(z[k]); go = to_f32(dout[k]);
                dt = scan_softplus_fast(to_f32(delta[k]) + my_bias);
            }
            u_s[r][cc] = uu; dt_s[r][cc] = dt; dy_s[r][cc] = zz; du_s[r][cc] = go;
        }
        for (int i = tid; i < CK * N; i += V4B_THREADS) {
            int r = i / N, nn = i % N;
            float bv = 0.0f, cv = 0.0f;
            if (r < len) {
                size_t k = ((size_t)b * L + t0 + r) * N + nn;
                bv = to_f32(Bm[k]); cv = to_f32(Cm[k]);
            }
            B_s[r][nn] = bv; C_s[r][nn] = cv;
        }
        __syncthreads();
        // b. checkpoint pass (dt = 0, B = 0 past L: identity steps)
        float hc[NSC][S];
        {
            float4 h4 = *reinterpret_cast<const float4*>(hs + (((size_t)b * nc + c) * E + ec) * N + g * S);
            float h[S] = {h4.x, h4.y, h4.z, h4.w};
#pragma unroll
            for (int k = 0; k < NSC; k++) {
#pragma unroll
                for (int s = 0; s < S; s++) hc[k][s] = h[s];
#pragma unroll
                for (int q = 0; q < V4B_SC / 4; q++) {
                    float yq[4];
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        int r = k * V4B_SC + q * 4 + j;
                        float dt = dt_s[r][cl], dtu = dt * u_s[r][cl];
                        float4 bv = *reinterpret_cast<const float4*>(&B_s[r][g * S]);
                        float4 cv = *reinterpret_cast<const float4*>(&C_s[r][g * S]);
                        h[0] = scan_ex2(dt * A2[0]) * h[0] + dtu * bv.x;
                        h[1] = scan_ex2(dt * A2[1]) * h[1] + dtu * bv.y;
                        h[2] = scan_ex2(dt * A2[2]) * h[2] + dtu * bv.z;
                        h[3] = scan_ex2(dt * A2[3]) * h[3] + dtu * bv.w;
                        yq[j] = cv.x * h[0] + cv.y * h[1] + cv.z * h[2] + cv.w * h[3];
                    }
                    reduce_scatter_level<2, 2>(yq, lane);
                    reduce_scatter_level<1, 1>(yq, lane);
                    y_s[k * V4B_SC + q * 4 + g][cl] = yq[0];
                }
            }
        }
        __syncthreads();
        // c. elementwise: dz, dy, dD
        for (int i = tid; i < CK * V4B_CH; i += V4B_THREADS) {
            int r = i / V4B_CH, cc = i % V4B_CH;
            float dy = 0.0f;
            if (r < len && my_e < E) {
                size_t k = ((size_t)b * L + t0 + r) * E + my_e;
                float zz = dy_s[r][cc], go = du_s[r][cc], uu = u_s[r][cc];
                float y = y_s[r][cc] + my_D * uu;
                float s = 1.0f / (1.0f + __expf(-zz));
                acc_store(dz + k, go * y * s * (1.0f + zz * (1.0f - s)));
                dy = go * zz * s;
                dD_acc += dy * uu;
            }
            dy_s[r][cc] = dy;
        }
        __syncthreads();
        // d. reverse, one 8-step sub-chunk at a time
#pragma unroll
        for (int k = NSC - 1; k >= 0; k--) {
            float hsub[V4B_SC][S], dAs[V4B_SC][S];
#pragma unroll
            for (int j = 0; j < V4B_SC; j++) {
                int r = k * V4B_SC + j;
                float dt = dt_s[r][cl], dtu = dt * u_s[r][cl];
                float4 bv = *reinterpret_cast<const float4*>(&B_s[r][g * S]);
                float bb[S] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
                for (int s = 0; s < S; s++) {
                    dAs[j][s] = scan_ex2(dt * A2[s]);
                    hsub[j][s] = dAs[j][s] * (j > 0 ? hsub[j - 1][s] : hc[k][s]) + dtu * bb[s];
                }
            }
            float dub[4], dtb[4];
#pragma unroll
            for (int j = V4B_SC - 1; j >= 0; j--) {
                int r = k * V4B_SC + j;
                float dt = dt_s[r][cl], uu = u_s[r][cl], dy = dy_s[r][cl];
                float4 bv = *reinterpret_cast<const float4*>(&B_s[r][g * S]);
                float4 cv = *reinterpret_cast<const float4*>(&C_s[r][g * S]);
                float bb[S] = {bv.x, bv.y, bv.z, bv.w}, cc4[S] = {cv.x, cv.y, cv.z, cv.w};
                float v[8], dsum = 0.0f, tsum = 0.0f, dtu = dt * uu;
#pragma unroll
                for (int s = 0; s < S; s++) {
                    float hp = j > 0 ? hsub[j - 1][s] : hc[k][s];
                    gr[s] += dy * cc4[s];
                    v[s] = gr[s] * dtu;              // dB
                    v[S + s] = dy * hsub[j][s];      // dC
                    dsum += gr[s] * bb[s];
                    float ghdA = gr[s] * hp * dAs[j][s];
                    tsum += ghdA * A[s];
                    dAacc[s] += ghdA * dt;
                    gr[s] *= dAs[j][s];
                }
                dub[j % 4] = dsum * dt;
                dtb[j % 4] = tsum + dsum * uu;  // sum_s g (hp dA A + B u)
                // dB/dC over the warp's 8 channels (lane bits 4, 3, 2): lane ends with value lane >> 2
                reduce_scatter_level<4, 16>(v, lane);
                reduce_scatter_level<2, 8>(v, lane);
                reduce_scatter_level<1, 4>(v, lane);
                {
                    int jv = lane >> 2, n = g * S + (jv & 3);
                    atomicAdd(jv < 4 ? &dB_s[r][n] : &dC_s[r][n], v[0]);
                }
                if (j % 4 == 0) {  // steps r .. r+3 complete: thread g gets step r + g
                    reduce_scatter_level<2, 2>(dub, lane); reduce_scatter_level<2, 2>(dtb, lane);
                    reduce_scatter_level<1, 1>(dub, lane); reduce_scatter_level<1, 1>(dtb, lane);
                    du_s[r + g][cl] = dub[0];
                    y_s[r + g][cl] = dtb[0];
                }
            }
        }
        __syncthreads();
        // e. elementwise du, ddelta; flush the chunk's dB/dC
        for (int i = tid; i < CK * V4B_CH; i += V4B_THREADS) {
            int r = i / V4B_CH, cc = i % V4B_CH;
            if (r < len && my_e < E) {
                size_t k = ((size_t)b * L + t0 + r) * E + my_e;
                float dd = y_s[r][cc] * scan_dsoftplus_from_dt(dt_s[r][cc]);
                acc_store(du + k, du_s[r][cc] + dy_s[r][cc] * my_D);
                acc_store(ddelta + k, dd);
                dbias_acc += dd;
            }
        }
        for (int i = tid; i < len * N / 4; i += V4B_THREADS) {
            int r = (i * 4) / N, nn = (i * 4) % N;
            size_t k = ((size_t)b * L + t0 + r) * N + nn;
            float4* pB = reinterpret_cast<float4*>(&dB_s[r][nn]);
            float4* pC = reinterpret_cast<float4*>(&dC_s[r][nn]);
            atomic_add_float4(dBC + k, *pB);
            atomic_add_float4(dBC + nBC + k, *pC);
            *pB = make_float4(0.f, 0.f, 0.f, 0.f);
            *pC = make_float4(0.f, 0.f, 0.f, 0.f);
        }
    }
    if (ok) {
#pragma unroll
        for (int s = 0; s < S; s++) atomicAdd(dA_log + e * N + g * S + s, dAacc[s] * A[s]);
    }
    if (my_e < E) {
        atomicAdd(dD + my_e, dD_acc);
        atomicAdd(ddbias + my_e, dbias_acc);
    }
}

template <typename T, int N>
static void scan_bwd_v4(T* du, T* ddelta, float* dA_log, T* dBm, T* dCm, float* dD, T* dz, float* ddbias,
                        const T* dout, const T* u, const T* delta, const float* A_log, const T* Bm,
                        const T* Cm, const float* D, const T* z, const float* dbias, const float* hs,
                        int B, int L, int E) {
    const size_t smem = (size_t)SCAN_CHUNK * (5 * V4B_W + 4 * N) * sizeof(float);
    static bool attr_set = false;
    if (!attr_set) {
        cudaCheck(cudaFuncSetAttribute(scan_bwd_v4_kernel<T, N>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        attr_set = true;
    }
    size_t nBC = (size_t)B * L * N;
    float* acc = bc_scratch(2 * nBC);
    cudaCheck(cudaMemsetAsync(acc, 0, 2 * nBC * sizeof(float)));
    dim3 grid(ceil_div(E, V4B_CH), B);
    scan_bwd_v4_kernel<T, N><<<grid, V4B_THREADS, smem>>>(du, ddelta, dA_log, acc, dD, dz, ddbias, dout, u,
                                                         delta, A_log, Bm, Cm, D, z, dbias, hs, B, L, E);
    cudaCheckLaunch();
    scan_bwd_finalize<T>(dBm, dCm, acc, nBC);
}

// ---------------------------------------------------------------------------
// version 5: v4's thread layout (4 threads/channel x 4 states, 32-channel blocks) with the stalls
// removed. v4 measured 1.07 ms (bf16, L=1024) where its instruction count alone predicts ~0.27 ms:
// with one wave of 3 blocks/SM every block walks its 16 chunks serially, so the per-chunk latency
// chains add up: (1) staging and the dz / du / ddelta read-modify-writes use scalar 2-4 byte
// loads in loops (16 iterations, ~1 global latency each, little in flight); (2) dB/dC go through
// float shared atomicAdd, which (as far as I know; no disassembler here) SASS lowers to a CAS
// loop, with the 4 warps of a block
// hitting the same 32 addresses every step; (3) 5 barriers per chunk, two of them around an
// elementwise phase (dz) that only exists because y was computed in the checkpoint pass.
// Changes:
//  a. u, delta, z, dout, Bm, Cm of chunk c-1 are copied with 16-byte cp.async (no registers,
//     zero-filled past L / E) into a raw smem buffer while chunk c computes; the chunk's hs is
//     prefetched into registers one chunk ahead too.
//  b. one conversion pass per chunk: dt (softplus), u, dy = dout silu(z), q = dout silu'(z) into
//     fp32 tiles (XOR-swizzled by row so the quad writes (t = r+g, c) are conflict-free), dD.
//  c. checkpoint pass only advances h (no y); y = sum C h is summed in the reverse step (it holds
//     h and C anyway) and reduced over the quad with du / ddt, and dz = (y + D u) q is finished at
//     the reverse's quad output points, in place in the tiles (du -> u tile, ddelta -> dt tile,
//     dz -> q tile: the owner thread is the only one still touching those cells). No dz phase.
//  d. dB/dC: v4's 8-channel reduce-scatter, then each lane STORES its value into a per-warp slab
//     (no atomics); per 8-step sub-chunk one barrier, 64 threads add the 4 warps' float4s and issue
//     one float4 global atomic each (double-buffered slab: one barrier per sub-chunk).
//  e. du, ddelta, dz += tiles with 16-byte loads (all issued before any is used) and stores.
// Still 2 ex2 per state-step (checkpoint pass + sub-chunk recompute). smem 68 KB (bf16, 3 blocks
// of 128/SM: one wave for 384 blocks) / 88 KB (fp32, 2 blocks/SM).
// Prediction (bf16, L=1024): 0.40-0.60 ms (MUFU floor 2 x 54 us; issue ~0.27 ms at ~40 instructions
// per state-step; the rest latency at 3 warps per sub-partition), fwd v5 + bwd v5 0.55-0.75 ms;
// L=4096 bwd 1.6-2.4 ms, fwd+bwd 2.2-3.0 ms. fp32 (88 KB smem: 2 blocks/SM) 0.5-0.7 ms.

// cp.async: cp_async<16>, cp_async_commit / cp_async_wait<0> (src/common.h)

// 4 consecutive T from shared memory as floats (8-byte aligned for bf16, 16 for fp32)
__device__ __forceinline__ float4 lds4f(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 lds4f(const bf16* p) {
    uint2 w = *reinterpret_cast<const uint2*>(p);  // bf16 -> fp32 is a 16-bit shift
    return make_float4(__uint_as_float(w.x << 16), __uint_as_float(w.x & 0xffff0000u),
                       __uint_as_float(w.y << 16), __uint_as_float(w.y & 0xffff0000u));
}

#define V5B_CH 32
#define V5B_THREADS 128
#ifndef V5B_SC
#define V5B_SC 8
#endif
#define V5B_WARPS (V5B_THREADS / 32)
#ifndef V5B_MINB
#define V5B_MINB 3  // blocks per SM the registers must allow (168 regs)
#endif
// versions 6, 7, 8: template variants of the v5 kernel (same math, same validation path).
// Why: bwd v5 bf16 is one wave whose length is one block's serial 16-chunk walk, so it can only get
// faster with fewer instructions per step, less exposed latency per step, or more resident warps.
// Resident warps: at 168 registers the register file allows 12 warps/SM (65536 / (168 * 32)) for
// ANY block size, and the grid has 1536 warps at B=8, E=1536 (4 threads/channel) whatever the block
// size (1584 slots on 132 SMs). So fewer channels per block cannot add resident warps for bf16 (the
// brief's "2x blocks resident" assumed smem was the cap; for bf16 it is registers). For fp32 smem IS
// the cap (v5 88 KB -> 2 blocks = 8 warps/SM, 384 blocks on 264 slots = 2 waves: the measured 2.06x
// of bf16), and that is what v7 fixes.
//
// v6 = v5 with CH = 16 channels per block (64 threads, launch bounds 64 x 6 = same 168 regs) and
//      Bm/Cm loaded per chunk into registers (L2 hits: every block of batch element b reads the same
//      rows), issued before the chunk-top wait/barrier, instead of v5's cp.async raw buffer (with
//      the raw buffer bf16 would be 40 KB -> 5 blocks = 10 warps/SM, 768 blocks on 660 slots = 2
//      waves: ~2x slower). smem: bf16 36 KB -> 6 blocks = 12 warps/SM, 768 on 792 slots, 1 wave;
//      fp32 44 KB -> 5 blocks = 10 warps/SM, 768 on 660 slots, still 2 waves. Changes vs v5: the 10
//      barriers per chunk wait on 2 warps instead of 4; 6 blocks per SM interleave their chunk edges
//      more finely; Bm/Cm latency at the chunk top is covered by the other blocks.
//      Prediction L=1024: bf16 0.57-0.66 ms (v5 0.631), fp32 1.15-1.35 (v5 1.30); L=4096 bf16 2.2-2.6.
// v7 = v6 with only u and delta staged by cp.async one chunk ahead; z and dout are loaded straight
//      from global into registers (8-byte bf16 / 16-byte fp32 loads of each thread's conversion
//      cells) at the chunk top, with Bm/Cm. smem: bf16 32 KB, fp32 36 KB -> 6 blocks = 12 warps/SM
//      for BOTH dtypes: the fp32 grid becomes one wave. Cost: the z/dout latency at each chunk top
//      (~1-2 us per chunk per block, overlapped by the other 5 blocks on the SM).
//      Prediction L=1024: bf16 0.58-0.68 ms (about v6), fp32 0.65-0.80 ms (v5 1.30: about -45%);
//      L=4096 fp32 2.6-3.2 ms (v5 5.06).
// v8 = v7 with the sub-chunk loops rolled (#pragma unroll 1 over the 8 sub-chunks of the checkpoint
//      pass and of the reverse; 8 steps inside stay unrolled). v5's chunk body is fully unrolled:
//      ~11,200 SASS instructions = 179 KB of code (bf16; readelf on the cubin), larger than the SM's
//      instruction cache (~128 KB L1.5 on Volta-class SMs; not documented for H100), executed once
//      per chunk by 12 warps at 3-6 different places. If instruction fetch is part of the exposed
//      latency, rolling fixes it: v8 is 50-63 KB (hot sub-chunk body ~20 KB). The checkpoints hc
//      (8 x 4 floats) move to local memory (128-byte stack frame: 8 STL.128 + 8 LDL.128 per chunk,
//      L1/L2 hits; the next sub-chunk's checkpoint is loaded one sub-chunk ahead), spills drop to
//      0-44 B. Prediction L=1024: bf16 0.45-0.62 ms (0.45 if fetch
//      stalls are a third of v7's time, v7 +-5% if not), fp32 0.6-0.8 ms.
// v9 = v5 (32 channels, everything staged by cp.async, 68 / 88 KB) with v8's rolled sub-chunk loops:
//      isolates the instruction-fetch effect against v5 itself (bf16 3 blocks/SM, fp32 2 waves as v5).
//      Prediction L=1024: bf16 0.45-0.64 ms, fp32 1.0-1.35.
// Spill note (all versions): the chunk body is the only non-unrolled loop in v5-v7, so the reported
// spill bytes are also the spill instructions executed per chunk per thread (~30-50 LDL/STL among
// ~11,000 instructions): negligible unless they sit on a latency-critical chain.
#ifndef V6B_CH
#define V6B_CH 16
#endif

// [t][c] fp32 tiles, CH wide, 16-byte groups XOR-swizzled by row: the reverse's quad outputs
// (t = r + g with r % 4 == 0, c in an aligned 8-channel block) land in 4 different bank groups.
// CH = 32: one row per 32 banks, flip by (t & 3) << 3; CH = 16: two rows per 32 banks, rows t and
// t + 2 collide, flip by ((t >> 1) & 1) << 3 (XOR by multiples of 8 keeps 4-aligned groups whole).
template <int CH> __device__ __forceinline__ int v5b_sw(int r, int c) {
    constexpr int RP = CH >= 32 ? 1 : 32 / CH, MASK = CH / 8 - 1;
    return r * CH + (c ^ (((r / RP) & MASK) << 3));
}

// CH channels per block (4 threads each); BC_ASYNC: Bm/Cm of the next chunk staged by cp.async into
// a raw buffer (v5); otherwise loaded into registers at the top of the chunk (v6, 4 KB less smem)
// NRAW: activation tensors staged by cp.async one chunk ahead (4: u, delta, z, dout; 2: u, delta,
// with z and dout loaded straight from global at the chunk top: v7, 8 KB (fp32) less smem)
template <typename T, int N, int CH = V5B_CH, bool BC_ASYNC = true, int NRAW = 4>
static size_t scan_bwd_v5_smem() {
    constexpr int WARPS = CH * 4 / 32;
    return (size_t)(NRAW * SCAN_CHUNK * CH + (BC_ASYNC ? 2 * SCAN_CHUNK * N : 0)) * sizeof(T) +
           (size_t)(4 * SCAN_CHUNK * CH + 2 * SCAN_CHUNK * N + 2 * WARPS * V5B_SC * 32) * sizeof(float);
}

// 4 consecutive T from global as floats, zeros where invalid (row past L) or past E. VEC_OK (E a
// multiple of the 16-byte vector): one 16-byte (fp32) / 8-byte (bf16) load, e0 % 4 == 0.
template <typename T, bool VEC_OK>
__device__ __forceinline__ float4 ldg4f(const T* row, int e0, int E, bool valid) {
    float4 r = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (VEC_OK) {
        if (valid && e0 < E) {
            if constexpr (sizeof(T) == 4) {
                r = __ldg(reinterpret_cast<const float4*>(row + e0));
            } else {
                uint2 w = __ldg(reinterpret_cast<const uint2*>(row + e0));
                r = make_float4(__uint_as_float(w.x << 16), __uint_as_float(w.x & 0xffff0000u),
                                __uint_as_float(w.y << 16), __uint_as_float(w.y & 0xffff0000u));
            }
        }
    } else {
        float* rv = &r.x;
#pragma unroll
        for (int q = 0; q < 4; q++)
            if (valid && e0 + q < E) rv[q] = to_f32(row[e0 + q]);
    }
    return r;
}

template <typename T, int N, bool VEC_OK, int CH, bool BC_ASYNC, int NRAW, bool ROLL>
__global__ void __launch_bounds__(CH * 4, V5B_MINB * V5B_CH / CH) scan_bwd_v5_kernel(T* du, T* ddelta, float* dA_log,
        float* dBC, float* dD, T* dz, float* ddbias, const T* dout, const T* u, const T* delta,
        const float* A_log, const T* Bm, const T* Cm, const float* D, const T* z, const float* dbias,
        const float* hs, int B, int L, int E) {
    static_assert(N == 16, "4 threads x 4 states per channel");
    constexpr int CK = SCAN_CHUNK, S = 4, SC = V5B_SC, NSC = CK / SC, THREADS = CH * 4, WARPS = THREADS / 32;
    constexpr int CV = CH / 4;                          // float4 groups per tile row (conversion pass)
    constexpr int VEC = Packed128<T>::size;
    constexpr int ROWV = CH / VEC;                      // 16-byte vectors per activation row
    constexpr int BCV = N / VEC;                        // 16-byte vectors per Bm row
    constexpr int IN_PER_THR = NRAW * CK * ROWV / THREADS;
    constexpr int KC = CK * CH / 4 / THREADS;           // conversion rows per thread
    constexpr int KUNR = ROLL ? 1 : NSC;                // v8: sub-chunk loops rolled (hc in local memory)
    static_assert(NRAW == 4 || NRAW == 2, "u, delta always staged; z, dout staged or loaded");
    constexpr int EV = CK * ROWV / THREADS;             // phase e vectors per thread per tensor
    static_assert(CK % SC == 0 && SC % 4 == 0 && SC * 8 <= THREADS, "sub-chunks of whole quads");
    static_assert((NRAW * CK * ROWV) % THREADS == 0 && (CK * ROWV) % THREADS == 0, "even splits");
    static_assert((CK * CH / 4) % THREADS == 0 && (2 * CK * N / 4) % THREADS == 0, "even splits");
    static_assert(CH % 8 == 0 && THREADS % 32 == 0 && (2 * CK * BCV) % THREADS == 0, "whole warps, even splits");
    constexpr int BC_PER_THR = 2 * CK * BCV / THREADS;  // 16-byte Bm/Cm vectors per thread per chunk
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* raw_act = reinterpret_cast<T*>(smem_raw);            // [NRAW][CK][CH]: u, delta(, z, dout)
    T* raw_bc = raw_act + NRAW * CK * CH;                   // [2][CK][N]: Bm, Cm (BC_ASYNC only)
    float* dt_s = reinterpret_cast<float*>(raw_bc + (BC_ASYNC ? 2 * CK * N : 0));  // swizzled [CK][CH]: dt, then ddelta
    float* u_s = dt_s + CK * CH;                            // u, then du
    float* dy_s = u_s + CK * CH;                            // dy
    float* q_s = dy_s + CK * CH;                            // dout silu'(z), then dz
    float* B_s = q_s + CK * CH;                             // [CK][N]
    float* C_s = B_s + CK * N;
    float* slab = C_s + CK * N;                             // [2][WARPS][SC][32] dB/dC partials

    int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    int cl = warp * 8 + lane / 4, g = lane % 4;
    int b = blockIdx.y, eb = blockIdx.x * CH, e = eb + cl;
    bool ok = e < E;
    int ec = ok ? e : E - 1;
    int nc = scan_n_chunks(L);
    size_t nBC = (size_t)B * L * N;
    float Dv = D[ec], dbias_acc = 0.0f, dD_acc = 0.0f;  // per-thread partials of the channel cl
    // conversion pass: thread tid always converts channels (tid % CV) * 4 .. +3 (rows tid/CV + k THREADS/CV)
    // only A2 = A log2(e) is kept (4 registers fewer): sums that need A are scaled by ln 2 once
    float A2[S], gr[S], dAacc[S];
#pragma unroll
    for (int s = 0; s < S; s++) {
        A2[s] = -expf(A_log[ec * N + g * S + s]) * SCAN_LOG2E; gr[s] = 0.0f; dAacc[s] = 0.0f;
    }
    // lane's value after the 8-channel reduce-scatter: jv = lane >> 2 (dB for jv < 4, else dC) of
    // state g*4 + (jv & 3); slab row layout: dB[0..16), dC[0..16)
    const int slab_idx = ((lane >> 4) & 1) * 16 + g * 4 + ((lane >> 2) & 3);

    // tid re-read through an opaque asm at each use site: otherwise the compiler hoists the
    // chunk-invariant index math of the staging / conversion / phase-e loops out of the chunk loop
    // and keeps ~40 addresses live through the reverse pass (hundreds of bytes of spills)
    auto opaque_tid = []() { unsigned t; asm volatile("mov.u32 %0, %%tid.x;" : "=r"(t)); return (int)t; };
    auto issue_in = [&](int cc) {  // chunk cc's inputs -> raw smem (async on the vector path)
        int tb = cc * CK, ln = min(CK, L - tb);
        const int tid = opaque_tid();
#pragma unroll
        for (int k = 0; k < IN_PER_THR; k++) {
            int i = tid + k * THREADS, ts = i / (CK * ROWV), rem = i % (CK * ROWV);
            int r = rem / ROWV, v = rem % ROWV, e0 = eb + v * VEC;
            const T* src = ts == 0 ? u : ts == 1 ? delta : ts == 2 ? z : dout;
            T* dst = raw_act + (ts * CK + r) * CH + v * VEC;
            bool valid = r < ln;
            const T* row = src + ((size_t)b * L + tb + (valid ? r : 0)) * E;
            if (VEC_OK) {
                cp_async<16>(dst, row + (e0 < E ? e0 : 0), valid && e0 < E);
            } else {
#pragma unroll
                for (int q = 0; q < VEC; q++) dst[q] = (valid && e0 + q < E) ? row[e0 + q] : from_f32<T>(0.0f);
            }
        }
#pragma unroll
        for (int k = 0; k < (2 * CK * BCV + THREADS - 1) / THREADS; k++) {
            int i = tid + k * THREADS;
            if (BC_ASYNC && i < 2 * CK * BCV) {
                int w = i / (CK * BCV), rem = i % (CK * BCV), r = rem / BCV, v = rem % BCV;
                bool valid = r < ln;
                const T* src = (w == 0 ? Bm : Cm) + ((size_t)b * L + tb + (valid ? r : 0)) * N + v * VEC;
                cp_async<16>(raw_bc + (w * CK + r) * N + v * VEC, src, valid);
            }
        }
        cp_async_commit();
    };
    auto hs_load = [&](int cc) {
        return *reinterpret_cast<const float4*>(hs + (((size_t)b * nc + cc) * E + ec) * N + g * S);
    };

    issue_in(nc - 1);
    float4 h4 = hs_load(nc - 1);
    for (int c = nc - 1; c >= 0; c--) {
        int t0 = c * CK, len = min(CK, L - t0);
        // v6: this chunk's Bm/Cm straight into registers (L2-resident: every block of batch element b
        // reads the same rows); issued before the wait so the latency overlaps the barrier + conversion
        Packed128<T> bcr[BC_ASYNC ? 1 : BC_PER_THR];
        if (!BC_ASYNC) {
            const int tid = opaque_tid();
#pragma unroll
            for (int k = 0; k < BC_PER_THR; k++) {
                int i = tid + k * THREADS, w = i / (CK * BCV), rem = i % (CK * BCV), r = rem / BCV, v = rem % BCV;
                if (r < len) {
                    bcr[k] = load128((w == 0 ? Bm : Cm) + ((size_t)b * L + t0 + r) * N + v * VEC);
                } else {
#pragma unroll
                    for (int q = 0; q < VEC; q++) bcr[k].v[q] = from_f32<T>(0.0f);
                }
            }
        }
        // v7: z and dout of this thread's conversion cells, same reasoning
        float4 zg[NRAW == 4 ? 1 : KC][2];
        if constexpr (NRAW == 2) {
            const int tid = opaque_tid(), cv0 = (tid % CV) * 4;
#pragma unroll
            for (int k = 0; k < KC; k++) {
                int r = tid / CV + k * (THREADS / CV);
                bool valid = r < len;
                size_t off = ((size_t)b * L + t0 + (valid ? r : 0)) * E;
                zg[k][0] = ldg4f<T, VEC_OK>(z + off, eb + cv0, E, valid);
                zg[k][1] = ldg4f<T, VEC_OK>(dout + off, eb + cv0, E, valid);
            }
        }
        cp_async_wait<0>();
        __syncthreads();  // raw inputs of chunk c landed; the previous chunk is done with every tile
        // b. conversion
        {
        const int tid = opaque_tid(), cv0 = (tid % CV) * 4;
#pragma unroll
        for (int k = 0; k < KC; k++) {
            int r = tid / CV + k * (THREADS / CV);
            float4 uu = lds4f(raw_act + (0 * CK + r) * CH + cv0);
            float4 dd = lds4f(raw_act + (1 * CK + r) * CH + cv0);
            float4 zz, go;
            if constexpr (NRAW == 4) {
                zz = lds4f(raw_act + (2 * CK + r) * CH + cv0);
                go = lds4f(raw_act + (3 * CK + r) * CH + cv0);
            } else {
                zz = zg[k][0];
                go = zg[k][1];
            }
            const float* dv = &dd.x; const float* zv = &zz.x; const float* gv = &go.x;
            float4 dt4, dy4, q4;
            float* dtv = &dt4.x; float* dyv = &dy4.x; float* qv = &q4.x;
#pragma unroll
            for (int q = 0; q < 4; q++) {
                int ee = eb + cv0 + q;
                bool valid = r < len && ee < E;  // zero-filled inputs there: dy = q = 0 too
                float s = __fdividef(1.0f, 1.0f + __expf(-zv[q]));
                dtv[q] = valid ? scan_softplus_fast(dv[q] + __ldg(dbias + min(ee, E - 1))) : 0.0f;
                dyv[q] = gv[q] * zv[q] * s;
                qv[q] = gv[q] * s * (1.0f + zv[q] * (1.0f - s));
            }
            int o = v5b_sw<CH>(r, cv0);
            *reinterpret_cast<float4*>(dt_s + o) = dt4;
            *reinterpret_cast<float4*>(u_s + o) = uu;
            *reinterpret_cast<float4*>(dy_s + o) = dy4;
            *reinterpret_cast<float4*>(q_s + o) = q4;
        }
        if (BC_ASYNC) {
#pragma unroll
            for (int k = 0; k < 2 * CK * N / 4 / THREADS; k++) {
                int i = tid + k * THREADS, w = i / (CK * N / 4), rem = i % (CK * N / 4), r = rem / (N / 4), n4 = (rem % (N / 4)) * 4;
                *reinterpret_cast<float4*>((w == 0 ? B_s : C_s) + r * N + n4) = lds4f(raw_bc + (w * CK + r) * N + n4);
            }
        } else {  // same (w, r, v) mapping as the loads above
#pragma unroll
            for (int k = 0; k < BC_PER_THR; k++) {
                int i = tid + k * THREADS, w = i / (CK * BCV), rem = i % (CK * BCV), r = rem / BCV, v = rem % BCV;
                float* dst = (w == 0 ? B_s : C_s) + r * N + v * VEC;
#pragma unroll
                for (int q4 = 0; q4 < VEC; q4 += 4)
                    *reinterpret_cast<float4*>(dst + q4) =
                        make_float4(bcr[k].f(q4), bcr[k].f(q4 + 1), bcr[k].f(q4 + 2), bcr[k].f(q4 + 3));
            }
        }
        }
        __syncthreads();  // tiles ready; the raw buffer is free
        if (c > 0) issue_in(c - 1);  // lands during this chunk's passes
        // c. checkpoint pass: the state entering each sub-chunk (dt = 0, B = 0 past L: identity)
        float hc[NSC][S];
        {
            float h[S] = {h4.x, h4.y, h4.z, h4.w};
#pragma unroll (KUNR)
            for (int k = 0; k < NSC; k++) {
#pragma unroll
                for (int s = 0; s < S; s++) hc[k][s] = h[s];
#pragma unroll
                for (int j = 0; j < SC; j++) {
                    int r = k * SC + j, o = v5b_sw<CH>(r, cl);
                    float dt = dt_s[o], dtu = dt * u_s[o];
                    float4 bv = *reinterpret_cast<const float4*>(&B_s[r * N + g * S]);
                    h[0] = scan_ex2(dt * A2[0]) * h[0] + dtu * bv.x;
                    h[1] = scan_ex2(dt * A2[1]) * h[1] + dtu * bv.y;
                    h[2] = scan_ex2(dt * A2[2]) * h[2] + dtu * bv.z;
                    h[3] = scan_ex2(dt * A2[3]) * h[3] + dtu * bv.w;
                }
            }
        }
        // d. reverse, one sub-chunk at a time
        // rolled (v8, v9): hc lives in local memory; the next sub-chunk's checkpoint is loaded one
        // sub-chunk ahead (hn) so its latency is not the head of the recompute chain
        float hk[S], hn[S];
        if constexpr (ROLL) {
#pragma unroll
            for (int s = 0; s < S; s++) hk[s] = hc[NSC - 1][s];
        }
#pragma unroll (KUNR)
        for (int k = NSC - 1; k >= 0; k--) {
            float hsub[SC][S], dAs[SC][S], h0k[S];
#pragma unroll
            for (int s = 0; s < S; s++) {
                if constexpr (ROLL) {
                    hn[s] = hc[k > 0 ? k - 1 : 0][s];
                    h0k[s] = hk[s];
                } else {
                    h0k[s] = hc[k][s];
                }
            }
#pragma unroll
            for (int j = 0; j < SC; j++) {
                int r = k * SC + j, o = v5b_sw<CH>(r, cl);
                float dt = dt_s[o], dtu = dt * u_s[o];
                float4 bv = *reinterpret_cast<const float4*>(&B_s[r * N + g * S]);
                float bb[S] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
                for (int s = 0; s < S; s++) {
                    dAs[j][s] = scan_ex2(dt * A2[s]);
                    hsub[j][s] = dAs[j][s] * (j > 0 ? hsub[j - 1][s] : h0k[s]) + dtu * bb[s];
                }
            }
            // compiler-only fence: reload dt, u, B, C below instead of keeping the recompute's values
            // live across the sub-chunk (48 registers: the cause of heavy spilling without it)
            asm volatile("" ::: "memory");
            float* slab_w = slab + (((k & 1) * WARPS + warp) * SC) * 32;
            float dub[4], dtb[4], yb[4];
#pragma unroll
            for (int j = SC - 1; j >= 0; j--) {
                int r = k * SC + j, o = v5b_sw<CH>(r, cl);
                float dt = dt_s[o], uu = u_s[o], dy = dy_s[o];
                float4 bv = *reinterpret_cast<const float4*>(&B_s[r * N + g * S]);
                float4 cv = *reinterpret_cast<const float4*>(&C_s[r * N + g * S]);
                float bb[S] = {bv.x, bv.y, bv.z, bv.w}, cc4[S] = {cv.x, cv.y, cv.z, cv.w};
                float v[8], dsum = 0.0f, tsum = 0.0f, ysum = 0.0f, dtu = dt * uu;
#pragma unroll
                for (int s = 0; s < S; s++) {
                    float hp = j > 0 ? hsub[j - 1][s] : h0k[s];
                    ysum += cc4[s] * hsub[j][s];
                    gr[s] += dy * cc4[s];
                    v[s] = gr[s] * dtu;              // dB
                    v[S + s] = dy * hsub[j][s];      // dC
                    dsum += gr[s] * bb[s];
                    float ghdA = gr[s] * hp * dAs[j][s];
                    tsum += ghdA * A2[s];
                    dAacc[s] += ghdA * dt;
                    gr[s] *= dAs[j][s];
                }
                dub[j % 4] = dsum * dt;
                dtb[j % 4] = tsum * SCAN_LN2 + dsum * uu;  // sum_s g (hp dA A + B u)
                yb[j % 4] = ysum;                    // sum_n C h (this thread's 4 states)
                reduce_scatter_level<4, 16>(v, lane);
                reduce_scatter_level<2, 8>(v, lane);
                reduce_scatter_level<1, 4>(v, lane);
                slab_w[j * 32 + slab_idx] = v[0];
                if (j % 4 == 0) {  // steps r .. r+3 done by the whole quad: thread g finishes step r + g
                    reduce_scatter_level<2, 2>(dub, lane); reduce_scatter_level<2, 2>(dtb, lane);
                    reduce_scatter_level<2, 2>(yb, lane);
                    reduce_scatter_level<1, 1>(dub, lane); reduce_scatter_level<1, 1>(dtb, lane);
                    reduce_scatter_level<1, 1>(yb, lane);
                    int oo = v5b_sw<CH>(r + g, cl);
                    float uo = u_s[oo], dto = dt_s[oo], dyo = dy_s[oo], qo = q_s[oo];
                    float dd = dtb[0] * scan_dsoftplus_from_dt(dto);
                    u_s[oo] = dub[0] + dyo * Dv;               // du
                    dt_s[oo] = dd;                             // ddelta
                    q_s[oo] = (yb[0] + Dv * uo) * qo;          // dz
                    dbias_acc += dd;                           // 0 past L / E (dt = 0 there)
                    dD_acc += dyo * uo;                        // 0 there too (dy = 0)
                }
            }
            __syncthreads();  // slab[k & 1] complete (and, at k = 0, every tile)
            const int tidf = opaque_tid();
            if (tidf < SC * 8) {  // step j, float4 qv: dB[4qv..] (qv < 4) or dC[4(qv-4)..]
                int j = tidf / 8, qv = tidf % 8, r = k * SC + j;
                if (r < len) {
                    const float* sp = slab + ((k & 1) * WARPS * SC + j) * 32 + qv * 4;
                    float4 acc = *reinterpret_cast<const float4*>(sp);
#pragma unroll
                    for (int w = 1; w < WARPS; w++) {
                        float4 x = *reinterpret_cast<const float4*>(sp + w * SC * 32);
                        acc.x += x.x; acc.y += x.y; acc.z += x.z; acc.w += x.w;
                    }
                    size_t off = ((size_t)b * L + t0 + r) * N + (qv % 4) * 4 + (qv >= 4 ? nBC : 0);
                    atomic_add_float4(dBC + off, acc);
                }
            }
            if constexpr (ROLL) {
#pragma unroll
                for (int s = 0; s < S; s++) hk[s] = hn[s];
            }
        }
        if (c > 0) h4 = hs_load(c - 1);  // used after the next conversion
        // e. du, ddelta, dz += tiles; every old value is loaded before any is used
        const int tid = opaque_tid();
        Packed128<T> od[EV][3];
#pragma unroll
        for (int k = 0; k < EV; k++) {
            int i = tid + k * THREADS, r = i / ROWV, v = i % ROWV, e0 = eb + v * VEC;
            size_t off = ((size_t)b * L + t0 + (r < len ? r : 0)) * E;
            if (VEC_OK) {
                if (r < len && e0 < E) {
                    od[k][0] = load128cs(du + off + e0);
                    od[k][1] = load128cs(ddelta + off + e0);
                    od[k][2] = load128cs(dz + off + e0);
                }
            } else {
#pragma unroll
                for (int q = 0; q < VEC; q++) {
                    bool in = r < len && e0 + q < E;
                    od[k][0].v[q] = in ? du[off + e0 + q] : from_f32<T>(0.0f);
                    od[k][1].v[q] = in ? ddelta[off + e0 + q] : from_f32<T>(0.0f);
                    od[k][2].v[q] = in ? dz[off + e0 + q] : from_f32<T>(0.0f);
                }
            }
        }
#pragma unroll
        for (int k = 0; k < EV; k++) {
            int i = tid + k * THREADS, r = i / ROWV, v = i % ROWV, e0 = eb + v * VEC;
            if (r >= len) continue;
            size_t off = ((size_t)b * L + t0 + r) * E;
            Packed128<T> pu, pd, pz;
#pragma unroll
            for (int q4 = 0; q4 < VEC; q4 += 4) {
                int o = v5b_sw<CH>(r, v * VEC + q4);  // 4 consecutive channels stay consecutive
                float4 a = *reinterpret_cast<const float4*>(u_s + o);
                float4 d = *reinterpret_cast<const float4*>(dt_s + o);
                float4 zq = *reinterpret_cast<const float4*>(q_s + o);
                const float* av = &a.x; const float* dv = &d.x; const float* zv = &zq.x;
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    pu.set(q4 + q, od[k][0].f(q4 + q) + av[q]);
                    pd.set(q4 + q, od[k][1].f(q4 + q) + dv[q]);
                    pz.set(q4 + q, od[k][2].f(q4 + q) + zv[q]);
                }
            }
            if (VEC_OK) {
                if (e0 < E) { store128(du + off + e0, pu); store128(ddelta + off + e0, pd); store128(dz + off + e0, pz); }
            } else {
#pragma unroll
                for (int q = 0; q < VEC; q++)
                    if (e0 + q < E) { du[off + e0 + q] = pu.v[q]; ddelta[off + e0 + q] = pd.v[q]; dz[off + e0 + q] = pz.v[q]; }
            }
        }
    }
    // parameter grads: dD and ddelta_bias over the channel's quad, dA_log per thread
    dbias_acc += __shfl_xor_sync(0xffffffffu, dbias_acc, 1);
    dbias_acc += __shfl_xor_sync(0xffffffffu, dbias_acc, 2);
    dD_acc += __shfl_xor_sync(0xffffffffu, dD_acc, 1);
    dD_acc += __shfl_xor_sync(0xffffffffu, dD_acc, 2);
    if (ok) {
        if (g == 0) { atomicAdd(ddbias + e, dbias_acc); atomicAdd(dD + e, dD_acc); }
#pragma unroll
        for (int s = 0; s < S; s++) atomicAdd(dA_log + e * N + g * S + s, dAacc[s] * A2[s] * SCAN_LN2);
    }
}

template <typename T, int N, int CH = V5B_CH, bool BC_ASYNC = true, int NRAW = 4, bool ROLL = false>
static void scan_bwd_v5(T* du, T* ddelta, float* dA_log, T* dBm, T* dCm, float* dD, T* dz, float* ddbias,
                        const T* dout, const T* u, const T* delta, const float* A_log, const T* Bm,
                        const T* Cm, const float* D, const T* z, const float* dbias, const float* hs,
                        int B, int L, int E) {
    const size_t smem = scan_bwd_v5_smem<T, N, CH, BC_ASYNC, NRAW>();
    static bool attr_set = false;  // one per instantiation
    if (!attr_set) {
        cudaCheck(cudaFuncSetAttribute(scan_bwd_v5_kernel<T, N, true, CH, BC_ASYNC, NRAW, ROLL>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        cudaCheck(cudaFuncSetAttribute(scan_bwd_v5_kernel<T, N, false, CH, BC_ASYNC, NRAW, ROLL>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        if (CH != V5B_CH) {  // v6: ask for the full 228 KB carveout so 6 blocks of 36 KB fit (bf16)
            cudaCheck(cudaFuncSetAttribute(scan_bwd_v5_kernel<T, N, true, CH, BC_ASYNC, NRAW, ROLL>, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
            cudaCheck(cudaFuncSetAttribute(scan_bwd_v5_kernel<T, N, false, CH, BC_ASYNC, NRAW, ROLL>, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
        }
        attr_set = true;
    }
    size_t nBC = (size_t)B * L * N;
    float* acc = bc_scratch(2 * nBC);
    cudaCheck(cudaMemsetAsync(acc, 0, 2 * nBC * sizeof(float)));
    dim3 grid(ceil_div(E, CH), B);
    if (E % Packed128<T>::size == 0)
        scan_bwd_v5_kernel<T, N, true, CH, BC_ASYNC, NRAW, ROLL><<<grid, CH * 4, smem>>>(du, ddelta, dA_log, acc, dD, dz, ddbias, dout,
                u, delta, A_log, Bm, Cm, D, z, dbias, hs, B, L, E);
    else
        scan_bwd_v5_kernel<T, N, false, CH, BC_ASYNC, NRAW, ROLL><<<grid, CH * 4, smem>>>(du, ddelta, dA_log, acc, dD, dz, ddbias, dout,
                u, delta, A_log, Bm, Cm, D, z, dbias, hs, B, L, E);
    cudaCheckLaunch();
    scan_bwd_finalize<T>(dBm, dCm, acc, nBC);
}

// ---------------------------------------------------------------------------
// dispatch

#define SCAN_BWD_VERSIONS 9
// the forward used to produce hs and for the fwd+bwd timing (env SCAN_FWD_BEST overrides)
static int scan_fwd_best() {
    const char* s = getenv("SCAN_FWD_BEST");
    int v = s ? atoi(s) : 7;  // v7: the best forward (run5: 0.131 ms bf16 at L=1024)
    return (v >= 1 && v <= SCAN_FWD_VERSIONS) ? v : 7;
}
#define SCAN_FWD_BEST scan_fwd_best()
static const char* scan_bwd_version_name(int v) {
    switch (v) {
        case 1: return "v1 store-all (+fwd store)";
        case 2: return "v2 recompute chunk, regs";
        case 3: return "v3 v2 + reduce-scatter";
        case 4: return "v4 4thr/ch, 8-step subchunks";
        case 5: return "v5 cp.async, slab dB/dC";
        case 6: return "v6 v5 16ch/blk, B/C via regs";
        case 7: return "v7 v6 + z/dout via regs";
        case 8: return "v8 v7 + rolled sub-chunks";
        case 9: return "v9 v5 + rolled sub-chunks";
    }
    return "?";
}

template <typename T>
static void scan_bwd_run(int v, T* du, T* ddelta, float* dA_log, T* dBm, T* dCm, float* dD, T* dz,
                         float* ddbias, const T* dout, const T* u, const T* delta, const float* A_log,
                         const T* Bm, const T* Cm, const float* D, const T* z, const float* dbias,
                         const float* hs, int B, int L, int E, int N) {
    if (N != 16) FATAL("dev kernels are instantiated for N = 16 only (got %d)", N);
    switch (v) {
        case 1: scan_bwd_v1<T, 16>(du, ddelta, dA_log, dBm, dCm, dD, dz, ddbias, dout, u, delta, A_log, Bm, Cm, D, z, dbias, hs, B, L, E); break;
        case 3: scan_bwd_v2<T, 16, true>(du, ddelta, dA_log, dBm, dCm, dD, dz, ddbias, dout, u, delta, A_log, Bm, Cm, D, z, dbias, hs, B, L, E); break;
        case 4: scan_bwd_v4<T, 16>(du, ddelta, dA_log, dBm, dCm, dD, dz, ddbias, dout, u, delta, A_log, Bm, Cm, D, z, dbias, hs, B, L, E); break;
        case 5: scan_bwd_v5<T, 16>(du, ddelta, dA_log, dBm, dCm, dD, dz, ddbias, dout, u, delta, A_log, Bm, Cm, D, z, dbias, hs, B, L, E); break;
        case 6: scan_bwd_v5<T, 16, V6B_CH, false>(du, ddelta, dA_log, dBm, dCm, dD, dz, ddbias, dout, u, delta, A_log, Bm, Cm, D, z, dbias, hs, B, L, E); break;
        case 7: scan_bwd_v5<T, 16, V6B_CH, false, 2>(du, ddelta, dA_log, dBm, dCm, dD, dz, ddbias, dout, u, delta, A_log, Bm, Cm, D, z, dbias, hs, B, L, E); break;
        case 8: scan_bwd_v5<T, 16, V6B_CH, false, 2, true>(du, ddelta, dA_log, dBm, dCm, dD, dz, ddbias, dout, u, delta, A_log, Bm, Cm, D, z, dbias, hs, B, L, E); break;
        case 9: scan_bwd_v5<T, 16, V5B_CH, true, 4, true>(du, ddelta, dA_log, dBm, dCm, dD, dz, ddbias, dout, u, delta, A_log, Bm, Cm, D, z, dbias, hs, B, L, E); break;
        case 2: scan_bwd_v2<T, 16, false>(du, ddelta, dA_log, dBm, dCm, dD, dz, ddbias, dout, u, delta, A_log, Bm, Cm, D, z, dbias, hs, B, L, E); break;
        default: FATAL("no backward version %d", v);
    }
}

// bytes that must move: read u, delta, z, dout, Bm, Cm; write du, ddelta, dz, dBm, dCm
static double scan_bwd_bytes(int B, int L, int E, int N, size_t tsize) {
    return ((double)B * L * E * 7 + (double)B * L * N * 4) * tsize;
}

// gradient buffers: host initial values (small random: checks the += semantics) and device copies
struct ScanGrads {
    std::vector<float> du, ddelta, dA_log, dBm, dCm, dD, dz, ddbias;
};
static ScanGrads scan_grads_init(int B, int L, int E, int N, uint64_t seed) {
    ScanGrads g;
    Rng r;
    rng_seed(&r, seed);
    size_t act = (size_t)B * L * E, bc = (size_t)B * L * N;
    g.du.resize(act); g.ddelta.resize(act); g.dz.resize(act); g.dBm.resize(bc); g.dCm.resize(bc);
    g.dA_log.resize((size_t)E * N); g.dD.resize(E); g.ddbias.resize(E);
    for (auto* v : {&g.du, &g.ddelta, &g.dz, &g.dBm, &g.dCm, &g.dA_log, &g.dD, &g.ddbias})
        dev_fill_normal(*v, 0.0f, 0.05f, &r);
    return g;
}

template <typename T> struct ScanGradsDev {
    T *du, *ddelta, *dBm, *dCm, *dz;
    float *dA_log, *dD, *ddbias;
    void alloc(int B, int L, int E, int N) {
        size_t act = (size_t)B * L * E, bc = (size_t)B * L * N;
        du = dev_alloc<T>(act); ddelta = dev_alloc<T>(act); dz = dev_alloc<T>(act);
        dBm = dev_alloc<T>(bc); dCm = dev_alloc<T>(bc);
        dA_log = dev_alloc<float>((size_t)E * N); dD = dev_alloc<float>(E); ddbias = dev_alloc<float>(E);
    }
    // the initial values (rounded to T for the activation grads, as the reference must see them)
    void set(const ScanGrads& g) {
        auto put = [](auto* d, const std::vector<float>& h) {
            using TT = std::remove_pointer_t<decltype(d)>;
            std::vector<TT> tmp(h.size());
            for (size_t i = 0; i < h.size(); i++) tmp[i] = from_f32<TT>(h[i]);
            cudaCheck(cudaMemcpy(d, tmp.data(), h.size() * sizeof(TT), cudaMemcpyHostToDevice));
        };
        put(du, g.du); put(ddelta, g.ddelta); put(dz, g.dz); put(dBm, g.dBm); put(dCm, g.dCm);
        put(dA_log, g.dA_log); put(dD, g.dD); put(ddbias, g.ddbias);
    }
    void free_all() {
        dev_free(du); dev_free(ddelta); dev_free(dz); dev_free(dBm); dev_free(dCm);
        dev_free(dA_log); dev_free(dD); dev_free(ddbias);
    }
};

template <typename T> static void scan_bwd_all(int argc, char** argv) {
    const int N = 16;
    struct Shape { int B, L, E; };
    std::vector<Shape> shapes = {{2, 1, 37}, {2, 7, 37}, {2, 130, 96}, {2, 1000, 37}, {1, 65, 40},
                                 {8, 1024, 1536}};
    std::vector<double> worst(SCAN_BWD_VERSIONS + 1, 0.0);
    std::vector<bool> okv(SCAN_BWD_VERSIONS + 1, true);
    const double tol_act = sizeof(T) == 4 ? 1e-3 : 2e-2, tol_par = 1e-3;
    uint64_t seed = 5000;
    for (const Shape& s : shapes) {
        int B = s.B, L = s.L, E = s.E, nc = scan_n_chunks(L);
        ScanData d = scan_make_data<T>(B, L, E, N, seed++);
        std::vector<float> dout((size_t)B * L * E);
        Rng r;
        rng_seed(&r, seed++);
        dev_fill_normal(dout, 0.0f, 1.0f, &r);
        dev_round_to<T>(dout);
        ScanGrads g0 = scan_grads_init(B, L, E, N, seed++);
        for (auto* v : {&g0.du, &g0.ddelta, &g0.dz, &g0.dBm, &g0.dCm}) dev_round_to<T>(*v);
        ScanGrads ref = g0;
        scan_bwd_cpu(ref.du.data(), ref.ddelta.data(), ref.dA_log.data(), ref.dBm.data(), ref.dCm.data(),
                     ref.dD.data(), ref.dz.data(), ref.ddbias.data(), dout.data(), d.u.data(), d.delta.data(),
                     d.A_log.data(), d.Bm.data(), d.Cm.data(), d.D.data(), d.z.data(), d.dbias.data(), B, L, E, N);
        ScanDev<T> gd;
        gd.upload(d);
        T* ddout = dev_upload<T>(dout);
        T* out = dev_alloc<T>((size_t)B * L * E);
        float* hs = dev_alloc<float>((size_t)B * nc * E * N);
        scan_fwd_run<T>(SCAN_FWD_BEST, out, hs, gd.u, gd.delta, gd.A_log, gd.Bm, gd.Cm, gd.D, gd.z, gd.dbias, B, L, E, N);
        ScanGradsDev<T> gg;
        gg.alloc(B, L, E, N);
        for (int v = 1; v <= SCAN_BWD_VERSIONS; v++) {
            if (!dev_want_version(argc, argv, v)) continue;
            gg.set(g0);
            scan_bwd_run<T>(v, gg.du, gg.ddelta, gg.dA_log, gg.dBm, gg.dCm, gg.dD, gg.dz, gg.ddbias, ddout,
                            gd.u, gd.delta, gd.A_log, gd.Bm, gd.Cm, gd.D, gd.z, gd.dbias, hs, B, L, E, N);
            cudaCheck(cudaDeviceSynchronize());
            char what[160];
            bool ok = true;
            auto chk = [&](const char* name, auto* p, const std::vector<float>& rv, double tol) {
                snprintf(what, sizeof(what), "bwd %s %s B=%d L=%d E=%d %s", scan_bwd_version_name(v),
                         DType<T>::name(), B, L, E, name);
                ok = dev_check_elem(what, p, rv, tol, &worst[v]) && ok;  // elementwise: the += outputs cannot be poisoned
            };
            chk("du", gg.du, ref.du, tol_act); chk("ddelta", gg.ddelta, ref.ddelta, tol_act);
            chk("dz", gg.dz, ref.dz, tol_act); chk("dBm", gg.dBm, ref.dBm, tol_act);
            chk("dCm", gg.dCm, ref.dCm, tol_act); chk("dA_log", gg.dA_log, ref.dA_log, tol_par);
            chk("dD", gg.dD, ref.dD, tol_par); chk("ddelta_bias", gg.ddbias, ref.ddbias, tol_par);
            if (!ok) okv[v] = false;
        }
        gg.free_all();
        dev_free(ddout); dev_free(out); dev_free(hs);
        gd.free_all();
    }
    for (int L : {1024, 4096}) {
        int B = 8, E = 1536, nc = scan_n_chunks(L);
        ScanData d = scan_make_data<T>(B, L, E, N, 7);
        ScanDev<T> gd;
        gd.upload(d);
        std::vector<float> dout((size_t)B * L * E);
        Rng r;
        rng_seed(&r, 8);
        dev_fill_normal(dout, 0.0f, 1.0f, &r);
        T* ddout = dev_upload<T>(dout);
        T* out = dev_alloc<T>((size_t)B * L * E);
        float* hs = dev_alloc<float>((size_t)B * nc * E * N);
        ScanGradsDev<T> gg;
        gg.alloc(B, L, E, N);
        gg.set(scan_grads_init(B, L, E, N, 9));
        auto fwd = [&]() {
            scan_fwd_run<T>(SCAN_FWD_BEST, out, hs, gd.u, gd.delta, gd.A_log, gd.Bm, gd.Cm, gd.D, gd.z, gd.dbias, B, L, E, N);
        };
        fwd();
        char shape[64], name[96];
        snprintf(shape, sizeof(shape), "B%d L%d E%d N%d", B, L, E, N);
        float fwd_ms = dev_bench_ms([&](int) { fwd(); }, 2, 20);
        for (int v = 1; v <= SCAN_BWD_VERSIONS; v++) {
            if (!dev_want_version(argc, argv, v)) continue;
            if (v == 1 && L == 4096) continue;  // hall would be 3.2 GB (fp32); skip
            auto bwd = [&]() {
                scan_bwd_run<T>(v, gg.du, gg.ddelta, gg.dA_log, gg.dBm, gg.dCm, gg.dD, gg.dz, gg.ddbias, ddout,
                                gd.u, gd.delta, gd.A_log, gd.Bm, gd.Cm, gd.D, gd.z, gd.dbias, hs, B, L, E, N);
            };
            int reps = v == 1 ? 5 : 20;
            float ms = dev_bench_ms([&](int) { bwd(); }, 2, reps);
            dev_print_row("selective_scan_bwd", scan_bwd_version_name(v), shape, DType<T>::name(), ms,
                          scan_bwd_bytes(B, L, E, N, sizeof(T)), scan_fwd_sfu(B, L, E, N), okv[v], worst[v]);
            float both = dev_bench_ms([&](int) { fwd(); bwd(); }, 2, reps);
            snprintf(name, sizeof(name), "fwd v%d + bwd v%d", SCAN_FWD_BEST, v);
            dev_print_row("selective_scan_fwd+bwd", name, shape, DType<T>::name(), both,
                          scan_fwd_bytes(B, L, E, N, sizeof(T)) + scan_bwd_bytes(B, L, E, N, sizeof(T)),
                          2 * scan_fwd_sfu(B, L, E, N), okv[v], worst[v]);
        }
        (void)fwd_ms;
        gg.free_all();
        dev_free(ddout); dev_free(out); dev_free(hs);
        gd.free_all();
    }
}

#ifndef SCAN_BWD_NO_MAIN
int main(int argc, char** argv) {
    dev_print_header();
    scan_bwd_all<float>(argc, argv);
    scan_bwd_all<bf16>(argc, argv);
    return dev_finish();
}
#endif
