// test_vlm_data.cu: the VLM data path on the CPU: the word tokenizer
// (src/tokenizer.h), the dataset, its shards and batches (src/vlm_data.h), and
// the JSON Lines reader (src/json.h). Every error path must stop with a message
// that names the file (and the line, for JSONL).
#include "test_util.h"
#include "../src/tokenizer.h"
#include "../src/vlm_data.h"
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

static std::string g_dir;  // a fresh temp folder

static std::string tmp_path(const std::string& name) { return g_dir + "/" + name; }

static void write_file(const std::string& path, const std::string& bytes) {
    FILE* f = fopen(path.c_str(), "wb");
    if (!f) FATAL("test: cannot write %s", path.c_str());
    fwrite(bytes.data(), 1, bytes.size(), f);
    fclose(f);
}

static std::string read_file(const std::string& path) {
    std::string s;
    if (!read_text_file(path.c_str(), &s)) FATAL("test: cannot read %s", path.c_str());
    return s;
}

static std::string join_ids(const std::vector<int>& v) {
    std::string s;
    for (int x : v) s += std::to_string(x) + " ";
    return s;
}

// ---------------------------------------------------------------------------
// tokenizer

static void test_tokenizer() {
    std::vector<std::string> w = vocab_split("What is at the Top Left?  a t-shirt,\tthe end.");
    std::string joined;
    for (auto& s : w) joined += "[" + s + "]";
    report(joined == "[what][is][at][the][top][left][?][a][t-shirt][,][the][end][.]", "tokenizer splits words and punctuation",
           "%s", joined.c_str());

    std::string jsonl = tmp_path("vocab.jsonl");
    write_file(jsonl,
               "{\"image\": \"a.png\", \"caption\": \"a red bag top left\", \"question\": \"where is the bag?\", \"answer\": \"top left\"}\n"
               "\n"
               "{\"image\": \"b.png\", \"caption\": \"Zebra zebra, Apple\", \"other\": \"ignored words\"}\r\n");
    Vocab v;
    vocab_build_from_jsonl(&v, jsonl.c_str());
    std::vector<std::string> expect = {"<pad>", "<bos>", "<eos>", "<image>", "<unk>", "<sep>", ",", "?", "a", "apple",
                                       "bag", "is", "left", "red", "the", "top", "where", "zebra"};
    report(v.words == expect, "vocabulary: specials, then the words sorted by byte", "%d tokens", vocab_size(&v));
    bool index_ok = true;
    for (int i = 0; i < vocab_size(&v); i++) index_ok = index_ok && v.index.at(v.words[i]) == i;
    report(index_ok && VOCAB_PAD == 0 && VOCAB_BOS == 1 && VOCAB_EOS == 2 && VOCAB_IMAGE == 3 && VOCAB_UNK == 4 && VOCAB_SEP == 5,
           "vocabulary index and special ids");

    std::string text = "where is the red bag?";
    std::vector<int> ids = vocab_encode(&v, text);
    std::string back = vocab_decode(&v, ids.data(), (int)ids.size());
    report(back == text && ids.size() == 6, "encode/decode round trip", "'%s' -> '%s'", text.c_str(), back.c_str());
    ids = vocab_encode(&v, "Where is the purple <image> bag");
    report(ids == std::vector<int>({v.index["where"], v.index["is"], v.index["the"], VOCAB_UNK, VOCAB_UNK, v.index["bag"]}),
           "unknown words and literal special names encode to <unk>", "%s", join_ids(ids).c_str());
    int with_specials[] = {VOCAB_BOS, VOCAB_IMAGE, v.index["a"], VOCAB_UNK, VOCAB_SEP, v.index["bag"], VOCAB_EOS, VOCAB_PAD};
    back = vocab_decode(&v, with_specials, 8);
    report(back == "a <unk> bag", "decode skips special tokens but <unk>", "'%s'", back.c_str());

    std::string path = tmp_path("vocab.txt");
    vocab_save(&v, path.c_str());
    Vocab v2;
    vocab_load(&v2, path.c_str());
    report(vocab_equal(&v, &v2) && v2.index == v.index && read_file(path).substr(0, 14) == "<pad>\n<bos>\n<e",
           "vocabulary save/load round trip (one token a line)");
    Vocab v3;
    vocab_build_from_jsonl(&v3, jsonl.c_str());
    report(vocab_equal(&v, &v3), "vocabulary build is deterministic");

    expect_fatal("vocab: missing file", "cannot read", [&] { Vocab x; vocab_load(&x, tmp_path("nope.txt").c_str()); });
    write_file(tmp_path("bad1.txt"), "<pad>\n<bos>\n<eos>\n<unk>\n<image>\n<sep>\nx\n");
    expect_fatal("vocab: specials out of order", "line 4 is \"<unk>\" but must be <image>",
                 [&] { Vocab x; vocab_load(&x, tmp_path("bad1.txt").c_str()); });
    write_file(tmp_path("bad2.txt"), "<pad>\n<bos>\n<eos>\n<image>\n<unk>\n<sep>\nx\ny\nx\n");
    expect_fatal("vocab: repeated word", "line 9 repeats \"x\" (line 7)", [&] { Vocab x; vocab_load(&x, tmp_path("bad2.txt").c_str()); });
    write_file(tmp_path("bad3.txt"), "<pad>\n<bos>\n<eos>\n<image>\n<unk>\n<sep>\nx\n\ny\n");
    expect_fatal("vocab: empty line", "line 8 is empty", [&] { Vocab x; vocab_load(&x, tmp_path("bad3.txt").c_str()); });
    write_file(tmp_path("bad4.txt"), "<pad>\n<bos>\n<eos>\n<image>\n<unk>\n<sep>\nx");
    expect_fatal("vocab: truncated last line", "does not end with a newline", [&] { Vocab x; vocab_load(&x, tmp_path("bad4.txt").c_str()); });
    write_file(tmp_path("bad5.jsonl"), "{\"caption\": \"ok\"}\n{\"caption\": 3}\n");
    expect_fatal("vocab: non-string text field names the line", "bad5.jsonl line 2: \"caption\" is not a string",
                 [&] { Vocab x; vocab_build_from_jsonl(&x, tmp_path("bad5.jsonl").c_str()); });
}

// ---------------------------------------------------------------------------
// resizing

static void test_resize() {
    uint8_t src[16] = {0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150};  // 4x4, 1 channel
    uint8_t dst[4];
    image_resize(src, 4, 4, 1, dst, 2, 2);
    report(dst[0] == 25 && dst[1] == 45 && dst[2] == 105 && dst[3] == 125, "resize down is the box average",
           "%d %d %d %d", dst[0], dst[1], dst[2], dst[3]);
    uint8_t same[16];
    image_resize(src, 4, 4, 1, same, 4, 4);
    report(memcmp(same, src, 16) == 0, "resize to the same size is the identity");
    uint8_t rgb[2 * 3 * 3], big[5 * 7 * 3];  // a constant colour stays that colour at any size
    for (int i = 0; i < 6; i++) { rgb[3 * i] = 200; rgb[3 * i + 1] = 7; rgb[3 * i + 2] = 99; }
    image_resize(rgb, 2, 3, 3, big, 5, 7);
    bool constant = true;
    for (int i = 0; i < 35; i++) constant = constant && big[3 * i] == 200 && big[3 * i + 1] == 7 && big[3 * i + 2] == 99;
    uint8_t small[3];
    image_resize(rgb, 2, 3, 3, small, 1, 1);
    report(constant && small[0] == 200 && small[1] == 7 && small[2] == 99, "resize keeps a constant colour (up and down)");
}

// ---------------------------------------------------------------------------
// batches: a hand-written dataset, every position checked

static VlmDataset tiny_dataset() {
    VlmDataset ds;
    ds.H = 2; ds.W = 3; ds.n_images = 2; ds.source = "tiny";
    std::set<std::string> words = {"a", "bag", "red", "where", "is", "the", "?", "left", "top"};
    vocab_build_from_words(&ds.vocab, words);
    for (int i = 0; i < 2 * 2 * 3 * 3; i++) ds.images.push_back((uint8_t)(i * 7));
    const Vocab* v = &ds.vocab;
    VlmRecord qa;  // image 1: caption "a red bag", question "where is the bag?" -> "top left"
    qa.image = 1; qa.type = VLM_Q_WHERE;
    qa.caption = vocab_encode(v, "a red bag");
    qa.question = vocab_encode(v, "where is the bag?");
    qa.answer = vocab_encode(v, "top left");
    VlmRecord cap;  // image 0: a caption only
    cap.image = 0; cap.type = -1;
    cap.caption = vocab_encode(v, "a bag");
    VlmRecord qa2 = qa;  // the same scene's caption again with another question
    qa2.type = VLM_Q_WHAT; qa2.answer = vocab_encode(v, "bag");
    ds.records = {qa, cap, qa2};
    return ds;
}

static void test_batches() {
    VlmDataset ds = tiny_dataset();
    auto id = [&](const char* w) { return ds.vocab.index.at(w); };
    const int B = 3, T = 10;
    std::vector<float> images(B * 2 * 3 * 3, -1.0f);
    std::vector<int> tokens(B * T, -7), targets(B * T, -7), lengths(B, -7), types(B, -7);

    int cap_ids[B] = {0, 1, 2};
    vlm_get_batch(&ds, VLM_CAPTION, cap_ids, B, T, images.data(), tokens.data(), targets.data(), lengths.data(), types.data());
    std::vector<int> tok0(tokens.begin(), tokens.begin() + T), tgt0(targets.begin(), targets.begin() + T);
    std::vector<int> want_tok0 = {VOCAB_BOS, VOCAB_IMAGE, id("a"), id("red"), id("bag"), VOCAB_EOS, 0, 0, 0, 0};
    std::vector<int> want_tgt0 = {-1, id("a"), id("red"), id("bag"), VOCAB_EOS, -1, -1, -1, -1, -1};
    report(tok0 == want_tok0, "caption batch: [<bos> <image> caption <eos>] padded with <pad>", "%s", join_ids(tok0).c_str());
    report(tgt0 == want_tgt0, "caption batch: targets on the caption words and <eos> only", "%s", join_ids(tgt0).c_str());
    std::vector<int> tok1(tokens.begin() + T, tokens.begin() + 2 * T), tgt1(targets.begin() + T, targets.begin() + 2 * T);
    report(tok1 == std::vector<int>({1, 3, id("a"), id("bag"), 2, 0, 0, 0, 0, 0}) &&
               tgt1 == std::vector<int>({-1, id("a"), id("bag"), 2, -1, -1, -1, -1, -1, -1}),
           "caption batch: second row", "%s / %s", join_ids(tok1).c_str(), join_ids(tgt1).c_str());
    report(lengths[0] == 6 && lengths[1] == 5 && lengths[2] == 6 && types[0] == -1 && types[1] == -1 && types[2] == -1,
           "caption batch: lengths and types (-1)", "%d %d %d / %d %d %d", lengths[0], lengths[1], lengths[2], types[0], types[1], types[2]);
    bool img_ok = true;
    for (int b = 0; b < B; b++) {
        int image = ds.records[cap_ids[b]].image;
        for (int i = 0; i < 18; i++) img_ok = img_ok && images[b * 18 + i] == ds.images[image * 18 + i] * (1.0f / 255.0f);
    }
    report(img_ok && images[18] == 0.0f, "batch images: (B, H, W, 3) of the record's image, / 255");

    int qa_ids[2] = {0, 2};
    expect_fatal("QA batch: a record longer than T says the T it needs", "T must be at least 11", [&] {
        vlm_get_batch(&ds, VLM_QA, qa_ids, 2, T, nullptr, tokens.data(), targets.data(), lengths.data(), types.data());
    });
    const int T2 = 12;
    std::vector<int> tk(2 * T2), tg(2 * T2);
    vlm_get_batch(&ds, VLM_QA, qa_ids, 2, T2, nullptr, tk.data(), tg.data(), lengths.data(), types.data());
    std::vector<int> want_tk = {1, 3, id("where"), id("is"), id("the"), id("bag"), id("?"), 5, id("top"), id("left"), 2, 0};
    std::vector<int> want_tg = {-1, -1, -1, -1, -1, -1, -1, id("top"), id("left"), 2, -1, -1};
    std::vector<int> got_tk(tk.begin(), tk.begin() + T2), got_tg(tg.begin(), tg.begin() + T2);
    report(got_tk == want_tk, "QA batch: [<bos> <image> question <sep> answer <eos>] padded with <pad>", "%s", join_ids(got_tk).c_str());
    report(got_tg == want_tg, "QA batch: targets on the answer words and <eos> only", "%s", join_ids(got_tg).c_str());
    std::vector<int> tk1(tk.begin() + T2, tk.end()), tg1(tg.begin() + T2, tg.end());
    report(tk1 == std::vector<int>({1, 3, id("where"), id("is"), id("the"), id("bag"), id("?"), 5, id("bag"), 2, 0, 0}) &&
               tg1 == std::vector<int>({-1, -1, -1, -1, -1, -1, -1, id("bag"), 2, -1, -1, -1}),
           "QA batch: second row", "%s / %s", join_ids(tk1).c_str(), join_ids(tg1).c_str());
    report(lengths[0] == 11 && lengths[1] == 10 && types[0] == VLM_Q_WHERE && types[1] == VLM_Q_WHAT, "QA batch: lengths and types");

    report(vlm_max_text_len(&ds, VLM_QA) == 11 && vlm_max_text_len(&ds, VLM_CAPTION) == 6, "vlm_max_text_len per kind",
           "%d %d", vlm_max_text_len(&ds, VLM_QA), vlm_max_text_len(&ds, VLM_CAPTION));
    std::vector<int> qa_rec = vlm_record_ids(&ds, VLM_QA), cap_rec = vlm_record_ids(&ds, VLM_CAPTION);
    report(qa_rec == std::vector<int>({0, 2}) && cap_rec == std::vector<int>({0, 1}),
           "vlm_record_ids: QA records; one caption record per (image, caption)", "%s / %s", join_ids(qa_rec).c_str(), join_ids(cap_rec).c_str());
    std::vector<int> seq;
    int first = vlm_sequence(&ds, VLM_QA, 0, &seq);
    report(first == 8 && seq[first - 1] == VOCAB_SEP && seq.back() == VOCAB_EOS, "vlm_sequence: the prompt ends with <sep>");
    report(vlm_num_records(&ds) == 3, "vlm_num_records");

    int one = 1, bad = 3;
    expect_fatal("QA batch of a caption-only record", "record 1 of tiny has no question and answer",
                 [&] { vlm_get_batch(&ds, VLM_QA, &one, 1, T2, nullptr, tk.data(), tg.data(), nullptr, nullptr); });
    expect_fatal("record id out of range", "record id 3 is out of range",
                 [&] { vlm_get_batch(&ds, VLM_CAPTION, &bad, 1, T2, nullptr, tk.data(), tg.data(), nullptr, nullptr); });
}

// ---------------------------------------------------------------------------
// shards

static void test_shards() {
    VlmDataset ds = tiny_dataset();
    std::string path = tmp_path("tiny.vlm");
    vlm_shard_write(&ds, path.c_str());
    VlmDataset rd;
    vlm_shard_read(&rd, path.c_str());
    bool same = rd.n_images == ds.n_images && rd.H == ds.H && rd.W == ds.W && rd.images == ds.images &&
                vocab_equal(&rd.vocab, &ds.vocab) && rd.records.size() == ds.records.size();
    for (size_t i = 0; same && i < ds.records.size(); i++) {
        const VlmRecord &a = ds.records[i], &b = rd.records[i];
        same = a.image == b.image && a.type == b.type && a.caption == b.caption && a.question == b.question && a.answer == b.answer;
    }
    report(same, "shard write/read round trip (images, records, vocabulary)");
    std::string bytes = read_file(path);
    int32_t h[16];
    memcpy(h, bytes.data(), sizeof h);
    std::string vocab_text = vocab_to_text(&ds.vocab);
    size_t expect = 1024 + vocab_text.size() + 36 + 3 * 8 * 4 + (size_t)h[9] * 4;
    report(h[0] == 20261127 && h[1] == 1 && h[2] == 2 && h[3] == 2 && h[4] == 3 && h[5] == 3 && h[6] == 3 &&
               h[7] == vocab_size(&ds.vocab) && h[8] == (int)vocab_text.size() && h[9] == 3 + 5 + 2 + 2 + 3 + 5 + 1 &&
               bytes.size() == expect && bytes.compare(1024, vocab_text.size(), vocab_text) == 0,
           "shard header and layout as documented", "%d %d %d %d %d %d %d %d %d %d, %zu bytes", h[0], h[1], h[2], h[3], h[4], h[5],
           h[6], h[7], h[8], h[9], bytes.size());
    bool no_tmp = access((path + ".tmp").c_str(), F_OK) != 0;
    report(no_tmp, "shard writing leaves no .tmp");

    auto patched = [&](const char* name, size_t at, int32_t value) {
        std::string b = bytes;
        memcpy(&b[at], &value, 4);
        write_file(tmp_path(name), b);
        return tmp_path(name);
    };
    auto read = [](const std::string& p) { return [p] { VlmDataset x; vlm_shard_read(&x, p.c_str()); }; };
    expect_fatal("shard: missing file", "cannot open shard", read(tmp_path("missing.vlm")));
    write_file(tmp_path("short.vlm"), bytes.substr(0, 100));
    expect_fatal("shard: shorter than the header", "too short (100 bytes)", read(tmp_path("short.vlm")));
    write_file(tmp_path("trunc.vlm"), bytes.substr(0, bytes.size() - 4));
    expect_fatal("shard: truncated", "size mismatch", read(tmp_path("trunc.vlm")));
    expect_fatal("shard: truncated says so", "(truncated)", read(tmp_path("trunc.vlm")));
    write_file(tmp_path("trail.vlm"), bytes + "xx");
    expect_fatal("shard: trailing bytes", "trailing bytes", read(tmp_path("trail.vlm")));
    expect_fatal("shard: wrong magic", "bad magic number 20261123 (expected 20261127)", read(patched("magic.vlm", 0, 20261123)));
    expect_fatal("shard: wrong version", "unsupported version 2", read(patched("version.vlm", 4, 2)));
    expect_fatal("shard: bad image shape", "invalid image shape", read(patched("shape.vlm", 20, 4)));
    expect_fatal("shard: vocabulary size mismatch", "holds 15 vocabulary tokens but its header says 99", read(patched("vsize.vlm", 28, 99)));
    size_t pool = bytes.size() - (size_t)h[9] * 4, recs = pool - 3 * 8 * 4;
    expect_fatal("shard: token out of range", "token 99 at index 0 is out of range", read(patched("tok.vlm", pool, 99)));
    expect_fatal("shard: record image out of range", "record 0: image 5 is out of range", read(patched("img.vlm", recs, 5)));
    expect_fatal("shard: record span outside the tokens", "record 0: caption [20, +3) lies outside", read(patched("span.vlm", recs + 8, 20)));
    expect_fatal("shard: record type invalid", "record 0 is inconsistent", read(patched("type.vlm", recs + 4, -1)));
    expect_fatal("shard: a token shard is not a VLM shard", "not a VLM shard", read(patched("tokshard.vlm", 0, 20261123)));
}

// ---------------------------------------------------------------------------
// a folder with a JSONL file and PNG/JPEG images

static std::vector<uint8_t> solid(int h, int w, uint8_t r, uint8_t g, uint8_t b) {
    std::vector<uint8_t> px((size_t)h * w * 3);
    for (size_t i = 0; i < px.size(); i += 3) { px[i] = r; px[i + 1] = g; px[i + 2] = b; }
    return px;
}

static void test_folder() {
    std::string dir = tmp_path("folder");
    mkdir(dir.c_str(), 0755);
    mkdir((dir + "/img").c_str(), 0755);
    std::vector<uint8_t> grad(8 * 8 * 3);  // an 8x8 gradient, exact through PNG
    for (int i = 0; i < 8 * 8 * 3; i++) grad[i] = (uint8_t)(i * 5 % 256);
    stbi_write_png((dir + "/img/a.png").c_str(), 8, 8, 3, grad.data(), 8 * 3);
    std::vector<uint8_t> green = solid(6, 10, 0, 255, 0);  // wrong size: 6 high, 10 wide
    stbi_write_png((dir + "/img/b.png").c_str(), 10, 6, 3, green.data(), 10 * 3);
    std::vector<uint8_t> grey(8 * 8);  // a grey-level PNG: read as RGB
    for (int i = 0; i < 64; i++) grey[i] = (uint8_t)(i * 3);
    stbi_write_png((dir + "/img/c.png").c_str(), 8, 8, 1, grey.data(), 8);
    std::vector<uint8_t> blue = solid(8, 8, 0, 0, 200);
    stbi_write_jpg((dir + "/img/d.jpg").c_str(), 8, 8, 3, blue.data(), 95);
    write_file(dir + "/notimage.png", "this is text, not a PNG");

    std::string words = "{\"caption\": \"a red bag top left and a blue coat\", \"question\": \"where is the bag?\", \"answer\": \"top left\"}\n";
    write_file(dir + "/words.jsonl", words);
    Vocab v;
    vocab_build_from_jsonl(&v, (dir + "/words.jsonl").c_str());

    std::string lines =
        "{\"image\": \"img/a.png\", \"caption\": \"a red bag\", \"question\": \"where is the bag?\", \"answer\": \"top left\", \"type\": \"where\"}\n"
        "{\"image\": \"img/a.png\", \"question\": \"is there a coat?\", \"answer\": \"no\", \"type\": \"exists\", \"extra\": [1, 2]}\n"
        "\n"
        "{\"image\": \"img/b.png\", \"caption\": \"a blue coat\"}\n"
        "{\"image\": \"img/c.png\", \"caption\": \"a bag\", \"question\": \"what?\", \"answer\": \"bag\", \"type\": \"custom\"}\n"
        "{\"image\": \"" + dir + "/img/d.jpg\", \"caption\": \"a blue coat\"}\n";
    write_file(dir + "/data.jsonl", lines);
    std::string jl = dir + "/data.jsonl";

    expect_fatal("folder: wrong-size image without resize names the file and both sizes",
                 "data.jsonl line 4: image " , [&] { VlmDataset ds; vlm_dataset_from_jsonl(&ds, jl.c_str(), &v, 8, 8, false); });
    expect_fatal("folder: wrong-size message gives both sizes", "img/b.png is 6x10 (height x width) but the dataset is 8x8",
                 [&] { VlmDataset ds; vlm_dataset_from_jsonl(&ds, jl.c_str(), &v, 8, 8, false); });

    VlmDataset ds;
    vlm_dataset_from_jsonl(&ds, jl.c_str(), &v, 8, 8, true);
    report(ds.n_images == 4 && vlm_num_records(&ds) == 5 && ds.records[0].image == 0 && ds.records[1].image == 0 &&
               ds.records[2].image == 1 && ds.records[4].image == 3,
           "folder: one image per distinct path, records in file order", "%d images, %d records", ds.n_images, vlm_num_records(&ds));
    report(memcmp(ds.images.data(), grad.data(), grad.size()) == 0, "folder: PNG pixels exact");
    bool green_ok = true;
    for (int i = 0; i < 64; i++) green_ok = green_ok && ds.images[192 + 3 * i] == 0 && ds.images[192 + 3 * i + 1] == 255 && ds.images[192 + 3 * i + 2] == 0;
    report(green_ok, "folder: the 6x10 image is resized to 8x8");
    bool grey_ok = true;
    for (int i = 0; i < 64; i++) grey_ok = grey_ok && ds.images[384 + 3 * i] == grey[i] && ds.images[384 + 3 * i + 2] == grey[i];
    report(grey_ok, "folder: a grey PNG is read as RGB");
    int jpg_err = 0;
    for (int i = 0; i < 64; i++) jpg_err = std::max(jpg_err, abs((int)ds.images[576 + 3 * i + 2] - 200) + ds.images[576 + 3 * i]);
    report(jpg_err <= 6, "folder: a JPEG (absolute path) decodes", "max error %d", jpg_err);
    const VlmRecord& r0 = ds.records[0];
    report(r0.type == VLM_Q_WHERE && ds.records[1].type == VLM_Q_EXISTS && ds.records[2].type == -1 && ds.records[3].type == VLM_Q_OTHER && ds.records[4].type == -1,
           "folder: question types (missing or unknown -> other, captions -1)");
    report(vocab_decode(&v, r0.caption.data(), (int)r0.caption.size()) == "a red bag" &&
               vocab_decode(&v, ds.records[1].question.data(), (int)ds.records[1].question.size()) == "is <unk> a coat?" &&
               ds.records[1].question[1] == VOCAB_UNK && ds.records[1].caption.empty(),
           "folder: text encoded with the vocabulary (unknown words <unk>)");
    std::string shard = tmp_path("folder.vlm");
    vlm_shard_write(&ds, shard.c_str());
    VlmDataset rd;
    vlm_shard_read(&rd, shard.c_str());
    report(rd.images == ds.images && rd.records.size() == ds.records.size() && rd.records[3].question == ds.records[3].question,
           "folder: packs into a shard and reads back");

    VlmDataset first;
    std::string one = dir + "/one.jsonl";
    write_file(one, "{\"image\": \"img/b.png\", \"caption\": \"a coat\"}\n{\"image\": \"img/a.png\", \"caption\": \"a bag\"}\n");
    vlm_dataset_from_jsonl(&first, one.c_str(), &v, 0, 0, true);
    report(first.H == 6 && first.W == 10 && first.n_images == 2, "folder: H = W = 0 takes the first image's size", "%dx%d", first.H, first.W);

    auto load = [&](const std::string& text) {
        write_file(dir + "/bad.jsonl", text);
        return [&] { VlmDataset x; vlm_dataset_from_jsonl(&x, (dir + "/bad.jsonl").c_str(), &v, 8, 8, true); };
    };
    std::string good = "{\"image\": \"img/a.png\", \"caption\": \"a bag\"}\n";
    expect_fatal("folder: malformed JSONL line names the file and line", "bad.jsonl line 3: malformed JSON",
                 load(good + good + "{\"image\": \"img/a.png\", \"caption\": \"a bag\"\n" + good));
    expect_fatal("folder: line not an object", "bad.jsonl line 2: not a JSON object", load(good + "[1, 2]\n"));
    expect_fatal("folder: missing image file names it", ("line 2: cannot open image " + dir + "/img/zzz.png: No such file").c_str(),
                 load(good + "{\"image\": \"img/zzz.png\", \"caption\": \"a bag\"}\n"));
    expect_fatal("folder: undecodable image names it", ("line 1: cannot decode image " + dir + "/notimage.png").c_str(),
                 load("{\"image\": \"notimage.png\", \"caption\": \"a bag\"}\n"));
    expect_fatal("folder: no image field", "line 2: no \"image\"", load(good + "{\"caption\": \"a bag\"}\n"));
    expect_fatal("folder: question without answer", "line 1: a \"question\" without an \"answer\"",
                 load("{\"image\": \"img/a.png\", \"question\": \"what?\"}\n"));
    expect_fatal("folder: no text at all", "line 1: neither a \"caption\" nor", load("{\"image\": \"img/a.png\"}\n"));
    expect_fatal("folder: empty caption", "line 1: \"caption\" has no words", load("{\"image\": \"img/a.png\", \"caption\": \"  \"}\n"));
    expect_fatal("folder: non-string field", "line 1: \"answer\" is not a string",
                 load("{\"image\": \"img/a.png\", \"question\": \"what?\", \"answer\": 3}\n"));
    expect_fatal("folder: empty file", "holds no records", load("\n"));
    expect_fatal("folder: missing JSONL", ("cannot read " + dir + "/none.jsonl").c_str(),
                 [&] { VlmDataset x; vlm_dataset_from_jsonl(&x, (dir + "/none.jsonl").c_str(), &v, 8, 8, true); });
    vlm_dataset_free(&ds);
    report(vlm_num_records(&ds) == 0 && ds.images.empty(), "vlm_dataset_free empties the dataset");
}

int main() {
    char tmpl[] = "/tmp/test_vlm_data_XXXXXX";
    if (!mkdtemp(tmpl)) FATAL("test: mkdtemp failed");
    g_dir = tmpl;
    test_tokenizer();
    test_resize();
    test_batches();
    test_shards();
    test_folder();
    std::string cmd = "rm -rf '" + g_dir + "'";
    if (system(cmd.c_str()) != 0) fprintf(stderr, "note: could not remove %s\n", g_dir.c_str());
    return test_summary();
}
