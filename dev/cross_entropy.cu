// dev/cross_entropy.cu: fused softmax + cross-entropy forward and backward over logits (BT, V).
//
//   losses[i] = logsumexp(logits[i]) - logits[i, target[i]]     (target < 0: loss 0, grad 0)
//   if write_grad: logits[i] is overwritten IN PLACE by (softmax(logits[i]) - onehot) * dloss_scale
// Probabilities are never stored: the write pass recomputes exp(x - max) / sum.
// Logits T (fp32 or bf16), math fp32. One block per row in every version.
//
// ./dev_cross_entropy     all versions;   ./dev_cross_entropy N   version N
//   1: three passes over the row: max, sum of exp, write          (3 reads + 1 write)
//   2: online softmax (running max and rescaled sum in one pass) + write pass (2 reads + 1 write)
//   3: as 2 with 16-byte vector loads/stores (scalar head/tail for unaligned rows), one max
//      rescale per vector, 1024-thread blocks so few rows are in flight and the write pass's
//      re-read mostly hits L2
#include <cfloat>

#include "dev_common.h"

// ---------------------------------------------------------------------------
// CPU reference on the rows i with i % row_stride == 0 (the bench shape is checked on a sample)

static void ce_cpu(float* losses, float* logits, const int* targets, int BT, int V, float scale,
                   bool write_grad, int row_stride) {
    for (int i = 0; i < BT; i += row_stride) {
        float* x = logits + (size_t)i * V;
        int t = targets[i];
        if (t < 0) {
            losses[i] = 0.0f;
            if (write_grad) for (int c = 0; c < V; c++) x[c] = 0.0f;
            continue;
        }
        float m = -FLT_MAX;
        for (int c = 0; c < V; c++) m = std::max(m, x[c]);
        double s = 0.0;
        for (int c = 0; c < V; c++) s += std::exp((double)x[c] - m);
        losses[i] = (float)(std::log(s) + m - x[t]);
        if (write_grad)
            for (int c = 0; c < V; c++)
                x[c] = (float)((std::exp((double)x[c] - m) / s - (c == t ? 1.0 : 0.0)) * scale);
    }
}

// ---------------------------------------------------------------------------
// device helpers (blockDim.x a multiple of 32; every thread gets the result; sh: 32 floats
// each; the leading barrier lets a kernel reuse sh)

// warp_max, warp_sum: src/common.h
__device__ __forceinline__ float block_max(float v, float* sh) {
    v = warp_max(v);
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    return warp_max(lane < nw ? sh[lane] : -FLT_MAX);
}
__device__ __forceinline__ float block_sum(float v, float* sh) {
    v = warp_sum(v);
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    return warp_sum(lane < nw ? sh[lane] : 0.0f);
}

// online softmax state: running max m and sum s of exp(x - m). Starting at m = -FLT_MAX (not
// -inf) keeps every exp argument finite or -inf, never NaN (inf - inf).
struct MS { float m, s; };
__device__ __forceinline__ void ms_add(MS& a, float x) {  // one exp per element
    if (x > a.m) { a.s = a.s * expf(a.m - x) + 1.0f; a.m = x; }
    else a.s += expf(x - a.m);
}
__device__ __forceinline__ MS ms_merge(MS a, MS b) {
    float m = fmaxf(a.m, b.m);
    return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}
__device__ __forceinline__ MS block_ms(MS v, float* shm, float* shs) {
    for (int o = 16; o > 0; o >>= 1)
        v = ms_merge(v, {__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o)});
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) { shm[wid] = v.m; shs[wid] = v.s; }
    __syncthreads();
    MS r = lane < nw ? MS{shm[lane], shs[lane]} : MS{-FLT_MAX, 0.0f};
    for (int o = 16; o > 0; o >>= 1)
        r = ms_merge(r, {__shfl_xor_sync(0xffffffffu, r.m, o), __shfl_xor_sync(0xffffffffu, r.s, o)});
    return r;
}

// rows whose target is < 0: loss 0, zero gradient (uniform over the block, so an early return
// of the whole block is safe)
template <typename T>
__device__ __forceinline__ void ce_ignored_row(float* losses, T* p, int row, int V, bool write_grad) {
    if (threadIdx.x == 0) losses[row] = 0.0f;
    if (write_grad)
        for (int c = threadIdx.x; c < V; c += blockDim.x) p[c] = from_f32<T>(0.0f);
}

// ---------------------------------------------------------------------------
// version 1: three passes (block max, block sum of exp(x - max), write). The target logit is
// read by thread 0 before the first reduction's barriers, so before any thread overwrites it.

template <typename T>
__global__ void ce_v1_kernel(float* losses, T* logits, const int* targets, int V, float scale,
                             bool write_grad) {
    __shared__ float sh[32];
    int row = blockIdx.x, tgt = targets[row];
    T* p = logits + (size_t)row * V;
    if (tgt < 0) { ce_ignored_row(losses, p, row, V, write_grad); return; }
    float xt = threadIdx.x == 0 ? to_f32(p[tgt]) : 0.0f;
    float m = -FLT_MAX;
    for (int c = threadIdx.x; c < V; c += blockDim.x) m = fmaxf(m, to_f32(p[c]));
    m = block_max(m, sh);
    float s = 0.0f;
    for (int c = threadIdx.x; c < V; c += blockDim.x) s += expf(to_f32(p[c]) - m);
    s = block_sum(s, sh);  // its barriers also order every read above before the writes below
    if (threadIdx.x == 0) losses[row] = logf(s) + m - xt;
    if (!write_grad) return;
    float inv = scale / s;
    for (int c = threadIdx.x; c < V; c += blockDim.x)
        p[c] = from_f32<T>(expf(to_f32(p[c]) - m) * inv - (c == tgt ? scale : 0.0f));
}

// ---------------------------------------------------------------------------
// version 2: online softmax: each thread keeps (max, sum) and rescales the sum when the max
// grows (one exp per element; with random logits the max rarely changes after the first few),
// merged across the block with the same rescaling. One read pass instead of two.

template <typename T>
__global__ void ce_v2_kernel(float* losses, T* logits, const int* targets, int V, float scale,
                             bool write_grad) {
    __shared__ float shm[32], shs[32];
    int row = blockIdx.x, tgt = targets[row];
    T* p = logits + (size_t)row * V;
    if (tgt < 0) { ce_ignored_row(losses, p, row, V, write_grad); return; }
    float xt = threadIdx.x == 0 ? to_f32(p[tgt]) : 0.0f;
    MS a = {-FLT_MAX, 0.0f};
    for (int c = threadIdx.x; c < V; c += blockDim.x) ms_add(a, to_f32(p[c]));
    a = block_ms(a, shm, shs);
    if (threadIdx.x == 0) losses[row] = logf(a.s) + a.m - xt;
    if (!write_grad) return;
    float inv = scale / a.s;
    for (int c = threadIdx.x; c < V; c += blockDim.x)
        p[c] = from_f32<T>(expf(to_f32(p[c]) - a.m) * inv - (c == tgt ? scale : 0.0f));
}

// ---------------------------------------------------------------------------
// version 3: version 2 with 16-byte accesses. A row starts 16B-aligned only when V*sizeof(T)
// is (V=50280 is, for both dtypes), so the first `head` (< VEC) elements up to the next 16B
// boundary and the last `V - tail0` (< VEC) are done as scalars. Per vector: one max over the
// VEC elements, one rescale of the running sum, VEC exps (vs a compare+branch per element).
// The write pass uses evict-first loads/stores (last touch of the row).

template <typename T>
__global__ void __launch_bounds__(1024) ce_v3_kernel(float* losses, T* logits, const int* targets,
                                                     int V, float scale, bool write_grad) {
    __shared__ float shm[32], shs[32];
    constexpr int VEC = Packed128<T>::size;
    int row = blockIdx.x, tgt = targets[row];
    T* p = logits + (size_t)row * V;
    if (tgt < 0) { ce_ignored_row(losses, p, row, V, write_grad); return; }
    float xt = threadIdx.x == 0 ? to_f32(p[tgt]) : 0.0f;
    int head = (int)(((16 - ((uintptr_t)p & 15)) & 15) / sizeof(T));  // p is sizeof(T) aligned
    head = min(head, V);
    int nvec = (V - head) / VEC;
    int tail0 = head + nvec * VEC;
    T* pv = p + head;  // 16B aligned

    MS a = {-FLT_MAX, 0.0f};
    if ((int)threadIdx.x < head) ms_add(a, to_f32(p[threadIdx.x]));
    if (tail0 + (int)threadIdx.x < V) ms_add(a, to_f32(p[tail0 + threadIdx.x]));
    for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
        Packed128<T> v = load128(pv + (size_t)i * VEC);  // default policy: re-read soon
        float vm = v.f(0);
#pragma unroll
        for (int j = 1; j < VEC; j++) vm = fmaxf(vm, v.f(j));
        float mn = fmaxf(a.m, vm);
        float s = a.s * expf(a.m - mn);
#pragma unroll
        for (int j = 0; j < VEC; j++) s += expf(v.f(j) - mn);
        a = {mn, s};
    }
    a = block_ms(a, shm, shs);  // barriers: every read of the row (and xt) happens before a write
    if (threadIdx.x == 0) losses[row] = logf(a.s) + a.m - xt;
    if (!write_grad) return;
    float inv = scale / a.s;
    if ((int)threadIdx.x < head) {
        int c = threadIdx.x;
        p[c] = from_f32<T>(expf(to_f32(p[c]) - a.m) * inv - (c == tgt ? scale : 0.0f));
    }
    if (tail0 + (int)threadIdx.x < V) {
        int c = tail0 + threadIdx.x;
        p[c] = from_f32<T>(expf(to_f32(p[c]) - a.m) * inv - (c == tgt ? scale : 0.0f));
    }
    for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
        Packed128<T> v = load128cs(pv + (size_t)i * VEC), o;
        int c0 = head + i * VEC;
#pragma unroll
        for (int j = 0; j < VEC; j++)
            o.set(j, expf(v.f(j) - a.m) * inv - (c0 + j == tgt ? scale : 0.0f));
        store128cs(pv + (size_t)i * VEC, o);
    }
}

// ---------------------------------------------------------------------------
// dispatch, validation, benchmark

template <typename T>
static void ce_run(int v, float* losses, T* logits, const int* targets, int BT, int V, float scale,
                   bool write_grad) {
    if (v == 1) ce_v1_kernel<<<BT, 512>>>(losses, logits, targets, V, scale, write_grad);
    else if (v == 2) ce_v2_kernel<<<BT, 512>>>(losses, logits, targets, V, scale, write_grad);
    else ce_v3_kernel<<<BT, 1024>>>(losses, logits, targets, V, scale, write_grad);
    cudaCheckLaunch();
}

// logits for the big shape are generated once (host RNG over 4e8 values is slow)
static const std::vector<float>& ce_host_logits(size_t n, uint64_t seed) {
    static std::vector<float> cache;
    static uint64_t cache_seed = 0;
    if (cache.size() != n || cache_seed != seed) {
        cache.assign(n, 0.0f);
        Rng r; rng_seed(&r, seed);
        dev_fill_uniform(cache, -6.0f, 6.0f, &r);
        cache_seed = seed;
    }
    return cache;
}

// validate version v on (BT, V); rows with i % row_stride == 0 are compared. If keep is given,
// the device logits buffer is handed back (for the benchmark) instead of freed.
template <typename T>
static bool ce_validate(int v, int BT, int V, int row_stride, bool write_grad, uint64_t seed,
                        double* wl, double* wg, T** keep = nullptr, int** keep_targets = nullptr) {
    size_t n = (size_t)BT * V;
    Rng r; rng_seed(&r, seed);
    std::vector<float> x;
    if (n > (1u << 24)) x = ce_host_logits(n, 4242);
    else { x.resize(n); dev_fill_normal(x, 0.0f, 3.0f, &r); }
    dev_round_to<T>(x);
    std::vector<int> tg(BT);
    for (int i = 0; i < BT; i++) tg[i] = (rng_u32(&r) % 10 == 0) ? -1 : (int)(rng_u32(&r) % V);
    if (BT > 2) tg[1] = -1;  // always exercise an ignored row
    float scale = 1.0f / BT;

    T* d_x = dev_upload<T>(x);
    int* d_t = dev_alloc<int>(BT);
    cudaCheck(cudaMemcpy(d_t, tg.data(), BT * sizeof(int), cudaMemcpyHostToDevice));
    float* d_l = dev_alloc<float>(BT);
    dev_poison(d_l, BT * sizeof(float));
    ce_run(v, d_l, d_x, d_t, BT, V, scale, write_grad);
    cudaCheck(cudaDeviceSynchronize());

    std::vector<float> ref = x, lref(BT, 0.0f);
    ce_cpu(lref.data(), ref.data(), tg.data(), BT, V, scale, write_grad, row_stride);
    std::vector<float> gl = dev_download(d_l, BT), gx = dev_download(d_x, n);
    std::vector<float> gl_s, lref_s, gx_s, ref_s;  // the sampled rows
    for (int i = 0; i < BT; i += row_stride) {
        gl_s.push_back(gl[i]);
        lref_s.push_back(lref[i]);
        gx_s.insert(gx_s.end(), gx.begin() + (size_t)i * V, gx.begin() + (size_t)(i + 1) * V);
        ref_s.insert(ref_s.end(), ref.begin() + (size_t)i * V, ref.begin() + (size_t)(i + 1) * V);
    }
    bool bf = sizeof(T) == 2;
    char what[160];
    snprintf(what, sizeof what, "cross_entropy v%d %s losses BT=%d V=%d%s", v, DType<T>::name(), BT, V,
             write_grad ? "" : " (no grad)");
    bool ok = dev_check_elem_host(what, gl_s, lref_s, 1e-5, wl);
    snprintf(what, sizeof what, "cross_entropy v%d %s %s BT=%d V=%d", v, DType<T>::name(),
             write_grad ? "dlogits" : "logits untouched", BT, V);
    // without write_grad the logits must be bit-identical (tolerance 0)
    ok &= dev_check_elem_host(what, gx_s, ref_s, write_grad ? (bf ? 1e-2 : 1e-5) : 0.0, wg);

    dev_free(d_l);
    if (keep) { *keep = d_x; *keep_targets = d_t; }
    else { dev_free(d_x); dev_free(d_t); }
    return ok;
}

static const char* ce_version_name(int v) {
    return v == 1 ? "1 three passes" : v == 2 ? "2 online softmax + write" : "3 online vec16 blk1024";
}

template <typename T> static void ce_run_version(int v) {
    const int BTb = 8192, Vb = 50280;  // bench: B*L = 8192 tokens, mamba vocab 50280 (padded)
    double wl = 0.0, wg = 0.0;
    bool ok = true;
    uint64_t seed = 3000 + v;
    const int shapes[][2] = {{1, 1}, {1, 7}, {5, 37}, {7, 1000}, {3, 1025}, {33, 50280}, {2, 50281}};
    for (auto& s : shapes) ok &= ce_validate<T>(v, s[0], s[1], 1, true, seed++, &wl, &wg);
    ok &= ce_validate<T>(v, 7, 1000, 1, false, seed++, &wl, &wg);  // losses only
    // the bench shape itself, every 97th row compared; its buffers are reused for timing
    T* logits = nullptr;
    int* targets = nullptr;
    ok &= ce_validate<T>(v, BTb, Vb, 97, true, seed++, &wl, &wg, &logits, &targets);

    float* losses = dev_alloc<float>(BTb);
    char shape[64];
    snprintf(shape, sizeof shape, "BT=%d V=%d", BTb, Vb);
    // in place: later repetitions see gradients as logits; the work per element is the same
    float ms = dev_bench_ms([&](int) { ce_run(v, losses, logits, targets, BTb, Vb, 1.0f / BTb, true); });
    size_t n = (size_t)BTb * Vb;
    // floor bytes: read logits once + write dlogits once (targets, losses negligible);
    // sfu: an exp for the sum and one for the write per element (probabilities are not stored)
    dev_print_row("cross_entropy fwd+bwd", ce_version_name(v), shape, DType<T>::name(), ms,
                  2.0 * n * sizeof(T), 2.0 * n, ok, std::max(wl, wg));
    dev_free(logits); dev_free(targets); dev_free(losses);
}

int main(int argc, char** argv) {
    dev_print_header();
    for (int v = 1; v <= 3; v++) {
        if (!dev_want_version(argc, argv, v)) continue;
        ce_run_version<float>(v);
        ce_run_version<bf16>(v);
    }
    return dev_finish();
}
