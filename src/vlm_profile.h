// vlm_profile.h: where the VLM's inference time goes (train_vlm --stage profile):
// per-component time on either backend and analytic FLOPs per component.
//
// Components of answering one question about an image (src/vlm_model.h's stages):
//   vision encoder   image upload, patch embedding, [CLS] + positions, the ViT blocks up to the
//                    feature layer (the penultimate), [CLS] dropped      (vlm_encode_images)
//   token reduction  pool / gather of the patch features, with the host selection and the index
//                    upload (vlm_reduce_tokens; nothing runs without a reduction)
//   projector        Linear (-GELU-Linear) over the P' image tokens   (vlm_project)
//   LM prefill       the prompt's LM sequences built and uploaded, embedding + splice + positions,
//                    every GPT block, final LN, the LM head over every row (vlm_prepare_sequences
//                    + vlm_lm_forward). The forward runs the whole padded sequence,
//                    Tl' = max_text - 1 + P' rows, not only the prompt's n = len + P' - 1
//   first token      the logits row of the prompt's last position to the host, argmax
//   time to first token (TTFT)  all of the above, timed end to end as one region
//   decode step      one KV-cache step (vlm_decode_step: B rows, one new token each, attending to
//                    the prompt's n positions and itself), its logits to the host, argmax
// Timing: each component (and TTFT) runs `warmup` times, then `iters` times, each run timed
// alone: CUDA events around it on the GPU (the device synchronized before, the stop event
// waited for: the elapsed time includes the host work inside the region, such as building the
// sequences and the copies), wall time on the CPU. Reported: the median, and the 10th / 90th
// percentiles. The components are timed separately, so their sum only approximates the TTFT.
//
// FLOPs (analytic; convention: one multiply-add = 2 FLOPs): a matmul of (N, K) by (K, M) is
// 2 N K M. Only matmul-like work counts: linear layers and the attention's scores and values;
// elementwise work (LayerNorm, GELU, softmax, biases, residual adds, embedding lookups,
// position adds, the 2x2 pooling, gathers, argmax) is not counted (it is O(T C), not O(T C^2)).
// One transformer block, T rows of width C, MLP 4C, `pairs` (query, key) pairs attended:
//   QKV          2 T C 3C
//   scores       2 pairs C          (q . k for every head: hd NH = C)
//   values       2 pairs C          (sum_j p_j v_j)
//   output proj  2 T C C
//   MLP          2 T C 4C * 2       (fc and proj)
// pairs = what is computed: row i attends to lim(i) keys (src/attention.h's attention_limit:
// min(length, i + 1) when causal, the length otherwise), summed over the T rows. Bidirectional
// over T valid tokens: T^2; causal over a prompt of n valid rows padded to T: n (n + 1) / 2 +
// (T - n) n (the padding rows attend to the n keys too: they are computed). That is exactly
// what the CPU reference and the decode step compute; the GPU's fused (flash) kernels also
// compute the masked half of each diagonal 64 x 64 tile and skip the tiles above it, which
// is not counted.
//   patch embedding  2 P K Dv           (K = p p 3; per image)
//   projector        2 P' Dv Dl (+ 2 P' Dl Dl for the MLP projector)
//   LM head          2 T Dl V (tied wte; the prefill computes it for all T rows)
//   decode step      per block: QKV 2 C 3C, scores 2 n C, values 2 n C, out 2 C C, MLP 2 C 8C,
//                    with n the keys attended (the cache and the new token); head 2 C V
// FastV (reduce fastv, P' of P kept from block L' on; T' = T - (P - P'), n' = n - (P - P')):
//   LM blocks        L' blocks over (T, n) + (L - L') blocks over (T', n')
//   ranking          block L''s QKV over all T rows (2 T C 3C: computed once more on the full
//                    sequence) + the query row's scores over its n keys (2 n C); counted in the prefill
//   LM head          2 T' Dl V
//   decode step      L' blocks over n + 1 keys, L - L' blocks over n' + 1
// The token reduction row of the profile is empty for fastv (the ranking and the gather run inside
// the LM prefill).
// ToMe (reduce tome, r_l merges in ViT block l; T_l rows per image at block l's input, T_0 = P + 1):
//   block l      QKV, scores, values, output projection over T_l rows (T_l^2 pairs), the matching's
//                cosine similarities 2 |A| |B| hd when r_l > 0 (|A| = ceil(T_l/2) - 1 sources, |B| =
//                floor(T_l/2); the head mean of the keys, the norms and the weighted merge are
//                elementwise: not counted), the MLP over the T_l - r_l rows left
//   vision       patch embedding + those blocks; the rest as above with P' image tokens. The token
//                reduction row is empty (the merging runs inside the vision encoder).
// The ViT classifier (stage classify, per image): patch embedding 2 P K Dv, every block (on 1 + P'
// rows after an input reduction, or with ToMe's merges), the head 2 Dv n_classes.
// All per sequence, times B for a batch.
#pragma once
#include <algorithm>
#include <functional>
#include <string>
#include <sys/stat.h>
#include <vector>
#include "common.h"
#include "logger.h"       // JsonLine, json_escape
#include "profiler.h"     // wall_ms
#include "safetensors.h"  // write_text_file_atomic
#include "vlm_model.h"

// ---------------------------------------------------------------------------
// FLOP formulas (FLOPs of one sequence; see the top)

static double flops_linear(double rows, double in, double out) { return 2.0 * rows * in * out; }

// (query, key) pairs attended by T query rows over `len` valid keys (len <= T)
static double attention_pairs(int T, int len, bool causal) {
    double n = std::min(len, T);
    if (!causal) return (double)T * n;
    return n * (n + 1) / 2 + (double)(T - n) * n;
}

// one pre-LN transformer block: T rows, width C, MLP 4C, `pairs` attended
static double flops_block(double T, double C, double pairs) {
    return flops_linear(T, C, 3 * C) + 2.0 * pairs * C + 2.0 * pairs * C + flops_linear(T, C, C) + 2 * flops_linear(T, C, 4 * C);
}

// n_blocks ViT blocks of width C, NH heads, on T0 rows per image ([CLS] included); sched[l] (empty: 0)
// tokens merged in block l (ToMe, see the top)
static double vit_blocks_flops(int T0, int C, int NH, int n_blocks, const std::vector<int>& sched = std::vector<int>()) {
    double f = 0;
    int T = T0, hd = C / NH;
    for (int l = 0; l < n_blocks; l++) {
        int r = l < (int)sched.size() ? sched[l] : 0;
        double pairs = (double)T * T;
        f += flops_linear(T, C, 3 * C) + 2.0 * pairs * C + 2.0 * pairs * C + flops_linear(T, C, C);
        if (r > 0) f += 2.0 * ((T + 1) / 2 - 1) * (T / 2) * hd;
        T -= r;
        f += 2 * flops_linear(T, C, 4 * C);
    }
    return f;
}

// the ViT classifier per image (see the top): rows_in = 1 + P' after an input reduction, P + 1 otherwise
static double vit_classifier_flops(const VlmConfig& c, int n_classes, int rows_in, const std::vector<int>& sched = std::vector<int>()) {
    int P = vlm_num_patches(c), K = c.patch * c.patch * 3;
    return flops_linear(P, K, c.v_dim) + vit_blocks_flops(rows_in, c.v_dim, c.v_heads, c.v_layers, sched) + flops_linear(1, c.v_dim, n_classes);
}

typedef struct {
    double vision, reduce, projector, prefill, first_token, ttft, decode;  // per sequence
    double patch_embed, vit_blocks, lm_blocks, lm_head;                     // parts of the above
} VlmFlops;

// Pi: image tokens the LM sees (P'); prompt_len: text tokens of the prompt ([<bos> <image> ... <sep>]).
// The decode step is the first after the prompt: it attends to n + 1 keys, n = prompt_len + Pi - 1
// (the prompt's cached positions and the new token itself)
// Pf, cut (fastv): P' image rows kept from block `cut` on (Pf < 0 or Pf >= Pi: no pruning)
// tome_sched (tome): merges per ViT block (empty: none)
static VlmFlops vlm_flops(const VlmConfig& c, int Pi, int prompt_len, int Pf = -1, int cut = 0,
                          const std::vector<int>& tome_sched = std::vector<int>()) {
    VlmFlops f = {};
    int P = vlm_num_patches(c), K = c.patch * c.patch * 3, Dv = c.v_dim, Dl = c.l_dim, V = c.vocab;
    int Tv = P + 1, fl = vlm_feature_layer(c);
    f.patch_embed = flops_linear(P, K, Dv);
    f.vit_blocks = tome_sched.empty() ? fl * flops_block(Tv, Dv, attention_pairs(Tv, Tv, false))
                                      : vit_blocks_flops(Tv, Dv, c.v_heads, fl, tome_sched);
    f.vision = f.patch_embed + f.vit_blocks;
    f.reduce = 0;
    f.projector = flops_linear(Pi, Dv, Dl) + (c.proj_mlp ? flops_linear(Pi, Dl, Dl) : 0.0);
    int T = vlm_lm_len(c, Pi), n = prompt_len + Pi - 1;
    f.lm_blocks = c.l_layers * flops_block(T, Dl, attention_pairs(T, n, true));
    f.lm_head = flops_linear(T, Dl, V);
    f.prefill = f.lm_blocks + f.lm_head;
    f.first_token = 0;
    f.ttft = f.vision + f.reduce + f.projector + f.prefill + f.first_token;
    int keys = n + 1;
    f.decode = c.l_layers * flops_block(1, Dl, keys) + flops_linear(1, Dl, V);
    if (Pf >= 0 && Pf < Pi) {
        int drop = Pi - Pf, T2 = T - drop, n2 = n - drop, L = c.l_layers;
        f.lm_blocks = cut * flops_block(T, Dl, attention_pairs(T, n, true)) + (L - cut) * flops_block(T2, Dl, attention_pairs(T2, n2, true)) +
                      flops_linear(T, Dl, 3 * Dl) + 2.0 * n * Dl;
        f.lm_head = flops_linear(T2, Dl, V);
        f.prefill = f.lm_blocks + f.lm_head;
        f.ttft = f.vision + f.reduce + f.projector + f.prefill + f.first_token;
        f.decode = cut * flops_block(1, Dl, n + 1) + (L - cut) * flops_block(1, Dl, n2 + 1) + flops_linear(1, Dl, V);
    }
    return f;
}

// ---------------------------------------------------------------------------
// timing

// one run of fn, in ms: CUDA events on the GPU, wall time on the CPU
static double time_once_ms(bool on_gpu, const std::function<void()>& fn) {
#ifdef __CUDACC__
    if (on_gpu) {
        static cudaEvent_t start = nullptr, stop = nullptr;
        if (!start) { cudaCheck(cudaEventCreate(&start)); cudaCheck(cudaEventCreate(&stop)); }
        cudaCheck(cudaDeviceSynchronize());
        cudaCheck(cudaEventRecord(start));
        fn();
        cudaCheck(cudaEventRecord(stop));
        cudaCheck(cudaEventSynchronize(stop));
        float ms = 0;
        cudaCheck(cudaEventElapsedTime(&ms, start, stop));
        return ms;
    }
#endif
    if (on_gpu) FATAL("built without CUDA");
    double t0 = wall_ms();
    fn();
    return wall_ms() - t0;
}

// q-quantile (0..1) of the values, linear between the order statistics
static double quantile(std::vector<double> v, double q) {
    if (v.empty()) return NAN;
    std::sort(v.begin(), v.end());
    double pos = q * (v.size() - 1);
    size_t i = (size_t)pos;
    double frac = pos - i;
    return i + 1 < v.size() ? v[i] * (1 - frac) + v[i + 1] * frac : v[i];
}

typedef struct { double median, p10, p90; int runs; } TimeStats;

// warmup untimed runs, then iters timed ones
static TimeStats time_runs(bool on_gpu, int warmup, int iters, const std::function<void()>& fn) {
    for (int i = 0; i < warmup; i++) fn();
    std::vector<double> ms;
    for (int i = 0; i < iters; i++) ms.push_back(time_once_ms(on_gpu, fn));
    return {quantile(ms, 0.5), quantile(ms, 0.1), quantile(ms, 0.9), iters};
}

// ---------------------------------------------------------------------------
// the profile of one batch

typedef struct {
    std::string name;  // "vision encoder", ...
    TimeStats t;
    double gflop;      // the batch's
    bool in_ttft;      // a part of the time to first token (the decode step is not)
} VlmProfileRow;

typedef struct {
    int B, P, Pi, prompt_len, lm_rows, decode_keys;
    std::string reduce;
    float ratio;
    std::vector<VlmProfileRow> rows;  // vision, reduction, projector, prefill, first token, TTFT, decode
    double ttft_ms, decode_ms;
    std::vector<int> first_tokens, second_tokens;  // what the runs produced (row 0..B-1)
} VlmProfile;

// images: (B, H, W, 3) host; prompt: [<bos> <image> ... <sep>], the same for every row; keys: (B)
// image keys of a random reduction (nullptr: the row). The model must hold a batch of B.
static VlmProfile vlm_profile(VlmModel* m, const float* images, const std::vector<int>& prompt, const int* keys, int B,
                              int warmup, int iters) {
    const VlmConfig& c = m->cfg;
    bool on_gpu = m->on_gpu;
    int V = c.vocab, T = c.max_text, len = (int)prompt.size();
    if (len < 2 || len >= T) FATAL("vlm_profile: a prompt of %d tokens leaves no room to answer (max_text %d)", len, T);
    if (B < 1 || B > m->B) FATAL("vlm_profile: batch %d outside [1, %d]", B, m->B);
    if (m->lm.lora.rank > 0 && !m->lm.lora_merged) FATAL("vlm_profile: merge the GPT's adapters first (transformer_lora_merge)");
    std::vector<int> tokens((size_t)B * T, 0), lengths(B, len);
    for (int b = 0; b < B; b++) std::copy(prompt.begin(), prompt.end(), tokens.begin() + (size_t)b * T);
    int Tl = vlm_lm_len(c, m->Pi), n = len + m->Pi - 1;
    int To = vlm_lm_len(c, m->Pf), no = len + m->Pf - 1;  // the logits' layout (fastv: P' image rows)
    std::vector<float> row(V), logits((size_t)B * V);
    std::vector<int> first(B), second(B);
    auto argmax = [](const float* x, int n) { return (int)(std::max_element(x, x + n) - x); };
    auto prefill = [&]() { int t = vlm_prepare_sequences(m, tokens.data(), nullptr, lengths.data(), B); vlm_lm_forward(m, B, t, false); };
    auto first_token = [&]() {
        for (int b = 0; b < B; b++) {
            backend_copy(on_gpu, row.data(), m->logits + ((size_t)b * To + no - 1) * V, V * sizeof(floatX), false);
            first[b] = argmax(row.data(), V);
        }
    };
    auto whole = [&]() {  // = vlm_forward without targets (its order), then the first token
        int t = vlm_prepare_sequences(m, tokens.data(), nullptr, lengths.data(), B);
        vlm_encode_images(m, images, B);
        vlm_reduce_tokens(m, B, keys);
        vlm_project(m, B);
        vlm_lm_forward(m, B, t, false);
        first_token();
    };
    // the stages need their inputs: one whole run first, then each alone, in pipeline order
    whole();
    bool fastv = m->reduce.method == REDUCE_FASTV && vlm_prunes(m);
    VlmFlops f = vlm_flops(c, m->Pi, len, fastv ? m->Pf : -1, m->reduce.layer, m->tome_sched);
    VlmProfile p;
    p.B = B; p.P = m->P; p.Pi = m->Pf; p.prompt_len = len; p.lm_rows = Tl; p.decode_keys = no + 1;
    p.reduce = REDUCE_NAMES[m->reduce.method]; p.ratio = m->reduce.ratio;
    auto add = [&](const char* name, const std::function<void()>& fn, double flops, bool in_ttft) {
        TimeStats t = time_runs(on_gpu, warmup, iters, fn);
        p.rows.push_back({name, t, flops * B / 1e9, in_ttft});
        return t.median;
    };
    add("vision encoder", [&]() { vlm_encode_images(m, images, B); }, f.vision, true);
    add("token reduction", [&]() { vlm_reduce_tokens(m, B, keys); }, f.reduce, true);
    add("projector", [&]() { vlm_project(m, B); }, f.projector, true);
    add("LM prefill", prefill, f.prefill, true);
    add("first token", first_token, f.first_token, true);
    p.ttft_ms = add("time to first token", whole, f.ttft, false);
    // decode: the cache of the prompt, then the step at position n, again and again (each run
    // overwrites the same cache row: the same work every time)
    whole();
    VlmKVCache kv;
    vlm_kv_from_prefill(m, &kv, B, n);
    auto step = [&]() {
        kv.n = n;
        vlm_decode_step(m, &kv, first.data());
        backend_copy(on_gpu, logits.data(), m->logits, (size_t)B * V * sizeof(floatX), false);
        for (int b = 0; b < B; b++) second[b] = argmax(logits.data() + (size_t)b * V, V);
    };
    p.decode_ms = add("decode step", step, f.decode, false);
    vlm_kv_free(m, &kv);
    p.first_tokens = first; p.second_tokens = second;
    return p;
}

// ---------------------------------------------------------------------------
// output: a table, CSV and JSON

static double row_gflops(const VlmProfileRow& r) { return r.gflop > 0 && r.t.median > 0 ? r.gflop / (r.t.median / 1000.0) : NAN; }

static void vlm_profile_print(const VlmProfile& p) {
    printf("batch %d: %d of %d image tokens (reduce %s, ratio %g), prompt %d tokens, LM prefill %d rows, decode over %d keys; "
           "median of %d runs\n", p.B, p.Pi, p.P, p.reduce.c_str(), p.ratio, p.prompt_len, p.lm_rows, p.decode_keys,
           p.rows.empty() ? 0 : p.rows[0].t.runs);
    printf("  %-21s %10s %10s %10s %8s %11s %11s\n", "component", "ms", "p10", "p90", "% TTFT", "GFLOP", "GFLOP/s");
    double sum = 0;
    for (const VlmProfileRow& r : p.rows) {
        if (r.in_ttft) sum += r.t.median;
        char gf[32] = "-";
        double g = row_gflops(r);
        if (std::isfinite(g)) snprintf(gf, sizeof gf, "%.2f", g);
        printf("  %-21s %10.4f %10.4f %10.4f %7.1f%% %11.6f %11s\n", r.name.c_str(), r.t.median, r.t.p10, r.t.p90,
               100.0 * r.t.median / p.ttft_ms, r.gflop, gf);
    }
    printf("  components sum to %.4f ms (%.1f%% of the TTFT measured end to end); %.1f sequences/s to the first token, "
           "%.1f tokens/s decoding\n", sum, 100.0 * sum / p.ttft_ms, p.B / (p.ttft_ms / 1000.0), p.B / (p.decode_ms / 1000.0));
}

static std::string csv_quote(const std::string& s) {
    if (s.find_first_of(",\"\n") == std::string::npos) return s;
    std::string o = "\"";
    for (char ch : s) { if (ch == '"') o += '"'; o += ch; }
    return o + "\"";
}

// makes the folders above path (mkdir -p of its dirname)
static void make_parent_dirs(const std::string& path) {
    for (size_t i = 1; i < path.size(); i++)
        if (path[i] == '/') mkdir(path.substr(0, i).c_str(), 0755);
}

// one row per (batch, component); the JSON has the same numbers with the model and device
static void vlm_profile_write(const std::vector<VlmProfile>& profiles, const std::string& csv_path, const std::string& json_path,
                              const std::string& device, const VlmConfig& c) {
    std::string csv = "device,batch,reduce,ratio,patches,image_tokens,prompt_tokens,lm_rows,decode_keys,component,in_ttft,"
                      "ms_median,ms_p10,ms_p90,runs,pct_ttft,gflop,gflop_per_s\n";
    char b[512];
    for (const VlmProfile& p : profiles)
        for (const VlmProfileRow& r : p.rows) {
            snprintf(b, sizeof b, "%s,%d,%s,%g,%d,%d,%d,%d,%d,%s,%d,%.6f,%.6f,%.6f,%d,%.3f,%.9g,%.6g\n", csv_quote(device).c_str(), p.B,
                     p.reduce.c_str(), p.ratio, p.P, p.Pi, p.prompt_len, p.lm_rows, p.decode_keys, r.name.c_str(), (int)r.in_ttft,
                     r.t.median, r.t.p10, r.t.p90, r.t.runs, 100.0 * r.t.median / p.ttft_ms, r.gflop,
                     std::isfinite(row_gflops(r)) ? row_gflops(r) : 0.0);
            csv += b;
        }
    JsonLine cfg;
    ConfigKV kv = vlm_config_kv(c);
    for (auto& [k, v] : kv) cfg.integer(k.c_str(), atoll(v.c_str()));
    std::string json = "{\"device\": \"" + json_escape(device) + "\", \"flop_convention\": \"one multiply-add = 2 FLOPs; "
                       "matmuls and attention scores/values only\", \"config\": " + cfg.str() + ", \"profiles\": [";
    for (size_t i = 0; i < profiles.size(); i++) {
        const VlmProfile& p = profiles[i];
        JsonLine h;
        h.integer("batch", p.B).text("reduce", p.reduce).num("ratio", p.ratio).integer("patches", p.P).integer("image_tokens", p.Pi)
            .integer("prompt_tokens", p.prompt_len).integer("lm_rows", p.lm_rows).integer("decode_keys", p.decode_keys)
            .num("ttft_ms", p.ttft_ms).num("decode_ms", p.decode_ms).num("sequences_per_s", p.B / (p.ttft_ms / 1000.0))
            .num("decode_tokens_per_s", p.B / (p.decode_ms / 1000.0));
        std::string comps;
        for (const VlmProfileRow& r : p.rows) {
            JsonLine j;
            j.text("component", r.name).integer("in_ttft", r.in_ttft).num("ms_median", r.t.median).num("ms_p10", r.t.p10)
                .num("ms_p90", r.t.p90).integer("runs", r.t.runs).num("pct_ttft", 100.0 * r.t.median / p.ttft_ms).num("gflop", r.gflop)
                .num("gflop_per_s", row_gflops(r));
            comps += (comps.empty() ? "" : ", ") + j.str();
        }
        std::string hs = h.str();
        hs.pop_back();  // the closing brace: the components go in
        json += (i ? ", " : "") + hs + ", \"components\": [" + comps + "]}";
    }
    json += "]}\n";
    make_parent_dirs(csv_path); make_parent_dirs(json_path);
    write_text_file_atomic(csv_path, csv);
    write_text_file_atomic(json_path, json);
}
