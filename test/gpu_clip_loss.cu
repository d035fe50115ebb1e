// gpu_clip_loss.cu: the CUDA CLIP contrastive loss and logits (src/clip_loss.h) vs their CPU
// references at several N, E (odd ones, N = 1, the scale clamp active and not). Outputs and the
// cache are NaN-poisoned so unwritten elements fail; gradient buffers (dlog_scale included) start
// from the same random values on both sides (tests +=). The GPU side is called through the backend
// wrappers name(true, ...); two GPU runs must give the same bits.
#include "test_util.h"
#include "../src/clip_loss.h"

typedef std::vector<float> Vec;

// device array d (as many values as ref) against the CPU result
static void expect_close(const char* what, const std::string& shape, const float* d, const Vec& ref, double tol) {
    std::string name = std::string(what) + " " + shape;
    Vec got = from_device(d, ref.size());
    check_close(name.c_str(), got.data(), ref.data(), ref.size(), tol);
}
static Vec slice(const Vec& v, size_t off, size_t n) { return Vec(v.begin() + off, v.begin() + off + n); }

// rows = shared * (one random direction) + U(-1, 1): shared > 0 brings the cosines together
static void test_loss(Rng* r, int N, int E, double log_scale, float shared) {
    std::string shape = "N=" + std::to_string(N) + " E=" + std::to_string(E) + " s=" +
                        std::to_string(clip_scale((float)log_scale)) + " shared=" + std::to_string(shared);
    Vec base = random_vec(E, r), img = random_vec((size_t)N * E, r), txt = random_vec((size_t)N * E, r);
    for (size_t k = 0; k < img.size(); k++) {
        img[k] += shared * base[k % E];
        txt[k] += shared * base[k % E];
    }
    Vec ls = {(float)log_scale};
    size_t nc = clip_loss_cache_floats(N, E);
    ClipCache o = clip_cache_layout(N);
    Vec dimg0 = random_vec(img.size(), r), dtxt0 = random_vec(txt.size(), r), dls0 = random_vec(1, r);
    Vec cache(nc), dimg = dimg0, dtxt = dtxt0, dls = dls0;
    float *d_img = to_device(img), *d_txt = to_device(txt), *d_ls = to_device(ls), *d_cache = device_poisoned(nc);
    float *d_dimg = to_device(dimg), *d_dtxt = to_device(dtxt), *d_dls = to_device(dls);
    // the backward again from the CPU cache, into the same pre-fills
    float *d_cache2 = to_device(cache), *d_dimg2 = to_device(dimg), *d_dtxt2 = to_device(dtxt), *d_dls2 = to_device(dls);

    float loss = clip_loss_forward_cpu(cache.data(), img.data(), txt.data(), ls.data(), N, E);
    float loss_gpu = clip_loss_forward(true, d_cache, d_img, d_txt, d_ls, N, E);
    report(fabsf(loss_gpu - loss) <= 1e-5f * fabsf(loss) + 1e-6f, ("clip_loss_forward loss " + shape).c_str(),
           "gpu %.8g cpu %.8g", loss_gpu, loss);
    expect_close("clip_loss_forward dlogits", shape, d_cache + o.G, slice(cache, o.G, (size_t)N * N), 1e-4);
    expect_close("clip_loss_forward inverse norms", shape, d_cache + o.rn_img, slice(cache, o.rn_img, 2 * (size_t)N), 1e-6);
    expect_close("clip_loss_forward lse rows, cols", shape, d_cache + o.lse_row, slice(cache, o.lse_row, 2 * (size_t)N),
                 1e-5);
    expect_close("clip_loss_forward loss, sum G L", shape, d_cache + o.loss, slice(cache, o.loss, 2), 1e-4);

    clip_loss_backward_cpu(dimg.data(), dtxt.data(), dls.data(), cache.data(), img.data(), txt.data(), ls.data(), N, E);
    clip_loss_backward(true, d_dimg, d_dtxt, d_dls, d_cache, d_img, d_txt, d_ls, N, E);
    expect_close("clip_loss_backward dimg", shape, d_dimg, dimg, 1e-4);
    expect_close("clip_loss_backward dtxt", shape, d_dtxt, dtxt, 1e-4);
    expect_close("clip_loss_backward dlog_scale", shape, d_dls, dls, 1e-5);
    cudaCheck(cudaMemcpy(d_cache2, cache.data(), nc * sizeof(float), cudaMemcpyHostToDevice));
    clip_loss_backward(true, d_dimg2, d_dtxt2, d_dls2, d_cache2, d_img, d_txt, d_ls, N, E);
    expect_close("clip_loss_backward from the CPU cache dimg", shape, d_dimg2, dimg, 1e-5);
    expect_close("clip_loss_backward from the CPU cache dtxt", shape, d_dtxt2, dtxt, 1e-5);
    if (clip_scale_clamped(ls[0])) {  // the pre-fill must be untouched, to the bit
        Vec a = from_device(d_dls, 1), b = from_device(d_dls2, 1);
        report(a[0] == dls[0] && b[0] == dls[0], ("clip_loss_backward clamp active: dlog_scale += 0 " + shape).c_str(),
               "gpu %.9g %.9g cpu %.9g", a[0], b[0], dls[0]);
    }

    // the same bits on a second run (fixed reduction orders, no atomics): forward into the second
    // cache, backward into the pre-fills again
    float loss2 = clip_loss_forward(true, d_cache2, d_img, d_txt, d_ls, N, E);
    cudaCheck(cudaMemcpy(d_dimg2, dimg0.data(), img.size() * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d_dtxt2, dtxt0.data(), txt.size() * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d_dls2, dls0.data(), sizeof(float), cudaMemcpyHostToDevice));
    clip_loss_backward(true, d_dimg2, d_dtxt2, d_dls2, d_cache2, d_img, d_txt, d_ls, N, E);
    bool same = loss2 == loss_gpu;
    for (auto pr : {std::make_pair(d_cache, d_cache2), std::make_pair(d_dimg, d_dimg2), std::make_pair(d_dtxt, d_dtxt2),
                    std::make_pair(d_dls, d_dls2)}) {
        size_t n = pr.first == d_cache ? nc : pr.first == d_dls ? 1 : img.size();
        Vec a = from_device(pr.first, n), b = from_device(pr.second, n);
        same &= memcmp(a.data(), b.data(), n * sizeof(float)) == 0;
    }
    report(same, ("clip_loss same bits on a second GPU run " + shape).c_str(), "loss %.9g vs %.9g", loss2, loss_gpu);
    for (float* p : {d_img, d_txt, d_ls, d_cache, d_dimg, d_dtxt, d_dls, d_cache2, d_dimg2, d_dtxt2, d_dls2}) cudaFree(p);
}

static void test_logits(Rng* r, int N, int M, int E, double log_scale) {
    std::string shape = "N=" + std::to_string(N) + " M=" + std::to_string(M) + " E=" + std::to_string(E) +
                        " s=" + std::to_string(clip_scale((float)log_scale));
    Vec img = random_vec((size_t)N * E, r), txt = random_vec((size_t)M * E, r, -0.5f, 2.0f), ls = {(float)log_scale};
    Vec logits((size_t)N * M);
    float *d_img = to_device(img), *d_txt = to_device(txt), *d_ls = to_device(ls), *d_out = device_poisoned(logits.size());
    clip_logits_cpu(logits.data(), img.data(), txt.data(), ls.data(), N, M, E);
    clip_logits(true, d_out, d_img, d_txt, d_ls, N, M, E);
    expect_close("clip_logits", shape, d_out, logits, 1e-5);
    for (float* p : {d_img, d_txt, d_ls, d_out}) cudaFree(p);
}

int main() {
    Rng r;
    rng_seed(&r, 31337);
    const double s10 = log(10.0), s200 = log(200.0), init = log(1.0 / 0.07);
    test_loss(&r, 1, 13, s10, 0.0f);
    test_loss(&r, 1, 40, s200, 0.0f);
    test_loss(&r, 2, 13, s10, 0.0f);
    test_loss(&r, 7, 37, init, 1.0f);
    test_loss(&r, 33, 20, s10, 0.0f);
    test_loss(&r, 33, 20, s200, 6.0f);     // clamp active
    test_loss(&r, 64, 64, init, 2.0f);     // whole 32-tiles
    test_loss(&r, 100, 96, log(2.0), 0.0f);
    test_loss(&r, 257, 512, init, 3.0f);   // a partial tile of rows and columns, long k
    test_loss(&r, 300, 77, s200, 6.0f);
    test_loss(&r, 1024, 256, init, 2.0f);  // a CLIP-sized batch
    test_logits(&r, 1, 1, 7, init);
    test_logits(&r, 10, 3, 13, s10);
    test_logits(&r, 300, 77, 96, s200);
    test_logits(&r, 33, 1000, 512, init);
    test_logits(&r, 65, 65, 1, s10);       // E = 1: cosines +-1
    return test_summary();
}
