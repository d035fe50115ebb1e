// test_scan.cu: CPU tests of the selective scan (src/selective_scan.h).
//   - chunked forward == a naive forward that keeps every state
//   - the recurrent step over t reproduces the parallel forward
//   - finite-difference gradient checks of every input and parameter through
//     loss = sum(out * w), at lengths 1, 7, 70 (two chunks, partial last), 130
//   - the backward accumulates (+=) into gradients
//   - forward and backward give the same bits with 1, 2, 3 or 4 OpenMP threads
//   - the CPU scan's own exp / log1p / softplus / sigmoid (scan_exp_cpu ...) against double over
//     dense sweeps of their ranges, with their stated error bounds and special values
#include <string>
#include "test_util.h"
#include "../src/selective_scan.h"

// all inputs of one scan problem, filled with random values
struct ScanProblem {
    int B, L, E, N;
    std::vector<float> u, delta, A_log, Bm, Cm, D, z, delta_bias, w;
    ScanProblem(int B_, int L_, int E_, int N_, uint64_t seed) : B(B_), L(L_), E(E_), N(N_) {
        Rng r; rng_seed(&r, seed);
        size_t BLE = (size_t)B * L * E, BLN = (size_t)B * L * N;
        u = random_vec(BLE, &r, -1.5f, 1.5f);
        delta = random_vec(BLE, &r, -3.0f, 1.0f);  // softplus gives dt in ~[0.05, 1.3]
        A_log.resize((size_t)E * N);
        for (int e = 0; e < E; e++)  // the Mamba init A = -(1..N), plus noise
            for (int n = 0; n < N; n++) A_log[e * N + n] = logf((float)(n + 1)) + 0.2f * (rng_uniform(&r) - 0.5f);
        Bm = random_vec(BLN, &r);
        Cm = random_vec(BLN, &r);
        D = random_vec(E, &r);
        z = random_vec(BLE, &r, -2.0f, 2.0f);
        delta_bias = random_vec(E, &r, -1.0f, 0.5f);
        w = random_vec(BLE, &r);  // loss weights
    }
    int nc() const { return scan_n_chunks(L); }
    std::vector<float> forward(std::vector<float>* hs_out = nullptr) const {
        std::vector<float> out((size_t)B * L * E), hs((size_t)B * nc() * E * N);
        selective_scan_forward_cpu(out.data(), hs.data(), u.data(), delta.data(), A_log.data(), Bm.data(),
                                   Cm.data(), D.data(), z.data(), delta_bias.data(), B, L, E, N);
        if (hs_out) *hs_out = hs;
        return out;
    }
    double loss() const {
        std::vector<float> out = forward();
        double s = 0;
        for (size_t i = 0; i < out.size(); i++) s += (double)out[i] * w[i];
        return s;
    }
};

// naive forward: all B*L*E*N states, loops in a different order (t outermost)
static std::vector<float> naive_forward(const ScanProblem& p, std::vector<float>* states) {
    int B = p.B, L = p.L, E = p.E, N = p.N;
    std::vector<float> out((size_t)B * L * E);
    states->assign((size_t)B * L * E * N, 0.0f);  // (B, L, E, N)
    for (int t = 0; t < L; t++)
        for (int b = 0; b < B; b++)
            for (int e = 0; e < E; e++) {
                size_t i = ((size_t)b * L + t) * E + e;
                double dt = log1p(exp((double)p.delta[i] + p.delta_bias[e]));
                double y = (double)p.D[e] * p.u[i];
                for (int n = 0; n < N; n++) {
                    double A = -exp((double)p.A_log[e * N + n]);
                    double hp = t > 0 ? (*states)[(((size_t)b * L + t - 1) * E + e) * N + n] : 0.0;
                    double h = exp(dt * A) * hp + dt * p.Bm[((size_t)b * L + t) * N + n] * p.u[i];
                    (*states)[i * N + n] = (float)h;
                    y += p.Cm[((size_t)b * L + t) * N + n] * h;
                }
                double zt = p.z[i];
                out[i] = (float)(y * zt / (1.0 + exp(-zt)));
            }
    return out;
}

static void test_forward_vs_naive(int B, int L, int E, int N) {
    ScanProblem p(B, L, E, N, 100 + L * 7 + N);
    std::vector<float> hs, states;
    std::vector<float> out = p.forward(&hs);
    std::vector<float> ref = naive_forward(p, &states);
    char name[128];
    snprintf(name, sizeof name, "forward vs naive B=%d L=%d E=%d N=%d", B, L, E, N);
    check_close(name, out.data(), ref.data(), out.size(), 1e-5);
    // hs[b, c] must be the state after step c*SCAN_CHUNK - 1 (zero for c = 0)
    std::vector<float> hs_ref(hs.size(), 0.0f);
    for (int b = 0; b < B; b++)
        for (int c = 1; c < p.nc(); c++)
            for (int e = 0; e < E; e++)
                for (int n = 0; n < N; n++)
                    hs_ref[(((size_t)b * p.nc() + c) * E + e) * N + n] =
                        states[((((size_t)b * L) + c * SCAN_CHUNK - 1) * E + e) * N + n];
    snprintf(name, sizeof name, "chunk states hs B=%d L=%d E=%d N=%d", B, L, E, N);
    bool ok = true;
    for (int b = 0; b < B; b++)  // chunk 0 must be exactly zero
        for (size_t j = 0; j < (size_t)E * N; j++) ok &= hs[(size_t)b * p.nc() * E * N + j] == 0.0f;
    if (p.nc() > 1) ok &= rel_err(hs.data(), hs_ref.data(), hs.size()) < 1e-5;
    report(ok, name, "hs mismatch");
}

static void test_step_vs_forward(int B, int L, int E, int N) {
    ScanProblem p(B, L, E, N, 200 + L + N);
    std::vector<float> ref = p.forward();
    std::vector<float> h((size_t)B * E * N, 0.0f), out((size_t)B * L * E);
    std::vector<float> ut(B * E), dt(B * E), zt(B * E), ot(B * E), Bt(B * N), Ct(B * N);
    for (int t = 0; t < L; t++) {
        for (int b = 0; b < B; b++) {  // slice time step t out of the (B, L, .) tensors
            for (int e = 0; e < E; e++) {
                size_t i = ((size_t)b * L + t) * E + e;
                ut[b * E + e] = p.u[i]; dt[b * E + e] = p.delta[i]; zt[b * E + e] = p.z[i];
            }
            for (int n = 0; n < N; n++) {
                Bt[b * N + n] = p.Bm[((size_t)b * L + t) * N + n];
                Ct[b * N + n] = p.Cm[((size_t)b * L + t) * N + n];
            }
        }
        selective_scan_step_cpu(ot.data(), h.data(), ut.data(), dt.data(), p.A_log.data(), Bt.data(), Ct.data(),
                                p.D.data(), zt.data(), p.delta_bias.data(), B, E, N);
        for (int b = 0; b < B; b++)
            for (int e = 0; e < E; e++) out[((size_t)b * L + t) * E + e] = ot[b * E + e];
    }
    char name[128];
    snprintf(name, sizeof name, "step over t == forward B=%d L=%d E=%d N=%d", B, L, E, N);
    check_close(name, out.data(), ref.data(), out.size(), 1e-6);
}

struct ScanGrads {
    std::vector<float> du, ddelta, dA_log, dBm, dCm, dD, dz, ddelta_bias;
};

static ScanGrads init_grads(const ScanProblem& p, Rng* r, bool random_init) {
    size_t BLE = (size_t)p.B * p.L * p.E, BLN = (size_t)p.B * p.L * p.N;
    float lo = random_init ? -1.0f : 0.0f, hi = random_init ? 1.0f : 0.0f;
    ScanGrads g;
    g.du = random_vec(BLE, r, lo, hi); g.ddelta = random_vec(BLE, r, lo, hi);
    g.dA_log = random_vec((size_t)p.E * p.N, r, lo, hi);
    g.dBm = random_vec(BLN, r, lo, hi); g.dCm = random_vec(BLN, r, lo, hi);
    g.dD = random_vec(p.E, r, lo, hi); g.dz = random_vec(BLE, r, lo, hi);
    g.ddelta_bias = random_vec(p.E, r, lo, hi);
    return g;
}

static void run_backward(const ScanProblem& p, const std::vector<float>& hs, ScanGrads* g) {
    // dloss/dout = w for loss = sum(out * w)
    selective_scan_backward_cpu(g->du.data(), g->ddelta.data(), g->dA_log.data(), g->dBm.data(), g->dCm.data(),
                                g->dD.data(), g->dz.data(), g->ddelta_bias.data(), p.w.data(), p.u.data(),
                                p.delta.data(), p.A_log.data(), p.Bm.data(), p.Cm.data(), p.D.data(), p.z.data(),
                                p.delta_bias.data(), hs.data(), p.B, p.L, p.E, p.N);
}

static void test_gradients(int B, int L, int E, int N) {
    ScanProblem p(B, L, E, N, 300 + L * 3 + N);
    std::vector<float> hs;
    p.forward(&hs);
    Rng r; rng_seed(&r, 5);
    ScanGrads g = init_grads(p, &r, false);
    run_backward(p, hs, &g);
    auto loss = [&]() { return p.loss(); };
    char tag[96];
    snprintf(tag, sizeof tag, "B=%d L=%d E=%d N=%d", B, L, E, N);
    struct { const char* name; std::vector<float>* param; std::vector<float>* grad; } items[] = {
        {"u", &p.u, &g.du},          {"delta", &p.delta, &g.ddelta},
        {"A_log", &p.A_log, &g.dA_log}, {"Bm", &p.Bm, &g.dBm},
        {"Cm", &p.Cm, &g.dCm},       {"D", &p.D, &g.dD},
        {"z", &p.z, &g.dz},          {"delta_bias", &p.delta_bias, &g.ddelta_bias},
    };
    for (auto& it : items) {
        char name[160];
        snprintf(name, sizeof name, "%s %s", it.name, tag);
        grad_check(name, it.param->data(), it.grad->data(), it.param->size(), loss, 1e-2, 1e-2f, 32);
    }
}

// backward adds into gradients: (init + backward) - init == backward from zero
static void test_accumulates(int B, int L, int E, int N) {
    ScanProblem p(B, L, E, N, 400 + L);
    std::vector<float> hs;
    p.forward(&hs);
    Rng r; rng_seed(&r, 9);
    ScanGrads zero = init_grads(p, &r, false), acc = init_grads(p, &r, true), init = acc;
    run_backward(p, hs, &zero);
    run_backward(p, hs, &acc);
    std::vector<float>* za[] = {&zero.du, &zero.ddelta, &zero.dA_log, &zero.dBm, &zero.dCm, &zero.dD, &zero.dz, &zero.ddelta_bias};
    std::vector<float>* aa[] = {&acc.du, &acc.ddelta, &acc.dA_log, &acc.dBm, &acc.dCm, &acc.dD, &acc.dz, &acc.ddelta_bias};
    std::vector<float>* ia[] = {&init.du, &init.ddelta, &init.dA_log, &init.dBm, &init.dCm, &init.dD, &init.dz, &init.ddelta_bias};
    double worst = 0;
    for (int k = 0; k < 8; k++) {
        std::vector<float> diff(aa[k]->size());
        for (size_t i = 0; i < diff.size(); i++) diff[i] = (*aa[k])[i] - (*ia[k])[i];
        double e = rel_err(diff.data(), za[k]->data(), diff.size());
        if (e > worst) worst = e;
    }
    char name[128];
    snprintf(name, sizeof name, "backward accumulates B=%d L=%d E=%d N=%d", B, L, E, N);
    report(worst < 1e-5, name, "rel err %.3e", worst);
}

// GRAD_SET (common.h): du, ddelta, dz set, not added: into NaN they come out as the bits of the
// backward into zeros; every other gradient still adds (they start from the same random values)
static void test_grad_set(int B, int L, int E, int N) {
    ScanProblem p(B, L, E, N, 600 + L);
    std::vector<float> hs;
    p.forward(&hs);
    Rng r; rng_seed(&r, 17);
    ScanGrads add = init_grads(p, &r, true), set = add;
    for (auto* v : {&add.du, &add.ddelta, &add.dz}) std::fill(v->begin(), v->end(), 0.0f);
    for (auto* v : {&set.du, &set.ddelta, &set.dz}) std::fill(v->begin(), v->end(), NAN);
    run_backward(p, hs, &add);
    selective_scan_backward_cpu(set.du.data(), set.ddelta.data(), set.dA_log.data(), set.dBm.data(), set.dCm.data(), set.dD.data(),
                                set.dz.data(), set.ddelta_bias.data(), p.w.data(), p.u.data(), p.delta.data(), p.A_log.data(),
                                p.Bm.data(), p.Cm.data(), p.D.data(), p.z.data(), p.delta_bias.data(), hs.data(), B, L, E, N,
                                GRAD_SET);
    std::vector<float>* a[] = {&add.du, &add.ddelta, &add.dA_log, &add.dBm, &add.dCm, &add.dD, &add.dz, &add.ddelta_bias};
    std::vector<float>* g[] = {&set.du, &set.ddelta, &set.dA_log, &set.dBm, &set.dCm, &set.dD, &set.dz, &set.ddelta_bias};
    size_t bad = 0;
    for (int k = 0; k < 8; k++)
        for (size_t i = 0; i < a[k]->size(); i++) bad += memcmp(&(*a[k])[i], &(*g[k])[i], sizeof(float)) != 0;
    char name[160];
    snprintf(name, sizeof name, "GRAD_SET: du, ddelta, dz into NaN == into zeros, the rest added alike B=%d L=%d E=%d N=%d", B, L, E, N);
    report(bad == 0, name, "%zu differ", bad);
}

// frozen parameters (LoRA): dA_log, dD, ddelta_bias may each be nullptr; every other gradient (and the
// kept parameter gradients) must be the same bits as the normal call's
static void test_frozen_params(int B, int L, int E, int N) {
    ScanProblem p(B, L, E, N, 500 + L);
    std::vector<float> hs;
    p.forward(&hs);
    Rng r; rng_seed(&r, 13);
    ScanGrads init = init_grads(p, &r, true), full = init;
    run_backward(p, hs, &full);
    for (int mask = 1; mask < 8; mask++) {  // bit 0: dA_log frozen, bit 1: dD, bit 2: ddelta_bias
        ScanGrads g = init;
        selective_scan_backward_cpu(g.du.data(), g.ddelta.data(), mask & 1 ? nullptr : g.dA_log.data(), g.dBm.data(),
                                    g.dCm.data(), mask & 2 ? nullptr : g.dD.data(), g.dz.data(),
                                    mask & 4 ? nullptr : g.ddelta_bias.data(), p.w.data(), p.u.data(), p.delta.data(),
                                    p.A_log.data(), p.Bm.data(), p.Cm.data(), p.D.data(), p.z.data(),
                                    p.delta_bias.data(), hs.data(), B, L, E, N);
        std::vector<float>* got[] = {&g.du, &g.ddelta, &g.dA_log, &g.dBm, &g.dCm, &g.dD, &g.dz, &g.ddelta_bias};
        std::vector<float>* ref[] = {&full.du, &full.ddelta, &full.dA_log, &full.dBm, &full.dCm, &full.dD, &full.dz,
                                     &full.ddelta_bias};
        std::vector<float>* ini[] = {&init.du, &init.ddelta, &init.dA_log, &init.dBm, &init.dCm, &init.dD, &init.dz,
                                     &init.ddelta_bias};
        size_t bad = 0;
        for (int k = 0; k < 8; k++) {
            bool frozen = (k == 2 && (mask & 1)) || (k == 5 && (mask & 2)) || (k == 7 && (mask & 4));
            const std::vector<float>& want = frozen ? *ini[k] : *ref[k];  // a frozen buffer is untouched
            for (size_t i = 0; i < want.size(); i++) bad += memcmp(&(*got[k])[i], &want[i], sizeof(float)) != 0;
        }
        char name[160];
        snprintf(name, sizeof name, "frozen params (mask %d: A_log|D|delta_bias) same gradient bits B=%d L=%d E=%d N=%d",
                 mask, B, L, E, N);
        report(bad == 0, name, "%zu differ", bad);
    }
}

// CPU training must be bit-reproducible whatever the number of OpenMP threads: run the forward and
// the backward (into random initial gradients) with 1..4 threads and compare every output bitwise
static void test_thread_count_invariance(int B, int L, int E, int N) {
    ScanProblem p(B, L, E, N, 500 + L + E);
    struct Result { std::vector<float> out, hs; ScanGrads g; };
    auto run = [&](int threads) {
#ifdef _OPENMP
        omp_set_num_threads(threads);
#endif
        (void)threads;
        Result res;
        res.out = p.forward(&res.hs);
        Rng r; rng_seed(&r, 11);
        res.g = init_grads(p, &r, true);
        run_backward(p, res.hs, &res.g);
        return res;
    };
#ifdef _OPENMP
    int default_threads = omp_get_max_threads();
#endif
    Result ref = run(1);
    const char* names[] = {"out", "hs", "du", "ddelta", "dA_log", "dBm", "dCm", "dD", "dz", "ddelta_bias"};
    for (int threads = 2; threads <= 4; threads++) {
        Result got = run(threads);
        const std::vector<float>* a[] = {&ref.out, &ref.hs, &ref.g.du, &ref.g.ddelta, &ref.g.dA_log, &ref.g.dBm,
                                         &ref.g.dCm, &ref.g.dD, &ref.g.dz, &ref.g.ddelta_bias};
        const std::vector<float>* c[] = {&got.out, &got.hs, &got.g.du, &got.g.ddelta, &got.g.dA_log, &got.g.dBm,
                                         &got.g.dCm, &got.g.dD, &got.g.dz, &got.g.ddelta_bias};
        std::string differ;
        for (int k = 0; k < 10; k++)
            if (memcmp(a[k]->data(), c[k]->data(), a[k]->size() * sizeof(float)) != 0) differ += std::string(" ") + names[k];
        char name[128];
        snprintf(name, sizeof name, "same bits with 1 and %d threads B=%d L=%d E=%d N=%d", threads, B, L, E, N);
        report(differ.empty(), name, "differ:%s", differ.c_str());
    }
#ifdef _OPENMP
    omp_set_num_threads(default_threads);
#endif
}

// ---------------------------------------------------------------------------
// the CPU scan's vectorizable math (selective_scan.h: scan_exp_cpu, scan_log1p_cpu,
// scan_softplus_cpu, scan_sigmoid_cpu) against double precision. Evaluated in `#pragma omp simd`
// loops, as the scan calls them. The bounds are relative errors in units of 2^-24 (half an ulp at 1,
// 5.96e-8); the maxima over every float of each range (dev/notes_scan.md) are exp 1.42, log1p 2.14,
// softplus 2.99, sigmoid 2.48.

// f over xs (a SIMD loop), returns the results
template <typename F> static std::vector<float> simd_map(const std::vector<float>& xs, F f) {
    std::vector<float> ys(xs.size());
    const float* x = xs.data();
    float* y = ys.data();
    size_t n = xs.size();
    #pragma omp simd
    for (size_t i = 0; i < n; i++) y[i] = f(x[i]);
    return ys;
}

// max relative error of got against ref(x) over xs (a NaN counts as infinite); *where = its x
template <typename R>
static double max_rel_err(const std::vector<float>& xs, const std::vector<float>& got, R ref, float* where) {
    double worst = 0;
    *where = 0;
    for (size_t i = 0; i < xs.size(); i++) {
        double r = ref((double)xs[i]);
        double e = fabs((double)got[i] - r) / fabs(r);
        if (!(e <= worst)) { worst = std::isnan(e) ? INFINITY : e; *where = xs[i]; }
    }
    return worst;
}

// n points evenly spaced over [lo, hi], both ends included
static std::vector<float> linspace(double lo, double hi, size_t n) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) v[i] = (float)(lo + (hi - lo) * (double)i / (double)(n - 1));
    return v;
}

// every float from x upwards, count of them
static std::vector<float> consecutive_floats(float x, size_t count) {
    std::vector<float> v(count);
    for (size_t i = 0; i < count; i++) { v[i] = x; x = nextafterf(x, INFINITY); }
    return v;
}

static const double ULP_HALF = 1.0 / 16777216.0;  // 2^-24

static void test_scan_exp() {
    const float lo = -87.33654475f;  // ln(2^-126): below it the result is 0 or a subnormal
    // dense sweep of what the scan takes (x = dt * A <= 0, down to the underflow threshold) and
    // of the positive side (sigmoid), plus every float near 0 and near the threshold, plus tiny
    // |x| on a log scale
    std::vector<float> xs = linspace(lo, 0.0, 1 << 23);
    std::vector<float> more = linspace(0.0, 88.37, 1 << 21);
    xs.insert(xs.end(), more.begin(), more.end());
    more = consecutive_floats(-1e-3f, 1 << 20);  // [-1e-3, ~-9e-4]
    xs.insert(xs.end(), more.begin(), more.end());
    more = consecutive_floats(lo, 1 << 20);  // the first floats above the threshold
    xs.insert(xs.end(), more.begin(), more.end());
    for (int k = -149; k <= 6; k++)  // +-2^k (1 + m/64) up to 87
        for (int m = 0; m < 64; m++) {
            float v = ldexpf(1.0f + m / 64.0f, k);
            if (v > 87.0f) break;
            xs.push_back(-v);
            xs.push_back(v);
        }
    std::vector<float> ys = simd_map(xs, [](float x) { return scan_exp_cpu(x); });
    float where;
    double err = max_rel_err(xs, ys, [](double x) { return exp(x); }, &where);
    char name[160];
    snprintf(name, sizeof name,
             "scan_exp_cpu: max rel err %.2f x 2^-24 over %zu points of [ln 2^-126, 88.37] (bound 2)", err / ULP_HALF,
             xs.size());
    report(err < 2 * ULP_HALF, name, "rel err %.3e at x = %.9g", err, where);
    // exp(x) <= 1 for every x <= 0 (the decay dA = exp(dt * A) never exceeds 1)
    bool le1 = true;
    float bad = 0;
    for (size_t i = 0; i < xs.size(); i++)
        if (xs[i] <= 0.0f && !(ys[i] <= 1.0f)) { le1 = false; bad = xs[i]; }
    report(le1, "scan_exp_cpu(x) <= 1 for x <= 0", "exp(%.9g) > 1", bad);

    // special values, through the SIMD loop too
    std::vector<float> sx = {0.0f, -0.0f, -88.0f, -100.0f, -1e4f, -3e38f, -INFINITY, NAN};
    std::vector<float> sy = simd_map(sx, [](float x) { return scan_exp_cpu(x); });
    report(sy[0] == 1.0f && sy[1] == 1.0f, "scan_exp_cpu(+-0) == 1 exactly", "%.9g %.9g", sy[0], sy[1]);
    bool under = true;
    for (int i = 2; i <= 6; i++) under &= sy[i] == 0.0f && !std::signbit(sy[i]);
    report(under, "scan_exp_cpu(x) == +0 for x <= -88 (and -inf)", "%g %g %g %g %g", sy[2], sy[3], sy[4], sy[5],
           sy[6]);
    report(std::isnan(sy[7]), "scan_exp_cpu(NaN) is NaN", "%g", sy[7]);
    // between -88 and ln(2^-126): 0 or a subnormal, within 2^-126.5 (8.31e-39, where k = -127 gives 0) of exp(x)
    std::vector<float> ux = consecutive_floats(-88.0f, 1 << 20);
    while (ux.back() < -87.3366f) {  // every float of (-88, -87.3366]: about 1.3M
        std::vector<float> next = consecutive_floats(nextafterf(ux.back(), INFINITY), 1 << 18);
        ux.insert(ux.end(), next.begin(), next.end());
    }
    std::vector<float> uy = simd_map(ux, [](float x) { return scan_exp_cpu(x); });
    double worst_abs = 0;
    bool nonneg = true;
    for (size_t i = 0; i < ux.size(); i++) {
        worst_abs = fmax(worst_abs, fabs((double)uy[i] - exp((double)ux[i])));
        nonneg &= uy[i] >= 0.0f;
    }
    report(nonneg && worst_abs < 8.4e-39, "scan_exp_cpu underflow: within 8.4e-39 of exp(x) on (-88, -87.34)",
           "max abs err %.3e", worst_abs);
    // the scalar call gives the same values as the SIMD loop
    bool same = true;
    for (size_t i = 0; i < xs.size(); i += 97) same &= scan_exp_cpu(xs[i]) == ys[i];
    report(same, "scan_exp_cpu scalar == SIMD");
}

static void test_scan_log1p_softplus() {
    // log1p(a) for a = exp(x) of softplus: a in [0, 4.9e8], log-spaced (every exponent) plus a
    // dense sweep of [0, 2] where the rounding of 1 + a matters
    std::vector<float> as = linspace(0.0, 2.0, 1 << 22);
    for (int k = -140; k <= 28; k++)
        for (int m = 0; m < 512; m++) as.push_back(ldexpf(1.0f + m / 512.0f, k));
    std::vector<float> ls = simd_map(as, [](float a) { return scan_log1p_cpu(a); });
    std::vector<float> as_pos(as.begin() + 1, as.end()), ls_pos(ls.begin() + 1, ls.end());  // without a = 0
    float where;
    double err = max_rel_err(as_pos, ls_pos, [](double a) { return log1p(a); }, &where);
    char name[160];
    snprintf(name, sizeof name, "scan_log1p_cpu: max rel err %.2f x 2^-24 over %zu points of [0, 5e8] (bound 2.5)",
             err / ULP_HALF, as.size());
    report(err < 2.5 * ULP_HALF, name, "rel err %.3e at a = %.9g", err, where);
    report(ls[0] == 0.0f, "scan_log1p_cpu(0) == 0 exactly", "%.9g", ls[0]);

    // softplus over everything that is not the identity: x in [ln 2^-126, 20]
    std::vector<float> xs = linspace(-87.33, 20.0, 1 << 23);
    std::vector<float> more = consecutive_floats(-1e-3f, 1 << 20);
    xs.insert(xs.end(), more.begin(), more.end());
    std::vector<float> ys = simd_map(xs, [](float x) { return scan_softplus_cpu(x); });
    err = max_rel_err(xs, ys, [](double x) { return log1p(exp(x)); }, &where);
    snprintf(name, sizeof name,
             "scan_softplus_cpu: max rel err %.2f x 2^-24 over %zu points of [-87.33, 20] (bound 3.5)", err / ULP_HALF,
             xs.size());
    report(err < 3.5 * ULP_HALF, name, "rel err %.3e at x = %.9g", err, where);
    // the identity above 20 (as softplus_f); below ln(2^-126) 0 or a subnormal (true value < 1.2e-38)
    std::vector<float> sx = {20.0001f, 25.0f, 1e6f, INFINITY, -87.34f, -87.5f, -88.0f, -100.0f, -INFINITY};
    std::vector<float> sy = simd_map(sx, [](float x) { return scan_softplus_cpu(x); });
    report(sy[0] == sx[0] && sy[1] == sx[1] && sy[2] == sx[2] && sy[3] == sx[3], "scan_softplus_cpu(x) == x above 20",
           "%.9g %.9g %.9g %g", sy[0], sy[1], sy[2], sy[3]);
    bool tiny = true;
    for (int i = 4; i <= 8; i++) tiny &= sy[i] >= 0.0f && fabs((double)sy[i] - log1p(exp((double)sx[i]))) < 1.2e-38;
    report(tiny && sy[6] == 0.0f && sy[7] == 0.0f && sy[8] == 0.0f, "scan_softplus_cpu underflow (0 from -88 down)",
           "%g %g %g %g %g", sy[4], sy[5], sy[6], sy[7], sy[8]);

    // sigmoid over [ln 2^-126, 88.37] (libm's 1 / (1 + expf(-x)): 2.48 x 2^-24 too); 1 / (1 + e^88)
    // below -88, 1 at the top
    xs = linspace(-87.33, 88.37, 1 << 23);
    ys = simd_map(xs, [](float x) { return scan_sigmoid_cpu(x); });
    err = max_rel_err(xs, ys, [](double x) { return 1.0 / (1.0 + exp(-x)); }, &where);
    snprintf(name, sizeof name,
             "scan_sigmoid_cpu: max rel err %.2f x 2^-24 over %zu points of [-87.33, 88.37] (bound 3)", err / ULP_HALF,
             xs.size());
    report(err < 3 * ULP_HALF, name, "rel err %.3e at x = %.9g", err, where);
    sx = {-88.5f, -1e4f, -INFINITY, 1e4f, INFINITY};
    sy = simd_map(sx, [](float x) { return scan_sigmoid_cpu(x); });
    float floor88 = 1.0f / (1.0f + scan_exp_cpu(88.0f));  // ~6e-39
    report(sy[0] == floor88 && sy[1] == floor88 && sy[2] == floor88 && sy[3] == 1.0f && sy[4] == 1.0f,
           "scan_sigmoid_cpu ends", "%g %g %g %g %g", sy[0], sy[1], sy[2], sy[3], sy[4]);
}

int main() {
    test_scan_exp();
    test_scan_log1p_softplus();

    test_forward_vs_naive(1, 1, 5, 3);
    test_forward_vs_naive(2, 7, 5, 16);
    test_forward_vs_naive(2, 70, 5, 3);
    test_forward_vs_naive(2, 130, 7, 16);
    test_forward_vs_naive(1, 200, 3, 4);
    test_forward_vs_naive(2, 70, 70, 16);  // three SIMD lane groups (SCAN_CPU_LANES 32), the last partial

    test_step_vs_forward(2, 1, 5, 3);
    test_step_vs_forward(2, 70, 5, 16);
    test_step_vs_forward(3, 130, 6, 3);

    int lengths[] = {1, 7, 70, 130};
    for (int L : lengths) {
        test_gradients(2, L, 5, 3);
        test_gradients(2, L, 5, 16);
    }
    test_gradients(2, 70, 40, 16);  // a full and a partial lane group
    test_accumulates(2, 130, 5, 16);
    test_grad_set(2, 130, 5, 16);
    test_grad_set(1, 7, 40, 3);
    test_frozen_params(2, 130, 5, 16);
    test_frozen_params(2, 70, 40, 3);

    test_thread_count_invariance(2, 70, 13, 5);
    test_thread_count_invariance(3, 129, 40, 16);
    test_thread_count_invariance(2, 65, 100, 3);  // 2 channel blocks, 4 lane groups, the last ones partial
    return test_summary();
}
