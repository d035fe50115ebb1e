#!/usr/bin/env bash
# End-to-end checks of layer patterns in train_mamba (the CPU build): a hybrid
# (Mamba-1, Mamba-2, attention, MLP) and a pure transformer train and learn, a
# hybrid run resumes exactly, its checkpoint samples, and misuse (bad patterns,
# another pattern on resume, export or LoRA of a hybrid) gives a clear message
# and a nonzero exit. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
BIN=${TRAIN_BIN:-./train_mamba_cpu}
source test/testlib.sh
tmp=$(mktemp -d /tmp/cli_hybrid_XXXXXX)
trap 'rm -rf "$tmp"' EXIT

/usr/bin/python3 test/tiny_shards.py "$tmp/data"
HYBRID="--layers M2,A,F,M1 --d-model 32 --d-state 8 --m2-d-state 8 --m2-headdim 16 --m2-chunk 16"
COMMON="--data-dir $tmp/data --batch 4 --seq-len 48 --warmup 2 --eval-batches 2 --log-every 10 --lr 3e-3"

# 1. a hybrid learns: validation loss falls, the pattern is printed and logged in the checkpoint
$BIN $HYBRID $COMMON --steps 40 --eval-interval 20 --log "$tmp/h.jsonl" --checkpoint "$tmp/h.ckpt" > "$tmp/h.out" 2>&1 \
    && pass "hybrid M2,A,F,M1 trains" || fail "hybrid M2,A,F,M1 trains" "$(tail -3 "$tmp/h.out")"
grep -q "layers M2,A,F,M1" "$tmp/h.out" && pass "prints the pattern" || fail "prints the pattern" "$(grep model: "$tmp/h.out")"
grep -q "1 M2 x" "$tmp/h.out" && pass "memory report per layer kind" || fail "memory report per layer kind" "$(grep memory: "$tmp/h.out")"
/usr/bin/python3 - "$tmp/h.jsonl" <<'PY' && pass "hybrid: validation loss falls" || fail "hybrid: validation loss falls"
import json, sys
vals = [r["val_loss"] for r in map(json.loads, open(sys.argv[1])) if "val_loss" in r]
assert len(vals) == 3 and vals[-1] < vals[0] - 0.5, vals
PY
grep -a -q "layers=M2,A,F,M1" "$tmp/h.ckpt" && pass "the checkpoint records the pattern" || fail "the checkpoint records the pattern"

# 2. exact resume: 20 + 20 steps == 40 steps
$BIN $HYBRID $COMMON --steps 40 --eval-interval 0 --log "$tmp/full.jsonl" > /dev/null 2>&1
$BIN $HYBRID $COMMON --steps 40 --eval-interval 0 --stop-at 20 --checkpoint "$tmp/half.ckpt" --log "$tmp/res.jsonl" > /dev/null 2>&1
$BIN $HYBRID $COMMON --steps 40 --eval-interval 0 --resume "$tmp/half.ckpt" --log "$tmp/res.jsonl" > "$tmp/res.out" 2>&1 \
    && pass "hybrid run resumes" || fail "hybrid run resumes" "$(tail -3 "$tmp/res.out")"
/usr/bin/python3 - "$tmp/full.jsonl" "$tmp/res.jsonl" <<'PY' && pass "hybrid resume reproduces the uninterrupted losses exactly" || fail "hybrid resume reproduces the uninterrupted losses exactly"
import json, sys
def losses(p): return {r["step"]: r["loss"] for r in map(json.loads, open(p)) if "loss" in r}
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert sorted(b) == list(range(1, 41)), sorted(b)
diff = [(s, a[s], b[s]) for s in range(1, 41) if a[s] != b[s]]
assert not diff, diff[:3]
PY

# 3. sampling from the checkpoint (the config comes from the file)
out=$($BIN --resume "$tmp/h.ckpt" --sample 30 --prompt "the quick" --temperature 0 2>&1)
[ $? -eq 0 ] && [ ${#out} -ge 30 ] && pass "hybrid checkpoint samples" || fail "hybrid checkpoint samples" "$out"

# 4. a pure transformer: learned positions, learns; sampling past its positions is cut with a note
$BIN --layers A,F,A,F --d-model 32 $COMMON --steps 40 --eval-interval 20 --log "$tmp/t.jsonl" --checkpoint "$tmp/t.ckpt" > "$tmp/t.out" 2>&1 \
    && pass "transformer A,F,A,F trains" || fail "transformer A,F,A,F trains" "$(tail -3 "$tmp/t.out")"
grep -q "learned positions (48)" "$tmp/t.out" && pass "transformer: learned positions" || fail "transformer: learned positions" "$(grep model: "$tmp/t.out")"
/usr/bin/python3 - "$tmp/t.jsonl" <<'PY' && pass "transformer: validation loss falls" || fail "transformer: validation loss falls"
import json, sys
vals = [r["val_loss"] for r in map(json.loads, open(sys.argv[1])) if "val_loss" in r]
assert len(vals) == 3 and vals[-1] < vals[0] - 0.5, vals
PY
err=$($BIN --resume "$tmp/t.ckpt" --sample 100 --prompt "the quick" 2>&1 >/dev/null)
[ $? -eq 0 ] && grep -q "exceed the model's 48 positions: generating 40" <<<"$err" \
    && pass "transformer: sampling stops at its positions, with a note" || fail "transformer: sampling stops at its positions, with a note" "$err"

# 5. misuse
expect_error "unknown layer kind" "unknown layer kind 'M3'" $BIN $COMMON --layers M2,M3 --steps 1
expect_error "bad repeat" "bad repeat count" $BIN $COMMON --layers "M2*0" --steps 1
expect_error "--n-layer disagrees with --layers" "disagrees with --layers" $BIN $COMMON --layers M2,A --n-layer 3 --steps 1
expect_error "resume with another pattern" "layers=M2,A,F,M1 but this run has layers=M2,A,F,F" \
    $BIN $COMMON --layers M2,A,F,F --d-model 32 --d-state 8 --m2-d-state 8 --m2-headdim 16 --m2-chunk 16 --steps 41 --resume "$tmp/h.ckpt"
expect_error "attention heads must divide d_model" "heads do not divide d_model" $BIN $COMMON --layers A,F --d-model 30 --attn-heads 4 --steps 1
expect_error "M2 headdim must divide d_inner" "headdim 24 must divide d_inner 64" $BIN $COMMON --layers M2 --d-model 32 --m2-headdim 24 --steps 1
expect_error "export of a hybrid" "Mamba-1 layers only" $BIN --resume "$tmp/h.ckpt" --export-hf "$tmp/hf"
expect_error "LoRA on a hybrid base" "LoRA adapts Mamba-1 layers" $BIN $COMMON --base "$tmp/h.ckpt" --lora-rank 4 --steps 1
expect_error "resume a transformer with longer sequences" "max_seq=48 but this run has max_seq=64" \
    $BIN --resume "$tmp/t.ckpt" $COMMON --layers A,F,A,F --d-model 32 --seq-len 64 --steps 50
expect_error "--seq-len beyond --max-seq" "sequences of 48 tokens exceed the model's 32 learned positions" \
    $BIN $COMMON --layers A,F --d-model 32 --max-seq 32 --steps 1
finish
