// dev_common.h: shared helpers for the kernel workbench in dev/ (llm.c dev/cuda style).
//
// Each dev/<name>.cu holds a CPU reference, several numbered kernel versions, and a main()
// that validates every version against the reference on random inputs (odd shapes and the
// benchmark shape) and then benchmarks it. Every benchmark prints ONE table line:
//
//   family | version | shape | dtype | time ms | GB/s | x floor | ok/FAIL (rel err)
//
// The floor is max(bytes / DEV_MEM_BW, sfu_ops / DEV_SFU_RATE): the bytes that must move at
// least once, and the special-function (ex2/lg2/rcp...) operations that must be issued.
// "x floor" = measured time / that floor (1.00x would be perfect).
//
// API (stable; other dev files depend on it, append new helpers at the end):
//   from ../src/common.h (one definition for src/ and dev/):
//     bf16, to_f32(x), from_f32<T>(f)                   dtype conversions (host+device)
//     Packed128<T> (.f(i), .set(i, x)), load128/load128cs/store128/store128cs, aligned16(p)
//                                                       16-byte vector access (cs: evict-first)
//     sigmoid_f, silu_f, softplus_f, softplus_grad_f    scalar math (host+device)
//     cudaCheck, cudaCheckLaunch, ceil_div, Rng / rng_seed / rng_uniform / rng_normal
//   DType<T>::name()           "fp32" / "bf16" for the table
//   dev_fill_uniform / dev_fill_normal (std::vector<float>&, ..., Rng*)
//   dev_round_to<T>(vec)       round a host vector to T's precision (so the CPU reference sees
//                              exactly the values the GPU sees)
//   dev_upload<T>(vec) -> T*, dev_download<T>(ptr, n) -> vector<float>, dev_alloc<T>(n),
//   dev_free(ptr), dev_poison(ptr, bytes)   (0xFF bytes: NaN in fp32 and bf16)
//   dev_rel_err(got, ref)      ||got-ref|| / ||ref||, +inf if got has a NaN/inf
//   dev_check<T>(what, d_got, ref, tol, &worst)  download + compare; prints on failure,
//                              counts failures; returns ok
//   dev_check_elem<T>(what, d_got, ref, rtol, &worst), dev_check_elem_host(what, got, ref, ...)
//                              the same, elementwise (for accumulated += outputs)
//   dev_bench_ms(fn, warmup, repeats)  median ms of fn(rep) (fn gets the repetition index, to
//                              rotate among input copies); L2 is flushed before every run
//   dev_print_header(), dev_print_row(...), dev_want_version(argc, argv, v), dev_finish()
#pragma once
#include "../src/common.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

// ---------------------------------------------------------------------------
// machine constants for the floor (H100 SXM)

// achievable HBM3 bandwidth (peak 3.35 TB/s; ~3.0 TB/s is what a good streaming kernel gets)
#define DEV_MEM_BW 3.0e12
// special-function unit throughput: 132 SMs * 16 MUFU ops/clk/SM * ~1.75 GHz ~= 3.7e12 ops/s
#define DEV_SFU_RATE 3.7e12

// ---------------------------------------------------------------------------
// dtypes

// bf16, to_f32, from_f32<T> and Packed128<T> come from src/common.h
template <typename T> struct DType;
template <> struct DType<float> { static const char* name() { return "fp32"; } };
template <> struct DType<bf16> { static const char* name() { return "bf16"; } };

// ---------------------------------------------------------------------------
// host random data

static void dev_fill_uniform(std::vector<float>& v, float lo, float hi, Rng* r) {
    for (auto& x : v) x = lo + (hi - lo) * rng_uniform(r);
}
static void dev_fill_normal(std::vector<float>& v, float mean, float std, Rng* r) {
    for (auto& x : v) x = mean + std * rng_normal(r);
}
template <typename T> static void dev_round_to(std::vector<float>& v) {
    for (auto& x : v) x = to_f32(from_f32<T>(x));
}

// ---------------------------------------------------------------------------
// device memory

template <typename T> static T* dev_alloc(size_t n) {
    T* p = nullptr;
    cudaCheck(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
    return p;
}
static void dev_free(void* p) { cudaCheck(cudaFree(p)); }
// 0xFF bytes are NaN both as fp32 and as bf16: a kernel that skips an output element fails
static void dev_poison(void* p, size_t bytes) { cudaCheck(cudaMemset(p, 0xFF, bytes)); }

template <typename T> static T* dev_upload(const std::vector<float>& h) {
    std::vector<T> tmp(h.size());
    for (size_t i = 0; i < h.size(); i++) tmp[i] = from_f32<T>(h[i]);
    T* d = dev_alloc<T>(h.size());
    cudaCheck(cudaMemcpy(d, tmp.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}
template <typename T> static std::vector<float> dev_download(const T* d, size_t n) {
    std::vector<T> tmp(n);
    cudaCheck(cudaMemcpy(tmp.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    std::vector<float> h(n);
    for (size_t i = 0; i < n; i++) h[i] = to_f32(tmp[i]);
    return h;
}

// ---------------------------------------------------------------------------
// validation

static int g_dev_failures = 0;
static int g_dev_checks = 0;

// ||got - ref|| / ||ref|| in double; +inf when got holds a NaN or inf (poison left behind)
static double dev_rel_err(const std::vector<float>& got, const std::vector<float>& ref) {
    if (got.size() != ref.size()) return INFINITY;
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < got.size(); i++) {
        if (!std::isfinite(got[i])) return INFINITY;
        double d = (double)got[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * (double)ref[i];
    }
    if (den == 0.0) return num == 0.0 ? 0.0 : INFINITY;
    return std::sqrt(num / den);
}

// compare a device buffer against a host reference; updates *worst with the max error seen
template <typename T>
static bool dev_check(const char* what, const T* d_got, const std::vector<float>& ref, double tol,
                      double* worst = nullptr) {
    std::vector<float> got = dev_download(d_got, ref.size());
    double err = dev_rel_err(got, ref);
    bool ok = err <= tol;  // NaN/inf err fails
    g_dev_checks++;
    if (worst && !(err <= *worst)) *worst = err;
    if (!ok) {
        g_dev_failures++;
        size_t first_bad = 0;
        double bad = -1.0;
        for (size_t i = 0; i < got.size(); i++) {  // the worst element, for debugging
            double d = std::isfinite(got[i]) ? std::fabs((double)got[i] - ref[i]) : INFINITY;
            if (d > bad) { bad = d; first_bad = i; }
        }
        fprintf(stderr, "  FAIL %s: rel err %.3e > tol %.1e (worst at %zu: got %.6g ref %.6g)\n", what,
                err, tol, first_bad, got.empty() ? 0.0 : got[first_bad],
                ref.empty() ? 0.0 : ref[first_bad]);
    }
    return ok;
}

// ---------------------------------------------------------------------------
// timing

// a buffer larger than L2 (50 MB on H100); writing it evicts whatever a previous run left
static void dev_flush_l2() {
    static void* buf = nullptr;
    const size_t bytes = 192u << 20;
    if (!buf) cudaCheck(cudaMalloc(&buf, bytes));
    cudaCheck(cudaMemsetAsync(buf, 0, bytes));
}

// median time in ms of fn(rep) over `repeats` runs after `warmup` untimed runs; each run is
// preceded by an L2 flush (not timed) and timed alone with cudaEvents
template <typename Fn> static float dev_bench_ms(Fn fn, int warmup = 3, int repeats = 20) {
    for (int i = 0; i < warmup; i++) fn(i);
    cudaCheck(cudaDeviceSynchronize());
    cudaCheck(cudaGetLastError());
    cudaEvent_t t0, t1;
    cudaCheck(cudaEventCreate(&t0));
    cudaCheck(cudaEventCreate(&t1));
    std::vector<float> ms(repeats);
    for (int i = 0; i < repeats; i++) {
        dev_flush_l2();
        cudaCheck(cudaEventRecord(t0));
        fn(warmup + i);
        cudaCheck(cudaEventRecord(t1));
        cudaCheck(cudaEventSynchronize(t1));
        cudaCheck(cudaEventElapsedTime(&ms[i], t0, t1));
    }
    cudaCheck(cudaGetLastError());
    cudaCheck(cudaEventDestroy(t0));
    cudaCheck(cudaEventDestroy(t1));
    std::sort(ms.begin(), ms.end());
    return ms[repeats / 2];
}

// ---------------------------------------------------------------------------
// table

static void dev_print_header() {
    printf("%-22s | %-28s | %-24s | %-5s | %9s | %7s | %-34s | %s\n", "family", "version", "shape",
           "dtype", "time ms", "GB/s", "x floor (mem / sfu floor ms)", "ok/FAIL (rel err)");
    fflush(stdout);
}

// bytes: bytes that must move at least once; sfu_ops: special-function ops that must be issued
// (0 if none); err: worst relative error of this version's validation runs
static void dev_print_row(const char* family, const char* version, const char* shape,
                          const char* dtype, float ms, double bytes, double sfu_ops, bool ok,
                          double err) {
    double mem_ms = bytes / DEV_MEM_BW * 1e3;
    double sfu_ms = sfu_ops / DEV_SFU_RATE * 1e3;
    double floor_ms = std::max(mem_ms, sfu_ms);
    double gbs = ms > 0 ? bytes / (ms * 1e-3) / 1e9 : 0.0;
    char fl[64];
    snprintf(fl, sizeof(fl), "%6.2fx (%.4f / %.4f)", floor_ms > 0 ? ms / floor_ms : 0.0, mem_ms, sfu_ms);
    printf("%-22s | %-28s | %-24s | %-5s | %9.4f | %7.1f | %-34s | %s (%.2e)\n", family, version,
           shape, dtype, ms, gbs, fl, ok ? "ok" : "FAIL", err);
    fflush(stdout);
}

// `./dev_x` runs every version; `./dev_x 3` runs version 3 only
static bool dev_want_version(int argc, char** argv, int v) {
    return argc < 2 || atoi(argv[1]) == v;
}

// summary line and exit code (nonzero if any check failed)
static int dev_finish() {
    fprintf(stderr, "%d checks, %d failed\n", g_dev_checks, g_dev_failures);
    return g_dev_failures ? 1 : 0;
}

// ---------------------------------------------------------------------------
// appended (kernels helper): elementwise checks. dev_check's norm-wise error averages away a
// few skipped elements of an accumulated (+=) output that cannot be poisoned; these fail when
// any |got - ref| > rtol * (|ref| + rms(ref)) (or got is NaN/inf) and report the norm-wise error.
static bool dev_check_elem_host(const char* what, const std::vector<float>& got,
                                const std::vector<float>& ref, double rtol, double* worst = nullptr) {
    double ss = 0.0;
    for (float r : ref) ss += (double)r * r;
    double rms = ref.empty() ? 0.0 : std::sqrt(ss / ref.size());
    size_t bad_i = 0, n_bad = got.size() == ref.size() ? 0 : 1;
    for (size_t i = 0; i < got.size() && i < ref.size(); i++) {
        double d = std::fabs((double)got[i] - ref[i]);
        if (!(d <= rtol * (std::fabs((double)ref[i]) + rms))) { if (!n_bad) bad_i = i; n_bad++; }
    }
    double err = dev_rel_err(got, ref);
    g_dev_checks++;
    if (worst && !(err <= *worst)) *worst = err;
    if (n_bad) {
        g_dev_failures++;
        fprintf(stderr, "  FAIL %s: %zu elements off (rtol %.1e); first at %zu: got %.6g ref %.6g; rel err %.3e\n",
                what, n_bad, rtol, bad_i, bad_i < got.size() ? got[bad_i] : 0.0f,
                bad_i < ref.size() ? ref[bad_i] : 0.0f, err);
    }
    return n_bad == 0;
}
template <typename T>
static bool dev_check_elem(const char* what, const T* d_got, const std::vector<float>& ref,
                           double rtol, double* worst = nullptr) {
    return dev_check_elem_host(what, dev_download(d_got, ref.size()), ref, rtol, worst);
}
