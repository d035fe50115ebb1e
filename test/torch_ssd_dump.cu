// torch_ssd_dump.cu: run the CPU reference of Mamba-2's SSD (src/ssd.h) on random inputs and
// write inputs, outputs and gradients to a tensor file (test/tensor_file.h) that
// test/torch_ssd_check.py recomputes independently in PyTorch float64.
//
//   build: make build/torch_ssd_dump (torch_ssd_check.py builds it with the same g++ command when
//          it is missing or older than its sources)
//   usage: build/torch_ssd_dump out.bin
//
// Names are "<case>.<tensor>". Per case:
//   config [B, L, H, P, G, N, chunk, has_h0, has_dfinal]
//   inputs x (B,L,H,P), dt (B,L,H), A (H), Bm, Cm (B,L,G,N), D (H), h0 (B,H,P,N) (zeros and not
//          passed when has_h0 = 0), dy (B,L,H,P), dfinal (B,H,P,N) (zeros and not passed when
//          has_dfinal = 0)
//   ours   y, final (chunked), y_naive, final_naive, y_quad, final_quad, y_step, final_step (the
//          recurrent step over t from h0), dx, ddt, dA, dBm, dCm, dD, dh0 (the backward from zero
//          gradients; dh0 is the gradient w.r.t. the initial state, zero or not)
#include "test_util.h"
#include "../src/ssd.h"
#include <string>
#include <vector>
#include "tensor_file.h"

typedef std::vector<float> Vec;

static Rng g_rng;
static Vec rnd(size_t n, float lo = -1.0f, float hi = 1.0f) { return random_vec(n, &g_rng, lo, hi); }
static Vec zeros(size_t n) { return Vec(n, 0.0f); }

static void dump_case(TensorFile& tf, const std::string& name, int B, int L, int H, int P, int G, int N, int chunk,
                      bool has_h0, bool has_dfinal, bool strong_decay = false) {
    std::string p = name + ".";
    size_t BLHP = (size_t)B * L * H * P, BLH = (size_t)B * L * H, BLGN = (size_t)B * L * G * N;
    size_t BHPN = (size_t)B * H * P * N;
    Vec x = rnd(BLHP, -1.5f, 1.5f), dt(BLH), A(H);
    for (auto& v : dt)  // dt = softplus(U): ~[0.001, 0.095], or ~[0.5, 3] for strong decay
        v = strong_decay ? softplus_f(-0.5f + 3.5f * rng_uniform(&g_rng)) : softplus_f(-6.9f + 4.6f * rng_uniform(&g_rng));
    for (auto& v : A) v = strong_decay ? -expf(1.0f + 1.5f * rng_uniform(&g_rng)) : -expf(-1.0f + 3.0f * rng_uniform(&g_rng));
    Vec Bm = rnd(BLGN), Cm = rnd(BLGN), D = rnd(H);
    Vec h0 = has_h0 ? rnd(BHPN) : zeros(BHPN);
    Vec dy = rnd(BLHP), dfinal = has_dfinal ? rnd(BHPN) : zeros(BHPN);
    const float* h0p = has_h0 ? h0.data() : nullptr;

    Vec y = zeros(BLHP), fs = zeros(BHPN), yn = zeros(BLHP), fn = zeros(BHPN), yq = zeros(BLHP), fq = zeros(BHPN);
    ssd_forward_chunked_cpu(y.data(), fs.data(), x.data(), dt.data(), A.data(), Bm.data(), Cm.data(), D.data(), h0p,
                            B, L, H, P, G, N, chunk);
    ssd_forward_naive_cpu(yn.data(), fn.data(), x.data(), dt.data(), A.data(), Bm.data(), Cm.data(), D.data(), h0p,
                          B, L, H, P, G, N);
    ssd_forward_quadratic_cpu(yq.data(), fq.data(), x.data(), dt.data(), A.data(), Bm.data(), Cm.data(), D.data(),
                              h0p, B, L, H, P, G, N);
    // the generation path: L single steps from h0
    Vec ys = zeros(BLHP), state = h0;
    Vec xt((size_t)B * H * P), dtt((size_t)B * H), bt((size_t)B * G * N), ct((size_t)B * G * N), yt((size_t)B * H * P);
    for (int t = 0; t < L; t++) {
        for (int b = 0; b < B; b++) {
            for (int j = 0; j < H * P; j++) xt[(size_t)b * H * P + j] = x[((size_t)b * L + t) * H * P + j];
            for (int j = 0; j < H; j++) dtt[(size_t)b * H + j] = dt[((size_t)b * L + t) * H + j];
            for (int j = 0; j < G * N; j++) {
                bt[(size_t)b * G * N + j] = Bm[((size_t)b * L + t) * G * N + j];
                ct[(size_t)b * G * N + j] = Cm[((size_t)b * L + t) * G * N + j];
            }
        }
        ssd_step_cpu(yt.data(), state.data(), xt.data(), dtt.data(), A.data(), bt.data(), ct.data(), D.data(),
                     B, H, P, G, N);
        for (int b = 0; b < B; b++)
            for (int j = 0; j < H * P; j++) ys[((size_t)b * L + t) * H * P + j] = yt[(size_t)b * H * P + j];
    }
    Vec dx = zeros(BLHP), ddt = zeros(BLH), dA = zeros(H), dBm = zeros(BLGN), dCm = zeros(BLGN), dD = zeros(H);
    Vec dh0 = zeros(BHPN);
    ssd_backward_cpu(dx.data(), ddt.data(), dA.data(), dBm.data(), dCm.data(), dD.data(), dh0.data(), dy.data(),
                     has_dfinal ? dfinal.data() : nullptr, x.data(), dt.data(), A.data(), Bm.data(), Cm.data(),
                     D.data(), h0p, B, L, H, P, G, N);

    Vec config = {(float)B, (float)L, (float)H, (float)P, (float)G, (float)N, (float)chunk, (float)has_h0,
                  (float)has_dfinal};
    tf.add(p + "config", config, {9});
    tf.add(p + "x", x, {B, L, H, P});
    tf.add(p + "dt", dt, {B, L, H});
    tf.add(p + "A", A, {H});
    tf.add(p + "Bm", Bm, {B, L, G, N});
    tf.add(p + "Cm", Cm, {B, L, G, N});
    tf.add(p + "D", D, {H});
    tf.add(p + "h0", h0, {B, H, P, N});
    tf.add(p + "dy", dy, {B, L, H, P});
    tf.add(p + "dfinal", dfinal, {B, H, P, N});
    tf.add(p + "y", y, {B, L, H, P});
    tf.add(p + "final", fs, {B, H, P, N});
    tf.add(p + "y_naive", yn, {B, L, H, P});
    tf.add(p + "final_naive", fn, {B, H, P, N});
    tf.add(p + "y_quad", yq, {B, L, H, P});
    tf.add(p + "final_quad", fq, {B, H, P, N});
    tf.add(p + "y_step", ys, {B, L, H, P});
    tf.add(p + "final_step", state, {B, H, P, N});
    tf.add(p + "dx", dx, {B, L, H, P});
    tf.add(p + "ddt", ddt, {B, L, H});
    tf.add(p + "dA", dA, {H});
    tf.add(p + "dBm", dBm, {B, L, G, N});
    tf.add(p + "dCm", dCm, {B, L, G, N});
    tf.add(p + "dD", dD, {H});
    tf.add(p + "dh0", dh0, {B, H, P, N});
}

int main(int argc, char** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s out.bin\n", argv[0]);
        return 2;
    }
    rng_seed(&g_rng, 20261210);
    TensorFile tf;
    //                         B  L   H  P  G  N  chunk h0     dfinal
    dump_case(tf, "ssd.L37.G2", 2, 37, 4, 3, 2, 5, 16, true, true);
    dump_case(tf, "ssd.L1.G1", 2, 1, 4, 3, 1, 5, 16, true, true);
    dump_case(tf, "ssd.L7.G4.c7", 1, 7, 4, 2, 4, 3, 7, true, false);
    dump_case(tf, "ssd.L64.G1.noh0", 2, 64, 4, 3, 1, 5, 16, false, false);
    dump_case(tf, "ssd.L70.G2.c1", 1, 70, 4, 4, 2, 8, 1, true, true);
    dump_case(tf, "ssd.L130.G1.c32", 1, 130, 2, 4, 1, 6, 32, true, true);
    dump_case(tf, "ssd.L64.strong", 2, 64, 4, 3, 2, 5, 16, true, true, true);
    return tf.save(argv[1]) ? 0 : 1;
}
