// mamba_model.h: the language model of train_mamba, one definition for both backends:
// Mamba-1 by default, or any stack of Mamba-1, Mamba-2, attention and MLP blocks (a layer
// pattern, so a hybrid and a pure transformer are configurations of the same program).
//
//   tokens (B, T) -> embedding [+ learned positions] -> n_layer x [ x = x + Mixer_l(RMSNorm(x)) ]
//   -> RMSNorm -> logits = x @ embedding^T (tied head) -> mean softmax cross-entropy
//
// Mixer_l by the layer's kind (MambaConfig::layers, e.g. "M2,M2,A,F"; empty: n_layer M1):
//   M1  the Mamba-1 block, E = expand*D, R = dt_rank, N = d_state, K = d_conv:
//         xin, z  = in_proj(xn)                       (BT, E) each
//         u       = silu(conv1d(xin))                 depthwise causal, width K
//         dt_low, Bm, Cm = x_proj(u)                  (BT, R), (BT, N), (BT, N)
//         delta   = dt_proj(dt_low)                   (BT, E), its bias goes inside the scan's softplus
//         y       = selective_scan(u, delta, A, Bm, Cm, D, z)   gated by silu(z)
//         out     = out_proj(y)                       (BT, D)
//   M2  the Mamba-2 block (src/mamba2.h: SSD, heads of m2_headdim, state m2_d_state, gated RMSNorm),
//       its parameters under "layers.l.mixer."
//   A   causal multi-head attention, attn_heads heads, no biases:
//         qkv = xn Wqkv^T (BT, 3D);  y = attention(qkv, causal);  out = y Wo^T
//   F   MLP, hidden H = mlp_mult*D, no biases:  out = gelu(xn Wfc^T) Wproj^T
// Learned absolute positions (pos_embed, max_seq rows) are added to the embedding only when no
// layer is M1 or M2: the recurrent layers give a hybrid its sense of order (as Jamba's attention
// layers go without positions), a pure transformer needs them.
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
// generation (mamba_step_init / mamba_step; the GPU decoder of mamba_generate.h
// runs the same composition on the device).
//
// LoRA (lora.h): mamba_build with a LoraConfig adds adapters to the chosen
// linear layers and freezes everything else (except --train-also tensors).
// Frozen tensors get no gradient buffer (nullptr gradient views): their dW GEMMs
// are skipped, and the kernels of the small vectors (norms, conv, A_log, D,
// dt bias) take a nullptr parameter gradient and skip it.
// Adapters go on Mamba-1 layers: a pattern with other kinds refuses LoRA.
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
#include "lm_head.h"
#include "attention.h"
#include "lora.h"
#include "mamba2.h"
#include "rmsnorm.h"
#include "selective_scan.h"
#include "sequence_ops.h"

// the layer kinds of a pattern
typedef enum { LAYER_M1 = 0, LAYER_M2, LAYER_ATTN, LAYER_MLP, LAYER_NUM_KINDS } LayerKind;
static const char* const LAYER_KIND_NAMES[] = {"M1", "M2", "A", "F"};

typedef struct {
    int vocab_size, d_model, n_layer, d_state, d_conv, expand, dt_rank, d_inner;
    // the layer pattern: kinds separated by commas, "M1,M2,A,F" (mamba_parse_layers: "KIND*N" repeats);
    // empty: n_layer Mamba-1 blocks. mamba_config_derive writes it out in full.
    std::string layers;
    int m2_d_state, m2_headdim, m2_ngroups, m2_chunk;  // M2 blocks (0: the reference's 128, 64, 1, 256)
    int attn_heads;  // A blocks (0: d_model / 64, at least 1)
    int mlp_mult;    // F blocks: hidden width mlp_mult * d_model (0: 4)
    int max_seq;     // rows of the position table when pos_embed (0: the built T)
    int pos_embed;   // derived: 1 when no layer is M1 or M2
} MambaConfig;

// Recompute each layer's RMSNorm and conv1d + SiLU outputs in the backward instead of keeping them
// per layer (MambaModel::recompute); read by mamba_build (train_mamba --recompute)
static bool g_mamba_recompute = false;

// the head's logits are computed at most this many at a time while training
// (64M: 256 MiB in fp32); tests lower it to exercise the chunking
static size_t g_logits_chunk_floats = (size_t)64 << 20;

// "M2*2,A,F" -> {M2, M2, A, F}; false with *err set on anything else
static bool mamba_parse_layers(const std::string& spec, std::vector<LayerKind>* kinds, std::string* err) {
    kinds->clear();
    size_t pos = 0;
    while (pos <= spec.size()) {
        size_t comma = spec.find(',', pos);
        std::string item = spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        pos = comma == std::string::npos ? spec.size() + 1 : comma + 1;
        int repeat = 1;
        size_t star = item.find('*');
        if (star != std::string::npos) {
            char* end = nullptr;
            long r = strtol(item.c_str() + star + 1, &end, 10);
            if (star + 1 == item.size() || *end || r < 1 || r > 4096) { *err = "bad repeat count in '" + item + "'"; return false; }
            repeat = (int)r;
            item = item.substr(0, star);
        }
        int kind = -1;
        for (int k = 0; k < LAYER_NUM_KINDS; k++)
            if (item == LAYER_KIND_NAMES[k]) kind = k;
        if (kind < 0) { *err = "unknown layer kind '" + item + "' (M1, M2, A or F)"; return false; }
        for (int i = 0; i < repeat; i++) kinds->push_back((LayerKind)kind);
    }
    if (kinds->empty()) { *err = "no layers"; return false; }
    return true;
}

// the config's pattern as kinds (an empty pattern: n_layer Mamba-1 blocks, as derive writes it)
static std::vector<LayerKind> mamba_layer_kinds(const MambaConfig& c) {
    if (c.layers.empty()) return std::vector<LayerKind>(std::max(0, c.n_layer), LAYER_M1);
    std::vector<LayerKind> kinds;
    std::string err;
    if (!mamba_parse_layers(c.layers, &kinds, &err)) FATAL("layer pattern '%s': %s", c.layers.c_str(), err.c_str());
    return kinds;
}

static bool mamba_has_kind(const MambaConfig& c, LayerKind kind) {
    for (LayerKind k : mamba_layer_kinds(c)) if (k == kind) return true;
    return false;
}
// every layer Mamba-1: the model of the HF export, the GPU decoder and LoRA
static bool mamba_is_pure_m1(const MambaConfig& c) {
    return !mamba_has_kind(c, LAYER_M2) && !mamba_has_kind(c, LAYER_ATTN) && !mamba_has_kind(c, LAYER_MLP);
}

// fills the defaults and derived fields; FATAL on a pattern or shape the model cannot take
static void mamba_config_derive(MambaConfig* c) {
    c->d_inner = c->expand * c->d_model;
    if (c->dt_rank <= 0) c->dt_rank = (c->d_model + 15) / 16;  // ceil(D/16)
    if (c->layers.empty()) {
        for (int l = 0; l < c->n_layer; l++) c->layers += l ? ",M1" : "M1";
        if (c->n_layer < 1) return;  // an empty config (mamba_config_from_kv fills it in)
    }
    std::vector<LayerKind> kinds;
    std::string err;
    if (!mamba_parse_layers(c->layers, &kinds, &err)) FATAL("layer pattern '%s': %s", c->layers.c_str(), err.c_str());
    if (c->n_layer > 0 && c->n_layer != (int)kinds.size())
        FATAL("the layer pattern has %zu layers but n_layer is %d (the pattern sets the depth)", kinds.size(), c->n_layer);
    c->n_layer = (int)kinds.size();
    c->layers.clear();
    for (size_t l = 0; l < kinds.size(); l++) c->layers += std::string(l ? "," : "") + LAYER_KIND_NAMES[kinds[l]];
    if (c->m2_d_state <= 0) c->m2_d_state = 128;
    if (c->m2_headdim <= 0) c->m2_headdim = 64;
    if (c->m2_ngroups <= 0) c->m2_ngroups = 1;
    if (c->m2_chunk <= 0) c->m2_chunk = 256;
    if (c->attn_heads <= 0) c->attn_heads = std::max(1, c->d_model / 64);
    if (c->mlp_mult <= 0) c->mlp_mult = 4;
    c->pos_embed = !mamba_has_kind(*c, LAYER_M1) && !mamba_has_kind(*c, LAYER_M2);
    if (mamba_has_kind(*c, LAYER_ATTN) && c->d_model % c->attn_heads != 0)
        FATAL("attention: %d heads do not divide d_model %d (pass --attn-heads)", c->attn_heads, c->d_model);
}

// the Mamba-2 blocks' config (src/mamba2.h); the gated norm over groups of E/G channels, as the reference
static Mamba2Config mamba_m2_config(const MambaConfig& c) {
    Mamba2Config m2 = {};
    m2.d_model = c.d_model; m2.d_state = c.m2_d_state; m2.d_conv = c.d_conv; m2.expand = c.expand;
    m2.headdim = c.m2_headdim; m2.ngroups = c.m2_ngroups; m2.chunk = c.m2_chunk; m2.norm_groups = c.m2_ngroups;
    mamba2_config_derive(&m2);
    return m2;
}

// the integer config keys in the checkpoint's order, each with its field. A pure Mamba-1
// model stores exactly the keys it always did; a pattern adds "layers" (a string, see
// mamba_config_kv) and the keys of the kinds it uses.
static std::vector<std::pair<std::string, int*>> mamba_config_int_fields(MambaConfig* c) {
    std::vector<std::pair<std::string, int*>> f = {
        {"vocab_size", &c->vocab_size}, {"d_model", &c->d_model}, {"n_layer", &c->n_layer}, {"d_state", &c->d_state},
        {"d_conv", &c->d_conv},         {"expand", &c->expand},   {"dt_rank", &c->dt_rank}};
    if (c->layers.empty() || mamba_is_pure_m1(*c)) return f;
    if (mamba_has_kind(*c, LAYER_M2))
        f.insert(f.end(), {{"m2_d_state", &c->m2_d_state}, {"m2_headdim", &c->m2_headdim}, {"m2_ngroups", &c->m2_ngroups},
                           {"m2_chunk", &c->m2_chunk}});
    if (mamba_has_kind(*c, LAYER_ATTN)) f.push_back({"attn_heads", &c->attn_heads});
    if (mamba_has_kind(*c, LAYER_MLP)) f.push_back({"mlp_mult", &c->mlp_mult});
    if (!mamba_has_kind(*c, LAYER_M1) && !mamba_has_kind(*c, LAYER_M2)) f.push_back({"max_seq", &c->max_seq});
    return f;
}

// the config as the checkpoint stores it (key=value, a fixed order)
static ConfigKV mamba_config_kv(const MambaConfig& c) {
    MambaConfig copy = c;
    ConfigKV kv;
    for (auto& [key, field] : mamba_config_int_fields(&copy)) kv.push_back({key, std::to_string(*field)});
    if (!c.layers.empty() && !mamba_is_pure_m1(c)) kv.insert(kv.begin() + 3, {"layers", c.layers});  // after n_layer
    return kv;
}

// reads a config back from a checkpoint's key=value lines (--sample, --export-hf, --base)
static MambaConfig mamba_config_from_kv(const ConfigKV& kv, const char* path) {
    MambaConfig c = {};
    const std::string* layers = config_get(kv, "layers");
    if (layers) {
        std::vector<LayerKind> kinds;
        std::string err;
        if (!mamba_parse_layers(*layers, &kinds, &err)) FATAL("checkpoint %s: layer pattern '%s': %s", path, layers->c_str(), err.c_str());
        c.layers = *layers;
    }
    ConfigKV names;
    std::vector<int*> fields;
    for (auto& [key, field] : mamba_config_int_fields(&c)) { names.push_back({key, ""}); fields.push_back(field); }
    config_read_ints(kv, names, fields.data(), path);
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

// indices of one layer's tensors in the ParamStore (-1: not of this layer's kind)
typedef struct {
    LayerKind kind;
    int norm_w;  // every kind: the pre-norm
    int in_proj_w, conv_w, conv_b, x_proj_w, dt_proj_w, dt_proj_b, A_log, D, out_proj_w;  // M1
    Mamba2Index m2;                                                                      // M2
    int qkv_w, attn_proj_w;                                                              // A
    int fc_w, fc_proj_w;                                                                 // F
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
    Mamba2Params m2;    // an M2 layer's mixer
    float *qkv_w;       // (3D, D)   A
    float *attn_proj_w; // (D, D)    A
    float *fc_w;        // (H, D)    F, H = mlp_mult * D
    float *fc_proj_w;   // (D, H)    F
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
    floatX* xn;      // (BT, D) RMSNorm(resid): the layer's own, or the shared one (recomputed: MambaModel::recompute)
    floatX* u;       // (BT, E) M1: silu(conv1d(xin)), the scan's input: the layer's own, or the shared one
    floatX* xin;     // (BT, E) conv input
    floatX* z;       // (BT, E) gate
    floatX* dt_low;  // (BT, R)
    floatX* Bm;      // (BT, N)
    floatX* Cm;      // (BT, N)
    floatX* delta;   // (BT, E) before bias and softplus
    float* hs;       // (B, n_chunks, E, N) scan states at chunk starts
    floatX* y;       // (BT, E) gated scan output
    bool bf16;       // the last forward ran with bf16 activations (mamba_acts_bf16): xin, z, dt_low,
                     // Bm, Cm, delta and y are bf16 in these views (and the backward's gradients too)
    floatX *h_in_proj, *h_x_proj, *h_dt_proj, *h_out_proj;  // (BT, r) LoRA bottlenecks (nullptr: no adapter)
    Mamba2Acts m2;   // M2: the block's own (mamba2.h)
    floatX* qkv;     // (BT, 3D)  A
    float* lse;      // (B, heads, T) A: attention's log-sum-exp
    floatX* atty;    // (BT, D)   A: attention output, heads concatenated
    floatX* hpre;    // (BT, H)   F: fc output before GELU (the GELU is recomputed in the backward)
} LayerActs;

// backward scratch, reused by every layer
typedef struct {
    floatX *dy, *du, *ddelta, *dz, *dxin;           // (BT, E)
    floatX *ddt_low;                                // (BT, R)
    floatX *dBm, *dCm;                              // (BT, N)
    floatX *dxn;                                    // (BT, D)
    floatX *dxdbl;                                  // (BT, R+2N) [ddt_low | dBm | dCm]
    floatX *dh_lora;                                // (BT, r) an adapter's bottleneck gradient
    floatX *dqkv;                                   // (BT, 3D) A
    float *att_D;                                   // (B, heads, T) A: attention backward's row dots
    floatX *datty;                                  // (BT, D) A
    floatX *dh, *dhpre;                             // (BT, H) F
} LayerScratch;

typedef struct MambaModel {
    MambaConfig cfg;
    bool on_gpu;
    int B, T;  // the largest batch the activations were sized for
    ParamStore params;   // parameters, and (when training) gradients and AdamW moments
    int wte_index, norm_f_index;
    std::vector<LayerIndex> layer_index;
    float* wte;  float* norm_f_w;    // views into params.params
    float* dwte; float* dnorm_f_w;   // views into params.grads (nullptr without grads, or frozen)
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
    // Each layer's RMSNorm output xn and (M1) conv output u are kept per layer (LayerActs::xn, ::u), or,
    // with `recompute` (g_mamba_recompute when built, and every model built without gradients), all
    // layers share these two and the backward recomputes them (one RMSNorm, one conv1d + SiLU a layer):
    // at the mamba-130m step with bf16 activations 0.81 GiB less, ~1.5 ms more (H100)
    bool recompute;
    floatX* xn;         // (BT, D) the shared RMSNorm(resid) (recompute), else nullptr
    floatX* u;          // (BT, E) the shared silu(conv1d(xin)) (recompute), else nullptr
    floatX* mlp_h;      // (BT, H) F layers: gelu(hpre), recomputed in the backward
    Mamba2Config m2cfg;           // the M2 layers' block config
    Mamba2Scratch m2_scratch;     // shared by the M2 layers (forward and backward)
    std::vector<size_t> layer_act_bytes;  // activation bytes of each layer (the memory report)
    std::vector<char> acts16;     // M1 layers laid out for bf16 activations (half-size views; mamba_plan_acts16)
    bool all_acts16;              // every layer is: the shared u, xn, xdbl and the backward scratch are halved too
    int wpe_index;                // learned positions (cfg.pos_embed), else -1
    float* wpe; float* dwpe;      // (max_seq, D)
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
    m->wpe_index = c.pos_embed ? params_add(ps, "position.weight", {c.max_seq, D}, decay) : -1;
    std::vector<LayerKind> kinds = mamba_layer_kinds(c);
    m->layer_index.resize(c.n_layer);
    for (int l = 0; l < c.n_layer; l++) {
        std::string p = "layers." + std::to_string(l) + ".";
        LayerIndex& li = m->layer_index[l];
        li = LayerIndex{kinds[l], -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, Mamba2Index{}, -1, -1, -1, -1};
        li.norm_w = params_add(ps, p + "norm.weight", {D}, no_decay);
        if (li.kind == LAYER_M2) { li.m2 = mamba2_declare_params(ps, p + "mixer.", m->m2cfg); continue; }
        if (li.kind == LAYER_ATTN) {
            li.qkv_w = params_add(ps, p + "attn.qkv.weight", {3 * D, D}, decay);
            li.attn_proj_w = params_add(ps, p + "attn.out_proj.weight", {D, D}, decay);
            continue;
        }
        if (li.kind == LAYER_MLP) {
            li.fc_w = params_add(ps, p + "mlp.fc.weight", {c.mlp_mult * D, D}, decay);
            li.fc_proj_w = params_add(ps, p + "mlp.fc_proj.weight", {D, c.mlp_mult * D}, decay);
            continue;
        }
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
    if (lc.rank > 0 && !mamba_is_pure_m1(c))
        FATAL("LoRA adapts Mamba-1 layers; this model's pattern %s has other kinds", c.layers.c_str());
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
    auto at = [&](int i) { return i < 0 ? nullptr : base + ps->tensors[i].offset; };
    LayerParams p = {at(li.norm_w), at(li.in_proj_w), at(li.conv_w), at(li.conv_b), at(li.x_proj_w),
                     at(li.dt_proj_w), at(li.dt_proj_b), at(li.A_log), at(li.D), at(li.out_proj_w),
                     Mamba2Params{}, at(li.qkv_w), at(li.attn_proj_w), at(li.fc_w), at(li.fc_proj_w)};
    if (li.kind == LAYER_M2) p.m2 = mamba2_views(ps, base, li.m2);
    return p;
}

// one layer's gradient views: nullptr for every frozen tensor (a matrix's dW GEMM is
// skipped; the vectors' kernels accept a nullptr parameter gradient and skip it)
static LayerParams layer_grad_views(const ParamStore* ps, const LayerIndex& li) {
    auto g = [&](int i) { return i < 0 ? (float*)nullptr : param_grad(ps, i); };
    LayerParams d = {g(li.norm_w), g(li.in_proj_w), g(li.conv_w), g(li.conv_b), g(li.x_proj_w),
                     g(li.dt_proj_w), g(li.dt_proj_b), g(li.A_log), g(li.D), g(li.out_proj_w),
                     Mamba2Params{}, g(li.qkv_w), g(li.attn_proj_w), g(li.fc_w), g(li.fc_proj_w)};
    if (li.kind == LAYER_M2) d.m2 = mamba2_grad_views(ps, li.m2);  // nullptr where frozen (the block skips those)
    return d;
}

// an activation view of n elements: fp32, or bf16 (half the bytes) for a layer laid out for bf16
// activations (its kernels then read and write it as bf16)
static floatX* mamba_take_act(Arena* a, size_t n, bool half) {
    return half ? reinterpret_cast<floatX*>(arena_take<uint16_t>(a, n)) : arena_take<floatX>(a, n);
}

// A GPU model built under --matmul bf16: each M1 layer without adapters whose products are wide
// enough at the built shape (the rule of mamba_acts_bf16) and whose conv and scan have bf16 kernels
// is laid out with its activations in bf16, half the bytes, and then runs with bf16 activations at
// every forward shape. Where every layer is such a one, the shared buffers (xn, u, xdbl) and the
// backward scratch are halved too.
static bool mamba_layer_has_adapter(const MambaModel* m, int l) {
    const LayerLora& ll = m->lora_layers[l];
    return lora_active(ll.in_proj) || lora_active(ll.x_proj) || lora_active(ll.dt_proj) || lora_active(ll.out_proj);
}
#ifdef __CUDACC__
// whether a Mamba-1 layer of this shape can take bf16 activations over BT rows: its products wide
// enough for bf16 (under --matmul bf16), the conv's and the fast scan's bf16 kernels, the RMSNorm's
// vector path (the arena's views are 16-byte aligned, as the kernels' vector paths need)
static bool mamba_bf16_shape_ok(const MambaConfig& c, int BT) {
    return linear_split_bf16(BT, c.d_model, c.d_inner, c.d_inner) && linear_use_bf16(c.d_model, BT, c.d_inner) &&
           conv1d_silu_b16_ok(c.d_conv) && c.d_state == SCAN_FAST_N && rmsnorm_vec_ok(c.d_model, nullptr, nullptr, nullptr);
}
#endif
static void mamba_plan_acts16(MambaModel* m) {
    const MambaConfig& c = m->cfg;
    m->acts16.assign(c.n_layer, 0);
    m->all_acts16 = false;
#ifdef __CUDACC__
    if (!m->on_gpu || g_matmul_precision != MATMUL_BF16) return;
    bool fits = mamba_bf16_shape_ok(c, m->B * m->T);
    int n = 0;
    for (int l = 0; l < c.n_layer; l++) {
        m->acts16[l] = fits && m->layer_index[l].kind == LAYER_M1 && !mamba_layer_has_adapter(m, l);
        n += m->acts16[l];
    }
    m->all_acts16 = n == c.n_layer;
#endif
}

// activations for (m->B, m->T), carved from one arena (see params.h)
static void mamba_layout_acts(MambaModel* m, Arena* a) {
    const MambaConfig& c = m->cfg;
    size_t BT = (size_t)m->B * m->T, D = c.d_model, E = c.d_inner, N = c.d_state, R = c.dt_rank;
    size_t hs = (size_t)m->B * scan_n_chunks(m->T) * E * N, H = (size_t)c.mlp_mult * D;
    bool has_m1 = mamba_has_kind(c, LAYER_M1);
    m->layer_act_bytes.assign(c.n_layer, 0);
    for (int l = 0; l < c.n_layer; l++) {
        size_t start = a->used;
        LayerActs& x = m->acts[l];
        x = LayerActs{};
        x.resid = arena_take<floatX>(a, BT * D);  x.rstd = arena_take<float>(a, BT);
        LayerKind kind = m->layer_index[l].kind;
        auto act = [&](size_t n) { return mamba_take_act(a, n, m->acts16[l]); };
        if (!m->recompute) {
            x.xn = kind == LAYER_M1 ? act(BT * D) : arena_take<floatX>(a, BT * D);
            if (kind == LAYER_M1) x.u = act(BT * E);
        }
        if (kind == LAYER_M2) mamba2_layout_acts(&x.m2, a, m->m2cfg, m->B, m->T);
        if (kind == LAYER_ATTN) {
            x.qkv = arena_take<floatX>(a, BT * 3 * D);
            x.lse = arena_take<float>(a, BT * c.attn_heads);
            x.atty = arena_take<floatX>(a, BT * D);
        }
        if (kind == LAYER_MLP) x.hpre = arena_take<floatX>(a, BT * H);
        if (kind != LAYER_M1) { m->layer_act_bytes[l] = a->used - start; continue; }
        x.xin = act(BT * E);    x.z = act(BT * E);
        x.dt_low = act(BT * R); x.Bm = act(BT * N);
        x.Cm = act(BT * N);     x.delta = act(BT * E);
        x.hs = arena_take<float>(a, hs);          x.y = act(BT * E);
        const LayerLora& ll = m->lora_layers[l];
        size_t r = m->lora.rank;
        x.h_in_proj = lora_active(ll.in_proj) ? arena_take<floatX>(a, BT * r) : nullptr;
        x.h_x_proj = lora_active(ll.x_proj) ? arena_take<floatX>(a, BT * r) : nullptr;
        x.h_dt_proj = lora_active(ll.dt_proj) ? arena_take<floatX>(a, BT * r) : nullptr;
        x.h_out_proj = lora_active(ll.out_proj) ? arena_take<floatX>(a, BT * r) : nullptr;
        m->layer_act_bytes[l] = a->used - start;
    }
    m->lora_xd = (m->lora.rank > 0 && m->lora.dropout > 0) ? arena_take<floatX>(a, BT * std::max({D, E, R})) : nullptr;
    m->resid_out = arena_take<floatX>(a, BT * D); m->rstd_f = arena_take<float>(a, BT);
    m->xf = arena_take<floatX>(a, BT * D);
    m->logits_chunk = arena_take<floatX>(a, (size_t)m->chunk_rows * c.vocab_size);
    m->losses = arena_take<float>(a, BT);
    m->xdbl = has_m1 ? mamba_take_act(a, BT * (R + 2 * N), m->all_acts16) : nullptr;
    m->xn = m->recompute ? mamba_take_act(a, BT * D, m->all_acts16) : nullptr;
    m->u = m->recompute && has_m1 ? mamba_take_act(a, BT * E, m->all_acts16) : nullptr;
    if (m->recompute)
        for (int l = 0; l < c.n_layer; l++) {
            m->acts[l].xn = m->xn;
            m->acts[l].u = m->layer_index[l].kind == LAYER_M1 ? m->u : nullptr;
        }
    m->mlp_h = mamba_has_kind(c, LAYER_MLP) ? arena_take<floatX>(a, BT * H) : nullptr;
    // the M2 layers' shared workspace sits with the activations: the forward needs it too
    if (mamba_has_kind(c, LAYER_M2)) mamba2_layout_scratch(&m->m2_scratch, a, m->m2cfg, m->B, m->T);
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
    s = LayerScratch{};
    s.dxn = arena_take<floatX>(a, BT * D);     // every kind
    // the rest is per kind and one layer's at a time: the kinds share the bytes (a union)
    size_t kinds_start = a->used, end = a->used;
    if (mamba_has_kind(c, LAYER_M1)) {
        bool h = m->all_acts16;  // (dBm, dCm, ddt_low stay fp32 under bf16 activations)
        s.dy = mamba_take_act(a, BT * E, h);       s.du = mamba_take_act(a, BT * E, h);
        s.ddelta = mamba_take_act(a, BT * E, h);   s.dxin = mamba_take_act(a, BT * E, h);  // dxin, dz in this order: in_proj's
        s.dz = mamba_take_act(a, BT * E, h);       s.ddt_low = arena_take<floatX>(a, BT * R);  // dW halves run as one launch
        s.dBm = arena_take<floatX>(a, BT * N);     s.dCm = arena_take<floatX>(a, BT * N);
        s.dxdbl = mamba_take_act(a, BT * (R + 2 * N), h);
        s.dh_lora = m->lora.rank > 0 ? arena_take<floatX>(a, BT * m->lora.rank) : nullptr;
        end = std::max(end, a->used);
    }
    if (mamba_has_kind(c, LAYER_ATTN)) {
        a->used = kinds_start;
        s.dqkv = arena_take<floatX>(a, BT * 3 * D);
        s.att_D = arena_take<float>(a, BT * c.attn_heads);
        s.datty = arena_take<floatX>(a, BT * D);
        end = std::max(end, a->used);
    }
    if (mamba_has_kind(c, LAYER_MLP)) {
        a->used = kinds_start;
        s.dh = arena_take<floatX>(a, BT * c.mlp_mult * D);
        s.dhpre = arena_take<floatX>(a, BT * c.mlp_mult * D);
        end = std::max(end, a->used);
    }
    a->used = end;  // (M2's workspace is m->m2_scratch)
}

// with_grads false: inference only (no gradients, no AdamW moments, no backward scratch).
// lora: adapters and the frozen base (rank 0 and no train_also: plain training)
static void mamba_build(MambaModel* m, MambaConfig cfg, int B, int T, bool on_gpu, bool with_grads = true,
                        const LoraConfig& lora = LoraConfig()) {
    mamba_config_derive(&cfg);
    if (cfg.vocab_size < 2 || cfg.d_model < 1 || cfg.n_layer < 1 || cfg.d_state < 1 || cfg.d_conv < 1 || cfg.expand < 1)
        FATAL("invalid model config");
    if (cfg.pos_embed && cfg.max_seq <= 0) cfg.max_seq = T;
    if (cfg.pos_embed && T > cfg.max_seq)
        FATAL("sequences of %d tokens exceed the model's %d learned positions (max_seq)", T, cfg.max_seq);
    m->m2cfg = mamba_has_kind(cfg, LAYER_M2) ? mamba_m2_config(cfg) : Mamba2Config{};
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
    m->wpe = m->wpe_index >= 0 ? param_data(ps, m->wpe_index) : nullptr;
    m->dwpe = m->wpe_index >= 0 ? param_grad(ps, m->wpe_index) : nullptr;
    if (m->wpe && with_grads && !m->dwpe) FATAL("frozen position embeddings: not supported");  // (LoRA refuses such patterns)
    m->layers.resize(cfg.n_layer); m->dlayers.resize(cfg.n_layer);
    for (int l = 0; l < cfg.n_layer; l++) {
        m->layers[l] = layer_views(ps, ps->params, m->layer_index[l]);
        m->dlayers[l] = with_grads ? layer_grad_views(ps, m->layer_index[l]) : LayerParams{};
        LayerLora& ll = m->lora_layers[l];
        for (LoraAdapter* a : {&ll.in_proj, &ll.x_proj, &ll.dt_proj, &ll.out_proj}) lora_resolve(a, ps);
    }
    m->acts.resize(cfg.n_layer);
    m->recompute = g_mamba_recompute || !with_grads;
    mamba_plan_acts16(m);
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
    if (m->wpe_index >= 0) {
        float* wpe = T(m->wpe_index);
        for (size_t i = 0; i < (size_t)c.max_seq * D; i++) wpe[i] = 0.02f * rng_normal(&rng);
    }
    // each residual branch's output projection is scaled down by sqrt(n_layer) (below for M1),
    // so the stream's variance stays put whatever the depth
    float branch_scale = 1.0f / sqrtf((float)c.n_layer);
    for (int l = 0; l < c.n_layer; l++) {
        const LayerIndex& li = m->layer_index[l];
        if (li.kind != LAYER_M1) {
            float* norm = T(li.norm_w);
            for (int i = 0; i < D; i++) norm[i] = 1.0f;
        }
        if (li.kind == LAYER_M2) {  // the reference Mamba-2's init (mamba2.h)
            mamba2_init_params(mamba2_views(ps, h.data(), li.m2), m->m2cfg, &rng, branch_scale);
            continue;
        }
        auto normal = [&](int index, float std) {
            float* p = T(index);
            for (size_t i = 0; i < ps->tensors[index].numel; i++) p[i] = std * rng_normal(&rng);
        };
        if (li.kind == LAYER_ATTN) { normal(li.qkv_w, 0.02f); normal(li.attn_proj_w, 0.02f * branch_scale); continue; }  // GPT-2's
        if (li.kind == LAYER_MLP) { normal(li.fc_w, 0.02f); normal(li.fc_proj_w, 0.02f * branch_scale); continue; }
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

// The layer's RMSNorm into its xn: fp32, or bf16 (xn16: the bf16-activation layer's). In the forward
// (residual) of a layer l > 0 it also finishes the layer before's residual add: that layer wrote its
// mixer's output (the branch) into this layer's a.resid, which becomes resid_{l-1} + branch in the same
// pass (one read of each, no separate add kernel). The backward's recompute reads a.resid as it is.
static void mamba_layer_norm(MambaModel* m, int l, int BT, bool xn16, bool residual, const char* prof_name) {
    const LayerParams& p = m->layers[l];
    LayerActs& a = m->acts[l];
    const int D = m->cfg.d_model;
    const floatX* prev = residual && l > 0 ? m->acts[l - 1].resid : nullptr;
#ifdef __CUDACC__
    if (xn16) {
        bf16* xn = reinterpret_cast<bf16*>(a.xn);
        if (prev) PROF(true, prof_name, rmsnorm_forward_residual_cuda(xn, a.rstd, a.resid, prev, a.resid, p.norm_w, BT, D));
        else PROF(true, prof_name, rmsnorm_forward_bf16_cuda(xn, a.rstd, a.resid, p.norm_w, BT, D));
        return;
    }
#endif
    (void)xn16;
    if (prev) PROF(m->on_gpu, prof_name, rmsnorm_forward_residual(m->on_gpu, a.xn, a.rstd, a.resid, prev, a.resid, p.norm_w, BT, D));
    else PROF(m->on_gpu, prof_name, rmsnorm_forward(m->on_gpu, a.xn, a.rstd, a.resid, p.norm_w, BT, D));
}

// --matmul bf16 on the GPU, a Mamba-1 layer without active adapters and with the fast scan's
// d_state (16): bf16 activations. Every (BT, E) activation of the layer (xin, z, u, delta, y),
// dt_low, Bm, Cm, and their gradients (dy, du, ddelta, dz, dxin) are bf16, written once by their
// producer and read as they are by every consumer (no copies); every product runs on bf16 tensor
// cores (thin ones included) with fp32 accumulation. The residual stream and its gradient, rstd,
// the scan's states (hs) and sums, dBm / dCm (summed by atomics), ddt_low, the parameters and
// their gradients stay fp32, as do the official kernels' (residual_in_fp32). A layer laid out for
// them (mamba_plan_acts16) always takes them; in a model built under another precision, a layer
// takes them, in the halves of its fp32-sized views, where the shapes fit this forward.
static bool mamba_acts_bf16(const MambaModel* m, int l, int BT, bool adapters) {
#ifdef __CUDACC__
    if (m->acts16[l]) {
        if (g_matmul_precision != MATMUL_BF16)
            FATAL("the model was built under --matmul bf16 (its activations are laid out in bf16); the matmul precision "
                  "changed since: set it before mamba_build");
        return true;
    }
    return m->on_gpu && !(adapters && mamba_layer_has_adapter(m, l)) && mamba_bf16_shape_ok(m->cfg, BT);
#else
    (void)m; (void)l; (void)BT; (void)adapters;
    return false;
#endif
}

// A Mamba-1 layer, forward: layer_out = out_proj(scan(...)), the branch (the next norm adds resid to it),
// on activations of type AT: fp32 (the CPU, and the GPU under --matmul tf32 / fp32 or where an adapter
// reads them), or bf16 (the GPU under --matmul bf16: mamba_acts_bf16). The activations live in the fp32-typed views of LayerActs and
// the scratch (a bf16 layer's hold bf16, at 2 bytes an element where the layout was planned for it);
// the component wrappers dispatch on the pointers' types (the bf16 ones run the GPU only). LoRA
// adapters only ever meet fp32 activations (a layer with one is never bf16).
template <typename AT> static AT* act_view(floatX* x) { return reinterpret_cast<AT*>(x); }

template <typename AT>
static void mamba_m1_forward(MambaModel* m, int l, floatX* layer_out, int B, int T, bool lora) {
    const MambaConfig& c = m->cfg;
    int D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank, BT = B * T;
    bool on_gpu = m->on_gpu;
    const LayerParams& p = m->layers[l];
    LayerActs& a = m->acts[l];
    const LayerLora& ll = m->lora_layers[l];
    AT *xn = act_view<AT>(a.xn), *xin = act_view<AT>(a.xin), *z = act_view<AT>(a.z), *u = act_view<AT>(a.u);
    AT *xdbl = act_view<AT>(m->xdbl), *dt_low = act_view<AT>(a.dt_low), *Bm = act_view<AT>(a.Bm), *Cm = act_view<AT>(a.Cm);
    AT *delta = act_view<AT>(a.delta), *y = act_view<AT>(a.y);
    mamba_layer_norm(m, l, BT, sizeof(AT) == 2, true, "rmsnorm");
    PROF(on_gpu, "in_proj", linear_forward_split(on_gpu, xin, z, xn, p.in_proj_w, BT, D, E, E));  // [x | z]
    if (lora && lora_active(ll.in_proj))
        PROF(on_gpu, "lora", lora_forward(on_gpu, ll.in_proj, mamba_lora_run(m, l, 0), a.h_in_proj, a.xn, a.xin,
                                          ll.in_proj.out_features == 2 * E ? a.z : nullptr, BT));
    PROF(on_gpu, "conv1d+silu", conv1d_silu_forward(on_gpu, u, xin, p.conv_w, p.conv_b, B, T, E, K));
    // one GEMM for all three projections (three skinny ones cost ~3x), then split
    PROF(on_gpu, "x_proj", linear_forward(on_gpu, xdbl, u, p.x_proj_w, (const float*)nullptr, BT, E, R + 2 * N));
    if (lora && lora_active(ll.x_proj))
        PROF(on_gpu, "lora", lora_forward(on_gpu, ll.x_proj, mamba_lora_run(m, l, 1), a.h_x_proj, a.u, m->xdbl, nullptr, BT));
    PROF(on_gpu, "x_proj", split_columns(on_gpu, dt_low, Bm, Cm, xdbl, BT, R, N, N));
    PROF(on_gpu, "dt_proj", linear_forward(on_gpu, delta, dt_low, p.dt_proj_w, (const float*)nullptr, BT, R, E));
    if (lora && lora_active(ll.dt_proj))
        PROF(on_gpu, "lora", lora_forward(on_gpu, ll.dt_proj, mamba_lora_run(m, l, 2), a.h_dt_proj, a.dt_low, a.delta, nullptr, BT));
    PROF(on_gpu, "scan", selective_scan_forward(on_gpu, y, a.hs, u, delta, p.A_log, Bm, Cm, p.D, z, p.dt_proj_b, B, T, E, N));
    PROF(on_gpu, "out_proj", linear_forward(on_gpu, layer_out, y, p.out_proj_w, (const float*)nullptr, BT, E, D));
    if (lora && lora_active(ll.out_proj))
        PROF(on_gpu, "lora", lora_forward(on_gpu, ll.out_proj, mamba_lora_run(m, l, 3), a.h_out_proj, a.y, layer_out, nullptr, BT));
}

static void mamba_layer_forward(MambaModel* m, int l, floatX* layer_out, int B, int T) {
    bool lora = m->lora.rank > 0 && !m->lora_merged;
    LayerActs& a = m->acts[l];
    a.bf16 = mamba_acts_bf16(m, l, B * T, lora);
#ifdef __CUDACC__
    if (a.bf16) {
        mamba_m1_forward<bf16>(m, l, layer_out, B, T, false);
        return;
    }
#endif
    mamba_m1_forward<floatX>(m, l, layer_out, B, T, lora);
}

// an M2, A or F layer: layer_out = Mixer(RMSNorm(resid)), the branch (the next norm adds resid to it)
static void mamba_other_layer_forward(MambaModel* m, int l, floatX* layer_out, int B, int T) {
    const MambaConfig& c = m->cfg;
    int D = c.d_model, H = c.mlp_mult * c.d_model, BT = B * T;
    bool on_gpu = m->on_gpu;
    LayerParams& p = m->layers[l];
    LayerActs& a = m->acts[l];
    LayerKind kind = m->layer_index[l].kind;
    mamba_layer_norm(m, l, BT, false, true, "rmsnorm");
    if (kind == LAYER_M2)
        mamba2_block_forward(on_gpu, layer_out, a.m2, m->m2_scratch, a.xn, p.m2, m->m2cfg, B, T);  // profiled inside (mamba2.h)
    if (kind == LAYER_ATTN) {
        PROF(on_gpu, "attn_qkv", linear_forward(on_gpu, a.qkv, a.xn, p.qkv_w, (const float*)nullptr, BT, D, 3 * D));
        PROF(on_gpu, "attention", attention_forward(on_gpu, a.atty, a.lse, a.qkv, nullptr, B, T, D, c.attn_heads, true));
        PROF(on_gpu, "attn_proj", linear_forward(on_gpu, layer_out, a.atty, p.attn_proj_w, (const float*)nullptr, BT, D, D));
    }
    if (kind == LAYER_MLP) {
        PROF(on_gpu, "mlp_fc", linear_forward(on_gpu, a.hpre, a.xn, p.fc_w, (const float*)nullptr, BT, D, H);
                               gelu_forward(on_gpu, m->mlp_h, a.hpre, (size_t)BT * H));
        PROF(on_gpu, "mlp_proj", linear_forward(on_gpu, layer_out, m->mlp_h, p.fc_proj_w, (const float*)nullptr, BT, H, D));
    }
}

// the layers: tokens -> m->xf (the final RMSNorm's output); targets (or null) are kept for the head
static void mamba_forward_body(MambaModel* m, const int* tokens, const int* targets, int B, int T) {
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
    if (m->wpe) PROF(on_gpu, "embedding", position_add_forward(on_gpu, m->acts[0].resid, m->wpe, B, T, D));
    // each layer writes its branch where the next layer's input goes; the next norm adds the residual
    for (int l = 0; l < c.n_layer; l++) {
        floatX* out = (l + 1 < c.n_layer) ? m->acts[l + 1].resid : m->resid_out;
        if (m->layer_index[l].kind == LAYER_M1) mamba_layer_forward(m, l, out, B, T);
        else mamba_other_layer_forward(m, l, out, B, T);
    }
    PROF(on_gpu, "rmsnorm", rmsnorm_forward_residual(on_gpu, m->xf, m->rstd_f, m->resid_out, m->acts[c.n_layer - 1].resid, m->resid_out,
                                                     m->norm_f_w, BT, D));
    if (targets) backend_copy(on_gpu, m->targets, targets, BT * sizeof(int), true);
}

// the mean of m->losses (BT rows) on the host
static float mamba_mean_loss(MambaModel* m, int BT) {
    backend_copy(m->on_gpu, m->host_losses.data(), m->losses, BT * sizeof(float), false);
    double sum = 0;
    for (int i = 0; i < BT; i++) sum += m->host_losses[i];
    return (float)(sum / BT);
}

// tokens/targets: host arrays (B*T). Returns the mean loss (0 without targets).
// Without targets m->logits holds the (B*T, V) logits afterwards.
static float mamba_forward(MambaModel* m, const int* tokens, const int* targets, int B, int T) {
    LinearWeightsFixed fixed;  // no weight changes during the pass: a weight used twice is copied to bf16 once
    mamba_forward_body(m, tokens, targets, B, T);
    const MambaConfig& c = m->cfg;
    int BT = B * T, D = c.d_model, V = c.vocab_size;
    bool on_gpu = m->on_gpu;
    if (!targets) {
        if (!m->logits) m->logits = (floatX*)backend_malloc(on_gpu, (size_t)m->B * m->T * V * sizeof(floatX));
        PROF(on_gpu, "lm_head", linear_forward(on_gpu, m->logits, m->xf, m->wte, (const float*)nullptr, BT, D, V));
        return 0.0f;
    }
    for (int r0 = 0; r0 < BT; r0 += m->chunk_rows) {  // losses only: the backward recomputes the chunk
        int rows = std::min(m->chunk_rows, BT - r0);
        PROF(on_gpu, "lm_head", lm_head_loss(on_gpu, m->losses + r0, m->logits_chunk, m->xf + (size_t)r0 * D, m->wte, m->targets + r0,
                                             rows, D, V));
    }
    return mamba_mean_loss(m, BT);
}

// The training step's forward: the layers only. The head's logits, the loss and its gradient
// are computed once, chunk by chunk, in mamba_backward (which returns the loss): a forward
// that computed the loss would run the head's largest product and the cross-entropy twice.
// The loss is the same bits as mamba_forward's (the same products and the same kernel).
static void mamba_forward_train(MambaModel* m, const int* tokens, const int* targets, int B, int T) {
    if (!targets) FATAL("mamba_forward_train needs targets");
    LinearWeightsFixed fixed;
    mamba_forward_body(m, tokens, targets, B, T);
}

// ---------------------------------------------------------------------------
// backward: every gradient accumulates (+=); call mamba_zero_grad first

static void mamba_zero_grad(MambaModel* m) { params_zero_grad(&m->params); }

// A Mamba-1 layer, backward, on activations of type AT (mamba_m1_forward's). The scratch gradients
// dy, du, ddelta, dz, dxin and dxdbl are AT (zeroed alike: zero bits are 0 in both), dBm, dCm, ddt_low
// and dxn fp32.
template <typename AT>
static void mamba_m1_backward(MambaModel* m, int l, int B, int T, bool lora) {
    const MambaConfig& c = m->cfg;
    int D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank, BT = B * T;
    bool on_gpu = m->on_gpu;
    const LayerParams& p = m->layers[l];
    const LayerParams& dp = m->dlayers[l];
    LayerActs& a = m->acts[l];
    LayerScratch& s = m->scratch;
    const LayerLora& ll = m->lora_layers[l];
    AT *xn = act_view<AT>(a.xn), *xin = act_view<AT>(a.xin), *z = act_view<AT>(a.z), *u = act_view<AT>(a.u);
    AT *dt_low = act_view<AT>(a.dt_low), *Bm = act_view<AT>(a.Bm), *Cm = act_view<AT>(a.Cm), *delta = act_view<AT>(a.delta);
    AT *y = act_view<AT>(a.y), *dy = act_view<AT>(s.dy), *du = act_view<AT>(s.du), *ddelta = act_view<AT>(s.ddelta);
    AT *dz = act_view<AT>(s.dz), *dxin = act_view<AT>(s.dxin), *dxdbl = act_view<AT>(s.dxdbl);
    // Each scratch gradient's first writer sets it (GRAD_SET: out_proj's dy, the scan's du, ddelta and dz,
    // dt_proj's ddt_low, the conv's dxin, in_proj's dxn; concat_columns writes dxdbl), so only what the
    // scan's atomics add into starts from zeros: dBm, dCm.
    PROF(on_gpu, "zero_scratch", backend_memset0(on_gpu, s.dBm, (size_t)BT * N * sizeof(float));
                                 backend_memset0(on_gpu, s.dCm, (size_t)BT * N * sizeof(float)));
    if (m->recompute) {  // what the forward did not keep (bit-identical to the forward's values)
        mamba_layer_norm(m, l, BT, sizeof(AT) == 2, false, "recompute");
        PROF(on_gpu, "recompute", conv1d_silu_forward(on_gpu, u, xin, p.conv_w, p.conv_b, B, T, E, K));
    }
    // m->dresid holds dloss/d(layer output); the residual branch passes it through unchanged
    PROF(on_gpu, "out_proj", linear_backward(on_gpu, dy, dp.out_proj_w, (float*)nullptr, m->dresid, y, p.out_proj_w, BT, E, D, GRAD_SET));
    if (lora && lora_active(ll.out_proj))
        PROF(on_gpu, "lora", lora_backward(on_gpu, ll.out_proj, mamba_lora_run(m, l, 3), a.h_out_proj, a.y, s.dy, m->dresid, nullptr, BT));
    PROF(on_gpu, "scan", selective_scan_backward(on_gpu, du, ddelta, dp.A_log, s.dBm, s.dCm, dp.D, dz, dp.dt_proj_b, dy, u, delta,
                                                 p.A_log, Bm, Cm, p.D, z, p.dt_proj_b, a.hs, B, T, E, N, GRAD_SET));
    PROF(on_gpu, "dt_proj", linear_backward(on_gpu, s.ddt_low, dp.dt_proj_w, (float*)nullptr, ddelta, dt_low, p.dt_proj_w, BT, R, E,
                                            GRAD_SET));
    if (lora && lora_active(ll.dt_proj))
        PROF(on_gpu, "lora", lora_backward(on_gpu, ll.dt_proj, mamba_lora_run(m, l, 2), a.h_dt_proj, a.dt_low, s.ddt_low, s.ddelta, nullptr, BT));
    PROF(on_gpu, "x_proj", concat_columns(on_gpu, dxdbl, s.ddt_low, s.dBm, s.dCm, BT, R, N, N);
                      linear_backward(on_gpu, du, dp.x_proj_w, (float*)nullptr, dxdbl, u, p.x_proj_w, BT, E, R + 2 * N));
    if (lora && lora_active(ll.x_proj))
        PROF(on_gpu, "lora", lora_backward(on_gpu, ll.x_proj, mamba_lora_run(m, l, 1), a.h_x_proj, a.u, s.du, s.dxdbl, nullptr, BT));
    PROF(on_gpu, "conv1d+silu", conv1d_silu_backward(on_gpu, dxin, dp.conv_w, dp.conv_b, du, xin, p.conv_w, p.conv_b, B, T, E, K,
                                                     GRAD_SET));
    PROF(on_gpu, "in_proj", linear_backward_split(on_gpu, s.dxn, dp.in_proj_w, dxin, dz, xn, p.in_proj_w, BT, D, E, E, GRAD_SET));
    if (lora && lora_active(ll.in_proj))
        PROF(on_gpu, "lora", lora_backward(on_gpu, ll.in_proj, mamba_lora_run(m, l, 0), a.h_in_proj, a.xn, s.dxn, s.dxin,
                                           ll.in_proj.out_features == 2 * E ? s.dz : nullptr, BT));
    // dresid += d(norm branch): dresid now holds dloss/d(layer input)
    PROF(on_gpu, "rmsnorm", rmsnorm_backward(on_gpu, m->dresid, dp.norm_w, s.dxn, a.resid, p.norm_w, a.rstd, BT, D));
}

static void mamba_layer_backward(MambaModel* m, int l, int B, int T) {
    bool lora = m->lora.rank > 0;  // (a merged model is for inference: mamba_backward refuses it)
#ifdef __CUDACC__
    if (m->acts[l].bf16) {  // the last forward's choice
        mamba_m1_backward<bf16>(m, l, B, T, false);
        return;
    }
#endif
    mamba_m1_backward<floatX>(m, l, B, T, lora);
}

// an M2, A or F layer's backward: m->dresid holds dloss/d(layer output) on entry and
// dloss/d(layer input) on return (the residual passes it through, the branch adds to it)
static void mamba_other_layer_backward(MambaModel* m, int l, int B, int T) {
    const MambaConfig& c = m->cfg;
    int D = c.d_model, H = c.mlp_mult * c.d_model, BT = B * T;
    bool on_gpu = m->on_gpu;
    LayerParams& p = m->layers[l];
    LayerParams& dp = m->dlayers[l];
    LayerActs& a = m->acts[l];
    LayerScratch& s = m->scratch;
    LayerKind kind = m->layer_index[l].kind;
    if (kind != LAYER_M2)  // (the Mamba-2 block sets dxn: GRAD_SET; its own scratch is m->m2_scratch)
        PROF(on_gpu, "zero_scratch", backend_memset0(on_gpu, (char*)m->scratch_memory + m->layer_scratch_start,
                                                     m->scratch_bytes - m->layer_scratch_start));
    if (m->recompute) PROF(on_gpu, "recompute", rmsnorm_forward(on_gpu, a.xn, a.rstd, a.resid, p.norm_w, BT, D));
    if (kind == LAYER_M2)  // profiled inside
        mamba2_block_backward(on_gpu, s.dxn, dp.m2, m->m2_scratch, m->dresid, a.xn, p.m2, a.m2, m->m2cfg, B, T, GRAD_SET);
    if (kind == LAYER_ATTN) {
        PROF(on_gpu, "attn_proj", linear_backward(on_gpu, s.datty, dp.attn_proj_w, (float*)nullptr, m->dresid, a.atty,
                                                  p.attn_proj_w, BT, D, D));
        PROF(on_gpu, "attention", attention_backward(on_gpu, s.dqkv, s.att_D, s.datty, a.qkv, a.atty, a.lse, nullptr, B, T, D,
                                                     c.attn_heads, true));
        PROF(on_gpu, "attn_qkv", linear_backward(on_gpu, s.dxn, dp.qkv_w, (float*)nullptr, s.dqkv, a.xn, p.qkv_w, BT, D, 3 * D));
    }
    if (kind == LAYER_MLP) {
        PROF(on_gpu, "recompute", gelu_forward(on_gpu, m->mlp_h, a.hpre, (size_t)BT * H));
        PROF(on_gpu, "mlp_proj", linear_backward(on_gpu, s.dh, dp.fc_proj_w, (float*)nullptr, m->dresid, m->mlp_h, p.fc_proj_w, BT, H, D));
        PROF(on_gpu, "mlp_fc", gelu_backward(on_gpu, s.dhpre, s.dh, a.hpre, (size_t)BT * H);
                               linear_backward(on_gpu, s.dxn, dp.fc_w, (float*)nullptr, s.dhpre, a.xn, p.fc_w, BT, D, H));
    }
    PROF(on_gpu, "rmsnorm", rmsnorm_backward(on_gpu, m->dresid, dp.norm_w, s.dxn, a.resid, p.norm_w, a.rstd, BT, D));
}

// returns the mean loss of the batch (the head's pass computes it again, or first after mamba_forward_train)
static float mamba_backward(MambaModel* m) {
    const MambaConfig& c = m->cfg;
    if (!m->have_targets) FATAL("mamba_backward needs a forward pass with targets");
    if (!m->params.with_grads) FATAL("mamba_backward: the model was built for inference (no gradients)");
    if (m->lora_merged) FATAL("mamba_backward: the adapters are merged into the base (unmerge to train)");
    int B = m->cur_B, T = m->cur_T, BT = B * T, D = c.d_model, V = c.vocab_size;
    bool on_gpu = m->on_gpu;
    LinearWeightsFixed fixed;  // no weight changes during the pass
    backend_memset0(on_gpu, m->dresid, (size_t)BT * D * sizeof(floatX));
    backend_memset0(on_gpu, m->dxf, (size_t)BT * D * sizeof(floatX));
    // the head, chunk by chunk (lm_head.h): the logits, the loss and dloss/dlogits (the fused
    // cross-entropy), then dxf += dlogits wte and dwte += dlogits^T xf
    for (int r0 = 0; r0 < BT; r0 += m->chunk_rows) {
        int rows = std::min(m->chunk_rows, BT - r0);
        const floatX* xf = m->xf + (size_t)r0 * D;
        PROF(on_gpu, "lm_head", lm_head_loss_backward(on_gpu, m->losses + r0, m->dxf + (size_t)r0 * D, m->dwte, m->logits_chunk, xf,
                                                      m->wte, m->targets + r0, rows, D, V, 1.0f / BT));
    }
    PROF(on_gpu, "rmsnorm", rmsnorm_backward(on_gpu, m->dresid, m->dnorm_f_w, m->dxf, m->resid_out, m->norm_f_w, m->rstd_f, BT, D));
    for (int l = c.n_layer - 1; l >= 0; l--) {
        if (m->layer_index[l].kind == LAYER_M1) mamba_layer_backward(m, l, B, T);
        else mamba_other_layer_backward(m, l, B, T);
    }
    if (m->dwpe) PROF(on_gpu, "embedding", position_add_backward(on_gpu, m->dwpe, m->dresid, B, T, D));
    PROF(on_gpu, "embedding", embedding_backward(on_gpu, m->dwte, m->dresid, m->tokens, BT, D));
    return mamba_mean_loss(m, BT);
}

// ---------------------------------------------------------------------------
// recurrent generation (CPU reference): constant memory per token, the conv
// keeps its last K-1 inputs and the scan its (E, N) state per layer

typedef struct {
    const MambaModel* m;
    std::vector<LayerParams> layers;          // views into the host copy, resolved once
    const float* wte; const float* norm_f_w; const float* wpe;
    std::vector<float> conv_state, ssm_state;  // M1: (n_layer, E, K-1), (n_layer, E, N)
    std::vector<std::vector<float>> m2_conv, m2_ssm;  // M2 layer l: (C, K-1), (H, P, N)
    std::vector<std::vector<float>> k_cache, v_cache; // A layer l: (pos, D) each, growing
    std::vector<char> m2_work; Mamba2Scratch m2_scratch;  // the M2 step's workspace (one token)
    int pos;                                   // tokens fed so far
    std::vector<float> x, xn, xz, u, xdbl, delta, y, out, xf, qkv, hid;
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
    s->wpe = m->wpe_index >= 0 ? base + m->params.tensors[m->wpe_index].offset : nullptr;
    s->conv_state.assign((size_t)c.n_layer * E * (K - 1), 0.0f);
    s->ssm_state.assign((size_t)c.n_layer * E * N, 0.0f);
    const Mamba2Config& c2 = m->m2cfg;
    s->m2_conv.assign(c.n_layer, {}); s->m2_ssm.assign(c.n_layer, {});
    s->k_cache.assign(c.n_layer, {}); s->v_cache.assign(c.n_layer, {});
    for (int l = 0; l < c.n_layer; l++)
        if (m->layer_index[l].kind == LAYER_M2) {
            s->m2_conv[l].assign((size_t)c2.conv_dim * (K - 1), 0.0f);
            s->m2_ssm[l].assign((size_t)c2.nheads * c2.headdim * c2.d_state, 0.0f);
        }
    if (mamba_has_kind(c, LAYER_M2)) {
        Arena count = {nullptr, 0};
        mamba2_layout_scratch(&s->m2_scratch, &count, c2, 1, 1);
        s->m2_work.assign(count.used + 16, 0);
        Arena work = {(char*)(((uintptr_t)s->m2_work.data() + 15) & ~(uintptr_t)15), 0};
        mamba2_layout_scratch(&s->m2_scratch, &work, c2, 1, 1);
    }
    s->pos = 0;
    s->x.resize(D); s->xn.resize(D); s->xz.resize(2 * E); s->u.resize(E);
    s->xdbl.resize(R + 2 * N); s->delta.resize(E); s->y.resize(E); s->out.resize(D); s->xf.resize(D);
    s->qkv.resize(3 * D); s->hid.resize((size_t)c.mlp_mult * D);
}

// feed one token; logits: (V)
static void mamba_step(MambaStepState* s, int token, float* logits) {
    const MambaConfig& c = s->m->cfg;
    int D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank, V = c.vocab_size, H = c.mlp_mult * D;
    if (s->wpe && s->pos >= c.max_seq) FATAL("generation past the model's %d learned positions (max_seq)", c.max_seq);
    float rstd;
    embedding_forward_cpu(s->x.data(), &token, s->wte, 1, D);
    if (s->wpe) add_inplace_cpu(s->x.data(), s->wpe + (size_t)s->pos * D, D);
    for (int l = 0; l < c.n_layer; l++) {
        const LayerParams& p = s->layers[l];
        rmsnorm_forward_cpu(s->xn.data(), &rstd, s->x.data(), p.norm_w, 1, D);
        switch (s->m->layer_index[l].kind) {
        case LAYER_M1:
            linear_forward_cpu(s->xz.data(), s->xn.data(), p.in_proj_w, nullptr, 1, D, 2 * E);  // xz = [x | z]
            conv1d_step_cpu(s->u.data(), s->conv_state.data() + (size_t)l * E * (K - 1), s->xz.data(), p.conv_w, p.conv_b, 1, E, K);
            silu_forward_cpu(s->u.data(), s->u.data(), E);
            linear_forward_cpu(s->xdbl.data(), s->u.data(), p.x_proj_w, nullptr, 1, E, R + 2 * N);
            linear_forward_cpu(s->delta.data(), s->xdbl.data(), p.dt_proj_w, nullptr, 1, R, E);
            selective_scan_step_cpu(s->y.data(), s->ssm_state.data() + (size_t)l * E * N, s->u.data(), s->delta.data(), p.A_log,
                                    s->xdbl.data() + R, s->xdbl.data() + R + N, p.D, s->xz.data() + E, p.dt_proj_b, 1, E, N);
            linear_forward_cpu(s->out.data(), s->y.data(), p.out_proj_w, nullptr, 1, E, D);
            break;
        case LAYER_M2:
            mamba2_step_cpu(s->out.data(), s->m2_conv[l].data(), s->m2_ssm[l].data(), s->m2_scratch, s->xn.data(), p.m2,
                            s->m->m2cfg, 1);
            break;
        case LAYER_ATTN: {
            // this token's k and v join the cache; its query attends to every cached position
            linear_forward_cpu(s->qkv.data(), s->xn.data(), p.qkv_w, nullptr, 1, D, 3 * D);
            std::vector<float>& kc = s->k_cache[l];
            std::vector<float>& vc = s->v_cache[l];
            kc.insert(kc.end(), s->qkv.begin() + D, s->qkv.begin() + 2 * D);
            vc.insert(vc.end(), s->qkv.begin() + 2 * D, s->qkv.end());
            attention_step_cpu(s->y.data(), s->qkv.data(), kc.data(), vc.data(), 1, s->pos + 1, s->pos + 1, D, c.attn_heads);
            linear_forward_cpu(s->out.data(), s->y.data(), p.attn_proj_w, nullptr, 1, D, D);
            break;
        }
        case LAYER_MLP:
            linear_forward_cpu(s->hid.data(), s->xn.data(), p.fc_w, nullptr, 1, D, H);
            gelu_forward_cpu(s->hid.data(), s->hid.data(), H);
            linear_forward_cpu(s->out.data(), s->hid.data(), p.fc_proj_w, nullptr, 1, H, D);
            break;
        default: FATAL("unknown layer kind");
        }
        add_inplace_cpu(s->x.data(), s->out.data(), D);
    }
    rmsnorm_forward_cpu(s->xf.data(), &rstd, s->x.data(), s->norm_f_w, 1, D);
    linear_forward_cpu(logits, s->xf.data(), s->wte, nullptr, 1, D, V);
    s->pos++;
}

// the new tokens of a generation that fit a model with learned positions: prompt_len + n - 1
// tokens are fed (the last new one is only sampled), at most max_seq (a note says when n shrinks)
static int mamba_generation_fit(const MambaConfig& c, int prompt_len, int n) {
    if (!c.pos_embed || prompt_len + n - 1 <= c.max_seq) return n;
    int fit = std::max(0, c.max_seq - prompt_len + 1);
    fprintf(stderr, "note: %d prompt + %d new tokens exceed the model's %d positions: generating %d\n", prompt_len, n, c.max_seq, fit);
    return fit;
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
    n = mamba_generation_fit(m->cfg, (int)prompt.size(), n);
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
