// test_export.cu: the safetensors reader/writer, the JSON parser, and the
// Hugging Face export (src/mamba_export.h) on the CPU.
//
// The export is checked against expectations written here from HF's
// MambaForCausalLM (names, shapes, config keys), not against the exporter's
// own tables, and every value must come back bit for bit. Errors that end the
// program (FATAL) run in a forked child (expect_fatal, test_util.h).
#include <dirent.h>
#include <set>
#include "test_util.h"
#include "../src/mamba_export.h"

static std::string g_tmp;  // this run's scratch directory

static std::string tmp_path(const std::string& name) { return g_tmp + "/" + name; }

static std::string read_file(const std::string& path) {
    std::string s;
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) return s;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
    fclose(f);
    return s;
}

static void write_file(const std::string& path, const std::string& bytes) {
    FILE* f = fopen(path.c_str(), "wb");
    if (!f || fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) FATAL("cannot write %s", path.c_str());
    fclose(f);
}

static std::string u64_le(uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; i++) s[i] = (char)(v >> (8 * i));
    return s;
}

static std::string float_bytes(const std::vector<float>& v) {
    return std::string((const char*)v.data(), v.size() * sizeof(float));
}

// a safetensors file by hand: the length, the header as given, the data
static std::string raw_safetensors(const std::string& header, const std::string& data) {
    return u64_le(header.size()) + header + data;
}

static bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

static bool same_bits(const float* a, const float* b, size_t n) { return n == 0 || memcmp(a, b, n * sizeof(float)) == 0; }

// reads path expecting failure; passes when the message contains pattern
static void expect_read_error(const char* name, const std::string& path, const char* pattern) {
    SafeTensorMap m;
    std::string err;
    bool ok = safetensors_read(path.c_str(), &m, &err);
    report(!ok && contains(err, pattern), name, "%s (wanted an error with \"%s\")", ok ? "read succeeded" : err.c_str(), pattern);
}

// ---------------------------------------------------------------------------
// JSON

static void test_json() {
    JsonValue v;
    std::string err;
    std::string doc = " {\"a\": [1, -2, 3.5, 1e-05, 0], \"s\": \"q\\\"\\\\\\/\\n\\u00e9\\ud83d\\ude00\", "
                      "\"t\": true, \"f\": false, \"n\": null, \"o\": {}, \"e\": [], \"big\": 9007199254740993}\n";
    bool ok = json_parse(doc, &v, &err);
    report(ok && v.kind == JsonValue::OBJECT && v.members.size() == 8, "json parses a document", "%s", err.c_str());
    if (!ok) return;
    const JsonValue* a = v.find("a");
    bool nums = a && a->items.size() == 5 && a->items[0].is_integer && a->items[0].integer == 1 &&
                a->items[1].integer == -2 && !a->items[2].is_integer && a->items[2].number == 3.5 &&
                a->items[3].number == 1e-05 && a->items[4].is_integer && a->items[4].integer == 0;
    report(nums, "json numbers (integers exact, fractions, exponents)");
    const JsonValue* s = v.find("s");
    report(s && s->str == "q\"\\/\n\xc3\xa9\xf0\x9f\x98\x80", "json string escapes and \\u (with surrogate pairs) to UTF-8");
    report(v.find("t")->boolean && !v.find("f")->boolean && v.find("n")->kind == JsonValue::NUL &&
               v.find("o")->kind == JsonValue::OBJECT && v.find("e")->kind == JsonValue::ARRAY && !v.find("missing"),
           "json literals, empty containers, missing key");
    report(v.find("big")->integer == 9007199254740993LL, "json integers past 2^53 stay exact");

    struct Bad { const char* text; const char* why; } bad[] = {
        {"{\"a\": 1} x", "trailing"},       {"{\"a\": \"abc}", "unterminated string"},
        {"[1, 2,]", "unexpected character"}, {"{\"a\": 1, \"a\": 2}", "duplicate key"},
        {"{\"a\" 1}", "expected ':'"},       {"tru", "invalid literal"},
        {"01", "trailing"},                  {"1.", "no digit after '.'"},
        {"\"\\x\"", "bad escape"},           {"\"\\ud800\"", "unpaired surrogate"},
        {"", "unexpected end"},              {"{\"a\": [1 2]}", "expected ',' or ']'"},
    };
    for (const Bad& b : bad) {
        std::string e;
        bool parsed = json_parse(b.text, &v, &e);
        std::string name = std::string("json rejects ") + b.text;
        report(!parsed && contains(e, b.why), name.c_str(), "%s", parsed ? "parsed" : e.c_str());
    }
    std::string deep(100, '[');
    deep += std::string(100, ']');
    report(!json_parse(deep, &v, &err) && contains(err, "nesting"), "json rejects nesting deeper than 64");
}

// ---------------------------------------------------------------------------
// safetensors by itself

static void test_safetensors_roundtrip() {
    Rng rng; rng_seed(&rng, 3);
    std::vector<float> a = random_vec(2 * 3 * 5, &rng), b = random_vec(7, &rng), scalar = {-0.0f};
    a[3] = NAN; a[4] = -INFINITY;  // any bits survive
    std::string path = tmp_path("roundtrip.safetensors");
    safetensors_write(path.c_str(), {{"a.weight", {2, 3, 5}, a.data()}, {"b", {7}, b.data()}, {"scalar", {}, scalar.data()},
                                     {"empty", {0, 3}, nullptr}});
    SafeTensorMap m;
    SafeMetadata meta;
    std::string err;
    bool ok = safetensors_read(path.c_str(), &m, &err, &meta);
    report(ok && m.size() == 4, "safetensors write + read back 4 tensors", "%s", err.c_str());
    if (!ok) return;
    report(m["a.weight"].shape == std::vector<int64_t>{2, 3, 5} && same_bits(m["a.weight"].data.data(), a.data(), a.size()) &&
               m["b"].shape == std::vector<int64_t>{7} && same_bits(m["b"].data.data(), b.data(), b.size()),
           "safetensors shapes and bits (NaN, -inf) survive");
    report(m["scalar"].shape.empty() && m["scalar"].data.size() == 1 && std::signbit(m["scalar"].data[0]),
           "safetensors scalar (shape [])");
    report(m["empty"].shape == std::vector<int64_t>{0, 3} && m["empty"].data.empty(), "safetensors empty tensor (shape [0, 3])");
    report(meta.size() == 1 && meta["format"] == "pt", "safetensors __metadata__ {\"format\": \"pt\"}");

    std::string bytes = read_file(path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | (unsigned char)bytes[i];
    JsonValue h;
    bool header_ok = n + 8 <= bytes.size() && json_parse(bytes.substr(8, n), &h, &err);
    report(header_ok && (8 + n) % 8 == 0 && bytes.substr(8, 1) == "{", "safetensors header is JSON, data 8-byte aligned",
           "header length %llu", (unsigned long long)n);
    // in the given order, packed: the offsets the reference reader demands
    bool packed = header_ok;
    uint64_t expect = 0;
    const char* order[] = {"a.weight", "b", "scalar", "empty"};
    for (const char* name : order) {
        const JsonValue* e = h.find(name);
        const JsonValue* off = e ? e->find("data_offsets") : nullptr;
        packed = packed && off && off->items.size() == 2 && (uint64_t)off->items[0].integer == expect;
        if (packed) expect = (uint64_t)off->items[1].integer;
    }
    report(packed && expect + 8 + n == bytes.size(), "safetensors data packed in order, nothing after it");
    report(access((path + ".tmp").c_str(), F_OK) != 0, "safetensors leaves no .tmp behind");

    std::string odd = "q\"uote\\back/slash\ttab";  // escaped in the header, the same name read back
    std::string odd_path = tmp_path("odd.safetensors");
    safetensors_write(odd_path.c_str(), {{odd, {1}, b.data()}});
    ok = safetensors_read(odd_path.c_str(), &m, &err);
    report(ok && m.size() == 1 && m.count(odd) && m[odd].data[0] == b[0], "safetensors name with quote, backslash, tab", "%s", err.c_str());

    std::string empty_path = tmp_path("none.safetensors");
    safetensors_write(empty_path.c_str(), {}, {});
    ok = safetensors_read(empty_path.c_str(), &m, &err);
    report(ok && m.empty(), "safetensors with no tensors and no metadata", "%s", err.c_str());
}

// what the Python library writes: compact JSON, metadata first, names that need escapes
static void test_safetensors_foreign() {
    std::vector<float> x = {1.5f, -2.0f, 3.25f, 4.0f, 5.0f, 6.0f}, y = {7.0f};
    std::string header = "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"a\\\"b\"},"
                         "\"y\\u00e9\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[24,28]},"
                         "\"x\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}";
    std::string path = tmp_path("foreign.safetensors");
    write_file(path, raw_safetensors(header, float_bytes(x) + float_bytes(y)));  // unpadded header: allowed
    SafeTensorMap m;
    SafeMetadata meta;
    std::string err;
    bool ok = safetensors_read(path.c_str(), &m, &err, &meta);
    report(ok && m.size() == 2 && m["x"].shape == std::vector<int64_t>{2, 3} && same_bits(m["x"].data.data(), x.data(), 6) &&
               m.count("y\xc3\xa9") && m["y\xc3\xa9"].data == y && meta["note"] == "a\"b",
           "safetensors reads a compact, unpadded file with escaped names", "%s", err.c_str());
}

static void test_safetensors_errors() {
    std::vector<float> v = {1, 2, 3, 4};
    std::string data = float_bytes(v);
    auto entry = [](const char* name, const char* dtype, const char* shape, int b, int e) {
        return std::string("\"") + name + "\": {\"dtype\": \"" + dtype + "\", \"shape\": " + shape +
               ", \"data_offsets\": [" + std::to_string(b) + ", " + std::to_string(e) + "]}";
    };
    std::string good = "{" + entry("w", "F32", "[4]", 0, 16) + "}";
    std::string p = tmp_path("bad.safetensors");

    expect_read_error("read: missing file", tmp_path("nowhere.safetensors"), "cannot open");
    write_file(p, "abc");
    expect_read_error("read: file shorter than the length field", p, "truncated: 3 bytes");
    write_file(p, u64_le(1000) + good + data);
    expect_read_error("read: header length past the end of the file", p, "header length 1000 runs past the end");
    write_file(p, u64_le(~0ull) + good + data);
    expect_read_error("read: absurd header length", p, "runs past the end");
    write_file(p, raw_safetensors("{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}", data));
    expect_read_error("read: malformed JSON header", p, "malformed JSON header");
    write_file(p, raw_safetensors("[1, 2]", ""));
    expect_read_error("read: header not an object", p, "not a JSON object");
    write_file(p, raw_safetensors("{" + entry("w", "BF16", "[8]", 0, 16) + "}", data));
    expect_read_error("read: non-F32 dtype", p, "dtype BF16 is not supported");
    write_file(p, raw_safetensors("{" + entry("w", "F32", "[5]", 0, 20) + "}", data));
    expect_read_error("read: offsets beyond the data", p, "lie outside the data");
    write_file(p, raw_safetensors("{" + entry("w", "F32", "[3]", 0, 16) + "}", data));
    expect_read_error("read: offsets disagree with the shape", p, "shape [3] of F32 needs 12");
    write_file(p, raw_safetensors("{" + entry("w", "F32", "[2]", 8, 0) + "}", data));
    expect_read_error("read: offsets end before they begin", p, "end before they begin");
    write_file(p, raw_safetensors("{" + entry("a", "F32", "[2]", 0, 8) + ", " + entry("b", "F32", "[2]", 4, 12) + "}", data));
    expect_read_error("read: overlapping tensors", p, "overlap or leave a gap");
    write_file(p, raw_safetensors("{" + entry("a", "F32", "[1]", 0, 4) + ", " + entry("b", "F32", "[2]", 8, 16) + "}", data));
    expect_read_error("read: a gap between tensors", p, "overlap or leave a gap");
    write_file(p, raw_safetensors("{" + entry("a", "F32", "[3]", 0, 12) + "}", data));
    expect_read_error("read: data after the last tensor", p, "4 bytes of data after the last tensor");
    write_file(p, raw_safetensors("{\"w\": {\"dtype\": \"F32\", \"shape\": [-4], \"data_offsets\": [0, 16]}}", data));
    expect_read_error("read: negative dimension", p, "integers >= 0");
    write_file(p, raw_safetensors("{\"w\": {\"dtype\": \"F32\", \"shape\": [4]}}", data));
    expect_read_error("read: missing data_offsets", p, "no \"data_offsets\"");
    write_file(p, raw_safetensors("{\"__metadata__\": {\"format\": 1}}", ""));
    expect_read_error("read: non-string metadata", p, "is not a string");
    write_file(p, raw_safetensors(good, data));
    SafeTensorMap m;
    std::string err;
    report(safetensors_read(p.c_str(), &m, &err) && m["w"].data == v, "read: the well-formed control file reads", "%s", err.c_str());

    expect_fatal("read (FATAL wrapper): error: and the message", "error: ", [&] {
        write_file(p, "abc");
        safetensors_read(p.c_str());
    });
    expect_fatal("write: duplicate tensor names", "given twice", [&] {
        safetensors_write(tmp_path("dup.safetensors").c_str(), {{"w", {4}, v.data()}, {"w", {4}, v.data()}});
    });
    expect_fatal("write: non-ASCII names are refused", "invalid tensor name", [&] {
        safetensors_write(tmp_path("utf8.safetensors").c_str(), {{"caf\xc3\xa9", {4}, v.data()}});
    });
    expect_fatal("write: unwritable path", "cannot write", [&] {
        safetensors_write(tmp_path("no/such/dir/x.safetensors").c_str(), {{"w", {4}, v.data()}});
    });
}

// ---------------------------------------------------------------------------
// the export

// our tensors as src/mamba_model.h declares them (name, shape)
typedef std::vector<std::pair<std::string, std::vector<int>>> TensorList;

static TensorList our_tensor_list(const MambaConfig& c) {
    int V = c.vocab_size, D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank;
    TensorList t = {{"embedding.weight", {V, D}}};
    for (int l = 0; l < c.n_layer; l++) {
        std::string p = "layers." + std::to_string(l) + ".";
        t.push_back({p + "norm.weight", {D}});
        t.push_back({p + "in_proj.weight", {2 * E, D}});
        t.push_back({p + "conv1d.weight", {E, K}});
        t.push_back({p + "conv1d.bias", {E}});
        t.push_back({p + "x_proj.weight", {R + 2 * N, E}});
        t.push_back({p + "dt_proj.weight", {E, R}});
        t.push_back({p + "dt_proj.bias", {E}});
        t.push_back({p + "A_log", {E, N}});
        t.push_back({p + "D", {E}});
        t.push_back({p + "out_proj.weight", {D, E}});
    }
    t.push_back({"norm_f.weight", {D}});
    return t;
}

// a CPU store holding those tensors with random values (matrices decayed, so
// the buffer order differs from the declaration order, as in the model)
static void make_store(ParamStore* ps, const TensorList& list, uint64_t seed) {
    params_init(ps);
    for (const auto& t : list) {
        const std::vector<int>& s = t.second;
        if (s.size() == 1) params_add(ps, t.first, {s[0]}, false);
        else params_add(ps, t.first, {s[0], s[1]}, true);
    }
    params_allocate(ps, false, false);
    Rng rng; rng_seed(&rng, seed);
    fill_normal(ps->params, ps->num_params, &rng, 1.0f);
}

static MambaConfig tiny_config() {
    MambaConfig c = {11, 8, 2, 4, 4, 2, 0, 0};  // V, D, n_layer, N, K, expand; dt_rank and d_inner derived
    mamba_config_derive(&c);
    return c;
}

// HF's name and shape for one of ours (written from HF's MambaForCausalLM)
static std::string hf_name(const std::string& ours, std::vector<int64_t>* shape) {
    if (ours == "embedding.weight") return "backbone.embeddings.weight";
    if (ours == "norm_f.weight") return "backbone.norm_f.weight";
    size_t dot = ours.find('.', 7);  // after "layers.{l}"
    std::string layer = ours.substr(0, dot), rest = ours.substr(dot + 1);
    if (rest == "norm.weight") return "backbone." + ours;
    if (rest == "conv1d.weight") shape->insert(shape->begin() + 1, 1);  // nn.Conv1d weight: (E, 1, K)
    return "backbone." + layer + ".mixer." + rest;
}

// the exported directory matches the store: every HF name, its shape, its bits, nothing else
static void check_export(const char* label, const std::string& dir, const ParamStore* ps, const MambaConfig& c) {
    std::string what = std::string(label) + ": ";
    SafeTensorMap m;
    SafeMetadata meta;
    std::string err;
    bool ok = safetensors_read((dir + "/model.safetensors").c_str(), &m, &err, &meta);
    report(ok, (what + "model.safetensors reads back").c_str(), "%s", err.c_str());
    if (!ok) return;
    TensorList list = our_tensor_list(c);
    std::set<std::string> expected;
    std::string missing, bad_shape, bad_bits;
    std::vector<float> host(ps->num_params);
    backend_copy(ps->on_gpu, host.data(), ps->params, ps->num_params * sizeof(float), false);
    for (const auto& t : list) {
        std::vector<int64_t> shape(t.second.begin(), t.second.end());
        std::string hf = hf_name(t.first, &shape);
        expected.insert(hf);
        auto it = m.find(hf);
        if (it == m.end()) { missing += hf + " "; continue; }
        if (it->second.shape != shape) bad_shape += hf + " " + safetensors_shape_string(it->second.shape) + " ";
        const ParamTensor& pt = ps->tensors[params_find(ps, t.first)];
        if (it->second.data.size() != pt.numel || !same_bits(it->second.data.data(), host.data() + pt.offset, pt.numel))
            bad_bits += hf + " ";
    }
    std::string extra;
    for (const auto& kv : m)
        if (!expected.count(kv.first)) extra += kv.first + " ";
    report(missing.empty(), (what + "every HF tensor name present").c_str(), "missing %s", missing.c_str());
    report(extra.empty(), (what + "no extra tensors (lm_head tied, not stored)").c_str(), "extra %s", extra.c_str());
    report(bad_shape.empty(), (what + "HF shapes (conv1d as (E, 1, K))").c_str(), "wrong %s", bad_shape.c_str());
    report(bad_bits.empty(), (what + "values bitwise equal to the parameters").c_str(), "differ: %s", bad_bits.c_str());
    report(meta["format"] == "pt", (what + "metadata format pt").c_str());

    JsonValue cfg;
    std::string text = read_file(dir + "/config.json");
    ok = json_parse(text, &cfg, &err) && cfg.kind == JsonValue::OBJECT;
    report(ok, (what + "config.json is a JSON object").c_str(), "%s", err.c_str());
    if (!ok) return;
    struct IntKey { const char* key; int64_t value; } ints[] = {
        {"vocab_size", c.vocab_size}, {"hidden_size", c.d_model}, {"state_size", c.d_state},
        {"num_hidden_layers", c.n_layer}, {"expand", c.expand}, {"conv_kernel", c.d_conv},
        {"intermediate_size", c.d_inner}, {"time_step_rank", c.dt_rank},
        {"pad_token_id", 0}, {"bos_token_id", 0}, {"eos_token_id", 0},
    };
    std::string wrong;
    for (const IntKey& k : ints) {
        const JsonValue* v = cfg.find(k.key);
        if (!v || !v->is_integer || v->integer != k.value) wrong += std::string(k.key) + " ";
    }
    struct BoolKey { const char* key; bool value; } bools[] = {
        {"use_bias", false}, {"use_conv_bias", true}, {"residual_in_fp32", true}, {"tie_word_embeddings", true},
    };
    for (const BoolKey& k : bools) {
        const JsonValue* v = cfg.find(k.key);
        if (!v || v->kind != JsonValue::BOOLEAN || v->boolean != k.value) wrong += std::string(k.key) + " ";
    }
    struct StrKey { const char* key; const char* value; } strs[] = {
        {"model_type", "mamba"}, {"hidden_act", "silu"}, {"torch_dtype", "float32"},
    };
    for (const StrKey& k : strs) {
        const JsonValue* v = cfg.find(k.key);
        if (!v || v->kind != JsonValue::STRING || v->str != k.value) wrong += std::string(k.key) + " ";
    }
    const JsonValue* eps = cfg.find("layer_norm_epsilon");
    if (!eps || eps->kind != JsonValue::NUMBER || eps->number != 1e-5) wrong += "layer_norm_epsilon ";
    const JsonValue* arch = cfg.find("architectures");
    if (!arch || arch->items.size() != 1 || arch->items[0].str != "MambaForCausalLM") wrong += "architectures ";
    // HF derives these from the rest: they must agree
    if (c.d_inner != c.expand * c.d_model) wrong += "intermediate_size!=expand*hidden_size ";
    report(wrong.empty(), (what + "config.json keys and values").c_str(), "wrong or missing: %s", wrong.c_str());
}

static bool has_tmp_files(const std::string& dir) {
    DIR* d = opendir(dir.c_str());
    if (!d) return false;
    bool found = false;
    while (dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (n.size() > 4 && n.compare(n.size() - 4, 4, ".tmp") == 0) found = true;
    }
    closedir(d);
    return found;
}

static void test_export_store() {
    MambaConfig c = tiny_config();
    report(c.d_inner == 16 && c.dt_rank == 1, "tiny config: E=16, R=1");
    ParamStore ps;
    make_store(&ps, our_tensor_list(c), 11);
    std::string dir = tmp_path("export/nested/dir");  // mkdir -p
    mamba_export_hf_store(&ps, c, dir.c_str());
    check_export("store export", dir, &ps, c);
    report(!has_tmp_files(dir), "store export: no .tmp files left");
    // exporting again over an existing export replaces it
    Rng rng; rng_seed(&rng, 12);
    fill_normal(ps.params, ps.num_params, &rng, 1.0f);
    mamba_export_hf_store(&ps, c, dir.c_str());
    check_export("re-export", dir, &ps, c);
    params_free(&ps);

    // a bigger, odder config: dt_rank not derived from d_model, d_conv 2, 3 layers
    MambaConfig c2 = {37, 20, 3, 3, 2, 3, 5, 0};
    mamba_config_derive(&c2);
    make_store(&ps, our_tensor_list(c2), 13);
    std::string dir2 = tmp_path("export2");
    mamba_export_hf_store(&ps, c2, dir2.c_str());
    check_export("export (V=37 D=20 E=60 R=5 K=2 3 layers)", dir2, &ps, c2);
    params_free(&ps);
}

static void test_export_model() {
    MambaConfig c = tiny_config();
    MambaModel m;
    mamba_build(&m, c, 1, 4, false, false);
    mamba_init_params(&m, 5);
    std::string dir = tmp_path("model_export");
    mamba_export_hf(&m, dir.c_str());
    check_export("mamba_export_hf (a built model)", dir, &m.params, m.cfg);
    mamba_free(&m);
}

static void test_export_errors() {
    MambaConfig c = tiny_config();
    TensorList list = our_tensor_list(c);
    std::string dir = tmp_path("export_bad");
    expect_fatal("export: a missing tensor is an error", "has no tensor layers.1.A_log", [&] {
        TensorList l = list;
        l.erase(std::find_if(l.begin(), l.end(), [](const auto& t) { return t.first == "layers.1.A_log"; }));
        ParamStore ps; make_store(&ps, l, 1);
        mamba_export_hf_store(&ps, c, dir.c_str());
    });
    expect_fatal("export: a wrong shape is an error", "layers.0.x_proj.weight has shape 10x16, the config says [9, 16]", [&] {
        TensorList l = list;
        for (auto& t : l) if (t.first == "layers.0.x_proj.weight") t.second = {10, 16};
        ParamStore ps; make_store(&ps, l, 1);
        mamba_export_hf_store(&ps, c, dir.c_str());
    });
    expect_fatal("export: an unknown tensor is an error", "lora.weight has no place", [&] {
        TensorList l = list;
        l.push_back({"lora.weight", {2, 2}});
        ParamStore ps; make_store(&ps, l, 1);
        mamba_export_hf_store(&ps, c, dir.c_str());
    });
    write_file(tmp_path("a_file"), "x");
    expect_fatal("export: a file where the directory should be", "not a directory", [&] {
        ParamStore ps; make_store(&ps, list, 1);
        mamba_export_hf_store(&ps, c, tmp_path("a_file").c_str());
    });
    expect_fatal("export: a directory under a file", "cannot create directory", [&] {
        ParamStore ps; make_store(&ps, list, 1);
        mamba_export_hf_store(&ps, c, tmp_path("a_file/sub").c_str());
    });
    report(access(dir.c_str(), F_OK) != 0, "export: nothing written when the store is rejected");

    // a truncated export is caught by the reader
    ParamStore ps;
    make_store(&ps, list, 2);
    std::string good = tmp_path("export_trunc");
    mamba_export_hf_store(&ps, c, good.c_str());
    params_free(&ps);
    std::string bytes = read_file(good + "/model.safetensors");
    std::string cut = tmp_path("trunc.safetensors");
    write_file(cut, bytes.substr(0, bytes.size() - 100));
    expect_read_error("read: a truncated export", cut, "lie outside the data");
    write_file(cut, bytes.substr(0, 40));
    expect_read_error("read: an export cut inside the header", cut, "runs past the end of the file");
}

int main() {
    char tmpl[] = "/tmp/test_export_XXXXXX";
    if (!mkdtemp(tmpl)) FATAL("mkdtemp failed");
    g_tmp = tmpl;
    test_json();
    test_safetensors_roundtrip();
    test_safetensors_foreign();
    test_safetensors_errors();
    test_export_store();
    test_export_model();
    test_export_errors();
    std::string rm = "rm -rf '" + g_tmp + "'";
    if (system(rm.c_str()) != 0) printf("note: could not remove %s\n", g_tmp.c_str());
    return test_summary();
}
