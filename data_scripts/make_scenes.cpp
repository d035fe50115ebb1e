// make_scenes.cpp -> build/make_scenes: a synthetic vision-language data set for
// train_vlm, and the packer of JSONL folders into VLM shards (src/vlm_data.h).
//
// Scenes: S x S RGB images (S = --size, 64 by default) on a black background with
// 1 to 4 Fashion-MNIST items on a 2x2 grid (cells top left, top right, bottom left,
// bottom right), each item in one cell at a small random offset, tinted in one of
// six colours (red, green, blue, yellow, magenta, cyan). In a scene no class and no
// colour appears twice, so "where is the bag?" has one answer.
//
// Item size: a cell is S/2 pixels and an item 7/8 of that: at S = 64 the cell is 32
// and the item 28, Fashion-MNIST's own size, so items are copied without any
// resampling blur (shirt, t-shirt, pullover and coat are told apart by fine
// detail), and 0..4 pixels of random offset on each axis remain. Other sizes
// resize the items (area averaging down, bilinear up).
//
// Text: a caption that lists the items in cell order ("a red sneaker top left and a
// blue bag bottom right"; three or four items as "a, b and c"), and one question
// of each of five types per scene:
//   what    "what is at the top left?"     -> a class, or "nothing" for an empty cell
//   where   "where is the bag?"            -> "bottom right"   (an item of the scene)
//   colour  "what colour is the sneaker?"  -> "red"            (an item of the scene)
//   count   "how many items are there?"    -> "one" .. "four"
//   exists  "is there a coat?"             -> "yes" (even scene numbers) / "no" (odd): balanced
// Classes are single words: t-shirt, trouser, pullover, dress, coat, sandal, shirt,
// sneaker, bag, boot (Fashion-MNIST's "T-shirt/top" and "Ankle boot" shortened).
//
// Output (--out DIR):
//   DIR/images/NNNNNN.png   the scenes (train 0 .. n_train-1, then test)
//   DIR/train.jsonl         one line per (scene, question), five per scene:
//   DIR/test.jsonl            {"image": "images/000000.png", "caption": "...", "question": "...",
//                              "answer": "...", "type": "what", "items": [{"class": "sneaker",
//                              "colour": "red", "cell": "top left", "src": "train:123"}, ...]}
//                           ("src" names the Fashion-MNIST split and index of the item: train
//                           scenes draw from the train split only, test scenes from t10k only)
//   DIR/vocab.txt           the word vocabulary built from train.jsonl (src/tokenizer.h)
//   DIR/train.vlm, test.vlm the same records packed as VLM shards (images decoded from the PNGs)
// Everything is a function of --seed (and the sizes): the same flags give the same
// bytes. Train and test scenes come from separate random streams, so the test set
// does not change with --n-train.
//
// Packing a folder of your own (the JSONL format of src/vlm_data.h):
//   build/make_scenes --pack my/train.jsonl --build-vocab my/vocab.txt --shard my/train.vlm --size 64 --resize
//   build/make_scenes --pack my/test.jsonl --vocab my/vocab.txt --shard my/test.vlm --size 64 --resize
//   build/make_scenes --info my/train.vlm      (checks a shard and prints its counts)
#include <string>
#include <sys/stat.h>
#include <vector>
#include "../src/common.h"
#include "../src/options.h"
#include "../src/tokenizer.h"
#include "../src/vlm_data.h"
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

static const char* const CLASS_NAMES[10] = {"t-shirt", "trouser", "pullover", "dress", "coat",
                                            "sandal", "shirt", "sneaker", "bag", "boot"};
static const char* const CELL_NAMES[4] = {"top left", "top right", "bottom left", "bottom right"};
static const char* const COUNT_NAMES[5] = {"zero", "one", "two", "three", "four"};
#define N_COLOURS 6
static const char* const COLOUR_NAMES[N_COLOURS] = {"red", "green", "blue", "yellow", "magenta", "cyan"};
static const uint8_t COLOUR_RGB[N_COLOURS][3] = {
    {255, 48, 48}, {48, 220, 48}, {64, 112, 255}, {250, 230, 40}, {240, 48, 240}, {40, 230, 230}};

// ---------------------------------------------------------------------------
// Fashion-MNIST: IDX files (big-endian header, then unsigned bytes), gzipped or not

typedef struct {
    int n, rows, cols;            // images (n, rows, cols); labels: rows = cols = 1
    std::vector<uint8_t> data;
} Idx;

static bool file_exists(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// the bytes of path; a .gz file through `gzip -dc` (no zlib needed to build)
static std::string read_maybe_gzip(const std::string& path) {
    std::string out;
    if (path.size() < 3 || path.compare(path.size() - 3, 3, ".gz") != 0) {
        if (!read_text_file(path.c_str(), &out)) FATAL("make_scenes: cannot read %s: %s", path.c_str(), strerror(errno));
        return out;
    }
    FILE* probe = fopen(path.c_str(), "rb");
    if (!probe) FATAL("make_scenes: cannot read %s: %s", path.c_str(), strerror(errno));
    fclose(probe);
    std::string quoted = "'";
    for (char c : path) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    quoted += "'";
    std::string cmd = "gzip -dc -- " + quoted;
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) FATAL("make_scenes: cannot run `%s`: %s", cmd.c_str(), strerror(errno));
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    int status = pclose(p);
    if (status != 0)
        FATAL("make_scenes: %s: `gzip -dc` failed (status %d): the file is corrupt or not gzip data", path.c_str(), status);
    return out;
}

static uint32_t be32(const std::string& s, size_t at) {
    return (uint32_t)(uint8_t)s[at] << 24 | (uint32_t)(uint8_t)s[at + 1] << 16 | (uint32_t)(uint8_t)s[at + 2] << 8 | (uint8_t)s[at + 3];
}

// dims 3 (images, magic 0x00000803) or 1 (labels, magic 0x00000801)
static Idx idx_read(const std::string& path, int dims) {
    std::string s = read_maybe_gzip(path);
    uint32_t magic = 0x800u + (uint32_t)dims;
    size_t header = 4 + 4 * (size_t)dims;
    if (s.size() < header)
        FATAL("make_scenes: %s is too short (%zu bytes) for an IDX header of %zu bytes; truncated?", path.c_str(), s.size(), header);
    if (be32(s, 0) != magic)
        FATAL("make_scenes: %s has bad magic 0x%08x (expected 0x%08x: IDX unsigned bytes, %d dimension%s); not a Fashion-MNIST %s file",
              path.c_str(), be32(s, 0), magic, dims, dims > 1 ? "s" : "", dims == 3 ? "images" : "labels");
    Idx idx;
    uint32_t d[3] = {be32(s, 4), dims == 3 ? be32(s, 8) : 1, dims == 3 ? be32(s, 12) : 1};
    if (d[0] == 0 || d[0] > 10000000 || d[1] == 0 || d[1] > 1024 || d[2] == 0 || d[2] > 1024)
        FATAL("make_scenes: %s has implausible dimensions %u x %u x %u", path.c_str(), d[0], d[1], d[2]);
    idx.n = (int)d[0]; idx.rows = (int)d[1]; idx.cols = (int)d[2];
    size_t expect = header + (size_t)idx.n * idx.rows * idx.cols;
    if (s.size() != expect)
        FATAL("make_scenes: %s size mismatch: its header says %d x %d x %d (%zu bytes) but it has %zu bytes (%s)", path.c_str(),
              idx.n, idx.rows, idx.cols, expect, s.size(), s.size() < expect ? "truncated" : "trailing bytes");
    idx.data.assign(s.begin() + header, s.end());
    return idx;
}

typedef struct {
    const char* split;                // "train" or "t10k"
    Idx images, labels;
    std::vector<int> by_class[10];    // indices of each class's items
} Split;

// DIR/NAME-ubyte.gz, else DIR/NAME-ubyte; FATAL with how to get them
static std::string mnist_file(const std::string& dir, const std::string& name) {
    std::string base = dir + "/" + name;
    if (file_exists(base + ".gz")) return base + ".gz";
    if (file_exists(base)) return base;
    FATAL("make_scenes: cannot find %s.gz (nor %s): install Debian's Fashion-MNIST (apt-get install dataset-fashion-mnist) "
          "or pass --mnist DIR", base.c_str(), base.c_str());
}

static void split_load(Split* sp, const std::string& dir, const char* split) {
    sp->split = split;
    sp->images = idx_read(mnist_file(dir, std::string(split) + "-images-idx3-ubyte"), 3);
    std::string labels_path = mnist_file(dir, std::string(split) + "-labels-idx1-ubyte");
    sp->labels = idx_read(labels_path, 1);
    if (sp->labels.n != sp->images.n)
        FATAL("make_scenes: %s holds %d labels but the %s images are %d", labels_path.c_str(), sp->labels.n, split, sp->images.n);
    for (int i = 0; i < sp->labels.n; i++) {
        int c = sp->labels.data[i];
        if (c > 9) FATAL("make_scenes: %s: label %d of item %d is not a class 0..9", labels_path.c_str(), c, i);
        sp->by_class[c].push_back(i);
    }
    for (int c = 0; c < 10; c++)
        if (sp->by_class[c].empty()) FATAL("make_scenes: the %s split has no item of class %s", split, CLASS_NAMES[c]);
}

// ---------------------------------------------------------------------------
// scenes

typedef struct { int cls, colour, cell, src; } Item;

static uint32_t rng_below(Rng* r, uint32_t n) { return rng_u32(r) % n; }

// the first k of a random permutation of 0..n-1
static std::vector<int> rng_pick(Rng* r, int n, int k) {
    std::vector<int> v(n);
    for (int i = 0; i < n; i++) v[i] = i;
    for (int i = 0; i < k; i++) std::swap(v[i], v[i + rng_below(r, (uint32_t)(n - i))]);
    v.resize(k);
    return v;
}

static std::vector<Item> scene_items(Rng* r, const Split* sp) {
    int n = 1 + (int)rng_below(r, 4);
    std::vector<int> cells = rng_pick(r, 4, n), classes = rng_pick(r, 10, n), colours = rng_pick(r, N_COLOURS, n);
    std::vector<Item> items;
    for (int i = 0; i < n; i++) {
        const std::vector<int>& pool = sp->by_class[classes[i]];
        items.push_back({classes[i], colours[i], cells[i], pool[rng_below(r, (uint32_t)pool.size())]});
    }
    std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.cell < b.cell; });
    return items;
}

// img: (S, S, 3), cleared to black, the items drawn in their cells
static void scene_render(Rng* r, const Split* sp, const std::vector<Item>& items, int S, uint8_t* img) {
    int cell = S / 2, isz = cell * 7 / 8;
    const Idx& im = sp->images;
    memset(img, 0, (size_t)S * S * 3);
    std::vector<uint8_t> item((size_t)isz * isz);
    for (const Item& it : items) {
        image_resize(im.data.data() + (size_t)it.src * im.rows * im.cols, im.rows, im.cols, 1, item.data(), isz, isz);
        int x0 = (it.cell % 2) * cell + (int)rng_below(r, (uint32_t)(cell - isz + 1));
        int y0 = (it.cell / 2) * cell + (int)rng_below(r, (uint32_t)(cell - isz + 1));
        const uint8_t* rgb = COLOUR_RGB[it.colour];
        for (int y = 0; y < isz; y++)
            for (int x = 0; x < isz; x++) {
                int v = item[(size_t)y * isz + x];
                uint8_t* px = img + ((size_t)(y0 + y) * S + x0 + x) * 3;
                for (int c = 0; c < 3; c++) px[c] = (uint8_t)((v * rgb[c] + 127) / 255);
            }
    }
}

static std::string scene_caption(const std::vector<Item>& items) {
    std::string s;
    for (size_t i = 0; i < items.size(); i++) {
        if (i > 0) s += i + 1 == items.size() ? " and " : ", ";
        s += std::string("a ") + COLOUR_NAMES[items[i].colour] + " " + CLASS_NAMES[items[i].cls] + " " + CELL_NAMES[items[i].cell];
    }
    return s;
}

typedef struct { std::string question, answer; const char* type; } Qa;

// one question of each type (scene_no decides the exists answer: even yes, odd no)
static std::vector<Qa> scene_questions(Rng* r, const std::vector<Item>& items, long scene_no) {
    std::vector<Qa> qa;
    int n = (int)items.size();
    int cell = (int)rng_below(r, 4);
    std::string what = "nothing";
    for (const Item& it : items)
        if (it.cell == cell) what = CLASS_NAMES[it.cls];
    qa.push_back({std::string("what is at the ") + CELL_NAMES[cell] + "?", what, "what"});
    const Item& w = items[rng_below(r, (uint32_t)n)];
    qa.push_back({std::string("where is the ") + CLASS_NAMES[w.cls] + "?", CELL_NAMES[w.cell], "where"});
    const Item& c = items[rng_below(r, (uint32_t)n)];
    qa.push_back({std::string("what colour is the ") + CLASS_NAMES[c.cls] + "?", COLOUR_NAMES[c.colour], "colour"});
    qa.push_back({"how many items are there?", COUNT_NAMES[n], "count"});
    int cls;
    if (scene_no % 2 == 0) {
        cls = items[rng_below(r, (uint32_t)n)].cls;
    } else {
        std::vector<int> absent;
        for (int k = 0; k < 10; k++) {
            bool present = false;
            for (const Item& it : items) present = present || it.cls == k;
            if (!present) absent.push_back(k);
        }
        cls = absent[rng_below(r, (uint32_t)absent.size())];
    }
    qa.push_back({std::string("is there a ") + CLASS_NAMES[cls] + "?", scene_no % 2 == 0 ? "yes" : "no", "exists"});
    return qa;
}

static std::string items_json(const std::vector<Item>& items, const char* split) {
    std::string s = "[";
    for (size_t i = 0; i < items.size(); i++) {
        s += std::string(i ? ", " : "") + "{\"class\": \"" + CLASS_NAMES[items[i].cls] + "\", \"colour\": \"" +
             COLOUR_NAMES[items[i].colour] + "\", \"cell\": \"" + CELL_NAMES[items[i].cell] + "\", \"src\": \"" + split + ":" +
             std::to_string(items[i].src) + "\"}";
    }
    return s + "]";
}

static void make_dir(const std::string& path) {
    std::string part;
    for (size_t i = 0; i <= path.size(); i++) {
        if (i == path.size() || (path[i] == '/' && i > 0)) {
            part = path.substr(0, i);
            if (mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) FATAL("make_scenes: cannot create %s: %s", part.c_str(), strerror(errno));
        }
    }
    struct stat st;
    if (stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) FATAL("make_scenes: %s is not a directory", path.c_str());
}

// writes n scenes numbered first.. to out/images and their lines to out/NAME.jsonl
static void write_split(const Split* sp, uint64_t seed, int n, int first, int S, const std::string& out, const char* name) {
    Rng r;
    rng_seed(&r, seed);
    std::string jsonl;
    std::vector<uint8_t> img((size_t)S * S * 3);
    for (int s = 0; s < n; s++) {
        std::vector<Item> items = scene_items(&r, sp);
        scene_render(&r, sp, items, S, img.data());
        char rel[64];
        snprintf(rel, sizeof rel, "images/%06d.png", first + s);
        std::string path = out + "/" + rel;
        if (!stbi_write_png(path.c_str(), S, S, 3, img.data(), S * 3)) FATAL("make_scenes: cannot write %s", path.c_str());
        std::string caption = scene_caption(items), items_text = items_json(items, sp->split);
        for (const Qa& q : scene_questions(&r, items, s))
            jsonl += std::string("{\"image\": \"") + rel + "\", \"caption\": \"" + json_escape(caption) + "\", \"question\": \"" +
                     json_escape(q.question) + "\", \"answer\": \"" + json_escape(q.answer) + "\", \"type\": \"" + q.type +
                     "\", \"items\": " + items_text + "}\n";
    }
    write_text_file_atomic(out + "/" + name + ".jsonl", jsonl);
}

// counts <unk> among a dataset's words (a test word missing from the train vocabulary)
static long count_unknown(const VlmDataset* ds) {
    long n = 0;
    for (const VlmRecord& r : ds->records)
        for (const std::vector<int>* part : {&r.caption, &r.question, &r.answer})
            n += std::count(part->begin(), part->end(), (int)VOCAB_UNK);
    return n;
}

// the JSONL -> shard step of both modes; returns the dataset's record count
static int pack(const char* jsonl, const Vocab* vocab, int size, bool resize, const char* shard) {
    VlmDataset ds;
    vlm_dataset_from_jsonl(&ds, jsonl, vocab, size, size, resize);
    vlm_shard_write(&ds, shard);
    long unk = count_unknown(&ds);
    printf("packed %s: %d records, %d images of %dx%d -> %s%s\n", jsonl, vlm_num_records(&ds), ds.n_images, ds.H, ds.W, shard,
           unk ? "" : " (every word in the vocabulary)");
    if (unk) printf("  note: %ld words of %s are not in the vocabulary and became <unk>\n", unk, jsonl);
    int n = vlm_num_records(&ds);
    vlm_dataset_free(&ds);
    return n;
}

// --info: what a shard holds (it is read with every check of vlm_shard_read)
static void shard_info(const char* path) {
    VlmDataset ds;
    vlm_shard_read(&ds, path);
    printf("%s: %d images %dx%d, %d records, vocabulary %d tokens\n", path, ds.n_images, ds.H, ds.W, vlm_num_records(&ds),
           vocab_size(&ds.vocab));
    int per_type[VLM_NUM_QTYPES] = {0};
    for (const VlmRecord& r : ds.records)
        if (r.type >= 0) per_type[r.type]++;
    printf("  captions: %zu distinct (image, caption), longest sequence %d tokens\n", vlm_record_ids(&ds, VLM_CAPTION).size(),
           vlm_max_text_len(&ds, VLM_CAPTION));
    printf("  questions: %zu (", vlm_record_ids(&ds, VLM_QA).size());
    for (int t = 0; t < VLM_NUM_QTYPES; t++) printf("%s%s %d", t ? ", " : "", VLM_QTYPE_NAMES[t], per_type[t]);
    printf("), longest sequence %d tokens\n", vlm_max_text_len(&ds, VLM_QA));
    vlm_dataset_free(&ds);
}

int main(int argc, char** argv) {
    std::string out = "data/scenes", mnist = "/usr/share/datasets/fashion-mnist";
    std::string pack_jsonl, vocab_path, build_vocab, shard, info;
    int n_train = 10000, n_test = 1000, size = 64;
    uint64_t seed = 1;
    bool resize = false;
    std::vector<OptSpec> table = {
        {"--out", OPT_STR, &out, "output folder of the scenes"},
        {"--n-train", OPT_INT, &n_train, "training scenes (5 question lines each; items from the train split)"},
        {"--n-test", OPT_INT, &n_test, "test scenes (items from the t10k split)"},
        {"--size", OPT_INT, &size, "image side in pixels (even, 16..1024); with --pack, 0 takes the first image's size"},
        {"--seed", OPT_U64, &seed, "random seed: the same seed and flags give the same bytes"},
        {"--mnist", OPT_STR, &mnist, "folder of {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"},
        {"--pack", OPT_STR, &pack_jsonl, "pack mode: this JSONL file (and its images) into the VLM shard --shard"},
        {"--shard", OPT_STR, &shard, "pack mode: the shard to write"},
        {"--vocab", OPT_STR, &vocab_path, "pack mode: an existing vocabulary file"},
        {"--build-vocab", OPT_STR, &build_vocab, "pack mode: build the vocabulary from the JSONL and write it here"},
        {"--resize", OPT_FLAG, &resize, "pack mode: resize images of another size (else they are an error)"},
        {"--info", OPT_STR, &info, "read this VLM shard (checking it) and print what it holds"},
    };
    options_parse(argc, argv, table,
                  "usage: make_scenes [options]\n"
                  "       make_scenes --pack IN.jsonl (--vocab V.txt | --build-vocab V.txt) --shard OUT.vlm [--size N] [--resize]\n"
                  "       make_scenes --info SHARD.vlm\n\n"
                  "Writes Fashion-MNIST scenes (1-4 tinted items on a 2x2 grid) with captions and questions:\n"
                  "OUT/images/*.png, OUT/{train,test}.jsonl, OUT/vocab.txt and OUT/{train,test}.vlm shards.\n"
                  "With --pack it packs a JSONL folder of your own into a shard instead.\n");

    if (!info.empty()) {
        shard_info(info.c_str());
        return 0;
    }
    if (!pack_jsonl.empty()) {
        if (shard.empty()) FATAL("--pack needs --shard OUT (the shard to write)");
        if (vocab_path.empty() == build_vocab.empty())
            FATAL("--pack needs exactly one of --vocab FILE (an existing vocabulary) or --build-vocab FILE (build it from the JSONL)");
        if (size < 0 || size > VLM_MAX_SIDE) FATAL("--size must be 0..%d with --pack, got %d", VLM_MAX_SIDE, size);
        Vocab vocab;
        if (!build_vocab.empty()) {
            vocab_build_from_jsonl(&vocab, pack_jsonl.c_str());
            vocab_save(&vocab, build_vocab.c_str());
            printf("vocabulary: %d tokens -> %s\n", vocab_size(&vocab), build_vocab.c_str());
        } else {
            vocab_load(&vocab, vocab_path.c_str());
        }
        pack(pack_jsonl.c_str(), &vocab, size, resize, shard.c_str());
        return 0;
    }
    if (!shard.empty() || !vocab_path.empty() || !build_vocab.empty() || resize)
        FATAL("--shard, --vocab, --build-vocab and --resize go with --pack");
    if (n_train < 1 || n_test < 1) FATAL("--n-train and --n-test must be >= 1, got %d and %d", n_train, n_test);
    if ((long)n_train + n_test > 100000000L) FATAL("--n-train + --n-test must be at most 100000000");
    if (size < 16 || size > 1024 || size % 2) FATAL("--size must be even and 16..1024, got %d", size);

    Split train, test;
    split_load(&train, mnist, "train");
    split_load(&test, mnist, "t10k");
    make_dir(out + "/images");
    write_split(&train, seed, n_train, 0, size, out, "train");
    write_split(&test, seed ^ 0x7465737473706c74ull, n_test, n_train, size, out, "test");  // its own stream
    printf("wrote %d train and %d test scenes of %dx%d (5 questions each) to %s\n", n_train, n_test, size, size, out.c_str());

    Vocab vocab;
    std::string train_jsonl = out + "/train.jsonl", test_jsonl = out + "/test.jsonl", vocab_file = out + "/vocab.txt";
    vocab_build_from_jsonl(&vocab, train_jsonl.c_str());
    vocab_save(&vocab, vocab_file.c_str());
    printf("vocabulary: %d tokens -> %s\n", vocab_size(&vocab), vocab_file.c_str());
    pack(train_jsonl.c_str(), &vocab, size, false, (out + "/train.vlm").c_str());
    pack(test_jsonl.c_str(), &vocab, size, false, (out + "/test.vlm").c_str());
    return 0;
}
