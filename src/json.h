// json.h: a small strict JSON parser (json_parse -> JsonValue) and a JSON Lines
// reader. Used for safetensors headers and config.json (safetensors.h) and for
// the VLM datasets' JSONL files (tokenizer.h, vlm_data.h).
//
//   json_parse(text, &value, &err)     false with a message (and the byte) in err
//   read_text_file(path, &text)        false (errno set) when the file cannot be read
//   jsonl_read(path, who)              every non-blank line parsed; FATAL naming the
//                                      file and the line number on a malformed line
#pragma once
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>
#include "common.h"

// ---------------------------------------------------------------------------
// JSON values and a strict parser (RFC 8259: no comments, no trailing commas)

struct JsonValue {
    enum Kind { NUL, BOOLEAN, NUMBER, STRING, ARRAY, OBJECT };
    Kind kind = NUL;
    bool boolean = false;
    double number = 0.0;
    bool is_integer = false;  // the literal had no fraction or exponent and fits int64_t
    int64_t integer = 0;
    std::string str;
    std::vector<JsonValue> items;                             // ARRAY
    std::vector<std::pair<std::string, JsonValue>> members;   // OBJECT, in file order

    const JsonValue* find(const std::string& key) const {
        for (const auto& kv : members)
            if (kv.first == key) return &kv.second;
        return nullptr;
    }
};

struct JsonParser {
    const char* begin;
    const char* p;
    const char* end;
    std::string err;
    int depth;

    bool fail(const std::string& what) {
        if (err.empty()) err = what + " at byte " + std::to_string(p - begin);
        return false;
    }
    void skip_space() {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    }
    bool parse_literal(const char* word) {
        size_t n = strlen(word);
        if ((size_t)(end - p) < n || memcmp(p, word, n) != 0) return fail("invalid literal");
        p += n;
        return true;
    }
    static void append_utf8(std::string* s, uint32_t cp) {
        if (cp < 0x80) { *s += (char)cp; }
        else if (cp < 0x800) { *s += (char)(0xC0 | (cp >> 6)); *s += (char)(0x80 | (cp & 0x3F)); }
        else if (cp < 0x10000) {
            *s += (char)(0xE0 | (cp >> 12)); *s += (char)(0x80 | ((cp >> 6) & 0x3F)); *s += (char)(0x80 | (cp & 0x3F));
        } else {
            *s += (char)(0xF0 | (cp >> 18)); *s += (char)(0x80 | ((cp >> 12) & 0x3F));
            *s += (char)(0x80 | ((cp >> 6) & 0x3F)); *s += (char)(0x80 | (cp & 0x3F));
        }
    }
    bool hex4(uint32_t* v) {
        if (end - p < 4) return fail("truncated \\u escape");
        *v = 0;
        for (int i = 0; i < 4; i++, p++) {
            char c = *p;
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0) return fail("bad hex digit in \\u escape");
            *v = *v * 16 + (uint32_t)d;
        }
        return true;
    }
    bool parse_string(std::string* out) {
        p++;  // the opening quote
        out->clear();
        while (true) {
            if (p >= end) return fail("unterminated string");
            unsigned char c = (unsigned char)*p;
            if (c == '"') { p++; return true; }
            if (c < 0x20) return fail("control character in string");
            if (c != '\\') { *out += (char)c; p++; continue; }
            p++;
            if (p >= end) return fail("unterminated string");
            char e = *p++;
            switch (e) {
                case '"': *out += '"'; break;
                case '\\': *out += '\\'; break;
                case '/': *out += '/'; break;
                case 'b': *out += '\b'; break;
                case 'f': *out += '\f'; break;
                case 'n': *out += '\n'; break;
                case 'r': *out += '\r'; break;
                case 't': *out += '\t'; break;
                case 'u': {
                    uint32_t cp = 0;
                    if (!hex4(&cp)) return false;
                    if (cp >= 0xD800 && cp < 0xDC00) {  // a high surrogate: its low half must follow
                        uint32_t lo = 0;
                        if (end - p < 2 || p[0] != '\\' || p[1] != 'u') return fail("unpaired surrogate in \\u escape");
                        p += 2;
                        if (!hex4(&lo)) return false;
                        if (lo < 0xDC00 || lo >= 0xE000) return fail("unpaired surrogate in \\u escape");
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    } else if (cp >= 0xDC00 && cp < 0xE000) {
                        return fail("unpaired surrogate in \\u escape");
                    }
                    append_utf8(out, cp);
                    break;
                }
                default: p--; return fail(std::string("bad escape \\") + e);
            }
        }
    }
    bool parse_number(JsonValue* v) {
        const char* start = p;
        bool integral = true;
        if (p < end && *p == '-') p++;
        if (p >= end || !(*p >= '0' && *p <= '9')) return fail("bad number");
        if (*p == '0') p++;
        else while (p < end && *p >= '0' && *p <= '9') p++;
        if (p < end && *p == '.') {
            integral = false; p++;
            if (p >= end || !(*p >= '0' && *p <= '9')) return fail("bad number (no digit after '.')");
            while (p < end && *p >= '0' && *p <= '9') p++;
        }
        if (p < end && (*p == 'e' || *p == 'E')) {
            integral = false; p++;
            if (p < end && (*p == '+' || *p == '-')) p++;
            if (p >= end || !(*p >= '0' && *p <= '9')) return fail("bad number (no digit in the exponent)");
            while (p < end && *p >= '0' && *p <= '9') p++;
        }
        std::string text(start, p);
        v->kind = JsonValue::NUMBER;
        v->number = strtod(text.c_str(), nullptr);
        if (integral) {  // exact, for sizes and offsets past 2^53
            errno = 0;
            long long x = strtoll(text.c_str(), nullptr, 10);
            v->is_integer = errno == 0;
            v->integer = x;
        }
        return true;
    }
    bool parse_value(JsonValue* v) {
        skip_space();
        if (p >= end) return fail("unexpected end of input");
        if (++depth > 64) return fail("nesting deeper than 64");
        bool ok;
        char c = *p;
        if (c == '{') ok = parse_object(v);
        else if (c == '[') ok = parse_array(v);
        else if (c == '"') { v->kind = JsonValue::STRING; ok = parse_string(&v->str); }
        else if (c == 't') { v->kind = JsonValue::BOOLEAN; v->boolean = true; ok = parse_literal("true"); }
        else if (c == 'f') { v->kind = JsonValue::BOOLEAN; v->boolean = false; ok = parse_literal("false"); }
        else if (c == 'n') { v->kind = JsonValue::NUL; ok = parse_literal("null"); }
        else if (c == '-' || (c >= '0' && c <= '9')) ok = parse_number(v);
        else ok = fail(std::string("unexpected character '") + c + "'");
        depth--;
        return ok;
    }
    bool parse_array(JsonValue* v) {
        v->kind = JsonValue::ARRAY;
        p++;
        skip_space();
        if (p < end && *p == ']') { p++; return true; }
        while (true) {
            v->items.emplace_back();
            if (!parse_value(&v->items.back())) return false;
            skip_space();
            if (p < end && *p == ',') { p++; continue; }
            if (p < end && *p == ']') { p++; return true; }
            return fail("expected ',' or ']' in array");
        }
    }
    bool parse_object(JsonValue* v) {
        v->kind = JsonValue::OBJECT;
        p++;
        skip_space();
        if (p < end && *p == '}') { p++; return true; }
        while (true) {
            skip_space();
            if (p >= end || *p != '"') return fail("expected a string key in object");
            std::string key;
            if (!parse_string(&key)) return false;
            if (v->find(key)) return fail("duplicate key \"" + key + "\"");
            skip_space();
            if (p >= end || *p != ':') return fail("expected ':' after key \"" + key + "\"");
            p++;
            v->members.emplace_back(key, JsonValue());
            if (!parse_value(&v->members.back().second)) return false;
            skip_space();
            if (p < end && *p == ',') { p++; continue; }
            if (p < end && *p == '}') { p++; return true; }
            return fail("expected ',' or '}' in object");
        }
    }
};

// parses the whole of text (whitespace may follow the value); false with a message in err
static bool json_parse(const std::string& text, JsonValue* out, std::string* err) {
    JsonParser ps = {text.data(), text.data(), text.data() + text.size(), std::string(), 0};
    *out = JsonValue();
    bool ok = ps.parse_value(out);
    if (ok) {
        ps.skip_space();
        if (ps.p != ps.end) ok = ps.fail("trailing characters after the JSON value");
    }
    if (!ok && err) *err = ps.err;
    return ok;
}

// ---------------------------------------------------------------------------
// files

// the whole file as bytes; false (errno says why) when it cannot be opened or read
static bool read_text_file(const char* path, std::string* out) {
    out->clear();
    FILE* f = fopen(path, "rb");
    if (!f) return false;
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) out->append(buf, n);
    bool ok = !ferror(f);
    int err = errno;
    fclose(f);
    errno = err;
    return ok;
}

// one line of a JSON Lines file: its number (1-based) and its value
struct JsonlLine {
    int line;
    JsonValue value;
};

// JSON Lines (https://jsonlines.org): one JSON value per line. Blank lines (a
// trailing newline, CRLF endings) are skipped. who prefixes the messages, e.g.
// "vocab"; FATAL "who: PATH line N: ..." on a malformed line, and when the file
// cannot be read.
static std::vector<JsonlLine> jsonl_read(const char* path, const char* who) {
    std::string text;
    if (!read_text_file(path, &text)) FATAL("%s: cannot read %s: %s", who, path, strerror(errno));
    std::vector<JsonlLine> lines;
    size_t pos = 0;
    for (int line = 1; pos < text.size(); line++) {
        size_t nl = text.find('\n', pos);
        if (nl == std::string::npos) nl = text.size();
        std::string s = text.substr(pos, nl - pos);
        pos = nl + 1;
        if (s.find_first_not_of(" \t\r") == std::string::npos) continue;
        JsonlLine l;
        l.line = line;
        std::string err;
        if (!json_parse(s, &l.value, &err)) FATAL("%s: %s line %d: malformed JSON: %s", who, path, line, err.c_str());
        lines.push_back(std::move(l));
    }
    return lines;
}
