// selective_scan_fast.h: the tuned CUDA selective scan for d_state N == 16 (Mamba's default),
// forward and backward, with their launchers. Same inputs, outputs and math as the generic kernels
// in selective_scan.h, which #includes this file and calls these launchers when N == 16 and the
// pointers allow; read selective_scan.h first (shapes and equations are there).
// Both are templates over the activations' type T (u, delta, z, Bm, Cm, y and dout, du, ddelta, dz):
// fp32, or bf16 for train_mamba's bf16 activations; hs, dBm, dCm and every sum inside stay fp32.
//
// How they reach speed (the versions that led here, with timings and floor arithmetic, are in
// dev/notes_scan.md and dev/selective_scan_{forward,backward}.cu; this file holds forward v7 and
// backward v8):
//  - 4 threads per channel, each holding 4 of the 16 states in registers and running
//    sequentially over time, so a state-step costs one exp and a few FMAs, the minimum; no
//    scan-tree overhead. A block owns consecutive channels of one batch element.
//  - exp(dt*A) = ex2(dt * A2) with A2 = A*log2(e) precomputed: a single MUFU.EX2 instruction.
//    softplus also uses the SFU (__expf, __logf) instead of log1pf's long software path.
//  - u, dt = softplus(delta + bias), z and the Bm/Cm rows are staged in shared memory once per
//    block, so per-(t, e) work is done once and not once per state.
//  - Forward (32 channels, 128 threads): 32-step tiles, copied global -> shared with cp.async two
//    tiles ahead into a 2-slot ring, then staged: the loads' latency stays hidden at the tile
//    edges and no prefetch registers are live across the scan. y = sum_n Cm*h is reduced over the
//    channel's 4 threads by a reduce-scatter (3 shuffles per 4 steps); each thread then finishes
//    one step (D skip, silu).
//  - Backward (16 channels, 64 threads, 36 KB smem: 6 blocks = 12 warps per SM, the register
//    limit at 168, and the B=8 E=1536 grid is one wave): 64-step chunks, last to first. u, delta
//    of the next chunk are copied by cp.async while this one computes; z, dout, Bm, Cm go through
//    registers at the chunk top; one conversion pass makes fp32 tiles (dt, u, dy, dout silu'(z)).
//    A checkpoint pass recomputes the chunk from hs and keeps the state entering each 8-step
//    sub-chunk (in local memory); each sub-chunk is then recomputed with h and dA in registers
//    and walked backwards (2 ex2 per state-step in all). The sub-chunk loops are rolled (8 steps
//    unrolled inside), which keeps the kernel at 54-63 KB of code: fully unrolled, the chunk body
//    is ~190 KB, past the instruction cache. Reductions: dBm/dCm (sums over e) reduce-scatter
//    over the warp's 8 channels, per-warp slabs in shared memory, then one 16-byte global atomic
//    per (block, t, 4 states) per sub-chunk straight into dBm/dCm; y, du, ddt reduce-scatter over
//    the channel's 4 threads per 4 steps, and the outputs du, ddelta, dz are finished in the
//    tiles and added to global memory with 16-byte read-modify-writes; dA_log, dD, ddelta_bias
//    are register sums, one atomic per thread (per quad for dD, ddelta_bias) at the end, skipped
//    for a nullptr (frozen) gradient.
#pragma once
#include <type_traits>
#include "common.h"
#ifndef SCAN_CHUNK
#error "include selective_scan.h (it defines SCAN_CHUNK and includes this file)"
#endif

// ---------------------------------------------------------------------------
// shapes and helpers (both directions)

#define SCAN_FAST_N 16          // the only d_state the fast kernels handle
#define SCAN_FAST_S 4           // states per thread (4 threads per channel)
#define SCAN_FAST_CH 32         // forward: channels per block
#define SCAN_FAST_THREADS 128   // forward: threads per block
#define SCAN_FWD_TILE 32        // forward: timesteps per staged tile
#define SCAN_FWD_W 40           // forward [t][channel] row stride: (t = 4q + g, c) reads hit distinct banks
#define SCAN_BWD_SUB 8          // backward sub-chunk length (h and dA of 8 steps kept in registers)
#define SCAN_LOG2E 1.4426950408889634f
static_assert(SCAN_CHUNK % SCAN_FWD_TILE == 0, "a chunk start must begin a tile (hs is written there)");
static_assert(SCAN_CHUNK % SCAN_BWD_SUB == 0 && SCAN_BWD_SUB % 4 == 0, "sub-chunks of whole 4-step groups");
static_assert(SCAN_FAST_N == SCAN_FAST_S * 4, "4 threads per channel");

// 2^x on the special-function unit: one MUFU.EX2 (relative error ~2^-22)
__device__ __forceinline__ float scan_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
// softplus with SFU ops, linear above 20 like softplus_f. __logf(1 + e) for e >= 1e-2; below,
// 1 + e would round away e's digits, so the series e - e^2/2 + e^3/3 (error < e^3/4 relative)
__device__ __forceinline__ float scan_softplus_fast(float x) {
    float e = __expf(x);
    float sp = e < 1e-2f ? e * (1.0f - e * (0.5f - e * (1.0f / 3.0f))) : __logf(1.0f + e);
    return x > 20.0f ? x : sp;
}
// softplus'(x) = sigmoid(x) = 1 - exp(-softplus(x)): from dt alone (1 above 20 as well);
// the series dt - dt^2/2 + dt^3/6 where 1 - exp(-dt) would cancel
__device__ __forceinline__ float scan_dsoftplus_from_dt(float dt) {
    return dt < 1e-2f ? dt * (1.0f - dt * 0.5f * (1.0f - dt * (1.0f / 3.0f))) : 1.0f - __expf(-dt);
}
__device__ __forceinline__ float scan_silu_fast(float z) { return __fdividef(z, 1.0f + __expf(-z)); }

// Copy the PACK = Packed128<T>::size consecutive channels [e0, e0 + PACK) of one activation
// row into shared memory asynchronously, zero-filling channels past E and rows past L (row_ok
// false). VEC: one 16-byte copy (E % PACK == 0, aligned); otherwise one 4-byte copy per channel,
// or plain loads if T is narrower than 4 bytes.
template <bool VEC, typename T>
__device__ __forceinline__ void scan_stage_vec(T* dst, const T* src, int e0, int E, bool row_ok) {
    constexpr int PACK = Packed128<T>::size;
    if constexpr (VEC) {
        cp_async<16>(dst, src + (e0 < E ? e0 : 0), row_ok && e0 < E);
    } else if constexpr (sizeof(T) == 4) {
        #pragma unroll
        for (int q = 0; q < PACK; q++)
            cp_async<4>(dst + q, src + (e0 + q < E ? e0 + q : 0), row_ok && e0 + q < E);
    } else {
        #pragma unroll
        for (int q = 0; q < PACK; q++) dst[q] = (row_ok && e0 + q < E) ? src[e0 + q] : (T)0.0f;
    }
}


// ---------------------------------------------------------------------------
// fast forward (N == 16)

// the forward's ring of raw input tiles: 2 slots, each [u, delta, z: TILE x CH][Bm, Cm: TILE x N]
// in T, as read from global memory (dynamic shared memory: 32 KB for fp32, 16 KB for bf16)
constexpr int SCAN_FWD_SLOT = 3 * SCAN_FWD_TILE * SCAN_FAST_CH + 2 * SCAN_FWD_TILE * SCAN_FAST_N;
template <typename T>
static constexpr size_t scan_fwd_fast_smem() { return 2 * (size_t)SCAN_FWD_SLOT * sizeof(T); }

// forward: grid (ceil(E / 32), B), block 128, 27.8 KB static + scan_fwd_fast_smem<T>() dynamic
// shared memory. Thread tid owns channel eb + tid/4 and its states [4g, 4g+4), g = tid % 4.
// Per 32-step tile t: issue the copies of tile t+2 into the slot tile t was staged from, scan
// tile t from the staged arrays, wait for tile t+1's copies, barrier, store tile t's out and
// stage tile t+1 (convert, dt = softplus) from its slot, barrier.
// VEC: u, delta, z, out rows as 16-byte vectors (E % Packed128<T>::size == 0, aligned), else
// per element. T: the activations' type (out is the fp32 value rounded to T).
template <bool VEC, typename T>
__global__ void __launch_bounds__(SCAN_FAST_THREADS) selective_scan_forward_fast_kernel(
    T* __restrict__ out, float* __restrict__ hs, const T* __restrict__ u,
    const T* __restrict__ delta, const float* __restrict__ A_log, const T* __restrict__ Bm,
    const T* __restrict__ Cm, const float* __restrict__ D, const T* __restrict__ z,
    const float* __restrict__ delta_bias, int B, int L, int E) {
    constexpr int N = SCAN_FAST_N, S = SCAN_FAST_S, CH = SCAN_FAST_CH, THREADS = SCAN_FAST_THREADS;
    constexpr int TT = SCAN_FWD_TILE, W = SCAN_FWD_W;
    constexpr int PACK = Packed128<T>::size;       // T per 16-byte vector
    constexpr int ROWV = CH / PACK;                     // vectors per tile row of u, delta, z, out
    constexpr int ACT_PER_THR = TT * ROWV / THREADS;    // such vectors per thread per tile
    constexpr int BC_VECS = TT * N / PACK;              // vectors per Bm (or Cm) tile
    constexpr int BC_PER_THR = (2 * BC_VECS + THREADS - 1) / THREADS;
    constexpr int BM_OFF = 3 * TT * CH, CM_OFF = BM_OFF + TT * N;  // offsets inside a slot
    static_assert(TT * ROWV % THREADS == 0, "the activation tile must split evenly over the threads");
    static_assert(N % PACK == 0, "Bm/Cm rows must be whole 16-byte vectors");

    __shared__ __align__(16) float u_s[TT][W];
    __shared__ __align__(16) float z_s[TT][W];
    __shared__ __align__(16) float o_s[TT][W];      // the finished out tile, stored as vectors
    __shared__ __align__(16) float2 dd_s[TT][CH];   // (dt, dt*u)
    __shared__ __align__(16) float B_s[TT][N];
    __shared__ __align__(16) float C_s[TT][N];
    __shared__ float bias_s[CH];
    extern __shared__ __align__(16) unsigned char scan_fwd_ring[];  // scan_fwd_fast_smem() bytes

    int tid = threadIdx.x, lane = tid % 32;
    int cl = tid / 4, g = tid % 4;  // channel within the block, state group
    int b = blockIdx.y, eb = blockIdx.x * CH, e = eb + cl;
    bool ch_ok = e < E;
    int ec = ch_ok ? e : E - 1;     // channels past E compute on a valid one and store nothing
    int nc = scan_n_chunks(L);

    // the ring slot of the tile starting at t0
    auto slot_of = [&](int t0) {
        return reinterpret_cast<T*>(scan_fwd_ring) + ((t0 / TT) & 1) * SCAN_FWD_SLOT;
    };
    // start the copies of the tile at t0 (zeros past L and past E) and commit them as one group.
    // Past the end it commits an empty group, so "all but the newest group" keeps meaning the
    // tile before. Only the fp32 scalar path can copy single elements (4-byte cp.async); a 2-byte
    // T there is loaded and stored synchronously.
    auto issue = [&](int t0) {
        T* slot = slot_of(t0);
        if (t0 < L) {
            #pragma unroll
            for (int k = 0; k < ACT_PER_THR; k++) {
                int i = tid + k * THREADS, r = i / ROWV, cv = i % ROWV, t = t0 + r, e0 = eb + cv * PACK;
                bool row_ok = t < L;
                size_t off = ((size_t)b * L + (row_ok ? t : 0)) * E;
                #pragma unroll
                for (int w = 0; w < 3; w++) {
                    const T* src = (w == 0 ? u : w == 1 ? delta : z) + off;
                    T* dst = slot + (w * TT + r) * CH + cv * PACK;
                    scan_stage_vec<VEC>(dst, src, e0, E, row_ok);
                }
            }
            #pragma unroll
            for (int k = 0; k < BC_PER_THR; k++) {  // vectors [0, BC_VECS) are Bm's, the rest Cm's
                int j = tid + k * THREADS;
                if (j < 2 * BC_VECS) {
                    int i = j % BC_VECS, r = i / (N / PACK), nv = i % (N / PACK), t = t0 + r;
                    const T* src = (j < BC_VECS ? Bm : Cm) + ((size_t)b * L + (t < L ? t : 0)) * N;
                    cp_async<16>(slot + (j < BC_VECS ? BM_OFF : CM_OFF) + r * N + nv * PACK,
                                      src + nv * PACK, t < L);
                }
            }
        }
        cp_async_commit();
    };
    // the raw tile at t0 (landed, published by a barrier) -> the staged arrays; dt and dt*u once
    // per (t, e). dt = 0 past L or past E makes those steps identities.
    auto stage = [&](int t0) {
        const T* slot = slot_of(t0);
        #pragma unroll
        for (int k = 0; k < ACT_PER_THR; k++) {
            int i = tid + k * THREADS, r = i / ROWV, cv = i % ROWV, t = t0 + r;
            const T* src = slot + r * CH + cv * PACK;
            // typed copies rather than load128 (an int4 load): the values stay in float registers
            Packed128<T> pu = *reinterpret_cast<const Packed128<T>*>(src);
            Packed128<T> pd = *reinterpret_cast<const Packed128<T>*>(src + TT * CH);
            Packed128<T> pz = *reinterpret_cast<const Packed128<T>*>(src + 2 * TT * CH);
            #pragma unroll
            for (int j = 0; j < PACK; j += 4) {
                float4 uf, zf;
                float* uv = &uf.x;
                float* zv = &zf.x;
                float dtv[4];
                #pragma unroll
                for (int q = 0; q < 4; q++) {
                    int c = cv * PACK + j + q;
                    uv[q] = (float)pu.v[j + q];
                    zv[q] = (float)pz.v[j + q];
                    float sp = scan_softplus_fast((float)pd.v[j + q] + bias_s[c]);
                    dtv[q] = (t < L && eb + c < E) ? sp : 0.0f;
                }
                int c0 = cv * PACK + j;
                *reinterpret_cast<float4*>(&u_s[r][c0]) = uf;
                *reinterpret_cast<float4*>(&z_s[r][c0]) = zf;
                *reinterpret_cast<float4*>(&dd_s[r][c0]) = make_float4(dtv[0], dtv[0] * uv[0], dtv[1], dtv[1] * uv[1]);
                *reinterpret_cast<float4*>(&dd_s[r][c0 + 2]) = make_float4(dtv[2], dtv[2] * uv[2], dtv[3], dtv[3] * uv[3]);
            }
        }
        #pragma unroll
        for (int k = 0; k < BC_PER_THR; k++) {
            int j = tid + k * THREADS;
            if (j < 2 * BC_VECS) {
                int i = j % BC_VECS, r = i / (N / PACK), nv = i % (N / PACK);
                Packed128<T> p =
                    *reinterpret_cast<const Packed128<T>*>(slot + (j < BC_VECS ? BM_OFF : CM_OFF) + r * N + nv * PACK);
                float* dst = j < BC_VECS ? &B_s[r][nv * PACK] : &C_s[r][nv * PACK];
                #pragma unroll
                for (int q = 0; q < PACK; q++) dst[q] = (float)p.v[q];
            }
        }
    };

    issue(0);       // the first two tiles start copying before anything else
    issue(TT);
    if (tid < CH) bias_s[tid] = delta_bias[min(eb + tid, E - 1)];
    float A2[S], h[S];
    #pragma unroll
    for (int s = 0; s < S; s++) { A2[s] = -expf(A_log[ec * N + g * S + s]) * SCAN_LOG2E; h[s] = 0.0f; }
    float Dv = D[ec];
    cp_async_wait<1>();  // this thread's copies of tile 0 landed (tile 1 may be in flight)
    __syncthreads();           // everyone's, and bias_s
    stage(0);
    __syncthreads();
    for (int t0 = 0; t0 < L; t0 += TT) {
        bool more = t0 + TT < L;
        issue(t0 + 2 * TT);  // into tile t0's slot, which was staged before the last barrier
        if (t0 % SCAN_CHUNK == 0 && ch_ok)  // the state entering chunk t0 / SCAN_CHUNK (0 for the first)
            *reinterpret_cast<float4*>(hs + (((size_t)b * nc + t0 / SCAN_CHUNK) * E + e) * N + g * S) =
                make_float4(h[0], h[1], h[2], h[3]);
        #pragma unroll 2
        for (int q = 0; q < TT / 4; q++) {
            float yq[4];  // this thread's part (4 states) of y at steps 4q .. 4q+3
            #pragma unroll
            for (int j = 0; j < 4; j++) {
                int r = q * 4 + j;
                float2 d = dd_s[r][cl];
                float4 bv = *reinterpret_cast<const float4*>(&B_s[r][g * S]);
                float4 cv = *reinterpret_cast<const float4*>(&C_s[r][g * S]);
                h[0] = scan_ex2(d.x * A2[0]) * h[0] + d.y * bv.x;
                h[1] = scan_ex2(d.x * A2[1]) * h[1] + d.y * bv.y;
                h[2] = scan_ex2(d.x * A2[2]) * h[2] + d.y * bv.z;
                h[3] = scan_ex2(d.x * A2[3]) * h[3] + d.y * bv.w;
                yq[j] = cv.x * h[0] + cv.y * h[1] + cv.z * h[2] + cv.w * h[3];
            }
            reduce_scatter_level<2, 2>(yq, lane);
            reduce_scatter_level<1, 1>(yq, lane);
            int r = q * 4 + g;  // yq[0] is now the full y of step r
            o_s[r][cl] = (yq[0] + Dv * u_s[r][cl]) * scan_silu_fast(z_s[r][cl]);
        }
        cp_async_wait<1>();  // this thread's copies of tile t0 + TT landed
        __syncthreads();  // o_s complete; everyone's copies of t0 + TT landed; done reading this tile
        #pragma unroll
        for (int k = 0; k < ACT_PER_THR; k++) {
            int i = tid + k * THREADS, r = i / ROWV, cv = i % ROWV, t = t0 + r, ee = eb + cv * PACK;
            if (t < L) {
                T* dst = out + ((size_t)b * L + t) * E;
                Packed128<T> p;
                #pragma unroll
                for (int q = 0; q < PACK; q++) p.v[q] = (T)o_s[r][cv * PACK + q];
                if (VEC) {
                    if (ee < E) store128cs(dst + ee, p);
                } else {
                    #pragma unroll
                    for (int q = 0; q < PACK; q++)
                        if (ee + q < E) dst[ee + q] = p.v[q];
                }
            }
        }
        if (more) stage(t0 + TT);
        __syncthreads();
    }
}

// ---------------------------------------------------------------------------
// fast backward (N == 16)

#define SCAN_LN2 0.6931471805599453f
#define SCAN_BWD_WARPS_PER_SM 12  // the registers (168 a thread) allow 12 warps per SM

// The backward's block per activation type (dev/notes_scan.md, backward v8 and v9):
//   fp32: v8, 16 channels (64 threads); u, delta staged by cp.async one chunk ahead, Bm, Cm, z, dout
//         loaded into registers at the chunk top: 36 KB of shared memory, 6 blocks (12 warps) per SM,
//         the B8 E1536 grid one wave (v9's layout needs 88 KB in fp32: two waves)
//   bf16: v9, 32 channels (128 threads); every input staged by cp.async one chunk ahead: 68 KB, 3
//         blocks (12 warps) per SM; 0.433 against v8's 0.484 ms in bf16 (dev, H100, B8 L1024 E1536)
template <typename T> struct ScanBwdShape {
    static constexpr int CH = 16;           // channels per block (4 threads each)
    static constexpr bool BC_ASYNC = false;  // Bm, Cm staged by cp.async (else loaded into registers)
    static constexpr int NRAW = 2;           // activations staged by cp.async: u, delta (4: z, dout too)
};
template <> struct ScanBwdShape<bf16> {
    static constexpr int CH = 32;
    static constexpr bool BC_ASYNC = true;
    static constexpr int NRAW = 4;
};

// dst[0..4) += v: one 16-byte fp32 atomic (sm_90). dBm / dCm stay fp32 for bf16 activations too:
// every block adds its partial sum into them, and bf16 would round each addition.
__device__ __forceinline__ void scan_atomic_add4(float* dst, float4 v) { atomic_add_float4(dst, v); }

// 4 consecutive T as floats: from shared memory (16-byte aligned for fp32) ...
template <typename T>
__device__ __forceinline__ float4 scan_lds4f(const T* p) {
    if constexpr (sizeof(T) == 4) return *reinterpret_cast<const float4*>(p);
    else return make_float4((float)p[0], (float)p[1], (float)p[2], (float)p[3]);
}
// ... and from a global row at channels e0 .. e0+3, zeros past E or for an invalid row. VEC:
// E % Packed128<T>::size == 0 and the row is 16-byte aligned, so e0 % 4 == 0 allows one
// 16-byte fp32 load.
template <bool VEC, typename T>
__device__ __forceinline__ float4 scan_ldg4f(const T* row, int e0, int E, bool valid) {
    float4 r = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if constexpr (VEC && sizeof(T) == 4) {
        if (valid && e0 < E) r = __ldg(reinterpret_cast<const float4*>(row + e0));
    } else if constexpr (VEC && sizeof(T) == 2) {  // 4 bf16: one 8-byte load
        if (valid && e0 < E) {
            uint2 q = __ldg(reinterpret_cast<const uint2*>(row + e0));
            float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&q.x));
            float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&q.y));
            r = make_float4(lo.x, lo.y, hi.x, hi.y);
        }
    } else {
        float* rv = &r.x;
        #pragma unroll
        for (int q = 0; q < 4; q++)
            if (valid && e0 + q < E) rv[q] = (float)row[e0 + q];
    }
    return r;
}

// Cell (t, c) of the backward's [t][channel] fp32 tiles (CH channels a row). The 4-channel groups
// are XOR-swizzled by row so that the reverse's quad outputs (thread g writes step r + g, r % 4 == 0,
// of its channel; a warp holds 8 aligned channels) hit 32 different banks. CH = 16: two rows share
// the 32 banks, so rows t and t + 2 would collide without flipping bit 3 of c every other row pair;
// CH = 32: one row per 32 banks, flip by (t & 3) << 3. XOR by multiples of 8 keeps 4-aligned groups
// contiguous (float4 access).
template <int CH>
__device__ __forceinline__ int scan_bwd_cell(int t, int c) {
    constexpr int RP = CH >= 32 ? 1 : 32 / CH, MASK = CH / 8 - 1;
    return t * CH + (c ^ (((t / RP) & MASK) << 3));
}

// dynamic shared memory of the fast backward: 36 KB for fp32, 68 KB for bf16 (ScanBwdShape)
template <typename T>
static constexpr size_t scan_bwd_fast_smem() {
    using S = ScanBwdShape<T>;
    return ((size_t)S::NRAW * SCAN_CHUNK * S::CH + (S::BC_ASYNC ? 2 * SCAN_CHUNK * SCAN_FAST_N : 0)) * sizeof(T)  // raw inputs
           + ((size_t)4 * SCAN_CHUNK * S::CH                          // dt, u, dy, q tiles
              + (size_t)2 * SCAN_CHUNK * SCAN_FAST_N                  // Bm, Cm
              + (size_t)2 * (S::CH * 4 / 32) * SCAN_BWD_SUB * 32)     // dB/dC slabs, 2 buffers
                 * sizeof(float);
}

// backward: grid (ceil(E / CH), B), block 4 CH, scan_bwd_fast_smem<T>() dynamic shared memory
// (CH, and what is staged how: ScanBwdShape<T>).
// Thread tid owns channel eb + tid/4 and its states [4g, 4g+4), g = tid % 4, in the scan phases;
// in the conversion it handles 4-channel groups (tid % (CH/4)) of rows tid/(CH/4) + 16k.
// Per chunk c, last to first:
//  a. load Bm, Cm (into registers) and this thread's z, dout cells unless they are staged; wait
//     for the cp.async copies of chunk c (issued during chunk c+1); barrier
//  b. conversion into fp32 tiles: dt = softplus(delta + bias) (0 past L / E: identity steps),
//     u, dy = dout silu(z), q = dout silu'(z); Bm, Cm; barrier; start copying chunk c-1's inputs
//  c. checkpoint pass from hs: the state entering each 8-step sub-chunk -> hc (local memory)
//  d. sub-chunks last to first: recompute the 8 steps' h and dA into registers, then walk them
//     backwards. Per step: dB/dC terms reduce-scattered over the warp's 8 channels and stored in a
//     per-warp slab; per 4 steps the quad reduce-scatters du, ddt and y, and thread g finishes
//     step r + g in place in the tiles (du -> u, ddelta -> dt, dz = (y + D u) q -> q). One barrier
//     per sub-chunk, then 64 threads add the warps' slabs and issue a float4 atomic each into dBm/dCm.
//  e. du, ddelta, dz += the tiles (16-byte read-modify-writes, every load issued before any store)
// The opaque re-reads of tid keep the compiler from hoisting the staging / conversion / phase-e
// index math out of the chunk loop, which kept ~40 addresses live through the reverse (spills).
template <bool VEC, typename T>
__global__ void __launch_bounds__(4 * ScanBwdShape<T>::CH, SCAN_BWD_WARPS_PER_SM * 8 / ScanBwdShape<T>::CH)
    selective_scan_backward_fast_kernel(
    T* __restrict__ du, T* __restrict__ ddelta, float* __restrict__ dA_log,
    float* __restrict__ dBm, float* __restrict__ dCm, float* __restrict__ dD, T* __restrict__ dz,
    float* __restrict__ ddelta_bias, const T* __restrict__ dout, const T* __restrict__ u,
    const T* __restrict__ delta, const float* __restrict__ A_log, const T* __restrict__ Bm,
    const T* __restrict__ Cm, const float* __restrict__ D, const T* __restrict__ z,
    const float* __restrict__ delta_bias, const float* __restrict__ hs, int B, int L, int E, bool grad_add) {
    constexpr int CH = ScanBwdShape<T>::CH, NRAW = ScanBwdShape<T>::NRAW;
    constexpr bool BC_ASYNC = ScanBwdShape<T>::BC_ASYNC;
    constexpr int N = SCAN_FAST_N, S = SCAN_FAST_S, THREADS = 4 * CH;
    constexpr int WARPS = THREADS / 32, CK = SCAN_CHUNK, SC = SCAN_BWD_SUB, NSC = CK / SC;
    constexpr int PACK = Packed128<T>::size;        // T per 16-byte vector
    constexpr int ROWV = CH / PACK;                      // 16-byte vectors per activation tile row
    constexpr int BCV = N / PACK;                        // 16-byte vectors per Bm / Cm row
    constexpr int CV = CH / 4;                           // 4-channel groups per tile row
    constexpr int IN_PER_THR = NRAW * CK * ROWV / THREADS;  // staged activation vectors per thread per chunk
    constexpr int BC_PER_THR = 2 * CK * BCV / THREADS;      // Bm, Cm vectors per thread per chunk
    constexpr int KC = CK * CV / THREADS;                // conversion cells (row, 4 channels) per thread
    constexpr int EV = CK * ROWV / THREADS;              // phase-e vectors per thread per gradient
    static_assert((NRAW * CK * ROWV) % THREADS == 0 && (2 * CK * BCV) % THREADS == 0, "even splits");
    static_assert(NRAW == 2 || NRAW == 4, "u, delta always staged; z, dout staged or loaded");
    static_assert(SC * 8 <= THREADS, "one thread per (step, float4) of a sub-chunk's dB/dC");
    static_assert((CK * CV) % THREADS == 0 && (CK * ROWV) % THREADS == 0, "even splits");
    static_assert(CH % 8 == 0 && PACK % 4 == 0 && N % PACK == 0, "whole warps, whole float4s");

    extern __shared__ __align__(16) unsigned char scan_bwd_smem[];
    T* raw = reinterpret_cast<T*>(scan_bwd_smem);              // [NRAW][CK][CH]: u, delta(, z, dout) as read
    T* raw_bc = raw + NRAW * CK * CH;                          // [2][CK][N]: Bm, Cm as read (BC_ASYNC)
    float* dt_s = reinterpret_cast<float*>(raw_bc + (BC_ASYNC ? 2 * CK * N : 0));  // tiles (scan_bwd_cell): dt, then ddelta
    float* u_s = dt_s + CK * CH;                               // u, then du
    float* dy_s = u_s + CK * CH;                               // dy = dout silu(z)
    float* q_s = dy_s + CK * CH;                               // dout silu'(z), then dz
    float* B_s = q_s + CK * CH;                                // [CK][N]
    float* C_s = B_s + CK * N;
    float* slab = C_s + CK * N;                                // [2][WARPS][SC][32]: dB[16], dC[16]

    int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    int cl = tid / 4, g = tid % 4;  // cl = warp * 8 + lane / 4
    int b = blockIdx.y, eb = blockIdx.x * CH, e = eb + cl;
    bool ch_ok = e < E;
    int ec = ch_ok ? e : E - 1;     // channels past E compute on a valid one and store nothing
    int nc = scan_n_chunks(L);
    float Dv = D[ec], dD_acc = 0.0f, dbias_acc = 0.0f;  // dD, ddelta_bias: parts of channel cl
    // only A2 = A log2(e) is kept; the sums that need A are scaled by ln 2 once
    float A2[S], gr[S], dAacc[S];  // gr: dloss/dh, carried backwards through time
    #pragma unroll
    for (int s = 0; s < S; s++) {
        A2[s] = -expf(A_log[ec * N + g * S + s]) * SCAN_LOG2E;
        gr[s] = 0.0f;
        dAacc[s] = 0.0f;
    }
    // after the 8-channel reduce-scatter (lane bits 4, 3, 2) lane holds term jv = lane / 4 of its
    // quad's 8 (dB of state 4g + jv for jv < 4, dC of state 4g + jv - 4 above): its slab slot
    const int slab_idx = ((lane >> 4) & 1) * 16 + g * S + ((lane >> 2) & 3);

    auto opaque_tid = []() { unsigned t; asm volatile("mov.u32 %0, %%tid.x;" : "=r"(t)); return (int)t; };
    // chunk cc's u, delta (z, dout; Bm, Cm) -> raw (zeros past L and past E), one commit group. Only
    // the fp32 scalar path can copy single elements (4-byte cp.async); a 2-byte T there is copied
    // synchronously. Bm, Cm rows are whole 16-byte vectors (N = 16, aligned).
    auto issue_in = [&](int cc) {
        int tb = cc * CK, ln = min(CK, L - tb);
        const int tid = opaque_tid();
        #pragma unroll
        for (int k = 0; k < IN_PER_THR; k++) {
            int i = tid + k * THREADS, w = i / (CK * ROWV), rem = i % (CK * ROWV);
            int r = rem / ROWV, v = rem % ROWV, e0 = eb + v * PACK;
            bool row_ok = r < ln;
            const T* src = (w == 0 ? u : w == 1 ? delta : w == 2 ? z : dout) + ((size_t)b * L + tb + (row_ok ? r : 0)) * E;
            T* dst = raw + (w * CK + r) * CH + v * PACK;
            scan_stage_vec<VEC>(dst, src, e0, E, row_ok);
        }
        if constexpr (BC_ASYNC) {
            #pragma unroll
            for (int k = 0; k < BC_PER_THR; k++) {
                int i = tid + k * THREADS, w = i / (CK * BCV), rem = i % (CK * BCV), r = rem / BCV, v = rem % BCV;
                bool row_ok = r < ln;
                const T* src = (w == 0 ? Bm : Cm) + ((size_t)b * L + tb + (row_ok ? r : 0)) * N + v * PACK;
                cp_async<16>(raw_bc + (w * CK + r) * N + v * PACK, src, row_ok);
            }
        }
        cp_async_commit();
    };
    auto hs_load = [&](int cc) {
        return *reinterpret_cast<const float4*>(hs + (((size_t)b * nc + cc) * E + ec) * N + g * S);
    };

    issue_in(nc - 1);
    float4 h4 = hs_load(nc - 1);
    for (int c = nc - 1; c >= 0; c--) {
        int t0 = c * CK, len = min(CK, L - t0);

        // a. Bm, Cm rows (L2 hits: every block of batch element b reads them) and this thread's z,
        // dout cells straight into registers, issued before the wait so their latency overlaps it
        Packed128<T> bcr[BC_ASYNC ? 1 : BC_PER_THR];
        if constexpr (!BC_ASYNC) {
            const int tid = opaque_tid();
            #pragma unroll
            for (int k = 0; k < BC_PER_THR; k++) {
                int i = tid + k * THREADS, w = i / (CK * BCV), rem = i % (CK * BCV), r = rem / BCV, v = rem % BCV;
                if (r < len) {
                    bcr[k] = load128((w == 0 ? Bm : Cm) + ((size_t)b * L + t0 + r) * N + v * PACK);
                } else {
                    #pragma unroll
                    for (int q = 0; q < PACK; q++) bcr[k].v[q] = (T)0.0f;
                }
            }
        }
        float4 zg[NRAW == 4 ? 1 : KC][2];  // z, dout
        if constexpr (NRAW == 2) {
            const int tid = opaque_tid(), cv0 = (tid % CV) * 4;
            #pragma unroll
            for (int k = 0; k < KC; k++) {
                int r = tid / CV + k * (THREADS / CV);
                bool valid = r < len;
                size_t off = ((size_t)b * L + t0 + (valid ? r : 0)) * E;
                zg[k][0] = scan_ldg4f<VEC>(z + off, eb + cv0, E, valid);
                zg[k][1] = scan_ldg4f<VEC>(dout + off, eb + cv0, E, valid);
            }
        }
        cp_async_wait<0>();
        __syncthreads();  // u, delta of chunk c landed; the previous chunk is done with every tile

        // b. conversion
        {
            const int tid = opaque_tid(), cv0 = (tid % CV) * 4;
            #pragma unroll
            for (int k = 0; k < KC; k++) {
                int r = tid / CV + k * (THREADS / CV);
                float4 uu = scan_lds4f(raw + r * CH + cv0);
                float4 dd = scan_lds4f(raw + (CK + r) * CH + cv0);
                float4 zz, go;
                if constexpr (NRAW == 4) {
                    zz = scan_lds4f(raw + (2 * CK + r) * CH + cv0);
                    go = scan_lds4f(raw + (3 * CK + r) * CH + cv0);
                } else {
                    zz = zg[k][0];
                    go = zg[k][1];
                }
                const float* dv = &dd.x;
                const float* zv = &zz.x;
                const float* gv = &go.x;
                float4 dt4, dy4, q4;
                float* dtv = &dt4.x;
                float* dyv = &dy4.x;
                float* qv = &q4.x;
                #pragma unroll
                for (int q = 0; q < 4; q++) {
                    int ee = eb + cv0 + q;
                    bool valid = r < len && ee < E;  // z, dout are zero there too: dy = q = 0
                    float s = __fdividef(1.0f, 1.0f + __expf(-zv[q]));
                    dtv[q] = valid ? scan_softplus_fast(dv[q] + __ldg(delta_bias + min(ee, E - 1))) : 0.0f;
                    dyv[q] = gv[q] * zv[q] * s;
                    qv[q] = gv[q] * s * (1.0f + zv[q] * (1.0f - s));  // silu'(z) = s (1 + z (1 - s))
                }
                int o = scan_bwd_cell<CH>(r, cv0);
                *reinterpret_cast<float4*>(dt_s + o) = dt4;
                *reinterpret_cast<float4*>(u_s + o) = uu;
                *reinterpret_cast<float4*>(dy_s + o) = dy4;
                *reinterpret_cast<float4*>(q_s + o) = q4;
            }
            #pragma unroll
            for (int k = 0; k < BC_PER_THR; k++) {  // the (w, r, v) mapping of the loads (or copies) in a.
                int i = tid + k * THREADS, w = i / (CK * BCV), rem = i % (CK * BCV), r = rem / BCV, v = rem % BCV;
                float* dst = (w == 0 ? B_s : C_s) + r * N + v * PACK;
                #pragma unroll
                for (int q = 0; q < PACK; q += 4) {
                    if constexpr (BC_ASYNC) {
                        *reinterpret_cast<float4*>(dst + q) = scan_lds4f(raw_bc + (w * CK + r) * N + v * PACK + q);
                    } else {
                        *reinterpret_cast<float4*>(dst + q) = make_float4((float)bcr[k].v[q], (float)bcr[k].v[q + 1],
                                                                          (float)bcr[k].v[q + 2], (float)bcr[k].v[q + 3]);
                    }
                }
            }
        }
        __syncthreads();  // tiles ready; raw is free
        if (c > 0) issue_in(c - 1);  // lands during this chunk's passes

        // c. checkpoint pass: hc[k] = state entering sub-chunk k. The loop is rolled (it and d.'s
        // are what keep the kernel ~60 KB of code instead of ~190 KB, past the instruction cache),
        // so hc is indexed dynamically and lives in local memory (128 bytes, L1/L2 hits).
        float hc[NSC][S];
        {
            float h[S] = {h4.x, h4.y, h4.z, h4.w};
            #pragma unroll 1
            for (int k = 0; k < NSC; k++) {
                #pragma unroll
                for (int s = 0; s < S; s++) hc[k][s] = h[s];
                #pragma unroll
                for (int j = 0; j < SC; j++) {
                    int r = k * SC + j, o = scan_bwd_cell<CH>(r, cl);
                    float dt = dt_s[o], dtu = dt * u_s[o];
                    float4 bv = *reinterpret_cast<const float4*>(&B_s[r * N + g * S]);
                    h[0] = scan_ex2(dt * A2[0]) * h[0] + dtu * bv.x;
                    h[1] = scan_ex2(dt * A2[1]) * h[1] + dtu * bv.y;
                    h[2] = scan_ex2(dt * A2[2]) * h[2] + dtu * bv.z;
                    h[3] = scan_ex2(dt * A2[3]) * h[3] + dtu * bv.w;
                }
            }
        }

        // d. reverse, one sub-chunk at a time (rolled); the next sub-chunk's checkpoint (hn) is
        // loaded one sub-chunk ahead so its latency does not head the recompute chain
        float hk[S], hn[S];
        #pragma unroll
        for (int s = 0; s < S; s++) hk[s] = hc[NSC - 1][s];
        #pragma unroll 1
        for (int k = NSC - 1; k >= 0; k--) {
            #pragma unroll
            for (int s = 0; s < S; s++) hn[s] = hc[k > 0 ? k - 1 : 0][s];
            float hsub[SC][S], dAs[SC][S];  // h_t and dA_t of the sub-chunk's steps
            #pragma unroll
            for (int j = 0; j < SC; j++) {
                int r = k * SC + j, o = scan_bwd_cell<CH>(r, cl);
                float dt = dt_s[o], dtu = dt * u_s[o];
                float4 bv = *reinterpret_cast<const float4*>(&B_s[r * N + g * S]);
                float bb[S] = {bv.x, bv.y, bv.z, bv.w};
                #pragma unroll
                for (int s = 0; s < S; s++) {
                    dAs[j][s] = scan_ex2(dt * A2[s]);
                    hsub[j][s] = dAs[j][s] * (j > 0 ? hsub[j - 1][s] : hk[s]) + dtu * bb[s];
                }
            }
            // compiler-only fence: reload dt, u, Bm below instead of keeping the recompute's values
            // live through the reverse steps (48 registers: heavy spilling without it)
            asm volatile("" ::: "memory");
            float* slab_w = slab + ((k & 1) * WARPS + warp) * SC * 32;
            float dub[4], dtb[4], yb[4];  // this thread's parts of du, ddt, y for a group of 4 steps
            #pragma unroll
            for (int j = SC - 1; j >= 0; j--) {
                int r = k * SC + j, o = scan_bwd_cell<CH>(r, cl);
                float dt = dt_s[o], uu = u_s[o], dy = dy_s[o];
                float4 bv = *reinterpret_cast<const float4*>(&B_s[r * N + g * S]);
                float4 cv = *reinterpret_cast<const float4*>(&C_s[r * N + g * S]);
                float bb[S] = {bv.x, bv.y, bv.z, bv.w}, cc[S] = {cv.x, cv.y, cv.z, cv.w};
                float v[2 * S], dsum = 0.0f, tsum = 0.0f, ysum = 0.0f, dtu = dt * uu;  // v: 4 dB, 4 dC terms
                #pragma unroll
                for (int s = 0; s < S; s++) {
                    float hp = j > 0 ? hsub[j - 1][s] : hk[s];  // h_{t-1}
                    ysum += cc[s] * hsub[j][s];
                    gr[s] += dy * cc[s];                         // now dloss/dh_t
                    v[s] = gr[s] * dtu;
                    v[S + s] = dy * hsub[j][s];
                    dsum += gr[s] * bb[s];
                    float ghdA = gr[s] * hp * dAs[j][s];
                    tsum += ghdA * A2[s];
                    dAacc[s] += ghdA * dt;
                    gr[s] *= dAs[j][s];                          // flows to h_{t-1}
                }
                dub[j % 4] = dsum * dt;
                dtb[j % 4] = tsum * SCAN_LN2 + dsum * uu;  // sum_n g (h_{t-1} dA A + Bm u)
                yb[j % 4] = ysum;
                reduce_scatter_level<4, 16>(v, lane);
                reduce_scatter_level<2, 8>(v, lane);
                reduce_scatter_level<1, 4>(v, lane);
                slab_w[j * 32 + slab_idx] = v[0];
                if (j % 4 == 0) {  // steps r .. r+3 done by the quad: thread g finishes step r + g
                    reduce_scatter_level<2, 2>(dub, lane); reduce_scatter_level<2, 2>(dtb, lane);
                    reduce_scatter_level<2, 2>(yb, lane);
                    reduce_scatter_level<1, 1>(dub, lane); reduce_scatter_level<1, 1>(dtb, lane);
                    reduce_scatter_level<1, 1>(yb, lane);
                    int oo = scan_bwd_cell<CH>(r + g, cl);
                    float uo = u_s[oo], dto = dt_s[oo], dyo = dy_s[oo], qo = q_s[oo];
                    float dd = dtb[0] * scan_dsoftplus_from_dt(dto);
                    u_s[oo] = dub[0] + dyo * Dv;       // du
                    dt_s[oo] = dd;                     // ddelta
                    q_s[oo] = (yb[0] + Dv * uo) * qo;  // dz
                    dbias_acc += dd;                   // 0 past L / E (dt = 0 there)
                    dD_acc += dyo * uo;                // 0 there too (dy = 0)
                }
            }
            __syncthreads();  // slab[k & 1] complete (and, at k = 0, every tile)
            const int tidf = opaque_tid();
            if (tidf < SC * 8) {  // thread: step j = tidf / 8 of the sub-chunk, float4 qv = tidf % 8 (dB for qv < 4, else dC)
                int j = tidf / 8, qv = tidf % 8, r = k * SC + j;
                if (r < len) {
                    const float* sp = slab + ((k & 1) * WARPS * SC + j) * 32 + qv * 4;
                    float4 acc = *reinterpret_cast<const float4*>(sp);
                    #pragma unroll
                    for (int w = 1; w < WARPS; w++) {
                        float4 x = *reinterpret_cast<const float4*>(sp + w * SC * 32);
                        acc.x += x.x; acc.y += x.y; acc.z += x.z; acc.w += x.w;
                    }
                    scan_atomic_add4((qv < 4 ? dBm : dCm) + ((size_t)b * L + t0 + r) * N + (qv % 4) * 4, acc);
                }
            }
            #pragma unroll
            for (int s = 0; s < S; s++) hk[s] = hn[s];
        }
        if (c > 0) h4 = hs_load(c - 1);  // used after the next conversion

        // e. du, ddelta, dz += tiles (= under GRAD_SET: nothing loaded); every old value is loaded before any is used
        {
            const int tid = opaque_tid();
            Packed128<T> od[EV][3];
            if (grad_add) {
                #pragma unroll
                for (int k = 0; k < EV; k++) {
                    int i = tid + k * THREADS, r = i / ROWV, v = i % ROWV, e0 = eb + v * PACK;
                    size_t off = ((size_t)b * L + t0 + (r < len ? r : 0)) * E + e0;
                    if constexpr (VEC) {
                        if (r < len && e0 < E) {
                            od[k][0] = load128cs(du + off);
                            od[k][1] = load128cs(ddelta + off);
                            od[k][2] = load128cs(dz + off);
                        }
                    } else {
                        #pragma unroll
                        for (int q = 0; q < PACK; q++) {
                            bool in = r < len && e0 + q < E;
                            od[k][0].v[q] = in ? du[off + q] : (T)0.0f;
                            od[k][1].v[q] = in ? ddelta[off + q] : (T)0.0f;
                            od[k][2].v[q] = in ? dz[off + q] : (T)0.0f;
                        }
                    }
                }
            }
            #pragma unroll
            for (int k = 0; k < EV; k++) {
                int i = tid + k * THREADS, r = i / ROWV, v = i % ROWV, e0 = eb + v * PACK;
                if (r >= len) continue;
                size_t off = ((size_t)b * L + t0 + r) * E + e0;
                Packed128<T> pu, pd, pz;
                #pragma unroll
                for (int q4 = 0; q4 < PACK; q4 += 4) {
                    int o = scan_bwd_cell<CH>(r, v * PACK + q4);  // 4 consecutive channels stay consecutive
                    float4 a = *reinterpret_cast<const float4*>(u_s + o);
                    float4 d = *reinterpret_cast<const float4*>(dt_s + o);
                    float4 zq = *reinterpret_cast<const float4*>(q_s + o);
                    const float* av = &a.x;
                    const float* dv = &d.x;
                    const float* zv = &zq.x;
                    #pragma unroll
                    for (int q = 0; q < 4; q++) {
                        pu.v[q4 + q] = (T)(grad_add ? (float)od[k][0].v[q4 + q] + av[q] : av[q]);
                        pd.v[q4 + q] = (T)(grad_add ? (float)od[k][1].v[q4 + q] + dv[q] : dv[q]);
                        pz.v[q4 + q] = (T)(grad_add ? (float)od[k][2].v[q4 + q] + zv[q] : zv[q]);
                    }
                }
                if constexpr (VEC) {
                    if (e0 < E) {
                        store128(du + off, pu);
                        store128(ddelta + off, pd);
                        store128(dz + off, pz);
                    }
                } else {
                    #pragma unroll
                    for (int q = 0; q < PACK; q++)
                        if (e0 + q < E) { du[off + q] = pu.v[q]; ddelta[off + q] = pd.v[q]; dz[off + q] = pz.v[q]; }
                }
            }
        }
    }
    // parameter gradients: dD and ddelta_bias summed over the channel's quad, dA_log per thread
    dbias_acc += __shfl_xor_sync(0xffffffffu, dbias_acc, 1);
    dbias_acc += __shfl_xor_sync(0xffffffffu, dbias_acc, 2);
    dD_acc += __shfl_xor_sync(0xffffffffu, dD_acc, 1);
    dD_acc += __shfl_xor_sync(0xffffffffu, dD_acc, 2);
    // (a nullptr one is frozen: its atomics are skipped; the checks are uniform, after the loops)
    if (ch_ok) {
        if (g == 0) {
            if (ddelta_bias) atomicAdd(&ddelta_bias[e], dbias_acc);
            if (dD) atomicAdd(&dD[e], dD_acc);
        }
        if (dA_log) {
            #pragma unroll
            for (int s = 0; s < S; s++) atomicAdd(&dA_log[e * N + g * S + s], dAacc[s] * A2[s] * SCAN_LN2);  // dA * A
        }
    }
}

// ---------------------------------------------------------------------------
// launchers
//
// The fast kernels read or write some pointers only as 16-byte vectors, so those must be 16-byte
// aligned (cudaMalloc and the model's carved views are):
//   forward:  Bm, Cm (16-byte cp.async row copies) and hs (float4 stores)
//   backward: hs (float4 loads), Bm, Cm (16-byte loads), dBm, dCm (16-byte atomics)
// The (B, L, E) activations and their gradients go as 16-byte vectors too when E is a multiple of
// Packed128<T>::size and they are aligned, else per element in the same kernel (4-byte cp.async
// for fp32 u, delta): any L and E work (e.g. E = 37).
// T: the activations' type (u, delta, z, Bm, Cm, dout, du, ddelta, dz): fp32, or bf16 under
// --matmul bf16 (selective_scan_forward_b16_cuda / selective_scan_backward_b16_cuda); A_log, D, the
// delta bias, hs, dBm, dCm and every sum inside stay fp32.

template <typename T>
static bool selective_scan_forward_fast_ok(int N, const float* hs, const T* Bm, const T* Cm) {
    return N == SCAN_FAST_N && aligned16(hs) && aligned16(Bm) && aligned16(Cm);
}

template <typename T>
static void selective_scan_forward_fast_t(T* out, float* hs, const T* u, const T* delta, const float* A_log, const T* Bm,
                                          const T* Cm, const float* D, const T* z, const float* delta_bias, int B, int L, int E) {
    bool vec = E % Packed128<T>::size == 0 && aligned16(u) && aligned16(delta) && aligned16(z) && aligned16(out);
    const size_t smem = scan_fwd_fast_smem<T>();
    static bool smem_opt_in = false;  // static + dynamic shared memory over 48 KB needs an opt-in (per T)
    if (!smem_opt_in) {
        cudaCheck(cudaFuncSetAttribute(selective_scan_forward_fast_kernel<true, T>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        cudaCheck(cudaFuncSetAttribute(selective_scan_forward_fast_kernel<false, T>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        smem_opt_in = true;
    }
    dim3 grid(ceil_div(E, SCAN_FAST_CH), B);
    if (vec)
        selective_scan_forward_fast_kernel<true, T><<<grid, SCAN_FAST_THREADS, smem, launch_stream()>>>(
            out, hs, u, delta, A_log, Bm, Cm, D, z, delta_bias, B, L, E);
    else
        selective_scan_forward_fast_kernel<false, T><<<grid, SCAN_FAST_THREADS, smem, launch_stream()>>>(
            out, hs, u, delta, A_log, Bm, Cm, D, z, delta_bias, B, L, E);
    cudaCheckLaunch();
}
static void selective_scan_forward_fast(floatX* out, float* hs, const floatX* u, const floatX* delta,
                                        const float* A_log, const floatX* Bm, const floatX* Cm,
                                        const float* D, const floatX* z, const float* delta_bias,
                                        int B, int L, int E) {
    selective_scan_forward_fast_t(out, hs, u, delta, A_log, Bm, Cm, D, z, delta_bias, B, L, E);
}
// bf16 activations in and out (the fast path only: the caller checks selective_scan_forward_fast_ok)
static void selective_scan_forward_b16_cuda(bf16* out, float* hs, const bf16* u, const bf16* delta, const float* A_log,
                                            const bf16* Bm, const bf16* Cm, const float* D, const bf16* z,
                                            const float* delta_bias, int B, int L, int E) {
    selective_scan_forward_fast_t(out, hs, u, delta, A_log, Bm, Cm, D, z, delta_bias, B, L, E);
}

template <typename T>
static bool selective_scan_backward_fast_ok(int N, const float* hs, const T* Bm, const T* Cm, const float* dBm,
                                            const float* dCm) {
    return N == SCAN_FAST_N && aligned16(hs) && aligned16(Bm) && aligned16(Cm) && aligned16(dBm) && aligned16(dCm);
}

template <typename T>
static void selective_scan_backward_fast_t(T* du, T* ddelta, float* dA_log, float* dBm, float* dCm, float* dD, T* dz,
                                           float* ddelta_bias, const T* dout, const T* u, const T* delta, const float* A_log,
                                           const T* Bm, const T* Cm, const float* D, const T* z, const float* delta_bias,
                                           const float* hs, int B, int L, int E, GradWrite grad_write) {
    bool vec = E % Packed128<T>::size == 0 && aligned16(u) && aligned16(delta) && aligned16(z) && aligned16(dout) &&
               aligned16(du) && aligned16(ddelta) && aligned16(dz);
    const size_t smem = scan_bwd_fast_smem<T>();  // 36 KB (fp32), 68 KB (bf16: over 48 KB needs the opt-in)
    static bool attributes_set = false;
    if (!attributes_set) {  // the opt-in, and the largest shared-memory carveout so 12 warps fit per SM
        for (auto kernel : {selective_scan_backward_fast_kernel<true, T>, selective_scan_backward_fast_kernel<false, T>}) {
            cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
            cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
        }
        attributes_set = true;
    }
    constexpr int CH = ScanBwdShape<T>::CH;
    dim3 grid(ceil_div(E, CH), B);
    if (vec)
        selective_scan_backward_fast_kernel<true, T><<<grid, 4 * CH, smem, launch_stream()>>>(
            du, ddelta, dA_log, dBm, dCm, dD, dz, ddelta_bias, dout, u, delta, A_log, Bm, Cm, D, z, delta_bias, hs, B, L, E,
            grad_write == GRAD_ADD);
    else
        selective_scan_backward_fast_kernel<false, T><<<grid, 4 * CH, smem, launch_stream()>>>(
            du, ddelta, dA_log, dBm, dCm, dD, dz, ddelta_bias, dout, u, delta, A_log, Bm, Cm, D, z, delta_bias, hs, B, L, E,
            grad_write == GRAD_ADD);
    cudaCheckLaunch();
}
static void selective_scan_backward_fast(floatX* du, floatX* ddelta, float* dA_log, floatX* dBm, floatX* dCm, float* dD,
                                         floatX* dz, float* ddelta_bias, const floatX* dout, const floatX* u,
                                         const floatX* delta, const float* A_log, const floatX* Bm, const floatX* Cm,
                                         const float* D, const floatX* z, const float* delta_bias, const float* hs, int B,
                                         int L, int E, GradWrite grad_write = GRAD_ADD) {
    selective_scan_backward_fast_t(du, ddelta, dA_log, dBm, dCm, dD, dz, ddelta_bias, dout, u, delta, A_log, Bm, Cm, D, z,
                                   delta_bias, hs, B, L, E, grad_write);
}
// bf16 activations and gradients (du, ddelta, dz += in bf16: one rounding per addition; = under GRAD_SET); dBm, dCm
// and the parameter gradients fp32. The fast path only: the caller checks selective_scan_backward_fast_ok.
static void selective_scan_backward_b16_cuda(bf16* du, bf16* ddelta, float* dA_log, float* dBm, float* dCm, float* dD,
                                             bf16* dz, float* ddelta_bias, const bf16* dout, const bf16* u, const bf16* delta,
                                             const float* A_log, const bf16* Bm, const bf16* Cm, const float* D, const bf16* z,
                                             const float* delta_bias, const float* hs, int B, int L, int E,
                                             GradWrite grad_write = GRAD_ADD) {
    selective_scan_backward_fast_t(du, ddelta, dA_log, dBm, dCm, dD, dz, ddelta_bias, dout, u, delta, A_log, Bm, Cm, D, z,
                                   delta_bias, hs, B, L, E, grad_write);
}
