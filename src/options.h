// options.h: command-line options from a table. A program lists its options
// once (name, kind, the variable it sets, help); the same table parses argv,
// prints --help with every default, and rejects unknown flags and bad values
// with the reason.
//
//   std::vector<OptSpec> table = {{"--lr", OPT_FLOAT, &o.lr, "peak learning rate"}, ...};
//   options_parse(argc, argv, table, "usage: train_x [options]\n\nWhat it does.\n");
#pragma once
#include <cerrno>
#include <string>
#include <vector>
#include "common.h"

typedef enum { OPT_INT, OPT_FLOAT, OPT_STR, OPT_FLAG, OPT_U64 } OptKind;
typedef struct {
    const char* name;  // "--lr"
    OptKind kind;
    void* ptr;         // int*, float*, std::string*, bool* or uint64_t*
    const char* help;
} OptSpec;

static std::string option_default(const OptSpec& s) {
    char buf[128];
    switch (s.kind) {
        case OPT_INT: snprintf(buf, sizeof buf, "%d", *(int*)s.ptr); break;
        case OPT_FLOAT: snprintf(buf, sizeof buf, "%g", *(float*)s.ptr); break;
        case OPT_STR: snprintf(buf, sizeof buf, "\"%s\"", ((std::string*)s.ptr)->c_str()); break;
        case OPT_U64: snprintf(buf, sizeof buf, "%llu", (unsigned long long)*(uint64_t*)s.ptr); break;
        case OPT_FLAG: snprintf(buf, sizeof buf, "%s", *(bool*)s.ptr ? "on" : "off"); break;
    }
    return buf;
}

static void options_print_help(const std::vector<OptSpec>& table, const char* usage) {
    printf("%s\n", usage);
    for (const OptSpec& s : table) printf("  %-22s %s (default %s)\n", s.name, s.help, option_default(s).c_str());
    printf("  %-22s this message\n", "--help");
}

// parses argv into the table's variables; --help prints and exits 0
static void options_parse(int argc, char** argv, const std::vector<OptSpec>& table, const char* usage) {
    for (int i = 1; i < argc; i++) {
        const char* arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) { options_print_help(table, usage); exit(0); }
        const OptSpec* spec = nullptr;
        for (const OptSpec& s : table) if (!strcmp(s.name, arg)) spec = &s;
        if (!spec) FATAL("unknown option '%s' (see --help)", arg);
        if (spec->kind == OPT_FLAG) { *(bool*)spec->ptr = true; continue; }
        if (i + 1 >= argc) FATAL("option %s needs a value", arg);
        const char* val = argv[++i];
        char* end = nullptr;
        errno = 0;
        switch (spec->kind) {
            case OPT_INT: {
                long v = strtol(val, &end, 10);
                if (*val == 0 || *end || errno || v < -2147483647L || v > 2147483647L)
                    FATAL("option %s expects an integer, got '%s'", arg, val);
                *(int*)spec->ptr = (int)v; break;
            }
            case OPT_U64: {
                unsigned long long v = strtoull(val, &end, 10);
                if (*val == 0 || *val == '-' || *end || errno) FATAL("option %s expects a non-negative integer, got '%s'", arg, val);
                *(uint64_t*)spec->ptr = v; break;
            }
            case OPT_FLOAT: {
                float v = strtof(val, &end);
                if (*val == 0 || *end || errno || !std::isfinite(v)) FATAL("option %s expects a number, got '%s'", arg, val);
                *(float*)spec->ptr = v; break;
            }
            case OPT_STR: *(std::string*)spec->ptr = val; break;
            case OPT_FLAG: break;
        }
    }
}
