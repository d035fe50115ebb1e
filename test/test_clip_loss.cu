// test_clip_loss.cu: CPU checks of CLIP's contrastive loss (src/clip_loss.h): the loss, the cached
// dloss/dlogits and the logits against a direct formula in double; finite differences of dimg,
// dtxt and dlog_scale with the scale clamp inactive and active; an exact value (orthogonal
// embeddings); the symmetry img <-> txt; invariance to the embeddings' norms; accumulation (+=);
// N = 1; the same bits for 1..4 OpenMP threads. Gradient buffers are pre-filled with random values
// and the gradient is the change, so an overwrite instead of += fails.
#include "test_util.h"
#include "../src/clip_loss.h"

typedef std::vector<float> Vec;
typedef std::vector<double> DVec;

static const double LOG10 = log(10.0), LOG200 = log(200.0), LOG_INIT = log(1.0 / 0.07);

// the gradient a backward added: buffer after it minus its random pre-fill
static Vec added(const Vec& after, const Vec& before) {
    Vec d(after);
    for (size_t i = 0; i < d.size(); i++) d[i] -= before[i];
    return d;
}

// ---------------------------------------------------------------------------
// the reference, in double, written from the equations

static double ref_scale(double log_scale) { return fmin(exp(log_scale), 100.0); }

// (N, M) logits s * cos(img_i, txt_j)
static DVec ref_logits(const Vec& img, const Vec& txt, double s, int N, int M, int E) {
    auto norm = [&](const Vec& x, int r) {
        double ss = 0;
        for (int e = 0; e < E; e++) ss += (double)x[(size_t)r * E + e] * x[(size_t)r * E + e];
        return sqrt(ss);
    };
    DVec L((size_t)N * M);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < M; j++) {
            double d = 0;
            for (int e = 0; e < E; e++) d += (double)img[(size_t)i * E + e] * txt[(size_t)j * E + e];
            L[(size_t)i * M + j] = s * d / (norm(img, i) * norm(txt, j));
        }
    return L;
}

// loss and G = dloss/dL (N, N) from the logits
static double ref_loss(const Vec& img, const Vec& txt, double log_scale, int N, int E, DVec* G = nullptr) {
    DVec L = ref_logits(img, txt, ref_scale(log_scale), N, N, E);
    DVec lr(N), lc(N);
    for (int k = 0; k < N; k++) {
        double mr = -1e300, mc = -1e300, sr = 0, sc = 0;
        for (int t = 0; t < N; t++) { mr = fmax(mr, L[(size_t)k * N + t]); mc = fmax(mc, L[(size_t)t * N + k]); }
        for (int t = 0; t < N; t++) { sr += exp(L[(size_t)k * N + t] - mr); sc += exp(L[(size_t)t * N + k] - mc); }
        lr[k] = mr + log(sr);
        lc[k] = mc + log(sc);
    }
    double loss = 0;
    for (int i = 0; i < N; i++) loss += (lr[i] - L[(size_t)i * N + i]) + (lc[i] - L[(size_t)i * N + i]);
    if (G) {
        G->assign((size_t)N * N, 0.0);
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                double l = L[(size_t)i * N + j];
                (*G)[(size_t)i * N + j] = (exp(l - lr[i]) + exp(l - lc[j]) - (i == j ? 2.0 : 0.0)) / (2.0 * N);
            }
    }
    return loss / (2.0 * N);
}

static double rel_err_d(const float* got, const DVec& ref) {
    double num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        if (!std::isfinite(got[i])) return INFINITY;
        num += (got[i] - ref[i]) * (got[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return sqrt(num) / (sqrt(den) + 1e-30);
}

// ---------------------------------------------------------------------------

struct Run {
    float loss;
    Vec cache, dimg, dtxt, dls;  // the gradients as added to random pre-fills
};

// forward + backward into random pre-fills
static Run run_clip(const Vec& img, const Vec& txt, float ls, int N, int E, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    Run out;
    out.cache.assign(clip_loss_cache_floats(N, E), NAN);
    out.loss = clip_loss_forward_cpu(out.cache.data(), img.data(), txt.data(), &ls, N, E);
    Vec di0 = random_vec(img.size(), &r), dt0 = random_vec(txt.size(), &r), dl0 = random_vec(1, &r);
    Vec di = di0, dt = dt0, dl = dl0;
    clip_loss_backward_cpu(di.data(), dt.data(), dl.data(), out.cache.data(), img.data(), txt.data(), &ls, N, E);
    out.dimg = added(di, di0);
    out.dtxt = added(dt, dt0);
    out.dls = added(dl, dl0);
    return out;
}

static void test_scale() {
    bool ok = fabsf(clip_scale((float)LOG10) - 10.0f) < 1e-5f && clip_scale((float)LOG200) == 100.0f &&
              fabsf(clip_scale((float)LOG_INIT) - (float)(1.0 / 0.07)) < 1e-4f && !clip_scale_clamped((float)LOG10) &&
              clip_scale_clamped((float)LOG200) && std::isnan(clip_scale(NAN));
    report(ok, "clip_scale: exp, clamped at 100, NaN stays NaN", "log(10) -> %g, log(200) -> %g",
           clip_scale((float)LOG10), clip_scale((float)LOG200));
}

// the loss and G against the reference, finite differences, accumulation. Rows are shared * base
// + U(-1, 1) noise: with a common direction the cosines lie close together, which keeps the logits
// within a few units of each other at s = 100 (independent rows put them tens apart: G ~ e^-30)
static void test_case(Rng* r, int N, int E, double log_scale, float shared = 0.0f) {
    char name[160], lab[80];
    snprintf(lab, sizeof lab, "N=%d E=%d s=%g shared=%g", N, E, ref_scale(log_scale), shared);
    Vec base = random_vec(E, r), img = random_vec((size_t)N * E, r), txt = random_vec((size_t)N * E, r);
    for (size_t k = 0; k < img.size(); k++) {
        img[k] += shared * base[k % E];
        txt[k] += shared * base[k % E];
    }
    float ls = (float)log_scale;
    bool clamped = clip_scale_clamped(ls);
    DVec G;
    double ref = ref_loss(img, txt, ls, N, E, &G);
    Run a = run_clip(img, txt, ls, N, E, 99);
    snprintf(name, sizeof name, "clip loss vs formula %s", lab);
    report(fabs(a.loss - ref) <= 1e-5 * fabs(ref) + 1e-6, name, "loss %.8g ref %.8g", a.loss, ref);
    snprintf(name, sizeof name, "clip cached dloss/dlogits vs formula %s", lab);
    double eg = rel_err_d(a.cache.data(), G);
    report(eg < 1e-4, name, "rel err %.3e", eg);

    // finite differences of the float loss; noise: its rounding over the step
    float eps = 3e-3f;
    double noise = 4.0 * 1.2e-7 * fmax(fabs(ref), 1.0) / eps;
    Vec cache(clip_loss_cache_floats(N, E));
    auto loss = [&]() { return (double)clip_loss_forward_cpu(cache.data(), img.data(), txt.data(), &ls, N, E); };
    snprintf(name, sizeof name, "clip dimg %s", lab);
    grad_check(name, img.data(), a.dimg.data(), img.size(), loss, 2e-2, eps, 40, 3, noise);
    snprintf(name, sizeof name, "clip dtxt %s", lab);
    grad_check(name, txt.data(), a.dtxt.data(), txt.size(), loss, 2e-2, eps, 40, 4, noise);
    if (!clamped) {
        snprintf(name, sizeof name, "clip dlog_scale %s", lab);
        grad_check(name, &ls, a.dls.data(), 1, loss, 1e-2, 1e-3f, 1, 5, 4.0 * 1.2e-7 * fmax(fabs(ref), 1.0) / 1e-3);
    } else {
        // s = 100 whatever log_scale above log(100): the loss is flat in it and the gradient exactly 0
        float ls2 = (float)log(300.0);
        float l2 = clip_loss_forward_cpu(cache.data(), img.data(), txt.data(), &ls2, N, E);
        snprintf(name, sizeof name, "clip clamp active: dlog_scale += exactly 0, loss flat %s", lab);
        report(a.dls[0] == 0.0f && l2 == a.loss, name, "dlog_scale added %g, loss %.9g vs %.9g", a.dls[0], l2, a.loss);
    }

    // the backward accumulates: a second call adds the same again
    Vec di = a.dimg, dt = a.dtxt, dl = {1.5f};
    clip_loss_backward_cpu(di.data(), dt.data(), dl.data(), a.cache.data(), img.data(), txt.data(), &ls, N, E);
    Vec di2 = added(di, a.dimg), dt2 = added(dt, a.dtxt);
    snprintf(name, sizeof name, "clip backward accumulates %s", lab);
    bool acc_ok = rel_err(di2.data(), a.dimg.data(), di2.size()) < 1e-5 &&
                  rel_err(dt2.data(), a.dtxt.data(), dt2.size()) < 1e-5 && fabs(dl[0] - 1.5f - a.dls[0]) < 1e-6;
    report(acc_ok, name, "the second backward did not add the same");

    // the loss ignores the embeddings' norms: each row scaled by a positive factor, same loss, and
    // so each row's gradient is orthogonal to the row
    Vec img2 = img, txt2 = txt;
    for (int i = 0; i < N; i++)
        for (int e = 0; e < E; e++) {
            img2[(size_t)i * E + e] *= 0.25f + (float)i;
            txt2[(size_t)i * E + e] *= 4.0f / (1.0f + i);
        }
    float l3 = clip_loss_forward_cpu(cache.data(), img2.data(), txt2.data(), &ls, N, E);
    double worst = 0, scale = 0;
    for (int i = 0; i < N; i++) {
        double di_x = 0, dt_x = 0;
        for (int e = 0; e < E; e++) {
            di_x += (double)a.dimg[(size_t)i * E + e] * img[(size_t)i * E + e];
            dt_x += (double)a.dtxt[(size_t)i * E + e] * txt[(size_t)i * E + e];
            scale += (double)a.dimg[(size_t)i * E + e] * a.dimg[(size_t)i * E + e];
        }
        worst = fmax(worst, fmax(fabs(di_x), fabs(dt_x)));
    }
    snprintf(name, sizeof name, "clip scale invariance: loss, dimg_i . img_i = 0 %s", lab);
    report(fabs(l3 - a.loss) <= 1e-5 * fabs(a.loss) + 1e-6 && worst < 1e-5 * (sqrt(scale) + 1e-3), name,
           "loss %.8g vs %.8g, worst |d_i . x_i| %.3e", l3, a.loss, worst);
}

// orthogonal embeddings (random orthonormal rows, random positive norms): L = s I, so the loss of
// every row and column is log(e^s + N - 1) - s = log(1 + (N - 1) e^-s)
static void test_orthogonal(Rng* r, int N, int E, double log_scale) {
    std::vector<DVec> q;
    while ((int)q.size() < N) {  // Gram-Schmidt on random vectors
        DVec v(E);
        for (auto& x : v) x = rng_uniform(r) * 2.0 - 1.0;
        for (int pass = 0; pass < 2; pass++)
            for (auto& b : q) {
                double d = 0;
                for (int e = 0; e < E; e++) d += v[e] * b[e];
                for (int e = 0; e < E; e++) v[e] -= d * b[e];
            }
        double n = 0;
        for (double x : v) n += x * x;
        n = sqrt(n);
        if (n < 0.1) continue;
        for (auto& x : v) x /= n;
        q.push_back(v);
    }
    Vec img((size_t)N * E), txt((size_t)N * E);
    for (int i = 0; i < N; i++) {
        float a = 0.5f + 3.0f * rng_uniform(r), b = 0.5f + 3.0f * rng_uniform(r);
        for (int e = 0; e < E; e++) {
            img[(size_t)i * E + e] = (float)(a * q[i][e]);
            txt[(size_t)i * E + e] = (float)(b * q[i][e]);
        }
    }
    float ls = (float)log_scale;
    double s = clip_scale(ls), exact = log1p((N - 1) * exp(-s));
    Vec cache(clip_loss_cache_floats(N, E));
    float got = clip_loss_forward_cpu(cache.data(), img.data(), txt.data(), &ls, N, E);
    char name[160];
    snprintf(name, sizeof name, "clip orthogonal embeddings: loss = log(1 + (N-1) e^-s) N=%d E=%d s=%g", N, E, s);
    // lse - L loses the digits of lse (about 1e-7 * s) when the loss is small
    report(fabs(got - exact) < 1e-6 * exact + 2e-7 * s, name, "loss %.9g exact %.9g", got, exact);
}

// swapping img and txt swaps the rows and columns of L: the same loss, the gradients swapped
static void test_symmetry(Rng* r, int N, int E) {
    Vec img = random_vec((size_t)N * E, r), txt = random_vec((size_t)N * E, r);
    float ls = (float)LOG_INIT;
    Run a = run_clip(img, txt, ls, N, E, 7), b = run_clip(txt, img, ls, N, E, 7);
    char name[160];
    snprintf(name, sizeof name, "clip symmetric in img <-> txt N=%d E=%d", N, E);
    bool ok = fabs(a.loss - b.loss) <= 1e-6 * fabs(a.loss) && rel_err(b.dimg.data(), a.dtxt.data(), a.dtxt.size()) < 1e-5 &&
              rel_err(b.dtxt.data(), a.dimg.data(), a.dimg.size()) < 1e-5 && fabs(a.dls[0] - b.dls[0]) < 1e-5 * fabs(a.dls[0]);
    report(ok, name, "loss %.9g vs %.9g, dls %.7g vs %.7g", a.loss, b.loss, a.dls[0], b.dls[0]);
}

// N = 1: the one logit is the whole softmax of its row and its column (p = 1), so the loss is
// -log 1 = 0 exactly and nothing moves it: every gradient is 0
static void test_single_pair(Rng* r, int E, double log_scale) {
    Vec img = random_vec(E, r), txt = random_vec(E, r);
    float ls = (float)log_scale;
    Run a = run_clip(img, txt, ls, 1, E, 13);
    bool zero = a.loss == 0.0f && a.dls[0] == 0.0f;
    for (float v : a.dimg) zero &= v == 0.0f;
    for (float v : a.dtxt) zero &= v == 0.0f;
    char name[128];
    snprintf(name, sizeof name, "clip N=1: loss 0, gradients 0 E=%d s=%g", E, clip_scale(ls));
    report(zero, name, "loss %g", a.loss);
}

static void test_logits(Rng* r, int N, int M, int E, double log_scale) {
    Vec img = random_vec((size_t)N * E, r), txt = random_vec((size_t)M * E, r, -0.3f, 2.0f);
    Vec logits((size_t)N * M, NAN);
    float ls = (float)log_scale;
    clip_logits_cpu(logits.data(), img.data(), txt.data(), &ls, N, M, E);
    DVec ref = ref_logits(img, txt, clip_scale(ls), N, M, E);
    double err = 0;
    for (size_t k = 0; k < ref.size(); k++) err = std::isfinite(logits[k]) ? fmax(err, fabs(logits[k] - ref[k])) : INFINITY;
    char name[128];
    snprintf(name, sizeof name, "clip_logits vs formula N=%d M=%d E=%d s=%g", N, M, E, clip_scale(ls));
    report(err < 1e-6 * clip_scale(ls), name, "max err %.3e", err);
}

// the same bits for 1, 2, 3 and 4 OpenMP threads
static void test_threads(Rng* r, int N, int E) {
    Vec img = random_vec((size_t)N * E, r), txt = random_vec((size_t)N * E, r);
    float ls = (float)LOG_INIT;
    auto outputs = [&]() {
        Run a = run_clip(img, txt, ls, N, E, 21);
        Vec all = {a.loss}, logits((size_t)N * (N + 3));
        Vec txt3 = txt;
        txt3.insert(txt3.end(), img.begin(), img.begin() + 3 * E);
        clip_logits_cpu(logits.data(), img.data(), txt3.data(), &ls, N, N + 3, E);
        for (const Vec* v : {&a.cache, &a.dimg, &a.dtxt, &a.dls, &logits}) all.insert(all.end(), v->begin(), v->end());
        return all;
    };
    int bad = 0;
#ifdef _OPENMP
    int keep = omp_get_max_threads();
    Vec first;
    for (int t = 1; t <= 4; t++) {
        omp_set_num_threads(t);
        Vec v = outputs();
        if (t == 1) first = v;
        else if (!bad && (v.size() != first.size() || memcmp(v.data(), first.data(), v.size() * sizeof(float)) != 0))
            bad = t;
    }
    omp_set_num_threads(keep);
#endif
    char name[128];
    snprintf(name, sizeof name, "clip same bits with 1..4 threads N=%d E=%d", N, E);
    report(bad == 0, name, "%d threads differ from 1 thread", bad);
}

int main() {
    Rng r;
    rng_seed(&r, 777);
    test_scale();
    for (double ls : {LOG10, LOG200}) {
        test_case(&r, 2, 13, ls);
        test_case(&r, 7, 37, ls);
        test_case(&r, 33, 20, ls);
    }
    test_case(&r, 2, 13, LOG200, 6.0f);
    test_case(&r, 7, 37, LOG200, 6.0f);
    test_case(&r, 33, 20, LOG200, 6.0f);
    test_case(&r, 33, 20, LOG10, 3.0f);
    test_case(&r, 5, 96, LOG_INIT);
    test_case(&r, 40, 11, log(2.0));
    test_orthogonal(&r, 7, 13, log(2.0));
    test_orthogonal(&r, 7, 13, log(5.0));
    test_orthogonal(&r, 33, 45, LOG_INIT);
    test_orthogonal(&r, 2, 3, LOG10);
    test_symmetry(&r, 7, 37);
    test_symmetry(&r, 33, 20);
    test_single_pair(&r, 13, LOG10);
    test_single_pair(&r, 7, LOG200);
    test_logits(&r, 5, 9, 11, LOG10);
    test_logits(&r, 1, 1, 7, LOG_INIT);
    test_logits(&r, 37, 3, 50, LOG200);
    test_threads(&r, 33, 37);
    test_threads(&r, 70, 21);
    return test_summary();
}
