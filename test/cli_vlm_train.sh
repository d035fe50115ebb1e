#!/usr/bin/env bash
# End-to-end checks of train_vlm (the CPU build, train_vlm_cpu) on a few
# Fashion-MNIST scenes: it trains and logs, checkpoint + resume reproduces an
# uninterrupted run exactly, --image/--question answers from a checkpoint, a
# user's JSONL folder trains like the shards, and bad input gives a clear
# message and a nonzero exit. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
BIN=${TRAIN_VLM_BIN:-./train_vlm_cpu}
source test/testlib.sh
tmp=$(mktemp -d /tmp/cli_vlm_train_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
if ! ./build/make_scenes --out "$tmp/scenes" --n-train 60 --n-test 20 > "$tmp/scenes.out" 2>&1; then
    fail "make_scenes builds the test scenes" "$(tail -2 "$tmp/scenes.out")"; finish; exit; fi
ARGS="--data-dir $tmp/scenes --patch 16 --v-layers 2 --v-dim 16 --v-heads 2 --l-layers 1 --l-dim 16 --l-heads 2 --batch 4 --lr 3e-3 --warmup 2 --steps 12 --eval-interval 6 --eval-records 20 --log-every 4"

# 1. training runs, logs JSONL (accuracy per question type), and the loss falls
if $BIN $ARGS --log "$tmp/full.jsonl" --checkpoint "$tmp/full.ckpt" > "$tmp/full.out" 2>&1; then pass "trains 12 steps"
else fail "trains 12 steps" "$(tail -3 "$tmp/full.out")"; fi
/usr/bin/python3 - "$tmp/full.jsonl" <<'PY' && pass "JSONL log parses: losses, per-type accuracy" || fail "JSONL log parses: losses, per-type accuracy"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
train = [r for r in rows if "loss" in r]
evals = [r for r in rows if "accuracy" in r]
assert [r["step"] for r in train] == list(range(1, 13)), [r["step"] for r in train]
assert len(evals) == 3 and all("acc_count" in r and "val_loss" in r for r in evals), evals
assert evals[-1]["val_loss"] < evals[0]["val_loss"], [r["val_loss"] for r in evals]
PY
grep -q "seq/s" "$tmp/full.out" && grep -q "ETA" "$tmp/full.out" && grep -q "exact match" "$tmp/full.out" \
    && pass "progress lines show seq/s, ETA; evaluations show exact match" || fail "progress lines show seq/s, ETA; evaluations show exact match"

# 2. resume: stop at 6, resume to 12: the same losses, bit for bit
$BIN $ARGS --stop-at 6 --checkpoint "$tmp/half.ckpt" --log "$tmp/resumed.jsonl" > /dev/null 2>&1 \
    && $BIN $ARGS --resume "$tmp/half.ckpt" --log "$tmp/resumed.jsonl" > /dev/null 2>&1 \
    && pass "stops at step 6 and resumes" || fail "stops at step 6 and resumes"
/usr/bin/python3 - "$tmp/full.jsonl" "$tmp/resumed.jsonl" <<'PY' && pass "resume reproduces the uninterrupted losses exactly" || fail "resume reproduces the uninterrupted losses exactly"
import json, sys
def rows(p): return [json.loads(l) for l in open(p)]
a = {r["step"]: r["loss"] for r in rows(sys.argv[1]) if "loss" in r}
b = [(r["step"], r["loss"]) for r in rows(sys.argv[2]) if "loss" in r]
assert [s for s, _ in b] == list(range(1, 13)), b
assert all(a[s] == l for s, l in b), [(s, a[s], l) for s, l in b if a[s] != l]
PY

# 3. a question about an image, from the checkpoint
img=$(ls "$tmp"/scenes/images/*.png | tail -1)
INFER="--stage infer --init $tmp/full.ckpt"
out=$($BIN $INFER --image "$img" --question "how many items are there?" 2>&1)
[ $? -eq 0 ] && pass "--stage infer answers ('$out')" || fail "--stage infer answers" "$out"

# 4. a user's folder (JSONL + PNG, no shards) trains the same way
mkdir -p "$tmp/own"; cp -r "$tmp/scenes/images" "$tmp/scenes/train.jsonl" "$tmp/scenes/test.jsonl" "$tmp/own/"
$BIN ${ARGS//$tmp\/scenes/$tmp/own} --steps 3 > "$tmp/own.out" 2>&1 && grep -q "exact match" "$tmp/own.out" \
    && pass "trains from a JSONL folder of PNGs" || fail "trains from a JSONL folder of PNGs" "$(tail -3 "$tmp/own.out")"

# 5. LoRA on the GPT (instruct from the trained model): the base frozen, the adapters in
#    the checkpoint's config and tensors, eval and infer read them back
LORA="--stage instruct --init $tmp/full.ckpt --lora-rank 2 --lora-alpha 4 --lora-dropout 0.1 --steps 6"
$BIN $ARGS $LORA --checkpoint "$tmp/lora.ckpt" > "$tmp/lora.out" 2>&1 \
    && pass "instruct with --lora-rank trains" || fail "instruct with --lora-rank trains" "$(tail -3 "$tmp/lora.out")"
grep -a -q "lm_lora_rank=2" "$tmp/lora.ckpt" && grep -a -q "lm.blocks.0.attn.qkv.lora_A" "$tmp/lora.ckpt" \
    && pass "the checkpoint records the adapters" || fail "the checkpoint records the adapters"
/usr/bin/python3 - "$tmp/lora.out" <<'PY' && pass "LoRA trains far fewer parameters than the model" || fail "LoRA trains far fewer parameters than the model"
import re, sys
m = re.search(r"([0-9.]+)M parameters, ([0-9.]+)M trained", open(sys.argv[1]).read())
assert m and float(m.group(2)) < float(m.group(1)) / 3, m and m.groups()
PY
$BIN --stage eval --init "$tmp/lora.ckpt" --data-dir "$tmp/scenes" --eval-records 20 > "$tmp/lora_eval.out" 2>&1 && grep -q "exact match" "$tmp/lora_eval.out" \
    && pass "--stage eval reads the adapters" || fail "--stage eval reads the adapters" "$(tail -3 "$tmp/lora_eval.out")"
out=$($BIN --stage infer --init "$tmp/lora.ckpt" --image "$img" --question "how many items are there?" 2>&1)
[ $? -eq 0 ] && pass "--stage infer with adapters answers ('$out')" || fail "--stage infer with adapters answers" "$out"
expect_error "--lora-rank outside the GPT's stages" "stages lm, instruct and e2e" $BIN $ARGS --stage align --lora-rank 2
expect_error "a new stage from a LoRA checkpoint" "has LoRA adapters" $BIN $ARGS --stage instruct --init "$tmp/lora.ckpt"
expect_error "unknown GPT target" "has no 'in_proj'" $BIN $ARGS $LORA --lora-targets in_proj

# 6. bad input: clear message, nonzero exit
expect_error "unknown flag rejected" "unknown option '--bogus'" $BIN --bogus 1
expect_error "bad projector rejected" "linear or mlp" $BIN --projector conv
expect_error "missing data folder" "cannot" $BIN --data-dir "$tmp/nowhere"
expect_error "infer needs a model" "needs a model" $BIN --stage infer --image "$img" --question "is there a bag?"
expect_error "--image outside infer" "belong to --stage infer" $BIN --image "$img" --question "is there a bag?"
expect_error "unknown stage" "--stage must be" $BIN --stage pretrain
expect_error "config mismatch on resume" "v_dim=16 but this run has v_dim=32" $BIN ${ARGS/--v-dim 16/--v-dim 32} --resume "$tmp/full.ckpt"
expect_error "patch size must divide the image" "multiple of --patch" $BIN ${ARGS/--patch 16/--patch 24}
/usr/bin/python3 -c "
import struct, zlib, sys
def png(path, w, h):
    raw = b''.join(b'\x00' + bytes([(x * 7 + y) % 256 for x in range(w * 3)]) for y in range(h))
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
    open(path, 'wb').write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
png(sys.argv[1], 48, 40)" "$tmp/small.png"
expect_error "an image of another size is an error without --resize" "is 40x48" $BIN $INFER --image "$tmp/small.png" --question "is there a bag?"
out=$($BIN $INFER --image "$tmp/small.png" --question "is there a bag?" --resize 2>&1)
[ $? -eq 0 ] && pass "--resize answers about an image of another size" || fail "--resize answers about an image of another size" "$out"
echo "not a png" > "$tmp/bad.png"
expect_error "an unreadable image is named" "bad.png" $BIN $INFER --image "$tmp/bad.png" --question "is there a bag?"
finish
