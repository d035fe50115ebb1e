// gpu_ssd.cu: Mamba-2's SSD on the GPU (src/ssd.h) against the CPU reference: forward (y, final
// state), backward (every gradient, accumulating onto pre-filled buffers, with and without an
// initial state and a final-state gradient), and the recurrent step. Both CUDA paths:
//   - the plain SIMT kernels (odd P and N, and a misaligned input that the dispatcher must send
//     there): fp32 throughout, held to 1e-5 (forward) and 1e-4 (gradients);
//   - the tensor-core kernels (P a multiple of 32, N 64 or 128): TF32 operands, held to 2e-3 and
//     3e-3 (1e-2 with bf16 state tensors); dev/ssd.cu measures <= 7e-4 with fp32 states.
// Shapes with one chunk, several chunks, a partial last chunk, L = 1, 1 and 2 groups. Outputs are
// poisoned (NaN) before the kernels write them. The tensor-core backward run twice gives the same
// bits (its dA and dD sums have a fixed order).
#include "../src/ssd.h"
#include "test_util.h"

typedef std::vector<float> Vec;

// misalign: x one float past a 16-byte boundary (the dispatcher must take the plain kernels)
static void test_shape(int B, int L, int H, int P, int G, int N, bool with_h0, bool with_dfinal, uint64_t seed,
                       bool misalign = false) {
    Rng r; rng_seed(&r, seed);
    size_t BLHP = (size_t)B * L * H * P, BLGN = (size_t)B * L * G * N, BHPN = (size_t)B * H * P * N, BLH = (size_t)B * L * H;
    Vec x = random_vec(BLHP, &r, -1.5f, 1.5f), Bm = random_vec(BLGN, &r), Cm = random_vec(BLGN, &r), D = random_vec(H, &r);
    Vec dt(BLH), A(H);
    for (auto& v : dt) v = softplus_f(-6.9f + 4.6f * rng_uniform(&r));  // ~[0.001, 0.095], as Mamba-2's init
    for (auto& v : A) v = -expf(-1.0f + 3.0f * rng_uniform(&r));
    Vec h0 = random_vec(BHPN, &r), dy = random_vec(BLHP, &r), dfin = random_vec(BHPN, &r);
    const float* h0p = with_h0 ? h0.data() : nullptr;
    const float* dfp = with_dfinal ? dfin.data() : nullptr;
    // the path the dispatcher takes (cudaMalloc'd buffers are aligned) and its tolerances
    const bool tc = !misalign && ssd_tc_ok(P, N, {});
    const double tol_f = tc ? 2e-3 : 1e-5, tol_g = tc ? (sizeof(ssd_tc_state_t) == 4 ? 3e-3 : 1e-2) : 1e-4;
    char name[200];
    auto label = [&](const char* what) {
        snprintf(name, sizeof name, "ssd %s B%d L%d H%d P%d G%d N%d%s%s [%s]", what, B, L, H, P, G, N, with_h0 ? " h0" : "",
                 with_dfinal ? " dfinal" : "", tc ? "tensor cores" : misalign ? "plain, misaligned x" : "plain");
        return name;
    };
    // CPU
    Vec y(BLHP), fs(BHPN);
    ssd_forward_chunked_cpu(y.data(), fs.data(), x.data(), dt.data(), A.data(), Bm.data(), Cm.data(), D.data(), h0p, B, L, H, P, G, N, 16);
    Vec dx = random_vec(BLHP, &r), ddt = random_vec(BLH, &r), dA = random_vec(H, &r), dB = random_vec(BLGN, &r);
    Vec dC = random_vec(BLGN, &r), dD = random_vec(H, &r), dh0 = random_vec(BHPN, &r);
    Vec gdx0 = dx, gddt0 = ddt, gdA0 = dA, gdB0 = dB, gdC0 = dC, gdD0 = dD, gdh00 = dh0;  // the GPU starts from the same
    ssd_backward_cpu(dx.data(), ddt.data(), dA.data(), dB.data(), dC.data(), dD.data(), dh0.data(), dy.data(), dfp, x.data(),
                     dt.data(), A.data(), Bm.data(), Cm.data(), D.data(), h0p, B, L, H, P, G, N);
    // GPU
    float* gx_buf = nullptr;  // misalign: x copied one float into this buffer
    if (misalign) {
        cudaCheck(cudaMalloc(&gx_buf, (BLHP + 1) * sizeof(float)));
        cudaCheck(cudaMemcpy(gx_buf + 1, x.data(), BLHP * sizeof(float), cudaMemcpyHostToDevice));
    }
    float *gx = misalign ? gx_buf + 1 : to_device(x), *gdt = to_device(dt), *gA = to_device(A), *gB = to_device(Bm), *gC = to_device(Cm), *gD = to_device(D);
    float *gh0 = with_h0 ? to_device(h0) : nullptr, *gdy = to_device(dy), *gdf = with_dfinal ? to_device(dfin) : nullptr;
    float *gy = device_poisoned(BLHP), *gfs = device_poisoned(BHPN);
    ssd_forward_cuda(gy, gfs, gx, gdt, gA, gB, gC, gD, gh0, B, L, H, P, G, N, 16);
    check_close(label("forward y"), from_device(gy, BLHP).data(), y.data(), BLHP, tol_f);
    check_close(label("forward final state"), from_device(gfs, BHPN).data(), fs.data(), BHPN, tol_f);
    float *gdx = to_device(gdx0), *gddt = to_device(gddt0), *gdA = to_device(gdA0), *gdB = to_device(gdB0), *gdC = to_device(gdC0);
    float *gdD = to_device(gdD0), *gdh0 = to_device(gdh00);
    ssd_backward_cuda(gdx, gddt, gdA, gdB, gdC, gdD, gdh0, gdy, gdf, gx, gdt, gA, gB, gC, gD, gh0, B, L, H, P, G, N);
    check_close(label("dx"), from_device(gdx, BLHP).data(), dx.data(), BLHP, tol_g);
    check_close(label("ddt"), from_device(gddt, BLH).data(), ddt.data(), BLH, tol_g);
    check_close(label("dA"), from_device(gdA, H).data(), dA.data(), H, tol_g);
    check_close(label("dB"), from_device(gdB, BLGN).data(), dB.data(), BLGN, tol_g);
    check_close(label("dC"), from_device(gdC, BLGN).data(), dC.data(), BLGN, tol_g);
    check_close(label("dD"), from_device(gdD, H).data(), dD.data(), H, tol_g);
    check_close(label("dh0"), from_device(gdh0, BHPN).data(), dh0.data(), BHPN, tol_g);
    if (tc) {  // the tensor-core backward sums in a fixed order: a second call from the same buffers gives the same bits
        struct { const char* what; float* first; const Vec* start; size_t n; } items[] = {
            {"dx", gdx, &gdx0, BLHP}, {"ddt", gddt, &gddt0, BLH}, {"dA", gdA, &gdA0, (size_t)H}, {"dB", gdB, &gdB0, BLGN},
            {"dC", gdC, &gdC0, BLGN}, {"dD", gdD, &gdD0, (size_t)H}, {"dh0", gdh0, &gdh00, BHPN}};
        float *rdx = to_device(gdx0), *rddt = to_device(gddt0), *rdA = to_device(gdA0), *rdB = to_device(gdB0);
        float *rdC = to_device(gdC0), *rdD = to_device(gdD0), *rdh0 = to_device(gdh00);
        ssd_backward_cuda(rdx, rddt, rdA, rdB, rdC, rdD, rdh0, gdy, gdf, gx, gdt, gA, gB, gC, gD, gh0, B, L, H, P, G, N);
        float* again[] = {rdx, rddt, rdA, rdB, rdC, rdD, rdh0};
        std::string differ;
        for (int i = 0; i < 7; i++) {
            Vec a = from_device(items[i].first, items[i].n), b = from_device(again[i], items[i].n);
            if (memcmp(a.data(), b.data(), a.size() * sizeof(float)) != 0) differ += std::string(" ") + items[i].what;
        }
        report(differ.empty(), label("backward twice: the same bits"), "differ:%s", differ.c_str());
        for (float* q : again) cudaCheck(cudaFree(q));
    }
    {  // frozen A_log and D (LoRA): dA = dD = nullptr; the input gradients match the normal GPU call (to
       // 1e-6: the kernels sum some terms with float atomics, whose order varies) and the CPU reference
        float *fdx = to_device(gdx0), *fddt = to_device(gddt0), *fdB = to_device(gdB0), *fdC = to_device(gdC0);
        float* fdh0 = to_device(gdh00);
        ssd_backward_cuda(fdx, fddt, nullptr, fdB, fdC, nullptr, fdh0, gdy, gdf, gx, gdt, gA, gB, gC, gD, gh0, B, L, H, P,
                          G, N);
        struct { const char* what; float* got; float* normal; const Vec* ref; size_t n; } items[] = {
            {"frozen A,D: dx", fdx, gdx, &dx, BLHP}, {"frozen A,D: ddt", fddt, gddt, &ddt, BLH},
            {"frozen A,D: dB", fdB, gdB, &dB, BLGN}, {"frozen A,D: dC", fdC, gdC, &dC, BLGN},
            {"frozen A,D: dh0", fdh0, gdh0, &dh0, BHPN}};
        for (auto& it : items) {
            Vec got = from_device(it.got, it.n), normal = from_device(it.normal, it.n);
            char what[96];
            snprintf(what, sizeof what, "%s == normal call", it.what);
            check_close(label(what), got.data(), normal.data(), it.n, 1e-6);
            snprintf(what, sizeof what, "%s vs CPU", it.what);
            check_close(label(what), got.data(), it.ref->data(), it.n, tol_g);
        }
        for (float* q : {fdx, fddt, fdB, fdC, fdh0}) cudaCheck(cudaFree(q));
    }
    {  // GRAD_SET: dx, ddt, dB, dC from NaN == added onto zeros (the tensor-core backward: the same bits, it sums in a
       // fixed order; the plain path zeroes first: to 1e-6, its atomics), dA, dD, dh0 still added
        float *sdx = device_poisoned(BLHP), *sddt = device_poisoned(BLH), *sdB = device_poisoned(BLGN), *sdC = device_poisoned(BLGN);
        float *zdx = to_device(Vec(BLHP, 0.0f)), *zddt = to_device(Vec(BLH, 0.0f)), *zdB = to_device(Vec(BLGN, 0.0f));
        float* zdC = to_device(Vec(BLGN, 0.0f));
        float *sdA = to_device(gdA0), *sdD = to_device(gdD0), *sdh0 = to_device(gdh00);
        float *zdA = to_device(gdA0), *zdD = to_device(gdD0), *zdh0 = to_device(gdh00);
        ssd_backward_cuda(zdx, zddt, zdA, zdB, zdC, zdD, zdh0, gdy, gdf, gx, gdt, gA, gB, gC, gD, gh0, B, L, H, P, G, N);
        ssd_backward_cuda(sdx, sddt, sdA, sdB, sdC, sdD, sdh0, gdy, gdf, gx, gdt, gA, gB, gC, gD, gh0, B, L, H, P, G, N, GRAD_SET);
        struct { const char* what; float* set; float* add; size_t n; } items[] = {
            {"dx", sdx, zdx, BLHP}, {"ddt", sddt, zddt, BLH}, {"dB", sdB, zdB, BLGN}, {"dC", sdC, zdC, BLGN},
            {"dA", sdA, zdA, (size_t)H}, {"dD", sdD, zdD, (size_t)H}, {"dh0", sdh0, zdh0, BHPN}};
        for (auto& it : items) {
            Vec a = from_device(it.set, it.n), b = from_device(it.add, it.n);
            char what[96];
            snprintf(what, sizeof what, "backward GRAD_SET: %s == GRAD_ADD onto zeros%s", it.what, tc ? " (bit for bit)" : "");
            if (tc) report(memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0, label(what), "differs");
            else check_close(label(what), a.data(), b.data(), it.n, 1e-6);
        }
        for (float* q : {sdx, sddt, sdB, sdC, zdx, zddt, zdB, zdC, sdA, sdD, sdh0, zdA, zdD, zdh0}) cudaCheck(cudaFree(q));
    }
    if (misalign) { cudaCheck(cudaFree(gx_buf)); gx = nullptr; }
    for (float* p : {gx, gdt, gA, gB, gC, gD, gh0, gdy, gdf, gy, gfs, gdx, gddt, gdA, gdB, gdC, gdD, gdh0})
        if (p) cudaCheck(cudaFree(p));
}

// the recurrent step: a few tokens in a row, GPU state == CPU state
static void test_step(int B, int H, int P, int G, int N) {
    Rng r; rng_seed(&r, 99 + N);
    size_t BHP = (size_t)B * H * P, BGN = (size_t)B * G * N, BHPN = BHP * N;
    Vec A(H), D = random_vec(H, &r), state = random_vec(BHPN, &r);
    for (auto& v : A) v = -expf(-1.0f + 3.0f * rng_uniform(&r));
    float *gA = to_device(A), *gD = to_device(D), *gs = to_device(state);
    double worst = 0;
    for (int step = 0; step < 4; step++) {
        Vec x = random_vec(BHP, &r), Bm = random_vec(BGN, &r), Cm = random_vec(BGN, &r), dt((size_t)B * H), y(BHP);
        for (auto& v : dt) v = softplus_f(-4.0f + 3.0f * rng_uniform(&r));
        ssd_step_cpu(y.data(), state.data(), x.data(), dt.data(), A.data(), Bm.data(), Cm.data(), D.data(), B, H, P, G, N);
        float *gx = to_device(x), *gdt = to_device(dt), *gB = to_device(Bm), *gC = to_device(Cm), *gy = device_poisoned(BHP);
        ssd_step_cuda(gy, gs, gx, gdt, gA, gB, gC, gD, B, H, P, G, N);
        worst = fmax(worst, rel_err(from_device(gy, BHP).data(), y.data(), BHP));
        for (float* p : {gx, gdt, gB, gC, gy}) cudaCheck(cudaFree(p));
    }
    char name[120];
    snprintf(name, sizeof name, "ssd step x4 B%d H%d P%d G%d N%d: y", B, H, P, G, N);
    report(worst < 1e-5, name, "rel err %.2e", worst);
    snprintf(name, sizeof name, "ssd step x4 B%d H%d P%d G%d N%d: state", B, H, P, G, N);
    check_close(name, from_device(gs, BHPN).data(), state.data(), BHPN, 1e-5);
    for (float* p : {gA, gD, gs}) cudaCheck(cudaFree(p));
}

int main() {
    // the plain kernels
    test_shape(2, 1, 4, 4, 2, 8, true, true, 1);      // L = 1
    test_shape(2, 7, 4, 4, 1, 8, false, false, 2);    // one partial chunk
    test_shape(1, 64, 2, 8, 2, 16, true, false, 3);   // exactly one chunk
    test_shape(2, 70, 4, 5, 2, 6, false, true, 4);    // a full and a partial chunk, odd P and N
    test_shape(1, 200, 3, 16, 1, 32, true, true, 5);  // four chunks, the last partial
    test_shape(1, 130, 2, 64, 1, 128, true, true, 6, true);  // Mamba-2's head shape, x misaligned
    // the tensor-core kernels (forward chunks of 32, backward chunks of 64)
    test_shape(1, 130, 2, 64, 1, 128, true, true, 6);   // Mamba-2's head shape
    test_shape(2, 1, 4, 64, 2, 64, true, true, 7);      // L = 1, N 64, 2 groups
    test_shape(1, 37, 2, 64, 1, 128, false, false, 8);  // one partial chunk
    test_shape(2, 300, 4, 64, 2, 128, true, true, 9);   // several chunks, the last partial, 2 groups
    test_shape(1, 150, 3, 32, 1, 128, true, false, 10); // P 32, 3 heads in one group
    test_shape(1, 64, 2, 96, 2, 64, false, true, 11);   // exactly one backward chunk, P 96
    test_step(2, 4, 5, 2, 6);
    test_step(1, 3, 64, 1, 128);
    return test_summary();
}
