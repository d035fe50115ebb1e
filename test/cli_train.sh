#!/usr/bin/env bash
# End-to-end checks of train_mamba (the CPU build, train_mamba_cpu) on a tiny
# synthetic shard: training runs and logs, checkpoint + resume reproduces an
# uninterrupted run exactly, generation from a checkpoint, and every bad input
# gives a clear message and a nonzero exit. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
BIN=${TRAIN_BIN:-./train_mamba_cpu}
source test/testlib.sh
tmp=$(mktemp -d /tmp/cli_train_XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# a small shard of structured text (a repeated pangram with digits), vocab 256
/usr/bin/python3 test/tiny_shards.py "$tmp/data"
ARGS="--data-dir $tmp/data --d-model 32 --n-layer 2 --d-state 8 --batch 4 --seq-len 48 --lr 3e-3 --warmup 5 --steps 40 --eval-interval 20 --eval-batches 2 --log-every 10"

# 1. training runs, logs JSONL, and learns
if $BIN $ARGS --log "$tmp/full.jsonl" --checkpoint "$tmp/full.ckpt" > "$tmp/full.out" 2>&1; then pass "trains 40 steps"
else fail "trains 40 steps" "$(tail -3 "$tmp/full.out")"; fi
/usr/bin/python3 - "$tmp/full.jsonl" <<'PY' && pass "JSONL log parses, loss falls" || fail "JSONL log parses, loss falls"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
losses = [r["loss"] for r in rows if "loss" in r]
vals = [r["val_loss"] for r in rows if "val_loss" in r]
assert len(losses) == 40 and len(vals) >= 2, (len(losses), len(vals))
assert all(k in rows[1] for k in ("step", "lr", "grad_norm", "tok_per_s", "mem_mib"))
assert losses[-1] < losses[0] - 1.0 and vals[-1] < vals[0] - 1.0, (losses[0], losses[-1], vals)
PY
grep -q "tok/s" "$tmp/full.out" && grep -q "ETA" "$tmp/full.out" && grep -q "mem" "$tmp/full.out" \
    && pass "progress lines show tok/s, ETA, memory" || fail "progress lines show tok/s, ETA, memory"

# 2. resume: stop at step 20 with a checkpoint, resume to 40: the losses of
#    steps 21..40 equal those of the uninterrupted run (1.) exactly
$BIN $ARGS --stop-at 20 --checkpoint "$tmp/half.ckpt" --log "$tmp/resumed.jsonl" > "$tmp/half.out" 2>&1 \
    && pass "stops at step 20 with a checkpoint" || fail "stops at step 20 with a checkpoint" "$(tail -3 "$tmp/half.out")"
$BIN $ARGS --resume "$tmp/half.ckpt" --log "$tmp/resumed.jsonl" > "$tmp/resume.out" 2>&1 \
    && pass "resumes from the checkpoint" || fail "resumes from the checkpoint" "$(tail -3 "$tmp/resume.out")"
/usr/bin/python3 - "$tmp/full.jsonl" "$tmp/resumed.jsonl" <<'PY' && pass "resume reproduces the uninterrupted losses exactly" || fail "resume reproduces the uninterrupted losses exactly"
import json, sys
def losses(p): return {r["step"]: r["loss"] for r in map(json.loads, open(p)) if "loss" in r}
a, b = losses(sys.argv[1]), losses(sys.argv[2])
rows = [json.loads(l) for l in open(sys.argv[2])]
train_steps = [r["step"] for r in rows if "loss" in r]
val_steps = [r["step"] for r in rows if "val_loss" in r]
assert train_steps == list(range(1, 41)), train_steps  # each step once: no duplicates after the resume
assert len(val_steps) == len(set(val_steps)), val_steps
diff = [(s, a[s], b[s]) for s in range(1, 41) if a[s] != b[s]]
assert not diff, diff[:3]
PY
# no temp file is left behind by the atomic save
ls "$tmp"/*.tmp >/dev/null 2>&1 && fail "no checkpoint .tmp left behind" || pass "no checkpoint .tmp left behind"

# 2b. CPU training is bit-reproducible for any OpenMP thread count: the same
#     losses (9 significant digits) and byte-identical checkpoints
for n in 1 2 3; do
    OMP_NUM_THREADS=$n $BIN $ARGS --steps 8 --eval-interval 0 --log "$tmp/thr$n.jsonl" --checkpoint "$tmp/thr$n.ckpt" > /dev/null 2>&1
done
if cmp -s "$tmp/thr1.ckpt" "$tmp/thr2.ckpt" && cmp -s "$tmp/thr1.ckpt" "$tmp/thr3.ckpt" && [ -s "$tmp/thr1.ckpt" ] \
   && diff <(grep -o '"loss": [^,]*' "$tmp/thr1.jsonl") <(grep -o '"loss": [^,]*' "$tmp/thr3.jsonl") > /dev/null; then
    pass "1, 2 and 3 threads train to identical bits"
else fail "1, 2 and 3 threads train to identical bits"; fi

# 2c. a validation split shorter than one batch (B*T+1 tokens) still evaluates
mkdir -p "$tmp/shortval"; cp "$tmp/data/train.bin" "$tmp/shortval/"
/usr/bin/python3 test/tiny_shards.py "$tmp/shortval_src" 3 && cp "$tmp/shortval_src/val.bin" "$tmp/shortval/"
out=$($BIN ${ARGS/--data-dir $tmp\/data/--data-dir $tmp/shortval} --steps 4 2>&1)
[ $? -eq 0 ] && grep -q "fewer than one batch" <<<"$out" && grep -q "val loss" <<<"$out" \
    && pass "a short validation split evaluates with the rows it has" || fail "a short validation split evaluates with the rows it has" "$(tail -3 <<<"$out")"

# 3. generation from a checkpoint
out=$($BIN --resume "$tmp/full.ckpt" --sample 40 --prompt "12 the" --temperature 0 2>&1)
[ $? -eq 0 ] && [ ${#out} -ge 40 ] && pass "--sample generates from a checkpoint" || fail "--sample generates from a checkpoint" "$out"

# 4. bad input: clear message, nonzero exit
expect_error "unknown flag rejected" "unknown option '--bogus'" $BIN --bogus 1
expect_error "non-numeric value rejected" "expects an integer" $BIN --d-model abc
expect_error "impossible value rejected" "must be >= 1" $BIN --batch 0
expect_error "bad device rejected" "auto, cpu or cuda" $BIN --device tpu
expect_error "bad matmul precision rejected" "tf32, bf16 or fp32" $BIN --matmul fp16
expect_error "bad generation weights rejected" "bf16 or fp32" $BIN --gen-weights int8
expect_error "missing data dir" "cannot open" $BIN --data-dir "$tmp/nowhere"
head -c 1000 "$tmp/data/train.bin" > "$tmp/trunc.bin"; mkdir -p "$tmp/trunc"; cp "$tmp/trunc.bin" "$tmp/trunc/train.bin"
expect_error "truncated shard" "truncated" $BIN --data-dir "$tmp/trunc"
expect_error "missing checkpoint" "cannot open checkpoint" $BIN $ARGS --resume "$tmp/none.ckpt"
head -c 5000 "$tmp/full.ckpt" > "$tmp/trunc.ckpt"
expect_error "truncated checkpoint" "truncated" $BIN $ARGS --resume "$tmp/trunc.ckpt"
expect_error "not a checkpoint" "not a checkpoint" $BIN $ARGS --resume "$tmp/data/train.bin"
expect_error "config mismatch on resume" "d_model=32 but this run has d_model=48" $BIN ${ARGS/--d-model 32/--d-model 48} --resume "$tmp/full.ckpt"
expect_error "diverging run stops on NaN loss" "diverged" $BIN $ARGS --lr 1e30 --warmup 0 --grad-clip 0 --log "$tmp/nan.jsonl"
/usr/bin/python3 - "$tmp/nan.jsonl" <<'PY' && pass "the diverged step is logged as valid JSON (null)" || fail "the diverged step is logged as valid JSON (null)"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]  # every line must parse
assert rows[-1]["loss"] is None or rows[-1]["grad_norm"] is None, rows[-1]
PY
expect_error "--cuda without a GPU build" "without CUDA" $BIN --device cuda
expect_error "--sample needs --resume" "need --resume" $BIN --sample 10
finish
