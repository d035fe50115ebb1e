// test_ssd.cu: CPU tests of Mamba-2's SSD (src/ssd.h).
//   - the naive, quadratic and chunked forwards agree (y and the final state) with each other and
//     with a float64 recurrence written here, at lengths 1, 7, 37, 64, chunks 1, 16, L, L+3,
//     G = 1 and 2 groups of H = 4 heads, with and without an initial state
//   - strong decay (sum of dt A far below -88): every path stays finite and agrees
//   - the recurrent step over t reproduces the naive forward token by token
//   - finite-difference gradient checks of every input (x, dt, A, Bm, Cm, D, h0) through
//     loss = sum(y * wy) + sum(final_state * wf), at lengths 1, 7, 37, 70, 130 (past the
//     backward's 64-step checkpoints), with and without a gradient on the final state
//   - the backward accumulates (+=), skips nullptr gradients, treats dfinal_state == nullptr as 0
//   - every path gives the same bits with 1, 2, 3 or 4 OpenMP threads
//   - the backend wrappers: CPU == chunked; on_gpu FATALs (no CUDA version yet); bad shapes FATAL
#include <string>
#include "test_util.h"
#include "../src/ssd.h"

// all inputs of one SSD problem, random and non-zero
struct SsdProblem {
    int B, L, H, P, G, N;
    bool has_h0, has_dfinal;
    std::vector<float> x, dt, A, Bm, Cm, D, h0, wy, wf;
    SsdProblem(int B_, int L_, int H_, int P_, int G_, int N_, bool h0_, bool dfinal_, uint64_t seed,
               bool strong_decay = false)
        : B(B_), L(L_), H(H_), P(P_), G(G_), N(N_), has_h0(h0_), has_dfinal(dfinal_) {
        Rng r; rng_seed(&r, seed);
        size_t BLHP = (size_t)B * L * H * P, BLGN = (size_t)B * L * G * N, BHPN = (size_t)B * H * P * N;
        x = random_vec(BLHP, &r, -1.5f, 1.5f);
        dt.resize((size_t)B * L * H);
        for (auto& v : dt)  // softplus of U(-6.9, -2.3): dt in ~[0.001, 0.095]; strong: ~[0.5, 3]
            v = strong_decay ? softplus_f(-0.5f + 3.5f * rng_uniform(&r)) : softplus_f(-6.9f + 4.6f * rng_uniform(&r));
        A.resize(H);
        for (auto& v : A) v = strong_decay ? -expf(1.0f + 1.5f * rng_uniform(&r)) : -expf(-1.0f + 3.0f * rng_uniform(&r));
        Bm = random_vec(BLGN, &r);
        Cm = random_vec(BLGN, &r);
        D = random_vec(H, &r);
        h0 = random_vec(BHPN, &r);
        wy = random_vec(BLHP, &r);
        wf = random_vec(BHPN, &r);
    }
    size_t ny() const { return (size_t)B * L * H * P; }
    size_t ns() const { return (size_t)B * H * P * N; }
    const float* h0p() const { return has_h0 ? h0.data() : nullptr; }
    // path: 0 naive, 1 quadratic, 2 chunked
    void forward(int path, std::vector<float>* y, std::vector<float>* fs, int chunk = 16) const {
        y->assign(ny(), NAN);
        fs->assign(ns(), NAN);
        if (path == 0)
            ssd_forward_naive_cpu(y->data(), fs->data(), x.data(), dt.data(), A.data(), Bm.data(), Cm.data(), D.data(),
                                  h0p(), B, L, H, P, G, N);
        else if (path == 1)
            ssd_forward_quadratic_cpu(y->data(), fs->data(), x.data(), dt.data(), A.data(), Bm.data(), Cm.data(),
                                      D.data(), h0p(), B, L, H, P, G, N);
        else
            ssd_forward_chunked_cpu(y->data(), fs->data(), x.data(), dt.data(), A.data(), Bm.data(), Cm.data(),
                                    D.data(), h0p(), B, L, H, P, G, N, chunk);
    }
    double loss(int path = 2, int chunk = 16) const {
        std::vector<float> y, fs;
        forward(path, &y, &fs, chunk);
        double s = 0;
        for (size_t i = 0; i < y.size(); i++) s += (double)y[i] * wy[i];
        if (has_dfinal)
            for (size_t i = 0; i < fs.size(); i++) s += (double)fs[i] * wf[i];
        return s;
    }
};

// float64 recurrence, loops in another order (t outermost), written from the equations
static void ref_forward(const SsdProblem& p, std::vector<float>* y, std::vector<float>* fs) {
    int B = p.B, L = p.L, H = p.H, P = p.P, G = p.G, N = p.N;
    std::vector<double> st((size_t)B * H * P * N, 0.0);
    if (p.has_h0) for (size_t i = 0; i < st.size(); i++) st[i] = p.h0[i];
    y->assign(p.ny(), 0.0f);
    for (int t = 0; t < L; t++)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                int g = h / (H / G);
                double dtv = p.dt[((size_t)b * L + t) * H + h];
                double a = exp(dtv * (double)p.A[h]);
                for (int q = 0; q < P; q++) {
                    double xv = p.x[(((size_t)b * L + t) * H + h) * P + q], acc = 0;
                    for (int n = 0; n < N; n++) {
                        double& s = st[(((size_t)b * H + h) * P + q) * N + n];
                        s = a * s + dtv * xv * p.Bm[(((size_t)b * L + t) * G + g) * N + n];
                        acc += s * p.Cm[(((size_t)b * L + t) * G + g) * N + n];
                    }
                    (*y)[(((size_t)b * L + t) * H + h) * P + q] = (float)(acc + p.D[h] * xv);
                }
            }
    fs->resize(st.size());
    for (size_t i = 0; i < st.size(); i++) (*fs)[i] = (float)st[i];
}

static double max2(double a, double b) { return a > b ? a : b; }

static void test_forward_paths(int L, int G, int chunk, bool has_h0) {
    int B = 2, H = 4, P = 3, N = 5;
    SsdProblem p(B, L, H, P, G, N, has_h0, false, 1000 + L * 13 + G * 7 + chunk * 3 + has_h0);
    std::vector<float> yr, fr, y0, f0, y1, f1, y2, f2;
    ref_forward(p, &yr, &fr);
    p.forward(0, &y0, &f0);
    p.forward(1, &y1, &f1);
    p.forward(2, &y2, &f2, chunk);
    char tag[96];
    snprintf(tag, sizeof tag, "L=%d G=%d chunk=%d h0=%d", L, G, chunk, (int)has_h0);
    char name[160];
    double e0 = max2(rel_err(y0.data(), yr.data(), y0.size()), rel_err(f0.data(), fr.data(), f0.size()));
    snprintf(name, sizeof name, "naive == float64 recurrence (y, final) %s", tag);
    report(e0 < 1e-5, name, "rel err %.3e", e0);
    double e1 = max2(rel_err(y1.data(), y0.data(), y1.size()), rel_err(f1.data(), f0.data(), f1.size()));
    snprintf(name, sizeof name, "quadratic == naive (y, final) %s", tag);
    report(e1 < 1e-5, name, "rel err %.3e", e1);
    double e2 = max2(rel_err(y2.data(), y0.data(), y2.size()), rel_err(f2.data(), f0.data(), f2.size()));
    snprintf(name, sizeof name, "chunked == naive (y, final) %s", tag);
    report(e2 < 1e-5, name, "rel err %.3e", e2);
}

// dt A around -2..-30 per step: over 64 steps the decay is ~exp(-900) (exp(+900) would be inf)
static void test_strong_decay(int L, int chunk) {
    SsdProblem p(2, L, 4, 3, 2, 5, true, false, 77 + L + chunk, true);
    std::vector<float> yr, fr, y0, f0, y1, f1, y2, f2;
    ref_forward(p, &yr, &fr);
    p.forward(0, &y0, &f0);
    p.forward(1, &y1, &f1);
    p.forward(2, &y2, &f2, chunk);
    double e = 0, ef = 0;
    e = max2(e, rel_err(y0.data(), yr.data(), y0.size()));
    e = max2(e, rel_err(y1.data(), yr.data(), y1.size()));
    e = max2(e, rel_err(y2.data(), yr.data(), y2.size()));
    ef = max2(ef, rel_err(f0.data(), fr.data(), f0.size()));
    ef = max2(ef, rel_err(f1.data(), fr.data(), f1.size()));
    ef = max2(ef, rel_err(f2.data(), fr.data(), f2.size()));
    char name[128];
    snprintf(name, sizeof name, "strong decay: three paths finite and == float64 L=%d chunk=%d", L, chunk);
    report(e < 1e-5 && ef < 1e-5, name, "y rel err %.3e, final rel err %.3e", e, ef);
}

static void test_step(int L, int G, bool has_h0) {
    int B = 2, H = 4, P = 3, N = 5;
    SsdProblem p(B, L, H, P, G, N, has_h0, false, 2000 + L + G);
    std::vector<float> yref, fref;
    p.forward(0, &yref, &fref);
    std::vector<float> state = has_h0 ? p.h0 : std::vector<float>(p.ns(), 0.0f), y(p.ny());
    std::vector<float> xt((size_t)B * H * P), dtt((size_t)B * H), bt((size_t)B * G * N), ct((size_t)B * G * N),
        yt((size_t)B * H * P);
    for (int t = 0; t < L; t++) {
        for (int b = 0; b < B; b++) {  // slice step t out of the (B, L, ...) tensors
            memcpy(&xt[(size_t)b * H * P], &p.x[((size_t)b * L + t) * H * P], H * P * sizeof(float));
            memcpy(&dtt[(size_t)b * H], &p.dt[((size_t)b * L + t) * H], H * sizeof(float));
            memcpy(&bt[(size_t)b * G * N], &p.Bm[((size_t)b * L + t) * G * N], G * N * sizeof(float));
            memcpy(&ct[(size_t)b * G * N], &p.Cm[((size_t)b * L + t) * G * N], G * N * sizeof(float));
        }
        ssd_step_cpu(yt.data(), state.data(), xt.data(), dtt.data(), p.A.data(), bt.data(), ct.data(), p.D.data(),
                     B, H, P, G, N);
        for (int b = 0; b < B; b++)
            memcpy(&y[((size_t)b * L + t) * H * P], &yt[(size_t)b * H * P], H * P * sizeof(float));
    }
    char name[128];
    snprintf(name, sizeof name, "step over t == naive forward (y, state) L=%d G=%d h0=%d", L, G, (int)has_h0);
    double e = max2(rel_err(y.data(), yref.data(), y.size()), rel_err(state.data(), fref.data(), state.size()));
    report(e < 1e-6, name, "rel err %.3e", e);
}

struct SsdGrads {
    std::vector<float> dx, ddt, dA, dBm, dCm, dD, dh0;
};

static SsdGrads make_grads(const SsdProblem& p, Rng* r, bool random_init) {
    float lo = random_init ? -1.0f : 0.0f, hi = random_init ? 1.0f : 0.0f;
    SsdGrads g;
    g.dx = random_vec(p.ny(), r, lo, hi);
    g.ddt = random_vec((size_t)p.B * p.L * p.H, r, lo, hi);
    g.dA = random_vec(p.H, r, lo, hi);
    g.dBm = random_vec((size_t)p.B * p.L * p.G * p.N, r, lo, hi);
    g.dCm = random_vec((size_t)p.B * p.L * p.G * p.N, r, lo, hi);
    g.dD = random_vec(p.H, r, lo, hi);
    g.dh0 = random_vec(p.ns(), r, lo, hi);
    return g;
}

// mask: which gradients to pass (bit k for the k-th of dx, ddt, dA, dBm, dCm, dD, dh0)
static void run_backward(const SsdProblem& p, SsdGrads* g, unsigned mask = 0x7f, bool pass_dfinal = true) {
    auto sel = [&](std::vector<float>& v, int k) { return (mask >> k) & 1 ? v.data() : nullptr; };
    const float* dfinal = (p.has_dfinal && pass_dfinal) ? p.wf.data() : nullptr;
    ssd_backward_cpu(sel(g->dx, 0), sel(g->ddt, 1), sel(g->dA, 2), sel(g->dBm, 3), sel(g->dCm, 4), sel(g->dD, 5),
                     sel(g->dh0, 6), p.wy.data(), dfinal, p.x.data(), p.dt.data(), p.A.data(), p.Bm.data(),
                     p.Cm.data(), p.D.data(), p.h0p(), p.B, p.L, p.H, p.P, p.G, p.N);
}

static std::vector<float>* grad_list(SsdGrads& g, int k) {
    std::vector<float>* l[] = {&g.dx, &g.ddt, &g.dA, &g.dBm, &g.dCm, &g.dD, &g.dh0};
    return l[k];
}
static const char* grad_names[] = {"x", "dt", "A", "Bm", "Cm", "D", "h0"};

static void test_gradients(int L, int G, bool has_dfinal, int chunk = 16) {
    int B = 2, H = 4, P = 3, N = 5;
    SsdProblem p(B, L, H, P, G, N, true, has_dfinal, 3000 + L * 5 + G + has_dfinal);
    Rng r; rng_seed(&r, 5);
    SsdGrads g = make_grads(p, &r, false);
    run_backward(p, &g);
    auto loss = [&]() { return p.loss(2, chunk); };
    std::vector<float>* params[] = {&p.x, &p.dt, &p.A, &p.Bm, &p.Cm, &p.D, &p.h0};
    // y and the final state are linear in x, Bm, Cm, D, h0 (any eps); dt and A enter through exp
    float eps[] = {1e-2f, 1e-3f, 1e-3f, 1e-2f, 1e-2f, 1e-2f, 1e-2f};
    for (int k = 0; k < 7; k++) {
        char name[160];
        snprintf(name, sizeof name, "%s L=%d G=%d dfinal=%d chunk=%d", grad_names[k], L, G, (int)has_dfinal, chunk);
        grad_check(name, params[k]->data(), grad_list(g, k)->data(), params[k]->size(), loss, 1e-2, eps[k], 32,
                   7 + k, 1e-4);
    }
}

// backward adds into gradients: (init + backward) - init == backward from zero; nullptr skips one
// gradient and leaves the others as they were; dfinal_state == nullptr is a zero gradient
static void test_accumulate_and_skip(int L, int G) {
    SsdProblem p(2, L, 4, 3, G, 5, true, true, 4000 + L);
    Rng r; rng_seed(&r, 9);
    SsdGrads zero = make_grads(p, &r, false), acc = make_grads(p, &r, true), init = acc;
    run_backward(p, &zero);
    run_backward(p, &acc);
    double worst = 0;
    for (int k = 0; k < 7; k++) {
        std::vector<float> diff(grad_list(acc, k)->size());
        for (size_t i = 0; i < diff.size(); i++) diff[i] = (*grad_list(acc, k))[i] - (*grad_list(init, k))[i];
        worst = max2(worst, rel_err(diff.data(), grad_list(zero, k)->data(), diff.size()));
    }
    char name[128];
    snprintf(name, sizeof name, "backward accumulates (+=) L=%d G=%d", L, G);
    report(worst < 1e-5, name, "rel err %.3e", worst);

    // each gradient alone (the others nullptr) == the same gradient of the full call, bit for bit
    bool same = true;
    std::string differ;
    for (int k = 0; k < 7; k++) {
        SsdGrads one = make_grads(p, &r, false);
        run_backward(p, &one, 1u << k);
        for (int j = 0; j < 7; j++) {
            const std::vector<float>& got = *grad_list(one, j);
            bool ok = true;
            if (j == k) ok = memcmp(got.data(), grad_list(zero, k)->data(), got.size() * sizeof(float)) == 0;
            else for (float v : got) ok &= v == 0.0f;  // untouched
            if (!ok) { same = false; differ += std::string(" ") + grad_names[k] + "/" + grad_names[j]; }
        }
    }
    snprintf(name, sizeof name, "nullptr gradients are skipped, the others unchanged L=%d G=%d", L, G);
    report(same, name, "differ (passed/checked):%s", differ.c_str());

    // dfinal_state == nullptr equals an all-zero dfinal_state
    SsdProblem q = p;
    std::fill(q.wf.begin(), q.wf.end(), 0.0f);
    SsdGrads a = make_grads(p, &r, false), b = make_grads(p, &r, false);
    run_backward(p, &a, 0x7f, false);
    run_backward(q, &b, 0x7f, true);
    same = true;
    for (int k = 0; k < 7; k++)
        same &= memcmp(grad_list(a, k)->data(), grad_list(b, k)->data(), grad_list(a, k)->size() * sizeof(float)) == 0;
    snprintf(name, sizeof name, "dfinal_state nullptr == zeros L=%d G=%d", L, G);
    report(same, name, "gradients differ");

    // GRAD_SET (the wrapper, as the Mamba-2 block calls it): dx, ddt, dBm, dCm from NaN == the backward into
    // zeros, bit for bit; dA, dD, dh0 still added onto their random start
    SsdGrads set = make_grads(p, &r, true), add = set;
    for (int k : {0, 1, 3, 4}) { std::fill(grad_list(set, k)->begin(), grad_list(set, k)->end(), NAN);
                                 std::fill(grad_list(add, k)->begin(), grad_list(add, k)->end(), 0.0f); }
    run_backward(p, &add);
    ssd_backward(false, set.dx.data(), set.ddt.data(), set.dA.data(), set.dBm.data(), set.dCm.data(), set.dD.data(), set.dh0.data(),
                 p.wy.data(), p.has_dfinal ? p.wf.data() : nullptr, p.x.data(), p.dt.data(), p.A.data(), p.Bm.data(), p.Cm.data(),
                 p.D.data(), p.h0p(), p.B, p.L, p.H, p.P, p.G, p.N, GRAD_SET);
    same = true;
    for (int k = 0; k < 7; k++)
        same &= memcmp(grad_list(set, k)->data(), grad_list(add, k)->data(), grad_list(set, k)->size() * sizeof(float)) == 0;
    snprintf(name, sizeof name, "GRAD_SET: dx, ddt, dB, dC set from NaN == added onto zeros, the rest added L=%d G=%d", L, G);
    report(same, name, "gradients differ");
}

// frozen A_log and D (LoRA): dA and dD nullptr, the input gradients the same bits as the normal call's
static void test_frozen_params(int L, int G) {
    SsdProblem p(2, L, 4, 3, G, 5, true, true, 4500 + L);
    Rng r; rng_seed(&r, 21);
    SsdGrads full = make_grads(p, &r, true), init = full;
    run_backward(p, &full);
    const unsigned frozen[] = {1u << 2, 1u << 5, (1u << 2) | (1u << 5)};  // dA, dD, both
    for (unsigned f : frozen) {
        SsdGrads g = init;
        run_backward(p, &g, 0x7fu & ~f);
        bool same = true;
        for (int k = 0; k < 7; k++) {
            const std::vector<float>& want = (f >> k) & 1 ? *grad_list(init, k) : *grad_list(full, k);
            same &= memcmp(grad_list(g, k)->data(), want.data(), want.size() * sizeof(float)) == 0;
        }
        char name[128];
        snprintf(name, sizeof name, "frozen%s%s: same input gradient bits L=%d G=%d", f & 4 ? " A" : "", f & 32 ? " D" : "",
                 L, G);
        report(same, name, "gradients differ");
    }
}

// every path, forward and backward, gives the same bits with 1..4 OpenMP threads
static void test_thread_count_invariance(int L, int G, int chunk) {
    SsdProblem p(3, L, 4, 5, G, 6, true, true, 5000 + L);
    auto run = [&](int threads, std::vector<std::vector<float>>* out) {
#ifdef _OPENMP
        omp_set_num_threads(threads);
#endif
        (void)threads;
        out->clear();
        for (int path = 0; path < 3; path++) {
            std::vector<float> y, fs;
            p.forward(path, &y, &fs, chunk);
            out->push_back(y);
            out->push_back(fs);
        }
        Rng r; rng_seed(&r, 11);
        SsdGrads g = make_grads(p, &r, true);
        run_backward(p, &g);
        for (int k = 0; k < 7; k++) out->push_back(*grad_list(g, k));
    };
#ifdef _OPENMP
    int default_threads = omp_get_max_threads();
#endif
    const char* names[] = {"naive y", "naive final", "quadratic y", "quadratic final", "chunked y", "chunked final",
                           "dx", "ddt", "dA", "dBm", "dCm", "dD", "dh0"};
    std::vector<std::vector<float>> ref, got;
    run(1, &ref);
    for (int threads = 2; threads <= 4; threads++) {
        run(threads, &got);
        std::string differ;
        for (size_t k = 0; k < ref.size(); k++)
            if (memcmp(ref[k].data(), got[k].data(), ref[k].size() * sizeof(float)) != 0)
                differ += std::string(" ") + names[k];
        char name[128];
        snprintf(name, sizeof name, "same bits with 1 and %d threads L=%d G=%d chunk=%d", threads, L, G, chunk);
        report(differ.empty(), name, "differ:%s", differ.c_str());
    }
#ifdef _OPENMP
    omp_set_num_threads(default_threads);
#endif
}

static void test_wrappers() {
    SsdProblem p(2, 37, 4, 3, 2, 5, true, true, 6000);
    std::vector<float> y2, f2, y(p.ny()), fs(p.ns());
    p.forward(2, &y2, &f2, 16);
    ssd_forward(false, y.data(), fs.data(), p.x.data(), p.dt.data(), p.A.data(), p.Bm.data(), p.Cm.data(),
                p.D.data(), p.h0.data(), p.B, p.L, p.H, p.P, p.G, p.N, 16);
    bool same = memcmp(y.data(), y2.data(), y.size() * sizeof(float)) == 0 &&
                memcmp(fs.data(), f2.data(), fs.size() * sizeof(float)) == 0;
    report(same, "wrapper ssd_forward(cpu) == chunked", "differs");
    expect_fatal("wrapper ssd_forward(on_gpu) FATALs in a CPU build", "built without CUDA", [&] {
        ssd_forward(true, y.data(), fs.data(), p.x.data(), p.dt.data(), p.A.data(), p.Bm.data(), p.Cm.data(),
                    p.D.data(), p.h0.data(), p.B, p.L, p.H, p.P, p.G, p.N, 16);
    });
    expect_fatal("wrapper ssd_backward(on_gpu) FATALs in a CPU build", "built without CUDA", [&] {
        ssd_backward(true, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, p.wy.data(), nullptr,
                     p.x.data(), p.dt.data(), p.A.data(), p.Bm.data(), p.Cm.data(), p.D.data(), p.h0.data(), p.B,
                     p.L, p.H, p.P, p.G, p.N);
    });
    expect_fatal("wrapper ssd_step(on_gpu) FATALs in a CPU build", "built without CUDA", [&] {
        ssd_step(true, y.data(), fs.data(), p.x.data(), p.dt.data(), p.A.data(), p.Bm.data(), p.Cm.data(),
                 p.D.data(), p.B, p.H, p.P, p.G, p.N);
    });
    expect_fatal("G must divide H", "G must divide H", [&] {
        ssd_forward_naive_cpu(y.data(), fs.data(), p.x.data(), p.dt.data(), p.A.data(), p.Bm.data(), p.Cm.data(),
                              p.D.data(), nullptr, 1, 1, 4, 3, 3, 5);
    });
    expect_fatal("chunk must be positive", "must be positive", [&] {
        ssd_forward_chunked_cpu(y.data(), fs.data(), p.x.data(), p.dt.data(), p.A.data(), p.Bm.data(), p.Cm.data(),
                                p.D.data(), nullptr, 1, 1, 4, 3, 2, 5, 0);
    });
}

int main() {
    int lengths[] = {1, 7, 37, 64};
    for (int L : lengths)
        for (int G : {1, 2})
            for (bool h0 : {false, true})
                for (int chunk : {1, 16, L, L + 3}) {
                    if (chunk == 16 && L == 16) continue;
                    if (L == 1 && chunk == 1) continue;  // chunk == L below
                    test_forward_paths(L, G, chunk, h0);
                }
    test_strong_decay(64, 16);
    test_strong_decay(64, 64);
    test_strong_decay(37, 8);

    test_step(1, 1, false);
    test_step(37, 2, true);
    test_step(64, 1, true);

    for (int L : {1, 7, 37, 70, 130})
        for (int G : {1, 2}) test_gradients(L, G, true);
    test_gradients(37, 2, false);
    test_gradients(70, 1, false, 1);
    test_gradients(37, 2, true, 37);

    test_accumulate_and_skip(70, 2);
    test_accumulate_and_skip(7, 1);
    test_frozen_params(70, 2);
    test_frozen_params(7, 1);

    test_thread_count_invariance(70, 2, 16);
    test_thread_count_invariance(37, 1, 8);

    test_wrappers();
    return test_summary();
}
