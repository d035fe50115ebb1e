// tensor_file.h: write a file of named float32 tensors (read by test/torch_check.py).
//
// Layout (little-endian):
//   int32 magic 0x54454E53 ("TENS"), int32 count,
//   then per tensor: int32 name_len, name bytes (no NUL), int32 ndim, int32 dims[ndim],
//   float32 data[prod(dims)] row-major.
// Tensors are collected in memory and written at save() because the count comes first.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#define TENSOR_FILE_MAGIC 0x54454E53

struct TensorFile {
    struct Entry {
        std::string name;
        std::vector<int> dims;
        std::vector<float> data;
    };
    std::vector<Entry> entries;

    static size_t numel(const std::vector<int>& dims) {
        size_t n = 1;
        for (int d : dims) n *= (size_t)d;
        return n;
    }
    // copies the data now, so the caller may reuse its buffer
    void add(const std::string& name, const float* data, std::vector<int> dims) {
        Entry e;
        e.name = name;
        e.dims = dims;
        e.data.assign(data, data + numel(dims));
        entries.push_back(std::move(e));
    }
    void add(const std::string& name, const std::vector<float>& v, std::vector<int> dims) {
        if (numel(dims) != v.size()) {
            fprintf(stderr, "tensor_file: %s has %zu values but dims give %zu\n", name.c_str(),
                    v.size(), numel(dims));
            exit(1);
        }
        add(name, v.data(), dims);
    }
    // integer tensors (tokens, targets) are stored as float (exact below 2^24)
    void add_ints(const std::string& name, const int* data, std::vector<int> dims) {
        std::vector<float> f(numel(dims));
        for (size_t i = 0; i < f.size(); i++) f[i] = (float)data[i];
        add(name, f.data(), dims);
    }
    void add_scalar(const std::string& name, float x) { add(name, &x, {1}); }

    bool save(const char* path) const {
        FILE* f = fopen(path, "wb");
        if (!f) { fprintf(stderr, "tensor_file: cannot open %s\n", path); return false; }
        bool ok = true;
        auto put_i32 = [&](int32_t x) { ok = ok && fwrite(&x, 4, 1, f) == 1; };
        put_i32(TENSOR_FILE_MAGIC);
        put_i32((int32_t)entries.size());
        for (const Entry& e : entries) {
            put_i32((int32_t)e.name.size());
            ok = ok && fwrite(e.name.data(), 1, e.name.size(), f) == e.name.size();
            put_i32((int32_t)e.dims.size());
            for (int d : e.dims) put_i32(d);
            if (!e.data.empty())
                ok = ok && fwrite(e.data.data(), sizeof(float), e.data.size(), f) == e.data.size();
        }
        ok = (fclose(f) == 0) && ok;
        if (!ok) fprintf(stderr, "tensor_file: write to %s failed\n", path);
        return ok;
    }
};
