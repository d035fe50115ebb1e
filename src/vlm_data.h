// vlm_data.h: the vision-language dataset (images + captions + questions and
// answers) in host memory, and the batches train_vlm feeds its model. CPU only.
//
// A dataset is images (n_images, H, W, 3) uint8 and records; a record is one
// image index with a caption, or a question and its answer, or both, as word ids
// of a Vocab (tokenizer.h). It comes from one of two sources:
//
//  - a folder with a JSON Lines file (vlm_dataset_from_jsonl): one record a line,
//      {"image": "images/000001.png", "caption": "...", "question": "...", "answer": "...", "type": "what"}
//    "image" (required): a PNG, JPEG or BMP, relative to the JSONL's folder (or
//    absolute), read as RGB; several lines may name the same image (it is read
//    once). "caption", or "question" with "answer", or all three. "type"
//    (optional) is the question type, for per-type scores: what, where, colour,
//    count, exists; a missing or other name counts as "other". Other fields are
//    ignored (make_scenes adds "items").
//  - a binary shard (vlm_shard_write / vlm_shard_read; build/make_scenes packs
//    them), which holds the decoded images and the vocabulary, so a run reads
//    one file and never decodes an image:
//      header: 256 little-endian int32:
//        [0] magic 20261127  [1] version 1  [2] n_images  [3] H  [4] W  [5] channels (3)
//        [6] n_records  [7] vocabulary size  [8] vocab_bytes  [9] n_tokens  [10..255] 0
//      then, packed with no padding:
//        vocab_bytes   the vocabulary in the text format of tokenizer.h (one token a line)
//        images        n_images*H*W*3 uint8, (n_images, H, W, 3) row-major RGB
//        records       n_records*8 int32: image, type (-1 none, else VLM_Q_*),
//                      caption_begin, caption_len, question_begin, question_len,
//                      answer_begin, answer_len (a *_begin indexes the token pool)
//        tokens        n_tokens int32: the token pool (word ids, no special tokens added)
//    The reader checks every field (magic, version, sizes against the file's, ids
//    and offsets in range) and stops with a message naming the file.
//
// Batches (host arrays the caller owns; vlm_get_batch fills them):
//   kind VLM_CAPTION: text = [<bos> <image> caption... <eos>]; the targets are the
//                     caption words and <eos> (-1 elsewhere: predicting <image>
//                     from <bos> has no loss; the <image> position's target is the
//                     first caption word)
//   kind VLM_QA:      text = [<bos> <image> question... <sep> answer... <eos>]; the
//                     targets are only the answer words and <eos> (the <sep>
//                     position's target is the first answer word)
//   targets[t] is the token that should follow position t (the LM predicts it from
//   tokens[0..t]); -1 = no loss (cross_entropy.h skips -1).
//   images: (B, H, W, 3) float in [0,1]; tokens, targets: (B, T), padded beyond the
//   sequence with <pad> (0) and -1; lengths: (B) valid tokens; types: (B) VLM_Q_* of
//   the question, -1 for captions. The one <image> token marks where the model puts
//   the image's embeddings (its own business: one vector or many).
//
//   VlmDataset ds;
//   vlm_shard_read(&ds, "data/scenes/train.vlm");           // or vlm_dataset_from_jsonl(&ds, path, &vocab, 64, 64, false)
//   std::vector<int> ids = vlm_record_ids(&ds, VLM_QA);     // the records a kind can use
//   int T = vlm_max_text_len(&ds, VLM_QA);
//   vlm_get_batch(&ds, VLM_QA, ids_of_this_batch, B, T, images, tokens, targets, lengths, types);
//   vlm_dataset_free(&ds);
//
// stb_image's implementation is compiled here, its functions static: every program
// of this project is one translation unit. A program that includes this file must
// not define STB_IMAGE_IMPLEMENTATION itself (nor include stb_image.h before it).
#pragma once
#include <algorithm>
#include <cerrno>
#include <map>
#include <string>
#include <vector>
#include "common.h"
#include "json.h"
#include "safetensors.h"  // atomic_file_open / atomic_file_commit
#include "tokenizer.h"

#ifndef STBI_INCLUDE_STB_IMAGE_H
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#include <stb/stb_image.h>
#endif

#define VLM_SHARD_MAGIC 20261127
#define VLM_SHARD_VERSION 1
#define VLM_SHARD_HEADER_INTS 256
#define VLM_RECORD_INTS 8
#define VLM_MAX_SIDE 4096  // the largest H or W accepted

typedef enum { VLM_CAPTION = 0, VLM_QA = 1 } VlmKind;

// question types (a record's "type"); VLM_Q_OTHER for a missing or unknown name
enum { VLM_Q_WHAT = 0, VLM_Q_WHERE, VLM_Q_COLOUR, VLM_Q_COUNT, VLM_Q_EXISTS, VLM_Q_OTHER, VLM_NUM_QTYPES };
static const char* const VLM_QTYPE_NAMES[VLM_NUM_QTYPES] = {"what", "where", "colour", "count", "exists", "other"};

static int vlm_qtype_from_name(const std::string& name) {
    for (int i = 0; i < VLM_NUM_QTYPES; i++)
        if (name == VLM_QTYPE_NAMES[i]) return i;
    if (name == "color") return VLM_Q_COLOUR;
    return VLM_Q_OTHER;
}

typedef struct {
    int image;                  // index into the dataset's images
    int type;                   // VLM_Q_* of the question; -1 when the record has none
    std::vector<int> caption;   // word ids (empty: no caption)
    std::vector<int> question;  // word ids (empty: no question; then answer is empty too)
    std::vector<int> answer;
} VlmRecord;

typedef struct {
    int n_images, H, W;             // images are (n_images, H, W, 3)
    std::vector<uint8_t> images;    // RGB, row-major
    std::vector<VlmRecord> records;
    Vocab vocab;                    // the vocabulary the ids belong to
    std::string source;             // the file it came from, for messages
} VlmDataset;

static int vlm_num_records(const VlmDataset* ds) { return (int)ds->records.size(); }
static int vlm_num_images(const VlmDataset* ds) { return ds->n_images; }

static void vlm_dataset_free(VlmDataset* ds) {
    ds->images.clear(); ds->images.shrink_to_fit();
    ds->records.clear(); ds->records.shrink_to_fit();
    ds->vocab.words.clear(); ds->vocab.index.clear();
    ds->n_images = 0;
}

// ---------------------------------------------------------------------------
// resizing (used for a user's images of another size, and by make_scenes)

// the source taps of each output index along one axis: area (box) averaging when
// shrinking, so every source pixel counts and nothing aliases; bilinear (pixel
// centres aligned) when enlarging or keeping the size (then it is the identity)
struct ResizeTaps {
    std::vector<int> begin, count;  // per output index: its taps in idx/w
    std::vector<int> idx;
    std::vector<float> w;
};

static ResizeTaps resize_taps(int src, int dst) {
    ResizeTaps t;
    double scale = (double)src / dst;
    for (int i = 0; i < dst; i++) {
        t.begin.push_back((int)t.idx.size());
        if (dst < src) {
            double x0 = i * scale, x1 = (i + 1) * scale;
            for (int s = (int)x0; s < src && s < x1; s++) {
                double overlap = std::min(x1, (double)s + 1) - std::max(x0, (double)s);
                if (overlap > 0) { t.idx.push_back(s); t.w.push_back((float)(overlap / scale)); }
            }
        } else {
            double x = (i + 0.5) * scale - 0.5;
            x = std::max(0.0, std::min(x, (double)(src - 1)));
            int s0 = (int)x, s1 = std::min(s0 + 1, src - 1);
            float f = (float)(x - s0);
            t.idx.push_back(s0); t.w.push_back(1.0f - f);
            t.idx.push_back(s1); t.w.push_back(f);
        }
        t.count.push_back((int)t.idx.size() - t.begin.back());
    }
    return t;
}

// src (sh, sw, c) uint8 -> dst (dh, dw, c) uint8, separable (rows, then columns)
static void image_resize(const uint8_t* src, int sh, int sw, int c, uint8_t* dst, int dh, int dw) {
    ResizeTaps tx = resize_taps(sw, dw), ty = resize_taps(sh, dh);
    std::vector<float> rows((size_t)sh * dw * c);  // horizontally resized
    for (int y = 0; y < sh; y++)
        for (int x = 0; x < dw; x++)
            for (int ch = 0; ch < c; ch++) {
                float acc = 0;
                for (int k = tx.begin[x]; k < tx.begin[x] + tx.count[x]; k++)
                    acc += tx.w[k] * src[((size_t)y * sw + tx.idx[k]) * c + ch];
                rows[((size_t)y * dw + x) * c + ch] = acc;
            }
    for (int y = 0; y < dh; y++)
        for (int x = 0; x < dw; x++)
            for (int ch = 0; ch < c; ch++) {
                float acc = 0;
                for (int k = ty.begin[y]; k < ty.begin[y] + ty.count[y]; k++)
                    acc += ty.w[k] * rows[((size_t)ty.idx[k] * dw + x) * c + ch];
                float v = acc + 0.5f;
                dst[((size_t)y * dw + x) * c + ch] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
}

// ---------------------------------------------------------------------------
// from a JSONL folder

static std::string vlm_dirname(const std::string& path) {
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? std::string(".") : path.substr(0, slash + (slash == 0));
}

// reads one image as RGB into ds (resized, or FATAL, when its size is not H x W);
// ds->H and ds->W <= 0 take the size of this image
static void vlm_add_image(VlmDataset* ds, const std::string& path, bool resize, const char* jsonl, int line) {
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) FATAL("vlm_data: %s line %d: cannot open image %s: %s", jsonl, line, path.c_str(), strerror(errno));
    int w = 0, h = 0, c = 0;
    uint8_t* px = stbi_load_from_file(f, &w, &h, &c, 3);
    fclose(f);
    if (!px) FATAL("vlm_data: %s line %d: cannot decode image %s (%s; PNG, JPEG or BMP expected)",
                   jsonl, line, path.c_str(), stbi_failure_reason());
    if (ds->H <= 0 || ds->W <= 0) {
        if (h > VLM_MAX_SIDE || w > VLM_MAX_SIDE)
            FATAL("vlm_data: %s line %d: image %s is %dx%d, larger than %d on a side", jsonl, line, path.c_str(), h, w, VLM_MAX_SIDE);
        ds->H = h; ds->W = w;
    }
    size_t n = (size_t)ds->H * ds->W * 3;
    ds->images.resize(ds->images.size() + n);
    uint8_t* out = ds->images.data() + ds->images.size() - n;
    if (h == ds->H && w == ds->W) {
        memcpy(out, px, n);
    } else if (resize) {
        image_resize(px, h, w, 3, out, ds->H, ds->W);
    } else {
        stbi_image_free(px);
        FATAL("vlm_data: %s line %d: image %s is %dx%d (height x width) but the dataset is %dx%d; resize it, or load with resize",
              jsonl, line, path.c_str(), h, w, ds->H, ds->W);
    }
    stbi_image_free(px);
    ds->n_images++;
}

// the optional string field key of a JSONL line; FATAL when it is there but not a string
static const std::string* vlm_string_field(const JsonValue& obj, const char* key, const char* path, int line) {
    const JsonValue* v = obj.find(key);
    if (!v) return nullptr;
    if (v->kind != JsonValue::STRING) FATAL("vlm_data: %s line %d: \"%s\" is not a string", path, line, key);
    return &v->str;
}

// the words of a text field; FATAL when it holds none
static std::vector<int> vlm_encode_field(const Vocab* vocab, const std::string& text, const char* key, const char* path, int line) {
    std::vector<int> ids = vocab_encode(vocab, text);
    if (ids.empty()) FATAL("vlm_data: %s line %d: \"%s\" has no words", path, line, key);
    return ids;
}

// H, W: the size every image is stored at (both <= 0: the first image's size).
// An image of another size is resized when resize, else FATAL naming it and both
// sizes. FATAL naming the file and line on a malformed line, a missing or
// unreadable image, a line without "image" or without text.
static void vlm_dataset_from_jsonl(VlmDataset* ds, const char* jsonl_path, const Vocab* vocab, int H, int W, bool resize) {
    *ds = VlmDataset();
    ds->H = H; ds->W = W; ds->n_images = 0;
    ds->vocab = *vocab;
    ds->source = jsonl_path;
    if ((H > 0) != (W > 0)) FATAL("vlm_data: H=%d and W=%d must both be positive (or both 0: the first image's size)", H, W);
    if (H > VLM_MAX_SIDE || W > VLM_MAX_SIDE) FATAL("vlm_data: H=%d W=%d is larger than %d", H, W, VLM_MAX_SIDE);
    std::string dir = vlm_dirname(jsonl_path);
    std::map<std::string, int> image_index;
    for (const JsonlLine& l : jsonl_read(jsonl_path, "vlm_data")) {
        int line = l.line;
        if (l.value.kind != JsonValue::OBJECT) FATAL("vlm_data: %s line %d: not a JSON object", jsonl_path, line);
        const std::string* image = vlm_string_field(l.value, "image", jsonl_path, line);
        const std::string* caption = vlm_string_field(l.value, "caption", jsonl_path, line);
        const std::string* question = vlm_string_field(l.value, "question", jsonl_path, line);
        const std::string* answer = vlm_string_field(l.value, "answer", jsonl_path, line);
        const std::string* type = vlm_string_field(l.value, "type", jsonl_path, line);
        if (!image || image->empty()) FATAL("vlm_data: %s line %d: no \"image\" (the image's path)", jsonl_path, line);
        if (!question != !answer)
            FATAL("vlm_data: %s line %d: a \"%s\" without an \"%s\"", jsonl_path, line,
                  question ? "question" : "answer", question ? "answer" : "question");
        if (!caption && !question)
            FATAL("vlm_data: %s line %d: neither a \"caption\" nor a \"question\" and \"answer\"", jsonl_path, line);
        VlmRecord r;
        if (caption) r.caption = vlm_encode_field(vocab, *caption, "caption", jsonl_path, line);
        if (question) {
            r.question = vlm_encode_field(vocab, *question, "question", jsonl_path, line);
            r.answer = vlm_encode_field(vocab, *answer, "answer", jsonl_path, line);
        }
        r.type = question ? (type ? vlm_qtype_from_name(*type) : VLM_Q_OTHER) : -1;
        std::string path = (*image)[0] == '/' ? *image : dir + "/" + *image;
        auto it = image_index.find(path);
        if (it == image_index.end()) {
            vlm_add_image(ds, path, resize, jsonl_path, line);
            it = image_index.emplace(path, ds->n_images - 1).first;
        }
        r.image = it->second;
        ds->records.push_back(std::move(r));
    }
    if (ds->records.empty()) FATAL("vlm_data: %s holds no records", jsonl_path);
}

// ---------------------------------------------------------------------------
// the binary shard (format at the top of the file)

// writes path.tmp, then renames it to path; FATAL on error
static void vlm_shard_write(const VlmDataset* ds, const char* path) {
    std::string vocab_text = vocab_to_text(&ds->vocab);
    std::vector<int32_t> recs, pool;
    for (const VlmRecord& r : ds->records) {
        recs.push_back(r.image); recs.push_back(r.type);
        for (const std::vector<int>* part : {&r.caption, &r.question, &r.answer}) {
            recs.push_back((int32_t)pool.size()); recs.push_back((int32_t)part->size());
            pool.insert(pool.end(), part->begin(), part->end());
        }
    }
    if (pool.size() > 0x7fffffffull || ds->records.size() > 0x7fffffffull || vocab_text.size() > 0x7fffffffull)
        FATAL("vlm_shard_write %s: the dataset is too large for the int32 header", path);
    int32_t header[VLM_SHARD_HEADER_INTS] = {0};
    header[0] = VLM_SHARD_MAGIC; header[1] = VLM_SHARD_VERSION;
    header[2] = ds->n_images; header[3] = ds->H; header[4] = ds->W; header[5] = 3;
    header[6] = (int32_t)ds->records.size(); header[7] = vocab_size(&ds->vocab);
    header[8] = (int32_t)vocab_text.size(); header[9] = (int32_t)pool.size();
    std::string tmp;
    FILE* f = atomic_file_open(path, &tmp);
    bool ok = fwrite(header, sizeof(int32_t), VLM_SHARD_HEADER_INTS, f) == VLM_SHARD_HEADER_INTS;  // x86: little-endian
    ok = ok && fwrite(vocab_text.data(), 1, vocab_text.size(), f) == vocab_text.size();
    ok = ok && (ds->images.empty() || fwrite(ds->images.data(), 1, ds->images.size(), f) == ds->images.size());
    ok = ok && (recs.empty() || fwrite(recs.data(), sizeof(int32_t), recs.size(), f) == recs.size());
    ok = ok && (pool.empty() || fwrite(pool.data(), sizeof(int32_t), pool.size(), f) == pool.size());
    atomic_file_commit(f, tmp, path, ok);
}

static void vlm_shard_read(VlmDataset* ds, const char* path) {
    *ds = VlmDataset();
    ds->source = path;
    FILE* f = fopen(path, "rb");
    if (!f) FATAL("vlm_data: cannot open shard %s: %s", path, strerror(errno));
    struct Closer { FILE* f; ~Closer() { fclose(f); } } closer = {f};
    if (fseeko(f, 0, SEEK_END) != 0) FATAL("vlm_data: cannot seek in %s: %s", path, strerror(errno));
    uint64_t size = (uint64_t)ftello(f);
    rewind(f);
    const uint64_t header_bytes = VLM_SHARD_HEADER_INTS * sizeof(int32_t);
    if (size < header_bytes)
        FATAL("vlm_data: %s is too short (%llu bytes) to hold the %llu-byte header; truncated or not a VLM shard",
              path, (unsigned long long)size, (unsigned long long)header_bytes);
    int32_t h[VLM_SHARD_HEADER_INTS];
    if (fread(h, sizeof(int32_t), VLM_SHARD_HEADER_INTS, f) != VLM_SHARD_HEADER_INTS)
        FATAL("vlm_data: failed reading the header of %s", path);
    if (h[0] != VLM_SHARD_MAGIC)
        FATAL("vlm_data: %s has bad magic number %d (expected %d); not a VLM shard", path, h[0], VLM_SHARD_MAGIC);
    if (h[1] != VLM_SHARD_VERSION)
        FATAL("vlm_data: %s has unsupported version %d (expected %d)", path, h[1], VLM_SHARD_VERSION);
    if (h[2] < 0 || h[6] < 0 || h[8] < 0 || h[9] < 0)
        FATAL("vlm_data: %s has a negative count in its header (images %d, records %d, vocab bytes %d, tokens %d)",
              path, h[2], h[6], h[8], h[9]);
    if (h[3] <= 0 || h[4] <= 0 || h[3] > VLM_MAX_SIDE || h[4] > VLM_MAX_SIDE || h[5] != 3)
        FATAL("vlm_data: %s has an invalid image shape %dx%dx%d in its header (H, W in 1..%d, 3 channels)",
              path, h[3], h[4], h[5], VLM_MAX_SIDE);
    ds->n_images = h[2]; ds->H = h[3]; ds->W = h[4];
    uint64_t n_rec = (uint64_t)h[6], vocab_bytes = (uint64_t)h[8], n_tok = (uint64_t)h[9];
    uint64_t image_bytes = (uint64_t)ds->n_images * ds->H * ds->W * 3;
    uint64_t expect = header_bytes + vocab_bytes + image_bytes + n_rec * VLM_RECORD_INTS * 4 + n_tok * 4;
    if (size != expect)
        FATAL("vlm_data: %s size mismatch: the header says %d images of %dx%d, %d records, %d tokens and %d vocabulary bytes "
              "(%llu bytes) but the file has %llu bytes (%s)", path, h[2], h[3], h[4], h[6], h[9], h[8],
              (unsigned long long)expect, (unsigned long long)size, size < expect ? "truncated" : "trailing bytes");

    std::string vocab_text(vocab_bytes, '\0');
    if (vocab_bytes > 0 && fread(&vocab_text[0], 1, vocab_bytes, f) != vocab_bytes) FATAL("vlm_data: failed reading the vocabulary of %s", path);
    std::string what = std::string(path) + " (its vocabulary)";
    vocab_from_text(&ds->vocab, vocab_text, what.c_str());
    if (vocab_size(&ds->vocab) != h[7])
        FATAL("vlm_data: %s holds %d vocabulary tokens but its header says %d", path, vocab_size(&ds->vocab), h[7]);
    ds->images.resize(image_bytes);
    if (image_bytes > 0 && fread(ds->images.data(), 1, image_bytes, f) != image_bytes) FATAL("vlm_data: failed reading the images of %s", path);
    std::vector<int32_t> recs(n_rec * VLM_RECORD_INTS), pool(n_tok);
    if (!recs.empty() && fread(recs.data(), sizeof(int32_t), recs.size(), f) != recs.size()) FATAL("vlm_data: failed reading the records of %s", path);
    if (!pool.empty() && fread(pool.data(), sizeof(int32_t), pool.size(), f) != pool.size()) FATAL("vlm_data: failed reading the tokens of %s", path);
    for (uint64_t i = 0; i < n_tok; i++)
        if (pool[i] < 0 || pool[i] >= h[7])
            FATAL("vlm_data: %s token %d at index %llu is out of range (vocab size %d)", path, pool[i], (unsigned long long)i, h[7]);
    const char* part_names[3] = {"caption", "question", "answer"};
    ds->records.resize(n_rec);
    for (uint64_t i = 0; i < n_rec; i++) {
        const int32_t* q = &recs[i * VLM_RECORD_INTS];
        VlmRecord& r = ds->records[i];
        r.image = q[0]; r.type = q[1];
        if (r.image < 0 || r.image >= ds->n_images)
            FATAL("vlm_data: %s record %llu: image %d is out of range (%d images)", path, (unsigned long long)i, r.image, ds->n_images);
        std::vector<int>* parts[3] = {&r.caption, &r.question, &r.answer};
        for (int p = 0; p < 3; p++) {
            int64_t begin = q[2 + 2 * p], len = q[3 + 2 * p];
            if (begin < 0 || len < 0 || begin + len > (int64_t)n_tok)
                FATAL("vlm_data: %s record %llu: %s [%lld, +%lld) lies outside the %llu tokens", path, (unsigned long long)i,
                      part_names[p], (long long)begin, (long long)len, (unsigned long long)n_tok);
            parts[p]->assign(pool.begin() + begin, pool.begin() + begin + len);
        }
        bool has_q = !r.question.empty();
        if (has_q != !r.answer.empty() || (r.caption.empty() && !has_q) || (has_q ? r.type < 0 || r.type >= VLM_NUM_QTYPES : r.type != -1))
            FATAL("vlm_data: %s record %llu is inconsistent (caption %zu, question %zu, answer %zu tokens, type %d)", path,
                  (unsigned long long)i, r.caption.size(), r.question.size(), r.answer.size(), r.type);
    }
}

// ---------------------------------------------------------------------------
// sequences and batches (layout at the top of the file)

// true when the record has what kind needs (a caption; a question and answer)
static bool vlm_record_has(const VlmRecord& r, VlmKind kind) {
    return kind == VLM_CAPTION ? !r.caption.empty() : !r.question.empty();
}

// the record ids a kind can use: for VLM_QA every record with a question; for
// VLM_CAPTION one record per distinct (image, caption), the first, since the
// lines of make_scenes repeat a scene's caption with each of its questions
static std::vector<int> vlm_record_ids(const VlmDataset* ds, VlmKind kind) {
    std::vector<int> ids;
    std::map<std::pair<int, std::vector<int>>, int> seen;
    for (int i = 0; i < vlm_num_records(ds); i++) {
        const VlmRecord& r = ds->records[i];
        if (!vlm_record_has(r, kind)) continue;
        if (kind == VLM_CAPTION && !seen.emplace(std::make_pair(r.image, r.caption), i).second) continue;
        ids.push_back(i);
    }
    return ids;
}

// the token sequence of a record (see the top of the file) into seq; returns the
// index of its first target token: seq[0 .. returned) is the prompt a model
// generates from, seq[returned .. len-1) the reference text, seq[len-1] <eos>
static int vlm_sequence(const VlmDataset* ds, VlmKind kind, int record, std::vector<int>* seq) {
    if (record < 0 || record >= vlm_num_records(ds))
        FATAL("vlm_data: record id %d is out of range (%s has %d records)", record, ds->source.c_str(), vlm_num_records(ds));
    const VlmRecord& r = ds->records[record];
    if (!vlm_record_has(r, kind))
        FATAL("vlm_data: record %d of %s has no %s (use vlm_record_ids to pick records)", record, ds->source.c_str(),
              kind == VLM_CAPTION ? "caption" : "question and answer");
    seq->assign({VOCAB_BOS, VOCAB_IMAGE});
    if (kind == VLM_QA) {
        seq->insert(seq->end(), r.question.begin(), r.question.end());
        seq->push_back(VOCAB_SEP);
    }
    int first_target = (int)seq->size();
    const std::vector<int>& text = kind == VLM_CAPTION ? r.caption : r.answer;
    seq->insert(seq->end(), text.begin(), text.end());
    seq->push_back(VOCAB_EOS);
    return first_target;
}

// the longest sequence of the records a kind can use (0 when there are none)
static int vlm_max_text_len(const VlmDataset* ds, VlmKind kind) {
    int best = 0;
    for (const VlmRecord& r : ds->records) {
        if (!vlm_record_has(r, kind)) continue;
        int n = kind == VLM_CAPTION ? 3 + (int)r.caption.size() : 4 + (int)(r.question.size() + r.answer.size());
        best = std::max(best, n);
    }
    return best;
}

// fills the batch of the records record_ids[0..B) (layout at the top of the
// file). images, lengths and types may be null (not wanted). FATAL when a
// record is longer than T (the message gives the T needed) or lacks the kind.
static void vlm_get_batch(const VlmDataset* ds, VlmKind kind, const int* record_ids, int B, int T,
                          float* images, int* tokens, int* targets, int* lengths, int* types) {
    if (B <= 0 || T <= 0) FATAL("vlm_get_batch: B=%d and T=%d must be positive", B, T);
    std::vector<int> seq;
    size_t image_size = (size_t)ds->H * ds->W * 3;
    for (int b = 0; b < B; b++) {
        int first = vlm_sequence(ds, kind, record_ids[b], &seq);
        int len = (int)seq.size();
        if (len > T)
            FATAL("vlm_get_batch: record %d of %s is %d tokens long, more than T=%d; T must be at least %d "
                  "(vlm_max_text_len gives the longest)", record_ids[b], ds->source.c_str(), len, T, len);
        int* tok = tokens + (size_t)b * T;
        int* tgt = targets + (size_t)b * T;
        for (int t = 0; t < T; t++) {
            tok[t] = t < len ? seq[t] : VOCAB_PAD;
            tgt[t] = (t + 1 >= first && t + 1 < len) ? seq[t + 1] : -1;
        }
        const VlmRecord& r = ds->records[record_ids[b]];
        if (lengths) lengths[b] = len;
        if (types) types[b] = kind == VLM_QA ? r.type : -1;
        if (images) {
            const uint8_t* src = ds->images.data() + (size_t)r.image * image_size;
            float* dst = images + (size_t)b * image_size;
            for (size_t i = 0; i < image_size; i++) dst[i] = src[i] * (1.0f / 255.0f);
        }
    }
}
