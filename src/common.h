// common.h: shared helpers for every component.
//
// Conventions used throughout src/:
//   - Every component has a CPU reference `name_cpu(...)` and, when compiled by
//     nvcc, a CUDA version `name_cuda(...)` with the same arguments in the same
//     order. CUDA versions take device pointers.
//   - Tensors are row-major; comments give shapes, e.g. x: (B, L, E) means
//     x[(b*L + t)*E + e].
//   - Backward functions ACCUMULATE (+=) into every gradient they write, so the
//     caller zeroes gradients once per step.
//   - floatX is the activation type. Parameters, gradients and optimizer state
//     are always float (fp32 master weights).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef float floatX;  // activation type; kernels are written so this can become bf16

// ---------------------------------------------------------------------------
// errors: a clear message and a nonzero exit

#define FATAL(...)                                                   \
    do {                                                             \
        fprintf(stderr, "error: " __VA_ARGS__);                      \
        fprintf(stderr, "\n");                                       \
        exit(1);                                                     \
    } while (0)

static inline void* malloc_check(size_t bytes) {
    void* p = malloc(bytes > 0 ? bytes : 1);
    if (!p) FATAL("out of host memory allocating %zu bytes", bytes);
    return p;
}

// ---------------------------------------------------------------------------
// CUDA helpers (only when compiled by nvcc)

#ifdef __CUDACC__
#include <cublas_v2.h>
#include <cuda_runtime.h>

#define cudaCheck(call)                                                          \
    do {                                                                         \
        cudaError_t err_ = (call);                                               \
        if (err_ != cudaSuccess) {                                               \
            fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorName(err_), \
                    __FILE__, __LINE__, cudaGetErrorString(err_));               \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

#define cublasCheck(call)                                                         \
    do {                                                                          \
        cublasStatus_t st_ = (call);                                              \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                       \
            fprintf(stderr, "cuBLAS error %d at %s:%d\n", (int)st_, __FILE__, __LINE__); \
            exit(1);                                                              \
        }                                                                         \
    } while (0)

// check the last launch (cheap; does not synchronize)
#define cudaCheckLaunch() cudaCheck(cudaGetLastError())

static inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

// one cuBLAS handle for the process, created on first use
static cublasHandle_t cublas_handle() {
    static cublasHandle_t handle = nullptr;
    if (!handle) cublasCheck(cublasCreate(&handle));
    return handle;
}
#endif

// ---------------------------------------------------------------------------
// backend dispatch: DISPATCH(on_gpu, rmsnorm_forward, args...) calls
// rmsnorm_forward_cuda(args...) or rmsnorm_forward_cpu(args...).

#ifdef __CUDACC__
#define DISPATCH(on_gpu, fn, ...)            \
    do {                                     \
        if (on_gpu) fn##_cuda(__VA_ARGS__);  \
        else fn##_cpu(__VA_ARGS__);          \
    } while (0)
#else
#define DISPATCH(on_gpu, fn, ...) do { (void)(on_gpu); fn##_cpu(__VA_ARGS__); } while (0)
#endif

// ---------------------------------------------------------------------------
// memory on either backend

static inline void* backend_malloc(bool on_gpu, size_t bytes) {
#ifdef __CUDACC__
    if (on_gpu) {
        void* p = nullptr;
        cudaCheck(cudaMalloc(&p, bytes > 0 ? bytes : 1));
        return p;
    }
#endif
    if (on_gpu) FATAL("built without CUDA");
    return malloc_check(bytes);
}

static inline void backend_free(bool on_gpu, void* p) {
#ifdef __CUDACC__
    if (on_gpu) { cudaCheck(cudaFree(p)); return; }
#endif
    free(p);
}

static inline void backend_memset0(bool on_gpu, void* p, size_t bytes) {
#ifdef __CUDACC__
    if (on_gpu) { cudaCheck(cudaMemsetAsync(p, 0, bytes)); return; }
#endif
    memset(p, 0, bytes);
}

// copy between host and either backend (dir: to_backend true = host -> backend)
static inline void backend_copy(bool on_gpu, void* dst, const void* src, size_t bytes, bool to_backend) {
#ifdef __CUDACC__
    if (on_gpu) {
        cudaCheck(cudaMemcpy(dst, src, bytes, to_backend ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost));
        return;
    }
#endif
    (void)to_backend;
    memcpy(dst, src, bytes);
}

// ---------------------------------------------------------------------------
// small math helpers shared by the CPU references

static inline float silu_f(float x) { return x / (1.0f + expf(-x)); }
static inline float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }
// softplus(x) = log(1 + e^x), linear above 20 as in the reference Mamba
static inline float softplus_f(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// ---------------------------------------------------------------------------
// deterministic RNG (xorshift*), same stream on every machine

typedef struct { uint64_t state; } Rng;
static inline void rng_seed(Rng* r, uint64_t seed) { r->state = seed * 0x9E3779B97F4A7C15ull + 1; }
static inline uint32_t rng_u32(Rng* r) {
    r->state ^= r->state >> 12; r->state ^= r->state << 25; r->state ^= r->state >> 27;
    return (uint32_t)((r->state * 0x2545F4914F6CDD1Dull) >> 32);
}
static inline float rng_uniform(Rng* r) { return (rng_u32(r) >> 8) * (1.0f / 16777216.0f); }  // [0,1)
static inline float rng_normal(Rng* r) {
    float u1 = rng_uniform(r) + 1e-7f, u2 = rng_uniform(r);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}
