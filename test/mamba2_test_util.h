// mamba2_test_util.h: what the Mamba-2 block's tests share (test_mamba2.cu, gpu_mamba2.cu,
// torch_mamba2_dump.cu).
#pragma once
#include "test_util.h"
#include "../src/mamba2.h"

// parameters off their special init values (D = 1, norm = 1, ...) with dt ~ 0.2..1 and |A| ~ 0.4..2,
// so the SSD matters in every gradient
static void mamba2_randomize_params(const Mamba2Params& p, const Mamba2Config& c, Rng* r) {
    int D = c.d_model, E = c.d_inner, H = c.nheads, C = c.conv_dim, K = c.d_conv, Z = c.d_in_proj;
    fill_uniform(p.in_proj_w, (size_t)Z * D, r, -0.5f, 0.5f);
    fill_uniform(p.conv_w, (size_t)C * K, r, -0.5f, 0.5f);
    fill_uniform(p.conv_b, (size_t)C, r, -0.5f, 0.5f);
    fill_uniform(p.dt_bias, H, r, -1.5f, 0.5f);
    fill_uniform(p.A_log, H, r, -1.0f, 0.7f);
    fill_uniform(p.D, H, r, -1.0f, 1.0f);
    fill_uniform(p.norm_w, E, r, 0.5f, 1.5f);
    fill_uniform(p.out_proj_w, (size_t)D * E, r, -0.5f, 0.5f);
}
