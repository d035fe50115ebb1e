// dataloader.h: reads a token shard into host memory and serves (inputs, targets)
// batches. CPU only; the trainer copies batches to the GPU itself.
//
// Shard format (written by data_scripts/*.py and write_shard below):
//   header: 256 little-endian int32: [0] magic 20261123, [1] version 1,
//           [2] token count n, [3] vocab size, rest 0
//   then n tokens as little-endian uint16.
//
// Two ways to draw batches:
//  - sequential (the default; used for validation): row i of a batch is
//    tokens[pos + i*T .. pos + i*T + T), its targets the same window shifted by
//    one. pos advances by B*T and wraps to 0 when the next batch would need a
//    token past the end, so every batch is full.
//  - random windows (dataloader_set_random; used for training): each row starts
//    at an offset drawn from a hash of (seed, batch number, row). Text in
//    canonical order (the Bible book by book) would otherwise feed the model one
//    book at a time and its validation loss would wander with the book. Here
//    pos counts batches, so a checkpoint's position resumes the same stream.
#pragma once
#include "common.h"
#include <cerrno>
#include <cstdio>

#define SHARD_MAGIC 20261123
#define SHARD_VERSION 1
#define SHARD_HEADER_INTS 256

typedef struct {
    char path[512];     // for error messages
    int B, T;           // batch size, sequence length
    int vocab;          // from the header
    size_t n_tokens;    // from the header
    uint16_t* tokens;   // (n_tokens) the whole shard
    size_t pos;         // sequential: first token of the next batch; random: batches drawn so far
    bool random;        // random windows instead of sequential batches
    uint64_t seed;      // for random windows
} DataLoader;

// Writes tokens to path.tmp and renames it to path, so a reader never sees a
// half-written shard.
static void write_shard(const char* path, const uint16_t* tokens, size_t n, int vocab) {
    if (n > 0x7fffffffull) FATAL("write_shard %s: %zu tokens do not fit the int32 header", path, n);
    std::vector<char> tmp(strlen(path) + 5);
    snprintf(tmp.data(), tmp.size(), "%s.tmp", path);
    int32_t header[SHARD_HEADER_INTS] = {0};
    header[0] = SHARD_MAGIC; header[1] = SHARD_VERSION; header[2] = (int32_t)n; header[3] = vocab;
    FILE* f = fopen(tmp.data(), "wb");
    if (!f) FATAL("write_shard: cannot open %s for writing: %s", tmp.data(), strerror(errno));
    bool ok = fwrite(header, sizeof(int32_t), SHARD_HEADER_INTS, f) == SHARD_HEADER_INTS;
    ok = ok && (n == 0 || fwrite(tokens, sizeof(uint16_t), n, f) == n);  // x86: already little-endian
    ok = (fclose(f) == 0) && ok;
    if (!ok) { remove(tmp.data()); FATAL("write_shard: failed writing %s", tmp.data()); }
    if (rename(tmp.data(), path) != 0)
        FATAL("write_shard: cannot rename %s to %s: %s", tmp.data(), path, strerror(errno));
}

// shards shorter than one batch (B*T+1 tokens) are an error unless allow_short
static void dataloader_open_impl(DataLoader* dl, const char* path, int B, int T, bool allow_short) {
    memset(dl, 0, sizeof(*dl));
    snprintf(dl->path, sizeof dl->path, "%s", path);
    if (B <= 0 || T <= 0) FATAL("dataloader %s: batch size B=%d and sequence length T=%d must be positive", path, B, T);
    dl->B = B; dl->T = T;

    FILE* f = fopen(path, "rb");
    if (!f) FATAL("dataloader: cannot open shard %s: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) FATAL("dataloader: cannot seek in %s: %s", path, strerror(errno));
    long size_l = ftell(f);
    if (size_l < 0) FATAL("dataloader: cannot read the size of %s: %s", path, strerror(errno));
    rewind(f);
    size_t size = (size_t)size_l, header_bytes = SHARD_HEADER_INTS * sizeof(int32_t);

    if (size < header_bytes)
        FATAL("dataloader: %s is too short (%zu bytes) to hold the %zu-byte header; truncated or not a shard",
              path, size, header_bytes);
    int32_t header[SHARD_HEADER_INTS];
    if (fread(header, sizeof(int32_t), SHARD_HEADER_INTS, f) != SHARD_HEADER_INTS)
        FATAL("dataloader: failed reading the header of %s", path);
    if (header[0] != SHARD_MAGIC)
        FATAL("dataloader: %s has bad magic number %d (expected %d); not a token shard",
              path, header[0], SHARD_MAGIC);
    if (header[1] != SHARD_VERSION)
        FATAL("dataloader: %s has unsupported version %d (expected %d)", path, header[1], SHARD_VERSION);
    if (header[2] < 0) FATAL("dataloader: %s has a negative token count %d in its header", path, header[2]);
    if (header[3] <= 0 || header[3] > 65536)
        FATAL("dataloader: %s has invalid vocab size %d in its header (must be 1..65536 for uint16 tokens)",
              path, header[3]);
    size_t n = (size_t)header[2];
    size_t expect = header_bytes + n * sizeof(uint16_t);
    if (size != expect)
        FATAL("dataloader: %s size mismatch: header says %zu tokens (%zu bytes) but the file has %zu bytes (%s)",
              path, n, expect, size, size < expect ? "truncated" : "trailing bytes");
    size_t need = (size_t)B * T + 1;
    if (n < need && !allow_short)
        FATAL("dataloader: %s has too few tokens: %zu, but a batch of B=%d T=%d needs at least %zu",
              path, n, B, T, need);

    dl->tokens = (uint16_t*)malloc_check(n * sizeof(uint16_t));
    if (fread(dl->tokens, sizeof(uint16_t), n, f) != n) FATAL("dataloader: failed reading tokens of %s", path);
    fclose(f);
    dl->n_tokens = n;
    dl->vocab = header[3];
    // one pass so a bad token fails here with a position, not as an out-of-range embedding lookup later
    for (size_t i = 0; i < n; i++)
        if (dl->tokens[i] >= dl->vocab)
            FATAL("dataloader: %s token %u at index %zu is out of range (>= vocab size %d)",
                  path, (unsigned)dl->tokens[i], i, dl->vocab);
    dl->pos = 0;
}

// switch to random windows (see the top of the file); pos restarts at 0
static void dataloader_open(DataLoader* dl, const char* path, int B, int T) {
    dataloader_open_impl(dl, path, B, T, false);
}

// For validation, which is optional: a split shorter than one batch evaluates
// with the rows of T+1 tokens it holds (dl->B shrinks to that). Returns the
// rows per batch, 0 when not even one row fits (the loader is then empty).
static int dataloader_open_eval(DataLoader* dl, const char* path, int B, int T) {
    dataloader_open_impl(dl, path, B, T, true);
    size_t rows = dl->n_tokens > 0 ? (dl->n_tokens - 1) / (size_t)T : 0;
    if (rows < (size_t)B) dl->B = (int)rows;
    if (dl->B == 0) { free(dl->tokens); dl->tokens = nullptr; }
    return dl->B;
}

static void dataloader_set_random(DataLoader* dl, uint64_t seed) {
    dl->random = true; dl->seed = seed; dl->pos = 0;
}

// a stateless hash, so window k of batch j never depends on history
static uint64_t dataloader_hash(uint64_t x) { return splitmix64(x); }

// inputs, targets: (B*T) host ints
static void dataloader_next_batch(DataLoader* dl, int* inputs, int* targets) {
    size_t BT = (size_t)dl->B * dl->T;
    if (dl->random) {
        size_t starts = dl->n_tokens - dl->T;  // a window needs T+1 tokens
        for (int r = 0; r < dl->B; r++) {
            size_t start = dataloader_hash(dl->seed ^ dataloader_hash(dl->pos * 65536 + r)) % starts;
            for (int t = 0; t < dl->T; t++) {
                inputs[(size_t)r * dl->T + t] = dl->tokens[start + t];
                targets[(size_t)r * dl->T + t] = dl->tokens[start + t + 1];
            }
        }
        dl->pos++;
        return;
    }
    if (dl->pos + BT + 1 > dl->n_tokens) dl->pos = 0;  // wrap so the batch is full
    const uint16_t* src = dl->tokens + dl->pos;
    for (size_t i = 0; i < BT; i++) {
        inputs[i] = src[i];
        targets[i] = src[i + 1];
    }
    dl->pos += BT;
}

static size_t dataloader_position(const DataLoader* dl) { return dl->pos; }

// pos: what dataloader_position returned (e.g. saved in a checkpoint): the token
// offset of the next batch, or in random mode the number of batches drawn
static void dataloader_seek(DataLoader* dl, size_t pos) {
    if (dl->random) { dl->pos = pos; return; }
    if (pos >= dl->n_tokens)
        FATAL("dataloader: seek position %zu is past the end of %s (%zu tokens)", pos, dl->path, dl->n_tokens);
    dl->pos = pos;
}

static void dataloader_reset(DataLoader* dl) { dl->pos = 0; }
static int dataloader_vocab(const DataLoader* dl) { return dl->vocab; }
static size_t dataloader_num_tokens(const DataLoader* dl) { return dl->n_tokens; }

static void dataloader_free(DataLoader* dl) {
    free(dl->tokens);
    dl->tokens = nullptr;
    dl->n_tokens = 0;
}
