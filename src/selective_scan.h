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
// The parameter gradients dA_log, dD, ddelta_bias may each be nullptr (a frozen parameter, LoRA):
// it is then not written; du, ddelta, dBm, dCm, dz are the same bits either way.
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
//
// Vectorized over channels. The recurrence is sequential in t but independent across channels,
// so the CPU functions run SCAN_CPU_LANES channels side by side as SIMD lanes: per-step values
// are arrays over the lanes (lane j = channel e0 + j), states are (N, lanes) arrays, and every
// inner loop is a `#pragma omp simd` loop over the lanes (u, delta, z, dout, du, ddelta, dz are
// (B, L, E): one step's lanes are neighbouring floats; Bm_t[n], Cm_t[n] are the same for every
// lane). Work goes chunk by chunk (SCAN_CHUNK steps): the chunk's inputs are read from the
// (B, L, E) tensors first, its outputs written after, so those strided accesses overlap instead of
// stalling the recurrence. Per channel the sums run in the original order (y, du, ddt over
// n = 0, 1, ...; dA_log, dD, ddelta_bias over t). What differs from the scalar reference:
//  - exp, log1p (softplus) and sigmoid are scan_exp_cpu & co. below, plain float arithmetic that
//    vectorizes; libm's expf / log1pf do not (gcc's vector versions need -ffast-math), and the
//    scalar expf was ~70% of a CPU training step;
//  - dt * u is formed once per step (h = dA h + Bm * (dt u)), and dA_sum adds (dh dt) (h_{t-1} dA);
//  - dBm and dCm are sums over channels: each step's lanes are added with a SIMD reduction, then
//    to the block's partial sum (before: one channel after another).
// Outputs move by ~1e-7 relative (float rounding). The lanes of a partial group (E not a multiple
// of SCAN_CPU_LANES) are padded with zeros (u = z = dout = 0: they contribute exact zeros). Every
// group is computed by the same code whatever the thread count, so results stay bit-identical for
// any number of OpenMP threads.
// Measured (2-core machine, the `make kjv` CPU model: d_model 128 = E 256, N 16, 3 layers, batch
// 8 x 128): forward + backward of the scan 89 -> 11.4 ms per training step (63% -> 16% of it), the
// step 144 -> 73 ms; dev/notes_scan.md, "CPU scan: vectorized exp".

#define SCAN_CPU_LANES 32  // channels per SIMD lane group; divides SCAN_CPU_BLOCK_CH
#define SCAN_CPU_PAD 16    // floats between the parts of a scratch buffer (see ScanChunkScratch)

static inline float* scan_align64(float* p) { return (float*)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

// Scratch memory of the CPU scan: one buffer per thread and slot, kept from call to call and grown on
// demand, 64-byte aligned. The scan runs twice per layer and step; allocating and freeing its ~1 MB
// of buffers on every call made the OTHER components of a CPU training step ~3 ms slower (measured,
// dev/notes_scan.md). Slots: 0 the forward's per-thread buffer, 1 the backward's (ScanChunkScratch),
// 2 the backward's partial sums (on the calling thread).
static inline float* scan_cpu_scratch(int slot, size_t floats) {
    static thread_local std::vector<float> bufs[3];
    std::vector<float>& v = bufs[slot];
    if (v.size() < floats + 16) v.resize(floats + 16);
    return scan_align64(v.data());
}
static inline float scan_f32_from_bits(uint32_t v) { float f; memcpy(&f, &v, sizeof f); return f; }
static inline uint32_t scan_bits_from_f32(float f) { uint32_t v; memcpy(&v, &f, sizeof v); return v; }

// exp(x) for x <= 88.37, in plain float arithmetic (no libm call, no branch), so that loops of it
// vectorize (test_scan checks that scalar calls give the same bits). The scan's decay takes
// x = dt * A <= 0, N times per (b, t, e).
//   range reduction: x = k ln2 + r, k = round(x log2(e)) (the 1.5 * 2^23 shifter rounds to an
//     integer and leaves k in the low mantissa bits), r = x - k ln2 with ln2 split in two
//     (Cody-Waite: k * 0.693359375 is exact), |r| <= ~ln2/2;
//   exp(r) = 1 + r + r^2 P(r), P the degree-5 minimax polynomial of Cephes' expf;
//   times 2^k, built directly in the exponent bits.
// Error: max relative error 8.5e-8 = 1.42 * 2^-24 (about 1 ulp) over EVERY float in
// [ln 2^-126, 88.37] = [-87.3365, 88.37], measured against double exp (dev/notes_scan.md);
// test/test_scan.cu asserts < 2 * 2^-24 on a dense sweep. exp(0) = 1 exactly (k = 0, r = 0), and
// exp(x) <= 1 for x <= 0. Underflow: x is clamped at -88, so k >= -127, and 2^-127 comes out of the
// exponent bits as 0: x <= -87.68 gives exactly 0; in (-87.68, -87.3365) the result is a subnormal;
// either way within 2^-126.5 = 8.3e-39 of exp(x). NaN gives NaN, -inf 0. Not for x > 88.37 (2^k
// overflows the exponent bits; callers that can pass more clamp first).
static inline float scan_exp_cpu(float x) {
    const float shifter = 12582912.0f;  // 1.5 * 2^23
    float xc = x < -88.0f ? -88.0f : x;  // (NaN passes)
    float t = xc * 1.44269504088896341f + shifter;  // k + shifter, rounded to an integer
    float kf = t - shifter;
    uint32_t scale = (scan_bits_from_f32(t) - scan_bits_from_f32(shifter) + 127u) << 23;  // 2^k; 0 for k = -127
    float r = xc - kf * 0.693359375f;
    r = r - kf * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r;
    p = p + 1.0f;
    return p * scan_f32_from_bits(scale);
}

// log1p(a) for a >= 0 (here a = exp(x) of softplus), plain float arithmetic like scan_exp_cpu:
// u = 1 + a = 2^m f with f in [sqrt(1/2), sqrt(2)) taken from the bits of u; log(f) by Cephes'
// logf polynomial in r = f - 1; log(u) = m ln2 + log(f) (ln2 split in two); plus the rounding
// error of 1 + a: log((1 + a) / u) ~= (a - (u - 1)) / u, the whole result when 1 + a rounds to 1.
// No division and no int -> float conversion (either may trap, which keeps gcc from
// if-converting, i.e. vectorizing, a loop of it): m via the 2^23 magic number, and 1 / u as
// 2^-m (1 - r + r^2 - r^3) (the term is at most 2^-24 u; its error is below 1e-8 of the result).
// Max relative error 1.3e-7 over every float a in [0, 5e8] (dev/notes_scan.md).
static inline float scan_log1p_cpu(float a) {
    float u = 1.0f + a;
    uint32_t iu = scan_bits_from_f32(u) - 0x3f3504f3u;  // bits(u) - bits(sqrt(1/2)), >= 0 as u >= 1
    float m = scan_f32_from_bits((iu >> 23) + 0x4b000000u) - 8388608.0f;        // (2^23 + m) - 2^23
    float f = scan_f32_from_bits(scan_bits_from_f32(u) - (iu & 0xff800000u));  // u / 2^m
    float r = f - 1.0f;
    float z = r * r;
    float p = 7.0376836292e-2f;
    p = p * r + -1.1514610310e-1f;
    p = p * r + 1.1676998740e-1f;
    p = p * r + -1.2420140846e-1f;
    p = p * r + 1.4249322787e-1f;
    p = p * r + -1.6668057665e-1f;
    p = p * r + 2.0000714765e-1f;
    p = p * r + -2.4999993993e-1f;
    p = p * r + 3.3333331174e-1f;
    float y = p * r * z;
    y = y + m * -2.12194440e-4f;
    y = y + -0.5f * z;
    float lg = r + y;
    lg = lg + m * 0.693359375f;
    float inv_u = (1.0f - r * (1.0f - r * (1.0f - r))) * scan_f32_from_bits(0x3f800000u - (iu & 0xff800000u));
    return lg + (a - (u - 1.0f)) * inv_u;
}

// common.h's sigmoid_f / softplus_f (silu_f = z * sigmoid) with the functions above, so that
// they vectorize too. sigmoid: exp's argument is clamped at 88 (below x = -88 the result is
// 1 / (1 + e^88) = 6e-39 instead of a smaller number or 0). softplus: max relative error
// 1.8e-7 = 2.99 * 2^-24 over every float in [-87.33, 20] against double log1p(exp(x)) (libm's
// log1pf(expf(x)): 2.02 * 2^-24); below that 0 or a subnormal (the true value is < 1.2e-38); the
// identity above 20 as in softplus_f (exp's argument is clamped there, its result unused).
static inline float scan_sigmoid_cpu(float x) {
    float nx = -x > 88.0f ? 88.0f : -x;
    return 1.0f / (1.0f + scan_exp_cpu(nx));
}
static inline float scan_softplus_cpu(float x) {
    float xc = x > 20.0f ? 20.0f : x;
    return x > 20.0f ? x : scan_log1p_cpu(scan_exp_cpu(xc));
}

// dst[0..W) = src[0..nl), zero-padded
template <int W> static inline void scan_load_lanes_cpu(float* dst, const floatX* src, int nl) {
    if (nl == W) {
        #pragma omp simd
        for (int j = 0; j < W; j++) dst[j] = (float)src[j];
    } else {
        for (int j = 0; j < W; j++) dst[j] = j < nl ? (float)src[j] : 0.0f;
    }
}

// forward of channels e0 .. e0 + W - 1 (those < E) of batch element b, chunk by chunk: first the
// chunk's inputs (read from the (B, L, E) tensors in one go, so the loads overlap), then the
// recurrence, then the chunk's outputs.
// A, h: (N, W); st: 4 x (SCAN_CHUNK, W) + padding, scratch
template <int W>
static void scan_forward_lanes_cpu(floatX* out, float* hs, const floatX* u, const floatX* delta,
                                   const float* A_log, const floatX* Bm, const floatX* Cm, const float* D,
                                   const floatX* z, const float* delta_bias, int b, int e0, int L, int E, int N,
                                   float* A, float* h, float* st) {
    int nc = scan_n_chunks(L);
    int nl = E - e0 < W ? E - e0 : W;  // valid lanes
    float Dv[W], bias[W];
    for (int j = 0; j < W; j++) {
        Dv[j] = j < nl ? D[e0 + j] : 0.0f;
        bias[j] = j < nl ? delta_bias[e0 + j] : 0.0f;
    }
    for (int n = 0; n < N; n++)
        for (int j = 0; j < W; j++) {
            A[n * W + j] = j < nl ? -expf(A_log[(e0 + j) * N + n]) : -1.0f;
            h[n * W + j] = 0.0f;
        }
    const size_t CW = (size_t)SCAN_CHUNK * W + SCAN_CPU_PAD;  // (padded as in ScanChunkScratch)
    float *dt_c = st, *dtu_c = st + CW, *y_c = st + 2 * CW, *silu_c = st + 3 * CW;  // (SCAN_CHUNK, W) each
    for (int c = 0; c < nc; c++) {
        int t0 = c * SCAN_CHUNK;
        int len = (L - t0 < SCAN_CHUNK) ? L - t0 : SCAN_CHUNK;
        // the state entering the chunk: hs rows (b, c, e0 + j, :)
        float* hc = hs + (((size_t)b * nc + c) * E + e0) * N;
        for (int j = 0; j < nl; j++)
            for (int n = 0; n < N; n++) hc[(size_t)j * N + n] = h[n * W + j];
        for (int k = 0; k < len; k++) {  // inputs: dt, dt * u, D * u (y's start), silu(z)
            size_t i0 = ((size_t)b * L + t0 + k) * E + e0;  // (b, t, e0)
            size_t kW = (size_t)k * W;
            float ut[W], x[W], zt[W];
            scan_load_lanes_cpu<W>(ut, u + i0, nl);
            scan_load_lanes_cpu<W>(x, delta + i0, nl);
            scan_load_lanes_cpu<W>(zt, z + i0, nl);
            #pragma omp simd
            for (int j = 0; j < W; j++) {
                float dt = scan_softplus_cpu(x[j] + bias[j]);
                dt_c[kW + j] = dt;
                dtu_c[kW + j] = dt * ut[j];
                y_c[kW + j] = Dv[j] * ut[j];
                silu_c[kW + j] = zt[j] * scan_sigmoid_cpu(zt[j]);
            }
        }
        for (int k = 0; k < len; k++) {  // the recurrence
            const floatX* Bt = Bm + ((size_t)b * L + t0 + k) * N;  // (b, t, :)
            const floatX* Ct = Cm + ((size_t)b * L + t0 + k) * N;
            size_t kW = (size_t)k * W;
            const float *dt = dt_c + kW, *dtu = dtu_c + kW;
            float* y = y_c + kW;
            for (int n = 0; n < N; n++) {
                float Bn = (float)Bt[n], Cn = (float)Ct[n];
                float* hn = h + n * W;
                const float* An = A + n * W;
                #pragma omp simd
                for (int j = 0; j < W; j++) {
                    hn[j] = scan_exp_cpu(dt[j] * An[j]) * hn[j] + Bn * dtu[j];
                    y[j] += Cn * hn[j];
                }
            }
        }
        for (int k = 0; k < len; k++) {  // out = y * silu(z)
            size_t i0 = ((size_t)b * L + t0 + k) * E + e0;
            size_t kW = (size_t)k * W;
            for (int j = 0; j < nl; j++) out[i0 + j] = (floatX)(y_c[kW + j] * silu_c[kW + j]);
        }
    }
}

static void selective_scan_forward_cpu(floatX* out, float* hs, const floatX* u, const floatX* delta,
                                       const float* A_log, const floatX* Bm, const floatX* Cm,
                                       const float* D, const floatX* z, const float* delta_bias,
                                       int B, int L, int E, int N) {
    const int W = SCAN_CPU_LANES;
    int n_groups = (E + W - 1) / W;
    // every (b, lane group) is independent, writing its own out[b, :, e] and hs[b, :, e, :]
    #pragma omp parallel
    {
        // A, h, st (set before use), 64 bytes apart past their sizes (see ScanChunkScratch)
        float* A = scan_cpu_scratch(0, (size_t)(2 * N + 4 * SCAN_CHUNK) * W + 6 * SCAN_CPU_PAD);
        float *h = A + (size_t)N * W + SCAN_CPU_PAD, *st = h + (size_t)N * W + SCAN_CPU_PAD;
        #pragma omp for schedule(static)
        for (int task = 0; task < B * n_groups; task++)
            scan_forward_lanes_cpu<W>(out, hs, u, delta, A_log, Bm, Cm, D, z, delta_bias, task / n_groups,
                                      (task % n_groups) * W, L, E, N, A, h, st);
    }
}

// Per-thread buffers of the CPU backward: one chunk of one lane group (W channels)
struct ScanChunkScratch {
    float* A;      // (N, W): A = -exp(A_log[e])
    float* dh;     // (N, W): dloss/dh carried to the previous step
    float* dA;     // (N, W): sum over t of dh h_{t-1} dA dt
    float* h;      // (SCAN_CHUNK + 1, N, W): row 0 = state entering the chunk, row k+1 = h_{t0+k}
    float* decay;  // (SCAN_CHUNK, N, W): dA of each step
    // (SCAN_CHUNK, W) each: the chunk's inputs dt, dt * u, delta + delta_bias, u, z, dout, and its
    // outputs du, ddelta, dz, staged so that the (B, L, E) tensors are read and written in
    // ascending t and in one go (the reverse walk works on these)
    float *dt, *dtu, *x, *u, *z, *go, *du, *ddelta, *dz;
    // The parts in this thread's scan_cpu_scratch slot 1 (every part is written before it is read),
    // each 64 bytes (SCAN_CPU_PAD floats) past a multiple of its size: parts used in the same loop
    // must not sit a multiple of 4 KiB apart (false store-to-load dependencies, "4K aliasing").
    ScanChunkScratch(int N, int W) {
        size_t NW = (size_t)N * W + SCAN_CPU_PAD, CW = (size_t)SCAN_CHUNK * W + SCAN_CPU_PAD;
        size_t HW = (size_t)(SCAN_CHUNK + 1) * N * W + SCAN_CPU_PAD, DW = (size_t)SCAN_CHUNK * N * W + SCAN_CPU_PAD;
        float* p = scan_cpu_scratch(1, 3 * NW + HW + DW + 9 * CW);
        for (float** part : {&A, &dh, &dA}) { *part = p; p += NW; }
        h = p; p += HW;
        decay = p; p += DW;
        for (float** part : {&dt, &dtu, &x, &u, &z, &go, &du, &ddelta, &dz}) { *part = p; p += CW; }
    }
};

// Backward of the recurrences of channels e0 .. e0 + W - 1 (those < E) of batch element b,
// chunks last to first. Adds into du, ddelta, dz at (b, :, e) and into dBm_b, dCm_b: (L, N),
// these channels' terms of the sums over e for batch element b. Writes the channels' parts of
// the parameter gradients: dA_b[e * N + n] = sum_t dh h_{t-1} dA dt (dA_log = that * A),
// dD_b[e], dbias_b[e].
template <int W>
static void scan_backward_lanes_cpu(floatX* du, floatX* ddelta, floatX* dz, float* dBm_b, float* dCm_b,
                                    float* dA_b, float* dD_b, float* dbias_b, const floatX* dout,
                                    const floatX* u, const floatX* delta, const float* A_log,
                                    const floatX* Bm, const floatX* Cm, const float* D, const floatX* z,
                                    const float* delta_bias, const float* hs, int b, int e0, int L, int E,
                                    int N, ScanChunkScratch* s) {
    int nc = scan_n_chunks(L);
    int nl = E - e0 < W ? E - e0 : W;  // valid lanes
    float* A = s->A;
    float* dh = s->dh;
    float* dAs = s->dA;
    float Dv[W], bias[W], dD_acc[W], dbias_acc[W];
    for (int j = 0; j < W; j++) {
        Dv[j] = j < nl ? D[e0 + j] : 0.0f;
        bias[j] = j < nl ? delta_bias[e0 + j] : 0.0f;
        dD_acc[j] = 0.0f;
        dbias_acc[j] = 0.0f;
    }
    for (int n = 0; n < N; n++)
        for (int j = 0; j < W; j++) {
            A[n * W + j] = j < nl ? -expf(A_log[(e0 + j) * N + n]) : -1.0f;
            dh[n * W + j] = 0.0f;
            dAs[n * W + j] = 0.0f;
        }
    size_t NW = (size_t)N * W;
    for (int c = nc - 1; c >= 0; c--) {
        int t0 = c * SCAN_CHUNK;
        int len = (L - t0 < SCAN_CHUNK) ? L - t0 : SCAN_CHUNK;
        // recompute the chunk's states from hs, keeping dt and dA of each step for the reverse
        const float* hc = hs + (((size_t)b * nc + c) * E + e0) * N;
        for (int n = 0; n < N; n++)
            for (int j = 0; j < W; j++) s->h[n * W + j] = j < nl ? hc[(size_t)j * N + n] : 0.0f;
        for (int k = 0; k < len; k++) {  // the chunk's inputs, read in one go
            size_t i0 = ((size_t)b * L + t0 + k) * E + e0;
            size_t kW = (size_t)k * W;
            float *uk = &s->u[kW], *xk = &s->x[kW], *dtk = &s->dt[kW], *dtuk = &s->dtu[kW];
            scan_load_lanes_cpu<W>(uk, u + i0, nl);
            scan_load_lanes_cpu<W>(xk, delta + i0, nl);
            scan_load_lanes_cpu<W>(&s->z[kW], z + i0, nl);
            scan_load_lanes_cpu<W>(&s->go[kW], dout + i0, nl);
            #pragma omp simd
            for (int j = 0; j < W; j++) {
                xk[j] += bias[j];
                dtk[j] = scan_softplus_cpu(xk[j]);
                dtuk[j] = dtk[j] * uk[j];
            }
        }
        for (int k = 0; k < len; k++) {  // the states, as in the forward
            const floatX* Bt = Bm + ((size_t)b * L + t0 + k) * N;
            const float *dtk = &s->dt[(size_t)k * W], *dtu = &s->dtu[(size_t)k * W];
            const float* hp = &s->h[k * NW];
            float* hn = &s->h[(k + 1) * NW];
            float* dA = &s->decay[k * NW];
            for (int n = 0; n < N; n++) {
                float Bn = (float)Bt[n];
                #pragma omp simd
                for (int j = 0; j < W; j++) {
                    float a = scan_exp_cpu(dtk[j] * A[n * W + j]);
                    dA[n * W + j] = a;
                    hn[n * W + j] = a * hp[n * W + j] + Bn * dtu[j];
                }
            }
        }
        // reverse recurrence inside the chunk
        for (int k = len - 1; k >= 0; k--) {
            int t = t0 + k;
            const floatX* Bt = Bm + ((size_t)b * L + t) * N;
            const floatX* Ct = Cm + ((size_t)b * L + t) * N;
            float* dBt = dBm_b + (size_t)t * N;
            float* dCt = dCm_b + (size_t)t * N;
            const float* hp = &s->h[k * NW];        // h_{t-1}
            const float* ht = &s->h[(k + 1) * NW];  // h_t
            const float* dA = &s->decay[k * NW];
            size_t kW = (size_t)k * W;
            const float *xk = &s->x[kW], *dtk = &s->dt[kW], *ut = &s->u[kW], *zt = &s->z[kW], *go = &s->go[kW];
            float *du_t = &s->du[kW], *ddt = &s->ddelta[kW], *dzt = &s->dz[kW];
            float sz[W], y[W], dy[W];
            #pragma omp simd
            for (int j = 0; j < W; j++) {
                sz[j] = scan_sigmoid_cpu(zt[j]);
                dy[j] = go[j] * zt[j] * sz[j];  // dloss/dy = dout * silu(z)
                y[j] = Dv[j] * ut[j];
                du_t[j] = dy[j] * Dv[j];
                ddt[j] = 0.0f;
                dD_acc[j] += dy[j] * ut[j];
            }
            for (int n = 0; n < N; n++) {
                float Bn = (float)Bt[n], Cn = (float)Ct[n];
                float* dhn = dh + n * W;
                float* dAsn = dAs + n * W;
                const float *An = A + n * W, *hpn = hp + n * W, *htn = ht + n * W, *dAn = dA + n * W;
                float sB = 0.0f, sC = 0.0f;  // this step's sums over the lanes
                #pragma omp simd reduction(+ : sB, sC)
                for (int j = 0; j < W; j++) {
                    float g = dhn[j] + dy[j] * Cn;  // dloss/dh_t
                    float gdt = g * dtk[j];
                    float hdA = hpn[j] * dAn[j];    // h_{t-1} dA
                    y[j] += Cn * htn[j];            // (y is recomputed for dz)
                    sC += dy[j] * htn[j];
                    sB += gdt * ut[j];
                    du_t[j] += gdt * Bn;
                    ddt[j] += g * (hdA * An[j] + Bn * ut[j]);
                    dAsn[j] += gdt * hdA;
                    dhn[j] = g * dAn[j];  // carried to h_{t-1}
                }
                dCt[n] += sC;
                dBt[n] += sB;
            }
            #pragma omp simd
            for (int j = 0; j < W; j++) {
                // out = y * silu(z): silu'(z) = s * (1 + z * (1 - s)), s = sigmoid(z)
                dzt[j] = go[j] * y[j] * sz[j] * (1.0f + zt[j] * (1.0f - sz[j]));
                // softplus'(x) = sigmoid(x), 1 above 20 (softplus_grad_f)
                ddt[j] = ddt[j] * (xk[j] > 20.0f ? 1.0f : scan_sigmoid_cpu(xk[j]));
                dbias_acc[j] += ddt[j];
            }
        }
        // du, ddelta, dz += the chunk's terms
        for (int k = 0; k < len; k++) {
            size_t i0 = ((size_t)b * L + t0 + k) * E + e0;
            size_t kW = (size_t)k * W;
            for (int j = 0; j < nl; j++) {
                du[i0 + j] = (floatX)((float)du[i0 + j] + s->du[kW + j]);
                ddelta[i0 + j] = (floatX)((float)ddelta[i0 + j] + s->ddelta[kW + j]);
                dz[i0 + j] = (floatX)((float)dz[i0 + j] + s->dz[kW + j]);
            }
        }
    }
    for (int j = 0; j < nl; j++) {
        for (int n = 0; n < N; n++) dA_b[(size_t)(e0 + j) * N + n] = dAs[n * W + j];
        dD_b[e0 + j] = dD_acc[j];
        dbias_b[e0 + j] = dbias_acc[j];
    }
}

// channels per block of the CPU backward's fixed work partition (see below)
#define SCAN_CPU_BLOCK_CH 64

// GRAD_SET where the backward adds (the CPU lanes, the generic CUDA kernels): du, ddelta, dz (n each)
// zeroed first; the fast kernels store them instead
static void scan_zero_input_grads(bool on_gpu, floatX* du, floatX* ddelta, floatX* dz, size_t n) {
    for (floatX* g : {du, ddelta, dz}) backend_memset0(on_gpu, g, n * sizeof(floatX));
}

// Bit-reproducible for any number of OpenMP threads: the work is split into fixed tasks
// (batch element b, block of SCAN_CPU_BLOCK_CH channels), whatever the thread count. Everything
// indexed by (b, t, e) has one writer. The sums over e (dBm, dCm) go into one partial buffer per
// channel block, and the sums over b (dA_log, dD, ddelta_bias) into one per batch element; both
// are then added in a fixed order (block 0, 1, ...; b = 0, 1, ...). The partial buffers take
// 2 * ceil(E / 64) * B*L*N floats: for N = 16 half a (B, L, E) activation.
static void selective_scan_backward_cpu(floatX* du, floatX* ddelta, float* dA_log, floatX* dBm,
                                        floatX* dCm, float* dD, floatX* dz, float* ddelta_bias,
                                        const floatX* dout, const floatX* u, const floatX* delta,
                                        const float* A_log, const floatX* Bm, const floatX* Cm,
                                        const float* D, const floatX* z, const float* delta_bias,
                                        const float* hs, int B, int L, int E, int N, GradWrite grad_write = GRAD_ADD) {
    const int W = SCAN_CPU_LANES;
    if (grad_write == GRAD_SET) scan_zero_input_grads(false, du, ddelta, dz, (size_t)B * L * E);  // the lanes add
    static_assert(SCAN_CPU_BLOCK_CH % SCAN_CPU_LANES == 0, "a block is whole lane groups");
    int n_blocks = (E + SCAN_CPU_BLOCK_CH - 1) / SCAN_CPU_BLOCK_CH;
    size_t BLN = (size_t)B * L * N, LN = (size_t)L * N;
    // in this thread's scan_cpu_scratch slot 2; each task zeroes its rows of dBm_part and dCm_part
    // and writes its channels of the others
    size_t BLN_p = BLN + SCAN_CPU_PAD, BEN_p = (size_t)B * E * N + SCAN_CPU_PAD, BE_p = (size_t)B * E + SCAN_CPU_PAD;
    float* dBm_part = scan_cpu_scratch(2, 2 * n_blocks * BLN_p + BEN_p + 2 * BE_p);  // (n_blocks, B, L, N)
    float* dCm_part = dBm_part + n_blocks * BLN_p;                                   // (n_blocks, B, L, N)
    float* dA_part = dCm_part + n_blocks * BLN_p;                                    // (B, E, N)
    float* dD_part = dA_part + BEN_p;                                                // (B, E)
    float* dbias_part = dD_part + BE_p;                                              // (B, E)

    #pragma omp parallel
    {
        ScanChunkScratch scratch(N, W);
        #pragma omp for schedule(static)  // contiguous ranges of the b-major tasks per thread
        for (int task = 0; task < B * n_blocks; task++) {
            int b = task / n_blocks, blk = task % n_blocks;
            int e_end = (blk + 1) * SCAN_CPU_BLOCK_CH < E ? (blk + 1) * SCAN_CPU_BLOCK_CH : E;
            float* dBm_b = dBm_part + (size_t)blk * BLN_p + (size_t)b * LN;  // rows (blk, b, :, :)
            float* dCm_b = dCm_part + (size_t)blk * BLN_p + (size_t)b * LN;
            memset(dBm_b, 0, LN * sizeof(float));
            memset(dCm_b, 0, LN * sizeof(float));
            for (int e0 = blk * SCAN_CPU_BLOCK_CH; e0 < e_end; e0 += W)  // the block's lane groups, in order
                scan_backward_lanes_cpu<W>(du, ddelta, dz, dBm_b, dCm_b, dA_part + (size_t)b * E * N,
                                           dD_part + (size_t)b * E, dbias_part + (size_t)b * E, dout, u, delta,
                                           A_log, Bm, Cm, D, z, delta_bias, hs, b, e0, L, E, N, &scratch);
        }
    }
    // dBm, dCm += the blocks' partial sums, in block order
    #pragma omp parallel for schedule(static)
    for (size_t j = 0; j < BLN; j++) {
        float sb = 0.0f, sc = 0.0f;
        for (int blk = 0; blk < n_blocks; blk++) {
            sb += dBm_part[(size_t)blk * BLN_p + j];
            sc += dCm_part[(size_t)blk * BLN_p + j];
        }
        dBm[j] = (floatX)((float)dBm[j] + sb);
        dCm[j] = (floatX)((float)dCm[j] + sc);
    }
    // parameter gradients += the batch elements' sums, in batch order (a nullptr one is frozen:
    // skipped; its per-lane partials are a few register adds in the recurrence, left in place)
    for (int e = 0; e < E; e++) {
        float sD = 0.0f, sbias = 0.0f;
        for (int b = 0; b < B; b++) { sD += dD_part[(size_t)b * E + e]; sbias += dbias_part[(size_t)b * E + e]; }
        if (dD) dD[e] += sD;
        if (ddelta_bias) ddelta_bias[e] += sbias;
        if (dA_log) for (int n = 0; n < N; n++) {
            float sA = 0.0f;
            for (int b = 0; b < B; b++) sA += dA_part[((size_t)b * E + e) * N + n];
            dA_log[e * N + n] += sA * -expf(A_log[e * N + n]);  // dA * A
        }
    }
}

// one recurrent step for generation: u, delta, z, out: (B, E); Bm, Cm: (B, N);
// h: (B, E, N) is the running state, updated in place. The same arithmetic as one step of
// selective_scan_forward_cpu (scan_exp_cpu and all), so generation follows the trained forward.
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
            float dt = scan_softplus_cpu(delta[i] + delta_bias[e]);
            float dtu = dt * ut;
            float y = D[e] * ut;
            for (int n = 0; n < N; n++) {
                float A = -expf(A_log[e * N + n]);
                hb[n] = scan_exp_cpu(dt * A) * hb[n] + Bm[(size_t)b * N + n] * dtu;
                y += Cm[(size_t)b * N + n] * hb[n];
            }
            out[i] = y * (z[i] * scan_sigmoid_cpu(z[i]));
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
    // per-thread sums over b's chunks and t: one atomic per thread (a nullptr gradient is frozen:
    // no atomics; the checks are uniform and outside the loops)
    if (dA_log) {
        #pragma unroll
        for (int k = 0; k < NPT; k++)
            if (n_ok[k]) atomicAdd(&dA_log[e * N + lane + k * G], dAacc[k] * A[k]);
    }
    if (e_ok && lane == 0) {
        if (dD) atomicAdd(&dD[e], dD_acc);
        if (ddelta_bias) atomicAdd(&ddelta_bias[e], dbias_acc);
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
    generic.forward<<<grid, SCAN_THREADS, 0, launch_stream()>>>(out, hs, u, delta, A_log, Bm, Cm, D, z, delta_bias, B, L, E, N);
    cudaCheckLaunch();
}

static void selective_scan_backward_cuda(floatX* du, floatX* ddelta, float* dA_log, floatX* dBm,
                                         floatX* dCm, float* dD, floatX* dz, float* ddelta_bias,
                                         const floatX* dout, const floatX* u, const floatX* delta,
                                         const float* A_log, const floatX* Bm, const floatX* Cm,
                                         const float* D, const floatX* z, const float* delta_bias,
                                         const float* hs, int B, int L, int E, int N, GradWrite grad_write = GRAD_ADD) {
    if (B <= 0 || L <= 0 || E <= 0) return;
    if (selective_scan_backward_fast_ok(N, hs, Bm, Cm, dBm, dCm)) {
        selective_scan_backward_fast(du, ddelta, dA_log, dBm, dCm, dD, dz, ddelta_bias, dout, u, delta, A_log,
                                     Bm, Cm, D, z, delta_bias, hs, B, L, E, grad_write);
        return;
    }
    if (grad_write == GRAD_SET) scan_zero_input_grads(true, du, ddelta, dz, (size_t)B * L * E);  // the generic kernel adds
    ScanGenericKernels generic = scan_generic_kernels(N);
    dim3 grid(ceil_div(E, SCAN_THREADS / generic.G), B);
    generic.backward<<<grid, SCAN_THREADS, 0, launch_stream()>>>(du, ddelta, dA_log, dBm, dCm, dD, dz, ddelta_bias, dout, u, delta,
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
                                    const float* hs, int B, int L, int E, int N, GradWrite grad_write = GRAD_ADD) {
    if (on_gpu) GPU_CALL(selective_scan_backward_cuda(du, ddelta, dA_log, dBm, dCm, dD, dz, ddelta_bias, dout, u,
                                                      delta, A_log, Bm, Cm, D, z, delta_bias, hs, B, L, E, N, grad_write));
    else selective_scan_backward_cpu(du, ddelta, dA_log, dBm, dCm, dD, dz, ddelta_bias, dout, u, delta, A_log, Bm,
                                     Cm, D, z, delta_bias, hs, B, L, E, N, grad_write);
}
#ifdef __CUDACC__
// the same for bf16 activations (the GPU's fast kernels only: d_state 16 and the pointers they take)
static void selective_scan_forward(bool on_gpu, bf16* out, float* hs, const bf16* u, const bf16* delta, const float* A_log,
                                   const bf16* Bm, const bf16* Cm, const float* D, const bf16* z, const float* delta_bias,
                                   int B, int L, int E, int N) {
    if (!on_gpu || !selective_scan_forward_fast_ok(N, hs, Bm, Cm))
        FATAL("bf16 activations: the scan runs on the GPU's fast kernels only (d_state %d)", SCAN_FAST_N);
    selective_scan_forward_b16_cuda(out, hs, u, delta, A_log, Bm, Cm, D, z, delta_bias, B, L, E);
}
static void selective_scan_backward(bool on_gpu, bf16* du, bf16* ddelta, float* dA_log, float* dBm, float* dCm, float* dD,
                                    bf16* dz, float* ddelta_bias, const bf16* dout, const bf16* u, const bf16* delta,
                                    const float* A_log, const bf16* Bm, const bf16* Cm, const float* D, const bf16* z,
                                    const float* delta_bias, const float* hs, int B, int L, int E, int N,
                                    GradWrite grad_write = GRAD_ADD) {
    if (!on_gpu || !selective_scan_backward_fast_ok(N, hs, Bm, Cm, dBm, dCm))
        FATAL("bf16 activations: the scan runs on the GPU's fast kernels only (d_state %d)", SCAN_FAST_N);
    selective_scan_backward_b16_cuda(du, ddelta, dA_log, dBm, dCm, dD, dz, ddelta_bias, dout, u, delta, A_log, Bm, Cm, D, z,
                                     delta_bias, hs, B, L, E, grad_write);
}
#endif
