// profiler.h: optional per-component timing (--profile). It synchronizes
// around every timed call, so it is for the breakdown only, never for the
// headline tokens/s.
//
//   PROF(on_gpu, "scan", selective_scan_forward(on_gpu, ...));
#pragma once
#include <chrono>
#include <cstring>
#include "device.h"

typedef struct { const char* name; double ms; } ProfEntry;
typedef struct {
    bool on;                // timing is active for the current step
    int n;
    ProfEntry entries[64];  // in order of first appearance
} Profiler;
static Profiler g_prof = {false, 0, {}};

static double wall_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

static void prof_add(const char* name, double ms) {
    for (int i = 0; i < g_prof.n; i++)
        if (strcmp(g_prof.entries[i].name, name) == 0) { g_prof.entries[i].ms += ms; return; }
    if (g_prof.n < 64) g_prof.entries[g_prof.n++] = {name, ms};
}

#define PROF(on_gpu, name, ...)                                   \
    do {                                                          \
        if (!g_prof.on) { __VA_ARGS__; break; }                   \
        device_synchronize(on_gpu); double t0_ = wall_ms();       \
        __VA_ARGS__;                                              \
        device_synchronize(on_gpu); prof_add(name, wall_ms() - t0_); \
    } while (0)

// prints ms per step and the share of each component
static void prof_print(int steps) {
    if (g_prof.n == 0 || steps < 1) return;
    double total = 0;
    for (int i = 0; i < g_prof.n; i++) total += g_prof.entries[i].ms;
    printf("per-component time over %d steps (forward + backward, all layers; synchronized):\n", steps);
    for (int i = 0; i < g_prof.n; i++)
        printf("  %-14s %9.2f ms/step  %5.1f%%\n", g_prof.entries[i].name, g_prof.entries[i].ms / steps,
               100 * g_prof.entries[i].ms / total);
}
