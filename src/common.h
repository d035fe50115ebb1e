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

// bf16 <-> float, so kernels can be written once over floatX
#include <cuda_bf16.h>
typedef __nv_bfloat16 bf16;
__host__ __device__ __forceinline__ float to_f32(float x) { return x; }
__host__ __device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }
template <typename T> __host__ __device__ __forceinline__ T from_f32(float x);
template <> __host__ __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __host__ __device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16(x); }

// 16 bytes of T (4 floats or 8 bf16) for vectorized global loads and stores;
// the pointer must be 16-byte aligned
template <typename T> struct alignas(16) Packed128 {
    static constexpr int size = 16 / sizeof(T);
    T v[size];
    __device__ __forceinline__ float f(int i) const { return to_f32(v[i]); }
    __device__ __forceinline__ void set(int i, float x) { v[i] = from_f32<T>(x); }
};
template <typename T> __device__ __forceinline__ Packed128<T> load128(const T* p) {
    Packed128<T> r;
    *reinterpret_cast<int4*>(&r) = *reinterpret_cast<const int4*>(p);
    return r;
}
// streaming (evict-first) variants for data touched once
template <typename T> __device__ __forceinline__ Packed128<T> load128cs(const T* p) {
    Packed128<T> r;
    *reinterpret_cast<int4*>(&r) = __ldcs(reinterpret_cast<const int4*>(p));
    return r;
}
template <typename T> __device__ __forceinline__ void store128(T* p, const Packed128<T>& x) {
    *reinterpret_cast<int4*>(p) = *reinterpret_cast<const int4*>(&x);
}
template <typename T> __device__ __forceinline__ void store128cs(T* p, const Packed128<T>& x) {
    __stcs(reinterpret_cast<int4*>(p), *reinterpret_cast<const int4*>(&x));
}
static inline bool aligned16(const void* p) { return ((uintptr_t)p & 15) == 0; }

// sum / max over the 32 lanes of a warp, the result in every lane
__device__ __forceinline__ float warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

// One level of a reduce-scatter across lanes: lanes with bit OFF set keep the upper half
// v[H, 2H), the others the lower half, each adding its partner's (lane ^ OFF) copy. Levels
// <2,2> then <1,1> over 4 values leave lane l with the 4-lane sum of v[l % 4].
template <int H, int OFF>
__device__ __forceinline__ void reduce_scatter_level(float* v, int lane) {
    bool up = lane & OFF;
#pragma unroll
    for (int i = 0; i < H; i++) {
        float send = up ? v[i] : v[i + H], keep = up ? v[i + H] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, OFF);
    }
}
// V sums over the warp's 32 lanes (V a power of two <= 32) in V - 1 + log2(32 / V) shuffles, where V
// warp_sums take 5 V: returns, in lane l, the warp's sum of v[l >> (5 - log2 V)] (v is clobbered).
// Levels on lane bits 16, 8, ... halve the values a lane holds; the low bits then sum the last one.
template <int V, int OFF = 16>
__device__ __forceinline__ float warp_reduce_scatter(float* v, int lane) {
    static_assert(V >= 1 && V <= 32 && (V & (V - 1)) == 0, "V: a power of two up to 32");
    if constexpr (V > 1) {
        reduce_scatter_level<V / 2, OFF>(v, lane);
        return warp_reduce_scatter<V / 2, OFF / 2>(v, lane);
    } else {
        float t = v[0];
#pragma unroll
        for (int off = OFF; off > 0; off >>= 1) t += __shfl_xor_sync(0xffffffffu, t, off);
        return t;
    }
}

// a device buffer a kernel family keeps for the process and grows on demand:
//   static DeviceScratch scratch;  float* p = scratch.get(n);
// cudaFree waits for the device, so no kernel still reads a buffer that is replaced
struct DeviceScratch {
    float* ptr = nullptr;
    size_t cap = 0;  // floats
    float* get(size_t floats) {
        if (floats > cap) {
            if (ptr) cudaCheck(cudaFree(ptr));
            cudaCheck(cudaMalloc(&ptr, floats * sizeof(float)));
            cap = floats;
        }
        return ptr;
    }
};

// cp.async (sm_80+): a global -> shared copy that does not pass through registers; the thread goes
// on at once and waits for its copies later (cp_async_wait). BYTES = 16 (.cg, cached in L2 only; the
// source 16-byte aligned) or 4 (.ca; a float anywhere). full = false reads nothing and zero-fills the
// destination (rows or channels past the end).
template <int BYTES>
__device__ __forceinline__ void cp_async(void* sdst, const void* gsrc, bool full) {
    static_assert(BYTES == 16 || BYTES == 4, "cp.async sizes used here");
    unsigned s = (unsigned)__cvta_generic_to_shared(sdst);
    int n = full ? BYTES : 0;
    if constexpr (BYTES == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gsrc), "r"(n) : "memory");
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gsrc), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// all of this thread's committed groups but the PENDING most recent ones have landed
template <int PENDING>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory"); }

// dst[0..3] += v atomically: one 16-byte atomic on sm_90+, four float atomics
// before (A100, RTX 30xx/40xx); dst must be 16-byte aligned
__device__ __forceinline__ void atomic_add_float4(float* dst, float4 v) {
#if __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float4*>(dst), v);
#else
    atomicAdd(dst, v.x); atomicAdd(dst + 1, v.y); atomicAdd(dst + 2, v.z); atomicAdd(dst + 3, v.w);
#endif
}

// check the last launch (cheap; does not synchronize)
#define cudaCheckLaunch() cudaCheck(cudaGetLastError())

static inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

// the current device's number of SMs (queried once): grid sizes that fill the GPU
static int gpu_sm_count() {
    static int sms = 0;
    if (sms == 0) {
        int dev = 0;
        cudaCheck(cudaGetDevice(&dev));
        cudaCheck(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    }
    return sms;
}

// one cuBLAS handle for the process, created on first use
static cublasHandle_t cublas_handle() {
    static cublasHandle_t handle = nullptr;
    if (!handle) cublasCheck(cublasCreate(&handle));
    return handle;
}

// The stream the framework's kernels, copies and cuBLAS calls go to, as PyTorch's "current stream":
// the legacy default stream (0) unless a StreamScope holds another. Every launch in src/ names it
// (<<<grid, block, smem, launch_stream()>>>); the GPU decoder runs a step of a layer pattern inside a
// scope of its own stream, so that the framework's step functions can be captured into a CUDA graph.
static cudaStream_t g_launch_stream = 0;
static inline cudaStream_t launch_stream() { return g_launch_stream; }

// sets launch_stream() and the shared cuBLAS handle's stream for its lifetime (nested scopes restore
// the outer one). cublasSetStream resets the handle's workspace to cuBLAS's default one, which a
// call may then allocate, and no allocation may happen inside a graph capture: so a non-default
// stream also gets a fixed workspace (32 MiB, cuBLAS's size for Hopper, allocated on first use).
struct StreamScope {
    cudaStream_t prev;
    explicit StreamScope(cudaStream_t s) : prev(g_launch_stream) { use(s); }
    ~StreamScope() { use(prev); }
    StreamScope(const StreamScope&) = delete;
    static void use(cudaStream_t s) {
        static void* workspace = nullptr;
        const size_t workspace_bytes = 32u << 20;
        g_launch_stream = s;
        cublasCheck(cublasSetStream(cublas_handle(), s));
        if (s) {
            if (!workspace) cudaCheck(cudaMalloc(&workspace, workspace_bytes));
            cublasCheck(cublasSetWorkspace(cublas_handle(), workspace, workspace_bytes));
        }
    }
};
#endif

// ---------------------------------------------------------------------------
// backend wrappers. Every component `name` has name_cpu(args) and name_cuda(args)
// and a plain wrapper the models call, so every caller can be found with grep:
//
//   static void rmsnorm_forward(bool on_gpu, args) {
//       if (on_gpu) GPU_CALL(rmsnorm_forward_cuda(args));
//       else rmsnorm_forward_cpu(args);
//   }
//
// GPU_CALL is the call under nvcc and a clear error in a CPU-only build.

#ifdef __CUDACC__
#define GPU_CALL(...) __VA_ARGS__
#else
#define GPU_CALL(...) FATAL("this binary was built without CUDA (no nvcc)")
#endif

// How a backward writes an activation's gradient. The rule is GRAD_ADD (+=): where an activation
// feeds several consumers, each adds its part into one buffer. GRAD_SET (=) is for the first (or
// only) part written into a scratch buffer: the buffer needs no zeroing and its old value is not
// read (the mamba-130m step zeroed and re-read ~230 MB a layer for nothing). SET gives the bits of
// ADD onto zeros (0 + x == x; only a -0 may come out +0 under ADD). Parameter gradients always add.
enum GradWrite { GRAD_ADD, GRAD_SET };

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
    if (on_gpu) { cudaCheck(cudaMemsetAsync(p, 0, bytes, launch_stream())); return; }
#endif
    memset(p, 0, bytes);
}

// copy within one backend (device to device on the GPU)
static inline void backend_copy_device(bool on_gpu, void* dst, const void* src, size_t bytes) {
#ifdef __CUDACC__
    if (on_gpu) { cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, launch_stream())); return; }
#endif
    memcpy(dst, src, bytes);
}

// copy `height` rows of `width` bytes within one backend, rows `spitch` / `dpitch` bytes apart
static inline void backend_copy_2d(bool on_gpu, void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height) {
#ifdef __CUDACC__
    if (on_gpu) { cudaCheck(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, cudaMemcpyDeviceToDevice, launch_stream())); return; }
#endif
    for (size_t r = 0; r < height; r++) memcpy((char*)dst + r * dpitch, (const char*)src + r * spitch, width);
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
// scalar math, one definition for the CPU references and the CUDA kernels

#ifdef __CUDACC__
#define HOST_DEVICE __host__ __device__ __forceinline__
#else
#define HOST_DEVICE inline
#endif

HOST_DEVICE float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }
HOST_DEVICE float silu_f(float x) { return x * sigmoid_f(x); }
// softplus(x) = log(1 + e^x), the identity above 20 as in the reference Mamba
HOST_DEVICE float softplus_f(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
// d softplus / dx = sigmoid(x), except above 20 where softplus_f is the identity
HOST_DEVICE float softplus_grad_f(float x) { return x > 20.0f ? 1.0f : sigmoid_f(x); }

// ---------------------------------------------------------------------------
// out[c] += sum over r of part[r][c], part (R, C) row-major: the second half of every deterministic
// column sum (a weight's gradient over B*L rows: each block or task writes one row of partial sums,
// then these add the rows in a fixed order, so the bits repeat from run to run, unlike float atomics).
// The CPU adds r = 0, 1, ... per column; the kernel a fixed tree (below); each is its own fixed order.

static void column_sums_add_cpu(float* out, const float* part, int R, int C) {
#pragma omp parallel for
    for (int c = 0; c < C; c++) {
        float s = 0.0f;
        for (int r = 0; r < R; r++) s += part[(size_t)r * C + c];
        out[c] += s;
    }
}

#ifdef __CUDACC__
// block (8 columns, 128 rows): thread (x, y) sums rows y, y + 128, ... of its column (8 columns: one
// 32-byte sector a row), then a fixed tree over y in shared memory. C = 768 gives 96 blocks, so
// the partials (4 MB for an RMSNorm backward's 1320 x 768) are read by most SMs. (One thread a
// column walking all rows took 11.7 us for 256 x 1536 on an H100: 6 blocks.)
#define COLUMN_SUMS_COLS 8
#define COLUMN_SUMS_ROWS 128
__global__ void __launch_bounds__(COLUMN_SUMS_COLS * COLUMN_SUMS_ROWS)
    column_sums_add_kernel(float* out, const float* part, int R, int C) {
    __shared__ float sh[COLUMN_SUMS_ROWS][COLUMN_SUMS_COLS];
    const int x = threadIdx.x, y = threadIdx.y, c = blockIdx.x * COLUMN_SUMS_COLS + x;
    float s = 0.0f;
    if (c < C)
        for (int r = y; r < R; r += COLUMN_SUMS_ROWS) s += part[(size_t)r * C + c];
    sh[y][x] = s;
    __syncthreads();
    for (int stride = COLUMN_SUMS_ROWS / 2; stride > 0; stride /= 2) {
        if (y < stride) sh[y][x] += sh[y + stride][x];
        __syncthreads();
    }
    if (y == 0 && c < C) out[c] += sh[0][x];
}
static void column_sums_add_cuda(float* out, const float* part, int R, int C) {
    if (C == 0) return;
    column_sums_add_kernel<<<ceil_div(C, COLUMN_SUMS_COLS), dim3(COLUMN_SUMS_COLS, COLUMN_SUMS_ROWS), 0, launch_stream()>>>(out, part, R, C);
    cudaCheckLaunch();
}
#endif

// ---------------------------------------------------------------------------
// deterministic RNG (xorshift*), same stream on every machine

// splitmix64 (Steele, Lea and Flood 2014): a stateless 64-bit hash, for draws that must not
// depend on history (the data loader's windows, LoRA's dropout masks on both backends)
HOST_DEVICE uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

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
