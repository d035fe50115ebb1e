// torch_clip_dump.cu: run the CPU reference of CLIP's contrastive loss and logits
// (src/clip_loss.h) on random inputs and write inputs, outputs and gradients to a tensor file
// (test/tensor_file.h) that test/torch_clip_check.py recomputes independently in PyTorch float64.
//
//   build: g++ -O3 -march=native -fopenmp -std=c++17 -x c++ test/torch_clip_dump.cu -o build/torch_clip_dump -lm
//          (torch_clip_check.py builds it when it is missing or older than its sources)
//   usage: build/torch_clip_dump out.bin
//
// Names are "<case>.<tensor>". Loss cases (clip.*): img, txt, log_scale (inputs), loss, dlogits (G,
// from the cache), rn_img, rn_txt (inverse norms, from the cache), dimg, dtxt, dlog_scale (our
// gradients, from zero: the backward accumulates). Logits cases (logits.*): img, txt, log_scale,
// logits. "<case>.config" is [N, E] or [N, M, E].
#include "test_util.h"
#include "../src/clip_loss.h"
#include <string>
#include <vector>
#include "tensor_file.h"

typedef std::vector<float> Vec;

static Rng g_rng;
static Vec rnd(size_t n, float lo = -1.0f, float hi = 1.0f) { return random_vec(n, &g_rng, lo, hi); }

// rows = shared * (one random direction) + U(-1, 1): shared > 0 brings the cosines together
static void dump_loss(TensorFile& tf, const std::string& name, int N, int E, double log_scale, float shared) {
    std::string p = name + ".";
    Vec base = rnd(E), img = rnd((size_t)N * E), txt = rnd((size_t)N * E);
    for (size_t k = 0; k < img.size(); k++) {
        img[k] += shared * base[k % E];
        txt[k] += shared * base[k % E];
    }
    float ls = (float)log_scale;
    ClipCache o = clip_cache_layout(N);
    Vec cache(clip_loss_cache_floats(N, E));
    float loss = clip_loss_forward_cpu(cache.data(), img.data(), txt.data(), &ls, N, E);
    Vec dimg(img.size(), 0.0f), dtxt(txt.size(), 0.0f);
    float dls = 0.0f;
    clip_loss_backward_cpu(dimg.data(), dtxt.data(), &dls, cache.data(), img.data(), txt.data(), &ls, N, E);
    float cfg[2] = {(float)N, (float)E};
    tf.add(p + "config", cfg, {2});
    tf.add(p + "img", img, {N, E});
    tf.add(p + "txt", txt, {N, E});
    tf.add_scalar(p + "log_scale", ls);
    tf.add_scalar(p + "loss", loss);
    tf.add(p + "dlogits", cache.data() + o.G, {N, N});
    tf.add(p + "rn_img", cache.data() + o.rn_img, {N});
    tf.add(p + "rn_txt", cache.data() + o.rn_txt, {N});
    tf.add(p + "dimg", dimg, {N, E});
    tf.add(p + "dtxt", dtxt, {N, E});
    tf.add_scalar(p + "dlog_scale", dls);
}

static void dump_logits(TensorFile& tf, const std::string& name, int N, int M, int E, double log_scale) {
    std::string p = name + ".";
    Vec img = rnd((size_t)N * E), txt = rnd((size_t)M * E, -0.5f, 2.0f), logits((size_t)N * M);
    float ls = (float)log_scale;
    clip_logits_cpu(logits.data(), img.data(), txt.data(), &ls, N, M, E);
    float cfg[3] = {(float)N, (float)M, (float)E};
    tf.add(p + "config", cfg, {3});
    tf.add(p + "img", img, {N, E});
    tf.add(p + "txt", txt, {M, E});
    tf.add_scalar(p + "log_scale", ls);
    tf.add(p + "logits", logits, {N, M});
}

int main(int argc, char** argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s out.bin\n", argv[0]); return 1; }
    rng_seed(&g_rng, 2718);
    TensorFile tf;
    const double s10 = log(10.0), s200 = log(200.0), init = log(1.0 / 0.07);
    dump_loss(tf, "clip.N1", 1, 13, s10, 0.0f);
    dump_loss(tf, "clip.N2", 2, 13, s10, 0.0f);
    dump_loss(tf, "clip.N7", 7, 37, s10, 0.0f);
    dump_loss(tf, "clip.N33", 33, 20, s10, 0.0f);
    dump_loss(tf, "clip.N33.shared", 33, 20, s10, 3.0f);
    dump_loss(tf, "clip.N9.init", 9, 96, init, 1.0f);
    dump_loss(tf, "clip.N40.s2", 40, 11, log(2.0), 0.0f);
    dump_loss(tf, "clip.N7.clamp", 7, 37, s200, 6.0f);
    dump_loss(tf, "clip.N33.clamp", 33, 20, s200, 6.0f);
    dump_loss(tf, "clip.N2.clamp", 2, 13, s200, 6.0f);
    dump_logits(tf, "logits.N5.M9", 5, 9, 11, s10);
    dump_logits(tf, "logits.N37.M3.clamp", 37, 3, 50, s200);
    dump_logits(tf, "logits.N1.M4", 1, 4, 7, init);
    if (!tf.save(argv[1])) return 1;
    printf("wrote %zu tensors to %s\n", tf.entries.size(), argv[1]);
    return 0;
}
