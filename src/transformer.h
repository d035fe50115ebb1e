// transformer.h: a stack of pre-LN transformer blocks, one definition for the
// vision encoder (bidirectional), the CLIP text encoder and the GPT language
// model (causal), on either backend.
//
// Block l, x: (B, T, C), hd = C / n_head, MLP hidden 4C:
//   a    = LN1(x);  qkv = a Wqkv^T + bqkv                     (B, T, 3C)
//   y    = attention(qkv, causal?, key lengths)               (B, T, C)
//   x'   = x + y Wo^T + bo
//   m    = LN2(x');  h = GELU(m Wfc^T + bfc)                  (B, T, 4C)
//   out  = x' + h Wp^T + bp
//
// The block input of layer l is acts[l].resid; the stack's output is `out`.
// A caller reading an intermediate layer (LLaVA takes the penultimate one)
// reads acts[k].resid and runs the backward from block k - 1 down.
//
// Parameters live in the model's ParamStore under a prefix ("vision.", "lm.").
// Initialisation as GPT-2: weights N(0, 0.02), the two residual projections
// N(0, 0.02 / sqrt(2 n_layer)), biases 0, LayerNorm weight 1 and bias 0.
//
// LoRA (lora.h): transformer_declare with a LoraConfig adds adapters to the
// chosen linear layers of every block (qkv, attn_proj, fc, fc_proj); freezing
// the base is the caller's (the VLM freezes "lm." but the adapters).
#pragma once
#include <string>
#include <vector>
#include "common.h"
#include "activations.h"
#include "attention.h"
#include "layernorm.h"
#include "linear.h"
#include "lora.h"
#include "params.h"
#include "profiler.h"

typedef struct {
    int n_layer, d_model, n_head;
    bool causal;
} TransformerConfig;

typedef struct {
    int ln1_w, ln1_b, qkv_w, qkv_b, attn_proj_w, attn_proj_b, ln2_w, ln2_b, fc_w, fc_b, fc_proj_w, fc_proj_b;
} BlockIndex;

// views of one block's parameters (or gradients: nullptr when frozen)
typedef struct {
    float *ln1_w, *ln1_b;            // (C)
    float *qkv_w, *qkv_b;            // (3C, C), (3C)
    float *attn_proj_w, *attn_proj_b;  // (C, C), (C)
    float *ln2_w, *ln2_b;            // (C)
    float *fc_w, *fc_b;              // (4C, C), (4C)
    float *fc_proj_w, *fc_proj_b;    // (C, 4C), (C)
} BlockParams;

typedef struct {
    floatX* resid;                 // (B, T, C) block input
    float *ln1_mean, *ln1_rstd;    // (B, T)
    floatX* ln1;                   // (B, T, C)
    floatX* qkv;                   // (B, T, 3C)
    float* lse;                    // (B, NH, T) attention log-sum-exp (saved for the backward)
    floatX* atty;                  // (B, T, C) attention output, heads concatenated
    floatX* resid2;                // (B, T, C) after the attention residual
    float *ln2_mean, *ln2_rstd;    // (B, T)
    floatX* ln2;                   // (B, T, C)
    floatX* fch;                   // (B, T, 4C) before GELU
    floatX* fch_gelu;              // (B, T, 4C)
    floatX *h_qkv, *h_attn_proj, *h_fc, *h_fc_proj;  // (B, T, r) LoRA bottlenecks (nullptr: no adapter)
} BlockActs;

// a block's adapters, in the order of its linear layers
typedef struct {
    LoraAdapter qkv, attn_proj, fc, fc_proj;
} BlockLora;

typedef struct {
    floatX *dln, *dqkv, *datty, *dfch, *dfch_gelu;  // shared by every block's backward
    float* D;                                        // (B, NH, T) attention backward scratch
    floatX* lora_dh;                                 // (B, T, r) an adapter's bottleneck gradient
} BlockScratch;

typedef struct {
    TransformerConfig cfg;
    std::vector<BlockIndex> index;
    std::vector<BlockParams> p, dp;
    std::vector<BlockActs> acts;
    floatX* out;          // (B, T, C) output of the last block
    BlockScratch scratch;
    size_t scratch_bytes;
    int B, T;             // the largest batch the activations hold
    // LoRA
    LoraConfig lora;
    float lora_scale;
    std::vector<BlockLora> lora_blocks;
    bool lora_merged;     // folded into the base weights: the passes skip the adapters
    bool training;        // adapter dropout on (transformer_set_training)
    uint64_t dropout_seed;
    floatX* lora_xd;      // (B, T, 4C) dropout scratch (only with dropout)
} Transformer;

static void transformer_declare(Transformer* t, ParamStore* ps, const std::string& prefix, TransformerConfig cfg,
                                const LoraConfig& lora = LoraConfig()) {
    if (cfg.d_model % cfg.n_head != 0) FATAL("%s: d_model %d is not a multiple of n_head %d", prefix.c_str(), cfg.d_model, cfg.n_head);
    t->cfg = cfg;
    t->lora = lora; t->lora_scale = lora_scale(lora);
    t->lora_merged = false; t->training = false; t->dropout_seed = 0;
    int C = cfg.d_model;
    t->index.resize(cfg.n_layer);
    for (int l = 0; l < cfg.n_layer; l++) {
        std::string p = prefix + "blocks." + std::to_string(l) + ".";
        BlockIndex& i = t->index[l];
        i.ln1_w = params_add(ps, p + "ln1.weight", {C}, false);
        i.ln1_b = params_add(ps, p + "ln1.bias", {C}, false);
        i.qkv_w = params_add(ps, p + "attn.qkv.weight", {3 * C, C}, true);
        i.qkv_b = params_add(ps, p + "attn.qkv.bias", {3 * C}, false);
        i.attn_proj_w = params_add(ps, p + "attn.proj.weight", {C, C}, true);
        i.attn_proj_b = params_add(ps, p + "attn.proj.bias", {C}, false);
        i.ln2_w = params_add(ps, p + "ln2.weight", {C}, false);
        i.ln2_b = params_add(ps, p + "ln2.bias", {C}, false);
        i.fc_w = params_add(ps, p + "mlp.fc.weight", {4 * C, C}, true);
        i.fc_b = params_add(ps, p + "mlp.fc.bias", {4 * C}, false);
        i.fc_proj_w = params_add(ps, p + "mlp.proj.weight", {C, 4 * C}, true);
        i.fc_proj_b = params_add(ps, p + "mlp.proj.bias", {C}, false);
    }
    t->lora_blocks.assign(cfg.n_layer, BlockLora{});
    if (lora.rank > 0) {
        std::vector<std::string> targets = lora_parse_targets(lora.targets, {"qkv", "attn_proj", "fc", "fc_proj"},
                                                              {"qkv", "attn_proj", "fc", "fc_proj"}, "transformer");
        auto wants = [&](const char* name) { return std::find(targets.begin(), targets.end(), name) != targets.end(); };
        for (int l = 0; l < cfg.n_layer; l++) {
            std::string p = prefix + "blocks." + std::to_string(l) + ".";
            BlockLora& bl = t->lora_blocks[l];
            if (wants("qkv")) bl.qkv = lora_declare(ps, p + "attn.qkv", C, 3 * C, lora.rank);
            if (wants("attn_proj")) bl.attn_proj = lora_declare(ps, p + "attn.proj", C, C, lora.rank);
            if (wants("fc")) bl.fc = lora_declare(ps, p + "mlp.fc", C, 4 * C, lora.rank);
            if (wants("fc_proj")) bl.fc_proj = lora_declare(ps, p + "mlp.proj", 4 * C, C, lora.rank);
        }
    }
}

static BlockParams block_views(const ParamStore* ps, const BlockIndex& i, bool grads) {
    auto v = [&](int k) { return grads ? param_grad(ps, k) : param_data(ps, k); };
    return {v(i.ln1_w), v(i.ln1_b), v(i.qkv_w), v(i.qkv_b), v(i.attn_proj_w), v(i.attn_proj_b),
            v(i.ln2_w), v(i.ln2_b), v(i.fc_w), v(i.fc_b), v(i.fc_proj_w), v(i.fc_proj_b)};
}

// after params_allocate: pointer views, resolved once
static void transformer_resolve(Transformer* t, const ParamStore* ps) {
    int L = t->cfg.n_layer;
    t->p.resize(L); t->dp.resize(L);
    for (int l = 0; l < L; l++) {
        t->p[l] = block_views(ps, t->index[l], false); t->dp[l] = block_views(ps, t->index[l], true);
        BlockLora& bl = t->lora_blocks[l];
        for (LoraAdapter* a : {&bl.qkv, &bl.attn_proj, &bl.fc, &bl.fc_proj}) lora_resolve(a, ps);
    }
}

// dropout on between transformer_set_training(t, true, seed) and (t, false, ...)
static void transformer_set_training(Transformer* t, bool training, uint64_t seed) { t->training = training; t->dropout_seed = seed; }

// adapter `which` (0 qkv, 1 attn_proj, 2 fc, 3 fc_proj) of block l: its own dropout mask
static LoraRun transformer_lora_run(const Transformer* t, int l, int which) {
    return {t->lora_scale, t->training ? t->lora.dropout : 0.0f, t->dropout_seed * 0x100000001B3ull + (uint64_t)l * 4 + which,
            t->lora_xd, t->scratch.lora_dh};
}

// W += sign * s * B A for every adapter, in a buffer laid out like ps->params
static void transformer_lora_fold(const Transformer* t, const ParamStore* ps, float* base, bool on_gpu, float sign) {
    auto at = [&](int i) { return base + ps->tensors[i].offset; };
    for (int l = 0; l < t->cfg.n_layer; l++) {
        const BlockLora& bl = t->lora_blocks[l];
        const BlockIndex& bi = t->index[l];
        const std::pair<const LoraAdapter*, int> pairs[] = {
            {&bl.qkv, bi.qkv_w}, {&bl.attn_proj, bi.attn_proj_w}, {&bl.fc, bi.fc_w}, {&bl.fc_proj, bi.fc_proj_w}};
        for (auto& [ad, w] : pairs)
            if (lora_active(*ad))
                lora_merge(on_gpu, at(w), at(ad->A_index), at(ad->B_index), ad->out_features, ad->in_features, ad->rank,
                           t->lora_scale, sign);
    }
}

// inference: fold the adapters into the weights (the passes then skip them), or take them out
static void transformer_lora_merge(Transformer* t, ParamStore* ps, bool merge) {
    if (t->lora.rank == 0 || t->lora_merged == merge) return;
    transformer_lora_fold(t, ps, ps->params, ps->on_gpu, merge ? 1.0f : -1.0f);
    t->lora_merged = merge;
}

static void transformer_layout_acts(Transformer* t, Arena* a, int B, int T) {
    size_t BT = (size_t)B * T, C = t->cfg.d_model, NH = t->cfg.n_head;
    t->B = B; t->T = T;
    t->acts.resize(t->cfg.n_layer);
    for (BlockActs& x : t->acts) {
        x.resid = arena_take<floatX>(a, BT * C);
        x.ln1_mean = arena_take<float>(a, BT); x.ln1_rstd = arena_take<float>(a, BT);
        x.ln1 = arena_take<floatX>(a, BT * C);
        x.qkv = arena_take<floatX>(a, BT * 3 * C);
        x.lse = arena_take<float>(a, (size_t)B * NH * T);
        x.atty = arena_take<floatX>(a, BT * C);
        x.resid2 = arena_take<floatX>(a, BT * C);
        x.ln2_mean = arena_take<float>(a, BT); x.ln2_rstd = arena_take<float>(a, BT);
        x.ln2 = arena_take<floatX>(a, BT * C);
        x.fch = arena_take<floatX>(a, BT * 4 * C);
        x.fch_gelu = arena_take<floatX>(a, BT * 4 * C);
    }
    size_t r = t->lora.rank;
    for (int l = 0; l < t->cfg.n_layer; l++) {
        const BlockLora& bl = t->lora_blocks[l];
        BlockActs& x = t->acts[l];
        x.h_qkv = lora_active(bl.qkv) ? arena_take<floatX>(a, BT * r) : nullptr;
        x.h_attn_proj = lora_active(bl.attn_proj) ? arena_take<floatX>(a, BT * r) : nullptr;
        x.h_fc = lora_active(bl.fc) ? arena_take<floatX>(a, BT * r) : nullptr;
        x.h_fc_proj = lora_active(bl.fc_proj) ? arena_take<floatX>(a, BT * r) : nullptr;
    }
    t->lora_xd = (r > 0 && t->lora.dropout > 0) ? arena_take<floatX>(a, BT * 4 * C) : nullptr;
    t->out = arena_take<floatX>(a, BT * C);
}

static void transformer_layout_scratch(Transformer* t, Arena* a) {
    size_t BT = (size_t)t->B * t->T, C = t->cfg.d_model;
    BlockScratch& s = t->scratch;
    s.dln = arena_take<floatX>(a, BT * C);
    size_t start = a->used - BT * C * sizeof(floatX);  // where dln begins: the views run on from there
    s.dqkv = arena_take<floatX>(a, BT * 3 * C);
    s.datty = arena_take<floatX>(a, BT * C);
    s.dfch = arena_take<floatX>(a, BT * 4 * C);
    s.dfch_gelu = arena_take<floatX>(a, BT * 4 * C);
    s.D = arena_take<float>(a, BT * t->cfg.n_head);
    s.lora_dh = t->lora.rank > 0 ? arena_take<floatX>(a, BT * t->lora.rank) : nullptr;
    t->scratch_bytes = a->used - start;
}

// GPT-2's initialisation into a host copy of the store's parameters
static void transformer_init(const Transformer* t, const ParamStore* ps, float* host, Rng* rng) {
    int L = t->cfg.n_layer;
    float resid_std = 0.02f / sqrtf(2.0f * L);
    auto fill = [&](int k, float std) {
        const ParamTensor& pt = ps->tensors[k];
        for (size_t j = 0; j < pt.numel; j++) host[pt.offset + j] = std * rng_normal(rng);
    };
    auto constant = [&](int k, float v) {
        const ParamTensor& pt = ps->tensors[k];
        for (size_t j = 0; j < pt.numel; j++) host[pt.offset + j] = v;
    };
    for (const BlockIndex& i : t->index) {
        constant(i.ln1_w, 1.0f); constant(i.ln1_b, 0.0f); constant(i.ln2_w, 1.0f); constant(i.ln2_b, 0.0f);
        fill(i.qkv_w, 0.02f); constant(i.qkv_b, 0.0f);
        fill(i.attn_proj_w, resid_std); constant(i.attn_proj_b, 0.0f);
        fill(i.fc_w, 0.02f); constant(i.fc_b, 0.0f);
        fill(i.fc_proj_w, resid_std); constant(i.fc_proj_b, 0.0f);
    }
}

// input already in acts[0].resid; lengths: (B) valid tokens on the backend (nullptr: all T).
// Runs blocks 0 .. n_blocks - 1 (a caller that reads an earlier layer need not run the rest).
static void transformer_forward(Transformer* t, bool on_gpu, const int* lengths, int B, int T, int n_blocks) {
    int C = t->cfg.d_model, NH = t->cfg.n_head, L = n_blocks, BT = B * T;
    if (B > t->B || T > t->T) FATAL("transformer_forward: shape (%d, %d) exceeds the built (%d, %d)", B, T, t->B, t->T);
    bool lora = t->lora.rank > 0 && !t->lora_merged;
    for (int l = 0; l < L; l++) {
        BlockParams& p = t->p[l];
        BlockActs& a = t->acts[l];
        const BlockLora& bl = t->lora_blocks[l];
        floatX* block_out = l + 1 < t->cfg.n_layer ? t->acts[l + 1].resid : t->out;
        PROF(on_gpu, "layernorm", layernorm_forward(on_gpu, a.ln1, a.ln1_mean, a.ln1_rstd, a.resid, p.ln1_w, p.ln1_b, BT, C));
        PROF(on_gpu, "qkv", linear_forward(on_gpu, a.qkv, a.ln1, p.qkv_w, p.qkv_b, BT, C, 3 * C));
        if (lora && lora_active(bl.qkv))
            PROF(on_gpu, "lora", lora_forward(on_gpu, bl.qkv, transformer_lora_run(t, l, 0), a.h_qkv, a.ln1, a.qkv, nullptr, BT));
        PROF(on_gpu, "attention", attention_forward(on_gpu, a.atty, a.lse, a.qkv, lengths, B, T, C, NH, t->cfg.causal));
        PROF(on_gpu, "attn_proj", linear_forward(on_gpu, a.resid2, a.atty, p.attn_proj_w, p.attn_proj_b, BT, C, C));
        if (lora && lora_active(bl.attn_proj))
            PROF(on_gpu, "lora", lora_forward(on_gpu, bl.attn_proj, transformer_lora_run(t, l, 1), a.h_attn_proj, a.atty, a.resid2, nullptr, BT));
        PROF(on_gpu, "attn_proj", add_inplace(on_gpu, a.resid2, a.resid, (size_t)BT * C));
        PROF(on_gpu, "layernorm", layernorm_forward(on_gpu, a.ln2, a.ln2_mean, a.ln2_rstd, a.resid2, p.ln2_w, p.ln2_b, BT, C));
        PROF(on_gpu, "mlp", linear_forward(on_gpu, a.fch, a.ln2, p.fc_w, p.fc_b, BT, C, 4 * C));
        if (lora && lora_active(bl.fc))
            PROF(on_gpu, "lora", lora_forward(on_gpu, bl.fc, transformer_lora_run(t, l, 2), a.h_fc, a.ln2, a.fch, nullptr, BT));
        PROF(on_gpu, "mlp", gelu_forward(on_gpu, a.fch_gelu, a.fch, (size_t)BT * 4 * C);
                            linear_forward(on_gpu, block_out, a.fch_gelu, p.fc_proj_w, p.fc_proj_b, BT, 4 * C, C));
        if (lora && lora_active(bl.fc_proj))
            PROF(on_gpu, "lora", lora_forward(on_gpu, bl.fc_proj, transformer_lora_run(t, l, 3), a.h_fc_proj, a.fch_gelu, block_out, nullptr, BT));
        PROF(on_gpu, "mlp", add_inplace(on_gpu, block_out, a.resid2, (size_t)BT * C));
    }
}

// dresid: (B, T, C), in: dloss/d(output of block from_layer - 1), out: dloss/d(stack input).
// Runs blocks from_layer - 1 .. 0 (from_layer = n_layer: the whole stack).
// Weight gradients accumulate; a frozen stack (null gradient views) passes the
// gradient through to its input without weight gradients (LLaVA's stage 1 trains
// the projector through the frozen LM). Scratch is zeroed here per block.
static void transformer_backward(Transformer* t, bool on_gpu, floatX* dresid, const int* lengths, int B, int T, int from_layer) {
    int C = t->cfg.d_model, NH = t->cfg.n_head, BT = B * T;
    BlockScratch& s = t->scratch;
    bool lora = t->lora.rank > 0;
    if (lora && t->lora_merged) FATAL("transformer_backward: the adapters are merged into the base (unmerge to train)");
    for (int l = from_layer - 1; l >= 0; l--) {
        BlockParams& p = t->p[l];
        BlockParams& dp = t->dp[l];
        BlockActs& a = t->acts[l];
        const BlockLora& bl = t->lora_blocks[l];
        backend_memset0(on_gpu, s.dln, t->scratch_bytes);  // the scratch views are contiguous from dln
        // MLP branch; dresid holds dloss/d(block output) and flows straight to resid2
        PROF(on_gpu, "mlp", linear_backward(on_gpu, s.dfch_gelu, dp.fc_proj_w, dp.fc_proj_b, dresid, a.fch_gelu, p.fc_proj_w, BT, 4 * C, C));
        if (lora && lora_active(bl.fc_proj))
            PROF(on_gpu, "lora", lora_backward(on_gpu, bl.fc_proj, transformer_lora_run(t, l, 3), a.h_fc_proj, a.fch_gelu, s.dfch_gelu, dresid, nullptr, BT));
        PROF(on_gpu, "mlp", gelu_backward(on_gpu, s.dfch, s.dfch_gelu, a.fch, (size_t)BT * 4 * C);
                            linear_backward(on_gpu, s.dln, dp.fc_w, dp.fc_b, s.dfch, a.ln2, p.fc_w, BT, C, 4 * C));
        if (lora && lora_active(bl.fc))
            PROF(on_gpu, "lora", lora_backward(on_gpu, bl.fc, transformer_lora_run(t, l, 2), a.h_fc, a.ln2, s.dln, s.dfch, nullptr, BT));
        PROF(on_gpu, "layernorm", layernorm_backward(on_gpu, dresid, dp.ln2_w, dp.ln2_b, s.dln, a.resid2, p.ln2_w, a.ln2_mean, a.ln2_rstd, BT, C));
        // attention branch; dresid now holds dloss/d(resid2)
        backend_memset0(on_gpu, s.dln, (size_t)BT * C * sizeof(floatX));
        PROF(on_gpu, "attn_proj", linear_backward(on_gpu, s.datty, dp.attn_proj_w, dp.attn_proj_b, dresid, a.atty, p.attn_proj_w, BT, C, C));
        if (lora && lora_active(bl.attn_proj))
            PROF(on_gpu, "lora", lora_backward(on_gpu, bl.attn_proj, transformer_lora_run(t, l, 1), a.h_attn_proj, a.atty, s.datty, dresid, nullptr, BT));
        PROF(on_gpu, "attention", attention_backward(on_gpu, s.dqkv, s.D, s.datty, a.qkv, a.atty, a.lse, lengths, B, T, C, NH, t->cfg.causal));
        PROF(on_gpu, "qkv", linear_backward(on_gpu, s.dln, dp.qkv_w, dp.qkv_b, s.dqkv, a.ln1, p.qkv_w, BT, C, 3 * C));
        if (lora && lora_active(bl.qkv))
            PROF(on_gpu, "lora", lora_backward(on_gpu, bl.qkv, transformer_lora_run(t, l, 0), a.h_qkv, a.ln1, s.dln, s.dqkv, nullptr, BT));
        PROF(on_gpu, "layernorm", layernorm_backward(on_gpu, dresid, dp.ln1_w, dp.ln1_b, s.dln, a.resid, p.ln1_w, a.ln1_mean, a.ln1_rstd, BT, C));
    }
}

// ---------------------------------------------------------------------------
// One block in two halves, for a caller that changes the rows between the attention and the MLP
// (ToMe merges tokens there: src/tome.h). The same operations, in the same order, as block l of
// transformer_forward, forward only and without adapters (the vision encoder has none):
//   transformer_block_attention: acts[l].resid (B, T, C) -> acts[l].resid2 = x + attn(LN1(x)) Wo + bo;
//                                key_bias (B, T) on the backend: proportional attention
//                                (attention_forward_bias); nullptr: attention_forward
//   transformer_block_mlp:       acts[l].resid2 (B, T, C) -> the block's output (acts[l + 1].resid, or
//                                t->out after the last block) = x' + MLP(LN2(x')); T may be smaller
//                                than the attention half's when rows were merged in between
static void transformer_block_attention(Transformer* t, bool on_gpu, int l, const float* key_bias, int B, int T) {
    int C = t->cfg.d_model, NH = t->cfg.n_head, BT = B * T;
    if (B > t->B || T > t->T) FATAL("transformer_block_attention: shape (%d, %d) exceeds the built (%d, %d)", B, T, t->B, t->T);
    if (t->lora.rank > 0 && !t->lora_merged) FATAL("transformer_block_attention: merge the adapters first (transformer_lora_merge)");
    BlockParams& p = t->p[l];
    BlockActs& a = t->acts[l];
    PROF(on_gpu, "layernorm", layernorm_forward(on_gpu, a.ln1, a.ln1_mean, a.ln1_rstd, a.resid, p.ln1_w, p.ln1_b, BT, C));
    PROF(on_gpu, "qkv", linear_forward(on_gpu, a.qkv, a.ln1, p.qkv_w, p.qkv_b, BT, C, 3 * C));
    if (key_bias) PROF(on_gpu, "attention", attention_forward_bias(on_gpu, a.atty, a.lse, a.qkv, key_bias, nullptr, B, T, C, NH, t->cfg.causal));
    else PROF(on_gpu, "attention", attention_forward(on_gpu, a.atty, a.lse, a.qkv, nullptr, B, T, C, NH, t->cfg.causal));
    PROF(on_gpu, "attn_proj", linear_forward(on_gpu, a.resid2, a.atty, p.attn_proj_w, p.attn_proj_b, BT, C, C));
    PROF(on_gpu, "attn_proj", add_inplace(on_gpu, a.resid2, a.resid, (size_t)BT * C));
}

static void transformer_block_mlp(Transformer* t, bool on_gpu, int l, int B, int T) {
    int C = t->cfg.d_model, BT = B * T;
    if (B > t->B || T > t->T) FATAL("transformer_block_mlp: shape (%d, %d) exceeds the built (%d, %d)", B, T, t->B, t->T);
    BlockParams& p = t->p[l];
    BlockActs& a = t->acts[l];
    floatX* block_out = l + 1 < t->cfg.n_layer ? t->acts[l + 1].resid : t->out;
    PROF(on_gpu, "layernorm", layernorm_forward(on_gpu, a.ln2, a.ln2_mean, a.ln2_rstd, a.resid2, p.ln2_w, p.ln2_b, BT, C));
    PROF(on_gpu, "mlp", linear_forward(on_gpu, a.fch, a.ln2, p.fc_w, p.fc_b, BT, C, 4 * C));
    PROF(on_gpu, "mlp", gelu_forward(on_gpu, a.fch_gelu, a.fch, (size_t)BT * 4 * C);
                        linear_forward(on_gpu, block_out, a.fch_gelu, p.fc_proj_w, p.fc_proj_b, BT, 4 * C, C));
    PROF(on_gpu, "mlp", add_inplace(on_gpu, block_out, a.resid2, (size_t)BT * C));
}
