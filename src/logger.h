// logger.h: the JSONL training log, one JSON object per line:
//   {"step": 10, "loss": 2.31, "lr": 0.002, ...}    a training step (step = updates done)
//   {"step": 100, "val_loss": 1.9}                   an evaluation before update 101
//   {"step": 100, "sample": "And God said ..."}      a sample
// Floats are written with 9 significant digits (a float survives the round
// trip exactly) and a NaN or infinity as null, so every line is valid JSON.
//
// On resume from a checkpoint taken after S updates, the lines the
// interrupted run wrote after that checkpoint are dropped (training lines
// with step > S, evaluations and samples with step >= S: the resumed run
// writes them again), and a half-written last line from a crash goes too.
#pragma once
#include <cerrno>
#include <cmath>
#include <string>
#include <vector>
#include "common.h"

static std::string json_escape(const std::string& s) {
    std::string out;
    for (unsigned char ch : s) {
        if (ch == '"' || ch == '\\') { out += '\\'; out += (char)ch; }
        else if (ch == '\n') out += "\\n";
        else if (ch < 0x20 || ch >= 0x7f) { char b[8]; snprintf(b, sizeof b, "\\u%04x", ch); out += b; }
        else out += (char)ch;
    }
    return out;
}

// builds one JSON object: JsonLine().num("step", 3).num("loss", 2.5).str()
struct JsonLine {
    std::string body;
    JsonLine& key(const char* k) { body += (body.empty() ? "{\"" : ", \"") + std::string(k) + "\": "; return *this; }
    JsonLine& num(const char* k, double v) {
        key(k);
        if (!std::isfinite(v)) { body += "null"; return *this; }
        char b[32]; snprintf(b, sizeof b, "%.9g", v); body += b; return *this;
    }
    JsonLine& integer(const char* k, long long v) { key(k); body += std::to_string(v); return *this; }
    JsonLine& text(const char* k, const std::string& v) { key(k); body += "\"" + json_escape(v) + "\""; return *this; }
    std::string str() const { return body.empty() ? "{}" : body + "}"; }
};

typedef struct { FILE* f; std::string path; } Logger;

// the "step" of a log line, or -1 when the line is not one of ours (or cut short)
static long log_line_step(const std::string& line, bool* is_train) {
    if (line.size() < 2 || line.front() != '{' || line.back() != '}') return -1;
    size_t p = line.find("\"step\": ");
    if (p == std::string::npos) return -1;
    *is_train = line.find("\"loss\": ") != std::string::npos;
    return strtol(line.c_str() + p + 8, nullptr, 10);
}

// path empty: no log. resume_step < 0: a fresh log (truncated); otherwise the
// existing log is kept up to the checkpoint (see the top of the file)
static void logger_open(Logger* lg, const std::string& path, int resume_step) {
    lg->f = nullptr; lg->path = path;
    if (path.empty()) return;
    std::vector<std::string> keep;
    if (resume_step >= 0) {
        FILE* old = fopen(path.c_str(), "r");
        if (old) {
            std::string line; int ch;
            while ((ch = fgetc(old)) != EOF || !line.empty()) {
                if (ch != '\n' && ch != EOF) { line += (char)ch; continue; }
                bool is_train = false;
                long step = log_line_step(line, &is_train);
                if (step >= 0 && (is_train ? step <= resume_step : step < resume_step)) keep.push_back(line);
                line.clear();
                if (ch == EOF) break;
            }
            fclose(old);
        }
    }
    lg->f = fopen(path.c_str(), "w");
    if (!lg->f) FATAL("cannot open log %s: %s", path.c_str(), strerror(errno));
    for (auto& l : keep) fprintf(lg->f, "%s\n", l.c_str());
    fflush(lg->f);
}

static void logger_write(Logger* lg, const JsonLine& j) {
    if (!lg->f) return;
    fprintf(lg->f, "%s\n", j.str().c_str());
    fflush(lg->f);
}

static void logger_close(Logger* lg) {
    if (lg->f) fclose(lg->f);
    lg->f = nullptr;
}
