// gpu_scan.cu: CUDA selective scan vs the CPU reference (src/selective_scan.h).
// Outputs start NaN-poisoned; gradients start from the same random contents on
// both sides (the backward must add into them). N = 16 runs the fast kernels
// (vector and scalar paths, partial blocks and chunks); other N, and N = 16 with
// misaligned hs / Bm / Cm / dBm / dCm, run the generic ones. Ends with a timing
// line for a model-sized shape (not a test).
#include "test_util.h"
#include "../src/selective_scan.h"

// Tolerances (relative L2 error vs the fp32 CPU reference, which uses expf/log1pf). The generic
// kernels use the same accurate functions: 1e-4. The fast kernels use ex2.approx (rel. error
// ~2^-22) and a softplus made of __expf/__logf, whose absolute error (~2^-21.4) is up to ~4e-5
// relative where softplus is small (dt ~ 1e-2): 2e-4 leaves room for that; bugs show as >> 1e-3.
static const double TOL_GENERIC = 1e-4, TOL_FAST = 2e-4;

// device copy placed `off` floats into its allocation (off = 1: not 16-byte aligned);
// free with cudaFree(p - off)
static float* dev_copy(const std::vector<float>& h, int off) {
    std::vector<float> pad(off, 0.0f);
    pad.insert(pad.end(), h.begin(), h.end());
    return to_device(pad) + off;
}
static float* dev_poisoned(size_t n, int off) { return device_poisoned(n + off) + off; }

// misalign = 1: shift every device buffer by one float, which must send N = 16 to the generic kernels;
// 2: shift only the (B, L, E) activations and their gradients, which must send N = 16 with E % 4 == 0
// to the fast kernels' per-element path
// random scan inputs: A = -exp(A_log) near -(n + 1) (S4D-real), delta mostly where softplus curves.
// linear_steps: ~1% of the steps take softplus's linear branch (x > 20); u is shrunk there so these
// steps (dA ~ 0: a state reset) stay O(1) and do not dominate the error norms
struct ScanInputs { std::vector<float> u, delta, A_log, Bm, Cm, D, z, delta_bias, dout; };
static ScanInputs scan_random_inputs(int B, int L, int E, int N, Rng* r, bool linear_steps) {
    size_t BLE = (size_t)B * L * E, BLN = (size_t)B * L * N;
    ScanInputs in;
    in.u = random_vec(BLE, r, -1.5f, 1.5f);
    in.delta = random_vec(BLE, r, -3.0f, 1.0f);
    if (linear_steps)
        for (size_t i = 0; i < BLE; i++)
            if (rng_uniform(r) < 0.01f) { in.delta[i] = 21.0f + rng_uniform(r); in.u[i] *= 0.05f; }
    in.A_log.resize((size_t)E * N);
    for (int e = 0; e < E; e++)
        for (int n = 0; n < N; n++) in.A_log[e * N + n] = logf((float)(n + 1)) + 0.2f * (rng_uniform(r) - 0.5f);
    in.Bm = random_vec(BLN, r); in.Cm = random_vec(BLN, r); in.D = random_vec(E, r);
    in.z = random_vec(BLE, r, -2.0f, 2.0f); in.delta_bias = random_vec(E, r, -1.0f, 0.5f);
    in.dout = random_vec(BLE, r);
    return in;
}

static void test_shape(int B, int L, int E, int N, uint64_t seed, int misalign = 0) {
    Rng r; rng_seed(&r, seed);
    size_t BLE = (size_t)B * L * E, BLN = (size_t)B * L * N, EN = (size_t)E * N;
    int nc = scan_n_chunks(L);
    size_t HS = (size_t)B * nc * E * N;
    ScanInputs in = scan_random_inputs(B, L, E, N, &r, true);
    std::vector<float> &u = in.u, &delta = in.delta, &A_log = in.A_log, &Bm = in.Bm, &Cm = in.Cm, &D = in.D, &z = in.z;
    std::vector<float> &delta_bias = in.delta_bias, &dout = in.dout;
    bool fast = N == 16 && misalign != 1;
    double tol = fast ? TOL_FAST : TOL_GENERIC;
    int off = misalign == 1 ? 1 : 0, offa = misalign ? 1 : 0;  // offa: (B, L, E) buffers

    // CPU reference
    std::vector<float> out(BLE), hs(HS);
    selective_scan_forward_cpu(out.data(), hs.data(), u.data(), delta.data(), A_log.data(), Bm.data(), Cm.data(),
                               D.data(), z.data(), delta_bias.data(), B, L, E, N);
    // gradients: 8 arrays with random initial contents, same on both sides
    size_t sizes[8] = {BLE, BLE, EN, BLN, BLN, (size_t)E, BLE, (size_t)E};
    const char* names[8] = {"du", "ddelta", "dA_log", "dBm", "dCm", "dD", "dz", "ddelta_bias"};
    std::vector<float> init[8], ref[8];
    for (int k = 0; k < 8; k++) { init[k] = random_vec(sizes[k], &r); ref[k] = init[k]; }
    selective_scan_backward_cpu(ref[0].data(), ref[1].data(), ref[2].data(), ref[3].data(), ref[4].data(),
                                ref[5].data(), ref[6].data(), ref[7].data(), dout.data(), u.data(), delta.data(),
                                A_log.data(), Bm.data(), Cm.data(), D.data(), z.data(), delta_bias.data(),
                                hs.data(), B, L, E, N);

    // GPU
    float *d_u = dev_copy(u, offa), *d_delta = dev_copy(delta, offa), *d_A_log = dev_copy(A_log, off);
    float *d_Bm = dev_copy(Bm, off), *d_Cm = dev_copy(Cm, off), *d_D = dev_copy(D, off), *d_z = dev_copy(z, offa);
    float *d_bias = dev_copy(delta_bias, off), *d_dout = dev_copy(dout, offa);
    float *d_out = dev_poisoned(BLE, offa), *d_hs = dev_poisoned(HS, off);
    // through the backend wrapper the model calls (on_gpu = true -> selective_scan_forward_cuda)
    selective_scan_forward(true, d_out, d_hs, d_u, d_delta, d_A_log, d_Bm, d_Cm, d_D, d_z, d_bias, B, L, E, N);
    char tag[112], name[176];
    snprintf(tag, sizeof tag, "B=%d L=%d E=%d N=%d%s", B, L, E, N,
             misalign == 1 ? " misaligned (generic)" : misalign == 2 ? " misaligned activations (fast)" :
             fast ? " (fast)" : " (generic)");
    snprintf(name, sizeof name, "scan forward out %s", tag);
    check_close(name, from_device(d_out, BLE).data(), out.data(), BLE, tol);
    snprintf(name, sizeof name, "scan forward hs %s", tag);
    check_close(name, from_device(d_hs, HS).data(), hs.data(), HS, tol);
    float* d_g[8];
    int goff[8];  // du, ddelta, dz are (B, L, E)
    for (int k = 0; k < 8; k++) {
        goff[k] = (k == 0 || k == 1 || k == 6) ? offa : off;
        d_g[k] = dev_copy(init[k], goff[k]);
    }
    // backward from the CPU's hs, so each direction is tested on its own
    cudaCheck(cudaMemcpy(d_hs, hs.data(), HS * sizeof(float), cudaMemcpyHostToDevice));
    selective_scan_backward(true, d_g[0], d_g[1], d_g[2], d_g[3], d_g[4], d_g[5], d_g[6], d_g[7], d_dout, d_u,
                            d_delta, d_A_log, d_Bm, d_Cm, d_D, d_z, d_bias, d_hs, B, L, E, N);
    for (int k = 0; k < 8; k++) {
        // compare what was added (got - init vs ref - init): overwriting instead of
        // accumulating fails, and small gradients are not hidden by the O(1) init
        std::vector<float> got = from_device(d_g[k], sizes[k]), dg(sizes[k]), dr(sizes[k]);
        for (size_t i = 0; i < sizes[k]; i++) { dg[i] = got[i] - init[k][i]; dr[i] = ref[k][i] - init[k][i]; }
        snprintf(name, sizeof name, "scan backward %s %s", names[k], tag);
        check_close(name, dg.data(), dr.data(), sizes[k], tol);
    }
    {  // frozen A_log, D, delta_bias (LoRA): nullptr parameter gradients. du, ddelta, dz must be the same
       // bits as the normal call's; dBm, dCm (float atomics, whose order varies) match the CPU reference
        float* d_f[8];
        for (int k = 0; k < 8; k++) d_f[k] = (k == 2 || k == 5 || k == 7) ? nullptr : dev_copy(init[k], goff[k]);
        selective_scan_backward(true, d_f[0], d_f[1], d_f[2], d_f[3], d_f[4], d_f[5], d_f[6], d_f[7], d_dout, d_u,
                                d_delta, d_A_log, d_Bm, d_Cm, d_D, d_z, d_bias, d_hs, B, L, E, N);
        for (int k : {0, 1, 6}) {
            std::vector<float> a = from_device(d_f[k], sizes[k]), b = from_device(d_g[k], sizes[k]);
            size_t bad = 0;
            for (size_t i = 0; i < sizes[k]; i++) bad += memcmp(&a[i], &b[i], sizeof(float)) != 0;
            snprintf(name, sizeof name, "scan backward frozen params: same %s bits %s", names[k], tag);
            report(bad == 0, name, "%zu of %zu differ", bad, sizes[k]);
        }
        for (int k : {3, 4}) {
            std::vector<float> got = from_device(d_f[k], sizes[k]), dg(sizes[k]), dr(sizes[k]);
            for (size_t i = 0; i < sizes[k]; i++) { dg[i] = got[i] - init[k][i]; dr[i] = ref[k][i] - init[k][i]; }
            snprintf(name, sizeof name, "scan backward frozen params: %s %s", names[k], tag);
            check_close(name, dg.data(), dr.data(), sizes[k], tol);
        }
        for (int k = 0; k < 8; k++) if (d_f[k]) cudaCheck(cudaFree(d_f[k] - goff[k]));
    }
    {  // GRAD_SET: du, ddelta, dz from NaN come out as the bits of the backward into zeros (the fast kernel
       // stores without reading them, the generic one zeroes first); the other gradients still add
        float *d_add[8], *d_set[8];
        for (int k = 0; k < 8; k++) {
            bool act = k == 0 || k == 1 || k == 6;
            d_add[k] = act ? dev_copy(std::vector<float>(sizes[k], 0.0f), goff[k]) : dev_copy(init[k], goff[k]);
            d_set[k] = act ? dev_poisoned(sizes[k], goff[k]) : dev_copy(init[k], goff[k]);
        }
        selective_scan_backward(true, d_add[0], d_add[1], d_add[2], d_add[3], d_add[4], d_add[5], d_add[6], d_add[7], d_dout, d_u,
                                d_delta, d_A_log, d_Bm, d_Cm, d_D, d_z, d_bias, d_hs, B, L, E, N);
        selective_scan_backward(true, d_set[0], d_set[1], d_set[2], d_set[3], d_set[4], d_set[5], d_set[6], d_set[7], d_dout, d_u,
                                d_delta, d_A_log, d_Bm, d_Cm, d_D, d_z, d_bias, d_hs, B, L, E, N, GRAD_SET);
        for (int k : {0, 1, 6}) {
            std::vector<float> a = from_device(d_add[k], sizes[k]), b = from_device(d_set[k], sizes[k]);
            size_t bad = 0;
            for (size_t i = 0; i < sizes[k]; i++) bad += memcmp(&a[i], &b[i], sizeof(float)) != 0;
            snprintf(name, sizeof name, "scan backward GRAD_SET: %s into NaN == into zeros %s", names[k], tag);
            report(bad == 0, name, "%zu of %zu differ", bad, sizes[k]);
        }
        for (int k : {2, 3, 4, 5, 7}) {  // added as before (atomics: to the CPU's tolerance)
            std::vector<float> got = from_device(d_set[k], sizes[k]), dg(sizes[k]), dr(sizes[k]);
            for (size_t i = 0; i < sizes[k]; i++) { dg[i] = got[i] - init[k][i]; dr[i] = ref[k][i] - init[k][i]; }
            snprintf(name, sizeof name, "scan backward GRAD_SET: %s still added %s", names[k], tag);
            check_close(name, dg.data(), dr.data(), sizes[k], tol);
        }
        for (int k = 0; k < 8; k++) { cudaCheck(cudaFree(d_add[k] - goff[k])); cudaCheck(cudaFree(d_set[k] - goff[k])); }
    }
    float* bufs[] = {d_A_log, d_Bm, d_Cm, d_D, d_bias, d_hs};
    for (float* p : bufs) cudaCheck(cudaFree(p - off));
    float* bufs_a[] = {d_u, d_delta, d_z, d_dout, d_out};
    for (float* p : bufs_a) cudaCheck(cudaFree(p - offa));
    for (int k = 0; k < 8; k++) cudaCheck(cudaFree(d_g[k] - goff[k]));
}

// bf16 activations (selective_scan_forward_b16_cuda / selective_scan_backward_b16_cuda): u, delta,
// z, Bm, Cm, dout rounded to bf16 on both sides, so the CPU reference sees the kernels' exact inputs.
// The kernels compute in fp32 as the fp32 path does and round each bf16 output once (relative error
// <= u = 2^-8 per element, so <= u in relative L2): out, du, ddelta, dz within TOL_FAST + u; hs,
// dBm, dCm, dA_log, dD, ddelta_bias (fp32) within TOL_FAST. The gradients start at zero (as the
// model's scratch does); a second call must add the same again (2x the reference, two roundings).
// misalign: shift the (B, L, E) buffers by one element (2 bytes): the per-element path.
static bf16* dev_bf16(const std::vector<float>& h, int off) {
    std::vector<bf16> b(h.size() + off, from_f32<bf16>(0.0f));
    for (size_t i = 0; i < h.size(); i++) b[i + off] = from_f32<bf16>(h[i]);
    bf16* d;
    cudaCheck(cudaMalloc(&d, b.size() * sizeof(bf16)));
    cudaCheck(cudaMemcpy(d, b.data(), b.size() * sizeof(bf16), cudaMemcpyHostToDevice));
    return d + off;
}
static std::vector<float> host_bf16(const bf16* d, size_t n) {
    std::vector<bf16> b(n);
    cudaCheck(cudaMemcpy(b.data(), d, n * sizeof(bf16), cudaMemcpyDeviceToHost));
    std::vector<float> f(n);
    for (size_t i = 0; i < n; i++) f[i] = to_f32(b[i]);
    return f;
}
static void round_bf16(std::vector<float>& v) {
    for (float& x : v) x = to_f32(from_f32<bf16>(x));
}
static void test_shape_bf16(int B, int L, int E, uint64_t seed, int misalign = 0) {
    const int N = 16;
    const double u16 = 1.0 / 256;  // bf16's unit roundoff
    Rng r; rng_seed(&r, seed);
    size_t BLE = (size_t)B * L * E, BLN = (size_t)B * L * N, EN = (size_t)E * N;
    size_t HS = (size_t)B * scan_n_chunks(L) * E * N;
    ScanInputs in = scan_random_inputs(B, L, E, N, &r, false);
    std::vector<float> &u = in.u, &delta = in.delta, &A_log = in.A_log, &Bm = in.Bm, &Cm = in.Cm, &D = in.D, &z = in.z;
    std::vector<float> &delta_bias = in.delta_bias, &dout = in.dout;
    for (std::vector<float>* v : {&u, &delta, &Bm, &Cm, &z, &dout}) round_bf16(*v);
    std::vector<float> out(BLE), hs(HS);
    selective_scan_forward_cpu(out.data(), hs.data(), u.data(), delta.data(), A_log.data(), Bm.data(), Cm.data(), D.data(),
                               z.data(), delta_bias.data(), B, L, E, N);
    size_t sizes[8] = {BLE, BLE, EN, BLN, BLN, (size_t)E, BLE, (size_t)E};
    const char* names[8] = {"du", "ddelta", "dA_log", "dBm", "dCm", "dD", "dz", "ddelta_bias"};
    std::vector<float> ref[8];
    for (int k = 0; k < 8; k++) ref[k].assign(sizes[k], 0.0f);
    selective_scan_backward_cpu(ref[0].data(), ref[1].data(), ref[2].data(), ref[3].data(), ref[4].data(), ref[5].data(),
                                ref[6].data(), ref[7].data(), dout.data(), u.data(), delta.data(), A_log.data(), Bm.data(),
                                Cm.data(), D.data(), z.data(), delta_bias.data(), hs.data(), B, L, E, N);
    const int oa = misalign ? 1 : 0;
    bf16 *d_u = dev_bf16(u, oa), *d_delta = dev_bf16(delta, oa), *d_z = dev_bf16(z, oa), *d_dout = dev_bf16(dout, oa);
    bf16 *d_Bm = dev_bf16(Bm, 0), *d_Cm = dev_bf16(Cm, 0);
    std::vector<float> nan_act(BLE, NAN);
    bf16* d_out = dev_bf16(nan_act, oa);  // poisoned
    float *d_A_log = to_device(A_log), *d_D = to_device(D), *d_bias = to_device(delta_bias), *d_hs = device_poisoned(HS);
    selective_scan_forward_b16_cuda(d_out, d_hs, d_u, d_delta, d_A_log, d_Bm, d_Cm, d_D, d_z, d_bias, B, L, E);
    char tag[96], name[176];
    snprintf(tag, sizeof tag, "B=%d L=%d E=%d%s", B, L, E, misalign ? " misaligned activations" : "");
    snprintf(name, sizeof name, "scan bf16 activations: forward out %s", tag);
    check_close(name, host_bf16(d_out, BLE).data(), out.data(), BLE, TOL_FAST + u16);
    snprintf(name, sizeof name, "scan bf16 activations: forward hs %s", tag);
    check_close(name, from_device(d_hs, HS).data(), hs.data(), HS, TOL_FAST);
    // backward from the CPU's hs (each direction on its own), twice into the same gradients
    cudaCheck(cudaMemcpy(d_hs, hs.data(), HS * sizeof(float), cudaMemcpyHostToDevice));
    std::vector<float> zero_act(BLE, 0.0f);
    bf16 *d_du = dev_bf16(zero_act, oa), *d_ddelta = dev_bf16(zero_act, oa), *d_dz = dev_bf16(zero_act, oa);
    float* d_p[8] = {};
    for (int k : {2, 3, 4, 5, 7}) d_p[k] = to_device(std::vector<float>(sizes[k], 0.0f));
    for (int pass = 1; pass <= 2; pass++) {
        selective_scan_backward_b16_cuda(d_du, d_ddelta, d_p[2], d_p[3], d_p[4], d_p[5], d_dz, d_p[7], d_dout, d_u, d_delta,
                                         d_A_log, d_Bm, d_Cm, d_D, d_z, d_bias, d_hs, B, L, E);
        for (int k = 0; k < 8; k++) {
            bool act = k == 0 || k == 1 || k == 6;
            std::vector<float> got = act ? host_bf16(k == 0 ? d_du : k == 1 ? d_ddelta : d_dz, sizes[k]) : from_device(d_p[k], sizes[k]);
            std::vector<float> want(sizes[k]);
            for (size_t i = 0; i < sizes[k]; i++) want[i] = pass * ref[k][i];
            snprintf(name, sizeof name, "scan bf16 activations: backward %s%s %s", names[k], pass == 2 ? " (added twice)" : "", tag);
            check_close(name, got.data(), want.data(), sizes[k], TOL_FAST + (act ? pass * u16 : 0.0));
        }
    }
    {  // GRAD_SET: du, ddelta, dz stored from NaN == one backward into zeros, bit for bit
        bf16 *s_du = dev_bf16(nan_act, oa), *s_ddelta = dev_bf16(nan_act, oa), *s_dz = dev_bf16(nan_act, oa);
        bf16 *a_du = dev_bf16(zero_act, oa), *a_ddelta = dev_bf16(zero_act, oa), *a_dz = dev_bf16(zero_act, oa);
        for (int k : {2, 3, 4, 5, 7}) cudaCheck(cudaMemset(d_p[k], 0, sizes[k] * sizeof(float)));
        selective_scan_backward_b16_cuda(a_du, a_ddelta, d_p[2], d_p[3], d_p[4], d_p[5], a_dz, d_p[7], d_dout, d_u, d_delta,
                                         d_A_log, d_Bm, d_Cm, d_D, d_z, d_bias, d_hs, B, L, E);
        selective_scan_backward(true, s_du, s_ddelta, d_p[2], d_p[3], d_p[4], d_p[5], s_dz, d_p[7], d_dout, d_u, d_delta,
                                d_A_log, d_Bm, d_Cm, d_D, d_z, d_bias, d_hs, B, L, E, N, GRAD_SET);
        size_t bad = 0;
        for (int k = 0; k < 3; k++) {
            bf16 *a = k == 0 ? a_du : k == 1 ? a_ddelta : a_dz, *g = k == 0 ? s_du : k == 1 ? s_ddelta : s_dz;
            std::vector<uint16_t> ha(BLE), hg(BLE);
            cudaCheck(cudaMemcpy(ha.data(), a, BLE * 2, cudaMemcpyDeviceToHost));
            cudaCheck(cudaMemcpy(hg.data(), g, BLE * 2, cudaMemcpyDeviceToHost));
            for (size_t i = 0; i < BLE; i++) bad += ha[i] != hg[i];
        }
        snprintf(name, sizeof name, "scan bf16 activations: backward GRAD_SET du, ddelta, dz into NaN == into zeros %s", tag);
        report(bad == 0, name, "%zu of %zu differ", bad, 3 * BLE);
        for (bf16* p : {s_du, s_ddelta, s_dz, a_du, a_ddelta, a_dz}) cudaCheck(cudaFree(p - oa));
    }
    for (bf16* p : {d_u, d_delta, d_z, d_dout, d_out, d_du, d_ddelta, d_dz}) cudaCheck(cudaFree(p - oa));
    for (bf16* p : {d_Bm, d_Cm}) cudaCheck(cudaFree(p));
    for (float* p : {d_A_log, d_D, d_bias, d_hs}) cudaCheck(cudaFree(p));
    for (int k : {2, 3, 4, 5, 7}) cudaCheck(cudaFree(d_p[k]));
}

// timing only (no CPU reference at this size)
static void time_shape(int B, int L, int E, int N) {
    size_t BLE = (size_t)B * L * E, BLN = (size_t)B * L * N, EN = (size_t)E * N;
    size_t HS = (size_t)B * scan_n_chunks(L) * E * N;
    Rng r; rng_seed(&r, 1);
    std::vector<float> a = random_vec(BLE, &r), bn = random_vec(BLN, &r), en = random_vec(EN, &r), e1 = random_vec(E, &r);
    float *u = to_device(a), *delta = to_device(a), *z = to_device(a), *dout = to_device(a);
    float *Bm = to_device(bn), *Cm = to_device(bn), *A_log = to_device(en), *D = to_device(e1), *bias = to_device(e1);
    float *out = device_poisoned(BLE), *hs = device_poisoned(HS);
    float *du = to_device(a), *ddelta = to_device(a), *dz = to_device(a), *dBm = to_device(bn), *dCm = to_device(bn);
    float *dA = to_device(en), *dD = to_device(e1), *dbias = to_device(e1);
    cudaEvent_t t0, t1, t2;
    cudaCheck(cudaEventCreate(&t0)); cudaCheck(cudaEventCreate(&t1)); cudaCheck(cudaEventCreate(&t2));
    const int reps = 5;
    selective_scan_forward_cuda(out, hs, u, delta, A_log, Bm, Cm, D, z, bias, B, L, E, N);  // warm up
    selective_scan_backward_cuda(du, ddelta, dA, dBm, dCm, dD, dz, dbias, dout, u, delta, A_log, Bm, Cm, D, z, bias, hs, B, L, E, N);
    cudaCheck(cudaEventRecord(t0));
    for (int i = 0; i < reps; i++) selective_scan_forward_cuda(out, hs, u, delta, A_log, Bm, Cm, D, z, bias, B, L, E, N);
    cudaCheck(cudaEventRecord(t1));
    for (int i = 0; i < reps; i++)
        selective_scan_backward_cuda(du, ddelta, dA, dBm, dCm, dD, dz, dbias, dout, u, delta, A_log, Bm, Cm, D, z, bias, hs, B, L, E, N);
    cudaCheck(cudaEventRecord(t2));
    cudaCheck(cudaEventSynchronize(t2));
    float fwd_ms, bwd_ms;
    cudaCheck(cudaEventElapsedTime(&fwd_ms, t0, t1)); cudaCheck(cudaEventElapsedTime(&bwd_ms, t1, t2));
    printf("timing B=%d L=%d E=%d N=%d: forward %.3f ms, backward %.3f ms\n", B, L, E, N, fwd_ms / reps, bwd_ms / reps);
    float* bufs[] = {u, delta, z, dout, Bm, Cm, A_log, D, bias, out, hs, du, ddelta, dz, dBm, dCm, dA, dD, dbias};
    for (float* p : bufs) cudaCheck(cudaFree(p));
}

int main() {
    // fast kernels (N = 16): E = 5, 37 scalar path; 64, 96, 40 (a partial 32-channel forward block
    // and a partial 16-channel backward block), 128, 1536 vector path; L = 1, 7, 63 (one partial
    // chunk), 65 and 130 (chunks + 1 or 2 steps), 257, 1000, 4096
    test_shape(1, 1, 5, 16, 1);
    test_shape(2, 7, 37, 16, 2);
    test_shape(2, 63, 64, 16, 3);
    test_shape(2, 65, 96, 16, 4);
    test_shape(3, 130, 40, 16, 5);
    test_shape(2, 1000, 1536, 16, 6);
    test_shape(2, 257, 64, 16, 14);    // 8 full tiles + 1 step: the 2-tile-ahead copy ring wraps
    test_shape(1, 4096, 128, 16, 15);  // 128 tiles, 64 chunks: long runs of the ring
    test_shape(2, 130, 40, 16, 16, 2);  // E % 4 == 0 but misaligned activations: per-element path
    // generic kernels: other N, and N = 16 with pointers the fast kernels cannot take
    test_shape(1, 1, 1, 3, 7);
    test_shape(2, 70, 33, 3, 8);     // two chunks, partial last; N < G
    test_shape(2, 129, 21, 8, 9);
    test_shape(1, 65, 10, 32, 10);
    test_shape(2, 70, 9, 40, 11);    // N > 32: two states per lane
    test_shape(1, 64, 5, 64, 12);
    test_shape(2, 70, 36, 16, 13, 1);
    // bf16 activations (the fast kernels only): E = 1536, 64 vector path (8 bf16 a vector), 40 and 96
    // (partial blocks), 36 (E % 8 != 0: per-element path), misaligned; L = 1, 7, 130, 1000
    test_shape_bf16(2, 1000, 1536, 21);
    test_shape_bf16(1, 1, 64, 22);
    test_shape_bf16(2, 7, 40, 23);
    test_shape_bf16(3, 130, 96, 24);
    test_shape_bf16(2, 130, 36, 25);
    test_shape_bf16(2, 65, 64, 26, 1);
    time_shape(8, 1024, 1536, 16);
    return test_summary();
}
