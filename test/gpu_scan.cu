// gpu_scan.cu: CUDA selective scan vs the CPU reference (src/selective_scan.h).
// Outputs start NaN-poisoned; gradients start from the same random contents on
// both sides (the backward must add into them). Ends with a timing line for a
// model-sized shape (not a test).
#include "test_util.h"
#include "../src/selective_scan.h"

static void test_shape(int B, int L, int E, int N, uint64_t seed) {
    Rng r; rng_seed(&r, seed);
    size_t BLE = (size_t)B * L * E, BLN = (size_t)B * L * N, EN = (size_t)E * N;
    int nc = scan_n_chunks(L);
    size_t HS = (size_t)B * nc * E * N;
    std::vector<float> u = random_vec(BLE, &r, -1.5f, 1.5f), delta = random_vec(BLE, &r, -3.0f, 1.0f);
    std::vector<float> A_log(EN);
    for (int e = 0; e < E; e++)
        for (int n = 0; n < N; n++) A_log[e * N + n] = logf((float)(n + 1)) + 0.2f * (rng_uniform(&r) - 0.5f);
    std::vector<float> Bm = random_vec(BLN, &r), Cm = random_vec(BLN, &r), D = random_vec(E, &r);
    std::vector<float> z = random_vec(BLE, &r, -2.0f, 2.0f), delta_bias = random_vec(E, &r, -1.0f, 0.5f);
    std::vector<float> dout = random_vec(BLE, &r);

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
    float *d_u = to_device(u), *d_delta = to_device(delta), *d_A_log = to_device(A_log), *d_Bm = to_device(Bm);
    float *d_Cm = to_device(Cm), *d_D = to_device(D), *d_z = to_device(z), *d_bias = to_device(delta_bias);
    float *d_dout = to_device(dout), *d_out = device_poisoned(BLE), *d_hs = device_poisoned(HS);
    selective_scan_forward_cuda(d_out, d_hs, d_u, d_delta, d_A_log, d_Bm, d_Cm, d_D, d_z, d_bias, B, L, E, N);
    char tag[96], name[160];
    snprintf(tag, sizeof tag, "B=%d L=%d E=%d N=%d", B, L, E, N);
    snprintf(name, sizeof name, "scan forward out %s", tag);
    check_close(name, from_device(d_out, BLE).data(), out.data(), BLE, 1e-5);
    snprintf(name, sizeof name, "scan forward hs %s", tag);
    check_close(name, from_device(d_hs, HS).data(), hs.data(), HS, 1e-5);

    float* d_g[8];
    for (int k = 0; k < 8; k++) d_g[k] = to_device(init[k]);
    // backward from the CPU's hs, so each direction is tested on its own
    cudaCheck(cudaMemcpy(d_hs, hs.data(), HS * sizeof(float), cudaMemcpyHostToDevice));
    selective_scan_backward_cuda(d_g[0], d_g[1], d_g[2], d_g[3], d_g[4], d_g[5], d_g[6], d_g[7], d_dout, d_u,
                                 d_delta, d_A_log, d_Bm, d_Cm, d_D, d_z, d_bias, d_hs, B, L, E, N);
    for (int k = 0; k < 8; k++) {
        // compare what was added (got - init vs ref - init): overwriting instead of
        // accumulating fails, and small gradients are not hidden by the O(1) init
        std::vector<float> got = from_device(d_g[k], sizes[k]), dg(sizes[k]), dr(sizes[k]);
        for (size_t i = 0; i < sizes[k]; i++) { dg[i] = got[i] - init[k][i]; dr[i] = ref[k][i] - init[k][i]; }
        snprintf(name, sizeof name, "scan backward %s %s", names[k], tag);
        check_close(name, dg.data(), dr.data(), sizes[k], 1e-4);
    }
    float* bufs[] = {d_u, d_delta, d_A_log, d_Bm, d_Cm, d_D, d_z, d_bias, d_dout, d_out, d_hs};
    for (float* p : bufs) cudaCheck(cudaFree(p));
    for (int k = 0; k < 8; k++) cudaCheck(cudaFree(d_g[k]));
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
    test_shape(1, 1, 5, 16, 1);
    test_shape(1, 1, 1, 3, 2);
    test_shape(2, 7, 37, 16, 3);
    test_shape(2, 70, 33, 3, 4);     // two chunks, partial last; N < G
    test_shape(2, 130, 64, 16, 5);
    test_shape(3, 1000, 96, 16, 6);
    test_shape(2, 129, 21, 8, 7);
    test_shape(1, 65, 10, 32, 8);
    test_shape(2, 70, 9, 40, 9);     // N > 32: two states per lane
    test_shape(1, 64, 5, 64, 10);
    time_shape(8, 1024, 1536, 16);
    return test_summary();
}
