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
//   the input token of the next step; head_keys (max_batch, head_key_cap): the fused head's
//   per-block argmax keys (decoder_sample hands them to greedy sampling).
// Everything runs on the decoder's own stream: a step runs inside a StreamScope of it (common.h),
// which points launch_stream() and the shared cuBLAS handle (its math mode TF32 or exact FP32 as the
// trainer/test chose) at that stream with a fixed workspace, so a step can be captured in a CUDA
// graph: no launch goes to the legacy default stream and cuBLAS allocates nothing.
//
// Two ways to run a step (DecodePath; AUTO picks by batch):
//   fused (batch <= DECODE_FUSED_MAX_ROWS = 8): 4 launches a layer + the head, all our own kernels
//     in_proj   decode_gemv_kernel: rmsnorm prologue (layer 0: the embedding rows too), the
//               in_proj product, then the conv step + SiLU on the x half (u, conv state) and z
//     x_proj    decode_gemv_kernel: u -> xdbl
//     scan      decode_scan_step_kernel: dt_proj + softplus + the state update + gate -> y
//     out_proj  decode_gemv_kernel: x += y @ out_proj_w^T (the residual add in the epilogue)
//     head      decode_gemv_kernel: rmsnorm prologue, logits, and each block's largest argmax
//               key per row, so greedy sampling reads ~500 keys instead of V logits
//   The decode GEMV keeps the activations of all rows in shared memory and streams each weight
//   row once (16-byte evict-first loads, a warp per 1-2 rows, every SM busy). With programmatic
//   dependent launch (DecodePdl, sm_90) each kernel loads its first weights before waiting for
//   the previous kernel, so the weight read overlaps the previous kernel's tail; data written
//   by earlier kernels of the step is read through L2 only (ld.global.cg): a first version that
//   read it through L1 / the read-only path gave wrong, graph != plain results under PDL.
//   cuBLAS (larger batches): rmsnorm, cuBLAS GEMM (GEMV at batch 1), conv kernel, GEMM, scan
//   kernel, GEMM with beta = 1: 6 launches a layer. Crossover measured below: at batch 8 the
//   two are within 2%, at 16 cuBLAS wins by 1.5x.
// The CUDA graph (use_graph) holds one step, tokens -> logits; the plain path launches the same
// calls one by one and stays the reference (the tests check the graph's logits equal it bit
// for bit). Sampling is launched after the graph: it writes the sampled tokens to the output
// and to the decoder's input tokens, so a whole generation is queued without a host round trip
// per token.
//
// Measured (H100 80GB HBM3, mamba-130m shape, fp32 weights, train_mamba --bench-generate, graph,
// greedy, old and new binaries in the same call): batch 1: 691 -> 381 us/step (2.47x the
// weight-read floor of 154 us = 493 MiB / 3.35 TB/s); batch 8: 940 -> 898; batch 64 (cuBLAS
// either way): 1644 -> 1624. Sampled (t 0.8, top-k 40): 857 -> 541, 1105 -> 1069, 1818 -> 1789.
// build/gpu_generate --bench, same call: fused vs cuBLAS graph 380 vs 602 (batch 1), 435 vs 833
// (2), 579 vs 838 (4), 894 vs 913 (8), 1503 vs 1021 (16); without PDL the fused step takes 501
// at batch 1. Per kernel at batch 1 (a graph of 96 launches of one kind, with PDL; us per launch,
// GB/s of the bytes it must move): in_proj 5.3 (1790 GB/s, 1.9x its floor), x_proj 2.1 and the
// scan 2.3 (latency: 0.5-0.6 MB each), out_proj 2.7 (1790 GB/s, 1.9x), head 53.9 (2870 GB/s,
// 1.17x), greedy sampling 2.0; the sum, 353 us, against 380 for the whole step.
// Tried and not kept: x_proj merged into the scan (one cluster of 8 blocks handing xdbl round
// through distributed shared memory, 12 independent clusters at batch 1). Same call, H100: 5.04 us
// a launch against x_proj 2.12 + scan 2.26, and the step 413.9 against 379.4 us at batch 1. Likely
// why: a cluster needs 8 free SMs of one GPC at once, so under PDL its blocks start only once the
// previous kernel's blocks have drained, and the two cluster barriers plus every cluster's L2
// reads of x_proj_w cost more than the kernel boundary they remove.
// bf16 weights (mamba_decoder_init's bf16_weights; build/gpu_generate --bench, H100): batch 1 380 ->
// 327 us; per launch in_proj 5.35 -> 4.11 us (1170 GB/s), the head 53.7 -> 32.1 (2410 GB/s), out_proj
// 2.67 -> 2.61, x_proj 2.16 -> 2.36, scan 2.25 (unchanged): the small kernels are latency-bound, so
// halving their bytes did not move them. Tried and not kept: twice the weight rows per warp for bf16
// (the same bytes in flight per lane as fp32): 344.5 vs 326.9 us, the grid halves where it is not
// capped (in_proj 4.60, x_proj 2.67, out_proj 2.76 us); only the head gained (29.7 us).
// Seventh session (H100, against the binary before in one call): the activation fill of the
// non-norm GEMVs (x_proj, out_proj) by 16-byte cp.async copies, all in flight at once (the register
// loads took 8 dependent rounds for 8 rows of 1536), and the scan step two channels a warp where
// N <= 16 (decode_scan_lanes: 12288 warps at batch 8 were 1.45 waves): batch 1 / 8 329.9 / 853.5 ->
// 296.5 / 660.4 us (bf16 weights), 379.8 / 881.0 -> 355.0 / 689.5 (fp32); per launch at batch 8 (bf16):
// x_proj 6.63 -> 4.78 us, the scan 8.55 -> 4.63, out_proj 6.96 -> 5.08; the head stays at 56.9 us
// (2.4x its bytes: each 16-byte shared load of the activations feeds 8 FMAs at WR = 2, and 16 warp
// sums end every row group).
// Then the scan step at 4 lanes a channel past 16384 channels (the cuBLAS path of batch 64 now runs
// the same kernel, plainly; a warp per channel took 36.5 us a launch there, 11.6 waves, H200 ncu):
// H200, against the binary before the batch-8 changes in one call, bf16 weights, batch 1 / 8 / 64:
// 322.7 / 832.5 / 1585.4 -> 283.8 / 642.0 / 1132.8 us (fp32: 346.9 / 842.0 / 1582.9 -> 319.3 / 670.0 /
// 1132.6); mamba2-130m 414.4 / 794.0 -> 402.5 / 734.7 (batch 64 is its cuBLAS products: 1721 either way).
// What is left (batch 1): ~2 us of dependency latency per kernel (97 a step) and weights that
// are only partly loaded ahead (the next kernel's blocks fit beside the running ones only where
// registers allow); next: weights prefetched into shared memory by the bulk copy engine, or x_proj
// merged into its neighbours. Not a persistent kernel: dev/grid_barrier.cu measured a grid-wide
// barrier (1.04-1.13 us, H100) dearer than a kernel boundary with PDL (0.77 us).
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
// Layer patterns (--layers with M2, A or F blocks; decoder_layered): every layer runs through
// the framework's own one-token step functions, the same the CPU reference composes in
// mamba_step: the Mamba-1 layers as the cuBLAS path above, M2 mamba2_step's parts (in_proj,
// mamba2_step_core, out_proj; states (rows, C, K-1) and (rows, H, P, N) per layer), A the qkv product,
// this token's k and v appended to the layer's KV cache (rows, max_len, D) and
// attention_step_launch over the positions so far, F the two products and GELU; learned positions
// (a pattern without M1 and M2 layers) are added to the embedding row. The layers' products go
// through decoder_product: up to DECODE_FUSED_MAX_ROWS rows the decode GEMV above (the RMSNorm before
// in_proj / qkv / fc as its prologue, the residual add after out_proj / proj / fc_proj as beta = 1,
// bf16 weights if asked, programmatic dependent launch as the fused step), else the RMSNorm kernel and
// cuBLAS; the head likewise (decoder_head, with its argmax keys). So an M2 layer is four launches on
// the GEMV path: in_proj (decoder_m2_in_proj: the RMSNorm, the product, and the step's prologue in
// its epilogue: z, the conv step + SiLU into x, B, C, dt, A), mamba2_step_tail (the SSD step; the
// gated norm), out_proj (with the residual add); on the cuBLAS path five (the product, then
// mamba2_step_core with its prologue kernel). (The gated norm as out_proj's prologue too was slower:
// see the measurements below.) The framework's functions launch on launch_stream() and the shared cuBLAS
// handle (common.h), which the step sets to d->stream with a StreamScope, so a layered step is captured
// into a CUDA graph like the Mamba-1 one. A graph bakes in its launch arguments, so the kernels that
// depend on the position (the KV append, the attention step, learned positions) read each row's
// position from d->positions on the device, and the step's last launch before the head advances it.
// max_len (mamba_decoder_init): the positions a sequence may reach, what the KV caches hold.
// Measured (H100, mamba2-130m shape: 24 M2 layers, d_state 128, headdim 64; train_mamba
// --bench-generate, batch 1 / 8 / 64, µs a step; calls vary by ~15% at batch 1): the first version
// 2645 / 3223 / 8345; with one-row products as a GEMV (an sgemm with one column before) and the SSD
// step a warp per state row 1941 / 2377 / 3616; with the gated RMSNorm a block per row (a single warp
// walked the row: 51 us a layer) 1626 / 2239 / 2826; with linear.h's GEMV instead of cublasSgemv
// and 768 threads in the norm 1136-1490 / 2017-2434 / 2765-2811. At batch 1 that is ~290 kernels a
// step of 2.7-7 us each (ncu: the four GEMVs 4.4-6.9 us, the SSD step 5.4, the norm 6.0). (Later the
// training step's gated-norm forward took 32 rows a block, 3815 us at batch 64, until it took N / (2 SMs)
// rows a block: 1350 / 2526 / 2708 us; batch 1 and 8 vary by ~20% between calls.) Seventh session: the
// M2 step as five launches instead of ten (in_proj one product, the prologue kernel) and the step
// captured in a CUDA graph (launch_stream()), the old and new binaries in one call: 1096 / 1822 / 2762
// -> 620 / 936 / 1940 us (graph; plain launches 764 / 1160 / 2179). A hybrid of 21 M2 and 3 A layers
// (no graph: attention takes the position): 1160 -> 971 us at batch 1. Then the products as decode
// GEMVs (decoder_product: the norm and the residual add fused, the fused head): 549 / 877 / 1903 us,
// and with bf16 weights 426 / 820 / 1906 (5.5x the 77 us floor at batch 1); the hybrid 792, bf16 684.
// Eighth session: the positions on the device, so the hybrid's step is a CUDA graph too (H200, bf16
// weights, batch 1 / 8 / 64): 626 / 1072 / 2158 -> 554 / 1006 / 1942 us. Then (H100, each against the
// binary before in one call, bf16 weights, batch 1 / 8): the GEMVs' reduce-scatter, mamba2-130m 425 /
// 750 -> 424 / 722; the prologue in in_proj's epilogue (four launches a layer) 423 / 722 -> 377 / 667
// (fp32 weights 535 / 775 -> 477 / 713); the hybrid with the split attention step and the prologue
// 596 / 974 -> 413 / 677.
// The gated norm as out_proj's prologue as well was slower (597 us, bf16): each block's single warp
// per row walks 1536 values with an exp and a division before its product (dev/notes_kernels.md).
//
// LoRA: the decoder reads the base weights only. A model with unmerged adapters is refused
// (merging here would change the weights a training run goes on with); the --sample path
// merges them first, and the trainer's periodic samples of a LoRA run use the CPU step
// (mamba_generate folds the adapters into a host copy).
#pragma once
#include <algorithm>
#include <utility>
#include <vector>
#include "mamba_model.h"

#ifdef __CUDACC__

// ---------------------------------------------------------------------------
// step kernels

// Programmatic dependent launch (Hopper and later; no-ops before sm_90 or when a kernel is
// launched without the attribute, see decoder_launch): a kernel of the fused step calls
// pdl_trigger at its start, so the next kernel of the stream may start early and load its
// weights while this one still runs; pdl_wait blocks until every earlier kernel has finished
// and its writes are visible. Before pdl_wait a kernel reads only data no kernel of the step
// writes (weights; the scan's own state), and writes nothing.
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// a launch on `stream`, with the programmatic-serialization attribute when pdl (the kernel may
// start before the previous kernel of the stream has finished: it must call pdl_wait first)
template <typename... KArgs, typename... Args>
static void decoder_launch(void (*kernel)(KArgs...), int blocks, int threads, size_t smem, cudaStream_t stream, bool pdl,
                           Args&&... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(blocks);
    cfg.blockDim = dim3(threads);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = pdl ? attr : nullptr;
    cfg.numAttrs = pdl ? 1 : 0;
    cudaCheck(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

// programmatic dependent launch in the fused step: off; each kernel lets the next one start
// (and load its weights) once it has passed its own wait (AFTER_WAIT); or at its very start
// (EARLY: several kernels may be waiting at once)
enum DecodePdl { PDL_OFF = 0, PDL_AFTER_WAIT, PDL_EARLY };
#define DECODE_PDL_DEFAULT PDL_AFTER_WAIT

// one thread per (row, channel): conv1d_step_channel, then SiLU. x is the first E columns of xz
// (row stride ldx).
__global__ void decode_conv1d_silu_step_kernel(float* __restrict__ u, float* __restrict__ state,
                                               const float* __restrict__ x, int ldx, const float* __restrict__ weight,
                                               const float* __restrict__ bias, int rows, int E, int K) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= rows * E) return;
    int b = idx / E, e = idx % E;
    float* st = state + (size_t)idx * (K - 1);
    u[idx] = silu_f(conv1d_step_channel(st, st, weight + (size_t)e * K, bias[e], x[(size_t)b * ldx + e], K));
}

// a load of data an earlier kernel of the step wrote: through L2 only (ld.global.cg) when the
// kernel may have started before that kernel ended (programmatic dependent launch), else the
// read-only cached path
__device__ __forceinline__ float ld_step(const float* p, bool l2) { return l2 ? __ldcg(p) : __ldg(p); }

// The scan step: LW lanes per (row, channel). First delta = dt_low . dt_proj_w[e] (the dt_proj
// product, fused here: R is small; the sum over r = lane, lane + LW, ... then a tree over the lanes),
// then the states n = lane, lane + LW, ... with selective_scan_step_cpu's arithmetic (expf /
// softplus_f / silu_f), y = (D u + sum over the lanes of Cm h) * silu(z).
// xdbl (row stride ldxd) = [dt_low (R) | Bm (N) | Cm (N)]; z: columns E.. of xz (row stride ldz).
// Before the dependency wait (see pdl_wait) it loads what no kernel of this step writes: the
// parameters, and the state h (written only by this layer's scan, one step earlier; every step starts
// with a launch that waits for the whole previous step). After it, every input of the step in one
// round of loads (u, z, dt_low, Bm, Cm: the first RW values of r and the first of n a lane).
// pdl: 0 = a plain launch (the cuBLAS path), else a DecodePdl mode (the step's data through L2 only).
// LW (decode_scan_lanes): 32 for N > 16; else 16, two channels a warp (batch 8 of the 130m shape,
// 12288 channels, was 1.45 waves of whole warps: 8.5 -> 4.6 us), and 4 past 16384 channels (batch 64:
// a warp per channel took 36.5 us a launch, H200 ncu, 11.6 waves).
template <int LW>
__device__ __forceinline__ float decode_lanes_sum(float v) {  // over the LW lanes of this channel
    for (int off = LW / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}
static int decode_scan_lanes(int N, int channels) { return N > 16 ? 32 : channels > 16384 ? 4 : 16; }
template <int LW>
__global__ void decode_scan_step_kernel(float* __restrict__ y, float* __restrict__ h, const float* __restrict__ u,
                                        const float* __restrict__ xdbl, int ldxd, int R, const float* __restrict__ dt_proj_w,
                                        const float* __restrict__ delta_bias, const float* __restrict__ A_log,
                                        const float* __restrict__ D, const float* __restrict__ z, int ldz, int rows, int E, int N,
                                        int pdl) {
    static_assert(LW == 4 || LW == 16 || LW == 32, "lanes per channel");
    constexpr int RW = 64 / LW;  // dt_proj weights (and dt_low values) a lane loads ahead: r = lane + LW * i
    if (pdl == PDL_EARLY) pdl_trigger();
    const int lane = threadIdx.x % LW, w_all = (blockIdx.x * blockDim.x + threadIdx.x) / LW;
    if ((w_all - (threadIdx.x % 32) / LW) >= rows * E) return;  // whole warps past the end
    const bool valid = w_all < rows * E;  // lanes past the end join their warp's shuffles, write nothing
    const int w = valid ? w_all : rows * E - 1, b = w / E, e = w % E;
    const float* wr = dt_proj_w + (size_t)e * R;
    float* hb = h + (size_t)w * N;
    const bool l2 = pdl != 0;
    float wd[RW];
#pragma unroll
    for (int i = 0; i < RW; i++) wd[i] = lane + LW * i < R ? wr[lane + LW * i] : 0.0f;
    const float A0 = lane < N ? -expf(A_log[(size_t)e * N + lane]) : 0.0f;  // n = lane
    const float h0 = lane < N ? ld_step(hb + lane, l2) : 0.0f;
    const float Dv = D[e], bias = delta_bias[e];
    pdl_wait();
    if (pdl == PDL_AFTER_WAIT) pdl_trigger();
    const float* xb = xdbl + (size_t)b * ldxd;
    const float ut = ld_step(u + w, l2), zt = ld_step(z + (size_t)b * ldz + e, l2);
    float xr[RW];
#pragma unroll
    for (int i = 0; i < RW; i++) xr[i] = lane + LW * i < R ? ld_step(xb + lane + LW * i, l2) : 0.0f;
    const float B0 = lane < N ? ld_step(xb + R + lane, l2) : 0.0f, C0 = lane < N ? ld_step(xb + R + N + lane, l2) : 0.0f;
    float dl = 0.0f;  // the order of the loop r = lane, lane + LW, ...
#pragma unroll
    for (int i = 0; i < RW; i++)
        if (lane + LW * i < R) dl += xr[i] * wd[i];
    for (int r = lane + LW * RW; r < R; r += LW) dl += ld_step(xb + r, l2) * wr[r];
    float delta = decode_lanes_sum<LW>(dl);
    float dt = softplus_f(delta + bias);
    float part = 0.0f;
    for (int n = lane; n < N; n += LW) {
        const bool first = n == lane;
        float A = first ? A0 : -expf(A_log[(size_t)e * N + n]);
        float Bn = first ? B0 : ld_step(xb + R + n, l2), Cn = first ? C0 : ld_step(xb + R + N + n, l2);
        float hn = expf(dt * A) * (first ? h0 : ld_step(hb + n, l2)) + dt * Bn * ut;
        if (valid) hb[n] = hn;
        part += Cn * hn;
    }
    float acc = Dv * ut + decode_lanes_sum<LW>(part);
    if (lane == 0 && valid) y[w] = acc * silu_f(zt);
}

// the sampler's order key (see sample_rows_kernel), here because the head GEMV makes them too:
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

// ---------------------------------------------------------------------------
// the decode GEMV: out (rows, OC) = acts (rows, IC) @ W^T for a few rows (batch <= GEMV_MAX_ROWS),
// with the step's elementwise work fused around it. One launch is one of:
//   in_proj   acts = rmsnorm(x) * norm_w (layer 0: x = wte[tokens], written to emb_out), then
//             outputs o < conv_E (the conv input) go through the conv step + SiLU into u (and
//             the conv state), outputs o >= conv_E (z) to out
//   M2 in_proj  the same with Mamba-2's rows [z | xBC | dt_raw]: z to out, the conv step + SiLU of
//             xBC into x, B and C (a ConvCols), softplus(dt_raw + dt_bias) into dt, and A = -exp(A_log)
//             (the Mamba-2 step's prologue kernel folded into the product: one launch less a layer)
//   x_proj    acts = u: a plain product
//   out_proj  beta = 1: out += product (the residual add)
//   head      acts = rmsnorm(x) * norm_f_w, out = logits (and argmax_keys)

#define GEMV_MAX_WARPS 8  // warps per block: DecodeGemv::warps (0: g_decode_gemv_warps), up to this
#define GEMV_SLOTS 12     // float4 weight registers per lane: WR rows x P float4 (one chunk of 128 * P columns)
#define GEMV_MAX_ROWS 16  // the most sequences one launch takes (the activations of all rows sit in shared memory)
#define GEMV_WARPS_PER_SM 32  // grid cap: this many warps per SM (a grid-stride loop over the weight rows beyond it)
#define GEMV_MAX_K 4      // the conv epilogue's largest kernel width (its taps sit in registers)
#define GEMV_FILL 6       // float4 each thread loads at once when the block fills the activations

struct DecodeGemv {
    float* out; int ldo;        // (rows, OC), row stride ldo (the conv's and dt's outputs are not written here)
    const float* inp; int ldi;  // (rows, IC), row stride ldi; with tokens: the rows inp + tokens[r] * ldi
    const float* W;             // (OC, IC)
    const bf16* W16;            // GPU only, (OC, IC) or null: read instead of W (bf16 weights; the CPU reference reads W)
    int rows, IC, OC;
    float beta;                 // 0: out = product; 1: out += product
    const float* norm_w;        // (IC) or null: acts = rmsnorm(inp row) * norm_w (eps RMSNORM_EPS)
    const int* tokens;          // (rows) or null: the input rows are embedding rows
    float* emb_out;             // (rows, IC) or null: the input rows as read (before the norm)
    int conv_E, conv_K;         // conv_E > 0: outputs [conv_begin, conv_begin + conv_E) are the conv's input channels
    int conv_begin;             //   (conv_K <= GEMV_MAX_K): Mamba-1's x half [0, E), Mamba-2's xBC [E, E + C)
    float* conv_state;          // (rows, conv_E, conv_K - 1), shifted, newest last
    const float* conv_w;        // (conv_E, conv_K)
    const float* conv_b;        // (conv_E)
    ConvCols<float> u;          // (rows, conv_E) by channel: silu(conv step) (Mamba-2: into its x, B and C)
    int dt_n, dt_begin;         // dt_n > 0: outputs [dt_begin, dt_begin + dt_n) are Mamba-2's dt_raw:
    const float* dt_bias;       //   dt_out (rows, dt_n) = softplus(dt_raw + dt_bias)
    float* dt_out;
    const float* A_log;         // with dt: A_out (dt_n) = -exp(A_log) (written by row 0's lanes), or null
    float* A_out;
    int pdl_early;              // GPU only: trigger the next launch at the start (else after the wait), see DecodePdl
    int warps;                  // GPU only: warps per block (0: g_decode_gemv_warps)
    unsigned long long* argmax_keys;  // GPU only, (rows, blocks) or null: each block's largest sample_key(out[r, o], o)
};
// the default block size of the decode GEMV (a tuning knob the benchmark sweeps)
static int g_decode_gemv_warps = 8;

// CPU reference: the plain functions of mamba_step, row by row (pointers on the host)
static void decode_gemv_cpu(const DecodeGemv& a) {
    std::vector<float> act(a.IC), prod(a.OC);
    for (int r = 0; r < a.rows; r++) {
        const float* src = a.inp + (size_t)(a.tokens ? a.tokens[r] : r) * a.ldi;
        memcpy(act.data(), src, a.IC * sizeof(float));
        if (a.emb_out) memcpy(a.emb_out + (size_t)r * a.IC, src, a.IC * sizeof(float));
        if (a.norm_w) { float rstd; rmsnorm_forward_cpu(act.data(), &rstd, act.data(), a.norm_w, 1, a.IC); }
        linear_forward_cpu(prod.data(), act.data(), a.W, nullptr, 1, a.IC, a.OC);
        if (a.conv_E > 0) {
            std::vector<float> ur(a.conv_E);
            conv1d_step_cpu(ur.data(), a.conv_state + (size_t)r * a.conv_E * (a.conv_K - 1), prod.data() + a.conv_begin, a.conv_w,
                            a.conv_b, 1, a.conv_E, a.conv_K);
            silu_forward_cpu(ur.data(), ur.data(), a.conv_E);
            for (int c = 0; c < a.conv_E; c++) {
                size_t len;
                float* col = a.u.col(c, a.conv_E, &len);
                col[(size_t)r * len] = ur[c];
            }
        }
        for (int h = 0; h < a.dt_n; h++) {
            a.dt_out[(size_t)r * a.dt_n + h] = softplus_f(prod[a.dt_begin + h] + a.dt_bias[h]);
            if (a.A_out && r == 0) a.A_out[h] = -expf(a.A_log[h]);
        }
        for (int o = 0; o < a.OC; o++) {
            if ((o >= a.conv_begin && o < a.conv_begin + a.conv_E) || (o >= a.dt_begin && o < a.dt_begin + a.dt_n)) continue;
            float* p = a.out + (size_t)r * a.ldo + o;
            *p = a.beta != 0.0f ? *p + prod[o] : prod[o];
        }
    }
}

// Four consecutive weights of a row as one lane loads them (Raw), and as floats (f). fp32: a
// float4 (16 bytes); bf16: a uint2 (8 bytes), widened at use (a bf16 is the top half of a float),
// so the loads in flight take half the registers. Streaming loads (__ldcs: evict first; each
// weight is read once a step); vec: 4 whole, aligned weights, else one at a time (zeros past n).
template <typename WT> struct GemvWeights;
template <> struct GemvWeights<float> {
    typedef float4 Raw;
    static __device__ __forceinline__ const float* base(const DecodeGemv& a) { return a.W; }
    static __device__ __forceinline__ bool aligned(const DecodeGemv& a) { return ((uintptr_t)a.W & 15) == 0; }
    static __device__ __forceinline__ Raw load(const float* p, int k, int n, bool vec) {
        if (vec) return __ldcs(reinterpret_cast<const float4*>(p));
        float4 v = make_float4(__ldcs(p), 0.0f, 0.0f, 0.0f);
        if (k + 1 < n) v.y = __ldcs(p + 1);
        if (k + 2 < n) v.z = __ldcs(p + 2);
        if (k + 3 < n) v.w = __ldcs(p + 3);
        return v;
    }
    static __device__ __forceinline__ Raw zero() { return make_float4(0.0f, 0.0f, 0.0f, 0.0f); }
    static __device__ __forceinline__ float4 f(Raw v) { return v; }
};
template <> struct GemvWeights<bf16> {
    typedef uint2 Raw;  // bf16 pairs: .x = (k, k+1), .y = (k+2, k+3), the lower index in the low half
    static __device__ __forceinline__ const bf16* base(const DecodeGemv& a) { return a.W16; }
    static __device__ __forceinline__ bool aligned(const DecodeGemv& a) { return ((uintptr_t)a.W16 & 7) == 0; }
    static __device__ __forceinline__ Raw load(const bf16* p, int k, int n, bool vec) {
        if (vec) return __ldcs(reinterpret_cast<const uint2*>(p));
        const unsigned short* q = reinterpret_cast<const unsigned short*>(p);
        unsigned int v0 = __ldcs(q), v1 = k + 1 < n ? __ldcs(q + 1) : 0u, v2 = k + 2 < n ? __ldcs(q + 2) : 0u,
                     v3 = k + 3 < n ? __ldcs(q + 3) : 0u;
        return make_uint2(v0 | (v1 << 16), v2 | (v3 << 16));
    }
    static __device__ __forceinline__ Raw zero() { return make_uint2(0u, 0u); }
    static __device__ __forceinline__ float4 f(Raw v) {
        return make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xFFFF0000u), __uint_as_float(v.y << 16),
                           __uint_as_float(v.y & 0xFFFF0000u));
    }
};

// one chunk of the weights: rows row0 .. row0 + WR - 1, columns k0 + 4 (lane + 32 j), j < P
// (zeros past OC or IC)
template <int WR, int P, typename WT>
__device__ __forceinline__ void gemv_load_chunk(typename GemvWeights<WT>::Raw (&w)[WR][P], const DecodeGemv& a, int row0, int k0,
                                                int lane, bool vec) {
    typedef GemvWeights<WT> GW;
#pragma unroll
    for (int i = 0; i < WR; i++)
#pragma unroll
        for (int j = 0; j < P; j++) {
            int row = row0 + i, k = k0 + 4 * (lane + 32 * j);
            w[i][j] = (row < a.OC && k < a.IC) ? GW::load(GW::base(a) + (size_t)row * a.IC + k, k, a.IC, vec) : GW::zero();
        }
}

// activations are read through L2 only (ld.global.cg): they were written by the previous
// kernels of the step, which (with PDL) may have still been running when this block started
__device__ __forceinline__ float4 gemv_load_act(const float* src, int k, int n, bool vec) {
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (k < n) {
        if (vec) v = __ldcg(reinterpret_cast<const float4*>(src + k));
        else {
            v.x = __ldcg(src + k);
            if (k + 1 < n) v.y = __ldcg(src + k + 1);
            if (k + 2 < n) v.z = __ldcg(src + k + 2);
            if (k + 3 < n) v.w = __ldcg(src + k + 3);
        }
    }
    return v;
}

// stores the columns k..k+3 of a row of n columns (those below n)
__device__ __forceinline__ void gemv_store_row(float* row, int k, int n, float4 v) {
    row[k] = v.x;
    if (k + 1 < n) row[k + 1] = v.y;
    if (k + 2 < n) row[k + 2] = v.z;
    if (k + 3 < n) row[k + 3] = v.w;
}

// what a lane's epilogue reads besides the product, loaded ahead: the conv taps, bias and state
// of output (r, o) (a conv channel), dt's bias (a dt output), or the residual out[r, o] (beta = 1)
struct GemvEpi {
    float cw[GEMV_MAX_K], cb, st[GEMV_MAX_K - 1], res;  // cw: the conv's taps (zero past K); cb: its bias or dt's
};
__device__ __forceinline__ bool gemv_is_conv(const DecodeGemv& a, int o) { return o >= a.conv_begin && o < a.conv_begin + a.conv_E; }
__device__ __forceinline__ bool gemv_is_dt(const DecodeGemv& a, int o) { return o >= a.dt_begin && o < a.dt_begin + a.dt_n; }
// taps and biases (weights: may be read before the wait)
__device__ __forceinline__ void gemv_epi_weights(GemvEpi& e, const DecodeGemv& a, int o) {
    if (gemv_is_conv(a, o)) {
        const int c = o - a.conv_begin;
        const float* cw = a.conv_w + (size_t)c * a.conv_K;
#pragma unroll
        for (int k = 0; k < GEMV_MAX_K; k++) e.cw[k] = k < a.conv_K ? cw[k] : 0.0f;
        e.cb = a.conv_b[c];
    } else if (gemv_is_dt(a, o)) {
        e.cb = a.dt_bias[o - a.dt_begin];
    }
}
// the state or the residual (after the wait)
__device__ __forceinline__ void gemv_epi_data(GemvEpi& e, const DecodeGemv& a, int r, int o) {
    if (gemv_is_conv(a, o)) {
        const float* st = a.conv_state + ((size_t)r * a.conv_E + o - a.conv_begin) * (a.conv_K - 1);
#pragma unroll
        for (int k = 0; k < GEMV_MAX_K - 1; k++) e.st[k] = k < a.conv_K - 1 ? __ldcg(st + k) : 0.0f;
    } else if (a.beta != 0.0f && !gemv_is_dt(a, o)) {
        e.res = __ldcg(a.out + (size_t)r * a.ldo + o);
    }
}
// the output (r, o) = v: the conv step (conv1d_step_channel on the taps and state in registers, the
// shifted state stored) + SiLU, dt = softplus(v + bias) (and A), or the store (beta = 1: the residual add)
__device__ __forceinline__ void gemv_epilogue(const GemvEpi& e, const DecodeGemv& a, int r, int o, float v) {
    if (gemv_is_conv(a, o)) {
        const int c = o - a.conv_begin;
        float* st = a.conv_state + ((size_t)r * a.conv_E + c) * (a.conv_K - 1);
        size_t len;
        float* col = a.u.col(c, a.conv_E, &len);
        col[(size_t)r * len] = silu_f(conv1d_step_channel<GEMV_MAX_K>(st, e.st, e.cw, e.cb, v, a.conv_K));
    } else if (gemv_is_dt(a, o)) {
        const int h = o - a.dt_begin;
        a.dt_out[(size_t)r * a.dt_n + h] = softplus_f(v + e.cb);
        if (a.A_out && r == 0) a.A_out[h] = -expf(a.A_log[h]);
    } else {
        a.out[(size_t)r * a.ldo + o] = a.beta != 0.0f ? e.res + v : v;
    }
}

// R: rows rounded up (a power of two <= GEMV_MAX_ROWS; rows past a.rows are zeros). P: four
// weights of a row per lane per chunk (6: a chunk of 768 columns, 2 rows per warp; 12: 1536
// columns, 1 row per warp). WT: the weights' type (float: a.W; bf16: a.W16). Each warp owns
// WR weight rows at a time (a grid-stride loop).
//   before the wait: the first chunk of its weights (WR x P float4 per lane, streaming loads)
//     and the conv taps of the outputs its lanes finish
//   after the wait: the activation rows into shared memory (L2-only loads, all of a round in
//     flight); with the rmsnorm a warp per row, which sums the row's squares itself and writes
//     (x rstd) nw (no block-wide reduction); one barrier; then per chunk 16-byte shared reads and
//     FMAs into V = WR x R sums, a reduce-scatter over the lanes (warp_reduce_scatter: at 8 rows
//     16 shuffles a row group, where 16 warp sums took 80), and lane (i R + r) << (5 - log2 V)
//     finishes output (r, row0 + i) with the values it loaded ahead (conv state, residual).
//   with argmax_keys: at the end, the block's largest sample_key of each row (deterministic).
// Shared memory: R x ICp floats, ICp = IC rounded up to 4.
template <int R, int P, typename WT>
__global__ void __launch_bounds__(GEMV_MAX_WARPS * 32) decode_gemv_kernel(const DecodeGemv a) {
    typedef GemvWeights<WT> GW;
    constexpr int WR = GEMV_SLOTS / P;
    constexpr int V = WR * R;  // outputs of a row group: a power of two, each finished by 32 / V lanes
    static_assert(V <= 32 && (V & (V - 1)) == 0, "one lane per output of a row group");
    constexpr int V_SHIFT = V == 1 ? 5 : V == 2 ? 4 : V == 4 ? 3 : V == 8 ? 2 : V == 16 ? 1 : 0;  // 5 - log2 V
    extern __shared__ float4 gemv_smem[];
    float* xs = reinterpret_cast<float*>(gemv_smem);  // (R, ICp)
    if (a.pdl_early) pdl_trigger();
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    const int ICp = (a.IC + 3) & ~3;
    const bool vec = (a.IC % 4 == 0) && GW::aligned(a);
    const int stride = gridDim.x * nwarps * WR;
    int row0 = (blockIdx.x * nwarps + warp) * WR, k0 = 0;
    typename GW::Raw w[WR][P];
    gemv_load_chunk<WR, P, WT>(w, a, row0, k0, lane, vec);  // weights only: before the wait
    // the output this lane finishes, (er, row0 + ei): value i * R + r = lane >> V_SHIFT of the
    // row group's reduce-scatter, by the first of the 32 / V lanes that hold it
    const int ei = (lane >> V_SHIFT) / R, er = (lane >> V_SHIFT) % R;
    const bool finisher = (lane & ((1 << V_SHIFT) - 1)) == 0;
    GemvEpi epi;
    epi.res = 0.0f;
    bool mine = finisher && er < a.rows && row0 + ei < a.OC;
    if (mine) gemv_epi_weights(epi, a, row0 + ei);
    pdl_wait();
    if (!a.pdl_early) pdl_trigger();
    if (mine) gemv_epi_data(epi, a, er, row0 + ei);

    // the activations into shared memory (zeros past rows and IC)
    const bool in_vec = (a.IC % 4 == 0) && (a.ldi % 4 == 0) && (((uintptr_t)a.inp & 15) == 0);
    const bool emb = a.emb_out && blockIdx.x == 0;
    if (a.norm_w) {  // a warp per row: it holds the whole row, so it sums the squares itself
        constexpr int PF = P < 6 ? P : 6;  // float4 per lane per round
        const bool nw_vec = (a.IC % 4 == 0) && (((uintptr_t)a.norm_w & 15) == 0);
        for (int r = warp; r < R; r += nwarps) {
            float* xr = xs + r * ICp;
            if (r >= a.rows) {
                for (int k = 4 * lane; k < ICp; k += 128) *reinterpret_cast<float4*>(xr + k) = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                continue;
            }
            const float* src = a.inp + (size_t)(a.tokens ? a.tokens[r] : r) * a.ldi;
            float ss = 0.0f;
            for (int c0 = 0; c0 < ICp; c0 += 128 * PF) {
                float4 v[PF];
#pragma unroll
                for (int j = 0; j < PF; j++) v[j] = gemv_load_act(src, c0 + 4 * (lane + 32 * j), a.IC, in_vec);
#pragma unroll
                for (int j = 0; j < PF; j++) {
                    int k = c0 + 4 * (lane + 32 * j);
                    if (k < ICp) {
                        ss += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
                        *reinterpret_cast<float4*>(xr + k) = v[j];
                        if (emb) gemv_store_row(a.emb_out + (size_t)r * a.IC, k, a.IC, v[j]);
                    }
                }
            }
            // each lane rescales the columns it wrote: (x * rstd) * nw, as rmsnorm_forward_cpu
            const float rstd = rsqrtf(warp_sum(ss) / a.IC + RMSNORM_EPS);
            for (int k = 4 * lane; k < ICp; k += 128) {
                float4 x4 = *reinterpret_cast<float4*>(xr + k);
                float4 n4;
                if (nw_vec) n4 = __ldg(reinterpret_cast<const float4*>(a.norm_w + k));
                else {
                    n4.x = a.norm_w[k];
                    n4.y = k + 1 < a.IC ? a.norm_w[k + 1] : 0.0f;
                    n4.z = k + 2 < a.IC ? a.norm_w[k + 2] : 0.0f;
                    n4.w = k + 3 < a.IC ? a.norm_w[k + 3] : 0.0f;
                }
                x4.x = x4.x * rstd * n4.x; x4.y = x4.y * rstd * n4.y; x4.z = x4.z * rstd * n4.z; x4.w = x4.w * rstd * n4.w;
                *reinterpret_cast<float4*>(xr + k) = x4;
            }
        }
    } else if (in_vec && !emb) {  // the whole block by 16-byte cp.async copies: all in flight at once, so a fill
        // of 8 rows costs one L2 round trip (loads in registers, GEMV_FILL a round, took 8 rounds at 8 x 1536)
        const int n4 = ICp / 4, total = R * n4;
        for (int q = threadIdx.x; q < total; q += blockDim.x) {
            const int r = q / n4, k = 4 * (q - r * n4);
            const bool full = r < a.rows;  // in_vec: IC % 4 == 0, so k < IC
            cp_async<16>(&gemv_smem[q], full ? a.inp + (size_t)(a.tokens ? a.tokens[r] : r) * a.ldi + k : a.inp, full);
        }
        cp_async_commit();
        cp_async_wait<0>();
    } else {  // the whole block, GEMV_FILL float4 per thread per round (all loads of a round in flight)
        const int n4 = ICp / 4, total = R * n4;
        for (int q0 = threadIdx.x; q0 < total; q0 += GEMV_FILL * blockDim.x) {
            float4 v[GEMV_FILL];
#pragma unroll
            for (int m = 0; m < GEMV_FILL; m++) {
                int q = q0 + m * blockDim.x, r = q / n4;
                v[m] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (q < total && r < a.rows)
                    v[m] = gemv_load_act(a.inp + (size_t)(a.tokens ? a.tokens[r] : r) * a.ldi, 4 * (q - r * n4), a.IC, in_vec);
            }
#pragma unroll
            for (int m = 0; m < GEMV_FILL; m++) {
                int q = q0 + m * blockDim.x, r = q / n4;
                if (q < total) {
                    gemv_smem[q] = v[m];
                    if (emb && r < a.rows) gemv_store_row(a.emb_out + (size_t)r * a.IC, 4 * (q - r * n4), a.IC, v[m]);
                }
            }
        }
    }
    __syncthreads();

    float acc[WR][R];
#pragma unroll
    for (int i = 0; i < WR; i++)
#pragma unroll
        for (int r = 0; r < R; r++) acc[i][r] = 0.0f;
    unsigned long long kmax = 0;  // argmax_keys: the largest key of the outputs this lane finished
    while (row0 < a.OC) {  // uniform over the warp
#pragma unroll
        for (int j = 0; j < P; j++) {
            int k = k0 + 4 * (lane + 32 * j);
            if (k < ICp) {
                float4 wf[WR];
#pragma unroll
                for (int i = 0; i < WR; i++) wf[i] = GW::f(w[i][j]);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    float4 x4 = *reinterpret_cast<const float4*>(xs + r * ICp + k);
#pragma unroll
                    for (int i = 0; i < WR; i++) {
                        acc[i][r] = fmaf(wf[i].x, x4.x, acc[i][r]);
                        acc[i][r] = fmaf(wf[i].y, x4.y, acc[i][r]);
                        acc[i][r] = fmaf(wf[i].z, x4.z, acc[i][r]);
                        acc[i][r] = fmaf(wf[i].w, x4.w, acc[i][r]);
                    }
                }
            }
        }
        k0 += 128 * P;
        if (k0 >= ICp) {  // the row group is done: its V sums over the lanes (a reduce-scatter: V - 1 + V_SHIFT
            // shuffles; V warp sums took 5 V), lane (i * R + r) << V_SHIFT finishes (r, row0 + i)
            float* sums = &acc[0][0];
            const float v = warp_reduce_scatter<V>(sums, lane);
#pragma unroll
            for (int i = 0; i < WR; i++)
#pragma unroll
                for (int r = 0; r < R; r++) acc[i][r] = 0.0f;
            if (mine) {
                gemv_epilogue(epi, a, er, row0 + ei, v);
                kmax = max(kmax, sample_key(a.beta != 0.0f ? epi.res + v : v, row0 + ei));  // as stored (the head: no conv, no dt)
            }
            k0 = 0;
            row0 += stride;
            mine = finisher && er < a.rows && row0 + ei < a.OC;
            if (mine) { gemv_epi_weights(epi, a, row0 + ei); gemv_epi_data(epi, a, er, row0 + ei); }  // a later row group
        }
        if (row0 < a.OC) gemv_load_chunk<WR, P, WT>(w, a, row0, k0, lane, vec);
    }
    if (a.argmax_keys) {  // the block's largest key of each row: over the lanes of a row, then the warps
        __shared__ unsigned long long s_keys[GEMV_MAX_WARPS][R];
        // row r's lanes: (i * R + r) << V_SHIFT plus the low V_SHIFT bits, so every lane bit but row's
#pragma unroll
        for (int off = 16; off > 0; off >>= 1)
            if (off < (1 << V_SHIFT) || off >= (R << V_SHIFT)) kmax = max(kmax, __shfl_xor_sync(0xffffffffu, kmax, off));
        if (lane < (R << V_SHIFT) && finisher) s_keys[warp][lane >> V_SHIFT] = kmax;
        __syncthreads();
        if (threadIdx.x < a.rows) {
            unsigned long long k = 0;
            for (int q = 0; q < nwarps; q++) k = max(k, s_keys[q][threadIdx.x]);
            a.argmax_keys[(size_t)threadIdx.x * gridDim.x + blockIdx.x] = k;
        }
    }
}

// shared memory one launch needs (bytes); the fused step runs where this fits (decoder_fused_ok)
static size_t decode_gemv_smem(int rows, int IC) {
    int R = rows <= 1 ? 1 : rows <= 2 ? 2 : rows <= 4 ? 4 : rows <= 8 ? 8 : 16;
    return (size_t)R * ((IC + 3) & ~3) * sizeof(float);
}
#define GEMV_MAX_SMEM (200 * 1024)

static int decode_gemv_warps(const DecodeGemv& a) {
    int w = a.warps > 0 ? a.warps : g_decode_gemv_warps;
    return std::max(1, std::min(w, GEMV_MAX_WARPS));
}
// the grid of a launch (argmax_keys holds rows x this many keys): a warp per WR weight rows, capped
static int decode_gemv_blocks(const DecodeGemv& a) {
    int WR = a.IC > 128 * 6 ? 1 : 2;  // as decode_gemv_cuda picks P
    return std::min(ceil_div(a.OC, decode_gemv_warps(a) * WR), gpu_sm_count() * GEMV_WARPS_PER_SM / decode_gemv_warps(a));
}

template <int R, int P, typename WT>
static void decode_gemv_launch_t(const DecodeGemv& a, cudaStream_t stream, bool pdl) {
    size_t smem = (size_t)R * ((a.IC + 3) & ~3) * sizeof(float);
    static size_t smem_allowed = 32 * 1024;  // per instantiation; raised outside any graph capture (the plain step runs first)
    if (smem > smem_allowed) {  // (the default limit, 48 KB, counts the static s_keys too)
        cudaCheck(cudaFuncSetAttribute(decode_gemv_kernel<R, P, WT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        smem_allowed = smem;
    }
    decoder_launch(decode_gemv_kernel<R, P, WT>, decode_gemv_blocks(a), decode_gemv_warps(a) * 32, smem, stream, pdl, a);
}
template <int R, int P>
static void decode_gemv_launch(const DecodeGemv& a, cudaStream_t stream, bool pdl) {
    if (a.W16) decode_gemv_launch_t<R, P, bf16>(a, stream, pdl);
    else decode_gemv_launch_t<R, P, float>(a, stream, pdl);
}

// out = ... (see DecodeGemv) on the device; rows 1..GEMV_MAX_ROWS
template <int P>
static void decode_gemv_cuda_p(const DecodeGemv& a, cudaStream_t stream, bool pdl) {
    if (a.rows <= 1) decode_gemv_launch<1, P>(a, stream, pdl);
    else if (a.rows <= 2) decode_gemv_launch<2, P>(a, stream, pdl);
    else if (a.rows <= 4) decode_gemv_launch<4, P>(a, stream, pdl);
    else if (a.rows <= 8) decode_gemv_launch<8, P>(a, stream, pdl);
    else decode_gemv_launch<16, P>(a, stream, pdl);
}
static void decode_gemv_cuda(const DecodeGemv& a, cudaStream_t stream = launch_stream(), bool pdl = false) {
    if (a.rows < 1 || a.rows > GEMV_MAX_ROWS) FATAL("decode GEMV: %d rows, it takes 1..%d", a.rows, GEMV_MAX_ROWS);
    if (decode_gemv_smem(a.rows, a.IC) > GEMV_MAX_SMEM) FATAL("decode GEMV: %d rows of %d inputs exceed its shared memory", a.rows, a.IC);
    if (a.conv_E > 0 && (a.conv_K < 1 || a.conv_K > GEMV_MAX_K)) FATAL("decode GEMV: conv width %d, it takes 1..%d", a.conv_K, GEMV_MAX_K);
    if (a.IC > 128 * 6) decode_gemv_cuda_p<12>(a, stream, pdl);  // 1 weight row per warp, chunks of 1536 columns
    else decode_gemv_cuda_p<6>(a, stream, pdl);                  // 2 weight rows per warp, 768 columns
}

// ---------------------------------------------------------------------------
// sampling kernel: one block per row (see the top of the file)

#define SAMPLE_THREADS 512  // a multiple of 32: every warp runs whole (the digit passes use warp votes)
#define SAMPLE_SMALL_K 1024 // up to this many candidates: gathered and ordered in shared memory, summed as the CPU does
#define SAMPLE_UNROLL 4     // logits each thread loads at once in the digit passes (independent loads in flight)
#define SAMPLE_ARGMAX_UNROLL 8  // the same for the argmax pass

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
// when out2 is not null, to out2[r] too (the decoder's next input). keys (rows, nkeys) or null:
// keys of the logits whose largest is the largest key of the row (the head GEMV's argmax_keys):
// greedy sampling reads these instead of the logits.
__global__ void __launch_bounds__(SAMPLE_THREADS)
sample_rows_kernel(int* __restrict__ out, int* __restrict__ out2, const float* __restrict__ logits, int V,
                   float temperature, int top_k, const float* __restrict__ uniforms,
                   const unsigned long long* __restrict__ keys = nullptr, int nkeys = 0) {
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
    if (keys && !(temperature > 0.0f)) {  // greedy, from the head's keys
        for (int i = tid; i < nkeys; i += blockDim.x) best = max(best, keys[(size_t)row * nkeys + i]);
    } else if (V % 4 == 0 && ((uintptr_t)x & 15) == 0) {  // 16-byte loads
        const float4* x4 = reinterpret_cast<const float4*>(x);
        const int V4 = V / 4;
        for (int q0 = 0; q0 < V4; q0 += SAMPLE_ARGMAX_UNROLL * blockDim.x) {
            float4 v[SAMPLE_ARGMAX_UNROLL];
#pragma unroll
            for (int j = 0; j < SAMPLE_ARGMAX_UNROLL; j++) {
                int q = q0 + j * blockDim.x + tid;
                v[j] = q < V4 ? x4[q] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
#pragma unroll
            for (int j = 0; j < SAMPLE_ARGMAX_UNROLL; j++) {
                int q = q0 + j * blockDim.x + tid;
                if (q < V4) {
                    best = max(best, sample_key(v[j].x, 4 * q));
                    best = max(best, sample_key(v[j].y, 4 * q + 1));
                    best = max(best, sample_key(v[j].z, 4 * q + 2));
                    best = max(best, sample_key(v[j].w, 4 * q + 3));
                }
            }
        }
    } else {  // any V
        for (int i0 = 0; i0 < V; i0 += SAMPLE_ARGMAX_UNROLL * blockDim.x) {
            float v[SAMPLE_ARGMAX_UNROLL];
#pragma unroll
            for (int j = 0; j < SAMPLE_ARGMAX_UNROLL; j++) {  // the loads first, so they overlap
                int i = i0 + j * blockDim.x + tid;
                v[j] = i < V ? x[i] : 0.0f;
            }
#pragma unroll
            for (int j = 0; j < SAMPLE_ARGMAX_UNROLL; j++) {
                int i = i0 + j * blockDim.x + tid;
                if (i < V) best = max(best, sample_key(v[j], i));
            }
        }
    }
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
                             const float* uniforms, cudaStream_t stream = launch_stream(), const unsigned long long* keys = nullptr,
                             int nkeys = 0) {
    if (rows <= 0) return;
    sample_rows_kernel<<<rows, SAMPLE_THREADS, 0, stream>>>(out, out2, logits, V, temperature, top_k, uniforms, keys, nkeys);
    cudaCheckLaunch();
}

// ---------------------------------------------------------------------------
// the decoder

// how a step runs: DECODE_FUSED (the decode GEMV kernels, 4 launches a layer, for batches up
// to DECODE_FUSED_MAX_ROWS), DECODE_BLAS (cuBLAS products + separate norm/conv kernels, 6
// launches a layer, any batch); DECODE_AUTO picks the fused path up to the measured crossover
enum DecodePath { DECODE_AUTO = 0, DECODE_FUSED, DECODE_BLAS };
#define DECODE_FUSED_MAX_ROWS 8  // AUTO: fused up to this batch, cuBLAS above (the measured crossover, see the top of the file)

struct MambaGpuDecoder {
    const MambaModel* m = nullptr;
    int max_batch = 0;   // sequences the buffers hold
    int rows = 0;        // sequences of the current batch (mamba_decoder_start)
    bool use_graph = false;
    DecodePath path = DECODE_AUTO;  // as asked; the batch's own choice is decoder_fused(d, rows)
    DecodePdl pdl = PDL_OFF;  // programmatic dependent launch between the fused step's kernels (sm_90+)
    cudaStream_t stream = nullptr;
    float* conv_state = nullptr;  // (n_layer, max_batch, E, K-1)
    float* ssm_state = nullptr;   // (n_layer, max_batch, E, N)
    int* tokens = nullptr;        // (max_batch) the next step's input tokens
    float *x = nullptr, *xn = nullptr, *rstd = nullptr, *xz = nullptr, *u = nullptr, *xdbl = nullptr;
    float *y = nullptr, *xf = nullptr, *logits = nullptr;
    unsigned long long* head_keys = nullptr;  // (max_batch, head_key_cap) the fused head's argmax keys
    int head_key_cap = 0;
    int head_keys_n = 0;  // keys per row the last fused step wrote (0: the last step was not fused)
    cudaGraphExec_t graph = nullptr;  // one step for graph_rows rows
    int graph_rows = 0;
    // bf16 weights (mamba_decoder_init's bf16_weights): copies of the matrices the decode GEMVs read
    // (decoder_w16_sources: M1 in_proj, x_proj, out_proj of a pure Mamba-1 model; M2 in_proj, out_proj;
    // A qkv, proj; F fc, fc_proj; the head, wte), rounded to nearest, made at init from the model's fp32 weights; the
    // GEMVs read these (half the bytes), the rest (norms, conv, dt_proj, A, D, the embedding rows)
    // and the cuBLAS path stay fp32. A decoder lives for one generation, so the copies cannot go stale.
    bf16* w16 = nullptr;
    std::vector<std::pair<const float*, const bf16*>> w16_of;  // (fp32 weight, its copy)
    // layer patterns (decoder_layered, see the top of the file); the M1 state buffers above keep
    // a slot per layer, M1 or not
    bool layered = false;
    int pos = 0;                      // tokens fed since mamba_decoder_start (the next token's position)
    int max_len = 0;                  // positions the KV caches hold
    float* m2_state = nullptr;        // per M2 layer: conv (max_batch, C, K-1) then SSM (max_batch, H, P, N)
    size_t m2_state_floats = 0;
    std::vector<size_t> m2_offset;    // per layer: the offset of its conv state in m2_state (M2 layers)
    void* m2_work = nullptr;          // the M2 step's scratch (mamba2_layout_scratch for max_batch rows)
    Mamba2Scratch m2_scratch;
    float* kv_cache = nullptr;        // per A layer: k then v, (max_batch, max_len, D) each
    size_t kv_floats = 0;
    std::vector<size_t> kv_offset;    // per layer: the offset of its k cache in kv_cache (A layers)
    float* att_part = nullptr;        // the attention step's partial softmaxes (attention_step_scratch_floats)
    int* positions = nullptr;         // (max_batch) each row's position in this step, on the device: the KV append,
                                      // the attention step and learned positions read it when they run, and the
                                      // step's last kernel advances it, so a captured step serves every position
    float *qkv = nullptr, *q = nullptr, *att = nullptr, *hid = nullptr, *out = nullptr;  // A, F, M2 (max_batch rows)
};

// whether the decoder runs the model layer by layer (any pattern but pure Mamba-1)
static bool decoder_layered(const MambaModel* m) { return !mamba_is_pure_m1(m->cfg); }
// the fp32 matrices a decoder with bf16 weights copies, with their sizes (see w16 above)
static std::vector<std::pair<const float*, size_t>> decoder_w16_sources(const MambaModel* m) {
    const MambaConfig& c = m->cfg;
    const size_t D = c.d_model, E = c.d_inner, XD = c.dt_rank + 2 * c.d_state, V = c.vocab_size, F = (size_t)c.mlp_mult * D;
    std::vector<std::pair<const float*, size_t>> src;
    for (int l = 0; l < c.n_layer; l++) {
        const LayerParams& p = m->layers[l];
        switch (m->layer_index[l].kind) {
        case LAYER_M1:  // the fused step's GEMVs; in a layer pattern an M1 layer runs the cuBLAS path on fp32 weights
            if (decoder_layered(m)) break;
            src.push_back({p.in_proj_w, 2 * E * D}); src.push_back({p.x_proj_w, XD * E}); src.push_back({p.out_proj_w, D * E});
            break;
        case LAYER_M2:
            src.push_back({p.m2.in_proj_w, (size_t)m->m2cfg.d_in_proj * D});
            src.push_back({p.m2.out_proj_w, D * (size_t)m->m2cfg.d_inner});
            break;
        case LAYER_ATTN: src.push_back({p.qkv_w, 3 * D * D}); src.push_back({p.attn_proj_w, D * D}); break;
        case LAYER_MLP: src.push_back({p.fc_w, F * D}); src.push_back({p.fc_proj_w, D * F}); break;
        default: FATAL("GPU decoder: unknown layer kind");
        }
    }
    src.push_back({m->wte, V * D});
    return src;
}
// the bf16 copy of weight W, or nullptr (fp32 weights)
static const bf16* decoder_w16(const MambaGpuDecoder* d, const float* W) {
    for (const auto& e : d->w16_of)
        if (e.first == W) return e.second;
    return nullptr;
}

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
}

// the buffers of a layered decoder: M2 states and scratch, KV caches, the A / F / M2 activations
static void decoder_init_layers(MambaGpuDecoder* d) {
    const MambaModel* m = d->m;
    const MambaConfig& c = m->cfg;
    const Mamba2Config& c2 = m->m2cfg;
    size_t Bm = d->max_batch, D = c.d_model;
    d->m2_offset.assign(c.n_layer, 0); d->kv_offset.assign(c.n_layer, 0);
    for (int l = 0; l < c.n_layer; l++) {
        LayerKind kind = m->layer_index[l].kind;
        if (kind == LAYER_M2) {
            d->m2_offset[l] = d->m2_state_floats;
            d->m2_state_floats += Bm * ((size_t)c2.conv_dim * (c2.d_conv - 1) + (size_t)c2.nheads * c2.headdim * c2.d_state);
        }
        if (kind == LAYER_ATTN) { d->kv_offset[l] = d->kv_floats; d->kv_floats += 2 * Bm * d->max_len * D; }
    }
    if (d->m2_state_floats) {
        d->m2_state = decoder_alloc_poisoned(d->m2_state_floats);
        size_t bytes = mamba2_scratch_bytes(c2, d->max_batch, 1);
        cudaCheck(cudaMalloc(&d->m2_work, bytes));
        cudaCheck(cudaMemset(d->m2_work, 0xFF, bytes));  // NaN: a value the step reads before writing shows up
        Arena a = {(char*)d->m2_work, 0};
        mamba2_layout_scratch(&d->m2_scratch, &a, c2, d->max_batch, 1);
    }
    if (d->kv_floats) {
        d->kv_cache = decoder_alloc_poisoned(d->kv_floats);  // positions past pos are never read
        d->att_part = decoder_alloc_poisoned(attention_step_scratch_floats(Bm, c.attn_heads, d->max_len, D / c.attn_heads));
    }
    d->qkv = decoder_alloc_poisoned(Bm * 3 * D); d->q = decoder_alloc_poisoned(Bm * D);
    d->att = decoder_alloc_poisoned(Bm * D);     d->out = decoder_alloc_poisoned(Bm * D);
    d->hid = decoder_alloc_poisoned(Bm * (size_t)c.mlp_mult * D);
}

// path: see DecodePath; pdl: see DecodePdl (off where the device lacks it). max_len: the
// positions a sequence may reach, i.e. the KV caches' length (patterns with attention layers;
// 0: the model's max_seq, which a pattern without learned positions does not have)
static void mamba_decoder_init(MambaGpuDecoder* d, const MambaModel* m, int max_batch, bool use_graph,
                               DecodePath path = DECODE_AUTO, DecodePdl pdl = DECODE_PDL_DEFAULT, bool bf16_weights = false,
                               int max_len = 0) {
    mamba_decoder_check_model(m);
    if (max_batch < 1) FATAL("GPU decoder: batch must be >= 1, got %d", max_batch);
    const MambaConfig& c = m->cfg;
    const bool layered = decoder_layered(m);
    if (layered && path == DECODE_FUSED)
        FATAL("GPU decoder: the fused step runs Mamba-1 models; this one's pattern is %s (use DECODE_AUTO or DECODE_BLAS)",
              c.layers.c_str());
    if (max_len <= 0) max_len = c.pos_embed ? c.max_seq : 0;
    if (mamba_has_kind(c, LAYER_ATTN) && max_len <= 0)
        FATAL("GPU decoder: pattern %s has attention layers: give the positions a sequence may reach (max_len) for their KV caches",
              c.layers.c_str());
    size_t Bm = max_batch, D = c.d_model, E = c.d_inner, N = c.d_state, R = c.dt_rank, V = c.vocab_size;
    *d = MambaGpuDecoder();
    d->m = m; d->max_batch = max_batch; d->use_graph = use_graph; d->path = path;
    d->layered = layered; d->max_len = max_len;
    int dev = 0, major = 0;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    d->pdl = major >= 9 ? pdl : PDL_OFF;
    cudaCheck(cudaDeviceSynchronize());  // the weights were written on the default stream
    // the step runs on this stream: the fused kernels name it, the framework's step functions of a
    // layered decoder take it from the StreamScope around the step (common.h)
    cudaCheck(cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking));
    d->conv_state = decoder_alloc_poisoned(mamba_decoder_conv_floats(c, max_batch));
    d->ssm_state = decoder_alloc_poisoned(mamba_decoder_ssm_floats(c, max_batch));
    cudaCheck(cudaMalloc(&d->tokens, Bm * sizeof(int)));
    cudaCheck(cudaMemset(d->tokens, 0, Bm * sizeof(int)));
    cudaCheck(cudaMalloc(&d->positions, Bm * sizeof(int)));
    cudaCheck(cudaMemset(d->positions, 0, Bm * sizeof(int)));
    d->x = decoder_alloc_poisoned(Bm * D);       d->xn = decoder_alloc_poisoned(Bm * D);
    d->rstd = decoder_alloc_poisoned(Bm);        d->xz = decoder_alloc_poisoned(Bm * 2 * E);
    d->u = decoder_alloc_poisoned(Bm * E);       d->xdbl = decoder_alloc_poisoned(Bm * (R + 2 * N));
    d->y = decoder_alloc_poisoned(Bm * E);
    d->xf = decoder_alloc_poisoned(Bm * D);      d->logits = decoder_alloc_poisoned(Bm * V);
    d->head_key_cap = gpu_sm_count() * GEMV_WARPS_PER_SM;  // >= decode_gemv_blocks at any block size
    cudaCheck(cudaMalloc(&d->head_keys, Bm * d->head_key_cap * sizeof(unsigned long long)));
    if (layered) decoder_init_layers(d);
    if (bf16_weights) {  // one buffer, each tensor starting on a 16-byte boundary
        std::vector<std::pair<const float*, size_t>> src = decoder_w16_sources(m);
        size_t total = 0;
        for (auto& t : src) total += (t.second + 7) & ~(size_t)7;
        cudaCheck(cudaMalloc(&d->w16, total * sizeof(bf16)));
        size_t off = 0;
        for (auto& t : src) {
            bf16* q = d->w16 + off;
            linear_round_bf16_into(q, t.first, t.second, d->stream);
            d->w16_of.push_back({t.first, q});
            off += (t.second + 7) & ~(size_t)7;
        }
    }
}

static void mamba_decoder_free(MambaGpuDecoder* d) {
    if (!d->m) return;
    cudaCheck(cudaStreamSynchronize(d->stream));
    if (d->graph) cudaCheck(cudaGraphExecDestroy(d->graph));
    for (float* p : {d->conv_state, d->ssm_state, d->x, d->xn, d->rstd, d->xz, d->u, d->xdbl, d->y, d->xf, d->logits,
                     d->m2_state, d->kv_cache, d->att_part, d->qkv, d->q, d->att, d->hid, d->out})
        if (p) cudaCheck(cudaFree(p));
    cudaCheck(cudaFree(d->tokens));
    cudaCheck(cudaFree(d->positions));
    cudaCheck(cudaFree(d->head_keys));
    if (d->w16) cudaCheck(cudaFree(d->w16));
    if (d->m2_work) cudaCheck(cudaFree(d->m2_work));
    if (d->stream) cudaCheck(cudaStreamDestroy(d->stream));
    *d = MambaGpuDecoder();
}

// out (N, OC) (row stride ldo) = inp (N, IC) (row stride ldi) @ W^T + beta * out; W: (OC, IC):
// linear.h's product (one row: its GEMV; an sgemm with N = 1 runs on a few thread blocks, on an H100
// the 130m step took ~1 ms that way), on the shared cuBLAS handle, which the step's StreamScope points
// at d->stream with a fixed workspace (so this can be captured)
static void decoder_gemm(MambaGpuDecoder* d, float* out, int ldo, const float* inp, int ldi, const float* W, int N, int IC,
                         int OC, float beta) {
    if (launch_stream() != d->stream) FATAL("decoder_gemm outside the step's StreamScope");
    linear_gemm(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, W, IC, inp, ldi, beta, out, ldo);
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

// the A layer's step inputs: q (rows, D) from qkv (rows, 3D) = [q | k | v]; this token's k and v
// into the layer's caches (rows, max_len, D) at the row's position (positions: device)
__global__ void decode_kv_append_kernel(float* q, float* k_cache, float* v_cache, const float* qkv, int rows, int D,
                                        int max_len, const int* positions) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= (size_t)rows * D) return;
    size_t b = i / D, c = i % D;
    const float* r = qkv + b * 3 * D;
    size_t at = (b * max_len + positions[b]) * D + c;
    q[i] = r[c];
    k_cache[at] = r[D + c];
    v_cache[at] = r[2 * D + c];
}

// each row's position one further (the end of a step)
__global__ void decode_positions_advance_kernel(int* positions, int rows) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < rows) positions[i]++;
}

// whether a layered step's product of `rows` rows and IC inputs runs as the decode GEMV (the fused
// path's batches: the rows' inputs must fit its shared memory)
static bool decoder_gemv_ok(const MambaGpuDecoder* d, int rows, int IC) {
    return d->path != DECODE_BLAS && rows <= DECODE_FUSED_MAX_ROWS && rows <= GEMV_MAX_ROWS &&
           decode_gemv_smem(rows, IC) <= GEMV_MAX_SMEM;
}

// out (rows, OC) (row stride ldo) = beta * out + [rmsnorm(inp) * norm_w, if norm_w] @ W^T, W (OC, IC):
// a layered step's products. The decode GEMV where decoder_gemv_ok (the RMSNorm as its prologue, the
// residual add as beta = 1, the bf16 copy of W where the decoder has one: one launch), else the
// RMSNorm kernel into d->xn and decoder_gemm.
static void decoder_product(MambaGpuDecoder* d, float* out, int ldo, const float* inp, int ldi, const float* W,
                            const float* norm_w, int rows, int IC, int OC, float beta) {
    if (decoder_gemv_ok(d, rows, IC)) {
        DecodeGemv a = {};
        a.out = out; a.ldo = ldo; a.inp = inp; a.ldi = ldi; a.W = W; a.W16 = decoder_w16(d, W);
        a.rows = rows; a.IC = IC; a.OC = OC; a.beta = beta; a.norm_w = norm_w;
        a.pdl_early = d->pdl == PDL_EARLY;
        decode_gemv_cuda(a, d->stream, d->pdl != PDL_OFF);
        return;
    }
    if (norm_w) {
        decoder_rmsnorm(d, d->xn, inp, norm_w, rows, IC);
        inp = d->xn; ldi = IC;
    }
    decoder_gemm(d, out, ldo, inp, ldi, W, rows, IC, OC, beta);
}

// an M2 layer's in_proj as the decode GEMV with the step's prologue in its epilogue (see the GEMV):
// the RMSNorm of d->x, the product, then z, x | B | C (the conv step + SiLU; conv_st updated), dt and A
// into d->m2_scratch.step's buffers, ready for mamba2_step_tail
static void decoder_m2_in_proj(MambaGpuDecoder* d, float* conv_st, const LayerParams& p, int rows) {
    const Mamba2Config& c2 = d->m->m2cfg;
    const Mamba2Scratch& s2 = d->m2_scratch;
    const int E = c2.d_inner, C = c2.conv_dim, GN = c2.ngroups * c2.d_state;
    DecodeGemv a = {};
    a.out = s2.step.z; a.ldo = E;  // outputs [0, E): z
    a.inp = d->x; a.ldi = d->m->cfg.d_model;
    a.W = p.m2.in_proj_w; a.W16 = decoder_w16(d, a.W);
    a.rows = rows; a.IC = d->m->cfg.d_model; a.OC = c2.d_in_proj; a.beta = 0.0f; a.norm_w = p.norm_w;
    a.conv_E = C; a.conv_K = c2.d_conv; a.conv_begin = E; a.conv_state = conv_st;
    a.conv_w = p.m2.conv_w; a.conv_b = p.m2.conv_b;
    a.u = ConvCols<float>{s2.step.x, s2.step.Bm, s2.step.Cm, E, GN};
    a.dt_n = c2.nheads; a.dt_begin = E + C; a.dt_bias = p.m2.dt_bias; a.dt_out = s2.step.dt;
    a.A_log = p.m2.A_log; a.A_out = s2.A;
    a.pdl_early = d->pdl == PDL_EARLY;
    decode_gemv_cuda(a, d->stream, d->pdl != PDL_OFF);
}

static void decoder_head(MambaGpuDecoder* d, int rows, bool pdl);
static void decoder_scan(MambaGpuDecoder* d, int l, int rows, bool pdl);

// the step layer by layer for `rows` sequences: d->tokens -> d->logits; advances the states. The
// cuBLAS path of a Mamba-1 model (the first case of the switch only), and a layer pattern (any case:
// its products through decoder_product, the framework's functions on launch_stream(), which is
// d->stream inside mamba_decoder_step_launch's scope).
static void decoder_step_layers(MambaGpuDecoder* d, int rows) {
    const MambaModel* m = d->m;
    const MambaConfig& c = m->cfg;
    const int D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank, V = c.vocab_size, XD = R + 2 * N;
    cudaStream_t s = d->stream;
    const int block = 256;
    embedding_forward_kernel<<<ceil_div(rows * D, block), block, 0, s>>>(d->x, d->tokens, m->wte, rows, D);
    cudaCheckLaunch();
    if (m->wpe) position_add_indexed_cuda(d->x, m->wpe, d->positions, rows, 1, D);  // learned positions
    for (int l = 0; l < c.n_layer; l++) {
        const LayerParams& p = m->layers[l];
        switch (m->layer_index[l].kind) {
        case LAYER_M1: {
            float* conv_st = d->conv_state + (size_t)l * d->max_batch * E * (K - 1);
            decoder_rmsnorm(d, d->xn, d->x, p.norm_w, rows, D);
            decoder_gemm(d, d->xz, 2 * E, d->xn, D, p.in_proj_w, rows, D, 2 * E, 0.0f);  // [x | z]
            decode_conv1d_silu_step_kernel<<<ceil_div(rows * E, block), block, 0, s>>>(d->u, conv_st, d->xz, 2 * E, p.conv_w,
                                                                                        p.conv_b, rows, E, K);
            cudaCheckLaunch();
            decoder_gemm(d, d->xdbl, XD, d->u, E, p.x_proj_w, rows, E, XD, 0.0f);       // [dt_low | Bm | Cm]
            decoder_scan(d, l, rows, false);  // dt_proj (from the first R columns of xdbl) and the scan step
            decoder_gemm(d, d->x, D, d->y, E, p.out_proj_w, rows, E, D, 1.0f);          // x += out_proj(y)
            break;
        }
        case LAYER_M2: {  // mamba2_step with its two products here: the norm and the residual add fused into them
            const Mamba2Config& c2 = m->m2cfg;
            const Mamba2Scratch& s2 = d->m2_scratch;
            float* conv_st = d->m2_state + d->m2_offset[l];
            float* ssm_st = conv_st + (size_t)d->max_batch * c2.conv_dim * (c2.d_conv - 1);
            if (decoder_gemv_ok(d, rows, D) && c2.d_conv <= GEMV_MAX_K) {  // the prologue in the product's epilogue
                decoder_m2_in_proj(d, conv_st, p, rows);
                mamba2_step_tail(true, ssm_st, s2, p.m2, c2, rows);
            } else {
                decoder_product(d, s2.step_proj, c2.d_in_proj, d->x, D, p.m2.in_proj_w, p.norm_w, rows, D, c2.d_in_proj, 0.0f);
                mamba2_step_core(true, conv_st, ssm_st, s2, p.m2, c2, rows);
            }
            decoder_product(d, d->x, D, s2.step.yn, c2.d_inner, p.m2.out_proj_w, nullptr, rows, c2.d_inner, D, 1.0f);
            break;
        }
        case LAYER_ATTN: {
            float* k_cache = d->kv_cache + d->kv_offset[l];
            float* v_cache = k_cache + (size_t)d->max_batch * d->max_len * D;
            decoder_product(d, d->qkv, 3 * D, d->x, D, p.qkv_w, p.norm_w, rows, D, 3 * D, 0.0f);
            decode_kv_append_kernel<<<ceil_div(rows * D, block), block, 0, s>>>(d->q, k_cache, v_cache, d->qkv, rows, D,
                                                                                 d->max_len, d->positions);
            cudaCheckLaunch();
            attention_step_launch(d->att, d->att_part, d->q, k_cache, v_cache, rows, d->pos + 1, d->positions, d->max_len, D,
                                  c.attn_heads);
            decoder_product(d, d->x, D, d->att, D, p.attn_proj_w, nullptr, rows, D, D, 1.0f);  // x += proj(attention)
            break;
        }
        case LAYER_MLP: {
            const int H = c.mlp_mult * D;
            decoder_product(d, d->hid, H, d->x, D, p.fc_w, p.norm_w, rows, D, H, 0.0f);
            gelu_forward_cuda(d->hid, d->hid, (size_t)rows * H);
            decoder_product(d, d->x, D, d->hid, H, p.fc_proj_w, nullptr, rows, H, D, 1.0f);    // x += proj(gelu(fc))
            break;
        }
        default: FATAL("GPU decoder: unknown layer kind");
        }
    }
    if (d->kv_cache || m->wpe) {  // every reader of the positions has run: the next step's
        decode_positions_advance_kernel<<<ceil_div(rows, block), block, 0, s>>>(d->positions, rows);
        cudaCheckLaunch();
    }
    if (decoder_gemv_ok(d, rows, D)) {  // the fused head (the norm as its prologue, argmax keys for greedy sampling)
        decoder_head(d, rows, d->pdl != PDL_OFF);
        return;
    }
    decoder_rmsnorm(d, d->xf, d->x, m->norm_f_w, rows, D);
    decoder_gemm(d, d->logits, V, d->xf, D, m->wte, rows, D, V, 0.0f);
    d->head_keys_n = 0;
}

// the fused step's launches (layer l; pdl: may start before the previous kernel ends)
// in_proj: x (layer 0: wte[tokens], also written to x) -> rmsnorm -> xz = [conv + SiLU -> u | z]
static void decoder_in_proj(MambaGpuDecoder* d, int l, int rows, bool pdl) {
    const MambaModel* m = d->m;
    const MambaConfig& c = m->cfg;
    const LayerParams& p = m->layers[l];
    const int D = c.d_model, E = c.d_inner, K = c.d_conv;
    DecodeGemv a = {};
    a.out = d->xz; a.ldo = 2 * E;
    a.inp = l == 0 ? m->wte : d->x; a.ldi = D;
    a.tokens = l == 0 ? d->tokens : nullptr; a.emb_out = l == 0 ? d->x : nullptr;
    a.W = p.in_proj_w; a.rows = rows; a.IC = D; a.OC = 2 * E; a.beta = 0.0f; a.norm_w = p.norm_w;
    a.W16 = decoder_w16(d, a.W);
    a.conv_E = E; a.conv_K = K; a.conv_state = d->conv_state + (size_t)l * d->max_batch * E * (K - 1);
    a.conv_w = p.conv_w; a.conv_b = p.conv_b; a.u = conv_cols(d->u, E);
    a.pdl_early = d->pdl == PDL_EARLY;
    decode_gemv_cuda(a, d->stream, pdl);
}
// x_proj: u -> xdbl = [dt_low | Bm | Cm]
static void decoder_x_proj(MambaGpuDecoder* d, int l, int rows, bool pdl) {
    const MambaConfig& c = d->m->cfg;
    const int E = c.d_inner, XD = c.dt_rank + 2 * c.d_state;
    DecodeGemv a = {};
    a.out = d->xdbl; a.ldo = XD; a.inp = d->u; a.ldi = E;
    a.W = d->m->layers[l].x_proj_w; a.rows = rows; a.IC = E; a.OC = XD; a.beta = 0.0f;
    a.W16 = decoder_w16(d, a.W);
    a.pdl_early = d->pdl == PDL_EARLY;
    decode_gemv_cuda(a, d->stream, pdl);
}
// dt_proj + the scan step: one warp per (row, channel)
static void decoder_scan(MambaGpuDecoder* d, int l, int rows, bool pdl) {
    const MambaConfig& c = d->m->cfg;
    const LayerParams& p = d->m->layers[l];
    const int E = c.d_inner, N = c.d_state, R = c.dt_rank, XD = R + 2 * N;
    float* ssm_st = d->ssm_state + (size_t)l * d->max_batch * E * N;
    const int block = 256;
    const int lw = decode_scan_lanes(N, rows * E);
    decoder_launch(lw == 4 ? decode_scan_step_kernel<4> : lw == 16 ? decode_scan_step_kernel<16> : decode_scan_step_kernel<32>,
                   ceil_div(rows * E, block / lw), block, 0, d->stream, pdl, d->y, ssm_st, d->u, d->xdbl, XD, R, p.dt_proj_w,
                   p.dt_proj_b, p.A_log, p.D, d->xz + E, 2 * E, rows, E, N, pdl ? (int)d->pdl : 0);
}
// out_proj: x += y @ out_proj_w^T
static void decoder_out_proj(MambaGpuDecoder* d, int l, int rows, bool pdl) {
    const MambaConfig& c = d->m->cfg;
    DecodeGemv a = {};
    a.out = d->x; a.ldo = c.d_model; a.inp = d->y; a.ldi = c.d_inner;
    a.W = d->m->layers[l].out_proj_w; a.rows = rows; a.IC = c.d_inner; a.OC = c.d_model; a.beta = 1.0f;
    a.W16 = decoder_w16(d, a.W);
    a.pdl_early = d->pdl == PDL_EARLY;
    decode_gemv_cuda(a, d->stream, pdl);
}
// the head: logits = rmsnorm(x) * norm_f_w @ wte^T
static void decoder_head(MambaGpuDecoder* d, int rows, bool pdl) {
    const MambaModel* m = d->m;
    DecodeGemv a = {};
    a.out = d->logits; a.ldo = m->cfg.vocab_size; a.inp = d->x; a.ldi = m->cfg.d_model;
    a.W = m->wte; a.rows = rows; a.IC = m->cfg.d_model; a.OC = m->cfg.vocab_size; a.beta = 0.0f; a.norm_w = m->norm_f_w;
    a.W16 = decoder_w16(d, a.W);
    a.pdl_early = d->pdl == PDL_EARLY;
    a.argmax_keys = d->head_keys;  // (rows, blocks): greedy sampling reads these (decoder_sample)
    d->head_keys_n = decode_gemv_blocks(a);
    decode_gemv_cuda(a, d->stream, pdl);
}

// the fused step: 4 launches a layer and the head. The first launch waits for everything
// before it (it follows the token copy or the sampler); each later one may start early.
static void decoder_step_fused(MambaGpuDecoder* d, int rows) {
    const bool pdl = d->pdl != PDL_OFF;
    for (int l = 0; l < d->m->cfg.n_layer; l++) {
        decoder_in_proj(d, l, rows, pdl && l > 0);
        decoder_x_proj(d, l, rows, pdl);
        decoder_scan(d, l, rows, pdl);
        decoder_out_proj(d, l, rows, pdl);
    }
    decoder_head(d, rows, pdl);
}

// whether a step of `rows` sequences takes the fused path (the shared memory of its widest
// GEMV: the rows of E inputs)
static bool decoder_fused_ok(const MambaConfig& c, int rows) {
    return rows <= GEMV_MAX_ROWS && decode_gemv_smem(rows, std::max(c.d_model, c.d_inner)) <= GEMV_MAX_SMEM &&
           c.d_conv <= GEMV_MAX_K;
}
static bool decoder_fused(const MambaGpuDecoder* d, int rows) {
    const MambaConfig& c = d->m->cfg;
    if (d->path == DECODE_BLAS || d->layered) return false;
    if (d->path == DECODE_FUSED) {
        if (!decoder_fused_ok(c, rows))
            FATAL("GPU decoder: the fused step takes up to %d rows of width <= %d and d_conv <= %d, not %d rows of %d, d_conv %d",
                  GEMV_MAX_ROWS, (int)(GEMV_MAX_SMEM / (16 * sizeof(float))), GEMV_MAX_K, rows, std::max(c.d_model, c.d_inner), c.d_conv);
        return true;
    }
    return rows <= DECODE_FUSED_MAX_ROWS && decoder_fused_ok(c, rows);
}

// one step for `rows` sequences: d->tokens -> d->logits; advances the states. Every launch
// goes to d->stream (so this can be captured).
static void mamba_decoder_step_launch(MambaGpuDecoder* d, int rows) {
    StreamScope scope(d->stream);  // the framework's functions (layered steps, position_add) launch there too
    if (decoder_fused(d, rows)) decoder_step_fused(d, rows);
    else decoder_step_layers(d, rows);
}

// samples the current batch's tokens from d->logits into out (and the next input tokens);
// after a fused step, greedy sampling reads the head's argmax keys instead of the logits
static void decoder_sample(MambaGpuDecoder* d, int* out, float temperature, int top_k, const float* uniforms) {
    sample_rows_cuda(out, d->tokens, d->logits, d->rows, d->m->cfg.vocab_size, temperature, top_k, uniforms, d->stream,
                     d->head_keys_n > 0 ? d->head_keys : nullptr, d->head_keys_n);
}

// captures one step for `rows` rows into d->graph. A plain step runs first (outside the
// capture) so cuBLAS and lazily loaded kernels are set up; mamba_decoder_start zeroes the
// states it changed.
static void mamba_decoder_capture(MambaGpuDecoder* d, int rows) {
    if (d->graph) { cudaCheck(cudaGraphExecDestroy(d->graph)); d->graph = nullptr; d->graph_rows = 0; }
    cudaCheck(cudaMemsetAsync(d->tokens, 0, rows * sizeof(int), d->stream));
    cudaCheck(cudaMemsetAsync(d->positions, 0, rows * sizeof(int), d->stream));  // in the KV caches' range
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
    if (d->m2_state) cudaCheck(cudaMemsetAsync(d->m2_state, 0, d->m2_state_floats * sizeof(float), d->stream));
    cudaCheck(cudaMemsetAsync(d->positions, 0, d->max_batch * sizeof(int), d->stream));
    d->pos = 0;  // the KV caches' old positions are never read again
}

// one step of the current batch from d->tokens (asynchronous)
static void mamba_decoder_step(MambaGpuDecoder* d) {
    if (d->rows < 1) FATAL("GPU decoder: call mamba_decoder_start first");
    const MambaConfig& c = d->m->cfg;
    if (d->m->wpe && d->pos >= c.max_seq) FATAL("generation past the model's %d learned positions (max_seq)", c.max_seq);
    if (d->kv_cache && d->pos >= d->max_len)
        FATAL("GPU decoder: position %d is past the %d positions of the KV caches (mamba_decoder_init's max_len)", d->pos, d->max_len);
    if (d->use_graph) cudaCheck(cudaGraphLaunch(d->graph, d->stream));
    else mamba_decoder_step_launch(d, d->rows);
    d->pos++;
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
        decoder_sample(d, dout + (size_t)i * rows, temperature, top_k, duni + (size_t)i * rows);
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
                                                        float temperature, int top_k, uint64_t seed, bool use_graph = true,
                                                        DecodePath path = DECODE_AUTO, bool bf16_weights = false) {
    mamba_decoder_check_model(m);
    int P = prompts.empty() ? 0 : (int)prompts[0].size();
    n_new = mamba_generation_fit(m->cfg, P, n_new);
    MambaGpuDecoder d;
    mamba_decoder_init(&d, m, (int)std::max<size_t>(1, prompts.size()), use_graph, path, DECODE_PDL_DEFAULT, bf16_weights,
                       std::max(1, P + n_new - 1));
    std::vector<std::vector<int>> out = mamba_decoder_generate(&d, prompts, n_new, temperature, top_k, seed);
    mamba_decoder_free(&d);
    return out;
}

// ---------------------------------------------------------------------------
// benchmark: median µs per decode step (one new token for each of `batch` sequences:
// step + sampling), timed with CUDA events over `steps` steps, `trials` times after a warm-up
static double mamba_bench_generate(const MambaModel* m, int batch, bool use_graph, float temperature, int top_k, int steps = 64,
                                   int trials = 7, DecodePath path = DECODE_AUTO, DecodePdl pdl = DECODE_PDL_DEFAULT,
                                   bool bf16_weights = false) {
    MambaGpuDecoder d;
    int positions = (trials + 1) * steps;  // warm-up + trials, one sequence: the KV caches' length
    if (m->cfg.pos_embed && positions > m->cfg.max_seq)
        FATAL("generation benchmark: %d positions, the model has %d (max_seq): use fewer steps", positions, m->cfg.max_seq);
    mamba_decoder_init(&d, m, batch, use_graph, path, pdl, bf16_weights, positions);
    mamba_decoder_start(&d, batch);
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
            decoder_sample(&d, dout + (size_t)s * batch, temperature, top_k, duni + (size_t)s * batch);
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

// bytes of the recurrent state one step reads and writes for `batch` sequences: the conv and SSM
// states of the M1 and M2 layers (the attention layers' KV caches, whose reads grow with the
// position, are left out)
static double mamba_decoder_state_bytes(const MambaModel* m, int batch) {
    const MambaConfig& c = m->cfg;
    const Mamba2Config& c2 = m->m2cfg;
    double floats = 0;
    for (int l = 0; l < c.n_layer; l++) {
        LayerKind kind = m->layer_index[l].kind;
        if (kind == LAYER_M1) floats += (double)c.d_inner * (c.d_conv - 1 + c.d_state);
        if (kind == LAYER_M2) floats += (double)c2.conv_dim * (c2.d_conv - 1) + (double)c2.nheads * c2.headdim * c2.d_state;
    }
    return 2.0 * sizeof(float) * batch * floats;
}

// bytes of the weights one step reads (every tensor but LoRA adapters: a merged model reads W
// only); bf16_weights: the tensors mamba_decoder_init copies to bf16 count 2 bytes, the rest 4
static size_t mamba_decoder_weight_bytes(const MambaModel* m, bool bf16_weights = false) {
    size_t n = 0;
    for (const ParamTensor& t : m->params.tensors)
        if (!lora_is_adapter(t.name)) n += t.numel;
    size_t half = 0;  // the weights read as bf16 copies
    if (bf16_weights)
        for (const auto& t : decoder_w16_sources(m)) half += t.second;
    return n * sizeof(float) - half * (sizeof(float) - sizeof(bf16));
}

#endif  // __CUDACC__
