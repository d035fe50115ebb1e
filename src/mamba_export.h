// mamba_export.h: a trained Mamba in Hugging Face's format, so that
//   transformers.MambaForCausalLM.from_pretrained(DIR)
// loads it:
//   DIR/model.safetensors   float32 tensors under HF's names (below)
//   DIR/config.json         HF's MambaConfig keys
//
//   ours                           Hugging Face                                  shape
//   embedding.weight               backbone.embeddings.weight                    (V, D)
//   layers.{l}.norm.weight         backbone.layers.{l}.norm.weight               (D)
//   layers.{l}.in_proj.weight      backbone.layers.{l}.mixer.in_proj.weight      (2E, D) rows [x | z]
//   layers.{l}.conv1d.weight       backbone.layers.{l}.mixer.conv1d.weight       (E, K) -> (E, 1, K)
//   layers.{l}.conv1d.bias         backbone.layers.{l}.mixer.conv1d.bias         (E)
//   layers.{l}.x_proj.weight       backbone.layers.{l}.mixer.x_proj.weight       (R+2N, E) rows [dt | B | C]
//   layers.{l}.dt_proj.weight      backbone.layers.{l}.mixer.dt_proj.weight      (E, R)
//   layers.{l}.dt_proj.bias        backbone.layers.{l}.mixer.dt_proj.bias        (E)
//   layers.{l}.A_log               backbone.layers.{l}.mixer.A_log               (E, N)
//   layers.{l}.D                   backbone.layers.{l}.mixer.D                   (E)
//   layers.{l}.out_proj.weight     backbone.layers.{l}.mixer.out_proj.weight     (D, E)
//   norm_f.weight                  backbone.norm_f.weight                        (D)
//
// The math is the same on both sides: HF's conv1d is nn.Conv1d(groups=E,
// padding=K-1) cut to the first T outputs (our causal conv, weight (E, 1, K));
// its dt_proj is a Linear with bias, whose output goes through softplus (ours
// adds the bias inside the scan's softplus: the same sum); A = -exp(A_log);
// RMSNorm with eps 1e-5 (RMSNORM_EPS).
//
// lm_head.weight is not written: the head is tied to the embedding
// ("tie_word_embeddings": true), transformers ties lm_head to
// backbone.embeddings.weight on load and does not count a tied key as
// missing, and its own save_pretrained leaves the tied copy out the same way
// (safetensors cannot store two names for one tensor).
#pragma once
#include <algorithm>
#include <cerrno>
#include <string>
#include <sys/stat.h>
#include <vector>
#include "common.h"
#include "params.h"
#include "mamba_model.h"
#include "safetensors.h"

// mkdir -p: creates dir and any missing parents; FATAL if something in the way is not a directory
static void make_directories(const std::string& dir) {
    if (dir.empty()) FATAL("empty directory name");
    for (size_t i = 1; i <= dir.size(); i++) {
        if (i < dir.size() && dir[i] != '/') continue;
        std::string prefix = dir.substr(0, i);
        if (mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST)
            FATAL("cannot create directory %s: %s", prefix.c_str(), strerror(errno));
    }
    struct stat st;
    if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) FATAL("%s exists and is not a directory", dir.c_str());
}

// one tensor of the export: our name and shape, HF's name and shape (the same numbers)
typedef struct {
    std::string ours, hf;
    std::vector<int64_t> shape, hf_shape;
} HfTensorName;

// every tensor of a Mamba with this config, in our declaration order
static std::vector<HfTensorName> mamba_hf_tensor_names(const MambaConfig& c) {
    int64_t V = c.vocab_size, D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank;
    std::vector<HfTensorName> names;
    names.push_back({"embedding.weight", "backbone.embeddings.weight", {V, D}, {V, D}});
    for (int l = 0; l < c.n_layer; l++) {
        std::string ours = "layers." + std::to_string(l) + ".", hf = "backbone.layers." + std::to_string(l) + ".";
        std::string mixer = hf + "mixer.";
        names.push_back({ours + "norm.weight", hf + "norm.weight", {D}, {D}});
        names.push_back({ours + "in_proj.weight", mixer + "in_proj.weight", {2 * E, D}, {2 * E, D}});
        names.push_back({ours + "conv1d.weight", mixer + "conv1d.weight", {E, K}, {E, 1, K}});  // nn.Conv1d: (out, in/groups, K)
        names.push_back({ours + "conv1d.bias", mixer + "conv1d.bias", {E}, {E}});
        names.push_back({ours + "x_proj.weight", mixer + "x_proj.weight", {R + 2 * N, E}, {R + 2 * N, E}});
        names.push_back({ours + "dt_proj.weight", mixer + "dt_proj.weight", {E, R}, {E, R}});
        names.push_back({ours + "dt_proj.bias", mixer + "dt_proj.bias", {E}, {E}});
        names.push_back({ours + "A_log", mixer + "A_log", {E, N}, {E, N}});
        names.push_back({ours + "D", mixer + "D", {E}, {E}});
        names.push_back({ours + "out_proj.weight", mixer + "out_proj.weight", {D, E}, {D, E}});
    }
    names.push_back({"norm_f.weight", "backbone.norm_f.weight", {D}, {D}});
    return names;
}

// HF's MambaConfig. Keys MambaConfig derives or only uses to initialise
// weights are written with the values that describe this model or HF's
// defaults, so the file is complete without depending on a transformers version.
static std::string mamba_hf_config_json(const MambaConfig& c) {
    char eps[32];
    snprintf(eps, sizeof eps, "%g", (double)RMSNORM_EPS);  // "1e-05", not the float's 9.99999975e-06
    auto num = [](int v) { return std::to_string(v); };
    std::vector<std::pair<std::string, std::string>> kv = {
        {"architectures", "[\"MambaForCausalLM\"]"},
        {"model_type", "\"mamba\""},
        {"vocab_size", num(c.vocab_size)},
        {"hidden_size", num(c.d_model)},
        {"state_size", num(c.d_state)},
        {"num_hidden_layers", num(c.n_layer)},
        {"expand", num(c.expand)},
        {"conv_kernel", num(c.d_conv)},
        {"intermediate_size", num(c.d_inner)},  // HF recomputes it as expand * hidden_size: the same
        {"time_step_rank", num(c.dt_rank)},
        {"use_bias", "false"},                  // in_proj / out_proj have no bias
        {"use_conv_bias", "true"},
        {"hidden_act", "\"silu\""},
        {"layer_norm_epsilon", eps},
        {"residual_in_fp32", "true"},
        {"tie_word_embeddings", "true"},
        {"pad_token_id", "0"},
        {"bos_token_id", "0"},
        {"eos_token_id", "0"},
        {"torch_dtype", "\"float32\""},
        {"use_cache", "true"},
        // initialisation only (HF's defaults; ours draws dt in the same [1e-3, 0.1]).
        // rescale_prenorm_residual stays false: true would make HF divide out_proj
        // by sqrt(n_layer) whenever it (re)initialises a mixer, a risk for loaded weights
        {"initializer_range", "0.1"},
        {"time_step_scale", "1.0"},
        {"time_step_min", "0.001"},
        {"time_step_max", "0.1"},
        {"time_step_init_scheme", "\"random\""},
        {"time_step_floor", "0.0001"},
        {"rescale_prenorm_residual", "false"},
        {"use_mambapy", "false"},
    };
    std::string s = "{\n";
    for (size_t i = 0; i < kv.size(); i++)
        s += "  \"" + kv[i].first + "\": " + kv[i].second + (i + 1 < kv.size() ? ",\n" : "\n");
    return s + "}\n";
}

// the export from a parameter store (host or GPU) laid out as the model
// declares it: every tensor must be there with its shape, and nothing else
static void mamba_export_hf_store(const ParamStore* ps, const MambaConfig& cfg, const char* dir) {
    if (!mamba_is_pure_m1(cfg))
        FATAL("export: Hugging Face's MambaForCausalLM holds Mamba-1 layers only; this model's pattern is %s", cfg.layers.c_str());
    std::vector<HfTensorName> names = mamba_hf_tensor_names(cfg);
    std::vector<int> index;
    for (const HfTensorName& n : names) {
        int i = params_find(ps, n.ours);
        if (i < 0) FATAL("export: the model has no tensor %s", n.ours.c_str());
        const ParamTensor& t = ps->tensors[i];
        bool same = t.ndim == (int)n.shape.size();
        for (int d = 0; same && d < t.ndim; d++) same = t.shape[d] == n.shape[d];
        if (!same)
            FATAL("export: tensor %s has shape %s, the config says %s", n.ours.c_str(), shape_string(t.shape, t.ndim).c_str(),
                  safetensors_shape_string(n.shape).c_str());
        index.push_back(i);
    }
    if (ps->tensors.size() != names.size())
        for (const ParamTensor& t : ps->tensors)
            if (std::find_if(names.begin(), names.end(), [&](const HfTensorName& n) { return n.ours == t.name; }) == names.end())
                FATAL("export: tensor %s has no place in Hugging Face's Mamba", t.name.c_str());

    std::vector<float> host(ps->num_params);
    backend_copy(ps->on_gpu, host.data(), ps->params, ps->num_params * sizeof(float), false);
    std::vector<SafeTensor> tensors;
    for (size_t k = 0; k < names.size(); k++)
        tensors.push_back({names[k].hf, names[k].hf_shape, host.data() + ps->tensors[index[k]].offset});

    make_directories(dir);
    std::string base = std::string(dir) + "/";
    safetensors_write((base + "model.safetensors").c_str(), tensors);
    write_text_file_atomic(base + "config.json", mamba_hf_config_json(cfg));
}

static void mamba_export_hf(const MambaModel* m, const char* dir) {
    mamba_export_hf_store(&m->params, m->cfg, dir);
}
