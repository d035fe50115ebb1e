// checkpoint.h: self-describing checkpoints for any model built on a ParamStore.
//
// File layout (little-endian):
//   [0, 4)    int32  magic 20261124
//   [4, 8)    int32  version 2
//   [8, 16)   uint64 H: bytes of the header text that follows
//   [16, 16+H)       header: UTF-8, one "key=value" per line, in this order
//                      kind=mamba                          which model
//                      config.<key>=<value>                the model's config, one line per key
//                      train.step=1200                     train state: optimisation steps done,
//                      train.data_pos=1200                 the data loader's position,
//                      train.rng=123456789                 the trainer's RNG state
//                      tensor=<role> <name> <dtype> <offset> <shape>
//                          role: param | adam_m | adam_v; offset: bytes from the data start;
//                          shape like 1536x16
//   then zero padding to a multiple of 64 bytes, then the data: every tensor's
//   bytes at its offset.
//
// Loading goes by name: every parameter of the model must be in the file with
// its shape, the kind and every config key must match, and any difference is
// an error that names it. Saving writes PATH.tmp, fsyncs it, renames it over
// PATH and fsyncs the directory, so an interrupted save (a kill, a full disk,
// a power cut) leaves the previous checkpoint whole.
//
// Version 1 (a fixed int32 header written by the first train_mamba) is not
// read: such checkpoints must be retrained (the README says so).
#pragma once
#include <cerrno>
#include <fcntl.h>
#include <functional>
#include <map>
#include <string>
#include <unistd.h>
#include <utility>
#include <vector>
#include "common.h"
#include "params.h"

#define CKPT_MAGIC 20261124
#define CKPT_VERSION 2
#define CKPT_ALIGN 64

typedef std::vector<std::pair<std::string, std::string>> ConfigKV;  // in a fixed order

typedef struct {
    int step;           // optimisation steps done
    uint64_t data_pos;  // data loader position (dataloader_position)
    uint64_t rng;       // the trainer's RNG state
} TrainState;

// what the header says; tensors map "role name" to (dtype, offset, shape)
typedef struct {
    std::string kind;
    ConfigKV config;
    TrainState train;
    struct Entry { std::string role, name, dtype, shape; uint64_t offset, bytes; };
    std::vector<Entry> tensors;
    uint64_t data_start;  // file offset of the data
    uint64_t file_size;
} CheckpointInfo;

static std::string ckpt_shape(const ParamTensor& t) { return shape_string(t.shape, t.ndim); }

// ---------------------------------------------------------------------------
// saving

static bool ckpt_write_all(FILE* f, const void* p, size_t bytes) { return bytes == 0 || fwrite(p, 1, bytes, f) == bytes; }

static void fsync_directory_of(const std::string& path) {
    size_t slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    int fd = open(dir.c_str(), O_RDONLY);
    if (fd >= 0) { fsync(fd); close(fd); }
}

// which tensors a file holds or a load reads: all of them, or a part (a LoRA
// adapter file holds the trainable tensors only; its base is every other one)
typedef std::function<bool(const ParamTensor&)> TensorFilter;

// with_optimizer: also store AdamW's moments (needed to resume training exactly).
// which: the tensors to store (nullptr: all)
static void checkpoint_save(const char* path, const char* kind, const ConfigKV& config, const ParamStore* ps,
                            const TrainState& st, bool with_optimizer = true, const TensorFilter& which = nullptr) {
    with_optimizer = with_optimizer && ps->with_grads;
    // header text and the data layout
    std::string h;
    h += std::string("kind=") + kind + "\n";
    for (auto& kv : config) h += "config." + kv.first + "=" + kv.second + "\n";
    h += "train.step=" + std::to_string(st.step) + "\n";
    h += "train.data_pos=" + std::to_string(st.data_pos) + "\n";
    h += "train.rng=" + std::to_string(st.rng) + "\n";
    struct Piece { const float* src; size_t n; };
    std::vector<Piece> pieces;
    uint64_t off = 0;
    const char* roles[] = {"param", "adam_m", "adam_v"};
    for (int r = 0; r < (with_optimizer ? 3 : 1); r++) {
        for (const ParamTensor& t : ps->tensors) {
            if (r > 0 && !t.trainable) continue;  // frozen tensors have no moments
            if (which && !which(t)) continue;
            const float* base = r == 0 ? ps->params : (r == 1 ? ps->adam_m : ps->adam_v);
            h += std::string("tensor=") + roles[r] + " " + t.name + " f32 " + std::to_string(off) + " " + ckpt_shape(t) + "\n";
            pieces.push_back({base + t.offset, t.numel});
            off += t.numel * sizeof(float);
        }
    }
    uint64_t H = h.size();
    uint64_t data_start = (16 + H + CKPT_ALIGN - 1) / CKPT_ALIGN * CKPT_ALIGN;

    std::string tmp = std::string(path) + ".tmp";
    FILE* f = fopen(tmp.c_str(), "wb");
    if (!f) FATAL("cannot write checkpoint %s: %s", tmp.c_str(), strerror(errno));
    int32_t magic_version[2] = {CKPT_MAGIC, CKPT_VERSION};
    bool ok = ckpt_write_all(f, magic_version, 8) && ckpt_write_all(f, &H, 8) && ckpt_write_all(f, h.data(), H);
    std::vector<char> pad(data_start - 16 - H, 0);
    ok = ok && ckpt_write_all(f, pad.data(), pad.size());
    std::vector<float> host;
    for (const Piece& p : pieces) {
        host.resize(p.n);
        backend_copy(ps->on_gpu, host.data(), p.src, p.n * sizeof(float), false);
        ok = ok && ckpt_write_all(f, host.data(), p.n * sizeof(float));
        if (!ok) break;
    }
    int err = errno;
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;  // the bytes are on disk before the rename
    if (!ok) err = errno;
    ok = (fclose(f) == 0) && ok;
    if (!ok) {
        remove(tmp.c_str());
        FATAL("failed writing checkpoint %s: %s (disk full?); the previous checkpoint %s is untouched",
              tmp.c_str(), strerror(err), path);
    }
    if (rename(tmp.c_str(), path) != 0) FATAL("cannot rename %s to %s: %s", tmp.c_str(), path, strerror(errno));
    fsync_directory_of(path);  // the rename itself is durable
}

// ---------------------------------------------------------------------------
// reading

static bool ckpt_parse_u64(const std::string& s, uint64_t* v) {
    if (s.empty()) return false;
    char* end = nullptr; errno = 0;
    unsigned long long x = strtoull(s.c_str(), &end, 10);
    if (*end || errno) return false;
    *v = x; return true;
}

// reads and validates the header (not the tensors); any damage is a clear error
static CheckpointInfo checkpoint_read_info(const char* path) {
    CheckpointInfo info;
    FILE* f = fopen(path, "rb");
    if (!f) FATAL("cannot open checkpoint %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END); long size = ftell(f); fseek(f, 0, SEEK_SET);
    info.file_size = size < 0 ? 0 : (uint64_t)size;
    int32_t mv[2]; uint64_t H = 0;
    if (fread(mv, 4, 2, f) != 2) FATAL("checkpoint %s is truncated (no complete header)", path);
    if (mv[0] != CKPT_MAGIC) FATAL("%s is not a checkpoint (bad magic %d)", path, mv[0]);
    if (mv[1] == 1)
        FATAL("checkpoint %s has version 1 (the first train_mamba's format); this program reads version %d: "
              "retrain the model", path, CKPT_VERSION);
    if (mv[1] != CKPT_VERSION) FATAL("checkpoint %s has version %d, this program reads %d", path, mv[1], CKPT_VERSION);
    if (fread(&H, 8, 1, f) != 1 || H > info.file_size) FATAL("checkpoint %s is truncated (no complete header)", path);
    std::string h(H, '\0');
    if (H > 0 && fread(&h[0], 1, H, f) != H) FATAL("checkpoint %s is truncated (no complete header)", path);
    fclose(f);
    info.data_start = (16 + H + CKPT_ALIGN - 1) / CKPT_ALIGN * CKPT_ALIGN;
    info.train = {0, 0, 0};
    size_t pos = 0; int line_no = 0;
    while (pos < h.size()) {
        size_t nl = h.find('\n', pos);
        if (nl == std::string::npos) nl = h.size();
        std::string line = h.substr(pos, nl - pos);
        pos = nl + 1; line_no++;
        size_t eq = line.find('=');
        if (eq == std::string::npos) FATAL("checkpoint %s: header line %d has no '=': %s", path, line_no, line.c_str());
        std::string key = line.substr(0, eq), val = line.substr(eq + 1);
        uint64_t u = 0;
        if (key == "kind") info.kind = val;
        else if (key.compare(0, 7, "config.") == 0) info.config.push_back({key.substr(7), val});
        else if (key == "train.step" && ckpt_parse_u64(val, &u)) info.train.step = (int)u;
        else if (key == "train.data_pos" && ckpt_parse_u64(val, &u)) info.train.data_pos = u;
        else if (key == "train.rng" && ckpt_parse_u64(val, &u)) info.train.rng = u;
        else if (key == "tensor") {
            CheckpointInfo::Entry e;
            char role[16], name[256], dtype[8], shape[64];
            unsigned long long offset;
            if (sscanf(val.c_str(), "%15s %255s %7s %llu %63s", role, name, dtype, &offset, shape) != 5)
                FATAL("checkpoint %s: malformed tensor line %d: %s", path, line_no, val.c_str());
            e.role = role; e.name = name; e.dtype = dtype; e.shape = shape; e.offset = offset;
            uint64_t numel = 1;
            for (const char* s = shape; *s;) { numel *= strtoull(s, (char**)&s, 10); if (*s == 'x') s++; else if (*s) break; }
            e.bytes = numel * (e.dtype == "bf16" ? 2 : 4);
            if (info.data_start + e.offset + e.bytes > info.file_size)
                FATAL("checkpoint %s is truncated (tensor %s %s ends past the end of the file)", path, role, name);
            info.tensors.push_back(e);
        } else FATAL("checkpoint %s: unknown or malformed header line %d: %s", path, line_no, line.c_str());
    }
    if (info.kind.empty()) FATAL("checkpoint %s has no kind= line", path);
    return info;
}

static const std::string* config_get(const ConfigKV& kv, const std::string& key) {
    for (auto& p : kv) if (p.first == key) return &p.second;
    return nullptr;
}

// reads integer config values back: names[i] (a model's own config_kv, for its keys and
// order) -> *fields[i]; a missing key or a value that is not an integer is a clear error
static void config_read_ints(const ConfigKV& kv, const ConfigKV& names, int* const* fields, const char* path) {
    for (size_t i = 0; i < names.size(); i++) {
        const std::string* v = config_get(kv, names[i].first);
        if (!v) FATAL("checkpoint %s has no config key %s", path, names[i].first.c_str());
        char* end = nullptr;
        long x = strtol(v->c_str(), &end, 10);
        if (v->empty() || *end) FATAL("checkpoint %s: config %s=%s is not an integer", path, names[i].first.c_str(), v->c_str());
        *fields[i] = (int)x;
    }
}

// the run's config must equal the checkpoint's, key by key
static void checkpoint_check_config(const char* path, const CheckpointInfo& info, const char* kind, const ConfigKV& config) {
    if (info.kind != kind)
        FATAL("checkpoint %s holds a %s model, this program trains %s", path, info.kind.c_str(), kind);
    for (auto& kv : config) {
        const std::string* theirs = config_get(info.config, kv.first);
        if (!theirs) FATAL("checkpoint %s has no config key %s (this run has %s=%s)", path, kv.first.c_str(), kv.first.c_str(), kv.second.c_str());
        if (*theirs != kv.second)
            FATAL("checkpoint %s was trained with %s=%s but this run has %s=%s; pass the same model flags to resume",
                  path, kv.first.c_str(), theirs->c_str(), kv.first.c_str(), kv.second.c_str());
    }
    for (auto& kv : info.config)
        if (!config_get(config, kv.first))
            FATAL("checkpoint %s has config key %s=%s that this program does not know", path, kv.first.c_str(), kv.second.c_str());
}

// loads every parameter (and, when with_optimizer and the store has them, the
// AdamW moments) by name; returns the train state. Config and kind are checked.
// which: the model's tensors to read (nullptr: all); each must be in the file,
// and the file may hold no tensor the model lacks.
static TrainState checkpoint_load(const char* path, const char* kind, const ConfigKV& config, ParamStore* ps,
                                  bool with_optimizer = true, const TensorFilter& which = nullptr) {
    CheckpointInfo info = checkpoint_read_info(path);
    checkpoint_check_config(path, info, kind, config);
    std::map<std::string, const CheckpointInfo::Entry*> by_key;
    for (auto& e : info.tensors) by_key[e.role + " " + e.name] = &e;
    for (auto& e : info.tensors)
        if (e.role == "param" && params_find(ps, e.name) < 0)
            FATAL("checkpoint %s has a tensor %s that the model does not have", path, e.name.c_str());
    with_optimizer = with_optimizer && ps->with_grads;
    FILE* f = fopen(path, "rb");
    if (!f) FATAL("cannot open checkpoint %s: %s", path, strerror(errno));
    std::vector<float> host;
    const char* roles[] = {"param", "adam_m", "adam_v"};
    for (int r = 0; r < (with_optimizer ? 3 : 1); r++) {
        for (const ParamTensor& t : ps->tensors) {
            if (r > 0 && !t.trainable) continue;
            if (which && !which(t)) continue;
            auto it = by_key.find(std::string(roles[r]) + " " + t.name);
            if (it == by_key.end()) {
                if (r == 0) FATAL("checkpoint %s has no tensor %s", path, t.name.c_str());
                FATAL("checkpoint %s has no optimizer state (%s) for %s: it cannot resume training", path, roles[r], t.name.c_str());
            }
            const CheckpointInfo::Entry& e = *it->second;
            if (e.shape != ckpt_shape(t))
                FATAL("checkpoint %s: tensor %s has shape %s, the model's is %s", path, t.name.c_str(), e.shape.c_str(), ckpt_shape(t).c_str());
            if (e.dtype != "f32") FATAL("checkpoint %s: tensor %s is %s; this program reads f32", path, t.name.c_str(), e.dtype.c_str());
            host.resize(t.numel);
            if (fseek(f, (long)(info.data_start + e.offset), SEEK_SET) != 0 || fread(host.data(), sizeof(float), t.numel, f) != t.numel)
                FATAL("checkpoint %s is truncated (reading %s %s)", path, roles[r], t.name.c_str());
            float* base = r == 0 ? ps->params : (r == 1 ? ps->adam_m : ps->adam_v);
            backend_copy(ps->on_gpu, base + t.offset, host.data(), t.numel * sizeof(float), true);
        }
    }
    fclose(f);
    return info.train;
}
