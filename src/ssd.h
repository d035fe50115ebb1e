// ssd.h: Mamba-2's SSD (structured state space duality): the scan whose decay is one scalar per
// head, so the whole sequence map is a 1-semiseparable matrix. Forward (three CPU paths that
// agree), backward, and one recurrent step for generation.
//
// Shapes (token-major, like every activation in this project):
//   x, y: (B, L, H, P)        dt: (B, L, H)          A, D: (H)
//   Bm, Cm: (B, L, G, N)      head h reads group g = h / (H / G)   (G divides H)
//   h0, final_state: (B, H, P, N)   h0 == nullptr: zeros; final_state == nullptr: not written
//
// The caller does the parameterisation: dt > 0 already (softplus(dt_raw + dt_bias)) and
// A = -exp(A_log) < 0, so the gradients here are dloss/ddt and dloss/dA.
//
// For every batch element b and head h (state (P, N), h_{-1} = h0):
//   a_t = exp(dt_t A)                                   (scalar decay, 0 < a_t < 1)
//   h_t = a_t h_{t-1} + dt_t x_t B_t^T                  (P, N)
//   y_t = h_t C_t + D x_t                               (P)
// Unrolled, with the 1-semiseparable mask M[t,s] = exp(sum_{k=s+1..t} dt_k A) for s <= t
// (M[t,t] = 1, 0 above the diagonal):
//   y = (M ∘ C B^T) (dt x) + diag(exp(sum_{k=0..t} dt_k A)) C h0^T + D x      ("quadratic" form)
// The exponents are segment sums of dt A <= 0; they are summed directly (or as differences of
// cumulative sums inside one chunk), so no exp of a large positive number is ever taken.
//
// Chunked algorithm (chunks of Q steps; cs[t] = sum of dt_k A from the chunk's first step to t):
//   1. diagonal blocks:  y_t  = sum_{s in chunk, s<=t} exp(cs_t - cs_s) (C_t . B_s) dt_s x_s + D x_t
//   2. chunk states:     S_c  = sum_{s in chunk c} exp(cs_last - cs_s) dt_s x_s B_s^T      (P, N)
//   3. state passing:    H_0 = h0;  H_{c+1} = exp(cs_last(c)) H_c + S_c;  final_state = H_nc
//   4. states to output: y_t += exp(cs_t) H_c C_t        (H_c: the state entering t's chunk)
//
// Backward (derived from the naive recurrence, walking t downwards; g_carry = d final_state or 0):
//   g       = g_carry + dy_t C_t^T                      (dloss/dh_t, (P, N))
//   dC_t   += h_t^T dy_t                                (summed over the heads of the group)
//   dB_t   += dt_t g^T x_t                              (summed over the heads of the group)
//   dx_t   += dt_t g B_t + D dy_t
//   ddt_t  += sum_{p,n} g ∘ (A a_t h_{t-1} + x_t B_t^T)
//   dA     += sum_{p,n} g ∘ (dt_t a_t h_{t-1})          (summed over t and b)
//   dD     += dy_t . x_t                                (summed over t and b)
//   g_carry = a_t g                                     (flows to h_{t-1});  dh0 += g_carry at t = 0
// The states h_t are recomputed: the forward states entering every SSD_CPU_BWD_CHUNK steps are
// kept, and each such stretch is recomputed before it is walked backwards.
//
// Determinism: every parallel loop runs over independent (b, h) or (b, h, chunk) tasks; every
// output element has one writer summing in a fixed order, and the sums over heads (dBm, dCm) and
// over b (dA, dD) go through per-task partial buffers added in order. The results are therefore
// the same bits for any number of OpenMP threads.
//
// Contents: the CPU reference (naive, quadratic and chunked forwards, backward, recurrent step);
// the CUDA versions of the chunked algorithm (the plain SIMT kernels, for any shape; the tensor-core
// kernels, for head dims P % 32 == 0 and d_state N of 64 or 128, the shapes of Mamba-2); the
// recurrent step on the GPU; the backend wrappers.
#pragma once
#include <initializer_list>
#include "common.h"

#define SSD_CPU_BWD_CHUNK 64  // steps between the states the CPU backward keeps

static void ssd_check_shape(const char* who, int B, int L, int H, int P, int G, int N) {
    if (B < 0 || L < 0 || H <= 0 || P <= 0 || G <= 0 || N <= 0 || H % G != 0)
        FATAL("%s: bad shape B=%d L=%d H=%d P=%d G=%d N=%d (G must divide H)", who, B, L, H, P, G, N);
}

// ---------------------------------------------------------------------------
// CPU reference

// One step of the recurrence for one (b, h): s (P, N) is updated in place, y (P) written.
//   xt (P), Bt, Ct (N): this step's rows; dt, A, D: scalars
static inline void ssd_step_head(floatX* y, float* s, const floatX* xt, float dt, float A, const floatX* Bt,
                                 const floatX* Ct, float D, int P, int N) {
    float a = expf(dt * A);
    for (int p = 0; p < P; p++) {
        float xp = (float)xt[p], dtx = dt * xp, acc = 0.0f;
        float* sp = s + (size_t)p * N;
        for (int n = 0; n < N; n++) {
            sp[n] = a * sp[n] + dtx * (float)Bt[n];
            acc += sp[n] * (float)Ct[n];
        }
        y[p] = (floatX)(acc + D * xp);
    }
}

// 1. the recurrence, step by step (the definition)
static void ssd_forward_naive_cpu(floatX* y, float* final_state, const floatX* x, const floatX* dt, const float* A,
                                  const floatX* Bm, const floatX* Cm, const float* D, const float* h0,
                                  int B, int L, int H, int P, int G, int N) {
    ssd_check_shape("ssd_forward_naive", B, L, H, P, G, N);
    int hpg = H / G;
    size_t PN = (size_t)P * N;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            int g = h / hpg;
            std::vector<float> s(PN, 0.0f);
            if (h0) for (size_t j = 0; j < PN; j++) s[j] = h0[((size_t)b * H + h) * PN + j];
            for (int t = 0; t < L; t++) {
                size_t bt = (size_t)b * L + t;
                ssd_step_head(y + (bt * H + h) * P, s.data(), x + (bt * H + h) * P, (float)dt[bt * H + h], A[h],
                              Bm + (bt * G + g) * N, Cm + (bt * G + g) * N, D[h], P, N);
            }
            if (final_state) for (size_t j = 0; j < PN; j++) final_state[((size_t)b * H + h) * PN + j] = s[j];
        }
    }
}

// 2. the quadratic (attention-like) form: per (b, h), the (L, L) matrix W = M ∘ C B^T times (dt x),
// plus the decayed initial state read by C. The mask's exponents are direct sums: walking s from
// t down to 0, seg = sum_{k=s+1..t} dt_k A is extended by one term per step.
static void ssd_forward_quadratic_cpu(floatX* y, float* final_state, const floatX* x, const floatX* dt,
                                      const float* A, const floatX* Bm, const floatX* Cm, const float* D,
                                      const float* h0, int B, int L, int H, int P, int G, int N) {
    ssd_check_shape("ssd_forward_quadratic", B, L, H, P, G, N);
    int hpg = H / G;
    size_t PN = (size_t)P * N;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            int g = h / hpg;
            auto X = [&](int t) { return x + (((size_t)b * L + t) * H + h) * P; };
            auto DT = [&](int t) { return (float)dt[((size_t)b * L + t) * H + h]; };
            auto Bs = [&](int t) { return Bm + (((size_t)b * L + t) * G + g) * N; };
            auto Cs = [&](int t) { return Cm + (((size_t)b * L + t) * G + g) * N; };
            const float* hb0 = h0 ? h0 + ((size_t)b * H + h) * PN : nullptr;
            // W[t, s] = M[t, s] (C_t . B_s) for s <= t (0 above); decay0[t] = exp(sum_{k=0..t} dt_k A)
            std::vector<float> W((size_t)L * L, 0.0f), decay0(L);
            for (int t = 0; t < L; t++) {
                float seg = 0.0f;  // sum_{k=s+1..t} dt_k A
                for (int s = t; s >= 0; s--) {
                    float cb = 0.0f;
                    for (int n = 0; n < N; n++) cb += (float)Cs(t)[n] * (float)Bs(s)[n];
                    W[(size_t)t * L + s] = expf(seg) * cb;
                    seg += DT(s) * A[h];
                }
                decay0[t] = expf(seg);  // seg = sum_{k=0..t} dt_k A
            }
            // y = W (dt x) + decay0 (h0 C) + D x
            for (int t = 0; t < L; t++) {
                floatX* yt = y + (((size_t)b * L + t) * H + h) * P;
                for (int p = 0; p < P; p++) {
                    float acc = 0.0f;
                    for (int s = 0; s <= t; s++) acc += W[(size_t)t * L + s] * DT(s) * (float)X(s)[p];
                    if (hb0) {
                        float hc = 0.0f;
                        for (int n = 0; n < N; n++) hc += hb0[(size_t)p * N + n] * (float)Cs(t)[n];
                        acc += decay0[t] * hc;
                    }
                    yt[p] = (floatX)(acc + D[h] * (float)X(t)[p]);
                }
            }
            // final state = sum_s M[L-1, s] dt_s x_s B_s^T + decay0[L-1] h0 (the last row of the mask)
            if (final_state) {
                float* fs = final_state + ((size_t)b * H + h) * PN;
                for (size_t j = 0; j < PN; j++) fs[j] = 0.0f;
                float seg = 0.0f;  // sum_{k=s+1..L-1} dt_k A
                for (int s = L - 1; s >= 0; s--) {
                    float w = expf(seg) * DT(s);
                    for (int p = 0; p < P; p++) {
                        float wx = w * (float)X(s)[p];
                        for (int n = 0; n < N; n++) fs[(size_t)p * N + n] += wx * (float)Bs(s)[n];
                    }
                    seg += DT(s) * A[h];
                }
                if (hb0) {
                    float d0 = expf(seg);
                    for (size_t j = 0; j < PN; j++) fs[j] += d0 * hb0[j];
                }
            }
        }
    }
}

// 3. the chunked algorithm (chunks of `chunk` steps, the last one possibly shorter), in its four
// steps with the intermediate tensors in between:
//   cs: (B, H, L)            cumulative sum of dt A within each chunk
//   S:  (B, H, nc, P, N)     step 2: each chunk's final state from its own inputs
//   Hin:(B, H, nc, P, N)     step 3: the state entering each chunk
static void ssd_forward_chunked_cpu(floatX* y, float* final_state, const floatX* x, const floatX* dt,
                                    const float* A, const floatX* Bm, const floatX* Cm, const float* D,
                                    const float* h0, int B, int L, int H, int P, int G, int N, int chunk) {
    ssd_check_shape("ssd_forward_chunked", B, L, H, P, G, N);
    if (chunk <= 0) FATAL("ssd_forward_chunked: chunk=%d must be positive", chunk);
    int hpg = H / G;
    int nc = (L + chunk - 1) / chunk;
    size_t PN = (size_t)P * N;
    std::vector<float> cs((size_t)B * H * L), S((size_t)B * H * nc * PN), Hin((size_t)B * H * nc * PN);
    auto xrow = [&](int b, int t, int h) { return x + (((size_t)b * L + t) * H + h) * P; };
    auto dtv = [&](int b, int t, int h) { return (float)dt[((size_t)b * L + t) * H + h]; };
    auto Brow = [&](int b, int t, int h) { return Bm + (((size_t)b * L + t) * G + h / hpg) * N; };
    auto Crow = [&](int b, int t, int h) { return Cm + (((size_t)b * L + t) * G + h / hpg) * N; };

    // 0. cumulative sums of dt A, restarted at every chunk
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            float* c = cs.data() + ((size_t)b * H + h) * L;
            float acc = 0.0f;
            for (int t = 0; t < L; t++) {
                if (t % chunk == 0) acc = 0.0f;
                acc += dtv(b, t, h) * A[h];
                c[t] = acc;
            }
        }

    // 1. diagonal blocks and 2. chunk states: independent per (b, h, chunk)
    #pragma omp parallel for collapse(3) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int c = 0; c < nc; c++) {
                int t0 = c * chunk, len = L - t0 < chunk ? L - t0 : chunk;
                const float* csb = cs.data() + ((size_t)b * H + h) * L;
                // 1. y_t = sum_{s<=t in chunk} exp(cs_t - cs_s) (C_t . B_s) dt_s x_s + D x_t
                std::vector<float> w(len);
                for (int i = 0; i < len; i++) {
                    int t = t0 + i;
                    const floatX* Ct = Crow(b, t, h);
                    for (int j = 0; j <= i; j++) {
                        int s = t0 + j;
                        const floatX* Bs = Brow(b, s, h);
                        float cb = 0.0f;
                        for (int n = 0; n < N; n++) cb += (float)Ct[n] * (float)Bs[n];
                        w[j] = expf(csb[t] - csb[s]) * cb * dtv(b, s, h);
                    }
                    floatX* yt = y + (((size_t)b * L + t) * H + h) * P;
                    const floatX* xt = xrow(b, t, h);
                    for (int p = 0; p < P; p++) {
                        float acc = 0.0f;
                        for (int j = 0; j <= i; j++) acc += w[j] * (float)xrow(b, t0 + j, h)[p];
                        yt[p] = (floatX)(acc + D[h] * (float)xt[p]);
                    }
                }
                // 2. S_c = sum_{s in chunk} exp(cs_last - cs_s) dt_s x_s B_s^T
                float* Sc = S.data() + (((size_t)b * H + h) * nc + c) * PN;
                for (size_t j = 0; j < PN; j++) Sc[j] = 0.0f;
                float cs_last = csb[t0 + len - 1];
                for (int j = 0; j < len; j++) {
                    int s = t0 + j;
                    float wdt = expf(cs_last - csb[s]) * dtv(b, s, h);
                    const floatX* xs = xrow(b, s, h);
                    const floatX* Bs = Brow(b, s, h);
                    for (int p = 0; p < P; p++) {
                        float wx = wdt * (float)xs[p];
                        for (int n = 0; n < N; n++) Sc[(size_t)p * N + n] += wx * (float)Bs[n];
                    }
                }
            }

    // 3. state passing: H_0 = h0, H_{c+1} = exp(cs_last(c)) H_c + S_c, sequential over chunks
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float* csb = cs.data() + ((size_t)b * H + h) * L;
            std::vector<float> st(PN, 0.0f);
            if (h0) for (size_t j = 0; j < PN; j++) st[j] = h0[((size_t)b * H + h) * PN + j];
            for (int c = 0; c < nc; c++) {
                size_t off = (((size_t)b * H + h) * nc + c) * PN;
                int last = (c + 1) * chunk < L ? (c + 1) * chunk - 1 : L - 1;
                float decay = expf(csb[last]);  // the whole chunk's decay
                for (size_t j = 0; j < PN; j++) {
                    Hin[off + j] = st[j];
                    st[j] = decay * st[j] + S[off + j];
                }
            }
            if (final_state) for (size_t j = 0; j < PN; j++) final_state[((size_t)b * H + h) * PN + j] = st[j];
        }

    // 4. states to outputs: y_t += exp(cs_t) H_c C_t
    #pragma omp parallel for collapse(3) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int c = 0; c < nc; c++) {
                if (c == 0 && !h0) continue;  // nothing enters the first chunk
                int t0 = c * chunk, len = L - t0 < chunk ? L - t0 : chunk;
                const float* csb = cs.data() + ((size_t)b * H + h) * L;
                const float* Hc = Hin.data() + (((size_t)b * H + h) * nc + c) * PN;
                for (int i = 0; i < len; i++) {
                    int t = t0 + i;
                    float decay = expf(csb[t]);
                    const floatX* Ct = Crow(b, t, h);
                    floatX* yt = y + (((size_t)b * L + t) * H + h) * P;
                    for (int p = 0; p < P; p++) {
                        float hc = 0.0f;
                        for (int n = 0; n < N; n++) hc += Hc[(size_t)p * N + n] * (float)Ct[n];
                        yt[p] = (floatX)((float)yt[p] + decay * hc);
                    }
                }
            }
}

// Backward of all three forwards (they compute the same function), written from the naive
// recurrence (see the top of the file). dy: (B, L, H, P); dfinal_state: (B, H, P, N) or nullptr
// (no gradient reaches the final state). Every gradient is ACCUMULATED (+=); any gradient pointer
// may be nullptr to skip it. The forward states are recomputed from the inputs here.
// GRAD_SET where the backward adds (the CPU, the plain CUDA kernels): dx, ddt, dBm, dCm (any may be
// nullptr) zeroed first
static void ssd_zero_input_grads(bool on_gpu, floatX* dx, floatX* ddt, floatX* dBm, floatX* dCm, int B, int L, int H, int P,
                                 int G, int N) {
    size_t BL = (size_t)B * L;
    if (dx) backend_memset0(on_gpu, dx, BL * H * P * sizeof(floatX));
    if (ddt) backend_memset0(on_gpu, ddt, BL * H * sizeof(floatX));
    if (dBm) backend_memset0(on_gpu, dBm, BL * G * N * sizeof(floatX));
    if (dCm) backend_memset0(on_gpu, dCm, BL * G * N * sizeof(floatX));
}

static void ssd_backward_cpu(floatX* dx, floatX* ddt, float* dA, floatX* dBm, floatX* dCm, float* dD, float* dh0,
                             const floatX* dy, const float* dfinal_state, const floatX* x, const floatX* dt,
                             const float* A, const floatX* Bm, const floatX* Cm, const float* D, const float* h0,
                             int B, int L, int H, int P, int G, int N, GradWrite grad_write = GRAD_ADD) {
    ssd_check_shape("ssd_backward", B, L, H, P, G, N);
    if (grad_write == GRAD_SET) ssd_zero_input_grads(false, dx, ddt, dBm, dCm, B, L, H, P, G, N);
    int hpg = H / G;
    size_t PN = (size_t)P * N, LN = (size_t)L * N;
    int nck = (L + SSD_CPU_BWD_CHUNK - 1) / SSD_CPU_BWD_CHUNK;
    // per-(b, h) partial sums: dB, dC over (L, N) (summed over the group's heads below), dA, dD
    std::vector<float> dB_part(dBm ? (size_t)B * H * LN : 0, 0.0f), dC_part(dCm ? (size_t)B * H * LN : 0, 0.0f);
    std::vector<float> dA_part((size_t)B * H, 0.0f), dD_part((size_t)B * H, 0.0f);

    #pragma omp parallel for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            int g = h / hpg;
            size_t bh = (size_t)b * H + h;
            float Ah = A[h], Dh = D[h];
            auto xrow = [&](int t) { return x + (((size_t)b * L + t) * H + h) * P; };
            auto Brow = [&](int t) { return Bm + (((size_t)b * L + t) * G + g) * N; };
            auto Crow = [&](int t) { return Cm + (((size_t)b * L + t) * G + g) * N; };
            auto DT = [&](int t) { return (float)dt[((size_t)b * L + t) * H + h]; };
            // forward: keep the state entering every SSD_CPU_BWD_CHUNK steps
            std::vector<float> ck((size_t)nck * PN), s(PN, 0.0f);
            if (h0) for (size_t j = 0; j < PN; j++) s[j] = h0[bh * PN + j];
            for (int t = 0; t < L; t++) {
                if (t % SSD_CPU_BWD_CHUNK == 0)
                    for (size_t j = 0; j < PN; j++) ck[(size_t)(t / SSD_CPU_BWD_CHUNK) * PN + j] = s[j];
                float a = expf(DT(t) * Ah);
                const floatX* xt = xrow(t);
                const floatX* Bt = Brow(t);
                for (int p = 0; p < P; p++) {
                    float dtx = DT(t) * (float)xt[p];
                    for (int n = 0; n < N; n++) s[(size_t)p * N + n] = a * s[(size_t)p * N + n] + dtx * (float)Bt[n];
                }
            }
            // reverse: g_carry = dloss/dh_t from later steps
            std::vector<float> carry(PN, 0.0f), hist((size_t)(SSD_CPU_BWD_CHUNK + 1) * PN);
            if (dfinal_state) for (size_t j = 0; j < PN; j++) carry[j] = dfinal_state[bh * PN + j];
            float dA_acc = 0.0f, dD_acc = 0.0f;
            for (int c = nck - 1; c >= 0; c--) {
                int t0 = c * SSD_CPU_BWD_CHUNK;
                int len = L - t0 < SSD_CPU_BWD_CHUNK ? L - t0 : SSD_CPU_BWD_CHUNK;
                // recompute this stretch's states: hist row k = h_{t0+k-1} (row 0: the state entering)
                for (size_t j = 0; j < PN; j++) hist[j] = ck[(size_t)c * PN + j];
                for (int k = 0; k < len; k++) {
                    int t = t0 + k;
                    float a = expf(DT(t) * Ah);
                    const floatX* xt = xrow(t);
                    const floatX* Bt = Brow(t);
                    const float* hp = &hist[(size_t)k * PN];
                    float* hn = &hist[(size_t)(k + 1) * PN];
                    for (int p = 0; p < P; p++) {
                        float dtx = DT(t) * (float)xt[p];
                        for (int n = 0; n < N; n++) hn[(size_t)p * N + n] = a * hp[(size_t)p * N + n] + dtx * (float)Bt[n];
                    }
                }
                for (int k = len - 1; k >= 0; k--) {
                    int t = t0 + k;
                    size_t bt = (size_t)b * L + t;
                    float dtt = DT(t), a = expf(dtt * Ah);
                    const float* hp = &hist[(size_t)k * PN];        // h_{t-1}
                    const float* ht = &hist[(size_t)(k + 1) * PN];  // h_t
                    const floatX* xt = xrow(t);
                    const floatX* Bt = Brow(t);
                    const floatX* Ct = Crow(t);
                    const floatX* dyt = dy + (bt * H + h) * P;
                    float* dBt = dBm ? &dB_part[bh * LN + (size_t)t * N] : nullptr;
                    float* dCt = dCm ? &dC_part[bh * LN + (size_t)t * N] : nullptr;
                    float q = 0.0f;   // sum g ∘ a h_{t-1}
                    float xb = 0.0f;  // sum g ∘ x B^T
                    for (int p = 0; p < P; p++) {
                        float dyp = (float)dyt[p], xp = (float)xt[p];
                        float gB = 0.0f;  // sum_n g[p, n] B[n]
                        for (int n = 0; n < N; n++) {
                            size_t j = (size_t)p * N + n;
                            float gj = carry[j] + dyp * (float)Ct[n];  // dloss/dh_t
                            if (dCt) dCt[n] += dyp * ht[j];
                            if (dBt) dBt[n] += gj * dtt * xp;
                            gB += gj * (float)Bt[n];
                            q += gj * a * hp[j];
                            carry[j] = a * gj;  // flows to h_{t-1}
                        }
                        xb += gB * xp;
                        if (dx) dx[(bt * H + h) * P + p] = (floatX)((float)dx[(bt * H + h) * P + p] + dtt * gB + Dh * dyp);
                        dD_acc += dyp * xp;
                    }
                    if (ddt) ddt[bt * H + h] = (floatX)((float)ddt[bt * H + h] + Ah * q + xb);
                    dA_acc += dtt * q;
                }
            }
            if (dh0) for (size_t j = 0; j < PN; j++) dh0[bh * PN + j] += carry[j];
            dA_part[bh] = dA_acc;
            dD_part[bh] = dD_acc;
        }
    }
    // dBm, dCm += the sums over the group's heads, in head order
    if (dBm || dCm) {
        #pragma omp parallel for collapse(3) schedule(static)
        for (int b = 0; b < B; b++)
            for (int t = 0; t < L; t++)
                for (int g = 0; g < G; g++)
                    for (int n = 0; n < N; n++) {
                        size_t o = (((size_t)b * L + t) * G + g) * N + n;
                        float sb = 0.0f, sc = 0.0f;
                        for (int h = g * hpg; h < (g + 1) * hpg; h++) {
                            size_t j = ((size_t)b * H + h) * LN + (size_t)t * N + n;
                            if (dBm) sb += dB_part[j];
                            if (dCm) sc += dC_part[j];
                        }
                        if (dBm) dBm[o] = (floatX)((float)dBm[o] + sb);
                        if (dCm) dCm[o] = (floatX)((float)dCm[o] + sc);
                    }
    }
    // dA, dD += the sums over the batch, in batch order
    for (int h = 0; h < H; h++) {
        float sa = 0.0f, sd = 0.0f;
        for (int b = 0; b < B; b++) { sa += dA_part[(size_t)b * H + h]; sd += dD_part[(size_t)b * H + h]; }
        if (dA) dA[h] += sa;
        if (dD) dD[h] += sd;
    }
}

// one recurrent step for generation (one step of the naive recurrence, the same arithmetic):
//   y, x: (B, H, P)   dt: (B, H)   Bm, Cm: (B, G, N)   state: (B, H, P, N), updated in place
static void ssd_step_cpu(floatX* y, float* state, const floatX* x, const floatX* dt, const float* A,
                         const floatX* Bm, const floatX* Cm, const float* D, int B, int H, int P, int G, int N) {
    ssd_check_shape("ssd_step", B, 1, H, P, G, N);
    int hpg = H / G;
    size_t PN = (size_t)P * N;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            size_t bh = (size_t)b * H + h;
            ssd_step_head(y + bh * P, state + bh * PN, x + bh * P, (float)dt[bh], A[h],
                          Bm + ((size_t)b * G + h / hpg) * N, Cm + ((size_t)b * G + h / hpg) * N, D[h], P, N);
        }
}

// ---------------------------------------------------------------------------
// CUDA

#ifdef __CUDACC__
// ssd_forward_cuda / ssd_backward_cuda (bottom of this section) take the tensor-core kernels
// (ssd_tc_*, after these) when the shape and the pointers allow it, else these plain ones.
//
// The plain kernels: the chunked algorithm in SIMT fp32, one thread block per (chunk, head, batch)
// (dev/ssd.cu's v3; it times both paths against the floor and the official Triton kernels). The kernels use
// chunks of SSD_CUDA_CHUNK steps whatever `chunk` the caller passes (the result does not
// depend on it). Per chunk c of (b, h), cs[t] = sum of dt_k A from the chunk's first step to t
// (computed serially by one thread, in the same order in every kernel), cl = cs[last]:
//   forward:  1. S_c = sum_s exp(cl - cs_s) dt_s x_s B_s^T                  ssd_outer_kernel
//             2. H_0 = h0, H_{c+1} = exp(cl_c) H_c + S_c (in place: S_c -> H_c)  ssd_pass_kernel
//             3. y_t = sum_{s<=t} exp(cs_t - cs_s) (C_t.B_s) dt_s x_s
//                      + exp(cs_t) H_c C_t + D x_t                            ssd_out_kernel
//   backward (the states H_c recomputed by 1 and 2):
//             4. L_c = sum_t exp(cs_t) dy_t C_t^T  (dloss/dH_c through chunk c's outputs)
//             5. G_nc = dfinal; dS_c = G_{c+1}; G_c = L_c + exp(cl_c) G_{c+1};
//                dcl_c = exp(cl_c) <G_{c+1}, H_c>; dh0 = G_0                 ssd_pass_backward_kernel
//             6. per chunk: dX_s = d(dt_s x_s) (intra-chunk and through S_c), dx, ddt,
//                dC (intra + exp(cs_t) dy_t H_c), dB (intra + through S_c), dD, and
//                d(cs_t), turned into ddt and dA by a reverse cumulative sum   ssd_chunk_backward_kernel
// dBm, dCm (shared by the heads of a group) are summed from per-head parts; dA and dD (summed
// over chunks and b) use one float atomic per block (none when the caller's pointer is nullptr), and
// shared-memory float atomics sum d(cs) inside a block: these plain kernels' bits may vary from run
// to run (the tensor-core kernels' do not).
#define SSD_CUDA_CHUNK 64

// cs[0..Qc) and dts[0..Qc) of chunk (b, h, t0); thread 0, then a barrier
__device__ static void ssd_chunk_cumsum(float* cs, float* dts, const floatX* dt, float A, int b, int h, int t0, int Qc, int L, int H) {
    if (threadIdx.x == 0) {
        float run = 0.0f;
        for (int i = 0; i < Qc; i++) {
            float d = (float)dt[((size_t)b * L + t0 + i) * H + h];
            dts[i] = d; run += d * A; cs[i] = run;
        }
    }
    __syncthreads();
}

// Gm[t][s] = exp(cs_t - cs_s) C_t . B_s for s <= t, 0 above the diagonal: the chunk's masked, decayed
// C·Bᵀ (rows of SSD_CUDA_CHUNK floats; Cs, Bs rows of NS floats). The forward's outputs and the
// backward use this one helper (the tensor-core path: ssd_tc_cb_kernel and ssd_tc_decay).
__device__ static void ssd_masked_cb(float* Gm, const float* Cs, const float* Bs, const float* cs, int Qc, int NS, int N) {
    for (int i = threadIdx.x; i < Qc * Qc; i += blockDim.x) {
        int t = i / Qc, s = i % Qc;
        float acc = 0.0f;
        if (s <= t) {
            for (int n = 0; n < N; n++) acc += Cs[t * NS + n] * Bs[s * NS + n];
            acc *= expf(cs[t] - cs[s]);
        }
        Gm[t * SSD_CUDA_CHUNK + s] = acc;
    }
}

// out (P, N) = sum_s w_s u_s v_s^T over one chunk. mode 0 (chunk state): u = x, v = B,
// w = exp(cl - cs_s) dt_s. mode 1 (step 4): u = dy, v = C, w = exp(cs_s).
// grid (nc, H, B); out: (B, nc, H, P, N)
__global__ void ssd_outer_kernel(float* out, const floatX* u, const floatX* dt, const float* A, const floatX* v,
                                 int B, int L, int H, int P, int G, int N, int mode) {
    extern __shared__ float sm[];
    const int Q = SSD_CUDA_CHUNK;
    int c = blockIdx.x, h = blockIdx.y, b = blockIdx.z, nc = gridDim.x, g = h / (H / G);
    int t0 = c * Q, Qc = min(Q, L - t0);
    float *cs = sm, *dts = cs + Q, *w = dts + Q, *us = w + Q, *vs = us + Q * P;
    ssd_chunk_cumsum(cs, dts, dt, A[h], b, h, t0, Qc, L, H);
    for (int i = threadIdx.x; i < Qc; i += blockDim.x)
        w[i] = mode == 0 ? expf(cs[Qc - 1] - cs[i]) * dts[i] : expf(cs[i]);
    for (int i = threadIdx.x; i < Qc * P; i += blockDim.x) {
        int s = i / P, p = i % P;
        us[i] = (float)u[(((size_t)b * L + t0 + s) * H + h) * P + p];
    }
    for (int i = threadIdx.x; i < Qc * N; i += blockDim.x) {
        int s = i / N, n = i % N;
        vs[i] = (float)v[(((size_t)b * L + t0 + s) * G + g) * N + n];
    }
    __syncthreads();
    float* o = out + (((size_t)b * nc + c) * H + h) * P * N;
    for (int i = threadIdx.x; i < P * N; i += blockDim.x) {
        int p = i / N, n = i % N;
        float acc = 0.0f;
        for (int s = 0; s < Qc; s++) acc += w[s] * us[s * P + p] * vs[s * N + n];
        o[i] = acc;
    }
}

// sum of dt A over each chunk (the same serial order as ssd_chunk_cumsum), into cl[0..nc)
__device__ static void ssd_chunk_totals(float* cl, const floatX* dt, float A, int b, int h, int L, int H, int nc) {
    for (int c = threadIdx.x; c < nc; c += blockDim.x) {
        int t0 = c * SSD_CUDA_CHUNK, Qc = min(SSD_CUDA_CHUNK, L - t0);
        float run = 0.0f;
        for (int i = 0; i < Qc; i++) run += (float)dt[((size_t)b * L + t0 + i) * H + h] * A;
        cl[c] = run;
    }
    __syncthreads();
}

// step 2, in place: S (B, nc, H, P, N) becomes the states entering each chunk; grid (H, B)
__global__ void ssd_pass_kernel(float* S, float* final_state, const float* h0, const floatX* dt, const float* A,
                                int L, int H, int P, int N, int nc) {
    extern __shared__ float cl[];
    int h = blockIdx.x, b = blockIdx.y;
    ssd_chunk_totals(cl, dt, A[h], b, h, L, H, nc);
    size_t PN = (size_t)P * N;
    for (size_t i = threadIdx.x; i < PN; i += blockDim.x) {
        float st = h0 ? h0[((size_t)b * H + h) * PN + i] : 0.0f;
        for (int c = 0; c < nc; c++) {
            float* s = S + (((size_t)b * nc + c) * H + h) * PN + i;
            float chunk_state = *s;
            *s = st;
            st = expf(cl[c]) * st + chunk_state;
        }
        if (final_state) final_state[((size_t)b * H + h) * PN + i] = st;
    }
}

// step 3: y for one chunk; grid (nc, H, B)
__global__ void ssd_out_kernel(floatX* y, const floatX* x, const floatX* dt, const float* A, const floatX* Bm,
                               const floatX* Cm, const float* D, const float* Hin, int B, int L, int H, int P, int G,
                               int N) {
    extern __shared__ float sm[];
    const int Q = SSD_CUDA_CHUNK;
    int c = blockIdx.x, h = blockIdx.y, b = blockIdx.z, nc = gridDim.x, g = h / (H / G);
    int t0 = c * Q, Qc = min(Q, L - t0);
    // rows of N padded to NS = N + 1 floats: a warp reading one column of different rows
    // (B_s[n] for 32 values of s, H[p][n] for 32 values of p) hits 32 different banks
    const int NS = N + 1;
    float *cs = sm, *dts = cs + Q, *Bs = dts + Q, *Cs = Bs + Q * NS, *Xs = Cs + Q * NS, *Gm = Xs + Q * P, *Hs = Gm + Q * Q;
    ssd_chunk_cumsum(cs, dts, dt, A[h], b, h, t0, Qc, L, H);
    for (int i = threadIdx.x; i < Qc * N; i += blockDim.x) {
        int s = i / N, n = i % N;
        size_t at = (((size_t)b * L + t0 + s) * G + g) * N + n;
        Bs[s * NS + n] = (float)Bm[at]; Cs[s * NS + n] = (float)Cm[at];
    }
    for (int i = threadIdx.x; i < Qc * P; i += blockDim.x) {
        int s = i / P, p = i % P;
        Xs[i] = dts[s] * (float)x[(((size_t)b * L + t0 + s) * H + h) * P + p];
    }
    const float* Hc = Hin + (((size_t)b * nc + c) * H + h) * P * N;
    for (int i = threadIdx.x; i < P * N; i += blockDim.x) Hs[(i / N) * NS + i % N] = Hc[i];
    __syncthreads();
    ssd_masked_cb(Gm, Cs, Bs, cs, Qc, NS, N);
    __syncthreads();
    for (int i = threadIdx.x; i < Qc * P; i += blockDim.x) {
        int t = i / P, p = i % P;
        float acc = 0.0f, inter = 0.0f;
        for (int s = 0; s <= t; s++) acc += Gm[t * Q + s] * Xs[s * P + p];
        for (int n = 0; n < N; n++) inter += Hs[p * NS + n] * Cs[t * NS + n];
        size_t at = (((size_t)b * L + t0 + t) * H + h) * P + p;
        y[at] = (floatX)(acc + expf(cs[t]) * inter + D[h] * (float)x[at]);
    }
}

// step 5, in place: dS (B, nc, H, P, N) holds L_c on entry, dS_c = G_{c+1} on exit; dcl (B, nc, H)
__global__ void ssd_pass_backward_kernel(float* dS, float* dcl, float* dh0, const float* dfinal, const float* Hin,
                                         const floatX* dt, const float* A, int L, int H, int P, int N, int nc) {
    extern __shared__ float sm[];
    float *cl = sm, *dcl_s = sm + nc;
    int h = blockIdx.x, b = blockIdx.y;
    for (int c = threadIdx.x; c < nc; c += blockDim.x) dcl_s[c] = 0.0f;
    ssd_chunk_totals(cl, dt, A[h], b, h, L, H, nc);
    size_t PN = (size_t)P * N;
    for (size_t i = threadIdx.x; i < PN; i += blockDim.x) {
        float G = dfinal ? dfinal[((size_t)b * H + h) * PN + i] : 0.0f;
        for (int c = nc - 1; c >= 0; c--) {
            size_t at = (((size_t)b * nc + c) * H + h) * PN + i;
            float local = dS[at], e = expf(cl[c]);
            dS[at] = G;
            atomicAdd(&dcl_s[c], e * G * Hin[at]);
            G = local + e * G;
        }
        if (dh0) dh0[((size_t)b * H + h) * PN + i] += G;
    }
    __syncthreads();
    for (int c = threadIdx.x; c < nc; c += blockDim.x) dcl[((size_t)b * nc + c) * H + h] = dcl_s[c];
}

// step 6 for one chunk; grid (nc, H, B)
// dBh, dCh: (B, L, H, N) per-head parts of dB and dC (ssd_group_sum_kernel adds them up per
// group: the 24 heads of a group adding into one row with atomics serialised in v2).
// Reductions over a warp's lanes use shuffles where a warp shares the index (rows of 32k).
__global__ void ssd_chunk_backward_kernel(floatX* dx, floatX* ddt, float* dA, float* dBh, float* dCh, float* dD,
                                          const floatX* dy, const floatX* x, const floatX* dt, const float* A,
                                          const floatX* Bm, const floatX* Cm, const float* D, const float* Hin,
                                          const float* dS, const float* dcl, int B, int L, int H, int P, int G, int N) {
    extern __shared__ float sm[];
    const int Q = SSD_CUDA_CHUNK;
    int c = blockIdx.x, h = blockIdx.y, b = blockIdx.z, nc = gridDim.x, g = h / (H / G);
    int t0 = c * Q, Qc = min(Q, L - t0), last = Qc - 1;
    // padded rows (see ssd_out_kernel): N -> NS for B, C, H, dS; P -> PS for x
    const int NS = N + 1, PS = P + 1;
    float *cs = sm, *dts = cs + Q, *da = dts + Q, *ddt_s = da + Q, *red = ddt_s + Q;
    float *Bs = red + 2, *Cs = Bs + Q * NS, *Xr = Cs + Q * NS, *dY = Xr + Q * PS, *Gm = dY + Q * P;
    float *Hs = Gm + Q * Q, *dSs = Hs + P * NS;
    ssd_chunk_cumsum(cs, dts, dt, A[h], b, h, t0, Qc, L, H);
    for (int i = threadIdx.x; i < Q; i += blockDim.x) { da[i] = 0.0f; ddt_s[i] = 0.0f; }
    if (threadIdx.x == 0) { red[0] = 0.0f; red[1] = 0.0f; }
    for (int i = threadIdx.x; i < Qc * N; i += blockDim.x) {
        int s = i / N, n = i % N;
        size_t at = (((size_t)b * L + t0 + s) * G + g) * N + n;
        Bs[s * NS + n] = (float)Bm[at]; Cs[s * NS + n] = (float)Cm[at];
    }
    for (int i = threadIdx.x; i < Qc * P; i += blockDim.x) {
        int s = i / P, p = i % P;
        size_t at = (((size_t)b * L + t0 + s) * H + h) * P + p;
        Xr[s * PS + p] = (float)x[at]; dY[i] = (float)dy[at];
    }
    size_t off = (((size_t)b * nc + c) * H + h) * P * N;
    for (int i = threadIdx.x; i < P * N; i += blockDim.x) {
        int p = i / N, n = i % N;
        Hs[p * NS + n] = Hin[off + i]; dSs[p * NS + n] = dS[off + i];
    }
    __syncthreads();
    if (threadIdx.x == 0) da[last] += dcl[((size_t)b * nc + c) * H + h];  // through the state passing
    ssd_masked_cb(Gm, Cs, Bs, cs, Qc, NS, N);
    __syncthreads();
    // dX_s[p] (X = dt x): intra-chunk outputs and the chunk state; then dx, ddt's direct part
    float dD_local = 0.0f, dcl_local = 0.0f;  // this thread's share of dD and of d(cs_last)
    const bool warp_rows_P = P % 32 == 0, warp_rows_N = N % 32 == 0, warp_rows_Q = Qc % 32 == 0;
    for (int i = threadIdx.x; i < Qc * P; i += blockDim.x) {
        int s = i / P, p = i % P;
        float acc = 0.0f, via_state = 0.0f;
        for (int t = s; t < Qc; t++) acc += Gm[t * Q + s] * dY[t * P + p];
        for (int n = 0; n < N; n++) via_state += dSs[p * NS + n] * Bs[s * NS + n];
        float dX = acc + expf(cs[last] - cs[s]) * via_state, xv = Xr[s * PS + p];
        size_t at = (((size_t)b * L + t0 + s) * H + h) * P + p;
        dx[at] = (floatX)((float)dx[at] + dts[s] * dX + D[h] * dY[i]);
        dD_local += dY[i] * xv;
        if (warp_rows_P) {  // the warp's 32 lanes share s
            float v = warp_sum(xv * dX);
            if ((threadIdx.x & 31) == 0) atomicAdd(&ddt_s[s], v);
        } else {
            atomicAdd(&ddt_s[s], xv * dX);
        }
    }
    __syncthreads();
    // dG[t][s] = exp(cs_t - cs_s) dy_t . (dt_s x_s), replacing Gm; d(cs) from the mask's exponent:
    // the coefficient of exp(cs_t - cs_s) is dG * (C_t . B_s) = dt_s (dy_t . x_s) Gm[t][s]
    for (int i = threadIdx.x; i < Qc * Qc; i += blockDim.x) {
        int t = i / Qc, s = i % Qc;
        float m = 0.0f;
        if (s <= t) {
            float dot = 0.0f;
            for (int p = 0; p < P; p++) dot += dY[t * P + p] * Xr[s * PS + p];
            dot *= dts[s];
            if (s < t) m = dot * Gm[t * Q + s];
            Gm[t * Q + s] = expf(cs[t] - cs[s]) * dot;
        }
        if (m != 0.0f) atomicAdd(&da[s], -m);  // different s per lane
        if (warp_rows_Q) {                     // the warp shares t
            float v = warp_sum(m);
            if ((threadIdx.x & 31) == 0) atomicAdd(&da[t], v);
        } else if (m != 0.0f) {
            atomicAdd(&da[t], m);
        }
    }
    __syncthreads();
    // dC_t = sum_{s<=t} dG[t][s] B_s + exp(cs_t) H_c^T dy_t;  d(cs_t) from the state read
    for (int i = threadIdx.x; i < Qc * N; i += blockDim.x) {
        int t = i / N, n = i % N;
        float intra = 0.0f, inter = 0.0f;
        for (int s = 0; s <= t; s++) intra += Gm[t * Q + s] * Bs[s * NS + n];
        for (int p = 0; p < P; p++) inter += dY[t * P + p] * Hs[p * NS + n];
        inter *= expf(cs[t]);
        dCh[(((size_t)b * L + t0 + t) * H + h) * N + n] = intra + inter;
        float m = Cs[t * NS + n] * inter;
        if (warp_rows_N) {  // the warp shares t
            m = warp_sum(m);
            if ((threadIdx.x & 31) == 0) atomicAdd(&da[t], m);
        } else {
            atomicAdd(&da[t], m);
        }
    }
    // dB_s = sum_{t>=s} dG[t][s] C_t + exp(cl - cs_s) dt_s dS_c^T x_s;  d(cs) from the chunk state
    for (int i = threadIdx.x; i < Qc * N; i += blockDim.x) {
        int s = i / N, n = i % N;
        float intra = 0.0f, via_state = 0.0f;
        for (int t = s; t < Qc; t++) intra += Gm[t * Q + s] * Cs[t * NS + n];
        for (int p = 0; p < P; p++) via_state += dSs[p * NS + n] * Xr[s * PS + p];
        float w = expf(cs[last] - cs[s]) * dts[s] * via_state;
        dBh[(((size_t)b * L + t0 + s) * H + h) * N + n] = intra + w;
        float k = s < last ? Bs[s * NS + n] * w : 0.0f;
        dcl_local += k;
        if (warp_rows_N) {  // the warp shares s
            k = warp_sum(k);
            if ((threadIdx.x & 31) == 0) atomicAdd(&da[s], -k);
        } else {
            atomicAdd(&da[s], -k);
        }
    }
    // the block's sums of dD and d(cs_last): one shuffle reduction per warp, then shared atomics
    dD_local = warp_sum(dD_local);
    dcl_local = warp_sum(dcl_local);
    if ((threadIdx.x & 31) == 0) { atomicAdd(&red[0], dD_local); atomicAdd(&da[last], dcl_local); }
    __syncthreads();
    // cs_t = sum_{k<=t} dt_k A: ddt_k += A sum_{t>=k} d(cs_t), dA += sum_k dt_k sum_{t>=k} d(cs_t)
    if (threadIdx.x == 0) {
        float run = 0.0f, a_acc = 0.0f;
        for (int k = last; k >= 0; k--) { run += da[k]; ddt_s[k] += A[h] * run; a_acc += dts[k] * run; }
        if (dA) atomicAdd(&dA[h], a_acc);  // nullptr: frozen (d(cs) still feeds ddt above)
        if (dD) atomicAdd(&dD[h], red[0]);
    }
    __syncthreads();
    for (int k = threadIdx.x; k < Qc; k += blockDim.x) {
        size_t at = ((size_t)b * L + t0 + k) * H + h;
        ddt[at] = (floatX)((float)ddt[at] + ddt_s[k]);
    }
}

// dBm[b, t, g, n] += sum of dBh[b, t, h, n] over the heads h of group g (the same for dC)
__global__ void ssd_group_sum_kernel(floatX* out, const float* per_head, int B, int L, int H, int G, int N) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)B * L * G * N) return;
    int n = (int)(i % N), g = (int)((i / N) % G);
    size_t bt = i / ((size_t)N * G);
    int hpg = H / G;
    float acc = 0.0f;
    for (int h = g * hpg; h < (g + 1) * hpg; h++) acc += per_head[(bt * H + h) * N + n];
    out[i] = (floatX)((float)out[i] + acc);
}

// shared memory of each kernel, in floats
static size_t ssd_smem_outer(int P, int N) { return 3 * SSD_CUDA_CHUNK + (size_t)SSD_CUDA_CHUNK * (P + N); }
static size_t ssd_smem_out(int P, int N) {
    size_t Q = SSD_CUDA_CHUNK;
    return 2 * Q + 2 * Q * (N + 1) + Q * P + Q * Q + (size_t)P * (N + 1);
}
static size_t ssd_smem_chunk_backward(int P, int N) {
    size_t Q = SSD_CUDA_CHUNK;
    return 4 * Q + 2 + 2 * Q * (N + 1) + Q * (P + 1) + Q * P + Q * Q + 2 * (size_t)P * (N + 1);
}

static void ssd_set_smem(const void* kernel, size_t floats, const char* who) {
    int dev = 0, max_optin = 0;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if (floats * sizeof(float) > (size_t)max_optin)
        FATAL("%s: needs %zu bytes of shared memory per block, the GPU has %d (reduce P x N)", who, floats * sizeof(float), max_optin);
    cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)(floats * sizeof(float))));
}

// the states entering each chunk, (B, nc, H, P, N), into `states` (steps 1 and 2)
static void ssd_chunk_states_cuda(float* states, float* final_state, const floatX* x, const floatX* dt, const float* A,
                                  const floatX* Bm, const float* h0, int B, int L, int H, int P, int G, int N) {
    int nc = ceil_div(L, SSD_CUDA_CHUNK);
    size_t sm1 = ssd_smem_outer(P, N);
    ssd_set_smem((const void*)ssd_outer_kernel, sm1, "ssd (chunk states)");
    ssd_outer_kernel<<<dim3(nc, H, B), 256, sm1 * sizeof(float), launch_stream()>>>(states, x, dt, A, Bm, B, L, H, P, G, N, 0);
    cudaCheckLaunch();
    ssd_pass_kernel<<<dim3(H, B), 256, nc * sizeof(float), launch_stream()>>>(states, final_state, h0, dt, A, L, H, P, N, nc);
    cudaCheckLaunch();
}

// the plain forward (any shape); the kernels use chunks of SSD_CUDA_CHUNK
static void ssd_forward_simt_cuda(floatX* y, float* final_state, const floatX* x, const floatX* dt, const float* A,
                                  const floatX* Bm, const floatX* Cm, const float* D, const float* h0, int B, int L, int H,
                                  int P, int G, int N) {
    if (B == 0 || L == 0) return;
    static DeviceScratch states_buf;
    int nc = ceil_div(L, SSD_CUDA_CHUNK);
    float* states = states_buf.get((size_t)B * nc * H * P * N);
    ssd_chunk_states_cuda(states, final_state, x, dt, A, Bm, h0, B, L, H, P, G, N);
    size_t sm3 = ssd_smem_out(P, N);
    ssd_set_smem((const void*)ssd_out_kernel, sm3, "ssd_forward");
    ssd_out_kernel<<<dim3(nc, H, B), 256, sm3 * sizeof(float), launch_stream()>>>(y, x, dt, A, Bm, Cm, D, states, B, L, H, P, G, N);
    cudaCheckLaunch();
}

// the plain backward (any shape); every gradient accumulates (+=)
static void ssd_backward_simt_cuda(floatX* dx, floatX* ddt, float* dA, floatX* dBm, floatX* dCm, float* dD, float* dh0,
                                   const floatX* dy, const float* dfinal_state, const floatX* x, const floatX* dt,
                                   const float* A, const floatX* Bm, const floatX* Cm, const float* D, const float* h0,
                                   int B, int L, int H, int P, int G, int N) {
    if (B == 0 || L == 0) return;
    static DeviceScratch states_buf, dS_buf, dcl_buf, dBh_buf, dCh_buf;
    int nc = ceil_div(L, SSD_CUDA_CHUNK);
    size_t n_states = (size_t)B * nc * H * P * N, n_heads = (size_t)B * L * H * N;
    float* states = states_buf.get(n_states);
    float* dS = dS_buf.get(n_states);
    float* dcl = dcl_buf.get((size_t)B * nc * H);
    float* dBh = dBh_buf.get(n_heads);
    float* dCh = dCh_buf.get(n_heads);
    ssd_chunk_states_cuda(states, nullptr, x, dt, A, Bm, h0, B, L, H, P, G, N);  // recomputed
    size_t sm1 = ssd_smem_outer(P, N);
    ssd_outer_kernel<<<dim3(nc, H, B), 256, sm1 * sizeof(float), launch_stream()>>>(dS, dy, dt, A, Cm, B, L, H, P, G, N, 1);
    cudaCheckLaunch();
    ssd_pass_backward_kernel<<<dim3(H, B), 256, 2 * nc * sizeof(float), launch_stream()>>>(dS, dcl, dh0, dfinal_state, states, dt, A, L, H, P, N, nc);
    cudaCheckLaunch();
    size_t sm6 = ssd_smem_chunk_backward(P, N);
    ssd_set_smem((const void*)ssd_chunk_backward_kernel, sm6, "ssd_backward");
    ssd_chunk_backward_kernel<<<dim3(nc, H, B), 256, sm6 * sizeof(float), launch_stream()>>>(dx, ddt, dA, dBh, dCh, dD, dy, x, dt, A, Bm, Cm, D,
                                                                             states, dS, dcl, B, L, H, P, G, N);
    cudaCheckLaunch();
    size_t n_groups = (size_t)B * L * G * N;
    unsigned grid = (unsigned)((n_groups + 255) / 256);
    ssd_group_sum_kernel<<<grid, 256, 0, launch_stream()>>>(dBm, dBh, B, L, H, G, N);
    ssd_group_sum_kernel<<<grid, 256, 0, launch_stream()>>>(dCm, dCh, B, L, H, G, N);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// CUDA, tensor cores: the chunked algorithm with its matrix products on TF32 mma.sync (m16n8k8,
// fp32 accumulate). Inputs, outputs and every sum stay fp32; the operands of each product are rounded
// to TF32 (10-bit mantissa) in the forward and truncated to it by the tensor cores in the backward:
// relative errors ~3e-4 on y, <= 3e-3 on the gradients, instead of ~1e-6. The backward's state tensors
// H_c and G_{c+1} are bf16.
//
// This is dev/ssd.cu's v20 and nothing else: the versions it was derived from (v4-v19: among them v16's
// sequential forward ssd_tc_seq_kernel and per-chunk backward ssd_tc_chunk_bwd_kernel; v17's fp32 state
// tensors; v21's truncated forward; v22's 32 x 32 warp tiles) live in dev/ssd.cu with the switches that
// select them, and dev/notes_kernels.md has their measurements.
//
// The forward, one block per (p-slice of PT channels, head, batch) walking the chunks in order with its
// (PT x N) slice of the state in mma accumulators (no state goes through device memory):
//   ssd_tc_cb_kernel         CB_c = C Bᵀ of each chunk (Q x Q), once per group (shared by its heads)
//   ssd_tc_fwd_kernel        y_t = sum_{s<=t} exp(cs_t - cs_s) CB[t,s] dt_s x_s + exp(cs_t) H_c C_t + D x_t
//                            (the state read C_t H_cᵀ straight from the accumulators);
//                            H_{c+1} = exp(cl) H_c + sum_s exp(cl - cs_s) dt_s x_s B_sᵀ
// The backward, the same sequential walk twice, then one block per chunk:
//   ssd_tc_states_kernel     the forward's recurrence again, writing H_c (entering chunk c)
//   ssd_tc_dstate_kernel     chunks in reverse: G_{c+1} = dloss/dH_{c+1} written for each c,
//                            G_c = exp(cl) G_{c+1} + sum_t exp(cs_t) dy_t C_tᵀ;  dh0 += G_0
//   ssd_tc_chunk_bwd2_kernel one block per (chunk, group, batch), walking the group's heads (the head sums
//                            of dB and dC stay in the block's accumulators), its inputs double-buffered
//                            with cp.async in slices of 32 channels:
//                            dX_s = sum_{t>=s} W[t,s] dy_t + exp(cl - cs_s) G_{c+1} B_s  (X = dt x; W the
//                            masked decayed CB) -> dx, ddt; dW = dY Xᵀ -> dCB = mask∘decay(dW) dt_s;
//                            dC = sum_h [dCB_h B + exp(cs) dY_h H_c,h], dB = sum_h [dCB_hᵀ C + exp(cl-cs) dt X_h G_{c+1},h];
//                            d(cs) (mask exponents, state read, chunk state, chunk decay) -> ddt, dA; dD
//                            (dA, dD: one part per block and head, then column_sums_add_cuda adds them
//                            in a fixed order: the tensor-core backward's bits repeat from run to run)
// Shared-memory rows are padded so the fragment loads of each product hit 32 banks (row length
// = 4 mod 32 floats where a warp reads 8 rows x 4 columns, 8 mod 32 where it reads 4 rows x 8).
// The helpers below (operands, SsdTile, decays, cp.async) are shared with dev/ssd.cu's versions.

// x rounded to tf32 (nearest, ties away), the .b32 an mma operand takes
__device__ __forceinline__ uint32_t ssd_tf32(float x) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
}
// an operand already exact in tf32 (a bf16 state element widened to fp32): its bits go to the mma as they are
struct SsdTf32Exact { float v; };
__device__ __forceinline__ uint32_t ssd_tf32(SsdTf32Exact x) { return __float_as_uint(x.v); }
// an fp32 operand: rounded to tf32 by a cvt (TR false), or its bits passed as they are (TR true: the tensor
// core reads the top 19 bits, i.e. truncates; one instruction fewer per fragment register, the products'
// relative errors ~2x larger and biased towards zero)
template <bool TR> __device__ __forceinline__ auto ssd_op(float v) {
    if constexpr (TR) return SsdTf32Exact{v};
    else return v;
}
template <bool TR> __device__ __forceinline__ uint32_t ssd_opb(float v) {
    if constexpr (TR) return __float_as_uint(v);
    else return ssd_tf32(v);
}
// two k-adjacent operands as mma registers (SsdTile::mma_kp): an fp32 pair (one 64-bit load, optionally
// scaled), a bf16 pair (one 32-bit load; exact in tf32), or two values from separate loads
template <bool TR> __device__ __forceinline__ uint2 ssd_kp(const float* p) {
    float2 v = *reinterpret_cast<const float2*>(p);
    return make_uint2(ssd_opb<TR>(v.x), ssd_opb<TR>(v.y));
}
template <bool TR> __device__ __forceinline__ uint2 ssd_kp(const float* p, float scale) {
    float2 v = *reinterpret_cast<const float2*>(p);
    return make_uint2(ssd_opb<TR>(v.x * scale), ssd_opb<TR>(v.y * scale));
}
template <bool TR> __device__ __forceinline__ uint2 ssd_kp(const bf16* p) {
    uint32_t w = *reinterpret_cast<const uint32_t*>(p);
    return make_uint2(w << 16, w & 0xffff0000u);
}
template <bool TR> __device__ __forceinline__ uint2 ssd_kp2(float a, float b) { return make_uint2(ssd_opb<TR>(a), ssd_opb<TR>(b)); }
__device__ __forceinline__ uint2 ssd_kp2(bf16 a, bf16 b) {
    return make_uint2((uint32_t)__bfloat16_as_ushort(a) << 16, (uint32_t)__bfloat16_as_ushort(b) << 16);
}
// d += a b: m16n8k8, tf32 operands, fp32 accumulators (PTX ISA fragment layouts; lane = 4 gid + tid4):
// a[0] (gid, tid4), a[1] (gid+8, tid4), a[2] (gid, tid4+4), a[3] (gid+8, tid4+4); b0 (k tid4, n gid),
// b1 (k tid4+4, n gid); d[0..1] (gid, 2 tid4 + 0..1), d[2..3] (gid+8, 2 tid4 + 0..1)
__device__ __forceinline__ void ssd_mma_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// An (M x N) fp32 product held in the mma accumulators of W warps: WM x WN warps, each owning MT x NT
// tiles of 16 x 8 starting at row m0, column n0 (WM as many as M allows, up to W, unless WM_ says). Operands come from functors A(m, k), B(k, n) (fp32
// values, usually shared-memory reads; scales and masks folded in), rounded to tf32 at the load
// (SsdTf32Exact values are passed as they are).
template <int M, int N, int W, int WM_ = 0> struct SsdTile {
    static constexpr int WM = WM_ ? WM_ : (M / 16 < W) ? M / 16 : W, WN = W / WM, MT = M / 16 / WM, NT = N / 8 / WN;
    static_assert(WM * WN == W && MT * WM * 16 == M && NT * WN * 8 == N, "SsdTile: M x N does not split over W warps");
    float acc[MT][NT][4];
    int m0, n0, wm, wn;
    __device__ __forceinline__ SsdTile() {
        int w = threadIdx.x >> 5;
        wm = w % WM; wn = w / WM; m0 = wm * MT * 16; n0 = wn * NT * 8;
        zero();
    }
    __device__ __forceinline__ void zero() {
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
            for (int j = 0; j < NT; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;
    }
    // row of acc[i][.][2h + .], first column of acc[.][j][.] (the pair col, col + 1)
    __device__ __forceinline__ int row(int i, int h) const { return m0 + 16 * i + ((threadIdx.x & 31) >> 2) + 8 * h; }
    __device__ __forceinline__ int col(int j) const { return n0 + 8 * j + 2 * (threadIdx.x & 3); }
    // acc += sum over k in [0, K) of A(m, k) B(k, n). K is a compile-time multiple of 8 and the loop is
    // unrolled, so the fragment loads of later k-steps overlap the mma of earlier ones (a causal product
    // runs its full K: the masked entries are zeros)
    template <int K, class FA, class FB> __device__ __forceinline__ void mma(FA A, FB Bv) {
        const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
#pragma unroll
        for (int k = 0; k < K; k += 8) {
            uint32_t a[MT][4], b[NT][2];
#pragma unroll
            for (int i = 0; i < MT; i++) {
                int r = m0 + 16 * i + g;
                a[i][0] = ssd_tf32(A(r, k + t));
                a[i][1] = ssd_tf32(A(r + 8, k + t));
                a[i][2] = ssd_tf32(A(r, k + t + 4));
                a[i][3] = ssd_tf32(A(r + 8, k + t + 4));
            }
#pragma unroll
            for (int j = 0; j < NT; j++) {
                int cn = n0 + 8 * j + g;
                b[j][0] = ssd_tf32(Bv(k + t, cn));
                b[j][1] = ssd_tf32(Bv(k + t + 4, cn));
            }
#pragma unroll
            for (int i = 0; i < MT; i++)
#pragma unroll
                for (int j = 0; j < NT; j++) ssd_mma_tf32(acc[i][j], a[i], b[j][0], b[j][1]);
        }
    }
    // the same product with the k order permuted inside each k-step (logical k t, t + 4 <-> physical k 2t,
    // 2t + 1: the sum does not change), so that a thread's two registers of an operand are adjacent in k.
    // A2(m, k) and B2(k, n), k even, return the mma registers of (k, k + 1): one 64-bit (fp32) or 32-bit
    // (bf16) load where the operand is k-contiguous in shared memory, else two loads
    template <int K, class FA, class FB> __device__ __forceinline__ void mma_kp(FA A2, FB B2) {
        const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
#pragma unroll
        for (int k = 0; k < K; k += 8) {
            uint32_t a[MT][4], b[NT][2];
#pragma unroll
            for (int i = 0; i < MT; i++) {
                int r = m0 + 16 * i + g;
                uint2 lo = A2(r, k + 2 * t), hi = A2(r + 8, k + 2 * t);
                a[i][0] = lo.x; a[i][1] = hi.x; a[i][2] = lo.y; a[i][3] = hi.y;
            }
#pragma unroll
            for (int j = 0; j < NT; j++) {
                uint2 v = B2(k + 2 * t, n0 + 8 * j + g);
                b[j][0] = v.x; b[j][1] = v.y;
            }
#pragma unroll
            for (int i = 0; i < MT; i++)
#pragma unroll
                for (int j = 0; j < NT; j++) ssd_mma_tf32(acc[i][j], a[i], b[j][0], b[j][1]);
        }
    }
    // f(row, col, v0, v1) on every pair of adjacent accumulators (columns col, col + 1)
    template <class F> __device__ __forceinline__ void pairs(F f) {
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int h = 0; h < 2; h++) f(row(i, h), col(j), acc[i][j][2 * h], acc[i][j][2 * h + 1]);
    }
    // this thread's part of the row sums sum_n f(row, n, v): s[i][h] for row(i, h)
    template <class F> __device__ __forceinline__ void row_part(float (&s)[MT][2], F f) const {
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                float v = 0.0f;
#pragma unroll
                for (int j = 0; j < NT; j++)
                    v += f(row(i, h), col(j), acc[i][j][2 * h]) + f(row(i, h), col(j) + 1, acc[i][j][2 * h + 1]);
                s[i][h] = v;
            }
    }
    // the quad's row parts summed: one value per (warp column, row) into part[wn * M + row]
    __device__ __forceinline__ void row_store(float* part, const float (&s)[MT][2]) const {
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                float v = s[i][h];
                v += __shfl_xor_sync(0xffffffffu, v, 1);
                v += __shfl_xor_sync(0xffffffffu, v, 2);
                if ((threadIdx.x & 3) == 0) part[wn * M + row(i, h)] = v;
            }
    }
    // column sums of f(row, col, v) over the warp's rows: one value per (warp row, column) into part[wm * N + col]
    template <class F> __device__ __forceinline__ void col_store(float* part, F f) const {
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int c = 0; c < 2; c++) {
                float v = 0.0f;
#pragma unroll
                for (int i = 0; i < MT; i++)
#pragma unroll
                    for (int h = 0; h < 2; h++) v += f(row(i, h), col(j) + c, acc[i][j][2 * h + c]);
                v += __shfl_xor_sync(0xffffffffu, v, 4);
                v += __shfl_xor_sync(0xffffffffu, v, 8);
                v += __shfl_xor_sync(0xffffffffu, v, 16);
                if ((threadIdx.x & 31) < 4) part[wm * N + col(j) + c] = v;
            }
    }
};

// The masked, decayed C·Bᵀ entry of a chunk: W[t][s] = exp(cs_t - cs_s) CB[t][s] for s <= t, 0 above the
// diagonal (the exponent is <= 0). The one place the mask is applied: the forward's outputs, the
// backward's dX and its dCB (the same map applied to dW) all call it.
__device__ __forceinline__ float ssd_tc_decay(float cb, const float* cs, int t, int s) {
    return s <= t ? cb * __expf(cs[t] - cs[s]) : 0.0f;
}

// One warp: dts[i] = dt of the chunk's step i (0 past its end Qc), cs[i] = sum_{k<=i} dts[k] A for i < Q
// (lane l scans steps [l E, l E + E), then a shuffle scan over the lanes); returns cs[Q-1] in every lane
template <int Q>
__device__ __forceinline__ float ssd_tc_cumsum(float* cs, float* dts, const floatX* dtp, size_t stride, int Qc, float A) {
    constexpr int E = Q / 32;
    const int lane = threadIdx.x & 31;
    float v[E], run = 0.0f;
#pragma unroll
    for (int e = 0; e < E; e++) {
        int i = lane * E + e;
        float d = i < Qc ? (float)dtp[(size_t)i * stride] : 0.0f;
        dts[i] = d;
        run += d * A;
        v[e] = run;
    }
    float incl = run;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        float u = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += u;
    }
#pragma unroll
    for (int e = 0; e < E; e++) cs[lane * E + e] = incl - run + v[e];
    __syncwarp();
    return __shfl_sync(0xffffffffu, incl, 31);
}

// rows [0, Q) of COLS floats (row r at src + r * stride) into shared rows of ld floats; rows from
// `valid` on are zero-filled (their source clamped to row 0, which is never read)
template <int Q, int COLS>
__device__ __forceinline__ void ssd_cp_rows(float* dst, int ld, const floatX* src, size_t stride, int valid) {
    constexpr int V = COLS / 4;
    for (int i = threadIdx.x; i < Q * V; i += blockDim.x) {
        int r = i / V, c = (i % V) * 4;
        bool ok = r < valid;
        cp_async<16>(dst + r * ld + c, src + (ok ? (size_t)r * stride : 0) + c, ok);
    }
}
// dt of the chunk's steps [0, Q) of one head (zero past `valid`), 4-byte copies
template <int Q>
__device__ __forceinline__ void ssd_cp_dt(float* dst, const floatX* src, size_t stride, int valid) {
    for (int i = threadIdx.x; i < Q; i += blockDim.x) cp_async<4>(dst + i, src + (i < valid ? (size_t)i * stride : 0), i < valid);
}

// two adjacent values: fp32 outputs, or a state tensor of ssd_tc_state_t (fp32 or bf16)
__device__ __forceinline__ void ssd_st2(float* p, float a, float b) { *reinterpret_cast<float2*>(p) = make_float2(a, b); }
__device__ __forceinline__ void ssd_st2(bf16* p, float a, float b) { *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b); }

// CB (B, nc, G, Q, Q) = C Bᵀ of every chunk; rows past L are zero. grid (nc, G, B), 128 threads
template <int Q, int N>
__global__ void __launch_bounds__(128) ssd_tc_cb_kernel(float* cb, const floatX* Bm, const floatX* Cm, int L, int G) {
    constexpr int LD = N + 4;
    extern __shared__ float sm[];
    float *Cs = sm, *Bs = sm + Q * LD;
    const int c = blockIdx.x, g = blockIdx.y, b = blockIdx.z, nc = gridDim.x, t0 = c * Q, Qc = min(Q, L - t0);
    const size_t row0 = (((size_t)b * L + t0) * G + g) * N;
    ssd_cp_rows<Q, N>(Cs, LD, Cm + row0, (size_t)G * N, Qc);
    ssd_cp_rows<Q, N>(Bs, LD, Bm + row0, (size_t)G * N, Qc);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    SsdTile<Q, Q, 4> T;
    T.mma<N>([&](int t, int n) { return Cs[t * LD + n]; }, [&](int n, int s) { return Bs[s * LD + n]; });
    float* out = cb + (((size_t)b * nc + c) * G + g) * Q * Q;
    T.pairs([&](int t, int s, float& v0, float& v1) { ssd_st2(out + t * Q + s, v0, v1); });
}
template <int Q, int N> static size_t ssd_tc_cb_smem() { return (size_t)2 * Q * (N + 4); }

// The states entering every chunk: states[c] = H_c (B, nc, H, P, N), bf16. grid (P / PT, H, B), PT / 8 warps.
// Each chunk's inputs (x slice, B, dt) are copied by cp.async into one of two stages while the previous
// chunk computes.
template <int Q, int N, int PT> struct SsdStatesSmem {
    static constexpr int LDB = N + 8, LDX = PT + 8;
    static constexpr int STAGE = Q * LDB + Q * LDX + Q;  // B, x, dt
    static constexpr size_t floats = 2 * (size_t)STAGE + 3 * Q * (PT / 8);  // + cs, dts, ws per warp
};
template <int Q, int N, int PT>
__global__ void __launch_bounds__(PT * 4) ssd_tc_states_kernel(bf16* states, const floatX* x, const floatX* dt, const float* A,
                                                           const floatX* Bm, const float* h0, int L, int H, int P, int G) {
    typedef SsdStatesSmem<Q, N, PT> S_;
    constexpr int W = PT / 8, LDB = S_::LDB, LDX = S_::LDX, STAGE = S_::STAGE;
    extern __shared__ float sm[];
    // each warp scans the chunk's decays itself (no barrier): its own cs, dts, ws
    float *cs = sm + 2 * STAGE + 3 * Q * (threadIdx.x >> 5), *dts = cs + Q, *ws = dts + Q;
    const int pt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, g = h / (H / G), p0 = pt * PT, nc = (L + Q - 1) / Q;
    const float Ah = A[h];
    const size_t PN = (size_t)P * N, bh = (size_t)b * H + h;
    auto stage = [&](int c, float*& Bs, float*& Xs, float*& dtb) {
        Bs = sm + (c & 1) * STAGE; Xs = Bs + Q * LDB; dtb = Xs + Q * LDX;
    };
    auto issue = [&](int c) {
        float *Bs, *Xs, *dtb;
        stage(c, Bs, Xs, dtb);
        const int t0 = c * Q, Qc = min(Q, L - t0);
        const size_t row = ((size_t)b * L + t0) * G + g;
        ssd_cp_rows<Q, PT>(Xs, LDX, x + (((size_t)b * L + t0) * H + h) * P + p0, (size_t)H * P, Qc);
        ssd_cp_rows<Q, N>(Bs, LDB, Bm + row * N, (size_t)G * N, Qc);
        ssd_cp_dt<Q>(dtb, dt + ((size_t)b * L + t0) * H + h, H, Qc);
    };
    issue(0);
    cp_async_commit();
    SsdTile<PT, N, W> S;  // the state slice [p][n] entering the current chunk
    if (h0)
        S.pairs([&](int p, int n, float& v0, float& v1) {
            float2 u = *reinterpret_cast<const float2*>(h0 + bh * PN + (size_t)(p0 + p) * N + n);
            v0 = u.x; v1 = u.y;
        });
    for (int c = 0; c < nc; c++) {
        const int t0 = c * Q, Qc = min(Q, L - t0);
        if (c + 1 < nc) issue(c + 1);
        cp_async_commit();
        S.pairs([&](int p, int n, float& v0, float& v1) {
            ssd_st2(states + (((size_t)b * nc + c) * H + h) * PN + (size_t)(p0 + p) * N + n, v0, v1);
        });
        float *Bs, *Xs, *dtb;
        stage(c, Bs, Xs, dtb);
        cp_async_wait<1>();
        __syncthreads();
        {
            float cl = ssd_tc_cumsum<Q>(cs, dts, dtb, 1, Qc, Ah);
            for (int i = threadIdx.x & 31; i < Q; i += 32) ws[i] = __expf(cl - cs[i]) * dts[i];
            __syncwarp();
        }
        // H_{c+1} = exp(cl) H_c + (w x)ᵀ B, w_s = exp(cl - cs_s) dt_s (operands truncated to tf32)
        const float el = __expf(cs[Q - 1]);
        S.pairs([&](int, int, float& v0, float& v1) { v0 *= el; v1 *= el; });
        S.mma<Q>([&](int p, int s) { return ssd_op<true>(Xs[s * LDX + p] * ws[s]); }, [&](int s, int n) { return ssd_op<true>(Bs[s * LDB + n]); });
        __syncthreads();
    }
}

// The state gradients, chunks in reverse: dstates[c] = G_{c+1} (B, nc, H, P, N), bf16; dh0 += G_0.
// grid (P / PT, H, B), PT / 8 warps; C, the dy slice and dt double-buffered like the forward's inputs
template <int Q, int N, int PT> struct SsdDstateSmem {
    static constexpr int LDC = N + 8, LDY = PT + 8, STAGE = Q * LDC + Q * LDY + Q;
    static constexpr size_t floats = 2 * (size_t)STAGE + 3 * Q * (PT / 8);  // + cs, dts, ecs per warp
};
template <int Q, int N, int PT>
__global__ void __launch_bounds__(PT * 4) ssd_tc_dstate_kernel(bf16* dstates, float* dh0, const float* dfinal, const floatX* dy,
                                                           const floatX* dt, const float* A, const floatX* Cm, int L, int H, int P, int G) {
    typedef SsdDstateSmem<Q, N, PT> S_;
    constexpr int W = PT / 8, LDC = S_::LDC, LDY = S_::LDY, STAGE = S_::STAGE;
    extern __shared__ float sm[];
    float *cs = sm + 2 * STAGE + 3 * Q * (threadIdx.x >> 5), *dts = cs + Q, *ecs = dts + Q;  // this warp's
    const int pt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, g = h / (H / G), p0 = pt * PT, nc = (L + Q - 1) / Q;
    const float Ah = A[h];
    const size_t PN = (size_t)P * N, bh = (size_t)b * H + h;
    auto issue = [&](int c) {
        float *Cs = sm + (c & 1) * STAGE, *DYs = Cs + Q * LDC, *dtb = DYs + Q * LDY;
        const int t0 = c * Q, Qc = min(Q, L - t0);
        ssd_cp_rows<Q, N>(Cs, LDC, Cm + (((size_t)b * L + t0) * G + g) * N, (size_t)G * N, Qc);
        ssd_cp_rows<Q, PT>(DYs, LDY, dy + (((size_t)b * L + t0) * H + h) * P + p0, (size_t)H * P, Qc);
        ssd_cp_dt<Q>(dtb, dt + ((size_t)b * L + t0) * H + h, H, Qc);
    };
    issue(nc - 1);
    cp_async_commit();
    SsdTile<PT, N, W> Gt;  // G_{c+1}, [p][n]
    if (dfinal)
        Gt.pairs([&](int p, int n, float& v0, float& v1) {
            float2 u = *reinterpret_cast<const float2*>(dfinal + bh * PN + (size_t)(p0 + p) * N + n);
            v0 = u.x; v1 = u.y;
        });
    for (int c = nc - 1; c >= 0; c--) {
        const int Qc = min(Q, L - c * Q);
        if (c > 0) issue(c - 1);
        cp_async_commit();
        Gt.pairs([&](int p, int n, float& v0, float& v1) {
            ssd_st2(dstates + (((size_t)b * nc + c) * H + h) * PN + (size_t)(p0 + p) * N + n, v0, v1);
        });
        float *Cs = sm + (c & 1) * STAGE, *DYs = Cs + Q * LDC, *dtb = DYs + Q * LDY;
        cp_async_wait<1>();
        __syncthreads();
        ssd_tc_cumsum<Q>(cs, dts, dtb, 1, Qc, Ah);
        for (int i = threadIdx.x & 31; i < Q; i += 32) ecs[i] = __expf(cs[i]);
        __syncwarp();
        const float el = __expf(cs[Q - 1]);
        Gt.pairs([&](int, int, float& v0, float& v1) { v0 *= el; v1 *= el; });
        Gt.mma<Q>([&](int p, int t) { return ssd_op<true>(DYs[t * LDY + p] * ecs[t]); }, [&](int t, int n) { return ssd_op<true>(Cs[t * LDC + n]); });
        __syncthreads();
    }
    if (dh0)
        Gt.pairs([&](int p, int n, float& v0, float& v1) {
            float2* o = reinterpret_cast<float2*>(dh0 + bh * PN + (size_t)(p0 + p) * N + n);
            float2 u = *o; u.x += v0; u.y += v1; *o = u;
        });
}

// The forward (v18): as v16's sequential forward (dev/ssd.cu) but the state read C_t H_cᵀ takes H_c straight
// from the accumulators of the state tile instead of a shared copy. Transposed, Yᵀ[p][t] = sum_n H[p][n] C[t][n]
// has the state as its A operand, and an accumulator fragment is an A fragment once the k order is permuted
// (columns 2t, 2t + 1 of an n-tile are k = t, t + 4), so each warp multiplies its own (16 x N/2) state tile by
// C (paired 64-bit loads) into a (16 x Q) partial of Yᵀ; the diagonal block adds (dt x)ᵀ Wᵀ over half the s
// range per warp, and the two warps that share rows exchange halves through shared memory (a named barrier
// for the pair). No (PT x N) state copy in shared memory: 110 KB at Q 32, N 128, PT 64, two blocks per SM,
// all 192 blocks of B8 H24 P64 in one wave. grid (P / PT, H, B), PT / 8 warps. Operands rounded
// to tf32 (truncating them, v21, took 10% off and doubled y's error).
template <int Q, int N, int PT> struct SsdFwdSmem {
    static constexpr int W = PT / 8, LDB = N + 8, LDX = PT + 8, LDC = N + 8, LDCB = Q + 4;
    static constexpr int STAGE = Q * LDB + Q * LDX + Q * LDC + Q * LDCB + Q;  // B, x, C, C Bᵀ, dt
    static constexpr int XCH = (Q / 16) * 4 * 32;                              // per warp: the tiles its partner finishes
    static constexpr size_t floats = 2 * (size_t)STAGE + 4 * Q * W + (size_t)W * XCH;  // + cs, dts, ws, ecs per warp
};
template <int Q, int N, int PT>
__global__ void __launch_bounds__(PT * 4, 2) ssd_tc_fwd_kernel(floatX* y, float* fstate, const floatX* x, const floatX* dt,
                                                              const float* A, const floatX* Bm, const floatX* Cm, const float* D,
                                                              const float* h0, const float* cb, int L, int H, int P, int G) {
    typedef SsdFwdSmem<Q, N, PT> S_;
    constexpr int W = S_::W, LDB = S_::LDB, LDX = S_::LDX, LDC = S_::LDC, LDCB = S_::LDCB, STAGE = S_::STAGE;
    constexpr int TT = Q / 8, HT = TT / 2;  // Yᵀ's t-tiles; each warp of a pair finishes HT of them
    static_assert(Q % 16 == 0, "ssd_tc_fwd_kernel: Q must be a multiple of 16");
    typedef SsdTile<PT, N, W> TS;
    static_assert(TS::MT == 1 && TS::WN == 2, "ssd_tc_fwd_kernel: the state tile must be 16 rows x N/2 per warp");
    extern __shared__ float sm[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    float *cs = sm + 2 * STAGE + 4 * Q * warp, *dts = cs + Q, *ws = dts + Q, *ecs = ws + Q;
    float* xch = sm + 2 * STAGE + 4 * Q * W;
    const int pt = blockIdx.x, h = blockIdx.y, b = blockIdx.z, gr = h / (H / G), p0 = pt * PT, nc = (L + Q - 1) / Q;
    const float Ah = A[h], Dh = D[h];
    const size_t PN = (size_t)P * N, bh = (size_t)b * H + h;
    auto issue = [&](int c) {
        float *Bs = sm + (c & 1) * STAGE, *Xs = Bs + Q * LDB, *Cs = Xs + Q * LDX, *CBs = Cs + Q * LDC, *dtb = CBs + Q * LDCB;
        const int t0 = c * Q, Qc = min(Q, L - t0);
        const size_t row = ((size_t)b * L + t0) * G + gr;
        ssd_cp_rows<Q, PT>(Xs, LDX, x + (((size_t)b * L + t0) * H + h) * P + p0, (size_t)H * P, Qc);
        ssd_cp_rows<Q, N>(Bs, LDB, Bm + row * N, (size_t)G * N, Qc);
        ssd_cp_rows<Q, N>(Cs, LDC, Cm + row * N, (size_t)G * N, Qc);
        ssd_cp_rows<Q, Q>(CBs, LDCB, cb + (((size_t)b * nc + c) * G + gr) * Q * Q, Q, Q);
        ssd_cp_dt<Q>(dtb, dt + ((size_t)b * L + t0) * H + h, H, Qc);
    };
    issue(0);
    cp_async_commit();
    TS S;  // the state slice [p][n] entering the current chunk: this warp's rows m0..m0+15, columns n0..n0+N/2-1
    const int wn = S.wn, m0 = S.m0, n0 = S.n0, partner = warp ^ (W / 2);  // WM = W / 2: the pair differs in wn
    if (h0)
        S.pairs([&](int p, int n, float& v0, float& v1) {
            float2 u = *reinterpret_cast<const float2*>(h0 + bh * PN + (size_t)(p0 + p) * N + n);
            v0 = u.x; v1 = u.y;
        });
    for (int c = 0; c < nc; c++) {
        const int t0 = c * Q, Qc = min(Q, L - t0);
        if (c + 1 < nc) issue(c + 1);
        cp_async_commit();
        float *Bs = sm + (c & 1) * STAGE, *Xs = Bs + Q * LDB, *Cs = Xs + Q * LDX, *CBs = Cs + Q * LDC, *dtb = CBs + Q * LDCB;
        cp_async_wait<1>();
        __syncthreads();
        {
            float cl = ssd_tc_cumsum<Q>(cs, dts, dtb, 1, Qc, Ah);
            for (int i = lane; i < Q; i += 32) { ws[i] = __expf(cl - cs[i]) * dts[i]; ecs[i] = __expf(cs[i]); }
            __syncwarp();
        }
        // Yᵀ[p][t] (partial over this warp's n) = H[p][n] C[t][n]; k-steps are the state's n-tiles
        float yt[TT][4];
#pragma unroll
        for (int j = 0; j < TT; j++) yt[j][0] = yt[j][1] = yt[j][2] = yt[j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < TS::NT; kk++) {
            uint32_t a[4] = {ssd_tf32(S.acc[0][kk][0]), ssd_tf32(S.acc[0][kk][2]), ssd_tf32(S.acc[0][kk][1]),
                             ssd_tf32(S.acc[0][kk][3])};
#pragma unroll
            for (int j = 0; j < TT; j++) {
                uint2 bv = ssd_kp<false>(Cs + (8 * j + g) * LDC + n0 + 8 * kk + 2 * t4);
                ssd_mma_tf32(yt[j], a, bv.x, bv.y);
            }
        }
#pragma unroll
        for (int j = 0; j < TT; j++) {
            const int t = 8 * j + 2 * t4;
            yt[j][0] *= ecs[t]; yt[j][1] *= ecs[t + 1]; yt[j][2] *= ecs[t]; yt[j][3] *= ecs[t + 1];
        }
        // + the diagonal block over this warp's half of s: Yᵀ[p][t] += sum_s x[s][p] exp(cs_t - cs_s) CB[t][s] dt_s
#pragma unroll
        for (int ks = 0; ks < Q / 2; ks += 8) {
            const int s = wn * (Q / 2) + ks + t4;
            const int p = m0 + g;
            uint32_t a[4] = {ssd_tf32(Xs[s * LDX + p]), ssd_tf32(Xs[s * LDX + p + 8]), ssd_tf32(Xs[(s + 4) * LDX + p]),
                             ssd_tf32(Xs[(s + 4) * LDX + p + 8])};
#pragma unroll
            for (int j = 0; j < TT; j++) {
                const int t = 8 * j + g;
                ssd_mma_tf32(yt[j], a, ssd_tf32(ssd_tc_decay(CBs[t * LDCB + s], cs, t, s) * dts[s]),
                             ssd_tf32(ssd_tc_decay(CBs[t * LDCB + s + 4], cs, t, s + 4) * dts[s + 4]));
            }
        }
        // the pair's halves: this warp finishes t-tiles [wn HT, wn HT + HT) and hands the others to its partner
        float* mine = xch + warp * S_::XCH;
#pragma unroll
        for (int j = 0; j < HT; j++) {
#pragma unroll
            for (int r = 0; r < 4; r++) mine[(j * 4 + r) * 32 + lane] = wn ? yt[j][r] : yt[HT + j][r];  // (no run-time index)
        }
        asm volatile("bar.sync %0, 64;\n" ::"r"(1 + S.wm) : "memory");
        const float* theirs = xch + partner * S_::XCH;
#pragma unroll
        for (int j = 0; j < HT; j++) {
            const int jm = wn * HT + j, t = 8 * jm + 2 * t4;
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                const int p = m0 + g + 8 * hh;
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float v = (wn ? yt[HT + j][2 * hh + e] : yt[j][2 * hh + e]) + theirs[(j * 4 + 2 * hh + e) * 32 + lane];
                    if (t + e < Qc) y[(((size_t)b * L + t0 + t + e) * H + h) * P + p0 + p] = v + Dh * Xs[(t + e) * LDX + p];
                }
            }
        }
        // H_{c+1} = exp(cl) H_c + (w x)ᵀ B, w_s = exp(cl - cs_s) dt_s
        const float el = __expf(cs[Q - 1]);
        S.pairs([&](int, int, float& v0, float& v1) { v0 *= el; v1 *= el; });
        S.mma<Q>([&](int p, int s) { return Xs[s * LDX + p] * ws[s]; }, [&](int s, int n) { return Bs[s * LDB + n]; });
        __syncthreads();
    }
    if (fstate) S.pairs([&](int p, int n, float& v0, float& v1) { ssd_st2(fstate + bh * PN + (size_t)(p0 + p) * N + n, v0, v1); });
}

// The per-chunk backward (v19, v20): v16's ssd_tc_chunk_bwd_kernel (dev/ssd.cu) with bf16 state tensors and fewer
// instructions per mma. Every product whose two operands are k-contiguous in shared memory runs with the k
// order permuted (SsdTile::mma_kp): one 64-bit load per fp32 register pair, one 32-bit load per bf16 pair
// (dX's state part, dW, and the A operands of dC's and dB's state parts); the head's W is stored transposed
// (W[s][t]) and already rounded to tf32; row lengths are 8 mod 32 words where a half-warp reads 4 rows x 8
// words, 4 mod 32 for the state tiles (8 rows x 4 words). The fp32 operands go to the tensor cores
// unrounded (truncated there: no cvt per register). grid (nc, G, B), 8 warps.
template <int Q, int N> struct SsdChunkBwd2Smem {
    typedef bf16 ST;
    static constexpr int W = 8, PS = 32;
    typedef SsdTile<Q, Q, W> TQ;   // dW, dCB: [t][s]
    typedef SsdTile<Q, N, W> TN;   // dC, dB: [t][n]
    typedef SsdTile<Q, PS, W> TX;  // dX slice: [s][p]
    static constexpr int LDB = N + 8, LDC = N + 8, LDCB = Q + 8, LDX = PS + 8;
    static constexpr int LDS = N + 8;  // state rows, in bf16 elements (4 mod 32 words)
    static constexpr int STAGE = 3 * Q * LDX + (int)(2 * PS * LDS * sizeof(ST) / 4) + 2 * Q;  // floats
    // per-row / per-column partial sums: one slot per warp column (rows) or warp row (columns)
    static constexpr int ROWP = TQ::WN * Q, COLP = TQ::WM * Q, R12P = TN::WN * Q, DDP = TX::WN * Q;
    static size_t floats(int P) {
        return (size_t)Q * LDB + Q * LDC + Q * LDCB + 2 * STAGE + 5 * Q + ROWP + COLP + 2 * R12P + 2 * W + (size_t)(P / PS) * DDP +
               (size_t)Q * LDCB;  // + the head's W[s][t]
    }
};
template <int Q, int N>
__global__ void __launch_bounds__(256, 1) ssd_tc_chunk_bwd2_kernel(floatX* dx, floatX* ddt, float* dA_part, floatX* dBm, floatX* dCm,
        float* dD_part, const floatX* dy, const floatX* x, const floatX* dt, const float* A, const floatX* Bm, const floatX* Cm,
        const float* D, const float* cb, const bf16* states, const bf16* dstates, int L, int H, int P, int G, bool add) {
    typedef SsdChunkBwd2Smem<Q, N> S_;
    typedef bf16 ST;
    constexpr int W = S_::W, PS = S_::PS, LDB = S_::LDB, LDC = S_::LDC, LDCB = S_::LDCB, LDX = S_::LDX, LDS = S_::LDS;
    constexpr int STAGE = S_::STAGE;
    typedef typename S_::TQ TQ;
    typedef typename S_::TN TN;
    typedef typename S_::TX TX;
    extern __shared__ float sm[];
    float *Bs = sm, *Cs = Bs + Q * LDB, *CBs = Cs + Q * LDC, *stage0 = CBs + Q * LDCB;
    float *cs = stage0 + 2 * STAGE, *dts = cs + Q, *ecs = dts + Q, *est = ecs + Q, *wst = est + Q;  // the head's decays
    float *rowp = wst + Q, *colp = rowp + S_::ROWP, *r1p = colp + S_::COLP, *r2p = r1p + S_::R12P, *red = r2p + S_::R12P;
    float* ddp = red + 2 * W;
    float* Wm = ddp + (size_t)(P / PS) * S_::DDP;  // Wm[s * LDCB + t] = tf32(ssd_tc_decay(CB[t][s])) of the head
    const int c = blockIdx.x, g = blockIdx.y, b = blockIdx.z, nc = gridDim.x, t0 = c * Q, Qc = min(Q, L - t0);
    const int hpg = H / G, nps = P / PS, nst = hpg * nps, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const size_t PN = (size_t)P * N;
    constexpr int SV = (int)(16 / sizeof(ST));  // state elements per 16-byte copy

    // the chunk's B and C rows and its C·Bᵀ (with the first slice)
    for (int i = threadIdx.x; i < Q * (N / 4); i += blockDim.x) {
        int r = i / (N / 4), c4 = (i % (N / 4)) * 4;
        bool ok = r < Qc;
        size_t at = (((size_t)b * L + t0 + (ok ? r : 0)) * G + g) * N + c4;
        cp_async<16>(Bs + r * LDB + c4, Bm + at, ok);
        cp_async<16>(Cs + r * LDC + c4, Cm + at, ok);
    }
    const float* cbc = cb + (((size_t)b * nc + c) * G + g) * Q * Q;
    for (int i = threadIdx.x; i < Q * (Q / 4); i += blockDim.x) {
        int r = i / (Q / 4), c4 = (i % (Q / 4)) * 4;
        cp_async<16>(CBs + r * LDCB + c4, cbc + r * Q + c4, true);
    }
    auto slice = [&](int st, float*& Xs, float*& DYs, float*& DXs, ST*& Hs, ST*& Gs, float*& dtb) {
        float* sb = stage0 + (st & 1) * STAGE;
        Xs = sb; DYs = Xs + Q * LDX; DXs = DYs + Q * LDX;
        Hs = reinterpret_cast<ST*>(DXs + Q * LDX); Gs = Hs + PS * LDS;
        dtb = reinterpret_cast<float*>(Gs + PS * LDS);  // dt, then ddt
    };
    auto issue = [&](int st) {
        const int hh = st / nps, ps = st % nps, h = g * hpg + hh;
        float *Xs, *DYs, *DXs, *dtb; ST *Hs, *Gs;
        slice(st, Xs, DYs, DXs, Hs, Gs, dtb);
        for (int i = threadIdx.x; i < Q * (PS / 4); i += blockDim.x) {
            int r = i / (PS / 4), c4 = (i % (PS / 4)) * 4;
            bool ok = r < Qc;
            size_t at = (((size_t)b * L + t0 + (ok ? r : 0)) * H + h) * P + ps * PS + c4;
            cp_async<16>(Xs + r * LDX + c4, x + at, ok);
            cp_async<16>(DYs + r * LDX + c4, dy + at, ok);
            cp_async<16>(DXs + r * LDX + c4, dx + at, ok && add);  // (GRAD_SET: zeros, dx not read)
        }
        const size_t so = (((size_t)b * nc + c) * H + h) * PN + (size_t)ps * PS * N;
        for (int i = threadIdx.x; i < PS * (N / SV); i += blockDim.x) {
            int r = i / (N / SV), c8 = (i % (N / SV)) * SV;
            cp_async<16>(Hs + r * LDS + c8, states + so + (size_t)r * N + c8, true);
            cp_async<16>(Gs + r * LDS + c8, dstates + so + (size_t)r * N + c8, true);
        }
        ssd_cp_dt<Q>(dtb, dt + ((size_t)b * L + t0) * H + h, H, Qc);
        if (ps == nps - 1) ssd_cp_dt<Q>(dtb + Q, ddt + ((size_t)b * L + t0) * H + h, H, add ? Qc : 0);
    };
    issue(0);
    cp_async_commit();

    TQ dW, dCB;               // this head's dY Xᵀ; the group's sum of dCB
    TN dCt, dBt;              // the group's dC, dB (the state terms of every head so far)
    float r1prev[TN::MT][2] = {}, r2prev[TN::MT][2] = {};  // C·dC, B·dB row parts before this head
    float dD_acc = 0.0f, dcl_acc = 0.0f;
    for (int st = 0; st < nst; st++) {
        const int hh = st / nps, ps = st % nps, h = g * hpg + hh;
        float *Xs, *DYs, *DXs, *dtb; ST *Hs, *Gs;
        slice(st, Xs, DYs, DXs, Hs, Gs, dtb);
        if (st + 1 < nst) issue(st + 1);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        const float Ah = A[h], Dh = D[h];
        if (ps == 0) {  // a new head: its cumulative decays (and W)
            if (warp == 0) {
                float cl = ssd_tc_cumsum<Q>(cs, dts, dtb, 1, Qc, Ah);
                for (int i = lane; i < Q; i += 32) {
                    ecs[i] = __expf(cs[i]); est[i] = __expf(cl - cs[i]); wst[i] = est[i] * dts[i];
                }
            }
            dW.zero(); dD_acc = 0.0f; dcl_acc = 0.0f;
            __syncthreads();
            for (int i = threadIdx.x; i < Q * Q; i += blockDim.x) {
                int t = i / Q, s2 = i % Q;
                Wm[s2 * LDCB + t] = __uint_as_float(ssd_tf32(ssd_tc_decay(CBs[t * LDCB + s2], cs, t, s2)));
            }
            __syncthreads();
        }
        {   // dX (this slice) = exp(cl - cs_s) B_s G_{c+1}ᵀ + Wᵀ dY  -> dx, and x . dX (ddt's direct part)
            TX X;
            X.mma_kp<N>([&](int s, int n) { return ssd_kp<true>(Bs + s * LDB + n); }, [&](int n, int p) { return ssd_kp<true>(Gs + p * LDS + n); });
            X.pairs([&](int s, int, float& v0, float& v1) { v0 *= est[s]; v1 *= est[s]; });
            X.mma_kp<Q>([&](int s, int t) { return ssd_kp<true>(Wm + s * LDCB + t); },
                        [&](int t, int p) { return ssd_kp2<true>(DYs[t * LDX + p], DYs[(t + 1) * LDX + p]); });
            X.pairs([&](int s, int p, float& v0, float& v1) {
                float x0 = Xs[s * LDX + p], x1 = Xs[s * LDX + p + 1], y0 = DYs[s * LDX + p], y1 = DYs[s * LDX + p + 1];
                dD_acc += y0 * x0 + y1 * x1;
                if (s < Qc)
                    ssd_st2(dx + (((size_t)b * L + t0 + s) * H + h) * P + ps * PS + p, DXs[s * LDX + p] + dts[s] * v0 + Dh * y0,
                            DXs[s * LDX + p + 1] + dts[s] * v1 + Dh * y1);
            });
            float rs[TX::MT][2];
            X.row_part(rs, [&](int s, int p, float v) { return Xs[s * LDX + p] * v; });
            X.row_store(ddp + ps * S_::DDP, rs);
        }
        // dW += dY Xᵀ (raw x); dC += exp(cs_t) dY H_c; dB += exp(cl - cs_s) dt_s X G_{c+1}
        dW.mma_kp<PS>([&](int t, int p) { return ssd_kp<true>(DYs + t * LDX + p); }, [&](int p, int s) { return ssd_kp<true>(Xs + s * LDX + p); });
        dCt.mma_kp<PS>([&](int t, int p) { return ssd_kp<true>(DYs + t * LDX + p, ecs[t]); },
                       [&](int p, int n) { return ssd_kp2(Hs[p * LDS + n], Hs[(p + 1) * LDS + n]); });
        dBt.mma_kp<PS>([&](int s, int p) { return ssd_kp<true>(Xs + s * LDX + p, wst[s]); },
                       [&](int p, int n) { return ssd_kp2(Gs[p * LDS + n], Gs[(p + 1) * LDS + n]); });
        for (int i = threadIdx.x; i < PS * N / 2; i += blockDim.x) {  // <H_c, G_{c+1}> (the chunk decay's gradient), bf16 pairs
            int r = i / (N / 2), n = 2 * (i % (N / 2));
            float2 hv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(Hs + r * LDS + n));
            float2 gv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(Gs + r * LDS + n));
            dcl_acc += hv.x * gv.x + hv.y * gv.y;
        }
        if (ps == nps - 1) {  // the head is complete
            // dCB_h = mask∘decay(dW) dt_s; m = dCB_h ∘ CB below the diagonal: d(cs_t) += row sums, d(cs_s) -= column sums
            dW.pairs([&](int t, int s, float& v0, float& v1) {
                v0 = ssd_tc_decay(v0, cs, t, s) * dts[s];
                v1 = ssd_tc_decay(v1, cs, t, s + 1) * dts[s + 1];
            });
            auto m = [&](int t, int s, float v) { return s < t ? v * CBs[t * LDCB + s] : 0.0f; };
            float rs[TQ::MT][2];
            dW.row_part(rs, m);
            dW.row_store(rowp, rs);
            dW.col_store(colp, m);
#pragma unroll
            for (int i = 0; i < TQ::MT; i++)
#pragma unroll
                for (int j = 0; j < TQ::NT; j++)
#pragma unroll
                    for (int r = 0; r < 4; r++) dCB.acc[i][j][r] += dW.acc[i][j][r];
            // r1_t = C_t . (this head's dC_t), r2_s = B_s . (this head's dB_s): differences of the running row parts
            float n1[TN::MT][2], n2[TN::MT][2];
            dCt.row_part(n1, [&](int t, int n, float v) { return Cs[t * LDC + n] * v; });
            dBt.row_part(n2, [&](int s, int n, float v) { return Bs[s * LDB + n] * v; });
#pragma unroll
            for (int i = 0; i < TN::MT; i++)
#pragma unroll
                for (int hh2 = 0; hh2 < 2; hh2++) {
                    float a1 = n1[i][hh2], a2 = n2[i][hh2];
                    n1[i][hh2] = a1 - r1prev[i][hh2]; r1prev[i][hh2] = a1;
                    n2[i][hh2] = a2 - r2prev[i][hh2]; r2prev[i][hh2] = a2;
                }
            dCt.row_store(r1p, n1);
            dBt.row_store(r2p, n2);
            float wsum = warp_sum(dcl_acc), wd = warp_sum(dD_acc);
            if (lane == 0) { red[warp] = wsum; red[W + warp] = wd; }
            __syncthreads();
            if (warp == 0) {
                // d(cs_t) = mask rows - mask columns + r1_t - r2_t; the last step also gets sum_s r2_s
                // (the chunk state's exp(cl)) and exp(cl) <H_c, G_{c+1}> (the chunk decay)
                constexpr int E = Q / 32;
                float dcs[E], dd[E], r2s = 0.0f;
#pragma unroll
                for (int e = 0; e < E; e++) {
                    const int t = lane * E + e;
                    float v = 0.0f, r2 = 0.0f, d = 0.0f;
                    for (int w = 0; w < TQ::WN; w++) v += rowp[w * Q + t];
                    for (int w = 0; w < TQ::WM; w++) v -= colp[w * Q + t];
                    for (int w = 0; w < TN::WN; w++) { v += r1p[w * Q + t]; r2 += r2p[w * Q + t]; }
                    for (int q = 0; q < nps; q++)
                        for (int w = 0; w < TX::WN; w++) d += ddp[q * S_::DDP + w * Q + t];
                    dcs[e] = v - r2; r2s += r2; dd[e] = d;
                }
                r2s = warp_sum(r2s);
                float dcl = 0.0f, dDh = 0.0f;
                for (int w = 0; w < W; w++) { dcl += red[w]; dDh += red[W + w]; }
                if (lane == 31) dcs[E - 1] += r2s + __expf(cs[Q - 1]) * dcl;
                // cs_t = sum_{k<=t} dt_k A: ddt_k += A sum_{t>=k} d(cs_t), dA += sum_k dt_k sum_{t>=k} d(cs_t)
                float loc[E], run = 0.0f;
#pragma unroll
                for (int e = E - 1; e >= 0; e--) { run += dcs[e]; loc[e] = run; }
                float incl = run;
#pragma unroll
                for (int o = 1; o < 32; o <<= 1) {
                    float u = __shfl_down_sync(0xffffffffu, incl, o);
                    if (lane + o < 32) incl += u;
                }
                const float above = incl - run;  // the lanes after this one
                float dAp = 0.0f;
#pragma unroll
                for (int e = 0; e < E; e++) {
                    const int t = lane * E + e;
                    const float cum = loc[e] + above;
                    dAp += dts[t] * cum;
                    if (t < Qc) ddt[((size_t)b * L + t0 + t) * H + h] = (floatX)(dtb[Q + t] + Ah * cum + dd[e]);
                }
                dAp = warp_sum(dAp);
                if (lane == 0) {  // this block's parts, (B, nc, H), summed in order by column_sums_add_cuda
                    const size_t at = ((size_t)b * nc + c) * H + h;
                    if (dA_part) dA_part[at] = dAp;  // nullptr: frozen
                    if (dD_part) dD_part[at] = dDh;
                }
            }
        }
        __syncthreads();
    }
    // dC += dCB B, dB += dCBᵀ C, with the group's summed dCB (lower triangular)
    dCB.pairs([&](int t, int s, float& v0, float& v1) { ssd_st2(CBs + t * LDCB + s, v0, v1); });
    __syncthreads();
    dCt.mma<Q>([&](int t, int s) { return CBs[t * LDCB + s]; }, [&](int s, int n) { return Bs[s * LDB + n]; });
    dBt.mma<Q>([&](int s, int t) { return CBs[t * LDCB + s]; }, [&](int t, int n) { return Cs[t * LDC + n]; });
    auto add_rows = [&](floatX* out, TN& T) {  // every load first, then the adds and stores
        float2 old[TN::MT][TN::NT][2];
#pragma unroll
        for (int i = 0; i < TN::MT; i++)
#pragma unroll
            for (int j = 0; j < TN::NT; j++)
#pragma unroll
                for (int hh2 = 0; hh2 < 2; hh2++) {
                    int t = T.row(i, hh2);
                    old[i][j][hh2] = add && t < Qc ? *reinterpret_cast<const float2*>(out + (((size_t)b * L + t0 + t) * G + g) * N + T.col(j))
                                                   : make_float2(0.0f, 0.0f);
                }
#pragma unroll
        for (int i = 0; i < TN::MT; i++)
#pragma unroll
            for (int j = 0; j < TN::NT; j++)
#pragma unroll
                for (int hh2 = 0; hh2 < 2; hh2++) {
                    int t = T.row(i, hh2);
                    if (t < Qc)
                        ssd_st2(out + (((size_t)b * L + t0 + t) * G + g) * N + T.col(j), old[i][j][hh2].x + T.acc[i][j][2 * hh2],
                                old[i][j][hh2].y + T.acc[i][j][2 * hh2 + 1]);
                }
    };
    add_rows(dCm, dCt);
    add_rows(dBm, dBt);
}

// the per-chunk backward (every gradient but the state passes'), then dA and dD from its per-block parts
// (nullptr dA / dD: frozen, not written)
template <int Q, int N>
static void ssd_tc_chunk_backward(floatX* dx, floatX* ddt, float* dA, floatX* dBm, floatX* dCm, float* dD, const floatX* dy,
                                  const floatX* x, const floatX* dt, const float* A, const floatX* Bm, const floatX* Cm,
                                  const float* D, const float* cb, const bf16* states, const bf16* dstates, int B, int L, int H,
                                  int P, int G, GradWrite grad_write) {
    const int nc = ceil_div(L, Q);
    static DeviceScratch part_buf;
    const size_t n = (size_t)B * nc;
    float* part = part_buf.get(2 * n * H);
    size_t sm4 = SsdChunkBwd2Smem<Q, N>::floats(P);
    ssd_set_smem((const void*)ssd_tc_chunk_bwd2_kernel<Q, N>, sm4, "ssd_backward");
    ssd_tc_chunk_bwd2_kernel<Q, N><<<dim3(nc, G, B), 256, sm4 * sizeof(float), launch_stream()>>>(dx, ddt, dA ? part : nullptr, dBm, dCm,
                                                                                dD ? part + n * H : nullptr, dy, x, dt, A, Bm, Cm,
                                                                                D, cb, states, dstates, L, H, P, G,
                                                                                grad_write == GRAD_ADD);
    cudaCheckLaunch();
    // dA[h] += sum over the n = B * nc blocks of their parts (n, H), dD likewise: a fixed order
    if (dA) column_sums_add_cuda(dA, part, (int)n, H);
    if (dD) column_sums_add_cuda(dD, part + n * H, (int)n, H);
}

// the forward on the tensor cores: C Bᵀ per chunk and group, then the sequential kernel
template <int Q, int N, int PT>
static void ssd_tc_forward(floatX* y, float* final_state, const floatX* x, const floatX* dt, const float* A, const floatX* Bm,
                           const floatX* Cm, const float* D, const float* h0, int B, int L, int H, int P, int G) {
    const int nc = ceil_div(L, Q);
    static DeviceScratch cb_buf;
    float* cb = cb_buf.get((size_t)B * nc * G * Q * Q);
    size_t sm1 = ssd_tc_cb_smem<Q, N>();
    ssd_set_smem((const void*)ssd_tc_cb_kernel<Q, N>, sm1, "ssd (C Bᵀ)");
    ssd_tc_cb_kernel<Q, N><<<dim3(nc, G, B), 128, sm1 * sizeof(float), launch_stream()>>>(cb, Bm, Cm, L, G);
    cudaCheckLaunch();
    size_t sm2 = SsdFwdSmem<Q, N, PT>::floats;
    ssd_set_smem((const void*)ssd_tc_fwd_kernel<Q, N, PT>, sm2, "ssd_forward");
    ssd_tc_fwd_kernel<Q, N, PT><<<dim3(P / PT, H, B), PT * 4, sm2 * sizeof(float), launch_stream()>>>(y, final_state, x, dt, A, Bm, Cm, D, h0, cb,
                                                                                 L, H, P, G);
    cudaCheckLaunch();
}

// the backward on the tensor cores: C Bᵀ, the states (recomputed), the state gradients (both bf16), then
// the per-chunk kernel for everything else
template <int Q, int N, int PT>
static void ssd_tc_backward(floatX* dx, floatX* ddt, float* dA, floatX* dBm, floatX* dCm, float* dD, float* dh0,
                            const floatX* dy, const float* dfinal_state, const floatX* x, const floatX* dt, const float* A,
                            const floatX* Bm, const floatX* Cm, const float* D, const float* h0, int B, int L, int H, int P, int G,
                            GradWrite grad_write) {
    const int nc = ceil_div(L, Q);
    static DeviceScratch cb_buf, states_buf, dstates_buf;
    const size_t n_states = (size_t)B * nc * H * P * N * sizeof(bf16) / sizeof(float);
    float* cb = cb_buf.get((size_t)B * nc * G * Q * Q);
    bf16* states = reinterpret_cast<bf16*>(states_buf.get(n_states));
    bf16* dstates = reinterpret_cast<bf16*>(dstates_buf.get(n_states));
    size_t sm1 = ssd_tc_cb_smem<Q, N>();
    ssd_set_smem((const void*)ssd_tc_cb_kernel<Q, N>, sm1, "ssd (C Bᵀ)");
    ssd_tc_cb_kernel<Q, N><<<dim3(nc, G, B), 128, sm1 * sizeof(float), launch_stream()>>>(cb, Bm, Cm, L, G);
    cudaCheckLaunch();
    size_t sm2 = SsdStatesSmem<Q, N, PT>::floats;
    ssd_set_smem((const void*)ssd_tc_states_kernel<Q, N, PT>, sm2, "ssd (states)");
    ssd_tc_states_kernel<Q, N, PT><<<dim3(P / PT, H, B), PT * 4, sm2 * sizeof(float), launch_stream()>>>(states, x, dt, A, Bm, h0, L, H, P, G);
    cudaCheckLaunch();
    size_t sm3 = SsdDstateSmem<Q, N, PT>::floats;
    ssd_set_smem((const void*)ssd_tc_dstate_kernel<Q, N, PT>, sm3, "ssd (state gradients)");
    ssd_tc_dstate_kernel<Q, N, PT><<<dim3(P / PT, H, B), PT * 4, sm3 * sizeof(float), launch_stream()>>>(dstates, dh0, dfinal_state, dy, dt, A, Cm,
                                                                                    L, H, P, G);
    cudaCheckLaunch();
    ssd_tc_chunk_backward<Q, N>(dx, ddt, dA, dBm, dCm, dD, dy, x, dt, A, Bm, Cm, D, cb, states, dstates, B, L, H, P, G, grad_write);
}

// The tensor-core configuration (dev/ssd.cu and dev/notes_kernels.md measure the alternatives): the
// forward's chunk (its sequential kernel double-buffers chunks of 32 in shared memory), the
// backward's (the state tensors it writes and reads shrink as 1 / chunk), and the element type of
// the backward's state tensors H_c and G_{c+1}: bf16 halves their traffic (they are written once
// and read once) and rounds them to an 8-bit mantissa: the gradients' relative errors grow from
// ~5e-4 (fp32 states: v17 in dev/ssd.cu) to ~1e-3 - 3e-3; the forward does not use them. The kernels
// take bf16 states only; ssd_tc_state_t names the type for the tests. The sequential kernels take
// 64 head channels per block (8 warps) when P allows it, else 32 (4 warps).
#define SSD_TC_CHUNK_FWD 32
#define SSD_TC_CHUNK_BWD 64
typedef bf16 ssd_tc_state_t;

// whether the tensor-core kernels take this problem: fp32 activations, P a multiple of 32, N 64 or
// 128, every tensor 16-byte aligned (null pointers pass) and the per-chunk backward's shared memory
// (it grows with P) within the GPU's limit
static bool ssd_tc_ok(int P, int N, std::initializer_list<const void*> ptrs) {
    if (sizeof(floatX) != 4 || P % 32 != 0 || (N != 64 && N != 128)) return false;
    for (const void* p : ptrs) if (!aligned16(p)) return false;
    int dev = 0, max_optin = 0;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    size_t floats = N == 128 ? SsdChunkBwd2Smem<SSD_TC_CHUNK_BWD, 128>::floats(P) : SsdChunkBwd2Smem<SSD_TC_CHUNK_BWD, 64>::floats(P);
    return floats * sizeof(float) <= (size_t)max_optin;
}

// `chunk`: the CPU's; the GPU kernels use their own chunk lengths (the result does not depend on it)
static void ssd_forward_cuda(floatX* y, float* final_state, const floatX* x, const floatX* dt, const float* A,
                             const floatX* Bm, const floatX* Cm, const float* D, const float* h0, int B, int L, int H,
                             int P, int G, int N, int chunk) {
    ssd_check_shape("ssd_forward", B, L, H, P, G, N);
    (void)chunk;
    if (B == 0 || L == 0) return;
    if (!ssd_tc_ok(P, N, {y, final_state, x, Bm, Cm, h0})) {
        ssd_forward_simt_cuda(y, final_state, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G, N);
        return;
    }
    constexpr int Q = SSD_TC_CHUNK_FWD;
    const bool pt64 = P % 64 == 0;
    if (N == 128 && pt64) ssd_tc_forward<Q, 128, 64>(y, final_state, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G);
    else if (N == 128) ssd_tc_forward<Q, 128, 32>(y, final_state, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G);
    else if (pt64) ssd_tc_forward<Q, 64, 64>(y, final_state, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G);
    else ssd_tc_forward<Q, 64, 32>(y, final_state, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G);
}

// every gradient accumulates (+=); dx, ddt, dBm, dCm must not be nullptr here; dA and dD may be
// nullptr (frozen A_log / D: not written; the other gradients are the same bits), as may dh0.
// GRAD_SET: dx, ddt, dBm and dCm are set (the tensor-core kernel does not read them; the plain path
// zeroes them first), the parameter and state gradients still added
static void ssd_backward_cuda(floatX* dx, floatX* ddt, float* dA, floatX* dBm, floatX* dCm, float* dD, float* dh0,
                              const floatX* dy, const float* dfinal_state, const floatX* x, const floatX* dt,
                              const float* A, const floatX* Bm, const floatX* Cm, const float* D, const float* h0,
                              int B, int L, int H, int P, int G, int N, GradWrite grad_write = GRAD_ADD) {
    ssd_check_shape("ssd_backward", B, L, H, P, G, N);
    if (!dx || !ddt || !dBm || !dCm) FATAL("ssd_backward_cuda: dx, ddt, dBm and dCm are required");
    if (B == 0 || L == 0) return;
    if (!ssd_tc_ok(P, N, {dx, dBm, dCm, dh0, dy, dfinal_state, x, Bm, Cm, h0})) {
        if (grad_write == GRAD_SET) ssd_zero_input_grads(true, dx, ddt, dBm, dCm, B, L, H, P, G, N);
        ssd_backward_simt_cuda(dx, ddt, dA, dBm, dCm, dD, dh0, dy, dfinal_state, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G, N);
        return;
    }
    constexpr int Q = SSD_TC_CHUNK_BWD;
    const bool pt64 = P % 64 == 0;
    if (N == 128 && pt64) ssd_tc_backward<Q, 128, 64>(dx, ddt, dA, dBm, dCm, dD, dh0, dy, dfinal_state, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G,
                                                       grad_write);
    else if (N == 128) ssd_tc_backward<Q, 128, 32>(dx, ddt, dA, dBm, dCm, dD, dh0, dy, dfinal_state, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G,
                                                       grad_write);
    else if (pt64) ssd_tc_backward<Q, 64, 64>(dx, ddt, dA, dBm, dCm, dD, dh0, dy, dfinal_state, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G,
                                                       grad_write);
    else ssd_tc_backward<Q, 64, 32>(dx, ddt, dA, dBm, dCm, dD, dh0, dy, dfinal_state, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G,
                                                       grad_write);
}

// ---------------------------------------------------------------------------
// CUDA, the recurrent step

// one token: y, x (B, H, P); dt (B, H); Bm, Cm (B, G, N); state (B, H, P, N) in place.
// One thread per (b, h, p), looping over N.
// one warp per state row (b, h, p): the lanes stride over n (coalesced rows of the state), y is a
// warp sum. (A thread per row walking its N states gives 1536 threads at the mamba2-130m shape,
// each thread's loads 512 bytes apart from its neighbours'.)
__global__ void ssd_step_kernel(floatX* y, float* state, const floatX* x, const floatX* dt, const float* A,
                                const floatX* Bm, const floatX* Cm, const float* D, int B, int H, int P, int G, int N) {
    const size_t i = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;  // the row: x, y and the state are indexed by it
    const int lane = threadIdx.x % 32;
    if (i >= (size_t)B * H * P) return;
    const int h = (int)((i / P) % H), b = (int)(i / ((size_t)P * H)), g = h / (H / G);
    const float d = (float)dt[(size_t)b * H + h], a = expf(d * A[h]), xp = (float)x[i];
    const floatX* Bt = Bm + ((size_t)b * G + g) * N;
    const floatX* Ct = Cm + ((size_t)b * G + g) * N;
    float* s = state + i * N;
    float acc = 0.0f;
    for (int n = lane; n < N; n += 32) {
        const float v = a * s[n] + d * xp * (float)Bt[n];
        s[n] = v;
        acc += v * (float)Ct[n];
    }
    acc = warp_sum(acc);
    if (lane == 0) y[i] = (floatX)(acc + D[h] * xp);
}

static void ssd_step_cuda(floatX* y, float* state, const floatX* x, const floatX* dt, const float* A,
                          const floatX* Bm, const floatX* Cm, const float* D, int B, int H, int P, int G, int N) {
    ssd_check_shape("ssd_step", B, 1, H, P, G, N);
    size_t rows = (size_t)B * H * P;
    if (rows == 0) return;
    ssd_step_kernel<<<(unsigned)((rows * 32 + 255) / 256), 256, 0, launch_stream()>>>(y, state, x, dt, A, Bm, Cm, D, B, H, P, G, N);
    cudaCheckLaunch();
}
#endif  // __CUDACC__

// ---------------------------------------------------------------------------
// backend wrappers (common.h): what a model calls. The forward is the chunked algorithm.

static void ssd_forward(bool on_gpu, floatX* y, float* final_state, const floatX* x, const floatX* dt,
                        const float* A, const floatX* Bm, const floatX* Cm, const float* D, const float* h0,
                        int B, int L, int H, int P, int G, int N, int chunk) {
    if (on_gpu) GPU_CALL(ssd_forward_cuda(y, final_state, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G, N, chunk));
    else ssd_forward_chunked_cpu(y, final_state, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G, N, chunk);
}

static void ssd_backward(bool on_gpu, floatX* dx, floatX* ddt, float* dA, floatX* dBm, floatX* dCm, float* dD,
                         float* dh0, const floatX* dy, const float* dfinal_state, const floatX* x, const floatX* dt,
                         const float* A, const floatX* Bm, const floatX* Cm, const float* D, const float* h0,
                         int B, int L, int H, int P, int G, int N, GradWrite grad_write = GRAD_ADD) {
    if (on_gpu) GPU_CALL(ssd_backward_cuda(dx, ddt, dA, dBm, dCm, dD, dh0, dy, dfinal_state, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G, N,
                                           grad_write));
    else ssd_backward_cpu(dx, ddt, dA, dBm, dCm, dD, dh0, dy, dfinal_state, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G, N, grad_write);
}

static void ssd_step(bool on_gpu, floatX* y, float* state, const floatX* x, const floatX* dt, const float* A,
                     const floatX* Bm, const floatX* Cm, const float* D, int B, int H, int P, int G, int N) {
    if (on_gpu) GPU_CALL(ssd_step_cuda(y, state, x, dt, A, Bm, Cm, D, B, H, P, G, N));
    else ssd_step_cpu(y, state, x, dt, A, Bm, Cm, D, B, H, P, G, N);
}
