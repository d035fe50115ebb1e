// gpu_generate.cu: generation on the GPU (src/mamba_generate.h) against the CPU reference.
//   - the refusals (unmerged LoRA adapters, a CPU model), checked before CUDA starts
//   - the conv1d+SiLU and selective-scan step kernels (both scan kernels: the cuBLAS path's and
//     the fused step's) against conv1d_step_cpu and dt_proj + selective_scan_step_cpu, several
//     steps in a row (outputs and states)
//   - the decode GEMV against decode_gemv_cpu on random inputs: rows 1, 3, 8, 13, 16; widths
//     37, 100, 900, 1600 (not multiples of 4, of a chunk); unaligned weights and input strides;
//     each fused prologue/epilogue (rmsnorm, embedding rows, conv step, residual add); outputs
//     poisoned with NaN before each launch, columns past OC must stay NaN; the head's argmax
//     keys give the argmax of the GPU's own row. Tolerance 1e-5 norm-wise (fp32, another
//     summation order than the CPU: a few ulps an output)
//   - the sampling kernel against sample_token on random logits (ties included) for many
//     random numbers, temperatures and top-k values
//   - one decoder step == mamba_step's logits (rel err < 1e-5, exact FP32 matmuls) for several
//     tokens in a row, batch 1 and 3 (each row its own tokens; the fused step also 8 and 13),
//     plain and CUDA graph, the fused step (each programmatic-dependent-launch mode) and the
//     cuBLAS step; the graph's logits equal the plain path's bit for bit; a new start() resets
//     the state (and a graph's device positions)
//   - greedy generation: GPU (plain and graph) == CPU mamba_generate == the argmax of the
//     parallel forward (mamba_forward without targets), batch 1 and 4, fused and cuBLAS steps
//   - sampled generation: batch 1 == mamba_generate with the same seed; batch 3 == a CPU
//     loop drawing the same uniforms (step-major, rows in order); graph == plain
//   - layer patterns (M2, A, F and M1 layers; learned positions): one decoder step == mamba_step,
//     greedy == CPU == the parallel forward's argmax, sampled == CPU, batch 1-12, each also as a
//     CUDA graph (attention and learned positions read the position on the device); the refusals
//     (past the learned positions, past the KV caches, attention without max_len, the fused
//     step asked for a pattern)
//   - a merged LoRA model generates what mamba_generate gives with the unmerged adapters
//   - the benchmark helper returns a positive time
// build/gpu_generate --bench: timings on the mamba-130m shape (not a test; see bench_main)
#include "../src/mamba_generate.h"
#include "test_util.h"
#include "mamba_test_util.h"

static LoraConfig lora_cfg(int rank, const char* targets) {
    LoraConfig c; c.rank = rank; c.alpha = 4.0f; c.targets = targets; return c;
}

// a CPU model with perturbed parameters, and the same parameters in a GPU model. jitter:
// jitter_params (every parameter +-0.5, embeddings N(0, 1), dt 0.2..1: logits well spread, so
// greedy choices are far from ties, but the network is far from its trained regime and
// amplifies float rounding); else the standard init plus N(0, 0.05) noise (as gpu_model.cu)
static void build_pair(MambaModel* cpu, MambaModel* gpu, MambaConfig c, int B, int T, uint64_t seed,
                       const LoraConfig& lc = LoraConfig(), bool jitter = true) {
    mamba_build(cpu, c, B, T, false, false, lc);
    mamba_build(gpu, c, B, T, true, false, lc);
    mamba_init_params(cpu, seed);
    if (jitter) jitter_params(cpu, seed + 1);
    else {
        Rng r; rng_seed(&r, seed + 1);
        for (size_t i = 0; i < cpu->params.num_params; i++) cpu->params.params[i] += 0.05f * rng_normal(&r);
    }
    cudaCheck(cudaMemcpy(gpu->params.params, cpu->params.params, cpu->params.num_params * sizeof(float), cudaMemcpyHostToDevice));
}

static std::vector<int> random_tokens(Rng* r, int n, int V) {
    std::vector<int> t(n);
    for (int& x : t) x = rng_u32(r) % V;
    return t;
}

static std::vector<int> ints_from_device(const int* d, size_t n) {
    std::vector<int> h(n);
    cudaCheck(cudaDeviceSynchronize());
    cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost));
    return h;
}

// ---------------------------------------------------------------------------
// the step kernels alone

static void test_conv_step(int B, int E, int K) {
    Rng r; rng_seed(&r, 100 + K);
    int ldx = 2 * E, steps = 5;
    std::vector<float> w = random_vec((size_t)E * K, &r), bias = random_vec(E, &r);
    std::vector<float> state_c((size_t)B * E * (K - 1));
    fill_uniform(state_c.data(), state_c.size(), &r, -1, 1);  // a state that is not zero
    float *gw = to_device(w), *gb = to_device(bias), *gstate = to_device(state_c.data(), state_c.size());
    float* gu = device_poisoned((size_t)B * E);
    double worst_u = 0, worst_s = 0;
    for (int s = 0; s < steps; s++) {
        std::vector<float> xz = random_vec((size_t)B * ldx, &r, -2, 2);  // the z half is never read
        std::vector<float> x((size_t)B * E), u((size_t)B * E);
        for (int b = 0; b < B; b++)
            for (int e = 0; e < E; e++) x[(size_t)b * E + e] = xz[(size_t)b * ldx + e];
        conv1d_step_cpu(u.data(), state_c.data(), x.data(), w.data(), bias.data(), B, E, K);
        silu_forward_cpu(u.data(), u.data(), u.size());
        float* gxz = to_device(xz);
        cudaCheck(cudaMemset(gu, 0xFF, (size_t)B * E * sizeof(float)));
        decode_conv1d_silu_step_kernel<<<ceil_div(B * E, 256), 256>>>(gu, gstate, gxz, ldx, gw, gb, B, E, K);
        cudaCheckLaunch();
        std::vector<float> hu = from_device(gu, (size_t)B * E), hs = from_device(gstate, state_c.size());
        worst_u = std::max(worst_u, rel_err(hu.data(), u.data(), u.size()));
        if (K > 1) worst_s = std::max(worst_s, rel_err(hs.data(), state_c.data(), state_c.size()));
        cudaCheck(cudaFree(gxz));
    }
    char name[128];
    snprintf(name, sizeof name, "conv1d+silu step B=%d E=%d K=%d, %d steps: output", B, E, K, steps);
    report(worst_u < 1e-6, name, "worst rel err %.3e", worst_u);
    snprintf(name, sizeof name, "conv1d+silu step B=%d E=%d K=%d, %d steps: state", B, E, K, steps);
    report(worst_s == 0.0, name, "worst rel err %.3e (the state is a copy: expected exact)", worst_s);
    for (float* p : {gw, gb, gstate, gu}) cudaCheck(cudaFree(p));
}

// the scan step kernel computes delta = dt_low @ dt_proj_w^T itself: the CPU side runs
// linear_forward_cpu for it, then selective_scan_step_cpu
// LW lanes per channel (decode_scan_step_kernel<LW>, launched plainly: its waits are no-ops);
// pdl: 0 (the cuBLAS path's loads) or PDL_AFTER_WAIT (the fused path's, through L2)
static void test_scan_step(int B, int E, int N, int R, int LW, int pdl) {
    Rng r; rng_seed(&r, 200 + N);
    int XD = R + 2 * N, steps = 5;
    std::vector<float> A_log = random_vec((size_t)E * N, &r, -1, 1.5f), Dp = random_vec(E, &r), dtb = random_vec(E, &r, -2, 0.5f);
    std::vector<float> dtw = random_vec((size_t)E * R, &r, -0.5f, 0.5f);
    std::vector<float> h_c((size_t)B * E * N);
    fill_uniform(h_c.data(), h_c.size(), &r, -1, 1);
    float *gA = to_device(A_log), *gD = to_device(Dp), *gdtb = to_device(dtb), *gdtw = to_device(dtw);
    float* gh = to_device(h_c.data(), h_c.size());
    float* gy = device_poisoned((size_t)B * E);
    double worst_y = 0, worst_h = 0;
    for (int s = 0; s < steps; s++) {
        std::vector<float> u = random_vec((size_t)B * E, &r, -2, 2);
        std::vector<float> xdbl = random_vec((size_t)B * XD, &r, -1, 1), xz = random_vec((size_t)B * 2 * E, &r, -3, 3);
        std::vector<float> dt_low((size_t)B * R), delta((size_t)B * E);
        std::vector<float> Bm((size_t)B * N), Cm((size_t)B * N), z((size_t)B * E), y((size_t)B * E);
        for (int b = 0; b < B; b++) {
            for (int q = 0; q < R; q++) dt_low[(size_t)b * R + q] = xdbl[(size_t)b * XD + q];
            for (int n = 0; n < N; n++) {
                Bm[(size_t)b * N + n] = xdbl[(size_t)b * XD + R + n];
                Cm[(size_t)b * N + n] = xdbl[(size_t)b * XD + R + N + n];
            }
            for (int e = 0; e < E; e++) z[(size_t)b * E + e] = xz[(size_t)b * 2 * E + E + e];
        }
        linear_forward_cpu(delta.data(), dt_low.data(), dtw.data(), nullptr, B, R, E);
        selective_scan_step_cpu(y.data(), h_c.data(), u.data(), delta.data(), A_log.data(), Bm.data(), Cm.data(), Dp.data(),
                                z.data(), dtb.data(), B, E, N);
        float *gu = to_device(u), *gxdbl = to_device(xdbl), *gxz = to_device(xz);
        cudaCheck(cudaMemset(gy, 0xFF, (size_t)B * E * sizeof(float)));
        auto kernel = LW == 4 ? decode_scan_step_kernel<4> : LW == 16 ? decode_scan_step_kernel<16> : decode_scan_step_kernel<32>;
        kernel<<<ceil_div(B * E, 256 / LW), 256>>>(gy, gh, gu, gxdbl, XD, R, gdtw, gdtb, gA, gD, gxz + E, 2 * E, B, E, N, pdl);
        cudaCheckLaunch();
        std::vector<float> hy = from_device(gy, y.size()), hh = from_device(gh, h_c.size());
        worst_y = std::max(worst_y, rel_err(hy.data(), y.data(), y.size()));
        worst_h = std::max(worst_h, rel_err(hh.data(), h_c.data(), h_c.size()));
        for (float* p : {gu, gxdbl, gxz}) cudaCheck(cudaFree(p));
    }
    char name[128];
    snprintf(name, sizeof name, "scan step (+dt_proj), %d lanes a channel, pdl %d, B=%d E=%d N=%d R=%d, %d steps: output", LW, pdl, B, E,
             N, R, steps);
    report(worst_y < 1e-5, name, "worst rel err %.3e", worst_y);
    snprintf(name, sizeof name, "scan step (+dt_proj), %d lanes a channel, pdl %d, B=%d E=%d N=%d R=%d, %d steps: state", LW, pdl, B, E,
             N, R, steps);
    report(worst_h < 1e-5, name, "worst rel err %.3e", worst_h);
    for (float* p : {gA, gD, gdtb, gdtw, gh, gy}) cudaCheck(cudaFree(p));
}

// ---------------------------------------------------------------------------
// the decode GEMV against decode_gemv_cpu (mamba_step's functions) on random inputs

enum GemvMode { GEMV_PLAIN, GEMV_RESIDUAL, GEMV_NORM, GEMV_IN_PROJ };
static const char* const GEMV_MODE_NAMES[] = {"plain", "residual (beta 1)", "rmsnorm prologue", "in_proj (embed + norm + conv)"};

// Tolerance: fp32 throughout, but the GPU sums each dot product in another order (per lane, then
// a butterfly over the lanes) than linear_forward_cpu, and rsqrtf vs 1/sqrtf in the norm: each
// output carries a few ulps (relative error ~ 2^-24 sqrt(IC)), so 1e-5 norm-wise over the
// outputs; the conv state is a copy of the product (same tolerance), u has silu on top.
// misalign: the weights start one float past a 16-byte boundary and the input rows have a
// stride IC + 1 (the scalar load paths); else 16-byte aligned rows where IC allows.
// bf16w: the GPU reads a bf16 copy of W (DecodeGemv::W16; misaligned: one bf16 past an 8-byte
// boundary) and its fp32 W is NaN, so a launch that read W would fail; the CPU reads W rounded to
// bf16 (the same values), so the tolerance is the fp32 one
static void test_gemv(int rows, int IC, int OC, GemvMode mode, bool misalign, bool bf16w = false) {
    Rng r; rng_seed(&r, 500 + rows * 7 + IC * 3 + OC + 101 * mode + misalign);
    const int V = 23, K = 4, steps = mode == GEMV_IN_PROJ ? 3 : 1;
    const int conv_E = mode == GEMV_IN_PROJ ? OC / 2 : 0;
    const int ldi = misalign ? IC + 1 : IC, ldo = OC + 3;  // ldo: 3 columns past OC that must stay NaN
    const int in_rows = mode == GEMV_IN_PROJ ? V : rows;  // in_proj: the rows are embedding rows
    std::vector<float> W = random_vec((size_t)OC * IC, &r), inp = random_vec((size_t)in_rows * ldi, &r, -2, 2);
    std::vector<bf16> W16(W.size());
    if (bf16w)
        for (size_t i = 0; i < W.size(); i++) { W16[i] = from_f32<bf16>(W[i]); W[i] = to_f32(W16[i]); }
    std::vector<float> norm_w = random_vec(IC, &r, 0.5f, 1.5f), conv_w = random_vec((size_t)std::max(conv_E, 1) * K, &r);
    std::vector<float> conv_b = random_vec(std::max(conv_E, 1), &r), state((size_t)rows * std::max(conv_E, 1) * (K - 1));
    fill_uniform(state.data(), state.size(), &r, -1, 1);
    std::vector<float> out((size_t)rows * ldo, NAN);
    if (mode == GEMV_RESIDUAL) {  // the residual stream: read, then added to (the 3 columns past OC stay NaN)
        fill_uniform(out.data(), out.size(), &r, -1, 1);
        for (int row = 0; row < rows; row++)
            for (int o = OC; o < ldo; o++) out[(size_t)row * ldo + o] = NAN;
    }
    std::vector<int> tokens(rows);
    for (int& t : tokens) t = rng_u32(&r) % V;
    // device copies (the weights at an odd float offset when misaligned)
    float* gWbase; cudaCheck(cudaMalloc(&gWbase, (W.size() + 4) * sizeof(float)));
    float* gW = gWbase + (misalign ? 1 : 0);
    if (bf16w) cudaCheck(cudaMemset(gWbase, 0xFF, (W.size() + 4) * sizeof(float)));  // NaN: the bf16 path must not read it
    else cudaCheck(cudaMemcpy(gW, W.data(), W.size() * sizeof(float), cudaMemcpyHostToDevice));
    bf16 *gW16base = nullptr, *gW16 = nullptr;
    if (bf16w) {
        cudaCheck(cudaMalloc(&gW16base, (W.size() + 8) * sizeof(bf16)));
        gW16 = gW16base + (misalign ? 1 : 0);
        cudaCheck(cudaMemcpy(gW16, W16.data(), W16.size() * sizeof(bf16), cudaMemcpyHostToDevice));
    }
    float *ginp = to_device(inp), *gnorm = to_device(norm_w), *gcw = to_device(conv_w), *gcb = to_device(conv_b);
    float *gstate = to_device(state), *gout = to_device(out);
    float *gu = device_poisoned((size_t)rows * std::max(conv_E, 1)), *gemb = device_poisoned((size_t)rows * IC);
    int* gtok; cudaCheck(cudaMalloc(&gtok, rows * sizeof(int)));
    unsigned long long* gkeys = nullptr;  // the argmax keys (modes without the conv epilogue)
    cudaCheck(cudaMemcpy(gtok, tokens.data(), rows * sizeof(int), cudaMemcpyHostToDevice));
    std::vector<float> u((size_t)rows * std::max(conv_E, 1)), emb((size_t)rows * IC);
    DecodeGemv c = {}, g = {};  // the CPU's and the GPU's arguments
    c.out = out.data(); c.ldo = ldo; c.inp = inp.data(); c.ldi = ldi; c.W = W.data(); c.rows = rows; c.IC = IC; c.OC = OC;
    c.beta = mode == GEMV_RESIDUAL ? 1.0f : 0.0f;
    if (mode == GEMV_NORM || mode == GEMV_IN_PROJ) c.norm_w = norm_w.data();
    if (mode == GEMV_IN_PROJ) {
        c.tokens = tokens.data(); c.emb_out = emb.data();
        c.conv_E = conv_E; c.conv_K = K; c.conv_state = state.data(); c.conv_w = conv_w.data(); c.conv_b = conv_b.data(); c.u = conv_cols(u.data(), conv_E);
    }
    g = c;
    g.out = gout; g.inp = ginp; g.W = gW; g.W16 = gW16; g.norm_w = c.norm_w ? gnorm : nullptr; g.tokens = c.tokens ? gtok : nullptr;
    g.emb_out = c.emb_out ? gemb : nullptr; g.conv_state = c.conv_E ? gstate : nullptr; g.conv_w = c.conv_E ? gcw : nullptr;
    g.conv_b = c.conv_E ? gcb : nullptr; g.u = conv_cols(c.conv_E ? gu : nullptr, conv_E);
    const int nkeys = decode_gemv_blocks(g);
    if (mode != GEMV_IN_PROJ) {
        cudaCheck(cudaMalloc(&gkeys, (size_t)rows * nkeys * sizeof(unsigned long long)));
        cudaCheck(cudaMemset(gkeys, 0xFF, (size_t)rows * nkeys * sizeof(unsigned long long)));  // poisoned: all-ones keys win any max
        g.argmax_keys = gkeys;
    }
    double worst = 0, worst_u = 0, worst_s = 0;
    bool emb_exact = true, pad_nan = true, keys_ok = true;
    for (int s = 0; s < steps; s++) {
        if (mode != GEMV_RESIDUAL) {  // poison every output before the launch
            std::fill(out.begin(), out.end(), NAN);
            cudaCheck(cudaMemset(gout, 0xFF, out.size() * sizeof(float)));
        }
        cudaCheck(cudaMemset(gu, 0xFF, u.size() * sizeof(float)));
        cudaCheck(cudaMemset(gemb, 0xFF, emb.size() * sizeof(float)));
        decode_gemv_cpu(c);
        decode_gemv_cuda(g);
        cudaCheckLaunch();
        std::vector<float> hout = from_device(gout, out.size());
        if (gkeys) {  // the largest key over the blocks is the argmax of the GPU's own row (lowest index among ties)
            std::vector<unsigned long long> hk((size_t)rows * nkeys);
            cudaCheck(cudaMemcpy(hk.data(), gkeys, hk.size() * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
            for (int row = 0; row < rows; row++) {
                unsigned long long best = 0;
                for (int q = 0; q < nkeys; q++) best = std::max(best, hk[(size_t)row * nkeys + q]);
                int want = argmax_token(hout.data() + (size_t)row * ldo, OC);
                keys_ok &= (int)(0xFFFFFFFFu - (unsigned int)(best & 0xFFFFFFFFull)) == want;
            }
        }
        for (int row = 0; row < rows; row++) {
            const float* gr = hout.data() + (size_t)row * ldo + conv_E;
            worst = std::max(worst, rel_err(gr, out.data() + (size_t)row * ldo + conv_E, OC - conv_E));
            for (int o = OC; o < ldo; o++) pad_nan &= std::isnan(hout[(size_t)row * ldo + o]);
            if (mode == GEMV_RESIDUAL) memcpy(out.data() + (size_t)row * ldo, hout.data() + (size_t)row * ldo, ldo * sizeof(float));
        }
        if (mode == GEMV_RESIDUAL) continue;
        if (mode == GEMV_IN_PROJ) {
            std::vector<float> hu = from_device(gu, u.size()), hs = from_device(gstate, state.size()), he = from_device(gemb, emb.size());
            worst_u = std::max(worst_u, rel_err(hu.data(), u.data(), u.size()));
            worst_s = std::max(worst_s, rel_err(hs.data(), state.data(), state.size()));
            emb_exact &= memcmp(he.data(), emb.data(), emb.size() * sizeof(float)) == 0;
            cudaCheck(cudaMemcpy(gstate, state.data(), state.size() * sizeof(float), cudaMemcpyHostToDevice));  // go on from the CPU's
        }
    }
    char name[200];
    snprintf(name, sizeof name, "decode GEMV %s rows=%d IC=%d OC=%d%s%s: == decode_gemv_cpu", GEMV_MODE_NAMES[mode], rows, IC, OC,
             misalign ? " (unaligned W, input stride IC+1)" : "", bf16w ? " bf16 weights" : "");
    const double tol = 1e-5;
    report(worst < tol && pad_nan && keys_ok, name, "worst rel err %.3e (tol %.0e)%s%s", worst, tol, pad_nan ? "" : "; wrote past OC",
           keys_ok ? "" : "; the argmax keys miss the row's argmax");
    if (mode == GEMV_IN_PROJ) {
        snprintf(name, sizeof name, "decode GEMV in_proj rows=%d IC=%d E=%d%s%s, %d steps: conv u, state, embedded rows", rows, IC, conv_E,
                 misalign ? " (unaligned)" : "", bf16w ? " bf16 weights" : "", steps);
        report(worst_u < tol && worst_s < tol && emb_exact, name, "u %.3e state %.3e (tol %.0e), embedded rows %s", worst_u, worst_s, tol,
               emb_exact ? "exact" : "differ");
    }
    for (float* p : {gWbase, ginp, gnorm, gcw, gcb, gstate, gout, gu, gemb}) cudaCheck(cudaFree(p));
    cudaCheck(cudaFree(gtok));
    if (gkeys) cudaCheck(cudaFree(gkeys));
    if (gW16base) cudaCheck(cudaFree(gW16base));
}

// ---------------------------------------------------------------------------
// the sampling kernel against sample_token

enum LogitKind { LOGITS_NORMAL, LOGITS_TIES, LOGITS_EQUAL, LOGITS_SIGNED_ZERO };

static void fill_logits(float* x, int V, LogitKind kind, Rng* r) {
    for (int i = 0; i < V; i++) {
        switch (kind) {
            case LOGITS_NORMAL: x[i] = 3.0f * rng_normal(r); break;
            case LOGITS_TIES: x[i] = (float)(rng_u32(r) % 4); break;        // many exact ties
            case LOGITS_EQUAL: x[i] = 1.5f; break;                           // all tied
            case LOGITS_SIGNED_ZERO: {                                       // -0 and +0 tie, a few negatives
                uint32_t k = rng_u32(r) % 3;
                x[i] = k == 0 ? 0.0f : k == 1 ? -0.0f : -1.0f - rng_uniform(r);
                break;
            }
        }
    }
}

static void test_sampler(int V, LogitKind kind, const char* kind_name) {
    const int rows = 48;
    Rng r; rng_seed(&r, 300 + V + 17 * kind);
    std::vector<float> logits((size_t)rows * V);
    for (int b = 0; b < rows; b++) fill_logits(logits.data() + (size_t)b * V, V, kind, &r);
    float* glogits = to_device(logits);
    int* gout = (int*)device_poisoned(rows);
    int* gout2 = (int*)device_poisoned(rows);
    float* guni = device_poisoned(rows);
    const float temps[] = {0.0f, 1e-30f, 0.3f, 1.0f, 2.5f};
    std::vector<int> ks = {0, 1, 3, 40, V - 1, V, V + 5};
    if (V > SAMPLE_SMALL_K + 1) { ks.push_back(SAMPLE_SMALL_K); ks.push_back(SAMPLE_SMALL_K + 1); }  // both sides of the small-k path
    int draws = 0, mismatches = 0, copy_bad = 0;
    char first[256] = "";
    for (float temp : temps)
        for (int k : ks) {
            if (k < 0) continue;
            std::vector<float> u(rows);
            for (int b = 0; b < rows; b++) u[b] = rng_uniform(&r);
            u[0] = 0.0f;                         // the edges of [0, 1)
            u[1] = 1.0f - 1.0f / 16777216.0f;
            cudaCheck(cudaMemcpy(guni, u.data(), rows * sizeof(float), cudaMemcpyHostToDevice));
            cudaCheck(cudaMemset(gout, 0xFF, rows * sizeof(int)));
            cudaCheck(cudaMemset(gout2, 0xFF, rows * sizeof(int)));
            sample_rows_cuda(gout, gout2, glogits, rows, V, temp, k, guni);
            std::vector<int> got = ints_from_device(gout, rows), got2 = ints_from_device(gout2, rows);
            for (int b = 0; b < rows; b++) {
                int want = sample_token(logits.data() + (size_t)b * V, V, temp, k, u[b]);
                draws++;
                if (got[b] != want) {
                    if (mismatches++ == 0)
                        snprintf(first, sizeof first, "first: row %d t=%g top_k=%d u=%.9g: got %d, sample_token %d", b, temp, k,
                                 u[b], got[b], want);
                }
                if (got2[b] != got[b]) copy_bad++;
            }
        }
    char name[128];
    snprintf(name, sizeof name, "sampler V=%d %s logits: %d draws equal sample_token's", V, kind_name, draws);
    report(mismatches == 0, name, "%d mismatches; %s", mismatches, first);
    snprintf(name, sizeof name, "sampler V=%d %s logits: the second output holds the same tokens", V, kind_name);
    report(copy_bad == 0, name, "%d differ", copy_bad);
    cudaCheck(cudaFree(glogits)); cudaCheck(cudaFree(gout)); cudaCheck(cudaFree(gout2)); cudaCheck(cudaFree(guni));
}

// ---------------------------------------------------------------------------
// the decoder step against mamba_step

// tol: 1e-5 for the standard-init model; the jittered one amplifies rounding (the diagnostic
// line prints how far the GPU's own parallel forward is from the CPU step on it, for scale)
static std::string path_name(DecodePath p, DecodePdl pdl = DECODE_PDL_DEFAULT) {
    if (p == DECODE_BLAS) return "cuBLAS";
    std::string s = p == DECODE_FUSED ? "fused" : "auto";
    return s + (pdl == PDL_OFF ? "" : pdl == PDL_EARLY ? "+PDL(early)" : "+PDL");
}

// the weights of both models rounded to bf16 (so the decoder's bf16 copies hold exactly the
// values the CPU step reads)
static void round_params_bf16(MambaModel* cpu, MambaModel* gpu) {
    float* p = cpu->params.params;
    for (size_t i = 0; i < cpu->params.num_params; i++) p[i] = to_f32(from_f32<bf16>(p[i]));
    cudaCheck(cudaMemcpy(gpu->params.params, p, cpu->params.num_params * sizeof(float), cudaMemcpyHostToDevice));
}

// Mamba-2's in_proj as the decode GEMV with the step's prologue in its epilogue (decoder_m2_in_proj):
// against the composition mamba2_step runs on the CPU (rmsnorm, linear, mamba2_step_prologue_cpu),
// every output poisoned before the launch, the conv state carried over 3 steps, rows 1..13
static void test_gemv_m2(int rows, int D, int E, int GN, int H, int K) {
    Rng r; rng_seed(&r, 900 + rows * 13 + D + E + GN + H + K);
    const int C = E + 2 * GN, OC = E + C + H;
    char shape[96]; snprintf(shape, sizeof shape, "rows %d D %d E %d GN %d H %d K %d", rows, D, E, GN, H, K);
    std::vector<float> W = random_vec((size_t)OC * D, &r), norm_w = random_vec(D, &r, 0.5f, 1.5f);
    std::vector<float> conv_w = random_vec((size_t)C * K, &r), conv_b = random_vec(C, &r), dt_bias = random_vec(H, &r, -3, 0);
    std::vector<float> A_log = random_vec(H, &r, 0, 2.5f), state((size_t)rows * C * (K - 1));
    fill_uniform(state.data(), state.size(), &r, -1, 1);
    float *gW = to_device(W), *gnorm = to_device(norm_w), *gcw = to_device(conv_w), *gcb = to_device(conv_b);
    float *gdtb = to_device(dt_bias), *gAlog = to_device(A_log), *gstate = to_device(state);
    float *gin = device_poisoned((size_t)rows * D), *gz = device_poisoned((size_t)rows * E), *gx = device_poisoned((size_t)rows * E);
    float *gB = device_poisoned((size_t)rows * GN), *gC = device_poisoned((size_t)rows * GN), *gdt = device_poisoned((size_t)rows * H);
    float* gA = device_poisoned(H);
    double worst = 0;
    for (int step = 0; step < 3; step++) {
        std::vector<float> inp = random_vec((size_t)rows * D, &r, -2, 2);
        cudaCheck(cudaMemcpy(gin, inp.data(), inp.size() * sizeof(float), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemset(gz, 0xFF, (size_t)rows * E * 4)); cudaCheck(cudaMemset(gx, 0xFF, (size_t)rows * E * 4));
        cudaCheck(cudaMemset(gB, 0xFF, (size_t)rows * GN * 4)); cudaCheck(cudaMemset(gC, 0xFF, (size_t)rows * GN * 4));
        cudaCheck(cudaMemset(gdt, 0xFF, (size_t)rows * H * 4)); cudaCheck(cudaMemset(gA, 0xFF, H * 4));
        // the CPU: the functions mamba2_step composes
        std::vector<float> xn((size_t)rows * D), rstd(rows), proj((size_t)rows * OC), z((size_t)rows * E), x((size_t)rows * E);
        std::vector<float> Bm((size_t)rows * GN), Cm((size_t)rows * GN), dt((size_t)rows * H), A(H);
        rmsnorm_forward_cpu(xn.data(), rstd.data(), inp.data(), norm_w.data(), rows, D);
        linear_forward_cpu(proj.data(), xn.data(), W.data(), nullptr, rows, D, OC);
        mamba2_step_prologue_cpu(z.data(), x.data(), Bm.data(), Cm.data(), dt.data(), A.data(), state.data(), proj.data(),
                                 conv_w.data(), conv_b.data(), dt_bias.data(), A_log.data(), rows, E, GN, H, K);
        DecodeGemv a = {};
        a.out = gz; a.ldo = E; a.inp = gin; a.ldi = D; a.W = gW; a.rows = rows; a.IC = D; a.OC = OC; a.norm_w = gnorm;
        a.conv_E = C; a.conv_K = K; a.conv_begin = E; a.conv_state = gstate; a.conv_w = gcw; a.conv_b = gcb;
        a.u = ConvCols<float>{gx, gB, gC, E, GN};
        a.dt_n = H; a.dt_begin = E + C; a.dt_bias = gdtb; a.dt_out = gdt; a.A_log = gAlog; a.A_out = gA;
        decode_gemv_cuda(a);
        cudaCheckLaunch();
        for (double e : {rel_err(from_device(gz, z.size()).data(), z.data(), z.size()),
                         rel_err(from_device(gx, x.size()).data(), x.data(), x.size()),
                         rel_err(from_device(gB, Bm.size()).data(), Bm.data(), Bm.size()),
                         rel_err(from_device(gC, Cm.size()).data(), Cm.data(), Cm.size()),
                         rel_err(from_device(gdt, dt.size()).data(), dt.data(), dt.size()),
                         rel_err(from_device(gA, A.size()).data(), A.data(), A.size()),
                         rel_err(from_device(gstate, state.size()).data(), state.data(), state.size())})
            worst = std::isnan(e) || std::isnan(worst) ? NAN : std::max(worst, e);  // an unwritten (NaN) output fails
    }
    char name[160];
    snprintf(name, sizeof name, "decode GEMV, Mamba-2 in_proj with the step prologue: z, x, B, C, dt, A, conv state == CPU, %s", shape);
    report(worst < 1e-5, name, "worst rel err %.3e", worst);
    for (float* p : {gW, gnorm, gcw, gcb, gdtb, gAlog, gstate, gin, gz, gx, gB, gC, gdt, gA}) cudaFree(p);
}

// bf16w: the decoders read bf16 weights; representable: the models' weights are rounded to bf16
// first (then the logits must equal the CPU step's to fp32 rounding: tol as fp32), else the CPU
// step reads the unrounded fp32 weights (the distance bf16 weights make: the caller's tol)
static void test_step_logits(MambaConfig c, int B, const char* label, bool jitter, double tol, DecodePath path,
                             DecodePdl pdl = DECODE_PDL_DEFAULT, bool bf16w = false, bool representable = false) {
    const std::string pn = path_name(path, pdl) + (bf16w ? (representable ? " bf16 weights (representable)" : " bf16 weights") : "");
    const int steps = 6;
    MambaModel cpu, gpu;
    build_pair(&cpu, &gpu, c, B, steps, 21, LoraConfig(), jitter);
    if (representable) round_params_bf16(&cpu, &gpu);
    int V = c.vocab_size;
    Rng r; rng_seed(&r, 22);
    std::vector<std::vector<int>> toks(B);
    for (int b = 0; b < B; b++) toks[b] = random_tokens(&r, steps, V);
    // CPU: one recurrent state per row
    std::vector<MambaStepState> st(B);
    for (int b = 0; b < B; b++) mamba_step_init(&st[b], &cpu, cpu.params.params);
    MambaGpuDecoder plain, graph;  // one row more than used: rows < max_batch works; KV caches of `steps` positions
    mamba_decoder_init(&plain, &gpu, B + 1, false, path, pdl, bf16w, steps);
    mamba_decoder_init(&graph, &gpu, B + 1, true, path, pdl, bf16w, steps);
    mamba_decoder_start(&plain, B);
    mamba_decoder_start(&graph, B);
    double worst = 0;
    bool graph_same = true;
    std::vector<float> first_logits;
    std::vector<float> ref((size_t)B * V), cpu_all((size_t)B * steps * V);  // cpu_all: (B, steps, V)
    for (int s = 0; s < steps; s++) {
        std::vector<int> in(B);
        for (int b = 0; b < B; b++) {
            in[b] = toks[b][s];
            mamba_step(&st[b], in[b], ref.data() + (size_t)b * V);
            memcpy(cpu_all.data() + ((size_t)b * steps + s) * V, ref.data() + (size_t)b * V, V * sizeof(float));
        }
        mamba_decoder_feed(&plain, in.data());
        mamba_decoder_feed(&graph, in.data());
        std::vector<float> gp = from_device(plain.logits, (size_t)B * V), gg = from_device(graph.logits, (size_t)B * V);
        for (int b = 0; b < B; b++) worst = std::max(worst, rel_err(gp.data() + (size_t)b * V, ref.data() + (size_t)b * V, V));
        if (memcmp(gp.data(), gg.data(), gp.size() * sizeof(float)) != 0) graph_same = false;
        if (s == 0) first_logits = gp;
    }
    // for scale: the GPU parallel forward (the training path) on the same tokens against the CPU step
    std::vector<int> seq((size_t)B * steps);
    for (int b = 0; b < B; b++)
        for (int s = 0; s < steps; s++) seq[(size_t)b * steps + s] = toks[b][s];
    mamba_forward(&gpu, seq.data(), nullptr, B, steps);
    std::vector<float> fwd = from_device(gpu.logits, (size_t)B * steps * V);
    double fwd_worst = 0;
    for (size_t row = 0; row < (size_t)B * steps; row++)
        fwd_worst = std::max(fwd_worst, rel_err(fwd.data() + row * V, cpu_all.data() + row * V, V));
    printf("  %s%s batch %d %s path: decoder vs CPU step %.2e, GPU parallel forward vs CPU step %.2e (worst row)\n", label,
           jitter ? " jittered" : "", B, pn.c_str(), worst, fwd_worst);
    char name[160];
    snprintf(name, sizeof name, "decoder step %s%s batch %d %s: logits == mamba_step for %d tokens in a row", label,
             jitter ? " (jittered)" : "", B, pn.c_str(), steps);
    report(worst < tol, name, "worst rel err %.3e > %.0e", worst, tol);
    snprintf(name, sizeof name, "decoder step %s batch %d %s: CUDA graph logits == plain, bit for bit", label, B, pn.c_str());
    report(graph.use_graph && graph_same, name, graph.use_graph ? "they differ" : "no graph was captured");
    // a new batch starts from zero states: the first step's logits again
    mamba_decoder_start(&plain, B);
    std::vector<int> in0(B);
    for (int b = 0; b < B; b++) in0[b] = toks[b][0];
    mamba_decoder_feed(&plain, in0.data());
    std::vector<float> again = from_device(plain.logits, (size_t)B * V);
    snprintf(name, sizeof name, "decoder step %s batch %d %s: start() resets the states", label, B, pn.c_str());
    report(memcmp(again.data(), first_logits.data(), again.size() * sizeof(float)) == 0, name, "first-step logits differ");
    // ... the graph's too (its kernels read the positions from the device: start() must reset them)
    mamba_decoder_start(&graph, B);
    mamba_decoder_feed(&graph, in0.data());
    again = from_device(graph.logits, (size_t)B * V);
    snprintf(name, sizeof name, "decoder step %s batch %d %s: start() resets the states and positions of the CUDA graph", label,
             B, pn.c_str());
    report(memcmp(again.data(), first_logits.data(), again.size() * sizeof(float)) == 0, name, "first-step logits differ");
    mamba_decoder_free(&plain); mamba_decoder_free(&graph);
    mamba_free(&cpu); mamba_free(&gpu);
}

// ---------------------------------------------------------------------------
// generation

// "" when equal, else where they first differ
static std::string diff_tokens(const std::vector<int>& a, const std::vector<int>& b) {
    if (a == b) return "";
    size_t i = 0;
    while (i < a.size() && i < b.size() && a[i] == b[i]) i++;
    char buf[128];
    snprintf(buf, sizeof buf, "first difference at token %zu of %zu/%zu: %d vs %d", i, a.size(), b.size(),
             i < a.size() ? a[i] : -1, i < b.size() ? b[i] : -1);
    return buf;
}

// the gap between the two largest logits (how close a greedy choice was)
static float top2_gap(const float* x, int V) {
    float a = -INFINITY, b = -INFINITY;
    for (int i = 0; i < V; i++) {
        if (x[i] > a) { b = a; a = x[i]; }
        else if (x[i] > b) b = x[i];
    }
    return a - b;
}

// CPU batch generation with generate's random-number contract: one Rng, for each new token
// one uniform per row, rows in order (at batch 1: mamba_generate)
static std::vector<std::vector<int>> cpu_generate_batch(const MambaModel* cpu, const std::vector<std::vector<int>>& prompts, int n,
                                                        float temperature, int top_k, uint64_t seed) {
    int B = (int)prompts.size(), V = cpu->cfg.vocab_size;
    std::vector<MambaStepState> st(B);
    std::vector<std::vector<float>> logits(B, std::vector<float>(V));
    for (int b = 0; b < B; b++) {
        mamba_step_init(&st[b], cpu, cpu->params.params);
        for (int t : prompts[b]) mamba_step(&st[b], t, logits[b].data());
    }
    Rng rng; rng_seed(&rng, seed);
    std::vector<std::vector<int>> out(B);
    for (int i = 0; i < n; i++)
        for (int b = 0; b < B; b++) {
            int t = sample_token(logits[b].data(), V, temperature, top_k, rng_uniform(&rng));
            out[b].push_back(t);
            if (i + 1 < n) mamba_step(&st[b], t, logits[b].data());
        }
    return out;
}

// bf16w: bf16 weights in the decoder, the models' weights rounded to bf16 first (the CPU reads the same values)
static void test_greedy(MambaConfig c, int B, const char* label, DecodePath path = DECODE_AUTO, bool bf16w = false) {
    const int P = 5, n = 24, T = P + n - 1;
    MambaModel cpu, gpu;
    build_pair(&cpu, &gpu, c, B, T, 31, LoraConfig(), mamba_is_pure_m1(c));  // layer patterns: the standard init + noise
    if (bf16w) round_params_bf16(&cpu, &gpu);
    int V = c.vocab_size;
    Rng r; rng_seed(&r, 32 + B);
    std::vector<std::vector<int>> prompts(B);
    for (int b = 0; b < B; b++) prompts[b] = random_tokens(&r, P, V);
    auto plain = mamba_generate_gpu(&gpu, prompts, n, 0.0f, 0, 7, false, path, bf16w);
    auto graph = mamba_generate_gpu(&gpu, prompts, n, 0.0f, 0, 7, true, path, bf16w);
    // the parallel forward over prompt + generated tokens (teacher forcing, GPU)
    std::vector<int> seq((size_t)B * T);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) seq[(size_t)b * T + t] = t < P ? prompts[b][t] : plain[b][t - P];
    mamba_forward(&gpu, seq.data(), nullptr, B, T);
    std::vector<float> fl = from_device(gpu.logits, (size_t)B * T * V);
    char name[160];
    for (int b = 0; b < B; b++) {
        std::vector<int> cpu_tokens = mamba_generate(&cpu, prompts[b], n, 0.0f, 0, 7);
        std::vector<int> fwd(n);
        float min_gap = INFINITY;
        for (int i = 0; i < n; i++) {
            const float* row = fl.data() + ((size_t)b * T + P - 1 + i) * V;
            fwd[i] = argmax_token(row, V);
            min_gap = std::min(min_gap, top2_gap(row, V));
        }
        std::string pn = path_name(path) + (bf16w ? " bf16 weights" : "");
        snprintf(name, sizeof name, "greedy %s batch %d %s row %d: GPU == CPU mamba_generate (%d tokens)", label, B, pn.c_str(), b, n);
        report(plain[b] == cpu_tokens, name, "%s (smallest top-2 logit gap %.2e)", diff_tokens(plain[b], cpu_tokens).c_str(), min_gap);
        snprintf(name, sizeof name, "greedy %s batch %d %s row %d: GPU == argmax of the parallel forward", label, B, pn.c_str(), b);
        report(plain[b] == fwd, name, "%s (smallest top-2 logit gap %.2e)", diff_tokens(plain[b], fwd).c_str(), min_gap);
        snprintf(name, sizeof name, "greedy %s batch %d %s row %d: CUDA graph == plain", label, B, pn.c_str(), b);
        report(graph[b] == plain[b], name, "%s", diff_tokens(graph[b], plain[b]).c_str());
    }
    mamba_free(&cpu); mamba_free(&gpu);
}

static void test_sampled(MambaConfig c, int B, float temperature, int top_k) {
    const int P = 4, n = 32;
    MambaModel cpu, gpu;
    build_pair(&cpu, &gpu, c, 1, P + n - 1, 41, LoraConfig(), mamba_is_pure_m1(c));  // T: learned positions for all
    int V = c.vocab_size;
    Rng r; rng_seed(&r, 42 + B);
    std::vector<std::vector<int>> prompts(B);
    for (int b = 0; b < B; b++) prompts[b] = random_tokens(&r, P, V);
    uint64_t seed = 1234 + B;
    auto plain = mamba_generate_gpu(&gpu, prompts, n, temperature, top_k, seed, false);
    auto graph = mamba_generate_gpu(&gpu, prompts, n, temperature, top_k, seed, true);
    auto ref = cpu_generate_batch(&cpu, prompts, n, temperature, top_k, seed);
    char name[160];
    if (B == 1) {
        std::vector<int> direct = mamba_generate(&cpu, prompts[0], n, temperature, top_k, seed);
        snprintf(name, sizeof name, "sampled t=%g top_k=%d batch 1: GPU == CPU mamba_generate, same seed", temperature, top_k);
        report(plain[0] == direct, name, "%s", diff_tokens(plain[0], direct).c_str());
    }
    for (int b = 0; b < B; b++) {
        snprintf(name, sizeof name, "sampled t=%g top_k=%d batch %d row %d: GPU == CPU (uniforms step-major, rows in order)",
                 temperature, top_k, B, b);
        report(plain[b] == ref[b], name, "%s", diff_tokens(plain[b], ref[b]).c_str());
        snprintf(name, sizeof name, "sampled t=%g top_k=%d batch %d row %d: CUDA graph == plain", temperature, top_k, B, b);
        report(graph[b] == plain[b], name, "%s", diff_tokens(graph[b], plain[b]).c_str());
    }
    mamba_free(&cpu); mamba_free(&gpu);
}

// adapters merged on the GPU: the same tokens as the CPU step with the adapters folded into a host copy
static void test_lora_merged() {
    MambaConfig c = {61, 32, 2, 8, 4, 2, 0, 0};
    MambaModel cpu, gpu;
    build_pair(&cpu, &gpu, c, 1, 1, 51, lora_cfg(2, "all"));  // jitter makes the adapters' B nonzero
    mamba_lora_merge(&gpu);
    Rng r; rng_seed(&r, 52);
    std::vector<int> prompt = random_tokens(&r, 4, c.vocab_size);
    std::vector<int> want = mamba_generate(&cpu, prompt, 20, 0.0f, 0, 3);  // folds the unmerged adapters on the host
    std::vector<int> got = mamba_generate_gpu(&gpu, {prompt}, 20, 0.0f, 0, 3)[0];
    report(got == want, "merged LoRA model: GPU greedy == CPU mamba_generate with the adapters", "%s", diff_tokens(got, want).c_str());
    mamba_free(&cpu); mamba_free(&gpu);
}

static void test_bench() {
    MambaConfig c = {64, 32, 2, 16, 4, 2, 0, 0};
    MambaModel m;
    mamba_build(&m, c, 1, 1, true, false);
    mamba_init_params(&m, 61);
    double plain = mamba_bench_generate(&m, 2, false, 0.0f, 0, 8, 3);
    double graph = mamba_bench_generate(&m, 2, true, 0.8f, 10, 8, 3);
    report(plain > 0 && graph > 0 && std::isfinite(plain) && std::isfinite(graph), "benchmark helper: positive times",
           "plain %.3f us, graph %.3f us", plain, graph);
    printf("  (tiny model, batch 2: %.1f us/step plain greedy, %.1f us/step graph sampled)\n", plain, graph);
    mamba_free(&m);
}

// ---------------------------------------------------------------------------
// --bench: the mamba-130m shape (random weights) on this GPU: µs per decode step, cuBLAS
// path vs fused path (with and without programmatic dependent launch, graph and plain) at
// several batches, and the fused step's kernels one kind at a time against their byte floor.
// Not a test (no GPU in CI); run by hand: build/gpu_generate --bench

// one kind of the fused step's launches, `reps` times over every layer (or the head /
// sampler `reps` times), captured in a graph; returns µs per launch (median of 7 replays)
static double bench_kernel_kind(MambaGpuDecoder* d, int kind, int rows, bool pdl, int* dout) {
    const int L = d->m->cfg.n_layer, reps = kind >= 4 ? 8 : 4;
    cudaGraph_t g;
    cudaGraphExec_t ge;
    cudaCheck(cudaStreamBeginCapture(d->stream, cudaStreamCaptureModeThreadLocal));
    int launches = 0;
    for (int rep = 0; rep < reps; rep++) {
        if (kind == 4) { decoder_head(d, rows, pdl && launches > 0); launches++; continue; }
        if (kind == 5) {  // greedy, from the head's keys
            decoder_sample(d, dout, 0.0f, 0, d->logits);
            launches++;
            continue;
        }
        for (int l = 0; l < L; l++, launches++) {
            bool p = pdl && launches > 0;
            if (kind == 0) decoder_in_proj(d, l, rows, p);
            if (kind == 1) decoder_x_proj(d, l, rows, p);
            if (kind == 2) decoder_scan(d, l, rows, p);
            if (kind == 3) decoder_out_proj(d, l, rows, p);
        }
    }
    cudaCheck(cudaStreamEndCapture(d->stream, &g));
    cudaCheck(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t e0, e1;
    cudaCheck(cudaEventCreate(&e0)); cudaCheck(cudaEventCreate(&e1));
    cudaCheck(cudaGraphLaunch(ge, d->stream));  // warm-up
    std::vector<float> ms(7);
    for (float& t : ms) {
        cudaCheck(cudaEventRecord(e0, d->stream));
        cudaCheck(cudaGraphLaunch(ge, d->stream));
        cudaCheck(cudaEventRecord(e1, d->stream));
        cudaCheck(cudaEventSynchronize(e1));
        cudaCheck(cudaEventElapsedTime(&t, e0, e1));
    }
    std::sort(ms.begin(), ms.end());
    cudaCheck(cudaEventDestroy(e0)); cudaCheck(cudaEventDestroy(e1));
    cudaCheck(cudaGraphExecDestroy(ge)); cudaCheck(cudaGraphDestroy(g));
    return ms[3] * 1000.0 / launches;
}

// bf16w: the decoder's bf16 weights (in_proj, x_proj, out_proj, head at 2 bytes a weight)
static void bench_kernels(const MambaModel* m, int rows, double bw, double step_us, bool bf16w = false) {
    const MambaConfig& c = m->cfg;
    const double D = c.d_model, E = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv, V = c.vocab_size, XD = R + 2 * N, L = c.n_layer;
    const double B = rows, f = 4.0, h = bf16w ? 2.0 : 4.0;
    // bytes each launch must move: weights once, the state read and written, activations in and out
    const double bytes[6] = {
        h * 2 * E * D + f * (D + E * K + E) + f * B * (2 * E * (K - 1) + D + 2 * E),  // in_proj: W, norm, conv w/b; conv state; x in, z + u out
        h * (XD * E) + f * B * (E + XD),                                              // x_proj
        f * (E * R + 3 * E + E * N) + f * B * (2 * E * N + 4 * E + XD),               // scan: dt_proj w/b, A_log, D; h; u, z, xdbl in, y out
        h * (D * E) + f * B * (E + 2 * D),                                            // out_proj: W; y in, x read and written
        h * V * D + f * D + f * B * (D + V),                                          // head: wte, norm; x in, logits out
        f * B * 1};                                                                   // sampler (greedy): the head's keys (~nothing)
    const char* names[6] = {"in_proj+norm+conv", "x_proj", "dt_proj+scan", "out_proj+resid", "head+norm+argmax", "sampler (greedy)"};
    const double count[6] = {L, L, L, L, 1, 1};
    MambaGpuDecoder d;
    mamba_decoder_init(&d, m, rows, false, DECODE_FUSED, DECODE_PDL_DEFAULT, bf16w);
    mamba_decoder_start(&d, rows);
    cudaCheck(cudaMemsetAsync(d.tokens, 0, rows * sizeof(int), d.stream));
    mamba_decoder_step(&d);  // every buffer written once (and the shared-memory limits raised)
    int* dout; cudaCheck(cudaMalloc(&dout, rows * sizeof(int)));
    cudaCheck(cudaStreamSynchronize(d.stream));
    printf("\nfused step's kernels at batch %d, %s weights, one kind at a time (a graph of %d launches of a kind, head and sampler 8; us per launch):\n",
           rows, bf16w ? "bf16" : "fp32", (int)L * 4);
    printf("%-20s %9s %9s %10s %9s %10s %9s %12s\n", "kernel", "PDL us", "plain us", "MB moved", "floor us", "GB/s (PDL)", "x floor",
           "us per step");
    double sum = 0, sum_floor = 0;
    for (int k = 0; k < 6; k++) {
        double t_pdl = bench_kernel_kind(&d, k, rows, d.pdl != PDL_OFF, dout), t_plain = bench_kernel_kind(&d, k, rows, false, dout);
        double fl = bytes[k] / bw * 1e6;
        sum += t_pdl * count[k]; sum_floor += fl * count[k];
        printf("%-20s %9.2f %9.2f %10.3f %9.2f %10.0f %8.2fx %12.1f\n", names[k], t_pdl, t_plain, bytes[k] / 1e6, fl,
               bytes[k] / (t_pdl * 1e-6) / 1e9, t_pdl / fl, t_pdl * count[k]);
    }
    printf("sum of the kinds (x %d layers): %.1f us; their floor %.1f us; the whole step (graph, greedy) %.1f us\n", (int)L, sum,
           sum_floor, step_us);
    cudaCheck(cudaFree(dout));
    mamba_decoder_free(&d);
}

static int bench_main() {
    MambaConfig c = {50280, 768, 24, 16, 4, 2, 0, 0};
    MambaModel m;
    mamba_build(&m, c, 1, 1, true, false);
    mamba_init_params(&m, 5);
    cublasCheck(cublasSetMathMode(cublas_handle(), CUBLAS_TF32_TENSOR_OP_MATH));  // as train_mamba's default (--tf32 1)
    double bw = gpu_peak_bandwidth();
    size_t wbytes = mamba_decoder_weight_bytes(&m);
    double floor_us = wbytes / bw * 1e6;
    printf("decode benchmark on %s: mamba-130m shape, %.1f MiB of fp32 weights, peak %.0f GB/s, weight-read floor %.1f us/step\n",
           device_name(true).c_str(), wbytes / 1048576.0, bw / 1e9, floor_us);
    printf("us per step (greedy, step + sampling, median of 7 x 64 steps); cuBLAS path in TF32, fused path exact FP32\n");
    const int w0 = g_decode_gemv_warps, w1 = w0 == 8 ? 4 : 8;  // the default block size and the other one
    printf("%6s %13s %13s %13s %10s%-3d %13s %9s\n", "batch", "cuBLAS graph", "fused no-PDL", "fused PDL", "PDL, warps ", w1,
           "PDL plain", "x floor");
    double step1 = 0, step4 = 0, step8 = 0;
    for (int batch : {1, 2, 4, 8, 16, 64}) {
        double blas = mamba_bench_generate(&m, batch, true, 0.0f, 0, 64, 7, DECODE_BLAS);
        if (batch <= GEMV_MAX_ROWS) {
            double off = mamba_bench_generate(&m, batch, true, 0.0f, 0, 64, 7, DECODE_FUSED, PDL_OFF);
            double pdl = mamba_bench_generate(&m, batch, true, 0.0f, 0, 64, 7, DECODE_FUSED, DECODE_PDL_DEFAULT);
            g_decode_gemv_warps = w1;
            double other = mamba_bench_generate(&m, batch, true, 0.0f, 0, 64, 7, DECODE_FUSED, DECODE_PDL_DEFAULT);
            g_decode_gemv_warps = w0;
            double plain = mamba_bench_generate(&m, batch, false, 0.0f, 0, 64, 7, DECODE_FUSED, DECODE_PDL_DEFAULT);
            printf("%6d %10.1f us %10.1f us %10.1f us %10.1f us %10.1f us %8.2fx\n", batch, blas, off, pdl, other, plain,
                   std::min(std::min(off, pdl), blas) / floor_us);
            if (batch == 1) step1 = pdl;
            if (batch == 4) step4 = pdl;
            if (batch == 8) step8 = pdl;
        } else {
            printf("%6d %10.1f us %13s %13s %13s %13s %8.2fx\n", batch, blas, "-", "-", "-", "-", blas / floor_us);
        }
        fflush(stdout);
    }
    bench_kernels(&m, 1, bw, step1);
    bench_kernels(&m, 4, bw, step4);
    bench_kernels(&m, 8, bw, step8);
    double step1_bf16 = mamba_bench_generate(&m, 1, true, 0.0f, 0, 64, 7, DECODE_FUSED, DECODE_PDL_DEFAULT, true);
    printf("\nbatch 1 with bf16 weights (graph, PDL): %.1f us per step\n", step1_bf16);
    bench_kernels(&m, 1, bw, step1_bf16, true);
    double step8_bf16 = mamba_bench_generate(&m, 8, true, 0.0f, 0, 64, 7, DECODE_FUSED, DECODE_PDL_DEFAULT, true);
    printf("\nbatch 8 with bf16 weights (graph, PDL): %.1f us per step\n", step8_bf16);
    bench_kernels(&m, 8, bw, step8_bf16, true);
    mamba_free(&m);
    return 0;
}

int main(int argc, char** argv) {
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) return bench_main();
    // the refusals first, before any CUDA call (expect_fatal forks; a child must not inherit a CUDA context in use)
    {
        MambaConfig c = {50, 32, 2, 8, 4, 2, 0, 0};
        MambaModel lora, plain_cpu;
        mamba_build(&lora, c, 1, 1, false, false, lora_cfg(2, "all"));
        mamba_build(&plain_cpu, c, 1, 1, false, false);
        expect_fatal("GPU decoder refuses unmerged LoRA adapters", "unmerged LoRA adapters",
                     [&] { mamba_generate_gpu(&lora, {{1, 2}}, 4, 0.0f, 0, 1); });
        expect_fatal("GPU decoder refuses a CPU model", "needs a model on the GPU",
                     [&] { mamba_generate_gpu(&plain_cpu, {{1, 2}}, 4, 0.0f, 0, 1); });
        mamba_free(&lora); mamba_free(&plain_cpu);
        // layer patterns (each child starts CUDA itself; this process has not yet)
        auto feed = [](const char* layers, int T, int max_len, DecodePath path, int tokens) {
            MambaModel g;
            mamba_build(&g, hybrid_test_config(layers, 20, 32), 1, T, true);
            mamba_init_params(&g, 1);
            MambaGpuDecoder d;
            mamba_decoder_init(&d, &g, 1, false, path, DECODE_PDL_DEFAULT, false, max_len);
            mamba_decoder_start(&d, 1);
            int t = 3;
            for (int i = 0; i < tokens; i++) mamba_decoder_feed(&d, &t);
            cudaCheck(cudaDeviceSynchronize());
        };
        expect_fatal("GPU decoder refuses a step past the learned positions (A,F, max_seq 4)", "past the model's 4 learned positions",
                     [&] { feed("A,F", 4, 0, DECODE_AUTO, 5); });
        expect_fatal("GPU decoder refuses a step past its KV caches (M1,A, max_len 3)", "past the 3 positions of the KV caches",
                     [&] { feed("M1,A", 8, 3, DECODE_AUTO, 4); });
        expect_fatal("GPU decoder needs max_len for attention layers without learned positions", "give the positions",
                     [&] { feed("M2,A", 8, 0, DECODE_AUTO, 1); });
        expect_fatal("GPU decoder refuses the fused step for a layer pattern", "the fused step runs Mamba-1 models",
                     [&] { feed("M1,F", 8, 8, DECODE_FUSED, 1); });
    }
    cublasCheck(cublasSetMathMode(cublas_handle(), CUBLAS_DEFAULT_MATH));  // exact FP32 for comparisons (decoders copy it)

    test_conv_step(3, 80, 4);
    test_conv_step(2, 37, 3);
    test_conv_step(2, 16, 1);
    for (int pdl : {0, (int)PDL_AFTER_WAIT}) {
        test_scan_step(3, 80, 16, 5, 32, pdl);
        test_scan_step(2, 37, 8, 3, 32, pdl);
        test_scan_step(2, 24, 40, 70, 32, pdl);   // N above 32, R above 64: the loops past the loads ahead
        test_scan_step(3, 37, 16, 48, 16, pdl);   // two channels a warp, 111 channels: the last warp half past the end
        test_scan_step(1, 1, 16, 70, 16, pdl);    // one channel; R past the 4 loads ahead of a half warp
        test_scan_step(3, 37, 16, 48, 4, pdl);    // eight channels a warp, the last warp partly past the end
        test_scan_step(2, 5, 9, 70, 4, pdl);      // N not a multiple of the lanes; R past the 16 loads ahead
    }
    test_scan_step(8, 1536, 16, 48, 16, PDL_AFTER_WAIT);  // batch 8 of the 130m shape
    test_scan_step(64, 1536, 16, 48, 4, 0);               // batch 64 (the cuBLAS path)
    {  // the rule of decode_scan_lanes
        bool ok = decode_scan_lanes(40, 100) == 32 && decode_scan_lanes(16, 12288) == 16 && decode_scan_lanes(16, 98304) == 4 &&
                  decode_scan_lanes(17, 98304) == 32;
        report(ok, "decode_scan_lanes: 32 for N > 16, else 16 up to 16384 channels and 4 past them", "differs");
    }

    for (int V : {2, 7, 256, 1000, 50280}) {
        test_sampler(V, LOGITS_NORMAL, "normal");
        test_sampler(V, LOGITS_TIES, "tied");
    }
    test_sampler(1500, LOGITS_TIES, "tied");  // top_k 0: more than SAMPLE_SMALL_K candidates with ties
    test_sampler(300, LOGITS_EQUAL, "all-equal");
    test_sampler(300, LOGITS_SIGNED_ZERO, "signed-zero");

    MambaConfig small = {50, 32, 2, 16, 4, 2, 0, 0};
    MambaConfig odd = {257, 40, 3, 8, 3, 2, 0, 0};  // E = 80, dt_rank 3, d_conv 3
    // the decode GEMV: rows 1, 3, 8, 13 (and 16), widths that are not multiples of 4 or of a
    // chunk (37, 100, 900 > 768, 1600 > 1536: a second chunk), each fused prologue/epilogue
    test_gemv(1, 37, 100, GEMV_PLAIN, false);
    test_gemv(3, 100, 37, GEMV_PLAIN, true);
    test_gemv(8, 768, 300, GEMV_PLAIN, false);
    test_gemv(13, 1600, 45, GEMV_PLAIN, false);
    test_gemv(16, 900, 64, GEMV_PLAIN, true);
    test_gemv(1, 1536, 80, GEMV_PLAIN, false);
    test_gemv(1, 100, 37, GEMV_RESIDUAL, false);
    test_gemv(3, 1536, 200, GEMV_RESIDUAL, false);
    test_gemv(13, 37, 100, GEMV_RESIDUAL, true);
    test_gemv(1, 768, 1000, GEMV_NORM, false);
    test_gemv(8, 37, 100, GEMV_NORM, true);
    test_gemv(13, 100, 257, GEMV_NORM, false);
    test_gemv(1, 768, 3072, GEMV_IN_PROJ, false);
    test_gemv(3, 37, 100, GEMV_IN_PROJ, true);
    test_gemv(8, 100, 74, GEMV_IN_PROJ, false);
    test_gemv(13, 40, 160, GEMV_IN_PROJ, true);
    // bf16 weights: every mode, aligned (8-byte loads) and not (one bf16 at a time), tails past 4 and a chunk
    test_gemv(1, 37, 100, GEMV_PLAIN, false, true);
    test_gemv(3, 100, 37, GEMV_PLAIN, true, true);
    test_gemv(13, 1600, 45, GEMV_PLAIN, false, true);
    test_gemv(1, 1536, 80, GEMV_PLAIN, true, true);
    test_gemv(3, 1536, 200, GEMV_RESIDUAL, false, true);
    test_gemv(1, 768, 1000, GEMV_NORM, false, true);
    test_gemv(8, 37, 100, GEMV_NORM, true, true);
    test_gemv(1, 768, 3072, GEMV_IN_PROJ, false, true);
    test_gemv(13, 40, 160, GEMV_IN_PROJ, true, true);
    test_gemv_m2(1, 768, 1536, 128, 24, 4);  // the mamba2-130m shape
    test_gemv_m2(3, 64, 96, 32, 3, 4);
    test_gemv_m2(8, 37, 40, 16, 5, 3);      // odd inputs, conv width 3
    test_gemv_m2(13, 100, 64, 8, 2, 2);     // a grid-stride loop over rows past 8

    // the fused step with each programmatic-dependent-launch mode, and the cuBLAS step
    for (DecodePdl pdl : {PDL_OFF, PDL_AFTER_WAIT, PDL_EARLY})
        for (bool jitter : {false, true}) {
            double tol = jitter ? 5e-5 : 1e-5;
            test_step_logits(small, 1, "small", jitter, tol, DECODE_FUSED, pdl);
            test_step_logits(small, 3, "small", jitter, tol, DECODE_FUSED, pdl);
            test_step_logits(odd, 1, "odd", jitter, tol, DECODE_FUSED, pdl);
            test_step_logits(odd, 3, "odd", jitter, tol, DECODE_FUSED, pdl);
        }
    for (bool jitter : {false, true}) {
        double tol = jitter ? 5e-5 : 1e-5;
        test_step_logits(small, 1, "small", jitter, tol, DECODE_BLAS);
        test_step_logits(small, 3, "small", jitter, tol, DECODE_BLAS);
        test_step_logits(odd, 1, "odd", jitter, tol, DECODE_BLAS);
        test_step_logits(odd, 3, "odd", jitter, tol, DECODE_BLAS);
    }
    test_step_logits(odd, 13, "odd", false, 1e-5, DECODE_FUSED);
    test_step_logits(small, 8, "small", true, 5e-5, DECODE_FUSED);
    // bf16 weights: on bf16-representable weights the decoder equals the CPU step to fp32 rounding;
    // on fp32 weights it is off by the weights' rounding: each logit is a chain of ~7 products per
    // layer, each off by at most about sqrt(2/3) u (u = 2^-8) norm-wise, so 3e-2 (measured: printed above)
    for (DecodePdl pdl : {PDL_OFF, PDL_EARLY}) {
        test_step_logits(small, 1, "small", false, 1e-5, DECODE_FUSED, pdl, true, true);
        test_step_logits(odd, 3, "odd", false, 1e-5, DECODE_FUSED, pdl, true, true);
    }
    test_step_logits(small, 1, "small", false, 3e-2, DECODE_FUSED, DECODE_PDL_DEFAULT, true, false);
    test_step_logits(odd, 8, "odd", false, 3e-2, DECODE_FUSED, DECODE_PDL_DEFAULT, true, false);
    test_step_logits(odd, 13, "odd", false, 1e-5, DECODE_AUTO, DECODE_PDL_DEFAULT, true, false);  // cuBLAS path: fp32 weights still

    test_greedy(small, 1, "small");
    test_greedy(small, 4, "small");
    test_greedy(odd, 4, "odd");
    test_greedy(small, 1, "small", DECODE_BLAS);
    test_greedy(odd, 4, "odd", DECODE_BLAS);
    test_greedy(small, 1, "small", DECODE_AUTO, true);
    test_greedy(odd, 4, "odd", DECODE_AUTO, true);

    test_sampled(small, 1, 0.8f, 10);
    test_sampled(small, 1, 1.0f, 0);
    test_sampled(odd, 3, 0.7f, 40);

    // layer patterns: the decoder layer by layer (M2 state 16 / heads of 16, attention, MLP, learned positions)
    for (const char* layers : {"M2,A,F,M1", "M2*2", "A,F,A", "M2,F,M1"}) {
        MambaConfig h = hybrid_test_config(layers, 61, 32);
        test_step_logits(h, 1, layers, false, 1e-5, DECODE_AUTO);
        test_step_logits(h, 3, layers, false, 1e-5, DECODE_AUTO);  // the decode GEMVs at 3 rows
        test_step_logits(h, 3, layers, false, 1e-5, DECODE_BLAS);
        test_step_logits(h, 2, layers, false, 1e-5, DECODE_AUTO, DECODE_PDL_DEFAULT, true, true);  // bf16 copies of representable weights
        test_greedy(h, 1, layers);
        test_greedy(h, 4, layers);
        test_greedy(h, 12, layers);  // past DECODE_FUSED_MAX_ROWS: cuBLAS products
    }
    {
        MambaConfig h = hybrid_test_config("M1,M2,A,F", 61, 64);
        h.m2_headdim = 32; h.m2_d_state = 64; mamba_config_derive(&h);  // the SSD step at the tensor-core path's shape
        test_step_logits(h, 2, "M1,M2,A,F P32 N64", false, 1e-5, DECODE_AUTO);
        test_sampled(h, 1, 0.9f, 20);
        test_sampled(h, 3, 1.0f, 0);
    }
    test_sampled(hybrid_test_config("A,F", 61, 32), 2, 0.8f, 10);

    for (const MambaConfig& cfg : {odd, hybrid_test_config("M2,A,F,M1", 61, 32)}) {
        // the floor's byte count with bf16 weights: the tensors the decoder copies at 2 bytes, by name
        MambaModel m;
        mamba_build(&m, cfg, 1, 1, true, false);
        size_t want = 0;
        for (const ParamTensor& t : m.params.tensors) {
            const std::string& n = t.name;
            bool half = false;
            for (const char* s : {"in_proj.weight", "x_proj.weight", "out_proj.weight", "qkv.weight", "fc.weight", "fc_proj.weight"})
                half |= n.size() > strlen(s) && n.compare(n.size() - strlen(s), strlen(s), s) == 0;
            // a layer pattern's M1 layers run the cuBLAS path on fp32 weights (their names lack a block prefix)
            bool m1_tensor = n.find(".mixer.") == std::string::npos && n.find(".attn.") == std::string::npos &&
                             n.find(".mlp.") == std::string::npos;
            if (decoder_layered(&m) && m1_tensor) half = false;
            half |= n == "embedding.weight";
            want += t.numel * (half ? 2 : 4);
        }
        size_t got = mamba_decoder_weight_bytes(&m, true);
        char name[128];
        snprintf(name, sizeof name, "mamba_decoder_weight_bytes %s: bf16 copies at 2 bytes, the rest at 4", cfg.layers.c_str());
        report(got == want && mamba_decoder_weight_bytes(&m) == 4 * m.params.num_params, name, "%zu vs %zu", got, want);
        mamba_free(&m);
    }
    test_lora_merged();
    test_bench();
    return test_summary();
}
