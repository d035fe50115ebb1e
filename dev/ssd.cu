// dev/ssd.cu: Mamba-2's SSD (chunked scan), forward and forward + backward, against the CPU
// reference (src/ssd.h) and the official Triton kernels' figures (mamba_chunk_scan_combined).
//
//   ./dev_ssd          all versions;   ./dev_ssd N   version N
//   v1  (measured, then replaced in src/: dev/notes_kernels.md has its figures)
//       SIMT fp32, chunks of 64, one block per (chunk, head, batch);
//       forward = chunk states (outer products) -> state passing (in place) -> outputs
//       (C B^T masked in shared memory); backward recomputes the states, then
//       d(state) per chunk -> reverse state passing -> one kernel per chunk for every gradient.
//       Prediction: well above the Triton kernels, which run the four matmuls on tensor
//       cores in bf16 with chunks of 256: SIMT fp32 is ~60 TFLOP/s at best against ~800
//       (bf16 tensor cores), and the chunk kernels hold 128-180 KB of shared memory (one block
//       per SM). The next versions: mma.sync / wgmma for C B^T, the chunk states and the
//       outputs, bf16 inputs, chunk 128-256.
//       Outcome: 25.1 / 83.2 ms at L2048 (31x / 27x the Triton times): far worse than predicted.
//       The hot loops read shared rows of N = 128 floats column-wise (B_s[n] for 32 values
//       of s; H[p][n] for 32 values of p): 32-way bank conflicts.
//   v2  src/ssd.h now: rows padded to N + 1 (and P + 1) floats, so a warp's column read hits
//       32 banks; the backward's mask exp(cs_t - cs_s) folded into the C B^T matrix once
//       instead of once per (s, p, t). Prediction: ~10x faster (the conflicts were the cost).
//       Outcome: forward 3.4x faster (7.4 ms), backward only 1.9x (49 ms fwd+bwd).
//   v3  src/ssd.h now: the backward's atomics. dB and dC were added by the 24 heads of a group
//       into the same rows with global float atomics: now per-head parts (plain stores) and a
//       sum over the heads of each group; the per-element shared atomics (ddt, d(cs), dD) are
//       warp shuffles with one atomic per warp. Prediction: the backward at ~2x the forward.
//
// Floor at B8 L2048 H24 P64 N128 G1, fp32: the forward must read x, dt, B, C and write y:
// 4 (2 BLHP + BLH + 2 BLGN) bytes = 228 MB -> 0.076 ms at 3.0 TB/s. FLOPs of the chunked
// algorithm per (chunk, head), Q = 64: C B^T Q^2 N / 2 (causal), outputs Q^2 P / 2, chunk
// state Q P N, state read Q P N multiply-adds; x2 -> 2.6 MFLOP, 16 GFLOP in all: 0.27 ms at
// 60 TFLOP/s (fp32 FMA), 0.02 ms at 800 TFLOP/s (bf16 tensor cores). The backward does about
// twice the forward's work, plus the recomputed states.
#include "dev_common.h"
#include "../src/ssd.h"

struct Problem {
    int B, L, H, P, G, N;
    std::vector<float> x, dt, A, Bm, Cm, D, dy;
    Problem(int B_, int L_, int H_, int P_, int G_, int N_, uint64_t seed) : B(B_), L(L_), H(H_), P(P_), G(G_), N(N_) {
        Rng r; rng_seed(&r, seed);
        size_t BLHP = (size_t)B * L * H * P, BLGN = (size_t)B * L * G * N;
        x.resize(BLHP); dev_fill_uniform(x, -1.5f, 1.5f, &r);
        dy.resize(BLHP); dev_fill_uniform(dy, -1.0f, 1.0f, &r);
        Bm.resize(BLGN); dev_fill_uniform(Bm, -1.0f, 1.0f, &r);
        Cm.resize(BLGN); dev_fill_uniform(Cm, -1.0f, 1.0f, &r);
        D.resize(H); dev_fill_uniform(D, -1.0f, 1.0f, &r);
        dt.resize((size_t)B * L * H);
        for (auto& v : dt) v = softplus_f(-6.9f + 4.6f * rng_uniform(&r));
        A.resize(H);
        for (auto& v : A) v = -expf(-1.0f + 3.0f * rng_uniform(&r));
    }
};

int main(int argc, char** argv) {
    cudaCheck(cudaSetDevice(0));
    if (!dev_want_version(argc, argv, 3)) return dev_finish();
    // validation on an odd shape (partial chunk, 2 groups) and on a Mamba-2 head shape
    double worst = 0;
    bool ok = true;
    for (auto sh : {std::vector<int>{2, 150, 4, 16, 2, 32}, std::vector<int>{1, 300, 2, 64, 1, 128}}) {
        Problem p(sh[0], sh[1], sh[2], sh[3], sh[4], sh[5], 7);
        size_t BLHP = (size_t)p.B * p.L * p.H * p.P, BLGN = (size_t)p.B * p.L * p.G * p.N, BLH = (size_t)p.B * p.L * p.H;
        std::vector<float> y(BLHP), dx(BLHP, 0), ddt(BLH, 0), dA(p.H, 0), dB(BLGN, 0), dC(BLGN, 0), dD(p.H, 0);
        ssd_forward_chunked_cpu(y.data(), nullptr, p.x.data(), p.dt.data(), p.A.data(), p.Bm.data(), p.Cm.data(), p.D.data(),
                                nullptr, p.B, p.L, p.H, p.P, p.G, p.N, 64);
        ssd_backward_cpu(dx.data(), ddt.data(), dA.data(), dB.data(), dC.data(), dD.data(), nullptr, p.dy.data(), nullptr,
                         p.x.data(), p.dt.data(), p.A.data(), p.Bm.data(), p.Cm.data(), p.D.data(), nullptr,
                         p.B, p.L, p.H, p.P, p.G, p.N);
        float *gx = dev_upload<float>(p.x), *gdt = dev_upload<float>(p.dt), *gA = dev_upload<float>(p.A);
        float *gB = dev_upload<float>(p.Bm), *gC = dev_upload<float>(p.Cm), *gD = dev_upload<float>(p.D), *gdy = dev_upload<float>(p.dy);
        float *gy = dev_alloc<float>(BLHP), *gdx = dev_alloc<float>(BLHP), *gddt = dev_alloc<float>(BLH), *gdA = dev_alloc<float>(p.H);
        float *gdB = dev_alloc<float>(BLGN), *gdC = dev_alloc<float>(BLGN), *gdD = dev_alloc<float>(p.H);
        dev_poison(gy, BLHP * 4);
        for (auto q : {std::make_pair(gdx, BLHP), std::make_pair(gddt, BLH), std::make_pair(gdA, (size_t)p.H),
                       std::make_pair(gdB, BLGN), std::make_pair(gdC, BLGN), std::make_pair(gdD, (size_t)p.H)})
            cudaCheck(cudaMemset(q.first, 0, q.second * 4));
        ssd_forward_cuda(gy, nullptr, gx, gdt, gA, gB, gC, gD, nullptr, p.B, p.L, p.H, p.P, p.G, p.N, 64);
        ssd_backward_cuda(gdx, gddt, gdA, gdB, gdC, gdD, nullptr, gdy, nullptr, gx, gdt, gA, gB, gC, gD, nullptr,
                          p.B, p.L, p.H, p.P, p.G, p.N);
        ok &= dev_check("ssd y", gy, y, 1e-5, &worst);
        ok &= dev_check("ssd dx", gdx, dx, 1e-4, &worst);
        ok &= dev_check("ssd ddt", gddt, ddt, 1e-4, &worst);
        ok &= dev_check("ssd dA", gdA, dA, 1e-4, &worst);
        ok &= dev_check("ssd dB", gdB, dB, 1e-4, &worst);
        ok &= dev_check("ssd dC", gdC, dC, 1e-4, &worst);
        ok &= dev_check("ssd dD", gdD, dD, 1e-4, &worst);
        for (float* q : {gx, gdt, gA, gB, gC, gD, gdy, gy, gdx, gddt, gdA, gdB, gdC, gdD}) dev_free(q);
    }
    dev_print_header();
    for (int L : {2048, 8192}) {
        Problem p(8, L, 24, 64, 1, 128, 11);
        size_t BLHP = (size_t)p.B * p.L * p.H * p.P, BLGN = (size_t)p.B * p.L * p.G * p.N, BLH = (size_t)p.B * p.L * p.H;
        float *gx = dev_upload<float>(p.x), *gdt = dev_upload<float>(p.dt), *gA = dev_upload<float>(p.A);
        float *gB = dev_upload<float>(p.Bm), *gC = dev_upload<float>(p.Cm), *gD = dev_upload<float>(p.D), *gdy = dev_upload<float>(p.dy);
        float *gy = dev_alloc<float>(BLHP), *gdx = dev_alloc<float>(BLHP), *gddt = dev_alloc<float>(BLH), *gdA = dev_alloc<float>(p.H);
        float *gdB = dev_alloc<float>(BLGN), *gdC = dev_alloc<float>(BLGN), *gdD = dev_alloc<float>(p.H);
        auto fwd = [&](int) { ssd_forward_cuda(gy, nullptr, gx, gdt, gA, gB, gC, gD, nullptr, p.B, p.L, p.H, p.P, p.G, p.N, 64); };
        auto fwd_bwd = [&](int) {
            fwd(0);
            ssd_backward_cuda(gdx, gddt, gdA, gdB, gdC, gdD, nullptr, gdy, nullptr, gx, gdt, gA, gB, gC, gD, nullptr,
                              p.B, p.L, p.H, p.P, p.G, p.N);
        };
        float ms_f = dev_bench_ms(fwd, 2, 10), ms_fb = dev_bench_ms(fwd_bwd, 2, 10);
        double bytes_f = 4.0 * (2.0 * BLHP + BLH + 2.0 * BLGN);
        double bytes_fb = bytes_f + 4.0 * (3.0 * BLHP + BLH + 4.0 * BLGN);  // + dy, x again, dx, ddt, B, C, dB, dC
        char shape[64];
        snprintf(shape, sizeof shape, "B8 L%d H24 P64 N128", L);
        dev_print_row("ssd fwd", "v3 simt fp32 Q64", shape, "fp32", ms_f, bytes_f, 0, ok, worst);
        dev_print_row("ssd fwd+bwd", "v3 simt fp32 Q64", shape, "fp32", ms_fb, bytes_fb, 0, ok, worst);
        printf("   official Triton (H100 anchors, bf16, chunk 256): fwd %.3f ms, fwd+bwd %.3f ms -> v3 is %.2fx / %.2fx their time\n",
               L == 2048 ? 0.815 : 1.100, L == 2048 ? 3.135 : 4.645, ms_f / (L == 2048 ? 0.815 : 1.100), ms_fb / (L == 2048 ? 3.135 : 4.645));
        for (float* q : {gx, gdt, gA, gB, gC, gD, gdy, gy, gdx, gddt, gdA, gdB, gdC, gdD}) dev_free(q);
    }
    return dev_finish();
}
