// test_dataloader: shard round trip, batch contents, wrap-around, seek, and
// every malformed-shard error. Errors are FATAL (exit), so each bad shard is
// opened in a child process: `test_dataloader open <file> [B T]`.
#include "../src/dataloader.h"
#include "test_util.h"
#include <string>
#include <sys/wait.h>
#include <unistd.h>

static std::string g_dir;  // temp directory for this run

static std::string tmp_path(const char* name) { return g_dir + "/" + name; }

static std::vector<uint16_t> random_tokens(size_t n, int vocab, Rng* r) {
    std::vector<uint16_t> t(n);
    for (size_t i = 0; i < n; i++) t[i] = (uint16_t)(rng_u32(r) % vocab);
    return t;
}

static void write_bytes(const std::string& path, const void* data, size_t bytes) {
    FILE* f = fopen(path.c_str(), "wb");
    if (!f) FATAL("cannot write %s", path.c_str());
    if (bytes) fwrite(data, 1, bytes, f);
    fclose(f);
}

static std::vector<char> read_bytes(const std::string& path) {
    std::vector<char> b;
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) return b;
    char buf[4096]; size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0) b.insert(b.end(), buf, buf + k);
    fclose(f);
    return b;
}

// Runs `self open <file> B T` in a child; returns its exit status (-1 on a
// signal) and fills err with what it wrote to stderr.
static int run_open(const std::string& file, int B, int T, std::string* err) {
    std::string errfile = tmp_path("child_stderr.txt");
    fflush(stdout); fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) FATAL("fork failed");
    if (pid == 0) {
        FILE* e = freopen(errfile.c_str(), "w", stderr);
        if (!e || !freopen("/dev/null", "w", stdout)) _exit(127);
        char bs[16], ts[16];
        snprintf(bs, sizeof bs, "%d", B); snprintf(ts, sizeof ts, "%d", T);
        execl("/proc/self/exe", "test_dataloader", "open", file.c_str(), bs, ts, (char*)nullptr);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    std::vector<char> b = read_bytes(errfile);
    *err = std::string(b.begin(), b.end());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// expects the child to fail with a message that names the file and contains keyword
static void expect_fail(const char* name, const std::string& file, int B, int T, const char* keyword) {
    std::string err;
    int rc = run_open(file, B, T, &err);
    bool ok = rc != 0 && rc != 127 && err.find(keyword) != std::string::npos &&
              err.find(file) != std::string::npos;
    while (!err.empty() && err.back() == '\n') err.pop_back();
    report(ok, name, "exit %d, stderr \"%s\" (wanted nonzero exit, the file name and \"%s\")",
           rc, err.c_str(), keyword);
}

static void test_roundtrip_and_batches() {
    Rng r; rng_seed(&r, 1);
    const int B = 3, T = 7, V = 50257;  // vocab above 2^15 exercises the full uint16 range
    const size_t n = 3 * B * T + 5;     // 3 full batches, then 4 spare tokens (not enough for a 4th)
    std::vector<uint16_t> toks = random_tokens(n, V, &r);
    toks[0] = V - 1;  // largest legal token
    std::string path = tmp_path("good.bin");
    write_shard(path.c_str(), toks.data(), n, V);

    // exact byte layout
    std::vector<char> raw = read_bytes(path);
    bool layout = raw.size() == 1024 + 2 * n;
    if (layout) {
        const int32_t* h = (const int32_t*)raw.data();
        layout = h[0] == 20261123 && h[1] == 1 && h[2] == (int32_t)n && h[3] == V;
        for (int i = 4; i < 256; i++) layout = layout && h[i] == 0;
        layout = layout && memcmp(raw.data() + 1024, toks.data(), 2 * n) == 0;
    }
    report(layout, "write_shard byte layout", "size %zu", raw.size());
    report(access((path + ".tmp").c_str(), F_OK) != 0, "write_shard leaves no .tmp file");

    DataLoader dl;
    dataloader_open(&dl, path.c_str(), B, T);
    report(dataloader_num_tokens(&dl) == n && dataloader_vocab(&dl) == V, "header fields",
           "n %zu vocab %d", dataloader_num_tokens(&dl), dataloader_vocab(&dl));
    report(memcmp(dl.tokens, toks.data(), 2 * n) == 0, "round trip tokens");

    std::vector<int> in(B * T), tg(B * T);
    bool batches_ok = true;
    for (int k = 0; k < 3; k++) {
        size_t base = (size_t)k * B * T;
        if (dataloader_position(&dl) != base) batches_ok = false;
        dataloader_next_batch(&dl, in.data(), tg.data());
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                size_t src = base + (size_t)b * T + t;
                if (in[b * T + t] != toks[src] || tg[b * T + t] != toks[src + 1]) batches_ok = false;
            }
    }
    report(batches_ok, "sequential batches: inputs and shifted targets");

    // position is now 3*B*T; 3*B*T + B*T + 1 > n, so the 4th batch wraps to the start
    report(dataloader_position(&dl) == (size_t)3 * B * T, "position after 3 batches");
    dataloader_next_batch(&dl, in.data(), tg.data());
    bool wrap = dataloader_position(&dl) == (size_t)B * T;
    for (int i = 0; i < B * T; i++) wrap = wrap && in[i] == toks[i] && tg[i] == toks[i + 1];
    report(wrap, "wrap-around to the start when the batch would run past the end");

    // a batch may end exactly at the last token: n = B*T + 1 gives the same batch every time
    {
        std::vector<uint16_t> small = random_tokens(B * T + 1, 256, &r);
        std::string sp = tmp_path("exact.bin");
        write_shard(sp.c_str(), small.data(), small.size(), 256);
        DataLoader d2; dataloader_open(&d2, sp.c_str(), B, T);
        bool ok = true;
        for (int k = 0; k < 3; k++) {
            dataloader_next_batch(&d2, in.data(), tg.data());
            for (int i = 0; i < B * T; i++) ok = ok && in[i] == small[i] && tg[i] == small[i + 1];
        }
        report(ok, "minimal shard (B*T+1 tokens) serves full batches repeatedly");
        dataloader_free(&d2);
    }

    // seek / position round trip: resume from a saved position gives the same batch
    dataloader_reset(&dl);
    report(dataloader_position(&dl) == 0, "reset goes to 0");
    dataloader_next_batch(&dl, in.data(), tg.data());
    size_t saved = dataloader_position(&dl);
    std::vector<int> in1(B * T), tg1(B * T), in2(B * T), tg2(B * T);
    dataloader_next_batch(&dl, in1.data(), tg1.data());
    dataloader_next_batch(&dl, in.data(), tg.data());  // move on
    dataloader_seek(&dl, saved);
    report(dataloader_position(&dl) == saved, "seek then position returns the same offset");
    dataloader_next_batch(&dl, in2.data(), tg2.data());
    report(in1 == in2 && tg1 == tg2, "seek replays the same batch");

    // seek to an unaligned offset: the batch starts there
    dataloader_seek(&dl, 5);
    dataloader_next_batch(&dl, in.data(), tg.data());
    bool unaligned = true;
    for (int i = 0; i < B * T; i++) unaligned = unaligned && in[i] == toks[5 + i] && tg[i] == toks[6 + i];
    report(unaligned && dataloader_position(&dl) == 5 + (size_t)B * T, "seek to an unaligned offset");
    dataloader_free(&dl);
}

static void test_bad_files() {
    Rng r; rng_seed(&r, 2);
    const int B = 2, T = 5, V = 256;
    const size_t n = 40;
    std::vector<uint16_t> toks = random_tokens(n, V, &r);
    std::string good = tmp_path("ok.bin");
    write_shard(good.c_str(), toks.data(), n, V);
    std::vector<char> raw = read_bytes(good);

    // sanity: the child opens a good file and exits 0 (so failures below are real)
    std::string err;
    int rc = run_open(good, B, T, &err);
    report(rc == 0, "child opens a good shard", "exit %d, stderr %s", rc, err.c_str());

    expect_fail("missing file", tmp_path("does_not_exist.bin"), B, T, "cannot open");

    std::string p = tmp_path("empty.bin");
    write_bytes(p, nullptr, 0);
    expect_fail("empty file", p, B, T, "too short");

    p = tmp_path("short_header.bin");
    write_bytes(p, raw.data(), 1000);
    expect_fail("truncated header", p, B, T, "too short");

    std::vector<char> bad = raw;
    ((int32_t*)bad.data())[0] = 12345;
    p = tmp_path("magic.bin");
    write_bytes(p, bad.data(), bad.size());
    expect_fail("wrong magic", p, B, T, "magic");

    bad = raw; ((int32_t*)bad.data())[1] = 2;
    p = tmp_path("version.bin");
    write_bytes(p, bad.data(), bad.size());
    expect_fail("wrong version", p, B, T, "version");

    p = tmp_path("truncated.bin");
    write_bytes(p, raw.data(), raw.size() - 3);
    expect_fail("truncated tokens", p, B, T, "truncated");

    bad = raw; bad.push_back(0); bad.push_back(0);
    p = tmp_path("trailing.bin");
    write_bytes(p, bad.data(), bad.size());
    expect_fail("trailing bytes", p, B, T, "trailing");

    bad = raw; ((int32_t*)bad.data())[2] = -1;
    p = tmp_path("negcount.bin");
    write_bytes(p, bad.data(), bad.size());
    expect_fail("negative token count", p, B, T, "negative");

    bad = raw; ((int32_t*)bad.data())[3] = 0;
    p = tmp_path("vocab0.bin");
    write_bytes(p, bad.data(), bad.size());
    expect_fail("invalid vocab in header", p, B, T, "vocab");

    // n = 40 tokens: B*T+1 = 41 needed for B=8, T=5
    expect_fail("too few tokens for B*T+1", good, 8, 5, "too few tokens");
    rc = run_open(good, 3, 13, &err);  // 3*13+1 = 40: exactly enough
    report(rc == 0, "exactly B*T+1 tokens is accepted", "exit %d, stderr %s", rc, err.c_str());

    std::vector<uint16_t> oob = toks; oob[17] = 256;
    p = tmp_path("oob.bin");
    write_shard(p.c_str(), oob.data(), oob.size(), V);
    expect_fail("token >= vocab", p, B, T, "out of range");

    expect_fail("non-positive B", good, 0, T, "must be positive");
}

// random windows: every row is a real window of the shard with its targets
// shifted by one, the stream is deterministic, and seeking to a saved position
// replays it
static void test_random_windows() {
    Rng r; rng_seed(&r, 5);
    const int B = 4, T = 9, V = 300;
    const size_t n = 1000;
    std::vector<uint16_t> toks(n);
    for (size_t i = 0; i < n; i++) toks[i] = (uint16_t)(i % V);  // token = index mod V: windows are recognisable
    std::string path = tmp_path("windows.bin");
    write_shard(path.c_str(), toks.data(), n, V);
    DataLoader a, b;
    dataloader_open(&a, path.c_str(), B, T); dataloader_set_random(&a, 42);
    dataloader_open(&b, path.c_str(), B, T); dataloader_set_random(&b, 42);
    std::vector<int> in(B * T), tg(B * T), in2(B * T), tg2(B * T);
    bool windows_ok = true, distinct = false;
    std::vector<std::vector<int>> saved;
    for (int k = 0; k < 6; k++) {
        dataloader_next_batch(&a, in.data(), tg.data());
        saved.push_back(in);
        for (int row = 0; row < B; row++)
            for (int t = 0; t < T; t++) {
                int x = in[row * T + t], y = tg[row * T + t];
                if (y != (x + 1) % V) windows_ok = false;
                if (t > 0 && x != (in[row * T + t - 1] + 1) % V) windows_ok = false;
            }
        if (in[0] != in[T]) distinct = true;
    }
    report(windows_ok, "random windows: rows are contiguous windows, targets shifted by one");
    report(distinct, "random windows: rows start at different offsets");
    report(dataloader_position(&a) == 6, "random windows: position counts batches", "%zu", dataloader_position(&a));
    dataloader_seek(&b, 3);
    dataloader_next_batch(&b, in2.data(), tg2.data());
    report(in2 == saved[3], "random windows: seek replays the stream");
    DataLoader c; dataloader_open(&c, path.c_str(), B, T); dataloader_set_random(&c, 43);
    dataloader_next_batch(&c, in2.data(), tg2.data());
    report(in2 != saved[0], "random windows: another seed gives another stream");
    dataloader_free(&a); dataloader_free(&b); dataloader_free(&c);
}

int main(int argc, char** argv) {
    if (argc >= 3 && strcmp(argv[1], "open") == 0) {  // child mode: open and exit
        int B = argc >= 5 ? atoi(argv[3]) : 1, T = argc >= 5 ? atoi(argv[4]) : 1;
        DataLoader dl;
        dataloader_open(&dl, argv[2], B, T);
        printf("opened %s: %zu tokens, vocab %d\n", argv[2], dataloader_num_tokens(&dl), dataloader_vocab(&dl));
        dataloader_free(&dl);
        return 0;
    }
    char tmpl[] = "/tmp/test_dataloader_XXXXXX";
    if (!mkdtemp(tmpl)) FATAL("mkdtemp failed");
    g_dir = tmpl;

    test_roundtrip_and_batches();
    test_bad_files();
    test_random_windows();

    std::string cmd = "rm -rf '" + g_dir + "'";
    if (system(cmd.c_str()) != 0) fprintf(stderr, "warning: could not remove %s\n", g_dir.c_str());
    return test_summary();
}
