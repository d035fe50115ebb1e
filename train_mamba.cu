// train_mamba: trains a Mamba-1 language model on a token shard (or random
// tokens), on the GPU when there is one and on the CPU reference otherwise; or any
// stack of Mamba-1, Mamba-2, attention and MLP blocks (--layers "M2,M2,A,F"): a
// hybrid or a pure transformer is a configuration of the same program.
//
//   make train_mamba && ./train_mamba --help
//
// The model is src/mamba_model.h; the plumbing (parameter store, checkpoints,
// options, log, schedule, sampler, profiler) is src/ too, shared with every
// trainer. This file keeps its options, their validation and the loop.
#include <string>
#include <sys/stat.h>
#include "src/checkpoint.h"
#include "src/dataloader.h"
#include "src/device.h"
#include "src/logger.h"
#include "src/mamba_export.h"
#include "src/mamba_generate.h"
#include "src/mamba_model.h"
#include "src/options.h"
#include "src/train_common.h"

typedef struct {
    // model
    int vocab_size = 0;  // 0: take it from the data (or 50280 with --random-data)
    int d_model = 256, n_layer = 0, d_state = 16, expand = 2, d_conv = 4, dt_rank = 0;  // n_layer 0: 4, or the pattern's
    std::string layers;  // empty: n_layer Mamba-1 blocks
    int m2_d_state = 0, m2_headdim = 0, m2_ngroups = 0, m2_chunk = 0, attn_heads = 0, mlp_mult = 0, max_seq = 0;  // 0: defaults
    // data
    std::string data_dir = "data/kjv";
    bool random_data = false;
    int batch = 16, seq_len = 256;
    TrainOptions train;  // optimisation, stopping, log, checkpoints, device (src/train_common.h)
    // evaluation and sampling
    int eval_interval = 100, eval_batches = 16;
    int sample_interval = 0, sample_len = 200;
    std::string prompt = "And God said";
    std::string gen_weights = "bf16";  // the GPU decoder GEMVs' weights (any layer pattern): bf16 | fp32
    float temperature = 0.8f;
    int top_k = 40;
    int sample_only = 0;  // generate this many tokens from --resume and exit
    bool bench_generate = false;  // time GPU generation (µs/token at batch 1, 8, 64) for --resume and exit
    bool recompute = false;  // g_mamba_recompute
    std::string export_hf;
    // fine-tuning: from --base, all weights or adapters on the frozen base (src/lora.h)
    std::string base, adapter, also_eval;
    LoraConfig lora;
} Options;

static std::vector<OptSpec> option_table(Options* o) {
    o->train.lr = 2e-3f;  // this trainer's defaults for the shared options
    o->train.matmul = "bf16";  // with bf16 activations 1.55x the TF32 step at the 130m shape, in 75% of its memory (H100); KJV validation within 0.4% (README)
    o->lora.targets = "all";
    std::vector<OptSpec> table = {
        {"--d-model", OPT_INT, &o->d_model, "model width D"},
        {"--n-layer", OPT_INT, &o->n_layer, "number of Mamba-1 blocks (0: 4; with --layers: the pattern's length, or 0)"},
        {"--layers", OPT_STR, &o->layers, "layer pattern, e.g. M2,M2,A,F or M2*6,A: M1 Mamba-1, M2 Mamba-2, A causal attention, "
                                          "F MLP, each pre-norm residual (positions are learned when no layer is M1/M2)"},
        {"--m2-d-state", OPT_INT, &o->m2_d_state, "M2 blocks: SSM state size (0: 128)"},
        {"--m2-headdim", OPT_INT, &o->m2_headdim, "M2 blocks: head dimension P, heads = expand * d_model / P (0: 64)"},
        {"--m2-ngroups", OPT_INT, &o->m2_ngroups, "M2 blocks: groups sharing B and C (0: 1)"},
        {"--m2-chunk", OPT_INT, &o->m2_chunk, "M2 blocks: SSD chunk length on the CPU (0: 256; the GPU kernels pick their own)"},
        {"--attn-heads", OPT_INT, &o->attn_heads, "A blocks: attention heads (0: d_model / 64, at least 1)"},
        {"--mlp-mult", OPT_INT, &o->mlp_mult, "F blocks: hidden width = mlp-mult * d_model (0: 4)"},
        {"--max-seq", OPT_INT, &o->max_seq, "patterns without M1/M2 layers: rows of the learned position table, the longest sequence (0: --seq-len)"},
        {"--d-state", OPT_INT, &o->d_state, "M1 blocks: SSM state size N"},
        {"--expand", OPT_INT, &o->expand, "inner width E = expand * D"},
        {"--d-conv", OPT_INT, &o->d_conv, "causal conv width K"},
        {"--dt-rank", OPT_INT, &o->dt_rank, "rank of delta's projection (0: ceil(D/16))"},
        {"--vocab", OPT_INT, &o->vocab_size, "vocabulary size (0: from the data; 50280 with --random-data)"},
        {"--data-dir", OPT_STR, &o->data_dir, "folder with train.bin and val.bin"},
        {"--random-data", OPT_FLAG, &o->random_data, "train on uniform random tokens (benchmark mode)"},
        {"--batch", OPT_INT, &o->batch, "sequences per step B"},
        {"--seq-len", OPT_INT, &o->seq_len, "tokens per sequence T"},
        {"--eval-interval", OPT_INT, &o->eval_interval, "steps between validation evaluations (0: off)"},
        {"--eval-batches", OPT_INT, &o->eval_batches, "validation batches per evaluation"},
        {"--sample-interval", OPT_INT, &o->sample_interval, "steps between samples (0: off)"},
        {"--sample-len", OPT_INT, &o->sample_len, "tokens to generate per sample"},
        {"--prompt", OPT_STR, &o->prompt, "prompt for samples (bytes, vocab 256)"},
        {"--temperature", OPT_FLOAT, &o->temperature, "sampling temperature (0: greedy)"},
        {"--top-k", OPT_INT, &o->top_k, "sample among the k most likely tokens (0: all)"},
        {"--recompute", OPT_FLAG, &o->recompute, "recompute each layer's RMSNorm and conv1d+SiLU outputs in the backward instead of "
                                                  "keeping them (0.81 GiB less at the 130m step in bf16, ~4% slower; the same bits)"},
        {"--gen-weights", OPT_STR, &o->gen_weights, "GPU generation reads the matmul weights of its GEMVs (batch <= 8) in bf16 (half the bytes) or fp32"},
        {"--sample", OPT_INT, &o->sample_only, "load --resume, generate this many tokens, exit"},
        {"--bench-generate", OPT_FLAG, &o->bench_generate, "load --resume, time GPU generation (us/token at batch 1, 8, 64) against the weight-read floor, exit"},
        {"--export-hf", OPT_STR, &o->export_hf, "load --resume, write DIR/model.safetensors + config.json (Hugging Face Mamba), exit"},
        {"--base", OPT_STR, &o->base, "fine-tune this checkpoint (the model's shape comes from it): all weights, or with --lora-rank / --train-also only those on the frozen base"},
        {"--lora-rank", OPT_INT, &o->lora.rank, "LoRA adapters of rank r on --lora-targets (0: off)"},
        {"--lora-alpha", OPT_FLOAT, &o->lora.alpha, "LoRA alpha: the adapter's output is scaled by alpha / r"},
        {"--lora-dropout", OPT_FLOAT, &o->lora.dropout, "dropout on the adapters' inputs while training"},
        {"--lora-targets", OPT_STR, &o->lora.targets, "layers with adapters, comma-separated: in_proj, in_proj_x (its x half), x_proj, dt_proj, out_proj, or all"},
        {"--train-also", OPT_STR, &o->lora.train_also, "with --base: also train these tensors, e.g. A_log,D,conv1d (the rest stays frozen)"},
        {"--adapter", OPT_STR, &o->adapter, "with --base and --sample / --export-hf: this adapter file, merged into the base"},
        {"--also-eval", OPT_STR, &o->also_eval, "also evaluate DIR/val.bin at each evaluation (e.g. the pretraining data: forgetting)"},
    };
    train_options_append(&table, &o->train);
    return table;
}

// impossible values, each with its reason
static void validate(const Options* o) {
    if (o->d_model < 1 || o->n_layer < 0 || o->d_state < 1 || o->expand < 1 || o->d_conv < 1)
        FATAL("--d-model, --n-layer, --d-state, --expand and --d-conv must be >= 1");
    if (o->m2_d_state < 0 || o->m2_headdim < 0 || o->m2_ngroups < 0 || o->m2_chunk < 0 || o->attn_heads < 0 || o->mlp_mult < 0 || o->max_seq < 0)
        FATAL("--m2-d-state, --m2-headdim, --m2-ngroups, --m2-chunk, --attn-heads, --mlp-mult and --max-seq must be >= 0 (0: the default)");
    if (!o->layers.empty()) {
        std::vector<LayerKind> kinds;
        std::string err;
        if (!mamba_parse_layers(o->layers, &kinds, &err)) FATAL("--layers %s: %s", o->layers.c_str(), err.c_str());
        if (o->n_layer > 0 && o->n_layer != (int)kinds.size())
            FATAL("--n-layer %d disagrees with --layers (%zu layers): the pattern sets the depth, drop --n-layer", o->n_layer, kinds.size());
    }
    if (o->dt_rank < 0) FATAL("--dt-rank must be >= 0 (0 picks ceil(d_model/16))");
    if (o->vocab_size < 0 || o->vocab_size > 65536) FATAL("--vocab must be in [0, 65536] (tokens are stored as uint16)");
    if (o->batch < 1 || o->seq_len < 1) FATAL("--batch and --seq-len must be >= 1");
    train_options_validate(&o->train);
    if (o->eval_interval < 0 || o->eval_batches < 1) FATAL("--eval-interval must be >= 0 and --eval-batches >= 1");
    if (o->sample_interval < 0 || o->sample_len < 1 || o->sample_only < 0) FATAL("--sample-interval >= 0, --sample-len >= 1, --sample >= 0");
    if (o->temperature < 0 || o->top_k < 0) FATAL("--temperature and --top-k must be >= 0");
    if (o->gen_weights != "bf16" && o->gen_weights != "fp32") FATAL("--gen-weights must be bf16 or fp32, got '%s'", o->gen_weights.c_str());
    bool inference = o->sample_only > 0 || !o->export_hf.empty() || o->bench_generate;
    if (inference && o->train.resume.empty() && o->adapter.empty())
        FATAL("--sample, --export-hf and --bench-generate need --resume CHECKPOINT (or --base CHECKPOINT --adapter FILE)");
    if (!o->adapter.empty() && (o->base.empty() || !inference))
        FATAL("--adapter FILE is for --sample / --export-hf / --bench-generate with --base CHECKPOINT (to train on, pass --base and --resume FILE)");
    bool peft = o->lora.rank > 0 || !o->lora.train_also.empty();
    if (peft && o->base.empty() && !inference) FATAL("--lora-rank and --train-also fine-tune a trained model: pass --base CHECKPOINT");
    if (o->lora.rank < 0 || !(o->lora.alpha > 0) || o->lora.dropout < 0 || o->lora.dropout >= 1)
        FATAL("--lora-rank must be >= 0, --lora-alpha > 0, --lora-dropout in [0, 1)");
}

// text <-> tokens: bytes when the vocabulary is 256, token ids otherwise. A model on the GPU
// generates there (src/mamba_generate.h: the recurrent step on the device weights, in a CUDA
// graph), unless it has unmerged LoRA adapters (a LoRA run's periodic samples): the CPU step
// folds those into a host copy of the weights, the GPU decoder reads the weights as they are.
// A pattern with M2, A or F layers runs layer by layer, without a graph (see mamba_generate.h).
static std::string generate_text(const MambaModel* m, const Options& o, int n, uint64_t seed) {
    bool bytes = m->cfg.vocab_size == 256;
    std::vector<int> prompt;
    if (bytes) for (unsigned char ch : o.prompt) prompt.push_back(ch);
    if (prompt.empty()) prompt.push_back(bytes ? '\n' : 0);
    std::string text = bytes ? o.prompt : "";
    std::vector<int> tokens;
    bool gpu_decoder = m->on_gpu && !(m->lora.rank > 0 && !m->lora_merged);
    if (gpu_decoder)
        GPU_CALL(tokens = mamba_generate_gpu(m, {prompt}, n, o.temperature, o.top_k, seed, /*use_graph=*/true, DECODE_AUTO,
                                             o.gen_weights == "bf16")[0]);
    else tokens = mamba_generate(m, prompt, n, o.temperature, o.top_k, seed);
    for (int t : tokens) text += bytes ? std::string(1, (char)t) : " " + std::to_string(t);
    return text;
}

#ifdef __CUDACC__
// --bench-generate: µs per decode step (one new token for each sequence) at batch 1, 8, 64,
// plain launches and the CUDA graph, greedy and with --temperature / --top-k, against the
// weight-read floor: the bytes of the weights one step reads / the peak memory bandwidth
static void bench_generate(const MambaModel* m, const Options& o) {
    int bus_bits = 0, clock_khz = 0;
    double bw = gpu_peak_bandwidth(&bus_bits, &clock_khz);
    const MambaConfig& c = m->cfg;
    printf("generation benchmark on %s (cuBLAS path above batch %d in %s): %.2fM parameters\n", device_name(true).c_str(),
           DECODE_FUSED_MAX_ROWS, o.train.matmul == "fp32" ? "FP32" : "TF32", mamba_decoder_weight_bytes(m) / 4 / 1e6);
    printf("peak memory bandwidth %.0f GB/s (bus %d bits, memory clock %d MHz, double data rate)\n", bw / 1e9, bus_bits, clock_khz / 1000);
    printf("us per step = per token of each sequence (median of 7 runs of 64 steps, CUDA events; step + sampling)\n");
    const bool layered = decoder_layered(m);
    if (layered)
        printf("layer pattern %s: the step runs layer by layer (the decode GEMVs for the products up to batch %d, cuBLAS above), in a CUDA graph in the graph columns;\n"
               "the state floor leaves out the KV caches\n", c.layers.c_str(), DECODE_FUSED_MAX_ROWS);
    for (bool half : {false, true}) {
        size_t wbytes = mamba_decoder_weight_bytes(m, half);
        double floor_us = wbytes / bw * 1e6;
        printf("\n%s weights (the fused GEMVs, batch <= %d): %.1f MiB read per step, weight-read floor %.1f us\n",
               half ? "bf16" : "fp32", DECODE_FUSED_MAX_ROWS, wbytes / 1048576.0, floor_us);
        printf("%6s %14s %14s %22s %14s %12s %14s\n", "batch", "plain greedy", "graph greedy", "graph sampled", "tokens/s", "x floor",
               "state floor");
        for (int batch : {1, 8, 64}) {
            double plain = mamba_bench_generate(m, batch, false, 0.0f, 0, 64, 7, DECODE_AUTO, DECODE_PDL_DEFAULT, half);
            double graph = mamba_bench_generate(m, batch, true, 0.0f, 0, 64, 7, DECODE_AUTO, DECODE_PDL_DEFAULT, half);
            double sampled = mamba_bench_generate(m, batch, true, o.temperature, o.top_k, 64, 7, DECODE_AUTO, DECODE_PDL_DEFAULT, half);
            // the recurrent state is read and written once per step too (mamba_decoder_state_bytes);
            // above the fused path's batch the weights are read in fp32
            size_t wb = batch <= DECODE_FUSED_MAX_ROWS ? wbytes : mamba_decoder_weight_bytes(m);
            double state_floor_us = (wb + mamba_decoder_state_bytes(m, batch)) / bw * 1e6;
            printf("%6d %11.1f us %11.1f us %19.1f us %14.0f %11.2fx %11.1f us\n", batch, plain, graph, sampled, batch / (graph * 1e-6),
                   graph / (wb / bw * 1e6), state_floor_us);
        }
    }
    printf("(sampled: temperature %g, top-k %d; tokens/s and x floor: graph greedy; state floor: weights + the state read and written)\n",
           o.temperature, o.top_k);
}
#endif

int main(int argc, char** argv) {
    Options o;
    options_parse(argc, argv, option_table(&o), "usage: train_mamba [options]\n\nTrains a Mamba-1 language model, or a stack of Mamba-1, Mamba-2, attention and MLP blocks "
                  "(--layers), on the GPU if present, else on the CPU reference.\n");
    validate(&o);
    const TrainOptions& t = o.train;
    bool on_gpu = device_pick(t.device);
    train_set_math_mode(on_gpu, t);
    int B = o.batch, T = o.seq_len;

    // --sample / --export-hf / --bench-generate: the config comes from the checkpoint; no gradients, no AdamW moments
    if (o.sample_only > 0 || !o.export_hf.empty() || o.bench_generate) {
        MambaModel m;
        if (!o.adapter.empty()) {  // base + adapter, merged: the step and the export read W only
            // (a file without LoRA keys reads as rank 0; mamba_load_adapter then names its kind)
            LoraConfig lc = lora_config_read(checkpoint_read_info(o.adapter.c_str()).config, "");
            MambaConfig cfg = mamba_config_from_kv(checkpoint_read_info(o.base.c_str()).config, o.base.c_str());
            mamba_build(&m, cfg, 1, 1, on_gpu, /*with_grads=*/false, lc);
            mamba_load_base(&m, o.base.c_str());
            mamba_load_adapter(&m, o.adapter.c_str(), false);
            mamba_lora_merge(&m);
        } else {
            MambaConfig cfg = mamba_config_from_kv(checkpoint_read_info(t.resume.c_str()).config, t.resume.c_str());
            mamba_build(&m, cfg, 1, 1, on_gpu, /*with_grads=*/false);
            checkpoint_load(t.resume.c_str(), "mamba", mamba_config_kv(m.cfg), &m.params, false);
        }
        if (!o.export_hf.empty()) { mamba_export_hf(&m, o.export_hf.c_str()); printf("exported %s to %s\n", t.resume.c_str(), o.export_hf.c_str()); }
        if (o.sample_only > 0) printf("%s\n", generate_text(&m, o, o.sample_only, t.seed).c_str());
        if (o.bench_generate) {
            if (!on_gpu) FATAL("--bench-generate times GPU generation: it needs a CUDA build and a GPU (--device auto or cuda)");
            GPU_CALL(bench_generate(&m, o));
        }
        mamba_free(&m);
        return 0;
    }

    DataLoader train_dl, val_dl, also_dl;
    bool have_val = false, have_also = false;
    if (!o.random_data) {
        std::string train_path = o.data_dir + "/train.bin", val_path = o.data_dir + "/val.bin";
        dataloader_open(&train_dl, train_path.c_str(), B, T);
        dataloader_set_random(&train_dl, t.seed);  // random windows; validation stays sequential
        struct stat sb;
        if (o.eval_interval > 0 && stat(val_path.c_str(), &sb) == 0) {
            int rows = dataloader_open_eval(&val_dl, val_path.c_str(), B, T);
            have_val = rows > 0;
            if (rows < B)
                printf("note: %s holds %zu tokens, %s\n", val_path.c_str(), dataloader_num_tokens(&val_dl),
                       rows ? ("fewer than one batch: validation uses " + std::to_string(rows) + " rows").c_str()
                            : "not one row of --seq-len + 1: validation is off (use a shorter --seq-len)");
        }
        if (!o.also_eval.empty()) {
            std::string also_path = o.also_eval + "/val.bin";
            have_also = dataloader_open_eval(&also_dl, also_path.c_str(), B, T) > 0;
            if (!have_also) FATAL("--also-eval: %s holds not one row of --seq-len + 1 tokens", also_path.c_str());
        }
        int data_vocab = dataloader_vocab(&train_dl);
        if (o.vocab_size == 0) o.vocab_size = data_vocab;
        if (o.vocab_size < data_vocab) FATAL("--vocab %d is smaller than the data's vocab %d", o.vocab_size, data_vocab);
    } else if (o.vocab_size == 0) {
        o.vocab_size = 50280;
    }

    MambaConfig cfg = {o.vocab_size, o.d_model, o.layers.empty() && o.n_layer == 0 ? 4 : o.n_layer, o.d_state, o.d_conv, o.expand,
                       o.dt_rank, 0, o.layers, o.m2_d_state, o.m2_headdim, o.m2_ngroups, o.m2_chunk, o.attn_heads, o.mlp_mult,
                       o.max_seq, 0};
    if (!o.base.empty()) {  // fine-tuning: the shape is the base's
        cfg = mamba_config_from_kv(checkpoint_read_info(o.base.c_str()).config, o.base.c_str());
        if (!o.random_data && cfg.vocab_size < dataloader_vocab(&train_dl))
            FATAL("--base %s has vocab %d, smaller than the data's %d", o.base.c_str(), cfg.vocab_size, dataloader_vocab(&train_dl));
    }
    bool peft = o.lora.rank > 0 || !o.lora.train_also.empty();
    double mem_before_model = device_memory_mib(on_gpu);
    MambaModel m;
    g_mamba_recompute = o.recompute;
    mamba_build(&m, cfg, B, T, on_gpu, true, o.lora);
    mamba_init_params(&m, t.seed);
    cfg = m.cfg;
    TrainState st = {0, 0, 0};
    Rng data_rng; rng_seed(&data_rng, t.seed + 1);
    if (peft) mamba_load_base(&m, o.base.c_str());  // adapters stay at their init (B = 0) unless resumed
    else if (!o.base.empty() && t.resume.empty()) checkpoint_load(o.base.c_str(), "mamba", mamba_config_kv(cfg), &m.params, false);
    if (!t.resume.empty()) {
        st = peft ? mamba_load_adapter(&m, t.resume.c_str(), true) : checkpoint_load(t.resume.c_str(), "mamba", mamba_config_kv(cfg), &m.params);
        data_rng.state = st.rng;
        if (!o.random_data) dataloader_seek(&train_dl, st.data_pos);
        printf("resumed from %s at step %d\n", t.resume.c_str(), st.step);
    }
    if (mamba_is_pure_m1(cfg))
        printf("model: vocab %d, d_model %d, n_layer %d, d_state %d, d_conv %d, expand %d (d_inner %d), dt_rank %d: %.2fM parameters\n",
               cfg.vocab_size, cfg.d_model, cfg.n_layer, cfg.d_state, cfg.d_conv, cfg.expand, cfg.d_inner, cfg.dt_rank, m.params.num_params / 1e6);
    else
        printf("model: vocab %d, d_model %d, layers %s: %.2fM parameters%s%s%s%s\n", cfg.vocab_size, cfg.d_model, cfg.layers.c_str(),
               m.params.num_params / 1e6, mamba_has_kind(cfg, LAYER_M1) ? (", M1: d_state " + std::to_string(cfg.d_state) + ", dt_rank " + std::to_string(cfg.dt_rank)).c_str() : "",
               mamba_has_kind(cfg, LAYER_M2) ? (", M2: d_state " + std::to_string(cfg.m2_d_state) + ", headdim " + std::to_string(cfg.m2_headdim) +
                                                " (" + std::to_string(m.m2cfg.nheads) + " heads), ngroups " + std::to_string(cfg.m2_ngroups)).c_str() : "",
               mamba_has_kind(cfg, LAYER_ATTN) ? (", A: " + std::to_string(cfg.attn_heads) + " heads").c_str() : "",
               cfg.pos_embed ? (", learned positions (" + std::to_string(cfg.max_seq) + ")").c_str() : "");
    printf("data: %s, batch %d x %d tokens; device: %s%s\n", o.random_data ? "random tokens" : o.data_dir.c_str(), B, T,
           device_name(on_gpu).c_str(), on_gpu ? (" (" + t.matmul + " matmuls)").c_str() : "");
    // where the memory goes: each layer's activations (by kind), then what the layers share
    double layers_mib = 0;
    std::string per_kind;
    std::vector<LayerKind> kinds = mamba_layer_kinds(cfg);
    for (int k = 0; k < LAYER_NUM_KINDS; k++) {
        int count = 0; double mib = 0;
        for (int l = 0; l < cfg.n_layer; l++)
            if (kinds[l] == k) { count++; mib = m.layer_act_bytes[l] / 1048576.0; }
        if (count) per_kind += (per_kind.empty() ? "" : " + ") + std::to_string(count) + " " + LAYER_KIND_NAMES[k] + " x " +
                               std::to_string(mib).substr(0, 6) + " MiB";
        layers_mib += count * mib;
    }
    printf("memory: parameters %.1f MiB, grads+AdamW %.1f MiB, activations %.1f MiB (%s + %.1f MiB shared: head chunk of %d rows, "
           "%s), backward scratch %.1f MiB\n", params_bytes(&m.params) / 1048576.0,
           params_grad_and_moment_bytes(&m.params) / 1048576.0, m.acts_bytes / 1048576.0, per_kind.c_str(),
           m.acts_bytes / 1048576.0 - layers_mib, m.chunk_rows,
           m.recompute ? "recomputed norms, conv outputs, GELUs" : "recomputed GELUs; norms and conv outputs kept per layer",
           m.scratch_bytes / 1048576.0);
    if (!o.base.empty())
        printf("fine-tuning %s: %s, %zu of %zu parameters trainable (%.2f%%)\n", o.base.c_str(),
               peft ? ("LoRA rank " + std::to_string(o.lora.rank) + " on " + o.lora.targets +
                       (o.lora.train_also.empty() ? "" : " + " + o.lora.train_also)).c_str() : "all weights",
               m.params.num_trainable, m.params.num_params, 100.0 * m.params.num_trainable / m.params.num_params);

    Logger log; logger_open(&log, t.log_path, t.resume.empty() ? -1 : st.step);
    std::vector<int> inputs((size_t)B * T), targets((size_t)B * T);

    auto val_loss = [&](DataLoader* dl) {
        dataloader_reset(dl);
        int n = std::max(1, std::min(o.eval_batches, (int)(dataloader_num_tokens(dl) / ((size_t)dl->B * T))));
        double sum = 0;
        for (int i = 0; i < n; i++) {
            dataloader_next_batch(dl, inputs.data(), targets.data());
            sum += mamba_forward(&m, inputs.data(), targets.data(), dl->B, T);
        }
        return sum / n;
    };
    double last_val = NAN, last_also = NAN;
    auto evaluate = [&](int step) {
        mamba_set_training(&m, false, 0);
        last_val = val_loss(&val_dl);
        JsonLine line = JsonLine().integer("step", step).num("val_loss", last_val);
        if (have_also) { last_also = val_loss(&also_dl); line.num("also_val_loss", last_also); }
        printf("step %5d | val loss %.4f", step, last_val);
        if (have_also) printf(" | %s val loss %.4f", o.also_eval.c_str(), last_also);
        printf("\n");
        logger_write(&log, line);
    };
    auto save = [&](int step) {
        if (t.checkpoint.empty()) return;
        TrainState cs = {step, o.random_data ? 0 : dataloader_position(&train_dl), data_rng.state};
        if (peft) mamba_save_adapter(&m, t.checkpoint.c_str(), cs);  // the trainable tensors only
        else checkpoint_save(t.checkpoint.c_str(), "mamba", mamba_config_kv(cfg), &m.params, cs);
        printf("saved %s %s (step %d)\n", peft ? "adapter" : "checkpoint", t.checkpoint.c_str(), step);
    };

    double t_start = wall_ms(), step_ms_sum = 0, peak_mib = 0;
    int timed_steps = 0, step = st.step;
    for (; step < t.steps; step++) {
        if (train_should_stop(t, step, wall_ms() - t_start)) break;
        if (have_val && step % o.eval_interval == 0) evaluate(step);
        if (o.sample_interval > 0 && step > 0 && step % o.sample_interval == 0) {
            std::string text = generate_text(&m, o, o.sample_len, t.seed + step);
            printf("---- sample at step %d ----\n%s\n----\n", step, text.c_str());
            logger_write(&log, JsonLine().integer("step", step).text("sample", text));
        }
        g_prof.on = t.profile > 0 && step >= st.step + 1 && step < st.step + 1 + t.profile;  // skip the warm-up step
        double t0 = wall_ms();
        if (o.random_data) {  // independent uniform tokens: the loss stays near log(V), only speed matters
            for (int& t : inputs) t = rng_u32(&data_rng) % cfg.vocab_size;
            for (int& t : targets) t = rng_u32(&data_rng) % cfg.vocab_size;
        } else {
            dataloader_next_batch(&train_dl, inputs.data(), targets.data());
        }
        mamba_set_training(&m, true, t.seed * 1000003ull + step);  // adapter dropout: a new mask per step
        // the loss comes from the backward's head pass (a forward without the head: mamba_forward_train);
        // a loss or gradient that is not finite stops the run in optimizer_step, before AdamW
        float loss;
        {
            LinearWeightsFixed fixed;  // no weight changes until the optimizer: one bf16 copy of each weight a step
            mamba_forward_train(&m, inputs.data(), targets.data(), B, T);
            mamba_zero_grad(&m);
            loss = mamba_backward(&m);
        }
        StepStats ss = optimizer_step(&m.params, t, step, loss, &log);
        double ms = wall_ms() - t0, mib = device_memory_mib(on_gpu);
        if (step > st.step) { step_ms_sum += ms; timed_steps++; }  // the first step is warm-up
        peak_mib = std::max(peak_mib, mib);
        double avg = timed_steps ? step_ms_sum / timed_steps : ms;
        if (step % t.log_every == 0 || step == t.steps - 1) {
            printf("step %5d/%d | loss %.4f | lr %.2e | norm %.3f | %.1f ms | %.0f tok/s | %s | mem %.0f MiB\n", step + 1, t.steps, loss,
                   ss.lr, ss.grad_norm, ms, B * T / (avg / 1000.0), eta_string(t.steps - step - 1, avg).c_str(), mib);
            fflush(stdout);
        }
        logger_write(&log, JsonLine().integer("step", step + 1).num("loss", loss).num("lr", ss.lr).num("grad_norm", ss.grad_norm)
                               .num("step_ms", ms).num("tok_per_s", B * T / (ms / 1000.0)).num("mem_mib", mib));
        if (t.checkpoint_interval > 0 && (step + 1) % t.checkpoint_interval == 0) save(step + 1);
    }
    if (have_val) evaluate(step);
    save(step);
    if (timed_steps > 0) {
        double ms = step_ms_sum / timed_steps;
        printf("summary: %.1f ms/step, %.0f tokens/s, peak memory %.0f MiB (%.0f MiB above the process before the model)\n", ms,
               B * T / (ms / 1000.0), peak_mib, peak_mib - mem_before_model);
        logger_write(&log, JsonLine().text("summary", "run").num("step_ms", ms).num("tok_per_s", B * T / (ms / 1000.0))
                               .num("peak_mib", peak_mib).num("model_mib", peak_mib - mem_before_model)
                               .integer("params", (long long)m.params.num_params).integer("trainable", (long long)m.params.num_trainable)
                               .integer("optimizer_bytes", (long long)(2 * m.params.num_trainable * sizeof(float)))
                               .num("final_val_loss", last_val).num("final_also_val_loss", last_also));
    }
    if (t.profile > 0) prof_print(std::min(t.profile, std::max(0, step - st.step - 1)));
    if (o.sample_interval > 0) printf("---- final sample ----\n%s\n----\n", generate_text(&m, o, o.sample_len, t.seed + step).c_str());
    logger_close(&log);
    if (!o.random_data) { dataloader_free(&train_dl); if (have_val) dataloader_free(&val_dl); }
    mamba_free(&m);
    return 0;
}
