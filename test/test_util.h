// test_util.h: tiny test harness shared by every test binary.
// Each binary prints "PASS name" / "FAIL name: why" lines and ends with
// "N passed, N failed"; test/run_tests.sh sums those over all binaries.
#pragma once
#include <cstdarg>
#include <functional>
#include <vector>
#include "../src/common.h"

static int g_passed = 0, g_failed = 0;

static void report(bool ok, const char* name, const char* fmt = "", ...) {
    if (ok) { g_passed++; printf("PASS %s\n", name); }
    else {
        g_failed++;
        printf("FAIL %s: ", name);
        va_list ap; va_start(ap, fmt); vprintf(fmt, ap); va_end(ap);
        printf("\n");
    }
    fflush(stdout);
}

static int test_summary() {
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}

static void fill_uniform(float* x, size_t n, Rng* r, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * rng_uniform(r);
}
static void fill_normal(float* x, size_t n, Rng* r, float std) {
    for (size_t i = 0; i < n; i++) x[i] = std * rng_normal(r);
}
static std::vector<float> random_vec(size_t n, Rng* r, float lo = -1.0f, float hi = 1.0f) {
    std::vector<float> v(n); fill_uniform(v.data(), n, r, lo, hi); return v;
}

// relative error ||got - ref|| / ||ref|| (NaN in got -> infinity)
static double rel_err(const float* got, const float* ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!std::isfinite(got[i])) return INFINITY;
        double d = (double)got[i] - ref[i];
        num += d * d; den += (double)ref[i] * ref[i];
    }
    return sqrt(num) / (sqrt(den) + 1e-30);
}

// compare two arrays; pass when relative error is under tol
static bool check_close(const char* name, const float* got, const float* ref, size_t n, double tol) {
    double e = rel_err(got, ref, n);
    report(e < tol, name, "rel err %.3e > tol %.1e", e, tol);
    return e < tol;
}

// Finite-difference gradient check. loss() recomputes a scalar loss from the
// current contents of `param`; `grad` holds the analytic dloss/dparam.
// Checks up to `samples` entries (all if n is smaller) with central differences
// and compares the vectors by relative error. `noise` is the resolution of one
// finite difference (float32 rounding of the loss / eps): it is added to the
// denominator so gradients below what float32 differences can see do not fail
// spuriously (the float64 PyTorch oracle checks those exactly).
static bool grad_check(const char* name, float* param, const float* grad, size_t n,
                       const std::function<double()>& loss, double tol = 2e-2,
                       float eps = 1e-2f, int samples = 24, uint64_t seed = 7, double noise = 0.0) {
    Rng r; rng_seed(&r, seed);
    std::vector<float> num, ana;
    size_t count = n < (size_t)samples ? n : (size_t)samples;
    for (size_t s = 0; s < count; s++) {
        size_t i = (n <= (size_t)samples) ? s : (rng_u32(&r) % n);
        float orig = param[i];
        param[i] = orig + eps; double lp = loss();
        param[i] = orig - eps; double lm = loss();
        param[i] = orig;
        num.push_back((float)((lp - lm) / (2.0 * eps)));
        ana.push_back(grad[i]);
    }
    char full[256]; snprintf(full, sizeof full, "gradcheck %s", name);
    double diff = 0, ref = 0;
    for (size_t i = 0; i < num.size(); i++) {
        if (!std::isfinite(ana[i])) diff = INFINITY;
        diff += ((double)ana[i] - num[i]) * ((double)ana[i] - num[i]); ref += (double)num[i] * num[i];
    }
    double e = sqrt(diff) / (sqrt(ref) + noise * sqrt((double)num.size()) + 1e-30);
    report(e < tol, full, "rel err %.3e > tol %.1e (|num| %.2e, noise %.1e)", e, tol, sqrt(ref), noise);
    return e < tol;
}

#ifdef __CUDACC__
// device buffer helpers for GPU-vs-CPU tests
static float* to_device(const float* h, size_t n) {
    float* d; cudaCheck(cudaMalloc(&d, n * sizeof(float) + 4));
    cudaCheck(cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice)); return d;
}
static float* to_device(const std::vector<float>& h) { return to_device(h.data(), h.size()); }
static std::vector<float> from_device(const float* d, size_t n) {
    std::vector<float> h(n);
    cudaCheck(cudaDeviceSynchronize());
    cudaCheck(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost)); return h;
}
// fill with NaN (0xFF bytes) so any element a kernel fails to write is caught
static float* device_poisoned(size_t n) {
    float* d; cudaCheck(cudaMalloc(&d, n * sizeof(float) + 4));
    cudaCheck(cudaMemset(d, 0xFF, n * sizeof(float))); return d;
}
#endif

// expect_fatal(name, pattern, fn): fn must exit nonzero (FATAL) with `pattern`
// in its stderr. Runs fn in a forked child so the test binary goes on.
#include <sys/wait.h>
#include <unistd.h>
#include <string>
static bool expect_fatal(const char* name, const char* pattern, const std::function<void()>& fn) {
    fflush(stdout); fflush(stderr);
    int pipefd[2];
    if (pipe(pipefd) != 0) { report(false, name, "pipe failed"); return false; }
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        dup2(pipefd[1], 2);
        if (!freopen("/dev/null", "w", stdout)) _exit(99);
        fn();
        _exit(0);  // returned normally: the error was not caught
    }
    close(pipefd[1]);
    std::string err; char buf[512]; ssize_t n;
    while ((n = read(pipefd[0], buf, sizeof buf)) > 0) err.append(buf, n);
    close(pipefd[0]);
    int status = 0; waitpid(pid, &status, 0);
    bool exited_nonzero = WIFEXITED(status) && WEXITSTATUS(status) != 0;
    bool ok = exited_nonzero && err.find(pattern) != std::string::npos;
    report(ok, name, "exit %s, stderr: %.300s", exited_nonzero ? "nonzero" : "zero or crash", err.c_str());
    return ok;
}
