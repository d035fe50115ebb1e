// lora.h: low-rank adapters on a linear layer (LoRA, Hu et al. 2021).
//
//   y = x W^T (+ b)  +  s * (drop(x) A^T) B^T        A: (r, IC), B: (OC, r), s = alpha / r
//
// The base W stays frozen: it has no gradient buffer and no optimizer state
// (params.h puts frozen tensors outside grads/adam_m/adam_v), and its dW GEMM is
// skipped (linear_backward with dweight = nullptr). Only A and B learn. B starts
// at zero, so training starts exactly at the base model; A is kaiming-uniform,
// U(+-1/sqrt(IC)), as nn.Linear's default (peft's choice too).
//
// The adapter is two products through a rank-r bottleneck h:
//   down:  h  = drop(x) A^T                     (N, r)   saved for the backward
//   up:    y += s * h B^T                       (N, OC)
// backward, with dy: (N, OC):
//   up:    dB += s * dy^T h;   dh += s * dy B   (N, r)
//   down:  dA += dh^T drop(x); dx += drop'(dh A)
// The up half takes a row range of B, so an adapter on a layer whose output is
// split in two buffers (Mamba's in_proj -> x | z) runs one down and two ups.
//
// Dropout (on the adapter's input only, as peft): element i of a call with seed
// `seed` is kept iff hash(seed, i) >= p, and scaled by 1/(1-p). The mask is a pure
// function of (seed, i): the same on both backends, recomputed in the backward
// instead of stored, and reproducible on resume.
//
// Merge for inference: W' = W + s * B A (unmerge subtracts it again).
#pragma once
#include <algorithm>
#include <string>
#include <vector>
#include "checkpoint.h"
#include "common.h"
#include "params.h"

typedef struct {
    int rank = 0;              // 0: no adapters
    float alpha = 16.0f;       // scale s = alpha / rank
    float dropout = 0.0f;      // on the adapter input, training only
    std::string targets;       // comma-separated layer names (the model says which it has)
    std::string train_also;    // comma-separated tensor names trained besides the adapters
} LoraConfig;

static inline float lora_scale(const LoraConfig& c) { return c.rank > 0 ? c.alpha / (float)c.rank : 0.0f; }

// a checkpoint's record of the adapters: prefix + lora_rank, lora_alpha,
// lora_targets, train_also ("lm_" for the VLM's GPT, "" for the Mamba LM)
static void lora_config_append(ConfigKV* kv, const LoraConfig& c, const std::string& prefix) {
    char alpha[32]; snprintf(alpha, sizeof alpha, "%.9g", c.alpha);
    kv->push_back({prefix + "lora_rank", std::to_string(c.rank)});
    kv->push_back({prefix + "lora_alpha", alpha});
    kv->push_back({prefix + "lora_targets", c.targets});
    kv->push_back({prefix + "train_also", c.train_also});
}

// reads it back; a checkpoint without the keys has no adapters (rank 0)
static LoraConfig lora_config_read(const ConfigKV& kv, const std::string& prefix) {
    LoraConfig c;
    const std::string* rank = config_get(kv, prefix + "lora_rank");
    if (!rank) return c;
    c.rank = atoi(rank->c_str());
    if (const std::string* v = config_get(kv, prefix + "lora_alpha")) c.alpha = (float)atof(v->c_str());
    if (const std::string* v = config_get(kv, prefix + "lora_targets")) c.targets = *v;
    if (const std::string* v = config_get(kv, prefix + "train_also")) c.train_also = *v;
    return c;
}


// "a,b,,c" -> {"a", "b", "c"}
static std::vector<std::string> lora_split_list(const std::string& s) {
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos <= s.size()) {
        size_t comma = s.find(',', pos);
        if (comma == std::string::npos) comma = s.size();
        if (comma > pos) out.push_back(s.substr(pos, comma - pos));
        pos = comma + 1;
    }
    return out;
}

// the dropout keep factor of element i: 0 or 1/(1-p) (splitmix64 of seed and i, top 24 bits)
HOST_DEVICE float lora_keep(uint64_t seed, size_t i, float p) {
    uint64_t z = splitmix64(seed + 0x9E3779B97F4A7C15ull * (uint64_t)i);
    float u = (float)(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    return u >= p ? 1.0f / (1.0f - p) : 0.0f;
}

// ---------------------------------------------------------------------------
// CPU reference: plain loops, each output summed by one thread in a fixed order

// h = drop(x) A^T.  x: (N, IC), A: (r, IC), h: (N, r); xd: unused on the CPU (dropout applied inline)
static void lora_down_forward_cpu(floatX* h, floatX* xd, const floatX* x, const float* A, int N, int IC, int r,
                                  float dropout, uint64_t seed) {
    (void)xd;
#pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const floatX* xn = x + (size_t)n * IC;
        for (int j = 0; j < r; j++) {
            const float* a = A + (size_t)j * IC;
            float s = 0.0f;
            for (int i = 0; i < IC; i++) {
                float keep = dropout > 0 ? lora_keep(seed, (size_t)n * IC + i, dropout) : 1.0f;
                s += keep * (float)xn[i] * a[i];
            }
            h[(size_t)n * r + j] = (floatX)s;
        }
    }
}

// y += s * h B^T.  h: (N, r), B: (OC, r), y: (N, OC)
static void lora_up_forward_cpu(floatX* y, const floatX* h, const float* B, int N, int r, int OC, float scale) {
#pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            float s = 0.0f;
            for (int j = 0; j < r; j++) s += (float)h[(size_t)n * r + j] * B[(size_t)o * r + j];
            y[(size_t)n * OC + o] = (floatX)((float)y[(size_t)n * OC + o] + scale * s);
        }
}

// dh += s * dy B;  dB += s * dy^T h  (dB nullptr: skipped)
static void lora_up_backward_cpu(floatX* dh, float* dB, const floatX* dy, const floatX* h, const float* B, int N, int r,
                                 int OC, float scale) {
#pragma omp parallel for
    for (int n = 0; n < N; n++)
        for (int j = 0; j < r; j++) {
            float s = 0.0f;
            for (int o = 0; o < OC; o++) s += (float)dy[(size_t)n * OC + o] * B[(size_t)o * r + j];
            dh[(size_t)n * r + j] = (floatX)((float)dh[(size_t)n * r + j] + scale * s);
        }
    if (!dB) return;
#pragma omp parallel for
    for (int o = 0; o < OC; o++)
        for (int j = 0; j < r; j++) {
            float s = 0.0f;
            for (int n = 0; n < N; n++) s += (float)dy[(size_t)n * OC + o] * (float)h[(size_t)n * r + j];
            dB[(size_t)o * r + j] += scale * s;
        }
}

// dA += dh^T drop(x);  dx += drop'(dh A)  (either may be nullptr). xd: unused on the CPU.
static void lora_down_backward_cpu(floatX* dx, float* dA, const floatX* dh, floatX* xd, const floatX* x, const float* A,
                                   int N, int IC, int r, float dropout, uint64_t seed) {
    (void)xd;
    auto keep = [&](size_t idx) { return dropout > 0 ? lora_keep(seed, idx, dropout) : 1.0f; };
    if (dA) {
#pragma omp parallel for collapse(2)
        for (int j = 0; j < r; j++)
            for (int i = 0; i < IC; i++) {
                float s = 0.0f;
                for (int n = 0; n < N; n++) s += (float)dh[(size_t)n * r + j] * keep((size_t)n * IC + i) * (float)x[(size_t)n * IC + i];
                dA[(size_t)j * IC + i] += s;
            }
    }
    if (dx) {
#pragma omp parallel for
        for (int n = 0; n < N; n++)
            for (int i = 0; i < IC; i++) {
                float s = 0.0f;
                for (int j = 0; j < r; j++) s += (float)dh[(size_t)n * r + j] * A[(size_t)j * IC + i];
                dx[(size_t)n * IC + i] = (floatX)((float)dx[(size_t)n * IC + i] + keep((size_t)n * IC + i) * s);
            }
    }
}

// W += sign * s * B A.  W: (OC, IC); sign +1 merges, -1 unmerges
static void lora_merge_cpu(float* W, const float* A, const float* B, int OC, int IC, int r, float scale, float sign) {
#pragma omp parallel for
    for (int o = 0; o < OC; o++)
        for (int i = 0; i < IC; i++) {
            float s = 0.0f;
            for (int j = 0; j < r; j++) s += B[(size_t)o * r + j] * A[(size_t)j * IC + i];
            W[(size_t)o * IC + i] += sign * scale * s;
        }
}

// ---------------------------------------------------------------------------
// CUDA: the products are cuBLAS GEMMs (row-major (R, C) = column-major (C, R),
// so each call is written for the transposes); dropout is a separate
// elementwise pass into the scratch xd (N, IC)

#ifdef __CUDACC__
static_assert(sizeof(floatX) == sizeof(float), "lora_cuda uses cublasSgemm: floatX must be float");

// xd = x * keep      (or, accumulate: dx += xd * keep, the dropout's backward)
__global__ void lora_dropout_kernel(floatX* out, const floatX* in, size_t n, float p, uint64_t seed, bool accumulate) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = (float)in[i] * lora_keep(seed, i, p);
    out[i] = (floatX)(accumulate ? (float)out[i] + v : v);
}
static void lora_dropout_cuda(floatX* out, const floatX* in, size_t n, float p, uint64_t seed, bool accumulate) {
    lora_dropout_kernel<<<(unsigned)((n + 255) / 256), 256, 0, launch_stream()>>>(out, in, n, p, seed, accumulate);
    cudaCheckLaunch();
}

static void lora_down_forward_cuda(floatX* h, floatX* xd, const floatX* x, const float* A, int N, int IC, int r,
                                   float dropout, uint64_t seed) {
    if (N == 0) return;
    const floatX* in = x;
    if (dropout > 0) { lora_dropout_cuda(xd, x, (size_t)N * IC, dropout, seed, false); in = xd; }
    const float one = 1.0f, zero = 0.0f;
    // h^T (r x N) = A (col-major IC x r -> op T) * in^T (IC x N)
    cublasCheck(cublasSgemm(cublas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, r, N, IC, &one, A, IC, in, IC, &zero, h, r));
}

static void lora_up_forward_cuda(floatX* y, const floatX* h, const float* B, int N, int r, int OC, float scale) {
    if (N == 0) return;
    const float one = 1.0f;
    // y^T (OC x N) += s * B (col-major r x OC -> op T) * h^T (r x N)
    cublasCheck(cublasSgemm(cublas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, OC, N, r, &scale, B, r, h, r, &one, y, OC));
}

static void lora_up_backward_cuda(floatX* dh, float* dB, const floatX* dy, const floatX* h, const float* B, int N, int r,
                                  int OC, float scale) {
    if (N == 0) return;
    const float one = 1.0f;
    // dh^T (r x N) += s * B^T (col-major r x OC) * dy^T (OC x N)
    cublasCheck(cublasSgemm(cublas_handle(), CUBLAS_OP_N, CUBLAS_OP_N, r, N, OC, &scale, B, r, dy, OC, &one, dh, r));
    // dB^T (r x OC) += s * h^T (r x N) * dy (N x OC; dy col-major OC x N -> op T)
    if (dB) cublasCheck(cublasSgemm(cublas_handle(), CUBLAS_OP_N, CUBLAS_OP_T, r, OC, N, &scale, h, r, dy, OC, &one, dB, r));
}

// xd: scratch (N, IC), used only with dropout (drop(x) for dA, then dh A before the mask)
static void lora_down_backward_cuda(floatX* dx, float* dA, const floatX* dh, floatX* xd, const floatX* x, const float* A,
                                    int N, int IC, int r, float dropout, uint64_t seed) {
    if (N == 0) return;
    const float one = 1.0f, zero = 0.0f;
    if (dA) {
        const floatX* in = x;
        if (dropout > 0) { lora_dropout_cuda(xd, x, (size_t)N * IC, dropout, seed, false); in = xd; }
        // dA^T (IC x r) += in^T (IC x N) * dh (N x r; dh col-major r x N -> op T)
        cublasCheck(cublasSgemm(cublas_handle(), CUBLAS_OP_N, CUBLAS_OP_T, IC, r, N, &one, in, IC, dh, r, &one, dA, IC));
    }
    if (!dx) return;
    // (dh A)^T (IC x N) = A^T (col-major IC x r) * dh^T (r x N)
    if (dropout > 0) {
        cublasCheck(cublasSgemm(cublas_handle(), CUBLAS_OP_N, CUBLAS_OP_N, IC, N, r, &one, A, IC, dh, r, &zero, xd, IC));
        lora_dropout_cuda(dx, xd, (size_t)N * IC, dropout, seed, true);
    } else {
        cublasCheck(cublasSgemm(cublas_handle(), CUBLAS_OP_N, CUBLAS_OP_N, IC, N, r, &one, A, IC, dh, r, &one, dx, IC));
    }
}

static void lora_merge_cuda(float* W, const float* A, const float* B, int OC, int IC, int r, float scale, float sign) {
    const float one = 1.0f, alpha = sign * scale;
    // W^T (IC x OC) += alpha * A^T (col-major IC x r) * B^T (B col-major r x OC)
    cublasCheck(cublasSgemm(cublas_handle(), CUBLAS_OP_N, CUBLAS_OP_N, IC, OC, r, &alpha, A, IC, B, r, &one, W, IC));
}
#endif

// ---------------------------------------------------------------------------
// backend wrappers (the convention of common.h)

static void lora_down_forward(bool on_gpu, floatX* h, floatX* xd, const floatX* x, const float* A, int N, int IC, int r,
                              float dropout, uint64_t seed) {
    if (on_gpu) GPU_CALL(lora_down_forward_cuda(h, xd, x, A, N, IC, r, dropout, seed));
    else lora_down_forward_cpu(h, xd, x, A, N, IC, r, dropout, seed);
}
static void lora_up_forward(bool on_gpu, floatX* y, const floatX* h, const float* B, int N, int r, int OC, float scale) {
    if (on_gpu) GPU_CALL(lora_up_forward_cuda(y, h, B, N, r, OC, scale));
    else lora_up_forward_cpu(y, h, B, N, r, OC, scale);
}
static void lora_up_backward(bool on_gpu, floatX* dh, float* dB, const floatX* dy, const floatX* h, const float* B, int N,
                             int r, int OC, float scale) {
    if (on_gpu) GPU_CALL(lora_up_backward_cuda(dh, dB, dy, h, B, N, r, OC, scale));
    else lora_up_backward_cpu(dh, dB, dy, h, B, N, r, OC, scale);
}
static void lora_down_backward(bool on_gpu, floatX* dx, float* dA, const floatX* dh, floatX* xd, const floatX* x,
                               const float* A, int N, int IC, int r, float dropout, uint64_t seed) {
    if (on_gpu) GPU_CALL(lora_down_backward_cuda(dx, dA, dh, xd, x, A, N, IC, r, dropout, seed));
    else lora_down_backward_cpu(dx, dA, dh, xd, x, A, N, IC, r, dropout, seed);
}
static void lora_merge(bool on_gpu, float* W, const float* A, const float* B, int OC, int IC, int r, float scale, float sign) {
    if (on_gpu) GPU_CALL(lora_merge_cuda(W, A, B, OC, IC, r, scale, sign));
    else lora_merge_cpu(W, A, B, OC, IC, r, scale, sign);
}

// ---------------------------------------------------------------------------
// adapters inside a model: declared in its ParamStore next to the layer they
// adapt ("layers.3.out_proj" -> "layers.3.out_proj.lora_A" and ".lora_B")

typedef struct {
    int A_index = -1, B_index = -1;  // -1: this layer has no adapter
    float *A = nullptr, *B = nullptr, *dA = nullptr, *dB = nullptr;
    int in_features = 0, out_features = 0, rank = 0;
} LoraAdapter;

static inline bool lora_active(const LoraAdapter& a) { return a.A_index >= 0; }

// A and B get no weight decay: decay would pull the adapter towards B A = 0
// (the base) and shrink A, whose scale sets the adapter's learning rate
static LoraAdapter lora_declare(ParamStore* ps, const std::string& layer, int in_features, int out_features, int rank) {
    LoraAdapter a;
    a.A_index = params_add(ps, layer + ".lora_A", {rank, in_features}, /*decay=*/false);
    a.B_index = params_add(ps, layer + ".lora_B", {out_features, rank}, /*decay=*/false);
    a.in_features = in_features; a.out_features = out_features; a.rank = rank;
    return a;
}

// after params_allocate: pointer views (gradients nullptr without a gradient buffer)
static void lora_resolve(LoraAdapter* a, const ParamStore* ps) {
    if (!lora_active(*a)) return;
    a->A = param_data(ps, a->A_index); a->B = param_data(ps, a->B_index);
    a->dA = param_grad(ps, a->A_index); a->dB = param_grad(ps, a->B_index);
}

// A kaiming-uniform U(+-1/sqrt(in)), B zero: into a host copy of the store's parameters
static void lora_init(const LoraAdapter& a, const ParamStore* ps, float* host, Rng* rng) {
    if (!lora_active(a)) return;
    float bound = 1.0f / sqrtf((float)a.in_features);
    const ParamTensor& tA = ps->tensors[a.A_index];
    const ParamTensor& tB = ps->tensors[a.B_index];
    for (size_t i = 0; i < tA.numel; i++) host[tA.offset + i] = bound * (2.0f * rng_uniform(rng) - 1.0f);
    for (size_t i = 0; i < tB.numel; i++) host[tB.offset + i] = 0.0f;
}

// what applying an adapter needs besides its weights: the scale, the dropout
// (0 outside training) and its seed, and two scratch buffers of the model's:
// xd (N, in_features), used with dropout on the GPU, and dh (N, rank)
typedef struct {
    float scale, dropout;
    uint64_t seed;
    floatX* xd;
    floatX* dh;
} LoraRun;

// y += s * drop(x) A^T B^T for x: (N, in). h: (N, r), saved for the backward.
// y2: when given, the output rows [OC/2, OC) of B go there and [0, OC/2) to y
// (Mamba's in_proj writes x and z into separate buffers).
static void lora_forward(bool on_gpu, const LoraAdapter& ad, const LoraRun& run, floatX* h, const floatX* x, floatX* y,
                         floatX* y2, int N) {
    int r = ad.rank, OC = y2 ? ad.out_features / 2 : ad.out_features;
    lora_down_forward(on_gpu, h, run.xd, x, ad.A, N, ad.in_features, r, run.dropout, run.seed);
    lora_up_forward(on_gpu, y, h, ad.B, N, r, OC, run.scale);
    if (y2) lora_up_forward(on_gpu, y2, h, ad.B + (size_t)OC * r, N, r, OC, run.scale);
}

// dA, dB += ... (skipped where nullptr); dx += the adapter's input gradient. dy2: as y2 above
static void lora_backward(bool on_gpu, const LoraAdapter& ad, const LoraRun& run, const floatX* h, const floatX* x, floatX* dx,
                          const floatX* dy, const floatX* dy2, int N) {
    int r = ad.rank, OC = dy2 ? ad.out_features / 2 : ad.out_features;
    backend_memset0(on_gpu, run.dh, (size_t)N * r * sizeof(floatX));
    lora_up_backward(on_gpu, run.dh, ad.dB, dy, h, ad.B, N, r, OC, run.scale);
    if (dy2) lora_up_backward(on_gpu, run.dh, ad.dB ? ad.dB + (size_t)OC * r : nullptr, dy2, h, ad.B + (size_t)OC * r, N, r, OC, run.scale);
    lora_down_backward(on_gpu, dx, ad.dA, run.dh, run.xd, x, ad.A, N, ad.in_features, r, run.dropout, run.seed);
}

// parses a comma-separated target list against the names a model offers
// ("all": every one of all_targets); an unknown name is a clear error
static std::vector<std::string> lora_parse_targets(const std::string& targets, const std::vector<std::string>& offered,
                                                   const std::vector<std::string>& all_targets, const char* model) {
    std::vector<std::string> t = lora_split_list(targets);
    if (t.size() == 1 && t[0] == "all") t = all_targets;
    std::string names;
    for (const std::string& o : offered) names += (names.empty() ? "" : ", ") + o;
    if (t.empty()) FATAL("--lora-targets is empty: name some of %s (or all)", names.c_str());
    for (const std::string& x : t)
        if (std::find(offered.begin(), offered.end(), x) == offered.end())
            FATAL("--lora-targets: a %s layer has no '%s'; it has %s (or all)", model, x.c_str(), names.c_str());
    return t;
}

static bool lora_is_adapter(const std::string& name) {
    return name.find(".lora_A") != std::string::npos || name.find(".lora_B") != std::string::npos;
}

// does `item` name this tensor? Whole dotted components: "conv1d" matches
// "layers.0.conv1d.weight" and ".bias", "norm" matches "layers.2.norm.weight"
// but not "norm_f.weight"
static bool lora_name_matches(const std::string& tensor, const std::string& item) {
    return ("." + tensor + ".").find("." + item + ".") != std::string::npos;
}

// parameter-efficient fine-tuning: everything frozen except the adapters and
// the tensors named in train_also (each name must match some tensor)
static void lora_freeze_base(ParamStore* ps, const std::string& train_also) {
    std::vector<std::string> items = lora_split_list(train_also);
    std::vector<int> hits(items.size(), 0);
    for (ParamTensor& t : ps->tensors) {
        t.trainable = lora_is_adapter(t.name);
        for (size_t k = 0; k < items.size(); k++)
            if (lora_name_matches(t.name, items[k])) { t.trainable = true; hits[k]++; }
    }
    for (size_t k = 0; k < items.size(); k++)
        if (!hits[k]) FATAL("--train-also: no parameter is named '%s' (e.g. A_log, D, conv1d, norm, dt_proj.bias)", items[k].c_str());
}

// FNV-1a over the frozen tensors' bytes: an adapter file records its base's,
// so loading it on another base with the same shapes is caught
static uint64_t lora_base_checksum(const ParamStore* ps) {
    uint64_t h = 1469598103934665603ull;
    std::vector<float> host;
    for (const ParamTensor& t : ps->tensors) {
        if (t.trainable) continue;
        host.resize(t.numel);
        backend_copy(ps->on_gpu, host.data(), ps->params + t.offset, t.numel * sizeof(float), false);
        const unsigned char* b = (const unsigned char*)host.data();
        for (size_t i = 0; i < t.numel * sizeof(float); i++) { h ^= b[i]; h *= 1099511628211ull; }
    }
    return h;
}
