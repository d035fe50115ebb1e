// mamba2.h: the Mamba-2 mixer block (Dao & Gu 2024; the reference is state-spaces/mamba,
// mamba_ssm/modules/mamba2.py) as a component: forward, hand-written backward and the recurrent
// step for generation. CPU reference; the CUDA version has its place below (not written yet).
//
// Sizes (Mamba2Config): D = d_model, E = expand*D (d_inner), P = headdim, H = E/P (nheads),
// G = ngroups, N = d_state, K = d_conv, C = E + 2GN (conv channels), Z = 2E + 2GN + H (in_proj
// rows), NG = norm_groups (the gated RMSNorm's groups of E/NG channels). BL = B*L rows.
//
//   [z | xBC | dt_raw] = inp @ in_proj_w^T        (BL, E) | (BL, C) | (BL, H)          no bias
//   xBCc          = silu(conv1d(xBC))              depthwise causal, width K, with bias (conv1d.h)
//   [x | Bm | Cm] = xBCc                           (BL, E) | (BL, GN) | (BL, GN)
//                                                  x viewed (B, L, H, P); Bm, Cm viewed (B, L, G, N)
//   dt            = softplus(dt_raw + dt_bias)     (BL, H)
//   A             = -exp(A_log)                    (H)
//   y             = SSD(x, dt, A, Bm, Cm, D)       (BL, E) viewed (B, L, H, P); ssd.h, chunked, the
//                                                  D skip inside, zero initial state
//   g             = y * silu(z)                    (BL, E)
//   yn            = g * rstd * norm_w              rstd = 1/sqrt(mean(g^2) + 1e-5) over each group
//                                                  of E/NG channels (norm_before_gate=False)
//   out           = yn @ out_proj_w^T              (BL, D)                               no bias
//
// Defaults (mamba2_config_default): N 128, P 64, G 1, expand 2, K 4, chunk 256, NG 1 (the norm
// over all E channels; the reference's RMSNormGated uses group_size E/G, i.e. NG = G: set
// norm_groups = ngroups for that; with G = 1 both are the same).
//
// Parameters (Mamba2Params: views into a flat buffer; names as the reference's state dict, after
// the caller's prefix, e.g. "layers.3.mixer."):
//   in_proj.weight  (Z, D)  rows [0,E) -> z, [E,2E) -> x, [2E,2E+GN) -> B, [2E+GN,2E+2GN) -> C,
//                           [2E+2GN, Z) -> dt   (the reference's order [z, x, B, C, dt])
//   conv1d.weight   (C, K)  (the reference's (C, 1, K))     conv1d.bias (C)
//   dt_bias (H)   A_log (H)   D (H)   norm.weight (E)   out_proj.weight (D, E)
// Init (mamba2_init_params, the reference's): in_proj, conv1d weight and bias, out_proj:
// U(+-1/sqrt(fan_in)) (nn.Linear / nn.Conv1d defaults; fan_in D, K, E; out_proj times an optional
// scale, e.g. 1/sqrt(n_layer) as a model's prenorm rescale); A_log = log(U[1, 16]); dt_bias =
// softplus^-1(dt), dt log-uniform in [1e-3, 0.1] floored at 1e-4; D = 1; norm.weight = 1.
//
// Activations (Mamba2Acts, what the backward reads; mamba2_layout_acts carves them from an Arena):
//   z (BL, E), xBC (BL, C) the conv input, x (BL, E), Bm, Cm (BL, GN), dt_raw, dt (BL, H),
//   y (BL, E) the SSD output, rstd (BL, NG), yn (BL, E) the out_proj input.
// The backward recomputes the conv's pre-activation (conv1d_silu_backward_cpu), the SSD states
// (ssd_backward_cpu), the gate g = y * silu(z) and A = -exp(A_log); the block input `inp` is
// passed to the backward again (as to linear_backward), not kept.
//
// Recurrent step (mamba2_step_cpu), one token per batch row: conv_state (B, C, K-1) the last K-1
// conv inputs, oldest first (conv1d_step_cpu's layout); ssm_state (B, H, P, N). Both start at zero;
// the forward can write them after its last token (prefill, then step).
//
// Backward: every gradient is ACCUMULATED (+=), including dinp; any gradient pointer may be
// nullptr (a frozen tensor: its gradient is not computed). Deterministic: every component used
// sums in a fixed order, so the results are the same bits for any number of OpenMP threads.
#pragma once
#include <string>
#include "common.h"
#include "params.h"
#include "activations.h"
#include "conv1d.h"
#include "linear.h"
#include "rmsnorm.h"
#include "ssd.h"

// the reference's init constants
#define MAMBA2_A_INIT_MIN 1.0f
#define MAMBA2_A_INIT_MAX 16.0f
#define MAMBA2_DT_MIN 1e-3f
#define MAMBA2_DT_MAX 0.1f
#define MAMBA2_DT_INIT_FLOOR 1e-4f

typedef struct {
    int d_model, d_state, d_conv, expand, headdim, ngroups, chunk, norm_groups;
    // derived (mamba2_config_derive)
    int d_inner;    // E = expand * d_model
    int nheads;     // H = E / headdim
    int conv_dim;   // C = E + 2 G N
    int d_in_proj;  // Z = 2E + 2GN + H
} Mamba2Config;

// checks the sizes and fills the derived fields; FATAL on a shape the block cannot take
static void mamba2_config_derive(Mamba2Config* c) {
    if (c->d_model < 1 || c->d_state < 1 || c->d_conv < 1 || c->expand < 1 || c->headdim < 1 || c->ngroups < 1 ||
        c->chunk < 1 || c->norm_groups < 1)
        FATAL("mamba2 config: every size must be positive (d_model %d, d_state %d, d_conv %d, expand %d, headdim %d, "
              "ngroups %d, chunk %d, norm_groups %d)", c->d_model, c->d_state, c->d_conv, c->expand, c->headdim,
              c->ngroups, c->chunk, c->norm_groups);
    c->d_inner = c->expand * c->d_model;
    if (c->d_inner % c->headdim != 0)
        FATAL("mamba2 config: headdim %d must divide d_inner %d", c->headdim, c->d_inner);
    c->nheads = c->d_inner / c->headdim;
    if (c->nheads % c->ngroups != 0)
        FATAL("mamba2 config: ngroups %d must divide nheads %d", c->ngroups, c->nheads);
    if (c->d_inner % c->norm_groups != 0)
        FATAL("mamba2 config: norm_groups %d must divide d_inner %d", c->norm_groups, c->d_inner);
    c->conv_dim = c->d_inner + 2 * c->ngroups * c->d_state;
    c->d_in_proj = c->d_inner + c->conv_dim + c->nheads;
}

// the reference's defaults for a given d_model, derived
static Mamba2Config mamba2_config_default(int d_model) {
    Mamba2Config c = {};
    c.d_model = d_model; c.d_state = 128; c.d_conv = 4; c.expand = 2; c.headdim = 64; c.ngroups = 1;
    c.chunk = 256; c.norm_groups = 1;
    mamba2_config_derive(&c);
    return c;
}

// indices of the block's tensors in a ParamStore
typedef struct {
    int in_proj_w, conv_w, conv_b, dt_bias, A_log, D, norm_w, out_proj_w;
} Mamba2Index;

// pointers of the block's parameters (or their gradients) inside a flat buffer
typedef struct {
    float* in_proj_w;   // (Z, D): [z (E) | x (E) | B (GN) | C (GN) | dt (H)]
    float* conv_w;      // (C, K)
    float* conv_b;      // (C)
    float* dt_bias;     // (H)
    float* A_log;       // (H)
    float* D;           // (H)
    float* norm_w;      // (E)
    float* out_proj_w;  // (D, E)
} Mamba2Params;

// activations the forward writes and the backward reads
typedef struct {
    floatX* z;       // (BL, E) the gate
    floatX* xBC;     // (BL, C) the conv input
    floatX* x;       // (BL, E) the SSD input (after conv + SiLU)
    floatX* Bm;      // (BL, GN)
    floatX* Cm;      // (BL, GN)
    floatX* dt_raw;  // (BL, H) in_proj's dt columns, before the bias
    floatX* dt;      // (BL, H) softplus(dt_raw + dt_bias)
    floatX* y;       // (BL, E) the SSD output (D skip included), before the gate
    float* rstd;     // (BL, NG)
    floatX* yn;      // (BL, E) the gated norm's output (out_proj's input)
} Mamba2Acts;

// ---------------------------------------------------------------------------
// parameters

// declares the block's tensors as prefix + the reference's names; AdamW decay on the matrices
// (in_proj, conv1d and out_proj weights), not on conv1d.bias, dt_bias, A_log, D, norm.weight
static Mamba2Index mamba2_declare_params(ParamStore* ps, const std::string& prefix, const Mamba2Config& c) {
    const bool decay = true, no_decay = false;
    int D = c.d_model, E = c.d_inner, H = c.nheads, C = c.conv_dim, K = c.d_conv, Z = c.d_in_proj;
    Mamba2Index ix;
    ix.in_proj_w = params_add(ps, prefix + "in_proj.weight", {Z, D}, decay);
    ix.conv_w = params_add(ps, prefix + "conv1d.weight", {C, K}, decay);
    ix.conv_b = params_add(ps, prefix + "conv1d.bias", {C}, no_decay);
    ix.dt_bias = params_add(ps, prefix + "dt_bias", {H}, no_decay);
    ix.A_log = params_add(ps, prefix + "A_log", {H}, no_decay);
    ix.D = params_add(ps, prefix + "D", {H}, no_decay);
    ix.norm_w = params_add(ps, prefix + "norm.weight", {E}, no_decay);
    ix.out_proj_w = params_add(ps, prefix + "out_proj.weight", {D, E}, decay);
    return ix;
}

// views into a buffer laid out like ps->params (the parameters themselves or a host copy)
static Mamba2Params mamba2_views(const ParamStore* ps, float* base, const Mamba2Index& ix) {
    auto at = [&](int i) { return base + ps->tensors[i].offset; };
    return {at(ix.in_proj_w), at(ix.conv_w), at(ix.conv_b), at(ix.dt_bias),
            at(ix.A_log),     at(ix.D),      at(ix.norm_w), at(ix.out_proj_w)};
}

// gradient views: nullptr for a frozen tensor or a store without gradients
static Mamba2Params mamba2_grad_views(const ParamStore* ps, const Mamba2Index& ix) {
    return {param_grad(ps, ix.in_proj_w), param_grad(ps, ix.conv_w), param_grad(ps, ix.conv_b),
            param_grad(ps, ix.dt_bias),   param_grad(ps, ix.A_log),  param_grad(ps, ix.D),
            param_grad(ps, ix.norm_w),    param_grad(ps, ix.out_proj_w)};
}

// the reference's initialisation, on host views (see the top of the file). out_proj_scale
// multiplies out_proj's bound (1: nn.Linear's default).
static void mamba2_init_params(const Mamba2Params& p, const Mamba2Config& c, Rng* rng, float out_proj_scale = 1.0f) {
    int D = c.d_model, E = c.d_inner, H = c.nheads, C = c.conv_dim, K = c.d_conv, Z = c.d_in_proj;
    auto uniform = [&](float* w, size_t n, float bound) {
        for (size_t i = 0; i < n; i++) w[i] = bound * (2.0f * rng_uniform(rng) - 1.0f);
    };
    uniform(p.in_proj_w, (size_t)Z * D, 1.0f / sqrtf((float)D));
    uniform(p.conv_w, (size_t)C * K, 1.0f / sqrtf((float)K));   // fan_in = (in_channels / groups) * K = K
    uniform(p.conv_b, (size_t)C, 1.0f / sqrtf((float)K));
    uniform(p.out_proj_w, (size_t)D * E, out_proj_scale / sqrtf((float)E));
    const float lo = logf(MAMBA2_DT_MIN), hi = logf(MAMBA2_DT_MAX);
    for (int h = 0; h < H; h++) {
        // dt log-uniform in [dt_min, dt_max], floored; dt_bias = softplus^-1(dt) = dt + log(-expm1(-dt))
        float dt = expf(lo + rng_uniform(rng) * (hi - lo));
        dt = fmaxf(dt, MAMBA2_DT_INIT_FLOOR);
        p.dt_bias[h] = dt + logf(-expm1f(-dt));
        // A uniform in [1, 16], stored as log
        float A = MAMBA2_A_INIT_MIN + rng_uniform(rng) * (MAMBA2_A_INIT_MAX - MAMBA2_A_INIT_MIN);
        p.A_log[h] = logf(A);
        p.D[h] = 1.0f;
    }
    for (int e = 0; e < E; e++) p.norm_w[e] = 1.0f;
}

// ---------------------------------------------------------------------------
// activations: carved from an arena (params.h), run twice (count, then place)

static void mamba2_layout_acts(Mamba2Acts* a, Arena* ar, const Mamba2Config& c, int B, int L) {
    size_t BL = (size_t)B * L, E = c.d_inner, GN = (size_t)c.ngroups * c.d_state, H = c.nheads;
    a->z = arena_take<floatX>(ar, BL * E);
    a->xBC = arena_take<floatX>(ar, BL * c.conv_dim);
    a->x = arena_take<floatX>(ar, BL * E);
    a->Bm = arena_take<floatX>(ar, BL * GN);
    a->Cm = arena_take<floatX>(ar, BL * GN);
    a->dt_raw = arena_take<floatX>(ar, BL * H);
    a->dt = arena_take<floatX>(ar, BL * H);
    a->y = arena_take<floatX>(ar, BL * E);
    a->rstd = arena_take<float>(ar, BL * c.norm_groups);
    a->yn = arena_take<floatX>(ar, BL * E);
}

// bytes mamba2_layout_acts takes for (B, L)
static size_t mamba2_acts_bytes(const Mamba2Config& c, int B, int L) {
    Mamba2Acts a;
    Arena count = {nullptr, 0};
    mamba2_layout_acts(&a, &count, c, B, L);
    return count.used;
}

// ---------------------------------------------------------------------------
// CPU reference

static void mamba2_check_shape(const char* who, const Mamba2Config& c, int B, int L) {
    if (B < 1 || L < 1) FATAL("%s: bad shape B=%d L=%d", who, B, L);
    if (c.d_inner != c.expand * c.d_model || c.nheads * c.headdim != c.d_inner ||
        c.conv_dim != c.d_inner + 2 * c.ngroups * c.d_state || c.d_in_proj != c.d_inner + c.conv_dim + c.nheads ||
        c.norm_groups < 1 || c.d_inner % c.norm_groups != 0 || c.chunk < 1)
        FATAL("%s: the config is not derived (call mamba2_config_derive)", who);
}

// Gated RMSNorm (norm_before_gate=False): g = y * silu(z); out = g * rstd * w, rstd per group of
// E/NG channels. y, z, out: (N, E); w: (E); rstd: (N, NG)
static void mamba2_gated_rmsnorm_forward_cpu(floatX* out, float* rstd, const floatX* y, const floatX* z,
                                             const float* w, int N, int E, int NG) {
    int Eg = E / NG;
#pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int q = 0; q < NG; q++) {
            size_t o = (size_t)n * E + (size_t)q * Eg;
            float ss = 0.0f;
            for (int c = 0; c < Eg; c++) {
                float g = (float)y[o + c] * silu_f((float)z[o + c]);
                ss += g * g;
            }
            float r = 1.0f / sqrtf(ss / Eg + RMSNORM_EPS);
            rstd[(size_t)n * NG + q] = r;
            for (int c = 0; c < Eg; c++) {
                float g = (float)y[o + c] * silu_f((float)z[o + c]);
                out[o + c] = (floatX)(g * r * w[q * Eg + c]);
            }
        }
}

// Its backward (g recomputed from y and z): with a = dout * w,
//   dg = rstd * (a - g * rstd^2 * mean_group(a * g));  dw += sum_n dout * g * rstd
//   dy += dg * silu(z);  dz += dg * y * silu'(z)
// Every gradient accumulates; any may be nullptr.
static void mamba2_gated_rmsnorm_backward_cpu(floatX* dy, floatX* dz, float* dw, const floatX* dout, const floatX* y,
                                              const floatX* z, const float* w, const float* rstd, int N, int E,
                                              int NG) {
    int Eg = E / NG;
    if (dy || dz) {
#pragma omp parallel for
        for (int n = 0; n < N; n++)
            for (int q = 0; q < NG; q++) {
                size_t o = (size_t)n * E + (size_t)q * Eg;
                float r = rstd[(size_t)n * NG + q];
                float dot = 0.0f;  // sum_c a * g
                for (int c = 0; c < Eg; c++)
                    dot += (float)dout[o + c] * w[q * Eg + c] * (float)y[o + c] * silu_f((float)z[o + c]);
                float k = r * r * dot / Eg;
                for (int c = 0; c < Eg; c++) {
                    float yv = (float)y[o + c], zv = (float)z[o + c], sz = silu_f(zv);
                    float dg = r * ((float)dout[o + c] * w[q * Eg + c] - yv * sz * k);
                    if (dy) dy[o + c] = (floatX)((float)dy[o + c] + dg * sz);
                    if (dz) dz[o + c] = (floatX)((float)dz[o + c] + dg * yv * silu_grad_f(zv));
                }
            }
    }
    if (!dw) return;
    // threads split the columns; each column is summed over the rows in order (same bits for any thread count)
    const int CB = 16;
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < E; c0 += CB) {
        int c1 = c0 + CB < E ? c0 + CB : E;
        float acc[CB] = {0.0f};
        for (int n = 0; n < N; n++)
            for (int c = c0; c < c1; c++) {
                size_t o = (size_t)n * E + c;
                float g = (float)y[o] * silu_f((float)z[o]);
                acc[c - c0] += (float)dout[o] * g * rstd[(size_t)n * NG + c / Eg];
            }
        for (int c = c0; c < c1; c++) dw[c] += acc[c - c0];
    }
}

// A = -exp(A_log)
static std::vector<float> mamba2_A(const float* A_log, int H) {
    std::vector<float> A(H);
    for (int h = 0; h < H; h++) A[h] = -expf(A_log[h]);
    return A;
}

// inp, out: (B, L, D). The activations `a` are written (mamba2_layout_acts for (B, L)).
// conv_state_out (B, C, K-1) and ssm_state_out (B, H, P, N), when not nullptr, receive the
// recurrent state after the last token (the conv's last K-1 inputs, zeros before t = 0), so
// mamba2_step_cpu can go on from there.
static void mamba2_block_forward_cpu(floatX* out, const Mamba2Acts& a, const floatX* inp, const Mamba2Params& p,
                                     const Mamba2Config& c, int B, int L, float* conv_state_out = nullptr,
                                     float* ssm_state_out = nullptr) {
    mamba2_check_shape("mamba2_block_forward", c, B, L);
    int BL = B * L, D = c.d_model, E = c.d_inner, H = c.nheads, P = c.headdim, G = c.ngroups, N = c.d_state;
    int C = c.conv_dim, K = c.d_conv, GN = G * N;
    // in_proj as three GEMMs over contiguous row blocks of the weight: z, xBC, dt_raw
    linear_forward_cpu(a.z, inp, p.in_proj_w, nullptr, BL, D, E);
    linear_forward_cpu(a.xBC, inp, p.in_proj_w + (size_t)E * D, nullptr, BL, D, C);
    linear_forward_cpu(a.dt_raw, inp, p.in_proj_w + (size_t)(E + C) * D, nullptr, BL, D, H);
    // conv1d + SiLU over [x | B | C], then split into the SSD's contiguous inputs
    std::vector<floatX> xBCc((size_t)BL * C);
    conv1d_silu_forward_cpu(xBCc.data(), a.xBC, p.conv_w, p.conv_b, B, L, C, K);
    split_columns_cpu(a.x, a.Bm, a.Cm, xBCc.data(), BL, E, GN, GN);
    // dt = softplus(dt_raw + dt_bias)
#pragma omp parallel for
    for (int i = 0; i < BL; i++)
        for (int h = 0; h < H; h++)
            a.dt[(size_t)i * H + h] = (floatX)softplus_f((float)a.dt_raw[(size_t)i * H + h] + p.dt_bias[h]);
    std::vector<float> A = mamba2_A(p.A_log, H);
    ssd_forward_chunked_cpu(a.y, ssm_state_out, a.x, a.dt, A.data(), a.Bm, a.Cm, p.D, nullptr, B, L, H, P, G, N,
                            c.chunk);
    mamba2_gated_rmsnorm_forward_cpu(a.yn, a.rstd, a.y, a.z, p.norm_w, BL, E, c.norm_groups);
    linear_forward_cpu(out, a.yn, p.out_proj_w, nullptr, BL, E, D);
    if (conv_state_out)
        for (int b = 0; b < B; b++)
            for (int ch = 0; ch < C; ch++)
                for (int k = 0; k < K - 1; k++) {
                    int t = L - (K - 1) + k;
                    conv_state_out[((size_t)b * C + ch) * (K - 1) + k] =
                        t >= 0 ? (float)a.xBC[((size_t)b * L + t) * C + ch] : 0.0f;
                }
}

// dout: (B, L, D); inp: the forward's input; a: the forward's activations. dinp (B, L, D) and
// every parameter gradient in `d` ACCUMULATE (+=); any may be nullptr (skipped). The conv's
// pre-activation, the SSD states and the gate are recomputed (see the top of the file).
static void mamba2_block_backward_cpu(floatX* dinp, const Mamba2Params& d, const floatX* dout, const floatX* inp,
                                      const Mamba2Params& p, const Mamba2Acts& a, const Mamba2Config& c, int B,
                                      int L) {
    mamba2_check_shape("mamba2_block_backward", c, B, L);
    int BL = B * L, D = c.d_model, E = c.d_inner, H = c.nheads, P = c.headdim, G = c.ngroups, N = c.d_state;
    int C = c.conv_dim, K = c.d_conv, GN = G * N;
    size_t nE = (size_t)BL * E, nGN = (size_t)BL * GN, nH = (size_t)BL * H;
    // out_proj
    std::vector<floatX> dyn(nE, 0.0f);
    linear_backward_cpu(dyn.data(), d.out_proj_w, nullptr, dout, a.yn, p.out_proj_w, BL, E, D);
    // gated RMSNorm -> dy (the SSD output), dz
    std::vector<floatX> dy(nE, 0.0f), dz(nE, 0.0f);
    mamba2_gated_rmsnorm_backward_cpu(dy.data(), dz.data(), d.norm_w, dyn.data(), a.y, a.z, p.norm_w, a.rstd, BL, E,
                                      c.norm_groups);
    // SSD -> dx, ddt, dA, dBm, dCm, dD
    std::vector<floatX> dx(nE, 0.0f), ddt(nH, 0.0f), dBm(nGN, 0.0f), dCm(nGN, 0.0f);
    std::vector<float> A = mamba2_A(p.A_log, H), dA(H, 0.0f);
    ssd_backward_cpu(dx.data(), ddt.data(), dA.data(), dBm.data(), dCm.data(), d.D, nullptr, dy.data(), nullptr, a.x,
                     a.dt, A.data(), a.Bm, a.Cm, p.D, nullptr, B, L, H, P, G, N);
    // A = -exp(A_log): dA_log = dA * A
    if (d.A_log)
        for (int h = 0; h < H; h++) d.A_log[h] += dA[h] * A[h];
    // dt = softplus(dt_raw + dt_bias): ddt_raw = ddt * sigmoid(pre); dt_bias sums over the rows in order
    std::vector<floatX> ddt_raw(nH);
#pragma omp parallel for
    for (int i = 0; i < BL; i++)
        for (int h = 0; h < H; h++) {
            size_t j = (size_t)i * H + h;
            ddt_raw[j] = (floatX)((float)ddt[j] * softplus_grad_f((float)a.dt_raw[j] + p.dt_bias[h]));
        }
    if (d.dt_bias)
        for (int h = 0; h < H; h++) {
            float s = 0.0f;
            for (int i = 0; i < BL; i++) s += (float)ddt_raw[(size_t)i * H + h];
            d.dt_bias[h] += s;
        }
    // conv1d + SiLU (recomputes its pre-activation): d[x | B | C] -> dxBC
    bool need_conv_in = dinp || d.in_proj_w;
    std::vector<floatX> dxBC(need_conv_in ? (size_t)BL * C : 0, 0.0f);
    if (need_conv_in || d.conv_w || d.conv_b) {
        std::vector<floatX> dxBCc((size_t)BL * C);
        concat_columns_cpu(dxBCc.data(), dx.data(), dBm.data(), dCm.data(), BL, E, GN, GN);
        // conv1d_silu_backward_cpu writes every gradient: frozen ones (and an unused dxBC) go to sinks
        std::vector<float> sink_w(d.conv_w ? 0 : (size_t)C * K), sink_b(d.conv_b ? 0 : (size_t)C);
        std::vector<floatX> sink_x(need_conv_in ? 0 : (size_t)BL * C);
        conv1d_silu_backward_cpu(need_conv_in ? dxBC.data() : sink_x.data(), d.conv_w ? d.conv_w : sink_w.data(),
                                 d.conv_b ? d.conv_b : sink_b.data(), dxBCc.data(), a.xBC, p.conv_w, p.conv_b, B, L,
                                 C, K);
    }
    // in_proj, the three row blocks: dinp accumulates all three
    float* dW = d.in_proj_w;
    linear_backward_cpu(dinp, dW, nullptr, dz.data(), inp, p.in_proj_w, BL, D, E);
    linear_backward_cpu(dinp, dW ? dW + (size_t)E * D : nullptr, nullptr, need_conv_in ? dxBC.data() : nullptr, inp,
                        p.in_proj_w + (size_t)E * D, BL, D, C);
    linear_backward_cpu(dinp, dW ? dW + (size_t)(E + C) * D : nullptr, nullptr, ddt_raw.data(), inp,
                        p.in_proj_w + (size_t)(E + C) * D, BL, D, H);
}

// One token per batch row: inp, out (B, D); conv_state (B, C, K-1) and ssm_state (B, H, P, N),
// updated in place (zeros before the first token). The same arithmetic as the forward, one step:
// conv1d_step_cpu, ssd_step_cpu.
static void mamba2_step_cpu(floatX* out, float* conv_state, float* ssm_state, const floatX* inp,
                            const Mamba2Params& p, const Mamba2Config& c, int B) {
    mamba2_check_shape("mamba2_step", c, B, 1);
    int D = c.d_model, E = c.d_inner, H = c.nheads, P = c.headdim, G = c.ngroups, N = c.d_state;
    int C = c.conv_dim, K = c.d_conv, GN = G * N;
    std::vector<floatX> z((size_t)B * E), xBC((size_t)B * C), dt_raw((size_t)B * H), xBCc((size_t)B * C);
    std::vector<floatX> x((size_t)B * E), Bm((size_t)B * GN), Cm((size_t)B * GN), dt((size_t)B * H);
    std::vector<floatX> y((size_t)B * E), yn((size_t)B * E);
    std::vector<float> rstd((size_t)B * c.norm_groups);
    linear_forward_cpu(z.data(), inp, p.in_proj_w, nullptr, B, D, E);
    linear_forward_cpu(xBC.data(), inp, p.in_proj_w + (size_t)E * D, nullptr, B, D, C);
    linear_forward_cpu(dt_raw.data(), inp, p.in_proj_w + (size_t)(E + C) * D, nullptr, B, D, H);
    conv1d_step_cpu(xBCc.data(), conv_state, xBC.data(), p.conv_w, p.conv_b, B, C, K);
    silu_forward_cpu(xBCc.data(), xBCc.data(), (size_t)B * C);
    split_columns_cpu(x.data(), Bm.data(), Cm.data(), xBCc.data(), B, E, GN, GN);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            dt[(size_t)b * H + h] = (floatX)softplus_f((float)dt_raw[(size_t)b * H + h] + p.dt_bias[h]);
    std::vector<float> A = mamba2_A(p.A_log, H);
    ssd_step_cpu(y.data(), ssm_state, x.data(), dt.data(), A.data(), Bm.data(), Cm.data(), p.D, B, H, P, G, N);
    mamba2_gated_rmsnorm_forward_cpu(yn.data(), rstd.data(), y.data(), z.data(), p.norm_w, B, E, c.norm_groups);
    linear_forward_cpu(out, yn.data(), p.out_proj_w, nullptr, B, E, D);
}

// ---------------------------------------------------------------------------
// CUDA

#ifdef __CUDACC__
// The CUDA version (mamba2_block_forward_cuda / mamba2_block_backward_cuda / mamba2_step_cuda, the
// same arguments as the CPU functions above, device pointers; the backward will take a device
// workspace instead of its std::vector scratch) goes here: the linear, conv1d+SiLU and RMSNorm
// kernels as they are, the SSD's CUDA version (ssd.h, not written yet), and small kernels for the
// dt softplus and the gated RMSNorm. Not written yet: the wrappers below FATAL on the GPU.
#endif  // __CUDACC__

// ---------------------------------------------------------------------------
// backend wrappers (common.h): what a model calls

static void mamba2_block_forward(bool on_gpu, floatX* out, const Mamba2Acts& a, const floatX* inp,
                                 const Mamba2Params& p, const Mamba2Config& c, int B, int L,
                                 float* conv_state_out = nullptr, float* ssm_state_out = nullptr) {
    if (on_gpu) FATAL("the Mamba-2 block has no CUDA version yet");
    mamba2_block_forward_cpu(out, a, inp, p, c, B, L, conv_state_out, ssm_state_out);
}

static void mamba2_block_backward(bool on_gpu, floatX* dinp, const Mamba2Params& d, const floatX* dout,
                                  const floatX* inp, const Mamba2Params& p, const Mamba2Acts& a,
                                  const Mamba2Config& c, int B, int L) {
    if (on_gpu) FATAL("the Mamba-2 block has no CUDA version yet");
    mamba2_block_backward_cpu(dinp, d, dout, inp, p, a, c, B, L);
}

static void mamba2_step(bool on_gpu, floatX* out, float* conv_state, float* ssm_state, const floatX* inp,
                        const Mamba2Params& p, const Mamba2Config& c, int B) {
    if (on_gpu) FATAL("the Mamba-2 block has no CUDA version yet");
    mamba2_step_cpu(out, conv_state, ssm_state, inp, p, c, B);
}
