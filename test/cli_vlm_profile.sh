#!/usr/bin/env bash
# End-to-end checks of train_vlm's inference efficiency tools (the CPU build,
# train_vlm_cpu; TRAIN_VLM_BIN=./train_vlm runs them on the GPU build): on a tiny
# model trained on a few Fashion-MNIST scenes,
#   - --stage profile prints the per-component table (batch 1 and --batch), writes the
#     CSV and JSON, and data_scripts/vlm_profile_plot.py draws them
#   - --stage eval with --reduce pool / random / uniform runs and prints accuracy with
#     fewer image tokens; random is reproducible; R = 0 equals no reduction
#   - --stage infer and --stage profile take --reduce too
#   - fastv and salient: eval, profile, infer, R = 0 == none, --dump-answer-logits
#   - tome (ToMe in the encoder's one feature block): eval, profile (the encoder's FLOPs drop too),
#     infer, R = 0 == none, a ratio one block cannot reach refused
#   - bad values give a clear message and a nonzero exit
# Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
BIN=${TRAIN_VLM_BIN:-./train_vlm_cpu}
source test/testlib.sh
tmp=$(mktemp -d /tmp/cli_vlm_profile_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
if ! ./build/make_scenes --out "$tmp/scenes" --n-train 60 --n-test 20 > "$tmp/scenes.out" 2>&1; then
    fail "make_scenes builds the test scenes" "$(tail -2 "$tmp/scenes.out")"; finish; exit; fi
ARGS="--data-dir $tmp/scenes --patch 16 --v-layers 2 --v-dim 16 --v-heads 2 --l-layers 1 --l-dim 16 --l-heads 2 --batch 4 --lr 3e-3 --warmup 2 --steps 12 --eval-interval 0 --eval-records 20 --log-every 4"
if $BIN $ARGS --checkpoint "$tmp/m.ckpt" > "$tmp/train.out" 2>&1; then pass "trains a tiny model (patch 16: 16 image tokens)"
else fail "trains a tiny model" "$(tail -3 "$tmp/train.out")"; finish; exit; fi
USE="--init $tmp/m.ckpt --data-dir $tmp/scenes"
PROF="--stage profile $USE --batch 4 --profile-iters 5 --profile-warmup 1"

# 1. the profile: a table per batch, the CSV and the JSON, the plot
if $BIN $PROF --profile-out "$tmp/out/none.csv" > "$tmp/prof.out" 2>&1; then pass "--stage profile runs"
else fail "--stage profile runs" "$(tail -3 "$tmp/prof.out")"; fi
grep -q "batch 1: 16 of 16 image tokens" "$tmp/prof.out" && grep -q "batch 4: 16 of 16 image tokens" "$tmp/prof.out" \
    && grep -q "% TTFT" "$tmp/prof.out" && grep -q "GFLOP/s" "$tmp/prof.out" \
    && [ "$(grep -cE '^  (vision encoder|token reduction|projector|LM prefill|first token|time to first token|decode step) ' "$tmp/prof.out")" -eq 14 ] \
    && pass "the table: 7 components at batch 1 and at --batch, with ms, % TTFT, GFLOP, GFLOP/s" \
    || fail "the table: 7 components at batch 1 and at --batch" "$(head -c 600 "$tmp/prof.out")"
/usr/bin/python3 - "$tmp/out/none.csv" "$tmp/out/none.json" <<'PY' && pass "the CSV and JSON: every component, positive times, the FLOPs add up" || fail "the CSV and JSON: every component, positive times, the FLOPs add up"
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 14, len(rows)
for b in ("1", "4"):
    comp = {r["component"]: r for r in rows if r["batch"] == b}
    assert set(comp) == {"vision encoder", "token reduction", "projector", "LM prefill", "first token", "time to first token", "decode step"}, comp.keys()
    assert all(float(r["ms_median"]) > 0 for r in comp.values())
    parts = sum(float(comp[c]["gflop"]) for c in ("vision encoder", "token reduction", "projector", "LM prefill", "first token"))
    assert abs(parts - float(comp["time to first token"]["gflop"])) <= 1e-9 * parts + 1e-15, parts
    assert float(comp["LM prefill"]["gflop"]) > 0 and float(comp["vision encoder"]["gflop"]) > 0
    assert comp["decode step"]["image_tokens"] == "16" and comp["decode step"]["reduce"] == "none"
g1 = {r["component"]: float(r["gflop"]) for r in rows if r["batch"] == "1"}
g4 = {r["component"]: float(r["gflop"]) for r in rows if r["batch"] == "4"}
assert all(abs(g4[c] - 4 * g1[c]) <= 1e-9 * g4[c] for c in g1), (g1, g4)
j = json.load(open(sys.argv[2]))
assert [p["batch"] for p in j["profiles"]] == [1, 4] and len(j["profiles"][0]["components"]) == 7
assert j["config"]["patch"] == 16 and j["profiles"][1]["sequences_per_s"] > 0
PY
if $BIN $PROF --reduce pool --profile-out "$tmp/out/pool.csv" > "$tmp/prof_pool.out" 2>&1 && grep -q "batch 4: 4 of 16 image tokens (reduce pool" "$tmp/prof_pool.out"; then
    pass "--stage profile --reduce pool: 4 of 16 image tokens"
else fail "--stage profile --reduce pool" "$(tail -3 "$tmp/prof_pool.out")"; fi
/usr/bin/python3 - "$tmp/out/none.csv" "$tmp/out/pool.csv" <<'PY' && pass "pooling cuts the projector's and the prefill's FLOPs, not the encoder's" || fail "pooling cuts the projector's and the prefill's FLOPs, not the encoder's"
import csv, sys
def g(p): return {(r["batch"], r["component"]): float(r["gflop"]) for r in csv.DictReader(open(p))}
a, b = g(sys.argv[1]), g(sys.argv[2])
for bt in ("1", "4"):
    assert b[(bt, "vision encoder")] == a[(bt, "vision encoder")]
    assert abs(b[(bt, "projector")] - a[(bt, "projector")] / 4) <= 1e-9 * a[(bt, "projector")]
    assert b[(bt, "LM prefill")] < a[(bt, "LM prefill")] and b[(bt, "decode step")] < a[(bt, "decode step")]
PY
if /usr/bin/python3 data_scripts/vlm_profile_plot.py "$tmp/out/none.csv" "$tmp/out/pool.csv" -o "$tmp/plot/profile.png" > "$tmp/plot.out" 2>&1 \
    && [ "$(head -c 4 "$tmp/plot/profile.png" | tail -c 3)" = "PNG" ]; then pass "vlm_profile_plot.py draws a PNG"
else fail "vlm_profile_plot.py draws a PNG" "$(tail -3 "$tmp/plot.out")"; fi
expect_error "the plot refuses a CSV of something else" "lacks the columns" /usr/bin/python3 data_scripts/vlm_profile_plot.py "$tmp/scenes/train.jsonl" -o "$tmp/x.png"

# 2. eval with fewer image tokens
EVAL="--stage eval $USE --eval-records 40"
$BIN $EVAL > "$tmp/eval_none.out" 2>&1
for r in pool random uniform; do
    if $BIN $EVAL --reduce $r > "$tmp/eval_$r.out" 2>&1 && grep -q "exact match" "$tmp/eval_$r.out" \
        && grep -q "token reduction: $r, ratio 0.75: the LM sees 4 of 16 image tokens" "$tmp/eval_$r.out"; then
        pass "--stage eval --reduce $r: 4 of 16 tokens, accuracy printed ($(grep -o 'exact match [0-9.]*%' "$tmp/eval_$r.out"))"
    else fail "--stage eval --reduce $r" "$(tail -3 "$tmp/eval_$r.out")"; fi
done
$BIN $EVAL --reduce random --reduce-ratio 0.5 --log "$tmp/r1.jsonl" > "$tmp/r1.out" 2>&1
$BIN $EVAL --reduce random --reduce-ratio 0.5 --log "$tmp/r2.jsonl" > "$tmp/r2.out" 2>&1
grep -q "8 of 16 image tokens" "$tmp/r1.out" && [ "$(grep 'exact match' "$tmp/r1.out")" = "$(grep 'exact match' "$tmp/r2.out")" ] \
    && pass "--reduce random --reduce-ratio 0.5: 8 of 16 tokens, the same result twice" || fail "--reduce random is reproducible" "$(tail -2 "$tmp/r1.out")"
grep -q '"reduce": "random", "reduce_ratio": 0.5, "image_tokens": 8' "$tmp/r1.jsonl" \
    && pass "the eval log records the reduction" || fail "the eval log records the reduction" "$(cat "$tmp/r1.jsonl")"
$BIN $EVAL --reduce uniform --reduce-ratio 0 > "$tmp/r0.out" 2>&1
[ -n "$(grep 'exact match' "$tmp/eval_none.out")" ] && [ "$(grep 'test answer loss' "$tmp/r0.out")" = "$(grep 'test answer loss' "$tmp/eval_none.out")" ] \
    && pass "--reduce-ratio 0 gives the unreduced model's loss and accuracy exactly" || fail "--reduce-ratio 0 == no reduction" "$(grep 'exact' "$tmp/r0.out" "$tmp/eval_none.out")"

# 2b. fastv (inside the LM) and salient (ours)
for r in fastv salient; do
    if $BIN $EVAL --reduce $r --reduce-ratio 0.5 > "$tmp/eval_$r.out" 2>&1 && grep -q "exact match" "$tmp/eval_$r.out" \
        && grep -qE "token reduction: $r, ratio 0.5: the LM (sees|keeps) 8 of 16 image tokens" "$tmp/eval_$r.out"; then
        pass "--stage eval --reduce $r --reduce-ratio 0.5: 8 of 16 tokens ($(grep -o 'exact match [0-9.]*%' "$tmp/eval_$r.out"))"
    else fail "--stage eval --reduce $r" "$(tail -3 "$tmp/eval_$r.out")"; fi
done
grep -q "from block 0 on" "$tmp/eval_fastv.out" && pass "fastv's default layer on a one-block GPT is 0" || fail "fastv's default layer" "$(grep 'token reduction' "$tmp/eval_fastv.out")"
for r in fastv salient; do
    $BIN $EVAL --reduce $r --reduce-ratio 0 > "$tmp/${r}0.out" 2>&1
    [ "$(grep 'test answer loss' "$tmp/${r}0.out")" = "$(grep 'test answer loss' "$tmp/eval_none.out")" ] \
        && pass "--reduce $r --reduce-ratio 0 == no reduction, exactly" || fail "--reduce $r R=0 == no reduction" "$(grep 'exact' "$tmp/${r}0.out")"
done
if $BIN $PROF --reduce fastv --reduce-ratio 0.75 --profile-out "$tmp/out/fastv.csv" > "$tmp/prof_fastv.out" 2>&1 \
    && grep -q "batch 4: 4 of 16 image tokens (reduce fastv" "$tmp/prof_fastv.out"; then pass "--stage profile --reduce fastv: 4 of 16 kept"
else fail "--stage profile --reduce fastv" "$(tail -3 "$tmp/prof_fastv.out")"; fi
/usr/bin/python3 - "$tmp/out/none.csv" "$tmp/out/fastv.csv" <<'PY' && pass "fastv: the encoder's and projector's FLOPs stay, the prefill's and decode's drop" || fail "fastv FLOPs"
import csv, sys
def g(p): return {(r["batch"], r["component"]): float(r["gflop"]) for r in csv.DictReader(open(p))}
a, b = g(sys.argv[1]), g(sys.argv[2])
for bt in ("1", "4"):
    assert b[(bt, "vision encoder")] == a[(bt, "vision encoder")] and b[(bt, "projector")] == a[(bt, "projector")]
    assert b[(bt, "LM prefill")] < a[(bt, "LM prefill")] and b[(bt, "decode step")] < a[(bt, "decode step")]
PY
$BIN $EVAL --dump-answer-logits "$tmp/none.bin" > /dev/null 2>&1
$BIN $EVAL --reduce fastv --reduce-ratio 0.75 --dump-answer-logits "$tmp/fastv.bin" > /dev/null 2>&1
/usr/bin/python3 - "$tmp/none.bin" "$tmp/fastv.bin" <<'PY' && pass "--dump-answer-logits: the same answer positions with and without a reduction" || fail "--dump-answer-logits"
import sys, numpy as np
a, b = (np.fromfile(p, dtype=np.int32, count=1)[0] for p in sys.argv[1:])
x, y = (np.fromfile(p, dtype=np.float32, offset=4) for p in sys.argv[1:])
assert a == b and x.size == y.size and x.size % a == 0 and x.size >= 40 * a and np.isfinite(x).all() and np.isfinite(y).all()
PY

# 3. infer with a reduction
img=$(ls "$tmp"/scenes/images/*.png | tail -1)
out=$($BIN --stage infer --init "$tmp/m.ckpt" --image "$img" --question "how many items are there?" --reduce uniform --reduce-ratio 0.5 2>&1)
[ $? -eq 0 ] && [ -n "$out" ] && pass "--stage infer --reduce uniform answers ('$out')" || fail "--stage infer --reduce uniform answers" "$out"
for r in fastv salient; do
    out=$($BIN --stage infer --init "$tmp/m.ckpt" --image "$img" --question "how many items are there?" --reduce $r --reduce-ratio 0.75 2>&1)
    [ $? -eq 0 ] && [ -n "$out" ] && pass "--stage infer --reduce $r answers ('$out')" || fail "--stage infer --reduce $r answers" "$out"
done

# ToMe: the one feature block of this 2-block ViT merges (at most half of the 16 tokens)
if $BIN $EVAL --reduce tome --reduce-ratio 0.5 > "$tmp/eval_tome.out" 2>&1 && grep -q "tome: merges per ViT block: 8" "$tmp/eval_tome.out" \
    && grep -q "the LM sees 8 of 16 image tokens" "$tmp/eval_tome.out" && grep -q "exact match" "$tmp/eval_tome.out"; then
    pass "--stage eval --reduce tome 0.5: 8 merges in the feature block, 8 of 16 image tokens"
else fail "--stage eval --reduce tome" "$(tail -3 "$tmp/eval_tome.out")"; fi
$BIN $EVAL --reduce tome --reduce-ratio 0 > "$tmp/tome0.out" 2>&1
[ "$(grep 'test answer loss' "$tmp/tome0.out")" = "$(grep 'test answer loss' "$tmp/eval_none.out")" ] \
    && pass "--reduce tome --reduce-ratio 0 == no reduction, exactly" || fail "--reduce tome R=0 == no reduction" "$(grep 'exact' "$tmp/tome0.out")"
if $BIN $PROF --reduce tome --reduce-ratio 0.25 --profile-out "$tmp/out/tome.csv" > "$tmp/prof_tome.out" 2>&1 \
    && grep -q "batch 4: 12 of 16 image tokens (reduce tome" "$tmp/prof_tome.out"; then pass "--stage profile --reduce tome: 12 of 16"
else fail "--stage profile --reduce tome" "$(tail -3 "$tmp/prof_tome.out")"; fi
/usr/bin/python3 - "$tmp/out/none.csv" "$tmp/out/tome.csv" <<'PY' && pass "tome: the encoder's, projector's and prefill's FLOPs drop" || fail "tome FLOPs"
import csv, sys
def g(p): return {(r["batch"], r["component"]): float(r["gflop"]) for r in csv.DictReader(open(p))}
a, b = g(sys.argv[1]), g(sys.argv[2])
for bt in ("1", "4"):
    for c in ("vision encoder", "projector", "LM prefill", "decode step"):
        assert b[(bt, c)] < a[(bt, c)], (bt, c)
PY
out=$($BIN --stage infer --init "$tmp/m.ckpt" --image "$img" --question "how many items are there?" --reduce tome --reduce-ratio 0.5 2>&1)
[ $? -eq 0 ] && [ -n "$out" ] && pass "--stage infer --reduce tome answers ('$out')" || fail "--stage infer --reduce tome answers" "$out"
expect_error "tome: a ratio one merging block cannot reach" "at the fewest" $BIN $EVAL --reduce tome --reduce-ratio 0.75

# 4. bad values
expect_error "unknown --reduce" "must be none, pool, random, uniform, salient, fastv or tome" $BIN $EVAL --reduce median
expect_error "pool takes ratio 0.75 only" "ratio 0.75 only" $BIN $EVAL --reduce pool --reduce-ratio 0.5
expect_error "a ratio of 1" "in \[0, 1)" $BIN $EVAL --reduce random --reduce-ratio 1
expect_error "a negative ratio" "in \[0, 1)" $BIN $EVAL --reduce uniform --reduce-ratio -0.5
expect_error "--reduce-ratio without a reduction" "needs --reduce pool, random, uniform, salient, fastv or tome" $BIN $EVAL --reduce-ratio 0.5
expect_error "--fastv-layer without fastv" "needs --reduce fastv" $BIN $EVAL --reduce pool --fastv-layer 1
expect_error "--fastv-layer past the GPT's blocks" "ranking layer must be in \[0, 0\]" $BIN $EVAL --reduce fastv --fastv-layer 1
expect_error "--dump-answer-logits outside eval" "belongs to --stage eval" $BIN $PROF --dump-answer-logits "$tmp/x.bin"
expect_error "--reduce while training" "applies at inference" $BIN $ARGS --stage instruct --init "$tmp/m.ckpt" --reduce pool
expect_error "profile needs a model" "needs a model" $BIN --stage profile --data-dir "$tmp/scenes"
expect_error "--profile-iters 0" "--profile-iters must be >= 1" $BIN $PROF --profile-iters 0
expect_error "an unwritable --profile-out" "cannot" $BIN $PROF --profile-out /proc/nope/p.csv
finish
