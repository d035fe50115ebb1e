#!/usr/bin/env bash
# make arch-study at its tiny CPU size (the GPU figures come from the same script): four
# patterns train on the KJV text, and the table, CSV and plot are written. Ends with
# "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
source test/testlib.sh
tmp=$(mktemp -d /tmp/cli_arch_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
SIZE=tiny TRAIN_BIN=./train_mamba_cpu OUT="$tmp" bash data_scripts/arch_study.sh > "$tmp/out.txt" 2>&1 \
    && pass "arch study runs (tiny, CPU)" || fail "arch study runs (tiny, CPU)" "$(tail -5 "$tmp/out.txt")"
/usr/bin/python3 - "$tmp" <<'PY' && pass "arch study: four models, finite losses, the parameter counts within 35%" || fail "arch study: four models, finite losses, the parameter counts within 35%"
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1] + "/results.csv")))
assert [r["model"] for r in rows] == ["Mamba-1", "Mamba-2", "Transformer", "Hybrid"], rows
assert all(math.isfinite(float(r["val_loss"])) and float(r["val_loss"]) < 5.6 for r in rows), rows  # below log(256) = 5.55
p = [float(r["params_M"]) for r in rows]
assert max(p) < 1.35 * min(p), p  # the GPU size matches to 10%; the tiny one less well
PY
[ -s "$tmp/results.md" ] && grep -q "| Hybrid | M2,M2,A,F,M2,M2,A,F |" "$tmp/results.md" && pass "arch study: markdown table" || fail "arch study: markdown table"
[ -s "$tmp/arch_study.png" ] && pass "arch study: plot" || fail "arch study: plot"
finish
