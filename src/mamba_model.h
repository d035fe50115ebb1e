// mamba_model.h: the Mamba-1 language model, one definition for both backends.
//
//   tokens (B, T) -> embedding -> n_layer x [ x = x + Mixer(RMSNorm(x)) ] -> RMSNorm
//   -> logits = x @ embedding^T (tied head) -> mean softmax cross-entropy
//
// Mixer (the Mamba block), E = expand*D, R = dt_rank, N = d_state, K = d_conv:
//   xin, z  = in_proj(xn)                       (BT, E) each
//   u       = silu(conv1d(xin))                 depthwise causal, width K
//   dt_low, Bm, Cm = x_proj(u)                  (BT, R), (BT, N), (BT, N)
//   delta   = dt_proj(dt_low)                   (BT, E), its bias goes inside the scan's softplus
//   y       = selective_scan(u, delta, A, Bm, Cm, D, z)   gated by silu(z)
//   out     = out_proj(y)                       (BT, D)
//
// Every layer is a call of a component's backend wrapper (name(on_gpu, ...)),
// so the same code runs on the CPU reference or on the GPU (m->on_gpu).
//
// The interface the trainer calls (as llm.c's gpt2_*):
//   mamba_build(m, cfg, B, T, on_gpu, with_grads)   parameters (ParamStore) + activations
//   mamba_init_params(m, seed)                      the reference Mamba's initialisation
//   mamba_forward(m, tokens, targets, B, T)         -> mean loss
//   mamba_zero_grad(m); mamba_backward(m)           gradients accumulate (+=)
//   params_adamw_step(&m->params, ...)              the optimizer, shared by every model
//   mamba_free(m)
// plus mamba_config_kv (the checkpoint's config) and the recurrent step for
// generation (mamba_step_init / mamba_step).
//
// LoRA (lora.h): mamba_build with a LoraConfig adds adapters to the chosen
// linear layers and freezes everything else (except --train-also tensors).
// Frozen matrices get no gradient and their dW GEMMs are skipped; the small
// frozen vectors whose kernels always write a gradient (norms, conv, A_log, D,
// dt bias) write into one shared, discarded "sink" of a layer's size.
#pragma once
#include <algorithm>
#include <string>
#include "common.h"
#include "checkpoint.h"
#include "params.h"
#include "profiler.h"
#include "sampler.h"
#include "activations.h"
#include "conv1d.h"
#include "cross_entropy.h"
#include "embedding.h"
#include "linear.h"
#include "lora.h"
#include "rmsnorm.h"
#include "selective_scan.h"

typedef struct {
    int vocab_size, d_model, n_layer, d_state, d_conv, expand, dt_rank, d_inner;
} MambaConfig;

// the head's logits are computed at most this many at a time while training
// (64M: 256 MiB in fp32); tests lower it to exercise the chunking
static size_t g_logits_chunk_floats = (size_t)64 << 20;

static void mamba_config_derive(MambaConfig* c) {
    c->d_inner = c->expand * c->d_model;
    if (c->dt_rank <= 0) c->dt_rank = (c->d_model + 15) / 16;  // ceil(D/16)
}

// the config as the checkpoint stores it (key=value, a fixed order)
static ConfigKV mamba_config_kv(const MambaConfig& c) {
    return {{"vocab_size", std::to_string(c.vocab_size)}, {"d_model", std::to_string(c.d_model)},
            {"n_layer", std::to_string(c.n_layer)},       {"d_state", std::to_string(c.d_state)},
            {"d_conv", std::to_string(c.d_conv)},         {"expand", std::to_string(c.expand)},
            {"dt_rank", std::to_string(c.dt_rank)}};
}

// reads a config back from a checkpoint's key=value lines (for --sample, --export-hf)
static MambaConfig mamba_config_from_kv(const ConfigKV& kv, const char* path) {
    MambaConfig c = {0, 0, 0, 0, 0, 0, 0, 0};
    int* fields[] = {&c.vocab_size, &c.d_model, &c.n_layer, &c.d_state, &c.d_conv, &c.expand, &c.dt_rank};
    config_read_ints(kv, mamba_config_kv(c), fields, path);
    mamba_config_derive(&c);
    return c;
}

// an adapter file's config: the base model's, the adapters', and a checksum of
// the frozen base tensors (lora_base_checksum) so a wrong base is caught
static ConfigKV mamba_lora_config_kv(const MambaConfig& c, const LoraConfig& lora, uint64_t base_checksum) {
    ConfigKV kv = mamba_config_kv(c);
    lora_config_append(&kv, lora, "");
    kv.push_back({"base_checksum", std::to_string(base_checksum)});
    return kv;
}

// indices of one layer's tensors in the ParamStore
typedef struct {
    int norm_w, in_proj_w, conv_w, conv_b, x_proj_w, dt_proj_w, dt_proj_b, A_log, D, out_proj_w;
} LayerIndex;

// pointers of one layer's parameters (or their gradients) inside a flat buffer
typedef struct {
    float *norm_w;      // (D)
    float *in_proj_w;   // (2E, D): rows [0,E) -> x, [E,2E) -> z
    float *conv_w;      // (E, K)
    float *conv_b;      // (E)
    float *x_proj_w;    // (R+2N, E): rows [0,R) -> dt_low, then Bm (N), then Cm (N)
    float *dt_proj_w;   // (E, R)
    float *dt_proj_b;   // (E): the scan's delta bias
    float *A_log;       // (E, N)
    float *D;           // (E)
    float *out_proj_w;  // (D, E)
} LayerParams;

// a layer's adapters (lora.h); in_proj's adapts all 2E rows ("in_proj") or only
// the x half ("in_proj_x": MambaPEFT's LoRAp(X), out_features E)
typedef struct {
    LoraAdapter in_proj, x_proj, dt_proj, out_proj;
} LayerLora;

// activations one layer saves for its backward pass
typedef struct {
    floatX* resid;   // (BT, D) layer input (residual stream)
    float* rstd;     // (BT)
    floatX* xin;     // (BT, E) conv input
    floatX* z;       // (BT, E) gate
    floatX* dt_low;  // (BT, R)
    floatX* Bm;      // (BT, N)
    floatX* Cm;      // (BT, N)
    floatX* delta;   // (BT, E) before bias and softplus
    float* hs;       // (B, n_chunks, E, N) scan states at chunk starts
    floatX* y;       // (BT, E) gated scan output
    floatX *h_in_proj, *h_x_proj, *h_dt_proj, *h_out_proj;  // (BT, r) LoRA bottlenecks (nullptr: no adapter)
} LayerActs;

// backward scratch, reused by every layer
typedef struct {
    floatX *dy, *du, *ddelta, *dz, *dxin;           // (BT, E)
    floatX *ddt_low;                                // (BT, R)
    floatX *dBm, *dCm;                              // (BT, N)
    floatX *dxn;                                    // (BT, D)
    floatX *dxdbl;                                  // (BT, R+2N) [ddt_low | dBm | dCm]
    floatX *dh_lora;                                // (BT, r) an adapter's bottleneck gradient
} LayerScratch;

typedef struct MambaModel {
    MambaConfig cfg;
    bool on_gpu;
    int B, T;  // the largest batch the activations were sized for
    ParamStore params;   // parameters, and (when training) gradients and AdamW moments
    int wte_index, norm_f_index;
    std::vector<LayerIndex> layer_index;
    float* wte;  float* norm_f_w;    // views into params.params
    float* dwte; float* dnorm_f_w;   // views into params.grads (nullptr without grads)
    std::vector<LayerParams> layers, dlayers;
    // activations (forward) and backward scratch: one buffer each, typed views
    void* acts_memory; size_t acts_bytes;
    void* scratch_memory; size_t scratch_bytes;
    size_t layer_scratch_start;  // bytes: the per-layer part of the scratch starts here
    std::vector<LayerActs> acts;
    floatX* resid_out;  // (BT, D) output of the last layer
    float* rstd_f;      // (BT)
    floatX* xf;         // (BT, D) final RMSNorm output
    // the head's logits are never all kept while training: a forward with targets
    // computes them LOGITS_CHUNK rows at a time for the loss, the backward
    // recomputes each chunk (one extra head GEMM; at the 130m shape the full
    // (BT, V) fp32 logits would be 1.6 GB)
    floatX* logits_chunk;  // (chunk_rows, V)
    int chunk_rows;
    floatX* logits;     // (BT, V) after a forward without targets (allocated on first use), else nullptr
    float* losses;      // (BT)
    floatX* xdbl;       // (BT, R+2N) x_proj's output before it is split into dt_low | Bm | Cm
    // cheap to recompute, so not kept per layer: the forward writes them here and
    // the backward of each layer recomputes them (one RMSNorm, one conv1d+SiLU)
    floatX* xn;         // (BT, D) RMSNorm(resid)
    floatX* u;          // (BT, E) silu(conv1d(xin)): the scan's input
    floatX* dresid;     // (BT, D) gradient of the residual stream
    floatX* dxf;        // (BT, D)
    LayerScratch scratch;
    int* tokens; int* targets;   // (BT) on the backend
    std::vector<float> host_losses;  // (BT)
    int cur_B, cur_T;            // shape of the last forward
    bool have_targets;
    // LoRA
    LoraConfig lora;
    float lora_scale;
    std::vector<LayerLora> lora_layers;
    bool lora_merged;            // adapters folded into the base weights: the forward skips them
    bool training;               // adapter dropout on (mamba_set_training)
    uint64_t dropout_seed;
    floatX* lora_xd;             // (BT, max(D, E, R)) dropout scratch (only with dropout)
    float* frozen_grad_sink;     // discarded gradients of frozen vectors (see the top)
} MambaModel;

// ---------------------------------------------------------------------------
// parameters: declared by name; the store lays them out (decayed matrices
// first) and the model keeps the indices

static void mamba_declare_params(MambaModel* m) {
    const MambaConfig& c = m->cfg;
    int D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank, V = c.vocab_size;
    ParamStore* ps = &m->params;
    const bool decay = true, no_decay = false;  // AdamW decay on matrices only
    m->wte_index = params_add(ps, "embedding.weight", {V, D}, decay);
    m->layer_index.resize(c.n_layer);
    for (int l = 0; l < c.n_layer; l++) {
        std::string p = "layers." + std::to_string(l) + ".";
        LayerIndex& li = m->layer_index[l];
        li.norm_w = params_add(ps, p + "norm.weight", {D}, no_decay);
        li.in_proj_w = params_add(ps, p + "in_proj.weight", {2 * E, D}, decay);
        li.conv_w = params_add(ps, p + "conv1d.weight", {E, K}, decay);
        li.conv_b = params_add(ps, p + "conv1d.bias", {E}, no_decay);
        li.x_proj_w = params_add(ps, p + "x_proj.weight", {R + 2 * N, E}, decay);
        li.dt_proj_w = params_add(ps, p + "dt_proj.weight", {E, R}, decay);
        li.dt_proj_b = params_add(ps, p + "dt_proj.bias", {E}, no_decay);
        li.A_log = params_add(ps, p + "A_log", {E, N}, no_decay);
        li.D = params_add(ps, p + "D", {E}, no_decay);
        li.out_proj_w = params_add(ps, p + "out_proj.weight", {D, E}, decay);
    }
    m->norm_f_index = params_add(ps, "norm_f.weight", {D}, no_decay);
    // LoRA adapters after the base tensors, then freeze the base
    const LoraConfig& lc = m->lora;
    m->lora_layers.assign(c.n_layer, LayerLora{});
    if (lc.rank > 0) {
        std::vector<std::string> targets = lora_parse_targets(lc.targets, {"in_proj", "in_proj_x", "x_proj", "dt_proj", "out_proj"},
                                                              {"in_proj", "x_proj", "dt_proj", "out_proj"}, "Mamba");
        auto wants = [&](const char* name) { return std::find(targets.begin(), targets.end(), name) != targets.end(); };
        bool has_in = wants("in_proj"), has_in_x = wants("in_proj_x");
        if (has_in && has_in_x) FATAL("--lora-targets: in_proj (all 2E rows) and in_proj_x (the x half) exclude each other");
        int r = lc.rank;
        for (int l = 0; l < c.n_layer; l++) {
            std::string p = "layers." + std::to_string(l) + ".";
            LayerLora& ll = m->lora_layers[l];
            if (has_in) ll.in_proj = lora_declare(ps, p + "in_proj", D, 2 * E, r);
            if (has_in_x) ll.in_proj = lora_declare(ps, p + "in_proj_x", D, E, r);
            if (wants("x_proj")) ll.x_proj = lora_declare(ps, p + "x_proj", E, R + 2 * N, r);
            if (wants("dt_proj")) ll.dt_proj = lora_declare(ps, p + "dt_proj", R, E, r);
            if (wants("out_proj")) ll.out_proj = lora_declare(ps, p + "out_proj", E, D, r);
        }
    }
    if (lc.rank > 0 || !lc.train_also.empty()) lora_freeze_base(ps, lc.train_also);
}

// the tensors an adapter file holds: the trainable ones (adapters, --train-also)
static bool mamba_is_peft(const MambaModel* m) { return m->lora.rank > 0 || !m->lora.train_also.empty(); }

// one layer's views into a buffer laid out like params.params (base) — the
// parameters or a host copy
static LayerParams layer_views(const ParamStore* ps, float* base, const LayerIndex& li) {
    auto at = [&](int i) { return base + ps->tensors[i].offset; };
    return {at(li.norm_w), at(li.in_proj_w), at(li.conv_w), at(li.conv_b), at(li.x_proj_w),
            at(li.dt_proj_w), at(li.dt_proj_b), at(li.A_log), at(li.D), at(li.out_proj_w)};
}

// one layer's gradient views: nullptr for a frozen matrix (its dW GEMM is
// skipped), the shared sink for a frozen vector (its kernel writes a gradient anyway)
static LayerParams layer_grad_views(const ParamStore* ps, const LayerIndex& li, float* sink) {
    auto g = [&](int i, bool sink_if_frozen) { float* p = param_grad(ps, i); return p ? p : (sink_if_frozen ? sink : nullptr); };
    return {g(li.norm_w, true), g(li.in_proj_w, false), g(li.conv_w, true), g(li.conv_b, true), g(li.x_proj_w, false),
            g(li.dt_proj_w, false), g(li.dt_proj_b, true), g(li.A_log, true), g(li.D, true), g(li.out_proj_w, false)};
}

// floats the sink needs: the largest frozen vector of a layer (conv weight, A_log, ...)
static size_t mamba_sink_floats(const MambaConfig& c) {
    size_t E = c.d_inner;
    return std::max({(size_t)c.d_model, E * c.d_conv, E * c.d_state, E});
}

// activations for (m->B, m->T), carved from one arena (see params.h)
static void mamba_layout_acts(MambaModel* m, Arena* a) {
    const MambaConfig& c = m->cfg;
    size_t BT = (size_t)m->B * m->T, D = c.d_model, E = c.d_inner, N = c.d_state, R = c.dt_rank;
    size_t hs = (size_t)m->B * scan_n_chunks(m->T) * E * N;
    for (int l = 0; l < c.n_layer; l++) {
        LayerActs& x = m->acts[l];
        x.resid = arena_take<floatX>(a, BT * D);  x.rstd = arena_take<float>(a, BT);
        x.xin = arena_take<floatX>(a, BT * E);    x.z = arena_take<floatX>(a, BT * E);
        x.dt_low = arena_take<floatX>(a, BT * R); x.Bm = arena_take<floatX>(a, BT * N);
        x.Cm = arena_take<floatX>(a, BT * N);     x.delta = arena_take<floatX>(a, BT * E);
        x.hs = arena_take<float>(a, hs);          x.y = arena_take<floatX>(a, BT * E);
        const LayerLora& ll = m->lora_layers[l];
        size_t r = m->lora.rank;
        x.h_in_proj = lora_active(ll.in_proj) ? arena_take<floatX>(a, BT * r) : nullptr;
        x.h_x_proj = lora_active(ll.x_proj) ? arena_take<floatX>(a, BT * r) : nullptr;
        x.h_dt_proj = lora_active(ll.dt_proj) ? arena_take<floatX>(a, BT * r) : nullptr;
        x.h_out_proj = lora_active(ll.out_proj) ? arena_take<floatX>(a, BT * r) : nullptr;
    }
    m->lora_xd = (m->lora.rank > 0 && m->lora.dropout > 0) ? arena_take<floatX>(a, BT * std::max({D, E, R})) : nullptr;
    m->resid_out = arena_take<floatX>(a, BT * D); m->rstd_f = arena_take<float>(a, BT);
    m->xf = arena_take<floatX>(a, BT * D);
    m->logits_chunk = arena_take<floatX>(a, (size_t)m->chunk_rows * c.vocab_size);
    m->losses = arena_take<float>(a, BT);         m->xdbl = arena_take<floatX>(a, BT * (R + 2 * N));
    m->xn = arena_take<floatX>(a, BT * D);        m->u = arena_take<floatX>(a, BT * E);
}

// backward scratch shared by all layers (zeroed before each layer's backward),
// and the residual stream's gradient, which carries from layer to layer
static void mamba_layout_scratch(MambaModel* m, Arena* a) {
    const MambaConfig& c = m->cfg;
    size_t BT = (size_t)m->B * m->T, D = c.d_model, E = c.d_inner, N = c.d_state, R = c.dt_rank;
    LayerScratch& s = m->scratch;
    m->dresid = arena_take<floatX>(a, BT * D);
    m->dxf = arena_take<floatX>(a, BT * D);
    m->layer_scratch_start = a->used;
    s.dy = arena_take<floatX>(a, BT * E);      s.du = arena_take<floatX>(a, BT * E);
    s.ddelta = arena_take<floatX>(a, BT * E);  s.dz = arena_take<floatX>(a, BT * E);
    s.dxin = arena_take<floatX>(a, BT * E);    s.ddt_low = arena_take<floatX>(a, BT * R);
    s.dBm = arena_take<floatX>(a, BT * N);     s.dCm = arena_take<floatX>(a, BT * N);
    s.dxn = arena_take<floatX>(a, BT * D);     s.dxdbl = arena_take<floatX>(a, BT * (R + 2 * N));
    s.dh_lora = m->lora.rank > 0 ? arena_take<floatX>(a, BT * m->lora.rank) : nullptr;
}

// with_grads false: inference only (no gradients, no AdamW moments, no backward scratch).
// lora: adapters and the frozen base (rank 0 and no train_also: plain training)
static void mamba_build(MambaModel* m, MambaConfig cfg, int B, int T, bool on_gpu, bool with_grads = true,
                        const LoraConfig& lora = LoraConfig()) {
    mamba_config_derive(&cfg);
    if (cfg.vocab_size < 2 || cfg.d_model < 1 || cfg.n_layer < 1 || cfg.d_state < 1 || cfg.d_conv < 1 || cfg.expand < 1)
        FATAL("invalid model config");
    m->cfg = cfg; m->on_gpu = on_gpu; m->B = B; m->T = T;
    if (lora.rank < 0 || (lora.rank > 0 && !(lora.alpha > 0)) || lora.dropout < 0 || lora.dropout >= 1)
        FATAL("LoRA needs rank >= 0, alpha > 0 and dropout in [0, 1)");
    m->lora = lora; m->lora_scale = lora_scale(lora);
    m->lora_merged = false; m->training = false; m->dropout_seed = 0;
    params_init(&m->params);
    mamba_declare_params(m);
    params_allocate(&m->params, on_gpu, with_grads);
    ParamStore* ps = &m->params;
    m->wte = param_data(ps, m->wte_index);   m->dwte = param_grad(ps, m->wte_index);
    m->norm_f_w = param_data(ps, m->norm_f_index); m->dnorm_f_w = param_grad(ps, m->norm_f_index);
    m->frozen_grad_sink = with_grads ? (float*)backend_malloc(on_gpu, mamba_sink_floats(cfg) * sizeof(float)) : nullptr;
    if (with_grads && !m->dnorm_f_w) m->dnorm_f_w = m->frozen_grad_sink;
    m->layers.resize(cfg.n_layer); m->dlayers.resize(cfg.n_layer);
    for (int l = 0; l < cfg.n_layer; l++) {
        m->layers[l] = layer_views(ps, ps->params, m->layer_index[l]);
        m->dlayers[l] = with_grads ? layer_grad_views(ps, m->layer_index[l], m->frozen_grad_sink) : LayerParams{};
        LayerLora& ll = m->lora_layers[l];
        for (LoraAdapter* a : {&ll.in_proj, &ll.x_proj, &ll.dt_proj, &ll.out_proj}) lora_resolve(a, ps);
    }
    m->acts.resize(cfg.n_layer);
    // chunks of at most g_logits_chunk_floats logits: all BT rows at once for small vocabularies
    m->chunk_rows = (int)std::max<size_t>(1, std::min<size_t>((size_t)B * T, g_logits_chunk_floats / cfg.vocab_size));
    m->logits = nullptr;
    Arena count = {nullptr, 0};
    mamba_layout_acts(m, &count);
    m->acts_bytes = count.used;
    m->acts_memory = backend_malloc(on_gpu, m->acts_bytes);
    Arena acts = {(char*)m->acts_memory, 0};
    mamba_layout_acts(m, &acts);
    m->scratch_bytes = 0; m->scratch_memory = nullptr;
    if (with_grads) {
        count = {nullptr, 0};
        mamba_layout_scratch(m, &count);
        m->scratch_bytes = count.used;
        m->scratch_memory = backend_malloc(on_gpu, m->scratch_bytes);
        Arena scratch = {(char*)m->scratch_memory, 0};
        mamba_layout_scratch(m, &scratch);
    }
    size_t BT = (size_t)B * T;
    m->tokens = (int*)backend_malloc(on_gpu, BT * sizeof(int));
    m->targets = (int*)backend_malloc(on_gpu, BT * sizeof(int));
    m->host_losses.assign(BT, 0.0f);
    m->cur_B = m->cur_T = 0; m->have_targets = false;
}

static void mamba_free(MambaModel* m) {
    bool on_gpu = m->on_gpu;
    params_free(&m->params);
    backend_free(on_gpu, m->acts_memory);
    if (m->logits) backend_free(on_gpu, m->logits);
    if (m->scratch_memory) backend_free(on_gpu, m->scratch_memory);
    if (m->frozen_grad_sink) backend_free(on_gpu, m->frozen_grad_sink);
    backend_free(on_gpu, m->tokens); backend_free(on_gpu, m->targets);
}

// ---------------------------------------------------------------------------
// initialisation, as the reference Mamba (computed on the host, then copied)

static void mamba_init_params(MambaModel* m, uint64_t seed) {
    const MambaConfig& c = m->cfg;
    int D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank;
    const ParamStore* ps = &m->params;
    std::vector<float> h(ps->num_params, 0.0f);
    Rng rng; rng_seed(&rng, seed);
    auto T = [&](int index) { return h.data() + ps->tensors[index].offset; };
    auto uniform = [&](float* p, size_t n, float bound) { for (size_t i = 0; i < n; i++) p[i] = bound * (2.0f * rng_uniform(&rng) - 1.0f); };
    float* wte = T(m->wte_index);
    for (size_t i = 0; i < (size_t)c.vocab_size * D; i++) wte[i] = 0.02f * rng_normal(&rng);
    for (int l = 0; l < c.n_layer; l++) {
        const LayerIndex& li = m->layer_index[l];
        // nn.Linear / nn.Conv1d defaults: U(+-1/sqrt(fan_in)), the conv's bias too
        uniform(T(li.in_proj_w), (size_t)2 * E * D, 1.0f / sqrtf((float)D));
        uniform(T(li.conv_w), (size_t)E * K, 1.0f / sqrtf((float)K));
        uniform(T(li.conv_b), (size_t)E, 1.0f / sqrtf((float)K));
        uniform(T(li.x_proj_w), (size_t)(R + 2 * N) * E, 1.0f / sqrtf((float)E));
        // dt_proj: the reference's "constant" init, U(+-dt_rank^-0.5)
        uniform(T(li.dt_proj_w), (size_t)E * R, 1.0f / sqrtf((float)R));
        // residual projection scaled down by sqrt(n_layer) so the stream's variance stays put
        uniform(T(li.out_proj_w), (size_t)D * E, 1.0f / sqrtf((float)E) / sqrtf((float)c.n_layer));
        float* norm = T(li.norm_w);
        for (int i = 0; i < D; i++) norm[i] = 1.0f;
        // dt bias: softplus^{-1}(dt) with dt log-uniform in [1e-3, 0.1], floor 1e-4
        float* dtb = T(li.dt_proj_b);
        for (int e = 0; e < E; e++) {
            float dt = expf(logf(1e-3f) + rng_uniform(&rng) * (logf(0.1f) - logf(1e-3f)));
            dt = fmaxf(dt, 1e-4f);
            dtb[e] = dt + logf(-expm1f(-dt));  // inverse softplus
        }
        // S4D-real: A = -(1..N) per channel
        float* A_log = T(li.A_log);
        for (int e = 0; e < E; e++)
            for (int n = 0; n < N; n++) A_log[e * N + n] = logf((float)(n + 1));
        float* Dp = T(li.D);
        for (int e = 0; e < E; e++) Dp[e] = 1.0f;
    }
    float* nf = T(m->norm_f_index);
    for (int i = 0; i < D; i++) nf[i] = 1.0f;
    for (const LayerLora& ll : m->lora_layers)
        for (const LoraAdapter* a : {&ll.in_proj, &ll.x_proj, &ll.dt_proj, &ll.out_proj}) lora_init(*a, ps, h.data(), &rng);
    backend_copy(m->on_gpu, ps->params, h.data(), ps->num_params * sizeof(float), true);
}

// ---------------------------------------------------------------------------
// LoRA: an adapter's forward and backward inside a layer (lora.h), merging

// dropout is on between mamba_set_training(m, true, seed) and (m, false, ...);
// seed: a new one per step (the trainer passes seed + step, so a resume repeats it)
static void mamba_set_training(MambaModel* m, bool training, uint64_t seed) { m->training = training; m->dropout_seed = seed; }

// adapter `which` (0 in_proj, 1 x_proj, 2 dt_proj, 3 out_proj) of layer l: its own dropout mask
static LoraRun mamba_lora_run(const MambaModel* m, int l, int which) {
    return {m->lora_scale, m->training ? m->lora.dropout : 0.0f, m->dropout_seed * 0x100000001B3ull + (uint64_t)l * 4 + which,
            m->lora_xd, m->scratch.dh_lora};
}

// W += sign * s * B A for every adapter, in a buffer laid out like params.params
// (the parameters themselves, or a host copy for generation)
static void mamba_lora_fold(const MambaModel* m, float* base, bool on_gpu, float sign) {
    const ParamStore* ps = &m->params;
    auto at = [&](int i) { return base + ps->tensors[i].offset; };
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const LayerLora& ll = m->lora_layers[l];
        const LayerIndex& li = m->layer_index[l];
        const std::pair<const LoraAdapter*, int> pairs[] = {
            {&ll.in_proj, li.in_proj_w}, {&ll.x_proj, li.x_proj_w}, {&ll.dt_proj, li.dt_proj_w}, {&ll.out_proj, li.out_proj_w}};
        for (auto& [ad, w] : pairs)
            if (lora_active(*ad))  // in_proj_x: B has E rows, the x half of W comes first
                lora_merge(on_gpu, at(w), at(ad->A_index), at(ad->B_index), ad->out_features, ad->in_features, ad->rank,
                           m->lora_scale, sign);
    }
}

// inference: fold the adapters into the base weights (the forward then skips
// them), or take them out again. Unmerging restores W up to float rounding.
static void mamba_lora_merge(MambaModel* m) {
    if (m->lora.rank == 0 || m->lora_merged) return;
    mamba_lora_fold(m, m->params.params, m->on_gpu, +1.0f);
    m->lora_merged = true;
}
static void mamba_lora_unmerge(MambaModel* m) {
    if (!m->lora_merged) return;
    mamba_lora_fold(m, m->params.params, m->on_gpu, -1.0f);
    m->lora_merged = false;
}

// ---------------------------------------------------------------------------
// checkpoints with a frozen base: the base is a full "mamba" checkpoint, the
// adapter file ("mamba-lora") holds only the trainable tensors (adapters and
// --train-also ones) with their AdamW moments

static const char* const MAMBA_ADAPTER_KIND = "mamba-lora";

// every tensor but the adapters, from a full checkpoint (no optimizer state)
static void mamba_load_base(MambaModel* m, const char* path) {
    CheckpointInfo info = checkpoint_read_info(path);
    if (info.kind == MAMBA_ADAPTER_KIND)
        FATAL("%s is an adapter file; --base takes the full checkpoint the adapter was trained on", path);
    checkpoint_load(path, "mamba", mamba_config_kv(m->cfg), &m->params, false,
                    [](const ParamTensor& t) { return !lora_is_adapter(t.name); });
}

static void mamba_save_adapter(const MambaModel* m, const char* path, const TrainState& st) {
    checkpoint_save(path, MAMBA_ADAPTER_KIND, mamba_lora_config_kv(m->cfg, m->lora, lora_base_checksum(&m->params)), &m->params,
                    st, true, [](const ParamTensor& t) { return t.trainable; });
}

// after mamba_load_base: the trainable tensors (and their moments when
// with_optimizer); a file trained on another base, or with other flags, is refused
static TrainState mamba_load_adapter(MambaModel* m, const char* path, bool with_optimizer) {
    CheckpointInfo info = checkpoint_read_info(path);
    if (info.kind != MAMBA_ADAPTER_KIND)
        FATAL("%s holds a full %s model, not an adapter (%s): pass it as --base, or the adapter file as --adapter/--resume",
              path, info.kind.c_str(), MAMBA_ADAPTER_KIND);
    uint64_t ours = lora_base_checksum(&m->params);
    const std::string* theirs = config_get(info.config, "base_checksum");
    if (theirs && *theirs != std::to_string(ours))
        FATAL("adapter %s was trained on another base (its base checksum %s, this --base's %llu): pass the base it was trained on",
              path, theirs->c_str(), (unsigned long long)ours);
    return checkpoint_load(path, MAMBA_ADAPTER_KIND, mamba_lora_config_kv(m->cfg, m->lora, ours), &m->params, with_optimizer,
                           [](const ParamTensor& t) { return t.trainable; });
}

// ---------------------------------------------------------------------------
// forward

static void mamba_layer_forward(MambaModel* m, int l, floatX* layer_out, int B, int T) {
    const MambaConfig& c = m->cfg;
    int D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank, BT = B * T;
    bool on_gpu = m->on_gpu;
    LayerParams& p = m->layers[l];
    LayerActs& a = m->acts[l];
    const LayerLora& ll = m->lora_layers[l];
    bool lora = m->lora.rank > 0 && !m->lora_merged;
    PROF(on_gpu, "rmsnorm", rmsnorm_forward(on_gpu, m->xn, a.rstd, a.resid, p.norm_w, BT, D));
    PROF(on_gpu, "in_proj", linear_forward(on_gpu, a.xin, m->xn, p.in_proj_w, (const float*)nullptr, BT, D, E);
                       linear_forward(on_gpu, a.z, m->xn, p.in_proj_w + (size_t)E * D, (const float*)nullptr, BT, D, E));
    if (lora && lora_active(ll.in_proj))
        PROF(on_gpu, "lora", lora_forward(on_gpu, ll.in_proj, mamba_lora_run(m, l, 0), a.h_in_proj, m->xn, a.xin,
                                          ll.in_proj.out_features == 2 * E ? a.z : nullptr, BT));
    PROF(on_gpu, "conv1d+silu", conv1d_silu_forward(on_gpu, m->u, a.xin, p.conv_w, p.conv_b, B, T, E, K));
    // one GEMM for all three projections (three skinny ones cost ~3x), then split
    PROF(on_gpu, "x_proj", linear_forward(on_gpu, m->xdbl, m->u, p.x_proj_w, (const float*)nullptr, BT, E, R + 2 * N));
    if (lora && lora_active(ll.x_proj))
        PROF(on_gpu, "lora", lora_forward(on_gpu, ll.x_proj, mamba_lora_run(m, l, 1), a.h_x_proj, m->u, m->xdbl, nullptr, BT));
    PROF(on_gpu, "x_proj", split_columns(on_gpu, a.dt_low, a.Bm, a.Cm, m->xdbl, BT, R, N, N));
    PROF(on_gpu, "dt_proj", linear_forward(on_gpu, a.delta, a.dt_low, p.dt_proj_w, (const float*)nullptr, BT, R, E));
    if (lora && lora_active(ll.dt_proj))
        PROF(on_gpu, "lora", lora_forward(on_gpu, ll.dt_proj, mamba_lora_run(m, l, 2), a.h_dt_proj, a.dt_low, a.delta, nullptr, BT));
    PROF(on_gpu, "scan", selective_scan_forward(on_gpu, a.y, a.hs, m->u, a.delta, p.A_log, a.Bm, a.Cm, p.D, a.z,
                             p.dt_proj_b, B, T, E, N));
    PROF(on_gpu, "out_proj", linear_forward(on_gpu, layer_out, a.y, p.out_proj_w, (const float*)nullptr, BT, E, D));
    if (lora && lora_active(ll.out_proj))
        PROF(on_gpu, "lora", lora_forward(on_gpu, ll.out_proj, mamba_lora_run(m, l, 3), a.h_out_proj, a.y, layer_out, nullptr, BT));
    PROF(on_gpu, "out_proj", add_inplace(on_gpu, layer_out, a.resid, (size_t)BT * D));
}

// tokens/targets: host arrays (B*T). Returns the mean loss (0 without targets).
// Without targets m->logits holds the (B*T, V) logits afterwards.
static float mamba_forward(MambaModel* m, const int* tokens, const int* targets, int B, int T) {
    const MambaConfig& c = m->cfg;
    if (B > m->B || T > m->T || B < 1 || T < 1) FATAL("forward shape (%d, %d) exceeds the built (%d, %d)", B, T, m->B, m->T);
    int BT = B * T, D = c.d_model, V = c.vocab_size;
    bool on_gpu = m->on_gpu;
    for (int i = 0; i < BT; i++)
        if (tokens[i] < 0 || tokens[i] >= V || (targets && (targets[i] < 0 || targets[i] >= V)))
            FATAL("token out of range [0, %d) at position %d", V, i);
    backend_copy(on_gpu, m->tokens, tokens, BT * sizeof(int), true);
    m->cur_B = B; m->cur_T = T; m->have_targets = targets != nullptr;
    PROF(on_gpu, "embedding", embedding_forward(on_gpu, m->acts[0].resid, m->tokens, m->wte, BT, D));
    for (int l = 0; l < c.n_layer; l++) {
        floatX* out = (l + 1 < c.n_layer) ? m->acts[l + 1].resid : m->resid_out;
        mamba_layer_forward(m, l, out, B, T);
    }
    PROF(on_gpu, "rmsnorm", rmsnorm_forward(on_gpu, m->xf, m->rstd_f, m->resid_out, m->norm_f_w, BT, D));
    if (!targets) {
        if (!m->logits) m->logits = (floatX*)backend_malloc(on_gpu, (size_t)m->B * m->T * V * sizeof(floatX));
        PROF(on_gpu, "lm_head", linear_forward(on_gpu, m->logits, m->xf, m->wte, (const float*)nullptr, BT, D, V));
        return 0.0f;
    }
    backend_copy(on_gpu, m->targets, targets, BT * sizeof(int), true);
    for (int r0 = 0; r0 < BT; r0 += m->chunk_rows) {  // losses only: the backward recomputes the chunk
        int rows = std::min(m->chunk_rows, BT - r0);
        PROF(on_gpu, "lm_head", linear_forward(on_gpu, m->logits_chunk, m->xf + (size_t)r0 * D, m->wte, (const float*)nullptr, rows, D, V));
        PROF(on_gpu, "cross_entropy", cross_entropy(on_gpu, m->losses + r0, m->logits_chunk, m->targets + r0, rows, V, 1.0f / BT, false));
    }
    backend_copy(on_gpu, m->host_losses.data(), m->losses, BT * sizeof(float), false);
    double sum = 0;
    for (int i = 0; i < BT; i++) sum += m->host_losses[i];
    return (float)(sum / BT);
}

// ---------------------------------------------------------------------------
// backward: every gradient accumulates (+=); call mamba_zero_grad first

static void mamba_zero_grad(MambaModel* m) { params_zero_grad(&m->params); }

static void mamba_layer_backward(MambaModel* m, int l, int B, int T) {
    const MambaConfig& c = m->cfg;
    int D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank, BT = B * T;
    bool on_gpu = m->on_gpu;
    LayerParams& p = m->layers[l];
    LayerParams& dp = m->dlayers[l];
    LayerActs& a = m->acts[l];
    LayerScratch& s = m->scratch;
    const LayerLora& ll = m->lora_layers[l];
    bool lora = m->lora.rank > 0;  // (a merged model is for inference: mamba_backward refuses it)
    float* din_proj_z = dp.in_proj_w ? dp.in_proj_w + (size_t)E * D : nullptr;
    backend_memset0(on_gpu, (char*)m->scratch_memory + m->layer_scratch_start, m->scratch_bytes - m->layer_scratch_start);
    // recompute what the forward did not keep (bit-identical to the forward's values)
    PROF(on_gpu, "recompute", rmsnorm_forward(on_gpu, m->xn, a.rstd, a.resid, p.norm_w, BT, D);
                              conv1d_silu_forward(on_gpu, m->u, a.xin, p.conv_w, p.conv_b, B, T, E, K));
    // m->dresid holds dloss/d(layer output); the residual branch passes it through unchanged
    PROF(on_gpu, "out_proj", linear_backward(on_gpu, s.dy, dp.out_proj_w, (float*)nullptr, m->dresid, a.y, p.out_proj_w, BT, E, D));
    if (lora && lora_active(ll.out_proj))
        PROF(on_gpu, "lora", lora_backward(on_gpu, ll.out_proj, mamba_lora_run(m, l, 3), a.h_out_proj, a.y, s.dy, m->dresid, nullptr, BT));
    PROF(on_gpu, "scan", selective_scan_backward(on_gpu, s.du, s.ddelta, dp.A_log, s.dBm, s.dCm, dp.D, s.dz, dp.dt_proj_b,
                             s.dy, m->u, a.delta, p.A_log, a.Bm, a.Cm, p.D, a.z, p.dt_proj_b, a.hs, B, T, E, N));
    PROF(on_gpu, "dt_proj", linear_backward(on_gpu, s.ddt_low, dp.dt_proj_w, (float*)nullptr, s.ddelta, a.dt_low, p.dt_proj_w, BT, R, E));
    if (lora && lora_active(ll.dt_proj))
        PROF(on_gpu, "lora", lora_backward(on_gpu, ll.dt_proj, mamba_lora_run(m, l, 2), a.h_dt_proj, a.dt_low, s.ddt_low, s.ddelta, nullptr, BT));
    PROF(on_gpu, "x_proj", concat_columns(on_gpu, s.dxdbl, s.ddt_low, s.dBm, s.dCm, BT, R, N, N);
                      linear_backward(on_gpu, s.du, dp.x_proj_w, (float*)nullptr, s.dxdbl, m->u, p.x_proj_w, BT, E, R + 2 * N));
    if (lora && lora_active(ll.x_proj))
        PROF(on_gpu, "lora", lora_backward(on_gpu, ll.x_proj, mamba_lora_run(m, l, 1), a.h_x_proj, m->u, s.du, s.dxdbl, nullptr, BT));
    PROF(on_gpu, "conv1d+silu", conv1d_silu_backward(on_gpu, s.dxin, dp.conv_w, dp.conv_b, s.du, a.xin, p.conv_w, p.conv_b, B, T, E, K));
    PROF(on_gpu, "in_proj", linear_backward(on_gpu, s.dxn, dp.in_proj_w, (float*)nullptr, s.dxin, m->xn, p.in_proj_w, BT, D, E);
                       linear_backward(on_gpu, s.dxn, din_proj_z, (float*)nullptr, s.dz, m->xn, p.in_proj_w + (size_t)E * D, BT, D, E));
    if (lora && lora_active(ll.in_proj))
        PROF(on_gpu, "lora", lora_backward(on_gpu, ll.in_proj, mamba_lora_run(m, l, 0), a.h_in_proj, m->xn, s.dxn, s.dxin,
                                           ll.in_proj.out_features == 2 * E ? s.dz : nullptr, BT));
    // dresid += d(norm branch): dresid now holds dloss/d(layer input)
    PROF(on_gpu, "rmsnorm", rmsnorm_backward(on_gpu, m->dresid, dp.norm_w, s.dxn, a.resid, p.norm_w, a.rstd, BT, D));
}

static void mamba_backward(MambaModel* m) {
    const MambaConfig& c = m->cfg;
    if (!m->have_targets) FATAL("mamba_backward needs a forward pass with targets");
    if (!m->params.with_grads) FATAL("mamba_backward: the model was built for inference (no gradients)");
    if (m->lora_merged) FATAL("mamba_backward: the adapters are merged into the base (unmerge to train)");
    int B = m->cur_B, T = m->cur_T, BT = B * T, D = c.d_model, V = c.vocab_size;
    bool on_gpu = m->on_gpu;
    backend_memset0(on_gpu, m->dresid, (size_t)BT * D * sizeof(floatX));
    backend_memset0(on_gpu, m->dxf, (size_t)BT * D * sizeof(floatX));
    // the head, chunk by chunk: logits again, dloss/dlogits in place (the fused
    // cross-entropy), then dxf += dlogits wte and dwte += dlogits^T xf
    for (int r0 = 0; r0 < BT; r0 += m->chunk_rows) {
        int rows = std::min(m->chunk_rows, BT - r0);
        const floatX* xf = m->xf + (size_t)r0 * D;
        PROF(on_gpu, "lm_head", linear_forward(on_gpu, m->logits_chunk, xf, m->wte, (const float*)nullptr, rows, D, V));
        PROF(on_gpu, "cross_entropy", cross_entropy(on_gpu, m->losses + r0, m->logits_chunk, m->targets + r0, rows, V, 1.0f / BT, true));
        PROF(on_gpu, "lm_head", linear_backward(on_gpu, m->dxf + (size_t)r0 * D, m->dwte, (float*)nullptr, m->logits_chunk, xf, m->wte, rows, D, V));
    }
    PROF(on_gpu, "rmsnorm", rmsnorm_backward(on_gpu, m->dresid, m->dnorm_f_w, m->dxf, m->resid_out, m->norm_f_w, m->rstd_f, BT, D));
    for (int l = c.n_layer - 1; l >= 0; l--) mamba_layer_backward(m, l, B, T);
    PROF(on_gpu, "embedding", embedding_backward(on_gpu, m->dwte, m->dresid, m->tokens, BT, D));
}

// ---------------------------------------------------------------------------
// recurrent generation (CPU reference): constant memory per token, the conv
// keeps its last K-1 inputs and the scan its (E, N) state per layer

typedef struct {
    const MambaModel* m;
    std::vector<LayerParams> layers;          // views into the host copy, resolved once
    const float* wte; const float* norm_f_w;
    std::vector<float> conv_state, ssm_state;  // (n_layer, E, K-1), (n_layer, E, N)
    std::vector<float> x, xn, xz, u, xdbl, delta, y, out, xf;
} MambaStepState;

// host_params: a host copy of m->params.params (or the params themselves on the CPU)
static void mamba_step_init(MambaStepState* s, const MambaModel* m, const float* host_params) {
    const MambaConfig& c = m->cfg;
    int D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank;
    s->m = m;
    float* base = (float*)host_params;
    s->layers.resize(c.n_layer);
    for (int l = 0; l < c.n_layer; l++) s->layers[l] = layer_views(&m->params, base, m->layer_index[l]);
    s->wte = base + m->params.tensors[m->wte_index].offset;
    s->norm_f_w = base + m->params.tensors[m->norm_f_index].offset;
    s->conv_state.assign((size_t)c.n_layer * E * (K - 1), 0.0f);
    s->ssm_state.assign((size_t)c.n_layer * E * N, 0.0f);
    s->x.resize(D); s->xn.resize(D); s->xz.resize(2 * E); s->u.resize(E);
    s->xdbl.resize(R + 2 * N); s->delta.resize(E); s->y.resize(E); s->out.resize(D); s->xf.resize(D);
}

// feed one token; logits: (V)
static void mamba_step(MambaStepState* s, int token, float* logits) {
    const MambaConfig& c = s->m->cfg;
    int D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank, V = c.vocab_size;
    float rstd;
    embedding_forward_cpu(s->x.data(), &token, s->wte, 1, D);
    for (int l = 0; l < c.n_layer; l++) {
        const LayerParams& p = s->layers[l];
        rmsnorm_forward_cpu(s->xn.data(), &rstd, s->x.data(), p.norm_w, 1, D);
        linear_forward_cpu(s->xz.data(), s->xn.data(), p.in_proj_w, nullptr, 1, D, 2 * E);  // xz = [x | z]
        conv1d_step_cpu(s->u.data(), s->conv_state.data() + (size_t)l * E * (K - 1), s->xz.data(), p.conv_w, p.conv_b, 1, E, K);
        silu_forward_cpu(s->u.data(), s->u.data(), E);
        linear_forward_cpu(s->xdbl.data(), s->u.data(), p.x_proj_w, nullptr, 1, E, R + 2 * N);
        linear_forward_cpu(s->delta.data(), s->xdbl.data(), p.dt_proj_w, nullptr, 1, R, E);
        selective_scan_step_cpu(s->y.data(), s->ssm_state.data() + (size_t)l * E * N, s->u.data(), s->delta.data(), p.A_log,
                                s->xdbl.data() + R, s->xdbl.data() + R + N, p.D, s->xz.data() + E, p.dt_proj_b, 1, E, N);
        linear_forward_cpu(s->out.data(), s->y.data(), p.out_proj_w, nullptr, 1, E, D);
        add_inplace_cpu(s->x.data(), s->out.data(), D);
    }
    rmsnorm_forward_cpu(s->xf.data(), &rstd, s->x.data(), s->norm_f_w, 1, D);
    linear_forward_cpu(logits, s->xf.data(), s->wte, nullptr, 1, D, V);
}

// generates n tokens after the prompt with the recurrent step (CPU reference;
// a GPU model's parameters are copied to the host once)
static std::vector<int> mamba_generate(const MambaModel* m, const std::vector<int>& prompt, int n, float temperature,
                                       int top_k, uint64_t seed) {
    const ParamStore* ps = &m->params;
    std::vector<float> host(ps->num_params);
    backend_copy(m->on_gpu, host.data(), ps->params, ps->num_params * sizeof(float), false);
    if (m->lora.rank > 0 && !m->lora_merged) mamba_lora_fold(m, host.data(), false, +1.0f);  // the step reads W only
    MambaStepState s; mamba_step_init(&s, m, host.data());
    std::vector<float> logits(m->cfg.vocab_size);
    Rng rng; rng_seed(&rng, seed);
    for (int t : prompt) mamba_step(&s, t, logits.data());
    std::vector<int> out;
    for (int i = 0; i < n; i++) {
        int t = sample_token(logits.data(), m->cfg.vocab_size, temperature, top_k, rng_uniform(&rng));
        out.push_back(t);
        if (i + 1 < n) mamba_step(&s, t, logits.data());
    }
    return out;
}
