// train_vlm: a tiny vision-language model trained in stages, LLaVA-style: a
// CLIP-like ViT patch encoder, a projector and a GPT language model, on scenes
// built from Fashion-MNIST (or a user's folder of images with a JSONL of
// {image, caption, question, answer}), on the GPU when there is one and on the
// CPU reference otherwise.
//
//   --stage clip      contrastive pretraining of the ViT and a text encoder on (image, caption)
//   --stage lm        the GPT alone on the text (captions, questions and answers)
//   --stage align     LLaVA stage 1: ViT and GPT frozen, the projector learns, on captions
//   --stage instruct  LLaVA stage 2: ViT frozen, projector and GPT learn, on Q/A and captions
//   --stage e2e       everything at once from scratch (ViT through the GPT), on Q/A and captions
//   --stage eval      exact match per question type on the test split
//   --stage infer     an image file and a question -> the answer (--image, --question)
//   --stage profile   where the inference time goes: vision encoder, projector, LM prefill, time to
//                     first token, decode step (median of --profile-iters runs) and the analytic
//                     FLOPs of each, at batch 1 and --batch; a table, a CSV and a JSON
//                     (src/vlm_profile.h; data_scripts/vlm_profile_plot.py draws them)
//   --stage classify  the VLM's vision encoder as an image classifier: [CLS] -> final LN -> a linear
//                     head (src/vlm_model.h: vlm_classify_forward), cross-entropy, on data whose
//                     captions are one word each, the class: the classes are the vocabulary's words
//                     after the special tokens, in order (data_scripts/vit_study.py prepare writes
//                     single Fashion-MNIST items so). --stage eval on its checkpoint: test accuracy,
//                     analytic FLOPs per image and measured images/s (a batch's forward, median of
//                     --profile-iters runs), with --reduce none|pool|random|uniform|tome
//
// Visual-token reduction at inference (stages eval, infer, profile; src/token_reduction.h):
// --reduce pool|random|uniform --reduce-ratio R keeps P' = round(P (1 - R)) of the P patch
// features (pool: 2x2 average pooling, R = 0.75 only) before the projector; --reduce salient (ours:
// pixel saliency with a round robin over the 2x2 cells) too; --reduce tome merges tokens inside the
// vision encoder (ToMe: bipartite soft matching, proportional attention; src/tome.h) until P' leave
// it, each at its representative patch's position; --reduce fastv --fastv-layer L' keeps
// all P to the LM and prunes them inside it, after block L' - 1, by block L''s attention from the
// last prompt token. --dump-answer-logits FILE (stage eval) writes the logits of every answer
// position (int32 V, then float32 rows of V, in question order): data_scripts/vlm_study.py
// compares them across reductions (KL, top-1 agreement).
//
// A stage starts from the previous one's checkpoint with --init (weights only,
// fresh optimizer); --resume continues a stage exactly. The model is
// src/vlm_model.h; the plumbing is shared with train_mamba (src/train_common.h).
#include <string>
#include "src/checkpoint.h"
#include "src/device.h"
#include "src/logger.h"
#include "src/options.h"
#include "src/tokenizer.h"
#include "src/train_common.h"
#include "src/vlm_data.h"
#include "src/vlm_model.h"
#include "src/vlm_profile.h"

typedef struct {
    std::string stage = "e2e";
    std::string data_dir = "data/scenes";  // train.vlm + test.vlm shards, or train.jsonl + test.jsonl
    bool resize = false;
    int patch = 8, v_layers = 4, v_dim = 128, v_heads = 4;
    std::string projector = "mlp";
    int l_layers = 4, l_dim = 128, l_heads = 4;
    int t_layers = 2, t_dim = 128, t_heads = 4, clip_dim = 128;
    int batch = 32;
    std::string init;  // weights from an earlier stage
    TrainOptions train;  // optimisation, stopping, log, checkpoints, device (src/train_common.h)
    int eval_interval = 250, eval_records = 1000;
    std::string image, question;  // infer
    LoraConfig lora;  // adapters on the GPT (src/lora.h), its base frozen
    std::string reduce = "none";  // visual-token reduction at inference (src/token_reduction.h)
    float reduce_ratio = -1;      // -1: not given (0.75 for a reduction)
    int fastv_layer = -1;         // -1: not given (1)
    std::string dump_logits;      // --stage eval: the answer positions' logits
    int profile_iters = 50, profile_warmup = 5;
    std::string profile_out = "out/vlm_profile.csv";
} Options;

static std::vector<OptSpec> option_table(Options* o) {
    o->train.steps = 3000;  // this trainer's defaults for the shared options
    o->lora.targets = "all";
    std::vector<OptSpec> table = {
        {"--stage", OPT_STR, &o->stage, "clip | lm | align | instruct | e2e | eval | infer | profile | classify (see the top of train_vlm.cu)"},
        {"--data-dir", OPT_STR, &o->data_dir, "folder with train.vlm + test.vlm (shards), or train.jsonl + test.jsonl ({image, caption, question, answer} lines)"},
        {"--resize", OPT_FLAG, &o->resize, "resize images of another size (default: a clear error)"},
        {"--init", OPT_STR, &o->init, "start from this checkpoint's weights (an earlier stage), with a fresh optimizer"},
        {"--patch", OPT_INT, &o->patch, "ViT patch size"},
        {"--v-layers", OPT_INT, &o->v_layers, "vision encoder blocks (LLaVA reads the penultimate)"},
        {"--v-dim", OPT_INT, &o->v_dim, "vision width"},
        {"--v-heads", OPT_INT, &o->v_heads, "vision attention heads"},
        {"--projector", OPT_STR, &o->projector, "linear | mlp (Linear-GELU-Linear, LLaVA-1.5)"},
        {"--l-layers", OPT_INT, &o->l_layers, "language model blocks"},
        {"--l-dim", OPT_INT, &o->l_dim, "language model width"},
        {"--l-heads", OPT_INT, &o->l_heads, "language model attention heads"},
        {"--t-layers", OPT_INT, &o->t_layers, "CLIP text encoder blocks"},
        {"--t-dim", OPT_INT, &o->t_dim, "CLIP text encoder width"},
        {"--t-heads", OPT_INT, &o->t_heads, "CLIP text encoder attention heads"},
        {"--clip-dim", OPT_INT, &o->clip_dim, "CLIP joint embedding width"},
        {"--batch", OPT_INT, &o->batch, "sequences (image-text pairs) per step"},
        {"--eval-interval", OPT_INT, &o->eval_interval, "steps between evaluations on the test split (0: only at the end)"},
        {"--eval-records", OPT_INT, &o->eval_records, "test items per evaluation (0: all)"},
        {"--image", OPT_STR, &o->image, "--stage infer: the image file"},
        {"--question", OPT_STR, &o->question, "--stage infer: the question"},
        {"--lora-rank", OPT_INT, &o->lora.rank, "stages lm, instruct, e2e: LoRA adapters of rank r on the GPT, its base frozen (0: off)"},
        {"--lora-alpha", OPT_FLOAT, &o->lora.alpha, "LoRA alpha: the adapter's output is scaled by alpha / r"},
        {"--lora-dropout", OPT_FLOAT, &o->lora.dropout, "dropout on the adapters' inputs while training"},
        {"--lora-targets", OPT_STR, &o->lora.targets, "GPT layers with adapters, comma-separated: qkv, attn_proj, fc, fc_proj, or all"},
        {"--reduce", OPT_STR, &o->reduce, "stages eval, infer, profile: visual-token reduction before the projector: none | pool (2x2 average) | "
                                          "random (seeded by --seed and the image) | uniform (an even spatial grid) | salient (pixel saliency, "
                                          "a round robin over the 2x2 cells) | fastv (inside the LM: see --fastv-layer) | tome (token merging "
                                          "inside the vision encoder). A classifier: none, pool, random, uniform (at the encoder's input) or tome"},
        {"--fastv-layer", OPT_INT, &o->fastv_layer, "--reduce fastv: blocks before this one see every image token; its attention from the "
                                                    "last prompt token ranks them (default 1; 0 for a one-block GPT)"},
        {"--dump-answer-logits", OPT_STR, &o->dump_logits, "--stage eval: write the logits of every answer position to this file"},
        {"--reduce-ratio", OPT_FLOAT, &o->reduce_ratio, "fraction R of the image tokens dropped, in [0, 1): P' = max(1, round(P (1 - R))); "
                                                        "pool takes 0.75 only; not given: 0.75"},
        {"--profile-iters", OPT_INT, &o->profile_iters, "--stage profile: timed runs per component (the median is reported)"},
        {"--profile-warmup", OPT_INT, &o->profile_warmup, "--stage profile: untimed runs before them"},
        {"--profile-out", OPT_STR, &o->profile_out, "--stage profile: the CSV to write (and the same name with .json)"},
    };
    train_options_append(&table, &o->train);
    return table;
}

static const char* STAGES[] = {"clip", "lm", "align", "instruct", "e2e", "eval", "infer", "profile", "classify"};

static void validate(const Options* o) {
    bool known = false;
    for (const char* s : STAGES) known |= o->stage == s;
    if (!known) FATAL("--stage must be clip, lm, align, instruct, e2e, eval, infer, profile or classify, got '%s'", o->stage.c_str());
    if (o->patch < 1 || o->v_layers < 1 || o->v_dim < 1 || o->v_heads < 1 || o->l_layers < 1 || o->l_dim < 1 || o->l_heads < 1 ||
        o->t_layers < 1 || o->t_dim < 1 || o->t_heads < 1 || o->clip_dim < 1)
        FATAL("model sizes (--patch, --v-*, --l-*, --t-*, --clip-dim) must be >= 1");
    if (o->v_dim % o->v_heads || o->l_dim % o->l_heads || o->t_dim % o->t_heads) FATAL("each width must be a multiple of its head count");
    if (o->projector != "linear" && o->projector != "mlp") FATAL("--projector must be linear or mlp, got '%s'", o->projector.c_str());
    if (o->batch < 1) FATAL("--batch must be >= 1");
    if (o->stage == "clip" && o->batch < 2) FATAL("--stage clip needs --batch >= 2 (a contrastive loss over one pair is 0)");
    train_options_validate(&o->train);
    if (o->eval_interval < 0 || o->eval_records < 0) FATAL("--eval-interval and --eval-records must be >= 0");
    if (o->stage == "infer" && (o->image.empty() || o->question.empty())) FATAL("--stage infer needs --image FILE and --question TEXT");
    if (o->stage != "infer" && (!o->image.empty() || !o->question.empty())) FATAL("--image and --question belong to --stage infer");
    if ((o->stage == "infer" || o->stage == "eval" || o->stage == "profile") && o->train.resume.empty() && o->init.empty())
        FATAL("--stage %s needs a model: --init CHECKPOINT", o->stage.c_str());
    if (!o->init.empty() && !o->train.resume.empty()) FATAL("--init and --resume exclude each other (resume continues a stage; init starts one)");
    if (o->lora.rank < 0 || !(o->lora.alpha > 0) || o->lora.dropout < 0 || o->lora.dropout >= 1)
        FATAL("--lora-rank must be >= 0, --lora-alpha > 0, --lora-dropout in [0, 1)");
    if (o->lora.rank > 0 && o->stage != "lm" && o->stage != "instruct" && o->stage != "e2e")
        FATAL("--lora-rank adapts the GPT while it trains: stages lm, instruct and e2e (eval and infer read the adapters from the checkpoint)");
    ReduceMethod method;
    if (!token_reduction_parse(o->reduce, &method))
        FATAL("--reduce must be none, pool, random, uniform, salient, fastv or tome, got '%s'", o->reduce.c_str());
    if (o->fastv_layer != -1 && method != REDUCE_FASTV) FATAL("--fastv-layer needs --reduce fastv");
    if (o->fastv_layer < -1) FATAL("--fastv-layer must be >= 0, got %d", o->fastv_layer);
    if (!o->dump_logits.empty() && o->stage != "eval") FATAL("--dump-answer-logits belongs to --stage eval");
    bool inference = o->stage == "eval" || o->stage == "infer" || o->stage == "profile";
    if (method != REDUCE_NONE && !inference)
        FATAL("--reduce applies at inference: stages eval, infer and profile (training keeps every image token)");
    if (o->reduce_ratio != -1) {
        if (method == REDUCE_NONE) FATAL("--reduce-ratio needs --reduce pool, random, uniform, salient, fastv or tome");
        std::string err = token_reduction_check(method, o->reduce_ratio);
        if (!err.empty()) FATAL("--reduce-ratio: %s", err.c_str());
    }
    if (o->stage == "profile" && (o->profile_iters < 1 || o->profile_warmup < 0)) FATAL("--profile-iters must be >= 1 and --profile-warmup >= 0");
    if (o->stage == "profile" && o->profile_out.empty()) FATAL("--profile-out needs a file name");
}

// the --reduce flags as a TokenReduction (validated above); the random draw's seed is --seed
static TokenReduction reduction_of(const Options& o) {
    TokenReduction r = token_reduction_none();
    token_reduction_parse(o.reduce, &r.method);
    if (r.method != REDUCE_NONE) r.ratio = o.reduce_ratio == -1 ? 0.75f : o.reduce_ratio;
    r.seed = o.train.seed;
    r.layer = o.fastv_layer == -1 ? 1 : o.fastv_layer;
    return r;
}

// what each stage does not train (no gradient, no optimizer state)
static std::vector<std::string> frozen_for(const std::string& stage) {
    if (stage == "clip") return {"proj.", "lm."};
    if (stage == "lm") return {"vision.", "proj.", "text.", "clip."};
    if (stage == "align") return {"vision.", "lm.", "text.", "clip."};
    if (stage == "instruct") return {"vision.", "text.", "clip."};
    if (stage == "classify") return {"proj.", "lm.", "text.", "clip.", "vision.proj"};  // the ViT, its final LN and the head
    return {"text.", "clip.", "vision.ln_f", "vision.proj"};  // e2e: LLaVA's parts, the encoder included
}

// ---------------------------------------------------------------------------
// data

static bool file_exists(const std::string& p) { FILE* f = fopen(p.c_str(), "rb"); if (f) fclose(f); return f != nullptr; }

// train.vlm / test.vlm when they exist (vocabulary inside), else the JSONL files
// (vocabulary built from train.jsonl)
static void load_data(const Options& o, VlmDataset* train, VlmDataset* test) {
    std::string tb = o.data_dir + "/train.vlm", vb = o.data_dir + "/test.vlm";
    if (file_exists(tb)) {
        vlm_shard_read(train, tb.c_str());
        vlm_shard_read(test, vb.c_str());
        if (!vocab_equal(&train->vocab, &test->vocab)) FATAL("%s and %s hold different vocabularies", tb.c_str(), vb.c_str());
        if (train->H != test->H || train->W != test->W) FATAL("%s and %s hold images of different sizes", tb.c_str(), vb.c_str());
    } else {
        std::string tj = o.data_dir + "/train.jsonl", vj = o.data_dir + "/test.jsonl";
        Vocab vocab; vocab_build_from_jsonl(&vocab, tj.c_str());
        vlm_dataset_from_jsonl(train, tj.c_str(), &vocab, 0, 0, o.resize);
        vlm_dataset_from_jsonl(test, vj.c_str(), &vocab, train->H, train->W, o.resize);
    }
    if (train->H != train->W) FATAL("images are %dx%d: this ViT takes square images (resize them)", train->H, train->W);
}

// one image file as (H, W, 3) floats in [0, 1], resized or FATAL when its size differs
static std::vector<float> load_image(const char* path, int H, bool resize) {
    VlmDataset ds; ds.H = H; ds.W = H; ds.n_images = 0;
    vlm_add_image(&ds, path, resize, "--image", 0);
    std::vector<float> img(ds.images.size());
    for (size_t i = 0; i < img.size(); i++) img[i] = ds.images[i] * (1.0f / 255.0f);
    return img;
}

// the checkpoint records the vocabulary, the stage, the GPT's adapters and the classifier's classes
// (absent: a VLM) with the model config
static ConfigKV checkpoint_config(const VlmConfig& c, const Vocab& v, const std::string& stage, const LoraConfig& lora, int n_classes = 0) {
    ConfigKV kv = vlm_config_kv(c);
    std::string words;
    for (const std::string& w : v.words) words += (words.empty() ? "" : " ") + w;
    kv.push_back({"vocab_words", words});
    kv.push_back({"stage", stage});
    if (lora.rank > 0) lora_config_append(&kv, lora, "lm_");  // absent: no adapters (older checkpoints too)
    if (n_classes > 0) kv.push_back({"classes", std::to_string(n_classes)});
    return kv;
}

static Vocab vocab_from_checkpoint(const CheckpointInfo& info, const char* path) {
    const std::string* words = config_get(info.config, "vocab_words");
    if (!words) FATAL("checkpoint %s has no vocabulary", path);
    std::string text = *words + "\n";
    for (char& ch : text) if (ch == ' ') ch = '\n';
    Vocab v; vocab_from_text(&v, text, path);
    return v;
}

// ---------------------------------------------------------------------------
// evaluation

// Exact match on up to n test questions by type, and the mean loss of the answer
// tokens. Greedy decoding gets an answer exactly right iff the argmax at every
// answer position (and at <eos>) is the target given the right prefix, so one
// teacher-forced forward per batch measures greedy exact match.
typedef struct { double loss; int correct[VLM_NUM_QTYPES], total[VLM_NUM_QTYPES]; } EvalResult;
static EvalResult evaluate_qa(VlmModel* m, const VlmDataset* ds, int n, int B, bool text_only, FILE* dump = nullptr) {
    EvalResult r = {0, {0}, {0}};
    std::vector<int> qa = vlm_record_ids(ds, VLM_QA);
    const VlmConfig& c = m->cfg;
    int T = c.max_text, V = c.vocab, H = c.image_size;
    n = n > 0 ? std::min(n, (int)qa.size()) : (int)qa.size();
    std::vector<float> images((size_t)B * H * H * 3), logits((size_t)B * m->Tl * V);
    std::vector<int> tokens((size_t)B * T), targets((size_t)B * T), lengths(B), types(B), ids(B), keys(B);
    double loss_sum = 0; long loss_n = 0;
    for (int start = 0; start < n; start += B) {
        int b = std::min(B, n - start);
        for (int i = 0; i < b; i++) ids[i] = qa[start + i], keys[i] = ds->records[ids[i]].image;  // a random reduction's key: the image
        vlm_get_batch(ds, VLM_QA, ids.data(), b, T, images.data(), tokens.data(), targets.data(), lengths.data(), types.data());
        if (text_only) vlm_forward_text(m, tokens.data(), nullptr, lengths.data(), b);
        else vlm_forward(m, images.data(), tokens.data(), nullptr, lengths.data(), b, keys.data());
        // the targets, for scoring, in the logits' layout (fastv: P' image rows)
        int Tl = vlm_build_sequences(m, tokens.data(), targets.data(), lengths.data(), b, !text_only, text_only ? -1 : vlm_out_image_rows(m));
        backend_copy(m->on_gpu, logits.data(), m->logits, (size_t)b * Tl * V * sizeof(floatX), false);
        for (int i = 0; i < b; i++) {
            bool right = true;
            for (int t = 0; t < Tl; t++) {
                int tgt = m->lm_targets[(size_t)i * Tl + t];
                if (tgt < 0) continue;
                const float* row = &logits[((size_t)i * Tl + t) * V];
                if (dump && fwrite(row, sizeof(float), V, dump) != (size_t)V) FATAL("--dump-answer-logits: write failed");
                int best = (int)(std::max_element(row, row + V) - row);
                double z = 0;
                for (int v = 0; v < V; v++) z += exp((double)row[v] - row[best]);
                loss_sum += row[best] + log(z) - row[tgt]; loss_n++;
                right &= best == tgt;
            }
            int ty = types[i] >= 0 && types[i] < VLM_NUM_QTYPES ? types[i] : VLM_Q_OTHER;
            r.total[ty]++; r.correct[ty] += right;
        }
    }
    r.loss = loss_n ? loss_sum / loss_n : NAN;
    return r;
}

// L2-normalised rows of a (n, E) host matrix
static void normalize_rows(std::vector<float>& x, int n, int E) {
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int e = 0; e < E; e++) s += (double)x[(size_t)i * E + e] * x[(size_t)i * E + e];
        float inv = (float)(1.0 / sqrt(s + 1e-12));
        for (int e = 0; e < E; e++) x[(size_t)i * E + e] *= inv;
    }
}

// CLIP embeddings (normalised, host) of the given caption records' images or texts
static std::vector<float> clip_embed(VlmModel* m, const VlmDataset* ds, const std::vector<int>& ids, int B, bool images_side) {
    const VlmConfig& c = m->cfg;
    int T = c.max_text, H = c.image_size, E = c.clip_dim, n = (int)ids.size();
    std::vector<float> out((size_t)n * E), images((size_t)B * H * H * 3);
    std::vector<int> tokens((size_t)B * T), targets((size_t)B * T), lengths(B);
    for (int start = 0; start < n; start += B) {
        int b = std::min(B, n - start);
        vlm_get_batch(ds, VLM_CAPTION, ids.data() + start, b, T, images.data(), tokens.data(), targets.data(), lengths.data(), nullptr);
        if (images_side) vlm_clip_image_embed(m, images.data(), b);
        else vlm_clip_text_embed(m, tokens.data(), lengths.data(), b);
        backend_copy(m->on_gpu, out.data() + (size_t)start * E, images_side ? m->img_emb : m->txt_emb, (size_t)b * E * sizeof(floatX), false);
    }
    normalize_rows(out, n, E);
    return out;
}

static const char* FMNIST_CLASSES[] = {"t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"};
static const char* SCENE_COLOURS[] = {"red", "green", "blue", "yellow", "magenta", "cyan"};
static const char* SCENE_CELLS[] = {"top left", "top right", "bottom left", "bottom right"};

// CLIP's two scores on the test split: image -> caption recall@1 over up to n
// scenes, and zero-shot classification of the single-item test scenes: each
// class's text embedding is the mean of the prompts "a {colour} {class} {cell}"
// over every colour and cell (a prompt ensemble, as CLIP's), and an image takes
// the class of the nearest. Returns false (scores NaN) on data without those words.
static void evaluate_clip(VlmModel* m, const VlmDataset* ds, int n, int B, double* recall, double* zero_shot) {
    const VlmConfig& c = m->cfg;
    int E = c.clip_dim, T = c.max_text;
    std::vector<int> caps = vlm_record_ids(ds, VLM_CAPTION);
    if (n > 0 && (int)caps.size() > n) caps.resize(n);
    std::vector<float> ie = clip_embed(m, ds, caps, B, true), te = clip_embed(m, ds, caps, B, false);
    int hits = 0, N = (int)caps.size();
    for (int i = 0; i < N; i++) {
        int best = 0; float best_s = -INFINITY;
        for (int j = 0; j < N; j++) {
            float s = 0;
            for (int e = 0; e < E; e++) s += ie[(size_t)i * E + e] * te[(size_t)j * E + e];
            if (s > best_s) { best_s = s; best = j; }
        }
        hits += ds->records[caps[best]].caption == ds->records[caps[i]].caption;  // a twin caption counts
    }
    *recall = N ? (double)hits / N : NAN;
    // zero-shot: prompts of every class, as [<bos> <image> words <eos>] batches
    *zero_shot = NAN;
    const Vocab& v = ds->vocab;
    std::vector<int> single, truth;
    for (int id : vlm_record_ids(ds, VLM_CAPTION)) {
        const VlmRecord& r = ds->records[id];
        int cls = -1, classes = 0;
        for (int w : r.caption)
            for (int k = 0; k < 10; k++)
                if (v.words[w] == FMNIST_CLASSES[k]) { cls = k; classes++; }
        if (classes == 1) { single.push_back(id); truth.push_back(cls); }
    }
    if (single.empty()) return;
    std::vector<float> class_emb(10 * (size_t)E, 0.0f);
    std::vector<int> tokens((size_t)B * T, 0), lengths(B);
    for (int k = 0; k < 10; k++) {
        std::vector<std::vector<int>> prompts;
        for (const char* col : SCENE_COLOURS)
            for (const char* cell : SCENE_CELLS) {
                std::vector<int> ids = vocab_encode(&v, std::string("a ") + col + " " + FMNIST_CLASSES[k] + " " + cell);
                if (std::find(ids.begin(), ids.end(), (int)VOCAB_UNK) != ids.end()) return;  // not the scenes' words
                ids.insert(ids.begin(), {VOCAB_BOS, VOCAB_IMAGE});
                ids.push_back(VOCAB_EOS);
                if ((int)ids.size() > T) return;
                prompts.push_back(ids);
            }
        for (size_t s = 0; s < prompts.size(); s += B) {
            int b = (int)std::min((size_t)B, prompts.size() - s);
            std::fill(tokens.begin(), tokens.end(), 0);
            for (int i = 0; i < b; i++) {
                std::copy(prompts[s + i].begin(), prompts[s + i].end(), tokens.begin() + (size_t)i * T);
                lengths[i] = (int)prompts[s + i].size();
            }
            vlm_clip_text_embed(m, tokens.data(), lengths.data(), b);
            std::vector<float> e((size_t)b * E);
            backend_copy(m->on_gpu, e.data(), m->txt_emb, e.size() * sizeof(floatX), false);
            normalize_rows(e, b, E);
            for (size_t i = 0; i < e.size(); i++) class_emb[(size_t)k * E + i % E] += e[i];
        }
    }
    normalize_rows(class_emb, 10, E);
    std::vector<float> se = clip_embed(m, ds, single, B, true);
    int right = 0;
    for (size_t i = 0; i < single.size(); i++) {
        int best = 0; float best_s = -INFINITY;
        for (int k = 0; k < 10; k++) {
            float s = 0;
            for (int e = 0; e < E; e++) s += se[i * E + e] * class_emb[(size_t)k * E + e];
            if (s > best_s) { best_s = s; best = k; }
        }
        right += best == truth[i];
    }
    *zero_shot = (double)right / single.size();
}

// greedy answer to one question about one image (KV-cache generation)
static std::string answer(VlmModel* m, const Vocab& vocab, const float* image, const std::string& question, int image_key = 0) {
    std::vector<int> prompt = {VOCAB_BOS, VOCAB_IMAGE};
    for (int id : vocab_encode(&vocab, question)) prompt.push_back(id);
    prompt.push_back(VOCAB_SEP);
    int room = m->cfg.max_text - (int)prompt.size();
    if (room < 1) FATAL("the question is %zu tokens: longer than the model's text length %d allows", prompt.size(), m->cfg.max_text);
    std::vector<int> out = vlm_generate(m, image, prompt, room, VOCAB_EOS, nullptr, image_key);
    if (!out.empty() && out.back() == VOCAB_EOS) out.pop_back();
    return vocab_decode(&vocab, out.data(), (int)out.size());
}

// --stage profile: batch 1 (the first test question about its image) and the eval batch (B
// distinct test images, that question about each: one prompt length, so the batched decode
// step is exact); table, CSV and JSON (src/vlm_profile.h)
static void run_profile(VlmModel* m, const Options& o, const VlmDataset& test, int B) {
    std::vector<int> qa = vlm_record_ids(&test, VLM_QA);
    if (qa.empty()) FATAL("--stage profile: the test data has no questions");
    const VlmConfig& c = m->cfg;
    std::vector<int> prompt = {VOCAB_BOS, VOCAB_IMAGE};
    const VlmRecord& first = test.records[qa[0]];
    prompt.insert(prompt.end(), first.question.begin(), first.question.end());
    prompt.push_back(VOCAB_SEP);
    if ((int)prompt.size() >= c.max_text) FATAL("--stage profile: the first test question leaves no room to answer");
    std::vector<int> ids, seen;  // one record per distinct image, wrapping around when there are fewer than B
    for (int id : qa)
        if ((int)ids.size() < B && std::find(seen.begin(), seen.end(), test.records[id].image) == seen.end()) {
            ids.push_back(id); seen.push_back(test.records[id].image);
        }
    for (size_t i = 0; (int)ids.size() < B; i++) ids.push_back(ids[i]);
    int H = c.image_size, T = c.max_text;
    std::vector<float> images((size_t)B * H * H * 3);
    std::vector<int> tokens((size_t)B * T), targets((size_t)B * T), keys(B);
    vlm_get_batch(&test, VLM_QA, ids.data(), B, T, images.data(), tokens.data(), targets.data(), nullptr, nullptr);
    for (int b = 0; b < B; b++) keys[b] = test.records[ids[b]].image;
    std::string device = device_name(m->on_gpu);
    printf("profile on %s: %s; FLOPs: one multiply-add = 2 FLOPs, matmuls and attention only (src/vlm_profile.h)\n", device.c_str(),
           m->on_gpu ? "CUDA events" : "wall time");
    std::vector<VlmProfile> runs;
    std::vector<int> sizes = {1};
    if (B > 1) sizes.push_back(B);
    for (int b : sizes) {
        runs.push_back(vlm_profile(m, images.data(), prompt, keys.data(), b, o.profile_warmup, o.profile_iters));
        vlm_profile_print(runs.back());
    }
    std::string json = o.profile_out;
    if (json.size() > 4 && json.compare(json.size() - 4, 4, ".csv") == 0) json.resize(json.size() - 4);
    json += ".json";
    vlm_profile_write(runs, o.profile_out, json, device, c);
    printf("wrote %s and %s\n", o.profile_out.c_str(), json.c_str());
}

// ---------------------------------------------------------------------------
// the ViT classifier (stage classify; --stage eval of its checkpoint)

// every caption of both splits is one word, the class: returns the classes (the vocabulary's words)
static int classify_check_data(const VlmDataset& train, const VlmDataset& test) {
    int K = vocab_size(&train.vocab) - VOCAB_NUM_SPECIAL;
    for (const VlmDataset* ds : {&train, &test}) {
        if (vlm_record_ids(ds, VLM_CAPTION).empty()) FATAL("--stage classify: %s has no captions (one word each: the class)", ds->source.c_str());
        for (const VlmRecord& r : ds->records)
            if (!r.caption.empty() && (r.caption.size() != 1 || r.caption[0] < VOCAB_NUM_SPECIAL))
                FATAL("--stage classify: %s has a caption of %zu words; a classifier's data has one word per caption, the class "
                      "(data_scripts/vit_study.py prepare writes such a folder)", ds->source.c_str(), r.caption.size());
    }
    if (K < 2) FATAL("--stage classify: the vocabulary holds %d class words, a classifier needs at least 2", K);
    return K;
}

// the labels of a caption batch [<bos> <image> word <eos>]: the word's id after the special tokens
static void classify_labels(const int* tokens, int B, int T, int* labels) {
    for (int b = 0; b < B; b++) labels[b] = tokens[(size_t)b * T + 2] - VOCAB_NUM_SPECIAL;
}

// Test accuracy and loss of the classifier over up to --eval-records test images (all: 0), with the
// model's reduction; with `timing` also the analytic FLOPs per image and the images/s of one batch's
// forward (the images uploaded, the logits back: median of --profile-iters runs after --profile-warmup).
static void run_classify_eval(VlmModel* m, const Options& o, const VlmDataset& test, int B, int step, bool timing, JsonLine* j) {
    const VlmConfig& c = m->cfg;
    bool on_gpu = m->on_gpu;
    int K = m->n_classes, T = c.max_text, H = c.image_size;
    std::vector<int> ids = vlm_record_ids(&test, VLM_CAPTION);
    int n = o.eval_records > 0 ? std::min(o.eval_records, (int)ids.size()) : (int)ids.size();
    std::vector<float> images((size_t)B * H * H * 3), logits((size_t)B * K);
    std::vector<int> tokens((size_t)B * T), targets((size_t)B * T), labels(B), keys(B);
    int right = 0;
    double loss = 0;
    for (int start = 0; start < n; start += B) {
        int b = std::min(B, n - start);
        vlm_get_batch(&test, VLM_CAPTION, ids.data() + start, b, T, images.data(), tokens.data(), targets.data(), nullptr, nullptr);
        classify_labels(tokens.data(), b, T, labels.data());
        for (int i = 0; i < b; i++) keys[i] = test.records[ids[start + i]].image;
        vlm_classify_forward(m, images.data(), nullptr, b, keys.data());
        backend_copy(on_gpu, logits.data(), m->cls_logits, (size_t)b * K * sizeof(floatX), false);
        for (int i = 0; i < b; i++) {
            const float* row = &logits[(size_t)i * K];
            int best = (int)(std::max_element(row, row + K) - row);
            double z = 0;
            for (int k = 0; k < K; k++) z += exp((double)row[k] - row[best]);
            loss += row[best] + log(z) - row[labels[i]];
            right += best == labels[i];
        }
    }
    double acc = n ? (double)right / n : NAN;
    printf("step %5d | test loss %.4f | accuracy %.2f%% (%d test images)\n", step, n ? loss / n : NAN, 100 * acc, n);
    j->num("val_loss", n ? loss / n : NAN).num("accuracy", acc).integer("test_images", n);
    if (!timing) return;
    std::vector<int> batch(B);
    for (int i = 0; i < B; i++) batch[i] = ids[i % ids.size()];
    vlm_get_batch(&test, VLM_CAPTION, batch.data(), B, T, images.data(), tokens.data(), targets.data(), nullptr, nullptr);
    for (int i = 0; i < B; i++) keys[i] = test.records[batch[i]].image;
    bool at_input = m->Pi < m->P && m->reduce.method != REDUCE_TOME;
    double gflop = vit_classifier_flops(c, K, at_input ? m->Pi + 1 : m->P + 1, m->tome_sched) / 1e9;
    TimeStats ts = time_runs(on_gpu, o.profile_warmup, o.profile_iters, [&]() {
        vlm_classify_forward(m, images.data(), nullptr, B, keys.data());
        backend_copy(on_gpu, logits.data(), m->cls_logits, (size_t)B * K * sizeof(floatX), false);
    });
    std::string sched;
    for (int r : m->tome_sched) sched += (sched.empty() ? "" : " ") + std::to_string(r);
    std::string device = device_name(on_gpu);
    printf("classifier: %d of %d patch tokens, %.6f GFLOP per image; batch %d: %.4f ms (p10 %.4f, p90 %.4f, %d runs), %.0f images/s on %s\n",
           m->Pi, m->P, gflop, B, ts.median, ts.p10, ts.p90, ts.runs, B / (ts.median / 1000.0), device.c_str());
    j->integer("patch_tokens", m->Pi).integer("patches", m->P).num("gflop_per_image", gflop).integer("batch", B).num("ms_per_batch", ts.median)
        .num("ms_p10", ts.p10).num("ms_p90", ts.p90).num("images_per_s", B / (ts.median / 1000.0)).text("tome_schedule", sched).text("device", device);
}

// ---------------------------------------------------------------------------

int main(int argc, char** argv) {
    Options o;
    options_parse(argc, argv, option_table(&o),
                  "usage: train_vlm --stage clip|lm|align|instruct|e2e|eval|infer|profile [options]\n\n"
                  "Trains a tiny LLaVA (ViT + projector + GPT) in stages (GPU if present, else the CPU reference).\n");
    validate(&o);
    const TrainOptions& t = o.train;
    bool on_gpu = device_pick(t.device);
    train_set_math_mode(on_gpu, t);
    bool training = o.stage != "eval" && o.stage != "infer" && o.stage != "profile";
    TokenReduction reduction = reduction_of(o);
    std::string from = !t.resume.empty() ? t.resume : o.init;

    // infer: everything from the checkpoint
    if (o.stage == "infer") {
        CheckpointInfo info = checkpoint_read_info(from.c_str());
        if (config_get(info.config, "classes"))
            FATAL("%s is an image classifier (stage classify): --stage eval measures it; infer answers questions with a VLM", from.c_str());
        VlmConfig cfg = vlm_config_from_kv(info.config, from.c_str());
        Vocab vocab = vocab_from_checkpoint(info, from.c_str());
        LoraConfig lora = lora_config_read(info.config, "lm_");
        VlmModel m; vlm_build(&m, cfg, 1, on_gpu, false, {}, lora);
        checkpoint_load(from.c_str(), "vlm", checkpoint_config(cfg, vocab, *config_get(info.config, "stage"), lora), &m.params, false);
        transformer_lora_merge(&m.lm, &m.params, true);  // generation reads the merged weights
        if (reduction.method == REDUCE_FASTV && o.fastv_layer == -1) reduction.layer = std::min(1, cfg.l_layers - 1);
        vlm_set_reduction(&m, reduction);
        std::vector<float> img = load_image(o.image.c_str(), cfg.image_size, o.resize);
        printf("%s\n", answer(&m, vocab, img.data(), o.question).c_str());
        vlm_free(&m);
        return 0;
    }

    VlmDataset train, test;
    load_data(o, &train, &test);
    const Vocab& vocab = train.vocab;
    int H = train.H;
    int max_text = std::max(std::max(vlm_max_text_len(&train, VLM_CAPTION), vlm_max_text_len(&train, VLM_QA)),
                            std::max(vlm_max_text_len(&test, VLM_CAPTION), vlm_max_text_len(&test, VLM_QA)));
    VlmConfig cfg = {H, o.patch, o.v_layers, o.v_dim, o.v_heads, o.projector == "mlp", vocab_size(&vocab),
                     o.l_layers, o.l_dim, o.l_heads, max_text, o.t_layers, o.t_dim, o.t_heads, o.clip_dim};
    LoraConfig lora = o.lora, init_lora;
    // a classifier: one class per vocabulary word (one-word captions); eval and profile take the checkpoint's
    int n_classes = o.stage == "classify" ? classify_check_data(train, test) : 0, init_classes = 0;
    if (!o.init.empty()) {  // a new stage takes the model's shape from the checkpoint (--resume checks the flags instead)
        CheckpointInfo info = checkpoint_read_info(from.c_str());
        init_lora = lora_config_read(info.config, "lm_");
        const std::string* cls = config_get(info.config, "classes");
        init_classes = cls ? atoi(cls->c_str()) : 0;
        if (!training) n_classes = init_classes;
        else if (init_classes > 0 && o.stage != "classify")
            FATAL("%s is an image classifier (stage classify): a VLM stage starts from a VLM checkpoint", from.c_str());
        if (n_classes > 0 && o.stage == "eval") classify_check_data(train, test);
        if (!training) lora = init_lora;  // eval: the checkpoint's adapters
        else if (init_lora.rank > 0)
            FATAL("%s has LoRA adapters on its GPT: evaluate it with --stage eval; a new stage starts from a model without them",
                  from.c_str());
        cfg = vlm_config_from_kv(info.config, from.c_str());
        Vocab theirs = vocab_from_checkpoint(info, from.c_str());
        if (!vocab_equal(&theirs, &vocab)) FATAL("%s was trained with another vocabulary than %s's", from.c_str(), o.data_dir.c_str());
        if (cfg.image_size != H) FATAL("%s takes %dx%d images, %s holds %dx%d", from.c_str(), cfg.image_size, cfg.image_size, o.data_dir.c_str(), H, H);
        if (cfg.max_text < max_text) FATAL("%s takes texts of %d tokens, %s needs %d", from.c_str(), cfg.max_text, o.data_dir.c_str(), max_text);
    }
    if (H % cfg.patch) FATAL("image size %d is not a multiple of --patch %d", H, cfg.patch);
    int B = o.batch;
    VlmModel m;
    if (n_classes > 0 && o.stage == "profile") FATAL("%s is an image classifier: --stage eval measures its accuracy, FLOPs and images/s", from.c_str());
    vlm_build(&m, cfg, B, on_gpu, training, training ? frozen_for(o.stage) : std::vector<std::string>{}, lora, n_classes);
    vlm_init_params(&m, t.seed);
    ConfigKV ckpt_cfg = checkpoint_config(cfg, vocab, o.stage, lora, n_classes);
    TrainState st = {0, 0, 0};
    Rng rng; rng_seed(&rng, t.seed + 1);
    if (!t.resume.empty()) {
        st = checkpoint_load(t.resume.c_str(), "vlm", ckpt_cfg, &m.params);
        rng.state = st.rng;
        printf("resumed %s from %s at step %d\n", o.stage.c_str(), t.resume.c_str(), st.step);
    } else if (!o.init.empty()) {
        CheckpointInfo info = checkpoint_read_info(o.init.c_str());
        // a base without adapters under a LoRA run: the adapters keep their init (B = 0)
        // a VLM's weights under a new classifier: its head keeps its init
        checkpoint_load(o.init.c_str(), "vlm", checkpoint_config(cfg, vocab, *config_get(info.config, "stage"), init_lora, init_classes), &m.params,
                        false, [&](const ParamTensor& t) { return !lora_is_adapter(t.name) && (init_classes > 0 || t.name.rfind("vision.head.", 0) != 0); });
        printf("%s starts from the weights of %s (stage %s)\n", o.stage.c_str(), o.init.c_str(), config_get(info.config, "stage")->c_str());
    }
    std::vector<int> train_ids[2] = {vlm_record_ids(&train, VLM_CAPTION), vlm_record_ids(&train, VLM_QA)};
    bool uses_captions = o.stage != "eval" && o.stage != "profile",
         uses_qa = o.stage == "lm" || o.stage == "instruct" || o.stage == "e2e" || (o.stage == "eval" && n_classes == 0);
    if (uses_captions && train_ids[VLM_CAPTION].empty()) FATAL("--stage %s: the training data has no captions", o.stage.c_str());
    if (uses_qa && train_ids[VLM_QA].empty()) FATAL("--stage %s: the data has no questions", o.stage.c_str());
    printf("data: %s: %zu train captions, %zu train and %zu test questions, images %dx%d, vocabulary %d words, text up to %d tokens\n",
           o.data_dir.c_str(), train_ids[0].size(), train_ids[1].size(), vlm_record_ids(&test, VLM_QA).size(), H, H, vocab_size(&vocab), max_text);
    printf("model: ViT %d x %d (%d heads, patch %d: %d patches), %s projector, GPT %d x %d (%d heads), LM sequence %d; "
           "CLIP text encoder %d x %d, embedding %d: %.2fM parameters, %.2fM trained in stage %s\n",
           cfg.v_layers, cfg.v_dim, cfg.v_heads, cfg.patch, m.P, cfg.proj_mlp ? "mlp" : "linear", cfg.l_layers, cfg.l_dim, cfg.l_heads, m.Tl,
           cfg.t_layers, cfg.t_dim, cfg.clip_dim, m.params.num_params / 1e6, m.params.num_trainable / 1e6, o.stage.c_str());
    if (n_classes > 0) printf("classifier: [CLS] -> LN -> linear head over %d classes (the GPT and the CLIP heads are not used)\n", n_classes);
    printf("device: %s; activations %.1f MiB, scratch %.1f MiB, parameters %.1f MiB, grads+AdamW %.1f MiB\n", device_name(on_gpu).c_str(),
           m.acts_bytes / 1048576.0, m.scratch_bytes / 1048576.0, params_bytes(&m.params) / 1048576.0,
           params_grad_and_moment_bytes(&m.params) / 1048576.0);
    if (reduction.method == REDUCE_FASTV && o.fastv_layer == -1) reduction.layer = std::min(1, cfg.l_layers - 1);  // a one-block GPT: 0
    vlm_set_reduction(&m, reduction);  // none while training (validate)
    if (reduction.method == REDUCE_FASTV)
        printf("token reduction: fastv, ratio %g: the LM keeps %d of %d image tokens from block %d on (LM sequence %d, then %d)\n",
               reduction.ratio, m.Pf, m.P, reduction.layer, m.Tl, vlm_lm_len(cfg, m.Pf));
    else if (reduction.method != REDUCE_NONE && n_classes > 0)
        printf("token reduction: %s, ratio %g: %d of %d patch tokens %s\n", REDUCE_NAMES[reduction.method], reduction.ratio, m.Pi, m.P,
               reduction.method == REDUCE_TOME ? "leave the last block" : "from the encoder's input on");
    else if (reduction.method != REDUCE_NONE)
        printf("token reduction: %s, ratio %g: the LM sees %d of %d image tokens (LM sequence %d)\n", REDUCE_NAMES[reduction.method],
               reduction.ratio, m.Pi, m.P, vlm_lm_len(cfg, m.Pi));
    if (!m.tome_sched.empty()) {
        printf("tome: merges per ViT block:");
        for (int r : m.tome_sched) printf(" %d", r);
        printf("\n");
    }
    if (o.stage == "profile") {
        transformer_lora_merge(&m.lm, &m.params, true);  // as generation runs
        run_profile(&m, o, test, B);
        vlm_free(&m);
        vlm_dataset_free(&train); vlm_dataset_free(&test);
        return 0;
    }

    Logger log; logger_open(&log, t.log_path, t.resume.empty() ? -1 : st.step);
    auto run_eval = [&](int step) {
        transformer_set_training(&m.lm, false, 0);
        JsonLine j; j.integer("step", step);
        if (reduction.method != REDUCE_NONE) j.text("reduce", REDUCE_NAMES[reduction.method]).num("reduce_ratio", reduction.ratio).integer("image_tokens", m.Pf);
        if (n_classes > 0) {
            run_classify_eval(&m, o, test, B, step, o.stage == "eval", &j);
            logger_write(&log, j);
            return;
        }
        if (o.stage == "clip") {
            double recall, zs;
            evaluate_clip(&m, &test, o.eval_records, B, &recall, &zs);
            printf("step %5d | CLIP image->caption recall@1 %.1f%% | zero-shot Fashion-MNIST %.1f%%\n", step, 100 * recall, 100 * zs);
            logger_write(&log, j.num("recall_at_1", recall).num("zero_shot", zs));
            return;
        }
        FILE* dump = nullptr;
        if (!o.dump_logits.empty()) {
            dump = fopen(o.dump_logits.c_str(), "wb");
            if (!dump) FATAL("cannot open %s for writing", o.dump_logits.c_str());
            int32_t V = cfg.vocab;
            fwrite(&V, sizeof V, 1, dump);
        }
        EvalResult r = evaluate_qa(&m, &test, o.eval_records, B, o.stage == "lm", dump);
        if (dump && fclose(dump) != 0) FATAL("--dump-answer-logits: cannot write %s", o.dump_logits.c_str());
        int c = 0, n = 0;
        for (int i = 0; i < VLM_NUM_QTYPES; i++) { c += r.correct[i]; n += r.total[i]; }
        printf("step %5d | test answer loss %.4f | exact match %.1f%% (", step, r.loss, 100.0 * c / std::max(1, n));
        j.num("val_loss", r.loss).num("accuracy", (double)c / std::max(1, n));
        for (int i = 0, first = 1; i < VLM_NUM_QTYPES; i++) {
            if (!r.total[i]) continue;
            double acc = (double)r.correct[i] / r.total[i];
            printf("%s%s %.1f%%", first ? "" : ", ", VLM_QTYPE_NAMES[i], 100 * acc);
            j.num((std::string("acc_") + VLM_QTYPE_NAMES[i]).c_str(), acc);
            first = 0;
        }
        printf(")\n");
        logger_write(&log, j);
    };
    auto save = [&](int step) {
        if (t.checkpoint.empty()) return;
        checkpoint_save(t.checkpoint.c_str(), "vlm", ckpt_cfg, &m.params, {step, 0, rng.state});
        printf("saved checkpoint %s (step %d)\n", t.checkpoint.c_str(), step);
    };

    int step = st.step, T = max_text;
    if (training) {
        std::vector<float> images((size_t)B * H * H * 3);
        std::vector<int> tokens((size_t)B * cfg.max_text), targets((size_t)B * cfg.max_text), lengths(B), ids(B), labels(B);
        double t_start = wall_ms(), step_ms_sum = 0;
        int timed = 0;
        T = cfg.max_text;
        for (; step < t.steps; step++) {
            if (train_should_stop(t, step, wall_ms() - t_start)) break;
            if (o.eval_interval > 0 && step % o.eval_interval == 0) run_eval(step);
            g_prof.on = t.profile > 0 && step >= st.step + 1 && step < st.step + 1 + t.profile;
            double t0 = wall_ms();
            // clip and align read captions; lm, instruct and e2e alternate captions and questions
            VlmKind kind = (o.stage == "clip" || o.stage == "align" || o.stage == "classify") ? VLM_CAPTION : (step % 2 ? VLM_QA : VLM_CAPTION);
            const std::vector<int>& pool = train_ids[kind];
            transformer_set_training(&m.lm, true, t.seed * 1000003ull + step);  // adapter dropout: a new mask per step
            for (int i = 0; i < B; i++) ids[i] = pool[rng_u32(&rng) % pool.size()];
            vlm_get_batch(&train, kind, ids.data(), B, T, images.data(), tokens.data(), targets.data(), lengths.data(), nullptr);
            if (o.stage == "classify") classify_labels(tokens.data(), B, T, labels.data());
            float loss = o.stage == "classify" ? vlm_classify_forward(&m, images.data(), labels.data(), B)
                       : o.stage == "clip" ? vlm_clip_forward(&m, images.data(), tokens.data(), lengths.data(), B)
                       : o.stage == "lm"   ? vlm_forward_text(&m, tokens.data(), targets.data(), lengths.data(), B)
                                           : vlm_forward(&m, images.data(), tokens.data(), targets.data(), lengths.data(), B);
            vlm_zero_grad(&m);
            if (std::isfinite(loss)) vlm_backward(&m);
            StepStats ss = optimizer_step(&m.params, t, step, loss, &log);
            double ms = wall_ms() - t0, mib = device_memory_mib(on_gpu);
            if (step > st.step) { step_ms_sum += ms; timed++; }
            double avg = timed ? step_ms_sum / timed : ms;
            const char* what = o.stage == "clip" ? "clip" : o.stage == "classify" ? "classify" : kind == VLM_QA ? "qa" : "caption";
            if (step % t.log_every == 0 || step == t.steps - 1) {
                printf("step %5d/%d | %-7s loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f seq/s | %s | mem %.0f MiB\n", step + 1,
                       t.steps, what, loss, ss.lr, ss.grad_norm, ms, B / (avg / 1000.0), eta_string(t.steps - step - 1, avg).c_str(), mib);
                fflush(stdout);
            }
            JsonLine j; j.integer("step", step + 1).num("loss", loss).text("task", what).num("lr", ss.lr).num("grad_norm", ss.grad_norm)
                          .num("step_ms", ms).num("seq_per_s", B / (ms / 1000.0)).num("mem_mib", mib);
            if (o.stage == "clip") j.num("logit_scale", clip_scale_of(&m));
            logger_write(&log, j);
            if (t.checkpoint_interval > 0 && (step + 1) % t.checkpoint_interval == 0) save(step + 1);
        }
        if (timed) printf("summary: %.1f ms/step, %.0f sequences/s\n", step_ms_sum / timed, B / (step_ms_sum / timed / 1000.0));
        if (t.profile > 0) prof_print(std::min(t.profile, std::max(0, step - st.step - 1)));
    }
    run_eval(step);
    if (training) save(step);
    transformer_lora_merge(&m.lm, &m.params, true);  // the samples below generate from the merged weights
    if (o.stage != "clip" && o.stage != "lm" && n_classes == 0) {  // a few answers to read
        std::vector<int> test_qa = vlm_record_ids(&test, VLM_QA);
        std::vector<float> image((size_t)H * H * 3);
        std::vector<int> tok(T), tgt(T), len(1);
        for (int i = 0; i < 5 && i < (int)test_qa.size(); i++) {
            int id = test_qa[i * 37 % test_qa.size()];
            vlm_get_batch(&test, VLM_QA, &id, 1, T, image.data(), tok.data(), tgt.data(), len.data(), nullptr);
            const VlmRecord& rec = test.records[id];
            std::string q = vocab_decode(&vocab, rec.question.data(), (int)rec.question.size());
            std::string a = vocab_decode(&vocab, rec.answer.data(), (int)rec.answer.size());
            printf("Q: %s | model: %s | truth: %s\n", q.c_str(), answer(&m, vocab, image.data(), q, rec.image).c_str(), a.c_str());
        }
    }
    logger_close(&log);
    vlm_free(&m);
    vlm_dataset_free(&train); vlm_dataset_free(&test);
    return 0;
}
