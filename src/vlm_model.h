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
// Visual-token reduction (inference only, src/token_reduction.h; vlm_set_reduction):
// the P features become P' <= P rows before the projector (pooled, or a subset in
// raster order), and the LM sequence is built with P' image rows: <bos> at 0, the
// kept tokens in rows 1..P', text token t >= 2 in row t + P' - 1 (P - P' rows shorter). Their
// positions stay those of the unreduced sequence (vlm_reduced_positions): the kept patch k at
// 1 + k (a pooled window at its top-left patch's), the text after all P image slots.
// FastV (reduce fastv, inside the LM; the projector still reads all P): the sequence with all P
// image tokens goes through blocks 0..L'-1 (L' = reduce.layer); block L''s attention from the query
// row (the first <sep> after <image>, else the last valid row) ranks the image tokens
// (fastv_image_scores, averaged over heads); the top P' (Pf) stay, in order, and the residual rows
// [<bos>, kept image rows, every text row] are gathered into a sequence P - P' rows shorter that
// runs through blocks L'..L-1, the final LN and the head. Positions were added at the input, so
// every row keeps its original position. The logits and targets are laid out as a sequence with
// P' image rows (vlm_out_image_rows: what vlm_build_sequences(..., n_image = P') builds; the target
// of <image> sits at the last kept image row). KV cache: layers < L' hold all n prompt rows,
// layers >= L' only the n - (P - P') kept ones (VlmKVCache::drop per layer); a decode step adds
// one row to every layer at the position n (the embedding's) and the cache slot n - drop[l], so
// it equals the forward of the longer sequence with the same pruning. m->fastv_force (tests):
// the kept indices (B, P') to use instead of the ranking.
// ToMe (reduce tome, inside the vision encoder; src/tome.h): blocks 0..fl-1 (the ones that produce
// the feature layer) merge tokens by bipartite soft matching with proportional attention, r_l per
// block (tome_schedule), so P' patch tokens leave the feature layer. The projector reads those P'
// rows; each takes the LM position of its representative patch (the B token its merges landed in,
// through every block: a token that was never a merge source keeps its own patch), as the kept
// tokens of random/uniform do (vlm_reduced_positions via m->keep).
// vlm_forward's stages can also be run one by one (the profiler times them):
// vlm_encode_images -> vlm_reduce_tokens -> vlm_project -> vlm_prepare_sequences +
// vlm_lm_forward; generation: vlm_kv_from_prefill, then vlm_decode_step per token.
//
// Four forward passes share the parameters, one per kind of training:
//   vlm_forward        the LLaVA path above (stages align, instruct, e2e)
//   vlm_forward_text   the LM alone on text, <image> dropped (stage lm)
//   vlm_clip_forward   CLIP (stage clip): image embedding = proj(LN(ViT output at [CLS])),
//                      text embedding = proj(LN(text encoder output at <eos>)), a causal
//                      transformer of its own; contrastive loss with a learned scale
//   vlm_classify_forward  the ViT as an image classifier (stage classify; a model built with
//                      n_classes > 0): logits = head(LN(ViT output at [CLS])), every block run,
//                      cross-entropy. At inference its tokens can be reduced: tome (merging in
//                      every block), or pool / random / uniform at the encoder's INPUT (after the
//                      patch embedding and positions, [CLS] kept), so every block runs on fewer rows
// vlm_backward runs the backward of whichever came last. Frozen tensors (a stage's
// vlm_build(..., frozen prefixes)) get no gradient or optimizer memory; the
// gradient still flows through them to what trains (align trains the projector
// through the frozen LM).
//
// The interface, as the Mamba LM's: vlm_build / vlm_init_params / vlm_forward* /
// vlm_zero_grad / vlm_backward / params_adamw_step / vlm_free, vlm_config_kv.
#pragma once
#include <algorithm>
#include <string>
#include <vector>
#include "common.h"
#include "checkpoint.h"
#include "clip_loss.h"
#include "cross_entropy.h"
#include "embedding.h"
#include "params.h"
#include "patch_embed.h"
#include "sequence_ops.h"
#include "token_reduction.h"
#include "tome.h"
#include "transformer.h"

#define VLM_IMAGE_TOKEN 3  // the <image> placeholder's id (src/tokenizer.h)
#define VLM_SEP_TOKEN 5    // <sep>: the prompt's end (FastV's query row)

typedef struct {
    int image_size, patch;                 // square RGB images, patch size p
    int v_layers, v_dim, v_heads;          // vision encoder
    int proj_mlp;                          // 0: linear projector, 1: Linear-GELU-Linear
    int vocab, l_layers, l_dim, l_heads;   // language model
    int max_text;                          // text tokens per sequence (with <bos> and <image>)
    int t_layers, t_dim, t_heads;          // CLIP's text encoder
    int clip_dim;                          // CLIP's joint embedding width
} VlmConfig;

static int vlm_num_patches(const VlmConfig& c) { return (c.image_size / c.patch) * (c.image_size / c.patch); }
static int vlm_lm_len(const VlmConfig& c) { return c.max_text - 1 + vlm_num_patches(c); }
// the LM sequence with n_image image tokens (P' after a reduction)
static int vlm_lm_len(const VlmConfig& c, int n_image) { return c.max_text - 1 + n_image; }
// LLaVA reads the penultimate block: the input of the last one (the whole stack when it has one block)
static int vlm_feature_layer(const VlmConfig& c) { return c.v_layers > 1 ? c.v_layers - 1 : 1; }

static ConfigKV vlm_config_kv(const VlmConfig& c) {
    auto s = [](int v) { return std::to_string(v); };
    return {{"image_size", s(c.image_size)}, {"patch", s(c.patch)},     {"v_layers", s(c.v_layers)},
            {"v_dim", s(c.v_dim)},           {"v_heads", s(c.v_heads)}, {"proj_mlp", s(c.proj_mlp)},
            {"vocab", s(c.vocab)},           {"l_layers", s(c.l_layers)}, {"l_dim", s(c.l_dim)},
            {"l_heads", s(c.l_heads)},       {"max_text", s(c.max_text)}, {"t_layers", s(c.t_layers)},
            {"t_dim", s(c.t_dim)},           {"t_heads", s(c.t_heads)},   {"clip_dim", s(c.clip_dim)}};
}

static VlmConfig vlm_config_from_kv(const ConfigKV& kv, const char* path) {
    VlmConfig c = {};
    int* fields[] = {&c.image_size, &c.patch, &c.v_layers, &c.v_dim, &c.v_heads, &c.proj_mlp,
                     &c.vocab, &c.l_layers, &c.l_dim, &c.l_heads, &c.max_text, &c.t_layers, &c.t_dim,
                     &c.t_heads, &c.clip_dim};
    config_read_ints(kv, vlm_config_kv(c), fields, path);
    return c;
}

typedef enum { VLM_PASS_IMAGE, VLM_PASS_TEXT, VLM_PASS_CLIP, VLM_PASS_CLASSIFY } VlmPass;

typedef struct {
    VlmConfig cfg;
    bool on_gpu;
    VlmPass pass;          // the kind of the last forward (what vlm_backward undoes)
    int cur_T;             // the LM sequence length of the last forward
    int B;                 // the largest batch the activations hold
    int P, K, Tl;          // patches, patch vector length, LM sequence length (the largest: P image tokens)
    // visual-token reduction (vlm_set_reduction; none by default)
    TokenReduction reduce;
    int Pi;                // image tokens the LM sees: P' (= P without a reduction)
    int cur_Pi;            // ... in the last LLaVA forward (what vlm_backward checks)
    int Pf;                // image rows from block reduce.layer on: P' with fastv, Pi otherwise
    int cur_cut, cur_drop, cur_T_in;  // last forward: first pruned block (L: none), rows dropped, rows before
    std::vector<int> fastv_keep;      // (B, Pf) the last fastv selection (host)
    std::vector<int> fastv_force;     // tests: (B, Pf) kept indices to use instead of the ranking
    std::vector<float> fastv_score;   // (B, P) the last ranking scores (host)
    std::vector<int> fastv_rows;      // (B, T') the kept rows of each sequence
    std::vector<int> fastv_query;     // (B) the query row of each sequence
    int* d_fastv_rows;
    std::vector<float> saliency;      // (B, P) salient: the last saliency (host)
    int grid;              // the patch grid's side: P = grid * grid
    std::vector<int> keep; // (B, Pi) kept patch indices (random, uniform)
    int* d_keep;
    // a reduction before the projector keeps each kept token's original position (and the
    // text's): the LM's position index of every row, (B, Tl), host and backend
    std::vector<int> pos_index;
    int* d_pos_index;
    floatX* img_feats;     // what the projector reads: feats, or feats_red after a reduction
    // ToMe (reduce tome) and the classifier's input reductions
    TomeRun tome;
    std::vector<int> tome_sched;  // merges per block (tome_schedule)
    floatX* tome_scratch;  // (B, P+1, Dv) merged rows
    int vis_T;             // rows per image the last vision forward left ([CLS] + patch tokens)
    std::vector<int> in_off, in_mem;  // the classifier's input reduction: groups (token_merge)
    float* pool_ones;      // (B, P+1) ones: the input reduction's weights
    size_t pool_ones_n;
    // the classifier (n_classes > 0): head on LN(ViT output at [CLS])
    int n_classes, head_w, head_b;
    floatX* cls_logits;    // (B, n_classes); after a forward with labels: dloss/dlogits
    float* cls_losses;     // (B)
    int *d_labels, *d_class_rows;
    std::vector<int> class_rows;
    ParamStore params;
    Transformer vit, lm, txt;
    LoraConfig lm_lora;    // adapters on the GPT (rank 0: none); its base is then frozen
    // parameter indices
    int patch_w, patch_b, cls, vpos, p1_w, p1_b, p2_w, p2_b, wte, wpe, lnf_w, lnf_b;
    int vlnf_w, vlnf_b, vproj, t_wte, t_wpe, tlnf_w, tlnf_b, tproj, log_scale;
    int Tt;                // the text encoder's sequence: max_text - 1 (no <image>)
    // activations
    float* images;         // (B, H, W, 3)
    floatX* patches;       // (B, P, K)
    floatX* patch_emb;     // (B, P, Dv)
    floatX* feats;         // (B, P, Dv) vision features, [CLS] dropped
    floatX* feats_red;     // (B, P', Dv) the reduced features (room for P)
    floatX* proj_h;        // (B, P, Dl) first projector layer (before GELU)
    floatX* proj_g;        // (B, P, Dl) after GELU (MLP projector only)
    floatX* img_tok;       // (B, P, Dl) the projected image tokens
    floatX* tok_emb;       // (B, Tl, Dl)
    floatX* lnf;           // (B, Tl, Dl)
    float *lnf_mean, *lnf_rstd;  // (B, Tl)
    floatX* logits;        // (B, Tl, V); after a forward with targets: dloss/dlogits
    float* losses;         // (B, Tl)
    // CLIP
    floatX* vln;           // (B, P+1, Dv) final LN of the ViT
    float *vln_mean, *vln_rstd;
    floatX* vcls;          // (B, Dv) the [CLS] rows of vln
    floatX* img_emb;       // (B, E)
    floatX* ttok;          // (B, Tt, Dt) text encoder input before positions (embedding)
    floatX* tln;           // (B, Tt, Dt) final LN of the text encoder
    float *tln_mean, *tln_rstd;
    floatX* teot;          // (B, Dt) the <eos> rows of tln
    floatX* txt_emb;       // (B, E)
    float* clip_cache;
    floatX *dimg_emb, *dtxt_emb, *dvcls, *dvln, *dvout, *dteot, *dtln, *dtresid;
    std::vector<int> cls_rows, eot_rows;
    int *d_cls_rows, *d_eot_rows;
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
    params_set_prefix(ps, "vision.");
    m->vlnf_w = params_add(ps, "ln_f.weight", {Dv}, false);
    m->vlnf_b = params_add(ps, "ln_f.bias", {Dv}, false);
    m->vproj = params_add(ps, "proj.weight", {c.clip_dim, Dv}, true);
    m->head_w = m->head_b = -1;
    if (m->n_classes > 0) {  // the classifier's head
        m->head_w = params_add(ps, "head.weight", {m->n_classes, Dv}, true);
        m->head_b = params_add(ps, "head.bias", {m->n_classes}, false);
    }
    params_set_prefix(ps, "text.");
    m->t_wte = params_add(ps, "wte", {c.vocab, c.t_dim}, true);
    m->t_wpe = params_add(ps, "wpe", {m->Tt, c.t_dim}, false);
    params_set_prefix(ps, "");
    transformer_declare(&m->txt, ps, "text.", {c.t_layers, c.t_dim, c.t_heads, true});
    params_set_prefix(ps, "text.");
    m->tlnf_w = params_add(ps, "ln_f.weight", {c.t_dim}, false);
    m->tlnf_b = params_add(ps, "ln_f.bias", {c.t_dim}, false);
    m->tproj = params_add(ps, "proj.weight", {c.clip_dim, c.t_dim}, true);
    params_set_prefix(ps, "clip.");
    m->log_scale = params_add(ps, "log_scale", {1}, false);
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
    transformer_declare(&m->lm, ps, "lm.", {c.l_layers, Dl, c.l_heads, true}, m->lm_lora);
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
    m->feats_red = arena_take<floatX>(acts, B * P * Dv);
    m->tome_scratch = arena_take<floatX>(acts, B * (P + 1) * Dv);
    m->cls_logits = arena_take<floatX>(acts, B * std::max(1, m->n_classes));
    m->cls_losses = arena_take<float>(acts, B);
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
    size_t E = m->cfg.clip_dim, Dt = m->cfg.t_dim, Tt = m->Tt;
    m->vln = arena_take<floatX>(acts, B * (P + 1) * Dv);
    m->vln_mean = arena_take<float>(acts, B * (P + 1));
    m->vln_rstd = arena_take<float>(acts, B * (P + 1));
    m->vcls = arena_take<floatX>(acts, B * Dv);
    m->img_emb = arena_take<floatX>(acts, B * E);
    m->ttok = arena_take<floatX>(acts, B * Tt * Dt);
    transformer_layout_acts(&m->txt, acts, (int)B, (int)Tt);
    m->tln = arena_take<floatX>(acts, B * Tt * Dt);
    m->tln_mean = arena_take<float>(acts, B * Tt);
    m->tln_rstd = arena_take<float>(acts, B * Tt);
    m->teot = arena_take<floatX>(acts, B * Dt);
    m->txt_emb = arena_take<floatX>(acts, B * E);
    m->clip_cache = arena_take<float>(acts, clip_loss_cache_floats((int)B, (int)E));
    if (!scratch) return;
    m->dimg_emb = arena_take<floatX>(scratch, B * E);
    m->dtxt_emb = arena_take<floatX>(scratch, B * E);
    m->dvcls = arena_take<floatX>(scratch, B * Dv);
    m->dvln = arena_take<floatX>(scratch, B * (P + 1) * Dv);
    m->dvout = arena_take<floatX>(scratch, B * (P + 1) * Dv);
    m->dteot = arena_take<floatX>(scratch, B * Dt);
    m->dtln = arena_take<floatX>(scratch, B * Tt * Dt);
    m->dtresid = arena_take<floatX>(scratch, B * Tt * Dt);
    transformer_layout_scratch(&m->txt, scratch);
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

// frozen: name prefixes of the tensors this run does not train ("vision.", "lm.", ...).
// lm_lora: LoRA adapters on the GPT's linear layers (transformer.h); the rest of
// the GPT is then frozen, the adapters train unless "lm." is in `frozen`.
// n_classes > 0: a classifier head on the ViT (vlm_classify_forward; stage classify)
static void vlm_build(VlmModel* m, const VlmConfig& cfg, int B, bool on_gpu, bool with_grads = true,
                      const std::vector<std::string>& frozen = {}, const LoraConfig& lm_lora = LoraConfig(), int n_classes = 0) {
    const VlmConfig& c = cfg;
    if (c.image_size < 1 || c.patch < 1 || c.image_size % c.patch) FATAL("image size %d must be a multiple of the patch size %d", c.image_size, c.patch);
    if (c.v_layers < 1 || c.l_layers < 1 || c.v_dim % c.v_heads || c.l_dim % c.l_heads)
        FATAL("invalid VLM config: layers >= 1, widths multiples of their head counts");
    if (c.max_text < 3 || c.vocab <= VLM_IMAGE_TOKEN) FATAL("invalid VLM config: max_text >= 3, vocab > %d", VLM_IMAGE_TOKEN);
    if (c.t_layers < 1 || c.t_dim % c.t_heads || c.clip_dim < 1) FATAL("invalid VLM config: text encoder layers >= 1, width a multiple of its heads, clip_dim >= 1");
    m->cfg = cfg; m->on_gpu = on_gpu; m->B = B;
    m->P = vlm_num_patches(c); m->K = c.patch * c.patch * 3; m->Tl = vlm_lm_len(c); m->Tt = c.max_text - 1;
    m->reduce = token_reduction_none(); m->Pi = m->cur_Pi = m->Pf = m->P; m->grid = c.image_size / c.patch;
    m->cur_cut = c.l_layers; m->cur_drop = 0; m->cur_T_in = 0;
    if (lm_lora.rank < 0 || (lm_lora.rank > 0 && !(lm_lora.alpha > 0)) || lm_lora.dropout < 0 || lm_lora.dropout >= 1)
        FATAL("LoRA needs rank >= 0, alpha > 0 and dropout in [0, 1)");
    m->lm_lora = lm_lora;
    if (n_classes < 0) FATAL("vlm_build: %d classes", n_classes);
    m->n_classes = n_classes;
    params_init(&m->params);
    vlm_declare_params(m);
    bool lm_frozen = std::find(frozen.begin(), frozen.end(), std::string("lm.")) != frozen.end();
    if (lm_lora.rank > 0 && !lm_frozen) {  // the GPT's base frozen, its adapters trained
        params_set_trainable(&m->params, "lm.", false);
        for (ParamTensor& t : m->params.tensors)
            if (lora_is_adapter(t.name)) t.trainable = true;
    }
    for (const std::string& prefix : frozen)
        if (params_set_trainable(&m->params, prefix, false) == 0) FATAL("vlm_build: no tensor starts with '%s'", prefix.c_str());
    params_allocate(&m->params, on_gpu, with_grads);
    transformer_resolve(&m->vit, &m->params);
    transformer_resolve(&m->lm, &m->params);
    transformer_resolve(&m->txt, &m->params);
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
    m->keep.assign((size_t)B * m->P, 0);
    m->d_keep = (int*)backend_malloc(on_gpu, (size_t)B * m->P * sizeof(int));
    m->d_pos_index = (int*)backend_malloc(on_gpu, (size_t)B * m->Tl * sizeof(int));
    m->d_fastv_rows = (int*)backend_malloc(on_gpu, BT * sizeof(int));
    m->img_feats = m->feats;
    m->host_losses.assign(BT, 0.0f);
    m->cur_B = 0; m->have_targets = false; m->n_targets = 0;
    m->cls_rows.assign(B, 0); m->eot_rows.assign(B, 0);
    m->d_cls_rows = (int*)backend_malloc(on_gpu, B * sizeof(int));
    m->d_eot_rows = (int*)backend_malloc(on_gpu, B * sizeof(int));
    for (int b = 0; b < B; b++) m->cls_rows[b] = b * (m->P + 1);
    backend_copy(on_gpu, m->d_cls_rows, m->cls_rows.data(), B * sizeof(int), true);
    m->d_labels = (int*)backend_malloc(on_gpu, B * sizeof(int));
    m->d_class_rows = (int*)backend_malloc(on_gpu, B * sizeof(int));
    tome_alloc(&m->tome, on_gpu, B, m->P + 1, c.v_dim, c.v_heads, c.v_layers);
    m->pool_ones = (float*)backend_malloc(on_gpu, (size_t)B * (m->P + 1) * sizeof(float));
    m->pool_ones_n = 0;
    m->vis_T = m->P + 1;
}

static void vlm_free(VlmModel* m) {
    bool on_gpu = m->on_gpu;
    params_free(&m->params);
    backend_free(on_gpu, m->acts_memory);
    if (m->scratch_memory) backend_free(on_gpu, m->scratch_memory);
    backend_free(on_gpu, m->d_tokens); backend_free(on_gpu, m->d_targets); backend_free(on_gpu, m->d_lengths);
    backend_free(on_gpu, m->d_cls_rows); backend_free(on_gpu, m->d_eot_rows);
    backend_free(on_gpu, m->d_keep);
    backend_free(on_gpu, m->d_pos_index);
    backend_free(on_gpu, m->d_fastv_rows);
    backend_free(on_gpu, m->d_labels); backend_free(on_gpu, m->d_class_rows); backend_free(on_gpu, m->pool_ones);
    tome_free(&m->tome);
}

// visual-token reduction for the next forwards (src/token_reduction.h; inference:
// vlm_backward refuses a reduced forward). Sets m->Pi = P'. A ratio of 0 (or none)
// keeps all P tokens and runs nothing, so the model is exactly the unreduced one.
// fastv: the projector reads all P (Pi = P), the LM keeps Pf = P' from block r.layer on.
// tome: the merges per block (tome_schedule) over the blocks that make the feature layer (a
// classifier: every block); FATAL when they cannot reach P'.
// A classifier (n_classes > 0) takes none, pool, random, uniform (at the encoder's input) and tome.
static void vlm_set_reduction(VlmModel* m, const TokenReduction& r) {
    int n = token_reduction_count(r, m->grid, m->grid);
    if (r.method == REDUCE_FASTV && (r.layer < 0 || r.layer >= m->cfg.l_layers))
        FATAL("fastv: the ranking layer must be in [0, %d] (the GPT has %d blocks), got %d", m->cfg.l_layers - 1, m->cfg.l_layers, r.layer);
    if (m->n_classes > 0 && (r.method == REDUCE_FASTV || r.method == REDUCE_SALIENT))
        FATAL("%s reduces a VLM's image tokens; the classifier takes none, pool, random, uniform or tome", REDUCE_NAMES[r.method]);
    m->tome_sched.clear();
    if (r.method == REDUCE_TOME && n < m->P)
        m->tome_sched = tome_schedule(m->P, n, m->n_classes > 0 ? m->cfg.v_layers : vlm_feature_layer(m->cfg));
    m->reduce = r;
    m->Pi = r.method == REDUCE_FASTV ? m->P : n;
    m->Pf = n;
    m->fastv_force.clear();
}
static bool vlm_reduces(const VlmModel* m) { return m->Pi < m->P; }
static bool vlm_prunes(const VlmModel* m) { return m->Pf < m->Pi; }  // fastv with P' < P
// the image rows of the logits' layout (P' with fastv)
static int vlm_out_image_rows(const VlmModel* m) { return m->Pf; }

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
    // CLIP: LayerNorms 1 and 0, projections N(0, width^-1/2) as CLIP, the logit scale 1/0.07
    for (size_t i = 0; i < numel(m->vlnf_w); i++) T(m->vlnf_w)[i] = 1.0f;
    for (size_t i = 0; i < numel(m->tlnf_w); i++) T(m->tlnf_w)[i] = 1.0f;
    normal(m->vproj, 1.0f / sqrtf((float)c.v_dim));
    normal(m->tproj, 1.0f / sqrtf((float)c.t_dim));
    normal(m->t_wte, 0.02f); normal(m->t_wpe, 0.01f);
    transformer_init(&m->txt, ps, h.data(), &rng);
    T(m->log_scale)[0] = logf(1.0f / 0.07f);
    if (m->n_classes > 0) { uniform(m->head_w, 1.0f / sqrtf((float)c.v_dim)); uniform(m->head_b, 1.0f / sqrtf((float)c.v_dim)); }
    backend_copy(m->on_gpu, ps->params, h.data(), ps->num_params * sizeof(float), true);
}

static float* vlm_param(const VlmModel* m, int k) { return param_data(&m->params, k); }
static float* vlm_grad(const VlmModel* m, int k) { return param_grad(&m->params, k); }

// Builds the LM's token, target and length arrays from the text batch (host).
// text_tokens, text_targets: (B, max_text); text_lengths: (B); token 1 must be <image>.
// with_image: m->Pi image rows (P, or P' after a reduction) take <image>'s place (see
// the top); without, <image> is dropped and token t >= 2 goes to position t - 1 (what
// follows <image> is then predicted from <bos>). Returns the LM sequence length used.
// n_image (>= 0): that many image rows instead of m->Pi (the layout of fastv's logits: P').
static int vlm_build_sequences(VlmModel* m, const int* text_tokens, const int* text_targets, const int* text_lengths, int B,
                               bool with_image = true, int n_image = -1) {
    int Tt = m->cfg.max_text, P = with_image ? (n_image >= 0 ? n_image : m->Pi) : 0;
    int Tl = with_image ? vlm_lm_len(m->cfg, P) : Tt - 1;  // rows of the LM's buffers used, packed as (B, Tl)
    for (int b = 0; b < B; b++) {
        const int* tok = text_tokens + (size_t)b * Tt;
        const int* tgt = text_targets ? text_targets + (size_t)b * Tt : nullptr;
        int len = text_lengths[b];
        if (len < 3 || len > Tt) FATAL("text length %d of row %d is outside [3, %d]", len, b, Tt);
        if (tok[1] != VLM_IMAGE_TOKEN) FATAL("row %d: text token 1 is %d, not <image> (%d)", b, tok[1], VLM_IMAGE_TOKEN);
        int* lt = &m->lm_tokens[(size_t)b * Tl];
        int* lg = &m->lm_targets[(size_t)b * Tl];
        for (int i = 0; i < Tl; i++) { lt[i] = 0; lg[i] = -1; }
        for (int t = 0; t < Tt; t++) {
            // text token t's LM position; <image> (t = 1) sits at the last image row, or shares <bos>'s
            int pos = t == 0 ? 0 : (t == 1 ? P : t + P - 1);
            if (t != 1) lt[pos] = t < len ? tok[t] : 0;  // image rows keep the <pad> id: their embedding is replaced
            if (tgt && t < len && (t != 0 || with_image)) lg[pos] = tgt[t];
        }
        m->lm_lengths[b] = len + P - 1;
    }
    return Tl;
}

// the LM from its input rows (lm.acts[0].resid) to the loss; returns the mean
// loss over the marked tokens (0 without targets: then the logits stay)
static float vlm_lm_head_and_loss(VlmModel* m, int B, int Tl, bool have_targets, bool run_blocks = true) {
    const VlmConfig& c = m->cfg;
    bool on_gpu = m->on_gpu;
    int Dl = c.l_dim, V = c.vocab, BT = B * Tl;
    if (run_blocks) transformer_forward(&m->lm, on_gpu, m->d_lengths, B, Tl, c.l_layers);
    PROF(on_gpu, "layernorm", layernorm_forward(on_gpu, m->lnf, m->lnf_mean, m->lnf_rstd, m->lm.out, vlm_param(m, m->lnf_w),
                                                vlm_param(m, m->lnf_b), BT, Dl));
    PROF(on_gpu, "lm_head", linear_forward(on_gpu, m->logits, m->lnf, vlm_param(m, m->wte), (const float*)nullptr, BT, Dl, V));
    if (!have_targets) return 0.0f;
    int n = 0;
    for (int i = 0; i < BT; i++) n += m->lm_targets[i] >= 0;
    if (n == 0) FATAL("vlm: the batch has no target token");
    m->n_targets = (float)n;
    backend_copy(on_gpu, m->d_targets, m->lm_targets.data(), BT * sizeof(int), true);
    PROF(on_gpu, "cross_entropy", cross_entropy(on_gpu, m->losses, m->logits, m->d_targets, BT, V, 1.0f / n, true));
    backend_copy(on_gpu, m->host_losses.data(), m->losses, BT * sizeof(float), false);
    double sum = 0;
    for (int i = 0; i < BT; i++) sum += m->host_losses[i];
    return (float)(sum / n);
}

static void vlm_check_batch(const VlmModel* m, const int* text_tokens, int B) {
    if (B < 1 || B > m->B) FATAL("vlm: batch %d outside [1, %d]", B, m->B);
    for (int i = 0; i < B * m->cfg.max_text; i++)
        if (text_tokens[i] < 0 || text_tokens[i] >= m->cfg.vocab) FATAL("text token %d out of range [0, %d)", text_tokens[i], m->cfg.vocab);
}

// the classifier's input reduction (pool / random / uniform with P' < P): the embedded rows (B, P+1, Dv)
// in vit.acts[0].resid become (B, 1 + P', Dv) there: [CLS] alone, then the 2x2 windows' means (pool)
// or the kept patches in raster order (random: a function of (seed, image key); uniform), as
// token_merge groups with equal weights. keys: (B) host or nullptr (the row)
static void vlm_input_reduce(VlmModel* m, int B, const int* keys) {
    bool on_gpu = m->on_gpu;
    int P = m->P, Pi = m->Pi, g = m->grid, Dv = m->cfg.v_dim, T = P + 1, T2 = Pi + 1;
    m->in_off.assign((size_t)B * T2 + 1, 0);
    m->in_mem.clear();
    std::vector<int> kept(Pi);
    int ow = (g + 1) / 2;
    for (int b = 0; b < B; b++) {
        m->in_mem.push_back(b * T);  // [CLS] alone
        m->in_off[(size_t)b * T2 + 1] = (int)m->in_mem.size();
        if (m->reduce.method != REDUCE_POOL) {
            if (m->reduce.method == REDUCE_RANDOM) token_select_random(kept.data(), P, Pi, m->reduce.seed, keys ? (uint64_t)keys[b] : (uint64_t)b);
            else token_select_uniform(kept.data(), g, g, Pi);
        }
        for (int o = 0; o < Pi; o++) {
            if (m->reduce.method == REDUCE_POOL) {  // the 2x2 window's rows in raster order
                for (int dy = 0; dy < 2; dy++)
                    for (int dx = 0; dx < 2; dx++) {
                        int y = 2 * (o / ow) + dy, x = 2 * (o % ow) + dx;
                        if (y < g && x < g) m->in_mem.push_back(b * T + 1 + y * g + x);
                    }
            } else {
                m->in_mem.push_back(b * T + 1 + kept[o]);
            }
            m->in_off[(size_t)b * T2 + 2 + o] = (int)m->in_mem.size();
        }
    }
    if (m->pool_ones_n < (size_t)B * T) {  // equal weights: a buffer of ones, uploaded once
        std::vector<float> ones((size_t)m->B * T, 1.0f);
        backend_copy(on_gpu, m->pool_ones, ones.data(), ones.size() * sizeof(float), true);
        m->pool_ones_n = ones.size();
    }
    backend_copy(on_gpu, m->tome.d_off, m->in_off.data(), m->in_off.size() * sizeof(int), true);
    backend_copy(on_gpu, m->tome.d_mem, m->in_mem.data(), m->in_mem.size() * sizeof(int), true);
    floatX* vin = m->vit.acts[0].resid;
    PROF(on_gpu, "input_reduce", token_merge(on_gpu, m->tome_scratch, vin, m->pool_ones, m->tome.d_off, m->tome.d_mem, B * T2, Dv);
                                 backend_copy_device(on_gpu, vin, m->tome_scratch, (size_t)B * T2 * Dv * sizeof(floatX)));
}

// the vision encoder: patches, [CLS], positions, blocks 0 .. n_blocks - 1. reduce: apply the model's
// reduction where it acts inside the encoder (tome; a classifier's pool / random / uniform at the
// input); keys (B, host) for random. m->vis_T = the rows per image it leaves.
static void vlm_vision_forward(VlmModel* m, const float* images, int B, int n_blocks, bool reduce = false, const int* keys = nullptr) {
    const VlmConfig& c = m->cfg;
    bool on_gpu = m->on_gpu;
    int P = m->P, Dv = c.v_dim, H = c.image_size;
    backend_copy(on_gpu, m->images, images, (size_t)B * H * H * 3 * sizeof(float), true);
    PROF(on_gpu, "patch_embed", patch_embed_forward(on_gpu, m->patch_emb, m->patches, m->images, vlm_param(m, m->patch_w),
                                                    vlm_param(m, m->patch_b), B, H, H, c.patch, Dv));
    floatX* vin = m->vit.acts[0].resid;
    PROF(on_gpu, "vit_embed", cls_prepend_forward(on_gpu, vin, m->patch_emb, vlm_param(m, m->cls), B, P, Dv);
                              position_add_forward(on_gpu, vin, vlm_param(m, m->vpos), B, P + 1, Dv));
    m->vis_T = P + 1;
    if (reduce && m->reduce.method == REDUCE_TOME && !m->tome_sched.empty()) {
        m->vis_T = tome_forward(&m->vit, &m->tome, m->tome_sched, m->tome_scratch, B, P + 1, n_blocks);
        return;
    }
    bool at_input = m->n_classes > 0 && m->Pi < P &&
                    (m->reduce.method == REDUCE_POOL || m->reduce.method == REDUCE_RANDOM || m->reduce.method == REDUCE_UNIFORM);
    if (reduce && at_input) {
        vlm_input_reduce(m, B, keys);
        m->vis_T = m->Pi + 1;
    }
    transformer_forward(&m->vit, on_gpu, nullptr, B, m->vis_T, n_blocks);
}

static void vlm_vision_backward(VlmModel* m, floatX* dvresid, int B, int from_layer) {
    const VlmConfig& c = m->cfg;
    bool on_gpu = m->on_gpu;
    int P = m->P, Dv = c.v_dim;
    if (!vlm_grad(m, m->patch_w)) return;  // a frozen encoder: nothing below needs the gradient
    transformer_backward(&m->vit, on_gpu, dvresid, nullptr, B, P + 1, from_layer);
    PROF(on_gpu, "vit_embed", position_add_backward(on_gpu, vlm_grad(m, m->vpos), dvresid, B, P + 1, Dv);
                              cls_prepend_backward(on_gpu, m->dpatch, vlm_grad(m, m->cls), dvresid, B, P, Dv));
    PROF(on_gpu, "patch_embed", patch_embed_backward(on_gpu, vlm_grad(m, m->patch_w), vlm_grad(m, m->patch_b), m->dpatch, m->patches,
                                                     B, P, m->K, Dv));
}

// --- the stages of vlm_forward, in order (each callable alone: the profiler times them)

// the LM's sequences (host, vlm_build_sequences) to the backend; returns the LM length
static int vlm_prepare_sequences(VlmModel* m, const int* text_tokens, const int* text_targets, const int* text_lengths, int B) {
    vlm_check_batch(m, text_tokens, B);
    int Tl = vlm_build_sequences(m, text_tokens, text_targets, text_lengths, B, true), BT = B * Tl;
    backend_copy(m->on_gpu, m->d_tokens, m->lm_tokens.data(), BT * sizeof(int), true);
    backend_copy(m->on_gpu, m->d_lengths, m->lm_lengths.data(), B * sizeof(int), true);
    return Tl;
}

// the vision encoder up to the feature layer, [CLS] dropped: images (B, H, W, 3) host -> m->feats (B, P, Dv);
// with tome the encoder merges tokens and P' rows leave: m->feats (B, P', Dv), their representative
// patches in m->keep (B, P') (the LM positions of vlm_reduced_positions)
static void vlm_encode_images(VlmModel* m, const float* images, int B) {
    const VlmConfig& c = m->cfg;
    int fl = vlm_feature_layer(c);
    vlm_vision_forward(m, images, B, fl, true);
    int n = m->vis_T - 1;
    cls_drop_forward(m->on_gpu, m->feats, fl < c.v_layers ? m->vit.acts[fl].resid : m->vit.out, B, n, c.v_dim);
    if (m->reduce.method == REDUCE_TOME && n < m->P) {
        if (n != m->Pi) FATAL("vlm_encode_images: tome left %d tokens, %d planned", n, m->Pi);
        tome_fetch(&m->tome);  // the representatives, to the host
        for (int b = 0; b < B; b++)
            for (int j = 0; j < n; j++) m->keep[(size_t)b * n + j] = m->tome.rep[(size_t)b * m->vis_T + 1 + j] - 1;
    }
}

// the reduction (if any): m->feats (B, P, Dv) -> m->img_feats (B, Pi, Dv). image_keys (B, host):
// what the random draw depends on besides the seed (the dataset's image index), nullptr: the row
static void vlm_reduce_tokens(VlmModel* m, int B, const int* image_keys = nullptr) {
    bool on_gpu = m->on_gpu;
    int P = m->P, Pi = m->Pi, Dv = m->cfg.v_dim;
    m->img_feats = m->feats;
    if (!vlm_reduces(m) || m->reduce.method == REDUCE_TOME) return;  // tome: done in the encoder
    if (m->reduce.method == REDUCE_POOL) {
        token_pool2x2(on_gpu, m->feats_red, m->feats, B, m->grid, m->grid, Dv);
    } else if (m->reduce.method == REDUCE_SALIENT) {  // the raw images of vlm_encode_images (m->images)
        int H = m->cfg.image_size;
        m->saliency.resize((size_t)B * P);
        token_saliency(on_gpu, m->saliency.data(), m->images, B, H, H, m->cfg.patch);
        for (int b = 0; b < B; b++)
            token_select_salient(m->keep.data() + (size_t)b * Pi, m->saliency.data() + (size_t)b * P, m->grid, m->grid, Pi);
        backend_copy(on_gpu, m->d_keep, m->keep.data(), (size_t)B * Pi * sizeof(int), true);
        token_gather(on_gpu, m->feats_red, m->feats, m->d_keep, B, P, Pi, Dv);
    } else {
        token_select(m->keep.data(), m->reduce, m->grid, m->grid, Pi, B, image_keys);
        backend_copy(on_gpu, m->d_keep, m->keep.data(), (size_t)B * Pi * sizeof(int), true);
        token_gather(on_gpu, m->feats_red, m->feats, m->d_keep, B, P, Pi, Dv);
    }
    m->img_feats = m->feats_red;
}

// the projector: m->img_feats (B, Pi, Dv) -> m->img_tok (B, Pi, Dl)
static void vlm_project(VlmModel* m, int B) {
    const VlmConfig& c = m->cfg;
    bool on_gpu = m->on_gpu;
    int N = B * m->Pi, Dv = c.v_dim, Dl = c.l_dim;
    PROF(on_gpu, "projector", linear_forward(on_gpu, m->proj_h, m->img_feats, vlm_param(m, m->p1_w), vlm_param(m, m->p1_b), N, Dv, Dl);
         if (c.proj_mlp) {
             gelu_forward(on_gpu, m->proj_g, m->proj_h, (size_t)N * Dl);
             linear_forward(on_gpu, m->img_tok, m->proj_g, vlm_param(m, m->p2_w), vlm_param(m, m->p2_b), N, Dl, Dl);
         } else {
             backend_copy_device(on_gpu, m->img_tok, m->proj_h, (size_t)N * Dl * sizeof(floatX));
         });
}

// blocks l0 .. l0 + n - 1 of the GPT on its acts[l0].resid (the stack's output as transformer_forward's)
static void vlm_lm_blocks_from(VlmModel* m, int l0, int B, int T) {
    Transformer view = m->lm;  // the same parameters and activations, the first l0 blocks left out
    view.index.erase(view.index.begin(), view.index.begin() + l0);
    view.p.erase(view.p.begin(), view.p.begin() + l0);
    view.dp.erase(view.dp.begin(), view.dp.begin() + l0);
    view.acts.erase(view.acts.begin(), view.acts.begin() + l0);
    view.lora_blocks.erase(view.lora_blocks.begin(), view.lora_blocks.begin() + l0);
    view.cfg.n_layer -= l0;
    transformer_forward(&view, m->on_gpu, m->d_lengths, B, T, view.cfg.n_layer);
}

// FastV (see the top), after the LM's input rows are in acts[0].resid as (B, Tl): blocks
// 0..L'-1, the ranking, the gather, blocks L'..L-1. Returns T' = Tl - (P - P'), the rows of
// the output (lm.out), laid out with P' image rows; the host targets and lengths follow.
static int vlm_fastv_prune(VlmModel* m, int B, int Tl) {
    const VlmConfig& c = m->cfg;
    bool on_gpu = m->on_gpu;
    int K = m->reduce.layer, P = m->Pi, Pf = m->Pf, C = c.l_dim, drop = P - Pf, T2 = Tl - drop;
    transformer_forward(&m->lm, on_gpu, m->d_lengths, B, Tl, K);
    // block K's queries and keys on the whole sequence (its LN1 and QKV; the block reruns on the kept rows)
    BlockActs& a = m->lm.acts[K];
    BlockParams& p = m->lm.p[K];
    int BT = B * Tl;
    PROF(on_gpu, "fastv_rank",
         layernorm_forward(on_gpu, a.ln1, a.ln1_mean, a.ln1_rstd, a.resid, p.ln1_w, p.ln1_b, BT, C);
         linear_forward(on_gpu, a.qkv, a.ln1, p.qkv_w, p.qkv_b, BT, C, 3 * C);
         if (m->lm.lora.rank > 0 && !m->lm.lora_merged && lora_active(m->lm.lora_blocks[K].qkv))
             lora_forward(on_gpu, m->lm.lora_blocks[K].qkv, transformer_lora_run(&m->lm, K, 0), a.h_qkv, a.ln1, a.qkv, nullptr, BT));
    m->fastv_query.assign(B, 0);
    for (int b = 0; b < B; b++) {  // the first <sep> after <image> (text rows start at P + 1), else the last row
        int len = m->lm_lengths[b], q = len - 1;
        for (int j = P + 1; j < len; j++)
            if (m->lm_tokens[(size_t)b * Tl + j] == VLM_SEP_TOKEN) { q = j; break; }
        m->fastv_query[b] = q;
    }
    m->fastv_keep.assign((size_t)B * Pf, 0);
    if (!m->fastv_force.empty()) {
        if (m->fastv_force.size() < (size_t)B * Pf) FATAL("fastv_force: %zu indices for (%d, %d)", m->fastv_force.size(), B, Pf);
        std::copy(m->fastv_force.begin(), m->fastv_force.begin() + (size_t)B * Pf, m->fastv_keep.begin());
    } else {
        m->fastv_score.resize((size_t)B * P);
        PROF(on_gpu, "fastv_rank", fastv_image_scores(on_gpu, m->fastv_score.data(), a.qkv, m->fastv_query.data(), B, Tl, C, c.l_heads, 1, P));
        for (int b = 0; b < B; b++) token_select_top(m->fastv_keep.data() + (size_t)b * Pf, m->fastv_score.data() + (size_t)b * P, P, Pf);
    }
    // the kept rows: <bos>, the kept image rows, every text row
    m->fastv_rows.assign((size_t)B * T2, 0);
    for (int b = 0; b < B; b++) {
        int* r = &m->fastv_rows[(size_t)b * T2];
        r[0] = 0;
        for (int i = 0; i < Pf; i++) r[1 + i] = 1 + m->fastv_keep[(size_t)b * Pf + i];
        for (int j = P + 1; j < Tl; j++) r[j - drop] = j;
    }
    backend_copy(on_gpu, m->d_fastv_rows, m->fastv_rows.data(), (size_t)B * T2 * sizeof(int), true);
    PROF(on_gpu, "fastv_gather", token_gather(on_gpu, m->lnf, a.resid, m->d_fastv_rows, B, Tl, T2, C);  // lnf: free scratch here
                                 backend_copy_device(on_gpu, a.resid, m->lnf, (size_t)B * T2 * C * sizeof(floatX)));
    // targets (the layout of P' image rows: <image>'s target at the last kept image row) and lengths
    std::vector<int> tg((size_t)B * T2);
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < T2; i++) tg[(size_t)b * T2 + i] = m->lm_targets[(size_t)b * Tl + m->fastv_rows[(size_t)b * T2 + i]];
        tg[(size_t)b * T2 + Pf] = m->lm_targets[(size_t)b * Tl + P];
        m->lm_lengths[b] -= drop;
    }
    std::copy(tg.begin(), tg.end(), m->lm_targets.begin());
    backend_copy(on_gpu, m->d_lengths, m->lm_lengths.data(), B * sizeof(int), true);
    vlm_lm_blocks_from(m, K, B, T2);
    m->cur_T = T2; m->cur_T_in = Tl; m->cur_cut = K; m->cur_drop = drop;
    return T2;
}

// the LM position of every row after a reduction before the projector: <bos> 0, the kept
// image token of patch k at 1 + k (its slot in the unreduced sequence; a pooled 2x2 window
// at its top-left patch's), the text after all P image slots, as in training. The GPT learned
// absolute positions with P image tokens: packing the kept tokens into slots 1..P' and moving
// the text P - P' positions earlier breaks it (every answer wrong in the study; measured).
static void vlm_reduced_positions(VlmModel* m, int B, int Tl) {
    int P = m->P, Pi = m->Pi, g = m->grid, gw2 = (g + 1) / 2;
    m->pos_index.assign((size_t)B * Tl, 0);
    for (int b = 0; b < B; b++) {
        int* row = m->pos_index.data() + (size_t)b * Tl;
        for (int t = 0; t < Tl; t++) {
            if (t == 0) { row[t] = 0; continue; }
            if (t > Pi) { row[t] = t + (P - Pi); continue; }
            int j = t - 1;
            int patch = m->reduce.method == REDUCE_POOL ? (j / gw2) * 2 * g + (j % gw2) * 2 : m->keep[(size_t)b * Pi + j];
            row[t] = 1 + patch;
        }
    }
    backend_copy(m->on_gpu, m->d_pos_index, m->pos_index.data(), (size_t)B * Tl * sizeof(int), true);
}

// the LM over <bos>, the Pi image tokens (m->img_tok), the text (the sequences of
// vlm_prepare_sequences): embedding, splice, blocks, head (and the loss with targets)
static float vlm_lm_forward(VlmModel* m, int B, int Tl, bool have_targets) {
    bool on_gpu = m->on_gpu;
    int Dl = m->cfg.l_dim, BT = B * Tl;
    m->cur_B = B; m->cur_T = m->cur_T_in = Tl; m->have_targets = have_targets; m->pass = VLM_PASS_IMAGE; m->cur_Pi = m->Pi;
    m->cur_cut = m->cfg.l_layers; m->cur_drop = 0;
    floatX* lin = m->lm.acts[0].resid;
    PROF(on_gpu, "lm_embed", embedding_forward(on_gpu, m->tok_emb, m->d_tokens, vlm_param(m, m->wte), BT, Dl);
                             image_splice_forward(on_gpu, lin, m->tok_emb, m->img_tok, B, Tl, m->Pi, Dl));
    if (vlm_reduces(m)) {
        vlm_reduced_positions(m, B, Tl);
        PROF(on_gpu, "lm_embed", position_add_indexed(on_gpu, lin, vlm_param(m, m->wpe), m->d_pos_index, B, Tl, Dl));
    } else {
        PROF(on_gpu, "lm_embed", position_add_forward(on_gpu, lin, vlm_param(m, m->wpe), B, Tl, Dl));
    }
    if (!vlm_prunes(m)) return vlm_lm_head_and_loss(m, B, Tl, have_targets);
    int T2 = vlm_fastv_prune(m, B, Tl);
    return vlm_lm_head_and_loss(m, B, T2, have_targets, false);
}

// images: (B, H, W, 3) host floats in [0, 1]; text arrays as vlm_build_sequences.
// Returns the mean loss over the marked tokens (0 without targets). Without
// targets the logits stay in m->logits, as (B, Tl, V), Tl = vlm_lm_len(cfg, m->Pi).
// image_keys (optional, host, (B)): the images' keys for a random token reduction.
static float vlm_forward(VlmModel* m, const float* images, const int* text_tokens, const int* text_targets,
                         const int* text_lengths, int B, const int* image_keys = nullptr) {
    int Tl = vlm_prepare_sequences(m, text_tokens, text_targets, text_lengths, B);
    vlm_encode_images(m, images, B);
    vlm_reduce_tokens(m, B, image_keys);
    vlm_project(m, B);
    return vlm_lm_forward(m, B, Tl, text_targets != nullptr);
}

// the LM alone on the text (<image> dropped): stage lm. Logits as (B, max_text - 1, V).
static float vlm_forward_text(VlmModel* m, const int* text_tokens, const int* text_targets, const int* text_lengths, int B) {
    bool on_gpu = m->on_gpu;
    vlm_check_batch(m, text_tokens, B);
    int Dl = m->cfg.l_dim;
    int Tl = vlm_build_sequences(m, text_tokens, text_targets, text_lengths, B, false), BT = B * Tl;
    backend_copy(on_gpu, m->d_tokens, m->lm_tokens.data(), BT * sizeof(int), true);
    backend_copy(on_gpu, m->d_lengths, m->lm_lengths.data(), B * sizeof(int), true);
    m->cur_B = B; m->cur_T = m->cur_T_in = Tl; m->have_targets = text_targets != nullptr; m->pass = VLM_PASS_TEXT;
    m->cur_cut = m->cfg.l_layers; m->cur_drop = 0;
    floatX* lin = m->lm.acts[0].resid;
    PROF(on_gpu, "lm_embed", embedding_forward(on_gpu, lin, m->d_tokens, vlm_param(m, m->wte), BT, Dl);
                             position_add_forward(on_gpu, lin, vlm_param(m, m->wpe), B, Tl, Dl));
    return vlm_lm_head_and_loss(m, B, Tl, text_targets != nullptr);
}

// CLIP embeddings (not normalised) of B images -> m->img_emb (B, E)
static void vlm_clip_image_embed(VlmModel* m, const float* images, int B) {
    const VlmConfig& c = m->cfg;
    bool on_gpu = m->on_gpu;
    int P = m->P, Dv = c.v_dim;
    vlm_vision_forward(m, images, B, c.v_layers);
    PROF(on_gpu, "clip_head", layernorm_forward(on_gpu, m->vln, m->vln_mean, m->vln_rstd, m->vit.out, vlm_param(m, m->vlnf_w),
                                                vlm_param(m, m->vlnf_b), B * (P + 1), Dv);
                              row_gather_forward(on_gpu, m->vcls, m->vln, m->d_cls_rows, B, Dv);
                              linear_forward(on_gpu, m->img_emb, m->vcls, vlm_param(m, m->vproj), (const float*)nullptr, B, Dv, c.clip_dim));
}

// stage classify (n_classes > 0): logits = head(LN_f(ViT output at [CLS])) of B images (host, (B, H, W, 3))
// -> m->cls_logits (B, n_classes). Every block runs; the model's reduction applies (tome, or the input
// reductions; keys (B, host): the images' keys for random). labels (B, host, in [0, n_classes)):
// returns the mean cross-entropy and leaves dloss/dlogits in m->cls_logits; nullptr: returns 0 and
// leaves the logits. The [CLS] rows are gathered before the final LayerNorm (the only rows the head reads).
static float vlm_classify_forward(VlmModel* m, const float* images, const int* labels, int B, const int* keys = nullptr) {
    const VlmConfig& c = m->cfg;
    bool on_gpu = m->on_gpu;
    int Dv = c.v_dim, K = m->n_classes;
    if (K < 1) FATAL("vlm_classify_forward: the model has no classifier head (vlm_build with n_classes > 0)");
    if (B < 1 || B > m->B) FATAL("vlm: batch %d outside [1, %d]", B, m->B);
    vlm_vision_forward(m, images, B, c.v_layers, true, keys);
    int T = m->vis_T;
    m->class_rows.resize(B);
    for (int b = 0; b < B; b++) m->class_rows[b] = b * T;
    backend_copy(on_gpu, m->d_class_rows, m->class_rows.data(), B * sizeof(int), true);
    PROF(on_gpu, "cls_head", row_gather_forward(on_gpu, m->vln, m->vit.out, m->d_class_rows, B, Dv);
                             layernorm_forward(on_gpu, m->vcls, m->vln_mean, m->vln_rstd, m->vln, vlm_param(m, m->vlnf_w), vlm_param(m, m->vlnf_b), B, Dv);
                             linear_forward(on_gpu, m->cls_logits, m->vcls, vlm_param(m, m->head_w), vlm_param(m, m->head_b), B, Dv, K));
    m->cur_B = B; m->pass = VLM_PASS_CLASSIFY; m->have_targets = labels != nullptr;
    if (!labels) return 0.0f;
    for (int b = 0; b < B; b++)
        if (labels[b] < 0 || labels[b] >= K) FATAL("vlm_classify_forward: label %d of image %d outside [0, %d)", labels[b], b, K);
    backend_copy(on_gpu, m->d_labels, labels, B * sizeof(int), true);
    PROF(on_gpu, "cross_entropy", cross_entropy(on_gpu, m->cls_losses, m->cls_logits, m->d_labels, B, K, 1.0f / B, true));
    m->host_losses.resize(std::max(m->host_losses.size(), (size_t)B));
    backend_copy(on_gpu, m->host_losses.data(), m->cls_losses, B * sizeof(float), false);
    double sum = 0;
    for (int b = 0; b < B; b++) sum += m->host_losses[b];
    return (float)(sum / B);
}

static void vlm_classify_backward(VlmModel* m) {
    const VlmConfig& c = m->cfg;
    bool on_gpu = m->on_gpu;
    int B = m->cur_B, Dv = c.v_dim, K = m->n_classes;
    if (m->vis_T != m->P + 1)
        FATAL("vlm_backward: the forward reduced the tokens (%s, %d of %d): reduction is for inference, training keeps them all",
              REDUCE_NAMES[m->reduce.method], m->vis_T - 1, m->P);
    PROF(on_gpu, "cls_head", linear_backward(on_gpu, m->dvcls, vlm_grad(m, m->head_w), vlm_grad(m, m->head_b), m->cls_logits, m->vcls,
                                             vlm_param(m, m->head_w), B, Dv, K);
                             layernorm_backward(on_gpu, m->dvln, vlm_grad(m, m->vlnf_w), vlm_grad(m, m->vlnf_b), m->dvcls, m->vln,
                                                vlm_param(m, m->vlnf_w), m->vln_mean, m->vln_rstd, B, Dv);
                             row_gather_backward(on_gpu, m->dvout, m->dvln, m->d_class_rows, B, Dv));
    vlm_vision_backward(m, m->dvout, B, c.v_layers);
}

// CLIP embeddings of B captions (text batches as vlm_get_batch's VLM_CAPTION: [<bos> <image> caption <eos>];
// the text encoder reads them without <image>, the feature is at <eos>) -> m->txt_emb (B, E)
static void vlm_clip_text_embed(VlmModel* m, const int* text_tokens, const int* text_lengths, int B) {
    const VlmConfig& c = m->cfg;
    bool on_gpu = m->on_gpu;
    int Tt = m->Tt, Dt = c.t_dim, BT = B * Tt;
    vlm_check_batch(m, text_tokens, B);
    vlm_build_sequences(m, text_tokens, nullptr, text_lengths, B, false);  // same packing as the text-only LM
    for (int b = 0; b < B; b++) m->eot_rows[b] = b * Tt + m->lm_lengths[b] - 1;
    backend_copy(on_gpu, m->d_tokens, m->lm_tokens.data(), BT * sizeof(int), true);
    backend_copy(on_gpu, m->d_lengths, m->lm_lengths.data(), B * sizeof(int), true);
    backend_copy(on_gpu, m->d_eot_rows, m->eot_rows.data(), B * sizeof(int), true);
    floatX* tin = m->txt.acts[0].resid;
    PROF(on_gpu, "text_embed", embedding_forward(on_gpu, tin, m->d_tokens, vlm_param(m, m->t_wte), BT, Dt);
                               position_add_forward(on_gpu, tin, vlm_param(m, m->t_wpe), B, Tt, Dt));
    transformer_forward(&m->txt, on_gpu, m->d_lengths, B, Tt, c.t_layers);
    PROF(on_gpu, "clip_head", layernorm_forward(on_gpu, m->tln, m->tln_mean, m->tln_rstd, m->txt.out, vlm_param(m, m->tlnf_w),
                                                vlm_param(m, m->tlnf_b), BT, Dt);
                              row_gather_forward(on_gpu, m->teot, m->tln, m->d_eot_rows, B, Dt);
                              linear_forward(on_gpu, m->txt_emb, m->teot, vlm_param(m, m->tproj), (const float*)nullptr, B, Dt, c.clip_dim));
}

// stage clip: B matched (image, caption) pairs -> the symmetric contrastive loss
static float vlm_clip_forward(VlmModel* m, const float* images, const int* text_tokens, const int* text_lengths, int B) {
    vlm_clip_image_embed(m, images, B);
    vlm_clip_text_embed(m, text_tokens, text_lengths, B);
    m->cur_B = B; m->have_targets = true; m->pass = VLM_PASS_CLIP;
    float loss;
    PROF(m->on_gpu, "clip_loss", loss = clip_loss_forward(m->on_gpu, m->clip_cache, m->img_emb, m->txt_emb,
                                                          vlm_param(m, m->log_scale), B, m->cfg.clip_dim));
    return loss;
}

static void vlm_zero_grad(VlmModel* m) { params_zero_grad(&m->params); }

// CLIP's logit scale now (clamped), for the log
static float clip_scale_of(const VlmModel* m) {
    float ls;
    backend_copy(m->on_gpu, &ls, vlm_param(m, m->log_scale), sizeof(float), false);
    return clip_scale(ls);
}

static void vlm_clip_backward(VlmModel* m) {
    const VlmConfig& c = m->cfg;
    bool on_gpu = m->on_gpu;
    int B = m->cur_B, P = m->P, Dv = c.v_dim, Dt = c.t_dim, Tt = m->Tt, E = c.clip_dim;
    PROF(on_gpu, "clip_loss", clip_loss_backward(on_gpu, m->dimg_emb, m->dtxt_emb, vlm_grad(m, m->log_scale), m->clip_cache,
                                                 m->img_emb, m->txt_emb, vlm_param(m, m->log_scale), B, E));
    // text tower
    if (vlm_grad(m, m->t_wte)) {
        PROF(on_gpu, "clip_head", linear_backward(on_gpu, m->dteot, vlm_grad(m, m->tproj), nullptr, m->dtxt_emb, m->teot, vlm_param(m, m->tproj), B, Dt, E);
                                  row_gather_backward(on_gpu, m->dtln, m->dteot, m->d_eot_rows, B, Dt);
                                  layernorm_backward(on_gpu, m->dtresid, vlm_grad(m, m->tlnf_w), vlm_grad(m, m->tlnf_b), m->dtln, m->txt.out,
                                                     vlm_param(m, m->tlnf_w), m->tln_mean, m->tln_rstd, B * Tt, Dt));
        transformer_backward(&m->txt, on_gpu, m->dtresid, m->d_lengths, B, Tt, c.t_layers);
        PROF(on_gpu, "text_embed", position_add_backward(on_gpu, vlm_grad(m, m->t_wpe), m->dtresid, B, Tt, Dt);
                                   embedding_backward(on_gpu, vlm_grad(m, m->t_wte), m->dtresid, m->d_tokens, B * Tt, Dt));
    }
    // image tower
    PROF(on_gpu, "clip_head", linear_backward(on_gpu, m->dvcls, vlm_grad(m, m->vproj), nullptr, m->dimg_emb, m->vcls, vlm_param(m, m->vproj), B, Dv, E);
                              row_gather_backward(on_gpu, m->dvln, m->dvcls, m->d_cls_rows, B, Dv);
                              layernorm_backward(on_gpu, m->dvout, vlm_grad(m, m->vlnf_w), vlm_grad(m, m->vlnf_b), m->dvln, m->vit.out,
                                                 vlm_param(m, m->vlnf_w), m->vln_mean, m->vln_rstd, B * (P + 1), Dv));
    vlm_vision_backward(m, m->dvout, B, c.v_layers);
}

static void vlm_backward(VlmModel* m) {
    const VlmConfig& c = m->cfg;
    if (!m->have_targets) FATAL("vlm_backward needs a forward pass with targets");
    if (!m->params.with_grads) FATAL("vlm_backward: the model was built for inference (no gradients)");
    bool on_gpu = m->on_gpu;
    backend_memset0(on_gpu, m->scratch_memory, m->scratch_bytes);
    if (m->pass == VLM_PASS_CLIP) { vlm_clip_backward(m); return; }
    if (m->pass == VLM_PASS_CLASSIFY) { vlm_classify_backward(m); return; }
    if (m->pass == VLM_PASS_IMAGE && (m->cur_Pi != m->P || m->cur_drop > 0))
        FATAL("vlm_backward: the forward reduced the image tokens (%s, %d of %d): reduction is for inference, training keeps them all",
              REDUCE_NAMES[m->reduce.method], m->cur_Pi - m->cur_drop, m->P);
    int B = m->cur_B, P = m->P, Dv = c.v_dim, Dl = c.l_dim, Tl = m->cur_T, V = c.vocab, BT = B * Tl;
    // head and final norm (m->logits holds dloss/dlogits)
    PROF(on_gpu, "lm_head", linear_backward(on_gpu, m->dlnf, vlm_grad(m, m->wte), nullptr, m->logits, m->lnf, vlm_param(m, m->wte), BT, Dl, V));
    PROF(on_gpu, "layernorm", layernorm_backward(on_gpu, m->dresid, vlm_grad(m, m->lnf_w), vlm_grad(m, m->lnf_b), m->dlnf, m->lm.out,
                                                 vlm_param(m, m->lnf_w), m->lnf_mean, m->lnf_rstd, BT, Dl));
    transformer_backward(&m->lm, on_gpu, m->dresid, m->d_lengths, B, Tl, c.l_layers);
    if (m->pass == VLM_PASS_TEXT) {
        PROF(on_gpu, "lm_embed", position_add_backward(on_gpu, vlm_grad(m, m->wpe), m->dresid, B, Tl, Dl);
                                 embedding_backward(on_gpu, vlm_grad(m, m->wte), m->dresid, m->d_tokens, BT, Dl));
        return;
    }
    PROF(on_gpu, "lm_embed", position_add_backward(on_gpu, vlm_grad(m, m->wpe), m->dresid, B, Tl, Dl);
                             image_splice_backward(on_gpu, m->dtok, m->dimg, m->dresid, B, Tl, P, Dl);
                             embedding_backward(on_gpu, vlm_grad(m, m->wte), m->dtok, m->d_tokens, BT, Dl));
    // projector (dfeats only when the encoder trains)
    bool vision_trains = vlm_grad(m, m->patch_w) != nullptr;
    PROF(on_gpu, "projector",
         if (c.proj_mlp) {
             linear_backward(on_gpu, m->dproj_g, vlm_grad(m, m->p2_w), vlm_grad(m, m->p2_b), m->dimg, m->proj_g, vlm_param(m, m->p2_w), B * P, Dl, Dl);
             gelu_backward(on_gpu, m->dproj_h, m->dproj_g, m->proj_h, (size_t)B * P * Dl);
         } else {
             backend_copy_device(on_gpu, m->dproj_h, m->dimg, (size_t)B * P * Dl * sizeof(floatX));
         }
         linear_backward(on_gpu, vision_trains ? m->dfeats : nullptr, vlm_grad(m, m->p1_w), vlm_grad(m, m->p1_b), m->dproj_h, m->feats,
                         vlm_param(m, m->p1_w), B * P, Dv, Dl));
    if (!vision_trains) return;
    int fl = vlm_feature_layer(c);
    cls_drop_backward(on_gpu, m->dvresid, m->dfeats, B, P, Dv);
    vlm_vision_backward(m, m->dvresid, B, fl);
}

// ---------------------------------------------------------------------------
// generation with a KV cache, on either backend: the prompt runs through the
// parallel forward once (prefill), its keys and values are kept per layer,
// then every new token costs one row through each block (attention_step
// against the cache) instead of a forward over the whole sequence.

typedef struct {
    std::vector<floatX*> k, v;  // per LM layer: (B, Tl, C) on the backend
    int n;                      // positions filled (the same in every row): the next token's position
    int B;
    std::vector<int> drop;      // per layer: rows pruned (fastv: P - P' from block L' on, else 0); layer l
                                // holds n - drop[l] rows, the next one goes to slot n - drop[l]
} VlmKVCache;

// after a forward of B sequences whose first n LM positions are the prompt (the same n in
// every row): their keys and values into a new cache
// (n: the prompt's positions in the full sequence; fastv's layers from L' on take the n - (P - P') kept)
static void vlm_kv_from_prefill(VlmModel* m, VlmKVCache* kv, int B, int n) {
    bool on_gpu = m->on_gpu;
    int C = m->cfg.l_dim, Tl = m->Tl;  // the cache holds Tl rows
    if (n < 1 || n > m->cur_T_in || n - m->cur_drop < 1 || B > m->cur_B)
        FATAL("vlm_kv_from_prefill: %d rows of %d positions after a forward of (%d, %d)", B, n, m->cur_B, m->cur_T_in);
    kv->k.clear(); kv->v.clear(); kv->drop.assign(m->cfg.l_layers, 0);
    for (int l = 0; l < m->cfg.l_layers; l++) {
        bool pruned = l >= m->cur_cut;
        int Tf = pruned ? m->cur_T : m->cur_T_in, rows = pruned ? n - m->cur_drop : n;  // the forward's rows are Tf apart
        kv->drop[l] = pruned ? m->cur_drop : 0;
        kv->k.push_back((floatX*)backend_malloc(on_gpu, (size_t)B * Tl * C * sizeof(floatX)));
        kv->v.push_back((floatX*)backend_malloc(on_gpu, (size_t)B * Tl * C * sizeof(floatX)));
        for (int b = 0; b < B; b++) {
            const floatX* qkv = m->lm.acts[l].qkv + (size_t)b * Tf * 3 * C;  // (Tf, 3C) rows [q | k | v]
            backend_copy_2d(on_gpu, kv->k[l] + (size_t)b * Tl * C, C * sizeof(floatX), qkv + C, 3 * C * sizeof(floatX), C * sizeof(floatX), rows);
            backend_copy_2d(on_gpu, kv->v[l] + (size_t)b * Tl * C, C * sizeof(floatX), qkv + 2 * C, 3 * C * sizeof(floatX), C * sizeof(floatX), rows);
        }
    }
    kv->n = n; kv->B = B;
}

static void vlm_kv_free(VlmModel* m, VlmKVCache* kv) {
    for (size_t l = 0; l < kv->k.size(); l++) { backend_free(m->on_gpu, kv->k[l]); backend_free(m->on_gpu, kv->v[l]); }
    kv->k.clear(); kv->v.clear();
}

// one decode step: tokens (host, kv->B) at position kv->n of every row -> m->logits (B, V) on
// the backend; kv->n grows by one. Reads the GPT's weights directly (LoRA merged).
static void vlm_decode_step(VlmModel* m, VlmKVCache* kv, const int* tokens) {
    const VlmConfig& c = m->cfg;
    bool on_gpu = m->on_gpu;
    int C = c.l_dim, NH = c.l_heads, V = c.vocab, Tl = m->Tl, B = kv->B, pos = kv->n;
    if (pos >= Tl) FATAL("vlm_decode_step: the cache is full (%d positions)", Tl);
    if ((int)kv->drop.size() != c.l_layers) kv->drop.assign(c.l_layers, 0);
    // B-row scratch: the first rows of the LM's activations (the prefill's are no longer needed)
    floatX* x = m->lm.acts[0].resid;
    int* d_tok = m->d_tokens;
    backend_copy(on_gpu, d_tok, tokens, B * sizeof(int), true);
    embedding_forward(on_gpu, x, d_tok, vlm_param(m, m->wte), B, C);
    int shift = vlm_reduces(m) ? m->P - m->Pi : 0;  // the text's positions as without the reduction
    position_add_forward(on_gpu, x, vlm_param(m, m->wpe) + (size_t)(pos + shift) * C, B, 1, C);
    for (int l = 0; l < c.l_layers; l++) {
        BlockParams& p = m->lm.p[l];
        BlockActs& a = m->lm.acts[l];
        layernorm_forward(on_gpu, a.ln1, a.ln1_mean, a.ln1_rstd, x, p.ln1_w, p.ln1_b, B, C);
        linear_forward(on_gpu, a.qkv, a.ln1, p.qkv_w, p.qkv_b, B, C, 3 * C);
        // rows [q | k | v]: k and v to the cache (slot pos - drop[l]); q as (B, C) rows for attention_step
        int slot = pos - kv->drop[l];
        backend_copy_2d(on_gpu, kv->k[l] + (size_t)slot * C, (size_t)Tl * C * sizeof(floatX), a.qkv + C, 3 * C * sizeof(floatX), C * sizeof(floatX), B);
        backend_copy_2d(on_gpu, kv->v[l] + (size_t)slot * C, (size_t)Tl * C * sizeof(floatX), a.qkv + 2 * C, 3 * C * sizeof(floatX), C * sizeof(floatX), B);
        const floatX* q = a.qkv;
        if (B > 1) {
            backend_copy_2d(on_gpu, m->lnf, C * sizeof(floatX), a.qkv, 3 * C * sizeof(floatX), C * sizeof(floatX), B);
            q = m->lnf;
        }
        attention_step(on_gpu, a.atty, q, kv->k[l], kv->v[l], B, slot + 1, Tl, C, NH);
        linear_forward(on_gpu, a.resid2, a.atty, p.attn_proj_w, p.attn_proj_b, B, C, C);
        add_inplace(on_gpu, a.resid2, x, (size_t)B * C);
        layernorm_forward(on_gpu, a.ln2, a.ln2_mean, a.ln2_rstd, a.resid2, p.ln2_w, p.ln2_b, B, C);
        linear_forward(on_gpu, a.fch, a.ln2, p.fc_w, p.fc_b, B, C, 4 * C);
        gelu_forward(on_gpu, a.fch_gelu, a.fch, (size_t)B * 4 * C);
        linear_forward(on_gpu, x, a.fch_gelu, p.fc_proj_w, p.fc_proj_b, B, 4 * C, C);
        add_inplace(on_gpu, x, a.resid2, (size_t)B * C);
    }
    layernorm_forward(on_gpu, m->lnf, m->lnf_mean, m->lnf_rstd, x, vlm_param(m, m->lnf_w), vlm_param(m, m->lnf_b), B, C);
    linear_forward(on_gpu, m->logits, m->lnf, vlm_param(m, m->wte), (const float*)nullptr, B, C, V);
    kv->n++;
}

// image: (H, W, 3) host floats; prompt: text tokens [<bos> <image> ...] (host);
// greedy: up to max_new tokens, stopping after <eos> (eos_token). Returns the new tokens.
// step_logits (optional, host): the logits that chose each new token, (n_new, V).
// image_key: the image's key for a random token reduction (the dataset's image index).
static std::vector<int> vlm_generate(VlmModel* m, const float* image, const std::vector<int>& prompt, int max_new, int eos_token,
                                     std::vector<float>* step_logits = nullptr, int image_key = 0) {
    const VlmConfig& c = m->cfg;
    bool on_gpu = m->on_gpu;
    int V = c.vocab, Tl = m->Tl;
    int len = (int)prompt.size();
    if (len < 2 || len > c.max_text) FATAL("vlm_generate: prompt of %d tokens outside [2, %d]", len, c.max_text);
    // the decode step below reads the GPT's weights directly
    if (m->lm.lora.rank > 0 && !m->lm.lora_merged) FATAL("vlm_generate: merge the GPT's adapters first (transformer_lora_merge)");
    std::vector<int> padded(prompt); padded.resize(c.max_text, 0);
    vlm_forward(m, image, padded.data(), nullptr, &len, 1, &image_key);
    int n = len + m->Pi - 1;  // LM positions filled by the prompt
    VlmKVCache kv;
    vlm_kv_from_prefill(m, &kv, 1, n);
    std::vector<float> logits(V);
    std::vector<int> out;
    int last = n - m->cur_drop - 1;  // the prompt's last row in the logits (fastv: the kept layout)
    backend_copy(on_gpu, logits.data(), m->logits + (size_t)last * V, V * sizeof(floatX), false);
    for (int i = 0; i < max_new; i++) {
        int best = (int)(std::max_element(logits.begin(), logits.end()) - logits.begin());
        if (step_logits) step_logits->insert(step_logits->end(), logits.begin(), logits.end());
        out.push_back(best);
        if (best == eos_token || kv.n >= Tl || len + i + 1 >= c.max_text) break;
        vlm_decode_step(m, &kv, &best);
        backend_copy(on_gpu, logits.data(), m->logits, V * sizeof(floatX), false);
    }
    vlm_kv_free(m, &kv);
    return out;
}
