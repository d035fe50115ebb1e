// train_vlm: trains a tiny LLaVA (ViT patch encoder + projector + GPT language
// model, end to end from scratch) on scenes built from Fashion-MNIST, or on a
// user's folder of images with a JSONL of {image, caption, question, answer},
// on the GPU when there is one and on the CPU reference otherwise.
//
//   make scenes train_vlm && ./train_vlm --help
//   ./train_vlm --resume out/vlm.ckpt --image x.png --question "what is at the top left?"
//
// The model is src/vlm_model.h; the plumbing (parameter store, checkpoints,
// options, log, schedule, profiler) is shared with train_mamba. This file keeps
// its options, their validation, the loop and the evaluation.
#include <string>
#include "src/checkpoint.h"
#include "src/device.h"
#include "src/logger.h"
#include "src/options.h"
#include "src/train_common.h"
#include "src/tokenizer.h"
#include "src/vlm_data.h"
#include "src/vlm_model.h"

typedef struct {
    std::string data_dir = "data/scenes";  // train.vlm + test.vlm shards, or train.jsonl + test.jsonl
    bool resize = false;
    // model
    int patch = 8, v_layers = 4, v_dim = 128, v_heads = 4;
    std::string projector = "mlp";
    int l_layers = 4, l_dim = 128, l_heads = 4;
    std::string task = "mix";  // caption | qa | mix
    int batch = 32;
    TrainOptions train;  // optimisation, stopping, log, checkpoints, device (src/train_common.h)
    int eval_interval = 250, eval_records = 1000;
    std::string image, question;  // inference
} Options;

static std::vector<OptSpec> option_table(Options* o) {
    o->train.steps = 3000;  // this trainer's defaults for the shared options
    std::vector<OptSpec> table = {
        {"--data-dir", OPT_STR, &o->data_dir, "folder with train.vlm + test.vlm (shards), or train.jsonl + test.jsonl ({image, caption, question, answer} lines)"},
        {"--resize", OPT_FLAG, &o->resize, "resize images of another size (default: a clear error)"},
        {"--patch", OPT_INT, &o->patch, "ViT patch size"},
        {"--v-layers", OPT_INT, &o->v_layers, "vision encoder blocks (LLaVA reads the penultimate)"},
        {"--v-dim", OPT_INT, &o->v_dim, "vision width"},
        {"--v-heads", OPT_INT, &o->v_heads, "vision attention heads"},
        {"--projector", OPT_STR, &o->projector, "linear | mlp (Linear-GELU-Linear, LLaVA-1.5)"},
        {"--l-layers", OPT_INT, &o->l_layers, "language model blocks"},
        {"--l-dim", OPT_INT, &o->l_dim, "language model width"},
        {"--l-heads", OPT_INT, &o->l_heads, "language model attention heads"},
        {"--task", OPT_STR, &o->task, "caption | qa | mix (alternate caption and question batches)"},
        {"--batch", OPT_INT, &o->batch, "sequences per step"},
        {"--eval-interval", OPT_INT, &o->eval_interval, "steps between evaluations on the test split (0: only at the end)"},
        {"--eval-records", OPT_INT, &o->eval_records, "test questions per evaluation (0: all)"},
        {"--image", OPT_STR, &o->image, "with --resume and --question: answer a question about this image, exit"},
        {"--question", OPT_STR, &o->question, "the question for --image"},
    };
    train_options_append(&table, &o->train);
    return table;
}

static void validate(const Options* o) {
    if (o->patch < 1 || o->v_layers < 1 || o->v_dim < 1 || o->v_heads < 1 || o->l_layers < 1 || o->l_dim < 1 || o->l_heads < 1)
        FATAL("--patch, --v-layers, --v-dim, --v-heads, --l-layers, --l-dim and --l-heads must be >= 1");
    if (o->v_dim % o->v_heads || o->l_dim % o->l_heads) FATAL("--v-dim must be a multiple of --v-heads and --l-dim of --l-heads");
    if (o->projector != "linear" && o->projector != "mlp") FATAL("--projector must be linear or mlp, got '%s'", o->projector.c_str());
    if (o->task != "caption" && o->task != "qa" && o->task != "mix") FATAL("--task must be caption, qa or mix, got '%s'", o->task.c_str());
    if (o->batch < 1) FATAL("--batch must be >= 1");
    train_options_validate(&o->train);
    if (o->eval_interval < 0 || o->eval_records < 0) FATAL("--eval-interval and --eval-records must be >= 0");
    if (!o->image.empty() != !o->question.empty()) FATAL("--image and --question go together");
    if (!o->image.empty() && o->train.resume.empty()) FATAL("--image/--question need --resume CHECKPOINT");
}

// one image file as (H, W, 3) floats in [0, 1], resized or FATAL when its size differs
static std::vector<float> load_image(const char* path, int H, bool resize) {
    VlmDataset ds; ds.H = H; ds.W = H; ds.n_images = 0;
    vlm_add_image(&ds, path, resize, "--image", 0);
    std::vector<float> img(ds.images.size());
    for (size_t i = 0; i < img.size(); i++) img[i] = ds.images[i] * (1.0f / 255.0f);
    return img;
}

// train.vlm / test.vlm when they exist (vocabulary inside), else the JSONL files
// (vocabulary built from train.jsonl)
static bool file_exists(const std::string& p) { FILE* f = fopen(p.c_str(), "rb"); if (f) fclose(f); return f != nullptr; }
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

// the checkpoint records the vocabulary with the model config: one line, words separated by spaces
static ConfigKV checkpoint_config(const VlmConfig& c, const Vocab& v) {
    ConfigKV kv = vlm_config_kv(c);
    std::string words;
    for (const std::string& w : v.words) words += (words.empty() ? "" : " ") + w;
    kv.push_back({"vocab_words", words});
    return kv;
}

// Exact-match accuracy on up to n test questions, by question type, and the
// mean loss. Greedy decoding gets an answer exactly right iff the argmax at
// every answer position (and at <eos>) is the target given the right prefix,
// so one teacher-forced forward per batch measures greedy exact match.
typedef struct { double loss; int correct[VLM_NUM_QTYPES], total[VLM_NUM_QTYPES]; } EvalResult;
static EvalResult evaluate(VlmModel* m, const VlmDataset* ds, int n, int B) {
    EvalResult r = {0, {0}, {0}};
    std::vector<int> qa = vlm_record_ids(ds, VLM_QA);
    const VlmConfig& c = m->cfg;
    int T = c.max_text, V = c.vocab, Tl = m->Tl, H = c.image_size;
    int total = (int)qa.size();
    n = n > 0 ? std::min(n, total) : total;
    std::vector<float> images((size_t)B * H * H * 3), logits((size_t)B * Tl * V);
    std::vector<int> tokens((size_t)B * T), targets((size_t)B * T), lengths(B), types(B), ids(B);
    double loss_sum = 0; long loss_n = 0;
    for (int start = 0; start < n; start += B) {
        int b = std::min(B, n - start);
        for (int i = 0; i < b; i++) ids[i] = qa[start + i];
        vlm_get_batch(ds, VLM_QA, ids.data(), b, T, images.data(), tokens.data(), targets.data(), lengths.data(), types.data());
        vlm_forward(m, images.data(), tokens.data(), nullptr, lengths.data(), b);
        vlm_build_sequences(m, tokens.data(), targets.data(), lengths.data(), b);  // the LM targets, for scoring
        backend_copy(m->on_gpu, logits.data(), m->logits, (size_t)b * Tl * V * sizeof(floatX), false);
        for (int i = 0; i < b; i++) {
            bool right = true;
            for (int t = 0; t < Tl; t++) {
                int tgt = m->lm_targets[(size_t)i * Tl + t];
                if (tgt < 0) continue;
                const float* row = &logits[((size_t)i * Tl + t) * V];
                int best = 0; float mx = row[0];
                for (int v = 1; v < V; v++) if (row[v] > mx) { mx = row[v]; best = v; }
                double z = 0;
                for (int v = 0; v < V; v++) z += exp((double)row[v] - mx);
                loss_sum += mx + log(z) - row[tgt]; loss_n++;
                right &= best == tgt;
            }
            int ty = types[i] >= 0 && types[i] < VLM_NUM_QTYPES ? types[i] : VLM_Q_OTHER;
            r.total[ty]++; r.correct[ty] += right;
        }
    }
    r.loss = loss_n ? loss_sum / loss_n : NAN;
    return r;
}

// greedy answer to one question about one image
static std::string answer(VlmModel* m, const Vocab& vocab, const float* image, const std::string& question) {
    const VlmConfig& c = m->cfg;
    int T = c.max_text, V = c.vocab;
    std::vector<int> tok = {VOCAB_BOS, VOCAB_IMAGE};
    for (int id : vocab_encode(&vocab, question)) tok.push_back(id);
    tok.push_back(VOCAB_SEP);
    std::vector<int> out;
    std::vector<float> logits(V);
    while ((int)tok.size() < T) {
        std::vector<int> padded(tok); padded.resize(T, VOCAB_PAD);
        int len = (int)tok.size();
        vlm_forward(m, image, padded.data(), nullptr, &len, 1);
        size_t last = (size_t)(len + m->P - 2);  // the LM position of the last text token
        backend_copy(m->on_gpu, logits.data(), m->logits + last * V, V * sizeof(floatX), false);
        int best = (int)(std::max_element(logits.begin(), logits.end()) - logits.begin());
        if (best == VOCAB_EOS) break;
        out.push_back(best); tok.push_back(best);
    }
    return vocab_decode(&vocab, out.data(), (int)out.size());
}

int main(int argc, char** argv) {
    Options o;
    options_parse(argc, argv, option_table(&o), "usage: train_vlm [options]\n\nTrains a tiny LLaVA (ViT + projector + GPT) end to end (GPU if present, else the CPU reference).\n");
    validate(&o);
    const TrainOptions& t = o.train;
    bool on_gpu = device_pick(t.device);
    train_set_math_mode(on_gpu, t);

    // --image/--question: config and vocabulary from the checkpoint
    if (!o.image.empty()) {
        CheckpointInfo info = checkpoint_read_info(t.resume.c_str());
        VlmConfig cfg = vlm_config_from_kv(info.config, t.resume.c_str());
        const std::string* words = config_get(info.config, "vocab_words");
        if (!words) FATAL("checkpoint %s has no vocabulary", t.resume.c_str());
        Vocab vocab; std::string text = *words + "\n";
        for (char& ch : text) if (ch == ' ') ch = '\n';
        vocab_from_text(&vocab, text, t.resume.c_str());
        VlmModel m; vlm_build(&m, cfg, 1, on_gpu, false);
        checkpoint_load(t.resume.c_str(), "vlm", checkpoint_config(cfg, vocab), &m.params, false);
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
    if (H % o.patch) FATAL("image size %d is not a multiple of --patch %d", H, o.patch);

    VlmConfig cfg = {H, o.patch, o.v_layers, o.v_dim, o.v_heads, o.projector == "mlp", vocab_size(&vocab),
                     o.l_layers, o.l_dim, o.l_heads, max_text};
    int B = o.batch;
    VlmModel m;
    vlm_build(&m, cfg, B, on_gpu);
    vlm_init_params(&m, t.seed);
    ConfigKV ckpt_cfg = checkpoint_config(cfg, vocab);
    TrainState st = {0, 0, 0};
    Rng rng; rng_seed(&rng, t.seed + 1);
    if (!t.resume.empty()) {
        st = checkpoint_load(t.resume.c_str(), "vlm", ckpt_cfg, &m.params);
        rng.state = st.rng;
        printf("resumed from %s at step %d\n", t.resume.c_str(), st.step);
    }
    std::vector<int> train_ids[2] = {vlm_record_ids(&train, VLM_CAPTION), vlm_record_ids(&train, VLM_QA)};
    if (o.task != "qa" && train_ids[VLM_CAPTION].empty()) FATAL("--task %s: the training data has no captions", o.task.c_str());
    if (o.task != "caption" && train_ids[VLM_QA].empty()) FATAL("--task %s: the training data has no questions", o.task.c_str());
    printf("data: %s: %zu train captions, %zu train and %zu test questions, images %dx%d, vocabulary %d words, text up to %d tokens\n",
           o.data_dir.c_str(), train_ids[0].size(), train_ids[1].size(), vlm_record_ids(&test, VLM_QA).size(), H, H, vocab_size(&vocab), max_text);
    printf("model: ViT %d x %d (%d heads, patch %d: %d patches), %s projector, GPT %d x %d (%d heads), LM sequence %d: %.2fM parameters\n",
           cfg.v_layers, cfg.v_dim, cfg.v_heads, cfg.patch, m.P, o.projector.c_str(), cfg.l_layers, cfg.l_dim, cfg.l_heads, m.Tl,
           m.params.num_params / 1e6);
    printf("device: %s; activations %.1f MiB, scratch %.1f MiB, parameters+grads+AdamW %.1f MiB\n", device_name(on_gpu).c_str(),
           m.acts_bytes / 1048576.0, m.scratch_bytes / 1048576.0, (params_bytes(&m.params) + params_grad_and_moment_bytes(&m.params)) / 1048576.0);

    Logger log; logger_open(&log, t.log_path, t.resume.empty() ? -1 : st.step);
    std::vector<float> images((size_t)B * H * H * 3);
    std::vector<int> tokens((size_t)B * max_text), targets((size_t)B * max_text), lengths(B), types(B), ids(B);

    auto run_eval = [&](int step) {
        EvalResult r = evaluate(&m, &test, o.eval_records, B);
        int c = 0, t = 0;
        for (int i = 0; i < VLM_NUM_QTYPES; i++) { c += r.correct[i]; t += r.total[i]; }
        printf("step %5d | test loss %.4f | exact match %.1f%% (", step, r.loss, 100.0 * c / std::max(1, t));
        JsonLine j; j.integer("step", step).num("val_loss", r.loss).num("accuracy", (double)c / std::max(1, t));
        for (int i = 0; i < VLM_NUM_QTYPES; i++) {
            if (!r.total[i]) continue;
            double acc = (double)r.correct[i] / r.total[i];
            printf("%s%s %.1f%%", i ? ", " : "", VLM_QTYPE_NAMES[i], 100 * acc);
            j.num((std::string("acc_") + VLM_QTYPE_NAMES[i]).c_str(), acc);
        }
        printf(")\n");
        logger_write(&log, j);
    };
    auto save = [&](int step) {
        if (t.checkpoint.empty()) return;
        checkpoint_save(t.checkpoint.c_str(), "vlm", ckpt_cfg, &m.params, {step, 0, rng.state});
        printf("saved checkpoint %s (step %d)\n", t.checkpoint.c_str(), step);
    };

    double t_start = wall_ms(), step_ms_sum = 0;
    int timed = 0, step = st.step;
    for (; step < t.steps; step++) {
        if (train_should_stop(t, step, wall_ms() - t_start)) break;
        if (o.eval_interval > 0 && step % o.eval_interval == 0) run_eval(step);
        g_prof.on = t.profile > 0 && step >= st.step + 1 && step < st.step + 1 + t.profile;
        double t0 = wall_ms();
        VlmKind kind = o.task == "caption" ? VLM_CAPTION : o.task == "qa" ? VLM_QA : (step % 2 ? VLM_QA : VLM_CAPTION);
        const std::vector<int>& pool = train_ids[kind];
        for (int i = 0; i < B; i++) ids[i] = pool[rng_u32(&rng) % pool.size()];
        vlm_get_batch(&train, kind, ids.data(), B, max_text, images.data(), tokens.data(), targets.data(), lengths.data(), types.data());
        float loss = vlm_forward(&m, images.data(), tokens.data(), targets.data(), lengths.data(), B);
        vlm_zero_grad(&m);
        if (std::isfinite(loss)) vlm_backward(&m);
        StepStats ss = optimizer_step(&m.params, t, step, loss, &log);
        double ms = wall_ms() - t0, mib = device_memory_mib(on_gpu);
        if (step > st.step) { step_ms_sum += ms; timed++; }
        double avg = timed ? step_ms_sum / timed : ms;
        if (step % t.log_every == 0 || step == t.steps - 1) {
            printf("step %5d/%d | %-7s loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f seq/s | %s | mem %.0f MiB\n", step + 1, t.steps,
                   kind == VLM_QA ? "qa" : "caption", loss, ss.lr, ss.grad_norm, ms, B / (avg / 1000.0),
                   eta_string(t.steps - step - 1, avg).c_str(), mib);
            fflush(stdout);
        }
        logger_write(&log, JsonLine().integer("step", step + 1).num("loss", loss).text("task", kind == VLM_QA ? "qa" : "caption")
                               .num("lr", ss.lr).num("grad_norm", ss.grad_norm).num("step_ms", ms).num("seq_per_s", B / (ms / 1000.0)).num("mem_mib", mib));
        if (t.checkpoint_interval > 0 && (step + 1) % t.checkpoint_interval == 0) save(step + 1);
    }
    run_eval(step);
    save(step);
    if (timed) printf("summary: %.1f ms/step, %.0f sequences/s\n", step_ms_sum / timed, B / (step_ms_sum / timed / 1000.0));
    if (t.profile > 0) prof_print(std::min(t.profile, std::max(0, step - st.step - 1)));
    // a few answers to read
    std::vector<int> test_qa = vlm_record_ids(&test, VLM_QA);
    for (int i = 0; i < 5 && i < (int)test_qa.size(); i++) {
        int id = test_qa[i * 37 % test_qa.size()];
        vlm_get_batch(&test, VLM_QA, &id, 1, max_text, images.data(), tokens.data(), targets.data(), lengths.data(), types.data());
        const VlmRecord& rec = test.records[id];
        std::string q = vocab_decode(&vocab, rec.question.data(), (int)rec.question.size());
        std::string a = vocab_decode(&vocab, rec.answer.data(), (int)rec.answer.size());
        printf("Q: %s | model: %s | truth: %s\n", q.c_str(), answer(&m, vocab, images.data(), q).c_str(), a.c_str());
    }
    logger_close(&log);
    vlm_free(&m);
    vlm_free(&train); vlm_free(&test);
    return 0;
}
