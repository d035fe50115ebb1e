// test_layers.cu: CPU checks of the layer components (embedding, rmsnorm, linear,
// conv1d, activations, cross-entropy, adamw) by finite differences and by direct
// formulas. Backward passes always run into gradient buffers pre-filled with random
// values; the gradient is the change, so an overwrite instead of += fails the check.
// Every function with a sum across rows is also run with 1, 2, 3 and 4 OpenMP threads,
// which must give the same bits (CPU training is reproducible on any machine).
#include "test_util.h"
#include "../src/embedding.h"
#include "../src/rmsnorm.h"
#include "../src/linear.h"
#include "../src/conv1d.h"
#include "../src/activations.h"
#include "../src/cross_entropy.h"
#include "../src/adamw.h"

typedef std::vector<float> Vec;

static double dot_d(const float* a, const float* b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}
// gradient = buffer after backward minus its random pre-fill
static Vec delta(const Vec& after, const Vec& before) {
    Vec d(after.size());
    for (size_t i = 0; i < d.size(); i++) d[i] = after[i] - before[i];
    return d;
}

// the same bits (a frozen-parameter call, nullptr gradient, vs the normal call)
static void check_same(const char* name, const Vec& a, const Vec& b) {
    size_t bad = a.size() == b.size() ? 0 : 1;
    for (size_t i = 0; !bad && i < a.size(); i++) bad += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    report(bad == 0, name, "%zu of %zu differ", bad, a.size());
}

static void test_embedding(Rng* r) {
    int V = 11, C = 7, BT = 13;
    std::vector<int> tok(BT);
    for (int i = 0; i < BT; i++) tok[i] = rng_u32(r) % V;
    tok[3] = tok[5];  // a repeated token: its rows must add up
    Vec wte = random_vec((size_t)V * C, r), w = random_vec((size_t)BT * C, r), out((size_t)BT * C);
    embedding_forward_cpu(out.data(), tok.data(), wte.data(), BT, C);
    bool ok = true;
    for (int i = 0; i < BT; i++)
        for (int c = 0; c < C; c++) ok &= out[(size_t)i * C + c] == wte[(size_t)tok[i] * C + c];
    report(ok, "embedding forward gathers rows");
    Vec g0 = random_vec(wte.size(), r), g = g0;
    embedding_backward_cpu(g.data(), w.data(), tok.data(), BT, C);
    Vec grad = delta(g, g0);
    auto loss = [&]() {
        embedding_forward_cpu(out.data(), tok.data(), wte.data(), BT, C);
        return dot_d(out.data(), w.data(), out.size());
    };
    grad_check("embedding wte", wte.data(), grad.data(), wte.size(), loss, 1e-3, 1e-2f, 77);
}

static void test_rmsnorm(Rng* r, int N, int C) {
    Vec x = random_vec((size_t)N * C, r, -2, 2), wt = random_vec(C, r, 0.5f, 1.5f);
    Vec w = random_vec((size_t)N * C, r), out((size_t)N * C), rstd(N);
    rmsnorm_forward_cpu(out.data(), rstd.data(), x.data(), wt.data(), N, C);
    // direct check of the forward in double
    double err = 0;
    for (int n = 0; n < N; n++) {
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)x[n * C + c] * x[n * C + c];
        double rs = 1.0 / sqrt(ss / C + 1e-5);
        err = fmax(err, fabs(rs - rstd[n]) / rs);
        for (int c = 0; c < C; c++) err = fmax(err, fabs(x[n * C + c] * rs * wt[c] - out[n * C + c]));
    }
    char name[96];
    snprintf(name, sizeof name, "rmsnorm forward N=%d C=%d", N, C);
    report(err < 1e-5, name, "err %.3e", err);
    {  // the fused residual add (the layer before's): x_out = a + b, then the norm of x_out; in place on b
        Vec a = random_vec(x.size(), r, -1, 1), b = random_vec(x.size(), r, -1, 1), sum(x.size()), o1(x.size()), r1(N);
        for (size_t i = 0; i < x.size(); i++) sum[i] = a[i] + b[i];
        rmsnorm_forward_cpu(o1.data(), r1.data(), sum.data(), wt.data(), N, C);
        Vec o2(x.size(), NAN), r2(N, NAN), xo = b;
        rmsnorm_forward_residual_cpu(o2.data(), r2.data(), xo.data(), a.data(), xo.data(), wt.data(), N, C);
        snprintf(name, sizeof name, "rmsnorm_forward_residual (in place) == add, then rmsnorm: x_out N=%d C=%d", N, C);
        check_same(name, xo, sum);
        snprintf(name, sizeof name, "rmsnorm_forward_residual (in place) == add, then rmsnorm: out N=%d C=%d", N, C);
        check_same(name, o2, o1);
        snprintf(name, sizeof name, "rmsnorm_forward_residual (in place) == add, then rmsnorm: rstd N=%d C=%d", N, C);
        check_same(name, r2, r1);
    }
    Vec dx0 = random_vec(x.size(), r), dx = dx0, dw0 = random_vec(C, r), dw = dw0;
    rmsnorm_backward_cpu(dx.data(), dw.data(), w.data(), x.data(), wt.data(), rstd.data(), N, C);
    {  // frozen weight (dweight = nullptr): the same dx bits
        Vec dxf = dx0;
        rmsnorm_backward_cpu(dxf.data(), nullptr, w.data(), x.data(), wt.data(), rstd.data(), N, C);
        snprintf(name, sizeof name, "rmsnorm dweight=nullptr: same dx N=%d C=%d", N, C);
        check_same(name, dxf, dx);
    }
    Vec gx = delta(dx, dx0), gw = delta(dw, dw0);
    auto loss = [&]() {
        rmsnorm_forward_cpu(out.data(), rstd.data(), x.data(), wt.data(), N, C);
        return dot_d(out.data(), w.data(), out.size());
    };
    snprintf(name, sizeof name, "rmsnorm x N=%d C=%d", N, C);
    grad_check(name, x.data(), gx.data(), x.size(), loss, 1e-2, 1e-3f, 40);
    snprintf(name, sizeof name, "rmsnorm weight N=%d C=%d", N, C);
    grad_check(name, wt.data(), gw.data(), wt.size(), loss, 1e-2, 1e-3f, 40);
}

// naive reference products in double
static void linear_ref(Vec& out, const Vec& inp, const Vec& W, const float* b, int N, int IC, int OC) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = b ? b[o] : 0.0;
            for (int i = 0; i < IC; i++) s += (double)inp[(size_t)n * IC + i] * W[(size_t)o * IC + i];
            out[(size_t)n * OC + o] = (float)s;
        }
}

static void test_linear_direct(Rng* r, int N, int IC, int OC, bool use_bias) {
    Vec inp = random_vec((size_t)N * IC, r), W = random_vec((size_t)OC * IC, r), b = random_vec(OC, r);
    Vec out((size_t)N * OC, 123.0f), ref((size_t)N * OC);
    const float* bp = use_bias ? b.data() : nullptr;
    linear_forward_cpu(out.data(), inp.data(), W.data(), bp, N, IC, OC);
    linear_ref(ref, inp, W, bp, N, IC, OC);
    char name[128];
    snprintf(name, sizeof name, "linear forward vs naive N=%d IC=%d OC=%d bias=%d", N, IC, OC, (int)use_bias);
    check_close(name, out.data(), ref.data(), out.size(), 1e-5);
    // backward vs naive loops
    Vec dout = random_vec((size_t)N * OC, r);
    Vec di0 = random_vec(inp.size(), r), di = di0, dw0 = random_vec(W.size(), r), dw = dw0;
    Vec db0 = random_vec(OC, r), db = db0;
    linear_backward_cpu(di.data(), dw.data(), use_bias ? db.data() : nullptr, dout.data(), inp.data(),
                        W.data(), N, IC, OC);
    Vec ri = di0, rw = dw0, rb = db0;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < IC; i++) {
            double s = 0;
            for (int o = 0; o < OC; o++) s += (double)dout[(size_t)n * OC + o] * W[(size_t)o * IC + i];
            ri[(size_t)n * IC + i] += (float)s;
        }
    for (int o = 0; o < OC; o++) {
        for (int i = 0; i < IC; i++) {
            double s = 0;
            for (int n = 0; n < N; n++) s += (double)dout[(size_t)n * OC + o] * inp[(size_t)n * IC + i];
            rw[(size_t)o * IC + i] += (float)s;
        }
        double s = 0;
        for (int n = 0; n < N; n++) s += dout[(size_t)n * OC + o];
        if (use_bias) rb[o] += (float)s;
    }
    snprintf(name, sizeof name, "linear dinp vs naive N=%d IC=%d OC=%d", N, IC, OC);
    check_close(name, di.data(), ri.data(), di.size(), 1e-5);
    snprintf(name, sizeof name, "linear dweight vs naive N=%d IC=%d OC=%d", N, IC, OC);
    check_close(name, dw.data(), rw.data(), dw.size(), 1e-5);
    snprintf(name, sizeof name, "linear dbias vs naive N=%d OC=%d bias=%d", N, OC, (int)use_bias);
    check_close(name, db.data(), rb.data(), db.size(), 1e-5);
    // dinp = NULL: the weight grads must be unchanged by skipping it
    Vec dw2 = dw0, db2 = db0;
    linear_backward_cpu(nullptr, dw2.data(), use_bias ? db2.data() : nullptr, dout.data(), inp.data(),
                        W.data(), N, IC, OC);
    snprintf(name, sizeof name, "linear dinp=NULL N=%d IC=%d OC=%d", N, IC, OC);
    bool same = true;
    for (size_t i = 0; i < dw.size(); i++) same &= dw2[i] == dw[i];
    for (int o = 0; o < OC; o++) same &= db2[o] == db[o];
    report(same, name, "weight grads differ");
}

static void test_linear_grad(Rng* r, int N, int IC, int OC) {
    Vec inp = random_vec((size_t)N * IC, r), W = random_vec((size_t)OC * IC, r), b = random_vec(OC, r);
    Vec w = random_vec((size_t)N * OC, r), out((size_t)N * OC);
    Vec di0 = random_vec(inp.size(), r), di = di0, dw0 = random_vec(W.size(), r), dw = dw0;
    Vec db0 = random_vec(OC, r), db = db0;
    linear_backward_cpu(di.data(), dw.data(), db.data(), w.data(), inp.data(), W.data(), N, IC, OC);
    Vec gi = delta(di, di0), gw = delta(dw, dw0), gb = delta(db, db0);
    auto loss = [&]() {
        linear_forward_cpu(out.data(), inp.data(), W.data(), b.data(), N, IC, OC);
        return dot_d(out.data(), w.data(), out.size());
    };
    grad_check("linear inp", inp.data(), gi.data(), inp.size(), loss, 1e-3, 1e-2f, 40);
    grad_check("linear weight", W.data(), gw.data(), W.size(), loss, 1e-3, 1e-2f, 40);
    grad_check("linear bias", b.data(), gb.data(), b.size(), loss, 1e-3, 1e-2f, 40);
}

static void test_conv1d(Rng* r, int B, int L, int E, int K) {
    Vec x = random_vec((size_t)B * L * E, r), wt = random_vec((size_t)E * K, r), bias = random_vec(E, r);
    Vec w = random_vec(x.size(), r), out(x.size());
    // forward vs the formula
    conv1d_forward_cpu(out.data(), x.data(), wt.data(), bias.data(), B, L, E, K);
    double err = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < L; t++)
            for (int e = 0; e < E; e++) {
                double s = bias[e];
                for (int k = 0; k < K; k++) {
                    int ts = t - (K - 1) + k;
                    if (ts >= 0) s += (double)wt[e * K + k] * x[((size_t)b * L + ts) * E + e];
                }
                err = fmax(err, fabs(s - out[((size_t)b * L + t) * E + e]));
            }
    char name[96];
    snprintf(name, sizeof name, "conv1d forward B=%d L=%d E=%d K=%d", B, L, E, K);
    report(err < 1e-5, name, "err %.3e", err);
    Vec dx0 = random_vec(x.size(), r), dx = dx0, dw0 = random_vec(wt.size(), r), dw = dw0;
    Vec db0 = random_vec(E, r), db = db0;
    conv1d_backward_cpu(dx.data(), dw.data(), db.data(), w.data(), x.data(), wt.data(), B, L, E, K);
    for (int mode = 0; mode < 3; mode++) {  // frozen weight and/or bias (nullptr): the same other gradients
        Vec dxf = dx0, dwf = dw0, dbf = db0;
        conv1d_backward_cpu(dxf.data(), mode == 1 ? dwf.data() : nullptr, mode == 2 ? dbf.data() : nullptr, w.data(),
                            x.data(), wt.data(), B, L, E, K);
        snprintf(name, sizeof name, "conv1d frozen mode %d: same dx L=%d", mode, L);
        check_same(name, dxf, dx);
        snprintf(name, sizeof name, "conv1d frozen mode %d: same kept gradient L=%d", mode, L);
        if (mode == 1) check_same(name, dwf, dw);
        if (mode == 2) check_same(name, dbf, db);
    }
    Vec gx = delta(dx, dx0), gw = delta(dw, dw0), gb = delta(db, db0);
    auto loss = [&]() {
        conv1d_forward_cpu(out.data(), x.data(), wt.data(), bias.data(), B, L, E, K);
        return dot_d(out.data(), w.data(), out.size());
    };
    snprintf(name, sizeof name, "conv1d x L=%d", L);
    grad_check(name, x.data(), gx.data(), x.size(), loss, 1e-3, 1e-2f, 60);
    snprintf(name, sizeof name, "conv1d weight L=%d", L);
    grad_check(name, wt.data(), gw.data(), wt.size(), loss, 1e-3, 1e-2f, 60);
    snprintf(name, sizeof name, "conv1d bias L=%d", L);
    grad_check(name, bias.data(), gb.data(), bias.size(), loss, 1e-3, 1e-2f, 60);

    // the recurrent step over time (state starts at zero = the left padding) equals the forward
    Vec state((size_t)B * E * (K - 1 > 0 ? K - 1 : 1), 0.0f), xs((size_t)B * E), os((size_t)B * E);
    conv1d_forward_cpu(out.data(), x.data(), wt.data(), bias.data(), B, L, E, K);
    err = 0;
    for (int t = 0; t < L; t++) {
        for (int b = 0; b < B; b++)
            for (int e = 0; e < E; e++) xs[(size_t)b * E + e] = x[((size_t)b * L + t) * E + e];
        conv1d_step_cpu(os.data(), state.data(), xs.data(), wt.data(), bias.data(), B, E, K);
        for (int b = 0; b < B; b++)
            for (int e = 0; e < E; e++)
                err = fmax(err, fabs(os[(size_t)b * E + e] - out[((size_t)b * L + t) * E + e]));
    }
    // bit for bit: conv1d_step_channel sums in the forward's order (oldest input first)
    snprintf(name, sizeof name, "conv1d_step == forward, bit for bit, B=%d L=%d E=%d K=%d", B, L, E, K);
    report(err == 0, name, "err %.3e", err);
}

// fused conv1d + SiLU: equals silu(conv1d(x)) of the separate functions, and finite differences
static void test_conv1d_silu(Rng* r, int B, int L, int E, int K) {
    size_t n = (size_t)B * L * E;
    Vec x = random_vec(n, r, -2, 2), wt = random_vec((size_t)E * K, r), bias = random_vec(E, r);
    Vec w = random_vec(n, r), out(n), pre(n), ref(n);
    conv1d_silu_forward_cpu(out.data(), x.data(), wt.data(), bias.data(), B, L, E, K);
    conv1d_forward_cpu(pre.data(), x.data(), wt.data(), bias.data(), B, L, E, K);
    silu_forward_cpu(ref.data(), pre.data(), n);
    char name[96];
    snprintf(name, sizeof name, "conv1d_silu forward == silu(conv1d) B=%d L=%d E=%d K=%d", B, L, E, K);
    check_close(name, out.data(), ref.data(), n, 1e-6);
    // backward == conv1d_backward(silu_backward(dout)) of the separate functions
    Vec dx0 = random_vec(n, r), dx = dx0, dw0 = random_vec(wt.size(), r), dw = dw0;
    Vec db0 = random_vec(E, r), db = db0;
    conv1d_silu_backward_cpu(dx.data(), dw.data(), db.data(), w.data(), x.data(), wt.data(), bias.data(),
                             B, L, E, K);
    Vec dpre(n, 0.0f), dx2 = dx0, dw2 = dw0, db2 = db0;
    silu_backward_cpu(dpre.data(), w.data(), pre.data(), n);
    conv1d_backward_cpu(dx2.data(), dw2.data(), db2.data(), dpre.data(), x.data(), wt.data(), B, L, E, K);
    for (int mode = 0; mode < 3; mode++) {  // frozen weight and/or bias (nullptr): the same other gradients
        Vec dxf = dx0, dwf = dw0, dbf = db0;
        conv1d_silu_backward_cpu(dxf.data(), mode == 1 ? dwf.data() : nullptr, mode == 2 ? dbf.data() : nullptr,
                                 w.data(), x.data(), wt.data(), bias.data(), B, L, E, K);
        snprintf(name, sizeof name, "conv1d_silu frozen mode %d: same dx L=%d", mode, L);
        check_same(name, dxf, dx);
        snprintf(name, sizeof name, "conv1d_silu frozen mode %d: same kept gradient L=%d", mode, L);
        if (mode == 1) check_same(name, dwf, dw);
        if (mode == 2) check_same(name, dbf, db);
    }
    snprintf(name, sizeof name, "conv1d_silu backward == separate dx L=%d", L);
    check_close(name, dx.data(), dx2.data(), n, 1e-5);
    snprintf(name, sizeof name, "conv1d_silu backward == separate dweight L=%d", L);
    check_close(name, dw.data(), dw2.data(), dw.size(), 1e-5);
    snprintf(name, sizeof name, "conv1d_silu backward == separate dbias L=%d", L);
    check_close(name, db.data(), db2.data(), E, 1e-5);
    Vec gx = delta(dx, dx0), gw = delta(dw, dw0), gb = delta(db, db0);
    auto loss = [&]() {
        conv1d_silu_forward_cpu(out.data(), x.data(), wt.data(), bias.data(), B, L, E, K);
        return dot_d(out.data(), w.data(), out.size());
    };
    snprintf(name, sizeof name, "conv1d_silu x L=%d", L);
    grad_check(name, x.data(), gx.data(), x.size(), loss, 1e-3, 1e-2f, 60);
    snprintf(name, sizeof name, "conv1d_silu weight L=%d", L);
    grad_check(name, wt.data(), gw.data(), wt.size(), loss, 1e-3, 1e-2f, 60);
    snprintf(name, sizeof name, "conv1d_silu bias L=%d", L);
    grad_check(name, bias.data(), gb.data(), bias.size(), loss, 1e-3, 1e-2f, 60);
}

// GRAD_SET (common.h): the first writer's "=" gives the bits of "+=" onto zeros and writes every
// element (its buffer starts as NaN, so a skipped element stays NaN and differs); the parameter
// gradients still add (they start from the same random values on both sides)
static void check_set_vs_add(const char* what, const std::function<void(float* dx, float* dw, GradWrite)>& run, size_t n_dx,
                             size_t n_dw, Rng* r) {
    Vec dx_add(n_dx, 0.0f), dx_set(n_dx, NAN), dw0 = random_vec(n_dw, r), dw_add = dw0, dw_set = dw0;
    run(dx_add.data(), dw_add.data(), GRAD_ADD);
    run(dx_set.data(), dw_set.data(), GRAD_SET);
    char name[160];
    snprintf(name, sizeof name, "%s: GRAD_SET into NaN == GRAD_ADD into zeros (every element written)", what);
    check_same(name, dx_set, dx_add);
    snprintf(name, sizeof name, "%s: GRAD_SET leaves the weight gradient's += alone", what);
    check_same(name, dw_set, dw_add);
}
static void test_grad_set(Rng* r) {
    for (int N : {1, 9, 1030}) {  // 1030: dinp's product over K spans K blocks
        int IC = 13, OC = 600;
        Vec inp = random_vec((size_t)N * IC, r), W = random_vec((size_t)OC * IC, r), dout = random_vec((size_t)N * OC, r);
        char what[64]; snprintf(what, sizeof what, "linear_backward_cpu N=%d", N);
        check_set_vs_add(what, [&](float* dx, float* dw, GradWrite g) {
            linear_backward_cpu(dx, dw, nullptr, dout.data(), inp.data(), W.data(), N, IC, OC, g);
        }, inp.size(), W.size(), r);
        snprintf(what, sizeof what, "linear_backward_split (CPU) N=%d", N);
        check_set_vs_add(what, [&](float* dx, float* dw, GradWrite g) {  // halves of 200 and 400 outputs
            linear_backward_split(false, dx, dw, dout.data(), dout.data() + 200, inp.data(), W.data(), N, IC, 200, 400, g);
        }, inp.size(), W.size(), r);
    }
    for (int K : {4, 1}) {
        int B = 2, L = 7, E = 5;
        size_t n = (size_t)B * L * E;
        Vec x = random_vec(n, r), wt = random_vec((size_t)E * K, r), bias = random_vec(E, r), dout = random_vec(n, r);
        char what[64]; snprintf(what, sizeof what, "conv1d_backward_cpu K=%d", K);
        check_set_vs_add(what, [&](float* dx, float* dw, GradWrite g) {
            conv1d_backward_cpu(dx, dw, nullptr, dout.data(), x.data(), wt.data(), B, L, E, K, g);
        }, n, wt.size(), r);
        snprintf(what, sizeof what, "conv1d_silu_backward (CPU) K=%d", K);
        check_set_vs_add(what, [&](float* dx, float* dw, GradWrite g) {
            conv1d_silu_backward(false, dx, dw, nullptr, dout.data(), x.data(), wt.data(), bias.data(), B, L, E, K, g);
        }, n, wt.size(), r);
    }
}

static void test_activations(Rng* r) {
    size_t n = 60;
    Vec x = random_vec(n, r, -6, 6), w = random_vec(n, r), out(n);
    x[0] = 21.5f; x[1] = 30.0f; x[2] = -25.0f;  // softplus linear branch, silu tails
    // silu
    {
        Vec d0 = random_vec(n, r), d = d0;
        silu_backward_cpu(d.data(), w.data(), x.data(), n);
        Vec g = delta(d, d0);
        auto loss = [&]() { silu_forward_cpu(out.data(), x.data(), n); return dot_d(out.data(), w.data(), n); };
        grad_check("silu", x.data(), g.data(), n, loss, 1e-3, 1e-3f, 60);
        silu_forward_cpu(out.data(), x.data(), n);
        double err = 0;
        for (size_t i = 0; i < n; i++) err = fmax(err, fabs(out[i] - x[i] / (1.0 + exp(-(double)x[i]))));
        report(err < 1e-5, "silu forward", "err %.3e", err);
    }
    // softplus
    {
        Vec d0 = random_vec(n, r), d = d0;
        softplus_backward_cpu(d.data(), w.data(), x.data(), n);
        Vec g = delta(d, d0);
        auto loss = [&]() { softplus_forward_cpu(out.data(), x.data(), n); return dot_d(out.data(), w.data(), n); };
        grad_check("softplus", x.data(), g.data(), n, loss, 1e-3, 1e-3f, 60);
        softplus_forward_cpu(out.data(), x.data(), n);
        double err = 0;
        for (size_t i = 0; i < n; i++) {
            double ref = x[i] > 20 ? x[i] : log1p(exp((double)x[i]));
            err = fmax(err, fabs(out[i] - ref));
        }
        report(err < 1e-5, "softplus forward", "err %.3e", err);
    }
    // adds
    {
        Vec a = random_vec(n, r), b = random_vec(n, r), o(n), acc = a;
        add_forward_cpu(o.data(), a.data(), b.data(), n);
        add_inplace_cpu(acc.data(), b.data(), n);
        bool ok = true;
        for (size_t i = 0; i < n; i++) ok &= o[i] == a[i] + b[i] && acc[i] == a[i] + b[i];
        report(ok, "add_forward / add_inplace");
    }
}

static void test_cross_entropy(Rng* r, int BT, int V) {
    Vec logits = random_vec((size_t)BT * V, r, -3, 3);
    std::vector<int> tgt(BT);
    for (int i = 0; i < BT; i++) tgt[i] = rng_u32(r) % V;
    tgt[1] = -1;  // ignored
    float scale = 0.37f;
    Vec losses(BT), losses2(BT), lg = logits;
    cross_entropy_cpu(losses.data(), lg.data(), tgt.data(), BT, V, scale, false);
    bool unchanged = true;
    for (size_t i = 0; i < lg.size(); i++) unchanged &= lg[i] == logits[i];
    report(unchanged, "cross_entropy write_grad=false leaves logits");
    // loss vs double formula
    double err = 0;
    for (int i = 0; i < BT; i++) {
        double ref = 0;
        if (tgt[i] >= 0) {
            double s = 0;
            for (int v = 0; v < V; v++) s += exp((double)logits[(size_t)i * V + v]);
            ref = log(s) - logits[(size_t)i * V + tgt[i]];
        }
        err = fmax(err, fabs(ref - losses[i]));
    }
    report(err < 1e-5, "cross_entropy losses vs formula", "err %.3e", err);
    // grads in place; the loss values must not change
    Vec g = logits;
    cross_entropy_cpu(losses2.data(), g.data(), tgt.data(), BT, V, scale, true);
    check_close("cross_entropy losses with write_grad", losses2.data(), losses.data(), BT, 1e-7);
    bool zero_row = losses2[1] == 0.0f;
    for (int v = 0; v < V; v++) zero_row &= g[(size_t)1 * V + v] == 0.0f;
    report(zero_row, "cross_entropy ignored target: loss 0, grad 0");
    Vec tmp(logits.size());
    auto loss = [&]() {
        tmp = logits;
        cross_entropy_cpu(losses.data(), tmp.data(), tgt.data(), BT, V, scale, false);
        double s = 0;
        for (int i = 0; i < BT; i++) s += losses[i];
        return s * scale;
    };
    grad_check("cross_entropy logits", logits.data(), g.data(), logits.size(), loss, 1e-2, 1e-2f, 60);
    // large logits must not overflow (max subtraction)
    Vec big = logits;
    for (auto& v : big) v += 500.0f;
    Vec lb(BT);
    cross_entropy_cpu(lb.data(), big.data(), tgt.data(), BT, V, scale, true);
    cross_entropy_cpu(losses.data(), tmp.data(), tgt.data(), BT, V, scale, false);
    check_close("cross_entropy shift invariance (+500)", lb.data(), losses.data(), BT, 1e-4);
    check_close("cross_entropy grad shift invariance (+500)", big.data(), g.data(), big.size(), 1e-4);
}

static void test_adamw(Rng* r) {
    size_t n = 7;
    Vec p = random_vec(n, r), g = random_vec(n, r), m = random_vec(n, r, 0, 0.1f), v = random_vec(n, r, 0, 0.1f);
    float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.7f;
    for (int t = 1; t <= 2; t++) {
        Vec pr = p, mr = m, vr = v;  // hand-computed in double
        for (size_t i = 0; i < n; i++) {
            double gg = (double)g[i] * gs;
            mr[i] = (float)(b1 * (double)m[i] + (1 - (double)b1) * gg);
            vr[i] = (float)(b2 * (double)v[i] + (1 - (double)b2) * gg * gg);
            double mh = mr[i] / (1 - pow((double)b1, t)), vh = vr[i] / (1 - pow((double)b2, t));
            pr[i] = (float)(p[i] * (1 - (double)lr * wd) - lr * mh / (sqrt(vh) + eps));
        }
        adamw_update_cpu(p.data(), g.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd, t, gs);
        char name[64];
        snprintf(name, sizeof name, "adamw params step %d", t);
        check_close(name, p.data(), pr.data(), n, 1e-6);
        snprintf(name, sizeof name, "adamw m,v step %d", t);
        bool ok = rel_err(m.data(), mr.data(), n) < 1e-6 && rel_err(v.data(), vr.data(), n) < 1e-6;
        report(ok, name, "m or v mismatch");
        g = random_vec(n, r);
    }
    Vec x = random_vec(1001, r);
    double ref = 0;
    for (float a : x) ref += (double)a * a;
    double got = sum_squares_cpu(x.data(), x.size());
    report(fabs(got - ref) < 1e-9 * ref, "sum_squares", "got %.10g ref %.10g", got, ref);
}

// split_columns / concat_columns: exact values at known positions, and a round trip
static void test_columns(Rng* r, int N, int ca, int cb, int cc) {
    int C = ca + cb + cc;
    std::vector<float> wide = random_vec((size_t)N * C, r), a((size_t)N * ca), b((size_t)N * cb), c((size_t)N * cc), back((size_t)N * C);
    split_columns_cpu(a.data(), b.data(), c.data(), wide.data(), N, ca, cb, cc);
    bool ok = true;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < C; j++) {
            float want = wide[(size_t)i * C + j];
            float got = j < ca ? a[(size_t)i * ca + j] : j < ca + cb ? b[(size_t)i * cb + j - ca] : c[(size_t)i * cc + j - ca - cb];
            if (got != want) ok = false;
        }
    char name[96];
    snprintf(name, sizeof name, "split_columns N=%d [%d|%d|%d]", N, ca, cb, cc);
    report(ok, name, "a value landed in the wrong place");
    concat_columns_cpu(back.data(), a.data(), b.data(), c.data(), N, ca, cb, cc);
    snprintf(name, sizeof name, "concat_columns(split_columns(x)) == x, N=%d", N);
    report(back == wide, name, "round trip differs");
}

// ---------------------------------------------------------------------------
// CPU determinism: `run` computes from fixed inputs and returns every output it wrote,
// concatenated; with 2, 3 and 4 OpenMP threads the bytes must equal those of 1 thread.

static void append(Vec& all, const Vec& part) { all.insert(all.end(), part.begin(), part.end()); }

static void check_same_bits_any_threads(const char* what, const std::function<Vec()>& run) {
    char name[160];
    snprintf(name, sizeof name, "same bits with 1, 2, 3, 4 threads: %s", what);
#ifdef _OPENMP
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    Vec ref = run();
    int differs = 0;  // the first thread count whose bits differ
    for (int threads = 2; threads <= 4 && !differs; threads++) {
        omp_set_num_threads(threads);
        Vec got = run();
        if (got.size() != ref.size() || memcmp(got.data(), ref.data(), ref.size() * sizeof(float)) != 0)
            differs = threads;
    }
    omp_set_num_threads(saved);
    report(!differs, name, "%d threads differ from 1 thread", differs);
#else
    (void)run;
    report(true, name);  // built without OpenMP: one thread only
#endif
}

// odd shapes, so no thread count divides the work evenly
static void test_thread_count_invariance(Rng* r) {
    {  // repeated tokens: several rows add into one dwte row
        int BT = 301, C = 37, V = 11;
        std::vector<int> tok(BT);
        for (int i = 0; i < BT; i++) tok[i] = rng_u32(r) % V;
        Vec dout = random_vec((size_t)BT * C, r), dwte0 = random_vec((size_t)V * C, r);
        check_same_bits_any_threads("embedding_backward", [&]() {
            Vec dwte = dwte0;
            embedding_backward_cpu(dwte.data(), dout.data(), tok.data(), BT, C);
            return dwte;
        });
    }
    {
        int N = 257, C = 37;
        Vec x = random_vec((size_t)N * C, r, -2, 2), wt = random_vec(C, r, 0.5f, 1.5f);
        Vec dout = random_vec(x.size(), r), dx0 = random_vec(x.size(), r), dw0 = random_vec(C, r);
        check_same_bits_any_threads("rmsnorm forward + backward", [&]() {
            Vec out(x.size()), rstd(N), dx = dx0, dw = dw0, all;
            rmsnorm_forward_cpu(out.data(), rstd.data(), x.data(), wt.data(), N, C);
            rmsnorm_backward_cpu(dx.data(), dw.data(), dout.data(), x.data(), wt.data(), rstd.data(), N, C);
            append(all, out); append(all, rstd); append(all, dx); append(all, dw);
            return all;
        });
    }
    {  // N > one K block of the dweight product
        int N = 1031, IC = 37, OC = 19;
        Vec inp = random_vec((size_t)N * IC, r), W = random_vec((size_t)OC * IC, r), b = random_vec(OC, r);
        Vec dout = random_vec((size_t)N * OC, r), di0 = random_vec(inp.size(), r);
        Vec dw0 = random_vec(W.size(), r), db0 = random_vec(OC, r);
        check_same_bits_any_threads("linear forward + backward", [&]() {
            Vec out((size_t)N * OC), di = di0, dw = dw0, db = db0, all;
            linear_forward_cpu(out.data(), inp.data(), W.data(), b.data(), N, IC, OC);
            linear_backward_cpu(di.data(), dw.data(), db.data(), dout.data(), inp.data(), W.data(), N, IC, OC);
            append(all, out); append(all, di); append(all, dw); append(all, db);
            return all;
        });
    }
    {
        int B = 3, L = 67, E = 37, K = 4;
        size_t n = (size_t)B * L * E;
        Vec x = random_vec(n, r, -2, 2), wt = random_vec((size_t)E * K, r), bias = random_vec(E, r);
        Vec dout = random_vec(n, r), dx0 = random_vec(n, r), dw0 = random_vec(wt.size(), r), db0 = random_vec(E, r);
        check_same_bits_any_threads("conv1d forward + backward", [&]() {
            Vec out(n), dx = dx0, dw = dw0, db = db0, all;
            conv1d_forward_cpu(out.data(), x.data(), wt.data(), bias.data(), B, L, E, K);
            conv1d_backward_cpu(dx.data(), dw.data(), db.data(), dout.data(), x.data(), wt.data(), B, L, E, K);
            append(all, out); append(all, dx); append(all, dw); append(all, db);
            return all;
        });
        check_same_bits_any_threads("conv1d_silu forward + backward", [&]() {
            Vec out(n), dx = dx0, dw = dw0, db = db0, all;
            conv1d_silu_forward_cpu(out.data(), x.data(), wt.data(), bias.data(), B, L, E, K);
            conv1d_silu_backward_cpu(dx.data(), dw.data(), db.data(), dout.data(), x.data(), wt.data(), bias.data(),
                                     B, L, E, K);
            append(all, out); append(all, dx); append(all, dw); append(all, db);
            return all;
        });
    }
    {
        int BT = 37, V = 101;
        Vec logits = random_vec((size_t)BT * V, r, -3, 3);
        std::vector<int> tgt(BT);
        for (int i = 0; i < BT; i++) tgt[i] = rng_u32(r) % V;
        tgt[5] = -1;
        check_same_bits_any_threads("cross_entropy losses + grad", [&]() {
            Vec lg = logits, losses(BT), all;
            cross_entropy_cpu(losses.data(), lg.data(), tgt.data(), BT, V, 1.0f / BT, true);
            append(all, losses); append(all, lg);
            return all;
        });
    }
    {  // several blocks of the sum, the last one partial
        size_t n = 100003;
        Vec x = random_vec(n, r), g = random_vec(n, r);
        Vec m0 = random_vec(n, r, -0.1f, 0.1f), v0 = random_vec(n, r, 0, 0.1f);
        check_same_bits_any_threads("sum_squares", [&]() {
            double s = sum_squares_cpu(x.data(), n);
            Vec bits(2);
            memcpy(bits.data(), &s, sizeof s);
            return bits;
        });
        check_same_bits_any_threads("adamw_update", [&]() {
            Vec p = x, m = m0, v = v0, all;
            adamw_update_cpu(p.data(), g.data(), m.data(), v.data(), n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 3, 0.7f);
            append(all, p); append(all, m); append(all, v);
            return all;
        });
    }
}

int main() {
    Rng r;
    rng_seed(&r, 1234);
    {
        Rng rc; rng_seed(&rc, 77);  // own stream: the other tests keep their inputs
        test_columns(&rc, 1, 1, 1, 1);
        test_columns(&rc, 37, 3, 16, 16);
    }
    test_embedding(&r);
    test_rmsnorm(&r, 5, 37);
    test_rmsnorm(&r, 1, 8);
    test_linear_grad(&r, 9, 13, 6);
    test_linear_direct(&r, 9, 13, 6, true);
    test_linear_direct(&r, 1, 5, 3, false);
    test_linear_direct(&r, 37, 600, 11, true);   // K > one K block (forward, dinp)
    test_linear_direct(&r, 1030, 19, 7, true);   // dweight K = N spans K blocks
    for (int L : {1, 3, 7}) test_conv1d(&r, 2, L, 5, 4);
    test_conv1d(&r, 1, 6, 3, 1);  // K = 1: no state
    {
        Rng rs;  // own stream: the tests after this one keep their inputs
        rng_seed(&rs, 99);
        for (int L : {1, 7, 70}) test_conv1d_silu(&rs, 2, L, 5, 4);
        test_conv1d_silu(&rs, 1, 9, 3, 1);
    }
    {
        Rng rg; rng_seed(&rg, 31);  // own stream: the tests after this one keep their inputs
        test_grad_set(&rg);
    }
    test_activations(&r);
    test_cross_entropy(&r, 6, 17);
    test_cross_entropy(&r, 3, 256);
    test_adamw(&r);
    {
        Rng rd; rng_seed(&rd, 5);  // own stream: the tests above keep their inputs
        test_thread_count_invariance(&rd);
    }
    return test_summary();
}
