// vlm_test_util.h: helpers the VLM model tests share.
#pragma once
#include "../src/vlm_model.h"
#include "test_util.h"

// a batch of B scenes: random images in [0, 1]; text [<bos>=1, <image>, words..., <eos>=2] of
// 4..max_text tokens; targets (the next token) from text position first_target (1: every word;
// a negative value: from the middle of each text) to the last word; keys 100 + 7 i (the images'
// keys for a seeded random token reduction)
struct Batch {
    std::vector<float> images;
    std::vector<int> tokens, targets, lengths, keys;
};
static Batch make_batch(const VlmConfig& c, int B, Rng* r, int first_target) {
    Batch b;
    int H = c.image_size, T = c.max_text;
    b.images = random_vec((size_t)B * H * H * 3, r, 0.0f, 1.0f);
    b.tokens.assign((size_t)B * T, 0); b.targets.assign((size_t)B * T, -1); b.lengths.assign(B, 0);
    for (int i = 0; i < B; i++) {
        int len = 4 + (int)(rng_u32(r) % (T - 3));  // 4..T
        int* tok = &b.tokens[(size_t)i * T];
        tok[0] = 1; tok[1] = VLM_IMAGE_TOKEN;
        for (int t = 2; t < len; t++) tok[t] = 5 + rng_u32(r) % (c.vocab - 5);
        tok[len - 1] = 2;
        for (int t = first_target < 0 ? len / 2 : first_target; t < len - 1; t++) b.targets[(size_t)i * T + t] = tok[t + 1];
        b.lengths[i] = len;
        b.keys.push_back(100 + 7 * i);
    }
    return b;
}
