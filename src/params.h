// params.h: the parameter store every model builds on, and the activation arena.
//
// A model declares its tensors by name ("layers.3.in_proj.weight", with an
// optional prefix such as "vision." or "lm."), each with a shape, a weight-decay
// flag and a trainable flag; params_allocate then lays them out in ONE buffer
// per role:
//
//   params  : every tensor                 [trainable+decay | trainable, no decay | frozen]
//   grads   : trainable tensors only        [trainable+decay | trainable, no decay]
//   adam_m  : same layout as grads
//   adam_v  : same layout as grads
//
// so a frozen tensor (a ViT kept fixed, a LoRA base) costs no gradient and no
// optimizer memory, and AdamW is two calls over two contiguous ranges (with and
// without decay). The element i of grads/adam_m/adam_v belongs to params[i].
//
// Parameters are fp32 master weights (dtype is recorded for the checkpoint, so
// a bf16 copy can be added without changing the file format).
#pragma once
#include <string>
#include <vector>
#include "common.h"
#include "adamw.h"

typedef enum { DTYPE_F32 = 0, DTYPE_BF16 = 1 } DataType;
static inline const char* dtype_name(DataType t) { return t == DTYPE_BF16 ? "bf16" : "f32"; }
static inline size_t dtype_size(DataType t) { return t == DTYPE_BF16 ? 2 : 4; }

#define PARAM_MAX_DIMS 4
#define PARAM_FROZEN ((size_t)-1)

typedef struct {
    std::string name;
    int ndim;
    int shape[PARAM_MAX_DIMS];
    size_t numel;
    DataType dtype;
    bool decay;         // AdamW weight decay applies (matrices; not norms, biases, A_log, D)
    bool trainable;     // false: no gradient, no optimizer state
    size_t offset;      // elements into params (and into grads/adam_m/adam_v when trainable)
} ParamTensor;

typedef struct {
    std::vector<ParamTensor> tensors;  // in declaration order (the checkpoint's order)
    std::string prefix;                // prepended to every name declared next
    bool on_gpu;
    bool with_grads;                   // false: inference only (no grads, no AdamW moments)
    size_t num_params;                 // all tensors
    size_t num_trainable;              // the length of grads / adam_m / adam_v
    size_t num_decay;                  // trainable+decay tensors come first: [0, num_decay)
    float *params, *grads, *adam_m, *adam_v;
} ParamStore;

typedef struct {
    float beta1, beta2, eps, weight_decay;
} AdamWConfig;

// ---------------------------------------------------------------------------
// declaring

static void params_init(ParamStore* ps) {
    ps->tensors.clear(); ps->prefix.clear();
    ps->on_gpu = false; ps->with_grads = false;
    ps->num_params = ps->num_trainable = ps->num_decay = 0;
    ps->params = ps->grads = ps->adam_m = ps->adam_v = nullptr;
}

static void params_set_prefix(ParamStore* ps, const char* prefix) { ps->prefix = prefix; }

// declares a tensor; returns its index (stable: models keep indices, not names)
static int params_add(ParamStore* ps, const std::string& name, std::initializer_list<int> shape, bool decay,
                      bool trainable = true) {
    if (ps->params) FATAL("params_add(%s): the store is already allocated", name.c_str());
    if (shape.size() < 1 || shape.size() > PARAM_MAX_DIMS) FATAL("tensor %s: 1 to %d dimensions", name.c_str(), PARAM_MAX_DIMS);
    ParamTensor t;
    t.name = ps->prefix + name;
    for (const ParamTensor& o : ps->tensors)
        if (o.name == t.name) FATAL("tensor %s declared twice", t.name.c_str());
    t.ndim = (int)shape.size(); t.numel = 1;
    int i = 0;
    for (int d : shape) {
        if (d < 1) FATAL("tensor %s: dimension %d is %d", t.name.c_str(), i, d);
        t.shape[i++] = d; t.numel *= (size_t)d;
    }
    for (; i < PARAM_MAX_DIMS; i++) t.shape[i] = 1;
    t.dtype = DTYPE_F32; t.decay = decay; t.trainable = trainable; t.offset = 0;
    ps->tensors.push_back(t);
    return (int)ps->tensors.size() - 1;
}

static int params_find(const ParamStore* ps, const std::string& name) {
    for (size_t i = 0; i < ps->tensors.size(); i++)
        if (ps->tensors[i].name == name) return (int)i;
    return -1;
}

// freezes (or unfreezes) every tensor whose name starts with `prefix`; returns
// how many matched. Call before params_allocate.
static int params_set_trainable(ParamStore* ps, const std::string& prefix, bool trainable) {
    if (ps->params) FATAL("params_set_trainable(%s): the store is already allocated", prefix.c_str());
    int n = 0;
    for (ParamTensor& t : ps->tensors)
        if (t.name.compare(0, prefix.size(), prefix) == 0) { t.trainable = trainable; n++; }
    return n;
}

// "1536x16"
static std::string shape_string(const int* shape, int ndim) {
    std::string s;
    for (int i = 0; i < ndim; i++) s += (i ? "x" : "") + std::to_string(shape[i]);
    return s;
}

// ---------------------------------------------------------------------------
// allocating: assigns offsets group by group, allocates the buffers, zeroes
// grads and moments (params are left for the model's init or a checkpoint)

static void params_allocate(ParamStore* ps, bool on_gpu, bool with_grads) {
    ps->on_gpu = on_gpu; ps->with_grads = with_grads;
    size_t off = 0;
    for (int group = 0; group < 3; group++) {  // 0: trainable+decay, 1: trainable, 2: frozen
        for (ParamTensor& t : ps->tensors) {
            int g = !t.trainable ? 2 : (t.decay ? 0 : 1);
            if (g != group) continue;
            t.offset = off;
            off += t.numel;
        }
        if (group == 0) ps->num_decay = off;
        if (group == 1) ps->num_trainable = off;
    }
    ps->num_params = off;
    ps->params = (float*)backend_malloc(on_gpu, ps->num_params * sizeof(float));
    if (with_grads) {
        size_t bytes = ps->num_trainable * sizeof(float);
        ps->grads = (float*)backend_malloc(on_gpu, bytes);
        ps->adam_m = (float*)backend_malloc(on_gpu, bytes);
        ps->adam_v = (float*)backend_malloc(on_gpu, bytes);
        backend_memset0(on_gpu, ps->grads, bytes);
        backend_memset0(on_gpu, ps->adam_m, bytes);
        backend_memset0(on_gpu, ps->adam_v, bytes);
    }
}

static void params_free(ParamStore* ps) {
    backend_free(ps->on_gpu, ps->params);
    if (ps->with_grads) {
        backend_free(ps->on_gpu, ps->grads);
        backend_free(ps->on_gpu, ps->adam_m);
        backend_free(ps->on_gpu, ps->adam_v);
    }
    params_init(ps);
}

// views: resolve these once when a model is built, never per token
static float* param_data(const ParamStore* ps, int i) { return ps->params + ps->tensors[i].offset; }
// nullptr for a frozen tensor or an inference-only store
static float* param_grad(const ParamStore* ps, int i) {
    const ParamTensor& t = ps->tensors[i];
    return (ps->with_grads && t.trainable) ? ps->grads + t.offset : nullptr;
}

// bytes of each buffer, for the memory report
static size_t params_bytes(const ParamStore* ps) { return ps->num_params * sizeof(float); }
static size_t params_grad_and_moment_bytes(const ParamStore* ps) {
    return ps->with_grads ? 3 * ps->num_trainable * sizeof(float) : 0;
}

// ---------------------------------------------------------------------------
// training

static void params_zero_grad(ParamStore* ps) {
    if (ps->with_grads) backend_memset0(ps->on_gpu, ps->grads, ps->num_trainable * sizeof(float));
}

// global L2 norm of the gradients (synchronizes on the GPU)
static float params_grad_norm(const ParamStore* ps) {
    if (!ps->with_grads) FATAL("params_grad_norm: the store has no gradients (inference only)");
    return (float)sqrt(sum_squares(ps->on_gpu, ps->grads, ps->num_trainable));
}

// one AdamW step at step number t (from 1); gradients are multiplied by
// grad_scale first (global-norm clipping). Decay only on [0, num_decay).
static void params_adamw_step(ParamStore* ps, const AdamWConfig& c, float lr, int t, float grad_scale) {
    if (!ps->with_grads) FATAL("params_adamw_step: the store has no gradients (inference only)");
    size_t nd = ps->num_decay, nt = ps->num_trainable;
    adamw_update(ps->on_gpu, ps->params, ps->grads, ps->adam_m, ps->adam_v, nd, lr, c.beta1, c.beta2, c.eps,
                 c.weight_decay, t, grad_scale);
    adamw_update(ps->on_gpu, ps->params + nd, ps->grads + nd, ps->adam_m + nd, ps->adam_v + nd, nt - nd, lr,
                 c.beta1, c.beta2, c.eps, 0.0f, t, grad_scale);
}

// ---------------------------------------------------------------------------
// activation arena: one buffer, typed views carved in order. Run the layout
// twice: with base == nullptr it only counts bytes, then over the real buffer.
//
//   Arena a = {nullptr, 0};  layout(&a);  buf = backend_malloc(on_gpu, a.used);
//   a = {buf, 0};            layout(&a);  // now every view points into buf

typedef struct {
    char* base;
    size_t used;  // bytes
} Arena;

template <typename T>
static T* arena_take(Arena* a, size_t count) {
    size_t start = (a->used + 15) & ~(size_t)15;  // every view 16-byte aligned (vector loads)
    a->used = start + count * sizeof(T);
    return a->base ? reinterpret_cast<T*>(a->base + start) : nullptr;
}
