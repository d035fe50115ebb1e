// gpu_mamba2.cu: the Mamba-2 block on the GPU (src/mamba2.h) against its CPU reference.
//   - the block's own kernels: A = -exp(A_log) and its backward, dt = softplus(dt_raw + dt_bias)
//     and its backward (ddt_raw, dt_bias), the gated RMSNorm forward and backward (dy, dz, dw),
//     the conv state copy-out, the conv1d + SiLU step
//   - the whole block: forward (out, every activation, the final conv and SSM states), backward
//     (dinp and every parameter gradient, onto random pre-filled buffers; then with nullptr
//     gradients), then the recurrent step from the forward's states and from zero states
// Shapes: L 1, 7, 37, 70, 300 (the GPU SSD's chunk is 64, the CPU's 16 here), B 1, 2, 3, ngroups
// 1 and 2, norm_groups 1 and 2, K 1 to 5, odd sizes, and the Mamba-2 head shape (P 64, N 128).
// Outputs, activations and the scratch are poisoned (NaN) before the kernels run; inputs and
// gradient buffers are fresh random values, never zeros.
//
// Tolerances (relative L2 error per tensor), 10x to 30x what an H100 measured: fp32
// everywhere, cuBLAS in exact FP32 mode; the GPU and CPU sum in different orders (cuBLAS vs the
// CPU's blocked GEMM, the SSD's chunk 64 vs 16, float atomics in the conv1d and SSD backward):
// kernels 1e-5 (measured <= 3e-7), forward and step 2e-5 (<= 7e-7), block backward 2e-4 (<= 2e-5:
// it starts from the GPU's own activations, and dA_log, dt_bias sum many terms that cancel). One
// case runs with TF32 GEMMs (operands rounded to a 10-bit mantissa): 1e-2 (<= 1.1e-3). A bug
// shows as O(1).
#include "mamba2_test_util.h"

typedef std::vector<float> Vec;

static const double TOL_KERNEL = 1e-5, TOL_FWD = 2e-5, TOL_BWD = 2e-4, TOL_TF32 = 1e-2;

// compare a device array with the CPU's, the error in the PASS line too
static void check_dev(const char* what, const char* tag, const float* dev, const float* ref, size_t n, double tol) {
    Vec got = n ? from_device(dev, n) : Vec();  // n = 0: a K = 1 conv state
    double e = rel_err(got.data(), ref, n);
    char name[256];
    snprintf(name, sizeof name, "%s %s (rel err %.1e)", what, tag, e);
    report(e < tol, name, "tol %.0e", tol);
}
static void check_dev(const char* what, const char* tag, const float* dev, const Vec& ref, double tol) {
    check_dev(what, tag, dev, ref.data(), ref.size(), tol);
}
// to_device that also takes an empty array (a K = 1 conv state)
static float* to_device_any(const Vec& h) { return h.empty() ? device_poisoned(1) : to_device(h); }
static void free_all(std::initializer_list<float*> ps) {
    for (float* p : ps)
        if (p) cudaCheck(cudaFree(p));
}

// ---------------------------------------------------------------------------
// the block's kernels

static void test_A(int H, uint64_t seed) {
    Rng r; rng_seed(&r, seed);
    char tag[32]; snprintf(tag, sizeof tag, "H%d", H);
    Vec A_log = random_vec(H, &r, -1.0f, 2.8f), A(H), dA = random_vec(H, &r), dA_log = random_vec(H, &r);
    float *gA_log = to_device(A_log), *gA = device_poisoned(H), *gdA = to_device(dA), *gdA_log = to_device(dA_log);
    mamba2_A_forward_cpu(A.data(), A_log.data(), H);
    mamba2_A_forward(true, gA, gA_log, H);
    check_dev("A = -exp(A_log)", tag, gA, A, TOL_KERNEL);
    mamba2_A_backward_cpu(dA_log.data(), dA.data(), A.data(), H);
    mamba2_A_backward(true, gdA_log, gdA, gA, H);
    check_dev("dA_log += dA * A", tag, gdA_log, dA_log, TOL_KERNEL);
    free_all({gA_log, gA, gdA, gdA_log});
}

// with_raw / with_bias: which gradients are passed (the other nullptr)
static void test_dt(int N, int H, bool with_raw, bool with_bias, uint64_t seed) {
    Rng r; rng_seed(&r, seed);
    char tag[64]; snprintf(tag, sizeof tag, "N%d H%d%s%s", N, H, with_raw ? "" : " ddt_raw=null", with_bias ? "" : " ddt_bias=null");
    size_t n = (size_t)N * H, np = (size_t)mamba2_partial_count(N) * H;
    Vec dt_raw = random_vec(n, &r, -6.0f, 3.0f), dt_bias = random_vec(H, &r, -2.0f, 1.0f), dt(n);
    dt_raw[0] = 25.0f;  // softplus's identity branch (pre > 20)
    Vec ddt = random_vec(n, &r), ddt_raw = random_vec(n, &r), ddt_bias = random_vec(H, &r), partial(np);
    float *g_raw = to_device(dt_raw), *g_bias = to_device(dt_bias), *g_dt = device_poisoned(n), *g_ddt = to_device(ddt);
    float *g_draw = to_device(ddt_raw), *g_dbias = to_device(ddt_bias), *g_part = device_poisoned(np);
    mamba2_dt_forward_cpu(dt.data(), dt_raw.data(), dt_bias.data(), N, H);
    mamba2_dt_forward(true, g_dt, g_raw, g_bias, N, H);
    check_dev("dt = softplus(dt_raw + dt_bias)", tag, g_dt, dt, TOL_KERNEL);
    mamba2_dt_backward_cpu(with_raw ? ddt_raw.data() : nullptr, with_bias ? ddt_bias.data() : nullptr, partial.data(),
                           ddt.data(), dt_raw.data(), dt_bias.data(), N, H);
    mamba2_dt_backward(true, with_raw ? g_draw : nullptr, with_bias ? g_dbias : nullptr, g_part, g_ddt, g_raw, g_bias, N, H);
    check_dev("dt backward ddt_raw", tag, g_draw, ddt_raw, TOL_KERNEL);  // untouched when nullptr: still equal
    check_dev("dt backward ddt_bias", tag, g_dbias, ddt_bias, TOL_KERNEL);
    free_all({g_raw, g_bias, g_dt, g_ddt, g_draw, g_dbias, g_part});
}

// which: bit 0 dy, bit 1 dz, bit 2 dw passed
static void test_norm(int N, int E, int NG, int which, uint64_t seed) {
    Rng r; rng_seed(&r, seed);
    char tag[64]; snprintf(tag, sizeof tag, "N%d E%d NG%d grads%s%s%s", N, E, NG, which & 1 ? " dy" : "",
                           which & 2 ? " dz" : "", which & 4 ? " dw" : "");
    size_t n = (size_t)N * E, np = (size_t)mamba2_partial_count(N) * E;
    Vec y = random_vec(n, &r, -2.0f, 2.0f), z = random_vec(n, &r, -3.0f, 3.0f), w = random_vec(E, &r, 0.5f, 1.5f);
    Vec out(n), rstd((size_t)N * NG), dout = random_vec(n, &r), dy = random_vec(n, &r), dz = random_vec(n, &r);
    Vec dw = random_vec(E, &r), partial(np);
    float *gy = to_device(y), *gz = to_device(z), *gw = to_device(w), *gout = device_poisoned(n);
    float *grstd = device_poisoned(rstd.size()), *gdout = to_device(dout), *gdy = to_device(dy), *gdz = to_device(dz);
    float *gdw = to_device(dw), *gpart = device_poisoned(np);
    mamba2_gated_rmsnorm_forward_cpu(out.data(), rstd.data(), y.data(), z.data(), w.data(), N, E, NG);
    mamba2_gated_rmsnorm_forward(true, gout, grstd, gy, gz, gw, N, E, NG);
    check_dev("gated rmsnorm forward out", tag, gout, out, TOL_KERNEL);
    check_dev("gated rmsnorm forward rstd", tag, grstd, rstd, TOL_KERNEL);
    // the backward reads the CPU's rstd on both sides, so it is tested on its own
    cudaCheck(cudaMemcpy(grstd, rstd.data(), rstd.size() * sizeof(float), cudaMemcpyHostToDevice));
    mamba2_gated_rmsnorm_backward_cpu(which & 1 ? dy.data() : nullptr, which & 2 ? dz.data() : nullptr,
                                      which & 4 ? dw.data() : nullptr, partial.data(), dout.data(), y.data(), z.data(),
                                      w.data(), rstd.data(), N, E, NG);
    mamba2_gated_rmsnorm_backward(true, which & 1 ? gdy : nullptr, which & 2 ? gdz : nullptr, which & 4 ? gdw : nullptr,
                                  gpart, gdout, gy, gz, gw, grstd, N, E, NG);
    check_dev("gated rmsnorm backward dy", tag, gdy, dy, TOL_KERNEL);
    check_dev("gated rmsnorm backward dz", tag, gdz, dz, TOL_KERNEL);
    check_dev("gated rmsnorm backward dw", tag, gdw, dw, TOL_KERNEL);
    if ((which & 3) == 3) {  // GRAD_SET: dy, dz from NaN == added onto zeros, bit for bit (CPU and GPU each)
        Vec ay(n, 0.0f), az(n, 0.0f), sy(n, NAN), sz(n, NAN);
        mamba2_gated_rmsnorm_backward_cpu(ay.data(), az.data(), nullptr, partial.data(), dout.data(), y.data(), z.data(), w.data(),
                                          rstd.data(), N, E, NG);
        mamba2_gated_rmsnorm_backward_cpu(sy.data(), sz.data(), nullptr, partial.data(), dout.data(), y.data(), z.data(), w.data(),
                                          rstd.data(), N, E, NG, GRAD_SET);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += memcmp(&ay[i], &sy[i], 4) != 0 || memcmp(&az[i], &sz[i], 4) != 0;
        char name[160]; snprintf(name, sizeof name, "gated rmsnorm backward GRAD_SET (CPU): dy, dz from NaN == onto zeros %s", tag);
        report(bad == 0, name, "%zu differ", bad);
        float *gay = to_device(Vec(n, 0.0f)), *gaz = to_device(Vec(n, 0.0f)), *gsy = device_poisoned(n), *gsz = device_poisoned(n);
        mamba2_gated_rmsnorm_backward(true, gay, gaz, nullptr, gpart, gdout, gy, gz, gw, grstd, N, E, NG);
        mamba2_gated_rmsnorm_backward(true, gsy, gsz, nullptr, gpart, gdout, gy, gz, gw, grstd, N, E, NG, GRAD_SET);
        Vec hay = from_device(gay, n), haz = from_device(gaz, n), hsy = from_device(gsy, n), hsz = from_device(gsz, n);
        bad = 0;
        for (size_t i = 0; i < n; i++) bad += memcmp(&hay[i], &hsy[i], 4) != 0 || memcmp(&haz[i], &hsz[i], 4) != 0;
        snprintf(name, sizeof name, "gated rmsnorm backward GRAD_SET (GPU): dy, dz from NaN == onto zeros %s", tag);
        report(bad == 0, name, "%zu differ", bad);
        free_all({gay, gaz, gsy, gsz});
    }
    free_all({gy, gz, gw, gout, grstd, gdout, gdy, gdz, gdw, gpart});
}

static void test_conv_state(int B, int L, int C, int K, uint64_t seed) {
    Rng r; rng_seed(&r, seed);
    char tag[64]; snprintf(tag, sizeof tag, "B%d L%d C%d K%d", B, L, C, K);
    size_t ns = (size_t)B * C * (K - 1);
    Vec xBC = random_vec((size_t)B * L * C, &r), cs(ns);
    float *gx = to_device(xBC), *gcs = device_poisoned(ns);
    mamba2_conv_state_cpu(cs.data(), xBC.data(), B, L, C, K);
    mamba2_conv_state(true, gcs, gx, B, L, C, K);
    Vec got = from_device(gcs, ns);
    char name[128]; snprintf(name, sizeof name, "conv state copy-out %s (bitwise)", tag);  // ns > 0 here
    report(memcmp(got.data(), cs.data(), ns * sizeof(float)) == 0, name, "differs");
    free_all({gx, gcs});
}

// the step's prologue, several tokens in a row from a random conv state: the CPU's against the
// components it fuses (conv1d_step_cpu, silu, the split, dt_forward, A_forward: the same bits), then
// the GPU's against the CPU's (outputs poisoned)
static void test_step_prologue(int B, int E, int GN, int H, int K, uint64_t seed) {
    Rng r; rng_seed(&r, seed);
    char tag[64]; snprintf(tag, sizeof tag, "B%d E%d GN%d H%d K%d x4", B, E, GN, H, K);
    const int C = E + 2 * GN, Z = E + C + H;
    size_t ns = (size_t)B * C * (K - 1);
    Vec w = random_vec((size_t)C * K, &r), cb = random_vec(C, &r), state = random_vec(ns, &r), ref_state = state;
    Vec dt_bias = random_vec(H, &r), A_log = random_vec(H, &r, -1, 2);
    float *gw = to_device(w), *gcb = to_device(cb), *gs = to_device_any(state), *gbias = to_device(dt_bias), *glog = to_device(A_log);
    bool cpu_same = true;
    double worst = 0;
    for (int step = 0; step < 4; step++) {
        Vec proj = random_vec((size_t)B * Z, &r);
        Vec z((size_t)B * E), x((size_t)B * E), Bm((size_t)B * GN), Cm((size_t)B * GN), dt((size_t)B * H), A(H);
        mamba2_step_prologue_cpu(z.data(), x.data(), Bm.data(), Cm.data(), dt.data(), A.data(), state.data(), proj.data(),
                                 w.data(), cb.data(), dt_bias.data(), A_log.data(), B, E, GN, H, K);
        // the reference composition
        Vec xbc((size_t)B * C), conv((size_t)B * C), raw((size_t)B * H), rz((size_t)B * E), rx(x.size()), rB(Bm.size()),
            rC(Cm.size()), rdt(dt.size()), rA(H);
        for (int b = 0; b < B; b++) {
            for (int e = 0; e < E; e++) rz[(size_t)b * E + e] = proj[(size_t)b * Z + e];
            for (int ch = 0; ch < C; ch++) xbc[(size_t)b * C + ch] = proj[(size_t)b * Z + E + ch];
            for (int h = 0; h < H; h++) raw[(size_t)b * H + h] = proj[(size_t)b * Z + E + C + h];
        }
        conv1d_step_cpu(conv.data(), ref_state.data(), xbc.data(), w.data(), cb.data(), B, C, K);
        silu_forward_cpu(conv.data(), conv.data(), conv.size());
        split_columns_cpu(rx.data(), rB.data(), rC.data(), conv.data(), B, E, GN, GN);
        mamba2_dt_forward_cpu(rdt.data(), raw.data(), dt_bias.data(), B, H);
        mamba2_A_forward_cpu(rA.data(), A_log.data(), H);
        cpu_same = cpu_same && z == rz && x == rx && Bm == rB && Cm == rC && dt == rdt && A == rA && state == ref_state;
        float *gproj = to_device(proj), *gz = device_poisoned(z.size()), *gx = device_poisoned(x.size());
        float *gB = device_poisoned(Bm.size()), *gC = device_poisoned(Cm.size()), *gdt = device_poisoned(dt.size()), *gA = device_poisoned(H);
        mamba2_step_prologue(true, gz, gx, gB, gC, gdt, gA, gs, gproj, gw, gcb, gbias, glog, B, E, GN, H, K);
        const float* gots[6] = {gz, gx, gB, gC, gdt, gA};
        const Vec* refs[6] = {&z, &x, &Bm, &Cm, &dt, &A};
        for (int i = 0; i < 6; i++) worst = fmax(worst, rel_err(from_device(gots[i], refs[i]->size()).data(), refs[i]->data(), refs[i]->size()));
        free_all({gproj, gz, gx, gB, gC, gdt, gA});
    }
    char name[160]; snprintf(name, sizeof name, "step prologue CPU == conv step + SiLU + split + dt + A %s (bitwise)", tag);
    report(cpu_same, name, "differs");
    snprintf(name, sizeof name, "step prologue GPU == CPU: z, x, B, C, dt, A %s (rel err %.1e)", tag, worst);
    report(worst < TOL_KERNEL, name, "tol %.0e", TOL_KERNEL);
    check_dev("step prologue conv state", tag, gs, state.data(), ns, TOL_KERNEL);
    free_all({gw, gcb, gs, gbias, glog});
}

// ---------------------------------------------------------------------------
// the block

static Mamba2Config make_config(int d_model, int expand, int headdim, int d_state, int G, int K, int NG) {
    Mamba2Config c = {};
    c.d_model = d_model; c.expand = expand; c.headdim = headdim; c.d_state = d_state; c.ngroups = G; c.d_conv = K;
    c.chunk = 16; c.norm_groups = NG;  // the CPU's chunk; the GPU SSD uses its own (64)
    mamba2_config_derive(&c);
    return c;
}

static const char* const TENSOR_NAMES[8] = {"in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias",
                                            "A_log",          "D",             "norm.weight", "out_proj.weight"};
static int field_index(const Mamba2Index& ix, int i) {
    const int f[8] = {ix.in_proj_w, ix.conv_w, ix.conv_b, ix.dt_bias, ix.A_log, ix.D, ix.norm_w, ix.out_proj_w};
    return f[i];
}

// (name, pointer, count) of every activation, in the same order for the host and the device
static void acts_fields(const Mamba2Acts& a, const Mamba2Config& c, int B, int L, const char** names, float** ptrs,
                        size_t* counts) {
    size_t BL = (size_t)B * L, E = c.d_inner, GN = (size_t)c.ngroups * c.d_state, H = c.nheads;
    const char* n[10] = {"act z", "act xBC", "act x", "act Bm", "act Cm", "act dt_raw", "act dt", "act y", "act rstd", "act yn"};
    float* p[10] = {a.z, a.xBC, a.x, a.Bm, a.Cm, a.dt_raw, a.dt, a.y, a.rstd, a.yn};
    size_t k[10] = {BL * E, BL * c.conv_dim, BL * E, BL * GN, BL * GN, BL * H, BL * H, BL * E, BL * c.norm_groups, BL * E};
    for (int i = 0; i < 10; i++) { names[i] = n[i]; ptrs[i] = p[i]; counts[i] = k[i]; }
}

// host and device arenas of `bytes`: the host one NaN, the device one poisoned (NaN)
static float* device_arena(size_t bytes) { return device_poisoned(bytes / sizeof(float) + 4); }

static void test_block(const Mamba2Config& c, int B, int L, bool tf32, uint64_t seed) {
    cublasCheck(cublasSetMathMode(cublas_handle(), tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    const double tol_f = tf32 ? TOL_TF32 : TOL_FWD, tol_b = tf32 ? TOL_TF32 : TOL_BWD;
    char tag[160];
    snprintf(tag, sizeof tag, "[B%d L%d D%d E%d P%d N%d G%d K%d NG%d%s]", B, L, c.d_model, c.d_inner, c.headdim,
             c.d_state, c.ngroups, c.d_conv, c.norm_groups, tf32 ? " TF32" : "");
    Rng r; rng_seed(&r, seed);
    int D = c.d_model, H = c.nheads, C = c.conv_dim, K = c.d_conv;
    ParamStore ps; params_init(&ps);
    Mamba2Index ix = mamba2_declare_params(&ps, "mixer.", c);
    params_allocate(&ps, false, false);
    Mamba2Params p = mamba2_views(&ps, ps.params, ix);
    mamba2_randomize_params(p, c, &r);
    size_t np = ps.num_params;
    float* gparams = to_device(ps.params, np);
    Mamba2Params gp = mamba2_views(&ps, gparams, ix);
    // activations and scratch
    size_t acts_bytes = mamba2_acts_bytes(c, B, L), scratch_bytes = mamba2_scratch_bytes(c, B, L);
    Vec acts_mem(acts_bytes / sizeof(float) + 4, NAN), scratch_mem(scratch_bytes / sizeof(float) + 4, NAN);
    float *gacts_mem = device_arena(acts_bytes), *gscratch_mem = device_arena(scratch_bytes);
    Mamba2Acts a, ga;
    Mamba2Scratch s, gs;
    Arena ar = {(char*)acts_mem.data(), 0}, gar = {(char*)gacts_mem, 0};
    mamba2_layout_acts(&a, &ar, c, B, L);
    mamba2_layout_acts(&ga, &gar, c, B, L);
    Arena sar = {(char*)scratch_mem.data(), 0}, gsar = {(char*)gscratch_mem, 0};
    mamba2_layout_scratch(&s, &sar, c, B, L);
    mamba2_layout_scratch(&gs, &gsar, c, B, L);

    // forward
    size_t nout = (size_t)B * L * D, ncs = (size_t)B * C * (K - 1), nss = (size_t)B * H * c.headdim * c.d_state;
    Vec inp = random_vec(nout, &r), dout = random_vec(nout, &r), out(nout), cs(ncs), ss(nss);
    float *ginp = to_device(inp), *gdout = to_device(dout), *gout = device_poisoned(nout);
    float *gcs = device_poisoned(ncs), *gss = device_poisoned(nss);
    mamba2_block_forward_cpu(out.data(), a, s, inp.data(), p, c, B, L, cs.data(), ss.data());
    mamba2_block_forward(true, gout, ga, gs, ginp, gp, c, B, L, gcs, gss);
    check_dev("forward out", tag, gout, out, tol_f);
    const char* an[10]; float *ah[10], *ad[10]; size_t acnt[10];
    acts_fields(a, c, B, L, an, ah, acnt);
    acts_fields(ga, c, B, L, an, ad, acnt);
    for (int i = 0; i < 10; i++) check_dev(an[i], tag, ad[i], ah[i], acnt[i], tol_f);
    check_dev("forward conv_state_out", tag, gcs, cs, tol_f);
    check_dev("forward ssm_state_out", tag, gss, ss, tol_f);

    // backward onto random gradients (and a random dinp): every one accumulates
    Vec g0 = random_vec(np, &r), dinp0 = random_vec(nout, &r), g = g0, dinp = dinp0;
    float *gg = to_device(g0), *gdinp = to_device(dinp0);
    Mamba2Params d = mamba2_views(&ps, g.data(), ix), gd = mamba2_views(&ps, gg, ix);
    mamba2_block_backward_cpu(dinp.data(), d, s, dout.data(), inp.data(), p, a, c, B, L);
    mamba2_block_backward(true, gdinp, gd, gs, gdout, ginp, gp, ga, c, B, L);
    check_dev("backward dinp (+= onto random)", tag, gdinp, dinp, tol_b);
    for (int i = 0; i < 8; i++) {
        const ParamTensor& t = ps.tensors[field_index(ix, i)];
        char what[96]; snprintf(what, sizeof what, "backward d%s (+= onto random)", TENSOR_NAMES[i]);
        check_dev(what, tag, gg + t.offset, g.data() + t.offset, t.numel, tol_b);
    }

    // nullptr gradients: (1) every parameter frozen, dinp only; (2) dinp, in_proj, conv1d and D
    // frozen (the conv backward is skipped), the rest accumulated
    {
        Vec dx1 = dinp0;
        cudaCheck(cudaMemcpy(gdinp, dinp0.data(), nout * sizeof(float), cudaMemcpyHostToDevice));
        Mamba2Params none = {};
        mamba2_block_backward_cpu(dx1.data(), none, s, dout.data(), inp.data(), p, a, c, B, L);
        mamba2_block_backward(true, gdinp, none, gs, gdout, ginp, gp, ga, c, B, L);
        check_dev("backward dinp, every parameter gradient nullptr", tag, gdinp, dx1, tol_b);

        Vec g2 = g0;
        cudaCheck(cudaMemcpy(gg, g0.data(), np * sizeof(float), cudaMemcpyHostToDevice));
        Mamba2Params d2 = mamba2_views(&ps, g2.data(), ix), gd2 = mamba2_views(&ps, gg, ix);
        for (Mamba2Params* q : {&d2, &gd2}) { q->in_proj_w = nullptr; q->conv_w = nullptr; q->conv_b = nullptr; q->D = nullptr; }
        mamba2_block_backward_cpu(nullptr, d2, s, dout.data(), inp.data(), p, a, c, B, L);
        mamba2_block_backward(true, nullptr, gd2, gs, gdout, ginp, gp, ga, c, B, L);
        Vec got = from_device(gg, np);
        double worst = 0;
        for (int i = 0; i < 8; i++) {  // frozen tensors: untouched (== g0 on both sides)
            const ParamTensor& t = ps.tensors[field_index(ix, i)];
            worst = fmax(worst, rel_err(got.data() + t.offset, g2.data() + t.offset, t.numel));
        }
        char name[256];
        snprintf(name, sizeof name, "backward with dinp, in_proj, conv1d, D nullptr: the other gradients %s (rel err %.1e)",
                 tag, worst);
        report(worst < tol_b, name, "tol %.0e", tol_b);
    }

    {  // GRAD_SET: dinp set from NaN == added onto zeros (CPU: bit for bit; the GPU against it). The scratch
       // started as NaN on both sides before the first backward above: dyn and dxBC (set, not zeroed) passed it.
        Mamba2Params none = {};
        Vec add(nout, 0.0f), set(nout, NAN);
        mamba2_block_backward_cpu(add.data(), none, s, dout.data(), inp.data(), p, a, c, B, L);
        mamba2_block_backward_cpu(set.data(), none, s, dout.data(), inp.data(), p, a, c, B, L, GRAD_SET);
        size_t bad = 0;
        for (size_t i = 0; i < nout; i++) bad += memcmp(&add[i], &set[i], sizeof(float)) != 0;
        char name[256];
        snprintf(name, sizeof name, "backward GRAD_SET (CPU): dinp set from NaN == added onto zeros %s", tag);
        report(bad == 0, name, "%zu of %zu differ", bad, nout);
        cudaCheck(cudaMemset(gdinp, 0xFF, nout * sizeof(float)));
        mamba2_block_backward(true, gdinp, none, gs, gdout, ginp, gp, ga, c, B, L, GRAD_SET);
        check_dev("backward GRAD_SET: dinp set from NaN", tag, gdinp, add, tol_b);
    }

    // the step: 3 tokens from the forward's final states (prefill, then steps)
    {
        Vec cs_c = cs, ss_c = ss;  // the GPU goes on from its own states gcs, gss
        double worst = 0;
        for (int step = 0; step < 3; step++) {
            Vec xt = random_vec((size_t)B * D, &r), yt((size_t)B * D);
            float *gxt = to_device(xt), *gyt = device_poisoned(xt.size());
            mamba2_step_cpu(yt.data(), cs_c.data(), ss_c.data(), s, xt.data(), p, c, B);
            mamba2_step(true, gyt, gcs, gss, gs, gxt, gp, c, B);
            worst = fmax(worst, rel_err(from_device(gyt, yt.size()).data(), yt.data(), yt.size()));
            free_all({gxt, gyt});
        }
        char name[256]; snprintf(name, sizeof name, "step x3 after the forward: out %s (rel err %.1e)", tag, worst);
        report(worst < tol_f, name, "tol %.0e", tol_f);
        check_dev("step x3 after the forward: conv_state", tag, gcs, cs_c, tol_f);
        check_dev("step x3 after the forward: ssm_state", tag, gss, ss_c, tol_f);
    }
    params_free(&ps);
    free_all({gparams, gacts_mem, gscratch_mem, ginp, gdout, gout, gcs, gss, gg, gdinp});
    cublasCheck(cublasSetMathMode(cublas_handle(), CUBLAS_DEFAULT_MATH));
}

// the step alone from zero states, with a scratch laid out for (B, 1): 4 tokens
static void test_step_only(const Mamba2Config& c, int B, uint64_t seed) {
    char tag[128];
    snprintf(tag, sizeof tag, "[B%d D%d P%d N%d G%d K%d NG%d, scratch for L=1]", B, c.d_model, c.headdim, c.d_state,
             c.ngroups, c.d_conv, c.norm_groups);
    Rng r; rng_seed(&r, seed);
    ParamStore ps; params_init(&ps);
    Mamba2Index ix = mamba2_declare_params(&ps, "", c);
    params_allocate(&ps, false, false);
    Mamba2Params p = mamba2_views(&ps, ps.params, ix);
    mamba2_init_params(p, c, &r);  // the reference's init: dt small, A in [-16, -1]
    fill_uniform(p.norm_w, c.d_inner, &r, 0.5f, 1.5f);
    float* gparams = to_device(ps.params, ps.num_params);
    Mamba2Params gp = mamba2_views(&ps, gparams, ix);
    size_t sb = mamba2_scratch_bytes(c, B, 1);
    Vec scratch_mem(sb / sizeof(float) + 4, NAN);
    float* gscratch_mem = device_arena(sb);
    Mamba2Scratch s, gs;
    Arena sar = {(char*)scratch_mem.data(), 0}, gsar = {(char*)gscratch_mem, 0};
    mamba2_layout_scratch(&s, &sar, c, B, 1);
    mamba2_layout_scratch(&gs, &gsar, c, B, 1);
    size_t ncs = (size_t)B * c.conv_dim * (c.d_conv - 1), nss = (size_t)B * c.nheads * c.headdim * c.d_state;
    Vec cs(ncs, 0.0f), ss(nss, 0.0f);
    float *gcs = to_device_any(cs), *gss = to_device(ss);
    double worst = 0;
    for (int step = 0; step < 4; step++) {
        Vec xt = random_vec((size_t)B * c.d_model, &r), yt(xt.size());
        float *gxt = to_device(xt), *gyt = device_poisoned(xt.size());
        mamba2_step_cpu(yt.data(), cs.data(), ss.data(), s, xt.data(), p, c, B);
        mamba2_step(true, gyt, gcs, gss, gs, gxt, gp, c, B);
        worst = fmax(worst, rel_err(from_device(gyt, yt.size()).data(), yt.data(), yt.size()));
        free_all({gxt, gyt});
    }
    char name[256]; snprintf(name, sizeof name, "step x4 from zero states: out %s (rel err %.1e)", tag, worst);
    report(worst < TOL_FWD, name, "tol %.0e", TOL_FWD);
    check_dev("step x4 from zero states: conv_state", tag, gcs, cs, TOL_FWD);
    check_dev("step x4 from zero states: ssm_state", tag, gss, ss, TOL_FWD);
    params_free(&ps);
    free_all({gparams, gscratch_mem, gcs, gss});
}

int main() {
    cublasCheck(cublasSetMathMode(cublas_handle(), CUBLAS_DEFAULT_MATH));  // exact FP32 unless a case asks for TF32

    test_A(4, 1);
    test_A(37, 2);
    test_dt(1, 3, true, true, 3);
    test_dt(37, 4, true, true, 4);
    test_dt(300, 24, true, true, 5);  // 10 partials, the last one short
    test_dt(300, 5, false, true, 6);
    test_dt(70, 5, true, false, 7);
    test_norm(1, 32, 1, 7, 8);
    test_norm(37, 64, 2, 7, 9);
    test_norm(300, 48, 2, 7, 10);     // groups of 24 channels: fewer than a warp's lanes
    test_norm(70, 1536, 1, 7, 11);    // mamba2-130m's E
    test_norm(37, 64, 2, 4, 12);      // dw only
    test_norm(37, 64, 1, 3, 13);      // dy, dz only
    test_norm(37, 64, 2, 1, 14);      // dy only
    // one group (the one-pass kernel): rows past a partial of 32, E not a multiple of 4 or of the block
    test_norm(70, 37, 1, 7, 15);
    test_norm(33, 1537, 1, 5, 16);    // dy and dw
    test_norm(65, 2049, 1, 6, 17);    // dz and dw; 2049 > 512 threads x 4 columns: the per-row kernels
    test_norm(40, 2048, 1, 4, 18);    // dw only, 512 threads of 4 columns
    test_norm(1101, 96, 1, 7, 19);    // enough rows for several a forward block (N / (2 SMs)), the last block partial
    test_conv_state(2, 37, 26, 4, 15);
    test_conv_state(3, 2, 20, 4, 16);  // L < K-1: zero padded
    test_conv_state(1, 1, 9, 3, 17);
    test_step_prologue(3, 26, 8, 5, 4, 18);
    test_step_prologue(2, 20, 3, 4, 2, 19);
    test_step_prologue(1, 9, 1, 1, 1, 20);       // K 1: no state
    test_step_prologue(1, 1536, 128, 24, 4, 21); // the mamba2-130m shape at batch 1

    //                    D   expand P   N   G  K  NG       B   L   TF32
    test_block(make_config(16, 2, 8, 16, 1, 4, 1), 1, 1, false, 21);
    test_block(make_config(16, 2, 8, 16, 2, 4, 2), 3, 37, false, 22);
    test_block(make_config(16, 2, 8, 16, 1, 4, 2), 2, 300, false, 23);
    test_block(make_config(16, 2, 8, 16, 2, 3, 1), 1, 300, false, 24);
    test_block(make_config(6, 1, 3, 5, 2, 5, 2), 3, 37, false, 25);   // odd sizes, K 5 (the generic conv)
    test_block(make_config(16, 2, 8, 16, 1, 1, 1), 2, 7, false, 26);  // K 1: no conv state
    // Mamba-2's head shape: the SSD takes its tensor-core path (P a multiple of 32, N 128: TF32
    // mma, the backward's states in bf16, src/ssd.h), hence the TF32 tolerances
    test_block(make_config(64, 2, 64, 128, 1, 4, 1), 2, 70, true, 27);
    test_block(make_config(16, 2, 8, 16, 2, 4, 2), 3, 37, true, 28);
    test_step_only(make_config(16, 2, 8, 16, 2, 4, 2), 3, 29);
    test_step_only(make_config(64, 2, 64, 128, 1, 4, 1), 1, 30);
    return test_summary();
}
