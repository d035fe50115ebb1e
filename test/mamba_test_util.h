// mamba_test_util.h: helpers the Mamba model tests share.
#pragma once
#include "../src/mamba_model.h"

// perturb the freshly initialised parameters so no tensor sits at a special
// value (D = 1, norms = 1, zero biases) that could hide a wrong gradient. The
// standard init makes dt ~ 1e-3..0.1 and embeddings ~0.02, which leaves the
// scan's gradients too small for float32 finite differences: raise both.
static void jitter_params(MambaModel* m, uint64_t seed) {
    Rng r; rng_seed(&r, seed);
    ParamStore* ps = &m->params;
    for (size_t i = 0; i < ps->num_params; i++) ps->params[i] += 0.5f * (2.0f * rng_uniform(&r) - 1.0f);
    for (const ParamTensor& t : ps->tensors) {
        float* p = ps->params + t.offset;
        if (strstr(t.name.c_str(), "dt_proj.bias"))
            for (size_t j = 0; j < t.numel; j++) p[j] = -1.5f + 2.0f * rng_uniform(&r);  // dt ~ 0.2..1
        if (t.name == "embedding.weight")
            for (size_t j = 0; j < t.numel; j++) p[j] = rng_normal(&r);
    }
}
