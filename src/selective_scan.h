// selective_scan.h: the Mamba-1 selective scan (S6), forward, backward and one
// recurrent step.
//
// Shapes (token-major, like every activation in this project):
//   u, delta, z, out: (B, L, E)     Bm, Cm: (B, L, N)     A_log: (E, N)
//   D, delta_bias: (E)              hs: (B, n_chunks, E, N), n_chunks = scan_n_chunks(L)
//
// For every channel e and state n (A = -exp(A_log) is negative, so 0 < dA < 1):
//   dt_t  = softplus(delta_t + delta_bias)            (one step size per (b, t, e))
//   dA_t  = exp(dt_t * A[e,n])                          (decay of the state)
//   h_t   = dA_t * h_{t-1} + dt_t * Bm_t[n] * u_t       (h_{-1} = 0)
//   y_t   = sum_n Cm_t[n] * h_t[n] + D[e] * u_t
//   out_t = y_t * silu(z_t)
//
// Memory: the full state history is B*L*E*N floats (N times the activations), so
// the forward saves only the state entering each chunk of SCAN_CHUNK steps (hs),
// and the backward walks the chunks from last to first, recomputes one chunk's
// states from hs, and runs the reverse recurrence inside it, carrying dh
// (the gradient w.r.t. the state) from chunk to chunk.
//
// Backward equations, walking t downwards (dh_carry = 0 after the last step):
//   dy     = dout * silu(z);        dz += dout * y * silu'(z)
//   dh     = dh_carry + dy * Cm_t               (total gradient w.r.t. h_t)
//   dCm_t += dy * h_t                           (summed over e)
//   dBm_t += dh * dt * u                        (summed over e)
//   du    += dy * D + sum_n dh * dt * Bm_t
//   ddt    = sum_n dh * (h_{t-1} * dA_t * A + Bm_t * u)
//   dA    += dh * h_{t-1} * dA_t * dt;          dA_log = dA * A   (since dA/dA_log = A)
//   dD    += dy * u
//   ddelta += ddt * softplus'(delta + bias);    ddelta_bias += the same
//   dh_carry = dh * dA_t                        (flows to h_{t-1})
//
// Contents: the CPU reference (forward, backward, recurrent step); the generic CUDA
// kernels (any N <= 64); the CUDA launchers, which use the tuned kernels of
// selective_scan_fast.h when N == 16; the backend wrappers the model calls.
#pragma once
#include "common.h"

#define SCAN_CHUNK 64  // timesteps per chunk; the state entering each chunk is saved

HOST_DEVICE int scan_n_chunks(int L) { return (L + SCAN_CHUNK - 1) / SCAN_CHUNK; }

// ---------------------------------------------------------------------------
// CPU reference

static void selective_scan_forward_cpu(floatX* out, float* hs, const floatX* u, const floatX* delta,
                                       const float* A_log, const floatX* Bm, const floatX* Cm,
                                       const float* D, const floatX* z, const float* delta_bias,
                                       int B, int L, int E, int N) {
    int nc = scan_n_chunks(L);
    // every (b, e) is an independent recurrence writing its own out[b,:,e] and hs[b,:,e,:]
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int e = 0; e < E; e++) {
            std::vector<float> A(N), h(N, 0.0f);
            for (int n = 0; n < N; n++) A[n] = -expf(A_log[e * N + n]);
            for (int t = 0; t < L; t++) {
                if (t % SCAN_CHUNK == 0) {  // save the state entering this chunk
                    float* hc = hs + (((size_t)b * nc + t / SCAN_CHUNK) * E + e) * N;
                    for (int n = 0; n < N; n++) hc[n] = h[n];
                }
                size_t i = ((size_t)b * L + t) * E + e;          // (b, t, e)
                const floatX* Bt = Bm + ((size_t)b * L + t) * N;  // (b, t, :)
                const floatX* Ct = Cm + ((size_t)b * L + t) * N;
                float ut = (float)u[i];
                float dt = softplus_f((float)delta[i] + delta_bias[e]);
                float y = D[e] * ut;
                for (int n = 0; n < N; n++) {
                    h[n] = expf(dt * A[n]) * h[n] + dt * (float)Bt[n] * ut;
                    y += (float)Ct[n] * h[n];
                }
                out[i] = (floatX)(y * silu_f((float)z[i]));
            }
        }
    }
}

// Per-thread buffers of the CPU backward: one chunk of one channel
struct ScanChunkScratch {
    std::vector<float> A;      // (N): A = -exp(A_log[e])
    std::vector<float> dh;     // (N): dloss/dh carried to the previous step
    std::vector<float> h;      // (SCAN_CHUNK + 1, N): row 0 = state entering the chunk, row k+1 = h_{t0+k}
    std::vector<float> decay;  // (SCAN_CHUNK, N): dA of each step
    std::vector<float> dt;     // (SCAN_CHUNK)
    explicit ScanChunkScratch(int N)
        : A(N), dh(N), h((size_t)(SCAN_CHUNK + 1) * N), decay((size_t)SCAN_CHUNK * N), dt(SCAN_CHUNK) {}
};

// Backward of the recurrence of one (b, e), chunks last to first. Adds into du, ddelta, dz at
// (b, :, e) and into dBm_b, dCm_b: (L, N), this channel's terms of the sums over e for batch
// element b. Returns its parts of the parameter gradients: dA_sum (N) = sum_t dh h_{t-1} dA dt
// (dA_log = dA_sum * A), *dD_sum, *dbias_sum.
static void scan_backward_channel_cpu(floatX* du, floatX* ddelta, floatX* dz, float* dBm_b, float* dCm_b,
                                      float* dA_sum, float* dD_sum, float* dbias_sum, const floatX* dout,
                                      const floatX* u, const floatX* delta, const float* A_log,
                                      const floatX* Bm, const floatX* Cm, const float* D, const floatX* z,
                                      const float* delta_bias, const float* hs, int b, int e, int B, int L,
                                      int E, int N, ScanChunkScratch* s) {
    int nc = scan_n_chunks(L);
    float* A = s->A.data();
    float* dh = s->dh.data();
    for (int n = 0; n < N; n++) { A[n] = -expf(A_log[e * N + n]); dh[n] = 0.0f; dA_sum[n] = 0.0f; }
    float dD_acc = 0.0f, dbias_acc = 0.0f;
    for (int c = nc - 1; c >= 0; c--) {
        int t0 = c * SCAN_CHUNK;
        int len = (L - t0 < SCAN_CHUNK) ? L - t0 : SCAN_CHUNK;
        // recompute the chunk's states from hs, keeping dt and dA of each step for the reverse
        const float* hc = hs + (((size_t)b * nc + c) * E + e) * N;
        for (int n = 0; n < N; n++) s->h[n] = hc[n];
        for (int k = 0; k < len; k++) {
            size_t i = ((size_t)b * L + t0 + k) * E + e;
            const floatX* Bt = Bm + ((size_t)b * L + t0 + k) * N;
            float ut = (float)u[i];
            float dt = softplus_f((float)delta[i] + delta_bias[e]);
            const float* hp = &s->h[(size_t)k * N];
            float* hn = &s->h[(size_t)(k + 1) * N];
            float* dA = &s->decay[(size_t)k * N];
            for (int n = 0; n < N; n++) {
                dA[n] = expf(dt * A[n]);
                hn[n] = dA[n] * hp[n] + dt * (float)Bt[n] * ut;
            }
            s->dt[k] = dt;
        }
        // reverse recurrence inside the chunk
        for (int k = len - 1; k >= 0; k--) {
            int t = t0 + k;
            size_t i = ((size_t)b * L + t) * E + e;
            const floatX* Bt = Bm + ((size_t)b * L + t) * N;
            const floatX* Ct = Cm + ((size_t)b * L + t) * N;
            float* dBt = dBm_b + (size_t)t * N;
            float* dCt = dCm_b + (size_t)t * N;
            const float* hp = &s->h[(size_t)k * N];        // h_{t-1}
            const float* ht = &s->h[(size_t)(k + 1) * N];  // h_t
            const float* dA = &s->decay[(size_t)k * N];
            float ut = (float)u[i], zt = (float)z[i], go = (float)dout[i], dt = s->dt[k];
            float y = D[e] * ut;
            for (int n = 0; n < N; n++) y += (float)Ct[n] * ht[n];
            // out = y * silu(z): silu'(z) = s * (1 + z * (1 - s)), s = sigmoid(z)
            float sz = sigmoid_f(zt);
            float dy = go * zt * sz;
            dz[i] = (floatX)((float)dz[i] + go * y * sz * (1.0f + zt * (1.0f - sz)));
            float du_t = dy * D[e], ddt = 0.0f;
            dD_acc += dy * ut;
            for (int n = 0; n < N; n++) {
                float Bn = (float)Bt[n];
                float g = dh[n] + dy * (float)Ct[n];  // dloss/dh_t
                dCt[n] += dy * ht[n];
                dBt[n] += g * dt * ut;
                du_t += g * dt * Bn;
                ddt += g * (hp[n] * dA[n] * A[n] + Bn * ut);
                dA_sum[n] += g * hp[n] * dA[n] * dt;
                dh[n] = g * dA[n];  // carried to h_{t-1}
            }
            float dx = ddt * softplus_grad_f((float)delta[i] + delta_bias[e]);
            du[i] = (floatX)((float)du[i] + du_t);
            ddelta[i] = (floatX)((float)ddelta[i] + dx);
            dbias_acc += dx;
        }
    }
    *dD_sum = dD_acc;
    *dbias_sum = dbias_acc;
}

// channels per block of the CPU backward's fixed work partition (see below)
#define SCAN_CPU_BLOCK_CH 32

// Bit-reproducible for any number of OpenMP threads: the work is split into fixed tasks
// (batch element b, block of SCAN_CPU_BLOCK_CH channels), whatever the thread count. Everything
// indexed by (b, t, e) has one writer. The sums over e (dBm, dCm) go into one partial buffer per
// channel block, and the sums over b (dA_log, dD, ddelta_bias) into one per batch element; both
// are then added in a fixed order (block 0, 1, ...; b = 0, 1, ...). The partial buffers take
// 2 * ceil(E / 32) * B*L*N floats: for N = 16 about one (B, L, E) activation.
static void selective_scan_backward_cpu(floatX* du, floatX* ddelta, float* dA_log, floatX* dBm,
                                        floatX* dCm, float* dD, floatX* dz, float* ddelta_bias,
                                        const floatX* dout, const floatX* u, const floatX* delta,
                                        const float* A_log, const floatX* Bm, const floatX* Cm,
                                        const float* D, const floatX* z, const float* delta_bias,
                                        const float* hs, int B, int L, int E, int N) {
    int n_blocks = (E + SCAN_CPU_BLOCK_CH - 1) / SCAN_CPU_BLOCK_CH;
    size_t BLN = (size_t)B * L * N, LN = (size_t)L * N;
    std::vector<float> dBm_part((size_t)n_blocks * BLN, 0.0f);  // (n_blocks, B, L, N)
    std::vector<float> dCm_part((size_t)n_blocks * BLN, 0.0f);
    std::vector<float> dA_part((size_t)B * E * N);              // (B, E, N)
    std::vector<float> dD_part((size_t)B * E), dbias_part((size_t)B * E);  // (B, E)

    #pragma omp parallel
    {
        ScanChunkScratch scratch(N);
        #pragma omp for schedule(dynamic)
        for (int task = 0; task < B * n_blocks; task++) {
            int b = task / n_blocks, blk = task % n_blocks;
            int e_end = (blk + 1) * SCAN_CPU_BLOCK_CH < E ? (blk + 1) * SCAN_CPU_BLOCK_CH : E;
            float* dBm_b = dBm_part.data() + (size_t)blk * BLN + (size_t)b * LN;  // rows (blk, b, :, :)
            float* dCm_b = dCm_part.data() + (size_t)blk * BLN + (size_t)b * LN;
            for (int e = blk * SCAN_CPU_BLOCK_CH; e < e_end; e++) {
                size_t be = (size_t)b * E + e;
                scan_backward_channel_cpu(du, ddelta, dz, dBm_b, dCm_b, &dA_part[be * N], &dD_part[be],
                                          &dbias_part[be], dout, u, delta, A_log, Bm, Cm, D, z, delta_bias,
                                          hs, b, e, B, L, E, N, &scratch);
            }
        }
    }
    // dBm, dCm += the blocks' partial sums, in block order
    #pragma omp parallel for schedule(static)
    for (size_t j = 0; j < BLN; j++) {
        float sb = 0.0f, sc = 0.0f;
        for (int blk = 0; blk < n_blocks; blk++) {
            sb += dBm_part[(size_t)blk * BLN + j];
            sc += dCm_part[(size_t)blk * BLN + j];
        }
        dBm[j] = (floatX)((float)dBm[j] + sb);
        dCm[j] = (floatX)((float)dCm[j] + sc);
    }
    // parameter gradients += the batch elements' sums, in batch order
    for (int e = 0; e < E; e++) {
        float sD = 0.0f, sbias = 0.0f;
        for (int b = 0; b < B; b++) { sD += dD_part[(size_t)b * E + e]; sbias += dbias_part[(size_t)b * E + e]; }
        dD[e] += sD;
        ddelta_bias[e] += sbias;
        for (int n = 0; n < N; n++) {
            float sA = 0.0f;
            for (int b = 0; b < B; b++) sA += dA_part[((size_t)b * E + e) * N + n];
            dA_log[e * N + n] += sA * -expf(A_log[e * N + n]);  // dA * A
        }
    }
}

// one recurrent step for generation: u, delta, z, out: (B, E); Bm, Cm: (B, N);
// h: (B, E, N) is the running state, updated in place
static void selective_scan_step_cpu(float* out, float* h, const float* u, const float* delta,
                                    const float* A_log, const float* Bm, const float* Cm,
                                    const float* D, const float* z, const float* delta_bias,
                                    int B, int E, int N) {
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int e = 0; e < E; e++) {
            size_t i = (size_t)b * E + e;
            float* hb = h + i * N;
            float ut = u[i];
            float dt = softplus_f(delta[i] + delta_bias[e]);
            float y = D[e] * ut;
            for (int n = 0; n < N; n++) {
                float A = -expf(A_log[e * N + n]);
                hb[n] = expf(dt * A) * hb[n] + dt * Bm[(size_t)b * N + n] * ut;
                y += Cm[(size_t)b * N + n] * hb[n];
            }
            out[i] = y * silu_f(z[i]);
        }
    }
}

// ---------------------------------------------------------------------------
// CUDA
//
// Two kernel pairs; the launchers at the end choose:
//  - fast kernels (selective_scan_fast.h) for N == 16, Mamba's d_state: 4 threads per channel
//    with 4 states each, inputs staged in shared memory, exp on the special-function unit. Used
//    when N == 16 and the pointers they access as 16-byte vectors are aligned (cudaMalloc'd
//    buffers and the model's carved views are).
//  - generic kernels (below) for any N <= 64, the fallback and the readable version.

#ifdef __CUDACC__

// ---------------------------------------------------------------------------
// generic kernels (any N <= 64)
//
// Work split: one thread per (b, e, n). The G = (power of two >= N, at most 32)
// lanes of a warp that share (b, e) form a "group"; lane n of a group owns state
// h[n] (NPT > 1 states per lane when N > 32). Sums over n (y, du, ddt) are warp
// shuffles inside the group. A block holds SCAN_THREADS / G channels of one b,
// so reads of u/delta/z/dout at (b, t, e..e+7) are neighbouring floats, and Bm/Cm
// rows (b, t, :) are shared by the whole block. Each thread runs sequentially
// over L with accurate expf/log1pf.

#define SCAN_THREADS 256

// sum over the G lanes of a group (every lane gets the sum); G divides 32
template <int G>
__device__ __forceinline__ float group_sum(float v) {
    #pragma unroll
    for (int off = G / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

// forward: grid (ceil(E / (SCAN_THREADS/G)), B), block SCAN_THREADS
template <int G, int NPT>
__global__ void selective_scan_forward_generic_kernel(
    floatX* __restrict__ out, float* __restrict__ hs, const floatX* __restrict__ u,
    const floatX* __restrict__ delta, const float* __restrict__ A_log, const floatX* __restrict__ Bm,
    const floatX* __restrict__ Cm, const float* __restrict__ D, const floatX* __restrict__ z,
    const float* __restrict__ delta_bias, int B, int L, int E, int N) {
    int lane = threadIdx.x % G;
    int b = blockIdx.y;
    int e = blockIdx.x * (SCAN_THREADS / G) + threadIdx.x / G;
    bool e_ok = e < E;  // out-of-range channels still run (their lanes take part in the shuffles)
    int nc = scan_n_chunks(L);
    float A[NPT], h[NPT];
    bool n_ok[NPT];
    #pragma unroll
    for (int k = 0; k < NPT; k++) {
        int n = lane + k * G;
        n_ok[k] = e_ok && n < N;
        A[k] = n_ok[k] ? -expf(A_log[e * N + n]) : 0.0f;
        h[k] = 0.0f;
    }
    float Dv = e_ok ? D[e] : 0.0f, bias = e_ok ? delta_bias[e] : 0.0f;
    #pragma unroll 4  // lets the loads of the next steps issue early
    for (int t = 0; t < L; t++) {
        if (t % SCAN_CHUNK == 0) {  // state entering chunk t / SCAN_CHUNK
            #pragma unroll
            for (int k = 0; k < NPT; k++)
                if (n_ok[k]) hs[(((size_t)b * nc + t / SCAN_CHUNK) * E + e) * N + lane + k * G] = h[k];
        }
        size_t i = ((size_t)b * L + t) * E + e;
        size_t bt = ((size_t)b * L + t) * N;
        float ut = e_ok ? (float)u[i] : 0.0f;
        float dt = softplus_f((e_ok ? (float)delta[i] : 0.0f) + bias);
        float yp = 0.0f;  // this lane's part of sum_n Cm[n] * h[n]
        #pragma unroll
        for (int k = 0; k < NPT; k++) {
            float Bn = n_ok[k] ? (float)Bm[bt + lane + k * G] : 0.0f;
            float Cn = n_ok[k] ? (float)Cm[bt + lane + k * G] : 0.0f;
            h[k] = expf(dt * A[k]) * h[k] + dt * Bn * ut;
            yp += Cn * h[k];
        }
        float y = group_sum<G>(yp) + Dv * ut;
        if (e_ok && lane == 0) {
            float zt = (float)z[i];
            out[i] = (floatX)(y * silu_f(zt));
        }
    }
}

// backward: same grid as the forward. Per chunk (last to first): recompute the
// chunk's states into registers hreg (loops fully unrolled so hreg stays in
// registers), then walk the chunk backwards. dBm/dCm are summed over the
// block's channels in shared memory (sdB/sdC: (SCAN_CHUNK, G*NPT)) and added to
// global memory with one atomicAdd per (block, t, n) at the end of the chunk.
template <int G, int NPT>
__global__ void __launch_bounds__(SCAN_THREADS)
selective_scan_backward_generic_kernel(
    floatX* __restrict__ du, floatX* __restrict__ ddelta, float* __restrict__ dA_log,
    floatX* __restrict__ dBm, floatX* __restrict__ dCm, float* __restrict__ dD, floatX* __restrict__ dz,
    float* __restrict__ ddelta_bias, const floatX* __restrict__ dout, const floatX* __restrict__ u,
    const floatX* __restrict__ delta, const float* __restrict__ A_log, const floatX* __restrict__ Bm,
    const floatX* __restrict__ Cm, const float* __restrict__ D, const floatX* __restrict__ z,
    const float* __restrict__ delta_bias, const float* __restrict__ hs, int B, int L, int E, int N) {
    constexpr int NS = G * NPT;  // states per group (>= N)
    __shared__ float sdB[SCAN_CHUNK * NS];
    __shared__ float sdC[SCAN_CHUNK * NS];
    int lane = threadIdx.x % G;
    int warp_lane = threadIdx.x % 32;
    int b = blockIdx.y;
    int e = blockIdx.x * (SCAN_THREADS / G) + threadIdx.x / G;
    bool e_ok = e < E;
    int nc = scan_n_chunks(L);

    float A[NPT], dh[NPT], dAacc[NPT];
    bool n_ok[NPT];
    #pragma unroll
    for (int k = 0; k < NPT; k++) {
        int n = lane + k * G;
        n_ok[k] = e_ok && n < N;
        A[k] = n_ok[k] ? -expf(A_log[e * N + n]) : 0.0f;
        dh[k] = 0.0f;
        dAacc[k] = 0.0f;
    }
    float Dv = e_ok ? D[e] : 0.0f, bias = e_ok ? delta_bias[e] : 0.0f;
    float dD_acc = 0.0f, dbias_acc = 0.0f;
    for (int j = threadIdx.x; j < SCAN_CHUNK * NS; j += SCAN_THREADS) { sdB[j] = 0.0f; sdC[j] = 0.0f; }
    __syncthreads();

    for (int c = nc - 1; c >= 0; c--) {
        int t0 = c * SCAN_CHUNK;
        int len = min(SCAN_CHUNK, L - t0);
        float h0[NPT];                  // state entering the chunk
        float hreg[SCAN_CHUNK][NPT];    // h_{t0+k}
        #pragma unroll
        for (int k = 0; k < NPT; k++)
            h0[k] = n_ok[k] ? hs[(((size_t)b * nc + c) * E + e) * N + lane + k * G] : 0.0f;

        // 1) recompute the chunk's states
        #pragma unroll
        for (int s = 0; s < SCAN_CHUNK; s++) {
            if (s < len) {
                size_t i = ((size_t)b * L + t0 + s) * E + e;
                size_t bt = ((size_t)b * L + t0 + s) * N;
                float ut = e_ok ? (float)u[i] : 0.0f;
                float dt = softplus_f((e_ok ? (float)delta[i] : 0.0f) + bias);
                #pragma unroll
                for (int k = 0; k < NPT; k++) {
                    float hp = s == 0 ? h0[k] : hreg[s > 0 ? s - 1 : 0][k];
                    float Bn = n_ok[k] ? (float)Bm[bt + lane + k * G] : 0.0f;
                    hreg[s][k] = expf(dt * A[k]) * hp + dt * Bn * ut;
                }
            }
        }

        // 2) reverse recurrence inside the chunk
        #pragma unroll
        for (int s = SCAN_CHUNK - 1; s >= 0; s--) {
            if (s < len) {
                size_t i = ((size_t)b * L + t0 + s) * E + e;
                size_t bt = ((size_t)b * L + t0 + s) * N;
                float ut = 0.0f, zt = 0.0f, go = 0.0f, x = bias;
                if (e_ok) { ut = (float)u[i]; zt = (float)z[i]; go = (float)dout[i]; x += (float)delta[i]; }
                float dt = softplus_f(x);
                float Bn[NPT], Cn[NPT], yp = 0.0f;
                #pragma unroll
                for (int k = 0; k < NPT; k++) {
                    Bn[k] = n_ok[k] ? (float)Bm[bt + lane + k * G] : 0.0f;
                    Cn[k] = n_ok[k] ? (float)Cm[bt + lane + k * G] : 0.0f;
                    yp += Cn[k] * hreg[s][k];
                }
                float y = group_sum<G>(yp) + Dv * ut;
                float sg = sigmoid_f(zt);
                float dy = go * zt * sg;  // dloss/dy = dout * silu(z)
                float dup = 0.0f, ddtp = 0.0f;  // this lane's parts of du and ddt
                #pragma unroll
                for (int k = 0; k < NPT; k++) {
                    float hp = s == 0 ? h0[k] : hreg[s > 0 ? s - 1 : 0][k];
                    float dAt = expf(dt * A[k]);
                    float g = dh[k] + dy * Cn[k];  // dloss/dh_t
                    dup += g * dt * Bn[k];
                    ddtp += g * (hp * dAt * A[k] + Bn[k] * ut);
                    dAacc[k] += g * hp * dAt * dt;
                    dh[k] = g * dAt;
                    // sum dBm/dCm over the warp's groups (shuffles), then over warps (shared atomics)
                    float vB = g * dt * ut, vC = dy * hreg[s][k];
                    #pragma unroll
                    for (int off = G; off < 32; off *= 2) {
                        vB += __shfl_xor_sync(0xffffffffu, vB, off);
                        vC += __shfl_xor_sync(0xffffffffu, vC, off);
                    }
                    if (warp_lane < G) {
                        atomicAdd(&sdB[s * NS + lane + k * G], vB);
                        atomicAdd(&sdC[s * NS + lane + k * G], vC);
                    }
                }
                float du_t = group_sum<G>(dup) + dy * Dv;
                float ddt = group_sum<G>(ddtp);
                if (e_ok && lane == 0) {
                    float dx = ddt * softplus_grad_f(x);
                    du[i] = (floatX)((float)du[i] + du_t);
                    ddelta[i] = (floatX)((float)ddelta[i] + dx);
                    dz[i] = (floatX)((float)dz[i] + go * y * sg * (1.0f + zt * (1.0f - sg)));
                    dbias_acc += dx;
                    dD_acc += dy * ut;
                }
            }
        }

        // 3) flush this chunk's dBm/dCm block sums to global memory, re-zero shared
        __syncthreads();
        for (int j = threadIdx.x; j < SCAN_CHUNK * NS; j += SCAN_THREADS) {
            int s = j / NS, n = j % NS;
            if (s < len && n < N) {
                size_t bt = ((size_t)b * L + t0 + s) * N + n;
                atomicAdd(&dBm[bt], (floatX)sdB[j]);
                atomicAdd(&dCm[bt], (floatX)sdC[j]);
            }
            sdB[j] = 0.0f;
            sdC[j] = 0.0f;
        }
        __syncthreads();
    }
    // per-thread sums over b's chunks and t: one atomic per thread
    #pragma unroll
    for (int k = 0; k < NPT; k++)
        if (n_ok[k]) atomicAdd(&dA_log[e * N + lane + k * G], dAacc[k] * A[k]);
    if (e_ok && lane == 0) {
        atomicAdd(&dD[e], dD_acc);
        atomicAdd(&ddelta_bias[e], dbias_acc);
    }
}

// the tuned N == 16 kernels and their launchers
#include "selective_scan_fast.h"

// ---------------------------------------------------------------------------
// launchers: the fast kernels when they can take the problem, else the generic ones

// The generic kernels' instance for N: G lanes per channel (the power of two >= N, at most 32)
// and NPT states per lane (2 when N > 32)
struct ScanGenericKernels {
    int G;
    decltype(&selective_scan_forward_generic_kernel<4, 1>) forward;
    decltype(&selective_scan_backward_generic_kernel<4, 1>) backward;
};
template <int G, int NPT> static ScanGenericKernels scan_generic_instance() {
    return {G, selective_scan_forward_generic_kernel<G, NPT>, selective_scan_backward_generic_kernel<G, NPT>};
}
static ScanGenericKernels scan_generic_kernels(int N) {
    if (N <= 4) return scan_generic_instance<4, 1>();
    if (N <= 8) return scan_generic_instance<8, 1>();
    if (N <= 16) return scan_generic_instance<16, 1>();
    if (N <= 32) return scan_generic_instance<32, 1>();
    if (N > 64) FATAL("selective_scan: d_state N=%d > 64 not supported", N);
    return scan_generic_instance<32, 2>();
}

static void selective_scan_forward_cuda(floatX* out, float* hs, const floatX* u, const floatX* delta,
                                        const float* A_log, const floatX* Bm, const floatX* Cm,
                                        const float* D, const floatX* z, const float* delta_bias,
                                        int B, int L, int E, int N) {
    if (B <= 0 || L <= 0 || E <= 0) return;
    if (selective_scan_forward_fast_ok(N, hs, Bm, Cm)) {
        selective_scan_forward_fast(out, hs, u, delta, A_log, Bm, Cm, D, z, delta_bias, B, L, E);
        return;
    }
    ScanGenericKernels generic = scan_generic_kernels(N);
    dim3 grid(ceil_div(E, SCAN_THREADS / generic.G), B);
    generic.forward<<<grid, SCAN_THREADS>>>(out, hs, u, delta, A_log, Bm, Cm, D, z, delta_bias, B, L, E, N);
    cudaCheckLaunch();
}

static void selective_scan_backward_cuda(floatX* du, floatX* ddelta, float* dA_log, floatX* dBm,
                                         floatX* dCm, float* dD, floatX* dz, float* ddelta_bias,
                                         const floatX* dout, const floatX* u, const floatX* delta,
                                         const float* A_log, const floatX* Bm, const floatX* Cm,
                                         const float* D, const floatX* z, const float* delta_bias,
                                         const float* hs, int B, int L, int E, int N) {
    if (B <= 0 || L <= 0 || E <= 0) return;
    if (selective_scan_backward_fast_ok(N, hs, Bm, Cm, dBm, dCm)) {
        selective_scan_backward_fast(du, ddelta, dA_log, dBm, dCm, dD, dz, ddelta_bias, dout, u, delta, A_log,
                                     Bm, Cm, D, z, delta_bias, hs, B, L, E);
        return;
    }
    ScanGenericKernels generic = scan_generic_kernels(N);
    dim3 grid(ceil_div(E, SCAN_THREADS / generic.G), B);
    generic.backward<<<grid, SCAN_THREADS>>>(du, ddelta, dA_log, dBm, dCm, dD, dz, ddelta_bias, dout, u, delta,
                                             A_log, Bm, Cm, D, z, delta_bias, hs, B, L, E, N);
    cudaCheckLaunch();
}

#endif  // __CUDACC__

// ---------------------------------------------------------------------------
// backend wrappers (common.h): what the model calls. The recurrent step is CPU-only.

static void selective_scan_forward(bool on_gpu, floatX* out, float* hs, const floatX* u, const floatX* delta,
                                   const float* A_log, const floatX* Bm, const floatX* Cm, const float* D,
                                   const floatX* z, const float* delta_bias, int B, int L, int E, int N) {
    if (on_gpu) GPU_CALL(selective_scan_forward_cuda(out, hs, u, delta, A_log, Bm, Cm, D, z, delta_bias,
                                                     B, L, E, N));
    else selective_scan_forward_cpu(out, hs, u, delta, A_log, Bm, Cm, D, z, delta_bias, B, L, E, N);
}

static void selective_scan_backward(bool on_gpu, floatX* du, floatX* ddelta, float* dA_log, floatX* dBm,
                                    floatX* dCm, float* dD, floatX* dz, float* ddelta_bias, const floatX* dout,
                                    const floatX* u, const floatX* delta, const float* A_log, const floatX* Bm,
                                    const floatX* Cm, const float* D, const floatX* z, const float* delta_bias,
                                    const float* hs, int B, int L, int E, int N) {
    if (on_gpu) GPU_CALL(selective_scan_backward_cuda(du, ddelta, dA_log, dBm, dCm, dD, dz, ddelta_bias, dout, u,
                                                      delta, A_log, Bm, Cm, D, z, delta_bias, hs, B, L, E, N));
    else selective_scan_backward_cpu(du, ddelta, dA_log, dBm, dCm, dD, dz, ddelta_bias, dout, u, delta, A_log, Bm,
                                     Cm, D, z, delta_bias, hs, B, L, E, N);
}
