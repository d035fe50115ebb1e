#!/usr/bin/env bash
# The LoRA study (make lora-study) at its tiny CPU size: KJV pretraining, nine
# fine-tunings on the fortunes, the table, the CSV and the plot. Smoke coverage
# of the whole pipeline (the figures come from the GPU machine). Needs the
# bible-kjv and fortunes packages. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
source test/testlib.sh
tmp=$(mktemp -d /tmp/cli_lora_study_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
if SIZE=tiny OUT="$tmp" bash data_scripts/lora_study.sh > "$tmp/log" 2>&1; then pass "tiny LoRA study runs"
else fail "tiny LoRA study runs" "$(tail -5 "$tmp/log")"; fi
/usr/bin/python3 - "$tmp" <<'PY' && pass "study table: nine runs, LoRA trains and stores less than full fine-tuning" || fail "study table: nine runs, LoRA trains and stores less than full fine-tuning"
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1] + "/results.csv")))
assert len(rows) == 9, len(rows)
full = [r for r in rows if r["run"] == "full"][0]
for r in rows:
    for k in ("fortunes_val_loss", "kjv_val_loss_after", "ms_per_step", "peak_mem_mib"):
        assert math.isfinite(float(r[k])), (r["run"], k, r[k])
    if r["run"] != "full":
        assert int(r["trainable_params"]) < int(full["trainable_params"]) / 3, r
        assert int(r["checkpoint_bytes"]) < int(full["checkpoint_bytes"]) / 3, r
        assert float(r["optimizer_state_mib"]) < float(full["optimizer_state_mib"]) / 3, r
# rank 16 has four times the adapter parameters of rank 4, target by target
for t in ("in_proj", "in_proj_x", "out_proj", "all"):
    r4 = [r for r in rows if r["run"] == t + "_r4"][0]
    r16 = [r for r in rows if r["run"] == t + "_r16"][0]
    assert int(r16["trainable_params"]) == 4 * int(r4["trainable_params"]), t
PY
[ -s "$tmp/results.md" ] && grep -q "LoRA out_proj" "$tmp/results.md" && pass "markdown table written" || fail "markdown table written"
[ -s "$tmp/lora_study.png" ] && pass "plot written" || fail "plot written"
finish
