#!/usr/bin/env bash
# End-to-end check of the ViT classifier study (data_scripts/vit_study.sh + vit_study.py) at SIZE=tiny on
# the CPU build (train_vlm_cpu): Fashion-MNIST items prepared as a classification folder (the shard's
# header, vocabulary and labels checked against the IDX files), a tiny classifier trained on the spot
# (`--stage classify`), none / tome / pool / random through `--stage eval`; the CSV (one row per run,
# FLOPs below none's for every reduction, ToMe's schedule), the markdown table, the plot; the flags a
# classifier refuses. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
source test/testlib.sh
tmp=$(mktemp -d /tmp/cli_vit_study_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
[ -x ./train_vlm_cpu ] || make train_vlm_cpu > /dev/null
if SIZE=tiny WORK="$tmp/study" OUT="$tmp/study" bash data_scripts/vit_study.sh > "$tmp/study.out" 2>&1; then pass "SIZE=tiny vit_study.sh runs (prepare, train, 8 evaluations, report)"
else fail "SIZE=tiny vit_study.sh runs" "$(tail -5 "$tmp/study.out")"; finish; exit; fi
/usr/bin/python3 - "$tmp/study/data" /usr/share/datasets/fashion-mnist <<'PY' && pass "prepare: shards of 32x32 items, 6 special tokens + 10 classes, each caption its label" || fail "prepare"
import gzip, struct, sys
import numpy as np
d, mnist = sys.argv[1], sys.argv[2]
for shard, split, n in (("train.vlm", "train", 1000), ("test.vlm", "t10k", 300)):
    b = open(f"{d}/{shard}", "rb").read()
    h = np.frombuffer(b[:1024], dtype="<i4")
    assert list(h[:10]) == [20261127, 1, n, 32, 32, 3, n, 16, h[8], n], list(h[:10])
    vocab = b[1024:1024 + h[8]].decode().split("\n")[:-1]
    assert vocab[6:] == ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"], vocab
    img = np.frombuffer(b, dtype=np.uint8, count=n * 32 * 32 * 3, offset=1024 + h[8]).reshape(n, 32, 32, 3)
    tok = np.frombuffer(b, dtype="<i4", count=n, offset=len(b) - 4 * n)
    lab = np.frombuffer(gzip.open(f"{mnist}/{split}-labels-idx1-ubyte.gz").read()[8:], dtype=np.uint8)[:n]
    pix = np.frombuffer(gzip.open(f"{mnist}/{split}-images-idx3-ubyte.gz").read()[16:], dtype=np.uint8)[:n * 784].reshape(n, 28, 28)
    assert (tok - 6 == lab).all()
    assert (img[:, 2:30, 2:30, 0] == pix).all() and (img[..., 0] == img[..., 2]).all() and img[:, :2].max() == 0
PY
grep -q "classify loss" "$tmp/study/train.log" && grep -q "classifier: \[CLS\] -> LN -> linear head over 10 classes" "$tmp/study/train.log" \
    && pass "train_vlm --stage classify trains the ViT classifier" || fail "classify stage" "$(tail -3 "$tmp/study/train.log")"
/usr/bin/python3 - "$tmp/study/study.csv" <<'PY' && pass "study.csv: none, tome 0.25/0.5/0.75, pool 0.75, random 0.25/0.5/0.75; tokens, FLOPs, images/s, schedules" || fail "study.csv"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
runs = [(r["method"], float(r["ratio"])) for r in rows]
want = [("none", 0.0)] + [("tome", r) for r in (0.25, 0.5, 0.75)] + [("pool", 0.75)] + [("random", r) for r in (0.25, 0.5, 0.75)]
assert runs == want, runs
tok = {(r["method"], float(r["ratio"])): int(r["patch_tokens"]) for r in rows}
assert tok[("none", 0.0)] == 16 and tok[("tome", 0.5)] == 8 and tok[("tome", 0.75)] == 4 and tok[("pool", 0.75)] == 4 and tok[("random", 0.25)] == 12, tok
none = rows[0]
for r in rows:
    assert 0 <= float(r["accuracy"]) <= 1 and float(r["images_per_s"]) > 0 and int(r["test_images"]) == 300, r
    if r["method"] != "none":
        assert float(r["gflop_per_image"]) < float(none["gflop_per_image"]), r
    assert (r["tome_schedule"] != "") == (r["method"] == "tome"), r
assert [x["tome_schedule"] for x in rows if x["method"] == "tome"] == ["2 1 1", "3 3 2", "4 4 4"]
# ToMe merges gradually: at the same ratio it keeps more FLOPs than dropping at the input
fl = {(r["method"], float(r["ratio"])): float(r["gflop_per_image"]) for r in rows}
assert fl[("tome", 0.75)] > fl[("random", 0.75)] and fl[("pool", 0.75)] == fl[("random", 0.75)]
PY
[ "$(grep -c '^|' "$tmp/study/study.md")" -eq 10 ] && grep -q "| tome | 0.5 | 8 |" "$tmp/study/study.md" \
    && pass "study.md: a header, a rule and 8 rows" || fail "study.md" "$(head -5 "$tmp/study/study.md")"
[ "$(head -c 4 "$tmp/study/study.png" | tail -c 3)" = "PNG" ] && pass "study.png drawn" || fail "study.png drawn"
common=(--init "$tmp/study/vit.ckpt" --data-dir "$tmp/study/data" --device cpu --batch 8)
expect_error "a classifier refuses fastv" "classifier takes" ./train_vlm_cpu --stage eval "${common[@]}" --reduce fastv --reduce-ratio 0.5
expect_error "a classifier refuses an unreachable ToMe ratio" "at the fewest" ./train_vlm_cpu --stage eval "${common[@]}" --reduce tome --reduce-ratio 0.95
expect_error "a classifier checkpoint is not a VLM for infer" "image classifier" ./train_vlm_cpu --stage infer --init "$tmp/study/vit.ckpt" --device cpu \
    --image data_scripts/README.md --question "what?"
[ -x build/make_scenes ] || make build/make_scenes > /dev/null
./build/make_scenes --out "$tmp/scenes" --n-train 4 --n-test 2 > /dev/null
expect_error "classify needs one-word captions (scenes are refused)" "one word per caption" ./train_vlm_cpu --stage classify --data-dir "$tmp/scenes" --device cpu
finish
