// grid_barrier.cu: what one grid-wide barrier costs, against a kernel boundary, for the decode
// step (issue 9: generation within 2x of its weight-read floor). The fused decode step is 97
// launches (4 a layer + the head); per launch at batch 1 the small kernels take ~2.3 us with
// programmatic dependent launch, mostly dependency latency (src/mamba_generate.h). One persistent
// kernel would replace each boundary by a barrier across all blocks: this measures whether that
// is cheaper, before any of it is built.
//
//   v1  cooperative_groups grid.sync() in a cooperative launch (one block per SM)
//   v2  a hand-written barrier: each block's thread 0 adds 1 to a global counter (release) and
//       spins on it (acquire loads) until it reaches the round's target; no reset between rounds
//   v3  the same as v2 with 4 blocks per SM (more blocks to count in)
//   v4  kernel boundaries: a CUDA graph of empty kernels, one per "barrier"
//   v5  the same with programmatic dependent launch (each kernel waits with griddepcontrol.wait)
//
// Prediction (before the run): v1 ~1.5-2 us (grid.sync is a fenced atomic barrier plus the
// cooperative-groups bookkeeping), v2 ~0.8-1.2 us (one L2 atomic round trip for 132 blocks and
// the polling latency), v3 slower than v2 (4x the arrivals on one address), v4 ~2-3 us, v5 ~1.5-2 us.
// If v2 is <= 1 us, a persistent step with 4 barriers a layer (in_proj | x_proj | scan | out_proj)
// spends <= ~100 us of the 130m step in barriers, against ~200 us of boundaries now.
//
// Build and run: make build/dev_grid_barrier && ./build/dev_grid_barrier
#include <cooperative_groups.h>
#include <functional>
#include "dev_common.h"

namespace cg = cooperative_groups;

__global__ void barrier_cg_kernel(int rounds, float* sink) {
    cg::grid_group grid = cg::this_grid();
    float acc = 0.0f;
    for (int i = 0; i < rounds; i++) {
        acc += (float)i;
        grid.sync();
    }
    if (threadIdx.x == 0 && acc < 0.0f) sink[blockIdx.x] = acc;  // never: keeps the loop
}

// all blocks arrive: thread 0 of each adds 1 (after a release fence for the block's writes), then
// waits until the counter reaches target (this round's blocks x rounds so far)
__device__ __forceinline__ void grid_barrier(unsigned int* counter, unsigned int target) {
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        atomicAdd(counter, 1u);
        unsigned int seen;
        do {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(counter) : "memory");
        } while (seen < target);
    }
    __syncthreads();
}

__global__ void barrier_atomic_kernel(unsigned int* counter, int rounds, float* sink) {
    float acc = 0.0f;
    for (int i = 0; i < rounds; i++) {
        acc += (float)i;
        grid_barrier(counter, (unsigned int)(i + 1) * gridDim.x);
    }
    if (threadIdx.x == 0 && acc < 0.0f) sink[blockIdx.x] = acc;
}

__global__ void empty_kernel(float* sink, int pdl) {
    if (pdl) asm volatile("griddepcontrol.wait;" ::: "memory");
    if (pdl) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    if (threadIdx.x == 0 && sink[0] < -1e30f) sink[blockIdx.x] = 1.0f;  // never
}

static int g_sms = 0;

// median us per unit of `launch` (which does `units` barriers or kernels on `stream`), over `reps`
// runs after two warm-up runs; `before` runs outside the timed span
static double median_us(cudaStream_t stream, int units, int reps, const std::function<void()>& before,
                        const std::function<void()>& launch) {
    cudaEvent_t a, b;
    cudaCheck(cudaEventCreate(&a));
    cudaCheck(cudaEventCreate(&b));
    std::vector<double> us;
    for (int rep = 0; rep < reps + 2; rep++) {
        before();
        cudaCheck(cudaEventRecord(a, stream));
        launch();
        cudaCheck(cudaEventRecord(b, stream));
        cudaCheck(cudaEventSynchronize(b));
        float ms;
        cudaCheck(cudaEventElapsedTime(&ms, a, b));
        if (rep >= 2) us.push_back(ms * 1e3 / units);
    }
    cudaCheck(cudaEventDestroy(a));
    cudaCheck(cudaEventDestroy(b));
    std::sort(us.begin(), us.end());
    return us[us.size() / 2];
}

// us per barrier: one cooperative launch of `rounds` barriers
static double time_barriers(int version, int blocks_per_sm, int threads, int rounds, int reps) {
    float* sink = dev_alloc<float>(4096);
    cudaCheck(cudaMemset(sink, 0, 4096 * sizeof(float)));
    unsigned int* counter;
    cudaCheck(cudaMalloc(&counter, sizeof(unsigned int)));
    int blocks = g_sms * blocks_per_sm;
    double us = median_us(0, rounds, reps, [&] { cudaCheck(cudaMemset(counter, 0, sizeof(unsigned int))); }, [&] {
        if (version == 1) {
            void* args[] = {&rounds, &sink};
            cudaCheck(cudaLaunchCooperativeKernel((void*)barrier_cg_kernel, blocks, threads, args, 0, 0));
        } else {
            void* args[] = {&counter, &rounds, &sink};
            cudaCheck(cudaLaunchCooperativeKernel((void*)barrier_atomic_kernel, blocks, threads, args, 0, 0));
        }
    });
    cudaCheck(cudaFree(counter));
    dev_free(sink);
    return us;
}

// us per kernel: a CUDA graph of `kernels` empty kernels (one block per SM)
static double time_boundaries(bool pdl, int threads, int kernels, int reps) {
    float* sink = dev_alloc<float>(4096);
    cudaCheck(cudaMemset(sink, 0, 4096 * sizeof(float)));
    cudaStream_t s;
    cudaCheck(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaGraph_t g;
    cudaGraphExec_t ge;
    cudaCheck(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    for (int k = 0; k < kernels; k++) {
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3(g_sms);
        cfg.blockDim = dim3(threads);
        cfg.stream = s;
        cudaLaunchAttribute attr[1];
        attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[0].val.programmaticStreamSerializationAllowed = 1;
        cfg.attrs = attr;
        cfg.numAttrs = pdl && k > 0 ? 1 : 0;
        int p = pdl ? 1 : 0;
        cudaCheck(cudaLaunchKernelEx(&cfg, empty_kernel, sink, p));
    }
    cudaCheck(cudaStreamEndCapture(s, &g));
    cudaCheck(cudaGraphInstantiate(&ge, g, 0));
    double us = median_us(s, kernels, reps, [] {}, [&] { cudaCheck(cudaGraphLaunch(ge, s)); });
    cudaCheck(cudaGraphExecDestroy(ge));
    cudaCheck(cudaGraphDestroy(g));
    cudaCheck(cudaStreamDestroy(s));
    dev_free(sink);
    return us;
}

int main() {
    int dev = 0;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaDeviceGetAttribute(&g_sms, cudaDevAttrMultiProcessorCount, dev));
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, dev));
    printf("grid barrier vs kernel boundary on %s (%d SMs); us per barrier / per kernel, median of 20 runs of 1000\n",
           prop.name, g_sms);
    printf("| version | blocks | threads | us |\n|---|---|---|---|\n");
    for (int threads : {128, 512}) {
        printf("| v1 cooperative_groups grid.sync() | %d | %d | %.3f |\n", g_sms, threads, time_barriers(1, 1, threads, 1000, 20));
        printf("| v2 atomic counter barrier | %d | %d | %.3f |\n", g_sms, threads, time_barriers(2, 1, threads, 1000, 20));
        printf("| v3 atomic counter barrier, 4 blocks an SM | %d | %d | %.3f |\n", 4 * g_sms, threads,
               time_barriers(2, 4, threads, 1000, 20));
        printf("| v4 kernel boundary (graph of empty kernels) | %d | %d | %.3f |\n", g_sms, threads, time_boundaries(false, threads, 1000, 20));
        printf("| v5 kernel boundary with PDL | %d | %d | %.3f |\n", g_sms, threads, time_boundaries(true, threads, 1000, 20));
    }
    return 0;
}
