// test_scan.cu: CPU tests of the selective scan (src/selective_scan.h).
//   - chunked forward == a naive forward that keeps every state
//   - the recurrent step over t reproduces the parallel forward
//   - finite-difference gradient checks of every input and parameter through
//     loss = sum(out * w), at lengths 1, 7, 70 (two chunks, partial last), 130
//   - the backward accumulates (+=) into gradients
//   - forward and backward give the same bits with 1, 2, 3 or 4 OpenMP threads
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

int main() {
    test_forward_vs_naive(1, 1, 5, 3);
    test_forward_vs_naive(2, 7, 5, 16);
    test_forward_vs_naive(2, 70, 5, 3);
    test_forward_vs_naive(2, 130, 7, 16);
    test_forward_vs_naive(1, 200, 3, 4);

    test_step_vs_forward(2, 1, 5, 3);
    test_step_vs_forward(2, 70, 5, 16);
    test_step_vs_forward(3, 130, 6, 3);

    int lengths[] = {1, 7, 70, 130};
    for (int L : lengths) {
        test_gradients(2, L, 5, 3);
        test_gradients(2, L, 5, 16);
    }
    test_accumulates(2, 130, 5, 16);

    test_thread_count_invariance(2, 70, 13, 5);
    test_thread_count_invariance(3, 129, 40, 16);
    test_thread_count_invariance(2, 65, 100, 3);  // 4 channel blocks, the last one partial
    return test_summary();
}
