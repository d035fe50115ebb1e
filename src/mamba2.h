// mamba2.h: the Mamba-2 mixer block (Dao & Gu 2024; the reference is state-spaces/mamba,
// mamba_ssm/modules/mamba2.py) as a component: forward, hand-written backward and the recurrent
// step for generation. One composition of the components (linear, conv1d + SiLU, ssd, the gated
// RMSNorm) serves both backends: on_gpu picks each component's CPU reference or its CUDA version.
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
// The backward recomputes the conv's pre-activation (conv1d_silu_backward), the SSD states
// (ssd_backward), the gate g = y * silu(z) and A = -exp(A_log); the block input `inp` is
// passed to the backward again (as to linear_backward), not kept.
//
// Scratch (Mamba2Scratch, mamba2_layout_scratch from an Arena): the temporaries of the forward,
// backward and step (the conv output, A, the gradients between the components, partial column
// sums, the step's activations). One scratch serves every layer; the caller never zeroes it.
//
// Recurrent step (mamba2_step), one token per batch row: conv_state (B, C, K-1) the last K-1
// conv inputs, oldest first (conv1d_step_cpu's layout); ssm_state (B, H, P, N). Both start at zero;
// the forward can write them after its last token (prefill, then step).
//
// Backward: every gradient is ACCUMULATED (+=), including dinp; any gradient pointer may be
// nullptr (a frozen tensor: its gradient is not computed; the components take nullptr parameter
// gradients, so no discarded buffers are needed). CPU: every component sums in a fixed
// order, so the results are the same bits for any number of OpenMP threads. GPU: this file's
// sums (norm.weight, dt_bias) are per-row-block partials added in a fixed order, no atomics; the
// CUDA conv1d backward (dweight, dbias) and SSD backward (dA, dD) add with float atomics.
#pragma once
#include <string>
#include "common.h"
#include "params.h"
#include "activations.h"
#include "conv1d.h"
#include "linear.h"
#include "rmsnorm.h"
#include "ssd.h"
#include "profiler.h"

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
// scratch: the block's temporaries, carved from an arena like the activations (run twice: count,
// then place). One Mamba2Scratch serves every layer of a model: each call overwrites what it
// uses, and the block zeroes what it accumulates into, so the caller never clears it.

#define MAMBA2_PARTIAL_ROWS 32  // rows per partial of a deterministic column sum (norm dw, dt_bias)

typedef struct {
    int B, L;            // the shape it was laid out for: forward and backward take B*L rows at
                         // most, the step B rows at most
    float* A;            // (H) -exp(A_log)
    float* dA;           // (H) the SSD's dloss/dA (used only when A_log trains)
    float* col_partial;  // (ceil(BL / MAMBA2_PARTIAL_ROWS), E) partial column sums
    floatX* xBCc;        // (BL, C) the conv output [x | B | C] (forward); its gradient (backward); the GPU's
                         // fused conv (d_conv 2..4) does without it (conv1d_silu_forward_split)
    floatX* dxBC;        // (BL, C) d of the conv input
    floatX* dyn;         // (BL, E) d of out_proj's input
    floatX* dy;          // (BL, E) d of the SSD output
    floatX* dz;          // (BL, E) d of the gate
    floatX* dx;          // (BL, E) d of the SSD input
    floatX* dBm;         // (BL, GN)
    floatX* dCm;         // (BL, GN)
    floatX* ddt;         // (BL, H) d of dt
    floatX* ddt_raw;     // (BL, H) d of in_proj's dt columns
    Mamba2Acts step;     // the recurrent step's activations, (B, 1)
    floatX* step_proj;   // (B, d_in_proj) the step's in_proj output [z | xBC | dt_raw]
} Mamba2Scratch;

// partials of a column sum over N rows
static inline int mamba2_partial_count(int N) { return (N + MAMBA2_PARTIAL_ROWS - 1) / MAMBA2_PARTIAL_ROWS; }

static void mamba2_layout_scratch(Mamba2Scratch* s, Arena* ar, const Mamba2Config& c, int B, int L) {
    size_t BL = (size_t)B * L, E = c.d_inner, GN = (size_t)c.ngroups * c.d_state, H = c.nheads;
    size_t C = c.conv_dim;
    s->B = B; s->L = L;
    s->A = arena_take<float>(ar, H);
    s->dA = arena_take<float>(ar, H);
    s->col_partial = arena_take<float>(ar, (size_t)mamba2_partial_count((int)BL) * E);  // E >= H
    s->xBCc = arena_take<floatX>(ar, BL * C);
    s->dxBC = arena_take<floatX>(ar, BL * C);
    s->dyn = arena_take<floatX>(ar, BL * E);
    s->dy = arena_take<floatX>(ar, BL * E);
    s->dz = arena_take<floatX>(ar, BL * E);
    s->dx = arena_take<floatX>(ar, BL * E);
    s->dBm = arena_take<floatX>(ar, BL * GN);
    s->dCm = arena_take<floatX>(ar, BL * GN);
    s->ddt = arena_take<floatX>(ar, BL * H);
    s->ddt_raw = arena_take<floatX>(ar, BL * H);
    mamba2_layout_acts(&s->step, ar, c, B, 1);
    s->step_proj = arena_take<floatX>(ar, (size_t)B * c.d_in_proj);
}

// bytes mamba2_layout_scratch takes for (B, L)
static size_t mamba2_scratch_bytes(const Mamba2Config& c, int B, int L) {
    Mamba2Scratch s;
    Arena count = {nullptr, 0};
    mamba2_layout_scratch(&s, &count, c, B, L);
    return count.used;
}

static void mamba2_check_shape(const char* who, const Mamba2Config& c, int B, int L) {
    if (B < 1 || L < 1) FATAL("%s: bad shape B=%d L=%d", who, B, L);
    if (c.d_inner != c.expand * c.d_model || c.nheads * c.headdim != c.d_inner ||
        c.conv_dim != c.d_inner + 2 * c.ngroups * c.d_state || c.d_in_proj != c.d_inner + c.conv_dim + c.nheads ||
        c.norm_groups < 1 || c.d_inner % c.norm_groups != 0 || c.chunk < 1)
        FATAL("%s: the config is not derived (call mamba2_config_derive)", who);
}

// the scratch must hold `rows` rows (B*L for the forward and backward) and `step_rows` step rows
static void mamba2_check_scratch(const char* who, const Mamba2Scratch& s, size_t rows, int step_rows) {
    if (!s.A || rows > (size_t)s.B * s.L || step_rows > s.B)
        FATAL("%s: the scratch was laid out for B=%d L=%d (or not placed), too small here", who, s.B, s.L);
}

// ---------------------------------------------------------------------------
// the block's own small kernels: CPU reference, then CUDA, same arguments

// A = -exp(A_log): A, A_log (H)
static void mamba2_A_forward_cpu(float* A, const float* A_log, int H) {
    for (int h = 0; h < H; h++) A[h] = -expf(A_log[h]);
}

// dA_log += dA * A   (d(-exp(A_log))/dA_log = A)
static void mamba2_A_backward_cpu(float* dA_log, const float* dA, const float* A, int H) {
    for (int h = 0; h < H; h++) dA_log[h] += dA[h] * A[h];
}

// dt = softplus(dt_raw + dt_bias): dt, dt_raw (N, H); dt_bias (H)
static void mamba2_dt_forward_cpu(floatX* dt, const floatX* dt_raw, const float* dt_bias, int N, int H) {
#pragma omp parallel for
    for (int i = 0; i < N; i++)
        for (int h = 0; h < H; h++)
            dt[(size_t)i * H + h] = (floatX)softplus_f((float)dt_raw[(size_t)i * H + h] + dt_bias[h]);
}

// Every column sum here (dt_bias, the norm's weight) is in two halves with fixed orders: partial[r, c] =
// the sum of rows [r, r+1) * MAMBA2_PARTIAL_ROWS in order, then column_sums_add (common.h) adds the
// partials; so the result is the same bits for any number of threads.

// dt's backward: v = ddt * softplus'(dt_raw + dt_bias);  ddt_raw += v;  ddt_bias += sum_rows v
// ddt, dt_raw, ddt_raw (N, H); partial (ceil(N / MAMBA2_PARTIAL_ROWS), H). Either gradient may be nullptr.
static void mamba2_dt_backward_cpu(floatX* ddt_raw, float* ddt_bias, float* partial, const floatX* ddt,
                                   const floatX* dt_raw, const float* dt_bias, int N, int H) {
    if (ddt_raw) {
#pragma omp parallel for
        for (int i = 0; i < N; i++)
            for (int h = 0; h < H; h++) {
                size_t j = (size_t)i * H + h;
                float v = (float)ddt[j] * softplus_grad_f((float)dt_raw[j] + dt_bias[h]);
                ddt_raw[j] = (floatX)((float)ddt_raw[j] + v);
            }
    }
    if (!ddt_bias) return;
    int R = mamba2_partial_count(N);
#pragma omp parallel for
    for (int r = 0; r < R; r++) {
        int n1 = (r + 1) * MAMBA2_PARTIAL_ROWS < N ? (r + 1) * MAMBA2_PARTIAL_ROWS : N;
        for (int h = 0; h < H; h++) {
            float acc = 0.0f;
            for (int i = r * MAMBA2_PARTIAL_ROWS; i < n1; i++) {
                size_t j = (size_t)i * H + h;
                acc += (float)ddt[j] * softplus_grad_f((float)dt_raw[j] + dt_bias[h]);
            }
            partial[(size_t)r * H + h] = acc;
        }
    }
    column_sums_add_cpu(ddt_bias, partial, R, H);
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
// partial: (ceil(N / MAMBA2_PARTIAL_ROWS), E), dw's column sums in a fixed order.
// Every gradient accumulates; any may be nullptr.
static void mamba2_gated_rmsnorm_backward_cpu(floatX* dy, floatX* dz, float* dw, float* partial, const floatX* dout,
                                              const floatX* y, const floatX* z, const float* w, const float* rstd,
                                              int N, int E, int NG, GradWrite dyz_write = GRAD_ADD) {
    const bool add = dyz_write == GRAD_ADD;  // GRAD_SET: dy, dz from 0 (the bits of += onto zeros), not read
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
                    if (dy) dy[o + c] = (floatX)((add ? (float)dy[o + c] : 0.0f) + dg * sz);
                    if (dz) dz[o + c] = (floatX)((add ? (float)dz[o + c] : 0.0f) + dg * yv * silu_grad_f(zv));
                }
            }
    }
    if (!dw) return;
    int R = mamba2_partial_count(N);
#pragma omp parallel for
    for (int r = 0; r < R; r++) {
        float* part = partial + (size_t)r * E;
        for (int c = 0; c < E; c++) part[c] = 0.0f;
        int n1 = (r + 1) * MAMBA2_PARTIAL_ROWS < N ? (r + 1) * MAMBA2_PARTIAL_ROWS : N;
        for (int n = r * MAMBA2_PARTIAL_ROWS; n < n1; n++)
            for (int c = 0; c < E; c++) {
                size_t o = (size_t)n * E + c;
                float g = (float)y[o] * silu_f((float)z[o]);
                part[c] += (float)dout[o] * g * rstd[(size_t)n * NG + c / Eg];
            }
    }
    column_sums_add_cpu(dw, partial, R, E);
}

// the conv state after the last token: the last K-1 conv inputs, oldest first, zeros before t = 0.
// conv_state (B, C, K-1); xBC (B, L, C)
static void mamba2_conv_state_cpu(float* conv_state, const floatX* xBC, int B, int L, int C, int K) {
    for (int b = 0; b < B; b++)
        for (int ch = 0; ch < C; ch++)
            for (int k = 0; k < K - 1; k++) {
                int t = L - (K - 1) + k;
                conv_state[((size_t)b * C + ch) * (K - 1) + k] = t >= 0 ? (float)xBC[((size_t)b * L + t) * C + ch] : 0.0f;
            }
}

// One token's elementwise work between in_proj and the SSD, in one pass (a generation step is a
// chain of small launches: one here instead of five). proj (B, Z) is in_proj's output [z | xBC | dt_raw]
// (row stride Z = E + C + H, C = E + 2 GN):
//   z (B, E)                 = proj[:, :E], copied out for the gated norm
//   [x (B, E) | Bm | Cm (B, GN)] = silu(conv1d step(xBC))  conv_state (B, C, K-1) updated in place, the
//                              sums in conv1d_step_cpu's order
//   dt (B, H)                = softplus(dt_raw + dt_bias)
//   A (H)                    = -exp(A_log)
static void mamba2_step_prologue_cpu(floatX* z, floatX* x, floatX* Bm, floatX* Cm, floatX* dt, float* A, float* conv_state,
                                     const floatX* proj, const float* conv_w, const float* conv_b, const float* dt_bias,
                                     const float* A_log, int B, int E, int GN, int H, int K) {
    const int C = E + 2 * GN, Z = E + C + H;
    for (int h = 0; h < H; h++) A[h] = -expf(A_log[h]);
    for (int b = 0; b < B; b++) {
        const floatX* row = proj + (size_t)b * Z;
        for (int e = 0; e < E; e++) z[(size_t)b * E + e] = row[e];
        for (int ch = 0; ch < C; ch++) {
            float* st = conv_state + ((size_t)b * C + ch) * (K - 1);
            floatX v = (floatX)silu_f(conv1d_step_channel(st, st, conv_w + (size_t)ch * K, conv_b[ch], (float)row[E + ch], K));
            if (ch < E) x[(size_t)b * E + ch] = v;
            else if (ch < E + GN) Bm[(size_t)b * GN + ch - E] = v;
            else Cm[(size_t)b * GN + ch - E - GN] = v;
        }
        for (int h = 0; h < H; h++) dt[(size_t)b * H + h] = (floatX)softplus_f((float)row[E + C + h] + dt_bias[h]);
    }
}

#ifdef __CUDACC__
// one thread per head
__global__ void mamba2_A_forward_kernel(float* A, const float* A_log, int H) {
    int h = blockIdx.x * blockDim.x + threadIdx.x;
    if (h < H) A[h] = -expf(A_log[h]);
}
__global__ void mamba2_A_backward_kernel(float* dA_log, const float* dA, const float* A, int H) {
    int h = blockIdx.x * blockDim.x + threadIdx.x;
    if (h < H) dA_log[h] += dA[h] * A[h];
}
static void mamba2_A_forward_cuda(float* A, const float* A_log, int H) {
    mamba2_A_forward_kernel<<<ceil_div(H, 128), 128, 0, launch_stream()>>>(A, A_log, H);
    cudaCheckLaunch();
}
static void mamba2_A_backward_cuda(float* dA_log, const float* dA, const float* A, int H) {
    mamba2_A_backward_kernel<<<ceil_div(H, 128), 128, 0, launch_stream()>>>(dA_log, dA, A, H);
    cudaCheckLaunch();
}

// elementwise over (N, H), grid-stride
__global__ void mamba2_dt_forward_kernel(floatX* dt, const floatX* dt_raw, const float* dt_bias, int N, int H) {
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < (size_t)N * H; j += (size_t)gridDim.x * blockDim.x)
        dt[j] = (floatX)softplus_f((float)dt_raw[j] + dt_bias[j % H]);
}
static void mamba2_dt_forward_cuda(floatX* dt, const floatX* dt_raw, const float* dt_bias, int N, int H) {
    size_t n = (size_t)N * H;
    if (n == 0) return;
    mamba2_dt_forward_kernel<<<activations_grid(n, 256), 256, 0, launch_stream()>>>(dt, dt_raw, dt_bias, N, H);
    cudaCheckLaunch();
}

__global__ void mamba2_dt_backward_kernel(floatX* ddt_raw, const floatX* ddt, const floatX* dt_raw,
                                          const float* dt_bias, int N, int H) {
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < (size_t)N * H; j += (size_t)gridDim.x * blockDim.x) {
        float v = (float)ddt[j] * softplus_grad_f((float)dt_raw[j] + dt_bias[j % H]);
        ddt_raw[j] = (floatX)((float)ddt_raw[j] + v);
    }
}
// partial[r, h] = sum of v over rows [r, r+1) * MAMBA2_PARTIAL_ROWS in order; block (r, column block)
__global__ void mamba2_dt_bias_partial_kernel(float* partial, const floatX* ddt, const floatX* dt_raw,
                                              const float* dt_bias, int N, int H) {
    int r = blockIdx.x, h = blockIdx.y * blockDim.x + threadIdx.x;
    if (h >= H) return;
    int n1 = min(N, (r + 1) * MAMBA2_PARTIAL_ROWS);
    float acc = 0.0f;
    for (int i = r * MAMBA2_PARTIAL_ROWS; i < n1; i++) {
        size_t j = (size_t)i * H + h;
        acc += (float)ddt[j] * softplus_grad_f((float)dt_raw[j] + dt_bias[h]);
    }
    partial[(size_t)r * H + h] = acc;
}
static void mamba2_dt_backward_cuda(floatX* ddt_raw, float* ddt_bias, float* partial, const floatX* ddt,
                                    const floatX* dt_raw, const float* dt_bias, int N, int H) {
    size_t n = (size_t)N * H;
    if (n == 0) return;
    if (ddt_raw) {
        mamba2_dt_backward_kernel<<<activations_grid(n, 256), 256, 0, launch_stream()>>>(ddt_raw, ddt, dt_raw, dt_bias, N, H);
        cudaCheckLaunch();
    }
    if (!ddt_bias) return;
    int R = mamba2_partial_count(N);
    mamba2_dt_bias_partial_kernel<<<dim3(R, ceil_div(H, 128)), 128, 0, launch_stream()>>>(partial, ddt, dt_raw, dt_bias, N, H);
    cudaCheckLaunch();
    column_sums_add_cuda(ddt_bias, partial, R, H);
}

// norm groups (NG > 1) or rows over 2048 channels: one block per (row, group), the group's sum of g^2
// by a block reduction, then the outputs. (A warp per (row, group) left a generation step, one row, to
// a single warp walking its 1536 channels twice with one load in flight: 51 us on an H100.)
__global__ void mamba2_gated_rmsnorm_forward_kernel(floatX* out, float* rstd, const floatX* y, const floatX* z,
                                                    const float* w, int N, int E, int NG) {
    __shared__ float sh[32];
    const size_t task = blockIdx.x;  // n * NG + q
    const int Eg = E / NG, q = (int)(task % NG);
    const size_t o = (task / NG) * E + (size_t)q * Eg;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < Eg; c += blockDim.x) {
        float g = (float)y[o + c] * silu_f((float)z[o + c]);
        ss += g * g;
    }
    const float r = 1.0f / sqrtf(rmsnorm_block_sum(ss, sh) / Eg + RMSNORM_EPS);
    if (threadIdx.x == 0) rstd[task] = r;
    for (int c = threadIdx.x; c < Eg; c += blockDim.x) {
        float g = (float)y[o + c] * silu_f((float)z[o + c]);
        out[o + c] = (floatX)(g * r * w[q * Eg + c]);
    }
}
// NG = 1, E <= 512 MAMBA2_NORM_COLS: one block per `rows` rows (up to MAMBA2_PARTIAL_ROWS, fewer when
// N is small, so a generation step's few rows still spread over the GPU), MAMBA2_NORM_COLS columns a
// thread (c = tid + k blockDim) in registers from the loads to the outputs, the next row's y, z loaded
// during this row's reduction (the backward's layout, below). (A block per row: 124 us a layer at the
// mamba2-130m shape on an H100, 2.5x the bytes' floor: a short-lived block per row, two passes. 32 rows
// a block at 64 rows, a decode step of batch 64: 2 blocks walking 32 rows each, 2.8 -> 3.8 ms a token.)
#define MAMBA2_NORM_COLS 4
__global__ void __launch_bounds__(512) mamba2_gated_rmsnorm_forward_rows_kernel(floatX* out, float* rstd, const floatX* y,
                                                                                const floatX* z, const float* w, int N,
                                                                                int E, int rows) {
    constexpr int K = MAMBA2_NORM_COLS;
    __shared__ float sh[32];
    const int r0 = blockIdx.x * rows, r1 = min(N, r0 + rows);
    float wv[K], yv[K], zv[K], y2[K], z2[K];
    auto load = [&](int n, float* a, float* b) {
        #pragma unroll
        for (int k = 0; k < K; k++) {
            int col = threadIdx.x + k * blockDim.x;
            a[k] = col < E ? (float)y[(size_t)n * E + col] : 0.0f;
            b[k] = col < E ? (float)z[(size_t)n * E + col] : 0.0f;
        }
    };
    #pragma unroll
    for (int k = 0; k < K; k++) {
        int col = threadIdx.x + k * blockDim.x;
        wv[k] = col < E ? w[col] : 0.0f;
    }
    load(r0, yv, zv);
    for (int n = r0; n < r1; n++) {
        if (n + 1 < r1) load(n + 1, y2, z2);  // in flight during this row's reduction
        float g[K], ss = 0.0f;
        #pragma unroll
        for (int k = 0; k < K; k++) {
            g[k] = yv[k] * silu_f(zv[k]);
            ss += g[k] * g[k];
        }
        const float r = 1.0f / sqrtf(rmsnorm_block_sum(ss, sh) / E + RMSNORM_EPS);
        if (threadIdx.x == 0) rstd[n] = r;
        #pragma unroll
        for (int k = 0; k < K; k++) {
            int col = threadIdx.x + k * blockDim.x;
            if (col < E) out[(size_t)n * E + col] = (floatX)(g[k] * r * wv[k]);
        }
        #pragma unroll
        for (int k = 0; k < K; k++) { yv[k] = y2[k]; zv[k] = z2[k]; }
    }
}

static void mamba2_gated_rmsnorm_forward_cuda(floatX* out, float* rstd, const floatX* y, const floatX* z,
                                              const float* w, int N, int E, int NG) {
    size_t tasks = (size_t)N * NG;
    if (tasks == 0) return;
    if (NG == 1 && ceil_div(E, MAMBA2_NORM_COLS) <= 512) {
        const int threads = ceil_div(ceil_div(E, MAMBA2_NORM_COLS), 32) * 32;
        const int rows = std::max(1, std::min(MAMBA2_PARTIAL_ROWS, N / (2 * gpu_sm_count())));  // >= 2 blocks an SM
        mamba2_gated_rmsnorm_forward_rows_kernel<<<ceil_div(N, rows), threads, 0, launch_stream()>>>(out, rstd, y, z, w, N, E, rows);
        cudaCheckLaunch();
        return;
    }
    const int threads = std::min(1024, ceil_div(E / NG, 64) * 32);  // two channels a thread (one round trip each pass)
    mamba2_gated_rmsnorm_forward_kernel<<<(unsigned)tasks, threads, 0, launch_stream()>>>(out, rstd, y, z, w, N, E, NG);
    cudaCheckLaunch();
}

// dy, dz: one warp per (row, group) (the training step's many rows; a step has no backward)
__global__ void mamba2_gated_rmsnorm_backward_kernel(floatX* dy, floatX* dz, const floatX* dout, const floatX* y,
                                                     const floatX* z, const float* w, const float* rstd, int N, int E,
                                                     int NG, bool add) {
    size_t task = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (task >= (size_t)N * NG) return;
    int Eg = E / NG, q = (int)(task % NG);
    size_t o = (task / NG) * E + (size_t)q * Eg;
    const float* wg = w + (size_t)q * Eg;
    float r = rstd[task], dot = 0.0f;  // sum_c a * g
    for (int c = lane; c < Eg; c += 32)
        dot += (float)dout[o + c] * wg[c] * (float)y[o + c] * silu_f((float)z[o + c]);
    dot = warp_sum(dot);
    float k = r * r * dot / Eg;
    for (int c = lane; c < Eg; c += 32) {
        float yv = (float)y[o + c], zv = (float)z[o + c], sz = silu_f(zv);
        float dg = r * ((float)dout[o + c] * wg[c] - yv * sz * k);
        if (dy) dy[o + c] = (floatX)((add ? (float)dy[o + c] : 0.0f) + dg * sz);
        if (dz) dz[o + c] = (floatX)((add ? (float)dz[o + c] : 0.0f) + dg * yv * silu_grad_f(zv));
    }
}
// dw partials: thread (r, c) sums rows [r, r+1) * MAMBA2_PARTIAL_ROWS of column c in order
__global__ void mamba2_gated_rmsnorm_dw_partial_kernel(float* partial, const floatX* dout, const floatX* y,
                                                       const floatX* z, const float* rstd, int N, int E, int NG) {
    int r = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= E) return;
    int n1 = min(N, (r + 1) * MAMBA2_PARTIAL_ROWS), q = c / (E / NG);
    float acc = 0.0f;
    for (int n = r * MAMBA2_PARTIAL_ROWS; n < n1; n++) {
        size_t o = (size_t)n * E + c;
        float g = (float)y[o] * silu_f((float)z[o]);
        acc += (float)dout[o] * g * rstd[(size_t)n * NG + q];
    }
    partial[(size_t)r * E + c] = acc;
}
// NG = 1, E <= 512 MAMBA2_NORM_COLS: dy, dz (+=; from 0 without add) and dw's partials in one pass. One block per partial
// (rows [r, r+1) * MAMBA2_PARTIAL_ROWS, the CPU's partition), MAMBA2_NORM_COLS columns a thread (c = tid
// + k blockDim) held in registers from the loads through the row's reduction to its outputs, the next
// row's loads (old dy, dz too) issued before this row's reduction, dw's column sums over the block's
// rows in registers.
// (The per-row kernel above plus the partial kernel read dout, y, z three times: 12.1 ms of the
// mamba2-130m step on an H100, 2.3x the bytes' floor.)
__global__ void __launch_bounds__(512) mamba2_gated_rmsnorm_backward_rows_kernel(floatX* dy, floatX* dz, float* partial, const floatX* dout,
                                                          const floatX* y, const floatX* z, const float* w,
                                                          const float* rstd, int N, int E, bool add) {
    constexpr int K = MAMBA2_NORM_COLS;
    __shared__ float sh[32];
    const int r0 = blockIdx.x * MAMBA2_PARTIAL_ROWS, r1 = min(N, r0 + MAMBA2_PARTIAL_ROWS);
    // this row's dout, y, z and the old dy, dz (the accumulated outputs), and the next row's
    float wv[K], dwacc[K], go[K], yv[K], zv[K], oy[K], oz[K], go2[K], y2[K], z2[K], oy2[K], oz2[K];
    auto load = [&](int n, float* a, float* b, float* c, float* d, float* e) {
        #pragma unroll
        for (int k = 0; k < K; k++) {
            int col = threadIdx.x + k * blockDim.x;
            size_t o = (size_t)n * E + col;
            bool in = col < E;
            a[k] = in ? (float)dout[o] : 0.0f;
            b[k] = in ? (float)y[o] : 0.0f;
            c[k] = in ? (float)z[o] : 0.0f;
            d[k] = in && dy && add ? (float)dy[o] : 0.0f;
            e[k] = in && dz && add ? (float)dz[o] : 0.0f;
        }
    };
    #pragma unroll
    for (int k = 0; k < K; k++) {
        int col = threadIdx.x + k * blockDim.x;
        wv[k] = col < E ? w[col] : 0.0f;
        dwacc[k] = 0.0f;
    }
    load(r0, go, yv, zv, oy, oz);
    for (int n = r0; n < r1; n++) {
        if (n + 1 < r1) load(n + 1, go2, y2, z2, oy2, oz2);  // in flight during this row's reduction
        const float r = rstd[n];
        float sz[K], dot = 0.0f;  // sum_c dout w g, g = y silu(z)
        #pragma unroll
        for (int k = 0; k < K; k++) {
            sz[k] = silu_f(zv[k]);
            dot += go[k] * wv[k] * yv[k] * sz[k];
        }
        const float kk = r * r * rmsnorm_block_sum(dot, sh) / E;
        #pragma unroll
        for (int k = 0; k < K; k++) {
            int col = threadIdx.x + k * blockDim.x;
            if (col >= E) continue;
            size_t o = (size_t)n * E + col;
            float g = yv[k] * sz[k], dg = r * (go[k] * wv[k] - g * kk);
            if (dy) dy[o] = (floatX)(oy[k] + dg * sz[k]);
            if (dz) dz[o] = (floatX)(oz[k] + dg * yv[k] * silu_grad_f(zv[k]));
            dwacc[k] += go[k] * g * r;
        }
        #pragma unroll
        for (int k = 0; k < K; k++) { go[k] = go2[k]; yv[k] = y2[k]; zv[k] = z2[k]; oy[k] = oy2[k]; oz[k] = oz2[k]; }
    }
    if (partial) {
        #pragma unroll
        for (int k = 0; k < K; k++) {
            int col = threadIdx.x + k * blockDim.x;
            if (col < E) partial[(size_t)blockIdx.x * E + col] = dwacc[k];
        }
    }
}

static void mamba2_gated_rmsnorm_backward_cuda(floatX* dy, floatX* dz, float* dw, float* partial, const floatX* dout,
                                               const floatX* y, const floatX* z, const float* w, const float* rstd,
                                               int N, int E, int NG, GradWrite dyz_write = GRAD_ADD) {
    const bool add = dyz_write == GRAD_ADD;
    size_t tasks = (size_t)N * NG;
    if (tasks == 0) return;
    if (NG == 1 && ceil_div(E, MAMBA2_NORM_COLS) <= 512) {  // (at 1024 threads its ~70 registers do not fit)
        if (!dy && !dz && !dw) return;
        int R = mamba2_partial_count(N), threads = ceil_div(ceil_div(E, MAMBA2_NORM_COLS), 32) * 32;
        mamba2_gated_rmsnorm_backward_rows_kernel<<<R, threads, 0, launch_stream()>>>(dy, dz, dw ? partial : nullptr, dout, y, z, w, rstd, N, E, add);
        cudaCheckLaunch();
        if (dw) column_sums_add_cuda(dw, partial, R, E);
        return;
    }
    if (dy || dz) {
        mamba2_gated_rmsnorm_backward_kernel<<<(unsigned)((tasks + 7) / 8), 256, 0, launch_stream()>>>(dy, dz, dout, y, z, w, rstd, N, E, NG, add);
        cudaCheckLaunch();
    }
    if (!dw) return;
    int R = mamba2_partial_count(N);
    mamba2_gated_rmsnorm_dw_partial_kernel<<<dim3(R, ceil_div(E, 128)), 128, 0, launch_stream()>>>(partial, dout, y, z, rstd, N, E, NG);
    cudaCheckLaunch();
    column_sums_add_cuda(dw, partial, R, E);
}

// one thread per (b, ch, k) of the state
__global__ void mamba2_conv_state_kernel(float* conv_state, const floatX* xBC, int B, int L, int C, int K) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)B * C * (K - 1)) return;
    int k = (int)(i % (K - 1)), ch = (int)((i / (K - 1)) % C), b = (int)(i / ((size_t)(K - 1) * C));
    int t = L - (K - 1) + k;
    conv_state[i] = t >= 0 ? (float)xBC[((size_t)b * L + t) * C + ch] : 0.0f;
}
static void mamba2_conv_state_cuda(float* conv_state, const floatX* xBC, int B, int L, int C, int K) {
    size_t n = (size_t)B * C * (K - 1);
    if (n == 0) return;
    mamba2_conv_state_kernel<<<(unsigned)((n + 255) / 256), 256, 0, launch_stream()>>>(conv_state, xBC, B, L, C, K);
    cudaCheckLaunch();
}

// one thread per output value: threads [0, H) write A, then B rows of Z = E + C + H threads take z,
// the conv channels (the CPU's sum order) and dt
__global__ void mamba2_step_prologue_kernel(floatX* z, floatX* x, floatX* Bm, floatX* Cm, floatX* dt, float* A,
                                            float* conv_state, const floatX* proj, const float* conv_w,
                                            const float* conv_b, const float* dt_bias, const float* A_log, int B, int E,
                                            int GN, int H, int K) {
    const int C = E + 2 * GN, Z = E + C + H;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < H) { A[i] = -expf(A_log[i]); return; }
    i -= H;
    if (i >= B * Z) return;
    const int b = i / Z, j = i % Z;
    const floatX* row = proj + (size_t)b * Z;
    if (j < E) { z[(size_t)b * E + j] = row[j]; return; }
    if (j >= E + C) {
        const int h = j - E - C;
        dt[(size_t)b * H + h] = (floatX)softplus_f((float)row[j] + dt_bias[h]);
        return;
    }
    const int ch = j - E;
    float* st = conv_state + ((size_t)b * C + ch) * (K - 1);
    floatX v = (floatX)silu_f(conv1d_step_channel(st, st, conv_w + (size_t)ch * K, conv_b[ch], (float)row[j], K));
    if (ch < E) x[(size_t)b * E + ch] = v;
    else if (ch < E + GN) Bm[(size_t)b * GN + ch - E] = v;
    else Cm[(size_t)b * GN + ch - E - GN] = v;
}
static void mamba2_step_prologue_cuda(floatX* z, floatX* x, floatX* Bm, floatX* Cm, floatX* dt, float* A, float* conv_state,
                                      const floatX* proj, const float* conv_w, const float* conv_b, const float* dt_bias,
                                      const float* A_log, int B, int E, int GN, int H, int K) {
    const int n = H + B * (E + E + 2 * GN + H);
    mamba2_step_prologue_kernel<<<ceil_div(n, 256), 256, 0, launch_stream()>>>(z, x, Bm, Cm, dt, A, conv_state, proj, conv_w, conv_b, dt_bias,
                                                            A_log, B, E, GN, H, K);
    cudaCheckLaunch();
}
#endif  // __CUDACC__

// backend wrappers of the small kernels (the block below calls them)
static void mamba2_A_forward(bool on_gpu, float* A, const float* A_log, int H) {
    if (on_gpu) GPU_CALL(mamba2_A_forward_cuda(A, A_log, H));
    else mamba2_A_forward_cpu(A, A_log, H);
}
static void mamba2_A_backward(bool on_gpu, float* dA_log, const float* dA, const float* A, int H) {
    if (on_gpu) GPU_CALL(mamba2_A_backward_cuda(dA_log, dA, A, H));
    else mamba2_A_backward_cpu(dA_log, dA, A, H);
}
static void mamba2_dt_forward(bool on_gpu, floatX* dt, const floatX* dt_raw, const float* dt_bias, int N, int H) {
    if (on_gpu) GPU_CALL(mamba2_dt_forward_cuda(dt, dt_raw, dt_bias, N, H));
    else mamba2_dt_forward_cpu(dt, dt_raw, dt_bias, N, H);
}
static void mamba2_dt_backward(bool on_gpu, floatX* ddt_raw, float* ddt_bias, float* partial, const floatX* ddt,
                               const floatX* dt_raw, const float* dt_bias, int N, int H) {
    if (on_gpu) GPU_CALL(mamba2_dt_backward_cuda(ddt_raw, ddt_bias, partial, ddt, dt_raw, dt_bias, N, H));
    else mamba2_dt_backward_cpu(ddt_raw, ddt_bias, partial, ddt, dt_raw, dt_bias, N, H);
}
static void mamba2_gated_rmsnorm_forward(bool on_gpu, floatX* out, float* rstd, const floatX* y, const floatX* z,
                                         const float* w, int N, int E, int NG) {
    if (on_gpu) GPU_CALL(mamba2_gated_rmsnorm_forward_cuda(out, rstd, y, z, w, N, E, NG));
    else mamba2_gated_rmsnorm_forward_cpu(out, rstd, y, z, w, N, E, NG);
}
static void mamba2_gated_rmsnorm_backward(bool on_gpu, floatX* dy, floatX* dz, float* dw, float* partial,
                                          const floatX* dout, const floatX* y, const floatX* z, const float* w,
                                          const float* rstd, int N, int E, int NG, GradWrite dyz_write = GRAD_ADD) {
    if (on_gpu) GPU_CALL(mamba2_gated_rmsnorm_backward_cuda(dy, dz, dw, partial, dout, y, z, w, rstd, N, E, NG, dyz_write));
    else mamba2_gated_rmsnorm_backward_cpu(dy, dz, dw, partial, dout, y, z, w, rstd, N, E, NG, dyz_write);
}
static void mamba2_conv_state(bool on_gpu, float* conv_state, const floatX* xBC, int B, int L, int C, int K) {
    if (on_gpu) GPU_CALL(mamba2_conv_state_cuda(conv_state, xBC, B, L, C, K));
    else mamba2_conv_state_cpu(conv_state, xBC, B, L, C, K);
}
static void mamba2_step_prologue(bool on_gpu, floatX* z, floatX* x, floatX* Bm, floatX* Cm, floatX* dt, float* A,
                                 float* conv_state, const floatX* proj, const float* conv_w, const float* conv_b,
                                 const float* dt_bias, const float* A_log, int B, int E, int GN, int H, int K) {
    if (on_gpu) GPU_CALL(mamba2_step_prologue_cuda(z, x, Bm, Cm, dt, A, conv_state, proj, conv_w, conv_b, dt_bias, A_log, B, E, GN, H, K));
    else mamba2_step_prologue_cpu(z, x, Bm, Cm, dt, A, conv_state, proj, conv_w, conv_b, dt_bias, A_log, B, E, GN, H, K);
}

// ---------------------------------------------------------------------------
// the block: one composition for both backends (on_gpu picks every component's CPU reference or
// its CUDA version); mamba2_block_*_cpu / _cuda below are this with on_gpu false / true

// inp, out: (B, L, D). The activations `a` are written (mamba2_layout_acts for (B, L)); `s` is
// scratch (mamba2_layout_scratch for at least B*L rows). conv_state_out (B, C, K-1) and
// ssm_state_out (B, H, P, N), when not nullptr, receive the recurrent state after the last token
// (the conv's last K-1 inputs, zeros before t = 0), so mamba2_step can go on from there.
static void mamba2_block_forward_on(bool on_gpu, floatX* out, const Mamba2Acts& a, const Mamba2Scratch& s,
                                    const floatX* inp, const Mamba2Params& p, const Mamba2Config& c, int B, int L,
                                    float* conv_state_out, float* ssm_state_out) {
    mamba2_check_shape("mamba2_block_forward", c, B, L);
    mamba2_check_scratch("mamba2_block_forward", s, (size_t)B * L, 0);
    int BL = B * L, D = c.d_model, E = c.d_inner, H = c.nheads, P = c.headdim, G = c.ngroups, N = c.d_state;
    int C = c.conv_dim, K = c.d_conv, GN = G * N;
    // in_proj over contiguous row blocks of the weight: z and xBC as one split product (one bf16 copy
    // of inp for both on the GPU), dt_raw apart (24 columns: a thin product)
    PROF(on_gpu, "m2_in_proj", {
        linear_forward_split(on_gpu, a.z, a.xBC, inp, p.in_proj_w, BL, D, E, C);
        linear_forward(on_gpu, a.dt_raw, inp, p.in_proj_w + (size_t)(E + C) * D, nullptr, BL, D, H);
    });
    // conv1d + SiLU over [x | B | C], written as the SSD's three contiguous inputs (the GPU's kernel
    // addresses them directly; the CPU goes through xBCc and a split)
    PROF(on_gpu, "m2_conv1d+silu", conv1d_silu_forward_split(on_gpu, a.x, a.Bm, a.Cm, s.xBCc, a.xBC, p.conv_w, p.conv_b, B, L,
                                                             C, K, E, GN));
    PROF(on_gpu, "m2_elementwise", {
        mamba2_dt_forward(on_gpu, a.dt, a.dt_raw, p.dt_bias, BL, H);
        mamba2_A_forward(on_gpu, s.A, p.A_log, H);
    });
    PROF(on_gpu, "ssd", ssd_forward(on_gpu, a.y, ssm_state_out, a.x, a.dt, s.A, a.Bm, a.Cm, p.D, nullptr, B, L, H, P, G, N, c.chunk));
    PROF(on_gpu, "m2_gated_norm", mamba2_gated_rmsnorm_forward(on_gpu, a.yn, a.rstd, a.y, a.z, p.norm_w, BL, E, c.norm_groups));
    PROF(on_gpu, "m2_out_proj", linear_forward(on_gpu, out, a.yn, p.out_proj_w, nullptr, BL, E, D));
    if (conv_state_out) mamba2_conv_state(on_gpu, conv_state_out, a.xBC, B, L, C, K);
}

// dout: (B, L, D); inp: the forward's input; a: the forward's activations; s: scratch. dinp
// (B, L, D) and every parameter gradient in `d` ACCUMULATE (+=; dinp is set under GRAD_SET); any may be
// nullptr (skipped). The conv's pre-activation, the SSD states and the gate are recomputed (see the top
// of the file). The scratch's dyn, dy, dz, dx, ddt, dBm, dCm and dxBC are set by their producers (GRAD_SET).
static void mamba2_block_backward_on(bool on_gpu, floatX* dinp, const Mamba2Params& d, const Mamba2Scratch& s,
                                     const floatX* dout, const floatX* inp, const Mamba2Params& p, const Mamba2Acts& a,
                                     const Mamba2Config& c, int B, int L, GradWrite dinp_write) {
    mamba2_check_shape("mamba2_block_backward", c, B, L);
    mamba2_check_scratch("mamba2_block_backward", s, (size_t)B * L, 0);
    int BL = B * L, D = c.d_model, E = c.d_inner, H = c.nheads, P = c.headdim, G = c.ngroups, N = c.d_state;
    int C = c.conv_dim, K = c.d_conv, GN = G * N;
    size_t bH = (size_t)BL * H * sizeof(floatX);
    // out_proj -> dyn
    PROF(on_gpu, "m2_out_proj", linear_backward(on_gpu, s.dyn, d.out_proj_w, nullptr, dout, a.yn, p.out_proj_w, BL, E, D, GRAD_SET));
    // gated RMSNorm -> dy (the SSD output), dz (set: GRAD_SET)
    PROF(on_gpu, "m2_gated_norm", mamba2_gated_rmsnorm_backward(on_gpu, s.dy, s.dz, d.norm_w, s.col_partial, s.dyn, a.y, a.z,
                                                                p.norm_w, a.rstd, BL, E, c.norm_groups, GRAD_SET));
    // SSD -> dx, ddt, dA, dBm, dCm, dD (dA only when A_log trains; nullptr for a frozen A_log / D)
    PROF(on_gpu, "m2_elementwise", {  // (dx, ddt, dBm, dCm: set by the SSD's backward, GRAD_SET)
        if (d.A_log) backend_memset0(on_gpu, s.dA, (size_t)H * sizeof(float));
        mamba2_A_forward(on_gpu, s.A, p.A_log, H);
    });
    PROF(on_gpu, "ssd", ssd_backward(on_gpu, s.dx, s.ddt, d.A_log ? s.dA : nullptr, s.dBm, s.dCm, d.D, nullptr, s.dy, nullptr,
                                     a.x, a.dt, s.A, a.Bm, a.Cm, p.D, nullptr, B, L, H, P, G, N, GRAD_SET));
    // dt = softplus(dt_raw + dt_bias) -> ddt_raw, dt_bias
    PROF(on_gpu, "m2_elementwise", {
        if (d.A_log) mamba2_A_backward(on_gpu, d.A_log, s.dA, s.A, H);
        backend_memset0(on_gpu, s.ddt_raw, bH);
        mamba2_dt_backward(on_gpu, s.ddt_raw, d.dt_bias, s.col_partial, s.ddt, a.dt_raw, p.dt_bias, BL, H);
    });
    // conv1d + SiLU (recomputes its pre-activation): d[x | B | C] -> dxBC; nullptr for frozen weights
    bool need_conv_in = dinp || d.in_proj_w;
    if (need_conv_in || d.conv_w || d.conv_b) {
        PROF(on_gpu, "m2_conv1d+silu", conv1d_silu_backward_split(on_gpu, s.dxBC, d.conv_w, d.conv_b, s.dx, s.dBm, s.dCm,
                                                                   s.xBCc, a.xBC, p.conv_w, p.conv_b, B, L, C, K, E, GN, GRAD_SET));
    }
    // in_proj, the three row blocks: dinp accumulates all three, z and xBC as one split product (one
    // product of K = E + C into dinp on the GPU). Each call skips when it has neither dinp nor a
    // weight gradient, so dxBC is read only when it was computed.
    float* dW = d.in_proj_w;
    PROF(on_gpu, "m2_in_proj", {
        linear_backward_split(on_gpu, dinp, dW, s.dz, s.dxBC, inp, p.in_proj_w, BL, D, E, C, dinp_write);
        linear_backward(on_gpu, dinp, dW ? dW + (size_t)(E + C) * D : nullptr, nullptr, s.ddt_raw, inp,
                        p.in_proj_w + (size_t)(E + C) * D, BL, D, H);
    });
}

// The step between its two projections: s.step_proj (B, d_in_proj), in_proj's output, -> s.step.yn
// (B, E), out_proj's input: the prologue (z, the conv step, dt, A in one pass), ssd_step, the gated
// norm. conv_state, ssm_state as mamba2_step. (The GPU decoder runs the two projections itself, with
// the RMSNorm before in_proj and the residual add after out_proj fused into its GEMVs.)
// what follows the prologue: the SSD step from s.step's z, x, B, C, dt and s.A, then the gated norm
// into s.step.yn (the GPU decoder runs this after a decode GEMV that did the prologue's work)
static void mamba2_step_tail(bool on_gpu, float* ssm_state, const Mamba2Scratch& s, const Mamba2Params& p,
                             const Mamba2Config& c, int B) {
    const Mamba2Acts& t = s.step;
    ssd_step(on_gpu, t.y, ssm_state, t.x, t.dt, s.A, t.Bm, t.Cm, p.D, B, c.nheads, c.headdim, c.ngroups, c.d_state);
    mamba2_gated_rmsnorm_forward(on_gpu, t.yn, t.rstd, t.y, t.z, p.norm_w, B, c.d_inner, c.norm_groups);
}
static void mamba2_step_core(bool on_gpu, float* conv_state, float* ssm_state, const Mamba2Scratch& s,
                             const Mamba2Params& p, const Mamba2Config& c, int B) {
    mamba2_check_shape("mamba2_step", c, B, 1);
    mamba2_check_scratch("mamba2_step", s, (size_t)B, B);
    int E = c.d_inner, H = c.nheads, G = c.ngroups, N = c.d_state, K = c.d_conv, GN = G * N;
    const Mamba2Acts& t = s.step;  // this token's activations, (B, 1)
    mamba2_step_prologue(on_gpu, t.z, t.x, t.Bm, t.Cm, t.dt, s.A, conv_state, s.step_proj, p.conv_w, p.conv_b, p.dt_bias,
                         p.A_log, B, E, GN, H, K);
    mamba2_step_tail(on_gpu, ssm_state, s, p, c, B);
}

// One token per batch row: inp, out (B, D); conv_state (B, C, K-1) and ssm_state (B, H, P, N),
// updated in place (zeros before the first token); s: scratch laid out for at least B rows (any
// L). The same arithmetic as the forward, one step: in_proj (one product: its rows are [z | xBC |
// dt_raw]), mamba2_step_core, out_proj: five launches on the GPU.
static void mamba2_step_on(bool on_gpu, floatX* out, float* conv_state, float* ssm_state, const Mamba2Scratch& s,
                           const floatX* inp, const Mamba2Params& p, const Mamba2Config& c, int B) {
    mamba2_check_shape("mamba2_step", c, B, 1);
    linear_forward(on_gpu, s.step_proj, inp, p.in_proj_w, nullptr, B, c.d_model, c.d_in_proj);
    mamba2_step_core(on_gpu, conv_state, ssm_state, s, p, c, B);
    linear_forward(on_gpu, out, s.step.yn, p.out_proj_w, nullptr, B, c.d_inner, c.d_model);
}

// CPU reference
static void mamba2_block_forward_cpu(floatX* out, const Mamba2Acts& a, const Mamba2Scratch& s, const floatX* inp,
                                     const Mamba2Params& p, const Mamba2Config& c, int B, int L,
                                     float* conv_state_out = nullptr, float* ssm_state_out = nullptr) {
    mamba2_block_forward_on(false, out, a, s, inp, p, c, B, L, conv_state_out, ssm_state_out);
}
static void mamba2_block_backward_cpu(floatX* dinp, const Mamba2Params& d, const Mamba2Scratch& s, const floatX* dout,
                                      const floatX* inp, const Mamba2Params& p, const Mamba2Acts& a,
                                      const Mamba2Config& c, int B, int L, GradWrite dinp_write = GRAD_ADD) {
    mamba2_block_backward_on(false, dinp, d, s, dout, inp, p, a, c, B, L, dinp_write);
}
static void mamba2_step_cpu(floatX* out, float* conv_state, float* ssm_state, const Mamba2Scratch& s,
                            const floatX* inp, const Mamba2Params& p, const Mamba2Config& c, int B) {
    mamba2_step_on(false, out, conv_state, ssm_state, s, inp, p, c, B);
}

#ifdef __CUDACC__
// CUDA: device pointers everywhere (parameters, gradients, activations, scratch, states)
static void mamba2_block_forward_cuda(floatX* out, const Mamba2Acts& a, const Mamba2Scratch& s, const floatX* inp,
                                      const Mamba2Params& p, const Mamba2Config& c, int B, int L,
                                      float* conv_state_out = nullptr, float* ssm_state_out = nullptr) {
    mamba2_block_forward_on(true, out, a, s, inp, p, c, B, L, conv_state_out, ssm_state_out);
}
static void mamba2_block_backward_cuda(floatX* dinp, const Mamba2Params& d, const Mamba2Scratch& s,
                                       const floatX* dout, const floatX* inp, const Mamba2Params& p,
                                       const Mamba2Acts& a, const Mamba2Config& c, int B, int L, GradWrite dinp_write = GRAD_ADD) {
    mamba2_block_backward_on(true, dinp, d, s, dout, inp, p, a, c, B, L, dinp_write);
}
static void mamba2_step_cuda(floatX* out, float* conv_state, float* ssm_state, const Mamba2Scratch& s,
                             const floatX* inp, const Mamba2Params& p, const Mamba2Config& c, int B) {
    mamba2_step_on(true, out, conv_state, ssm_state, s, inp, p, c, B);
}
#endif  // __CUDACC__

// ---------------------------------------------------------------------------
// backend wrappers (common.h): what a model calls

static void mamba2_block_forward(bool on_gpu, floatX* out, const Mamba2Acts& a, const Mamba2Scratch& s,
                                 const floatX* inp, const Mamba2Params& p, const Mamba2Config& c, int B, int L,
                                 float* conv_state_out = nullptr, float* ssm_state_out = nullptr) {
    if (on_gpu) GPU_CALL(mamba2_block_forward_cuda(out, a, s, inp, p, c, B, L, conv_state_out, ssm_state_out));
    else mamba2_block_forward_cpu(out, a, s, inp, p, c, B, L, conv_state_out, ssm_state_out);
}

static void mamba2_block_backward(bool on_gpu, floatX* dinp, const Mamba2Params& d, const Mamba2Scratch& s,
                                  const floatX* dout, const floatX* inp, const Mamba2Params& p, const Mamba2Acts& a,
                                  const Mamba2Config& c, int B, int L, GradWrite dinp_write = GRAD_ADD) {
    if (on_gpu) GPU_CALL(mamba2_block_backward_cuda(dinp, d, s, dout, inp, p, a, c, B, L, dinp_write));
    else mamba2_block_backward_cpu(dinp, d, s, dout, inp, p, a, c, B, L, dinp_write);
}

static void mamba2_step(bool on_gpu, floatX* out, float* conv_state, float* ssm_state, const Mamba2Scratch& s,
                        const floatX* inp, const Mamba2Params& p, const Mamba2Config& c, int B) {
    if (on_gpu) GPU_CALL(mamba2_step_cuda(out, conv_state, ssm_state, s, inp, p, c, B));
    else mamba2_step_cpu(out, conv_state, ssm_state, s, inp, p, c, B);
}
