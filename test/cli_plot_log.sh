#!/usr/bin/env bash
# data_scripts/plot_log.py: a train_mamba JSONL log (training lines, validation lines, the summary line)
# becomes a PNG; a broken line is skipped with a warning, the summary line silently; a missing log is
# refused. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
source test/testlib.sh
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/run.jsonl" <<'LOG'
{"step": 0, "val_loss": 5.5}
{"step": 1, "loss": 5.4, "lr": 1e-4}
{"step": 2, "loss": 4.9, "lr": 2e-4}
{"step": 2, "val_loss": 4.8}
{"step": 3, "loss": 4.1, "lr": 3e-4}
{"step": 3, "loss": null}
{"step": 3, "sample": "In the beginning"}
{"step": 4, "loss": 3.9
{"summary": "run", "step_ms": 10.5, "tok_per_s": 1000.0, "final_val_loss": 4.8}
LOG
if /usr/bin/python3 data_scripts/plot_log.py "$tmp/run.jsonl" -o "$tmp/run.png" > "$tmp/out.txt" 2> "$tmp/err.txt"; then
    pass "plot_log.py writes a PNG from a training log"
else
    fail "plot_log.py writes a PNG from a training log" "$(cat "$tmp/err.txt")"
fi
if [ -s "$tmp/run.png" ] && [ "$(head -c 8 "$tmp/run.png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ]; then
    pass "the output is a PNG file"
else
    fail "the output is a PNG file"
fi
n_bad=$(grep -c "is not a JSON log line" "$tmp/err.txt")
[ "$n_bad" -eq 1 ] && grep -q ':8 is not a JSON log line' "$tmp/err.txt" && pass "the cut-off line (8) is skipped with one warning, the summary line without one" \
    || fail "warnings for skipped lines" "$(cat "$tmp/err.txt")"
grep -q "1 loss values were null" "$tmp/err.txt" && pass "a null loss is left out with a warning" || fail "null loss warning" "$(cat "$tmp/err.txt")"
expect_error "a missing log is refused" "cannot read" /usr/bin/python3 data_scripts/plot_log.py "$tmp/none.jsonl" -o "$tmp/x.png"
finish
