// tokenizer.h: a word-level vocabulary for the VLM's text (captions, questions, answers).
//
// Why words and not bytes (the KJV model's tokens): the scenes of
// data_scripts/make_scenes.cpp speak a closed language of about 50 words, in
// which every word is a meaningful unit (a class, a colour, a cell, a number).
// A question and its answer are ~8 words but ~40 bytes, so word tokens make the
// sequences about 5x shorter and let the model spend its capacity on the image
// instead of on spelling. A user's own folder is tokenized the same way; a word
// that is not in the vocabulary becomes <unk>.
//
// Splitting (vocab_split): ASCII letters are lowercased; text splits on white
// space; the punctuation marks ? , . ! ; : are tokens of their own (kept, not
// dropped, so vocab_decode gives the sentence back: "is there a coat?"). Other
// characters ('-' in "t-shirt", digits, UTF-8 bytes) stay inside their word.
//
// Ids: the 6 special tokens first, then the words sorted by byte value, so a
// vocabulary built from the same text is the same on every machine:
//   0 <pad>  1 <bos>  2 <eos>  3 <image>  4 <unk>  5 <sep> (between question and answer)
// Text never encodes to a special id: a literal "<image>" in a caption is <unk>.
//
// File (vocab_save / vocab_load): UTF-8 text, one token per line, line i holding
// id i-1, the 6 special tokens first (checked on load), each line ending '\n'.
//
//   vocab_build_from_jsonl(&v, "data/scenes/train.jsonl")   the words of "caption", "question", "answer"
//   vocab_encode(&v, "Where is the bag?") -> ids of where is the bag ?   (no special tokens added)
//   vocab_decode(&v, ids, n) -> "where is the bag?"   (special tokens are skipped, except <unk>)
#pragma once
#include <algorithm>
#include <cerrno>
#include <map>
#include <set>
#include <string>
#include <vector>
#include "common.h"
#include "json.h"
#include "safetensors.h"  // write_text_file_atomic

enum { VOCAB_PAD = 0, VOCAB_BOS = 1, VOCAB_EOS = 2, VOCAB_IMAGE = 3, VOCAB_UNK = 4, VOCAB_SEP = 5, VOCAB_NUM_SPECIAL = 6 };
static const char* const VOCAB_SPECIAL[VOCAB_NUM_SPECIAL] = {"<pad>", "<bos>", "<eos>", "<image>", "<unk>", "<sep>"};

typedef struct {
    std::vector<std::string> words;   // id -> token
    std::map<std::string, int> index; // token -> id
} Vocab;

static int vocab_size(const Vocab* v) { return (int)v->words.size(); }

static bool vocab_is_punct(char c) {
    return c == '?' || c == ',' || c == '.' || c == '!' || c == ';' || c == ':';
}

// the words of text, as described at the top of the file
static std::vector<std::string> vocab_split(const std::string& text) {
    std::vector<std::string> out;
    std::string cur;
    auto flush = [&]() { if (!cur.empty()) { out.push_back(cur); cur.clear(); } };
    for (char c : text) {
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') { flush(); continue; }
        if (vocab_is_punct(c)) { flush(); out.push_back(std::string(1, c)); continue; }
        cur += (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    flush();
    return out;
}

// the special tokens then words (sorted, duplicates and specials dropped)
static void vocab_build_from_words(Vocab* v, const std::set<std::string>& words) {
    v->words.assign(VOCAB_SPECIAL, VOCAB_SPECIAL + VOCAB_NUM_SPECIAL);
    v->index.clear();
    for (int i = 0; i < VOCAB_NUM_SPECIAL; i++) v->index[VOCAB_SPECIAL[i]] = i;
    for (const std::string& w : words) {  // std::set iterates in byte order
        if (v->index.count(w)) continue;
        v->index[w] = (int)v->words.size();
        v->words.push_back(w);
    }
}

// the text fields of one JSONL record that the vocabulary covers
static const char* const VOCAB_TEXT_FIELDS[] = {"caption", "question", "answer"};

// the words of the "caption", "question" and "answer" strings of every line of
// a JSONL file (other fields are ignored; a line need not have all three).
// FATAL naming the file and line on a malformed line or a non-string field.
static void vocab_build_from_jsonl(Vocab* v, const char* jsonl) {
    std::set<std::string> words;
    for (const JsonlLine& l : jsonl_read(jsonl, "vocab")) {
        if (l.value.kind != JsonValue::OBJECT) FATAL("vocab: %s line %d: not a JSON object", jsonl, l.line);
        for (const char* field : VOCAB_TEXT_FIELDS) {
            const JsonValue* f = l.value.find(field);
            if (!f) continue;
            if (f->kind != JsonValue::STRING) FATAL("vocab: %s line %d: \"%s\" is not a string", jsonl, l.line, field);
            for (const std::string& w : vocab_split(f->str)) words.insert(w);
        }
    }
    vocab_build_from_words(v, words);
}

// parses the file format (see the top); what names the source in messages
static void vocab_from_text(Vocab* v, const std::string& text, const char* what) {
    v->words.clear();
    v->index.clear();
    if (!text.empty() && text.back() != '\n') FATAL("vocab: %s: the last line does not end with a newline (truncated?)", what);
    size_t pos = 0;
    for (int line = 1; pos < text.size(); line++) {
        size_t nl = text.find('\n', pos);
        std::string w = text.substr(pos, nl - pos);
        pos = nl + 1;
        if (w.empty()) FATAL("vocab: %s line %d is empty", what, line);
        for (char c : w)
            if (c == ' ' || c == '\t' || c == '\r') FATAL("vocab: %s line %d (\"%s\") holds white space", what, line, w.c_str());
        if (line <= VOCAB_NUM_SPECIAL && w != VOCAB_SPECIAL[line - 1])
            FATAL("vocab: %s line %d is \"%s\" but must be %s (the special tokens come first, in order); not a vocabulary file?",
                  what, line, w.c_str(), VOCAB_SPECIAL[line - 1]);
        if (v->index.count(w)) FATAL("vocab: %s line %d repeats \"%s\" (line %d)", what, line, w.c_str(), v->index[w] + 1);
        v->index[w] = (int)v->words.size();
        v->words.push_back(w);
    }
    if ((int)v->words.size() < VOCAB_NUM_SPECIAL)
        FATAL("vocab: %s has %d lines, fewer than the %d special tokens", what, (int)v->words.size(), VOCAB_NUM_SPECIAL);
}

static std::string vocab_to_text(const Vocab* v) {
    std::string s;
    for (const std::string& w : v->words) s += w + "\n";
    return s;
}

// via PATH.tmp and a rename (write_text_file_atomic), FATAL on error
static void vocab_save(const Vocab* v, const char* path) { write_text_file_atomic(path, vocab_to_text(v)); }

static void vocab_load(Vocab* v, const char* path) {
    std::string text;
    if (!read_text_file(path, &text)) FATAL("vocab: cannot read %s: %s", path, strerror(errno));
    vocab_from_text(v, text, path);
}

static bool vocab_equal(const Vocab* a, const Vocab* b) { return a->words == b->words; }

// the ids of text's words (no <bos>/<eos> added); unknown words -> <unk>
static std::vector<int> vocab_encode(const Vocab* v, const std::string& text) {
    std::vector<int> ids;
    for (const std::string& w : vocab_split(text)) {
        auto it = v->index.find(w);
        ids.push_back(it == v->index.end() || it->second < VOCAB_NUM_SPECIAL ? VOCAB_UNK : it->second);
    }
    return ids;
}

// the words joined by spaces, punctuation attached to the word before it;
// special tokens other than <unk> are skipped; an id out of range is FATAL
static std::string vocab_decode(const Vocab* v, const int* ids, int n) {
    std::string s;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= vocab_size(v)) FATAL("vocab_decode: id %d at position %d is out of range (vocab size %d)", ids[i], i, vocab_size(v));
        if (ids[i] < VOCAB_NUM_SPECIAL && ids[i] != VOCAB_UNK) continue;
        const std::string& w = v->words[ids[i]];
        bool attach = w.size() == 1 && vocab_is_punct(w[0]);
        if (!s.empty() && !attach) s += ' ';
        s += w;
    }
    return s;
}
