// vlm_model.h: a tiny LLaVA, one definition for both backends.
//
//   image (H, W, 3) -> patches (P = (H/p)^2, p*p*3) -> patch embedding (Dv) -> [CLS] + positions
//   -> ViT blocks (bidirectional) -> features of the penultimate block, [CLS] dropped   (P, Dv)
//   -> projector: linear, or Linear-GELU-Linear as LLaVA-1.5                         (P, Dl)
//   text [<bos> <image> question <sep> answer <eos>]: the P projected features take
//   the place of <image>, so the LM sees <bos>, P image tokens, then the text
//   -> token + learned position embeddings -> GPT blocks (causal) -> LayerNorm
//   -> logits = x wte^T (tied head) -> cross-entropy on the tokens the data marks
//      (the answer, or the caption), mean over those tokens
//
// Text positions map to LM positions as: token 0 -> 0, token 1 (<image>) -> P
// (the last image feature predicts what follows <image>), token t >= 2 -> t + P - 1.
//
// The interface, as the Mamba LM's: vlm_build / vlm_init_params / vlm_forward /
// vlm_zero_grad / vlm_backward / params_adamw_step / vlm_free, vlm_config_kv.
#pragma once
#include <string>
#include <vector>
#include "common.h"
#include "checkpoint.h"
#include "cross_entropy.h"
#include "embedding.h"
#include "params.h"
#include "patch_embed.h"
#include "sequence_ops.h"
#include "transformer.h"

#define VLM_IMAGE_TOKEN 3  // the <image> placeholder's id (src/tokenizer.h)

typedef struct {
    int image_size, patch;                 // square RGB images, patch size p
    int v_layers, v_dim, v_heads;          // vision encoder
    int proj_mlp;                          // 0: linear projector, 1: Linear-GELU-Linear
    int vocab, l_layers, l_dim, l_heads;   // language model
    int max_text;                          // text tokens per sequence (with <bos> and <image>)
} VlmConfig;

static int vlm_num_patches(const VlmConfig& c) { return (c.image_size / c.patch) * (c.image_size / c.patch); }
static int vlm_lm_len(const VlmConfig& c) { return c.max_text - 1 + vlm_num_patches(c); }
// LLaVA reads the penultimate block: the input of the last one (the whole stack when it has one block)
static int vlm_feature_layer(const VlmConfig& c) { return c.v_layers > 1 ? c.v_layers - 1 : 1; }

static ConfigKV vlm_config_kv(const VlmConfig& c) {
    auto s = [](int v) { return std::to_string(v); };
    return {{"image_size", s(c.image_size)}, {"patch", s(c.patch)},     {"v_layers", s(c.v_layers)},
            {"v_dim", s(c.v_dim)},           {"v_heads", s(c.v_heads)}, {"proj_mlp", s(c.proj_mlp)},
            {"vocab", s(c.vocab)},           {"l_layers", s(c.l_layers)}, {"l_dim", s(c.l_dim)},
            {"l_heads", s(c.l_heads)},       {"max_text", s(c.max_text)}};
}

static VlmConfig vlm_config_from_kv(const ConfigKV& kv, const char* path) {
    VlmConfig c = {};
    int* fields[] = {&c.image_size, &c.patch, &c.v_layers, &c.v_dim, &c.v_heads, &c.proj_mlp,
                     &c.vocab, &c.l_layers, &c.l_dim, &c.l_heads, &c.max_text};
    ConfigKV names = vlm_config_kv(c);
    for (size_t i = 0; i < names.size(); i++) {
        const std::string* v = config_get(kv, names[i].first);
        if (!v) FATAL("checkpoint %s has no config key %s", path, names[i].first.c_str());
        *fields[i] = atoi(v->c_str());
    }
    return c;
}

typedef struct {
    VlmConfig cfg;
    bool on_gpu;
    int B;                 // the largest batch the activations hold
    int P, K, Tl;          // patches, patch vector length, LM sequence length
    ParamStore params;
    Transformer vit, lm;
    // parameter indices
    int patch_w, patch_b, cls, vpos, p1_w, p1_b, p2_w, p2_b, wte, wpe, lnf_w, lnf_b;
    // activations
    float* images;         // (B, H, W, 3)
    floatX* patches;       // (B, P, K)
    floatX* patch_emb;     // (B, P, Dv)
    floatX* feats;         // (B, P, Dv) vision features, [CLS] dropped
    floatX* proj_h;        // (B, P, Dl) first projector layer (before GELU)
    floatX* proj_g;        // (B, P, Dl) after GELU (MLP projector only)
    floatX* img_tok;       // (B, P, Dl) the projected image tokens
    floatX* tok_emb;       // (B, Tl, Dl)
    floatX* lnf;           // (B, Tl, Dl)
    float *lnf_mean, *lnf_rstd;  // (B, Tl)
    floatX* logits;        // (B, Tl, V); after a forward with targets: dloss/dlogits
    float* losses;         // (B, Tl)
    // backward scratch
    floatX *dresid, *dlnf, *dtok, *dimg, *dproj_g, *dproj_h, *dfeats, *dvresid, *dpatch;
    void* acts_memory; size_t acts_bytes;
    void* scratch_memory; size_t scratch_bytes;
    // the LM's sequences, host and backend
    std::vector<int> lm_tokens, lm_targets, lm_lengths;
    int *d_tokens, *d_targets, *d_lengths;
    std::vector<float> host_losses;
    int cur_B;
    bool have_targets;
    float n_targets;
} VlmModel;

static void vlm_declare_params(VlmModel* m) {
    const VlmConfig& c = m->cfg;
    ParamStore* ps = &m->params;
    int Dv = c.v_dim, Dl = c.l_dim;
    params_set_prefix(ps, "vision.");
    m->patch_w = params_add(ps, "patch.weight", {Dv, m->K}, true);
    m->patch_b = params_add(ps, "patch.bias", {Dv}, false);
    m->cls = params_add(ps, "cls", {Dv}, false);
    m->vpos = params_add(ps, "pos", {m->P + 1, Dv}, false);
    params_set_prefix(ps, "");
    transformer_declare(&m->vit, ps, "vision.", {c.v_layers, Dv, c.v_heads, false});
    params_set_prefix(ps, "proj.");
    m->p1_w = params_add(ps, "fc1.weight", {Dl, Dv}, true);
    m->p1_b = params_add(ps, "fc1.bias", {Dl}, false);
    m->p2_w = m->p2_b = -1;
    if (c.proj_mlp) {
        m->p2_w = params_add(ps, "fc2.weight", {Dl, Dl}, true);
        m->p2_b = params_add(ps, "fc2.bias", {Dl}, false);
    }
    params_set_prefix(ps, "lm.");
    m->wte = params_add(ps, "wte", {c.vocab, Dl}, true);
    m->wpe = params_add(ps, "wpe", {m->Tl, Dl}, false);
    params_set_prefix(ps, "");
    transformer_declare(&m->lm, ps, "lm.", {c.l_layers, Dl, c.l_heads, true});
    params_set_prefix(ps, "lm.");
    m->lnf_w = params_add(ps, "ln_f.weight", {Dl}, false);
    m->lnf_b = params_add(ps, "ln_f.bias", {Dl}, false);
    params_set_prefix(ps, "");
}

static void vlm_layout(VlmModel* m, Arena* acts, Arena* scratch) {
    size_t B = m->B, P = m->P, Dv = m->cfg.v_dim, Dl = m->cfg.l_dim, Tl = m->Tl, V = m->cfg.vocab;
    size_t H = m->cfg.image_size;
    m->images = arena_take<float>(acts, B * H * H * 3);
    m->patches = arena_take<floatX>(acts, B * P * m->K);
    m->patch_emb = arena_take<floatX>(acts, B * P * Dv);
    transformer_layout_acts(&m->vit, acts, (int)B, (int)P + 1);
    m->feats = arena_take<floatX>(acts, B * P * Dv);
    m->proj_h = arena_take<floatX>(acts, B * P * Dl);
    m->proj_g = arena_take<floatX>(acts, B * P * Dl);
    m->img_tok = arena_take<floatX>(acts, B * P * Dl);
    m->tok_emb = arena_take<floatX>(acts, B * Tl * Dl);
    transformer_layout_acts(&m->lm, acts, (int)B, (int)Tl);
    m->lnf = arena_take<floatX>(acts, B * Tl * Dl);
    m->lnf_mean = arena_take<float>(acts, B * Tl);
    m->lnf_rstd = arena_take<float>(acts, B * Tl);
    m->logits = arena_take<floatX>(acts, B * Tl * V);
    m->losses = arena_take<float>(acts, B * Tl);
    if (!scratch) return;
    m->dresid = arena_take<floatX>(scratch, B * Tl * Dl);
    m->dlnf = arena_take<floatX>(scratch, B * Tl * Dl);
    m->dtok = arena_take<floatX>(scratch, B * Tl * Dl);
    m->dimg = arena_take<floatX>(scratch, B * P * Dl);
    m->dproj_g = arena_take<floatX>(scratch, B * P * Dl);
    m->dproj_h = arena_take<floatX>(scratch, B * P * Dl);
    m->dfeats = arena_take<floatX>(scratch, B * P * Dv);
    m->dvresid = arena_take<floatX>(scratch, B * (P + 1) * Dv);
    m->dpatch = arena_take<floatX>(scratch, B * P * Dv);
    transformer_layout_scratch(&m->vit, scratch);
    transformer_layout_scratch(&m->lm, scratch);
}

static void vlm_build(VlmModel* m, const VlmConfig& cfg, int B, bool on_gpu, bool with_grads = true) {
    const VlmConfig& c = cfg;
    if (c.image_size < 1 || c.patch < 1 || c.image_size % c.patch) FATAL("image size %d must be a multiple of the patch size %d", c.image_size, c.patch);
    if (c.v_layers < 1 || c.l_layers < 1 || c.v_dim % c.v_heads || c.l_dim % c.l_heads)
        FATAL("invalid VLM config: layers >= 1, widths multiples of their head counts");
    if (c.max_text < 2 || c.vocab <= VLM_IMAGE_TOKEN) FATAL("invalid VLM config: max_text >= 2, vocab > %d", VLM_IMAGE_TOKEN);
    m->cfg = cfg; m->on_gpu = on_gpu; m->B = B;
    m->P = vlm_num_patches(c); m->K = c.patch * c.patch * 3; m->Tl = vlm_lm_len(c);
    params_init(&m->params);
    vlm_declare_params(m);
    params_allocate(&m->params, on_gpu, with_grads);
    transformer_resolve(&m->vit, &m->params);
    transformer_resolve(&m->lm, &m->params);
    Arena count_a = {nullptr, 0}, count_s = {nullptr, 0};
    vlm_layout(m, &count_a, &count_s);
    m->acts_bytes = count_a.used;
    m->scratch_bytes = with_grads ? count_s.used : 0;
    m->acts_memory = backend_malloc(on_gpu, m->acts_bytes);
    m->scratch_memory = with_grads ? backend_malloc(on_gpu, m->scratch_bytes) : nullptr;
    Arena a = {(char*)m->acts_memory, 0}, s = {(char*)m->scratch_memory, 0};
    vlm_layout(m, &a, with_grads ? &s : nullptr);
    size_t BT = (size_t)B * m->Tl;
    m->lm_tokens.assign(BT, 0); m->lm_targets.assign(BT, -1); m->lm_lengths.assign(B, 0);
    m->d_tokens = (int*)backend_malloc(on_gpu, BT * sizeof(int));
    m->d_targets = (int*)backend_malloc(on_gpu, BT * sizeof(int));
    m->d_lengths = (int*)backend_malloc(on_gpu, B * sizeof(int));
    m->host_losses.assign(BT, 0.0f);
    m->cur_B = 0; m->have_targets = false; m->n_targets = 0;
}

static void vlm_free(VlmModel* m) {
    bool on_gpu = m->on_gpu;
    params_free(&m->params);
    backend_free(on_gpu, m->acts_memory);
    if (m->scratch_memory) backend_free(on_gpu, m->scratch_memory);
    backend_free(on_gpu, m->d_tokens); backend_free(on_gpu, m->d_targets); backend_free(on_gpu, m->d_lengths);
}

// ViT and GPT: GPT-2's N(0, 0.02); the patch embedding and projector as nn.Linear's
// default U(+-1/sqrt(fan_in)); [CLS] and positions N(0, 0.02); LayerNorms 1 and 0
static void vlm_init_params(VlmModel* m, uint64_t seed) {
    const ParamStore* ps = &m->params;
    std::vector<float> h(ps->num_params, 0.0f);
    Rng rng; rng_seed(&rng, seed);
    auto T = [&](int k) { return h.data() + ps->tensors[k].offset; };
    auto numel = [&](int k) { return ps->tensors[k].numel; };
    auto normal = [&](int k, float std) { for (size_t i = 0; i < numel(k); i++) T(k)[i] = std * rng_normal(&rng); };
    auto uniform = [&](int k, float bound) { for (size_t i = 0; i < numel(k); i++) T(k)[i] = bound * (2.0f * rng_uniform(&rng) - 1.0f); };
    const VlmConfig& c = m->cfg;
    uniform(m->patch_w, 1.0f / sqrtf((float)m->K)); uniform(m->patch_b, 1.0f / sqrtf((float)m->K));
    normal(m->cls, 0.02f); normal(m->vpos, 0.02f);
    transformer_init(&m->vit, ps, h.data(), &rng);
    uniform(m->p1_w, 1.0f / sqrtf((float)c.v_dim)); uniform(m->p1_b, 1.0f / sqrtf((float)c.v_dim));
    if (c.proj_mlp) { uniform(m->p2_w, 1.0f / sqrtf((float)c.l_dim)); uniform(m->p2_b, 1.0f / sqrtf((float)c.l_dim)); }
    normal(m->wte, 0.02f); normal(m->wpe, 0.02f);
    transformer_init(&m->lm, ps, h.data(), &rng);
    for (size_t i = 0; i < numel(m->lnf_w); i++) T(m->lnf_w)[i] = 1.0f;
    backend_copy(m->on_gpu, ps->params, h.data(), ps->num_params * sizeof(float), true);
}

static float* vlm_param(const VlmModel* m, int k) { return param_data(&m->params, k); }
static float* vlm_grad(const VlmModel* m, int k) { return param_grad(&m->params, k); }

// Builds the LM's token, target and length arrays from the text batch (host).
// text_tokens, text_targets: (B, max_text); text_lengths: (B); token 1 must be <image>.
static void vlm_build_sequences(VlmModel* m, const int* text_tokens, const int* text_targets, const int* text_lengths, int B) {
    int Tt = m->cfg.max_text, Tl = m->Tl, P = m->P;
    for (int b = 0; b < B; b++) {
        const int* tok = text_tokens + (size_t)b * Tt;
        const int* tgt = text_targets ? text_targets + (size_t)b * Tt : nullptr;
        int len = text_lengths[b];
        if (len < 2 || len > Tt) FATAL("text length %d of row %d is outside [2, %d]", len, b, Tt);
        if (tok[1] != VLM_IMAGE_TOKEN) FATAL("row %d: text token 1 is %d, not <image> (%d)", b, tok[1], VLM_IMAGE_TOKEN);
        int* lt = &m->lm_tokens[(size_t)b * Tl];
        int* lg = &m->lm_targets[(size_t)b * Tl];
        for (int i = 0; i < Tl; i++) { lt[i] = 0; lg[i] = -1; }
        for (int t = 0; t < Tt; t++) {
            int pos = t == 0 ? 0 : (t == 1 ? P : t + P - 1);
            if (t != 1) lt[pos] = t < len ? tok[t] : 0;  // the image rows keep the <pad> id; their embedding is replaced
            if (tgt && t < len) lg[pos] = tgt[t];
        }
        m->lm_lengths[b] = len + P - 1;
    }
}

// images: (B, H, W, 3) host floats in [0, 1]; text arrays as vlm_build_sequences.
// Returns the mean loss over the marked tokens (0 without targets). Without
// targets the logits stay in m->logits.
static float vlm_forward(VlmModel* m, const float* images, const int* text_tokens, const int* text_targets,
                         const int* text_lengths, int B) {
    const VlmConfig& c = m->cfg;
    bool on_gpu = m->on_gpu;
    if (B < 1 || B > m->B) FATAL("vlm_forward: batch %d outside [1, %d]", B, m->B);
    int P = m->P, Dv = c.v_dim, Dl = c.l_dim, Tl = m->Tl, V = c.vocab, BT = B * Tl, H = c.image_size;
    for (int i = 0; i < B * c.max_text; i++)
        if (text_tokens[i] < 0 || text_tokens[i] >= V) FATAL("text token %d out of range [0, %d)", text_tokens[i], V);
    vlm_build_sequences(m, text_tokens, text_targets, text_lengths, B);
    backend_copy(on_gpu, m->images, images, (size_t)B * H * H * 3 * sizeof(float), true);
    backend_copy(on_gpu, m->d_tokens, m->lm_tokens.data(), BT * sizeof(int), true);
    backend_copy(on_gpu, m->d_lengths, m->lm_lengths.data(), B * sizeof(int), true);
    m->cur_B = B; m->have_targets = text_targets != nullptr;
    // vision encoder up to the feature layer
    PROF(on_gpu, "patch_embed", patch_embed_forward(on_gpu, m->patch_emb, m->patches, m->images, vlm_param(m, m->patch_w),
                                                    vlm_param(m, m->patch_b), B, H, H, c.patch, Dv));
    floatX* vin = m->vit.acts[0].resid;
    PROF(on_gpu, "vit_embed", cls_prepend_forward(on_gpu, vin, m->patch_emb, vlm_param(m, m->cls), B, P, Dv);
                              position_add_forward(on_gpu, vin, vlm_param(m, m->vpos), B, P + 1, Dv));
    int fl = vlm_feature_layer(c);
    transformer_forward(&m->vit, on_gpu, nullptr, B, P + 1, fl);
    floatX* vfeat = fl < c.v_layers ? m->vit.acts[fl].resid : m->vit.out;
    cls_drop_forward(on_gpu, m->feats, vfeat, B, P, Dv);
    // projector
    PROF(on_gpu, "projector", linear_forward(on_gpu, m->proj_h, m->feats, vlm_param(m, m->p1_w), vlm_param(m, m->p1_b), B * P, Dv, Dl);
         if (c.proj_mlp) {
             gelu_forward(on_gpu, m->proj_g, m->proj_h, (size_t)B * P * Dl);
             linear_forward(on_gpu, m->img_tok, m->proj_g, vlm_param(m, m->p2_w), vlm_param(m, m->p2_b), B * P, Dl, Dl);
         } else {
             backend_copy_device(on_gpu, m->img_tok, m->proj_h, (size_t)B * P * Dl * sizeof(floatX));
         });
    // the LM over <bos>, image tokens, text
    floatX* lin = m->lm.acts[0].resid;
    PROF(on_gpu, "lm_embed", embedding_forward(on_gpu, m->tok_emb, m->d_tokens, vlm_param(m, m->wte), BT, Dl);
                             image_splice_forward(on_gpu, lin, m->tok_emb, m->img_tok, B, Tl, P, Dl);
                             position_add_forward(on_gpu, lin, vlm_param(m, m->wpe), B, Tl, Dl));
    transformer_forward(&m->lm, on_gpu, m->d_lengths, B, Tl, c.l_layers);
    PROF(on_gpu, "layernorm", layernorm_forward(on_gpu, m->lnf, m->lnf_mean, m->lnf_rstd, m->lm.out, vlm_param(m, m->lnf_w),
                                                vlm_param(m, m->lnf_b), BT, Dl));
    PROF(on_gpu, "lm_head", linear_forward(on_gpu, m->logits, m->lnf, vlm_param(m, m->wte), (const float*)nullptr, BT, Dl, V));
    if (!text_targets) return 0.0f;
    int n = 0;
    for (int i = 0; i < BT; i++) n += m->lm_targets[i] >= 0;
    if (n == 0) FATAL("vlm_forward: the batch has no target token");
    m->n_targets = (float)n;
    backend_copy(on_gpu, m->d_targets, m->lm_targets.data(), BT * sizeof(int), true);
    PROF(on_gpu, "cross_entropy", cross_entropy(on_gpu, m->losses, m->logits, m->d_targets, BT, V, 1.0f / n, true));
    backend_copy(on_gpu, m->host_losses.data(), m->losses, BT * sizeof(float), false);
    double sum = 0;
    for (int i = 0; i < BT; i++) sum += m->host_losses[i];
    return (float)(sum / n);
}

static void vlm_zero_grad(VlmModel* m) { params_zero_grad(&m->params); }

static void vlm_backward(VlmModel* m) {
    const VlmConfig& c = m->cfg;
    if (!m->have_targets) FATAL("vlm_backward needs a forward pass with targets");
    if (!m->params.with_grads) FATAL("vlm_backward: the model was built for inference (no gradients)");
    bool on_gpu = m->on_gpu;
    int B = m->cur_B, P = m->P, Dv = c.v_dim, Dl = c.l_dim, Tl = m->Tl, V = c.vocab, BT = B * Tl, H = c.image_size;
    backend_memset0(on_gpu, m->scratch_memory, m->scratch_bytes);
    // head and final norm (m->logits holds dloss/dlogits)
    PROF(on_gpu, "lm_head", linear_backward(on_gpu, m->dlnf, vlm_grad(m, m->wte), nullptr, m->logits, m->lnf, vlm_param(m, m->wte), BT, Dl, V));
    PROF(on_gpu, "layernorm", layernorm_backward(on_gpu, m->dresid, vlm_grad(m, m->lnf_w), vlm_grad(m, m->lnf_b), m->dlnf, m->lm.out,
                                                 vlm_param(m, m->lnf_w), m->lnf_mean, m->lnf_rstd, BT, Dl));
    transformer_backward(&m->lm, on_gpu, m->dresid, m->d_lengths, B, Tl, c.l_layers);
    PROF(on_gpu, "lm_embed", position_add_backward(on_gpu, vlm_grad(m, m->wpe), m->dresid, B, Tl, Dl);
                             image_splice_backward(on_gpu, m->dtok, m->dimg, m->dresid, B, Tl, P, Dl);
                             embedding_backward(on_gpu, vlm_grad(m, m->wte), m->dtok, m->d_tokens, BT, Dl));
    // projector
    PROF(on_gpu, "projector",
         if (c.proj_mlp) {
             linear_backward(on_gpu, m->dproj_g, vlm_grad(m, m->p2_w), vlm_grad(m, m->p2_b), m->dimg, m->proj_g, vlm_param(m, m->p2_w), B * P, Dl, Dl);
             gelu_backward(on_gpu, m->dproj_h, m->dproj_g, m->proj_h, (size_t)B * P * Dl);
         } else {
             backend_copy_device(on_gpu, m->dproj_h, m->dimg, (size_t)B * P * Dl * sizeof(floatX));
         }
         linear_backward(on_gpu, m->dfeats, vlm_grad(m, m->p1_w), vlm_grad(m, m->p1_b), m->dproj_h, m->feats, vlm_param(m, m->p1_w), B * P, Dv, Dl));
    // vision encoder from the feature layer down
    int fl = vlm_feature_layer(c);
    cls_drop_backward(on_gpu, m->dvresid, m->dfeats, B, P, Dv);
    transformer_backward(&m->vit, on_gpu, m->dvresid, nullptr, B, P + 1, fl);
    PROF(on_gpu, "vit_embed", position_add_backward(on_gpu, vlm_grad(m, m->vpos), m->dvresid, B, P + 1, Dv);
                              cls_prepend_backward(on_gpu, m->dpatch, vlm_grad(m, m->cls), m->dvresid, B, P, Dv));
    PROF(on_gpu, "patch_embed", patch_embed_backward(on_gpu, vlm_grad(m, m->patch_w), vlm_grad(m, m->patch_b), m->dpatch, m->patches,
                                                     B, P, m->K, Dv));
    (void)H;
}
