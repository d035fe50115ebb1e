#!/usr/bin/env bash
# Runs every test binary of one kind (cpu | gpu) and every PyTorch oracle
# script (cpu only), then prints one line: "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
kind=${1:-cpu}
passed=0; failed=0
run_one() {  # run a test command, echo its output, add up its counts
    local label=$1; shift
    echo "== $label"
    local out rc
    out=$("$@" 2>&1); rc=$?
    echo "$out" | grep -v -E '^[0-9]+ passed, [0-9]+ failed$'
    local line p f
    line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1)
    if [ -z "$line" ]; then
        echo "FAIL $label: exited $rc without a summary line"; failed=$((failed + 1)); return
    fi
    p=$(echo "$line" | cut -d' ' -f1); f=$(echo "$line" | cut -d' ' -f3)
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then echo "FAIL $label: exit code $rc"; failed=$((failed + 1)); fi
}
if [ "$kind" = cpu ]; then
    for t in build/test_*; do [ -x "$t" ] && run_one "$t" "$t"; done
    for s in test/torch_*.py; do [ -f "$s" ] && run_one "$s" /usr/bin/python3 "$s"; done
    for s in test/cli_*.sh; do [ -f "$s" ] && run_one "$s" bash "$s"; done
else
    for t in build/gpu_*; do [ -x "$t" ] && run_one "$t" "$t"; done
    for s in test/gpucli_*.sh; do [ -f "$s" ] && run_one "$s" bash "$s"; done
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
