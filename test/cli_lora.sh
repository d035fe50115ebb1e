#!/usr/bin/env bash
# End-to-end checks of fine-tuning in train_mamba (the CPU build): a base model
# is trained on one tiny corpus, then fine-tuned on another with LoRA (adapter
# files hold only the adapters, resume is exact, the base is never written,
# --sample with --base/--adapter), fully (--base without LoRA), and every
# misuse gives a clear message and a nonzero exit. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
BIN=${TRAIN_BIN:-./train_mamba_cpu}
source test/testlib.sh
tmp=$(mktemp -d /tmp/cli_lora_XXXXXX)
trap 'rm -rf "$tmp"' EXIT

/usr/bin/python3 test/tiny_shards.py "$tmp/base_data"
/usr/bin/python3 test/tiny_shards.py "$tmp/new_data" 60 "pack my box with {} dozen liquor jugs!"
MODEL="--d-model 32 --n-layer 2 --d-state 8"
COMMON="--batch 4 --seq-len 48 --warmup 2 --eval-batches 2 --log-every 10"
$BIN --data-dir "$tmp/base_data" $MODEL $COMMON --lr 3e-3 --steps 40 --eval-interval 0 --checkpoint "$tmp/base.ckpt" > "$tmp/base.out" 2>&1 \
    && pass "base model trains" || fail "base model trains" "$(tail -3 "$tmp/base.out")"
base_sum=$(md5sum < "$tmp/base.ckpt")

FT="--data-dir $tmp/new_data --base $tmp/base.ckpt $COMMON --lr 1e-2 --steps 30 --eval-interval 10 --also-eval $tmp/base_data"
LORA="--lora-rank 4 --lora-alpha 8 --lora-targets in_proj_x,out_proj --train-also D"

# 1. LoRA: learns the new corpus, logs both validation losses, writes a small adapter file
$BIN $FT $LORA --log "$tmp/lora.jsonl" --checkpoint "$tmp/adapter.ckpt" > "$tmp/lora.out" 2>&1 \
    && pass "LoRA fine-tuning runs" || fail "LoRA fine-tuning runs" "$(tail -3 "$tmp/lora.out")"
grep -q "trainable (" "$tmp/lora.out" && pass "prints the trainable parameter count" || fail "prints the trainable parameter count"
/usr/bin/python3 - "$tmp/lora.jsonl" "$tmp/adapter.ckpt" "$tmp/base.ckpt" <<'PY' && pass "LoRA: new-corpus loss falls, forgetting logged, adapter file small" || fail "LoRA: new-corpus loss falls, forgetting logged, adapter file small"
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
vals = [r["val_loss"] for r in rows if "val_loss" in r]
also = [r["also_val_loss"] for r in rows if "also_val_loss" in r]
summary = [r for r in rows if "summary" in r][-1]
assert len(vals) >= 3 and len(also) == len(vals), (vals, also)
assert vals[-1] < vals[0] - 0.3, vals
assert summary["trainable"] < summary["params"] / 5, summary
assert summary["final_val_loss"] == vals[-1] and summary["final_also_val_loss"] == also[-1], summary
a, b = os.path.getsize(sys.argv[2]), os.path.getsize(sys.argv[3])
assert a < b / 3, (a, b)
PY
[ "$(md5sum < "$tmp/base.ckpt")" = "$base_sum" ] && pass "the base checkpoint is never written" || fail "the base checkpoint is never written"

# 2. resume of a LoRA run: stop at 15, resume to 30 == uninterrupted losses, exactly (dropout on)
DROP="--lora-dropout 0.1"
$BIN $FT $LORA $DROP --log "$tmp/full.jsonl" > /dev/null 2>&1
$BIN $FT $LORA $DROP --stop-at 15 --checkpoint "$tmp/half.ckpt" --log "$tmp/res.jsonl" > /dev/null 2>&1
$BIN $FT $LORA $DROP --resume "$tmp/half.ckpt" --log "$tmp/res.jsonl" > "$tmp/res.out" 2>&1 \
    && pass "LoRA run resumes from its adapter file" || fail "LoRA run resumes from its adapter file" "$(tail -3 "$tmp/res.out")"
/usr/bin/python3 - "$tmp/full.jsonl" "$tmp/res.jsonl" <<'PY' && pass "LoRA resume reproduces the uninterrupted losses exactly" || fail "LoRA resume reproduces the uninterrupted losses exactly"
import json, sys
def losses(p): return {r["step"]: r["loss"] for r in map(json.loads, open(p)) if "loss" in r}
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert sorted(b) == list(range(1, 31)), sorted(b)
diff = [(s, a[s], b[s]) for s in range(1, 31) if a[s] != b[s]]
assert not diff, diff[:3]
PY

# 3. generation from base + adapter (merged), and the adapter changes what the model says
out=$($BIN --sample 40 --base "$tmp/base.ckpt" --adapter "$tmp/adapter.ckpt" --prompt "pack my" --temperature 0 2>&1)
base_out=$($BIN --sample 40 --resume "$tmp/base.ckpt" --prompt "pack my" --temperature 0 2>&1)
[ -n "$out" ] && [ "$out" != "$base_out" ] && pass "--sample with --base and --adapter" || fail "--sample with --base and --adapter" "$out | $base_out"

# 4. full fine-tuning from --base: every weight trainable, a full checkpoint
$BIN $FT --log "$tmp/fft.jsonl" --checkpoint "$tmp/fft.ckpt" > "$tmp/fft.out" 2>&1 \
    && grep -q "all weights" "$tmp/fft.out" && pass "full fine-tuning from --base" || fail "full fine-tuning from --base" "$(tail -3 "$tmp/fft.out")"
/usr/bin/python3 - "$tmp/fft.jsonl" <<'PY' && pass "full fine-tuning trains every parameter" || fail "full fine-tuning trains every parameter"
import json, sys
s = [json.loads(l) for l in open(sys.argv[1]) if "summary" in l][-1]
assert s["trainable"] == s["params"], s
PY

# 5. misuse: clear messages, nonzero exits
expect_error "LoRA without --base" "pass --base" $BIN --data-dir "$tmp/new_data" $LORA --steps 1
expect_error "adapter on another base" "trained on another base" $BIN --sample 5 --base "$tmp/fft.ckpt" --adapter "$tmp/adapter.ckpt"
expect_error "adapter file as --base" "is an adapter file" $BIN $FT $LORA --base "$tmp/adapter.ckpt"
expect_error "full checkpoint as --adapter" "not an adapter" $BIN --sample 5 --base "$tmp/base.ckpt" --adapter "$tmp/base.ckpt"
expect_error "resume with other LoRA flags" "lora_rank" $BIN $FT --lora-rank 2 --lora-targets in_proj_x,out_proj --train-also D --resume "$tmp/half.ckpt"
expect_error "unknown target" "has no 'qkv'" $BIN $FT --lora-rank 2 --lora-targets qkv
expect_error "unknown --train-also" "no parameter is named" $BIN $FT --lora-rank 2 --train-also bogus
expect_error "--adapter without --sample" "--adapter FILE is for" $BIN $FT --adapter "$tmp/adapter.ckpt"
expect_error "bad --lora-dropout" "lora-dropout" $BIN $FT --lora-rank 2 --lora-dropout 1.5
expect_error "missing --also-eval data" "cannot open\|no such\|not found" $BIN $FT --also-eval "$tmp/nowhere"
finish
