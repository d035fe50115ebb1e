// torch_vlm_model_dump.cu: the whole tiny LLaVA (src/vlm_model.h) on the CPU reference, for
// test/torch_vlm_model_check.py, which loads the same parameters into the PyTorch model of
// dev/vlm_torch_bench.py (float64) and compares the loss, the logits and every gradient.
//
//   build: g++ -O3 -march=native -fopenmp -std=c++17 -Wall -Wno-unused-function -Wno-unknown-pragmas
//              -x c++ test/torch_vlm_model_dump.cu -o build/torch_vlm_model_dump -lm
//          (torch_vlm_model_check.py builds it when it is missing or older than its sources)
//   usage: build/torch_vlm_model_dump out.bin
//
// Per case "<case>." (tensor file of test/tensor_file.h):
//   config   [image_size, patch, v_layers, v_dim, v_heads, proj_mlp, vocab, l_layers, l_dim,
//             l_heads, max_text, B]
//   images (B, H, H, 3); tokens, targets (B, max_text) as floats; lengths (B)
//   logits (B, Tl, V) of a forward without targets; loss (1)
//   param.<name>, grad.<name> every parameter tensor and its gradient; decay.<name> (1) its
//   weight-decay flag
// Tokens and targets past a row's length hold random ids: the model must ignore them.
#include <string>
#include <vector>
#include "test_util.h"
#include "../src/vlm_model.h"
#include "tensor_file.h"

static void dump_case(TensorFile& tf, const std::string& name, const VlmConfig& c, int B, uint64_t seed) {
    std::string p = name + ".";
    VlmModel m;
    vlm_build(&m, c, B, false);
    vlm_init_params(&m, seed);
    Rng r; rng_seed(&r, seed + 7);
    // off the init (zero biases, unit norms), so every parameter's gradient path is exercised
    ParamStore& ps = m.params;
    for (size_t i = 0; i < ps.num_params; i++) ps.params[i] += 0.3f * (2.0f * rng_uniform(&r) - 1.0f);

    int H = c.image_size, T = c.max_text, V = c.vocab;
    std::vector<float> images = random_vec((size_t)B * H * H * 3, &r, 0.0f, 1.0f);
    std::vector<int> tokens((size_t)B * T), targets((size_t)B * T), lengths(B);
    for (int b = 0; b < B; b++) {
        // row 0 full, row 1 the shortest text (<bos> <image> one token), the others in between
        int len = b == 0 ? T : b == 1 ? 3 : 3 + (int)(rng_u32(&r) % (T - 2));
        lengths[b] = len;
        int* tok = &tokens[(size_t)b * T];
        int* tgt = &targets[(size_t)b * T];
        for (int t = 0; t < T; t++) {
            tok[t] = 4 + (int)(rng_u32(&r) % (V - 4));
            tgt[t] = t >= len ? (int)(rng_u32(&r) % V) : -1;  // past the length: garbage to ignore
        }
        tok[0] = 1; tok[1] = VLM_IMAGE_TOKEN;
        // rows 0 and 1 mark every text position (the <bos> and <image> ones included), the others
        // the second half, as an answer
        for (int t = (b < 2 ? 0 : len / 2); t < len; t++) tgt[t] = t + 1 < len ? tok[t + 1] : 2;
    }

    int Tl = m.Tl;
    vlm_forward(&m, images.data(), tokens.data(), nullptr, lengths.data(), B);
    tf.add(p + "logits", m.logits, {B, Tl, V});
    float loss = vlm_forward(&m, images.data(), tokens.data(), targets.data(), lengths.data(), B);
    vlm_zero_grad(&m);
    vlm_backward(&m);

    int cfg[] = {c.image_size, c.patch, c.v_layers, c.v_dim, c.v_heads, c.proj_mlp, c.vocab,
                 c.l_layers, c.l_dim, c.l_heads, c.max_text, B};
    tf.add_ints(p + "config", cfg, {(int)(sizeof cfg / sizeof cfg[0])});
    tf.add(p + "images", images, {B, H, H, 3});
    tf.add_ints(p + "tokens", tokens.data(), {B, T});
    tf.add_ints(p + "targets", targets.data(), {B, T});
    tf.add_ints(p + "lengths", lengths.data(), {B});
    tf.add_scalar(p + "loss", loss);
    for (size_t k = 0; k < ps.tensors.size(); k++) {
        const ParamTensor& t = ps.tensors[k];
        std::vector<int> dims(t.shape, t.shape + t.ndim);
        tf.add(p + "param." + t.name, param_data(&ps, (int)k), dims);
        tf.add(p + "grad." + t.name, param_grad(&ps, (int)k), dims);
        tf.add_scalar(p + "decay." + t.name, t.decay ? 1.0f : 0.0f);
    }
    vlm_free(&m);
}

// the fields the LLaVA path reads; CLIP's towers (declared, unused here) get small widths
static VlmConfig config(int image, int patch, int v_layers, int v_dim, int v_heads, int proj_mlp, int vocab,
                        int l_layers, int l_dim, int l_heads, int max_text) {
    VlmConfig c = {};
    c.image_size = image; c.patch = patch;
    c.v_layers = v_layers; c.v_dim = v_dim; c.v_heads = v_heads; c.proj_mlp = proj_mlp;
    c.vocab = vocab; c.l_layers = l_layers; c.l_dim = l_dim; c.l_heads = l_heads; c.max_text = max_text;
    c.t_layers = 1; c.t_dim = 4; c.t_heads = 1; c.clip_dim = 4;
    return c;
}

int main(int argc, char** argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s out.bin\n", argv[0]); return 1; }
    TensorFile tf;
    //                            image patch vL vD vH mlp  V lL lD lH text
    dump_case(tf, "mlp", config(8, 4, 2, 12, 3, 1, 13, 2, 8, 2, 7), 3, 11);
    dump_case(tf, "linear", config(8, 4, 3, 12, 3, 0, 13, 2, 8, 2, 7), 3, 12);
    dump_case(tf, "vit1", config(12, 4, 1, 8, 2, 1, 11, 1, 12, 3, 5), 4, 13);
    dump_case(tf, "patch1", config(3, 1, 2, 6, 1, 0, 9, 3, 6, 3, 4), 2, 14);
    if (!tf.save(argv[1])) return 1;
    printf("wrote %zu tensors to %s\n", tf.entries.size(), argv[1]);
    return 0;
}
