#!/usr/bin/env bash
# data_scripts/step_floor.py (make bench's floor table): the floors it computes for the mamba-130m
# step, checked against the arithmetic written out here, and its refusals. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.."
source test/testlib.sh
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/profile.log" <<'LOG'
step     4/4 | loss 10.8 | ...
per-component time over 3 steps (forward + backward, all layers; synchronized):
  in_proj             9.20 ms/step   17.1%
  scan               16.27 ms/step   30.2%
  adamw               1.30 ms/step    2.4%
  lm_head             4.75 ms/step    8.8%
  cross_entropy       1.66 ms/step    3.1%
  mystery             1.00 ms/step    1.0%
LOG
if /usr/bin/python3 data_scripts/step_floor.py "$tmp/profile.log" > "$tmp/out.md" 2>&1; then pass "step_floor.py reads a --profile table"
else fail "step_floor.py reads a --profile table" "$(cat "$tmp/out.md")"; fi
# the same floors by hand (mamba-130m: D 768, E 1536, N 16, R 48, V 50280, 24 layers, B*T 8192)
/usr/bin/python3 - "$tmp/out.md" <<'PY' && pass "floors: in_proj, lm_head (bf16 FLOPs), scan, cross-entropy (bytes), AdamW (7 x 4 bytes x 129,135,360 parameters)" || fail "floors"
import sys, re
rows = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in
        re.finditer(r"^\| (\S+) \| ([0-9.]+) \| ([0-9.]+) \|", open(sys.argv[1]).read(), re.M)}
BT, D, E, N, V, L = 8192, 768, 1536, 16, 50280, 24
want = {
    "in_proj": 3 * 2 * BT * D * 2 * E * L / 800e12 * 1e3,
    "lm_head": 3 * 2 * BT * D * V / 800e12 * 1e3,
    "scan": 4 * BT * ((3 * E + 2 * N + E) + (4 * E + 2 * N) + (3 * E + 2 * N)) * L / 3e12 * 1e3,
    "adamw": 7 * 4 * 129135360 / 3e12 * 1e3,
}
for k, v in want.items():
    assert abs(rows[k][1] - round(v, 2)) <= 0.006, (k, rows[k], v)
want_ce = 2 * 4 * BT * V / 3e12 * 1e3
assert abs(rows["cross_entropy"][1] - round(want_ce, 2)) <= 0.006, rows["cross_entropy"]
assert abs(rows["all"][0] - (9.20 + 16.27 + 1.30 + 4.75 + 1.66 + 1.00)) < 0.006, rows["all"]  # every measured row counts
assert abs(rows["all"][1] - sum(round(v, 2) for v in want.values()) - round(want_ce, 2)) < 0.03, rows["all"]  # floors of the modelled ones
PY
grep -q "| mystery | 1.00 | | | (no floor model) |" "$tmp/out.md" && pass "a component without a floor model is listed as such" || fail "unmodelled component"
/usr/bin/python3 data_scripts/step_floor.py "$tmp/profile.log" --matmul tf32 > "$tmp/tf32.md" 2>&1
grep -q "| in_proj | 9.20 | 6.96 |" "$tmp/tf32.md" && pass "--matmul tf32 halves the matmul rate (floor x2)" || fail "--matmul tf32" "$(grep in_proj "$tmp/tf32.md")"
grep -v "cross_entropy\|mystery" "$tmp/profile.log" > "$tmp/fused.log"
/usr/bin/python3 data_scripts/step_floor.py "$tmp/fused.log" > "$tmp/fused.md" 2>&1
/usr/bin/python3 - "$tmp/fused.md" <<'PY' && pass "no cross_entropy row: lm_head's floor adds the cross-entropy's (2 x 4 bytes x 8192 x 50280)" || fail "fused head floor" "$(grep lm_head "$tmp/fused.md")"
import sys, re
m = re.search(r"^\| lm_head \| [0-9.]+ \| ([0-9.]+) \|", open(sys.argv[1]).read(), re.M)
want = 3 * 2 * 8192 * 768 * 50280 / 800e12 * 1e3 + 2 * 4 * 8192 * 50280 / 3e12 * 1e3
assert m and abs(float(m.group(1)) - round(want, 2)) <= 0.006, (m and m.group(1), want)
PY
/usr/bin/python3 data_scripts/step_floor.py "$tmp/profile.log" --activations bf16 > "$tmp/b16.md" 2>&1
/usr/bin/python3 - "$tmp/b16.md" <<'PY' && pass "--activations bf16: the scan's bytes at 2 per element fall below its exponentials (2 x B T E N at 3.7e12/s)" || fail "--activations bf16" "$(grep scan "$tmp/b16.md")"
import sys, re
m = re.search(r"^\| scan \| [0-9.]+ \| ([0-9.]+) \|", open(sys.argv[1]).read(), re.M)
BT, E, N, L = 8192, 1536, 16, 24
t_bytes = 2 * BT * ((3 * E + 2 * N + E) + (4 * E + 2 * N) + (3 * E + 2 * N)) * L / 3e12 * 1e3
t_exps = 2 * BT * E * N * L / 3.7e12 * 1e3
assert t_bytes < t_exps
assert m and abs(float(m.group(1)) - round(t_exps, 2)) <= 0.006, (m and m.group(1), t_exps)
PY
echo "no table here" > "$tmp/empty.log"
expect_error "a log without a --profile table is refused" "no 'per-component time' table" /usr/bin/python3 data_scripts/step_floor.py "$tmp/empty.log"
expect_error "a missing log is refused" "No such file" /usr/bin/python3 data_scripts/step_floor.py "$tmp/none.log"
finish
