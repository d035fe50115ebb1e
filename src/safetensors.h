// safetensors.h: Hugging Face's safetensors tensor file, float32 tensors only.
//
// File layout:
//   [0, 8)       uint64 little-endian N: bytes of the JSON header
//   [8, 8+N)     the header, UTF-8 JSON, padded with spaces so the data starts 8-byte aligned:
//                  {"__metadata__": {"format": "pt"},
//                   "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//                offsets are bytes from the start of the data, end exclusive
//   [8+N, ...)   the data: each tensor row-major, little-endian, packed back to back in
//                offset order with no gaps and nothing after the last one (the reference
//                reader rejects gaps, so the reader here does too)
//
//   safetensors_write(path, tensors, metadata)   writes PATH.tmp, then renames it (FATAL on error)
//   safetensors_read(path, &out, &err)           false with a message in err on any damage
//   safetensors_read(path)                       the same, FATAL on error
//
// The JSON parser (json_parse -> JsonValue) that reads the header and config.json is in json.h.
#pragma once
#include <algorithm>
#include <cerrno>
#include <map>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>
#include <vector>
#include "common.h"
#include "json.h"
#include "logger.h"  // json_escape (byte-wise: the writer takes ASCII names and metadata only)

// ---------------------------------------------------------------------------
// writing files atomically: PATH.tmp, then rename, so a failed write leaves
// any previous PATH whole

static FILE* atomic_file_open(const std::string& path, std::string* tmp) {
    *tmp = path + ".tmp";
    FILE* f = fopen(tmp->c_str(), "wb");
    if (!f) FATAL("cannot write %s: %s", tmp->c_str(), strerror(errno));
    return f;
}

// ok: every write so far succeeded (a failed write's errno is reported)
static void atomic_file_commit(FILE* f, const std::string& tmp, const std::string& path, bool ok) {
    int err = errno;
    if (ok && (fflush(f) != 0 || fsync(fileno(f)) != 0)) { ok = false; err = errno; }
    if (fclose(f) != 0 && ok) { ok = false; err = errno; }
    if (!ok) {
        remove(tmp.c_str());
        FATAL("failed writing %s: %s (disk full?)", tmp.c_str(), strerror(err));
    }
    if (rename(tmp.c_str(), path.c_str()) != 0) {
        err = errno;
        remove(tmp.c_str());
        FATAL("cannot rename %s to %s: %s", tmp.c_str(), path.c_str(), strerror(err));
    }
}

static void write_text_file_atomic(const std::string& path, const std::string& text) {
    std::string tmp;
    FILE* f = atomic_file_open(path, &tmp);
    bool ok = text.empty() || fwrite(text.data(), 1, text.size(), f) == text.size();
    atomic_file_commit(f, tmp, path, ok);
}

// ---------------------------------------------------------------------------
// safetensors

struct SafeTensor {               // one tensor to write
    std::string name;
    std::vector<int64_t> shape;   // [] is a scalar (one element)
    const float* data;            // host memory, numel floats
};

struct SafeTensorData {           // one tensor read back
    std::vector<int64_t> shape;
    std::vector<float> data;
};

typedef std::map<std::string, SafeTensorData> SafeTensorMap;
typedef std::map<std::string, std::string> SafeMetadata;  // "__metadata__": string -> string only

// the data is copied as raw bytes: a big-endian host would write garbage
static void safetensors_check_host() {
    const uint32_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    if (first != 1) FATAL("safetensors: this host is big-endian; the format is little-endian");
}

// product of the dims; false on a negative dim or on overflow
static bool safetensors_numel(const std::vector<int64_t>& shape, uint64_t* numel) {
    uint64_t n = 1;
    for (int64_t d : shape) {
        if (d < 0) return false;
        if (d != 0 && n > UINT64_MAX / 4 / (uint64_t)d) return false;  // room for the *4 bytes too
        n *= (uint64_t)d;
    }
    *numel = n;
    return true;
}

static std::string safetensors_shape_string(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

static bool is_ascii(const std::string& s) {
    for (unsigned char c : s)
        if (c >= 0x80) return false;
    return true;
}

// the JSON header, padded with spaces so 8 + its length is a multiple of 8
static std::string safetensors_header(const std::vector<SafeTensor>& tensors, const SafeMetadata& metadata) {
    std::string h = "{";
    bool first = true;
    if (!metadata.empty()) {
        h += "\"__metadata__\": {";
        for (auto it = metadata.begin(); it != metadata.end(); ++it) {
            if (!is_ascii(it->first) || !is_ascii(it->second)) FATAL("safetensors: metadata must be ASCII");
            h += (it == metadata.begin() ? "\"" : ", \"") + json_escape(it->first) + "\": \"" + json_escape(it->second) + "\"";
        }
        h += "}";
        first = false;
    }
    uint64_t offset = 0;
    std::map<std::string, int> seen;
    for (const SafeTensor& t : tensors) {
        if (t.name.empty() || t.name == "__metadata__" || !is_ascii(t.name))
            FATAL("safetensors: invalid tensor name \"%s\" (ASCII, not empty, not __metadata__)", t.name.c_str());
        if (seen[t.name]++) FATAL("safetensors: tensor %s given twice", t.name.c_str());
        uint64_t numel;
        if (!safetensors_numel(t.shape, &numel))
            FATAL("safetensors: tensor %s has an invalid shape %s", t.name.c_str(), safetensors_shape_string(t.shape).c_str());
        if (numel > 0 && !t.data) FATAL("safetensors: tensor %s has no data", t.name.c_str());
        uint64_t bytes = numel * sizeof(float);
        h += std::string(first ? "" : ", ") + "\"" + json_escape(t.name) + "\": {\"dtype\": \"F32\", \"shape\": " +
             safetensors_shape_string(t.shape) + ", \"data_offsets\": [" + std::to_string(offset) + ", " +
             std::to_string(offset + bytes) + "]}";
        offset += bytes;
        first = false;
    }
    h += "}";
    while ((8 + h.size()) % 8 != 0) h += ' ';
    return h;
}

// writes the tensors (in the given order) to path via path.tmp; FATAL on any error
static void safetensors_write(const char* path, const std::vector<SafeTensor>& tensors,
                              const SafeMetadata& metadata = {{"format", "pt"}}) {
    safetensors_check_host();
    std::string header = safetensors_header(tensors, metadata);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)header.size() >> (8 * i));
    std::string tmp;
    FILE* f = atomic_file_open(path, &tmp);
    bool ok = fwrite(len, 1, 8, f) == 8 && fwrite(header.data(), 1, header.size(), f) == header.size();
    for (size_t i = 0; ok && i < tensors.size(); i++) {
        uint64_t numel = 0;
        safetensors_numel(tensors[i].shape, &numel);
        ok = numel == 0 || fwrite(tensors[i].data, sizeof(float), numel, f) == numel;
    }
    atomic_file_commit(f, tmp, path, ok);
}

// the largest header accepted (the reference reader's limit): a bigger length
// means this is not a safetensors file
#define SAFETENSORS_MAX_HEADER (100u * 1000u * 1000u)

// reads every tensor (F32 only). On any damage returns false and says what in err:
// truncated files, bad header lengths, malformed JSON, offsets outside the file,
// other dtypes. metadata (optional) receives "__metadata__".
static bool safetensors_read(const char* path, SafeTensorMap* out, std::string* err, SafeMetadata* metadata = nullptr) {
    safetensors_check_host();
    out->clear();
    if (metadata) metadata->clear();
    std::string where = std::string(path) + ": ";
    auto fail = [&](const std::string& what) { if (err) *err = where + what; return false; };
    FILE* f = fopen(path, "rb");
    if (!f) return fail(std::string("cannot open: ") + strerror(errno));
    struct Closer { FILE* f; ~Closer() { fclose(f); } } closer = {f};
    struct stat st;
    if (fstat(fileno(f), &st) != 0) return fail(std::string("cannot stat: ") + strerror(errno));
    uint64_t file_size = (uint64_t)st.st_size;
    unsigned char len[8];
    if (file_size < 8 || fread(len, 1, 8, f) != 8)
        return fail("truncated: " + std::to_string(file_size) + " bytes, fewer than the 8-byte header length");
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = header_len << 8 | len[i];
    if (header_len > file_size - 8)
        return fail("header length " + std::to_string(header_len) + " runs past the end of the file (" +
                    std::to_string(file_size) + " bytes): truncated, or not a safetensors file");
    if (header_len > SAFETENSORS_MAX_HEADER)
        return fail("header length " + std::to_string(header_len) + " is over the limit of " +
                    std::to_string(SAFETENSORS_MAX_HEADER) + ": not a safetensors file");
    std::string header(header_len, '\0');
    if (header_len > 0 && fread(&header[0], 1, header_len, f) != header_len) return fail("cannot read the header");
    JsonValue root;
    std::string json_err;
    if (!json_parse(header, &root, &json_err)) return fail("malformed JSON header: " + json_err);
    if (root.kind != JsonValue::OBJECT) return fail("the header is not a JSON object");

    uint64_t data_start = 8 + header_len, data_size = file_size - data_start;
    struct Span { uint64_t begin, end; std::string name; };
    std::vector<Span> spans;
    for (const auto& kv : root.members) {
        const std::string& name = kv.first;
        const JsonValue& e = kv.second;
        if (name == "__metadata__") {
            if (e.kind != JsonValue::OBJECT) return fail("__metadata__ is not an object");
            for (const auto& m : e.members) {
                if (m.second.kind != JsonValue::STRING) return fail("__metadata__ value of \"" + m.first + "\" is not a string");
                if (metadata) (*metadata)[m.first] = m.second.str;
            }
            continue;
        }
        std::string t = "tensor " + name + ": ";
        if (e.kind != JsonValue::OBJECT) return fail(t + "its entry is not an object");
        const JsonValue* dtype = e.find("dtype");
        const JsonValue* shape = e.find("shape");
        const JsonValue* offsets = e.find("data_offsets");
        if (!dtype || dtype->kind != JsonValue::STRING) return fail(t + "no \"dtype\" string");
        if (!shape || shape->kind != JsonValue::ARRAY) return fail(t + "no \"shape\" array");
        if (!offsets || offsets->kind != JsonValue::ARRAY || offsets->items.size() != 2)
            return fail(t + "no \"data_offsets\" pair [begin, end]");
        if (dtype->str != "F32") return fail(t + "dtype " + dtype->str + " is not supported (only F32 is read)");
        SafeTensorData d;
        for (const JsonValue& dim : shape->items) {
            if (dim.kind != JsonValue::NUMBER || !dim.is_integer || dim.integer < 0)
                return fail(t + "shape entries must be integers >= 0");
            d.shape.push_back(dim.integer);
        }
        for (const JsonValue& o : offsets->items)
            if (o.kind != JsonValue::NUMBER || !o.is_integer || o.integer < 0)
                return fail(t + "data_offsets must be integers >= 0");
        uint64_t begin = (uint64_t)offsets->items[0].integer, end = (uint64_t)offsets->items[1].integer, numel;
        std::string span = "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "]";
        if (!safetensors_numel(d.shape, &numel)) return fail(t + "shape " + safetensors_shape_string(d.shape) + " is too large");
        if (end < begin) return fail(t + span + " end before they begin");
        if (end > data_size)
            return fail(t + span + " lie outside the data (" + std::to_string(data_size) + " bytes): the file is truncated or damaged");
        if (end - begin != numel * sizeof(float))
            return fail(t + span + " hold " + std::to_string(end - begin) + " bytes but shape " +
                        safetensors_shape_string(d.shape) + " of F32 needs " + std::to_string(numel * sizeof(float)));
        d.data.resize(numel);
        if (numel > 0 && (fseeko(f, (off_t)(data_start + begin), SEEK_SET) != 0 ||
                          fread(d.data.data(), sizeof(float), numel, f) != numel))
            return fail(t + "cannot read its data");
        spans.push_back({begin, end, name});
        (*out)[name] = std::move(d);
    }
    // the tensors tile the data exactly: no overlaps, no gaps, nothing left over
    std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
    uint64_t expect = 0;
    for (size_t i = 0; i < spans.size(); i++) {
        if (spans[i].begin != expect) {
            std::string prev = i ? "tensor " + spans[i - 1].name : std::string("the start of the data");
            return fail("tensor " + spans[i].name + " starts at byte " + std::to_string(spans[i].begin) + " but " + prev +
                        " ends at " + std::to_string(expect) + " (tensors overlap or leave a gap)");
        }
        expect = spans[i].end;
    }
    if (expect != data_size)
        return fail(std::to_string(data_size - expect) + " bytes of data after the last tensor");
    return true;
}

static SafeTensorMap safetensors_read(const char* path, SafeMetadata* metadata = nullptr) {
    SafeTensorMap out;
    std::string err;
    if (!safetensors_read(path, &out, &err, metadata)) FATAL("%s", err.c_str());
    return out;
}
