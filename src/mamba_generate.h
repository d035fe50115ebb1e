// mamba_generate.h: Mamba generation on the GPU — the recurrent step (conv state +
// SSM state per layer) for `batch` sequences at once, sampling on the device, an
// optional CUDA graph of the step, and a µs/token benchmark.
//
// The CPU reference is mamba_step / mamba_generate at the end of mamba_model.h; this
// file runs the same arithmetic on the model's own device parameters (fp32):
//
//   x      = wte[token]                                        (rows, D)
//   per layer l:
//     xn   = rmsnorm(x) * norm_w
//     xz   = xn @ in_proj_w^T                                  (rows, 2E) = [x | z]
//     u    = silu(conv1d step(xz[:, :E]))                      conv state (rows, E, K-1): shifted, newest last
//     xdbl = u @ x_proj_w^T                                    (rows, R+2N) = [dt_low | Bm | Cm]
//     delta= xdbl[:, :R] @ dt_proj_w^T                         (rows, E), inside the scan step's kernel
//     y    = scan step: dt = softplus(delta + dt_bias), h = exp(dt A) h + dt Bm u,
//            y = (Cm . h + D u) * silu(z)                      SSM state (rows, E, N)
//     x   += y @ out_proj_w^T                                  (the residual add is the GEMM's beta = 1)
//   logits = rmsnorm(x) * norm_f_w @ wte^T                     (rows, V), the tied head
//
// Buffers (MambaGpuDecoder, sized for max_batch sequences; a batch uses the first `rows`):
//   conv_state (n_layer, max_batch, E, K-1), ssm_state (n_layer, max_batch, E, N): zeroed by
//   mamba_decoder_start; activations x, xn, xz, u, xdbl, y, xf, logits for max_batch rows
//   (filled with NaN at creation so a value no kernel wrote shows up as NaN); tokens (max_batch):
//   the input token of the next step.
// Everything runs on the decoder's own stream and cuBLAS handle (the handle's math mode is
// copied from cublas_handle(): TF32 or exact FP32 as the trainer/test chose), so a step can
// be captured in a CUDA graph: cuBLAS is told the stream (cublasSetStream) and then given a
// fixed workspace (cublasSetWorkspace; setting the stream resets the workspace, so it comes
// second), and no launch goes to the legacy default stream.
//
// The CUDA graph (use_graph) holds one step, tokens -> logits (~6 launches per layer); the
// plain path launches the same calls one by one and stays the reference (the tests check the
// graph's logits equal it bit for bit). Sampling is launched after the graph: it writes the
// sampled tokens to the output and to the decoder's input tokens, so a whole generation is
// queued without a host round trip per token.
// Measured (H100 80GB HBM3, mamba-130m shape, fp32 weights, graph, greedy): 690 us/step at
// batch 1, 940 at 8, 1650 at 64, against a weight-read floor of 154 us (493 MiB / 3.35 TB/s);
// at batch 1 the ~150 small kernels' launch and latency dominate (next: fuse a layer's
// elementwise work; at batch 8-64 the cuBLAS GEMMs with N = 8..64 run on few thread blocks).
//
// Sampling (sample_rows_cuda) follows sample_token of sampler.h exactly: temperature <= 0
// (or NaN) is the argmax (the lowest index among ties); otherwise the top_k largest logits
// (top_k 0 or >= V: all) in the CPU's order (larger logit first, lower index first among
// ties), weights exp((logit - max) / t) in double, and the first token in that order whose
// running sum exceeds u * sum. Every logit gets a 64-bit key (its order-preserving bits, then
// the complement of its index) that is unique and sorts exactly as the CPU's comparison; a
// radix select on the keys (8 bits a pass, one thread block per row) finds the k-th largest
// key. Then, for k <= SAMPLE_SMALL_K (1024: top-k sampling, or any small vocabulary), the k
// candidates are gathered and ranked in shared memory and one thread runs sample_token's own
// loop (the same double sums in the same order). For more candidates (top_k 0 with a large
// vocabulary) a second digit-by-digit search finds the key where the weight summed over all
// larger keys first exceeds u * sum; only the summation order of the doubles differs from the
// CPU there (relative differences ~1e-16, far below what could move a draw in practice).
//
// Random numbers: generation draws one uniform per row per new token from one host Rng
// seeded with `seed`, in the order step 0 rows 0..B-1, step 1 rows 0..B-1, ... At batch 1
// this is mamba_generate's stream, so the same seed gives the same tokens as the CPU when
// the logits are equal.
//
// LoRA: the decoder reads the base weights only. A model with unmerged adapters is refused
// (merging here would change the weights a training run goes on with); the --sample path
// merges them first, and the trainer's periodic samples of a LoRA run use the CPU step
// (mamba_generate folds the adapters into a host copy).
#pragma once
#include <algorithm>
#include <vector>
#include "mamba_model.h"

#ifdef __CUDACC__

// ---------------------------------------------------------------------------
// step kernels

// one thread per (row, channel): the causal conv's newest output from the K-1 saved inputs
// and the new one, then SiLU; the state shifts by one (oldest out, newest in). The sum is
// accumulated in conv1d_step_cpu's order. x is the first E columns of xz (row stride ldx).
__global__ void decode_conv1d_silu_step_kernel(float* __restrict__ u, float* __restrict__ state,
                                               const float* __restrict__ x, int ldx, const float* __restrict__ weight,
                                               const float* __restrict__ bias, int rows, int E, int K) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= rows * E) return;
    int b = idx / E, e = idx % E;
    float* st = state + (size_t)idx * (K - 1);
    const float* w = weight + (size_t)e * K;
    float xv = x[(size_t)b * ldx + e];
    float s = bias[e] + w[K - 1] * xv;
    for (int k = 0; k < K - 1; k++) s += w[k] * st[k];
    for (int k = 0; k + 1 < K - 1; k++) st[k] = st[k + 1];  // shift out the oldest
    if (K > 1) st[K - 2] = xv;
    u[idx] = silu_f(s);
}

// one warp per (row, channel): first delta = dt_low . dt_proj_w[e] (the dt_proj product, fused
// here: R is small), then the states n = lane, lane + 32, ... with selective_scan_step_cpu's
// arithmetic (expf / softplus_f / silu_f), y = D u + sum over the lanes of Cm h.
// xdbl (row stride ldxd) = [dt_low (R) | Bm (N) | Cm (N)]; z: columns E.. of xz (row stride ldz).
__global__ void decode_scan_step_kernel(float* __restrict__ y, float* __restrict__ h, const float* __restrict__ u,
                                        const float* __restrict__ xdbl, int ldxd, int R, const float* __restrict__ dt_proj_w,
                                        const float* __restrict__ delta_bias, const float* __restrict__ A_log,
                                        const float* __restrict__ D, const float* __restrict__ z, int ldz, int rows, int E,
                                        int N) {
    int w = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    if (w >= rows * E) return;  // whole warps
    int b = w / E, e = w % E;
    const float* xb = xdbl + (size_t)b * ldxd;
    const float* wr = dt_proj_w + (size_t)e * R;
    float dl = 0.0f;
    for (int r = lane; r < R; r += 32) dl += xb[r] * wr[r];
    float delta = warp_sum(dl);
    float ut = u[w];
    float dt = softplus_f(delta + delta_bias[e]);
    float* hb = h + (size_t)w * N;
    float part = 0.0f;
    for (int n = lane; n < N; n += 32) {
        float A = -expf(A_log[(size_t)e * N + n]);
        float hn = expf(dt * A) * hb[n] + dt * xb[R + n] * ut;
        hb[n] = hn;
        part += xb[R + N + n] * hn;
    }
    float acc = D[e] * ut + warp_sum(part);
    if (lane == 0) y[w] = acc * silu_f(z[(size_t)b * ldz + e]);
}

// ---------------------------------------------------------------------------
// sampling kernel: one block per row (see the top of the file)

#define SAMPLE_THREADS 512  // a multiple of 32: every warp runs whole (the digit passes use warp votes)
#define SAMPLE_SMALL_K 1024 // up to this many candidates: gathered and ordered in shared memory, summed as the CPU does
#define SAMPLE_UNROLL 4     // logits each thread loads at once in the digit passes (independent loads in flight)

// the order key: larger logit -> larger key; equal logits (-0 == +0 as in the CPU's
// comparison) -> the lower index has the larger key. Keys are unique.
__device__ __forceinline__ unsigned long long sample_key(float v, int i) {
    if (v == 0.0f) v = 0.0f;  // -0 -> +0
    unsigned int bits = __float_as_uint(v);
    bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);  // float order as unsigned order
    return ((unsigned long long)bits << 32) | (unsigned long long)(0xFFFFFFFFu - (unsigned int)i);
}
__device__ __forceinline__ int sample_key_index(unsigned long long key) {
    return (int)(0xFFFFFFFFu - (unsigned int)(key & 0xFFFFFFFFull));
}

__device__ unsigned long long sample_block_max(unsigned long long v, unsigned long long* sh) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    for (int off = 16; off > 0; off >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, off));
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nwarps ? sh[lane] : 0ull;
        for (int off = 16; off > 0; off >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, off));
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    v = sh[0];
    __syncthreads();  // sh is reused
    return v;
}

__device__ double sample_block_sum(double v, double* sh) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nwarps ? sh[lane] : 0.0;
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    v = sh[0];
    __syncthreads();
    return v;
}

// logits (rows, V); uniforms (rows) in [0, 1); writes the token of row r to out[r] and,
// when out2 is not null, to out2[r] too (the decoder's next input)
__global__ void __launch_bounds__(SAMPLE_THREADS)
sample_rows_kernel(int* __restrict__ out, int* __restrict__ out2, const float* __restrict__ logits, int V,
                   float temperature, int top_k, const float* __restrict__ uniforms) {
    __shared__ unsigned int cnt[256];
    __shared__ double wsum[256];
    __shared__ unsigned long long red_u64[32];
    __shared__ double red_f64[32];
    __shared__ unsigned long long s_prefix;
    __shared__ unsigned int s_remaining;
    __shared__ double s_above;
    __shared__ int s_fallback;
    const int row = blockIdx.x, tid = threadIdx.x, lane = threadIdx.x % 32;
    const float* x = logits + (size_t)row * V;

    // 1. the first token of the CPU's order: the largest logit, the lowest index among ties
    unsigned long long best = 0;
    for (int i = tid; i < V; i += blockDim.x) best = max(best, sample_key(x[i], i));
    best = sample_block_max(best, red_u64);
    const int argmax = sample_key_index(best);
    if (!(temperature > 0.0f)) {  // greedy (temperature 0, negative or NaN, as sample_token)
        if (tid == 0) { out[row] = argmax; if (out2) out2[row] = argmax; }
        return;
    }
    const int k = (top_k > 0 && top_k < V) ? top_k : V;

    // 2. thr = the k-th largest key (radix select, 8 bits a pass from the top): the top-k
    //    set is {i : key_i >= thr}. With k == V every key qualifies (thr = 0).
    unsigned long long thr = 0;
    if (k < V) {
        unsigned long long prefix = 0, mask = 0;
        unsigned int remaining = (unsigned int)k;  // how many keys of the current prefix group still to take
        for (int shift = 56; shift >= 0; shift -= 8) {
            for (int d = tid; d < 256; d += blockDim.x) cnt[d] = 0;
            __syncthreads();
            for (int i0 = 0; i0 < V; i0 += SAMPLE_UNROLL * blockDim.x) {  // uniform trip count: whole warps vote
                float v[SAMPLE_UNROLL];
#pragma unroll
                for (int j = 0; j < SAMPLE_UNROLL; j++) {  // the loads first, so they overlap
                    int i = i0 + j * blockDim.x + tid;
                    v[j] = i < V ? x[i] : 0.0f;
                }
#pragma unroll
                for (int j = 0; j < SAMPLE_UNROLL; j++) {
                    int i = i0 + j * blockDim.x + tid, d = -1;
                    if (i < V) {
                        unsigned long long key = sample_key(v[j], i);
                        if ((key & mask) == prefix) d = (int)((key >> shift) & 255);
                    }
                    unsigned int peers = __match_any_sync(0xffffffffu, d);  // lanes with the same digit
                    if (d >= 0 && lane == __ffs(peers) - 1) atomicAdd(&cnt[d], (unsigned int)__popc(peers));
                }
            }
            __syncthreads();
            if (tid == 0) {  // the digit where the count of larger keys reaches `remaining`
                unsigned int c = 0;
                int dsel = 0;
                for (int d = 255; d >= 0; d--) {
                    if (c + cnt[d] >= remaining) { dsel = d; break; }
                    c += cnt[d];
                }
                s_remaining = remaining - c;
                s_prefix = prefix | ((unsigned long long)dsel << shift);
            }
            __syncthreads();
            prefix = s_prefix;
            remaining = s_remaining;
            mask |= 255ull << shift;
        }
        thr = prefix;  // a whole key: exactly k keys are >= it
    }

    const double mx = (double)x[argmax];
    const double t = (double)temperature;

    // 3a. few candidates (k <= SAMPLE_SMALL_K): gather them, put them in the CPU's order in
    //     shared memory (each one's rank = how many keys are larger), and let one thread run
    //     sample_token's loop: the same sums in the same order as the CPU
    if (k <= SAMPLE_SMALL_K) {
        __shared__ unsigned long long ck[SAMPLE_SMALL_K];  // gathered keys, any order
        __shared__ int sidx[SAMPLE_SMALL_K];                // ordered: the token at each rank
        __shared__ double sw[SAMPLE_SMALL_K];               // ordered: its weight
        __shared__ unsigned int s_count;
        if (tid == 0) s_count = 0;
        __syncthreads();
        for (int i = tid; i < V; i += blockDim.x) {
            unsigned long long key = sample_key(x[i], i);
            if (key >= thr) ck[atomicAdd(&s_count, 1u)] = key;  // exactly k keys qualify
        }
        __syncthreads();
        for (int j = tid; j < k; j += blockDim.x) {
            unsigned long long kj = ck[j];
            int rank = 0;
            for (int q = 0; q < k; q++) rank += ck[q] > kj;  // keys are unique: ranks are 0..k-1
            int i = sample_key_index(kj);
            sidx[rank] = i;
            sw[rank] = exp(((double)x[i] - mx) / t);
        }
        __syncthreads();
        if (tid == 0) {
            double sum = 0.0;
            for (int j = 0; j < k; j++) sum += sw[j];
            double r = (double)uniforms[row] * sum, acc = 0.0;
            int token = sidx[0];  // u * sum rounded up to sum: the most likely, as sample_token
            for (int j = 0; j < k; j++) {
                acc += sw[j];
                if (r < acc) { token = sidx[j]; break; }
            }
            out[row] = token;
            if (out2) out2[row] = token;
        }
        return;
    }

    // 3b. many candidates: weights w_i = exp((x_i - max) / t) in double over the top-k set,
    //     their sum, the draw
    double total = 0.0;
    for (int i = tid; i < V; i += blockDim.x)
        if (sample_key(x[i], i) >= thr) total += exp(((double)x[i] - mx) / t);
    total = sample_block_sum(total, red_f64);
    const double r = (double)uniforms[row] * total;

    // 4. (many candidates) the first key, in descending order, whose running weight sum exceeds r, digit by
    //    digit from the top: per pass, the weight of each digit's keys inside the current
    //    prefix group; `above` is the weight of every selected key larger than the group.
    unsigned long long prefix = 0, mask = 0;
    double above = 0.0;
    if (tid == 0) s_fallback = 0;
    for (int shift = 56; shift >= 0; shift -= 8) {
        for (int d = tid; d < 256; d += blockDim.x) wsum[d] = 0.0;
        __syncthreads();
        for (int i0 = 0; i0 < V; i0 += blockDim.x) {
            int i = i0 + tid, d = -1;
            double w = 0.0;
            if (i < V) {
                unsigned long long key = sample_key(x[i], i);
                if (key >= thr && (key & mask) == prefix) {
                    d = (int)((key >> shift) & 255);
                    w = exp(((double)x[i] - mx) / t);
                }
            }
            // sum the weights of lanes with the same digit in the warp, one shared atomic per digit
            unsigned int peers = __match_any_sync(0xffffffffu, d);
            double s = 0.0;
            for (int j = 0; j < 32; j++) {
                double wj = __shfl_sync(0xffffffffu, w, j);
                if ((peers >> j) & 1u) s += wj;
            }
            if (d >= 0 && lane == __ffs(peers) - 1) atomicAdd(&wsum[d], s);
        }
        __syncthreads();
        if (tid == 0) {
            double acc = above;
            int dsel = -1;
            for (int d = 255; d >= 0; d--) {
                double next = acc + wsum[d];
                if (r < next) { dsel = d; break; }
                acc = next;
            }
            if (dsel < 0) {  // r >= the whole group's weight: only by rounding
                if (shift == 56) {
                    s_fallback = 1;  // as sample_token: take the most likely
                } else {         // the group's last key with weight
                    double a = above;
                    for (int d = 255; d >= 0; d--) {
                        if (wsum[d] > 0.0) { dsel = d; acc = a; }
                        a += wsum[d];
                    }
                    if (dsel < 0) s_fallback = 1;
                }
            }
            if (dsel >= 0) { s_above = acc; s_prefix = prefix | ((unsigned long long)dsel << shift); }
        }
        __syncthreads();
        if (s_fallback) break;  // uniform over the block
        prefix = s_prefix;
        above = s_above;
        mask |= 255ull << shift;
    }
    if (tid == 0) {
        int token = s_fallback ? argmax : sample_key_index(prefix);
        out[row] = token;
        if (out2) out2[row] = token;
    }
}

// one token per row from logits (rows, V) (device pointers); see sample_token
static void sample_rows_cuda(int* out, int* out2, const float* logits, int rows, int V, float temperature, int top_k,
                             const float* uniforms, cudaStream_t stream = 0) {
    if (rows <= 0) return;
    sample_rows_kernel<<<rows, SAMPLE_THREADS, 0, stream>>>(out, out2, logits, V, temperature, top_k, uniforms);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// the decoder

struct MambaGpuDecoder {
    const MambaModel* m = nullptr;
    int max_batch = 0;   // sequences the buffers hold
    int rows = 0;        // sequences of the current batch (mamba_decoder_start)
    bool use_graph = false;
    cudaStream_t stream = nullptr;
    cublasHandle_t blas = nullptr;
    void* blas_workspace = nullptr;
    size_t blas_workspace_bytes = 0;
    float* conv_state = nullptr;  // (n_layer, max_batch, E, K-1)
    float* ssm_state = nullptr;   // (n_layer, max_batch, E, N)
    int* tokens = nullptr;        // (max_batch) the next step's input tokens
    float *x = nullptr, *xn = nullptr, *rstd = nullptr, *xz = nullptr, *u = nullptr, *xdbl = nullptr;
    float *y = nullptr, *xf = nullptr, *logits = nullptr;
    cudaGraphExec_t graph = nullptr;  // one step for graph_rows rows
    int graph_rows = 0;
};

static size_t mamba_decoder_conv_floats(const MambaConfig& c, int batch) {
    return (size_t)c.n_layer * batch * c.d_inner * (c.d_conv - 1);
}
static size_t mamba_decoder_ssm_floats(const MambaConfig& c, int batch) {
    return (size_t)c.n_layer * batch * c.d_inner * c.d_state;
}

// a buffer of n floats filled with NaN (0xFF bytes): unwritten values show up
static float* decoder_alloc_poisoned(size_t n) {
    float* p = nullptr;
    cudaCheck(cudaMalloc(&p, (n > 0 ? n : 1) * sizeof(float)));
    cudaCheck(cudaMemset(p, 0xFF, (n > 0 ? n : 1) * sizeof(float)));
    return p;
}

// refuses models the decoder cannot run, before touching the GPU
static void mamba_decoder_check_model(const MambaModel* m) {
    if (m->lora.rank > 0 && !m->lora_merged)
        FATAL("GPU generation reads the base weights only, and this model has unmerged LoRA adapters: "
              "merge them first (mamba_lora_merge, as --sample does) or generate with the CPU step (mamba_generate)");
    if (!m->on_gpu) FATAL("GPU generation needs a model on the GPU (this one is on the CPU: use mamba_generate)");
    if (!mamba_is_pure_m1(m->cfg))
        FATAL("the GPU decoder runs Mamba-1 models; this one's pattern is %s (generate with the CPU step, mamba_generate)",
              m->cfg.layers.c_str());
}

static void mamba_decoder_init(MambaGpuDecoder* d, const MambaModel* m, int max_batch, bool use_graph) {
    mamba_decoder_check_model(m);
    if (max_batch < 1) FATAL("GPU decoder: batch must be >= 1, got %d", max_batch);
    const MambaConfig& c = m->cfg;
    size_t Bm = max_batch, D = c.d_model, E = c.d_inner, N = c.d_state, R = c.dt_rank, V = c.vocab_size;
    *d = MambaGpuDecoder();
    d->m = m; d->max_batch = max_batch; d->use_graph = use_graph;
    cudaCheck(cudaDeviceSynchronize());  // the weights were written on the default stream
    cudaCheck(cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking));
    cublasCheck(cublasCreate(&d->blas));
    cublasMath_t mode;
    cublasCheck(cublasGetMathMode(cublas_handle(), &mode));  // TF32 or exact FP32, as the caller chose
    cublasCheck(cublasSetMathMode(d->blas, mode));
    cublasCheck(cublasSetStream(d->blas, d->stream));
    d->blas_workspace_bytes = 32u << 20;  // cuBLAS's recommendation for Hopper
    cudaCheck(cudaMalloc(&d->blas_workspace, d->blas_workspace_bytes));
    cublasCheck(cublasSetWorkspace(d->blas, d->blas_workspace, d->blas_workspace_bytes));  // after SetStream (it resets it)
    d->conv_state = decoder_alloc_poisoned(mamba_decoder_conv_floats(c, max_batch));
    d->ssm_state = decoder_alloc_poisoned(mamba_decoder_ssm_floats(c, max_batch));
    cudaCheck(cudaMalloc(&d->tokens, Bm * sizeof(int)));
    cudaCheck(cudaMemset(d->tokens, 0, Bm * sizeof(int)));
    d->x = decoder_alloc_poisoned(Bm * D);       d->xn = decoder_alloc_poisoned(Bm * D);
    d->rstd = decoder_alloc_poisoned(Bm);        d->xz = decoder_alloc_poisoned(Bm * 2 * E);
    d->u = decoder_alloc_poisoned(Bm * E);       d->xdbl = decoder_alloc_poisoned(Bm * (R + 2 * N));
    d->y = decoder_alloc_poisoned(Bm * E);
    d->xf = decoder_alloc_poisoned(Bm * D);      d->logits = decoder_alloc_poisoned(Bm * V);
}

static void mamba_decoder_free(MambaGpuDecoder* d) {
    if (!d->m) return;
    cudaCheck(cudaStreamSynchronize(d->stream));
    if (d->graph) cudaCheck(cudaGraphExecDestroy(d->graph));
    for (float* p : {d->conv_state, d->ssm_state, d->x, d->xn, d->rstd, d->xz, d->u, d->xdbl, d->y, d->xf, d->logits})
        cudaCheck(cudaFree(p));
    cudaCheck(cudaFree(d->tokens));
    cublasCheck(cublasDestroy(d->blas));
    cudaCheck(cudaFree(d->blas_workspace));
    cudaCheck(cudaStreamDestroy(d->stream));
    *d = MambaGpuDecoder();
}

// out (N, OC) (row stride ldo) = inp (N, IC) (row stride ldi) @ W^T + beta * out; W: (OC, IC)
// (linear_forward_cuda's product, with row strides, on the decoder's handle)
// One row (batch 1) is a matrix-vector product: cublasSgemv reads W with the whole GPU, where
// an sgemm with N = 1 runs on a few thread blocks (on an H100 the 130m step took ~1 ms that way).
static void decoder_gemm(MambaGpuDecoder* d, float* out, int ldo, const float* inp, int ldi, const float* W, int N, int IC,
                         int OC, float beta) {
    const float one = 1.0f;
    if (N == 1)  // out (OC) = W (col-major IC x OC)^T inp (IC) + beta out
        cublasCheck(cublasSgemv(d->blas, CUBLAS_OP_T, IC, OC, &one, W, IC, inp, 1, &beta, out, 1));
    else
        cublasCheck(cublasSgemm(d->blas, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, &one, W, IC, inp, ldi, &beta, out, ldo));
}

// RMSNorm of `rows` rows: rmsnorm.h's block-per-row vector kernel where it applies (one
// float4 per thread: a single pass; its warp-per-row kernel took ~14 us a row of 768 in the
// decode step), else the warp-per-row kernel
static void decoder_rmsnorm(MambaGpuDecoder* d, float* out, const float* x, const float* weight, int rows, int C) {
    if (rmsnorm_vec_ok(C, out, x, weight))
        rmsnorm_forward_vec_kernel<<<rows, rmsnorm_vec_threads(C), 0, d->stream>>>(out, d->rstd, x, weight, C);
    else
        rmsnorm_forward_kernel<<<ceil_div(rows, 8), 256, 0, d->stream>>>(out, d->rstd, x, weight, rows, C);
    cudaCheckLaunch();
}

// one step for `rows` sequences: d->tokens -> d->logits; advances the states. Every launch
// goes to d->stream (so this can be captured).
static void mamba_decoder_step_launch(MambaGpuDecoder* d, int rows) {
    const MambaModel* m = d->m;
    const MambaConfig& c = m->cfg;
    const int D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank, V = c.vocab_size, XD = R + 2 * N;
    cudaStream_t s = d->stream;
    const int block = 256;
    embedding_forward_kernel<<<ceil_div(rows * D, block), block, 0, s>>>(d->x, d->tokens, m->wte, rows, D);
    cudaCheckLaunch();
    for (int l = 0; l < c.n_layer; l++) {
        const LayerParams& p = m->layers[l];
        float* conv_st = d->conv_state + (size_t)l * d->max_batch * E * (K - 1);
        float* ssm_st = d->ssm_state + (size_t)l * d->max_batch * E * N;
        decoder_rmsnorm(d, d->xn, d->x, p.norm_w, rows, D);
        decoder_gemm(d, d->xz, 2 * E, d->xn, D, p.in_proj_w, rows, D, 2 * E, 0.0f);  // [x | z]
        decode_conv1d_silu_step_kernel<<<ceil_div(rows * E, block), block, 0, s>>>(d->u, conv_st, d->xz, 2 * E, p.conv_w,
                                                                                    p.conv_b, rows, E, K);
        cudaCheckLaunch();
        decoder_gemm(d, d->xdbl, XD, d->u, E, p.x_proj_w, rows, E, XD, 0.0f);       // [dt_low | Bm | Cm]
        // dt_proj (from the first R columns of xdbl) and the scan step: one warp per (row, channel)
        decode_scan_step_kernel<<<ceil_div(rows * E, block / 32), block, 0, s>>>(d->y, ssm_st, d->u, d->xdbl, XD, R, p.dt_proj_w,
                                                                                  p.dt_proj_b, p.A_log, p.D, d->xz + E, 2 * E,
                                                                                  rows, E, N);
        cudaCheckLaunch();
        decoder_gemm(d, d->x, D, d->y, E, p.out_proj_w, rows, E, D, 1.0f);          // x += out_proj(y)
    }
    decoder_rmsnorm(d, d->xf, d->x, m->norm_f_w, rows, D);
    decoder_gemm(d, d->logits, V, d->xf, D, m->wte, rows, D, V, 0.0f);
}

// captures one step for `rows` rows into d->graph. A plain step runs first (outside the
// capture) so cuBLAS and lazily loaded kernels are set up; mamba_decoder_start zeroes the
// states it changed.
static void mamba_decoder_capture(MambaGpuDecoder* d, int rows) {
    if (d->graph) { cudaCheck(cudaGraphExecDestroy(d->graph)); d->graph = nullptr; d->graph_rows = 0; }
    cudaCheck(cudaMemsetAsync(d->tokens, 0, rows * sizeof(int), d->stream));
    mamba_decoder_step_launch(d, rows);
    cudaCheck(cudaStreamSynchronize(d->stream));
    cudaGraph_t g;
    cudaCheck(cudaStreamBeginCapture(d->stream, cudaStreamCaptureModeThreadLocal));
    mamba_decoder_step_launch(d, rows);
    cudaCheck(cudaStreamEndCapture(d->stream, &g));
    cudaCheck(cudaGraphInstantiate(&d->graph, g, 0));
    cudaCheck(cudaGraphDestroy(g));
    d->graph_rows = rows;
}

// begins a batch of `rows` new sequences: zero states (and the graph for `rows`)
static void mamba_decoder_start(MambaGpuDecoder* d, int rows) {
    if (rows < 1 || rows > d->max_batch) FATAL("GPU decoder: %d sequences, the decoder holds 1..%d", rows, d->max_batch);
    cudaCheck(cudaDeviceSynchronize());  // the weights may just have changed on the default stream
    d->rows = rows;
    if (d->use_graph && d->graph_rows != rows) mamba_decoder_capture(d, rows);
    const MambaConfig& c = d->m->cfg;
    cudaCheck(cudaMemsetAsync(d->conv_state, 0, mamba_decoder_conv_floats(c, d->max_batch) * sizeof(float), d->stream));
    cudaCheck(cudaMemsetAsync(d->ssm_state, 0, mamba_decoder_ssm_floats(c, d->max_batch) * sizeof(float), d->stream));
}

// one step of the current batch from d->tokens (asynchronous)
static void mamba_decoder_step(MambaGpuDecoder* d) {
    if (d->rows < 1) FATAL("GPU decoder: call mamba_decoder_start first");
    if (d->use_graph) cudaCheck(cudaGraphLaunch(d->graph, d->stream));
    else mamba_decoder_step_launch(d, d->rows);
}

// feeds host tokens (rows) and runs one step; the logits are in d->logits (rows, V)
static void mamba_decoder_feed(MambaGpuDecoder* d, const int* host_tokens) {
    int V = d->m->cfg.vocab_size;
    for (int b = 0; b < d->rows; b++)
        if (host_tokens[b] < 0 || host_tokens[b] >= V) FATAL("token %d out of range [0, %d) in row %d", host_tokens[b], V, b);
    cudaCheck(cudaMemcpyAsync(d->tokens, host_tokens, d->rows * sizeof(int), cudaMemcpyHostToDevice, d->stream));
    mamba_decoder_step(d);
}

// generates n_new tokens after each prompt (all prompts of one length >= 1); returns the new
// tokens of each row. Random numbers: see the top of the file.
static std::vector<std::vector<int>> mamba_decoder_generate(MambaGpuDecoder* d, const std::vector<std::vector<int>>& prompts,
                                                            int n_new, float temperature, int top_k, uint64_t seed) {
    int rows = (int)prompts.size(), V = d->m->cfg.vocab_size;
    if (rows < 1 || rows > d->max_batch) FATAL("GPU generation: %d prompts, the decoder holds 1..%d", rows, d->max_batch);
    int P = (int)prompts[0].size();
    if (P < 1) FATAL("GPU generation needs a prompt of at least one token");
    for (int b = 0; b < rows; b++) {
        if ((int)prompts[b].size() != P) FATAL("GPU generation: prompts of one length, row %d has %zu tokens, row 0 %d", b, prompts[b].size(), P);
        for (int t : prompts[b])
            if (t < 0 || t >= V) FATAL("prompt token %d out of range [0, %d) in row %d", t, V, b);
    }
    std::vector<std::vector<int>> result(rows);
    if (n_new <= 0) return result;
    // host side: the prompts step-major (step t of every row together), the uniforms in draw order
    std::vector<int> hp((size_t)P * rows);
    for (int t = 0; t < P; t++)
        for (int b = 0; b < rows; b++) hp[(size_t)t * rows + b] = prompts[b][t];
    Rng rng; rng_seed(&rng, seed);
    std::vector<float> hu((size_t)n_new * rows);
    for (float& u : hu) u = rng_uniform(&rng);
    int *dprompt, *dout; float* duni;
    cudaCheck(cudaMalloc(&dprompt, hp.size() * sizeof(int)));
    cudaCheck(cudaMalloc(&dout, hu.size() * sizeof(int)));
    cudaCheck(cudaMalloc(&duni, hu.size() * sizeof(float)));
    cudaCheck(cudaMemcpy(dprompt, hp.data(), hp.size() * sizeof(int), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(duni, hu.data(), hu.size() * sizeof(float), cudaMemcpyHostToDevice));
    mamba_decoder_start(d, rows);
    for (int t = 0; t < P; t++) {  // the prompt, one token at a time (the recurrent state fills)
        cudaCheck(cudaMemcpyAsync(d->tokens, dprompt + (size_t)t * rows, rows * sizeof(int), cudaMemcpyDeviceToDevice, d->stream));
        mamba_decoder_step(d);
    }
    for (int i = 0; i < n_new; i++) {  // sample (into the output and the next input), step
        sample_rows_cuda(dout + (size_t)i * rows, d->tokens, d->logits, rows, V, temperature, top_k, duni + (size_t)i * rows, d->stream);
        if (i + 1 < n_new) mamba_decoder_step(d);
    }
    std::vector<int> ho(hu.size());
    cudaCheck(cudaMemcpyAsync(ho.data(), dout, ho.size() * sizeof(int), cudaMemcpyDeviceToHost, d->stream));
    cudaCheck(cudaStreamSynchronize(d->stream));
    for (int b = 0; b < rows; b++)
        for (int i = 0; i < n_new; i++) result[b].push_back(ho[(size_t)i * rows + b]);
    cudaCheck(cudaFree(dprompt)); cudaCheck(cudaFree(dout)); cudaCheck(cudaFree(duni));
    return result;
}

// one call: a decoder for the batch, generation, free. prompts: equal-length token lists.
static std::vector<std::vector<int>> mamba_generate_gpu(const MambaModel* m, const std::vector<std::vector<int>>& prompts, int n_new,
                                                        float temperature, int top_k, uint64_t seed, bool use_graph = true) {
    mamba_decoder_check_model(m);
    MambaGpuDecoder d;
    mamba_decoder_init(&d, m, (int)std::max<size_t>(1, prompts.size()), use_graph);
    std::vector<std::vector<int>> out = mamba_decoder_generate(&d, prompts, n_new, temperature, top_k, seed);
    mamba_decoder_free(&d);
    return out;
}

// ---------------------------------------------------------------------------
// benchmark: median µs per decode step (one new token for each of `batch` sequences:
// step + sampling), timed with CUDA events over `steps` steps, `trials` times after a warm-up
static double mamba_bench_generate(const MambaModel* m, int batch, bool use_graph, float temperature, int top_k, int steps = 64,
                                   int trials = 7) {
    MambaGpuDecoder d;
    mamba_decoder_init(&d, m, batch, use_graph);
    mamba_decoder_start(&d, batch);
    int V = m->cfg.vocab_size;
    std::vector<float> hu((size_t)steps * batch);
    Rng rng; rng_seed(&rng, 1);
    for (float& u : hu) u = rng_uniform(&rng);
    float* duni; int* dout;
    cudaCheck(cudaMalloc(&duni, hu.size() * sizeof(float)));
    cudaCheck(cudaMalloc(&dout, hu.size() * sizeof(int)));
    cudaCheck(cudaMemcpy(duni, hu.data(), hu.size() * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemsetAsync(d.tokens, 0, batch * sizeof(int), d.stream));
    auto run = [&]() {
        for (int s = 0; s < steps; s++) {
            mamba_decoder_step(&d);
            sample_rows_cuda(dout + (size_t)s * batch, d.tokens, d.logits, batch, V, temperature, top_k, duni + (size_t)s * batch, d.stream);
        }
    };
    run();  // warm-up
    cudaEvent_t e0, e1;
    cudaCheck(cudaEventCreate(&e0)); cudaCheck(cudaEventCreate(&e1));
    std::vector<float> ms(trials);
    for (int i = 0; i < trials; i++) {
        cudaCheck(cudaEventRecord(e0, d.stream));
        run();
        cudaCheck(cudaEventRecord(e1, d.stream));
        cudaCheck(cudaEventSynchronize(e1));
        cudaCheck(cudaEventElapsedTime(&ms[i], e0, e1));
    }
    std::sort(ms.begin(), ms.end());
    cudaCheck(cudaEventDestroy(e0)); cudaCheck(cudaEventDestroy(e1));
    cudaCheck(cudaFree(duni)); cudaCheck(cudaFree(dout));
    mamba_decoder_free(&d);
    return ms[trials / 2] * 1000.0 / steps;
}

// the device's peak memory bandwidth in bytes/s: 2 (double data rate) x memory clock x bus
// width. The bus width comes from cudaGetDeviceProperties; the clock from the attribute
// (cudaDeviceProp::memoryClockRate is gone in CUDA 13).
static double gpu_peak_bandwidth(int* bus_bits = nullptr, int* clock_khz = nullptr) {
    int dev = 0;
    cudaCheck(cudaGetDevice(&dev));
    cudaDeviceProp p;
    cudaCheck(cudaGetDeviceProperties(&p, dev));
    int khz = 0;
    cudaCheck(cudaDeviceGetAttribute(&khz, cudaDevAttrMemoryClockRate, dev));
    if (bus_bits) *bus_bits = p.memoryBusWidth;
    if (clock_khz) *clock_khz = khz;
    return 2.0 * khz * 1e3 * (p.memoryBusWidth / 8.0);
}

// bytes of the weights one step reads (every tensor but LoRA adapters: a merged model reads W only)
static size_t mamba_decoder_weight_bytes(const MambaModel* m) {
    size_t n = 0;
    for (const ParamTensor& t : m->params.tensors)
        if (!lora_is_adapter(t.name)) n += t.numel;
    return n * sizeof(float);
}

#endif  // __CUDACC__
