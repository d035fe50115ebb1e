// train_mamba: trains a Mamba-1 language model on a token shard (or random
// tokens), on the GPU when there is one and on the CPU reference otherwise.
//
//   make train_mamba && ./train_mamba --help
//
// The model lives in src/mamba_model.h; this file is the training loop:
// data, AdamW with warmup + cosine schedule and global-norm clipping,
// evaluation, sampling, JSONL logging and atomic checkpoints.
#include <cerrno>
#include <string>
#include <sys/stat.h>
#include "src/adamw.h"
#include "src/dataloader.h"
#include "src/mamba_model.h"

// ---------------------------------------------------------------------------
// options

typedef struct {
    // model
    int vocab_size = 0;  // 0: take it from the data (or 50280 with --random-data)
    int d_model = 256, n_layer = 4, d_state = 16, expand = 2, d_conv = 4, dt_rank = 0;
    // data
    std::string data_dir = "data/kjv";
    bool random_data = false;
    int batch = 16, seq_len = 256;
    // optimisation
    float lr = 2e-3f, min_lr_frac = 0.1f, weight_decay = 0.1f, beta1 = 0.9f, beta2 = 0.95f, grad_clip = 1.0f;
    int warmup = 100, steps = 1000;
    float max_minutes = 0;  // stop early after this much wall time (0: no limit)
    int stop_at = 0;        // stop (and checkpoint) at this step, keeping the schedule of --steps
    // evaluation, sampling, logging, checkpoints
    int eval_interval = 100, eval_batches = 16;
    int sample_interval = 0, sample_len = 200;
    std::string prompt = "And God said";
    float temperature = 0.8f;
    int top_k = 40;
    int sample_only = 0;  // generate this many tokens from --resume and exit
    std::string log_path = "", checkpoint = "", resume = "";
    int checkpoint_interval = 0;
    uint64_t seed = 1337;
    std::string device = "auto";
    int tf32 = 1, profile = 0, log_every = 10;
} Options;

typedef enum { OPT_INT, OPT_FLOAT, OPT_STR, OPT_FLAG, OPT_U64 } OptKind;
typedef struct { const char* name; OptKind kind; void* ptr; const char* help; } OptSpec;

static std::vector<OptSpec> option_table(Options* o) {
    return {
        {"--d-model", OPT_INT, &o->d_model, "model width D"},
        {"--n-layer", OPT_INT, &o->n_layer, "number of Mamba blocks"},
        {"--d-state", OPT_INT, &o->d_state, "SSM state size N"},
        {"--expand", OPT_INT, &o->expand, "inner width E = expand * D"},
        {"--d-conv", OPT_INT, &o->d_conv, "causal conv width K"},
        {"--dt-rank", OPT_INT, &o->dt_rank, "rank of delta's projection (0: ceil(D/16))"},
        {"--vocab", OPT_INT, &o->vocab_size, "vocabulary size (0: from the data; 50280 with --random-data)"},
        {"--data-dir", OPT_STR, &o->data_dir, "folder with train.bin and val.bin"},
        {"--random-data", OPT_FLAG, &o->random_data, "train on uniform random tokens (benchmark mode)"},
        {"--batch", OPT_INT, &o->batch, "sequences per step B"},
        {"--seq-len", OPT_INT, &o->seq_len, "tokens per sequence T"},
        {"--lr", OPT_FLOAT, &o->lr, "peak learning rate"},
        {"--min-lr-frac", OPT_FLOAT, &o->min_lr_frac, "final learning rate as a fraction of the peak"},
        {"--warmup", OPT_INT, &o->warmup, "linear warmup steps"},
        {"--steps", OPT_INT, &o->steps, "total optimisation steps"},
        {"--stop-at", OPT_INT, &o->stop_at, "stop at this step and checkpoint; resume later (0: off)"},
        {"--max-minutes", OPT_FLOAT, &o->max_minutes, "stop after this many minutes (0: no limit)"},
        {"--weight-decay", OPT_FLOAT, &o->weight_decay, "AdamW decay (matrices only)"},
        {"--beta1", OPT_FLOAT, &o->beta1, "AdamW beta1"},
        {"--beta2", OPT_FLOAT, &o->beta2, "AdamW beta2"},
        {"--grad-clip", OPT_FLOAT, &o->grad_clip, "clip the global gradient norm to this (0: off)"},
        {"--eval-interval", OPT_INT, &o->eval_interval, "steps between validation evaluations (0: off)"},
        {"--eval-batches", OPT_INT, &o->eval_batches, "validation batches per evaluation"},
        {"--sample-interval", OPT_INT, &o->sample_interval, "steps between samples (0: off)"},
        {"--sample-len", OPT_INT, &o->sample_len, "tokens to generate per sample"},
        {"--prompt", OPT_STR, &o->prompt, "prompt for samples (bytes, vocab 256)"},
        {"--temperature", OPT_FLOAT, &o->temperature, "sampling temperature (0: greedy)"},
        {"--top-k", OPT_INT, &o->top_k, "sample among the k most likely tokens (0: all)"},
        {"--sample", OPT_INT, &o->sample_only, "load --resume, generate this many tokens, exit"},
        {"--log", OPT_STR, &o->log_path, "JSONL log file"},
        {"--checkpoint", OPT_STR, &o->checkpoint, "checkpoint path (written atomically)"},
        {"--checkpoint-interval", OPT_INT, &o->checkpoint_interval, "steps between checkpoints (0: only at the end)"},
        {"--resume", OPT_STR, &o->resume, "resume from this checkpoint"},
        {"--seed", OPT_U64, &o->seed, "random seed"},
        {"--device", OPT_STR, &o->device, "auto | cpu | cuda"},
        {"--tf32", OPT_INT, &o->tf32, "GPU: use TF32 tensor cores in matmuls (0/1)"},
        {"--profile", OPT_INT, &o->profile, "time each component over this many steps and print a breakdown"},
        {"--log-every", OPT_INT, &o->log_every, "steps between progress lines"},
    };
}

static void print_help(Options* o) {
    printf("usage: train_mamba [options]\n\nTrains a Mamba-1 language model (GPU if present, else the CPU reference).\n\n");
    for (auto& s : option_table(o)) {
        char def[96] = "";
        switch (s.kind) {
            case OPT_INT: snprintf(def, sizeof def, "%d", *(int*)s.ptr); break;
            case OPT_FLOAT: snprintf(def, sizeof def, "%g", *(float*)s.ptr); break;
            case OPT_STR: snprintf(def, sizeof def, "\"%s\"", ((std::string*)s.ptr)->c_str()); break;
            case OPT_U64: snprintf(def, sizeof def, "%llu", (unsigned long long)*(uint64_t*)s.ptr); break;
            case OPT_FLAG: snprintf(def, sizeof def, "off"); break;
        }
        printf("  %-22s %s (default %s)\n", s.name, s.help, def);
    }
    printf("  %-22s this message\n", "--help");
}

static void parse_args(int argc, char** argv, Options* o) {
    std::vector<OptSpec> table = option_table(o);
    for (int i = 1; i < argc; i++) {
        const char* arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) { print_help(o); exit(0); }
        const OptSpec* spec = nullptr;
        for (auto& s : table) if (!strcmp(s.name, arg)) spec = &s;
        if (!spec) FATAL("unknown option '%s' (see --help)", arg);
        if (spec->kind == OPT_FLAG) { *(bool*)spec->ptr = true; continue; }
        if (i + 1 >= argc) FATAL("option %s needs a value", arg);
        const char* val = argv[++i];
        char* end = nullptr;
        errno = 0;
        switch (spec->kind) {
            case OPT_INT: {
                long v = strtol(val, &end, 10);
                if (*val == 0 || *end || errno || v < -2147483647L || v > 2147483647L)
                    FATAL("option %s expects an integer, got '%s'", arg, val);
                *(int*)spec->ptr = (int)v; break;
            }
            case OPT_U64: {
                unsigned long long v = strtoull(val, &end, 10);
                if (*val == 0 || *end || errno) FATAL("option %s expects a non-negative integer, got '%s'", arg, val);
                *(uint64_t*)spec->ptr = v; break;
            }
            case OPT_FLOAT: {
                float v = strtof(val, &end);
                if (*val == 0 || *end || errno || !std::isfinite(v)) FATAL("option %s expects a number, got '%s'", arg, val);
                *(float*)spec->ptr = v; break;
            }
            case OPT_STR: *(std::string*)spec->ptr = val; break;
            case OPT_FLAG: break;
        }
    }
    // reject impossible values, each with its reason
    if (o->d_model < 1 || o->n_layer < 1 || o->d_state < 1 || o->expand < 1 || o->d_conv < 1)
        FATAL("--d-model, --n-layer, --d-state, --expand and --d-conv must be >= 1");
    if (o->dt_rank < 0) FATAL("--dt-rank must be >= 0 (0 picks ceil(d_model/16))");
    if (o->vocab_size < 0 || o->vocab_size > 65536) FATAL("--vocab must be in [0, 65536] (tokens are stored as uint16)");
    if (o->batch < 1 || o->seq_len < 1) FATAL("--batch and --seq-len must be >= 1");
    if (o->steps < 0 || o->warmup < 0) FATAL("--steps and --warmup must be >= 0");
    if (!(o->lr > 0)) FATAL("--lr must be > 0");
    if (o->min_lr_frac < 0 || o->min_lr_frac > 1) FATAL("--min-lr-frac must be in [0, 1]");
    if (o->beta1 < 0 || o->beta1 >= 1 || o->beta2 < 0 || o->beta2 >= 1) FATAL("--beta1 and --beta2 must be in [0, 1)");
    if (o->weight_decay < 0 || o->grad_clip < 0) FATAL("--weight-decay and --grad-clip must be >= 0");
    if (o->eval_interval < 0 || o->eval_batches < 1) FATAL("--eval-interval must be >= 0 and --eval-batches >= 1");
    if (o->sample_interval < 0 || o->sample_len < 1 || o->sample_only < 0) FATAL("--sample-interval >= 0, --sample-len >= 1, --sample >= 0");
    if (o->temperature < 0 || o->top_k < 0) FATAL("--temperature and --top-k must be >= 0");
    if (o->checkpoint_interval < 0 || o->log_every < 1 || o->profile < 0) FATAL("--checkpoint-interval >= 0, --log-every >= 1, --profile >= 0");
    if (o->device != "auto" && o->device != "cpu" && o->device != "cuda") FATAL("--device must be auto, cpu or cuda, got '%s'", o->device.c_str());
    if (o->sample_only > 0 && o->resume.empty()) FATAL("--sample needs --resume CHECKPOINT");
    if (o->stop_at < 0) FATAL("--stop-at must be >= 0");
    if (o->max_minutes < 0) FATAL("--max-minutes must be >= 0");
}

// ---------------------------------------------------------------------------
// device

static bool pick_gpu(const std::string& device) {
#ifdef __CUDACC__
    int n = 0;
    bool have = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
    cudaGetLastError();  // clear the error a machine without a GPU leaves behind
    if (device == "cuda" && !have) FATAL("--device cuda: no CUDA GPU found");
    return device != "cpu" && have;
#else
    if (device == "cuda") FATAL("--device cuda: this binary was built without CUDA (no nvcc)");
    return false;
#endif
}

static std::string device_name(bool on_gpu) {
#ifdef __CUDACC__
    if (on_gpu) {
        cudaDeviceProp p; cudaCheck(cudaGetDeviceProperties(&p, 0));
        return std::string(p.name);
    }
#endif
    (void)on_gpu;
    char buf[64]; int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    snprintf(buf, sizeof buf, "CPU (%d threads)", threads);
    return buf;
}

// memory in use, in MiB: the GPU's (whole device) or this process's resident set
static double memory_mib(bool on_gpu) {
#ifdef __CUDACC__
    if (on_gpu) {
        size_t free_b, total_b; cudaCheck(cudaMemGetInfo(&free_b, &total_b));
        return (total_b - free_b) / 1048576.0;
    }
#endif
    long pages = 0, rss = 0;
    FILE* f = fopen("/proc/self/statm", "r");
    if (f) { if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0; fclose(f); }
    return rss * 4096.0 / 1048576.0;
}

static double grad_sum_squares(const MambaModel* m) {
#ifdef __CUDACC__
    if (m->on_gpu) return sum_squares_cuda(m->grads, m->num_params);
#endif
    return sum_squares_cpu(m->grads, m->num_params);
}

// ---------------------------------------------------------------------------
// checkpoints: header, then params, AdamW m, AdamW v (float32)

#define CKPT_MAGIC 20261124
#define CKPT_VERSION 1
#define CKPT_HEADER_INTS 64

typedef struct { int step; uint64_t data_pos; uint64_t rng_state; } TrainState;

static void save_checkpoint(const char* path, const MambaModel* m, const TrainState* st) {
    const MambaConfig& c = m->cfg;
    int32_t h[CKPT_HEADER_INTS] = {0};
    h[0] = CKPT_MAGIC; h[1] = CKPT_VERSION;
    h[2] = c.vocab_size; h[3] = c.d_model; h[4] = c.n_layer; h[5] = c.d_state; h[6] = c.d_conv; h[7] = c.expand; h[8] = c.dt_rank;
    h[9] = st->step;
    memcpy(&h[10], &st->data_pos, 8); memcpy(&h[12], &st->rng_state, 8);
    uint64_t np = m->num_params; memcpy(&h[14], &np, 8);
    std::string tmp = std::string(path) + ".tmp";
    FILE* f = fopen(tmp.c_str(), "wb");
    if (!f) FATAL("cannot write checkpoint %s: %s", tmp.c_str(), strerror(errno));
    bool ok = fwrite(h, sizeof h, 1, f) == 1;
    std::vector<float> buf(m->num_params);
    for (float* src : {m->params, m->adam_m, m->adam_v}) {
        backend_copy(m->on_gpu, buf.data(), src, m->num_params * sizeof(float), false);
        ok = ok && fwrite(buf.data(), sizeof(float), m->num_params, f) == m->num_params;
    }
    ok = (fflush(f) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    if (!ok) { remove(tmp.c_str()); FATAL("failed writing checkpoint %s (disk full?)", tmp.c_str()); }
    // the rename is atomic: an interrupted save never destroys the last good checkpoint
    if (rename(tmp.c_str(), path) != 0) FATAL("cannot rename %s to %s: %s", tmp.c_str(), path, strerror(errno));
}

// reads a checkpoint's config (for --sample) without touching a model
static MambaConfig read_checkpoint_config(const char* path) {
    FILE* f = fopen(path, "rb");
    if (!f) FATAL("cannot open checkpoint %s: %s", path, strerror(errno));
    int32_t h[CKPT_HEADER_INTS];
    if (fread(h, sizeof h, 1, f) != 1) FATAL("checkpoint %s is truncated (no complete header)", path);
    fclose(f);
    if (h[0] != CKPT_MAGIC) FATAL("%s is not a checkpoint (bad magic %d)", path, h[0]);
    if (h[1] != CKPT_VERSION) FATAL("checkpoint %s has version %d, this program reads %d", path, h[1], CKPT_VERSION);
    MambaConfig c = {h[2], h[3], h[4], h[5], h[6], h[7], h[8], 0};
    mamba_config_derive(&c);
    return c;
}

static void load_checkpoint(const char* path, MambaModel* m, TrainState* st) {
    FILE* f = fopen(path, "rb");
    if (!f) FATAL("cannot open checkpoint %s: %s", path, strerror(errno));
    int32_t h[CKPT_HEADER_INTS];
    if (fread(h, sizeof h, 1, f) != 1) FATAL("checkpoint %s is truncated (no complete header)", path);
    if (h[0] != CKPT_MAGIC) FATAL("%s is not a checkpoint (bad magic %d)", path, h[0]);
    if (h[1] != CKPT_VERSION) FATAL("checkpoint %s has version %d, this program reads %d", path, h[1], CKPT_VERSION);
    const MambaConfig& c = m->cfg;
    const char* names[] = {"vocab", "d_model", "n_layer", "d_state", "d_conv", "expand", "dt_rank"};
    int want[] = {c.vocab_size, c.d_model, c.n_layer, c.d_state, c.d_conv, c.expand, c.dt_rank};
    for (int i = 0; i < 7; i++)
        if (h[2 + i] != want[i])
            FATAL("checkpoint %s was trained with %s=%d but this run has %s=%d; pass the same model flags to resume",
                  path, names[i], h[2 + i], names[i], want[i]);
    uint64_t np; memcpy(&np, &h[14], 8);
    if (np != m->num_params) FATAL("checkpoint %s holds %llu parameters, the model has %zu", path, (unsigned long long)np, m->num_params);
    st->step = h[9];
    memcpy(&st->data_pos, &h[10], 8); memcpy(&st->rng_state, &h[12], 8);
    std::vector<float> buf(m->num_params);
    for (float* dst : {m->params, m->adam_m, m->adam_v}) {
        if (fread(buf.data(), sizeof(float), m->num_params, f) != m->num_params)
            FATAL("checkpoint %s is truncated (expected %zu parameters x 3)", path, m->num_params);
        backend_copy(m->on_gpu, dst, buf.data(), m->num_params * sizeof(float), true);
    }
    char extra;
    if (fread(&extra, 1, 1, f) != 0) FATAL("checkpoint %s has trailing bytes: not written by this program?", path);
    fclose(f);
}

// ---------------------------------------------------------------------------
// sampling (recurrent CPU path; the GPU's parameters are copied to the host)

static std::string generate(const MambaModel* m, const Options& o, int n_tokens, uint64_t seed) {
    std::vector<float> host(m->num_params);
    backend_copy(m->on_gpu, host.data(), m->params, m->num_params * sizeof(float), false);
    MambaStepState s; mamba_step_init(&s, m, host.data());
    int V = m->cfg.vocab_size;
    std::vector<float> logits(V);
    Rng rng; rng_seed(&rng, seed);
    std::string text;
    bool bytes = V == 256;
    std::vector<int> prompt;
    if (bytes) for (unsigned char ch : o.prompt) prompt.push_back(ch);
    if (prompt.empty()) prompt.push_back(bytes ? '\n' : 0);
    for (int t : prompt) mamba_step(&s, t, logits.data());
    if (bytes) text = o.prompt;
    for (int i = 0; i < n_tokens; i++) {
        int t = sample_logits(logits.data(), V, o.temperature, o.top_k, rng_uniform(&rng));
        if (bytes) text.push_back((char)t);
        else text += " " + std::to_string(t);
        mamba_step(&s, t, logits.data());
    }
    return text;
}

static std::string json_escape(const std::string& s) {
    std::string out;
    for (unsigned char ch : s) {
        if (ch == '"' || ch == '\\') { out += '\\'; out += ch; }
        else if (ch == '\n') out += "\\n";
        else if (ch < 0x20 || ch >= 0x7f) { char b[8]; snprintf(b, sizeof b, "\\u%04x", ch); out += b; }
        else out += ch;
    }
    return out;
}

static float lr_at(const Options& o, int step) {  // step counts from 0
    if (step < o.warmup) return o.lr * (step + 1) / o.warmup;
    float min_lr = o.lr * o.min_lr_frac;
    int decay_steps = o.steps - o.warmup;
    if (decay_steps <= 0) return o.lr;
    float progress = (float)(step - o.warmup) / decay_steps;
    return min_lr + 0.5f * (o.lr - min_lr) * (1.0f + cosf(3.14159265f * fminf(progress, 1.0f)));
}

static void random_tokens(Rng* rng, int* inputs, int* targets, int n, int V) {
    // independent uniform tokens: the loss should stay near log(V), only speed matters
    for (int i = 0; i < n; i++) inputs[i] = rng_u32(rng) % V;
    for (int i = 0; i < n; i++) targets[i] = rng_u32(rng) % V;
}

// ---------------------------------------------------------------------------

int main(int argc, char** argv) {
    Options o;
    parse_args(argc, argv, &o);
    bool on_gpu = pick_gpu(o.device);
#ifdef __CUDACC__
    if (on_gpu)
        cublasCheck(cublasSetMathMode(cublas_handle(), o.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
#endif
    int B = o.batch, T = o.seq_len;

    // --sample: generation only, config from the checkpoint
    if (o.sample_only > 0) {
        MambaConfig cfg = read_checkpoint_config(o.resume.c_str());
        MambaModel m; mamba_build(&m, cfg, 1, 1, false);
        TrainState st; load_checkpoint(o.resume.c_str(), &m, &st);
        printf("%s\n", generate(&m, o, o.sample_only, o.seed).c_str());
        mamba_free(&m);
        return 0;
    }

    // data
    DataLoader train_dl, val_dl;
    bool have_val = false;
    if (!o.random_data) {
        std::string train_path = o.data_dir + "/train.bin", val_path = o.data_dir + "/val.bin";
        dataloader_open(&train_dl, train_path.c_str(), B, T);
        dataloader_set_random(&train_dl, o.seed);  // random windows; validation stays sequential
        struct stat sb;
        if (stat(val_path.c_str(), &sb) == 0) { dataloader_open(&val_dl, val_path.c_str(), B, T); have_val = true; }
        int data_vocab = dataloader_vocab(&train_dl);
        if (o.vocab_size == 0) o.vocab_size = data_vocab;
        if (o.vocab_size < data_vocab) FATAL("--vocab %d is smaller than the data's vocab %d", o.vocab_size, data_vocab);
    } else if (o.vocab_size == 0) {
        o.vocab_size = 50280;
    }

    MambaConfig cfg = {o.vocab_size, o.d_model, o.n_layer, o.d_state, o.d_conv, o.expand, o.dt_rank, 0};
    MambaModel m;
    mamba_build(&m, cfg, B, T, on_gpu);
    mamba_init_params(&m, o.seed);
    TrainState st = {0, 0, 0};
    Rng data_rng; rng_seed(&data_rng, o.seed + 1);
    if (!o.resume.empty()) {
        load_checkpoint(o.resume.c_str(), &m, &st);
        data_rng.state = st.rng_state;
        if (!o.random_data) {
            dataloader_seek(&train_dl, st.data_pos);
        }
        printf("resumed from %s at step %d\n", o.resume.c_str(), st.step);
    }
    cfg = m.cfg;
    printf("model: vocab %d, d_model %d, n_layer %d, d_state %d, d_conv %d, expand %d (d_inner %d), dt_rank %d: %.2fM parameters\n",
           cfg.vocab_size, cfg.d_model, cfg.n_layer, cfg.d_state, cfg.d_conv, cfg.expand, cfg.d_inner, cfg.dt_rank, m.num_params / 1e6);
    printf("data: %s, batch %d x %d tokens; device: %s%s\n", o.random_data ? "random tokens" : o.data_dir.c_str(), B, T,
           device_name(on_gpu).c_str(), on_gpu ? (o.tf32 ? " (TF32 matmuls)" : " (FP32 matmuls)") : "");
    printf("activations %.1f MiB, parameters+grads+AdamW %.1f MiB\n", (m.num_acts + m.num_scratch) * 4 / 1048576.0, m.num_params * 16 / 1048576.0);

    FILE* logf = nullptr;
    if (!o.log_path.empty()) {
        logf = fopen(o.log_path.c_str(), st.step > 0 ? "a" : "w");
        if (!logf) FATAL("cannot open log %s: %s", o.log_path.c_str(), strerror(errno));
    }
    std::vector<int> inputs((size_t)B * T), targets((size_t)B * T);

    auto evaluate = [&]() -> float {
        if (!have_val) return NAN;
        dataloader_reset(&val_dl);
        double sum = 0;
        for (int i = 0; i < o.eval_batches; i++) {
            dataloader_next_batch(&val_dl, inputs.data(), targets.data());
            sum += mamba_forward(&m, inputs.data(), targets.data(), B, T);
        }
        return (float)(sum / o.eval_batches);
    };
    auto save = [&](int step) {
        if (o.checkpoint.empty()) return;
        TrainState cs = {step, o.random_data ? 0 : dataloader_position(&train_dl), data_rng.state};
        save_checkpoint(o.checkpoint.c_str(), &m, &cs);
        printf("saved checkpoint %s (step %d)\n", o.checkpoint.c_str(), step);
    };

    double t_start = wall_ms(), step_ms_avg = 0, peak_mib = 0;
    int timed_steps = 0, step = st.step;
    for (; step < o.steps; step++) {
        if (o.max_minutes > 0 && (wall_ms() - t_start) > o.max_minutes * 60000.0) {
            printf("stopping: --max-minutes %.1f reached\n", o.max_minutes);
            break;
        }
        if (o.stop_at > 0 && step >= o.stop_at) { printf("stopping at step %d (--stop-at)\n", step); break; }
        if (o.eval_interval > 0 && have_val && step % o.eval_interval == 0) {
            float vl = evaluate();
            printf("step %5d | val loss %.4f\n", step, vl);
            if (logf) { fprintf(logf, "{\"step\": %d, \"val_loss\": %.6f}\n", step, vl); fflush(logf); }
        }
        if (o.sample_interval > 0 && step > 0 && step % o.sample_interval == 0) {
            std::string text = generate(&m, o, o.sample_len, o.seed + step);
            printf("---- sample at step %d ----\n%s\n----\n", step, text.c_str());
            if (logf) { fprintf(logf, "{\"step\": %d, \"sample\": \"%s\"}\n", step, json_escape(text).c_str()); fflush(logf); }
        }
        g_prof_on = o.profile > 0 && step >= st.step + 1 && step < st.step + 1 + o.profile;  // skip the warm-up step
        double t0 = wall_ms();
        if (o.random_data) random_tokens(&data_rng, inputs.data(), targets.data(), B * T, cfg.vocab_size);
        else dataloader_next_batch(&train_dl, inputs.data(), targets.data());
        float loss = mamba_forward(&m, inputs.data(), targets.data(), B, T);
        if (!std::isfinite(loss)) FATAL("loss is %f at step %d: training diverged (try a lower --lr)", loss, step);
        mamba_zero_grad(&m);
        mamba_backward(&m);
        float norm = (float)sqrt(grad_sum_squares(&m));
        if (!std::isfinite(norm)) FATAL("gradient norm is %f at step %d: training diverged (try a lower --lr)", norm, step);
        float scale = (o.grad_clip > 0 && norm > o.grad_clip) ? o.grad_clip / norm : 1.0f;
        float lr = lr_at(o, step);
        PROF(&m, "adamw",
             DISPATCH(on_gpu, adamw_update, m.params, m.grads, m.adam_m, m.adam_v, m.num_decay_params, lr, o.beta1, o.beta2, 1e-8f, o.weight_decay, step + 1, scale);
             DISPATCH(on_gpu, adamw_update, m.params + m.num_decay_params, m.grads + m.num_decay_params, m.adam_m + m.num_decay_params,
                      m.adam_v + m.num_decay_params, m.num_params - m.num_decay_params, lr, o.beta1, o.beta2, 1e-8f, 0.0f, step + 1, scale));
        prof_sync(on_gpu);
        double ms = wall_ms() - t0;
        if (step > st.step) { step_ms_avg += ms; timed_steps++; }  // the first step is warm-up
        double mib = memory_mib(on_gpu);
        peak_mib = fmax(peak_mib, mib);
        double avg = timed_steps ? step_ms_avg / timed_steps : ms;
        double tok_s = B * T / (avg / 1000.0);
        if (step % o.log_every == 0 || step == o.steps - 1) {
            double eta_s = (o.steps - step - 1) * avg / 1000.0;
            printf("step %5d/%d | loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s | ETA %dm%02ds | mem %.0f MiB\n",
                   step + 1, o.steps, loss, lr, norm, ms, tok_s, (int)(eta_s / 60), (int)eta_s % 60, mib);
            fflush(stdout);
        }
        if (logf) {
            fprintf(logf, "{\"step\": %d, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, \"step_ms\": %.3f, \"tok_per_s\": %.1f, \"mem_mib\": %.1f}\n",
                    step + 1, loss, lr, norm, ms, B * T / (ms / 1000.0), mib);
            fflush(logf);
        }
        if (o.checkpoint_interval > 0 && (step + 1) % o.checkpoint_interval == 0) save(step + 1);
    }
    if (have_val && o.eval_interval > 0) {
        float vl = evaluate();
        printf("step %5d | val loss %.4f (final)\n", step, vl);
        if (logf) { fprintf(logf, "{\"step\": %d, \"val_loss\": %.6f}\n", step, vl); fflush(logf); }
    }
    save(step);
    if (timed_steps > 0)
        printf("summary: %.1f ms/step, %.0f tokens/s, peak memory %.0f MiB\n", step_ms_avg / timed_steps,
               B * T / (step_ms_avg / timed_steps / 1000.0), peak_mib);
    if (o.profile > 0 && g_prof_n > 0) {
        double total = 0;
        for (int i = 0; i < g_prof_n; i++) total += g_prof[i].ms;
        int steps_profiled = std::min(o.profile, std::max(0, step - st.step - 1));
        printf("per-component time over %d steps (forward + backward, all layers; synchronized):\n", steps_profiled);
        for (int i = 0; i < g_prof_n; i++)
            printf("  %-14s %9.2f ms/step  %5.1f%%\n", g_prof[i].name, g_prof[i].ms / std::max(1, steps_profiled), 100 * g_prof[i].ms / total);
    }
    if (o.sample_interval > 0)
        printf("---- final sample ----\n%s\n----\n", generate(&m, o, o.sample_len, o.seed + step).c_str());
    if (logf) fclose(logf);
    if (!o.random_data) { dataloader_free(&train_dl); if (have_val) dataloader_free(&val_dl); }
    mamba_free(&m);
    return 0;
}
