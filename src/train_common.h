// train_common.h: what every trainer's loop shares: the options of the
// optimisation, stopping, logging, checkpoints and device, their validation,
// and the step that follows a backward pass (divergence check, global-norm
// clipping, AdamW with the LR schedule).
//
//   TrainOptions t;  t.lr = 2e-3f; ...                      the trainer's defaults
//   std::vector<OptSpec> table = {...its own options...};
//   train_options_append(&table, &t);  options_parse(argc, argv, table, usage);
//   train_options_validate(&t);
//   ... forward, zero_grad, backward ...
//   StepStats s = optimizer_step(&model.params, t, step, loss, &log);
#pragma once
#include <string>
#include <vector>
#include "adamw.h"
#include "common.h"
#include "linear.h"
#include "logger.h"
#include "options.h"
#include "params.h"
#include "profiler.h"
#include "schedule.h"

typedef struct {
    // optimisation: AdamW, linear warmup then cosine to min_lr_frac * lr at `steps`
    int steps = 1000, warmup = 100;
    float lr = 1e-3f, min_lr_frac = 0.1f, weight_decay = 0.1f, beta1 = 0.9f, beta2 = 0.95f, grad_clip = 1.0f;
    // stopping
    float max_minutes = 0;  // stop early after this much wall time (0: no limit)
    int stop_at = 0;        // stop (and checkpoint) at this step, keeping the schedule of --steps
    // logging and checkpoints
    std::string log_path, checkpoint, resume;
    int checkpoint_interval = 0, log_every = 10, profile = 0;
    uint64_t seed = 1337;
    std::string device = "auto";
    std::string matmul = "tf32";  // GPU matmul precision: tf32 | bf16 | fp32 (linear.h)
} TrainOptions;

static void train_options_append(std::vector<OptSpec>* table, TrainOptions* t) {
    std::vector<OptSpec> shared = {
        {"--steps", OPT_INT, &t->steps, "total optimisation steps"},
        {"--warmup", OPT_INT, &t->warmup, "linear warmup steps"},
        {"--lr", OPT_FLOAT, &t->lr, "peak learning rate"},
        {"--min-lr-frac", OPT_FLOAT, &t->min_lr_frac, "final learning rate as a fraction of the peak"},
        {"--weight-decay", OPT_FLOAT, &t->weight_decay, "AdamW decay (matrices only)"},
        {"--beta1", OPT_FLOAT, &t->beta1, "AdamW beta1"},
        {"--beta2", OPT_FLOAT, &t->beta2, "AdamW beta2"},
        {"--grad-clip", OPT_FLOAT, &t->grad_clip, "clip the global gradient norm to this (0: off)"},
        {"--max-minutes", OPT_FLOAT, &t->max_minutes, "stop after this many minutes (0: no limit)"},
        {"--stop-at", OPT_INT, &t->stop_at, "stop at this step and checkpoint; resume later (0: off)"},
        {"--log", OPT_STR, &t->log_path, "JSONL log file"},
        {"--checkpoint", OPT_STR, &t->checkpoint, "checkpoint path (written atomically)"},
        {"--checkpoint-interval", OPT_INT, &t->checkpoint_interval, "steps between checkpoints (0: only at the end)"},
        {"--resume", OPT_STR, &t->resume, "resume from this checkpoint"},
        {"--seed", OPT_U64, &t->seed, "random seed"},
        {"--device", OPT_STR, &t->device, "auto | cpu | cuda"},
        {"--matmul", OPT_STR, &t->matmul, "GPU precision: bf16 (bf16 operands; train_mamba: Mamba-1 activations in bf16 too) | tf32 | fp32 (exact)"},
        {"--profile", OPT_INT, &t->profile, "time each component over this many steps and print a breakdown"},
        {"--log-every", OPT_INT, &t->log_every, "steps between progress lines"},
    };
    table->insert(table->end(), shared.begin(), shared.end());
}

// impossible values, each with its reason
static void train_options_validate(const TrainOptions* t) {
    if (t->steps < 0 || t->warmup < 0) FATAL("--steps and --warmup must be >= 0");
    if (!(t->lr > 0)) FATAL("--lr must be > 0");
    if (t->min_lr_frac < 0 || t->min_lr_frac > 1) FATAL("--min-lr-frac must be in [0, 1]");
    if (t->beta1 < 0 || t->beta1 >= 1 || t->beta2 < 0 || t->beta2 >= 1) FATAL("--beta1 and --beta2 must be in [0, 1)");
    if (t->weight_decay < 0 || t->grad_clip < 0) FATAL("--weight-decay and --grad-clip must be >= 0");
    if (t->checkpoint_interval < 0 || t->log_every < 1 || t->profile < 0) FATAL("--checkpoint-interval >= 0, --log-every >= 1, --profile >= 0");
    if (t->device != "auto" && t->device != "cpu" && t->device != "cuda") FATAL("--device must be auto, cpu or cuda, got '%s'", t->device.c_str());
    if (t->matmul != "tf32" && t->matmul != "bf16" && t->matmul != "fp32") FATAL("--matmul must be tf32, bf16 or fp32, got '%s'", t->matmul.c_str());
    if (t->stop_at < 0) FATAL("--stop-at must be >= 0");
    if (t->max_minutes < 0) FATAL("--max-minutes must be >= 0");
}

// the GPU's matmul precision for this run
static void train_set_math_mode(bool on_gpu, const TrainOptions& t) {
#ifdef __CUDACC__
    if (on_gpu) linear_set_precision(t.matmul == "bf16" ? MATMUL_BF16 : t.matmul == "tf32" ? MATMUL_TF32 : MATMUL_FP32);
#endif
    (void)on_gpu; (void)t;
}

// true when the loop should stop before `step` (prints why)
static bool train_should_stop(const TrainOptions& t, int step, double elapsed_ms) {
    if (t.max_minutes > 0 && elapsed_ms > t.max_minutes * 60000.0) { printf("stopping: --max-minutes %.1f reached\n", t.max_minutes); return true; }
    if (t.stop_at > 0 && step >= t.stop_at) { printf("stopping at step %d (--stop-at)\n", step); return true; }
    return false;
}

typedef struct { float lr, grad_norm; } StepStats;

// After the backward of step `step` (from 0): a loss or gradient norm that is
// not finite is logged (as null) and stops the run with a clear message;
// otherwise the gradients are clipped to grad_clip and AdamW updates the store.
// loss: NaN when the trainer skipped the backward because the loss was not finite.
static StepStats optimizer_step(ParamStore* ps, const TrainOptions& t, int step, float loss, Logger* log) {
    StepStats s;
    s.lr = lr_at(LrSchedule{t.lr, t.min_lr_frac, t.warmup, t.steps}, step);
    s.grad_norm = std::isfinite(loss) ? params_grad_norm(ps) : NAN;
    if (!std::isfinite(loss) || !std::isfinite(s.grad_norm)) {
        logger_write(log, JsonLine().integer("step", step + 1).num("loss", loss).num("lr", s.lr).num("grad_norm", s.grad_norm));
        FATAL("%s is %f at step %d: training diverged (try a lower --lr)", std::isfinite(loss) ? "gradient norm" : "loss",
              std::isfinite(loss) ? s.grad_norm : loss, step);
    }
    float scale = (t.grad_clip > 0 && s.grad_norm > t.grad_clip) ? t.grad_clip / s.grad_norm : 1.0f;
    PROF(ps->on_gpu, "adamw", params_adamw_step(ps, AdamWConfig{t.beta1, t.beta2, 1e-8f, t.weight_decay}, s.lr, step + 1, scale));
    device_synchronize(ps->on_gpu);
    return s;
}

// "ETA 3m07s" for the remaining steps at avg_ms per step
static std::string eta_string(int steps_left, double avg_ms) {
    double s = steps_left * avg_ms / 1000.0;
    char buf[32]; snprintf(buf, sizeof buf, "ETA %dm%02ds", (int)(s / 60), (int)s % 60);
    return buf;
}
