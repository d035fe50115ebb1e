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
// the CUDA version (chunked, v1 SIMT); the backend wrappers.
#pragma once
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
static void ssd_backward_cpu(floatX* dx, floatX* ddt, float* dA, floatX* dBm, floatX* dCm, float* dD, float* dh0,
                             const floatX* dy, const float* dfinal_state, const floatX* x, const floatX* dt,
                             const float* A, const floatX* Bm, const floatX* Cm, const float* D, const float* h0,
                             int B, int L, int H, int P, int G, int N) {
    ssd_check_shape("ssd_backward", B, L, H, P, G, N);
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
// The chunked algorithm on the GPU (v1: SIMT fp32, one thread block per (chunk, head, batch);
// dev/ssd.cu times it against the floor and the official Triton kernels). The kernels use
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
// over chunks and b) use one float atomic per block.
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
    // Gm[t][s] = exp(cs_t - cs_s) C_t . B_s for s <= t
    for (int i = threadIdx.x; i < Qc * Qc; i += blockDim.x) {
        int t = i / Qc, s = i % Qc;
        float acc = 0.0f;
        if (s <= t) {
            for (int n = 0; n < N; n++) acc += Cs[t * NS + n] * Bs[s * NS + n];
            acc *= expf(cs[t] - cs[s]);
        }
        Gm[t * Q + s] = acc;
    }
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
    // Gm[t][s] = exp(cs_t - cs_s) C_t . B_s (s <= t)
    for (int i = threadIdx.x; i < Qc * Qc; i += blockDim.x) {
        int t = i / Qc, s = i % Qc;
        float acc = 0.0f;
        if (s <= t) {
            for (int n = 0; n < N; n++) acc += Cs[t * NS + n] * Bs[s * NS + n];
            acc *= expf(cs[t] - cs[s]);
        }
        Gm[t * Q + s] = acc;
    }
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
        atomicAdd(&dA[h], a_acc);
        atomicAdd(&dD[h], red[0]);
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
    ssd_outer_kernel<<<dim3(nc, H, B), 256, sm1 * sizeof(float)>>>(states, x, dt, A, Bm, B, L, H, P, G, N, 0);
    cudaCheckLaunch();
    ssd_pass_kernel<<<dim3(H, B), 256, nc * sizeof(float)>>>(states, final_state, h0, dt, A, L, H, P, N, nc);
    cudaCheckLaunch();
}

// `chunk`: the CPU's; the kernels use SSD_CUDA_CHUNK
static void ssd_forward_cuda(floatX* y, float* final_state, const floatX* x, const floatX* dt, const float* A,
                             const floatX* Bm, const floatX* Cm, const float* D, const float* h0, int B, int L, int H,
                             int P, int G, int N, int chunk) {
    ssd_check_shape("ssd_forward", B, L, H, P, G, N);
    (void)chunk;
    if (B == 0 || L == 0) return;
    static DeviceScratch states_buf;
    int nc = ceil_div(L, SSD_CUDA_CHUNK);
    float* states = states_buf.get((size_t)B * nc * H * P * N);
    ssd_chunk_states_cuda(states, final_state, x, dt, A, Bm, h0, B, L, H, P, G, N);
    size_t sm3 = ssd_smem_out(P, N);
    ssd_set_smem((const void*)ssd_out_kernel, sm3, "ssd_forward");
    ssd_out_kernel<<<dim3(nc, H, B), 256, sm3 * sizeof(float)>>>(y, x, dt, A, Bm, Cm, D, states, B, L, H, P, G, N);
    cudaCheckLaunch();
}

// every gradient accumulates (+=); dx, ddt, dBm, dCm must not be nullptr here
static void ssd_backward_cuda(floatX* dx, floatX* ddt, float* dA, floatX* dBm, floatX* dCm, float* dD, float* dh0,
                              const floatX* dy, const float* dfinal_state, const floatX* x, const floatX* dt,
                              const float* A, const floatX* Bm, const floatX* Cm, const float* D, const float* h0,
                              int B, int L, int H, int P, int G, int N) {
    ssd_check_shape("ssd_backward", B, L, H, P, G, N);
    if (!dx || !ddt || !dBm || !dCm || !dA || !dD) FATAL("ssd_backward_cuda: dx, ddt, dA, dBm, dCm and dD are required");
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
    ssd_outer_kernel<<<dim3(nc, H, B), 256, sm1 * sizeof(float)>>>(dS, dy, dt, A, Cm, B, L, H, P, G, N, 1);
    cudaCheckLaunch();
    ssd_pass_backward_kernel<<<dim3(H, B), 256, 2 * nc * sizeof(float)>>>(dS, dcl, dh0, dfinal_state, states, dt, A, L, H, P, N, nc);
    cudaCheckLaunch();
    size_t sm6 = ssd_smem_chunk_backward(P, N);
    ssd_set_smem((const void*)ssd_chunk_backward_kernel, sm6, "ssd_backward");
    ssd_chunk_backward_kernel<<<dim3(nc, H, B), 256, sm6 * sizeof(float)>>>(dx, ddt, dA, dBh, dCh, dD, dy, x, dt, A, Bm, Cm, D,
                                                                             states, dS, dcl, B, L, H, P, G, N);
    cudaCheckLaunch();
    size_t n_groups = (size_t)B * L * G * N;
    unsigned grid = (unsigned)((n_groups + 255) / 256);
    ssd_group_sum_kernel<<<grid, 256>>>(dBm, dBh, B, L, H, G, N);
    ssd_group_sum_kernel<<<grid, 256>>>(dCm, dCh, B, L, H, G, N);
    cudaCheckLaunch();
}

// one token: y, x (B, H, P); dt (B, H); Bm, Cm (B, G, N); state (B, H, P, N) in place.
// One thread per (b, h, p), looping over N.
__global__ void ssd_step_kernel(floatX* y, float* state, const floatX* x, const floatX* dt, const float* A,
                                const floatX* Bm, const floatX* Cm, const float* D, int B, int H, int P, int G, int N) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * H * P) return;
    int h = (i / P) % H, b = i / (P * H), g = h / (H / G);  // p = i % P: x, y and state rows are indexed by i
    float d = (float)dt[(size_t)b * H + h], a = expf(d * A[h]), xp = (float)x[i], acc = 0.0f;
    const floatX* Bt = Bm + ((size_t)b * G + g) * N;
    const floatX* Ct = Cm + ((size_t)b * G + g) * N;
    float* s = state + (size_t)i * N;
    for (int n = 0; n < N; n++) {
        s[n] = a * s[n] + d * xp * (float)Bt[n];
        acc += s[n] * (float)Ct[n];
    }
    y[i] = (floatX)(acc + D[h] * xp);
}

static void ssd_step_cuda(floatX* y, float* state, const floatX* x, const floatX* dt, const float* A,
                          const floatX* Bm, const floatX* Cm, const float* D, int B, int H, int P, int G, int N) {
    ssd_check_shape("ssd_step", B, 1, H, P, G, N);
    int n = B * H * P;
    if (n == 0) return;
    ssd_step_kernel<<<ceil_div(n, 128), 128>>>(y, state, x, dt, A, Bm, Cm, D, B, H, P, G, N);
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
                         int B, int L, int H, int P, int G, int N) {
    if (on_gpu) GPU_CALL(ssd_backward_cuda(dx, ddt, dA, dBm, dCm, dD, dh0, dy, dfinal_state, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G, N));
    else ssd_backward_cpu(dx, ddt, dA, dBm, dCm, dD, dh0, dy, dfinal_state, x, dt, A, Bm, Cm, D, h0, B, L, H, P, G, N);
}

static void ssd_step(bool on_gpu, floatX* y, float* state, const floatX* x, const floatX* dt, const float* A,
                     const floatX* Bm, const floatX* Cm, const float* D, int B, int H, int P, int G, int N) {
    if (on_gpu) GPU_CALL(ssd_step_cuda(y, state, x, dt, A, Bm, Cm, D, B, H, P, G, N));
    else ssd_step_cpu(y, state, x, dt, A, Bm, Cm, D, B, H, P, G, N);
}
