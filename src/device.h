// device.h: which backend a run uses, its name, and the memory it holds.
#pragma once
#include <string>
#include "common.h"

// --device auto|cpu|cuda -> true for the GPU. auto takes the GPU when this
// binary was built with nvcc and one is present.
static bool device_pick(const std::string& device) {
    if (device != "auto" && device != "cpu" && device != "cuda")
        FATAL("--device must be auto, cpu or cuda, got '%s'", device.c_str());
#ifdef __CUDACC__
    int n = 0;
    bool have = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
    cudaGetLastError();  // clear the error a machine without a GPU leaves behind
    if (device == "cuda" && !have) FATAL("--device cuda: no CUDA GPU found");
    bool on_gpu = device != "cpu" && have;
    if (on_gpu) {
        cudaDeviceProp p; cudaCheck(cudaGetDeviceProperties(&p, 0));
        // the scan kernels stage their inputs with cp.async (sm_80+)
        if (p.major < 8)
            FATAL("GPU %s has compute capability %d.%d; the CUDA kernels need 8.0 or newer (A100, RTX 30xx/40xx, H100). "
                  "Use --device cpu", p.name, p.major, p.minor);
    }
    return on_gpu;
#else
    if (device == "cuda") FATAL("--device cuda: this binary was built without CUDA (no nvcc)");
    return false;
#endif
}

static std::string device_name(bool on_gpu) {
#ifdef __CUDACC__
    if (on_gpu) {
        cudaDeviceProp p; cudaCheck(cudaGetDeviceProperties(&p, 0));
        return std::string(p.name);
    }
#endif
    (void)on_gpu;
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    return "CPU (" + std::to_string(threads) + " threads)";
}

// memory in use, in MiB: the whole GPU's, or this process's resident set
static double device_memory_mib(bool on_gpu) {
#ifdef __CUDACC__
    if (on_gpu) {
        size_t free_b, total_b; cudaCheck(cudaMemGetInfo(&free_b, &total_b));
        return (total_b - free_b) / 1048576.0;
    }
#endif
    long pages = 0, rss = 0;
    FILE* f = fopen("/proc/self/statm", "r");
    if (f) { if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0; fclose(f); }
    return rss * 4096.0 / 1048576.0;
}

static void device_synchronize(bool on_gpu) {
#ifdef __CUDACC__
    if (on_gpu) cudaCheck(cudaDeviceSynchronize());
#endif
    (void)on_gpu;
}
