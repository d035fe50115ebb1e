#!/usr/bin/env bash
# End-to-end checks of build/make_scenes (the VLM data, data_scripts/make_scenes.cpp)
# on the real Fashion-MNIST files: a few scenes, their PNGs decode to 64x64x3 and
# show the items where the captions say, every answer agrees with the caption,
# train and test draw items from their own splits, a fixed seed gives the same
# bytes, the shards pack and load; a folder of one's own packs (--pack), and bad
# input stops with a clear message. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
BIN=${MAKE_SCENES_BIN:-build/make_scenes}
source test/testlib.sh
tmp=$(mktemp -d /tmp/cli_vlm_data_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
PY=/usr/bin/python3
MNIST=/usr/share/datasets/fashion-mnist

if [ ! -x "$BIN" ]; then fail "$BIN is built" "run \`make build/make_scenes\`"; finish; exit; fi

# 1. bad input, no data needed: clear message, nonzero exit
expect_error "unknown flag rejected" "unknown option '--bogus'" $BIN --bogus 1
expect_error "odd size rejected" "size must be even" $BIN --size 63 --out "$tmp/x"
expect_error "zero scenes rejected" "must be >= 1" $BIN --n-train 0 --out "$tmp/x"
expect_error "pack without a shard" "needs --shard" $BIN --pack "$tmp/x.jsonl" --vocab "$tmp/v.txt"
expect_error "pack without a vocabulary" "exactly one of --vocab" $BIN --pack "$tmp/x.jsonl" --shard "$tmp/x.vlm"
expect_error "pack flags without --pack" "go with --pack" $BIN --resize --out "$tmp/x"
expect_error "missing Fashion-MNIST says what to install" "apt-get install dataset-fashion-mnist" $BIN --mnist "$tmp/nowhere" --out "$tmp/x"
expect_error "info on a missing shard" "cannot open shard" $BIN --info "$tmp/none.vlm"

# damaged IDX files (made up here): bad magic, not gzip, truncated, labels that disagree
$PY - "$tmp/idx" <<'EOF'
import gzip, os, struct, sys
d = sys.argv[1]
def write(name, raw, gz=True):
    p = os.path.join(d, name)
    os.makedirs(p, exist_ok=True)
    for split in ("train", "t10k"):
        imgs = struct.pack(">IIII", 0x803, 10, 28, 28) + bytes(10 * 784)
        labs = struct.pack(">II", 0x801, 10) + bytes(range(10))
        files = {f"{split}-images-idx3-ubyte": imgs, f"{split}-labels-idx1-ubyte": labs}
        files.update({k.replace("SPLIT", split): v for k, v in raw.items()})
        for k, v in files.items():
            if gz: open(os.path.join(p, k + ".gz"), "wb").write(v if v[:4] == b"junk" else gzip.compress(v, mtime=0))
            else: open(os.path.join(p, k), "wb").write(v)
write("magic", {"SPLIT-images-idx3-ubyte": struct.pack(">IIII", 0x801, 10, 28, 28) + bytes(7840)})
write("notgz", {"SPLIT-images-idx3-ubyte": b"junk, not gzip data"})
write("trunc", {"SPLIT-images-idx3-ubyte": struct.pack(">IIII", 0x803, 10, 28, 28) + bytes(100)}, gz=False)
write("count", {"SPLIT-labels-idx1-ubyte": struct.pack(">II", 0x801, 9) + bytes(9)})
write("ok", {})
EOF
expect_error "IDX with bad magic" "bad magic 0x00000801 (expected 0x00000803" $BIN --mnist "$tmp/idx/magic" --out "$tmp/x"
expect_error "IDX that is not gzip data" "corrupt or not gzip" $BIN --mnist "$tmp/idx/notgz" --out "$tmp/x"
expect_error "truncated IDX (uncompressed files are read too)" "size mismatch.*truncated" $BIN --mnist "$tmp/idx/trunc" --out "$tmp/x"
expect_error "labels and images disagree" "holds 9 labels but the train images are 10" $BIN --mnist "$tmp/idx/count" --out "$tmp/x"
$BIN --mnist "$tmp/idx/ok" --out "$tmp/fake" --n-train 3 --n-test 2 > /dev/null 2>&1 \
    && pass "a well-formed (made-up) IDX set makes scenes" || fail "a well-formed (made-up) IDX set makes scenes"

if [ ! -f "$MNIST/train-images-idx3-ubyte.gz" ] || [ ! -f "$MNIST/t10k-labels-idx1-ubyte.gz" ]; then
    fail "Fashion-MNIST is installed" "$MNIST is missing: apt-get install dataset-fashion-mnist (the rest of this test needs it)"
    finish; exit
fi

# 2. scenes from the real data, twice with one seed, once with another
ARGS="--n-train 40 --n-test 20 --seed 7"
if $BIN $ARGS --out "$tmp/a" > "$tmp/a.out" 2>&1; then pass "make_scenes writes 40 train + 20 test scenes"
else fail "make_scenes writes 40 train + 20 test scenes" "$(tail -3 "$tmp/a.out")"; fi
$BIN $ARGS --out "$tmp/b" > /dev/null 2>&1
$BIN --n-train 40 --n-test 20 --seed 8 --out "$tmp/c" > /dev/null 2>&1
$BIN --n-train 12 --n-test 20 --seed 7 --out "$tmp/d" > /dev/null 2>&1
cmp -s "$tmp/a/train.jsonl" "$tmp/b/train.jsonl" && cmp -s "$tmp/a/test.jsonl" "$tmp/b/test.jsonl" && [ -s "$tmp/a/train.jsonl" ] \
    && pass "a fixed seed gives byte-identical JSONL" || fail "a fixed seed gives byte-identical JSONL"
diff -r "$tmp/a" "$tmp/b" > /dev/null && pass "a fixed seed gives identical images, vocabulary and shards" \
    || fail "a fixed seed gives identical images, vocabulary and shards"
cmp -s "$tmp/a/train.jsonl" "$tmp/c/train.jsonl" && fail "another seed gives other scenes" || pass "another seed gives other scenes"
for f in train.jsonl test.jsonl vocab.txt train.vlm test.vlm; do
    [ -s "$tmp/a/$f" ] && pass "writes $f" || fail "writes $f"
done

$PY - "$tmp/a" "$tmp/d" "$MNIST" <<'EOF' > "$tmp/check.out" 2>&1 && pass "scenes, captions, answers, splits and shards agree" || fail "scenes, captions, answers, splits and shards agree" "$(tail -5 "$tmp/check.out")"
import gzip, json, os, re, struct, sys, zlib
a, d, mnist = sys.argv[1:4]
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
COLOURS = {"red": (255, 48, 48), "green": (48, 220, 48), "blue": (64, 112, 255), "yellow": (250, 230, 40),
           "magenta": (240, 48, 240), "cyan": (40, 230, 230)}
CELLS = ["top left", "top right", "bottom left", "bottom right"]
NUMBERS = ["zero", "one", "two", "three", "four"]
TYPES = ["what", "where", "colour", "count", "exists"]

def png_rgb(path):
    """(w, h, rows of RGB bytes) of an 8-bit RGB PNG, filters undone (PNG spec, section 9)."""
    raw = open(path, "rb").read()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, ihdr = 8, b"", None
    while pos < len(raw):
        n, kind = struct.unpack(">I4s", raw[pos:pos + 8])
        body = raw[pos + 8:pos + 8 + n]
        if kind == b"IHDR": ihdr = struct.unpack(">IIBBBBB", body)
        if kind == b"IDAT": idat += body
        pos += 12 + n
    w, h, depth, ctype = ihdr[:4]
    assert depth == 8 and ctype == 2, (path, depth, ctype)  # 8-bit RGB
    data = zlib.decompress(idat)
    stride = w * 3
    assert len(data) == h * (stride + 1), (path, len(data))
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f, line = data[y * (stride + 1)], bytearray(data[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - 3] if i >= 3 else 0
            up, ul = prev[i], prev[i - 3] if i >= 3 else 0
            if f == 1: line[i] = (line[i] + left) & 255
            elif f == 2: line[i] = (line[i] + up) & 255
            elif f == 3: line[i] = (line[i] + (left + up) // 2) & 255
            elif f == 4:
                p = left + up - ul; pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else ul)) & 255
            else: assert f == 0, f
        rows.append(bytes(line)); prev = line
    return w, h, rows

labels = {s: gzip.open(f"{mnist}/{s}-labels-idx1-ubyte.gz").read()[8:] for s in ("train", "t10k")}

def check_split(root, name, split, n_scenes):
    lines = [json.loads(l) for l in open(f"{root}/{name}.jsonl")]
    assert len(lines) == 5 * n_scenes, (name, len(lines))
    scenes = {}
    for l in lines:
        assert set(l) == {"image", "caption", "question", "answer", "type", "items"}, l.keys()
        scenes.setdefault(l["image"], []).append(l)
    assert len(scenes) == n_scenes
    yes = no = 0
    for image, ls in scenes.items():
        assert [l["type"] for l in ls] == TYPES, [l["type"] for l in ls]
        assert len({l["caption"] for l in ls}) == 1 and len({json.dumps(l["items"]) for l in ls}) == 1
        items, caption = ls[0]["items"], ls[0]["caption"]
        # the caption lists the items in cell order: "a red bag top left, a blue coat top right and ..."
        phrases = re.split(r", | and ", caption)
        parsed = []
        for p in phrases:
            m = re.fullmatch(r"a (\w+) (\S+) (top left|top right|bottom left|bottom right)", p)
            assert m, (caption, p)
            parsed.append({"colour": m[1], "class": m[2], "cell": m[3]})
        assert parsed == [{k: it[k] for k in ("colour", "class", "cell")} for it in items], (caption, items)
        assert 1 <= len(items) <= 4
        assert [CELLS.index(it["cell"]) for it in items] == sorted({CELLS.index(it["cell"]) for it in items})
        assert len({it["class"] for it in items}) == len(items) and len({it["colour"] for it in items}) == len(items)
        for it in items:  # the item really is of that class, from the split of this set
            s, idx = it["src"].split(":")
            assert s == split, (name, it["src"])
            assert CLASSES[labels[s][int(idx)]] == it["class"], it
        by_cell = {it["cell"]: it for it in items}
        by_class = {it["class"]: it for it in items}
        for l in ls:
            q, ans, t = l["question"], l["answer"], l["type"]
            if t == "what":
                cell = re.fullmatch(r"what is at the (.+)\?", q)[1]
                assert ans == (by_cell[cell]["class"] if cell in by_cell else "nothing"), (q, ans, caption)
            elif t == "where":
                assert ans == by_class[re.fullmatch(r"where is the (\S+)\?", q)[1]]["cell"], (q, ans, caption)
            elif t == "colour":
                assert ans == by_class[re.fullmatch(r"what colour is the (\S+)\?", q)[1]]["colour"], (q, ans, caption)
            elif t == "count":
                assert q == "how many items are there?" and ans == NUMBERS[len(items)], (q, ans, caption)
            elif t == "exists":
                cls = re.fullmatch(r"is there a (\S+)\?", q)[1]
                assert cls in CLASSES and ans == ("yes" if cls in by_class else "no"), (q, ans, caption)
                yes += ans == "yes"; no += ans == "no"
        # the image: 64x64 RGB; each item's cell holds pixels of its colour, empty cells are black
        w, h, rows = png_rgb(os.path.join(root, image))
        assert (w, h) == (64, 64), (image, w, h)
        for c, cell in enumerate(CELLS):
            x0, y0 = (c % 2) * 32, (c // 2) * 32
            px = [rows[y][3 * x:3 * x + 3] for y in range(y0, y0 + 32) for x in range(x0, x0 + 32)]
            lit = [p for p in px if max(p) > 40]
            if cell not in by_cell:
                assert not lit, (image, cell, "should be empty")
                continue
            assert len(lit) > 20, (image, cell, len(lit))
            col = COLOURS[by_cell[cell]["colour"]]
            brightest = max(lit, key=max)  # its channels are in the palette colour's proportions
            k = max(brightest) / max(col)
            assert all(abs(brightest[i] - col[i] * k) <= 3 for i in range(3)), (image, cell, brightest, col)
    assert yes == no == n_scenes // 2, (yes, no)  # exists answers balanced
    return lines, scenes

train, train_scenes = check_split(a, "train", "train", 40)
test, test_scenes = check_split(a, "test", "t10k", 20)
assert not set(train_scenes) & set(test_scenes)
print("every question type in both splits; answers agree with captions and images")

# the test set does not depend on --n-train (only the image numbers shift)
test_d = [json.loads(l) for l in open(f"{d}/test.jsonl")]
strip = lambda ls: [{k: v for k, v in l.items() if k != "image"} for l in ls]
assert strip(test_d) == strip(test)
assert open(f"{d}/{test_d[0]['image']}", "rb").read() == open(f"{a}/{test[0]['image']}", "rb").read()

# vocabulary: specials, then the train words sorted; every test word is in it
vocab = open(f"{a}/vocab.txt").read().split("\n")
assert vocab[-1] == "" and vocab[:6] == ["<pad>", "<bos>", "<eos>", "<image>", "<unk>", "<sep>"], vocab[:7]
words = vocab[6:-1]
assert words == sorted(words) and len(set(words)) == len(words)
def split_words(t): return re.sub(r"([?,.!;:])", r" \1 ", t.lower()).split()
text_words = {w for l in train for k in ("caption", "question", "answer") for w in split_words(l[k])}
assert set(words) == text_words, set(words) ^ text_words
assert {w for l in test for k in ("caption", "question", "answer") for w in split_words(l[k])} <= set(words)
assert len(vocab) - 1 <= 60, len(vocab)

# shards: header as documented; images = the PNGs' pixels; records' tokens = the JSONL text
for name, lines, scenes in (("train", train, train_scenes), ("test", test, test_scenes)):
    raw = open(f"{a}/{name}.vlm", "rb").read()
    h = struct.unpack("<256i", raw[:1024])
    assert h[:8] == (20261127, 1, len(scenes), 64, 64, 3, len(lines), len(vocab) - 1) and not any(h[10:]), h[:10]
    vb, ntok = h[8], h[9]
    assert raw[1024:1024 + vb].decode() == "\n".join(vocab), "vocabulary section"
    img0 = raw[1024 + vb:1024 + vb + 64 * 64 * 3]
    assert img0 == b"".join(png_rgb(f"{a}/{lines[0]['image']}")[2]), "first image"
    rec_at = 1024 + vb + len(scenes) * 64 * 64 * 3
    assert len(raw) == rec_at + len(lines) * 32 + 4 * ntok
    pool = struct.unpack(f"<{ntok}i", raw[rec_at + len(lines) * 32:])
    for i in (0, len(lines) - 1):
        r = struct.unpack("<8i", raw[rec_at + 32 * i:rec_at + 32 * i + 32])
        assert r[1] == TYPES.index(lines[i]["type"])
        for part, (b, n) in zip(("caption", "question", "answer"), ((r[2], r[3]), (r[4], r[5]), (r[6], r[7]))):
            assert [vocab[t] for t in pool[b:b + n]] == split_words(lines[i][part]), (part, lines[i][part])
print("vocabulary and shards as documented")
EOF

out=$($BIN --info "$tmp/a/train.vlm" 2>&1)
[ $? -eq 0 ] && grep -q "40 images 64x64, 200 records" <<<"$out" && grep -q "what 40, where 40, colour 40, count 40, exists 40, other 0" <<<"$out" \
    && pass "the train shard loads (--info)" || fail "the train shard loads (--info)" "$out"
out=$($BIN --info "$tmp/a/test.vlm" 2>&1)
[ $? -eq 0 ] && grep -q "20 images 64x64, 100 records" <<<"$out" && pass "the test shard loads (--info)" || fail "the test shard loads (--info)" "$out"
head -c 5000 "$tmp/a/train.vlm" > "$tmp/trunc.vlm"
expect_error "a truncated shard is refused" "size mismatch" $BIN --info "$tmp/trunc.vlm"

# 3. a folder of one's own: scene PNGs plus a 32x48 PNG (made here), packed with --pack
mkdir -p "$tmp/own/pics"
cp "$tmp/a/images/000000.png" "$tmp/a/images/000001.png" "$tmp/own/pics/"
$PY - "$tmp/own/pics/small.png" <<'EOF'
import struct, sys, zlib
w, h = 48, 32
rows = b"".join(b"\x00" + bytes([200, 30, 30]) * w for _ in range(h))
chunk = lambda k, b: struct.pack(">I", len(b)) + k + b + struct.pack(">I", zlib.crc32(k + b))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                              + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
EOF
cat > "$tmp/own/train.jsonl" <<'EOF'
{"image": "pics/000000.png", "caption": "Three things on black", "question": "What is at the top left?", "answer": "nothing", "type": "what"}
{"image": "pics/000001.png", "question": "Is it red?", "answer": "no"}
{"image": "pics/small.png", "caption": "a red square"}
EOF
printf '{"image": "pics/000001.png", "caption": "a red cat"}\n' > "$tmp/own/test.jsonl"
expect_error "own folder: a wrong-size image without --resize names it and both sizes" "line 3: image .*pics/small.png is 32x48 (height x width) but the dataset is 64x64" \
    $BIN --pack "$tmp/own/train.jsonl" --build-vocab "$tmp/own/vocab.txt" --shard "$tmp/own/train.vlm"
out=$($BIN --pack "$tmp/own/train.jsonl" --build-vocab "$tmp/own/vocab.txt" --shard "$tmp/own/train.vlm" --resize 2>&1)
[ $? -eq 0 ] && grep -q "3 records, 3 images of 64x64" <<<"$out" && pass "own folder: packs with --resize and --build-vocab" \
    || fail "own folder: packs with --resize and --build-vocab" "$out"
out=$($BIN --pack "$tmp/own/test.jsonl" --vocab "$tmp/own/vocab.txt" --shard "$tmp/own/test.vlm" 2>&1)
[ $? -eq 0 ] && grep -q "1 words of .* are not in the vocabulary" <<<"$out" && pass "own folder: the test file packs with the train vocabulary (unknown words counted)" \
    || fail "own folder: the test file packs with the train vocabulary (unknown words counted)" "$out"
out=$($BIN --info "$tmp/own/train.vlm" 2>&1)
[ $? -eq 0 ] && grep -q "what 1, where 0, colour 0, count 0, exists 0, other 1" <<<"$out" && pass "own folder: the shard loads, types kept" \
    || fail "own folder: the shard loads, types kept" "$out"
printf '{"image": "pics/000000.png", "caption": "ok"}\n{"image": "pics/000000.png", "caption": }\n' > "$tmp/own/bad.jsonl"
expect_error "own folder: malformed line named" "bad.jsonl line 2: malformed JSON" \
    $BIN --pack "$tmp/own/bad.jsonl" --vocab "$tmp/own/vocab.txt" --shard "$tmp/own/bad.vlm"
printf '{"image": "pics/none.png", "caption": "ok"}\n' > "$tmp/own/bad.jsonl"
expect_error "own folder: missing image named" "line 1: cannot open image .*pics/none.png" \
    $BIN --pack "$tmp/own/bad.jsonl" --vocab "$tmp/own/vocab.txt" --shard "$tmp/own/bad.vlm"
finish
