#!/usr/bin/env bash
# End-to-end check of the visual-token reduction study (data_scripts/vlm_study.sh +
# vlm_study.py) at SIZE=tiny on the CPU build (train_vlm_cpu): a few scenes, a tiny model
# trained on the spot, every method x ratio through --stage eval and --stage profile (tome included); the CSV
# (one row per run, the columns, KL 0 and agreement 1 for none), the markdown table, the two
# plots; a missing checkpoint is a clear error. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
source test/testlib.sh
tmp=$(mktemp -d /tmp/cli_vlm_study_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
if SIZE=tiny OUT="$tmp/study" bash data_scripts/vlm_study.sh > "$tmp/study.out" 2>&1; then pass "SIZE=tiny vlm_study.sh runs (a tiny model, 22 runs)"
else fail "SIZE=tiny vlm_study.sh runs" "$(tail -5 "$tmp/study.out")"; finish; exit; fi
/usr/bin/python3 - "$tmp/study/study.csv" <<'PY' && pass "study.csv: none, pool 0.75, 4 ratios of random/uniform/fastv/salient/tome; tokens; KL 0 and agreement 1 for none" || fail "study.csv"
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
runs = [(r["method"], float(r["ratio"])) for r in rows]
want = [("none", 0.0), ("pool", 0.75)] + [(m, r) for m in ("random", "uniform", "fastv", "salient", "tome") for r in (0.25, 0.5, 0.75, 0.875)]
assert runs == want, runs
need = {"accuracy", "acc_where", "kl_full_reduced", "top1_agreement", "lm_prefill_gflop", "prefill_ms", "ttft_ms", "decode_ms", "image_tokens"}
assert need <= set(rows[0]), set(rows[0])
toks = {(r["method"], float(r["ratio"])): int(r["image_tokens"]) for r in rows}
assert toks[("none", 0.0)] == 16 and toks[("pool", 0.75)] == 4 and toks[("fastv", 0.875)] == 2 and toks[("salient", 0.5)] == 8, toks
assert toks[("tome", 0.25)] == 12 and toks[("tome", 0.875)] == 2, toks
none = rows[0]
assert float(none["kl_full_reduced"]) == 0 and float(none["top1_agreement"]) == 1
for r in rows:
    assert float(r["kl_full_reduced"]) >= -1e-9 and 0 <= float(r["top1_agreement"]) <= 1 and 0 <= float(r["accuracy"]) <= 1
    assert float(r["ttft_ms"]) > 0 and float(r["decode_ms"]) > 0 and float(r["lm_prefill_gflop"]) > 0
    if r["method"] in ("pool", "random", "uniform", "salient", "tome"):
        assert float(r["lm_prefill_gflop"]) < float(none["lm_prefill_gflop"]), r
PY
[ "$(grep -c '^|' "$tmp/study/study.md")" -eq 24 ] && grep -q "| fastv | 0.875 | 2 |" "$tmp/study/study.md" && grep -q "| tome | 0.5 | 8 |" "$tmp/study/study.md" \
    && pass "study.md: a header, a rule and 22 rows" || fail "study.md" "$(head -5 "$tmp/study/study.md")"
for p in acc_vs_flops acc_vs_latency; do
    [ "$(head -c 4 "$tmp/study/$p.png" | tail -c 3)" = "PNG" ] && pass "$p.png drawn" || fail "$p.png drawn"
done
# a second study of a subset, reusing the model and scenes: METHODS and RATIOS
if SIZE=tiny OUT="$tmp/study" METHODS="none fastv" RATIOS="0.5" FASTV_LAYER=0 bash data_scripts/vlm_study.sh > "$tmp/study2.out" 2>&1 \
    && grep -q "from block 0 on" "$tmp/study/runs/fastv_0.5.eval.log"; then pass "METHODS, RATIOS and FASTV_LAYER select the runs"
else fail "METHODS, RATIOS and FASTV_LAYER" "$(tail -3 "$tmp/study2.out")"; fi
err=$(OUT="$tmp/study" CKPT="$tmp/nope.ckpt" SCENES="$tmp/study/scenes" TRAIN_VLM_BIN=./train_vlm_cpu bash data_scripts/vlm_study.sh 2>&1 >/dev/null); rc=$?
[ $rc -ne 0 ] && grep -q "no checkpoint" <<<"$err" && pass "a missing checkpoint is a clear error" || fail "a missing checkpoint" "rc=$rc $err"
finish
