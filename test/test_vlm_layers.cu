// test_vlm_layers.cu: CPU checks of the vision-language layers (layernorm, GELU, attention and
// its decode step, patch embedding) by finite differences and by direct formulas in double.
// Backward passes run into gradient buffers pre-filled with random values and the gradient is the
// change, so an overwrite instead of += fails. Functions are also run with 1, 2, 3 and 4 OpenMP
// threads, which must give the same bits.
#include "test_util.h"
#include "../src/layernorm.h"
#include "../src/activations.h"
#include "../src/attention.h"
#include "../src/patch_embed.h"

typedef std::vector<float> Vec;

static double weighted_sum(const Vec& out, const Vec& w) {
    double s = 0;
    for (size_t i = 0; i < out.size(); i++) s += (double)out[i] * w[i];
    return s;
}
// the gradient a backward added: buffer after it minus its random pre-fill
static Vec added(const Vec& after, const Vec& before) {
    Vec d(after);
    for (size_t i = 0; i < d.size(); i++) d[i] -= before[i];
    return d;
}

// ---------------------------------------------------------------------------
// layernorm

static void test_layernorm(Rng* r, int N, int C, float offset) {
    Vec x = random_vec((size_t)N * C, r, -2, 2), wt = random_vec(C, r, 0.5f, 1.5f), bs = random_vec(C, r);
    for (auto& v : x) v += offset;  // a large mean: the variance must not cancel
    Vec w = random_vec(x.size(), r), out(x.size()), mean(N), rstd(N);
    layernorm_forward_cpu(out.data(), mean.data(), rstd.data(), x.data(), wt.data(), bs.data(), N, C);
    double err = 0;
    for (int n = 0; n < N; n++) {
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += x[(size_t)n * C + c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[(size_t)n * C + c] - m) * (x[(size_t)n * C + c] - m);
        double rs = 1.0 / sqrt(v / C + 1e-5);
        err = fmax(err, fabs(m - mean[n]) / (fabs(m) + 1) + fabs(rs - rstd[n]) / rs);
        for (int c = 0; c < C; c++)
            err = fmax(err, fabs((x[(size_t)n * C + c] - m) * rs * wt[c] + bs[c] - out[(size_t)n * C + c]));
    }
    char name[128];
    snprintf(name, sizeof name, "layernorm forward N=%d C=%d offset=%g", N, C, offset);
    // with a mean of 300 the float mean alone is off by ~3e-5 (a one-pass variance: ~1e-3)
    report(err < (offset != 0.0f ? 2e-4 : 2e-5), name, "err %.3e", err);
    if (offset != 0.0f) return;  // finite differences on a large offset only see rounding
    Vec dx0 = random_vec(x.size(), r), dx = dx0, dw0 = random_vec(C, r), dw = dw0, db0 = random_vec(C, r), db = db0;
    layernorm_backward_cpu(dx.data(), dw.data(), db.data(), w.data(), x.data(), wt.data(), mean.data(), rstd.data(),
                           N, C);
    Vec gx = added(dx, dx0), gw = added(dw, dw0), gb = added(db, db0);
    auto loss = [&]() {
        layernorm_forward_cpu(out.data(), mean.data(), rstd.data(), x.data(), wt.data(), bs.data(), N, C);
        return weighted_sum(out, w);
    };
    snprintf(name, sizeof name, "layernorm x N=%d C=%d", N, C);
    grad_check(name, x.data(), gx.data(), x.size(), loss, 1e-2, 1e-3f, 40);
    snprintf(name, sizeof name, "layernorm weight N=%d C=%d", N, C);
    grad_check(name, wt.data(), gw.data(), wt.size(), loss, 1e-2, 1e-3f, 40);
    snprintf(name, sizeof name, "layernorm bias N=%d C=%d", N, C);
    grad_check(name, bs.data(), gb.data(), bs.size(), loss, 1e-2, 1e-3f, 40);
}

// ---------------------------------------------------------------------------
// GELU (tanh approximation)

static void test_gelu(Rng* r) {
    size_t n = 60;
    Vec x = random_vec(n, r, -5, 5), w = random_vec(n, r), out(n);
    x[0] = 9.0f; x[1] = -9.0f; x[2] = 0.03f;  // both tails and near zero
    gelu_forward_cpu(out.data(), x.data(), n);
    double err = 0;
    for (size_t i = 0; i < n; i++) {
        double v = x[i];
        double ref = 0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
        err = fmax(err, fabs(out[i] - ref));
    }
    report(err < 1e-5, "gelu forward vs formula", "err %.3e", err);
    Vec d0 = random_vec(n, r), d = d0;
    gelu_backward_cpu(d.data(), w.data(), x.data(), n);
    Vec g = added(d, d0);
    auto loss = [&]() { gelu_forward_cpu(out.data(), x.data(), n); return weighted_sum(out, w); };
    grad_check("gelu", x.data(), g.data(), n, loss, 1e-3, 1e-3f, 60);
}

// ---------------------------------------------------------------------------
// attention

struct AttnCase {
    int B, T, C, NH;
    bool causal;
    std::vector<int> lengths;  // empty: no key-padding mask
    const int* len() const { return lengths.empty() ? nullptr : lengths.data(); }
    std::string label() const {
        char s[160];
        int k = snprintf(s, sizeof s, "B=%d T=%d C=%d NH=%d %s", B, T, C, NH, causal ? "causal" : "bidir");
        if (!lengths.empty()) {
            k += snprintf(s + k, sizeof s - k, " lengths=");
            for (int v : lengths) k += snprintf(s + k, sizeof s - k, "%d,", v);
        }
        return s;
    }
};

// naive reference in double, written element by element with explicit masks; lse: (B, NH, T),
// log sum_{visible j} exp(s_ij), +inf for a row without any visible key
static void attention_ref(Vec& out, Vec& lse, const Vec& qkv, const AttnCase& a) {
    int B = a.B, T = a.T, C = a.C, NH = a.NH, hd = C / NH;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                std::vector<double> s(T);
                std::vector<bool> vis(T);
                double mx = -1e300;
                bool any = false;
                for (int j = 0; j < T; j++) {
                    vis[j] = !(a.causal && j > i) && !(a.len() && j >= a.lengths[b]);
                    double d = 0;
                    for (int e = 0; e < hd; e++)
                        d += (double)qkv[((size_t)b * T + i) * 3 * C + h * hd + e] *
                             qkv[((size_t)b * T + j) * 3 * C + C + h * hd + e];
                    s[j] = d / sqrt((double)hd);
                    if (vis[j]) { mx = fmax(mx, s[j]); any = true; }
                }
                double z = 0;
                for (int j = 0; j < T; j++) z += vis[j] ? exp(s[j] - mx) : 0.0;
                lse[((size_t)b * NH + h) * T + i] = any ? (float)(mx + log(z)) : INFINITY;
                for (int e = 0; e < hd; e++) {
                    double o = 0;
                    for (int j = 0; j < T; j++)
                        if (vis[j]) o += exp(s[j] - mx) / z * qkv[((size_t)b * T + j) * 3 * C + 2 * C + h * hd + e];
                    out[((size_t)b * T + i) * C + h * hd + e] = (float)o;
                }
            }
}

static void test_attention(Rng* r, const AttnCase& a) {
    int B = a.B, T = a.T, C = a.C, NH = a.NH;
    std::string lab = a.label();
    char name[256];
    Vec qkv = random_vec((size_t)B * T * 3 * C, r, -1.5f, 1.5f), w = random_vec((size_t)B * T * C, r);
    Vec out((size_t)B * T * C), lse((size_t)B * NH * T), ref_out(out.size()), ref_lse(lse.size());
    attention_forward_cpu(out.data(), lse.data(), qkv.data(), a.len(), B, T, C, NH, a.causal);
    attention_ref(ref_out, ref_lse, qkv, a);
    // lse: relative to max(1, |lse|); an empty row must be +inf on both sides
    double eo = 0, el = 0;
    for (size_t i = 0; i < out.size(); i++) eo = fmax(eo, fabs(out[i] - ref_out[i]));
    for (size_t i = 0; i < lse.size(); i++)
        el = fmax(el, std::isinf(ref_lse[i]) ? (lse[i] == ref_lse[i] ? 0.0 : INFINITY)
                                             : fabs(lse[i] - ref_lse[i]) / fmax(1.0, fabs(ref_lse[i])));
    snprintf(name, sizeof name, "attention forward vs naive %s", lab.c_str());
    report(eo < 1e-5 && el < 2e-6, name, "out err %.3e lse err %.3e", eo, el);

    // backward: finite differences of sum(out * w) with respect to every part of qkv
    Vec d0 = random_vec(qkv.size(), r), d = d0, D(lse.size());
    attention_backward_cpu(d.data(), D.data(), w.data(), qkv.data(), out.data(), lse.data(), a.len(), B, T, C, NH,
                           a.causal);
    Vec g = added(d, d0);
    // D_i = dout_i . out_i per head
    double ed = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                double s = 0;
                for (int e = 0; e < C / NH; e++) {
                    size_t k = ((size_t)b * T + i) * C + h * (C / NH) + e;
                    s += (double)w[k] * out[k];
                }
                ed = fmax(ed, fabs(D[((size_t)b * NH + h) * T + i] - s));
            }
    snprintf(name, sizeof name, "attention backward D = dout.out %s", lab.c_str());
    report(ed < 1e-5, name, "err %.3e", ed);
    auto loss = [&]() {
        attention_forward_cpu(out.data(), lse.data(), qkv.data(), a.len(), B, T, C, NH, a.causal);
        return weighted_sum(out, w);
    };
    snprintf(name, sizeof name, "attention dqkv %s", lab.c_str());
    grad_check(name, qkv.data(), g.data(), qkv.size(), loss, 1e-2, 1e-2f, 80);
    // the gradients of q, k and v separately (a 3C-row: [q | k | v]), all entries, by sampling per part
    for (int part = 0; part < 3; part++) {
        Vec sub, gsub;
        std::vector<size_t> where;
        for (size_t row = 0; row < (size_t)B * T; row++)
            for (int c = 0; c < C; c++) where.push_back(row * 3 * C + part * C + c);
        for (size_t i : where) { sub.push_back(qkv[i]); gsub.push_back(g[i]); }
        auto loss_part = [&]() {
            for (size_t k = 0; k < where.size(); k++) qkv[where[k]] = sub[k];
            return loss();
        };
        snprintf(name, sizeof name, "attention d%c %s", "qkv"[part], lab.c_str());
        grad_check(name, sub.data(), gsub.data(), sub.size(), loss_part, 1e-2, 1e-2f, 40, 11 + part);
        for (size_t k = 0; k < where.size(); k++) qkv[where[k]] = sub[k];
    }
    // the backward accumulates: from the pre-fill it adds exactly what it adds to zeros
    Vec z(qkv.size(), 0.0f);
    attention_forward_cpu(out.data(), lse.data(), qkv.data(), a.len(), B, T, C, NH, a.causal);
    attention_backward_cpu(z.data(), D.data(), w.data(), qkv.data(), out.data(), lse.data(), a.len(), B, T, C, NH,
                           a.causal);
    snprintf(name, sizeof name, "attention backward accumulates %s", lab.c_str());
    check_close(name, g.data(), z.data(), z.size(), 1e-6);

    // masked keys are ignored: changing the k and v of padding keys (and, causal, of the last
    // position for the earlier rows) leaves the outputs bit-identical
    Vec out0 = out, qkv2 = qkv;
    bool changed_any = false;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < T; j++) {
            bool pad = a.len() && j >= a.lengths[b];
            bool future = a.causal && j == T - 1;
            if (!pad && !future) continue;
            changed_any = true;
            for (int c = C; c < 3 * C; c++) qkv2[((size_t)b * T + j) * 3 * C + c] += 3.0f + rng_uniform(r);
        }
    if (changed_any) {
        Vec out2(out.size()), lse2(lse.size());
        attention_forward_cpu(out2.data(), lse2.data(), qkv2.data(), a.len(), B, T, C, NH, a.causal);
        bool same = true;
        for (int b = 0; b < B; b++)
            for (int i = 0; i < T; i++) {
                if (a.causal && !a.len() && i == T - 1) continue;  // the last row sees the changed key
                if (a.causal && a.len() && i == T - 1 && a.lengths[b] >= T) continue;
                for (int c = 0; c < C; c++)
                    same &= out2[((size_t)b * T + i) * C + c] == out0[((size_t)b * T + i) * C + c];
            }
        snprintf(name, sizeof name, "attention ignores masked keys %s", lab.c_str());
        report(same, name, "an output changed");
    }
    // a row without any visible key has lse = +inf and outputs 0
    bool empty_ok = true;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                if (!(a.len() && a.lengths[b] == 0)) continue;
                empty_ok &= std::isinf(lse[((size_t)b * NH + h) * T + i]) && lse[((size_t)b * NH + h) * T + i] > 0;
                for (int e = 0; e < C / NH; e++) empty_ok &= out[((size_t)b * T + i) * C + h * (C / NH) + e] == 0.0f;
            }
    snprintf(name, sizeof name, "attention empty rows: lse +inf, out 0 %s", lab.c_str());
    report(empty_ok, name, "an empty row is wrong");
}

// the decode step over a growing KV cache equals the causal forward row by row
static void test_attention_step(Rng* r, int B, int T, int C, int NH) {
    int T_max = T + 3;
    Vec qkv = random_vec((size_t)B * T * 3 * C, r, -1.5f, 1.5f);
    Vec out((size_t)B * T * C), lse((size_t)B * NH * T);
    attention_forward_cpu(out.data(), lse.data(), qkv.data(), nullptr, B, T, C, NH, true);
    Vec kc((size_t)B * T_max * C, NAN), vc(kc.size(), NAN), q((size_t)B * C), o((size_t)B * C);  // unwritten: NaN
    double err = 0;
    for (int n = 1; n <= T; n++) {
        for (int b = 0; b < B; b++) {
            const float* row = qkv.data() + ((size_t)b * T + n - 1) * 3 * C;
            for (int c = 0; c < C; c++) {
                q[(size_t)b * C + c] = row[c];
                kc[((size_t)b * T_max + n - 1) * C + c] = row[C + c];
                vc[((size_t)b * T_max + n - 1) * C + c] = row[2 * C + c];
            }
        }
        attention_step_cpu(o.data(), q.data(), kc.data(), vc.data(), B, n, T_max, C, NH);
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++) {
                double e = fabs(o[(size_t)b * C + c] - out[((size_t)b * T + n - 1) * C + c]);
                err = std::isfinite(e) ? fmax(err, e) : INFINITY;
            }
    }
    char name[128];
    snprintf(name, sizeof name, "attention_step == causal forward B=%d T=%d C=%d NH=%d", B, T, C, NH);
    report(err < 1e-6, name, "err %.3e", err);
}

// ---------------------------------------------------------------------------
// patch embedding

static void test_patch_embed(Rng* r, int B, int H, int W, int p, int D, bool with_bias) {
    int P = (H / p) * (W / p), K = p * p * 3;
    Vec img = random_vec((size_t)B * H * W * 3, r, 0, 1), wt = random_vec((size_t)D * K, r), bias = random_vec(D, r);
    Vec patches((size_t)B * P * K, NAN), out((size_t)B * P * D), w = random_vec(out.size(), r);
    const float* bp = with_bias ? bias.data() : nullptr;
    patch_embed_forward(false, out.data(), patches.data(), img.data(), wt.data(), bp, B, H, W, p, D);
    // patchify: every element from the formula of the header
    bool ok = true;
    for (int b = 0; b < B; b++)
        for (int gy = 0; gy < H / p; gy++)
            for (int gx = 0; gx < W / p; gx++)
                for (int py = 0; py < p; py++)
                    for (int px = 0; px < p; px++)
                        for (int c = 0; c < 3; c++)
                            ok &= patches[((size_t)b * P + gy * (W / p) + gx) * K + (py * p + px) * 3 + c] ==
                                  img[(((size_t)b * H + gy * p + py) * W + gx * p + px) * 3 + c];
    char name[128];
    snprintf(name, sizeof name, "patchify B=%d H=%d W=%d p=%d", B, H, W, p);
    report(ok, name, "a pixel landed in the wrong place");
    // forward as a strided convolution over the image, in double
    double err = 0;
    for (int b = 0; b < B; b++)
        for (int g = 0; g < P; g++)
            for (int d = 0; d < D; d++) {
                int gy = g / (W / p), gx = g % (W / p);
                double s = with_bias ? bias[d] : 0.0;
                for (int py = 0; py < p; py++)
                    for (int px = 0; px < p; px++)
                        for (int c = 0; c < 3; c++)
                            s += (double)wt[(size_t)d * K + (py * p + px) * 3 + c] *
                                 img[(((size_t)b * H + gy * p + py) * W + gx * p + px) * 3 + c];
                err = fmax(err, fabs(s - out[((size_t)b * P + g) * D + d]));
            }
    snprintf(name, sizeof name, "patch_embed forward vs conv B=%d H=%d W=%d p=%d D=%d bias=%d", B, H, W, p, D,
             (int)with_bias);
    report(err < 1e-5, name, "err %.3e", err);
    Vec dw0 = random_vec(wt.size(), r), dw = dw0, db0 = random_vec(D, r), db = db0;
    patch_embed_backward(false, dw.data(), with_bias ? db.data() : nullptr, w.data(), patches.data(), B, P, K, D);
    Vec gw = added(dw, dw0), gb = added(db, db0);
    auto loss = [&]() {
        patch_embed_forward(false, out.data(), patches.data(), img.data(), wt.data(), bp, B, H, W, p, D);
        return weighted_sum(out, w);
    };
    snprintf(name, sizeof name, "patch_embed weight p=%d bias=%d", p, (int)with_bias);
    grad_check(name, wt.data(), gw.data(), wt.size(), loss, 1e-3, 1e-2f, 40);
    if (with_bias) {
        snprintf(name, sizeof name, "patch_embed bias p=%d", p);
        grad_check(name, bias.data(), gb.data(), bias.size(), loss, 1e-3, 1e-2f, 40);
    } else {
        report(gb == Vec(D, 0.0f), "patch_embed without bias leaves dbias", "dbias changed");
    }
}

// ---------------------------------------------------------------------------
// the same bits for 1, 2, 3 and 4 OpenMP threads: `outputs` runs fixed inputs and returns every
// output it wrote, concatenated

static void same_bits_1_to_4_threads(const char* what, const std::function<Vec()>& outputs) {
    char name[160];
    snprintf(name, sizeof name, "same bits with 1..4 threads: %s", what);
    int bad = 0;
#ifdef _OPENMP
    int keep = omp_get_max_threads();
    std::vector<Vec> runs;
    for (int t = 1; t <= 4; t++) {
        omp_set_num_threads(t);
        runs.push_back(outputs());
        const Vec& a = runs.front();
        const Vec& c = runs.back();
        if (!bad && (a.size() != c.size() || memcmp(a.data(), c.data(), a.size() * sizeof(float)) != 0)) bad = t;
    }
    omp_set_num_threads(keep);
#else
    outputs();
#endif
    report(bad == 0, name, "%d threads differ from 1 thread", bad);
}

static void cat(Vec& all, const Vec& v) { all.insert(all.end(), v.begin(), v.end()); }

static void test_threads(Rng* r) {
    {
        int N = 257, C = 37;
        Vec x = random_vec((size_t)N * C, r, -2, 2), wt = random_vec(C, r, 0.5f, 1.5f), bs = random_vec(C, r);
        Vec dout = random_vec(x.size(), r), dx0 = random_vec(x.size(), r), dw0 = random_vec(C, r), db0 = random_vec(C, r);
        same_bits_1_to_4_threads("layernorm forward + backward", [&]() {
            Vec out(x.size()), mean(N), rstd(N), dx = dx0, dw = dw0, db = db0, all;
            layernorm_forward_cpu(out.data(), mean.data(), rstd.data(), x.data(), wt.data(), bs.data(), N, C);
            layernorm_backward_cpu(dx.data(), dw.data(), db.data(), dout.data(), x.data(), wt.data(), mean.data(),
                                   rstd.data(), N, C);
            cat(all, out); cat(all, mean); cat(all, rstd); cat(all, dx); cat(all, dw); cat(all, db);
            return all;
        });
        same_bits_1_to_4_threads("gelu forward + backward", [&]() {
            Vec out(x.size()), dx = dx0, all;
            gelu_forward_cpu(out.data(), x.data(), x.size());
            gelu_backward_cpu(dx.data(), dout.data(), x.data(), x.size());
            cat(all, out); cat(all, dx);
            return all;
        });
    }
    {
        int B = 3, T = 29, C = 36, NH = 3;
        std::vector<int> lens = {29, 17, 1};
        Vec qkv = random_vec((size_t)B * T * 3 * C, r), dout = random_vec((size_t)B * T * C, r);
        Vec d0 = random_vec(qkv.size(), r);
        for (int causal = 0; causal < 2; causal++)
            same_bits_1_to_4_threads(causal ? "attention causal + lengths" : "attention bidir + lengths", [&]() {
                Vec out((size_t)B * T * C), lse((size_t)B * NH * T), D(lse.size()), d = d0, all;
                attention_forward_cpu(out.data(), lse.data(), qkv.data(), lens.data(), B, T, C, NH, causal);
                attention_backward_cpu(d.data(), D.data(), dout.data(), qkv.data(), out.data(), lse.data(), lens.data(),
                                       B, T, C, NH, causal);
                cat(all, out); cat(all, lse); cat(all, D); cat(all, d);
                return all;
            });
        same_bits_1_to_4_threads("attention_step", [&]() {
            Vec o((size_t)B * C);  // the cache: the k and v parts of qkv, T_max = T, as (B, T, 3C) rows
            Vec kc((size_t)B * T * C), vc(kc.size());
            for (size_t row = 0; row < (size_t)B * T; row++)
                for (int c = 0; c < C; c++) { kc[row * C + c] = qkv[row * 3 * C + C + c]; vc[row * C + c] = qkv[row * 3 * C + 2 * C + c]; }
            attention_step_cpu(o.data(), dout.data(), kc.data(), vc.data(), B, T - 4, T, C, NH);
            return o;
        });
    }
    {
        int B = 3, H = 20, W = 12, p = 4, D = 19, P = (H / p) * (W / p), K = p * p * 3;
        Vec img = random_vec((size_t)B * H * W * 3, r, 0, 1), wt = random_vec((size_t)D * K, r), bias = random_vec(D, r);
        Vec dout = random_vec((size_t)B * P * D, r), dw0 = random_vec(wt.size(), r), db0 = random_vec(D, r);
        same_bits_1_to_4_threads("patch_embed forward + backward", [&]() {
            Vec patches((size_t)B * P * K), out((size_t)B * P * D), dw = dw0, db = db0, all;
            patch_embed_forward(false, out.data(), patches.data(), img.data(), wt.data(), bias.data(), B, H, W, p, D);
            patch_embed_backward(false, dw.data(), db.data(), dout.data(), patches.data(), B, P, K, D);
            cat(all, patches); cat(all, out); cat(all, dw); cat(all, db);
            return all;
        });
    }
}

int main() {
    Rng r;
    rng_seed(&r, 2024);
    test_layernorm(&r, 5, 37, 0.0f);
    test_layernorm(&r, 1, 8, 0.0f);
    test_layernorm(&r, 4, 12, 0.0f);
    test_layernorm(&r, 3, 40, 300.0f);
    test_gelu(&r);
    for (int causal = 0; causal < 2; causal++) {
        test_attention(&r, {2, 1, 4, 1, (bool)causal, {}});
        test_attention(&r, {2, 1, 12, 3, (bool)causal, {1, 0}});  // T = 1, one empty sequence
        test_attention(&r, {2, 7, 12, 3, (bool)causal, {}});
        test_attention(&r, {3, 7, 12, 3, (bool)causal, {7, 4, 1}});
        test_attention(&r, {1, 13, 8, 1, (bool)causal, {}});
        test_attention(&r, {3, 13, 12, 3, (bool)causal, {13, 9, 0}});  // padding, a full and an empty one
        test_attention(&r, {2, 13, 10, 1, (bool)causal, {5, 12}});
    }
    test_attention_step(&r, 2, 9, 12, 3);
    test_attention_step(&r, 1, 1, 8, 1);
    test_attention_step(&r, 3, 13, 10, 2);
    test_patch_embed(&r, 2, 8, 12, 4, 5, true);
    test_patch_embed(&r, 1, 6, 6, 3, 7, false);
    test_patch_embed(&r, 2, 5, 5, 1, 4, true);  // p = 1: every pixel a patch
    {
        Rng rt; rng_seed(&rt, 5);
        test_threads(&rt);
    }
    return test_summary();
}
